//! Line and number helpers shared by the replay parsers.
//!
//! They exist so every format reports a problem the same way (`path:line: reason`) and checks
//! the wavelength axis as the server will. Nothing here may panic on file content, and nothing
//! allocates from a count the file declares.

use crate::connector::ConnectorError;

/// The server refuses wavelengths above this (see `decode/spectra.rs`).
const MAX_WAVELENGTH_NM: f64 = 1.0e6;

/// A [`ConnectorError::Format`] for `line` (1-based; 0 for the file as a whole).
pub(crate) fn format_error(path: &str, line: usize, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Format {
        path: path.to_string(),
        line,
        reason: reason.into(),
    }
}

/// The lines of `text` with their 1-based numbers. `\r\n`, `\n` and a bare `\r` (classic Mac
/// exports) all end a line; a leading byte-order mark is dropped.
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let separator = if !text.contains('\n') && text.contains('\r') {
        '\r'
    } else {
        '\n'
    };
    text.split(separator)
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .enumerate()
        .map(|(index, line)| (index + 1, line))
}

/// A number written with a decimal point or a decimal comma (`1,000000E-1`, as OceanView
/// writes in many locales). Thousands separators are not numbers. Non-finite spellings
/// (`NaN`, `Infinity`) parse: the caller decides whether they are acceptable.
pub(crate) fn parse_number(field: &str) -> Option<f64> {
    let field = field.trim();
    if field.contains(',') {
        if field.contains('.') || field.matches(',').count() != 1 {
            return None;
        }
        return field.replacen(',', ".", 1).parse().ok();
    }
    field.parse().ok()
}

/// The fields of a data row: separated by tabs, spaces or semicolons, and by commas only when
/// the caller knows commas are separators (then they cannot be decimal marks).
pub(crate) fn split_fields(line: &str, comma_separates: bool) -> Vec<&str> {
    line.split(|c: char| c == '\t' || c == ' ' || c == ';' || (comma_separates && c == ','))
        .filter(|field| !field.is_empty())
        .collect()
}

/// Rows of `wavelength value` pairs with the line each came from.
#[derive(Debug, Default)]
pub(crate) struct XyRows {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub lines: Vec<usize>,
}

impl XyRows {
    /// Parses one data row of exactly two numbers.
    pub fn push_line(
        &mut self,
        path: &str,
        line_no: usize,
        line: &str,
        comma_separates: bool,
    ) -> Result<(), ConnectorError> {
        let fields = split_fields(line.trim(), comma_separates);
        let [x, y] = fields.as_slice() else {
            return Err(format_error(
                path,
                line_no,
                format!(
                    "expected a wavelength and one value, found {} field(s) in {line:?}",
                    fields.len()
                ),
            ));
        };
        let x = parse_number(x).ok_or_else(|| {
            format_error(path, line_no, format!("wavelength {x:?} is not a number"))
        })?;
        let y = parse_number(y)
            .ok_or_else(|| format_error(path, line_no, format!("value {y:?} is not a number")))?;
        self.x.push(x);
        self.y.push(y);
        self.lines.push(line_no);
        Ok(())
    }
}

/// Checks an axis as the server will: every wavelength finite, positive and at most 1e6 nm,
/// and the whole axis strictly ascending or strictly descending. `lines[i]` is the line of
/// point `i`, for the error.
pub(crate) fn check_axis(path: &str, axis: &[f64], lines: &[usize]) -> Result<(), ConnectorError> {
    let line_of = |index: usize| lines.get(index).copied().unwrap_or(0);
    if axis.is_empty() {
        return Err(format_error(path, 0, "no data rows"));
    }
    if let Some(index) = axis
        .iter()
        .position(|x| !(x.is_finite() && *x > 0.0 && *x <= MAX_WAVELENGTH_NM))
    {
        return Err(format_error(
            path,
            line_of(index),
            format!(
                "wavelength {} nm is outside (0, {MAX_WAVELENGTH_NM:e}] nm",
                axis[index]
            ),
        ));
    }
    let ascending = axis.len() > 1 && axis[1] > axis[0];
    if let Some(index) = axis.windows(2).position(|w| {
        if ascending {
            w[1] <= w[0]
        } else {
            w[1] >= w[0]
        }
    }) {
        return Err(format_error(
            path,
            line_of(index + 1),
            format!(
                "wavelength {} nm follows {} nm: the axis must be strictly ascending or \
                 strictly descending",
                axis[index + 1],
                axis[index]
            ),
        ));
    }
    Ok(())
}

