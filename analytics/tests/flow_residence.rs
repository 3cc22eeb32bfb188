//! Reaction times from the velocity schedule, against an independent integration.
//!
//! The reference solves `X(t) - X(t0) = x` for `t0` by bisection on the displacement integral
//! evaluated directly from the schedule (`flow_common::displacement`), not through the
//! kernel's prefix sums and inverse lookups. Spectra sit right after velocity changes, inside a
//! stop, across several changes, before the schedule and across a gap; the end-to-end test
//! builds the schedule from simulated windows through the kernels' own Arrow output.

mod flow_common;

use arrow_array::{Array, Float32Array, Float64Array, Int64Array, TimestampNanosecondArray};
use flow_common::{displacement, rel, Sim};
use flowdaq_analytics::flow::{
    reaction_times, FlowAnalyzer, FlowFeaturesBuilder, FlowFlags, FlowOptions, PlugPolarity,
    ReactorGeometry, SensorPair, VelocitySchedule,
};

const S: f64 = 1e9;

/// `(start_s, mm/s)`: 20 mm/s, a step to 50 at 10 s, a stop from 12.5 s to 15 s, 35 mm/s,
/// then 10 mm/s from 30 s.
const SCHEDULE: [(f64, f64); 5] = [
    (0.0, 20.0),
    (10.0, 50.0),
    (12.5, 0.0),
    (15.0, 35.0),
    (30.0, 10.0),
];

fn schedule() -> VelocitySchedule {
    let t: Vec<i64> = SCHEDULE.iter().map(|e| (e.0 * S) as i64).collect();
    let v: Vec<f64> = SCHEDULE.iter().map(|e| e.1).collect();
    VelocitySchedule::new(&t, &v).unwrap()
}

/// Reference: the earliest `t0 >= 0` with `X(t) - X(t0) <= x`, by bisection; `None` if even
/// `t0 = 0` is too late (the plug entered before the schedule).
fn reference(sched: &[(f64, f64)], t: f64, x: f64) -> Option<f64> {
    let target = displacement(sched, t) - x;
    if target < 0.0 {
        return None;
    }
    let (mut lo, mut hi) = (0.0, t);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if displacement(sched, mid) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(t - hi)
}

#[test]
fn reaction_times_match_the_integral_including_right_after_changes() {
    let sched = schedule();
    let times_s = [
        0.5, 5.0, 9.999, 10.0, 10.001, 10.5, 12.0, 12.5, 12.501, 14.0, 15.0, 15.001, 16.0, 20.0,
        29.999, 30.0, 30.000_001, 31.0, 45.0,
    ];
    let paths_mm = [0.0, 1.0, 25.0, 100.0, 180.0, 250.0, 400.0, 600.0];
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    let mut naive_wrong = 0;
    for &t in &times_s {
        for &x in &paths_mm {
            let got = sched.reaction_time_s((t * S).round() as i64, x);
            match reference(&SCHEDULE, t, x) {
                Some(want) => {
                    let got = got.unwrap_or_else(|f| panic!("t={t} x={x}: {f}"));
                    worst = worst.max((got - want).abs());
                    assert!((got - want).abs() < 1e-9, "t={t} x={x}: {got} vs {want}");
                    checked += 1;
                    // The naive x / v(t) is wrong here whenever the velocity changed on the way.
                    let v_now = SCHEDULE.iter().rev().find(|e| e.0 <= t).unwrap().1;
                    if x > 0.0 && v_now > 0.0 && (x / v_now - want).abs() > 0.01 {
                        naive_wrong += 1;
                    }
                }
                None => assert_eq!(got, Err(FlowFlags::OUTSIDE_SCHEDULE), "t={t} x={x}"),
            }
        }
    }
    assert!(
        checked > 100 && naive_wrong > 40,
        "{checked} checked, {naive_wrong}"
    );
    eprintln!("{checked} reaction times, worst deviation {worst:e} s; naive x/u off by >10 ms in {naive_wrong}");

    // By hand, 1 ms after the step to 50 mm/s, 100 mm downstream: the last 0.05 mm took 1 ms,
    // the other 99.95 mm took 4.9975 s at 20 mm/s.
    let t = sched.reaction_time_s(10_001_000_000, 100.0).unwrap();
    assert!((t - (0.001 + 99.95 / 20.0)).abs() < 1e-9, "{t}");
    // In the stop, a plug keeps ageing where it stands: 14 s, 25 mm: entered at 12.5 - 0.5.
    let t = sched.reaction_time_s(14 * 1_000_000_000, 25.0).unwrap();
    assert!((t - 2.0).abs() < 1e-9, "{t}");
}

