//! Server configuration: typed, documented, with embedded defaults for every field.
//!
//! `flowdaq serve` with no file runs on these defaults (data under `./flowdaq-data`, sockets on
//! 127.0.0.1). A file only overrides what it names; an unknown key or a bad value is refused
//! with its line and the reason, never ignored. `docs/configuration.md` lists every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// TOML syntax or a key/value the schema does not allow (the message names the line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message, with line, column and reason.
        message: String,
    },
    /// Values that parse but make no sense together.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the WAL lives, and the Parquet files and catalog unless `storage.url` names an
    /// object store.
    pub data_dir: PathBuf,
    /// Where the Parquet files and catalog live.
    pub storage: StorageConfig,
    /// Run id for messages whose header names none.
    pub default_run_id: String,
    /// Ingest sockets and limits.
    pub ingest: IngestConfig,
    /// Write-ahead log.
    pub wal: WalConfig,
    /// When buffered rows are persisted to Parquet.
    pub buffer: BufferConfig,
    /// Parquet file layout.
    pub parquet: ParquetConfig,
    /// Background merging of small Parquet files.
    pub compaction: CompactionConfig,
    /// How long each table's rows are kept, days; a table not named is kept forever.
    pub retention: BTreeMap<String, f64>,
    /// HTTP query and metrics endpoint.
    pub http: HttpConfig,
    /// Limits every SQL query runs under.
    pub query: QueryConfig,
    /// Known sources and per-source options, by source id.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Features computed from the raw streams as they arrive.
    pub features: FeaturesConfig,
    /// The live feature stream (PUB) that optimizers subscribe to.
    pub publish: PublishConfig,
    /// The control endpoint: condition registration and replay.
    pub control: ControlConfig,
    /// Steady-state detection and `condition_outcomes`.
    pub outcomes: OutcomesConfig,
    /// Arrow Flight SQL endpoint (ADBC, JDBC, DBeaver).
    pub flight_sql: FlightSqlConfig,
    /// PostgreSQL wire protocol endpoint (psql, psycopg, Grafana).
    pub postgres: PostgresConfig,
    /// Tokens every query and control surface asks for.
    pub auth: AuthConfig,
    /// Bluesky event-model documents in (a SUB socket for `bluesky.callbacks.zmq.Publisher`).
    pub bluesky: flowdaq_connectors::bluesky::BlueskyConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./flowdaq-data"),
            storage: StorageConfig::default(),
            default_run_id: "default".into(),
            ingest: IngestConfig::default(),
            wal: WalConfig::default(),
            buffer: BufferConfig::default(),
            parquet: ParquetConfig::default(),
            compaction: CompactionConfig::default(),
            retention: BTreeMap::new(),
            http: HttpConfig::default(),
            query: QueryConfig::default(),
            sources: BTreeMap::new(),
            features: FeaturesConfig::default(),
            publish: PublishConfig::default(),
            control: ControlConfig::default(),
            outcomes: OutcomesConfig::default(),
            flight_sql: FlightSqlConfig::default(),
            postgres: PostgresConfig::default(),
            auth: AuthConfig::default(),
            bluesky: Default::default(),
        }
    }
}

/// Arrow Flight SQL endpoint; see `docs/sql.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightSqlConfig {
    /// Listen address (`host:port`, gRPC without TLS); empty disables Flight SQL.
    pub listen: String,
    /// Connections open at once; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for FlightSqlConfig {
    fn default() -> Self {
        FlightSqlConfig {
            listen: "127.0.0.1:8082".into(),
            max_connections: 64,
        }
    }
}

/// PostgreSQL wire protocol endpoint; see `docs/sql.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Listen address (`host:port`, without TLS); empty disables it.
    pub listen: String,
    /// Connections open at once; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            listen: "127.0.0.1:5433".into(),
            max_connections: 64,
        }
    }
}

/// Bearer tokens; see `docs/configuration.md`. With none configured (here, in `tokens_file`
/// or in `FLOWDAQ_TOKENS`), every surface is open, and the server refuses to listen beyond
/// loopback unless `allow_unauthenticated` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted tokens (at least 16 bytes each, no whitespace).
    pub tokens: Vec<String>,
    /// A file with one token per line (`#` starts a comment line), read at start-up.
    pub tokens_file: Option<PathBuf>,
    /// Start even when HTTP, Flight SQL or control listen beyond loopback without tokens.
    pub allow_unauthenticated: bool,
}

/// The feature stream; see `docs/feature-streams.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// PUB endpoint (`tcp://host:port`); empty disables publishing.
    pub listen: String,
    /// Bytes queued for one subscriber at most; a message that does not fit is dropped for that
    /// subscriber and counted. The stream's memory is bounded by this times `max_subscribers`.
    pub max_queued_bytes_per_subscriber: usize,
    /// Subscribers connected at once at most; further connections are closed.
    pub max_subscribers: usize,
    /// Publish JSON messages (`json/...` topics).
    pub json: bool,
    /// Publish Arrow IPC messages (`arrow/...` topics).
    pub arrow: bool,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            listen: "tcp://127.0.0.1:5560".into(),
            max_queued_bytes_per_subscriber: 16 * 1024 * 1024,
            max_subscribers: 64,
            json: true,
            arrow: true,
        }
    }
}

