//! Online garbage collection through the real server (`POST /wharf/v1/gc`, what `wharf gc`
//! calls), with an injected clock to move past the grace period: a dry run removes nothing
//! and reports what a run removes; blobs only a deleted manifest (or repository) referenced
//! are reclaimed while shared ones stay; an unreferenced upload survives the grace and goes
//! after it; a HEAD refreshes it; pushes running while GC runs in a loop never lose a blob of
//! an acknowledged manifest; abandoned upload sessions go; the server runs on its schedule;
//! only the registry's owners may ask for a run, and `wharf gc` prints its figures.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::{Server, client, push_blob, run_cli, sha256};
use serde_json::{Value, json};

const HOUR_MS: i64 = 3600 * 1000;
const GRACE_SECS: u64 = 24 * 3600;
const GRACE_MS: i64 = GRACE_SECS as i64 * 1000;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The real time moved forward by a settable offset.
#[derive(Default)]
struct Later(AtomicI64);

impl Later {
    fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl wharf_registry::Clock for Later {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.0.load(Ordering::SeqCst)
    }
}

/// A server with the injected clock, no scheduled runs and the default grace.
async fn server(dir: &std::path::Path, clock: Arc<Later>) -> Server {
    let mut cfg = wharf::config::Config {
        data_dir: dir.to_owned(),
        webhooks: wharf::config::Webhooks::from_hooks(&common::fast_hooks()),
        ..Default::default()
    };
    cfg.gc.interval_secs = 0;
    cfg.gc.grace_secs = GRACE_SECS;
    Server::start_clock(cfg, clock).await
}

async fn gc(c: &reqwest::Client, s: &Server, dry_run: bool) -> Value {
    let r = c
        .post(s.url(&format!("/wharf/v1/gc?dryRun={dry_run}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["dryRun"], json!(dry_run), "{v}");
    v
}

/// The figures of a run, without its duration.
fn figures(v: &Value) -> (u64, u64, u64) {
    (
        v["linksRemoved"].as_u64().unwrap(),
        v["blobsRemoved"].as_u64().unwrap(),
        v["bytesReclaimed"].as_u64().unwrap(),
    )
}

/// Where the blob's content lives (to see it without reading it through the registry, which
/// would count as a use).
fn blob_file(s: &Server, digest: &str) -> std::path::PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    s.data_dir.join("blobs").join(alg).join(&hex[..2]).join(hex)
}

async fn blob_status(c: &reqwest::Client, s: &Server, repo: &str, digest: &str) -> u16 {
    c.get(s.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Pushes an image manifest referencing `config` and `layers` (already pushed) under `tag`.
/// Returns its digest.
async fn push_manifest(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> reqwest::Response {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(l), "size": l.len()})).collect::<Vec<_>>(),
    });
    c.put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(serde_json::to_vec(&m).unwrap())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_dry_run_removes_nothing_and_a_run_reclaims_what_only_a_deleted_manifest_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Later::default());
    let s = server(dir.path(), clock.clone()).await;
    let c = client();
    let repo = "gc/app";
    let (shared, only_a, cfg_a, cfg_b) = (
        b"shared layer".as_slice(),
        b"layer only image a has".as_slice(),
        b"{\"a\":1}".as_slice(),
        b"{\"b\":2}".as_slice(),
    );
    for b in [shared, only_a, cfg_a, cfg_b] {
        push_blob(&c, &s, repo, b).await;
    }
    let a = push_manifest(&c, &s, repo, "a", cfg_a, &[shared, only_a]).await;
    assert_eq!(a.status(), 201);
    let a_digest = a.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        push_manifest(&c, &s, repo, "b", cfg_b, &[shared])
            .await
            .status(),
        201
    );
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/{a_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Within the grace nothing goes, referenced or not.
    assert_eq!(figures(&gc(&c, &s, false).await), (0, 0, 0));

    clock.set(GRACE_MS + HOUR_MS);
    let want = (2, 2, (only_a.len() + cfg_a.len()) as u64);
    let dry = gc(&c, &s, true).await;
    assert_eq!(figures(&dry), want, "{dry}");
    assert_eq!(dry["uploadsRemoved"], 0);
    assert!(dry["durationMs"].is_u64());
    for b in [shared, only_a, cfg_a, cfg_b] {
        assert!(
            blob_file(&s, &sha256(b)).exists(),
            "a dry run deleted content"
        );
    }
    // A second dry run sees the same: nothing was removed.
    assert_eq!(figures(&gc(&c, &s, true).await), want);

    let run = gc(&c, &s, false).await;
    assert_eq!(figures(&run), want, "{run}");
    for b in [only_a, cfg_a] {
        assert_eq!(blob_status(&c, &s, repo, &sha256(b)).await, 404);
        assert!(!blob_file(&s, &sha256(b)).exists());
    }
    for b in [shared, cfg_b] {
        assert_eq!(blob_status(&c, &s, repo, &sha256(b)).await, 200);
    }
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/b")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Nothing is left to collect.
    assert_eq!(figures(&gc(&c, &s, false).await), (0, 0, 0));
    s.stop().await;
}

