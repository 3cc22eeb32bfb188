use super::*;
use crate::tcspc::records::{decode_into, DecoderState, RecordType};

fn layout(bin_width: usize) -> HistogramLayout {
    HistogramLayout {
        channels: 2,
        native_bins: 10,
        bin_width_native: bin_width,
        micro_bin_ps: 4.0,
        sync_rate_hz: 1e6,
    }
}

#[test]
fn binning_with_a_width_that_does_not_divide_the_range() {
    let mut h = MicroTimeHistogram::new(layout(3)).unwrap();
    assert_eq!(h.layout().bins(), 4);
    h.add_columns(
        &[0, 1, 2, 3, 4, 5],
        &[0, 2, 3, 9, 10, 4],
        &[0, 0, 1, 0, 0, 2],
        &[0, 0, 0, 0, 0, 0],
    )
    .unwrap();
    assert_eq!(h.counts(0), &[2, 0, 0, 1]);
    assert_eq!(h.counts(1), &[0, 1, 0, 0]);
    // micro 10 is past native_bins, channel 2 past channels.
    assert_eq!(h.out_of_range(), 2);
    assert_eq!(h.sync_span(), Some((0, 3)));
    assert!(h.add_columns(&[0], &[], &[0], &[0]).is_err());
    assert!(MicroTimeHistogram::new(layout(0)).is_err());
    assert!(MicroTimeHistogram::new(HistogramLayout {
        sync_rate_hz: 0.0,
        ..layout(1)
    })
    .is_err());
}

#[test]
fn fused_decode_matches_columns() {
    let recs: Vec<u8> = (0..200u32)
        .map(|i| {
            if i % 17 == 0 {
                (1 << 31) | (63 << 25)
            } else {
                ((i % 2) << 25) | ((i % 10) << 10) | (i % 1000)
            }
        })
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let mut fused = MicroTimeHistogram::new(layout(1)).unwrap();
    decode_into(
        RecordType::HydraHarpV2T3,
        &recs,
        &mut DecoderState::default(),
        &mut fused,
    )
    .unwrap();
    let mut cols = PhotonColumns::default();
    let tb = crate::tcspc::records::TimeBase {
        macro_unit_ps: 1e6,
        micro_bin_ps: 4.0,
    };
    crate::tcspc::records::decode_records(
        RecordType::HydraHarpV2T3,
        tb,
        &recs,
        &mut DecoderState::default(),
        &mut cols,
    )
    .unwrap();
    let mut from_cols = MicroTimeHistogram::new(layout(1)).unwrap();
    from_cols.add_photons(&cols).unwrap();
    assert_eq!(fused, from_cols);
}

#[test]
fn windows_by_syncs_are_aligned_and_chunking_invariant() {
    let macro_t: Vec<u64> = vec![5, 6, 12, 25, 26, 27, 60];
    let micro = [1u16; 7];
    let ch = [0u8; 7];
    let mk = [0u8; 7];
    let run = |split: usize| {
        let mut w = HistogramWindower::new(layout(1), HistogramWindow::Syncs(10)).unwrap();
        let mut out = Vec::new();
        w.push_columns(
            &macro_t[..split],
            &micro[..split],
            &ch[..split],
            &mk[..split],
            &mut out,
        )
        .unwrap();
        w.push_columns(
            &macro_t[split..],
            &micro[split..],
            &ch[split..],
            &mk[split..],
            &mut out,
        )
        .unwrap();
        w.flush(&mut out);
        out
    };
    let a = run(3);
    assert_eq!(a, run(5));
    let spans: Vec<_> = a
        .iter()
        .map(|w| {
            (
                w.window_start_sync,
                w.window_end_sync,
                w.histogram.photons(0),
            )
        })
        .collect();
    assert_eq!(
        spans,
        vec![(0, 10, 2), (10, 20, 1), (20, 30, 3), (60, 61, 1)]
    );
    let batch = histograms_to_record_batch(&a).unwrap();
    assert_eq!(batch.num_rows(), 8);
    // Rows alternate channels 0 and 1. 3 photons in 10 us = 300 kHz > 5 % of 1 MHz: pile-up;
    // channel 1 saw nothing.
    let pile = batch
        .column_by_name("pile_up")
        .unwrap()
        .as_any()
        .downcast_ref::<BooleanArray>()
        .unwrap()
        .clone();
    let rate = batch
        .column_by_name("count_rate_hz")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .clone();
    assert!(pile.value(4) && !pile.value(5));
    assert!((rate.value(4) - 3e5).abs() < 1e-6);
    let start = batch
        .column_by_name("window_start_ps")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .clone();
    assert_eq!(start.value(4), 20_000_000);
}

