//! PicoQuant tagged files: the PTU header, a bounded-memory PTU record reader, and PHU histograms.
//!
//! `flowdaq replay file.ptu` must give what the live stream gives, and PTU files reach many GB, so
//! records are read in fixed-size chunks from the caller's `std::io::Read` (the one reader in this
//! crate: it decodes what the caller opened, it never opens files). Headers come from outside and
//! are untrusted: every length is capped by [`HeaderLimits`] before anything is allocated for it.

use std::io::Read;

use super::records::{
    decode_records, DecodeCounts, DecoderState, PhotonColumns, RecordType, TimeBase,
    PQ_RECORD_BYTES,
};
use super::{Result, TcspcError};

/// Magic of a PTU (TTTR) file.
pub const PTU_MAGIC: &[u8; 8] = b"PQTTTR\0\0";
/// Magic of a PHU (histogram) file.
pub const PHU_MAGIC: &[u8; 8] = b"PQHISTO\0";
/// Size of one tag entry: 32-byte name, i32 index, u32 type, 8-byte value.
const TAG_BYTES: usize = 48;

/// Tag type codes of the PicoQuant unified tag format.
pub mod tag_type {
    /// No value (e.g. `Header_End`).
    pub const EMPTY8: u32 = 0xFFFF_0008;
    /// Boolean in an i64.
    pub const BOOL8: u32 = 0x0000_0008;
    /// Signed 64-bit integer.
    pub const INT8: u32 = 0x1000_0008;
    /// 64-bit set of flags.
    pub const BIT_SET64: u32 = 0x1100_0008;
    /// RGB colour in an i64.
    pub const COLOR8: u32 = 0x1200_0008;
    /// IEEE 754 double.
    pub const FLOAT8: u32 = 0x2000_0008;
    /// Delphi `TDateTime`: days since 1899-12-30 as a double.
    pub const T_DATE_TIME: u32 = 0x2100_0008;
    /// Array of doubles; the value is its length in bytes, the data follows.
    pub const FLOAT8_ARRAY: u32 = 0x2001_FFFF;
    /// 8-bit string (Windows-1252); the value is its length in bytes, the data follows.
    pub const ANSI_STRING: u32 = 0x4001_FFFF;
    /// UTF-16LE string; the value is its length in bytes, the data follows.
    pub const WIDE_STRING: u32 = 0x4002_FFFF;
    /// Opaque bytes; the value is their length, the data follows.
    pub const BINARY_BLOB: u32 = 0xFFFF_FFFF;
}

/// Caps applied while parsing an untrusted header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// Maximum number of tags before `Header_End`.
    pub max_tags: usize,
    /// Maximum length in bytes of one string, array or blob tag value.
    pub max_value_bytes: u64,
    /// Maximum total header length in bytes.
    pub max_header_bytes: u64,
}

impl Default for HeaderLimits {
    /// 100,000 tags, 16 MiB per value, 64 MiB per header: far above any instrument's header.
    fn default() -> Self {
        HeaderLimits {
            max_tags: 100_000,
            max_value_bytes: 16 << 20,
            max_header_bytes: 64 << 20,
        }
    }
}

/// The value of one tag.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    /// `tyEmpty8`.
    Empty,
    /// `tyBool8`.
    Bool(bool),
    /// `tyInt8`.
    Int(i64),
    /// `tyBitSet64`.
    BitSet(u64),
    /// `tyColor8`.
    Color(u64),
    /// `tyFloat8`.
    Float(f64),
    /// `tyTDateTime`, in days since 1899-12-30 (see [`TagValue::unix_time_s`]).
    DateTimeDays(f64),
    /// `tyFloat8Array`.
    FloatArray(Vec<f64>),
    /// `tyAnsiString` (bytes mapped as Latin-1, trailing NULs removed).
    AnsiString(String),
    /// `tyWideString` (UTF-16LE, trailing NULs removed).
    WideString(String),
    /// `tyBinaryBlob`.
    Blob(Vec<u8>),
}

