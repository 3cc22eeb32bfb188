//! flowdaq-daq: the server. Data flows through these modules in this order:
//!
//! - [`config`]: typed configuration with embedded defaults.
//! - `flowdaq_connectors::transport` receives frames; [`ingest`] decodes them, commits each
//!   group to the [`wal`], inserts it into the [`write_buffer`] and acknowledges it; the
//!   [`features`] extractors add derived rows (e.g. `spectral_features`) to the same group.
//! - [`persister`] writes buffer snapshots to Parquet and records them in the [`catalog`].
//! - [`query`] serves read-only SQL over Parquet plus buffer; [`http`] exposes it.
//! - [`conditions`] are registered through [`control`] or HTTP and tag later measurements;
//!   [`outcomes`] decides when each condition's features have settled; [`publish`] streams every
//!   feature row and outcome to subscribers and replays what they missed.
//! - [`metrics`] counts everything, including sequence gaps; [`server`] wires it all up.

pub mod catalog;
pub mod conditions;
pub mod config;
pub mod control;
pub mod features;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod outcomes;
pub mod paths;
pub mod persister;
pub mod publish;
pub mod query;
pub mod server;
#[cfg(test)]
mod test_rng;
pub mod wal;
pub mod write_buffer;

pub use config::ServerConfig;
pub use server::{start, RunningServer, ServerError};
