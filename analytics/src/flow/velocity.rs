//! Velocity from matched interfaces: the same meniscus seen by sensor A, then by sensor B.
//!
//! Each interface at A is paired with the interface of the same direction at B one transit
//! time later; `u = spacing / lag`. The transit time is not known in advance (that is what is
//! measured) and a segment train is nearly periodic, so the pairing must not slip by one
//! segment. The lag is found first as the densest cluster of all same-direction A->B time
//! differences in the configured lag range, with a cluster width of a tenth of the segment
//! period (the correct alignment piles up within the timing jitter; a slipped one is smeared by
//! the segment-length spread). Then every A interface takes the nearest same-direction B
//! interface within a quarter period of that lag, each B interface used once, in order. A
//! perfectly periodic train is ambiguous for any method; the smaller |lag| wins ties. A pairing
//! slipped by whole segments (the true lag outside the searched range) is caught afterwards by
//! [`InterfaceMatcher::duration_mismatch`]: the same segment has the same duration at both
//! sensors, different segments do not.

use super::interfaces::Interface;
use super::stability::{median_in_place, MeanCv};

/// One interface seen at both sensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchedPair {
    /// Index into sensor A's interfaces.
    pub index_a: u32,
    /// Index into sensor B's interfaces.
    pub index_b: u32,
    /// `time_b - time_a` (s); negative when B sees it first (swapped sensors).
    pub lag_s: f64,
}

/// Velocity estimated from matched interfaces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InterfaceVelocity {
    /// Mean lag of the pairs (s).
    pub lag_s: f64,
    /// `spacing_mm / lag_s` (mm/s); negative for a negative lag.
    pub velocity_mm_per_s: f64,
    /// Coefficient of variation of the per-pair velocities `spacing / lag_k` (the stability of
    /// the velocity within the window, timing jitter included). `None` below two pairs.
    pub velocity_cv: Option<f64>,
    /// Number of pairs.
    pub pairs: usize,
}

/// Reusable scratch of the interface matcher; one per thread.
#[derive(Debug, Default, Clone)]
pub struct InterfaceMatcher {
    candidates: Vec<f64>,
    periods: Vec<f64>,
}

impl InterfaceMatcher {
    /// An empty matcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pairs the interfaces of A with those of B into `pairs` (cleared first).
    ///
    /// `lag_range_s = (min, max)` bounds |lag| (from the configured velocity range and the
    /// spacing: `spacing / v_max ..= spacing / v_min`); lags of either sign are considered.
    /// Returns the number of pairs. Needs at least three interfaces at one sensor (for the
    /// segment period); returns 0 otherwise.
    ///
    /// ```
    /// use flowdaq_analytics::flow::{Interface, InterfaceMatcher};
    ///
    /// // Irregular plugs seen at A, and at B 0.25 s later.
    /// let a: Vec<Interface> = [0.10, 0.20, 0.33, 0.41, 0.58, 0.66, 0.80, 0.93]
    ///     .iter()
    ///     .enumerate()
    ///     .map(|(k, &t)| Interface { time_s: t, rising: k % 2 == 0 })
    ///     .collect();
    /// let b: Vec<Interface> =
    ///     a.iter().map(|i| Interface { time_s: i.time_s + 0.25, ..*i }).collect();
    /// let mut pairs = Vec::new();
    /// let n = InterfaceMatcher::new().match_interfaces(&a, &b, (0.01, 2.0), &mut pairs);
    /// assert_eq!(n, 8);
    /// assert!(pairs.iter().all(|p| p.index_a == p.index_b && (p.lag_s - 0.25).abs() < 1e-12));
    /// ```
    pub fn match_interfaces(
        &mut self,
        a: &[Interface],
        b: &[Interface],
        lag_range_s: (f64, f64),
        pairs: &mut Vec<MatchedPair>,
    ) -> usize {
        pairs.clear();
        let (min_lag, max_lag) = lag_range_s;
        if !(min_lag >= 0.0 && max_lag > min_lag) || a.is_empty() || b.is_empty() {
            return 0;
        }
        let Some(period) = self
            .period_s(a)
            .or_else(|| self.period_s(b))
            .filter(|p| *p > 0.0)
        else {
            return 0;
        };
        // All same-direction differences in range.
        self.candidates.clear();
        for ia in a {
            let j0 = b.partition_point(|x| x.time_s < ia.time_s - max_lag);
            for ib in b[j0..]
                .iter()
                .take_while(|x| x.time_s <= ia.time_s + max_lag)
            {
                let d = ib.time_s - ia.time_s;
                if ib.rising == ia.rising && d.abs() >= min_lag {
                    self.candidates.push(d);
                }
            }
        }
        if self.candidates.is_empty() {
            return 0;
        }
        self.candidates.sort_unstable_by(f64::total_cmp);
        // Densest window of width period / 10 (ties: the smaller |centre|).
        let width = 0.1 * period;
        let c = &self.candidates;
        let (mut best, mut best_count, mut best_centre) = ((0, 0), 0usize, f64::INFINITY);
        let mut j = 0;
        for i in 0..c.len() {
            j = j.max(i);
            while j < c.len() && c[j] - c[i] <= width {
                j += 1;
            }
            let count = j - i;
            let centre = c[i + (count - 1) / 2];
            if count > best_count || (count == best_count && centre.abs() < best_centre.abs()) {
                (best, best_count, best_centre) = ((i, j), count, centre);
            }
        }
        self.periods.clear();
        self.periods.extend_from_slice(&c[best.0..best.1]);
        let Some(lag) = median_in_place(&mut self.periods) else {
            return 0;
        };
        // Nearest same-direction partner within a quarter period, B indices increasing.
        self.pair_at(a, b, lag, 0.25 * period, pairs)
    }