#[test]
fn windows_by_photon_count() {
    let mut w = HistogramWindower::new(layout(1), HistogramWindow::Photons(2)).unwrap();
    let mut out = Vec::new();
    w.push_columns(
        &[1, 2, 3, 4, 9],
        &[0; 5],
        &[0, 1, 0, 1, 0],
        &[0, 0, 4, 0, 0],
        &mut out,
    )
    .unwrap();
    w.flush(&mut out);
    let spans: Vec<_> = out
        .iter()
        .map(|w| (w.window_start_sync, w.window_end_sync))
        .collect();
    assert_eq!(spans, vec![(1, 3), (4, 10)]);
    assert!(HistogramWindower::new(layout(1), HistogramWindow::Photons(0)).is_err());
}

/// A closed window as the reference gives it: start and end sync, counts (channel-major), the
/// span of the photons counted, photons out of range.
type ReferenceWindow = (u64, u64, Vec<u32>, Option<(u64, u64)>, u64);

/// The windower's rules applied photon by photon, written the obvious way: the reference for
/// the run-at-a-time loop (which skips the division per photon).
fn reference_sync_windows(
    layout: &HistogramLayout,
    w: u64,
    rows: &[(u64, u16, u8, u8)],
) -> Vec<ReferenceWindow> {
    let mut out = Vec::new();
    let bins = layout.bins();
    let mut open: Option<u64> = None;
    let mut counts = vec![0u32; layout.channels * bins];
    let mut span: Option<(u64, u64)> = None;
    let mut out_of_range = 0u64;
    for &(t, micro, ch, marker) in rows {
        if marker != 0 {
            continue;
        }
        let start = t - t % w;
        if let Some(s) = open {
            if s != start {
                out.push((s, s + w, counts.clone(), span, out_of_range));
                counts.iter_mut().for_each(|c| *c = 0);
                (span, out_of_range) = (None, 0);
            }
        }
        open = Some(start);
        if (micro as usize) < layout.native_bins && (ch as usize) < layout.channels {
            counts[ch as usize * bins + micro as usize / layout.bin_width_native] += 1;
            span = Some((span.map_or(t, |(first, _)| first), t));
        } else {
            out_of_range += 1;
        }
    }
    if let Some(s) = open {
        // Flushed at the end of the stream: the window ends after its last photon counted.
        let end = span.map_or(s + 1, |(_, last)| last + 1).min(s + w);
        out.push((s, end, counts, span, out_of_range));
    }
    out
}

