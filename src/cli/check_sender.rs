//! `flowdaq check-sender`: the conformance kit for instrument vendors (see docs/connectors.md).
//!
//! Binds the sockets a server would, takes N messages from the vendor's sender through the
//! server's own decoder without storing anything, prints a rule-by-rule report (text, or JSON
//! with `--json`) and exits non-zero when a rule is broken or messages are missing, so a
//! vendor's CI can run it.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flowdaq_connectors::conformance::{self, CheckConfig};
use flowdaq_connectors::decode::DecodeLimits;
use flowdaq_connectors::transport::BindConfig;
use flowdaq_daq::config::IngestConfig;

/// Arguments of `flowdaq check-sender`.
#[derive(Debug, Args)]
pub struct CheckSenderArgs {
    /// PULL endpoint to bind, for PUSH senders (port 0: any free port, printed on the ready line).
    #[arg(long)]
    pub pull: Option<String>,
    /// ROUTER endpoint to bind, for DEALER senders: they get the acks and nacks a server sends.
    #[arg(long)]
    pub router: Option<String>,
    /// SUB endpoint to bind, for PUB senders.
    #[arg(long)]
    pub sub: Option<String>,
    /// Messages to check.
    #[arg(long, default_value_t = 100)]
    pub messages: u64,
    /// Longest wait for them, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_s: f64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the check; exits with status 1 when the sender fails it.
pub async fn run(args: CheckSenderArgs) -> anyhow::Result<()> {
    let ingest = IngestConfig::default();
    let pull = match (&args.pull, &args.router, &args.sub) {
        (None, None, None) => Some(ingest.pull.clone()),
        _ => args.pull.clone(),
    };
    let config = CheckConfig {
        bind: BindConfig {
            pull,
            sub: args.sub.clone(),
            router: args.router.clone(),
            bluesky: None,
            max_queued_bytes: ingest.max_queued_bytes,
        },
        messages: args.messages,
        timeout: Duration::from_secs_f64(args.timeout_s),
        limits: DecodeLimits {
            max_message_bytes: ingest.max_message_bytes,
            reject_non_finite_intensities: ingest.reject_non_finite_intensities,
        },
    };
    let report = conformance::check(&config, |bound| {
        let ready = serde_json::json!({
            "event": "ready",
            "pull": bound.pull,
            "router": bound.router,
            "sub": bound.sub,
        });
        println!("{ready}");
    })
    .await
    .context("check-sender")?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", conformance::render(&report));
    }
    if !report.passed {
        std::process::exit(1);
    }
    Ok(())
}
