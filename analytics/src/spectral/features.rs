//! The PL entry point: one row of emission features per spectrum, ready for the optimizer.
//!
//! Peak energy and energy FWHM are what the optimizer minimises/targets (domain primer s. 2, 6);
//! everything is measured in pixel space with scipy's definitions on the (optionally smoothed
//! and baseline-corrected) spectrum and mapped through the axis only at the end. Rows never
//! fail: content problems become [`QualityFlags`] with nulls where a value would be meaningless.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Float64Array, ListArray, RecordBatch, StructArray, UInt32Array,
};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};

use super::axis::{nm_to_ev, PreparedAxis, WavelengthAxis};
use super::flags::QualityFlags;
use super::input::SpectraView;
use super::integrate::quantile_pixels;
use super::output::{dispatch_pixels, offsets_i32, Ahead, BatchKernel, F64Col, U32Col};
use super::peaks::{find_peaks_summarized, Peak, PeakScratch, Sample};
use super::preprocess::{Pipeline, Preprocessing};
use super::scan::Weights;
use super::width::{parabolic_vertex, width_summarized};
use super::SpectralError;

/// Options of [`pl_features`].
#[derive(Debug, Clone, PartialEq)]
pub struct PeakOptions {
    /// Minimum prominence of a peak, in the units of the spectrum (counts). Default 0.
    pub min_prominence: f64,
    /// Minimum prominence as a fraction of the spectrum's range (max - min). The larger of the
    /// two thresholds applies; at least one must be positive. Default 0.05.
    pub min_relative_prominence: f64,
    /// Secondary peaks reported besides the main one, most prominent first. Default 4.
    pub max_secondary_peaks: usize,
    /// Detector saturation level (counts, compared with the raw pixels as given): any pixel at
    /// or above it sets `SATURATED`. Default `None` (not checked).
    pub saturation_level: Option<f64>,
    /// A spectrum whose max - min is at or below this is `FLAT_SPECTRUM`. Default 0.
    pub flat_threshold: f64,
    /// A main peak within this many pixels of either end of the analysed range is
    /// `PEAK_AT_EDGE`. Default 2.
    pub edge_margin_px: usize,
    /// Analyse only pixels whose wavelength lies in this range (nm, either order). Default all.
    pub window_nm: Option<(f64, f64)>,
    /// Smoothing and baseline removal applied before feature extraction. Default none.
    pub preprocessing: Preprocessing,
}

impl Default for PeakOptions {
    fn default() -> Self {
        Self {
            min_prominence: 0.0,
            min_relative_prominence: 0.05,
            max_secondary_peaks: 4,
            saturation_level: None,
            flat_threshold: 0.0,
            edge_margin_px: 2,
            window_nm: None,
            preprocessing: Preprocessing::default(),
        }
    }
}

impl PeakOptions {
    /// Checks the options.
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] for negative or non-finite thresholds, a relative
    /// prominence outside [0, 1], both prominence thresholds zero, or invalid preprocessing.
    pub fn validate(&self) -> Result<(), SpectralError> {
        let bad = |name, reason| Err(SpectralError::InvalidOption { name, reason });
        if !(self.min_prominence.is_finite() && self.min_prominence >= 0.0) {
            return bad("min_prominence", "must be finite and >= 0");
        }
        if !(0.0..=1.0).contains(&self.min_relative_prominence) {
            return bad("min_relative_prominence", "must lie in [0, 1]");
        }
        if self.min_prominence == 0.0 && self.min_relative_prominence == 0.0 {
            return bad(
                "min_prominence",
                "one of the prominence thresholds must be positive",
            );
        }
        if self.saturation_level.is_some_and(|s| !s.is_finite()) {
            return bad("saturation_level", "must be finite");
        }
        if !(self.flat_threshold.is_finite() && self.flat_threshold >= 0.0) {
            return bad("flat_threshold", "must be finite and >= 0");
        }
        self.preprocessing.baseline.validate()
    }
}

