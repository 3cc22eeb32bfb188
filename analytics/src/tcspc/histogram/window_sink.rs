//! Raw records decoded straight into histogram windows.
//!
//! The live photon path does not store photons for most sources: their records are wanted only
//! as windowed histograms. Decoding into columns and then windowing the columns writes and
//! reads twelve bytes per photon and runs two loops; a [`WindowSink`] passed to
//! [`crate::tcspc::records::decode_into`] bins each photon as it is decoded, with the open
//! window's span in registers, so a photon inside it costs one compare on top of the fused
//! decode-and-histogram loop.

use super::{HistogramWindow, HistogramWindower, WindowedHistogram};
use crate::tcspc::records::EventSink;

/// Feeds decoded events to a [`HistogramWindower`], appending the windows they close to `out`;
/// from [`HistogramWindower::sink`]. The windows are those [`HistogramWindower::push_columns`]
/// gives for the same events.
pub struct WindowSink<'a> {
    windower: &'a mut HistogramWindower,
    out: &'a mut Vec<WindowedHistogram>,
    /// The open sync window is [lo, lo + span); span 0 before the first photon and for
    /// photon-count windows.
    lo: u64,
    span: u64,
}

impl HistogramWindower {
    /// A sink that windows decoded events into this windower (see [`WindowSink`]).
    pub fn sink<'a>(&'a mut self, out: &'a mut Vec<WindowedHistogram>) -> WindowSink<'a> {
        let (lo, span) = match (self.window, self.start_sync) {
            (HistogramWindow::Syncs(w), Some(start)) => (start, w),
            _ => (0, 0),
        };
        WindowSink {
            windower: self,
            out,
            lo,
            span,
        }
    }
}

impl WindowSink<'_> {
    /// Closes the open sync window and opens the one `t` falls in.
    #[cold]
    fn open_sync_window(&mut self, t: u64, w: u64) {
        if let Some(start) = self.windower.start_sync {
            self.windower.close(start + w, self.out);
        }
        let start = t - t % w;
        self.windower.start_sync = Some(start);
        (self.lo, self.span) = (start, w);
    }
}

impl EventSink for WindowSink<'_> {
    #[inline(always)]
    fn photon(&mut self, macro_time: u64, micro_time_bins: u16, channel: u8) {
        let windower = &mut *self.windower;
        match windower.window {
            HistogramWindow::Syncs(w) => {
                if macro_time.wrapping_sub(self.lo) >= self.span {
                    self.open_sync_window(macro_time, w);
                }
                self.windower
                    .current
                    .add(macro_time, micro_time_bins, channel);
            }
            HistogramWindow::Photons(limit) => {
                if windower.start_sync.is_none() {
                    windower.start_sync = Some(macro_time);
                }
                windower.current.add(macro_time, micro_time_bins, channel);
                windower.photons_in_window += 1;
                if windower.photons_in_window >= limit {
                    windower.close(macro_time + 1, self.out);
                }
            }
        }
    }

    #[inline(always)]
    fn marker(&mut self, _macro_time: u64, _marker_flags: u8) {}
}
