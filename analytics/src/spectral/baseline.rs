//! Baseline removal: a straight line through the spectrum's edges, or asymmetric least squares.
//!
//! FWHM "on a baseline-corrected peak" is what the optimizer needs, and an offset or a sloped
//! background otherwise inflates the scipy-style width. AsLS (Eilers & Boelens 2005) follows
//! pybaselines' `asls` step for step (weights start at 1, `p` above / `1 - p` below, stop when
//! the relative weight change drops under `tol`); its pentadiagonal system is solved by a
//! banded LDL^T factorisation in O(n): no dense matrix, no allocation per spectrum.

use super::peaks::Sample;
use super::SpectralError;

/// Baseline removal method.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Baseline {
    /// Keep the signal as is.
    #[default]
    None,
    /// Subtract the straight line (in wavelength) through the mean of the first and of the
    /// last `edge_pixels` pixels.
    LinearEdge {
        /// Pixels averaged at each end (at least 1; capped at half the spectrum).
        edge_pixels: usize,
    },
    /// Subtract the asymmetric-least-squares baseline.
    Asls(AslsParams),
}

/// Parameters of asymmetric least squares, with pybaselines' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AslsParams {
    /// Smoothness penalty on the second differences (pybaselines `lam`, default 1e6).
    pub lambda: f64,
    /// Weight of points above the baseline, `1 - p` below (default 0.01).
    pub p: f64,
    /// Maximum number of reweighting iterations after the first solve (default 50).
    pub max_iter: usize,
    /// Stop when `||w_new - w|| / ||w||` is below this (default 1e-3).
    pub tol: f64,
}

impl Default for AslsParams {
    fn default() -> Self {
        Self {
            lambda: 1e6,
            p: 0.01,
            max_iter: 50,
            tol: 1e-3,
        }
    }
}

