//! Decoding checked against an independent reader: ptufile's decode of two real PTU files and of
//! synthetic files of every record type (reference data from data/tcspc/make_reference.py).

#[path = "data/tcspc/reference.rs"]
mod reference;

use flowdaq_analytics::tcspc::histogram::{HistogramLayout, MicroTimeHistogram};
use flowdaq_analytics::tcspc::ptu::{PtuHeader, PtuRecordReader};
use flowdaq_analytics::tcspc::records::{
    decode_into, decode_records, DecodeCounts, DecoderState, PhotonColumns, RecordType,
    T2_SYNC_CHANNEL,
};

/// What ../shared/data/README.md states for the two files (ptufile's decode).
struct Readme {
    file: &'static str,
    records: u64,
    photons_per_channel: &'static [u64],
    markers: &'static [(usize, u64)],
    overflows: u64,
    peak_bin: usize,
    micro_bins: usize,
}

const README: [Readme; 2] = [
    Readme {
        file: "hydraharp_t3_beads.ptu",
        records: 104_776,
        photons_per_channel: &[52_833, 20_954],
        markers: &[(4, 50), (8, 50)],
        overflows: 30_889,
        peak_bin: 254,
        micro_bins: 1562,
    },
    Readme {
        file: "picoharp_t3_hazelnut_z1.ptu",
        records: 155_398,
        photons_per_channel: &[150_363],
        markers: &[(1, 1280), (2, 1280), (4, 5)],
        overflows: 2470,
        peak_bin: 12,
        micro_bins: 133,
    },
];

fn decode_whole(bytes: &[u8]) -> (PtuHeader, PhotonColumns, DecodeCounts) {
    let header = PtuHeader::parse(bytes).expect("header");
    let records = &bytes[header.header_len_bytes as usize..];
    let records = &records[..(header.number_of_records as usize * 4).min(records.len())];
    let mut out = PhotonColumns::default();
    let counts = decode_records(
        header.record_type,
        header.time_base(),
        records,
        &mut DecoderState::default(),
        &mut out,
    )
    .expect("decode");
    (header, out, counts)
}

