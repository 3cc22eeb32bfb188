//! AVX2 versions of the per-pixel work for Float32 spectra: the chunk summary pass (the hot loop
//! of every kernel) and the short searches the peak, width and base walks make in a chunk.
//!
//! Autovectorisation of the portable lane code in `scan.rs` spills to the stack; the pass keeps
//! a chunk's four vectors in registers and reduces eight chunks at a time. Same results as the
//! portable code for minima, maxima, finiteness and every search (exact comparisons, done in
//! f64 where the scalar code compares in f64); the integrals are summed in f32 within a chunk
//! and in f64 across chunks, so they may differ from the portable pass in the last bits.

use std::arch::x86_64::*;

use super::scan::{CHUNK, SUPER};

/// The per-chunk and per-super-chunk output vectors of [`summarize_f32`].
pub(crate) struct SummaryOut<'a> {
    pub(crate) mins: &'a mut Vec<f32>,
    pub(crate) maxs: &'a mut Vec<f32>,
    pub(crate) wpos: &'a mut Vec<f64>,
    pub(crate) smin: &'a mut Vec<f32>,
    pub(crate) smax: &'a mut Vec<f32>,
    pub(crate) wcum: &'a mut Vec<f64>,
}

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

/// Horizontal reduction of eight vectors at once: lane `k` of the result is `op` over the
/// eight lanes of `v[k]`, combined in the same order as [`hmin`]/[`hmax`]/[`hsum`] (upper half
/// onto lower half, then lanes 2-3 onto 0-1, then lane 1 onto 0), so a sum is bit-identical to
/// [`hsum`] of each vector. About 3 instructions per vector instead of 7.
#[inline(always)]
unsafe fn reduce8(v: &[__m256; 8], op: impl Fn(__m256, __m256) -> __m256) -> __m256 {
    // lo/hi halves: s[j] = [op(lo(a), hi(a)), op(lo(b), hi(b))] for the pair (a, b) = v[2j..]
    let half = |a: __m256, b: __m256| {
        op(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    };
    let s = [
        half(v[0], v[1]),
        half(v[2], v[3]),
        half(v[4], v[5]),
        half(v[6], v[7]),
    ];
    // lanes 2-3 onto 0-1: per 128-bit half [x0 op x2, x1 op x3, y0 op y2, y1 op y3]
    let pair = |a: __m256, b: __m256| {
        op(
            _mm256_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm256_shuffle_ps::<0b11_10_11_10>(a, b),
        )
    };
    let (t0, t1) = (pair(s[0], s[1]), pair(s[2], s[3]));
    // lane 1 onto 0: halves hold [v0, v2, v4, v6] and [v1, v3, v5, v7]
    let r = op(
        _mm256_shuffle_ps::<0b10_00_10_00>(t0, t1),
        _mm256_shuffle_ps::<0b11_01_11_01>(t0, t1),
    );
    _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Prefetches the cache lines of `data[from..to]` (clamped to `data`; a hint, no effect on
/// results).
#[inline(always)]
unsafe fn prefetch_part(data: &[f32], from: usize, to: usize) {
    let to = to.min(data.len());
    let mut k = from;
    while k < to {
        // SAFETY: k < data.len(); prefetching never faults anyway.
        _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(k).cast::<i8>());
        k += 16;
    }
}

/// `(v0 w0 + v1 w1) + (v2 w2 + v3 w3)`: one chunk's weighted sum, lane-wise.
#[inline(always)]
unsafe fn weighted4(v: [__m256; 4], w: [__m256; 4]) -> __m256 {
    _mm256_add_ps(
        _mm256_add_ps(_mm256_mul_ps(v[0], w[0]), _mm256_mul_ps(v[1], w[1])),
        _mm256_add_ps(_mm256_mul_ps(v[2], w[2]), _mm256_mul_ps(v[3], w[3])),
    )
}

/// Per-chunk minima, maxima and (with weights) positive-part weighted sums of `y`, and the
/// minima and maxima of each run of [`SUPER`] chunks.
///
/// Works a super-chunk (8 chunks, 256 pixels) at a time so that the per-chunk horizontal
/// reductions are done eight at a time ([`reduce8`]) and stored as vectors.
///
/// # Safety
/// The CPU must support AVX2. Weights of the wrong length are ignored (no integrals).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn summarize_f32(
    y: &[f32],
    w: Option<&[f32]>,
    ahead: &[f32],
    out: SummaryOut<'_>,
) -> Totals {
    let SummaryOut {
        mins,
        maxs,
        wpos,
        smin,
        smax,
        wcum,
    } = out;
    let n = y.len();
    let full = n / CHUNK;
    let groups = full / SUPER;
    let w = w.filter(|w| w.len() == n);
    let zero = _mm256_setzero_ps();
    let mut unordered = zero;
    let (mut integral, mut integral_pos) = (0.0f64, 0.0f64);
    let mut signed_acc = _mm256_setzero_pd();
    let chunks = full + usize::from(full * CHUNK < n);
    mins.resize(chunks, 0.0);
    maxs.resize(chunks, 0.0);
    smin.clear();
    smax.clear();
    if w.is_some() {
        wpos.resize(chunks, 0.0);
        wcum.resize(chunks, 0.0);
    } else {
        wpos.clear();
        wcum.clear();
    }
    let p = y.as_ptr();
    // `ahead` is prefetched a super-chunk's share per super-chunk (the rest at the end).
    let share = ahead.len().div_ceil(groups.max(1)).next_multiple_of(16);
    for g in 0..groups {
        let c0 = g * SUPER;
        prefetch_part(ahead, g * share, (g + 1) * share);
        let (mut mn, mut mx, mut a) = ([zero; SUPER], [zero; SUPER], [zero; SUPER]);
        for k in 0..SUPER {
            // SAFETY: (c0 + k) * CHUNK + 32 <= full * CHUNK <= n.
            let b = p.add((c0 + k) * CHUNK);
            let (v0, v1, v2, v3) = (
                _mm256_loadu_ps(b),
                _mm256_loadu_ps(b.add(8)),
                _mm256_loadu_ps(b.add(16)),
                _mm256_loadu_ps(b.add(24)),
            );
            mn[k] = _mm256_min_ps(_mm256_min_ps(v0, v1), _mm256_min_ps(v2, v3));
            mx[k] = _mm256_max_ps(_mm256_max_ps(v0, v1), _mm256_max_ps(v2, v3));
            match w {
                // A NaN or infinite pixel makes the signed integral non-finite (checked below).
                Some(w) => {
                    // SAFETY: w.len() == n.
                    let wb = w.as_ptr().add((c0 + k) * CHUNK);
                    a[k] = weighted4(
                        [v0, v1, v2, v3],
                        [
                            _mm256_loadu_ps(wb),
                            _mm256_loadu_ps(wb.add(8)),
                            _mm256_loadu_ps(wb.add(16)),
                            _mm256_loadu_ps(wb.add(24)),
                        ],
                    );
                }
                None => {
                    let u = _mm256_or_ps(
                        _mm256_cmp_ps::<_CMP_UNORD_Q>(v0, v1),
                        _mm256_cmp_ps::<_CMP_UNORD_Q>(v2, v3),
                    );
                    unordered = _mm256_or_ps(unordered, u);
                }
            }
        }
        let rmin = reduce8(&mn, |a, b| _mm256_min_ps(a, b));
        let rmax = reduce8(&mx, |a, b| _mm256_max_ps(a, b));
        // SAFETY: c0 + SUPER <= full <= chunks == len of the resized vectors.
        _mm256_storeu_ps(mins.as_mut_ptr().add(c0), rmin);
        _mm256_storeu_ps(maxs.as_mut_ptr().add(c0), rmax);
        let gmin = hmin(rmin);
        smin.push(gmin);
        smax.push(hmax(rmax));
        if let Some(w) = w {
            let signed = reduce8(&a, |a, b| _mm256_add_ps(a, b));
            // Without negative pixels the positive part is the signal itself; otherwise the
            // super-chunk (now in L1) is weighed again with the negative pixels zeroed.
            let pos = if gmin >= 0.0 {
                signed
            } else {
                for (k, ak) in a.iter_mut().enumerate() {
                    let b = p.add((c0 + k) * CHUNK);
                    let wb = w.as_ptr().add((c0 + k) * CHUNK);
                    let v = |j: usize| _mm256_max_ps(_mm256_loadu_ps(b.add(j)), zero);
                    let wj = |j: usize| _mm256_loadu_ps(wb.add(j));
                    *ak = weighted4([v(0), v(8), v(16), v(24)], [wj(0), wj(8), wj(16), wj(24)]);
                }
                reduce8(&a, |a, b| _mm256_add_ps(a, b))
            };
            let wp = wpos.as_mut_ptr().add(c0);
            _mm256_storeu_pd(wp, _mm256_cvtps_pd(_mm256_castps256_ps128(pos)));
            _mm256_storeu_pd(wp.add(4), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(pos)));
            // The signed chunk sums in f64 lanes (summed up at the end); the positive ones in
            // chunk order, the order in which the quantile search accumulates them.
            signed_acc = _mm256_add_pd(
                signed_acc,
                _mm256_add_pd(
                    _mm256_cvtps_pd(_mm256_castps256_ps128(signed)),
                    _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(signed)),
                ),
            );
            let cp = wcum.as_mut_ptr().add(c0);
            for k in 0..SUPER {
                integral_pos += *wp.add(k);
                *cp.add(k) = integral_pos;
            }
        }
    }
    let mut lanes = [0.0f64; 4];
    _mm256_storeu_pd(lanes.as_mut_ptr(), signed_acc);
    integral += (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
    prefetch_part(ahead, groups * share, ahead.len());
    // Full chunks after the last whole super-chunk, one at a time.
    for c in groups * SUPER..full {
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
            let wv = [
                _mm256_loadu_ps(wb),
                _mm256_loadu_ps(wb.add(8)),
                _mm256_loadu_ps(wb.add(16)),
                _mm256_loadu_ps(wb.add(24)),
            ];
            integral += hsum(weighted4([v0, v1, v2, v3], wv)) as f64;
            let vp = [v0, v1, v2, v3].map(|v| _mm256_max_ps(v, zero));
            let sp = hsum(weighted4(vp, wv)) as f64;
            integral_pos += sp;
            *wpos.get_unchecked_mut(c) = sp;
            *wcum.get_unchecked_mut(c) = integral_pos;
        }
    }
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
            wcum[full] = integral_pos;
        }
    }
    // The super-chunk made of the chunks after the last whole one (if any).
    let rest = groups * SUPER;
    if rest < chunks {
        smin.push(mins[rest..].iter().copied().fold(f32::INFINITY, f32::min));
        smax.push(
            maxs[rest..]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max),
        );
    }
    if w.is_some() && !integral.is_finite() {
        // A NaN or infinite pixel, or merely an overflow of the f32 sums: decide exactly.
        finite = y.iter().all(|x| !x.is_nan());
    }
    let gmin = smin.iter().copied().fold(f32::INFINITY, f32::min);
    let gmax = smax.iter().copied().fold(f32::NEG_INFINITY, f32::max);
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

