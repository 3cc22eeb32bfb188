//! Arrow schemas of the tables flowdaq writes, one function per table.
//!
//! Column names carry their units (`arrival_time_ns`, `integration_time_ms`). Each schema
//! carries its version in its metadata under [`SCHEMA_VERSION_KEY`]; the persister copies it
//! into every Parquet file so a reader can tell which layout it is looking at. A schema change
//! that is not purely additive must bump the version.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_array::{new_null_array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Metadata key under which every table schema (and every Parquet file) records its version.
pub const SCHEMA_VERSION_KEY: &str = "flowdaq.schema_version";

/// Last column of every published table: the row's number in its stream
/// `{table}/{run_id}/{source}`, 1 for the first row, +1 per row, no gaps.
pub const STREAM_SEQ_COLUMN: &str = "stream_seq";

/// Every table flowdaq stores. The name is the SQL table name and the directory name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per spectrum (PL, absorbance, or the raw sample/dark/reference spectra).
    Spectra,
    /// One row per wavelength calibration of a source: the axis stored once, not per spectrum.
    SpectralCalibrations,
    /// One row per photon (or marker) event of a TCSPC source.
    Photons,
    /// One row per chunk of a phase-sensor pair's two voltage traces.
    PhaseTraces,
    /// One row per rejected frame, kept aside for inspection.
    IngestErrors,
    /// One row per PL or absorbance spectrum: the features extracted from it as it arrived.
    SpectralFeatures,
    /// One row per analysed window of a phase-sensor pair: velocity, segments, flow numbers.
    FlowFeatures,
    /// One row per plug or carrier segment seen at a phase-sensor pair.
    FlowSegments,
    /// One row per window and channel of a TCSPC source: its micro-time histogram.
    TcspcHistograms,
    /// One row per window and channel of a TCSPC source: lifetime fit and phasor.
    LifetimeFeatures,
    /// One row per registered reaction condition: its parameters and start time.
    Conditions,
    /// One row per condition, source and configured feature: the settled (or unsettled) outcome.
    ConditionOutcomes,
    /// One row per scalar reading of an event (a motor position, a temperature), in long form.
    Readings,
    /// One row per run-level document: a run's start, its stream descriptors, references to
    /// external files, and its stop.
    Runs,
}

/// One schema per table, built on first use.
type SchemaCache = [OnceLock<SchemaRef>; Table::ALL.len()];

impl Table {
    /// All tables, in a stable order.
    pub const ALL: [Table; 14] = [
        Table::Spectra,
        Table::SpectralCalibrations,
        Table::Photons,
        Table::PhaseTraces,
        Table::IngestErrors,
        Table::SpectralFeatures,
        Table::FlowFeatures,
        Table::FlowSegments,
        Table::TcspcHistograms,
        Table::LifetimeFeatures,
        Table::Conditions,
        Table::ConditionOutcomes,
        Table::Readings,
        Table::Runs,
    ];

