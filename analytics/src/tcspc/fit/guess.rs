//! Automatic starting values for lifetime fits: no human looks at a decay in a closed loop.
//!
//! Background from the flattest stretch of the histogram, IRF shift from the rising edge, mean
//! lifetime from the IRF-calibrated phasor at the first harmonic, and, for several components,
//! the best lifetime combination of a small log-spaced grid with amplitudes solved linearly.

use super::model::{exp_conv_on, IrfShape, TAU_MIN_BINS};
use super::normal::{dot, sum};

/// Starting values, in bins and counts per bin.
#[derive(Debug, Clone)]
pub(crate) struct Guess {
    pub tau: Vec<f64>,
    pub amplitude: Vec<f64>,
    pub background: f64,
    pub shift: f64,
}

/// Index where the cumulative sum of `v` first reaches half its total.
fn median_index(v: &[f64]) -> f64 {
    let total: f64 = v.iter().map(|x| x.max(0.0)).sum();
    let mut acc = 0.0;
    for (k, x) in v.iter().enumerate() {
        let x = x.max(0.0);
        if acc + x >= 0.5 * total && x > 0.0 {
            return k as f64 + (0.5 * total - acc) / x;
        }
        acc += x;
    }
    v.len() as f64 * 0.5
}

/// Background estimate: the lower of the mean before the rise and the lowest block mean.
#[inline(always)]
pub(crate) fn background(y: &[f64], range: (usize, usize), rise: f64, irf_width_bins: f64) -> f64 {
    let (start, end) = range;
    let y = &y[start..end];
    let n = y.len();
    let block = (n / 32).clamp(4, 64).min(n.max(1));
    let mut best = f64::INFINITY;
    for chunk in y.chunks(block) {
        if chunk.len() * 2 >= block {
            best = best.min(sum(chunk) / chunk.len() as f64);
        }
    }
    let pre_end = (rise - start as f64 - 4.0 * irf_width_bins - 2.0).floor();
    if pre_end >= 5.0 {
        let pre = &y[..(pre_end as usize).min(n)];
        best = best.min(sum(pre) / pre.len() as f64);
    }
    if best.is_finite() {
        best.max(0.0)
    } else {
        0.0
    }
}

/// Position (bin boundary) of the decay's rise: the maximum of the step detector
/// `D(k) = sum y[k..k+w] - sum y[k-w..k]`. Summing `w` bins on each side makes it robust at a
/// few counts per bin, where the maximum of a lightly smoothed curve lands on noise; for a rise
/// sharper than `w` it sits at the IRF's median, as [`irf_reference_position`] does.
/// `cum` is a buffer for the cumulative sums (resized here, kept across fits).
#[inline(always)]
pub(crate) fn rising_step(y: &[f64], range: (usize, usize), w: usize, cum: &mut Vec<f64>) -> f64 {
    let (start, end) = range;
    let y = &y[start..end];
    let n = y.len();
    let w = w.clamp(1, (n / 4).max(1));
    // Written into a slice (not pushed) so the running sum stays in a register: with `push` it
    // went through memory every bin, a store-to-load chain 1024 bins long.
    cum.resize(n + 1, 0.0);
    let cum = &mut cum[..n + 1];
    let mut acc = 0.0;
    cum[0] = 0.0;
    for (c, v) in cum[1..].iter_mut().zip(y) {
        acc += v;
        *c = acc;
    }
    let mut best = (f64::MIN, w);
    for k in w..=n.saturating_sub(w) {
        let d = (cum[k + w] - cum[k]) - (cum[k] - cum[k - w]);
        if d > best.0 {
            best = (d, k);
        }
    }
    (start + best.1) as f64
}

/// Median position of the IRF at zero shift, in bins (the point its rising edge is aligned by).
pub(crate) fn irf_reference_position(shape: &IrfShape, n: usize) -> f64 {
    match shape {
        IrfShape::Gaussian { center, .. } => *center,
        IrfShape::Measured(irf) => median_index(&irf[..n.min(irf.len())]),
    }
}

