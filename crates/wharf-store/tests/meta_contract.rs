//! The metadata contract: one set of tests, written only against the handles of
//! `wharf_store::handles` (the traits and the bundles the registry, the webhook service and
//! access control hold), that every metadata backend must pass.
//!
//! SQLite always runs. PostgreSQL runs when `WHARF_TEST_POSTGRES=1`, on a fresh database per
//! test made on the server `WHARF_TEST_POSTGRES_URL` names (`scripts/services.sh` starts one
//! and `scripts/backends.sh` runs this suite on it); a run that asks for it and cannot reach
//! it fails rather than pass without it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use wharf_core::{
    Algorithm, Digest, PayloadFormat, Reference, RepoName, Tag, WebhookAction, WebhookStatus,
};
use wharf_store::blobs::{ByteStream, Finished};
use wharf_store::hooks::{AttemptRecord, Outcome, Room, Signing, WebhookRecord};
use wharf_store::identities::{ScopeMapRow, TokenRow};
use wharf_store::{
    EventSubscribers, HookStore, IdentityStore, NewManifest, OutboxEvent, RegistryStore, StoreError,
};

/// What one backend hands its consumers, plus whatever keeps it alive.
struct Handles {
    name: &'static str,
    registry: RegistryStore,
    hooks: HookStore,
    identities: Arc<dyn IdentityStore>,
    _keep: Box<dyn std::any::Any + Send>,
}

async fn sqlite() -> Handles {
    let dir = tempfile::tempdir().unwrap();
    let store = wharf_store::Store::open(dir.path(), &Default::default())
        .await
        .unwrap_or_else(|e| panic!("sqlite: opening the store: {e}"));
    Handles {
        name: "sqlite",
        registry: store.registry_store(),
        hooks: store.hook_store(),
        identities: store.identity_store(),
        _keep: Box::new((store, dir)),
    }
}

