//! A query's result as a stream of batches, so a result of any size crosses to the client in
//! bounded memory and a client that goes away stops the query.

use std::pin::Pin;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{AbortOnDrop, QueryError};

/// Batches computed ahead of the client at most.
pub(super) const QUEUED_BATCHES: usize = 2;

/// The batches of one running query; dropping it stops the query.
pub struct QueryStream {
    schema: SchemaRef,
    batches: mpsc::Receiver<Result<RecordBatch, QueryError>>,
    _task: AbortOnDrop<()>,
}

impl QueryStream {
    pub(super) fn new(
        schema: SchemaRef,
        batches: mpsc::Receiver<Result<RecordBatch, QueryError>>,
        task: AbortOnDrop<()>,
    ) -> QueryStream {
        QueryStream {
            schema,
            batches,
            _task: task,
        }
    }

    /// The result's schema, known before the first batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl futures::Stream for QueryStream {
    type Item = Result<RecordBatch, QueryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.batches.poll_recv(cx)
    }
}

/// Sends every batch of `batches` to `to` until it ends or the receiver is gone.
pub(super) async fn forward(
    mut batches: SendableRecordBatchStream,
    to: &mpsc::Sender<Result<RecordBatch, QueryError>>,
) -> Result<(), QueryError> {
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        if to.send(Ok(batch)).await.is_err() {
            break;
        }
    }
    Ok(())
}
