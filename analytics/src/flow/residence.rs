//! Residence (reaction) time of each spectrum: how long the plug under the probe has reacted.
//!
//! The reaction time is a process input (domain primer s. 4): its error moves every outcome, so
//! `t = x / u` with the velocity at the spectrum's timestamp is not good enough when the
//! velocity changes while the plug is in the tube. The plug at path length `x` (mm downstream of
//! the mixing point) at time `t` entered at `t0` such that `integral_{t0}^{t} v(s) ds = x`. With
//! a piecewise-constant velocity schedule (entry `k` valid on `[t_k, t_{k+1})`, the last one
//! onwards) the flow displacement `X(t)` is piecewise linear: it is tabulated once per schedule
//! entry (a prefix sum), and each spectrum costs two binary searches, an as-of lookup of its
//! own time and an inverse lookup of `X(t) - x`, so `t0 = inf { s : X(s) >= X(t) - x }`
//! exactly. During a stop (`v = 0`) `X` is flat and a plug keeps ageing where it stands.
//!
//! A null, NaN or negative velocity entry makes its interval unknown: displacement restarts
//! after it, and a plug whose path crosses it gets no reaction time (`VELOCITY_GAP`). So does a
//! spectrum before the schedule or a plug that entered before it (`OUTSIDE_SCHEDULE`).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType};
use arrow_array::{Array, ArrayRef, Float32Array, Float64Array, RecordBatch, UInt32Array};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::output::FlowFeatures;
use super::{FlowError, FlowFlags};

/// Seconds between two nanosecond timestamps, without overflow.
#[inline]
fn secs_between(from_ns: i64, to_ns: i64) -> f64 {
    (to_ns as i128 - from_ns as i128) as f64 * 1e-9
}

/// A piecewise-constant velocity history: entry `k` holds from `times_ns[k]` until the next.
#[derive(Debug, Clone, PartialEq)]
pub struct VelocitySchedule {
    times_ns: Vec<i64>,
    /// mm/s; NaN where unknown.
    velocity_mm_per_s: Vec<f64>,
    /// Flow displacement at `times_ns[k]` since the start of the run of known entries holding
    /// `k` (mm); NaN for unknown entries.
    displacement_mm: Vec<f64>,
    /// First entry of the run of known entries holding `k`.
    run_start: Vec<usize>,
}

impl VelocitySchedule {
    /// A schedule from entry times (ns, strictly increasing) and velocities (mm/s). NaN,
    /// infinite or negative velocities mark intervals of unknown velocity.
    ///
    /// # Errors
    /// [`FlowError::LengthMismatch`] for slices of different lengths,
    /// [`FlowError::InvalidSchedule`] for times not strictly increasing.
    pub fn new(times_ns: &[i64], velocity_mm_per_s: &[f64]) -> Result<Self, FlowError> {
        if times_ns.len() != velocity_mm_per_s.len() {
            return Err(FlowError::LengthMismatch {
                what: "velocity_mm_per_s",
                expected: times_ns.len(),
                actual: velocity_mm_per_s.len(),
            });
        }
        let n = times_ns.len();
        let mut v = Vec::with_capacity(n);
        let mut x = Vec::with_capacity(n);
        let mut run = Vec::with_capacity(n);
        for k in 0..n {
            if k > 0 && times_ns[k] <= times_ns[k - 1] {
                return Err(FlowError::InvalidSchedule {
                    index: k,
                    reason: "times must be strictly increasing",
                });
            }
            let vk = velocity_mm_per_s[k];
            let known = vk.is_finite() && vk >= 0.0;
            v.push(if known { vk } else { f64::NAN });
            if !known {
                x.push(f64::NAN);
                run.push(k);
            } else if k > 0 && !v[k - 1].is_nan() {
                x.push(x[k - 1] + v[k - 1] * secs_between(times_ns[k - 1], times_ns[k]));
                run.push(run[k - 1]);
            } else {
                x.push(0.0);
                run.push(k);
            }
        }
        Ok(Self {
            times_ns: times_ns.to_vec(),
            velocity_mm_per_s: v,
            displacement_mm: x,
            run_start: run,
        })
    }

    /// A schedule from Arrow columns: times as `Int64` or `Timestamp(ns)` (no nulls), velocities
    /// as `Float64` or `Float32` (nulls are unknown intervals).
    ///
    /// # Errors
    /// As [`Self::new`], plus [`FlowError::UnsupportedType`] and
    /// [`FlowError::InvalidSchedule`] for a null time.
    pub fn from_arrays(
        times_ns: &dyn Array,
        velocity_mm_per_s: &dyn Array,
    ) -> Result<Self, FlowError> {
        let (t, t_nulls) = i64_values(times_ns, "times_ns")?;
        if let Some(nulls) = t_nulls {
            if let Some(index) = (0..nulls.len()).find(|&i| nulls.is_null(i)) {
                return Err(FlowError::InvalidSchedule {
                    index,
                    reason: "null time",
                });
            }
        }
        let v = f64_values(velocity_mm_per_s, "velocity_mm_per_s")?;
        Self::new(t, &v)
    }

