//! Registry metadata in SQLite: repositories, blob links, manifests, tags, upload sessions.
//!
//! Reads go through a pool of connections; writes go through a single connection, because
//! SQLite has one writer at a time and a dedicated connection avoids `SQLITE_BUSY` storms.
//! The database runs in WAL mode with `synchronous=FULL`: a change is on disk before the
//! client hears it succeeded.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use wharf_core::{Digest, Reference, RepoName, Tag};

use crate::StoreError;
use crate::db::{Held, HeldConn, HeldTx, WriteTx};
use crate::outbox::{Enqueued, FastLane, OutboxEvent, Subscribers};

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_registry.sql"),
    include_str!("../migrations/sqlite/0002_webhooks.sql"),
    include_str!("../migrations/sqlite/0003_auth.sql"),
    include_str!("../migrations/sqlite/0004_signing.sql"),
    include_str!("../migrations/sqlite/0005_payload_format.sql"),
    include_str!("../migrations/sqlite/0006_policies.sql"),
    // No 0007: the number was kept for the management plane, which needed none. Migrations
    // run by position (PRAGMA user_version), so a new one only ever goes at the end.
    include_str!("../migrations/sqlite/0007_attributes.sql"),
    crate::gc::MIGRATION,
    include_str!("../migrations/sqlite/0009_node_leases.sql"),
    include_str!("../migrations/sqlite/0010_store_id.sql"),
];

pub(crate) use crate::db::now_ms;

#[derive(Debug, Clone)]
pub struct Meta {
    pub(crate) read: SqlitePool,
    pub(crate) write: SqlitePool,
    /// The writer task (see [`put_writer`]): manifest puts, and other short transactions
    /// that would otherwise take its connection away ([`Meta::write_on_writer`]).
    puts: mpsc::Sender<WriterJob>,
    links: Arc<LinkCache>,
    /// Where committed deliveries are handed to this process's dispatcher.
    pub lane: Arc<FastLane>,
    /// Whether any lock exists (see `attrs`): the push path checks locks only then.
    pub(crate) locks: Arc<crate::attrs::LockFlag>,
    /// Recent link uses written (see `gc::Gc::touch`).
    pub(crate) touched: Arc<crate::gc::Touched>,
    /// Serialises linking published content with deleting unlinked content (see `gc`, point
    /// 2): links hold it shared, garbage collection's sweep exclusively. Kept apart from the
    /// SQLite writer so that neither holds the writer across an object-store round trip.
    pub(crate) content_gate: Arc<tokio::sync::RwLock<()>>,
}

/// Most blob links kept in memory; past it the cache starts again empty.
const LINK_CACHE_MAX: usize = 50_000;

/// Which blobs are linked in which repository, and their sizes: blob HEAD and GET are the
/// registry's hottest reads, and answering them from memory spares a database round trip.
///
/// Positive entries only. A link is removed from the database first and from the cache second,
/// and `generation` moves with every removal, so a lookup that read the database before a
/// removal cannot put the stale link back.
#[derive(Debug, Default)]
struct LinkCache {
    map: std::sync::RwLock<HashMap<String, i64>>,
    generation: AtomicU64,
}

pub(crate) fn link_key(repo: &RepoName, digest: &Digest) -> String {
    format!("{repo}@{digest}")
}

impl LinkCache {
    fn get(&self, key: &str) -> Option<i64> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied()
    }

    fn insert(&self, key: String, size: i64, seen_generation: u64) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) != seen_generation {
            return;
        }
        if map.len() >= LINK_CACHE_MAX {
            map.clear();
        }
        map.insert(key, size);
    }

    /// Forgets every link matching `pred` (after the database change).
    fn remove_where(&self, pred: impl Fn(&str) -> bool) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| !pred(k));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A manifest put waiting for the group-commit writer.
#[derive(Debug)]
struct PutJob {
    m: NewManifest,
    events: Vec<OutboxEvent>,
    hooks: Subscribers,
    /// Its rows for the set-wise group commit, built before it was queued.
    rows: GroupRows,
    reply: oneshot::Sender<Result<usize, StoreError>>,
}

impl PutJob {
    fn new(
        m: NewManifest,
        events: Vec<OutboxEvent>,
        hooks: Subscribers,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    ) -> PutJob {
        let rows = GroupRows::of(&m, &events, &hooks);
        PutJob {
            m,
            events,
            hooks,
            rows,
            reply,
        }
    }
}

/// A put's rows for the set-wise statements of [`group_in_one`], each without the put's
/// position in the group (which the writer binds first) or the group's time. Built by the
/// request's own task before it queues: every push waits for the one writer, so what can
/// be done before it is not done by it (it took about 5 % of a group's time).
#[derive(Debug, Default)]
struct GroupRows {
    /// Repository, wanted blobs (JSON) and their number, wanted manifests (JSON) and theirs.
    check: Vec<crate::outbox::Arg>,
    /// The `manifests` row from the digest to the body (see [`manifest_args`]).
    manifest: Vec<crate::outbox::Arg>,
    /// Digest and referenced blobs (JSON), if it references any.
    refs: Option<Vec<crate::outbox::Arg>>,
    /// Digest and tag names (JSON), if it has tags.
    tags: Option<Vec<crate::outbox::Arg>>,
    /// Its events that some webhook wants (see [`crate::outbox::GroupEvent`]).
    events: Vec<crate::outbox::GroupEvent>,
}

impl GroupRows {
    fn of(m: &NewManifest, events: &[OutboxEvent], hooks: &Subscribers) -> GroupRows {
        use crate::outbox::Arg;
        let (blobs, n_blobs) = wanted_json(&m.required_blobs);
        let (manifests, n_manifests) = wanted_json(&m.required_manifests);
        let digest = m.digest.to_string();
        GroupRows {
            check: vec![
                Arg::Text(Some(m.repo.as_str().to_owned())),
                Arg::Text(Some(blobs)),
                Arg::Int(Some(n_blobs)),
                Arg::Text(Some(manifests)),
                Arg::Int(Some(n_manifests)),
            ],
            manifest: manifest_args(m).to_vec(),
            refs: (!m.referenced_blobs.is_empty()).then(|| {
                vec![
                    Arg::Text(Some(digest.clone())),
                    Arg::Text(Some(digests_json(&m.referenced_blobs))),
                ]
            }),
            tags: (!m.tags.is_empty()).then(|| {
                let names: Vec<&str> = m.tags.iter().map(|t| t.as_str()).collect();
                vec![
                    Arg::Text(Some(digest.clone())),
                    Arg::Text(Some(serde_json::json!(names).to_string())),
                ]
            }),
            events: crate::outbox::GroupEvent::wanted(events, hooks),
        }
    }
}

/// Work for the writer task. (Puts are nearly all of it, and a channel slot is as large as
/// the largest job anyway: boxing them would only add an allocation per put.)
#[allow(clippy::large_enum_variant)]
enum WriterJob {
    Put(PutJob),
    /// Statements to run as one transaction of their own, after the puts that came with them
    /// (see [`Meta::write_on_writer`]).
    Batch(
        crate::outbox::Batch,
        oneshot::Sender<Result<(), StoreError>>,
    ),
}

/// Why a pull of a stored manifest is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullBlock {
    /// `readEnabled` is false on the repository, the tag or the manifest.
    ReadLocked,
    /// The manifest is quarantined (or failed its scan).
    Quarantined,
}

/// Most puts committed together.
const MAX_GROUP: usize = 256;

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: i64,
    pub body: Option<Vec<u8>>,
    /// Set when the manifest may not be pulled.
    pub blocked: Option<PullBlock>,
}

