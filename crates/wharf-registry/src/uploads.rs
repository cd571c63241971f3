//! Blob upload sessions (DESIGN invariant 2): state with an explicit offset.
//!
//! The bytes of a session live in the blob store's upload session (a file under `uploads/`,
//! or staged objects), whose length is the offset, so a session survives a restart. While the
//! process lives, the running hash of the bytes so far is kept in memory, so finishing a
//! streamed upload need not read the blob back; after a restart (or if the client's digest
//! uses another algorithm) the blob store hashes the session's bytes itself.
//!
//! Every operation that changes a session runs on a task of its own, holding the session's
//! lock to the end. A client that disconnects mid-request drops the HTTP handler, not that
//! task, so the file and the offset can never part ways, and a retry waits for the lock.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use wharf_core::{Algorithm, Digest, Hasher, RepoName};
use wharf_store::StoreError;
use wharf_store::blobs::{AppendError, Finished};

use crate::{ByteStream, Registry, RegistryError, Result};

/// In-memory state of a live upload session.
pub struct UploadState {
    pub repo: RepoName,
    pub offset: u64,
    /// Hash of bytes `0..offset`, when known.
    hasher: Option<Hasher>,
    algorithm: Algorithm,
    /// Finished or cancelled: whoever still holds the session must not touch it.
    closed: bool,
}