/// PL features of a batch, one entry per spectrum (null spectra give null entries).
#[derive(Debug, Clone)]
pub struct PlFeatures {
    /// Main peak wavelength (nm), parabolic sub-pixel vertex mapped through the axis.
    pub peak_wavelength_nm: Float64Array,
    /// Main peak energy `1239.84198 / peak_wavelength_nm` (eV).
    pub peak_energy_ev: Float64Array,
    /// Full width at half prominence (scipy `peak_widths(rel_height=0.5)`) in nm.
    pub fwhm_nm: Float64Array,
    /// The same width in energy: `|E(lambda_left) - E(lambda_right)|` (eV).
    pub fwhm_ev: Float64Array,
    /// Main peak sample value (units of the spectrum, "counts").
    pub peak_height_counts: Float64Array,
    /// Main peak prominence (counts).
    pub peak_prominence_counts: Float64Array,
    /// Trapezoid integral over the analysed range (counts x nm).
    pub integrated_intensity_counts_nm: Float64Array,
    /// Interquartile range of the positive emission (nm).
    pub iqr_nm: Float64Array,
    /// Number of peaks above the prominence threshold.
    pub peak_count: UInt32Array,
    /// Up to `max_secondary_peaks` other peaks, most prominent first:
    /// `List<Struct<wavelength_nm, energy_ev, height_counts, prominence_counts>>`.
    pub secondary_peaks: ListArray,
    /// [`QualityFlags`] bitmask (null only for null spectra).
    pub quality_flags: UInt32Array,
}

impl PlFeatures {
    /// Column name of [`Self::peak_wavelength_nm`].
    pub const PEAK_WAVELENGTH_NM: &'static str = "peak_wavelength_nm";
    /// Column name of [`Self::peak_energy_ev`].
    pub const PEAK_ENERGY_EV: &'static str = "peak_energy_ev";
    /// Column name of [`Self::fwhm_nm`].
    pub const FWHM_NM: &'static str = "fwhm_nm";
    /// Column name of [`Self::fwhm_ev`].
    pub const FWHM_EV: &'static str = "fwhm_ev";
    /// Column name of [`Self::peak_height_counts`].
    pub const PEAK_HEIGHT_COUNTS: &'static str = "peak_height_counts";
    /// Column name of [`Self::peak_prominence_counts`].
    pub const PEAK_PROMINENCE_COUNTS: &'static str = "peak_prominence_counts";
    /// Column name of [`Self::integrated_intensity_counts_nm`].
    pub const INTEGRATED_INTENSITY_COUNTS_NM: &'static str = "integrated_intensity_counts_nm";
    /// Column name of [`Self::iqr_nm`].
    pub const IQR_NM: &'static str = "iqr_nm";
    /// Column name of [`Self::peak_count`].
    pub const PEAK_COUNT: &'static str = "peak_count";
    /// Column name of [`Self::secondary_peaks`].
    pub const SECONDARY_PEAKS: &'static str = "secondary_peaks";
    /// Column name of [`Self::quality_flags`].
    pub const QUALITY_FLAGS: &'static str = "quality_flags";

    /// Fields of one secondary peak (the struct inside [`Self::secondary_peaks`]).
    pub fn secondary_peak_fields() -> Fields {
        Fields::from(vec![
            Field::new("wavelength_nm", DataType::Float64, false),
            Field::new("energy_ev", DataType::Float64, false),
            Field::new("height_counts", DataType::Float64, false),
            Field::new("prominence_counts", DataType::Float64, false),
        ])
    }

    /// The Arrow schema of [`Self::into_record_batch`] (units in the column names).
    pub fn schema() -> SchemaRef {
        let f64col = |name| Field::new(name, DataType::Float64, true);
        let item = Field::new_list_field(DataType::Struct(Self::secondary_peak_fields()), true);
        Arc::new(Schema::new(vec![
            f64col(Self::PEAK_WAVELENGTH_NM),
            f64col(Self::PEAK_ENERGY_EV),
            f64col(Self::FWHM_NM),
            f64col(Self::FWHM_EV),
            f64col(Self::PEAK_HEIGHT_COUNTS),
            f64col(Self::PEAK_PROMINENCE_COUNTS),
            f64col(Self::INTEGRATED_INTENSITY_COUNTS_NM),
            f64col(Self::IQR_NM),
            Field::new(Self::PEAK_COUNT, DataType::UInt32, true),
            Field::new(Self::SECONDARY_PEAKS, DataType::List(Arc::new(item)), true),
            Field::new(Self::QUALITY_FLAGS, DataType::UInt32, true),
        ]))
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
            Arc::new(self.peak_wavelength_nm),
            Arc::new(self.peak_energy_ev),
            Arc::new(self.fwhm_nm),
            Arc::new(self.fwhm_ev),
            Arc::new(self.peak_height_counts),
            Arc::new(self.peak_prominence_counts),
            Arc::new(self.integrated_intensity_counts_nm),
            Arc::new(self.iqr_nm),
            Arc::new(self.peak_count),
            Arc::new(self.secondary_peaks),
            Arc::new(self.quality_flags),
        ];
        Ok(RecordBatch::try_new(Self::schema(), cols)?)
    }
}

