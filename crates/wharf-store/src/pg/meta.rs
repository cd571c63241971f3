//! Registry metadata on PostgreSQL: the [`RegistryMeta`] handle (repositories, blob links,
//! manifests, tags, upload sessions, referrers), with the same results, refusals and events
//! as SQLite's `meta.rs`.
//!
//! SQLite has one writer, so a check and the write after it can never be split by another
//! change. Here several nodes write at once, under READ COMMITTED, and the same guarantees
//! come from row locks taken before the checks:
//! - a manifest put takes its repository row `FOR SHARE` (a lock change or a repository
//!   delete waits for it, and it for them), the links and child manifests it requires
//!   `FOR SHARE` (a concurrent unlink, collection or manifest delete cannot remove what it
//!   just validated), and an existing manifest's row `FOR SHARE`;
//! - a manifest delete takes the manifest's row `FOR UPDATE` before it checks that nothing
//!   references it, so an index or referrer validated concurrently is either seen or refused.
//!
//! Puts are one transaction each: PostgreSQL commits concurrent transactions in parallel
//! (group commit of its WAL is the server's business), so SQLite's group-commit writer has
//! no counterpart here. Nothing is cached in memory: another node may change anything.

use async_trait::async_trait;
use sqlx::{PgConnection, Row};
use wharf_core::{Digest, Reference, RepoName, Tag};

use super::Pg;
use crate::StoreError;
use crate::attrs::{FAILED, QUARANTINED};
use crate::blobs::BlobStore;
use crate::db::now_ms;
use crate::handles::{DeleteEvents, RegistryMeta};
use crate::meta::{
    DeletedManifest, ManifestConfig, ManifestRow, NewManifest, PullBlock, Referrer, UploadRow,
    parse_digest,
};
use crate::outbox::{Enqueued, OutboxEvent, Subscribers};

#[derive(Debug)]
pub(crate) struct PgMeta {
    pg: Pg,
}

impl PgMeta {
    pub(crate) fn new(pg: Pg, _blobs: BlobStore) -> Self {
        PgMeta { pg }
    }
}

/// A repository row, locked for the rest of the transaction.
struct RepoRow {
    id: i64,
    write_enabled: bool,
    delete_enabled: bool,
}

/// The repository `repo`, its row locked `FOR SHARE` (or `FOR UPDATE` if `exclusive`).
async fn lock_repo(
    conn: &mut PgConnection,
    repo: &RepoName,
    exclusive: bool,
) -> Result<Option<RepoRow>, StoreError> {
    let sql = if exclusive {
        "SELECT id, write_enabled, delete_enabled FROM repositories WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT id, write_enabled, delete_enabled FROM repositories WHERE name = $1 FOR SHARE"
    };
    Ok(sqlx::query(sql)
        .bind(repo.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| RepoRow {
            id: r.get(0),
            write_enabled: r.get(1),
            delete_enabled: r.get(2),
        }))
}

/// The repository `repo`, created if needed, its row locked `FOR SHARE`.
async fn ensure_repo_locked(
    conn: &mut PgConnection,
    repo: &RepoName,
) -> Result<RepoRow, StoreError> {
    loop {
        if let Some(r) = lock_repo(&mut *conn, repo, false).await? {
            return Ok(r);
        }
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        // Inserted here, or by a concurrent push that committed first: locked on the next
        // turn. (A repository deleted in between is inserted again.)
    }
}

/// The first refusal of `wanted` in `table` (`repo_blobs` or `manifests`) of `repo_id`, the
/// rows found locked `FOR SHARE` so that they stay until this transaction ends.
async fn first_refused(
    conn: &mut PgConnection,
    table: &'static str,
    repo_id: i64,
    wanted: &[(Digest, i64)],
) -> Result<Option<StoreError>, StoreError> {
    if wanted.is_empty() {
        return Ok(None);
    }
    let digests: Vec<String> = wanted.iter().map(|(d, _)| d.to_string()).collect();
    // Locked in digest order, so that two puts locking overlapping sets cannot deadlock.
    let found: std::collections::HashMap<String, i64> = sqlx::query(&format!(
        "SELECT digest, size FROM {table} WHERE repo_id = $1 AND digest = ANY($2) \
         ORDER BY digest FOR SHARE"
    ))
    .bind(repo_id)
    .bind(&digests)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    Ok(crate::meta::first_refusal(
        wanted,
        &found,
        table == "manifests",
    ))
}

