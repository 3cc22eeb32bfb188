//! Decoding of raw TTTR records (PicoQuant 32-bit records, 64-bit time tags) into photon columns.
//!
//! Live instruments deliver records in chunks, so the only state (the accumulated overflow
//! offset, the last sync) lives in small `Copy` structs the caller keeps between chunks and
//! resets explicitly after a gap. The hot loops never allocate: outputs are reserved once per
//! chunk, and the decode loop is generic over an [`EventSink`] so a histogram can be filled
//! straight from the records without materialising columns.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, UInt16Array, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::{Result, TcspcError};

mod events;
pub use events::{decode_events, scan_records, EventColumns};

/// Size of one PicoQuant TTTR record in bytes.
pub const PQ_RECORD_BYTES: usize = 4;
/// Size of one time tag in the Swabian `Tag` layout (see [`decode_swabian_tags`]).
pub const SWABIAN_TAG_BYTES: usize = 16;
/// `channel` value of the sync events that HydraHarp-family T2 records carry.
pub const T2_SYNC_CHANNEL: u8 = 255;
/// Number of distinct photon channels a record format can address (6 bits).
pub const MAX_CHANNELS: usize = 64;

/// The TTTR record formats PicoQuant instruments write (`TTResultFormat_TTTRRecType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// PicoHarp 300 T2 (0x00010203): 28-bit time tag, 4-bit channel.
    PicoHarpT2,
    /// PicoHarp 300 T3 (0x00010303): 16-bit sync count, 12-bit micro time, 4-bit channel.
    PicoHarpT3,
    /// HydraHarp 400 format version 1, T2 (0x00010204).
    HydraHarpV1T2,
    /// HydraHarp 400 format version 1, T3 (0x00010304).
    HydraHarpV1T3,
    /// HydraHarp 400 format version 2, T2 (0x01010204).
    HydraHarpV2T2,
    /// HydraHarp 400 format version 2, T3 (0x01010304).
    HydraHarpV2T3,
    /// TimeHarp 260 N, T2 (0x00010205).
    TimeHarp260NT2,
    /// TimeHarp 260 N, T3 (0x00010305).
    TimeHarp260NT3,
    /// TimeHarp 260 P, T2 (0x00010206).
    TimeHarp260PT2,
    /// TimeHarp 260 P, T3 (0x00010306).
    TimeHarp260PT3,
    /// Generic T2 of MultiHarp and PicoHarp 330 (0x00010207).
    GenericT2,
    /// Generic T3 of MultiHarp and PicoHarp 330 (0x00010307).
    GenericT3,
    /// Becker & Hickl SPC-130/134/140/150/160/830 FIFO records (flowdaq's code 0x42480130:
    /// "BH" and the model; not a PicoQuant code): 12-bit macro time, 4-bit routing channel,
    /// 12-bit ADC (micro time reversed), marker, gap, overflow and invalid bits.
    BeckerHicklSpc130,
}

/// Bit layout family of a record type; all that the decode loop needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    PicoHarpT2,
    PicoHarpT3,
    /// HydraHarp-family T2; `v1` overflows always count one wrap of 33,552,000 units.
    HydraT2 {
        v1: bool,
    },
    /// HydraHarp-family T3; `v1` overflows always count one wrap of 1024 syncs.
    HydraT3 {
        v1: bool,
    },
    Spc130,
}

impl RecordType {
    /// All record types, in code order.
    pub const ALL: [RecordType; 13] = [
        RecordType::PicoHarpT2,
        RecordType::PicoHarpT3,
        RecordType::HydraHarpV1T2,
        RecordType::HydraHarpV1T3,
        RecordType::HydraHarpV2T2,
        RecordType::HydraHarpV2T3,
        RecordType::TimeHarp260NT2,
        RecordType::TimeHarp260NT3,
        RecordType::TimeHarp260PT2,
        RecordType::TimeHarp260PT3,
        RecordType::GenericT2,
        RecordType::GenericT3,
        RecordType::BeckerHicklSpc130,
    ];

