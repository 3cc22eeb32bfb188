//! The flow extractor: `phase_traces` chunks in, `flow_features` and `flow_segments` rows out.
//!
//! Senders stream a sensor pair's two traces in short chunks; velocity needs windows of a few
//! seconds. So each configured pair accumulates its samples until `window_s` is filled, then
//! [`FlowAnalyzer`] measures the window (two velocity estimates cross-checked, segments, flags,
//! flow-regime numbers) and the samples are dropped (windows do not overlap). A chunk that does
//! not continue the previous one (time jump of more than 1.5 samples, or another sample rate)
//! restarts the window: a gap must not be measured as a stopped flow. Traces of sources not
//! listed under `[features.flow.pairs]` are stored but not analysed (their spacing is unknown).
//! The velocity of the configured velocity pair is appended to the shared [`VelocityHistory`],
//! from which the spectral extractor computes reaction times.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, StringBuilder};
use arrow::datatypes::{Float32Type, Float64Type, TimestampNanosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use flowdaq_analytics::flow::{
    FlowAnalyzer, FlowError, FlowFeaturesBuilder, FlowFlags, FlowOptions, FlowSegmentsBuilder,
    FlowWindow, FluidProperties, PhaseProperties, PlugPolarity, SensorPair, WettingPhase,
};
use flowdaq_schemas::Table;

use super::velocity::SharedVelocity;
use super::{Extractor, FeatureError, MessageOrigin};
use crate::config::{FlowFeaturesConfig, PolarityChoice, SensorPairConfig, WettingChoice};

/// One pair's window being filled.
struct PairState {
    config: SensorPairConfig,
    analyzer: Option<FlowAnalyzer>,
    sample_rate_hz: f64,
    window_start_ns: i64,
    next_sample_ns: i64,
    sensor_a: Vec<f32>,
    sensor_b: Vec<f32>,
}

/// The extractor; see the module doc.
pub struct FlowExtractor {
    config: FlowFeaturesConfig,
    options: FlowOptions,
    pairs: HashMap<String, PairState>,
    velocity_source: Option<String>,
    velocity: SharedVelocity,
}

impl FlowExtractor {
    /// An extractor for the configured pairs, feeding `velocity`.
    ///
    /// # Errors
    /// [`FlowError`] for options or pair settings the kernels refuse.
    pub fn new(
        config: &FlowFeaturesConfig,
        velocity: SharedVelocity,
    ) -> Result<FlowExtractor, FlowError> {
        if !(config.window_s.is_finite() && config.window_s > 0.0 && config.window_s <= 3600.0) {
            return Err(FlowError::InvalidOption {
                name: "window_s",
                reason: "must be > 0 and <= 3600",
            });
        }
        let [low, high] = config.velocity_range_mm_per_s;
        let options = FlowOptions {
            velocity_range_mm_per_s: (low, high),
            fluid: config.fluid.map(|f| FluidProperties {
                plug: PhaseProperties {
                    density_kg_per_m3: f.plug_density_kg_per_m3,
                    viscosity_pa_s: f.plug_viscosity_pa_s,
                },
                carrier: PhaseProperties {
                    density_kg_per_m3: f.carrier_density_kg_per_m3,
                    viscosity_pa_s: f.carrier_viscosity_pa_s,
                },
                wetting_phase: match f.wetting_phase {
                    WettingChoice::Plug => WettingPhase::Plug,
                    WettingChoice::Carrier => WettingPhase::Carrier,
                },
                surface_tension_n_per_m: f.surface_tension_n_per_m,
                diffusivity_m2_per_s: f.diffusivity_m2_per_s,
                channel_inner_diameter_m: f.channel_inner_diameter_m,
                two_phase: true,
                reaction_time_s: f.reaction_time_s,
            }),
            ..FlowOptions::default()
        };
        options.validate()?;
        let mut pairs = HashMap::new();
        for (source, pair) in &config.pairs {
            // Validate the pair now with a nominal rate; the real rate comes with the data.
            FlowAnalyzer::new(sensor_pair(pair, 1000.0), options.clone())?;
            pairs.insert(
                source.clone(),
                PairState {
                    config: pair.clone(),
                    analyzer: None,
                    sample_rate_hz: 0.0,
                    window_start_ns: 0,
                    next_sample_ns: 0,
                    sensor_a: Vec::new(),
                    sensor_b: Vec::new(),
                },
            );
        }
        let velocity_source = config
            .velocity_source
            .clone()
            .or_else(|| config.pairs.keys().next().cloned());
        if let Some(source) = &velocity_source {
            if !config.pairs.contains_key(source) {
                return Err(FlowError::InvalidOption {
                    name: "velocity_source",
                    reason: "must name a pair under [features.flow.pairs]",
                });
            }
        }
        Ok(FlowExtractor {
            config: config.clone(),
            options,
            pairs,
            velocity_source,
            velocity,
        })
    }

    /// Appends one chunk to its pair's window; returns the windows it completed.
    fn add_chunk(
        &mut self,
        source: &str,
        first_sample_ns: i64,
        sample_rate_hz: f64,
        sensor_a: &[f32],
        sensor_b: &[f32],
    ) -> Result<Vec<(FlowWindow, Vec<flowdaq_analytics::flow::Segment>)>, FeatureError> {
        let Some(state) = self.pairs.get_mut(source) else {
            return Ok(Vec::new());
        };
        let period_ns = 1e9 / sample_rate_hz;
        let continues = state.analyzer.is_some()
            && state.sample_rate_hz == sample_rate_hz
            && ((first_sample_ns - state.next_sample_ns) as f64).abs() <= 1.5 * period_ns;
        if !continues {
            if !state.sensor_a.is_empty() {
                tracing::info!(source, "phase trace discontinuity: window restarted");
            }
            if state.sample_rate_hz != sample_rate_hz || state.analyzer.is_none() {
                state.analyzer = Some(FlowAnalyzer::new(
                    sensor_pair(&state.config, sample_rate_hz),
                    self.options.clone(),
                )?);
                state.sample_rate_hz = sample_rate_hz;
            }
            state.sensor_a.clear();
            state.sensor_b.clear();
            state.window_start_ns = first_sample_ns;
        }
        state.sensor_a.extend_from_slice(sensor_a);
        state.sensor_b.extend_from_slice(sensor_b);
        state.next_sample_ns = first_sample_ns + (sensor_a.len() as f64 * period_ns) as i64;
        let window_samples = ((self.config.window_s * sample_rate_hz).round() as usize).max(16);
        let mut windows = Vec::new();
        while state.sensor_a.len() >= window_samples {
            let Some(analyzer) = state.analyzer.as_mut() else {
                break;
            };
            let window = analyzer.analyze(
                state.window_start_ns,
                &state.sensor_a[..window_samples],
                &state.sensor_b[..window_samples],
            );
            windows.push((window, analyzer.segments().to_vec()));
            state.sensor_a.drain(..window_samples);
            state.sensor_b.drain(..window_samples);
            state.window_start_ns += (window_samples as f64 * period_ns) as i64;
        }
        Ok(windows)
    }

    fn rows(
        &self,
        source: &str,
        origin: &MessageOrigin<'_>,
        windows: &[(FlowWindow, Vec<flowdaq_analytics::flow::Segment>)],
    ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        let n = windows.len();
        let mut features = FlowFeaturesBuilder::with_capacity(n);
        let mut segments =
            FlowSegmentsBuilder::with_capacity(windows.iter().map(|w| w.1.len()).sum());
        for (window, window_segments) in windows {
            features.push(window);
            segments.push_window(window.window_start_ns, window_segments);
        }
        let features = features.finish().into_record_batch()?;
        let segments = segments.finish().into_record_batch()?;
        let position = self.pairs.get(source).and_then(|p| p.config.position_mm);
        // The chunk that completed the windows.
        let mut columns = origin.columns(n);
        columns.push(features.column(0).clone()); // window_start_ns
        columns.push(Arc::new(Float64Array::from(vec![position; n])));
        columns.extend(features.columns()[1..].iter().cloned());
        let flags = features
            .column_by_name("quality_flags")
            .ok_or_else(|| FeatureError::Missing("quality_flags".into()))?
            .as_primitive::<arrow::datatypes::UInt32Type>();
        let mut names = StringBuilder::with_capacity(n, 32 * n);
        for row in 0..n {
            for (index, name) in FlowFlags(flags.value(row)).names().enumerate() {
                let _ = names.write_str(if index == 0 { "" } else { "|" });
                let _ = names.write_str(name);
            }
            names.append_value("");
        }
        columns.push(Arc::new(names.finish()));
        let features = RecordBatch::try_new(Table::FlowFeatures.unsequenced_schema(), columns)?;

        let rows = segments.num_rows();
        let mut columns = origin.columns(rows);
        columns.remove(5); // seq
        columns.remove(1); // instrument_time_ns
        columns.extend(segments.columns().iter().cloned());
        let segments = RecordBatch::try_new(Table::FlowSegments.unsequenced_schema(), columns)?;
        Ok(vec![
            (Table::FlowFeatures, features),
            (Table::FlowSegments, segments),
        ])
    }
}

fn sensor_pair(config: &SensorPairConfig, sample_rate_hz: f64) -> SensorPair {
    SensorPair {
        spacing_mm: config.spacing_mm,
        sample_rate_hz,
        plug_polarity: match config.plug_polarity {
            PolarityChoice::High => PlugPolarity::High,
            PolarityChoice::Low => PlugPolarity::Low,
        },
    }
}

impl Extractor for FlowExtractor {
    fn name(&self) -> &'static str {
        "flow_features"
    }

    fn extract(
        &mut self,
        message: &[(Table, RecordBatch)],
    ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        let Some((_, traces)) = message.iter().find(|(t, _)| *t == Table::PhaseTraces) else {
            return Ok(Vec::new());
        };
        let column = |name: &str| {
            traces
                .column_by_name(name)
                .ok_or_else(|| FeatureError::Missing(format!("column {name} missing")))
        };
        let arrival = column("arrival_time_ns")?.as_primitive::<TimestampNanosecondType>();
        let instrument = column("instrument_time_ns")?.as_primitive::<TimestampNanosecondType>();
        let sources = column("source")?.as_string::<i32>();
        let runs = column("run_id")?.as_string::<i32>();
        let conditions = column("condition_id")?.as_string::<i32>();
        let seqs = column("seq")?.as_primitive::<UInt64Type>();
        let first = column("first_sample_time_ns")?.as_primitive::<TimestampNanosecondType>();
        let rates = column("sample_rate_hz")?.as_primitive::<Float64Type>();
        let sensor_a = column("sensor_a_volts")?.as_list::<i32>();
        let sensor_b = column("sensor_b_volts")?.as_list::<i32>();
        let mut out = Vec::new();
        for row in 0..traces.num_rows() {
            let source = sources.value(row);
            if !self.pairs.contains_key(source) {
                continue;
            }
            let a = sensor_a.value(row);
            let b = sensor_b.value(row);
            let windows = self.add_chunk(
                source,
                first.value(row),
                rates.value(row),
                a.as_primitive::<Float32Type>().values(),
                b.as_primitive::<Float32Type>().values(),
            )?;
            if windows.is_empty() {
                continue;
            }
            if self.velocity_source.as_deref() == Some(source) {
                let mut history = self
                    .velocity
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for (window, _) in &windows {
                    let end_ns = window.window_start_ns + (window.duration_s * 1e9) as i64;
                    history.push(window.window_start_ns, end_ns, window.velocity_mm_per_s);
                }
            }
            let origin = MessageOrigin {
                arrival_time_ns: arrival.value(row),
                instrument_time_ns: instrument.is_valid(row).then(|| instrument.value(row)),
                source,
                run_id: runs.value(row),
                condition_id: conditions.is_valid(row).then(|| conditions.value(row)),
                seq: seqs.value(row),
            };
            out.extend(self.rows(source, &origin, &windows)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
