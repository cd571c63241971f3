//! Wharf's storage: the content-addressed blob store (the data directory, S3 or Azure Blob,
//! behind one boundary: range-stream reads, upload-session writes) and the metadata store
//! (repositories, blob links, manifests, tags, upload sessions, webhook definitions, the event
//! outbox, the delivery queue and the delivery history) in SQLite or PostgreSQL, and garbage
//! collection's side of both (`gc.rs`, `pg/gc.rs`).
//!
//! Consumers hold the trait-based handles of `handles.rs` (bundled as [`RegistryStore`] for
//! the registry, [`HookStore`] for the webhook service, an [`IdentityStore`] for access
//! control), never [`Store`]: SQLite implements them (`sqlite.rs` delegates to `meta.rs`,
//! `attrs.rs`, `policies.rs`, `gc.rs`, `hooks.rs`, `identities.rs`), and so does PostgreSQL
//! (`pg/`), which several nodes may share; [`Store`] is what only the server's wiring opens
//! (choosing the backend) and hands out.
//!
//! It owns durability and transactions. It knows nothing of HTTP, and must not call
//! `wharf-registry`, `wharf-hooks` or `wharf-http`: they call it, and meet only here. Which
//! webhooks want an event is not its business: the outbox asks an [`EventSubscribers`] that
//! the webhook service implements and the server injects, and learns only webhook names.

pub mod attrs;
mod binding;
pub mod blobs;
mod db;
pub mod gc;
pub mod handles;
pub mod hooks;
pub mod identities;
pub mod meta;
pub mod outbox;
mod pg;
pub mod policies;
mod reserve;
pub mod seal;
pub mod space;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

pub use attrs::{
    Attributes, Flags, FlagsPatch, ManifestAttrs, ManifestPatch, RepoAttrs, RepoPatch, TagAttrs,
};
pub use blobs::{BlobInfo, BlobLocation, BlobStore};
pub use gc::{Gc, GcFigures, GcOptions, SqliteGc};
pub use handles::{
    AttributeStore, DeliveryStore, GcStore, HookStore, IdentityStore, PolicyStore, RegistryMeta,
    RegistryStore, WebhookStore,
};
pub use identities::Identities;
pub use meta::{
    DeletedManifest, ManifestConfig, ManifestRow, Meta, NewManifest, PullBlock, Referrer, UploadRow,
};
pub use outbox::{EventSubscribers, FastLane, OutboxEvent, Subscribers};
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
    /// The blob backend (object storage) failed or could not be reached, after retries:
    /// nothing was stored by the failed call, and the client may retry (503).
    #[error("blob storage unavailable: {0}")]
    Backend(String),
    /// The blob store's configuration cannot be used (refused at start-up).
    #[error("blob store: {0}")]
    Config(String),
    /// The metadata database (PostgreSQL) cannot be reached or dropped the connection, or the
    /// transaction lost a race it can retry (deadlock, serialization): nothing was committed
    /// by the failed call, and the client may retry (503).
    #[error("metadata database unavailable: {0}")]
    DbUnavailable(String),
    /// The metadata database's configuration cannot be used, or the database cannot be
    /// reached at start-up (refused at start-up; the message names the setting).
    #[error("database: {0}")]
    Database(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Another process holds the data directory (its lock file is locked).
    #[error(
        "the data directory {dir} is in use by another Wharf process{holder}; \
         one process owns a data directory (stop the other one, or give this one another --data-dir)",
        dir = .dir.display(),
        holder = .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        dir: std::path::PathBuf,
        pid: Option<u32>,
    },
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
            // PostgreSQL's disk_full: its volume is full; nothing was committed.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("53100") => {
                StoreError::OutOfSpace
            }
            sqlx::Error::Io(io) if is_out_of_space(io) => StoreError::OutOfSpace,
            // A database server that cannot be reached or went away (PostgreSQL: class 08
            // connection exceptions, 57P0x shutdowns, 53300 too many connections) or a
            // transaction that lost a retryable race (40001, 40P01).
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::DbUnavailable(e.to_string()),
            sqlx::Error::Database(d)
                if d.code().is_some_and(|c| {
                    c.starts_with("08")
                        || c.starts_with("57P0")
                        || matches!(c.as_ref(), "53300" | "40001" | "40P01")
                }) =>
            {
                StoreError::DbUnavailable(d.message().to_owned())
            }
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

