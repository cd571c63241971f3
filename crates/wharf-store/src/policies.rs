//! Registry policies behind a handle of their own: the quarantine policy and the retention
//! policy for untagged manifests (ARM's `properties.policies`). This handle reads and writes
//! only `registry_policies`, so the policies can move to another backend with no other change.
//!
//! The push path asks "is quarantine on?" for every manifest, so the row is cached in memory
//! and the cache is replaced on every write through this handle. One process owns a data
//! directory, so nothing else can change the row behind the cache.

use std::sync::{Arc, RwLock};

use sqlx::{Row, SqlitePool};

use crate::StoreError;
use crate::db::WriteTx;
use crate::meta::now_ms;

/// The stored policies. Defaults are ACR's: quarantine disabled, retention disabled, 7 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryPolicies {
    pub quarantine_enabled: bool,
    pub retention_enabled: bool,
    /// Days after which an untagged manifest is deleted (ACR allows 0..=365).
    pub retention_days: u32,
    /// Unix ms of the last change to the retention policy; None: never changed.
    pub retention_updated_at: Option<i64>,
}

impl Default for RegistryPolicies {
    fn default() -> Self {
        RegistryPolicies {
            quarantine_enabled: false,
            retention_enabled: false,
            retention_days: 7,
            retention_updated_at: None,
        }
    }
}

/// A partial update: `None` leaves a field as it is (ARM PATCH semantics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoliciesPatch {
    pub quarantine_enabled: Option<bool>,
    pub retention_enabled: Option<bool>,
    pub retention_days: Option<u32>,
}

pub(crate) type PolicyCache = Arc<RwLock<Cached>>;

/// The policies in memory, and how often an update has touched them. A read that missed the
/// cache keeps what it read only if no update began or finished meanwhile: otherwise it may
/// have read the row before an update committed and store it after the update stored its
/// own value, leaving the old policies cached (quarantine off after it was turned on) until
/// the next change.
#[derive(Debug, Default)]
pub(crate) struct Cached {
    value: Option<RegistryPolicies>,
    generation: u64,
}

#[derive(Debug, Clone)]
pub struct Policies {
    read: SqlitePool,
    write: SqlitePool,
    cache: PolicyCache,
}

impl crate::SqliteStore {
    /// The narrow handle to the registry policies.
    pub fn policies(&self) -> Policies {
        Policies {
            read: self.meta.read.clone(),
            write: self.meta.write.clone(),
            cache: self.policy_cache.clone(),
        }
    }
}

impl Policies {
    /// The current policies (from memory after the first read).
    pub async fn get(&self) -> Result<RegistryPolicies, StoreError> {
        let generation = match self.cached() {
            (Some(p), _) => return Ok(p),
            (None, g) => g,
        };
        let row = sqlx::query(
            "SELECT quarantine_enabled, retention_enabled, retention_days, retention_updated_at \
             FROM registry_policies WHERE id = 1",
        )
        .fetch_optional(&self.read)
        .await?;
        let p = match row {
            Some(r) => policies_row(&r)?,
            None => RegistryPolicies::default(),
        };
        self.fill_cache(p, generation);
        Ok(p)
    }

