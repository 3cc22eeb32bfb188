//! Peak width at a relative height (scipy `peak_widths`) and the sub-pixel peak position.
//!
//! The width has exactly the results of scipy's `_peak_widths`: the reference height is
//! `height - prominence * rel_height`, each side walks out from the peak (never past its base)
//! to the first sample at or below it and interpolates linearly in pixel index. The walk looks
//! at 8 pixels per step and skips chunks whose minimum is above the height; the comparisons are
//! scipy's, in f64. Results are in fractional pixels; [`super::WavelengthAxis::nm_at`] maps
//! them to nm.

use super::peaks::{Peak, Sample};
use super::scan::{Summary, CHUNK};
use super::SpectralError;

/// A peak's width in pixels, as returned by `scipy.signal.peak_widths`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakWidth {
    /// `right_ip - left_ip` (pixels).
    pub width: f64,
    /// The height at which the width was measured.
    pub width_height: f64,
    /// Interpolated left crossing (fractional pixel).
    pub left_ip: f64,
    /// Interpolated right crossing (fractional pixel).
    pub right_ip: f64,
}

/// Width of `peak` at `rel_height` of its prominence (0.5 = FWHM on a baseline-corrected peak).
///
/// # Errors
/// [`SpectralError::InvalidOption`] if `rel_height` is negative or not finite, or if the peak's
/// bases do not satisfy `left_base <= index <= right_base < y.len()`.
///
/// ```
/// use flowdaq_analytics::spectral::{find_peaks, peak_width, PeakScratch};
/// let y = [0.0f64, 1.0, 4.0, 1.0, 0.0];
/// let mut s = PeakScratch::new();
/// let peak = find_peaks(&y, 1.0, &mut s).unwrap()[0];
/// let w = peak_width(&y, &peak, 0.5).unwrap();
/// // half height 2.0 is crossed a third of the way from 1.0 to 4.0 on each side
/// assert!((w.left_ip - 4.0 / 3.0).abs() < 1e-12 && (w.right_ip - 8.0 / 3.0).abs() < 1e-12);
/// ```
pub fn peak_width<T: Sample>(
    y: &[T],
    peak: &Peak,
    rel_height: f64,
) -> Result<PeakWidth, SpectralError> {
    if !(rel_height.is_finite() && rel_height >= 0.0) {
        return Err(SpectralError::InvalidOption {
            name: "rel_height",
            reason: "must be finite and >= 0",
        });
    }
    if !(peak.left_base <= peak.index && peak.index <= peak.right_base && peak.right_base < y.len())
    {
        return Err(SpectralError::InvalidOption {
            name: "peak",
            reason: "bases must satisfy left_base <= index <= right_base < len",
        });
    }
    Ok(width_unchecked(y, peak, rel_height))
}

/// [`peak_width`] for a peak produced by [`super::find_peaks`] on the same `y`.
#[inline]
pub(crate) fn width_unchecked<T: Sample>(y: &[T], peak: &Peak, rel_height: f64) -> PeakWidth {
    width_walk(y, None, peak, rel_height)
}

/// [`width_unchecked`] skipping whole chunks that lie above the reference height.
#[inline(always)]
pub(crate) fn width_summarized<T: Sample>(
    y: &[T],
    s: &Summary<T>,
    peak: &Peak,
    rel_height: f64,
) -> PeakWidth {
    width_walk(y, Some(s), peak, rel_height)
}

/// scipy's `_peak_widths` for one peak. Each side's walk stops at the first sample (going
/// outward) that is not above the reference height, or at the base; that sample is found 8
/// pixels at a time ([`Sample::last_not_above`], [`Sample::first_not_above`]), and with chunk
/// summaries a chunk whose minimum is above the reference height is crossed in one step (the
/// walk could not stop inside it).
#[inline(always)]
fn width_walk<T: Sample>(
    y: &[T],
    s: Option<&Summary<T>>,
    peak: &Peak,
    rel_height: f64,
) -> PeakWidth {
    let x = |i: usize| y[i].to_f64();
    let height = x(peak.index) - peak.prominence * rel_height;
    let above = |c: usize| s.is_some_and(|s| s.min[c].to_f64() > height);

    // Left: the last pixel of (left_base, index] not above `height`, else left_base.
    let mut i = peak.left_base;
    let mut hi = peak.index + 1;
    while hi > peak.left_base + 1 {
        let lo = ((hi - 1) / CHUNK * CHUNK).max(peak.left_base + 1);
        if hi - lo == CHUNK && above(lo / CHUNK) {
            hi = lo;
            continue;
        }
        if let Some(j) = T::last_not_above(y, lo, hi, height) {
            i = j;
            break;
        }
        hi = lo;
    }
    let mut left_ip = i as f64;
    if x(i) < height {
        left_ip += (height - x(i)) / (x(i + 1) - x(i));
    }

    // Right: the first pixel of [index, right_base) not above `height`, else right_base.
    let mut i = peak.right_base;
    let mut lo = peak.index;
    while lo < peak.right_base {
        let hi = ((lo / CHUNK + 1) * CHUNK).min(peak.right_base);
        if hi - lo == CHUNK && above(lo / CHUNK) {
            lo = hi;
            continue;
        }
        if let Some(j) = T::first_not_above(y, lo, hi, height) {
            i = j;
            break;
        }
        lo = hi;
    }
    let mut right_ip = i as f64;
    if x(i) < height {
        right_ip -= (height - x(i)) / (x(i - 1) - x(i));
    }
    PeakWidth {
        width: right_ip - left_ip,
        width_height: height,
        left_ip,
        right_ip,
    }
}

