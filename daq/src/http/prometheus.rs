//! `GET /metrics` in the Prometheus text format (0.0.4), which every scraper reads.
//!
//! The server's counters live where they are counted (ingest, WAL, persister, buffer, query
//! engine, feature stream, HTTP); a scrape copies them into one [`Scrape`] and encodes it with
//! `prometheus-client`, named by Prometheus conventions: a `flowdaq_` prefix, units in the
//! name, `_total` on counters, labels for the source, the extractor and the query outcome.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::serve::HttpCountersSnapshot;
use crate::health::HealthReport;
use crate::metrics::{LatencySummary, MetricsSnapshot};
use crate::query::counters::QueryCountersSnapshot;
use crate::write_buffer::BufferStats;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every value one scrape reports, copied at one moment.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Ingest, WAL, persister and feature-stream counters.
    pub metrics: MetricsSnapshot,
    /// Messages fully processed.
    pub processed: u64,
    /// The write buffer.
    pub buffer: BufferStats,
    /// The write path's health.
    pub health: HealthReport,
    /// HTTP connections and refusals.
    pub http: HttpCountersSnapshot,
    /// Queries and their failures.
    pub query: QueryCountersSnapshot,
}

/// Encodes `scrape` as Prometheus text.
pub fn render(scrape: Scrape) -> String {
    let mut registry = Registry::with_prefix("flowdaq");
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        // Writing to a String cannot fail; keep the scrape parseable if it ever does.
        let _ = writeln!(text, "# encoding failed: {err}");
    }
    text
}

