use super::*;

fn bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn hh_t3(special: u32, ch: u32, dtime: u32, nsync: u32) -> u32 {
    (special << 31) | (ch << 25) | (dtime << 10) | nsync
}

const TB: TimeBase = TimeBase {
    macro_unit_ps: 1000.0,
    micro_bin_ps: 2.5,
};

#[test]
fn every_code_round_trips_and_unknown_codes_fail() {
    for t in RecordType::ALL {
        assert_eq!(RecordType::from_code(t.code()).unwrap(), t);
    }
    assert!(matches!(
        RecordType::from_code(0x0001_0208),
        Err(TcspcError::UnknownRecordType(0x0001_0208))
    ));
}

#[test]
fn hydraharp_v1_and_v2_overflows_differ_as_specified() {
    let recs = bytes(&[hh_t3(1, 63, 0, 3), hh_t3(0, 2, 9, 5)]);
    for (t, want_sync) in [
        (RecordType::HydraHarpV1T3, 1024 + 5),
        (RecordType::HydraHarpV2T3, 3 * 1024 + 5),
    ] {
        let mut st = DecoderState::default();
        let mut out = PhotonColumns::default();
        let c = decode_records(t, TB, &recs, &mut st, &mut out).unwrap();
        assert_eq!(
            (c.overflows, c.photons, c.photons_per_channel[2]),
            (1, 1, 1)
        );
        assert_eq!(out.macro_time_sync, vec![want_sync]);
        assert_eq!(out.macro_time_ps, vec![want_sync as i64 * 1000]);
        assert_eq!((out.micro_time_bins[0], out.micro_time_ps[0]), (9, 23)); // 22.5 ps rounds up
    }
}

#[test]
fn state_carries_across_chunks_and_resets() {
    let recs = bytes(&[
        hh_t3(1, 63, 0, 1),
        hh_t3(1, 63, 0, 0),
        hh_t3(0, 0, 1, 7),
        hh_t3(1, 4, 0, 8),
    ]);
    let mut whole = PhotonColumns::default();
    let mut st = DecoderState::default();
    decode_records(RecordType::GenericT3, TB, &recs, &mut st, &mut whole).unwrap();
    let mut parts = PhotonColumns::default();
    let mut st2 = DecoderState::default();
    for chunk in recs.chunks(4) {
        decode_records(RecordType::GenericT3, TB, chunk, &mut st2, &mut parts).unwrap();
    }
    assert_eq!(whole, parts);
    assert_eq!(st, st2);
    assert_eq!(whole.macro_time_sync, vec![2048 + 7, 2048 + 8]);
    assert_eq!(whole.marker_flags, vec![0, 4]);
    st2.reset();
    assert_eq!(st2.overflow_offset, 0);
}

#[test]
fn partial_records_are_rejected_without_output() {
    let mut out = PhotonColumns::default();
    let err = decode_records(
        RecordType::PicoHarpT3,
        TB,
        &[1, 2, 3, 4, 5],
        &mut DecoderState::default(),
        &mut out,
    );
    assert!(matches!(
        err,
        Err(TcspcError::PartialRecord {
            len: 5,
            record_bytes: 4
        })
    ));
    assert!(out.is_empty());
    let bad_tb = TimeBase {
        macro_unit_ps: f64::NAN,
        micro_bin_ps: 1.0,
    };
    assert!(decode_records(
        RecordType::PicoHarpT3,
        bad_tb,
        &[],
        &mut DecoderState::default(),
        &mut out
    )
    .is_err());
}

