//! Velocity from the cross-correlation of the two sensor traces, independent of interfaces.
//!
//! Sensor B sees the same light pattern as sensor A one transit time later, so the lag that
//! maximises `c[k] = sum_t a[t] b[t + k]` is the transit time whatever the segment shape. Both
//! traces are detrended (least-squares line, which also removes a linear drift of the light
//! level), NaN samples become 0 after detrending, and the correlation is computed for every lag
//! at once: one complex FFT of both real traces packed as `a + i b`, the cross spectrum, and
//! its inverse, which is real and so is taken as one complex FFT of half the size (even and odd
//! lags as real and imaginary parts); the length is an even 2-3-5-smooth `N >= n + max_lag + 1`,
//! so no lag in range wraps around.
//! The integer peak in the lag range (both signs: a negative lag means swapped sensors) is
//! refined by a parabola through it and its two neighbours. The same numbers as
//! `scipy.signal.correlate(detrend(b), detrend(a), "full")` at `correlation_lags` `k`.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use super::interfaces::TraceSample;

/// The cross-correlation peak of two traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XcorrPeak {
    /// Lag of B behind A at the peak, in samples, with parabolic sub-sample refinement
    /// (negative: B leads A).
    pub lag_samples: f64,
    /// The integer lag of the largest correlation in range.
    pub lag_index: i64,
    /// Correlation coefficient at the integer peak: `c[k] / sqrt(sum a^2 * sum b^2)` of the
    /// detrended traces, in [-1, 1]. Low values mean the lag is not trustworthy.
    pub coefficient: f64,
    /// The peak sits on an edge of the searched lag range: the true peak may lie outside it.
    pub at_limit: bool,
}

/// Reusable FFT plans and buffers of the cross-correlation; one per thread.
pub struct CrossCorrelator {
    planner: FftPlanner<f64>,
    /// FFT length, forward plan (length N), inverse plan (N / 2), twiddles `e^{2 pi i k / N}`
    /// for `k < N / 2`.
    plans: Option<Plans>,
    buf: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

struct Plans {
    len: usize,
    forward: Arc<dyn Fft<f64>>,
    inverse_half: Arc<dyn Fft<f64>>,
    twiddles: Vec<Complex<f64>>,
}

impl Default for CrossCorrelator {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CrossCorrelator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossCorrelator")
            .field("fft_len", &self.plans.as_ref().map(|p| p.len))
            .finish()
    }
}

