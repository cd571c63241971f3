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
    } else {
        eprintln!(
            "{test}: PostgreSQL skipped (WHARF_TEST_POSTGRES=1 runs it; scripts/backends.sh does)"
        );
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
        Finished::AlreadyStored => blobs.remove_upload(&id).await.unwrap(),
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

// ---- The webhook queue without a manifest push (pings put back by a redelivery), several
// ---- claimers, and what other nodes hear.

/// Where the nodes over the PostgreSQL database `url` keep their blobs: one S3 prefix for all
/// of them. A data directory is one node's only, and a database whose blobs are in one is
/// bound to it: a second node with a directory of its own is refused.
fn shared_blob_store(url: &str) -> wharf_store::BlobLocation {
    assert!(
        std::env::var("WHARF_TEST_S3").is_ok_and(|v| v == "1"),
        "two nodes over one PostgreSQL database need shared blobs: set WHARF_TEST_S3=1 and \
         AWS_* (scripts/backends.sh does)"
    );
    wharf_store::BlobLocation::S3 {
        bucket: std::env::var("WHARF_TEST_BUCKET").unwrap_or_else(|_| "wharf-test".into()),
        prefix: format!(
            "meta-contract/nodes/{}",
            url.rsplit('/').next().unwrap_or(url)
        ),
    }
}

/// A node over the PostgreSQL database `url` (each node has its own data directory; the
/// blobs are shared).
async fn postgres_at(url: &str) -> Handles {
    let dir = tempfile::tempdir().unwrap();
    let opts = wharf_store::StoreOptions {
        blob_store: shared_blob_store(url),
        database: Some(url.to_owned()),
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

/// Each backend with, where it can have one, a second node over the same metadata: on
/// PostgreSQL two stores over one database; SQLite's data directory belongs to one process,
/// so there the "second node" is the same store (claims then differ only by owner).
async fn backends_with_second_node(test: &str) -> Vec<(Handles, Option<Handles>)> {
    let mut out = vec![(sqlite().await, None)];
    if std::env::var("WHARF_TEST_POSTGRES").is_ok_and(|v| v == "1") {
        let url = fresh_postgres_database().await;
        let first = postgres_at(&url).await;
        let second = postgres_at(&url).await;
        out.push((first, Some(second)));
    }
    let names: Vec<&str> = out.iter().map(|b| b.0.name).collect();
    eprintln!("{test}: running on {}", names.join(", "));
    out
}

/// Queues a due delivery of `webhook` without a manifest push: a ping, which a redelivery
/// puts back in the queue like any delivery that is not pending. Returns its id and event.
async fn queue_one(hooks: &HookStore, webhook: &str) -> (i64, String) {
    let ev = uuid::Uuid::new_v4().to_string();
    let q = hooks.deliveries();
    let id = q
        .create_ping(
            webhook,
            &ev,
            br#"{"action":"ping"}"#,
            PayloadFormat::Acr,
            "pinger",
            60_000,
        )
        .await
        .unwrap();
    assert_eq!(q.redeliver(webhook, Some(&ev)).await.unwrap(), 1);
    (id, ev)
}

fn ids(v: &[wharf_store::hooks::QueuedDelivery]) -> Vec<i64> {
    v.iter().map(|d| d.delivery_id).collect()
}

/// Several claimers with two different owners claiming at once (on PostgreSQL from two
/// nodes): no delivery is handed to two of them, none is lost, and each is leased to the
/// owner that got it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_delivery() {
    for (h, second) in backends_with_second_node("concurrent_claimers_never_share_a_delivery").await
    {
        let hooks = ["hook1", "hook2", "hook3"];
        for w in hooks {
            h.hooks
                .webhooks()
                .create_webhook(&webhook(w, "https://example.com/c"))
                .await
                .unwrap();
        }
        let mut all = std::collections::BTreeSet::new();
        for _ in 0..20 {
            for w in hooks {
                all.insert(queue_one(&h.hooks, w).await.0);
            }
        }
        let other = second.as_ref().map_or(&h.hooks, |s| &s.hooks);
        let wide = Room {
            per_webhook: 100,
            ..Default::default()
        };
        let mut tasks = Vec::new();
        for (i, store) in [&h.hooks, &h.hooks, other, other].into_iter().enumerate() {
            let q = store.deliveries.clone();
            let owner = if i < 2 { "node-a" } else { "node-b" };
            let wide = wide.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let c = q.claim_due(3, &wide, 60_000, owner).await.unwrap();
                    if c.is_empty() {
                        break;
                    }
                    got.extend(c.into_iter().map(|d| (d.delivery_id, owner)));
                }
                got
            }));
        }
        let mut claimed = Vec::new();
        for t in tasks {
            claimed.extend(t.await.unwrap());
        }
        // A claim that found every due row held by another claim's lock may end a task early:
        // what is left is swept up.
        let rest = h
            .hooks
            .deliveries()
            .claim_due(1000, &wide, 60_000, "node-c")
            .await
            .unwrap();
        claimed.extend(rest.iter().map(|d| (d.delivery_id, "node-c")));
        let unique: std::collections::BTreeSet<i64> = claimed.iter().map(|c| c.0).collect();
        assert_eq!(
            unique.len(),
            claimed.len(),
            "{}: a delivery was claimed twice",
            h.name
        );
        assert_eq!(unique, all, "{}: every delivery claimed once", h.name);
        let leases: BTreeMap<i64, String> = h
            .hooks
            .deliveries()
            .delivery_leases()
            .await
            .unwrap()
            .into_iter()
            .map(|(id, owner, _)| (id, owner))
            .collect();
        for (id, owner) in &claimed {
            assert_eq!(
                leases.get(id).map(String::as_str),
                Some(*owner),
                "{}: delivery {id} is leased to its claimer",
                h.name
            );
        }
    }
}

