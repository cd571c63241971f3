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

pub(crate) type PolicyCache = Arc<RwLock<Option<RegistryPolicies>>>;

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
        if let Some(p) = self.cached() {
            return Ok(p);
        }
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
        self.store_cache(p);
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

    fn cached(&self) -> Option<RegistryPolicies> {
        self.cache.read().map(|g| *g).unwrap_or(None)
    }

    fn store_cache(&self, p: RegistryPolicies) {
        if let Ok(mut g) = self.cache.write() {
            *g = Some(p);
        }
    }

    fn forget_cache(&self) {
        if let Ok(mut g) = self.cache.write() {
            *g = None;
        }
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
}
