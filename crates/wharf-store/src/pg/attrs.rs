//! ACR's changeable attributes on PostgreSQL: the same reads and patches as `crate::attrs`
//! on SQLite, over a database several nodes share.
//!
//! Differences from SQLite, and why:
//! - No in-memory flags. SQLite keeps "is any lock set" and "is any manifest quarantined"
//!   in memory, which one process owning the database makes exact. Here another node may
//!   set a lock or fail a manifest at any moment, and no notification reaches this node
//!   before that node's client hears its PATCH succeed; so [`AttributeStore::any_locks`] and
//!   [`AttributeStore::any_quarantined`] always answer true (the caller then asks the
//!   database), and every check that SQLite skips while its flag is down is made.
//! - No serialising mutex. Every patch first takes its repository's row `FOR UPDATE`, and
//!   every change in `meta.rs` that checks locks (a push, a delete, an untag) takes that row
//!   `FOR SHARE` before its checks: a patch and such a change in one repository never overlap,
//!   so a check made while a patch is in flight waits for it and reads its result (READ
//!   COMMITTED rereads the newest version of a row it locks), and a patch made while a change
//!   is in flight waits for the change. This holds for tag and manifest locks as well, whatever
//!   rows the change reads. Patches are rare; pushes (`FOR SHARE`) do not wait on each other.
//!   Of two nodes releasing one quarantined manifest at once, the second finds nothing held
//!   back (the manifest's row is also taken `FOR UPDATE`, which keeps that argument local).
//! - Which blobs a quarantined manifest holds back is read from `manifest_blobs` (the
//!   references every push records, config and layers) instead of parsing stored bodies.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use wharf_core::{Digest, RepoName, Tag};

use super::Pg;
use crate::StoreError;
use crate::attrs::{
    FAILED, Flags, FlagsPatch, ManifestAttrs, ManifestPatch, PASSED, QUARANTINED, Release,
    RepoAttrs, RepoPatch, StaleManifest, TagAttrs,
};
use crate::db::now_ms;
use crate::handles::{AttributeStore, ReleaseEvents};
use crate::outbox::Subscribers;

#[derive(Debug)]
pub(crate) struct PgAttrs {
    pg: Pg,
}

impl PgAttrs {
    pub(crate) fn new(pg: Pg) -> Self {
        PgAttrs { pg }
    }
}

fn flags_at(r: &PgRow, i: usize) -> Flags {
    Flags {
        write_enabled: r.get(i),
        delete_enabled: r.get(i + 1),
        read_enabled: r.get(i + 2),
        list_enabled: r.get(i + 3),
    }
}

fn repo_attrs(r: &PgRow) -> RepoAttrs {
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

fn tag_attrs(r: &PgRow) -> TagAttrs {
    let updated: i64 = r.get(3);
    TagAttrs {
        name: r.get(0),
        digest: r.get(1),
        created_at: r.get::<Option<i64>, _>(2).unwrap_or(updated),
        updated_at: updated,
        flags: flags_at(r, 4),
    }
}

fn manifest_attrs(r: &PgRow) -> ManifestAttrs {
    let created: i64 = r.get(7);
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
    }
}

const REPO_SELECT: &str = "SELECT r.name, r.created_at, \
     GREATEST(COALESCE(r.updated_at, 0), \
         COALESCE((SELECT MAX(COALESCE(m.updated_at, m.created_at)) FROM manifests m WHERE m.repo_id = r.id), 0), \
         COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repo_id = r.id), 0)), \
     (SELECT COUNT(*) FROM manifests m WHERE m.repo_id = r.id), \
     (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id), \
     r.write_enabled, r.delete_enabled, r.read_enabled, r.list_enabled, r.teleport_enabled \
     FROM repositories r WHERE r.name = $1";

const TAG_COLS: &str = "t.name, t.digest, t.created_at, t.updated_at, \
     t.write_enabled, t.delete_enabled, t.read_enabled, t.list_enabled";

