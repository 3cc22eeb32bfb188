//! Bluesky ingest: event-model documents from a RunEngine, as flowdaq rows.
//!
//! Labs that automate experiments in Python run Bluesky; its `Publisher` sends every document
//! of a run (start, descriptor, event, event_page, stop, resource, datum) over a PUB socket.
//! This module turns those documents into wire-protocol messages, so they travel the same
//! pipeline as any sender's (validation, WAL, features, `ingest_errors`): a spectrum data key
//! becomes a `spectra` message (and so PL features), scalar readings a `readings` message, and
//! run-level documents `run` messages (`runs` rows). [`document`] reads a frame; the
//! [`Translator`] keeps what a run's later documents need from its earlier ones. The socket is
//! the transport's ([`crate::transport`]).

mod config;
mod counters;
pub mod document;
mod translate;

#[cfg(test)]
mod tests;

pub use config::{BlueskyConfig, SpectrumMapping};
pub use counters::{BlueskyCounters, BlueskyCountsSnapshot};
pub use translate::{Translated, Translator};

/// Why a Bluesky document was refused. `Display` is the reason stored in `ingest_errors`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BlueskyError {
    /// The frame is not `prefix name document`.
    #[error("bluesky frame: {0}")]
    Frame(String),
    /// The document was pickled (bluesky's default serializer).
    #[error(
        "bluesky document is pickled, which flowdaq never unpickles (it runs code); make the \
         Publisher with serializer=msgpack_numpy.packb (import msgpack_numpy), or with a JSON \
         serializer that returns bytes"
    )]
    Pickle,
    /// The document is neither msgpack nor JSON of an object.
    #[error("bluesky document: {0}")]
    Serializer(String),
    /// The document breaks the event model or refers to what flowdaq has not seen.
    #[error("bluesky {document} document: {reason}")]
    Document {
        /// The document's name.
        document: String,
        /// What is wrong.
        reason: String,
    },
}
