//! Ocean Optics SpectraSuite and OceanView text exports.
//!
//! No real file of these formats is in the repository: the layout below is the one widely
//! documented and written by public readers of these files (SpectraSuite's
//! `SpectraSuite Data File` header, OceanView's `Data from <file> Node` header), and the tests
//! use files written from it. SpectraSuite:
//!
//! ```text
//! SpectraSuite Data File
//! ++++++++++++++++++++++++++++++++++++
//! Date: Wed May 16 14:30:04 EET 2012
//! Spectrometers: MAYP11278
//! Integration Time (usec): 1000000 (MAYP11278)
//! Spectra Averaged: 4 (MAYP11278)
//! Boxcar Smoothing: 0 (MAYP11278)
//! Number of Pixels in Processed Spectrum: 2068
//! >>>>>Begin Processed Spectral Data<<<<<
//! 339.68<TAB>1234.56
//! >>>>>End Processed Spectral Data<<<<<
//! ```
//!
//! OceanView writes `Data from x.txt Node`, `Spectrometer:`, `Integration Time (sec):
//! 1.000000E-1`, `Scans to average:`, `Boxcar width:`, `XAxis mode: Wavelengths`,
//! `Number of Pixels in Spectrum:` and `>>>>>Begin Spectral Data<<<<<`, and in many locales a
//! decimal comma (`1,000000E-1`, `339,68<TAB>1234,56`): both decimal marks are read, so
//! columns are separated by tabs, spaces or semicolons, never commas.
//!
//! The declared pixel count, when present, must equal the rows read (a cut file is refused).
//! An `XAxis mode` other than wavelengths (pixels, Raman shift) is refused: the wire carries
//! nm. The date carries a zone abbreviation (`EET`, `CST`) that does not name one offset, so
//! no UTC instrument time is derived; the text is kept in `meta.date`.

use crate::connector::ConnectorError;

use super::text::{
    check_axis, format_error, has_begin_marker, header_integer, integration_time_ms, key_value,
    marked_sections, XyRows,
};
use super::{FormatSpec, SpectraFileFormat, SpectrumFile};

pub(crate) const SPEC: FormatSpec = FormatSpec {
    format: SpectraFileFormat::SpectraSuite,
    name: "Ocean Optics SpectraSuite / OceanView",
    extensions: &[],
    sniff,
    parse,
};

/// SpectraSuite's or OceanView's title line, or any Ocean-style data marker (OOIBase32 files
/// are claimed first by their own title).
fn sniff(head: &[&str]) -> bool {
    let first = head
        .iter()
        .map(|line| line.trim())
        .find(|line| !line.is_empty())
        .unwrap_or("");
    first.starts_with("SpectraSuite")
        || (first.starts_with("Data from ") && first.ends_with("Node"))
        || has_begin_marker(head)
}

