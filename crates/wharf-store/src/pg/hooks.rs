//! Webhook definitions, the delivery queue and the delivery history on PostgreSQL: the same
//! rows and the same answers as `crate::hooks` (`WebhookDefs`, `DeliveryQueue`) on SQLite,
//! whose comments explain the semantics.
//!
//! What differs, and why:
//! - Several nodes share the queue. A claim is one statement that locks each webhook's oldest
//!   due rows with `FOR UPDATE SKIP LOCKED` and leases them in the same statement: nodes
//!   claiming at once never take one row twice and never wait on each other (a row another
//!   claim holds is skipped, not waited for). SQLite instead re-checks each row in its single
//!   writer.
//! - Every write of a webhook definition sends `wharf_webhooks` inside its transaction, so the
//!   other nodes read their snapshot again once it commits. Putting rows back for any node's
//!   claim (redelivery, released and recovered leases) sends `wharf_outbox`.
//! - Multi-row writes bind arrays (`unnest`, `= ANY`) instead of building `IN (?, …)` lists.
//! - Attempt records commit with `synchronous_commit = off`, as SQLite writes them with
//!   `synchronous=NORMAL`: losing the last of them in a power failure costs at most a duplicate
//!   delivery with the same event id, never a lost one.
//! - There is no plaintext-secret migration: this backend has sealed secrets from its start.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use wharf_core::{PayloadFormat, WebhookAction, WebhookStatus};

use super::{CHANNEL_OUTBOX, CHANNEL_WEBHOOKS, Pg, notify};
use crate::StoreError;
use crate::db::now_ms;
use crate::handles::{DeliveryStore, WebhookStore};
use crate::hooks::{
    AttemptRecord, HistoryEntry, Outcome, QueuedDelivery, Room, Signing, WebhookRecord,
};

/// `l`: the deliveries whose ids the array parameter `$n` holds, locked in id order.
/// Statements that update several deliveries (lease renewal and release, attempt records,
/// cancellation) lock them this way first: an UPDATE alone locks rows in whatever order its
/// plan visits them, so two of them over overlapping rows (a renewal and a record of the same
/// node) could each hold a row the other waits for, and PostgreSQL aborts one as a deadlock.
/// `NO KEY UPDATE` is the lock the UPDATE takes anyway, and leaves the foreign-key checks of
/// inserted attempts unblocked.
macro_rules! locked_ids {
    ($n:literal) => {
        concat!(
            "WITH l AS (SELECT id FROM deliveries WHERE id = ANY($",
            $n,
            ") ORDER BY id FOR NO KEY UPDATE) "
        )
    };
}
use crate::seal::Sealer;

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

fn from_json<T: serde::de::DeserializeOwned + Default>(s: Option<String>) -> T {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn payload_format(s: String) -> Result<PayloadFormat, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt("bad payload format in database".into()))
}

/// The delivery state an outcome leaves (as `Outcome::state` on SQLite).
fn outcome_state(o: Outcome) -> &'static str {
    match o {
        Outcome::Delivered => "delivered",
        Outcome::Retry(_) => "pending",
        Outcome::Failed => "failed",
    }
}