/// Extracts PL features from every spectrum of a batch.
///
/// `intensities` is a `List`, `LargeList` or `FixedSizeList` of Float32 or Float64, one list
/// per spectrum, each as long as `axis_nm` (nm per pixel, ascending or descending, possibly
/// non-uniform). Per spectrum: optional smoothing/baseline ([`PeakOptions::preprocessing`]),
/// peaks with prominence above the threshold (scipy `find_peaks`), the most prominent one as
/// main peak (ties: higher, then first), its parabolic sub-pixel position, its scipy
/// `peak_widths(rel_height=0.5)` crossings mapped to nm and eV, the trapezoid integral, the
/// interquartile range and the secondary peaks.
///
/// # Errors
/// [`SpectralError`] for an invalid axis or options, an unsupported array type, or a non-null
/// spectrum whose length differs from the axis. Spectrum *content* never errors (see
/// [`QualityFlags`]).
///
/// ```
/// use arrow_array::{types::Float32Type, ListArray, Array};
/// use flowdaq_analytics::spectral::{pl_features, PeakOptions, QualityFlags};
///
/// let axis: Vec<f64> = (0..512).map(|i| 400.0 + 0.25 * i as f64).collect();
/// // A Gaussian at 480 nm with sigma 8 nm on a flat background, and a missing spectrum.
/// let spectrum: Vec<Option<f32>> = axis
///     .iter()
///     .map(|&nm| Some((100.0 + 1000.0 * (-0.5 * ((nm - 480.0) / 8.0f64).powi(2)).exp()) as f32))
///     .collect();
/// let batch = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(spectrum), None]);
///
/// let f = pl_features(&axis, &batch, &PeakOptions::default()).unwrap();
/// assert!((f.peak_wavelength_nm.value(0) - 480.0).abs() < 0.01);
/// let fwhm = 2.0 * (2.0f64 * 2.0f64.ln()).sqrt() * 8.0; // 18.84 nm
/// assert!((f.fwhm_nm.value(0) - fwhm).abs() < 0.05);
/// assert_eq!(f.quality_flags.value(0), QualityFlags::OK.0);
/// assert!(f.peak_wavelength_nm.is_null(1) && f.quality_flags.is_null(1));
/// let batch = f.into_record_batch().unwrap();
/// assert_eq!(batch.num_rows(), 2);
/// ```
pub fn pl_features(
    axis_nm: &[f64],
    intensities: &dyn Array,
    opts: &PeakOptions,
) -> Result<PlFeatures, SpectralError> {
    PlAnalyzer::new(axis_nm, opts)?.features(intensities)
}

/// [`pl_features`] for one calibration whose spectra keep coming: the axis is validated and
/// its window, trapezoid weights and preprocessing plan are built once, in [`PlAnalyzer::new`],
/// instead of at every call. That setup is several times the work of one 2048-pixel spectrum,
/// so a stream of one-spectrum batches should keep an analyzer per calibration. Results are
/// identical to [`pl_features`] with the same axis and options.
///
/// ```
/// use arrow_array::{types::Float32Type, ListArray};
/// use flowdaq_analytics::spectral::{pl_features, PeakOptions, PlAnalyzer};
///
/// let axis: Vec<f64> = (0..256).map(|i| 400.0 + 0.5 * i as f64).collect();
/// let mut analyzer = PlAnalyzer::new(&axis, &PeakOptions::default()).unwrap();
/// for center in [450.0, 470.0] {
///     let spectrum: Vec<Option<f32>> = axis
///         .iter()
///         .map(|&nm| Some((1000.0 * (-0.5 * ((nm - center) / 6.0f64).powi(2)).exp()) as f32))
///         .collect();
///     let batch = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(spectrum)]);
///     let f = analyzer.features(&batch).unwrap();
///     assert!((f.peak_wavelength_nm.value(0) - center).abs() < 0.01);
///     let once = pl_features(&axis, &batch, &PeakOptions::default()).unwrap();
///     assert_eq!(f.fwhm_nm, once.fwhm_nm);
/// }
/// ```
#[derive(Debug)]
pub struct PlAnalyzer {
    /// The axis (validated) and the analysed window of it.
    axis: PreparedAxis,
    /// Trapezoid half-steps of the window's axis.
    h: Vec<f64>,
    w: Weights,
    opts: PeakOptions,
    pipeline: Option<Pipeline>,
}

