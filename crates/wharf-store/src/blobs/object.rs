//! The blob store's object-storage backend (S3 and Azure Blob, through `object_store`).
//!
//! Layout under the configured prefix:
//! - `blobs/<alg>/<2 hex>/<hex>`: published content, written only after its digest was
//!   verified;
//! - `uploads/<session>/session`: an empty marker, written when the session is created;
//! - `uploads/<session>/<offset, 20 digits>.<nonce>`: one staged object per appended chunk.
//!   The nonce (random, per append) means a chunk's key is never written twice: two appends at
//!   the same offset (a client racing itself through two nodes) leave two objects instead of
//!   one silently replacing the other (see [`ObjectBlobs::chunks`] for what a session makes of
//!   them). Keys without a nonce, from before, are still read.
//!
//! Every PATCH's bytes are durably stored (a completed put) before the registry answers, and
//! the session's offset is derived from the staged objects, so a session survives a restart
//! and is usable from any node that sees the bucket. A chunk is a single put or a multipart
//! upload that only becomes visible when complete: a failed chunk leaves nothing behind.
//!
//! Finishing composes the chunks in order while hashing them, into a put (small blobs) or a
//! multipart upload (large ones) at the final key, and completes it only when the hash matches
//! the digest: an object becomes visible at its content address whole and verified, and a
//! mismatch aborts the upload. One exception, on S3: a session that is one chunk which this
//! process staged itself, hashing every byte it sent to the digest, is published with a
//! server-side copy (atomic on S3) instead of a read and a rewrite. Its key was never written
//! by anyone else (the nonce), so the stored bytes are the ones hashed; the copy's size is
//! checked after. Azure's copy may complete asynchronously, so Azure always composes.
//! Everything else composes through this process rather than server-side, because S3 and
//! Azure have no common compose-with-verification call, and because reading the bytes back is
//! what checks the digest against what is stored when this process did not stage (and hash)
//! all of it itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use wharf_core::{Digest, Hasher};

use super::{AppendError, Appended, BlobInfo, BlobLocation, ByteStream, Finished, SessionInfo};
use crate::StoreError;

/// Blobs up to this size are composed in memory and stored with one put; larger ones are
/// streamed into a multipart upload in parts of this size.
const PART: usize = 8 << 20;
/// Buffer of an append before it switches from one put to a multipart upload.
const APPEND_BUF: usize = 8 << 20;
/// Parts of one upload in flight at once.
const CONCURRENCY: usize = 4;
const MARKER: &str = "session";
/// Largest object S3's CopyObject copies in one request; larger sessions are composed.
const COPY_MAX: u64 = 5 << 30;
/// Most sessions [`ObjectBlobs::staged`] remembers; past it, it starts over (an entry only
/// enables the copy, so forgetting one costs a compose, never correctness).
const STAGED_MAX: usize = 10_000;
/// The object under the prefix that names the database it serves.
const STORE_MARKER: &str = "wharf-store-id";

#[derive(Clone)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    /// The same client, signing time-limited read URLs (see [`ObjectBlobs::download_url`]).
    signer: Arc<dyn object_store::signer::Signer>,
    prefix: String,
    /// `s3://bucket/prefix` or `azure://container/prefix`, for logs (never a credential).
    location: String,
    /// Whether a copy is atomic and synchronous (S3), so a finish may publish by copying.
    server_copy: bool,
    /// Per session, the key of the last chunk this process staged (see the module docs).
    staged: Arc<std::sync::Mutex<std::collections::HashMap<String, Path>>>,
    /// This node's copies of blobs it streamed or received whole (see [`super::cache`]).
    cache: Option<Arc<super::cache::BlobCache>>,
}

/// One staged chunk of a session.
struct Chunk {
    offset: u64,
    size: u64,
    key: Path,
}

impl std::fmt::Debug for ObjectBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBlobs")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// `o` with the node's blob cache of `opts.blob_cache` bytes in `blob-cache/` under the
/// data directory (emptied here; the caller holds the directory's lock), or as it is if the
/// cache is off.
pub(crate) async fn with_cache(
    o: ObjectBlobs,
    data_dir: &std::path::Path,
    opts: &crate::StoreOptions,
    space: &crate::SpaceGuard,
) -> Result<ObjectBlobs, StoreError> {
    if opts.blob_cache == 0 {
        return Ok(o);
    }
    let dir = data_dir.join("blob-cache");
    let cache = super::cache::BlobCache::open(dir.clone(), opts.blob_cache, space.clone()).await?;
    tracing::info!(
        dir = %dir.display(),
        max_mib = opts.blob_cache >> 20,
        "keeping node-local copies of blobs on object storage"
    );
    Ok(o.with_cache(cache))
}

