//! Feature extraction inside the ingest pipeline: raw rows in, derived rows out.
//!
//! Extractors run on each decoded message before its group is written to the WAL, so the
//! derived rows ride in the same group commit as the raw rows they come from: a crash never
//! leaves one without the other, recovery replays both without recomputing, and features are
//! queryable the moment their spectrum is. An extractor that fails on a message logs and counts
//! the failure; the raw rows are stored regardless, because good data must never be lost to a
//! bad feature. A new kind of feature is one file implementing [`Extractor`] and one line in
//! [`FeatureExtractors::new`].

pub mod flow;
pub mod spectral;
pub mod tcspc;
pub mod velocity;

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use flowdaq_connectors::decode::DecodedRecords;
use flowdaq_schemas::Table;

use crate::config::FeaturesConfig;

/// Why an extractor produced nothing for a message.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The analytics kernel refused its input or options.
    #[error(transparent)]
    Spectral(#[from] flowdaq_analytics::spectral::SpectralError),
    /// The flow kernels refused their input or options.
    #[error(transparent)]
    Flow(#[from] flowdaq_analytics::flow::FlowError),
    /// The TCSPC kernels refused their input or options.
    #[error(transparent)]
    Tcspc(#[from] flowdaq_analytics::tcspc::TcspcError),
    /// Arrow refused to assemble the output (a bug: the schemas disagree).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The message lacks rows the extractor needs (e.g. the axis of its spectra).
    #[error("{0}")]
    Missing(String),
    /// The extractor panicked on this message (a bug a message triggered): the panic was
    /// caught, the message's raw rows are kept and the pipeline goes on.
    #[error("extractor panicked: {0}")]
    Panicked(String),
}

/// Runs one extractor call, turning a panic into [`FeatureError::Panicked`]: a kernel bug that
/// some input triggers must not take the accept worker, and every later message of its
/// sources, with it. The extractor's state may be half-updated by the panic; its next windows
/// can be off, which is logged and counted like any failure, not silent.
fn guarded<T>(call: impl FnOnce() -> Result<T, FeatureError>) -> Result<T, FeatureError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(FeatureError::Panicked(message))
        }
    }
}

/// Provenance of one message, for the derived rows it gives.
#[derive(Debug, Clone, Copy)]
pub struct MessageOrigin<'a> {
    /// When the server received the message, ns since the Unix epoch.
    pub arrival_time_ns: i64,
    /// The instrument's own time of the message, if it sent one.
    pub instrument_time_ns: Option<i64>,
    /// Sending source.
    pub source: &'a str,
    /// Run the rows belong to.
    pub run_id: &'a str,
    /// Condition the rows were tagged with, if any.
    pub condition_id: Option<&'a str>,
    /// The message's sequence number.
    pub seq: u64,
}

impl MessageOrigin<'_> {
    /// The provenance columns shared by every derived table, for `rows` rows.
    pub fn columns(&self, rows: usize) -> Vec<ArrayRef> {
        vec![
            Arc::new(
                TimestampNanosecondArray::from(vec![self.arrival_time_ns; rows])
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampNanosecondArray::from(vec![self.instrument_time_ns; rows])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![self.source; rows])),
            Arc::new(StringArray::from(vec![self.run_id; rows])),
            Arc::new(StringArray::from(vec![self.condition_id; rows])),
            Arc::new(UInt64Array::from(vec![self.seq; rows])),
        ]
    }
}

/// The raw TCSPC records of a message, accepted but not decoded. They stand in for its
/// `photons` rows, which exist only if the source stores them: extractors that read photons
/// decode these instead (straight into their own sink), and are not shown the rows.
#[derive(Debug, Clone, Copy)]
pub struct PhotonRecords<'a> {
    /// Whose records.
    pub origin: MessageOrigin<'a>,
    /// The records, with their time base and the source's decoder state before them.
    pub records: &'a DecodedRecords,
}

/// One kind of derived rows, computed message by message.
pub trait Extractor: Send {
    /// Short name used in logs and metrics.
    fn name(&self) -> &'static str;

    /// Derived rows for one decoded message (`message` holds every table's rows of it, raw
    /// rows first, before any filtering by `store_raw`). Returns nothing if the message has
    /// nothing this extractor reads.
    ///
    /// # Errors
    /// [`FeatureError`] if the rows cannot be analysed; the caller stores the raw rows anyway.
    fn extract(
        &mut self,
        message: &[(Table, RecordBatch)],
    ) -> Result<Vec<(Table, RecordBatch)>, FeatureError>;

    /// Derived rows for the raw records of a message of TCSPC records. The default, for
    /// extractors that do not read photons: none.
    ///
    /// # Errors
    /// As [`Extractor::extract`].
    fn extract_records(
        &mut self,
        _records: &PhotonRecords<'_>,
    ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        Ok(Vec::new())
    }

    /// Derived rows of what is still open when a stream ends: the last, partial windows of
    /// `source` (its message said `end_of_stream`), or of every source (the server is
    /// stopping). The default, for extractors that hold nothing open: none.
    ///
    /// # Errors
    /// As [`Extractor::extract`].
    fn finish(&mut self, _source: Option<&str>) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
        Ok(Vec::new())
    }
}

/// Every configured extractor, in the order they run.
pub struct FeatureExtractors {
    extractors: Vec<Box<dyn Extractor>>,
}

impl FeatureExtractors {
    /// The extractors `config` enables.
    ///
    /// # Errors
    /// [`FeatureError`] for options an analytics kernel refuses.
    pub fn new(config: &FeaturesConfig) -> Result<FeatureExtractors, FeatureError> {
        FeatureExtractors::sharing(config, &FeatureExtractors::shared_velocity(config))
    }

