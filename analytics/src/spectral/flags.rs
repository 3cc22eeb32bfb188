//! Quality flags: what went wrong with one spectrum, as a `u32` bitmask column.
//!
//! A flagged spectrum still gets its row (with nulls where a value would be meaningless), so a
//! stream never stalls on one bad exposure and the optimizer can filter on the flags. The bit
//! values are part of the stored schema: never renumber them, only add new bits.

/// Bitmask of per-spectrum quality problems (the `quality_flags` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct QualityFlags(pub u32);

impl QualityFlags {
    /// No problem detected.
    pub const OK: Self = Self(0);
    /// A pixel reached the configured detector saturation level; heights and widths are biased.
    pub const SATURATED: Self = Self(1 << 0);
    /// No peak (or no excitonic peak) above the configured prominence; peak columns are null.
    pub const NO_PEAK: Self = Self(1 << 1);
    /// The main peak lies within the edge margin, or the spectrum's maximum is an end pixel:
    /// the true peak may lie outside the measured range.
    pub const PEAK_AT_EDGE: Self = Self(1 << 2);
    /// NaN, infinite or null pixels in the analysed range; all feature columns are null.
    pub const NON_FINITE_PIXELS: Self = Self(1 << 3);
    /// Maximum minus minimum is at or below the configured flatness threshold (e.g. all zero).
    pub const FLAT_SPECTRUM: Self = Self(1 << 4);
    /// Absorbance below minus the configured tolerance (reference/blank or dark problem).
    pub const NEGATIVE_ABSORBANCE: Self = Self(1 << 5);
    /// Optical density above the inner-filter limit (0.05 by default): PL is quenched and
    /// red-shifted, absorbance and PL are no longer linear in concentration.
    pub const INNER_FILTER: Self = Self(1 << 6);

    const NAMES: [(Self, &'static str); 7] = [
        (Self::SATURATED, "SATURATED"),
        (Self::NO_PEAK, "NO_PEAK"),
        (Self::PEAK_AT_EDGE, "PEAK_AT_EDGE"),
        (Self::NON_FINITE_PIXELS, "NON_FINITE_PIXELS"),
        (Self::FLAT_SPECTRUM, "FLAT_SPECTRUM"),
        (Self::NEGATIVE_ABSORBANCE, "NEGATIVE_ABSORBANCE"),
        (Self::INNER_FILTER, "INNER_FILTER"),
    ];
}

crate::bitmask::impl_flag_bitmask!(QualityFlags);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_stable_and_named() {
        assert_eq!(QualityFlags::SATURATED.0, 1);
        assert_eq!(QualityFlags::INNER_FILTER.0, 64);
        let f = QualityFlags::NO_PEAK | QualityFlags::FLAT_SPECTRUM;
        assert!(f.contains(QualityFlags::NO_PEAK) && !f.contains(QualityFlags::SATURATED));
        assert_eq!(f.to_string(), "NO_PEAK|FLAT_SPECTRUM");
        assert_eq!(QualityFlags::OK.to_string(), "OK");
    }
}
