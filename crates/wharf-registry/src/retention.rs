//! The retention policy for untagged manifests (ARM's `policies.retentionPolicy`): a pass
//! deletes every untagged manifest last updated more than `days` ago, raising `delete` events
//! in each deletion's transaction, as ACR does. Manifests a lock keeps (`writeEnabled` or
//! `deleteEnabled` false), children of an index in the same repository, subjects of a referrer,
//! manifests attached to a subject (signatures, SBOMs), and quarantined or failed manifests
//! (whose push was never announced) stay. Whether an index or a referrer references a
//! candidate is decided inside the delete's transaction, so one pushed while the pass runs
//! saves it.
//!
//! The clock is injected ([`Clock`]), so the policy is testable without waiting days.

use wharf_core::{Digest, RepoName};

use crate::events::{self, RequestInfo};
use crate::{Registry, RegistryError, Result};

/// Where the retention pass reads the time.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl Registry {
    /// One retention pass at `now_ms`: returns the digests deleted. Nothing when the policy is
    /// off.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<Vec<(RepoName, Digest)>> {
        let p = self.store.policies().get().await?;
        if !p.retention_enabled {
            return Ok(Vec::new());
        }
        let cutoff = now_ms.saturating_sub(i64::from(p.retention_days).saturating_mul(DAY_MS));
        let candidates = self.store.attributes().stale_untagged(cutoff).await?;
        let mut deleted = Vec::new();
        for c in candidates {
            let (Ok(repo), Ok(digest)) = (RepoName::parse(&c.repo), Digest::parse(&c.digest))
            else {
                continue;
            };
            match self.delete_stale(&repo, &digest, cutoff).await {
                Ok(true) => deleted.push((repo, digest)),
                Ok(false) | Err(RegistryError::Disallowed) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    async fn delete_stale(&self, repo: &RepoName, digest: &Digest, cutoff: i64) -> Result<bool> {
        let config = self.store.meta.manifest_config(repo, digest).await?;
        let chart = match &config {
            Some(c)
                if c.media_type.as_deref() == Some(wharf_core::manifest::media::HELM_CONFIG) =>
            {
                self.read_chart_meta(c.digest.as_ref()).await
            }
            _ => None,
        };
        // ACR's retention deletes are the registry's own: no client request behind them.
        let req = RequestInfo {
            id: uuid::Uuid::new_v4().to_string(),
            host: String::new(),
            ..Default::default()
        };
        let hooks = self.store.hooks.clone();
        let res = self
            .store
            .meta
            .delete_stale_manifest(repo, digest, cutoff, &self.store.hooks, &|del| {
                events::delete_events(&hooks, repo, del, chart.as_ref(), &req)
            })
            .await?;
        match res {
            Some((_, queued)) => {
                if queued > 0 {
                    self.store.wake_dispatcher();
                }
                tracing::info!(repository = %repo, %digest, "retention policy deleted an untagged manifest");
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