fn row_to_record(r: &PgRow, sealer: &Sealer) -> Result<WebhookRecord, StoreError> {
    let actions: Vec<String> = from_json(r.get("actions"));
    let actions = actions
        .iter()
        .map(|a| a.parse::<WebhookAction>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StoreError::Corrupt("bad webhook action in database".into()))?;
    let status: String = r.get("status");
    let uri: String = r.get("service_uri");
    let headers: String = r.get("custom_headers");
    Ok(WebhookRecord {
        name: r.get("name"),
        service_uri: sealer.open(&uri)?,
        custom_headers: from_json(Some(sealer.open(&headers)?)),
        actions,
        status: status
            .parse()
            .map_err(|_| StoreError::Corrupt("bad webhook status in database".into()))?,
        scope: r.get("scope"),
        location: r.get("location"),
        tags: from_json(r.get("tags")),
        signing: row_to_signing(r, sealer)?,
        payload_format: payload_format(r.get("payload_format"))?,
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

/// The signing columns, secrets opened; a previous secret past its grace period is dropped
/// (and never opened), as on SQLite.
fn row_to_signing(r: &PgRow, sealer: &Sealer) -> Result<Signing, StoreError> {
    let secret: Option<String> = r.get("signing_secret");
    let previous: Option<String> = r.get("signing_previous_secret");
    let until: Option<i64> = r.get("signing_previous_until");
    let now = now_ms();
    let previous = match previous.zip(until).filter(|(_, until)| now < *until) {
        Some((p, until)) => Some((sealer.open(&p)?, until)),
        None => None,
    };
    Ok(Signing {
        enabled: r.get("signing_enabled"),
        secret: secret.map(|s| sealer.open(&s)).transpose()?,
        previous,
    })
}

#[derive(Debug)]
pub(crate) struct PgWebhooks {
    pg: Pg,
}

impl PgWebhooks {
    pub(crate) fn new(pg: Pg) -> Self {
        PgWebhooks { pg }
    }

    fn seal_opt(&self, secret: Option<&str>) -> Result<Option<String>, StoreError> {
        secret.map(|s| self.pg.sealer.seal(s)).transpose()
    }
}

#[async_trait]
impl WebhookStore for PgWebhooks {
    async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        let actions: Vec<&str> = w.actions.iter().map(|a| a.as_str()).collect();
        let mut tx = self.pg.pool.begin().await?;
        let res = sqlx::query(
            "INSERT INTO webhooks (name, service_uri, custom_headers, actions, status, scope, \
             location, tags, created_at, updated_at, signing_enabled, signing_secret, \
             payload_format) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&w.name)
        .bind(self.pg.sealer.seal(&w.service_uri)?)
        .bind(self.pg.sealer.seal(&json(&w.custom_headers))?)
        .bind(json(&actions))
        .bind(w.status.as_str())
        .bind(&w.scope)
        .bind(&w.location)
        .bind(json(&w.tags))
        .bind(w.created_at)
        .bind(w.updated_at)
        .bind(w.signing.enabled)
        .bind(self.seal_opt(w.signing.secret.as_deref())?)
        .bind(w.payload_format.as_str())
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            // Nothing written: the transaction rolls back when dropped.
            return Err(StoreError::Conflict);
        }
        notify(&mut tx, CHANNEL_WEBHOOKS).await?;
        tx.commit().await?;
        Ok(())
    }

    /// As on SQLite: of the signing state only `enabled` is replaced, and the secret is stored
    /// only if there is none yet, so an update racing a rotation never puts the replaced
    /// secret back (the UPDATE's row lock orders the two on PostgreSQL too).
    async fn update_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        let actions: Vec<&str> = w.actions.iter().map(|a| a.as_str()).collect();
        let mut tx = self.pg.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE webhooks SET service_uri = $1, custom_headers = $2, actions = $3, \
             status = $4, scope = $5, tags = $6, updated_at = $7, signing_enabled = $8, \
             signing_secret = COALESCE(signing_secret, $9), payload_format = $10 \
             WHERE name = $11",
        )
        .bind(self.pg.sealer.seal(&w.service_uri)?)
        .bind(self.pg.sealer.seal(&json(&w.custom_headers))?)
        .bind(json(&actions))
        .bind(w.status.as_str())
        .bind(&w.scope)
        .bind(json(&w.tags))
        .bind(w.updated_at)
        .bind(w.signing.enabled)
        .bind(self.seal_opt(w.signing.secret.as_deref())?)
        .bind(w.payload_format.as_str())
        .bind(&w.name)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if w.status == WebhookStatus::Disabled {
            cancel_pending(&mut tx, &w.name).await?;
        }
        notify(&mut tx, CHANNEL_WEBHOOKS).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_webhook(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM webhooks WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pg.pool)
            .await?;
        row.as_ref()
            .map(|r| row_to_record(r, &self.pg.sealer))
            .transpose()
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhooks ORDER BY name")
            .fetch_all(&self.pg.pool)
            .await?;
        rows.iter()
            .map(|r| row_to_record(r, &self.pg.sealer))
            .collect()
    }

    /// One statement, as on SQLite: the replaced secret moves over sealed as it is stored.
    async fn rotate_signing_secret(
        &self,
        name: &str,
        new_secret: &str,
        previous_until: i64,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let now = now_ms();
        let keep_previous = previous_until > now;
        let mut tx = self.pg.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE webhooks SET \
             signing_previous_secret = CASE WHEN $1 THEN signing_secret END, \
             signing_previous_until = CASE WHEN $1 THEN $2::BIGINT END, \
             signing_secret = $3, updated_at = $4 \
             WHERE name = $5 AND signing_enabled AND signing_secret IS NOT NULL RETURNING *",
        )
        .bind(keep_previous)
        .bind(previous_until)
        .bind(self.pg.sealer.seal(new_secret)?)
        .bind(now)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let rec = row_to_record(&row, &self.pg.sealer)?;
        notify(&mut tx, CHANNEL_WEBHOOKS).await?;
        tx.commit().await?;
        Ok(Some(rec))
    }

    async fn forget_expired_signing_secrets(&self) -> Result<u64, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE webhooks SET signing_previous_secret = NULL, signing_previous_until = NULL \
             WHERE signing_previous_until IS NOT NULL AND signing_previous_until <= $1",
        )
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            notify(&mut tx, CHANNEL_WEBHOOKS).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn delete_webhook(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM webhooks WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        sqlx::query("DELETE FROM attempts WHERE webhook = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM deliveries WHERE webhook = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if deleted {
            notify(&mut tx, CHANNEL_WEBHOOKS).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

/// Cancels a disabled webhook's pending deliveries, inside the disabling transaction.
async fn cancel_pending(conn: &mut PgConnection, webhook: &str) -> Result<(), StoreError> {
    // In id order, as the other multi-row updates (see `locked_ids!`).
    sqlx::query(
        "WITH l AS (SELECT id FROM deliveries WHERE webhook = $2 AND state = 'pending' \
         ORDER BY id FOR NO KEY UPDATE) \
         UPDATE deliveries d SET state = 'cancelled', updated_at = $1 FROM l \
         WHERE d.id = l.id AND d.state = 'pending'",
    )
    .bind(now_ms())
    .bind(webhook)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pings in state `sending` whose sender is gone: leased by `owner` (its own, at its start),
/// by no one, or with an expired lease (as on SQLite).
async fn fail_abandoned_pings(
    conn: &mut PgConnection,
    owner: Option<&str>,
    now: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE deliveries SET state = 'failed', lease_until = NULL, lease_owner = NULL, \
         updated_at = $1 WHERE state = 'sending' \
         AND (lease_until IS NULL OR lease_until < $1 OR lease_owner = $2)",
    )
    .bind(now)
    .bind(owner)
    .execute(conn)
    .await?
    .rows_affected())
}

#[derive(Debug)]
pub(crate) struct PgDeliveries {
    pg: Pg,
    /// The registry's ARM id, which the history's rendered bodies name.
    registry_id: Arc<str>,
}

impl PgDeliveries {
    pub(crate) fn new(pg: Pg, registry_id: Arc<str>) -> Self {
        PgDeliveries { pg, registry_id }
    }
}

#[async_trait]
impl DeliveryStore for PgDeliveries {
    /// One statement: for every enabled webhook with room, its oldest due rows (at most its
    /// room, through the `deliveries_claim` index) are locked with `SKIP LOCKED`, the oldest
    /// `limit` of them across webhooks are leased, and the rest are unlocked at commit. A row
    /// another node's claim holds is skipped rather than waited for; a row another node
    /// leased and committed meanwhile is re-checked against the conditions when locked, so it
    /// is not taken while its lease lives.
    async fn claim_due(
        &self,
        limit: usize,
        room: &Room,
        lease_ms: i64,
        owner: &str,
    ) -> Result<Vec<QueuedDelivery>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        // The room is computed here from the caller's plain data, as on SQLite; the
        // statement checks again that each webhook is still enabled.
        let hooks = sqlx::query("SELECT name FROM webhooks WHERE status = 'enabled'")
            .fetch_all(&self.pg.pool)
            .await?;
        let mut names = Vec::new();
        let mut rooms = Vec::new();
        for h in hooks {
            let name: String = h.get(0);
            let n = room.of(&name).min(limit);
            if n > 0 {
                names.push(name);
                rooms.push(n as i64);
            }
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "WITH cand AS ( \
               SELECT h.name, c.id, c.next_attempt_at \
               FROM unnest($1::TEXT[], $2::BIGINT[]) AS h(name, room) \
               CROSS JOIN LATERAL ( \
                 SELECT d.id, d.next_attempt_at FROM deliveries d \
                 WHERE d.webhook = h.name AND d.state = 'pending' \
                 AND d.next_attempt_at <= $3 \
                 AND (d.lease_until IS NULL OR d.lease_until < $3) \
                 AND EXISTS (SELECT 1 FROM webhooks w \
                             WHERE w.name = h.name AND w.status = 'enabled') \
                 ORDER BY d.next_attempt_at, d.id LIMIT h.room \
                 FOR UPDATE OF d SKIP LOCKED) c \
               ORDER BY c.next_attempt_at, c.id LIMIT $4) \
             UPDATE deliveries d SET lease_until = $5, lease_owner = $6 \
             FROM cand, events e \
             WHERE d.id = cand.id AND e.id = d.event_id \
             RETURNING d.id, cand.name, d.event_id, d.attempts, d.round_start, \
             d.max_attempts, d.next_attempt_at, e.body, d.payload_format",
        )
        .bind(&names)
        .bind(&rooms)
        .bind(now)
        .bind(limit as i64)
        .bind(now + lease_ms)
        .bind(owner)
        .fetch_all(&self.pg.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let attempts: i64 = r.get(3);
            let round_start: i64 = r.get(4);
            out.push((
                r.get::<i64, _>(6),
                QueuedDelivery {
                    delivery_id: r.get(0),
                    webhook: r.get(1),
                    event_id: r.get(2),
                    attempt: attempts + 1,
                    round_attempt: attempts - round_start + 1,
                    max_attempts: r.get(5),
                    body: r.get(7),
                    format: payload_format(r.get(8))?,
                },
            ));
        }
        // RETURNING has no order: oldest first across webhooks, as on SQLite.
        out.sort_by_key(|(due, c)| (*due, c.delivery_id));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn release_leases(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pg.pool.begin().await?;
        let n = sqlx::query(concat!(
            locked_ids!("1"),
            "UPDATE deliveries d SET lease_until = NULL, lease_owner = NULL FROM l \
             WHERE d.id = l.id"
        ))
        .bind(ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Any node may claim them now.
        if n > 0 {
            notify(&mut tx, CHANNEL_OUTBOX).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn renew_leases(
        &self,
        ids: &[i64],
        owner: &str,
        lease_ms: i64,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(sqlx::query(concat!(
            locked_ids!("3"),
            "UPDATE deliveries d SET lease_until = $1 FROM l WHERE d.id = l.id \
             AND d.lease_owner = $2 AND d.state IN ('pending', 'sending')"
        ))
        .bind(now_ms() + lease_ms)
        .bind(owner)
        .bind(ids)
        .execute(&self.pg.pool)
        .await?
        .rows_affected())
    }

    async fn delivery_leases(&self) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, lease_owner, lease_until FROM deliveries \
             WHERE state IN ('pending', 'sending') AND lease_until IS NOT NULL \
             AND lease_owner IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pg.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// As on SQLite: this node id's own leases and expired ones come back, live leases of
    /// other nodes stay. A row another node is claiming right now is waited for and then
    /// re-checked, so a lease that claim takes is left alone.
    async fn recover_deliveries(&self, owner: &str) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.pg.pool.begin().await?;
        let released = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL \
             WHERE state = 'pending' AND lease_until IS NOT NULL \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $2)",
        )
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        fail_abandoned_pings(&mut tx, Some(owner), now).await?;
        sqlx::query(
            "UPDATE deliveries SET state = 'cancelled', updated_at = $1 \
             WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < $1) \
             AND NOT EXISTS (SELECT 1 FROM webhooks w \
                             WHERE w.name = deliveries.webhook AND w.status = 'enabled')",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Rows back in the queue are any node's to claim.
        if released > 0 {
            notify(&mut tx, CHANNEL_OUTBOX).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn fail_abandoned_pings(&self) -> Result<u64, StoreError> {
        let mut conn = self.pg.pool.acquire().await?;
        fail_abandoned_pings(&mut conn, None, now_ms()).await
    }

    /// One transaction and two statements per batch, whatever its size: the attempts and the
    /// deliveries' new states are bound as arrays.
    async fn record_attempts(&self, batch: &[(AttemptRecord, Outcome)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut ids = Vec::with_capacity(batch.len());
        let mut webhooks = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let mut numbers = Vec::with_capacity(batch.len());
        let mut started = Vec::with_capacity(batch.len());
        let mut durations = Vec::with_capacity(batch.len());
        let mut uris = Vec::with_capacity(batch.len());
        let mut req_headers = Vec::with_capacity(batch.len());
        let mut codes = Vec::with_capacity(batch.len());
        let mut reasons = Vec::with_capacity(batch.len());
        let mut resp_headers = Vec::with_capacity(batch.len());
        let mut resp_bodies = Vec::with_capacity(batch.len());
        let mut errors = Vec::with_capacity(batch.len());
        let mut states = Vec::with_capacity(batch.len());
        let mut nexts = Vec::with_capacity(batch.len());
        for (a, outcome) in batch {
            ids.push(a.delivery_id);
            webhooks.push(a.webhook.as_str());
            events.push(a.event_id.as_str());
            numbers.push(a.attempt);
            started.push(a.started_at);
            durations.push(a.duration_ms);
            uris.push(a.request_uri.as_str());
            req_headers.push(json(&a.request_headers));
            codes.push(a.status_code);
            reasons.push(a.reason.as_deref());
            resp_headers.push(json(&a.response_headers));
            resp_bodies.push(a.response_body.as_deref());
            errors.push(a.error.as_deref());
            states.push(outcome_state(*outcome));
            nexts.push(match outcome {
                Outcome::Retry(at) => *at,
                _ => now,
            });
        }
        let mut tx = self.pg.pool.begin().await?;
        // Bookkeeping, as SQLite's relaxed transaction: a record lost in a power failure costs
        // at most a duplicate delivery.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        sqlx::query(concat!(locked_ids!("1"), "SELECT 1 FROM l"))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        // An attempt whose delivery is gone (its webhook was deleted meanwhile) is not
        // recorded: the batch must not fail on the foreign key, or it would be retried forever.
        sqlx::query(
            "INSERT INTO attempts (delivery_id, webhook, event_id, attempt, started_at, \
             duration_ms, request_uri, request_headers, status_code, reason, \
             response_headers, response_body, error, outcome) \
             SELECT v.delivery_id, v.webhook, v.event_id, v.attempt, v.started_at, \
             v.duration_ms, v.request_uri, v.request_headers, v.status_code, v.reason, \
             v.response_headers, v.response_body, v.error, v.outcome FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], \
             $5::BIGINT[], $6::BIGINT[], $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::TEXT[], \
             $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::TEXT[]) WITH ORDINALITY \
             AS v(delivery_id, webhook, event_id, attempt, started_at, duration_ms, \
             request_uri, request_headers, status_code, reason, response_headers, \
             response_body, error, outcome, n) \
             WHERE EXISTS (SELECT 1 FROM deliveries d \
                           WHERE d.id = v.delivery_id AND d.event_id = v.event_id) \
             ORDER BY v.n",
        )
        .bind(&ids)
        .bind(&webhooks)
        .bind(&events)
        .bind(&numbers)
        .bind(&started)
        .bind(&durations)
        .bind(&uris)
        .bind(&req_headers)
        .bind(&codes)
        .bind(&reasons)
        .bind(&resp_headers)
        .bind(&resp_bodies)
        .bind(&errors)
        .bind(&states)
        .execute(&mut *tx)
        .await?;
        // A delivery cancelled meanwhile (webhook disabled) stays cancelled.
        sqlx::query(
            "UPDATE deliveries SET state = CASE WHEN deliveries.state = 'cancelled' \
             THEN 'cancelled' ELSE v.state END, attempts = v.attempt, \
             next_attempt_at = v.next, lease_until = NULL, lease_owner = NULL, updated_at = $1 \
             FROM unnest($2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[]) \
             AS v(id, state, attempt, next) WHERE deliveries.id = v.id",
        )
        .bind(now)
        .bind(&ids)
        .bind(&states)
        .bind(&numbers)
        .bind(&nexts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// As on SQLite: the ping's delivery is written in state `sending`, which no claim takes,
    /// leased to the sending node `owner`, so only a ping whose node died is failed by others.
    async fn create_ping(
        &self,
        webhook: &str,
        event_id: &str,
        body: &[u8],
        format: PayloadFormat,
        owner: &str,
        lease_ms: i64,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut tx = self.pg.pool.begin().await?;
        sqlx::query(
            "INSERT INTO events (id, action, body, created_at) VALUES ($1, 'ping', $2, $3)",
        )
        .bind(event_id)
        .bind(body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // A disabled webhook can be pinged, so no status check.
        let id: i64 = sqlx::query(
            "INSERT INTO deliveries (webhook, event_id, state, attempts, round_start, \
             max_attempts, next_attempt_at, lease_until, lease_owner, created_at, updated_at, \
             payload_format) \
             VALUES ($1, $2, 'sending', 0, 0, 1, $3, $4, $5, $3, $3, $6) RETURNING id",
        )
        .bind(webhook)
        .bind(event_id)
        .bind(now)
        .bind(now + lease_ms)
        .bind(owner)
        .bind(format.as_str())
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        tx.commit().await?;
        Ok(id)
    }

    async fn list_history(
        &self,
        webhook: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.*, e.body, e.action, d.payload_format, w.location AS hook_location \
             FROM attempts a JOIN events e ON e.id = a.event_id \
             JOIN deliveries d ON d.id = a.delivery_id \
             LEFT JOIN webhooks w ON w.name = a.webhook \
             WHERE a.webhook = $1 AND a.id < $2 ORDER BY a.id DESC LIMIT $3",
        )
        .bind(webhook)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pg.pool)
        .await?;
        rows.iter()
            .map(|r| {
                // The content shown is what was sent: the stored body in the delivery's format.
                let location: Option<String> = r.get("hook_location");
                let body = wharf_core::payload::render(
                    payload_format(r.get("payload_format"))?,
                    r.get("body"),
                    location.as_deref().unwrap_or_default(),
                    &self.registry_id,
                )
                .body;
                Ok(HistoryEntry {
                    id: r.get("id"),
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
                    body,
                    action: r.get("action"),
                })
            })
            .collect()
    }

    async fn redeliver(&self, webhook: &str, event_id: Option<&str>) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.pg.pool.begin().await?;
        // One event's delivery (unless pending already), or every failed one; each starts a
        // new round, attempt numbers continue.
        let n = sqlx::query(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = $1, \
             lease_until = NULL, lease_owner = NULL, round_start = attempts, updated_at = $1 \
             WHERE webhook = $2 AND CASE WHEN $3::TEXT IS NULL THEN state = 'failed' \
             ELSE event_id = $3 AND state <> 'pending' END",
        )
        .bind(now)
        .bind(webhook)
        .bind(event_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            notify(&mut tx, CHANNEL_OUTBOX).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn has_delivery(&self, webhook: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM deliveries WHERE webhook = $1 AND event_id = $2 LIMIT 1")
                .bind(webhook)
                .bind(event_id)
                .fetch_optional(&self.pg.pool)
                .await?
                .is_some(),
        )
    }

    async fn prune_history(&self, cutoff_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pg.pool.begin().await?;
        sqlx::query("DELETE FROM attempts WHERE started_at < $1")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM deliveries WHERE state <> 'pending' AND updated_at < $1")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM events WHERE created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
            .fetch_all(&self.pg.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
