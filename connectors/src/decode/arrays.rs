//! Payload frames of format `arrays`: checks each frame against its descriptor and converts it.
//!
//! The descriptor is untrusted, so lengths are checked before anything is allocated, and
//! frames are read with `from_le_bytes` on exact chunks (no alignment assumptions, no unsafe).

use bytes::Bytes;
use flowdaq_schemas::{ArrayDesc, Dtype, Header};

use super::DecodeError;

/// The payload frames of one message, each checked against its descriptor.
pub(crate) struct PayloadArrays<'a> {
    header: &'a Header,
    frames: &'a [Bytes],
}

impl<'a> PayloadArrays<'a> {
    /// Checks frame count and every frame's byte length against the header.
    pub fn new(header: &'a Header, frames: &'a [Bytes]) -> Result<Self, DecodeError> {
        if frames.len() != header.arrays.len() {
            return Err(DecodeError::payload(format!(
                "header declares {} arrays but {} payload frames arrived",
                header.arrays.len(),
                frames.len()
            )));
        }
        for (desc, frame) in header.arrays.iter().zip(frames) {
            let expected = desc.byte_len().ok_or_else(|| {
                DecodeError::payload(format!(
                    "array {:?}: shape {:?} overflows",
                    desc.name, desc.shape
                ))
            })?;
            if frame.len() as u64 != expected {
                return Err(DecodeError::payload(format!(
                    "array {:?}: {} {} x {:?} needs {expected} bytes, frame has {} (truncated or wrong dtype/shape)",
                    desc.name,
                    desc.dtype.as_str(),
                    desc.element_count().unwrap_or(0),
                    desc.shape,
                    frame.len()
                )));
            }
        }
        let mut names: Vec<&str> = header.arrays.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(DecodeError::payload("array names must be unique"));
        }
        Ok(PayloadArrays { header, frames })
    }

    /// Refuses arrays the stream kind does not define.
    pub fn only(&self, allowed: &[&str]) -> Result<(), DecodeError> {
        match self
            .header
            .arrays
            .iter()
            .find(|a| !allowed.contains(&a.name.as_str()))
        {
            Some(a) => Err(DecodeError::payload(format!(
                "unknown array {:?} for stream {}; expected {allowed:?}",
                a.name,
                self.header.stream.name()
            ))),
            None => Ok(()),
        }
    }

    /// The descriptor and frame of a named array, if present.
    pub fn get(&self, name: &str) -> Option<(&'a ArrayDesc, &'a [u8])> {
        let (index, desc) = self.header.array(name)?;
        Some((desc, self.frames[index].as_ref()))
    }

    /// The frame of a named array, shared (no copy), if present.
    pub fn frame(&self, name: &str) -> Option<Bytes> {
        let (index, _) = self.header.array(name)?;
        Some(self.frames[index].clone())
    }

    /// The descriptor and frame of a named array, or an error naming it.
    pub fn require(&self, name: &str) -> Result<(&'a ArrayDesc, &'a [u8]), DecodeError> {
        self.get(name)
            .ok_or_else(|| DecodeError::payload(format!("missing required array {name:?}")))
    }
}

/// Refuses a dtype not in `allowed`, naming the array.
pub(crate) fn expect_dtype(desc: &ArrayDesc, allowed: &[Dtype]) -> Result<(), DecodeError> {
    if allowed.contains(&desc.dtype) {
        Ok(())
    } else {
        let names: Vec<&str> = allowed.iter().map(|d| d.as_str()).collect();
        Err(DecodeError::payload(format!(
            "array {:?} has dtype {} but must be one of {names:?}",
            desc.name,
            desc.dtype.as_str()
        )))
    }
}

macro_rules! le_reader {
    ($name:ident, $t:ty) => {
        fn $name(bytes: &[u8]) -> impl Iterator<Item = $t> + '_ {
            bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
        }
    };
}
le_reader!(read_f32, f32);
le_reader!(read_f64, f64);
le_reader!(read_u16, u16);
le_reader!(read_u32, u32);
le_reader!(read_u64, u64);
le_reader!(read_i16, i16);
le_reader!(read_i32, i32);
le_reader!(read_i64, i64);

/// Converts a numeric frame to `f64` values (exact for every dtype but 64-bit integers > 2^53).
pub(crate) fn to_f64(dtype: Dtype, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        Dtype::F64 => read_f64(bytes).collect(),
        Dtype::F32 => read_f32(bytes).map(f64::from).collect(),
        Dtype::U8 => bytes.iter().map(|&b| f64::from(b)).collect(),
        Dtype::I8 => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        Dtype::U16 => read_u16(bytes).map(f64::from).collect(),
        Dtype::I16 => read_i16(bytes).map(f64::from).collect(),
        Dtype::U32 => read_u32(bytes).map(f64::from).collect(),
        Dtype::I32 => read_i32(bytes).map(f64::from).collect(),
        Dtype::U64 => read_u64(bytes).map(|x| x as f64).collect(),
        Dtype::I64 => read_i64(bytes).map(|x| x as f64).collect(),
    }
}

/// Converts a numeric frame to `f32` values (`<f8` is rounded to nearest).
pub(crate) fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => read_f32(bytes).collect(),
        Dtype::U8 => bytes.iter().map(|&b| f32::from(b)).collect(),
        Dtype::I8 => bytes.iter().map(|&b| f32::from(b as i8)).collect(),
        Dtype::U16 => read_u16(bytes).map(f32::from).collect(),
        Dtype::I16 => read_i16(bytes).map(f32::from).collect(),
        other => to_f64(other, bytes).into_iter().map(|x| x as f32).collect(),
    }
}

/// Reads an `<i8` frame.
pub(crate) fn to_i64(bytes: &[u8]) -> Vec<i64> {
    read_i64(bytes).collect()
}

/// Reads an `<i4` frame.
pub(crate) fn to_i32(bytes: &[u8]) -> Vec<i32> {
    read_i32(bytes).collect()
}
