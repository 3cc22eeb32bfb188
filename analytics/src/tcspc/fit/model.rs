//! The reconvolution model: IRF (x) sum of exponentials, with the tails of earlier pulses.
//!
//! The IRF is taken as constant within each histogram bin and the decay as continuous, so the
//! expected counts of a bin are an exact double integral; that makes the convolution a
//! first-order recursion, O(N) per component with analytic derivatives. An FFT convolution
//! (O(N log N), and no derivative for free) does not pay for exponentials. All times are in bins.

use super::special::{normal_cdf_diff_from_tails, normal_tail};

/// Smallest and largest lifetime the model evaluates, in bins (fits clamp into this range).
pub(crate) const TAU_MIN_BINS: f64 = 0.02;

/// The shape of the instrument response.
#[derive(Debug, Clone)]
pub(crate) enum IrfShape {
    /// A measured IRF, normalised to unit sum, shifted by linear interpolation.
    Measured(Vec<f64>),
    /// A Gaussian of standard deviation `sigma` bins centred at `center` bins (before shift),
    /// integrated over each bin.
    Gaussian { sigma: f64, center: f64 },
}

/// `q + expm1(-q)`, i.e. `q - (1 - exp(-q))`, without cancellation for small `q`.
fn q_minus_one_minus_exp(q: f64) -> f64 {
    if q < 1e-3 {
        q * q * (0.5 - q * (1.0 / 6.0 - q * (1.0 / 24.0 - q / 120.0)))
    } else {
        q + (-q).exp_m1()
    }
}

impl IrfShape {
    /// Writes the IRF shifted right by `shift` bins into `irf` and, if asked, its derivative
    /// with respect to `shift` into `dirf`. Returns the bins `[lo, hi)` outside which both are
    /// zero.
    pub(crate) fn eval(
        &self,
        shift: f64,
        irf: &mut [f64],
        dirf: Option<&mut [f64]>,
    ) -> (usize, usize) {
        let n = irf.len();
        match self {
            IrfShape::Measured(base) => {
                let whole = shift.floor();
                let f = shift - whole;
                let whole = whole as i64;
                let at = |j: i64| -> f64 {
                    if j >= 0 && (j as usize) < n {
                        base[j as usize]
                    } else {
                        0.0
                    }
                };
                for (j, v) in irf.iter_mut().enumerate() {
                    let src = j as i64 - whole;
                    *v = (1.0 - f) * at(src) + f * at(src - 1);
                }
                if let Some(d) = dirf {
                    for (j, v) in d.iter_mut().enumerate() {
                        let src = j as i64 - whole;
                        *v = at(src - 1) - at(src);
                    }
                }
                // The shifted IRF and its derivative are zero where base[j - whole] and
                // base[j - whole - 1] both are.
                support(irf)
            }
            IrfShape::Gaussian { sigma, center } => {
                // One erfc per bin edge over +-9 sigma (the tails beyond are below 1e-18).
                let c = center + shift;
                let reach = 9.0 * sigma + 2.0;
                let lo = ((c - reach).floor().max(0.0) as usize).min(n);
                let hi = ((c + reach).ceil().max(0.0) as usize).min(n);
                irf.iter_mut().for_each(|v| *v = 0.0);
                let z = |j: usize| (j as f64 - c) / sigma;
                let mut za = z(lo);
                let mut ta = normal_tail(za);
                for (j, v) in irf.iter_mut().enumerate().take(hi).skip(lo) {
                    let zb = z(j + 1);
                    let tb = normal_tail(zb);
                    *v = normal_cdf_diff_from_tails(za, ta, zb, tb);
                    (za, ta) = (zb, tb);
                }
                if let Some(d) = dirf {
                    d.iter_mut().for_each(|v| *v = 0.0);
                    let pdf = |z: f64| {
                        (-0.5 * z * z).exp()
                            * (0.5
                                * std::f64::consts::FRAC_2_SQRT_PI
                                * std::f64::consts::FRAC_1_SQRT_2)
                    };
                    let mut pa = pdf(z(lo));
                    for (j, v) in d.iter_mut().enumerate().take(hi).skip(lo) {
                        let pb = pdf(z(j + 1));
                        *v = -(pb - pa) / sigma;
                        pa = pb;
                    }
                }
                (lo, hi)
            }
        }
    }
}