const MANIFEST_COLS: &str = "m.id, m.digest, m.media_type, m.size, m.config_media_type, \
     m.config_digest, m.body, m.created_at, m.updated_at, m.write_enabled, m.delete_enabled, \
     m.read_enabled, m.list_enabled, m.quarantine_state, m.quarantine_details";

async fn repo_id_of(conn: &mut PgConnection, repo: &RepoName) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query("SELECT id FROM repositories WHERE name = $1")
        .bind(repo.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| r.get(0)))
}

/// A patch's first step: the repository's id, its row locked `FOR UPDATE` until the patch
/// commits (see the module docs).
async fn lock_repo(conn: &mut PgConnection, repo: &RepoName) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query("SELECT id FROM repositories WHERE name = $1 FOR UPDATE")
            .bind(repo.as_str())
            .fetch_optional(conn)
            .await?
            .map(|r| r.get(0)),
    )
}

/// `SET` clauses of a flags patch, numbered from `$first`, and their values.
fn set_clauses(p: &FlagsPatch, first: usize) -> (Vec<String>, Vec<bool>) {
    let mut cols = Vec::new();
    let mut vals = Vec::new();
    for (col, v) in [
        ("write_enabled", p.write_enabled),
        ("delete_enabled", p.delete_enabled),
        ("read_enabled", p.read_enabled),
        ("list_enabled", p.list_enabled),
    ] {
        if let Some(v) = v {
            cols.push(format!("{col} = ${}", first + vals.len()));
            vals.push(v);
        }
    }
    (cols, vals)
}

/// One manifest with its tags, read on `conn` (inside a patch's transaction, after its
/// change).
async fn manifest_in(
    conn: &mut PgConnection,
    repo_id: i64,
    digest: &Digest,
) -> Result<Option<ManifestAttrs>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {MANIFEST_COLS} FROM manifests m WHERE m.repo_id = $1 AND m.digest = $2"
    ))
    .bind(repo_id)
    .bind(digest.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut m = manifest_attrs(&row);
    m.tags = sqlx::query("SELECT name FROM tags WHERE repo_id = $1 AND digest = $2 ORDER BY name")
        .bind(repo_id)
        .bind(digest.to_string())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(m))
}

