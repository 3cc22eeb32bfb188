//! Segments: the plugs and carrier slugs between consecutive interfaces at one sensor.
//!
//! A segment's duration is measured at one sensor (sensor A, upstream) between two detected
//! interfaces; its length is that duration times the window's velocity. Only complete segments
//! are reported (the partial ones cut by the window edges are not). Segments that are not
//! ordinary members of the train (a stopped flow, two plugs merged into one, a plug broken in
//! two) are flagged and left out of the window statistics rather than averaged in.

use super::interfaces::Interface;
use super::stability::{median_in_place, MeanCv};
use super::FlowFlags;

/// Which voltage level the plugs (the reacting liquid) give on the phase sensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlugPolarity {
    /// Plugs read higher than the carrier: a rising interface starts a plug.
    High,
    /// Plugs read lower than the carrier: a falling interface starts a plug.
    Low,
}

impl PlugPolarity {
    /// True if an interface of this direction starts a plug.
    #[inline]
    pub fn starts_plug(self, rising: bool) -> bool {
        rising == (self == PlugPolarity::High)
    }
}

/// The phase of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The reacting liquid (dispersed plug / slug).
    Plug,
    /// The carrier (gas or immiscible oil) between plugs.
    Carrier,
}

/// One complete segment seen at one sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Plug or carrier.
    pub phase: Phase,
    /// Time of the interface that starts the segment, seconds after the window's first sample.
    pub start_s: f64,
    /// Time between its two interfaces (s).
    pub duration_s: f64,
    /// `duration_s * |velocity|` (mm); `None` without a velocity or for a stopped segment.
    pub length_mm: Option<f64>,
    /// `STOPPED_FLOW`, `MERGED_SEGMENT` or `SPLIT_SEGMENT`, else OK.
    pub flags: FlowFlags,
}

impl Segment {
    /// True if the segment is an ordinary member of the train (counted in the statistics).
    #[inline]
    pub fn is_regular(&self) -> bool {
        self.flags.is_ok()
    }
}

/// Rules that single out irregular segments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentRules {
    /// A segment at least this many times the median duration of its phase is
    /// `MERGED_SEGMENT` (two coalesced plugs are about 2x). Must exceed 1.
    pub merged_ratio: f64,
    /// A segment at most this fraction of the median of its phase is `SPLIT_SEGMENT`. Must lie
    /// in (0, 1).
    pub split_ratio: f64,
    /// A segment longer than this (s) is `STOPPED_FLOW`: no interface for that long.
    pub stopped_flow_s: f64,
}

/// Turns consecutive interfaces into segments (appended to `out`, which is cleared first).
///
/// The phase follows the direction of the opening interface; two consecutive interfaces of
/// the same direction (impossible from [`InterfaceDetector`](super::InterfaceDetector)) give
/// no segment.
pub fn segments_from_interfaces(
    interfaces: &[Interface],
    polarity: PlugPolarity,
    out: &mut Vec<Segment>,
) {
    out.clear();
    out.extend(
        interfaces
            .windows(2)
            .filter(|w| w[0].rising != w[1].rising)
            .map(|w| Segment {
                phase: if polarity.starts_plug(w[0].rising) {
                    Phase::Plug
                } else {
                    Phase::Carrier
                },
                start_s: w[0].time_s,
                duration_s: w[1].time_s - w[0].time_s,
                length_mm: None,
                flags: FlowFlags::OK,
            }),
    );
}

/// Flags irregular segments: longer than the stop limit first, then merged or split against
/// the median duration of the other segments of the same phase (only with at least three of
/// them, else nothing is classified). `scratch` holds the durations for the median.
pub fn classify_segments(segments: &mut [Segment], rules: &SegmentRules, scratch: &mut Vec<f64>) {
    for s in segments.iter_mut() {
        s.flags = if s.duration_s > rules.stopped_flow_s {
            FlowFlags::STOPPED_FLOW
        } else {
            FlowFlags::OK
        };
    }
    for phase in [Phase::Plug, Phase::Carrier] {
        scratch.clear();
        scratch.extend(
            segments
                .iter()
                .filter(|s| s.phase == phase && s.flags.is_ok())
                .map(|s| s.duration_s),
        );
        if scratch.len() < 3 {
            continue;
        }
        let Some(median) = median_in_place(scratch) else {
            continue;
        };
        for s in segments
            .iter_mut()
            .filter(|s| s.phase == phase && s.flags.is_ok())
        {
            if s.duration_s >= rules.merged_ratio * median {
                s.flags = FlowFlags::MERGED_SEGMENT;
            } else if s.duration_s <= rules.split_ratio * median {
                s.flags = FlowFlags::SPLIT_SEGMENT;
            }
        }
    }
}

