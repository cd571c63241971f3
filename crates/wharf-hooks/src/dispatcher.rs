//! The dispatcher: claims due deliveries from the store's queue, sends them with bounded
//! concurrency (overall and per webhook, DESIGN invariant 5), and records every attempt.
//!
//! One loop claims; each claimed delivery is sent on its own task; one recorder task writes
//! results in batches. Fresh deliveries arrive through the fast lane, already leased. The
//! queue is looked at when the store signals rows (a redelivery, rows written with no
//! dispatcher attached), when a batch is recorded (a retry due at once) or rows go back to
//! it, when a slot frees while the last look was not quiet, and on a periodic poll, which
//! finds retries that come due later and the expired leases of nodes that died.
//!
//! Ordering: each webhook's rows are claimed oldest first, but up to `per_webhook_concurrency`
//! of them are in flight at once and a failed one is retried later, so receivers see no
//! ordering guarantee (neither does ACR's); they can order by the event `timestamp`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use wharf_store::HookStore;
use wharf_store::hooks::{AttemptRecord, Outcome, QueuedDelivery};

use crate::HooksConfig;
use crate::sender::Sender;
use crate::snapshot::{Claimed, WebhookCache};

/// How often due retries are looked for when nothing wakes the loop.
const POLL: Duration = Duration::from_millis(500);
/// Largest batch of attempt results written in one transaction.
const RECORD_BATCH: usize = 1024;
/// How long the recorder waits for more results before writing a batch. Every record
/// transaction holds SQLite's one write connection, which the next group of manifest puts
/// waits for: at 5 ms, one webhook and eight concurrent pushers, the PUT → event p50 was
/// 4.7–5.2 ms; at 25 ms, 4.1–4.5 ms (scripts/bench/webhooks.sh, latency). Longer lingers gain
/// less, and each one leaves more attempts unrecorded at a crash (sent again after it, under
/// the same id).
const RECORD_LINGER: Duration = Duration::from_millis(25);
/// A delivery lease lasts this many delivery timeouts. An attempt ends within one timeout
/// and its result is written within milliseconds after; the leases of everything this node
/// still holds (parked in memory, in flight, awaiting its record) are renewed once per
/// timeout, so a held lease always has two timeouts or more left. A node that dies loses its
/// deliveries to the other dispatchers at most this long after its last renewal.
pub const LEASE_TIMEOUTS: u32 = 3;
/// Most deliveries parked in memory for webhooks at their cap; past it they go back to the
/// queue and the poll claims them when there is room.
const MAX_PARKED: usize = 20_000;

pub(crate) struct Dispatcher {
    store: HookStore,
    sender: Sender,
    config: HooksConfig,
    inflight: Arc<Mutex<HashMap<String, usize>>>,
    slots: Arc<Semaphore>,
    freed: Arc<Notify>,
    /// Rows went back to the queue, or attempt results were recorded (a retry may be due at
    /// once): the queue is worth a look.
    requeued: Arc<Notify>,
    /// This node's id: the owner of its leases in the delivery queue.
    node: Arc<str>,
    /// Deliveries this node holds a lease on and has not finished with (parked, in flight, or
    /// awaiting their record): the renewer keeps their leases alive.
    held: Held,
    /// The enabled webhooks: where and how each delivery is sent.
    cache: WebhookCache,
}

/// Ids of the deliveries whose leases this node must keep alive.
#[derive(Clone, Default)]
struct Held(Arc<Mutex<std::collections::HashSet<i64>>>);

impl Held {
    fn add(&self, ids: impl IntoIterator<Item = i64>) {
        lock(&self.0).extend(ids);
    }
    fn remove(&self, ids: impl IntoIterator<Item = i64>) {
        let mut h = lock(&self.0);
        for id in ids {
            h.remove(&id);
        }
    }
    fn snapshot(&self) -> Vec<i64> {
        lock(&self.0).iter().copied().collect()
    }
}

