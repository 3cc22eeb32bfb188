//! A TCSPC decay on a log axis with the curve its fit drew, and the weighted residuals below.

use plotters::prelude::*;

use super::{drawn, legend, padded_range, PALETTE, SIZE};

/// One histogram and, if it was fitted, its model.
#[derive(Debug, Clone)]
pub struct DecayPicture {
    /// Title: source, seq, channel, lifetimes.
    pub title: String,
    /// Bin width, ns.
    pub bin_width_ns: f64,
    /// Counts per bin.
    pub counts: Vec<f64>,
    /// The model's counts per bin at the fit's parameters.
    pub model: Option<Vec<f64>>,
    /// Bins `[start, end)` the fit covered.
    pub fit_range: Option<(usize, usize)>,
}

/// The SVG document of `picture`.
///
/// # Errors
/// If the histogram holds no counts, or drawing fails.
pub fn svg(picture: &DecayPicture) -> anyhow::Result<String> {
    let time_ns = |bin: usize| (bin as f64 + 0.5) * picture.bin_width_ns;
    let top = picture
        .counts
        .iter()
        .chain(picture.model.iter().flatten())
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    if top <= 0.0 {
        anyhow::bail!("the histogram holds no counts");
    }
    let end_ns = picture.counts.len() as f64 * picture.bin_width_ns;
    let (start, stop) = clamped(
        picture.fit_range.unwrap_or((0, picture.counts.len())),
        picture.counts.len(),
    );
    let residuals: Vec<(f64, f64)> = picture
        .model
        .iter()
        .flat_map(|model| {
            (start..stop).filter_map(move |bin| {
                let m = *model.get(bin)?;
                let y = *picture.counts.get(bin)?;
                (m > 0.0).then(|| (time_ns(bin), (y - m) / m.sqrt()))
            })
        })
        .collect();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let (upper, lower) = root.split_vertically(SIZE.1 * 7 / 10);
        let mut chart = drawn(
            ChartBuilder::on(&upper)
                .caption(&picture.title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..end_ns, (0.5..top * 2.0).log_scale()),
        )?;
        drawn(chart.configure_mesh().y_desc("counts").draw())?;
        let data = picture
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0.0)
            .map(|(bin, c)| Circle::new((time_ns(bin), *c), 2, PALETTE[0].filled()));
        drawn(chart.draw_series(data))?
            .label("counts")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, PALETTE[0].filled()));
        if let Some(model) = &picture.model {
            let curve = model
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_finite() && **m > 0.0)
                .map(|(bin, m)| (time_ns(bin), *m));
            drawn(chart.draw_series(LineSeries::new(curve, PALETTE[1].stroke_width(2))))?
                .label("fit")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PALETTE[1]));
        }
        legend(&mut chart)?;
        let (r0, r1) = padded_range(residuals.iter().map(|(_, r)| *r)).unwrap_or((-1.0, 1.0));
        let mut below = drawn(
            ChartBuilder::on(&lower)
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..end_ns, r0..r1),
        )?;
        drawn(
            below
                .configure_mesh()
                .x_desc("time (ns)")
                .y_desc("residual (sd)")
                .draw(),
        )?;
        drawn(below.draw_series(LineSeries::new([(0.0, 0.0), (end_ns, 0.0)], BLACK)))?;
        drawn(
            below.draw_series(
                residuals
                    .iter()
                    .map(|p| Circle::new(*p, 1, PALETTE[2].filled())),
            ),
        )?;
        drawn(root.present())?;
    }
    Ok(out)
}

/// A bin range `[start, stop)` clamped to `len` bins.
fn clamped((start, stop): (usize, usize), len: usize) -> (usize, usize) {
    let stop = stop.min(len);
    (start.min(stop), stop)
}
