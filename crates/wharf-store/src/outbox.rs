//! The transactional outbox: registry changes hand their events here inside their own
//! transaction, and one delivery row is written per matching webhook (DESIGN invariant 3).
//!
//! Which webhooks want an event is the webhook service's answer ([`EventSubscribers`], over its
//! in-memory snapshot), so a push does not scan the webhook table and the store holds no
//! webhook secrets in memory. A webhook created while a push is in flight may or may not see
//! that push; one deleted or disabled meanwhile gets no row, because each delivery row is
//! written only if its webhook is still enabled in the push's transaction.

use std::sync::{Arc, RwLock};

use sqlx::{Row, SqliteConnection};
use wharf_core::WebhookAction;

use crate::StoreError;
use crate::db::now_ms;
use crate::hooks::QueuedDelivery;

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

/// "Who wants this event": the webhook service's answer (`wharf-hooks` implements it over its
/// snapshot of the webhook definitions, and the server injects it at start-up with
/// [`Subscribers::attach`]). The store only learns webhook names from it: matching, and the
/// secrets a delivery is sent with, stay with the webhook service.
pub trait EventSubscribers: Send + Sync {
    /// The names of the webhooks that want `ev`.
    fn wanted_by(&self, ev: &OutboxEvent) -> Vec<String>;
    /// Whether any webhook could want this action at all: lets the registry skip building
    /// events nobody subscribed to.
    fn any_wants(&self, action: WebhookAction) -> bool;
}

/// The outbox's handle on the webhook service's [`EventSubscribers`], shared by every request,
/// with the registry identity and node that events name.
///
/// Until a webhook service is attached, no webhook wants anything: a process that writes
/// registry changes while webhooks exist must attach one first (`wharf::start` does, before it
/// serves), or the events of its changes reach nobody.
#[derive(Clone, Default)]
pub struct Subscribers {
    inner: Arc<RwLock<Option<Arc<dyn EventSubscribers>>>>,
    registry_id: Arc<str>,
    source: Arc<wharf_core::payload::Source>,
}

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribers")
            .field("attached", &self.current().is_some())
            .field("registry_id", &self.registry_id)
            .finish_non_exhaustive()
    }
}

impl Subscribers {
    pub fn new(registry_id: String, source: wharf_core::payload::Source) -> Self {
        Subscribers {
            inner: Default::default(),
            registry_id: registry_id.into(),
            source: Arc::new(source),
        }
    }

    /// Injects the webhook service's answer to "who wants this event".
    pub fn attach(&self, subscribers: Arc<dyn EventSubscribers>) {
        match self.inner.write() {
            Ok(mut g) => *g = Some(subscribers),
            Err(p) => *p.into_inner() = Some(subscribers),
        }
    }

    fn current(&self) -> Option<Arc<dyn EventSubscribers>> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
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

    /// The webhooks that want `ev` (none while no webhook service is attached).
    pub fn wanted_by(&self, ev: &OutboxEvent) -> Vec<String> {
        self.current().map(|s| s.wanted_by(ev)).unwrap_or_default()
    }

    /// Whether any webhook could want this action.
    pub fn any_wants(&self, action: WebhookAction) -> bool {
        self.current().is_some_and(|s| s.any_wants(action))
    }
}

/// What [`enqueue`] wrote.
#[derive(Debug, Default)]
pub struct Enqueued {
    /// Deliveries left for the dispatcher's poll (no fast lane attached).
    pub queued: usize,
    /// Deliveries already leased to the attached dispatcher, to hand over once the
    /// transaction has committed (never before: no delivery for an uncommitted change).
    pub fast: Vec<QueuedDelivery>,
}

/// Writes the events that at least one webhook wants, and a pending delivery row per webhook.
/// When a dispatcher is attached to `lane`, the rows are inserted already leased to it and
/// returned for handing over in memory, so a fresh event costs no claim transaction.
pub async fn enqueue(
    conn: &mut SqliteConnection,
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
        for name in &targets {
            q = q.bind(name);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        if lease.is_none() {
            out.queued += rows.len();
            continue;
        }
        for r in rows {
            // The format the row recorded (this transaction's view of the webhook), as the
            // queue's claim reads it, so both paths render the same bytes.
            let format: String = r.get(2);
            out.fast
                .extend(fresh_delivery(r.get(0), r.get(1), &format, ev));
        }
    }
    Ok(out)
}

