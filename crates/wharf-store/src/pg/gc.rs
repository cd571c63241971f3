//! Garbage collection's storage side on PostgreSQL ([`GcStore`]): the same links, content,
//! grace and figures as SQLite's (`crate::gc`, whose module docs give the argument this one
//! carries over), for several nodes that share one database and one bucket.
//!
//! What changes, and why a concurrent push on any node still never loses a blob:
//!
//! 1. *Links.* SQLite serialises a manifest put and a link delete by its single writer.
//!    PostgreSQL runs them at once under READ COMMITTED, where a delete whose "no manifest
//!    references it" check is read before a put commits, and a put whose "the link exists"
//!    check is read before the delete commits, would both commit: an acknowledged manifest
//!    naming a blob whose link (and then content) goes. So they meet on the link's row lock:
//!    - the manifest put reads its required links with a row lock in its own transaction
//!      (`FOR SHARE` in `pg/meta.rs`; any lock that conflicts with `FOR UPDATE` will do) and
//!      records its references (`manifest_blobs`) there;
//!    - a collection first locks a batch of garbage links `FOR UPDATE SKIP LOCKED` (one
//!      statement), then, in a second statement of the same transaction, deletes those of
//!      them that are *still* garbage: unused since the cutoff and referenced by no manifest.
//!
//!    The second statement reads a snapshot taken after the locks were granted. A put that
//!    held a link's lock first is skipped (the link is in use: not this run's); one that
//!    held it and committed before the lock was granted has its references in that snapshot
//!    (the link stays); one that asks for it later waits for the collection's commit and then
//!    finds the link gone, and answers MANIFEST_BLOB_UNKNOWN: nothing acknowledged is lost,
//!    and the client pushes the blob again. The same holds for [`GcStore::touch`]'s `UPDATE`
//!    (it refreshes the link, or waits and finds it gone, so the read answers 404) and for
//!    [`GcStore::link_published`]'s upsert (it waits and inserts the link again). The
//!    collection never waits on a row lock, so it cannot deadlock with puts that lock many
//!    links, and a put never waits behind more than one batch.
//! 2. *Content.* The per-process content gate becomes a transaction advisory lock per digest
//!    (two-key form, class [`CONTENT_LOCK`], key `hashtext(digest)`), which every node takes:
//!    `link_published` holds it shared for "the content exists (an object-store round trip)
//!    → insert the link → commit"; the sweep holds it exclusively for "no link to the digest
//!    exists (re-read after the lock was granted, so every link committed under a shared hold
//!    is seen) → delete the content (another round trip) → commit". Either the link commits
//!    first and the sweep keeps the content, or the content is deleted first and the link's
//!    existence check fails with `Unavailable` (nothing linked; the client uploads again).
//!    Transaction-level locks go with their transaction on commit, rollback, a dropped
//!    future or a lost connection, so a node's crash never leaves one held. Each digest is
//!    its own short transaction (one lock at a time: no deadlock between two nodes' sweeps);
//!    a hash collision only makes two digests wait on each other.
//! 3. *Touch.* No per-process memory of recent touches: another node may collect or unlink
//!    a link this node touched. A touch reads the link's `used_at`; recent enough (within
//!    `refresh_ms`, less than the grace) it answers "present" without writing, since no
//!    collection can take a link used after its cutoff; older, it refreshes it with an
//!    `UPDATE` whose row count says whether the link is still there. One node writes
//!    `used_at` and another compares it with its cutoff, so the nodes' clocks must agree to
//!    well within the grace less the refresh interval (NTP does, by orders of magnitude).
//! 4. *Runs.* Nodes each schedule runs; a run holds a transaction advisory lock
//!    ([`RUN_LOCK`]) for its duration, so runs across nodes take turns as they do inside one
//!    process and their figures stay apart. Safety does not rest on it (two runs at once
//!    only repeat each other's checks), so losing it (say, a connection killed by
//!    `idle_in_transaction_session_timeout`) is harmless.
//!
//! Young content is left for the next run and a crash leaves at most garbage, as on SQLite.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::Row;
use wharf_core::{Digest, RepoName};

use super::Pg;
use crate::StoreError;
use crate::blobs::{BlobInfo, BlobStore};
use crate::db::now_ms;
use crate::gc::{GcFigures, GcOptions};
use crate::handles::GcStore;

/// Links removed per transaction, so a large run never holds many row locks for long.
const LINK_BATCH: i64 = 1000;
/// Attempts at linking into a repository that does not exist yet or that another node
/// deletes at the same moment.
const ENSURE_REPO_TRIES: usize = 3;

