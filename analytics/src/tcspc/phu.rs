//! PicoQuant histogram files (`.phu`): the decays a PicoHarp, HydraHarp, TimeHarp or MultiHarp
//! saved in histogram mode, each curve with its own bin width and sync rate.
//!
//! The file is the PTU tagged header behind the magic `PQHISTO`, then the curves: curve `i`
//! is `HistResDscr_HistogramBins(i)` little-endian u32 counts at byte `HistResDscr_DataOffset(i)`,
//! binned at `HistResDscr_MDescResolution(i)` seconds, under a sync rate of
//! `HistResDscr_SyncRate(i)` per second. Everything is checked against the file's length before
//! a count is read.

use super::ptu::{HeaderLimits, PqHeader, PHU_MAGIC};
use super::{Result, TcspcError};

/// Most bins a curve may hold (a 65,536-bin histogram is the largest any PicoQuant device
/// records).
pub const MAX_CURVE_BINS: usize = 1 << 16;
/// Most curves a file may hold (a TRES measurement has one per wavelength).
pub const MAX_CURVES: usize = 4096;

/// One curve of a histogram file.
#[derive(Debug, Clone, PartialEq)]
pub struct PhuCurve {
    /// Its position in the file (`HistResDscr_CurveIndex`, else the tag index).
    pub curve_index: u32,
    /// Counts per bin.
    pub counts: Vec<u32>,
    /// Bin width, ps.
    pub bin_width_ps: f64,
    /// Excitation (sync) rate, Hz.
    pub sync_rate_hz: f64,
    /// How long it was recorded, s, when the file says (`HistResDscr_MDescStopAfter`, ms).
    pub acquisition_time_s: Option<f64>,
}

/// A histogram file: its header and its curves.
#[derive(Debug, Clone, PartialEq)]
pub struct PhuFile {
    /// Every tag, for what callers want beyond the curves.
    pub header: PqHeader,
    /// The curves in file order.
    pub curves: Vec<PhuCurve>,
}

fn invalid(reason: String) -> TcspcError {
    TcspcError::InvalidHeader(reason)
}