/// Parses a SpectraSuite or OceanView export.
///
/// # Errors
/// [`ConnectorError::Format`]: no begin marker, a malformed data row, a malformed header
/// value this parser reads, a pixel count that does not match the rows, a non-wavelength axis.
pub fn parse(text: &str, path: &str) -> Result<SpectrumFile, ConnectorError> {
    let sections = marked_sections(text, path)?;
    let mut meta = serde_json::Map::new();
    let mut header = serde_json::Map::new();
    let mut integration = None;
    let mut declared_pixels: Option<(usize, i64)> = None;
    for &(line_no, line) in &sections.header {
        if line.starts_with("SpectraSuite") {
            meta.insert("software".into(), "SpectraSuite".into());
            continue;
        }
        if let Some(name) = line
            .strip_prefix("Data from ")
            .and_then(|rest| rest.strip_suffix("Node"))
        {
            meta.insert("software".into(), "OceanView".into());
            meta.insert("source_file".into(), name.trim().into());
            continue;
        }
        let Some((key, value)) = key_value(line) else {
            continue;
        };
        header.insert(key.into(), value.into());
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            k if k.starts_with("integration time") => {
                integration = Some(integration_time_ms(path, line_no, key, value)?);
            }
            "spectra averaged" | "scans to average" => {
                let n = header_integer(path, line_no, key, value)?;
                meta.insert("spectra_averaged".into(), n.into());
            }
            "boxcar smoothing" | "boxcar width" => {
                let n = header_integer(path, line_no, key, value)?;
                meta.insert("boxcar_width".into(), n.into());
            }
            k if k.starts_with("number of pixels in") => {
                let n = header_integer(path, line_no, key, value)?;
                declared_pixels = Some((line_no, n));
                meta.insert("pixels".into(), n.into());
            }
            "xaxis mode" if !value.to_ascii_lowercase().starts_with("wavelength") => {
                return Err(format_error(
                    path,
                    line_no,
                    format!("XAxis mode {value:?}: replay needs a wavelength axis in nm"),
                ));
            }
            "spectrometers" | "spectrometer" => {
                meta.insert("serial_number".into(), value.into());
            }
            "date" => {
                meta.insert("date".into(), value.into());
            }
            "user" => {
                meta.insert("user".into(), value.into());
            }
            _ => {}
        }
    }
    let mut rows = XyRows::default();
    for &(line_no, line) in &sections.data {
        rows.push_line(path, line_no, line, false)?;
    }
    if let Some((line_no, pixels)) = declared_pixels {
        if usize::try_from(pixels).ok() != Some(rows.x.len()) {
            return Err(format_error(
                path,
                line_no,
                format!(
                    "the header declares {pixels} pixels but {} data rows follow the marker on \
                     line {} (truncated file?)",
                    rows.x.len(),
                    sections.begin.0
                ),
            ));
        }
    }
    check_axis(path, &rows.x, &rows.lines)?;
    meta.insert(
        "processed".into(),
        sections.begin.1.contains("Processed").into(),
    );
    meta.insert("end_marker".into(), sections.end_line.is_some().into());
    meta.insert("header".into(), header.into());
    Ok(SpectrumFile {
        format: SpectraFileFormat::SpectraSuite,
        axis_nm: rows.x,
        spectra: vec![rows.y],
        kind_hint: None,
        integration_time_ms: integration,
        instrument_time_ns: None,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECTRASUITE: &str = "SpectraSuite Data File\n\
        ++++++++++++++++++++++++++++++++++++\n\
        Date: Wed May 16 14:30:04 EET 2012\n\
        User: OO Maya\n\
        Dark Spectrum Present: No\n\
        Reference Spectrum Present: No\n\
        Number of Sampled Component Spectra: 1\n\
        Spectrometers: MAYP11278\n\
        Integration Time (usec): 100000 (MAYP11278)\n\
        Spectra Averaged: 4 (MAYP11278)\n\
        Boxcar Smoothing: 2 (MAYP11278)\n\
        Correct for Electrical Dark: No (MAYP11278)\n\
        Number of Pixels in Processed Spectrum: 3\n\
        >>>>>Begin Processed Spectral Data<<<<<\n\
        500.10\t100.5\n\
        500.35\t200.25\n\
        500.60\t150\n\
        >>>>>End Processed Spectral Data<<<<<\n";

    #[test]
    fn reads_a_spectrasuite_file_with_usec() {
        let file = parse(SPECTRASUITE, "s.txt").expect("parses");
        assert_eq!(file.axis_nm, vec![500.10, 500.35, 500.60]);
        assert_eq!(file.spectra, vec![vec![100.5, 200.25, 150.0]]);
        assert_eq!(file.integration_time_ms, Some(100.0));
        assert_eq!(file.meta["serial_number"], "MAYP11278");
        assert_eq!(file.meta["spectra_averaged"], 4);
        assert_eq!(file.meta["boxcar_width"], 2);
        assert_eq!(file.meta["software"], "SpectraSuite");
        assert_eq!(file.meta["processed"], true);
        assert!(sniff(&["SpectraSuite Data File"]));
    }

    #[test]
    fn pixel_count_must_match() {
        let short = SPECTRASUITE.replace("500.60\t150\n", "");
        let err = parse(&short, "s.txt").expect_err("short");
        assert!(
            err.to_string()
                .starts_with("s.txt:13: the header declares 3 pixels but 2 data rows"),
            "{err}"
        );
    }

    #[test]
    fn non_wavelength_axis_is_refused() {
        let text =
            "Data from a.txt Node\n\nXAxis mode: Pixels\n>>>>>Begin Spectral Data<<<<<\n0\t1\n";
        let err = parse(text, "p.txt").expect_err("pixels");
        assert!(err.to_string().starts_with("p.txt:3: XAxis mode"), "{err}");
    }
}