/// The control endpoint (ROUTER): `register_condition` and `replay` requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// ROUTER endpoint; empty disables it (HTTP `POST /conditions` still works).
    pub listen: String,
    /// Rows one replay answer carries at most; the client asks again for the rest.
    pub max_replay_rows: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: "tcp://127.0.0.1:5561".into(),
            max_replay_rows: 50_000,
        }
    }
}

/// When a condition's features have settled, and the thresholds per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutcomesConfig {
    /// Compute outcomes at all.
    pub enabled: bool,
    /// Wait this many residence times after a condition starts (when flow features give one).
    pub wait_residence_times: f64,
    /// Wait at least this long after a condition starts, s (data clock).
    pub min_wait_s: f64,
    /// Length of the window that must be steady, s.
    pub window_s: f64,
    /// Values the window must hold at least.
    pub min_samples: usize,
    /// A condition not settled this long after its start gets an unsettled outcome, s.
    pub timeout_s: f64,
    /// Features followed, as `table.column`, with their thresholds.
    pub features: BTreeMap<String, OutcomeFeatureConfig>,
}

/// Steadiness thresholds of one feature, in the feature's own unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeFeatureConfig {
    /// Largest standard deviation over the window.
    pub max_std: f64,
    /// Largest drift over the window: |least-squares slope| x window_s.
    pub max_drift: f64,
}

impl Default for OutcomesConfig {
    fn default() -> Self {
        let feature = |max_std, max_drift| OutcomeFeatureConfig { max_std, max_drift };
        OutcomesConfig {
            enabled: true,
            wait_residence_times: 3.0,
            min_wait_s: 5.0,
            window_s: 10.0,
            min_samples: 10,
            timeout_s: 600.0,
            features: BTreeMap::from([
                (
                    "spectral_features.peak_energy_ev".into(),
                    feature(0.005, 0.003),
                ),
                ("spectral_features.fwhm_ev".into(), feature(0.005, 0.003)),
                ("spectral_features.plqy".into(), feature(0.03, 0.02)),
                (
                    "lifetime_features.tau_intensity_weighted_ns".into(),
                    feature(0.5, 0.3),
                ),
            ]),
        }
    }
}

/// Ingest sockets and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// PULL endpoint for lossless PUSH senders; empty string disables it.
    pub pull: String,
    /// SUB endpoint that PUB senders connect to; empty string disables it.
    pub sub: String,
    /// ROUTER endpoint for acknowledged DEALER senders; empty string disables it.
    pub router: String,
    /// Bound on messages waiting for the pipeline.
    pub queue_capacity_messages: usize,
    /// Bound on bytes of messages waiting for the pipeline.
    pub max_queued_bytes: usize,
    /// Largest accepted message, bytes.
    pub max_message_bytes: u64,
    /// Most messages committed to the WAL together (group commit).
    pub max_group_messages: usize,
    /// A group takes no more messages once their frames hold this many bytes.
    pub max_group_bytes: usize,
    /// Threads that decode messages and extract features (each owns the state of the
    /// sources routed to it); 0: one per core.
    pub accept_threads: usize,
    /// Refuse spectra holding NaN or infinite intensities.
    pub reject_non_finite_intensities: bool,
    /// Accept sources not listed under `[sources]`.
    pub allow_unknown_sources: bool,
}

impl IngestConfig {
    /// Accept workers to start: `accept_threads`, or one per core.
    pub fn accept_workers(&self) -> usize {
        match self.accept_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            pull: "tcp://127.0.0.1:5555".into(),
            sub: "tcp://127.0.0.1:5556".into(),
            router: "tcp://127.0.0.1:5557".into(),
            queue_capacity_messages: 4096,
            max_queued_bytes: 64 * 1024 * 1024,
            max_message_bytes: 64 * 1024 * 1024,
            max_group_messages: 512,
            max_group_bytes: 16 * 1024 * 1024,
            accept_threads: 0,
            reject_non_finite_intensities: true,
            allow_unknown_sources: true,
        }
    }
}

/// When the WAL calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every group commit, before anything is acknowledged (default).
    Always,
    /// Never; the OS decides. Acknowledged data can be lost by a power cut (not by a crash).
    Never,
}

/// Write-ahead log options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// fsync policy.
    pub fsync: FsyncPolicy,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            fsync: FsyncPolicy::Always,
        }
    }
}

/// When buffered rows are persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Persist once this many bytes of Arrow data are buffered.
    pub flush_bytes: usize,
    /// Persist at least this often while anything is buffered, ms.
    pub flush_interval_ms: u64,
    /// Bound on Arrow bytes buffered (open and being persisted together): at it, intake
    /// stops until the persister catches up, and senders block.
    pub max_buffered_bytes: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            flush_bytes: 64 * 1024 * 1024,
            flush_interval_ms: 10_000,
            max_buffered_bytes: 256 * 1024 * 1024,
        }
    }
}

