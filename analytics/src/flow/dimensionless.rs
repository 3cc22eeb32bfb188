//! Flow design numbers: whether the measured velocity keeps the segmented flow healthy.
//!
//! From the measured velocity and configured fluid properties (domain primer s. 5):
//! `Re = rho u D / eta`, `Ca = eta u / sigma`, `We = rho u^2 D / sigma`,
//! `Bo = |rho_plug - rho_carrier| g D^2 / sigma`, `Pe = u x / D_AB`, `t_diff = x^2 / (2 D_AB)`,
//! `Da = t_diff / t_reaction`, with `D` the channel's inner diameter and `x` the diffusion length
//! (`D / 4` in two-phase flow, where plugs recirculate; `D / 2` in single-phase flow). Re, Ca
//! and We use the wall-wetting (continuous) phase. Healthy segmented flow has `Ca < 0.01`,
//! `Bo < 0.3`, `We < 1`, `1e3 <= Pe <= 1e5` and `Da < 1`; anything else is flagged. The primer
//! gives no default fluid, so there are no defaults here: every property is configuration.

use super::{FlowError, FlowFlags};

/// Standard gravity (m/s^2).
pub const STANDARD_GRAVITY_M_PER_S2: f64 = 9.806_65;

/// Upper limit of a healthy capillary number.
pub const CAPILLARY_LIMIT: f64 = 0.01;
/// Upper limit of a healthy Bond number.
pub const BOND_LIMIT: f64 = 0.3;
/// Upper limit of a healthy Weber number.
pub const WEBER_LIMIT: f64 = 1.0;
/// Healthy Peclet range.
pub const PECLET_RANGE: (f64, f64) = (1e3, 1e5);
/// Upper limit of a healthy Damkohler number.
pub const DAMKOHLER_LIMIT: f64 = 1.0;

/// Density and viscosity of one phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseProperties {
    /// Density (kg/m^3).
    pub density_kg_per_m3: f64,
    /// Dynamic viscosity (Pa s).
    pub viscosity_pa_s: f64,
}

/// Which phase wets the tube wall (the continuous phase of Re, Ca and We).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WettingPhase {
    /// The plugs wet the wall (gas carrier: the liquid is continuous, gas bubbles dispersed).
    Plug,
    /// The carrier wets the wall (fluorinated oil in PTFE tubing: plugs are dispersed).
    Carrier,
}

/// Configured fluid properties and geometry of a flow reactor. Plain data, no serde: the server
/// maps its configuration onto it.
#[derive(Debug, Clone, PartialEq)]
pub struct FluidProperties {
    /// The reacting liquid.
    pub plug: PhaseProperties,
    /// The carrier (gas or oil).
    pub carrier: PhaseProperties,
    /// Which phase is continuous (wets the wall).
    pub wetting_phase: WettingPhase,
    /// Interfacial tension between the phases (N/m).
    pub surface_tension_n_per_m: f64,
    /// Diffusivity of the reacting species in the plug liquid (m^2/s).
    pub diffusivity_m2_per_s: f64,
    /// Inner diameter of the tube (m).
    pub channel_inner_diameter_m: f64,
    /// Two-phase (segmented) flow: diffusion length `D / 4`; single-phase: `D / 2`.
    pub two_phase: bool,
    /// Characteristic reaction time (s) for the Damkohler number, e.g. `1 / k` for a
    /// first-order rate constant `k`. `None`: no Damkohler number.
    pub reaction_time_s: Option<f64>,
}

