use std::collections::BTreeMap;

use arrow::array::AsArray;
use arrow::datatypes::{Field, Schema, UInt64Type};

use super::*;
use crate::test_rng::Uniform;

const SECOND_NS: i64 = 1_000_000_000;
const START_NS: i64 = 1_700_000_000 * SECOND_NS;

fn config() -> OutcomesConfig {
    OutcomesConfig {
        enabled: true,
        wait_residence_times: 3.0,
        min_wait_s: 1.0,
        window_s: 3.0,
        min_samples: 10,
        timeout_s: 60.0,
        features: BTreeMap::from([(
            "spectral_features.peak_energy_ev".to_string(),
            OutcomeFeatureConfig {
                max_std: 0.003,
                max_drift: 0.002,
            },
        )]),
    }
}

/// A `spectral_features`-shaped batch holding the columns the tracker reads.
fn rows(
    condition: &str,
    times_ns: &[i64],
    values: &[f64],
    reaction_time_s: Option<f64>,
) -> RecordBatch {
    let n = times_ns.len();
    let schema = Schema::new(vec![
        Field::new(
            "arrival_time_ns",
            flowdaq_schemas::tables::timestamp_ns(),
            false,
        ),
        Field::new(
            "instrument_time_ns",
            flowdaq_schemas::tables::timestamp_ns(),
            true,
        ),
        Field::new("source", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("condition_id", DataType::Utf8, true),
        Field::new("peak_energy_ev", DataType::Float64, true),
        Field::new("reaction_time_s", DataType::Float64, true),
    ]);
    let text = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s; n])) };
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(TimestampNanosecondArray::from(vec![0i64; n]).with_timezone("UTC")),
            Arc::new(TimestampNanosecondArray::from(times_ns.to_vec()).with_timezone("UTC")),
            text("spec-1"),
            text("run-1"),
            text(condition),
            Arc::new(Float64Array::from(values.to_vec())),
            Arc::new(Float64Array::from(vec![reaction_time_s; n])),
        ],
    )
    .expect("batch")
}

fn start(tracker: &mut OutcomeTracker, condition: &str, start_ns: i64) {
    tracker.condition_started(
        "run-1",
        condition,
        ConditionTimes {
            start_time_ns: start_ns,
            registered_at_ns: start_ns,
        },
    );
}

fn f64_at(batch: &RecordBatch, name: &str) -> f64 {
    batch
        .column_by_name(name)
        .expect(name)
        .as_primitive::<Float64Type>()
        .value(0)
}

fn time_at(batch: &RecordBatch, name: &str) -> i64 {
    batch
        .column_by_name(name)
        .expect(name)
        .as_primitive::<TimestampNanosecondType>()
        .value(0)
}

#[test]
fn a_transient_is_waited_out_and_the_settled_value_is_the_outcome() {
    let (settled_ev, step_ev, tau_s, noise_ev) = (2.400, 0.100, 2.0, 0.001);
    let mut tracker = OutcomeTracker::new(&config());
    start(&mut tracker, "c-1", START_NS);
    let mut noise = Uniform(7);
    let mut outcome = None;
    // 10 spectra per second for 60 s, fed one at a time as the pipeline would.
    for i in 0..600 {
        let t_s = i as f64 * 0.1;
        let value = settled_ev + step_ev * (-t_s / tau_s).exp() + noise_ev * noise.normal();
        let t_ns = START_NS + (t_s * 1e9) as i64;
        tracker.observe(
            Table::SpectralFeatures,
            &rows("c-1", &[t_ns], &[value], None),
        );
        if let Some(batch) = tracker.take_rows(t_ns).expect("rows") {
            // Never before the transient's own change over one window is below the allowed
            // drift: until then the window is visibly not steady.
            let window_s = 3.0;
            let transient_change =
                step_ev * ((-(t_s - window_s) / tau_s).exp() - (-t_s / tau_s).exp());
            assert!(transient_change <= 2.0 * 0.002, "outcome at {t_s} s while the transient still moves {transient_change} eV per window");
            outcome = Some(batch);
            break;
        }
    }
    let outcome = outcome.expect("settled within the run");
    assert_eq!(outcome.num_rows(), 1);
    assert!(outcome
        .column_by_name("settled")
        .expect("settled")
        .as_boolean()
        .value(0));
    let mean = f64_at(&outcome, "mean");
    let std = f64_at(&outcome, "std");
    let count = outcome
        .column_by_name("count")
        .expect("count")
        .as_primitive::<UInt64Type>()
        .value(0);
    assert!(count >= 10, "{count}");
    // Within noise of the settled value (and of its residual transient).
    assert!((mean - settled_ev).abs() < 3.0 * noise_ev, "mean {mean}");
    assert!(std < 3.0 * noise_ev && std > 0.2 * noise_ev, "std {std}");
    assert!(time_at(&outcome, "first_time_ns") >= START_NS + SECOND_NS);
    assert_eq!(time_at(&outcome, "condition_start_ns"), START_NS);
    // One outcome only: more steady values do not produce another.
    let later = START_NS + 70 * SECOND_NS;
    tracker.observe(
        Table::SpectralFeatures,
        &rows("c-1", &[later], &[settled_ev], None),
    );
    assert!(tracker.take_rows(later).expect("rows").is_none());
}