impl BufferConfig {
    /// The flush interval as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(1))
    }
}

/// Parquet layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetConfig {
    /// zstd compression level (1-22).
    pub zstd_level: i32,
    /// Target uncompressed size of a row group, bytes.
    pub row_group_target_bytes: usize,
    /// Encoding of float columns (never dictionary): `byte_stream_split` or `plain`.
    pub float_encoding: FloatEncoding,
}

/// How float columns are encoded in Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloatEncoding {
    /// The bytes of each float position together: zstd compresses the exponent bytes well.
    ByteStreamSplit,
    /// Floats as they are.
    Plain,
}

impl ParquetConfig {
    /// The Parquet encoding of float columns.
    pub fn float_encoding(&self) -> parquet::basic::Encoding {
        match self.float_encoding {
            FloatEncoding::ByteStreamSplit => parquet::basic::Encoding::BYTE_STREAM_SPLIT,
            FloatEncoding::Plain => parquet::basic::Encoding::PLAIN,
        }
    }
}

impl Default for ParquetConfig {
    fn default() -> Self {
        ParquetConfig {
            zstd_level: 3,
            row_group_target_bytes: 64 * 1024 * 1024,
            float_encoding: FloatEncoding::ByteStreamSplit,
        }
    }
}

/// Where the Parquet files and the catalog live (the WAL stays under `data_dir`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Empty: under `data_dir`. `s3://bucket/prefix`: in an S3-compatible object store, with
    /// credentials from the usual `AWS_*` environment variables.
    pub url: String,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); empty: AWS itself, or
    /// `AWS_ENDPOINT_URL` from the environment.
    pub endpoint: String,
    /// Region; empty: `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
    /// Time one request to the store may take, seconds.
    pub request_timeout_s: f64,
    /// Time a failing request is retried before the persist attempt fails (the persister
    /// then retries the whole snapshot, the WAL holding its rows meanwhile), seconds.
    pub retry_timeout_s: f64,
    /// Keep a Delta Lake transaction log beside each table's files (`tables/<table>/_delta_log`),
    /// committed per persist, compaction and retention, so Delta readers (Spark, Trino,
    /// DuckDB, Python `deltalake`) read the tables.
    pub delta_lake: bool,
    /// This server's name among several writing the same tables (letters, digits, `-`, `_`,
    /// starting with a letter): its catalog is `catalog.<writer>.json` and its files
    /// `<writer>-<id>.parquet`, so servers with different sources share one prefix and one
    /// Delta table. Empty: the only writer.
    pub writer: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: String::new(),
            endpoint: String::new(),
            region: String::new(),
            allow_http: false,
            request_timeout_s: 30.0,
            retry_timeout_s: 30.0,
            delta_lake: false,
            writer: String::new(),
        }
    }
}

impl StorageConfig {
    /// The S3 settings, if `url` names an object store.
    pub fn s3(&self) -> Option<crate::table_store::S3Settings> {
        if self.url.is_empty() {
            return None;
        }
        Some(crate::table_store::S3Settings {
            url: self.url.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
            request_timeout: std::time::Duration::from_secs_f64(self.request_timeout_s),
            retry_timeout: std::time::Duration::from_secs_f64(self.retry_timeout_s),
        })
    }
}

/// Background merging of small Parquet files into files near `target_file_bytes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Seconds between rounds of compaction and retention; 0 turns both off.
    pub interval_s: f64,
    /// Small files of one table, date and run that make a merge worth it.
    pub min_files: usize,
    /// Size a merged file aims at, bytes (Parquet, compressed); files from half of it up are
    /// left alone.
    pub target_file_bytes: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval_s: 60.0,
            min_files: 4,
            target_file_bytes: 128 * 1024 * 1024,
        }
    }
}

/// HTTP endpoint (`POST /sql`, `GET /metrics`, `GET /health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; empty string disables HTTP.
    pub listen: String,
    /// Time a client has to send a request's headers, and that an idle connection is kept
    /// open between requests, seconds.
    pub header_timeout_s: f64,
    /// Time a client has to send a request's body, seconds.
    pub body_timeout_s: f64,
    /// Connections open at once; further ones are closed at once, counted.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            header_timeout_s: 10.0,
            body_timeout_s: 30.0,
            max_connections: 256,
        }
    }
}

/// Limits every SQL query runs under, whichever door it came in by: no query may crash the
/// server, hold it for ever or take its memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Time a query may take, planning to last row, seconds.
    pub timeout_s: f64,
    /// Memory DataFusion's operators (sorts, aggregates, joins) may reserve together, bytes.
    pub memory_limit_bytes: usize,
    /// Arrow size of a query's result, bytes; a larger result is an error.
    pub max_result_bytes: usize,
    /// Size of the SQL text, bytes.
    pub max_sql_bytes: usize,
    /// Operators, parentheses and boolean keywords in one statement: bounds how deep its
    /// expressions can nest (and how long DataFusion plans them: the time grows with the
    /// square of a chain's length).
    pub max_operators: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout_s: 60.0,
            memory_limit_bytes: 512 << 20,
            max_result_bytes: 128 << 20,
            max_sql_bytes: 1 << 20,
            max_operators: 1024,
        }
    }
}