/// The lease of a delivery for this delivery timeout, in milliseconds.
pub(crate) fn lease_ms(timeout: Duration) -> i64 {
    i64::try_from((timeout * LEASE_TIMEOUTS).as_millis()).unwrap_or(i64::MAX / 4)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Dispatcher {
    pub(crate) fn new(
        store: HookStore,
        sender: Sender,
        config: HooksConfig,
        node: Arc<str>,
        cache: WebhookCache,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_concurrency));
        Dispatcher {
            store,
            sender,
            config,
            inflight: Arc::default(),
            slots,
            freed: Arc::new(Notify::new()),
            requeued: Arc::new(Notify::new()),
            node,
            held: Held::default(),
            cache,
        }
    }

    /// Runs until `stop` is notified. In-flight attempts finish and are recorded first.
    pub(crate) async fn run(self, stop: Arc<Notify>) {
        let stopped = stop.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        match self.store.deliveries().recover_deliveries(&self.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                count = n,
                node = %self.node,
                "resuming deliveries interrupted by a restart or whose lease expired"
            ),
            Err(e) => tracing::error!(error = %e, "recovering interrupted deliveries failed"),
        }
        let lease_ms = lease_ms(self.config.timeout);
        let (tx, rx) = mpsc::unbounded_channel::<(AttemptRecord, Outcome)>();
        let recorder = tokio::spawn(record_loop(
            self.store.clone(),
            rx,
            self.requeued.clone(),
            self.held.clone(),
        ));
        let renewer = tokio::spawn(renew_loop(
            self.store.clone(),
            self.held.clone(),
            self.node.clone(),
            self.config.timeout,
            lease_ms,
        ));
        // Fresh deliveries arrive here straight from the committing transaction, already
        // leased to this node.
        let mut fast_rx = self.store.lane.attach(&self.node, lease_ms);
        let mut parked = Parked::default();
        let signal = self.store.outbox_signal.clone();
        // Whether to look at the queue on this turn, and whether the last look found it quiet:
        // nothing due, and no webhook short of room that might have rows waiting. While it is
        // quiet, a fresh batch or a freed slot needs no look (fresh deliveries come through
        // the fast lane): the queue is looked at again when rows go back to it, results are
        // recorded, the outbox signals, or the poll comes round. So the steady stream of fresh
        // deliveries costs no queries besides its own.
        let mut look = true;
        let mut quiet = false;
        loop {
            self.drain_parked(&mut parked, &tx);
            let free = self.slots.available_permits();
            let mut full_batch = false;
            if free > 0 && look {
                let room = wharf_store::hooks::Room {
                    per_webhook: self.config.per_webhook_concurrency,
                    busy: lock(&self.inflight).clone(),
                    // A webhook with deliveries parked in memory gets nothing from the queue
                    // until they are sent: they are older.
                    closed: parked.queues.keys().cloned().collect(),
                };
                let limited = !room.closed.is_empty()
                    || room
                        .busy
                        .values()
                        .any(|n| *n >= self.config.per_webhook_concurrency);
                let want = free.min(512);
                match self
                    .store
                    .deliveries()
                    .claim_due(want, &room, lease_ms, &self.node)
                    .await
                {
                    Ok(claimed) => {
                        full_batch = claimed.len() == want;
                        quiet = claimed.is_empty() && !limited;
                        self.held.add(claimed.iter().map(|c| c.delivery_id));
                        for c in self.targets(claimed) {
                            self.spawn_send(c, tx.clone());
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "claiming deliveries failed");
                        quiet = false;
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
            if full_batch {
                // More may be due at once; but a steady backlog must not keep us from stopping.
                if stopped.as_mut().now_or_never().is_some() {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = &mut stopped => break,
                Some(batch) = fast_rx.recv() => {
                    self.held.add(batch.iter().map(|c| c.delivery_id));
                    for c in self.targets(batch) {
                        self.admit(c, &mut parked, &tx);
                    }
                    // Take whatever else arrived meanwhile before looking at the queue.
                    while let Ok(batch) = fast_rx.try_recv() {
                        self.held.add(batch.iter().map(|c| c.delivery_id));
                        for c in self.targets(batch) {
                            self.admit(c, &mut parked, &tx);
                        }
                    }
                    look = !quiet;
                    continue;
                }
                _ = signal.notified() => look = true,
                _ = self.requeued.notified() => look = true,
                _ = self.freed.notified() => look = !quiet,
                _ = tokio::time::sleep(POLL) => look = true,
            }
        }
        // New deliveries go to the queue from now on; those parked here stay leased to this
        // node: its next start takes them back at once, another node once the lease expires.
        self.store.lane.detach();
        // Wait for in-flight sends, then for their results to be written (the renewer keeps
        // their leases meanwhile).
        let _ = self
            .slots
            .acquire_many(self.config.max_concurrency as u32)
            .await;
        drop(tx);
        let _ = recorder.await;
        renewer.abort();
        let _ = renewer.await;
    }

    /// Adds each delivery's target and secrets from the snapshot, rendered. A delivery whose
    /// webhook the snapshot does not have (deleted or disabled since: its row is gone or
    /// cancelled; or written by another node and not loaded here yet) is given back to the
    /// queue rather than sent.
    fn targets(&self, batch: Vec<QueuedDelivery>) -> Vec<Claimed> {
        let registry_id = self.store.hooks.registry_id();
        let mut out = Vec::with_capacity(batch.len());
        let mut missing = Vec::new();
        for d in batch {
            match self.cache.get(&d.webhook) {
                Some(h) => out.push(Claimed::new(d, &h, registry_id)),
                None => missing.push(d.delivery_id),
            }
        }
        if !missing.is_empty() {
            let (store, held) = (self.store.clone(), self.held.clone());
            let requeued = self.requeued.clone();
            tokio::spawn(async move {
                match store.deliveries().release_leases(&missing).await {
                    Ok(()) => {
                        held.remove(missing);
                        requeued.notify_one();
                    }
                    Err(e) => tracing::warn!(error = %e, "releasing deliveries failed"),
                }
            });
        }
        out
    }

    /// Room for one more send to `webhook` now.
    fn has_room(&self, webhook: &str) -> bool {
        self.slots.available_permits() > 0
            && lock(&self.inflight).get(webhook).copied().unwrap_or(0)
                < self.config.per_webhook_concurrency
    }

    /// A delivery handed over in memory: sent now if its webhook has room, parked otherwise.
    fn admit(
        &self,
        c: Claimed,
        parked: &mut Parked,
        tx: &mpsc::UnboundedSender<(AttemptRecord, Outcome)>,
    ) {
        if !parked.has(&c.webhook) && self.has_room(&c.webhook) {
            self.spawn_send(c, tx.clone());
        } else if parked.len < MAX_PARKED {
            parked.push(c);
        } else {
            // Too much in memory: back to the queue, where the poll finds it later.
            let store = self.store.clone();
            let held = self.held.clone();
            let requeued = self.requeued.clone();
            tokio::spawn(async move {
                match store.deliveries().release_leases(&[c.delivery_id]).await {
                    Ok(()) => {
                        held.remove([c.delivery_id]);
                        requeued.notify_one();
                    }
                    Err(e) => {
                        // Still held: renewed, and so not lost; released at the next try or
                        // taken back after this node stops.
                        tracing::warn!(error = %e, "releasing a parked delivery failed; it is resent after a restart");
                    }
                }
            });
        }
    }

    /// Sends parked deliveries of every webhook that has room, oldest first. Deliveries of a
    /// webhook disabled or deleted meanwhile are dropped (their rows were cancelled).
    fn drain_parked(
        &self,
        parked: &mut Parked,
        tx: &mpsc::UnboundedSender<(AttemptRecord, Outcome)>,
    ) {
        if parked.len == 0 {
            return;
        }
        let names: Vec<String> = parked.queues.keys().cloned().collect();
        for w in names {
            let live = self.cache.is_enabled(&w);
            while let Some(q) = parked.queues.get_mut(&w) {
                if q.is_empty() {
                    parked.queues.remove(&w);
                    break;
                }
                if live && !self.has_room(&w) {
                    break;
                }
                if let Some(c) = q.pop_front() {
                    parked.len -= 1;
                    if live {
                        self.spawn_send(c, tx.clone());
                    } else {
                        self.held.remove([c.delivery_id]);
                    }
                }
            }
        }
    }

    fn spawn_send(&self, c: Claimed, tx: mpsc::UnboundedSender<(AttemptRecord, Outcome)>) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // Cannot happen (we claimed no more than the free slots); the lease expires and
            // the row is claimed again later.
            self.held.remove([c.delivery_id]);
            return;
        };
        *lock(&self.inflight).entry(c.webhook.clone()).or_default() += 1;
        let sender = self.sender.clone();
        let inflight = self.inflight.clone();
        let freed = self.freed.clone();
        let policy = self.config.retry.clone();
        tokio::spawn(async move {
            let res = sender.send(&c).await;
            let outcome = if res.success {
                Outcome::Delivered
            } else if c.max_attempts.is_some_and(|m| c.round_attempt >= m) {
                Outcome::Failed
            } else {
                let n = usize::try_from(c.round_attempt).unwrap_or(usize::MAX);
                match policy.next_delay(n, res.retry_after, fastrand::f64()) {
                    Some(d) => {
                        Outcome::Retry(chrono::Utc::now().timestamp_millis() + d.as_millis() as i64)
                    }
                    None => Outcome::Failed,
                }
            };
            crate::log_outcome(&c, &res.record, res.success);
            let _ = tx.send((res.record, outcome));
            {
                let mut m = lock(&inflight);
                if let Some(n) = m.get_mut(&c.webhook) {
                    *n = n.saturating_sub(1);
                }
            }
            drop(permit);
            freed.notify_one();
        });
    }
}

