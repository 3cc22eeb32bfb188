//! Spectra messages: wavelength axis plus one or many spectra of intensities.
//!
//! The axis is stored once per calibration (`spectral_calibrations`), keyed by a hash of its
//! values, and each spectrum row carries only that key and its intensities: a 2048-pixel
//! spectrum then costs 8 KiB of f32 rather than 24 KiB with its own f64 axis.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Float32Type, Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, ListArray, RecordBatch, StringArray, TimestampNanosecondArray,
    UInt32Array, UInt64Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field};
use flowdaq_schemas::{tables, Dtype, Header, Table};

use super::arrays::{expect_dtype, to_f32, to_f64, to_i64, PayloadArrays};
use super::{check_meta_keys, ipc, meta_f64, DecodeContext, DecodeError, Provenance};

const KINDS: [&str; 5] = ["pl", "absorbance", "sample", "dark", "reference"];
const META_KEYS: [&str; 3] = ["kind", "integration_time_ms", "probe_position_mm"];
const MAX_INTEGRATION_MS: f64 = 3_600_000.0;
const MAX_ABS_POSITION_MM: f64 = 1.0e6;

/// The stable id of a wavelength axis: FNV-1a over the little-endian bytes of its values.
///
/// Equal axes (bit for bit) share an id across messages, restarts and machines.
pub fn axis_calibration_id(axis_nm: &[f64]) -> u64 {
    fnv1a_of_axis(axis_nm)
}

/// A wavelength axis that passed [`check_axis`], with its calibration id; its values are
/// shared by every message that repeats it.
#[derive(Debug)]
pub(super) struct CheckedAxis {
    pub(super) id: u64,
    pub(super) values: Float64Array,
}

/// The checked axis of an array frame (`dtype`, little-endian `bytes`).
///
/// Checking an axis (three passes), converting it and hashing it (FNV-1a is byte-serial: about
/// 20 µs for 2048 pixels) cost more than the rest of a one-spectrum message, and nearly every
/// message of a source repeats the previous axis. So the last few frames this thread checked
/// are remembered by their bytes, and a repeat costs one memcmp. The memo never changes the
/// result: equal bytes give equal values.
pub(super) fn checked_axis(dtype: Dtype, bytes: &[u8]) -> Result<Arc<CheckedAxis>, DecodeError> {
    const REMEMBERED_AXES: usize = 8;
    type Remembered = Vec<(Dtype, Vec<u8>, Arc<CheckedAxis>)>;
    thread_local! {
        static RECENT: std::cell::RefCell<Remembered> = const { std::cell::RefCell::new(Vec::new()) };
    }
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(position) = recent
            .iter()
            .position(|(d, b, _)| *d == dtype && b.as_slice() == bytes)
        {
            let entry = recent.remove(position);
            let axis = entry.2.clone();
            recent.insert(0, entry);
            return Ok(axis);
        }
        let values = to_f64(dtype, bytes);
        check_axis(&values)?;
        let axis = Arc::new(CheckedAxis {
            id: fnv1a_of_axis(&values),
            values: Float64Array::from(values),
        });
        recent.insert(0, (dtype, bytes.to_vec(), axis.clone()));
        recent.truncate(REMEMBERED_AXES);
        Ok(axis)
    })
}

fn fnv1a_of_axis(axis_nm: &[f64]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    axis_nm
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        })
}

/// Spectra in a stream-independent form, before validation.
struct SpectraParts {
    /// Distinct axes in the message, checked.
    axes: Vec<Arc<CheckedAxis>>,
    /// Index into `axes` for each spectrum.
    axis_of_row: Vec<usize>,
    /// Intensities, one list per spectrum, non-null Float32 items.
    intensities: ListArray,
    /// Per-spectrum instrument times, when the sender gave them.
    instrument_times_ns: Option<Vec<i64>>,
}

