//! JASCO Spectra Manager text exports: a JCAMP-like `KEY<TAB>value` header, an `XYDATA` line,
//! then `x<TAB>y` rows.
//!
//! Checked against a real V-570 file (`tests/data/jasco_v570_pbse_qd_absorbance.txt`):
//!
//! ```text
//! ORIGIN<TAB>JASCO
//! DATE<TAB>10/01/25
//! XUNITS<TAB>NANOMETERS
//! YUNITS<TAB>ABSORBANCE
//! FIRSTX<TAB>2500.0000
//! LASTX<TAB>700.0000
//! NPOINTS<TAB>1801
//! XYDATA
//! 2500.0000<TAB>0.10852
//! ...
//! ```
//!
//! The CSV flavour of the export (`KEY,value` and `x,y`) is read too: when the header uses
//! commas and no tabs, commas separate the data columns; otherwise a comma is a decimal mark.
//! Rows end at the end of the file or at a `#####` line (the "Extended Information" section
//! newer Spectra Manager versions append). NPOINTS, FIRSTX and LASTX, when present, must agree
//! with the rows, so a cut file is refused. XUNITS must be nanometres (micrometres are
//! converted); YUNITS ABSORBANCE gives the kind hint `absorbance`, and YUNITS %T is converted to
//! absorbance (`A = 2 - log10(%T)`) with the same hint.
//!
//! The axis keeps the file's order, often descending (2500 -> 700 nm): the server and the
//! analytics accept a strictly descending axis, so nothing is reversed. DATE has no century
//! and no zone, so no UTC instrument time is derived; DATE and TIME are kept in `meta`.

use crate::connector::ConnectorError;

use super::text::{check_axis, format_error, header_integer, parse_number, XyRows};
use super::{FormatSpec, SpectraFileFormat, SpectrumFile};

pub(crate) const SPEC: FormatSpec = FormatSpec {
    format: SpectraFileFormat::Jasco,
    name: "JASCO text",
    extensions: &[],
    sniff,
    parse,
};

/// An `XYDATA` line in the header and no JCAMP-DX `##` labels (whose compressed `XYDATA=`
/// tables this parser does not read).
fn sniff(head: &[&str]) -> bool {
    let jcamp_dx = head
        .iter()
        .map(|line| line.trim())
        .find(|line| !line.is_empty())
        .is_some_and(|line| line.starts_with("##"));
    !jcamp_dx
        && head
            .iter()
            .any(|line| line.trim().eq_ignore_ascii_case("XYDATA"))
}

/// A header number that must parse when present, with its line.
fn header_number(
    path: &str,
    line_no: usize,
    key: &str,
    value: &str,
) -> Result<f64, ConnectorError> {
    match parse_number(value) {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format_error(
            path,
            line_no,
            format!("{key} {value:?} is not a number"),
        )),
    }
}

/// Whether `found` is `declared` up to the rounding of a text export.
fn same_x(declared: f64, found: f64) -> bool {
    (declared - found).abs() <= 1.0e-6 * declared.abs().max(1.0)
}

