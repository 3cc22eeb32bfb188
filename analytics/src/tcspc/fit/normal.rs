//! The fit's least-squares problem condensed to its normal equations.
//!
//! The `levenberg-marquardt` crate factors whatever Jacobian it is handed with a pivoted QR,
//! O(N p^2) per iteration: on 1024-bin histograms that was a third of a fit. A Levenberg-Marquardt
//! step depends on the problem only through `J^T J`, `J^T r` and `||r||`, so the crate is handed
//! the (p + 1) x p problem `[R; 0]`, `[c; rho]` with `R^T R = J^T J`, `R^T c = J^T r` and
//! `||c||^2 + rho^2 = ||r||^2`. Steps, predicted and actual reductions, column norms (its
//! scaling) and its convergence tests are the same; building the normal equations is one pass of
//! dot products over the bins, and the crate's QR runs on a p x p matrix.

use nalgebra::{DMatrix, DVector};

/// Most parameters a fit has: 3 amplitudes, 3 lifetimes, background, shift.
pub(crate) const MAX_PARAMS: usize = 8;

/// `J^T J`, `J^T r`, `||r||^2` and their condensed (Cholesky) form.
#[derive(Debug, Clone)]
pub(crate) struct NormalEquations {
    p: usize,
    /// `J^T J`, row-major p x p, both triangles.
    jtj: [f64; MAX_PARAMS * MAX_PARAMS],
    jtr: [f64; MAX_PARAMS],
    /// Upper-triangular `R` with `R^T R = J^T J` (rows of dependent columns are zero).
    r: [f64; MAX_PARAMS * MAX_PARAMS],
    /// `c` with `R^T c = J^T r`, and `rho = sqrt(||r||^2 - ||c||^2)`.
    c: [f64; MAX_PARAMS],
    rho: f64,
}

impl Default for NormalEquations {
    fn default() -> Self {
        NormalEquations {
            p: 0,
            jtj: [0.0; MAX_PARAMS * MAX_PARAMS],
            jtr: [0.0; MAX_PARAMS],
            r: [0.0; MAX_PARAMS * MAX_PARAMS],
            c: [0.0; MAX_PARAMS],
            rho: 0.0,
        }
    }
}

/// Lanes of [`dot`]: four AVX2 registers of independent sums. With eight lanes (two registers)
/// the loop was bound by the add latency of its two chains, half the rate of the loads.
const DOT_LANES: usize = 16;

/// Dot product with [`DOT_LANES`] accumulators (no single add chain bounds the loop).
#[inline(always)]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; DOT_LANES];
    let (ca, cb) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..DOT_LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Sum with eight accumulators.
