//! Phase-sensor trace simulator shared by the flow integration tests.
//!
//! A train of plug and carrier segments of known lengths moves through the tube with a known
//! piecewise-constant velocity; each of the two sensors (B `spacing_mm` downstream of A) sees
//! every boundary when the flow displacement reaches it, with its own timing jitter. The
//! voltage is a smooth (tanh) step between a carrier and a plug level, multiplied by a slow
//! gain drift, plus a slow baseline drift and white noise, each independent per sensor. Seeded,
//! so every failure reproduces.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Sim {
    pub sample_rate_hz: f64,
    pub duration_s: f64,
    pub spacing_mm: f64,
    /// `(start_s, velocity_mm_per_s)`, the first at 0; each holds until the next.
    pub schedule: Vec<(f64, f64)>,
    /// Mean plug and carrier lengths (mm) and their relative uniform spread (+-).
    pub plug_mm: f64,
    pub carrier_mm: f64,
    pub spread: f64,
    /// Carrier and plug voltage levels.
    pub carrier_v: f64,
    pub plug_v: f64,
    /// White noise (V, standard deviation).
    pub noise_v: f64,
    /// Baseline drift amplitude (V) and relative gain drift amplitude, sinusoids of random
    /// phase and a period near `drift_period_s`.
    pub drift_v: f64,
    pub gain_drift: f64,
    pub drift_period_s: f64,
    /// Timing jitter of each boundary at each sensor (s, standard deviation).
    pub jitter_s: f64,
    /// Edge time constant (s): the step is `0.5 (1 + tanh((t - t_k) / edge_s))`.
    pub edge_s: f64,
    pub seed: u64,
}

impl Sim {
    /// A 10 s window at 1 kHz, 40 mm/s, 10 mm spacing, 3 mm plugs and 4 mm carriers +-20 %,
    /// 1 V / 2.5 V with 30 mV noise, 0.3 V baseline and 10 % gain drift, 0.3 ms jitter.
    pub fn typical(seed: u64) -> Self {
        Self {
            sample_rate_hz: 1000.0,
            duration_s: 10.0,
            spacing_mm: 10.0,
            schedule: vec![(0.0, 40.0)],
            plug_mm: 3.0,
            carrier_mm: 4.0,
            spread: 0.2,
            carrier_v: 1.0,
            plug_v: 2.5,
            noise_v: 0.03,
            drift_v: 0.3,
            gain_drift: 0.1,
            drift_period_s: 15.0,
            jitter_s: 3e-4,
            edge_s: 1e-3,
            seed,
        }
    }

    /// Total displacement needed: the whole window plus the spacing and a margin.
    fn total_mm(&self) -> f64 {
        displacement(&self.schedule, self.duration_s) + self.spacing_mm + 50.0
    }

