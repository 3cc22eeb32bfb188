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

use plotters::coord::types::RangedCoordf64;
use plotters::coord::CoordTranslate;
use plotters::prelude::*;

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

/// Points of labelled groups: `(label, points (x, y))`.
pub type Groups = [(String, Vec<(f64, f64)>)];

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

/// Draws the legend box of `chart`'s labelled series.
pub(crate) fn legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    drawn(
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw(),
    )
}

/// Draws each group's finite points as filled circles of its palette colour, labelled for the
/// legend.
pub(crate) fn scatter_groups<'a, DB>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    groups: &Groups,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
{
    for (i, (label, points)) in groups.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        drawn(
            chart.draw_series(
                points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .map(|p| Circle::new(*p, 3, colour.filled())),
            ),
        )?
        .label(label.as_str())
        .legend(move |(x, y)| Circle::new((x + 10, y), 3, colour.filled()));
    }
    Ok(())
}
