//! Raw PicoQuant records streamed live: the HydraHarp file's 32-bit records pushed over a real
//! ZeroMQ socket in small messages decode to exactly ptufile's photons (overflow state carried
//! from message to message), and a lost message resets the source's state without losing the
//! messages that follow. A source that does not store its photons histograms and fits them from
//! the records' native events exactly as the file's photons rows sent as columns are.

use std::path::Path;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use flowdaq_analytics::tcspc::ptu::PtuHeader;
use flowdaq_connectors::message::OutboundMessage;
use flowdaq_connectors::runner::PushSender;
use flowdaq_daq::ServerConfig;
use flowdaq_schemas::{Dtype, StreamKind};

const RECORDS_PER_MESSAGE: usize = 997;

fn hydraharp() -> (PtuHeader, Vec<u8>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/tests/data/hydraharp_t3_beads.ptu");
    let bytes = std::fs::read(path).expect("read ptu");
    let header = PtuHeader::parse(&bytes).expect("header");
    let start = header.header_len_bytes as usize;
    let end = start + 4 * header.number_of_records as usize;
    (header.clone(), bytes[start..end].to_vec())
}

fn chunk_message(header: &PtuHeader, source: &str, records: &[u8]) -> OutboundMessage {
    let time_base = header.time_base();
    OutboundMessage::new(source, StreamKind::Photons)
        .meta("record_type", header.record_type.code())
        .meta("macro_unit_ps", time_base.macro_unit_ps)
        .meta("micro_bin_ps", time_base.micro_bin_ps)
        .raw_array(
            "records",
            Dtype::U32,
            &[(records.len() / 4) as u64],
            records.to_vec(),
        )
}

/// The file's records as messages of `source`, the last marked `end_of_stream` if `end` (as
/// the PTU replay marks its last message).
fn file_messages(
    header: &PtuHeader,
    source: &str,
    records: &[u8],
    end: bool,
) -> Vec<OutboundMessage> {
    let mut messages: Vec<OutboundMessage> = records
        .chunks(4 * RECORDS_PER_MESSAGE)
        .map(|chunk| chunk_message(header, source, chunk))
        .collect();
    if let (true, Some(last)) = (end, messages.pop()) {
        messages.push(last.end_of_stream());
    }
    messages
}

async fn count(server: &flowdaq_daq::RunningServer, sql: &str) -> i64 {
    let result = server.query.execute(sql).await.expect("sql");
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_records_decode_live_like_the_file_and_a_gap_resets_the_state() {
    let (header, records) = hydraharp();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = flowdaq_daq::start(ServerConfig::embedded_pull_only(dir.path()))
        .await
        .expect("start");
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut sender = PushSender::connect(&pull).await.expect("connect");
    let chunks: Vec<&[u8]> = records.chunks(4 * RECORDS_PER_MESSAGE).collect();
    for chunk in &chunks {
        sender
            .send(chunk_message(&header, "hh-live", chunk))
            .await
            .expect("send");
    }
    // Second source: the same stream with message 40 lost (its seq is skipped).
    let mut gap_sender = PushSender::connect(&pull).await.expect("connect");
    let mut sent_with_gap = 0u64;
    for (index, chunk) in chunks.iter().enumerate() {
        if index == 40 {
            gap_sender.skip_seq(1);
            continue;
        }
        gap_sender
            .send(chunk_message(&header, "hh-gap", chunk))
            .await
            .expect("send");
        sent_with_gap += 1;
    }
    let total = chunks.len() as u64 + sent_with_gap;
    assert!(
        server
            .metrics
            .wait_processed(total, Duration::from_secs(60))
            .await
    );

    // ptufile on this file: 73,787 photons (52,833 on channel 0), 100 markers.
    let photons = "SELECT count(*) FROM photons WHERE source = 'hh-live' AND marker_flags = 0";
    assert_eq!(count(&server, photons).await, 73_787);
    let channel0 = "SELECT count(*) FROM photons WHERE source = 'hh-live' AND marker_flags = 0 AND channel = 0";
    assert_eq!(count(&server, channel0).await, 52_833);
    let markers = "SELECT count(*) FROM photons WHERE source = 'hh-live' AND marker_flags <> 0";
    assert_eq!(count(&server, markers).await, 100);
    // The last photon's macro time equals ptufile's: sync 422,229,850 at 1/39.99996 MHz.
    let last = "SELECT CAST(max(macro_time_ps) AS BIGINT) FROM photons WHERE source = 'hh-live'";
    let expected_ps = (422_229_850.0 * header.time_base().macro_unit_ps).round() as i64;
    assert!((count(&server, last).await - expected_ps).abs() <= 1);

    // With a message lost, the gap is counted, every later message is still decoded, and its
    // times restart (they are smaller than the same photons' times without the gap).
    let stats = server.metrics.snapshot().sources["hh-gap"].clone();
    assert_eq!((stats.gaps, stats.missing_messages), (1, 1));
    let rejected = server.metrics.snapshot().messages_rejected;
    assert_eq!(rejected, 0);
    let gap_last = "SELECT CAST(max(macro_time_ps) AS BIGINT) FROM photons WHERE source = 'hh-gap'";
    assert!(count(&server, gap_last).await < expected_ps);
    server.shutdown().await.expect("shutdown");
}

/// The SQL answer as text rows, for comparing two sources' rows.
async fn rows_text(server: &flowdaq_daq::RunningServer, sql: &str) -> Vec<String> {
    let result = server.query.execute(sql).await.expect("sql");
    let mut rows = Vec::new();
    for batch in &result.batches {
        let formatted = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))
            .expect("format")
            .to_string();
        rows.extend(
            formatted
                .lines()
                .skip(3)
                .filter(|l| !l.starts_with('+'))
                .map(String::from),
        );
    }
    rows
}

