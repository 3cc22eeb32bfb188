//! Arrow outputs of the flow kernels: one row per analysed window, one row per segment.
//!
//! Windows and segments are pushed into builders preallocated by the caller's batch size and
//! finished into Arrow arrays without copying. Column names carry their units; times are
//! `Timestamp(ns, "UTC")` like every time column flowdaq stores. A window always gets a row:
//! values that could not be measured are null and `quality_flags` says why.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, UInt32Builder};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, TimestampNanosecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::analyzer::FlowWindow;
use super::segments::{Phase, Segment};
use super::FlowError;

/// The timestamp type of flow time columns: nanoseconds since the Unix epoch, UTC.
pub fn timestamp_ns_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn timestamps(values: Vec<i64>) -> TimestampNanosecondArray {
    TimestampNanosecondArray::new(values.into(), None).with_timezone("UTC")
}

/// Per-window flow features of a batch of windows (see [`FlowWindow`] for the meaning of each
/// value).
#[derive(Debug, Clone)]
pub struct FlowFeatures {
    /// Time of the window's first sample.
    pub window_start_ns: TimestampNanosecondArray,
    /// Window length (s) (of the analysed common part of the two traces).
    pub window_duration_s: Float64Array,
    /// The window's velocity (mm/s): from interfaces, else from cross-correlation.
    pub velocity_mm_per_s: Float64Array,
    /// Velocity from matched interfaces (mm/s).
    pub velocity_interfaces_mm_per_s: Float64Array,
    /// Velocity from cross-correlation (mm/s).
    pub velocity_xcorr_mm_per_s: Float64Array,
    /// Correlation coefficient at the cross-correlation peak.
    pub xcorr_coefficient: Float64Array,
    /// Coefficient of variation of the per-pair velocities.
    pub velocity_cv: Float64Array,
    /// Interfaces matched between the sensors.
    pub matched_interfaces: UInt32Array,
    /// Interfaces detected at sensor A.
    pub interfaces_a: UInt32Array,
    /// Interfaces detected at sensor B.
    pub interfaces_b: UInt32Array,
    /// Plugs per second at sensor A (Hz).
    pub segment_frequency_hz: Float64Array,
    /// Complete plugs at sensor A (flagged ones included).
    pub plug_count: UInt32Array,
    /// Mean duration of the regular plugs (s).
    pub plug_duration_mean_s: Float64Array,
    /// Mean length of the regular plugs (mm).
    pub plug_length_mean_mm: Float64Array,
    /// Coefficient of variation of the regular plugs' lengths.
    pub plug_length_cv: Float64Array,
    /// Complete carrier segments at sensor A.
    pub carrier_count: UInt32Array,
    /// Mean duration of the regular carrier segments (s).
    pub carrier_duration_mean_s: Float64Array,
    /// Mean length of the regular carrier segments (mm).
    pub carrier_length_mean_mm: Float64Array,
    /// Coefficient of variation of the regular carrier segments' lengths.
    pub carrier_length_cv: Float64Array,
    /// Segments flagged `MERGED_SEGMENT`.
    pub merged_segments: UInt32Array,
    /// Segments flagged `SPLIT_SEGMENT`.
    pub split_segments: UInt32Array,
    /// Longest span without an interface (s).
    pub longest_gap_s: Float64Array,
    /// Reynolds number (null without fluid properties or velocity).
    pub reynolds_number: Float64Array,
    /// Capillary number.
    pub capillary_number: Float64Array,
    /// Weber number.
    pub weber_number: Float64Array,
    /// Bond number.
    pub bond_number: Float64Array,
    /// Peclet number.
    pub peclet_number: Float64Array,
    /// Diffusion time (s).
    pub diffusion_time_s: Float64Array,
    /// Damkohler number (null without a configured reaction time).
    pub damkohler_number: Float64Array,
    /// [`FlowFlags`](super::FlowFlags) bitmask.
    pub quality_flags: UInt32Array,
}

