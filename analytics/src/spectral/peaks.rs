//! Peaks with prominence, with exactly the results of scipy's `find_peaks(x, prominence=p)`.
//!
//! Same definitions as `scipy.signal._peak_finding_utils` (local maxima incl. plateaus with the
//! floor midpoint, edges excluded; prominence from the lowest point between the peak and the
//! nearest higher sample on each side, ties resolved toward the peak), but found in about one
//! pass: a hysteresis scan over chunk summaries proposes candidates, each is then measured
//! exactly. Never quadratic: many candidates switch to a linear monotonic-stack computation.

use super::scan::{Summary, CHUNK, SUPER};
use super::SpectralError;

pub use super::scan::Sample;

/// Above this many candidates the prominence walks give way to the O(n) stack computation.
const WALK_LIMIT: usize = 32;

/// One peak: a local maximum and its prominence data (as `scipy.signal.peak_prominences`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Pixel index (the floor midpoint of a flat top, like scipy).
    pub index: usize,
    /// Sample value at `index`.
    pub height: f64,
    /// Height above the peak's lowest contour line.
    pub prominence: f64,
    /// Pixel of the lowest point between the peak and the nearest higher sample on the left.
    pub left_base: usize,
    /// Pixel of the lowest point between the peak and the nearest higher sample on the right.
    pub right_base: usize,
}

/// Reusable buffers for [`find_peaks`] (create once, use for any number of spectra).
#[derive(Debug, Default)]
pub struct PeakScratch<T> {
    pub(crate) summary: Summary<T>,
    pub(crate) work: PeakWork<T>,
    pub(crate) peaks: Vec<Peak>,
}

impl<T: Sample> PeakScratch<T> {
    /// Empty scratch buffers.
    pub fn new() -> Self {
        Self {
            summary: Summary::default(),
            work: PeakWork::default(),
            peaks: Vec::new(),
        }
    }
}

/// Buffers of the peak search proper.
#[derive(Debug, Default)]
pub(crate) struct PeakWork<T> {
    segments: Vec<(usize, usize, T)>,
    candidates: Vec<usize>,
    stack: Vec<(usize, T, usize)>,
    left: Vec<(T, usize)>,
    right: Vec<(T, usize)>,
}

/// Finds every local maximum of `y` whose prominence is at least `min_prominence`.
///
/// Returns the peaks in pixel order; index, prominence and bases are identical to
/// `scipy.signal.find_peaks(y, prominence=min_prominence)` followed by `peak_prominences`.
///
/// # Errors
/// [`SpectralError::InvalidOption`] unless `min_prominence` is finite and positive;
/// [`SpectralError::NonFiniteValues`] if `y` holds NaN or infinity.
///
/// ```
/// use flowdaq_analytics::spectral::{find_peaks, PeakScratch};
/// let y = [0.0f32, 1.0, 0.5, 3.0, 3.0, 0.0, 2.0, 1.9, 2.2, 0.0];
/// let mut scratch = PeakScratch::new();
/// let peaks = find_peaks(&y, 1.0, &mut scratch).unwrap();
/// let idx: Vec<usize> = peaks.iter().map(|p| p.index).collect();
/// assert_eq!(idx, vec![3, 8]); // plateau 3..=4 -> 3; the 2.0 at 6 has prominence 0.1
/// assert_eq!(peaks[0].prominence, 3.0);
/// ```
pub fn find_peaks<'s, T: Sample>(
    y: &[T],
    min_prominence: f64,
    scratch: &'s mut PeakScratch<T>,
) -> Result<&'s [Peak], SpectralError> {
    if !(min_prominence.is_finite() && min_prominence > 0.0) {
        return Err(SpectralError::InvalidOption {
            name: "min_prominence",
            reason: "must be finite and positive",
        });
    }
    scratch.summary.compute(y, None);
    if !scratch.summary.finite {
        return Err(SpectralError::NonFiniteValues);
    }
    find_peaks_summarized(
        y,
        min_prominence,
        &scratch.summary,
        &mut scratch.work,
        &mut scratch.peaks,
    );
    Ok(&scratch.peaks)
}

