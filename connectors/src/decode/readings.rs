//! Readings messages: scalar values of named keys (a motor position, a temperature, a flow
//! rate), one value per key and event.
//!
//! Which keys an experiment records changes from one plan to the next, so readings are stored
//! in long form: one `readings` row per key and event, with the key's name in `data_key`. A
//! number that is not finite is kept as its text (`"NaN"`, `"inf"`) with a null `value`, so a
//! failed read of one key never costs the event's other readings.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt32Array,
};
use arrow_schema::DataType;
use flowdaq_schemas::{Dtype, Header, Table};

use super::arrays::{expect_dtype, to_f64, to_i64, PayloadArrays};
use super::{check_meta_keys, DecodeContext, DecodeError, Provenance};

/// The optional array (or Arrow column) of per-event times, ns since the Unix epoch.
pub const EVENT_TIME_ARRAY: &str = "event_time_ns";
const META_KEYS: [&str; 4] = ["stream_name", "text", "units", "timestamps_ns"];
/// Longest accepted key name, stream name or unit, in bytes.
const MAX_NAME_BYTES: usize = 256;

/// One key's values, one per event.
enum KeyValues {
    Numbers(Vec<f64>),
    Text(Vec<Option<String>>),
}

/// The readings of a message before they become rows.
struct Readings {
    events: usize,
    event_times_ns: Option<Vec<i64>>,
    keys: Vec<(String, KeyValues)>,
}

impl Readings {
    /// Where `key` is among the readings; a `meta.{what}` entry naming another is refused.
    fn position(&self, what: &str, key: &str) -> Result<usize, DecodeError> {
        self.keys.iter().position(|(k, _)| k == key).ok_or_else(|| {
            DecodeError::payload(format!("meta.{what} names {key:?}, which is not a reading"))
        })
    }

    fn add(&mut self, key: &str, values: KeyValues) -> Result<(), DecodeError> {
        check_name("reading key", key)?;
        let len = match &values {
            KeyValues::Numbers(v) => v.len(),
            KeyValues::Text(v) => v.len(),
        };
        if len != self.events {
            return Err(DecodeError::payload(format!(
                "reading {key:?} has {len} values but the message holds {} events",
                self.events
            )));
        }
        if self.keys.iter().any(|(k, _)| k == key) {
            return Err(DecodeError::payload(format!(
                "reading {key:?} is given twice"
            )));
        }
        self.keys.push((key.to_string(), values));
        Ok(())
    }
}

