//! The `spectral_features` extractor: PL and absorbance features of every spectrum as it arrives.
//!
//! A spectra message carries its rows and, in `spectral_calibrations`, the axis of each
//! calibration it uses. Rows are grouped by (calibration, kind): `pl` rows go through
//! [`PlAnalyzer::features`], `absorbance` rows through [`AbsorbanceAnalyzer::features`] (one
//! analyzer of each per calibration, prepared on first use); `sample`, `dark` and
//! `reference` rows are the raw ingredients of an absorbance and get no features of their own.
//! Every analysed spectrum gets exactly one row, keyed to it by `source`, `seq` and
//! `spectrum_index`, with nulls where a value is meaningless and the reason in `quality_flags`.
//!
//! Relative PLQY (when configured) pairs each PL spectrum with the latest absorbance at the
//! excitation wavelength seen for the same source, run and condition: the nearest earlier
//! measurement, since a live pipeline cannot wait for a later one. The pairing lives in memory;
//! after a restart PLQY is null until the next absorbance of the condition arrives.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, Float64Array, StringArray, StringBuilder, UInt32Array,
};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use flowdaq_analytics::spectral::{
    relative_plqy, AbsorbanceAnalyzer, AbsorbanceOptions, AslsParams, Baseline, PeakOptions,
    PlAnalyzer, PlqyReference, Preprocessing, QualityFlags, SpectralError,
};
use flowdaq_schemas::tables::{ABSORBANCE_FEATURE_COLUMNS, PL_FEATURE_COLUMNS};
use flowdaq_schemas::Table;

use super::velocity::SharedVelocity;
use super::{Extractor, FeatureError};
use crate::config::{BaselineChoice, SpectralFeaturesConfig};

/// Columns copied unchanged from `spectra` into `spectral_features`.
const KEY_COLUMNS: [&str; 10] = [
    "arrival_time_ns",
    "instrument_time_ns",
    "source",
    "run_id",
    "condition_id",
    "seq",
    "spectrum_index",
    "kind",
    "probe_position_mm",
    "integration_time_ms",
];

/// Which analysis a spectrum kind gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Analysis {
    Pl,
    Absorbance,
}

/// The extractor; see the module doc.
pub struct SpectralFeatures {
    peak: PeakOptions,
    absorbance: AbsorbanceOptions,
    plqy: Option<(PlqyReference, f64)>,
    /// Latest absorbance at the excitation wavelength per (source, run, condition).
    latest_absorbance: HashMap<(String, String, Option<String>), f64>,
    /// Velocity history and mixing point (mm) for reaction times, when flow is measured.
    reaction: Option<(SharedVelocity, f64)>,
    /// The PL and absorbance analyses prepared per calibration id (axis validated, weights
    /// and pixel positions found once).
    pl_analyzers: HashMap<u64, PlAnalyzer>,
    absorbance_analyzers: HashMap<u64, AbsorbanceAnalyzer>,
}

/// Calibrations whose prepared analyses are kept; past this many a cache starts over.
const MAX_PREPARED_CALIBRATIONS: usize = 64;