/// A fresh delivery of `ev`, inserted leased to this node, for the fast lane (both backends'
/// outboxes build it from the row they inserted). None if the row's format does not parse,
/// which cannot happen (the column only holds valid names): the row then stays leased, and
/// the queue's claim after expiry reports it as corrupt.
pub(crate) fn fresh_delivery(
    delivery_id: i64,
    webhook: String,
    format: &str,
    ev: &OutboxEvent,
) -> Option<QueuedDelivery> {
    Some(QueuedDelivery {
        delivery_id,
        webhook,
        event_id: ev.id.clone(),
        attempt: 1,
        round_attempt: 1,
        max_attempts: None,
        body: ev.body.clone(),
        format: format.parse().ok()?,
    })
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
    tx: tokio::sync::mpsc::UnboundedSender<Vec<QueuedDelivery>>,
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
    ) -> tokio::sync::mpsc::UnboundedReceiver<Vec<QueuedDelivery>> {
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

    pub(crate) fn lease(&self) -> Option<(String, i64)> {
        self.guard().as_ref().map(|a| (a.owner.clone(), a.lease_ms))
    }

    /// Hands committed deliveries to the dispatcher. If it is gone, the rows stay leased to
    /// this node id: its next start takes them back, another node once the lease runs out.
    pub(crate) fn hand_over(&self, claimed: Vec<QueuedDelivery>) {
        if claimed.is_empty() {
            return;
        }
        if let Some(a) = self.guard().as_ref() {
            let _ = a.tx.send(claimed);
        }
    }
}

/// A value bound to a statement built at run time.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Vec<u8>),
}

/// Statements run together in one round trip to SQLite's connection thread. Each statement
/// takes its `?` parameters from `args` in order (sqlx binds a multi-statement query's
/// anonymous parameters statement by statement). Every round trip is two thread switches, and
/// on the push path they, not the fsync, were most of a manifest put's time.
#[derive(Default)]
pub(crate) struct Batch {
    sql: String,
    args: Vec<Arg>,
}

impl Batch {
    pub(crate) fn push(&mut self, sql: &str, args: impl IntoIterator<Item = Arg>) {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.args.extend(args);
    }
}

/// [`enqueue`], with the change's own writes in `batch` run first, all in one round trip.
/// The same rows as [`enqueue`] writes, under the same rules.
pub(crate) async fn enqueue_batched(
    conn: &mut SqliteConnection,
    mut batch: Batch,
    events: &[OutboxEvent],
    hooks: &Subscribers,
    lane: &FastLane,
) -> Result<Enqueued, StoreError> {
    let lease = lane.lease();
    append_outbox(&mut batch, events, hooks, lease.as_ref(), now_ms());
    let rows = batch.run(conn).await?;
    let mut out = Enqueued::default();
    for r in rows {
        collect_delivery(&mut out, &r, events, lease.is_some());
    }
    Ok(out)
}

impl Batch {
    /// The batch between `begin` (the transaction's BEGIN, or nothing if it was sent) and a
    /// closing COMMIT.
    pub(crate) fn in_transaction(self, begin: &str) -> Batch {
        Batch {
            sql: format!("{begin}{}COMMIT;\n", self.sql),
            args: self.args,
        }
    }

    /// As [`Batch::run`], for a text that varies from call to call (multi-row statements):
    /// not kept in the connection's statement cache, where every variant would push out
    /// the push path's statements.
    pub(crate) async fn run_uncached(self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        if self.sql.is_empty() {
            return Ok(());
        }
        let mut q = sqlx::query(&self.sql).persistent(false);
        for a in self.args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Blob(v) => q.bind(v),
            };
        }
        q.execute(&mut *conn).await?;
        Ok(())
    }

    /// Runs every statement, in order, in one round trip; returns the rows they returned.
    /// (sqlx 0.8's SQLite driver runs every statement of the text; should a later sqlx stop
    /// doing so, the tests of the push path fail: no manifest, no tag, no event.)
    pub(crate) async fn run(
        self,
        conn: &mut SqliteConnection,
    ) -> Result<Vec<sqlx::sqlite::SqliteRow>, StoreError> {
        if self.sql.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = sqlx::query(&self.sql);
        for a in self.args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Blob(v) => q.bind(v),
            };
        }
        Ok(q.fetch_all(&mut *conn).await?)
    }
}

/// `n` rows of `cols` anonymous parameters each, for a `VALUES` list.
pub(crate) fn value_rows(n: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(","));
    vec![row.as_str(); n].join(",")
}

/// The delivery row's columns after `webhook` and `event_id`, bound as the `?`s of
/// [`DELIVERY_SELECT`]: next attempt, lease end and owner, creation and update times.
fn delivery_args(lease: Option<&(String, i64)>, now: i64) -> [Arg; 5] {
    [
        Arg::Int(Some(now)),
        Arg::Int(lease.map(|(_, ms)| now + ms)),
        Arg::Text(lease.map(|(owner, _)| owner.clone())),
        Arg::Int(Some(now)),
        Arg::Int(Some(now)),
    ]
}

const DELIVERY_INSERT: &str = "INSERT INTO deliveries (webhook, event_id, state, attempts, \
     round_start, max_attempts, next_attempt_at, lease_until, lease_owner, created_at, \
     updated_at, payload_format)";
const DELIVERY_SELECT: &str = "'pending', 0, 0, NULL, ?, ?, ?, ?, ?, w.payload_format";
const DELIVERY_RETURNING: &str = "RETURNING id, webhook, payload_format, event_id";