impl FluidProperties {
    /// Checks that every property is finite and positive.
    ///
    /// # Errors
    /// [`FlowError::InvalidOption`] naming the first bad property.
    pub fn validate(&self) -> Result<(), FlowError> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        let checks = [
            ("plug.density_kg_per_m3", self.plug.density_kg_per_m3),
            ("plug.viscosity_pa_s", self.plug.viscosity_pa_s),
            ("carrier.density_kg_per_m3", self.carrier.density_kg_per_m3),
            ("carrier.viscosity_pa_s", self.carrier.viscosity_pa_s),
            ("surface_tension_n_per_m", self.surface_tension_n_per_m),
            ("diffusivity_m2_per_s", self.diffusivity_m2_per_s),
            ("channel_inner_diameter_m", self.channel_inner_diameter_m),
            ("reaction_time_s", self.reaction_time_s.unwrap_or(1.0)),
        ];
        for (name, v) in checks {
            if !pos(v) {
                return Err(FlowError::InvalidOption {
                    name,
                    reason: "must be finite and > 0",
                });
            }
        }
        Ok(())
    }

    /// The diffusion length `x` (m): `D / 4` two-phase, `D / 2` single-phase.
    pub fn diffusion_length_m(&self) -> f64 {
        self.channel_inner_diameter_m * if self.two_phase { 0.25 } else { 0.5 }
    }

    fn wetting(&self) -> &PhaseProperties {
        match self.wetting_phase {
            WettingPhase::Plug => &self.plug,
            WettingPhase::Carrier => &self.carrier,
        }
    }
}

/// The design numbers at one velocity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DesignNumbers {
    /// Reynolds number `rho u D / eta` (wetting phase).
    pub reynolds: f64,
    /// Capillary number `eta u / sigma` (wetting phase).
    pub capillary: f64,
    /// Weber number `rho u^2 D / sigma` (wetting phase).
    pub weber: f64,
    /// Bond number `|delta rho| g D^2 / sigma` (independent of the velocity).
    pub bond: f64,
    /// Peclet number `u x / D_AB`.
    pub peclet: f64,
    /// Diffusion time `x^2 / (2 D_AB)` (s).
    pub diffusion_time_s: f64,
    /// Damkohler number `t_diff / t_reaction`, when a reaction time is configured.
    pub damkohler: Option<f64>,
    /// `HIGH_CAPILLARY`, `HIGH_BOND`, `HIGH_WEBER`, `PECLET_OUT_OF_RANGE`, `HIGH_DAMKOHLER`.
    pub flags: FlowFlags,
}

