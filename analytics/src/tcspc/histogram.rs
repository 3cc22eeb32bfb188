//! Micro-time histograms per channel: the decay curves that lifetime fits and phasors consume.
//!
//! Photons are binned with a lookup table (native bin -> output bin) so any bin width costs one
//! load, never a division per photon; windows close by photon count or by aligned macro-time
//! spans, so a replayed file and the same records sent live give the same windows. Count rates
//! come with the pile-up flag (detector rate above 5 % of the sync rate distorts the decay).

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, UInt32Builder};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::records::{EventSink, PhotonColumns, MAX_CHANNELS};
use super::{Result, TcspcError};

mod window_sink;
pub use window_sink::WindowSink;

/// Fraction of the sync rate above which a detector rate is flagged as pile-up.
pub const PILE_UP_FRACTION: f64 = 0.05;

/// Shape and units of a micro-time histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramLayout {
    /// Number of detector channels histogrammed (channels 0..channels); others are counted as
    /// out of range.
    pub channels: usize,
    /// Native micro-time bins covered (micro times >= this are counted as out of range).
    pub native_bins: usize,
    /// Native bins summed into one histogram bin (1 = native resolution).
    pub bin_width_native: usize,
    /// Width of one native bin in ps.
    pub micro_bin_ps: f64,
    /// Sync (laser) rate in Hz; converts sync counts to time and sets the pile-up limit.
    pub sync_rate_hz: f64,
}

impl HistogramLayout {
    /// Number of histogram bins per channel: `ceil(native_bins / bin_width_native)`.
    pub fn bins(&self) -> usize {
        self.native_bins.div_ceil(self.bin_width_native.max(1))
    }

    /// Width of one histogram bin in ps.
    pub fn bin_width_ps(&self) -> f64 {
        self.micro_bin_ps * self.bin_width_native as f64
    }

    /// Sync period in ps.
    pub fn sync_period_ps(&self) -> f64 {
        1e12 / self.sync_rate_hz
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TcspcError::InvalidArgument(m));
        if self.channels == 0 || self.channels > MAX_CHANNELS {
            return bad(format!(
                "channels {} must be in 1..={MAX_CHANNELS}",
                self.channels
            ));
        }
        if self.native_bins == 0 || self.native_bins > 1 << 16 {
            return bad(format!(
                "native_bins {} must be in 1..=65536",
                self.native_bins
            ));
        }
        if self.bin_width_native == 0 || self.bin_width_native > self.native_bins {
            return bad(format!(
                "bin_width_native {} must be in 1..=native_bins",
                self.bin_width_native
            ));
        }
        if !(self.micro_bin_ps.is_finite() && self.micro_bin_ps > 0.0) {
            return bad(format!(
                "micro_bin_ps {} must be finite and > 0",
                self.micro_bin_ps
            ));
        }
        if !(self.sync_rate_hz.is_finite() && self.sync_rate_hz > 0.0) {
            return bad(format!(
                "sync_rate_hz {} must be finite and > 0",
                self.sync_rate_hz
            ));
        }
        Ok(())
    }
}

/// Photon counts per channel and micro-time bin, with the span of sync periods they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroTimeHistogram {
    layout: HistogramLayout,
    /// native bin -> output bin.
    lut: Vec<u32>,
    /// `layout.bins()`, cached for the hot loop.
    bins: usize,
    /// channel-major counts, `channels * bins`.
    counts: Vec<u32>,
    /// Per histogrammed channel: photons whose micro time lies past the last bin.
    beyond_last_bin: Vec<u64>,
    /// Photons on channels the layout does not histogram.
    other_channels: u64,
    first_sync: Option<u64>,
    last_sync: u64,
}