    /// Looks up a `TTResultFormat_TTTRRecType` code.
    ///
    /// # Errors
    /// [`TcspcError::UnknownRecordType`] for any other code.
    pub fn from_code(code: u32) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.code() == code)
            .ok_or(TcspcError::UnknownRecordType(code))
    }

    /// The `TTResultFormat_TTTRRecType` code of this format.
    pub fn code(self) -> u32 {
        match self {
            RecordType::PicoHarpT2 => 0x0001_0203,
            RecordType::PicoHarpT3 => 0x0001_0303,
            RecordType::HydraHarpV1T2 => 0x0001_0204,
            RecordType::HydraHarpV1T3 => 0x0001_0304,
            RecordType::HydraHarpV2T2 => 0x0101_0204,
            RecordType::HydraHarpV2T3 => 0x0101_0304,
            RecordType::TimeHarp260NT2 => 0x0001_0205,
            RecordType::TimeHarp260NT3 => 0x0001_0305,
            RecordType::TimeHarp260PT2 => 0x0001_0206,
            RecordType::TimeHarp260PT3 => 0x0001_0306,
            RecordType::GenericT2 => 0x0001_0207,
            RecordType::GenericT3 => 0x0001_0307,
            RecordType::BeckerHicklSpc130 => 0x4248_0130,
        }
    }

    /// True for T3 formats (sync count + micro time), false for T2 (absolute time tags).
    pub fn is_t3(self) -> bool {
        matches!(
            self.layout(),
            Layout::PicoHarpT3 | Layout::HydraT3 { .. } | Layout::Spc130
        )
    }

    /// Number of distinct micro-time values a T3 record can hold (0 for T2).
    pub fn micro_time_range(self) -> usize {
        match self.layout() {
            Layout::PicoHarpT3 | Layout::Spc130 => 1 << 12,
            Layout::HydraT3 { .. } => 1 << 15,
            _ => 0,
        }
    }

    fn layout(self) -> Layout {
        match self {
            RecordType::PicoHarpT2 => Layout::PicoHarpT2,
            RecordType::PicoHarpT3 => Layout::PicoHarpT3,
            RecordType::HydraHarpV1T2 => Layout::HydraT2 { v1: true },
            RecordType::HydraHarpV1T3 => Layout::HydraT3 { v1: true },
            RecordType::HydraHarpV2T2
            | RecordType::TimeHarp260NT2
            | RecordType::TimeHarp260PT2
            | RecordType::GenericT2 => Layout::HydraT2 { v1: false },
            RecordType::HydraHarpV2T3
            | RecordType::TimeHarp260NT3
            | RecordType::TimeHarp260PT3
            | RecordType::GenericT3 => Layout::HydraT3 { v1: false },
            RecordType::BeckerHicklSpc130 => Layout::Spc130,
        }
    }
}

/// Converts native units into picoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeBase {
    /// Length of one macro-time unit in ps: the sync period for T3 records, the time-tag
    /// resolution for T2 records (PTU tag `MeasDesc_GlobalResolution`, in ps).
    pub macro_unit_ps: f64,
    /// Width of one native micro-time bin in ps (PTU tag `MeasDesc_Resolution`); unused for T2.
    pub micro_bin_ps: f64,
}

impl TimeBase {
    /// Checks that both units are finite and positive (the micro bin may be 0 for T2 data).
    ///
    /// # Errors
    /// [`TcspcError::InvalidArgument`] otherwise.
    pub fn validate(&self) -> Result<()> {
        if !(self.macro_unit_ps.is_finite() && self.macro_unit_ps > 0.0) {
            return Err(TcspcError::InvalidArgument(format!(
                "macro_unit_ps {} must be finite and > 0",
                self.macro_unit_ps
            )));
        }
        if !(self.micro_bin_ps.is_finite() && self.micro_bin_ps >= 0.0) {
            return Err(TcspcError::InvalidArgument(format!(
                "micro_bin_ps {} must be finite and >= 0",
                self.micro_bin_ps
            )));
        }
        Ok(())
    }
}

/// Decoding state that must survive between chunks of one record stream.
///
/// It is only the accumulated wrap-around offset; a consumer that detects a gap in the stream
/// (a missing message) calls [`DecoderState::reset`], because the overflows in the lost records
/// are unknown and every later absolute time would be wrong by an unknown amount anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderState {
    /// Accumulated overflow offset in native macro units (syncs for T3, tag units for T2).
    pub overflow_offset: u64,
}

impl DecoderState {
    /// Forgets the accumulated overflows (start of a new stream, or after a gap).
    pub fn reset(&mut self) {
        self.overflow_offset = 0;
    }
}

