//! Identities for access control on PostgreSQL: the same settings, scope maps and tokens as
//! `crate::identities` on SQLite, in the same tables. Values arrive sealed or hashed.
//!
//! Differences from SQLite, where one writer made each read-then-write atomic:
//! - `init_settings` runs under a transaction advisory lock: nodes starting together over a
//!   new database run it one after the other, so exactly one writes the first settings (and
//!   prints the credentials it made).
//! - "Created or replaced" is told by the upsert itself (`xmax = 0` for an inserted row), so
//!   two nodes creating one name at once do not both report a creation.
//! - A scope map delete takes the map's row `FOR UPDATE` before looking for tokens that use
//!   it, and a token put takes the row of the map it names `FOR KEY SHARE` before writing:
//!   of a delete and a token put at once, one waits for the other, so the delete either sees
//!   the token (`Conflict`) or the put comes after it. Names compare case-insensitively
//!   (the schema's `wharf_nocase` collation), as with SQLite's NOCASE.
//! - Every write sends a notification on [`super::CHANNEL_IDENTITIES`] inside its transaction, for
//!   the nodes whose access control keeps a snapshot of these tables (admin user, anonymous
//!   pull, cached token logins) to read them again when another node changed them.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::Pg;
use crate::StoreError;
use crate::handles::IdentityStore;
use crate::identities::{ScopeMapRow, TokenRow, json};

/// The advisory lock `init_settings` runs under ("wharfini" in ASCII).
const INIT_LOCK: i64 = 0x7768_6172_6669_6e69;

#[derive(Debug)]
pub(crate) struct PgIdentities {
    pg: Pg,
}

impl PgIdentities {
    pub(crate) fn new(pg: Pg) -> Self {
        PgIdentities { pg }
    }
}

fn scope_map_row(r: &PgRow) -> Result<ScopeMapRow, StoreError> {
    Ok(ScopeMapRow {
        name: r.get(0),
        description: r.get(1),
        actions: serde_json::from_str(r.get::<&str, _>(2))
            .map_err(|_| StoreError::Corrupt("bad scope map actions in database".into()))?,
        created_at: r.get(3),
    })
}

fn token_row(r: &PgRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        name: r.get(0),
        scope_map: r.get(1),
        enabled: r.get::<&str, _>(2) == "enabled",
        passwords: serde_json::from_str(r.get::<&str, _>(3))
            .map_err(|_| StoreError::Corrupt("bad token passwords in database".into()))?,
        created_at: r.get(4),
    })
}

#[async_trait]
impl IdentityStore for PgIdentities {
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query("SELECT value FROM auth_settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pg.pool)
                .await?
                .map(|r| r.get(0)),
        )
    }

    async fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        for (k, v) in pairs {
            sqlx::query(
                "INSERT INTO auth_settings (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        super::notify(&mut tx, super::CHANNEL_IDENTITIES).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets the settings not set yet, as on SQLite; true if it wrote any. The advisory lock
    /// makes a second node starting at the same time wait, then find them set.
    async fn init_settings(&self, pairs: &[(&str, &str)]) -> Result<bool, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(INIT_LOCK)
            .execute(&mut *tx)
            .await?;
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        let values: Vec<&str> = pairs.iter().map(|(_, v)| *v).collect();
        let wrote = sqlx::query(
            "INSERT INTO auth_settings (key, value) \
             SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&keys)
        .bind(&values)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if wrote {
            super::notify(&mut tx, super::CHANNEL_IDENTITIES).await?;
        }
        tx.commit().await?;
        Ok(wrote)
    }

    async fn all_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query("SELECT key, value FROM auth_settings")
            .fetch_all(&self.pg.pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn scope_maps(&self) -> Result<Vec<ScopeMapRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, description, actions, created_at FROM scope_maps ORDER BY name",
        )
        .fetch_all(&self.pg.pool)
        .await?;
        rows.iter().map(scope_map_row).collect()
    }

    async fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>, StoreError> {
        sqlx::query("SELECT name, description, actions, created_at FROM scope_maps WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pg.pool)
            .await?
            .as_ref()
            .map(scope_map_row)
            .transpose()
    }

    async fn put_scope_map(&self, m: &ScopeMapRow) -> Result<bool, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let created: bool = sqlx::query(
            "INSERT INTO scope_maps (name, description, actions, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
             actions = excluded.actions RETURNING (xmax = 0)",
        )
        .bind(&m.name)
        .bind(&m.description)
        .bind(json(&m.actions))
        .bind(m.created_at)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        super::notify(&mut tx, super::CHANNEL_IDENTITIES).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn delete_scope_map(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let found = sqlx::query("SELECT 1 FROM scope_maps WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !found {
            tx.rollback().await?;
            return Ok(false);
        }
        let used = sqlx::query("SELECT 1 FROM tokens WHERE scope_map = $1 LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if used {
            tx.rollback().await?;
            return Err(StoreError::Conflict);
        }
        let n = sqlx::query("DELETE FROM scope_maps WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        super::notify(&mut tx, super::CHANNEL_IDENTITIES).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, scope_map, status, passwords, created_at FROM tokens ORDER BY name",
        )
        .fetch_all(&self.pg.pool)
        .await?;
        rows.iter().map(token_row).collect()
    }

    async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError> {
        sqlx::query(
            "SELECT name, scope_map, status, passwords, created_at FROM tokens WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pg.pool)
        .await?
        .as_ref()
        .map(token_row)
        .transpose()
    }

    async fn put_token(&self, t: &TokenRow) -> Result<bool, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        // Held until the token is written: a delete of this map waits, then sees the token
        // (system scope maps have no row, and nothing deletes them).
        sqlx::query("SELECT 1 FROM scope_maps WHERE name = $1 FOR KEY SHARE")
            .bind(&t.scope_map)
            .fetch_optional(&mut *tx)
            .await?;
        let created: bool = sqlx::query(
            "INSERT INTO tokens (name, scope_map, status, passwords, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET scope_map = excluded.scope_map, \
             status = excluded.status, passwords = excluded.passwords RETURNING (xmax = 0)",
        )
        .bind(&t.name)
        .bind(&t.scope_map)
        .bind(if t.enabled { "enabled" } else { "disabled" })
        .bind(json(&t.passwords))
        .bind(t.created_at)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        super::notify(&mut tx, super::CHANNEL_IDENTITIES).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let n = sqlx::query("DELETE FROM tokens WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            super::notify(&mut tx, super::CHANNEL_IDENTITIES).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}