/// [`find_peaks`] on a spectrum already summarised (finite values, `p > 0` checked by caller).
#[inline(always)]
pub(crate) fn find_peaks_summarized<T: Sample>(
    y: &[T],
    p: f64,
    s: &Summary<T>,
    work: &mut PeakWork<T>,
    out: &mut Vec<Peak>,
) {
    out.clear();
    if y.len() < 3 {
        return;
    }
    hysteresis_segments(y, s, p, &mut work.segments);
    candidates(y, s, &work.segments, &mut work.candidates);
    let cands = &work.candidates;
    work.left.clear();
    work.right.clear();
    if cands.len() > WALK_LIMIT {
        stack_bases_left(y, cands, &mut work.stack, &mut work.left);
        stack_bases_right(y, cands, &mut work.stack, &mut work.right);
    } else {
        for &i in cands {
            work.left.push(walk_left(y, s, i));
            work.right.push(walk_right(y, s, i));
        }
    }
    for (k, &i) in cands.iter().enumerate() {
        let (lmin, lbase) = work.left[k];
        let (rmin, rbase) = work.right[k];
        let v = y[i].to_f64();
        let base = if lmin > rmin { lmin } else { rmin };
        let prominence = v - base.to_f64();
        if p <= prominence {
            out.push(Peak {
                index: i,
                height: v,
                prominence,
                left_base: lbase,
                right_base: rbase,
            });
        }
    }
}

/// Hysteresis scan: closed intervals in which the signal rose by `p` above the running minimum
/// and later fell by `p` below the running maximum. Every peak with prominence >= `p` lies in
/// one, and equals its maximum (the proof is in the test module's doc).
#[inline(always)]
fn hysteresis_segments<T: Sample>(
    y: &[T],
    s: &Summary<T>,
    p: f64,
    out: &mut Vec<(usize, usize, T)>,
) {
    out.clear();
    let mut st = Hysteresis {
        rising: false,
        lo: y[0],
        hi: y[0],
        start: 0,
    };
    let chunks = s.min.len();
    let mut next = 0;
    while next < chunks {
        let c = next;
        next += 1;
        // A chunk is tested alone first (on a flank every chunk is eventful); after a quiet
        // one the vector scan looks for the next eventful chunk 8 at a time.
        if !st.skip(s.min[c], s.max[c], p) {
            next = st.flank(y, s, c, p, out);
            continue;
        }
        if next == chunks {
            break;
        }
        match st.quiet_chunks(s, next, p) {
            Some(e) if e < chunks => next = st.flank(y, s, e, p, out),
            Some(_) => break,
            // Without the vector chunk scan: 8 chunks at once on baselines, then one by one.
            None => {
                if next.is_multiple_of(SUPER)
                    && st.skip(s.smin[next / SUPER], s.smax[next / SUPER], p)
                {
                    next = (next + SUPER).min(chunks);
                }
            }
        }
    }
}

/// Pixels per block inside an eventful chunk.
const SUB: usize = 8;

/// State of the hysteresis scan.
struct Hysteresis<T> {
    rising: bool,
    lo: T,
    hi: T,
    start: usize,
}

impl<T: Sample> Hysteresis<T> {
    /// True (and the running extreme updated) if no sample with values in `[min, max]` can
    /// switch the mode; then only the running extreme moves. Exact: `a - x` is monotonic in `x`
    /// under rounding.
    #[inline(always)]
    fn skip(&mut self, min: T, max: T, p: f64) -> bool {
        if self.rising {
            let top = if max > self.hi { max } else { self.hi };
            if !(top.to_f64() - min.to_f64() >= p) {
                self.hi = top;
                return true;
            }
        } else {
            let bottom = if min < self.lo { min } else { self.lo };
            if !(max.to_f64() - bottom.to_f64() >= p) {
                self.lo = bottom;
                return true;
            }
        }
        false
    }

