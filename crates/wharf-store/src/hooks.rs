//! Webhook definitions, the delivery queue and the delivery history.
//!
//! The queue is the `deliveries` table (DESIGN invariant 4): a worker claims due rows by
//! setting `lease_until` and `lease_owner` (its node id), and renews the leases while it holds
//! the rows, so rows claimed by a node that died come back when the lease runs out, or at once
//! when a node with the same id starts again.
//! Claiming walks the enabled webhooks and takes each one's oldest due rows, up to its free
//! concurrency, so a webhook with a large backlog cannot hide another webhook's rows.
//! Attempt results are written in batches, one transaction per batch, so the history costs one
//! fsync per batch rather than one per delivery.

use std::collections::BTreeMap;

use sqlx::Row;
use wharf_core::{PayloadFormat, WebhookAction, WebhookStatus};

use crate::db::{WriteTx, now_ms};
use crate::seal::Sealer;
use crate::{SqliteStore, StoreError};
use sqlx::SqliteConnection;

/// Attempts written per multi-row statement (14 parameters each, far below SQLite's limit).
const RECORD_CHUNK: usize = 128;
/// Leases renewed per statement.
const RENEW_CHUNK: usize = 512;

/// A webhook definition as stored, secrets included. Only the management layer's get-config
/// may show `service_uri` and header values.
#[derive(Clone, PartialEq)]
pub struct WebhookRecord {
    pub name: String,
    pub service_uri: String,
    pub custom_headers: BTreeMap<String, String>,
    pub actions: Vec<WebhookAction>,
    pub status: WebhookStatus,
    pub scope: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    /// Standard Webhooks signing (Wharf's extension; off by default, so deliveries stay
    /// ACR-identical).
    pub signing: Signing,
    /// How deliveries are shaped (Wharf's extension; ACR's body by default).
    pub payload_format: PayloadFormat,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A webhook's Standard Webhooks signing state. Secrets are `whsec_` + base64 strings, as
/// write-only as the service URI.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Signing {
    pub enabled: bool,
    /// The current secret. Kept while signing is disabled, so enabling it again keeps the
    /// secret the receiver already has.
    pub secret: Option<String>,
    /// The secret the last rotation replaced and until when (unix ms) it signs beside the
    /// current one, so receivers can switch secrets without dropping a delivery.
    pub previous: Option<(String, i64)>,
}

impl Signing {
    /// The secrets an attempt made at `now_ms` is signed with: the current one, then the
    /// previous one while its grace period lasts. Empty when signing is off.
    pub fn active_secrets(&self, now_ms: i64) -> Vec<&str> {
        if !self.enabled {
            return Vec::new();
        }
        let mut out: Vec<&str> = self.secret.iter().map(String::as_str).collect();
        if let Some((old, until)) = &self.previous
            && now_ms < *until
        {
            out.push(old);
        }
        out
    }

    /// When the previous secret stops signing, if it still does at `now_ms`.
    pub fn previous_until(&self, now_ms: i64) -> Option<i64> {
        self.previous
            .as_ref()
            .map(|(_, until)| *until)
            .filter(|until| now_ms < *until)
    }
}

// Never the secrets, whoever logs a record with `{:?}` (DESIGN invariant 6).
impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("enabled", &self.enabled)
            .field("secret", &self.secret.as_ref().map(|_| "******"))
            .field(
                "previous_until",
                &self.previous.as_ref().map(|(_, until)| until),
            )
            .finish()
    }
}

/// A delivery taken from the queue (or handed over fresh by the outbox), leased to the taking
/// node: what to send, without where and how: the webhook service adds the target and its
/// secrets from its own snapshot of the definitions, and renders `body` into `format`.
#[derive(Debug, Clone)]
pub struct QueuedDelivery {
    pub delivery_id: i64,
    pub webhook: String,
    pub event_id: String,
    /// The number of this attempt (1 for the first), counted over the delivery's life.
    pub attempt: i64,
    /// The number of this attempt within the current round (a redelivery starts a new round
    /// and with it the retry schedule): the retry policy's input.
    pub round_attempt: i64,
    /// Attempts allowed per round (1 for a ping); `None`: the retry schedule decides.
    pub max_attempts: Option<i64>,
    /// The stored ACR body of the event.
    pub body: Vec<u8>,
    /// The payload format the delivery row recorded.
    pub format: PayloadFormat,
}