#[async_trait]
impl AttributeStore for PgAttrs {
    /// As on SQLite (see `Attributes::stale_untagged`); the delete's own transaction checks
    /// again that each is still a candidate.
    async fn stale_untagged(&self, cutoff_ms: i64) -> Result<Vec<StaleManifest>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE COALESCE(m.updated_at, m.created_at) < $1 AND m.subject IS NULL \
             AND COALESCE(m.quarantine_state, '') NOT IN ('Quarantined', 'Failed') \
             AND m.write_enabled AND m.delete_enabled AND r.write_enabled AND r.delete_enabled \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest) \
             ORDER BY m.id",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pg.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StaleManifest {
                repo: r.get(0),
                digest: r.get(1),
            })
            .collect())
    }

    /// Always true: another node may have set a lock this node has not heard of (see the
    /// module docs). The callers then ask the database.
    fn any_locks(&self) -> bool {
        true
    }

    /// Always true, for the same reason as [`PgAttrs::any_locks`].
    fn any_quarantined(&self) -> bool {
        true
    }

    /// Whether, in `repo`, `digest` belongs only to quarantined (or failed) manifests: some
    /// such manifest references it and no other manifest does. Both lookups go through
    /// `manifest_blobs`' (repository, digest) index, so a blob no manifest references costs
    /// one index probe.
    async fn blob_quarantined(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM manifest_blobs mb \
             JOIN manifests m ON m.id = mb.manifest_id \
             JOIN repositories r ON r.id = mb.repo_id \
             WHERE r.name = $1 AND mb.digest = $2 \
             AND m.quarantine_state IN ('Quarantined', 'Failed')) \
             AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb \
             JOIN manifests m ON m.id = mb.manifest_id \
             JOIN repositories r ON r.id = mb.repo_id \
             WHERE r.name = $1 AND mb.digest = $2 \
             AND COALESCE(m.quarantine_state, '') NOT IN ('Quarantined', 'Failed'))",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_one(&self.pg.pool)
        .await?;
        Ok(row.get::<bool, _>(0))
    }

    async fn repository(&self, repo: &RepoName) -> Result<Option<RepoAttrs>, StoreError> {
        let row = sqlx::query(REPO_SELECT)
            .bind(repo.as_str())
            .fetch_optional(&self.pg.pool)
            .await?;
        Ok(row.as_ref().map(repo_attrs))
    }

    /// Unknown repositories are readable (the read then fails on its own).
    async fn repo_readable(&self, repo: &RepoName) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT read_enabled FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.pg.pool)
            .await?;
        Ok(row.is_none_or(|r| r.get::<bool, _>(0)))
    }

    async fn repo_writable(&self, repo: &RepoName) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT write_enabled FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.pg.pool)
            .await?;
        Ok(row.is_none_or(|r| r.get::<bool, _>(0)))
    }

    async fn tags(
        &self,
        repo: &RepoName,
        listing: bool,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<TagAttrs>>, StoreError> {
        let mut conn = self.pg.pool.acquire().await?;
        let Some(id) = repo_id_of(&mut conn, repo).await? else {
            return Ok(None);
        };
        let filter = match (listing, quarantine_reader) {
            (false, _) => "",
            (true, true) => " AND t.list_enabled",
            (true, false) => {
                " AND t.list_enabled AND NOT EXISTS (SELECT 1 FROM manifests qm \
                 WHERE qm.repo_id = t.repo_id AND qm.digest = t.digest \
                 AND qm.quarantine_state IN ('Quarantined', 'Failed'))"
            }
        };
        let rows = sqlx::query(&format!(
            "SELECT {TAG_COLS} FROM tags t WHERE t.repo_id = $1{filter} ORDER BY t.name"
        ))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(rows.iter().map(tag_attrs).collect()))
    }

    async fn tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        let mut conn = self.pg.pool.acquire().await?;
        let Some(id) = repo_id_of(&mut conn, repo).await? else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {TAG_COLS} FROM tags t WHERE t.repo_id = $1 AND t.name = $2"
        ))
        .bind(id)
        .bind(tag.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(Some(row.as_ref().map(tag_attrs)))
    }

    async fn manifests(
        &self,
        repo: &RepoName,
        listing: bool,
        bodies_of: &[&str],
    ) -> Result<Option<Vec<ManifestAttrs>>, StoreError> {
        let mut conn = self.pg.pool.acquire().await?;
        let Some(id) = repo_id_of(&mut conn, repo).await? else {
            return Ok(None);
        };
        let filter = if listing { " AND m.list_enabled" } else { "" };
        // Bodies only of the media types asked for (see `Attributes::manifests`).
        let cols = MANIFEST_COLS.replace(
            "m.body,",
            "CASE WHEN m.media_type = ANY($2) THEN m.body ELSE ''::bytea END,",
        );
        let rows = sqlx::query(&format!(
            "SELECT {cols} FROM manifests m WHERE m.repo_id = $1{filter} ORDER BY m.id"
        ))
        .bind(id)
        .bind(bodies_of)
        .fetch_all(&mut *conn)
        .await?;
        let tags = sqlx::query("SELECT digest, name FROM tags WHERE repo_id = $1 ORDER BY name")
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
                    let mut m = manifest_attrs(r);
                    m.tags = by_digest.remove(&m.digest).unwrap_or_default();
                    m
                })
                .collect(),
        ))
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Option<ManifestAttrs>>, StoreError> {
        let mut conn = self.pg.pool.acquire().await?;
        let Some(id) = repo_id_of(&mut conn, repo).await? else {
            return Ok(None);
        };
        Ok(Some(manifest_in(&mut conn, id, digest).await?))
    }

    /// The row locked, one `UPDATE`, then the repository as it now is, in one transaction.
    async fn update_repository(
        &self,
        repo: &RepoName,
        patch: RepoPatch,
    ) -> Result<Option<RepoAttrs>, StoreError> {
        let (mut cols, vals) = set_clauses(&patch.flags, 1);
        let mut n = vals.len() + 1;
        if patch.teleport_enabled.is_some() {
            cols.push(format!("teleport_enabled = ${n}"));
            n += 1;
        }
        cols.push(format!("updated_at = ${n}"));
        let sql = format!(
            "UPDATE repositories SET {} WHERE id = ${}",
            cols.join(", "),
            n + 1
        );
        let mut tx = self.pg.pool.begin().await?;
        let Some(id) = lock_repo(&mut tx, repo).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let mut q = sqlx::query(&sql);
        for v in vals {
            q = q.bind(v);
        }
        if let Some(t) = patch.teleport_enabled {
            q = q.bind(t);
        }
        q.bind(now_ms()).bind(id).execute(&mut *tx).await?;
        let row = sqlx::query(REPO_SELECT)
            .bind(repo.as_str())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(repo_attrs(&row)))
    }

    async fn update_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        patch: FlagsPatch,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let Some(id) = lock_repo(&mut tx, repo).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let (cols, vals) = set_clauses(&patch, 3);
        if !cols.is_empty() {
            let sql = format!(
                "UPDATE tags SET {} WHERE repo_id = $1 AND name = $2",
                cols.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(id).bind(tag.as_str());
            for v in vals {
                q = q.bind(v);
            }
            q.execute(&mut *tx).await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {TAG_COLS} FROM tags t WHERE t.repo_id = $1 AND t.name = $2"
        ))
        .bind(id)
        .bind(tag.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(row.as_ref().map(tag_attrs)))
    }

    /// As on SQLite (see `Attributes::update_manifest`): a change from `Quarantined` (or
    /// `Failed`) to `Passed` of a manifest whose push is still held back writes the held-back
    /// push events to the outbox in the same transaction. The manifest's row is locked first
    /// (`FOR UPDATE`): of two nodes releasing it at once, the second finds nothing held back.
    async fn update_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        patch: ManifestPatch,
        hooks: &Subscribers,
        release: ReleaseEvents<'_>,
    ) -> Result<Option<Option<(ManifestAttrs, usize)>>, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let Some(id) = lock_repo(&mut tx, repo).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let before = sqlx::query(
            "SELECT media_type, size, config_media_type, config_digest, quarantine_state, \
             quarantine_push FROM manifests WHERE repo_id = $1 AND digest = $2 FOR UPDATE",
        )
        .bind(id)
        .bind(digest.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            tx.rollback().await?;
            return Ok(Some(None));
        };
        let state: Option<String> = before.get(4);
        // What the quarantined push held back, read before the UPDATE clears it.
        let held: Option<String> = before.get(5);
        let (mut cols, vals) = set_clauses(&patch.flags, 1);
        let mut n = vals.len() + 1;
        let mut texts: Vec<&str> = Vec::new();
        if let Some(s) = &patch.quarantine_state {
            cols.push(format!("quarantine_state = ${n}"));
            texts.push(s);
            n += 1;
        }
        if let Some(d) = &patch.quarantine_details {
            cols.push(format!("quarantine_details = ${n}"));
            texts.push(d);
            n += 1;
        }
        // Only a manifest whose push is still held back is released (see SQLite's).
        let releasing = patch.quarantine_state.as_deref() == Some(PASSED)
            && held.is_some()
            && matches!(state.as_deref(), Some(QUARANTINED) | Some(FAILED));
        if releasing {
            cols.push("quarantine_push = NULL".into());
        }
        cols.push(format!("updated_at = ${n}"));
        let sql = format!(
            "UPDATE manifests SET {} WHERE repo_id = ${} AND digest = ${}",
            cols.join(", "),
            n + 1,
            n + 2
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
                media_type: before.get(0),
                size: before.get(1),
                config_media_type: before.get(2),
                config_digest: before.get(3),
                held,
            };
            let enq = super::outbox::enqueue(&mut tx, &release(&r), hooks, &self.pg.lane).await?;
            queued = enq.queued;
            fast = enq.fast;
        }
        let after = manifest_in(&mut tx, id, digest).await?;
        tx.commit().await?;
        // Only now: no delivery for a change that did not commit.
        self.pg.lane.hand_over(fast);
        Ok(Some(after.map(|m| (m, queued))))
    }
}