    /// Scans chunk `c`, in which a sample may switch the mode, and returns the next chunk to
    /// test. With the exact block scan, the whole chunks after it that span `p` themselves
    /// (the rest of a flank, whose chunk tests would fail too) go into the same scan.
    #[inline(always)]
    fn flank(
        &mut self,
        y: &[T],
        s: &Summary<T>,
        c: usize,
        p: f64,
        out: &mut Vec<(usize, usize, T)>,
    ) -> usize {
        let whole = y.len() / CHUNK;
        if c < whole {
            let mut e = c + 1;
            while e < whole && s.max[e].to_f64() - s.min[e].to_f64() >= p {
                e += 1;
            }
            if self.quiet_scan(y, c * CHUNK, e * CHUNK, p, out) {
                return e;
            }
        }
        self.eventful_chunk(y, c, p, out);
        c + 1
    }

    /// Scans chunk `c`, in which a sample may switch the mode, without the exact block scan:
    /// flank tests on blocks and stepping through the rest.
    #[inline(always)]
    fn eventful_chunk(&mut self, y: &[T], c: usize, p: f64, out: &mut Vec<(usize, usize, T)>) {
        let (cs, end) = (c * CHUNK, ((c + 1) * CHUNK).min(y.len()));
        // A flank usually runs one way: try that first, then look at it in blocks of 8 with
        // both tests, and step through what remains.
        if end - cs == CHUNK && cs > 0 {
            let (mn, mx, up, down) = T::block_stats(y, cs, end);
            if self.skip_one_way(mn, mx, up, down, p) {
                return;
            }
        }
        let mut k = cs;
        while k < end {
            let e = (k + SUB).min(end);
            let skipped = if e - k == SUB && k > 0 {
                let (mn, mx, up, down) = T::block_stats(y, k, e);
                self.skip(mn, mx, p) || self.skip_one_way(mn, mx, up, down, p)
            } else {
                false
            };
            if !skipped {
                for (j, &x) in y[k..e].iter().enumerate() {
                    self.step(x, k + j, p, out);
                }
            }
            k = e;
        }
    }

    /// Skips the whole chunks from `from` on that cannot switch the mode (the [`Self::skip`]
    /// test, 8 chunks per step with [`Sample::hysteresis_quiet`] over the chunk extremes) and
    /// returns the first that might, or the number of chunks; the running extreme moves over
    /// the skipped ones. `None` (nothing done) if the type has no such scan or the chunks
    /// from `from` on do not fill whole blocks of 8 counted back from the end.
    #[inline(always)]
    fn quiet_chunks(&mut self, s: &Summary<T>, from: usize, p: f64) -> Option<usize> {
        let chunks = s.min.len();
        // Blocks end at the last chunk; the first one starts up to 7 chunks before `from`.
        let skip = (SUB - (chunks - from) % SUB) % SUB;
        let start = from.checked_sub(skip)?;
        let (ext, test, extreme) = if self.rising {
            (&s.max, &s.min, self.hi)
        } else {
            (&s.min, &s.max, self.lo)
        };
        let (stop, moved) =
            T::hysteresis_quiet(ext, test, start, chunks, skip, self.rising, extreme, p)?;
        if self.rising {
            self.hi = moved;
        } else {
            self.lo = moved;
        }
        Some(stop)
    }

    /// Test for steep flanks, where a block spans more than `p` but runs one way. Rising, a
    /// fall of the running maximum to a sample is either from the maximum before the block
    /// (at most `hi - min`) or from a sample inside it (at most the sum of the block's
    /// successive decrements, `down`); falling, the mirror with `up`. The sums come with a
    /// relative margin far above their rounding error, so a skip is always exact.
    #[inline(always)]
    fn skip_one_way(&mut self, min: T, max: T, up: f64, down: f64, p: f64) -> bool {
        let limit = p * (1.0 - 1e-5);
        if self.rising {
            if self.hi.to_f64() - min.to_f64() < limit && down < limit {
                self.hi = if max > self.hi { max } else { self.hi };
                return true;
            }
        } else if max.to_f64() - self.lo.to_f64() < limit && up < limit {
            self.lo = if min < self.lo { min } else { self.lo };
            return true;
        }
        false
    }

