//! The transactional outbox: registry changes hand their events here inside their own
//! transaction, and one delivery row is written per matching webhook (DESIGN invariant 3).
//!
//! Matching reads an in-memory snapshot of the enabled webhooks, refreshed whenever a webhook
//! is written, so a push does not query the webhook table. A webhook created while a push is
//! in flight may or may not see that push; one disabled meanwhile has its rows cancelled by the
//! dispatcher's status check before sending.

use std::sync::{Arc, RwLock};

use sqlx::{Row, SqliteConnection};
use wharf_core::{Scope, WebhookAction};

use crate::StoreError;
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
#[derive(Debug, Clone)]
pub struct HookSnapshot {
    pub name: String,
    pub actions: Vec<WebhookAction>,
    pub scope: Scope,
    pub location: String,
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

/// The enabled webhooks of this server's region, shared by every request.
#[derive(Debug, Clone, Default)]
pub struct WebhookCache {
    inner: Arc<RwLock<Arc<Vec<HookSnapshot>>>>,
}

impl WebhookCache {
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

/// Maximum attempts of an ordinary delivery; pings are tried once.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 8;

/// Writes the events that at least one webhook wants, and a pending delivery row per webhook.
/// Returns how many deliveries were queued.
pub async fn enqueue(
    conn: &mut SqliteConnection,
    events: &[OutboxEvent],
    hooks: &WebhookCache,
) -> Result<usize, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let hooks = hooks.snapshot();
    let now = now_ms();
    let mut queued = 0;
    for ev in events {
        let mut wrote_event = false;
        for h in hooks.iter().filter(|h| h.wants(ev)) {
            if !wrote_event {
                sqlx::query(
                    "INSERT INTO events (id, action, body, created_at) VALUES (?, ?, ?, ?)",
                )
                .bind(&ev.id)
                .bind(ev.action.as_str())
                .bind(&ev.body)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                wrote_event = true;
            }
            insert_delivery(&mut *conn, &h.name, &ev.id, DEFAULT_MAX_ATTEMPTS, now).await?;
            queued += 1;
        }
    }
    Ok(queued)
}

pub(crate) async fn insert_delivery(
    conn: &mut SqliteConnection,
    webhook: &str,
    event_id: &str,
    max_attempts: i64,
    now: i64,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO deliveries (webhook, event_id, state, attempts, max_attempts, next_attempt_at, \
         created_at, updated_at) VALUES (?, ?, 'pending', 0, ?, ?, ?, ?) RETURNING id",
    )
    .bind(webhook)
    .bind(event_id)
    .bind(max_attempts)
    .bind(now)
    .bind(now)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(row.get(0))
}