impl MicroTimeHistogram {
    /// An empty histogram.
    ///
    /// # Errors
    /// [`TcspcError::InvalidArgument`] for a zero or oversized layout, a bin width wider than the
    /// range, or a non-positive resolution or sync rate.
    pub fn new(layout: HistogramLayout) -> Result<Self> {
        layout.validate()?;
        let lut = (0..layout.native_bins)
            .map(|b| (b / layout.bin_width_native) as u32)
            .collect();
        let counts = vec![0; layout.channels * layout.bins()];
        Ok(MicroTimeHistogram {
            bins: layout.bins(),
            beyond_last_bin: vec![0; layout.channels],
            layout,
            lut,
            counts,
            other_channels: 0,
            first_sync: None,
            last_sync: 0,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &HistogramLayout {
        &self.layout
    }

    /// Zeroes all counts, keeping the allocation.
    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.beyond_last_bin.iter_mut().for_each(|c| *c = 0);
        self.other_channels = 0;
        self.first_sync = None;
        self.last_sync = 0;
    }

    /// Counts of one channel (`bins()` values).
    ///
    /// # Panics
    /// If `channel >= layout.channels`.
    pub fn counts(&self, channel: usize) -> &[u32] {
        let bins = self.bins;
        &self.counts[channel * bins..(channel + 1) * bins]
    }

    /// Counts of one channel as `f64` (for fits and phasors), written into `out`.
    ///
    /// # Errors
    /// [`TcspcError::InvalidArgument`] if the channel is out of range or `out` has the wrong
    /// length.
    pub fn counts_f64(&self, channel: usize, out: &mut [f64]) -> Result<()> {
        if channel >= self.layout.channels || out.len() != self.layout.bins() {
            return Err(TcspcError::InvalidArgument(format!(
                "channel {channel} / output length {} for a {}x{} histogram",
                out.len(),
                self.layout.channels,
                self.layout.bins()
            )));
        }
        for (o, &c) in out.iter_mut().zip(self.counts(channel)) {
            *o = f64::from(c);
        }
        Ok(())
    }

    /// Photons counted in one channel.
    /// (The sum of its counts: a per-photon counter beside them cost a dependent
    /// read-modify-write per photon in the hot loop.)
    pub fn photons(&self, channel: usize) -> u64 {
        if channel >= self.layout.channels {
            return 0;
        }
        self.counts(channel).iter().map(|&c| u64::from(c)).sum()
    }

    /// Photons not binned because their channel or micro time was outside the layout.
    pub fn out_of_range(&self) -> u64 {
        self.other_channels + self.beyond_last_bin.iter().sum::<u64>()
    }

    /// Photons of one histogrammed channel whose micro time lies past the last bin (for
    /// example in the part of a sync period the layout's `native_bins` leave out); 0 for a
    /// channel outside the layout.
    pub fn beyond_last_bin(&self, channel: usize) -> u64 {
        self.beyond_last_bin.get(channel).copied().unwrap_or(0)
    }

    /// Photons on channels the layout does not histogram (`channel >= layout.channels`).
    pub fn other_channel_photons(&self) -> u64 {
        self.other_channels
    }

    /// First and last sync count (macro time) of the photons counted, if any.
    pub fn sync_span(&self) -> Option<(u64, u64)> {
        self.first_sync.map(|f| (f, self.last_sync))
    }

    /// Observation time covered by the photons: `(last - first + 1)` sync periods, in s.
    pub fn observed_duration_s(&self) -> f64 {
        match self.sync_span() {
            Some((f, l)) => (l.saturating_sub(f) + 1) as f64 / self.layout.sync_rate_hz,
            None => 0.0,
        }
    }

    #[inline(always)]
    fn add(&mut self, macro_sync: u64, micro_bins: u16, channel: u8) {
        let bins = self.bins;
        let ch = channel as usize;
        match self.lut.get(micro_bins as usize) {
            Some(&b) if ch < self.layout.channels => {
                self.counts[ch * bins + b as usize] += 1;
                if self.first_sync.is_none() {
                    self.first_sync = Some(macro_sync);
                }
                self.last_sync = macro_sync;
            }
            _ => self.exclude(channel),
        }
    }

    /// Counts a photon that has no bin (off the hot path: rare by construction).
    #[cold]
    fn exclude(&mut self, channel: u8) {
        match self.beyond_last_bin.get_mut(channel as usize) {
            Some(beyond) => *beyond += 1,
            None => self.other_channels += 1,
        }
    }

    /// Adds photons given as columns (rows with `marker_flags != 0` are skipped), arrow-kernel
    /// style: equal-length slices in, no allocation.
    ///
    /// # Errors
    /// [`TcspcError::LengthMismatch`] if the slices differ in length.
    pub fn add_columns(
        &mut self,
        macro_time_sync: &[u64],
        micro_time_bins: &[u16],
        channel: &[u8],
        marker_flags: &[u8],
    ) -> Result<()> {
        let n = macro_time_sync.len();
        if micro_time_bins.len() != n || channel.len() != n || marker_flags.len() != n {
            return Err(TcspcError::LengthMismatch(format!(
                "macro {n}, micro {}, channel {}, markers {}",
                micro_time_bins.len(),
                channel.len(),
                marker_flags.len()
            )));
        }
        for i in 0..n {
            if marker_flags[i] == 0 {
                self.add(macro_time_sync[i], micro_time_bins[i], channel[i]);
            }
        }
        Ok(())
    }

    /// Adds all photon rows of decoded columns.
    ///
    /// # Errors
    /// [`TcspcError::LengthMismatch`] if the columns were edited to different lengths.
    pub fn add_photons(&mut self, photons: &PhotonColumns) -> Result<()> {
        self.add_columns(
            &photons.macro_time_sync,
            &photons.micro_time_bins,
            &photons.channel,
            &photons.marker_flags,
        )
    }

    /// Photon rate of one channel in counts per second over [`Self::observed_duration_s`].
    pub fn count_rate_hz(&self, channel: usize) -> f64 {
        let d = self.observed_duration_s();
        if d > 0.0 {
            self.photons(channel) as f64 / d
        } else {
            0.0
        }
    }

    /// True when a channel's rate over `duration_s` exceeds [`PILE_UP_FRACTION`] of the sync rate.
    pub fn pile_up(&self, channel: usize, duration_s: f64) -> bool {
        duration_s > 0.0
            && self.photons(channel) as f64 / duration_s
                > PILE_UP_FRACTION * self.layout.sync_rate_hz
    }
}

/// Fused decode-and-histogram: pass a histogram to [`crate::tcspc::records::decode_into`].
impl EventSink for MicroTimeHistogram {
    #[inline(always)]
    fn photon(&mut self, macro_time: u64, micro_time_bins: u16, channel: u8) {
        self.add(macro_time, micro_time_bins, channel);
    }

    #[inline(always)]
    fn marker(&mut self, _macro_time: u64, _marker_flags: u8) {}
}

/// When a histogram window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramWindow {
    /// After this many photons (all channels together).
    Photons(u64),
    /// Spans of this many sync periods, aligned to multiples of it from sync 0 (so the same
    /// records give the same windows however they are chunked).
    Syncs(u64),
}

/// A closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowedHistogram {
    /// First sync count of the window (inclusive).
    pub window_start_sync: u64,
    /// End sync count of the window (exclusive).
    pub window_end_sync: u64,
    /// The counts.
    pub histogram: MicroTimeHistogram,
}