    /// Scans the whole chunks `y[cs..end]` with [`Sample::hysteresis_quiet`] (exact: each
    /// sample is tested against the running extreme up to it), which stops at each pixel that
    /// switches the mode; the switch is made here and the scan goes on after that pixel. False
    /// (nothing done) if the type has no such scan.
    #[inline(always)]
    fn quiet_scan(
        &mut self,
        y: &[T],
        cs: usize,
        end: usize,
        p: f64,
        out: &mut Vec<(usize, usize, T)>,
    ) -> bool {
        let (mut k, mut skip) = (cs, 0);
        loop {
            let extreme = if self.rising { self.hi } else { self.lo };
            let Some((stop, ext)) =
                T::hysteresis_quiet(y, y, k, end, skip, self.rising, extreme, p)
            else {
                return false;
            };
            if stop >= end {
                if self.rising {
                    self.hi = ext;
                } else {
                    self.lo = ext;
                }
                return true;
            }
            let x = y[stop];
            if self.rising {
                out.push((self.start, stop, ext));
                self.rising = false;
                self.lo = x;
            } else {
                self.rising = true;
                self.hi = x;
                self.start = stop;
            }
            // Resume in the same 8-pixel block after the switching pixel.
            let next = stop + 1;
            k = next - (next - cs) % SUB;
            skip = next - k;
        }
    }

    /// One sample of the scan; closes a segment `(start, k, max)` on a fall of `p`.
    #[inline(always)]
    fn step(&mut self, x: T, k: usize, p: f64, out: &mut Vec<(usize, usize, T)>) {
        if self.rising {
            if x > self.hi {
                self.hi = x;
            } else if self.hi.to_f64() - x.to_f64() >= p {
                out.push((self.start, k, self.hi));
                self.rising = false;
                self.lo = x;
            }
        } else if x < self.lo {
            self.lo = x;
        } else if x.to_f64() - self.lo.to_f64() >= p {
            self.rising = true;
            self.hi = x;
            self.start = k;
        }
    }
}

/// scipy local maxima (plateau midpoints) that equal their segment's maximum.
#[inline(always)]
fn candidates<T: Sample>(
    y: &[T],
    s: &Summary<T>,
    segments: &[(usize, usize, T)],
    out: &mut Vec<usize>,
) {
    out.clear();
    let n = y.len();
    for &(start, end, hv) in segments {
        let mut cursor = start;
        for c in start / CHUNK..end.div_ceil(CHUNK) {
            // The chunk may extend beyond the segment, so only a smaller maximum rules it out.
            if s.max[c] < hv {
                continue;
            }
            let from = (c * CHUNK).max(cursor);
            let to = ((c + 1) * CHUNK).min(end);
            let mut j = from;
            while j < to {
                match T::find_eq(y, j, to, hv) {
                    Some(k) => j = k,
                    None => break,
                }
                let mut a = j;
                while a > 0 && y[a - 1] == hv {
                    a -= 1;
                }
                let mut b = j;
                while b + 1 < n && y[b + 1] == hv {
                    b += 1;
                }
                if a >= 1 && y[a - 1] < hv && b + 1 < n && y[b + 1] < hv {
                    out.push((a + b) / 2);
                }
                j = b + 1;
                cursor = j;
            }
        }
    }
}

/// The smaller of two samples (finite).
#[inline(always)]
fn min2<T: Sample>(a: T, b: T) -> T {
    if b < a {
        b
    } else {
        a
    }
}

