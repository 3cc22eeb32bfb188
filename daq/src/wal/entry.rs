//! One WAL entry on disk: `magic | payload length | crc32 | payload`. An entry is one group
//! commit: the seq spans of the messages it holds and every batch they gave, of every table.
//!
//! One entry per group is what keeps a group whole: the checksum covers all of it, so replay
//! sees the raw rows of a message together with their derived rows, or neither. A torn write
//! or a flipped bit is detected on replay rather than decoded into wrong rows. Entries of the
//! first format (`FDW1`: one batch, no seq spans) are still read.

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use flowdaq_schemas::Table;

use crate::ledger::SeqSpan;

const MAGIC_V1: [u8; 4] = *b"FDW1";
const HEADER_V1: usize = 12;
const MAGIC_V2: [u8; 4] = *b"FDW2";
const HEADER_V2: usize = 16;

/// Entry encoding or decoding failures.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Fewer bytes than the entry claims: a torn tail.
    #[error("truncated entry ({available} of {needed} bytes)")]
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// Not an entry start.
    #[error("bad magic")]
    BadMagic,
    /// Payload checksum mismatch.
    #[error("checksum mismatch")]
    Checksum,
    /// The payload's structure is inconsistent (checksum right: a bug or another format).
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
    /// Table name unknown to this build.
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    /// Arrow IPC failure.
    #[error("arrow ipc: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The seq spans could not be encoded or decoded.
    #[error("seq spans: {0}")]
    Spans(#[from] serde_json::Error),
}

/// One group commit as the WAL holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalGroup {
    /// Every batch of the group, any tables, in commit order.
    pub batches: Vec<(Table, RecordBatch)>,
    /// The (source, session, seq) of every message the group commits.
    pub seqs: Vec<SeqSpan>,
}

/// Appends the encoded entry of `group` to `out`.
///
/// # Errors
/// [`EntryError`] if a batch cannot be encoded; `out` then holds a partial entry.
pub fn encode(
    batches: &[(Table, RecordBatch)],
    seqs: &[SeqSpan],
    out: &mut Vec<u8>,
) -> Result<(), EntryError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC_V2);
    out.extend_from_slice(&[0; HEADER_V2 - 4]);
    let spans = serde_json::to_vec(seqs)?;
    out.extend_from_slice(&(spans.len() as u32).to_le_bytes());
    out.extend_from_slice(&spans);
    let count =
        u16::try_from(batches.len()).map_err(|_| EntryError::Malformed("too many batches"))?;
    out.extend_from_slice(&count.to_le_bytes());
    for (table, batch) in batches {
        let name = table.name().as_bytes();
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        let length_at = out.len();
        out.extend_from_slice(&[0; 8]);
        {
            let mut writer = StreamWriter::try_new(&mut *out, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
        }
        let ipc_len = (out.len() - length_at - 8) as u64;
        out[length_at..length_at + 8].copy_from_slice(&ipc_len.to_le_bytes());
    }
    let payload_len = (out.len() - start - HEADER_V2) as u64;
    let crc = crc32fast::hash(&out[start + HEADER_V2..]);
    out[start + 4..start + 12].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes the entry at the start of `bytes`; returns it and the bytes it used.
///
/// # Errors
/// [`EntryError`]: a torn, corrupt or foreign entry.
pub fn decode(bytes: &[u8]) -> Result<(WalGroup, usize), EntryError> {
    let magic = bytes.get(0..4).ok_or(EntryError::Truncated {
        needed: 4,
        available: bytes.len() as u64,
    })?;
    if magic == MAGIC_V2 {
        decode_v2(bytes)
    } else if magic == MAGIC_V1 {
        decode_v1(bytes)
    } else {
        Err(EntryError::BadMagic)
    }
}

/// The checksummed payload of an entry whose header is `header` bytes with the length at
/// `4..4 + length_bytes` and the crc after it.
fn payload(bytes: &[u8], header: usize, length_bytes: usize) -> Result<(&[u8], usize), EntryError> {
    if bytes.len() < header {
        return Err(EntryError::Truncated {
            needed: header as u64,
            available: bytes.len() as u64,
        });
    }
    let mut length = [0u8; 8];
    length[..length_bytes].copy_from_slice(&bytes[4..4 + length_bytes]);
    let payload_len = u64::from_le_bytes(length);
    let crc_at = 4 + length_bytes;
    let crc = u32::from_le_bytes([
        bytes[crc_at],
        bytes[crc_at + 1],
        bytes[crc_at + 2],
        bytes[crc_at + 3],
    ]);
    let end = (header as u64).saturating_add(payload_len);
    if (bytes.len() as u64) < end {
        return Err(EntryError::Truncated {
            needed: end,
            available: bytes.len() as u64,
        });
    }
    let end = end as usize;
    let payload = &bytes[header..end];
    if crc32fast::hash(payload) != crc {
        return Err(EntryError::Checksum);
    }
    Ok((payload, end))
}

fn decode_v2(bytes: &[u8]) -> Result<(WalGroup, usize), EntryError> {
    let (payload, end) = payload(bytes, HEADER_V2, 8)?;
    let mut reader = Cursor {
        bytes: payload,
        at: 0,
    };
    let spans_len = reader.u32()? as usize;
    let seqs: Vec<SeqSpan> = serde_json::from_slice(reader.take(spans_len)?)?;
    let count = reader.u16()?;
    let mut batches = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let name_len = usize::from(reader.u8()?);
        let table = table_named(reader.take(name_len)?)?;
        let ipc_len =
            usize::try_from(reader.u64()?).map_err(|_| EntryError::Malformed("length"))?;
        batches.push((table, read_batch(reader.take(ipc_len)?)?));
    }
    if reader.at != payload.len() {
        return Err(EntryError::Malformed("trailing bytes"));
    }
    Ok((WalGroup { batches, seqs }, end))
}

fn decode_v1(bytes: &[u8]) -> Result<(WalGroup, usize), EntryError> {
    let (payload, end) = payload(bytes, HEADER_V1, 4)?;
    let mut reader = Cursor {
        bytes: payload,
        at: 0,
    };
    let name_len = usize::from(reader.u8()?);
    let table = table_named(reader.take(name_len)?)?;
    let batch = read_batch(&payload[reader.at..])?;
    Ok((
        WalGroup {
            batches: vec![(table, batch)],
            seqs: Vec::new(),
        },
        end,
    ))
}

fn table_named(name: &[u8]) -> Result<Table, EntryError> {
    let name = String::from_utf8_lossy(name);
    Table::from_name(&name).ok_or_else(|| EntryError::UnknownTable(name.to_string()))
}

fn read_batch(ipc: &[u8]) -> Result<RecordBatch, EntryError> {
    let reader = StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
    let mut batches = reader.collect::<Result<Vec<_>, _>>()?;
    batches.pop().ok_or(EntryError::Malformed("no batch"))
}

/// Reads little-endian fields off a checksummed payload.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(EntryError::Malformed("length"))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(EntryError::Malformed("short payload"))?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, EntryError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, EntryError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, EntryError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, EntryError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}