pub(crate) fn from_arrays(
    header: &Header,
    arrays: &PayloadArrays<'_>,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    arrays.only(&["wavelength_nm", "intensity_counts", "instrument_time_ns"])?;
    let (axis_desc, axis_bytes) = arrays.require("wavelength_nm")?;
    expect_dtype(axis_desc, &[Dtype::F64, Dtype::F32])?;
    if axis_desc.shape.len() != 1 {
        return Err(DecodeError::payload(
            "wavelength_nm must be one-dimensional",
        ));
    }
    let pixels = axis_desc.shape[0] as usize;
    let (counts_desc, counts_bytes) = arrays.require("intensity_counts")?;
    let spectra = match counts_desc.shape.as_slice() {
        [p] if *p as usize == pixels => 1,
        [n, p] if *p as usize == pixels => *n as usize,
        shape => {
            return Err(DecodeError::payload(format!(
                "intensity_counts shape {shape:?} does not match wavelength_nm length {pixels} \
                 (expected [{pixels}] or [n_spectra, {pixels}])"
            )))
        }
    };
    let values = to_f32(counts_desc.dtype, counts_bytes);
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(pixels, spectra));
    let intensities = ListArray::try_new(
        item_field(DataType::Float32),
        offsets,
        Arc::new(arrow_array::Float32Array::from(values)),
        None,
    )?;
    let instrument_times_ns = match arrays.get("instrument_time_ns") {
        None => None,
        Some((desc, bytes)) => {
            expect_dtype(desc, &[Dtype::I64])?;
            if desc.shape != [spectra as u64] {
                return Err(DecodeError::payload(format!(
                    "instrument_time_ns shape {:?} must be [{spectra}]",
                    desc.shape
                )));
            }
            Some(to_i64(bytes))
        }
    };
    let parts = SpectraParts {
        axes: vec![checked_axis(axis_desc.dtype, axis_bytes)?],
        axis_of_row: vec![0; spectra],
        intensities,
        instrument_times_ns,
    };
    build(header, parts, ctx)
}

pub(crate) fn from_ipc(
    header: &Header,
    batch: &RecordBatch,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    ipc::only_columns(
        batch,
        &["wavelength_nm", "intensity_counts", "instrument_time_ns"],
    )?;
    let axes_col = cast_list(
        ipc::column(batch, "wavelength_nm")?,
        DataType::Float64,
        "wavelength_nm",
    )?;
    let counts = cast_list(
        ipc::column(batch, "intensity_counts")?,
        DataType::Float32,
        "intensity_counts",
    )?;
    let mut axes: Vec<Arc<CheckedAxis>> = Vec::new();
    let mut axis_of_row = Vec::with_capacity(axes_col.len());
    for row in 0..axes_col.len() {
        let axis_array = axes_col.value(row);
        let axis_values = axis_array.as_primitive::<Float64Type>().values();
        let axis = checked_axis(Dtype::F64, axis_values.inner().as_slice())?;
        let index = match axes.iter().position(|known| known.id == axis.id) {
            Some(index) => index,
            None => {
                axes.push(axis.clone());
                axes.len() - 1
            }
        };
        if counts.value_length(row) != axis.values.len() as i32 {
            return Err(DecodeError::payload(format!(
                "row {row}: {} intensities for a {}-point axis",
                counts.value_length(row),
                axis.values.len()
            )));
        }
        axis_of_row.push(index);
    }
    let instrument_times_ns = match batch.column_by_name("instrument_time_ns") {
        None => None,
        Some(col) => {
            ipc::no_nulls("instrument_time_ns", col.as_ref())?;
            let col = arrow::compute::cast(col, &DataType::Int64)?;
            Some(col.as_primitive::<Int64Type>().values().to_vec())
        }
    };
    build(
        header,
        SpectraParts {
            axes,
            axis_of_row,
            intensities: counts,
            instrument_times_ns,
        },
        ctx,
    )
}

fn item_field(data_type: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", data_type, false))
}

/// Casts an IPC list column (List, LargeList or FixedSizeList of numbers) to `List<item>`.
fn cast_list(array: &ArrayRef, item: DataType, name: &str) -> Result<ListArray, DecodeError> {
    ipc::no_nulls(name, array.as_ref())?;
    let target = DataType::List(item_field(item));
    let cast = arrow::compute::cast(array, &target)
        .map_err(|e| DecodeError::payload(format!("column {name:?} is not a numeric list: {e}")))?;
    let list = cast.as_list::<i32>().clone();
    ipc::no_nulls(name, list.values().as_ref())?;
    Ok(list)
}

fn check_axis(axis: &[f64]) -> Result<(), DecodeError> {
    if axis.is_empty() {
        return Err(DecodeError::payload("wavelength_nm is empty"));
    }
    if let Some(bad) = axis
        .iter()
        .find(|x| !x.is_finite() || **x <= 0.0 || **x > 1.0e6)
    {
        return Err(DecodeError::Values(format!(
            "wavelength_nm holds {bad}: every wavelength must be finite, > 0 and <= 1e6 nm"
        )));
    }
    let increasing = axis.windows(2).all(|w| w[1] > w[0]);
    let decreasing = axis.windows(2).all(|w| w[1] < w[0]);
    if increasing || decreasing {
        Ok(())
    } else {
        Err(DecodeError::Values(
            "wavelength_nm must be strictly monotonic".into(),
        ))
    }
}

