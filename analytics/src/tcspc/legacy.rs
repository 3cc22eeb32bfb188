//! Legacy PicoQuant TTTR files (`.ht3` of the HydraHarp 400, `.pt3` of the PicoHarp 300): fixed
//! binary headers in front of the same 32-bit records PTU files hold.
//!
//! Labs keep years of measurements in these containers. Their records are exactly the PTU
//! record types (HydraHarp v1/v2 T3, PicoHarp T3), so reading one is reading its header into a
//! [`PtuHeader`] and handing the records to the PTU record path. Layouts follow PicoQuant's
//! file demos (`ht3demo.c` format version 1.0 and 2.0, `pt3demo.c` format version 2.0; all
//! integers little-endian); `connectors/tests/data/tcspc_formats/README.md` lists every
//! offset. T2 containers (`.ht2`, `.pt2`) and the TimeHarp 200 `.t3r` are refused by name.

use std::io::Read;

use super::ptu::{PqHeader, PtuHeader};
use super::records::RecordType;
use super::{Result, TcspcError};

/// Length of the ident field that opens every legacy PicoQuant header.
pub const IDENT_BYTES: usize = 16;

/// Ident of HydraHarp 400 files (`.ht2`, `.ht3`).
pub const HYDRAHARP_IDENT: &[u8] = b"HydraHarp";
/// Ident of PicoHarp 300 files (`.pt2`, `.pt3`).
pub const PICOHARP_IDENT: &[u8] = b"PicoHarp 300";
/// Ident of TimeHarp 200 files (`.t3r`, `.thd`).
pub const TIMEHARP_IDENT: &[u8] = b"TimeHarp 200";

/// Largest imaging header accepted, in 32-bit words (a FLIM header is a few dozen).
const MAX_IMAGING_HEADER_WORDS: i32 = 1 << 20;

/// Which legacy container `ident` (the file's first 16 bytes) opens, if any.
pub fn legacy_kind(ident: &[u8]) -> Option<&'static str> {
    let starts = |id: &[u8]| ident.len() >= id.len() && &ident[..id.len()] == id;
    if starts(HYDRAHARP_IDENT) {
        Some("HydraHarp 400 (.ht2/.ht3)")
    } else if starts(PICOHARP_IDENT) {
        Some("PicoHarp 300 (.pt2/.pt3)")
    } else if starts(TIMEHARP_IDENT) {
        Some("TimeHarp 200 (.t3r/.thd)")
    } else {
        None
    }
}

/// Reads a legacy `.ht3` or `.pt3` header from `reader` (positioned at the start of the file),
/// leaving it at the first record.
///
/// # Errors
/// [`TcspcError::BadMagic`] if the file is not a HydraHarp or PicoHarp file;
/// [`TcspcError::InvalidHeader`] for T2 files, TimeHarp 200 files, unknown format versions,
/// records that are not 32 bits, and absurd resolutions, rates, counts or imaging headers;
/// [`TcspcError::Truncated`] if the input ends inside the header.
pub fn read_legacy_header<R: Read>(reader: &mut R) -> Result<PtuHeader> {
    let mut head = vec![0u8; 352 + 8];
    read_exact(reader, &mut head, "the legacy header")?;
    let ident = &head[..IDENT_BYTES];
    let version = text(&head[16..22]);
    if ident.starts_with(HYDRAHARP_IDENT) {
        hydraharp(reader, head, &version)
    } else if ident.starts_with(PICOHARP_IDENT) {
        picoharp(reader, head, &version)
    } else if ident.starts_with(TIMEHARP_IDENT) {
        Err(TcspcError::InvalidHeader(
            "TimeHarp 200 files (.t3r/.thd) are not read; export the measurement as PTU".into(),
        ))
    } else {
        Err(TcspcError::BadMagic {
            expected: "PTU, HT3 or PT3",
            found: String::from_utf8_lossy(ident).into_owned(),
        })
    }
}

fn hydraharp<R: Read>(reader: &mut R, mut head: Vec<u8>, version: &str) -> Result<PtuHeader> {
    let record_type = match version {
        "1.0" => RecordType::HydraHarpV1T3,
        "2.0" => RecordType::HydraHarpV2T3,
        other => {
            return Err(TcspcError::InvalidHeader(format!(
                "HydraHarp file format version {other:?} (flowdaq reads 1.0 and 2.0)"
            )))
        }
    };
    check_bits_and_mode(i32_at(&head, 332), i32_at(&head, 340), "HydraHarp")?;
    let resolution_ps = f64::from_le_bytes(head[352..360].try_into().unwrap_or_default());
    // Everything up to the input channel count, then the per-channel blocks it sizes.
    grow(reader, &mut head, 668)?;
    let channels = i32_at(&head, 664);
    if !(1..=64).contains(&channels) {
        return Err(TcspcError::InvalidHeader(format!(
            "InpChansPresent is {channels}"
        )));
    }
    let tttr = 696 + 20 * channels as usize;
    grow(reader, &mut head, tttr + 24)?;
    let sync_rate_hz = f64::from(i32_at(&head, tttr));
    let imaging_words = i32_at(&head, tttr + 12);
    let records = u64::from_le_bytes(head[tttr + 16..tttr + 24].try_into().unwrap_or_default());
    finish(
        reader,
        head.len(),
        imaging_words,
        Facts {
            magic: magic(&head),
            record_type,
            version,
            records,
            sync_rate_hz,
            resolution_s: resolution_ps * 1e-12,
        },
    )
}