/// `!(h < x)` for 8 pixels at `b` (true for NaN), as a bit mask, compared in f64 like the
/// scalar code (`x as f64`), so the result is exact whatever `h` is.
#[inline(always)]
unsafe fn not_above8(b: *const f32, hv: __m256d) -> u32 {
    let x = _mm256_loadu_ps(b);
    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x));
    let mlo = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NLT_UQ>(hv, lo));
    let mhi = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_NLT_UQ>(hv, hi));
    (mlo | (mhi << 4)) as u32
}

/// [`super::scan::Sample::first_not_above`] for f32, 8 pixels per step.
///
/// # Safety
/// The CPU must support AVX2; `lo <= hi <= y.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn first_not_above_f32(y: &[f32], lo: usize, hi: usize, h: f64) -> Option<usize> {
    let hv = _mm256_set1_pd(h);
    first_lane(y, lo, hi, |b| not_above8(b, hv), |x| !(h < x as f64))
}

/// [`super::scan::Sample::last_not_above`] for f32, 8 pixels per step.
///
/// # Safety
/// The CPU must support AVX2; `lo <= hi <= y.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn last_not_above_f32(y: &[f32], lo: usize, hi: usize, h: f64) -> Option<usize> {
    let hv = _mm256_set1_pd(h);
    last_lane(y, lo, hi, |b| not_above8(b, hv), |x| !(h < x as f64))
}