impl CrossCorrelator {
    /// A correlator without plans; plans are made (and kept) for each FFT size used.
    pub fn new() -> Self {
        Self {
            planner: FftPlanner::new(),
            plans: None,
            buf: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The correlation peak of `a` and `b` over lags `min_lag ..= max_lag` and
    /// `-max_lag ..= -min_lag` (samples). Traces of different lengths are cut to the shorter.
    ///
    /// Returns `None` when there is nothing to correlate: fewer than three samples, fewer than
    /// two finite samples in a trace, a trace that is exactly linear (zero energy after
    /// detrending), or an empty lag range (`min_lag > max_lag`, or `min_lag` beyond the
    /// trace). `max_lag` is cut to `n - 2`.
    ///
    /// ```
    /// use flowdaq_analytics::flow::CrossCorrelator;
    ///
    /// // An irregular pulse train, and the same train 37 samples later.
    /// let a: Vec<f64> = (0..2000).map(|i| ((i * i / 97) % 7 < 3) as u8 as f64).collect();
    /// let b: Vec<f64> = (0..2000).map(|i| if i < 37 { 0.0 } else { a[i - 37] }).collect();
    /// let p = CrossCorrelator::new().peak(&a, &b, 1, 500).unwrap();
    /// assert_eq!(p.lag_index, 37);
    /// assert!((p.lag_samples - 37.0).abs() < 0.5 && !p.at_limit);
    /// ```
    pub fn peak<T: TraceSample>(
        &mut self,
        a: &[T],
        b: &[T],
        min_lag: usize,
        max_lag: usize,
    ) -> Option<XcorrPeak> {
        let n = a.len().min(b.len());
        if n < 3 {
            return None;
        }
        let max_lag = max_lag.min(n - 2);
        if min_lag > max_lag {
            return None;
        }
        // Even, for the half-length inverse.
        let len = 2 * fft_len((n + max_lag + 2) / 2);
        self.plan(len);
        let Some(plans) = &self.plans else {
            return None;
        };
        self.buf.clear();
        self.buf.resize(len, Complex::new(0.0, 0.0));
        let (ta, tb) = (linear_fit(&a[..n])?, linear_fit(&b[..n])?);
        let (mut ea, mut eb) = (0.0, 0.0);
        for (t, (z, (&x, &y))) in self.buf.iter_mut().zip(a.iter().zip(b)).enumerate() {
            let t = t as f64;
            let (x, y) = (x.to_f64(), y.to_f64());
            // Non-finite samples sit on the trend line: they contribute nothing.
            let x = if x.is_finite() { x - ta.at(t) } else { 0.0 };
            let y = if y.is_finite() { y - tb.at(t) } else { 0.0 };
            ea += x * x;
            eb += y * y;
            *z = Complex::new(x, y);
        }
        if !(ea > 0.0 && eb > 0.0) {
            return None;
        }
        let scratch_len = plans
            .forward
            .get_inplace_scratch_len()
            .max(plans.inverse_half.get_inplace_scratch_len());
        if self.scratch.len() < scratch_len {
            self.scratch.resize(scratch_len, Complex::new(0.0, 0.0));
        }
        plans
            .forward
            .process_with_scratch(&mut self.buf, &mut self.scratch);
        cross_spectrum_in_place(&mut self.buf);
        half_length_spectrum_in_place(&mut self.buf, &plans.twiddles);
        let half = len / 2;
        plans
            .inverse_half
            .process_with_scratch(&mut self.buf[..half], &mut self.scratch);
        // c[t] = Re z[t / 2] for even t, Im z[t / 2] for odd t (unnormalised; the common factor
        // len cancels everywhere below).
        let buf = &self.buf;
        let at = |k: i64| -> f64 {
            let t = k.rem_euclid(len as i64) as usize;
            let z = buf[t / 2];
            if t.is_multiple_of(2) {
                z.re
            } else {
                z.im
            }
        };
        // Lag k sits at index k, lag -k at index len - k (max_lag < len); ties go to the smaller |lag|, then the positive one.
        let value = |t: usize| -> f64 {
            let z = buf[t >> 1];
            if t & 1 == 0 {
                z.re
            } else {
                z.im
            }
        };
        let mut best = (0i64, f64::NEG_INFINITY);
        for k in min_lag..=max_lag {
            let cp = value(k);
            let cn = value(if k == 0 { 0 } else { len - k });
            if cp > best.1 {
                best = (k as i64, cp);
            }
            if cn > best.1 {
                best = (-(k as i64), cn);
            }
        }
        let (lo, hi) = (min_lag as i64, max_lag as i64);
        let (k, c0) = best;
        if !c0.is_finite() {
            return None;
        }
        let offset = parabolic_offset(at(k - 1), c0, at(k + 1));
        Some(XcorrPeak {
            lag_samples: k as f64 + offset,
            lag_index: k,
            coefficient: c0 / len as f64 / (ea * eb).sqrt(),
            at_limit: k.abs() == hi || (lo > 0 && k.abs() == lo),
        })
    }

    /// Makes sure the plans are for length `len` (even).
    fn plan(&mut self, len: usize) {
        if self.plans.as_ref().is_some_and(|p| p.len == len) {
            return;
        }
        let step = std::f64::consts::TAU / len as f64;
        self.plans = Some(Plans {
            len,
            forward: self.planner.plan_fft_forward(len),
            inverse_half: self.planner.plan_fft_inverse(len / 2),
            twiddles: (0..len / 2)
                .map(|k| Complex::from_polar(1.0, step * k as f64))
                .collect(),
        });
    }
}

/// Turns `Z = FFT(a + i b)` into the cross spectrum `conj(A) B` of the real traces `a`, `b`,
/// using `A[k] = (Z[k] + conj Z[-k]) / 2`, `B[k] = (Z[k] - conj Z[-k]) / 2i`. The result is
/// Hermitian (its inverse FFT is real), so pairs `k`, `N - k` are written together.
fn cross_spectrum_in_place(z: &mut [Complex<f64>]) {
    let len = z.len();
    for k in 0..=len / 2 {
        let m = if k == 0 { 0 } else { len - k };
        let zk = z[k];
        let zm = z[m].conj();
        let a = (zk + zm) * 0.5;
        // (zk - zm) / 2i = -i (zk - zm) / 2
        let d = zk - zm;
        let b = Complex::new(d.im * 0.5, -d.re * 0.5);
        let c = a.conj() * b;
        z[k] = c;
        z[m] = c.conj();
    }
}

/// Folds a spectrum `C` of even length `N` whose inverse FFT `c` is real into the first `N / 2`
/// slots so that their inverse FFT of length `N / 2` is `z[m] = c[2m] + i c[2m + 1]`:
/// `Z[k] = (C[k] + C[k + N/2]) + i (C[k] - C[k + N/2]) e^{2 pi i k / N}` (the even samples'
/// spectrum plus `i` times the odd samples').
fn half_length_spectrum_in_place(c: &mut [Complex<f64>], twiddles: &[Complex<f64>]) {
    let half = c.len() / 2;
    let (lo, hi) = c.split_at_mut(half);
    for ((x, &y), &w) in lo.iter_mut().zip(hi.iter()).zip(twiddles) {
        let even = *x + y;
        let odd = (*x - y) * w;
        *x = Complex::new(even.re - odd.im, even.im + odd.re);
    }
}

/// Vertex offset of the parabola through `(-1, ym)`, `(0, y0)`, `(1, yp)`, in [-0.5, 0.5] for
/// a local maximum; 0 when the three points are not concave.
pub fn parabolic_offset(ym: f64, y0: f64, yp: f64) -> f64 {
    let den = ym - 2.0 * y0 + yp;
    if den < 0.0 {
        (0.5 * (ym - yp) / den).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// The cheapest `2^a 3^b 5^c >= n` to transform: rustfft's radix-3 and radix-5 passes cost
/// about 10 % more per point than its radix-2/4 ones (measured on this crate's bench machine),
/// so the length minimising `len * (1 + 0.1 * (b + c))` is taken (10240 rather than 10000).
pub fn fft_len(n: usize) -> usize {
    let n = n.max(1);
    let limit = n.next_power_of_two();
    let mut best = (limit as f64, limit);
    let mut p5 = 1usize;
    let mut c = 0u32;
    while p5 <= limit {
        let mut p35 = p5;
        let mut b = 0u32;
        while p35 <= limit {
            let mut p = p35;
            while p < n {
                p *= 2;
            }
            let cost = p as f64 * (1.0 + 0.1 * f64::from(b + c));
            if cost < best.0 {
                best = (cost, p);
            }
            p35 *= 3;
            b += 1;
        }
        p5 *= 5;
        c += 1;
    }
    best.1
}

/// A least-squares line over sample indices.
#[derive(Debug, Clone, Copy)]
struct Line {
    intercept: f64,
    slope: f64,
}

impl Line {
    #[inline(always)]
    fn at(&self, t: f64) -> f64 {
        self.intercept + self.slope * t
    }
}

/// Least-squares line through the finite samples (`None` below two finite samples). One pass
/// when every sample is finite (the index sums are closed-form), two otherwise; computed about
/// the mean index for accuracy.
fn linear_fit<T: TraceSample>(y: &[T]) -> Option<Line> {
    let (mut count, mut sy, mut sty) = (0usize, 0.0f64, 0.0f64);
    for (t, &v) in y.iter().enumerate() {
        let v = v.to_f64();
        let ok = v.is_finite();
        count += usize::from(ok);
        let v = if ok { v } else { 0.0 };
        sy += v;
        sty += t as f64 * v;
    }
    if count < 2 {
        return None;
    }
    let n = count as f64;
    let (tm, stt) = if count == y.len() {
        // sum t = n (n - 1) / 2, sum (t - tm)^2 = n (n^2 - 1) / 12.
        (0.5 * (n - 1.0), n * (n * n - 1.0) / 12.0)
    } else {
        let (mut st, mut stt) = (0.0f64, 0.0f64);
        for (t, &v) in y.iter().enumerate() {
            if v.to_f64().is_finite() {
                st += t as f64;
                stt += (t as f64) * (t as f64);
            }
        }
        let tm = st / n;
        (tm, stt - n * tm * tm)
    };
    let ym = sy / n;
    // sum (t - tm)(y - ym) = sum t y - tm sum y.
    let slope = if stt > 0.0 {
        (sty - tm * sy) / stt
    } else {
        0.0
    };
    Some(Line {
        intercept: ym - slope * tm,
        slope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct O(n * lags) correlation of detrended traces, for comparison.
    fn direct(a: &[f64], b: &[f64], k: i64) -> f64 {
        let (la, lb) = (linear_fit(a).unwrap(), linear_fit(b).unwrap());
        let n = a.len() as i64;
        (0..n)
            .filter(|t| (0..n).contains(&(t + k)))
            .map(|t| {
                (a[t as usize] - la.at(t as f64)) * (b[(t + k) as usize] - lb.at((t + k) as f64))
            })
            .sum()
    }

    #[test]
    fn fft_correlation_matches_direct_sum() {
        let a: Vec<f64> = (0..300)
            .map(|i| ((i * 37 % 11) as f64).sin() + 0.01 * i as f64)
            .collect();
        let b: Vec<f64> = (0..300).map(|i| ((i * 53 % 13) as f64).cos()).collect();
        let mut x = CrossCorrelator::new();
        let p = x.peak(&a, &b, 0, 40).unwrap();
        let (mut best, mut bk) = (f64::NEG_INFINITY, 0);
        for k in -40..=40i64 {
            let c = direct(&a, &b, k);
            if c > best {
                (best, bk) = (c, k);
            }
        }
        assert_eq!(p.lag_index, bk);
        let ea = direct(&a, &a, 0);
        let eb = direct(&b, &b, 0);
        assert!((p.coefficient - best / (ea * eb).sqrt()).abs() < 1e-9);
        let want =
            bk as f64 + parabolic_offset(direct(&a, &b, bk - 1), best, direct(&a, &b, bk + 1));
        assert!((p.lag_samples - want).abs() < 1e-9);
    }

    #[test]
    fn parabola_and_fft_sizes() {
        // y = -(x - 0.3)^2 sampled at -1, 0, 1.
        let f = |x: f64| -(x - 0.3f64).powi(2);
        assert!((parabolic_offset(f(-1.0), f(0.0), f(1.0)) - 0.3).abs() < 1e-12);
        assert_eq!(parabolic_offset(1.0, 1.0, 1.0), 0.0);
        assert_eq!(fft_len(1), 1);
        assert_eq!(fft_len(7), 8);
        assert_eq!(fft_len(11), 12);
        assert_eq!(fft_len(1001), 1024);
        assert_eq!(fft_len(1025), 1152);
        assert_eq!(fft_len(10_000), 10_240);
    }

    #[test]
    fn degenerate_inputs_are_none() {
        let mut x = CrossCorrelator::new();
        assert!(x.peak::<f64>(&[], &[], 0, 10).is_none());
        let line: Vec<f64> = (0..100).map(|i| 2.0 * i as f64).collect();
        assert!(x.peak(&line, &line, 1, 10).is_none());
        let nan = vec![f64::NAN; 100];
        assert!(x.peak(&nan, &line, 1, 10).is_none());
        let a: Vec<f64> = (0..100).map(|i| (i % 10) as f64).collect();
        assert!(x.peak(&a, &a, 99, 200).is_none());
    }
}