/// What a decode call saw, by kind of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeCounts {
    /// Records (or time tags) read.
    pub records: u64,
    /// Photon records.
    pub photons: u64,
    /// Marker records.
    pub markers: u64,
    /// Overflow (wrap-around) records; one record may stand for several wraps.
    pub overflows: u64,
    /// Sync records (HydraHarp-family T2 only; T3 syncs are implicit).
    pub syncs: u64,
    /// Records that the format specification does not allow (e.g. PicoHarp T3 channel 0),
    /// and, for time tags, tags on unconfigured channels or before the first sync. Skipped.
    pub invalid: u64,
    /// Photons per detector channel (0-based).
    pub photons_per_channel: [u64; MAX_CHANNELS],
    /// Marker records per marker-bit pattern (index = the 4-bit pattern).
    pub markers_per_pattern: [u64; 16],
}

impl Default for DecodeCounts {
    fn default() -> Self {
        DecodeCounts {
            records: 0,
            photons: 0,
            markers: 0,
            overflows: 0,
            syncs: 0,
            invalid: 0,
            photons_per_channel: [0; MAX_CHANNELS],
            markers_per_pattern: [0; 16],
        }
    }
}

impl DecodeCounts {
    /// Adds another call's counts to these.
    pub fn merge(&mut self, other: &DecodeCounts) {
        self.records += other.records;
        self.photons += other.photons;
        self.markers += other.markers;
        self.overflows += other.overflows;
        self.syncs += other.syncs;
        self.invalid += other.invalid;
        for (a, b) in self
            .photons_per_channel
            .iter_mut()
            .zip(other.photons_per_channel)
        {
            *a += b;
        }
        for (a, b) in self
            .markers_per_pattern
            .iter_mut()
            .zip(other.markers_per_pattern)
        {
            *a += b;
        }
    }
}

/// Receives decoded events; implemented by [`PhotonColumns`] (through [`decode_records`]) and by
/// [`crate::tcspc::histogram::MicroTimeHistogram`] for the fused decode-and-histogram path.
///
/// Times are native: `macro_time` in sync periods (T3) or time-tag units (T2), micro time in
/// native bins.
pub trait EventSink {
    /// One photon on a 0-based detector `channel`.
    fn photon(&mut self, macro_time: u64, micro_time_bins: u16, channel: u8);
    /// One marker record with its marker bits (never 0).
    fn marker(&mut self, macro_time: u64, marker_flags: u8);
    /// One sync event (HydraHarp-family T2 records only).
    fn sync(&mut self, _macro_time: u64) {}
}

/// Decodes raw little-endian PicoQuant records into any [`EventSink`].
///
/// Overflow records advance `state`, so consecutive chunks of one stream decode to the same
/// absolute times as one big buffer.
///
/// # Errors
/// [`TcspcError::PartialRecord`] if `bytes` is not a whole number of 4-byte records (nothing is
/// decoded then).
pub fn decode_into<S: EventSink>(
    record_type: RecordType,
    bytes: &[u8],
    state: &mut DecoderState,
    sink: &mut S,
) -> Result<DecodeCounts> {
    if !bytes.len().is_multiple_of(PQ_RECORD_BYTES) {
        return Err(TcspcError::PartialRecord {
            len: bytes.len(),
            record_bytes: PQ_RECORD_BYTES,
        });
    }
    let mut counts = DecodeCounts {
        records: (bytes.len() / PQ_RECORD_BYTES) as u64,
        ..Default::default()
    };
    match record_type.layout() {
        Layout::PicoHarpT3 => decode_picoharp_t3(bytes, state, sink, &mut counts),
        Layout::PicoHarpT2 => decode_picoharp_t2(bytes, state, sink, &mut counts),
        Layout::HydraT3 { v1 } => decode_hydra_t3(bytes, v1, state, sink, &mut counts),
        Layout::HydraT2 { v1 } => decode_hydra_t2(bytes, v1, state, sink, &mut counts),
        Layout::Spc130 => decode_spc130(bytes, state, sink, &mut counts),
    }
    counts.photons = counts.photons_per_channel.iter().sum();
    counts.markers = counts.markers_per_pattern.iter().sum();
    Ok(counts)
}

#[inline(always)]
fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// PicoHarp T3: bits 0-15 sync count, 16-27 micro time, 28-31 channel (1-4 photons, 15 special:
/// the low 4 micro-time bits are marker bits, 0 meaning an overflow of 65,536 syncs).
fn decode_picoharp_t3<S: EventSink>(
    bytes: &[u8],
    state: &mut DecoderState,
    sink: &mut S,
    c: &mut DecodeCounts,
) {
    const WRAP: u64 = 65_536;
    let mut ofl = state.overflow_offset;
    for r in words(bytes) {
        let nsync = u64::from(r & 0xFFFF);
        let dtime = (r >> 16) & 0x0FFF;
        let chan = r >> 28;
        if chan == 15 {
            let markers = (dtime & 0xF) as u8;
            if markers == 0 {
                ofl += WRAP;
                c.overflows += 1;
            } else {
                sink.marker(ofl + nsync, markers);
                c.markers_per_pattern[markers as usize] += 1;
            }
        } else if (1..=4).contains(&chan) {
            let ch = (chan - 1) as u8;
            sink.photon(ofl + nsync, dtime as u16, ch);
            c.photons_per_channel[ch as usize] += 1;
        } else {
            c.invalid += 1;
        }
    }
    state.overflow_offset = ofl;
}

