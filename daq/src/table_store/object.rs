//! Table files in an object store (S3 or any S3-compatible server): one PUT per file and per
//! catalog, which the store makes atomic, so a reader sees a whole file or none and the old
//! catalog or the new one.
//!
//! The persister and the compactor are blocking threads; the store's client is async. The
//! store's requests run on a small runtime of its own, so a blocking caller never needs one,
//! and DataFusion reads through a second client on the query runtime.

use std::future::Future;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as StorePath;
use object_store::{
    ClientConfigKey, MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};

use super::{NewTableFile, TableFileReader, TableStore};
use crate::catalog::{Catalog, CatalogError};

/// How to reach an S3-compatible store.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    /// `s3://bucket/prefix` (the prefix may be empty).
    pub url: String,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); empty: AWS, or
    /// `AWS_ENDPOINT_URL` from the environment.
    pub endpoint: String,
    /// Region; empty: `AWS_DEFAULT_REGION` / `AWS_REGION`, else `us-east-1`.
    pub region: String,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Time one request may take.
    pub request_timeout: Duration,
    /// Time the client retries a failing request before the error reaches the caller.
    pub retry_timeout: Duration,
}

/// Table files under a prefix of an object store.
pub struct ObjectTableStore {
    /// The client of the write path, driven by `runtime`.
    store: Arc<dyn ObjectStore>,
    /// The client DataFusion reads with.
    query_store: Arc<dyn ObjectStore>,
    /// The client of the Delta logs, driven by their own runtime.
    log_store: Arc<dyn ObjectStore>,
    /// This server's name among several writers of the prefix.
    writer: Option<String>,
    /// The catalog's object name, under the prefix.
    catalog_object: String,
    url: ObjectStoreUrl,
    prefix: String,
    runtime: StoreRuntime,
    /// What this store knows of the catalog object; held through a save.
    catalog: std::sync::Mutex<CatalogObject>,
}

/// The catalog object as this store last saw it. Every save is conditional on it (`If-Match`
/// its ETag, or `If-None-Match: *` while absent), so a catalog written meanwhile by anything
/// else is never overwritten, and a save that failed but lands late can never replace a later
/// one (the store checks the condition when it commits the write).
#[derive(Debug, Default)]
struct CatalogObject {
    /// `None` until loaded: a save then overwrites (only a save without a load does that).
    version: Option<Option<UpdateVersion>>,
    /// The bytes of a save that reported failure: it may have landed. Finding them in the store
    /// is finding our own write, not another writer's.
    unconfirmed: Option<Bytes>,
}

/// A runtime for the store's requests; shut down without waiting, so the last handle may be
/// dropped anywhere, an async context included.
struct StoreRuntime(Option<tokio::runtime::Runtime>);

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// `bucket` and `prefix` of `s3://bucket/prefix`.
fn split_s3_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("storage url {url:?}: only s3:// URLs are supported"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("storage url {url:?} names no bucket"));
    }
    Ok((bucket, prefix.trim_matches('/')))
}

/// Checks an `s3://bucket/prefix` URL without building a client.
///
/// # Errors
/// What is wrong with it.
pub(crate) fn check_s3_url(url: &str) -> Result<(), String> {
    split_s3_url(url).map(|_| ())
}