/// Parses a whole `.phu` file held in memory.
///
/// # Errors
/// [`TcspcError::BadMagic`] if it is not one; [`TcspcError::InvalidHeader`] naming the tag when
/// a curve's bins, offset, resolution or sync rate is missing or absurd;
/// [`TcspcError::Truncated`] when a curve lies beyond the end of the file.
pub fn parse_phu(bytes: &[u8], limits: &HeaderLimits) -> Result<PhuFile> {
    let header = PqHeader::read(&mut &bytes[..], PHU_MAGIC, "PHU", limits)?;
    let declared = header
        .int("HistoResult_NumberOfCurves")
        .ok_or_else(|| invalid("no HistoResult_NumberOfCurves tag".into()))?;
    let curve_count = usize::try_from(declared)
        .ok()
        .filter(|n| (1..=MAX_CURVES).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "HistoResult_NumberOfCurves is {declared}: 1 to {MAX_CURVES} curves"
            ))
        })?;
    let mut curves = Vec::with_capacity(curve_count);
    for i in 0..curve_count {
        let index = i as i32;
        let int = |name: &str| header.get(name, index).and_then(|v| v.as_i64());
        let float = |name: &str| header.get(name, index).and_then(|v| v.as_f64());
        let bins = int("HistResDscr_HistogramBins")
            .and_then(|b| usize::try_from(b).ok())
            .filter(|b| (2..=MAX_CURVE_BINS).contains(b))
            .ok_or_else(|| {
                invalid(format!(
                    "curve {i}: HistResDscr_HistogramBins missing or outside 2-{MAX_CURVE_BINS}"
                ))
            })?;
        let offset = int("HistResDscr_DataOffset")
            .and_then(|o| usize::try_from(o).ok())
            .filter(|o| *o as u64 >= header.header_len_bytes)
            .ok_or_else(|| {
                invalid(format!(
                    "curve {i}: HistResDscr_DataOffset missing or inside the header"
                ))
            })?;
        let data = offset
            .checked_add(bins * 4)
            .and_then(|end| bytes.get(offset..end))
            .ok_or_else(|| {
                TcspcError::Truncated(format!(
                    "curve {i}: {bins} bins at byte {offset}, the file has {} bytes",
                    bytes.len()
                ))
            })?;
        let resolution_s = float("HistResDscr_MDescResolution")
            .or_else(|| header.float("MeasDesc_Resolution"))
            .filter(|r| r.is_finite() && *r > 0.0 && *r < 1e-3)
            .ok_or_else(|| {
                invalid(format!(
                    "curve {i}: HistResDscr_MDescResolution missing or not a bin width in s"
                ))
            })?;
        let sync_rate_hz = float("HistResDscr_SyncRate")
            .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1e10)
            .ok_or_else(|| {
                invalid(format!(
                    "curve {i}: HistResDscr_SyncRate missing or not a rate: the decay's period \
                     is unknown"
                ))
            })?;
        let acquisition_time_s = float("HistResDscr_MDescStopAfter")
            .filter(|ms| ms.is_finite() && *ms > 0.0)
            .map(|ms| ms / 1000.0);
        let curve_index = int("HistResDscr_CurveIndex")
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(i as u32);
        curves.push(PhuCurve {
            curve_index,
            counts: data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            bin_width_ps: resolution_s * 1e12,
            sync_rate_hz,
            acquisition_time_s,
        });
    }
    Ok(PhuFile { header, curves })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tagged PicoQuant header: (name, index, type code, 8-byte value).
    fn phu(tags: &[(&str, i32, u32, [u8; 8])], data: &[u8]) -> Vec<u8> {
        let mut out = PHU_MAGIC.to_vec();
        out.extend_from_slice(b"1.0.00\0\0");
        let mut tag = |name: &str, index: i32, kind: u32, value: [u8; 8]| {
            let mut ident = [0u8; 32];
            ident[..name.len()].copy_from_slice(name.as_bytes());
            out.extend_from_slice(&ident);
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&value);
        };
        for (name, index, kind, value) in tags {
            tag(name, *index, *kind, *value);
        }
        tag("Header_End", -1, 0xFFFF_0008, [0; 8]);
        out.extend_from_slice(data);
        out
    }

    const INT8: u32 = 0x1000_0008;
    const FLOAT8: u32 = 0x2000_0008;

    fn curve_tags(offset: i64, bins: i64) -> Vec<(&'static str, i32, u32, [u8; 8])> {
        vec![
            ("HistoResult_NumberOfCurves", -1, INT8, 1i64.to_le_bytes()),
            ("HistResDscr_HistogramBins", 0, INT8, bins.to_le_bytes()),
            ("HistResDscr_DataOffset", 0, INT8, offset.to_le_bytes()),
            (
                "HistResDscr_MDescResolution",
                0,
                FLOAT8,
                16e-12f64.to_le_bytes(),
            ),
            ("HistResDscr_SyncRate", 0, INT8, 20_000_000i64.to_le_bytes()),
            (
                "HistResDscr_MDescStopAfter",
                0,
                INT8,
                10_000i64.to_le_bytes(),
            ),
        ]
    }

    #[test]
    fn a_curve_is_read_at_its_offset_with_its_timing() {
        // 16 + 7 tags of 48 bytes: the data starts at byte 352.
        let data: Vec<u8> = [5u32, 7, 11].iter().flat_map(|c| c.to_le_bytes()).collect();
        let bytes = phu(&curve_tags(352, 3), &data);
        let file = parse_phu(&bytes, &HeaderLimits::default()).expect("valid");
        let curve = &file.curves[0];
        assert_eq!(curve.counts, [5, 7, 11]);
        assert!((curve.bin_width_ps - 16.0).abs() < 1e-9);
        assert_eq!(curve.sync_rate_hz, 20e6);
        assert_eq!(curve.acquisition_time_s, Some(10.0));
    }

    #[test]
    fn curves_outside_the_file_or_without_timing_are_refused() {
        let data = vec![0u8; 12];
        let beyond = phu(&curve_tags(352, 4), &data);
        assert!(matches!(
            parse_phu(&beyond, &HeaderLimits::default()),
            Err(TcspcError::Truncated(_))
        ));
        let inside = phu(&curve_tags(100, 3), &data);
        let err = parse_phu(&inside, &HeaderLimits::default()).expect_err("inside");
        assert!(err.to_string().contains("inside the header"), "{err}");
        let mut no_sync = curve_tags(304, 3);
        no_sync.retain(|t| t.0 != "HistResDscr_SyncRate");
        let err = parse_phu(&phu(&no_sync, &data), &HeaderLimits::default()).expect_err("sync");
        assert!(err.to_string().contains("SyncRate"), "{err}");
        let mut huge = curve_tags(352, 3);
        huge[0].3 = 1_000_000i64.to_le_bytes();
        let err = parse_phu(&phu(&huge, &data), &HeaderLimits::default()).expect_err("curves");
        assert!(err.to_string().contains("NumberOfCurves"), "{err}");
        let ptu = b"PQTTTR\0\0garbage".to_vec();
        assert!(matches!(
            parse_phu(&ptu, &HeaderLimits::default()),
            Err(TcspcError::BadMagic { .. })
        ));
    }
}