/// `cos` and `sin` of the first harmonic at each bin centre, for a fixed histogram and period.
#[derive(Debug, Clone, Default)]
pub(crate) struct Harmonic {
    omega: f64,
    cos: Vec<f64>,
    sin: Vec<f64>,
    sum_cos: f64,
    sum_sin: f64,
}

impl Harmonic {
    /// The first harmonic of `period` bins over `n` bins.
    pub(crate) fn new(n: usize, period: f64) -> Self {
        let omega = 2.0 * std::f64::consts::PI / period;
        let (sin, cos): (Vec<f64>, Vec<f64>) =
            (0..n).map(|k| (omega * (k as f64 + 0.5)).sin_cos()).unzip();
        Harmonic {
            omega,
            sum_cos: sum(&cos),
            sum_sin: sum(&sin),
            cos,
            sin,
        }
    }
}

/// Mean lifetime (bins) from the phasor of `y - b` at the first harmonic of the period, calibrated
/// by the IRF's phasor: `(phase lifetime, modulation lifetime)`, `None` if off the semicircle's
/// half plane.
#[inline(always)]
pub(crate) fn phasor_lifetimes(y: &[f64], irf: &[f64], b: f64, h: &Harmonic) -> Option<(f64, f64)> {
    let w = h.omega;
    let s0 = sum(y) - b * y.len() as f64;
    // sum (y - b) cos = sum y cos - b sum cos.
    let sc = dot(y, &h.cos) - b * h.sum_cos;
    let ss = dot(y, &h.sin) - b * h.sum_sin;
    let r0 = sum(irf);
    let (rc, rs) = (dot(irf, &h.cos), dot(irf, &h.sin));
    if s0 <= 0.0 || r0 <= 0.0 {
        return None;
    }
    // z = (sc + i ss) / s0 divided by (rc + i rs) / r0.
    let (dg, ds) = (sc / s0, ss / s0);
    let (ig, is) = (rc / r0, rs / r0);
    let den = ig * ig + is * is;
    if den <= 0.0 {
        return None;
    }
    let g = (dg * ig + ds * is) / den;
    let s = (ds * ig - dg * is) / den;
    if !(g > 0.0 && s > 0.0) {
        return None;
    }
    let tau_phase = s / (g * w);
    let m2 = g * g + s * s;
    let tau_mod = if m2 < 1.0 {
        (1.0 / m2 - 1.0).sqrt() / w
    } else {
        tau_phase
    };
    Some((tau_phase, tau_mod))
}