impl ObjectTableStore {
    /// The store `settings` name; credentials come from the usual `AWS_*` variables.
    ///
    /// # Errors
    /// If the URL or the client options are invalid, or the runtime cannot start.
    pub fn s3(settings: &S3Settings) -> io::Result<ObjectTableStore> {
        let (bucket, prefix) = split_s3_url(&settings.url).map_err(io::Error::other)?;
        // Timeouts as configuration keys: replacing the client options would drop those read
        // from the environment (AWS_ALLOW_HTTP, AWS_PROXY_URL).
        let connect_timeout = settings.request_timeout.min(Duration::from_secs(5));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}ms", settings.request_timeout.as_millis().max(1)),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                format!("{}ms", connect_timeout.as_millis().max(1)),
            )
            .with_retry(RetryConfig {
                retry_timeout: settings.retry_timeout,
                ..RetryConfig::default()
            });
        if !settings.endpoint.is_empty() {
            builder = builder.with_endpoint(&settings.endpoint);
        }
        if !settings.region.is_empty() {
            builder = builder.with_region(&settings.region);
        }
        if settings.allow_http {
            builder = builder.with_allow_http(true);
        }
        let build = |builder: AmazonS3Builder| -> io::Result<Arc<dyn ObjectStore>> {
            Ok(Arc::new(builder.build().map_err(io::Error::other)?))
        };
        let url = ObjectStoreUrl::parse(format!("s3://{bucket}"))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut store = ObjectTableStore::new(
            build(builder.clone())?,
            build(builder.clone())?,
            url,
            prefix,
        )?;
        store.log_store = build(builder)?;
        Ok(store)
    }

    /// As one of several writers of the prefix, named `writer`.
    pub fn with_writer(mut self, writer: Option<String>) -> ObjectTableStore {
        self.catalog_object = crate::paths::catalog_name(writer.as_deref());
        self.writer = writer;
        self
    }

    /// Files under `prefix` of `store` (written through it), read by DataFusion through
    /// `query_store`, registered under `url`.
    ///
    /// # Errors
    /// If the store's runtime cannot start.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        query_store: Arc<dyn ObjectStore>,
        url: ObjectStoreUrl,
        prefix: &str,
    ) -> io::Result<ObjectTableStore> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowdaq-store")
            .enable_all()
            .build()?;
        Ok(ObjectTableStore {
            store,
            log_store: query_store.clone(),
            writer: None,
            catalog_object: crate::paths::catalog_name(None),
            query_store,
            url,
            prefix: prefix.trim_matches('/').to_string(),
            runtime: StoreRuntime(Some(runtime)),
            catalog: Default::default(),
        })
    }

    fn location(&self, relative: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(relative)
        } else {
            StorePath::from(format!("{}/{relative}", self.prefix))
        }
    }

    fn catalog_display(&self) -> String {
        format!(
            "{}{}",
            self.url.as_str(),
            self.location(&self.catalog_object)
        )
    }

    fn catalog_lock(&self) -> std::sync::MutexGuard<'_, CatalogObject> {
        self.catalog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The catalog object's bytes and version.
    fn get_catalog(&self) -> io::Result<(Bytes, UpdateVersion)> {
        let location = self.location(&self.catalog_object);
        let store = self.store.clone();
        self.block_on(async move {
            let got = store.get(&location).await?;
            let version = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            Ok((got.bytes().await?, version))
        })
    }

    /// Puts the catalog under `mode`; a lost condition is `AlreadyExists`.
    fn put_catalog(&self, bytes: &Bytes, mode: PutMode) -> io::Result<UpdateVersion> {
        let location = self.location(&self.catalog_object);
        let (store, payload) = (self.store.clone(), PutPayload::from(bytes.clone()));
        self.block_on(async move {
            let options = PutOptions {
                mode,
                ..PutOptions::default()
            };
            let put = store.put_opts(&location, payload, options).await?;
            Ok(UpdateVersion {
                e_tag: put.e_tag,
                version: put.version,
            })
        })
    }

    /// Runs `request` on the store's runtime and waits for it, from any thread.
    fn block_on<T: Send + 'static>(
        &self,
        request: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        match &self.runtime.0 {
            Some(runtime) => wait_on(runtime.handle(), request),
            None => Err(io::Error::other("object store runtime stopped")),
        }
    }
}

/// Runs `request` on `runtime` and waits for it. Callers are blocking threads, or (at start-up)
/// a runtime's worker that may block: the request runs on the store's runtime either way.
fn wait_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    request: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> io::Result<T> {
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = done_tx.send(request.await);
    });
    match done_rx.recv() {
        Ok(result) => result.map_err(store_error),
        Err(_) => Err(io::Error::other("object store request dropped")),
    }
}

/// An object store error as I/O: `NotFound` kept, and a lost condition (the object exists, or
/// changed) as `AlreadyExists`, so callers can tell them apart.
fn store_error(err: object_store::Error) -> io::Error {
    match err {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, err),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            io::Error::new(io::ErrorKind::AlreadyExists, err)
        }
        other => io::Error::other(other),
    }
}

/// Bytes of a multipart upload's part: a file larger than this goes up part by part as it is
/// written, so memory stays near one part whatever the file's size (S3 wants parts of at
/// least 5 MiB but the last).
pub(super) const PART_BYTES: usize = 8 * 1024 * 1024;

/// A file held in memory and committed with one PUT, or, once it outgrows a part, uploaded in
/// parts and committed by completing the upload (atomic, as a PUT).
struct ObjectNewFile {
    pending: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    location: StorePath,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
}

impl ObjectNewFile {
    /// Sends the pending bytes as the next part, starting the upload first if needed.
    fn send_part(&mut self) -> io::Result<()> {
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => {
                let (store, location) = (self.store.clone(), self.location.clone());
                let started = wait_on(&self.runtime, async move {
                    store.put_multipart(&location).await
                })?;
                self.upload.insert(started)
            }
        };
        let part = upload.put_part(PutPayload::from(std::mem::take(&mut self.pending)));
        wait_on(&self.runtime, part)
    }
}

impl Write for ObjectNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= PART_BYTES {
            self.send_part()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl NewTableFile for ObjectNewFile {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        if self.upload.is_some() {
            if !self.pending.is_empty() {
                self.send_part()?;
            }
            let Some(mut upload) = self.upload.take() else {
                return Err(io::Error::other("multipart upload lost"));
            };
            return wait_on(&self.runtime, async move { upload.complete().await }).map(|_| ());
        }
        let (store, location) = (self.store.clone(), self.location.clone());
        let bytes = std::mem::take(&mut self.pending);
        wait_on(&self.runtime, async move {
            store.put(&location, PutPayload::from(bytes)).await
        })
        .map(|_| ())
    }
}

