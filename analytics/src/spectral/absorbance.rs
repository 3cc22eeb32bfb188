//! The absorbance entry point: band edge, optical density, concentration and size per spectrum.
//!
//! The first excitonic peak (the longest-wavelength local maximum with enough prominence, both
//! absolute and relative to the spectrum's most prominent peak, so a small solvent or overtone
//! band beyond the band edge is not taken for it) gives
//! the band-edge energy and, through the Brus relation, the dot size; the absorbance at the
//! excitation wavelength feeds the PLQY and the inner-filter guard (OD > 0.05 quenches and
//! red-shifts PL). Same rules as the PL kernel: content problems are flags, never errors.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::axis::{nm_to_ev, PreparedAxis, WavelengthAxis};
use super::flags::QualityFlags;
use super::input::SpectraView;
use super::output::{dispatch_pixels, prefetch, BatchKernel, F64Col, U32Col};
use super::peaks::{find_peaks_summarized, Peak, PeakScratch, Sample};
use super::preprocess::{Pipeline, Preprocessing};
use super::size::MaterialConstants;
use super::width::parabolic_vertex;
use super::SpectralError;

/// Beer-Lambert concentration `C = A / (eps L)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeerLambert {
    /// Molar extinction coefficient `eps` (L mol^-1 cm^-1) at the chosen wavelength.
    pub epsilon_l_per_mol_cm: f64,
    /// Optical path length `L` (cm).
    pub path_length_cm: f64,
    /// Wavelength (nm) at which `eps` applies; `None` uses the excitonic peak absorbance.
    pub wavelength_nm: Option<f64>,
}

/// Options of [`absorbance_features`].
#[derive(Debug, Clone, PartialEq)]
pub struct AbsorbanceOptions {
    /// Minimum prominence (absorbance units) of the excitonic peak. Default 0.01.
    pub min_exciton_prominence: f64,
    /// Minimum prominence of the excitonic peak as a fraction of the most prominent peak of
    /// the analysed range. Default 0.2: a quantum dot's first exciton is its most prominent
    /// feature or close to it, while solvent, overtone and noise bands beyond it are a few
    /// percent of it (PbSe in a JASCO spectrum: exciton 0.144, a band at 2304 nm 0.0126).
    pub min_exciton_relative_prominence: f64,
    /// Excitation wavelength (nm) at which absorbance is reported (for PLQY and the
    /// inner-filter guard). Default `None`.
    pub excitation_nm: Option<f64>,
    /// Optical density above which `INNER_FILTER` is set. Default 0.05. Tested on the
    /// absorbance at `excitation_nm` if set, else on the maximum of the analysed range.
    pub inner_filter_od: f64,
    /// `NEGATIVE_ABSORBANCE` is set when any pixel is below `-negative_tolerance`. Default 0.01.
    pub negative_tolerance: f64,
    /// Absorbance above which the photometer is not trusted (stray light); sets `SATURATED`.
    /// Default `None`.
    pub max_reliable_absorbance: Option<f64>,
    /// A spectrum whose max - min is at or below this is `FLAT_SPECTRUM`. Default 0.
    pub flat_threshold: f64,
    /// An excitonic peak within this many pixels of either end is `PEAK_AT_EDGE`. Default 2.
    pub edge_margin_px: usize,
    /// Analyse only pixels whose wavelength lies in this range (nm). Default all.
    pub window_nm: Option<(f64, f64)>,
    /// Smoothing and baseline removal applied first. Default none.
    pub preprocessing: Preprocessing,
    /// Concentration from the absorbance. Default `None` (column null).
    pub beer_lambert: Option<BeerLambert>,
    /// Material for the Brus size estimate. Default CsPbBr3; `None` leaves the column null.
    pub material: Option<MaterialConstants>,
}

impl Default for AbsorbanceOptions {
    fn default() -> Self {
        Self {
            min_exciton_prominence: 0.01,
            min_exciton_relative_prominence: 0.2,
            excitation_nm: None,
            inner_filter_od: 0.05,
            negative_tolerance: 0.01,
            max_reliable_absorbance: None,
            flat_threshold: 0.0,
            edge_margin_px: 2,
            window_nm: None,
            preprocessing: Preprocessing::default(),
            beer_lambert: None,
            material: Some(MaterialConstants::CSPBBR3),
        }
    }
}