/// Advisory lock class (first key of the two-key form) of a digest's content; the second
/// key is `hashtext(digest)`. The two-key form is a space of its own, apart from one-key
/// locks such as the migrations'.
const CONTENT_LOCK: i32 = 0x7767_6301;
/// Advisory lock (two-key form: class, 0) one collection run holds, across nodes.
const RUN_LOCK: i32 = 0x7767_6302;

/// The condition on `repo_blobs b` of a garbage link, cutoff as `$1`.
const GARBAGE_LINK: &str = "b.used_at < $1 AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb \
     WHERE mb.repo_id = b.repo_id AND mb.digest = b.digest)";

#[derive(Debug)]
pub(crate) struct PgGc {
    pg: Pg,
    blobs: BlobStore,
}

impl PgGc {
    pub(crate) fn new(pg: Pg, blobs: BlobStore) -> Self {
        PgGc { pg, blobs }
    }

    /// Removes the garbage links in batches (module docs, point 1). Returns how many went.
    async fn remove_links(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut removed = 0u64;
        loop {
            let mut tx = self.pg.pool.begin().await?;
            let locked = sqlx::query(&format!(
                "SELECT b.repo_id, b.digest FROM repo_blobs b WHERE {GARBAGE_LINK} \
                 LIMIT $2 FOR UPDATE OF b SKIP LOCKED"
            ))
            .bind(cutoff)
            .bind(LINK_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if locked.is_empty() {
                tx.rollback().await?;
                return Ok(removed);
            }
            let full = locked.len() as i64 >= LINK_BATCH;
            let (ids, digests): (Vec<i64>, Vec<String>) = locked
                .iter()
                .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
                .unzip();
            // A new statement, so a new snapshot: every put that held one of these links
            // before the lock was granted has committed, and its references are seen here.
            let n = sqlx::query(&format!(
                "DELETE FROM repo_blobs b USING unnest($2::BIGINT[], $3::TEXT[]) AS l(repo_id, digest) \
                 WHERE b.repo_id = l.repo_id AND b.digest = l.digest AND {GARBAGE_LINK}"
            ))
            .bind(cutoff)
            .bind(&ids)
            .bind(&digests)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            removed += n;
            // A full batch of which none was still garbage makes no progress: leave the rest
            // to the next run rather than select them again.
            if !full || n == 0 {
                return Ok(removed);
            }
        }
    }

    /// Deletes the content of each candidate that, checked again under the digest's
    /// exclusive lock, no link names (module docs, point 2). Returns (blobs, bytes).
    async fn sweep(&self, candidates: &[BlobInfo]) -> Result<(u64, u64), StoreError> {
        let (mut blobs, mut bytes) = (0, 0);
        for b in candidates {
            let digest = b.digest.to_string();
            let mut tx = self.pg.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(CONTENT_LOCK)
                .bind(&digest)
                .execute(&mut *tx)
                .await?;
            // After the lock: links committed under a shared hold are all visible.
            let linked: bool =
                sqlx::query("SELECT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = $1)")
                    .bind(&digest)
                    .fetch_one(&mut *tx)
                    .await?
                    .get(0);
            if !linked {
                // The lock is held until the delete is done: a link cannot commit between
                // the check and the delete.
                self.blobs.delete_blob(&b.digest).await?;
                blobs += 1;
                bytes += b.size;
            }
            tx.commit().await?;
        }
        Ok((blobs, bytes))
    }

    /// The run's figures, with the run lock held (see `collect`).
    async fn collect_locked(&self, opts: GcOptions) -> Result<GcFigures, StoreError> {
        let cutoff = opts.now_ms.saturating_sub(opts.grace_ms);
        let mut f = GcFigures::default();
        if opts.dry_run {
            let n: i64 = sqlx::query(&format!(
                "SELECT count(*) FROM repo_blobs b WHERE {GARBAGE_LINK}"
            ))
            .bind(cutoff)
            .fetch_one(&self.pg.pool)
            .await?
            .get(0);
            f.links_removed = u64::try_from(n).unwrap_or(0);
        } else {
            f.links_removed = self.remove_links(cutoff).await?;
        }
        // The digests some link keeps; in a dry run, without the links that would go (after
        // a real run's removal only links skipped as in use are such, and the sweep's check
        // keeps their content).
        let kept: HashSet<String> = sqlx::query(&format!(
            "SELECT DISTINCT digest FROM repo_blobs b WHERE NOT ({GARBAGE_LINK})"
        ))
        .bind(cutoff)
        .fetch_all(&self.pg.pool)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
        // Content's write time is the wall clock's now minus its age, compared with the
        // cutoff on the server's clock, as on SQLite.
        let wall_now = now_ms();
        let candidates: Vec<BlobInfo> = self
            .blobs
            .list_blobs()
            .await?
            .into_iter()
            // Young content may be an upload between publishing and linking: left for the
            // next run (correctness does not rest on this).
            .filter(|b| {
                let written =
                    wall_now.saturating_sub(i64::try_from(b.age.as_millis()).unwrap_or(i64::MAX));
                written < cutoff && !kept.contains(&b.digest.to_string())
            })
            .collect();
        if opts.dry_run {
            f.blobs_removed = candidates.len() as u64;
            f.bytes_reclaimed = candidates.iter().map(|b| b.size).sum();
            return Ok(f);
        }
        let (blobs, bytes) = self.sweep(&candidates).await?;
        f.blobs_removed = blobs;
        f.bytes_reclaimed = bytes;
        Ok(f)
    }
}

#[async_trait]
impl GcStore for PgGc {
    async fn link_published(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: i64,
        now_ms: i64,
        upload: Option<&str>,
    ) -> Result<(), StoreError> {
        let d = digest.to_string();
        let mut tx = self.pg.pool.begin().await?;
        // Shared: links of one digest go together; a sweep's check-and-delete of it waits
        // for them, and they for it (module docs, point 2).
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1, hashtext($2))")
            .bind(CONTENT_LOCK)
            .bind(&d)
            .execute(&mut *tx)
            .await?;
        // A backend that does not answer is an error (503), never "collected".
        if !self.blobs.blob_exists(digest).await? {
            // Dropping the transaction rolls it back and releases the lock.
            return Err(StoreError::Unavailable(format!(
                "the content of {digest} was garbage-collected while it was being linked; \
                 upload it again"
            )));
        }
        let mut linked = false;
        for _ in 0..ENSURE_REPO_TRIES {
            // The link first: its repository usually exists, and an insert that conflicts
            // would still use up an id of the identity.
            let n = sqlx::query(
                "INSERT INTO repo_blobs (repo_id, digest, size, used_at) \
                 SELECT id, $2, $3, $4 FROM repositories WHERE name = $1 \
                 ON CONFLICT (repo_id, digest) \
                 DO UPDATE SET used_at = GREATEST(repo_blobs.used_at, EXCLUDED.used_at)",
            )
            .bind(repo.as_str())
            .bind(&d)
            .bind(size)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                linked = true;
                break;
            }
            // No repository: created here or by a concurrent push (then seen on the next
            // turn); one another node deletes in between is created again.
            sqlx::query(
                "INSERT INTO repositories (name, created_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(repo.as_str())
            .bind(crate::db::now_ms())
            .execute(&mut *tx)
            .await?;
        }
        if !linked {
            return Err(StoreError::Unavailable(format!(
                "the repository {repo} was deleted while {digest} was being linked into it"
            )));
        }
        if let Some(id) = upload {
            sqlx::query("UPDATE uploads SET finished_digest = $1 WHERE id = $2")
                .bind(&d)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_ms: i64,
        refresh_ms: i64,
    ) -> Result<bool, StoreError> {
        let d = digest.to_string();
        let used_at: Option<i64> = sqlx::query(
            "SELECT b.used_at FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id \
             WHERE r.name = $1 AND b.digest = $2",
        )
        .bind(repo.as_str())
        .bind(&d)
        .fetch_optional(&self.pg.pool)
        .await?
        .map(|r| r.get(0));
        let Some(at) = used_at else {
            return Ok(false);
        };
        if now_ms.saturating_sub(at) < refresh_ms {
            // Used less than `refresh_ms` (< grace) ago: no collection, on any node, can
            // have removed it since, and writing again would only cost the hot read path.
            return Ok(true);
        }
        // Waits for a collection holding the link's lock; no row then means it went.
        let n = sqlx::query(
            "UPDATE repo_blobs SET used_at = GREATEST(used_at, $1) WHERE digest = $2 \
             AND repo_id = (SELECT id FROM repositories WHERE name = $3)",
        )
        .bind(now_ms)
        .bind(&d)
        .bind(repo.as_str())
        .execute(&self.pg.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn collect(&self, opts: GcOptions) -> Result<GcFigures, StoreError> {
        // One run at a time across nodes (module docs, point 4), held by a transaction on a
        // connection of its own for the run's duration.
        let mut run = self.pg.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(RUN_LOCK)
            .execute(&mut *run)
            .await?;
        let result = self.collect_locked(opts).await;
        if let Err(e) = run.rollback().await {
            // Only the turn-taking was lost, and the lock went with the connection.
            tracing::debug!(error = %e, "releasing the collection's run lock failed");
        }
        result
    }
}