/// An Ocean Optics text export cut into its parts: header lines, the
/// `>>>>>Begin ... Spectral Data<<<<<` marker, data rows and the optional end marker.
/// Lines are trimmed and blank lines dropped.
#[derive(Debug)]
pub(crate) struct MarkedSections<'a> {
    pub header: Vec<(usize, &'a str)>,
    pub begin: (usize, &'a str),
    pub data: Vec<(usize, &'a str)>,
    pub end_line: Option<usize>,
}

fn is_begin_marker(line: &str) -> bool {
    line.starts_with(">>>>>Begin") && line.ends_with("<<<<<")
}

fn is_end_marker(line: &str) -> bool {
    line.starts_with(">>>>>End") && line.ends_with("<<<<<")
}

/// Whether any of `lines` is a `>>>>>Begin ...<<<<<` marker.
pub(crate) fn has_begin_marker(lines: &[&str]) -> bool {
    lines.iter().any(|line| is_begin_marker(line.trim()))
}

/// Splits an Ocean Optics export. Text after the end marker is ignored unless it starts a
/// second spectral block, which is refused rather than silently dropped.
///
/// # Errors
/// No begin marker (a header without data), no data rows, markers out of order.
pub(crate) fn marked_sections<'a>(
    text: &'a str,
    path: &str,
) -> Result<MarkedSections<'a>, ConnectorError> {
    let mut header = Vec::new();
    let mut begin: Option<(usize, &str)> = None;
    let mut data = Vec::new();
    let mut end_line = None;
    let mut last_line = 0;
    for (line_no, raw) in numbered_lines(text) {
        last_line = line_no;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match (begin, end_line) {
            (None, _) if is_begin_marker(line) => begin = Some((line_no, line)),
            (None, _) if is_end_marker(line) => {
                return Err(format_error(
                    path,
                    line_no,
                    "end-of-data marker before any begin marker",
                ))
            }
            (None, _) => header.push((line_no, line)),
            (Some(_), None) if is_end_marker(line) => end_line = Some(line_no),
            (Some(_), _) if is_begin_marker(line) => {
                return Err(format_error(
                    path,
                    line_no,
                    "a second spectral data block: replay reads files holding one spectrum",
                ))
            }
            (Some(_), None) => data.push((line_no, line)),
            (Some(_), Some(_)) => {}
        }
    }
    let Some(begin) = begin else {
        return Err(format_error(
            path,
            last_line,
            "no '>>>>>Begin Spectral Data<<<<<' marker: a header without spectral data \
             (truncated file?)",
        ));
    };
    if data.is_empty() {
        return Err(format_error(
            path,
            end_line.unwrap_or(begin.0),
            "no data rows after the begin marker",
        ));
    }
    Ok(MarkedSections {
        header,
        begin,
        data,
        end_line,
    })
}

/// `Key: value` split at the first colon, both trimmed.
pub(crate) fn key_value(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    Some((key.trim(), value.trim()))
}

/// A header value without the device it applies to: `100000 (USB4F06998)` -> `100000`.
pub(crate) fn without_device(value: &str) -> &str {
    match value.split_once('(') {
        Some((before, _)) if value.ends_with(')') => before.trim(),
        _ => value.trim(),
    }
}

/// A header value that must be a whole number (`Spectra Averaged: 10 (USB2E2859)`).
pub(crate) fn header_integer(
    path: &str,
    line_no: usize,
    key: &str,
    value: &str,
) -> Result<i64, ConnectorError> {
    without_device(value).parse().map_err(|_| {
        format_error(
            path,
            line_no,
            format!("{key}: {value:?} is not a whole number"),
        )
    })
}

