//! Replay of real PicoQuant PTU files through the `ptu_replay` connector, every message checked
//! by the server's own decoder, and hostile files (bad magic, truncated header, unknown record
//! type, records cut short) ending in an error, never a panic.
//!
//! Fixtures (`tests/data/`, copies of `../shared/data/tcspc/`): `hydraharp_t3_beads.ptu` from
//! Fluorescence-Tools/tttrlib `test/data/imaging/pq/Microtime200_HH400/beads.ptu`, and
//! `picoharp_t3_hazelnut_z1.ptu` from zoccoler/napari-flim-phasor-plotter
//! `src/napari_flim_phasor_plotter/data/hazelnut_FLIM_z_stack/ptu_stack_FLIM_z1.ptu`. Expected
//! counts are ptufile's (see the data README), not flowdaq's.

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type, UInt8Type};
use flowdaq_analytics::tcspc::ptu::PtuHeader;
use flowdaq_analytics::tcspc::records::{
    decode_records, DecoderState, PhotonColumns, RecordType, PQ_RECORD_BYTES,
};
use flowdaq_connectors::decode::{decode_message, DecodeContext, DecodeLimits};
use flowdaq_connectors::replay::{PtuReplay, PtuReplayConfig};
use flowdaq_connectors::{Connector, ConnectorConfig, ConnectorError};
use flowdaq_schemas::Table;

const HYDRAHARP: &str = "hydraharp_t3_beads.ptu";
const PICOHARP: &str = "picoharp_t3_hazelnut_z1.ptu";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A scratch file unique to this process and test; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, bytes: &[u8]) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("flowdaq-ptu-replay-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("scratch writable");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The rows the server stored from a whole replay, concatenated in message order.
#[derive(Debug, Default, PartialEq)]
struct Stored {
    messages: usize,
    macro_time_ps: Vec<i64>,
    micro_time_ps: Vec<i32>,
    channel: Vec<u8>,
    marker_flags: Vec<u8>,
}

impl Stored {
    fn photons_on(&self, channel: u8) -> usize {
        self.channel
            .iter()
            .zip(&self.marker_flags)
            .filter(|&(&c, &m)| c == channel && m == 0)
            .count()
    }

    fn markers_with(&self, flags: u8) -> usize {
        self.marker_flags.iter().filter(|&&m| m == flags).count()
    }

    fn photons(&self) -> usize {
        self.marker_flags.iter().filter(|&&m| m == 0).count()
    }
}

/// Runs a connector to its end, decoding every message as the server would. Returns the rows
/// and the error that ended the replay, if any.
fn run(connector: &mut dyn Connector) -> (Stored, Option<ConnectorError>) {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: 1_764_000_000_000_000_000,
        default_run_id: "default",
        limits: &limits,
    };
    let mut stored = Stored::default();
    loop {
        let message = match connector.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => return (stored, None),
            Err(e) => return (stored, Some(e)),
        };
        let decoded = match decode_message(&message.frames(), &ctx) {
            Ok(decoded) => decoded,
            Err((_, e)) => panic!("server refused message {}: {e}", stored.messages),
        };
        assert_eq!(decoded.batches.len(), 1);
        let (table, batch) = &decoded.batches[0];
        assert_eq!(*table, Table::Photons);
        assert!(batch.num_rows() > 0, "no empty message is sent");
        let col = |name: &str| batch.column_by_name(name).expect("column").clone();
        stored
            .macro_time_ps
            .extend(col("macro_time_ps").as_primitive::<Int64Type>().values());
        stored
            .micro_time_ps
            .extend(col("micro_time_ps").as_primitive::<Int32Type>().values());
        stored
            .channel
            .extend(col("channel").as_primitive::<UInt8Type>().values());
        stored
            .marker_flags
            .extend(col("marker_flags").as_primitive::<UInt8Type>().values());
        stored.messages += 1;
    }
}

fn replay_file(name: &str, records_per_message: usize) -> (PtuReplay, Stored) {
    let config = PtuReplayConfig {
        records_per_message,
        ..PtuReplayConfig::new(data(name))
    };
    let mut replay = config.build().expect("real file opens");
    let (stored, error) = run(&mut replay);
    assert!(error.is_none(), "{name}: {error:?}");
    (replay, stored)
}

