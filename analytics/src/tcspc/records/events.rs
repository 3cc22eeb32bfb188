//! Decoded events in the instrument's own units, written at memory speed.
//!
//! Histograms need only each event's native macro time, micro-time bin, channel and marker
//! bits; the ps columns of the stored `photons` table are a second pass that only rows being
//! stored pay for. [`decode_events`] writes its four columns through their spare capacity, one
//! store per column and event. `Vec::push` on six columns (length bookkeeping and a capacity
//! check each) with the ps conversions in the same loop had made [`super::decode_records`] run
//! at a fifth of the fused decode-and-histogram rate, and it was most of the live photon path.
//! [`scan_records`] only counts and advances the overflow state, for a consumer that decodes
//! later, straight into its own sink.

use std::mem::MaybeUninit;

use super::{
    decode_into, DecodeCounts, DecoderState, EventSink, RecordType, Result, TcspcError,
    PQ_RECORD_BYTES, T2_SYNC_CHANNEL,
};

/// Decoded events as four columns in native units, in record order.
///
/// A row is a photon when `marker_flags == 0`; marker rows carry `channel = 0` and micro time
/// 0; sync rows (HydraHarp-family T2 only) carry `channel =` [`T2_SYNC_CHANNEL`]. Overflow
/// records give no row. [`super::PhotonColumns::from_events`] adds the ps columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventColumns {
    /// Absolute macro time: sync periods for T3 records, time-tag units for T2.
    pub macro_time: Vec<u64>,
    /// Micro time in native bins; 0 for T2 records and markers.
    pub micro_time_bins: Vec<u16>,
    /// 0-based detector channel.
    pub channel: Vec<u8>,
    /// Marker bits of marker records, 0 for photons.
    pub marker_flags: Vec<u8>,
}

impl EventColumns {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.macro_time.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.macro_time.is_empty()
    }

    /// Removes all rows, keeping the allocations.
    pub fn clear(&mut self) {
        self.macro_time.clear();
        self.micro_time_bins.clear();
        self.channel.clear();
        self.marker_flags.clear();
    }
}

/// Writes events into the uninitialised tails of four columns.
struct SlotSink<'a> {
    macro_time: &'a mut [MaybeUninit<u64>],
    micro_time_bins: &'a mut [MaybeUninit<u16>],
    channel: &'a mut [MaybeUninit<u8>],
    marker_flags: &'a mut [MaybeUninit<u8>],
    written: usize,
}

impl SlotSink<'_> {
    #[inline(always)]
    fn put(&mut self, macro_time: u64, micro_time_bins: u16, channel: u8, marker_flags: u8) {
        let k = self.written;
        self.macro_time[k].write(macro_time);
        self.micro_time_bins[k].write(micro_time_bins);
        self.channel[k].write(channel);
        self.marker_flags[k].write(marker_flags);
        self.written = k + 1;
    }
}

impl EventSink for SlotSink<'_> {
    #[inline(always)]
    fn photon(&mut self, macro_time: u64, micro_time_bins: u16, channel: u8) {
        self.put(macro_time, micro_time_bins, channel, 0);
    }

    #[inline(always)]
    fn marker(&mut self, macro_time: u64, marker_flags: u8) {
        self.put(macro_time, 0, 0, marker_flags);
    }

    #[inline(always)]
    fn sync(&mut self, macro_time: u64) {
        self.put(macro_time, 0, T2_SYNC_CHANNEL, 0);
    }
}

