//! Webhook definitions, the delivery queue and the delivery history.
//!
//! The queue is the `deliveries` table (DESIGN invariant 4): a worker claims due rows by
//! setting `lease_until`, so rows claimed by a process that died come back when the lease
//! runs out. Attempt results are written in batches, one transaction per batch, so the
//! history costs one fsync per batch rather than one per delivery.

use std::collections::BTreeMap;

use sqlx::Row;
use wharf_core::{Scope, WebhookAction, WebhookStatus};

use crate::meta::now_ms;
use crate::outbox::{DEFAULT_MAX_ATTEMPTS, HookSnapshot, insert_delivery};
use crate::{Store, StoreError};

/// A webhook definition as stored, secrets included. Only the management layer's get-config
/// may show `service_uri` and header values.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    pub name: String,
    pub service_uri: String,
    pub custom_headers: BTreeMap<String, String>,
    pub actions: Vec<WebhookAction>,
    pub status: WebhookStatus,
    pub scope: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub webhook: String,
    pub event_id: String,
    /// The number of this attempt (1 for the first).
    pub attempt: i64,
    pub max_attempts: i64,
    pub body: Vec<u8>,
    pub service_uri: String,
    pub custom_headers: BTreeMap<String, String>,
}

/// What happened to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Failed; try again at this time (unix ms).
    Retry(i64),
    /// Failed for good.
    Failed,
}

impl Outcome {
    fn state(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry(_) => "pending",
            Outcome::Failed => "failed",
        }
    }
}

/// One attempt, as recorded in the history.
#[derive(Debug, Clone, Default)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub webhook: String,
    pub event_id: String,
    pub attempt: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    /// The request URI with its secret parts masked.
    pub request_uri: String,
    /// Request headers as sent, custom header values masked.
    pub request_headers: BTreeMap<String, String>,
    pub status_code: Option<i64>,
    pub reason: Option<String>,
    pub response_headers: BTreeMap<String, String>,
    pub response_body: Option<String>,
    /// Why no response came (timeout, connection refused), in words safe to show.
    pub error: Option<String>,
}

/// A history entry for list-events: the attempt plus the event content.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub attempt: AttemptRecord,
    pub outcome: String,
    pub body: Vec<u8>,
    pub action: String,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

