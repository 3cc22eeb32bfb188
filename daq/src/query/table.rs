//! A flowdaq table as DataFusion sees it: its Parquet files plus its buffered rows.
//!
//! The provider is thin on purpose: it asks the write buffer for a consistent set of files and
//! batches and returns DataFusion's own Parquet source and memory source, unioned. No custom
//! `ExecutionPlan`, so DataFusion upgrades do not break it.
//!
//! The query's filters reach the scan as inexact (DataFusion applies them again to the rows):
//! files that the catalog says cannot match are left out ([`super::prune`]), and the Parquet
//! source gets the filters as its predicate, to skip row groups by their statistics. The
//! catalog's row counts are the scan's statistics, so `count(*)` reads no file.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use flowdaq_schemas::Table;

use super::prune::FilePruning;
use crate::write_buffer::WriteBuffer;

/// One flowdaq table registered with DataFusion.
#[derive(Debug)]
pub struct FlowdaqTable {
    table: Table,
    schema: SchemaRef,
    buffer: Arc<WriteBuffer>,
}

impl std::fmt::Debug for WriteBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBuffer").finish_non_exhaustive()
    }
}

impl FlowdaqTable {
    /// The provider for `table`, reading from `buffer` and the files of its table store.
    pub fn new(table: Table, buffer: Arc<WriteBuffer>) -> FlowdaqTable {
        FlowdaqTable {
            table,
            schema: table.schema(),
            buffer,
        }
    }
}

#[async_trait]
impl TableProvider for FlowdaqTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter is inexact: used to prune files and row groups, and applied again.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let chunks = self.buffer.chunks(self.table);
        // Other writers' files of a shared Delta table (read from its log: I/O, off the
        // query's worker).
        let (tables, table) = (self.buffer.tables(), self.table);
        let foreign = if tables.writer().is_some() {
            tokio::task::spawn_blocking(move || tables.other_writers_files(table))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .map_err(|e| DataFusionError::External(Box::new(e)))?
        } else {
            Vec::new()
        };
        let pruning = FilePruning::from_filters(filters);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let files: Vec<_> = chunks
            .files
            .iter()
            .chain(foreign.iter())
            .filter(|f| pruning.keeps(f))
            .collect();
        if !files.is_empty() {
            let rows: u64 = files.iter().map(|f| f.rows).sum();
            let bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
            let tables = self.buffer.tables();
            let files: Vec<PartitionedFile> = files
                .into_iter()
                .map(|f| PartitionedFile::new(tables.scan_location(&f.path), f.size_bytes))
                .collect();
            let mut source = ParquetSource::new(self.schema.clone());
            if let Some(predicate) = conjunction(filters.to_vec()) {
                let schema = DFSchema::try_from(self.schema.as_ref().clone())?;
                source = source.with_predicate(state.create_physical_expr(predicate, &schema)?);
            }
            let source = Arc::new(source);
            // The catalog counts each file's rows, so `count(*)` needs no scan (DataFusion
            // makes the statistics inexact itself when a predicate may drop rows).
            let mut statistics = Statistics::new_unknown(&self.schema);
            // Other writers' row counts come from Delta statistics a file may lack.
            statistics.num_rows = if foreign.is_empty() {
                Precision::Exact(rows as usize)
            } else {
                Precision::Inexact(rows as usize)
            };
            statistics.total_byte_size = Precision::Inexact(bytes as usize);
            let config = FileScanConfigBuilder::new(tables.scan_url(), source)
                .with_file_group(FileGroup::new(files))
                .with_statistics(statistics)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !chunks.batches.is_empty() || inputs.is_empty() {
            let memory = MemorySourceConfig::try_new(
                &[chunks.batches],
                self.schema.clone(),
                projection.cloned(),
            )?
            .with_limit(limit);
            inputs.push(DataSourceExec::from_data_source(memory));
        }
        UnionExec::try_new(inputs)
    }
}
