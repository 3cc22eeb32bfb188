//! Pictures of an experiment as SVG: a spectrum with its peak and FWHM, a TCSPC decay with its
//! fitted curve and residuals, the phasor plot with the universal semicircle, and a feature's
//! trend coloured by condition.
//!
//! Each picture is a function of plain values (what `flowdaq plot` selects with SQL, from a
//! data directory or a running server) to an SVG document drawn by plotters' SVG backend: no
//! fonts or image libraries to install, and a file that browsers, reports and notebooks open.

pub mod decay;
pub mod phasor;
pub mod spectrum;
pub mod trend;

use plotters::style::RGBColor;

/// Picture size, px.
pub const SIZE: (u32, u32) = (900, 600);

/// Series colours, in order (colour-blind safe: Okabe and Ito's palette).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// plotters' drawing errors as `anyhow` errors.
pub(crate) fn drawn<T, E: std::fmt::Debug>(result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("drawing failed: {e:?}"))
}

/// `(low, high)` of the finite values, widened by 5 % each side (a unit around a single value).
pub(crate) fn padded_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (low, high) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !low.is_finite() {
        return None;
    }
    let pad = if high > low { 0.05 * (high - low) } else { 1.0 };
    Some((low - pad, high + pad))
}
