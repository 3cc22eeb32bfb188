//! Steady-state detection: when has a condition's feature settled, and what is its outcome.
//!
//! An optimizer must learn each condition's outcome once, settled, with its spread, and must
//! never be fed a half-settled value. The [`OutcomeTracker`] watches the feature rows the
//! pipeline derives (any `table.column` named in `[outcomes]`, so a new feature table needs no
//! code here), keeps each `(run, condition, source, feature)`'s values after the condition's
//! start, and writes one `condition_outcomes` row for it: settled as soon as the last
//! `window_s` seconds (entirely after the wait of N residence times) are steady, or unsettled
//! when the condition times out or is superseded first. Time is the data clock
//! (`instrument_time_ns`, else `arrival_time_ns`), so replayed or simulated streams settle the
//! same way as live ones; the wall clock only drives the timeout of conditions whose data stopped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, StringArray, TimestampNanosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Float64Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use crate::conditions::ConditionTimes;
use crate::config::{OutcomeFeatureConfig, OutcomesConfig};

/// Values kept per followed feature at most (oldest dropped first).
const MAX_VALUES_KEPT: usize = 100_000;

/// Checks an `[outcomes]` section.
///
/// # Errors
/// A message naming the bad key.
pub fn validate(config: &OutcomesConfig) -> Result<(), String> {
    let positive = [
        ("window_s", config.window_s),
        ("timeout_s", config.timeout_s),
    ];
    for (name, value) in positive {
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("{name} = {value}: must be > 0"));
        }
    }
    for (name, value) in [
        ("min_wait_s", config.min_wait_s),
        ("wait_residence_times", config.wait_residence_times),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!("{name} = {value}: must be >= 0"));
        }
    }
    if config.min_samples < 2 {
        return Err("min_samples must be >= 2 (a spread needs two values)".into());
    }
    for (name, feature) in &config.features {
        FeatureRef::parse(name, feature)?;
    }
    Ok(())
}

/// One followed feature: a numeric column of a feature table.
#[derive(Debug, Clone)]
struct FeatureRef {
    name: String,
    table: Table,
    column: String,
    max_std: f64,
    max_drift: f64,
}

impl FeatureRef {
    fn parse(name: &str, thresholds: &OutcomeFeatureConfig) -> Result<FeatureRef, String> {
        let (table_name, column) = name
            .split_once('.')
            .ok_or_else(|| format!("features.{name:?}: expected table.column"))?;
        let table = Table::from_name(table_name)
            .filter(|t| t.is_published() && !matches!(t, Table::ConditionOutcomes))
            .ok_or_else(|| format!("features.{name:?}: {table_name:?} is not a feature table"))?;
        let field = table
            .unsequenced_schema()
            .field_with_name(column)
            .map_err(|_| format!("features.{name:?}: {table_name} has no column {column:?}"))?
            .clone();
        if !field.data_type().is_numeric() {
            return Err(format!("features.{name:?}: column is not numeric"));
        }
        for (key, value) in [
            ("max_std", thresholds.max_std),
            ("max_drift", thresholds.max_drift),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("features.{name:?}.{key} = {value}: must be >= 0"));
            }
        }
        Ok(FeatureRef {
            name: name.to_string(),
            table,
            column: column.to_string(),
            max_std: thresholds.max_std,
            max_drift: thresholds.max_drift,
        })
    }
}

/// `(run, condition, source, feature index)`.
type Key = (String, String, String, usize);

/// Statistics of a set of timed values.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    mean: f64,
    std: f64,
    count: usize,
    first_ns: i64,
    last_ns: i64,
    /// |least-squares slope| x span, in the feature's unit; `None` below two distinct times.
    drift_over: Option<f64>,
}