/// What a new manifest needs the store to know.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub media_type: String,
    pub body: Vec<u8>,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<String>,
    pub config_media_type: Option<String>,
    pub config_digest: Option<Digest>,
    /// Blobs that must be linked in the repository, with the size each descriptor states
    /// (which must be the blob's size).
    pub required_blobs: Vec<(Digest, i64)>,
    /// Child manifests that must exist in the repository, with their stated sizes.
    pub required_manifests: Vec<(Digest, i64)>,
    /// Every blob the manifest names (config and all layers, non-distributable ones too):
    /// what garbage collection must keep while the manifest lives. A superset of
    /// `required_blobs`; a name with no link in the repository is harmless.
    pub referenced_blobs: Vec<Digest>,
    pub tags: Vec<Tag>,
    /// Set when the quarantine policy is on: the push to hold back until release, as JSON
    /// (`{"tags":[…],"host","useragent"}`). A new manifest is then stored `Quarantined`, and
    /// only the events that are not `push`/`chart_push` are queued.
    pub quarantine: Option<String>,
}

/// One entry of a referrers response.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// What a manifest delete removed.
#[derive(Debug, Clone)]
pub struct DeletedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: i64,
    pub tags: Vec<String>,
    pub config_media_type: Option<String>,
}

/// The config of a stored manifest (for chart events).
#[derive(Debug, Clone)]
pub struct ManifestConfig {
    pub media_type: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone)]
pub struct UploadRow {
    pub repo: String,
    pub algorithm: String,
    pub finished_digest: Option<String>,
}