/// Parses a JASCO text export.
///
/// # Errors
/// [`ConnectorError::Format`]: no `XYDATA` line, a malformed row or header number, NPOINTS,
/// FIRSTX or LASTX disagreeing with the rows, an x unit that is not a wavelength.
pub fn parse(text: &str, path: &str) -> Result<SpectrumFile, ConnectorError> {
    let mut meta = serde_json::Map::new();
    let mut header = serde_json::Map::new();
    let mut header_lines: Vec<(usize, &str, &str)> = Vec::new();
    let mut tabs = false;
    let mut commas = false;
    let mut xydata_line = None;
    let mut last_line = 0;
    let mut lines = super::text::numbered_lines(text);
    for (line_no, raw) in lines.by_ref() {
        last_line = line_no;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.eq_ignore_ascii_case("XYDATA") {
            xydata_line = Some(line_no);
            break;
        }
        let (key, value) = if let Some((key, value)) = raw.split_once('\t') {
            tabs = true;
            (key.trim(), value.trim())
        } else if let Some((key, value)) = line.split_once(',') {
            commas = true;
            (key.trim(), value.trim())
        } else {
            (line, "")
        };
        header.insert(key.into(), value.into());
        header_lines.push((line_no, key, value));
    }
    let Some(xydata_line) = xydata_line else {
        return Err(format_error(
            path,
            last_line,
            "no XYDATA line: a header without data (truncated file?)",
        ));
    };
    let comma_separates = commas && !tabs;
    let mut rows = XyRows::default();
    for (line_no, raw) in lines {
        let line = raw.trim();
        if line.starts_with("#####") {
            break;
        }
        if !line.is_empty() {
            rows.push_line(path, line_no, line, comma_separates)?;
        }
    }
    if rows.x.is_empty() {
        return Err(format_error(path, xydata_line, "no data rows after XYDATA"));
    }

    // The count first: a cut file then says so, rather than that LASTX moved.
    for &(line_no, key, value) in &header_lines {
        if key.eq_ignore_ascii_case("NPOINTS") {
            let npoints = header_integer(path, line_no, key, value)?;
            if usize::try_from(npoints).ok() != Some(rows.x.len()) {
                return Err(format_error(
                    path,
                    line_no,
                    format!(
                        "NPOINTS is {npoints} but {} data rows follow XYDATA (truncated file?)",
                        rows.x.len()
                    ),
                ));
            }
            meta.insert("npoints".into(), npoints.into());
        }
    }
    let mut nm_per_x_unit = 1.0;
    let mut kind_hint = None;
    let mut percent_transmission = false;
    for &(line_no, key, value) in &header_lines {
        match key.to_ascii_uppercase().as_str() {
            name @ ("FIRSTX" | "LASTX") if !value.is_empty() => {
                let declared = header_number(path, line_no, key, value)?;
                let (found, row) = if name == "FIRSTX" {
                    (rows.x.first(), rows.lines.first())
                } else {
                    (rows.x.last(), rows.lines.last())
                };
                if let (Some(&found), Some(&row)) = (found, row) {
                    if !same_x(declared, found) {
                        return Err(format_error(
                            path,
                            line_no,
                            format!("{key} is {value} but the row on line {row} holds x = {found}"),
                        ));
                    }
                }
            }
            "DELTAX" if !value.is_empty() => {
                let delta = header_number(path, line_no, key, value)?;
                meta.insert("deltax".into(), delta.into());
            }
            "XUNITS" => {
                nm_per_x_unit = match value.to_ascii_uppercase().as_str() {
                    "NANOMETERS" | "NANOMETRES" | "NM" | "" => 1.0,
                    "MICROMETERS" | "MICROMETRES" | "MICRONS" | "UM" => 1.0e3,
                    _ => {
                        return Err(format_error(
                            path,
                            line_no,
                            format!(
                                "XUNITS {value:?}: replay needs a wavelength axis \
                                 (NANOMETERS or MICROMETERS)"
                            ),
                        ))
                    }
                };
                meta.insert("xunits".into(), value.into());
            }
            "YUNITS" => {
                if value.eq_ignore_ascii_case("ABSORBANCE") || value.eq_ignore_ascii_case("ABS") {
                    kind_hint = Some("absorbance".to_string());
                }
                if value.eq_ignore_ascii_case("%T") || value.eq_ignore_ascii_case("%TRANSMITTANCE")
                {
                    percent_transmission = true;
                    kind_hint = Some("absorbance".to_string());
                }
                meta.insert("yunits".into(), value.into());
            }
            "ORIGIN" => {
                meta.insert("origin".into(), value.into());
            }
            "SPECTROMETER/DATA SYSTEM" => {
                meta.insert("spectrometer".into(), value.into());
            }
            "TITLE" if !value.is_empty() => {
                meta.insert("title".into(), value.into());
            }
            "DATE" => {
                meta.insert("date".into(), value.into());
            }
            "TIME" => {
                meta.insert("time".into(), value.into());
            }
            _ => {}
        }
    }
    let axis_nm: Vec<f64> = rows.x.iter().map(|x| x * nm_per_x_unit).collect();
    check_axis(path, &axis_nm, &rows.lines)?;
    if percent_transmission {
        // Transmission in percent to absorbance, A = 2 - log10(%T), so a %T scan gets the band
        // edge features of an absorbance scan.
        rows.y.iter_mut().for_each(|t| *t = 2.0 - t.log10());
        meta.insert("converted_from".into(), "%T".into());
    }
    meta.insert("header".into(), header.into());
    Ok(SpectrumFile {
        format: SpectraFileFormat::Jasco,
        axis_nm,
        spectra: vec![rows.y],
        kind_hint,
        integration_time_ms: None,
        instrument_time_ns: None,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "TITLE\t\r\nORIGIN\tJASCO\r\nXUNITS\tNANOMETERS\r\nYUNITS\tABSORBANCE\r\n\
        FIRSTX\t702.0000\r\nLASTX\t700.0000\r\nNPOINTS\t3\r\nDELTAX\t-1\r\nXYDATA\r\n\
        702.0000\t0.5\r\n701.0000\t0.6\r\n700.0000\t0.7\r\n";

    #[test]
    fn reads_a_descending_absorbance_file() {
        let file = parse(SMALL, "j.txt").expect("parses");
        assert_eq!(file.axis_nm, vec![702.0, 701.0, 700.0]);
        assert_eq!(file.spectra, vec![vec![0.5, 0.6, 0.7]]);
        assert_eq!(file.kind_hint.as_deref(), Some("absorbance"));
        assert_eq!(file.integration_time_ms, None);
        assert_eq!(file.meta["npoints"], 3);
        assert!(sniff(&["TITLE\t", "XYDATA"]));
        assert!(!sniff(&["##TITLE=x", "XYDATA"]));
    }

    #[test]
    fn csv_flavour_and_extended_information() {
        let text = "ORIGIN,JASCO\nXUNITS,MICROMETERS\nYUNITS,%T\nNPOINTS,2\nXYDATA\n\
            0.5,10\n0.6,20\n\n##### Extended Information\n\n[Comments]\nSample name,x\n";
        let file = parse(text, "j.csv").expect("parses");
        assert_eq!(file.axis_nm, vec![500.0, 600.0]);
        // %T becomes absorbance: 2 - log10(10) = 1, 2 - log10(20).
        assert_eq!(file.spectra, vec![vec![1.0, 2.0 - 20f64.log10()]]);
        assert_eq!(file.kind_hint.as_deref(), Some("absorbance"));
        assert_eq!(file.meta["converted_from"], "%T");
    }

    #[test]
    fn header_and_rows_must_agree() {
        let err = parse(&SMALL.replace("NPOINTS\t3", "NPOINTS\t4"), "j.txt").expect_err("n");
        assert!(
            err.to_string()
                .starts_with("j.txt:7: NPOINTS is 4 but 3 data rows"),
            "{err}"
        );
        let err = parse(&SMALL.replace("LASTX\t700.0000", "LASTX\t699"), "j.txt").expect_err("x");
        assert!(
            err.to_string().starts_with("j.txt:6: LASTX is 699"),
            "{err}"
        );
        let err = parse(&SMALL.replace("NANOMETERS", "1/CM"), "j.txt").expect_err("unit");
        assert!(err.to_string().starts_with("j.txt:3: XUNITS"), "{err}");
        let err = parse(&SMALL.replace("0.6", "n/a"), "j.txt").expect_err("text");
        assert!(
            err.to_string()
                .starts_with("j.txt:11: value \"n/a\" is not a number"),
            "{err}"
        );
        let err = parse("ORIGIN\tJASCO\r\nNPOINTS\t3\r\n", "j.txt").expect_err("no data");
        assert!(err.to_string().starts_with("j.txt:3: no XYDATA"), "{err}");
    }
}