impl SpectralFeatures {
    /// An extractor with the configured options.
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] for options the kernels refuse.
    pub fn new(
        config: &SpectralFeaturesConfig,
        reaction: Option<(SharedVelocity, f64)>,
    ) -> Result<SpectralFeatures, SpectralError> {
        let preprocessing = Preprocessing {
            savgol: config.savgol.map(|[window, order]| (window, order)),
            baseline: match config.baseline {
                BaselineChoice::None => Baseline::None,
                BaselineChoice::LinearEdge => Baseline::LinearEdge { edge_pixels: 10 },
                BaselineChoice::Asls => Baseline::Asls(AslsParams::default()),
            },
        };
        let window_nm = config.window_nm.map(|[low, high]| (low, high));
        let peak = PeakOptions {
            min_prominence: config.min_prominence_counts,
            min_relative_prominence: config.min_relative_prominence,
            max_secondary_peaks: config.max_secondary_peaks,
            saturation_level: config.saturation_level_counts,
            window_nm,
            preprocessing,
            ..PeakOptions::default()
        };
        peak.validate()?;
        let absorbance = AbsorbanceOptions {
            min_exciton_prominence: config.min_exciton_prominence,
            min_exciton_relative_prominence: config.min_exciton_relative_prominence,
            excitation_nm: config.excitation_nm,
            inner_filter_od: config.inner_filter_od,
            window_nm,
            preprocessing,
            ..AbsorbanceOptions::default()
        };
        absorbance.validate()?;
        let plqy = match config.plqy {
            Some(p) => {
                let reference = PlqyReference {
                    quantum_yield: p.reference_quantum_yield,
                    integrated_pl: p.reference_integrated_pl_counts_nm,
                    absorbance_at_excitation: p.reference_absorbance_at_excitation,
                    refractive_index: p.reference_refractive_index,
                };
                reference.validate()?;
                if !(p.sample_refractive_index.is_finite() && p.sample_refractive_index > 0.0) {
                    return Err(SpectralError::InvalidOption {
                        name: "plqy.sample_refractive_index",
                        reason: "must be finite and > 0",
                    });
                }
                if config.excitation_nm.is_none() {
                    return Err(SpectralError::InvalidOption {
                        name: "plqy",
                        reason: "needs excitation_nm, where the absorbance is read",
                    });
                }
                Some((reference, p.sample_refractive_index))
            }
            None => None,
        };
        Ok(SpectralFeatures {
            peak,
            absorbance,
            plqy,
            latest_absorbance: HashMap::new(),
            reaction,
            pl_analyzers: HashMap::new(),
            absorbance_analyzers: HashMap::new(),
        })
    }

    /// Features of the rows of one (calibration, analysis) group.
    fn group_features(
        &mut self,
        rows: &RecordBatch,
        calibration: u64,
        axis_nm: &[f64],
        analysis: Analysis,
    ) -> Result<RecordBatch, FeatureError> {
        let intensities = column(rows, "intensity_counts")?;
        let n = rows.num_rows();
        let null_f64 = || -> ArrayRef { Arc::new(Float64Array::new_null(n)) };
        let schema = Table::SpectralFeatures.unsequenced_schema();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for name in KEY_COLUMNS {
            columns.push(column(rows, name)?.clone());
        }
        let flags: UInt32Array = match analysis {
            Analysis::Pl => {
                let f = prepared(
                    &mut self.pl_analyzers,
                    calibration,
                    axis_nm,
                    PlAnalyzer::axis_nm,
                    || PlAnalyzer::new(axis_nm, &self.peak),
                )?
                .features(intensities.as_ref())?;
                let plqy: ArrayRef = match &self.plqy {
                    Some((reference, sample_index)) => {
                        let absorbance = self.paired_absorbance(rows)?;
                        Arc::new(relative_plqy(
                            &f.integrated_intensity_counts_nm,
                            &absorbance,
                            *sample_index,
                            reference,
                        )?)
                    }
                    None => null_f64(),
                };
                columns.extend([
                    Arc::new(f.peak_wavelength_nm) as ArrayRef,
                    Arc::new(f.peak_energy_ev),
                    Arc::new(f.fwhm_nm),
                    Arc::new(f.fwhm_ev),
                    Arc::new(f.peak_height_counts),
                    Arc::new(f.peak_prominence_counts),
                    Arc::new(f.integrated_intensity_counts_nm),
                    Arc::new(f.iqr_nm),
                    Arc::new(f.peak_count),
                    Arc::new(f.secondary_peaks),
                ]);
                columns.extend((0..ABSORBANCE_FEATURE_COLUMNS.len()).map(|_| null_f64()));
                columns.push(plqy);
                f.quality_flags
            }
            Analysis::Absorbance => {
                let f = prepared(
                    &mut self.absorbance_analyzers,
                    calibration,
                    axis_nm,
                    AbsorbanceAnalyzer::axis_nm,
                    || AbsorbanceAnalyzer::new(axis_nm, &self.absorbance),
                )?
                .features(intensities.as_ref())?;
                self.remember_absorbance(rows, &f.absorbance_at_excitation)?;
                columns.extend((0..PL_FEATURE_COLUMNS.len()).map(|_| null_f64()));
                let secondary_type = schema.field_with_name("secondary_peaks")?.data_type();
                columns.push(Arc::new(UInt32Array::new_null(n)));
                columns.push(new_null_array(secondary_type, n));
                columns.extend([
                    Arc::new(f.exciton_wavelength_nm) as ArrayRef,
                    Arc::new(f.exciton_energy_ev),
                    Arc::new(f.exciton_absorbance),
                    Arc::new(f.exciton_prominence),
                    Arc::new(f.absorbance_at_excitation),
                    Arc::new(f.max_absorbance),
                    Arc::new(f.concentration_mol_per_l),
                    Arc::new(f.brus_diameter_nm),
                ]);
                columns.push(null_f64());
                f.quality_flags
            }
        };
        let (velocity, reaction_time) = self.reaction_times(rows)?;
        columns.push(Arc::new(velocity));
        columns.push(Arc::new(reaction_time));
        let (flags, names) = flag_columns(&flags);
        columns.push(Arc::new(flags));
        columns.push(Arc::new(names));
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Velocity (mm/s) in force at each spectrum's time and its reaction time (s): the time its
    /// plug took from the mixing point to `probe_position_mm` (see `features::velocity`). The
    /// spectrum's time is its instrument time, else its arrival time. Null without flow
    /// measurement, probe position or a velocity covering the trip.
    fn reaction_times(
        &self,
        rows: &RecordBatch,
    ) -> Result<(Float64Array, Float64Array), FeatureError> {
        let n = rows.num_rows();
        let Some((velocity, mixing_point_mm)) = &self.reaction else {
            return Ok((Float64Array::new_null(n), Float64Array::new_null(n)));
        };
        let arrival = column(rows, "arrival_time_ns")?.as_primitive::<TimestampNanosecondType>();
        let instrument =
            column(rows, "instrument_time_ns")?.as_primitive::<TimestampNanosecondType>();
        let positions = column(rows, "probe_position_mm")?.as_primitive::<Float64Type>();
        let mut history = velocity.lock().unwrap_or_else(|p| p.into_inner());
        let mut speeds = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        for row in 0..n {
            let t_ns = if instrument.is_valid(row) {
                instrument.value(row)
            } else {
                arrival.value(row)
            };
            speeds.push(history.velocity_at(t_ns));
            let path_mm = positions
                .is_valid(row)
                .then(|| positions.value(row) - mixing_point_mm);
            times.push(path_mm.and_then(|path| history.reaction_time_s(t_ns, path)));
        }
        Ok((Float64Array::from(speeds), Float64Array::from(times)))
    }

    /// The absorbance each PL row is paired with (null where none is known yet).
    fn paired_absorbance(&self, rows: &RecordBatch) -> Result<Float64Array, FeatureError> {
        let (sources, runs, conditions) = identity_columns(rows)?;
        let mut key = (String::new(), String::new(), None);
        Ok((0..rows.num_rows())
            .map(|row| {
                fill_key(&mut key, sources, runs, conditions, row);
                self.latest_absorbance.get(&key).copied()
            })
            .collect())
    }

    fn remember_absorbance(
        &mut self,
        rows: &RecordBatch,
        absorbance_at_excitation: &Float64Array,
    ) -> Result<(), FeatureError> {
        if self.plqy.is_none() {
            return Ok(());
        }
        let (sources, runs, conditions) = identity_columns(rows)?;
        for row in 0..rows.num_rows() {
            if absorbance_at_excitation.is_valid(row) {
                let mut key = (String::new(), String::new(), None);
                fill_key(&mut key, sources, runs, conditions, row);
                self.latest_absorbance
                    .insert(key, absorbance_at_excitation.value(row));
            }
        }
        Ok(())
    }
}

