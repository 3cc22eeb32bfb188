//! Ocean Optics OOIBase32 text exports (`.scope` and the other modes' files).
//!
//! Layout, as OOIBase32 writes it (checked against a real USB2000 file,
//! `tests/data/ocean_optics_usb2000_tsunami.scope`):
//!
//! ```text
//! OOIBase32 Version 1.0.1.6 Data File
//! ++++++++++++++++++++++++++++++++++++
//! Date: Monday, July 03, 2017, 07:30:30
//! Spectrometer Serial Number: USB2E2859
//! Integration Time (msec): 8
//! Spectra Averaged: 10
//! Boxcar Smoothing: 0
//! >>>>>Begin Spectral Data<<<<<
//! 339.95<TAB>0.000
//! ...
//! >>>>>End Spectral Data<<<<<
//! ```
//!
//! The end marker is optional. The header states no pixel count, so a file cut at a line
//! boundary cannot be told from a complete one; a row cut mid-way is an error. The date is
//! the acquisition PC's local time with no zone, so no UTC instrument time is derived: the
//! text is kept in `meta.date`. The file does not say whether it holds PL, a sample or a dark,
//! so there is no kind hint.

use crate::connector::ConnectorError;

use super::text::{
    check_axis, header_integer, integration_time_ms, key_value, marked_sections, XyRows,
};
use super::{FormatSpec, SpectraFileFormat, SpectrumFile};

pub(crate) const SPEC: FormatSpec = FormatSpec {
    format: SpectraFileFormat::OoiBase32,
    name: "Ocean Optics OOIBase32",
    extensions: &["scope"],
    sniff,
    parse,
};

fn sniff(head: &[&str]) -> bool {
    head.iter()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_start().starts_with("OOIBase32"))
}

/// Parses an OOIBase32 export.
///
/// # Errors
/// [`ConnectorError::Format`]: no begin marker, a malformed data row or a malformed value of
/// a header entry this parser reads (integration time, spectra averaged, boxcar).
pub fn parse(text: &str, path: &str) -> Result<SpectrumFile, ConnectorError> {
    let sections = marked_sections(text, path)?;
    let mut meta = serde_json::Map::new();
    let mut header = serde_json::Map::new();
    let mut integration = None;
    for &(line_no, line) in &sections.header {
        if line.starts_with("OOIBase32") {
            meta.insert("software".into(), line.into());
            continue;
        }
        let Some((key, value)) = key_value(line) else {
            // The `+++` rule under the title, or free text: nothing to read.
            continue;
        };
        header.insert(key.into(), value.into());
        match key {
            k if k.starts_with("Integration Time") => {
                integration = Some(integration_time_ms(path, line_no, key, value)?);
            }
            "Spectra Averaged" => {
                let n = header_integer(path, line_no, key, value)?;
                meta.insert("spectra_averaged".into(), n.into());
            }
            "Boxcar Smoothing" => {
                let n = header_integer(path, line_no, key, value)?;
                meta.insert("boxcar_width".into(), n.into());
            }
            "Spectrometer Serial Number" => {
                meta.insert("serial_number".into(), value.into());
            }
            "Spectrometer Channel" => {
                meta.insert("channel".into(), value.into());
            }
            "Date" => {
                meta.insert("date".into(), value.into());
            }
            "User" => {
                meta.insert("user".into(), value.into());
            }
            _ => {}
        }
    }
    let mut rows = XyRows::default();
    for &(line_no, line) in &sections.data {
        rows.push_line(path, line_no, line, false)?;
    }
    check_axis(path, &rows.x, &rows.lines)?;
    meta.insert("end_marker".into(), sections.end_line.is_some().into());
    meta.insert("header".into(), header.into());
    Ok(SpectrumFile {
        format: SpectraFileFormat::OoiBase32,
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

    const SMALL: &str = "OOIBase32 Version 1.0.1.6 Data File\r\n\
        ++++++++++++++++++++++++++++++++++++\r\n\
        Date: Monday, July 03, 2017, 07:30:30\r\n\
        Spectrometer Serial Number: USB2E2859\r\n\
        Integration Time (msec): 8\r\n\
        Spectra Averaged: 10\r\n\
        Boxcar Smoothing: 3\r\n\
        >>>>>Begin Spectral Data<<<<<\r\n\
        400.00\t10.5\r\n\
        400.50\t11.5\r\n\
        401.00\t12.5\r\n\
        >>>>>End Spectral Data<<<<<\r\n";

    #[test]
    fn reads_header_and_rows() {
        let file = parse(SMALL, "s.scope").expect("parses");
        assert_eq!(file.axis_nm, vec![400.0, 400.5, 401.0]);
        assert_eq!(file.spectra, vec![vec![10.5, 11.5, 12.5]]);
        assert_eq!(file.integration_time_ms, Some(8.0));
        assert_eq!(file.meta["serial_number"], "USB2E2859");
        assert_eq!(file.meta["spectra_averaged"], 10);
        assert_eq!(file.meta["boxcar_width"], 3);
        assert_eq!(file.meta["date"], "Monday, July 03, 2017, 07:30:30");
        assert_eq!(file.meta["end_marker"], true);
        assert_eq!(file.instrument_time_ns, None);
        assert!(sniff(&["OOIBase32 Version 2.0.6.5 Data File"]));
        assert!(!sniff(&["SpectraSuite Data File"]));
    }

    #[test]
    fn end_marker_is_optional_but_a_cut_row_is_not() {
        let no_end = SMALL.replace(">>>>>End Spectral Data<<<<<\r\n", "");
        let file = parse(&no_end, "s.scope").expect("no end marker");
        assert_eq!(file.axis_nm.len(), 3);
        assert_eq!(file.meta["end_marker"], false);
        let cut = no_end.replace("401.00\t12.5\r\n", "401.0");
        let err = parse(&cut, "s.scope").expect_err("cut row");
        assert!(err
            .to_string()
            .starts_with("s.scope:11: expected a wavelength"));
    }

    #[test]
    fn bad_header_values_name_their_line() {
        let bad = SMALL.replace("Spectra Averaged: 10", "Spectra Averaged: ten");
        let err = parse(&bad, "s.scope").expect_err("bad count");
        assert!(err.to_string().starts_with("s.scope:6: Spectra Averaged"));
        let bad = SMALL.replace("(msec): 8", "(msec): -8");
        let err = parse(&bad, "s.scope").expect_err("bad time");
        assert!(err.to_string().starts_with("s.scope:5: Integration Time"));
    }
}