impl Meta {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-16000");
        // No test before a connection is handed out: sqlx pings it by default, a round trip
        // to the connection's thread on every acquire, for a local file that cannot have gone
        // away. A connection in doubt is closed instead (see `WriteTx`).
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            // The group commit's scratch table (see `group_in_one`), on every write
            // connection, also on one that replaces a connection closed in doubt.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query(PUT_OK_TABLE).execute(conn).await?;
                    Ok(())
                })
            })
            .connect_with(opts.clone())
            .await?;
        migrate(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(opts.read_only(true))
            .await?;
        let (puts, rx) = mpsc::channel(MAX_GROUP * 4);
        let lane = Arc::new(FastLane::default());
        let locks = Arc::new(crate::attrs::LockFlag::default());
        locks.recompute(&write).await?;
        tokio::spawn(put_writer(write.clone(), rx, lane.clone(), locks.clone()));
        Ok(Meta {
            read,
            write,
            puts,
            links: Arc::default(),
            lane,
            locks,
            touched: Arc::default(),
            content_gate: Arc::default(),
        })
    }

    /// Forgets a cached link (after it was found gone from the database).
    pub(crate) fn forget_link(&self, key: &str) {
        self.links.remove_where(|k| k == key);
    }

    /// Forgets every cached link and link use (after garbage collection removed links).
    pub(crate) fn forget_all_links(&self) {
        self.links.remove_where(|_| true);
        self.touched.clear();
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    // ---- repositories and blobs ------------------------------------------------------

    pub async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_optional(&self.read)
            .await?
            .is_some())
    }

    /// Size of a blob if it is linked in `repo`.
    pub async fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<i64>, StoreError> {
        let key = link_key(repo, digest);
        if let Some(size) = self.links.get(&key) {
            return Ok(Some(size));
        }
        let generation = self.links.generation.load(Ordering::Acquire);
        let row = sqlx::query(
            "SELECT b.size FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id \
             WHERE r.name = ? AND b.digest = ?",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        let size = row.map(|r| r.get::<i64, _>(0));
        if let Some(size) = size {
            self.links.insert(key, size, generation);
        }
        Ok(size)
    }

    /// Size of a blob linked in any repository (for mounts and content that is already here).
    pub async fn blob_size_anywhere(&self, digest: &Digest) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT size FROM repo_blobs WHERE digest = ? LIMIT 1")
            .bind(digest.to_string())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }

    /// The repositories a blob is linked in, with its size (at most 100: for an automatic
    /// mount, which needs one it may read from).
    pub async fn blob_holders(&self, digest: &Digest) -> Result<Vec<(RepoName, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.name, b.size FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id \
             WHERE b.digest = ? ORDER BY r.name LIMIT 100",
        )
        .bind(digest.to_string())
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                Some((RepoName::parse(&name).ok()?, r.get::<i64, _>(1)))
            })
            .collect())
    }

    /// Links a published blob into a repository, creating the repository if needed, without
    /// checking its content (the registry links through `gc::Gc::link_published`, which does).
    pub async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: i64,
    ) -> Result<(), StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let repo_id = ensure_repo(&mut tx, repo).await?;
        sqlx::query(
            "INSERT OR IGNORE INTO repo_blobs (repo_id, digest, size, used_at) VALUES (?, ?, ?, ?)",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .bind(size)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a blob's link from a repository. Returns false if it was not linked.
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let Some(id) = repo_id(&mut tx, repo).await? else {
            tx.rollback().await;
            return Ok(false);
        };
        if crate::attrs::delete_blob_refused(&mut tx, id).await? {
            tx.rollback().await;
            return Err(StoreError::Disallowed);
        }
        let res = sqlx::query("DELETE FROM repo_blobs WHERE digest = ? AND repo_id = ?")
            .bind(digest.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let key = link_key(repo, digest);
        self.links.remove_where(|k| k == key);
        Ok(res.rows_affected() > 0)
    }

    // ---- uploads -----------------------------------------------------------------------

    pub async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        algorithm: &str,
    ) -> Result<(), StoreError> {
        // Without fsync: a session survives a process crash either way (the WAL is in the OS's
        // cache), and one lost to a power failure only makes the client start its upload again
        // (its bytes were not fsynced either; only a finished blob is).
        let mut tx = WriteTx::begin_relaxed(&self.write).await?;
        sqlx::query("INSERT INTO uploads (id, repo, algorithm, created_at) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(repo.as_str())
            .bind(algorithm)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError> {
        let row = sqlx::query("SELECT repo, algorithm, finished_digest FROM uploads WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| UploadRow {
            repo: r.get(0),
            algorithm: r.get(1),
            finished_digest: r.get(2),
        }))
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id)
            .execute(&mut *crate::db::acquire_write(&self.write).await?)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Every upload session: its id and whether it is finished (for start-up reconciliation).
    pub async fn upload_ids(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let rows = sqlx::query("SELECT id, finished_digest IS NOT NULL FROM uploads")
            .fetch_all(&self.read)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Upload sessions older than `cutoff_ms`, for expiry.
    pub async fn stale_uploads(&self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE created_at < ?")
            .bind(cutoff_ms)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    // ---- manifests and tags ------------------------------------------------------------

    /// Looks a manifest up by tag or digest. `with_body` false skips reading the body (HEAD).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRow>, StoreError> {
        // The locks and the quarantine state come with the row: checking them costs nothing.
        let body = if with_body { "m.body" } else { "NULL" };
        let tag_read = match reference {
            Reference::Tag(_) => " AND t.read_enabled",
            Reference::Digest(_) => "",
        };
        let cols = format!(
            "m.digest, m.media_type, m.size, {body}, \
             r.read_enabled AND m.read_enabled{tag_read}, m.quarantine_state"
        );
        let row = match reference {
            Reference::Digest(d) => {
                sqlx::query(&format!(
                    "SELECT {cols} FROM manifests m JOIN repositories r ON r.id = m.repo_id \
                     WHERE r.name = ? AND m.digest = ?"
                ))
                .bind(repo.as_str())
                .bind(d.to_string())
                .fetch_optional(&self.read)
                .await?
            }
            Reference::Tag(t) => {
                sqlx::query(&format!(
                    "SELECT {cols} FROM tags t JOIN repositories r ON r.id = t.repo_id \
                     JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest \
                     WHERE r.name = ? AND t.name = ?"
                ))
                .bind(repo.as_str())
                .bind(t.as_str())
                .fetch_optional(&self.read)
                .await?
            }
        };
        row.map(|r| {
            let quarantine: Option<String> = r.get(5);
            // A read lock first: it binds even those who may read quarantined images.
            let blocked = if !r.get::<bool, _>(4) {
                Some(PullBlock::ReadLocked)
            } else if matches!(
                quarantine.as_deref(),
                Some(crate::attrs::QUARANTINED | crate::attrs::FAILED)
            ) {
                Some(PullBlock::Quarantined)
            } else {
                None
            };
            Ok(ManifestRow {
                digest: parse_digest(r.get::<String, _>(0))?,
                media_type: r.get(1),
                size: r.get(2),
                body: r.get(3),
                blocked,
            })
        })
        .transpose()
    }

    /// Stores a manifest and points its tags at it, after checking that every blob and child
    /// manifest it references is present in the repository. The events are written to the
    /// outbox in the same transaction (DESIGN invariant 3).
    ///
    /// Concurrent puts are group-committed: the writer task runs every put waiting at that
    /// moment in one transaction and pays one fsync for the group; a bad manifest fails
    /// alone (see [`group_in_one`]).
    pub async fn put_manifest(
        &self,
        m: &NewManifest,
        events: &[OutboxEvent],
        hooks: &Subscribers,
    ) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job = PutJob::new(m.clone(), events.to_vec(), hooks.clone(), reply);
        self.puts
            .send(WriterJob::Put(job))
            .await
            .map_err(|_| StoreError::Unavailable("manifest writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("manifest writer stopped".into()))?
    }

    /// Runs `batch` as one transaction of its own on the writer task, after the puts queued
    /// before it. For short, frequent transactions (attempt records): taking the write
    /// connection from the group commit and giving it back costs the waiting puts about a
    /// millisecond each time (sqlx's release ping, two acquires); the writer, holding it,
    /// runs the batch in one round trip.
    pub(crate) async fn write_on_writer(
        &self,
        batch: crate::outbox::Batch,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.puts
            .send(WriterJob::Batch(batch, reply))
            .await
            .map_err(|_| StoreError::Unavailable("manifest writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("manifest writer stopped".into()))?
    }

    /// `events` builds the delete events from what was deleted; they are written to the
    /// outbox in the same transaction.
    pub async fn delete_manifest<F>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        hooks: &Subscribers,
        events: F,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError>
    where
        F: FnOnce(&DeletedManifest) -> Vec<OutboxEvent>,
    {
        self.delete_manifest_when(repo, digest, None, hooks, events)
            .await
    }

    /// The retention policy's delete: as [`Meta::delete_manifest`], but only if, inside the
    /// transaction, the manifest is still untagged, last updated before `cutoff_ms`, not
    /// quarantined or failed (its push was never announced, so its delete must not be), and
    /// referenced by no other manifest of the repository (as an index's child or as a
    /// referrer's subject): a tag, an index or a referrer pushed since the candidates were
    /// chosen saves it. None if it was not deleted.
    pub async fn delete_stale_manifest<F>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: i64,
        hooks: &Subscribers,
        events: F,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError>
    where
        F: FnOnce(&DeletedManifest) -> Vec<OutboxEvent>,
    {
        self.delete_manifest_when(repo, digest, Some(cutoff_ms), hooks, events)
            .await
    }

    async fn delete_manifest_when<F>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        stale_before: Option<i64>,
        hooks: &Subscribers,
        events: F,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError>
    where
        F: FnOnce(&DeletedManifest) -> Vec<OutboxEvent>,
    {
        let mut tx = WriteTx::begin(&self.write).await?;
        let Some(repo_id) = repo_id(&mut tx, repo).await? else {
            tx.rollback().await;
            return Ok(None);
        };
        if crate::attrs::delete_manifest_refused(&mut tx, repo_id, &digest.to_string()).await? {
            tx.rollback().await;
            return Err(StoreError::Disallowed);
        }
        if let Some(cutoff) = stale_before {
            // Index children are read from the stored bodies of the repository's indexes
            // (JSON stored as a BLOB, hence the CAST: SQLite reads a BLOB as JSONB).
            let stale = sqlx::query(
                "SELECT 1 FROM manifests m WHERE m.repo_id = ?1 AND m.digest = ?2 \
                 AND COALESCE(m.updated_at, m.created_at) < ?3 \
                 AND COALESCE(m.quarantine_state, '') NOT IN ('Quarantined', 'Failed') \
                 AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id \
                 AND t.digest = m.digest) \
                 AND NOT EXISTS (SELECT 1 FROM manifests o WHERE o.repo_id = ?1 \
                 AND o.subject = ?2) \
                 AND NOT EXISTS (SELECT 1 FROM manifests o WHERE o.repo_id = ?1 \
                 AND o.media_type IN (?4, ?5) \
                 AND EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(CAST(o.body AS TEXT)) \
                 THEN CAST(o.body AS TEXT) ELSE '{}' END, '$.manifests') c \
                 WHERE json_extract(c.value, '$.digest') = ?2))",
            )
            .bind(repo_id)
            .bind(digest.to_string())
            .bind(cutoff)
            .bind(wharf_core::manifest::media::OCI_INDEX)
            .bind(wharf_core::manifest::media::DOCKER_MANIFEST_LIST)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if !stale {
                tx.rollback().await;
                return Ok(None);
            }
        }
        let row = sqlx::query(
            "DELETE FROM manifests WHERE repo_id = ? AND digest = ? \
             RETURNING media_type, size, config_media_type",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await;
            return Ok(None);
        };
        let tags: Vec<String> =
            sqlx::query("DELETE FROM tags WHERE repo_id = ? AND digest = ? RETURNING name")
                .bind(repo_id)
                .bind(digest.to_string())
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
        let deleted = DeletedManifest {
            digest: digest.clone(),
            media_type: row.get(0),
            size: row.get(1),
            config_media_type: row.get(2),
            tags,
        };
        let enq = crate::outbox::enqueue(&mut tx, &events(&deleted), hooks, &self.lane).await?;
        tx.commit().await?;
        let queued = enq.queued;
        self.lane.hand_over(enq.fast);
        Ok(Some((deleted, queued)))
    }

    /// Deletes a whole repository — its manifests, tags and blob links — in one transaction,
    /// writing the events `events` builds for each manifest in that same transaction, so a
    /// manifest pushed concurrently is either deleted with its event or not deleted at all.
    /// Returns None if the repository did not exist.
    pub async fn delete_repository<F>(
        &self,
        repo: &RepoName,
        hooks: &Subscribers,
        events: F,
    ) -> Result<Option<(Vec<DeletedManifest>, usize)>, StoreError>
    where
        F: Fn(&DeletedManifest) -> Vec<OutboxEvent>,
    {
        let mut tx = WriteTx::begin(&self.write).await?;
        let Some(repo_id) = repo_id(&mut tx, repo).await? else {
            tx.rollback().await;
            return Ok(None);
        };
        if crate::attrs::delete_repo_refused(&mut tx, repo_id).await? {
            tx.rollback().await;
            return Err(StoreError::Disallowed);
        }
        let rows = sqlx::query(
            "SELECT digest, media_type, size, config_media_type FROM manifests \
             WHERE repo_id = ? ORDER BY id DESC",
        )
        .bind(repo_id)
        .fetch_all(&mut *tx)
        .await?;
        let tag_rows = sqlx::query("SELECT name, digest FROM tags WHERE repo_id = ? ORDER BY name")
            .bind(repo_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut deleted = Vec::with_capacity(rows.len());
        let mut all_events = Vec::new();
        for r in rows {
            let digest: String = r.get(0);
            let d = DeletedManifest {
                digest: parse_digest(digest.clone())?,
                media_type: r.get(1),
                size: r.get(2),
                config_media_type: r.get(3),
                tags: tag_rows
                    .iter()
                    .filter(|t| t.get::<String, _>(1) == digest)
                    .map(|t| t.get(0))
                    .collect(),
            };
            all_events.extend(events(&d));
            deleted.push(d);
        }
        let enq = crate::outbox::enqueue(&mut tx, &all_events, hooks, &self.lane).await?;
        // Manifests, tags and blob links go with the repository (ON DELETE CASCADE).
        sqlx::query("DELETE FROM repositories WHERE id = ?")
            .bind(repo_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let prefix = format!("{repo}@");
        self.links.remove_where(|k| k.starts_with(&prefix));
        let queued = enq.queued;
        self.lane.hand_over(enq.fast);
        Ok(Some((deleted, queued)))
    }

    pub async fn manifest_config(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestConfig>, StoreError> {
        let row = sqlx::query(
            "SELECT m.config_media_type, m.config_digest FROM manifests m \
             JOIN repositories r ON r.id = m.repo_id WHERE r.name = ? AND m.digest = ?",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(ManifestConfig {
                media_type: r.get(0),
                digest: r
                    .get::<Option<String>, _>(1)
                    .map(parse_digest)
                    .transpose()?,
            })
        })
        .transpose()
    }

    /// Digests of every manifest in a repository (for repository deletes).
    pub async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<Digest>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = ? ORDER BY m.id DESC",
        )
        .bind(repo.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(|r| parse_digest(r.get(0))).collect()
    }

    /// Removes one tag (the manifest stays). Returns false if the tag did not exist.
    /// Refused (`Disallowed`) if the repository or the tag is write- or delete-locked.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let Some(id) = repo_id(&mut tx, repo).await? else {
            tx.rollback().await;
            return Ok(false);
        };
        if crate::attrs::untag_refused(&mut tx, id, tag.as_str()).await? {
            tx.rollback().await;
            return Err(StoreError::Disallowed);
        }
        // The manifest's last-update time becomes the untag time (trigger `tags_removed`).
        let gone = sqlx::query("DELETE FROM tags WHERE repo_id = ? AND name = ?")
            .bind(id)
            .bind(tag.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !gone {
            tx.rollback().await;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Tags of a repository in lexical (byte) order, strictly after `last`, at most `n`.
    /// None if the repository does not exist. Unless `quarantine_reader`, tags of quarantined
    /// (or failed) manifests are left out: a pull by such a tag answers "not found", so the
    /// listing must not show it either.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let Some(id) = sqlx::query("SELECT id FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.get::<i64, _>(0))
        else {
            return Ok(None);
        };
        let rows = sqlx::query(&format!(
            "SELECT t.name FROM tags t WHERE t.repo_id = ? AND t.name > ? AND t.list_enabled{} \
             ORDER BY t.name LIMIT ?",
            self.hide_quarantined(quarantine_reader, "t")
        ))
        .bind(id)
        .bind(last.unwrap_or(""))
        .bind(n.map(i64::from).unwrap_or(-1))
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(rows.into_iter().map(|r| r.get(0)).collect()))
    }

    /// Repository names in lexical order, strictly after `last`, at most `n`.
    pub async fn catalog(
        &self,
        last: Option<&str>,
        n: Option<u32>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT name FROM repositories WHERE name > ? AND list_enabled \
                 ORDER BY name LIMIT ?",
        )
        .bind(last.unwrap_or(""))
        .bind(n.map(i64::from).unwrap_or(-1))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Manifests in `repo` whose subject is `subject`, oldest first: those with
    /// `listEnabled`, and, unless `quarantine_reader`, not quarantined (or failed).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        quarantine_reader: bool,
    ) -> Result<Vec<Referrer>, StoreError> {
        let quarantined = if quarantine_reader || !self.locks.quarantine.any() {
            ""
        } else {
            " AND COALESCE(m.quarantine_state, '') NOT IN ('Quarantined', 'Failed')"
        };
        let rows = sqlx::query(&format!(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations \
             FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = ? AND m.subject = ? AND m.list_enabled{quarantined} ORDER BY m.id",
        ))
        .bind(repo.as_str())
        .bind(subject.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Referrer {
                    digest: parse_digest(r.get::<String, _>(0))?,
                    media_type: r.get(1),
                    size: r.get(2),
                    artifact_type: r.get(3),
                    annotations: r.get(4),
                })
            })
            .collect()
    }
}

