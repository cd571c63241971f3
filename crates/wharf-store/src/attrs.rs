//! ACR's changeable attributes behind a handle of their own: the locks (`writeEnabled`,
//! `deleteEnabled`, `readEnabled`, `listEnabled`) of repositories, tags and manifests, the
//! repository's `teleportEnabled`, the quarantine state of manifests, and the reads the
//! `/acr/v1` shapes need (times, counts, a manifest's tags).
//!
//! The lock checks that guard a change (`*_refused`) run on the connection of the change's
//! own write transaction, so a concurrent PATCH cannot slip between check and change (the
//! store has one write connection: the PATCH either committed before the check or runs after
//! the change).
//!
//! The push path must not pay for locks nobody set: [`LockFlag`] says whether any lock exists
//! at all. It is raised before a PATCH that sets a lock begins its transaction (so a push that
//! reads it lowered holds the write connection before that PATCH does), and recomputed after
//! every attribute change, under a mutex that serializes attribute changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{Row, SqliteConnection, SqlitePool};
use wharf_core::{Digest, RepoName, Tag};

use crate::StoreError;
use crate::db::WriteTx;
use crate::meta::now_ms;
use crate::outbox::{FastLane, OutboxEvent, Subscribers};

/// Quarantine states ACR uses.
pub const QUARANTINED: &str = "Quarantined";
pub const PASSED: &str = "Passed";
pub const FAILED: &str = "Failed";

/// Whether any lock (an attribute set to false) exists anywhere. See the module docs.
#[derive(Debug, Default)]
pub struct LockFlag {
    any: AtomicBool,
    /// Serializes attribute changes and the recomputation that follows each.
    changes: tokio::sync::Mutex<()>,
    /// Whether any manifest is quarantined (or failed), kept with the locks.
    pub(crate) quarantine: QuarantineFlag,
}

/// Whether any manifest anywhere is `Quarantined` or `Failed`: blob GET and HEAD, the
/// registry's hottest reads, look for quarantined references only then.
///
/// Raised by a quarantined push inside its transaction, on the single write connection, and
/// by a PATCH that fails a manifest before its transaction begins; so once such a change has
/// committed the flag is up. It is lowered only by [`QuarantineFlag::recompute`] (after an
/// attribute change, and at open), and only if nothing raised it while the recomputation's
/// query ran: the query runs on the write connection, so a push that raised the flag before
/// it has committed before it, and one after it bumps the generation.
#[derive(Debug, Default)]
pub struct QuarantineFlag {
    any: AtomicBool,
    /// How often the flag was raised; guards the lowering (see above).
    raised: std::sync::Mutex<u64>,
}

impl QuarantineFlag {
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    fn generation(&self) -> std::sync::MutexGuard<'_, u64> {
        // A panic elsewhere while holding it cannot leave the counter inconsistent.
        self.raised.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn raise(&self) {
        let mut g = self.generation();
        *g = g.wrapping_add(1);
        self.any.store(true, Ordering::Release);
    }

    pub(crate) async fn recompute(&self, write: &SqlitePool) -> Result<(), StoreError> {
        let before = *self.generation();
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM manifests \
             WHERE quarantine_state IN ('Quarantined', 'Failed'))",
        )
        .fetch_one(&mut *crate::db::acquire_write(write).await?)
        .await?;
        let g = self.generation();
        if row.get::<bool, _>(0) {
            self.any.store(true, Ordering::Release);
        } else if *g == before {
            self.any.store(false, Ordering::Release);
        }
        Ok(())
    }
}

impl LockFlag {
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub(crate) async fn recompute(&self, pool: &SqlitePool) -> Result<(), StoreError> {
        self.quarantine.recompute(pool).await?;
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM repositories WHERE write_enabled = 0 OR \
             delete_enabled = 0 OR read_enabled = 0 OR list_enabled = 0) \
             OR EXISTS (SELECT 1 FROM tags WHERE write_enabled = 0 OR delete_enabled = 0 \
             OR read_enabled = 0 OR list_enabled = 0) \
             OR EXISTS (SELECT 1 FROM manifests WHERE write_enabled = 0 OR delete_enabled = 0 \
             OR read_enabled = 0 OR list_enabled = 0)",
        )
        .fetch_one(&mut *crate::db::acquire_write(pool).await?)
        .await?;
        self.any.store(row.get::<bool, _>(0), Ordering::Release);
        Ok(())
    }
}

