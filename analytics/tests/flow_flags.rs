//! Irregular flow and hostile input: flagged, never mis-measured, never a panic.
//!
//! Merged and split plugs and a stopped flow are simulated (`flow_common`) and must come out as
//! flags on the right segments with the window's statistics still right for the regular ones.
//! Hostile traces (different lengths, NaN and infinite samples, constant, empty, swapped
//! sensors) must give their flags and nulls; the outputs must still build as Arrow batches.

mod flow_common;

use arrow_array::{Array, Float32Array, Float64Array, Int32Array};
use flow_common::{rel, Sim};
use flowdaq_analytics::flow::{
    FlowAnalyzer, FlowError, FlowFeaturesBuilder, FlowFlags, FlowOptions, FlowSegmentsBuilder,
    FlowWindow, Phase, PlugPolarity, SensorPair,
};

fn analyzer(sim: &Sim) -> FlowAnalyzer {
    FlowAnalyzer::new(
        SensorPair {
            spacing_mm: sim.spacing_mm,
            sample_rate_hz: sim.sample_rate_hz,
            plug_polarity: PlugPolarity::High,
        },
        FlowOptions::default(),
    )
    .unwrap()
}

fn velocity_ok(w: &FlowWindow, v: f64, what: &str) {
    let vi = w.velocity_interfaces_mm_per_s.expect(what);
    let vx = w.velocity_xcorr_mm_per_s.expect(what);
    assert!(rel(vi, v) < 0.01, "{what}: interface velocity {vi}");
    assert!(rel(vx, v) < 0.01, "{what}: xcorr velocity {vx}");
}

/// Index of the first plug whose front passes sensor A inside the window, well after its start.
fn plug_index_after(sim: &Sim, train: &[(bool, f64)], t_s: f64) -> usize {
    // Fluid coordinate of the point passing A at t_s (constant velocity from t = 0).
    let offset = sim.spacing_mm + 20.0;
    let x = sim.schedule[0].1 * t_s + offset;
    let mut pos = 0.0;
    for (k, &(plug, len)) in train.iter().enumerate() {
        if plug && pos >= x {
            return k;
        }
        pos += len;
    }
    panic!("train too short")
}

/// Seeds of the irregular-flow tests (each a different train, noise and drift).
const SEEDS: [u64; 4] = [11, 1031, 2053, 3079];

#[test]
fn merged_plug_is_flagged_not_averaged() {
    for seed in SEEDS {
        merged_plug(seed);
    }
}

fn merged_plug(seed: u64) {
    let sim = Sim::typical(seed);
    let mut train = sim.train();
    let k = plug_index_after(&sim, &train, 4.0);
    // Plugs k and k + 2 coalesce: the carrier between them is gone.
    let merged_len = train[k].1 + train[k + 2].1;
    train[k].1 = merged_len;
    train.drain(k + 1..k + 3);
    let r = sim.render(&train);
    let mut an = analyzer(&sim);
    let w = an.analyze(0, &r.a, &r.b);
    assert!(w.flags.contains(FlowFlags::MERGED_SEGMENT), "{}", w.flags);
    assert_eq!(w.merged_segments, 1);
    assert_eq!(w.split_segments, 0);
    velocity_ok(&w, 40.0, "merged");
    let merged: Vec<_> = an
        .segments()
        .iter()
        .filter(|s| s.flags == FlowFlags::MERGED_SEGMENT)
        .collect();
    assert_eq!(merged.len(), 1);
    let t = r
        .segment_at(merged[0].start_s, 5e-3)
        .expect("merged plug in truth");
    assert!(t.starts_plug && (t.segment_mm - merged_len).abs() < 1e-12);
    // It is still measured right as a segment; only the statistics leave it out.
    assert!(rel(merged[0].length_mm.unwrap(), merged_len) < 0.02);
    let regular: Vec<f64> = an
        .segments()
        .iter()
        .filter(|s| s.phase == Phase::Plug && s.is_regular())
        .map(|s| r.segment_at(s.start_s, 5e-3).unwrap().segment_mm)
        .collect();
    let want = regular.iter().sum::<f64>() / regular.len() as f64;
    assert!(rel(w.plugs.length_mean_mm.unwrap(), want) < 0.01);
    assert_eq!(w.plugs.count, w.plugs.regular + 1);
}

#[test]
fn split_plug_is_flagged_not_averaged() {
    for seed in SEEDS {
        split_plug(seed + 1);
    }
}