/// Becker & Hickl SPC-130 FIFO records: bits 0-11 macro time, 12-15 routing channel, 16-27 ADC
/// value (micro time = 4095 - ADC: the TAC runs reversed), 28 MARK, 29 GAP (data were lost
/// before this record), 30 MTOV (the macro time wrapped, 4096 units, before this record), 31
/// INVALID. INVALID with MTOV: bits 0-27 count the wraps; INVALID with MARK: a marker whose
/// bits are the routing field; INVALID alone: a photon the hardware discarded.
fn decode_spc130<S: EventSink>(
    bytes: &[u8],
    state: &mut DecoderState,
    sink: &mut S,
    c: &mut DecodeCounts,
) {
    const WRAP: u64 = 4096;
    let mut ofl = state.overflow_offset;
    for r in words(bytes) {
        let invalid = r >> 31 != 0;
        let overflow = (r >> 30) & 1 != 0;
        let mark = (r >> 28) & 1 != 0;
        let macro_time = u64::from(r & 0xFFF);
        let routing = ((r >> 12) & 0xF) as u8;
        if invalid {
            if overflow {
                ofl += WRAP * u64::from(r & 0x0FFF_FFFF);
                c.overflows += 1;
            } else if mark && routing != 0 {
                sink.marker(ofl + macro_time, routing);
                c.markers_per_pattern[routing as usize] += 1;
            } else {
                c.invalid += 1;
            }
            continue;
        }
        if overflow {
            // A photon record that also wraps: counted as the photon it is (every record is
            // counted once), its wrap applied.
            ofl += WRAP;
        }
        let adc = ((r >> 16) & 0xFFF) as u16;
        sink.photon(ofl + macro_time, 4095 - adc, routing);
        c.photons_per_channel[routing as usize] += 1;
    }
    state.overflow_offset = ofl;
}

/// PicoHarp T2: bits 0-27 time tag (4 ps units), 28-31 channel (0-4 photons, 15 special: the
/// low 4 time bits are marker bits, 0 meaning an overflow of 210,698,240 units).
fn decode_picoharp_t2<S: EventSink>(
    bytes: &[u8],
    state: &mut DecoderState,
    sink: &mut S,
    c: &mut DecodeCounts,
) {
    const WRAP: u64 = 210_698_240;
    let mut ofl = state.overflow_offset;
    for r in words(bytes) {
        let time = u64::from(r & 0x0FFF_FFFF);
        let chan = r >> 28;
        if chan == 15 {
            let markers = (time & 0xF) as u8;
            if markers == 0 {
                ofl += WRAP;
                c.overflows += 1;
            } else {
                // As PicoQuant's demo reader and ptufile: the time keeps its low (marker) bits.
                sink.marker(ofl + time, markers);
                c.markers_per_pattern[markers as usize] += 1;
            }
        } else if chan <= 4 {
            sink.photon(ofl + time, 0, chan as u8);
            c.photons_per_channel[chan as usize] += 1;
        } else {
            c.invalid += 1;
        }
    }
    state.overflow_offset = ofl;
}

/// HydraHarp-family T3: bits 0-9 sync count, 10-24 micro time, 25-30 channel, 31 special.
/// Special channel 63 is an overflow (v2: the sync field counts the wraps, 0 meaning one),
/// special channels 1-15 are markers.
fn decode_hydra_t3<S: EventSink>(
    bytes: &[u8],
    v1: bool,
    state: &mut DecoderState,
    sink: &mut S,
    c: &mut DecodeCounts,
) {
    const WRAP: u64 = 1024;
    let mut ofl = state.overflow_offset;
    for r in words(bytes) {
        let nsync = u64::from(r & 0x3FF);
        let dtime = ((r >> 10) & 0x7FFF) as u16;
        let chan = (r >> 25) & 0x3F;
        if r >> 31 == 0 {
            sink.photon(ofl + nsync, dtime, chan as u8);
            c.photons_per_channel[chan as usize] += 1;
        } else if chan == 0x3F {
            ofl += WRAP * if v1 || nsync == 0 { 1 } else { nsync };
            c.overflows += 1;
        } else if (1..=15).contains(&chan) {
            sink.marker(ofl + nsync, chan as u8);
            c.markers_per_pattern[chan as usize] += 1;
        } else {
            c.invalid += 1;
        }
    }
    state.overflow_offset = ofl;
}