impl Registry {
    /// Opens a new upload session in `repo`. Returns its id.
    pub async fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<String> {
        self.store.check_space()?;
        self.check_writable(repo).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Row first, file second: a failure (or a crash) in between leaves a row without a
        // file, which reads as an unknown upload and is removed at start-up; never a file that
        // nothing refers to.
        self.store
            .meta
            .create_upload(&id, repo, algorithm.as_str())
            .await?;
        if let Err(e) = self.store.blobs.create_upload(&id).await {
            if let Err(e) = self.store.meta.delete_upload(&id).await {
                tracing::warn!(error = %e, session = %id, "removing a session whose file could not be created failed");
            }
            return Err(e.into());
        }
        let state = UploadState {
            repo: repo.clone(),
            offset: 0,
            hasher: Some(algorithm.hasher()),
            algorithm,
            closed: false,
        };
        self.sessions()
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(state)));
        Ok(id)
    }

    fn sessions(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, Arc<tokio::sync::Mutex<UploadState>>>,
    > {
        match self.uploads.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Finds a session, reloading it from the store after a restart.
    async fn session(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<UploadState>>> {
        let live = self.sessions().get(id).cloned();
        if let Some(s) = live {
            if s.lock().await.repo != *repo {
                return Err(RegistryError::UploadUnknown);
            }
            return Ok(s);
        }
        if !is_session_id(id) {
            return Err(RegistryError::UploadUnknown);
        }
        let row = self
            .store
            .meta
            .get_upload(id)
            .await?
            .ok_or(RegistryError::UploadUnknown)?;
        if row.repo != repo.as_str() || row.finished_digest.is_some() {
            return Err(RegistryError::UploadUnknown);
        }
        let offset = self.store.blobs.upload_len(id).await.map_err(session_err)?;
        let state = UploadState {
            repo: repo.clone(),
            offset,
            hasher: None,
            algorithm: row.algorithm.parse().unwrap_or(Algorithm::Sha256),
            closed: false,
        };
        let s = Arc::new(tokio::sync::Mutex::new(state));
        Ok(self.sessions().entry(id.to_owned()).or_insert(s).clone())
    }

    /// The offset of a session (bytes received so far).
    pub async fn upload_offset(&self, repo: &RepoName, id: &str) -> Result<u64> {
        let s = self.session(repo, id).await?;
        let mut st = s.lock().await;
        self.resync(id, &mut st).await?;
        Ok(st.offset)
    }

    /// With nodes sharing the store, another node may have appended to the session since this
    /// one cached it (a client's PATCHes may each reach another node): the stored length is
    /// the truth, and a cached hasher that does not cover it is dropped (the finish then
    /// hashes what is stored). One listing per request, paid only by shared stores.
    async fn resync(&self, id: &str, st: &mut UploadState) -> Result<()> {
        if !self.store.shared || st.closed {
            return Ok(());
        }
        let stored = match self.store.blobs.upload_len(id).await {
            Ok(n) => n,
            Err(e) => {
                if matches!(e, StoreError::NotFound) {
                    // Finished or cancelled through another node.
                    self.forget(id, st);
                }
                return Err(session_err(e));
            }
        };
        if stored != st.offset {
            st.offset = stored;
            st.hasher = None;
        }
        Ok(())
    }

    /// Appends a chunk. With `range` (start, end inclusive) the chunk must start at the current
    /// offset, else `RangeNotSatisfiable`; and its length must match the range.
    pub async fn patch_upload(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        body: impl ByteStream,
    ) -> Result<u64> {
        self.check_writable(repo).await?;
        let (this, repo, id) = (self.clone(), repo.clone(), id.to_owned());
        detached(async move { this.patch_locked(&repo, &id, range, body).await }).await
    }

    async fn patch_locked(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        body: impl ByteStream,
    ) -> Result<u64> {
        let s = self.session(repo, id).await?;
        let mut st = s.lock().await;
        self.resync(id, &mut st).await?;
        if st.closed {
            return Err(RegistryError::UploadUnknown);
        }
        let expected = check_range(range, st.offset)?;
        self.store.check_space()?;
        self.append(id, &mut st, body, expected).await?;
        Ok(st.offset)
    }

    /// Appends `body` to the session, hashing as it goes. On any failure the blob store cuts
    /// the session back to the old offset, so the client's view of the offset stays true.
    async fn append(
        &self,
        id: &str,
        st: &mut UploadState,
        body: impl ByteStream,
        expected: Option<u64>,
    ) -> Result<()> {
        let hasher = st.hasher.take();
        match self
            .store
            .blobs
            .append_upload(id, st.offset, Box::pin(body), hasher)
            .await
        {
            Ok(a) if expected.is_none_or(|e| e == a.written) => {
                st.offset += a.written;
                st.hasher = a.hasher;
                Ok(())
            }
            Ok(_) => {
                // Stored, but not the length the range promised: drop the chunk again.
                if let Err(e) = self.store.blobs.truncate_upload(id, st.offset).await {
                    self.forget(id, st);
                    return Err(session_err(e));
                }
                Err(RegistryError::SizeInvalid)
            }
            Err(AppendError::Body(e)) => Err(RegistryError::UploadInvalid(format!(
                "body read failed: {e}"
            ))),
            Err(AppendError::Store(e)) => Err(session_err(e)),
        }
    }

    /// Drops the in-memory state of a session whose stored length is no longer known (a
    /// rollback failed half-way): the next request reloads it from the store, whose length is
    /// the truth. Requests already waiting on this state hear the session is unknown.
    fn forget(&self, id: &str, st: &mut UploadState) {
        st.closed = true;
        self.sessions().remove(id);
    }

    /// Finishes an upload: appends the final chunk (if any), verifies the digest, publishes the
    /// blob and links it into the repository. The session is gone afterwards; the same finish
    /// again succeeds again (idempotent).
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: impl ByteStream,
    ) -> Result<()> {
        // A session opened before the repository was write-locked cannot finish after.
        self.check_writable(repo).await?;
        let (this, repo, id, digest) = (self.clone(), repo.clone(), id.to_owned(), digest.clone());
        detached(async move { this.finish_locked(&repo, &id, &digest, range, body).await }).await
    }

    /// Whether `id` was finished with `digest` in `repo` (the idempotent path of a finish).
    async fn finished_as(&self, repo: &RepoName, id: &str, digest: &Digest) -> Result<()> {
        match self.store.meta.get_upload(id).await? {
            Some(row)
                if row.repo == repo.as_str()
                    && row.finished_digest.as_deref() == Some(&digest.to_string()) =>
            {
                Ok(())
            }
            _ => Err(RegistryError::UploadUnknown),
        }
    }

    async fn finish_locked(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: impl ByteStream,
    ) -> Result<()> {
        let s = match self.session(repo, id).await {
            Ok(s) => s,
            Err(RegistryError::UploadUnknown) => return self.finished_as(repo, id, digest).await,
            Err(e) => return Err(e),
        };
        let mut st = s.lock().await;
        match self.resync(id, &mut st).await {
            Ok(()) if !st.closed => {}
            // Finished (or cancelled) by a request that held the lock before us, here or on
            // another node.
            Ok(()) | Err(RegistryError::UploadUnknown) => {
                return self.finished_as(repo, id, digest).await;
            }
            Err(e) => return Err(e),
        }
        let expected = check_range(range, st.offset)?;
        self.store.check_space()?;
        if st.hasher.is_some() && st.algorithm != digest.algorithm() {
            st.hasher = None;
        }
        // Every byte in this request, on object storage: written once, from memory.
        let body: Box<dyn ByteStream> = match self.store.blobs.object_store() {
            Some(obj) if st.offset == 0 => match read_whole(body).await? {
                Whole::Read(parts, _budget) => {
                    return self
                        .finish_whole(obj, repo, id, &mut st, digest, expected, &parts)
                        .await;
                }
                Whole::TooLarge(body) => body,
            },
            _ => Box::new(body),
        };
        let (offset_before, hasher_before) = (st.offset, st.hasher.clone());
        self.append(id, &mut st, body, expected).await?;
        let running = st.hasher.clone().map(Hasher::finish);
        let published = self
            .store
            .blobs
            .finish_upload(id, digest, running.clone())
            .await;
        let stored_before = matches!(published, Ok(Finished::AlreadyStored));
        match published {
            Ok(Finished::Published | Finished::AlreadyStored) => {}
            Ok(Finished::Mismatch) => return Err(RegistryError::DigestMismatch),
            Err(StoreError::NotFound) => return Err(RegistryError::UploadUnknown),
            // Object storage failed (after its retries): the staged chunks are intact, so
            // the session stays, back at the offset it had before this request (its final
            // chunk dropped), and the client may retry the same PUT.
            Err(e @ StoreError::Backend(_)) => {
                if st.offset != offset_before {
                    match self.store.blobs.truncate_upload(id, offset_before).await {
                        Ok(()) => {
                            st.offset = offset_before;
                            st.hasher = hasher_before;
                        }
                        Err(t) => {
                            tracing::warn!(error = %t, session = %id, "dropping a failed finish's final chunk failed");
                            self.forget(id, &mut st);
                        }
                    }
                }
                return Err(e.into());
            }
            Err(e) => {
                // A failed fsync may have dropped the file's dirty pages, so its bytes can no
                // longer be trusted: the session ends here and the client uploads again.
                st.closed = true;
                self.sessions().remove(id);
                if let Err(e) = self.store.meta.delete_upload(id).await {
                    tracing::warn!(error = %e, session = %id, "removing a failed upload's session failed");
                }
                if let Err(e) = self.store.blobs.remove_upload(id).await {
                    tracing::warn!(error = %e, session = %id, "removing a failed upload's file failed");
                }
                return Err(session_err(e));
            }
        }
        let linked = self
            .link_finished(
                repo,
                id,
                digest,
                st.offset as i64,
                Again::Session(running),
                stored_before,
            )
            .await;
        self.end_finished(id, &mut st, linked).await
    }

    /// Ends a finished session, linked (`linked` Ok) or not. Either way its bytes are in the
    /// blob store or were just removed: the session ends, so its status never reports bytes
    /// it no longer has; a client whose finish failed starts a new upload.
    async fn end_finished(&self, id: &str, st: &mut UploadState, linked: Result<()>) -> Result<()> {
        st.closed = true;
        self.sessions().remove(id);
        if let Err(e) = linked {
            if let Err(e) = self.store.meta.delete_upload(id).await {
                tracing::warn!(error = %e, session = %id, "removing a failed upload's session failed");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Links a finished session's content into `repo`, checking in the linking transaction
    /// that garbage collection has not removed the content (see `wharf_store::gc`).
    ///
    /// Content that was already stored (`stored_before`) was never this session's: it may be
    /// garbage, past its grace, that a collection running now removes between the finish and
    /// the link, and the link then fails with `Unavailable`. The backend kept the session's
    /// bytes for that case (`Finished::AlreadyStored`), so they are published again here,
    /// and the client's push succeeds instead of being asked to upload the bytes it just
    /// sent once more. Content published now is young, which no collection removes, so one
    /// more finish is normally all it takes; the bound is there for runs on other nodes that
    /// listed the content before it went. Whatever happens, the kept bytes are removed.
    async fn link_finished(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        size: i64,
        again: Again<'_>,
        stored_before: bool,
    ) -> Result<()> {
        const REPUBLISH_TRIES: usize = 3;
        let mut kept = stored_before;
        let mut linked = self.link_published(repo, digest, size, Some(id)).await;
        for _ in 0..REPUBLISH_TRIES {
            if !(kept && matches!(linked, Err(RegistryError::Unavailable(_)))) {
                break;
            }
            tracing::info!(%repo, %digest, session = %id, "content collected before it was linked; publishing the upload's bytes again");
            let published = match &again {
                Again::Session(running) => {
                    self.store
                        .blobs
                        .finish_upload(id, digest, running.clone())
                        .await
                }
                Again::Bytes(obj, parts) => obj.put_whole(digest, parts).await,
            };
            linked = match published {
                Ok(Finished::Published) => {
                    kept = false;
                    self.link_published(repo, digest, size, Some(id)).await
                }
                // Published again meanwhile by another push.
                Ok(Finished::AlreadyStored) => {
                    self.link_published(repo, digest, size, Some(id)).await
                }
                // The bytes hashed to the digest a moment ago.
                Ok(Finished::Mismatch) => Err(RegistryError::Internal(StoreError::Corrupt(
                    format!("upload {id} no longer hashes to {digest}"),
                ))),
                Err(e) => Err(e.into()),
            };
        }
        if kept
            && matches!(again, Again::Session(_))
            && let Err(e) = self.store.blobs.remove_upload(id).await
        {
            // What is left is garbage that upload expiry removes.
            tracing::warn!(error = %e, session = %id, "removing a finished upload's bytes failed");
        }
        linked
    }

    /// Finishes a session with no staged bytes whose every byte came in the finishing
    /// request, on object storage (see `BlobStore::object_store`): checked against the
    /// digest in memory, then written once to the blob's key and linked. The session's
    /// marker object goes afterwards. A refused finish (wrong length or digest) stores
    /// nothing and leaves the session as it was, empty.
    #[allow(clippy::too_many_arguments)]
    async fn finish_whole(
        &self,
        obj: &wharf_store::blobs::object::ObjectBlobs,
        repo: &RepoName,
        id: &str,
        st: &mut UploadState,
        digest: &Digest,
        expected: Option<u64>,
        parts: &[Bytes],
    ) -> Result<()> {
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if expected.is_some_and(|e| e != size) {
            return Err(RegistryError::SizeInvalid);
        }
        // On a blocking thread, as appends hash: up to 16 MiB would stall the runtime.
        let (owned, algorithm) = (parts.to_vec(), digest.algorithm());
        let actual = tokio::task::spawn_blocking(move || {
            let mut h = algorithm.hasher();
            for p in &owned {
                h.update(p);
            }
            h.finish()
        })
        .await
        .map_err(|e| RegistryError::Internal(StoreError::Io(io::Error::other(e))))?;
        if actual != *digest {
            return Err(RegistryError::DigestMismatch);
        }
        // An object store that fails has written nothing: the session stays, empty, and the
        // client may retry the same PUT.
        let first = obj.put_whole(digest, parts).await?;
        let linked = self
            .link_finished(
                repo,
                id,
                digest,
                size as i64,
                Again::Bytes(obj, parts),
                first == Finished::AlreadyStored,
            )
            .await;
        if let Err(e) = self.store.blobs.remove_upload(id).await {
            // What is left is an empty session that upload expiry removes.
            tracing::warn!(error = %e, session = %id, "removing a finished upload's session failed");
        }
        self.end_finished(id, st, linked).await
    }

    /// Cancels an upload session and deletes its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let (this, repo, id) = (self.clone(), repo.clone(), id.to_owned());
        detached(async move {
            let s = this.session(&repo, &id).await?;
            let mut st = s.lock().await;
            if st.closed {
                return Err(RegistryError::UploadUnknown);
            }
            this.store.meta.delete_upload(&id).await?;
            this.store.blobs.remove_upload(&id).await?;
            st.closed = true;
            this.sessions().remove(&id);
            Ok(())
        })
        .await
    }

    /// A whole blob in one request (POST with `?digest=`, or a monolithic PUT).
    pub async fn upload_whole(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: impl ByteStream,
    ) -> Result<()> {
        let id = self.start_upload(repo, digest.algorithm()).await?;
        let res = self
            .finish_upload(repo, id.as_str(), digest, None, body)
            .await;
        if res.is_err() {
            let _ = self.cancel_upload(repo, &id).await;
        }
        res
    }

    /// What an expiry pass would remove now: `orphans`, session bytes without a row, idle for
    /// `max_age_ms` (what a removal that failed after its row was deleted left behind: without
    /// this they would stay in a bucket until the next start-up), and `stale`, sessions
    /// created more than `max_age_ms` ago and not written to for as long.
    pub(crate) async fn expirable_uploads(&self, max_age_ms: i64) -> Result<Expirable> {
        let cutoff = chrono::Utc::now().timestamp_millis() - max_age_ms;
        let old = |age: &std::time::Duration| age.as_millis() >= max_age_ms as u128;
        // How long each session's bytes have been idle, as the blob store sees it. Listed
        // before the rows are read: a session's row is written before its bytes exist, so a
        // listed session of a live upload always has its row in the read below.
        let idle: std::collections::HashMap<String, std::time::Duration> = self
            .store
            .blobs
            .upload_sessions()
            .await?
            .into_iter()
            .map(|s| (s.id, s.idle))
            .collect();
        let rows: std::collections::HashSet<String> = self
            .store
            .meta
            .upload_ids()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let orphans = idle
            .iter()
            .filter(|(id, age)| !rows.contains(*id) && old(age))
            .map(|(id, _)| id.clone())
            .collect();
        // Old, but still being written to (a slow, large upload): left.
        let stale = self
            .store
            .meta
            .stale_uploads(cutoff)
            .await?
            .into_iter()
            .filter(|id| idle.get(id).is_none_or(old))
            .collect();
        Ok(Expirable { orphans, stale })
    }

    /// Removes abandoned upload sessions and session bytes without a session (see
    /// [`Registry::expirable_uploads`]). A session busy with a request right now is waited
    /// for briefly (a status GET on a shared store holds it for a listing) and then expired
    /// only if that request wrote nothing to it; one still busy after the wait is left and
    /// counted in [`Expired::busy`], so that the caller comes back soon rather than after its
    /// full interval.
    pub async fn expire_uploads(&self, max_age_ms: i64) -> Result<Expired> {
        let Expirable { orphans, stale } = self.expirable_uploads(max_age_ms).await?;
        let mut done = Expired::default();
        for id in &orphans {
            tracing::info!(session = %id, "removing upload bytes without a session");
            self.store.blobs.remove_upload(id).await?;
            done.expired += 1;
        }
        for id in &stale {
            let guard = match self.hold_stale(id, max_age_ms).await? {
                Hold::Expire(g) => g,
                Hold::Skip => continue,
                Hold::Busy => {
                    done.busy += 1;
                    continue;
                }
            };
            self.store.meta.delete_upload(id).await?;
            self.store.blobs.remove_upload(id).await?;
            if let Some(mut g) = guard {
                g.closed = true;
            }
            self.sessions().remove(id);
            done.expired += 1;
        }
        Ok(done)
    }

    /// Takes stale session `id`'s in-memory lock (if this node has it open) for expiry. A
    /// lock a request holds is waited for up to [`BUSY_WAIT`]; the request may have written
    /// to the session meanwhile, so it is expired then only if it is still idle.
    async fn hold_stale(&self, id: &str, max_age_ms: i64) -> Result<Hold> {
        let Some(s) = self.sessions().get(id).cloned() else {
            return Ok(Hold::Expire(None));
        };
        let g = match s.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => match tokio::time::timeout(BUSY_WAIT, s.lock_owned()).await {
                Err(_) => return Ok(Hold::Busy),
                Ok(g) if !g.closed && !self.still_idle(id, max_age_ms).await? => {
                    return Ok(Hold::Skip);
                }
                Ok(g) => g,
            },
        };
        // Finished, cancelled or expired by someone else: nothing to do.
        Ok(if g.closed {
            Hold::Skip
        } else {
            Hold::Expire(Some(g))
        })
    }

    /// Whether session `id`'s bytes have been idle for `max_age_ms` still (a session with no
    /// bytes listed has none to be written to).
    async fn still_idle(&self, id: &str, max_age_ms: i64) -> Result<bool> {
        let listed = self.store.blobs.upload_sessions().await?;
        Ok(listed
            .iter()
            .find(|s| s.id == id)
            .is_none_or(|s| s.idle.as_millis() >= max_age_ms as u128))
    }
}

/// How long an expiry pass waits for a request that holds a stale session: long enough for a
/// status request or a small chunk, short enough that a long PATCH (whose bytes then make the
/// session no longer idle) does not hold up the pass.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What [`Registry::hold_stale`] found.
enum Hold {
    /// Expire it, holding its lock if this node has it open.
    Expire(Option<tokio::sync::OwnedMutexGuard<UploadState>>),
    /// Gone meanwhile, or written to: leave it.
    Skip,
    /// Still held by a request: leave it for a pass soon.
    Busy,
}

/// What an expiry pass did: sessions (and orphaned session bytes) removed, and stale
/// sessions left because a request held them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expired {
    pub expired: usize,
    pub busy: usize,
}

/// What an expiry pass removes (see [`Registry::expirable_uploads`]).
pub(crate) struct Expirable {
    pub(crate) orphans: Vec<String>,
    pub(crate) stale: Vec<String>,
}

/// Where [`Registry::link_finished`] publishes content again from: the session's staged
/// bytes, or bytes in memory (see [`Registry::finish_whole`]).
enum Again<'a> {
    Session(Option<Digest>),
    Bytes(&'a wharf_store::blobs::object::ObjectBlobs, &'a [Bytes]),
}