    /// The schedule measured by the flow kernels: `window_start_ns` and `velocity_mm_per_s` of
    /// a [`FlowFeatures`] batch (windows in time order; null velocities are unknown intervals).
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn from_features(features: &FlowFeatures) -> Result<Self, FlowError> {
        Self::from_arrays(&features.window_start_ns, &features.velocity_mm_per_s)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.times_ns.len()
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.times_ns.is_empty()
    }

    /// Reaction time (s) of the plug at `path_length_mm` downstream of the mixing point at
    /// time `t_ns`: `t - t0` with `integral_{t0}^{t} v = path_length_mm`.
    ///
    /// # Errors
    /// The flag explaining why there is no answer: `INVALID_POSITION` (negative or non-finite
    /// path), `OUTSIDE_SCHEDULE`, `VELOCITY_GAP`.
    ///
    /// ```
    /// use flowdaq_analytics::flow::VelocitySchedule;
    ///
    /// const S: i64 = 1_000_000_000;
    /// // 10 mm/s until t = 10 s, then 20 mm/s.
    /// let sched = VelocitySchedule::new(&[0, 10 * S], &[10.0, 20.0]).unwrap();
    /// // Probe 50 mm downstream, spectrum at t = 12 s: the last 40 mm took 2 s at 20 mm/s,
    /// // the first 10 mm took 1 s at 10 mm/s: 3 s (not 50 / 20 = 2.5 s).
    /// let t = sched.reaction_time_s(12 * S, 50.0).unwrap();
    /// assert!((t - 3.0).abs() < 1e-12);
    /// ```
    pub fn reaction_time_s(&self, t_ns: i64, path_length_mm: f64) -> Result<f64, FlowFlags> {
        if !(path_length_mm.is_finite() && path_length_mm >= 0.0) {
            return Err(FlowFlags::INVALID_POSITION);
        }
        let idx = self.times_ns.partition_point(|&x| x <= t_ns);
        if idx == 0 {
            return Err(FlowFlags::OUTSIDE_SCHEDULE);
        }
        let k = idx - 1;
        let vk = self.velocity_mm_per_s[k];
        if vk.is_nan() {
            return Err(FlowFlags::VELOCITY_GAP);
        }
        let x = &self.displacement_mm;
        let target = x[k] + vk * secs_between(self.times_ns[k], t_ns) - path_length_mm;
        let r = self.run_start[k];
        if target < 0.0 {
            return Err(if r == 0 {
                FlowFlags::OUTSIDE_SCHEDULE
            } else {
                FlowFlags::VELOCITY_GAP
            });
        }
        // First entry at or past the target displacement; t0 lies in the interval before it.
        let m = r + x[r..=k].partition_point(|&d| d < target);
        if m == r {
            // target == X[r] == 0: the plug passed the mixing point at the run's start.
            return Ok(secs_between(self.times_ns[r], t_ns));
        }
        let j = m - 1;
        // X rises from below the target to at least it on [t_j, t_{j+1}) (or on [t_k, t]
        // when j == k), so v_j > 0 here.
        Ok(secs_between(self.times_ns[j], t_ns) - (target - x[j]) / self.velocity_mm_per_s[j])
    }
}

/// Where the probes sit along the tube.
#[derive(Debug, Clone, PartialEq)]
pub struct ReactorGeometry {
    /// Position of the mixing point, where the reaction starts (mm along the tube, in the same
    /// frame as the probe positions).
    pub mixing_point_mm: f64,
    /// Position of each probe (mm along the tube), indexed by probe number.
    pub probe_positions_mm: Vec<f64>,
}

impl ReactorGeometry {
    /// Checks that every position is finite and no probe is upstream of the mixing point.
    ///
    /// # Errors
    /// [`FlowError::InvalidOption`].
    pub fn validate(&self) -> Result<(), FlowError> {
        if !self.mixing_point_mm.is_finite() {
            return Err(FlowError::InvalidOption {
                name: "mixing_point_mm",
                reason: "must be finite",
            });
        }
        if self
            .probe_positions_mm
            .iter()
            .any(|&p| !(p.is_finite() && p >= self.mixing_point_mm))
        {
            return Err(FlowError::InvalidOption {
                name: "probe_positions_mm",
                reason: "must be finite and at or downstream of the mixing point",
            });
        }
        Ok(())
    }