/// HydraHarp-family T2: bits 0-24 time tag, 25-30 channel, 31 special. Special channel 63 is an
/// overflow (v1: 33,552,000 units; v2: 2^25 units times the tag field, 0 meaning one), special
/// channel 0 a sync, special channels 1-15 markers.
fn decode_hydra_t2<S: EventSink>(
    bytes: &[u8],
    v1: bool,
    state: &mut DecoderState,
    sink: &mut S,
    c: &mut DecodeCounts,
) {
    let mut ofl = state.overflow_offset;
    for r in words(bytes) {
        let tag = u64::from(r & 0x01FF_FFFF);
        let chan = (r >> 25) & 0x3F;
        if r >> 31 == 0 {
            sink.photon(ofl + tag, 0, chan as u8);
            c.photons_per_channel[chan as usize] += 1;
        } else if chan == 0x3F {
            ofl += if v1 {
                33_552_000
            } else {
                (1u64 << 25) * if tag == 0 { 1 } else { tag }
            };
            c.overflows += 1;
        } else if chan == 0 {
            sink.sync(ofl + tag);
            c.syncs += 1;
        } else if chan <= 15 {
            sink.marker(ofl + tag, chan as u8);
            c.markers_per_pattern[chan as usize] += 1;
        } else {
            c.invalid += 1;
        }
    }
    state.overflow_offset = ofl;
}

/// Decoded events as columns, ready to become the Arrow `photons` batch
/// ([`PhotonColumns::to_record_batch`]).
///
/// A row is a photon when `marker_flags == 0`; marker rows carry `channel = 0` and zero micro
/// time; sync rows (HydraHarp-family T2 only) carry `channel =` [`T2_SYNC_CHANNEL`].
/// Overflow records produce no row. Clear and reuse one instance to avoid reallocating.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhotonColumns {
    /// Absolute macro time in native units: sync periods for T3 records, time-tag units for T2.
    pub macro_time_sync: Vec<u64>,
    /// Absolute macro time in ps (T3: time of the sync pulse; T2: time of the event), rounded.
    pub macro_time_ps: Vec<i64>,
    /// Micro time (start-stop time after the sync) in native bins; 0 for T2 and markers.
    pub micro_time_bins: Vec<u16>,
    /// Micro time in ps, rounded; 0 for T2 and markers.
    pub micro_time_ps: Vec<i32>,
    /// 0-based detector channel.
    pub channel: Vec<u8>,
    /// Marker bits of marker records, 0 for photons.
    pub marker_flags: Vec<u8>,
}

impl PhotonColumns {
    /// Empty columns with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        let mut c = PhotonColumns::default();
        c.reserve(rows);
        c
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.macro_time_ps.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.macro_time_ps.is_empty()
    }

    /// Removes all rows, keeping the allocations.
    pub fn clear(&mut self) {
        self.macro_time_sync.clear();
        self.macro_time_ps.clear();
        self.micro_time_bins.clear();
        self.micro_time_ps.clear();
        self.channel.clear();
        self.marker_flags.clear();
    }

    /// Makes room for `additional` more rows.
    pub fn reserve(&mut self, additional: usize) {
        self.macro_time_sync.reserve(additional);
        self.macro_time_ps.reserve(additional);
        self.micro_time_bins.reserve(additional);
        self.micro_time_ps.reserve(additional);
        self.channel.reserve(additional);
        self.marker_flags.reserve(additional);
    }

    #[inline(always)]
    fn push(
        &mut self,
        macro_sync: u64,
        macro_ps: i64,
        micro_bins: u16,
        micro_ps: i32,
        channel: u8,
        marker: u8,
    ) {
        self.macro_time_sync.push(macro_sync);
        self.macro_time_ps.push(macro_ps);
        self.micro_time_bins.push(micro_bins);
        self.micro_time_ps.push(micro_ps);
        self.channel.push(channel);
        self.marker_flags.push(marker);
    }

    /// The Arrow schema of [`PhotonColumns::to_record_batch`]: `macro_time_sync` UInt64,
    /// `macro_time_ps` Int64, `micro_time_bins` UInt16, `micro_time_ps` Int32, `channel` UInt8,
    /// `marker_flags` UInt8, none nullable. The last four match the server's `photons` table.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("macro_time_sync", DataType::UInt64, false),
            Field::new("macro_time_ps", DataType::Int64, false),
            Field::new("micro_time_bins", DataType::UInt16, false),
            Field::new("micro_time_ps", DataType::Int32, false),
            Field::new("channel", DataType::UInt8, false),
            Field::new("marker_flags", DataType::UInt8, false),
        ]))
    }

    /// Moves the columns into an Arrow batch (the vectors become the buffers, no copy).
    ///
    /// # Errors
    /// [`TcspcError::Arrow`] if the columns were edited to different lengths.
    pub fn into_record_batch(self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(self.macro_time_sync)),
            Arc::new(Int64Array::from(self.macro_time_ps)),
            Arc::new(UInt16Array::from(self.micro_time_bins)),
            Arc::new(Int32Array::from(self.micro_time_ps)),
            Arc::new(UInt8Array::from(self.channel)),
            Arc::new(UInt8Array::from(self.marker_flags)),
        ];
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }

    /// Copies the columns into an Arrow batch, keeping `self` for reuse.
    ///
    /// # Errors
    /// [`TcspcError::Arrow`] if the columns were edited to different lengths.
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        self.clone().into_record_batch()
    }
}