fn stats(values: &[(i64, f64)], window_s: f64) -> Option<Stats> {
    let (&(first_ns, _), &(last_ns, _)) = (values.first()?, values.last()?);
    let n = values.len() as f64;
    let mean = values.iter().map(|(_, v)| v).sum::<f64>() / n;
    let std = if values.len() > 1 {
        (values.iter().map(|(_, v)| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let t_mean = values
        .iter()
        .map(|(t, _)| (t - first_ns) as f64 * 1e-9)
        .sum::<f64>()
        / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, v) in values {
        let dt = (t - first_ns) as f64 * 1e-9 - t_mean;
        sxy += dt * (v - mean);
        sxx += dt * dt;
    }
    let drift_over = (sxx > 0.0).then(|| (sxy / sxx).abs() * window_s);
    Some(Stats {
        mean,
        std,
        count: values.len(),
        first_ns,
        last_ns,
        drift_over,
    })
}

/// What the tracker knows of one condition.
#[derive(Debug, Clone, Copy)]
struct ConditionState {
    times: ConditionTimes,
    residence_time_s: Option<f64>,
    /// Superseded or timed out: its outcomes are written, later values are ignored.
    closed: bool,
}

/// One outcome, on its way to a `condition_outcomes` row.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    key: Key,
    settled: bool,
    reason: Option<String>,
    stats: Option<Stats>,
    condition_start_ns: i64,
    wait_s: f64,
    residence_time_s: Option<f64>,
}

/// Follows every configured feature of every condition; see the module doc.
pub struct OutcomeTracker {
    config: OutcomesConfig,
    features: Vec<FeatureRef>,
    conditions: HashMap<(String, String), ConditionState>,
    current: HashMap<String, String>,
    values: HashMap<Key, VecDeque<(i64, f64)>>,
    done: HashSet<Key>,
    ready: Vec<Outcome>,
}

impl OutcomeTracker {
    /// A tracker for `config` (validated by [`validate`]; invalid features are skipped).
    pub fn new(config: &OutcomesConfig) -> OutcomeTracker {
        let features = if config.enabled {
            config
                .features
                .iter()
                .filter_map(|(name, t)| FeatureRef::parse(name, t).ok())
                .collect()
        } else {
            Vec::new()
        };
        OutcomeTracker {
            config: config.clone(),
            features,
            conditions: HashMap::new(),
            current: HashMap::new(),
            values: HashMap::new(),
            done: HashSet::new(),
            ready: Vec::new(),
        }
    }

    /// Marks an outcome as already written (recovery), so it is never written twice.
    pub fn mark_done(&mut self, run_id: &str, condition_id: &str, source: &str, feature: &str) {
        if let Some(index) = self.features.iter().position(|f| f.name == feature) {
            self.done
                .insert((run_id.into(), condition_id.into(), source.into(), index));
        }
    }

    /// A condition starts in its run; the run's previous condition ends, and each of its
    /// features that has not settled gets an unsettled outcome.
    pub fn condition_started(&mut self, run_id: &str, condition_id: &str, times: ConditionTimes) {
        if self.features.is_empty() {
            return;
        }
        self.conditions.insert(
            (run_id.to_string(), condition_id.to_string()),
            ConditionState {
                times,
                residence_time_s: None,
                closed: false,
            },
        );
        let previous = self
            .current
            .insert(run_id.to_string(), condition_id.to_string());
        if let Some(previous) = previous.filter(|p| p != condition_id) {
            let reason = format!("superseded by condition {condition_id:?} before settling");
            self.close_condition(run_id, &previous, &reason);
        }
    }

    /// Reads the feature rows of one table (as derived, before sequencing).
    pub fn observe(&mut self, table: Table, batch: &RecordBatch) {
        if !self.features.iter().any(|f| f.table == table) || batch.num_rows() == 0 {
            return;
        }
        let Some(rows) = RowKeys::of(batch) else {
            return;
        };
        if let Some(residence) = float_column(batch, "reaction_time_s") {
            self.note_residence(&rows, &residence);
        }
        let mut touched: HashSet<Key> = HashSet::new();
        for index in 0..self.features.len() {
            if self.features[index].table != table {
                continue;
            }
            let Some(values) = float_column(batch, &self.features[index].column) else {
                continue;
            };
            for row in 0..batch.num_rows() {
                let (Some(condition), Some(time_ns)) = (rows.condition(row), rows.time_ns(row))
                else {
                    continue;
                };
                if values.is_null(row) || !values.value(row).is_finite() {
                    continue;
                }
                let run = rows.runs.value(row);
                if !self.learn_condition(run, condition, time_ns) {
                    continue;
                }
                let key = (
                    run.to_string(),
                    condition.to_string(),
                    rows.sources.value(row).to_string(),
                    index,
                );
                if self.done.contains(&key) {
                    continue;
                }
                let list = self.values.entry(key.clone()).or_default();
                if list.len() == MAX_VALUES_KEPT {
                    list.pop_front();
                }
                list.push_back((time_ns, values.value(row)));
                touched.insert(key);
            }
        }
        let mut touched: Vec<Key> = touched.into_iter().collect();
        touched.sort();
        for key in touched {
            self.evaluate(&key);
        }
    }

    /// Times out conditions whose data stopped: wall clock `now_ns` past their registration
    /// plus `timeout_s`.
    pub fn tick(&mut self, now_ns: i64) {
        let timeout_ns = (self.config.timeout_s * 1e9) as i64;
        let expired: Vec<(String, String)> = self
            .conditions
            .iter()
            .filter(|(_, c)| !c.closed && now_ns - c.times.registered_at_ns > timeout_ns)
            .map(|(k, _)| k.clone())
            .collect();
        for (run, condition) in expired {
            let reason = format!("not settled within timeout_s = {}", self.config.timeout_s);
            self.close_condition(&run, &condition, &reason);
        }
    }

    /// The outcome rows decided since the last call (without `stream_seq`), if any.
    ///
    /// # Errors
    /// Arrow's error (a schema bug).
    pub fn take_rows(
        &mut self,
        arrival_time_ns: i64,
    ) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        if self.ready.is_empty() {
            return Ok(None);
        }
        let ready = std::mem::take(&mut self.ready);
        outcome_batch(&ready, &self.features, arrival_time_ns).map(Some)
    }

    /// Conditions first seen in data (the sender tagged them; nobody registered them) start at
    /// their first value; a new one supersedes the run's previous condition. Returns whether
    /// the condition is still open (its values count).
    fn learn_condition(&mut self, run: &str, condition: &str, time_ns: i64) -> bool {
        if let Some(state) = self
            .conditions
            .get(&(run.to_string(), condition.to_string()))
        {
            return !state.closed;
        }
        let times = ConditionTimes {
            start_time_ns: time_ns,
            registered_at_ns: flowdaq_connectors::transport::now_ns(),
        };
        self.condition_started(run, condition, times);
        true
    }

    fn note_residence(&mut self, rows: &RowKeys, residence: &Float64Array) {
        for row in 0..residence.len() {
            let Some(condition) = rows.condition(row) else {
                continue;
            };
            let residence_s = residence.value(row);
            if residence.is_null(row) || residence_s.is_nan() || residence_s <= 0.0 {
                continue;
            }
            let key = (rows.runs.value(row).to_string(), condition.to_string());
            if let Some(state) = self.conditions.get_mut(&key) {
                state.residence_time_s = Some(residence_s);
            }
        }
    }

    fn wait_s(&self, state: &ConditionState) -> f64 {
        let residence = state
            .residence_time_s
            .map_or(0.0, |r| r * self.config.wait_residence_times);
        self.config.min_wait_s.max(residence)
    }

    fn evaluate(&mut self, key: &Key) {
        let Some(state) = self
            .conditions
            .get(&(key.0.clone(), key.1.clone()))
            .copied()
        else {
            return;
        };
        let Some(list) = self.values.get(key) else {
            return;
        };
        let Some(&(latest_ns, _)) = list.back() else {
            return;
        };
        let wait_s = self.wait_s(&state);
        let waited_ns = state.times.start_time_ns + (wait_s * 1e9) as i64;
        let window_ns = (self.config.window_s * 1e9) as i64;
        let timeout_ns = state.times.start_time_ns + (self.config.timeout_s * 1e9) as i64;
        if latest_ns - waited_ns >= window_ns {
            let from = latest_ns - window_ns;
            let window: Vec<(i64, f64)> = list
                .iter()
                .filter(|(t, _)| *t >= from && *t >= waited_ns)
                .copied()
                .collect();
            let feature = &self.features[key.3];
            if let Some(s) = stats(&window, self.config.window_s) {
                let steady = s.count >= self.config.min_samples
                    && s.std <= feature.max_std
                    && s.drift_over.is_some_and(|d| d <= feature.max_drift);
                if steady {
                    self.finish(key, true, None, Some(s), state, wait_s);
                    return;
                }
            }
        }
        if latest_ns > timeout_ns {
            let reason = format!("not settled within timeout_s = {}", self.config.timeout_s);
            self.close_one(key, &reason, state, wait_s);
        }
    }

    fn close_condition(&mut self, run: &str, condition: &str, reason: &str) {
        let Some(state) = self
            .conditions
            .get_mut(&(run.to_string(), condition.to_string()))
        else {
            return;
        };
        state.closed = true;
        let state = *state;
        let wait_s = self.wait_s(&state);
        let mut keys: Vec<Key> = self
            .values
            .keys()
            .filter(|k| k.0 == run && k.1 == condition)
            .cloned()
            .collect();
        keys.sort();
        for key in keys {
            self.close_one(&key, reason, state, wait_s);
        }
    }

    /// Unsettled outcome over the values after the wait, or over all values if none came after.
    fn close_one(&mut self, key: &Key, reason: &str, state: ConditionState, wait_s: f64) {
        let waited_ns = state.times.start_time_ns + (wait_s * 1e9) as i64;
        let Some(list) = self.values.get(key) else {
            return;
        };
        let after: Vec<(i64, f64)> = list
            .iter()
            .filter(|(t, _)| *t >= waited_ns)
            .copied()
            .collect();
        let chosen = if after.is_empty() {
            list.iter().copied().collect()
        } else {
            after
        };
        let s = stats(&chosen, self.config.window_s);
        self.finish(key, false, Some(reason.to_string()), s, state, wait_s);
    }

    fn finish(
        &mut self,
        key: &Key,
        settled: bool,
        reason: Option<String>,
        stats: Option<Stats>,
        state: ConditionState,
        wait_s: f64,
    ) {
        self.values.remove(key);
        self.done.insert(key.clone());
        self.ready.push(Outcome {
            key: key.clone(),
            settled,
            reason,
            stats,
            condition_start_ns: state.times.start_time_ns,
            wait_s,
            residence_time_s: state.residence_time_s,
        });
    }
}

