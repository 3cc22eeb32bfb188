//! The TCSPC extractor: `photons` in, `tcspc_histograms` and `lifetime_features` out.
//!
//! Each configured source has a [`HistogramWindower`] (windows aligned to its own sync clock,
//! or closed by photon count), so a replayed file and the same records sent live give the same
//! windows however they were chunked into messages. Every closed window gives one histogram
//! row per channel, and for channels with enough photons a reconvolution fit (1-3 exponentials,
//! Gaussian IRF, background, shift; Poisson MLE or Neyman) and the first-harmonic phasor. A fit
//! that fails leaves its values null with the reason in `fit_error`; the histogram is kept.
//! The phasor is calibrated with the phasor of the IRF the fit located (Gaussian of the
//! configured width at the fitted shift, in the same bins), so it needs a fit: a lifetime of
//! zero sits at (1, 0) and a mono-exponential decay on the universal semicircle.
//! Photon times arrive in ps (`photons` table); they are converted back to sync periods and
//! native micro-time bins with the configured sync rate and resolution.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, StringArray, UInt32Array,
};
use arrow::datatypes::{Int32Type, Int64Type, TimestampNanosecondType, UInt64Type, UInt8Type};
use arrow::record_batch::RecordBatch;
use flowdaq_analytics::tcspc::fit::{
    FitConfig, FitFlags, FitStatistic, Irf, LifetimeFit, LifetimeFitter,
};
use flowdaq_analytics::tcspc::histogram::{
    histograms_to_record_batch, HistogramLayout, HistogramWindow, HistogramWindower,
    WindowedHistogram,
};
use flowdaq_analytics::tcspc::phasor::{Phasor, PhasorCalculator};
use flowdaq_analytics::tcspc::records::PhotonColumns;
use flowdaq_analytics::tcspc::TcspcError;
use flowdaq_connectors::decode::DecodedRecords;
use flowdaq_schemas::tables::LIFETIME_VALUE_COLUMNS;
use flowdaq_schemas::Table;

use super::{Extractor, FeatureError, MessageOrigin, PhotonRecords};
use crate::config::{StatisticChoice, TcspcFeaturesConfig, TcspcSourceConfig};

/// One source's windowing, fitting and phasor state.
struct SourceState {
    config: TcspcSourceConfig,
    layout: HistogramLayout,
    windower: HistogramWindower,
    fitter: Option<LifetimeFitter>,
    phasor: PhasorCalculator,
    statistic: &'static str,
    // Reused conversion buffers.
    macro_sync: Vec<u64>,
    /// Provenance of the last message with photons: the rows of the window still open when
    /// the stream ends carry it.
    last_origin: Option<LastOrigin>,
    micro_bins: Vec<u16>,
}

/// The extractor; see the module doc.
pub struct TcspcExtractor {
    sources: HashMap<String, SourceState>,
    /// Fitting state of histogram messages, by source and layout (reused while a source keeps
    /// sending histograms of one shape with no IRF of their own).
    histogram_states: HashMap<HistogramKey, SourceState>,
}

/// What a histogram message's fitting state depends on besides its source's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HistogramKey {
    source: String,
    bins: usize,
    bin_width_ps_bits: u64,
    sync_rate_hz_bits: u64,
}

/// Histogram layouts kept at once; more (a sender changing shape every message) start over.
const MAX_HISTOGRAM_STATES: usize = 64;

impl TcspcExtractor {
    /// An extractor for the configured sources.
    ///
    /// # Errors
    /// [`TcspcError`] for a layout, window, IRF or fit configuration the kernels refuse.
    pub fn new(config: &TcspcFeaturesConfig) -> Result<TcspcExtractor, TcspcError> {
        let mut sources = HashMap::new();
        for (source, c) in &config.sources {
            sources.insert(source.clone(), SourceState::new(c)?);
        }
        Ok(TcspcExtractor {
            sources,
            histogram_states: HashMap::new(),
        })
    }

