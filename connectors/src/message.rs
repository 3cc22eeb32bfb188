//! Building wire-protocol messages on the sending side.
//!
//! Simulators, file replay, the load generator and Rust-written vendor connectors all speak to
//! the server through the same socket as any other sender; this module turns typed values into
//! the header frame and little-endian payload frames of `docs/wire-protocol.md`.

use bytes::Bytes;
use flowdaq_schemas::{ArrayDesc, Dtype, Header, PayloadFormat, StreamKind, PROTOCOL_VERSION};

/// The little-endian bytes of `values`, written in place (a `flat_map` collect pushes byte by
/// byte: for a 2048-pixel spectrum that was most of the cost of building the message).
fn le_bytes<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    let mut bytes = vec![0u8; values.len() * N];
    for (chunk, value) in bytes.chunks_exact_mut(N).zip(values) {
        chunk.copy_from_slice(&to_le(*value));
    }
    bytes
}

/// One message ready to send: the header and its payload frames.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The header; `seq` is filled in by whoever sends it.
    pub header: Header,
    /// Payload frames, in the order of `header.arrays`.
    pub payload: Vec<Bytes>,
}

impl OutboundMessage {
    /// A message of `arrays` format with no payload yet.
    pub fn new(source: &str, stream: StreamKind) -> OutboundMessage {
        OutboundMessage {
            header: Header {
                protocol: PROTOCOL_VERSION,
                source: source.to_string(),
                stream,
                seq: 0,
                session: None,
                run_id: None,
                condition_id: None,
                instrument_time_ns: None,
                format: PayloadFormat::Arrays,
                arrays: Vec::new(),
                meta: serde_json::Map::new(),
                end_of_stream: false,
            },
            payload: Vec::new(),
        }
    }

    /// Marks the source's last message of an acquisition (header `end_of_stream`).
    pub fn end_of_stream(mut self) -> Self {
        self.header.end_of_stream = true;
        self
    }

    /// Sets a `meta` entry.
    pub fn meta(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.header.meta.insert(key.to_string(), value.into());
        self
    }

    /// Appends an `f64` array frame.
    pub fn array_f64(self, name: &str, shape: &[u64], values: &[f64]) -> Self {
        self.raw_array(name, Dtype::F64, shape, le_bytes(values, f64::to_le_bytes))
    }

    /// Appends an `f32` array frame.
    pub fn array_f32(self, name: &str, shape: &[u64], values: &[f32]) -> Self {
        self.raw_array(name, Dtype::F32, shape, le_bytes(values, f32::to_le_bytes))
    }

    /// Appends an `i64` array frame.
    pub fn array_i64(self, name: &str, shape: &[u64], values: &[i64]) -> Self {
        self.raw_array(name, Dtype::I64, shape, le_bytes(values, i64::to_le_bytes))
    }

    /// Appends an `i32` array frame.
    pub fn array_i32(self, name: &str, shape: &[u64], values: &[i32]) -> Self {
        self.raw_array(name, Dtype::I32, shape, le_bytes(values, i32::to_le_bytes))
    }

    /// Appends a `u8` array frame.
    pub fn array_u8(self, name: &str, shape: &[u64], values: &[u8]) -> Self {
        self.raw_array(name, Dtype::U8, shape, values.to_vec())
    }

    /// Appends a frame whose bytes the caller has already laid out (or deliberately broken).
    pub fn raw_array(mut self, name: &str, dtype: Dtype, shape: &[u64], bytes: Vec<u8>) -> Self {
        self.header.arrays.push(ArrayDesc {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        });
        self.payload.push(Bytes::from(bytes));
        self
    }

    /// The frames to send: the header as JSON, then the payload frames.
    pub fn frames(&self) -> Vec<Bytes> {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut frames = Vec::with_capacity(1 + self.payload.len());
        frames.push(Bytes::from(header));
        frames.extend(self.payload.iter().cloned());
        frames
    }
}