impl Meta {
    /// The SQL condition that leaves out tags (alias `t`) of quarantined or failed manifests,
    /// for a caller who may not read them; empty when nothing anywhere is quarantined.
    pub(crate) fn hide_quarantined(&self, quarantine_reader: bool, t: &str) -> String {
        if quarantine_reader || !self.locks.quarantine.any() {
            return String::new();
        }
        format!(
            " AND NOT EXISTS (SELECT 1 FROM manifests qm WHERE qm.repo_id = {t}.repo_id \
             AND qm.digest = {t}.digest AND qm.quarantine_state IN ('Quarantined', 'Failed'))"
        )
    }
}

pub(crate) fn parse_digest(s: String) -> Result<Digest, StoreError> {
    Digest::parse(&s).map_err(|_| StoreError::Corrupt(format!("bad digest in database: {s}")))
}

async fn repo_id(conn: &mut SqliteConnection, repo: &RepoName) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query("SELECT id FROM repositories WHERE name = ?")
        .bind(repo.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| r.get(0)))
}

pub(crate) async fn ensure_repo(
    conn: &mut SqliteConnection,
    repo: &RepoName,
) -> Result<i64, StoreError> {
    if let Some(id) = repo_id(&mut *conn, repo).await? {
        return Ok(id);
    }
    let row = sqlx::query("INSERT INTO repositories (name, created_at) VALUES (?, ?) RETURNING id")
        .bind(repo.as_str())
        .bind(now_ms())
        .fetch_one(conn)
        .await?;
    Ok(row.get(0))
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let version: i64 = sqlx::query("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        if *sql == crate::gc::MIGRATION {
            crate::gc::backfill(&mut tx).await?;
        }
        sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The group-commit writer of manifest puts (see [`Meta::put_manifest`]).
///
/// While puts keep arriving it keeps the write connection from one group to the next
/// ([`HeldConn`]), so the next group starts at once rather than after the pool's release and
/// acquire; it gives the connection back as soon as another writer waits for it, or when no
/// put has come for a short while ([`HeldConn::hold_for_work`]).
async fn put_writer(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<WriterJob>,
    lane: Arc<FastLane>,
    locks: Arc<crate::attrs::LockFlag>,
) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    let mut held: Option<HeldConn> = None;
    loop {
        let next = match &held {
            Some(conn) => match conn.hold_for_work(&mut rx, HeldConn::IDLE_HOLD).await {
                Held::Work(job) => Some(job),
                Held::Release => {
                    held = None;
                    rx.recv().await
                }
                Held::Closed => None,
            },
            None => rx.recv().await,
        };
        let Some(first) = next else { break };
        let mut batches = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                WriterJob::Put(p) => jobs.push(p),
                WriterJob::Batch(b, reply) => batches.push((b, reply)),
            }
            if jobs.len() + batches.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !jobs.is_empty() {
            let done = match writer_conn(&mut held, &pool).await {
                Ok(conn) => run_group(conn, &mut jobs, &lane, &locks).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(results) => {
                    for (job, r) in jobs.drain(..).zip(results) {
                        let _ = job.reply.send(r);
                    }
                }
                Err(e) => {
                    let full = log_group_failure(&e);
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(group_failed(full)));
                    }
                }
            }
            release_unless_kept(&mut held);
        }
        for (batch, reply) in batches {
            let done = match writer_conn(&mut held, &pool).await {
                Ok(conn) => run_batch(conn, batch).await,
                Err(e) => Err(e),
            };
            let _ = reply.send(done);
            release_unless_kept(&mut held);
        }
    }
}

/// The writer's connection: the one it holds, or one acquired now.
async fn writer_conn<'h>(
    held: &'h mut Option<HeldConn>,
    pool: &SqlitePool,
) -> Result<&'h mut HeldConn, StoreError> {
    let conn = match held.take() {
        Some(conn) => conn,
        None => HeldConn::acquire(pool).await?,
    };
    Ok(held.insert(conn))
}

/// Gives the writer's connection back unless it may be kept (also with nothing waiting: see
/// `hold_for_work`); one in doubt is closed.
fn release_unless_kept(held: &mut Option<HeldConn>) {
    if held.as_ref().is_some_and(|c| !c.keep()) {
        *held = None;
    }
}

/// One [`WriterJob::Batch`] as its own durable transaction, in one round trip. Its text is
/// not kept prepared (see [`crate::outbox::Batch::run_uncached`]).
async fn run_batch(conn: &mut HeldConn, batch: crate::outbox::Batch) -> Result<(), StoreError> {
    let mut tx = conn.tx();
    let batch = batch.in_transaction(tx.begin_sql());
    batch.run_uncached(&mut tx).await?;
    tx.committed_by_batch();
    Ok(())
}