    /// The SQL and directory name of the table.
    pub fn name(self) -> &'static str {
        match self {
            Table::Spectra => "spectra",
            Table::SpectralCalibrations => "spectral_calibrations",
            Table::Photons => "photons",
            Table::PhaseTraces => "phase_traces",
            Table::IngestErrors => "ingest_errors",
            Table::SpectralFeatures => "spectral_features",
            Table::FlowFeatures => "flow_features",
            Table::FlowSegments => "flow_segments",
            Table::TcspcHistograms => "tcspc_histograms",
            Table::LifetimeFeatures => "lifetime_features",
            Table::Conditions => "conditions",
            Table::ConditionOutcomes => "condition_outcomes",
            Table::Readings => "readings",
            Table::Runs => "runs",
        }
    }

    /// Looks a table up by its SQL name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// `batch` in this table's current layout. Columns are matched by name; a column that a
    /// batch of an earlier version lacks is filled with nulls (every column added since the
    /// first version is nullable), and the current schema, with its version, is stamped on.
    /// Rows written by a previous version (its write-ahead log, replayed after an upgrade) so
    /// join today's rows in the buffer and in new Parquet files.
    ///
    /// # Errors
    /// `ArrowError::SchemaError` naming a column that is missing but not nullable, of another
    /// type, or unknown to this version.
    pub fn conform(self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let schema = self.schema();
        let given = batch.schema();
        if given.fields() == schema.fields() {
            return RecordBatch::try_new(schema, batch.columns().to_vec());
        }
        let problem = |what: String| {
            ArrowError::SchemaError(format!("{} rows of another layout: {what}", self.name()))
        };
        if let Some(unknown) = given
            .fields()
            .iter()
            .find(|f| schema.field_with_name(f.name()).is_err())
        {
            return Err(problem(format!("unknown column {:?}", unknown.name())));
        }
        let columns = schema
            .fields()
            .iter()
            .map(|field| match given.index_of(field.name()) {
                Ok(index) if given.field(index).data_type() == field.data_type() => {
                    Ok(batch.column(index).clone())
                }
                Ok(index) => Err(problem(format!(
                    "column {:?} is {}, not {}",
                    field.name(),
                    given.field(index).data_type(),
                    field.data_type()
                ))),
                Err(_) if field.is_nullable() => {
                    Ok(new_null_array(field.data_type(), batch.num_rows()))
                }
                Err(_) => Err(problem(format!("column {:?} is missing", field.name()))),
            })
            .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
        RecordBatch::try_new(schema, columns)
    }

    /// The version of this table's layout; stored in schema and Parquet metadata.
    pub fn schema_version(self) -> u32 {
        match self {
            // Version 4 added the FWHM of the Gaussian IRF each fit used.
            Table::LifetimeFeatures => 4,
            // Version 3 added the counts of photons no bin holds and the IRF of histogram
            // messages, and the fit flags and range.
            Table::TcspcHistograms => 3,
            // Version 2 added `stream_seq`.
            Table::SpectralFeatures | Table::FlowFeatures | Table::FlowSegments => 2,
            _ => 1,
        }
    }

    /// Whether the table's rows go out on the feature stream. Such a table ends with the
    /// [`STREAM_SEQ_COLUMN`] and has `run_id` and `source` columns naming its stream.
    pub fn is_published(self) -> bool {
        matches!(
            self,
            Table::SpectralFeatures
                | Table::FlowFeatures
                | Table::FlowSegments
                | Table::TcspcHistograms
                | Table::LifetimeFeatures
                | Table::Conditions
                | Table::ConditionOutcomes
        )
    }

    /// The schema without its [`STREAM_SEQ_COLUMN`]: what a feature extractor builds; the
    /// pipeline appends the sequence numbers before the rows are written. Equal to
    /// [`Table::schema`] for tables that are not published. Built once, shared (see
    /// [`Table::schema`]).
    pub fn unsequenced_schema(self) -> SchemaRef {
        static SCHEMAS: SchemaCache = [const { OnceLock::new() }; Table::ALL.len()];
        self.cached(&SCHEMAS, Table::build_unsequenced_schema)
    }

    /// `self`'s entry of `cache`, built by `build` the first time.
    fn cached(self, cache: &'static SchemaCache, build: fn(Table) -> SchemaRef) -> SchemaRef {
        cache[self as usize].get_or_init(|| build(self)).clone()
    }

    fn build_unsequenced_schema(self) -> SchemaRef {
        let schema = self.schema();
        if !self.is_published() {
            return schema;
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != STREAM_SEQ_COLUMN)
            .map(|f| f.as_ref().clone())
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// The Arrow schema of the table. Built once and shared: every batch of every message
    /// holds it, and a schema of its own per batch (forty `Field`s to allocate and free for a
    /// feature row) cost more than the rows' data.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: SchemaCache = [const { OnceLock::new() }; Table::ALL.len()];
        self.cached(&SCHEMAS, Table::build_schema)
    }

    fn build_schema(self) -> SchemaRef {
        let fields = match self {
            Table::Spectra => spectra_fields(),
            Table::SpectralCalibrations => calibration_fields(),
            Table::Photons => photon_fields(),
            Table::PhaseTraces => phase_trace_fields(),
            Table::IngestErrors => ingest_error_fields(),
            Table::SpectralFeatures => spectral_feature_fields(),
            Table::FlowFeatures => flow_feature_fields(),
            Table::FlowSegments => flow_segment_fields(),
            Table::TcspcHistograms => tcspc_histogram_fields(),
            Table::LifetimeFeatures => lifetime_feature_fields(),
            Table::Conditions => condition_fields(),
            Table::ConditionOutcomes => condition_outcome_fields(),
            Table::Readings => reading_fields(),
            Table::Runs => run_fields(),
        };
        let mut fields = fields;
        if self.is_published() {
            fields.push(Field::new(STREAM_SEQ_COLUMN, DataType::UInt64, false));
        }
        let metadata = HashMap::from([(
            SCHEMA_VERSION_KEY.to_string(),
            format!("{}/{}", self.name(), self.schema_version()),
        )]);
        Arc::new(Schema::new_with_metadata(fields, metadata))
    }
}