/// A server histogramming each of `sources` (name, whether its photons are stored) with
/// `tcspc`, the file's layout by default (see [`file_layout`]).
async fn tcspc_server(
    data_dir: &Path,
    sources: &[(&str, bool)],
    tcspc: &flowdaq_daq::config::TcspcSourceConfig,
) -> flowdaq_daq::RunningServer {
    let mut config = ServerConfig::embedded_pull_only(data_dir);
    for &(source, store_raw) in sources {
        config.sources.insert(
            source.into(),
            flowdaq_daq::config::SourceConfig { store_raw },
        );
        config
            .features
            .tcspc
            .sources
            .insert(source.into(), tcspc.clone());
    }
    flowdaq_daq::start(config).await.expect("start")
}

/// The HydraHarp file's clock and bins, both channels, 2 s windows.
fn file_layout(header: &PtuHeader) -> flowdaq_daq::config::TcspcSourceConfig {
    let time_base = header.time_base();
    flowdaq_daq::config::TcspcSourceConfig {
        channels: 2,
        window_s: 2.0,
        ..flowdaq_daq::config::TcspcSourceConfig::new(
            1e12 / time_base.macro_unit_ps,
            time_base.micro_bin_ps,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstored_raw_records_are_histogrammed_and_fitted_like_the_files_photon_rows() {
    use flowdaq_connectors::replay::ptu::PtuReplayConfig;
    use flowdaq_connectors::Connector;
    let (header, records) = hydraharp();
    let tcspc = flowdaq_daq::config::TcspcSourceConfig {
        bin_width_native: 4,
        ..file_layout(&header)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Raw records, photons not stored; and the file's photons as columns, stored.
    let sources = [("hh-events", false), ("hh-columns", true)];
    let server = tcspc_server(dir.path(), &sources, &tcspc).await;
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut sender = PushSender::connect(&pull).await.expect("connect");
    let mut sent = 0u64;
    // The last message closes the last window, as the PTU replay's last message does.
    for message in file_messages(&header, "hh-events", &records, true) {
        sender.send(message).await.expect("send");
        sent += 1;
    }
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/tests/data/hydraharp_t3_beads.ptu");
    let mut replay = PtuReplayConfig {
        source: "hh-columns".into(),
        records_per_message: 5_003,
        ..PtuReplayConfig::new(path)
    }
    .build()
    .expect("ptu");
    let mut columns_sender = PushSender::connect(&pull).await.expect("connect");
    while let Some(message) = replay.next_message().expect("replay") {
        columns_sender.send(message).await.expect("send");
        sent += 1;
    }
    assert!(
        server
            .metrics
            .wait_processed(sent, Duration::from_secs(60))
            .await
    );
    assert_eq!(server.metrics.snapshot().messages_rejected, 0);

    // No photons rows for the unstored source, but every photon and marker counted.
    let stored = "SELECT count(*) FROM photons WHERE source = 'hh-events'";
    assert_eq!(count(&server, stored).await, 0);
    let stats = server.metrics.snapshot().sources["hh-events"].clone();
    assert_eq!(stats.rows, 73_787 + 100);
    let columns_rows =
        "SELECT count(*) FROM photons WHERE source = 'hh-columns' AND marker_flags = 0";
    assert_eq!(count(&server, columns_rows).await, 73_787);

    // The same windows, counts and fits from both routes.
    let histograms = |source: &str| {
        format!(
            "SELECT window_start_ps, window_end_ps, channel, photon_count, pile_up, counts \
             FROM tcspc_histograms WHERE source = '{source}' ORDER BY window_start_ps, channel"
        )
    };
    let from_events = rows_text(&server, &histograms("hh-events")).await;
    assert_eq!(
        from_events.len(),
        12,
        "5 whole 2 s windows and the last, partial one closed at the end of the stream, \
         x 2 channels"
    );
    assert_eq!(
        from_events,
        rows_text(&server, &histograms("hh-columns")).await
    );
    let fits = |source: &str| {
        format!(
            "SELECT window_start_ps, channel, tau_1_ns, amplitude_1_counts, background_counts, \
             phasor_g, phasor_s, converged, fit_error FROM lifetime_features \
             WHERE source = '{source}' ORDER BY window_start_ps, channel"
        )
    };
    let fitted = rows_text(&server, &fits("hh-events")).await;
    assert_eq!(fitted.len(), 12);
    assert_eq!(fitted, rows_text(&server, &fits("hh-columns")).await);
    // Every window with enough photons to fit (6 of the 12) is fitted and converges.
    let converged =
        "SELECT count(*) FROM lifetime_features WHERE source = 'hh-events' AND converged";
    let fittable =
        "SELECT count(*) FROM lifetime_features WHERE source = 'hh-events' AND photon_count >= 1000";
    assert_eq!(count(&server, converged).await, 6, "{fitted:#?}");
    assert_eq!(count(&server, fittable).await, 6);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_of_stream_message_closes_its_sources_open_window_at_once() {
    let (header, records) = hydraharp();
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = [("hh-ended", false), ("hh-open", false)];
    let server = tcspc_server(dir.path(), &sources, &file_layout(&header)).await;
    let pull = server.endpoints.pull.clone().expect("pull");
    let mut sent = 0u64;
    for source in ["hh-ended", "hh-open"] {
        let mut sender = PushSender::connect(&pull).await.expect("connect");
        for message in file_messages(&header, source, &records, source == "hh-ended") {
            sender.send(message).await.expect("send");
            sent += 1;
        }
    }
    assert!(
        server
            .metrics
            .wait_processed(sent, Duration::from_secs(60))
            .await
    );
    // The ended source's last, partial window is queryable with its last message: every
    // photon is in a window. The other source's last window is still open.
    let windows =
        |source: &str| format!("SELECT count(*) FROM tcspc_histograms WHERE source = '{source}'");
    let photons = |source: &str| {
        format!(
            "SELECT CAST(sum(photon_count) AS BIGINT) FROM tcspc_histograms WHERE source = '{source}'"
        )
    };
    assert_eq!(
        count(&server, &windows("hh-ended")).await,
        12,
        "6 windows x 2 channels"
    );
    assert_eq!(count(&server, &photons("hh-ended")).await, 73_787);
    assert_eq!(count(&server, &windows("hh-open")).await, 10);
    assert!(count(&server, &photons("hh-open")).await < 73_787);
    server.shutdown().await.expect("shutdown");
}
