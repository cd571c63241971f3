//! Object storage that fails: the real `wharf` binary with its blobs on S3 (moto, started by
//! scripts/backends.sh) behind a loopback proxy that can be switched to answer every request
//! with S3's 503 SlowDown. While it does, pushes and pulls get 503 `UNAVAILABLE` with
//! `Retry-After`, never a 500 or a crash, and nothing is acknowledged that was not stored: the
//! upload's offset stays at the last acknowledged chunk, and the same upload completes once
//! the store is back. And a push whose content is already stored, which a garbage collection
//! removes between the push's finish and its link (the proxy deletes the object at that
//! moment), still succeeds, monolithic or through a session: the push's own bytes (in
//! memory, or staged) are published again.
//!
//! Runs when `WHARF_TEST_S3=1` (with the `AWS_*` variables of a running S3 service and the
//! bucket `WHARF_TEST_BUCKET`, default `wharf-test`); otherwise it says it did not run.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::sha256;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const READS_DOWN: u8 = 2;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    /// UP, DOWN (every request fails) or READS_DOWN (GETs fail, so a finish fails after its
    /// final chunk was stored).
    down: Arc<AtomicU8>,
    /// A blob to collect at its second HEAD (see [`Collect`]).
    collect: Arc<Mutex<Collect>>,
    /// Every request's method and path, in order.
    requests: Arc<Mutex<Vec<(String, String)>>>,
    client: reqwest::Client,
}

/// Plays a garbage collection that removes a blob's content at the worst moment: a finishing
/// upload's first HEAD of the content (the store's "is it already stored?") is answered as
/// it is; before the second (the linking transaction's "is it still there?") the object is
/// deleted, so that one finds it gone.
#[derive(Default)]
struct Collect {
    /// The digest's hex; none: no blob is watched.
    hex: Option<String>,
    /// The server's blob store, reached directly (not through the proxy).
    store: Option<Arc<wharf_store::blobs::BlobStore>>,
    heads: u32,
    collected: bool,
}

