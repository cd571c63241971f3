//! Wharf's storage: the content-addressed blob store on the filesystem and the metadata store
//! in SQLite (repositories, blob links, manifests, tags, upload sessions, webhook definitions,
//! the event outbox, the delivery queue and the delivery history).
//!
//! It owns durability and transactions. It knows nothing of HTTP, and must not call
//! `wharf-registry`, `wharf-hooks` or `wharf-http`: they call it, and meet only here.

pub mod blobs;
mod db;
pub mod hooks;
pub mod meta;
pub mod outbox;

use std::path::Path;
use std::sync::Arc;

pub use blobs::BlobStore;
pub use meta::{
    DeletedManifest, ManifestConfig, ManifestRow, Meta, NewManifest, Referrer, UploadRow,
};
pub use outbox::{FastLane, HookSnapshot, OutboxEvent, WebhookCache};
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
    #[error("not found")]
    NotFound,
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
}

impl Store {
    /// Opens the data directory, creating it and running migrations as needed.
    pub async fn open(data_dir: &Path, region: &str) -> Result<Self, StoreError> {
        tokio::fs::create_dir_all(data_dir).await?;
        let meta = Meta::open(&data_dir.join("wharf.db")).await?;
        let blobs = BlobStore::open(data_dir).await?;
        let store = Store {
            meta,
            blobs,
            hooks: WebhookCache::default(),
            outbox_signal: Arc::new(Notify::new()),
            region: region.to_owned(),
        };
        store.reload_hooks().await?;
        Ok(store)
    }

    /// Tells the dispatcher that new deliveries may be due.
    pub fn wake_dispatcher(&self) {
        self.outbox_signal.notify_one();
    }
}