impl AbsorbanceOptions {
    /// Checks the options (wavelengths are checked against the axis by the kernel).
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] for non-positive or non-finite thresholds and
    /// constants, or invalid preprocessing.
    pub fn validate(&self) -> Result<(), SpectralError> {
        let bad = |name, reason| Err(SpectralError::InvalidOption { name, reason });
        if !(self.min_exciton_prominence.is_finite() && self.min_exciton_prominence > 0.0) {
            return bad("min_exciton_prominence", "must be finite and > 0");
        }
        if !(0.0..=1.0).contains(&self.min_exciton_relative_prominence) {
            return bad("min_exciton_relative_prominence", "must be in 0..=1");
        }
        if !self.inner_filter_od.is_finite() {
            return bad("inner_filter_od", "must be finite");
        }
        if !(self.negative_tolerance.is_finite() && self.negative_tolerance >= 0.0) {
            return bad("negative_tolerance", "must be finite and >= 0");
        }
        if self.max_reliable_absorbance.is_some_and(|a| !a.is_finite()) {
            return bad("max_reliable_absorbance", "must be finite");
        }
        if !(self.flat_threshold.is_finite() && self.flat_threshold >= 0.0) {
            return bad("flat_threshold", "must be finite and >= 0");
        }
        if let Some(bl) = self.beer_lambert {
            if !(bl.epsilon_l_per_mol_cm.is_finite() && bl.epsilon_l_per_mol_cm > 0.0) {
                return bad(
                    "beer_lambert.epsilon_l_per_mol_cm",
                    "must be finite and > 0",
                );
            }
            if !(bl.path_length_cm.is_finite() && bl.path_length_cm > 0.0) {
                return bad("beer_lambert.path_length_cm", "must be finite and > 0");
            }
        }
        if let Some(m) = self.material {
            m.validate()?;
        }
        self.preprocessing.baseline.validate()
    }
}

/// Absorbance features of a batch, one entry per spectrum.
#[derive(Debug, Clone)]
pub struct AbsorbanceFeatures {
    /// First excitonic peak (band edge) wavelength (nm), parabolic sub-pixel vertex.
    pub exciton_wavelength_nm: Float64Array,
    /// Band-edge energy `1239.84198 / exciton_wavelength_nm` (eV).
    pub exciton_energy_ev: Float64Array,
    /// Absorbance at the excitonic peak pixel.
    pub exciton_absorbance: Float64Array,
    /// Prominence of the excitonic peak (absorbance units).
    pub exciton_prominence: Float64Array,
    /// Absorbance at the configured excitation wavelength (linear interpolation).
    pub absorbance_at_excitation: Float64Array,
    /// Maximum absorbance in the analysed range.
    pub max_absorbance: Float64Array,
    /// Beer-Lambert concentration (mol/L).
    pub concentration_mol_per_l: Float64Array,
    /// Brus (effective-mass) diameter `2R` (nm) from the band-edge energy.
    pub brus_diameter_nm: Float64Array,
    /// [`QualityFlags`] bitmask (null only for null spectra).
    pub quality_flags: UInt32Array,
}

impl AbsorbanceFeatures {
    /// Column names, in schema order (units in the names).
    pub const COLUMNS: [&'static str; 9] = [
        "exciton_wavelength_nm",
        "exciton_energy_ev",
        "exciton_absorbance",
        "exciton_prominence",
        "absorbance_at_excitation",
        "max_absorbance",
        "concentration_mol_per_l",
        "brus_diameter_nm",
        "quality_flags",
    ];

    /// The Arrow schema of [`Self::into_record_batch`].
    pub fn schema() -> SchemaRef {
        let mut fields: Vec<Field> = Self::COLUMNS[..8]
            .iter()
            .map(|&n| Field::new(n, DataType::Float64, true))
            .collect();
        fields.push(Field::new(Self::COLUMNS[8], DataType::UInt32, true));
        Arc::new(Schema::new(fields))
    }