#[tokio::test]
async fn content_of_a_deleted_repository_goes_while_content_another_repository_links_stays() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Later::default());
    let s = server(dir.path(), clock.clone()).await;
    let c = client();
    let (cfg, own, shared) = (
        b"{\"r\":1}".as_slice(),
        b"own layer".as_slice(),
        b"layer in both".as_slice(),
    );
    for b in [cfg, own, shared] {
        push_blob(&c, &s, "gc/gone", b).await;
    }
    for b in [cfg, shared] {
        push_blob(&c, &s, "gc/kept", b).await;
    }
    assert_eq!(
        push_manifest(&c, &s, "gc/gone", "v1", cfg, &[own, shared])
            .await
            .status(),
        201
    );
    assert_eq!(
        push_manifest(&c, &s, "gc/kept", "v1", cfg, &[shared])
            .await
            .status(),
        201
    );
    let r = c.delete(s.url("/acr/v1/gc%2Fgone")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    clock.set(GRACE_MS + HOUR_MS);
    // The repository's links went with it; only its own layer's content is no one's.
    let run = gc(&c, &s, false).await;
    assert_eq!(figures(&run), (0, 1, own.len() as u64), "{run}");
    assert!(!blob_file(&s, &sha256(own)).exists());
    for b in [cfg, shared] {
        assert_eq!(blob_status(&c, &s, "gc/kept", &sha256(b)).await, 200);
    }
    s.stop().await;
}

