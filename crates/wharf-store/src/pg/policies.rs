//! The registry policies on PostgreSQL: the one row of `registry_policies`, as on SQLite
//! (`crate::policies`).
//!
//! Difference from SQLite: no cache. SQLite keeps the row in memory because one process owns
//! it; here another node may change it, and a notification would reach this node only after
//! that node's client heard the change succeed (a push just after enabling quarantine must be
//! quarantined, whichever node takes it). `get` reads the row: one primary-key lookup, once
//! per manifest push. `update` locks the row (`FOR UPDATE`), so two nodes patching different
//! fields at once both keep their change.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::Pg;
use crate::StoreError;
use crate::db::now_ms;
use crate::handles::PolicyStore;
use crate::policies::{PoliciesPatch, RegistryPolicies};

#[derive(Debug)]
pub(crate) struct PgPolicies {
    pg: Pg,
}

impl PgPolicies {
    pub(crate) fn new(pg: Pg) -> Self {
        PgPolicies { pg }
    }
}

const SELECT: &str = "SELECT quarantine_enabled, retention_enabled, retention_days, \
     retention_updated_at FROM registry_policies WHERE id = 1";

fn policies_row(r: &PgRow) -> Result<RegistryPolicies, StoreError> {
    let days: i64 = r.try_get(2)?;
    Ok(RegistryPolicies {
        quarantine_enabled: r.try_get(0)?,
        retention_enabled: r.try_get(1)?,
        retention_days: u32::try_from(days)
            .map_err(|_| StoreError::Corrupt(format!("retention_days {days}")))?,
        retention_updated_at: r.try_get(3)?,
    })
}

#[async_trait]
impl PolicyStore for PgPolicies {
    async fn get(&self) -> Result<RegistryPolicies, StoreError> {
        match sqlx::query(SELECT).fetch_optional(&self.pg.pool).await? {
            Some(r) => policies_row(&r),
            None => Ok(RegistryPolicies::default()),
        }
    }

    /// A partial update in one transaction; a change to either retention field stamps
    /// `retention_updated_at` (as on SQLite).
    async fn update(&self, patch: PoliciesPatch) -> Result<RegistryPolicies, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        // The migration inserts the row; a database where it was removed gets it back.
        sqlx::query("INSERT INTO registry_policies (id) VALUES (1) ON CONFLICT (id) DO NOTHING")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("{SELECT} FOR UPDATE"))
            .fetch_one(&mut *tx)
            .await?;
        let mut p = policies_row(&row)?;
        if let Some(q) = patch.quarantine_enabled {
            p.quarantine_enabled = q;
        }
        if patch.retention_enabled.is_some() || patch.retention_days.is_some() {
            p.retention_enabled = patch.retention_enabled.unwrap_or(p.retention_enabled);
            p.retention_days = patch.retention_days.unwrap_or(p.retention_days);
            p.retention_updated_at = Some(now_ms());
        }
        sqlx::query(
            "UPDATE registry_policies SET quarantine_enabled = $1, retention_enabled = $2, \
             retention_days = $3, retention_updated_at = $4 WHERE id = 1",
        )
        .bind(p.quarantine_enabled)
        .bind(p.retention_enabled)
        .bind(i64::from(p.retention_days))
        .bind(p.retention_updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(p)
    }
}