/// The largest finishing request read into memory to be written once (see
/// [`Registry::finish_whole`]); a larger one is staged as before.
const WHOLE_MAX: usize = 16 << 20;

/// Memory for such requests across the process, in bytes, taken as they arrive: four at
/// the largest size. A request that runs out of it is staged from there on (what it had read
/// goes first), so concurrency does not grow the memory held for whole writes past this.
static WHOLE_BUDGET: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4 * WHOLE_MAX);

/// A finishing request's body: read whole into memory, holding its share of the budget
/// while the bytes live, or too large (or out of budget) and handed on as a stream that
/// yields every byte again.
enum Whole {
    Read(Vec<Bytes>, Option<tokio::sync::SemaphorePermit<'static>>),
    TooLarge(Box<dyn ByteStream>),
}

async fn read_whole(mut body: impl ByteStream) -> Result<Whole> {
    use futures_util::StreamExt;
    let mut parts = Vec::new();
    let mut len = 0;
    let mut budget: Option<tokio::sync::SemaphorePermit<'static>> = None;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| RegistryError::UploadInvalid(format!("body read failed: {e}")))?;
        len += chunk.len();
        let more = u32::try_from(chunk.len())
            .ok()
            .filter(|_| len <= WHOLE_MAX)
            .and_then(|n| WHOLE_BUDGET.try_acquire_many(n).ok());
        parts.push(chunk);
        match (more, &mut budget) {
            (Some(more), Some(held)) => held.merge(more),
            (Some(more), None) => budget = Some(more),
            (None, _) => {
                let read = futures_util::stream::iter(parts.into_iter().map(Ok));
                return Ok(Whole::TooLarge(Box::new(read.chain(body))));
            }
        }
    }
    Ok(Whole::Read(parts, budget))
}