async fn run_group(
    conn: &mut HeldConn,
    jobs: &mut [PutJob],
    lane: &FastLane,
    locks: &crate::attrs::LockFlag,
) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
    // None: not written yet.
    let mut results: Vec<Option<Result<usize, StoreError>>> = jobs.iter().map(|_| None).collect();
    if fits_in_one(jobs, locks) {
        let (written, fast) = group_in_one(conn.tx(), jobs, lane).await?;
        // Only now, with the change durable, may its deliveries be sent.
        lane.hand_over(fast);
        for (slot, queued) in results.iter_mut().zip(written) {
            *slot = queued.map(Ok);
        }
    }
    let rest: Vec<usize> = (0..jobs.len()).filter(|&j| results[j].is_none()).collect();
    if !rest.is_empty() {
        // What was written above is committed and answered as such, whatever happens here.
        match put_by_put(conn, jobs, &rest, lane, locks).await {
            Ok(done) => {
                for (j, r) in rest.iter().zip(done) {
                    results[*j] = Some(r);
                }
            }
            Err(e) => {
                let full = log_group_failure(&e);
                for j in rest {
                    results[j] = Some(Err(group_failed(full)));
                }
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Unavailable("put not run".into()))))
        .collect())
}

/// Logs a failed group commit; returns whether it failed for want of space.
fn log_group_failure(e: &StoreError) -> bool {
    let full = matches!(e, StoreError::OutOfSpace);
    if full {
        tracing::warn!("manifest group commit failed: out of storage space");
    } else {
        tracing::error!(error = %e, "manifest group commit failed");
    }
    full
}

/// What each put of a failed group commit is answered: out of space, or unavailable (the
/// detail stays in the log).
fn group_failed(full: bool) -> StoreError {
    if full {
        StoreError::OutOfSpace
    } else {
        StoreError::Unavailable("commit failed".into())
    }
}

/// The puts `which` of `jobs`, one after another in one transaction: each validated with
/// reads, then written, so that it sees the puts before it. A refused put writes nothing and
/// needs no savepoint; a failing write is a database failure and fails them all.
async fn put_by_put(
    conn: &mut HeldConn,
    jobs: &[PutJob],
    which: &[usize],
    lane: &FastLane,
    locks: &crate::attrs::LockFlag,
) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
    let mut tx = conn.tx();
    tx.begin().await?;
    let mut results = Vec::with_capacity(which.len());
    let mut fast = Vec::new();
    // The blob references of the new manifests, recorded in one statement for the group.
    let mut refs = Vec::new();
    for &j in which {
        let job = &jobs[j];
        match put_one(
            &mut tx,
            &job.m,
            &job.events,
            &job.hooks,
            lane,
            locks,
            &mut refs,
        )
        .await?
        {
            Ok(enq) => {
                fast.extend(enq.fast);
                results.push(Ok(enq.queued));
            }
            Err(refused) => results.push(Err(refused)),
        }
    }
    // In the puts' own transaction: garbage collection keeps what they reference.
    crate::gc::record_references(&mut tx, &refs).await?;
    tx.commit().await?;
    // Only now, with the change durable, may its deliveries be sent.
    lane.hand_over(fast);
    Ok(results)
}

async fn put_one<'a>(
    conn: &mut SqliteConnection,
    m: &'a NewManifest,
    events: &[OutboxEvent],
    hooks: &Subscribers,
    lane: &FastLane,
    locks: &crate::attrs::LockFlag,
    refs: &mut Vec<crate::gc::Reference<'a>>,
) -> Result<Result<Enqueued, StoreError>, StoreError> {
    // A quarantined push raises the blob reads' flag inside its transaction (see
    // `attrs::QuarantineFlag`): up before the manifest is visible.
    if m.quarantine.is_some() {
        locks.quarantine.raise();
    }
    // Validate with reads only. A repository that does not exist yet has no blobs.
    if let Some(checked) = validate_in_one(&mut *conn, m).await? {
        let (existing, refused) = checked;
        if let Some(refused) = refused {
            return Ok(Err(refused));
        }
        return write_put(conn, m, events, hooks, lane, locks, existing, refs).await;
    }
    let existing = repo_id(&mut *conn, &m.repo).await?;
    let refused = match existing {
        Some(id) => match first_refused(&mut *conn, "repo_blobs", id, &m.required_blobs).await? {
            Some(r) => Some(r),
            None => first_refused(&mut *conn, "manifests", id, &m.required_manifests).await?,
        },
        None => m
            .required_blobs
            .first()
            .map(|(d, _)| StoreError::MissingBlob(d.clone()))
            .or_else(|| {
                m.required_manifests
                    .first()
                    .map(|(d, _)| StoreError::MissingManifest(d.clone()))
            }),
    };
    if let Some(refused) = refused {
        return Ok(Err(refused));
    }
    write_put(conn, m, events, hooks, lane, locks, existing, refs).await
}

/// The repository's id and the first refusal of `m`'s references, read in one round trip;
/// None when `m` references too many blobs or manifests for one statement (the caller then
/// reads them in chunks).
async fn validate_in_one(
    conn: &mut SqliteConnection,
    m: &NewManifest,
) -> Result<Option<(Option<i64>, Option<StoreError>)>, StoreError> {
    const MAX: usize = 500;
    if m.required_blobs.len() > MAX || m.required_manifests.len() > MAX {
        return Ok(None);
    }
    // Each statement's first column says which one a row comes from.
    let mut sql = String::from("SELECT 0, id, NULL FROM repositories WHERE name = ?;\n");
    let mut q_args: Vec<String> = vec![m.repo.as_str().to_owned()];
    for (kind, table, wanted) in [
        (1, "repo_blobs", &m.required_blobs),
        (2, "manifests", &m.required_manifests),
    ] {
        if wanted.is_empty() {
            continue;
        }
        let marks = vec!["?"; wanted.len()].join(",");
        sql.push_str(&format!(
            "SELECT {kind}, t.digest, t.size FROM {table} t JOIN repositories r \
             ON r.id = t.repo_id WHERE r.name = ? AND t.digest IN ({marks});\n"
        ));
        q_args.push(m.repo.as_str().to_owned());
        q_args.extend(wanted.iter().map(|(d, _)| d.to_string()));
    }
    let mut q = sqlx::query(&sql);
    for a in q_args {
        q = q.bind(a);
    }
    let mut existing = None;
    let mut blobs: HashMap<String, i64> = HashMap::new();
    let mut manifests: HashMap<String, i64> = HashMap::new();
    for r in q.fetch_all(&mut *conn).await? {
        match r.get::<i64, _>(0) {
            0 => existing = Some(r.get::<i64, _>(1)),
            1 => {
                blobs.insert(r.get(1), r.get(2));
            }
            _ => {
                manifests.insert(r.get(1), r.get(2));
            }
        }
    }
    let refused = refusal_of(m, &blobs, &manifests);
    Ok(Some((existing, refused)))
}

/// The manifest and tag writes of a validated put that is not quarantined.
/// Digests as one JSON array of strings, for `json_each(?)`: a statement's text then does not
/// depend on how many there are.
fn digests_json<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> String {
    let v: Vec<String> = digests.into_iter().map(|d| d.to_string()).collect();
    serde_json::Value::from(v).to_string()
}

/// The `manifests` row of `m` between its `repo_id` and its creation time: digest, media
/// type, size, artifact type, subject, annotations, config media type, config digest, body.
fn manifest_args(m: &NewManifest) -> [crate::outbox::Arg; 9] {
    use crate::outbox::Arg;
    [
        Arg::Text(Some(m.digest.to_string())),
        Arg::Text(Some(m.media_type.clone())),
        Arg::Int(Some(m.body.len() as i64)),
        Arg::Text(m.artifact_type.clone()),
        Arg::Text(m.subject.as_ref().map(|d| d.to_string())),
        Arg::Text(m.annotations.clone()),
        Arg::Text(m.config_media_type.clone()),
        Arg::Text(m.config_digest.as_ref().map(|d| d.to_string())),
        Arg::Blob(m.body.clone()),
    ]
}