type Labels = Vec<(&'static str, String)>;

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> std::fmt::Result
where
    V: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug,
{
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A latency summary as gauges by quantile, seconds.
fn latency(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    summary: &LatencySummary,
) -> std::fmt::Result {
    let seconds = |us: u64| us as f64 / 1e6;
    gauge_family(
        encoder,
        name,
        help,
        [
            (
                vec![("quantile", "0.5".to_string())],
                seconds(summary.p50_us),
            ),
            (
                vec![("quantile", "0.99".to_string())],
                seconds(summary.p99_us),
            ),
            (vec![("quantile", "1".to_string())], seconds(summary.max_us)),
        ],
    )
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        let m = &self.metrics;
        counter(
            e,
            "ingest_messages_received",
            "Messages received (accepted, rejected, resent, not taken).",
            m.messages_received,
        )?;
        counter(
            e,
            "ingest_messages_rejected",
            "Messages rejected into ingest_errors.",
            m.messages_rejected,
        )?;
        counter(
            e,
            "ingest_messages_processed",
            "Messages fully processed (committed or failed).",
            self.processed,
        )?;
        counter(
            e,
            "ingest_received_bytes",
            "Bytes received in messages.",
            m.bytes_received,
        )?;
        counter(
            e,
            "ingest_rows",
            "Rows made durable and queryable.",
            m.rows_ingested,
        )?;
        counter(
            e,
            "ingest_not_durable_messages",
            "Messages not taken while the WAL refused a group (nacked or dropped).",
            m.not_durable_messages,
        )?;
        gauge(
            e,
            "ingest_waiting_messages",
            "Messages waiting now for the WAL to take a held group.",
            m.waiting_messages,
        )?;
        latency(
            e,
            "ingest_receipt_to_durable_seconds",
            "Receipt to durable in the WAL.",
            &m.receipt_to_durable,
        )?;
        latency(
            e,
            "ingest_receipt_to_queryable_seconds",
            "Receipt to visible to SQL.",
            &m.receipt_to_queryable,
        )?;
        counter_family(
            e,
            "feature_failures",
            "Messages a feature extractor failed on (their raw rows were kept).",
            m.feature_failures
                .iter()
                .map(|(extractor, n)| (vec![("extractor", extractor.clone())], *n)),
        )?;

        let source = |name: &String, transport: &String| -> Labels {
            vec![("source", name.clone()), ("transport", transport.clone())]
        };
        type SourceField = fn(&crate::metrics::SourceStats) -> u64;
        let per_source: [(&str, &str, SourceField); 8] = [
            ("source_messages", "Accepted messages.", |s| s.messages),
            ("source_rows", "Rows the accepted messages carried.", |s| {
                s.rows
            }),
            (
                "source_received_bytes",
                "Bytes of accepted messages.",
                |s| s.bytes,
            ),
            ("source_rejected_messages", "Rejected messages.", |s| {
                s.rejected
            }),
            (
                "source_missing_messages",
                "Messages missing according to seq (sum of gap sizes).",
                |s| s.missing_messages,
            ),
            ("source_gaps", "Distinct gaps in seq.", |s| s.gaps),
            (
                "source_seq_regressions",
                "Messages whose seq was not above the last one.",
                |s| s.seq_regressions,
            ),
            (
                "source_duplicate_messages",
                "Resends of committed messages (acknowledged, not stored again).",
                |s| s.duplicates,
            ),
        ];
        for (name, help, field) in per_source {
            counter_family(
                e,
                name,
                help,
                m.sources
                    .iter()
                    .map(|(id, stats)| (source(id, &stats.transport), field(stats))),
            )?;
        }
        gauge_family(
            e,
            "source_last_seq",
            "Highest seq seen per source.",
            m.sources.iter().filter_map(|(id, stats)| {
                stats.last_seq.map(|seq| {
                    (
                        source(id, &stats.transport),
                        i64::try_from(seq).unwrap_or(i64::MAX),
                    )
                })
            }),
        )?;

        counter(e, "wal_group_commits", "WAL group commits.", m.wal_groups)?;
        counter(
            e,
            "wal_append_errors",
            "WAL appends that failed (groups held and retried).",
            m.health.wal_errors,
        )?;
        counter(
            e,
            "wal_rotation_errors",
            "WAL rotations that failed.",
            m.health.wal_rotation_errors,
        )?;
        counter(
            e,
            "wal_cleanup_errors",
            "Persisted WAL segments that could not be deleted.",
            m.health.wal_cleanup_errors,
        )?;
        counter(
            e,
            "persist_errors",
            "Persist attempts that failed (retried with back-off).",
            m.health.persist_errors,
        )?;
        gauge(
            e,
            "write_path_healthy",
            "1 while the WAL and the persister work, 0 while either fails.",
            u64::from(self.health.status == "ok"),
        )?;
        gauge(
            e,
            "ingest_backpressure",
            "1 while intake is paused because persistence is behind.",
            u64::from(self.health.backpressure),
        )?;

        let b = &self.buffer;
        gauge(
            e,
            "buffer_open_rows",
            "Rows in the open buffer.",
            b.open_rows as u64,
        )?;
        gauge(
            e,
            "buffer_open_bytes",
            "Arrow bytes in the open buffer.",
            b.open_bytes as u64,
        )?;
        gauge(
            e,
            "buffer_persisting_rows",
            "Rows in snapshots being persisted.",
            b.persisting_rows as u64,
        )?;
        gauge(
            e,
            "buffer_persisting_bytes",
            "Arrow bytes in snapshots being persisted.",
            b.persisting_bytes as u64,
        )?;
        gauge(
            e,
            "buffer_persisting_snapshots",
            "Snapshots written or waiting to be written.",
            b.persisting_snapshots as u64,
        )?;
        gauge(
            e,
            "persisted_rows",
            "Rows in catalogued Parquet files.",
            b.persisted_rows,
        )?;
        gauge(
            e,
            "persisted_files",
            "Catalogued Parquet files.",
            b.persisted_files as u64,
        )?;

        counter(
            e,
            "publish_messages",
            "Feature-stream messages queued for at least one subscriber.",
            m.publish_messages,
        )?;
        counter(
            e,
            "publish_dropped_messages",
            "Feature-stream messages dropped for a full subscriber queue.",
            m.publish_dropped_messages,
        )?;
        gauge(
            e,
            "publish_queued_bytes",
            "Bytes queued for subscribers now.",
            m.publish_queued_bytes,
        )?;
        gauge(
            e,
            "publish_queued_bytes_max",
            "Most bytes ever queued for one subscriber.",
            m.publish_queued_bytes_max,
        )?;
        gauge(
            e,
            "publish_subscribers",
            "Subscribers connected.",
            m.publish_subscribers,
        )?;
        counter(
            e,
            "replay_requests",
            "Replay requests served.",
            m.replay_requests,
        )?;

        let q = &self.query;
        counter(
            e,
            "queries",
            "SQL statements received, every door.",
            q.started,
        )?;
        let outcome = |kind: &str| vec![("reason", kind.to_string())];
        counter_family(
            e,
            "query_errors",
            "SQL statements that failed, by reason.",
            [
                (outcome("refused"), q.refused),
                (outcome("limit"), q.limited),
                (outcome("timeout"), q.timed_out),
                (outcome("error"), q.failed),
            ],
        )?;

        for (door, counters) in [("flight_sql", &m.flight_sql), ("postgres", &m.postgres)] {
            gauge(
                e,
                &format!("{door}_connections_open"),
                "Connections open now at this door.",
                counters.connections_open,
            )?;
            counter(
                e,
                &format!("{door}_connections_refused"),
                "Connections closed at once at this door (max_connections open).",
                counters.connections_refused,
            )?;
        }

        let b = &m.bluesky;
        let document = |kind: &str| vec![("document", kind.to_string())];
        counter_family(
            e,
            "bluesky_documents",
            "Bluesky documents read, by document (events count one per event).",
            [
                (document("start"), b.start_documents),
                (document("descriptor"), b.descriptor_documents),
                (document("event"), b.events),
                (document("stop"), b.stop_documents),
                (
                    document("external_reference"),
                    b.external_reference_documents,
                ),
            ],
        )?;
        counter(
            e,
            "bluesky_documents_refused",
            "Bluesky documents refused into ingest_errors.",
            b.refused_documents,
        )?;
        counter(
            e,
            "bluesky_documents_other_prefix",
            "Bluesky documents skipped: another Publisher prefix.",
            b.other_prefix_documents,
        )?;
        counter(
            e,
            "bluesky_unstored_array_values",
            "Event array values no [[bluesky.spectra]] entry maps: read, not stored.",
            b.unstored_array_values,
        )?;
        gauge(
            e,
            "bluesky_open_runs",
            "Bluesky runs started and not stopped.",
            b.open_runs,
        )?;

        let c = &m.compaction;
        for (name, help, value) in [
            (
                "compaction_rounds",
                "Rounds of compaction and retention run.",
                c.rounds,
            ),
            (
                "compaction_merges",
                "Merged Parquet files written.",
                c.merges,
            ),
            (
                "compaction_files_merged",
                "Small Parquet files replaced by merged ones.",
                c.files_merged,
            ),
            (
                "compaction_files_expired",
                "Parquet files dropped by retention.",
                c.files_expired,
            ),
            (
                "compaction_rows_expired",
                "Rows in the files dropped by retention.",
                c.rows_expired,
            ),
            (
                "compaction_errors",
                "Compaction or retention steps that failed (retried next round).",
                c.errors,
            ),
        ] {
            counter(e, name, help, value)?;
        }
        let d = &m.delta_lake;
        counter(
            e,
            "delta_commits",
            "Delta Lake commits made (with [storage] delta_lake).",
            d.commits,
        )?;
        counter(
            e,
            "delta_sync_failures",
            "Delta Lake syncs that failed (each retried at the next catalog save).",
            d.failures,
        )?;
        gauge(
            e,
            "delta_behind",
            "1 while the last Delta Lake sync failed: the logs lack a change the catalog has.",
            u64::from(d.behind),
        )?;

        let h = &self.http;
        gauge(
            e,
            "http_connections_open",
            "HTTP connections open now.",
            h.connections_open,
        )?;
        counter(
            e,
            "http_connections_refused",
            "HTTP connections closed at once (max_connections open).",
            h.connections_refused,
        )?;
        counter(
            e,
            "http_header_timeouts",
            "HTTP connections closed for late headers or idleness.",
            h.header_timeouts,
        )?;
        counter(
            e,
            "http_body_timeouts",
            "HTTP requests answered 408 for a late body.",
            h.body_timeouts,
        )?;
        counter(
            e,
            "http_unauthorized",
            "HTTP requests answered 401 for want of a token.",
            h.unauthorized,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_sources_are_labels() {
        let mut metrics = MetricsSnapshot {
            messages_received: 7,
            ..MetricsSnapshot::default()
        };
        metrics.bluesky.events = 12;
        metrics.bluesky.open_runs = 1;
        metrics.sources.insert(
            "spec-1".into(),
            crate::metrics::SourceStats {
                transport: "pull".into(),
                messages: 5,
                missing_messages: 2,
                gaps: 1,
                last_seq: Some(9),
                ..Default::default()
            },
        );
        let text = render(Scrape {
            metrics,
            processed: 7,
            buffer: BufferStats::default(),
            health: HealthReport {
                status: "ok",
                wal: None,
                persister: None,
                backpressure: false,
            },
            http: HttpCountersSnapshot::default(),
            query: QueryCountersSnapshot {
                started: 3,
                timed_out: 1,
                ..Default::default()
            },
        });
        for line in [
            "# TYPE flowdaq_ingest_messages_received_total counter",
            "flowdaq_ingest_messages_received_total 7",
            "flowdaq_source_missing_messages_total{source=\"spec-1\",transport=\"pull\"} 2",
            "flowdaq_source_last_seq{source=\"spec-1\",transport=\"pull\"} 9",
            "flowdaq_query_errors_total{reason=\"timeout\"} 1",
            "flowdaq_write_path_healthy 1",
            "flowdaq_bluesky_documents_total{document=\"event\"} 12",
            "flowdaq_bluesky_open_runs 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