    /// Number of spectra.
    pub fn len(&self) -> usize {
        self.quality_flags.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The features as one record batch with [`Self::schema`].
    ///
    /// # Errors
    /// [`SpectralError::Arrow`] if Arrow rejects the batch (it cannot for kernel output).
    pub fn into_record_batch(self) -> Result<RecordBatch, SpectralError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.exciton_wavelength_nm),
            Arc::new(self.exciton_energy_ev),
            Arc::new(self.exciton_absorbance),
            Arc::new(self.exciton_prominence),
            Arc::new(self.absorbance_at_excitation),
            Arc::new(self.max_absorbance),
            Arc::new(self.concentration_mol_per_l),
            Arc::new(self.brus_diameter_nm),
            Arc::new(self.quality_flags),
        ];
        Ok(RecordBatch::try_new(Self::schema(), cols)?)
    }
}

/// Extracts absorbance features from every absorbance spectrum of a batch.
///
/// The excitonic peak is the longest-wavelength local maximum whose prominence (scipy
/// definition) is at least `min_exciton_prominence` and at least
/// `min_exciton_relative_prominence` of the most prominent peak's, found after the optional
/// preprocessing.
///
/// # Errors
/// [`SpectralError`] for an invalid axis or options, an unsupported array type, a spectrum
/// whose length differs from the axis, or an excitation / Beer-Lambert wavelength outside the
/// analysed range ([`SpectralError::OutsideAxis`]).
///
/// ```
/// use arrow_array::{types::Float32Type, ListArray};
/// use flowdaq_analytics::spectral::{absorbance_features, AbsorbanceOptions, QualityFlags};
///
/// let axis: Vec<f64> = (0..301).map(|i| 400.0 + i as f64).collect(); // 400..700 nm
/// // Rising absorption toward the UV plus an excitonic bump at 505 nm.
/// let a: Vec<Option<f32>> = axis
///     .iter()
///     .map(|&nm| Some((0.02 * ((520.0 - nm) / 15.0).exp().min(20.0) / 20.0
///         + 0.08 * (-0.5 * ((nm - 505.0) / 6.0f64).powi(2)).exp()) as f32))
///     .collect();
/// let batch = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(a)]);
/// let opts = AbsorbanceOptions { excitation_nm: Some(405.0), ..Default::default() };
/// let f = absorbance_features(&axis, &batch, &opts).unwrap();
/// assert!((f.exciton_wavelength_nm.value(0) - 505.0).abs() < 1.5);
/// assert!(f.brus_diameter_nm.value(0) > 8.0); // 2.455 eV band edge
/// assert_eq!(f.quality_flags.value(0), QualityFlags::OK.0); // OD 0.02 at 405 nm: no inner filter
/// ```
pub fn absorbance_features(
    axis_nm: &[f64],
    absorbance: &dyn Array,
    opts: &AbsorbanceOptions,
) -> Result<AbsorbanceFeatures, SpectralError> {
    AbsorbanceAnalyzer::new(axis_nm, opts)?.features(absorbance)
}

/// [`absorbance_features`] for one calibration whose spectra keep coming: the axis is
/// validated and the window, the excitation and Beer-Lambert pixels and the preprocessing plan
/// are prepared once, in [`AbsorbanceAnalyzer::new`]. Results are identical to
/// [`absorbance_features`] with the same axis and options (see also
/// [`super::PlAnalyzer`]).
#[derive(Debug)]
pub struct AbsorbanceAnalyzer {
    /// The axis (validated) and the analysed window of it.
    axis: PreparedAxis,
    opts: AbsorbanceOptions,
    excitation_px: Option<f64>,
    beer_px: Option<f64>,
    pipeline: Option<Pipeline>,
}