impl QueryConfig {
    /// The time limit as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }
}

/// Per-source options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Store the raw rows (photons, traces, spectra) of this source; off keeps only errors
    /// and derived features, for streams too large to keep.
    pub store_raw: bool,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig { store_raw: true }
    }
}

/// Feature extraction in the pipeline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// PL and absorbance features (`spectral_features`).
    pub spectral: SpectralFeaturesConfig,
    /// Phase-sensor features (`flow_features`, `flow_segments`) and reaction times.
    pub flow: FlowFeaturesConfig,
    /// TCSPC histograms and lifetimes (`tcspc_histograms`, `lifetime_features`).
    pub tcspc: TcspcFeaturesConfig,
}

/// TCSPC features, per photon source; see `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcspcFeaturesConfig {
    /// Sources analysed, by source id; photons of other sources are stored only.
    pub sources: BTreeMap<String, TcspcSourceConfig>,
}

/// How one TCSPC source is histogrammed and fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcspcSourceConfig {
    /// Laser (sync) repetition rate, Hz.
    pub sync_rate_hz: f64,
    /// Native micro-time resolution of the instrument, ps.
    pub micro_bin_ps: f64,
    /// Native micro-time bins; default: one sync period.
    #[serde(default)]
    pub native_bins: Option<usize>,
    /// Native bins summed per histogram bin.
    #[serde(default = "one")]
    pub bin_width_native: usize,
    /// Detector channels histogrammed (0..channels).
    #[serde(default = "one")]
    pub channels: usize,
    /// Window length, s (aligned to the instrument clock); ignored if `window_photons` is set.
    #[serde(default = "default_window_s")]
    pub window_s: f64,
    /// Close a window after this many photons instead.
    #[serde(default)]
    pub window_photons: Option<u64>,
    /// Exponential components fitted, 1-3; 0 disables fitting (histograms and phasors only).
    #[serde(default = "one")]
    pub components: usize,
    /// `poisson_mle` (default; right at low counts) or `neyman` least squares.
    #[serde(default = "default_statistic")]
    pub statistic: StatisticChoice,
    /// FWHM of the Gaussian IRF, ps (used when no measured IRF is given).
    #[serde(default = "default_irf_fwhm_ps")]
    pub irf_fwhm_ps: f64,
    /// A measured IRF (e.g. scatter from a Ludox sample): counts per histogram bin, as many as
    /// the histograms have; replaces the Gaussian in the fit and the phasor calibration.
    #[serde(default)]
    pub irf_counts: Option<Vec<f64>>,
    /// Windows with fewer photons on a channel are histogrammed but not fitted.
    #[serde(default = "default_min_photons")]
    pub min_photons_to_fit: u64,
    /// Micro-time range `[start, end]` the fit covers, ns from the start of the period (whole
    /// histogram bins: the start rounds down, the end up). Default: the bins the data occupies,
    /// found per histogram (empty instrument ranges at either end and the period's partial
    /// last bin left out).
    #[serde(default)]
    pub fit_range_ns: Option<[f64; 2]>,
    /// Fits with a reduced chi-square above this are flagged `CHI_SQUARE_HIGH`.
    #[serde(default = "default_max_reduced_chi_square")]
    pub max_reduced_chi_square: f64,
}

impl TcspcSourceConfig {
    /// An instrument's configuration with every other field at its documented default (the
    /// defaults a configuration file gets when it names only these two): one channel at native
    /// resolution, 1 s windows, one Poisson-MLE component, a 200 ps Gaussian IRF, fits from
    /// 1000 photons.
    pub fn new(sync_rate_hz: f64, micro_bin_ps: f64) -> TcspcSourceConfig {
        TcspcSourceConfig {
            sync_rate_hz,
            micro_bin_ps,
            native_bins: None,
            bin_width_native: one(),
            channels: one(),
            window_s: default_window_s(),
            window_photons: None,
            components: one(),
            statistic: default_statistic(),
            irf_fwhm_ps: default_irf_fwhm_ps(),
            irf_counts: None,
            min_photons_to_fit: default_min_photons(),
            fit_range_ns: None,
            max_reduced_chi_square: default_max_reduced_chi_square(),
        }
    }
}

fn one() -> usize {
    1
}
fn default_window_s() -> f64 {
    1.0
}
fn default_statistic() -> StatisticChoice {
    StatisticChoice::PoissonMle
}
fn default_irf_fwhm_ps() -> f64 {
    200.0
}
fn default_min_photons() -> u64 {
    1000
}
fn default_max_reduced_chi_square() -> f64 {
    flowdaq_analytics::tcspc::fit::DEFAULT_MAX_REDUCED_CHI_SQUARE
}

