//! The plug velocity history, shared by the extractor that measures it and the one that uses it.
//!
//! The flow extractor appends one entry per analysed window of the configured velocity pair;
//! the spectral extractor asks for the reaction time of each spectrum: the time its plug took
//! from the mixing point to the probe, integrating the piecewise-constant velocity exactly
//! ([`VelocitySchedule::reaction_time_s`]), not `distance / current velocity`. The latest
//! velocity is assumed to hold after its window until the next one, but not for longer than
//! [`VelocityHistory::max_extrapolation_ns`]: a silent sensor must not date spectra forever.

use std::sync::{Arc, Mutex};

use flowdaq_analytics::flow::VelocitySchedule;

/// Entries kept; older ones are dropped (a plug's trip is far shorter than this many windows).
const MAX_ENTRIES: usize = 4096;

/// Velocity entries (window start, mm/s) of one pair, oldest first.
#[derive(Debug, Default)]
pub struct VelocityHistory {
    times_ns: Vec<i64>,
    velocity_mm_per_s: Vec<f64>,
    last_window_end_ns: i64,
    /// How long after the last window ends its velocity may still be used.
    pub max_extrapolation_ns: i64,
    schedule: Option<VelocitySchedule>,
}

/// The history as shared between extractors on the pipeline thread.
pub type SharedVelocity = Arc<Mutex<VelocityHistory>>;

impl VelocityHistory {
    /// An empty history that extrapolates the last velocity for at most `max_extrapolation_ns`.
    pub fn new(max_extrapolation_ns: i64) -> VelocityHistory {
        VelocityHistory {
            max_extrapolation_ns,
            ..VelocityHistory::default()
        }
    }

    /// Appends the velocity of the window `[start_ns, end_ns)`; `None` marks it unknown. A
    /// window not after the previous one (a clock step back) restarts the history.
    pub fn push(&mut self, start_ns: i64, end_ns: i64, velocity_mm_per_s: Option<f64>) {
        if self.times_ns.last().is_some_and(|&last| start_ns <= last) {
            self.times_ns.clear();
            self.velocity_mm_per_s.clear();
        }
        self.times_ns.push(start_ns);
        self.velocity_mm_per_s
            .push(velocity_mm_per_s.unwrap_or(f64::NAN));
        if self.times_ns.len() > MAX_ENTRIES {
            let excess = self.times_ns.len() - MAX_ENTRIES;
            self.times_ns.drain(..excess);
            self.velocity_mm_per_s.drain(..excess);
        }
        self.last_window_end_ns = end_ns;
        self.schedule = None;
    }

    /// Velocity in force at `t_ns`, mm/s.
    pub fn velocity_at(&self, t_ns: i64) -> Option<f64> {
        if !self.covers(t_ns) {
            return None;
        }
        let index = self
            .times_ns
            .partition_point(|&x| x <= t_ns)
            .checked_sub(1)?;
        let v = self.velocity_mm_per_s[index];
        v.is_finite().then_some(v)
    }

    /// Reaction time (s) of the plug `path_length_mm` downstream of the mixing point at `t_ns`;
    /// `None` where the history cannot say (before it starts, across an unknown window, too
    /// long after the last window, or a negative path).
    pub fn reaction_time_s(&mut self, t_ns: i64, path_length_mm: f64) -> Option<f64> {
        if !self.covers(t_ns) {
            return None;
        }
        if self.schedule.is_none() {
            self.schedule = VelocitySchedule::new(&self.times_ns, &self.velocity_mm_per_s).ok();
        }
        self.schedule
            .as_ref()?
            .reaction_time_s(t_ns, path_length_mm)
            .ok()
    }

    fn covers(&self, t_ns: i64) -> bool {
        !self.times_ns.is_empty()
            && t_ns
                <= self
                    .last_window_end_ns
                    .saturating_add(self.max_extrapolation_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn reaction_time_integrates_across_a_velocity_change_and_stops_when_stale() {
        let mut history = VelocityHistory::new(5 * S);
        assert_eq!(history.reaction_time_s(S, 10.0), None, "no velocity yet");
        history.push(0, 10 * S, Some(10.0));
        history.push(10 * S, 12 * S, Some(20.0));
        // 50 mm at t = 12 s: the last 40 mm at 20 mm/s (2 s), the first 10 mm at 10 mm/s (1 s).
        let t = history.reaction_time_s(12 * S, 50.0).expect("known");
        assert!((t - 3.0).abs() < 1e-9, "{t}");
        assert_eq!(history.velocity_at(11 * S), Some(20.0));
        // Extrapolated 5 s past the last window's end, not beyond.
        assert!(history.reaction_time_s(17 * S, 20.0).is_some());
        assert_eq!(history.reaction_time_s(17 * S + 1, 20.0), None);
        // An unknown window is a gap the plug cannot be traced through.
        history.push(12 * S, 14 * S, None);
        assert_eq!(history.reaction_time_s(13 * S, 5.0), None);
    }
}