fn check_name(what: &str, name: &str) -> Result<(), DecodeError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(DecodeError::payload(format!(
            "{what} {name:?} must be 1-{MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

pub(crate) fn from_arrays(
    header: &Header,
    arrays: &PayloadArrays<'_>,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    let mut events = None;
    for desc in &header.arrays {
        match desc.shape.as_slice() {
            [n] => match events {
                None => events = Some(*n),
                Some(m) if m == *n => {}
                Some(m) => {
                    return Err(DecodeError::payload(format!(
                        "array {:?} has {n} values but others have {m}: one value per event",
                        desc.name
                    )))
                }
            },
            _ => {
                return Err(DecodeError::payload(format!(
                    "array {:?} must be one-dimensional ([events]), got shape {:?}",
                    desc.name, desc.shape
                )))
            }
        }
    }
    let events = usize::try_from(events.unwrap_or(0))
        .map_err(|_| DecodeError::payload("too many events"))?;
    let mut readings = Readings {
        events,
        event_times_ns: None,
        keys: Vec::with_capacity(header.arrays.len()),
    };
    for desc in &header.arrays {
        let (_, bytes) = arrays.require(&desc.name)?;
        if desc.name == EVENT_TIME_ARRAY {
            expect_dtype(desc, &[Dtype::I64])?;
            readings.event_times_ns = Some(to_i64(bytes));
        } else {
            readings.add(&desc.name, KeyValues::Numbers(to_f64(desc.dtype, bytes)))?;
        }
    }
    build(header, readings, ctx)
}

pub(crate) fn from_ipc(
    header: &Header,
    batch: &RecordBatch,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    let mut readings = Readings {
        events: batch.num_rows(),
        event_times_ns: None,
        keys: Vec::with_capacity(batch.num_columns()),
    };
    let schema = batch.schema();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name();
        if name == EVENT_TIME_ARRAY {
            super::ipc::no_nulls(name, column.as_ref())?;
            let times = match column.data_type() {
                DataType::Int64 => column.as_primitive::<Int64Type>().values().to_vec(),
                DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, _) => {
                    let cast = arrow::compute::cast(column, &DataType::Int64)?;
                    cast.as_primitive::<Int64Type>().values().to_vec()
                }
                other => {
                    return Err(DecodeError::payload(format!(
                        "Arrow IPC column {name:?} must be int64 or timestamp[ns], got {other}"
                    )))
                }
            };
            readings.event_times_ns = Some(times);
            continue;
        }
        let values = match column.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let text = arrow::compute::cast(column, &DataType::Utf8)?;
                KeyValues::Text(
                    text.as_string::<i32>()
                        .iter()
                        .map(|v| v.map(str::to_owned))
                        .collect(),
                )
            }
            t if t.is_numeric() || *t == DataType::Boolean => {
                let numbers = arrow::compute::cast(column, &DataType::Float64)?;
                let numbers = numbers.as_primitive::<Float64Type>();
                KeyValues::Numbers(
                    (0..numbers.len())
                        .map(|i| {
                            if numbers.is_null(i) {
                                f64::NAN
                            } else {
                                numbers.value(i)
                            }
                        })
                        .collect(),
                )
            }
            other => {
                return Err(DecodeError::payload(format!(
                    "Arrow IPC column {name:?} is {other}: a reading is a number or a string"
                )))
            }
        };
        readings.add(name, values)?;
    }
    build(header, readings, ctx)
}