#[test]
fn the_wait_is_n_residence_times_when_flow_gives_one() {
    let mut tracker = OutcomeTracker::new(&config());
    start(&mut tracker, "c-1", START_NS);
    // Perfectly steady from the start, but the residence time is 4 s: wait 3 x 4 = 12 s.
    let times: Vec<i64> = (0..300).map(|i| START_NS + i * SECOND_NS / 10).collect();
    let values: Vec<f64> = (0..300)
        .map(|i| 2.5 + 0.0005 * ((i % 3) as f64 - 1.0))
        .collect();
    tracker.observe(
        Table::SpectralFeatures,
        &rows("c-1", &times, &values, Some(4.0)),
    );
    let outcome = tracker.take_rows(0).expect("rows").expect("settled");
    assert!((f64_at(&outcome, "wait_s") - 12.0).abs() < 1e-12);
    assert!((f64_at(&outcome, "residence_time_s") - 4.0).abs() < 1e-12);
    assert!(time_at(&outcome, "first_time_ns") >= START_NS + 12 * SECOND_NS);
    assert!(
        time_at(&outcome, "last_time_ns") - time_at(&outcome, "first_time_ns") <= 3 * SECOND_NS
    );
}

#[test]
fn a_condition_superseded_before_settling_gets_an_unsettled_outcome_with_the_reason() {
    let mut tracker = OutcomeTracker::new(&config());
    start(&mut tracker, "c-1", START_NS);
    // A steady ramp: never steady.
    let times: Vec<i64> = (0..100).map(|i| START_NS + i * SECOND_NS / 10).collect();
    let values: Vec<f64> = (0..100).map(|i| 2.0 + 0.01 * i as f64).collect();
    tracker.observe(Table::SpectralFeatures, &rows("c-1", &times, &values, None));
    assert!(tracker.take_rows(0).expect("rows").is_none());
    start(&mut tracker, "c-2", START_NS + 10 * SECOND_NS);
    let outcome = tracker.take_rows(0).expect("rows").expect("closed");
    assert!(!outcome
        .column_by_name("settled")
        .expect("settled")
        .as_boolean()
        .value(0));
    let reason = outcome
        .column_by_name("reason")
        .expect("reason")
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert!(
        reason.contains("superseded by condition \"c-2\""),
        "{reason}"
    );
    // Statistics over the values after the 1 s wait: 90 values.
    let count = outcome
        .column_by_name("count")
        .expect("count")
        .as_primitive::<UInt64Type>()
        .value(0);
    assert_eq!(count, 90);
    // Late values of the closed condition are ignored.
    tracker.observe(Table::SpectralFeatures, &rows("c-1", &times, &values, None));
    assert!(tracker.take_rows(0).expect("rows").is_none());
}

#[test]
fn noisy_data_times_out_on_the_data_clock_and_stale_conditions_on_the_wall_clock() {
    let mut tracker = OutcomeTracker::new(&config());
    start(&mut tracker, "c-1", START_NS);
    let mut noise = Uniform(3);
    let times: Vec<i64> = (0..700).map(|i| START_NS + i * SECOND_NS / 10).collect();
    let values: Vec<f64> = (0..700).map(|_| 2.4 + 0.02 * noise.normal()).collect();
    tracker.observe(Table::SpectralFeatures, &rows("c-1", &times, &values, None));
    let outcome = tracker.take_rows(0).expect("rows").expect("timed out");
    let reason = outcome
        .column_by_name("reason")
        .expect("reason")
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert!(reason.contains("timeout_s = 60"), "{reason}");

    // Data stops: the wall-clock tick closes the condition after timeout_s.
    start(&mut tracker, "c-2", START_NS + 100 * SECOND_NS);
    tracker.observe(
        Table::SpectralFeatures,
        &rows("c-2", &times[..5], &values[..5], None),
    );
    tracker.tick(START_NS + 150 * SECOND_NS);
    assert!(tracker.take_rows(0).expect("rows").is_none());
    tracker.tick(START_NS + 161 * SECOND_NS);
    let outcome = tracker.take_rows(0).expect("rows").expect("stale");
    assert_eq!(
        outcome
            .column_by_name("condition_id")
            .expect("c")
            .as_string::<i32>()
            .value(0),
        "c-2"
    );
}

#[test]
fn conditions_tagged_by_the_sender_start_at_their_first_value() {
    let mut tracker = OutcomeTracker::new(&config());
    let times: Vec<i64> = (0..60).map(|i| START_NS + i * SECOND_NS / 10).collect();
    tracker.observe(
        Table::SpectralFeatures,
        &rows("c-a", &times, &vec![2.45; 60], None),
    );
    let outcome = tracker.take_rows(0).expect("rows").expect("settled");
    assert_eq!(time_at(&outcome, "condition_start_ns"), START_NS);
    assert!((f64_at(&outcome, "mean") - 2.45).abs() < 1e-12);
}

#[test]
fn an_outcome_written_before_a_restart_is_not_written_again() {
    let mut tracker = OutcomeTracker::new(&config());
    tracker.mark_done("run-1", "c-a", "spec-1", "spectral_features.peak_energy_ev");
    let times: Vec<i64> = (0..60).map(|i| START_NS + i * SECOND_NS / 10).collect();
    tracker.observe(
        Table::SpectralFeatures,
        &rows("c-a", &times, &vec![2.45; 60], None),
    );
    assert!(tracker.take_rows(0).expect("rows").is_none());
}

#[test]
fn bad_outcome_configurations_are_refused() {
    for (feature, expected) in [
        ("spectral_features.no_such", "no column"),
        ("spectra.intensity_counts", "not a feature table"),
        ("spectral_features.quality_flag_names", "not numeric"),
    ] {
        let mut bad = config();
        let thresholds = OutcomeFeatureConfig {
            max_std: 1.0,
            max_drift: 1.0,
        };
        bad.features.insert(feature.into(), thresholds);
        let err = validate(&bad).expect_err(feature);
        assert!(err.contains(expected), "{err}");
    }
    let mut bad = config();
    bad.min_samples = 1;
    assert!(validate(&bad).is_err());
    assert!(validate(&OutcomesConfig::default()).is_ok());
}
