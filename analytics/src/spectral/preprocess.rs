//! Batch preprocessing: dark subtraction, absorbance, and the smoothing/baseline pipeline.
//!
//! Raw spectrometer rows arrive as counts; dark and reference spectra are calibrations shared
//! by the batch (plain slices, one value per pixel). Outputs are new `List<Float32>` arrays with
//! the input's row nulls; undefined pixels (e.g. no reference light) become NaN, which the
//! feature kernels then flag as `NON_FINITE_PIXELS` instead of guessing a value.

use arrow_array::{Array, ListArray};

use super::baseline::{linear_edge_baseline, AslsSolver, Baseline};
use super::input::{Pixels, SpectraView};
use super::output::list_f32;
use super::peaks::Sample;
use super::smoothing::SavitzkyGolay;
use super::{SpectralError, WavelengthAxis};

/// Optional smoothing then baseline removal, applied before feature extraction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Preprocessing {
    /// Savitzky-Golay `(window, polyorder)` smoothing, applied first (`None`: off).
    pub savgol: Option<(usize, usize)>,
    /// Baseline removal, applied after smoothing.
    pub baseline: Baseline,
}

impl Preprocessing {
    /// True if the pipeline leaves spectra untouched (the fast path).
    pub fn is_identity(&self) -> bool {
        self.savgol.is_none() && self.baseline == Baseline::None
    }
}

/// The preprocessing pipeline built for spectra of one length (reusable buffers).
#[derive(Debug)]
pub(crate) struct Pipeline {
    savgol: Option<SavitzkyGolay>,
    baseline: Baseline,
    asls: Option<AslsSolver>,
    tmp: Vec<f64>,
    base: Vec<f64>,
}

impl Pipeline {
    /// Builds the pipeline for `n`-pixel spectra.
    ///
    /// # Errors
    /// Invalid smoothing or baseline parameters, or a smoothing window longer than `n`.
    pub(crate) fn new(p: &Preprocessing, n: usize) -> Result<Self, SpectralError> {
        p.baseline.validate()?;
        let savgol = match p.savgol {
            Some((w, o)) => {
                let sg = SavitzkyGolay::new(w, o)?;
                if w > n {
                    return Err(SpectralError::InvalidOption {
                        name: "savgol.window",
                        reason: "longer than the analysed spectrum",
                    });
                }
                Some(sg)
            }
            None => None,
        };
        let asls = match p.baseline {
            Baseline::Asls(a) => Some(AslsSolver::new(n, a)?),
            _ => None,
        };
        Ok(Self {
            savgol,
            baseline: p.baseline,
            asls,
            tmp: vec![0.0; n],
            base: vec![0.0; n],
        })
    }

    /// The pipeline for `p` on `n`-pixel spectra, or `None` when `p` leaves spectra untouched
    /// (the kernels then analyse the raw pixels directly).
    ///
    /// # Errors
    /// As [`Pipeline::new`].
    pub(crate) fn unless_identity(
        p: &Preprocessing,
        n: usize,
    ) -> Result<Option<Self>, SpectralError> {
        if p.is_identity() {
            Ok(None)
        } else {
            Self::new(p, n).map(Some)
        }
    }

    /// Runs the pipeline on `y` (length `n`, wavelengths `axis_nm`) into `out`.
    pub(crate) fn run<T: Sample>(
        &mut self,
        axis_nm: &[f64],
        y: &[T],
        out: &mut Vec<f64>,
    ) -> Result<(), SpectralError> {
        out.clear();
        out.resize(y.len(), 0.0);
        match &self.savgol {
            Some(sg) => sg.apply(y, out)?,
            None => out.iter_mut().zip(y).for_each(|(o, v)| *o = v.to_f64()),
        }
        let base = &mut self.base;
        match self.baseline {
            Baseline::None => return Ok(()),
            Baseline::LinearEdge { edge_pixels } => {
                linear_edge_baseline(axis_nm, out, edge_pixels, base)?
            }
            Baseline::Asls(_) => {
                self.tmp.copy_from_slice(out);
                if let Some(solver) = self.asls.as_mut() {
                    solver.fit(&self.tmp, base)?;
                }
            }
        }
        out.iter_mut().zip(base.iter()).for_each(|(o, b)| *o -= b);
        Ok(())
    }
}

fn pixel(p: Pixels<'_>, i: usize) -> f64 {
    match p {
        Pixels::F32(v) => v[i] as f64,
        Pixels::F64(v) => v[i],
    }
}