/// Keeps the leases of what this node holds alive: every delivery timeout, each held lease is
/// extended to [`LEASE_TIMEOUTS`] timeouts from now.
async fn renew_loop(store: HookStore, held: Held, node: Arc<str>, every: Duration, lease_ms: i64) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let ids = held.snapshot();
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = store.deliveries().renew_leases(&ids, &node, lease_ms).await {
            // The next tick tries again; two more fit in a lease.
            tracing::warn!(error = %e, count = ids.len(), "renewing delivery leases failed");
        }
    }
}

async fn record_loop(
    store: HookStore,
    mut rx: mpsc::UnboundedReceiver<(AttemptRecord, Outcome)>,
    recorded: Arc<Notify>,
    held: Held,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Under load, results trickle in one by one; waiting a moment lets a batch form, so the
        // history costs a few transactions a second rather than one per attempt. The delivery
        // itself is already done; only its bookkeeping waits. It waits also when more results
        // are already queued: writing at once whenever any were (as this loop once did) ran a
        // record transaction for every few attempts under steady load, about 300 a second at
        // eight pushers, each taking the write connection from the manifest group commit.
        let until = tokio::time::Instant::now() + RECORD_LINGER;
        while batch.len() < RECORD_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        // Retry a failed write: these rows hold the truth about what was sent.
        let mut delay = Duration::from_millis(100);
        while let Err(e) = store.deliveries().record_attempts(&batch).await {
            tracing::error!(error = %e, "recording delivery attempts failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        // Recorded: the rows are released (or finished), nothing of them is held any more.
        held.remove(batch.iter().map(|(a, _)| a.delivery_id));
        batch.clear();
        // The rows just released may be due again already (a retry scheduled at once).
        recorded.notify_one();
    }
}

/// Deliveries handed over in memory while their webhook was at its cap, per webhook, oldest
/// first.
#[derive(Default)]
struct Parked {
    queues: HashMap<String, std::collections::VecDeque<Claimed>>,
    len: usize,
}

impl Parked {
    fn has(&self, webhook: &str) -> bool {
        self.queues.get(webhook).is_some_and(|q| !q.is_empty())
    }

    fn push(&mut self, c: Claimed) {
        self.queues
            .entry(c.webhook.clone())
            .or_default()
            .push_back(c);
        self.len += 1;
    }
}