#[test]
fn picoharp_t3_special_records_and_invalid_channels() {
    let rec = |ch: u32, dt: u32, ns: u32| (ch << 28) | (dt << 16) | ns;
    let recs = bytes(&[
        rec(1, 5, 10),
        rec(15, 0, 0),
        rec(15, 0x13, 12),
        rec(4, 7, 13),
        rec(0, 1, 1),
        rec(5, 1, 1),
    ]);
    let mut out = PhotonColumns::default();
    let c = decode_records(
        RecordType::PicoHarpT3,
        TB,
        &recs,
        &mut DecoderState::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!((c.photons, c.markers, c.overflows, c.invalid), (2, 1, 1, 2));
    assert_eq!(out.channel, vec![0, 0, 3]);
    assert_eq!(out.marker_flags, vec![0, 3, 0]); // marker bits are the low 4 bits
    assert_eq!(out.macro_time_sync, vec![10, 65_536 + 12, 65_536 + 13]);
}

#[test]
fn hydraharp_t2_sync_marker_and_overflow() {
    let rec = |sp: u32, ch: u32, t: u32| (sp << 31) | (ch << 25) | t;
    let recs = bytes(&[
        rec(0, 3, 100),
        rec(1, 0, 200),
        rec(1, 2, 300),
        rec(1, 63, 2),
        rec(0, 1, 5),
        rec(1, 20, 1),
    ]);
    let mut out = PhotonColumns::default();
    let tb = TimeBase {
        macro_unit_ps: 1.0,
        micro_bin_ps: 0.0,
    };
    let c = decode_records(
        RecordType::HydraHarpV2T2,
        tb,
        &recs,
        &mut DecoderState::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        (c.photons, c.markers, c.syncs, c.overflows, c.invalid),
        (2, 1, 1, 1, 1)
    );
    assert_eq!(out.channel, vec![3, T2_SYNC_CHANNEL, 0, 1]);
    assert_eq!(out.macro_time_ps, vec![100, 200, 300, 2 * (1 << 25) + 5]);
    // A v2 overflow record counting 1000 wraps: 1000 * 2^25 exceeds 32 bits (ptufile 2026.2.6
    // wraps it; the format does not).
    let mut out = PhotonColumns::default();
    decode_records(
        RecordType::GenericT2,
        tb,
        &bytes(&[rec(1, 63, 1000), rec(0, 1, 5)]),
        &mut DecoderState::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.macro_time_sync, vec![1000 * (1u64 << 25) + 5]);
}

#[test]
fn arrow_batch_has_documented_columns() {
    let mut out = PhotonColumns::default();
    decode_records(
        RecordType::HydraHarpV2T3,
        TB,
        &bytes(&[hh_t3(0, 1, 3, 4)]),
        &mut DecoderState::default(),
        &mut out,
    )
    .unwrap();
    let batch = out.to_record_batch().unwrap();
    let names: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "macro_time_sync",
            "macro_time_ps",
            "micro_time_bins",
            "micro_time_ps",
            "channel",
            "marker_flags"
        ]
    );
    assert_eq!(batch.num_rows(), 1);
}

fn swabian(kind: u8, channel: i32, t: i64) -> Vec<u8> {
    let mut v = vec![kind, 0, 0, 0];
    v.extend(channel.to_le_bytes());
    v.extend(t.to_le_bytes());
    v
}

#[test]
fn time_tags_become_t3_like_photons_relative_to_the_sync() {
    let config = TimeTagConfig {
        sync_channel: Some(1),
        detector_channels: vec![2, -3],
        marker_channels: vec![5],
        micro_bin_ps: 10,
    };
    let mut bytes = Vec::new();
    for (k, c, t) in [
        (0u8, 2, 50i64),
        (0, 1, 1000),
        (0, 2, 1123),
        (0, -3, 1500),
        (0, 5, 1600),
        (0, 9, 1700),
        (0, 1, 13_500),
        (2, 0, 0),
        (0, 2, 14_000),
        (3, 0, 0),
    ] {
        bytes.extend(swabian(k, c, t));
    }
    let mut st = TimeTagState::default();
    let mut out = PhotonColumns::default();
    let c = decode_swabian_tags(&bytes, &config, &mut st, &mut out).unwrap();
    // 50 ps before any sync, channel 9 unconfigured, and 14000 after an overflow: invalid.
    assert_eq!(
        (c.photons, c.markers, c.syncs, c.overflows, c.invalid),
        (2, 1, 2, 2, 3)
    );
    assert_eq!(out.channel, vec![0, 1, 0]);
    assert_eq!(out.micro_time_ps, vec![123, 500, 0]);
    assert_eq!(out.micro_time_bins, vec![12, 50, 0]);
    assert_eq!(out.macro_time_ps, vec![1000, 1000, 1000]);
    assert_eq!(out.marker_flags, vec![0, 0, 1]);
    // The same tags as two columns (no overflow tags) give the same photons before the overflow.
    let mut st2 = TimeTagState::default();
    let mut out2 = PhotonColumns::default();
    let c2 = decode_time_tags(
        &[2, 1, 2, -3],
        &[50, 1000, 1123, 1500],
        &config,
        &mut st2,
        &mut out2,
    )
    .unwrap();
    assert_eq!(c2.photons, 2);
    assert_eq!(out2.micro_time_ps, vec![123, 500]);
    assert!(decode_time_tags(&[1], &[], &config, &mut st2, &mut out2).is_err());
    assert!(decode_swabian_tags(&[0; 15], &config, &mut st2, &mut out2).is_err());
    let clash = TimeTagConfig {
        sync_channel: Some(2),
        ..config
    };
    assert!(decode_time_tags(&[], &[], &clash, &mut st2, &mut out2).is_err());
}

/// Collects events with `Vec::push`: the plain reference for the spare-capacity writer.
#[derive(Default)]
struct PushSink(Vec<(u64, u16, u8, u8)>);

impl EventSink for PushSink {
    fn photon(&mut self, macro_time: u64, micro_time_bins: u16, channel: u8) {
        self.0.push((macro_time, micro_time_bins, channel, 0));
    }
    fn marker(&mut self, macro_time: u64, marker_flags: u8) {
        self.0.push((macro_time, 0, 0, marker_flags));
    }
    fn sync(&mut self, macro_time: u64) {
        self.0.push((macro_time, 0, T2_SYNC_CHANNEL, 0));
    }
}