fn picoharp<R: Read>(reader: &mut R, mut head: Vec<u8>, version: &str) -> Result<PtuHeader> {
    if version != "2.0" {
        return Err(TcspcError::InvalidHeader(format!(
            "PicoHarp file format version {version:?} (flowdaq reads 2.0)"
        )));
    }
    check_bits_and_mode(i32_at(&head, 332), i32_at(&head, 348), "PicoHarp")?;
    let boards = i32_at(&head, 340);
    if !(1..=4).contains(&boards) {
        return Err(TcspcError::InvalidHeader(format!(
            "NumberOfBoards is {boards}"
        )));
    }
    // One 156-byte board header per board from 536, then the TTTR header.
    let tttr = 536 + 156 * boards as usize;
    grow(reader, &mut head, tttr + 36)?;
    let resolution_ns = f32::from_le_bytes(head[584..588].try_into().unwrap_or_default());
    let sync_rate_hz = f64::from(i32_at(&head, tttr + 12));
    let records = i32_at(&head, tttr + 28);
    let records = u64::try_from(records)
        .map_err(|_| TcspcError::InvalidHeader(format!("Records is {records}")))?;
    let imaging_words = i32_at(&head, tttr + 32);
    finish(
        reader,
        head.len(),
        imaging_words,
        Facts {
            magic: magic(&head),
            record_type: RecordType::PicoHarpT3,
            version,
            records,
            sync_rate_hz,
            // The file stores float32 ns; PicoHarp bins are a whole number of 4 ps steps.
            resolution_s: f64::from(resolution_ns) * 1e-9,
        },
    )
}

/// What a legacy header says, before the imaging header is skipped.
struct Facts<'a> {
    /// The ident's first 8 bytes, standing in for a PTU magic.
    magic: [u8; 8],
    record_type: RecordType,
    version: &'a str,
    records: u64,
    sync_rate_hz: f64,
    resolution_s: f64,
}

fn check_bits_and_mode(bits: i32, mode: i32, instrument: &str) -> Result<()> {
    if bits != 32 {
        return Err(TcspcError::InvalidHeader(format!(
            "{instrument} file with {bits}-bit records"
        )));
    }
    match mode {
        3 => Ok(()),
        2 => Err(TcspcError::InvalidHeader(format!(
            "{instrument} T2 files (.ht2/.pt2) are not read; export the measurement as PTU"
        ))),
        other => Err(TcspcError::InvalidHeader(format!(
            "{instrument} measurement mode {other} (3 = T3 expected)"
        ))),
    }
}

fn finish<R: Read>(
    reader: &mut R,
    read_so_far: usize,
    imaging_words: i32,
    facts: Facts<'_>,
) -> Result<PtuHeader> {
    if !(0..=MAX_IMAGING_HEADER_WORDS).contains(&imaging_words) {
        return Err(TcspcError::InvalidHeader(format!(
            "imaging header of {imaging_words} words"
        )));
    }
    let sync_ok = facts.sync_rate_hz.is_finite() && facts.sync_rate_hz >= 1.0;
    let resolution_ok =
        facts.resolution_s.is_finite() && facts.resolution_s > 1e-15 && facts.resolution_s < 1e-3;
    if !sync_ok || !resolution_ok {
        return Err(TcspcError::InvalidHeader(format!(
            "sync rate {} Hz, resolution {} s",
            facts.sync_rate_hz, facts.resolution_s
        )));
    }
    let imaging_bytes = 4 * imaging_words as u64;
    let skipped = std::io::copy(&mut reader.take(imaging_bytes), &mut std::io::sink())?;
    if skipped != imaging_bytes {
        return Err(TcspcError::Truncated(
            "input ends inside the imaging header".into(),
        ));
    }
    Ok(PtuHeader {
        tags: PqHeader {
            magic: facts.magic,
            version: facts.version.to_string(),
            tags: Vec::new(),
            header_len_bytes: read_so_far as u64 + imaging_bytes,
        },
        record_type: facts.record_type,
        number_of_records: facts.records,
        sync_rate_hz: Some(facts.sync_rate_hz),
        global_resolution_s: 1.0 / facts.sync_rate_hz,
        resolution_s: facts.resolution_s,
        measurement_mode: Some(3),
        header_len_bytes: read_so_far as u64 + imaging_bytes,
    })
}

/// Reads more of the header so that `head` holds `len` bytes.
fn grow<R: Read>(reader: &mut R, head: &mut Vec<u8>, len: usize) -> Result<()> {
    let have = head.len();
    if len > have {
        head.resize(len, 0);
        read_exact(reader, &mut head[have..], "the legacy header")?;
    }
    Ok(())
}

pub(super) fn read_exact<R: Read>(reader: &mut R, buf: &mut [u8], what: &str) -> Result<()> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            TcspcError::Truncated(format!("input ends inside {what}"))
        }
        _ => TcspcError::Io(e),
    })
}

fn magic(head: &[u8]) -> [u8; 8] {
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&head[..8]);
    magic
}

fn i32_at(bytes: &[u8], offset: usize) -> i32 {
    bytes
        .get(offset..offset + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_le_bytes)
}

/// A NUL-padded ASCII field as text.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).trim().to_string()
}
