//! Stability of the segment train over a window: frequency, spreads, interface-free gaps.
//!
//! A steady segmented flow is what makes the residence time of every plug the same; the
//! optimizer must not read a condition while the train is still settling. These small folds
//! turn interface times and per-pair velocities into the window's frequency, coefficients of
//! variation and longest interface-free span (the stopped-flow test).

use super::interfaces::Interface;
use super::segments::PlugPolarity;

/// Running mean and sample variance (Welford), for coefficients of variation.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeanCv {
    n: usize,
    mean: f64,
    m2: f64,
}

impl MeanCv {
    /// Adds one value (non-finite values are ignored).
    #[inline]
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Values added.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Mean, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// Sample standard deviation (n - 1), `None` below two values.
    pub fn std(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).sqrt())
    }

    /// `std / |mean|`, `None` below two values or for a zero mean.
    pub fn cv(&self) -> Option<f64> {
        let s = self.std()?;
        (self.mean != 0.0).then(|| s / self.mean.abs())
    }
}

/// Coefficient of variation (sample standard deviation over |mean|) of the finite values.
///
/// ```
/// use flowdaq_analytics::flow::coefficient_of_variation;
/// let cv = coefficient_of_variation(&[9.0, 10.0, 11.0]).unwrap();
/// assert!((cv - 0.1).abs() < 1e-12);
/// assert_eq!(coefficient_of_variation(&[1.0]), None);
/// ```
pub fn coefficient_of_variation(values: &[f64]) -> Option<f64> {
    let mut acc = MeanCv::default();
    for &v in values {
        acc.push(v);
    }
    acc.cv()
}

/// Median of the values (reordered in place; NaN sorts last). `None` when empty.
pub fn median_in_place(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (_, &mut hi, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return Some(hi);
    }
    let lo = values[..n / 2]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    Some(0.5 * (lo + hi))
}

/// Plugs per second at one sensor: `(starts - 1) / (last start - first start)`, from the
/// plug-start interfaces. `None` below two plug starts.
pub fn segment_frequency_hz(interfaces: &[Interface], polarity: PlugPolarity) -> Option<f64> {
    let mut starts = interfaces.iter().filter(|i| polarity.starts_plug(i.rising));
    let first = starts.next()?.time_s;
    let (count, last) = starts.fold((1usize, first), |(c, _), i| (c + 1, i.time_s));
    let span = last - first;
    (count > 1 && span > 0.0).then(|| (count - 1) as f64 / span)
}

/// Longest span without an interface in a window of `window_s` seconds: between consecutive
/// interfaces, and from the window start to the first and the last to the window end.
pub fn longest_gap_s(interfaces: &[Interface], window_s: f64) -> f64 {
    let mut prev = 0.0f64;
    let mut longest = 0.0f64;
    for i in interfaces {
        longest = longest.max(i.time_s - prev);
        prev = i.time_s;
    }
    longest.max(window_s - prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_frequency_and_gaps() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median_in_place(&mut []), None);
        let ifs: Vec<Interface> = [0.5, 0.7, 1.5, 1.7, 2.5, 2.7]
            .iter()
            .enumerate()
            .map(|(k, &t)| Interface {
                time_s: t,
                rising: k % 2 == 0,
            })
            .collect();
        assert_eq!(segment_frequency_hz(&ifs, PlugPolarity::High), Some(1.0));
        assert_eq!(segment_frequency_hz(&ifs[..1], PlugPolarity::High), None);
        assert!((longest_gap_s(&ifs, 10.0) - 7.3).abs() < 1e-12);
        assert_eq!(longest_gap_s(&[], 4.0), 4.0);
        let mut m = MeanCv::default();
        for x in [1.0, f64::NAN, 3.0] {
            m.push(x);
        }
        assert_eq!((m.count(), m.mean()), (2, Some(2.0)));
    }
}