    /// `lifetime_features` of the rows of a histogram message: each row fitted with its
    /// source's options (defaults when the source is not configured), in the message's own
    /// bins and timing, with the IRF the message brought (else the configured one when it has
    /// as many bins, else the Gaussian).
    fn fit_histograms(
        &mut self,
        histograms: &RecordBatch,
    ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        let column = |name: &str| {
            histograms
                .column_by_name(name)
                .ok_or_else(|| FeatureError::Missing(format!("histogram column {name}")))
        };
        let sources = column("source")?.as_string::<i32>();
        let runs = column("run_id")?.as_string::<i32>();
        let conditions = column("condition_id")?.as_string::<i32>();
        let arrivals = column("arrival_time_ns")?.as_primitive::<TimestampNanosecondType>();
        let instruments = column("instrument_time_ns")?.as_primitive::<TimestampNanosecondType>();
        let seqs = column("seq")?.as_primitive::<UInt64Type>();
        let widths = column("bin_width_ps")?.as_primitive::<arrow::datatypes::Float64Type>();
        let syncs = column("sync_rate_hz")?.as_primitive::<arrow::datatypes::Float64Type>();
        let counts = column("counts")?.as_list::<i32>();
        let irfs = column("irf_counts")?.as_list::<i32>();
        let mut out = Vec::new();
        for row in 0..histograms.num_rows() {
            let source = sources.value(row);
            let (bins, width_ps, sync_hz) =
                (counts.value(row).len(), widths.value(row), syncs.value(row));
            let irf = irfs.is_valid(row).then(|| {
                irfs.value(row)
                    .as_primitive::<arrow::datatypes::Float64Type>()
                    .values()
                    .to_vec()
            });
            let brought_irf = irf.is_some();
            let base = self.sources.get(source).map(|s| s.config.clone());
            let mut config = base.unwrap_or_else(|| TcspcSourceConfig::new(sync_hz, width_ps));
            config.sync_rate_hz = sync_hz;
            config.micro_bin_ps = width_ps;
            config.native_bins = Some(bins);
            config.bin_width_native = 1;
            config.channels = 1;
            config.window_photons = None;
            config.irf_counts = match irf {
                Some(irf) => Some(irf),
                None => config.irf_counts.filter(|c| c.len() == bins),
            };
            let key = HistogramKey {
                source: source.to_string(),
                bins,
                bin_width_ps_bits: width_ps.to_bits(),
                sync_rate_hz_bits: sync_hz.to_bits(),
            };
            let mut fresh;
            let state = if brought_irf {
                fresh = SourceState::new(&config)?;
                &mut fresh
            } else {
                if self.histogram_states.len() >= MAX_HISTOGRAM_STATES
                    && !self.histogram_states.contains_key(&key)
                {
                    self.histogram_states.clear();
                }
                match self.histogram_states.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(SourceState::new(&config)?)
                    }
                }
            };
            let origin = MessageOrigin {
                arrival_time_ns: arrivals.value(row),
                instrument_time_ns: instruments.is_valid(row).then(|| instruments.value(row)),
                source,
                run_id: runs.value(row),
                condition_id: conditions.is_valid(row).then(|| conditions.value(row)),
                seq: seqs.value(row),
            };
            let rows = lifetime_rows(state, &origin, &histograms.slice(row, 1))?;
            out.push((Table::LifetimeFeatures, rows));
        }
        Ok(out)
    }
}

