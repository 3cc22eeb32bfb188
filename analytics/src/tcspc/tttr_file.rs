//! Which time-tagged file this is, from its first bytes: PicoQuant PTU, the legacy PicoQuant
//! `.ht3`/`.pt3`, or Becker & Hickl SPC-130 FIFO data. Never from the file name, which users
//! rename and tools get wrong.
//!
//! Every format reads into a [`PtuHeader`] (record type, time units, record count, where the
//! records start), so the record path downstream is one.

use std::io::Read;

use super::legacy::{read_exact, read_legacy_header};
use super::ptu::{HeaderLimits, PqHeader, PtuHeader, PHU_MAGIC, PTU_MAGIC};
use super::records::RecordType;
use super::{Result, TcspcError};

/// The formats [`read_tttr_header`] reads, for messages that must name them.
pub const READABLE_FORMATS: &str =
    "PicoQuant PTU, HT3 (HydraHarp T3), PT3 (PicoHarp T3), Becker & Hickl SPC-130 FIFO (.spc)";

/// Micro-time bins an SPC-130 ADC resolves (12 bits).
pub const SPC_ADC_BINS: u32 = 4096;

/// Reads the header of any [`READABLE_FORMATS`] file, leaving `reader` at the first record.
///
/// SPC files store no micro-time resolution (it is in the separate `.set` file): the header
/// returned then assumes the TAC range spans the macro-time period, `period / 4096` per bin
/// (as tttrlib does), and callers that know better override it.
///
/// # Errors
/// As [`PtuHeader::read`] for PTU files and [`read_legacy_header`] for HT3/PT3;
/// [`TcspcError::InvalidHeader`] for a PicoQuant histogram file and for SPC frames that declare
/// a raw (diagnostic) file or no clock; [`TcspcError::BadMagic`] naming the readable formats
/// for anything else.
pub fn read_tttr_header<R: Read>(reader: &mut R, limits: &HeaderLimits) -> Result<PtuHeader> {
    let mut first = [0u8; 8];
    read_exact(reader, &mut first[..4], "the file's first bytes")?;
    let word = u32::from_le_bytes([first[0], first[1], first[2], first[3]]);
    // The PicoQuant magics are ASCII; an SPC file's first frame has its top bit set.
    if word & 0x8000_0000 != 0 {
        return spc_header(word);
    }
    read_exact(reader, &mut first[4..], "the file's magic")?;
    let mut whole = (&first[..]).chain(reader);
    if &first == PTU_MAGIC {
        PtuHeader::read(&mut whole, limits)
    } else if &first == PHU_MAGIC {
        Err(TcspcError::InvalidHeader(
            "a PicoQuant histogram file (.phu) holds histograms, not photon records: it is \
             not replayed as a photon stream"
                .into(),
        ))
    } else {
        read_legacy_header(&mut whole).map_err(|e| match e {
            TcspcError::BadMagic { found, .. } => TcspcError::BadMagic {
                expected: "PTU, HT3 or PT3 file, nor a Becker & Hickl SPC-130",
                found,
            },
            other => other,
        })
    }
}

/// The header of an SPC-130 file from its first frame: bits 0-23 the macro-time clock in
/// 0.1 ns, bit 26 a raw (diagnostic) file, bit 31 set.
fn spc_header(word: u32) -> Result<PtuHeader> {
    let clock_tenth_ns = word & 0x00FF_FFFF;
    if clock_tenth_ns == 0 {
        return Err(TcspcError::InvalidHeader(
            "SPC first frame declares a macro-time clock of 0".into(),
        ));
    }
    if word & (1 << 26) != 0 {
        return Err(TcspcError::InvalidHeader(
            "SPC raw-data (diagnostic) file: its overflow and invalid bits carry no meaning".into(),
        ));
    }
    let period_s = f64::from(clock_tenth_ns) * 1e-10;
    Ok(PtuHeader {
        tags: PqHeader {
            magic: *b"SPC-130\0",
            version: String::new(),
            tags: Vec::new(),
            header_len_bytes: 4,
        },
        record_type: RecordType::BeckerHicklSpc130,
        number_of_records: 0,
        sync_rate_hz: Some(1.0 / period_s),
        global_resolution_s: period_s,
        resolution_s: period_s / f64::from(SPC_ADC_BINS),
        measurement_mode: Some(3),
        header_len_bytes: 4,
    })
}
