//! Wharf's storage: the content-addressed blob store on the filesystem and the metadata store
//! in SQLite (repositories, blob links, manifests, tags, upload sessions, webhook definitions,
//! the event outbox, the delivery queue and the delivery history).
//!
//! It owns durability and transactions. It knows nothing of HTTP, and must not call
//! `wharf-registry`, `wharf-hooks` or `wharf-http`: they call it, and meet only here.

pub mod attrs;
pub mod blobs;
mod db;
pub mod hooks;
pub mod identities;
pub mod meta;
pub mod outbox;
pub mod policies;
pub mod seal;
pub mod space;

use std::path::Path;
use std::sync::Arc;

pub use attrs::{
    Attributes, Flags, FlagsPatch, ManifestAttrs, ManifestPatch, RepoAttrs, RepoPatch, TagAttrs,
};
pub use blobs::BlobStore;
pub use identities::Identities;
pub use meta::{
    DeletedManifest, ManifestConfig, ManifestRow, Meta, NewManifest, PullBlock, Referrer, UploadRow,
};
pub use outbox::{FastLane, HookSnapshot, OutboxEvent, WebhookCache};
pub use policies::{Policies, PoliciesPatch, RegistryPolicies};
pub use seal::Sealer;
pub use space::{FreeSpaceFloor, SpaceGuard};
use tokio::sync::Notify;
use wharf_core::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(sqlx::Error),
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    /// The data volume is full (ENOSPC, EDQUOT, SQLITE_FULL) or below the configured floor.
    /// Nothing was stored; the same request succeeds once space returns.
    #[error("out of storage space")]
    OutOfSpace,
    #[error("blob {0} is not in the repository")]
    MissingBlob(Digest),
    #[error("manifest {0} is not in the repository")]
    MissingManifest(Digest),
    #[error("descriptor of {digest} states size {stated}, but it is {stored} bytes")]
    SizeMismatch {
        digest: Digest,
        stated: i64,
        stored: i64,
    },
    #[error("not found")]
    NotFound,
    /// A lock (`writeEnabled`/`deleteEnabled` false) forbids the change; nothing was written.
    #[error("the operation is disallowed by a lock")]
    Disallowed,
    #[error("already exists")]
    Conflict,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if is_out_of_space(&e) {
            StoreError::OutOfSpace
        } else {
            StoreError::Io(e)
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // SQLite's primary result code 13; the driver reports the extended code, which
            // for SQLITE_FULL has no variants.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("13") => StoreError::OutOfSpace,
            sqlx::Error::Io(io) if is_out_of_space(io) => StoreError::OutOfSpace,
            _ => StoreError::Db(e),
        }
    }
}

/// ENOSPC or EDQUOT: the volume (or the user's quota on it) is full.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Both stores, opened under one data directory, plus the webhook snapshot and the signal
/// that wakes the dispatcher when the outbox gains rows.
#[derive(Debug, Clone)]
pub struct Store {
    pub meta: Meta,
    pub blobs: BlobStore,
    pub hooks: WebhookCache,
    pub outbox_signal: Arc<Notify>,
    pub region: String,
    /// The free-space floor of the data volume.
    pub space: SpaceGuard,
    /// Seals secrets at rest (webhook URIs and headers, admin passwords).
    pub sealer: Sealer,
    /// The registry policies as last read or written (see [`Policies`]).
    policy_cache: policies::PolicyCache,
}

/// How to open a data directory.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Region of this server (webhooks fire for their region's events).
    pub region: String,
    pub floor: FreeSpaceFloor,
    /// The master key for secrets at rest, base64; None: `wharf.key` in the data directory.
    pub secret_key: Option<String>,
    /// The registry's ARM id, the `topic`/`source` of deliveries in the Event Grid and
    /// CloudEvents formats (empty: the default identity's).
    pub registry_id: String,
}

impl Store {
    /// Opens the data directory, creating it and running migrations as needed.
    pub async fn open(data_dir: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        let db = data_dir.join("wharf.db");
        private_files(data_dir, &db)?;
        let sealer = Sealer::load_or_create(data_dir, opts.secret_key.as_deref())?;
        let meta = Meta::open(&db).await?;
        let blobs = BlobStore::open(data_dir).await?;
        let store = Store {
            meta,
            blobs,
            hooks: WebhookCache::new(if opts.registry_id.is_empty() {
                wharf_core::ArmIdentity::default().registry_id()
            } else {
                opts.registry_id.clone()
            }),
            outbox_signal: Arc::new(Notify::new()),
            region: opts.region.clone(),
            space: SpaceGuard::new(data_dir, opts.floor),
            sealer,
            policy_cache: Default::default(),
        };
        let sealed = store.seal_plaintext_webhooks().await?;
        if sealed > 0 {
            tracing::info!(
                count = sealed,
                "sealed the secrets of webhooks stored in plaintext"
            );
        }
        store.reload_hooks().await?;
        store.reconcile_uploads().await?;
        Ok(store)
    }

    /// Tells the dispatcher that new deliveries may be due.
    pub fn wake_dispatcher(&self) {
        self.outbox_signal.notify_one();
    }

    /// Ok if a write may go ahead under the free-space floor.
    pub fn check_space(&self) -> Result<(), StoreError> {
        self.space.check()
    }

    /// Removes what a crash can leave of upload sessions: a file without a row (killed
    /// between a cancel's two steps) or an unfinished row without a file (killed between a
    /// start's two steps). Finished rows have no file by design and stay until expiry.
    async fn reconcile_uploads(&self) -> Result<(), StoreError> {
        let rows = self.meta.upload_ids().await?;
        let files = self.blobs.upload_files().await?;
        for f in &files {
            if !rows.iter().any(|(id, _)| id == f) {
                tracing::info!(session = %f, "removing an upload file without a session");
                self.blobs.remove_upload(f).await?;
            }
        }
        for (id, finished) in &rows {
            if !finished && !files.contains(id) {
                tracing::info!(session = %id, "removing an upload session without a file");
                self.meta.delete_upload(id).await?;
            }
        }
        Ok(())
    }
}

/// The data directory holds secrets (webhook URIs and headers in the database): it is made
/// 0700, and the database with its WAL and shared-memory files 0600, whatever the umask.
fn private_files(data_dir: &Path, db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
    // Created here, empty, before SQLite opens it: SQLite creates files 0644 and gives the
    // WAL and -shm files the database file's mode.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}
