//! Flow quality flags: what went wrong in one window, segment or residence-time row.
//!
//! A phase-sensor window always gets its row, so a stream never stalls on a bad second of data;
//! values that would be wrong are null and the reason is a bit here. The bit values are part of
//! the stored schema (`quality_flags` columns): never renumber them, only add new bits.

/// Bitmask of flow problems (the `quality_flags` column of every flow output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowFlags(pub u32);

impl FlowFlags {
    /// No problem detected.
    pub const OK: Self = Self(0);
    /// The two traces have different lengths; only their common prefix was analysed.
    pub const LENGTH_MISMATCH: Self = Self(1 << 0);
    /// NaN or infinite samples; they were skipped (interfaces interpolate across the gap).
    pub const NON_FINITE_SAMPLES: Self = Self(1 << 1);
    /// A trace shows no plug train: its range is below the configured minimum contrast, it has
    /// no finite sample, or no interface rises above its noise in the window. No velocity is
    /// measured.
    pub const CONSTANT_SIGNAL: Self = Self(1 << 2);
    /// Too few interfaces (or matched interface pairs) for the interface velocity.
    pub const TOO_FEW_INTERFACES: Self = Self(1 << 3);
    /// The lag is negative: sensor B sees the segments before sensor A (wired the other way
    /// round, or reversed flow). Velocities are reported negative.
    pub const SENSORS_SWAPPED: Self = Self(1 << 4);
    /// No interface for longer than the configured stop limit while samples kept coming (on a
    /// window) or a segment longer than the limit (on a segment; its length is null).
    pub const STOPPED_FLOW: Self = Self(1 << 5);
    /// A segment about twice the median of its phase or longer (two plugs coalesced). Excluded
    /// from the window's length statistics.
    pub const MERGED_SEGMENT: Self = Self(1 << 6);
    /// A segment far shorter than the median of its phase (a plug broke up). Excluded from the
    /// window's length statistics.
    pub const SPLIT_SEGMENT: Self = Self(1 << 7);
    /// The interface and cross-correlation velocities differ by more than the tolerance.
    pub const VELOCITY_MISMATCH: Self = Self(1 << 8);
    /// The cross-correlation peak is below the configured coefficient: its velocity is null.
    pub const WEAK_CORRELATION: Self = Self(1 << 9);
    /// The cross-correlation peak lies on the edge of the lag search range (the velocity is
    /// outside the configured range): its velocity is null.
    pub const LAG_AT_LIMIT: Self = Self(1 << 10);
    /// Capillary number `Ca >= 0.01` (thick wall films, plugs may break up).
    pub const HIGH_CAPILLARY: Self = Self(1 << 11);
    /// Bond number `Bo >= 0.3` (gravity competes with surface tension; films break near 1).
    pub const HIGH_BOND: Self = Self(1 << 12);
    /// Weber number `We >= 1` (inertia wins over surface tension: jetting).
    pub const HIGH_WEBER: Self = Self(1 << 13);
    /// Peclet number outside `[1e3, 1e5]`.
    pub const PECLET_OUT_OF_RANGE: Self = Self(1 << 14);
    /// Damkohler number `Da >= 1` (mixing-limited, not reaction-limited).
    pub const HIGH_DAMKOHLER: Self = Self(1 << 15);
    /// Residence time: the spectrum is earlier than the schedule, or its plug entered the
    /// reactor before the schedule's first entry. The reaction time is null.
    pub const OUTSIDE_SCHEDULE: Self = Self(1 << 16);
    /// Residence time: the plug's path crosses an interval of unknown velocity (a null, NaN or
    /// negative schedule entry). The reaction time is null.
    pub const VELOCITY_GAP: Self = Self(1 << 17);
    /// Residence time: the probe position is not finite or lies upstream of the mixing point.
    pub const INVALID_POSITION: Self = Self(1 << 18);
    /// The interfaces paired by a velocity method show different segment durations at the two
    /// sensors: the pairing is slipped by whole segments (typically the true velocity lies
    /// outside the configured range). That method's velocity is null.
    pub const INCONSISTENT_MATCH: Self = Self(1 << 19);

    const NAMES: [(Self, &'static str); 20] = [
        (Self::LENGTH_MISMATCH, "LENGTH_MISMATCH"),
        (Self::NON_FINITE_SAMPLES, "NON_FINITE_SAMPLES"),
        (Self::CONSTANT_SIGNAL, "CONSTANT_SIGNAL"),
        (Self::TOO_FEW_INTERFACES, "TOO_FEW_INTERFACES"),
        (Self::SENSORS_SWAPPED, "SENSORS_SWAPPED"),
        (Self::STOPPED_FLOW, "STOPPED_FLOW"),
        (Self::MERGED_SEGMENT, "MERGED_SEGMENT"),
        (Self::SPLIT_SEGMENT, "SPLIT_SEGMENT"),
        (Self::VELOCITY_MISMATCH, "VELOCITY_MISMATCH"),
        (Self::WEAK_CORRELATION, "WEAK_CORRELATION"),
        (Self::LAG_AT_LIMIT, "LAG_AT_LIMIT"),
        (Self::HIGH_CAPILLARY, "HIGH_CAPILLARY"),
        (Self::HIGH_BOND, "HIGH_BOND"),
        (Self::HIGH_WEBER, "HIGH_WEBER"),
        (Self::PECLET_OUT_OF_RANGE, "PECLET_OUT_OF_RANGE"),
        (Self::HIGH_DAMKOHLER, "HIGH_DAMKOHLER"),
        (Self::OUTSIDE_SCHEDULE, "OUTSIDE_SCHEDULE"),
        (Self::VELOCITY_GAP, "VELOCITY_GAP"),
        (Self::INVALID_POSITION, "INVALID_POSITION"),
        (Self::INCONSISTENT_MATCH, "INCONSISTENT_MATCH"),
    ];
}

crate::bitmask::impl_flag_bitmask!(FlowFlags);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_stable_distinct_and_named() {
        assert_eq!(FlowFlags::LENGTH_MISMATCH.0, 1);
        assert_eq!(FlowFlags::INVALID_POSITION.0, 1 << 18);
        let mut all = 0u32;
        for (f, _) in FlowFlags::NAMES {
            assert_eq!(f.0.count_ones(), 1);
            assert_eq!(all & f.0, 0, "bit reused");
            all |= f.0;
        }
        let f = FlowFlags::STOPPED_FLOW | FlowFlags::CONSTANT_SIGNAL;
        assert_eq!(f.to_string(), "CONSTANT_SIGNAL|STOPPED_FLOW");
        assert_eq!(FlowFlags::OK.to_string(), "OK");
    }
}
