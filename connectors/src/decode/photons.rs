//! Photon messages: already-decoded TCSPC events (macro time, micro time, channel, markers).
//!
//! Either columns that are already physical, or raw PicoQuant records (array `records`) that
//! [`super::records`] decodes with the source's carried overflow state. 64-bit time tags are
//! decoded by the sender (or a connector) into columns.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type, UInt8Type};
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, UInt8Array};
use arrow_schema::DataType;
use bytes::Bytes;
use flowdaq_schemas::{Dtype, Header, Table};

use super::arrays::{expect_dtype, to_i32, to_i64, PayloadArrays};
use super::records::RecordStreams;
use super::{
    check_meta_keys, ipc, DecodeContext, DecodeError, DecodedRecords, PayloadRows, Provenance,
};

const ARRAYS: [&str; 4] = ["macro_time_ps", "micro_time_ps", "channel", "marker_flags"];

struct PhotonColumns {
    macro_time_ps: Vec<i64>,
    micro_time_ps: Vec<i32>,
    channel: Vec<u8>,
    marker_flags: Vec<u8>,
}

/// Meta keys of a message of raw records (see [`super::records`]).
const RAW_META: [&str; 3] = ["record_type", "macro_unit_ps", "micro_bin_ps"];
/// Meta keys of a message of 16-byte time tags.
const TAG_META: [&str; 4] = [
    "detector_channels",
    "sync_channel",
    "marker_channels",
    "micro_bin_ps",
];

/// Decodes a `photons` message of arrays. Raw PicoQuant records stay native events
/// ([`PayloadRows::records`], no `photons` batch yet; see [`records_batch`]); time tags and
/// columns become the batch.
pub(crate) fn from_arrays(
    header: &Header,
    arrays: &PayloadArrays<'_>,
    ctx: &DecodeContext<'_>,
    streams: Option<&mut RecordStreams>,
) -> Result<PayloadRows, DecodeError> {
    let raw = if arrays.get("records").is_some() {
        Some(("records", Dtype::U32, &RAW_META[..]))
    } else if arrays.get("time_tags").is_some() {
        Some(("time_tags", Dtype::U8, &TAG_META[..]))
    } else {
        None
    };
    if let Some((name, dtype, meta_keys)) = raw {
        arrays.only(&[name])?;
        let (desc, bytes) = arrays.require(name)?;
        expect_dtype(desc, &[dtype])?;
        check_meta_keys(header, meta_keys)?;
        let mut stateless = RecordStreams::default();
        let streams = streams.unwrap_or(&mut stateless);
        if name == "records" {
            let frame = arrays
                .frame(name)
                .unwrap_or_else(|| Bytes::copy_from_slice(bytes));
            return Ok(PayloadRows {
                batches: Vec::new(),
                records: Some(streams.decode(header, frame)?),
            });
        }
        let decoded = streams.decode_tags(header, bytes)?;
        if decoded.macro_time_ps.is_empty() {
            // Only syncs: nothing to store, but the state has moved on.
            return Ok(PayloadRows::default());
        }
        let columns = PhotonColumns {
            macro_time_ps: decoded.macro_time_ps,
            micro_time_ps: decoded.micro_time_ps,
            channel: decoded.channel,
            marker_flags: decoded.marker_flags,
        };
        return build(header, columns, ctx, meta_keys).map(PayloadRows::from);
    }
    arrays.only(&ARRAYS)?;
    let (macro_desc, macro_bytes) = arrays.require("macro_time_ps")?;
    expect_dtype(macro_desc, &[Dtype::I64])?;
    let n = macro_desc.element_count().unwrap_or(0);
    let one_d = |name: &str, dtype: Dtype| -> Result<Option<&[u8]>, DecodeError> {
        match arrays.get(name) {
            None => Ok(None),
            Some((desc, bytes)) => {
                expect_dtype(desc, &[dtype])?;
                if desc.shape != [n] {
                    return Err(DecodeError::payload(format!(
                        "array {name:?} shape {:?} must be [{n}] like macro_time_ps",
                        desc.shape
                    )));
                }
                Ok(Some(bytes))
            }
        }
    };
    if macro_desc.shape.len() != 1 {
        return Err(DecodeError::payload(
            "macro_time_ps must be one-dimensional",
        ));
    }
    let micro = one_d("micro_time_ps", Dtype::I32)?
        .ok_or_else(|| DecodeError::payload("missing required array \"micro_time_ps\""))?;
    let channel = one_d("channel", Dtype::U8)?
        .ok_or_else(|| DecodeError::payload("missing required array \"channel\""))?;
    let markers = one_d("marker_flags", Dtype::U8)?;
    let columns = PhotonColumns {
        macro_time_ps: to_i64(macro_bytes),
        micro_time_ps: to_i32(micro),
        channel: channel.to_vec(),
        marker_flags: markers
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| vec![0; n as usize]),
    };
    build(header, columns, ctx, &[]).map(PayloadRows::from)
}