#[test]
fn real_files_match_readme_and_ptufile() {
    let dir = reference::real_tcspc_dir();
    let refs = reference::parse(
        &std::fs::read_to_string(reference::data_dir().join("ptu_reference.txt")).unwrap(),
    );
    for readme in &README {
        let bytes = std::fs::read(dir.join(readme.file)).unwrap();
        let r = refs
            .iter()
            .find(|c| c.name == readme.file)
            .expect("reference case");
        let (header, cols, counts) = decode_whole(&bytes);

        // Header facts.
        assert_eq!(
            u64::from(header.record_type.code()),
            r.i64("record_type") as u64
        );
        assert_eq!(header.number_of_records, readme.records);
        assert_eq!(header.header_len_bytes, r.i64("header_len") as u64);
        assert_eq!(header.sync_rate_hz, Some(r.f64("sync_rate_hz")));
        assert_eq!(header.global_resolution_s, r.f64("global_resolution_s"));
        assert_eq!(header.resolution_s, r.f64("resolution_s"));

        // Counts: README and ptufile.
        assert_eq!(counts.records, readme.records);
        let ours: Vec<u64> =
            counts.photons_per_channel[..readme.photons_per_channel.len()].to_vec();
        assert_eq!(ours, readme.photons_per_channel, "{}", readme.file);
        assert_eq!(
            ours,
            r.i64s("photons_per_channel")
                .iter()
                .map(|&v| v as u64)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            counts.photons,
            readme.photons_per_channel.iter().sum::<u64>()
        );
        for &(pattern, n) in readme.markers {
            assert_eq!(
                counts.markers_per_pattern[pattern], n,
                "{} marker {pattern}",
                readme.file
            );
        }
        assert_eq!(
            counts.markers_per_pattern.to_vec(),
            r.i64s("markers_per_pattern")
                .iter()
                .map(|&v| v as u64)
                .collect::<Vec<_>>()
        );
        assert_eq!(counts.overflows, readme.overflows);
        assert_eq!(counts.overflows, r.i64("overflows") as u64);
        assert_eq!(counts.invalid, 0);
        assert_eq!(
            counts.photons + counts.markers + counts.overflows,
            counts.records
        );

        // Absolute times: first and last photon.
        let photon_rows: Vec<usize> = (0..cols.len())
            .filter(|&i| cols.marker_flags[i] == 0)
            .collect();
        let (first, last) = (photon_rows[0], *photon_rows.last().unwrap());
        assert_eq!(
            cols.macro_time_sync[first] as i64,
            r.i64("first_photon_time")
        );
        assert_eq!(cols.macro_time_sync[last] as i64, r.i64("last_photon_time"));
        assert_eq!(
            i64::from(cols.micro_time_bins[last]),
            r.i64("last_photon_dtime")
        );
        let period_ps = header.global_resolution_s * 1e12;
        assert_eq!(
            cols.macro_time_ps[last],
            (cols.macro_time_sync[last] as f64 * period_ps).round() as i64
        );

        // Full micro-time histograms per channel, over the whole 15-bit range.
        let channels = readme.photons_per_channel.len();
        let layout = HistogramLayout {
            channels,
            native_bins: header.record_type.micro_time_range(),
            bin_width_native: 1,
            micro_bin_ps: header.resolution_s * 1e12,
            sync_rate_hz: header.sync_rate_hz.unwrap(),
        };
        let mut hist = MicroTimeHistogram::new(layout.clone()).unwrap();
        hist.add_photons(&cols).unwrap();
        let mut total = vec![0u64; readme.micro_bins];
        for ch in 0..channels {
            let want = r.i64s(&format!("histogram_{ch}"));
            assert_eq!(want.len(), readme.micro_bins);
            let got = hist.counts(ch);
            assert!(
                got[readme.micro_bins..].iter().all(|&c| c == 0),
                "counts past the last bin"
            );
            assert_eq!(
                got[..readme.micro_bins]
                    .iter()
                    .map(|&c| i64::from(c))
                    .collect::<Vec<_>>(),
                want,
                "{} ch {ch}",
                readme.file
            );
            for (t, &c) in total.iter_mut().zip(got) {
                *t += u64::from(c);
            }
        }
        let peak = total.iter().enumerate().max_by_key(|(_, &c)| c).unwrap().0;
        assert_eq!(peak, readme.peak_bin);
        assert_eq!(peak as i64, r.i64("histogram_peak_bin"));

        // The fused decode-and-histogram path gives the same histogram.
        let mut fused = MicroTimeHistogram::new(layout).unwrap();
        let records = &bytes[header.header_len_bytes as usize..];
        decode_into(
            header.record_type,
            records,
            &mut DecoderState::default(),
            &mut fused,
        )
        .unwrap();
        assert_eq!(fused, hist);

        // Streaming in odd-sized chunks gives the same columns as one call.
        let mut reader = PtuRecordReader::new(&bytes[..], 9_999).unwrap();
        let mut streamed = PhotonColumns::default();
        let mut streamed_counts = DecodeCounts::default();
        while let Some(c) = reader.decode_next_chunk(&mut streamed).unwrap() {
            streamed_counts.merge(&c);
        }
        assert_eq!(streamed, cols);
        assert_eq!(streamed_counts, counts);

        // tttrlib (if it was installed when the reference was made): same photons on the
        // HydraHarp file; on the PicoHarp file it labels the 2,565 special records (channel 15)
        // as events and splits photons + markers differently (README), but the total of
        // photons and markers it reports is ours.
        if r.has("tttrlib_events") {
            let events = r.i64("tttrlib_events") as u64;
            assert_eq!(
                events,
                counts.photons + counts.markers,
                "tttrlib drops only overflow records"
            );
            if readme.file.starts_with("hydraharp") {
                assert_eq!(r.i64("tttrlib_photons") as u64, counts.photons);
            } else {
                println!(
                    "{}: tttrlib photons {} / markers {} vs ptufile and flowdaq {} / {}",
                    readme.file,
                    r.i64("tttrlib_photons"),
                    r.i64("tttrlib_markers"),
                    counts.photons,
                    counts.markers
                );
                assert_ne!(r.i64("tttrlib_photons") as u64, counts.photons);
            }
        }
    }
}

