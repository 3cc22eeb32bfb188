//! `flowdaq sql`: one query against a data directory (Parquet plus unpersisted WAL rows), with
//! its Parquet files and catalog in an object store if a configuration file says so, or
//! against a running server's `POST /sql`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use flowdaq_daq::query::output::Format;
use flowdaq_daq::query::QueryEngine;

/// Arguments of `flowdaq sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query (read-only: SELECT, WITH, VALUES, EXPLAIN).
    pub query: String,
    /// Data directory to query directly (default ./flowdaq-data).
    #[arg(long, conflicts_with = "server")]
    pub data_dir: Option<PathBuf>,
    /// A server's configuration file: its `data_dir` (unless --data-dir is given) and its
    /// `[storage]` (an S3 bucket) say where the data is.
    #[arg(long, conflicts_with = "server")]
    pub config: Option<PathBuf>,
    /// Base URL of a running server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub server: Option<String>,
    /// Output format: table, json, csv or arrow.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Token for a server that asks for one (sent as `Authorization: Bearer`).
    #[arg(long, env = "FLOWDAQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs the query and writes the result to stdout.
pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let Some(format) = Format::parse(&args.format) else {
        bail!(
            "unknown format {:?}: use table, json, csv or arrow",
            args.format
        );
    };
    let bytes = match &args.server {
        Some(server) => query_server(server, &args.query, format, args.token.as_deref()).await?,
        None => {
            let result = local_engine(args.data_dir, args.config.as_deref())?
                .execute(&args.query)
                .await?;
            result.render(format)?
        }
    };
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}

/// The rows of `query` as Arrow batches, from a running server (`server`, its base URL) or
/// else from a data directory (default ./flowdaq-data).
///
/// # Errors
/// The server's reason, or the engine's, for a refused query; a missing data directory.
pub async fn query_batches(
    server: Option<&str>,
    data_dir: Option<PathBuf>,
    token: Option<&str>,
    query: &str,
) -> anyhow::Result<Vec<arrow::record_batch::RecordBatch>> {
    match server {
        Some(server) => {
            let body = query_server(server, query, Format::Arrow, token).await?;
            let reader =
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
            Ok(reader.collect::<Result<Vec<_>, _>>()?)
        }
        None => Ok(local_engine(data_dir, None)?.execute(query).await?.batches),
    }
}

/// A query engine over a data directory (default ./flowdaq-data, or the configuration's): its
/// Parquet files (where the configuration's `[storage]` keeps them) and the rows its WAL holds
/// that are not persisted yet.
fn local_engine(
    data_dir: Option<PathBuf>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<QueryEngine> {
    let config = match config {
        Some(path) => flowdaq_daq::config::ServerConfig::from_file(path)?,
        None => flowdaq_daq::config::ServerConfig::default(),
    };
    let dir = data_dir.unwrap_or_else(|| config.data_dir.clone());
    if !dir.exists() {
        bail!("data directory {} does not exist", dir.display());
    }
    let storage = flowdaq_daq::storage::LocalStorage::shared();
    let tables = flowdaq_daq::table_store::open(
        &config.storage,
        flowdaq_daq::paths::DataPaths::new(&dir),
        storage.clone(),
        Default::default(),
    )
    .with_context(|| format!("storage {}", config.storage.url))?;
    let recovered = flowdaq_daq::server::recover_with_tables(&dir, false, storage, tables)?;
    Ok(QueryEngine::new(
        recovered.buffer,
        &flowdaq_daq::config::QueryConfig::default(),
    )?)
}

async fn query_server(
    server: &str,
    query: &str,
    format: Format,
    token: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    let wire_format = if format == Format::Table {
        "arrow"
    } else {
        args_format(format)
    };
    let url = format!("{}/sql?format={wire_format}", server.trim_end_matches('/'));
    let query = query.to_string();
    let authorization = token.map(|t| format!("Bearer {t}"));
    let response = tokio::task::spawn_blocking(move || {
        let mut request = ureq::post(&url);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        request
            .config()
            .http_status_as_error(false)
            .build()
            .send(query)
    })
    .await?
    .with_context(|| format!("cannot reach {server}"))?;
    let status = response.status();
    let body = response.into_body().read_to_vec()?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{message}");
    }
    if format != Format::Table {
        return Ok(body);
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(flowdaq_daq::query::output::render(
        &batches,
        None,
        Format::Table,
    )?)
}

fn args_format(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Csv => "csv",
        Format::Arrow | Format::Table => "arrow",
    }
}
