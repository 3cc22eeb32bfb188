//! Phase-sensor messages: a chunk of the two voltage traces of one sensor pair.
//!
//! One message becomes one row holding both traces as lists, with the sample rate and the time
//! of the first sample: kHz traces stay cheap to store and easy to re-slice in SQL.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Float32Type;
use arrow_array::{
    ArrayRef, Float32Array, Float64Array, ListArray, RecordBatch, TimestampNanosecondArray,
    UInt32Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field};
use flowdaq_schemas::{Dtype, Header, Table};

use super::arrays::{expect_dtype, to_f32, PayloadArrays};
use super::{check_meta_keys, ipc, meta_f64, DecodeContext, DecodeError, Provenance};

const ARRAYS: [&str; 2] = ["sensor_a_volts", "sensor_b_volts"];
const MAX_SAMPLE_RATE_HZ: f64 = 1.0e9;
const MAX_ABS_VOLTS: f32 = 1.0e4;

pub(crate) fn from_arrays(
    header: &Header,
    arrays: &PayloadArrays<'_>,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    arrays.only(&ARRAYS)?;
    let mut traces = Vec::with_capacity(2);
    for name in ARRAYS {
        let (desc, bytes) = arrays.require(name)?;
        expect_dtype(desc, &[Dtype::F32, Dtype::F64])?;
        if desc.shape.len() != 1 {
            return Err(DecodeError::payload(format!(
                "{name} must be one-dimensional"
            )));
        }
        traces.push(to_f32(desc.dtype, bytes));
    }
    let b = traces.pop().unwrap_or_default();
    let a = traces.pop().unwrap_or_default();
    build(header, a, b, ctx)
}

pub(crate) fn from_ipc(
    header: &Header,
    batch: &RecordBatch,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    ipc::only_columns(batch, &ARRAYS)?;
    let mut traces = Vec::with_capacity(2);
    for name in ARRAYS {
        let col = ipc::column(batch, name)?;
        ipc::no_nulls(name, col.as_ref())?;
        let col = arrow::compute::cast(col, &DataType::Float32)?;
        traces.push(col.as_primitive::<Float32Type>().values().to_vec());
    }
    let b = traces.pop().unwrap_or_default();
    let a = traces.pop().unwrap_or_default();
    build(header, a, b, ctx)
}

fn build(
    header: &Header,
    sensor_a: Vec<f32>,
    sensor_b: Vec<f32>,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    check_meta_keys(header, &["sample_rate_hz", "first_sample_time_ns"])?;
    if sensor_a.len() != sensor_b.len() {
        return Err(DecodeError::payload(format!(
            "sensor traces differ in length: a has {}, b has {}",
            sensor_a.len(),
            sensor_b.len()
        )));
    }
    if sensor_a.is_empty() {
        return Err(DecodeError::payload("message holds no samples"));
    }
    for (name, trace) in ARRAYS.iter().zip([&sensor_a, &sensor_b]) {
        if let Some(bad) = trace
            .iter()
            .find(|v| !v.is_finite() || v.abs() > MAX_ABS_VOLTS)
        {
            return Err(DecodeError::Values(format!(
                "{name} holds {bad}: samples must be finite and within +-{MAX_ABS_VOLTS} V"
            )));
        }
    }
    let rate = meta_f64(header, "sample_rate_hz")?
        .ok_or_else(|| DecodeError::payload("meta.sample_rate_hz is required"))?;
    if !(rate > 0.0 && rate <= MAX_SAMPLE_RATE_HZ) {
        return Err(DecodeError::Values(format!(
            "meta.sample_rate_hz = {rate} is outside (0, {MAX_SAMPLE_RATE_HZ}]"
        )));
    }
    let first_sample_ns = match header.meta.get("first_sample_time_ns") {
        None => header.instrument_time_ns.unwrap_or(ctx.arrival_time_ns),
        Some(v) => v.as_i64().ok_or_else(|| {
            DecodeError::Values(format!(
                "meta.first_sample_time_ns must be an integer, got {v}"
            ))
        })?,
    };
    let samples = sensor_a.len();
    let list = |values: Vec<f32>| -> Result<ArrayRef, DecodeError> {
        Ok(Arc::new(ListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            OffsetBuffer::from_lengths([samples]),
            Arc::new(Float32Array::from(values)),
            None,
        )?))
    };
    let mut columns = Provenance { header, ctx }.columns(1, None);
    columns.extend([
        Arc::new(TimestampNanosecondArray::from(vec![first_sample_ns]).with_timezone("UTC"))
            as ArrayRef,
        Arc::new(Float64Array::from(vec![rate])),
        Arc::new(UInt32Array::from(vec![samples as u32])),
        list(sensor_a)?,
        list(sensor_b)?,
    ]);
    Ok(vec![(
        Table::PhaseTraces,
        RecordBatch::try_new(Table::PhaseTraces.schema(), columns)?,
    )])
}
