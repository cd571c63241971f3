//! Identities for access control, behind a handle of their own: registry-wide settings (admin
//! user, anonymous pull, sealed admin passwords, the management credential's hash), scope maps
//! and tokens. Nothing else in the store reads these tables, and this handle reads no others,
//! so the identities can move to another backend without touching the registry or webhooks.
//!
//! Values arrive already sealed or hashed: this module never sees a secret in clear.

use sqlx::{Row, SqlitePool};

use crate::StoreError;
use crate::db::WriteTx;
use crate::meta::now_ms;

#[derive(Debug, Clone)]
pub struct Identities {
    read: SqlitePool,
    write: SqlitePool,
}

impl crate::SqliteStore {
    /// The narrow handle to the identity tables (access control).
    pub fn identities(&self) -> Identities {
        Identities::new(self.meta.read.clone(), self.meta.write.clone())
    }
}

/// A user-defined scope map as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeMapRow {
    pub name: String,
    pub description: String,
    pub actions: Vec<String>,
    pub created_at: i64,
}

/// One stored token password: only its hash.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PasswordRow {
    pub name: String,
    pub hash: String,
    pub created_at: i64,
    /// Unix ms; None: never expires.
    pub expiry: Option<i64>,
}

impl std::fmt::Debug for PasswordRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordRow")
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub name: String,
    pub scope_map: String,
    pub enabled: bool,
    pub passwords: Vec<PasswordRow>,
    pub created_at: i64,
}

impl Identities {
    pub(crate) fn new(read: SqlitePool, write: SqlitePool) -> Self {
        Identities { read, write }
    }

    // ---- settings --------------------------------------------------------------------

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query("SELECT value FROM auth_settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.read)
            .await?
            .map(|r| r.get(0)))
    }

    /// Sets several settings in one transaction.
    pub async fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        for (k, v) in pairs {
            sqlx::query(
                "INSERT INTO auth_settings (key, value) VALUES (?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Sets settings only where they are not set yet (first start); returns whether it wrote.
    pub async fn init_settings(&self, pairs: &[(&str, &str)]) -> Result<bool, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let mut wrote = false;
        for (k, v) in pairs {
            wrote |= sqlx::query("INSERT OR IGNORE INTO auth_settings (key, value) VALUES (?, ?)")
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        }
        tx.commit().await?;
        Ok(wrote)
    }

    pub async fn all_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query("SELECT key, value FROM auth_settings")
            .fetch_all(&self.read)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    // ---- scope maps --------------------------------------------------------------------

    pub async fn scope_maps(&self) -> Result<Vec<ScopeMapRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, description, actions, created_at FROM scope_maps ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(scope_map_row).collect()
    }

    pub async fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>, StoreError> {
        sqlx::query("SELECT name, description, actions, created_at FROM scope_maps WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(scope_map_row)
            .transpose()
    }

    /// Creates or replaces a scope map; returns true if it was created.
    pub async fn put_scope_map(&self, m: &ScopeMapRow) -> Result<bool, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let existed = sqlx::query("SELECT 1 FROM scope_maps WHERE name = ?")
            .bind(&m.name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        sqlx::query(
            "INSERT INTO scope_maps (name, description, actions, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
             actions = excluded.actions",
        )
        .bind(&m.name)
        .bind(&m.description)
        .bind(json(&m.actions))
        .bind(m.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(!existed)
    }

    /// Deletes a scope map no token uses. `Conflict` if a token uses it; false if absent.
    pub async fn delete_scope_map(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let used = sqlx::query("SELECT 1 FROM tokens WHERE scope_map = ? LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if used {
            tx.rollback().await;
            return Err(StoreError::Conflict);
        }
        let n = sqlx::query("DELETE FROM scope_maps WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    // ---- tokens ------------------------------------------------------------------------

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, scope_map, status, passwords, created_at FROM tokens ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(token_row).collect()
    }

    pub async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError> {
        sqlx::query(
            "SELECT name, scope_map, status, passwords, created_at FROM tokens WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .as_ref()
        .map(token_row)
        .transpose()
    }

    /// Creates or replaces a token; returns true if it was created.
    pub async fn put_token(&self, t: &TokenRow) -> Result<bool, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let existed = sqlx::query("SELECT 1 FROM tokens WHERE name = ?")
            .bind(&t.name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        sqlx::query(
            "INSERT INTO tokens (name, scope_map, status, passwords, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET scope_map = excluded.scope_map, \
             status = excluded.status, passwords = excluded.passwords",
        )
        .bind(&t.name)
        .bind(&t.scope_map)
        .bind(if t.enabled { "enabled" } else { "disabled" })
        .bind(json(&t.passwords))
        .bind(t.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(!existed)
    }

    pub async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let n = sqlx::query("DELETE FROM tokens WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

fn scope_map_row(r: &sqlx::sqlite::SqliteRow) -> Result<ScopeMapRow, StoreError> {
    Ok(ScopeMapRow {
        name: r.get(0),
        description: r.get(1),
        actions: serde_json::from_str(r.get::<&str, _>(2))
            .map_err(|_| StoreError::Corrupt("bad scope map actions in database".into()))?,
        created_at: r.get(3),
    })
}

fn token_row(r: &sqlx::sqlite::SqliteRow) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        name: r.get(0),
        scope_map: r.get(1),
        enabled: r.get::<&str, _>(2) == "enabled",
        passwords: serde_json::from_str(r.get::<&str, _>(3))
            .map_err(|_| StoreError::Corrupt("bad token passwords in database".into()))?,
        created_at: r.get(4),
    })
}

/// Milliseconds now, for callers that stamp rows.
pub fn now() -> i64 {
    now_ms()
}