fn put_writes(batch: &mut crate::outbox::Batch, repo_id: i64, m: &NewManifest, now: i64) {
    use crate::outbox::Arg;
    batch.push(
        "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, \
         annotations, config_media_type, config_digest, body, created_at) \
         VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (repo_id, digest) DO NOTHING",
        std::iter::once(Arg::Int(Some(repo_id)))
            .chain(manifest_args(m))
            .chain([Arg::Int(Some(now))]),
    );
    // The blobs it references, for garbage collection, in the same transaction (as
    // `gc::record_references` does put by put). Recorded whether or not the manifest was new:
    // an existing one has the same references already, so nothing changes then.
    // The digests go as one JSON array, so the statement's text is the same whatever their
    // number and stays prepared in the connection's cache.
    if !m.referenced_blobs.is_empty() {
        batch.push(
            "INSERT OR IGNORE INTO manifest_blobs (manifest_id, repo_id, digest) \
             SELECT m.id, m.repo_id, v.value FROM manifests m, json_each(?) v \
             WHERE m.repo_id = ? AND m.digest = ?",
            [
                Arg::Text(Some(digests_json(&m.referenced_blobs))),
                Arg::Int(Some(repo_id)),
                Arg::Text(Some(m.digest.to_string())),
            ],
        );
    }
    if !m.tags.is_empty() {
        let values = vec!["(?, ?, ?, ?, ?)"; m.tags.len()].join(",");
        batch.push(
            &format!(
                "INSERT INTO tags (repo_id, name, digest, updated_at, created_at) \
                 VALUES {values} ON CONFLICT (repo_id, name) DO UPDATE SET \
                 digest = excluded.digest, updated_at = excluded.updated_at"
            ),
            m.tags.iter().flat_map(|t| {
                [
                    Arg::Int(Some(repo_id)),
                    Arg::Text(Some(t.as_str().to_owned())),
                    Arg::Text(Some(m.digest.to_string())),
                    Arg::Int(Some(now)),
                    Arg::Int(Some(now)),
                ]
            }),
        );
    }
}

/// The first refusal of `m`'s references given what is stored of them: the same order of
/// checks as the chunked reads of [`first_refused`].
fn refusal_of(
    m: &NewManifest,
    blobs: &HashMap<String, i64>,
    manifests: &HashMap<String, i64>,
) -> Option<StoreError> {
    first_refusal(&m.required_blobs, blobs, false)
        .or_else(|| first_refusal(&m.required_manifests, manifests, true))
}

/// The first of `wanted` (digest, stated size) that `found` (digest → stored size) lacks or
/// stores with another size; `manifests` says which kind of reference is missing. Both
/// backends' put validation ends here.
pub(crate) fn first_refusal(
    wanted: &[(Digest, i64)],
    found: &HashMap<String, i64>,
    manifests: bool,
) -> Option<StoreError> {
    wanted
        .iter()
        .find_map(|(d, size)| match found.get(&d.to_string()) {
            None if manifests => Some(StoreError::MissingManifest(d.clone())),
            None => Some(StoreError::MissingBlob(d.clone())),
            Some(stored) if stored != size => Some(StoreError::SizeMismatch {
                digest: d.clone(),
                stated: *size,
                stored: *stored,
            }),
            Some(_) => None,
        })
}

/// The group commit's scratch table: the puts of the current group found valid, with their
/// repository's id. Temporary (per connection, never written to the WAL or fsynced), and
/// emptied at the start of every group.
const PUT_OK_TABLE: &str =
    "CREATE TEMP TABLE IF NOT EXISTS put_ok (j INTEGER PRIMARY KEY, repo_id INTEGER NOT NULL)";

/// Whether the group can go through [`group_in_one`]: no lock in the registry and no put
/// quarantined. (Puts into a repository that does not exist yet are found invalid there, and
/// go put by put. References go as one JSON array, so their number sets no limit.)
fn fits_in_one(jobs: &[PutJob], locks: &crate::attrs::LockFlag) -> bool {
    !locks.any() && jobs.iter().all(|j| j.m.quarantine.is_none())
}

/// The references a put needs, as one JSON array of `[digest, size]` pairs without repeats,
/// and how many there are.
fn wanted_json(wanted: &[(Digest, i64)]) -> (String, i64) {
    let mut pairs: Vec<(String, i64)> = wanted.iter().map(|(d, n)| (d.to_string(), *n)).collect();
    pairs.sort();
    pairs.dedup();
    let n = pairs.len() as i64;
    (serde_json::json!(pairs).to_string(), n)
}

/// The checks and writes of every put of a group, one statement per table; returns the
/// puts' events, each with its put's position, for the outbox's statements
/// ([`crate::outbox::append_group_outbox`]).
///
/// First, one statement checks every put: a row in `temp.put_ok` for each put whose
/// repository exists and holds every blob and manifest it references, each at the size it
/// states. (A digest stated twice with two sizes can never match both: refused here, and put
/// by put names the mismatch.) CROSS JOIN keeps SQLite's order: the puts in turn, each wanted
/// digest looked up by key. With a plain JOIN the planner scans the repository's every row
/// for each check (`EXPLAIN QUERY PLAN`).
///
/// Then the writes, each row taking effect only if its put's check found it valid (its row
/// in `temp.put_ok`): the same rows as [`put_writes`] writes put by put. The puts come in
/// group order (CROSS JOIN keeps the `VALUES` list outermost), so of two puts moving one
/// tag the later one wins, as put by put.
fn group_statements(
    batch: &mut crate::outbox::Batch,
    rows: Vec<GroupRows>,
    now: i64,
) -> Vec<(usize, crate::outbox::GroupEvent)> {
    use crate::outbox::{Arg, value_rows};
    let n = rows.len();
    let (mut check, mut manifests, mut refs, mut tags) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut n_refs, mut n_tags) = (0, 0);
    let mut events = Vec::new();
    for (j, r) in rows.into_iter().enumerate() {
        let j_arg = Arg::Int(Some(j as i64));
        check.push(j_arg.clone());
        check.extend(r.check);
        manifests.push(j_arg.clone());
        manifests.extend(r.manifest);
        manifests.push(Arg::Int(Some(now)));
        if let Some(r) = r.refs {
            n_refs += 1;
            refs.push(j_arg.clone());
            refs.extend(r);
        }
        if let Some(t) = r.tags {
            n_tags += 1;
            tags.push(j_arg);
            tags.extend(t);
        }
        events.extend(r.events.into_iter().map(|e| (j, e)));
    }
    batch.push(
        &format!(
            "INSERT INTO temp.put_ok (j, repo_id) SELECT v.column1, r.id \
             FROM (VALUES {}) v CROSS JOIN repositories r ON r.name = v.column2 \
             WHERE (SELECT count(*) FROM json_each(v.column3) x CROSS JOIN repo_blobs t \
                    ON t.repo_id = r.id AND t.digest = json_extract(x.value, '$[0]') \
                    AND t.size = json_extract(x.value, '$[1]')) = v.column4 \
             AND (SELECT count(*) FROM json_each(v.column5) x CROSS JOIN manifests t \
                  ON t.repo_id = r.id AND t.digest = json_extract(x.value, '$[0]') \
                  AND t.size = json_extract(x.value, '$[1]')) = v.column6",
            value_rows(n, 6)
        ),
        check,
    );
    batch.push(
        &format!(
            "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, \
             annotations, config_media_type, config_digest, body, created_at) \
             SELECT p.repo_id, v.column2, v.column3, v.column4, v.column5, v.column6, \
             v.column7, v.column8, v.column9, v.column10, v.column11 \
             FROM (VALUES {}) v CROSS JOIN temp.put_ok p ON p.j = v.column1 WHERE 1 \
             ON CONFLICT (repo_id, digest) DO NOTHING",
            value_rows(n, 11)
        ),
        manifests,
    );
    if n_refs > 0 {
        batch.push(
            &format!(
                "INSERT OR IGNORE INTO manifest_blobs (manifest_id, repo_id, digest) \
                 SELECT m.id, m.repo_id, x.value FROM (VALUES {}) v \
                 CROSS JOIN temp.put_ok p ON p.j = v.column1 \
                 CROSS JOIN manifests m ON m.repo_id = p.repo_id AND m.digest = v.column2 \
                 CROSS JOIN json_each(v.column3) x",
                value_rows(n_refs, 3)
            ),
            refs,
        );
    }
    if n_tags > 0 {
        batch.push(
            &format!(
                "INSERT INTO tags (repo_id, name, digest, updated_at, created_at) \
                 SELECT p.repo_id, x.value, v.column2, ?, ? FROM (VALUES {}) v \
                 CROSS JOIN temp.put_ok p ON p.j = v.column1 \
                 CROSS JOIN json_each(v.column3) x WHERE 1 \
                 ON CONFLICT (repo_id, name) DO UPDATE SET \
                 digest = excluded.digest, updated_at = excluded.updated_at",
                value_rows(n_tags, 3)
            ),
            [Arg::Int(Some(now)), Arg::Int(Some(now))]
                .into_iter()
                .chain(tags),
        );
    }
    events
}

