//! The outbox on PostgreSQL: the same rows as `crate::outbox::enqueue` writes on SQLite,
//! inside the caller's transaction. Deliveries for this node's attached dispatcher are
//! inserted leased to it and handed over after the commit (the fast lane); otherwise they are
//! left for any node's claim, and `wharf_outbox` wakes every node's dispatcher on commit.

use sqlx::{PgConnection, Row};

use crate::StoreError;
use crate::db::now_ms;
use crate::outbox::{Enqueued, FastLane, OutboxEvent, Subscribers};

pub(crate) async fn enqueue(
    conn: &mut PgConnection,
    events: &[OutboxEvent],
    hooks: &Subscribers,
    lane: &FastLane,
) -> Result<Enqueued, StoreError> {
    let mut out = Enqueued::default();
    if events.is_empty() {
        return Ok(out);
    }
    let now = now_ms();
    let lease = lane.lease();
    for ev in events {
        let targets = hooks.wanted_by(ev);
        if targets.is_empty() {
            continue;
        }
        sqlx::query("INSERT INTO events (id, action, body, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&ev.id)
            .bind(ev.action.as_str())
            .bind(&ev.body)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        // One statement for every matching webhook, and only for those still enabled inside
        // this transaction (a webhook disabled or deleted meanwhile gets nothing).
        let rows = sqlx::query(
            "INSERT INTO deliveries (webhook, event_id, state, attempts, round_start, \
             max_attempts, next_attempt_at, lease_until, lease_owner, created_at, updated_at, \
             payload_format) \
             SELECT name, $1, 'pending', 0, 0, NULL, $2, $3, $4, $2, $2, payload_format \
             FROM webhooks WHERE status = 'enabled' AND name = ANY($5) \
             RETURNING id, webhook, payload_format",
        )
        .bind(&ev.id)
        .bind(now)
        .bind(lease.as_ref().map(|(_, ms)| now + ms))
        .bind(lease.as_ref().map(|(owner, _)| owner.as_str()))
        .bind(&targets)
        .fetch_all(&mut *conn)
        .await?;
        if lease.is_none() {
            out.queued += rows.len();
            continue;
        }
        for r in rows {
            let format: String = r.get(2);
            out.fast.extend(crate::outbox::fresh_delivery(
                r.get(0),
                r.get(1),
                &format,
                ev,
            ));
        }
    }
    if out.queued > 0 {
        super::notify(conn, super::CHANNEL_OUTBOX).await?;
    }
    Ok(out)
}