/// Applies `f(pixel value, pixel index) -> f32` to each valid row of length `n`, walking the
/// offsets over the flat child; null pixels become NaN.
fn map_rows(
    spectra: &dyn Array,
    n: usize,
    f: impl Fn(f64, usize) -> f32 + Copy,
) -> Result<ListArray, SpectralError> {
    let view = SpectraView::new(spectra)?;
    view.check_lengths(n)?;
    let valid_rows = (0..view.len()).filter(|&r| !view.is_null(r)).count();
    let mut values: Vec<f32> = Vec::with_capacity(valid_rows * n);
    let mut offsets = Vec::with_capacity(view.len() + 1);
    offsets.push(0i64);
    for row in 0..view.len() {
        if !view.is_null(row) {
            let r = view.range(row);
            let start = values.len();
            match view.pixels {
                Pixels::F32(v) => values.extend(
                    v[r.clone()]
                        .iter()
                        .enumerate()
                        .map(|(k, &x)| f(x as f64, k)),
                ),
                Pixels::F64(v) => {
                    values.extend(v[r.clone()].iter().enumerate().map(|(k, &x)| f(x, k)))
                }
            }
            if view.has_null_pixel(r.clone()) {
                for (k, i) in r.enumerate() {
                    if view.has_null_pixel(i..i + 1) {
                        values[start + k] = f32::NAN;
                    }
                }
            }
        }
        offsets.push(values.len() as i64);
    }
    list_f32(values, offsets, view.nulls().cloned())
}

/// Subtracts a dark spectrum from every spectrum: `S - D`.
///
/// # Errors
/// [`SpectralError::UnsupportedType`] if `spectra` is not a list of floats,
/// [`SpectralError::LengthMismatch`] if a spectrum's length differs from `dark`'s.
///
/// ```
/// use arrow_array::{types::Float32Type, ListArray, Array, cast::AsArray};
/// use flowdaq_analytics::spectral::dark_subtract;
/// let s = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(vec![Some(5.0), Some(7.0)]), None]);
/// let out = dark_subtract(&s, &[1.0, 2.0]).unwrap();
/// assert_eq!(out.value(0).as_primitive::<Float32Type>().values(), &[4.0, 5.0]);
/// assert!(out.is_null(1));
/// ```
pub fn dark_subtract(spectra: &dyn Array, dark: &[f64]) -> Result<ListArray, SpectralError> {
    map_rows(spectra, dark.len(), |v, k| (v - dark[k]) as f32)
}

/// Absorbance `A = -log10((S - D) / (R - D))` of every sample spectrum `S` against one dark `D`
/// and one reference (blank) `R`.
///
/// Pixels where `R - D <= 0` (no reference light) or `S - D <= 0` (no transmitted light above
/// dark) have no defined absorbance and are NaN.
///
/// # Errors
/// [`SpectralError::InputLength`] if `dark` and `reference` differ in length, otherwise as
/// [`dark_subtract`].
///
/// ```
/// use arrow_array::{types::Float32Type, ListArray, cast::AsArray};
/// use flowdaq_analytics::spectral::absorbance;
/// let s = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(vec![Some(110.0), Some(10.0)])]);
/// let a = absorbance(&s, &[10.0, 10.0], &[1010.0, 1010.0]).unwrap();
/// let v = a.value(0);
/// let v = v.as_primitive::<Float32Type>().values();
/// assert!((v[0] - 1.0).abs() < 1e-6 && v[1].is_nan());
/// ```
pub fn absorbance(
    sample: &dyn Array,
    dark: &[f64],
    reference: &[f64],
) -> Result<ListArray, SpectralError> {
    if dark.len() != reference.len() {
        return Err(SpectralError::InputLength {
            what: "reference",
            expected: dark.len(),
            actual: reference.len(),
        });
    }
    // Per-pixel reference light, computed once for the batch; the log is taken in f32 (the
    // output precision), which is several times faster than f64.
    let light: Vec<f64> = reference.iter().zip(dark).map(|(r, d)| r - d).collect();
    map_rows(sample, dark.len(), |s, k| {
        let (num, den) = (s - dark[k], light[k]);
        if num > 0.0 && den > 0.0 {
            let t = num / den;
            // below f32's normal range (A > 38) fall back to f64 rather than return infinity
            if t > 1e-30 {
                -(t as f32).log10()
            } else {
                -(t.log10()) as f32
            }
        } else {
            f32::NAN
        }
    })
}

/// Applies smoothing and baseline removal to every spectrum (the same pipeline the feature
/// kernels run internally), returning the processed spectra.
///
/// # Errors
/// Axis errors (see [`WavelengthAxis::new`]), invalid options, or length mismatches.
pub fn preprocess(
    axis_nm: &[f64],
    spectra: &dyn Array,
    p: &Preprocessing,
) -> Result<ListArray, SpectralError> {
    let axis = WavelengthAxis::new(axis_nm)?;
    let mut pipe = Pipeline::new(p, axis.len())?;
    let view = SpectraView::new(spectra)?;
    view.check_lengths(axis.len())?;
    let n = axis.len();
    let mut values = Vec::with_capacity(view.len() * n);
    let mut offsets = vec![0i64];
    let mut row_in = vec![0.0f64; n];
    let mut row_out = Vec::with_capacity(n);
    for row in 0..view.len() {
        if !view.is_null(row) {
            let r = view.range(row);
            let has_null = view.has_null_pixel(r.clone());
            for (k, i) in r.enumerate() {
                row_in[k] = if has_null && view.has_null_pixel(i..i + 1) {
                    f64::NAN
                } else {
                    pixel(view.pixels, i)
                };
            }
            pipe.run(axis_nm, &row_in, &mut row_out)?;
            values.extend(row_out.iter().map(|&v| v as f32));
        }
        offsets.push(values.len() as i64);
    }
    list_f32(values, offsets, view.nulls().cloned())
}