/// Solves the small symmetric system `a x = b` by Gaussian elimination with partial pivoting.
pub(crate) fn solve_small(a: &mut [f64], b: &mut [f64], n: usize) -> Option<()> {
    for col in 0..n {
        let piv =
            (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        if a[piv * n + col].abs() < 1e-300 {
            return None;
        }
        if piv != col {
            for k in 0..n {
                a.swap(col * n + k, piv * n + k);
            }
            b.swap(col, piv);
        }
        for r in col + 1..n {
            let f = a[r * n + col] / a[col * n + col];
            for k in col..n {
                a[r * n + k] -= f * a[col * n + k];
            }
            b[r] -= f * b[col];
        }
    }
    for col in (0..n).rev() {
        let mut v = b[col];
        for k in col + 1..n {
            v -= a[col * n + k] * b[k];
        }
        b[col] = v / a[col * n + col];
    }
    b.iter().all(|v| v.is_finite()).then_some(())
}

/// Buffers of [`best_combination`], kept across fits.
#[derive(Debug, Clone, Default)]
pub(crate) struct GuessScratch {
    /// Unit-amplitude model curve of one candidate lifetime, whole histogram.
    conv: Vec<f64>,
    /// Each candidate's curve summed over the coarse blocks, one column per candidate, then the
    /// block lengths (the background's column).
    coarse: Vec<f64>,
    /// The coarse columns times the weights, in the same order.
    weighted: Vec<f64>,
    /// `y - b` summed over each block, then the weights, then the weighted target.
    target: Vec<f64>,
    /// Cumulative sums of [`rising_step`].
    pub(crate) cumulative: Vec<f64>,
}

/// Most rows the candidate search works on: longer fit ranges are summed in blocks of
/// consecutive bins down to at most this many (1024 bins: blocks of 4).
const GUESS_ROWS: usize = 256;

/// Picks lifetimes from `candidates` (bins) and solves amplitudes (and the background if free)
/// by Neyman-weighted linear least squares; returns `(taus, amplitudes, background)` of the
/// combination with all amplitudes positive and the lowest chi-square.
///
/// The least squares run on the histogram summed in blocks of consecutive bins (at most
/// [`GUESS_ROWS`] blocks), with each candidate's curve summed the same way, so the model is
/// exact and the amplitudes stay counts per bin. Only structure finer than a block (a few
/// bins) is lost, and the fit that follows works on every bin; the Gram matrix of a dozen
/// candidates costs a quarter of what it did on 1024 bins, where it had weighed as much as
/// three model evaluations.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn best_combination(
    y: &[f64],
    irf: &[f64],
    range: (usize, usize),
    period: Option<f64>,
    components: usize,
    candidates: &[f64],
    background: Option<f64>,
    irf_support: (usize, usize),
    scratch: &mut GuessScratch,
) -> Option<(Vec<f64>, Vec<f64>, f64)> {
    let n = y.len();
    let (start, end) = range;
    let nc = candidates.len();
    let rows = end - start;
    let block = rows.div_ceil(GUESS_ROWS).max(1);
    let blocks = rows.div_ceil(block);
    let GuessScratch {
        conv,
        coarse,
        weighted,
        target,
        ..
    } = scratch;
    conv.resize(n, 0.0);
    coarse.resize((nc + 1) * blocks, 0.0);
    weighted.resize((nc + 1) * blocks, 0.0);
    target.resize(3 * blocks, 0.0);
    let block_sums = |v: &[f64], out: &mut [f64]| match block {
        1 => out.copy_from_slice(v),
        2 => block_sums_of::<2>(v, out),
        3 => block_sums_of::<3>(v, out),
        4 => block_sums_of::<4>(v, out),
        _ => {
            for (o, part) in out.iter_mut().zip(v.chunks(block)) {
                *o = sum(part);
            }
        }
    };
    for (i, &tau) in candidates.iter().enumerate() {
        exp_conv_on(irf, irf_support, tau, period, conv, None);
        block_sums(&conv[start..end], &mut coarse[i * blocks..(i + 1) * blocks]);
    }
    let free_b = background.is_none();
    let b_fixed = background.unwrap_or(0.0);
    let (cols_c, lens) = coarse.split_at_mut(nc * blocks);
    let (yb, rest) = target.split_at_mut(blocks);
    let (wb, wt) = rest.split_at_mut(blocks);
    block_sums(&y[start..end], yb);
    for (((l, part), t), w) in lens
        .iter_mut()
        .zip(y[start..end].chunks(block))
        .zip(yb.iter_mut())
        .zip(wb.iter_mut())
    {
        *l = part.len() as f64;
        // Neyman weights of the block sums: 1 / max(counts, 1).
        *w = 1.0 / t.max(1.0);
        *t -= b_fixed * *l;
    }
    // Gram matrix of [coarse curves..., block lengths] and projections of the target under the
    // weights: the weighted columns are stored once and every entry is one dot product.
    for c in 0..=nc {
        let col = if c < nc {
            &cols_c[c * blocks..(c + 1) * blocks]
        } else {
            &*lens
        };
        for ((o, w), v) in weighted[c * blocks..(c + 1) * blocks]
            .iter_mut()
            .zip(&*wb)
            .zip(col)
        {
            *o = w * v;
        }
    }
    for ((o, w), t) in wt.iter_mut().zip(&*wb).zip(&*yb) {
        *o = w * t;
    }
    let cols = nc + usize::from(free_b);
    let mut gram = vec![0.0; cols * cols];
    let mut proj = vec![0.0; cols];
    let yy = dot(wt, yb);
    for a in 0..cols {
        let wa = &weighted[a * blocks..(a + 1) * blocks];
        proj[a] = dot(wa, yb);
        for b in a..cols {
            let v = dot(wa, &coarse[b * blocks..(b + 1) * blocks]);
            gram[a * cols + b] = v;
            gram[b * cols + a] = v;
        }
    }
    let mut best: Option<(f64, Vec<usize>, Vec<f64>)> = None;
    let mut idx: Vec<usize> = (0..components).collect();
    let m = components + usize::from(free_b);
    let mut a = vec![0.0; m * m];
    let mut rhs = vec![0.0; m];
    loop {
        let sel: Vec<usize> = idx.iter().copied().chain(free_b.then_some(nc)).collect();
        for (i, &si) in sel.iter().enumerate() {
            rhs[i] = proj[si];
            for (j, &sj) in sel.iter().enumerate() {
                a[i * m + j] = gram[si * cols + sj];
            }
        }
        if solve_small(&mut a, &mut rhs, m).is_some()
            && rhs[..components].iter().all(|&v| v > 0.0)
            && (!free_b || rhs[components] >= 0.0)
        {
            // chi2 = yy - 2 x.p + x.G.x = yy - x.p at the normal-equation solution.
            let chi2 = yy
                - sel
                    .iter()
                    .zip(&rhs)
                    .map(|(&s, &x)| x * proj[s])
                    .sum::<f64>();
            if best.as_ref().is_none_or(|(c, _, _)| chi2 < *c) {
                best = Some((chi2, idx.clone(), rhs.clone()));
            }
        }
        // Next combination of `components` out of `nc`, in lexicographic order.
        let mut i = components;
        loop {
            if i == 0 {
                return best.map(|(_, idx, x)| {
                    let taus = idx.iter().map(|&i| candidates[i]).collect();
                    let b = if free_b { x[components] } else { b_fixed };
                    (taus, x[..components].to_vec(), b)
                });
            }
            i -= 1;
            if idx[i] < nc - components + i {
                idx[i] += 1;
                for j in i + 1..components {
                    idx[j] = idx[j - 1] + 1;
                }
                break;
            }
        }
    }
}

