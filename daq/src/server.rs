//! Assembling and running a server: recovery, sockets, pipeline, persister, SQL, HTTP.
//!
//! [`start`] recovers the data directory (catalog, stray files, WAL replay) before it opens a
//! single socket, so nothing acknowledged before a crash is missing when senders reconnect.
//! It returns a [`RunningServer`] whose endpoints tests connect to (ports may be 0 in the
//! configuration) and whose [`RunningServer::shutdown`] drains every queue and persists.

use std::net::SocketAddr;
use std::sync::Arc;

use flowdaq_connectors::transport::{self, BindConfig, BlueskyBind, BoundEndpoints};
use flowdaq_schemas::Table;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::catalog::CatalogError;
use crate::conditions::{ConditionTimes, Conditions};
use crate::config::ServerConfig;
use crate::features::FeatureExtractors;
use crate::ingest::{known_calibrations, Pipeline, PipelineParts, StreamParts};
use crate::ledger::SeqLedger;
use crate::metrics::{Metrics, SeqOf};
use crate::outcomes::OutcomeTracker;
use crate::paths::DataPaths;
use crate::persister::{self, Persister};
use crate::publish::sequencer::StreamSequencer;
use crate::publish::zmtp::{PubLimits, PubSocket};
use crate::publish::{Publisher, StreamFormat};
use crate::query::{QueryEngine, QueryError};
use crate::storage::SharedStorage;
use crate::table_store::{LocalTableStore, SharedTableStore};
use crate::wal::{self, Wal, WalError};
use crate::write_buffer::WriteBuffer;

