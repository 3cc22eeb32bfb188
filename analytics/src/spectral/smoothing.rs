//! Savitzky-Golay smoothing, matching `scipy.signal.savgol_filter(x, window, polyorder)`.
//!
//! Least-squares polynomial filters: the convolution weights for the centre and the edge
//! weights of scipy's default `mode="interp"` (a polynomial fitted to the first/last window and
//! evaluated there) are computed once per configuration, then applied to every spectrum
//! without allocation. Smoothing runs in pixel space, like scipy, whatever the axis spacing.

use super::peaks::Sample;
use super::SpectralError;

/// A Savitzky-Golay filter of odd `window` length and polynomial order `polyorder`.
#[derive(Debug, Clone)]
pub struct SavitzkyGolay {
    window: usize,
    polyorder: usize,
    /// Convolution weights of the window centre.
    center: Vec<f64>,
    /// Row `t` (t < half): weights giving the fitted value at position `t` of the first window.
    edge: Vec<f64>,
}

/// Largest polynomial order accepted (higher orders are numerically meaningless here).
const MAX_POLYORDER: usize = 10;

impl SavitzkyGolay {
    /// Builds the filter.
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] unless `window` is odd, `polyorder < window` and
    /// `polyorder <= 10`.
    ///
    /// ```
    /// use flowdaq_analytics::spectral::SavitzkyGolay;
    /// let sg = SavitzkyGolay::new(5, 2).unwrap();
    /// // A quadratic passes through a polyorder-2 filter unchanged, edges included.
    /// let y: Vec<f64> = (0..9).map(|i| (i * i) as f64).collect();
    /// let mut out = vec![0.0; 9];
    /// sg.apply(&y, &mut out).unwrap();
    /// assert!(out.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-9));
    /// ```
    pub fn new(window: usize, polyorder: usize) -> Result<Self, SpectralError> {
        if window.is_multiple_of(2) {
            return Err(SpectralError::InvalidOption {
                name: "savgol.window",
                reason: "must be odd",
            });
        }
        if polyorder >= window || polyorder > MAX_POLYORDER {
            return Err(SpectralError::InvalidOption {
                name: "savgol.polyorder",
                reason: "must be < window and <= 10",
            });
        }
        let half = window / 2;
        let mut center = vec![0.0; window];
        fit_weights(window, polyorder, half, &mut center);
        let mut edge = vec![0.0; half * window];
        for t in 0..half {
            fit_weights(
                window,
                polyorder,
                t,
                &mut edge[t * window..(t + 1) * window],
            );
        }
        Ok(Self {
            window,
            polyorder,
            center,
            edge,
        })
    }

    /// Window length (pixels).
    pub fn window(&self) -> usize {
        self.window
    }

    /// Polynomial order.
    pub fn polyorder(&self) -> usize {
        self.polyorder
    }

    /// Smooths `y` into `out`.
    ///
    /// # Errors
    /// [`SpectralError::InputLength`] if `out` differs in length from `y` or `y` is shorter than
    /// the window (scipy's `mode="interp"` has the same requirement).
    #[inline]
    pub fn apply<T: Sample>(&self, y: &[T], out: &mut [f64]) -> Result<(), SpectralError> {
        let n = y.len();
        if out.len() != n {
            return Err(SpectralError::InputLength {
                what: "savgol output",
                expected: n,
                actual: out.len(),
            });
        }
        if n < self.window {
            return Err(SpectralError::InputLength {
                what: "savgol input",
                expected: self.window,
                actual: n,
            });
        }
        let (w, half) = (self.window, self.window / 2);
        // Interior: out[i] = sum_k c[k] y[i - half + k], accumulated coefficient by coefficient
        // so the loop over i vectorises (same summation order per pixel as a direct dot).
        let interior = &mut out[half..n - half];
        interior.fill(0.0);
        for (k, &c) in self.center.iter().enumerate() {
            for (o, &v) in interior.iter_mut().zip(&y[k..]) {
                *o += c * v.to_f64();
            }
        }
        for t in 0..half {
            let coef = &self.edge[t * w..(t + 1) * w];
            out[t] = coef
                .iter()
                .zip(&y[..w])
                .map(|(&c, &v)| c * v.to_f64())
                .sum();
            // Mirror: the last window reversed is a first window.
            out[n - 1 - t] = coef
                .iter()
                .enumerate()
                .map(|(k, &c)| c * y[n - 1 - k].to_f64())
                .sum();
        }
        Ok(())
    }
}

