//! A simulated optical phase-sensor pair on a segmented-flow tube.
//!
//! A train of liquid plugs and carrier segments (lengths drawn around configured means, with an
//! occasional merged or split plug) moves at a velocity that changes with the condition; two
//! sensors `spacing_mm` apart read a high level in plugs and a low one in the carrier, with
//! noise and a slow drift of the light level. The ground truth (velocity per condition, mean
//! lengths) is in the configuration, so tests and the demo know what must be measured.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::message::OutboundMessage;
use flowdaq_schemas::StreamKind;

/// Configuration of a simulated phase-sensor pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedPhaseSensorConfig {
    /// Source id of the stream.
    pub source: String,
    /// Run id stamped on the messages.
    pub run_id: Option<String>,
    /// Samples per second per sensor.
    pub sample_rate_hz: f64,
    /// Samples per message.
    pub chunk_samples: usize,
    /// Distance between the sensors, mm. Keep it under half a plug + carrier period: a train
    /// that repeats within the spacing makes the direction of the lag ambiguous (for any
    /// method), and the analysis takes the smallest lag.
    pub spacing_mm: f64,
    /// Mean plug length, mm.
    pub plug_length_mm: f64,
    /// Mean carrier length, mm.
    pub carrier_length_mm: f64,
    /// Relative standard deviation of the lengths.
    pub length_jitter: f64,
    /// Probability that a plug is merged with the next one (one long plug).
    pub merge_probability: f64,
    /// Probability that a plug is split in two by a short carrier gap.
    pub split_probability: f64,
    /// Velocity of each condition, mm/s, cycled in order.
    pub velocities_mm_per_s: Vec<f64>,
    /// Seconds of simulated time per condition.
    pub seconds_per_condition: f64,
    /// Sensor level in the carrier and in plugs, V.
    pub levels_volts: [f64; 2],
    /// Gaussian noise, V.
    pub noise_volts: f64,
    /// Drift of both levels, V/s.
    pub drift_volts_per_s: f64,
    /// First sample time, ns since the epoch; default: the time the simulator is built.
    pub start_time_ns: Option<i64>,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SimulatedPhaseSensorConfig {
    fn default() -> Self {
        SimulatedPhaseSensorConfig {
            source: "phase-1".into(),
            run_id: None,
            sample_rate_hz: 2000.0,
            chunk_samples: 200,
            spacing_mm: 2.0,
            plug_length_mm: 4.0,
            carrier_length_mm: 3.0,
            length_jitter: 0.05,
            merge_probability: 0.01,
            split_probability: 0.01,
            velocities_mm_per_s: vec![12.0, 30.0, 60.0, 100.0],
            seconds_per_condition: 30.0,
            levels_volts: [0.4, 1.6],
            noise_volts: 0.02,
            drift_volts_per_s: 0.002,
            start_time_ns: None,
            seed: 11,
        }
    }
}

impl SimulatedPhaseSensorConfig {
    /// Builds the simulator.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for non-positive rates, lengths, spacing or velocities.
    pub fn build(&self) -> Result<SimulatedPhaseSensor, ConnectorError> {
        let positive = [
            self.sample_rate_hz,
            self.spacing_mm,
            self.plug_length_mm,
            self.carrier_length_mm,
            self.seconds_per_condition,
        ];
        if positive.iter().any(|v| !(v.is_finite() && *v > 0.0))
            || self.chunk_samples == 0
            || self.velocities_mm_per_s.is_empty()
            || self
                .velocities_mm_per_s
                .iter()
                .any(|v| !(v.is_finite() && *v >= 0.0))
            || !(0.0..0.5).contains(&self.length_jitter)
        {
            return Err(ConnectorError::Config(
                "simulated_phase_sensor: rates, lengths, spacing and seconds_per_condition must be > 0, \
                 velocities >= 0, length_jitter in [0, 0.5)"
                    .into(),
            ));
        }
        let noise = Normal::new(0.0, self.noise_volts.max(0.0))
            .map_err(|e| ConnectorError::Config(format!("noise_volts: {e}")))?;
        Ok(SimulatedPhaseSensor {
            config: self.clone(),
            rng: SmallRng::seed_from_u64(self.seed),
            noise,
            start_time_ns: self.start_time_ns.unwrap_or_else(crate::transport::now_ns),
            samples_taken: 0,
            position_mm: 0.0,
            // The train starts upstream of sensor B so both sensors see segments at once.
            boundaries: vec![(-self.spacing_mm - 10.0, false)],
        })
    }
}

/// The running simulator.
pub struct SimulatedPhaseSensor {
    config: SimulatedPhaseSensorConfig,
    rng: SmallRng,
    noise: Normal<f64>,
    start_time_ns: i64,
    samples_taken: u64,
    /// Distance the train has moved past sensor A, mm.
    position_mm: f64,
    /// Segment starts along the train (mm) and whether each is a plug; ascending.
    boundaries: Vec<(f64, bool)>,
}