fn from_json<T: serde::de::DeserializeOwned + Default>(s: Option<String>) -> T {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn row_to_record(r: &sqlx::sqlite::SqliteRow) -> Result<WebhookRecord, StoreError> {
    let actions: Vec<String> = from_json(r.get("actions"));
    let actions = actions
        .iter()
        .map(|a| a.parse::<WebhookAction>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StoreError::Corrupt("bad webhook action in database".into()))?;
    let status: String = r.get("status");
    Ok(WebhookRecord {
        name: r.get("name"),
        service_uri: r.get("service_uri"),
        custom_headers: from_json(r.get("custom_headers")),
        actions,
        status: status
            .parse()
            .map_err(|_| StoreError::Corrupt("bad webhook status in database".into()))?,
        scope: r.get("scope"),
        location: r.get("location"),
        tags: from_json(r.get("tags")),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

impl Store {
    /// Rebuilds the in-memory snapshot of enabled webhooks of this region.
    pub async fn reload_hooks(&self) -> Result<(), StoreError> {
        let hooks = self
            .list_webhooks()
            .await?
            .into_iter()
            .filter(|w| w.status == WebhookStatus::Enabled && w.location == self.region)
            .filter_map(|w| {
                Some(HookSnapshot {
                    scope: Scope::parse(&w.scope).ok()?,
                    name: w.name,
                    actions: w.actions,
                    location: w.location,
                })
            })
            .collect();
        self.hooks.replace(hooks);
        Ok(())
    }

    pub async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        let actions: Vec<&str> = w.actions.iter().map(|a| a.as_str()).collect();
        let res = sqlx::query(
            "INSERT INTO webhooks (name, service_uri, custom_headers, actions, status, scope, \
             location, tags, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&w.name)
        .bind(&w.service_uri)
        .bind(json(&w.custom_headers))
        .bind(json(&actions))
        .bind(w.status.as_str())
        .bind(&w.scope)
        .bind(&w.location)
        .bind(json(&w.tags))
        .bind(w.created_at)
        .bind(w.updated_at)
        .execute(&self.meta.write)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict);
        }
        self.reload_hooks().await
    }

    /// Replaces a webhook's mutable fields. Disabling it cancels its pending deliveries in the
    /// same transaction.
    pub async fn update_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        let actions: Vec<&str> = w.actions.iter().map(|a| a.as_str()).collect();
        let mut tx = self.meta.write.begin().await?;
        let res = sqlx::query(
            "UPDATE webhooks SET service_uri = ?, custom_headers = ?, actions = ?, status = ?, \
             scope = ?, tags = ?, updated_at = ? WHERE name = ?",
        )
        .bind(&w.service_uri)
        .bind(json(&w.custom_headers))
        .bind(json(&actions))
        .bind(w.status.as_str())
        .bind(&w.scope)
        .bind(json(&w.tags))
        .bind(w.updated_at)
        .bind(&w.name)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if w.status == WebhookStatus::Disabled {
            cancel_pending(&mut tx, &w.name).await?;
        }
        tx.commit().await?;
        self.reload_hooks().await
    }

    pub async fn get_webhook(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM webhooks WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.meta.read)
            .await?;
        row.as_ref().map(row_to_record).transpose()
    }

    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhooks ORDER BY name")
            .fetch_all(&self.meta.write)
            .await?;
        rows.iter().map(row_to_record).collect()
    }

    /// Deletes a webhook with its queue and history. Returns false if it did not exist.
    pub async fn delete_webhook(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.meta.write.begin().await?;
        let res = sqlx::query("DELETE FROM webhooks WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM attempts WHERE webhook = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM deliveries WHERE webhook = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.reload_hooks().await?;
        Ok(res.rows_affected() > 0)
    }

    /// Claims up to `limit` due deliveries, skipping webhooks in `busy` (at their concurrency
    /// cap) and taking at most `per_webhook` rows of any one webhook. Rows whose webhook is
    /// gone or disabled are cancelled instead of claimed.
    pub async fn claim_due(
        &self,
        limit: usize,
        per_webhook: &(dyn Fn(&str) -> usize + Sync),
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = now_ms();
        let mut tx = self.meta.write.begin().await?;
        let rows = sqlx::query(
            "SELECT d.id, d.webhook, d.event_id, d.attempts, d.max_attempts, e.body, \
             w.service_uri, w.custom_headers, w.status \
             FROM deliveries d JOIN events e ON e.id = d.event_id \
             LEFT JOIN webhooks w ON w.name = d.webhook \
             WHERE d.state = 'pending' AND d.next_attempt_at <= ? \
             AND (d.lease_until IS NULL OR d.lease_until < ?) \
             ORDER BY d.next_attempt_at LIMIT ?",
        )
        .bind(now)
        .bind(now)
        .bind((limit * 4) as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut taken: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for r in rows {
            let id: i64 = r.get(0);
            let status: Option<String> = r.get(8);
            if status.as_deref() != Some("enabled") {
                sqlx::query(
                    "UPDATE deliveries SET state = 'cancelled', updated_at = ? WHERE id = ?",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                continue;
            }
            if out.len() >= limit {
                continue;
            }
            let webhook: String = r.get(1);
            let n = taken.entry(webhook.clone()).or_default();
            if *n >= per_webhook(&webhook) {
                continue;
            }
            *n += 1;
            sqlx::query("UPDATE deliveries SET lease_until = ? WHERE id = ?")
                .bind(now + lease_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            out.push(Claimed {
                delivery_id: id,
                webhook,
                event_id: r.get(2),
                attempt: r.get::<i64, _>(3) + 1,
                max_attempts: r.get(4),
                body: r.get(5),
                service_uri: r.get(6),
                custom_headers: from_json(r.get(7)),
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records attempts and moves their deliveries on, all in one transaction.
    pub async fn record_attempts(
        &self,
        batch: &[(AttemptRecord, Outcome)],
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.meta.write.begin().await?;
        for (a, outcome) in batch {
            sqlx::query(
                "INSERT INTO attempts (delivery_id, webhook, event_id, attempt, started_at, \
                 duration_ms, request_uri, request_headers, status_code, reason, \
                 response_headers, response_body, error, outcome) \
                 VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            )
            .bind(a.delivery_id)
            .bind(&a.webhook)
            .bind(&a.event_id)
            .bind(a.attempt)
            .bind(a.started_at)
            .bind(a.duration_ms)
            .bind(&a.request_uri)
            .bind(json(&a.request_headers))
            .bind(a.status_code)
            .bind(&a.reason)
            .bind(json(&a.response_headers))
            .bind(&a.response_body)
            .bind(&a.error)
            .bind(outcome.state())
            .execute(&mut *tx)
            .await?;
            let next = match outcome {
                Outcome::Retry(at) => *at,
                _ => now,
            };
            // A delivery cancelled meanwhile (webhook disabled) stays cancelled.
            sqlx::query(
                "UPDATE deliveries SET state = CASE WHEN state = 'cancelled' THEN 'cancelled' \
                 ELSE ? END, attempts = ?, next_attempt_at = ?, lease_until = NULL, \
                 updated_at = ? WHERE id = ?",
            )
            .bind(outcome.state())
            .bind(a.attempt)
            .bind(next)
            .bind(now)
            .bind(a.delivery_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes a ping event and its delivery, already leased to the caller, which sends it at
    /// once. Pings are tried once.
    pub async fn create_ping(
        &self,
        webhook: &str,
        event_id: &str,
        body: &[u8],
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut tx = self.meta.write.begin().await?;
        sqlx::query("INSERT INTO events (id, action, body, created_at) VALUES (?, 'ping', ?, ?)")
            .bind(event_id)
            .bind(body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let id = insert_delivery(&mut tx, webhook, event_id, 1, now).await?;
        sqlx::query("UPDATE deliveries SET lease_until = ? WHERE id = ?")
            .bind(now + 600_000)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// History of a webhook, newest attempt first.
    pub async fn list_history(
        &self,
        webhook: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.*, e.body, e.action FROM attempts a JOIN events e ON e.id = a.event_id \
             WHERE a.webhook = ? ORDER BY a.id DESC LIMIT ? OFFSET ?",
        )
        .bind(webhook)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.meta.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| HistoryEntry {
                attempt: AttemptRecord {
                    delivery_id: r.get("delivery_id"),
                    webhook: r.get("webhook"),
                    event_id: r.get("event_id"),
                    attempt: r.get("attempt"),
                    started_at: r.get("started_at"),
                    duration_ms: r.get("duration_ms"),
                    request_uri: r.get("request_uri"),
                    request_headers: from_json(r.get("request_headers")),
                    status_code: r.get("status_code"),
                    reason: r.get("reason"),
                    response_headers: from_json(r.get("response_headers")),
                    response_body: r.get("response_body"),
                    error: r.get("error"),
                },
                outcome: r.get("outcome"),
                body: r.get("body"),
                action: r.get("action"),
            })
            .collect())
    }

    /// Puts deliveries of a webhook back in the queue, due now: one event's, or (event None)
    /// every failed one. Attempt numbers continue; the event id and bytes stay the same.
    pub async fn redeliver(
        &self,
        webhook: &str,
        event_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let q = match event_id {
            Some(_) => {
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, lease_until = NULL, \
                 max_attempts = attempts + ?, updated_at = ? \
                 WHERE webhook = ? AND event_id = ? AND state != 'pending'"
            }
            None => {
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, lease_until = NULL, \
                 max_attempts = attempts + ?, updated_at = ? \
                 WHERE webhook = ? AND state = 'failed' AND ? IS NULL"
            }
        };
        let res = sqlx::query(q)
            .bind(now)
            .bind(DEFAULT_MAX_ATTEMPTS)
            .bind(now)
            .bind(webhook)
            .bind(event_id)
            .execute(&self.meta.write)
            .await?;
        Ok(res.rows_affected())
    }

    /// Whether a webhook has a delivery row for an event (to tell "unknown event" apart).
    pub async fn has_delivery(&self, webhook: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM deliveries WHERE webhook = ? AND event_id = ? LIMIT 1")
                .bind(webhook)
                .bind(event_id)
                .fetch_optional(&self.meta.read)
                .await?
                .is_some(),
        )
    }

    /// Deletes history older than `cutoff_ms`: attempts, finished deliveries, and events no
    /// delivery refers to any more.
    pub async fn prune_history(&self, cutoff_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.meta.write.begin().await?;
        sqlx::query("DELETE FROM attempts WHERE started_at < ?")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM deliveries WHERE state != 'pending' AND updated_at < ?")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM events WHERE created_at < ? AND NOT EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts deliveries by state, for tests, benchmarks and metrics.
    pub async fn delivery_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
            .fetch_all(&self.meta.read)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

async fn cancel_pending(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    webhook: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE deliveries SET state = 'cancelled', updated_at = ? WHERE webhook = ? AND state = 'pending'",
    )
    .bind(now_ms())
    .bind(webhook)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
