//! Reaction conditions: what an optimizer or pump controller registers, and which condition is
//! current in each run.
//!
//! A measurement tells the server its run but rarely its condition: the instrument does not know
//! what the pumps are doing. So whoever changes the reactor registers the condition here, the
//! registration becomes a durable `conditions` row, and every later measurement of that run that
//! arrives without a `condition_id` of its own is tagged with it until the next registration.
//! The pipeline owns one [`Conditions`]; it checks, applies and tags, in arrival order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, ListBuilder, StringArray, StringBuilder, StructBuilder,
    TimestampNanosecondArray,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::tables::condition_parameter_fields;
use flowdaq_schemas::Table;
use serde_json::Value;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConditionError {
    /// The request is not a valid registration.
    #[error("invalid condition: {0}")]
    Invalid(String),
    /// The `(run_id, condition_id)` pair was registered before.
    #[error("condition {condition_id:?} of run {run_id:?} is already registered")]
    Duplicate {
        /// The run.
        run_id: String,
        /// The condition.
        condition_id: String,
    },
}

/// One named parameter of a condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// Name, e.g. `cs_flow_rate`.
    pub name: String,
    /// Finite value.
    pub value: f64,
    /// Unit, e.g. `uL/min`, if given.
    pub unit: Option<String>,
}

/// A condition as registered (see `docs/feature-streams.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The run.
    pub run_id: String,
    /// The condition, unique within its run.
    pub condition_id: String,
    /// Its parameters, sorted by name.
    pub parameters: Vec<Parameter>,
    /// When it took effect, ns since the Unix epoch (UTC); the arrival time if absent.
    pub start_time_ns: Option<i64>,
    /// Who registered it; becomes the row's `source`.
    pub registered_by: String,
}

/// Longest id accepted for runs, conditions and registrants.
const MAX_ID_CHARS: usize = 128;

fn id_field(request: &Value, key: &str, default: Option<&str>) -> Result<String, ConditionError> {
    let text = match request.get(key) {
        None | Some(Value::Null) => default
            .map(str::to_string)
            .ok_or_else(|| ConditionError::Invalid(format!("{key} is required"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ConditionError::Invalid(format!(
            "{key} must be a string, not {other}"
        ))),
    }?;
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS || text.chars().any(char::is_control) {
        return Err(ConditionError::Invalid(format!(
            "{key} must be 1-{MAX_ID_CHARS} printable characters"
        )));
    }
    Ok(text)
}

fn parameter(name: &str, value: &Value) -> Result<Parameter, ConditionError> {
    let (number, unit) = match value {
        Value::Number(n) => (n.as_f64(), None),
        Value::Object(map) => {
            let unit = match map.get("unit") {
                None | Some(Value::Null) => None,
                Some(Value::String(u)) => Some(u.clone()),
                Some(_) => {
                    return Err(ConditionError::Invalid(format!(
                        "parameter {name:?}: unit must be a string"
                    )))
                }
            };
            if let Some(key) = map.keys().find(|k| *k != "value" && *k != "unit") {
                return Err(ConditionError::Invalid(format!(
                    "parameter {name:?}: unknown key {key:?} (value, unit)"
                )));
            }
            (map.get("value").and_then(Value::as_f64), unit)
        }
        _ => (None, None),
    };
    match number {
        Some(value) if value.is_finite() => Ok(Parameter {
            name: name.to_string(),
            value,
            unit,
        }),
        _ => Err(ConditionError::Invalid(format!(
            "parameter {name:?} must be a finite number or {{\"value\": number, \"unit\": string}}"
        ))),
    }
}

impl Registration {
    /// Parses a registration request (the `op` key, if any, is ignored).
    ///
    /// # Errors
    /// [`ConditionError::Invalid`] naming the first problem.
    pub fn from_json(request: &Value) -> Result<Registration, ConditionError> {
        if !request.is_object() {
            return Err(ConditionError::Invalid(
                "request must be a JSON object".into(),
            ));
        }
        let parameters = match request.get("parameters") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(map)) => {
                let mut list = map
                    .iter()
                    .map(|(name, value)| parameter(name, value))
                    .collect::<Result<Vec<_>, _>>()?;
                list.sort_by(|a, b| a.name.cmp(&b.name));
                list
            }
            Some(_) => {
                return Err(ConditionError::Invalid(
                    "parameters must be an object".into(),
                ))
            }
        };
        let start_time_ns = match request.get("start_time_ns") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().filter(|t| *t > 0).ok_or_else(|| {
                ConditionError::Invalid("start_time_ns must be a positive integer".into())
            })?),
        };
        Ok(Registration {
            run_id: id_field(request, "run_id", None)?,
            condition_id: id_field(request, "condition_id", None)?,
            parameters,
            start_time_ns,
            registered_by: id_field(request, "registered_by", Some("client"))?,
        })
    }

    fn parameters_json(&self) -> String {
        let map: serde_json::Map<String, Value> = self
            .parameters
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    serde_json::json!({"value": p.value, "unit": p.unit}),
                )
            })
            .collect();
        Value::Object(map).to_string()
    }
}