/// First index and one past the last index of the nonzero entries of `v` (`(n, n)` if none).
pub(crate) fn support(v: &[f64]) -> (usize, usize) {
    let n = v.len();
    let lo = v.iter().position(|&x| x != 0.0).unwrap_or(n);
    let hi = v.iter().rposition(|&x| x != 0.0).map_or(lo, |i| i + 1);
    (lo, hi)
}

/// Writes `out[j] = e^j`. Four interleaved multiplication chains (step `e^4`) instead of one,
/// so the loop runs at multiply throughput rather than latency.
#[inline(always)]
fn powers(e: f64, out: &mut [f64]) {
    let e2 = e * e;
    let e4 = e2 * e2;
    let mut p = [1.0, e, e2, e2 * e];
    let mut chunks = out.chunks_exact_mut(4);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&p);
        for v in &mut p {
            *v *= e4;
        }
    }
    for (o, v) in chunks.into_remainder().iter_mut().zip(p) {
        *o = v;
    }
}

/// Convolves the unit-amplitude decay `exp(-t / tau)` (tau in bins) with a bin-constant `irf`:
/// `out[k]` is the expected count in bin `k` for amplitude 1 (counts per bin at t = 0).
///
/// With `period` (bins, at least `irf.len()`), the decay is periodic: every earlier pulse adds
/// its tail, `sum_m exp(-(t + m T) / tau)`. If `dout` is given it receives `d out / d tau`.
///
/// The recursions only run over the IRF's nonzero support; before and after it the curves are
/// geometric sequences, written from a table of powers (most of a histogram is decay tail).
#[cfg(test)]
pub(crate) fn exp_conv(
    irf: &[f64],
    tau: f64,
    period: Option<f64>,
    out: &mut [f64],
    dout: Option<&mut [f64]>,
) {
    exp_conv_on(irf, support(irf), tau, period, out, dout)
}