    /// Pairs every A interface with the nearest same-direction B interface within a quarter
    /// segment period of `a + lag_s` (B indices increasing) into `pairs` (cleared first). Used
    /// to check a lag found elsewhere (the cross-correlation's) against the interfaces.
    /// Returns the number of pairs (0 below three interfaces at both sensors).
    pub fn match_at_lag(
        &mut self,
        a: &[Interface],
        b: &[Interface],
        lag_s: f64,
        pairs: &mut Vec<MatchedPair>,
    ) -> usize {
        pairs.clear();
        match self.period_s(a).or_else(|| self.period_s(b)) {
            Some(p) if p > 0.0 && lag_s.is_finite() => self.pair_at(a, b, lag_s, 0.25 * p, pairs),
            _ => 0,
        }
    }

    /// Median over consecutive matched pairs of `|d_A - d_B| / d_A`, the relative difference
    /// between the durations of the same segment at A and at B. It is the timing jitter over a
    /// segment duration (below 1 %) for a true pairing; a pairing slipped by whole segments
    /// compares different segments and shows the train's duration spread instead (none for a
    /// perfectly regular train, where the slip cannot be seen by any method). `None` without
    /// two consecutive pairs.
    pub fn duration_mismatch(
        &mut self,
        a: &[Interface],
        b: &[Interface],
        pairs: &[MatchedPair],
    ) -> Option<f64> {
        self.periods.clear();
        for w in pairs.windows(2) {
            let (p, q) = (w[0], w[1]);
            if q.index_a != p.index_a + 1 || q.index_b != p.index_b + 1 {
                continue;
            }
            let t = |x: &[Interface], i: u32| x.get(i as usize).map(|i| i.time_s);
            // Pairs that do not index these interfaces (not from this matcher) are skipped.
            if let (Some(a0), Some(a1), Some(b0), Some(b1)) = (
                t(a, p.index_a),
                t(a, q.index_a),
                t(b, p.index_b),
                t(b, q.index_b),
            ) {
                let (da, db) = (a1 - a0, b1 - b0);
                if da > 0.0 {
                    self.periods.push((da - db).abs() / da);
                }
            }
        }
        median_in_place(&mut self.periods)
    }

    fn pair_at(
        &mut self,
        a: &[Interface],
        b: &[Interface],
        lag: f64,
        tol: f64,
        pairs: &mut Vec<MatchedPair>,
    ) -> usize {
        let mut next_b = 0usize;
        for (ka, ia) in a.iter().enumerate() {
            let target = ia.time_s + lag;
            let j0 = next_b + b[next_b..].partition_point(|x| x.time_s < target - tol);
            let mut found: Option<(usize, f64)> = None;
            for (kb, ib) in b[j0..]
                .iter()
                .enumerate()
                .take_while(|(_, x)| x.time_s <= target + tol)
            {
                let err = (ib.time_s - target).abs();
                if ib.rising == ia.rising && found.is_none_or(|(_, e)| err < e) {
                    found = Some((j0 + kb, err));
                }
            }
            if let Some((kb, _)) = found {
                pairs.push(MatchedPair {
                    index_a: ka as u32,
                    index_b: kb as u32,
                    lag_s: b[kb].time_s - ia.time_s,
                });
                next_b = kb + 1;
            }
        }
        pairs.len()
    }