/// The four locks of one item; true is ACR's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub write_enabled: bool,
    pub delete_enabled: bool,
    pub read_enabled: bool,
    pub list_enabled: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            write_enabled: true,
            delete_enabled: true,
            read_enabled: true,
            list_enabled: true,
        }
    }
}

/// A partial change of [`Flags`]: `None` leaves an attribute as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagsPatch {
    pub write_enabled: Option<bool>,
    pub delete_enabled: Option<bool>,
    pub read_enabled: Option<bool>,
    pub list_enabled: Option<bool>,
}

impl FlagsPatch {
    fn sets_a_lock(&self) -> bool {
        [
            self.write_enabled,
            self.delete_enabled,
            self.read_enabled,
            self.list_enabled,
        ]
        .contains(&Some(false))
    }
}

#[derive(Debug, Clone)]
pub struct RepoAttrs {
    pub name: String,
    pub created_at: i64,
    /// The latest change to the repository, its manifests or its tags.
    pub updated_at: i64,
    pub manifest_count: i64,
    pub tag_count: i64,
    pub flags: Flags,
    pub teleport_enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RepoPatch {
    pub flags: FlagsPatch,
    pub teleport_enabled: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct TagAttrs {
    pub name: String,
    pub digest: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub flags: Flags,
}

#[derive(Debug, Clone)]
pub struct ManifestAttrs {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub config_media_type: Option<String>,
    pub config_digest: Option<String>,
    pub body: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
    pub flags: Flags,
    pub quarantine_state: Option<String>,
    pub quarantine_details: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ManifestPatch {
    pub flags: FlagsPatch,
    /// `Passed` or `Failed` (checked by the caller).
    pub quarantine_state: Option<String>,
    pub quarantine_details: Option<String>,
}

/// A quarantined manifest being released: what its held-back push needs.
#[derive(Debug, Clone)]
pub struct Release {
    pub digest: Digest,
    pub media_type: String,
    pub size: i64,
    pub config_media_type: Option<String>,
    pub config_digest: Option<String>,
    /// The JSON the push stored (see `NewManifest::quarantine`).
    pub held: Option<String>,
}

/// The handle to the changeable attributes.
#[derive(Debug, Clone)]
pub struct Attributes {
    read: SqlitePool,
    write: SqlitePool,
    locks: Arc<LockFlag>,
    lane: Arc<FastLane>,
}

impl crate::SqliteStore {
    /// The narrow handle to the changeable attributes (see the module docs).
    pub fn attributes(&self) -> Attributes {
        Attributes {
            read: self.meta.read.clone(),
            write: self.meta.write.clone(),
            locks: self.meta.locks.clone(),
            lane: self.meta.lane.clone(),
        }
    }
}

fn flags_at(r: &sqlx::sqlite::SqliteRow, i: usize) -> Flags {
    Flags {
        write_enabled: r.get(i),
        delete_enabled: r.get(i + 1),
        read_enabled: r.get(i + 2),
        list_enabled: r.get(i + 3),
    }
}

fn repo_attrs(r: &sqlx::sqlite::SqliteRow) -> RepoAttrs {
    let created: i64 = r.get(1);
    RepoAttrs {
        name: r.get(0),
        created_at: created,
        updated_at: r.get::<Option<i64>, _>(2).unwrap_or(created).max(created),
        manifest_count: r.get(3),
        tag_count: r.get(4),
        flags: flags_at(r, 5),
        teleport_enabled: r.get(9),
    }
}

fn tag_attrs(r: &sqlx::sqlite::SqliteRow) -> TagAttrs {
    let updated: i64 = r.get(3);
    TagAttrs {
        name: r.get(0),
        digest: r.get(1),
        created_at: r.get::<Option<i64>, _>(2).unwrap_or(updated),
        updated_at: updated,
        flags: flags_at(r, 4),
    }
}

const REPO_SELECT: &str = "SELECT r.name, r.created_at, \
     MAX(COALESCE(r.updated_at, 0), \
         COALESCE((SELECT MAX(COALESCE(m.updated_at, m.created_at)) FROM manifests m WHERE m.repo_id = r.id), 0), \
         COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repo_id = r.id), 0)), \
     (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id), \
     (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id), \
     r.write_enabled, r.delete_enabled, r.read_enabled, r.list_enabled, r.teleport_enabled \
     FROM repositories r WHERE r.name = ?";

const TAG_COLS: &str = "t.name, t.digest, t.created_at, t.updated_at, \
     t.write_enabled, t.delete_enabled, t.read_enabled, t.list_enabled";

const MANIFEST_COLS: &str = "m.id, m.digest, m.media_type, m.size, m.config_media_type, \
     m.config_digest, m.body, m.created_at, m.updated_at, m.write_enabled, m.delete_enabled, \
     m.read_enabled, m.list_enabled, m.quarantine_state, m.quarantine_details";

fn manifest_attrs(r: &sqlx::sqlite::SqliteRow) -> (i64, ManifestAttrs) {
    let created: i64 = r.get(7);
    (
        r.get(0),
        ManifestAttrs {
            digest: r.get(1),
            media_type: r.get(2),
            size: r.get(3),
            config_media_type: r.get(4),
            config_digest: r.get(5),
            body: r.get(6),
            created_at: created,
            updated_at: r.get::<Option<i64>, _>(8).unwrap_or(created),
            flags: flags_at(r, 9),
            quarantine_state: r.get(13),
            quarantine_details: r.get(14),
            tags: Vec::new(),
        },
    )
}

async fn repo_id_of(
    conn: &mut SqliteConnection,
    repo: &RepoName,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query("SELECT id FROM repositories WHERE name = ?")
        .bind(repo.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| r.get(0)))
}

/// `SET` clauses and values of a flags patch.
fn set_clauses(p: &FlagsPatch) -> (Vec<&'static str>, Vec<bool>) {
    let mut cols = Vec::new();
    let mut vals = Vec::new();
    for (col, v) in [
        ("write_enabled = ?", p.write_enabled),
        ("delete_enabled = ?", p.delete_enabled),
        ("read_enabled = ?", p.read_enabled),
        ("list_enabled = ?", p.list_enabled),
    ] {
        if let Some(v) = v {
            cols.push(col);
            vals.push(v);
        }
    }
    (cols, vals)
}

/// A retention candidate: an untagged manifest with no lock.
#[derive(Debug, Clone)]
pub struct StaleManifest {
    pub repo: String,
    pub digest: String,
}

impl Attributes {
    /// Untagged manifests last updated (pushed, untagged, patched) before `cutoff_ms`, that
    /// no lock keeps (`writeEnabled`/`deleteEnabled` on the manifest or its repository), that
    /// are not attached to another manifest (`subject`: signatures, SBOMs), and that are not
    /// quarantined or failed (their push was never announced: a `delete` for them would be
    /// the first anyone hears of them). Whether another manifest references one (an index's
    /// child, a referrer's subject) is checked by the delete's own transaction.
    pub async fn stale_untagged(&self, cutoff_ms: i64) -> Result<Vec<StaleManifest>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE COALESCE(m.updated_at, m.created_at) < ? AND m.subject IS NULL \
             AND COALESCE(m.quarantine_state, '') NOT IN ('Quarantined', 'Failed') \
             AND m.write_enabled AND m.delete_enabled AND r.write_enabled AND r.delete_enabled \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest) \
             ORDER BY m.id",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StaleManifest {
                repo: r.get(0),
                digest: r.get(1),
            })
            .collect())
    }

    /// Whether any lock exists at all (the fast paths' test).
    pub fn any_locks(&self) -> bool {
        self.locks.any()
    }

    /// Whether any manifest is quarantined or failed (the blob reads' test).
    pub fn any_quarantined(&self) -> bool {
        self.locks.quarantine.any()
    }

    /// Whether, in `repo`, the blob `digest` belongs only to quarantined (or failed) images:
    /// referenced (as config, layer or artifact blob) by some quarantined manifest and by no
    /// other. Such a blob is as blocked as its manifest for whoever may not read quarantined
    /// images. A blob no manifest references (an upload whose manifest is yet to come) is not.
    /// Free unless some manifest anywhere is quarantined.
    pub async fn blob_quarantined(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        if !self.locks.quarantine.any() {
            return Ok(false);
        }
        // References are read from the stored bodies (JSON stored as a BLOB, hence the
        // CAST: SQLite reads a BLOB as its binary JSONB). The quarantined manifests, few, are
        // looked at first; the others only if one of them references the blob.
        const REFS: &str = "(m.config_digest = ?2 OR (json_valid(CAST(m.body AS TEXT)) AND (\
             EXISTS (SELECT 1 FROM json_each(CAST(m.body AS TEXT), '$.layers') l \
                     WHERE json_extract(l.value, '$.digest') = ?2) \
             OR EXISTS (SELECT 1 FROM json_each(CAST(m.body AS TEXT), '$.blobs') b \
                     WHERE json_extract(b.value, '$.digest') = ?2))))";
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = ?1 AND m.quarantine_state IN ('Quarantined', 'Failed') AND {REFS}) \
             AND NOT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = ?1 AND COALESCE(m.quarantine_state, '') NOT IN ('Quarantined', 'Failed') \
             AND {REFS})"
        );
        let row = sqlx::query(&sql)
            .bind(repo.as_str())
            .bind(digest.to_string())
            .fetch_one(&self.read)
            .await?;
        Ok(row.get::<bool, _>(0))
    }

    pub async fn repository(&self, repo: &RepoName) -> Result<Option<RepoAttrs>, StoreError> {
        let row = sqlx::query(REPO_SELECT)
            .bind(repo.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(repo_attrs))
    }

    /// Whether `repo` may be pulled from (its `readEnabled`). Unknown repositories are
    /// readable (the read then fails on its own).
    pub async fn repo_readable(&self, repo: &RepoName) -> Result<bool, StoreError> {
        if !self.locks.any() {
            return Ok(true);
        }
        let row = sqlx::query("SELECT read_enabled FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_none_or(|r| r.get::<bool, _>(0)))
    }

    /// Whether `repo` may be written to (its `writeEnabled`), for blob uploads and mounts.
    pub async fn repo_writable(&self, repo: &RepoName) -> Result<bool, StoreError> {
        if !self.locks.any() {
            return Ok(true);
        }
        let row = sqlx::query("SELECT write_enabled FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.is_none_or(|r| r.get::<bool, _>(0)))
    }

    /// Every tag of `repo` (`listing`: only those with `listEnabled`), by name. None: no such
    /// repository.
    /// With `listing`, unless `quarantine_reader`, tags of quarantined (or failed) manifests
    /// are left out too (see `Meta::list_tags`).
    pub async fn tags(
        &self,
        repo: &RepoName,
        listing: bool,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<TagAttrs>>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let Some(id) = repo_id_of(&mut conn, repo).await? else {
            return Ok(None);
        };
        let filter = if listing {
            let q = if quarantine_reader || !self.locks.quarantine.any() {
                ""
            } else {
                " AND NOT EXISTS (SELECT 1 FROM manifests qm WHERE qm.repo_id = t.repo_id \
                 AND qm.digest = t.digest AND qm.quarantine_state IN ('Quarantined', 'Failed'))"
            };
            format!(" AND t.list_enabled = 1{q}")
        } else {
            String::new()
        };
        let rows = sqlx::query(&format!(
            "SELECT {TAG_COLS} FROM tags t WHERE t.repo_id = ?{filter} ORDER BY t.name"
        ))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(rows.iter().map(tag_attrs).collect()))
    }

    /// One tag. Outer None: no such repository; inner: no such tag.
    pub async fn tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let Some(id) = repo_id_of(&mut conn, repo).await? else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {TAG_COLS} FROM tags t WHERE t.repo_id = ? AND t.name = ?"
        ))
        .bind(id)
        .bind(tag.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(Some(row.as_ref().map(tag_attrs)))
    }

    /// Every manifest of `repo` (`listing`: only those with `listEnabled`), oldest first, with
    /// its tags. Bodies are read only for those whose media type is in `bodies_of` (a listing
    /// reads the bodies of its one page afterwards, not of the whole repository); the others
    /// come with an empty body. None: no such repository.
    pub async fn manifests(
        &self,
        repo: &RepoName,
        listing: bool,
        bodies_of: &[&str],
    ) -> Result<Option<Vec<ManifestAttrs>>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let Some(id) = repo_id_of(&mut conn, repo).await? else {
            return Ok(None);
        };
        let filter = if listing {
            " AND m.list_enabled = 1"
        } else {
            ""
        };
        let marks = if bodies_of.is_empty() {
            "NULL".to_owned()
        } else {
            vec!["?"; bodies_of.len()].join(",")
        };
        let cols = MANIFEST_COLS.replace(
            "m.body,",
            &format!("CASE WHEN m.media_type IN ({marks}) THEN m.body ELSE x'' END,"),
        );
        let sql =
            format!("SELECT {cols} FROM manifests m WHERE m.repo_id = ?{filter} ORDER BY m.id");
        let mut q = sqlx::query(&sql);
        for t in bodies_of {
            q = q.bind(*t);
        }
        let rows = q.bind(id).fetch_all(&mut *conn).await?;
        let tags = sqlx::query("SELECT digest, name FROM tags WHERE repo_id = ? ORDER BY name")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
        let mut by_digest: std::collections::HashMap<String, Vec<String>> = Default::default();
        for t in &tags {
            by_digest
                .entry(t.get(0))
                .or_default()
                .push(t.get::<String, _>(1));
        }
        Ok(Some(
            rows.iter()
                .map(|r| {
                    let (_, mut m) = manifest_attrs(r);
                    m.tags = by_digest.remove(&m.digest).unwrap_or_default();
                    m
                })
                .collect(),
        ))
    }

    /// One manifest. Outer None: no such repository; inner: no such manifest.
    pub async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Option<ManifestAttrs>>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let Some(id) = repo_id_of(&mut conn, repo).await? else {
            return Ok(None);
        };
        Ok(Some(manifest_in(&mut conn, id, digest).await?))
    }

    /// Applies a repository patch; None if the repository does not exist.
    pub async fn update_repository(
        &self,
        repo: &RepoName,
        patch: RepoPatch,
    ) -> Result<Option<RepoAttrs>, StoreError> {
        let _serial = self.locks.changes.lock().await;
        if patch.flags.sets_a_lock() {
            self.locks.any.store(true, Ordering::Release);
        }
        let mut tx = WriteTx::begin(&self.write).await?;
        let (mut cols, vals) = set_clauses(&patch.flags);
        if patch.teleport_enabled.is_some() {
            cols.push("teleport_enabled = ?");
        }
        cols.push("updated_at = ?");
        let sql = format!("UPDATE repositories SET {} WHERE name = ?", cols.join(", "));
        let mut q = sqlx::query(&sql);
        for v in vals {
            q = q.bind(v);
        }
        if let Some(t) = patch.teleport_enabled {
            q = q.bind(t);
        }
        let res = q
            .bind(now_ms())
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            tx.rollback().await;
            self.locks.recompute(&self.write).await?;
            return Ok(None);
        }
        let row = sqlx::query(REPO_SELECT)
            .bind(repo.as_str())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        self.locks.recompute(&self.write).await?;
        Ok(Some(repo_attrs(&row)))
    }

    /// Applies a tag patch. Outer None: no such repository; inner: no such tag.
    pub async fn update_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        patch: FlagsPatch,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        let _serial = self.locks.changes.lock().await;
        if patch.sets_a_lock() {
            self.locks.any.store(true, Ordering::Release);
        }
        let out = self.update_tag_tx(repo, tag, patch).await;
        self.locks.recompute(&self.write).await?;
        out
    }

    async fn update_tag_tx(
        &self,
        repo: &RepoName,
        tag: &Tag,
        patch: FlagsPatch,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        let mut tx = WriteTx::begin(&self.write).await?;
        let Some(id) = repo_id_of(&mut tx, repo).await? else {
            tx.rollback().await;
            return Ok(None);
        };
        let (cols, vals) = set_clauses(&patch);
        if !cols.is_empty() {
            let sql = format!(
                "UPDATE tags SET {} WHERE repo_id = ? AND name = ?",
                cols.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for v in vals {
                q = q.bind(v);
            }
            q.bind(id).bind(tag.as_str()).execute(&mut *tx).await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {TAG_COLS} FROM tags t WHERE t.repo_id = ? AND t.name = ?"
        ))
        .bind(id)
        .bind(tag.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(row.as_ref().map(tag_attrs)))
    }

    /// Applies a manifest patch. A change of quarantine state from `Quarantined` (or
    /// `Failed`) to `Passed` of a manifest with a held-back push releases the manifest: `release` builds the push events that were
    /// held back, and they are written to the outbox in the same transaction. Returns the
    /// manifest and how many deliveries were queued. Outer None: no such repository; inner:
    /// no such manifest.
    pub async fn update_manifest<F>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        patch: ManifestPatch,
        hooks: &Subscribers,
        release: F,
    ) -> Result<Option<Option<(ManifestAttrs, usize)>>, StoreError>
    where
        F: FnOnce(&Release) -> Vec<OutboxEvent>,
    {
        let _serial = self.locks.changes.lock().await;
        if patch.flags.sets_a_lock() {
            self.locks.any.store(true, Ordering::Release);
        }
        // Failing a manifest blocks its blobs: the flag goes up before the change commits.
        if patch
            .quarantine_state
            .as_deref()
            .is_some_and(|s| s != PASSED)
        {
            self.locks.quarantine.raise();
        }
        let out = self
            .update_manifest_tx(repo, digest, patch, hooks, release)
            .await;
        self.locks.recompute(&self.write).await?;
        out
    }

    async fn update_manifest_tx<F>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        patch: ManifestPatch,
        hooks: &Subscribers,
        release: F,
    ) -> Result<Option<Option<(ManifestAttrs, usize)>>, StoreError>
    where
        F: FnOnce(&Release) -> Vec<OutboxEvent>,
    {
        let mut tx = WriteTx::begin(&self.write).await?;
        let Some(id) = repo_id_of(&mut tx, repo).await? else {
            tx.rollback().await;
            return Ok(None);
        };
        let Some(before) = manifest_in(&mut tx, id, digest).await? else {
            tx.rollback().await;
            return Ok(Some(None));
        };
        // What the quarantined push held back, read before the UPDATE clears it.
        let held: Option<String> =
            sqlx::query("SELECT quarantine_push FROM manifests WHERE repo_id = ? AND digest = ?")
                .bind(id)
                .bind(digest.to_string())
                .fetch_one(&mut *tx)
                .await?
                .get(0);
        let (mut cols, vals) = set_clauses(&patch.flags);
        let mut texts: Vec<Option<String>> = Vec::new();
        if let Some(s) = &patch.quarantine_state {
            cols.push("quarantine_state = ?");
            texts.push(Some(s.clone()));
        }
        if let Some(d) = &patch.quarantine_details {
            cols.push("quarantine_details = ?");
            texts.push(Some(d.clone()));
        }
        // Only a manifest whose push is still held back is released: one that was passed
        // once, then failed, then passed again had its push announced already (a push made
        // while it was failed holds a new one, `hold_again`).
        let releasing = patch.quarantine_state.as_deref() == Some(PASSED)
            && held.is_some()
            && matches!(
                before.quarantine_state.as_deref(),
                Some(QUARANTINED) | Some(FAILED)
            );
        if releasing {
            cols.push("quarantine_push = NULL");
        }
        cols.push("updated_at = ?");
        let sql = format!(
            "UPDATE manifests SET {} WHERE repo_id = ? AND digest = ?",
            cols.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for v in vals {
            q = q.bind(v);
        }
        for t in texts {
            q = q.bind(t);
        }
        q.bind(now_ms())
            .bind(id)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        let mut queued = 0;
        let mut fast = Vec::new();
        if releasing {
            let r = Release {
                digest: digest.clone(),
                media_type: before.media_type.clone(),
                size: before.size,
                config_media_type: before.config_media_type.clone(),
                config_digest: before.config_digest.clone(),
                held,
            };
            let enq = crate::outbox::enqueue(&mut tx, &release(&r), hooks, &self.lane).await?;
            queued = enq.queued;
            fast = enq.fast;
        }
        let after = manifest_in(&mut tx, id, digest).await?;
        tx.commit().await?;
        self.lane.hand_over(fast);
        Ok(Some(after.map(|m| (m, queued))))
    }
}