impl Drop for ObjectNewFile {
    fn drop(&mut self) {
        // Abandoned mid-upload: the store drops the parts (best effort; a bucket's lifecycle
        // rule for incomplete uploads catches what this misses).
        if let Some(mut upload) = self.upload.take() {
            self.runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

impl TableStore for ObjectTableStore {
    fn describe(&self) -> String {
        format!("{}{}", self.url.as_str(), self.prefix)
    }

    fn writer(&self) -> Option<&str> {
        self.writer.as_deref()
    }

    fn load_catalog(&self) -> Result<Catalog, CatalogError> {
        let display = self.catalog_display();
        let mut known = self.catalog_lock();
        match self.get_catalog() {
            Ok((bytes, version)) => {
                let catalog =
                    serde_json::from_slice(&bytes).map_err(|e| CatalogError::Corrupt {
                        path: display,
                        message: e.to_string(),
                    })?;
                known.version = Some(Some(version));
                Ok(catalog)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                known.version = Some(None);
                Ok(Catalog {
                    version: 1,
                    ..Catalog::default()
                })
            }
            Err(source) => Err(CatalogError::Io {
                path: display,
                source,
            }),
        }
    }

    fn save_catalog(&self, catalog: &Catalog) -> Result<(), CatalogError> {
        let io = |source| CatalogError::Io {
            path: self.catalog_display(),
            source,
        };
        let bytes = Bytes::from(serde_json::to_vec(catalog).map_err(|e| io(io::Error::other(e)))?);
        let mut known = self.catalog_lock();
        let mode = match &known.version {
            None => PutMode::Overwrite,
            Some(None) => PutMode::Create,
            Some(Some(version)) => PutMode::Update(version.clone()),
        };
        let put = match self.put_catalog(&bytes, mode) {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                // Written since we last saw it: by us (a save that reported failure but
                // landed, or this one, landed before the client's retry) or by another writer.
                let (current, version) = self.get_catalog().map_err(io)?;
                let ours = current == bytes || known.unconfirmed.as_ref() == Some(&current);
                if !ours {
                    return Err(io(io::Error::other(
                        "the catalog was changed by another writer (two servers on one prefix?): not overwritten",
                    )));
                }
                if current == bytes {
                    Ok(version)
                } else {
                    self.put_catalog(&bytes, PutMode::Update(version))
                }
            }
            other => other,
        };
        match put {
            Ok(version) => {
                known.version = Some(Some(version));
                known.unconfirmed = None;
                Ok(())
            }
            Err(err) => {
                known.unconfirmed = Some(bytes);
                Err(io(err))
            }
        }
    }

    fn create(&self, relative: &str) -> io::Result<Box<dyn NewTableFile>> {
        let Some(runtime) = &self.runtime.0 else {
            return Err(io::Error::other("object store runtime stopped"));
        };
        Ok(Box::new(ObjectNewFile {
            pending: Vec::new(),
            upload: None,
            location: self.location(relative),
            store: self.store.clone(),
            runtime: runtime.handle().clone(),
        }))
    }

    fn read(&self, relative: &str) -> io::Result<TableFileReader> {
        let location = self.location(relative);
        let store = self.store.clone();
        self.block_on(async move { store.get(&location).await?.bytes().await })
            .map(TableFileReader::Bytes)
    }

    fn copy(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (self.location(from), self.location(to));
        let store = self.store.clone();
        self.block_on(async move { store.copy(&from, &to).await })
    }

    fn remove(&self, relative: &str) -> io::Result<()> {
        let location = self.location(relative);
        let store = self.store.clone();
        // S3 deletes a missing key without complaint; ask first, so `NotFound` means the same
        // as on a disk.
        self.block_on(async move {
            store.head(&location).await?;
            store.delete(&location).await
        })
    }

    fn list_table_files(&self) -> io::Result<Vec<String>> {
        let tables = self.location("tables");
        let store = self.store.clone();
        let listed =
            self.block_on(async move { store.list(Some(&tables)).try_collect::<Vec<_>>().await })?;
        // Listed keys are in the store's encoding: strip the prefix as encoded.
        let skip = if self.prefix.is_empty() {
            0
        } else {
            StorePath::from(self.prefix.as_str()).as_ref().len() + 1
        };
        Ok(listed
            .into_iter()
            .filter_map(|meta| meta.location.as_ref().get(skip..).map(str::to_string))
            .collect())
    }

    fn scan_url(&self) -> ObjectStoreUrl {
        self.url.clone()
    }

    fn scan_location(&self, relative: &str) -> String {
        // Unencoded: DataFusion encodes it into a key as `location` does.
        if self.prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    fn query_store(&self) -> Option<Arc<dyn ObjectStore>> {
        Some(self.query_store.clone())
    }

    fn tables_root(&self) -> io::Result<(Arc<dyn ObjectStore>, url::Url)> {
        let mut url = url::Url::parse(self.url.as_str()).map_err(io::Error::other)?;
        let tables = if self.prefix.is_empty() {
            "/tables/".to_string()
        } else {
            format!("/{}/tables/", self.prefix)
        };
        url.set_path(&tables);
        Ok((self.log_store.clone(), url))
    }
}

impl std::fmt::Debug for ObjectTableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectTableStore")
            .field("store", &self.describe())
            .finish_non_exhaustive()
    }
}