impl TagValue {
    /// The value as an integer (Int, Bool, BitSet, Color).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            TagValue::Int(v) => Some(v),
            TagValue::Bool(b) => Some(i64::from(b)),
            TagValue::BitSet(v) | TagValue::Color(v) => Some(v as i64),
            _ => None,
        }
    }

    /// The value as a float (Float, DateTime, or an integer converted).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            TagValue::Float(v) | TagValue::DateTimeDays(v) => Some(v),
            TagValue::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as text (either string type).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            TagValue::AnsiString(s) | TagValue::WideString(s) => Some(s),
            _ => None,
        }
    }

    /// A `TDateTime` as seconds since the Unix epoch.
    pub fn unix_time_s(&self) -> Option<f64> {
        match *self {
            TagValue::DateTimeDays(days) => Some((days - 25_569.0) * 86_400.0),
            _ => None,
        }
    }
}

/// One tag of a PicoQuant header.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// Tag identifier, e.g. `MeasDesc_Resolution`.
    pub name: String,
    /// Array index, or -1 for a scalar tag.
    pub index: i32,
    /// Typed value.
    pub value: TagValue,
}

/// A parsed PicoQuant tagged header (common to PTU and PHU files).
#[derive(Debug, Clone, PartialEq)]
pub struct PqHeader {
    /// The 8-byte magic.
    pub magic: [u8; 8],
    /// Format version string, e.g. `1.0.00`.
    pub version: String,
    /// All tags in file order, `Header_End` excluded.
    pub tags: Vec<Tag>,
    /// Bytes from the start of the file to the first byte after `Header_End`.
    pub header_len_bytes: u64,
}

impl PqHeader {
    /// The last tag with this name and index (-1 for scalars).
    pub fn get(&self, name: &str, index: i32) -> Option<&TagValue> {
        self.tags
            .iter()
            .rev()
            .find(|t| t.name == name && t.index == index)
            .map(|t| &t.value)
    }

    /// A scalar tag, or element 0 of an array tag.
    pub fn scalar(&self, name: &str) -> Option<&TagValue> {
        self.get(name, -1).or_else(|| self.get(name, 0))
    }