    /// Path length from the mixing point to each spectrum's probe (mm), by probe number; an
    /// unknown probe number gives NaN (flagged `INVALID_POSITION` by [`reaction_times`]), a
    /// null one null.
    pub fn path_lengths_for_probes(&self, probe: &UInt32Array) -> Float64Array {
        let values: Vec<f64> = probe
            .values()
            .iter()
            .map(|&p| {
                self.probe_positions_mm
                    .get(p as usize)
                    .map_or(f64::NAN, |x| x - self.mixing_point_mm)
            })
            .collect();
        Float64Array::new(values.into(), probe.nulls().cloned())
    }

    /// Path length from the mixing point for absolute positions along the tube (mm), e.g. the
    /// `probe_position_mm` column of the spectra table.
    pub fn path_lengths_for_positions(&self, position_mm: &Float64Array) -> Float64Array {
        let values: Vec<f64> = position_mm
            .values()
            .iter()
            .map(|&x| x - self.mixing_point_mm)
            .collect();
        Float64Array::new(values.into(), position_mm.nulls().cloned())
    }
}

/// Reaction times of a batch of spectra.
#[derive(Debug, Clone)]
pub struct ResidenceTimes {
    /// Reaction time (s); null where there is no answer (see the flags) or an input was null.
    pub reaction_time_s: Float64Array,
    /// [`FlowFlags`] explaining a null reaction time (null only where an input was null).
    pub quality_flags: UInt32Array,
}

impl ResidenceTimes {
    /// Column name of [`Self::reaction_time_s`].
    pub const REACTION_TIME_S: &'static str = "reaction_time_s";
    /// Column name of [`Self::quality_flags`].
    pub const QUALITY_FLAGS: &'static str = "residence_quality_flags";

    /// The Arrow schema of [`Self::into_record_batch`].
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(Self::REACTION_TIME_S, DataType::Float64, true),
            Field::new(Self::QUALITY_FLAGS, DataType::UInt32, true),
        ]))
    }

    /// Number of spectra.
    pub fn len(&self) -> usize {
        self.quality_flags.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The columns as one record batch with [`Self::schema`].
    ///
    /// # Errors
    /// [`FlowError::Arrow`] if Arrow rejects the batch (it cannot for kernel output).
    pub fn into_record_batch(self) -> Result<RecordBatch, FlowError> {
        let cols: Vec<ArrayRef> =
            vec![Arc::new(self.reaction_time_s), Arc::new(self.quality_flags)];
        Ok(RecordBatch::try_new(Self::schema(), cols)?)
    }
}

/// The as-of join of spectra onto the velocity schedule: each spectrum's reaction time from
/// its timestamp and its path length from the mixing point
/// ([`VelocitySchedule::reaction_time_s`] per row).
///
/// `timestamps_ns` is `Int64` or `Timestamp(ns)`, `path_length_mm` is `Float64` or `Float32`
/// (see [`ReactorGeometry`] to get it from probe numbers or positions). Rows need not be sorted.
///
/// # Errors
/// [`FlowError::UnsupportedType`] and [`FlowError::LengthMismatch`]. Row content never errors.
pub fn reaction_times(
    schedule: &VelocitySchedule,
    timestamps_ns: &dyn Array,
    path_length_mm: &dyn Array,
) -> Result<ResidenceTimes, FlowError> {
    let (t, t_nulls) = i64_values(timestamps_ns, "timestamps_ns")?;
    let x = f64_values(path_length_mm, "path_length_mm")?;
    if x.len() != t.len() {
        return Err(FlowError::LengthMismatch {
            what: "path_length_mm",
            expected: t.len(),
            actual: x.len(),
        });
    }
    let nulls = NullBuffer::union(t_nulls, path_length_mm.logical_nulls().as_ref());
    let mut out = Vec::with_capacity(t.len());
    let mut flags = Vec::with_capacity(t.len());
    let mut valid = Vec::with_capacity(t.len());
    for (i, (&ti, &xi)) in t.iter().zip(&x).enumerate() {
        if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            out.push(0.0);
            flags.push(0);
            valid.push(false);
            continue;
        }
        match schedule.reaction_time_s(ti, xi) {
            Ok(r) => {
                out.push(r);
                flags.push(0);
                valid.push(true);
            }
            Err(f) => {
                out.push(0.0);
                flags.push(f.0);
                valid.push(false);
            }
        }
    }
    Ok(ResidenceTimes {
        reaction_time_s: Float64Array::new(out.into(), Some(NullBuffer::from(valid))),
        quality_flags: UInt32Array::new(flags.into(), nulls),
    })
}

