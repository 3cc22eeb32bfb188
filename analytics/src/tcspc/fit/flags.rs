//! Fit quality flags: why a lifetime fit that ran should not be trusted as it stands, as a
//! `u32` bitmask column beside `converged`.
//!
//! `converged` says only that the optimizer met its tolerance with finite parameters; a fit can
//! do that and still be wrong (a model that does not describe the data, a background pushed to
//! its bound, too few photons). The flags say which. The bit values are part of the stored
//! schema (`lifetime_features.fit_flags`): never renumber them, only add new bits.

/// Bitmask of per-fit quality problems (the `fit_flags` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FitFlags(pub u32);

impl FitFlags {
    /// No problem detected.
    pub const OK: Self = Self(0);
    /// Reduced chi-square above the configured limit ([`super::FitConfig::max_reduced_chi_square`]):
    /// the model does not describe the data (wrong component count, IRF or range).
    pub const CHI_SQUARE_HIGH: Self = Self(1 << 0);
    /// The background came out below zero by more than
    /// [`super::NEGATIVE_BACKGROUND_STDERRS`] standard errors: no physical background is
    /// negative, so the model or the fit range is wrong (empty bins fitted as data, a missing
    /// component). A background slightly below zero is noise and is not flagged: holding it at
    /// zero would bias every low-count lifetime.
    pub const NEGATIVE_BACKGROUND: Self = Self(1 << 1);
    /// A lifetime ended at its lower or upper limit, or the IRF shift put the IRF outside the
    /// histogram: the parameter is not determined by the data.
    pub const PARAMETER_AT_BOUND: Self = Self(1 << 2);
    /// Fewer photons in the fit range than [`super::FitConfig::min_counts_per_component`] times
    /// the number of components: lifetimes are imprecise and a multi-exponential split is not
    /// resolved.
    pub const FEW_COUNTS: Self = Self(1 << 3);
    /// The detector rate was above 5 % of the sync rate (set by the caller, which knows the
    /// window's duration): the decay is distorted towards short times.
    pub const PILE_UP: Self = Self(1 << 4);

    const NAMES: [(Self, &'static str); 5] = [
        (Self::CHI_SQUARE_HIGH, "CHI_SQUARE_HIGH"),
        (Self::NEGATIVE_BACKGROUND, "NEGATIVE_BACKGROUND"),
        (Self::PARAMETER_AT_BOUND, "PARAMETER_AT_BOUND"),
        (Self::FEW_COUNTS, "FEW_COUNTS"),
        (Self::PILE_UP, "PILE_UP"),
    ];
}

crate::bitmask::impl_flag_bitmask!(FitFlags);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_stable_and_named() {
        assert_eq!(FitFlags::CHI_SQUARE_HIGH.0, 1);
        assert_eq!(FitFlags::PILE_UP.0, 16);
        let f = FitFlags::NEGATIVE_BACKGROUND | FitFlags::FEW_COUNTS;
        assert_eq!(f.to_string(), "NEGATIVE_BACKGROUND|FEW_COUNTS");
        assert_eq!(FitFlags::OK.to_string(), "OK");
    }
}