/// Rounds a non-negative finite value to the nearest integer (truncation of `x + 0.5`, which
/// avoids a libm `round` call per row on baseline x86-64).
#[inline(always)]
fn round_i64(x: f64) -> i64 {
    (x + 0.5) as i64
}

impl PhotonColumns {
    /// The columns of native events with the time base applied: the native columns move in
    /// (no copy) and the ps columns are computed from them.
    pub fn from_events(events: EventColumns, time_base: TimeBase) -> PhotonColumns {
        let mut out = PhotonColumns {
            macro_time_sync: events.macro_time,
            macro_time_ps: Vec::new(),
            micro_time_bins: events.micro_time_bins,
            micro_time_ps: Vec::new(),
            channel: events.channel,
            marker_flags: events.marker_flags,
        };
        out.fill_ps(time_base);
        out
    }

    /// Computes the ps columns of the rows appended to the native columns since they were
    /// last equal in length (columns edited out of step are left so, for
    /// [`PhotonColumns::to_record_batch`] to refuse). Markers and syncs have micro time 0.
    fn fill_ps(&mut self, time_base: TimeBase) {
        let from = self.macro_time_ps.len();
        let macro_unit_ps = time_base.macro_unit_ps;
        let micro_bin_ps = time_base.micro_bin_ps;
        self.macro_time_ps.extend(
            self.macro_time_sync
                .get(from..)
                .unwrap_or_default()
                .iter()
                .map(|&t| round_i64(t as f64 * macro_unit_ps)),
        );
        self.micro_time_ps.extend(
            self.micro_time_bins
                .get(from..)
                .unwrap_or_default()
                .iter()
                .map(|&b| round_i64(f64::from(b) * micro_bin_ps) as i32),
        );
    }
}

/// Decodes raw little-endian PicoQuant records, appending one row per photon, marker and (T2)
/// sync to `out`.
///
/// # Errors
/// [`TcspcError::PartialRecord`] for a buffer that is not whole records;
/// [`TcspcError::InvalidArgument`] for a non-positive or non-finite time base.
///
/// # Example
/// ```
/// use flowdaq_analytics::tcspc::records::*;
/// // HydraHarp v2 T3: one photon on channel 1, micro bin 100, sync 7.
/// let rec: u32 = (1 << 25) | (100 << 10) | 7;
/// let mut state = DecoderState::default();
/// let mut out = PhotonColumns::default();
/// let tb = TimeBase { macro_unit_ps: 25_000.0, micro_bin_ps: 16.0 };
/// let counts = decode_records(RecordType::HydraHarpV2T3, tb, &rec.to_le_bytes(), &mut state, &mut out)?;
/// assert_eq!((counts.photons, out.macro_time_ps[0], out.micro_time_ps[0]), (1, 175_000, 1600));
/// # Ok::<(), flowdaq_analytics::tcspc::TcspcError>(())
/// ```
pub fn decode_records(
    record_type: RecordType,
    time_base: TimeBase,
    bytes: &[u8],
    state: &mut DecoderState,
    out: &mut PhotonColumns,
) -> Result<DecodeCounts> {
    time_base.validate()?;
    // Native columns first (see `events`), then the ps columns in a second pass.
    let counts = events::decode_native(
        record_type,
        bytes,
        state,
        &mut out.macro_time_sync,
        &mut out.micro_time_bins,
        &mut out.channel,
        &mut out.marker_flags,
    )?;
    out.fill_ps(time_base);
    Ok(counts)
}