fn split_plug(seed: u64) {
    let sim = Sim::typical(seed);
    let mut train = sim.train();
    let k = plug_index_after(&sim, &train, 5.0);
    let l = train[k].1;
    // The plug breaks in two halves with a thin carrier slice between them.
    train.splice(
        k..=k,
        [(true, 0.45 * l), (false, 0.1 * l), (true, 0.45 * l)],
    );
    let r = sim.render(&train);
    let mut an = analyzer(&sim);
    let w = an.analyze(0, &r.a, &r.b);
    assert!(w.flags.contains(FlowFlags::SPLIT_SEGMENT), "{}", w.flags);
    assert!(!w.flags.contains(FlowFlags::MERGED_SEGMENT));
    assert_eq!(w.split_segments, 3, "two half plugs and the thin carrier");
    velocity_ok(&w, 40.0, "split");
    for s in an
        .segments()
        .iter()
        .filter(|s| s.flags == FlowFlags::SPLIT_SEGMENT)
    {
        let t = r
            .segment_at(s.start_s, 5e-3)
            .expect("split segment in truth");
        assert!((t.segment_mm - 0.45 * l).abs() < 1e-12 || (t.segment_mm - 0.1 * l).abs() < 1e-12);
    }
    let regular: Vec<f64> = an
        .segments()
        .iter()
        .filter(|s| s.phase == Phase::Plug && s.is_regular())
        .map(|s| r.segment_at(s.start_s, 5e-3).unwrap().segment_mm)
        .collect();
    let want = regular.iter().sum::<f64>() / regular.len() as f64;
    assert!(rel(w.plugs.length_mean_mm.unwrap(), want) < 0.01);
}

#[test]
fn stopped_flow_is_flagged_and_the_stopped_segments_have_no_length() {
    for seed in SEEDS {
        stopped_flow(seed + 2);
    }
}

fn stopped_flow(seed: u64) {
    let mut sim = Sim::typical(seed);
    sim.duration_s = 12.0;
    sim.schedule = vec![(0.0, 40.0), (4.0, 0.0), (8.0, 40.0)];
    let r = sim.run();
    let mut an = analyzer(&sim);
    let w = an.analyze(0, &r.a, &r.b);
    assert!(w.flags.contains(FlowFlags::STOPPED_FLOW), "{}", w.flags);
    assert!(w.longest_gap_s > 3.5, "{}", w.longest_gap_s);
    // The moving speed is still right; the stop is not averaged into a slower velocity. The
    // cross-correlation may lose its peak (the two sensors sit still at unrelated levels for a
    // third of the window): then it is null and flagged, never a wrong number.
    let vi = w.velocity_interfaces_mm_per_s.unwrap();
    assert!(rel(vi, 40.0) < 0.01, "seed {seed}: {vi}");
    match w.velocity_xcorr_mm_per_s {
        Some(vx) => assert!(rel(vx, 40.0) < 0.01, "seed {seed}: {vx}"),
        None => assert!(w.flags.contains(FlowFlags::WEAK_CORRELATION), "{}", w.flags),
    }
    let stopped: Vec<_> = an
        .segments()
        .iter()
        .filter(|s| s.flags.contains(FlowFlags::STOPPED_FLOW))
        .collect();
    assert_eq!(
        stopped.len(),
        1,
        "the segment under sensor A during the stop"
    );
    assert!(stopped[0].length_mm.is_none() && stopped[0].duration_s > 3.5);
    assert_eq!(
        w.merged_segments, 0,
        "a stopped segment is not a merged one"
    );
    // Regular segments keep their lengths: 1 % plus 5 sigma of two boundaries' jitter.
    let jitter_mm = 5.0 * std::f64::consts::SQRT_2 * sim.jitter_s * 40.0;
    for s in an.segments().iter().filter(|s| s.is_regular()) {
        let t = r.segment_at(s.start_s, 5e-3).unwrap();
        let l = s.length_mm.unwrap();
        assert!(
            (l - t.segment_mm).abs() < 0.01 * t.segment_mm + jitter_mm,
            "seed {seed}: segment at {} s: {l} mm, true {} mm",
            s.start_s,
            t.segment_mm
        );
    }
    // A window wholly inside the stop: the sensors see a constant level for 3 s.
    let from = (4.5 * sim.sample_rate_hz) as usize;
    let to = (7.5 * sim.sample_rate_hz) as usize;
    let w = an.analyze(0, &r.a[from..to], &r.b[from..to]);
    assert!(
        w.flags
            .contains(FlowFlags::STOPPED_FLOW | FlowFlags::CONSTANT_SIGNAL),
        "{}",
        w.flags
    );
    assert!(w.velocity_mm_per_s.is_none() && an.segments().is_empty());
}