/// The common group — plain puts into existing repositories, no lock, every reference
/// stored — in one round trip to the connection's thread: `BEGIN IMMEDIATE`, the checks of
/// every put ([`push_validations`]), then the writes of the valid ones, one statement per
/// table for the whole group, each guarded by the check (manifests, their blob references,
/// tags, events, deliveries), then `COMMIT`. About ten statements whatever the group's size:
/// put by put it was six a put, and each statement costs the connection's thread its setup
/// and a message back to the writer, which were a fifth of its time. Puts never remove or
/// change what another put references, so a check stays true to the commit. A put found
/// invalid writes nothing and is returned as None, to go put by put (which names its
/// refusal, or creates its repository). So does an index whose child is in the same group:
/// the checks all run before the writes, and put by put, after the group, finds the child.
async fn group_in_one(
    mut tx: HeldTx<'_>,
    jobs: &mut [PutJob],
    lane: &FastLane,
) -> Result<(Vec<Option<usize>>, Vec<crate::hooks::QueuedDelivery>), StoreError> {
    let now = now_ms();
    let lease = lane.lease();
    let mut batch = crate::outbox::Batch::default();
    batch.push(&format!("{}DELETE FROM temp.put_ok", tx.begin_sql()), []);
    let rows: Vec<GroupRows> = jobs
        .iter_mut()
        .map(|j| std::mem::take(&mut j.rows))
        .collect();
    let events = group_statements(&mut batch, rows, now);
    crate::outbox::append_group_outbox(&mut batch, events, lease.as_ref(), now);
    // The only one-column rows: which puts were written.
    batch.push("SELECT j FROM temp.put_ok", []);
    batch.push("COMMIT", []);
    // Kept prepared (the connection's statement cache): a group's text depends only on how
    // many puts it has and the shape of each (tags, webhooks), so the few texts repeat.
    let rows = batch.run(&mut tx).await?;
    tx.committed_by_batch();
    let mut outs: Vec<Option<Enqueued>> = jobs.iter().map(|_| None).collect();
    for r in &rows {
        if r.len() == 1 {
            let j = usize::try_from(r.get::<i64, _>(0)).unwrap_or(usize::MAX);
            if let Some(out) = outs.get_mut(j) {
                out.get_or_insert_with(Enqueued::default);
            }
        }
    }
    for r in rows.iter().filter(|r| r.len() != 1) {
        for (job, out) in jobs.iter().zip(outs.iter_mut()) {
            if let Some(out) = out
                && crate::outbox::collect_delivery(out, r, &job.events, lease.is_some())
            {
                break;
            }
        }
    }
    let mut fast = Vec::new();
    let written = outs
        .into_iter()
        .map(|o| {
            o.map(|o| {
                fast.extend(o.fast);
                o.queued
            })
        })
        .collect();
    Ok((written, fast))
}

/// The writes of a validated put (see [`put_one`]).
#[allow(clippy::too_many_arguments)]
async fn write_put<'a>(
    conn: &mut SqliteConnection,
    m: &'a NewManifest,
    events: &[OutboxEvent],
    hooks: &Subscribers,
    lane: &FastLane,
    locks: &crate::attrs::LockFlag,
    existing: Option<i64>,
    refs: &mut Vec<crate::gc::Reference<'a>>,
) -> Result<Result<Enqueued, StoreError>, StoreError> {
    // Locks, checked on this transaction's connection (see `attrs`), and only when some
    // lock exists: the flag is raised before a locking PATCH takes the write connection.
    if let Some(id) = existing
        && locks.any()
        && crate::attrs::push_refused(&mut *conn, id, &m.digest.to_string(), &m.tags).await?
    {
        return Ok(Err(StoreError::Disallowed));
    }
    let repo_id = match existing {
        Some(id) => id,
        None => ensure_repo(&mut *conn, &m.repo).await?,
    };
    let now = now_ms();
    if m.quarantine.is_none() {
        // The common push: the manifest, its tags and its outbox rows in one round trip.
        let mut batch = crate::outbox::Batch::default();
        put_writes(&mut batch, repo_id, m, now);
        return Ok(Ok(crate::outbox::enqueue_batched(
            conn, batch, events, hooks, lane,
        )
        .await?));
    }
    let inserted = sqlx::query(
        "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, \
         annotations, config_media_type, config_digest, body, created_at, quarantine_state, \
         quarantine_push) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) \
         ON CONFLICT (repo_id, digest) DO NOTHING RETURNING id",
    )
    .bind(repo_id)
    .bind(m.digest.to_string())
    .bind(&m.media_type)
    .bind(m.body.len() as i64)
    .bind(&m.artifact_type)
    .bind(m.subject.as_ref().map(|d| d.to_string()))
    .bind(&m.annotations)
    .bind(&m.config_media_type)
    .bind(m.config_digest.as_ref().map(|d| d.to_string()))
    .bind(&m.body)
    .bind(now)
    .bind(m.quarantine.as_ref().map(|_| crate::attrs::QUARANTINED))
    .bind(&m.quarantine)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.get::<i64, _>(0));
    // The blobs it references, written before the group commits (see `run_group`).
    if let Some(id) = inserted {
        refs.extend(m.referenced_blobs.iter().map(|d| (id, repo_id, d)));
    }
    let inserted = inserted.is_some();
    for t in &m.tags {
        sqlx::query(
            "INSERT INTO tags (repo_id, name, digest, updated_at, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, \
             updated_at = excluded.updated_at",
        )
        .bind(repo_id)
        .bind(t.as_str())
        .bind(m.digest.to_string())
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let held = match &m.quarantine {
        None => false,
        Some(_) if inserted => true,
        // Pushed again: held back while the manifest is still quarantined (the new tags join
        // the held push); a released manifest pushes as usual.
        Some(_) => hold_again(&mut *conn, repo_id, m).await?,
    };
    if held {
        use wharf_core::WebhookAction as A;
        let kept: Vec<OutboxEvent> = events
            .iter()
            .filter(|e| !matches!(e.action, A::Push | A::ChartPush))
            .cloned()
            .collect();
        return Ok(Ok(crate::outbox::enqueue(conn, &kept, hooks, lane).await?));
    }
    Ok(Ok(crate::outbox::enqueue(conn, events, hooks, lane).await?))
}