impl WindowedHistogram {
    /// Window length in s.
    pub fn duration_s(&self) -> f64 {
        (self.window_end_sync - self.window_start_sync) as f64 / self.histogram.layout.sync_rate_hz
    }
}

/// Splits a photon stream into histogram windows.
#[derive(Debug, Clone)]
pub struct HistogramWindower {
    window: HistogramWindow,
    current: MicroTimeHistogram,
    /// Start sync of the open window (time windows: aligned start; photon windows: first photon).
    start_sync: Option<u64>,
    photons_in_window: u64,
}

impl HistogramWindower {
    /// A windower producing histograms of `layout`.
    ///
    /// # Errors
    /// As [`MicroTimeHistogram::new`]; [`TcspcError::InvalidArgument`] for a zero window.
    pub fn new(layout: HistogramLayout, window: HistogramWindow) -> Result<Self> {
        if matches!(
            window,
            HistogramWindow::Photons(0) | HistogramWindow::Syncs(0)
        ) {
            return Err(TcspcError::InvalidArgument(
                "window length must be > 0".into(),
            ));
        }
        Ok(HistogramWindower {
            window,
            current: MicroTimeHistogram::new(layout)?,
            start_sync: None,
            photons_in_window: 0,
        })
    }

    fn close(&mut self, end_sync: u64, out: &mut Vec<WindowedHistogram>) {
        if let Some(start) = self.start_sync.take() {
            out.push(WindowedHistogram {
                window_start_sync: start,
                window_end_sync: end_sync.max(start + 1),
                histogram: self.current.clone(),
            });
        }
        self.current.clear();
        self.photons_in_window = 0;
    }

    /// Adds photon columns, appending every window they close to `out`. A sync window with no
    /// photon is not emitted (a rate of zero has no row).
    ///
    /// # Errors
    /// [`TcspcError::LengthMismatch`] if the slices differ in length.
    pub fn push_columns(
        &mut self,
        macro_time_sync: &[u64],
        micro_time_bins: &[u16],
        channel: &[u8],
        marker_flags: &[u8],
        out: &mut Vec<WindowedHistogram>,
    ) -> Result<()> {
        let n = macro_time_sync.len();
        if micro_time_bins.len() != n || channel.len() != n || marker_flags.len() != n {
            return Err(TcspcError::LengthMismatch(format!(
                "macro {n}, micro {}, channel {}, markers {}",
                micro_time_bins.len(),
                channel.len(),
                marker_flags.len()
            )));
        }
        // The window rules live in one place, the sink that decoding feeds.
        let mut sink = self.sink(out);
        let rows = macro_time_sync
            .iter()
            .zip(micro_time_bins)
            .zip(channel)
            .zip(marker_flags);
        for (((&t, &micro), &ch), &marker) in rows {
            if marker == 0 {
                sink.photon(t, micro, ch);
            }
        }
        Ok(())
    }

    /// Adds decoded photon columns (see [`Self::push_columns`]).
    ///
    /// # Errors
    /// As [`Self::push_columns`].
    pub fn push(
        &mut self,
        photons: &PhotonColumns,
        out: &mut Vec<WindowedHistogram>,
    ) -> Result<()> {
        self.push_columns(
            &photons.macro_time_sync,
            &photons.micro_time_bins,
            &photons.channel,
            &photons.marker_flags,
            out,
        )
    }

