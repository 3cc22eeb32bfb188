//! TCSPC histogram messages: an instrument in histogram mode (PicoHarp/HydraHarp histogramming,
//! a Becker & Hickl card in oscilloscope mode, a measured decay from another program) sends the
//! counts per micro-time bin of one channel, optionally with the measured IRF to fit them with.
//!
//! One message becomes one `tcspc_histograms` row, the same row a window of photons gives, so
//! the lifetime fit and phasor that follow are the same whichever way the decay arrived.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field};
use flowdaq_schemas::{Dtype, Header, Table};

use super::arrays::{expect_dtype, to_f64, PayloadArrays};
use super::{check_meta_keys, ipc, meta_f64, DecodeContext, DecodeError, Provenance};

const COUNTS: &str = "counts";
const IRF: &str = "irf_counts";
const META: [&str; 5] = [
    "bin_width_ps",
    "sync_rate_hz",
    "channel",
    "window_start_ps",
    "acquisition_time_s",
];
/// Bins a histogram may have: as many as a 16-bit micro time addresses.
const MAX_BINS: usize = 1 << 16;
/// Detector rate above this fraction of the sync rate is flagged as pile-up (as for photons).
const PILE_UP_FRACTION: f64 = 0.05;

pub(crate) fn from_arrays(
    header: &Header,
    arrays: &PayloadArrays<'_>,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    arrays.only(&[COUNTS, IRF])?;
    let numeric = [
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::I32,
        Dtype::I64,
        Dtype::F32,
        Dtype::F64,
    ];
    let read = |name: &str| -> Result<Option<Vec<f64>>, DecodeError> {
        let Some((desc, bytes)) = arrays.get(name) else {
            return Ok(None);
        };
        expect_dtype(desc, &numeric)?;
        if desc.shape.len() != 1 {
            return Err(DecodeError::payload(format!(
                "{name} must be one-dimensional"
            )));
        }
        Ok(Some(to_f64(desc.dtype, bytes)))
    };
    let counts = read(COUNTS)?.ok_or_else(|| DecodeError::payload("array counts is required"))?;
    let irf = read(IRF)?;
    build(header, counts, irf, ctx)
}

pub(crate) fn from_ipc(
    header: &Header,
    batch: &RecordBatch,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    ipc::only_columns(batch, &[COUNTS, IRF])?;
    let column = |name: &str| -> Result<Option<Vec<f64>>, DecodeError> {
        if batch.column_by_name(name).is_none() {
            return Ok(None);
        }
        let col = ipc::column(batch, name)?;
        ipc::no_nulls(name, col.as_ref())?;
        let col = arrow::compute::cast(col, &DataType::Float64)?;
        Ok(Some(col.as_primitive::<Float64Type>().values().to_vec()))
    };
    let counts =
        column(COUNTS)?.ok_or_else(|| DecodeError::payload("column counts is required"))?;
    build(header, counts, column(IRF)?, ctx)
}

fn build(
    header: &Header,
    counts: Vec<f64>,
    irf: Option<Vec<f64>>,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    check_meta_keys(header, &META)?;
    let bins = counts.len();
    if !(2..=MAX_BINS).contains(&bins) {
        return Err(DecodeError::payload(format!(
            "counts has {bins} bins; a histogram has 2 to {MAX_BINS}"
        )));
    }
    if let Some(bad) = counts
        .iter()
        .find(|c| !(c.is_finite() && **c >= 0.0 && c.fract() == 0.0 && **c <= f64::from(u32::MAX)))
    {
        return Err(DecodeError::Values(format!(
            "counts holds {bad}: counts are whole numbers from 0 to {}",
            u32::MAX
        )));
    }
    if let Some(irf) = &irf {
        let usable =
            irf.iter().all(|v| v.is_finite() && *v >= 0.0) && irf.iter().sum::<f64>() > 0.0;
        if irf.len() != bins || !usable {
            return Err(DecodeError::Values(format!(
                "irf_counts must hold {bins} finite, non-negative values (one per bin of counts) \
                 with a positive sum; it has {}",
                irf.len()
            )));
        }
    }
    let required = |key: &str| -> Result<f64, DecodeError> {
        match meta_f64(header, key)? {
            Some(v) if v > 0.0 && v < 1e15 => Ok(v),
            Some(v) => Err(DecodeError::Values(format!("meta.{key} = {v} must be > 0"))),
            None => Err(DecodeError::payload(format!("meta.{key} is required"))),
        }
    };
    let bin_width_ps = required("bin_width_ps")?;
    let sync_rate_hz = required("sync_rate_hz")?;
    let channel =
        match header.meta.get("channel") {
            None => 0,
            Some(v) => v.as_u64().filter(|c| *c < 64).ok_or_else(|| {
                DecodeError::Values(format!("meta.channel must be 0 to 63, got {v}"))
            })? as u8,
        };
    let window_start_ps = match header.meta.get("window_start_ps") {
        None => 0,
        Some(v) => v.as_i64().ok_or_else(|| {
            DecodeError::Values(format!("meta.window_start_ps must be an integer, got {v}"))
        })?,
    };
    let acquisition_s = match meta_f64(header, "acquisition_time_s")? {
        None => 0.0,
        Some(v) if (0.0..1e9).contains(&v) => v,
        Some(v) => {
            return Err(DecodeError::Values(format!(
                "meta.acquisition_time_s = {v} must be >= 0"
            )))
        }
    };
    let photons: u64 = counts.iter().map(|&c| c as u64).sum();
    let rate_hz = if acquisition_s > 0.0 {
        photons as f64 / acquisition_s
    } else {
        0.0
    };
    let window_end_ps = window_start_ps.saturating_add((acquisition_s * 1e12).round() as i64);
    let counts: Vec<u32> = counts.iter().map(|&c| c as u32).collect();
    let list = |item: DataType, values: ArrayRef| -> Result<ArrayRef, DecodeError> {
        Ok(Arc::new(ListArray::try_new(
            Arc::new(Field::new("item", item, true)),
            OffsetBuffer::from_lengths([bins]),
            values,
            None,
        )?))
    };
    let irf_column = match irf {
        Some(irf) => list(DataType::Float64, Arc::new(Float64Array::from(irf)))?,
        None => arrow_array::new_null_array(
            &DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
            1,
        ),
    };
    let mut columns = Provenance { header, ctx }.columns(1, None);
    columns.extend([
        Arc::new(Int64Array::from(vec![window_start_ps])) as ArrayRef,
        Arc::new(Int64Array::from(vec![window_end_ps])),
        Arc::new(UInt8Array::from(vec![channel])),
        Arc::new(UInt64Array::from(vec![photons])),
        Arc::new(Float64Array::from(vec![rate_hz])),
        Arc::new(Float64Array::from(vec![sync_rate_hz])),
        Arc::new(BooleanArray::from(vec![
            rate_hz > PILE_UP_FRACTION * sync_rate_hz,
        ])),
        Arc::new(Float64Array::from(vec![bin_width_ps])),
        list(DataType::UInt32, Arc::new(UInt32Array::from(counts)))?,
        Arc::new(UInt64Array::new_null(1)),
        Arc::new(UInt64Array::new_null(1)),
        irf_column,
    ]);
    let table = Table::TcspcHistograms;
    Ok(vec![(
        table,
        RecordBatch::try_new(table.unsequenced_schema(), columns)?,
    )])
}