#[tokio::test]
async fn an_unreferenced_upload_survives_the_grace_and_goes_after_it_unless_read_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Later::default());
    let s = server(dir.path(), clock.clone()).await;
    let c = client();
    let repo = "gc/pending";
    let idle = push_blob(&c, &s, repo, b"uploaded, never referenced").await;
    let headed = push_blob(&c, &s, repo, b"uploaded, HEADed later").await;

    // Most of the grace later: both stay.
    clock.set(GRACE_MS - HOUR_MS);
    assert_eq!(figures(&gc(&c, &s, false).await), (0, 0, 0));
    // A push about to reference it HEADs it: the link's grace starts again.
    let r = c
        .head(s.url(&format!("/v2/{repo}/blobs/{headed}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Past the grace of the upload, within that of the HEAD.
    clock.set(GRACE_MS + HOUR_MS);
    let run = gc(&c, &s, false).await;
    assert_eq!(
        figures(&run),
        (1, 1, b"uploaded, never referenced".len() as u64),
        "{run}"
    );
    assert_eq!(blob_status(&c, &s, repo, &idle).await, 404);
    assert!(!blob_file(&s, &idle).exists());
    assert!(blob_file(&s, &headed).exists());
    // The HEADed blob can still be referenced.
    assert_eq!(
        push_manifest(
            &c,
            &s,
            repo,
            "late",
            b"uploaded, HEADed later",
            &[b"uploaded, HEADed later".as_slice()]
        )
        .await
        .status(),
        201
    );
    s.stop().await;
}

#[tokio::test]
async fn a_read_of_a_collected_link_answers_404_even_when_it_was_cached() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Later::default());
    let s = server(dir.path(), clock.clone()).await;
    let c = client();
    let d = push_blob(&c, &s, "gc/cached", b"read, then collected").await;
    // Read (and so cached) now.
    assert_eq!(blob_status(&c, &s, "gc/cached", &d).await, 200);
    clock.set(GRACE_MS + HOUR_MS);
    assert_eq!(figures(&gc(&c, &s, false).await).0, 1);
    let r = c
        .head(s.url(&format!("/v2/gc/cached/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(blob_status(&c, &s, "gc/cached", &d).await, 404);
    // A manifest naming it is refused, not acknowledged without its blob.
    let r = push_manifest(
        &c,
        &s,
        "gc/cached",
        "t",
        b"read, then collected",
        &[b"read, then collected".as_slice()],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    // Uploading it again brings it back.
    push_blob(&c, &s, "gc/cached", b"read, then collected").await;
    assert_eq!(blob_status(&c, &s, "gc/cached", &d).await, 200);
    s.stop().await;
}

/// Pushes (with uploads, mounts, HEADs and pauses between blobs and manifest) race garbage
/// collection running in a loop with the shortest grace; every acknowledged manifest's blobs
/// stay retrievable, byte for byte, while unreferenced uploads are collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_racing_a_collection_loop_never_lose_an_acknowledged_blob() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.gc.interval_secs = 0;
    cfg.gc.grace_secs = 1;
    let s = Arc::new(Server::start_config(cfg).await);
    let c = client();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let collector = {
        let (s, c, done) = (s.clone(), c.clone(), done.clone());
        tokio::spawn(async move {
            let mut runs = 0u64;
            let mut blobs = 0u64;
            while !done.load(Ordering::SeqCst) {
                let v = gc(&c, &s, false).await;
                blobs += v["blobsRemoved"].as_u64().unwrap();
                runs += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (runs, blobs)
        })
    };

    let mut pushers = Vec::new();
    for p in 0..3 {
        let (s, c) = (s.clone(), c.clone());
        pushers.push(tokio::spawn(async move {
            let mut acked: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
            let mut refused = 0;
            // Shared by this pusher's images: re-uploaded, mounted and HEADed over and over.
            let base = format!("base layer of pusher {p}").into_bytes();
            for i in 0..30 {
                let repo = format!("race/p{p}/r{}", i % 3);
                let config = format!("{{\"pusher\":{p},\"image\":{i}}}").into_bytes();
                let layer = format!("layer {i} of pusher {p}").into_bytes();
                let junk = format!("junk {i} of pusher {p}").into_bytes();
                for attempt in 0.. {
                    assert!(attempt < 50, "pusher {p} image {i}: too many retries");
                    let mut ok = true;
                    for b in [&config, &layer, &junk] {
                        ok &= try_push_blob(&c, &s, &repo, b).await;
                    }
                    // The base layer: mounted from another repository of this pusher when
                    // it is there, uploaded otherwise.
                    let from = format!("race/p{p}/r{}", (i + 1) % 3);
                    let r = c
                        .post(s.url(&format!(
                            "/v2/{repo}/blobs/uploads/?mount={}&from={from}",
                            sha256(&base)
                        )))
                        .send()
                        .await
                        .unwrap();
                    if r.status() != 201 {
                        ok &= try_push_blob(&c, &s, &repo, &base).await;
                    }
                    if i % 4 == 0 && attempt == 0 {
                        // A slow client: longer than the grace (1 s) between upload and
                        // manifest, but it HEADs its blobs half-way, as docker checks what
                        // the registry has: the HEAD keeps them.
                        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
                        for b in [&config, &layer, &base] {
                            let r = c
                                .head(s.url(&format!("/v2/{repo}/blobs/{}", sha256(b))))
                                .send()
                                .await
                                .unwrap();
                            ok &= r.status() == 200;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
                    }
                    if !ok {
                        // A blob went before it was referenced: push it again, as a client
                        // retries.
                        refused += 1;
                        continue;
                    }
                    let r =
                        push_manifest(&c, &s, &repo, &format!("v{i}"), &config, &[&base, &layer])
                            .await;
                    match r.status().as_u16() {
                        201 => {
                            acked.push((repo.clone(), vec![config, layer, base.clone()]));
                            break;
                        }
                        400 => refused += 1,
                        st => panic!("manifest push answered {st}"),
                    }
                }
            }
            (acked, refused)
        }));
    }
    let (mut acked, mut retries) = (Vec::new(), 0);
    for p in pushers {
        let (a, refused) = p.await.unwrap();
        acked.extend(a);
        retries += refused;
    }
    done.store(true, Ordering::SeqCst);
    let (runs, collected) = collector.await.unwrap();
    assert!(runs > 0);
    eprintln!("{runs} collections removed {collected} blobs meanwhile; {retries} pushes retried");
    assert_eq!(acked.len(), 90);
    // Once more past the grace: the junk goes, every acknowledged image's blobs stay.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    gc(&c, &s, false).await;
    for (repo, blobs) in &acked {
        for b in blobs {
            let r = c
                .get(s.url(&format!("/v2/{repo}/blobs/{}", sha256(b))))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{repo} lost {}", sha256(b));
            assert_eq!(r.bytes().await.unwrap().as_ref(), b.as_slice());
        }
    }
    for p in 0..3 {
        for i in 0..30 {
            let junk = format!("junk {i} of pusher {p}").into_bytes();
            assert!(!blob_file(&s, &sha256(&junk)).exists());
        }
    }
    match Arc::try_unwrap(s) {
        Ok(s) => {
            s.stop().await;
        }
        Err(_) => panic!("the server is still shared"),
    }
}

/// A blob push that may be refused: a collection racing the finish answers 503 (retry),
/// never 201 for content that is gone.
async fn try_push_blob(c: &reqwest::Client, s: &Server, repo: &str, data: &[u8]) -> bool {
    let r = c
        .post(s.url(&format!(
            "/v2/{repo}/blobs/uploads/?digest={}",
            sha256(data)
        )))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        201 => true,
        503 => false,
        st => panic!("blob push answered {st}"),
    }
}

const MGMT: &str = "wharfm_test-management-token-0123456789abcdefghijkl";

#[tokio::test]
async fn only_the_registry_owners_may_collect_and_wharf_gc_prints_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.auth.enabled = true;
    cfg.auth.management_token = MGMT.into();
    cfg.gc.interval_secs = 0;
    let s = Server::start_config(cfg).await;
    let plain = reqwest::Client::new();
    let r = plain.post(s.url("/wharf/v1/gc")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = plain
        .post(s.url("/wharf/v1/gc?dryRun=true"))
        .bearer_auth(MGMT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = plain
        .get(s.url("/wharf/v1/gc"))
        .bearer_auth(MGMT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = plain
        .post(s.url("/wharf/v1/gc?dryRun=maybe"))
        .bearer_auth(MGMT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let env = [("WHARF_MANAGEMENT_TOKEN", MGMT)];
    let (code, out, err) = run_cli(&s.base, &env, &["gc", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dryRun"], true);
    assert_eq!(v["linksRemoved"], 0);
    let (code, out, err) = run_cli(&s.base, &env, &["gc", "-o", "table"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("BYTES RECLAIMED"), "{out}");
    assert!(out.contains("false"), "{out}");
    let (code, out, _) = run_cli(&s.base, &env, &["gc", "-o", "tsv"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim().split('\t').count(), 6, "{out}");
    // Without credentials: refused, and told how to authenticate.
    let (code, _, err) = run_cli(&s.base, &[], &["gc"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("ERROR"), "{err}");
    s.stop().await;
}

#[test]
fn a_bad_gc_setting_is_refused_naming_its_key() {
    for (var, value, key) in [
        ("WHARF_GC_GRACE_SECS", "0", "gc.grace_secs"),
        (
            "WHARF_GC_INTERVAL_SECS",
            "99999999999999",
            "gc.interval_secs",
        ),
    ] {
        let cfg = wharf::config::Config::load_layered(None, [(var.to_owned(), value.to_owned())])
            .unwrap();
        let err = format!("{:#}", cfg.validate().unwrap_err());
        assert!(err.contains(key) && err.contains(var), "{err}");
    }
    let cfg = wharf::config::Config::load_layered(
        None,
        [("WHARF_GC_INTERVAL_SECS".to_owned(), "0".to_owned())],
    )
    .unwrap();
    cfg.validate().unwrap();
}

#[tokio::test]
async fn a_run_removes_abandoned_upload_sessions_and_a_dry_run_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.gc.interval_secs = 0;
    cfg.limits.upload_expiry_secs = 1;
    let s = Server::start_config(cfg).await;
    let c = client();
    let r = c
        .post(s.url("/v2/gc/uploads/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    // Abandoned for longer than the expiry.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(gc(&c, &s, true).await["uploadsRemoved"], 1);
    let r = c.get(s.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 204, "a dry run removed the session");
    assert_eq!(gc(&c, &s, false).await["uploadsRemoved"], 1);
    let r = c.get(s.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn the_server_collects_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.gc.interval_secs = 1;
    cfg.gc.grace_secs = 1;
    let s = Server::start_config(cfg).await;
    let c = client();
    let d = push_blob(&c, &s, "gc/scheduled", b"collected on schedule").await;
    // Bounded wait for a scheduled run past the grace (no request asks for one).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while blob_file(&s, &d).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled run collected the blob"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(blob_status(&c, &s, "gc/scheduled", &d).await, 404);
    s.stop().await;
}

#[tokio::test]
async fn a_pushed_non_distributable_layer_of_a_tagged_manifest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Later::default());
    let s = server(dir.path(), clock.clone()).await;
    let c = client();
    let repo = "win/app";
    let config = b"{\"os\":\"windows\"}".to_vec();
    let layer = b"foreign base layer bytes".to_vec();
    push_blob(&c, &s, repo, &config).await;
    push_blob(&c, &s, repo, &layer).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                    "digest": sha256(&layer), "size": layer.len()}],
    });
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/v1")))
        .header("content-type", OCI_MANIFEST)
        .body(serde_json::to_vec(&m).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    clock.set(2 * GRACE_MS);
    let (links, blobs, _) = figures(&gc(&c, &s, false).await);
    assert_eq!(
        (links, blobs),
        (0, 0),
        "nothing of a tagged image is garbage"
    );
    assert_eq!(blob_status(&c, &s, repo, &sha256(&layer)).await, 200);
    assert_eq!(blob_status(&c, &s, repo, &sha256(&config)).await, 200);
}

#[tokio::test]
async fn upload_bytes_left_without_a_session_go_once_idle_past_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.gc.interval_secs = 0;
    cfg.limits.upload_expiry_secs = 3600;
    let s = Server::start_config(cfg).await;
    let c = client();
    // The server's own expiry pass runs once at start (then every 10 minutes): let it pass
    // first, so that the runs below are the ones that meet the bytes.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // What a removal that failed after its row was deleted leaves: bytes, no session. One
    // idle for two hours, one written just now (it must stay: it may be a session whose row
    // a reader has not seen yet).
    let uploads = s.data_dir.join("uploads");
    let old = uploads.join("0123456789abcdef0123456789abcdef");
    let new = uploads.join("fedcba9876543210fedcba9876543210");
    std::fs::write(&old, b"left behind").unwrap();
    std::fs::write(&new, b"just written").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    assert_eq!(gc(&c, &s, true).await["uploadsRemoved"], 1);
    assert!(old.exists(), "a dry run removed upload bytes");
    assert_eq!(gc(&c, &s, false).await["uploadsRemoved"], 1);
    assert!(
        !old.exists(),
        "bytes without a session, idle past the expiry, stayed"
    );
    assert!(new.exists(), "fresh bytes without a session were removed");
    s.stop().await;
}