/// [`exp_conv`] for an `irf` known to be zero outside `[lo, hi)` (as [`IrfShape::eval`]
/// returns), which saves scanning for it.
#[inline(always)]
pub(crate) fn exp_conv_on(
    irf: &[f64],
    (lo, hi): (usize, usize),
    tau: f64,
    period: Option<f64>,
    out: &mut [f64],
    dout: Option<&mut [f64]>,
) {
    let n = irf.len();
    debug_assert!(lo <= hi && hi <= n);
    let tau = tau.max(TAU_MIN_BINS);
    let q = 1.0 / tau;
    let e = (-q).exp();
    let one_minus_e = -(-q).exp_m1();
    let tt = tau * tau;
    // K0: same-bin kernel, K1 * e^(m-1): kernel at a lag of m >= 1 bins.
    let k0 = tt * q_minus_one_minus_exp(q);
    let k1 = tt * one_minus_e * one_minus_e;
    let de = e / tt;
    let dk0 = 1.0 - 2.0 * tau * one_minus_e + e;
    let dk1 = 2.0 * tau * one_minus_e * one_minus_e - 2.0 * one_minus_e * e;
    // Forward scale: K1 for one pulse; with earlier pulses the lag-m kernel sums over pulses,
    // s = K1 / (1 - rho) with rho = exp(-T / tau), and a backward pass adds the wrapped part.
    let periodic = period.map(|p| {
        let p = p.max(n as f64);
        let one_minus_rho = -(-p * q).exp_m1();
        let rho = 1.0 - one_minus_rho;
        let s = k1 / one_minus_rho;
        let drho = rho * p / tt;
        let ds = dk1 / one_minus_rho + k1 * drho / (one_minus_rho * one_minus_rho);
        // Backward recursion C_k = e^q (w0 irf_k + C_{k+1}) with w0 = rho, written with the
        // combined exponent w = rho e^q = exp(-(p - 1) q) so nothing overflows.
        let g = q.exp();
        let w = (-(p - 1.0) * q).exp();
        Backward {
            s,
            ds,
            g,
            w,
            dg: -g / tt,
            dw: w * (p - 1.0) / tt,
        }
    });
    let (kf, dkf) = periodic.as_ref().map_or((k1, dk1), |b| (b.s, b.ds));
    out[..lo].fill(0.0);
    match dout {
        None => {
            let mut a = 0.0;
            for k in lo..hi {
                out[k] = irf[k] * k0 + kf * a;
                a = e * a + irf[k];
            }
            // After the support: out[hi + j] = kf a e^j.
            let tail = &mut out[hi..];
            powers(e, tail);
            let v = kf * a;
            tail.iter_mut().for_each(|t| *t *= v);
            if let Some(b) = periodic {
                let mut c = 0.0;
                for k in (lo..hi).rev() {
                    c = b.w * irf[k] + b.g * c;
                    out[k] += b.s * c;
                }
                for o in out[..lo].iter_mut().rev() {
                    c *= b.g;
                    *o = b.s * c;
                }
            }
        }
        Some(dout) => {
            dout[..lo].fill(0.0);
            let (mut a, mut da) = (0.0, 0.0);
            for k in lo..hi {
                out[k] = irf[k] * k0 + kf * a;
                dout[k] = irf[k] * dk0 + dkf * a + kf * da;
                da = e * da + de * a;
                a = e * a + irf[k];
            }
            // After the support a_j = A e^j and da_j = DA e^j + j de A e^(j-1), so
            // dout[hi + j] = (dkf A + kf DA) e^j + kf de A j e^(j-1).
            let tail = &mut out[hi..];
            powers(e, tail);
            let dtail = &mut dout[hi..];
            let (c1, c2) = (dkf * a + kf * da, kf * de * a);
            if let (Some(d0), Some(t0)) = (dtail.first_mut(), tail.first()) {
                *d0 = c1 * t0;
            }
            // j counts in eight lanes so no single add chain paces the loop.
            let mut lane = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
            let len = tail.len().saturating_sub(1);
            let mut d8 = dtail.get_mut(1..).unwrap_or_default().chunks_exact_mut(8);
            let mut t8 = tail
                .get(1..)
                .unwrap_or_default()
                .chunks_exact(8)
                .zip(tail[..len].chunks_exact(8));
            for (d, (now, prev)) in (&mut d8).zip(&mut t8) {
                for i in 0..8 {
                    d[i] = c1 * now[i] + c2 * lane[i] * prev[i];
                    lane[i] += 8.0;
                }
            }
            let done = len - len % 8;
            for j in done + 1..tail.len() {
                dtail[j] = c1 * tail[j] + c2 * j as f64 * tail[j - 1];
            }
            let v = kf * a;
            tail.iter_mut().for_each(|t| *t *= v);
            if let Some(b) = periodic {
                let (mut c, mut dc) = (0.0, 0.0);
                for k in (lo..hi).rev() {
                    dc = b.dw * irf[k] + b.dg * c + b.g * dc;
                    c = b.w * irf[k] + b.g * c;
                    out[k] += b.s * c;
                    dout[k] += b.ds * c + b.s * dc;
                }
                for k in (0..lo).rev() {
                    dc = b.dg * c + b.g * dc;
                    c *= b.g;
                    out[k] = b.s * c;
                    dout[k] = b.ds * c + b.s * dc;
                }
            }
        }
    }
}