    /// A scalar integer tag.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.scalar(name).and_then(TagValue::as_i64)
    }

    /// A scalar float tag.
    pub fn float(&self, name: &str) -> Option<f64> {
        self.scalar(name).and_then(TagValue::as_f64)
    }

    /// Reads a tagged header with the given magic from `reader`, consuming exactly the header.
    ///
    /// # Errors
    /// [`TcspcError::BadMagic`], [`TcspcError::Truncated`] if the reader ends inside the header,
    /// [`TcspcError::InvalidHeader`] for unknown tag types or values beyond `limits`,
    /// [`TcspcError::Io`] if the reader fails.
    pub fn read<R: Read>(
        reader: &mut R,
        expected_magic: &[u8; 8],
        kind: &'static str,
        limits: &HeaderLimits,
    ) -> Result<Self> {
        let mut magic = [0u8; 8];
        read_exact_or(reader, &mut magic, "file magic")?;
        if &magic != expected_magic {
            return Err(TcspcError::BadMagic {
                expected: kind,
                found: latin1(&magic).trim_end_matches('\0').to_string(),
            });
        }
        let mut version = [0u8; 8];
        read_exact_or(reader, &mut version, "format version")?;
        let mut header = PqHeader {
            magic,
            version: latin1(&version).trim_end_matches('\0').trim().to_string(),
            tags: Vec::new(),
            header_len_bytes: 16,
        };
        loop {
            if header.tags.len() >= limits.max_tags {
                return Err(TcspcError::InvalidHeader(format!(
                    "more than {} tags without Header_End",
                    limits.max_tags
                )));
            }
            let mut entry = [0u8; TAG_BYTES];
            read_exact_or(reader, &mut entry, "tag entry")?;
            header.header_len_bytes += TAG_BYTES as u64;
            let name = latin1(&entry[..32]);
            let name = name.split('\0').next().unwrap_or("").to_string();
            let index = i32::from_le_bytes([entry[32], entry[33], entry[34], entry[35]]);
            let typ = u32::from_le_bytes([entry[36], entry[37], entry[38], entry[39]]);
            let raw = [
                entry[40], entry[41], entry[42], entry[43], entry[44], entry[45], entry[46],
                entry[47],
            ];
            let int = i64::from_le_bytes(raw);
            let value = match typ {
                tag_type::EMPTY8 => TagValue::Empty,
                tag_type::BOOL8 => TagValue::Bool(int != 0),
                tag_type::INT8 => TagValue::Int(int),
                tag_type::BIT_SET64 => TagValue::BitSet(int as u64),
                tag_type::COLOR8 => TagValue::Color(int as u64),
                tag_type::FLOAT8 => TagValue::Float(f64::from_le_bytes(raw)),
                tag_type::T_DATE_TIME => TagValue::DateTimeDays(f64::from_le_bytes(raw)),
                tag_type::FLOAT8_ARRAY
                | tag_type::ANSI_STRING
                | tag_type::WIDE_STRING
                | tag_type::BINARY_BLOB => {
                    let len = check_value_len(&name, int, &header, limits)?;
                    let bytes = read_value(reader, len, &name)?;
                    header.header_len_bytes += len;
                    match typ {
                        tag_type::FLOAT8_ARRAY => TagValue::FloatArray(
                            bytes
                                .chunks_exact(8)
                                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                                .collect(),
                        ),
                        tag_type::ANSI_STRING => {
                            TagValue::AnsiString(latin1(&bytes).trim_end_matches('\0').to_string())
                        }
                        tag_type::WIDE_STRING => {
                            let units: Vec<u16> = bytes
                                .chunks_exact(2)
                                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                                .collect();
                            TagValue::WideString(
                                String::from_utf16_lossy(&units)
                                    .trim_end_matches('\0')
                                    .to_string(),
                            )
                        }
                        _ => TagValue::Blob(bytes),
                    }
                }
                other => {
                    return Err(TcspcError::InvalidHeader(format!(
                        "tag {name:?} has unknown type {other:#010x}"
                    )));
                }
            };
            if name == "Header_End" {
                return Ok(header);
            }
            header.tags.push(Tag { name, index, value });
        }
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn read_exact_or<R: Read>(reader: &mut R, buf: &mut [u8], what: &str) -> Result<()> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            TcspcError::Truncated(format!("input ends inside the {what}"))
        }
        _ => TcspcError::Io(e),
    })
}

fn check_value_len(
    name: &str,
    declared: i64,
    header: &PqHeader,
    limits: &HeaderLimits,
) -> Result<u64> {
    if declared < 0 || declared as u64 > limits.max_value_bytes {
        return Err(TcspcError::InvalidHeader(format!(
            "tag {name:?} declares a value of {declared} bytes (limit {})",
            limits.max_value_bytes
        )));
    }
    let len = declared as u64;
    if header.header_len_bytes + len > limits.max_header_bytes {
        return Err(TcspcError::InvalidHeader(format!(
            "header longer than {} bytes",
            limits.max_header_bytes
        )));
    }
    Ok(len)
}

/// Reads `len` bytes, growing the buffer only as bytes arrive (a lying length on a short input
/// costs no more memory than the input holds).
fn read_value<R: Read>(reader: &mut R, len: u64, name: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(len).read_to_end(&mut bytes)?;
    if (bytes.len() as u64) < len {
        return Err(TcspcError::Truncated(format!(
            "input ends inside the value of tag {name:?}"
        )));
    }
    Ok(bytes)
}