/// The key columns of a feature batch.
struct RowKeys {
    runs: StringArray,
    sources: StringArray,
    conditions: StringArray,
    instrument: Option<arrow::array::PrimitiveArray<TimestampNanosecondType>>,
    arrival: arrow::array::PrimitiveArray<TimestampNanosecondType>,
}

impl RowKeys {
    fn of(batch: &RecordBatch) -> Option<RowKeys> {
        let text = |name: &str| batch.column_by_name(name)?.as_string_opt::<i32>().cloned();
        let time = |name: &str| {
            batch
                .column_by_name(name)?
                .as_primitive_opt::<TimestampNanosecondType>()
                .cloned()
        };
        Some(RowKeys {
            runs: text("run_id")?,
            sources: text("source")?,
            conditions: text("condition_id")?,
            instrument: time("instrument_time_ns"),
            arrival: time("arrival_time_ns")?,
        })
    }

    fn condition(&self, row: usize) -> Option<&str> {
        self.conditions
            .is_valid(row)
            .then(|| self.conditions.value(row))
    }

    fn time_ns(&self, row: usize) -> Option<i64> {
        match &self.instrument {
            Some(t) if t.is_valid(row) => Some(t.value(row)),
            _ => self.arrival.is_valid(row).then(|| self.arrival.value(row)),
        }
    }
}