    /// Closes the open window (end of stream), if it holds photons. It ends after its last
    /// photon (a sync window no later than its aligned end): the stream stopped there, so the
    /// window's count rates are over the time it was observed.
    pub fn flush(&mut self, out: &mut Vec<WindowedHistogram>) {
        if let Some(s) = self.start_sync {
            let after_last = self.current.sync_span().map_or(s + 1, |(_, l)| l + 1);
            let end = match self.window {
                HistogramWindow::Syncs(w) => after_last.min(s + w),
                HistogramWindow::Photons(_) => after_last,
            };
            self.close(end, out);
        }
    }
}

/// Schema of the `tcspc_histograms` table built by [`histograms_to_record_batch`]: one row per
/// window and channel.
pub fn histogram_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("window_start_ps", DataType::Int64, false),
        Field::new("window_end_ps", DataType::Int64, false),
        Field::new("channel", DataType::UInt8, false),
        Field::new("photon_count", DataType::UInt64, false),
        Field::new("count_rate_hz", DataType::Float64, false),
        Field::new("sync_rate_hz", DataType::Float64, false),
        Field::new("pile_up", DataType::Boolean, false),
        Field::new("bin_width_ps", DataType::Float64, false),
        Field::new(
            "counts",
            DataType::List(Arc::new(Field::new("item", DataType::UInt32, true))),
            false,
        ),
        Field::new("beyond_last_bin_photons", DataType::UInt64, true),
        Field::new("other_channel_photons", DataType::UInt64, true),
        Field::new("irf_counts", irf_list_type(), true),
    ]))
}

/// The type of `irf_counts`: the measured IRF a histogram message came with.
fn irf_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
}

/// Builds the `tcspc_histograms` batch from closed windows.
///
/// Rates are photons over the window length; `pile_up` is the rate above
/// [`PILE_UP_FRACTION`] of the sync rate. No photon of a window goes uncounted:
/// `photon_count` is the channel's binned photons, `beyond_last_bin_photons` the channel's
/// photons past the last bin, and `other_channel_photons` (the same on every row of a window)
/// the window's photons on channels without a row.
///
/// # Errors
/// [`TcspcError::Arrow`] if Arrow rejects the batch.
pub fn histograms_to_record_batch(windows: &[WindowedHistogram]) -> Result<RecordBatch> {
    let schema = histogram_schema();
    let rows: usize = windows.iter().map(|w| w.histogram.layout.channels).sum();
    let mut start = Vec::with_capacity(rows);
    let mut end = Vec::with_capacity(rows);
    let mut channel = Vec::with_capacity(rows);
    let mut photons = Vec::with_capacity(rows);
    let mut rate = Vec::with_capacity(rows);
    let mut sync = Vec::with_capacity(rows);
    let mut pile = Vec::with_capacity(rows);
    let mut width = Vec::with_capacity(rows);
    let mut beyond = Vec::with_capacity(rows);
    let mut other = Vec::with_capacity(rows);
    let values: usize = windows.iter().map(|w| w.histogram.counts.len()).sum();
    let mut counts = ListBuilder::with_capacity(UInt32Builder::with_capacity(values), rows);
    for w in windows {
        let layout = &w.histogram.layout;
        let period_ps = layout.sync_period_ps();
        let duration = w.duration_s();
        for ch in 0..layout.channels {
            start.push((w.window_start_sync as f64 * period_ps).round() as i64);
            end.push((w.window_end_sync as f64 * period_ps).round() as i64);
            channel.push(ch as u8);
            photons.push(w.histogram.photons(ch));
            rate.push(if duration > 0.0 {
                w.histogram.photons(ch) as f64 / duration
            } else {
                0.0
            });
            sync.push(layout.sync_rate_hz);
            pile.push(w.histogram.pile_up(ch, duration));
            width.push(layout.bin_width_ps());
            beyond.push(w.histogram.beyond_last_bin(ch));
            other.push(w.histogram.other_channel_photons());
            counts.values().append_slice(w.histogram.counts(ch));
            counts.append(true);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(start)),
        Arc::new(Int64Array::from(end)),
        Arc::new(UInt8Array::from(channel)),
        Arc::new(UInt64Array::from(photons)),
        Arc::new(Float64Array::from(rate)),
        Arc::new(Float64Array::from(sync)),
        Arc::new(BooleanArray::from(pile)),
        Arc::new(Float64Array::from(width)),
        Arc::new(counts.finish()),
        Arc::new(UInt64Array::from(beyond)),
        Arc::new(UInt64Array::from(other)),
        // Windows of photons carry no IRF of their own.
        arrow_array::new_null_array(&irf_list_type(), rows),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests;
