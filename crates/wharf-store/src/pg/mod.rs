//! The PostgreSQL backend: the same handles as SQLite's (`handles.rs`), over one database that
//! several nodes share.
//!
//! What changes from SQLite, and why:
//! - Nothing is owned by one process. Start-up does not reconcile upload sessions (another
//!   node may be between a session's two steps; expiry cleans what a crash leaves), and
//!   in-memory answers that SQLite keeps (blob links, lock and quarantine flags, policies)
//!   are read from the database, where every node sees every commit.
//! - Claims use `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never wait on each other
//!   and never claim one delivery twice; leases are node-owned as on SQLite.
//! - `LISTEN/NOTIFY` carries what other nodes must hear: `wharf_outbox` wakes every node's
//!   dispatcher after deliveries were queued, `wharf_webhooks` makes every node read its
//!   webhook snapshot again, `wharf_identities` makes access control read its snapshot of
//!   the admin user and settings again and forget cached logins. A notification is sent inside the writing transaction, so it is
//!   delivered only if that commits. After a lost listening connection every signal fires
//!   once, since notifications sent meanwhile are lost.
//! - Linking published content and garbage collection's deletes serialise on a transaction
//!   advisory lock per digest instead of a per-process gate (see `gc.rs`).
//! - Secrets are sealed with `auth.secret_key`, which must be set: every node opens what
//!   another sealed, and the database keeps a value sealed by the first node to check it.

mod attrs;
mod gc;
mod hooks;
mod identities;
mod meta;
mod outbox;
mod policies;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use tokio::sync::Notify;

use crate::blobs::{self, BlobLocation, BlobStore};
use crate::handles::{HookStore, IdentityStore, RegistryStore};
use crate::outbox::{FastLane, Subscribers};
use crate::seal::Sealer;
use crate::space::SpaceGuard;
use crate::{StoreError, StoreOptions};

/// The migrations, by number (see `migrations/postgres/`). A new one only ever goes at the end.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_schema.sql"),
    include_str!("../../migrations/postgres/0002_data_dir_binding.sql"),
];

/// The advisory lock migrations run under ("wharf" in ASCII): nodes starting together over a
/// new database run each migration once.
const MIGRATION_LOCK: i64 = 0x0077_6861_7266;

/// Channels of `LISTEN/NOTIFY`.
pub(crate) const CHANNEL_OUTBOX: &str = "wharf_outbox";
pub(crate) const CHANNEL_WEBHOOKS: &str = "wharf_webhooks";
pub(crate) const CHANNEL_IDENTITIES: &str = "wharf_identities";

