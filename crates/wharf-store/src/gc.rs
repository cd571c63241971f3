//! Online garbage collection: the storage side, behind the narrow handle [`Gc`]
//! (`store.gc()`), so that another backend (PostgreSQL and object storage) implements the same
//! few operations.
//!
//! What is garbage:
//! - a repository's **blob link** (`repo_blobs`) that no manifest of that repository
//!   references (`manifest_blobs`, written in the manifest push's own transaction) and that
//!   has not been used (uploaded, mounted, read by HEAD or GET) within the grace period;
//! - **blob content** that no repository links (and whose bytes are older than the grace).
//!
//! Manifests are never collected here: deleting untagged manifests is the retention
//! policy's job (ACR's model). Abandoned upload sessions are the registry's expiry's.
//!
//! # Why a concurrent push cannot lose a blob
//!
//! A push uploads (or mounts) its blobs, maybe HEADs them, then PUTs a manifest that names
//! them; the manifest is accepted only if every blob is linked in the repository, checked in
//! the manifest's write transaction, and the references are recorded in that same transaction.
//!
//! 1. *Links.* GC deletes a link with one `DELETE … WHERE used_at < cutoff AND NOT EXISTS
//!    (reference)` in a write transaction. SQLite has one writer at a time, so each manifest
//!    put either commits before it (its references then exist, the link stays) or after it
//!    (the put then finds the link missing and answers MANIFEST_BLOB_UNKNOWN, so nothing is
//!    acknowledged that is gone; the client uploads again). The second case needs the link to
//!    be unused for the whole grace: upload finish and mount set `used_at`, and blob HEAD/GET
//!    refresh it ([`Gc::touch`]) whenever the stored time is older than a fraction of the
//!    grace, so a push that touched its blobs within the grace keeps them. A touch that finds
//!    the link gone (GC won) makes the HEAD/GET answer 404, never a stale 200.
//! 2. *Content.* GC deletes a blob's content only after checking that no link to it exists,
//!    holding the content gate (`Meta::content_gate`) exclusively for the check and the
//!    delete; an upload's finish (and a mount) holds the gate shared while it checks that the
//!    content exists and commits its link. So either the link commits first (GC's check, made
//!    after, sees it and keeps the content) or GC's check and delete come first (the finish
//!    then sees the content missing, inserts no link and fails with a retryable error, and
//!    the registry publishes the session's own bytes again: the blob store keeps them until
//!    the link when the content was already stored, `Finished::AlreadyStored`). A committed
//!    link therefore always has its content, and a blob is never acknowledged after its
//!    content is gone. The gate is a lock of this process, apart
//!    from the SQLite writer, so that no write waits behind an object store's round trip;
//!    that is enough because a data directory (and its prefix, see `binding`) has one
//!    process. Nodes sharing a database will need the gate in the database instead.
//!
//! A crash in the middle of a run leaves at most garbage for the next run: the link delete is
//! one transaction, and a file is deleted only after its "no link" check.

use std::collections::HashSet;
use std::sync::Mutex;

use sqlx::Row;
use wharf_core::{Digest, RepoName};

use crate::blobs::{BlobInfo, BlobStore};
use crate::db::WriteTx;
use crate::meta::{Meta, ensure_repo, link_key};
use crate::{SqliteStore, StoreError};

/// The migration that adds the reference table and `used_at`; `gc::backfill` runs in its
/// transaction.
pub(crate) const MIGRATION: &str = include_str!("../migrations/sqlite/0008_gc.sql");

/// Links removed per write transaction, so a large run never holds the writer for long.
const LINK_BATCH: i64 = 1000;
/// Files checked and deleted per write transaction.
const BLOB_BATCH: usize = 100;
/// Most entries in the memory of recent touches; past it, it starts again empty.
const TOUCHED_MAX: usize = 100_000;

/// The narrow handle to garbage collection's storage (see the module docs). It borrows the
/// store: blob HEAD touches through it, and must not pay for clones.
#[derive(Debug, Clone, Copy)]
pub struct Gc<'a> {
    meta: &'a Meta,
    blobs: &'a BlobStore,
}

impl SqliteStore {
    /// The garbage-collection handle (see [`Gc`]).
    pub fn gc(&self) -> Gc<'_> {
        Gc {
            meta: &self.meta,
            blobs: &self.blobs,
        }
    }
}