    /// The velocity history that several sets of extractors (one per accept worker) share, so
    /// spectra get the velocity measured by a phase-sensor pair another worker analyses.
    pub fn shared_velocity(config: &FeaturesConfig) -> velocity::SharedVelocity {
        // Velocity may extrapolate for five windows past the last one measured.
        let extrapolation_ns = (5.0 * config.flow.window_s * 1e9) as i64;
        std::sync::Arc::new(std::sync::Mutex::new(velocity::VelocityHistory::new(
            extrapolation_ns,
        )))
    }

    /// As [`FeatureExtractors::new`], with a velocity history shared with other sets.
    ///
    /// # Errors
    /// [`FeatureError`] for options an analytics kernel refuses.
    pub fn sharing(
        config: &FeaturesConfig,
        velocity: &velocity::SharedVelocity,
    ) -> Result<FeatureExtractors, FeatureError> {
        let mut extractors: Vec<Box<dyn Extractor>> = Vec::new();
        let flow_on = config.flow.enabled && !config.flow.pairs.is_empty();
        // Flow first: a message's spectra get the velocity known when they are analysed.
        if flow_on {
            extractors.push(Box::new(flow::FlowExtractor::new(
                &config.flow,
                velocity.clone(),
            )?));
        }
        // Always: histogram messages carry their own timing and are fitted with or without a
        // configured source.
        extractors.push(Box::new(tcspc::TcspcExtractor::new(&config.tcspc)?));
        if config.spectral.enabled {
            let reaction = flow_on.then_some((velocity.clone(), config.flow.mixing_point_mm));
            extractors.push(Box::new(spectral::SpectralFeatures::new(
                &config.spectral,
                reaction,
            )?));
        }
        Ok(FeatureExtractors { extractors })
    }

    /// Runs every extractor on `message` and on its raw TCSPC `records`, if any (which then
    /// stand in for its `photons` rows), appending derived rows to `out`. Failures are returned
    /// as `(extractor name, error)` for the caller to log and count; one of the two calls
    /// failing does not keep the other from running.
    pub fn extract(
        &mut self,
        message: &[(Table, RecordBatch)],
        records: Option<&PhotonRecords<'_>>,
        out: &mut Vec<(Table, RecordBatch)>,
    ) -> Vec<(&'static str, FeatureError)> {
        let without_photons: Vec<(Table, RecordBatch)>;
        let message = match records {
            Some(_) if message.iter().any(|(t, _)| *t == Table::Photons) => {
                without_photons = message
                    .iter()
                    .filter(|(t, _)| *t != Table::Photons)
                    .cloned()
                    .collect();
                &without_photons[..]
            }
            _ => message,
        };
        let mut failures = Vec::new();
        for extractor in &mut self.extractors {
            let mut rows = guarded(|| extractor.extract(message)).unwrap_or_else(|err| {
                failures.push((extractor.name(), err));
                Vec::new()
            });
            if let Some(records) = records {
                match guarded(|| extractor.extract_records(records)) {
                    Ok(more) => rows.extend(more),
                    Err(err) => failures.push((extractor.name(), err)),
                }
            }
            out.extend(rows.into_iter().filter(|(_, b)| b.num_rows() > 0));
        }
        failures
    }

    /// Runs every extractor's [`Extractor::finish`] for `source` (or every source), appending
    /// its rows to `out`; failures as for [`FeatureExtractors::extract`].
    pub fn finish(
        &mut self,
        source: Option<&str>,
        out: &mut Vec<(Table, RecordBatch)>,
    ) -> Vec<(&'static str, FeatureError)> {
        let mut failures = Vec::new();
        for extractor in &mut self.extractors {
            match guarded(|| extractor.finish(source)) {
                Ok(rows) => out.extend(rows.into_iter().filter(|(_, b)| b.num_rows() > 0)),
                Err(err) => failures.push((extractor.name(), err)),
            }
        }
        failures
    }
}

#[cfg(test)]
mod panic_tests {
    use super::*;

    /// Panics on its first message, then works.
    struct PanicsOnce {
        calls: usize,
    }

    impl Extractor for PanicsOnce {
        fn name(&self) -> &'static str {
            "panics_once"
        }

        fn extract(
            &mut self,
            _message: &[(Table, RecordBatch)],
        ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
            self.calls += 1;
            if self.calls == 1 {
                let bins: Vec<u32> = Vec::new();
                // An out-of-bounds index, as a kernel bug would make.
                let _ = bins[self.calls];
            }
            Ok(Vec::new())
        }

        fn finish(
            &mut self,
            _source: Option<&str>,
        ) -> Result<Vec<(Table, RecordBatch)>, FeatureError> {
            panic!("finish failed");
        }
    }

    #[test]
    fn a_panicking_extractor_is_a_counted_failure_and_the_next_message_runs() {
        let mut extractors = FeatureExtractors {
            extractors: vec![Box::new(PanicsOnce { calls: 0 })],
        };
        let mut out = Vec::new();
        let failures = extractors.extract(&[], None, &mut out);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, "panics_once");
        assert!(
            matches!(&failures[0].1, FeatureError::Panicked(m) if m.contains("index out of bounds")),
            "{:?}",
            failures[0].1
        );
        assert!(extractors.extract(&[], None, &mut out).is_empty());
        let failures = extractors.finish(None, &mut out);
        assert!(matches!(&failures[0].1, FeatureError::Panicked(m) if m == "finish failed"));
    }
}
