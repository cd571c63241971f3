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

/// Writes the events that at least one webhook wants, and a pending delivery row per webhook.
/// Returns how many deliveries were queued.
///
/// The snapshot picks the candidate webhooks; each delivery row is then written only if its
/// webhook still exists and is enabled *in this transaction*. The snapshot is refreshed after a
/// webhook change commits, so without that check a push committing in between could queue a
/// delivery for a webhook just deleted (a row nothing would ever claim) or just disabled.
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
            if insert_delivery(&mut *conn, &h.name, &ev.id, None, now, true)
                .await?
                .is_some()
            {
                queued += 1;
            }
        }
    }
    Ok(queued)
}

/// Inserts a pending delivery, due now. `max_attempts` is per round (`None`: the retry schedule
/// decides). With `require_enabled`, nothing is written unless the webhook exists and is
/// enabled, and `None` is returned.
pub(crate) async fn insert_delivery(
    conn: &mut SqliteConnection,
    webhook: &str,
    event_id: &str,
    max_attempts: Option<i64>,
    now: i64,
    require_enabled: bool,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query(
        "INSERT INTO deliveries (webhook, event_id, state, attempts, round_start, max_attempts, \
         next_attempt_at, created_at, updated_at) \
         SELECT ?, ?, 'pending', 0, 0, ?, ?, ?, ? \
         WHERE NOT ? OR EXISTS (SELECT 1 FROM webhooks WHERE name = ? AND status = 'enabled') \
         RETURNING id",
    )
    .bind(webhook)
    .bind(event_id)
    .bind(max_attempts)
    .bind(now)
    .bind(now)
    .bind(now)
    .bind(require_enabled)
    .bind(webhook)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| r.get(0)))
}