/// Retries inside object_store: a few, quickly, so a client hears a 503 and retries itself
/// rather than waiting minutes on a server that is down.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

/// Whether an http(s) URL's host is a loopback address: the only place plain http is allowed
/// (an emulator on this machine), since requests carry signed credentials.
fn loopback_http(url: &str) -> Result<bool, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Ok(false);
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(h) => h.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let lo = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if lo {
        Ok(true)
    } else {
        Err(format!(
            "the endpoint {url:?} uses plain http on a host that is not loopback: use https"
        ))
    }
}

/// The fields of an Azure storage connection string (`Key=Value;...`).
fn connection_string(s: &str) -> std::collections::HashMap<String, String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

fn config_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Config(e.to_string())
}

impl ObjectBlobs {
    /// Builds the client; nothing is sent until the first call (see [`Self::check`]).
    pub fn open(location: &BlobLocation) -> Result<Self, StoreError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (store, signer, prefix, server_copy): (
            Arc<dyn ObjectStore>,
            Arc<dyn object_store::signer::Signer>,
            &String,
            bool,
        ) = match location {
            BlobLocation::DataDir => {
                return Err(config_error("the data directory is not object storage"));
            }
            BlobLocation::S3 { bucket, prefix } => {
                // Credentials, region and endpoint from the AWS_* variables (and, without
                // keys, the usual instance-metadata chain).
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry());
                if let Some(ep) = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT")) {
                    b = b
                        .with_allow_http(loopback_http(&ep).map_err(config_error)?)
                        .with_endpoint(ep);
                }
                if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
                    b = b.with_region("us-east-1");
                }
                let s3 = Arc::new(b.build().map_err(config_error)?);
                (s3.clone(), s3, prefix, true)
            }
            BlobLocation::Azure { container, prefix } => {
                let cs = env("AZURE_STORAGE_CONNECTION_STRING").ok_or_else(|| {
                    config_error("azure:// needs AZURE_STORAGE_CONNECTION_STRING")
                })?;
                let f = connection_string(&cs);
                let account = f.get("accountname").ok_or_else(|| {
                    config_error("AZURE_STORAGE_CONNECTION_STRING has no AccountName")
                })?;
                let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                    .with_container_name(container)
                    .with_account(account)
                    .with_retry(retry());
                if let Some(key) = f.get("accountkey") {
                    b = b.with_access_key(key);
                } else if let Some(sas) = f.get("sharedaccesssignature") {
                    let pairs = sas
                        .trim_start_matches('?')
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect::<Vec<_>>();
                    b = b.with_sas_authorization(pairs);
                } else {
                    return Err(config_error(
                        "AZURE_STORAGE_CONNECTION_STRING has neither AccountKey nor SharedAccessSignature",
                    ));
                }
                let endpoint = match f.get("blobendpoint") {
                    Some(ep) => Some(ep.trim_end_matches('/').to_owned()),
                    None => f.get("endpointsuffix").map(|suffix| {
                        let proto = f
                            .get("defaultendpointsprotocol")
                            .map_or("https", String::as_str);
                        format!("{proto}://{account}.blob.{suffix}")
                    }),
                };
                if let Some(ep) = endpoint {
                    b = b
                        .with_allow_http(loopback_http(&ep).map_err(config_error)?)
                        .with_endpoint(ep);
                }
                let azure = Arc::new(b.build().map_err(config_error)?);
                (azure.clone(), azure, prefix, false)
            }
        };
        Ok(ObjectBlobs {
            store,
            signer,
            prefix: prefix.clone(),
            location: location.to_string(),
            server_copy,
            staged: Arc::default(),
            cache: None,
        })
    }

    /// Reads whole blobs through `cache`, this node's copies, and fills it.
    pub fn with_cache(mut self, cache: Arc<super::cache::BlobCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Lists the upload area once: start-up fails early and clearly when the bucket is
    /// unreachable or the credentials are refused.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.upload_sessions().await.map(|_| ())
    }

    /// `s3://bucket/prefix` or `azure://container/prefix` (no credential).
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// The id of the database this prefix serves (see `crate::binding`), if one is recorded.
    pub(crate) async fn store_marker(&self) -> Result<Option<String>, StoreError> {
        match self.store.get(&self.key(STORE_MARKER)).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(backend)?;
                Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    pub(crate) async fn write_store_marker(&self, id: &str) -> Result<(), StoreError> {
        self.store
            .put(&self.key(STORE_MARKER), id.to_owned().into_bytes().into())
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn key(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn blob_key(&self, digest: &Digest) -> Path {
        let hex = digest.hex();
        self.key(&format!(
            "blobs/{}/{}/{hex}",
            digest.algorithm().as_str(),
            &hex[..2]
        ))
    }

    fn session_dir(&self, id: &str) -> Result<Path, StoreError> {
        // Ids are 32 hex digits (checked by the registry); anything else names no session.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::NotFound);
        }
        Ok(self.key(&format!("uploads/{id}")))
    }

    /// A fresh key for a chunk at `offset`: never used before (see the module docs).
    fn new_chunk_key(&self, id: &str, offset: u64) -> Result<Path, StoreError> {
        let nonce = uuid::Uuid::new_v4().simple();
        Ok(self.session_dir(id)?.child(format!("{offset:020}.{nonce}")))
    }

    fn staged_guard(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Path>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers (or, with None, forgets) the chunk this process last staged for `id`.
    fn set_staged(&self, id: &str, key: Option<Path>) {
        let mut g = self.staged_guard();
        match key {
            Some(k) => {
                if g.len() >= STAGED_MAX && !g.contains_key(id) {
                    g.clear();
                }
                g.insert(id.to_owned(), k);
            }
            None => {
                g.remove(id);
            }
        }
    }

    fn staged_here(&self, id: &str, key: &Path) -> bool {
        self.staged_guard().get(id) == Some(key)
    }

    /// Publishes a whole blob from memory with one PUT to its key: no staged object and no
    /// copy (see [`super::BlobStore::object_store`]). `parts` must be bytes the caller has
    /// already verified against `digest`: an object store's PUT makes the object visible
    /// whole, at once. `AlreadyStored` (nothing written) if the content is there already.
    pub async fn put_whole(
        &self,
        digest: &Digest,
        parts: &[bytes::Bytes],
    ) -> Result<Finished, StoreError> {
        let publish = async {
            if self.size(digest).await?.is_some() {
                return Ok(Finished::AlreadyStored);
            }
            let payload: PutPayload = parts.iter().cloned().collect();
            self.store
                .put(&self.blob_key(digest), payload)
                .await
                .map_err(backend)?;
            Ok(Finished::Published)
        };
        // One push, then pulls: this node keeps a copy of the bytes, verified already and in
        // hand, written while the object is (so the push waits for neither in turn) and
        // before the push is answered (so the pull that follows finds it). A copy of bytes
        // whose publishing then fails is still their digest's, and is read only through a
        // link, which needs the published object.
        let keep = async {
            if let Some(c) = &self.cache {
                c.keep(digest, parts).await;
            }
        };
        let (done, ()) = tokio::join!(publish, keep);
        done
    }

    pub(super) async fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match self.store.head(&self.blob_key(digest)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    pub(super) async fn read(
        &self,
        digest: &Digest,
        start: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        if let Some(hit) = self.cached(digest, start, len).await {
            return Ok(hit);
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(start..start + len)),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&self.blob_key(digest), opts)
            .await
            .map_err(backend)?;
        Ok(Box::pin(got.into_stream().map_err(std::io::Error::other)))
    }

    /// Streams a whole blob of `size` bytes: this node's copy if it has one, else the
    /// object, keeping a copy as it goes by.
    pub(super) async fn read_whole(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<ByteStream, StoreError> {
        if let Some(hit) = self.cached(digest, 0, size).await {
            return Ok(hit);
        }
        let got = self
            .store
            .get(&self.blob_key(digest))
            .await
            .map_err(backend)?;
        let body: ByteStream = Box::pin(got.into_stream().map_err(std::io::Error::other));
        Ok(match &self.cache {
            Some(c) => c.tee(digest, size, body),
            None => body,
        })
    }

    async fn cached(&self, digest: &Digest, start: u64, len: u64) -> Option<ByteStream> {
        self.cache.as_ref()?.read(digest, start, len).await
    }

    /// A URL that reads the published blob straight from the bucket for `ttl`, signed with
    /// this node's credentials (S3: a presigned GET; Azure: a service SAS, which needs the
    /// account key).
    pub(super) async fn download_url(
        &self,
        digest: &Digest,
        ttl: std::time::Duration,
    ) -> Result<String, StoreError> {
        let url = self
            .signer
            .signed_url(http::Method::GET, &self.blob_key(digest), ttl)
            .await
            .map_err(backend)?;
        Ok(url.into())
    }

    pub(super) async fn delete_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        if let Some(c) = &self.cache {
            c.forget(digest).await;
        }
        match self.store.delete(&self.blob_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    pub(super) async fn list_blobs(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let dir = self.key("blobs");
        let mut listed = self.store.list(Some(&dir));
        let now = chrono::Utc::now();
        let mut out = Vec::new();
        while let Some(m) = listed.next().await {
            let m = m.map_err(backend)?;
            let parts: Vec<String> = m
                .location
                .prefix_match(&dir)
                .into_iter()
                .flatten()
                .map(|p| p.as_ref().to_owned())
                .collect();
            let [alg, _shard, hex] = parts.as_slice() else {
                continue;
            };
            let Ok(digest) = Digest::parse(&format!("{alg}:{hex}")) else {
                continue;
            };
            out.push(BlobInfo {
                digest,
                size: m.size,
                age: (now - m.last_modified).to_std().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    pub(super) async fn create_upload(&self, id: &str) -> Result<(), StoreError> {
        let marker = self.session_dir(id)?.child(MARKER);
        self.store
            .put(&marker, PutPayload::new())
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Every chunk object of the session, duplicates included, unordered. `NotFound` if the
    /// session has neither marker nor chunks.
    async fn staged_objects(&self, id: &str) -> Result<Vec<Chunk>, StoreError> {
        let dir = self.session_dir(id)?;
        let mut listed = self.store.list(Some(&dir));
        let mut found = false;
        let mut chunks = Vec::new();
        while let Some(m) = listed.next().await {
            let m = m.map_err(backend)?;
            found = true;
            if let Some(offset) = m.location.filename().and_then(chunk_offset) {
                chunks.push(Chunk {
                    offset,
                    size: m.size,
                    key: m.location.clone(),
                });
            }
        }
        if !found {
            return Err(StoreError::NotFound);
        }
        Ok(chunks)
    }

    /// The session's staged chunks in offset order, checked to be contiguous from 0.
    /// `NotFound` if the session has neither marker nor chunks.
    ///
    /// Two chunks at the same offset come from two appends that raced (a client retrying a
    /// PATCH through another node while the first still ran). Of the same size, one stands for
    /// both: this process's own if it is one of them, so a finish may still copy it. Every
    /// reader verifies what it publishes, so which one stands cannot publish wrong content.
    /// Of different sizes, the session's length is unknowable: `Conflict`.
    async fn chunks(&self, id: &str) -> Result<Vec<Chunk>, StoreError> {
        let mut chunks = self.staged_objects(id).await?;
        let mine = self.staged_guard().get(id).cloned();
        // Per offset, this process's chunk first, then by key.
        chunks.sort_unstable_by(|a, b| {
            (a.offset, Some(&a.key) != mine.as_ref(), a.key.as_ref()).cmp(&(
                b.offset,
                Some(&b.key) != mine.as_ref(),
                b.key.as_ref(),
            ))
        });
        let mut kept: Vec<Chunk> = Vec::with_capacity(chunks.len());
        for c in chunks {
            match kept.last() {
                Some(k) if k.offset == c.offset && k.size == c.size => {}
                Some(k) if k.offset == c.offset => return Err(StoreError::Conflict),
                _ => kept.push(c),
            }
        }
        let chunks = kept;
        let mut next = 0;
        for c in &chunks {
            if c.offset != next {
                return Err(StoreError::Corrupt(format!(
                    "upload session {id}: staged chunk at {}, expected {next}",
                    c.offset
                )));
            }
            next += c.size;
        }
        Ok(chunks)
    }

    pub(super) async fn upload_len(&self, id: &str) -> Result<u64, StoreError> {
        Ok(self.chunks(id).await?.iter().map(|c| c.size).sum())
    }

    /// Stages the body as one object at `offset`: a put if it fits the buffer, else a
    /// multipart upload, which is invisible until completed and aborted on failure. Bytes are
    /// hashed on a blocking thread fed through a channel, as they go by.
    pub(super) async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        mut body: ByteStream,
        hasher: Option<Hasher>,
    ) -> Result<Appended, AppendError> {
        let key = self.new_chunk_key(id, offset)?;
        // The session must exist: an append to a cancelled or expired session must not
        // resurrect it.
        self.store
            .head(&self.session_dir(id)?.child(MARKER))
            .await
            .map_err(backend)?;
        let (tx, hashed) = hash_thread(hasher);
        let mut w = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            key.clone(),
            APPEND_BUF,
        )
        .with_max_concurrency(CONCURRENCY);
        let mut written = 0u64;
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) if c.is_empty() => {}
                Ok(c) => {
                    written += c.len() as u64;
                    if let Some(tx) = &tx {
                        // The hashing thread only stops if it panicked: the hash is then
                        // simply unknown, and a finish reads the chunks back.
                        let _ = tx.send(c.clone()).await;
                    }
                    if let Err(e) = w.put(c).await {
                        failure = Some(AppendError::Store(backend(e)));
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(AppendError::Body(e));
                    break;
                }
            }
        }
        drop(tx);
        if failure.is_none() && written > 0 {
            use tokio::io::AsyncWriteExt;
            if let Err(e) = w.shutdown().await {
                failure = Some(AppendError::Store(io_backend(e)));
            }
        }
        if let Some(f) = failure {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, session = %id, "aborting a failed chunk upload failed");
            }
            return Err(f);
        }
        if written == 0 {
            let _ = w.abort().await;
        }
        let hasher = match hashed {
            Some(h) => h.await.ok().flatten(),
            None => None,
        };
        if written > 0 {
            self.set_staged(id, Some(key));
        }
        Ok(Appended { written, hasher })
    }

    /// Drops the staged chunks at or past `len` (chunks are whole: one never straddles it
    /// because an append that failed staged nothing).
    pub(super) async fn truncate_upload(&self, id: &str, len: u64) -> Result<(), StoreError> {
        // The chunk this process staged last first, by name, if it lies past `len`: a
        // rollback of the last append then needs no listing, which may fail when the rest of
        // the store does.
        let mine = self.staged_guard().get(id).cloned();
        if let Some(key) = mine
            && key
                .filename()
                .and_then(chunk_offset)
                .is_some_and(|o| o >= len)
        {
            self.delete_quietly(&key).await?;
            self.set_staged(id, None);
        }
        // Every object past `len`, a raced duplicate included.
        for c in self.staged_objects(id).await? {
            if c.offset >= len {
                self.delete_quietly(&c.key).await?;
            }
        }
        Ok(())
    }

    async fn delete_quietly(&self, key: &Path) -> Result<(), StoreError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    /// Streams the session's chunks in order.
    fn chunk_stream(
        &self,
        chunks: Vec<Chunk>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        let store = self.store.clone();
        let keys: Vec<Path> = chunks.into_iter().map(|c| c.key).collect();
        futures_util::stream::iter(keys)
            .then(move |k| {
                let store = store.clone();
                async move {
                    let got = store.get(&k).await.map_err(backend)?;
                    Ok::<_, StoreError>(got.into_stream().map_err(backend))
                }
            })
            .try_flatten()
    }

    pub(super) async fn finish_upload(
        &self,
        id: &str,
        digest: &Digest,
        running: Option<Digest>,
    ) -> Result<Finished, StoreError> {
        let running = running.filter(|d| d.algorithm() == digest.algorithm());
        if running.as_ref().is_some_and(|d| d != digest) {
            return Ok(Finished::Mismatch);
        }
        let chunks = self.chunks(id).await?;
        let total: u64 = chunks.iter().map(|c| c.size).sum();
        let dst = self.blob_key(digest);
        let exists = self.size(digest).await?.is_some();
        if exists && running.is_some() {
            // Already published, and the session's bytes are known to be the same content.
            // They stay until the content is linked (see `Finished::AlreadyStored`).
            return Ok(Finished::AlreadyStored);
        }
        // `running` (equal to the digest, checked above) covers exactly the bytes this process
        // staged; if the session is the one chunk it staged last, those are the stored bytes.
        if let [only] = chunks.as_slice()
            && self.server_copy
            && running.is_some()
            && total <= COPY_MAX
            && self.staged_here(id, &only.key)
        {
            self.store.copy(&only.key, &dst).await.map_err(backend)?;
            // S3 can answer a copy 200 and still fail it: the object must be there, whole.
            if self.size(digest).await? == Some(total) {
                if let Err(e) = self.remove_upload(id).await {
                    tracing::warn!(error = %e, session = %id, "removing a published upload's staged chunks failed");
                }
                return Ok(Finished::Published);
            }
            tracing::warn!(session = %id, "a server-side copy left no whole object; composing instead");
        }
        let mut stream = Box::pin(self.chunk_stream(chunks));
        let mut h = digest.algorithm().hasher();
        let verified = if exists {
            // Only checked: the content is there already.
            while let Some(c) = stream.next().await {
                h.update(&c?);
            }
            h.finish() == *digest
        } else if total <= PART as u64 {
            let mut buf = Vec::with_capacity(total as usize);
            while let Some(c) = stream.next().await {
                let c = c?;
                h.update(&c);
                buf.extend_from_slice(&c);
            }
            let ok = h.finish() == *digest;
            if ok {
                self.store
                    .put(&dst, PutPayload::from(buf))
                    .await
                    .map_err(backend)?;
            }
            ok
        } else {
            let upload = self.store.put_multipart(&dst).await.map_err(backend)?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            let (tx, hashed) = hash_thread(Some(h));
            let mut failed = None;
            while let Some(c) = stream.next().await {
                let c = match c {
                    Ok(c) => c,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                if let Some(tx) = &tx {
                    let _ = tx.send(c.clone()).await;
                }
                if let Err(e) = w.wait_for_capacity(CONCURRENCY).await {
                    failed = Some(backend(e));
                    break;
                }
                w.put(c);
            }
            drop(tx);
            let actual = match hashed {
                Some(j) => j.await.ok().flatten().map(Hasher::finish),
                None => None,
            };
            let ok = failed.is_none() && actual.as_ref() == Some(digest);
            if ok {
                // Completing the upload is what makes the object visible, whole.
                w.finish().await.map_err(backend)?;
            } else {
                if let Err(e) = w.abort().await {
                    tracing::warn!(error = %e, session = %id, "aborting a blob's multipart upload failed");
                }
                if let Some(e) = failed {
                    return Err(e);
                }
                if actual.is_none() {
                    return Err(StoreError::Backend("hashing the upload failed".into()));
                }
            }
            ok
        };
        if !verified {
            return Ok(Finished::Mismatch);
        }
        if exists {
            return Ok(Finished::AlreadyStored);
        }
        if let Err(e) = self.remove_upload(id).await {
            // Published: what is left is garbage that expiry removes.
            tracing::warn!(error = %e, session = %id, "removing a published upload's staged chunks failed");
        }
        Ok(Finished::Published)
    }

    pub(super) async fn remove_upload(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.session_dir(id)?;
        self.set_staged(id, None);
        let keys: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(backend)?;
        // Chunks first, the marker last: a removal cut short leaves a session that still
        // lists (and expires), never chunks without their marker.
        let (markers, chunks): (Vec<_>, Vec<_>) =
            keys.into_iter().partition(|k| k.filename() == Some(MARKER));
        for k in chunks.iter().chain(markers.iter()) {
            self.delete_quietly(k).await?;
        }
        Ok(())
    }

    pub(super) async fn upload_sessions(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let dir = self.key("uploads");
        let mut listed = self.store.list(Some(&dir));
        let mut newest: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
            Default::default();
        while let Some(m) = listed.next().await {
            let m = m.map_err(backend)?;
            let mut parts = m.location.prefix_match(&dir).into_iter().flatten();
            let Some(id) = parts.next() else { continue };
            let e = newest
                .entry(id.as_ref().to_owned())
                .or_insert(m.last_modified);
            *e = (*e).max(m.last_modified);
        }
        let now = chrono::Utc::now();
        Ok(newest
            .into_iter()
            .map(|(id, t)| SessionInfo {
                id,
                idle: (now - t).to_std().unwrap_or_default(),
            })
            .collect())
    }
}

/// The offset a chunk object's name starts with (`<offset>.<nonce>`, or `<offset>` from
/// before nonces); None for the session marker.
fn chunk_offset(name: &str) -> Option<u64> {
    name.split_once('.').map_or(name, |(o, _)| o).parse().ok()
}

/// A blocking thread that hashes what it is sent; None if there is nothing to hash.
#[allow(clippy::type_complexity)]
fn hash_thread(
    hasher: Option<Hasher>,
) -> (
    Option<tokio::sync::mpsc::Sender<Bytes>>,
    Option<tokio::task::JoinHandle<Option<Hasher>>>,
) {
    let Some(mut h) = hasher else {
        return (None, None);
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let j = tokio::task::spawn_blocking(move || {
        while let Some(c) = rx.blocking_recv() {
            h.update(&c);
        }
        Some(h)
    });
    (Some(tx), Some(j))
}

/// An object-store failure: a missing object is `NotFound`; everything else (throttling,
/// 5xx, a refused credential, an unreachable endpoint), after object_store's own retries, is
/// a backend failure the client may retry (503). The message is logged, never sent; it names
/// keys and statuses, never credentials.
fn backend(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        e => StoreError::Backend(scrub(&e.to_string())),
    }
}

/// Blanks the values of URL query parameters that carry credentials (an Azure SAS token's
/// signature travels in the request URL, which object_store's errors quote).
fn scrub(msg: &str) -> String {
    const SECRET_PARAMS: &[&str] = &[
        "sig=",
        "x-amz-signature=",
        "x-amz-security-token=",
        "x-amz-credential=",
    ];
    let lower = msg.to_ascii_lowercase();
    let mut out = String::with_capacity(msg.len());
    let mut i = 0;
    while i < msg.len() {
        let hit = SECRET_PARAMS.iter().find(|p| {
            lower[i..].starts_with(*p)
                && (i == 0 || matches!(msg.as_bytes()[i - 1], b'?' | b'&' | b' ' | b'"'))
        });
        if let Some(p) = hit {
            out.push_str(&msg[i..i + p.len()]);
            out.push_str("***");
            i += p.len();
            while i < msg.len() && !matches!(msg.as_bytes()[i], b'&' | b' ' | b'"' | b'\'' | b')') {
                i += 1;
            }
        } else {
            let c = msg[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn io_backend(e: std::io::Error) -> StoreError {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<object_store::Error>() {
            Ok(os) => backend(*os),
            Err(other) => StoreError::Backend(other.to_string()),
        },
        None => StoreError::Backend("i/o error".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert_eq!(loopback_http("https://s3.example.com"), Ok(false));
        assert_eq!(loopback_http("http://127.0.0.1:9000"), Ok(true));
        assert_eq!(loopback_http("http://[::1]:9000/x"), Ok(true));
        assert_eq!(
            loopback_http("http://localhost:10000/devstoreaccount1"),
            Ok(true)
        );
        assert!(loopback_http("http://10.0.0.1:9000").is_err());
        assert!(loopback_http("http://s3.example.com").is_err());
    }

    #[test]
    fn credentials_in_urls_are_blanked() {
        let m = "Error performing GET http://h/c/b?sv=2021&sig=AbC%2Bsecret&se=1 in 2s";
        let s = scrub(m);
        assert!(!s.contains("AbC"), "{s}");
        assert!(s.contains("sig=***&se=1"), "{s}");
        assert_eq!(scrub("nothing here é"), "nothing here é");
    }

    #[test]
    fn connection_strings_parse() {
        let f = connection_string(
            "DefaultEndpointsProtocol=http;AccountName=dev;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/dev;",
        );
        assert_eq!(f["accountname"], "dev");
        assert_eq!(f["accountkey"], "a2V5");
        assert_eq!(f["blobendpoint"], "http://127.0.0.1:10000/dev");
    }
}
