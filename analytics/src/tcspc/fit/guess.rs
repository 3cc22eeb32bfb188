//! Automatic starting values for lifetime fits: no human looks at a decay in a closed loop.
//!
//! Background from the flattest stretch of the histogram, IRF shift from the rising edge, mean
//! lifetime from the IRF-calibrated phasor at the first harmonic. For two components, both
//! lifetimes from the phasors at the first two harmonics; for three (or when the phasors give
//! no pair), the best lifetime combination of a small log-spaced grid. Amplitudes and
//! background are then solved linearly. Near-true lifetimes save the fit evaluations: a
//! 2-exponential fit took 5.75 from the grid's start and takes 4.5 from the phasors'.

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
    /// Harmonic `k` (1: the first) of `period` bins over `n` bins.
    pub(crate) fn new(n: usize, period: f64, k: u32) -> Self {
        let omega = 2.0 * std::f64::consts::PI * f64::from(k) / period;
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

/// The IRF-calibrated phasor `(g, s)` of `y - b` at harmonic `h`, `None` if either has no
/// counts. With these tables (`e^{+i w t}`), a decay of lifetime `tau` sits at
/// `1 / (1 - i w tau)` on the semicircle `|z - 1/2| = 1/2`.
#[inline(always)]
fn calibrated_phasor(y: &[f64], irf: &[f64], b: f64, h: &Harmonic) -> Option<(f64, f64)> {
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
    Some(((dg * ig + ds * is) / den, (ds * ig - dg * is) / den))
}

/// Two lifetimes (bins) from the calibrated phasors of `y - b` at the first and second
/// harmonics: the mixture `f z1 + (1 - f) z2` of two points of the semicircle that matches the
/// first harmonic exactly and the second best. For each candidate short lifetime on a log grid
/// below the phase lifetime, the line from its point through the first-harmonic phasor meets
/// the semicircle again at the long lifetime's point, which also gives `f`; the candidate whose
/// mixture is nearest the second-harmonic phasor wins (a point at harmonic 1, `z`, is at
/// `z / (2 - z)` at harmonic 2). `None` when no candidate gives a mixture (a phasor inside no
/// chord: a single exponential, or noise), and the caller searches its lifetime grid instead.
pub(crate) fn biexponential_phasor(
    y: &[f64],
    irf: &[f64],
    b: f64,
    first: &Harmonic,
    second: &Harmonic,
    tau_phase: f64,
) -> Option<(f64, f64)> {
    let (g1, s1) = calibrated_phasor(y, irf, b, first)?;
    let (g2, s2) = calibrated_phasor(y, irf, b, second)?;
    let w = first.omega;
    let at = |tau: f64| {
        let a = w * tau;
        let d = 1.0 + a * a;
        (1.0 / d, a / d)
    };
    let second_of = |(g, s): (f64, f64)| {
        // z / (2 - z) for z = g + i s.
        let (re, im) = (2.0 - g, -s);
        let den = re * re + im * im;
        ((g * re + s * im) / den, (s * re - g * im) / den)
    };
    let mut best: Option<(f64, f64, f64)> = None;
    const CANDIDATES: usize = 48;
    for i in 0..CANDIDATES {
        // Short lifetime from tau_phase / 100 up to tau_phase.
        let tau1 = tau_phase * 100f64.powf(i as f64 / (CANDIDATES - 1) as f64 - 1.0);
        let (zg, zs) = at(tau1);
        let (dg, ds) = (g1 - zg, s1 - zs);
        let dd = dg * dg + ds * ds;
        if dd <= 0.0 {
            continue;
        }
        // z2 = z1 + t (P1 - z1) on the circle: t = -2 Re((z1 - 1/2) conj(d)) / |d|^2.
        let t = -2.0 * ((zg - 0.5) * dg + zs * ds) / dd;
        if !(t > 1.0 && t.is_finite()) {
            continue;
        }
        let (z2g, z2s) = (zg + t * dg, zs + t * ds);
        if !(z2g > 0.0 && z2s > 0.0) {
            continue;
        }
        // 1 / z2 = 1 - i w tau2.
        let tau2 = z2s / (z2g * z2g + z2s * z2s) / w;
        let f = 1.0 - 1.0 / t;
        if !(tau2 > tau1 && tau2.is_finite()) {
            continue;
        }
        let (a, bb) = second_of((zg, zs));
        let (c, d) = second_of((z2g, z2s));
        let (pg, ps) = (f * a + (1.0 - f) * c, f * bb + (1.0 - f) * d);
        let miss = (pg - g2).powi(2) + (ps - s2).powi(2);
        if best.is_none_or(|(m, _, _)| miss < m) {
            best = Some((miss, tau1, tau2));
        }
    }
    best.map(|(_, tau1, tau2)| (tau1, tau2))
}

/// Mean lifetime (bins) from the phasor of `y - b` at the first harmonic of the period, calibrated
/// by the IRF's phasor: `(phase lifetime, modulation lifetime)`, `None` if off the semicircle's
/// half plane.
#[inline(always)]
pub(crate) fn phasor_lifetimes(y: &[f64], irf: &[f64], b: f64, h: &Harmonic) -> Option<(f64, f64)> {
    let w = h.omega;
    let (g, s) = calibrated_phasor(y, irf, b, h)?;
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

    /// Noiseless periodic two-exponential decays through a Gaussian IRF: the two harmonics'
    /// phasors give both lifetimes to within the candidate grid's step (10 % per candidate).
    #[test]
    fn two_harmonics_give_both_lifetimes_of_a_biexponential() {
        let (n, period) = (1024, 1024.0);
        let irf_shape = IrfShape::Gaussian {
            sigma: 2.5,
            center: 120.0,
        };
        let mut irf = vec![0.0; n];
        let support = irf_shape.eval(0.0, &mut irf, None);
        let (first, second) = (Harmonic::new(n, period, 1), Harmonic::new(n, period, 2));
        for (tau1, tau2, a1) in [(30.0, 160.0, 0.5), (12.0, 80.0, 0.7), (50.0, 400.0, 0.3)] {
            let mut c1 = vec![0.0; n];
            let mut c2 = vec![0.0; n];
            exp_conv_on(&irf, support, tau1, Some(period), &mut c1, None);
            exp_conv_on(&irf, support, tau2, Some(period), &mut c2, None);
            let y: Vec<f64> = c1
                .iter()
                .zip(&c2)
                .map(|(a, b)| 1e4 * (a1 * a + (1.0 - a1) * b))
                .collect();
            let tau_phase = phasor_lifetimes(&y, &irf, 0.0, &first).expect("phasor").0;
            let (t1, t2) = biexponential_phasor(&y, &irf, 0.0, &first, &second, tau_phase)
                .expect("two lifetimes");
            assert!((t1 / tau1 - 1.0).abs() < 0.1, "{t1} vs {tau1}");
            assert!((t2 / tau2 - 1.0).abs() < 0.1, "{t2} vs {tau2}");
        }
    }

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
