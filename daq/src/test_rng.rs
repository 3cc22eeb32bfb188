//! Deterministic random numbers for unit tests, so tests need no RNG crate and cannot flake.

/// Xorshift64 uniform numbers in (0, 1), and standard normals from them (Box-Muller).
pub(crate) struct Uniform(pub(crate) u64);

impl Uniform {
    /// The next uniform number in (0, 1).
    pub(crate) fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// The next standard normal number (uses two uniforms).
    pub(crate) fn normal(&mut self) -> f64 {
        let (u, v) = (self.next(), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}
