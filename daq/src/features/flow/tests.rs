//! The flow extractor on decoded messages from the simulated phase-sensor pair: velocity per
//! condition within 1 %, segment rows, the shared velocity history, gaps and unknown sources.

use super::*;
use crate::config::SensorPairConfig;
use crate::features::velocity::VelocityHistory;
use flowdaq_connectors::decode::{decode_message, DecodeContext, DecodeLimits};
use flowdaq_connectors::sim::phase_sensor::SimulatedPhaseSensorConfig;
use flowdaq_connectors::Connector;
use std::sync::Mutex;

const START_NS: i64 = 1_764_000_000_000_000_000;

fn sim_config() -> SimulatedPhaseSensorConfig {
    SimulatedPhaseSensorConfig {
        velocities_mm_per_s: vec![20.0, 50.0],
        seconds_per_condition: 10.0,
        merge_probability: 0.0,
        split_probability: 0.0,
        start_time_ns: Some(START_NS),
        run_id: Some("flow".into()),
        ..SimulatedPhaseSensorConfig::default()
    }
}

fn flow_config(sim: &SimulatedPhaseSensorConfig) -> FlowFeaturesConfig {
    let mut config = FlowFeaturesConfig {
        window_s: 2.0,
        velocity_range_mm_per_s: [5.0, 200.0],
        ..FlowFeaturesConfig::default()
    };
    config.pairs.insert(
        sim.source.clone(),
        SensorPairConfig {
            spacing_mm: sim.spacing_mm,
            position_mm: Some(40.0),
            plug_polarity: PolarityChoice::High,
        },
    );
    config
}

fn decoded(message: &flowdaq_connectors::OutboundMessage) -> Vec<(Table, RecordBatch)> {
    let limits = DecodeLimits::default();
    let ctx = DecodeContext {
        arrival_time_ns: START_NS,
        default_run_id: "default",
        limits: &limits,
    };
    match decode_message(&message.frames(), &ctx) {
        Ok(d) => d.batches,
        Err((_, err)) => panic!("simulated message rejected: {err}"),
    }
}

/// Streams `seconds` of the simulator through the extractor; returns every output batch.
fn run(
    extractor: &mut FlowExtractor,
    sim: &SimulatedPhaseSensorConfig,
    seconds: f64,
) -> Vec<(Table, RecordBatch)> {
    let mut connector = sim.build().expect("sim");
    let messages = (seconds * sim.sample_rate_hz / sim.chunk_samples as f64) as usize;
    let mut out = Vec::new();
    for _ in 0..messages {
        let message = connector.next_message().expect("message").expect("endless");
        out.extend(extractor.extract(&decoded(&message)).expect("extract"));
    }
    out
}

fn shared() -> SharedVelocity {
    Arc::new(Mutex::new(VelocityHistory::new(10_000_000_000)))
}

