//! The one vectorised pass over a spectrum's pixels that everything else leans on.
//!
//! It records, per chunk of [`CHUNK`] pixels (and per run of [`SUPER`] chunks), the minimum and
//! maximum, plus the trapezoid weighted sum of the positive part per chunk and the integrals.
//! Peak search, prominence and width walks and the quantile search skip whole chunks by these
//! summaries and touch pixels one by one only where something happens (a peak flank), which
//! keeps a 2048-pixel spectrum at about one pass over memory. Float32 input takes the AVX2 pass
//! in `simd.rs` when the CPU has it (and [`Sample`]'s searches inside a chunk go 8 pixels at a
//! time there); the portable pass uses fixed-width lane arrays.

use std::ops::{Add, Mul, Sub};

/// Pixels per chunk summary.
pub(crate) const CHUNK: usize = 32;
/// Chunks per super-chunk (256 pixels): a second, coarser level of min/max for long skips.
pub(crate) const SUPER: usize = 8;
const LANES: usize = 8;

/// A pixel value type the kernels accept: `f32` (raw spectra) or `f64` (processed spectra).
///
/// Comparisons are done in the native type (exactly like scipy, which only compares and
/// subtracts), arithmetic in `f64`.
pub trait Sample:
    Copy
    + PartialOrd
    + Default
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Send
    + Sync
    + 'static
{
    /// Zero of the type.
    const ZERO: Self;
    /// Lossless widening to `f64`.
    fn to_f64(self) -> f64;
    /// The slice as `f32` if `Self` is `f32` (selects the AVX2 summary pass).
    #[doc(hidden)]
    fn as_f32(y: &[Self]) -> Option<&[f32]> {
        let _ = y;
        None
    }

    /// The first `j` in `lo..hi` with `!(y[j] <= v)`, if any. Requires `lo <= hi <= len`.
    #[doc(hidden)]
    #[inline(always)]
    fn first_above(y: &[Self], lo: usize, hi: usize, v: Self) -> Option<usize> {
        (lo..hi).find(|&j| !(y[j] <= v))
    }

    /// The last `j` in `lo..hi` with `!(y[j] <= v)`, if any. Requires `lo <= hi <= len`.
    #[doc(hidden)]
    #[inline(always)]
    fn last_above(y: &[Self], lo: usize, hi: usize, v: Self) -> Option<usize> {
        (lo..hi).rev().find(|&j| !(y[j] <= v))
    }

    /// The minimum of `y[lo..hi]` (finite values). Requires `lo < hi <= len`.
    #[doc(hidden)]
    #[inline(always)]
    fn min_in(y: &[Self], lo: usize, hi: usize) -> Self {
        y[lo + 1..hi].iter().fold(y[lo], |m, &x| min_t(x, m))
    }

    /// The first `j` in `lo..hi` with `y[j] == v`, if any. Requires `lo <= hi <= len`.
    #[doc(hidden)]
    #[inline(always)]
    fn find_eq(y: &[Self], lo: usize, hi: usize, v: Self) -> Option<usize> {
        (lo..hi).find(|&j| y[j] == v)
    }

    /// The last `j` in `lo..hi` with `y[j] == v`, if any. Requires `lo <= hi <= len`.
    #[doc(hidden)]
    #[inline(always)]
    fn rfind_eq(y: &[Self], lo: usize, hi: usize, v: Self) -> Option<usize> {
        (lo..hi).rev().find(|&j| y[j] == v)
    }

    /// The first `j` in `lo..hi` with `!(h < y[j])` (compared in f64), if any: where a walk
    /// to the right that continues while the samples are above `h` stops.
    /// Requires `lo <= hi <= len`.
    #[doc(hidden)]
    #[inline(always)]
    fn first_not_above(y: &[Self], lo: usize, hi: usize, h: f64) -> Option<usize> {
        (lo..hi).find(|&j| !(h < y[j].to_f64()))
    }

    /// The last `j` in `lo..hi` with `!(h < y[j])` (compared in f64), if any: where a walk to
    /// the left that continues while the samples are above `h` stops.
    /// Requires `lo <= hi <= len`.
    #[doc(hidden)]
    #[inline(always)]
    fn last_not_above(y: &[Self], lo: usize, hi: usize, h: f64) -> Option<usize> {
        (lo..hi).rev().find(|&j| !(h < y[j].to_f64()))
    }

    /// Where the running sum of the trapezoid segments `h[i] * (max(y[i], 0) + max(y[i+1], 0))`
    /// for `i` from `from`, starting at `cum`, first reaches `target` on a positive segment:
    /// `(i, sum before segment i, segment i)`, or `None` if it never does. The running sum is
    /// sequential here; vectorised versions may add in another order (same result to rounding).
    /// Requires `h.len() + 1 >= y.len()`.
    #[doc(hidden)]
    #[inline(always)]
    fn quantile_cross(
        y: &[Self],
        h: &[f64],
        from: usize,
        cum: f64,
        target: f64,
    ) -> Option<(usize, f64, f64)> {
        quantile_cross_portable(y, h, from, cum, target)
    }

    /// The hysteresis scan of `peaks.rs` over `start..end` in blocks of 8, the first `skip`
    /// entries of the first block left out (scanned before), for as long as nothing switches
    /// the mode. Entry `j` moves the running extreme by `ext[j]` (`rising`: maximum, else
    /// minimum, starting from `extreme`) and switches if `test[j]` lies `p` or more beyond it
    /// (below it rising, above it falling). Pixels pass `y` twice; whole chunks pass their
    /// maxima and minima (rising `ext = max, test = min`, falling the reverse), which is the
    /// chunk skip test. Returns the first entry that would switch (or `end`) and the running
    /// extreme over the entries before it. `None` if this type has no such scan (the caller
    /// then tests one by one). Requires `ext` and `test` of equal length, `start <= end <=
    /// len` with `end - start` a multiple of 8, `skip < 8`, finite values and `p > 0`.
    #[doc(hidden)]
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn hysteresis_quiet(
        ext: &[Self],
        test: &[Self],
        start: usize,
        end: usize,
        skip: usize,
        rising: bool,
        extreme: Self,
        p: f64,
    ) -> Option<(usize, Self)> {
        let _ = (ext, test, start, end, skip, rising, extreme, p);
        None
    }

    /// Minimum, maximum, and the sums of successive increases and decreases of `y[start..end]`
    /// (the first difference taken from `y[start - 1]`). Requires `1 <= start < end <= len`.
    #[doc(hidden)]
    #[inline(always)]
    fn block_stats(y: &[Self], start: usize, end: usize) -> (Self, Self, f64, f64) {
        block_stats_portable(y, start, end)
    }
}

