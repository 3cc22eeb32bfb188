//! The replies a DEALER sender gets, one per message, in the order its messages arrived.
//!
//! Their shapes are the contract of `docs/wire-protocol.md`: an `ack` means durable (and a
//! `duplicate` ack means durable earlier); a `nack` says whether sending the same message
//! again can help (`retry`), and names the source and seq whenever the header parsed.

use serde_json::{json, Value};

/// The message is durable.
pub(super) fn ack(source: &str, seq: u64) -> Value {
    json!({"ack": seq, "source": source})
}

/// The message was already durable (a resend): acknowledged again, not stored again.
pub(super) fn duplicate(source: &str, seq: u64) -> Value {
    json!({"ack": seq, "source": source, "duplicate": true})
}

/// The message was refused; the same bytes will be refused again.
pub(super) fn refused(source: Option<&str>, seq: Option<u64>, reason: &str) -> Value {
    json!({"nack": seq, "source": source, "error": reason, "retry": false})
}

/// The message could not be made durable now; resend it later.
pub(super) fn not_durable(source: Option<&str>, seq: Option<u64>, reason: &str) -> Value {
    json!({"nack": seq, "source": source, "error": format!("not durable: {reason}"), "retry": true})
}
