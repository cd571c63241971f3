//! The retention policy for untagged manifests through the real server, with an injected
//! clock: untagged manifests older than `retention_days` go, with a `delete` event each;
//! tagged ones, locked ones (`writeEnabled`/`deleteEnabled` false), children of an index,
//! subjects of a referrer and quarantined or failed ones stay; nothing happens with the policy
//! off.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::{Receiver, Server, client, push_image};
use serde_json::{Value, json};
use wharf_store::PoliciesPatch;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const WAIT: Duration = Duration::from_secs(15);

/// The real time moved forward by a settable offset.
#[derive(Default)]
struct Later(AtomicI64);

impl wharf_registry::Clock for Later {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.0.load(Ordering::SeqCst)
    }
}

async fn exists(c: &reqwest::Client, s: &Server, repo: &str, d: &str) -> bool {
    let r = c
        .head(s.url(&format!("/v2/{repo}/manifests/{d}")))
        .send()
        .await
        .unwrap();
    r.status() == 200
}

async fn untag(c: &reqwest::Client, s: &Server, repo: &str, tag: &str) {
    let r = c
        .delete(s.url(&format!("/acr/v1/{}/_tags/{tag}", repo.replace('/', "%2F"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

async fn lock(c: &reqwest::Client, s: &Server, repo: &str, d: &str, body: Value) {
    let r = c
        .patch(s.url(&format!(
            "/acr/v1/{}/_manifests/{d}",
            repo.replace('/', "%2F")
        )))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn untagged_manifests_past_retention_are_deleted_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Later::default());
    let cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        webhooks: wharf::config::Webhooks::from_hooks(&common::fast_hooks()),
        ..Default::default()
    };
    let s = Server::start_clock(cfg, clock.clone()).await;
    let rx = Receiver::start().await;
    let c = client();
    let r = c
        .put(s.url("/wharf/v1/webhooks/retained"))
        .json(&json!({"properties": {"serviceUri": rx.url("/del"), "actions": ["delete"], "scope": ""}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let repo = "ret/app";
    let (tagged, _) = push_image(&c, &s, repo, "keep", "1").await;
    let (gone, _) = push_image(&c, &s, repo, "t2", "2").await;
    untag(&c, &s, repo, "t2").await;
    let (write_locked, _) = push_image(&c, &s, repo, "t3", "3").await;
    untag(&c, &s, repo, "t3").await;
    lock(&c, &s, repo, &write_locked, json!({"writeEnabled": false})).await;
    let (delete_locked, _) = push_image(&c, &s, repo, "t4", "4").await;
    untag(&c, &s, repo, "t4").await;
    lock(
        &c,
        &s,
        repo,
        &delete_locked,
        json!({"deleteEnabled": false}),
    )
    .await;
    // Another untagged one.
    let (by_digest, _) = push_image(&c, &s, repo, "t6", "6").await;
    untag(&c, &s, repo, "t6").await;
    // An index (tagged) whose child is untagged: the child stays.
    let (child, child_body) = push_image(&c, &s, repo, "t5", "5").await;
    untag(&c, &s, repo, "t5").await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": child, "size": child_body.len()}],
    });
    let ib = serde_json::to_vec(&index).unwrap();
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/multi")))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(ib.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Policy off: nothing goes, however late it is.
    clock.0.store(100 * DAY_MS, Ordering::SeqCst);
    assert_eq!(s.run_retention().await, 0);

    s.store
        .policies()
        .update(PoliciesPatch {
            retention_enabled: Some(true),
            retention_days: Some(7),
            ..Default::default()
        })
        .await
        .unwrap();
    // Six days on: too early.
    clock.0.store(6 * DAY_MS, Ordering::SeqCst);
    assert_eq!(s.run_retention().await, 0);
    assert!(exists(&c, &s, repo, &gone).await);
    let before: i64 = s
        .store
        .deliveries()
        .delivery_counts()
        .await
        .unwrap()
        .values()
        .sum();

    // Eight days on: the two unlocked untagged manifests go, each with its delete event.
    clock.0.store(8 * DAY_MS, Ordering::SeqCst);
    assert_eq!(s.run_retention().await, 2);
    let after: i64 = s
        .store
        .deliveries()
        .delivery_counts()
        .await
        .unwrap()
        .values()
        .sum();
    assert_eq!(
        after - before,
        2,
        "one delete event each, queued with the delete"
    );
    assert!(!exists(&c, &s, repo, &gone).await);
    assert!(!exists(&c, &s, repo, &by_digest).await);
    for kept in [&tagged, &write_locked, &delete_locked, &child] {
        assert!(exists(&c, &s, repo, kept).await, "{kept} stays");
    }
    let got = rx.wait_for("/del", 2, WAIT).await;
    let mut digests: Vec<String> = got
        .iter()
        .map(|r| {
            assert_eq!(r.body["action"], "delete");
            assert_eq!(r.body["target"]["repository"], repo);
            r.body["target"]["digest"].as_str().unwrap().to_owned()
        })
        .collect();
    digests.sort();
    let mut want = vec![gone.clone(), by_digest.clone()];
    want.sort();
    assert_eq!(digests, want);

    // A second pass finds nothing more.
    assert_eq!(s.run_retention().await, 0);
}

async fn scan(c: &reqwest::Client, s: &Server, repo: &str, d: &str, state: &str) {
    lock(c, s, repo, d, json!({"quarantineState": state})).await;
}

/// What retention must leave alone besides locks: quarantined and failed manifests (their
/// push was never announced, so a `delete` for them would be wrong), the subject of a
/// referrer, and the child of an index, with the index pushed after the child went stale
/// (the delete's own transaction decides).
#[tokio::test]
async fn retention_spares_quarantined_referenced_and_index_children() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Later::default());
    let cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        webhooks: wharf::config::Webhooks::from_hooks(&common::fast_hooks()),
        ..Default::default()
    };
    let s = Server::start_clock(cfg, clock.clone()).await;
    let rx = Receiver::start().await;
    let c = client();
    let r = c
        .put(s.url("/wharf/v1/webhooks/retained"))
        .json(&json!({"properties": {"serviceUri": rx.url("/del"), "actions": ["delete"], "scope": ""}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let policies = |patch: PoliciesPatch| {
        let store = s.store.clone();
        async move { store.policies().update(patch).await.unwrap() }
    };
    let repo = "ret/q";

    // Subject of a referrer (both untagged; the referrer itself is attached, so it stays).
    let (subject, subject_body) = push_image(&c, &s, repo, "s", "s").await;
    untag(&c, &s, repo, "s").await;
    let empty = common::push_blob(&c, &s, repo, b"{}").await;
    let sig = serde_json::to_vec(&json!({"schemaVersion":2,
        "mediaType":"application/vnd.oci.image.manifest.v1+json",
        "artifactType":"application/vnd.example.signature",
        "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":empty,"size":2},
        "layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "digest":subject,"size":subject_body.len()}}))
    .unwrap();
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/{}", common::sha256(&sig))))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(sig)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // A child whose index comes later.
    let (child, child_body) = push_image(&c, &s, repo, "c", "c").await;
    untag(&c, &s, repo, "c").await;

    // Quarantined, failed, and passed (released: its push was announced, so it may go).
    policies(PoliciesPatch {
        quarantine_enabled: Some(true),
        ..Default::default()
    })
    .await;
    let (quarantined, _) = push_image(&c, &s, repo, "q", "q").await;
    untag(&c, &s, repo, "q").await;
    let (failed, _) = push_image(&c, &s, repo, "f", "f").await;
    untag(&c, &s, repo, "f").await;
    scan(&c, &s, repo, &failed, "Failed").await;
    let (passed, _) = push_image(&c, &s, repo, "p", "p").await;
    untag(&c, &s, repo, "p").await;
    scan(&c, &s, repo, &passed, "Passed").await;
    policies(PoliciesPatch {
        quarantine_enabled: Some(false),
        retention_enabled: Some(true),
        retention_days: Some(1),
    })
    .await;

    // All of them are stale now; then the index arrives.
    clock.0.store(3 * DAY_MS, Ordering::SeqCst);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": child, "size": child_body.len()}],
    }))
    .unwrap();
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/multi")))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let before: i64 = s
        .store
        .deliveries()
        .delivery_counts()
        .await
        .unwrap()
        .values()
        .sum();

    assert_eq!(s.run_retention().await, 1, "only the passed one goes");
    let after: i64 = s
        .store
        .deliveries()
        .delivery_counts()
        .await
        .unwrap()
        .values()
        .sum();
    assert_eq!(after - before, 1, "one delete event");
    let got = rx.wait_for("/del", 1, WAIT).await;
    assert_eq!(got[0].body["target"]["digest"], json!(passed));
    assert!(!exists(&c, &s, repo, &passed).await);
    for kept in [&subject, &child] {
        assert!(exists(&c, &s, repo, kept).await, "{kept} stays");
    }
    // Quarantined ones answer 405 to a pull; their attributes show they are still there.
    for kept in [&quarantined, &failed] {
        let r = c
            .get(s.url(&format!(
                "/acr/v1/ret%2Fq/_manifests/{}",
                kept.replace(':', "%3A")
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{kept} stays");
    }
    assert_eq!(s.run_retention().await, 0);
    assert_eq!(rx.received("/del").len(), 1);
}