/// Running maximum of 8 lanes: lane `j` is `max(x[0..=j])`, by three shift-and-combine steps
/// (the lanes shifted in from below repeat lane 0, which the maximum absorbs).
#[inline(always)]
unsafe fn running_max8(x: __m256) -> __m256 {
    let m1 = _mm256_max_ps(
        x,
        _mm256_permutevar8x32_ps(x, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6)),
    );
    let m2 = _mm256_max_ps(
        m1,
        _mm256_permutevar8x32_ps(m1, _mm256_setr_epi32(0, 0, 0, 1, 2, 3, 4, 5)),
    );
    _mm256_max_ps(
        m2,
        _mm256_permutevar8x32_ps(m2, _mm256_setr_epi32(0, 0, 0, 0, 0, 1, 2, 3)),
    )
}

/// [`super::scan::Sample::hysteresis_quiet`] for f32: 8 entries per step, each tested exactly
/// as the scalar step does (`hi - x >= p` rising, `x - lo >= p` falling, in f64) against the
/// running extreme up to it, so the first switching entry is found without stepping.
///
/// The differences are first taken in f32 against [`f32_floor`]`(p)`: rounding to nearest is
/// monotonic, so a difference of at least `p` never rounds below that threshold, and a block
/// that passes this test cannot switch. Only a block that fails it (a switch, or a difference
/// within rounding of `p`) is tested again in f64, exactly. The `skip` entries left out of the
/// first block take the running extreme's value, which neither moves it nor switches.
///
/// # Safety
/// The CPU must support AVX2; `ext.len() == test.len()`, `start <= end <= ext.len()`,
/// `end - start` a multiple of 8 and `skip < 8`.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn hysteresis_quiet_f32(
    ext: &[f32],
    test: &[f32],
    start: usize,
    end: usize,
    skip: usize,
    rising: bool,
    extreme: f32,
    p: f64,
) -> (usize, f32) {
    if std::ptr::eq(ext.as_ptr(), test.as_ptr()) {
        quiet_blocks::<true>(ext, test, start, end, skip, rising, extreme, p)
    } else {
        quiet_blocks::<false>(ext, test, start, end, skip, rising, extreme, p)
    }
}