impl SimulatedPhaseSensor {
    /// Index of the condition at `elapsed_s` of simulated time.
    pub fn condition_index(&self, elapsed_s: f64) -> usize {
        (elapsed_s / self.config.seconds_per_condition).max(0.0) as usize
    }

    /// The velocity (mm/s) of a condition: the ground truth.
    pub fn velocity_of(&self, condition: usize) -> f64 {
        let v = &self.config.velocities_mm_per_s;
        v[condition % v.len()]
    }

    /// Extends the train until it reaches `position_mm`.
    fn grow_train(&mut self, position_mm: f64) {
        let jitter = self.config.length_jitter;
        while self
            .boundaries
            .last()
            .is_some_and(|&(start, _)| start < position_mm)
        {
            let Some(&(start, is_plug)) = self.boundaries.last() else {
                return;
            };
            let draw = |mean: f64, rng: &mut SmallRng| {
                mean * (1.0 + jitter * (2.0 * rng.random::<f64>() - 1.0) * 1.7)
            };
            let length = if is_plug {
                let roll: f64 = self.rng.random();
                if roll < self.config.merge_probability {
                    // Two plugs and the carrier between them, merged.
                    2.0 * draw(self.config.plug_length_mm, &mut self.rng)
                        + draw(self.config.carrier_length_mm, &mut self.rng)
                } else if roll < self.config.merge_probability + self.config.split_probability {
                    // Split: a short plug, a thin carrier gap, then the rest.
                    let first = 0.4 * self.config.plug_length_mm;
                    self.boundaries.push((start + first, false));
                    self.boundaries
                        .push((start + first + 0.3 * self.config.carrier_length_mm, true));
                    0.6 * self.config.plug_length_mm
                } else {
                    draw(self.config.plug_length_mm, &mut self.rng)
                }
            } else {
                draw(self.config.carrier_length_mm, &mut self.rng)
            };
            let last_start = self.boundaries.last().map_or(start, |b| b.0);
            self.boundaries.push((last_start + length, !is_plug));
        }
        // Keep memory bounded: drop segments well behind sensor B.
        let behind = position_mm - self.config.spacing_mm - 100.0;
        let keep_from = self.boundaries.partition_point(|&(s, _)| s < behind);
        if keep_from > 1000 {
            self.boundaries.drain(..keep_from - 1);
        }
    }

    fn is_plug_at(&self, position_mm: f64) -> bool {
        let index = self.boundaries.partition_point(|&(s, _)| s <= position_mm);
        index > 0 && self.boundaries[index - 1].1
    }
}

impl Connector for SimulatedPhaseSensor {
    fn source_id(&self) -> &str {
        &self.config.source
    }

    fn next_message(&mut self) -> Result<Option<OutboundMessage>, ConnectorError> {
        let n = self.config.chunk_samples;
        let rate = self.config.sample_rate_hz;
        let first_sample_ns =
            self.start_time_ns + (self.samples_taken as f64 * 1e9 / rate).round() as i64;
        let condition = self.condition_index(self.samples_taken as f64 / rate);
        let [low, high] = self.config.levels_volts;
        let mut sensor_a = Vec::with_capacity(n);
        let mut sensor_b = Vec::with_capacity(n);
        for _ in 0..n {
            let elapsed_s = self.samples_taken as f64 / rate;
            let velocity = self.velocity_of(self.condition_index(elapsed_s));
            self.position_mm += velocity / rate;
            self.grow_train(self.position_mm + 1.0);
            let drift = self.config.drift_volts_per_s * elapsed_s;
            // Sensor A at the train's position; B is spacing_mm downstream, so it sees the
            // train as it was spacing / v earlier.
            for (sensor, position) in [
                (&mut sensor_a, self.position_mm),
                (&mut sensor_b, self.position_mm - self.config.spacing_mm),
            ] {
                let level = if self.is_plug_at(position) { high } else { low };
                let value = level + drift + self.noise.sample(&mut self.rng);
                sensor.push(value as f32);
            }
            self.samples_taken += 1;
        }
        let mut message = OutboundMessage::new(&self.config.source, StreamKind::PhaseTraces)
            .meta("sample_rate_hz", rate)
            .meta("first_sample_time_ns", first_sample_ns)
            .array_f32("sensor_a_volts", &[n as u64], &sensor_a)
            .array_f32("sensor_b_volts", &[n as u64], &sensor_b);
        message.header.run_id = self.config.run_id.clone();
        message.header.condition_id = Some(format!("c-{condition:03}"));
        Ok(Some(message))
    }
}