impl Collect {
    /// Whether this request is the watched blob's second HEAD.
    fn collect_now(&mut self, method: &axum::http::Method, path: &str) -> bool {
        let Some(hex) = &self.hex else { return false };
        if method != axum::http::Method::HEAD
            || !path.ends_with(&format!("/blobs/sha256/{}/{hex}", &hex[..2]))
        {
            return false;
        }
        self.heads += 1;
        if self.heads == 2 && !self.collected {
            self.collected = true;
            return true;
        }
        false
    }
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    p.requests
        .lock()
        .unwrap()
        .push((req.method().to_string(), req.uri().path().to_owned()));
    let collect = {
        let mut c = p.collect.lock().unwrap();
        let now = c.collect_now(req.method(), req.uri().path());
        now.then(|| (c.store.clone(), c.hex.clone()))
    };
    if let Some((Some(store), Some(hex))) = collect {
        let d = wharf_core::Digest::parse(&format!("sha256:{hex}")).unwrap();
        if let Err(e) = store.delete_blob(&d).await {
            eprintln!("the proxy could not delete {d}: {e}");
            p.collect.lock().unwrap().collected = false;
        }
    }
    let mode = p.down.load(Ordering::SeqCst);
    if mode == DOWN || (mode == READS_DOWN && req.method() == axum::http::Method::GET) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
             <Message>Please reduce your request rate.</Message></Error>",
        )
            .into_response();
    }
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut out = p
        .client
        .request(parts.method, format!("{}{path}", p.upstream))
        .body(body);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    match out.send().await {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            let body = r.bytes().await.unwrap_or_default();
            let mut resp = Response::new(axum::body::Body::from(body));
            *resp.status_mut() = status;
            for (k, v) in &headers {
                if k != "content-length" && k != "transfer-encoding" {
                    resp.headers_mut().insert(k, v.clone());
                }
            }
            resp
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn assert_unavailable(status: u16, headers: &reqwest::header::HeaderMap, body: &str, what: &str) {
    assert_eq!(status, 503, "{what}: {body}");
    assert!(body.contains("UNAVAILABLE"), "{what}: {body}");
    assert!(headers.contains_key("retry-after"), "{what}");
}

/// A real `wharf serve` with its blobs on the S3 service behind a [`Proxy`] on loopback;
/// none if the S3 service is not configured (`WHARF_TEST_S3`).
struct Behind {
    base: String,
    /// The server's blob store (`--blob-store`).
    location: wharf_store::blobs::BlobLocation,
    down: Arc<AtomicU8>,
    collect: Arc<Mutex<Collect>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// `cache_mib` is the server's `storage.blob_cache_mib`: 0 where a test is about what the
/// bucket does, which the node's copies would otherwise answer for.
async fn wharf_behind_proxy(test: &str, cache_mib: u64) -> Option<Behind> {
    if std::env::var("WHARF_TEST_S3").ok().as_deref() != Some("1") {
        eprintln!("{test}: not run (set WHARF_TEST_S3=1 and AWS_*; see scripts/backends.sh)");
        return None;
    }
    let upstream = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let bucket = std::env::var("WHARF_TEST_BUCKET").unwrap_or_else(|_| "wharf-test".into());
    let down = Arc::new(AtomicU8::new(UP));
    let collect = Arc::new(Mutex::new(Collect::default()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy {
        upstream: upstream.trim_end_matches('/').to_owned(),
        down: down.clone(),
        collect: collect.clone(),
        requests: requests.clone(),
        client: reqwest::Client::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        axum::serve(listener, app).await.unwrap();
    });

    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("faults-{}", uuid_like());
    let store = format!("s3://{bucket}/{prefix}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--blob-store", &store])
        .env("AWS_ENDPOINT_URL", format!("http://{proxy_addr}"))
        .env("WHARF_STORAGE_BLOB_CACHE_MIB", cache_mib.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("wharf listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            addr = v["fields"]["addr"].as_str().map(str::to_owned);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let proc = Proc(child);
    let base = format!(
        "http://{}",
        addr.unwrap_or_else(|| panic!("wharf did not start: {}", seen.join("\n")))
    );
    Some(Behind {
        base,
        location: wharf_store::blobs::BlobLocation::S3 { bucket, prefix },
        down,
        collect,
        requests,
        _proc: proc,
        _dir: dir,
    })
}

// Multi-threaded: the proxy must answer while this thread reads the server's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_object_store_is_a_503_and_acknowledges_nothing_it_did_not_store() {
    let Some(w) = wharf_behind_proxy("object_faults", 0).await else {
        return;
    };
    let (base, down) = (w.base.clone(), w.down.clone());
    let c = common::client();
    let url = |p: &str| format!("{base}{p}");

    // Healthy: a whole blob, and the first chunk of a chunked upload.
    let first = b"stored before the outage".to_vec();
    let fd = sha256(&first);
    let r = c
        .post(url(&format!("/v2/app/blobs/uploads/?digest={fd}")))
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c.post(url("/v2/app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let (one, two) = (vec![1u8; 4096], vec![2u8; 5000]);
    let r = c
        .patch(url(&loc))
        .header("content-range", "0-4095")
        .body(one.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();

    // The store fails: every blob operation is a retryable 503, never a 500.
    down.store(DOWN, Ordering::SeqCst);
    let r = c
        .patch(url(&loc))
        .header("content-range", "4096-9095")
        .body(two.clone())
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(s, &h, &r.text().await.unwrap(), "PATCH");
    let r = c
        .get(url(&format!("/v2/app/blobs/{fd}")))
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(s, &h, &r.text().await.unwrap(), "GET blob");
    let other = b"pushed during the outage".to_vec();
    let od = sha256(&other);
    let r = c
        .post(url(&format!("/v2/app/blobs/uploads/?digest={od}")))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(s, &h, &r.text().await.unwrap(), "monolithic push");
    let whole = [one.clone(), two.clone()].concat();
    let wd = sha256(&whole);
    let r = c
        .put(url(&format!("{loc}?digest={wd}")))
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(s, &h, &r.text().await.unwrap(), "finishing PUT");

    // Reads fail: a finishing PUT whose final chunk is stored but whose composition fails
    // is a 503 too, and drops that chunk again, so the same PUT can be retried.
    down.store(READS_DOWN, Ordering::SeqCst);
    let r = c
        .put(url(&format!("{loc}?digest={wd}")))
        .header("content-range", "4096-9095")
        .body(two.clone())
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(
        s,
        &h,
        &r.text().await.unwrap(),
        "finishing PUT with its last chunk",
    );
    // A garbage collection that cannot list the content is a 503 to be asked for again, not
    // a server error.
    let r = c.post(url("/wharf/v1/gc")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("ServiceUnavailable"));

    // Back: the session's offset is the last acknowledged chunk, and the same PUT completes.
    down.store(UP, Ordering::SeqCst);
    let r = c.get(url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-4095");
    let r = c
        .put(url(&format!("{loc}?digest={wd}")))
        .header("content-range", "4096-9095")
        .body(two.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for (d, bytes) in [(&wd, &whole), (&fd, &first)] {
        let r = c
            .get(url(&format!("/v2/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..]);
    }
    let r = c
        .head(url(&format!("/v2/app/blobs/{od}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a push answered 503 stored nothing");
}

// Multi-threaded: the proxy must answer while this thread reads the server's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_collected_between_an_uploads_finish_and_its_link_is_published_again() {
    let Some(w) = wharf_behind_proxy("object_faults (collected before linked)", 0).await else {
        return;
    };
    let c = common::client();
    let url = |p: &str| format!("{}{p}", w.base);
    // Content stored once; then (its repository's link gone past the grace, say) a push to
    // another repository finds it stored, and a collection removes it just before the link.
    // Twice: a monolithic push, whose bytes are in memory, and a session whose PATCH staged
    // them.
    let scratch = tempfile::tempdir().unwrap();
    let store = Arc::new(
        wharf_store::blobs::BlobStore::open(scratch.path(), &w.location)
            .await
            .unwrap(),
    );
    for staged in [false, true] {
        let bytes = format!("content a collection removes while it is pushed again ({staged})")
            .into_bytes();
        let d = sha256(&bytes);
        for (repo, collect) in [("first", false), ("second", true)] {
            if collect {
                let mut c = w.collect.lock().unwrap();
                *c = Collect {
                    hex: Some(d["sha256:".len()..].to_owned()),
                    store: Some(store.clone()),
                    ..Collect::default()
                };
            }
            let r = if collect && staged {
                let r = c
                    .post(url(&format!("/v2/{repo}/blobs/uploads/")))
                    .send()
                    .await
                    .unwrap();
                let loc = r.headers()["location"].to_str().unwrap().to_owned();
                let r = c.patch(url(&loc)).body(bytes.clone()).send().await.unwrap();
                assert_eq!(r.status(), 202);
                let loc = r.headers()["location"].to_str().unwrap().to_owned();
                let sep = if loc.contains('?') { '&' } else { '?' };
                c.put(url(&format!("{loc}{sep}digest={d}")))
                    .send()
                    .await
                    .unwrap()
            } else {
                c.post(url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
                    .body(bytes.clone())
                    .send()
                    .await
                    .unwrap()
            };
            let status = r.status();
            assert_eq!(
                status,
                201,
                "push to {repo} (staged: {staged}): {}",
                r.text().await.unwrap()
            );
        }
        assert!(
            w.collect.lock().unwrap().collected,
            "the proxy never removed the content (staged: {staged})"
        );
        // The push's own bytes were published again: the blob reads back in full.
        let r = c
            .get(url(&format!("/v2/second/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "staged: {staged}");
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &bytes[..],
            "staged: {staged}"
        );
    }
}

/// On object storage a blob whose bytes all arrive in the request that finishes its upload
/// (a monolithic POST, or a session's one PUT) is written once, to its key: no staged chunk
/// object and no copy. Bytes a PATCH staged are staged, and go into place at the finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_whose_bytes_come_in_the_finishing_request_is_written_once() {
    let Some(w) = wharf_behind_proxy("object_faults (written once)", 0).await else {
        return;
    };
    let c = common::client();
    let url = |p: &str| format!("{}{p}", w.base);
    for way in ["monolithic", "one PUT", "PATCH then PUT"] {
        let bytes = format!("written once? {way}").into_bytes();
        let d = sha256(&bytes);
        w.requests.lock().unwrap().clear();
        let r = if way == "monolithic" {
            c.post(url(&format!("/v2/once/blobs/uploads/?digest={d}")))
                .body(bytes.clone())
                .send()
                .await
                .unwrap()
        } else {
            let r = c.post(url("/v2/once/blobs/uploads/")).send().await.unwrap();
            let mut loc = r.headers()["location"].to_str().unwrap().to_owned();
            let mut last = bytes.clone();
            if way == "PATCH then PUT" {
                let r = c.patch(url(&loc)).body(bytes.clone()).send().await.unwrap();
                assert_eq!(r.status(), 202);
                loc = r.headers()["location"].to_str().unwrap().to_owned();
                last.clear();
            }
            let sep = if loc.contains('?') { '&' } else { '?' };
            c.put(url(&format!("{loc}{sep}digest={d}")))
                .body(last)
                .send()
                .await
                .unwrap()
        };
        assert_eq!(r.status(), 201, "{way}");
        let seen = w.requests.lock().unwrap().clone();
        let hex = &d["sha256:".len()..];
        let puts_to_key = seen
            .iter()
            .filter(|(m, p)| m == "PUT" && p.ends_with(hex))
            .count();
        let staged = seen
            .iter()
            .filter(|(m, p)| m == "PUT" && p.contains("/uploads/") && !p.ends_with("/session"))
            .count();
        if way == "PATCH then PUT" {
            // Staged, then copied (or composed) into place.
            assert_eq!(staged, 1, "{way}: {seen:?}");
        } else {
            assert_eq!((staged, puts_to_key), (0, 1), "{way}: {seen:?}");
        }
        let r = c
            .get(url(&format!("/v2/once/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{way}");
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..], "{way}");
    }
}

/// With the node's blob cache on (`storage.blob_cache_mib`), a blob pushed whole through the
/// node, or pulled once through it, is read from the node's copy: pulls of it never reach the
/// bucket, and are answered (whole or in ranges, with the right bytes) while the bucket is
/// down. A blob the node never held whole still needs the bucket (a 503 while it is down),
/// and a copy never lets a repository read a blob it does not link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_of_blobs_the_node_held_whole_are_read_from_its_copy() {
    let Some(w) = wharf_behind_proxy("object_faults (node's copies)", 64).await else {
        return;
    };
    let c = common::client();
    let url = |p: &str| format!("{}{p}", w.base);
    let blob = |seed: u8| -> Vec<u8> { (0..300_000u32).map(|i| (i % 251) as u8 ^ seed).collect() };
    // Pushed whole (monolithic).
    let whole = blob(1);
    let wd = sha256(&whole);
    let r = c
        .post(url(&format!("/v2/cached/blobs/uploads/?digest={wd}")))
        .body(whole.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Pushed in chunks: no node ever held all of it, so it is not kept at the push.
    let chunked = |bytes: Vec<u8>| {
        let c = c.clone();
        async move {
            let d = sha256(&bytes);
            let r = c
                .post(url("/v2/cached/blobs/uploads/"))
                .send()
                .await
                .unwrap();
            let loc = r.headers()["location"].to_str().unwrap().to_owned();
            let r = c
                .patch(url(&loc))
                .header("content-range", "0-149999")
                .body(bytes[..150_000].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let loc = r.headers()["location"].to_str().unwrap().to_owned();
            let sep = if loc.contains('?') { '&' } else { '?' };
            let r = c
                .put(url(&format!("{loc}{sep}digest={d}")))
                .header("content-range", "150000-299999")
                .body(bytes[150_000..].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            d
        }
    };
    let pulled = blob(2);
    let pd = chunked(pulled.clone()).await;
    let never = blob(3);
    let nd = chunked(never.clone()).await;
    let bucket_gets = |d: &str| {
        let hex = &d["sha256:".len()..];
        w.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with(hex))
            .count()
    };
    let get = |d: String| {
        let c = c.clone();
        async move {
            let r = c
                .get(url(&format!("/v2/cached/blobs/{d}")))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.bytes().await.unwrap().to_vec())
        }
    };

    // The whole push is read from the node's copy: the bucket sees no GET of it.
    let (s, body) = get(wd.clone()).await;
    assert_eq!((s, body == whole), (200, true));
    assert_eq!(bucket_gets(&wd), 0, "{:?}", w.requests.lock().unwrap());
    // The chunked one is read from the bucket once, and kept as it goes by.
    let (s, body) = get(pd.clone()).await;
    assert_eq!((s, body == pulled), (200, true));
    assert_eq!(bucket_gets(&pd), 1);
    // The copy is written after the response: wait for the second pull to be read from it.
    let mut from_copy = false;
    for _ in 0..500 {
        let (s, body) = get(pd.clone()).await;
        assert_eq!((s, body == pulled), (200, true));
        if bucket_gets(&pd) == 1 {
            from_copy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        from_copy,
        "a pulled blob was never read from the node's copy"
    );

    // The bucket is down: what the node holds is still served, whole and in ranges.
    w.down.store(DOWN, Ordering::SeqCst);
    for (d, bytes) in [(&wd, &whole), (&pd, &pulled)] {
        let (s, body) = get(d.clone()).await;
        assert_eq!((s, body == *bytes), (200, true), "{d}");
        let r = c
            .get(url(&format!("/v2/cached/blobs/{d}")))
            .header("range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{d}");
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[1000..2000], "{d}");
    }
    // What it never held whole needs the bucket.
    let r = c
        .get(url(&format!("/v2/cached/blobs/{nd}")))
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(s, &h, &r.text().await.unwrap(), "GET of a blob not held");
    // A copy is no way around the repository's links.
    let (s, _) = {
        let r = c
            .get(url(&format!("/v2/elsewhere/blobs/{wd}")))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    };
    assert_eq!(s, 404, "a repository that does not link the blob");
    w.down.store(UP, Ordering::SeqCst);
    let (s, body) = get(nd.clone()).await;
    assert_eq!((s, body == never), (200, true));
}

fn uuid_like() -> String {
    let d = sha256(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes());
    d[7..23].to_owned()
}