impl AbsorbanceAnalyzer {
    /// Validates `axis_nm` and `opts` and prepares everything that depends only on them.
    ///
    /// # Errors
    /// As [`absorbance_features`], for everything but the spectra themselves.
    pub fn new(
        axis_nm: &[f64],
        opts: &AbsorbanceOptions,
    ) -> Result<AbsorbanceAnalyzer, SpectralError> {
        let full = WavelengthAxis::new(axis_nm)?;
        opts.validate()?;
        let prepared = PreparedAxis::new(full, opts.window_nm)?;
        let axis = prepared.analysed();
        let locate = |what: &'static str, nm: Option<f64>| -> Result<Option<f64>, SpectralError> {
            nm.map(|nm| {
                axis.pixel_of(nm).ok_or(SpectralError::OutsideAxis {
                    what,
                    nm,
                    min: axis.min_nm(),
                    max: axis.max_nm(),
                })
            })
            .transpose()
        };
        let excitation_px = locate("excitation_nm", opts.excitation_nm)?;
        let beer_px = locate(
            "beer_lambert.wavelength_nm",
            opts.beer_lambert.and_then(|b| b.wavelength_nm),
        )?;
        let pipeline = Pipeline::unless_identity(&opts.preprocessing, axis.len())?;
        Ok(AbsorbanceAnalyzer {
            axis: prepared,
            opts: opts.clone(),
            excitation_px,
            beer_px,
            pipeline,
        })
    }

    /// The axis this analyzer was built for (nm per pixel).
    pub fn axis_nm(&self) -> &[f64] {
        self.axis.full_nm()
    }

    /// Absorbance features of every spectrum of `absorbance` (see [`absorbance_features`]).
    ///
    /// # Errors
    /// [`SpectralError`] for an unsupported array type or a non-null spectrum whose length
    /// differs from the axis.
    pub fn features(
        &mut self,
        absorbance: &dyn Array,
    ) -> Result<AbsorbanceFeatures, SpectralError> {
        let view = SpectraView::new(absorbance)?;
        view.check_lengths(self.axis.full_nm().len())?;
        let mut kernel = AbsKernel {
            view: &view,
            window: self.axis.window(),
            axis: self.axis.analysed(),
            opts: &self.opts,
            excitation_px: self.excitation_px,
            beer_px: self.beer_px,
            pipeline: self.pipeline.as_mut(),
            cols: AbsColumns::new(view.len()),
            error: None,
        };
        dispatch_pixels(&mut kernel, &view.pixels);
        if let Some(e) = kernel.error {
            return Err(e);
        }
        Ok(kernel.cols.finish())
    }
}

struct AbsKernel<'a> {
    view: &'a SpectraView<'a>,
    window: Range<usize>,
    axis: WavelengthAxis<'a>,
    opts: &'a AbsorbanceOptions,
    excitation_px: Option<f64>,
    beer_px: Option<f64>,
    pipeline: Option<&'a mut Pipeline>,
    cols: AbsColumns,
    error: Option<SpectralError>,
}

impl BatchKernel for AbsKernel<'_> {
    #[inline(always)]
    fn run<T: Sample>(&mut self, pixels: &[T]) {
        let mut scratch = PeakScratch::<T>::new();
        let mut scratch64 = PeakScratch::<f64>::new();
        let mut work = Vec::new();
        for row in 0..self.view.len() {
            if self.view.is_null(row) {
                self.cols.push(None, &Row::default());
                continue;
            }
            let r = self.view.range(row);
            let pix = r.start + self.window.start..r.start + self.window.end;
            if self.view.has_null_pixel(pix.clone()) {
                self.cols
                    .push(Some(QualityFlags::NON_FINITE_PIXELS), &Row::default());
                continue;
            }
            let y = &pixels[pix];
            if row + 1 < self.view.len() {
                prefetch(&pixels[self.view.range(row + 1)]);
            }
            let (flags, row_out) = match self.pipeline.as_mut() {
                None => self.analyze(y, &mut scratch),
                Some(pipe) => {
                    scratch.summary.compute(y, None);
                    if !scratch.summary.finite {
                        (QualityFlags::NON_FINITE_PIXELS, Row::default())
                    } else if let Err(e) = pipe.run(self.axis.as_slice(), y, &mut work) {
                        self.error.get_or_insert(e);
                        (QualityFlags::OK, Row::default())
                    } else {
                        self.analyze(&work, &mut scratch64)
                    }
                }
            };
            self.cols.push(Some(flags), &row_out);
        }
    }
}

/// Values of one row (None = null).
#[derive(Default)]
struct Row {
    wavelength: Option<f64>,
    absorbance: Option<f64>,
    prominence: Option<f64>,
    at_excitation: Option<f64>,
    max: Option<f64>,
    concentration: Option<f64>,
    diameter: Option<f64>,
}

/// Linear interpolation of `y` at a fractional pixel inside `[0, len - 1]`.
#[inline]
fn interp<T: Sample>(y: &[T], px: f64) -> f64 {
    let i = (px as usize).min(y.len() - 1);
    if i + 1 >= y.len() {
        return y[i].to_f64();
    }
    let t = px - i as f64;
    y[i].to_f64() + (y[i + 1].to_f64() - y[i].to_f64()) * t
}