async fn manifest_in(
    conn: &mut SqliteConnection,
    repo_id: i64,
    digest: &Digest,
) -> Result<Option<ManifestAttrs>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {MANIFEST_COLS} FROM manifests m WHERE m.repo_id = ? AND m.digest = ?"
    ))
    .bind(repo_id)
    .bind(digest.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (_, mut m) = manifest_attrs(&row);
    m.tags = sqlx::query("SELECT name FROM tags WHERE repo_id = ? AND digest = ? ORDER BY name")
        .bind(repo_id)
        .bind(digest.to_string())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(m))
}

// ---- lock checks inside a change's write transaction --------------------------------------

const LOCKED_W: &str = "write_enabled = 0";
const LOCKED_WD: &str = "(write_enabled = 0 OR delete_enabled = 0)";

async fn exists(
    conn: &mut SqliteConnection,
    sql: &str,
    binds: &[&str],
    id: i64,
) -> Result<bool, StoreError> {
    let mut q = sqlx::query(sql).bind(id);
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_optional(conn).await?.is_some())
}

/// A push of `digest` under `tags` into repository `repo_id`: refused if the repository is
/// write-locked, if the manifest exists and is write-locked (an update of it), or if any of
/// the tags exists and is write-locked (an overwrite).
pub(crate) async fn push_refused(
    conn: &mut SqliteConnection,
    repo_id: i64,
    digest: &str,
    tags: &[Tag],
) -> Result<bool, StoreError> {
    if exists(
        conn,
        &format!("SELECT 1 FROM repositories WHERE id = ? AND {LOCKED_W}"),
        &[],
        repo_id,
    )
    .await?
        || exists(
            conn,
            &format!("SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ? AND {LOCKED_W}"),
            &[digest],
            repo_id,
        )
        .await?
    {
        return Ok(true);
    }
    for t in tags {
        if exists(
            conn,
            &format!("SELECT 1 FROM tags WHERE repo_id = ? AND name = ? AND {LOCKED_W}"),
            &[t.as_str()],
            repo_id,
        )
        .await?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A manifest delete (which also removes its tags): refused if the repository, the manifest
/// or any of its tags is write- or delete-locked.
pub(crate) async fn delete_manifest_refused(
    conn: &mut SqliteConnection,
    repo_id: i64,
    digest: &str,
) -> Result<bool, StoreError> {
    Ok(exists(
        conn,
        &format!("SELECT 1 FROM repositories WHERE id = ? AND {LOCKED_WD}"),
        &[],
        repo_id,
    )
    .await?
        || exists(
            conn,
            &format!("SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ? AND {LOCKED_WD}"),
            &[digest],
            repo_id,
        )
        .await?
        || exists(
            conn,
            &format!("SELECT 1 FROM tags WHERE repo_id = ? AND digest = ? AND {LOCKED_WD}"),
            &[digest],
            repo_id,
        )
        .await?)
}

/// An untag: refused if the repository or the tag is write- or delete-locked.
pub(crate) async fn untag_refused(
    conn: &mut SqliteConnection,
    repo_id: i64,
    tag: &str,
) -> Result<bool, StoreError> {
    Ok(exists(
        conn,
        &format!("SELECT 1 FROM repositories WHERE id = ? AND {LOCKED_WD}"),
        &[],
        repo_id,
    )
    .await?
        || exists(
            conn,
            &format!("SELECT 1 FROM tags WHERE repo_id = ? AND name = ? AND {LOCKED_WD}"),
            &[tag],
            repo_id,
        )
        .await?)
}

/// A repository delete: refused if the repository or anything in it is write- or
/// delete-locked.
pub(crate) async fn delete_repo_refused(
    conn: &mut SqliteConnection,
    repo_id: i64,
) -> Result<bool, StoreError> {
    Ok(exists(
        conn,
        &format!("SELECT 1 FROM repositories WHERE id = ? AND {LOCKED_WD}"),
        &[],
        repo_id,
    )
    .await?
        || exists(
            conn,
            &format!("SELECT 1 FROM manifests WHERE repo_id = ? AND {LOCKED_WD} LIMIT 1"),
            &[],
            repo_id,
        )
        .await?
        || exists(
            conn,
            &format!("SELECT 1 FROM tags WHERE repo_id = ? AND {LOCKED_WD} LIMIT 1"),
            &[],
            repo_id,
        )
        .await?)
}

/// A blob delete: refused if the repository is write- or delete-locked.
pub(crate) async fn delete_blob_refused(
    conn: &mut SqliteConnection,
    repo_id: i64,
) -> Result<bool, StoreError> {
    exists(
        conn,
        &format!("SELECT 1 FROM repositories WHERE id = ? AND {LOCKED_WD}"),
        &[],
        repo_id,
    )
    .await
}

/// A held push (JSON `{"tags":[…],"id","host","useragent"}`) joined with a later one: the
/// tags of both, the request of the first.
pub(crate) fn merge_held(old: Option<String>, new: Option<&str>) -> Option<String> {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    let (Some(mut old_v), Some(new_v)) = (old.as_deref().and_then(parse), new.and_then(parse))
    else {
        return old.or_else(|| new.map(str::to_owned));
    };
    let mut tags: Vec<serde_json::Value> = old_v
        .get("tags")
        .and_then(|t| t.as_array())
        .cloned()
        .unwrap_or_default();
    for t in new_v
        .get("tags")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
    {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    old_v["tags"] = serde_json::Value::Array(tags);
    Some(old_v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The push path's flag: up while any lock exists, down again once the last one is
    /// lifted, and right after a reopen.
    #[tokio::test]
    async fn the_lock_flag_follows_the_locks() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::StoreOptions::default();
        let repo = RepoName::parse("a/b").unwrap();
        let patch = |v| RepoPatch {
            flags: FlagsPatch {
                delete_enabled: Some(v),
                ..Default::default()
            },
            teleport_enabled: None,
        };
        {
            let store = crate::SqliteStore::open(dir.path(), &opts).await.unwrap();
            let a = store.attributes();
            assert!(!a.any_locks());
            // No such repository: nothing changes.
            assert!(
                a.update_repository(&repo, patch(false))
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(!a.any_locks());
            store
                .meta
                .link_blob(&repo, &Digest::sha256_of(b"x"), 1)
                .await
                .unwrap();
            let r = a
                .update_repository(&repo, patch(false))
                .await
                .unwrap()
                .unwrap();
            assert!(!r.flags.delete_enabled && r.flags.write_enabled);
            assert!(a.any_locks());
            a.update_repository(&repo, patch(true)).await.unwrap();
            assert!(!a.any_locks());
            a.update_repository(&repo, patch(false)).await.unwrap();
        }
        let store = crate::SqliteStore::open(dir.path(), &opts).await.unwrap();
        assert!(store.attributes().any_locks(), "recomputed at open");
    }

    /// The blob reads' flag: up while some manifest is quarantined or failed (also after a
    /// reopen), and lowered by a recomputation once none is.
    #[tokio::test]
    async fn the_quarantine_flag_follows_the_quarantined_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::StoreOptions::default();
        let repo = RepoName::parse("q/flag").unwrap();
        let layer = Digest::sha256_of(b"layer");
        let body = format!(r#"{{"schemaVersion":2,"layers":[{{"digest":"{layer}","size":5}}]}}"#);
        {
            let store = crate::SqliteStore::open(dir.path(), &opts).await.unwrap();
            let a = store.attributes();
            let flag = &store.meta.locks.quarantine;
            assert!(!a.any_quarantined());
            // Raised for a change that then stored nothing: the next recomputation lowers it.
            flag.raise();
            assert!(a.any_quarantined());
            flag.recompute(&store.meta.write).await.unwrap();
            assert!(!a.any_quarantined());

            store.meta.link_blob(&repo, &layer, 5).await.unwrap();
            assert!(!a.blob_quarantined(&repo, &layer).await.unwrap());
            sqlx::query(
                "INSERT INTO manifests (repo_id, digest, media_type, size, body, created_at, \
                 quarantine_state) SELECT id, 'sha256:m', 'application/vnd.oci.image.manifest.v1+json', \
                 1, CAST(? AS BLOB), 0, 'Failed' FROM repositories WHERE name = 'q/flag'",
            )
            .bind(&body)
            .execute(&store.meta.write)
            .await
            .unwrap();
            flag.recompute(&store.meta.write).await.unwrap();
            assert!(a.any_quarantined());
            assert!(a.blob_quarantined(&repo, &layer).await.unwrap());
            let other = RepoName::parse("q/other").unwrap();
            assert!(!a.blob_quarantined(&other, &layer).await.unwrap());
        }
        let store = crate::SqliteStore::open(dir.path(), &opts).await.unwrap();
        assert!(store.attributes().any_quarantined(), "recomputed at open");
        sqlx::query("UPDATE manifests SET quarantine_state = 'Passed'")
            .execute(&store.meta.write)
            .await
            .unwrap();
        store
            .meta
            .locks
            .quarantine
            .recompute(&store.meta.write)
            .await
            .unwrap();
        assert!(!store.attributes().any_quarantined());
        let layer_repo = RepoName::parse("q/flag").unwrap();
        assert!(
            !store
                .attributes()
                .blob_quarantined(&layer_repo, &layer)
                .await
                .unwrap()
        );
    }

    #[test]
    fn held_pushes_merge_their_tags() {
        let a = r#"{"tags":["a"],"id":"1","host":"h","useragent":null}"#;
        let b = r#"{"tags":["b","a"],"id":"2","host":"h2","useragent":"x"}"#;
        let m: serde_json::Value =
            serde_json::from_str(&merge_held(Some(a.into()), Some(b)).unwrap()).unwrap();
        assert_eq!(m["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(m["id"], "1");
        assert_eq!(merge_held(None, Some(b)).as_deref(), Some(b));
    }
}
