//! Nanocrystal size from the band-edge energy, by the effective-mass (Brus) relation.
//!
//! `E = Eg + hbar^2 pi^2 / (2 mu R^2) - 1.786 e^2 / (4 pi eps0 epsr R)` solved for the radius
//! `R` in closed form. Material constants are configuration; the CsPbBr3 defaults and their
//! sources are documented on [`MaterialConstants::CSPBBR3`]. The model is only meaningful in
//! the confinement regime (`E > Eg`, CsPbBr3 below ~7 nm); elsewhere it returns `None`.

use std::f64::consts::PI;

use super::SpectralError;

/// `hbar^2 / (2 m_e)` in eV nm^2 (CODATA 2018: 3.80998212 eV A^2).
pub const HBAR2_OVER_2ME_EV_NM2: f64 = 0.0380998212;

/// `e^2 / (4 pi eps0)` in eV nm (CODATA 2018: 1.43996454784 eV nm).
pub const COULOMB_EV_NM: f64 = 1.439_964_547_84;

/// Material constants of the effective-mass model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaterialConstants {
    /// Bulk band gap `Eg` (eV).
    pub bulk_band_gap_ev: f64,
    /// Electron effective mass in units of the free electron mass.
    pub electron_mass: f64,
    /// Hole effective mass in units of the free electron mass.
    pub hole_mass: f64,
    /// Relative (optical) permittivity `epsr` of the semiconductor.
    pub relative_permittivity: f64,
    /// Coefficient of the electron-hole Coulomb term (1.786 for the 1S state of a sphere,
    /// Brus, J. Chem. Phys. 80, 4403 (1984)).
    pub coulomb_coefficient: f64,
}

impl MaterialConstants {
    /// CsPbBr3, as used for the effective-mass size analysis of CsPbX3 nanocrystals by
    /// Protesescu et al., "Nanocrystals of Cesium Lead Halide Perovskites (CsPbX3, X = Cl, Br,
    /// and I)", Nano Lett. 15, 3692 (2015): `me* = 0.15`, `mh* = 0.14`, `epsr = 4.96`
    /// (exciton Bohr diameter ~7 nm); bulk band gap `Eg = 2.342 eV`. Brus Coulomb coefficient
    /// 1.786. These are defaults for configuration, not measurements of a given batch.
    pub const CSPBBR3: Self = Self {
        bulk_band_gap_ev: 2.342,
        electron_mass: 0.15,
        hole_mass: 0.14,
        relative_permittivity: 4.96,
        coulomb_coefficient: 1.786,
    };

    /// Checks that every constant is finite and positive.
    ///
    /// # Errors
    /// [`SpectralError::InvalidOption`] naming the first offending constant.
    pub fn validate(&self) -> Result<(), SpectralError> {
        let checks = [
            ("material.bulk_band_gap_ev", self.bulk_band_gap_ev),
            ("material.electron_mass", self.electron_mass),
            ("material.hole_mass", self.hole_mass),
            ("material.relative_permittivity", self.relative_permittivity),
            ("material.coulomb_coefficient", self.coulomb_coefficient),
        ];
        for (name, v) in checks {
            if !(v.is_finite() && v > 0.0) {
                return Err(SpectralError::InvalidOption {
                    name,
                    reason: "must be finite and > 0",
                });
            }
        }
        Ok(())
    }

    /// Reduced exciton mass `mu = me mh / (me + mh)` (units of the free electron mass).
    pub fn reduced_mass(&self) -> f64 {
        self.electron_mass * self.hole_mass / (self.electron_mass + self.hole_mass)
    }

    /// Confinement coefficient `A = hbar^2 pi^2 / (2 mu)` (eV nm^2).
    pub fn confinement_ev_nm2(&self) -> f64 {
        PI * PI * HBAR2_OVER_2ME_EV_NM2 / self.reduced_mass()
    }

    /// Coulomb coefficient `B = 1.786 e^2 / (4 pi eps0 epsr)` (eV nm).
    pub fn coulomb_ev_nm(&self) -> f64 {
        self.coulomb_coefficient * COULOMB_EV_NM / self.relative_permittivity
    }

    /// Band-edge energy (eV) of a dot of radius `radius_nm` (Brus equation).
    pub fn brus_energy_ev(&self, radius_nm: f64) -> f64 {
        self.bulk_band_gap_ev + self.confinement_ev_nm2() / (radius_nm * radius_nm)
            - self.coulomb_ev_nm() / radius_nm
    }

    /// Radius (nm) whose Brus energy is `energy_ev`; `None` unless `energy_ev > Eg` (outside
    /// the confinement regime the relation has no unique, physical root).
    ///
    /// ```
    /// use flowdaq_analytics::spectral::MaterialConstants;
    /// let m = MaterialConstants::CSPBBR3;
    /// let r = m.brus_radius_nm(2.48).unwrap(); // 500 nm band edge
    /// assert!((m.brus_energy_ev(r) - 2.48).abs() < 1e-12);
    /// assert!(r > 4.0 && r < 5.0);
    /// assert!(m.brus_radius_nm(2.30).is_none());
    /// ```
    pub fn brus_radius_nm(&self, energy_ev: f64) -> Option<f64> {
        let de = energy_ev - self.bulk_band_gap_ev;
        if !(de > 0.0 && de.is_finite()) {
            return None;
        }
        let (a, b) = (self.confinement_ev_nm2(), self.coulomb_ev_nm());
        // de R^2 + b R - a = 0, positive root in the cancellation-free form.
        let r = 2.0 * a / (b + (b * b + 4.0 * de * a).sqrt());
        r.is_finite().then_some(r)
    }
}

impl Default for MaterialConstants {
    fn default() -> Self {
        Self::CSPBBR3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_from_constants() {
        let m = MaterialConstants::CSPBBR3;
        assert!((m.reduced_mass() - 0.0724137931).abs() < 1e-9);
        // pi^2 * 0.0380998 / 0.0724138 = 5.1928 eV nm^2; 1.786 * 1.44 / 4.96 = 0.5185 eV nm
        assert!((m.confinement_ev_nm2() - 5.19276).abs() < 1e-4);
        assert!((m.coulomb_ev_nm() - 0.518504).abs() < 1e-5);
    }

    #[test]
    fn round_trip_and_monotonic() {
        let m = MaterialConstants::CSPBBR3;
        let mut last = f64::INFINITY;
        for r in [1.5, 2.0, 3.0, 4.0, 6.0, 10.0] {
            let e = m.brus_energy_ev(r);
            let back = m.brus_radius_nm(e).unwrap();
            assert!((back - r).abs() < 1e-9, "{r} {back}");
            assert!(e < last);
            last = e;
        }
        assert!(m.brus_radius_nm(f64::NAN).is_none());
        assert!(MaterialConstants {
            hole_mass: 0.0,
            ..m
        }
        .validate()
        .is_err());
    }
}
