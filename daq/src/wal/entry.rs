//! One WAL entry on disk: `magic | payload length | crc32 | payload`, payload being the table
//! name and an Arrow IPC stream of one batch.
//!
//! The checksum covers the payload, so a torn write or a flipped bit is detected on replay
//! rather than decoded into wrong rows.

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

const MAGIC: [u8; 4] = *b"FDW1";
const HEADER_BYTES: usize = 12;

/// Entry encoding or decoding failures.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Fewer bytes than the entry claims: a torn tail.
    #[error("truncated entry ({available} of {needed} bytes)")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// Not an entry start.
    #[error("bad magic")]
    BadMagic,
    /// Payload checksum mismatch.
    #[error("checksum mismatch")]
    Checksum,
    /// Table name unknown to this build.
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    /// Arrow IPC failure.
    #[error("arrow ipc: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Appends the encoded entry for `batch` to `out`.
pub fn encode(table: Table, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), EntryError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 8]);
    let name = table.name().as_bytes();
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    {
        let mut writer = StreamWriter::try_new(&mut *out, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    let payload_len = (out.len() - start - HEADER_BYTES) as u32;
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes the entry at the start of `bytes`; returns it and the bytes it used.
pub fn decode(bytes: &[u8]) -> Result<(Table, RecordBatch, usize), EntryError> {
    if bytes.len() < HEADER_BYTES {
        return Err(EntryError::Truncated {
            needed: HEADER_BYTES,
            available: bytes.len(),
        });
    }
    if bytes[0..4] != MAGIC {
        return Err(EntryError::BadMagic);
    }
    let payload_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let end = HEADER_BYTES + payload_len;
    if bytes.len() < end {
        return Err(EntryError::Truncated {
            needed: end,
            available: bytes.len(),
        });
    }
    let payload = &bytes[HEADER_BYTES..end];
    if crc32fast::hash(payload) != crc {
        return Err(EntryError::Checksum);
    }
    let name_len = usize::from(*payload.first().ok_or(EntryError::BadMagic)?);
    let name = payload.get(1..1 + name_len).ok_or(EntryError::BadMagic)?;
    let name = String::from_utf8_lossy(name);
    let table =
        Table::from_name(&name).ok_or_else(|| EntryError::UnknownTable(name.to_string()))?;
    let reader = StreamReader::try_new(std::io::Cursor::new(&payload[1 + name_len..]), None)?;
    let mut batches = reader.collect::<Result<Vec<_>, _>>()?;
    let batch = batches.pop().ok_or(EntryError::BadMagic)?;
    Ok((table, batch, end))
}