/// scipy's left base walk from peak `i`: back over the samples `<= y[i]` to the nearest one
/// above it, the minimum met and its occurrence nearest the peak (scipy lowers its minimum
/// only on a strictly smaller sample). Done as a few vector searches rather than a branch per
/// chunk: where the walk stops (the peak's chunk, else the nearest chunk whose maximum exceeds
/// the peak, then the pixel in it), the minima of the three parts walked (the peak's chunk up
/// to the peak, the whole chunks, the stopping chunk after its stop) and the nearest
/// occurrence of the smallest.
#[inline(always)]
fn walk_left<T: Sample>(y: &[T], s: &Summary<T>, i: usize) -> (T, usize) {
    let v = y[i];
    let ci = i / CHUNK;
    let c0 = ci * CHUNK;
    // Nothing stops the walk of the spectrum's maximum (the main peak, usually).
    let highest = !(v < s.gmax);
    if let Some(k) = (!highest).then(|| T::last_above(y, c0, i, v)).flatten() {
        let m = T::min_in(y, k + 1, i + 1);
        return (m, T::rfind_eq(y, k + 1, i + 1, m).unwrap_or(i));
    }
    let near = T::min_in(y, c0, i + 1);
    let stop = (!highest)
        .then(|| T::last_above(&s.max, 0, ci, v))
        .flatten();
    let whole = stop.map_or(0, |c| c + 1)..ci;
    let mid = if whole.is_empty() {
        v
    } else {
        T::min_in(&s.min, whole.start, whole.end)
    };
    // The stopping chunk from just after its last sample above `v` (it has one).
    let far = stop.map_or(0..0, |c| {
        let end = (c + 1) * CHUNK;
        T::last_above(y, c * CHUNK, end, v).map_or(end, |k| k + 1)..end
    });
    let tail = if far.is_empty() {
        v
    } else {
        T::min_in(y, far.start, far.end)
    };
    let best = min2(min2(near, mid), tail);
    let base = if near == best {
        T::rfind_eq(y, c0, i + 1, best)
    } else if mid == best {
        T::rfind_eq(&s.min, whole.start, whole.end, best)
            .and_then(|c| T::rfind_eq(y, c * CHUNK, (c + 1) * CHUNK, best))
    } else {
        T::rfind_eq(y, far.start, far.end, best)
    };
    (best, base.unwrap_or(i))
}

/// scipy's right base walk (mirror of [`walk_left`]; among equal minima the first one met).
#[inline(always)]
fn walk_right<T: Sample>(y: &[T], s: &Summary<T>, i: usize) -> (T, usize) {
    let n = y.len();
    let v = y[i];
    let ci = i / CHUNK;
    let e0 = ((ci + 1) * CHUNK).min(n);
    let highest = !(v < s.gmax);
    if let Some(k) = (!highest)
        .then(|| T::first_above(y, i + 1, e0, v))
        .flatten()
    {
        let m = T::min_in(y, i, k);
        return (m, T::find_eq(y, i, k, m).unwrap_or(i));
    }
    let near = T::min_in(y, i, e0);
    let chunks = s.max.len();
    let stop = (!highest)
        .then(|| T::first_above(&s.max, ci + 1, chunks, v))
        .flatten();
    let whole = ci + 1..stop.unwrap_or(chunks);
    let mid = if whole.is_empty() {
        v
    } else {
        T::min_in(&s.min, whole.start, whole.end)
    };
    // The stopping chunk up to its first sample above `v` (it has one).
    let far = stop.map_or(0..0, |c| {
        let start = c * CHUNK;
        start..T::first_above(y, start, ((c + 1) * CHUNK).min(n), v).unwrap_or(start)
    });
    let tail = if far.is_empty() {
        v
    } else {
        T::min_in(y, far.start, far.end)
    };
    let best = min2(min2(near, mid), tail);
    let base = if near == best {
        T::find_eq(y, i, e0, best)
    } else if mid == best {
        T::find_eq(&s.min, whole.start, whole.end, best)
            .and_then(|c| T::find_eq(y, c * CHUNK, ((c + 1) * CHUNK).min(n), best))
    } else {
        T::find_eq(y, far.start, far.end, best)
    };
    (best, base.unwrap_or(i))
}