/// What the handles of this backend share: the pool, the sealer, this node's fast lane and
/// the signals other nodes' notifications fire.
#[derive(Debug, Clone)]
pub(crate) struct Pg {
    pub(crate) pool: PgPool,
    pub(crate) sealer: Sealer,
    pub(crate) lane: Arc<FastLane>,
    pub(crate) signals: Signals,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Signals {
    /// Wakes this node's dispatcher.
    pub(crate) outbox: Arc<Notify>,
    /// Makes this node read its webhook snapshot again.
    pub(crate) webhooks: Arc<Notify>,
    /// Makes this node's access control read its identities again.
    pub(crate) identities: Arc<Notify>,
}

/// Sends a notification on `channel`, delivered to every listening node when the
/// transaction `conn` is in commits (and never if it rolls back).
pub(crate) async fn notify(conn: &mut PgConnection, channel: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(conn)
        .await?;
    Ok(())
}

/// The PostgreSQL backend as opened by one node.
#[derive(Debug, Clone)]
pub(crate) struct PgStore {
    pub(crate) pg: Pg,
    pub(crate) blobs: BlobStore,
    pub(crate) hooks: Subscribers,
    pub(crate) sealer: Sealer,
    space: SpaceGuard,
    listener: Arc<ListenerTask>,
    _dir_lock: Arc<std::fs::File>,
}

/// The listening task, stopped with the last clone of the store.
#[derive(Debug)]
struct ListenerTask(tokio::task::JoinHandle<()>);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    pub(crate) async fn open(
        data_dir: &Path,
        url: &str,
        opts: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let object = match &opts.blob_store {
            BlobLocation::DataDir => None,
            l => Some(blobs::object::ObjectBlobs::open(l)?),
        };
        let Some(key) = opts.secret_key.as_deref().filter(|k| !k.is_empty()) else {
            return Err(StoreError::Database(
                "auth.secret_key (WHARF_SECRET_KEY) must be set with a PostgreSQL database: \
                 every node seals and opens the secrets stored there with it, so all nodes \
                 need the same key"
                    .into(),
            ));
        };
        let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            // The URL may hold a password: only the parse error's kind is shown.
            tracing::debug!(error = %e, "the database URL did not parse");
            StoreError::Database(
                "storage.database is not a valid PostgreSQL URL (postgres://user@host:port/db)"
                    .into(),
            )
        })?;
        crate::private_dir(data_dir)?;
        let dir_lock = crate::lock_data_dir(data_dir)?;
        let sealer = Sealer::load_or_create(data_dir, Some(key))?;
        let space = SpaceGuard::new(data_dir, opts.floor);
        let max = opts.database_max_connections.max(2);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            // A database that is down answers 503 within this, not after a client timeout.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "connecting to PostgreSQL failed");
                StoreError::Database(format!(
                    "cannot connect to the PostgreSQL database of storage.database: {}",
                    redacted(&e)
                ))
            })?;
        migrate(&pool).await?;
        check_key(&pool, &sealer).await?;
        let signals = Signals::default();
        let pg = Pg {
            pool: pool.clone(),
            sealer: sealer.clone(),
            lane: Arc::new(FastLane::default()),
            signals: signals.clone(),
        };
        let blobs = match object {
            None => {
                let fs = blobs::fs::FsBlobs::open(data_dir).await?;
                bind_data_dir(&pool, data_dir).await?;
                BlobStore::Fs(fs)
            }
            Some(o) => {
                o.check().await?;
                let id: String = sqlx::query("SELECT store_id FROM store_identity WHERE one = 1")
                    .fetch_one(&pool)
                    .await?
                    .get(0);
                let links: bool = sqlx::query("SELECT EXISTS (SELECT 1 FROM repo_blobs)")
                    .fetch_one(&pool)
                    .await?
                    .get(0);
                crate::binding::bind_id(&id, links, &o).await?;
                BlobStore::Object(blobs::object::with_cache(o, data_dir, opts, &space).await?)
            }
        };
        if let BlobStore::Fs(_) = &blobs {
            remove_orphan_upload_files(&pool, &blobs).await?;
        }
        let listener = Arc::new(ListenerTask(tokio::spawn(listen(pool, signals))));
        Ok(PgStore {
            pg,
            blobs,
            hooks: opts.subscribers(),
            sealer,
            space,
            listener,
            _dir_lock: Arc::new(dir_lock),
        })
    }

    pub(crate) async fn close(&self) {
        self.listener.0.abort();
        self.pg.pool.close().await;
    }

    pub(crate) fn registry_store(&self) -> RegistryStore {
        RegistryStore {
            meta: Arc::new(meta::PgMeta::new(self.pg.clone(), self.blobs.clone())),
            attrs: Arc::new(attrs::PgAttrs::new(self.pg.clone())),
            policies: Arc::new(policies::PgPolicies::new(self.pg.clone())),
            gc: Arc::new(gc::PgGc::new(self.pg.clone(), self.blobs.clone())),
            blobs: self.blobs.clone(),
            hooks: self.hooks.clone(),
            space: self.space.clone(),
            outbox_signal: self.pg.signals.outbox.clone(),
            shared: true,
        }
    }

    pub(crate) fn hook_store(&self) -> HookStore {
        HookStore {
            webhooks: Arc::new(hooks::PgWebhooks::new(self.pg.clone())),
            deliveries: Arc::new(hooks::PgDeliveries::new(
                self.pg.clone(),
                self.hooks.registry_id().into(),
            )),
            hooks: self.hooks.clone(),
            lane: self.pg.lane.clone(),
            outbox_signal: self.pg.signals.outbox.clone(),
            space: self.space.clone(),
            webhooks_changed: self.pg.signals.webhooks.clone(),
        }
    }

    pub(crate) fn identities_changed(&self) -> Arc<Notify> {
        self.pg.signals.identities.clone()
    }

    pub(crate) fn identity_store(&self) -> Arc<dyn IdentityStore> {
        Arc::new(identities::PgIdentities::new(self.pg.clone()))
    }
}

/// Removes upload files that have no session row (a crash between a cancel's two steps).
/// Only with blobs in the data directory: those files are this node's alone, and no request
/// is in flight yet. On object storage another node may be between a session's two steps;
/// expiry removes what a crash leaves there. Rows without files are left to expiry too: with
/// a shared database they may be another node's.
async fn remove_orphan_upload_files(pool: &PgPool, blobs: &BlobStore) -> Result<(), StoreError> {
    let rows: std::collections::HashSet<String> = sqlx::query("SELECT id FROM uploads")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    for s in blobs.upload_sessions().await? {
        if !rows.contains(&s.id) {
            tracing::info!(session = %s.id, "removing an upload file without a session");
            blobs.remove_upload(&s.id).await?;
        }
    }
    Ok(())
}