/// `meta.text`: keys whose values are strings, one per event (null for none).
fn text_readings(header: &Header, readings: &mut Readings) -> Result<(), DecodeError> {
    let Some(text) = header.meta.get("text") else {
        return Ok(());
    };
    let object = text
        .as_object()
        .ok_or_else(|| DecodeError::payload("meta.text must be an object {key: [values]}"))?;
    for (key, values) in object {
        let values = values.as_array().ok_or_else(|| {
            DecodeError::payload(format!(
                "meta.text.{key} must be a list, one value per event"
            ))
        })?;
        let values = values
            .iter()
            .map(|v| match v {
                serde_json::Value::Null => Ok(None),
                serde_json::Value::String(s) => Ok(Some(s.clone())),
                serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
                serde_json::Value::Number(n) => Ok(Some(n.to_string())),
                other => Err(DecodeError::payload(format!(
                    "meta.text.{key} holds {other}: text readings are strings, numbers, booleans or null"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        readings.add(key, KeyValues::Text(values))?;
    }
    Ok(())
}

/// `meta.timestamps_ns`: when each reading of a key was taken, one time per event (null for
/// unknown), ns since the Unix epoch.
fn reading_times(
    header: &Header,
    readings: &Readings,
) -> Result<Vec<Option<Vec<Option<i64>>>>, DecodeError> {
    let mut times = vec![None; readings.keys.len()];
    let Some(given) = header.meta.get("timestamps_ns") else {
        return Ok(times);
    };
    let object = given.as_object().ok_or_else(|| {
        DecodeError::payload("meta.timestamps_ns must be an object {key: [time per event]}")
    })?;
    for (key, values) in object {
        let position = readings.position("timestamps_ns", key)?;
        let values = values
            .as_array()
            .filter(|v| v.len() == readings.events)
            .ok_or_else(|| {
                DecodeError::payload(format!(
                    "meta.timestamps_ns.{key} must be a list of {} times",
                    readings.events
                ))
            })?;
        let parsed = values
            .iter()
            .map(|v| match v {
                serde_json::Value::Null => Ok(None),
                other => other.as_i64().map(Some).ok_or_else(|| {
                    DecodeError::payload(format!(
                        "meta.timestamps_ns.{key} holds {other}: integer ns or null"
                    ))
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        times[position] = Some(parsed);
    }
    Ok(times)
}

/// `meta.units`: the unit of each reading that has one.
fn units(header: &Header, readings: &Readings) -> Result<Vec<Option<String>>, DecodeError> {
    let mut units = vec![None; readings.keys.len()];
    let Some(given) = header.meta.get("units") else {
        return Ok(units);
    };
    let object = given
        .as_object()
        .ok_or_else(|| DecodeError::payload("meta.units must be an object {key: unit}"))?;
    for (key, unit) in object {
        let position = readings.position("units", key)?;
        let unit = unit
            .as_str()
            .ok_or_else(|| DecodeError::payload(format!("meta.units.{key} must be a string")))?;
        check_name("unit", unit)?;
        units[position] = Some(unit.to_string());
    }
    Ok(units)
}

fn build(
    header: &Header,
    mut readings: Readings,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    check_meta_keys(header, &META_KEYS)?;
    text_readings(header, &mut readings)?;
    if readings.events == 0 || readings.keys.is_empty() {
        return Err(DecodeError::payload(
            "a readings message needs at least one event and one key",
        ));
    }
    if let Some(times) = &readings.event_times_ns {
        if times.len() != readings.events {
            return Err(DecodeError::payload(format!(
                "{EVENT_TIME_ARRAY} has {} values for {} events",
                times.len(),
                readings.events
            )));
        }
    }
    let stream_name = match header.meta.get("stream_name") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(name)) => {
            check_name("meta.stream_name", name)?;
            Some(name.as_str())
        }
        Some(other) => {
            return Err(DecodeError::payload(format!(
                "meta.stream_name must be a string, got {other}"
            )))
        }
    };
    let units = units(header, &readings)?;
    let key_times = reading_times(header, &readings)?;
    let keys = readings.keys.len();
    let rows = readings
        .events
        .checked_mul(keys)
        .filter(|rows| u32::try_from(*rows).is_ok())
        .ok_or_else(|| DecodeError::payload("too many readings in one message"))?;

    let mut event_index = Vec::with_capacity(rows);
    let mut event_time = Vec::with_capacity(rows);
    let mut reading_time = Vec::with_capacity(rows);
    let mut data_key = Vec::with_capacity(rows);
    let mut value = Vec::with_capacity(rows);
    let mut value_text = Vec::with_capacity(rows);
    let mut unit = Vec::with_capacity(rows);
    for event in 0..readings.events {
        for (((key, values), key_unit), times) in readings.keys.iter().zip(&units).zip(&key_times) {
            event_index.push(event as u32);
            event_time.push(readings.event_times_ns.as_ref().map(|t| t[event]));
            reading_time.push(times.as_ref().and_then(|t| t[event]));
            data_key.push(key.as_str());
            unit.push(key_unit.as_deref());
            match values {
                KeyValues::Numbers(numbers) => {
                    let number = numbers[event];
                    if number.is_finite() {
                        value.push(Some(number));
                        value_text.push(None);
                    } else {
                        value.push(None);
                        value_text.push(Some(number.to_string()));
                    }
                }
                KeyValues::Text(texts) => {
                    value.push(None);
                    value_text.push(texts[event].clone());
                }
            }
        }
    }
    let mut columns = Provenance { header, ctx }.columns(rows, None);
    columns.extend([
        Arc::new(StringArray::from(vec![stream_name; rows])) as ArrayRef,
        Arc::new(UInt32Array::from(event_index)),
        Arc::new(TimestampNanosecondArray::from(event_time).with_timezone("UTC")),
        Arc::new(TimestampNanosecondArray::from(reading_time).with_timezone("UTC")),
        Arc::new(StringArray::from(data_key)),
        Arc::new(Float64Array::from(value)),
        Arc::new(StringArray::from(value_text)),
        Arc::new(StringArray::from(unit)),
    ]);
    Ok(vec![(
        Table::Readings,
        RecordBatch::try_new(Table::Readings.schema(), columns)?,
    )])
}