/// Leases are node-owned: another node's live lease is neither claimed nor taken back at a
/// start-up; an expired one is both.
#[tokio::test]
async fn live_and_expired_leases_of_other_nodes() {
    for h in backends("live_and_expired_leases_of_other_nodes").await {
        h.hooks
            .webhooks()
            .create_webhook(&webhook("hook1", "https://example.com/1"))
            .await
            .unwrap();
        let mut queued = Vec::new();
        for _ in 0..4 {
            queued.push(queue_one(&h.hooks, "hook1").await.0);
        }
        let q = h.hooks.deliveries();
        let a = q.claim_due(1, &room(), 60_000, "node-a").await.unwrap();
        let b = q.claim_due(1, &room(), 60_000, "node-b").await.unwrap();
        let c = q.claim_due(1, &room(), -1, "node-c").await.unwrap();
        assert_eq!(
            [ids(&a), ids(&b), ids(&c)].concat(),
            queued[..3],
            "{}: oldest first",
            h.name
        );
        // node-d gets the unclaimed row and node-c's expired lease, not the live ones.
        let d = q.claim_due(10, &room(), 60_000, "node-d").await.unwrap();
        assert_eq!(ids(&d), [queued[2], queued[3]], "{}", h.name);
        assert_eq!(d[0].attempt, 1, "{}: a lease is not an attempt", h.name);

        // node-a starts again: its own lease comes back, node-b's and node-d's live ones stay.
        assert_eq!(
            q.recover_deliveries("node-a").await.unwrap(),
            1,
            "{}",
            h.name
        );
        let owners: Vec<(i64, String)> = q
            .delivery_leases()
            .await
            .unwrap()
            .into_iter()
            .map(|(id, o, _)| (id, o))
            .collect();
        assert_eq!(
            owners,
            [
                (queued[1], "node-b".to_owned()),
                (queued[2], "node-d".to_owned()),
                (queued[3], "node-d".to_owned()),
            ],
            "{}",
            h.name
        );
        // An expired lease of another node is taken back by any node's start-up.
        let e = q.claim_due(10, &room(), -1, "node-e").await.unwrap();
        assert_eq!(ids(&e), [queued[0]], "{}", h.name);
        assert_eq!(
            q.recover_deliveries("node-x").await.unwrap(),
            1,
            "{}",
            h.name
        );
        assert_eq!(q.delivery_leases().await.unwrap().len(), 3, "{}", h.name);
        // Released leases are due at once, whoever held them.
        q.release_leases(&[queued[1], queued[2]]).await.unwrap();
        let f = q.claim_due(10, &room(), 60_000, "node-f").await.unwrap();
        assert_eq!(ids(&f), [queued[0], queued[1], queued[2]], "{}", h.name);
    }
}

/// Fairness: each webhook gets at most its room (less what is in flight, nothing when
/// closed), the oldest rows first, `limit` in all; a disabled webhook's pending rows are
/// cancelled and stay cancelled when an attempt in flight reports.
#[tokio::test]
async fn claims_share_room_between_webhooks() {
    for h in backends("claims_share_room_between_webhooks").await {
        let defs = h.hooks.webhooks();
        defs.create_webhook(&webhook("hook1", "https://example.com/1"))
            .await
            .unwrap();
        defs.create_webhook(&webhook("hook2", "https://example.com/2"))
            .await
            .unwrap();
        let mut one = Vec::new();
        for _ in 0..5 {
            one.push(queue_one(&h.hooks, "hook1").await.0);
        }
        let mut two = Vec::new();
        for _ in 0..2 {
            two.push(queue_one(&h.hooks, "hook2").await.0);
        }
        let q = h.hooks.deliveries();
        assert!(
            q.claim_due(0, &room(), 60_000, "n")
                .await
                .unwrap()
                .is_empty()
        );
        let two_each = Room {
            per_webhook: 2,
            ..Default::default()
        };
        let c = q.claim_due(3, &two_each, 60_000, "n").await.unwrap();
        assert_eq!(ids(&c), [one[0], one[1], two[0]], "{}", h.name);
        assert_eq!(c[2].webhook, "hook2");

        let busy = Room {
            per_webhook: 2,
            busy: [("hook1".to_owned(), 1)].into(),
            closed: ["hook2".to_owned()].into(),
        };
        let c = q.claim_due(10, &busy, 60_000, "n").await.unwrap();
        assert_eq!(ids(&c), [one[2]], "{}", h.name);

        // Disabling hook2 cancels its pending rows, leased or not; the attempt in flight
        // reports a success and the row stays cancelled.
        let mut off = webhook("hook2", "https://example.com/2");
        off.status = WebhookStatus::Disabled;
        defs.update_webhook(&off).await.unwrap();
        assert_eq!(
            q.delivery_counts().await.unwrap().get("cancelled"),
            Some(&2),
            "{}",
            h.name
        );
        let in_flight = AttemptRecord {
            delivery_id: two[0],
            webhook: "hook2".into(),
            event_id: String::new(),
            attempt: 1,
            ..Default::default()
        };
        q.record_attempts(&[(in_flight, Outcome::Delivered)])
            .await
            .unwrap();
        let counts = q.delivery_counts().await.unwrap();
        assert_eq!(counts.get("cancelled"), Some(&2), "{}: {counts:?}", h.name);
        assert_eq!(counts.get("delivered"), None, "{}: {counts:?}", h.name);
        let c = q.claim_due(10, &room(), 60_000, "n").await.unwrap();
        assert_eq!(ids(&c), [one[3], one[4]], "{}", h.name);
    }
}