/// Header names with their values masked: what Debug output may show of custom headers.
pub fn masked_headers(h: &BTreeMap<String, String>) -> BTreeMap<&str, &'static str> {
    h.keys().map(|k| (k.as_str(), "******")).collect()
}

// Hand-written Debug impls: the secrets (service URI, header values) must not reach a log line
// even if someone logs one of these with `{:?}` (DESIGN invariant 6).
impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("name", &self.name)
            .field("service_uri", &"******")
            .field("custom_headers", &masked_headers(&self.custom_headers))
            .field("actions", &self.actions)
            .field("status", &self.status)
            .field("scope", &self.scope)
            .field("location", &self.location)
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
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
    /// The attempt's row id: list-events pages by it (newest first).
    pub id: i64,
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

fn row_to_record(
    r: &sqlx::sqlite::SqliteRow,
    sealer: &crate::seal::Sealer,
) -> Result<WebhookRecord, StoreError> {
    let actions: Vec<String> = from_json(r.get("actions"));
    let actions = actions
        .iter()
        .map(|a| a.parse::<WebhookAction>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StoreError::Corrupt("bad webhook action in database".into()))?;
    let status: String = r.get("status");
    Ok(WebhookRecord {
        name: r.get("name"),
        service_uri: sealer.open(r.get("service_uri"))?,
        custom_headers: from_json(Some(sealer.open(r.get("custom_headers"))?)),
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

fn payload_format(s: String) -> Result<PayloadFormat, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt("bad payload format in database".into()))
}

/// The signing columns of a webhook row, secrets opened. A previous secret whose grace period
/// is over is dropped here already (and never opened).
fn row_to_signing(
    r: &sqlx::sqlite::SqliteRow,
    sealer: &crate::seal::Sealer,
) -> Result<Signing, StoreError> {
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

/// Webhook definitions: the narrow handle the webhook service manages them through. Secrets
/// are sealed at rest and opened only on the way out.
#[derive(Debug, Clone)]
pub struct WebhookDefs {
    meta: crate::Meta,
    sealer: Sealer,
}

/// The delivery queue (claims, leases, attempt results) and the delivery history.
#[derive(Debug, Clone)]
pub struct DeliveryQueue {
    meta: crate::Meta,
    /// The registry's ARM id, which the history's rendered bodies name.
    registry_id: std::sync::Arc<str>,
}

impl SqliteStore {
    /// The webhook definitions.
    pub fn webhooks(&self) -> WebhookDefs {
        WebhookDefs {
            meta: self.meta.clone(),
            sealer: self.sealer.clone(),
        }
    }

    /// The delivery queue and history.
    pub fn deliveries(&self) -> DeliveryQueue {
        DeliveryQueue {
            meta: self.meta.clone(),
            registry_id: self.hooks.registry_id().into(),
        }
    }
}

impl WebhookDefs {
    /// Seals the secrets of webhook rows written before secrets were sealed at rest.
    pub(crate) async fn seal_plaintext_webhooks(&self) -> Result<u64, StoreError> {
        let rows = sqlx::query("SELECT name, service_uri, custom_headers FROM webhooks")
            .fetch_all(&self.meta.read)
            .await?;
        let mut tx = WriteTx::begin(&self.meta.write).await?;
        let mut n = 0;
        for r in &rows {
            let (name, uri, headers): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            if Sealer::is_sealed(&uri) && Sealer::is_sealed(&headers) {
                continue;
            }
            sqlx::query("UPDATE webhooks SET service_uri = ?, custom_headers = ? WHERE name = ?")
                .bind(self.sealer.seal(&self.sealer.open(&uri)?)?)
                .bind(self.sealer.seal(&self.sealer.open(&headers)?)?)
                .bind(&name)
                .execute(&mut *tx)
                .await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        let actions: Vec<&str> = w.actions.iter().map(|a| a.as_str()).collect();
        let res = sqlx::query(
            "INSERT INTO webhooks (name, service_uri, custom_headers, actions, status, scope, \
             location, tags, created_at, updated_at, signing_enabled, signing_secret, \
             payload_format) \
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&w.name)
        .bind(self.sealer.seal(&w.service_uri)?)
        .bind(self.sealer.seal(&json(&w.custom_headers))?)
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
        .execute(&mut *crate::db::acquire_write(&self.meta.write).await?)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    /// Replaces a webhook's mutable fields. Disabling it cancels its pending deliveries in the
    /// same transaction.
    ///
    /// Of the signing state only `enabled` is replaced; `w.signing.secret` is stored only if the
    /// webhook has no secret yet (signing enabled for the first time), so an update racing a
    /// rotation can never put the replaced secret back. Rotation has its own statement.
    pub async fn update_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        let actions: Vec<&str> = w.actions.iter().map(|a| a.as_str()).collect();
        let mut tx = WriteTx::begin(&self.meta.write).await?;
        let res = sqlx::query(
            "UPDATE webhooks SET service_uri = ?, custom_headers = ?, actions = ?, status = ?, \
             scope = ?, tags = ?, updated_at = ?, signing_enabled = ?, \
             signing_secret = COALESCE(signing_secret, ?), payload_format = ? WHERE name = ?",
        )
        .bind(self.sealer.seal(&w.service_uri)?)
        .bind(self.sealer.seal(&json(&w.custom_headers))?)
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
            tx.rollback().await;
            return Err(StoreError::NotFound);
        }
        if w.status == WebhookStatus::Disabled {
            cancel_pending(&mut tx, &w.name).await?;
        }
        tx.commit().await
    }

    pub async fn get_webhook(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM webhooks WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.meta.read)
            .await?;
        row.as_ref()
            .map(|r| row_to_record(r, &self.sealer))
            .transpose()
    }

    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhooks ORDER BY name")
            .fetch_all(&mut *crate::db::acquire_write(&self.meta.write).await?)
            .await?;
        rows.iter()
            .map(|r| row_to_record(r, &self.sealer))
            .collect()
    }

    /// Replaces the signing secret of a webhook whose signing is enabled with `new_secret`, in
    /// one statement (no update can interleave). The replaced secret keeps signing until
    /// `previous_until` (unix ms); with a time not in the future it is dropped at once. A
    /// secret replaced earlier and still in its grace period is dropped: one previous secret
    /// at most. Returns the webhook as stored, or None if it does not exist or does not sign.
    pub async fn rotate_signing_secret(
        &self,
        name: &str,
        new_secret: &str,
        previous_until: i64,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let now = now_ms();
        let keep_previous = previous_until > now;
        let row = sqlx::query(
            "UPDATE webhooks SET \
             signing_previous_secret = CASE WHEN ? THEN signing_secret END, \
             signing_previous_until = CASE WHEN ? THEN ? END, \
             signing_secret = ?, updated_at = ? \
             WHERE name = ? AND signing_enabled AND signing_secret IS NOT NULL RETURNING *",
        )
        .bind(keep_previous)
        .bind(keep_previous)
        .bind(previous_until)
        // The replaced secret moves over as it is stored: sealed.
        .bind(self.sealer.seal(new_secret)?)
        .bind(now)
        .bind(name)
        .fetch_optional(&mut *crate::db::acquire_write(&self.meta.write).await?)
        .await?;
        let rec = row
            .as_ref()
            .map(|r| row_to_record(r, &self.sealer))
            .transpose()?;
        Ok(rec)
    }

    fn seal_opt(&self, secret: Option<&str>) -> Result<Option<String>, StoreError> {
        secret.map(|s| self.sealer.seal(s)).transpose()
    }

    /// Forgets replaced signing secrets whose grace period is over (they no longer sign
    /// anything; a secret not kept cannot leak).
    pub async fn forget_expired_signing_secrets(&self) -> Result<u64, StoreError> {
        let res = sqlx::query(
            "UPDATE webhooks SET signing_previous_secret = NULL, signing_previous_until = NULL \
             WHERE signing_previous_until IS NOT NULL AND signing_previous_until <= ?",
        )
        .bind(now_ms())
        .execute(&mut *crate::db::acquire_write(&self.meta.write).await?)
        .await?;
        Ok(res.rows_affected())
    }

    /// Deletes a webhook with its queue and history. Returns false if it did not exist.
    pub async fn delete_webhook(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = WriteTx::begin(&self.meta.write).await?;
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
        Ok(res.rows_affected() > 0)
    }
}

impl DeliveryQueue {
    /// Claims up to `limit` due deliveries, oldest first, taking at most `room.of(name)` rows
    /// of any one webhook (its free concurrency), and leases them to the node `owner` for
    /// `lease_ms`.
    ///
    /// `room` is plain data the caller computed before the call: nothing calls back into the
    /// dispatcher while the write transaction is open.
    ///
    /// Each enabled webhook's due rows are read through the `(webhook, next_attempt_at)` index,
    /// so the cost is one short index range per webhook, whatever the backlog, and a webhook at
    /// its cap with thousands of due rows does not push other webhooks' rows out of reach.
    pub async fn claim_due(
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
        // Candidates are read on a read connection: most looks at the queue find nothing due
        // (fresh deliveries come through the fast lane), and those cost the single write
        // connection, which manifest puts wait for, nothing.
        let hooks = sqlx::query("SELECT name FROM webhooks WHERE status = 'enabled'")
            .fetch_all(&self.meta.read)
            .await?;
        let mut out = Vec::new();
        for h in hooks {
            let webhook: String = h.get(0);
            let room = room.of(&webhook).min(limit);
            if room == 0 {
                continue;
            }
            let rows = sqlx::query(
                "SELECT d.id, d.event_id, d.attempts, d.round_start, d.max_attempts, \
                 d.next_attempt_at, e.body, d.payload_format \
                 FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.webhook = ? AND d.state = 'pending' AND d.next_attempt_at <= ? \
                 AND (d.lease_until IS NULL OR d.lease_until < ?) \
                 ORDER BY d.next_attempt_at, d.id LIMIT ?",
            )
            .bind(&webhook)
            .bind(now)
            .bind(now)
            .bind(room as i64)
            .fetch_all(&self.meta.read)
            .await?;
            for r in rows {
                let attempts: i64 = r.get(2);
                let round_start: i64 = r.get(3);
                out.push((
                    r.get::<i64, _>(5),
                    QueuedDelivery {
                        delivery_id: r.get(0),
                        webhook: webhook.clone(),
                        event_id: r.get(1),
                        attempt: attempts + 1,
                        round_attempt: attempts - round_start + 1,
                        max_attempts: r.get(4),
                        body: r.get(6),
                        format: payload_format(r.get(7))?,
                    },
                ));
            }
        }
        if out.is_empty() {
            return Ok(Vec::new());
        }
        // Oldest first across webhooks, then the overall cap.
        out.sort_by_key(|(due, c)| (*due, c.delivery_id));
        out.truncate(limit);
        // The lease is taken only where the row is still as read: pending, due, unleased and
        // at the same attempt (another node may have claimed it since), so a row is never
        // leased twice and every attempt number is right.
        let mut tx = WriteTx::begin_relaxed(&self.meta.write).await?;
        let mut taken = std::collections::HashSet::new();
        for (_, c) in &out {
            let res = sqlx::query(
                "UPDATE deliveries SET lease_until = ?, lease_owner = ? WHERE id = ? \
                 AND state = 'pending' AND attempts = ? AND next_attempt_at <= ? \
                 AND (lease_until IS NULL OR lease_until < ?)",
            )
            .bind(now + lease_ms)
            .bind(owner)
            .bind(c.delivery_id)
            .bind(c.attempt - 1)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 1 {
                taken.insert(c.delivery_id);
            }
        }
        tx.commit().await?;
        Ok(out
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| taken.contains(&c.delivery_id))
            .collect())
    }

    /// Gives leased rows back to the queue (a dispatcher that holds more in memory than it
    /// wants to), so the poll claims them later.
    pub async fn release_leases(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut tx = WriteTx::begin_relaxed(&self.meta.write).await?;
        for id in ids {
            sqlx::query(
                "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL WHERE id = ?",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Extends the leases `owner` holds on these deliveries to `lease_ms` from now: the
    /// dispatcher renews what it still holds (queued in memory, in flight, awaiting its
    /// record) well before the leases run out, so a live node never loses a delivery it is
    /// working on to another node. Rows no longer pending or leased to someone else are left
    /// alone. Returns how many leases were extended.
    pub async fn renew_leases(
        &self,
        ids: &[i64],
        owner: &str,
        lease_ms: i64,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let until = now_ms() + lease_ms;
        let mut n = 0;
        // Bookkeeping: a lease lost in a power failure costs at most a duplicate.
        let mut tx = WriteTx::begin_relaxed(&self.meta.write).await?;
        for chunk in ids.chunks(RENEW_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "UPDATE deliveries SET lease_until = ? WHERE lease_owner = ? \
                 AND state IN ('pending', 'sending') AND id IN ({marks})"
            );
            let mut q = sqlx::query(&sql).bind(until).bind(owner);
            for id in chunk {
                q = q.bind(id);
            }
            n += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Every delivery lease in the queue: (delivery id, owner node, leased until in unix ms).
    /// For operators and tests: which node holds what, and for how long.
    pub async fn delivery_leases(&self) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, lease_owner, lease_until FROM deliveries \
             WHERE state IN ('pending', 'sending') AND lease_until IS NOT NULL \
             AND lease_owner IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.meta.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Run when a dispatcher starts on node `owner`: takes back the leases this node id held
    /// before a restart, so deliveries in flight when it died are sent again at once, and
    /// those that have expired; cancels pending rows whose webhook is gone or disabled.
    ///
    /// Leases of other nodes that have not expired are left alone: they may be live and
    /// working on them. Taking back this node id's own leases is safe because two live
    /// processes never share a node id: on the embedded store the data directory's lock file
    /// allows one process per queue at all, and on a shared queue every node must be given an
    /// id of its own (a documented requirement of `[node] id`). If that requirement were
    /// broken, the cost is a duplicate delivery with the same event id, never a lost one.
    pub async fn recover_deliveries(&self, owner: &str) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = WriteTx::begin(&self.meta.write).await?;
        let released = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL \
             WHERE state = 'pending' AND lease_until IS NOT NULL \
             AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?)",
        )
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        fail_abandoned_pings(&mut tx, Some(owner), now).await?;
        sqlx::query(
            "UPDATE deliveries SET state = 'cancelled', updated_at = ? \
             WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < ?) AND NOT EXISTS \
             (SELECT 1 FROM webhooks w WHERE w.name = deliveries.webhook AND w.status = 'enabled')",
        )
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Marks failed the pings whose node died while sending them (their lease ran out): one
    /// attempt is all a ping gets. Run periodically, since no start-up of that node may come.
    pub async fn fail_abandoned_pings(&self) -> Result<u64, StoreError> {
        let mut tx = WriteTx::begin(&self.meta.write).await?;
        let n = fail_abandoned_pings(&mut tx, None, now_ms()).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Records attempts and moves their deliveries on, all in one transaction, which the
    /// manifest writer runs on its connection in one round trip
    /// ([`crate::meta::Meta::write_on_writer`]): under load this runs tens of times a second,
    /// and taking the write connection from the group commit each time held pushes up by
    /// about a millisecond.
    pub async fn record_attempts(
        &self,
        batch: &[(AttemptRecord, Outcome)],
    ) -> Result<(), StoreError> {
        use crate::outbox::{Arg, Batch};
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut statements = Batch::default();
        // Multi-row statements: two per chunk rather than two per attempt.
        for chunk in batch.chunks(RECORD_CHUNK) {
            // An attempt whose delivery is gone (its webhook was deleted while the attempt was
            // in flight) is not recorded: the batch must not fail on the foreign key, or the
            // recorder would retry it forever.
            let values = vec!["(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"; chunk.len()].join(",");
            statements.push(
                &format!(
                    "INSERT INTO attempts (delivery_id, webhook, event_id, attempt, started_at, \
                     duration_ms, request_uri, request_headers, status_code, reason, \
                     response_headers, response_body, error, outcome) \
                     SELECT * FROM (VALUES {values}) AS v WHERE EXISTS \
                     (SELECT 1 FROM deliveries d WHERE d.id = v.column1 AND d.event_id = v.column3)"
                ),
                chunk.iter().flat_map(|(a, outcome)| {
                    [
                        Arg::Int(Some(a.delivery_id)),
                        Arg::Text(Some(a.webhook.clone())),
                        Arg::Text(Some(a.event_id.clone())),
                        Arg::Int(Some(a.attempt)),
                        Arg::Int(Some(a.started_at)),
                        Arg::Int(Some(a.duration_ms)),
                        Arg::Text(Some(a.request_uri.clone())),
                        Arg::Text(Some(json(&a.request_headers))),
                        Arg::Int(a.status_code),
                        Arg::Text(a.reason.clone()),
                        Arg::Text(Some(json(&a.response_headers))),
                        Arg::Text(a.response_body.clone()),
                        Arg::Text(a.error.clone()),
                        Arg::Text(Some(outcome.state().to_owned())),
                    ]
                }),
            );
            // A delivery cancelled meanwhile (webhook disabled) stays cancelled.
            let values = vec!["(?,?,?,?)"; chunk.len()].join(",");
            statements.push(
                &format!(
                    "UPDATE deliveries SET state = CASE WHEN deliveries.state = 'cancelled' \
                     THEN 'cancelled' ELSE v.column2 END, attempts = v.column3, \
                     next_attempt_at = v.column4, lease_until = NULL, lease_owner = NULL, \
                     updated_at = ? FROM (VALUES {values}) AS v WHERE deliveries.id = v.column1"
                ),
                std::iter::once(Arg::Int(Some(now))).chain(chunk.iter().flat_map(
                    |(a, outcome)| {
                        let next = match outcome {
                            Outcome::Retry(at) => *at,
                            _ => now,
                        };
                        [
                            Arg::Int(Some(a.delivery_id)),
                            Arg::Text(Some(outcome.state().to_owned())),
                            Arg::Int(Some(a.attempt)),
                            Arg::Int(Some(next)),
                        ]
                    },
                )),
            );
        }
        self.meta.write_on_writer(statements).await
    }

    /// Writes a ping event and its delivery in state `sending`, which the queue never
    /// claims: the caller sends it once and records the outcome, and a ping interrupted by a
    /// crash is marked failed at the next start, never sent again (one ping, one attempt).
    ///
    /// The row is leased to the sending node `owner` for `lease_ms`, so that only a ping whose
    /// node died is marked failed by another (see [`Store::fail_abandoned_pings`]).
    pub async fn create_ping(
        &self,
        webhook: &str,
        event_id: &str,
        body: &[u8],
        format: PayloadFormat,
        owner: &str,
        lease_ms: i64,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut tx = WriteTx::begin(&self.meta.write).await?;
        sqlx::query("INSERT INTO events (id, action, body, created_at) VALUES (?, 'ping', ?, ?)")
            .bind(event_id)
            .bind(body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // A disabled webhook can be pinged, so no status check.
        let id = insert_delivery(&mut tx, webhook, event_id, Some(1), now, false, format)
            .await?
            .ok_or_else(|| StoreError::Corrupt("ping delivery not written".into()))?;
        sqlx::query(
            "UPDATE deliveries SET state = 'sending', lease_owner = ?, lease_until = ? WHERE id = ?",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// History of a webhook, newest attempt first: up to `limit` attempts older than
    /// `before` (an attempt id from an earlier page), or the newest ones. Paging by id rather
    /// than by offset keeps later pages stable while new attempts are recorded.
    pub async fn list_history(
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
             WHERE a.webhook = ? AND a.id < ? ORDER BY a.id DESC LIMIT ?",
        )
        .bind(webhook)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.meta.read)
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

    /// Puts deliveries of a webhook back in the queue, due now: one event's (unless it is
    /// pending already), or (event None) every failed one. Each starts a new round with the
    /// whole retry schedule; attempt numbers continue; the event id and bytes stay the same.
    pub async fn redeliver(
        &self,
        webhook: &str,
        event_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let set = "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, \
                   lease_until = NULL, lease_owner = NULL, round_start = attempts, updated_at = ? \
                   WHERE webhook = ? AND ";
        let res = match event_id {
            Some(e) => {
                sqlx::query(&format!("{set}event_id = ? AND state != 'pending'"))
                    .bind(now)
                    .bind(now)
                    .bind(webhook)
                    .bind(e)
                    .execute(&mut *crate::db::acquire_write(&self.meta.write).await?)
                    .await?
            }
            None => {
                sqlx::query(&format!("{set}state = 'failed'"))
                    .bind(now)
                    .bind(now)
                    .bind(webhook)
                    .execute(&mut *crate::db::acquire_write(&self.meta.write).await?)
                    .await?
            }
        };
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
        let mut tx = WriteTx::begin(&self.meta.write).await?;
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

/// Pings in state `sending` whose sender is gone: leased by `owner` (its own, at its start),
/// by no one (written before leases covered pings), or with an expired lease.
async fn fail_abandoned_pings(
    tx: &mut sqlx::SqliteConnection,
    owner: Option<&str>,
    now: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE deliveries SET state = 'failed', lease_until = NULL, lease_owner = NULL, \
         updated_at = ? WHERE state = 'sending' \
         AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)",
    )
    .bind(now)
    .bind(now)
    .bind(owner)
    .execute(tx)
    .await?
    .rows_affected())
}

/// How many more deliveries of each webhook a claim may take: the same free concurrency for
/// every webhook, less what the caller already has in flight for it. Computed by the caller
/// before the claim, so the claim's write transaction never calls back into the dispatcher.
#[derive(Debug, Clone, Default)]
pub struct Room {
    /// Free slots of a webhook with nothing in flight.
    pub per_webhook: usize,
    /// Deliveries in flight per webhook, by the name as stored (what claims carry).
    pub busy: std::collections::HashMap<String, usize>,
    /// Webhooks that get nothing from this claim (their older deliveries wait in memory).
    pub closed: std::collections::HashSet<String>,
}

impl Room {
    pub fn of(&self, webhook: &str) -> usize {
        if self.closed.contains(webhook) {
            return 0;
        }
        let used = self.busy.get(webhook).copied().unwrap_or(0);
        self.per_webhook.saturating_sub(used)
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

async fn cancel_pending(tx: &mut sqlx::SqliteConnection, webhook: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE deliveries SET state = 'cancelled', updated_at = ? WHERE webhook = ? AND state = 'pending'",
    )
    .bind(now_ms())
    .bind(webhook)
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let headers = BTreeMap::from([("Authorization".to_owned(), "Bearer s3cret".to_owned())]);
        let rec = WebhookRecord {
            name: "hook1".into(),
            service_uri: "https://example.com/hook?token=s3cret".into(),
            custom_headers: headers.clone(),
            actions: vec![WebhookAction::Push],
            status: WebhookStatus::Enabled,
            scope: String::new(),
            location: "local".into(),
            tags: BTreeMap::new(),
            signing: Signing {
                enabled: true,
                secret: Some("whsec_c2VjcmV0LXMzY3JldA==".into()),
                previous: Some(("whsec_b2xkLXMzY3JldA==".into(), 1)),
            },
            payload_format: PayloadFormat::Acr,
            created_at: 0,
            updated_at: 0,
        };
        let shown = format!("{rec:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("enabled: true"), "{shown}");
        assert!(
            shown.contains("Authorization"),
            "header names may show: {shown}"
        );
    }

    /// Signing secrets are sealed at rest like the service URI, opened on every read path,
    /// and a rotated-out secret is forgotten once its grace period is over.
    #[tokio::test]
    async fn signing_secrets_are_sealed_at_rest_and_forgotten_after_their_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path(),
            &crate::StoreOptions {
                region: "local".into(),
                floor: crate::FreeSpaceFloor::Bytes(0),
                secret_key: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let (old, new) = ("whsec_b2xkLXNlY3JldA==", "whsec_bmV3LXNlY3JldA==");
        let rec = WebhookRecord {
            name: "sealed1".into(),
            service_uri: "http://127.0.0.1:9/h".into(),
            custom_headers: BTreeMap::new(),
            actions: vec![WebhookAction::Push],
            status: WebhookStatus::Enabled,
            scope: String::new(),
            location: "local".into(),
            tags: BTreeMap::new(),
            signing: Signing {
                enabled: true,
                secret: Some(old.into()),
                previous: None,
            },
            payload_format: PayloadFormat::Acr,
            created_at: 0,
            updated_at: 0,
        };
        store.webhooks().create_webhook(&rec).await.unwrap();
        let raw = || async {
            let r = sqlx::query(
                "SELECT signing_secret, signing_previous_secret FROM webhooks WHERE name = 'sealed1'",
            )
            .fetch_one(&store.meta.read)
            .await
            .unwrap();
            (r.get::<Option<String>, _>(0), r.get::<Option<String>, _>(1))
        };
        let (cur, _) = raw().await;
        assert!(crate::seal::Sealer::is_sealed(&cur.unwrap()));

        // A day of grace: both secrets sign, both sealed, both read back in clear.
        let got = store
            .webhooks()
            .rotate_signing_secret("sealed1", new, now_ms() + 86_400_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.signing.secret.as_deref(), Some(new));
        assert_eq!(
            got.signing.previous.as_ref().map(|p| p.0.as_str()),
            Some(old)
        );
        let (cur, prev) = raw().await;
        assert!(crate::seal::Sealer::is_sealed(&cur.unwrap()));
        assert!(crate::seal::Sealer::is_sealed(&prev.unwrap()));
        let read = store
            .webhooks()
            .get_webhook("sealed1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.signing.active_secrets(now_ms()), [new, old]);

        // No grace: the replaced secret is not kept at all.
        let got = store
            .webhooks()
            .rotate_signing_secret("sealed1", old, 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.signing.previous, None);
        assert_eq!(raw().await.1, None);

        // An expired grace period: ignored when read, then forgotten.
        store
            .webhooks()
            .rotate_signing_secret("sealed1", new, now_ms() + 1)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let got = store
            .webhooks()
            .get_webhook("sealed1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.signing.previous, None);
        assert_eq!(
            store
                .webhooks()
                .forget_expired_signing_secrets()
                .await
                .unwrap(),
            1
        );
        assert_eq!(raw().await.1, None);

        // Signing off: rotation refuses.
        let mut off = got.clone();
        off.signing.enabled = false;
        store.webhooks().update_webhook(&off).await.unwrap();
        assert!(
            store
                .webhooks()
                .rotate_signing_secret("sealed1", old, now_ms() + 1000)
                .await
                .unwrap()
                .is_none()
        );
    }
}
