//! The phasor plot: each fitted window's first-harmonic (g, s) against the universal
//! semicircle, where single-exponential decays lie.

use plotters::prelude::*;

use super::{drawn, legend, scatter_groups, SIZE};

/// Phasors of windows, grouped (by source and channel, or by condition).
#[derive(Debug, Clone)]
pub struct PhasorPicture {
    /// Title.
    pub title: String,
    /// `(label, points (g, s))` per group.
    pub groups: Vec<(String, Vec<(f64, f64)>)>,
}

/// The SVG document of `picture`.
///
/// # Errors
/// If no group holds a finite phasor, or drawing fails.
pub fn svg(picture: &PhasorPicture) -> anyhow::Result<String> {
    let finite = |(g, s): &(f64, f64)| g.is_finite() && s.is_finite();
    if !picture.groups.iter().any(|(_, p)| p.iter().any(finite)) {
        anyhow::bail!("no window has a phasor (phasors need a fit)");
    }
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let mut chart = drawn(
            ChartBuilder::on(&root)
                .caption(&picture.title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.05..1.05, -0.02..0.62),
        )?;
        drawn(chart.configure_mesh().x_desc("g").y_desc("s").draw())?;
        let semicircle = (0..=180).map(|deg| {
            let angle = f64::from(deg).to_radians();
            (0.5 + 0.5 * angle.cos(), 0.5 * angle.sin())
        });
        drawn(chart.draw_series(LineSeries::new(semicircle, BLACK.stroke_width(1))))?
            .label("single exponentials")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
        scatter_groups(&mut chart, &picture.groups)?;
        legend(&mut chart)?;
        drawn(root.present())?;
    }
    Ok(out)
}