/// The SQLite backend, opened over one data directory: its metadata and blob stores, plus the outbox's handle on the webhook
/// service ("who wants this event", injected at wiring) and the signal that wakes the
/// dispatcher when the outbox gains rows.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) meta: Meta,
    pub(crate) blobs: BlobStore,
    /// Who wants which event: answered by the webhook service, attached at start-up. No
    /// webhook secrets are held here.
    pub(crate) hooks: Subscribers,
    pub(crate) outbox_signal: Arc<Notify>,
    pub region: String,
    /// The free-space floor of the data volume.
    pub(crate) space: SpaceGuard,
    /// Seals secrets at rest (webhook URIs and headers, admin passwords).
    pub(crate) sealer: Sealer,
    /// The registry policies as last read or written (see [`Policies`]).
    policy_cache: policies::PolicyCache,
    /// The locked `wharf.lock`: held as long as any clone of the store lives, released by the
    /// kernel when the process ends (even by kill -9).
    _dir_lock: Arc<std::fs::File>,
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
    /// This node's `host:port`, the `source.addr` of event data (empty: none is shown).
    pub source_addr: String,
    /// Where blobs live (default: the data directory).
    pub blob_store: BlobLocation,
    /// The metadata database: None is SQLite in the data directory; Some is a PostgreSQL
    /// URL (`postgres://…`), which several nodes may share.
    pub database: Option<String>,
    /// Most connections this node opens to PostgreSQL.
    pub database_max_connections: u32,
    /// Bytes of node-local copies of blobs on object storage (`blob-cache/` in the data
    /// directory, see [`blobs::cache`]); 0 keeps none. Unused on the data directory.
    pub blob_cache: u64,
}

impl StoreOptions {
    /// Who wants which event, with the registry identity and node that events name.
    fn subscribers(&self) -> Subscribers {
        Subscribers::new(
            if self.registry_id.is_empty() {
                wharf_core::ArmIdentity::default().registry_id()
            } else {
                self.registry_id.clone()
            },
            // A new instance id per process: ACR's `instanceID` names a running node.
            wharf_core::payload::Source {
                addr: self.source_addr.clone(),
                instance_id: uuid::Uuid::new_v4().to_string(),
            },
        )
    }
}

/// An opened store: what the server's wiring holds and hands out as the consumers' handles.
/// Which backend serves the metadata is decided here, once, from [`StoreOptions::database`].
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(pg::PgStore),
}

impl Store {
    /// Opens the store: SQLite in `data_dir`, or PostgreSQL when `opts.database` is set (the
    /// data directory then holds this node's lock, its free-space floor and, with blobs on
    /// the filesystem, the blobs).
    pub async fn open(data_dir: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        let backend = match &opts.database {
            None => Backend::Sqlite(SqliteStore::open(data_dir, opts).await?),
            Some(url) => Backend::Postgres(pg::PgStore::open(data_dir, url, opts).await?),
        };
        Ok(Store { backend })
    }

    /// The sealer of secrets at rest (access control seals admin passwords with it).
    pub fn sealer(&self) -> Sealer {
        match &self.backend {
            Backend::Sqlite(s) => s.sealer(),
            Backend::Postgres(p) => p.sealer.clone(),
        }
    }

    /// The blob store (tools and tests inspect it; the registry gets it in its handles).
    pub fn blobs(&self) -> &BlobStore {
        match &self.backend {
            Backend::Sqlite(s) => s.blobs(),
            Backend::Postgres(p) => &p.blobs,
        }
    }

    /// Closes the database connections (shutdown).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }

    /// The registry's handles.
    pub fn registry_store(&self) -> RegistryStore {
        match &self.backend {
            Backend::Sqlite(s) => s.registry_store(),
            Backend::Postgres(p) => p.registry_store(),
        }
    }

    /// The webhook service's handles.
    pub fn hook_store(&self) -> HookStore {
        match &self.backend {
            Backend::Sqlite(s) => s.hook_store(),
            Backend::Postgres(p) => p.hook_store(),
        }
    }

    /// The access-control handle.
    pub fn identity_store(&self) -> Arc<dyn IdentityStore> {
        match &self.backend {
            Backend::Sqlite(s) => s.identity_store(),
            Backend::Postgres(p) => p.identity_store(),
        }
    }

