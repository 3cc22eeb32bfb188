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
        vec![(0, 10, 2), (10, 20, 1), (20, 30, 3), (60, 70, 1)]
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