impl SourceState {
    fn new(c: &TcspcSourceConfig) -> Result<SourceState, TcspcError> {
        let bad = |m: &str| Err(TcspcError::InvalidArgument(m.to_string()));
        if !(c.sync_rate_hz.is_finite() && c.sync_rate_hz > 0.0) {
            return bad("sync_rate_hz must be > 0");
        }
        if !(c.micro_bin_ps.is_finite() && c.micro_bin_ps > 0.0) {
            return bad("micro_bin_ps must be > 0");
        }
        let period_ps = 1e12 / c.sync_rate_hz;
        let native_bins = c
            .native_bins
            .unwrap_or_else(|| (period_ps / c.micro_bin_ps).ceil() as usize);
        let layout = HistogramLayout {
            channels: c.channels,
            native_bins,
            bin_width_native: c.bin_width_native,
            micro_bin_ps: c.micro_bin_ps,
            sync_rate_hz: c.sync_rate_hz,
        };
        let window = match c.window_photons {
            Some(photons) => HistogramWindow::Photons(photons),
            None => {
                if !(c.window_s.is_finite() && c.window_s > 0.0) {
                    return bad("window_s must be > 0");
                }
                HistogramWindow::Syncs(((c.window_s * c.sync_rate_hz).round() as u64).max(1))
            }
        };
        let windower = HistogramWindower::new(layout.clone(), window)?;
        let bins = layout.bins();
        let bin_width_ns = layout.bin_width_ps() * 1e-3;
        let statistic = match c.statistic {
            StatisticChoice::PoissonMle => FitStatistic::PoissonMle,
            StatisticChoice::Neyman => FitStatistic::NeymanLeastSquares,
        };
        if let Some(counts) = &c.irf_counts {
            let usable = counts.iter().all(|v| v.is_finite() && *v >= 0.0)
                && counts.iter().sum::<f64>() > 0.0;
            if counts.len() != bins || !usable {
                return bad(&format!(
                    "irf_counts must hold {bins} finite, non-negative counts (one per histogram \
                     bin) with a positive sum; it has {}",
                    counts.len()
                ));
            }
        }
        let fitter = match c.components {
            0 => None,
            components => {
                let mut fit = FitConfig::new(components, statistic, bin_width_ns);
                fit.period_ns = Some(period_ps * 1e-3);
                fit.max_reduced_chi_square = c.max_reduced_chi_square;
                if let Some([start_ns, end_ns]) = c.fit_range_ns {
                    let in_bins = |ns: f64| ns / bin_width_ns;
                    let usable = start_ns.is_finite()
                        && end_ns.is_finite()
                        && start_ns >= 0.0
                        && start_ns < end_ns
                        && in_bins(end_ns).ceil() <= bins as f64;
                    if !usable {
                        return bad(&format!(
                            "fit_range_ns [{start_ns}, {end_ns}] must be increasing and within \
                             the histogram's {:.3} ns",
                            bins as f64 * bin_width_ns
                        ));
                    }
                    fit.fit_range = Some((
                        in_bins(start_ns).floor() as usize,
                        in_bins(end_ns).ceil() as usize,
                    ));
                }
                let irf = match &c.irf_counts {
                    Some(counts) => Irf::Measured(counts.clone()),
                    None => Irf::Gaussian {
                        fwhm_ns: c.irf_fwhm_ps * 1e-3,
                        center_ns: None,
                    },
                };
                Some(LifetimeFitter::new(fit, irf, bins)?)
            }
        };
        let bins_per_period = ((period_ps / layout.bin_width_ps()).round() as usize).max(2);
        Ok(SourceState {
            config: c.clone(),
            layout,
            windower,
            fitter,
            phasor: PhasorCalculator::new(bins_per_period, 1)?,
            statistic: match statistic {
                FitStatistic::PoissonMle => "poisson_mle",
                FitStatistic::NeymanLeastSquares => "neyman",
            },
            macro_sync: Vec::new(),
            micro_bins: Vec::new(),
            last_origin: None,
        })
    }

    /// Windows closed by one message's photons of this source.
    fn push(
        &mut self,
        macro_time_ps: &[i64],
        micro_time_ps: &[i32],
        channel: &[u8],
        marker_flags: &[u8],
    ) -> Result<Vec<WindowedHistogram>, TcspcError> {
        let period_ps = self.layout.sync_period_ps();
        let micro_bin_ps = self.layout.micro_bin_ps;
        self.macro_sync.clear();
        self.micro_bins.clear();
        // The values are non-negative and near whole numbers (the decoder rounded them from
        // whole syncs and bins), so truncating x + 0.5 rounds them; `f64::round` is a libm call
        // per photon on baseline x86-64, and was a tenth of the photon path.
        self.macro_sync.extend(
            macro_time_ps
                .iter()
                .map(|&t| (t.max(0) as f64 / period_ps + 0.5) as u64),
        );
        // Micro times beyond u16 bins are out of range for any layout; clamp to count them so.
        self.micro_bins.extend(
            micro_time_ps.iter().map(|&t| {
                ((t.max(0) as f64 / micro_bin_ps + 0.5) as u64).min(u16::MAX as u64) as u16
            }),
        );
        let mut windows = Vec::new();
        self.windower.push_columns(
            &self.macro_sync,
            &self.micro_bins,
            channel,
            marker_flags,
            &mut windows,
        )?;
        Ok(windows)
    }

    /// Windows closed by one message's raw records of this source. When the message's time
    /// base is this layout's (sync period and micro bin equal to 1 part in 1e9), the native
    /// sync counts and bins are the layout's, and the records are decoded straight into the
    /// windower: the windows the ps columns give, as those round back to the same whole syncs
    /// and (for bins of 1 ps or more) the same bins. Otherwise the records are converted
    /// through ps like stored rows.
    fn push_records(
        &mut self,
        records: &DecodedRecords,
    ) -> Result<Vec<WindowedHistogram>, TcspcError> {
        let time_base = records.time_base;
        let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
        let mut windows = Vec::new();
        if same(time_base.macro_unit_ps, self.layout.sync_period_ps())
            && same(time_base.micro_bin_ps, self.layout.micro_bin_ps)
        {
            records.decode_into(&mut self.windower.sink(&mut windows));
            return Ok(windows);
        }
        let columns = PhotonColumns::from_events(records.events(), time_base);
        self.push(
            &columns.macro_time_ps,
            &columns.micro_time_ps,
            &columns.channel,
            &columns.marker_flags,
        )
    }

