//! Agilent (Varian) Cary UV-vis CSV exports, as Cary WinUV and Cary UV Workstation write them:
//! a row of sample names (each followed by an empty cell), a row of column captions in pairs
//! (`Wavelength (nm)`, then `Abs`, `%T` or `%R`), data rows with one wavelength-value pair per
//! sample (trailing comma included), a blank line, then a free-text metadata block per sample
//! (collection time, instrument, method parameters).
//!
//! Each pair is its own spectrum; the metadata block is kept in `meta` and never parsed as
//! data. `%T` values are converted to absorbance, `A = 2 - log10(%T)`, so a transmission
//! scan gets the same band-edge features as an absorbance scan.

use super::text::{check_axis, format_error, numbered_lines};
use super::{FormatSpec, SpectraFileFormat, SpectrumFile};
use crate::connector::ConnectorError;

pub(crate) const SPEC: FormatSpec = FormatSpec {
    format: SpectraFileFormat::Cary,
    name: "Cary UV-vis CSV",
    extensions: &[],
    sniff: sniff_cary,
    parse: parse_cary,
};

/// The second line opens with the `Wavelength (nm)` caption of the first pair.
fn sniff_cary(lines: &[&str]) -> bool {
    lines.get(1).is_some_and(|line| {
        line.trim_start_matches('\u{feff}')
            .to_ascii_lowercase()
            .starts_with("wavelength (nm),")
    })
}

/// What a pair's value caption says the values are.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Quantity {
    Absorbance,
    PercentTransmission,
    Other,
}

fn quantity(caption: &str) -> Quantity {
    match caption.trim().to_ascii_lowercase().as_str() {
        "abs" | "a" | "absorbance" => Quantity::Absorbance,
        "%t" | "t%" | "%transmission" => Quantity::PercentTransmission,
        _ => Quantity::Other,
    }
}