    /// A random train, `(is_plug, length_mm)`, starting with a carrier; long enough to fill
    /// the window at both sensors. Uses its own RNG stream (seed + 1).
    pub fn train(&self) -> Vec<(bool, f64)> {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(1));
        let mut out = Vec::new();
        let mut total = 0.0;
        let mut plug = false;
        while total < self.total_mm() + 20.0 {
            let mean = if plug { self.plug_mm } else { self.carrier_mm };
            let l = mean * (1.0 + rng.random_range(-self.spread..=self.spread));
            out.push((plug, l));
            total += l;
            plug = !plug;
        }
        out
    }

    /// Renders a train. Fluid coordinate 0 of the train (the front of its first segment) sits
    /// at `-(spacing + 20)` mm, i.e. already past both sensors at t = 0, so both traces start
    /// inside the train.
    pub fn render(&self, train: &[(bool, f64)]) -> Rendered {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let offset = self.spacing_mm + 20.0;
        let n = (self.duration_s * self.sample_rate_hz).round() as usize;
        let mut sensors = Vec::new();
        let mut truth = Vec::new();
        for (s, at_mm) in [0.0, self.spacing_mm].into_iter().enumerate() {
            let jitter = Normal::new(0.0, self.jitter_s.max(1e-300)).unwrap();
            // Boundary k (front of segment k) is at fluid coordinate pos_k; it passes the
            // sensor when the displacement reaches pos_k - offset + at_mm. Boundaries with a
            // negative target passed before t = 0.
            let mut pos = 0.0;
            let mut edges: Vec<(f64, bool)> = Vec::new(); // (time, starts a plug)
            let mut state_at_0 = false;
            for &(is_plug, len) in train {
                let target = pos - offset + at_mm;
                if target <= 0.0 {
                    state_at_0 = is_plug;
                } else if let Some(t) = time_at_displacement(&self.schedule, target) {
                    let t = t + if self.jitter_s > 0.0 {
                        jitter.sample(&mut rng)
                    } else {
                        0.0
                    };
                    edges.push((t, is_plug));
                    if s == 0 && t < self.duration_s {
                        truth.push(TrueBoundary {
                            time_s: t,
                            starts_plug: is_plug,
                            segment_mm: len,
                        });
                    }
                }
                pos += len;
            }
            let noise = Normal::new(0.0, self.noise_v.max(1e-300)).unwrap();
            let (phase_b, phase_g) = (
                rng.random_range(0.0..std::f64::consts::TAU),
                rng.random_range(0.0..std::f64::consts::TAU),
            );
            let (per_b, per_g) = (
                self.drift_period_s * rng.random_range(0.8..1.2),
                self.drift_period_s * rng.random_range(0.8..1.2),
            );
            let mut y = Vec::with_capacity(n);
            let mut k = 0; // first edge not yet passed by more than the edge width
            for i in 0..n {
                let t = i as f64 / self.sample_rate_hz;
                while k + 1 < edges.len() && edges[k + 1].0 <= t {
                    k += 1;
                }
                // Nearest edge (the last one at or before t, or the next one).
                let j = if edges.is_empty() {
                    None
                } else if edges[k].0 > t {
                    Some(k)
                } else if k + 1 < edges.len() && edges[k + 1].0 - t < t - edges[k].0 {
                    Some(k + 1)
                } else {
                    Some(k)
                };
                let p = match j {
                    None => state_at_0 as u8 as f64,
                    Some(j) => {
                        let before = if j == 0 { state_at_0 } else { edges[j - 1].1 };
                        let after = edges[j].1;
                        let h = 0.5 * (1.0 + ((t - edges[j].0) / self.edge_s).tanh());
                        before as u8 as f64 + (after as u8 as f64 - before as u8 as f64) * h
                    }
                };
                let level = self.carrier_v + (self.plug_v - self.carrier_v) * p;
                let gain =
                    1.0 + self.gain_drift * (std::f64::consts::TAU * t / per_g + phase_g).sin();
                let base = self.drift_v * (std::f64::consts::TAU * t / per_b + phase_b).sin();
                let e = if self.noise_v > 0.0 {
                    noise.sample(&mut rng)
                } else {
                    0.0
                };
                y.push(level * gain + base + e);
            }
            sensors.push(y);
        }
        let b = sensors.pop().unwrap_or_default();
        let a = sensors.pop().unwrap_or_default();
        Rendered {
            a,
            b,
            truth_a: truth,
        }
    }

    /// Train and render in one go.
    pub fn run(&self) -> Rendered {
        self.render(&self.train())
    }
}

/// A boundary as sensor A saw it.
#[derive(Debug, Clone, Copy)]
pub struct TrueBoundary {
    /// When it passed A (jitter included), s.
    pub time_s: f64,
    /// It is the front of a plug.
    pub starts_plug: bool,
    /// Length of the segment it is the front of (mm).
    pub segment_mm: f64,
}

/// Two traces and the truth at sensor A.
pub struct Rendered {
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub truth_a: Vec<TrueBoundary>,
}

impl Rendered {
    /// The true segment (length mm, is plug) starting nearest to `start_s` at A, if within
    /// `tol_s`.
    pub fn segment_at(&self, start_s: f64, tol_s: f64) -> Option<TrueBoundary> {
        self.truth_a
            .iter()
            .min_by(|x, y| {
                (x.time_s - start_s)
                    .abs()
                    .total_cmp(&(y.time_s - start_s).abs())
            })
            .filter(|x| (x.time_s - start_s).abs() <= tol_s)
            .copied()
    }
}

/// Flow displacement (mm) from 0 to `t` under the schedule.
pub fn displacement(schedule: &[(f64, f64)], t: f64) -> f64 {
    let mut x = 0.0;
    for (k, &(t0, v)) in schedule.iter().enumerate() {
        let t1 = schedule.get(k + 1).map_or(f64::INFINITY, |e| e.0);
        if t <= t0 {
            break;
        }
        x += v * (t.min(t1) - t0);
    }
    x
}

/// First time the displacement reaches `x` (mm), if ever.
pub fn time_at_displacement(schedule: &[(f64, f64)], x: f64) -> Option<f64> {
    let mut acc = 0.0;
    for (k, &(t0, v)) in schedule.iter().enumerate() {
        let t1 = schedule.get(k + 1).map_or(f64::INFINITY, |e| e.0);
        let span = v * (t1 - t0);
        if v > 0.0 && acc + span >= x {
            return Some(t0 + (x - acc) / v);
        }
        acc += span;
    }
    None
}

/// Relative error.
pub fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}