/// How 64-bit time tags (channel + picoseconds) map onto photon columns.
///
/// Time taggers (Swabian Time Tagger and alike) report every input edge as a channel number and
/// an absolute time in ps. With a `sync_channel`, tags are turned into T3-like photons: the
/// macro time is the index and time of the last sync, the micro time is the delay since it.
/// Without one, photons keep their absolute time (T2-like) and micro time 0.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeTagConfig {
    /// Input channel of the laser sync, if any.
    pub sync_channel: Option<i32>,
    /// Input channels of the detectors; the position in this list is the output `channel`.
    pub detector_channels: Vec<i32>,
    /// Input channels used as markers; position `i` sets marker bit `1 << i` (at most 8).
    pub marker_channels: Vec<i32>,
    /// Width of one micro-time bin in ps for `micro_time_bins` (with a sync channel).
    pub micro_bin_ps: i64,
}

/// State carried between chunks of a time-tag stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeTagState {
    /// Time in ps of the last sync tag seen, if any since the last reset or overflow.
    pub last_sync_ps: Option<i64>,
    /// Number of sync tags seen since the last reset (the next sync's index).
    pub sync_count: u64,
}

impl TimeTagState {
    /// Forgets the last sync (start of a stream, or after a gap).
    pub fn reset(&mut self) {
        *self = TimeTagState::default();
    }
}

/// Per-channel role of time tags, looked up by `channel + 128` for channels in -128..=127.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ignored,
    Sync,
    Detector(u8),
    Marker(u8),
}

fn role_table(config: &TimeTagConfig) -> Result<[Role; 256]> {
    let mut table = [Role::Ignored; 256];
    let slot = |ch: i32| -> Result<usize> {
        if (-128..=127).contains(&ch) {
            Ok((ch + 128) as usize)
        } else {
            Err(TcspcError::InvalidArgument(format!(
                "time-tag channel {ch} is outside -128..=127"
            )))
        }
    };
    if config.detector_channels.len() > MAX_CHANNELS {
        return Err(TcspcError::InvalidArgument(format!(
            "at most {MAX_CHANNELS} detector channels"
        )));
    }
    if config.marker_channels.len() > 8 {
        return Err(TcspcError::InvalidArgument(
            "at most 8 marker channels".into(),
        ));
    }
    if config.micro_bin_ps <= 0 {
        return Err(TcspcError::InvalidArgument(format!(
            "micro_bin_ps {} must be > 0",
            config.micro_bin_ps
        )));
    }
    let mut assign = |ch: i32, role: Role| -> Result<()> {
        let s = slot(ch)?;
        if table[s] != Role::Ignored {
            return Err(TcspcError::InvalidArgument(format!(
                "time-tag channel {ch} has two roles"
            )));
        }
        table[s] = role;
        Ok(())
    };
    if let Some(sync) = config.sync_channel {
        assign(sync, Role::Sync)?;
    }
    for (i, &ch) in config.detector_channels.iter().enumerate() {
        assign(ch, Role::Detector(i as u8))?;
    }
    for (i, &ch) in config.marker_channels.iter().enumerate() {
        assign(ch, Role::Marker(1 << i))?;
    }
    Ok(table)
}

/// Time-tag decoding shared by the column-pair and the Swabian byte layouts.
struct TagDecoder<'a> {
    table: [Role; 256],
    with_sync: bool,
    micro_bin_ps: i64,
    state: &'a mut TimeTagState,
    out: &'a mut PhotonColumns,
    counts: DecodeCounts,
}

