//! `flowdaq plot`: an SVG picture of a spectrum, a decay with its fit, the phasor plot or a
//! feature's trend per condition, from a data directory or a running server, for reports and
//! for machines without a browser.

use std::path::PathBuf;

use anyhow::{bail, Context};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use arrow::record_batch::RecordBatch;
use clap::{Args, ValueEnum};

use crate::plot::decay::DecayPicture;
use crate::plot::phasor::PhasorPicture;
use crate::plot::spectrum::SpectrumPicture;
use crate::plot::trend::TrendPicture;

/// Which picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Picture {
    /// The newest spectrum (or --seq) with its peak and FWHM.
    Spectrum,
    /// The newest TCSPC histogram (or --seq) on a log axis with its fitted curve and residuals.
    Decay,
    /// Every fitted window's phasor against the universal semicircle.
    Phasor,
    /// A spectral feature over time, one colour per condition.
    Trend,
}

/// Arguments of `flowdaq plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// What to draw.
    pub picture: Picture,
    /// Data directory to read (default ./flowdaq-data).
    #[arg(long, conflicts_with = "server")]
    pub data_dir: Option<PathBuf>,
    /// Base URL of a running server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub server: Option<String>,
    /// Token for a server that asks for one.
    #[arg(long, env = "FLOWDAQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this run.
    #[arg(long)]
    pub run_id: Option<String>,
    /// The message to draw (spectrum, decay); default the newest.
    #[arg(long)]
    pub seq: Option<u64>,
    /// Trend: the `spectral_features` column drawn.
    #[arg(long, default_value = "peak_energy_ev")]
    pub feature: String,
    /// Decay: FWHM of the Gaussian IRF, ps, for rows written before `lifetime_features`
    /// recorded the one each fit used.
    #[arg(long, default_value_t = 200.0)]
    pub irf_fwhm_ps: f64,
    /// Output file; default `<picture>.svg`.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Draws the picture and writes the SVG file.
pub async fn run(args: PlotArgs) -> anyhow::Result<()> {
    let svg = match args.picture {
        Picture::Spectrum => crate::plot::spectrum::svg(&spectrum(&args).await?)?,
        Picture::Decay => crate::plot::decay::svg(&decay(&args).await?)?,
        Picture::Phasor => crate::plot::phasor::svg(&phasor(&args).await?)?,
        Picture::Trend => crate::plot::trend::svg(&trend(&args).await?)?,
    };
    let output = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}.svg",
            args.picture
                .to_possible_value()
                .map_or("plot".into(), |v| v.get_name().to_string())
        ))
    });
    std::fs::write(&output, svg).with_context(|| format!("writing {}", output.display()))?;
    println!("{}", output.display());
    Ok(())
}

async fn rows(args: &PlotArgs, query: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let batches = super::sql::query_batches(
        args.server.as_deref(),
        args.data_dir.clone(),
        args.token.as_deref(),
        query,
    )
    .await?;
    Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
}

/// `AND ...` clauses for the options that filter, on table alias `t`.
fn filters(args: &PlotArgs, t: &str, with_seq: bool) -> String {
    let quote = |s: &str| s.replace('\'', "''");
    let mut clauses = String::new();
    if let Some(source) = &args.source {
        clauses += &format!(" AND {t}.source = '{}'", quote(source));
    }
    if let Some(run_id) = &args.run_id {
        clauses += &format!(" AND {t}.run_id = '{}'", quote(run_id));
    }
    if let (true, Some(seq)) = (with_seq, args.seq) {
        clauses += &format!(" AND {t}.seq = {seq}");
    }
    clauses
}

