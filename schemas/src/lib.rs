//! flowdaq-schemas: the shape of every stream and table flowdaq stores, and of the wire protocol.
//!
//! Everything that a sender, the server, a Parquet reader or a SQL user must agree on is defined
//! here once: Arrow schemas with units in the column names, the schema version stamped into
//! every Parquet file, and the serde types of the wire-protocol header. This crate does no I/O,
//! so every other crate (and every test) can depend on it without pulling in a runtime.

pub mod tables;
pub mod wire;

pub use tables::{Table, SCHEMA_VERSION_KEY, STREAM_SEQ_COLUMN};
pub use wire::{ArrayDesc, Dtype, Header, PayloadFormat, StreamKind, WireError, PROTOCOL_VERSION};