/// A push of a manifest that already exists, with the quarantine policy on: whether it is
/// still quarantined (then its tags join the held push, and the push is held back again).
async fn hold_again(
    conn: &mut SqliteConnection,
    repo_id: i64,
    m: &NewManifest,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT quarantine_state, quarantine_push FROM manifests WHERE repo_id = ? AND digest = ?",
    )
    .bind(repo_id)
    .bind(m.digest.to_string())
    .fetch_one(&mut *conn)
    .await?;
    let state: Option<String> = row.get(0);
    if !matches!(
        state.as_deref(),
        Some(crate::attrs::QUARANTINED | crate::attrs::FAILED)
    ) {
        return Ok(false);
    }
    let merged = crate::attrs::merge_held(row.get(1), m.quarantine.as_deref());
    sqlx::query("UPDATE manifests SET quarantine_push = ? WHERE repo_id = ? AND digest = ?")
        .bind(merged)
        .bind(repo_id)
        .bind(m.digest.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Why the first of `wanted` cannot be referenced from `repo_id`: absent from `table`
/// (`repo_blobs` or `manifests`), or stored with another size than its descriptor states.
/// One query per 500 digests.
async fn first_refused(
    conn: &mut SqliteConnection,
    table: &'static str,
    repo_id: i64,
    wanted: &[(Digest, i64)],
) -> Result<Option<StoreError>, StoreError> {
    for chunk in wanted.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(",");
        let sql =
            format!("SELECT digest, size FROM {table} WHERE repo_id = ? AND digest IN ({marks})");
        let mut q = sqlx::query(&sql).bind(repo_id);
        for (d, _) in chunk {
            q = q.bind(d.to_string());
        }
        let found: HashMap<String, i64> = q
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if let Some(refused) = first_refusal(chunk, &found, table == "manifests") {
            return Ok(Some(refused));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod group_tests {
    use super::*;
    use wharf_core::digest::Algorithm;

    fn manifest(repo: &str, body: &str, tag: &str, blobs: &[(Digest, i64)]) -> NewManifest {
        let body = body.as_bytes().to_vec();
        NewManifest {
            repo: RepoName::parse(repo).unwrap(),
            digest: Digest::of(Algorithm::Sha256, &body),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body,
            artifact_type: None,
            subject: None,
            annotations: None,
            config_media_type: None,
            config_digest: None,
            required_blobs: blobs.to_vec(),
            required_manifests: Vec::new(),
            referenced_blobs: blobs.iter().map(|(d, _)| d.clone()).collect(),
            tags: vec![Tag::parse(tag).unwrap()],
            quarantine: None,
        }
    }

    fn job(m: NewManifest) -> PutJob {
        PutJob::new(m, Vec::new(), Subscribers::default(), oneshot::channel().0)
    }

    async fn tagged(meta: &Meta, repo: &str, tag: &str) -> Option<Digest> {
        meta.get_manifest(
            &RepoName::parse(repo).unwrap(),
            &Reference::Tag(Tag::parse(tag).unwrap()),
            false,
        )
        .await
        .unwrap()
        .map(|r| r.digest)
    }

    /// A group of plain puts is checked and written in one go. A put the one-go path finds
    /// invalid (a missing blob, a wrong size, a new repository, a child earlier in the same
    /// group) writes nothing there and goes put by put, which names the refusal, creates the
    /// repository or finds the child; nothing is stored twice.
    #[tokio::test]
    async fn groups_are_written_together_or_put_by_put_with_the_same_results() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("t.db")).await.unwrap();
        let repo = RepoName::parse("a").unwrap();
        let blob = Digest::of(Algorithm::Sha256, b"layer");
        meta.link_blob(&repo, &blob, 5).await.unwrap();
        let lane = FastLane::default();
        let locks = crate::attrs::LockFlag::default();

        // All plain (one blob stated twice): together.
        let mut jobs = vec![
            job(manifest(
                "a",
                "{\"n\":1}",
                "one",
                &[(blob.clone(), 5), (blob.clone(), 5)],
            )),
            job(manifest("a", "{\"n\":2}", "two", &[(blob.clone(), 5)])),
        ];
        let mut held = HeldConn::acquire(&meta.write).await.unwrap();
        let (written, _) = group_in_one(held.tx(), &mut jobs, &lane).await.unwrap();
        assert_eq!(written, vec![Some(0), Some(0)], "a plain group goes in one");
        assert_eq!(
            tagged(&meta, "a", "one").await,
            Some(jobs[0].m.digest.clone())
        );
        assert_eq!(
            tagged(&meta, "a", "two").await,
            Some(jobs[1].m.digest.clone())
        );
        let refs = || async {
            sqlx::query("SELECT COUNT(*) FROM manifest_blobs WHERE digest = ?")
                .bind(blob.to_string())
                .fetch_one(&meta.read)
                .await
                .unwrap()
                .get::<i64, _>(0)
        };
        assert_eq!(refs().await, 2, "garbage collection sees both references");

        // A refusal, a wrong size, an index of a child earlier in the group, a new
        // repository.
        let missing = Digest::of(Algorithm::Sha256, b"not stored");
        let mixed = |n: u32| {
            let child = manifest(
                "a",
                &format!("{{\"c\":{n}}}"),
                "child",
                &[(blob.clone(), 5)],
            );
            let mut index = manifest("a", &format!("{{\"i\":{n}}}"), "index", &[]);
            index.required_manifests = vec![(child.digest.clone(), child.body.len() as i64)];
            vec![
                job(child),
                job(manifest(
                    "a",
                    &format!("{{\"r\":{n}}}"),
                    "refused",
                    &[(missing.clone(), 1)],
                )),
                job(manifest(
                    "a",
                    &format!("{{\"s\":{n}}}"),
                    "sized",
                    &[(blob.clone(), 6)],
                )),
                job(index),
                job(manifest(&format!("b{n}"), "{\"n\":6}", "fresh", &[])),
            ]
        };
        let mut jobs = mixed(1);
        let (written, _) = group_in_one(held.tx(), &mut jobs, &lane).await.unwrap();
        assert_eq!(
            written,
            vec![Some(0), None, None, None, None],
            "the invalid puts wrote nothing; the index, checked before its child was \
             written, is left to go put by put"
        );
        assert_eq!(tagged(&meta, "a", "index").await, None);
        assert_eq!(tagged(&meta, "a", "refused").await, None);
        assert_eq!(tagged(&meta, "a", "sized").await, None);
        assert_eq!(tagged(&meta, "b1", "fresh").await, None);

        // The whole group through the writer's path: the rest put by put.
        let mut jobs = mixed(2);
        let results = run_group(&mut held, &mut jobs, &lane, &locks)
            .await
            .unwrap();
        assert!(results[0].is_ok(), "{results:?}");
        assert!(
            matches!(&results[1], Err(StoreError::MissingBlob(d)) if *d == missing),
            "{results:?}"
        );
        assert!(
            matches!(
                &results[2],
                Err(StoreError::SizeMismatch {
                    stated: 6,
                    stored: 5,
                    ..
                })
            ),
            "{results:?}"
        );
        assert!(results[3].is_ok(), "the index finds its child: {results:?}");
        assert!(results[4].is_ok(), "{results:?}");
        assert_eq!(tagged(&meta, "a", "refused").await, None);
        assert_eq!(
            tagged(&meta, "a", "index").await,
            Some(jobs[3].m.digest.clone())
        );
        assert_eq!(
            tagged(&meta, "b2", "fresh").await,
            Some(jobs[4].m.digest.clone())
        );
        assert_eq!(refs().await, 4, "and both children's");
        let manifests: i64 = sqlx::query("SELECT COUNT(*) FROM manifests")
            .fetch_one(&meta.read)
            .await
            .unwrap()
            .get(0);
        // one, two, two children, the second index, the fresh one in b2.
        assert_eq!(manifests, 6);

        // Two puts moving one tag in one group: the later one wins, as put by put.
        let mut jobs = vec![
            job(manifest("a", "{\"m\":1}", "moved", &[(blob.clone(), 5)])),
            job(manifest("a", "{\"m\":2}", "moved", &[(blob.clone(), 5)])),
        ];
        let (written, _) = group_in_one(held.tx(), &mut jobs, &lane).await.unwrap();
        assert_eq!(written, vec![Some(0), Some(0)]);
        assert_eq!(
            tagged(&meta, "a", "moved").await,
            Some(jobs[1].m.digest.clone())
        );

        // The largest group the writer forms fits SQLite's limits (parameters, text).
        let mut jobs: Vec<PutJob> = (0..MAX_GROUP)
            .map(|i| {
                job(manifest(
                    "a",
                    &format!("{{\"big\":{i}}}"),
                    &format!("big{i}"),
                    &[(blob.clone(), 5)],
                ))
            })
            .collect();
        let (written, _) = group_in_one(held.tx(), &mut jobs, &lane).await.unwrap();
        assert!(written.iter().all(|w| w.is_some()), "{written:?}");
        assert_eq!(
            tagged(&meta, "a", &format!("big{}", MAX_GROUP - 1)).await,
            Some(jobs[MAX_GROUP - 1].m.digest.clone())
        );
    }
}