#[test]
fn windows_measure_each_conditions_velocity_within_one_percent() {
    let sim = sim_config();
    let velocity = shared();
    let mut extractor = FlowExtractor::new(&flow_config(&sim), velocity.clone()).expect("valid");
    let out = run(&mut extractor, &sim, 20.0);
    let features: Vec<&RecordBatch> = out
        .iter()
        .filter(|(t, _)| *t == Table::FlowFeatures)
        .map(|(_, b)| b)
        .collect();
    let rows: usize = features.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 10, "20 s of traces in 2 s windows");
    let mut checked = 0;
    for batch in &features {
        assert_eq!(batch.schema(), Table::FlowFeatures.unsequenced_schema());
        let starts = batch
            .column_by_name("window_start_ns")
            .expect("start")
            .as_primitive::<TimestampNanosecondType>();
        let speeds = batch
            .column_by_name("velocity_mm_per_s")
            .expect("velocity")
            .as_primitive::<Float64Type>();
        let conditions = batch
            .column_by_name("condition_id")
            .expect("condition")
            .as_string::<i32>();
        for row in 0..batch.num_rows() {
            let start_s = (starts.value(row) - START_NS) as f64 * 1e-9;
            // Windows that straddle the change at 10 s (or see its transit) are not checked.
            let truth = if start_s + 2.0 <= 10.0 {
                20.0
            } else if start_s >= 10.5 {
                50.0
            } else {
                continue;
            };
            let v = speeds.value(row);
            assert!(
                (v - truth).abs() < 0.01 * truth,
                "window at {start_s} s: {v} vs {truth}"
            );
            assert!(conditions.value(row).starts_with("c-00"));
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked}");
    let segments: usize = out
        .iter()
        .filter(|(t, _)| *t == Table::FlowSegments)
        .map(|(_, b)| b.num_rows())
        .sum();
    // ~7 mm per plug+carrier pair: 20 s at 20 then 50 mm/s move 700 mm, ~200 segments.
    assert!((150..260).contains(&segments), "{segments}");
    // The velocity history now dates a spectrum 30 mm downstream at 15 s: 0.6 s at 50 mm/s.
    let mut history = velocity.lock().expect("lock");
    let t = history
        .reaction_time_s(START_NS + 15_000_000_000, 30.0)
        .expect("covered");
    assert!((t - 0.6).abs() < 0.006, "{t}");
}

#[test]
fn a_time_gap_restarts_the_window_and_unknown_sources_are_ignored() {
    let sim = sim_config();
    let mut extractor = FlowExtractor::new(&flow_config(&sim), shared()).expect("valid");
    // 1.5 s, then a jump of 60 s, then 1.5 s: no window is ever complete across the gap.
    let first = run(&mut extractor, &sim, 1.5);
    let later = SimulatedPhaseSensorConfig {
        start_time_ns: Some(START_NS + 60_000_000_000),
        ..sim.clone()
    };
    let second = run(&mut extractor, &later, 1.5);
    assert!(first.is_empty() && second.is_empty());
    let stranger = SimulatedPhaseSensorConfig {
        source: "phase-unknown".into(),
        ..sim.clone()
    };
    assert!(run(&mut extractor, &stranger, 5.0).is_empty());
}

#[test]
fn bad_options_are_refused() {
    let sim = sim_config();
    let mut config = flow_config(&sim);
    config.window_s = 0.0;
    assert!(FlowExtractor::new(&config, shared()).is_err());
    let mut config = flow_config(&sim);
    config.velocity_source = Some("nope".into());
    assert!(FlowExtractor::new(&config, shared()).is_err());
    let mut config = flow_config(&sim);
    if let Some(pair) = config.pairs.values_mut().next() {
        pair.spacing_mm = -1.0;
    }
    assert!(FlowExtractor::new(&config, shared()).is_err());
}