/// Left bases of all `cands` (sorted) in O(n): a stack of strictly decreasing samples, each
/// carrying the minimum (and its rightmost position) of the run it closed.
fn stack_bases_left<T: Sample>(
    y: &[T],
    cands: &[usize],
    stack: &mut Vec<(usize, T, usize)>,
    out: &mut Vec<(T, usize)>,
) {
    stack.clear();
    let mut next = 0;
    for (i, &x) in y.iter().enumerate() {
        let (mut m, mut arg) = (x, i);
        while let Some(&(t, tmin, targ)) = stack.last() {
            if !(y[t] <= x) {
                break;
            }
            if tmin < m {
                m = tmin;
                arg = targ;
            }
            stack.pop();
        }
        if next < cands.len() && cands[next] == i {
            out.push((m, arg));
            next += 1;
        }
        stack.push((i, m, arg));
    }
}

/// Mirror of [`stack_bases_left`] walking from the right end.
fn stack_bases_right<T: Sample>(
    y: &[T],
    cands: &[usize],
    stack: &mut Vec<(usize, T, usize)>,
    out: &mut Vec<(T, usize)>,
) {
    stack.clear();
    let start = out.len();
    let mut next = cands.len();
    for i in (0..y.len()).rev() {
        let x = y[i];
        let (mut m, mut arg) = (x, i);
        while let Some(&(t, tmin, targ)) = stack.last() {
            if !(y[t] <= x) {
                break;
            }
            if tmin < m {
                m = tmin;
                arg = targ;
            }
            stack.pop();
        }
        if next > 0 && cands[next - 1] == i {
            out.push((m, arg));
            next -= 1;
        }
        stack.push((i, m, arg));
    }
    out[start..].reverse();
}

#[cfg(test)]
mod tests {
    //! Why the hysteresis candidates are complete: let peak `i` (value `v`) have prominence of
    //! at least p. Its left base `k` has `v - y[k]` of at least p, with no sample above `v` in
    //! `(k, i]`. Whatever the scan state at `k`, by `i` it is rising with running maximum `v`
    //! (a fall after `k` leaves a running minimum at most `v - p`, so `y[i]` rises again). On
    //! the right, the first `m` with `v - y[m]` of at least p comes before any sample above
    //! `v`, so the segment closes at `m` with maximum `v`. Chunk skipping is exact because
    //! `a - x` is monotonic in `x` under rounding, so a chunk's min and max decide whether any
    //! of its samples is an event.
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Line-by-line port of scipy's `_local_maxima_1d` + `_peak_prominences` + selection.
    pub(crate) fn scipy_find_peaks(x: &[f64], pmin: f64) -> Vec<Peak> {
        let n = x.len();
        let mut out = Vec::new();
        if n < 3 {
            return out;
        }
        let mut i = 1;
        let i_max = n - 1;
        while i < i_max {
            if x[i - 1] < x[i] {
                let mut i_ahead = i + 1;
                while i_ahead < i_max && x[i_ahead] == x[i] {
                    i_ahead += 1;
                }
                if x[i_ahead] < x[i] {
                    let peak = (i + i_ahead - 1) / 2;
                    let mut j = peak as isize;
                    let (mut lmin, mut lb) = (x[peak], peak);
                    while j >= 0 && x[j as usize] <= x[peak] {
                        if x[j as usize] < lmin {
                            lmin = x[j as usize];
                            lb = j as usize;
                        }
                        j -= 1;
                    }
                    let mut j = peak;
                    let (mut rmin, mut rb) = (x[peak], peak);
                    while j < n && x[j] <= x[peak] {
                        if x[j] < rmin {
                            rmin = x[j];
                            rb = j;
                        }
                        j += 1;
                    }
                    let prom = x[peak] - lmin.max(rmin);
                    if pmin <= prom {
                        out.push(Peak {
                            index: peak,
                            height: x[peak],
                            prominence: prom,
                            left_base: lb,
                            right_base: rb,
                        });
                    }
                    i = i_ahead;
                }
            }
            i += 1;
        }
        out
    }