/// The loop of [`hysteresis_quiet_f32`]; `SAME`: `ext` and `test` are one array (pixels), so
/// each block is loaded once. Blocks go two at a time while neither comes near a switch.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn quiet_blocks<const SAME: bool>(
    ext: &[f32],
    test: &[f32],
    start: usize,
    end: usize,
    skip: usize,
    rising: bool,
    extreme: f32,
    p: f64,
) -> (usize, f32) {
    let pv = _mm256_set1_pd(p);
    let p32 = _mm256_set1_ps(f32_floor(p));
    // Falling is rising on negated values (`x - lo >= p` is `-lo - -x >= p`; negation is
    // exact), so one branch-free loop serves both modes: the sign bit is flipped on the way
    // in and out.
    let flip_bits = if rising { 0u32 } else { 0x8000_0000 };
    let flip = _mm256_castsi256_ps(_mm256_set1_epi32(flip_bits as i32));
    let unflip = |v: f32| f32::from_bits(v.to_bits() ^ flip_bits);
    let last = _mm256_set1_epi32(7);
    // SAFETY (both closures): callers pass k + 8 <= end <= len of both arrays.
    let load = |src: &[f32], k: usize| _mm256_xor_ps(_mm256_loadu_ps(src.as_ptr().add(k)), flip);
    let pair = |k: usize| {
        let e = load(ext, k);
        (e, if SAME { e } else { load(test, k) })
    };
    // One block of entries `e` (moving the maximum) and `x` (tested) from `k`: the switching
    // entry and the running maximum before it, or None and the carry (the running maximum
    // before the block, in every lane) moved past the block.
    let block = |k: usize, e: __m256, x: __m256, carry: &mut __m256| {
        // The block's own running maximum does not wait for the carry, which joins last (one
        // max per block on the loop-carried path).
        let own = running_max8(e);
        let run = _mm256_max_ps(own, *carry);
        let near = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_sub_ps(run, x), p32);
        if _mm256_movemask_ps(near) != 0 {
            let lo = _mm256_sub_pd(
                _mm256_cvtps_pd(_mm256_castps256_ps128(run)),
                _mm256_cvtps_pd(_mm256_castps256_ps128(x)),
            );
            let hi = _mm256_sub_pd(
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(run)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)),
            );
            let switch = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(lo, pv))
                | (_mm256_movemask_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(hi, pv)) << 4);
            if switch != 0 {
                // The running maximum before entry j: the carry joined with the block's own
                // maximum up to j - 1 (lane 0: the carry alone).
                let j = switch.trailing_zeros() as i32;
                let before = _mm256_permutevar8x32_ps(run, _mm256_set1_epi32((j - 1).max(0)));
                let before = if j == 0 {
                    _mm256_cvtss_f32(*carry)
                } else {
                    _mm256_cvtss_f32(before)
                };
                return Some((k + j as usize, unflip(before)));
            }
        }
        *carry = _mm256_max_ps(*carry, _mm256_permutevar8x32_ps(own, last));
        None
    };
    let mut carry = _mm256_set1_ps(unflip(extreme));
    let mut k = start;
    if k < end {
        // Lanes below `skip` of the first block are replaced by the carry.
        let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(skip as i32 - 1),
        ));
        let (e, x) = pair(k);
        let (e, x) = (
            _mm256_blendv_ps(carry, e, keep),
            _mm256_blendv_ps(carry, x, keep),
        );
        if let Some(found) = block(k, e, x, &mut carry) {
            return found;
        }
        k += 8;
    }
    if (end - k) % 16 == 8 {
        let (e, x) = pair(k);
        if let Some(found) = block(k, e, x, &mut carry) {
            return found;
        }
        k += 8;
    }
    while k < end {
        // Two blocks: the second's carry is the first's last running maximum.
        let ((e1, x1), (e2, x2)) = (pair(k), pair(k + 8));
        let (own1, own2) = (running_max8(e1), running_max8(e2));
        let mid = _mm256_max_ps(carry, _mm256_permutevar8x32_ps(own1, last));
        let d1 = _mm256_sub_ps(_mm256_max_ps(own1, carry), x1);
        let d2 = _mm256_sub_ps(_mm256_max_ps(own2, mid), x2);
        let near = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_GE_OQ>(d1, p32),
            _mm256_cmp_ps::<_CMP_GE_OQ>(d2, p32),
        );
        if _mm256_movemask_ps(near) != 0 {
            // Near a switch: the exact test, one block at a time.
            if let Some(found) = block(k, e1, x1, &mut carry) {
                return found;
            }
            if let Some(found) = block(k + 8, e2, x2, &mut carry) {
                return found;
            }
        } else {
            carry = _mm256_max_ps(mid, _mm256_permutevar8x32_ps(own2, last));
        }
        k += 16;
    }
    (end, unflip(_mm256_cvtss_f32(carry)))
}