/// Portable [`Sample::quantile_cross`].
#[inline(always)]
pub(crate) fn quantile_cross_portable<T: Sample>(
    y: &[T],
    h: &[f64],
    from: usize,
    mut cum: f64,
    target: f64,
) -> Option<(usize, f64, f64)> {
    let pos = |v: f64| if v > 0.0 { v } else { 0.0 };
    for i in from..y.len().saturating_sub(1) {
        let seg = h[i] * (pos(y[i].to_f64()) + pos(y[i + 1].to_f64()));
        if seg > 0.0 && cum + seg >= target {
            return Some((i, cum, seg));
        }
        cum += seg;
    }
    None
}

/// Portable [`Sample::block_stats`] (differences and sums in f64).
#[inline(always)]
fn block_stats_portable<T: Sample>(y: &[T], start: usize, end: usize) -> (T, T, f64, f64) {
    let (mut mn, mut mx) = (y[start], y[start]);
    let (mut up, mut down) = (0.0f64, 0.0f64);
    let mut prev = y[start - 1].to_f64();
    for &x in &y[start..end] {
        mn = min_t(x, mn);
        mx = max_t(x, mx);
        let v = x.to_f64();
        let d = v - prev;
        if d > 0.0 {
            up += d;
        } else {
            down -= d;
        }
        prev = v;
    }
    (mn, mx, up, down)
}