    fn check(y: &[f32], p: f64, scratch: &mut PeakScratch<f32>) {
        let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        let want = scipy_find_peaks(&y64, p);
        let got = find_peaks(y, p, scratch).unwrap().to_vec();
        if got != want {
            let n = y.len();
            let small = if n <= 40 {
                format!("{y:?}")
            } else {
                String::from("(long)")
            };
            panic!(
                "p={p} n={n} y={small}\n got={:?}\nwant={:?}",
                &got[..got.len().min(6)],
                &want[..want.len().min(6)]
            );
        }
        // The f64 path must agree as well.
        let mut s64 = PeakScratch::<f64>::new();
        assert_eq!(find_peaks(&y64, p, &mut s64).unwrap(), &want[..]);
    }

    #[test]
    fn docs_example_edge_cases() {
        // scipy's own example: peak 5 has bases 2 and 6 and prominence 3.
        let x = [0.0f64, 1.0, 0.0, 3.0, 1.0, 3.0, 0.0, 4.0, 0.0];
        let mut s = PeakScratch::new();
        let peaks = find_peaks(&x, 0.5, &mut s).unwrap();
        let p5 = peaks.iter().find(|p| p.index == 5).unwrap();
        assert_eq!((p5.prominence, p5.left_base, p5.right_base), (3.0, 2, 6));
        let idx: Vec<_> = peaks.iter().map(|p| p.index).collect();
        assert_eq!(idx, vec![1, 3, 5, 7]);
    }

    #[test]
    fn matches_scipy_port_on_random_integer_data() {
        // Integer counts make ties and plateaus common; small and large arrays exercise both
        // the walk path and the stack path; several p exercise the hysteresis.
        let mut rng = StdRng::seed_from_u64(7);
        let mut scratch = PeakScratch::new();
        for trial in 0..3000 {
            let n = match trial % 4 {
                0 => rng.random_range(0..8),
                1 => rng.random_range(8..70),
                2 => rng.random_range(70..300),
                _ => rng.random_range(300..3000),
            };
            let levels = rng.random_range(2..12);
            let y: Vec<f32> = (0..n).map(|_| rng.random_range(0..levels) as f32).collect();
            for p in [0.5, 1.0, 2.0, 3.5, 7.0] {
                check(&y, p, &mut scratch);
            }
        }
    }

