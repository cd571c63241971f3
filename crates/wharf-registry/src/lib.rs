//! Wharf's registry use cases: blob uploads (monolithic, chunked, streamed, mounts), blob
//! reads and deletes, manifests, tags, referrers, the catalog, the events those changes
//! raise, and online garbage collection (`gc.rs`).
//!
//! It takes typed values and byte streams, never HTTP types, and talks only to `wharf-store`,
//! through the [`wharf_store::RegistryStore`] it is given (the metadata, attribute, policy and
//! garbage-collection traits and the blob store), whatever backend implements them; it never
//! sees webhook definitions, the delivery queue or identities.
//! It must not call `wharf-hooks` (the two meet in the store's outbox) or name axum.

pub mod acr;
mod events;
pub mod gc;
pub mod retention;
mod uploads;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use serde_json::json;
use wharf_core::{
    Algorithm, Digest, ManifestError, ParsedManifest, Reference, RepoName, Tag, parse_manifest,
};
use wharf_store::{NewManifest, RegistryStore, StoreError};

pub use events::RequestInfo;
pub use gc::GcReport;
pub use retention::{Clock, SystemClock};
pub use uploads::{Expired, UploadState};
/// The policy shapes the management API reads and patches through [`Registry::policies`].
pub use wharf_store::{PoliciesPatch, RegistryPolicies};

/// A stream of request body bytes.
/// `'static` because uploads run on a task of their own (see `uploads.rs`).
pub trait ByteStream: Stream<Item = Result<Bytes, io::Error>> + Send + Unpin + 'static {}
impl<T: Stream<Item = Result<Bytes, io::Error>> + Send + Unpin + 'static> ByteStream for T {}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    #[error("provided digest did not match uploaded content")]
    DigestMismatch,
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("requested range does not start at the upload's offset")]
    RangeNotSatisfiable { offset: u64 },
    #[error("content length did not match the range")]
    SizeInvalid,
    #[error("manifest references unknown blob {0}")]
    ManifestBlobUnknown(Digest),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("the specified tag does not exist")]
    TagUnknown,
    /// A pull by tag of a quarantined manifest: ACR answers as if it were not there.
    #[error("manifest tagged by {0:?} is not found")]
    ManifestNotFound(String),
    /// A lock or the quarantine forbids the operation (ACR's 405).
    #[error("the operation is disallowed")]
    Disallowed,
    /// A request value the registry cannot accept.
    #[error("{0}")]
    Invalid(String),
    #[error("too many tags")]
    TooManyTags,
    /// The data volume is full or below its configured free-space floor: nothing was
    /// stored, and the same request succeeds once space returns.
    #[error("out of storage space")]
    OutOfSpace,
    /// Nothing was stored, and the same request may succeed when retried (503): the blob
    /// backend (object storage) failed or is unreachable, or content was garbage-collected
    /// while it was being linked.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(StoreError),
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::OutOfSpace => RegistryError::OutOfSpace,
            StoreError::Disallowed => RegistryError::Disallowed,
            StoreError::Backend(m) | StoreError::DbUnavailable(m) => RegistryError::Unavailable(m),
            e => RegistryError::Internal(e),
        }
    }
}

impl From<io::Error> for RegistryError {
    fn from(e: io::Error) -> Self {
        if wharf_store::is_out_of_space(&e) {
            RegistryError::OutOfSpace
        } else {
            RegistryError::Io(e)
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Limits that protect the registry from oversized or abusive input.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_manifest_bytes: usize,
    pub max_tags_per_put: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_tags_per_put: 32,
        }
    }
}

/// A blob a caller may read: what [`Registry::readable_blob`] checked (the repository links
/// it and may be read; quarantine as the caller asked). Only the registry makes one, so a read
/// ([`Registry::read_blob`]) cannot skip the checks.
#[derive(Debug, Clone)]
pub struct ReadableBlob {
    digest: Digest,
    size: u64,
}

impl ReadableBlob {
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The result of a manifest PUT.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub tags: Vec<Tag>,
}

/// A manifest to serve.
#[derive(Debug, Clone)]
pub struct ManifestOut {
    pub digest: Digest,
    pub media_type: String,
    pub size: i64,
    pub body: Option<Vec<u8>>,
}

/// What a repository delete removed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoDeleted {
    pub manifests_deleted: Vec<String>,
    pub tags_deleted: Vec<String>,
}