/// A connection error without the URL's password (sqlx does not print it, but the error's
/// text is the driver's to choose).
fn redacted(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::PoolTimedOut => "timed out".into(),
        _ => "connection failed".into(),
    }
}

/// Runs the migrations not yet applied, each in its own transaction, under an advisory lock.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result = migrate_locked(&mut conn).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    result?;
    unlocked?;
    Ok(())
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS wharf_migrations (\
         version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await?;
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM wharf_migrations")
        .fetch_one(&mut *conn)
        .await?
        .get(0);
    if applied > MIGRATIONS.len() as i64 {
        return Err(StoreError::Database(format!(
            "the database was migrated by a newer Wharf (schema version {applied}, this one \
             knows {}): upgrade this node",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO wharf_migrations (version) VALUES ($1)")
            .bind(i as i64 + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = i + 1, "migrated the PostgreSQL database");
    }
    Ok(())
}

/// Binds the data directory that holds the blobs to this database, or refuses to start (see
/// `binding::decide_dir`). Before anything reads or removes files there: start-up removes
/// upload files the database does not know.
async fn bind_data_dir(pool: &PgPool, dir: &Path) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT store_id, data_dir_id FROM store_identity WHERE one = 1")
        .fetch_one(pool)
        .await?;
    let (database, bound): (String, Option<String>) = (row.get(0), row.get(1));
    let file = crate::binding::read_dir_binding(dir)?;
    let had_file = file.is_some();
    let holds_sqlite = dir.join("wharf.db").try_exists()?;
    let Some(claim) =
        crate::binding::decide_dir(&database, bound.as_deref(), file, holds_sqlite, dir)?
    else {
        return Ok(());
    };
    if !had_file {
        crate::binding::write_dir_binding(dir, &claim)?;
    }
    // Claimed only if no other directory was meanwhile; answers the directory that holds it.
    let now: String = sqlx::query_scalar(
        "UPDATE store_identity SET data_dir_id = COALESCE(data_dir_id, $1) WHERE one = 1 \
         RETURNING data_dir_id",
    )
    .bind(&claim.dir_id)
    .fetch_one(pool)
    .await?;
    if now == claim.dir_id {
        tracing::info!(dir = %dir.display(), "bound the data directory's blobs to this database");
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "another data directory than {} was bound to this database at the same time: with \
             blobs in a data directory one node serves a database; several nodes need object \
             storage (storage.blob_store)",
            dir.display()
        )))
    }
}

/// The value sealed to check the key (not a secret: only proof of which key sealed it).
const KEY_CHECK: &str = "wharf-key-check";

/// Refuses a node whose secret key is not the one the database's secrets are sealed with.
async fn check_key(pool: &PgPool, sealer: &Sealer) -> Result<(), StoreError> {
    let sealed = sealer.seal(KEY_CHECK)?;
    // The first node to start writes its check; later nodes read it.
    sqlx::query("UPDATE store_identity SET key_check = $1 WHERE one = 1 AND key_check IS NULL")
        .bind(&sealed)
        .execute(pool)
        .await?;
    let stored: String = sqlx::query("SELECT key_check FROM store_identity WHERE one = 1")
        .fetch_one(pool)
        .await?
        .get(0);
    match sealer.open(&stored) {
        Ok(v) if v == KEY_CHECK => Ok(()),
        _ => Err(StoreError::Database(
            "auth.secret_key is not the key this database's secrets were sealed with: every \
             node over one database needs the same key"
                .into(),
        )),
    }
}

/// Listens for other nodes' notifications and fires this node's signals. After a lost
/// connection (notifications sent meanwhile are lost) every signal fires once.
async fn listen(pool: PgPool, signals: Signals) {
    let fire_all = |s: &Signals| {
        s.outbox.notify_one();
        s.webhooks.notify_one();
        s.identities.notify_one();
    };
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listening to PostgreSQL failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener
            .listen_all([CHANNEL_OUTBOX, CHANNEL_WEBHOOKS, CHANNEL_IDENTITIES])
            .await
        {
            tracing::warn!(error = %e, "listening to PostgreSQL failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        fire_all(&signals);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match n.channel() {
                    CHANNEL_OUTBOX => signals.outbox.notify_one(),
                    CHANNEL_WEBHOOKS => signals.webhooks.notify_one(),
                    CHANNEL_IDENTITIES => signals.identities.notify_one(),
                    _ => {}
                },
                // The connection was lost and is re-established by the next call.
                Ok(None) => fire_all(&signals),
                Err(e) => {
                    tracing::warn!(error = %e, "listening to PostgreSQL failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}
