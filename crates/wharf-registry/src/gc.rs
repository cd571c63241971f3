//! Online garbage collection: one run removes the blob links no manifest references and
//! nothing has used within the grace period, then the blob content no repository links, then
//! abandoned upload sessions. The registry keeps serving throughout; the storage side and
//! the argument that a concurrent push never loses a blob are in `wharf_store::gc`.
//!
//! This module also owns the link's "last used" time that the argument rests on: upload
//! finish and mount set it ([`Registry::link_published`]); blob HEAD and GET refresh it
//! ([`Registry::touch_blob`]), writing only once per [`REFRESH_FRACTION`] of the grace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_core::{Digest, RepoName};
use wharf_store::{GcOptions, StoreError};

use crate::retention::{Clock, SystemClock};
use crate::{Registry, RegistryError, Result};

/// Default grace period: a blob pushed (or last read) this long ago and referenced by no
/// manifest may go. Long enough for the slowest push between its first blob and its manifest.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Default time between scheduled runs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// The shortest grace accepted: below it, a push's own blobs could go between its upload
/// and its manifest on any busy server.
pub const MIN_GRACE: Duration = Duration::from_secs(1);
/// A blob read writes the link's last use only when the stored one is older than this part
/// of the grace: a link so refreshed outlives the read by at least 3/4 of the grace, and
/// blob HEAD, the hottest read, almost never writes.
pub const REFRESH_FRACTION: i64 = 4;

/// The settings and the serialisation of runs.
pub(crate) struct GcState {
    clock: Arc<dyn Clock>,
    grace_ms: i64,
    /// Upload sessions abandoned this long are removed by a run.
    upload_expiry_ms: i64,
    /// One run at a time (the scheduled one and `wharf gc`): their figures stay apart.
    running: tokio::sync::Mutex<()>,
}

impl Default for GcState {
    fn default() -> Self {
        GcState {
            clock: Arc::new(SystemClock),
            grace_ms: DEFAULT_GRACE.as_millis() as i64,
            upload_expiry_ms: 24 * 3600 * 1000,
            running: tokio::sync::Mutex::new(()),
        }
    }
}

/// What one run removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    pub links_removed: u64,
    pub blobs_removed: u64,
    pub bytes_reclaimed: u64,
    pub uploads_removed: u64,
    pub duration_ms: u64,
}

impl Registry {
    /// Sets the clock and grace period garbage collection reads (the server's; tests inject
    /// a clock), and the age at which a run removes an abandoned upload session. `grace` is
    /// at least [`MIN_GRACE`] (the configuration checks it).
    pub fn with_gc(
        mut self,
        clock: Arc<dyn Clock>,
        grace: Duration,
        upload_expiry: Duration,
    ) -> Self {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.gc = Arc::new(GcState {
            clock,
            grace_ms: ms(grace.max(MIN_GRACE)),
            upload_expiry_ms: ms(upload_expiry),
            running: tokio::sync::Mutex::new(()),
        });
        self
    }

    fn gc_now(&self) -> i64 {
        self.gc.clock.now_ms()
    }

    /// One garbage collection (dry: what would go, nothing deleted).
    pub async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
        let upload_expiry_ms = self.gc.upload_expiry_ms;
        let _one = self.gc.running.lock().await;
        let started = Instant::now();
        let figures = self
            .store
            .gc()
            .collect(GcOptions {
                now_ms: self.gc_now(),
                grace_ms: self.gc.grace_ms,
                dry_run,
            })
            .await?;
        let uploads_removed = if dry_run {
            self.stale_upload_count(upload_expiry_ms).await?
        } else {
            self.expire_uploads(upload_expiry_ms).await?.expired
        } as u64;
        let r = GcReport {
            dry_run,
            links_removed: figures.links_removed,
            blobs_removed: figures.blobs_removed,
            bytes_reclaimed: figures.bytes_reclaimed,
            uploads_removed,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        // Every run, scheduled or asked for, leaves its figures in the log.
        tracing::info!(
            dry_run = r.dry_run,
            links_removed = r.links_removed,
            blobs_removed = r.blobs_removed,
            bytes_reclaimed = r.bytes_reclaimed,
            uploads_removed = r.uploads_removed,
            duration_ms = r.duration_ms,
            "garbage collection finished"
        );
        Ok(r)
    }

    /// How many sessions [`Registry::expire_uploads`] would remove now (its age rules, without
    /// the "busy right now" exception, which only a real run can see).
    async fn stale_upload_count(&self, max_age_ms: i64) -> Result<usize> {
        let e = self.expirable_uploads(max_age_ms).await?;
        Ok(e.orphans.len() + e.stale.len())
    }

    /// Records a read of a linked blob (HEAD or GET), so garbage collection keeps the link for
    /// a grace period from now: a push may HEAD a blob and reference it later. `BlobUnknown`
    /// if the link was collected (or removed) meanwhile.
    pub(crate) async fn touch_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let refresh = (self.gc.grace_ms / REFRESH_FRACTION).max(1);
        match self
            .store
            .gc()
            .touch(repo, digest, self.gc_now(), refresh)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegistryError::BlobUnknown),
            // The touch is bookkeeping, and a read must go on when the disk is full or the
            // write fails: the link was just read. Missing it only leaves the link's last use
            // older; a manifest that references the blob later is still checked against the
            // link in its own transaction, so nothing acknowledged can lose it.
            Err(e) => {
                tracing::warn!(%repo, %digest, error = %e, "could not record a blob's use");
                Ok(())
            }
        }
    }

    /// Links published content into `repo` (a finished upload's `session`, or a mount), with
    /// a fresh last use; the content's presence is checked in the linking transaction (see
    /// `wharf_store::gc`). `Unavailable` if a concurrent collection removed the content: the
    /// client uploads again.
    pub(crate) async fn link_published(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: i64,
        session: Option<&str>,
    ) -> Result<()> {
        match self
            .store
            .gc()
            .link_published(repo, digest, size, self.gc_now(), session)
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::Unavailable(m)) => Err(RegistryError::Unavailable(m)),
            Err(e) => Err(e.into()),
        }
    }
}