/// Sums of consecutive blocks of `B` values of `v` into `out` (the last block may be short).
/// With the block length a constant the sums unroll and vectorise across blocks; a loop over
/// blocks of run-time length ran one serial add chain per block.
#[inline(always)]
fn block_sums_of<const B: usize>(v: &[f64], out: &mut [f64]) {
    let blocks = v.chunks_exact(B);
    let rest = blocks.remainder();
    for (o, part) in out.iter_mut().zip(blocks) {
        let mut total = 0.0;
        for x in part {
            total += x;
        }
        *o = total;
    }
    if let (false, Some(last)) = (rest.is_empty(), out.last_mut()) {
        *last = rest.iter().sum();
    }
}

/// Log-spaced lifetime candidates between `lo` and `hi` bins.
pub(crate) fn log_grid(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    let (lo, hi) = (lo.max(TAU_MIN_BINS), hi.max(lo * 1.0001));
    (0..count)
        .map(|i| lo * (hi / lo).powf(i as f64 / (count - 1).max(1) as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unrolled block sums equal plain sums of `chunks`, short last block included.
    #[test]
    fn block_sums_match_chunk_sums() {
        let v: Vec<f64> = (0..23).map(|i| (i as f64 * 0.37).sin() * 100.0).collect();
        fn check<const B: usize>(v: &[f64]) {
            let expected: Vec<f64> = v.chunks(B).map(|c| c.iter().sum()).collect();
            let mut out = vec![f64::NAN; expected.len()];
            block_sums_of::<B>(v, &mut out);
            assert_eq!(out, expected, "blocks of {B}");
        }
        check::<2>(&v);
        check::<3>(&v);
        check::<4>(&v);
        check::<4>(&v[..20]);
    }
}