#[test]
fn batch_join_on_arrow_columns_any_order_with_nulls() {
    let sched = schedule();
    let geom = ReactorGeometry {
        mixing_point_mm: 50.0,
        probe_positions_mm: vec![50.0, 150.0, 300.0],
    };
    geom.validate().unwrap();
    // Spectra out of time order, absolute positions (the spectra table's probe_position_mm).
    let t_s = [20.0, 10.001, 14.0, 31.0, 5.0, 16.0];
    let pos = [
        Some(150.0),
        Some(150.0),
        None,
        Some(300.0),
        Some(300.0),
        Some(40.0),
    ];
    let ts =
        TimestampNanosecondArray::from(t_s.iter().map(|&t| (t * S) as i64).collect::<Vec<_>>())
            .with_timezone("UTC");
    let paths = geom.path_lengths_for_positions(&Float64Array::from(pos.to_vec()));
    let r = reaction_times(&sched, &ts, &paths).unwrap();
    assert_eq!(r.len(), t_s.len());
    for (i, (&t, p)) in t_s.iter().zip(pos).enumerate() {
        match p {
            None => assert!(r.reaction_time_s.is_null(i) && r.quality_flags.is_null(i)),
            Some(p) if p < 50.0 => {
                assert_eq!(r.quality_flags.value(i), FlowFlags::INVALID_POSITION.0);
                assert!(r.reaction_time_s.is_null(i));
            }
            Some(p) => match reference(&SCHEDULE, t, p - 50.0) {
                Some(want) => assert!((r.reaction_time_s.value(i) - want).abs() < 1e-9, "row {i}"),
                None => assert_eq!(r.quality_flags.value(i), FlowFlags::OUTSIDE_SCHEDULE.0),
            },
        }
    }
    // Int64 timestamps and Float32 paths by probe number give the same.
    let probes = arrow_array::UInt32Array::from(vec![1, 1, 0, 2, 2, 1]);
    let by_probe = geom.path_lengths_for_probes(&probes);
    let p32 = Float32Array::from(
        by_probe
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect::<Vec<_>>(),
    );
    let i64ts = Int64Array::from(t_s.iter().map(|&t| (t * S) as i64).collect::<Vec<_>>());
    let r2 = reaction_times(&sched, &i64ts, &p32).unwrap();
    assert!((r2.reaction_time_s.value(0) - r.reaction_time_s.value(0)).abs() < 1e-9);
    assert_eq!(r2.into_record_batch().unwrap().num_columns(), 2);
    assert!(reaction_times(&sched, &p32, &p32).is_err());
}

#[test]
fn schedule_from_measured_windows_gives_reaction_times_within_one_percent() {
    // Three 10 s windows measured by the kernels at 20, 50 and 35 mm/s, one unmeasurable
    // (constant traces) window after them, then 10 mm/s again.
    let true_sched = [
        (0.0, 20.0),
        (10.0, 50.0),
        (20.0, 35.0),
        (30.0, f64::NAN),
        (40.0, 10.0),
    ];
    let mut fb = FlowFeaturesBuilder::with_capacity(5);
    for (k, &(start, v)) in true_sched.iter().enumerate() {
        let mut sim = Sim::typical(500 + k as u64);
        let pair = SensorPair {
            spacing_mm: sim.spacing_mm,
            sample_rate_hz: sim.sample_rate_hz,
            plug_polarity: PlugPolarity::High,
        };
        let mut an = FlowAnalyzer::new(pair, FlowOptions::default()).unwrap();
        let w = if v.is_nan() {
            let flat = vec![1.0f64; 10_000];
            an.analyze((start * S) as i64, &flat, &flat)
        } else {
            sim.schedule = vec![(0.0, v)];
            let r = sim.run();
            an.analyze((start * S) as i64, &r.a, &r.b)
        };
        fb.push(&w);
    }
    let features = fb.finish();
    assert!(features.velocity_mm_per_s.is_null(3));
    let sched = VelocitySchedule::from_features(&features).unwrap();
    assert_eq!(sched.len(), 5);
    let exact = true_sched.map(|(t, v)| (t, if v.is_nan() { 0.0 } else { v }));
    for (t, x) in [(12.0, 100.0), (21.0, 400.0), (25.0, 50.0), (19.0, 600.0)] {
        let want = reference(&exact, t, x).unwrap();
        let got = sched.reaction_time_s((t * S) as i64, x).unwrap();
        assert!(rel(got, want) < 0.01, "t={t} x={x}: {got} vs {want}");
    }
    // Paths that cross the unmeasured window are not guessed.
    assert_eq!(
        sched.reaction_time_s((35.0 * S) as i64, 1.0),
        Err(FlowFlags::VELOCITY_GAP)
    );
    assert_eq!(
        sched.reaction_time_s((42.0 * S) as i64, 30.0),
        Err(FlowFlags::VELOCITY_GAP)
    );
    let got = sched.reaction_time_s((42.0 * S) as i64, 10.0).unwrap();
    assert!(rel(got, 1.0) < 0.01, "{got}");
}