/// Appends the outbox's statements for `events` to `batch`: the events some webhook wants,
/// and a delivery row per webhook still enabled, leased as `lease` says. Only these
/// statements return rows (see [`collect_delivery`]).
pub(crate) fn append_outbox(
    batch: &mut Batch,
    events: &[OutboxEvent],
    hooks: &Subscribers,
    lease: Option<&(String, i64)>,
    now: i64,
) {
    for ev in events {
        let targets = hooks.wanted_by(ev);
        if targets.is_empty() {
            continue;
        }
        batch.push(
            "INSERT INTO events (id, action, body, created_at) VALUES (?, ?, ?, ?)",
            [
                Arg::Text(Some(ev.id.clone())),
                Arg::Text(Some(ev.action.as_str().to_owned())),
                Arg::Blob(ev.body.clone()),
                Arg::Int(Some(now)),
            ],
        );
        let marks = vec!["?"; targets.len()].join(",");
        batch.push(
            &format!(
                "{DELIVERY_INSERT} SELECT w.name, ?, {DELIVERY_SELECT} FROM webhooks w \
                 WHERE w.status = 'enabled' AND w.name IN ({marks}) {DELIVERY_RETURNING}"
            ),
            std::iter::once(Arg::Text(Some(ev.id.clone())))
                .chain(delivery_args(lease, now))
                .chain(targets.into_iter().map(|t| Arg::Text(Some(t)))),
        );
    }
}

/// An event of a put in a group commit, with the webhooks that want it: its `events` row
/// (id, action, body) and the id again with the webhooks' names as a JSON array, for
/// [`append_group_outbox`].
#[derive(Debug)]
pub(crate) struct GroupEvent {
    event: [Arg; 3],
    targets: [Arg; 2],
}

impl GroupEvent {
    /// The events of `events` that some webhook wants.
    pub(crate) fn wanted(events: &[OutboxEvent], hooks: &Subscribers) -> Vec<GroupEvent> {
        events
            .iter()
            .filter_map(|ev| {
                let mut targets = hooks.wanted_by(ev);
                if targets.is_empty() {
                    return None;
                }
                // One row per webhook, as `name IN (…)` gives put by put.
                targets.sort();
                targets.dedup();
                Some(GroupEvent {
                    event: [
                        Arg::Text(Some(ev.id.clone())),
                        Arg::Text(Some(ev.action.as_str().to_owned())),
                        Arg::Blob(ev.body.clone()),
                    ],
                    targets: [
                        Arg::Text(Some(ev.id.clone())),
                        Arg::Text(Some(serde_json::json!(targets).to_string())),
                    ],
                })
            })
            .collect()
    }
}

/// [`append_outbox`] for the puts of a group commit (`meta::group_in_one`): two statements
/// for the whole group, `events` being each event with its put's position, whose rows are
/// written only for the puts found valid earlier in the same batch (their row in
/// `temp.put_ok`).
pub(crate) fn append_group_outbox(
    batch: &mut Batch,
    events: Vec<(usize, GroupEvent)>,
    lease: Option<&(String, i64)>,
    now: i64,
) {
    if events.is_empty() {
        return;
    }
    let n = events.len();
    let (mut rows, mut targets) = (
        vec![Arg::Int(Some(now))],
        delivery_args(lease, now).to_vec(),
    );
    for (j, e) in events {
        rows.push(Arg::Int(Some(j as i64)));
        rows.extend(e.event);
        targets.push(Arg::Int(Some(j as i64)));
        targets.extend(e.targets);
    }
    batch.push(
        &format!(
            "INSERT INTO events (id, action, body, created_at) \
             SELECT v.column2, v.column3, v.column4, ? FROM (VALUES {}) v \
             WHERE EXISTS (SELECT 1 FROM temp.put_ok p WHERE p.j = v.column1)",
            value_rows(n, 4)
        ),
        rows,
    );
    // The webhook's name compares with its column's collation (NOCASE), as `IN` does.
    batch.push(
        &format!(
            "{DELIVERY_INSERT} SELECT w.name, v.column2, {DELIVERY_SELECT} \
             FROM (VALUES {}) v CROSS JOIN json_each(v.column3) x \
             CROSS JOIN webhooks w ON w.name = x.value \
             WHERE w.status = 'enabled' \
             AND EXISTS (SELECT 1 FROM temp.put_ok p WHERE p.j = v.column1) \
             {DELIVERY_RETURNING}",
            value_rows(n, 3)
        ),
        targets,
    );
}

/// Accounts for one delivery row returned by [`append_outbox`]'s or [`append_group_outbox`]'s
/// statements, if it belongs to one of `events`: a fast-lane hand-over when `leased`, a
/// queued row otherwise. Returns whether it belonged.
pub(crate) fn collect_delivery(
    out: &mut Enqueued,
    r: &sqlx::sqlite::SqliteRow,
    events: &[OutboxEvent],
    leased: bool,
) -> bool {
    let event_id: String = r.get(3);
    let Some(ev) = events.iter().find(|e| e.id == event_id) else {
        return false;
    };
    if !leased {
        out.queued += 1;
        return true;
    }
    let format: String = r.get(2);
    out.fast
        .extend(fresh_delivery(r.get(0), r.get(1), &format, ev));
    true
}