/// Start-up and shutdown failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Data directory problem.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Catalog could not be loaded.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The object store's client could not be built.
    #[error("storage {store}: {source}")]
    TableStore {
        /// The store's URL.
        store: String,
        /// The error.
        source: std::io::Error,
    },
    /// WAL could not be replayed or opened.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Rows in the WAL that fit no layout this version knows (start-up stops rather than drop
    /// them; the previous version can persist them).
    #[error("write-ahead log: {0}")]
    WalLayout(String),
    /// A socket could not bind.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// The SQL engine could not be built.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The HTTP listener could not bind.
    #[error("http listen {address}: {source}")]
    Http {
        /// The address.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// A feature extractor refused its configuration.
    #[error("features: {0}")]
    Features(#[from] crate::features::FeatureError),
    /// The feature stream could not bind.
    #[error(transparent)]
    Publish(#[from] crate::publish::zmtp::BindError),
    /// The control endpoint could not bind.
    #[error("control endpoint {endpoint}: {source}")]
    Control {
        /// The endpoint.
        endpoint: String,
        /// The socket's error.
        source: zeromq::ZmqError,
    },
    /// Tokens could not be loaded, or a surface would be exposed without them.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The Flight SQL endpoint could not bind.
    #[error(transparent)]
    FlightSql(#[from] crate::flight_sql::BindError),
    /// The PostgreSQL endpoint could not start.
    #[error(transparent)]
    Postgres(#[from] crate::postgres::PostgresError),
    /// A worker thread could not start or ended abnormally.
    #[error("worker thread: {0}")]
    Thread(String),
}

/// The state of a data directory after recovery, shared by the server and `flowdaq sql`.
pub struct Recovered {
    /// Paths of the data directory.
    pub paths: DataPaths,
    /// Buffer holding the catalog and the replayed rows.
    pub buffer: Arc<WriteBuffer>,
    /// Rows replayed from the WAL.
    pub replayed_rows: usize,
    /// Committed seqs: the catalog's, then the replayed groups'.
    pub ledger: SeqLedger,
    /// The catalog's WAL watermark: new segments are numbered above it.
    pub wal_persisted_through: u64,
}

/// Loads catalog and WAL of `data_dir`. With `repair`, stray files and persisted WAL segments
/// are deleted (the server does this); without, nothing on disk changes (`flowdaq sql` on a
/// directory a server may be writing).
///
/// # Errors
/// [`ServerError`] if the catalog or WAL cannot be read.
pub fn recover(
    data_dir: &std::path::Path,
    repair: bool,
    storage: SharedStorage,
) -> Result<Recovered, ServerError> {
    let tables = LocalTableStore::shared(DataPaths::new(data_dir), storage.clone());
    recover_with_tables(data_dir, repair, storage, tables)
}

/// As [`recover`], with the Parquet files and the catalog in `tables` (the WAL stays under
/// `data_dir`).
///
/// # Errors
/// [`ServerError`] if the catalog or WAL cannot be read.
pub fn recover_with_tables(
    data_dir: &std::path::Path,
    repair: bool,
    storage: SharedStorage,
    tables: SharedTableStore,
) -> Result<Recovered, ServerError> {
    let paths = DataPaths::new(data_dir);
    if repair {
        std::fs::create_dir_all(paths.root()).map_err(|source| ServerError::DataDir {
            path: paths.root().display().to_string(),
            source,
        })?;
    }
    let catalog = tables.load_catalog()?;
    let wal_persisted_through = catalog.wal_persisted_through;
    if repair {
        // Listing also proves the store reachable (a missing bucket is refused here, not at
        // the first persist).
        let listed = tables
            .list_table_files()
            .map_err(|source| ServerError::TableStore {
                store: tables.describe(),
                source,
            })?;
        let saved_before = catalog.next_file_id > 0 || !catalog.files.is_empty();
        if saved_before {
            // Without a catalog there is nothing to bring the Delta logs in line with: an
            // empty one would remove every file of this writer from them.
            tables.recovered(&catalog);
        }
        if !saved_before && !listed.is_empty() {
            // No catalog, yet files: a catalog lost or a store shared by mistake, not the
            // leftovers of a crash. Deleting them would destroy data; they stay.
            tracing::warn!(store = %tables.describe(), files = listed.len(), "no catalog, but table files: left as they are (not queried)");
        } else {
            let strays = crate::table_store::remove_strays(tables.as_ref(), &catalog.files, listed);
            if strays > 0 {
                tracing::warn!(strays, "removed files left by an interrupted persist");
            }
        }
        wal::remove_segments_through(&storage, &paths.wal_dir(), catalog.wal_persisted_through)?;
    }
    let replay = wal::replay(&paths.wal_dir(), catalog.wal_persisted_through)?;
    let mut ledger = catalog.seq_ledger.clone();
    for group in &replay.groups {
        ledger.commit_all(&group.seqs);
    }
    let buffer = Arc::new(WriteBuffer::with_tables(catalog, tables));
    let replayed_rows = replay.rows();
    for group in replay.groups {
        // A WAL written by an earlier version holds rows of its layout: give them today's.
        let batches = group
            .batches
            .into_iter()
            .map(|(table, batch)| Ok((table, table.conform(batch)?)))
            .collect::<Result<Vec<_>, arrow::error::ArrowError>>()
            .map_err(|err| ServerError::WalLayout(err.to_string()))?;
        buffer.insert(&batches);
    }
    if replayed_rows > 0 {
        tracing::info!(
            replayed_rows,
            torn = replay.torn_segments.len(),
            "replayed the WAL"
        );
    }
    Ok(Recovered {
        paths,
        buffer,
        replayed_rows,
        ledger,
        wal_persisted_through,
    })
}

/// A running server.
pub struct RunningServer {
    /// The ZeroMQ endpoints bound (ports resolved).
    pub endpoints: BoundEndpoints,
    /// The HTTP address bound, if HTTP is enabled.
    pub http_addr: Option<SocketAddr>,
    /// Flight SQL address (None when disabled).
    pub flight_sql_addr: Option<SocketAddr>,
    /// PostgreSQL wire address (None when disabled).
    pub postgres_addr: Option<SocketAddr>,
    /// Ingest metrics.
    pub metrics: Arc<Metrics>,
    /// The write buffer (rows and catalog).
    pub buffer: Arc<WriteBuffer>,
    /// The SQL engine.
    pub query: QueryEngine,
    /// Rows recovered from the WAL at start-up.
    pub replayed_rows: usize,
    /// The feature stream's PUB endpoint, if publishing.
    pub publish_endpoint: Option<String>,
    /// The control endpoint (conditions, replay), if enabled.
    pub control_endpoint: Option<String>,
    /// Where condition registrations go (what `POST /conditions` uses).
    pub registrations: crate::control::RegistrationSender,
    shutdown: watch::Sender<bool>,
    stream_tasks: Vec<JoinHandle<()>>,
    transport_tasks: Vec<JoinHandle<()>>,
    pipeline: std::thread::JoinHandle<()>,
    persister: std::thread::JoinHandle<()>,
    persister_stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The compactor's stop signal and thread, when compaction is on.
    compactor: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    ack_task: JoinHandle<()>,
    http_task: Option<JoinHandle<()>>,
}

/// Recovers the data directory and starts every part of the server.
///
/// # Errors
/// [`ServerError`] for anything that prevents a correct start.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    start_with_storage(config, crate::storage::LocalStorage::shared()).await
}

/// As [`start`], with the write path's files going through `storage` (tests inject faults).
///
/// # Errors
/// As [`start`].
pub async fn start_with_storage(
    config: ServerConfig,
    storage: SharedStorage,
) -> Result<RunningServer, ServerError> {
    let config = Arc::new(config);
    // Refuse bad feature options and exposed surfaces before touching the data directory.
    FeatureExtractors::new(&config.features)?;
    let tokens = crate::auth::Tokens::load(
        &config.auth,
        std::env::var(crate::auth::TOKENS_ENV).ok().as_deref(),
    )?;
    crate::auth::check_exposure(&config, &tokens)?;
    let metrics = Arc::new(Metrics::default());
    let tables = crate::table_store::open(
        &config.storage,
        DataPaths::new(&config.data_dir),
        storage.clone(),
        metrics.delta_lake.clone(),
    )
    .map_err(|source| ServerError::TableStore {
        store: config.storage.url.clone(),
        source,
    })?;
    tracing::info!(store = %tables.describe(), "Parquet files and catalog");
    let recovered = recover_with_tables(&config.data_dir, true, storage.clone(), tables)?;
    let Recovered {
        paths,
        buffer,
        replayed_rows,
        ledger,
        wal_persisted_through,
    } = recovered;
    let wal = Wal::open_after(
        &paths.wal_dir(),
        config.wal.fsync,
        storage.clone(),
        wal_persisted_through,
    )?;
    let calibrations = buffer.chunks(Table::SpectralCalibrations);
    let seen = known_calibrations(
        &calibrations.batches,
        buffer.tables().as_ref(),
        &calibrations.files,
    );

    for (source, session, seq) in ledger.last_seqs() {
        metrics.resume_seq(SeqOf {
            source,
            session,
            seq,
        });
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (inbound_tx, inbound_rx) = mpsc::channel(config.ingest.queue_capacity_messages);
    let (snapshot_tx, snapshot_rx) = std::sync::mpsc::channel();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();

    let endpoint = |s: &String| if s.is_empty() { None } else { Some(s.clone()) };
    let bind = BindConfig {
        pull: endpoint(&config.ingest.pull),
        sub: endpoint(&config.ingest.sub),
        router: endpoint(&config.ingest.router),
        bluesky: Some(BlueskyBind {
            config: config.bluesky.clone(),
            counters: metrics.bluesky.clone(),
        }),
        max_queued_bytes: config.ingest.max_queued_bytes,
    };
    let transport = transport::bind(&bind, inbound_tx, shutdown_rx.clone()).await?;
    let mut acker = transport.acker.clone();
    let ack_task = tokio::spawn(async move {
        while let Some((to, body)) = ack_rx.recv().await {
            acker.send(&to, &body).await;
        }
    });

    let persister = Persister::new(
        paths.clone(),
        config.parquet.clone(),
        buffer.clone(),
        storage.clone(),
        metrics.health.clone(),
    );
    let compactor = if config.compaction.interval_s > 0.0 {
        let writer = Persister::new(
            paths.clone(),
            config.parquet.clone(),
            buffer.clone(),
            storage.clone(),
            metrics.health.clone(),
        );
        // A file out of the catalog stays while a query planned before may still open it.
        let grace = config.query.timeout() + std::time::Duration::from_secs(5);
        let mut compactor = crate::compactor::Compactor::new(
            writer,
            config.compaction.clone(),
            &config.retention,
            grace,
            metrics.compaction.clone(),
        );
        compactor.finish_merges_at_start();
        let interval = std::time::Duration::from_secs_f64(config.compaction.interval_s);
        Some(
            crate::compactor::spawn(compactor, interval)
                .map_err(|e| ServerError::Thread(e.to_string()))?,
        )
    } else {
        None
    };
    let persister_stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let persister = persister::spawn(persister, snapshot_rx, persister_stopping.clone())
        .map_err(|e| ServerError::Thread(e.to_string()))?;

    let query = QueryEngine::new(buffer.clone(), &config.query)?;
    let (conditions, tracker, sequencer) = recover_streams(&query, &config).await?;
    let mut stream_tasks = Vec::new();
    let (publisher, publish_endpoint) = if config.publish.listen.is_empty() {
        (None, None)
    } else {
        let limits = PubLimits {
            max_queued_bytes_per_subscriber: config.publish.max_queued_bytes_per_subscriber,
            max_subscribers: config.publish.max_subscribers,
        };
        let (socket, bound, accept) = PubSocket::bind(
            &config.publish.listen,
            limits,
            metrics.publish.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let formats: Vec<StreamFormat> = [
            (config.publish.json, StreamFormat::Json),
            (config.publish.arrow, StreamFormat::Arrow),
        ]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
        .collect();
        let (publisher, task) = Publisher::spawn(socket, formats, metrics.publish.clone());
        stream_tasks.extend([accept, task]);
        (Some(publisher), Some(bound))
    };
    let (registrations, registrations_rx) = mpsc::channel(64);
    let control_endpoint = if config.control.listen.is_empty() {
        None
    } else {
        let state = crate::control::ControlState {
            registrations: registrations.clone(),
            directory: sequencer.directory(),
            query: query.clone(),
            max_replay_rows: config.control.max_replay_rows,
            replay_requests: metrics.replay_requests.clone(),
            tokens: tokens.clone(),
        };
        let (bound, task) =
            crate::control::serve(&config.control.listen, state, shutdown_rx.clone())
                .await
                .map_err(|source| ServerError::Control {
                    endpoint: config.control.listen.clone(),
                    source,
                })?;
        stream_tasks.push(task);
        Some(bound)
    };
    let events = crate::publish::events::EventFeed::default();
    let streams = StreamParts {
        conditions,
        tracker,
        sequencer,
        publisher,
        events: events.clone(),
        registrations: registrations_rx,
    };
    let pipeline = Pipeline::new(
        PipelineParts {
            config: config.clone(),
            wal,
            buffer: buffer.clone(),
            metrics: metrics.clone(),
            health: metrics.health.clone(),
            snapshots: snapshot_tx,
            acks: ack_tx,
            seen_calibrations: seen,
            ledger,
            streams,
        },
        &config.features,
        config.ingest.accept_workers(),
    )?;
    let runtime = tokio::runtime::Handle::current();
    let pipeline = std::thread::Builder::new()
        .name("flowdaq-ingest".into())
        .spawn(move || pipeline.run(inbound_rx, runtime))
        .map_err(|e| ServerError::Thread(e.to_string()))?;

    let (http_addr, http_task) = if config.http.listen.is_empty() {
        (None, None)
    } else {
        let address = config.http.listen.clone();
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|source| ServerError::Http {
                address: address.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Http { address, source })?;
        let state = crate::http::HttpState {
            query: query.clone(),
            metrics: metrics.clone(),
            buffer: buffer.clone(),
            registrations: registrations.clone(),
            body_timeout: std::time::Duration::from_secs_f64(config.http.body_timeout_s),
            max_sql_bytes: config.query.max_sql_bytes,
            connections: Default::default(),
            tokens: tokens.clone(),
            events: events.clone(),
        };
        let limits = crate::http::serve::HttpLimits::from_config(&config.http);
        let counters = state.connections.clone();
        let task = tokio::spawn(crate::http::serve::serve(
            listener,
            crate::http::router(state),
            limits,
            counters,
            shutdown_rx.clone(),
        ));
        (Some(local), Some(task))
    };
    let flight_sql_addr = if config.flight_sql.listen.is_empty() {
        None
    } else {
        let (bound, task) = crate::flight_sql::serve(
            &config.flight_sql.listen,
            query.clone(),
            tokens.clone(),
            config.flight_sql.max_connections,
            metrics.flight_sql_door.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        stream_tasks.push(task);
        Some(bound)
    };
    let postgres_addr = if config.postgres.listen.is_empty() {
        None
    } else {
        let (bound, task) = crate::postgres::serve(
            &config.postgres,
            &config.query,
            query.clone(),
            tokens.clone(),
            metrics.postgres_door.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        stream_tasks.push(task);
        Some(bound)
    };
    tracing::info!(endpoints = ?transport.endpoints, ?http_addr, ?flight_sql_addr, ?postgres_addr, data_dir = %paths.root().display(), "flowdaq server started");
    Ok(RunningServer {
        endpoints: transport.endpoints,
        http_addr,
        flight_sql_addr,
        postgres_addr,
        metrics,
        buffer,
        query,
        replayed_rows,
        publish_endpoint,
        control_endpoint,
        registrations,
        shutdown: shutdown_tx,
        stream_tasks,
        transport_tasks: transport.tasks,
        pipeline,
        persister,
        persister_stopping,
        compactor,
        ack_task,
        http_task,
    })
}

/// Rebuilds what the pipeline knows of conditions, outcomes and stream numbers from the tables.
async fn recover_streams(
    query: &QueryEngine,
    config: &ServerConfig,
) -> Result<(Conditions, OutcomeTracker, StreamSequencer), ServerError> {
    let sequencer = StreamSequencer::recover(query).await?;
    let mut conditions = Conditions::default();
    let mut tracker = OutcomeTracker::new(&config.outcomes);
    let registered = query
        .execute(
            "SELECT run_id, condition_id, CAST(start_time_ns AS BIGINT) AS start_ns, \
             CAST(arrival_time_ns AS BIGINT) AS arrival_ns, stream_seq FROM conditions \
             ORDER BY arrival_ns, stream_seq",
        )
        .await?;
    for batch in &registered.batches {
        use arrow::array::AsArray;
        use arrow::datatypes::Int64Type;
        let runs = batch.column(0).as_string::<i32>();
        let ids = batch.column(1).as_string::<i32>();
        let starts = batch.column(2).as_primitive::<Int64Type>();
        let arrivals = batch.column(3).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let times = ConditionTimes {
                start_time_ns: starts.value(row),
                registered_at_ns: arrivals.value(row),
            };
            conditions.apply(runs.value(row), ids.value(row), times);
            tracker.condition_started(runs.value(row), ids.value(row), times);
        }
    }
    let written = query
        .execute("SELECT run_id, condition_id, source, feature FROM condition_outcomes")
        .await?;
    for batch in &written.batches {
        use arrow::array::AsArray;
        let text = |i: usize| batch.column(i).as_string::<i32>();
        let (runs, ids, sources, features) = (text(0), text(1), text(2), text(3));
        for row in 0..batch.num_rows() {
            tracker.mark_done(
                runs.value(row),
                ids.value(row),
                sources.value(row),
                features.value(row),
            );
        }
    }
    // Outcomes decided while replaying old registrations (superseded without values) are
    // empty; drop them rather than write them.
    let _ = tracker.take_rows(0);
    Ok((conditions, tracker, sequencer))
}

impl RunningServer {
    /// Stops receiving, drains the pipeline, persists everything buffered, and stops.
    ///
    /// # Errors
    /// [`ServerError::Thread`] if a worker thread panicked.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        for task in self.transport_tasks {
            let _ = task.await;
        }
        let join = |handle: std::thread::JoinHandle<()>| async move {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| ServerError::Thread(e.to_string()))?
                .map_err(|_| ServerError::Thread("a worker thread panicked".into()))
        };
        // The pipeline ends when its inbound queue closes; registrations still held by the
        // control endpoint or HTTP are answered "shutting down" as those tasks end.
        drop(self.registrations);
        join(self.pipeline).await?;
        // From here a persist that keeps failing is left to the WAL after a few attempts.
        self.persister_stopping
            .store(true, std::sync::atomic::Ordering::Release);
        join(self.persister).await?;
        if let Some((stop, handle)) = self.compactor {
            drop(stop);
            join(handle).await?;
        }
        for task in self.stream_tasks {
            let _ = task.await;
        }
        let _ = self.ack_task.await;
        if let Some(task) = self.http_task {
            let _ = task.await;
        }
        Ok(())
    }
}
