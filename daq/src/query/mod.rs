//! SQL over every flowdaq table, read-only, through DataFusion.
//!
//! One `SessionContext` per engine with one [`table::FlowdaqTable`] per table; queries see
//! persisted Parquet and not-yet-persisted rows alike. Results come back as Arrow batches and
//! are rendered by [`output`] as JSON, CSV, Arrow IPC or a text table.

pub mod output;
mod prune;
pub mod readonly;
pub mod table;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use flowdaq_schemas::Table;

use crate::paths::DataPaths;
use crate::write_buffer::WriteBuffer;

/// Query failures.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Refused by the read-only guard.
    #[error(transparent)]
    ReadOnly(#[from] readonly::ReadOnlyError),
    /// Planning or execution failed (unknown table or column, type error, ...).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
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
}

impl QueryEngine {
    /// An engine over `buffer` (which also holds the catalog) and files under `paths`.
    ///
    /// # Errors
    /// DataFusion's error if a table cannot be registered.
    pub fn new(buffer: Arc<WriteBuffer>, paths: &DataPaths) -> Result<QueryEngine, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(2);
        let context = SessionContext::new_with_config(config);
        for table in Table::ALL {
            let provider = table::FlowdaqTable::new(table, buffer.clone(), paths.clone());
            context.register_table(table.name(), Arc::new(provider))?;
        }
        Ok(QueryEngine { context })
    }

    /// Runs one read-only statement and collects its result.
    ///
    /// # Errors
    /// [`QueryError`]: refused statement, unknown table or column, execution failure.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, QueryError> {
        readonly::check(sql)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self.context.sql_with_options(sql, options).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok(QueryResult { schema, batches })
    }

    /// The underlying DataFusion context (for registering UDFs).
    pub fn context(&self) -> &SessionContext {
        &self.context
    }
}

#[cfg(test)]
mod tests;