/// The SQLite backend's [`crate::handles::GcStore`]: owns what [`Gc`] borrows, and lends it
/// per call.
#[derive(Debug, Clone)]
pub struct SqliteGc {
    meta: Meta,
    blobs: BlobStore,
}

impl SqliteGc {
    pub(crate) fn new(meta: Meta, blobs: BlobStore) -> Self {
        SqliteGc { meta, blobs }
    }

    fn gc(&self) -> Gc<'_> {
        Gc {
            meta: &self.meta,
            blobs: &self.blobs,
        }
    }
}

#[async_trait::async_trait]
impl crate::handles::GcStore for SqliteGc {
    async fn link_published(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: i64,
        now_ms: i64,
        upload: Option<&str>,
    ) -> Result<(), StoreError> {
        self.gc()
            .link_published(repo, digest, size, now_ms, upload)
            .await
    }

    async fn touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_ms: i64,
        refresh_ms: i64,
    ) -> Result<bool, StoreError> {
        self.gc().touch(repo, digest, now_ms, refresh_ms).await
    }

    async fn collect(&self, opts: GcOptions) -> Result<GcFigures, StoreError> {
        self.gc().collect(opts).await
    }
}

/// The last `used_at` this process wrote or saw per link, so that a blob HEAD writes only
/// when the stored time has grown older than the refresh interval.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    map: Mutex<std::collections::HashMap<String, i64>>,
}

impl Touched {
    fn get(&self, key: &str) -> Option<i64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied()
    }

    fn set(&self, key: String, at: i64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= TOUCHED_MAX {
            map.clear();
        }
        map.insert(key, at);
    }

    pub(crate) fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// What one run does.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Now, in Unix milliseconds (the server's clock).
    pub now_ms: i64,
    /// Links unused for this long, and content written this long ago, may go.
    pub grace_ms: i64,
    /// Count what would go, delete nothing.
    pub dry_run: bool,
}

/// What one run removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcFigures {
    pub links_removed: u64,
    pub blobs_removed: u64,
    pub bytes_reclaimed: u64,
}