/// Weights `c` such that `sum(c[k] * y[k])` is the value at position `t0` of the least-squares
/// polynomial of order `order` through `y[0..window]`.
fn fit_weights(window: usize, order: usize, t0: usize, out: &mut [f64]) {
    let half = (window / 2).max(1) as f64;
    let u = |k: usize| (k as f64 - (window / 2) as f64) / half;
    let m = order + 1;
    // Normal equations M beta = a(t0), M[a][b] = sum_k u_k^(a+b).
    let mut mat = [[0.0f64; MAX_POLYORDER + 2]; MAX_POLYORDER + 1];
    for (a, row) in mat.iter_mut().enumerate().take(m) {
        for (b, cell) in row.iter_mut().enumerate().take(m) {
            *cell = (0..window).map(|k| u(k).powi((a + b) as i32)).sum();
        }
        row[m] = u(t0).powi(a as i32);
    }
    // Gaussian elimination with partial pivoting on the augmented (m x m+1) matrix.
    for col in 0..m {
        let piv = (col..m)
            .max_by(|&i, &j| mat[i][col].abs().total_cmp(&mat[j][col].abs()))
            .unwrap_or(col);
        mat.swap(col, piv);
        for r in 0..m {
            if r != col && mat[col][col] != 0.0 {
                let f = mat[r][col] / mat[col][col];
                let pivot_row = mat[col];
                for (cell, &pv) in mat[r]
                    .iter_mut()
                    .zip(&pivot_row)
                    .skip(col)
                    .take(m + 1 - col)
                {
                    *cell -= f * pv;
                }
            }
        }
    }
    let beta: Vec<f64> = (0..m)
        .map(|a| {
            if mat[a][a] != 0.0 {
                mat[a][m] / mat[a][a]
            } else {
                0.0
            }
        })
        .collect();
    for (k, o) in out.iter_mut().enumerate() {
        *o = beta
            .iter()
            .enumerate()
            .map(|(j, b)| b * u(k).powi(j as i32))
            .sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_coefficients() {
        // Classic SG(5, 2) smoothing weights: (-3, 12, 17, 12, -3) / 35.
        let sg = SavitzkyGolay::new(5, 2).unwrap();
        let want = [-3.0, 12.0, 17.0, 12.0, -3.0].map(|v| v / 35.0);
        for (a, b) in sg.center.iter().zip(want) {
            assert!((a - b).abs() < 1e-13);
        }
    }

    #[test]
    fn preserves_polynomials_up_to_order() {
        let sg = SavitzkyGolay::new(11, 3).unwrap();
        let y: Vec<f64> = (0..40)
            .map(|i| {
                let x = i as f64 * 0.1;
                2.0 - x + 0.5 * x * x - 0.3 * x * x * x
            })
            .collect();
        let mut out = vec![0.0; y.len()];
        sg.apply(&y, &mut out).unwrap();
        for (a, b) in out.iter().zip(&y) {
            assert!((a - b).abs() < 1e-9, "{a} {b}");
        }
    }

    #[test]
    fn reduces_noise_and_checks_sizes() {
        let sg = SavitzkyGolay::new(9, 2).unwrap();
        // Alternating +-1 noise is almost entirely removed in the interior.
        let y: Vec<f32> = (0..50)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let mut out = vec![0.0; 50];
        sg.apply(&y, &mut out).unwrap();
        assert!(out[4..46].iter().all(|v| v.abs() < 0.2));
        assert!(sg.apply(&y[..5], &mut out[..5]).is_err());
        assert!(sg.apply(&y, &mut out[..10]).is_err());
        assert!(SavitzkyGolay::new(4, 2).is_err());
        assert!(SavitzkyGolay::new(5, 5).is_err());
        assert!(SavitzkyGolay::new(1, 0).is_ok());
    }
}