    /// Applies a partial update in one transaction and returns the result. A change to either
    /// retention field stamps `retention_updated_at`.
    pub async fn update(&self, patch: PoliciesPatch) -> Result<RegistryPolicies, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let r = sqlx::query(
            "SELECT quarantine_enabled, retention_enabled, retention_days, retention_updated_at \
             FROM registry_policies WHERE id = 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let mut p = match r {
            Some(r) => policies_row(&r)?,
            None => RegistryPolicies::default(),
        };
        if let Some(q) = patch.quarantine_enabled {
            p.quarantine_enabled = q;
        }
        if patch.retention_enabled.is_some() || patch.retention_days.is_some() {
            p.retention_enabled = patch.retention_enabled.unwrap_or(p.retention_enabled);
            p.retention_days = patch.retention_days.unwrap_or(p.retention_days);
            p.retention_updated_at = Some(now_ms());
        }
        sqlx::query(
            "INSERT INTO registry_policies \
             (id, quarantine_enabled, retention_enabled, retention_days, retention_updated_at) \
             VALUES (1, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET quarantine_enabled = excluded.quarantine_enabled, \
             retention_enabled = excluded.retention_enabled, \
             retention_days = excluded.retention_days, \
             retention_updated_at = excluded.retention_updated_at",
        )
        .bind(p.quarantine_enabled)
        .bind(p.retention_enabled)
        .bind(i64::from(p.retention_days))
        .bind(p.retention_updated_at)
        .execute(&mut *tx)
        .await?;
        // Forget the cache before committing: a failed commit must not leave a value that was
        // never stored, and a reader between here and the store below rereads the table.
        self.forget_cache();
        tx.commit().await?;
        self.store_cache(p);
        Ok(p)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cached> {
        // The value is replaced whole under the lock: a panic elsewhere cannot leave it torn.
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached policies, if any, and the generation they (or their absence) belong to.
    fn cached(&self) -> (Option<RegistryPolicies>, u64) {
        let g = self.cache.read().unwrap_or_else(|p| p.into_inner());
        (g.value, g.generation)
    }

    /// Caches what a read found, unless an update touched the cache since the read began.
    fn fill_cache(&self, p: RegistryPolicies, read_at: u64) {
        let mut g = self.write_cache();
        if g.generation == read_at {
            g.value = Some(p);
        }
    }

    /// An update's own value, stored after its commit.
    fn store_cache(&self, p: RegistryPolicies) {
        let mut g = self.write_cache();
        g.generation = g.generation.wrapping_add(1);
        g.value = Some(p);
    }

    fn forget_cache(&self) {
        let mut g = self.write_cache();
        g.generation = g.generation.wrapping_add(1);
        g.value = None;
    }
}

fn policies_row(r: &sqlx::sqlite::SqliteRow) -> Result<RegistryPolicies, StoreError> {
    let days: i64 = r.try_get(2)?;
    Ok(RegistryPolicies {
        quarantine_enabled: r.try_get(0)?,
        retention_enabled: r.try_get(1)?,
        retention_days: u32::try_from(days)
            .map_err(|_| StoreError::Corrupt(format!("retention_days {days}")))?,
        retention_updated_at: r.try_get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn policies_default_to_acrs_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::StoreOptions::default();
        {
            let store = crate::SqliteStore::open(dir.path(), &opts).await.unwrap();
            let p = store.policies();
            assert_eq!(p.get().await.unwrap(), RegistryPolicies::default());
            let after = p
                .update(PoliciesPatch {
                    quarantine_enabled: Some(true),
                    retention_days: Some(30),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(after.quarantine_enabled);
            assert!(!after.retention_enabled);
            assert_eq!(after.retention_days, 30);
            assert!(after.retention_updated_at.is_some());
            // A quarantine-only change leaves the retention stamp alone.
            let again = p
                .update(PoliciesPatch {
                    quarantine_enabled: Some(false),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(again.retention_updated_at, after.retention_updated_at);
            p.update(PoliciesPatch {
                quarantine_enabled: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let store = crate::SqliteStore::open(dir.path(), &opts).await.unwrap();
        let p = store.policies().get().await.unwrap();
        assert!(p.quarantine_enabled);
        assert_eq!(p.retention_days, 30);
    }

    /// A read that missed the cache, read the row before an update committed, and finishes
    /// after the update stored its value must not put the old policies back: a push would then
    /// go unquarantined with quarantine on, until the next change. (Seen as a flaky
    /// `quarantine::blobs_of_a_quarantined_image_are_not_served`, whose policy change raced the
    /// retention task's first read.) The read's two halves are driven by hand, in that order.
    #[tokio::test]
    async fn a_read_that_raced_an_update_never_caches_the_old_policies() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(dir.path(), &crate::StoreOptions::default())
            .await
            .unwrap();
        let p = store.policies();
        // The read misses the cache and reads the row: quarantine off.
        let (cached, read_at) = p.cached();
        assert_eq!(cached, None);
        let old = RegistryPolicies::default();
        // The update commits and caches quarantine on.
        p.update(PoliciesPatch {
            quarantine_enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
        // The read finishes.
        p.fill_cache(old, read_at);
        assert!(p.get().await.unwrap().quarantine_enabled);
        // A read that raced nothing fills the cache as before.
        let q = store.policies();
        q.forget_cache();
        let (_, read_at) = q.cached();
        q.fill_cache(old, read_at);
        assert_eq!(q.cached().0, Some(old));
    }
}