fn float_column(batch: &RecordBatch, name: &str) -> Option<Float64Array> {
    let column = batch.column_by_name(name)?;
    if column.data_type() == &DataType::Float64 {
        return Some(column.as_primitive::<Float64Type>().clone());
    }
    let cast = arrow::compute::cast(column, &DataType::Float64).ok()?;
    Some(cast.as_primitive::<Float64Type>().clone())
}

fn outcome_batch(
    outcomes: &[Outcome],
    features: &[FeatureRef],
    arrival_time_ns: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    fn text<'a>(outcomes: &'a [Outcome], f: impl Fn(&'a Outcome) -> &'a str) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(outcomes.iter().map(f)))
    }
    let stat = |f: &dyn Fn(&Stats) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter(
            outcomes.iter().map(|o| o.stats.as_ref().map(f)),
        ))
    };
    let time = |values: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        time(vec![Some(arrival_time_ns); outcomes.len()]),
        text(outcomes, |o| &o.key.2),
        text(outcomes, |o| &o.key.0),
        text(outcomes, |o| &o.key.1),
        text(outcomes, |o| features[o.key.3].name.as_str()),
        Arc::new(BooleanArray::from_iter(
            outcomes.iter().map(|o| Some(o.settled)),
        )),
        Arc::new(StringArray::from_iter(
            outcomes.iter().map(|o| o.reason.as_deref()),
        )),
        stat(&|s| s.mean),
        stat(&|s| s.std),
        Arc::new(UInt64Array::from_iter_values(
            outcomes
                .iter()
                .map(|o| o.stats.as_ref().map_or(0, |s| s.count as u64)),
        )),
        time(
            outcomes
                .iter()
                .map(|o| o.stats.map(|s| s.first_ns))
                .collect(),
        ),
        time(
            outcomes
                .iter()
                .map(|o| o.stats.map(|s| s.last_ns))
                .collect(),
        ),
        time(
            outcomes
                .iter()
                .map(|o| Some(o.condition_start_ns))
                .collect(),
        ),
        Arc::new(Float64Array::from_iter_values(
            outcomes.iter().map(|o| o.wait_s),
        )),
        Arc::new(Float64Array::from_iter(
            outcomes.iter().map(|o| o.residence_time_s),
        )),
        Arc::new(Float64Array::from_iter(
            outcomes.iter().map(|o| o.stats.and_then(|s| s.drift_over)),
        )),
    ];
    RecordBatch::try_new(Table::ConditionOutcomes.unsequenced_schema(), columns)
}

#[cfg(test)]
mod tests;