/// The design numbers for `props` at `velocity_mm_per_s` (its magnitude: a negative velocity
/// from swapped sensors is still a speed). Properties are assumed valid
/// ([`FluidProperties::validate`]); invalid ones give NaN or infinite numbers.
///
/// ```
/// use flowdaq_analytics::flow::{
///     design_numbers, FlowFlags, FluidProperties, PhaseProperties, WettingPhase,
/// };
///
/// // Toluene plugs in a nitrogen carrier, 1 mm tube, 20 mm/s.
/// let props = FluidProperties {
///     plug: PhaseProperties { density_kg_per_m3: 867.0, viscosity_pa_s: 5.6e-4 },
///     carrier: PhaseProperties { density_kg_per_m3: 1.16, viscosity_pa_s: 1.8e-5 },
///     wetting_phase: WettingPhase::Plug,
///     surface_tension_n_per_m: 0.028,
///     diffusivity_m2_per_s: 1e-9,
///     channel_inner_diameter_m: 1e-3,
///     two_phase: true,
///     reaction_time_s: Some(10.0),
/// };
/// let d = design_numbers(&props, 20.0);
/// assert!((d.reynolds - 867.0 * 0.02 * 1e-3 / 5.6e-4).abs() < 1e-9);
/// assert!((d.capillary - 5.6e-4 * 0.02 / 0.028).abs() < 1e-15);
/// assert!((d.peclet - 0.02 * 2.5e-4 / 1e-9).abs() < 1e-6); // 5000
/// assert!((d.diffusion_time_s - 31.25).abs() < 1e-9);
/// // Bo = 0.303 and Da = 3.1: outside the healthy ranges.
/// assert_eq!(d.flags, FlowFlags::HIGH_BOND | FlowFlags::HIGH_DAMKOHLER);
/// ```
pub fn design_numbers(props: &FluidProperties, velocity_mm_per_s: f64) -> DesignNumbers {
    let u = velocity_mm_per_s.abs() * 1e-3;
    let d = props.channel_inner_diameter_m;
    let sigma = props.surface_tension_n_per_m;
    let w = props.wetting();
    let x = props.diffusion_length_m();
    let d_ab = props.diffusivity_m2_per_s;
    let delta_rho = (props.plug.density_kg_per_m3 - props.carrier.density_kg_per_m3).abs();
    let reynolds = w.density_kg_per_m3 * u * d / w.viscosity_pa_s;
    let capillary = w.viscosity_pa_s * u / sigma;
    let weber = w.density_kg_per_m3 * u * u * d / sigma;
    let bond = delta_rho * STANDARD_GRAVITY_M_PER_S2 * d * d / sigma;
    let peclet = u * x / d_ab;
    let diffusion_time_s = x * x / (2.0 * d_ab);
    let damkohler = props.reaction_time_s.map(|t| diffusion_time_s / t);
    let mut flags = FlowFlags::OK;
    // `!(x < limit)` so that NaN is flagged too.
    if !(capillary < CAPILLARY_LIMIT) {
        flags |= FlowFlags::HIGH_CAPILLARY;
    }
    if !(bond < BOND_LIMIT) {
        flags |= FlowFlags::HIGH_BOND;
    }
    if !(weber < WEBER_LIMIT) {
        flags |= FlowFlags::HIGH_WEBER;
    }
    if !(peclet >= PECLET_RANGE.0 && peclet <= PECLET_RANGE.1) {
        flags |= FlowFlags::PECLET_OUT_OF_RANGE;
    }
    if damkohler.is_some_and(|da| !(da < DAMKOHLER_LIMIT)) {
        flags |= FlowFlags::HIGH_DAMKOHLER;
    }
    DesignNumbers {
        reynolds,
        capillary,
        weber,
        bond,
        peclet,
        diffusion_time_s,
        damkohler,
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn water_in_oil() -> FluidProperties {
        FluidProperties {
            plug: PhaseProperties {
                density_kg_per_m3: 1000.0,
                viscosity_pa_s: 1e-3,
            },
            carrier: PhaseProperties {
                density_kg_per_m3: 1800.0,
                viscosity_pa_s: 4e-3,
            },
            wetting_phase: WettingPhase::Carrier,
            surface_tension_n_per_m: 0.05,
            diffusivity_m2_per_s: 1e-9,
            channel_inner_diameter_m: 0.5e-3,
            two_phase: true,
            reaction_time_s: None,
        }
    }

    #[test]
    fn numbers_follow_the_primer_formulas_and_thresholds() {
        let p = water_in_oil();
        p.validate().unwrap();
        let d = design_numbers(&p, -40.0);
        let u = 0.04;
        assert!((d.reynolds - 1800.0 * u * 0.5e-3 / 4e-3).abs() < 1e-12);
        assert!((d.capillary - 4e-3 * u / 0.05).abs() < 1e-15);
        assert!((d.weber - 1800.0 * u * u * 0.5e-3 / 0.05).abs() < 1e-15);
        assert!((d.bond - 800.0 * 9.80665 * 0.25e-6 / 0.05).abs() < 1e-12);
        assert!((d.peclet - u * 0.125e-3 / 1e-9).abs() < 1e-6);
        assert!((d.diffusion_time_s - (0.125e-3f64).powi(2) / 2e-9).abs() < 1e-9);
        assert_eq!(d.damkohler, None);
        // Ca 0.0032, Bo 0.039, We 0.029, Pe 5000: healthy.
        assert!(d.flags.is_ok(), "{}", d.flags);
        // 200 mm/s: Ca = 0.016, Pe = 25000.
        let fast = design_numbers(&p, 200.0);
        assert_eq!(fast.flags, FlowFlags::HIGH_CAPILLARY);
        // 1 mm/s: Pe = 125.
        assert_eq!(
            design_numbers(&p, 1.0).flags,
            FlowFlags::PECLET_OUT_OF_RANGE
        );
        let mut bad = p.clone();
        bad.surface_tension_n_per_m = 0.0;
        assert!(bad.validate().is_err());
        bad = p;
        bad.reaction_time_s = Some(1.0);
        let d = design_numbers(&bad, 40.0);
        assert!(d.flags.contains(FlowFlags::HIGH_DAMKOHLER)); // t_diff 7.8 s
    }
}