#[test]
fn spectra_get_the_reaction_time_of_the_measured_velocity() {
    use crate::config::FeaturesConfig;
    use crate::features::FeatureExtractors;
    use flowdaq_connectors::message::OutboundMessage;
    use flowdaq_schemas::StreamKind;

    let sim = sim_config();
    let mut config = FeaturesConfig {
        flow: flow_config(&sim),
        ..FeaturesConfig::default()
    };
    config.flow.mixing_point_mm = 10.0;
    let mut extractors = FeatureExtractors::new(&config).expect("valid");
    let mut connector = sim.build().expect("sim");
    for _ in 0..(16.0 * sim.sample_rate_hz / sim.chunk_samples as f64) as usize {
        let message = connector.next_message().expect("message").expect("endless");
        let mut out = Vec::new();
        assert!(extractors
            .extract(&decoded(&message), None, &mut out)
            .is_empty());
    }
    // A spectrum at 15 s, probe at 40 mm: 30 mm after mixing at 50 mm/s = 0.6 s. One at 11 s
    // with the probe at 110 mm: 100 mm, 1 s at 50 mm/s (50 mm) and 2.5 s at 20 mm/s: 3.5 s.
    let axis: Vec<f64> = (0..256).map(|i| 450.0 + 0.5 * i as f64).collect();
    let counts: Vec<f32> = axis
        .iter()
        .map(|nm| (10.0 + 500.0 * (-0.5 * ((nm - 510.0) / 6.0).powi(2)).exp()) as f32)
        .collect();
    for (at_s, probe_mm, expected_s) in [(15.0, 40.0, 0.6), (11.0, 110.0, 3.5)] {
        let mut message = OutboundMessage::new("spec-1", StreamKind::Spectra)
            .meta("kind", "pl")
            .meta("integration_time_ms", 5.0)
            .meta("probe_position_mm", probe_mm)
            .array_f64("wavelength_nm", &[axis.len() as u64], &axis)
            .array_f32("intensity_counts", &[axis.len() as u64], &counts);
        message.header.instrument_time_ns = Some(START_NS + (at_s * 1e9) as i64);
        let mut out = Vec::new();
        assert!(extractors
            .extract(&decoded(&message), None, &mut out)
            .is_empty());
        let (_, batch) = out
            .iter()
            .find(|(t, _)| *t == Table::SpectralFeatures)
            .expect("features");
        let reaction = batch
            .column_by_name("reaction_time_s")
            .expect("column")
            .as_primitive::<Float64Type>()
            .value(0);
        assert!(
            (reaction - expected_s).abs() < 0.01 * expected_s,
            "at {at_s} s, probe {probe_mm} mm: {reaction} vs {expected_s}"
        );
        let velocity = batch
            .column_by_name("velocity_mm_per_s")
            .expect("column")
            .as_primitive::<Float64Type>()
            .value(0);
        assert!((velocity - 50.0).abs() < 0.5, "{velocity}");
    }
}

#[test]
fn configured_fluid_gives_flow_regime_numbers_with_their_flags() {
    use crate::config::{FluidConfig, WettingChoice};
    let sim = sim_config();
    let mut config = flow_config(&sim);
    // Toluene plugs in nitrogen, 0.5 mm tube: Re = rho u D / mu of the wetting (plug) phase.
    config.fluid = Some(FluidConfig {
        plug_density_kg_per_m3: 867.0,
        plug_viscosity_pa_s: 0.00056,
        carrier_density_kg_per_m3: 1.2,
        carrier_viscosity_pa_s: 0.0000176,
        wetting_phase: WettingChoice::Plug,
        surface_tension_n_per_m: 0.028,
        diffusivity_m2_per_s: 1.0e-9,
        channel_inner_diameter_m: 0.0005,
        reaction_time_s: Some(1.0),
    });
    let mut extractor = FlowExtractor::new(&config, shared()).expect("valid");
    let out = run(&mut extractor, &sim, 4.0);
    let (_, batch) = out
        .iter()
        .find(|(t, _)| *t == Table::FlowFeatures)
        .expect("a window");
    let value = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("{name}"))
            .as_primitive::<Float64Type>()
            .value(0)
    };
    let velocity_m_per_s = value("velocity_mm_per_s") * 1e-3;
    let reynolds = 867.0 * velocity_m_per_s * 0.0005 / 0.00056;
    assert!((value("reynolds_number") - reynolds).abs() < 1e-9 * reynolds);
    let capillary = 0.00056 * velocity_m_per_s / 0.028;
    assert!((value("capillary_number") - capillary).abs() < 1e-9 * capillary);
    // Pe = u L / D with L the diffusion length D_tube / 4: 20 mm/s gives 2500, in range.
    assert!(value("peclet_number") > 1e3 && value("peclet_number") < 1e5);
    let names = batch
        .column_by_name("quality_flag_names")
        .expect("names")
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert!(!names.contains("PECLET_OUT_OF_RANGE"), "{names}");
}