/// The `i64` values of an `Int64` or `Timestamp(ns)` array and its nulls.
fn i64_values<'a>(
    a: &'a dyn Array,
    what: &'static str,
) -> Result<(&'a [i64], Option<&'a NullBuffer>), FlowError> {
    match a.data_type() {
        DataType::Int64 => {
            let p = a.as_primitive::<Int64Type>();
            Ok((p.values(), p.nulls()))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            let p = a.as_primitive::<TimestampNanosecondType>();
            Ok((p.values(), p.nulls()))
        }
        other => Err(FlowError::UnsupportedType {
            what,
            data_type: other.clone(),
        }),
    }
}

/// The values of a `Float64` or `Float32` array as `f64`, NaN where null.
fn f64_values(a: &dyn Array, what: &'static str) -> Result<Vec<f64>, FlowError> {
    let nulls = a.logical_nulls();
    let is_null = |i: usize| nulls.as_ref().is_some_and(|n| n.is_null(i));
    let values: Vec<f64> = if let Some(p) = a.as_any().downcast_ref::<Float64Array>() {
        p.values()
            .iter()
            .enumerate()
            .map(|(i, &v)| if is_null(i) { f64::NAN } else { v })
            .collect()
    } else if let Some(p) = a.as_any().downcast_ref::<Float32Array>() {
        p.values()
            .iter()
            .enumerate()
            .map(|(i, &v)| if is_null(i) { f64::NAN } else { v as f64 })
            .collect()
    } else {
        return Err(FlowError::UnsupportedType {
            what,
            data_type: a.data_type().clone(),
        });
    };
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;

    const S: i64 = 1_000_000_000;

    #[test]
    fn gaps_stops_and_edges() {
        // 10 mm/s from 0, stop at 10 s, unknown from 20 s, 5 mm/s from 30 s.
        let s = VelocitySchedule::new(&[0, 10 * S, 20 * S, 30 * S], &[10.0, 0.0, f64::NAN, 5.0])
            .unwrap();
        // t = 15 s, 40 mm: entered at 6 s (X = 60 then at 100 - 40).
        assert!((s.reaction_time_s(15 * S, 40.0).unwrap() - 9.0).abs() < 1e-12);
        // A plug that entered before t = 0 is outside the schedule.
        assert_eq!(
            s.reaction_time_s(5 * S, 60.0),
            Err(FlowFlags::OUTSIDE_SCHEDULE)
        );
        assert_eq!(s.reaction_time_s(-1, 0.0), Err(FlowFlags::OUTSIDE_SCHEDULE));
        assert_eq!(s.reaction_time_s(25 * S, 1.0), Err(FlowFlags::VELOCITY_GAP));
        // After the gap: 32 s, 5 mm -> entered at 31 s; 20 mm -> crosses the gap.
        assert!((s.reaction_time_s(32 * S, 5.0).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(
            s.reaction_time_s(32 * S, 20.0),
            Err(FlowFlags::VELOCITY_GAP)
        );
        assert_eq!(
            s.reaction_time_s(32 * S, -1.0),
            Err(FlowFlags::INVALID_POSITION)
        );
        assert!(VelocitySchedule::new(&[0, 0], &[1.0, 1.0]).is_err());
        assert!(VelocitySchedule::new(&[0], &[1.0, 1.0]).is_err());
    }

    #[test]
    fn batch_join_with_nulls_and_geometry() {
        let s = VelocitySchedule::new(&[0], &[10.0]).unwrap();
        let g = ReactorGeometry {
            mixing_point_mm: 100.0,
            probe_positions_mm: vec![100.0, 150.0],
        };
        g.validate().unwrap();
        let probes = UInt32Array::from(vec![Some(1), None, Some(7), Some(0)]);
        let paths = g.path_lengths_for_probes(&probes);
        let t = Int64Array::from(vec![20 * S, 20 * S, 20 * S, 20 * S]);
        let r = reaction_times(&s, &t, &paths).unwrap();
        assert!((r.reaction_time_s.value(0) - 5.0).abs() < 1e-12);
        assert!(r.reaction_time_s.is_null(1) && r.quality_flags.is_null(1));
        assert!(r.reaction_time_s.is_null(2));
        assert_eq!(r.quality_flags.value(2), FlowFlags::INVALID_POSITION.0);
        assert!(r.reaction_time_s.value(3).abs() < 1e-12);
        assert_eq!(r.into_record_batch().unwrap().num_rows(), 4);
        let short = Float64Array::from(vec![1.0]);
        assert!(reaction_times(&s, &t, &short).is_err());
    }
}