/// A condition the server knows: when it started, on the data clock and on the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConditionTimes {
    /// Start on the instruments' clock (as registered), ns.
    pub start_time_ns: i64,
    /// When the server registered it (or learnt of it), wall clock, ns.
    pub registered_at_ns: i64,
}

/// Registered conditions and the current one per run.
#[derive(Debug, Default)]
pub struct Conditions {
    current: HashMap<String, String>,
    known: HashMap<(String, String), ConditionTimes>,
}

impl Conditions {
    /// Refuses a registration that cannot be applied; nothing changes.
    ///
    /// # Errors
    /// [`ConditionError::Duplicate`].
    pub fn check(&self, registration: &Registration) -> Result<(), ConditionError> {
        let key = (
            registration.run_id.clone(),
            registration.condition_id.clone(),
        );
        if self.known.contains_key(&key) {
            return Err(ConditionError::Duplicate {
                run_id: key.0,
                condition_id: key.1,
            });
        }
        Ok(())
    }

    /// Makes a registration current in its run (after its row is durable). Returns the
    /// condition it replaced, if any.
    pub fn apply(
        &mut self,
        run_id: &str,
        condition_id: &str,
        times: ConditionTimes,
    ) -> Option<String> {
        self.known
            .insert((run_id.to_string(), condition_id.to_string()), times);
        self.current
            .insert(run_id.to_string(), condition_id.to_string())
    }

    /// The current condition of `run_id`.
    pub fn current(&self, run_id: &str) -> Option<&str> {
        self.current.get(run_id).map(String::as_str)
    }

    /// The times of a registered condition.
    pub fn times(&self, run_id: &str, condition_id: &str) -> Option<ConditionTimes> {
        self.known
            .get(&(run_id.to_string(), condition_id.to_string()))
            .copied()
    }

    /// Tags every row of one message with the current condition of `run_id`: replaces the
    /// (null) `condition_id` column of each batch that has one. Called only for messages whose
    /// header names no condition.
    ///
    /// # Errors
    /// Arrow's error if a batch cannot be rebuilt (a schema bug).
    pub fn tag(
        &self,
        run_id: &str,
        batches: &mut [(Table, RecordBatch)],
    ) -> Result<(), arrow::error::ArrowError> {
        let Some(condition) = self.current(run_id) else {
            return Ok(());
        };
        for (_, batch) in batches.iter_mut() {
            let Ok(index) = batch.schema().index_of("condition_id") else {
                continue;
            };
            if batch.schema().field(index).data_type() != &DataType::Utf8 {
                continue;
            }
            let mut columns = batch.columns().to_vec();
            columns[index] = Arc::new(flowdaq_connectors::decode::repeated_string(
                condition,
                batch.num_rows(),
            ));
            *batch = RecordBatch::try_new(batch.schema(), columns)?;
        }
        Ok(())
    }
}

/// The `conditions` row of a registration (without `stream_seq`).
///
/// # Errors
/// Arrow's error (a schema bug).
pub fn condition_batch(
    registration: &Registration,
    arrival_time_ns: i64,
    start_time_ns: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut parameters = ListBuilder::new(StructBuilder::from_fields(
        condition_parameter_fields(),
        registration.parameters.len(),
    ))
    .with_field(Arc::new(arrow::datatypes::Field::new_list_field(
        DataType::Struct(condition_parameter_fields()),
        false,
    )));
    let entries = parameters.values();
    for p in &registration.parameters {
        if let Some(b) = entries.field_builder::<StringBuilder>(0) {
            b.append_value(&p.name);
        }
        if let Some(b) = entries.field_builder::<Float64Builder>(1) {
            b.append_value(p.value);
        }
        if let Some(b) = entries.field_builder::<StringBuilder>(2) {
            b.append_option(p.unit.as_deref());
        }
        entries.append(true);
    }
    parameters.append(true);
    let timestamp = |t: i64| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(vec![t]).with_timezone("UTC"))
    };
    let text = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s])) };
    RecordBatch::try_new(
        Table::Conditions.unsequenced_schema(),
        vec![
            timestamp(arrival_time_ns),
            text(&registration.registered_by),
            text(&registration.run_id),
            text(&registration.condition_id),
            timestamp(start_time_ns),
            Arc::new(parameters.finish()),
            text(&registration.parameters_json()),
        ],
    )
}

#[cfg(test)]
mod tests;