/// The whole record section decoded in one call of the analytics decoder.
fn decoded_in_one_go(name: &str) -> PhotonColumns {
    let bytes = std::fs::read(data(name)).expect("fixture readable");
    let header = PtuHeader::parse(&bytes).expect("header");
    let start = header.header_len_bytes as usize;
    let end = start + header.number_of_records as usize * PQ_RECORD_BYTES;
    let mut out = PhotonColumns::default();
    decode_records(
        header.record_type,
        header.time_base(),
        &bytes[start..end],
        &mut DecoderState::default(),
        &mut out,
    )
    .expect("decodes");
    out
}

fn assert_same_as_one_go(name: &str, stored: &Stored) {
    let whole = decoded_in_one_go(name);
    assert_eq!(stored.macro_time_ps, whole.macro_time_ps, "{name}");
    assert_eq!(stored.micro_time_ps, whole.micro_time_ps, "{name}");
    assert_eq!(stored.channel, whole.channel, "{name}");
    assert_eq!(stored.marker_flags, whole.marker_flags, "{name}");
}

#[test]
fn hydraharp_replay_matches_ptufile_and_one_go_decoding() {
    let (replay, stored) = replay_file(HYDRAHARP, 1000);
    assert_eq!(replay.record_type(), RecordType::HydraHarpV2T3);
    assert_eq!(replay.number_of_records(), 104_776);
    assert_eq!(replay.records_read(), 104_776);
    let sync = replay.sync_rate_hz().expect("sync rate");
    assert!((sync - 39_999_960.0).abs() < 1.0, "{sync}");
    assert!((replay.resolution_ps() - 16.0).abs() < 1e-3);
    // 105 chunks of at most 1000 records; one made of overflows only would be skipped.
    assert!(
        stored.messages <= 105 && stored.messages > 100,
        "{}",
        stored.messages
    );
    assert_eq!(stored.photons(), 73_787);
    assert_eq!(stored.photons_on(0), 52_833);
    assert_eq!(stored.photons_on(1), 20_954);
    assert_eq!(stored.markers_with(4), 50);
    assert_eq!(stored.markers_with(8), 50);
    assert_eq!(stored.macro_time_ps.len(), 73_787 + 100);
    assert_eq!(replay.counts().overflows, 30_889);
    assert_same_as_one_go(HYDRAHARP, &stored);
    // Overflow carried across messages: times never go back, and they reach far beyond one
    // chunk's worth of wraps (ptufile: last photon at sync 422,229,850).
    assert!(stored.macro_time_ps.windows(2).all(|w| w[0] <= w[1]));
    let last = *stored.macro_time_ps.last().expect("rows");
    let expected = 422_229_850.0 * replay.global_resolution_ps();
    assert!((last as f64 - expected).abs() < 1.0, "{last} vs {expected}");
}

