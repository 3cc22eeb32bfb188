//! A spectrum with its peak and full width at half maximum marked, as `spectral_features`
//! found them.

use plotters::prelude::*;

use super::{drawn, legend, padded_range, PALETTE, SIZE};

/// One spectrum and its features.
#[derive(Debug, Clone)]
pub struct SpectrumPicture {
    /// Title: source, seq, kind.
    pub title: String,
    /// Wavelength axis, nm.
    pub wavelength_nm: Vec<f64>,
    /// Intensity per pixel, counts (absorbance for absorbance spectra).
    pub intensity: Vec<f64>,
    /// Peak wavelength, nm, if found.
    pub peak_wavelength_nm: Option<f64>,
    /// Full width at half maximum, nm.
    pub fwhm_nm: Option<f64>,
}

/// The SVG document of `picture`.
///
/// # Errors
/// If the spectrum holds no finite value, or drawing fails.
pub fn svg(picture: &SpectrumPicture) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let (x0, x1) = padded_range(picture.wavelength_nm.iter().copied())
            .ok_or_else(|| anyhow::anyhow!("the spectrum has no wavelength axis"))?;
        let (y0, y1) = padded_range(picture.intensity.iter().copied())
            .ok_or_else(|| anyhow::anyhow!("the spectrum holds no finite value"))?;
        let mut chart = drawn(
            ChartBuilder::on(&root)
                .caption(&picture.title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1),
        )?;
        drawn(
            chart
                .configure_mesh()
                .x_desc("wavelength (nm)")
                .y_desc("intensity")
                .draw(),
        )?;
        let points = picture
            .wavelength_nm
            .iter()
            .zip(&picture.intensity)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (*x, *y));
        drawn(chart.draw_series(LineSeries::new(points, PALETTE[0].stroke_width(2))))?
            .label("spectrum")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PALETTE[0]));
        if let Some(peak) = picture.peak_wavelength_nm.filter(|p| p.is_finite()) {
            drawn(chart.draw_series(LineSeries::new(
                [(peak, y0), (peak, y1)],
                PALETTE[1].stroke_width(2),
            )))?
            .label(format!("peak {peak:.2} nm"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PALETTE[1]));
            if let (Some(fwhm), Some(at_peak)) = (picture.fwhm_nm, value_nearest(picture, peak)) {
                // Half way between the spectrum's floor and its value at the peak.
                let floor = picture
                    .intensity
                    .iter()
                    .copied()
                    .filter(|v| v.is_finite())
                    .fold(f64::INFINITY, f64::min);
                let half = floor + (at_peak - floor) / 2.0;
                drawn(chart.draw_series(LineSeries::new(
                    [(peak - fwhm / 2.0, half), (peak + fwhm / 2.0, half)],
                    PALETTE[2].stroke_width(3),
                )))?
                .label(format!("FWHM {fwhm:.2} nm"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PALETTE[2]));
            }
        }
        legend(&mut chart)?;
        drawn(root.present())?;
    }
    Ok(out)
}

/// The intensity at the pixel nearest `wavelength_nm`.
fn value_nearest(picture: &SpectrumPicture, wavelength_nm: f64) -> Option<f64> {
    picture
        .wavelength_nm
        .iter()
        .zip(&picture.intensity)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .min_by(|(a, _), (b, _)| {
            (*a - wavelength_nm)
                .abs()
                .total_cmp(&(*b - wavelength_nm).abs())
        })
        .map(|(_, y)| *y)
}