/// A new, empty database on the test server; returns its URL.
async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin = std::env::var("WHARF_TEST_POSTGRES_URL")
        .expect("WHARF_TEST_POSTGRES=1 needs WHARF_TEST_POSTGRES_URL (scripts/services.sh)");
    let name = format!("wharf_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

async fn postgres() -> Handles {
    let dir = tempfile::tempdir().unwrap();
    let opts = wharf_store::StoreOptions {
        database: Some(fresh_postgres_database().await),
        database_max_connections: 8,
        secret_key: Some(base64_key()),
        ..Default::default()
    };
    let store = wharf_store::Store::open(dir.path(), &opts)
        .await
        .unwrap_or_else(|e| panic!("postgres: opening the store: {e}"));
    Handles {
        name: "postgres",
        registry: store.registry_store(),
        hooks: store.hook_store(),
        identities: store.identity_store(),
        _keep: Box::new((store, dir)),
    }
}

/// A fixed test master key (32 bytes, base64).
fn base64_key() -> String {
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()
}

/// The backends this run tests, each fresh.
async fn backends(test: &str) -> Vec<Handles> {
    let mut out = vec![sqlite().await];
    if std::env::var("WHARF_TEST_POSTGRES").is_ok_and(|v| v == "1") {
        out.push(postgres().await);
    }
    let names: Vec<&str> = out.iter().map(|b| b.name).collect();
    eprintln!("{test}: running on {}", names.join(", "));
    out
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).unwrap()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Publishes `content` through the blob store and links it into `repo`, as a finished upload
/// does. Returns its digest.
async fn push_blob(h: &Handles, repo: &RepoName, content: &[u8]) -> Digest {
    let digest = Digest::of(Algorithm::Sha256, content);
    // 32 hex digits, as the registry makes them: object stores name no other session.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let blobs = &h.registry.blobs;
    blobs.create_upload(&id).await.unwrap();
    let body: ByteStream = Box::pin(futures_util::stream::iter(vec![Ok(
        Bytes::copy_from_slice(content),
    )]));
    if blobs.append_upload(&id, 0, body, None).await.is_err() {
        panic!("{}: appending to an upload failed", h.name);
    }
    match blobs.finish_upload(&id, &digest, None).await.unwrap() {
        Finished::Published => {}
        other => panic!("{}: finishing an upload: {other:?}", h.name),
    }
    h.registry
        .gc()
        .link_published(repo, &digest, content.len() as i64, now_ms(), None)
        .await
        .unwrap();
    digest
}

fn manifest(repo: &RepoName, body: &str, tags: &[&str], blobs: &[(Digest, i64)]) -> NewManifest {
    let body = body.as_bytes().to_vec();
    NewManifest {
        repo: repo.clone(),
        digest: Digest::of(Algorithm::Sha256, &body),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body,
        artifact_type: None,
        subject: None,
        annotations: None,
        config_media_type: None,
        config_digest: None,
        required_blobs: blobs.to_vec(),
        required_manifests: Vec::new(),
        referenced_blobs: blobs.iter().map(|(d, _)| d.clone()).collect(),
        tags: tags.iter().map(|t| tag(t)).collect(),
        quarantine: None,
    }
}

fn webhook(name: &str, uri: &str) -> WebhookRecord {
    WebhookRecord {
        name: name.into(),
        service_uri: uri.into(),
        custom_headers: BTreeMap::from([("Authorization".to_owned(), "Bearer x".to_owned())]),
        actions: vec![WebhookAction::Push, WebhookAction::Delete],
        status: WebhookStatus::Enabled,
        scope: String::new(),
        location: String::new(),
        tags: BTreeMap::new(),
        signing: Signing::default(),
        payload_format: PayloadFormat::Acr,
        created_at: now_ms(),
        updated_at: now_ms(),
    }
}

/// Every webhook named here wants every event: the contract is about what the backend does
/// with the answer, not about matching (that is the webhook service's).
struct Everyone(Vec<String>);

impl EventSubscribers for Everyone {
    fn wanted_by(&self, _: &OutboxEvent) -> Vec<String> {
        self.0.clone()
    }

    fn any_wants(&self, _: WebhookAction) -> bool {
        true
    }
}

fn push_event(repo: &RepoName, t: &str) -> OutboxEvent {
    let id = uuid::Uuid::new_v4().to_string();
    OutboxEvent {
        body: format!(r#"{{"id":"{id}","action":"push"}}"#).into_bytes(),
        id,
        action: WebhookAction::Push,
        repository: repo.to_string(),
        match_tags: vec![t.to_owned()],
        tagless: false,
    }
}

fn room() -> Room {
    Room {
        per_webhook: 16,
        ..Default::default()
    }
}

fn attempt(d: &wharf_store::hooks::QueuedDelivery, status: i64) -> AttemptRecord {
    AttemptRecord {
        delivery_id: d.delivery_id,
        webhook: d.webhook.clone(),
        event_id: d.event_id.clone(),
        attempt: d.attempt,
        started_at: now_ms(),
        duration_ms: 1,
        request_uri: "https://example.com/***".into(),
        status_code: Some(status),
        ..Default::default()
    }
}

#[tokio::test]
async fn repositories_and_blob_links() {
    for h in backends("repositories_and_blob_links").await {
        let (meta, a, b) = (&h.registry.meta, repo("team/a"), repo("team/b"));
        assert!(!meta.repo_exists(&a).await.unwrap(), "{}", h.name);
        let layer = push_blob(&h, &a, b"layer one").await;
        assert!(meta.repo_exists(&a).await.unwrap(), "{}", h.name);
        assert_eq!(
            meta.blob_size(&a, &layer).await.unwrap(),
            Some(9),
            "{}",
            h.name
        );
        assert_eq!(
            meta.blob_size(&b, &layer).await.unwrap(),
            None,
            "{}",
            h.name
        );
        assert_eq!(meta.blob_size_anywhere(&layer).await.unwrap(), Some(9));
        push_blob(&h, &b, b"layer one").await;
        let mut holders: Vec<String> = meta
            .blob_holders(&layer)
            .await
            .unwrap()
            .into_iter()
            .map(|(r, size)| {
                assert_eq!(size, 9);
                r.to_string()
            })
            .collect();
        holders.sort();
        assert_eq!(holders, ["team/a", "team/b"], "{}", h.name);
        assert_eq!(
            meta.catalog(None, None).await.unwrap(),
            ["team/a", "team/b"],
            "{}",
            h.name
        );
        assert_eq!(
            meta.catalog(Some("team/a"), Some(5)).await.unwrap(),
            ["team/b"]
        );
        assert_eq!(meta.catalog(None, Some(1)).await.unwrap(), ["team/a"]);

        assert!(meta.unlink_blob(&a, &layer).await.unwrap(), "{}", h.name);
        assert!(!meta.unlink_blob(&a, &layer).await.unwrap(), "{}", h.name);
        assert_eq!(
            meta.blob_size(&a, &layer).await.unwrap(),
            None,
            "{}",
            h.name
        );
        assert_eq!(
            meta.blob_size(&b, &layer).await.unwrap(),
            Some(9),
            "{}",
            h.name
        );
        // A touch of a link that is gone says so (the read then answers 404).
        let gc = h.registry.gc();
        assert!(
            !gc.touch(&a, &layer, now_ms(), 0).await.unwrap(),
            "{}",
            h.name
        );
        assert!(
            gc.touch(&b, &layer, now_ms(), 0).await.unwrap(),
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn manifests_and_tags() {
    for h in backends("manifests_and_tags").await {
        let meta = &h.registry.meta;
        let r = repo("app");
        let layer = push_blob(&h, &r, b"the layer").await;
        let hooks = &h.registry.hooks;

        // A manifest whose blob is not in the repository is refused, and nothing is stored.
        let other = Digest::of(Algorithm::Sha256, b"elsewhere");
        let m = manifest(&r, r#"{"m":0}"#, &["v0"], &[(other.clone(), 9)]);
        match meta.put_manifest(&m, &[], hooks).await {
            Err(StoreError::MissingBlob(d)) => assert_eq!(d, other, "{}", h.name),
            e => panic!("{}: {e:?}", h.name),
        }
        let v0 = Reference::Tag(tag("v0"));
        assert!(meta.get_manifest(&r, &v0, false).await.unwrap().is_none());
        // So is one that states a wrong size.
        let m = manifest(&r, r#"{"m":0}"#, &["v0"], &[(layer.clone(), 8)]);
        assert!(
            matches!(
                meta.put_manifest(&m, &[], hooks).await,
                Err(StoreError::SizeMismatch { .. })
            ),
            "{}",
            h.name
        );

        let m1 = manifest(&r, r#"{"m":1}"#, &["v1", "latest"], &[(layer.clone(), 9)]);
        assert_eq!(meta.put_manifest(&m1, &[], hooks).await.unwrap(), 0);
        let by_tag = meta
            .get_manifest(&r, &Reference::Tag(tag("latest")), true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_tag.digest, m1.digest, "{}", h.name);
        assert_eq!(by_tag.body.as_deref(), Some(&m1.body[..]), "{}", h.name);
        assert_eq!(by_tag.size, m1.body.len() as i64);
        assert!(by_tag.blocked.is_none());
        let head = meta
            .get_manifest(&r, &Reference::Digest(m1.digest.clone()), false)
            .await
            .unwrap()
            .unwrap();
        assert!(head.body.is_none(), "{}: HEAD reads no body", h.name);
        assert_eq!(
            meta.list_tags(&r, None, None, false)
                .await
                .unwrap()
                .unwrap(),
            ["latest", "v1"],
            "{}",
            h.name
        );
        assert_eq!(
            meta.list_tags(&r, Some("latest"), Some(1), false)
                .await
                .unwrap()
                .unwrap(),
            ["v1"]
        );
        assert!(
            meta.list_tags(&repo("nope"), None, None, false)
                .await
                .unwrap()
                .is_none()
        );

        // A second manifest pointing at the first (a signature): a referrer.
        let mut sig = manifest(&r, r#"{"sig":1}"#, &[], &[(layer.clone(), 9)]);
        sig.subject = Some(m1.digest.clone());
        sig.artifact_type = Some("application/example.sig".into());
        meta.put_manifest(&sig, &[], hooks).await.unwrap();
        let refs = meta.referrers(&r, &m1.digest, false).await.unwrap();
        assert_eq!(refs.len(), 1, "{}", h.name);
        assert_eq!(refs[0].digest, sig.digest);
        assert_eq!(
            refs[0].artifact_type.as_deref(),
            Some("application/example.sig")
        );
        let mut digests = meta.manifest_digests(&r).await.unwrap();
        digests.sort_by_key(|d| d.to_string());
        let mut want = vec![m1.digest.clone(), sig.digest.clone()];
        want.sort_by_key(|d| d.to_string());
        assert_eq!(digests, want, "{}", h.name);
        assert!(
            meta.manifest_config(&r, &m1.digest)
                .await
                .unwrap()
                .is_some()
        );

        // Untagging leaves the manifest.
        assert!(meta.delete_tag(&r, &tag("v1")).await.unwrap(), "{}", h.name);
        assert!(
            !meta.delete_tag(&r, &tag("v1")).await.unwrap(),
            "{}",
            h.name
        );
        assert!(
            meta.get_manifest(&r, &Reference::Digest(m1.digest.clone()), false)
                .await
                .unwrap()
                .is_some()
        );

        // Deleting by digest takes the remaining tags with it and reports them.
        let deleted = meta
            .delete_manifest(&r, &m1.digest, hooks, &|_| Vec::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(deleted.0.tags, ["latest"], "{}", h.name);
        assert_eq!(deleted.1, 0);
        assert!(
            meta.get_manifest(&r, &Reference::Tag(tag("latest")), false)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            meta.delete_manifest(&r, &m1.digest, hooks, &|_| Vec::new())
                .await
                .unwrap()
                .is_none(),
            "{}",
            h.name
        );

        // A repository delete removes what is left, and the repository.
        let (gone, queued) = meta
            .delete_repository(&r, hooks, &|_| Vec::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gone.len(), 1, "{}", h.name);
        assert_eq!(gone[0].digest, sig.digest);
        assert_eq!(queued, 0);
        assert!(!meta.repo_exists(&r).await.unwrap(), "{}", h.name);
        assert!(
            meta.delete_repository(&r, hooks, &|_| Vec::new())
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn upload_sessions() {
    for h in backends("upload_sessions").await {
        let meta = &h.registry.meta;
        let r = repo("up");
        let before = now_ms();
        meta.create_upload("s1", &r, "sha256").await.unwrap();
        let row = meta.get_upload("s1").await.unwrap().unwrap();
        assert_eq!(row.repo, "up", "{}", h.name);
        assert_eq!(row.algorithm, "sha256");
        assert!(row.finished_digest.is_none());
        assert!(meta.get_upload("s2").await.unwrap().is_none());
        assert_eq!(
            meta.upload_ids().await.unwrap(),
            [("s1".to_owned(), false)],
            "{}",
            h.name
        );
        assert!(
            meta.stale_uploads(before - 60_000)
                .await
                .unwrap()
                .is_empty(),
            "{}: a fresh session is not stale",
            h.name
        );
        assert_eq!(
            meta.stale_uploads(now_ms() + 60_000).await.unwrap(),
            ["s1"],
            "{}",
            h.name
        );
        assert!(meta.delete_upload("s1").await.unwrap(), "{}", h.name);
        assert!(!meta.delete_upload("s1").await.unwrap(), "{}", h.name);
        assert!(meta.upload_ids().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn webhook_definitions() {
    for h in backends("webhook_definitions").await {
        let defs = h.hooks.webhooks();
        assert!(defs.list_webhooks().await.unwrap().is_empty(), "{}", h.name);
        let w = webhook("hook1", "https://example.com/a?token=s3cret");
        defs.create_webhook(&w).await.unwrap();
        assert!(
            matches!(defs.create_webhook(&w).await, Err(StoreError::Conflict)),
            "{}: a taken name is a conflict",
            h.name
        );
        let got = defs.get_webhook("hook1").await.unwrap().unwrap();
        assert_eq!(got, w, "{}: secrets come back as written", h.name);
        assert!(defs.get_webhook("hook2").await.unwrap().is_none());

        let mut changed = w.clone();
        changed.service_uri = "https://example.com/b".into();
        changed.status = WebhookStatus::Disabled;
        defs.update_webhook(&changed).await.unwrap();
        assert_eq!(defs.get_webhook("hook1").await.unwrap().unwrap(), changed);
        assert!(
            matches!(
                defs.update_webhook(&webhook("hook2", "https://x")).await,
                Err(StoreError::NotFound)
            ),
            "{}",
            h.name
        );
        defs.create_webhook(&webhook("hook2", "https://example.com/c"))
            .await
            .unwrap();
        let names: Vec<String> = defs
            .list_webhooks()
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["hook1", "hook2"], "{}", h.name);

        assert!(defs.delete_webhook("hook1").await.unwrap(), "{}", h.name);
        assert!(!defs.delete_webhook("hook1").await.unwrap(), "{}", h.name);
        assert!(defs.get_webhook("hook1").await.unwrap().is_none());
    }
}

/// The outbox, the queue and the history together: a change queues one delivery per
/// subscribed webhook in its transaction; a claim leases it to one node; a failed attempt
/// with a retry puts it back, due at the retry time; a success ends it; the history shows
/// every attempt with the event it carried.
#[tokio::test]
async fn queue_claim_retry_complete_and_history() {
    for h in backends("queue_claim_retry_complete_and_history").await {
        let defs = h.hooks.webhooks();
        let queue = h.hooks.deliveries();
        defs.create_webhook(&webhook("hook1", "https://example.com/1"))
            .await
            .unwrap();
        let mut off = webhook("hook2", "https://example.com/2");
        off.status = WebhookStatus::Disabled;
        defs.create_webhook(&off).await.unwrap();
        h.registry
            .hooks
            .attach(Arc::new(Everyone(vec!["hook1".into(), "hook2".into()])));

        let r = repo("queued");
        let layer = push_blob(&h, &r, b"queued layer").await;
        let ev = push_event(&r, "v1");
        let m = manifest(&r, r#"{"q":1}"#, &["v1"], &[(layer, 12)]);
        let queued = h
            .registry
            .meta
            .put_manifest(&m, std::slice::from_ref(&ev), &h.registry.hooks)
            .await
            .unwrap();
        assert_eq!(
            queued, 1,
            "{}: only the enabled webhook gets a delivery",
            h.name
        );
        assert!(queue.has_delivery("hook1", &ev.id).await.unwrap());
        assert!(!queue.has_delivery("hook2", &ev.id).await.unwrap());

        let claimed = queue
            .claim_due(10, &room(), 60_000, "node-a")
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "{}", h.name);
        let d = &claimed[0];
        assert_eq!((d.webhook.as_str(), d.attempt), ("hook1", 1));
        assert_eq!(d.event_id, ev.id);
        assert_eq!(d.body, ev.body, "{}: the stored bytes are sent", h.name);
        assert!(
            queue
                .claim_due(10, &room(), 60_000, "node-b")
                .await
                .unwrap()
                .is_empty(),
            "{}: a leased delivery is not claimed again",
            h.name
        );
        let leases = queue.delivery_leases().await.unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].1, "node-a", "{}", h.name);
        assert_eq!(
            queue
                .renew_leases(&[d.delivery_id], "node-b", 60_000)
                .await
                .unwrap(),
            0,
            "{}: only the owner renews",
            h.name
        );
        assert_eq!(
            queue
                .renew_leases(&[d.delivery_id], "node-a", 60_000)
                .await
                .unwrap(),
            1
        );

        // A failure with a retry due now: back in the queue, next attempt 2.
        queue
            .record_attempts(&[(attempt(d, 500), Outcome::Retry(now_ms() - 1))])
            .await
            .unwrap();
        let again = queue
            .claim_due(10, &room(), 60_000, "node-b")
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{}", h.name);
        assert_eq!(again[0].attempt, 2, "{}", h.name);
        assert_eq!(again[0].event_id, ev.id);
        // A failure for good is not claimed again; a redelivery puts it back, due now, and
        // this time it succeeds.
        queue
            .record_attempts(&[(attempt(&again[0], 503), Outcome::Failed)])
            .await
            .unwrap();
        assert!(
            queue
                .claim_due(10, &room(), 60_000, "node-b")
                .await
                .unwrap()
                .is_empty(),
            "{}",
            h.name
        );
        assert_eq!(
            queue.delivery_counts().await.unwrap().get("failed"),
            Some(&1)
        );
        assert_eq!(
            queue.redeliver("hook1", None).await.unwrap(),
            1,
            "{}",
            h.name
        );
        let third = queue
            .claim_due(10, &room(), 60_000, "node-c")
            .await
            .unwrap();
        assert_eq!(third.len(), 1, "{}", h.name);
        assert_eq!(third[0].attempt, 3);
        queue
            .record_attempts(&[(attempt(&third[0], 200), Outcome::Delivered)])
            .await
            .unwrap();
        let counts = queue.delivery_counts().await.unwrap();
        assert_eq!(counts.get("delivered"), Some(&1), "{}: {counts:?}", h.name);
        assert_eq!(counts.get("pending").copied().unwrap_or(0), 0);

        let history = queue.list_history("hook1", None, 10).await.unwrap();
        let seen: Vec<(i64, Option<i64>, &str)> = history
            .iter()
            .map(|e| (e.attempt.attempt, e.attempt.status_code, e.outcome.as_str()))
            .collect();
        assert_eq!(seen.len(), 3, "{}: {seen:?}", h.name);
        assert_eq!(
            seen.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
            [(3, Some(200)), (2, Some(503)), (1, Some(500))],
            "{}: newest first",
            h.name
        );
        assert!(history.iter().all(|e| e.attempt.event_id == ev.id));
        assert!(history.iter().all(|e| e.action == "push"));
        // Pages by id.
        let page = queue
            .list_history("hook1", Some(history[0].id), 1)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, history[1].id, "{}", h.name);
        assert!(
            queue
                .list_history("hook2", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// Leases: released ones are due at once; at start-up a node takes back its own leases and
/// expired ones, never another live node's.
#[tokio::test]
async fn queue_release_and_recovery() {
    for h in backends("queue_release_and_recovery").await {
        h.hooks
            .webhooks()
            .create_webhook(&webhook("hook1", "https://example.com/1"))
            .await
            .unwrap();
        h.registry
            .hooks
            .attach(Arc::new(Everyone(vec!["hook1".into()])));
        let r = repo("leases");
        let layer = push_blob(&h, &r, b"lease layer").await;
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            let m = manifest(&r, &format!(r#"{{"l":{i}}}"#), &[t], &[(layer.clone(), 11)]);
            let n = h
                .registry
                .meta
                .put_manifest(&m, &[push_event(&r, t)], &h.registry.hooks)
                .await
                .unwrap();
            assert_eq!(n, 1, "{}", h.name);
        }
        let queue = h.hooks.deliveries();
        let one = Room {
            per_webhook: 1,
            ..Default::default()
        };
        let mine = queue.claim_due(10, &one, 60_000, "node-a").await.unwrap();
        assert_eq!(mine.len(), 1, "{}: the room caps a claim", h.name);
        let theirs = queue.claim_due(1, &room(), 60_000, "node-b").await.unwrap();
        assert_eq!(theirs.len(), 1, "{}: the limit caps a claim", h.name);
        let expired = queue.claim_due(1, &room(), -1, "node-c").await.unwrap();
        assert_eq!(expired.len(), 1, "{}", h.name);

        // node-a starts again: its own lease and node-c's expired one come back; node-b's
        // live lease stays.
        assert_eq!(queue.recover_deliveries("node-a").await.unwrap(), 2);
        let leases = queue.delivery_leases().await.unwrap();
        assert_eq!(leases.len(), 1, "{}: {leases:?}", h.name);
        assert_eq!(leases[0].1, "node-b");
        let back = queue
            .claim_due(10, &room(), 60_000, "node-a")
            .await
            .unwrap();
        assert_eq!(back.len(), 2, "{}", h.name);

        queue
            .release_leases(&[theirs[0].delivery_id])
            .await
            .unwrap();
        let released = queue
            .claim_due(10, &room(), 60_000, "node-a")
            .await
            .unwrap();
        assert_eq!(released.len(), 1, "{}", h.name);
        assert_eq!(released[0].delivery_id, theirs[0].delivery_id);
        // A retry due later is not claimed before its time.
        queue
            .record_attempts(&[(
                attempt(&released[0], 503),
                Outcome::Retry(now_ms() + 3_600_000),
            )])
            .await
            .unwrap();
        assert!(
            queue
                .claim_due(10, &room(), 60_000, "node-a")
                .await
                .unwrap()
                .is_empty(),
            "{}",
            h.name
        );
        assert_eq!(
            queue.delivery_counts().await.unwrap().get("pending"),
            Some(&3)
        );
    }
}

#[tokio::test]
async fn identities() {
    for h in backends("identities").await {
        let ids = &h.identities;
        assert!(ids.setting("k").await.unwrap().is_none(), "{}", h.name);
        assert!(ids.init_settings(&[("k", "1"), ("j", "2")]).await.unwrap());
        assert!(
            !ids.init_settings(&[("k", "9")]).await.unwrap(),
            "{}: settings are initialised once",
            h.name
        );
        ids.set_settings(&[("k", "3")]).await.unwrap();
        assert_eq!(ids.setting("k").await.unwrap().as_deref(), Some("3"));
        assert_eq!(ids.all_settings().await.unwrap().len(), 2, "{}", h.name);

        let map = ScopeMapRow {
            name: "readers".into(),
            description: "read all".into(),
            actions: vec!["repositories/*/content/read".into()],
            created_at: now_ms(),
        };
        assert!(ids.put_scope_map(&map).await.unwrap(), "{}", h.name);
        assert!(
            !ids.put_scope_map(&map).await.unwrap(),
            "{}: replaced",
            h.name
        );
        assert_eq!(ids.scope_map("readers").await.unwrap(), Some(map.clone()));
        assert_eq!(ids.scope_maps().await.unwrap(), [map]);

        let token = TokenRow {
            name: "ci".into(),
            scope_map: "readers".into(),
            enabled: true,
            passwords: Vec::new(),
            created_at: now_ms(),
        };
        assert!(ids.put_token(&token).await.unwrap(), "{}", h.name);
        assert_eq!(ids.token("ci").await.unwrap(), Some(token.clone()));
        assert_eq!(ids.tokens().await.unwrap(), [token]);
        assert!(ids.delete_token("ci").await.unwrap(), "{}", h.name);
        assert!(!ids.delete_token("ci").await.unwrap());
        assert!(ids.delete_scope_map("readers").await.unwrap(), "{}", h.name);
        assert!(ids.scope_map("readers").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn policies() {
    for h in backends("policies").await {
        let p = h.registry.policies();
        let before = p.get().await.unwrap();
        assert!(!before.quarantine_enabled, "{}", h.name);
        let after = p
            .update(wharf_store::PoliciesPatch {
                quarantine_enabled: Some(true),
                retention_days: Some(3),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(after.quarantine_enabled, "{}", h.name);
        assert_eq!(after.retention_days, 3);
        assert!(after.retention_updated_at.is_some(), "{}", h.name);
        assert_eq!(p.get().await.unwrap(), after, "{}", h.name);
    }
}

#[tokio::test]
async fn repository_and_tag_locks() {
    use wharf_store::{FlagsPatch, RepoPatch};
    for h in backends("repository_and_tag_locks").await {
        let (meta, attrs, hooks) = (&h.registry.meta, h.registry.attributes(), &h.registry.hooks);
        let r = repo("locked/app");
        let layer = push_blob(&h, &r, b"the layer").await;
        let m1 = manifest(&r, r#"{"l":1}"#, &["v1"], &[(layer.clone(), 9)]);
        meta.put_manifest(&m1, &[], hooks).await.unwrap();
        // `any_locks` is a hint that lets the push path skip lock checks: false must mean no
        // lock exists, true may be conservative (PostgreSQL always says true: another node may
        // have set one a moment ago). Only SQLite, whose process owns every change, says false.
        if h.name == "sqlite" {
            assert!(!attrs.any_locks(), "{}: no lock yet", h.name);
        }

        let a = attrs.repository(&r).await.unwrap().unwrap();
        assert_eq!((a.manifest_count, a.tag_count), (1, 1), "{}", h.name);
        assert!(a.flags.write_enabled && a.flags.read_enabled, "{}", h.name);
        assert!(attrs.repository(&repo("nope")).await.unwrap().is_none());

        // A write lock on the repository refuses a push, and nothing of it is stored.
        let lock = |write, read| RepoPatch {
            flags: FlagsPatch {
                write_enabled: Some(write),
                read_enabled: Some(read),
                ..Default::default()
            },
            ..Default::default()
        };
        let a = attrs
            .update_repository(&r, lock(false, true))
            .await
            .unwrap()
            .unwrap();
        assert!(!a.flags.write_enabled, "{}", h.name);
        assert!(attrs.any_locks(), "{}", h.name);
        assert!(!attrs.repo_writable(&r).await.unwrap(), "{}", h.name);
        let m2 = manifest(&r, r#"{"l":2}"#, &["v2"], &[(layer.clone(), 9)]);
        assert!(
            matches!(
                meta.put_manifest(&m2, &[], hooks).await,
                Err(StoreError::Disallowed)
            ),
            "{}",
            h.name
        );
        assert!(attrs.tag(&r, &tag("v2")).await.unwrap().unwrap().is_none());

        // Unlocked, the same push goes through; a read lock is reported as such.
        attrs
            .update_repository(&r, lock(true, false))
            .await
            .unwrap();
        meta.put_manifest(&m2, &[], hooks).await.unwrap();
        assert!(!attrs.repo_readable(&r).await.unwrap(), "{}", h.name);

        // A tag's own flags: set on a known tag, None for an unknown one.
        let t = attrs
            .update_tag(
                &r,
                &tag("v1"),
                FlagsPatch {
                    delete_enabled: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            !t.flags.delete_enabled && t.flags.write_enabled,
            "{}",
            h.name
        );
        assert_eq!(t.digest, m1.digest.to_string(), "{}", h.name);
        assert!(
            attrs
                .update_tag(&r, &tag("none"), FlagsPatch::default())
                .await
                .unwrap()
                .unwrap()
                .is_none(),
            "{}",
            h.name
        );
    }
}

/// The backends of the garbage-collection tests: those of [`backends`], and when
/// `WHARF_TEST_S3=1` (with the `AWS_*` variables of `scripts/services.sh`) each metadata
/// backend again over S3 blobs, in the bucket `WHARF_TEST_BUCKET` (default `wharf-test`)
/// under a fresh prefix: collection lists and deletes content there.
async fn gc_backends(test: &str) -> Vec<Handles> {
    let mut out = backends(test).await;
    if !std::env::var("WHARF_TEST_S3").is_ok_and(|v| v == "1") {
        eprintln!("{test}: s3 blobs not run (set WHARF_TEST_S3=1 and AWS_*)");
        return out;
    }
    let bucket = std::env::var("WHARF_TEST_BUCKET").unwrap_or_else(|_| "wharf-test".into());
    let s3 = || wharf_store::BlobLocation::S3 {
        bucket: bucket.clone(),
        prefix: format!("meta-contract/{test}/{}", uuid::Uuid::new_v4().simple()),
    };
    let mut stores = vec![(
        "sqlite+s3",
        wharf_store::StoreOptions {
            blob_store: s3(),
            ..Default::default()
        },
    )];
    if std::env::var("WHARF_TEST_POSTGRES").is_ok_and(|v| v == "1") {
        stores.push((
            "postgres+s3",
            wharf_store::StoreOptions {
                blob_store: s3(),
                database: Some(fresh_postgres_database().await),
                database_max_connections: 8,
                secret_key: Some(base64_key()),
                ..Default::default()
            },
        ));
    }
    for (name, opts) in stores {
        let dir = tempfile::tempdir().unwrap();
        let store = wharf_store::Store::open(dir.path(), &opts)
            .await
            .unwrap_or_else(|e| panic!("{name}: opening the store: {e}"));
        out.push(Handles {
            name,
            registry: store.registry_store(),
            hooks: store.hook_store(),
            identities: store.identity_store(),
            _keep: Box::new((store, dir)),
        });
    }
    let names: Vec<&str> = out.iter().map(|b| b.name).collect();
    eprintln!("{test}: garbage collection on {}", names.join(", "));
    out
}

/// Publishes `content` as a finished upload does, without linking it anywhere.
async fn publish_unlinked(h: &Handles, content: &[u8]) -> Digest {
    let digest = Digest::of(Algorithm::Sha256, content);
    // 32 hex digits, as the registry makes them: object stores name no other session.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let blobs = &h.registry.blobs;
    blobs.create_upload(&id).await.unwrap();
    let body: ByteStream = Box::pin(futures_util::stream::iter(vec![Ok(
        Bytes::copy_from_slice(content),
    )]));
    if blobs.append_upload(&id, 0, body, None).await.is_err() {
        panic!("{}: appending to an upload failed", h.name);
    }
    match blobs.finish_upload(&id, &digest, None).await.unwrap() {
        Finished::Published => {}
        other => panic!("{}: finishing an upload: {other:?}", h.name),
    }
    digest
}

const HOUR_MS: i64 = 3600 * 1000;

/// A collection removes a repository's blob links that no manifest references and nothing
/// used within the grace, then the content no link names; it keeps links a manifest
/// references (non-distributable layers, which the push did not require, included), links
/// used within the grace, and content another repository still links. A dry run counts the
/// same and removes nothing; a second run finds nothing.
#[tokio::test]
async fn a_collection_removes_unused_unreferenced_links_and_unlinked_content() {
    use wharf_store::GcOptions;
    for h in gc_backends("gc_collection").await {
        let (meta, gc, blobs) = (&h.registry.meta, h.registry.gc(), &h.registry.blobs);
        let (r, other) = (repo("gc/app"), repo("gc/other"));
        let config = push_blob(&h, &r, b"{\"config\":1}").await;
        let layer = push_blob(&h, &r, b"a layer").await;
        let foreign = push_blob(&h, &r, b"a foreign layer").await;
        let stale = push_blob(&h, &r, b"a stale blob").await;
        let shared = push_blob(&h, &r, b"a shared blob").await;
        push_blob(&h, &other, b"a shared blob").await;
        let fresh = push_blob(&h, &r, b"a fresh blob").await;
        let mut m = manifest(
            &r,
            r#"{"schemaVersion":2,"gc":"app"}"#,
            &["v1"],
            &[(config.clone(), 12), (layer.clone(), 7)],
        );
        m.referenced_blobs.push(foreign.clone());
        meta.put_manifest(&m, &[], &h.registry.hooks)
            .await
            .unwrap_or_else(|e| panic!("{}: the manifest push: {e}", h.name));

        // Two hours on, with an hour's grace: every link and all content are older than
        // the cutoff, except the links used again now.
        let later = now_ms() + 2 * HOUR_MS;
        assert!(gc.touch(&r, &fresh, later, HOUR_MS / 4).await.unwrap());
        assert!(gc.touch(&other, &shared, later, HOUR_MS / 4).await.unwrap());
        let run = |dry_run| GcOptions {
            now_ms: later,
            grace_ms: HOUR_MS,
            dry_run,
        };
        // Goes: the links gc/app:stale and gc/app:shared, and the stale content (12 bytes).
        let want = wharf_store::GcFigures {
            links_removed: 2,
            blobs_removed: 1,
            bytes_reclaimed: 12,
        };
        assert_eq!(
            gc.collect(run(true)).await.unwrap(),
            want,
            "{}: dry",
            h.name
        );
        for d in [&config, &layer, &foreign, &stale, &shared, &fresh] {
            assert!(
                meta.blob_size(&r, d).await.unwrap().is_some(),
                "{}: a dry run removed the link of {d}",
                h.name
            );
            assert!(blobs.blob_exists(d).await.unwrap(), "{}: dry", h.name);
        }

        assert_eq!(gc.collect(run(false)).await.unwrap(), want, "{}", h.name);
        for d in [&stale, &shared] {
            assert_eq!(meta.blob_size(&r, d).await.unwrap(), None, "{}", h.name);
        }
        assert!(!blobs.blob_exists(&stale).await.unwrap(), "{}", h.name);
        assert_eq!(meta.blob_size(&other, &shared).await.unwrap(), Some(13));
        assert!(blobs.blob_exists(&shared).await.unwrap(), "{}", h.name);
        for d in [&config, &layer, &foreign, &fresh] {
            assert!(
                meta.blob_size(&r, d).await.unwrap().is_some(),
                "{}: the link of {d} went",
                h.name
            );
            assert!(blobs.blob_exists(d).await.unwrap(), "{}: {d}", h.name);
        }
        // A read of a collected link answers "gone" (404), and does not bring it back.
        assert!(!gc.touch(&r, &stale, later, HOUR_MS / 4).await.unwrap());
        assert_eq!(meta.blob_size(&r, &stale).await.unwrap(), None);

        assert_eq!(
            gc.collect(run(false)).await.unwrap(),
            wharf_store::GcFigures::default(),
            "{}: a second run",
            h.name
        );
    }
}

/// Content a collection removed before an upload (or mount) of it could link it is not
/// linked: the link fails with `Unavailable` (the client uploads again) and leaves nothing.
#[tokio::test]
async fn linking_content_a_collection_removed_fails_and_links_nothing() {
    use wharf_store::GcOptions;
    for h in gc_backends("gc_link_after_collect").await {
        let gc = h.registry.gc();
        let r = repo("gc/raced");
        let d = publish_unlinked(&h, b"raced content").await;
        let later = now_ms() + 2 * HOUR_MS;
        let f = gc
            .collect(GcOptions {
                now_ms: later,
                grace_ms: HOUR_MS,
                dry_run: false,
            })
            .await
            .unwrap();
        assert_eq!((f.blobs_removed, f.bytes_reclaimed), (1, 13), "{}", h.name);
        match gc.link_published(&r, &d, 13, later, None).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("{}: linking collected content: {other:?}", h.name),
        }
        assert!(!gc.touch(&r, &d, later, 0).await.unwrap(), "{}", h.name);
        assert_eq!(h.registry.meta.blob_size(&r, &d).await.unwrap(), None);
    }
}

/// Linking a finished upload's content records the session as finished with its digest,
/// in the linking transaction; linking again keeps the latest use.
#[tokio::test]
async fn linking_a_finished_upload_marks_its_session() {
    for h in backends("gc_link_upload").await {
        let (meta, gc) = (&h.registry.meta, h.registry.gc());
        let r = repo("gc/up");
        meta.create_upload("session-1", &r, "sha256").await.unwrap();
        let d = publish_unlinked(&h, b"uploaded").await;
        let now = now_ms();
        gc.link_published(&r, &d, 8, now, Some("session-1"))
            .await
            .unwrap();
        let row = meta.get_upload("session-1").await.unwrap().unwrap();
        assert_eq!(row.finished_digest, Some(d.to_string()), "{}", h.name);
        assert_eq!(meta.blob_size(&r, &d).await.unwrap(), Some(8), "{}", h.name);
        // A mount of the same content (no session) at an older time neither fails nor
        // makes the link's last use older: a collection with the cutoff between the two
        // times keeps it.
        gc.link_published(&r, &d, 8, now - 2 * HOUR_MS, None)
            .await
            .unwrap();
        let f = gc
            .collect(wharf_store::GcOptions {
                now_ms: now + HOUR_MS / 2,
                grace_ms: HOUR_MS,
                dry_run: false,
            })
            .await
            .unwrap();
        assert_eq!(f.links_removed, 0, "{}", h.name);
        assert_eq!(meta.blob_size(&r, &d).await.unwrap(), Some(8), "{}", h.name);
    }
}