/// The typed facts of a PTU header that decoding needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PtuHeader {
    /// Every tag.
    pub tags: PqHeader,
    /// Record format (`TTResultFormat_TTTRRecType`).
    pub record_type: RecordType,
    /// Declared number of records (`TTResult_NumberOfRecords`); 0 means "read to the end".
    pub number_of_records: u64,
    /// Sync (laser) rate in Hz (`TTResult_SyncRate`), if recorded and positive.
    pub sync_rate_hz: Option<f64>,
    /// Macro-time unit in s (`MeasDesc_GlobalResolution`): the sync period for T3 records.
    pub global_resolution_s: f64,
    /// Micro-time bin width in s (`MeasDesc_Resolution`); 0 if absent (T2 files).
    pub resolution_s: f64,
    /// `Measurement_Mode` (2 = T2, 3 = T3), if present.
    pub measurement_mode: Option<i64>,
    /// Offset of the first record from the start of the file, in bytes.
    pub header_len_bytes: u64,
}

impl PtuHeader {
    /// Parses a PTU header from the start of `bytes` (which may hold the records too).
    ///
    /// # Errors
    /// As [`PtuHeader::read`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut cursor = bytes;
        Self::read(&mut cursor, &HeaderLimits::default())
    }

    /// Reads a PTU header from `reader`, leaving it at the first record.
    ///
    /// # Errors
    /// [`TcspcError::BadMagic`] / [`TcspcError::Truncated`] / [`TcspcError::InvalidHeader`] as
    /// [`PqHeader::read`]; [`TcspcError::InvalidHeader`] also for a missing or unknown record
    /// type, records that are not 32 bits, a negative record count, or a resolution that is not
    /// finite and positive; [`TcspcError::UnknownRecordType`] for an unsupported format.
    pub fn read<R: Read>(reader: &mut R, limits: &HeaderLimits) -> Result<Self> {
        let tags = PqHeader::read(reader, PTU_MAGIC, "PTU", limits)?;
        let code = tags
            .int("TTResultFormat_TTTRRecType")
            .ok_or_else(|| TcspcError::InvalidHeader("no TTResultFormat_TTTRRecType tag".into()))?;
        let code = u32::try_from(code).map_err(|_| TcspcError::UnknownRecordType(code as u32))?;
        let record_type = RecordType::from_code(code)?;
        if let Some(bits) = tags.int("TTResultFormat_BitsPerRecord") {
            if bits != 32 && bits != 0 {
                return Err(TcspcError::InvalidHeader(format!(
                    "{bits}-bit records are not PicoQuant TTTR records"
                )));
            }
        }
        let number_of_records = match tags.int("TTResult_NumberOfRecords").unwrap_or(0) {
            n if n < 0 => {
                return Err(TcspcError::InvalidHeader(format!(
                    "TTResult_NumberOfRecords is {n}"
                )))
            }
            n => n as u64,
        };
        let positive = |name: &str, v: Option<f64>| -> Result<f64> {
            match v {
                Some(v) if v.is_finite() && v > 0.0 && v < 1.0e3 => Ok(v),
                Some(v) => Err(TcspcError::InvalidHeader(format!("{name} is {v} s"))),
                None => Err(TcspcError::InvalidHeader(format!("no {name} tag"))),
            }
        };
        let global_resolution_s = positive(
            "MeasDesc_GlobalResolution",
            tags.float("MeasDesc_GlobalResolution"),
        )?;
        let resolution_s = match tags.float("MeasDesc_Resolution") {
            None => {
                if record_type.is_t3() {
                    return Err(TcspcError::InvalidHeader(
                        "T3 file without MeasDesc_Resolution".into(),
                    ));
                }
                0.0
            }
            v => positive("MeasDesc_Resolution", v)?,
        };
        let sync_rate_hz = tags
            .float("TTResult_SyncRate")
            .filter(|r| r.is_finite() && *r > 0.0);
        Ok(PtuHeader {
            record_type,
            number_of_records,
            sync_rate_hz,
            global_resolution_s,
            resolution_s,
            measurement_mode: tags.int("Measurement_Mode"),
            header_len_bytes: tags.header_len_bytes,
            tags,
        })
    }

    /// The ps conversions for [`decode_records`].
    pub fn time_base(&self) -> TimeBase {
        TimeBase {
            macro_unit_ps: self.global_resolution_s * 1e12,
            micro_bin_ps: self.resolution_s * 1e12,
        }
    }

    /// Number of native micro-time bins in one sync period (T3), at least 1.
    pub fn bins_per_period(&self) -> usize {
        if self.resolution_s <= 0.0 {
            return 1;
        }
        ((self.global_resolution_s / self.resolution_s).floor() as usize).max(1)
    }
}