/// Constants of the backward (earlier pulses) pass of [`exp_conv`] and their tau derivatives.
struct Backward {
    s: f64,
    ds: f64,
    g: f64,
    w: f64,
    dg: f64,
    dw: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference by quadrature: midpoint rule over the count bin, the IRF bin integrated in closed
    /// form (so the integrand is continuous and the midpoint rule converges as h^2).
    fn brute(irf: &[f64], tau: f64, period: Option<f64>) -> Vec<f64> {
        let n = irf.len();
        let steps = 2000;
        let h = 1.0 / steps as f64;
        let pulses = if period.is_some() { 12 } else { 1 };
        let mut out = vec![0.0; n];
        for (k, o) in out.iter_mut().enumerate() {
            for (j, &r) in irf.iter().enumerate() {
                if r == 0.0 {
                    continue;
                }
                let mut acc = 0.0;
                for m in 0..pulses {
                    let shift = m as f64 * period.unwrap_or(0.0);
                    for xi in 0..steps {
                        // Emission at y in [j, j + 1), detection at x + shift: lag >= 0 needs y <= x'.
                        let x = k as f64 + (xi as f64 + 0.5) * h + shift;
                        let hi = (j as f64 + 1.0).min(x);
                        if hi > j as f64 {
                            acc +=
                                h * tau * ((-(x - hi) / tau).exp() - (-(x - j as f64) / tau).exp());
                        }
                    }
                }
                *o += r * acc;
            }
        }
        out
    }

    #[test]
    fn recursion_matches_quadrature_with_and_without_period() {
        let irf = [0.0, 0.2, 0.5, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        for period in [None, Some(12.0)] {
            let mut out = vec![0.0; irf.len()];
            exp_conv(&irf, 3.0, period, &mut out, None);
            let want = brute(&irf, 3.0, period);
            for (g, w) in out.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-6 * w.max(0.01),
                    "{period:?}: {out:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn tau_derivative_matches_finite_difference() {
        // Full support, and a compact one (zero head and tail: the geometric paths).
        let full: Vec<f64> = (0..64)
            .map(|k| (-((k as f64 - 10.0) / 2.0).powi(2)).exp())
            .collect();
        let compact: Vec<f64> = full
            .iter()
            .map(|&v| if v > 1e-3 { v } else { 0.0 })
            .collect();
        assert!(compact[0] == 0.0 && compact[63] == 0.0 && compact[10] > 0.0);
        for (irf, period) in [
            (&full, None),
            (&full, Some(80.0)),
            (&compact, None),
            (&compact, Some(80.0)),
        ] {
            for tau in [0.3, 5.0, 200.0] {
                let mut out = vec![0.0; 64];
                let mut d = vec![0.0; 64];
                exp_conv(irf, tau, period, &mut out, Some(&mut d));
                let mut plain = vec![0.0; 64];
                exp_conv(irf, tau, period, &mut plain, None);
                for (a, b) in out.iter().zip(&plain) {
                    assert!((a - b).abs() <= 1e-12 * a.abs(), "{a} vs {b}");
                }
                let (mut up, mut dn) = (vec![0.0; 64], vec![0.0; 64]);
                let h = tau * 1e-6;
                exp_conv(irf, tau + h, period, &mut up, None);
                exp_conv(irf, tau - h, period, &mut dn, None);
                for k in 0..64 {
                    let fd = (up[k] - dn[k]) / (2.0 * h);
                    assert!(
                        (fd - d[k]).abs() <= 1e-5 * (fd.abs() + 1e-6),
                        "tau {tau} {period:?} k {k}: {fd} vs {}",
                        d[k]
                    );
                }
            }
        }
    }

    #[test]
    fn gaussian_irf_sums_to_one_and_shift_derivative_is_right() {
        let shape = IrfShape::Gaussian {
            sigma: 2.5,
            center: 30.0,
        };
        let mut irf = vec![0.0; 100];
        let mut d = vec![0.0; 100];
        shape.eval(0.3, &mut irf, Some(&mut d));
        assert!((irf.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let (mut up, mut dn) = (vec![0.0; 100], vec![0.0; 100]);
        shape.eval(0.3 + 1e-6, &mut up, None);
        shape.eval(0.3 - 1e-6, &mut dn, None);
        for k in 0..100 {
            assert!(((up[k] - dn[k]) / 2e-6 - d[k]).abs() < 1e-7);
        }
    }

    #[test]
    fn measured_irf_shift_interpolates_linearly() {
        let shape = IrfShape::Measured(vec![0.0, 1.0, 0.0, 0.0]);
        let mut irf = vec![0.0; 4];
        shape.eval(1.25, &mut irf, None);
        assert_eq!(irf, vec![0.0, 0.0, 0.75, 0.25]);
    }
}