#[inline(always)]
pub(crate) fn sum(v: &[f64]) -> f64 {
    let mut acc = [0.0; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().sum();
    for x in chunks {
        for i in 0..8 {
            acc[i] += x[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

impl NormalEquations {
    /// Builds the equations from the Jacobian, `p` columns of `resid.len()` rows stored one after
    /// another in `jac`, and the residuals. `p` is at most [`MAX_PARAMS`].
    #[inline(always)]
    pub(crate) fn build(&mut self, jac: &[f64], p: usize, resid: &[f64]) {
        let rows = resid.len();
        debug_assert!(p <= MAX_PARAMS && jac.len() >= p * rows);
        self.p = p;
        let col = |i: usize| &jac[i * rows..(i + 1) * rows];
        for a in 0..p {
            for b in a..p {
                let v = dot(col(a), col(b));
                self.jtj[a * p + b] = v;
                self.jtj[b * p + a] = v;
            }
            self.jtr[a] = dot(col(a), resid);
        }
        let rr = dot(resid, resid);
        self.factor(rr);
    }

    /// Cholesky `R^T R = J^T J` without pivoting; a pivot below `1e-13` of its diagonal entry
    /// (a column dependent on earlier ones, or zero, as for a clamped lifetime) gets a zero row,
    /// which takes that direction out of the step as a pivoted QR would.
    fn factor(&mut self, rr: f64) {
        let p = self.p;
        self.r = [0.0; MAX_PARAMS * MAX_PARAMS];
        for j in 0..p {
            let diag = self.jtj[j * p + j];
            let d = diag - (0..j).map(|k| self.r[k * p + j].powi(2)).sum::<f64>();
            if !(d > 1e-13 * diag && d.is_finite()) {
                continue;
            }
            let rjj = d.sqrt();
            self.r[j * p + j] = rjj;
            for i in j + 1..p {
                let v = self.jtj[j * p + i]
                    - (0..j)
                        .map(|k| self.r[k * p + j] * self.r[k * p + i])
                        .sum::<f64>();
                self.r[j * p + i] = v / rjj;
            }
        }
        let mut cc = 0.0;
        for j in 0..p {
            let rjj = self.r[j * p + j];
            self.c[j] = if rjj > 0.0 {
                (self.jtr[j] - (0..j).map(|k| self.r[k * p + j] * self.c[k]).sum::<f64>()) / rjj
            } else {
                0.0
            };
            cc += self.c[j] * self.c[j];
        }
        self.rho = (rr - cc).max(0.0).sqrt();
    }

    /// The condensed residuals `[c; rho]` (p + 1 values; their norm is `||r||`).
    pub(crate) fn residuals(&self) -> DVector<f64> {
        DVector::from_iterator(
            self.p + 1,
            self.c[..self.p].iter().copied().chain([self.rho]),
        )
    }

    /// The condensed Jacobian `[R; 0]`, (p + 1) x p.
    pub(crate) fn jacobian(&self) -> DMatrix<f64> {
        let p = self.p;
        DMatrix::from_fn(p + 1, p, |i, j| if i < p { self.r[i * p + j] } else { 0.0 })
    }

    /// `J^T J`, p x p.
    pub(crate) fn jtj(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.p, self.p, &self.jtj[..self.p * self.p])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condensed_problem_has_the_same_normal_equations_and_norm() {
        // A 40 x 3 Jacobian with a nearly dependent pair of columns, and arbitrary residuals.
        let rows = 40;
        let mut jac = vec![0.0; 3 * rows];
        let mut resid = vec![0.0; rows];
        for k in 0..rows {
            let t = k as f64 / rows as f64;
            jac[k] = (-3.0 * t).exp();
            jac[rows + k] = 1.0 + t * t;
            jac[2 * rows + k] = (-3.0 * t).exp() * (1.0 + 1e-3 * t);
            resid[k] = (7.0 * t).sin() + 0.1;
        }
        let mut ne = NormalEquations::default();
        ne.build(&jac, 3, &resid);
        let (rt, ct) = (ne.jacobian(), ne.residuals());
        let full = DMatrix::from_column_slice(rows, 3, &jac);
        let r = DVector::from_column_slice(&resid);
        let (jtj, jtr) = (full.transpose() * &full, full.transpose() * &r);
        let (jtj_c, jtr_c) = (rt.transpose() * &rt, rt.transpose() * &ct);
        assert!((jtj - jtj_c).abs().max() < 1e-12 * ne.jtj().abs().max());
        assert!((jtr - jtr_c).abs().max() < 1e-10);
        assert!((r.norm() - ct.norm()).abs() < 1e-12 * r.norm());
        // Any step gives the same linearised residual norm: ||J d - r|| == ||[R; 0] d - [c; rho]||.
        let d = DVector::from_column_slice(&[0.3, -0.2, 0.5]);
        let lin_full = (&full * &d - &r).norm();
        let lin_cond = (&rt * &d - &ct).norm();
        assert!((lin_full - lin_cond).abs() < 1e-9 * lin_full);
    }

    #[test]
    fn a_zero_column_is_left_out_of_the_factor() {
        let rows = 10;
        let mut jac = vec![0.0; 2 * rows];
        let resid: Vec<f64> = (0..rows).map(|k| k as f64 - 4.0).collect();
        for (k, v) in jac[..rows].iter_mut().enumerate() {
            *v = 1.0 + k as f64;
        }
        let mut ne = NormalEquations::default();
        ne.build(&jac, 2, &resid);
        let (rt, ct) = (ne.jacobian(), ne.residuals());
        assert_eq!(rt[(1, 1)], 0.0);
        assert_eq!(ct[1], 0.0);
        let norm: f64 = resid.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((ct.norm() - norm).abs() < 1e-12 * norm);
    }
}