/// Sub-pixel position of the maximum at pixel `i`: vertex of the parabola through
/// `(i-1, i, i+1)`, limited to `i +- 0.5`. Returns `i` at the edges or if the three points are
/// not strictly concave (a flat top).
///
/// ```
/// use flowdaq_analytics::spectral::width::parabolic_vertex;
/// // samples of -(x - 2.3)^2
/// let y: Vec<f64> = (0..5).map(|x| -((x as f64 - 2.3) * (x as f64 - 2.3))).collect();
/// assert!((parabolic_vertex(&y, 2) - 2.3).abs() < 1e-12);
/// ```
#[inline]
pub fn parabolic_vertex<T: Sample>(y: &[T], i: usize) -> f64 {
    if i == 0 || i + 1 >= y.len() {
        return i as f64;
    }
    let (a, b, c) = (y[i - 1].to_f64(), y[i].to_f64(), y[i + 1].to_f64());
    let denom = a - 2.0 * b + c;
    if !(denom < 0.0) {
        return i as f64;
    }
    let delta = (0.5 * (a - c) / denom).clamp(-0.5, 0.5);
    i as f64 + delta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectral::{find_peaks, PeakScratch};

    #[test]
    fn triangle_half_max() {
        // Triangle of height 10 on zero: crossings at exactly +-2.5 pixels around the apex.
        let y: Vec<f64> = (0..21)
            .map(|i| (10.0 - 2.0 * (i as f64 - 10.0).abs()).max(0.0))
            .collect();
        let mut s = PeakScratch::new();
        let p = find_peaks(&y, 1.0, &mut s).unwrap()[0];
        let w = peak_width(&y, &p, 0.5).unwrap();
        assert_eq!(
            (w.left_ip, w.right_ip, w.width, w.width_height),
            (7.5, 12.5, 5.0, 5.0)
        );
        let w = peak_width(&y, &p, 1.0).unwrap();
        assert_eq!((w.left_ip, w.right_ip), (5.0, 15.0));
        let w0 = peak_width(&y, &p, 0.0).unwrap();
        assert_eq!(w0.width, 0.0);
    }

    #[test]
    fn uses_the_higher_base_like_scipy() {
        // Peak on a step: the right base (5) is the higher one, so prominence 5, half height 7.5.
        let y = [0.0f64, 0.0, 10.0, 5.0, 5.0, 5.0, 6.0];
        let p = Peak {
            index: 2,
            height: 10.0,
            prominence: 5.0,
            left_base: 0,
            right_base: 5,
        };
        let w = peak_width(&y, &p, 0.5).unwrap();
        assert_eq!(w.width_height, 7.5);
        assert_eq!(w.left_ip, 1.75);
        assert_eq!(w.right_ip, 2.5);
    }

    #[test]
    fn rejects_invalid_input() {
        let y = [0.0f32, 1.0, 0.0];
        let p = Peak {
            index: 1,
            height: 1.0,
            prominence: 1.0,
            left_base: 0,
            right_base: 3,
        };
        assert!(peak_width(&y, &p, 0.5).is_err());
        let p = Peak { right_base: 2, ..p };
        assert!(peak_width(&y, &p, -0.1).is_err());
        assert!(peak_width(&y, &p, f64::NAN).is_err());
        assert!(peak_width(&y, &p, 0.5).is_ok());
    }

    /// Line-by-line port of scipy's `_peak_widths` for one peak (pixel by pixel).
    fn scipy_width(y: &[f32], p: &Peak, rel: f64) -> PeakWidth {
        let x = |i: usize| y[i] as f64;
        let height = x(p.index) - p.prominence * rel;
        let mut i = p.index;
        while p.left_base < i && height < x(i) {
            i -= 1;
        }
        let mut left_ip = i as f64;
        if x(i) < height {
            left_ip += (height - x(i)) / (x(i + 1) - x(i));
        }
        let mut i = p.index;
        while i < p.right_base && height < x(i) {
            i += 1;
        }
        let mut right_ip = i as f64;
        if x(i) < height {
            right_ip -= (height - x(i)) / (x(i - 1) - x(i));
        }
        PeakWidth {
            width: right_ip - left_ip,
            width_height: height,
            left_ip,
            right_ip,
        }
    }

    #[test]
    fn chunk_skipping_walk_is_identical() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(5);
        let mut sc = PeakScratch::<f32>::new();
        let mut checked = 0;
        for trial in 0..300 {
            let n = 50 + trial * 7;
            let w = rng.random_range(1.0..200.0);
            let c = rng.random_range(0.0..n as f64);
            let y: Vec<f32> = (0..n)
                .map(|i| {
                    (500.0 * (-0.5 * ((i as f64 - c) / w).powi(2)).exp()
                        + rng.random_range(0.0..20.0)) as f32
                })
                .collect();
            let peaks = find_peaks(&y, 10.0, &mut sc).unwrap().to_vec();
            for p in &peaks {
                for rel in [0.0, 0.1, 0.5, 0.9, 1.0] {
                    let want = scipy_width(&y, p, rel);
                    assert_eq!(width_summarized(&y, &sc.summary, p, rel), want);
                    assert_eq!(width_unchecked(&y, p, rel), want);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn parabola_edges_and_flat_tops() {
        let y = [1.0f32, 3.0, 3.0, 1.0];
        assert_eq!(parabolic_vertex(&y, 1), 1.0 + 0.5);
        assert_eq!(parabolic_vertex(&y, 0), 0.0);
        assert_eq!(parabolic_vertex(&y, 3), 3.0);
        let flat = [2.0f64, 2.0, 2.0];
        assert_eq!(parabolic_vertex(&flat, 1), 1.0);
    }
}
