//! SQL over every flowdaq table, read-only, through DataFusion.
//!
//! One `SessionContext` per engine with one [`table::FlowdaqTable`] per table; queries see
//! persisted Parquet and not-yet-persisted rows alike. Results come back as Arrow batches and
//! are rendered by [`output`] as JSON, CSV, Arrow IPC or a text table. Every query runs on the
//! engine's own threads under the [`limits`] of its configuration, so no query can crash the
//! server, hold it for ever or take its memory, and heavy queries do not share the threads that
//! acknowledge ingest.

pub mod limits;
pub mod output;
mod prune;
pub mod readonly;
pub mod table;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use flowdaq_schemas::Table;

use crate::config::QueryConfig;
use crate::paths::DataPaths;
use crate::write_buffer::WriteBuffer;

/// Query failures.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Refused by the read-only guard.
    #[error(transparent)]
    ReadOnly(#[from] readonly::ReadOnlyError),
    /// A limit of the configuration was reached.
    #[error(transparent)]
    Limit(#[from] limits::LimitError),
    /// Planning or execution failed (unknown table or column, type error, ...).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// The query's task ended without an answer (a panic inside the engine).
    #[error("the query failed inside the engine: {0}")]
    Aborted(String),
    /// The query threads could not be started.
    #[error("cannot start the query threads: {0}")]
    Threads(#[from] std::io::Error),
}

/// A query's result: its schema (even when there are no rows) and its batches.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Renders the result in `format`.
    ///
    /// # Errors
    /// Arrow's error if a value cannot be rendered.
    pub fn render(
        &self,
        format: output::Format,
    ) -> Result<Vec<u8>, datafusion::arrow::error::ArrowError> {
        output::render(&self.batches, Some(self.schema.clone()), format)
    }
}

/// Runs read-only SQL over the tables of one data directory.
#[derive(Clone)]
pub struct QueryEngine {
    context: SessionContext,
    config: QueryConfig,
    threads: Arc<QueryThreads>,
}

/// The runtime queries run on: threads with stacks of [`limits::QUERY_STACK_BYTES`].
struct QueryThreads(Option<tokio::runtime::Runtime>);

impl Drop for QueryThreads {
    fn drop(&mut self) {
        // The last engine may be dropped inside another runtime, where waiting is not allowed.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Aborts a query's task when its caller stops waiting (a closed HTTP connection).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl QueryEngine {
    /// An engine over `buffer` (which also holds the catalog) and files under `paths`, with
    /// the limits of `config`.
    ///
    /// # Errors
    /// DataFusion's error if a table cannot be registered; an I/O error if the query threads
    /// cannot be started.
    pub fn new(
        buffer: Arc<WriteBuffer>,
        paths: &DataPaths,
        config: &QueryConfig,
    ) -> Result<QueryEngine, QueryError> {
        let session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(2);
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_bytes, 1.0)
            .build_arc()?;
        let context = SessionContext::new_with_config_rt(session, runtime_env);
        for table in Table::ALL {
            let provider = table::FlowdaqTable::new(table, buffer.clone(), paths.clone());
            context.register_table(table.name(), Arc::new(provider))?;
        }
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .max_blocking_threads(workers)
            .thread_name("flowdaq-query")
            .thread_stack_size(limits::QUERY_STACK_BYTES)
            .enable_all()
            .build()?;
        Ok(QueryEngine {
            context,
            config: config.clone(),
            threads: Arc::new(QueryThreads(Some(runtime))),
        })
    }

    /// Runs one read-only statement on the query threads, under the configured limits, and
    /// collects its result. Dropping the future stops the query.
    ///
    /// # Errors
    /// [`QueryError`]: refused statement, a limit reached, unknown table or column, execution
    /// failure.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        limits::check_text(sql, &self.config)?;
        let Some(runtime) = self.threads.0.as_ref() else {
            return Err(QueryError::Aborted("the query threads are stopped".into()));
        };
        let context = self.context.clone();
        let sql = sql.to_owned();
        let timeout = self.config.timeout();
        let seconds = self.config.timeout_s;
        let max_result_bytes = self.config.max_result_bytes;
        let task = runtime.spawn(async move {
            let run = async {
                readonly::check(&sql)?;
                let options = SQLOptions::new()
                    .with_allow_ddl(false)
                    .with_allow_dml(false)
                    .with_allow_statements(false);
                let frame = context.sql_with_options(&sql, options).await?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                let stream = frame.execute_stream().await?;
                let batches = limits::collect_bounded(stream, max_result_bytes).await?;
                Ok(QueryResult { schema, batches })
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(result) => result,
                Err(_) => Err(limits::LimitError::TimedOut { seconds }.into()),
            }
        });
        let mut task = AbortOnDrop(task);
        match (&mut task.0).await {
            Ok(result) => result,
            Err(err) => Err(QueryError::Aborted(err.to_string())),
        }
    }

    /// The underlying DataFusion context (for registering UDFs).
    pub fn context(&self) -> &SessionContext {
        &self.context
    }
}

#[cfg(test)]
mod tests;