impl AbsKernel<'_> {
    #[inline(always)]
    fn analyze<T: Sample>(&self, y: &[T], sc: &mut PeakScratch<T>) -> (QualityFlags, Row) {
        let o = self.opts;
        let n = y.len();
        let PeakScratch {
            summary: s,
            work,
            peaks,
        } = sc;
        s.compute(y, None);
        if !s.finite {
            return (QualityFlags::NON_FINITE_PIXELS, Row::default());
        }
        let mut flags = QualityFlags::OK;
        let (gmin, gmax) = (s.gmin.to_f64(), s.gmax.to_f64());
        let mut row = Row {
            max: Some(gmax),
            ..Row::default()
        };
        if o.max_reliable_absorbance.is_some_and(|m| gmax > m) {
            flags.insert(QualityFlags::SATURATED);
        }
        if gmin < -o.negative_tolerance {
            flags.insert(QualityFlags::NEGATIVE_ABSORBANCE);
        }
        row.at_excitation = self.excitation_px.map(|px| interp(y, px));
        if row.at_excitation.unwrap_or(gmax) > o.inner_filter_od {
            flags.insert(QualityFlags::INNER_FILTER);
        }
        if !(gmax - gmin > o.flat_threshold) {
            flags.insert(QualityFlags::FLAT_SPECTRUM | QualityFlags::NO_PEAK);
        } else {
            find_peaks_summarized(y, o.min_exciton_prominence, s, work, peaks);
            let most_prominent = peaks.iter().map(|p| p.prominence).fold(0.0, f64::max);
            let significant =
                |p: &&Peak| p.prominence >= o.min_exciton_relative_prominence * most_prominent;
            // Longest wavelength = last pixel on an ascending axis, first on a descending one.
            let exciton = if self.axis.is_descending() {
                peaks.iter().find(significant)
            } else {
                peaks.iter().rev().find(significant)
            };
            match exciton {
                None => flags.insert(QualityFlags::NO_PEAK),
                Some(pk) => {
                    if pk.index < o.edge_margin_px || pk.index + o.edge_margin_px >= n {
                        flags.insert(QualityFlags::PEAK_AT_EDGE);
                    }
                    let nm = self.axis.nm_at(parabolic_vertex(y, pk.index));
                    row.wavelength = Some(nm);
                    row.absorbance = Some(pk.height);
                    row.prominence = Some(pk.prominence);
                    row.diameter = o
                        .material
                        .and_then(|m| m.brus_radius_nm(nm_to_ev(nm)))
                        .map(|r| 2.0 * r);
                }
            }
        }
        if let Some(bl) = o.beer_lambert {
            let a = match self.beer_px {
                Some(px) => Some(interp(y, px)),
                None => row.absorbance,
            };
            row.concentration = a.map(|a| a / (bl.epsilon_l_per_mol_cm * bl.path_length_cm));
        }
        (flags, row)
    }
}

struct AbsColumns {
    cols: [F64Col; 8],
    flags: U32Col,
}

impl AbsColumns {
    fn new(n: usize) -> Self {
        Self {
            cols: std::array::from_fn(|_| F64Col::with_capacity(n)),
            flags: U32Col::with_capacity(n),
        }
    }

    #[inline]
    fn push(&mut self, flags: Option<QualityFlags>, r: &Row) {
        let vals = [
            r.wavelength,
            r.wavelength.map(nm_to_ev),
            r.absorbance,
            r.prominence,
            r.at_excitation,
            r.max,
            r.concentration,
            r.diameter,
        ];
        for (c, v) in self.cols.iter_mut().zip(vals) {
            c.push(v);
        }
        self.flags.push(flags.map(|f| f.0));
    }

    fn finish(self) -> AbsorbanceFeatures {
        let [a, b, c, d, e, f, g, h] = self.cols.map(F64Col::finish);
        AbsorbanceFeatures {
            exciton_wavelength_nm: a,
            exciton_energy_ev: b,
            exciton_absorbance: c,
            exciton_prominence: d,
            absorbance_at_excitation: e,
            max_absorbance: f,
            concentration_mol_per_l: g,
            brus_diameter_nm: h,
            quality_flags: self.flags.finish(),
        }
    }
}
