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
    /// with respect to `shift` into `dirf`.
    pub(crate) fn eval(&self, shift: f64, irf: &mut [f64], dirf: Option<&mut [f64]>) {
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
            }
        }
    }
}

/// Convolves the unit-amplitude decay `exp(-t / tau)` (tau in bins) with a bin-constant `irf`:
/// `out[k]` is the expected count in bin `k` for amplitude 1 (counts per bin at t = 0).
///
/// With `period` (bins, at least `irf.len()`), the decay is periodic: every earlier pulse adds
/// its tail, `sum_m exp(-(t + m T) / tau)`. If `dout` is given it receives `d out / d tau`.
pub(crate) fn exp_conv(
    irf: &[f64],
    tau: f64,
    period: Option<f64>,
    out: &mut [f64],
    dout: Option<&mut [f64]>,
) {
    let n = irf.len();
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
    match period {
        None => {
            let (mut a, mut da) = (0.0, 0.0);
            match dout {
                None => {
                    for k in 0..n {
                        out[k] = irf[k] * k0 + k1 * a;
                        a = e * a + irf[k];
                    }
                }
                Some(dout) => {
                    for k in 0..n {
                        out[k] = irf[k] * k0 + k1 * a;
                        dout[k] = irf[k] * dk0 + dk1 * a + k1 * da;
                        da = e * da + de * a;
                        a = e * a + irf[k];
                    }
                }
            }
        }
        Some(p) => {
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
            let dg = -g / tt;
            let dw = w * (p - 1.0) / tt;
            match dout {
                None => {
                    let mut a = 0.0;
                    for k in 0..n {
                        out[k] = irf[k] * k0 + s * a;
                        a = e * a + irf[k];
                    }
                    let mut c = 0.0;
                    for k in (0..n).rev() {
                        c = w * irf[k] + g * c;
                        out[k] += s * c;
                    }
                }
                Some(dout) => {
                    let (mut a, mut da) = (0.0, 0.0);
                    for k in 0..n {
                        out[k] = irf[k] * k0 + s * a;
                        dout[k] = irf[k] * dk0 + ds * a + s * da;
                        da = e * da + de * a;
                        a = e * a + irf[k];
                    }
                    let (mut c, mut dc) = (0.0, 0.0);
                    for k in (0..n).rev() {
                        dc = dw * irf[k] + dg * c + g * dc;
                        c = w * irf[k] + g * c;
                        out[k] += s * c;
                        dout[k] += ds * c + s * dc;
                    }
                }
            }
        }
    }
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
        let irf: Vec<f64> = (0..64)
            .map(|k| (-((k as f64 - 10.0) / 2.0).powi(2)).exp())
            .collect();
        for period in [None, Some(80.0)] {
            for tau in [0.3, 5.0, 200.0] {
                let mut out = vec![0.0; 64];
                let mut d = vec![0.0; 64];
                exp_conv(&irf, tau, period, &mut out, Some(&mut d));
                let (mut up, mut dn) = (vec![0.0; 64], vec![0.0; 64]);
                let h = tau * 1e-6;
                exp_conv(&irf, tau + h, period, &mut up, None);
                exp_conv(&irf, tau - h, period, &mut dn, None);
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