impl FlowFeatures {
    /// Column names, in schema order.
    pub const COLUMNS: [&'static str; 30] = [
        "window_start_ns",
        "window_duration_s",
        "velocity_mm_per_s",
        "velocity_interfaces_mm_per_s",
        "velocity_xcorr_mm_per_s",
        "xcorr_coefficient",
        "velocity_cv",
        "matched_interfaces",
        "interfaces_a",
        "interfaces_b",
        "segment_frequency_hz",
        "plug_count",
        "plug_duration_mean_s",
        "plug_length_mean_mm",
        "plug_length_cv",
        "carrier_count",
        "carrier_duration_mean_s",
        "carrier_length_mean_mm",
        "carrier_length_cv",
        "merged_segments",
        "split_segments",
        "longest_gap_s",
        "reynolds_number",
        "capillary_number",
        "weber_number",
        "bond_number",
        "peclet_number",
        "diffusion_time_s",
        "damkohler_number",
        "quality_flags",
    ];

    /// The Arrow schema of [`Self::into_record_batch`]: `window_start_ns` a non-null UTC
    /// timestamp, counts and `quality_flags` non-null UInt32, every other column nullable
    /// Float64.
    pub fn schema() -> SchemaRef {
        let fields: Vec<Field> = Self::COLUMNS
            .iter()
            .map(|&name| match name {
                "window_start_ns" => Field::new(name, timestamp_ns_type(), false),
                "window_duration_s" | "longest_gap_s" => Field::new(name, DataType::Float64, false),
                "matched_interfaces" | "interfaces_a" | "interfaces_b" | "plug_count"
                | "carrier_count" | "merged_segments" | "split_segments" | "quality_flags" => {
                    Field::new(name, DataType::UInt32, false)
                }
                _ => Field::new(name, DataType::Float64, true),
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.quality_flags.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The features as one record batch with [`Self::schema`].
    ///
    /// # Errors
    /// [`FlowError::Arrow`] if Arrow rejects the batch (it cannot for builder output).
    pub fn into_record_batch(self) -> Result<RecordBatch, FlowError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.window_start_ns),
            Arc::new(self.window_duration_s),
            Arc::new(self.velocity_mm_per_s),
            Arc::new(self.velocity_interfaces_mm_per_s),
            Arc::new(self.velocity_xcorr_mm_per_s),
            Arc::new(self.xcorr_coefficient),
            Arc::new(self.velocity_cv),
            Arc::new(self.matched_interfaces),
            Arc::new(self.interfaces_a),
            Arc::new(self.interfaces_b),
            Arc::new(self.segment_frequency_hz),
            Arc::new(self.plug_count),
            Arc::new(self.plug_duration_mean_s),
            Arc::new(self.plug_length_mean_mm),
            Arc::new(self.plug_length_cv),
            Arc::new(self.carrier_count),
            Arc::new(self.carrier_duration_mean_s),
            Arc::new(self.carrier_length_mean_mm),
            Arc::new(self.carrier_length_cv),
            Arc::new(self.merged_segments),
            Arc::new(self.split_segments),
            Arc::new(self.longest_gap_s),
            Arc::new(self.reynolds_number),
            Arc::new(self.capillary_number),
            Arc::new(self.weber_number),
            Arc::new(self.bond_number),
            Arc::new(self.peclet_number),
            Arc::new(self.diffusion_time_s),
            Arc::new(self.damkohler_number),
            Arc::new(self.quality_flags),
        ];
        Ok(RecordBatch::try_new(Self::schema(), cols)?)
    }
}

/// Accumulates [`FlowWindow`]s into [`FlowFeatures`].
#[derive(Debug)]
pub struct FlowFeaturesBuilder {
    start: Vec<i64>,
    f64s: Vec<Float64Builder>,
    u32s: Vec<UInt32Builder>,
}

/// Float64 columns of the builder, in push order.
const F64_COLUMNS: usize = 21;
/// UInt32 columns of the builder, in push order.
const U32_COLUMNS: usize = 8;

impl FlowFeaturesBuilder {
    /// A builder with room for `windows` rows.
    pub fn with_capacity(windows: usize) -> Self {
        Self {
            start: Vec::with_capacity(windows),
            f64s: (0..F64_COLUMNS)
                .map(|_| Float64Builder::with_capacity(windows))
                .collect(),
            u32s: (0..U32_COLUMNS)
                .map(|_| UInt32Builder::with_capacity(windows))
                .collect(),
        }
    }