/// The `photons` rows of decoded raw records: the ps columns computed from the native events
/// (which stay, for the extractors), with the provenance columns. None for a message of only
/// overflow records: the decoder state moved on, but there is nothing to store.
pub(crate) fn records_batch(
    header: &Header,
    records: &DecodedRecords,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    if records.rows() == 0 {
        return Ok(Vec::new());
    }
    let decoded = flowdaq_analytics::tcspc::records::PhotonColumns::from_events(
        records.events(),
        records.time_base,
    );
    let columns = PhotonColumns {
        macro_time_ps: decoded.macro_time_ps,
        micro_time_ps: decoded.micro_time_ps,
        channel: decoded.channel,
        marker_flags: decoded.marker_flags,
    };
    build(header, columns, ctx, &RAW_META)
}

pub(crate) fn from_ipc(
    header: &Header,
    batch: &RecordBatch,
    ctx: &DecodeContext<'_>,
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    ipc::only_columns(batch, &ARRAYS)?;
    let typed = |name: &str, to: DataType| -> Result<ArrayRef, DecodeError> {
        let col = ipc::column(batch, name)?;
        ipc::no_nulls(name, col.as_ref())?;
        Ok(arrow::compute::cast(col, &to)?)
    };
    let macro_time = typed("macro_time_ps", DataType::Int64)?;
    let micro_time = typed("micro_time_ps", DataType::Int32)?;
    let channel = typed("channel", DataType::UInt8)?;
    let markers = match batch.column_by_name("marker_flags") {
        Some(_) => typed("marker_flags", DataType::UInt8)?
            .as_primitive::<UInt8Type>()
            .values()
            .to_vec(),
        None => vec![0; batch.num_rows()],
    };
    let columns = PhotonColumns {
        macro_time_ps: macro_time.as_primitive::<Int64Type>().values().to_vec(),
        micro_time_ps: micro_time.as_primitive::<Int32Type>().values().to_vec(),
        channel: channel.as_primitive::<UInt8Type>().values().to_vec(),
        marker_flags: markers,
    };
    build(header, columns, ctx, &[])
}

fn build(
    header: &Header,
    photons: PhotonColumns,
    ctx: &DecodeContext<'_>,
    meta_keys: &[&str],
) -> Result<Vec<(Table, RecordBatch)>, DecodeError> {
    check_meta_keys(header, meta_keys)?;
    let rows = photons.macro_time_ps.len();
    if rows == 0 {
        return Err(DecodeError::payload("message holds no photons"));
    }
    // The minimum (a loop the compiler vectorises) rather than the first negative value.
    if let Some(bad) = photons
        .micro_time_ps
        .iter()
        .copied()
        .min()
        .filter(|&t| t < 0)
    {
        return Err(DecodeError::Values(format!(
            "micro_time_ps {bad} is negative"
        )));
    }
    if let Some(bad) = photons
        .macro_time_ps
        .iter()
        .copied()
        .min()
        .filter(|&t| t < 0)
    {
        return Err(DecodeError::Values(format!(
            "macro_time_ps {bad} is negative"
        )));
    }
    let mut columns = Provenance { header, ctx }.columns(rows, None);
    columns.extend([
        Arc::new(Int64Array::from(photons.macro_time_ps)) as ArrayRef,
        Arc::new(Int32Array::from(photons.micro_time_ps)),
        Arc::new(UInt8Array::from(photons.channel)),
        Arc::new(UInt8Array::from(photons.marker_flags)),
    ]);
    Ok(vec![(
        Table::Photons,
        RecordBatch::try_new(Table::Photons.schema(), columns)?,
    )])
}