impl TagDecoder<'_> {
    #[inline(always)]
    fn tag(&mut self, channel: i32, time_ps: i64) {
        let role = if (-128..=127).contains(&channel) {
            self.table[(channel + 128) as usize]
        } else {
            Role::Ignored
        };
        match role {
            Role::Ignored => self.counts.invalid += 1,
            Role::Sync => {
                self.state.last_sync_ps = Some(time_ps);
                self.state.sync_count += 1;
                self.counts.syncs += 1;
            }
            Role::Detector(ch) => {
                if !self.with_sync {
                    self.out.push(0, time_ps, 0, 0, ch, 0);
                } else if let Some(sync_ps) = self.state.last_sync_ps {
                    let delay = time_ps.saturating_sub(sync_ps).max(0);
                    let bins = (delay / self.micro_bin_ps).min(i64::from(u16::MAX)) as u16;
                    let micro_ps = delay.min(i64::from(i32::MAX)) as i32;
                    self.out
                        .push(self.state.sync_count - 1, sync_ps, bins, micro_ps, ch, 0);
                } else {
                    self.counts.invalid += 1;
                    return;
                }
                self.counts.photons_per_channel[ch as usize] += 1;
            }
            Role::Marker(bit) => {
                let (sync_index, t) = match (self.with_sync, self.state.last_sync_ps) {
                    (true, Some(s)) => (self.state.sync_count - 1, s),
                    _ => (0, time_ps),
                };
                self.out.push(sync_index, t, 0, 0, 0, bit);
                self.counts.markers += 1;
            }
        }
    }
}

/// Decodes 64-bit time tags given as two columns (channel, time in ps), as Swabian's
/// `getChannels()` / `getTimestamps()` return them.
///
/// # Errors
/// [`TcspcError::LengthMismatch`] if the columns differ in length;
/// [`TcspcError::InvalidArgument`] for a bad [`TimeTagConfig`].
pub fn decode_time_tags(
    channels: &[i32],
    times_ps: &[i64],
    config: &TimeTagConfig,
    state: &mut TimeTagState,
    out: &mut PhotonColumns,
) -> Result<DecodeCounts> {
    if channels.len() != times_ps.len() {
        return Err(TcspcError::LengthMismatch(format!(
            "{} channels but {} times",
            channels.len(),
            times_ps.len()
        )));
    }
    let table = role_table(config)?;
    out.reserve(channels.len());
    let mut dec = TagDecoder {
        table,
        with_sync: config.sync_channel.is_some(),
        micro_bin_ps: config.micro_bin_ps,
        state,
        out,
        counts: DecodeCounts {
            records: channels.len() as u64,
            ..Default::default()
        },
    };
    for (&ch, &t) in channels.iter().zip(times_ps) {
        dec.tag(ch, t);
    }
    let mut counts = dec.counts;
    counts.photons = counts.photons_per_channel.iter().sum();
    Ok(counts)
}

/// Decodes time tags in the Swabian `Tag` byte layout: 16 bytes, little-endian,
/// `type: u8` (0 time tag, 1 error, 2 overflow begin, 3 overflow end, 4 missed events),
/// `reserved: u8`, `missed_events: u16`, `channel: i32`, `time_ps: i64`.
///
/// Overflow-begin and error tags clear the last sync (tags were lost, so delays to it would be
/// wrong) and, like overflow-end and missed-events tags, count as `overflows`.
///
/// # Errors
/// [`TcspcError::PartialRecord`] for a buffer that is not whole 16-byte tags;
/// [`TcspcError::InvalidArgument`] for a bad [`TimeTagConfig`].
pub fn decode_swabian_tags(
    bytes: &[u8],
    config: &TimeTagConfig,
    state: &mut TimeTagState,
    out: &mut PhotonColumns,
) -> Result<DecodeCounts> {
    if !bytes.len().is_multiple_of(SWABIAN_TAG_BYTES) {
        return Err(TcspcError::PartialRecord {
            len: bytes.len(),
            record_bytes: SWABIAN_TAG_BYTES,
        });
    }
    let table = role_table(config)?;
    let n = bytes.len() / SWABIAN_TAG_BYTES;
    out.reserve(n);
    let mut dec = TagDecoder {
        table,
        with_sync: config.sync_channel.is_some(),
        micro_bin_ps: config.micro_bin_ps,
        state,
        out,
        counts: DecodeCounts {
            records: n as u64,
            ..Default::default()
        },
    };
    for t in bytes.chunks_exact(SWABIAN_TAG_BYTES) {
        let kind = t[0];
        let channel = i32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        let time_ps = i64::from_le_bytes([t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15]]);
        match kind {
            0 => dec.tag(channel, time_ps),
            1 | 2 => {
                dec.state.last_sync_ps = None;
                dec.counts.overflows += 1;
            }
            3 | 4 => dec.counts.overflows += 1,
            _ => dec.counts.invalid += 1,
        }
    }
    let mut counts = dec.counts;
    counts.photons = counts.photons_per_channel.iter().sum();
    Ok(counts)
}

#[cfg(test)]
mod tests;
