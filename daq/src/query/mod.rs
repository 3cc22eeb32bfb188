//! SQL over every flowdaq table, read-only, through DataFusion.
//!
//! One `SessionContext` per engine with one [`table::FlowdaqTable`] per table; queries see
//! persisted Parquet and not-yet-persisted rows alike. Results come back as Arrow batches and
//! are rendered by [`output`] as JSON, CSV, Arrow IPC or a text table. Every query runs on the
//! engine's own threads under the [`limits`] of its configuration, so no query can crash the
//! server, hold it for ever or take its memory, and heavy queries do not share the threads that
//! acknowledge ingest.

pub mod counters;
pub mod decay_model;
mod dense_count;
mod guarded;
mod integral_rounding;
pub mod limits;
mod ordered_merge;
pub mod output;
pub mod placeholders;
mod prune;
pub mod readonly;
mod stream;
pub mod table;

pub use stream::QueryStream;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use flowdaq_schemas::Table;

use crate::config::QueryConfig;
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
    counters: Arc<counters::QueryCounters>,
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
pub(crate) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl QueryEngine {
    /// An engine over `buffer` (which also holds the catalog and the table store), with the
    /// limits of `config`.
    ///
    /// # Errors
    /// DataFusion's error if a table cannot be registered; an I/O error if the query threads
    /// cannot be started.
    pub fn new(buffer: Arc<WriteBuffer>, config: &QueryConfig) -> Result<QueryEngine, QueryError> {
        // Without work stealing each partition reads the files of its group in order, so an
        // order-sensitive aggregate (approx_percentile_cont) sees the same rows in the same
        // batches on every run; with it, which partition reads a file is a race.
        let session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(2)
            .set_bool(
                "datafusion.execution.enable_file_stream_work_stealing",
                false,
            );
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_bytes, 1.0)
            .build_arc()?;
        let tables = buffer.tables();
        if let Some(store) = tables.query_store() {
            runtime_env.register_object_store(tables.scan_url().as_ref(), store);
        }
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime_env)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(dense_count::DenseCount))
            .build();
        let context = SessionContext::new_with_state(state);
        for table in Table::ALL {
            let provider = table::FlowdaqTable::new(table, buffer.clone());
            context.register_table(table.name(), Arc::new(provider))?;
        }
        guarded::register(&context)?;
        ordered_merge::register(&context)?;
        integral_rounding::register(&context);
        decay_model::register(&context);
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
            counters: Arc::default(),
        })
    }

    /// Runs one read-only statement on the query threads, under the configured limits, and
    /// collects its result. Dropping the future stops the query.
    ///
    /// # Errors
    /// [`QueryError`]: refused statement, a limit reached, unknown table or column, execution
    /// failure.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        let max_result_bytes = self.config.max_result_bytes;
        self.run(sql, Vec::new(), move |frame| async move {
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let stream = frame.execute_stream().await?;
            let batches = limits::collect_bounded(stream, max_result_bytes).await?;
            Ok(QueryResult { schema, batches })
        })
        .await
    }

    /// The schema a read-only statement's result would have, planned (not run) under the
    /// same checks and limits as [`QueryEngine::execute`].
    ///
    /// # Errors
    /// As [`QueryEngine::execute`].
    pub async fn schema(&self, sql: &str) -> Result<SchemaRef, QueryError> {
        self.schema_with_params(sql, Vec::new()).await
    }

    /// As [`QueryEngine::schema`], with `params` bound to the placeholders `$1`, `$2`, ...
    ///
    /// # Errors
    /// As [`QueryEngine::execute`], and when the values do not fit the placeholders.
    pub async fn schema_with_params(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<SchemaRef, QueryError> {
        self.run(sql, params, |frame| async move {
            Ok(Arc::new(frame.schema().as_arrow().clone()) as SchemaRef)
        })
        .await
    }

    /// The schemas of a statement's result and of its placeholders (`$1`, `$2`, ... in order,
    /// typed where the statement says what they compare with, else `Null`), planned under the
    /// same checks and limits as [`QueryEngine::execute`].
    ///
    /// # Errors
    /// As [`QueryEngine::execute`].
    pub async fn prepare(&self, sql: &str) -> Result<(SchemaRef, SchemaRef), QueryError> {
        self.run(sql, Vec::new(), |frame| async move {
            let result: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let mut placeholders: Vec<(usize, String, DataType)> = frame
                .logical_plan()
                .get_parameter_types()?
                .into_iter()
                .filter_map(|(name, data_type)| {
                    let number = name.strip_prefix('$')?.parse::<usize>().ok()?;
                    Some((number, name, data_type.unwrap_or(DataType::Null)))
                })
                .collect();
            placeholders.sort();
            let fields: Vec<Field> = placeholders
                .into_iter()
                .map(|(_, name, data_type)| Field::new(name, data_type, true))
                .collect();
            Ok((result, Arc::new(Schema::new(fields)) as SchemaRef))
        })
        .await
    }

    /// Starts one read-only statement and returns its result as a stream of batches, sent on
    /// as the client reads them (at most [`stream::QUEUED_BATCHES`] wait), so a result of any
    /// size takes bounded memory. The time limit covers the whole stream, a slow reader's
    /// waits included; dropping the stream stops the query.
    ///
    /// # Errors
    /// Planning errors here; execution errors as items of the stream.
    pub async fn stream(&self, sql: &str) -> Result<QueryStream, QueryError> {
        self.stream_with_params(sql, Vec::new()).await
    }

    /// As [`QueryEngine::stream`], with `params` bound to the placeholders `$1`, `$2`, ...
    ///
    /// # Errors
    /// As [`QueryEngine::stream`], and when the values do not fit the placeholders.
    pub async fn stream_with_params(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryStream, QueryError> {
        self.counters.started();
        let started = self.start_stream(sql, params).await;
        if let Err(err) = &started {
            self.counters.failed(err);
        }
        started
    }

    async fn start_stream(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryStream, QueryError> {
        limits::check_text(sql, &self.config)?;
        let runtime = self.runtime()?;
        let counters = self.counters.clone();
        let context = self.context.clone();
        let sql = sql.to_owned();
        let timeout = self.config.timeout();
        let seconds = self.config.timeout_s;
        let (planned_tx, planned_rx) = tokio::sync::oneshot::channel();
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(stream::QUEUED_BATCHES);
        let task = runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let timed_out = || QueryError::from(limits::LimitError::TimedOut { seconds });
            let planned = tokio::time::timeout_at(deadline, async {
                let frame = plan(&context, &sql, params).await?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                Ok::<_, QueryError>((schema, frame.execute_stream().await?))
            })
            .await
            .unwrap_or_else(|_| Err(timed_out()));
            let batches = match planned {
                Ok((schema, batches)) => {
                    if planned_tx.send(Ok(schema)).is_err() {
                        return;
                    }
                    batches
                }
                Err(err) => {
                    let _ = planned_tx.send(Err(err));
                    return;
                }
            };
            let outcome = tokio::time::timeout_at(deadline, stream::forward(batches, &batch_tx))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            if let Err(err) = outcome {
                counters.failed(&err);
                let _ = batch_tx.send(Err(err)).await;
            }
        });
        let task = AbortOnDrop(task);
        match planned_rx.await {
            Ok(Ok(schema)) => Ok(QueryStream::new(schema, batch_rx, task)),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(QueryError::Aborted(
                "the query failed inside the engine before its first batch".into(),
            )),
        }
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, QueryError> {
        self.threads
            .0
            .as_ref()
            .ok_or_else(|| QueryError::Aborted("the query threads are stopped".into()))
    }

    /// Checks `sql`, plans it on the query threads and hands the plan to `finish` there, all
    /// under the time limit; dropping the future stops the work.
    async fn run<T, F, Fut>(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
        finish: F,
    ) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(DataFrame) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, QueryError>> + Send,
    {
        self.counters.started();
        let outcome = self.run_counted(sql, params, finish).await;
        if let Err(err) = &outcome {
            self.counters.failed(err);
        }
        outcome
    }

    async fn run_counted<T, F, Fut>(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
        finish: F,
    ) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(DataFrame) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, QueryError>> + Send,
    {
        limits::check_text(sql, &self.config)?;
        let runtime = self.runtime()?;
        let context = self.context.clone();
        let sql = sql.to_owned();
        let timeout = self.config.timeout();
        let seconds = self.config.timeout_s;
        let task = runtime.spawn(async move {
            let run = async { finish(plan(&context, &sql, params).await?).await };
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

    /// Counts a statement received by a door that runs it itself (PostgreSQL).
    pub(crate) fn record_start(&self) {
        self.counters.started();
    }

    /// Counts a failure of such a statement.
    pub(crate) fn record_failure(&self, error: &QueryError) {
        self.counters.failed(error);
    }

    /// Runs `work` on the query threads (deep stacks, apart from ingest). Dropped when the
    /// engine's threads stop.
    pub(crate) fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self.runtime() {
            Ok(runtime) => {
                runtime.spawn(work);
            }
            Err(err) => tracing::warn!(%err, "query threads stopped: work dropped"),
        }
    }

    /// Queries run and failed so far, by kind.
    pub fn counters(&self) -> counters::QueryCountersSnapshot {
        self.counters.snapshot()
    }

    /// The underlying DataFusion context (for registering UDFs).
    pub fn context(&self) -> &SessionContext {
        &self.context
    }
}

/// Plans one statement after the read-only guard, with DDL, DML and statements refused, and
/// `params` (if any) bound to its placeholders.
async fn plan(
    context: &SessionContext,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<DataFrame, QueryError> {
    readonly::check(sql)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = context.sql_with_options(sql, options).await?;
    if params.is_empty() {
        Ok(frame)
    } else {
        Ok(frame.with_param_values(params)?)
    }
}

#[cfg(test)]
mod tests;