#[derive(Clone)]
pub struct Registry {
    pub(crate) store: RegistryStore,
    pub(crate) uploads: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadState>>>>>,
    pub limits: Limits,
    /// Garbage collection's clock, grace and run lock (see [`Registry::with_gc`]).
    pub(crate) gc: Arc<gc::GcState>,
    /// How long the URLs of download redirects last; None: blob GETs stream the bytes (see
    /// [`Registry::with_download_redirects`]).
    download_redirect: Option<std::time::Duration>,
}

impl Registry {
    /// A registry over the store's handles (see `wharf_store::handles`).
    pub fn new(store: RegistryStore, limits: Limits) -> Self {
        Registry {
            store,
            uploads: Arc::default(),
            limits,
            gc: Arc::default(),
            download_redirect: None,
        }
    }

    /// Answers blob GETs with a redirect to a URL of the object store, valid for `ttl`, as
    /// ACR redirects to its storage account and Distribution to S3: the bytes then travel
    /// from the bucket to the client without passing through a node. Only on object storage;
    /// the data directory streams as before.
    pub fn with_download_redirects(mut self, ttl: std::time::Duration) -> Self {
        self.download_redirect = Some(ttl);
        self
    }

    /// Where the client may read the whole blob instead, when download redirects are on and
    /// the blob is on object storage. Call only once the client's right to read the blob in the
    /// repository is checked: the URL carries that right until it expires. A URL that cannot be
    /// signed (Azure credentials without the account key) is logged, and the bytes are
    /// streamed instead.
    pub async fn blob_download_url(&self, digest: &Digest) -> Option<String> {
        let ttl = self.download_redirect?;
        match self.store.blobs.download_url(digest, ttl).await {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, "signing a blob download URL failed; streaming the blob instead");
                None
            }
        }
    }

    /// Whether a repository exists (it has held a blob link or a manifest and was not
    /// deleted).
    pub async fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        Ok(self.store.meta.repo_exists(repo).await?)
    }

    /// The registry policies (quarantine, retention).
    pub async fn policies(&self) -> Result<wharf_store::RegistryPolicies> {
        Ok(self.store.policies().get().await?)
    }

    /// Applies a partial update of the registry policies and returns the result.
    pub async fn update_policies(
        &self,
        patch: wharf_store::PoliciesPatch,
    ) -> Result<wharf_store::RegistryPolicies> {
        Ok(self.store.policies().update(patch).await?)
    }

    /// Whether the data volume is full right now (see [`wharf_store::SpaceGuard::is_full`]):
    /// the HTTP layer reports an internal failure seen at such a moment as out of space.
    pub fn storage_full(&self) -> bool {
        self.store.space.is_full()
    }

    // ---- blobs ------------------------------------------------------------------------

    /// A blob visible in `repo`, for a caller that may (`quarantine_reader`) or may not read
    /// quarantined images: a blob that, in `repo`, belongs only to quarantined images is
    /// disallowed as a pull of them by digest is (ACR's 405). The check costs nothing unless
    /// some manifest anywhere is quarantined.
    pub async fn readable_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        quarantine_reader: bool,
    ) -> Result<ReadableBlob> {
        let size = self.blob_size(repo, digest).await?;
        if !quarantine_reader
            && self
                .store
                .attributes()
                .blob_quarantined(repo, digest)
                .await?
        {
            return Err(RegistryError::Disallowed);
        }
        Ok(ReadableBlob {
            digest: digest.clone(),
            size,
        })
    }

    /// Size of a blob visible in `repo` (read locks checked; quarantine not: see
    /// [`Registry::readable_blob`]).
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        if !self.store.attributes().repo_readable(repo).await? {
            return Err(RegistryError::Disallowed);
        }
        match self.store.meta.blob_size(repo, digest).await? {
            Some(s) => {
                // A read keeps the link from garbage collection for a grace period: a push
                // may HEAD a blob now and reference it in a manifest later.
                self.touch_blob(repo, digest).await?;
                Ok(s as u64)
            }
            None => Err(RegistryError::BlobUnknown),
        }
    }

    /// Streams `len` bytes from `start` of a blob [`Registry::readable_blob`] found (the
    /// caller checked the range against its size). Its checks are not repeated: the content
    /// cannot go in between, since the check's touch keeps the link from garbage collection
    /// for the grace period, and on PostgreSQL each repeated check is a round trip per pull.
    pub async fn read_blob(
        &self,
        blob: &ReadableBlob,
        start: u64,
        len: u64,
    ) -> Result<wharf_store::blobs::ByteStream> {
        let (digest, size) = (&blob.digest, blob.size);
        let read = if start == 0 && len == size {
            self.store.blobs.read_whole(digest, size).await
        } else {
            self.store.blobs.read(digest, start, len).await
        };
        match read {
            Ok(s) => Ok(s),
            Err(StoreError::NotFound) => Err(RegistryError::BlobUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a blob from a repository. The content file stays until garbage collection,
    /// because other repositories may link the same content.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.store.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown)
        }
    }

    /// Cross-repository mount. Without `from`, the blob is looked for in every repository
    /// only when automatic mounting is on. Returns false when nothing was mounted.
    ///
    /// A mount reads the source: a blob the caller could not pull from there (a read-locked
    /// repository, or a blob only quarantined images reference, for a caller who is not a
    /// quarantine reader) is not mounted. The caller then gets what the OCI spec prescribes
    /// when a mount is not possible, a plain upload session (202), rather than ACR's 405: the
    /// client goes on to upload the bytes itself, which proves it has them, so nothing is
    /// read through the mount; and a 405 would tell it that the blob is there, behind a
    /// lock or a quarantine, which a 202 does not.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        automatic: bool,
        quarantine_reader: bool,
    ) -> Result<bool> {
        let size = match from {
            Some(src) => {
                if self.mountable_from(src, digest, quarantine_reader).await? {
                    self.store.meta.blob_size(src, digest).await?
                } else {
                    None
                }
            }
            None if automatic => self.mountable_anywhere(digest, quarantine_reader).await?,
            None => None,
        };
        let Some(size) = size else {
            return Ok(false);
        };
        self.check_writable(repo).await?;
        self.store.check_space()?;
        // The content's presence is checked in the linking transaction: content collected
        // meanwhile means no mount, and the client uploads the bytes (a plain 202).
        match self.link_published(repo, digest, size, None).await {
            Ok(()) => Ok(true),
            Err(RegistryError::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a mount may read `digest` from `src` (see [`Registry::mount_blob`]).
    async fn mountable_from(
        &self,
        src: &RepoName,
        digest: &Digest,
        quarantine_reader: bool,
    ) -> Result<bool> {
        let attrs = self.store.attributes();
        Ok(attrs.repo_readable(src).await?
            && (quarantine_reader || !attrs.blob_quarantined(src, digest).await?))
    }

    /// The size of `digest` in some repository a mount may read it from. With no lock and no
    /// quarantined manifest anywhere, any repository holding it will do (one query).
    async fn mountable_anywhere(
        &self,
        digest: &Digest,
        quarantine_reader: bool,
    ) -> Result<Option<i64>> {
        let attrs = self.store.attributes();
        if !attrs.any_locks() && !attrs.any_quarantined() {
            return Ok(self.store.meta.blob_size_anywhere(digest).await?);
        }
        for (src, size) in self.store.meta.blob_holders(digest).await? {
            if self.mountable_from(&src, digest, quarantine_reader).await? {
                return Ok(Some(size));
            }
        }
        Ok(None)
    }

    /// Refuses a blob push into a write-locked repository (manifest pushes check their locks
    /// inside their transaction instead).
    pub(crate) async fn check_writable(&self, repo: &RepoName) -> Result<()> {
        if self.store.attributes().repo_writable(repo).await? {
            Ok(())
        } else {
            Err(RegistryError::Disallowed)
        }
    }

    // ---- manifests ----------------------------------------------------------------------

    /// Stores a manifest under its digest, tags it, and raises push events, all in one
    /// transaction. `reference` is the URL's reference; `extra_tags` come from `?tag=`.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Vec<u8>,
        extra_tags: Vec<Tag>,
        req: &RequestInfo,
    ) -> Result<PutManifest> {
        if body.len() > self.limits.max_manifest_bytes {
            return Err(RegistryError::ManifestInvalid("manifest too large".into()));
        }
        self.store.check_space()?;
        let parsed = parse_manifest(&body, content_type).map_err(manifest_err)?;
        let mut tags = extra_tags;
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &body);
                if &actual != d {
                    return Err(RegistryError::DigestMismatch);
                }
                actual
            }
            Reference::Tag(t) => {
                tags.insert(0, t.clone());
                Digest::of(Algorithm::Sha256, &body)
            }
        };
        let mut seen = std::collections::HashSet::new();
        tags.retain(|t| seen.insert(t.clone()));
        if tags.len() > self.limits.max_tags_per_put {
            return Err(RegistryError::TooManyTags);
        }
        let chart = if parsed.is_helm_chart() {
            self.read_chart_meta(parsed.config.as_ref().map(|c| &c.digest))
                .await
        } else {
            None
        };
        let events = events::push_events(
            &self.store.hooks,
            repo,
            &digest,
            &parsed,
            body.len() as i64,
            &tags,
            chart.as_ref(),
            req,
        );
        let mut new = new_manifest(repo, &digest, &parsed, body, &tags);
        // The policy is cached in memory: no round trip on the push path.
        if self.store.policies().get().await?.quarantine_enabled {
            new.quarantine = Some(acr::held_push(&tags, req));
        }
        match self
            .store
            .meta
            .put_manifest(&new, &events, &self.store.hooks)
            .await
        {
            Ok(queued) => {
                if queued > 0 {
                    self.store.wake_dispatcher();
                }
            }
            Err(StoreError::MissingBlob(d)) | Err(StoreError::MissingManifest(d)) => {
                return Err(RegistryError::ManifestBlobUnknown(d));
            }
            Err(e @ StoreError::SizeMismatch { .. }) => {
                return Err(RegistryError::ManifestInvalid(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(PutManifest {
            digest,
            subject: parsed.subject.map(|s| s.digest),
            tags,
        })
    }

    /// Reads `name` and `version` from a Helm chart's config blob (small JSON).
    async fn read_chart_meta(&self, config: Option<&Digest>) -> Option<events::ChartMeta> {
        let data = self
            .store
            .blobs
            .read_small(config?, 1024 * 1024)
            .await
            .ok()??;
        let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
        Some(events::ChartMeta {
            name: v.get("name")?.as_str()?.to_owned(),
            version: v.get("version")?.as_str()?.to_owned(),
        })
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<ManifestOut> {
        self.get_manifest_as(repo, reference, with_body, false)
            .await
    }

    /// A pull by a caller that may (`quarantine_reader`) or may not read quarantined images.
    /// A quarantined image pulled by tag is "not found", by digest disallowed (ACR's answers);
    /// a read lock is disallowed for everyone.
    pub async fn get_manifest_as(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
        quarantine_reader: bool,
    ) -> Result<ManifestOut> {
        match self
            .store
            .meta
            .get_manifest(repo, reference, with_body)
            .await?
        {
            Some(m)
                if m.blocked.is_some()
                    && !(quarantine_reader
                        && m.blocked == Some(wharf_store::PullBlock::Quarantined)) =>
            {
                Err(match (m.blocked, reference) {
                    (Some(wharf_store::PullBlock::Quarantined), Reference::Tag(t)) => {
                        RegistryError::ManifestNotFound(t.to_string())
                    }
                    _ => RegistryError::Disallowed,
                })
            }
            Some(m) => Ok(ManifestOut {
                digest: m.digest,
                media_type: m.media_type,
                size: m.size,
                body: m.body,
            }),
            None => Err(RegistryError::ManifestUnknown),
        }
    }

    /// Deletes by digest (the manifest and its tags, raising `delete` events) or by tag (the
    /// tag only, which raises no event, as on ACR).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        req: &RequestInfo,
    ) -> Result<()> {
        match reference {
            Reference::Tag(t) => {
                if self.store.meta.delete_tag(repo, t).await? {
                    Ok(())
                } else {
                    Err(RegistryError::ManifestUnknown)
                }
            }
            Reference::Digest(d) => {
                // On a task of its own: once the delete commits, its events must be handed to
                // the dispatcher even if the client has gone.
                let (this, repo, d, req) = (self.clone(), repo.clone(), d.clone(), req.clone());
                match tokio::spawn(
                    async move { this.delete_manifest_digest(&repo, &d, &req).await },
                )
                .await
                {
                    Ok(r) => r.map(|_| ()),
                    Err(e) => Err(RegistryError::Io(io::Error::other(e))),
                }
            }
        }
    }

    async fn delete_manifest_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        req: &RequestInfo,
    ) -> Result<Vec<String>> {
        let config = self.store.meta.manifest_config(repo, digest).await?;
        let chart = match &config {
            Some(c)
                if c.media_type.as_deref() == Some(wharf_core::manifest::media::HELM_CONFIG) =>
            {
                self.read_chart_meta(c.digest.as_ref()).await
            }
            _ => None,
        };
        let hooks = self.store.hooks.clone();
        let res = self
            .store
            .meta
            .delete_manifest(repo, digest, &self.store.hooks, &|del| {
                events::delete_events(&hooks, repo, del, chart.as_ref(), req)
            })
            .await?;
        match res {
            Some((deleted, queued)) => {
                if queued > 0 {
                    self.store.wake_dispatcher();
                }
                Ok(deleted.tags)
            }
            None => Err(RegistryError::ManifestUnknown),
        }
    }

    /// Deletes a whole repository in one transaction, raising a `delete` event (and a
    /// `chart_delete` for charts) for every manifest in it.
    pub async fn delete_repository(
        &self,
        repo: &RepoName,
        req: &RequestInfo,
    ) -> Result<RepoDeleted> {
        // Chart names and versions live in config blobs; read them before the transaction (a
        // chart pushed meanwhile is still deleted with its `delete` event, just without the
        // `chart_delete`).
        let mut charts = HashMap::new();
        for d in self.store.meta.manifest_digests(repo).await? {
            if let Some(c) = self.store.meta.manifest_config(repo, &d).await?
                && c.media_type.as_deref() == Some(wharf_core::manifest::media::HELM_CONFIG)
                && let Some(meta) = self.read_chart_meta(c.digest.as_ref()).await
            {
                charts.insert(d, meta);
            }
        }
        let (this, repo, req) = (self.clone(), repo.clone(), req.clone());
        // On a task of its own, so the events of a committed delete are always handed over.
        let res = tokio::spawn(async move {
            let hooks = this.store.hooks.clone();
            this.store
                .meta
                .delete_repository(&repo, &this.store.hooks, &|del| {
                    events::delete_events(&hooks, &repo, del, charts.get(&del.digest), &req)
                })
                .await
                .map(|r| (r, this))
        })
        .await
        .map_err(|e| RegistryError::Io(io::Error::other(e)))??;
        let (Some((deleted, queued)), this) = res else {
            return Err(RegistryError::NameUnknown);
        };
        if queued > 0 {
            this.store.wake_dispatcher();
        }
        Ok(RepoDeleted {
            manifests_deleted: deleted.iter().map(|d| d.digest.to_string()).collect(),
            tags_deleted: deleted.into_iter().flat_map(|d| d.tags).collect(),
        })
    }

    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
        quarantine_reader: bool,
    ) -> Result<Vec<String>> {
        self.store
            .meta
            .list_tags(repo, last, n, quarantine_reader)
            .await?
            .ok_or(RegistryError::NameUnknown)
    }

    pub async fn catalog(&self, last: Option<&str>, n: Option<u32>) -> Result<Vec<String>> {
        Ok(self.store.meta.catalog(last, n).await?)
    }

    /// The referrers index for `subject`, optionally filtered by artifact type. Returns the
    /// index JSON; never fails for an unknown subject or repository (the spec forbids 404).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        quarantine_reader: bool,
    ) -> Result<Vec<u8>> {
        if !self.store.attributes().repo_readable(repo).await? {
            return Err(RegistryError::Disallowed);
        }
        let rows = self
            .store
            .meta
            .referrers(repo, subject, quarantine_reader)
            .await?;
        let manifests: Vec<serde_json::Value> = rows
            .into_iter()
            .filter(|r| artifact_type.is_none() || r.artifact_type.as_deref() == artifact_type)
            .map(|r| {
                let mut d = json!({
                    "mediaType": r.media_type,
                    "digest": r.digest.to_string(),
                    "size": r.size,
                });
                if let Some(at) = r.artifact_type {
                    d["artifactType"] = json!(at);
                }
                if let Some(a) = r
                    .annotations
                    .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
                {
                    d["annotations"] = a;
                }
                d
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": wharf_core::manifest::media::OCI_INDEX,
            "manifests": manifests,
        });
        Ok(serde_json::to_vec(&index).unwrap_or_default())
    }
}

fn manifest_err(e: ManifestError) -> RegistryError {
    RegistryError::ManifestInvalid(e.to_string())
}

fn new_manifest(
    repo: &RepoName,
    digest: &Digest,
    parsed: &ParsedManifest,
    body: Vec<u8>,
    tags: &[Tag],
) -> NewManifest {
    NewManifest {
        repo: repo.clone(),
        digest: digest.clone(),
        media_type: parsed.media_type.clone(),
        body,
        artifact_type: parsed.artifact_type.clone(),
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        annotations: parsed
            .annotations
            .as_ref()
            .and_then(|a| serde_json::to_string(a).ok()),
        config_media_type: parsed.config.as_ref().map(|c| c.media_type.clone()),
        config_digest: parsed.config.as_ref().map(|c| c.digest.clone()),
        required_blobs: parsed
            .required_blobs()
            .map(|d| (d.digest.clone(), d.size))
            .collect(),
        referenced_blobs: parsed
            .referenced_blobs()
            .map(|d| d.digest.clone())
            .collect(),
        required_manifests: parsed
            .required_manifests()
            .iter()
            .map(|d| (d.digest.clone(), d.size))
            .collect(),
        tags: tags.to_vec(),
        quarantine: None,
    }
}