#[test]
fn swapped_sensors_give_negative_velocity_and_a_flag() {
    let sim = Sim::typical(14);
    let r = sim.run();
    let mut an = analyzer(&sim);
    let w = an.analyze(0, &r.b, &r.a);
    assert!(w.flags.contains(FlowFlags::SENSORS_SWAPPED), "{}", w.flags);
    assert!(!w.flags.contains(FlowFlags::VELOCITY_MISMATCH));
    velocity_ok(&w, -40.0, "swapped");
    // Lengths are still lengths.
    assert!(rel(w.plugs.length_mean_mm.unwrap(), 3.0) < 0.1);
}

#[test]
fn different_lengths_nan_and_inf_are_flagged_and_survived() {
    let sim = Sim::typical(15);
    let r = sim.run();
    let mut an = analyzer(&sim);

    let w = an.analyze(0, &r.a, &r.b[..r.b.len() - 1500]);
    assert_eq!(w.flags, FlowFlags::LENGTH_MISMATCH);
    assert!((w.duration_s - 8.5).abs() < 1e-12);
    velocity_ok(&w, 40.0, "length mismatch");

    // 1 % scattered NaN, a 40-sample dropout and a few infinities on A.
    let mut a = r.a.clone();
    for i in (0..a.len()).step_by(97) {
        a[i] = f64::NAN;
    }
    for v in &mut a[3000..3040] {
        *v = f64::NAN;
    }
    a[5000] = f64::INFINITY;
    a[6000] = f64::NEG_INFINITY;
    let w = an.analyze(0, &a, &r.b);
    assert!(
        w.flags.contains(FlowFlags::NON_FINITE_SAMPLES),
        "{}",
        w.flags
    );
    assert_eq!(w.flags, FlowFlags::NON_FINITE_SAMPLES, "{}", w.flags);
    velocity_ok(&w, 40.0, "NaN");

    // The same through Arrow nulls.
    let a_arrow = Float64Array::from(
        a.iter()
            .map(|&v| v.is_finite().then_some(v))
            .collect::<Vec<_>>(),
    );
    let b_arrow = Float32Array::from(r.b.iter().map(|&v| v as f32).collect::<Vec<_>>());
    let w2 = an.analyze_arrays(0, &a_arrow, &b_arrow).unwrap();
    assert_eq!(w2.flags, FlowFlags::NON_FINITE_SAMPLES);
    velocity_ok(&w2, 40.0, "nulls");
    let bad = Int32Array::from(vec![1, 2, 3]);
    assert!(matches!(
        an.analyze_arrays(0, &bad, &b_arrow),
        Err(FlowError::UnsupportedType { .. })
    ));
}

