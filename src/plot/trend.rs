//! A feature over time, one colour per reaction condition: how an outcome moved as the
//! optimizer changed the reactor.

use plotters::prelude::*;

use super::{drawn, legend, padded_range, scatter_groups, SIZE};

/// A feature's values over time, grouped by condition.
#[derive(Debug, Clone)]
pub struct TrendPicture {
    /// Title.
    pub title: String,
    /// The feature's name and unit, for the axis.
    pub feature: String,
    /// `(condition, points (seconds since the first value, value))` per condition.
    pub conditions: Vec<(String, Vec<(f64, f64)>)>,
}

/// The SVG document of `picture`.
///
/// # Errors
/// If there is no finite value, or drawing fails.
pub fn svg(picture: &TrendPicture) -> anyhow::Result<String> {
    let points = || picture.conditions.iter().flat_map(|(_, p)| p.iter());
    let (x0, x1) = padded_range(points().map(|p| p.0))
        .ok_or_else(|| anyhow::anyhow!("no value of {} to draw", picture.feature))?;
    let (y0, y1) = padded_range(points().map(|p| p.1))
        .ok_or_else(|| anyhow::anyhow!("no finite value of {} to draw", picture.feature))?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let mut chart = drawn(
            ChartBuilder::on(&root)
                .caption(&picture.title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(80)
                .build_cartesian_2d(x0..x1, y0..y1),
        )?;
        drawn(
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc(picture.feature.as_str())
                .draw(),
        )?;
        scatter_groups(&mut chart, &picture.conditions)?;
        legend(&mut chart)?;
        drawn(root.present())?;
    }
    Ok(out)
}