    /// Fired when another node changed the identities (admin user, settings, tokens, scope
    /// maps): access control must read them again. None for a backend one process owns.
    pub fn identities_changed(&self) -> Option<Arc<Notify>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.identities_changed()),
        }
    }

    /// The delivery queue and history (tools and tests read it; the webhook service gets it
    /// in its handles).
    pub fn deliveries(&self) -> Arc<dyn DeliveryStore> {
        self.hook_store().deliveries
    }

    /// The registry policies (tools and tests set them; the registry gets them in its
    /// handles).
    pub fn policies(&self) -> Arc<dyn PolicyStore> {
        self.registry_store().policies
    }

    /// Which backend holds the metadata ("sqlite" or "postgres"), for logs.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

impl SqliteStore {
    /// Opens the data directory, creating it and running migrations as needed.
    pub async fn open(data_dir: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        // An object store's settings are checked before the data directory is touched.
        let object = match &opts.blob_store {
            BlobLocation::DataDir => None,
            l => Some(blobs::object::ObjectBlobs::open(l)?),
        };
        if object.is_none() {
            // Before wharf.db exists: a PostgreSQL database's blobs are not this one's.
            binding::refuse_sqlite_on_bound_dir(data_dir)?;
        }
        let db = data_dir.join("wharf.db");
        private_files(data_dir, &db)?;
        let dir_lock = lock_data_dir(data_dir)?;
        let sealer = Sealer::load_or_create(data_dir, opts.secret_key.as_deref())?;
        let space = SpaceGuard::new(data_dir, opts.floor);
        let meta = match Meta::open(&db).await {
            Ok(m) => m,
            Err(e) if reserve::release_if_full(data_dir, &space) => {
                tracing::warn!(
                    error = %e,
                    "the data volume is full: released the 1 MiB space reserve (wharf.reserve) \
                     to open the database; writes fail until space is freed"
                );
                Meta::open(&db).await?
            }
            Err(e) => return Err(e),
        };
        reserve::ensure(data_dir, &space);
        let blobs = match object {
            None => BlobStore::Fs(blobs::fs::FsBlobs::open(data_dir).await?),
            Some(o) => {
                // Reached and authorised: a wrong bucket or refused keys stop start-up here.
                o.check().await?;
                // The prefix serves this database and no other (see `binding`): checked before
                // start-up's upload clean-up, which trusts that.
                binding::bind(&meta, &o).await?;
                BlobStore::Object(blobs::object::with_cache(o, data_dir, opts, &space).await?)
            }
        };
        let store = SqliteStore {
            meta,
            blobs,
            hooks: opts.subscribers(),
            outbox_signal: Arc::new(Notify::new()),
            region: opts.region.clone(),
            space,
            sealer,
            policy_cache: Default::default(),
            _dir_lock: Arc::new(dir_lock),
        };
        let sealed = store.webhooks().seal_plaintext_webhooks().await?;
        if sealed > 0 {
            tracing::info!(
                count = sealed,
                "sealed the secrets of webhooks stored in plaintext"
            );
        }
        store.reconcile_uploads().await?;
        Ok(store)
    }

    /// The sealer of secrets at rest (access control seals admin passwords with it).
    pub fn sealer(&self) -> Sealer {
        self.sealer.clone()
    }

    /// The blob store (tools and tests inspect it; the registry gets it in its handles).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Closes the database connections (shutdown).
    pub async fn close(&self) {
        self.meta.close().await;
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
        let files: Vec<String> = self
            .blobs
            .upload_sessions()
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
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
/// Takes the data directory's lock, so that a second process on the same directory is refused
/// with a clear error instead of silently sharing it: the caches in this process (webhook
/// snapshot, policies, blob links) and the start-up recovery of uploads and delivery leases all
/// assume that nothing else writes. An advisory `flock` on `wharf.lock`; the holder's pid is
/// written into the file only to name it in the error.
pub(crate) fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("wharf.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StoreError::Locked {
                dir: data_dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

pub(crate) fn private_dir(data_dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

fn private_files(data_dir: &Path, db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    private_dir(data_dir)?;
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

#[cfg(test)]
mod lock_tests {
    #[tokio::test]
    async fn a_second_open_of_a_data_directory_in_use_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::StoreOptions::default();
        let first = crate::Store::open(dir.path(), &opts).await.unwrap();
        let err = crate::Store::open(dir.path(), &opts).await.unwrap_err();
        assert!(
            matches!(err, crate::StoreError::Locked { pid: Some(p), .. } if p == std::process::id())
        );
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("in use by another Wharf process"), "{msg}");
        // A clone keeps the lock; dropping every clone releases it.
        let clone = first.clone();
        drop(first);
        assert!(crate::Store::open(dir.path(), &opts).await.is_err());
        drop(clone);
        crate::Store::open(dir.path(), &opts).await.unwrap();
    }
}