/// The integration time of a header entry such as `Integration Time (usec)` =
/// `100000 (USB4F06998)`, in ms. The unit is the parenthesised part of the key.
pub(crate) fn integration_time_ms(
    path: &str,
    line_no: usize,
    key: &str,
    value: &str,
) -> Result<f64, ConnectorError> {
    let fail = |reason: String| format_error(path, line_no, reason);
    let unit = key
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|unit| unit.trim().to_lowercase())
        .ok_or_else(|| fail(format!("{key}: no unit in parentheses")))?;
    let ms_per_unit = match unit.as_str() {
        "msec" | "ms" => 1.0,
        "sec" | "s" => 1.0e3,
        // `\u{fffd}sec` is a Latin-1 `µsec` read as UTF-8.
        "usec" | "us" | "µsec" | "μsec" | "µs" | "μs" | "\u{fffd}sec" => 1.0e-3,
        other => return Err(fail(format!("{key}: unknown time unit {other:?}"))),
    };
    let number = without_device(value);
    let time = parse_number(number)
        .ok_or_else(|| fail(format!("{key}: {value:?} is not a number")))?
        * ms_per_unit;
    if time.is_finite() && time > 0.0 {
        Ok(time)
    } else {
        Err(fail(format!("{key}: {value:?} is not a positive time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_either_decimal_mark() {
        assert_eq!(parse_number("1,000000E-1"), Some(0.1));
        assert_eq!(parse_number(" 339.95 "), Some(339.95));
        assert_eq!(parse_number("-0,5"), Some(-0.5));
        assert_eq!(parse_number("1,000,000"), None);
        assert_eq!(parse_number("1.000,5"), None);
        assert_eq!(parse_number("abc"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn lines_end_at_any_line_ending() {
        let lf: Vec<_> = numbered_lines("a\nb\r\nc").collect();
        assert_eq!(lf, vec![(1, "a"), (2, "b"), (3, "c")]);
        let cr: Vec<_> = numbered_lines("\u{feff}a\rb\r").collect();
        assert_eq!(cr, vec![(1, "a"), (2, "b"), (3, "")]);
    }

    #[test]
    fn axis_checks_name_the_offending_line() {
        assert!(check_axis("a", &[1.0, 2.0, 3.0], &[5, 6, 7]).is_ok());
        assert!(check_axis("a", &[3.0, 2.0, 1.0], &[5, 6, 7]).is_ok());
        assert!(check_axis("a", &[3.0], &[5]).is_ok());
        let err = check_axis("a", &[1.0, 2.0, 2.0], &[5, 6, 7]).expect_err("repeat");
        assert!(err
            .to_string()
            .starts_with("a:7: wavelength 2 nm follows 2 nm"));
        let err = check_axis("a", &[3.0, 2.0, 2.5], &[5, 6, 7]).expect_err("turn");
        assert!(err.to_string().starts_with("a:7:"), "{err}");
        let err = check_axis("a", &[1.0, f64::NAN], &[5, 6]).expect_err("nan");
        assert!(err.to_string().starts_with("a:6:"), "{err}");
        let err = check_axis("a", &[0.0, 1.0], &[5, 6]).expect_err("zero");
        assert!(err.to_string().starts_with("a:5:"), "{err}");
        assert!(check_axis("a", &[], &[]).is_err());
    }

    #[test]
    fn integration_units_convert_to_ms() {
        let t = |key: &str, value: &str| integration_time_ms("p", 3, key, value);
        assert_eq!(t("Integration Time (msec)", "8").ok(), Some(8.0));
        assert_eq!(
            t("Integration Time (usec)", "100000 (USB4F06998)").ok(),
            Some(100.0)
        );
        assert_eq!(t("Integration Time (sec)", "1,000000E-1").ok(), Some(100.0));
        assert!(t("Integration Time (fortnights)", "1").is_err());
        assert!(t("Integration Time", "1").is_err());
        assert!(t("Integration Time (msec)", "0").is_err());
        let err = t("Integration Time (msec)", "eight").expect_err("text");
        assert!(err.to_string().starts_with("p:3: Integration Time (msec)"));
    }
}