/// A blob-store error on a session: a missing session means it is gone (cancelled or expired
/// meanwhile), which the client hears as an unknown upload, not a server error.
fn session_err(e: StoreError) -> RegistryError {
    match e {
        StoreError::NotFound => RegistryError::UploadUnknown,
        // Object storage: two appends at the same offset (a client racing itself through two
        // nodes) left two chunks, and which one it meant cannot be known.
        StoreError::Conflict => RegistryError::UploadInvalid(
            "two chunks were uploaded at the same offset at once; start the upload again".into(),
        ),
        e => e.into(),
    }
}

/// Runs a session-changing operation on its own task, so that a client disconnecting (which
/// drops the HTTP handler) cannot stop it half-way.
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match tokio::spawn(f).await {
        Ok(r) => r,
        Err(e) => Err(RegistryError::Io(io::Error::other(e))),
    }
}

/// A chunk must start exactly at the session's offset (DESIGN invariant 2). Returns the
/// chunk's length, if a range was given.
fn check_range(range: Option<(u64, u64)>, offset: u64) -> Result<Option<u64>> {
    match range {
        None => Ok(None),
        Some((start, end)) => {
            // `end - start + 1` cannot overflow once `end >= start` and `start == offset`
            // unless the range is the whole u64 space: refuse that as unsatisfiable too.
            match end.checked_sub(start).and_then(|d| d.checked_add(1)) {
                Some(len) if start == offset => Ok(Some(len)),
                _ => Err(RegistryError::RangeNotSatisfiable { offset }),
            }
        }
    }
}

/// Session ids are the simple form of a v4 UUID; anything else never names a session (and
/// must never reach the filesystem as a path).
fn is_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