impl Baseline {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] for `edge_pixels == 0`, a non-positive or non-finite
    /// `lambda`, `p` outside (0, 1) or a negative/non-finite `tol`.
    pub fn validate(&self) -> Result<(), SpectralError> {
        match *self {
            Baseline::None => Ok(()),
            Baseline::LinearEdge { edge_pixels: 0 } => Err(SpectralError::InvalidOption {
                name: "baseline.edge_pixels",
                reason: "must be >= 1",
            }),
            Baseline::LinearEdge { .. } => Ok(()),
            Baseline::Asls(a) => {
                if !(a.lambda.is_finite() && a.lambda > 0.0) {
                    Err(SpectralError::InvalidOption {
                        name: "asls.lambda",
                        reason: "must be finite and > 0",
                    })
                } else if !(a.p > 0.0 && a.p < 1.0) {
                    Err(SpectralError::InvalidOption {
                        name: "asls.p",
                        reason: "must lie in (0, 1)",
                    })
                } else if !(a.tol.is_finite() && a.tol >= 0.0) {
                    Err(SpectralError::InvalidOption {
                        name: "asls.tol",
                        reason: "must be finite and >= 0",
                    })
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Writes into `out` the line (in wavelength) through the means of the first and last
/// `edge_pixels` points of `(axis_nm, y)`; a constant if both ends coincide.
///
/// # Errors
/// [`SpectralError::InputLength`] if the three slices differ in length or are empty,
/// [`SpectralError::InvalidOption`] if `edge_pixels == 0`.
///
/// ```
/// use flowdaq_analytics::spectral::baseline::linear_edge_baseline;
/// let x = [400.0, 401.0, 402.0, 403.0, 404.0];
/// let y = [1.0, 2.0, 10.0, 4.0, 5.0]; // peak on the line y = x - 399
/// let mut b = [0.0; 5];
/// linear_edge_baseline(&x, &y, 1, &mut b).unwrap();
/// assert_eq!(b, [1.0, 2.0, 3.0, 4.0, 5.0]);
/// ```
pub fn linear_edge_baseline<T: Sample>(
    axis_nm: &[f64],
    y: &[T],
    edge_pixels: usize,
    out: &mut [f64],
) -> Result<(), SpectralError> {
    let n = y.len();
    if n == 0 || axis_nm.len() != n || out.len() != n {
        return Err(SpectralError::InputLength {
            what: "linear baseline input",
            expected: axis_nm.len(),
            actual: n,
        });
    }
    if edge_pixels == 0 {
        return Err(SpectralError::InvalidOption {
            name: "baseline.edge_pixels",
            reason: "must be >= 1",
        });
    }
    let k = edge_pixels.min(n.div_ceil(2)).max(1);
    let mean = |r: std::ops::Range<usize>| {
        let len = r.len() as f64;
        let (sx, sy) = r.fold((0.0, 0.0), |(sx, sy), i| {
            (sx + axis_nm[i], sy + y[i].to_f64())
        });
        (sx / len, sy / len)
    };
    let (xl, yl) = mean(0..k);
    let (xr, yr) = mean(n - k..n);
    let slope = if xr != xl { (yr - yl) / (xr - xl) } else { 0.0 };
    for (o, &x) in out.iter_mut().zip(axis_nm) {
        *o = yl + slope * (x - xl);
    }
    Ok(())
}

/// Asymmetric least squares baseline fitter for spectra of one length (reusable buffers).
#[derive(Debug, Clone)]
pub struct AslsSolver {
    params: AslsParams,
    /// Bands of `lambda * D^T D` (second differences): main, first and second off-diagonals.
    pen0: Vec<f64>,
    pen1: Vec<f64>,
    pen2: Vec<f64>,
    w: Vec<f64>,
    d: Vec<f64>,
    l1: Vec<f64>,
    l2: Vec<f64>,
    yv: Vec<f64>,
}

impl AslsSolver {
    /// Prepares a fitter for spectra of `n` pixels.
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] for invalid parameters (see [`Baseline::validate`]).
    pub fn new(n: usize, params: AslsParams) -> Result<Self, SpectralError> {
        Baseline::Asls(params).validate()?;
        let (mut pen0, mut pen1, mut pen2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for r in 0..n.saturating_sub(2) {
            let d = [1.0, -2.0, 1.0];
            for a in 0..3 {
                pen0[r + a] += params.lambda * d[a] * d[a];
            }
            for a in 0..2 {
                pen1[r + a] += params.lambda * d[a] * d[a + 1];
            }
            pen2[r] += params.lambda * d[0] * d[2];
        }
        Ok(Self {
            params,
            pen0,
            pen1,
            pen2,
            w: vec![0.0; n],
            d: vec![0.0; n],
            l1: vec![0.0; n],
            l2: vec![0.0; n],
            yv: vec![0.0; n],
        })
    }

    /// Number of pixels this solver was built for.
    pub fn len(&self) -> usize {
        self.pen0.len()
    }

    /// True for a zero-length solver.
    pub fn is_empty(&self) -> bool {
        self.pen0.is_empty()
    }

    /// Fits the baseline of `y` into `out`; returns the number of solves performed.
    ///
    /// # Errors
    /// [`SpectralError::InputLength`] if `y` or `out` differ from the solver's length.
    pub fn fit<T: Sample>(&mut self, y: &[T], out: &mut [f64]) -> Result<usize, SpectralError> {
        let n = self.len();
        if y.len() != n || out.len() != n {
            return Err(SpectralError::InputLength {
                what: "asls input",
                expected: n,
                actual: y.len(),
            });
        }
        for (v, &x) in self.yv.iter_mut().zip(y) {
            *v = x.to_f64();
        }
        self.w.fill(1.0);
        let p = self.params.p;
        let mut solves = 0;
        for _ in 0..=self.params.max_iter {
            self.solve(out);
            solves += 1;
            // relative_difference(old, new) = ||new - old|| / max(||old||, tiny)
            let (mut num, mut den) = (0.0, 0.0);
            for ((w, &y), &z) in self.w.iter_mut().zip(&self.yv).zip(out.iter()) {
                let nw = if y > z { p } else { 1.0 - p };
                num += (nw - *w) * (nw - *w);
                den += *w * *w;
                *w = nw;
            }
            if num.sqrt() / den.sqrt().max(f64::MIN_POSITIVE) < self.params.tol {
                break;
            }
        }
        Ok(solves)
    }

    /// Solves `(W + lambda D^T D) z = W y` by banded LDL^T.
    fn solve(&mut self, z: &mut [f64]) {
        let n = self.len();
        let (d, l1, l2, w) = (&mut self.d, &mut self.l1, &mut self.l2, &self.w);
        for i in 0..n {
            let a_ii = w[i] + self.pen0[i];
            let li2 = if i >= 2 {
                self.pen2[i - 2] / d[i - 2]
            } else {
                0.0
            };
            let li1 = if i >= 1 {
                let corr = if i >= 2 {
                    li2 * l1[i - 1] * d[i - 2]
                } else {
                    0.0
                };
                (self.pen1[i - 1] - corr) / d[i - 1]
            } else {
                0.0
            };
            let mut di = a_ii;
            if i >= 1 {
                di -= li1 * li1 * d[i - 1];
            }
            if i >= 2 {
                di -= li2 * li2 * d[i - 2];
            }
            l1[i] = li1;
            l2[i] = li2;
            d[i] = di;
            let mut zi = w[i] * self.yv[i];
            if i >= 1 {
                zi -= li1 * z[i - 1];
            }
            if i >= 2 {
                zi -= li2 * z[i - 2];
            }
            z[i] = zi;
        }
        for (zi, di) in z.iter_mut().zip(d.iter()) {
            *zi /= di;
        }
        for i in (0..n).rev() {
            let mut xi = z[i];
            if i + 1 < n {
                xi -= l1[i + 1] * z[i + 1];
            }
            if i + 2 < n {
                xi -= l2[i + 2] * z[i + 2];
            }
            z[i] = xi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense reference: builds the full matrix and solves by Gaussian elimination.
    #[allow(clippy::needless_range_loop)]
    fn dense_solve(w: &[f64], y: &[f64], lambda: f64) -> Vec<f64> {
        let n = y.len();
        let mut a = vec![vec![0.0; n + 1]; n];
        for r in 0..n.saturating_sub(2) {
            let d = [1.0, -2.0, 1.0];
            for i in 0..3 {
                for j in 0..3 {
                    a[r + i][r + j] += lambda * d[i] * d[j];
                }
            }
        }
        for i in 0..n {
            a[i][i] += w[i];
            a[i][n] = w[i] * y[i];
        }
        for c in 0..n {
            for r in c + 1..n {
                let f = a[r][c] / a[c][c];
                for k in c..=n {
                    a[r][k] -= f * a[c][k];
                }
            }
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| a[i][k] * x[k]).sum();
            x[i] = (a[i][n] - s) / a[i][i];
        }
        x
    }

    #[test]
    fn banded_solve_matches_dense() {
        for n in [1usize, 2, 3, 4, 5, 17, 60] {
            let y: Vec<f64> = (0..n)
                .map(|i| (i as f64 * 0.7).sin() * 3.0 + i as f64)
                .collect();
            let mut s = AslsSolver::new(
                n,
                AslsParams {
                    lambda: 50.0,
                    max_iter: 0,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut z = vec![0.0; n];
            s.fit(&y, &mut z).unwrap();
            let want = dense_solve(&vec![1.0; n], &y, 50.0);
            for (a, b) in z.iter().zip(&want) {
                assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "n={n} {a} {b}");
            }
        }
    }

    #[test]
    fn asls_recovers_a_smooth_background_under_a_peak() {
        let n = 500;
        let bg = |i: usize| 100.0 + 0.1 * i as f64 + 20.0 * (i as f64 / 150.0).sin();
        let y: Vec<f64> = (0..n)
            .map(|i| bg(i) + 500.0 * (-0.5 * ((i as f64 - 250.0) / 8.0).powi(2)).exp())
            .collect();
        let mut s = AslsSolver::new(
            n,
            AslsParams {
                lambda: 1e5,
                p: 0.001,
                ..Default::default()
            },
        )
        .unwrap();
        let mut z = vec![0.0; n];
        let solves = s.fit(&y, &mut z).unwrap();
        assert!(solves > 1 && solves <= 51);
        // Away from the peak the baseline follows the background to within a couple of counts.
        for i in (0..200).chain(300..n) {
            assert!((z[i] - bg(i)).abs() < 3.0, "i={i} {} {}", z[i], bg(i));
        }
        // Under the peak it stays near the background, far below the peak top.
        assert!((z[250] - bg(250)).abs() < 10.0);
    }

    #[test]
    fn validation() {
        assert!(AslsSolver::new(
            10,
            AslsParams {
                p: 1.0,
                ..Default::default()
            }
        )
        .is_err());
        assert!(AslsSolver::new(
            10,
            AslsParams {
                lambda: 0.0,
                ..Default::default()
            }
        )
        .is_err());
        assert!(AslsSolver::new(
            10,
            AslsParams {
                tol: f64::NAN,
                ..Default::default()
            }
        )
        .is_err());
        assert!(Baseline::LinearEdge { edge_pixels: 0 }.validate().is_err());
        let mut s = AslsSolver::new(10, AslsParams::default()).unwrap();
        assert!(s.fit(&[0.0f32; 9], &mut [0.0; 10]).is_err());
    }
}
