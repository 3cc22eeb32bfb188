//! The one vectorised pass over a spectrum's pixels that everything else leans on.
//!
//! It records, per chunk of [`CHUNK`] pixels, the minimum, the maximum and the trapezoid
//! weighted sums of the signal and of its positive part. Peak search, prominence walks and the
//! quantile search then skip whole chunks by looking at these summaries and touch pixels one
//! by one only where something happens (a peak flank), which keeps a 2048-pixel spectrum at
//! about one pass over memory. Written with fixed-width lane arrays so LLVM emits SIMD.

use std::ops::{Add, Mul, Sub};

/// Pixels per chunk summary.
pub(crate) const CHUNK: usize = 32;
const LANES: usize = 8;

/// A pixel value type the kernels accept: `f32` (raw spectra) or `f64` (processed spectra).
///
/// Comparisons are done in the native type (exactly like scipy, which only compares and
/// subtracts), arithmetic in `f64`.
pub trait Sample:
    Copy + PartialOrd + Default + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Send + Sync + 'static
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
        let w64: Vec<f64> = (0..h.len()).map(|i| h[i] + if i > 0 { h[i - 1] } else { 0.0 }).collect();
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
}

impl<T: Sample> Summary<T> {
    /// Summarises `y`. `weights` are the trapezoid pixel weights `w[i] = h[i] + h[i-1]` with
    /// `h` the half-steps of the axis (see [`super::axis::WavelengthAxis`]); `None` skips the
    /// integrals.
    #[inline(always)]
    pub(crate) fn compute(&mut self, y: &[T], weights: Option<&Weights>) {
        self.min.clear();
        self.max.clear();
        self.wpos.clear();
        self.integral = 0.0;
        self.integral_pos = 0.0;
        #[cfg(target_arch = "x86_64")]
        if let (Some(y32), Some(s32)) = (T::as_f32(y), (self as &mut dyn std::any::Any).downcast_mut::<Summary<f32>>()) {
            if !y32.is_empty() && std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 checked above; the weights are as long as the axis, hence as `y`.
                let t = unsafe {
                    super::simd::summarize_f32(y32, weights.map(|w| &w.w32[..]), &mut s32.min, &mut s32.max, &mut s32.wpos)
                };
                s32.gmin = t.gmin;
                s32.gmax = t.gmax;
                s32.integral = t.integral;
                s32.integral_pos = t.integral_pos;
                s32.finite = t.finite;
                return;
            }
        }
        self.compute_portable(y, weights.map(|w| &w.w64[..]));
    }

    /// The portable pass (any CPU, any `T`).
    #[inline(always)]
    pub(crate) fn compute_portable(&mut self, y: &[T], weights: Option<&[f64]>) {
        let n = y.len();
        let chunks = n.div_ceil(CHUNK);
        self.min.clear();
        self.max.clear();
        self.wpos.clear();
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

