//! The transactional outbox: registry changes hand their events here inside their own
//! transaction, and one delivery row is written per matching webhook (DESIGN invariant 3).
//!
//! Matching reads an in-memory snapshot of the enabled webhooks, refreshed whenever a webhook
//! is written, so a push does not scan the webhook table. A webhook created while a push is in
//! flight may or may not see that push; one deleted or disabled meanwhile gets no row, because
//! each delivery row is written only if its webhook is still enabled in the push's transaction.

use std::sync::{Arc, RwLock};

use sqlx::{Row, SqliteConnection};
use wharf_core::{Scope, WebhookAction};

use crate::StoreError;
use crate::hooks::Claimed;
use crate::meta::now_ms;

/// An event ready for the outbox: rendered once, so every attempt sends the same bytes.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: String,
    pub action: WebhookAction,
    pub body: Vec<u8>,
    pub repository: String,
    /// Tags the event is about, for scope matching (one for a push by tag; the tags the
    /// manifest had for a delete).
    pub match_tags: Vec<String>,
    /// Whether the event also counts as a tag-less event (push by digest, delete).
    pub tagless: bool,
}

/// What the outbox needs to know of one webhook.
#[derive(Clone)]
pub struct HookSnapshot {
    pub name: String,
    pub actions: Vec<WebhookAction>,
    pub scope: Scope,
    pub location: String,
    /// Where and how to send (secrets, kept in memory only for sending).
    pub service_uri: String,
    pub custom_headers: std::collections::BTreeMap<String, String>,
    pub signing: crate::hooks::Signing,
    pub payload_format: wharf_core::PayloadFormat,
}

impl std::fmt::Debug for HookSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the service URI or header values (DESIGN invariant 6).
        f.debug_struct("HookSnapshot")
            .field("name", &self.name)
            .field("actions", &self.actions)
            .field("scope", &self.scope)
            .field("location", &self.location)
            .field(
                "custom_headers",
                &crate::hooks::masked_headers(&self.custom_headers),
            )
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

/// The enabled webhooks of this server's region, shared by every request, and the registry id
/// their deliveries name.
#[derive(Debug, Clone, Default)]
pub struct WebhookCache {
    inner: Arc<RwLock<Arc<Vec<HookSnapshot>>>>,
    registry_id: Arc<str>,
    source: Arc<wharf_core::payload::Source>,
}

impl WebhookCache {
    pub fn new(registry_id: String, source: wharf_core::payload::Source) -> Self {
        WebhookCache {
            inner: Default::default(),
            registry_id: registry_id.into(),
            source: Arc::new(source),
        }
    }

    /// This registry node (`source` of the Event Grid and CloudEvents data).
    pub fn source(&self) -> &wharf_core::payload::Source {
        &self.source
    }

    /// The registry's ARM id (the Event Grid `topic`, the CloudEvents `source`).
    pub fn registry_id(&self) -> &str {
        &self.registry_id
    }

