//! A flowdaq table as DataFusion sees it: its Parquet files plus its buffered rows.
//!
//! The provider is thin on purpose: it asks the write buffer for a consistent set of files and
//! batches and returns DataFusion's own Parquet source and memory source, unioned. No custom
//! `ExecutionPlan`, so DataFusion upgrades do not break it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use flowdaq_schemas::Table;

use crate::paths::DataPaths;
use crate::write_buffer::WriteBuffer;

/// One flowdaq table registered with DataFusion.
#[derive(Debug)]
pub struct FlowdaqTable {
    table: Table,
    schema: SchemaRef,
    buffer: Arc<WriteBuffer>,
    paths: DataPaths,
}

impl std::fmt::Debug for WriteBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBuffer").finish_non_exhaustive()
    }
}

impl FlowdaqTable {
    /// The provider for `table`, reading from `buffer` and files under `paths`.
    pub fn new(table: Table, buffer: Arc<WriteBuffer>, paths: DataPaths) -> FlowdaqTable {
        FlowdaqTable {
            table,
            schema: table.schema(),
            buffer,
            paths,
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

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let chunks = self.buffer.chunks(self.table);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !chunks.files.is_empty() {
            let files: Vec<PartitionedFile> = chunks
                .files
                .iter()
                .map(|f| {
                    let absolute = self.paths.resolve(&f.path);
                    let absolute = std::path::absolute(&absolute).unwrap_or(absolute);
                    let location = absolute
                        .to_string_lossy()
                        .trim_start_matches('/')
                        .to_string();
                    PartitionedFile::new(location, f.size_bytes)
                })
                .collect();
            let source = Arc::new(ParquetSource::new(self.schema.clone()));
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
                .with_file_group(FileGroup::new(files))
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