/// Decodes raw records, appending one row per photon, marker and (T2) sync to the four
/// columns; every column grows by the same number of rows.
pub(crate) fn decode_native(
    record_type: RecordType,
    bytes: &[u8],
    state: &mut DecoderState,
    macro_time: &mut Vec<u64>,
    micro_time_bins: &mut Vec<u16>,
    channel: &mut Vec<u8>,
    marker_flags: &mut Vec<u8>,
) -> Result<DecodeCounts> {
    if !bytes.len().is_multiple_of(PQ_RECORD_BYTES) {
        return Err(TcspcError::PartialRecord {
            len: bytes.len(),
            record_bytes: PQ_RECORD_BYTES,
        });
    }
    // Every record gives at most one row.
    let records = bytes.len() / PQ_RECORD_BYTES;
    macro_time.reserve(records);
    micro_time_bins.reserve(records);
    channel.reserve(records);
    marker_flags.reserve(records);
    let mut sink = SlotSink {
        macro_time: &mut macro_time.spare_capacity_mut()[..records],
        micro_time_bins: &mut micro_time_bins.spare_capacity_mut()[..records],
        channel: &mut channel.spare_capacity_mut()[..records],
        marker_flags: &mut marker_flags.spare_capacity_mut()[..records],
        written: 0,
    };
    let counts = decode_into(record_type, bytes, state, &mut sink)?;
    let written = sink.written;
    // SAFETY: `sink.put` is the only writer and initialises slot `k` of all four spare tails
    // before counting it, so the first `written` spare slots of each column are initialised;
    // `written <= records <= capacity - len` because the slices were cut to `records` (a put
    // past them would have panicked on the index, before this point).
    unsafe {
        macro_time.set_len(macro_time.len() + written);
        micro_time_bins.set_len(micro_time_bins.len() + written);
        channel.set_len(channel.len() + written);
        marker_flags.set_len(marker_flags.len() + written);
    }
    Ok(counts)
}

/// Decodes raw little-endian PicoQuant records into native-unit columns, appending one row per
/// photon, marker and (T2) sync to `out`. Overflow records advance `state`, so consecutive
/// chunks of one stream decode to the same absolute times as one buffer.
///
/// # Errors
/// [`TcspcError::PartialRecord`] if `bytes` is not whole 4-byte records (nothing is decoded).
///
/// # Example
/// ```
/// use flowdaq_analytics::tcspc::records::*;
/// // HydraHarp v2 T3: an overflow of 3 x 1024 syncs, then a photon on channel 1, bin 100, sync 7.
/// let records = [(1u32 << 31) | (63 << 25) | 3, (1 << 25) | (100 << 10) | 7];
/// let bytes: Vec<u8> = records.iter().flat_map(|r| r.to_le_bytes()).collect();
/// let mut events = EventColumns::default();
/// let counts = decode_events(RecordType::HydraHarpV2T3, &bytes, &mut DecoderState::default(), &mut events)?;
/// assert_eq!((counts.photons, counts.overflows), (1, 1));
/// assert_eq!((events.macro_time[0], events.micro_time_bins[0], events.channel[0]), (3 * 1024 + 7, 100, 1));
/// # Ok::<(), flowdaq_analytics::tcspc::TcspcError>(())
/// ```
pub fn decode_events(
    record_type: RecordType,
    bytes: &[u8],
    state: &mut DecoderState,
    out: &mut EventColumns,
) -> Result<DecodeCounts> {
    decode_native(
        record_type,
        bytes,
        state,
        &mut out.macro_time,
        &mut out.micro_time_bins,
        &mut out.channel,
        &mut out.marker_flags,
    )
}

/// A sink that keeps nothing: decoding into it only counts and advances the state.
struct CountOnly;

impl EventSink for CountOnly {
    #[inline(always)]
    fn photon(&mut self, _macro_time: u64, _micro_time_bins: u16, _channel: u8) {}

    #[inline(always)]
    fn marker(&mut self, _macro_time: u64, _marker_flags: u8) {}
}

/// Counts raw records by kind and advances `state` past them without writing any event: what
/// a consumer needs to accept a chunk of a stream (and keep the overflow state for the next)
/// before it decides whether, and into what, the chunk is decoded.
///
/// # Errors
/// [`TcspcError::PartialRecord`] if `bytes` is not whole 4-byte records (`state` unchanged).
pub fn scan_records(
    record_type: RecordType,
    bytes: &[u8],
    state: &mut DecoderState,
) -> Result<DecodeCounts> {
    decode_into(record_type, bytes, state, &mut CountOnly)
}