impl PlAnalyzer {
    /// Validates `axis_nm` and `opts` and prepares everything that depends only on them.
    ///
    /// # Errors
    /// [`SpectralError`] for an invalid axis, invalid options, a window outside the axis, or
    /// preprocessing the window cannot take (as [`pl_features`]).
    pub fn new(axis_nm: &[f64], opts: &PeakOptions) -> Result<PlAnalyzer, SpectralError> {
        let full = WavelengthAxis::new(axis_nm)?;
        opts.validate()?;
        let axis = PreparedAxis::new(full, opts.window_nm)?;
        let mut h = Vec::new();
        axis.analysed().half_steps(&mut h);
        let w = Weights::from_half_steps(&h);
        let pipeline = Pipeline::unless_identity(&opts.preprocessing, axis.analysed().len())?;
        Ok(PlAnalyzer {
            axis,
            h,
            w,
            opts: opts.clone(),
            pipeline,
        })
    }

    /// The axis this analyzer was built for (nm per pixel).
    pub fn axis_nm(&self) -> &[f64] {
        self.axis.full_nm()
    }

    /// PL features of every spectrum of `intensities` (see [`pl_features`]).
    ///
    /// # Errors
    /// [`SpectralError`] for an unsupported array type or a non-null spectrum whose length
    /// differs from the axis. Spectrum content never errors.
    pub fn features(&mut self, intensities: &dyn Array) -> Result<PlFeatures, SpectralError> {
        let view = SpectraView::new(intensities)?;
        view.check_lengths(self.axis.full_nm().len())?;
        let mut kernel = PlKernel {
            view: &view,
            window: self.axis.window(),
            ctx: Ctx {
                axis: self.axis.analysed(),
                h: &self.h,
                w: &self.w,
                opts: &self.opts,
            },
            pipeline: self.pipeline.as_mut(),
            cols: PlColumns::new(view.len()),
            error: None,
        };
        dispatch_pixels(&mut kernel, &view.pixels);
        if let Some(e) = kernel.error {
            return Err(e);
        }
        kernel.cols.finish(view.nulls())
    }
}

/// Read-only per-batch context.
struct Ctx<'a> {
    axis: WavelengthAxis<'a>,
    h: &'a [f64],
    w: &'a Weights,
    opts: &'a PeakOptions,
}

struct PlKernel<'a> {
    view: &'a SpectraView<'a>,
    window: Range<usize>,
    ctx: Ctx<'a>,
    pipeline: Option<&'a mut Pipeline>,
    cols: PlColumns,
    error: Option<SpectralError>,
}

impl BatchKernel for PlKernel<'_> {
    #[inline(always)]
    fn run<T: Sample>(&mut self, pixels: &[T]) {
        let mut scratch = PeakScratch::<T>::new();
        let mut scratch64 = PeakScratch::<f64>::new();
        let mut order = Vec::new();
        let mut work = Vec::new();
        for row in 0..self.view.len() {
            if self.view.is_null(row) {
                self.cols.push_null();
                continue;
            }
            let r = self.view.range(row);
            let pix = r.start + self.window.start..r.start + self.window.end;
            if self.view.has_null_pixel(pix.clone()) {
                self.cols.push_unusable(QualityFlags::NON_FINITE_PIXELS);
                continue;
            }
            let y = &pixels[pix];
            // The next spectrum streams in from memory while this one is analysed in cache.
            let ahead = if row + 1 < self.view.len() {
                &pixels[self.view.range(row + 1)]
            } else {
                &[]
            };
            match self.pipeline.as_mut() {
                None => analyze(
                    y,
                    None,
                    ahead,
                    &mut scratch,
                    &mut order,
                    &self.ctx,
                    &mut self.cols,
                ),
                Some(pipe) => {
                    // Saturation and finiteness are judged on the raw pixels (vectorised pass).
                    scratch.summary.compute_ahead(y, None, ahead);
                    if !scratch.summary.finite {
                        self.cols.push_unusable(QualityFlags::NON_FINITE_PIXELS);
                        continue;
                    }
                    let raw_max = scratch.summary.gmax.to_f64();
                    if let Err(e) = pipe.run(self.ctx.axis.as_slice(), y, &mut work) {
                        self.error.get_or_insert(e);
                        self.cols.push_null();
                        continue;
                    }
                    analyze(
                        &work,
                        Some(raw_max),
                        &[],
                        &mut scratch64,
                        &mut order,
                        &self.ctx,
                        &mut self.cols,
                    );
                }
            }
        }
    }
}