#[test]
fn picoharp_replay_matches_ptufile_and_one_go_decoding() {
    let (replay, stored) = replay_file(PICOHARP, 1000);
    assert_eq!(replay.record_type(), RecordType::PicoHarpT3);
    assert_eq!(replay.records_read(), 155_398);
    let sync = replay.sync_rate_hz().expect("sync rate");
    assert!((sync - 78.02e6).abs() < 1.0, "{sync}");
    assert!((replay.resolution_ps() - 96.97).abs() < 0.01);
    assert_eq!(stored.photons(), 150_363);
    assert_eq!(stored.photons_on(0), 150_363);
    assert_eq!(stored.markers_with(1), 1_280);
    assert_eq!(stored.markers_with(2), 1_280);
    assert_eq!(stored.markers_with(4), 5);
    assert_eq!(stored.macro_time_ps.len(), 150_363 + 2_565);
    assert_eq!(replay.counts().overflows, 2_470);
    assert_same_as_one_go(PICOHARP, &stored);
    assert!(stored.macro_time_ps.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn chunk_size_changes_nothing_but_the_number_of_messages() {
    let (_, small) = replay_file(HYDRAHARP, 7);
    let (_, default) = replay_file(HYDRAHARP, 65_536);
    assert_eq!(default.messages, 2);
    assert!(small.messages > 10_000);
    assert_eq!(small.macro_time_ps, default.macro_time_ps);
    assert_eq!(small.micro_time_ps, default.micro_time_ps);
    assert_eq!(small.channel, default.channel);
    assert_eq!(small.marker_flags, default.marker_flags);
}

#[test]
fn registry_builds_it_and_markers_can_be_left_out() {
    let json = serde_json::json!({
        "type": "ptu_replay",
        "path": data(PICOHARP),
        "source": "flim-1",
        "run_id": "run-3",
        "records_per_message": 50000,
        "include_markers": false,
    });
    let config: ConnectorConfig = serde_json::from_value(json).expect("parses");
    let back: ConnectorConfig =
        serde_json::from_value(serde_json::to_value(&config).expect("serialises")).expect("again");
    assert_eq!(config, back);
    let mut connector = config.build().expect("builds");
    assert_eq!(connector.source_id(), "flim-1");
    let first = connector.next_message().expect("ok").expect("message");
    assert_eq!(first.header.run_id.as_deref(), Some("run-3"));
    assert!(first.header.meta.is_empty());
    let (rest, error) = run(connector.as_mut());
    assert!(error.is_none());
    let first_rows = first.header.arrays[0].shape[0] as usize;
    assert_eq!(first_rows + rest.photons(), 150_363);
    assert_eq!(rest.markers_with(1) + rest.markers_with(2), 0);
}

#[test]
fn summary_names_the_format_and_rates() {
    let replay = PtuReplayConfig::new(data(HYDRAHARP))
        .build()
        .expect("opens");
    let line = replay.summary();
    assert!(
        line.starts_with("hydraharp_t3_beads.ptu: HydraHarpV2T3"),
        "{line}"
    );
    assert!(line.contains("0x01010304"), "{line}");
    assert!(line.contains("104776 records"), "{line}");
    assert!(line.contains("sync 39.999960 MHz"), "{line}");
    assert!(!line.contains('\n'));
}

fn build_err(name: &str, bytes: &[u8]) -> String {
    let scratch = Scratch::new(name, bytes);
    match PtuReplayConfig::new(&scratch.0).build() {
        Ok(_) => panic!("{name} should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_headers_are_errors() {
    let real = std::fs::read(data(HYDRAHARP)).expect("fixture");
    let header_len = PtuHeader::parse(&real).expect("header").header_len_bytes as usize;

    let mut magic = real.clone();
    magic[..8].copy_from_slice(b"PQHISTO\0");
    let why = build_err("magic.ptu", &magic);
    assert!(why.contains("histogram file (.phu)"), "{why}");
    magic[..8].copy_from_slice(b"PQTTTX\0\0");
    let why = build_err("magic.ptu", &magic);
    assert!(
        why.contains("not a PicoQuant PTU, HT3 or PT3 file"),
        "{why}"
    );

    for cut in [0, 5, 16, 100, header_len - 1] {
        let why = build_err("short-header.ptu", &real[..cut]);
        assert!(why.contains("truncated"), "cut at {cut}: {why}");
    }

    // The record type tag's value (the entry named TTResultFormat_TTTRRecType) set to 0x00010308.
    let name = b"TTResultFormat_TTTRRecType";
    let at = real
        .windows(name.len())
        .position(|w| w == name)
        .expect("record type tag");
    let mut unknown = real.clone();
    unknown[at + 40..at + 48].copy_from_slice(&0x0001_0308i64.to_le_bytes());
    let why = build_err("unknown-type.ptu", &unknown);
    assert!(
        why.contains("unsupported PTU record type 0x00010308"),
        "{why}"
    );

    let missing = PtuReplayConfig::new(data("no-such-file.ptu"));
    assert!(matches!(missing.build(), Err(ConnectorError::Io { .. })));
}

#[test]
fn a_file_cut_inside_the_records_sends_every_whole_record_then_fails() {
    let real = std::fs::read(data(HYDRAHARP)).expect("fixture");
    let header_len = PtuHeader::parse(&real).expect("header").header_len_bytes as usize;
    let whole = decoded_in_one_go(HYDRAHARP);
    for (records, trailing) in [(0usize, 0usize), (2_500, 0), (2_500, 3), (50_001, 1)] {
        let cut = header_len + records * PQ_RECORD_BYTES + trailing;
        let scratch = Scratch::new("cut.ptu", &real[..cut]);
        let config = PtuReplayConfig {
            records_per_message: 1000,
            ..PtuReplayConfig::new(&scratch.0)
        };
        let mut replay = config.build().expect("the header is whole");
        let (stored, error) = run(&mut replay);
        let why = error.expect("a truncation is reported").to_string();
        assert!(why.contains("truncated"), "{why}");
        if trailing == 0 {
            assert!(
                why.contains(&format!(
                    "declares 104776 records, the file holds {records}"
                )),
                "{why}"
            );
        } else {
            assert!(why.contains(&format!("inside record {records}")), "{why}");
        }
        assert_eq!(replay.records_read(), records as u64);
        // Exactly the events of the records that were there, with the same times.
        let n = stored.macro_time_ps.len();
        assert_eq!(stored.macro_time_ps, whole.macro_time_ps[..n]);
        assert_eq!(stored.marker_flags, whole.marker_flags[..n]);
        let mut state = DecoderState::default();
        let mut prefix = PhotonColumns::default();
        let header = replay.header();
        decode_records(
            header.record_type,
            header.time_base(),
            &real[header_len..header_len + records * PQ_RECORD_BYTES],
            &mut state,
            &mut prefix,
        )
        .expect("prefix decodes");
        assert_eq!(n, prefix.len());
        assert!(replay
            .next_message()
            .expect("ends after the error")
            .is_none());
    }
}

#[test]
fn garbage_records_never_panic_and_every_message_is_accepted() {
    // The real header followed by pseudo-random records: whatever they decode to must be a
    // message the server accepts (times non-negative, micro times within i32).
    let real = std::fs::read(data(PICOHARP)).expect("fixture");
    let header_len = PtuHeader::parse(&real).expect("header").header_len_bytes as usize;
    let mut bytes = real[..header_len].to_vec();
    let mut x: u32 = 0x9E37_79B9;
    for _ in 0..155_398 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.extend(x.to_le_bytes());
    }
    let scratch = Scratch::new("garbage.ptu", &bytes);
    let config = PtuReplayConfig {
        records_per_message: 4096,
        ..PtuReplayConfig::new(&scratch.0)
    };
    let mut replay = config.build().expect("the header is real");
    let (stored, error) = run(&mut replay);
    assert!(error.is_none(), "{error:?}");
    assert!(stored.messages > 0);
    assert_eq!(replay.records_read(), 155_398);
}

/// Legacy containers (`tests/data/tcspc_formats/`, written from the real PTU files by
/// tttrlib 0.26.2 and `make_formats.py`): what tttrlib reads back from each, in
/// `reference.json`.
mod legacy_containers {
    use super::*;

    fn reference(file: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(data("tcspc_formats/reference.json"))
            .expect("reference.json of the legacy fixtures");
        let all: serde_json::Value = serde_json::from_str(&text).expect("reference.json parses");
        all["files"][file].clone()
    }

    fn replay(name: &str) -> (PtuReplay, Stored) {
        replay_file(&format!("tcspc_formats/{name}"), 4096)
    }

    /// Raw micro-time bins of the stored photons.
    fn micro_bins(replay: &PtuReplay, stored: &Stored) -> Vec<u64> {
        (0..stored.channel.len())
            .filter(|&i| stored.marker_flags[i] == 0)
            .map(|i| (f64::from(stored.micro_time_ps[i]) / replay.resolution_ps()).round() as u64)
            .collect()
    }

    /// tttrlib's readback facts against the stored rows: photons per channel, specials per
    /// marker pattern, the micro-time histogram, and the first and last photons' raw times.
    fn assert_matches_tttrlib(replay: &PtuReplay, stored: &Stored, facts: &serde_json::Value) {
        let per_channel = facts["photons_per_routing_channel"]
            .as_object()
            .expect("photons per channel");
        for (channel, count) in per_channel {
            let channel: u8 = channel.parse().expect("channel number");
            assert_eq!(stored.photons_on(channel) as u64, count.as_u64().unwrap());
        }
        assert_eq!(
            stored.photons() as u64,
            facts["number_of_photons"].as_u64().unwrap()
        );
        let specials = facts["special_records_per_routing_channel"]
            .as_object()
            .expect("specials");
        for (pattern, count) in specials {
            let pattern: u8 = pattern.parse().expect("marker pattern");
            assert_eq!(stored.markers_with(pattern) as u64, count.as_u64().unwrap());
        }
        let bins = micro_bins(replay, stored);
        let want: Vec<u64> = facts["micro_time_histogram"]
            .as_array()
            .expect("histogram")
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let mut got = vec![0u64; want.len()];
        for b in bins {
            got[b as usize] += 1;
        }
        assert_eq!(got, want);
        let photon_macro: Vec<u64> = (0..stored.channel.len())
            .filter(|&i| stored.marker_flags[i] == 0)
            .map(|i| {
                (stored.macro_time_ps[i] as f64 / replay.global_resolution_ps()).round() as u64
            })
            .collect();
        let raw = |key: &str| -> Vec<u64> {
            facts[key]["macro_times"]
                .as_array()
                .expect("macro times")
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect()
        };
        assert_eq!(photon_macro[..20], raw("first_photons")[..]);
        assert_eq!(
            photon_macro[photon_macro.len() - 20..],
            raw("last_photons")[..]
        );
    }

    #[test]
    fn ht3_of_the_hydraharp_file_matches_tttrlib_and_the_ptu() {
        let (replay, stored) = replay("hydraharp_t3_beads.ht3");
        assert_eq!(replay.record_type(), RecordType::HydraHarpV2T3);
        assert_eq!(replay.number_of_records(), 42_976);
        assert_eq!(replay.records_read(), 42_976);
        assert!((replay.resolution_ps() - 16.0).abs() < 1e-3);
        assert_matches_tttrlib(
            &replay,
            &stored,
            &reference("hydraharp_t3_beads.ht3")["tttrlib_readback"],
        );
        // The same events as the start of the PTU file they were written from.
        let (ptu, whole) = replay_file(HYDRAHARP, 4096);
        let n = stored.channel.len();
        assert_eq!(stored.channel, whole.channel[..n]);
        assert_eq!(stored.marker_flags, whole.marker_flags[..n]);
        assert_eq!(stored.micro_time_ps, whole.micro_time_ps[..n]);
        let sync_ratio = replay.global_resolution_ps() / ptu.global_resolution_ps();
        assert!((sync_ratio - 1.0).abs() < 1e-6, "{sync_ratio}");
    }

    #[test]
    fn ht3_of_the_picoharp_file_matches_tttrlib() {
        // tttrlib wrote its own reading of the PicoHarp records: markers with micro time 0
        // as photons on channel 15, ten photons as markers. The HT3 bytes say so, and so do
        // the stored rows.
        let (replay, stored) = replay("picoharp_t3_hazelnut_z1.ht3");
        assert_eq!(replay.record_type(), RecordType::HydraHarpV2T3);
        assert_matches_tttrlib(
            &replay,
            &stored,
            &reference("picoharp_t3_hazelnut_z1.ht3")["tttrlib_readback"],
        );
    }

    #[test]
    fn pt3_holds_the_ptu_records_and_decodes_as_the_ptu_does() {
        let (replay, stored) = replay("picoharp_t3_hazelnut_z1.pt3");
        assert_eq!(replay.record_type(), RecordType::PicoHarpT3);
        assert_eq!(replay.records_read(), 30_408);
        let facts = &reference("picoharp_t3_hazelnut_z1.pt3")["independent_decode"];
        assert_eq!(
            stored.photons() as u64,
            facts["number_of_photons_canonical"].as_u64().unwrap()
        );
        assert_eq!(
            (stored.channel.len() - stored.photons()) as u64,
            facts["number_of_markers_canonical"].as_u64().unwrap()
        );
        // Its records are the PTU's first 30,408: the same rows, micro times in the same bins
        // (the PT3 stores the resolution as float32 ns, the PTU as float64 s).
        let (ptu, whole) = replay_file(PICOHARP, 4096);
        let n = stored.channel.len();
        assert_eq!(stored.channel, whole.channel[..n]);
        assert_eq!(stored.marker_flags, whole.marker_flags[..n]);
        let bins = |r: &PtuReplay, s: &Stored| -> Vec<i64> {
            s.micro_time_ps[..n]
                .iter()
                .map(|&ps| (f64::from(ps) / r.resolution_ps()).round() as i64)
                .collect()
        };
        assert_eq!(bins(&replay, &stored), bins(&ptu, &whole));
        assert!((replay.resolution_ps() / ptu.resolution_ps() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn spc130_files_match_tttrlib() {
        for name in ["hydraharp_t3_beads.spc", "picoharp_t3_hazelnut_z1.spc"] {
            let (replay, stored) = replay(name);
            assert_eq!(replay.record_type(), RecordType::BeckerHicklSpc130);
            let facts = &reference(name)["tttrlib_readback"];
            assert_eq!(
                replay.records_read(),
                facts["number_of_records"].as_u64().unwrap(),
                "{name}"
            );
            let period_s = facts["macro_time_resolution_s"].as_f64().unwrap();
            assert!((replay.global_resolution_ps() * 1e-12 / period_s - 1.0).abs() < 1e-9);
            // Without the .set file the bins are the period / 4096, as tttrlib has them.
            let bin_s = facts["micro_time_resolution_s"].as_f64().unwrap();
            assert!((replay.resolution_ps() * 1e-12 / bin_s - 1.0).abs() < 1e-9);
            assert_matches_tttrlib(&replay, &stored, facts);
        }
        // A known bin width replaces the default.
        let config = PtuReplayConfig {
            micro_bin_ps: Some(16.0),
            ..PtuReplayConfig::new(data("tcspc_formats/hydraharp_t3_beads.spc"))
        };
        let replay = config.build().expect("opens");
        assert_eq!(replay.resolution_ps(), 16.0);
    }

    #[test]
    fn hostile_legacy_headers_are_errors() {
        let good = std::fs::read(data("tcspc_formats/picoharp_t3_hazelnut_z1.pt3")).unwrap();
        // Every cut inside the header is an error, never a panic.
        for cut in (0..728).step_by(13) {
            let result = PtuReplayConfig::new("x")
                .replay_reader(std::io::Cursor::new(good[..cut].to_vec()), "cut.pt3");
            assert!(result.is_err(), "cut at {cut}");
        }
        let mode = |m: i32| {
            let mut bytes = good.clone();
            bytes[348..352].copy_from_slice(&m.to_le_bytes());
            PtuReplayConfig::new("x")
                .replay_reader(std::io::Cursor::new(bytes), "mode.pt3")
                .expect_err("refused")
                .to_string()
        };
        assert!(mode(2).contains("T2 files"), "{}", mode(2));
        assert!(mode(7).contains("measurement mode 7"), "{}", mode(7));
        let mut absurd = good.clone();
        absurd[724..728].copy_from_slice(&i32::MAX.to_le_bytes());
        let err = PtuReplayConfig::new("x")
            .replay_reader(std::io::Cursor::new(absurd), "img.pt3")
            .expect_err("refused");
        assert!(err.to_string().contains("imaging header"), "{err}");
        let unknown = PtuReplayConfig::new("x")
            .replay_reader(std::io::Cursor::new(vec![0x5a; 4096]), "blob.bin")
            .expect_err("refused");
        assert!(
            unknown
                .to_string()
                .contains("PTU, HT3 or PT3 file, nor a Becker & Hickl SPC-130"),
            "{unknown}"
        );
        // SPC first frames without a clock, or of a raw diagnostic file, are refused.
        for frame in [0x8000_0000u32, 0x8400_00FA] {
            let mut bytes = frame.to_le_bytes().to_vec();
            bytes.extend([0u8; 64]);
            let why = PtuReplayConfig::new("x")
                .replay_reader(std::io::Cursor::new(bytes), "bad.spc")
                .expect_err("refused")
                .to_string();
            assert!(why.contains("SPC"), "{why}");
        }
    }
}