#[test]
fn every_record_type_matches_ptufile_on_spec_built_records() {
    let dir = reference::data_dir().join("synthetic");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("ptu") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let expected = reference::parse(
            &std::fs::read_to_string(path.with_extension("expected.txt")).unwrap(),
        );
        let e = &expected[0];
        let mut reader = PtuRecordReader::new(&bytes[..], 64).unwrap();
        let rt = reader.header().record_type;
        assert_eq!(i64::from(rt.code()), e.i64("record_type"));
        let tb = reader.header().time_base();
        let mut cols = PhotonColumns::default();
        let mut counts = DecodeCounts::default();
        while let Some(c) = reader.decode_next_chunk(&mut cols).unwrap() {
            counts.merge(&c);
        }
        let (time, dtime, channel, marker) = (
            e.i64s("time"),
            e.i64s("dtime"),
            e.i64s("channel"),
            e.i64s("marker"),
        );
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(counts.overflows as i64, e.i64("overflows"), "{name}");
        assert_eq!(counts.invalid, 0, "{name}");
        assert_eq!(cols.len(), time.len(), "{name}");
        for i in 0..time.len() {
            assert_eq!(cols.macro_time_sync[i] as i64, time[i], "{name} row {i}");
            assert_eq!(
                cols.macro_time_ps[i],
                (time[i] as f64 * tb.macro_unit_ps).round() as i64,
                "{name} row {i}"
            );
            if marker[i] > 0 {
                assert_eq!(
                    (i64::from(cols.marker_flags[i]), cols.channel[i]),
                    (marker[i], 0),
                    "{name} row {i}"
                );
            } else if !rt.is_t3() && rt != RecordType::PicoHarpT2 && channel[i] == 0 {
                // ptufile reports HydraHarp-family T2 sync records as channel 0.
                assert_eq!(cols.channel[i], T2_SYNC_CHANNEL, "{name} row {i}");
            } else {
                assert_eq!(
                    (i64::from(cols.channel[i]), cols.marker_flags[i]),
                    (channel[i], 0),
                    "{name} row {i}"
                );
                assert_eq!(
                    i64::from(cols.micro_time_bins[i]),
                    dtime[i],
                    "{name} row {i}"
                );
            }
        }
        seen.push(rt);
    }
    seen.sort_by_key(|t| t.code());
    // Every PicoQuant record type; SPC-130 records are no PTU's and ptufile does not read
    // them: they are checked against tttrlib (connectors/tests/ptu_replay.rs).
    let mut all: Vec<RecordType> = RecordType::ALL
        .into_iter()
        .filter(|t| *t != RecordType::BeckerHicklSpc130)
        .collect();
    all.sort_by_key(|t| t.code());
    assert_eq!(seen, all, "a synthetic file for every record type");
}

#[test]
fn ptu_batches_become_arrow() {
    let bytes = std::fs::read(reference::data_dir().join("synthetic/hydraharp_v2_t3.ptu")).unwrap();
    let (_, cols, counts) = decode_whole(&bytes);
    let batch = cols.into_record_batch().unwrap();
    assert_eq!(batch.num_rows() as u64, counts.photons + counts.markers);
    assert_eq!(
        batch
            .schema()
            .field_with_name("micro_time_ps")
            .unwrap()
            .data_type(),
        &arrow_schema::DataType::Int32
    );
}

/// No photon leaves a window uncounted: over every window of both real files, the binned
/// photons plus `beyond_last_bin_photons` plus `other_channel_photons` equal the photons the
/// decoder found, with the histogram the server uses by default (one sync period of bins, one
/// channel: the HydraHarp file's second channel is then "other"), and with a histogram cut to
/// three quarters of the period (photons past the last bin).
#[test]
fn every_photon_of_a_window_is_binned_or_counted() {
    use arrow_array::{cast::AsArray, types::UInt64Type};
    use flowdaq_analytics::tcspc::histogram::{
        histograms_to_record_batch, HistogramWindow, HistogramWindower,
    };
    let dir = reference::real_tcspc_dir();
    for readme in &README {
        let bytes = std::fs::read(dir.join(readme.file)).unwrap();
        let (header, cols, counts) = decode_whole(&bytes);
        let sync_rate_hz = header.sync_rate_hz.unwrap();
        let micro_bin_ps = header.resolution_s * 1e12;
        let period_bins = (1e12 / sync_rate_hz / micro_bin_ps).ceil() as usize;
        for native_bins in [period_bins, period_bins * 3 / 4] {
            let layout = HistogramLayout {
                channels: 1,
                native_bins,
                bin_width_native: 1,
                micro_bin_ps,
                sync_rate_hz,
            };
            let mut windower = HistogramWindower::new(
                layout,
                HistogramWindow::Syncs((0.05 * sync_rate_hz) as u64),
            )
            .unwrap();
            let mut windows = Vec::new();
            windower.push(&cols, &mut windows).unwrap();
            windower.flush(&mut windows);
            let batch = histograms_to_record_batch(&windows).unwrap();
            let sum = |name: &str| -> u64 {
                let column = batch
                    .column_by_name(name)
                    .unwrap()
                    .as_primitive::<UInt64Type>();
                column.values().iter().sum()
            };
            // One row per window (one channel), so the per-window "other" count is summed once.
            let (binned, beyond, other) = (
                sum("photon_count"),
                sum("beyond_last_bin_photons"),
                sum("other_channel_photons"),
            );
            println!(
            "{}: {} windows, {binned} binned + {beyond} beyond the last bin + {other} on other \
             channels = {} photons",
            readme.file,
            windows.len(),
            counts.photons
        );
            assert_eq!(binned + beyond + other, counts.photons, "{}", readme.file);
            assert_eq!(other, counts.photons - counts.photons_per_channel[0]);
            assert_eq!(beyond > 0, native_bins < period_bins, "{}", readme.file);
        }
    }
}
