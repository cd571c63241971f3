//! The blob store's contract: one set of tests that every backend must pass.
//!
//! The filesystem backend always runs. S3 runs when `WHARF_TEST_S3=1` (with `AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), Azure Blob when
//! `WHARF_TEST_AZURE=1` (with `AZURE_STORAGE_CONNECTION_STRING`); both use the bucket or
//! container `WHARF_TEST_BUCKET` (default `wharf-test`), which must exist, under a fresh
//! prefix per test. `scripts/backends.sh` starts moto and Azurite and runs them; without the
//! variables, each test says which backends it did not run.

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_core::{Algorithm, Digest};
use wharf_store::StoreError;
use wharf_store::blobs::{AppendError, BlobLocation, BlobStore, ByteStream, Finished};

struct Backend {
    name: &'static str,
    location: BlobLocation,
    dir: tempfile::TempDir,
    /// Object storage read through a node's blob cache (`storage.blob_cache_mib`): the
    /// contract holds with the copies in between too.
    cached: bool,
}

impl Backend {
    async fn open(&self) -> BlobStore {
        if !self.cached {
            return BlobStore::open(self.dir.path(), &self.location)
                .await
                .unwrap_or_else(|e| panic!("{}: opening the blob store: {e}", self.name));
        }
        let o = wharf_store::blobs::object::ObjectBlobs::open(&self.location).unwrap();
        o.check().await.unwrap();
        let space = wharf_store::SpaceGuard::new(self.dir.path(), Default::default());
        let cache = wharf_store::blobs::cache::BlobCache::open(
            self.dir.path().join("blob-cache"),
            64 << 20,
            space,
        )
        .await
        .unwrap();
        BlobStore::Object(o.with_cache(cache))
    }
}