impl Extractor for SpectralFeatures {
    fn name(&self) -> &'static str {
        "spectral_features"
    }

    fn extract(
        &mut self,
        message: &[(Table, RecordBatch)],
    ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        let Some((_, spectra)) = message.iter().find(|(t, _)| *t == Table::Spectra) else {
            return Ok(Vec::new());
        };
        let axes = axes_of(message)?;
        let kinds = column(spectra, "kind")?.as_string::<i32>();
        let calibrations = column(spectra, "calibration_id")?.as_primitive::<UInt64Type>();
        // Groups in order of first appearance; absorbance groups first so PL rows of the same
        // message pair with the absorbance that came with them.
        let mut groups: Vec<(u64, Analysis, Vec<u32>)> = Vec::new();
        for row in 0..spectra.num_rows() {
            let analysis = match kinds.value(row) {
                "pl" => Analysis::Pl,
                "absorbance" => Analysis::Absorbance,
                _ => continue,
            };
            let calibration = calibrations.value(row);
            match groups
                .iter_mut()
                .find(|(c, a, _)| *c == calibration && *a == analysis)
            {
                Some((_, _, rows)) => rows.push(row as u32),
                None => groups.push((calibration, analysis, vec![row as u32])),
            }
        }
        groups.sort_by_key(|(_, analysis, _)| *analysis == Analysis::Pl);
        let mut outputs = Vec::with_capacity(groups.len());
        for (calibration, analysis, rows) in groups {
            let axis = axes.get(&calibration).ok_or_else(|| {
                FeatureError::Missing(format!(
                    "calibration {calibration:#x} of the spectra is not in the message"
                ))
            })?;
            let group_rows = if rows.len() == spectra.num_rows() {
                spectra.clone()
            } else {
                take_record_batch(spectra, &UInt32Array::from(rows))?
            };
            outputs.push(self.group_features(&group_rows, calibration, axis.values(), analysis)?);
        }
        match outputs.len() {
            0 => Ok(Vec::new()),
            1 => Ok(vec![(Table::SpectralFeatures, outputs.remove(0))]),
            _ => {
                let schema = outputs[0].schema();
                let batch = concat_batches(&schema, &outputs)?;
                Ok(vec![(Table::SpectralFeatures, batch)])
            }
        }
    }
}