    /// The IRF where the fit put it, in this layout's bins: a measured IRF shifted by the
    /// fitted shift (linear interpolation, as in the fit), or the Gaussian centred at it (with
    /// no configured centre the fit's shift is the IRF centre), sampled at bin centres.
    fn irf_histogram(&self, shift_ns: f64, bins: usize) -> Vec<f64> {
        let width_ns = self.layout.bin_width_ps() * 1e-3;
        if let Some(base) = &self.config.irf_counts {
            let shift = shift_ns / width_ns;
            let whole = shift.floor();
            let f = shift - whole;
            let at = |j: i64| {
                usize::try_from(j)
                    .ok()
                    .and_then(|j| base.get(j))
                    .copied()
                    .unwrap_or(0.0)
            };
            return (0..bins as i64)
                .map(|j| {
                    let source = j - whole as i64;
                    (1.0 - f) * at(source) + f * at(source - 1)
                })
                .collect();
        }
        let center_ns = shift_ns;
        let sigma_ns = self.config.irf_fwhm_ps * 1e-3 / 2.354_820_045_030_949_3;
        (0..bins)
            .map(|k| {
                let t = (k as f64 + 0.5) * width_ns - center_ns;
                (-0.5 * (t / sigma_ns).powi(2)).exp()
            })
            .collect()
    }