/// [`super::scan::Sample::quantile_cross`] for f32: 4 segments per step in f64 lanes, their
/// running sum taken within the step as a prefix sum (so added in another order than one by
/// one: the result can differ in the last bits).
///
/// # Safety
/// The CPU must support AVX2; `h.len() + 1 >= y.len()`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantile_cross_f32(
    y: &[f32],
    h: &[f64],
    from: usize,
    cum: f64,
    target: f64,
) -> Option<(usize, f64, f64)> {
    let n = y.len();
    let zero = _mm256_setzero_pd();
    let tv = _mm256_set1_pd(target);
    let mut run = _mm256_set1_pd(cum);
    let mut i = from;
    // Segments i..i+4 need y[i..i+5].
    while i + 5 <= n {
        // SAFETY: i + 5 <= n, and h has at least n - 1 >= i + 4 entries.
        let a = _mm256_cvtps_pd(_mm_loadu_ps(y.as_ptr().add(i)));
        let b = _mm256_cvtps_pd(_mm_loadu_ps(y.as_ptr().add(i + 1)));
        let seg = _mm256_mul_pd(
            _mm256_loadu_pd(h.as_ptr().add(i)),
            _mm256_add_pd(_mm256_max_pd(a, zero), _mm256_max_pd(b, zero)),
        );
        // Inclusive prefix sum over the 4 lanes: shift by one lane, then by two.
        let s1 = _mm256_add_pd(
            seg,
            _mm256_blend_pd::<0b0001>(_mm256_permute4x64_pd::<0b10_01_00_00>(seg), zero),
        );
        let s2 = _mm256_add_pd(s1, _mm256_permute2f128_pd::<0x08>(s1, s1));
        let incl = _mm256_add_pd(run, s2);
        let hit = _mm256_and_pd(
            _mm256_cmp_pd::<_CMP_GE_OQ>(incl, tv),
            _mm256_cmp_pd::<_CMP_GT_OQ>(seg, zero),
        );
        let m = _mm256_movemask_pd(hit);
        if m != 0 {
            let k = m.trailing_zeros() as usize;
            let (mut incl_l, mut seg_l) = ([0.0f64; 4], [0.0f64; 4]);
            _mm256_storeu_pd(incl_l.as_mut_ptr(), incl);
            _mm256_storeu_pd(seg_l.as_mut_ptr(), seg);
            return Some((i + k, incl_l[k] - seg_l[k], seg_l[k]));
        }
        run = _mm256_permute4x64_pd::<0b11_11_11_11>(incl);
        i += 4;
    }
    super::scan::quantile_cross_portable(y, h, i, _mm256_cvtsd_f64(run), target)
}

/// The largest f32 not above `p` (for `p > 0`; `f32::MAX` for larger `p`).
#[inline(always)]
pub(crate) fn f32_floor(p: f64) -> f32 {
    let t = p as f32;
    if (t as f64) > p {
        // `t` is positive here (p > 0 rounds to a non-negative f32), so one step down in the
        // bit pattern is the next smaller f32 (from infinity: f32::MAX).
        f32::from_bits(t.to_bits() - 1)
    } else {
        t
    }
}

/// Bits `from..to` of a lane mask (`from <= to <= 8`).
#[inline(always)]
fn lanes(from: usize, to: usize) -> u32 {
    ((1u32 << to) - 1) & !((1u32 << from) - 1)
}

/// Where the 1 to 7 pixels `y[lo..hi]` left over by a search lie in one 8-lane load: the load's
/// start `b <= lo` (clamped so the load ends inside `y`) and the mask of the wanted lanes, so
/// that the rest of a search costs one masked step instead of a loop of scalar steps. `None` if
/// `y` is shorter than 8.
#[inline(always)]
fn tail_window(len: usize, lo: usize, hi: usize) -> Option<(usize, u32)> {
    let b = lo.min(len.checked_sub(8)?);
    Some((b, lanes(lo - b, hi - b)))
}