impl Gc<'_> {
    /// Links a blob whose content is published into `repo` (a mount, or a finished upload's
    /// session `upload`), with `used_at` = `now_ms`, after checking inside the write
    /// transaction that the content is still there (see the module docs, point 2). Errors
    /// with `Unavailable` if GC removed the content meanwhile: nothing is linked, and the
    /// client's retry uploads the bytes again.
    pub async fn link_published(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: i64,
        now_ms: i64,
        upload: Option<&str>,
    ) -> Result<(), StoreError> {
        // Shared: many uploads link at once; a sweep's check-and-delete waits for them, and
        // they for it (module docs, point 2). The existence check is an object-store round
        // trip on S3 or Azure, made before the SQLite writer is taken.
        let _gate = self.meta.content_gate.read().await;
        // A backend that does not answer is an error (503), never "collected".
        if !self.blobs.blob_exists(digest).await? {
            return Err(StoreError::Unavailable(format!(
                "the content of {digest} was garbage-collected while it was being linked; \
                 upload it again"
            )));
        }
        let mut tx = WriteTx::begin(&self.meta.write).await?;
        let repo_id = ensure_repo(&mut tx, repo).await?;
        sqlx::query(
            "INSERT INTO repo_blobs (repo_id, digest, size, used_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (repo_id, digest) DO UPDATE SET used_at = max(used_at, excluded.used_at)",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .bind(size)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if let Some(id) = upload {
            sqlx::query("UPDATE uploads SET finished_digest = ? WHERE id = ?")
                .bind(digest.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.meta.touched.set(link_key(repo, digest), now_ms);
        Ok(())
    }

    /// Records a use of a link (blob HEAD or GET) at `now_ms`, writing only when the time
    /// last written is `refresh_ms` old or more, so the hot read path rarely writes. Returns
    /// false if the link is gone (collected, unlinked), so the read answers 404.
    pub async fn touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_ms: i64,
        refresh_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = link_key(repo, digest);
        if let Some(at) = self.meta.touched.get(&key)
            && (0..refresh_ms).contains(&now_ms.saturating_sub(at))
        {
            // Written at most `refresh_ms` ago: GC (cutoff = now - grace, grace >
            // refresh_ms) cannot have removed it since.
            return Ok(true);
        }
        // Bookkeeping: a touch lost to a power failure only shortens the link's grace.
        let mut tx = WriteTx::begin_relaxed(&self.meta.write).await?;
        let n = sqlx::query(
            "UPDATE repo_blobs SET used_at = max(used_at, ?1) WHERE digest = ?2 \
             AND repo_id = (SELECT id FROM repositories WHERE name = ?3)",
        )
        .bind(now_ms)
        .bind(digest.to_string())
        .bind(repo.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if n == 0 {
            self.meta.forget_link(&key);
            return Ok(false);
        }
        self.meta.touched.set(key, now_ms);
        Ok(true)
    }

    /// One collection: unreferenced links unused since `now - grace`, then content no link
    /// names (written before `now - grace`). Dry: counts the same without deleting.
    pub async fn collect(&self, opts: GcOptions) -> Result<GcFigures, StoreError> {
        let cutoff = opts.now_ms.saturating_sub(opts.grace_ms);
        let mut f = GcFigures::default();
        if opts.dry_run {
            f.links_removed = sqlx::query(&format!(
                "SELECT count(*) FROM repo_blobs b WHERE {GARBAGE_LINK}"
            ))
            .bind(cutoff)
            .fetch_one(&self.meta.read)
            .await?
            .get::<i64, _>(0) as u64;
        } else {
            f.links_removed = self.remove_links(cutoff).await?;
        }
        // The digests some link keeps; in a dry run, without the links that would go (after
        // a real run's removal there are none such).
        let kept: HashSet<String> = sqlx::query(&format!(
            "SELECT DISTINCT digest FROM repo_blobs b WHERE NOT ({GARBAGE_LINK})"
        ))
        .bind(cutoff)
        .fetch_all(&self.meta.read)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
        // The backend reports each blob's age; its write time is the wall clock's now - age,
        // compared with the cutoff on the server's clock as file times were before (the
        // server's clock is injectable in tests; in production the two are the same).
        let wall_now = crate::meta::now_ms();
        let candidates: Vec<_> = self
            .blobs
            .list_blobs()
            .await?
            .into_iter()
            // Young content may be an upload between publishing and linking: left for the
            // next run (correctness does not rest on this; see the module docs).
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

    /// Deletes the content of each candidate that, checked again inside a write transaction,
    /// no link names (a link may have been added since the candidates were chosen). Returns
    /// (blobs removed, bytes reclaimed).
    async fn sweep(&self, candidates: &[BlobInfo]) -> Result<(u64, u64), StoreError> {
        let (mut blobs, mut bytes) = (0, 0);
        for batch in candidates.chunks(BLOB_BATCH) {
            // The gate, held exclusively, serialises this check-and-delete with a finish's
            // check-and-link (module docs, point 2). Links commit before they release their
            // shared hold, so the reads below, made after taking the gate, see every one.
            let _gate = self.meta.content_gate.write().await;
            for b in batch {
                let linked = sqlx::query("SELECT 1 FROM repo_blobs WHERE digest = ? LIMIT 1")
                    .bind(b.digest.to_string())
                    .fetch_optional(&self.meta.read)
                    .await?
                    .is_some();
                if !linked {
                    self.blobs.delete_blob(&b.digest).await?;
                    blobs += 1;
                    bytes += b.size;
                }
            }
        }
        Ok((blobs, bytes))
    }

    async fn remove_links(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut removed = 0u64;
        loop {
            let mut tx = WriteTx::begin(&self.meta.write).await?;
            let n = sqlx::query(&format!(
                "DELETE FROM repo_blobs WHERE (repo_id, digest) IN \
                 (SELECT b.repo_id, b.digest FROM repo_blobs b WHERE {GARBAGE_LINK} LIMIT ?2)"
            ))
            .bind(cutoff)
            .bind(LINK_BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            if n > 0 {
                // Which keys went is not worth a query: a run is rare, the caches refill.
                self.meta.forget_all_links();
            }
            removed += n;
            if n < LINK_BATCH as u64 {
                return Ok(removed);
            }
        }
    }
}

/// The condition on `repo_blobs b` of a garbage link, cutoff as `?1`.
const GARBAGE_LINK: &str = "b.used_at < ?1 AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb \
     WHERE mb.repo_id = b.repo_id AND mb.digest = b.digest)";

/// One reference: (manifest id, repository id, blob digest).
pub(crate) type Reference<'a> = (i64, i64, &'a Digest);

/// Records the blobs new manifests reference (their `referenced_blobs`: config and layers), in
/// the manifest puts' transaction: one statement for a whole group commit.
pub(crate) async fn record_references(
    conn: &mut sqlx::SqliteConnection,
    refs: &[Reference<'_>],
) -> Result<(), StoreError> {
    for chunk in refs.chunks(300) {
        let marks = vec!["(?, ?, ?)"; chunk.len()].join(",");
        let sql = format!(
            "INSERT OR IGNORE INTO manifest_blobs (manifest_id, repo_id, digest) VALUES {marks}"
        );
        let mut q = sqlx::query(&sql);
        for (manifest_id, repo_id, d) in chunk {
            q = q.bind(manifest_id).bind(repo_id).bind(d.to_string());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Fills `manifest_blobs` for the manifests stored before it existed, from their stored
/// bodies through the same parser the push uses. Runs in the migration's transaction. A body
/// that no longer parses (it did when it was pushed, under an older, laxer parser) still
/// keeps its blobs: every `"digest"` its JSON names anywhere is recorded, since keeping a
/// blob too many is harmless and losing an acknowledged one is not.
pub(crate) async fn backfill(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    let mut last = 0i64;
    let mut filled = 0usize;
    loop {
        let rows = sqlx::query(
            "SELECT id, repo_id, media_type, body FROM manifests WHERE id > ? ORDER BY id LIMIT 500",
        )
        .bind(last)
        .fetch_all(&mut *conn)
        .await?;
        let Some(end) = rows.last().map(|r| r.get::<i64, _>(0)) else {
            break;
        };
        last = end;
        for r in rows {
            let (id, repo_id): (i64, i64) = (r.get(0), r.get(1));
            let media_type: String = r.get(2);
            let body: Vec<u8> = r.get(3);
            match wharf_core::parse_manifest(&body, Some(&media_type)) {
                Ok(p) => {
                    let refs: Vec<Reference<'_>> = p
                        .referenced_blobs()
                        .map(|d| (id, repo_id, &d.digest))
                        .collect();
                    record_references(&mut *conn, &refs).await?;
                    filled += 1;
                }
                Err(e) => {
                    let named = digests_named(&body);
                    tracing::warn!(
                        manifest_id = id,
                        error = %e,
                        digests = named.len(),
                        "a stored manifest no longer parses: every digest it names is kept"
                    );
                    let refs: Vec<Reference<'_>> = named.iter().map(|d| (id, repo_id, d)).collect();
                    record_references(&mut *conn, &refs).await?;
                    filled += 1;
                }
            }
        }
    }
    if filled > 0 {
        tracing::info!(
            manifests = filled,
            "recorded the blob references of stored manifests"
        );
    }
    Ok(())
}

/// Every string under a `"digest"` key anywhere in `body` that is a valid digest: the blobs a
/// manifest the current parser refuses may still name. Not JSON at all names nothing (no
/// manifest was ever accepted that was not JSON).
fn digests_named(body: &[u8]) -> Vec<Digest> {
    fn walk(v: &serde_json::Value, out: &mut Vec<Digest>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        serde_json::Value::String(s) if k == "digest" => {
                            if let Ok(d) = Digest::parse(s) {
                                out.push(d);
                            }
                        }
                        other => walk(other, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        walk(&v, &mut out);
    }
    out.sort_by_key(|d| d.to_string());
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    //! The two orders of point 2 of the module docs, made deterministic by running the
    //! steps one after the other through the real store: GC's check-and-delete and an
    //! upload's check-and-link.

    use super::*;

    const HOUR: i64 = 3600 * 1000;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path(), &Default::default())
            .await
            .unwrap();
        (dir, s)
    }

    /// Publishes `data` as an upload would (bytes in a session file, then published), without
    /// linking it anywhere.
    async fn publish(s: &SqliteStore, session: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        s.blobs.create_upload(session).await.unwrap();
        let body: crate::blobs::ByteStream = Box::pin(futures_util::stream::iter(vec![Ok(
            bytes::Bytes::copy_from_slice(data),
        )]));
        s.blobs.append_upload(session, 0, body, None).await.unwrap();
        s.blobs.finish_upload(session, &d, None).await.unwrap();
        d
    }

    fn repo() -> RepoName {
        RepoName::parse("race/app").unwrap()
    }

    #[test]
    fn a_manifest_the_parser_refuses_still_keeps_every_digest_it_names() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        // No descriptor mediaType: refused by today's parser, accepted by an older one.
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{a}","size":1}},
                "layers":[{{"digest":"{b}","size":1}},{{"digest":"{a}","size":1}},
                          {{"digest":"not-a-digest"}}]}}"#
        );
        assert!(wharf_core::parse_manifest(body.as_bytes(), None).is_err());
        let mut want = vec![a, b];
        want.sort_by_key(|d| d.to_string());
        assert_eq!(digests_named(body.as_bytes()), want);
        assert!(digests_named(b"not json").is_empty());
    }

    #[tokio::test]
    async fn content_collected_before_the_link_commits_fails_the_link_and_links_nothing() {
        let (_dir, s) = store().await;
        let d = publish(&s, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", b"raced").await;
        let now = crate::meta::now_ms() + 2 * HOUR;
        let f = s
            .gc()
            .collect(GcOptions {
                now_ms: now,
                grace_ms: HOUR,
                dry_run: false,
            })
            .await
            .unwrap();
        assert_eq!((f.blobs_removed, f.bytes_reclaimed), (1, 5));
        let err = s
            .gc()
            .link_published(&repo(), &d, 5, now, None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert_eq!(s.meta.blob_size(&repo(), &d).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_link_committed_after_the_candidates_were_chosen_keeps_the_content() {
        let (_dir, s) = store().await;
        let d = publish(&s, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", b"kept").await;
        // GC lists the content while nothing links it...
        let candidates = s.blobs.list_blobs().await.unwrap();
        assert_eq!(candidates.len(), 1);
        // ...an upload of the same content links it...
        let now = crate::meta::now_ms();
        s.gc()
            .link_published(&repo(), &d, 4, now, None)
            .await
            .unwrap();
        // ...and GC's check inside its write transaction sees the link.
        assert_eq!(s.gc().sweep(&candidates).await.unwrap(), (0, 0));
        assert!(s.blobs.blob_exists(&d).await.unwrap());
    }

    #[tokio::test]
    async fn a_touch_of_a_collected_link_reports_it_gone() {
        let (_dir, s) = store().await;
        let d = publish(&s, "cccccccccccccccccccccccccccccccc", b"touched").await;
        let now = crate::meta::now_ms();
        s.gc()
            .link_published(&repo(), &d, 7, now, None)
            .await
            .unwrap();
        assert!(
            s.gc()
                .touch(&repo(), &d, now + HOUR, HOUR / 4)
                .await
                .unwrap()
        );
        let f = s
            .gc()
            .collect(GcOptions {
                now_ms: now + 3 * HOUR,
                grace_ms: HOUR,
                dry_run: false,
            })
            .await
            .unwrap();
        assert_eq!(f.links_removed, 1);
        assert!(
            !s.gc()
                .touch(&repo(), &d, now + 3 * HOUR, HOUR / 4)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn manifests_stored_before_the_migration_get_their_references_from_their_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path(), &Default::default())
            .await
            .unwrap();
        let (cfg, layer) = (Digest::sha256_of(b"{}"), Digest::sha256_of(b"layer"));
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cfg.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer.to_string(), "size": 5}],
        }))
        .unwrap();
        // The database as version 7 left it: a manifest row, no references, no `used_at`.
        let w = &s.meta.write;
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES ('old/app', 0)")
            .execute(w)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO manifests (repo_id, digest, media_type, size, body, created_at) \
             VALUES (1, ?, 'application/vnd.oci.image.manifest.v1+json', ?, ?, 0)",
        )
        .bind(Digest::sha256_of(&body).to_string())
        .bind(body.len() as i64)
        .bind(&body)
        .execute(w)
        .await
        .unwrap();
        sqlx::raw_sql(
            "DROP TABLE manifest_blobs; DROP INDEX repo_blobs_used; \
             ALTER TABLE repo_blobs DROP COLUMN used_at; DROP TABLE store_identity; \
             PRAGMA user_version = 7;",
        )
        .execute(w)
        .await
        .unwrap();
        s.meta.close().await;
        drop(s);
        let s = SqliteStore::open(dir.path(), &Default::default())
            .await
            .unwrap();
        let mut refs: Vec<String> =
            sqlx::query_scalar("SELECT digest FROM manifest_blobs WHERE repo_id = 1")
                .fetch_all(&s.meta.read)
                .await
                .unwrap();
        refs.sort();
        let mut want = vec![cfg.to_string(), layer.to_string()];
        want.sort();
        assert_eq!(refs, want);
    }
}
