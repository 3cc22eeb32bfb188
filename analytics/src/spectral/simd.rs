//! AVX2 version of the chunk summary pass for Float32 spectra (the hot loop of every kernel).
//!
//! Autovectorisation of the portable lane code in `scan.rs` spills to the stack; this keeps the
//! four vectors of a 32-pixel chunk in registers. Same results as the portable pass for the
//! minima, maxima and finiteness (exact comparisons); the integrals are summed in f32 within a
//! chunk and in f64 across chunks, so they may differ from the portable pass in the last bits.

use std::arch::x86_64::*;

use super::scan::CHUNK;

/// Whole-spectrum results of [`summarize_f32`].
pub(crate) struct Totals {
    pub(crate) gmin: f32,
    pub(crate) gmax: f32,
    pub(crate) integral: f64,
    pub(crate) integral_pos: f64,
    pub(crate) finite: bool,
}

#[inline(always)]
unsafe fn hmin(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_add_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

/// Per-chunk minima, maxima and (with weights) positive-part weighted sums of `y`.
///
/// # Safety
/// The CPU must support AVX2. Weights of the wrong length are ignored (no integrals).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn summarize_f32(
    y: &[f32],
    w: Option<&[f32]>,
    mins: &mut Vec<f32>,
    maxs: &mut Vec<f32>,
    wpos: &mut Vec<f64>,
) -> Totals {
    let n = y.len();
    let full = n / CHUNK;
    let w = w.filter(|w| w.len() == n);
    let zero = _mm256_setzero_ps();
    let mut unordered = zero;
    let (mut integral, mut integral_pos) = (0.0f64, 0.0f64);
    // Signed integral: f32 lanes, flushed to f64 every 8 chunks (256 pixels).
    let mut acc = zero;
    let chunks = full + usize::from(full * CHUNK < n);
    mins.resize(chunks, 0.0);
    maxs.resize(chunks, 0.0);
    if w.is_some() {
        wpos.resize(chunks, 0.0);
    }
    let p = y.as_ptr();
    for c in 0..full {
        // SAFETY: c * CHUNK + 32 <= full * CHUNK <= n.
        let b = p.add(c * CHUNK);
        let (v0, v1, v2, v3) = (
            _mm256_loadu_ps(b),
            _mm256_loadu_ps(b.add(8)),
            _mm256_loadu_ps(b.add(16)),
            _mm256_loadu_ps(b.add(24)),
        );
        let mn = _mm256_min_ps(_mm256_min_ps(v0, v1), _mm256_min_ps(v2, v3));
        let mx = _mm256_max_ps(_mm256_max_ps(v0, v1), _mm256_max_ps(v2, v3));
        let u = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_UNORD_Q>(v0, v1),
            _mm256_cmp_ps::<_CMP_UNORD_Q>(v2, v3),
        );
        unordered = _mm256_or_ps(unordered, u);
        // SAFETY: c < chunks == len of the resized vectors.
        *mins.get_unchecked_mut(c) = hmin(mn);
        *maxs.get_unchecked_mut(c) = hmax(mx);
        if let Some(w) = w {
            // SAFETY: w.len() == n.
            let wb = w.as_ptr().add(c * CHUNK);
            let (w0, w1, w2, w3) = (
                _mm256_loadu_ps(wb),
                _mm256_loadu_ps(wb.add(8)),
                _mm256_loadu_ps(wb.add(16)),
                _mm256_loadu_ps(wb.add(24)),
            );
            acc = _mm256_add_ps(
                acc,
                _mm256_add_ps(
                    _mm256_add_ps(_mm256_mul_ps(v0, w0), _mm256_mul_ps(v1, w1)),
                    _mm256_add_ps(_mm256_mul_ps(v2, w2), _mm256_mul_ps(v3, w3)),
                ),
            );
            let q = _mm256_add_ps(
                _mm256_add_ps(
                    _mm256_mul_ps(_mm256_max_ps(v0, zero), w0),
                    _mm256_mul_ps(_mm256_max_ps(v1, zero), w1),
                ),
                _mm256_add_ps(
                    _mm256_mul_ps(_mm256_max_ps(v2, zero), w2),
                    _mm256_mul_ps(_mm256_max_ps(v3, zero), w3),
                ),
            );
            let sp = hsum(q) as f64;
            integral_pos += sp;
            *wpos.get_unchecked_mut(c) = sp;
            if c % 8 == 7 {
                integral += hsum(acc) as f64;
                acc = zero;
            }
        }
    }
    integral += hsum(acc) as f64;
    let mut finite = _mm256_movemask_ps(unordered) == 0;
    // Tail chunk (fewer than CHUNK pixels), scalar.
    if full * CHUNK < n {
        let tail = &y[full * CHUNK..];
        let (mut mn, mut mx) = (tail[0], tail[0]);
        let (mut a, mut q) = (0.0f64, 0.0f64);
        for (k, &x) in tail.iter().enumerate() {
            finite &= !x.is_nan();
            mn = if x < mn { x } else { mn };
            mx = if x > mx { x } else { mx };
            if let Some(w) = w {
                let wk = w[full * CHUNK + k] as f64;
                a += wk * x as f64;
                q += wk * if x > 0.0 { x as f64 } else { 0.0 };
            }
        }
        mins[full] = mn;
        maxs[full] = mx;
        if w.is_some() {
            integral += a;
            integral_pos += q;
            wpos[full] = q;
        }
    }
    let gmin = mins.iter().copied().fold(f32::INFINITY, f32::min);
    let gmax = maxs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    finite &= gmin.is_finite() && gmax.is_finite();
    Totals {
        gmin,
        gmax,
        integral,
        integral_pos,
        finite,
    }
}

/// [`super::scan::Sample::block_stats`] for f32: min, max, sum of increases, sum of decreases
/// of `y[start..end]`, differences taken from `y[start - 1]`.
///
/// # Safety
/// The CPU must support AVX2; `1 <= start`, `end <= y.len()`, `(end - start) % 8 == 0`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn block_stats_f32(y: &[f32], start: usize, end: usize) -> (f32, f32, f64, f64) {
    let zero = _mm256_setzero_ps();
    let p = y.as_ptr();
    let (mut mn, mut mx) = (_mm256_set1_ps(y[start]), _mm256_set1_ps(y[start]));
    let (mut up, mut down) = (zero, zero);
    let mut j = start;
    while j < end {
        // SAFETY: start >= 1 and j + 8 <= end <= len.
        let v = _mm256_loadu_ps(p.add(j));
        let prev = _mm256_loadu_ps(p.add(j - 1));
        mn = _mm256_min_ps(mn, v);
        mx = _mm256_max_ps(mx, v);
        up = _mm256_add_ps(up, _mm256_max_ps(_mm256_sub_ps(v, prev), zero));
        down = _mm256_add_ps(down, _mm256_max_ps(_mm256_sub_ps(prev, v), zero));
        j += 8;
    }
    (hmin(mn), hmax(mx), hsum(up) as f64, hsum(down) as f64)
}