/// For a search over at most 32 pixels: the start `a` of four 8-lane loads inside `y` that
/// cover `lo..hi` (at `lo`, or ending at the end of `y`) and the mask of the wanted
/// bits, so that the search is four tests and one bit scan, with no exit that depends on where
/// (or whether) it finds. `None` for longer ranges or a `y` shorter than 32.
#[inline(always)]
fn window32(len: usize, lo: usize, hi: usize) -> Option<(usize, u64)> {
    if hi - lo > 32 || len < 32 {
        return None;
    }
    let a = lo.min(len - 32);
    let bits = |k: usize| (1u64 << k) - 1;
    Some((a, bits(hi - a) & !bits(lo - a)))
}

/// `mask8` over the 32 pixels at `a`, as one bit mask (bit `k`: pixel `a + k`).
///
/// # Safety
/// `a + 32 <= y.len()`.
#[inline(always)]
unsafe fn mask32(y: &[f32], a: usize, mask8: &impl Fn(*const f32) -> u32) -> u64 {
    let p = y.as_ptr().add(a);
    (mask8(p) as u64)
        | ((mask8(p.add(8)) as u64) << 8)
        | ((mask8(p.add(16)) as u64) << 16)
        | ((mask8(p.add(24)) as u64) << 24)
}

/// The first `j` in `lo..hi` whose lane `mask8` sets (`mask8(p)` tests the 8 pixels at `p`):
/// up to 32 pixels in one window ([`window32`]), else 8 per step and the rest in one masked
/// load; `scalar` is the same test for one pixel, used only when `y` is shorter than 8.
///
/// # Safety
/// `lo <= hi <= y.len()`; `mask8` may read 8 pixels at any `p` it is given.
#[inline(always)]
unsafe fn first_lane(
    y: &[f32],
    lo: usize,
    hi: usize,
    mask8: impl Fn(*const f32) -> u32,
    scalar: impl Fn(f32) -> bool,
) -> Option<usize> {
    if let Some((a, want)) = window32(y.len(), lo, hi) {
        // SAFETY: window32 places a + 32 <= len.
        let m = mask32(y, a, &mask8) & want;
        return (m != 0).then(|| a + m.trailing_zeros() as usize);
    }
    let mut j = lo;
    while j + 8 <= hi {
        // SAFETY: j + 8 <= hi <= len.
        let m = mask8(y.as_ptr().add(j));
        if m != 0 {
            return Some(j + m.trailing_zeros() as usize);
        }
        j += 8;
    }
    if j == hi {
        return None;
    }
    match tail_window(y.len(), j, hi) {
        Some((b, want)) => {
            // SAFETY: b + 8 <= len.
            let m = mask8(y.as_ptr().add(b)) & want;
            (m != 0).then(|| b + m.trailing_zeros() as usize)
        }
        None => (j..hi).find(|&k| scalar(y[k])),
    }
}

/// The last `j` in `lo..hi` whose lane `mask8` sets (mirror of [`first_lane`]).
///
/// # Safety
/// As [`first_lane`].
#[inline(always)]
unsafe fn last_lane(
    y: &[f32],
    lo: usize,
    hi: usize,
    mask8: impl Fn(*const f32) -> u32,
    scalar: impl Fn(f32) -> bool,
) -> Option<usize> {
    if let Some((a, want)) = window32(y.len(), lo, hi) {
        // SAFETY: window32 places a + 32 <= len.
        let m = mask32(y, a, &mask8) & want;
        return (m != 0).then(|| a + 63 - m.leading_zeros() as usize);
    }
    let mut e = hi;
    while e >= lo + 8 {
        // SAFETY: lo <= e - 8 and e <= hi <= len.
        let m = mask8(y.as_ptr().add(e - 8));
        if m != 0 {
            return Some(e - 8 + (31 - m.leading_zeros()) as usize);
        }
        e -= 8;
    }
    if e == lo {
        return None;
    }
    match tail_window(y.len(), lo, e) {
        Some((b, want)) => {
            // SAFETY: b + 8 <= len.
            let m = mask8(y.as_ptr().add(b)) & want;
            (m != 0).then(|| b + (31 - m.leading_zeros()) as usize)
        }
        None => (lo..e).rev().find(|&k| scalar(y[k])),
    }
}

/// Bit mask of `x == v` over the 8 pixels at `b`.
#[inline(always)]
unsafe fn eq8(b: *const f32, vv: __m256) -> u32 {
    _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_loadu_ps(b), vv)) as u32
}