fn build(
    header: &Header,
    parts: SpectraParts,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    check_meta_keys(header, &META_KEYS)?;
    let kind = match header.meta.get("kind").and_then(|v| v.as_str()) {
        Some(kind) if KINDS.contains(&kind) => kind,
        Some(kind) => {
            return Err(DecodeError::payload(format!(
                "meta.kind {kind:?} is not one of {KINDS:?}"
            )))
        }
        None => {
            return Err(DecodeError::payload(format!(
                "meta.kind is required, one of {KINDS:?}"
            )))
        }
    };
    let integration_ms = meta_f64(header, "integration_time_ms")?
        .ok_or_else(|| DecodeError::payload("meta.integration_time_ms is required"))?;
    if !(integration_ms > 0.0 && integration_ms <= MAX_INTEGRATION_MS) {
        return Err(DecodeError::Values(format!(
            "meta.integration_time_ms = {integration_ms} is outside (0, {MAX_INTEGRATION_MS}]"
        )));
    }
    let probe_position_mm = meta_f64(header, "probe_position_mm")?;
    if probe_position_mm.is_some_and(|p| p.abs() > MAX_ABS_POSITION_MM) {
        return Err(DecodeError::Values(format!(
            "meta.probe_position_mm = {probe_position_mm:?} is absurd (|x| > {MAX_ABS_POSITION_MM})"
        )));
    }
    let rows = parts.intensities.len();
    if rows == 0 {
        return Err(DecodeError::payload("message holds no spectra"));
    }
    if ctx.limits.reject_non_finite_intensities {
        let values = parts
            .intensities
            .values()
            .as_primitive::<Float32Type>()
            .values();
        let bad = values.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            return Err(DecodeError::Values(format!(
                "{bad} of {} intensity values are NaN or infinite",
                values.len()
            )));
        }
    }
    let ids: Vec<u64> = parts.axes.iter().map(|a| a.id).collect();
    let provenance = Provenance { header, ctx };
    let mut columns = provenance.columns(rows, parts.instrument_times_ns);
    columns.extend([
        Arc::new(UInt32Array::from_iter_values(0..rows as u32)) as ArrayRef,
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            kind, rows,
        ))),
        Arc::new(Float64Array::from(vec![probe_position_mm; rows])),
        Arc::new(Float64Array::from_value(integration_ms, rows)),
        Arc::new(UInt64Array::from_iter_values(
            parts.axis_of_row.iter().map(|&i| ids[i]),
        )),
        Arc::new(parts.intensities),
    ]);
    let spectra = RecordBatch::try_new(Table::Spectra.schema(), columns)?;
    let calibrations = calibration_batch(header, ctx, &parts.axes, &ids)?;
    Ok(vec![
        (Table::Spectra, spectra),
        (Table::SpectralCalibrations, calibrations),
    ])
}

fn calibration_batch(
    header: &Header,
    ctx: &DecodeContext<'_>,
    axes: &[Arc<CheckedAxis>],
    ids: &[u64],
) -> Result<RecordBatch, DecodeError> {
    let rows = axes.len();
    let offsets = OffsetBuffer::from_lengths(axes.iter().map(|a| a.values.len()));
    let values: ArrayRef = match axes {
        [one] => Arc::new(one.values.clone()),
        many => {
            let arrays: Vec<&dyn Array> = many.iter().map(|a| &a.values as &dyn Array).collect();
            arrow::compute::concat(&arrays)?
        }
    };
    let axis_list = ListArray::try_new(item_field(DataType::Float64), offsets, values, None)?;
    debug_assert_eq!(tables::axis_list_type(), *axis_list.data_type());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from_value(ctx.arrival_time_ns, rows).with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            &header.source,
            rows,
        ))),
        Arc::new(UInt64Array::from(ids.to_vec())),
        Arc::new(UInt32Array::from_iter_values(
            axes.iter().map(|a| a.values.len() as u32),
        )),
        Arc::new(axis_list),
    ];
    Ok(RecordBatch::try_new(
        Table::SpectralCalibrations.schema(),
        columns,
    )?)
}