/// Reads the records of a PTU file in bounded chunks from any reader.
///
/// Memory is one chunk buffer, whatever the file size. The decoder state carries over chunks.
/// The reader stops after the declared number of records; if the input ends first, the next
/// call returns [`TcspcError::Truncated`] (the chunks before it were valid and were returned).
pub struct PtuRecordReader<R> {
    reader: R,
    header: PtuHeader,
    buffer: Vec<u8>,
    records_read: u64,
    state: DecoderState,
    done: bool,
}

impl<R: Read> PtuRecordReader<R> {
    /// Default chunk size: 64 Ki records (256 KiB).
    pub const DEFAULT_CHUNK_RECORDS: usize = 1 << 16;

    /// Reads the header and prepares to read records in chunks of `chunk_records` records.
    ///
    /// # Errors
    /// As [`PtuHeader::read`]; [`TcspcError::InvalidArgument`] if `chunk_records` is 0 or above
    /// 2^24.
    pub fn new(mut reader: R, chunk_records: usize) -> Result<Self> {
        if chunk_records == 0 || chunk_records > 1 << 24 {
            return Err(TcspcError::InvalidArgument(format!(
                "chunk_records {chunk_records} must be in 1..=2^24"
            )));
        }
        let header = PtuHeader::read(&mut reader, &HeaderLimits::default())?;
        Ok(PtuRecordReader {
            reader,
            header,
            buffer: vec![0; chunk_records * PQ_RECORD_BYTES],
            records_read: 0,
            state: DecoderState::default(),
            done: false,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &PtuHeader {
        &self.header
    }

    /// Records returned so far.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// The next chunk of raw records (little-endian bytes, whole records), or `None` at the end.
    ///
    /// # Errors
    /// [`TcspcError::Truncated`] if the input ends before the declared number of records or
    /// inside a record; [`TcspcError::Io`] if the reader fails.
    pub fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
        if self.done {
            return Ok(None);
        }
        let declared = self.header.number_of_records;
        let want_records = if declared == 0 {
            self.buffer.len() / PQ_RECORD_BYTES
        } else {
            (declared - self.records_read).min((self.buffer.len() / PQ_RECORD_BYTES) as u64)
                as usize
        };
        if want_records == 0 {
            self.done = true;
            return Ok(None);
        }
        let want = want_records * PQ_RECORD_BYTES;
        let mut filled = 0;
        while filled < want {
            match self.reader.read(&mut self.buffer[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if filled < want {
            self.done = true;
            if filled % PQ_RECORD_BYTES != 0 {
                return Err(TcspcError::Truncated(format!(
                    "input ends inside record {} ({} trailing bytes)",
                    self.records_read + (filled / PQ_RECORD_BYTES) as u64,
                    filled % PQ_RECORD_BYTES
                )));
            }
            if declared != 0 {
                return Err(TcspcError::Truncated(format!(
                    "header declares {declared} records, input holds {}",
                    self.records_read + (filled / PQ_RECORD_BYTES) as u64
                )));
            }
            if filled == 0 {
                return Ok(None);
            }
        }
        self.records_read += (filled / PQ_RECORD_BYTES) as u64;
        Ok(Some(&self.buffer[..filled]))
    }

    /// Decodes the next chunk into `out` (appending), carrying overflows across chunks.
    ///
    /// # Errors
    /// As [`PtuRecordReader::next_chunk`].
    pub fn decode_next_chunk(&mut self, out: &mut PhotonColumns) -> Result<Option<DecodeCounts>> {
        let record_type = self.header.record_type;
        let time_base = self.header.time_base();
        let mut state = self.state;
        let counts = match self.next_chunk()? {
            None => return Ok(None),
            Some(chunk) => decode_records(record_type, time_base, chunk, &mut state, out)?,
        };
        self.state = state;
        Ok(Some(counts))
    }

    /// The overflow state after the chunks decoded by [`PtuRecordReader::decode_next_chunk`].
    pub fn decoder_state(&self) -> DecoderState {
        self.state
    }
}

/// One curve of a PHU file.
#[derive(Debug, Clone, PartialEq)]
pub struct PhuCurve {
    /// Curve index in the file.
    pub index: usize,
    /// Bin width in s (`HistResDscr_MDescResolution`, else the file's `MeasDesc_Resolution`).
    pub resolution_s: f64,
    /// Counts per bin.
    pub counts: Vec<u32>,
}

/// A parsed PHU (histogram) file.
#[derive(Debug, Clone, PartialEq)]
pub struct PhuFile {
    /// Every tag.
    pub header: PqHeader,
    /// The curves, in file order.
    pub curves: Vec<PhuCurve>,
}

/// Parses a PHU file held in memory.
///
/// # Errors
/// As [`PqHeader::read`]; [`TcspcError::InvalidHeader`] if `HistoResult_NumberOfCurves` or a
/// curve's offset or bin count is missing or negative; [`TcspcError::Truncated`] if a curve's
/// data lies past the end of `bytes`.
pub fn parse_phu(bytes: &[u8], limits: &HeaderLimits) -> Result<PhuFile> {
    let mut cursor = bytes;
    let header = PqHeader::read(&mut cursor, PHU_MAGIC, "PHU", limits)?;
    let n = header
        .int("HistoResult_NumberOfCurves")
        .ok_or_else(|| TcspcError::InvalidHeader("no HistoResult_NumberOfCurves tag".into()))?;
    if n < 0 || n as usize > header.tags.len() {
        return Err(TcspcError::InvalidHeader(format!(
            "HistoResult_NumberOfCurves is {n}"
        )));
    }
    if let Some(bits) = header.int("HistoResult_BitsPerBin") {
        if bits != 32 {
            return Err(TcspcError::InvalidHeader(format!(
                "{bits}-bit histogram bins are not supported"
            )));
        }
    }
    let default_res = header.float("MeasDesc_Resolution").unwrap_or(0.0);
    let mut curves = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        let idx = i as i32;
        let offset = header
            .get("HistResDscr_DataOffset", idx)
            .and_then(TagValue::as_i64)
            .ok_or_else(|| {
                TcspcError::InvalidHeader(format!("curve {i} has no HistResDscr_DataOffset"))
            })?;
        let bins = header
            .get("HistResDscr_HistogramBins", idx)
            .and_then(TagValue::as_i64)
            .ok_or_else(|| {
                TcspcError::InvalidHeader(format!("curve {i} has no HistResDscr_HistogramBins"))
            })?;
        if offset < 0 || bins < 0 {
            return Err(TcspcError::InvalidHeader(format!(
                "curve {i} has offset {offset} and {bins} bins"
            )));
        }
        let start = offset as u64;
        let end = (bins as u64)
            .checked_mul(4)
            .and_then(|b| b.checked_add(start));
        let (start, end) = match end {
            Some(end) if end <= bytes.len() as u64 => (start as usize, end as usize),
            _ => {
                return Err(TcspcError::Truncated(format!(
                "curve {i} ({bins} bins at offset {offset}) lies past the end of the {}-byte file",
                bytes.len()
            )))
            }
        };
        let counts = bytes[start..end]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let resolution_s = header
            .get("HistResDscr_MDescResolution", idx)
            .and_then(TagValue::as_f64)
            .unwrap_or(default_res);
        curves.push(PhuCurve {
            index: i,
            resolution_s,
            counts,
        });
    }
    Ok(PhuFile { header, curves })
}

#[cfg(test)]
mod tests;