/// Column `name` of `batch` as f64 values (null as NaN).
fn floats(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<f64>> {
    let column = batch
        .column_by_name(name)
        .with_context(|| format!("no column {name}"))?;
    let cast = arrow::compute::cast(column, &DataType::Float64)?;
    let values = cast.as_primitive::<Float64Type>();
    Ok((0..values.len())
        .map(|i| {
            if values.is_null(i) {
                f64::NAN
            } else {
                values.value(i)
            }
        })
        .collect())
}

/// Row `row` of column `name`, a list of numbers, as f64 values; `None` if null.
fn float_list(batch: &RecordBatch, name: &str, row: usize) -> anyhow::Result<Option<Vec<f64>>> {
    let column = batch
        .column_by_name(name)
        .with_context(|| format!("no column {name}"))?;
    let list = column.as_list::<i32>();
    if list.is_null(row) {
        return Ok(None);
    }
    let values = arrow::compute::cast(&list.value(row), &DataType::Float64)?;
    Ok(Some(values.as_primitive::<Float64Type>().values().to_vec()))
}

/// Column `name` of `batch` as strings (null as `"(none)"`).
fn texts(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<String>> {
    let column = batch
        .column_by_name(name)
        .with_context(|| format!("no column {name}"))?;
    let cast = arrow::compute::cast(column, &DataType::Utf8)?;
    Ok(cast
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or("(none)").to_string())
        .collect())
}

async fn spectrum(args: &PlotArgs) -> anyhow::Result<SpectrumPicture> {
    let query = format!(
        "SELECT s.source, s.seq, s.kind, s.intensity_counts, c.wavelength_nm, \
         f.peak_wavelength_nm, f.fwhm_nm \
         FROM spectra s JOIN spectral_calibrations c \
           ON c.source = s.source AND c.calibration_id = s.calibration_id \
         LEFT JOIN spectral_features f ON f.source = s.source AND f.run_id = s.run_id \
           AND f.seq = s.seq AND f.spectrum_index = s.spectrum_index \
         WHERE true{} ORDER BY s.arrival_time_ns DESC, s.spectrum_index LIMIT 1",
        filters(args, "s", true)
    );
    let batches = rows(args, &query).await?;
    let Some(batch) = batches.first() else {
        bail!("no spectrum matches (spectra of sources with store_raw = false are not kept)");
    };
    let title = format!(
        "{} seq {} ({})",
        texts(batch, "source")?[0],
        texts(batch, "seq")?[0],
        texts(batch, "kind")?[0]
    );
    let finite = |v: f64| v.is_finite().then_some(v);
    Ok(SpectrumPicture {
        title,
        wavelength_nm: float_list(batch, "wavelength_nm", 0)?.unwrap_or_default(),
        intensity: float_list(batch, "intensity_counts", 0)?.unwrap_or_default(),
        peak_wavelength_nm: finite(floats(batch, "peak_wavelength_nm")?[0]),
        fwhm_nm: finite(floats(batch, "fwhm_nm")?[0]),
    })
}

async fn decay(args: &PlotArgs) -> anyhow::Result<DecayPicture> {
    // The curve is the server's own model at the row's parameters; rows written before
    // `lifetime_features` recorded the IRF width fall back to --irf-fwhm-ps unless a measured
    // IRF came with the histogram.
    let query = format!(
        "SELECT h.source, h.seq, h.channel, h.bin_width_ps, h.counts, f.components, \
         f.tau_1_ns, f.tau_2_ns, f.tau_3_ns, f.fit_range_start_ns, f.fit_range_end_ns, \
         lifetime_model_counts(h.counts, h.irf_counts, h.bin_width_ps, h.sync_rate_hz, \
           f.components, f.tau_1_ns, f.tau_2_ns, f.tau_3_ns, f.amplitude_1_counts, \
           f.amplitude_2_counts, f.amplitude_3_counts, f.background_counts, f.shift_ns, \
           coalesce(f.irf_fwhm_ps, CASE WHEN h.irf_counts IS NULL THEN {fwhm:?} END)) AS model \
         FROM tcspc_histograms h LEFT JOIN lifetime_features f ON f.source = h.source \
           AND f.run_id = h.run_id AND f.seq = h.seq AND f.channel = h.channel \
           AND f.window_start_ps = h.window_start_ps \
         WHERE true{} ORDER BY h.arrival_time_ns DESC, h.channel LIMIT 1",
        filters(args, "h", true),
        fwhm = args.irf_fwhm_ps,
    );
    let batches = rows(args, &query).await?;
    let Some(batch) = batches.first() else {
        bail!("no TCSPC histogram matches");
    };
    let value = |name: &str| -> anyhow::Result<f64> { Ok(floats(batch, name)?[0]) };
    let counts = float_list(batch, "counts", 0)?.unwrap_or_default();
    let bin_width_ns = value("bin_width_ps")? * 1e-3;
    let model = float_list(batch, "model", 0)?;
    let components = if model.is_some() {
        value("components")? as usize
    } else {
        0
    };
    let taus = [value("tau_1_ns")?, value("tau_2_ns")?, value("tau_3_ns")?];
    let (start_ns, end_ns) = (value("fit_range_start_ns")?, value("fit_range_end_ns")?);
    let fit_range = (start_ns.is_finite() && end_ns.is_finite()).then(|| {
        (
            (start_ns / bin_width_ns).round() as usize,
            (end_ns / bin_width_ns).round() as usize,
        )
    });
    let lifetimes: Vec<String> = taus
        .iter()
        .take(components)
        .map(|t| format!("{t:.3} ns"))
        .collect();
    Ok(DecayPicture {
        title: format!(
            "{} seq {} channel {}{}",
            texts(batch, "source")?[0],
            texts(batch, "seq")?[0],
            texts(batch, "channel")?[0],
            if lifetimes.is_empty() {
                " (not fitted)".to_string()
            } else {
                format!(": tau {}", lifetimes.join(", "))
            }
        ),
        bin_width_ns,
        counts,
        model,
        fit_range,
    })
}

async fn phasor(args: &PlotArgs) -> anyhow::Result<PhasorPicture> {
    let query = format!(
        "SELECT f.source, f.channel, f.phasor_g, f.phasor_s FROM lifetime_features f \
         WHERE f.phasor_g IS NOT NULL{} ORDER BY f.source, f.channel, f.arrival_time_ns",
        filters(args, "f", false)
    );
    let mut groups: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for batch in rows(args, &query).await? {
        let (sources, channels) = (texts(&batch, "source")?, texts(&batch, "channel")?);
        let (g, s) = (floats(&batch, "phasor_g")?, floats(&batch, "phasor_s")?);
        for i in 0..batch.num_rows() {
            let label = format!("{} ch {}", sources[i], channels[i]);
            match groups.iter_mut().find(|(l, _)| *l == label) {
                Some((_, points)) => points.push((g[i], s[i])),
                None => groups.push((label, vec![(g[i], s[i])])),
            }
        }
    }
    Ok(PhasorPicture {
        title: "phasors of the fitted windows".into(),
        groups,
    })
}

async fn trend(args: &PlotArgs) -> anyhow::Result<TrendPicture> {
    let feature = &args.feature;
    if feature.is_empty()
        || !feature
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("--feature {feature:?} is not a column name of spectral_features");
    }
    let query = format!(
        "SELECT f.condition_id, coalesce(f.instrument_time_ns, f.arrival_time_ns) AS t, \
         f.{feature} AS value FROM spectral_features f \
         WHERE f.{feature} IS NOT NULL{} ORDER BY t",
        filters(args, "f", false)
    );
    let mut conditions: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut first_ns: Option<i64> = None;
    for batch in rows(args, &query).await? {
        let times = arrow::compute::cast(
            batch.column_by_name("t").context("no column t")?,
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )?;
        let times = arrow::compute::cast(&times, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let (labels, values) = (texts(&batch, "condition_id")?, floats(&batch, "value")?);
        for i in 0..batch.num_rows() {
            let t = times.value(i);
            let start = *first_ns.get_or_insert(t);
            let point = ((t - start) as f64 * 1e-9, values[i]);
            match conditions.iter_mut().find(|(c, _)| *c == labels[i]) {
                Some((_, points)) => points.push(point),
                None => conditions.push((labels[i].clone(), vec![point])),
            }
        }
    }
    Ok(TrendPicture {
        title: format!("spectral_features.{feature} by condition"),
        feature: feature.clone(),
        conditions,
    })
}