/// Whether a lock refuses the push of `m` into `repo` (see `attrs::push_refused`).
async fn push_refused(
    conn: &mut PgConnection,
    repo: &RepoRow,
    m: &NewManifest,
) -> Result<bool, StoreError> {
    if !repo.write_enabled {
        return Ok(true);
    }
    let manifest_locked = sqlx::query(
        "SELECT write_enabled FROM manifests WHERE repo_id = $1 AND digest = $2 FOR SHARE",
    )
    .bind(repo.id)
    .bind(m.digest.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .is_some_and(|r| !r.get::<bool, _>(0));
    if manifest_locked {
        return Ok(true);
    }
    if m.tags.is_empty() {
        return Ok(false);
    }
    let names: Vec<&str> = m.tags.iter().map(|t| t.as_str()).collect();
    Ok(sqlx::query(
        "SELECT 1 FROM tags WHERE repo_id = $1 AND name = ANY($2) AND NOT write_enabled LIMIT 1",
    )
    .bind(repo.id)
    .bind(&names)
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

/// The writes of a validated put, inside its transaction; returns what the outbox wrote.
async fn write_put(
    conn: &mut PgConnection,
    pg: &Pg,
    repo_id: i64,
    m: &NewManifest,
    events: &[OutboxEvent],
    hooks: &Subscribers,
) -> Result<Enqueued, StoreError> {
    let now = now_ms();
    let inserted: Option<i64> = sqlx::query(
        "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, \
         annotations, config_media_type, config_digest, body, created_at, quarantine_state, \
         quarantine_push) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) \
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
    .bind(m.quarantine.as_ref().map(|_| QUARANTINED))
    .bind(&m.quarantine)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.get(0));
    // The blobs it references, for garbage collection, in the same transaction. Recorded
    // whether or not the manifest was new: an existing one has the same references already.
    if !m.referenced_blobs.is_empty() {
        let refs: Vec<String> = m.referenced_blobs.iter().map(|d| d.to_string()).collect();
        sqlx::query(
            "INSERT INTO manifest_blobs (manifest_id, repo_id, digest) \
             SELECT m.id, m.repo_id, d FROM manifests m, unnest($3::text[]) d \
             WHERE m.repo_id = $1 AND m.digest = $2 ON CONFLICT DO NOTHING",
        )
        .bind(repo_id)
        .bind(m.digest.to_string())
        .bind(&refs)
        .execute(&mut *conn)
        .await?;
    }
    if !m.tags.is_empty() {
        // In name order: two pushes moving the same tags lock them in the same order.
        let mut names: Vec<&str> = m.tags.iter().map(|t| t.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        sqlx::query(
            "INSERT INTO tags (repo_id, name, digest, updated_at, created_at) \
             SELECT $1, n, $3, $4, $4 FROM unnest($2::text[]) n \
             ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, \
             updated_at = excluded.updated_at",
        )
        .bind(repo_id)
        .bind(&names)
        .bind(m.digest.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let held = match &m.quarantine {
        None => false,
        Some(_) if inserted.is_some() => true,
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
        return super::outbox::enqueue(conn, &kept, hooks, &pg.lane).await;
    }
    super::outbox::enqueue(conn, events, hooks, &pg.lane).await
}

/// See `meta::hold_again`.
async fn hold_again(
    conn: &mut PgConnection,
    repo_id: i64,
    m: &NewManifest,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT quarantine_state, quarantine_push FROM manifests \
         WHERE repo_id = $1 AND digest = $2 FOR UPDATE",
    )
    .bind(repo_id)
    .bind(m.digest.to_string())
    .fetch_one(&mut *conn)
    .await?;
    let state: Option<String> = row.get(0);
    if !matches!(state.as_deref(), Some(QUARANTINED | FAILED)) {
        return Ok(false);
    }
    let merged = crate::attrs::merge_held(row.get(1), m.quarantine.as_deref());
    sqlx::query("UPDATE manifests SET quarantine_push = $1 WHERE repo_id = $2 AND digest = $3")
        .bind(merged)
        .bind(repo_id)
        .bind(m.digest.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Whether an index stored in `repo_id` names `digest` among its children. The bodies are
/// parsed here rather than in SQL: a stored body that is not valid JSON must not fail the
/// query (PostgreSQL 15 has no non-raising JSON check).
async fn an_index_names(
    conn: &mut PgConnection,
    repo_id: i64,
    digest: &Digest,
) -> Result<bool, StoreError> {
    let needle = digest.to_string();
    let bodies = sqlx::query(
        "SELECT body FROM manifests WHERE repo_id = $1 AND media_type IN ($2, $3) \
         AND position($4::bytea IN body) > 0",
    )
    .bind(repo_id)
    .bind(wharf_core::manifest::media::OCI_INDEX)
    .bind(wharf_core::manifest::media::DOCKER_MANIFEST_LIST)
    .bind(needle.as_bytes())
    .fetch_all(&mut *conn)
    .await?;
    Ok(bodies.iter().any(|r| {
        let body: Vec<u8> = r.get(0);
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
            .is_some_and(|children| {
                children
                    .iter()
                    .any(|c| c.get("digest").and_then(|d| d.as_str()) == Some(needle.as_str()))
            })
    }))
}

impl PgMeta {
    async fn delete_manifest_when(
        &self,
        repo: &RepoName,
        digest: &Digest,
        stale_before: Option<i64>,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let Some(r) = lock_repo(&mut tx, repo, false).await? else {
            return Ok(None);
        };
        let d = digest.to_string();
        // Locked before anything is checked (see the module header).
        let Some(row) = sqlx::query(
            "SELECT media_type, size, config_media_type, write_enabled, delete_enabled, \
             COALESCE(updated_at, created_at), quarantine_state \
             FROM manifests WHERE repo_id = $1 AND digest = $2 FOR UPDATE",
        )
        .bind(r.id)
        .bind(&d)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let tag_locked = sqlx::query(
            "SELECT 1 FROM tags WHERE repo_id = $1 AND digest = $2 \
             AND NOT (write_enabled AND delete_enabled) LIMIT 1",
        )
        .bind(r.id)
        .bind(&d)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !(r.write_enabled && r.delete_enabled && row.get::<bool, _>(3) && row.get::<bool, _>(4))
            || tag_locked
        {
            return Err(StoreError::Disallowed);
        }
        if let Some(cutoff) = stale_before {
            let updated: i64 = row.get(5);
            let state: Option<String> = row.get(6);
            let tagged = sqlx::query("SELECT 1 FROM tags WHERE repo_id = $1 AND digest = $2")
                .bind(r.id)
                .bind(&d)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            let a_subject =
                sqlx::query("SELECT 1 FROM manifests WHERE repo_id = $1 AND subject = $2 LIMIT 1")
                    .bind(r.id)
                    .bind(&d)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
            if updated >= cutoff
                || matches!(state.as_deref(), Some(QUARANTINED | FAILED))
                || tagged
                || a_subject
                || an_index_names(&mut tx, r.id, digest).await?
            {
                return Ok(None);
            }
        }
        sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
            .bind(r.id)
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        let tags: Vec<String> =
            sqlx::query("DELETE FROM tags WHERE repo_id = $1 AND digest = $2 RETURNING name")
                .bind(r.id)
                .bind(&d)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
        let mut tags = tags;
        tags.sort();
        let deleted = DeletedManifest {
            digest: digest.clone(),
            media_type: row.get(0),
            size: row.get(1),
            config_media_type: row.get(2),
            tags,
        };
        let enq = super::outbox::enqueue(&mut tx, &events(&deleted), hooks, &self.pg.lane).await?;
        tx.commit().await?;
        let queued = enq.queued;
        self.pg.lane.hand_over(enq.fast);
        Ok(Some((deleted, queued)))
    }
}

#[async_trait]
impl RegistryMeta for PgMeta {
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.pg.pool)
            .await?
            .is_some())
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query(
            "SELECT b.size FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id \
             WHERE r.name = $1 AND b.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pg.pool)
        .await?
        .map(|r| r.get(0)))
    }

    async fn blob_size_anywhere(&self, digest: &Digest) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query("SELECT size FROM repo_blobs WHERE digest = $1 LIMIT 1")
                .bind(digest.to_string())
                .fetch_optional(&self.pg.pool)
                .await?
                .map(|r| r.get(0)),
        )
    }

    async fn blob_holders(&self, digest: &Digest) -> Result<Vec<(RepoName, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.name, b.size FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id \
             WHERE b.digest = $1 ORDER BY r.name COLLATE \"C\" LIMIT 100",
        )
        .bind(digest.to_string())
        .fetch_all(&self.pg.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                Some((RepoName::parse(&name).ok()?, r.get::<i64, _>(1)))
            })
            .collect())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let Some(r) = lock_repo(&mut tx, repo, false).await? else {
            return Ok(false);
        };
        if !(r.write_enabled && r.delete_enabled) {
            return Err(StoreError::Disallowed);
        }
        let res = sqlx::query("DELETE FROM repo_blobs WHERE digest = $1 AND repo_id = $2")
            .bind(digest.to_string())
            .bind(r.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() > 0)
    }

    async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        algorithm: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO uploads (id, repo, algorithm, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(repo.as_str())
        .bind(algorithm)
        .bind(now_ms())
        .execute(&self.pg.pool)
        .await?;
        Ok(())
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError> {
        Ok(
            sqlx::query("SELECT repo, algorithm, finished_digest FROM uploads WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pg.pool)
                .await?
                .map(|r| UploadRow {
                    repo: r.get(0),
                    algorithm: r.get(1),
                    finished_digest: r.get(2),
                }),
        )
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pg.pool)
            .await?
            .rows_affected()
            > 0)
    }

    async fn upload_ids(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let rows = sqlx::query("SELECT id, finished_digest IS NOT NULL FROM uploads")
            .fetch_all(&self.pg.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn stale_uploads(&self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE created_at < $1")
            .bind(cutoff_ms)
            .fetch_all(&self.pg.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRow>, StoreError> {
        let body = if with_body { "m.body" } else { "NULL::bytea" };
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
                     WHERE r.name = $1 AND m.digest = $2"
                ))
                .bind(repo.as_str())
                .bind(d.to_string())
                .fetch_optional(&self.pg.pool)
                .await?
            }
            Reference::Tag(t) => {
                sqlx::query(&format!(
                    "SELECT {cols} FROM tags t JOIN repositories r ON r.id = t.repo_id \
                     JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest \
                     WHERE r.name = $1 AND t.name = $2"
                ))
                .bind(repo.as_str())
                .bind(t.as_str())
                .fetch_optional(&self.pg.pool)
                .await?
            }
        };
        row.map(|r| {
            let quarantine: Option<String> = r.get(5);
            // A read lock first: it binds even those who may read quarantined images.
            let blocked = if !r.get::<bool, _>(4) {
                Some(PullBlock::ReadLocked)
            } else if matches!(quarantine.as_deref(), Some(QUARANTINED | FAILED)) {
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

    async fn put_manifest(
        &self,
        m: &NewManifest,
        events: &[OutboxEvent],
        hooks: &Subscribers,
    ) -> Result<usize, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        // A repository that does not exist yet has no blobs: refused without creating it.
        let existing = lock_repo(&mut tx, &m.repo, false).await?;
        let repo = match existing {
            Some(r) => r,
            None if !m.required_blobs.is_empty() || !m.required_manifests.is_empty() => {
                return Err(m
                    .required_blobs
                    .first()
                    .map(|(d, _)| StoreError::MissingBlob(d.clone()))
                    .or_else(|| {
                        m.required_manifests
                            .first()
                            .map(|(d, _)| StoreError::MissingManifest(d.clone()))
                    })
                    .unwrap_or(StoreError::NotFound));
            }
            None => ensure_repo_locked(&mut tx, &m.repo).await?,
        };
        if let Some(refused) = first_refused(&mut tx, "repo_blobs", repo.id, &m.required_blobs)
            .await?
            .or(first_refused(&mut tx, "manifests", repo.id, &m.required_manifests).await?)
        {
            return Err(refused);
        }
        if push_refused(&mut tx, &repo, m).await? {
            return Err(StoreError::Disallowed);
        }
        let enq = write_put(&mut tx, &self.pg, repo.id, m, events, hooks).await?;
        tx.commit().await?;
        // Only now, with the change durable, may its deliveries be sent.
        let queued = enq.queued;
        self.pg.lane.hand_over(enq.fast);
        Ok(queued)
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError> {
        self.delete_manifest_when(repo, digest, None, hooks, events)
            .await
    }

    async fn delete_stale_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: i64,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError> {
        self.delete_manifest_when(repo, digest, Some(cutoff_ms), hooks, events)
            .await
    }

    async fn delete_repository(
        &self,
        repo: &RepoName,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(Vec<DeletedManifest>, usize)>, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        // Exclusive: pushes into the repository wait, then find it gone.
        let Some(r) = lock_repo(&mut tx, repo, true).await? else {
            return Ok(None);
        };
        let locked = !(r.write_enabled && r.delete_enabled)
            || sqlx::query(
                "SELECT 1 FROM manifests WHERE repo_id = $1 \
                 AND NOT (write_enabled AND delete_enabled) \
                 UNION ALL SELECT 1 FROM tags WHERE repo_id = $1 \
                 AND NOT (write_enabled AND delete_enabled) LIMIT 1",
            )
            .bind(r.id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if locked {
            return Err(StoreError::Disallowed);
        }
        let rows = sqlx::query(
            "SELECT digest, media_type, size, config_media_type FROM manifests \
             WHERE repo_id = $1 ORDER BY id DESC",
        )
        .bind(r.id)
        .fetch_all(&mut *tx)
        .await?;
        let tag_rows = sqlx::query(
            "SELECT name, digest FROM tags WHERE repo_id = $1 ORDER BY name COLLATE \"C\"",
        )
        .bind(r.id)
        .fetch_all(&mut *tx)
        .await?;
        let mut deleted = Vec::with_capacity(rows.len());
        let mut all_events = Vec::new();
        for row in rows {
            let digest: String = row.get(0);
            let d = DeletedManifest {
                digest: parse_digest(digest.clone())?,
                media_type: row.get(1),
                size: row.get(2),
                config_media_type: row.get(3),
                tags: tag_rows
                    .iter()
                    .filter(|t| t.get::<String, _>(1) == digest)
                    .map(|t| t.get(0))
                    .collect(),
            };
            all_events.extend(events(&d));
            deleted.push(d);
        }
        let enq = super::outbox::enqueue(&mut tx, &all_events, hooks, &self.pg.lane).await?;
        // Manifests, tags and blob links go with the repository (ON DELETE CASCADE).
        sqlx::query("DELETE FROM repositories WHERE id = $1")
            .bind(r.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let queued = enq.queued;
        self.pg.lane.hand_over(enq.fast);
        Ok(Some((deleted, queued)))
    }

    async fn manifest_config(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestConfig>, StoreError> {
        let row = sqlx::query(
            "SELECT m.config_media_type, m.config_digest FROM manifests m \
             JOIN repositories r ON r.id = m.repo_id WHERE r.name = $1 AND m.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pg.pool)
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

    async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<Digest>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = $1 ORDER BY m.id DESC",
        )
        .bind(repo.as_str())
        .fetch_all(&self.pg.pool)
        .await?;
        rows.into_iter().map(|r| parse_digest(r.get(0))).collect()
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let Some(r) = lock_repo(&mut tx, repo, false).await? else {
            return Ok(false);
        };
        let Some(row) = sqlx::query(
            "SELECT write_enabled, delete_enabled FROM tags WHERE repo_id = $1 AND name = $2 \
             FOR UPDATE",
        )
        .bind(r.id)
        .bind(tag.as_str())
        .fetch_optional(&mut *tx)
        .await?
        else {
            // No such tag; a locked repository refuses even that (as SQLite checks first).
            if !(r.write_enabled && r.delete_enabled) {
                return Err(StoreError::Disallowed);
            }
            return Ok(false);
        };
        if !(r.write_enabled && r.delete_enabled && row.get::<bool, _>(0) && row.get::<bool, _>(1))
        {
            return Err(StoreError::Disallowed);
        }
        // The manifest's last-update time becomes the untag time (trigger `tags_removed`).
        sqlx::query("DELETE FROM tags WHERE repo_id = $1 AND name = $2")
            .bind(r.id)
            .bind(tag.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let Some(id) = sqlx::query("SELECT id FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.pg.pool)
            .await?
            .map(|r| r.get::<i64, _>(0))
        else {
            return Ok(None);
        };
        let hide = if quarantine_reader {
            ""
        } else {
            " AND NOT EXISTS (SELECT 1 FROM manifests qm WHERE qm.repo_id = t.repo_id \
             AND qm.digest = t.digest AND qm.quarantine_state IN ('Quarantined', 'Failed'))"
        };
        // Byte order whatever the database's collation, as the distribution spec wants.
        let rows = sqlx::query(&format!(
            "SELECT t.name FROM tags t WHERE t.repo_id = $1 AND t.name > $2 COLLATE \"C\" \
             AND t.list_enabled{hide} ORDER BY t.name COLLATE \"C\" LIMIT $3"
        ))
        .bind(id)
        .bind(last.unwrap_or(""))
        .bind(n.map(i64::from))
        .fetch_all(&self.pg.pool)
        .await?;
        Ok(Some(rows.into_iter().map(|r| r.get(0)).collect()))
    }

    async fn catalog(&self, last: Option<&str>, n: Option<u32>) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT name FROM repositories WHERE name > $1 COLLATE \"C\" AND list_enabled \
             ORDER BY name COLLATE \"C\" LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(n.map(i64::from))
        .fetch_all(&self.pg.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        quarantine_reader: bool,
    ) -> Result<Vec<Referrer>, StoreError> {
        let quarantined = if quarantine_reader {
            ""
        } else {
            " AND COALESCE(m.quarantine_state, '') NOT IN ('Quarantined', 'Failed')"
        };
        let rows = sqlx::query(&format!(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations \
             FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = $1 AND m.subject = $2 AND m.list_enabled{quarantined} ORDER BY m.id",
        ))
        .bind(repo.as_str())
        .bind(subject.to_string())
        .fetch_all(&self.pg.pool)
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
