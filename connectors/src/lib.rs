//! flowdaq-connectors: how instrument data gets into flowdaq.
//!
//! - [`decode`]: wire protocol v1 frames -> Arrow rows (the server's ingest gate).
//! - [`transport`]: the server's ZeroMQ sockets (PULL, SUB, ROUTER) and bounded queues.
//! - [`connector`]: the `Connector` extension point and the registry of built-in connectors.
//! - [`message`] and [`runner`]: the sending side used by Rust connectors.
//! - [`sim`], [`replay`]: simulated instruments and instrument-file replay.
//! - [`conformance`]: the kit that checks a sender against the wire protocol.
//! - [`bluesky`]: Bluesky event-model documents translated into wire messages.

pub mod acked;
pub mod bluesky;
pub mod conformance;
pub mod connector;
pub mod decode;
pub mod message;
pub mod replay;
pub mod runner;
pub mod sim;
pub mod transport;

pub use connector::{Connector, ConnectorConfig, ConnectorError};
pub use message::OutboundMessage;