    /// Adds one window's row.
    pub fn push(&mut self, w: &FlowWindow) {
        self.start.push(w.window_start_ns);
        let d = w.design.as_ref();
        let f: [Option<f64>; F64_COLUMNS] = [
            Some(w.duration_s),
            w.velocity_mm_per_s,
            w.velocity_interfaces_mm_per_s,
            w.velocity_xcorr_mm_per_s,
            w.xcorr_coefficient,
            w.velocity_cv,
            w.segment_frequency_hz,
            w.plugs.duration_mean_s,
            w.plugs.length_mean_mm,
            w.plugs.length_cv,
            w.carriers.duration_mean_s,
            w.carriers.length_mean_mm,
            w.carriers.length_cv,
            Some(w.longest_gap_s),
            d.map(|d| d.reynolds),
            d.map(|d| d.capillary),
            d.map(|d| d.weber),
            d.map(|d| d.bond),
            d.map(|d| d.peclet),
            d.map(|d| d.diffusion_time_s),
            d.and_then(|d| d.damkohler),
        ];
        for (b, v) in self.f64s.iter_mut().zip(f) {
            // The two non-nullable columns (duration, gap) are always finite for kernel output.
            b.append_option(v.filter(|v| v.is_finite()));
        }
        let u: [u32; U32_COLUMNS] = [
            w.matched_interfaces,
            w.interfaces_a,
            w.interfaces_b,
            w.plugs.count,
            w.carriers.count,
            w.merged_segments,
            w.split_segments,
            w.flags.0,
        ];
        for (b, v) in self.u32s.iter_mut().zip(u) {
            b.append_value(v);
        }
    }

    /// The columns built so far (the builder is left empty).
    pub fn finish(&mut self) -> FlowFeatures {
        let mut f = self.f64s.iter_mut().map(|b| b.finish());
        let mut u = self.u32s.iter_mut().map(|b| b.finish());
        let mut nf = || {
            f.next()
                .unwrap_or_else(|| Float64Array::from(Vec::<f64>::new()))
        };
        let duration = nf();
        let (v, vi, vx, xc, vcv, freq) = (nf(), nf(), nf(), nf(), nf(), nf());
        let (pd, pl, pcv, cd, cl, ccv) = (nf(), nf(), nf(), nf(), nf(), nf());
        let gap = nf();
        let (re, ca, we, bo, pe, td, da) = (nf(), nf(), nf(), nf(), nf(), nf(), nf());
        let mut nu = || {
            u.next()
                .unwrap_or_else(|| UInt32Array::from(Vec::<u32>::new()))
        };
        let (matched, ia, ib, pc, cc, merged, split, flags) =
            (nu(), nu(), nu(), nu(), nu(), nu(), nu(), nu());
        FlowFeatures {
            window_start_ns: timestamps(std::mem::take(&mut self.start)),
            window_duration_s: duration,
            velocity_mm_per_s: v,
            velocity_interfaces_mm_per_s: vi,
            velocity_xcorr_mm_per_s: vx,
            xcorr_coefficient: xc,
            velocity_cv: vcv,
            matched_interfaces: matched,
            interfaces_a: ia,
            interfaces_b: ib,
            segment_frequency_hz: freq,
            plug_count: pc,
            plug_duration_mean_s: pd,
            plug_length_mean_mm: pl,
            plug_length_cv: pcv,
            carrier_count: cc,
            carrier_duration_mean_s: cd,
            carrier_length_mean_mm: cl,
            carrier_length_cv: ccv,
            merged_segments: merged,
            split_segments: split,
            longest_gap_s: gap,
            reynolds_number: re,
            capillary_number: ca,
            weber_number: we,
            bond_number: bo,
            peclet_number: pe,
            diffusion_time_s: td,
            damkohler_number: da,
            quality_flags: flags,
        }
    }
}

