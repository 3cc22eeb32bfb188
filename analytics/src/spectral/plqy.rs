//! Relative photoluminescence quantum yield against a reference dye.
//!
//! `Q = Q_ref * (F / F_ref) * (f_ref / f) * (n^2 / n_ref^2)` with `f = 1 - 10^(-A_exc)` the
//! fraction of excitation light absorbed. Pairing each PL spectrum with the absorbance of the
//! same source and condition nearest in time is the pipeline's job; this kernel takes the two
//! aligned columns and never divides by a non-absorbing sample (null instead).

use std::f64::consts::LN_10;

use arrow_array::{Array, Float64Array};

use super::output::F64Col;
use super::SpectralError;

/// The reference measurement (a dye of known quantum yield, same excitation and detection).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlqyReference {
    /// Quantum yield of the reference (0..1), e.g. 0.95 for rhodamine 6G in ethanol.
    pub quantum_yield: f64,
    /// Integrated PL of the reference, in the same units and settings as the sample's
    /// `integrated_intensity_counts_nm`.
    pub integrated_pl: f64,
    /// Absorbance of the reference at the excitation wavelength.
    pub absorbance_at_excitation: f64,
    /// Refractive index of the reference's solvent (e.g. 1.361 for ethanol).
    pub refractive_index: f64,
}

impl PlqyReference {
    /// Checks that the reference can normalise anything.
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] unless yield, integrated PL, absorbance and refractive
    /// index are finite and positive.
    pub fn validate(&self) -> Result<(), SpectralError> {
        let checks = [
            ("reference.quantum_yield", self.quantum_yield),
            ("reference.integrated_pl", self.integrated_pl),
            (
                "reference.absorbance_at_excitation",
                self.absorbance_at_excitation,
            ),
            ("reference.refractive_index", self.refractive_index),
        ];
        for (name, v) in checks {
            if !(v.is_finite() && v > 0.0) {
                return Err(SpectralError::InvalidOption {
                    name,
                    reason: "must be finite and > 0",
                });
            }
        }
        Ok(())
    }
}

/// Fraction of light absorbed at absorbance `a`: `1 - 10^(-a)` (computed without cancellation).
#[inline]
pub fn absorbed_fraction(a: f64) -> f64 {
    -(-a * LN_10).exp_m1()
}

/// Relative quantum yield of one measurement; `None` if the sample absorbs nothing (`A <= 0`)
/// or an input is not finite.
#[inline]
pub fn relative_plqy_value(
    integrated_pl: f64,
    absorbance_at_excitation: f64,
    refractive_index: f64,
    r: &PlqyReference,
) -> Option<f64> {
    if !(absorbance_at_excitation > 0.0) {
        return None;
    }
    let f = absorbed_fraction(absorbance_at_excitation);
    let f_ref = absorbed_fraction(r.absorbance_at_excitation);
    let n2 = refractive_index * refractive_index / (r.refractive_index * r.refractive_index);
    let q = r.quantum_yield * (integrated_pl / r.integrated_pl) * (f_ref / f) * n2;
    q.is_finite().then_some(q)
}

/// Relative PLQY of every row: `integrated_pl[i]` with `absorbance_at_excitation[i]`, sample
/// solvent refractive index `refractive_index`, against `reference`.
///
/// Null where either input is null, the absorbance is not positive, or a value is not finite.
///
/// # Errors
/// [`SpectralError::InputLength`] if the two arrays differ in length;
/// [`SpectralError::InvalidOption`] for an invalid reference or refractive index.
///
/// ```
/// use arrow_array::{Array, Float64Array};
/// use flowdaq_analytics::spectral::{relative_plqy, PlqyReference};
/// let reference = PlqyReference {
///     quantum_yield: 0.95, integrated_pl: 1000.0, absorbance_at_excitation: 0.05, refractive_index: 1.361,
/// };
/// let f = Float64Array::from(vec![Some(800.0), Some(800.0), None]);
/// let a = Float64Array::from(vec![Some(0.05), Some(0.0), Some(0.05)]);
/// let q = relative_plqy(&f, &a, 1.361, &reference).unwrap();
/// assert!((q.value(0) - 0.76).abs() < 1e-12);
/// assert!(q.is_null(1) && q.is_null(2));
/// ```
pub fn relative_plqy(
    integrated_pl: &Float64Array,
    absorbance_at_excitation: &Float64Array,
    refractive_index: f64,
    reference: &PlqyReference,
) -> Result<Float64Array, SpectralError> {
    reference.validate()?;
    if !(refractive_index.is_finite() && refractive_index > 0.0) {
        return Err(SpectralError::InvalidOption {
            name: "refractive_index",
            reason: "must be finite and > 0",
        });
    }
    if integrated_pl.len() != absorbance_at_excitation.len() {
        return Err(SpectralError::InputLength {
            what: "absorbance_at_excitation",
            expected: integrated_pl.len(),
            actual: absorbance_at_excitation.len(),
        });
    }
    let mut out = F64Col::with_capacity(integrated_pl.len());
    for i in 0..integrated_pl.len() {
        let v = if integrated_pl.is_null(i) || absorbance_at_excitation.is_null(i) {
            None
        } else {
            relative_plqy_value(
                integrated_pl.value(i),
                absorbance_at_excitation.value(i),
                refractive_index,
                reference,
            )
        };
        out.push(v);
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula() {
        let r = PlqyReference {
            quantum_yield: 0.9,
            integrated_pl: 2.0,
            absorbance_at_excitation: 0.1,
            refractive_index: 1.33,
        };
        let q = relative_plqy_value(3.0, 0.2, 1.5, &r).unwrap();
        let f = |a: f64| 1.0 - 10f64.powf(-a);
        let want = 0.9 * (3.0 / 2.0) * (f(0.1) / f(0.2)) * (1.5f64 * 1.5 / (1.33 * 1.33));
        assert!((q - want).abs() < 1e-12, "{q} {want}");
        // Same sample as reference -> reference yield.
        assert!((relative_plqy_value(2.0, 0.1, 1.33, &r).unwrap() - 0.9).abs() < 1e-12);
        assert!(relative_plqy_value(2.0, -0.01, 1.33, &r).is_none());
        assert!(relative_plqy_value(2.0, f64::NAN, 1.33, &r).is_none());
    }

    #[test]
    fn absorbed_fraction_small_and_large() {
        let x = 1e-9 * LN_10; // 1 - exp(-x) = x - x^2/2 + O(x^3)
        assert!((absorbed_fraction(1e-9) - (x - 0.5 * x * x)).abs() < 1e-24);
        assert!((absorbed_fraction(1.0) - 0.9).abs() < 1e-15);
    }

    #[test]
    fn errors() {
        let r = PlqyReference {
            quantum_yield: 0.9,
            integrated_pl: 2.0,
            absorbance_at_excitation: 0.1,
            refractive_index: 1.33,
        };
        let a = Float64Array::from(vec![1.0, 2.0]);
        let b = Float64Array::from(vec![0.1]);
        assert!(relative_plqy(&a, &b, 1.4, &r).is_err());
        assert!(relative_plqy(&a, &a, 0.0, &r).is_err());
        let bad = PlqyReference {
            integrated_pl: 0.0,
            ..r
        };
        assert!(relative_plqy(&a, &a, 1.4, &bad).is_err());
    }
}
