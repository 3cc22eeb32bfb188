//! flowdaq-daq: the server. Data flows through these modules in this order:
//!
//! - [`config`]: typed configuration with embedded defaults.
//! - `flowdaq_connectors::transport` receives frames; [`ingest`] accepts them (decode, resend
//!   check against the [`ledger`], the [`features`] extractors' derived rows) and commits each
//!   group as one entry to the [`wal`], inserts it into the [`write_buffer`] and acknowledges it.
//! - [`persister`] writes buffer snapshots to Parquet and records them in the [`catalog`].
//! - Parquet files and the catalog live in a [`table_store`]: the data directory or an S3
//!   bucket. Every local file the write path writes goes through [`storage`]; failures are
//!   reported to [`health`].
//! - [`query`] serves read-only SQL over Parquet plus buffer; [`http`], [`flight_sql`] and
//!   [`postgres`] expose it.
//! - [`conditions`] are registered through [`control`] or HTTP and tag later measurements;
//!   [`outcomes`] decides when each condition's features have settled; [`publish`] streams every
//!   feature row and outcome to subscribers and replays what they missed.
//! - [`auth`] decides who may query and control the server.
//! - [`metrics`] counts everything, including sequence gaps; [`server`] wires it all up.

pub mod auth;
pub mod catalog;
pub mod compactor;
pub mod conditions;
pub mod config;
pub mod control;
pub mod delta_log;
pub mod doorway;
pub mod features;
pub mod flight_sql;
pub mod health;
pub mod http;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod outcomes;
pub mod paths;
pub mod persister;
pub mod postgres;
pub mod publish;
pub mod query;
pub mod server;
pub mod storage;
pub mod table_store;
#[cfg(test)]
mod test_rng;
pub mod wal;
pub mod write_buffer;

pub use config::ServerConfig;
pub use server::{start, RunningServer, ServerError};