/// The main peak's features, before they go into columns.
struct MainPeak {
    wavelength_nm: f64,
    fwhm_nm: f64,
    fwhm_ev: f64,
    height: f64,
    prominence: f64,
}

/// Features of one spectrum (finite, non-null, already preprocessed).
#[inline(always)]
fn analyze<T: Sample>(
    y: &[T],
    raw_max: Option<f64>,
    ahead: &[T],
    sc: &mut PeakScratch<T>,
    order: &mut Vec<usize>,
    ctx: &Ctx<'_>,
    cols: &mut PlColumns,
) {
    let n = y.len();
    let PeakScratch {
        summary: s,
        work,
        peaks,
    } = sc;
    // Half of the next spectrum is requested during the pass, the rest in quarters of that
    // between the steps below.
    let mut ahead = Ahead::new(ahead);
    s.compute_ahead(y, Some(ctx.w), ahead.take(1, 2));
    if !s.finite {
        cols.push_unusable(QualityFlags::NON_FINITE_PIXELS);
        return;
    }
    let mut flags = QualityFlags::OK;
    let (gmin, gmax) = (s.gmin.to_f64(), s.gmax.to_f64());
    if ctx
        .opts
        .saturation_level
        .is_some_and(|level| raw_max.unwrap_or(gmax) >= level)
    {
        flags.insert(QualityFlags::SATURATED);
    }
    let integral = (n >= 2).then_some(s.integral);
    ahead.upto(5, 8);
    let iqr = quantile_pixels(y, ctx.h, s, [0.25, 0.75])
        .map(|[a, b]| (ctx.axis.nm_at(b) - ctx.axis.nm_at(a)).abs());
    let range = gmax - gmin;
    if !(range > ctx.opts.flat_threshold) {
        flags.insert(QualityFlags::FLAT_SPECTRUM | QualityFlags::NO_PEAK);
        cols.push_row(flags, None, integral, iqr, Some(0));
        return;
    }
    if y[0].to_f64() == gmax || y[n - 1].to_f64() == gmax {
        flags.insert(QualityFlags::PEAK_AT_EDGE);
    }
    let p = ctx
        .opts
        .min_prominence
        .max(ctx.opts.min_relative_prominence * range);
    ahead.upto(6, 8);
    find_peaks_summarized(y, p, s, work, peaks);
    ahead.upto(7, 8);
    if peaks.is_empty() {
        flags.insert(QualityFlags::NO_PEAK);
        cols.push_row(flags, None, integral, iqr, Some(0));
        return;
    }
    let mut main_k = 0;
    for (k, pk) in peaks.iter().enumerate().skip(1) {
        let m = &peaks[main_k];
        if pk.prominence > m.prominence || (pk.prominence == m.prominence && pk.height > m.height) {
            main_k = k;
        }
    }
    let main = peaks[main_k];
    let margin = ctx.opts.edge_margin_px;
    if main.index < margin || main.index + margin >= n {
        flags.insert(QualityFlags::PEAK_AT_EDGE);
    }
    let wd = width_summarized(y, s, &main, 0.5);
    ahead.upto(1, 1);
    let (l_nm, r_nm) = (ctx.axis.nm_at(wd.left_ip), ctx.axis.nm_at(wd.right_ip));
    let mp = MainPeak {
        wavelength_nm: ctx.axis.nm_at(parabolic_vertex(y, main.index)),
        fwhm_nm: (r_nm - l_nm).abs(),
        fwhm_ev: (nm_to_ev(l_nm) - nm_to_ev(r_nm)).abs(),
        height: main.height,
        prominence: main.prominence,
    };
    order.clear();
    order.extend((0..peaks.len()).filter(|&k| k != main_k));
    order.sort_unstable_by(|&a, &b| {
        peaks[b]
            .prominence
            .total_cmp(&peaks[a].prominence)
            .then(a.cmp(&b))
    });
    for &k in order.iter().take(ctx.opts.max_secondary_peaks) {
        cols.push_secondary(y, &peaks[k], &ctx.axis);
    }
    cols.push_row(flags, Some(mp), integral, iqr, Some(peaks.len() as u32));
}