/// Pings: written leased to the sending node and never claimed; only a ping whose node died
/// (lease expired, or the node's own at its start) is failed; the attempt shows in history.
#[tokio::test]
async fn pings_are_leased_to_their_sender() {
    for h in backends("pings_are_leased_to_their_sender").await {
        let mut off = webhook("hook1", "https://example.com/1");
        off.status = WebhookStatus::Disabled;
        h.hooks.webhooks().create_webhook(&off).await.unwrap();
        let q = h.hooks.deliveries();
        let ping = |ev: &str, owner: &str, lease: i64| {
            let (q, ev, owner) = (q, ev.to_owned(), owner.to_owned());
            async move {
                q.create_ping("hook1", &ev, b"{}", PayloadFormat::Acr, &owner, lease)
                    .await
                    .unwrap()
            }
        };
        let before = now_ms();
        let p1 = ping("ev-1", "node-a", 60_000).await;
        let leases = q.delivery_leases().await.unwrap();
        assert_eq!(leases.len(), 1, "{}", h.name);
        assert_eq!((leases[0].0, leases[0].1.as_str()), (p1, "node-a"));
        assert!(leases[0].2 >= before + 60_000, "{}", h.name);
        assert!(
            q.claim_due(10, &room(), 60_000, "node-b")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(q.fail_abandoned_pings().await.unwrap(), 0, "{}", h.name);
        assert_eq!(q.renew_leases(&[p1], "node-b", 1000).await.unwrap(), 0);
        assert_eq!(q.renew_leases(&[p1], "node-a", 1000).await.unwrap(), 1);

        ping("ev-2", "node-b", -1).await;
        assert_eq!(q.fail_abandoned_pings().await.unwrap(), 1, "{}", h.name);
        ping("ev-3", "node-c", 60_000).await;
        assert_eq!(q.recover_deliveries("node-c").await.unwrap(), 0);
        assert_eq!(
            q.delivery_counts().await.unwrap().get("failed"),
            Some(&2),
            "{}: the dead nodes' pings failed",
            h.name
        );
        assert!(q.has_delivery("hook1", "ev-1").await.unwrap());

        let sent = AttemptRecord {
            delivery_id: p1,
            webhook: "hook1".into(),
            event_id: "ev-1".into(),
            attempt: 1,
            started_at: now_ms(),
            duration_ms: 3,
            request_uri: "https://example.com/***".into(),
            request_headers: BTreeMap::from([("Content-Type".into(), "application/json".into())]),
            status_code: Some(204),
            reason: Some("No Content".into()),
            response_headers: BTreeMap::from([("X-Seen".into(), "1".into())]),
            response_body: None,
            error: None,
        };
        q.record_attempts(&[(sent, Outcome::Delivered)])
            .await
            .unwrap();
        let history = q.list_history("hook1", None, 10).await.unwrap();
        assert_eq!(history.len(), 1, "{}", h.name);
        let e = &history[0];
        assert_eq!(
            (e.action.as_str(), e.outcome.as_str()),
            ("ping", "delivered")
        );
        assert_eq!(e.attempt.event_id, "ev-1");
        assert_eq!(e.attempt.status_code, Some(204));
        assert_eq!(e.attempt.reason.as_deref(), Some("No Content"));
        assert_eq!(
            e.attempt.response_headers.get("X-Seen").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            e.attempt
                .request_headers
                .get("Content-Type")
                .map(String::as_str),
            Some("application/json"),
            "{}",
            h.name
        );
        assert!(q.delivery_leases().await.unwrap().is_empty(), "{}", h.name);
    }
}

/// Redelivery starts a new round (attempt numbers continue), never touches a pending row,
/// and without an event takes only failed ones; pruning drops old history and finished
/// deliveries, never a pending one.
#[tokio::test]
async fn redelivery_rounds_and_pruning() {
    for h in backends("redelivery_rounds_and_pruning").await {
        h.hooks
            .webhooks()
            .create_webhook(&webhook("hook1", "https://example.com/1"))
            .await
            .unwrap();
        let q = h.hooks.deliveries();
        let (id, ev) = queue_one(&h.hooks, "hook1").await;
        let first = q.claim_due(10, &room(), 60_000, "n").await.unwrap();
        assert_eq!(ids(&first), [id]);
        assert_eq!(
            (
                first[0].attempt,
                first[0].round_attempt,
                first[0].max_attempts
            ),
            (1, 1, Some(1)),
            "{}",
            h.name
        );
        q.record_attempts(&[(attempt(&first[0], 500), Outcome::Failed)])
            .await
            .unwrap();
        assert_eq!(q.redeliver("hook1", Some(&ev)).await.unwrap(), 1);
        assert_eq!(
            q.redeliver("hook1", Some(&ev)).await.unwrap(),
            0,
            "{}: a pending delivery is not redelivered",
            h.name
        );
        assert_eq!(q.redeliver("hook1", Some("unknown")).await.unwrap(), 0);
        let second = q.claim_due(10, &room(), 60_000, "n").await.unwrap();
        assert_eq!(
            (second[0].attempt, second[0].round_attempt),
            (2, 1),
            "{}: a new round",
            h.name
        );
        q.record_attempts(&[(
            attempt(&second[0], 503),
            Outcome::Retry(now_ms() + 3_600_000),
        )])
        .await
        .unwrap();
        assert_eq!(q.redeliver("hook1", None).await.unwrap(), 0, "{}", h.name);
        assert!(
            q.claim_due(10, &room(), 60_000, "n")
                .await
                .unwrap()
                .is_empty()
        );

        // A second delivery, delivered; then everything older than now is pruned.
        let (id2, ev2) = queue_one(&h.hooks, "hook1").await;
        let c = q.claim_due(10, &room(), 60_000, "n").await.unwrap();
        assert_eq!(ids(&c), [id2]);
        q.record_attempts(&[(attempt(&c[0], 200), Outcome::Delivered)])
            .await
            .unwrap();
        assert_eq!(q.list_history("hook1", None, 10).await.unwrap().len(), 3);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        q.prune_history(now_ms()).await.unwrap();
        assert!(
            q.list_history("hook1", None, 10).await.unwrap().is_empty(),
            "{}",
            h.name
        );
        let counts = q.delivery_counts().await.unwrap();
        assert_eq!(counts.get("pending"), Some(&1), "{}: {counts:?}", h.name);
        assert_eq!(counts.get("delivered"), None, "{}: {counts:?}", h.name);
        assert!(q.has_delivery("hook1", &ev).await.unwrap());
        assert!(!q.has_delivery("hook1", &ev2).await.unwrap(), "{}", h.name);
    }
}

/// Webhook names are case-insensitive; signing secrets rotate with a grace period and are
/// forgotten after it; a delete takes the queue and the history with it, and an attempt in
/// flight for a deleted webhook is dropped without failing its batch.
#[tokio::test]
async fn webhook_signing_names_and_delete() {
    for h in backends("webhook_signing_names_and_delete").await {
        let defs = h.hooks.webhooks();
        let mut w = webhook("Hook1", "https://example.com/1");
        let (old, new) = ("whsec_b2xkLXNlY3JldA==", "whsec_bmV3LXNlY3JldA==");
        w.signing = Signing {
            enabled: true,
            secret: Some(old.into()),
            previous: None,
        };
        defs.create_webhook(&w).await.unwrap();
        assert!(
            matches!(
                defs.create_webhook(&webhook("hook1", "https://x")).await,
                Err(StoreError::Conflict)
            ),
            "{}: names are case-insensitive",
            h.name
        );
        assert_eq!(defs.get_webhook("HOOK1").await.unwrap().unwrap(), w);

        let until = now_ms() + 86_400_000;
        let got = defs
            .rotate_signing_secret("hook1", new, until)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.signing.secret.as_deref(), Some(new), "{}", h.name);
        assert_eq!(got.signing.previous, Some((old.to_owned(), until)));
        assert_eq!(defs.get_webhook("hook1").await.unwrap().unwrap(), got);
        // An update never puts a replaced secret back.
        defs.update_webhook(&w).await.unwrap();
        let read = defs.get_webhook("hook1").await.unwrap().unwrap();
        assert_eq!(read.signing.secret.as_deref(), Some(new), "{}", h.name);
        assert!(
            defs.rotate_signing_secret("nope", new, until)
                .await
                .unwrap()
                .is_none()
        );
        let got = defs
            .rotate_signing_secret("hook1", old, 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.signing.previous, None, "{}", h.name);
        defs.rotate_signing_secret("hook1", new, now_ms() + 1)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(
            defs.forget_expired_signing_secrets().await.unwrap(),
            1,
            "{}",
            h.name
        );
        assert_eq!(defs.forget_expired_signing_secrets().await.unwrap(), 0);
        let mut unsigned = defs.get_webhook("hook1").await.unwrap().unwrap();
        unsigned.signing.enabled = false;
        defs.update_webhook(&unsigned).await.unwrap();
        assert!(
            defs.rotate_signing_secret("hook1", old, until)
                .await
                .unwrap()
                .is_none(),
            "{}: no rotation while signing is off",
            h.name
        );
        assert_eq!(
            defs.get_webhook("hook1")
                .await
                .unwrap()
                .unwrap()
                .signing
                .secret
                .as_deref(),
            Some(new),
            "{}: the secret is kept while signing is off",
            h.name
        );

        let q = h.hooks.deliveries();
        let (_, ev) = queue_one(&h.hooks, "Hook1").await;
        let c = q.claim_due(10, &room(), 60_000, "n").await.unwrap();
        assert_eq!(c.len(), 1, "{}", h.name);
        q.record_attempts(&[(attempt(&c[0], 500), Outcome::Retry(now_ms() - 1))])
            .await
            .unwrap();
        let c = q.claim_due(10, &room(), 60_000, "n").await.unwrap();
        assert_eq!(q.list_history("Hook1", None, 10).await.unwrap().len(), 1);
        assert!(defs.delete_webhook("HOOK1").await.unwrap(), "{}", h.name);
        q.record_attempts(&[(attempt(&c[0], 200), Outcome::Delivered)])
            .await
            .unwrap();
        assert!(!q.has_delivery("Hook1", &ev).await.unwrap(), "{}", h.name);
        assert!(q.list_history("Hook1", None, 10).await.unwrap().is_empty());
        assert!(q.delivery_counts().await.unwrap().is_empty(), "{}", h.name);
        assert!(defs.list_webhooks().await.unwrap().is_empty());
    }
}

