//! The webhook domain the outbox asks about: which webhooks want an event (matching on
//! actions and scope), the in-memory snapshot of the enabled definitions it matches against,
//! and a claimed delivery with the target and secrets it is sent with.
//!
//! The snapshot lives here, not in the store, so webhook secrets sit in the memory of the
//! service that sends with them only. The store's outbox asks it "who wants this event"
//! through [`wharf_store::EventSubscribers`], injected at start-up.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use wharf_core::{PayloadFormat, Scope, WebhookAction, WebhookStatus};
use wharf_store::hooks::{QueuedDelivery, Signing, WebhookRecord, masked_headers};
use wharf_store::{EventSubscribers, OutboxEvent, StoreError, WebhookStore};

/// What matching and sending need to know of one enabled webhook.
#[derive(Clone)]
pub struct HookSnapshot {
    pub name: String,
    pub actions: Vec<WebhookAction>,
    pub scope: Scope,
    pub location: String,
    /// Where and how to send (secrets, kept in memory only for sending).
    pub service_uri: String,
    pub custom_headers: BTreeMap<String, String>,
    pub signing: Signing,
    pub payload_format: PayloadFormat,
}

impl std::fmt::Debug for HookSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the service URI or header values (DESIGN invariant 6).
        f.debug_struct("HookSnapshot")
            .field("name", &self.name)
            .field("actions", &self.actions)
            .field("scope", &self.scope)
            .field("location", &self.location)
            .field("custom_headers", &masked_headers(&self.custom_headers))
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

impl HookSnapshot {
    pub fn wants(&self, ev: &OutboxEvent) -> bool {
        self.actions.contains(&ev.action)
            && ((ev.tagless && self.scope.matches(&ev.repository, None))
                || ev
                    .match_tags
                    .iter()
                    .any(|t| self.scope.matches(&ev.repository, Some(t))))
    }
}

/// The enabled webhooks, shared by every request and the dispatcher. Matching looks at this
/// server's region only (webhooks fire for their region's events); sending may need any
/// enabled webhook (a redelivery of another region's webhook goes through the queue).
#[derive(Debug, Clone)]
pub struct WebhookCache {
    inner: Arc<RwLock<Arc<Snapshot>>>,
    region: Arc<str>,
    /// Held from a reload's read to its replace, so reloads apply in the order they read.
    /// Two at once (a webhook write's own reload beside one another node's notification
    /// started) could otherwise finish out of order: the older read would replace the newer
    /// and take back a webhook whose creation was already acknowledged, and pushes would
    /// miss it until the next reload.
    reloading: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Snapshot {
    /// Every enabled webhook, by name as stored.
    all: BTreeMap<String, Arc<HookSnapshot>>,
    /// Those of this region: the ones events are matched against.
    region: Vec<Arc<HookSnapshot>>,
}

impl WebhookCache {
    pub fn new(region: &str) -> Self {
        WebhookCache {
            inner: Default::default(),
            region: region.into(),
            reloading: Default::default(),
        }
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The enabled webhook of this name, as last loaded.
    pub fn get(&self, name: &str) -> Option<Arc<HookSnapshot>> {
        self.current().all.get(name).cloned()
    }

    /// Whether a webhook of this name is enabled, as last loaded.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.current().all.contains_key(name)
    }

    /// Rebuilds the snapshot from the stored definitions: at start-up and after every write
    /// of a webhook.
    /// Once it returns, the snapshot holds every write committed before it was called, and no
    /// reload still running can put an older list back.
    pub async fn reload(&self, webhooks: &dyn WebhookStore) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let records = webhooks.list_webhooks().await?;
        self.replace(records);
        Ok(())
    }

    fn replace(&self, records: Vec<WebhookRecord>) {
        let mut snap = Snapshot::default();
        for w in records {
            if w.status != WebhookStatus::Enabled {
                continue;
            }
            // Validated when written; a scope that no longer parses matches nothing.
            let Ok(scope) = Scope::parse(&w.scope) else {
                continue;
            };
            let h = Arc::new(HookSnapshot {
                scope,
                name: w.name,
                actions: w.actions,
                location: w.location,
                service_uri: w.service_uri,
                custom_headers: w.custom_headers,
                signing: w.signing,
                payload_format: w.payload_format,
            });
            if h.location == *self.region {
                snap.region.push(h.clone());
            }
            snap.all.insert(h.name.clone(), h);
        }
        let new = Arc::new(snap);
        match self.inner.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }
}

impl EventSubscribers for WebhookCache {
    fn wanted_by(&self, ev: &OutboxEvent) -> Vec<String> {
        self.current()
            .region
            .iter()
            .filter(|h| h.wants(ev))
            .map(|h| h.name.clone())
            .collect()
    }

    fn any_wants(&self, action: WebhookAction) -> bool {
        self.current()
            .region
            .iter()
            .any(|h| h.actions.contains(&action))
    }
}

/// A delivery ready for sending: the queue's row, the webhook's target and secrets, and the
/// body in the delivery's format.
#[derive(Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub webhook: String,
    pub event_id: String,
    /// The number of this attempt (1 for the first), counted over the delivery's life.
    pub attempt: i64,
    /// The number of this attempt within the current round: the retry policy's input.
    pub round_attempt: i64,
    /// Attempts allowed per round (1 for a ping); `None`: the retry schedule decides.
    pub max_attempts: Option<i64>,
    /// The bytes to send, already in the delivery's payload format.
    pub body: Vec<u8>,
    /// `Content-Type` of `body`, and the headers its payload format adds (CloudEvents'
    /// binary mode `ce-*` attributes).
    pub content_type: &'static str,
    pub format_headers: Vec<(&'static str, String)>,
    pub service_uri: String,
    pub custom_headers: BTreeMap<String, String>,
    /// The webhook's signing state when the delivery was claimed.
    pub signing: Signing,
}

