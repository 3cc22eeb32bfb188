//! An in-memory object store with injectable faults, for tests of what goes through one: a
//! store that refuses every put while `down` (unreachable), and a put that lands and then
//! reports failure (`lose_next_answer`: a PUT whose answer was lost).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::ObjectStore;

/// See the module doc; everything but puts goes straight to `inner`.
#[derive(Debug, Default)]
pub(crate) struct FaultyObjectStore {
    pub(crate) inner: Arc<InMemory>,
    /// Every put fails, and nothing lands.
    pub(crate) down: AtomicBool,
    /// The next put lands, then reports failure.
    pub(crate) lose_next_answer: AtomicBool,
}

impl std::fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyObjectStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        options: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if self.down.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "FaultyObjectStore",
                source: "connection refused".into(),
            });
        }
        let put = self.inner.put_opts(location, payload, options).await?;
        if self.lose_next_answer.swap(false, Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "FaultyObjectStore",
                source: "the answer was lost".into(),
            });
        }
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, options).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