/// Parses a Cary CSV export (see the module doc).
///
/// # Errors
/// [`ConnectorError::Format`] naming the line: captions that are not pairs, a value that is
/// not a number, samples on different wavelength axes, or no data.
pub fn parse_cary(text: &str, path: &str) -> Result<SpectrumFile, ConnectorError> {
    let mut lines = numbered_lines(text);
    let names_line = lines.next().map(|(_, l)| l).unwrap_or("");
    let Some((captions_no, captions_line)) = lines.next() else {
        return Err(format_error(path, 0, "no caption row"));
    };
    let cells = |line: &str| -> Vec<String> {
        let mut cells: Vec<String> = line.split(',').map(|c| c.trim().to_string()).collect();
        while cells.last().is_some_and(|c| c.is_empty()) {
            cells.pop();
        }
        cells
    };
    let captions = cells(captions_line);
    if captions.is_empty() || !captions.len().is_multiple_of(2) {
        return Err(format_error(
            path,
            captions_no,
            format!(
                "{} captions: expected wavelength-value pairs",
                captions.len()
            ),
        ));
    }
    let pairs = captions.len() / 2;
    let names = cells(names_line);
    let quantities: Vec<Quantity> = (0..pairs).map(|p| quantity(&captions[2 * p + 1])).collect();
    let mut axes: Vec<Vec<f64>> = vec![Vec::new(); pairs];
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); pairs];
    let mut axis_lines: Vec<Vec<usize>> = vec![Vec::new(); pairs];
    let mut metadata = Vec::new();
    let mut in_data = true;
    for (line_no, line) in lines {
        if !in_data {
            metadata.push(line);
            continue;
        }
        let row = cells(line);
        if row.is_empty() {
            // The blank line that ends the data; the metadata block follows.
            in_data = false;
            continue;
        }
        for (pair, cells) in row.chunks(2).enumerate().take(pairs) {
            let (x, y) = (cells[0].as_str(), cells.get(1).map_or("", String::as_str));
            if x.is_empty() && y.is_empty() {
                continue; // this sample's scan ended earlier
            }
            let number = |field: &str| {
                field.parse::<f64>().map_err(|e| {
                    format_error(path, line_no, format!("{field:?} is not a number: {e}"))
                })
            };
            axes[pair].push(number(x)?);
            values[pair].push(number(y)?);
            axis_lines[pair].push(line_no);
        }
    }
    let axis_nm = axes.first().cloned().unwrap_or_default();
    check_axis(path, &axis_nm, &axis_lines[0])?;
    for (pair, axis) in axes.iter().enumerate().skip(1) {
        if axis != &axis_nm {
            return Err(format_error(
                path,
                0,
                format!(
                    "sample {} ({:?}) has another wavelength axis than the first sample: \
                     export samples measured with different ranges to separate files",
                    pair + 1,
                    names.get(2 * pair).map_or("", String::as_str)
                ),
            ));
        }
    }
    let spectra: Vec<Vec<f64>> = values
        .into_iter()
        .zip(&quantities)
        .map(|(v, q)| match q {
            Quantity::PercentTransmission => v.iter().map(|t| 2.0 - t.log10()).collect(),
            _ => v,
        })
        .collect();
    let all_absorbance = quantities.iter().all(|q| *q != Quantity::Other);
    let mut meta = serde_json::Map::new();
    let sample_names: Vec<serde_json::Value> = (0..pairs)
        .map(|p| names.get(2 * p).cloned().unwrap_or_default().into())
        .collect();
    meta.insert("sample_names".into(), sample_names.into());
    meta.insert(
        "header".into(),
        metadata.join("\n").trim().to_string().into(),
    );
    Ok(SpectrumFile {
        format: SpectraFileFormat::Cary,
        axis_nm,
        spectra,
        kind_hint: all_absorbance.then(|| "absorbance".to_string()),
        integration_time_ms: None,
        instrument_time_ns: None,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: &str = "Baseline,,QD batch 7,,\r\n\
        Wavelength (nm),%T,Wavelength (nm),Abs,\r\n\
        502.0,100.0,502.0,0.5,\r\n\
        501.0,10.0,501.0,0.6,\r\n\
        500.0,1.0,500.0,0.7,\r\n\
        \r\n\
        Baseline\r\n\
        Collection Time: 3/14/2026 10:22:33 AM\r\n\
        Instrument,Cary 60\r\n";

    #[test]
    fn pairs_become_spectra_and_percent_t_becomes_absorbance() {
        assert!(sniff_cary(&[
            "Baseline,,QD,,",
            "Wavelength (nm),%T,Wavelength (nm),Abs,"
        ]));
        let file = parse_cary(EXPORT, "c.csv").expect("parses");
        assert_eq!(file.axis_nm, vec![502.0, 501.0, 500.0]);
        assert_eq!(file.spectra[0], vec![0.0, 1.0, 2.0]);
        assert_eq!(file.spectra[1], vec![0.5, 0.6, 0.7]);
        assert_eq!(file.kind_hint.as_deref(), Some("absorbance"));
        assert_eq!(
            file.meta["sample_names"],
            serde_json::json!(["Baseline", "QD batch 7"])
        );
        assert!(file.meta["header"].as_str().unwrap().contains("Cary 60"));
    }

    #[test]
    fn problems_name_their_line() {
        let bad = EXPORT.replace("501.0,0.6", "501.0,x");
        let err = parse_cary(&bad, "c.csv").expect_err("text");
        assert!(
            err.to_string()
                .starts_with("c.csv:4: \"x\" is not a number"),
            "{err}"
        );
        let odd = "a,,\nWavelength (nm),Abs,Wavelength (nm)\n500,1,500\n";
        let err = parse_cary(odd, "o.csv").expect_err("odd captions");
        assert!(err.to_string().starts_with("o.csv:2: 3 captions"), "{err}");
        let other_axis = EXPORT.replace("500.0,0.7", "499.0,0.7");
        let err = parse_cary(&other_axis, "c.csv").expect_err("axes");
        assert!(err.to_string().contains("another wavelength axis"), "{err}");
    }
}
