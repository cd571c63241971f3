//! A node-local copy of blobs that live on object storage, for blob GETs streamed by a node.
//!
//! Why: a blob GET proxied from object storage costs a round trip to the bucket and two
//! socket copies of every byte on the node (bucket → node → client), and most pulls are of
//! blobs pushed or pulled through the same node moments before: one push, many pulls. Content
//! is immutable under its digest, so a copy never goes stale.
//!
//! Rules:
//! - **Never wrong.** A copy is kept only once its bytes are known to hash to the digest
//!   (hashed while they went by, or handed over already verified by an upload), and it is
//!   only read after the registry has checked that the repository links the blob, exactly as
//!   without the cache.
//! - **Never the source of truth.** Whether a blob exists, the listing garbage collection
//!   reads, and uploads ask the object store, never the cache. A collected blob's copy is
//!   dropped on the node that collects it; a copy left on another node is never read without
//!   a link, and ages out.
//! - **Disposable.** Emptied at start-up (a copy written just before a crash may be torn, and
//!   hashing every copy again would cost more than filling them again); never fsynced.
//! - **Bounded.** Kept copies and copies being written together stay within
//!   `storage.blob_cache_mib`: a new copy evicts the least recently read ones, and is not
//!   written when the copies already being written leave no room for it; a blob larger than
//!   an eighth of the bound is not kept, so one large layer does not flush the rest. A copy is
//!   written only while the data volume has room above the free-space floor for it, for what
//!   the copies being written have yet to write, and [`HEADROOM`] more: the floor's room is
//!   for pushes.
//! - **Never in the way.** A pulled blob's copy is written on a blocking thread of its own,
//!   fed through a bounded channel; a writer that falls behind, a full disk or any I/O error
//!   drops the copy, never slows or fails the response. A pushed blob's copy is written (to
//!   the page cache, not synced) before the push is answered, so the pull that follows reads
//!   it; failing to write it fails nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_core::Digest;

use super::ByteStream;
use crate::SpaceGuard;

/// Chunks of a streamed blob queued to the thread writing its copy; when it is this far
/// behind, the copy is dropped.
const FILL_QUEUE: usize = 256;
/// Write buffer of a copy.
const WRITE_BUF: usize = 256 << 10;
/// Free space a copy must leave above the free-space floor.
pub const HEADROOM: u64 = 64 << 20;
/// Copies written at once. A streamed copy holds a blocking thread for as long as its
/// client downloads: without a bound, many slow clients would take the runtime's blocking
/// threads from the file I/O that needs them. A pull past the bound is not copied.
const MAX_FILLS: usize = 16;

#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    /// The bound, in bytes.
    max: u64,
    space: SpaceGuard,
    state: Mutex<State>,
    fills: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, Default)]
struct State {
    /// Kept copies.
    entries: HashMap<Digest, Entry>,
    /// The kept copies by last read (the clock's value then): eviction takes the first
    /// without scanning.
    lru: BTreeMap<u64, Digest>,
    /// Copies being written, with their sizes: not read, not written twice.
    filling: HashMap<Digest, u64>,
    /// Copies being written whose blob was collected meanwhile: not kept.
    doomed: HashSet<Digest>,
    /// Bytes of the kept copies.
    kept: u64,
    /// Bytes of the copies being written (their whole sizes).
    in_flight: u64,
    /// Orders reads; every value is used once.
    clock: u64,
    /// Names of the temporary files.
    seq: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn busy(&self, d: &Digest) -> bool {
        self.entries.contains_key(d) || self.filling.contains_key(d)
    }
}

#[derive(Debug)]
struct Entry {
    size: u64,
    read_at: u64,
}

/// Room reserved for one copy, and the copies evicted to make it.
struct Reserved {
    victims: Vec<PathBuf>,
    tmp: PathBuf,
    /// One of [`MAX_FILLS`], held until the copy is kept or dropped.
    _fill: tokio::sync::OwnedSemaphorePermit,
}