/// The analysis `cache` holds for `calibration`, built on first use, and built again if the
/// id ever comes with another axis; past [`MAX_PREPARED_CALIBRATIONS`] the cache starts over.
fn prepared<'c, A>(
    cache: &'c mut HashMap<u64, A>,
    calibration: u64,
    axis_nm: &[f64],
    axis_of: impl Fn(&A) -> &[f64],
    build: impl Fn() -> Result<A, SpectralError>,
) -> Result<&'c mut A, FeatureError> {
    if cache.len() >= MAX_PREPARED_CALIBRATIONS && !cache.contains_key(&calibration) {
        cache.clear();
    }
    Ok(match cache.entry(calibration) {
        Entry::Occupied(mut entry) => {
            if axis_of(entry.get()) != axis_nm {
                entry.insert(build()?);
            }
            entry.into_mut()
        }
        Entry::Vacant(entry) => entry.insert(build()?),
    })
}

/// The axis of every calibration in the message, by calibration id (views of the message's
/// own buffer, not copies).
fn axes_of(message: &[(Table, RecordBatch)]) -> Result<HashMap<u64, Float64Array>, FeatureError> {
    let mut axes = HashMap::new();
    for (_, batch) in message
        .iter()
        .filter(|(t, _)| *t == Table::SpectralCalibrations)
    {
        let ids = column(batch, "calibration_id")?.as_primitive::<UInt64Type>();
        let lists = column(batch, "wavelength_nm")?.as_list::<i32>();
        for row in 0..batch.num_rows() {
            let values = lists.value(row);
            axes.insert(ids.value(row), values.as_primitive::<Float64Type>().clone());
        }
    }
    Ok(axes)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, FeatureError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| FeatureError::Missing(format!("column {name} missing from the message")))
}

fn identity_columns(
    rows: &RecordBatch,
) -> Result<(&StringArray, &StringArray, &StringArray), FeatureError> {
    Ok((
        column(rows, "source")?.as_string::<i32>(),
        column(rows, "run_id")?.as_string::<i32>(),
        column(rows, "condition_id")?.as_string::<i32>(),
    ))
}

fn fill_key(
    key: &mut (String, String, Option<String>),
    sources: &StringArray,
    runs: &StringArray,
    conditions: &StringArray,
    row: usize,
) {
    key.0.clear();
    key.0.push_str(sources.value(row));
    key.1.clear();
    key.1.push_str(runs.value(row));
    key.2 = conditions
        .is_valid(row)
        .then(|| conditions.value(row).to_string());
}

/// The non-null flags column and its human-readable names (`SATURATED|PEAK_AT_EDGE`, or
/// empty). A null flag (a null spectrum, which `spectra` never holds) reads as non-finite.
fn flag_columns(flags: &UInt32Array) -> (UInt32Array, StringArray) {
    let mut names = StringBuilder::with_capacity(flags.len(), 16 * flags.len());
    let values: UInt32Array = (0..flags.len())
        .map(|row| {
            let bits = if flags.is_valid(row) {
                flags.value(row)
            } else {
                QualityFlags::NON_FINITE_PIXELS.0
            };
            // The builder's fmt::Write appends to the current value; append_value("") ends it.
            for (index, name) in QualityFlags(bits).names().enumerate() {
                let separator = if index == 0 { "" } else { "|" };
                let _ = names.write_str(separator);
                let _ = names.write_str(name);
            }
            names.append_value("");
            Some(bits)
        })
        .collect();
    (values, names.finish())
}

#[cfg(test)]
mod tests;