/// [`super::scan::Sample::find_eq`] for f32, 8 pixels per step.
///
/// # Safety
/// The CPU must support AVX2; `lo <= hi <= y.len()`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn find_eq_f32(y: &[f32], lo: usize, hi: usize, v: f32) -> Option<usize> {
    let vv = _mm256_set1_ps(v);
    first_lane(y, lo, hi, |b| eq8(b, vv), |x| x == v)
}

/// [`super::scan::Sample::rfind_eq`] for f32, 8 pixels per step.
///
/// # Safety
/// The CPU must support AVX2; `lo <= hi <= y.len()`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn rfind_eq_f32(y: &[f32], lo: usize, hi: usize, v: f32) -> Option<usize> {
    let vv = _mm256_set1_ps(v);
    last_lane(y, lo, hi, |b| eq8(b, vv), |x| x == v)
}

/// Bit mask of `!(x <= v)` (true for NaN) over the 8 pixels at `b`.
#[inline(always)]
unsafe fn above8(b: *const f32, vv: __m256) -> u32 {
    _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(_mm256_loadu_ps(b), vv)) as u32
}

/// [`super::scan::Sample::first_above`] for f32, 8 pixels per step.
///
/// # Safety
/// The CPU must support AVX2; `lo <= hi <= y.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn first_above_f32(y: &[f32], lo: usize, hi: usize, v: f32) -> Option<usize> {
    let vv = _mm256_set1_ps(v);
    first_lane(y, lo, hi, |b| above8(b, vv), |x| !(x <= v))
}

/// [`super::scan::Sample::last_above`] for f32, 8 pixels per step.
///
/// # Safety
/// The CPU must support AVX2; `lo <= hi <= y.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn last_above_f32(y: &[f32], lo: usize, hi: usize, v: f32) -> Option<usize> {
    let vv = _mm256_set1_ps(v);
    last_lane(y, lo, hi, |b| above8(b, vv), |x| !(x <= v))
}

/// [`super::scan::Sample::min_in`] for f32: up to 32 pixels as four loads (see [`window32`]),
/// longer ranges 8 pixels per step with the last step overlapping the one before it (harmless
/// for a minimum); in a slice shorter than 32, a short range is one load with the lanes outside
/// it replaced by `y[lo]`.
///
/// # Safety
/// The CPU must support AVX2; `lo < hi <= y.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn min_in_f32(y: &[f32], lo: usize, hi: usize) -> f32 {
    let first = _mm256_set1_ps(y[lo]);
    if let Some((a, want)) = window32(y.len(), lo, hi) {
        // Up to 32 pixels: four loads, the lanes outside the range replaced by `y[lo]`.
        let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let p = y.as_ptr().add(a);
        let part = |k: usize| {
            let inside = _mm256_cmpeq_epi32(
                _mm256_and_si256(_mm256_set1_epi32((want >> (8 * k)) as i32), bit),
                bit,
            );
            // SAFETY: a + 32 <= len.
            _mm256_blendv_ps(
                first,
                _mm256_loadu_ps(p.add(8 * k)),
                _mm256_castsi256_ps(inside),
            )
        };
        let m = _mm256_min_ps(
            _mm256_min_ps(part(0), part(1)),
            _mm256_min_ps(part(2), part(3)),
        );
        return hmin(m);
    }
    if hi - lo >= 8 {
        let mut m = first;
        let mut j = lo;
        while j + 8 <= hi {
            // SAFETY: j + 8 <= hi <= len.
            m = _mm256_min_ps(m, _mm256_loadu_ps(y.as_ptr().add(j)));
            j += 8;
        }
        if j < hi {
            // SAFETY: lo <= hi - 8 and hi <= len.
            m = _mm256_min_ps(m, _mm256_loadu_ps(y.as_ptr().add(hi - 8)));
        }
        return hmin(m);
    }
    match tail_window(y.len(), lo, hi) {
        Some((b, want)) => {
            let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            let inside =
                _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(want as i32), bit), bit);
            // SAFETY: b + 8 <= len.
            let x = _mm256_loadu_ps(y.as_ptr().add(b));
            hmin(_mm256_blendv_ps(first, x, _mm256_castsi256_ps(inside)))
        }
        None => y[lo + 1..hi]
            .iter()
            .fold(y[lo], |a, &x| if x < a { x } else { a }),
    }
}