fn enabled(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// The backends this run tests, each under a fresh prefix.
fn backends(test: &str) -> Vec<Backend> {
    let bucket = std::env::var("WHARF_TEST_BUCKET").unwrap_or_else(|_| "wharf-test".into());
    let prefix = format!("contract/{test}/{}", uuid::Uuid::new_v4().simple());
    let mut out = vec![Backend {
        name: "filesystem",
        location: BlobLocation::DataDir,
        dir: tempfile::tempdir().unwrap(),
        cached: false,
    }];
    if enabled("WHARF_TEST_S3") {
        out.push(Backend {
            name: "s3",
            location: BlobLocation::S3 {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            },
            dir: tempfile::tempdir().unwrap(),
            cached: false,
        });
        out.push(Backend {
            name: "s3 with the node's blob cache",
            location: BlobLocation::S3 {
                bucket: bucket.clone(),
                prefix: format!("{prefix}-cached"),
            },
            dir: tempfile::tempdir().unwrap(),
            cached: true,
        });
    } else {
        eprintln!("{test}: s3 not run (set WHARF_TEST_S3=1 and AWS_*; see scripts/backends.sh)");
    }
    if enabled("WHARF_TEST_AZURE") {
        out.push(Backend {
            name: "azure",
            location: BlobLocation::Azure {
                container: bucket,
                prefix,
            },
            dir: tempfile::tempdir().unwrap(),
            cached: false,
        });
    } else {
        eprintln!(
            "{test}: azure not run (set WHARF_TEST_AZURE=1 and AZURE_STORAGE_CONNECTION_STRING; see scripts/backends.sh)"
        );
    }
    let names: Vec<&str> = out.iter().map(|b| b.name).collect();
    eprintln!("{test}: running on {}", names.join(", "));
    out
}

fn body(parts: &[&[u8]]) -> ByteStream {
    let v: Vec<std::io::Result<Bytes>> = parts
        .iter()
        .map(|p| Ok(Bytes::copy_from_slice(p)))
        .collect();
    Box::pin(futures_util::stream::iter(v))
}

/// A body that yields `data` and then fails, as a client that goes away does.
fn broken_body(data: &[u8]) -> ByteStream {
    let v: Vec<std::io::Result<Bytes>> = vec![
        Ok(Bytes::copy_from_slice(data)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    Box::pin(futures_util::stream::iter(v))
}

async fn read_all(s: &BlobStore, d: &Digest, start: u64, len: u64) -> Vec<u8> {
    let mut st = s.read(d, start, len).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = st.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Finishes session `id` under `d`, which must publish exactly `expected`.
async fn assert_publishes(
    s: &BlobStore,
    id: &str,
    d: &Digest,
    running: Option<Digest>,
    expected: &[u8],
    what: &str,
) {
    assert_eq!(
        s.finish_upload(id, d, running).await.unwrap(),
        Finished::Published,
        "{what}"
    );
    assert!(
        read_all(s, d, 0, expected.len() as u64).await == expected,
        "{what}: the published bytes differ"
    );
}

/// Publishes `data` through a fresh upload session, as a finished upload does.
async fn publish(s: &BlobStore, data: &[u8]) -> Digest {
    let (id, d) = (sid(), Digest::of(Algorithm::Sha256, data));
    s.create_upload(&id).await.unwrap();
    s.append_upload(&id, 0, body(&[data]), None).await.unwrap();
    s.finish_upload(&id, &d, None).await.unwrap();
    d
}

#[tokio::test]
async fn chunks_appended_at_the_offset_are_published_under_their_digest_and_read_by_range() {
    for b in backends("publish") {
        let s = b.open().await;
        let (one, two) = (data(1000, 1), data(2345, 2));
        let whole = [one.clone(), two.clone()].concat();
        let d = Digest::sha256_of(&whole);
        let id = sid();
        s.create_upload(&id).await.unwrap();
        assert_eq!(s.upload_len(&id).await.unwrap(), 0, "{}", b.name);
        let a = s
            .append_upload(&id, 0, body(&[&one]), Some(Algorithm::Sha256.hasher()))
            .await
            .unwrap();
        assert_eq!(a.written, 1000, "{}", b.name);
        let a = s
            .append_upload(&id, 1000, body(&[&two[..100], &two[100..]]), a.hasher)
            .await
            .unwrap();
        assert_eq!(a.written, 2345, "{}", b.name);
        assert_eq!(s.upload_len(&id).await.unwrap(), 3345, "{}", b.name);
        assert!(
            !s.blob_exists(&d).await.unwrap(),
            "{}: visible before finish",
            b.name
        );
        let running = a.hasher.map(|h| h.finish());
        assert_eq!(running.as_ref(), Some(&d), "{}", b.name);
        assert_eq!(
            s.finish_upload(&id, &d, running).await.unwrap(),
            Finished::Published,
            "{}",
            b.name
        );
        assert_eq!(s.size(&d).await.unwrap(), Some(3345), "{}", b.name);
        assert_eq!(read_all(&s, &d, 0, 3345).await, whole, "{}", b.name);
        assert_eq!(
            read_all(&s, &d, 990, 20).await,
            &whole[990..1010],
            "{}",
            b.name
        );
        assert_eq!(
            read_all(&s, &d, 3344, 1).await,
            &whole[3344..],
            "{}",
            b.name
        );
        assert!(read_all(&s, &d, 5, 0).await.is_empty(), "{}", b.name);
        // The session is gone once published.
        assert!(
            matches!(s.upload_len(&id).await, Err(StoreError::NotFound)),
            "{}",
            b.name
        );
        assert!(
            !s.upload_sessions()
                .await
                .unwrap()
                .iter()
                .any(|x| x.id == id),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_wrong_digest_publishes_nothing_and_keeps_the_session() {
    for b in backends("mismatch") {
        let s = b.open().await;
        let bytes = data(5000, 3);
        let right = Digest::sha256_of(&bytes);
        let wrong = Digest::sha256_of(b"something else");
        for running in [true, false] {
            let id = sid();
            s.create_upload(&id).await.unwrap();
            let a = s
                .append_upload(&id, 0, body(&[&bytes]), Some(Algorithm::Sha256.hasher()))
                .await
                .unwrap();
            let r = running.then(|| a.hasher.unwrap().finish());
            assert_eq!(
                s.finish_upload(&id, &wrong, r.clone()).await.unwrap(),
                Finished::Mismatch,
                "{} running={running}",
                b.name
            );
            assert!(!s.blob_exists(&wrong).await.unwrap(), "{}", b.name);
            assert_eq!(s.upload_len(&id).await.unwrap(), 5000, "{}", b.name);
            // Without a running hash (after a restart) the store hashes what it holds.
            let what = format!("{} running={running}", b.name);
            assert_publishes(&s, &id, &right, None, &bytes, &what).await;
            // So that the next round publishes too.
            s.delete_blob(&right).await.unwrap();
        }
    }
}

/// Object storage, where two nodes can append to one session: a client that races itself (a
/// PATCH retried through another node while the first still runs, or on purpose with other
/// bytes) leaves two chunks at one offset. Whatever is then published must hash to the digest
/// it is stored under; of two chunks of different sizes, the session's length is unknowable.
/// (One process owns a data directory, and the registry serialises a session's appends there,
/// so the filesystem backend has no such race to test.)
#[tokio::test]
async fn raced_appends_at_one_offset_never_publish_bytes_under_another_digest() {
    for b in backends("raced") {
        if matches!(b.location, BlobLocation::DataDir) {
            continue;
        }
        let (node1, node2) = (b.open().await, b.open().await);
        let (x, y) = (data(5000, 5), data(5000, 6));
        let (dx, dy) = (Digest::sha256_of(&x), Digest::sha256_of(&y));
        // Each node finishes claiming its own bytes, and then the other's.
        for (finisher, claim, mine) in [
            (&node1, &dx, true),
            (&node2, &dy, true),
            (&node1, &dy, false),
            (&node2, &dx, false),
        ] {
            let id = sid();
            node1.create_upload(&id).await.unwrap();
            let a1 = node1
                .append_upload(&id, 0, body(&[&x]), Some(Algorithm::Sha256.hasher()))
                .await
                .unwrap();
            let a2 = node2
                .append_upload(&id, 0, body(&[&y]), Some(Algorithm::Sha256.hasher()))
                .await
                .unwrap();
            assert_eq!(finisher.upload_len(&id).await.unwrap(), 5000, "{}", b.name);
            let own = if std::ptr::eq(finisher, &node1) {
                a1.hasher
            } else {
                a2.hasher
            };
            let finished = finisher
                .finish_upload(&id, claim, own.map(|h| h.finish()))
                .await
                .unwrap();
            if mine {
                // A node's own bytes under their own digest: published, and exactly them.
                assert_eq!(finished, Finished::Published, "{}", b.name);
            }
            if finished == Finished::Published {
                let stored = read_all(&node1, claim, 0, 5000).await;
                assert_eq!(&Digest::sha256_of(&stored), claim, "{}", b.name);
            }
            node1.delete_blob(&dx).await.ok();
            node1.delete_blob(&dy).await.ok();
        }
        // Two chunks of different sizes at one offset: refused, nothing published.
        let id = sid();
        node1.create_upload(&id).await.unwrap();
        node1
            .append_upload(&id, 0, body(&[&x]), None)
            .await
            .unwrap();
        node2
            .append_upload(&id, 0, body(&[&y[..3000]]), None)
            .await
            .unwrap();
        let err = node1.finish_upload(&id, &dx, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "{}: {err}", b.name);
        assert!(!node1.blob_exists(&dx).await.unwrap(), "{}", b.name);
        // Cutting the session back removes both, and it can be used again.
        node1.truncate_upload(&id, 0).await.unwrap();
        node1
            .append_upload(&id, 0, body(&[&x]), None)
            .await
            .unwrap();
        assert_publishes(&node2, &id, &dx, None, &x, b.name).await;
    }
}

#[tokio::test]
async fn a_failed_append_leaves_the_offset_where_it_was() {
    for b in backends("rollback") {
        let s = b.open().await;
        let id = sid();
        s.create_upload(&id).await.unwrap();
        s.append_upload(&id, 0, body(&[b"hello "]), None)
            .await
            .unwrap();
        let err = s
            .append_upload(&id, 6, broken_body(&data(3000, 4)), None)
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::Body(_)), "{}: {err}", b.name);
        assert_eq!(s.upload_len(&id).await.unwrap(), 6, "{}", b.name);
        // Truncate drops whole appends past the length given.
        s.append_upload(&id, 6, body(&[b"garbage"]), None)
            .await
            .unwrap();
        assert_eq!(s.upload_len(&id).await.unwrap(), 13, "{}", b.name);
        s.truncate_upload(&id, 6).await.unwrap();
        assert_eq!(s.upload_len(&id).await.unwrap(), 6, "{}", b.name);
        s.append_upload(&id, 6, body(&[b"world"]), None)
            .await
            .unwrap();
        let d = Digest::sha256_of(b"hello world");
        assert_publishes(&s, &id, &d, None, b"hello world", b.name).await;
    }
}

#[tokio::test]
async fn sessions_are_listed_removed_and_survive_a_reopen() {
    for b in backends("sessions") {
        let s = b.open().await;
        let (keep, drop) = (sid(), sid());
        for id in [&keep, &drop] {
            s.create_upload(id).await.unwrap();
            s.append_upload(id, 0, body(&[b"abc"]), None).await.unwrap();
        }
        let listed = s.upload_sessions().await.unwrap();
        for id in [&keep, &drop] {
            let x = listed
                .iter()
                .find(|x| &x.id == id)
                .unwrap_or_else(|| panic!("{}: {id} not listed", b.name));
            assert!(x.idle.as_secs() < 600, "{}: idle {:?}", b.name, x.idle);
        }
        s.remove_upload(&drop).await.unwrap();
        s.remove_upload(&drop).await.unwrap();
        assert!(
            matches!(s.upload_len(&drop).await, Err(StoreError::NotFound)),
            "{}",
            b.name
        );
        assert!(
            matches!(
                s.append_upload(&drop, 3, body(&[b"x"]), None).await,
                Err(AppendError::Store(StoreError::NotFound))
            ),
            "{}: an append to a removed session",
            b.name
        );
        assert!(
            !s.upload_sessions()
                .await
                .unwrap()
                .iter()
                .any(|x| x.id == drop),
            "{}",
            b.name
        );
        // A new handle on the same location (a restart, another node) sees the session.
        let again = b.open().await;
        assert_eq!(again.upload_len(&keep).await.unwrap(), 3, "{}", b.name);
        again
            .append_upload(&keep, 3, body(&[b"def"]), None)
            .await
            .unwrap();
        let d = Digest::sha256_of(b"abcdef");
        assert_eq!(
            again.finish_upload(&keep, &d, None).await.unwrap(),
            Finished::Published
        );
        assert_eq!(read_all(&s, &d, 0, 6).await, b"abcdef", "{}", b.name);
    }
}

#[tokio::test]
async fn publishing_is_idempotent_and_blobs_can_be_deleted() {
    for b in backends("delete") {
        let s = b.open().await;
        let bytes = data(777, 5);
        let d = Digest::sha256_of(&bytes);
        let mut ids = Vec::new();
        // The second session finds the content stored; with and without a running hash.
        for (expected, hashed) in [
            (Finished::Published, true),
            (Finished::AlreadyStored, true),
            (Finished::AlreadyStored, false),
        ] {
            let id = sid();
            s.create_upload(&id).await.unwrap();
            let a = s
                .append_upload(
                    &id,
                    0,
                    body(&[&bytes]),
                    hashed.then(|| Algorithm::Sha256.hasher()),
                )
                .await
                .unwrap();
            assert_eq!(
                s.finish_upload(&id, &d, a.hasher.map(|h| h.finish()))
                    .await
                    .unwrap(),
                expected,
                "{}",
                b.name
            );
            ids.push(id);
        }
        // A session that found its content stored keeps its bytes until it is removed.
        assert!(
            matches!(s.upload_len(&ids[0]).await, Err(StoreError::NotFound)),
            "{}",
            b.name
        );
        assert_eq!(s.upload_len(&ids[1]).await.unwrap(), 777, "{}", b.name);
        s.remove_upload(&ids[2]).await.unwrap();
        assert!(
            matches!(s.upload_len(&ids[2]).await, Err(StoreError::NotFound)),
            "{}",
            b.name
        );
        assert_eq!(s.size(&d).await.unwrap(), Some(777), "{}", b.name);
        let listed = s.list_blobs().await.unwrap();
        assert_eq!(listed.len(), 1, "{}: {listed:?}", b.name);
        assert_eq!((&listed[0].digest, listed[0].size), (&d, 777), "{}", b.name);
        s.delete_blob(&d).await.unwrap();
        assert!(s.list_blobs().await.unwrap().is_empty(), "{}", b.name);
        assert_eq!(s.size(&d).await.unwrap(), None, "{}", b.name);
        assert!(!s.blob_exists(&d).await.unwrap(), "{}", b.name);
        s.delete_blob(&d).await.unwrap();
        assert!(
            matches!(s.read(&d, 0, 10).await, Err(StoreError::NotFound)),
            "{}",
            b.name
        );
        assert!(
            matches!(s.read(&d, 0, 0).await, Err(StoreError::NotFound)),
            "{}",
            b.name
        );
        assert_eq!(s.read_small(&d, 1 << 20).await.unwrap(), None, "{}", b.name);
        // The content went (a garbage collection) before the kept session was linked: a
        // second finish publishes its bytes, and the session goes.
        assert_eq!(
            s.finish_upload(&ids[1], &d, None).await.unwrap(),
            Finished::Published,
            "{}",
            b.name
        );
        assert_eq!(read_all(&s, &d, 0, 777).await, bytes, "{}", b.name);
        assert!(
            matches!(s.upload_len(&ids[1]).await, Err(StoreError::NotFound)),
            "{}",
            b.name
        );
        assert!(s.upload_sessions().await.unwrap().is_empty(), "{}", b.name);
    }
}

#[tokio::test]
async fn large_blobs_are_published_whole_from_many_appends_or_one() {
    for b in backends("large") {
        let s = b.open().await;
        // Larger than the object backend's in-memory limit, in uneven appends.
        let bytes = data(21 << 20, 6);
        let d = Digest::of(Algorithm::Sha512, &bytes);
        let id = sid();
        s.create_upload(&id).await.unwrap();
        let mut off = 0usize;
        let mut h = Some(Algorithm::Sha512.hasher());
        for size in [3 << 20, 9 << 20, 1, (21 << 20) - (12 << 20) - 1] {
            let part = &bytes[off..off + size];
            let pieces: Vec<&[u8]> = part.chunks(1 << 20).collect();
            let a = s
                .append_upload(&id, off as u64, body(&pieces), h)
                .await
                .unwrap();
            h = a.hasher;
            off += size;
        }
        assert_eq!(s.upload_len(&id).await.unwrap(), 21 << 20, "{}", b.name);
        assert_eq!(
            s.finish_upload(&id, &d, h.map(|h| h.finish()))
                .await
                .unwrap(),
            Finished::Published,
            "{}",
            b.name
        );
        assert_eq!(s.size(&d).await.unwrap(), Some(21 << 20), "{}", b.name);
        let start = (8 << 20) - 10;
        assert_eq!(
            read_all(&s, &d, start as u64, 4096).await,
            &bytes[start..start + 4096],
            "{}",
            b.name
        );
        assert!(
            read_all(&s, &d, 0, 21 << 20).await == bytes,
            "{}: whole read differs",
            b.name
        );
        // The same bytes as one append (staged as a multipart upload on object storage) with
        // the running hash: on S3 the finish publishes it by a server-side copy.
        s.delete_blob(&d).await.unwrap();
        let id = sid();
        s.create_upload(&id).await.unwrap();
        let pieces: Vec<&[u8]> = bytes.chunks(1 << 20).collect();
        let a = s
            .append_upload(&id, 0, body(&pieces), Some(Algorithm::Sha512.hasher()))
            .await
            .unwrap();
        let running = a.hasher.map(|h| h.finish());
        assert_eq!(running.as_ref(), Some(&d), "{}", b.name);
        let what = format!("{}: one append", b.name);
        assert_publishes(&s, &id, &d, running, &bytes, &what).await;
        assert_eq!(s.size(&d).await.unwrap(), Some(21 << 20), "{}", b.name);
        assert!(
            matches!(s.upload_len(&id).await, Err(StoreError::NotFound)),
            "{}: the session is gone after publishing",
            b.name
        );
    }
}

#[tokio::test]
async fn small_reads_refuse_what_is_too_large() {
    for b in backends("small") {
        let s = b.open().await;
        let bytes = br#"{"architecture":"amd64","os":"linux"}"#;
        let d = Digest::sha256_of(bytes);
        let id = sid();
        s.create_upload(&id).await.unwrap();
        s.append_upload(&id, 0, body(&[bytes]), None).await.unwrap();
        s.finish_upload(&id, &d, None).await.unwrap();
        assert_eq!(
            s.read_small(&d, 1024).await.unwrap().as_deref(),
            Some(&bytes[..]),
            "{}",
            b.name
        );
        assert_eq!(s.read_small(&d, 10).await.unwrap(), None, "{}", b.name);
    }
}

/// A prefix serves one database (object storage only: the filesystem's blobs live beside
/// their database). A second database on a bound prefix is refused, and so is a database that
/// links blobs when it is pointed at a prefix holding none of them; reopening its own prefix
/// works.
#[tokio::test]
async fn an_object_prefix_serves_one_database_and_a_wrong_one_is_refused_at_start_up() {
    use wharf_store::{Store, StoreOptions};
    let test = "an_object_prefix_serves_one_database";
    for b in backends(test) {
        let prefix = format!("contract/{test}/{}", sid());
        let (bucket, fresh) = match &b.location {
            BlobLocation::DataDir => {
                eprintln!("{test}: not applicable to {}", b.name);
                continue;
            }
            BlobLocation::S3 { bucket, .. } => (
                bucket.clone(),
                BlobLocation::S3 {
                    bucket: bucket.clone(),
                    prefix,
                },
            ),
            BlobLocation::Azure { container, .. } => (
                container.clone(),
                BlobLocation::Azure {
                    container: container.clone(),
                    prefix,
                },
            ),
        };
        let opts = StoreOptions {
            blob_store: b.location.clone(),
            ..Default::default()
        };
        let s = Store::open(b.dir.path(), &opts)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        // A linked blob: from now on the database's content must be in its prefix.
        let data = b"bound content";
        let d = publish(s.blobs(), data).await;
        s.registry_store()
            .gc
            .link_published(
                &wharf_core::RepoName::parse("bound/app").unwrap(),
                &d,
                data.len() as i64,
                0,
                None,
            )
            .await
            .unwrap();
        drop(s);

        let other = tempfile::tempdir().unwrap();
        match Store::open(other.path(), &opts).await {
            Err(StoreError::Config(m)) => {
                assert!(m.contains("another Wharf database"), "{}: {m}", b.name);
                assert!(m.contains(&bucket), "{}: names the location: {m}", b.name);
            }
            other => panic!("{}: a second database on a bound prefix: {other:?}", b.name),
        }
        let moved = StoreOptions {
            blob_store: fresh,
            ..Default::default()
        };
        match Store::open(b.dir.path(), &moved).await {
            Err(StoreError::Config(m)) => {
                assert!(m.contains("holds no wharf-store-id"), "{}: {m}", b.name)
            }
            other => panic!(
                "{}: a database with links on an empty prefix: {other:?}",
                b.name
            ),
        }
        // Its own prefix still opens, and the blob is there.
        let s = Store::open(b.dir.path(), &opts)
            .await
            .unwrap_or_else(|e| panic!("{}: reopening: {e}", b.name));
        assert_eq!(s.blobs().size(&d).await.unwrap(), Some(data.len() as u64));
    }
}

/// Garbage collection over each backend's content listing: content no link names, written
/// before the cutoff, goes; linked content stays; a dry run counts the same and deletes
/// nothing. (The grace arithmetic and the races are the subject of the gc tests; this is the
/// listing, ages and deletes of each backend.)
#[tokio::test]
async fn a_collection_removes_unlinked_content_and_keeps_linked_content() {
    use wharf_store::{GcOptions, Store, StoreOptions};
    let test = "collection";
    for b in backends(test) {
        let opts = StoreOptions {
            blob_store: b.location.clone(),
            ..Default::default()
        };
        let s = Store::open(b.dir.path(), &opts)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        let kept = publish(s.blobs(), b"linked content").await;
        let gone = publish(s.blobs(), b"unlinked content").await;
        let repo = wharf_core::RepoName::parse("gc/app").unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        // A link used "now": after an hour's grace measured two hours on, the link itself is
        // garbage unless it is referenced, so it is used at the future time to keep it.
        s.registry_store()
            .gc
            .link_published(&repo, &kept, 14, now + 2 * 3600 * 1000, None)
            .await
            .unwrap();
        // Two hours on with an hour's grace: both contents are older than the cutoff.
        let run = |dry_run| GcOptions {
            now_ms: now + 2 * 3600 * 1000,
            grace_ms: 3600 * 1000,
            dry_run,
        };
        let f = s.registry_store().gc.collect(run(true)).await.unwrap();
        assert_eq!(
            (f.links_removed, f.blobs_removed),
            (0, 1),
            "{}: dry",
            b.name
        );
        assert_eq!(f.bytes_reclaimed, 16, "{}", b.name);
        assert!(
            s.blobs().blob_exists(&gone).await.unwrap(),
            "{}: a dry run deleted",
            b.name
        );
        let f = s.registry_store().gc.collect(run(false)).await.unwrap();
        assert_eq!((f.links_removed, f.blobs_removed), (0, 1), "{}", b.name);
        assert!(!s.blobs().blob_exists(&gone).await.unwrap(), "{}", b.name);
        assert!(s.blobs().blob_exists(&kept).await.unwrap(), "{}", b.name);
        assert_eq!(
            read_all(s.blobs(), &kept, 0, 14).await,
            b"linked content",
            "{}",
            b.name
        );
    }
}