/// Sets every segment's length from the velocity (`None` for stopped segments or without a
/// velocity). The sign of the velocity (swapped sensors) does not change a length.
pub fn assign_lengths(segments: &mut [Segment], velocity_mm_per_s: Option<f64>) {
    for s in segments {
        s.length_mm = match velocity_mm_per_s {
            Some(v) if !s.flags.contains(FlowFlags::STOPPED_FLOW) => Some(s.duration_s * v.abs()),
            _ => None,
        };
    }
}

/// Statistics of the segments of one phase in a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PhaseStats {
    /// Complete segments of the phase, flagged ones included.
    pub count: u32,
    /// Regular (unflagged) ones, the ones the statistics below describe.
    pub regular: u32,
    /// Mean duration of the regular segments (s).
    pub duration_mean_s: Option<f64>,
    /// Mean length of the regular segments (mm), when they have lengths.
    pub length_mean_mm: Option<f64>,
    /// Coefficient of variation (sample standard deviation / mean) of the regular segments'
    /// lengths; computed from durations, which is the same under one window velocity.
    pub length_cv: Option<f64>,
}

/// Statistics of the `phase` segments.
pub fn phase_stats(segments: &[Segment], phase: Phase) -> PhaseStats {
    let mut count = 0u32;
    let mut duration = MeanCv::default();
    let mut length = MeanCv::default();
    for s in segments.iter().filter(|s| s.phase == phase) {
        count += 1;
        if s.is_regular() {
            duration.push(s.duration_s);
            if let Some(l) = s.length_mm {
                length.push(l);
            }
        }
    }
    PhaseStats {
        count,
        regular: duration.count() as u32,
        duration_mean_s: duration.mean(),
        length_mean_mm: if length.count() == duration.count() {
            length.mean()
        } else {
            None
        },
        length_cv: duration.cv(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(t: f64, rising: bool) -> Interface {
        Interface { time_s: t, rising }
    }

    #[test]
    fn phases_follow_polarity_and_irregular_segments_are_flagged() {
        // Plugs 1 s at t = 0, 2, 4, 6 (the one at 6 is 2.1 s: merged), carriers 1 s, then a
        // 0.3 s plug (split) and a 10 s carrier (stopped).
        let times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.1, 9.1, 9.4, 19.4];
        let ifs: Vec<_> = times
            .iter()
            .enumerate()
            .map(|(k, &t)| iface(t, k % 2 == 0))
            .collect();
        let mut segs = Vec::new();
        segments_from_interfaces(&ifs, PlugPolarity::High, &mut segs);
        assert_eq!(segs.len(), 10);
        assert_eq!(segs[0].phase, Phase::Plug);
        let rules = SegmentRules {
            merged_ratio: 1.6,
            split_ratio: 0.5,
            stopped_flow_s: 5.0,
        };
        let mut scratch = Vec::new();
        classify_segments(&mut segs, &rules, &mut scratch);
        assert_eq!(segs[6].flags, FlowFlags::MERGED_SEGMENT);
        assert_eq!(segs[8].flags, FlowFlags::SPLIT_SEGMENT);
        assert_eq!(segs[9].flags, FlowFlags::STOPPED_FLOW);
        assert!(segs[..6].iter().all(|s| s.flags.is_ok()));
        assign_lengths(&mut segs, Some(-10.0));
        assert_eq!(segs[0].length_mm, Some(10.0));
        assert_eq!(segs[9].length_mm, None);
        let plugs = phase_stats(&segs, Phase::Plug);
        assert_eq!((plugs.count, plugs.regular), (5, 3));
        assert_eq!(plugs.length_mean_mm, Some(10.0));
        assert_eq!(plugs.length_cv, Some(0.0));

        let mut low = Vec::new();
        segments_from_interfaces(&ifs, PlugPolarity::Low, &mut low);
        assert_eq!(low[0].phase, Phase::Carrier);
    }
}