#[test]
fn constant_empty_and_all_nan_traces_give_flags_and_nulls() {
    let sim = Sim::typical(16);
    let r = sim.run();
    let mut an = analyzer(&sim);
    let n = r.a.len();
    let flat = vec![1.7; n];
    let mut windows = Vec::new();

    let w = an.analyze(0, &flat, &r.b);
    assert!(w.flags.contains(FlowFlags::CONSTANT_SIGNAL), "{}", w.flags);
    assert!(w.velocity_mm_per_s.is_none() && w.velocity_xcorr_mm_per_s.is_none());
    assert!(w.plugs.length_mean_mm.is_none() && w.interfaces_a == 0);
    // Sensor B still sees interfaces: the flow is not stopped.
    assert!(!w.flags.contains(FlowFlags::STOPPED_FLOW), "{}", w.flags);
    windows.push(w);

    let zeros = vec![0.0f64; n];
    let w = an.analyze(0, &zeros, &zeros);
    assert!(w
        .flags
        .contains(FlowFlags::CONSTANT_SIGNAL | FlowFlags::STOPPED_FLOW));
    windows.push(w);

    let w = an.analyze::<f64>(0, &[], &[]);
    assert!(w.flags.contains(FlowFlags::CONSTANT_SIGNAL), "{}", w.flags);
    assert!(!w.flags.contains(FlowFlags::STOPPED_FLOW));
    assert_eq!(w.duration_s, 0.0);
    windows.push(w);

    let w = an.analyze(0, &[1.0f32], &[2.0f32, 3.0]);
    assert!(w
        .flags
        .contains(FlowFlags::CONSTANT_SIGNAL | FlowFlags::LENGTH_MISMATCH));
    windows.push(w);

    let nan = vec![f64::NAN; n];
    let w = an.analyze(0, &nan, &nan);
    assert!(w
        .flags
        .contains(FlowFlags::CONSTANT_SIGNAL | FlowFlags::NON_FINITE_SAMPLES));
    assert!(
        !w.flags.contains(FlowFlags::STOPPED_FLOW),
        "no signal is not a stopped flow"
    );
    windows.push(w);

    // Pure noise on both: no plug train, nothing measured.
    let noise: Vec<f64> = (0..n)
        .map(|i| 1.0 + 0.01 * ((i * 7919 % 101) as f64 / 101.0))
        .collect();
    let w = an.analyze(0, &noise, &noise);
    assert!(w.flags.contains(FlowFlags::CONSTANT_SIGNAL));
    windows.push(w);

    // Every hostile window still becomes a row, with nulls where nothing was measured.
    let mut fb = FlowFeaturesBuilder::with_capacity(windows.len());
    let mut sb = FlowSegmentsBuilder::with_capacity(0);
    for w in &windows {
        fb.push(w);
        sb.push_window(w.window_start_ns, &[]);
    }
    let f = fb.finish();
    assert_eq!(f.len(), windows.len());
    assert_eq!(f.velocity_mm_per_s.null_count(), windows.len());
    assert_eq!(f.quality_flags.value(0), windows[0].flags.0);
    f.into_record_batch().unwrap();
    assert!(sb.finish().into_record_batch().unwrap().num_rows() == 0);
}

#[test]
fn lag_outside_the_velocity_range_is_flagged() {
    // True 40 mm/s, but the configured range says at least 60 mm/s: both methods must refuse.
    let sim = Sim::typical(17);
    let r = sim.run();
    let pair = SensorPair {
        spacing_mm: sim.spacing_mm,
        sample_rate_hz: sim.sample_rate_hz,
        plug_polarity: PlugPolarity::High,
    };
    let opts = FlowOptions {
        velocity_range_mm_per_s: (60.0, 500.0),
        ..Default::default()
    };
    let w = FlowAnalyzer::new(pair, opts)
        .unwrap()
        .analyze(0, &r.a, &r.b);
    // In range, both methods can only find the alignment slipped by one segment period; the
    // same segments then show different durations at the two sensors.
    assert!(
        w.flags.contains(FlowFlags::INCONSISTENT_MATCH),
        "{}",
        w.flags
    );
    assert!(w.velocity_mm_per_s.is_none(), "{w:?}");
    assert!(w.velocity_xcorr_mm_per_s.is_none(), "{w:?}");
}

#[test]
fn invalid_configuration_is_an_error() {
    let pair = SensorPair {
        spacing_mm: 0.0,
        sample_rate_hz: 1e3,
        plug_polarity: PlugPolarity::High,
    };
    assert!(FlowAnalyzer::new(pair.clone(), FlowOptions::default()).is_err());
    let pair = SensorPair {
        spacing_mm: 10.0,
        sample_rate_hz: f64::NAN,
        ..pair
    };
    assert!(FlowAnalyzer::new(pair.clone(), FlowOptions::default()).is_err());
    let pair = SensorPair {
        sample_rate_hz: 1e3,
        ..pair
    };
    for opts in [
        FlowOptions {
            velocity_range_mm_per_s: (10.0, 5.0),
            ..Default::default()
        },
        FlowOptions {
            velocity_range_mm_per_s: (0.0, 5.0),
            ..Default::default()
        },
        FlowOptions {
            merged_ratio: 0.9,
            ..Default::default()
        },
        FlowOptions {
            split_ratio: 1.0,
            ..Default::default()
        },
        FlowOptions {
            stopped_flow_s: -1.0,
            ..Default::default()
        },
        FlowOptions {
            min_correlation: 2.0,
            ..Default::default()
        },
    ] {
        assert!(matches!(
            FlowAnalyzer::new(pair.clone(), opts),
            Err(FlowError::InvalidOption { .. })
        ));
    }
}