/// One row per complete segment seen at sensor A.
#[derive(Debug, Clone)]
pub struct FlowSegments {
    /// Start of the window the segment was measured in (joins to [`FlowFeatures`]).
    pub window_start_ns: TimestampNanosecondArray,
    /// Time of the segment's opening interface (ns, rounded).
    pub start_time_ns: TimestampNanosecondArray,
    /// True for a plug, false for a carrier segment.
    pub is_plug: BooleanArray,
    /// Duration (s), sub-sample.
    pub duration_s: Float64Array,
    /// Length (mm): duration times the window's velocity; null without one or when stopped.
    pub length_mm: Float64Array,
    /// `STOPPED_FLOW`, `MERGED_SEGMENT`, `SPLIT_SEGMENT` bits.
    pub quality_flags: UInt32Array,
}

impl FlowSegments {
    /// Column names, in schema order.
    pub const COLUMNS: [&'static str; 6] = [
        "window_start_ns",
        "start_time_ns",
        "is_plug",
        "duration_s",
        "length_mm",
        "quality_flags",
    ];

    /// The Arrow schema of [`Self::into_record_batch`].
    pub fn schema() -> SchemaRef {
        let c = Self::COLUMNS;
        Arc::new(Schema::new(vec![
            Field::new(c[0], timestamp_ns_type(), false),
            Field::new(c[1], timestamp_ns_type(), false),
            Field::new(c[2], DataType::Boolean, false),
            Field::new(c[3], DataType::Float64, false),
            Field::new(c[4], DataType::Float64, true),
            Field::new(c[5], DataType::UInt32, false),
        ]))
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.quality_flags.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments as one record batch with [`Self::schema`].
    ///
    /// # Errors
    /// [`FlowError::Arrow`] if Arrow rejects the batch (it cannot for builder output).
    pub fn into_record_batch(self) -> Result<RecordBatch, FlowError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.window_start_ns),
            Arc::new(self.start_time_ns),
            Arc::new(self.is_plug),
            Arc::new(self.duration_s),
            Arc::new(self.length_mm),
            Arc::new(self.quality_flags),
        ];
        Ok(RecordBatch::try_new(Self::schema(), cols)?)
    }
}

/// Accumulates the segments of successive windows into [`FlowSegments`].
#[derive(Debug, Default)]
pub struct FlowSegmentsBuilder {
    window: Vec<i64>,
    start: Vec<i64>,
    is_plug: BooleanBuilder,
    duration: Float64Builder,
    length: Float64Builder,
    flags: UInt32Builder,
}

impl FlowSegmentsBuilder {
    /// A builder with room for `segments` rows.
    pub fn with_capacity(segments: usize) -> Self {
        Self {
            window: Vec::with_capacity(segments),
            start: Vec::with_capacity(segments),
            is_plug: BooleanBuilder::with_capacity(segments),
            duration: Float64Builder::with_capacity(segments),
            length: Float64Builder::with_capacity(segments),
            flags: UInt32Builder::with_capacity(segments),
        }
    }

    /// Adds the segments of the window that started at `window_start_ns`.
    pub fn push_window(&mut self, window_start_ns: i64, segments: &[Segment]) {
        for s in segments {
            self.window.push(window_start_ns);
            let offset_ns = (s.start_s * 1e9).round();
            // Saturating float -> int cast; windows are seconds long, so this never saturates.
            self.start
                .push(window_start_ns.saturating_add(offset_ns as i64));
            self.is_plug.append_value(s.phase == Phase::Plug);
            self.duration.append_value(s.duration_s);
            self.length
                .append_option(s.length_mm.filter(|l| l.is_finite()));
            self.flags.append_value(s.flags.0);
        }
    }

    /// The columns built so far (the builder is left empty).
    pub fn finish(&mut self) -> FlowSegments {
        FlowSegments {
            window_start_ns: timestamps(std::mem::take(&mut self.window)),
            start_time_ns: timestamps(std::mem::take(&mut self.start)),
            is_plug: self.is_plug.finish(),
            duration_s: self.duration.finish(),
            length_mm: self.length.finish(),
            quality_flags: self.flags.finish(),
        }
    }
}