/// PostgreSQL only (one process owns a SQLite store): another node hears every write of a
/// webhook definition (it reads its snapshot again) and every delivery put back in the queue
/// (its dispatcher wakes), and reads what the first node wrote.
#[tokio::test]
async fn other_nodes_hear_webhook_and_queue_changes() {
    let hear = |n: &Arc<tokio::sync::Notify>, what: &str| {
        let (n, what) = (n.clone(), what.to_owned());
        async move {
            // A guard against a hang, not a timing assertion: a missed notification fails.
            tokio::time::timeout(std::time::Duration::from_secs(30), n.notified())
                .await
                .unwrap_or_else(|_| panic!("the other node did not hear: {what}"));
        }
    };
    for (a, b) in backends_with_second_node("other_nodes_hear_webhook_and_queue_changes").await {
        let Some(b) = b else { continue };
        // Each node's listener fires every signal once when it starts listening.
        hear(&b.hooks.webhooks_changed, "listening").await;
        hear(&b.hooks.outbox_signal, "listening").await;

        let defs = a.hooks.webhooks();
        let mut w = webhook("hook1", "https://example.com/1?token=s3cret");
        w.signing.enabled = true;
        w.signing.secret = Some("whsec_b2xkLXNlY3JldA==".into());
        defs.create_webhook(&w).await.unwrap();
        hear(&b.hooks.webhooks_changed, "create").await;
        assert_eq!(
            b.hooks.webhooks().get_webhook("hook1").await.unwrap(),
            Some(w.clone())
        );
        w.service_uri = "https://example.com/2".into();
        defs.update_webhook(&w).await.unwrap();
        hear(&b.hooks.webhooks_changed, "update").await;
        defs.rotate_signing_secret("hook1", "whsec_bmV3LXNlY3JldA==", now_ms() + 1)
            .await
            .unwrap()
            .unwrap();
        hear(&b.hooks.webhooks_changed, "rotate").await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(defs.forget_expired_signing_secrets().await.unwrap(), 1);
        hear(&b.hooks.webhooks_changed, "forget expired secrets").await;

        let (id, _) = queue_one(&a.hooks, "hook1").await;
        hear(&b.hooks.outbox_signal, "redeliver").await;
        let c = b
            .hooks
            .deliveries()
            .claim_due(10, &room(), 60_000, "node-b")
            .await
            .unwrap();
        assert_eq!(ids(&c), [id]);
        a.hooks.deliveries().release_leases(&[id]).await.unwrap();
        hear(&b.hooks.outbox_signal, "release").await;

        assert!(defs.delete_webhook("hook1").await.unwrap());
        hear(&b.hooks.webhooks_changed, "delete").await;
        assert!(b.hooks.webhooks().list_webhooks().await.unwrap().is_empty());
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
        Finished::AlreadyStored => blobs.remove_upload(&id).await.unwrap(),
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

// ---- attributes, quarantine, policies and identities, also across nodes -------------------

/// Two nodes over one database: for PostgreSQL, two stores (each with its own data directory)
/// on one fresh database; for SQLite, which one process owns, two bundles of one store.
async fn two_nodes(test: &str) -> Vec<(Handles, Handles)> {
    let dir = tempfile::tempdir().unwrap();
    let store = wharf_store::Store::open(dir.path(), &Default::default())
        .await
        .unwrap_or_else(|e| panic!("sqlite: opening the store: {e}"));
    let bundle = |store: &wharf_store::Store, name, keep: Box<dyn std::any::Any + Send>| Handles {
        name,
        registry: store.registry_store(),
        hooks: store.hook_store(),
        identities: store.identity_store(),
        _keep: keep,
    };
    let mut out = vec![(
        bundle(&store, "sqlite", Box::new(store.clone())),
        bundle(&store, "sqlite", Box::new((store.clone(), dir))),
    )];
    if std::env::var("WHARF_TEST_POSTGRES").is_ok_and(|v| v == "1") {
        let url = fresh_postgres_database().await;
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let opts = wharf_store::StoreOptions {
                blob_store: shared_blob_store(&url),
                database: Some(url.clone()),
                database_max_connections: 8,
                secret_key: Some(base64_key()),
                ..Default::default()
            };
            let store = wharf_store::Store::open(dir.path(), &opts)
                .await
                .unwrap_or_else(|e| panic!("postgres: opening the store: {e}"));
            nodes.push(bundle(&store, "postgres", Box::new((store.clone(), dir))));
        }
        let b = nodes.pop().unwrap();
        let a = nodes.pop().unwrap();
        out.push((a, b));
    }
    eprintln!(
        "{test}: running on {}",
        out.iter()
            .map(|(a, _)| a.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

/// An image manifest body naming `layer` (SQLite reads a quarantined image's blobs from its
/// body, PostgreSQL from the references the push records: both see this one).
fn image_body(layer: &Digest, salt: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"salt":"{salt}","layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
    )
}

fn held_push(tags: &[&str]) -> String {
    serde_json::json!({"tags": tags, "id": "req-1", "host": "registry.test", "useragent": null})
        .to_string()
}

/// A quarantined push is held back: the manifest is stored `Quarantined`, its tags are left
/// out of listings and its blobs out of pulls for those who may not read quarantined images,
/// and its push event is not queued. A release to `Passed` queues the held-back push (built
/// from what the push held) in the release's transaction, once; `Failed` queues nothing and
/// keeps it held, and a later `Passed` releases it.
#[tokio::test]
async fn quarantine_holds_back_and_a_release_queues_the_push() {
    use wharf_store::ManifestPatch;
    use wharf_store::attrs::Release;
    for h in backends("quarantine_holds_back_and_a_release_queues_the_push").await {
        let (meta, attrs, hooks) = (&h.registry.meta, h.registry.attributes(), &h.registry.hooks);
        h.hooks
            .webhooks()
            .create_webhook(&webhook("hook1", "https://example.com/1"))
            .await
            .unwrap();
        hooks.attach(Arc::new(Everyone(vec!["hook1".into()])));
        let r = repo("quarantine/app");
        let layer = push_blob(&h, &r, b"layer").await;
        let pushed = push_event(&r, "v1");
        let mut m = manifest(&r, &image_body(&layer, "1"), &["v1"], &[(layer.clone(), 5)]);
        m.quarantine = Some(held_push(&["v1"]));
        assert_eq!(
            meta.put_manifest(&m, std::slice::from_ref(&pushed), hooks)
                .await
                .unwrap(),
            0,
            "{}: the push is held back",
            h.name
        );
        assert!(
            !h.hooks
                .deliveries()
                .has_delivery("hook1", &pushed.id)
                .await
                .unwrap()
        );
        let a = attrs
            .manifest(&r, &m.digest)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            a.quarantine_state.as_deref(),
            Some("Quarantined"),
            "{}",
            h.name
        );
        assert_eq!(a.tags, ["v1"]);
        assert!(attrs.any_quarantined(), "{}", h.name);
        assert!(
            attrs.blob_quarantined(&r, &layer).await.unwrap(),
            "{}",
            h.name
        );
        assert!(
            meta.list_tags(&r, None, None, false)
                .await
                .unwrap()
                .unwrap()
                .is_empty(),
            "{}: hidden from who may not read quarantined images",
            h.name
        );
        assert_eq!(
            meta.list_tags(&r, None, None, true).await.unwrap().unwrap(),
            ["v1"]
        );
        let rr = &r;
        let listed = |reader| async move {
            attrs
                .tags(rr, true, reader)
                .await
                .unwrap()
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
        };
        assert!(listed(false).await.is_empty(), "{}", h.name);
        assert_eq!(listed(true).await, ["v1"], "{}", h.name);
        assert_eq!(
            attrs.tags(&r, false, false).await.unwrap().unwrap().len(),
            1
        );

        // Released: the held push is queued, built from what the push held.
        // Each release raises a fresh event; the closure records what it was given and the
        // event's id.
        let seen = std::sync::Mutex::new(Vec::<(Release, String)>::new());
        let release = |rel: &Release| {
            let ev = push_event(&r, "v1");
            seen.lock().unwrap().push((rel.clone(), ev.id.clone()));
            vec![ev]
        };
        let passed = ManifestPatch {
            quarantine_state: Some("Passed".into()),
            quarantine_details: Some("{\"scan\":\"clean\"}".into()),
            ..Default::default()
        };
        let (a, queued) = attrs
            .update_manifest(&r, &m.digest, passed.clone(), hooks, &release)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(queued, 1, "{}: the held-back push is queued", h.name);
        assert_eq!(a.quarantine_state.as_deref(), Some("Passed"));
        assert_eq!(
            a.quarantine_details.as_deref(),
            Some("{\"scan\":\"clean\"}")
        );
        {
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 1, "{}", h.name);
            assert_eq!(seen[0].0.digest, m.digest);
            assert_eq!(seen[0].0.size, m.body.len() as i64);
            let held: serde_json::Value =
                serde_json::from_str(seen[0].0.held.as_deref().unwrap()).unwrap();
            assert_eq!(held["tags"], serde_json::json!(["v1"]), "{}", h.name);
            assert!(
                h.hooks
                    .deliveries()
                    .has_delivery("hook1", &seen[0].1)
                    .await
                    .unwrap(),
                "{}",
                h.name
            );
        }
        assert!(
            !h.hooks
                .deliveries()
                .has_delivery("hook1", &pushed.id)
                .await
                .unwrap()
        );
        assert!(
            !attrs.blob_quarantined(&r, &layer).await.unwrap(),
            "{}",
            h.name
        );
        assert_eq!(
            meta.list_tags(&r, None, None, false)
                .await
                .unwrap()
                .unwrap(),
            ["v1"]
        );
        // Released once: passing it again queues nothing.
        let (_, queued) = attrs
            .update_manifest(&r, &m.digest, passed.clone(), hooks, &release)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(queued, 0, "{}", h.name);
        assert_eq!(seen.lock().unwrap().len(), 1, "{}", h.name);

        // Failed: nothing is queued and the push stays held; a later pass releases it.
        let layer2 = push_blob(&h, &r, b"other").await;
        let mut m2 = manifest(
            &r,
            &image_body(&layer2, "2"),
            &["v2"],
            &[(layer2.clone(), 5)],
        );
        m2.quarantine = Some(held_push(&["v2"]));
        assert_eq!(
            meta.put_manifest(&m2, &[push_event(&r, "v2")], hooks)
                .await
                .unwrap(),
            0
        );
        let failed = ManifestPatch {
            quarantine_state: Some("Failed".into()),
            ..Default::default()
        };
        let (a, queued) = attrs
            .update_manifest(&r, &m2.digest, failed, hooks, &release)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(queued, 0, "{}: a failed scan announces nothing", h.name);
        assert_eq!(a.quarantine_state.as_deref(), Some("Failed"));
        assert_eq!(seen.lock().unwrap().len(), 1, "{}", h.name);
        assert!(attrs.any_quarantined(), "{}", h.name);
        assert!(
            attrs.blob_quarantined(&r, &layer2).await.unwrap(),
            "{}",
            h.name
        );
        assert_eq!(
            meta.list_tags(&r, None, None, false)
                .await
                .unwrap()
                .unwrap(),
            ["v1"],
            "{}",
            h.name
        );
        // Neither a quarantined nor a failed manifest is a retention candidate.
        let stale = attrs.stale_untagged(now_ms() + 60_000).await.unwrap();
        assert!(stale.is_empty(), "{}: {stale:?}", h.name);
        let (_, queued) = attrs
            .update_manifest(&r, &m2.digest, passed, hooks, &release)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            queued, 1,
            "{}: passed after failing, the push goes out",
            h.name
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{}", h.name);
        assert_eq!(seen[1].0.digest, m2.digest);
        assert!(
            h.hooks
                .deliveries()
                .has_delivery("hook1", &seen[1].1)
                .await
                .unwrap(),
            "{}",
            h.name
        );

        // Unknown repository: None; unknown manifest: Some(None).
        let other = Digest::of(Algorithm::Sha256, b"none");
        assert!(
            attrs
                .update_manifest(
                    &repo("nope"),
                    &m.digest,
                    ManifestPatch::default(),
                    hooks,
                    &release
                )
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            attrs
                .update_manifest(&r, &other, ManifestPatch::default(), hooks, &release)
                .await
                .unwrap()
                .unwrap()
                .is_none(),
            "{}",
            h.name
        );
    }
}

/// A manifest's own locks: a write lock refuses a push of it again and its delete, a list
/// lock leaves it out of listings, and the retention candidates are the untagged, unlocked,
/// stale manifests. The `/acr/v1` reads report counts, tags and flags.
#[tokio::test]
async fn manifest_attributes_and_locks() {
    use wharf_store::{FlagsPatch, ManifestPatch, RepoPatch};
    for h in backends("manifest_attributes_and_locks").await {
        let (meta, attrs, hooks) = (&h.registry.meta, h.registry.attributes(), &h.registry.hooks);
        let r = repo("attrs/app");
        let layer = push_blob(&h, &r, b"layer").await;
        let m1 = manifest(
            &r,
            &image_body(&layer, "1"),
            &["v1", "latest"],
            &[(layer.clone(), 5)],
        );
        let m2 = manifest(&r, &image_body(&layer, "2"), &[], &[(layer.clone(), 5)]);
        meta.put_manifest(&m1, &[], hooks).await.unwrap();
        meta.put_manifest(&m2, &[], hooks).await.unwrap();
        let nothing = |_: &wharf_store::attrs::Release| Vec::new();

        let a = attrs.repository(&r).await.unwrap().unwrap();
        assert_eq!((a.manifest_count, a.tag_count), (2, 2), "{}", h.name);
        assert!(a.updated_at >= a.created_at);
        let all = attrs.manifests(&r, false, &[]).await.unwrap().unwrap();
        let digests: Vec<&str> = all.iter().map(|m| m.digest.as_str()).collect();
        assert_eq!(
            digests,
            [m1.digest.to_string(), m2.digest.to_string()],
            "{}: oldest first",
            h.name
        );
        assert_eq!(all[0].tags, ["latest", "v1"], "{}", h.name);
        assert!(
            all[0].body.is_empty(),
            "{}: bodies only of the types asked for",
            h.name
        );
        let with_bodies = attrs
            .manifests(&r, false, &["application/vnd.oci.image.manifest.v1+json"])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(with_bodies[0].body, m1.body, "{}", h.name);
        assert!(
            attrs
                .manifests(&repo("nope"), false, &[])
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            attrs
                .manifest(&repo("nope"), &m1.digest)
                .await
                .unwrap()
                .is_none()
        );

        // The untagged one is a retention candidate once stale, unless locked.
        let stale: Vec<String> = attrs
            .stale_untagged(now_ms() + 60_000)
            .await
            .unwrap()
            .into_iter()
            .map(|s| format!("{}@{}", s.repo, s.digest))
            .collect();
        assert_eq!(stale, [format!("attrs/app@{}", m2.digest)], "{}", h.name);
        assert!(
            attrs.stale_untagged(0).await.unwrap().is_empty(),
            "{}",
            h.name
        );

        let lock = ManifestPatch {
            flags: FlagsPatch {
                write_enabled: Some(false),
                list_enabled: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        let (a, queued) = attrs
            .update_manifest(&r, &m2.digest, lock, hooks, &nothing)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(queued, 0);
        assert!(!a.flags.write_enabled && !a.flags.list_enabled && a.flags.read_enabled);
        assert!(attrs.any_locks(), "{}", h.name);
        assert!(
            attrs
                .stale_untagged(now_ms() + 60_000)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            h.name
        );
        let listed = attrs.manifests(&r, true, &[]).await.unwrap().unwrap();
        assert_eq!(
            listed.len(),
            1,
            "{}: a list lock hides it from listings",
            h.name
        );
        let mut again = m2.clone();
        again.tags = vec![tag("v2")];
        assert!(
            matches!(
                meta.put_manifest(&again, &[], hooks).await,
                Err(StoreError::Disallowed)
            ),
            "{}",
            h.name
        );
        assert!(
            attrs.tag(&r, &tag("v2")).await.unwrap().unwrap().is_none(),
            "{}",
            h.name
        );
        assert!(
            matches!(
                meta.delete_manifest(&r, &m2.digest, hooks, &|_| Vec::new())
                    .await,
                Err(StoreError::Disallowed)
            ),
            "{}",
            h.name
        );

        // A delete lock on a tag keeps its manifest (which the delete would untag).
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
        assert!(!t.flags.delete_enabled, "{}", h.name);
        assert!(
            matches!(
                meta.delete_manifest(&r, &m1.digest, hooks, &|_| Vec::new())
                    .await,
                Err(StoreError::Disallowed)
            ),
            "{}",
            h.name
        );
        // Teleport and the repository's own flags; an unknown repository is None.
        let a = attrs
            .update_repository(
                &r,
                RepoPatch {
                    teleport_enabled: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.teleport_enabled, Some(true), "{}", h.name);
        assert!(a.flags.write_enabled && a.flags.delete_enabled);
        assert!(
            attrs
                .update_repository(&repo("nope"), RepoPatch::default())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            attrs
                .update_tag(&repo("nope"), &tag("v1"), FlagsPatch::default())
                .await
                .unwrap()
                .is_none()
        );
        // Unlocked again, the manifest goes.
        let unlock = ManifestPatch {
            flags: FlagsPatch {
                write_enabled: Some(true),
                ..Default::default()
            },
            ..Default::default()
        };
        attrs
            .update_manifest(&r, &m2.digest, unlock, hooks, &nothing)
            .await
            .unwrap();
        assert!(
            meta.delete_manifest(&r, &m2.digest, hooks, &|_| Vec::new())
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// What one node changes, another sees at once: locks, quarantine, policies, identities. A
/// node never answers from memory what another node may have changed.
#[tokio::test]
async fn attribute_changes_are_seen_by_every_node() {
    use wharf_store::{FlagsPatch, RepoPatch};
    for (a, b) in two_nodes("attribute_changes_are_seen_by_every_node").await {
        let r = repo("nodes/app");
        let layer = push_blob(&a, &r, b"layer").await;
        let m1 = manifest(&r, &image_body(&layer, "1"), &["v1"], &[(layer.clone(), 5)]);
        b.registry
            .meta
            .put_manifest(&m1, &[], &b.registry.hooks)
            .await
            .unwrap();
        // Read by b first (a cache would keep this answer).
        assert!(b.registry.attributes().repo_writable(&r).await.unwrap());
        assert!(b.registry.attributes().repo_readable(&r).await.unwrap());
        assert!(
            !b.registry
                .policies()
                .get()
                .await
                .unwrap()
                .quarantine_enabled
        );

        let lock = RepoPatch {
            flags: FlagsPatch {
                write_enabled: Some(false),
                read_enabled: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        a.registry
            .attributes()
            .update_repository(&r, lock)
            .await
            .unwrap()
            .unwrap();
        let attrs = b.registry.attributes();
        assert!(attrs.any_locks(), "{}", b.name);
        assert!(!attrs.repo_writable(&r).await.unwrap(), "{}", b.name);
        assert!(!attrs.repo_readable(&r).await.unwrap(), "{}", b.name);
        let m2 = manifest(&r, &image_body(&layer, "2"), &["v2"], &[(layer.clone(), 5)]);
        assert!(
            matches!(
                b.registry
                    .meta
                    .put_manifest(&m2, &[], &b.registry.hooks)
                    .await,
                Err(StoreError::Disallowed)
            ),
            "{}",
            b.name
        );

        a.registry
            .policies()
            .update(wharf_store::PoliciesPatch {
                quarantine_enabled: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            b.registry
                .policies()
                .get()
                .await
                .unwrap()
                .quarantine_enabled,
            "{}",
            b.name
        );

        // A manifest quarantined through one node is held back on the other.
        a.registry
            .attributes()
            .update_repository(
                &r,
                RepoPatch {
                    flags: FlagsPatch {
                        write_enabled: Some(true),
                        read_enabled: Some(true),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut q = manifest(&r, &image_body(&layer, "3"), &["v3"], &[(layer.clone(), 5)]);
        q.quarantine = Some(held_push(&["v3"]));
        a.registry
            .meta
            .put_manifest(&q, &[], &a.registry.hooks)
            .await
            .unwrap();
        assert!(attrs.any_quarantined(), "{}", b.name);
        assert_eq!(
            b.registry
                .meta
                .list_tags(&r, None, None, false)
                .await
                .unwrap()
                .unwrap(),
            ["v1"],
            "{}",
            b.name
        );

        // Identities: a scope map in use cannot be deleted from either node.
        let map = ScopeMapRow {
            name: "Pullers".into(),
            description: String::new(),
            actions: vec!["repositories/*/content/read".into()],
            created_at: now_ms(),
        };
        assert!(
            a.identities.put_scope_map(&map).await.unwrap(),
            "{}",
            a.name
        );
        let mut renamed = map.clone();
        renamed.name = "PULLERS".into();
        renamed.description = "read".into();
        assert!(
            !b.identities.put_scope_map(&renamed).await.unwrap(),
            "{}: names are case-insensitive",
            b.name
        );
        let token = TokenRow {
            name: "ci".into(),
            scope_map: "pullers".into(),
            enabled: true,
            passwords: Vec::new(),
            created_at: now_ms(),
        };
        assert!(a.identities.put_token(&token).await.unwrap());
        assert!(
            matches!(
                b.identities.delete_scope_map("pullers").await,
                Err(StoreError::Conflict)
            ),
            "{}",
            b.name
        );
        assert_eq!(
            b.identities
                .scope_map("pullers")
                .await
                .unwrap()
                .unwrap()
                .description,
            "read"
        );
        assert!(
            b.identities.token("CI").await.unwrap().is_some(),
            "{}",
            b.name
        );
        assert!(b.identities.delete_token("ci").await.unwrap());
        assert!(
            a.identities.delete_scope_map("pullers").await.unwrap(),
            "{}",
            a.name
        );
        assert!(!b.identities.delete_scope_map("pullers").await.unwrap());
    }
}

/// Nodes starting together over a new database initialise the settings once: exactly one of
/// them is told it did (and prints the credentials it made), and every node reads its values.
#[tokio::test]
async fn settings_are_initialised_once_across_nodes() {
    for (a, b) in two_nodes("settings_are_initialised_once_across_nodes").await {
        let (x, y) = tokio::join!(
            a.identities
                .init_settings(&[("admin", "from-a"), ("initialized", "true")]),
            b.identities
                .init_settings(&[("admin", "from-b"), ("initialized", "true")]),
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x ^ y, "{}: exactly one initialises ({x}, {y})", a.name);
        let winner = if x { "from-a" } else { "from-b" };
        for n in [&a, &b] {
            assert_eq!(
                n.identities.setting("admin").await.unwrap().as_deref(),
                Some(winner)
            );
        }
        b.identities
            .set_settings(&[("admin", "rotated")])
            .await
            .unwrap();
        assert_eq!(
            a.identities.setting("admin").await.unwrap().as_deref(),
            Some("rotated")
        );
    }
}

/// Policy patches: fields left out keep their value; only a retention change stamps the
/// retention time.
#[tokio::test]
async fn policy_patches() {
    use wharf_store::PoliciesPatch;
    for h in backends("policy_patches").await {
        let p = h.registry.policies();
        let d = p.get().await.unwrap();
        assert_eq!(d, wharf_store::RegistryPolicies::default(), "{}", h.name);
        let q = p
            .update(PoliciesPatch {
                quarantine_enabled: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(q.quarantine_enabled);
        assert_eq!(
            q.retention_updated_at, None,
            "{}: no retention change",
            h.name
        );
        let r = p
            .update(PoliciesPatch {
                retention_enabled: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(r.quarantine_enabled && r.retention_enabled, "{}", h.name);
        assert_eq!(r.retention_days, 7);
        assert!(r.retention_updated_at.is_some());
        let again = p
            .update(PoliciesPatch {
                quarantine_enabled: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            again.retention_updated_at, r.retention_updated_at,
            "{}",
            h.name
        );
        assert!(again.retention_enabled && !again.quarantine_enabled);
        let days = p
            .update(PoliciesPatch {
                retention_days: Some(30),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(days.retention_days, 30);
        assert!(days.retention_enabled, "{}", h.name);
        assert_eq!(p.get().await.unwrap(), days, "{}", h.name);
    }
}

/// Two nodes releasing one quarantined manifest at once queue its held-back push once.
#[tokio::test]
async fn a_release_from_two_nodes_at_once_queues_the_push_once() {
    use wharf_store::ManifestPatch;
    use wharf_store::attrs::Release;
    for (a, b) in two_nodes("a_release_from_two_nodes_at_once_queues_the_push_once").await {
        a.hooks
            .webhooks()
            .create_webhook(&webhook("hook1", "https://example.com/1"))
            .await
            .unwrap();
        for n in [&a, &b] {
            n.registry
                .hooks
                .attach(Arc::new(Everyone(vec!["hook1".into()])));
        }
        let r = repo("release/app");
        let layer = push_blob(&a, &r, b"layer").await;
        for round in 0..5 {
            let salt = round.to_string();
            let mut m = manifest(
                &r,
                &image_body(&layer, &salt),
                &[&salt],
                &[(layer.clone(), 5)],
            );
            m.quarantine = Some(held_push(&[&salt]));
            a.registry
                .meta
                .put_manifest(&m, &[push_event(&r, &salt)], &a.registry.hooks)
                .await
                .unwrap();
            let calls = std::sync::atomic::AtomicUsize::new(0);
            let release = |_: &Release| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                vec![push_event(&r, "released")]
            };
            let passed = || ManifestPatch {
                quarantine_state: Some("Passed".into()),
                ..Default::default()
            };
            let (x, y) = tokio::join!(
                a.registry.attributes().update_manifest(
                    &r,
                    &m.digest,
                    passed(),
                    &a.registry.hooks,
                    &release
                ),
                b.registry.attributes().update_manifest(
                    &r,
                    &m.digest,
                    passed(),
                    &b.registry.hooks,
                    &release
                ),
            );
            let queued = x.unwrap().unwrap().unwrap().1 + y.unwrap().unwrap().unwrap().1;
            assert_eq!(queued, 1, "{}: round {round}", a.name);
            assert_eq!(
                calls.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{}",
                a.name
            );
        }
        let counts = a.hooks.deliveries().delivery_counts().await.unwrap();
        assert_eq!(counts.get("pending"), Some(&5), "{}: {counts:?}", a.name);
    }
}