    #[test]
    fn matches_scipy_port_on_peaks_in_noise() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut scratch = PeakScratch::new();
        for trial in 0..200 {
            let n = 100 + trial * 13;
            let c = rng.random_range(0.0..n as f64);
            let w = rng.random_range(2.0..40.0);
            let y: Vec<f32> = (0..n)
                .map(|i| {
                    let t = (i as f64 - c) / w;
                    (1000.0 * (-0.5 * t * t).exp()
                        + 50.0 * (0.01 * i as f64).sin()
                        + rng.random_range(-5.0..5.0)) as f32
                })
                .collect();
            // Several magnitudes exercise the rounding margins of the block tests.
            for scale in [1e-6f32, 1.0, 3.0e5] {
                let ys: Vec<f32> = y.iter().map(|v| v * scale).collect();
                for p in [1e-3, 3.0, 20.0, 200.0, 999.0] {
                    check(&ys, p * scale as f64, &mut scratch);
                }
            }
        }
    }

    #[test]
    fn stack_and_walk_agree_with_many_candidates() {
        // Nested peaks of decreasing height toward both ends: the worst case for walks.
        let n = 4001;
        let y: Vec<f32> = (0..n)
            .map(|i| {
                let d = (i as i64 - 2000).unsigned_abs() as f32;
                if i % 2 == 0 {
                    10_000.0 - d
                } else {
                    0.0
                }
            })
            .collect();
        let mut scratch = PeakScratch::new();
        check(&y, 1.0, &mut scratch);
        assert!(find_peaks(&y, 1.0, &mut scratch).unwrap().len() > 1900);
    }

    #[test]
    fn block_scans_match_the_per_sample_hysteresis() {
        // The chunk skips, the 8-pixel block scan and the stepping must close exactly the
        // segments that stepping through every sample closes, on ties (integers), flanks with
        // noise and every magnitude.
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = Summary::default();
        for trial in 0..2000 {
            let n = rng.random_range(3..700);
            let y: Vec<f32> = if trial % 2 == 0 {
                let levels = rng.random_range(2..12);
                (0..n).map(|_| rng.random_range(0..levels) as f32).collect()
            } else {
                let (c, w) = (rng.random_range(0.0..n as f64), rng.random_range(2.0..60.0));
                let scale = [1e-6f64, 1.0, 3.0e5][trial % 3];
                (0..n)
                    .map(|i| {
                        let t = (i as f64 - c) / w;
                        (scale * (1000.0 * (-0.5 * t * t).exp() + rng.random_range(-20.0..20.0)))
                            as f32
                    })
                    .collect()
            };
            let p = if trial % 2 == 0 {
                [0.5, 1.0, 2.0, 3.5, 7.0][trial % 5]
            } else {
                [3.0, 30.0, 200.0][trial % 3] * [1e-6, 1.0, 3.0e5][trial % 3]
            };
            assert_scan_matches_steps(&y, p, &mut s, &format!("trial {trial} n={n} p={p}"));
        }
    }

    /// The chunk- and block-level hysteresis scan closes exactly the segments that stepping
    /// through every sample closes.
    fn assert_scan_matches_steps(y: &[f32], p: f64, s: &mut Summary<f32>, case: &str) {
        let (mut got, mut want) = (Vec::new(), Vec::new());
        s.compute(y, None);
        hysteresis_segments(y, s, p, &mut got);
        let mut st = Hysteresis {
            rising: false,
            lo: y[0],
            hi: y[0],
            start: 0,
        };
        for (k, &x) in y.iter().enumerate() {
            st.step(x, k, p, &mut want);
        }
        assert_eq!(got, want, "{case}");
    }

    #[test]
    fn block_scans_are_exact_at_the_threshold() {
        // Thresholds equal to a difference that occurs in the data, and one f64 ulp either
        // side of it, on magnitudes where f32 differences round: the f32 pre-test of the block
        // scan must never skip a switch the exact f64 test makes.
        let mut rng = StdRng::seed_from_u64(5);
        let mut s = Summary::default();
        for trial in 0..600 {
            let n = rng.random_range(16..400);
            let base = [1.0e3f64, 3.7e6, 2.5e8][trial % 3];
            let step = base * 1e-3;
            let mut v = base;
            let y: Vec<f32> = (0..n)
                .map(|_| {
                    v += rng.random_range(-step..step);
                    v as f32
                })
                .collect();
            let (i, j) = (rng.random_range(0..n - 1), rng.random_range(1..n));
            let (i, j) = (i.min(j), i.max(j).max(i + 1));
            let d = (y[i] as f64 - y[j] as f64).abs().max(f64::MIN_POSITIVE);
            for p in [
                d,
                d.next_up(),
                d.next_down(),
                d * (1.0 + 1e-9),
                d * (1.0 - 1e-9),
            ] {
                if !(p > 0.0) {
                    continue;
                }
                assert_scan_matches_steps(&y, p, &mut s, &format!("trial {trial} n={n} p={p}"));
            }
        }
    }

    #[test]
    fn rejects_bad_arguments() {
        let mut s = PeakScratch::<f32>::new();
        assert!(find_peaks(&[0.0, 1.0, 0.0], 0.0, &mut s).is_err());
        assert!(find_peaks(&[0.0, 1.0, 0.0], f64::NAN, &mut s).is_err());
        assert!(matches!(
            find_peaks(&[0.0, f32::NAN, 0.0], 1.0, &mut s),
            Err(SpectralError::NonFiniteValues)
        ));
        assert!(find_peaks(&[], 1.0, &mut s).unwrap().is_empty());
        assert!(find_peaks(&[1.0], 1.0, &mut s).unwrap().is_empty());
    }
}
