//! The Poisson deviance of one bin, without a libm call per bin.
//!
//! Maximum-likelihood fits evaluate `m - y + y ln(y / m)` for every bin at every model
//! evaluation; through `ln_1p` that was the largest single cost of an MLE fit. Here the
//! logarithm is an exponent split plus an `atanh` series on `[1/sqrt 2, sqrt 2)`, inlined so the
//! bin loop stays free of calls, and written so that near `m = y` (where the deviance is a
//! small difference of large terms) it never subtracts nearly equal numbers.

/// ln 2 split as in fdlibm: `LN2_HI` has its low 32 bits zero, so `e * LN2_HI` is exact.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const SQRT_2: f64 = std::f64::consts::SQRT_2;
/// `2^52 + 1023`: subtracting it from the bits `0x4330... | biased exponent` read as a double
/// gives the unbiased exponent as a double, without an integer-to-float conversion.
const EXPONENT_MAGIC: f64 = 4_503_599_627_371_519.0;

/// `Q(z) = sum_k z^k / (2k + 3)`, so that `atanh(s) = s + s^3 Q(s^2)`; 11 terms reach double
/// precision for `s^2 <= ((sqrt 2 - 1) / (sqrt 2 + 1))^2 ~ 0.0294`.
#[inline(always)]
fn atanh_series(z: f64) -> f64 {
    const C: [f64; 11] = [
        1.0 / 3.0,
        1.0 / 5.0,
        1.0 / 7.0,
        1.0 / 9.0,
        1.0 / 11.0,
        1.0 / 13.0,
        1.0 / 15.0,
        1.0 / 17.0,
        1.0 / 19.0,
        1.0 / 21.0,
        1.0 / 23.0,
    ];
    // Estrin's scheme: a dependency chain of 5 multiply-adds instead of Horner's 11.
    let z2 = z * z;
    let z4 = z2 * z2;
    let z8 = z4 * z4;
    let p01 = C[0] + C[1] * z;
    let p23 = C[2] + C[3] * z;
    let p45 = C[4] + C[5] * z;
    let p67 = C[6] + C[7] * z;
    let p89 = C[8] + C[9] * z;
    let p03 = p01 + p23 * z2;
    let p47 = p45 + p67 * z2;
    let p810 = p89 + C[10] * z2;
    (p03 + p47 * z4) + p810 * z8
}

/// `m - y + y ln(y / m)`, half the Poisson deviance of a bin with count `y > 0` and model
/// `m > 0` (both finite and normal), to a relative error below 1e-12 from `m / y = 1e-12` to
/// `1e12` and at `m` within 1e-7 of `y` (tested against libm and a series).
#[cfg(test)]
fn half_deviance(y: f64, m: f64) -> f64 {
    half_deviance_with_inverse(y, 1.0 / y, m)
}

/// The Poisson deviance term of one bin, `2 (m - y + y ln(y / m))`, or `2 m` for an empty bin
/// (`y <= 0`), given `inv_y = 1 / y` (anything when `y <= 0`) and a model `m > 0`. A select,
/// not a branch, so bin loops vectorise.
#[inline(always)]
pub(crate) fn deviance_term(y: f64, inv_y: f64, m: f64) -> f64 {
    let counted = y > 0.0;
    let (ys, inv) = if counted { (y, inv_y) } else { (1.0, 1.0) };
    let half = half_deviance_with_inverse(ys, inv, m);
    2.0 * if counted { half } else { m }
}

/// [`half_deviance`] given `inv_y = 1 / y` as well (a fit computes it once per histogram).
#[inline(always)]
fn half_deviance_with_inverse(y: f64, inv_y: f64, m: f64) -> f64 {
    // With x = m / y: m - y + y ln(y / m) = y (x - 1 - ln x).
    let x = m * inv_y;
    let bits = x.to_bits();
    let biased = (bits >> 52) & 0x7ff;
    let mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = mantissa > SQRT_2;
    let f = if big { 0.5 * mantissa } else { mantissa };
    let e = f64::from_bits(0x4330_0000_0000_0000 | biased) - EXPONENT_MAGIC
        + if big { 1.0 } else { 0.0 };
    // x = 2^e f with f in [1/sqrt 2, sqrt 2); ln f = 2 atanh(s), s = (f - 1) / (f + 1). When
    // e = 0, f = x and s = (m - y) / (m + y) exactly, without the rounding of x - 1. Both
    // branches are selects (no jumps), so bin loops can be vectorised.
    let near = e == 0.0;
    let numerator = if near { m - y } else { f - 1.0 };
    let denominator = if near { m + y } else { f + 1.0 };
    let s = numerator / denominator;
    let z = s * s;
    let tail = s * z * atanh_series(z);
    // Near: x = (1 + s) / (1 - s), x - 1 - 2 atanh(s) = 2 s^2 / (1 - s) - 2 (atanh(s) - s),
    // and y 2 s^2 / (1 - s) = s^2 (m + y).
    let near_value = z * (m + y) - 2.0 * y * tail;
    let far_value = y * ((x - 1.0) - (e * LN2_HI + e * LN2_LO) - 2.0 * (s + tail));
    if near {
        near_value
    } else {
        far_value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: `y (x - 1 - ln x)` with `x = m / y` and libm's `ln`, and for |x - 1| < 1e-3
    /// (where that form cancels) the series `d^2/2 - d^3/3 + d^4/4 - ...` in `d = x - 1`.
    /// (The fit's former `d - ln_1p(d)` with `d = (m - y) / y` loses `x` to rounding when
    /// `m << y`: 3e-6 relative error at m / y = 1e-12.)
    fn reference(y: f64, m: f64) -> f64 {
        let x = m / y;
        let d = (m - y) / y;
        if d.abs() < 1e-3 {
            let series: f64 = (2..12)
                .map(|k| (if k % 2 == 0 { 1.0 } else { -1.0 }) * d.powi(k) / k as f64)
                .sum();
            y * series
        } else {
            y * ((x - 1.0) - x.ln())
        }
    }

    #[test]
    fn matches_reference_over_many_decades_and_near_equality() {
        let mut worst: f64 = 0.0;
        for &y in &[1.0, 3.0, 17.0, 1e3, 1e6, 0.37] {
            for i in -3000..=3000 {
                // Ratios from 1e-12 to 1e12, and a dense band around m = y.
                for m in [
                    y * 10f64.powf(i as f64 / 250.0),
                    y * (1.0 + i as f64 * 1e-7),
                ] {
                    let (got, want) = (half_deviance(y, m), reference(y, m));
                    let err = (got - want).abs() / want.abs().max(1e-300);
                    if want > 1e-200 {
                        worst = worst.max(err);
                    }
                    assert!(got >= 0.0 || want.abs() < 1e-20, "y {y} m {m}: {got}");
                }
            }
        }
        assert!(worst < 1e-12, "worst relative error {worst}");
    }

    #[test]
    fn is_zero_at_equality_and_exact_for_powers_of_two() {
        assert_eq!(half_deviance(5.0, 5.0), 0.0);
        // m = 2y: y (1 - ln 2).
        let got = half_deviance(3.0, 6.0);
        let want = 3.0 * (1.0 - std::f64::consts::LN_2);
        assert!((got - want).abs() < 4.0 * f64::EPSILON * want);
    }
}