impl Sample for f32 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn as_f32(y: &[Self]) -> Option<&[f32]> {
        Some(y)
    }

    #[inline(always)]
    fn block_stats(y: &[Self], start: usize, end: usize) -> (Self, Self, f64, f64) {
        #[cfg(target_arch = "x86_64")]
        if (end - start).is_multiple_of(8)
            && start >= 1
            && end <= y.len()
            && std::arch::is_x86_feature_detected!("avx2")
        {
            // SAFETY: AVX2 checked; 1 <= start, whole 8-lane groups up to end <= len.
            return unsafe { super::simd::block_stats_f32(y, start, end) };
        }
        block_stats_portable(y, start, end)
    }

    #[inline(always)]
    fn hysteresis_quiet(
        ext: &[Self],
        test: &[Self],
        start: usize,
        end: usize,
        skip: usize,
        rising: bool,
        extreme: Self,
        p: f64,
    ) -> Option<(usize, Self)> {
        #[cfg(target_arch = "x86_64")]
        if ext.len() == test.len()
            && start <= end
            && end <= ext.len()
            && (end - start).is_multiple_of(8)
            && skip < 8
            && std::arch::is_x86_feature_detected!("avx2")
        {
            // SAFETY: AVX2 checked; equal lengths, start <= end <= len, whole blocks, skip < 8.
            return Some(unsafe {
                super::simd::hysteresis_quiet_f32(ext, test, start, end, skip, rising, extreme, p)
            });
        }
        let _ = (ext, test, start, end, skip, rising, extreme, p);
        None
    }

    #[inline(always)]
    fn first_above(y: &[Self], lo: usize, hi: usize, v: Self) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if lo <= hi && hi <= y.len() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; lo <= hi <= len.
            return unsafe { super::simd::first_above_f32(y, lo, hi, v) };
        }
        (lo..hi).find(|&j| !(y[j] <= v))
    }

    #[inline(always)]
    fn last_above(y: &[Self], lo: usize, hi: usize, v: Self) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if lo <= hi && hi <= y.len() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; lo <= hi <= len.
            return unsafe { super::simd::last_above_f32(y, lo, hi, v) };
        }
        (lo..hi).rev().find(|&j| !(y[j] <= v))
    }

    #[inline(always)]
    fn min_in(y: &[Self], lo: usize, hi: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if lo < hi && hi <= y.len() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; lo < hi <= len.
            return unsafe { super::simd::min_in_f32(y, lo, hi) };
        }
        y[lo + 1..hi].iter().fold(y[lo], |m, &x| min_t(x, m))
    }

    #[inline(always)]
    fn find_eq(y: &[Self], lo: usize, hi: usize, v: Self) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if lo <= hi && hi <= y.len() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; lo <= hi <= len.
            return unsafe { super::simd::find_eq_f32(y, lo, hi, v) };
        }
        (lo..hi).find(|&j| y[j] == v)
    }

    #[inline(always)]
    fn rfind_eq(y: &[Self], lo: usize, hi: usize, v: Self) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if lo <= hi && hi <= y.len() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; lo <= hi <= len.
            return unsafe { super::simd::rfind_eq_f32(y, lo, hi, v) };
        }
        (lo..hi).rev().find(|&j| y[j] == v)
    }

    #[inline(always)]
    fn first_not_above(y: &[Self], lo: usize, hi: usize, h: f64) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if lo <= hi && hi <= y.len() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; lo <= hi <= len.
            return unsafe { super::simd::first_not_above_f32(y, lo, hi, h) };
        }
        (lo..hi).find(|&j| !(h < y[j] as f64))
    }

    #[inline(always)]
    fn last_not_above(y: &[Self], lo: usize, hi: usize, h: f64) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if lo <= hi && hi <= y.len() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; lo <= hi <= len.
            return unsafe { super::simd::last_not_above_f32(y, lo, hi, h) };
        }
        (lo..hi).rev().find(|&j| !(h < y[j] as f64))
    }

    #[inline(always)]
    fn quantile_cross(
        y: &[Self],
        h: &[f64],
        from: usize,
        cum: f64,
        target: f64,
    ) -> Option<(usize, f64, f64)> {
        #[cfg(target_arch = "x86_64")]
        if h.len() + 1 >= y.len() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked; h covers every segment of y.
            return unsafe { super::simd::quantile_cross_f32(y, h, from, cum, target) };
        }
        quantile_cross_portable(y, h, from, cum, target)
    }
}

impl Sample for f64 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

