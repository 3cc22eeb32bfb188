//! Output column builders shared by the feature kernels, the CPU-feature dispatch and the
//! prefetch of the next spectrum.
//!
//! Columns are preallocated to the number of spectra and filled row by row (values plus a
//! validity bitmap), then handed to Arrow without copying. The dispatch compiles a batch loop a
//! second time with AVX2 enabled and picks it at run time, so the default x86-64 build still
//! gets wide SIMD in the per-pixel passes. Peak decisions are exact comparisons and identical on
//! both paths; integrals may differ in the last bits (f32 partial sums in the AVX2 pass).

use std::sync::Arc;

use arrow_array::{Float32Array, Float64Array, ListArray, UInt32Array};
use arrow_buffer::{BooleanBuffer, NullBuffer, NullBufferBuilder, OffsetBuffer};
use arrow_schema::{DataType, Field};

use super::input::Pixels;
use super::peaks::Sample;
use super::SpectralError;

/// A nullable Float64 column under construction.
///
/// A row is one store: a missing or non-finite value is kept as NaN while the batch runs, and
/// [`Self::finish`] derives the validity bitmap from finiteness (64 rows per word) and zeroes
/// the null slots, instead of a bitmap update per row.
pub(crate) struct F64Col {
    values: Vec<f64>,
}

impl F64Col {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            values: Vec::with_capacity(n),
        }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, v: Option<f64>) {
        self.values.push(v.unwrap_or(f64::NAN));
    }

    pub(crate) fn finish(mut self) -> Float64Array {
        let valid = BooleanBuffer::collect_bool(self.values.len(), |i| self.values[i].is_finite());
        let nulls = (valid.count_set_bits() < valid.len()).then(|| {
            for v in self.values.iter_mut().filter(|v| !v.is_finite()) {
                *v = 0.0;
            }
            NullBuffer::new(valid)
        });
        Float64Array::new(self.values.into(), nulls)
    }
}

/// A nullable UInt32 column under construction.
pub(crate) struct U32Col {
    values: Vec<u32>,
    valid: NullBufferBuilder,
}

impl U32Col {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            values: Vec::with_capacity(n),
            valid: NullBufferBuilder::new(n),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, v: Option<u32>) {
        self.values.push(v.unwrap_or(0));
        self.valid.append(v.is_some());
    }

    pub(crate) fn finish(mut self) -> UInt32Array {
        UInt32Array::new(self.values.into(), self.valid.finish())
    }
}

/// The list field used for spectra outputs (`item`, nullable, like Arrow's list builders).
pub(crate) fn spectrum_field() -> Arc<Field> {
    Arc::new(Field::new_list_field(DataType::Float32, true))
}

/// Builds a `List<Float32>` from flat values, offsets and row validity.
pub(crate) fn list_f32(
    values: Vec<f32>,
    offsets: Vec<i64>,
    nulls: Option<NullBuffer>,
) -> Result<ListArray, SpectralError> {
    let offsets = offsets_i32(offsets)?;
    Ok(ListArray::try_new(
        spectrum_field(),
        offsets,
        Arc::new(Float32Array::from(values)),
        nulls,
    )?)
}

/// Converts running `i64` offsets to Arrow's `i32` list offsets, refusing overflow.
pub(crate) fn offsets_i32(offsets: Vec<i64>) -> Result<OffsetBuffer<i32>, SpectralError> {
    let last = offsets.last().copied().unwrap_or(0);
    if last > i32::MAX as i64 {
        return Err(SpectralError::TooLarge(last as usize));
    }
    Ok(OffsetBuffer::new(
        offsets
            .into_iter()
            .map(|o| o as i32)
            .collect::<Vec<_>>()
            .into(),
    ))
}

/// A per-spectrum kernel run over a batch whose pixels have type `T`.
pub(crate) trait BatchKernel {
    /// Processes every row; must be `#[inline(always)]` so the AVX2 copy is really AVX2.
    fn run<T: Sample>(&mut self, pixels: &[T]);
}

/// Runs `kernel` with AVX2 code generation when the CPU has it.
pub(crate) fn dispatch<K: BatchKernel, T: Sample>(kernel: &mut K, pixels: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { run_avx2(kernel, pixels) };
            return;
        }
    }
    kernel.run(pixels);
}

/// [`dispatch`] on the pixels of a batch, whichever their float type.
pub(crate) fn dispatch_pixels<K: BatchKernel>(kernel: &mut K, pixels: &Pixels<'_>) {
    match pixels {
        Pixels::F32(p) => dispatch(kernel, p),
        Pixels::F64(p) => dispatch(kernel, p),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<K: BatchKernel, T: Sample>(kernel: &mut K, pixels: &[T]) {
    kernel.run(pixels);
}

/// Hints the CPU to pull `data` into cache (no effect on results; a no-op off x86-64).
#[inline(always)]
pub(crate) fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr().cast::<i8>();
        for off in (0..bytes).step_by(64) {
            // SAFETY: prefetching is a hint: any address is allowed, and `base + off` lies
            // inside `data` anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(base.add(off))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// The next spectrum, prefetched in parts while this one is analysed ([`Self::upto`]) so that
/// the line requests overlap with the work instead of stalling the core in one burst; whatever
/// is left is requested when it is dropped (early returns included).
pub(crate) struct Ahead<'a, T> {
    data: &'a [T],
    done: usize,
}

impl<'a, T> Ahead<'a, T> {
    pub(crate) fn new(data: &'a [T]) -> Self {
        Self { data, done: 0 }
    }

    /// Prefetches up to the fraction `num / den` of the spectrum (whatever is not yet done).
    #[inline(always)]
    pub(crate) fn upto(&mut self, num: usize, den: usize) {
        let end = (self.data.len() * num / den.max(1)).min(self.data.len());
        if end > self.done {
            prefetch(&self.data[self.done..end]);
            self.done = end;
        }
    }

    /// The part not yet prefetched, handed to a pass that prefetches as it goes.
    #[inline(always)]
    pub(crate) fn take(&mut self, num: usize, den: usize) -> &'a [T] {
        let end = (self.data.len() * num / den.max(1)).min(self.data.len());
        let part = self.data.get(self.done..end).unwrap_or(&[]);
        self.done = self.done.max(end);
        part
    }
}

impl<T> Drop for Ahead<'_, T> {
    fn drop(&mut self) {
        self.upto(1, 1);
    }
}