impl Claimed {
    /// A queued delivery with its webhook's target and secrets, rendered. Deterministic (see
    /// `wharf_core::payload`), so the queue and the fast lane send the same bytes, and every
    /// attempt does.
    pub fn new(d: QueuedDelivery, h: &HookSnapshot, registry_id: &str) -> Self {
        let r = wharf_core::payload::render(d.format, d.body, &h.location, registry_id);
        Claimed {
            delivery_id: d.delivery_id,
            webhook: d.webhook,
            event_id: d.event_id,
            attempt: d.attempt,
            round_attempt: d.round_attempt,
            max_attempts: d.max_attempts,
            body: r.body,
            content_type: r.content_type,
            format_headers: r.headers,
            service_uri: h.service_uri.clone(),
            custom_headers: h.custom_headers.clone(),
            signing: h.signing.clone(),
        }
    }
}

// Hand-written: the secrets (service URI, header values) must not reach a log line even if
// someone logs a claim with `{:?}` (DESIGN invariant 6).
impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("delivery_id", &self.delivery_id)
            .field("webhook", &self.webhook)
            .field("event_id", &self.event_id)
            .field("attempt", &self.attempt)
            .field("service_uri", &"******")
            .field("custom_headers", &masked_headers(&self.custom_headers))
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let headers = BTreeMap::from([("Authorization".to_owned(), "Bearer s3cret".to_owned())]);
        let signing = Signing {
            enabled: true,
            secret: Some("whsec_c2VjcmV0LXMzY3JldA==".into()),
            previous: Some(("whsec_b2xkLXMzY3JldA==".into(), 1)),
        };
        let hook = HookSnapshot {
            name: "hook1".into(),
            actions: vec![WebhookAction::Push],
            scope: Scope::parse("").unwrap(),
            location: "local".into(),
            service_uri: "https://example.com/hook?token=s3cret".into(),
            custom_headers: headers,
            signing,
            payload_format: PayloadFormat::Acr,
        };
        let claimed = Claimed::new(
            QueuedDelivery {
                delivery_id: 1,
                webhook: "hook1".into(),
                event_id: "e".into(),
                attempt: 1,
                round_attempt: 1,
                max_attempts: None,
                body: b"{}".to_vec(),
                format: PayloadFormat::Acr,
            },
            &hook,
            "/subscriptions/x",
        );
        for shown in [format!("{hook:?}"), format!("{claimed:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("whsec_"), "{shown}");
            assert!(shown.contains("enabled: true"), "{shown}");
            assert!(
                shown.contains("Authorization"),
                "header names may show: {shown}"
            );
        }
    }

    /// A webhook store whose first `list_webhooks` reads the definitions at once and then
    /// waits for `gate` before answering: a slow reload that read before a write committed.
    #[derive(Debug, Default)]
    struct SlowFirstList {
        records: std::sync::Mutex<Vec<WebhookRecord>>,
        calls: std::sync::atomic::AtomicUsize,
        gate: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl WebhookStore for SlowFirstList {
        async fn create_webhook(&self, _: &WebhookRecord) -> Result<(), StoreError> {
            unreachable!("not used by reload")
        }
        async fn update_webhook(&self, _: &WebhookRecord) -> Result<(), StoreError> {
            unreachable!("not used by reload")
        }
        async fn get_webhook(&self, _: &str) -> Result<Option<WebhookRecord>, StoreError> {
            unreachable!("not used by reload")
        }
        async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
            let read = self.records.lock().unwrap().clone();
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                self.gate.notified().await;
            }
            Ok(read)
        }
        async fn rotate_signing_secret(
            &self,
            _: &str,
            _: &str,
            _: i64,
        ) -> Result<Option<WebhookRecord>, StoreError> {
            unreachable!("not used by reload")
        }
        async fn forget_expired_signing_secrets(&self) -> Result<u64, StoreError> {
            unreachable!("not used by reload")
        }
        async fn delete_webhook(&self, _: &str) -> Result<bool, StoreError> {
            unreachable!("not used by reload")
        }
    }

    fn record(name: &str) -> WebhookRecord {
        WebhookRecord {
            name: name.into(),
            service_uri: "http://127.0.0.1:9/hook".into(),
            custom_headers: BTreeMap::new(),
            actions: vec![WebhookAction::Push],
            status: WebhookStatus::Enabled,
            scope: String::new(),
            location: "local".into(),
            tags: BTreeMap::new(),
            signing: Signing::default(),
            payload_format: PayloadFormat::Acr,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// The race a PostgreSQL node met at start-up: its listener's first reload read the (empty)
    /// definitions, a webhook was created and its own reload finished, and then the first
    /// reload replaced the snapshot with what it had read: the next push matched no webhook.
    #[tokio::test(flavor = "current_thread")]
    async fn an_older_reload_never_replaces_a_newer_one() {
        let store = Arc::new(SlowFirstList::default());
        let cache = WebhookCache::new("local");
        let older = tokio::spawn({
            let (cache, store) = (cache.clone(), store.clone());
            async move { cache.reload(store.as_ref()).await }
        });
        while store.calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The webhook's creation commits, and the write's own reload runs.
        store.records.lock().unwrap().push(record("hook1"));
        let newer = tokio::spawn({
            let (cache, store) = (cache.clone(), store.clone());
            async move { cache.reload(store.as_ref()).await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        // Now the older reload answers with what it read before the creation.
        store.gate.notify_one();
        older.await.unwrap().unwrap();
        newer.await.unwrap().unwrap();
        assert!(
            cache.is_enabled("hook1"),
            "the created webhook must stay in the snapshot"
        );
        assert_eq!(store.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
