//! The default fit range: the bins the data can occupy.
//!
//! A TCSPC histogram often spans more than the instrument records: a TDC range shorter than the
//! sync period leaves the period's tail empty, some electronics leave the first bins empty, and
//! when the period is not a whole number of bins its last bin is only partly covered. Fitting
//! such empty or partial bins as data pulls the lifetime and drives the background negative. The
//! rule here finds them from the histogram alone:
//!
//! - a run of `z` empty bins at either end is cut when every stretch of `z` bins within the
//!   data holds at least [`EMPTY_RUN_EVIDENCE_COUNTS`] counts: were the run sampled even like
//!   the emptiest part of the data, all of it being empty would have a probability below
//!   `exp(-10)`. A run of zeros that is the far tail of a decay at low counts, or the quiet bins
//!   before the IRF, is as empty as the data's own quiet stretches and is kept;
//! - the period's last, partial bin is cut when the period is known and not a whole number of
//!   bins.

/// Counts the emptiest data stretch must hold for an empty run as long to count as
/// instrumental rather than chance (`exp(-10)`).
pub const EMPTY_RUN_EVIDENCE_COUNTS: f64 = 10.0;

/// The occupied bins `[start, end)` of `y`: see the module doc. Returns `(0, y.len())` when
/// nothing is cut or the histogram is empty; never a range shorter than `min_bins` (the whole
/// histogram instead). `cumulative` is scratch space (reused to avoid an allocation per fit).
pub fn occupied_range(
    y: &[f64],
    period_bins: Option<f64>,
    min_bins: usize,
    cumulative: &mut Vec<f64>,
) -> (usize, usize) {
    let n = y.len();
    let mut end = n;
    if let Some(p) = period_bins {
        // Bin k covers [k, k + 1); the period ends inside bin floor(p) when p is fractional.
        if p.is_finite() && p > 0.0 && p < n as f64 && p.fract() > 0.0 {
            end = p.floor() as usize;
        }
    }
    let (Some(first), Some(last)) = (
        y[..end].iter().position(|&v| v > 0.0),
        y[..end].iter().rposition(|&v| v > 0.0),
    ) else {
        return (0, n);
    };
    // cumulative[k] = counts in the data's first k bins.
    cumulative.clear();
    cumulative.push(0.0);
    let mut running = 0.0;
    for &v in &y[first..=last] {
        running += v;
        cumulative.push(running);
    }
    let data_bins = last + 1 - first;
    // Counts in the emptiest stretch of `run` bins within the data, scaled to `run` bins when
    // the data is shorter than the run.
    let emptiest = |run: usize| {
        let window = run.min(data_bins);
        let least = (window..=data_bins)
            .map(|k| cumulative[k] - cumulative[k - window])
            .fold(f64::INFINITY, f64::min);
        least * run as f64 / window as f64
    };
    let trailing = end - (last + 1);
    if trailing > 0 && emptiest(trailing) >= EMPTY_RUN_EVIDENCE_COUNTS {
        end = last + 1;
    }
    let mut start = 0;
    if first > 0 && emptiest(first) >= EMPTY_RUN_EVIDENCE_COUNTS {
        start = first;
    }
    if end - start < min_bins {
        return (0, n);
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instrumental_empty_tail_is_cut() {
        let mut y = vec![0.0; 100];
        for (k, v) in y.iter_mut().enumerate().take(60) {
            *v = 100.0 * (-(k as f64) / 20.0).exp() + 1.0;
        }
        assert_eq!(occupied_range(&y, None, 8, &mut Vec::new()), (0, 60));
    }

    #[test]
    fn quiet_bins_before_a_peak_are_kept() {
        // A background of 0.1 count per bin, a peak at bin 60: the empty first 30 bins are as
        // empty as the data's own quiet stretches.
        let mut y = vec![0.0; 200];
        for k in (30..200).step_by(10) {
            y[k] = 1.0;
        }
        for v in &mut y[60..70] {
            *v = 500.0;
        }
        assert_eq!(occupied_range(&y, None, 8, &mut Vec::new()), (0, 200));
    }

    #[test]
    fn a_sparse_tail_is_kept() {
        // Three counts spread over the bins before a run of 50 zeros: chance, not instrument.
        let mut y = vec![0.0; 100];
        y[10] = 1.0;
        y[30] = 1.0;
        y[49] = 1.0;
        assert_eq!(occupied_range(&y, None, 8, &mut Vec::new()), (0, 100));
    }

    #[test]
    fn empty_leading_bins_are_cut() {
        let mut y = vec![0.0; 100];
        for v in y.iter_mut().skip(10) {
            *v = 5.0;
        }
        assert_eq!(occupied_range(&y, None, 8, &mut Vec::new()), (10, 100));
    }

    #[test]
    fn the_partial_last_bin_of_the_period_is_cut() {
        let y = vec![5.0; 133];
        assert_eq!(
            occupied_range(&y, Some(132.2), 8, &mut Vec::new()),
            (0, 132)
        );
        assert_eq!(
            occupied_range(&y, Some(133.0), 8, &mut Vec::new()),
            (0, 133)
        );
        assert_eq!(
            occupied_range(&y, Some(500.0), 8, &mut Vec::new()),
            (0, 133)
        );
    }

    #[test]
    fn too_short_a_range_falls_back_to_all_bins() {
        let mut y = vec![0.0; 100];
        y[50] = 1000.0;
        assert_eq!(occupied_range(&y, None, 8, &mut Vec::new()), (0, 100));
        assert_eq!(
            occupied_range(&[0.0; 10], None, 2, &mut Vec::new()),
            (0, 10)
        );
    }
}