#[test]
fn native_events_match_a_push_reference_and_give_the_same_ps_columns_for_every_record_type() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Random words hit photons, markers, overflows, syncs and invalid records of every layout.
    let words: Vec<u32> = (0..5_000).map(|_| rng.random()).collect();
    let recs = bytes(&words);
    for t in RecordType::ALL {
        let mut reference = PushSink::default();
        let mut ref_state = DecoderState::default();
        let want_counts = decode_into(t, &recs, &mut ref_state, &mut reference).unwrap();

        // Appended after rows already there, in uneven chunks, with the state carried.
        let mut events = EventColumns::default();
        events.macro_time.push(1);
        events.micro_time_bins.push(2);
        events.channel.push(3);
        events.marker_flags.push(0);
        let mut state = DecoderState::default();
        let mut counts = DecodeCounts::default();
        for chunk in recs.chunks(4 * 777) {
            counts.merge(&decode_events(t, chunk, &mut state, &mut events).unwrap());
        }
        assert_eq!((counts, state), (want_counts, ref_state), "{t:?}");
        let got: Vec<_> = (1..events.len())
            .map(|i| {
                (
                    events.macro_time[i],
                    events.micro_time_bins[i],
                    events.channel[i],
                    events.marker_flags[i],
                )
            })
            .collect();
        assert_eq!(got, reference.0, "{t:?}");
        assert_eq!(events.micro_time_bins.len(), events.len());
        assert_eq!(events.channel.len(), events.len());
        assert_eq!(events.marker_flags.len(), events.len());

        // The six-column decode is the native events plus their ps columns.
        let mut columns = PhotonColumns::default();
        decode_records(t, TB, &recs, &mut DecoderState::default(), &mut columns).unwrap();
        let mut native = EventColumns::default();
        decode_events(t, &recs, &mut DecoderState::default(), &mut native).unwrap();
        assert_eq!(PhotonColumns::from_events(native, TB), columns, "{t:?}");
        let ps: Vec<(i64, i32)> = reference
            .0
            .iter()
            .map(|&(m, b, _, _)| {
                (
                    (m as f64 * TB.macro_unit_ps).round() as i64,
                    (f64::from(b) * TB.micro_bin_ps).round() as i32,
                )
            })
            .collect();
        let got_ps: Vec<(i64, i32)> = columns
            .macro_time_ps
            .iter()
            .copied()
            .zip(columns.micro_time_ps.iter().copied())
            .collect();
        assert_eq!(got_ps, ps, "{t:?}");
    }
}

#[test]
fn a_partial_record_leaves_the_event_columns_untouched() {
    let mut events = EventColumns::default();
    let err = decode_events(
        RecordType::HydraHarpV2T3,
        &[0, 1, 2, 3, 4],
        &mut DecoderState::default(),
        &mut events,
    );
    assert!(matches!(err, Err(TcspcError::PartialRecord { len: 5, .. })));
    assert!(events.is_empty());
}

#[test]
fn spc130_overflows_markers_and_discarded_photons() {
    // Bits: 0-11 macro time, 12-15 routing, 16-27 ADC, 28 MARK, 29 GAP, 30 MTOV, 31 INVALID.
    let photon = |mt: u32, rout: u32, adc: u32| mt | (rout << 12) | (adc << 16);
    let mtov = 1u32 << 30;
    let invalid = 1u32 << 31;
    let recs = bytes(&[
        photon(5, 1, 4095),                  // micro 0 at macro 5
        invalid | mtov | 3,                  // three wraps of 4096
        photon(7, 0, 95) | mtov,             // one more wrap, then micro 4000 at 4 x 4096 + 7
        invalid | (1 << 28) | (2 << 12) | 9, // marker bits 2 at 4 x 4096 + 9
        invalid | photon(11, 0, 0),          // a photon the hardware discarded
        photon(12, 3, 0) | (1 << 29),        // after a gap: still a photon, micro 4095
    ]);
    let mut state = DecoderState::default();
    let mut sink = PushSink::default();
    let counts = decode_into(RecordType::BeckerHicklSpc130, &recs, &mut state, &mut sink).unwrap();
    assert_eq!(
        (
            counts.photons,
            counts.markers,
            counts.overflows,
            counts.invalid
        ),
        (3, 1, 1, 1),
        "the wrapping photon is counted as a photon"
    );
    assert_eq!(state.overflow_offset, 4 * 4096);
    assert_eq!(
        sink.0,
        vec![
            (5, 0, 1, 0),
            (4 * 4096 + 7, 4000, 0, 0),
            (4 * 4096 + 9, 0, 0, 2),
            (4 * 4096 + 12, 4095, 3, 0),
        ]
    );
    assert!(RecordType::BeckerHicklSpc130.is_t3());
    assert_eq!(RecordType::BeckerHicklSpc130.micro_time_range(), 4096);
}