/// The statistic of lifetime fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatisticChoice {
    /// Poisson maximum likelihood.
    PoissonMle,
    /// Neyman-weighted least squares.
    Neyman,
}

/// Options of the phase-sensor features; see `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowFeaturesConfig {
    /// Analyse the `phase_traces` of the configured pairs as they arrive.
    pub enabled: bool,
    /// Length of an analysed window, s (windows do not overlap).
    pub window_s: f64,
    /// Plausible velocity range, mm/s: bounds the lags searched between the two sensors.
    pub velocity_range_mm_per_s: [f64; 2],
    /// Where the reagents meet, mm along the tube: reaction time counts from here.
    pub mixing_point_mm: f64,
    /// The pair (source id) whose velocity gives the spectra their reaction time; default: the
    /// first pair in name order.
    pub velocity_source: Option<String>,
    /// Sensor pairs, by the source id they send `phase_traces` under.
    pub pairs: BTreeMap<String, SensorPairConfig>,
    /// Fluid properties for the flow-regime numbers (Re, Ca, We, Bo, Pe, Da); off when absent.
    pub fluid: Option<FluidConfig>,
}

impl Default for FlowFeaturesConfig {
    fn default() -> Self {
        FlowFeaturesConfig {
            enabled: true,
            window_s: 2.0,
            velocity_range_mm_per_s: [1.0, 500.0],
            mixing_point_mm: 0.0,
            velocity_source: None,
            pairs: BTreeMap::new(),
            fluid: None,
        }
    }
}

/// One phase-sensor pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorPairConfig {
    /// Distance between the two sensors, mm (sensor A upstream).
    pub spacing_mm: f64,
    /// Position of sensor A along the tube, mm.
    #[serde(default)]
    pub position_mm: Option<f64>,
    /// Whether plugs read `high` or `low` on the sensors.
    #[serde(default = "default_polarity")]
    pub plug_polarity: PolarityChoice,
}

fn default_polarity() -> PolarityChoice {
    PolarityChoice::High
}

/// Which voltage level the plugs give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolarityChoice {
    /// Plugs read higher than the carrier.
    High,
    /// Plugs read lower than the carrier.
    Low,
}

/// Fluid properties (SI units, as in `domain.md` section 5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FluidConfig {
    /// Plug (reacting liquid) density, kg/m³.
    pub plug_density_kg_per_m3: f64,
    /// Plug viscosity, Pa·s.
    pub plug_viscosity_pa_s: f64,
    /// Carrier density, kg/m³.
    pub carrier_density_kg_per_m3: f64,
    /// Carrier viscosity, Pa·s.
    pub carrier_viscosity_pa_s: f64,
    /// `carrier` (oil in PTFE) or `plug` (gas carrier) wets the wall.
    pub wetting_phase: WettingChoice,
    /// Interfacial tension, N/m.
    pub surface_tension_n_per_m: f64,
    /// Diffusivity of the reacting species, m²/s.
    pub diffusivity_m2_per_s: f64,
    /// Tube inner diameter, m.
    pub channel_inner_diameter_m: f64,
    /// Characteristic reaction time for the Damköhler number, s.
    #[serde(default)]
    pub reaction_time_s: Option<f64>,
}

/// Which phase wets the wall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WettingChoice {
    /// The plugs.
    Plug,
    /// The carrier.
    Carrier,
}

/// Options of the `spectral_features` table; see `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpectralFeaturesConfig {
    /// Compute features for `pl` and `absorbance` spectra as they arrive.
    pub enabled: bool,
    /// Minimum peak prominence, counts (absolute).
    pub min_prominence_counts: f64,
    /// Minimum peak prominence as a fraction of the spectrum's range; the larger threshold wins.
    pub min_relative_prominence: f64,
    /// Secondary PL peaks reported besides the main one.
    pub max_secondary_peaks: usize,
    /// Detector saturation level, counts; pixels at or above it flag `SATURATED`.
    pub saturation_level_counts: Option<f64>,
    /// Analyse only this wavelength range, nm (`[low, high]`).
    pub window_nm: Option<[f64; 2]>,
    /// Savitzky-Golay smoothing `[window_px, polyorder]` before feature extraction.
    pub savgol: Option<[usize; 2]>,
    /// Baseline removal before feature extraction: `none`, `linear_edge` or `asls`.
    pub baseline: BaselineChoice,
    /// Minimum prominence of the first excitonic absorption peak, absorbance units.
    pub min_exciton_prominence: f64,
    /// Minimum prominence of the first excitonic peak as a fraction of the most prominent
    /// peak's (0.2): solvent and overtone bands beyond the band edge are not the exciton.
    pub min_exciton_relative_prominence: f64,
    /// Excitation wavelength, nm: absorbance there is reported and used for PLQY.
    pub excitation_nm: Option<f64>,
    /// Optical density above which a spectrum is flagged `INNER_FILTER`.
    pub inner_filter_od: f64,
    /// Relative PLQY against a reference; off when absent.
    pub plqy: Option<PlqyConfig>,
}