#[cfg(test)]
mod tests {
    use super::f32_floor;
    use crate::spectral::scan::{quantile_cross_portable, Sample};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn searches_agree_with_one_by_one_definitions() {
        // f32 takes the 8-lane searches (AVX2 where available), whose last 1-7 pixels are one
        // masked load placed inside the slice; every range of short and long slices, with
        // repeated values so equality and ties occur in every lane.
        let mut rng = StdRng::seed_from_u64(17);
        for trial in 0..400 {
            let n = [1, 3, 7, 8, 9, 15, 16, 17, 40, 71][trial % 10];
            let y: Vec<f32> = (0..n).map(|_| rng.random_range(0..5) as f32).collect();
            for lo in 0..=n {
                for hi in lo..=n {
                    let v = rng.random_range(0..5) as f32;
                    let h = v as f64 - 0.5;
                    let r = lo..hi;
                    let case = format!("n={n} {lo}..{hi} v={v} y={y:?}");
                    assert_eq!(
                        f32::first_above(&y, lo, hi, v),
                        r.clone().find(|&j| y[j] > v),
                        "first_above {case}"
                    );
                    assert_eq!(
                        f32::last_above(&y, lo, hi, v),
                        r.clone().rev().find(|&j| y[j] > v),
                        "last_above {case}"
                    );
                    assert_eq!(
                        f32::find_eq(&y, lo, hi, v),
                        r.clone().find(|&j| y[j] == v),
                        "find_eq {case}"
                    );
                    assert_eq!(
                        f32::rfind_eq(&y, lo, hi, v),
                        r.clone().rev().find(|&j| y[j] == v),
                        "rfind_eq {case}"
                    );
                    let not_above = |j: &usize| y[*j] as f64 <= h;
                    assert_eq!(
                        f32::first_not_above(&y, lo, hi, h),
                        r.clone().find(not_above),
                        "first_not_above {case}"
                    );
                    assert_eq!(
                        f32::last_not_above(&y, lo, hi, h),
                        r.clone().rev().find(not_above),
                        "last_not_above {case}"
                    );
                    if lo < hi {
                        let min = y[r.clone()].iter().copied().fold(f32::INFINITY, f32::min);
                        assert_eq!(f32::min_in(&y, lo, hi), min, "min_in {case}");
                    }
                }
            }
        }
    }

    #[test]
    fn quantile_cross_agrees_with_the_sequential_sum() {
        // Whatever the CPU, f32 spectra take Sample::quantile_cross (AVX2 where available);
        // it must find the segment the one-by-one sum finds, up to rounding of the sum.
        let mut rng = StdRng::seed_from_u64(9);
        for trial in 0..3000 {
            let n = rng.random_range(2..90);
            let y: Vec<f32> = (0..n)
                .map(|_| match trial % 3 {
                    0 => rng.random_range(-5.0f32..100.0),
                    1 => rng.random_range(0..3) as f32,
                    _ => rng.random_range(-1.0f32..1.0) * 1e30,
                })
                .collect();
            let h: Vec<f64> = (0..n).map(|_| rng.random_range(0.01..2.0)).collect();
            let from = rng.random_range(0..n);
            let cum = rng.random_range(0.0..10.0);
            let part = |v: f32| (v as f64).max(0.0);
            let total = cum
                + (from..n - 1)
                    .map(|i| h[i] * (part(y[i]) + part(y[i + 1])))
                    .sum::<f64>();
            // Targets at the start, inside and beyond the reach of the segments (not exactly
            // at the total, where the two orders of summation may disagree on reaching it).
            let inside = |f: f64| cum + f * (total - cum);
            for target in [
                cum,
                inside(1e-9),
                inside(0.25),
                inside(0.5),
                inside(0.9),
                2.0 * total + 1.0,
            ] {
                let want = quantile_cross_portable(&y, &h, from, cum, target);
                let got = <f32 as Sample>::quantile_cross(&y, &h, from, cum, target);
                let at = |r: Option<(usize, f64, f64)>| {
                    r.map(|(i, before, seg)| i as f64 + ((target - before) / seg).clamp(0.0, 1.0))
                };
                match (at(got), at(want)) {
                    (Some(a), Some(b)) => assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "trial {trial} target {target}: {a} vs {b}"
                    ),
                    (a, b) => assert_eq!(a, b, "trial {trial} target {target}"),
                }
            }
        }
    }

    #[test]
    fn f32_floor_is_the_largest_f32_not_above() {
        for p in [
            1.0,
            0.1,
            1.0 / 3.0,
            50.0,
            6.0e7 + 0.3,
            1e-40,
            1e300,
            f64::MIN_POSITIVE,
        ] {
            let t = f32_floor(p);
            assert!(t as f64 <= p, "{p}");
            let up = f32::from_bits(t.to_bits() + 1);
            assert!(up as f64 > p || t == f32::MAX, "{p}: {t} {up}");
        }
        assert_eq!(f32_floor(50.0), 50.0);
        assert_eq!(f32_floor(1e300), f32::MAX);
    }
}