/// The timestamp type of every time column: nanoseconds since the Unix epoch, UTC.
pub fn timestamp_ns() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Columns that every stream table starts with: where and when a message came from.
fn provenance_fields() -> Vec<Field> {
    vec![
        Field::new("arrival_time_ns", timestamp_ns(), false),
        Field::new("instrument_time_ns", timestamp_ns(), true),
        Field::new("source", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("condition_id", DataType::Utf8, true),
        Field::new("seq", DataType::UInt64, false),
    ]
}

/// The list type of spectral intensities.
pub fn intensity_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float32, false)))
}

/// The list type of a wavelength axis.
pub fn axis_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, false)))
}

/// Provenance plus what identifies and describes one spectrum; shared by `spectra` and
/// `spectral_features` so the two join on `(source, seq, spectrum_index)`.
fn spectrum_fields() -> Vec<Field> {
    let mut fields = provenance_fields();
    fields.extend([
        Field::new("spectrum_index", DataType::UInt32, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("probe_position_mm", DataType::Float64, true),
        Field::new("integration_time_ms", DataType::Float64, false),
    ]);
    fields
}

fn spectra_fields() -> Vec<Field> {
    let mut fields = spectrum_fields();
    fields.extend([
        Field::new("calibration_id", DataType::UInt64, false),
        Field::new("intensity_counts", intensity_list_type(), false),
    ]);
    fields
}

fn calibration_fields() -> Vec<Field> {
    vec![
        Field::new("arrival_time_ns", timestamp_ns(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("calibration_id", DataType::UInt64, false),
        Field::new("pixel_count", DataType::UInt32, false),
        Field::new("wavelength_nm", axis_list_type(), false),
    ]
}

fn photon_fields() -> Vec<Field> {
    let mut fields = provenance_fields();
    fields.extend([
        Field::new("macro_time_ps", DataType::Int64, false),
        Field::new("micro_time_ps", DataType::Int32, false),
        Field::new("channel", DataType::UInt8, false),
        Field::new("marker_flags", DataType::UInt8, false),
    ]);
    fields
}

fn phase_trace_fields() -> Vec<Field> {
    let mut fields = provenance_fields();
    fields.extend([
        Field::new("first_sample_time_ns", timestamp_ns(), false),
        Field::new("sample_rate_hz", DataType::Float64, false),
        Field::new("sample_count", DataType::UInt32, false),
        Field::new(
            "sensor_a_volts",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
        Field::new(
            "sensor_b_volts",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
    ]);
    fields
}

/// Fields of one entry of `spectral_features.secondary_peaks`.
pub fn secondary_peak_fields() -> Fields {
    Fields::from(vec![
        Field::new("wavelength_nm", DataType::Float64, false),
        Field::new("energy_ev", DataType::Float64, false),
        Field::new("height_counts", DataType::Float64, false),
        Field::new("prominence_counts", DataType::Float64, false),
    ])
}

/// PL feature columns of `spectral_features` (null on absorbance rows).
pub const PL_FEATURE_COLUMNS: [&str; 8] = [
    "peak_wavelength_nm",
    "peak_energy_ev",
    "fwhm_nm",
    "fwhm_ev",
    "peak_height_counts",
    "peak_prominence_counts",
    "integrated_intensity_counts_nm",
    "iqr_nm",
];

/// Absorbance feature columns of `spectral_features` (null on PL rows).
pub const ABSORBANCE_FEATURE_COLUMNS: [&str; 8] = [
    "exciton_wavelength_nm",
    "exciton_energy_ev",
    "exciton_absorbance",
    "exciton_prominence",
    "absorbance_at_excitation",
    "max_absorbance",
    "concentration_mol_per_l",
    "brus_diameter_nm",
];

/// One row per analysed spectrum. It repeats the spectrum's provenance and key (`source`,
/// `seq`, `spectrum_index`) so it joins to `spectra`, and it is written even when the raw
/// spectrum is not stored (`store_raw = false`).
fn spectral_feature_fields() -> Vec<Field> {
    let mut fields = spectrum_fields();
    fields.extend(
        PL_FEATURE_COLUMNS
            .iter()
            .map(|name| Field::new(*name, DataType::Float64, true)),
    );
    let secondary = Field::new_list_field(DataType::Struct(secondary_peak_fields()), true);
    fields.extend([
        Field::new("peak_count", DataType::UInt32, true),
        Field::new("secondary_peaks", DataType::List(Arc::new(secondary)), true),
    ]);
    fields.extend(
        ABSORBANCE_FEATURE_COLUMNS
            .iter()
            .map(|name| Field::new(*name, DataType::Float64, true)),
    );
    fields.extend([
        Field::new("plqy", DataType::Float64, true),
        Field::new("velocity_mm_per_s", DataType::Float64, true),
        Field::new("reaction_time_s", DataType::Float64, true),
        Field::new("quality_flags", DataType::UInt32, false),
        Field::new("quality_flag_names", DataType::Utf8, false),
    ]);
    fields
}

/// Per-window columns of `flow_features` after the provenance, with their types; the order and
/// names are those of `flowdaq_analytics::flow::FlowFeatures` (a daq test checks it).
pub const FLOW_FEATURE_COLUMNS: [(&str, FlowColumn); 29] = [
    ("window_duration_s", FlowColumn::Seconds),
    ("velocity_mm_per_s", FlowColumn::Value),
    ("velocity_interfaces_mm_per_s", FlowColumn::Value),
    ("velocity_xcorr_mm_per_s", FlowColumn::Value),
    ("xcorr_coefficient", FlowColumn::Value),
    ("velocity_cv", FlowColumn::Value),
    ("matched_interfaces", FlowColumn::Count),
    ("interfaces_a", FlowColumn::Count),
    ("interfaces_b", FlowColumn::Count),
    ("segment_frequency_hz", FlowColumn::Value),
    ("plug_count", FlowColumn::Count),
    ("plug_duration_mean_s", FlowColumn::Value),
    ("plug_length_mean_mm", FlowColumn::Value),
    ("plug_length_cv", FlowColumn::Value),
    ("carrier_count", FlowColumn::Count),
    ("carrier_duration_mean_s", FlowColumn::Value),
    ("carrier_length_mean_mm", FlowColumn::Value),
    ("carrier_length_cv", FlowColumn::Value),
    ("merged_segments", FlowColumn::Count),
    ("split_segments", FlowColumn::Count),
    ("longest_gap_s", FlowColumn::Seconds),
    ("reynolds_number", FlowColumn::Value),
    ("capillary_number", FlowColumn::Value),
    ("weber_number", FlowColumn::Value),
    ("bond_number", FlowColumn::Value),
    ("peclet_number", FlowColumn::Value),
    ("diffusion_time_s", FlowColumn::Value),
    ("damkohler_number", FlowColumn::Value),
    ("quality_flags", FlowColumn::Count),
];

/// The Arrow type of a `flow_features` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowColumn {
    /// Non-null Float64 (a duration that always exists).
    Seconds,
    /// Nullable Float64 (null where the window gives no answer).
    Value,
    /// Non-null UInt32 (counts and the flag bitmask).
    Count,
}

/// One row per analysed window: provenance of the trace chunk that completed the window (its
/// `seq`), the window start, the pair's position along the tube, then the flow columns.
fn flow_feature_fields() -> Vec<Field> {
    let mut fields = provenance_fields();
    fields.push(Field::new("window_start_ns", timestamp_ns(), false));
    fields.push(Field::new("pair_position_mm", DataType::Float64, true));
    fields.extend(FLOW_FEATURE_COLUMNS.iter().map(|(name, kind)| match kind {
        FlowColumn::Seconds => Field::new(*name, DataType::Float64, false),
        FlowColumn::Value => Field::new(*name, DataType::Float64, true),
        FlowColumn::Count => Field::new(*name, DataType::UInt32, false),
    }));
    fields.push(Field::new("quality_flag_names", DataType::Utf8, false));
    fields
}

/// One row per segment (plug or carrier) at sensor A of a pair.
fn flow_segment_fields() -> Vec<Field> {
    vec![
        Field::new("arrival_time_ns", timestamp_ns(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("condition_id", DataType::Utf8, true),
        Field::new("window_start_ns", timestamp_ns(), false),
        Field::new("start_time_ns", timestamp_ns(), false),
        Field::new("is_plug", DataType::Boolean, false),
        Field::new("duration_s", DataType::Float64, false),
        Field::new("length_mm", DataType::Float64, true),
        Field::new("quality_flags", DataType::UInt32, false),
    ]
}

/// Provenance of the photons message that closed a TCSPC window, then the window (ps on the
/// instrument's own clock, as `photons.macro_time_ps`) and the channel.
fn tcspc_window_fields() -> Vec<Field> {
    let mut fields = provenance_fields();
    fields.extend([
        Field::new("window_start_ps", DataType::Int64, false),
        Field::new("window_end_ps", DataType::Int64, false),
        Field::new("channel", DataType::UInt8, false),
        Field::new("photon_count", DataType::UInt64, false),
    ]);
    fields
}

fn tcspc_histogram_fields() -> Vec<Field> {
    let mut fields = tcspc_window_fields();
    fields.extend([
        Field::new("count_rate_hz", DataType::Float64, false),
        Field::new("sync_rate_hz", DataType::Float64, false),
        Field::new("pile_up", DataType::Boolean, false),
        Field::new("bin_width_ps", DataType::Float64, false),
        Field::new(
            "counts",
            DataType::List(Arc::new(Field::new("item", DataType::UInt32, true))),
            false,
        ),
        // Photons of the window that no bin holds (nullable: files of version 2 lack them).
        Field::new("beyond_last_bin_photons", DataType::UInt64, true),
        Field::new("other_channel_photons", DataType::UInt64, true),
        // The measured IRF a histogram message came with (null for windows of photons).
        Field::new(
            "irf_counts",
            DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
            true,
        ),
    ]);
    fields
}

/// Fitted-parameter columns of `lifetime_features`, all nullable Float64 (unused components and
/// failed fits are null).
pub const LIFETIME_VALUE_COLUMNS: [&str; 18] = [
    "tau_1_ns",
    "tau_2_ns",
    "tau_3_ns",
    "tau_1_stderr_ns",
    "tau_2_stderr_ns",
    "tau_3_stderr_ns",
    "amplitude_1_counts",
    "amplitude_2_counts",
    "amplitude_3_counts",
    "background_counts",
    "shift_ns",
    "tau_amplitude_weighted_ns",
    "tau_intensity_weighted_ns",
    "reduced_chi_square",
    "phasor_g",
    "phasor_s",
    "phasor_tau_phase_ns",
    "phasor_tau_modulation_ns",
];

fn lifetime_feature_fields() -> Vec<Field> {
    let mut fields = tcspc_window_fields();
    fields.extend([
        Field::new("count_rate_hz", DataType::Float64, false),
        Field::new("pile_up", DataType::Boolean, false),
        Field::new("components", DataType::UInt32, false),
        Field::new("statistic", DataType::Utf8, false),
    ]);
    fields.extend(
        LIFETIME_VALUE_COLUMNS
            .iter()
            .map(|name| Field::new(*name, DataType::Float64, true)),
    );
    fields.extend([
        Field::new("converged", DataType::Boolean, false),
        Field::new("fit_error", DataType::Utf8, true),
        // Quality of the fit beside `converged` (nullable: files of version 2 lack them; null
        // where no fit ran): the flag bits, their names joined by `|` (`OK` if none), and the
        // micro-time range the statistic covered, ns from the start of the period.
        Field::new("fit_flags", DataType::UInt32, true),
        Field::new("fit_flag_names", DataType::Utf8, true),
        Field::new("fit_range_start_ns", DataType::Float64, true),
        Field::new("fit_range_end_ns", DataType::Float64, true),
        // The FWHM of the Gaussian IRF the fit convolved with; null where no fit ran or the
        // fit used a measured IRF.
        Field::new("irf_fwhm_ps", DataType::Float64, true),
    ]);
    fields
}

/// Fields of one entry of `conditions.parameters`.
pub fn condition_parameter_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("unit", DataType::Utf8, true),
    ])
}

/// One row per registered condition; `source` is whoever registered it.
fn condition_fields() -> Vec<Field> {
    let parameter = Field::new_list_field(DataType::Struct(condition_parameter_fields()), false);
    vec![
        Field::new("arrival_time_ns", timestamp_ns(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("condition_id", DataType::Utf8, false),
        Field::new("start_time_ns", timestamp_ns(), false),
        Field::new("parameters", DataType::List(Arc::new(parameter)), false),
        Field::new("parameters_json", DataType::Utf8, false),
    ]
}

/// One row per (run, condition, source, feature): the outcome the optimizer learns from.
/// `source` is the instrument the feature came from; `feature` is `table.column`.
fn condition_outcome_fields() -> Vec<Field> {
    vec![
        Field::new("arrival_time_ns", timestamp_ns(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("condition_id", DataType::Utf8, false),
        Field::new("feature", DataType::Utf8, false),
        Field::new("settled", DataType::Boolean, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("mean", DataType::Float64, true),
        Field::new("std", DataType::Float64, true),
        Field::new("count", DataType::UInt64, false),
        Field::new("first_time_ns", timestamp_ns(), true),
        Field::new("last_time_ns", timestamp_ns(), true),
        Field::new("condition_start_ns", timestamp_ns(), false),
        Field::new("wait_s", DataType::Float64, false),
        Field::new("residence_time_s", DataType::Float64, true),
        Field::new("drift", DataType::Float64, true),
    ]
}

/// One reading per row: a message of `n` events and `k` keys gives `n * k` rows, so any set
/// of keys (which differs from one experiment to the next) fits one table.
fn reading_fields() -> Vec<Field> {
    let mut fields = provenance_fields();
    fields.extend([
        Field::new("stream_name", DataType::Utf8, true),
        Field::new("event_index", DataType::UInt32, false),
        Field::new("event_time_ns", timestamp_ns(), true),
        Field::new("reading_time_ns", timestamp_ns(), true),
        Field::new("data_key", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("value_text", DataType::Utf8, true),
        Field::new("units", DataType::Utf8, true),
    ]);
    fields
}

/// A run document's identity and the fields SQL users filter on, with the whole document kept
/// as JSON text.
fn run_fields() -> Vec<Field> {
    let mut fields = provenance_fields();
    fields.extend([
        Field::new("document", DataType::Utf8, false),
        Field::new("run_uid", DataType::Utf8, false),
        Field::new("document_uid", DataType::Utf8, true),
        Field::new("plan_name", DataType::Utf8, true),
        Field::new("scan_id", DataType::Int64, true),
        Field::new("exit_status", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("body_json", DataType::Utf8, true),
    ]);
    fields
}

fn ingest_error_fields() -> Vec<Field> {
    vec![
        Field::new("arrival_time_ns", timestamp_ns(), false),
        Field::new("transport", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, true),
        Field::new("stream", DataType::Utf8, true),
        Field::new("seq", DataType::UInt64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw_size_bytes", DataType::UInt64, false),
        Field::new("frame_count", DataType::UInt32, false),
        Field::new("first_bytes", DataType::Binary, false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_has_its_own_shared_schema() {
        for (index, table) in Table::ALL.into_iter().enumerate() {
            assert_eq!(table as usize, index, "ALL is in declaration order");
            assert!(Arc::ptr_eq(&table.schema(), &table.schema()), "shared");
            assert_eq!(table.schema().as_ref(), table.build_schema().as_ref());
            assert_eq!(
                table.unsequenced_schema().as_ref(),
                table.build_unsequenced_schema().as_ref()
            );
        }
        assert_ne!(Table::Spectra.schema(), Table::Photons.schema());
    }

    #[test]
    fn every_table_has_a_unique_name_and_a_version() {
        let mut names: Vec<_> = Table::ALL.iter().map(|t| t.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Table::ALL.len());
        for table in Table::ALL {
            assert_eq!(Table::from_name(table.name()), Some(table));
            let schema = table.schema();
            assert_eq!(
                schema
                    .metadata()
                    .get(SCHEMA_VERSION_KEY)
                    .map(String::as_str),
                Some(format!("{}/{}", table.name(), table.schema_version()).as_str())
            );
        }
    }

    #[test]
    fn published_tables_end_with_stream_seq_and_name_their_stream() {
        for table in Table::ALL.into_iter().filter(|t| t.is_published()) {
            let schema = table.schema();
            let last = schema.fields().last().expect("fields");
            assert_eq!(last.name(), STREAM_SEQ_COLUMN);
            assert!(schema.field_with_name("run_id").is_ok(), "{}", table.name());
            assert!(schema.field_with_name("source").is_ok(), "{}", table.name());
            let unsequenced = table.unsequenced_schema();
            assert_eq!(unsequenced.fields().len() + 1, schema.fields().len());
            assert!(unsequenced.field_with_name(STREAM_SEQ_COLUMN).is_err());
        }
        assert_eq!(Table::Spectra.unsequenced_schema(), Table::Spectra.schema());
    }

    #[test]
    fn time_columns_are_utc_nanoseconds() {
        for table in Table::ALL {
            let schema = table.schema();
            let field = schema
                .field_with_name("arrival_time_ns")
                .expect("arrival column");
            assert_eq!(field.data_type(), &timestamp_ns());
        }
    }
}