impl Default for SpectralFeaturesConfig {
    fn default() -> Self {
        SpectralFeaturesConfig {
            enabled: true,
            min_prominence_counts: 0.0,
            min_relative_prominence: 0.05,
            max_secondary_peaks: 4,
            saturation_level_counts: None,
            window_nm: None,
            savgol: None,
            baseline: BaselineChoice::None,
            min_exciton_prominence: 0.01,
            min_exciton_relative_prominence: 0.2,
            excitation_nm: None,
            inner_filter_od: 0.05,
            plqy: None,
        }
    }
}

/// Baseline removal applied before feature extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineChoice {
    /// None.
    None,
    /// Straight line through the mean of the first and last 10 pixels.
    LinearEdge,
    /// Asymmetric least squares with pybaselines' defaults (lam 1e6, p 0.01).
    Asls,
}

/// The reference of relative PLQY (`docs/configuration.md` gives an example).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlqyConfig {
    /// Quantum yield of the reference dye (0..1).
    pub reference_quantum_yield: f64,
    /// Integrated PL of the reference, counts·nm, same settings as the samples.
    pub reference_integrated_pl_counts_nm: f64,
    /// Absorbance of the reference at the excitation wavelength.
    pub reference_absorbance_at_excitation: f64,
    /// Refractive index of the reference's solvent.
    pub reference_refractive_index: f64,
    /// Refractive index of the sample's solvent (toluene 1.496, hexane 1.375).
    pub sample_refractive_index: f64,
}

impl ServerConfig {
    /// Defaults for a server run inside another command (replay, bench, tests): data under
    /// `data_dir`, only a PULL socket on an ephemeral loopback port, no SUB, ROUTER or HTTP.
    pub fn embedded_pull_only(data_dir: &Path) -> ServerConfig {
        let mut config = ServerConfig {
            data_dir: data_dir.to_path_buf(),
            ..ServerConfig::default()
        };
        config.ingest.pull = "tcp://127.0.0.1:0".into();
        config.ingest.sub = String::new();
        config.ingest.router = String::new();
        config.http.listen = String::new();
        config.publish.listen = String::new();
        config.control.listen = String::new();
        config.flight_sql.listen = String::new();
        config.postgres.listen = String::new();
        config
    }

