//! Integrated intensity and emission quantiles over a (possibly non-uniform) wavelength axis.
//!
//! The integral is the trapezoid rule over `|d lambda|`, so it does not depend on the axis
//! direction. Quantiles (and the interquartile range, a width that stays meaningful for
//! multimodal spectra) are taken on the cumulative integral of the *positive part* of the
//! signal, which is monotonic, so baseline noise below zero cannot create several crossings.

use super::axis::WavelengthAxis;
use super::peaks::Sample;
#[cfg(test)]
use super::scan::Weights;
use super::scan::{Summary, CHUNK};
use super::SpectralError;

#[inline(always)]
fn pos<T: Sample>(x: T) -> f64 {
    let v = x.to_f64();
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

fn check_len(axis: &WavelengthAxis<'_>, n: usize) -> Result<(), SpectralError> {
    if axis.len() != n {
        return Err(SpectralError::InputLength {
            what: "spectrum",
            expected: axis.len(),
            actual: n,
        });
    }
    Ok(())
}

/// Trapezoid integral of `y` over the axis (units of `y` times nm); 0 for a single pixel.
///
/// # Errors
/// [`SpectralError::InputLength`] if `y` and the axis differ in length.
///
/// ```
/// use flowdaq_analytics::spectral::{integrate::trapezoid, WavelengthAxis};
/// let axis = WavelengthAxis::new(&[500.0, 490.0, 470.0]).unwrap();
/// assert_eq!(trapezoid(&axis, &[1.0f32, 1.0, 3.0]).unwrap(), 10.0 + 40.0);
/// ```
pub fn trapezoid<T: Sample>(axis: &WavelengthAxis<'_>, y: &[T]) -> Result<f64, SpectralError> {
    check_len(axis, y.len())?;
    let x = axis.as_slice();
    Ok((1..y.len())
        .map(|i| 0.5 * (x[i] - x[i - 1]).abs() * (y[i].to_f64() + y[i - 1].to_f64()))
        .sum())
}

/// Wavelength (nm) below which a fraction `q` of the positive emission lies (cumulative
/// trapezoid integral of `max(y, 0)` from the shortest wavelength, linearly interpolated).
/// `None` if the spectrum has no positive area.
///
/// # Errors
/// [`SpectralError::InputLength`] on a length mismatch, [`SpectralError::InvalidOption`] unless
/// `0 <= q <= 1`.
pub fn emission_quantile_nm<T: Sample>(
    axis: &WavelengthAxis<'_>,
    y: &[T],
    q: f64,
) -> Result<Option<f64>, SpectralError> {
    check_len(axis, y.len())?;
    if !(0.0..=1.0).contains(&q) {
        return Err(SpectralError::InvalidOption {
            name: "q",
            reason: "must lie in [0, 1]",
        });
    }
    let x = axis.as_slice();
    let seg = |i: usize| 0.5 * (x[i + 1] - x[i]).abs() * (pos(y[i]) + pos(y[i + 1]));
    let total: f64 = (0..y.len().saturating_sub(1)).map(seg).sum();
    if !(total > 0.0) {
        return Ok(None);
    }
    // Cumulate from the short-wavelength end, whichever way the pixels run.
    let target = if axis.is_descending() {
        (1.0 - q) * total
    } else {
        q * total
    };
    let mut cum = 0.0;
    for i in 0..y.len() - 1 {
        let s = seg(i);
        if s > 0.0 && cum + s >= target {
            let t = ((target - cum) / s).clamp(0.0, 1.0);
            return Ok(Some(axis.nm_at(i as f64 + t)));
        }
        cum += s;
    }
    Ok(Some(axis.nm_at((y.len() - 1) as f64)))
}

/// Interquartile range (nm) of the positive emission: `lambda(0.75) - lambda(0.25)`.
///
/// # Errors
/// As [`emission_quantile_nm`].
pub fn iqr_nm<T: Sample>(axis: &WavelengthAxis<'_>, y: &[T]) -> Result<Option<f64>, SpectralError> {
    let lo = emission_quantile_nm(axis, y, 0.25)?;
    let hi = emission_quantile_nm(axis, y, 0.75)?;
    Ok(lo.zip(hi).map(|(a, b)| (b - a).abs()))
}

/// Fractional pixel where the cumulative positive integral (in pixel order) reaches the
/// fraction `q` of the total, using the chunk summaries to skip to the right chunk.
#[cfg(test)]
pub(crate) fn quantile_pixel<T: Sample>(y: &[T], h: &[f64], s: &Summary<T>, q: f64) -> Option<f64> {
    quantile_pixels(y, h, s, [q]).map(|[p]| p)
}

/// [`quantile_pixel`] for several fractions `qs` (ascending) in one walk: each search resumes
/// at the chunk where the previous one ended, which is where it would have arrived anyway
/// (every earlier chunk ends below the smaller target), so the results are identical to
/// separate searches. The chunk is found by binary search over the running sums per chunk
/// (`wcum`, added in chunk order as a walk from chunk to chunk would add them).
#[inline(always)]
pub(crate) fn quantile_pixels<T: Sample, const K: usize>(
    y: &[T],
    h: &[f64],
    s: &Summary<T>,
    qs: [f64; K],
) -> Option<[f64; K]> {
    let n = y.len();
    if !(s.integral_pos > 0.0 && s.integral_pos.is_finite()) || n < 2 {
        return None;
    }
    let mut out = [(n - 1) as f64; K];
    let chunks = s.wcum.len();
    let mut c = 0;
    for (slot, &q) in out.iter_mut().zip(&qs) {
        let target = q * s.integral_pos;
        // The first chunk whose end reaches the target lies at or before the first whose sum
        // alone does (the sums only grow); the half segment into the next chunk can make an
        // earlier one reach it.
        let mut cc = c + s.wcum[c..].partition_point(|&v| v < target);
        while cc > c && cum_at(y, h, s.wcum[cc - 1], (cc * CHUNK).min(n)) >= target {
            cc -= 1;
        }
        c = cc;
        // not reached: the last pixel (and so for every larger fraction)
        if c < chunks {
            let before = if c == 0 { 0.0 } else { s.wcum[c - 1] };
            if let Some(px) = crossing_from_chunk(y, h, c, before, target) {
                *slot = px;
            }
        }
    }
    Some(out)
}

/// The cumulative integral at pixel `end`: `sum`, the sum of `w * y+` before it, plus the half
/// segment into it.
#[inline(always)]
fn cum_at<T: Sample>(y: &[T], h: &[f64], sum: f64, end: usize) -> f64 {
    if end < y.len() {
        sum + h[end - 1] * pos(y[end])
    } else {
        sum
    }
}

/// The fractional pixel where the cumulative integral reaches `target`, searched pixel by pixel
/// from the start of chunk `c` (`before`: the sum of `w * y+` over the chunks before it);
/// `None` if it is not reached.
#[inline(always)]
fn crossing_from_chunk<T: Sample>(
    y: &[T],
    h: &[f64],
    c: usize,
    before: f64,
    target: f64,
) -> Option<f64> {
    let start = c * CHUNK;
    let cum = if start > 0 {
        cum_at(y, h, before, start)
    } else {
        0.0
    };
    T::quantile_cross(y, h, start, cum, target)
        .map(|(i, sum, seg)| i as f64 + ((target - sum) / seg).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_is_direction_independent() {
        let asc = [400.0, 401.0, 403.0, 406.0, 410.0];
        let desc: Vec<f64> = asc.iter().rev().copied().collect();
        let y = [1.0f64, 2.0, 4.0, 2.0, 1.0];
        let yr: Vec<f64> = y.iter().rev().copied().collect();
        let a = trapezoid(&WavelengthAxis::new(&asc).unwrap(), &y).unwrap();
        let d = trapezoid(&WavelengthAxis::new(&desc).unwrap(), &yr).unwrap();
        assert_eq!(a, 1.5 + 6.0 + 9.0 + 6.0);
        assert_eq!(a, d);
        assert!(trapezoid(&WavelengthAxis::new(&asc).unwrap(), &y[..3]).is_err());
    }

    /// [`quantile_pixels`] with its chunk found by walking from chunk to chunk, adding `wpos`
    /// in chunk order (the search the binary search over `wcum` replaced).
    fn quantiles_by_walk<const K: usize>(
        y: &[f32],
        h: &[f64],
        s: &Summary<f32>,
        qs: [f64; K],
    ) -> Option<[f64; K]> {
        let n = y.len();
        if !(s.integral_pos > 0.0 && s.integral_pos.is_finite()) || n < 2 {
            return None;
        }
        let mut out = [(n - 1) as f64; K];
        let chunks = s.wpos.len();
        let (mut c, mut wcum) = (0, 0.0);
        for (slot, &q) in out.iter_mut().zip(&qs) {
            let target = q * s.integral_pos;
            while c < chunks && cum_at(y, h, wcum + s.wpos[c], ((c + 1) * CHUNK).min(n)) < target {
                wcum += s.wpos[c];
                c += 1;
            }
            if c < chunks {
                if let Some(px) = crossing_from_chunk(y, h, c, wcum, target) {
                    *slot = px;
                }
            }
        }
        Some(out)
    }

    #[test]
    fn quantiles_in_the_half_segment_before_a_chunk() {
        // All emission in one pixel at the start of a chunk (or super-chunk): half of it lies
        // in the segment before that pixel, in the previous chunk, whose own sum is zero. The
        // quartile must be found there (pixel k - 0.5), not at the pixel itself.
        let x: Vec<f64> = (0..600).map(|i| 400.0 + i as f64).collect();
        let axis = WavelengthAxis::new(&x).unwrap();
        let mut h = Vec::new();
        axis.half_steps(&mut h);
        let w = Weights::from_half_steps(&h);
        for k in [32usize, 64, 256, 288] {
            let mut y = vec![0.0f32; x.len()];
            y[k] = 1000.0;
            let mut s = Summary::<f32>::default();
            s.compute(&y, Some(&w));
            let want = emission_quantile_nm(&axis, &y, 0.25).unwrap().unwrap();
            assert!((want - (x[k] - 0.5)).abs() < 1e-9, "k={k}: {want}");
            let got = quantile_pixel(&y, &h, &s, 0.25).unwrap();
            assert!((axis.nm_at(got) - want).abs() < 1e-9, "k={k}: {got}");
        }
    }

    #[test]
    fn quantiles_of_a_box() {
        // A box of 5 from 420 to 460 nm on a 1 nm grid: with the trapezoid's half-pixel ramps
        // the total is 2.5 + 200 + 2.5, so the quartiles sit at 429.75 and 450.25 nm.
        let x: Vec<f64> = (0..=100).map(|i| 400.0 + i as f64).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|&w| {
                if (420.0..=460.0).contains(&w) {
                    5.0
                } else {
                    0.0
                }
            })
            .collect();
        let axis = WavelengthAxis::new(&x).unwrap();
        let q1 = emission_quantile_nm(&axis, &y, 0.25).unwrap().unwrap();
        assert!((q1 - 429.75).abs() < 1e-9, "{q1}");
        let iqr = iqr_nm(&axis, &y).unwrap().unwrap();
        assert!((iqr - 20.5).abs() < 1e-9, "{iqr}");
        let xr: Vec<f64> = x.iter().rev().copied().collect();
        let yr: Vec<f64> = y.iter().rev().copied().collect();
        let axr = WavelengthAxis::new(&xr).unwrap();
        assert!((emission_quantile_nm(&axr, &yr, 0.25).unwrap().unwrap() - q1).abs() < 1e-9);
        assert!(iqr_nm(&axis, &vec![-1.0; 101]).unwrap().is_none());
        assert!(emission_quantile_nm(&axis, &y, 1.5).is_err());
    }

    #[test]
    fn summary_path_matches_direct_path() {
        // Non-uniform and evenly spaced (linspace) axes, negative pixels, lengths
        // around chunk and super-chunk boundaries.
        for (n, even) in [2usize, 3, 31, 32, 33, 64, 65, 256, 257, 1000, 2048, 2100]
            .into_iter()
            .flat_map(|n| [(n, false), (n, true)])
        {
            let x: Vec<f64> = (0..n)
                .map(|i| match even {
                    false => 300.0 + i as f64 + 1e-3 * (i * i) as f64,
                    true => 300.0 + 600.0 * i as f64 / (n - 1).max(1) as f64,
                })
                .collect();
            let y: Vec<f32> = (0..n)
                .map(|i| (i as f32 * 0.37).sin() * 10.0 + 2.0)
                .collect();
            let axis = WavelengthAxis::new(&x).unwrap();
            let mut h = Vec::new();
            axis.half_steps(&mut h);
            let w = Weights::from_half_steps(&h);
            // The dispatching pass (AVX2 on this CPU: f32 sums within chunks) and the portable
            // pass (f64 throughout) against the direct formulas.
            for portable in [false, true] {
                let mut s = Summary::<f32>::default();
                if portable {
                    s.compute_portable(&y, Some(&w.w64));
                } else {
                    s.compute(&y, Some(&w));
                }
                let direct = trapezoid(&axis, &y).unwrap();
                let tol = if portable { 1e-9 } else { 1e-6 };
                assert!(
                    (s.integral - direct).abs() <= tol * direct.abs().max(1.0),
                    "n={n} portable={portable}"
                );
                // One walk for several fractions gives what separate walks give.
                let qs = [0.1, 0.25, 0.5, 0.75, 0.9];
                let joint = quantile_pixels(&y, &h, &s, qs).unwrap();
                for (q, j) in qs.into_iter().zip(joint) {
                    assert_eq!(Some(j), quantile_pixel(&y, &h, &s, q), "n={n} q={q}");
                }
                // The binary search over the running sums finds what the chunk-by-chunk walk
                // finds.
                assert_eq!(s.wcum.len(), s.wpos.len(), "n={n}");
                assert_eq!(quantiles_by_walk(&y, &h, &s, qs), Some(joint), "n={n}");
                for q in [0.1, 0.25, 0.5, 0.75, 0.9] {
                    let want = emission_quantile_nm(&axis, &y, q).unwrap().unwrap();
                    let got = axis.nm_at(quantile_pixel(&y, &h, &s, q).unwrap());
                    // (in pixels: 1e-4 nm on the 1-5 nm pixels of the quadratic axis)
                    let px = (x[n - 1] - x[0]).abs() / (n - 1).max(1) as f64;
                    let tol = if portable { 1e-9 } else { 1e-4 } * px.max(1.0);
                    assert!(
                        (got - want).abs() < tol,
                        "n={n} q={q} portable={portable}: {got} {want}"
                    );
                }
            }
        }
    }
}