#[inline(always)]
fn min_t<T: Sample>(a: T, b: T) -> T {
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn max_t<T: Sample>(a: T, b: T) -> T {
    if a > b {
        a
    } else {
        b
    }
}

/// Trapezoid pixel weights `w[i] = h[i] + h[i-1]` (`h` the axis half-steps), so that
/// `sum(w * y)` is the trapezoid integral; kept in f64 and f32 (for the AVX2 pass).
#[derive(Debug, Default, Clone)]
pub(crate) struct Weights {
    pub(crate) w64: Vec<f64>,
    pub(crate) w32: Vec<f32>,
}

impl Weights {
    pub(crate) fn from_half_steps(h: &[f64]) -> Self {
        let w64: Vec<f64> = (0..h.len())
            .map(|i| h[i] + if i > 0 { h[i - 1] } else { 0.0 })
            .collect();
        let w32 = w64.iter().map(|&v| v as f32).collect();
        Self { w64, w32 }
    }
}

/// Per-chunk summaries of one spectrum (reused across spectra: no per-row allocation).
#[derive(Debug, Default)]
pub(crate) struct Summary<T> {
    /// Minimum of each chunk.
    pub(crate) min: Vec<T>,
    /// Maximum of each chunk.
    pub(crate) max: Vec<T>,
    /// `sum(w[i] * max(y[i], 0))` over each chunk (only when weights were given).
    pub(crate) wpos: Vec<f64>,
    /// Global minimum and maximum (meaningless if `!finite`).
    pub(crate) gmin: T,
    pub(crate) gmax: T,
    /// Trapezoid integral of the signal and of its positive part (when weights were given).
    pub(crate) integral: f64,
    pub(crate) integral_pos: f64,
    /// False if any pixel is NaN or infinite.
    pub(crate) finite: bool,
    /// Minimum and maximum of each run of [`SUPER`] chunks (the last run may be shorter).
    pub(crate) smin: Vec<T>,
    pub(crate) smax: Vec<T>,
    /// Running sum of `wpos` at the end of each chunk, added in chunk order from 0 in f64 (so
    /// bit-identical to a sequential walk over `wpos`; only when weights were given).
    pub(crate) wcum: Vec<f64>,
}

impl<T: Sample> Summary<T> {
    /// Summarises `y`. `weights` are the trapezoid pixel weights `w[i] = h[i] + h[i-1]` with
    /// `h` the half-steps of the axis (see [`super::axis::WavelengthAxis`]); `None` skips the
    /// integrals.
    #[inline(always)]
    pub(crate) fn compute(&mut self, y: &[T], weights: Option<&Weights>) {
        self.compute_ahead(y, weights, &[]);
    }

    /// [`Self::compute`], also asking the CPU to pull `ahead` (the next spectrum) into cache a
    /// little at a time as the pass goes: spread out like this the requests overlap with the
    /// work, where a burst of 128 line requests would stall the core until memory catches up.
    #[inline(always)]
    pub(crate) fn compute_ahead(&mut self, y: &[T], weights: Option<&Weights>, ahead: &[T]) {
        // Both passes size the vectors themselves (the AVX2 one without clearing first, so
        // that a batch of equal-length spectra never re-initialises them).
        #[cfg(target_arch = "x86_64")]
        if let (Some(y32), Some(s32)) = (
            T::as_f32(y),
            (self as &mut dyn std::any::Any).downcast_mut::<Summary<f32>>(),
        ) {
            if !y32.is_empty() && std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 checked above; the weights are as long as the axis, hence as `y`.
                let t = unsafe {
                    super::simd::summarize_f32(
                        y32,
                        weights.map(|w| &w.w32[..]),
                        T::as_f32(ahead).unwrap_or(&[]),
                        super::simd::SummaryOut {
                            mins: &mut s32.min,
                            maxs: &mut s32.max,
                            wpos: &mut s32.wpos,
                            smin: &mut s32.smin,
                            smax: &mut s32.smax,
                            wcum: &mut s32.wcum,
                        },
                    )
                };
                s32.gmin = t.gmin;
                s32.gmax = t.gmax;
                s32.integral = t.integral;
                s32.integral_pos = t.integral_pos;
                s32.finite = t.finite;
                return;
            }
        }
        super::output::prefetch(ahead);
        self.compute_portable(y, weights.map(|w| &w.w64[..]));
        self.summarize_supers();
    }

    /// Fills the super-chunk minima and maxima from the chunk ones.
    #[inline(always)]
    fn summarize_supers(&mut self) {
        self.smin.clear();
        self.smax.clear();
        for (mins, maxs) in self.min.chunks(SUPER).zip(self.max.chunks(SUPER)) {
            let (mut mn, mut mx) = (mins[0], maxs[0]);
            for (&a, &b) in mins.iter().zip(maxs) {
                mn = min_t(a, mn);
                mx = max_t(b, mx);
            }
            self.smin.push(mn);
            self.smax.push(mx);
        }
    }

    /// The portable pass (any CPU, any `T`).
    #[inline(always)]
    pub(crate) fn compute_portable(&mut self, y: &[T], weights: Option<&[f64]>) {
        let n = y.len();
        let chunks = n.div_ceil(CHUNK);
        self.min.clear();
        self.max.clear();
        self.wpos.clear();
        self.wcum.clear();
        self.integral = 0.0;
        self.integral_pos = 0.0;
        if n == 0 {
            self.finite = true;
            self.gmin = T::ZERO;
            self.gmax = T::ZERO;
            return;
        }
        let mut fin = [T::ZERO; LANES];
        let mut gmin = [y[0]; LANES];
        let mut gmax = [y[0]; LANES];
        let mut integral = [0.0f64; LANES];
        let mut integral_pos = [0.0f64; LANES];
        let mut running = 0.0f64;
        for c in 0..chunks {
            let s = c * CHUNK;
            let e = (s + CHUNK).min(n);
            let ys = &y[s..e];
            let mut mn = [ys[0]; LANES];
            let mut mx = [ys[0]; LANES];
            let mut acc = [0.0f64; LANES];
            let mut accp = [0.0f64; LANES];
            if ys.len() == CHUNK {
                for (g, x) in ys.chunks_exact(LANES).enumerate() {
                    for j in 0..LANES {
                        mn[j] = min_t(x[j], mn[j]);
                        mx[j] = max_t(x[j], mx[j]);
                        // x * 0 is 0 for finite values and NaN otherwise; NaN sticks in the sum.
                        fin[j] = fin[j] + x[j] * T::ZERO;
                    }
                    if let Some(w) = weights {
                        let w = &w[s + g * LANES..s + (g + 1) * LANES];
                        for j in 0..LANES {
                            let v = x[j].to_f64();
                            acc[j] += w[j] * v;
                            accp[j] += w[j] * if v > 0.0 { v } else { 0.0 };
                        }
                    }
                }
            } else {
                for (k, &x) in ys.iter().enumerate() {
                    let j = k % LANES;
                    mn[j] = min_t(x, mn[j]);
                    mx[j] = max_t(x, mx[j]);
                    fin[j] = fin[j] + x * T::ZERO;
                    if let Some(w) = weights {
                        let v = x.to_f64();
                        acc[j] += w[s + k] * v;
                        accp[j] += w[s + k] * if v > 0.0 { v } else { 0.0 };
                    }
                }
            }
            let (cmin, cmax) = (reduce_min(mn), reduce_max(mx));
            self.min.push(cmin);
            self.max.push(cmax);
            for j in 0..LANES {
                gmin[j] = min_t(cmin, gmin[j]);
                gmax[j] = max_t(cmax, gmax[j]);
            }
            if weights.is_some() {
                let (a, p) = (acc.iter().sum::<f64>(), accp.iter().sum::<f64>());
                self.wpos.push(p);
                running += p;
                self.wcum.push(running);
                integral[c % LANES] += a;
                integral_pos[c % LANES] += p;
            }
        }
        self.gmin = reduce_min(gmin);
        self.gmax = reduce_max(gmax);
        self.integral = integral.iter().sum();
        self.integral_pos = integral_pos.iter().sum();
        self.finite = fin.iter().all(|&f| f.to_f64() == 0.0);
    }
}

#[inline(always)]
fn reduce_min<T: Sample>(v: [T; LANES]) -> T {
    let mut m = v[0];
    for &x in &v[1..] {
        m = min_t(x, m);
    }
    m
}

#[inline(always)]
fn reduce_max<T: Sample>(v: [T; LANES]) -> T {
    let mut m = v[0];
    for &x in &v[1..] {
        m = max_t(x, m);
    }
    m
}