    /// Parses configuration text; `path` only names the origin in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with line and reason, or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str, path: &str) -> Result<ServerConfig, ConfigError> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: display.clone(),
            source,
        })?;
        ServerConfig::from_toml(&text, &display)
    }

    fn validate(&self) -> Result<(), String> {
        let ingest = &self.ingest;
        if ingest.pull.is_empty() && ingest.sub.is_empty() && ingest.router.is_empty() {
            return Err("ingest: at least one of pull, sub, router must be set".into());
        }
        for (name, endpoint) in [
            ("pull", &ingest.pull),
            ("sub", &ingest.sub),
            ("router", &ingest.router),
        ] {
            if !endpoint.is_empty() && !endpoint.starts_with("tcp://") {
                return Err(format!(
                    "ingest.{name} = {endpoint:?}: only tcp:// endpoints are supported"
                ));
            }
        }
        if ingest.queue_capacity_messages == 0 || ingest.max_group_messages == 0 {
            return Err(
                "ingest: queue_capacity_messages and max_group_messages must be > 0".into(),
            );
        }
        if (ingest.max_queued_bytes as u64) < ingest.max_message_bytes {
            return Err("ingest: max_queued_bytes must be >= max_message_bytes".into());
        }
        let storage = &self.storage;
        if !storage.url.is_empty() {
            crate::table_store::check_s3_url(&storage.url)?;
        }
        let writer = &storage.writer;
        let writer_ok = writer.len() <= 64
            && writer.starts_with(|c: char| c.is_ascii_alphabetic())
            && writer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !writer.is_empty() && !writer_ok {
            return Err(format!(
                "storage.writer = {:?}: 1-64 letters, digits, - and _, starting with a letter",
                storage.writer
            ));
        }
        for (name, seconds) in [
            ("request_timeout_s", storage.request_timeout_s),
            ("retry_timeout_s", storage.retry_timeout_s),
        ] {
            if !(seconds > 0.0 && seconds.is_finite()) {
                return Err(format!("storage.{name} = {seconds}: must be > 0"));
            }
        }
        let compaction = &self.compaction;
        if !(compaction.interval_s >= 0.0 && compaction.interval_s.is_finite())
            || compaction.min_files < 2
            || compaction.target_file_bytes == 0
        {
            return Err(
                "compaction: interval_s must be >= 0, min_files >= 2, target_file_bytes > 0".into(),
            );
        }
        for (table, days) in &self.retention {
            if flowdaq_schemas::Table::from_name(table).is_none() {
                return Err(format!("retention.{table}: no such table"));
            }
            if !(*days > 0.0 && days.is_finite()) {
                return Err(format!(
                    "retention.{table} = {days}: must be a positive number of days"
                ));
            }
        }
        self.bluesky.validate()?;
        for endpoint in std::iter::once(&self.bluesky.listen)
            .filter(|e| !e.is_empty())
            .chain(&self.bluesky.connect)
        {
            if !endpoint.starts_with("tcp://") {
                return Err(format!(
                    "bluesky: {endpoint:?}: only tcp:// endpoints are supported"
                ));
            }
        }
        if self.bluesky.enabled() && !self.ingest.allow_unknown_sources {
            let listed = |source: &str| self.sources.contains_key(source);
            if let Some(missing) = std::iter::once(self.bluesky.source.as_str())
                .chain(self.bluesky.spectra.iter().map(|m| m.source()))
                .find(|s| !listed(s))
            {
                return Err(format!(
                    "bluesky: source {missing:?} is not under [sources] and allow_unknown_sources = false"
                ));
            }
        }
        if ingest.max_group_bytes == 0 {
            return Err("ingest: max_group_bytes must be > 0".into());
        }
        if self.buffer.max_buffered_bytes < self.buffer.flush_bytes {
            return Err("buffer: max_buffered_bytes must be >= flush_bytes".into());
        }
        for (name, seconds) in [
            ("http.header_timeout_s", self.http.header_timeout_s),
            ("http.body_timeout_s", self.http.body_timeout_s),
        ] {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
                return Err(format!("{name} = {seconds}: must be > 0 and at most 86400"));
            }
        }
        if self.http.max_connections == 0 {
            return Err("http.max_connections must be > 0".into());
        }
        if self.postgres.max_connections == 0 {
            return Err("postgres.max_connections must be > 0".into());
        }
        let query = &self.query;
        if !(query.timeout_s.is_finite() && query.timeout_s > 0.0 && query.timeout_s <= 86_400.0) {
            return Err(format!(
                "query.timeout_s = {}: must be > 0 and at most 86400",
                query.timeout_s
            ));
        }
        if query.memory_limit_bytes == 0
            || query.max_result_bytes == 0
            || query.max_sql_bytes == 0
            || query.max_operators == 0
        {
            return Err("query: memory_limit_bytes, max_result_bytes, max_sql_bytes and max_operators must be > 0".into());
        }
        if query.max_operators > crate::query::limits::MAX_OPERATORS_CEILING {
            return Err(format!(
                "query.max_operators = {}: at most {} (deeper expressions exceed the query threads' stack)",
                query.max_operators,
                crate::query::limits::MAX_OPERATORS_CEILING
            ));
        }
        if !(1..=22).contains(&self.parquet.zstd_level) {
            return Err(format!(
                "parquet.zstd_level = {}: must be 1-22",
                self.parquet.zstd_level
            ));
        }
        for (name, endpoint) in [
            ("publish.listen", &self.publish.listen),
            ("control.listen", &self.control.listen),
        ] {
            if !endpoint.is_empty() && !endpoint.starts_with("tcp://") {
                return Err(format!(
                    "{name} = {endpoint:?}: only tcp:// endpoints are supported"
                ));
            }
        }
        if self.publish.max_queued_bytes_per_subscriber == 0 || self.publish.max_subscribers == 0 {
            return Err(
                "publish: max_queued_bytes_per_subscriber and max_subscribers must be > 0".into(),
            );
        }
        if self.control.max_replay_rows == 0 {
            return Err("control.max_replay_rows must be > 0".into());
        }
        crate::outcomes::validate(&self.outcomes).map_err(|e| format!("outcomes: {e}"))?;
        // The run is a partition in every file's path: the same rule as a run id on the wire.
        flowdaq_schemas::wire::check_identifier("default_run_id", &self.default_run_id)
            .map_err(|e| e.to_string())?;
        crate::features::spectral::SpectralFeatures::new(&self.features.spectral, None)
            .map_err(|e| format!("features.spectral: {e}"))?;
        crate::features::flow::FlowExtractor::new(&self.features.flow, Default::default())
            .map_err(|e| format!("features.flow: {e}"))?;
        crate::features::tcspc::TcspcExtractor::new(&self.features.tcspc)
            .map_err(|e| format!("features.tcspc: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        assert_eq!(
            ServerConfig::from_toml("", "x.toml").expect("valid"),
            ServerConfig::default()
        );
    }

    #[test]
    fn partial_file_overrides_only_what_it_names() {
        let text = "data_dir = \"/tmp/d\"\n[wal]\nfsync = \"never\"\n[sources.tcspc-1]\nstore_raw = false\n";
        let config = ServerConfig::from_toml(text, "x.toml").expect("valid");
        assert_eq!(config.wal.fsync, FsyncPolicy::Never);
        assert_eq!(config.ingest, IngestConfig::default());
        assert!(!config.sources["tcspc-1"].store_raw);
    }

    #[test]
    fn a_tcspc_source_naming_only_its_clock_gets_the_defaults_of_new() {
        let text = "[features.tcspc.sources.hh]\nsync_rate_hz = 40e6\nmicro_bin_ps = 16.0\n";
        let config = ServerConfig::from_toml(text, "x.toml").expect("valid");
        assert_eq!(
            config.features.tcspc.sources["hh"],
            TcspcSourceConfig::new(40e6, 16.0)
        );
    }

    #[test]
    fn bad_files_are_refused_with_line_and_reason() {
        let err =
            ServerConfig::from_toml("data_dir = \"d\"\n[wal]\nfsink = \"always\"\n", "bad.toml")
                .expect_err("typo");
        let text = err.to_string();
        assert!(
            text.contains("bad.toml") && text.contains("line 3") && text.contains("fsink"),
            "{text}"
        );
        let err =
            ServerConfig::from_toml("[parquet]\nzstd_level = 40\n", "bad.toml").expect_err("range");
        assert!(err.to_string().contains("zstd_level = 40"));
        let err = ServerConfig::from_toml("[ingest]\npull = \"udp://x\"\n", "bad.toml")
            .expect_err("scheme");
        assert!(err.to_string().contains("only tcp://"));
        let err = ServerConfig::from_toml("[parquet]\nfloat_encoding = \"gorilla\"\n", "bad.toml")
            .expect_err("encoding");
        assert!(err.to_string().contains("byte_stream_split"), "{err}");
    }

    #[test]
    fn compaction_and_retention_are_checked() {
        let config = ServerConfig::from_toml(
            "[compaction]\ninterval_s = 0\n[retention]\nspectra = 30\nphotons = 0.5\n",
            "x.toml",
        )
        .expect("valid");
        assert_eq!(config.compaction.interval_s, 0.0);
        assert_eq!(config.retention.get("photons"), Some(&0.5));
        for (text, needle) in [
            (
                "[retention]\nspectrum = 30\n",
                "retention.spectrum: no such table",
            ),
            ("[retention]\nspectra = 0\n", "positive number of days"),
            ("[retention]\nspectra = nan\n", "positive number of days"),
            ("[compaction]\nmin_files = 1\n", "min_files >= 2"),
            ("[compaction]\ninterval_s = -1\n", "interval_s must be >= 0"),
        ] {
            let err = ServerConfig::from_toml(text, "bad.toml").expect_err(text);
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn storage_is_checked() {
        let config = ServerConfig::from_toml(
            "[storage]\nurl = \"s3://lab-data/flowdaq/run-2026\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\n",
            "s.toml",
        )
        .expect("valid");
        let s3 = config.storage.s3().expect("an object store");
        assert_eq!(s3.url, "s3://lab-data/flowdaq/run-2026");
        assert!(s3.allow_http);
        assert_eq!(s3.retry_timeout, Duration::from_secs(30));
        assert!(
            ServerConfig::default().storage.s3().is_none(),
            "the data directory by default"
        );
        let shared = ServerConfig::from_toml(
            "[storage]\ndelta_lake = true\nwriter = \"lab-a_2\"\n",
            "s.toml",
        )
        .expect("a writer name");
        assert!(shared.storage.delta_lake);
        assert_eq!(shared.storage.writer, "lab-a_2");
        for (text, needle) in [
            ("[storage]\nurl = \"gs://b/p\"\n", "only s3:// URLs"),
            ("[storage]\nurl = \"/mnt/nas\"\n", "only s3:// URLs"),
            ("[storage]\nurl = \"s3:///p\"\n", "names no bucket"),
            (
                "[storage]\nretry_timeout_s = 0\n",
                "storage.retry_timeout_s",
            ),
            (
                "[storage]\nrequest_timeout_s = inf\n",
                "storage.request_timeout_s",
            ),
            ("[storage]\nbucket = \"b\"\n", "unknown field"),
            ("[storage]\nwriter = \"7lab\"\n", "storage.writer"),
            ("[storage]\nwriter = \"lab/a\"\n", "storage.writer"),
        ] {
            let err = ServerConfig::from_toml(text, "s.toml").expect_err(text);
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn query_limits_are_checked() {
        let config = ServerConfig::from_toml("", "empty.toml").expect("defaults");
        assert_eq!(config.query.max_operators, 1024);
        assert_eq!(config.query.timeout(), Duration::from_secs(60));
        for (text, needle) in [
            ("[query]\ntimeout_s = 0\n", "query.timeout_s"),
            ("[query]\ntimeout_s = nan\n", "query.timeout_s"),
            ("[query]\nmax_operators = 5000\n", "at most 4096"),
            ("[query]\nmax_result_bytes = 0\n", "must be > 0"),
        ] {
            let err = ServerConfig::from_toml(text, "q.toml").expect_err(text);
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn float_encoding_is_byte_stream_split_unless_set_to_plain() {
        let config = ServerConfig::from_toml("", "empty.toml").expect("defaults");
        assert_eq!(
            config.parquet.float_encoding(),
            parquet::basic::Encoding::BYTE_STREAM_SPLIT
        );
        let config = ServerConfig::from_toml("[parquet]\nfloat_encoding = \"plain\"\n", "p.toml")
            .expect("plain");
        assert_eq!(
            config.parquet.float_encoding(),
            parquet::basic::Encoding::PLAIN
        );
    }
}
