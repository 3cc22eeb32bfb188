//! A read-only view of a batch of spectra: flat pixel values plus per-row ranges and nulls.
//!
//! Accepts `List`, `LargeList` and `FixedSizeList` of Float32 or Float64 and reads the child as
//! one slice, walking offsets so that sliced arrays work without copying (the arrow-rs list
//! kernel pattern). Pixel-level nulls inside a valid spectrum are reported per row.

use std::ops::Range;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;

use super::SpectralError;

/// The flat pixel values of the whole batch.
#[derive(Clone, Copy)]
pub(crate) enum Pixels<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

#[derive(Clone, Copy)]
enum Offsets<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
    Fixed(usize),
}

/// A batch of spectra seen as one flat buffer.
pub(crate) struct SpectraView<'a> {
    pub(crate) pixels: Pixels<'a>,
    offsets: Offsets<'a>,
    nulls: Option<&'a NullBuffer>,
    pixel_nulls: Option<&'a NullBuffer>,
    len: usize,
}

fn pixels_of<'a>(
    child: &'a ArrayRef,
    outer: &DataType,
) -> Result<(Pixels<'a>, Option<&'a NullBuffer>), SpectralError> {
    let nulls = child.nulls().filter(|n| n.null_count() > 0);
    match child.data_type() {
        DataType::Float32 => Ok((
            Pixels::F32(child.as_primitive::<Float32Type>().values()),
            nulls,
        )),
        DataType::Float64 => Ok((
            Pixels::F64(child.as_primitive::<Float64Type>().values()),
            nulls,
        )),
        _ => Err(SpectralError::UnsupportedType(outer.clone())),
    }
}

impl<'a> SpectraView<'a> {
    /// Views `array` as spectra.
    ///
    /// # Errors
    /// [`SpectralError::UnsupportedType`] for anything but a list of Float32/Float64.
    pub(crate) fn new(array: &'a dyn Array) -> Result<Self, SpectralError> {
        let dt = array.data_type();
        let (pixels, pixel_nulls, offsets) = match dt {
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                let (p, n) = pixels_of(list.values(), dt)?;
                (p, n, Offsets::I32(list.value_offsets()))
            }
            DataType::LargeList(_) => {
                let list = array.as_list::<i64>();
                let (p, n) = pixels_of(list.values(), dt)?;
                (p, n, Offsets::I64(list.value_offsets()))
            }
            DataType::FixedSizeList(_, size) => {
                let list = array.as_fixed_size_list();
                let (p, n) = pixels_of(list.values(), dt)?;
                (p, n, Offsets::Fixed(usize::try_from(*size).unwrap_or(0)))
            }
            _ => return Err(SpectralError::UnsupportedType(dt.clone())),
        };
        Ok(Self {
            pixels,
            offsets,
            nulls: array.nulls(),
            pixel_nulls,
            len: array.len(),
        })
    }

    /// Number of spectra.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The batch's own null buffer (passed through to outputs).
    #[inline]
    pub(crate) fn nulls(&self) -> Option<&'a NullBuffer> {
        self.nulls
    }

    /// True if spectrum `row` is null.
    #[inline]
    pub(crate) fn is_null(&self, row: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(row))
    }

    /// Pixel range of spectrum `row` in the flat buffer (clamped to the buffer, so malformed
    /// offsets cannot cause an out-of-bounds read).
    #[inline]
    pub(crate) fn range(&self, row: usize) -> Range<usize> {
        let total = match self.pixels {
            Pixels::F32(v) => v.len(),
            Pixels::F64(v) => v.len(),
        };
        let (s, e) = match self.offsets {
            Offsets::I32(o) => (o[row].max(0) as usize, o[row + 1].max(0) as usize),
            Offsets::I64(o) => (o[row].max(0) as usize, o[row + 1].max(0) as usize),
            Offsets::Fixed(size) => (row * size, row * size + size),
        };
        let e = e.min(total);
        s.min(e)..e
    }

    /// True if any pixel of `range` is null in the child array (a popcount over the bitmap's
    /// words, not a test per pixel: Arrow writers often attach an all-valid bitmap).
    pub(crate) fn has_null_pixel(&self, range: Range<usize>) -> bool {
        match self.pixel_nulls {
            None => false,
            Some(n) => {
                let len = range.len();
                len > 0 && n.inner().slice(range.start, len).count_set_bits() < len
            }
        }
    }

    /// Fails with [`SpectralError::LengthMismatch`] at the first valid spectrum whose length
    /// differs from `expected`.
    pub(crate) fn check_lengths(&self, expected: usize) -> Result<(), SpectralError> {
        for row in 0..self.len {
            if self.is_null(row) {
                continue;
            }
            let actual = self.range(row).len();
            if actual != expected {
                return Err(SpectralError::LengthMismatch {
                    row,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }
}