    pub fn snapshot(&self) -> Arc<Vec<HookSnapshot>> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn replace(&self, hooks: Vec<HookSnapshot>) {
        let new = Arc::new(hooks);
        match self.inner.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    /// Whether any enabled webhook could want this action at all: lets the registry skip
    /// building events nobody subscribed to.
    pub fn any_wants(&self, action: WebhookAction) -> bool {
        self.snapshot().iter().any(|h| h.actions.contains(&action))
    }
}

/// What [`enqueue`] wrote.
#[derive(Debug, Default)]
pub struct Enqueued {
    /// Deliveries left for the dispatcher's poll (no fast lane attached).
    pub queued: usize,
    /// Deliveries already leased to the attached dispatcher, to hand over once the
    /// transaction has committed (never before: no delivery for an uncommitted change).
    pub fast: Vec<Claimed>,
}

/// Writes the events that at least one webhook wants, and a pending delivery row per webhook.
/// When a dispatcher is attached to `lane`, the rows are inserted already leased to it and
/// returned for handing over in memory, so a fresh event costs no claim transaction.
pub async fn enqueue(
    conn: &mut SqliteConnection,
    events: &[OutboxEvent],
    hooks: &WebhookCache,
    lane: &FastLane,
) -> Result<Enqueued, StoreError> {
    let mut out = Enqueued::default();
    if events.is_empty() {
        return Ok(out);
    }
    let hooks_cache = hooks;
    let hooks = hooks.snapshot();
    let now = now_ms();
    let lease = lane.lease();
    for ev in events {
        let targets: Vec<&HookSnapshot> = hooks.iter().filter(|h| h.wants(ev)).collect();
        if targets.is_empty() {
            continue;
        }
        sqlx::query("INSERT INTO events (id, action, body, created_at) VALUES (?, ?, ?, ?)")
            .bind(&ev.id)
            .bind(ev.action.as_str())
            .bind(&ev.body)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        // One statement for every matching webhook, and only for those still enabled inside
        // this transaction (a webhook disabled or deleted meanwhile gets nothing).
        let marks = vec!["?"; targets.len()].join(",");
        let sql = format!(
            "INSERT INTO deliveries (webhook, event_id, state, attempts, round_start, \
             max_attempts, next_attempt_at, lease_until, lease_owner, created_at, updated_at, \
             payload_format) \
             SELECT name, ?, 'pending', 0, 0, NULL, ?, ?, ?, ?, ?, payload_format FROM webhooks \
             WHERE status = 'enabled' AND name IN ({marks}) RETURNING id, webhook, payload_format"
        );
        let mut q = sqlx::query(&sql)
            .bind(&ev.id)
            .bind(now)
            .bind(lease.as_ref().map(|(_, ms)| now + ms))
            .bind(lease.as_ref().map(|(owner, _)| owner.as_str()))
            .bind(now)
            .bind(now);
        for h in &targets {
            q = q.bind(&h.name);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        if lease.is_none() {
            out.queued += rows.len();
            continue;
        }
        for r in rows {
            let name: String = r.get(1);
            let Some(h) = targets.iter().find(|h| h.name.eq_ignore_ascii_case(&name)) else {
                continue;
            };
            // The format the row recorded (this transaction's view of the webhook), as the
            // queue's claim would read it, so both paths render the same bytes.
            let format: String = r.get(2);
            let format = format.parse().unwrap_or(h.payload_format);
            out.fast.push(
                Claimed {
                    delivery_id: r.get(0),
                    webhook: h.name.clone(),
                    event_id: ev.id.clone(),
                    attempt: 1,
                    round_attempt: 1,
                    max_attempts: None,
                    body: ev.body.clone(),
                    content_type: "application/json",
                    format_headers: Vec::new(),
                    service_uri: h.service_uri.clone(),
                    custom_headers: h.custom_headers.clone(),
                    signing: h.signing.clone(),
                }
                .render(format, &h.location, hooks_cache.registry_id()),
            );
        }
    }
    Ok(out)
}

/// The in-memory hand-over from committed transactions to this process's dispatcher.
#[derive(Debug, Default)]
pub struct FastLane {
    inner: std::sync::Mutex<Option<Attached>>,
}

#[derive(Debug)]
struct Attached {
    owner: String,
    lease_ms: i64,
    tx: tokio::sync::mpsc::UnboundedSender<Vec<Claimed>>,
}

impl FastLane {
    fn guard(&self) -> std::sync::MutexGuard<'_, Option<Attached>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a dispatcher: from now on new deliveries are leased to `owner` for `lease_ms`
    /// and handed over through the returned receiver.
    pub fn attach(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> tokio::sync::mpsc::UnboundedReceiver<Vec<Claimed>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.guard() = Some(Attached {
            owner: owner.to_owned(),
            lease_ms,
            tx,
        });
        rx
    }

    /// Detaches the dispatcher (shutdown): new deliveries go to the queue for the next start.
    pub fn detach(&self) {
        *self.guard() = None;
    }

    fn lease(&self) -> Option<(String, i64)> {
        self.guard().as_ref().map(|a| (a.owner.clone(), a.lease_ms))
    }

    /// Hands committed deliveries to the dispatcher. If it is gone, the rows stay leased to
    /// this node id: its next start takes them back, another node once the lease runs out.
    pub(crate) fn hand_over(&self, claimed: Vec<Claimed>) {
        if claimed.is_empty() {
            return;
        }
        if let Some(a) = self.guard().as_ref() {
            let _ = a.tx.send(claimed);
        }
    }
}

/// Inserts a pending delivery, due now. `max_attempts` is per round (`None`: the retry schedule
/// decides). With `require_enabled`, nothing is written unless the webhook exists and is
/// enabled, and `None` is returned. `format` is recorded as given: the caller renders the
/// delivery itself and the history must show what it sent.
pub(crate) async fn insert_delivery(
    conn: &mut SqliteConnection,
    webhook: &str,
    event_id: &str,
    max_attempts: Option<i64>,
    now: i64,
    require_enabled: bool,
    format: wharf_core::PayloadFormat,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query(
        "INSERT INTO deliveries (webhook, event_id, state, attempts, round_start, max_attempts, \
         next_attempt_at, created_at, updated_at, payload_format) \
         SELECT ?, ?, 'pending', 0, 0, ?, ?, ?, ?, ? \
         WHERE NOT ? OR EXISTS (SELECT 1 FROM webhooks WHERE name = ? AND status = 'enabled') \
         RETURNING id",
    )
    .bind(webhook)
    .bind(event_id)
    .bind(max_attempts)
    .bind(now)
    .bind(now)
    .bind(now)
    .bind(format.as_str())
    .bind(require_enabled)
    .bind(webhook)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| r.get(0)))
}