    /// Fit and IRF-calibrated first-harmonic phasor of one channel's histogram.
    fn analyse(&mut self, counts: &[u32]) -> (Option<LifetimeFit>, Option<String>, Phasor) {
        let histogram: Vec<f64> = counts.iter().map(|&c| f64::from(c)).collect();
        let photons: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        let (fit, error) = match self.fitter.as_mut() {
            None => (None, None),
            Some(_) if photons < self.config.min_photons_to_fit => (
                None,
                Some(format!(
                    "{photons} photons < min_photons_to_fit {}",
                    self.config.min_photons_to_fit
                )),
            ),
            Some(fitter) => match fitter.fit(&histogram) {
                Ok(fit) => (Some(fit), None),
                Err(err) => (None, Some(err.to_string())),
            },
        };
        let background = fit.as_ref().map_or(0.0, |f| f.background_counts);
        let mut raw = [Phasor::default()];
        let phasor = match self.phasor.phasors(&histogram, background, &mut raw) {
            Ok(_) => raw[0],
            Err(_) => Phasor {
                harmonic: 1,
                g: f64::NAN,
                s: f64::NAN,
            },
        };
        // Calibrate with the phasor of the IRF the fit found (a lifetime-zero reference in the
        // same bins): without a fit there is no IRF position, and the phasor stays null.
        let phasor = match &fit {
            Some(f) => {
                let irf = self.irf_histogram(f.shift_ns, histogram.len());
                let mut reference = [Phasor::default()];
                match self.phasor.phasors(&irf, 0.0, &mut reference) {
                    Ok(_) => phasor.calibrated(&reference[0]),
                    Err(_) => Phasor {
                        harmonic: 1,
                        g: f64::NAN,
                        s: f64::NAN,
                    },
                }
            }
            None => Phasor {
                harmonic: 1,
                g: f64::NAN,
                s: f64::NAN,
            },
        };
        (fit, error, phasor)
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The `lifetime_features` rows of `histograms` (one per window and channel).
fn lifetime_rows(
    state: &mut SourceState,
    origin: &MessageOrigin<'_>,
    histograms: &RecordBatch,
) -> Result<RecordBatch, FeatureError> {
    let n = histograms.num_rows();
    let col = |name: &str| {
        histograms
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| FeatureError::Missing(format!("histogram column {name}")))
    };
    let counts = col("counts")?;
    let counts = counts.as_list::<i32>();
    let mut values: Vec<Vec<Option<f64>>> =
        vec![Vec::with_capacity(n); LIFETIME_VALUE_COLUMNS.len()];
    let mut converged = Vec::with_capacity(n);
    let mut errors: Vec<Option<String>> = Vec::with_capacity(n);
    let mut components = Vec::with_capacity(n);
    let mut flags: Vec<Option<u32>> = Vec::with_capacity(n);
    let mut flag_names: Vec<Option<String>> = Vec::with_capacity(n);
    let mut range_start_ns: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut range_end_ns: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut irf_fwhm_ps: Vec<Option<f64>> = Vec::with_capacity(n);
    let gaussian_irf_fwhm_ps = state
        .config
        .irf_counts
        .is_none()
        .then_some(state.config.irf_fwhm_ps);
    let pile_up = col("pile_up")?;
    let pile_up = pile_up.as_boolean();
    let bin_width_ns = state.layout.bin_width_ps() * 1e-3;
    for row in 0..n {
        let channel_counts = counts.value(row);
        let channel_counts = channel_counts.as_primitive::<arrow::datatypes::UInt32Type>();
        let (fit, error, phasor) = state.analyse(channel_counts.values());
        let (tau_phase, tau_mod) = phasor.lifetimes_ns(state.layout.sync_rate_hz);
        let k = fit.as_ref().map_or(0, |f| f.components);
        let slot = |values: &[f64; 3], i: usize| (i < k).then(|| finite(values[i])).flatten();
        let row_values: [Option<f64>; 18] = match &fit {
            Some(f) => [
                slot(&f.tau_ns, 0),
                slot(&f.tau_ns, 1),
                slot(&f.tau_ns, 2),
                slot(&f.tau_stderr_ns, 0),
                slot(&f.tau_stderr_ns, 1),
                slot(&f.tau_stderr_ns, 2),
                slot(&f.amplitude_counts, 0),
                slot(&f.amplitude_counts, 1),
                slot(&f.amplitude_counts, 2),
                finite(f.background_counts),
                finite(f.shift_ns),
                finite(f.tau_amplitude_weighted_ns),
                finite(f.tau_intensity_weighted_ns),
                finite(f.reduced_chi_square),
                finite(phasor.g),
                finite(phasor.s),
                finite(tau_phase),
                finite(tau_mod),
            ],
            None => [None; 18],
        };
        for (column, value) in values.iter_mut().zip(row_values) {
            column.push(value);
        }
        converged.push(fit.as_ref().is_some_and(|f| f.converged));
        match &fit {
            Some(f) => {
                let mut row_flags = f.flags;
                if pile_up.value(row) {
                    row_flags.insert(FitFlags::PILE_UP);
                }
                flags.push(Some(row_flags.0));
                flag_names.push(Some(row_flags.to_string()));
                range_start_ns.push(Some(f.fit_range.0 as f64 * bin_width_ns));
                range_end_ns.push(Some(f.fit_range.1 as f64 * bin_width_ns));
                irf_fwhm_ps.push(gaussian_irf_fwhm_ps);
            }
            None => {
                flags.push(None);
                flag_names.push(None);
                range_start_ns.push(None);
                range_end_ns.push(None);
                irf_fwhm_ps.push(None);
            }
        }
        components.push(k as u32);
        errors.push(error);
    }
    let mut columns = origin.columns(n);
    for name in [
        "window_start_ps",
        "window_end_ps",
        "channel",
        "photon_count",
        "count_rate_hz",
        "pile_up",
    ] {
        columns.push(col(name)?);
    }
    columns.push(Arc::new(UInt32Array::from(components)));
    columns.push(Arc::new(StringArray::from(vec![state.statistic; n])));
    columns.extend(
        values
            .into_iter()
            .map(|v| Arc::new(Float64Array::from(v)) as ArrayRef),
    );
    columns.push(Arc::new(BooleanArray::from(converged)));
    columns.push(Arc::new(StringArray::from(errors)));
    columns.push(Arc::new(UInt32Array::from(flags)));
    columns.push(Arc::new(StringArray::from(flag_names)));
    columns.push(Arc::new(Float64Array::from(range_start_ns)));
    columns.push(Arc::new(Float64Array::from(range_end_ns)));
    columns.push(Arc::new(Float64Array::from(irf_fwhm_ps)));
    Ok(RecordBatch::try_new(
        Table::LifetimeFeatures.unsequenced_schema(),
        columns,
    )?)
}

impl Extractor for TcspcExtractor {
    fn name(&self) -> &'static str {
        "tcspc"
    }