impl BlobCache {
    /// Opens the cache in `dir`, emptying it, bounded by `max` bytes.
    pub async fn open(dir: PathBuf, max: u64, space: SpaceGuard) -> io::Result<Arc<Self>> {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_dir_all(&d) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::fs::create_dir_all(d.join("tmp"))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Arc::new(BlobCache {
            dir,
            max,
            space,
            state: Mutex::default(),
            fills: Arc::new(tokio::sync::Semaphore::new(MAX_FILLS)),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}", d.algorithm().as_str(), d.hex()))
    }

    /// Streams `len` bytes from `start` of the copy of `d`; None if there is none.
    pub async fn read(&self, d: &Digest, start: u64, len: u64) -> Option<ByteStream> {
        let size = {
            let mut s = self.lock();
            let now = s.tick();
            let State { entries, lru, .. } = &mut *s;
            let e = entries.get_mut(d)?;
            lru.remove(&e.read_at);
            lru.insert(now, d.clone());
            e.read_at = now;
            e.size
        };
        if start.checked_add(len)? > size {
            return None;
        }
        // A copy evicted from here on stays readable through the open file.
        match super::file_range(&self.path(d), start, len).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, digest = %d, "a cached blob could not be read");
                self.forget(d).await;
                None
            }
        }
    }

    /// Whether a copy of `d` is kept.
    #[cfg(test)]
    fn contains(&self, d: &Digest) -> bool {
        self.lock().entries.contains_key(d)
    }

    /// Bytes held by kept copies and copies being written.
    #[cfg(test)]
    fn used(&self) -> u64 {
        let s = self.lock();
        s.kept + s.in_flight
    }

    /// Passes a whole blob's stream from the object store through, writing a copy of its
    /// bytes as they go by; the copy is kept once all `size` bytes arrived and hash to `d`.
    pub fn tee(self: &Arc<Self>, d: &Digest, size: u64, body: ByteStream) -> ByteStream {
        let Some(r) = self.reserve(d, size) else {
            return body;
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(FILL_QUEUE);
        let (me, d) = (self.clone(), d.clone());
        tokio::task::spawn_blocking(move || me.fill(&d, size, r, || rx.blocking_recv(), true));
        let mut tx = Some(tx);
        Box::pin(body.map(move |item| {
            let sent = match (&item, &tx) {
                (Ok(b), Some(t)) => t.try_send(b.clone()).is_ok(),
                // A failed read ends the copy short: it is not kept.
                (Err(_), _) => false,
                (Ok(_), None) => true,
            };
            if !sent {
                // The writer is behind (or gone), or the read failed: drop the copy, never
                // the pace.
                tx = None;
            }
            item
        }))
    }

    /// Keeps a copy of a blob whose bytes the caller holds and has verified (a monolithic
    /// upload just published); returns once the copy is kept or dropped, so a read that
    /// follows finds it.
    pub async fn keep(self: &Arc<Self>, d: &Digest, parts: &[Bytes]) {
        let size = parts.iter().map(|p| p.len() as u64).sum();
        let Some(r) = self.reserve(d, size) else {
            return;
        };
        let (me, d) = (self.clone(), d.clone());
        let mut parts = std::collections::VecDeque::from(parts.to_vec());
        let written =
            tokio::task::spawn_blocking(move || me.fill(&d, size, r, || parts.pop_front(), false));
        if let Err(e) = written.await {
            tracing::warn!(error = %e, "writing a blob's cached copy panicked");
        }
    }

    /// Drops the copy of `d` (its blob was collected), and one being written.
    pub async fn forget(&self, d: &Digest) {
        let had = {
            let mut s = self.lock();
            if s.filling.contains_key(d) {
                s.doomed.insert(d.clone());
            }
            match s.entries.remove(d) {
                Some(e) => {
                    s.kept -= e.size;
                    s.lru.remove(&e.read_at);
                    true
                }
                None => false,
            }
        };
        if had {
            let _ = tokio::fs::remove_file(self.path(d)).await;
        }
    }

    /// Reserves room for a copy of `d`, evicting the least recently read copies past the
    /// bound. None when no copy should be written: one is kept or being written already, the
    /// blob is empty or too large, [`MAX_FILLS`] copies are being written, the copies being
    /// written leave no room, or the volume lacks room.
    fn reserve(&self, d: &Digest, size: u64) -> Option<Reserved> {
        if size == 0 || size > self.max / 8 {
            return None;
        }
        let fill = self.fills.clone().try_acquire_owned().ok()?;
        let promised = {
            let s = self.lock();
            if s.busy(d) {
                return None;
            }
            s.in_flight
        };
        // statvfs outside the lock. The free space it reports does not yet include what the
        // copies being written will write, so that is asked for on top.
        let wanted = size.saturating_add(HEADROOM).saturating_add(promised);
        if !self.space.room_for(wanted) {
            return None;
        }
        let mut s = self.lock();
        if s.busy(d) || s.in_flight + size > self.max {
            return None;
        }
        s.filling.insert(d.clone(), size);
        s.in_flight += size;
        let mut victims = Vec::new();
        while s.kept + s.in_flight > self.max {
            let Some((_, k)) = s.lru.pop_first() else {
                break;
            };
            if let Some(e) = s.entries.remove(&k) {
                s.kept -= e.size;
                victims.push(self.path(&k));
            }
        }
        s.seq += 1;
        let tmp = self.dir.join("tmp").join(s.seq.to_string());
        Some(Reserved {
            victims,
            tmp,
            _fill: fill,
        })
    }

    /// Writes a reserved copy from `next`'s chunks (on a blocking thread), then keeps it or
    /// gives its room back.
    fn fill(
        &self,
        d: &Digest,
        size: u64,
        r: Reserved,
        mut next: impl FnMut() -> Option<Bytes>,
        verify: bool,
    ) {
        for v in &r.victims {
            let _ = std::fs::remove_file(v);
        }
        let written = (|| -> io::Result<bool> {
            let mut w = io::BufWriter::with_capacity(WRITE_BUF, std::fs::File::create(&r.tmp)?);
            let mut hasher = verify.then(|| d.algorithm().hasher());
            let mut n: u64 = 0;
            while let Some(b) = next() {
                n += b.len() as u64;
                if n > size {
                    return Ok(false);
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&b);
                }
                w.write_all(&b)?;
            }
            w.flush()?;
            if n != size || hasher.is_some_and(|h| h.finish() != *d) {
                return Ok(false);
            }
            std::fs::rename(&r.tmp, self.path(d))?;
            Ok(true)
        })();
        let written = match written {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(error = %e, digest = %d, "writing a blob's cached copy failed");
                false
            }
        };
        if !written {
            let _ = std::fs::remove_file(&r.tmp);
        }
        let kept = {
            let mut s = self.lock();
            s.filling.remove(d);
            s.in_flight -= size;
            let doomed = s.doomed.remove(d);
            let kept = written && !doomed;
            if kept {
                let read_at = s.tick();
                s.entries.insert(d.clone(), Entry { size, read_at });
                s.lru.insert(read_at, d.clone());
                s.kept += size;
            }
            kept
        };
        if written && !kept {
            // Collected while it was written.
            let _ = std::fs::remove_file(self.path(d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FreeSpaceFloor;

    async fn cache(max: u64) -> (tempfile::TempDir, Arc<BlobCache>) {
        let t = tempfile::tempdir().unwrap();
        let space = SpaceGuard::new(t.path(), FreeSpaceFloor::Bytes(0));
        let c = BlobCache::open(t.path().join("cache"), max, space)
            .await
            .unwrap();
        (t, c)
    }

    fn blob(n: usize, seed: u8) -> (Digest, Bytes) {
        let b: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        (Digest::sha256_of(&b), Bytes::from(b))
    }

    async fn collect(s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    fn chunks(b: &Bytes, n: usize) -> ByteStream {
        let parts: Vec<io::Result<Bytes>> =
            b.chunks(n).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Box::pin(futures_util::stream::iter(parts))
    }

    /// Waits for the blocking writer of a copy to finish.
    async fn settled(c: &BlobCache) {
        for _ in 0..500 {
            if c.lock().filling.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a copy was still being written after 5 s");
    }

    #[tokio::test]
    async fn a_streamed_blob_is_kept_once_it_hashes_to_its_digest_and_ranges_read_from_it() {
        let (_t, c) = cache(64 << 20).await;
        let (d, b) = blob(300_000, 1);
        let passed = collect(c.tee(&d, b.len() as u64, chunks(&b, 7_000))).await;
        assert_eq!(passed, b, "the stream passes through unchanged");
        settled(&c).await;
        assert!(c.contains(&d));
        assert_eq!(c.used(), b.len() as u64);
        let whole = collect(c.read(&d, 0, b.len() as u64).await.unwrap()).await;
        assert_eq!(whole, b);
        let part = collect(c.read(&d, 1_000, 5_000).await.unwrap()).await;
        assert_eq!(part, &b[1_000..6_000]);
        assert!(c.read(&d, 299_000, 2_000).await.is_none(), "past the end");
        let (other, _) = blob(10, 2);
        assert!(c.read(&other, 0, 10).await.is_none());
    }

    #[tokio::test]
    async fn wrong_short_or_failed_streams_are_never_kept() {
        let (_t, c) = cache(64 << 20).await;
        let (d, b) = blob(100_000, 3);
        // Bytes that do not hash to the digest (same length).
        let (_, wrong) = blob(100_000, 4);
        collect(c.tee(&d, 100_000, chunks(&wrong, 4_096))).await;
        settled(&c).await;
        assert!(!c.contains(&d));
        // A stream that ends early (a client that went away drops it the same way).
        let short = chunks(&b.slice(..50_000), 4_096);
        collect(c.tee(&d, 100_000, short)).await;
        settled(&c).await;
        assert!(!c.contains(&d));
        // A stream whose read fails half-way.
        let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
            Ok(b.slice(..50_000)),
            Err(io::Error::other("reset")),
            Ok(b.slice(50_000..)),
        ]));
        let mut s = c.tee(&d, 100_000, failing);
        while s.next().await.is_some() {}
        drop(s);
        settled(&c).await;
        assert!(!c.contains(&d));
        assert_eq!(c.used(), 0, "every reservation was given back");
        // No temporary file is left behind.
        let left = std::fs::read_dir(c.dir.join("tmp")).unwrap().count();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn the_bound_evicts_the_least_recently_read_and_skips_large_blobs() {
        let (_t, c) = cache(800_000).await;
        let blobs: Vec<_> = (0..8).map(|i| blob(100_000, 10 + i)).collect();
        for (d, b) in &blobs[..8] {
            c.keep(d, std::slice::from_ref(b)).await;
        }
        assert_eq!(c.used(), 800_000);
        // Read the first: the second is now the least recently read.
        assert!(c.read(&blobs[0].0, 0, 10).await.is_some());
        let (d9, b9) = blob(100_000, 99);
        c.keep(&d9, std::slice::from_ref(&b9)).await;
        assert!(c.contains(&d9));
        assert!(c.contains(&blobs[0].0), "recently read copies stay");
        assert!(
            !c.contains(&blobs[1].0),
            "the least recently read copy went"
        );
        assert!(!c.path(&blobs[1].0).exists());
        assert!(c.used() <= 800_000);
        {
            let s = c.lock();
            assert_eq!(s.lru.len(), s.entries.len(), "one LRU entry per copy");
        }
        // Larger than an eighth of the bound: passed through, not kept.
        let (dl, bl) = blob(100_001, 7);
        collect(c.tee(&dl, bl.len() as u64, chunks(&bl, 65_536))).await;
        settled(&c).await;
        assert!(!c.contains(&dl));
        // A collected blob's copy goes.
        c.forget(&d9).await;
        assert!(!c.contains(&d9) && !c.path(&d9).exists());
    }

    #[tokio::test]
    async fn at_most_max_fills_copies_are_written_at_once() {
        let (_t, c) = cache(64 << 20).await;
        let blobs: Vec<_> = (0..=MAX_FILLS).map(|i| blob(10_000, i as u8)).collect();
        // Streams not read yet: each holds its copy's writer open.
        let streams: Vec<ByteStream> = blobs
            .iter()
            .map(|(d, b)| c.tee(d, b.len() as u64, chunks(b, 1_000)))
            .collect();
        for s in streams {
            collect(s).await;
        }
        settled(&c).await;
        let kept = blobs.iter().filter(|(d, _)| c.contains(d)).count();
        assert_eq!(kept, MAX_FILLS);
        assert!(
            !c.contains(&blobs[MAX_FILLS].0),
            "the one past the bound passed through"
        );
        // The permits came back.
        let (d, b) = &blobs[MAX_FILLS];
        collect(c.tee(d, b.len() as u64, chunks(b, 1_000))).await;
        settled(&c).await;
        assert!(c.contains(d));
    }

    #[tokio::test]
    async fn copies_being_written_count_against_the_bound() {
        // Room for eight 100 kB copies; two being written at once hold 200 kB of it.
        let (_t, c) = cache(800_000).await;
        let kept: Vec<_> = (0..6).map(|i| blob(100_000, 40 + i)).collect();
        for (d, b) in &kept {
            c.keep(d, std::slice::from_ref(b)).await;
        }
        let slow: Vec<_> = (0..2).map(|i| blob(100_000, 50 + i)).collect();
        let open: Vec<ByteStream> = slow
            .iter()
            .map(|(d, b)| c.tee(d, b.len() as u64, chunks(b, 1_000)))
            .collect();
        assert_eq!(c.used(), 800_000, "six kept and two being written");
        // A third copy evicts the least recently read kept one rather than pass the bound.
        let (d, b) = blob(100_000, 60);
        c.keep(&d, std::slice::from_ref(&b)).await;
        assert!(c.contains(&d) && !c.contains(&kept[0].0));
        assert!(c.used() <= 800_000);
        for s in open {
            collect(s).await;
        }
        settled(&c).await;
        assert!(slow.iter().all(|(d, _)| c.contains(d)));
        assert!(c.used() <= 800_000, "{}", c.used());
        // When copies being written alone fill the bound, a new one is not written.
        let (_t2, c) = cache(800_000).await;
        let big: Vec<_> = (0..8).map(|i| blob(100_000, 70 + i)).collect();
        let open: Vec<ByteStream> = big
            .iter()
            .map(|(d, b)| c.tee(d, b.len() as u64, chunks(b, 1_000)))
            .collect();
        let (d, b) = blob(100_000, 80);
        c.keep(&d, std::slice::from_ref(&b)).await;
        assert!(!c.contains(&d));
        assert_eq!(c.used(), 800_000);
        drop(open);
        settled(&c).await;
        assert_eq!(c.used(), 0, "copies cut short gave their room back");
    }

    #[tokio::test]
    async fn a_copy_whose_blob_is_collected_while_written_is_not_kept() {
        let (_t, c) = cache(64 << 20).await;
        let (d, b) = blob(100_000, 90);
        let s = c.tee(&d, b.len() as u64, chunks(&b, 1_000));
        c.forget(&d).await;
        assert_eq!(collect(s).await, b);
        settled(&c).await;
        assert!(!c.contains(&d));
        assert!(!c.path(&d).exists());
        assert_eq!(c.used(), 0);
        // A later copy is kept again.
        c.keep(&d, std::slice::from_ref(&b)).await;
        assert!(c.contains(&d));
    }

    #[tokio::test]
    async fn no_copy_is_written_without_room_above_the_floor() {
        let t = tempfile::tempdir().unwrap();
        // A floor larger than any volume here.
        let space = SpaceGuard::new(t.path(), FreeSpaceFloor::Bytes(u64::MAX / 2));
        let c = BlobCache::open(t.path().join("cache"), 64 << 20, space)
            .await
            .unwrap();
        let (d, b) = blob(1_000, 5);
        c.keep(&d, std::slice::from_ref(&b)).await;
        assert_eq!(collect(c.tee(&d, 1_000, chunks(&b, 100))).await, b);
        settled(&c).await;
        assert!(!c.contains(&d));
        assert_eq!(c.used(), 0);
    }

    #[tokio::test]
    async fn opening_empties_the_cache() {
        let t = tempfile::tempdir().unwrap();
        let space = SpaceGuard::new(t.path(), FreeSpaceFloor::Bytes(0));
        let dir = t.path().join("cache");
        let c = BlobCache::open(dir.clone(), 64 << 20, space.clone())
            .await
            .unwrap();
        let (d, b) = blob(1_000, 6);
        c.keep(&d, &[b]).await;
        assert!(c.path(&d).exists());
        drop(c);
        let c = BlobCache::open(dir, 64 << 20, space).await.unwrap();
        assert!(!c.contains(&d));
        assert!(
            !c.path(&d).exists(),
            "a copy from before a restart is never trusted"
        );
    }
}