/// Column builders of [`PlFeatures`].
struct PlColumns {
    wavelength: F64Col,
    energy: F64Col,
    fwhm_nm: F64Col,
    fwhm_ev: F64Col,
    height: F64Col,
    prominence: F64Col,
    integral: F64Col,
    iqr: F64Col,
    count: U32Col,
    flags: U32Col,
    sec_offsets: Vec<i64>,
    sec: [Vec<f64>; 4],
}

impl PlColumns {
    fn new(n: usize) -> Self {
        let mut sec_offsets = Vec::with_capacity(n + 1);
        sec_offsets.push(0);
        Self {
            wavelength: F64Col::with_capacity(n),
            energy: F64Col::with_capacity(n),
            fwhm_nm: F64Col::with_capacity(n),
            fwhm_ev: F64Col::with_capacity(n),
            height: F64Col::with_capacity(n),
            prominence: F64Col::with_capacity(n),
            integral: F64Col::with_capacity(n),
            iqr: F64Col::with_capacity(n),
            count: U32Col::with_capacity(n),
            flags: U32Col::with_capacity(n),
            sec_offsets,
            sec: Default::default(),
        }
    }

    #[inline]
    fn push_secondary<T: Sample>(&mut self, y: &[T], pk: &Peak, axis: &WavelengthAxis<'_>) {
        let nm = axis.nm_at(parabolic_vertex(y, pk.index));
        self.sec[0].push(nm);
        self.sec[1].push(nm_to_ev(nm));
        self.sec[2].push(pk.height);
        self.sec[3].push(pk.prominence);
    }

    #[inline]
    fn push_row(
        &mut self,
        flags: QualityFlags,
        main: Option<MainPeak>,
        integral: Option<f64>,
        iqr: Option<f64>,
        count: Option<u32>,
    ) {
        self.push_any(Some(flags), main, integral, iqr, count);
    }

    #[inline]
    fn push_any(
        &mut self,
        flags: Option<QualityFlags>,
        main: Option<MainPeak>,
        integral: Option<f64>,
        iqr: Option<f64>,
        count: Option<u32>,
    ) {
        self.wavelength.push(main.as_ref().map(|m| m.wavelength_nm));
        self.energy
            .push(main.as_ref().map(|m| nm_to_ev(m.wavelength_nm)));
        self.fwhm_nm.push(main.as_ref().map(|m| m.fwhm_nm));
        self.fwhm_ev.push(main.as_ref().map(|m| m.fwhm_ev));
        self.height.push(main.as_ref().map(|m| m.height));
        self.prominence.push(main.as_ref().map(|m| m.prominence));
        self.integral.push(integral);
        self.iqr.push(iqr);
        self.count.push(count);
        self.flags.push(flags.map(|f| f.0));
        self.sec_offsets.push(self.sec[0].len() as i64);
    }

    /// A valid spectrum with no usable content: flags only.
    fn push_unusable(&mut self, flags: QualityFlags) {
        self.push_row(flags, None, None, None, None);
    }

    /// A null spectrum: every column null.
    fn push_null(&mut self) {
        self.push_any(None, None, None, None, None);
    }

    fn finish(self, nulls: Option<&NullBuffer>) -> Result<PlFeatures, SpectralError> {
        let fields = PlFeatures::secondary_peak_fields();
        let [a, b, c, d] = self.sec;
        let children: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(a)),
            Arc::new(Float64Array::from(b)),
            Arc::new(Float64Array::from(c)),
            Arc::new(Float64Array::from(d)),
        ];
        let structs = StructArray::try_new(fields.clone(), children, None)?;
        let item = Arc::new(Field::new_list_field(DataType::Struct(fields), true));
        let secondary_peaks = ListArray::try_new(
            item,
            offsets_i32(self.sec_offsets)?,
            Arc::new(structs),
            nulls.cloned(),
        )?;
        Ok(PlFeatures {
            peak_wavelength_nm: self.wavelength.finish(),
            peak_energy_ev: self.energy.finish(),
            fwhm_nm: self.fwhm_nm.finish(),
            fwhm_ev: self.fwhm_ev.finish(),
            peak_height_counts: self.height.finish(),
            peak_prominence_counts: self.prominence.finish(),
            integrated_intensity_counts_nm: self.integral.finish(),
            iqr_nm: self.iqr.finish(),
            peak_count: self.count.finish(),
            secondary_peaks,
            quality_flags: self.flags.finish(),
        })
    }
}