#[test]
fn sync_windows_match_a_photon_by_photon_reference_however_chunked() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let layout = layout(3);
    for case in 0..40 {
        // Mostly rising macro times with jumps over several windows, a restart (as after a
        // reset), markers, and channels and micro times outside the layout.
        let mut t = rng.random_range(0..50u64);
        let rows: Vec<(u64, u16, u8, u8)> = (0..rng.random_range(1..400))
            .map(|i| {
                t += match rng.random_range(0..20) {
                    0 => rng.random_range(10..200),
                    _ => rng.random_range(0..3),
                };
                if i == 150 {
                    t = rng.random_range(0..30);
                }
                let marker = if rng.random_range(0..10) == 0 { 4 } else { 0 };
                (t, rng.random_range(0..12), rng.random_range(0..3), marker)
            })
            .collect();
        let w = 10 + case % 7;
        let want = reference_sync_windows(&layout, w, &rows);
        let mut windower =
            HistogramWindower::new(layout.clone(), HistogramWindow::Syncs(w)).unwrap();
        let mut got = Vec::new();
        let mut rest = &rows[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rng.random_range(1..=rest.len()));
            let column =
                |f: fn(&(u64, u16, u8, u8)) -> u64| chunk.iter().map(f).collect::<Vec<_>>();
            let macro_t = column(|r| r.0);
            let micro: Vec<u16> = column(|r| r.1 as u64).iter().map(|&v| v as u16).collect();
            let ch: Vec<u8> = column(|r| r.2 as u64).iter().map(|&v| v as u8).collect();
            let mk: Vec<u8> = column(|r| r.3 as u64).iter().map(|&v| v as u8).collect();
            windower
                .push_columns(&macro_t, &micro, &ch, &mk, &mut got)
                .unwrap();
            rest = tail;
        }
        windower.flush(&mut got);
        let got: Vec<_> = got
            .iter()
            .map(|w| {
                let h = &w.histogram;
                let counts = (0..layout.channels)
                    .flat_map(|c| h.counts(c).to_vec())
                    .collect();
                (
                    w.window_start_sync,
                    w.window_end_sync,
                    counts,
                    h.sync_span(),
                    h.out_of_range(),
                )
            })
            .collect();
        assert_eq!(got, want, "case {case}");
        for (_, _, counts, _, out_of_range) in &got {
            let photons = counts.iter().map(|&c| u64::from(c)).sum::<u64>() + out_of_range;
            assert!(photons > 0, "case {case}: an emitted window holds photons");
        }
    }
}

#[test]
fn records_decoded_into_the_window_sink_give_the_windows_of_their_columns() {
    use crate::tcspc::records::{decode_events, scan_records, EventColumns};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    // HydraHarp v2 T3: photons (some on channels and micro times outside the layout), markers
    // and overflows of 1-3 wraps of 1024 syncs.
    let words: Vec<u32> = (0..20_000)
        .map(|_| match rng.random_range(0..40) {
            0 => (1u32 << 31) | (63 << 25) | rng.random_range(0..4),
            1 => (1u32 << 31) | (rng.random_range(1..16) << 25) | rng.random_range(0..1024),
            _ => {
                (rng.random_range(0..3u32) << 25)
                    | (rng.random_range(0..12u32) << 10)
                    | rng.random_range(0..1024u32)
            }
        })
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    for window in [
        HistogramWindow::Syncs(3_000),
        HistogramWindow::Syncs(1),
        HistogramWindow::Photons(997),
    ] {
        let mut by_columns = HistogramWindower::new(layout(2), window).unwrap();
        let mut by_sink = by_columns.clone();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        let (mut column_state, mut sink_state, mut scan_state) = (
            DecoderState::default(),
            DecoderState::default(),
            DecoderState::default(),
        );
        for chunk in bytes.chunks(4 * 1_237) {
            let mut events = EventColumns::default();
            let counts = decode_events(
                RecordType::HydraHarpV2T3,
                chunk,
                &mut column_state,
                &mut events,
            )
            .unwrap();
            by_columns
                .push_columns(
                    &events.macro_time,
                    &events.micro_time_bins,
                    &events.channel,
                    &events.marker_flags,
                    &mut want,
                )
                .unwrap();
            let sink_counts = decode_into(
                RecordType::HydraHarpV2T3,
                chunk,
                &mut sink_state,
                &mut by_sink.sink(&mut got),
            )
            .unwrap();
            let scanned = scan_records(RecordType::HydraHarpV2T3, chunk, &mut scan_state).unwrap();
            assert_eq!(sink_counts, counts);
            assert_eq!(scanned, counts);
        }
        assert_eq!((sink_state, scan_state), (column_state, column_state));
        by_columns.flush(&mut want);
        by_sink.flush(&mut got);
        assert!(want.len() > 3, "{window:?}: {} windows", want.len());
        assert_eq!(got, want, "{window:?}");
    }
}
