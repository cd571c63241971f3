//! Wharf's storage: the content-addressed blob store on the filesystem and the metadata store
//! in SQLite (repositories, blob links, manifests, tags, upload sessions, webhook definitions,
//! the event outbox, the delivery queue and the delivery history).
//!
//! It owns durability and transactions. It knows nothing of HTTP, and must not call
//! `wharf-registry`, `wharf-hooks` or `wharf-http`: they call it, and meet only here.

pub mod blobs;
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
    Db(#[from] sqlx::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
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