    fn extract(
        &mut self,
        message: &[(Table, RecordBatch)],
    ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        if let Some((_, histograms)) = message.iter().find(|(t, _)| *t == Table::TcspcHistograms) {
            return self.fit_histograms(histograms);
        }
        let Some((_, photons)) = message.iter().find(|(t, _)| *t == Table::Photons) else {
            return Ok(Vec::new());
        };
        if photons.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let column = |name: &str| {
            photons
                .column_by_name(name)
                .ok_or_else(|| FeatureError::Missing(format!("column {name} missing")))
        };
        // One message has one source, run, condition and seq: take them from row 0.
        let source = column("source")?.as_string::<i32>().value(0);
        let Some(state) = self.sources.get_mut(source) else {
            return Ok(Vec::new());
        };
        let instrument = column("instrument_time_ns")?.as_primitive::<TimestampNanosecondType>();
        let conditions = column("condition_id")?.as_string::<i32>();
        let origin = MessageOrigin {
            arrival_time_ns: column("arrival_time_ns")?
                .as_primitive::<TimestampNanosecondType>()
                .value(0),
            instrument_time_ns: instrument.is_valid(0).then(|| instrument.value(0)),
            source,
            run_id: column("run_id")?.as_string::<i32>().value(0),
            condition_id: conditions.is_valid(0).then(|| conditions.value(0)),
            seq: column("seq")?.as_primitive::<UInt64Type>().value(0),
        };
        let windows = state.push(
            column("macro_time_ps")?
                .as_primitive::<Int64Type>()
                .values(),
            column("micro_time_ps")?
                .as_primitive::<Int32Type>()
                .values(),
            column("channel")?.as_primitive::<UInt8Type>().values(),
            column("marker_flags")?.as_primitive::<UInt8Type>().values(),
        )?;
        state.last_origin = Some(LastOrigin::of(&origin));
        window_rows(state, &origin, &windows)
    }

    fn extract_records(
        &mut self,
        photons: &PhotonRecords<'_>,
    ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        let Some(state) = self.sources.get_mut(photons.origin.source) else {
            return Ok(Vec::new());
        };
        if photons.records.rows() == 0 {
            return Ok(Vec::new());
        }
        let windows = state.push_records(photons.records)?;
        state.last_origin = Some(LastOrigin::of(&photons.origin));
        window_rows(state, &photons.origin, &windows)
    }

    fn finish(&mut self, only: Option<&str>) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        let mut rows = Vec::new();
        for (source, state) in &mut self.sources {
            if only.is_some_and(|only| only != source) {
                continue;
            }
            let mut windows = Vec::new();
            state.windower.flush(&mut windows);
            let Some(last) = state.last_origin.take() else {
                continue;
            };
            let origin = MessageOrigin {
                arrival_time_ns: last.arrival_time_ns,
                instrument_time_ns: last.instrument_time_ns,
                source,
                run_id: &last.run_id,
                condition_id: last.condition_id.as_deref(),
                seq: last.seq,
            };
            rows.extend(window_rows(state, &origin, &windows)?);
        }
        Ok(rows)
    }
}

/// An owned [`MessageOrigin`].
struct LastOrigin {
    arrival_time_ns: i64,
    instrument_time_ns: Option<i64>,
    run_id: String,
    condition_id: Option<String>,
    seq: u64,
}

impl LastOrigin {
    fn of(origin: &MessageOrigin<'_>) -> LastOrigin {
        LastOrigin {
            arrival_time_ns: origin.arrival_time_ns,
            instrument_time_ns: origin.instrument_time_ns,
            run_id: origin.run_id.to_string(),
            condition_id: origin.condition_id.map(str::to_string),
            seq: origin.seq,
        }
    }
}

/// The `tcspc_histograms` and `lifetime_features` rows of the windows one message closed.
fn window_rows(
    state: &mut SourceState,
    origin: &MessageOrigin<'_>,
    windows: &[WindowedHistogram],
) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
    if windows.is_empty() {
        return Ok(Vec::new());
    }
    let kernel_rows = histograms_to_record_batch(windows)?;
    let n = kernel_rows.num_rows();
    let mut columns = origin.columns(n);
    columns.extend(kernel_rows.columns().iter().cloned());
    let histograms = RecordBatch::try_new(Table::TcspcHistograms.unsequenced_schema(), columns)?;
    let lifetimes = lifetime_rows(state, origin, &kernel_rows)?;
    Ok(vec![
        (Table::TcspcHistograms, histograms),
        (Table::LifetimeFeatures, lifetimes),
    ])
}

#[cfg(test)]
mod tests;