    /// Median time between consecutive same-direction interfaces (one plug + one carrier).
    fn period_s(&mut self, x: &[Interface]) -> Option<f64> {
        if x.len() < 3 {
            return None;
        }
        self.periods.clear();
        self.periods
            .extend(x.windows(3).map(|w| w[2].time_s - w[0].time_s));
        median_in_place(&mut self.periods)
    }
}

/// Velocity from matched pairs and the sensor spacing. `None` below two pairs or for a zero
/// mean lag.
pub fn velocity_from_pairs(pairs: &[MatchedPair], spacing_mm: f64) -> Option<InterfaceVelocity> {
    if pairs.len() < 2 {
        return None;
    }
    let lag_s = pairs.iter().map(|p| p.lag_s).sum::<f64>() / pairs.len() as f64;
    if lag_s == 0.0 || !lag_s.is_finite() {
        return None;
    }
    let mut v = MeanCv::default();
    for p in pairs {
        v.push(spacing_mm / p.lag_s);
    }
    Some(InterfaceVelocity {
        lag_s,
        velocity_mm_per_s: spacing_mm / lag_s,
        velocity_cv: v.cv(),
        pairs: pairs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train(times: &[f64], shift: f64) -> Vec<Interface> {
        times
            .iter()
            .enumerate()
            .map(|(k, &t)| Interface {
                time_s: t + shift,
                rising: k % 2 == 0,
            })
            .collect()
    }

    #[test]
    fn lag_longer_than_a_period_and_dropouts() {
        // Irregular train, lag 1.3 s (several periods of ~0.3 s); B misses one interface pair.
        let mut state = 12345u64;
        let mut t = 0.0;
        let times: Vec<f64> = (0..40)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                t += 0.1 + 0.1 * ((state >> 11) as f64 / (1u64 << 53) as f64);
                t
            })
            .collect();
        let a = train(&times, 0.0);
        let mut b = train(&times, 1.3);
        b.drain(10..12);
        let mut pairs = Vec::new();
        let mut m = InterfaceMatcher::new();
        let n = m.match_interfaces(&a, &b, (0.05, 5.0), &mut pairs);
        assert!(n >= 28, "{n}");
        assert!(pairs.iter().all(|p| (p.lag_s - 1.3).abs() < 1e-9));
        let v = velocity_from_pairs(&pairs, 13.0).unwrap();
        assert!((v.velocity_mm_per_s - 10.0).abs() < 1e-9);
        assert!(v.velocity_cv.unwrap() < 1e-9);
        // Swapped: negative lag, negative velocity.
        let n = m.match_interfaces(&b, &a, (0.05, 5.0), &mut pairs);
        assert!(n >= 28);
        let v = velocity_from_pairs(&pairs, 13.0).unwrap();
        assert!((v.velocity_mm_per_s + 10.0).abs() < 1e-9);
        assert_eq!(m.duration_mismatch(&b, &a, &pairs), Some(0.0));
        // Forcing a lag one segment period short: pairs form, durations disagree.
        let n = m.match_at_lag(&a, &b, 1.3 - 0.3, &mut pairs);
        assert!(n > 10);
        let mismatch = m.duration_mismatch(&a, &b, &pairs).unwrap();
        assert!(mismatch > 0.05, "{mismatch}");
    }

    #[test]
    fn degenerate_inputs_give_no_pairs() {
        let mut m = InterfaceMatcher::new();
        let mut pairs = Vec::new();
        let a = train(&[0.0, 1.0], 0.0);
        assert_eq!(m.match_interfaces(&a, &a, (0.1, 1.0), &mut pairs), 0);
        assert_eq!(m.match_interfaces(&[], &a, (0.1, 1.0), &mut pairs), 0);
        let a = train(&[0.0, 1.0, 2.0, 3.0], 0.0);
        assert_eq!(m.match_interfaces(&a, &a, (2.0, 1.0), &mut pairs), 0);
        assert!(velocity_from_pairs(&pairs, 1.0).is_none());
    }
}
