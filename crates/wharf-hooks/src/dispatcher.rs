//! The dispatcher: claims due deliveries from the store's queue, sends them with bounded
//! concurrency (overall and per webhook, DESIGN invariant 5), and records every attempt.
//!
//! One loop claims; each claimed delivery is sent on its own task; one recorder task writes
//! results in batches. A new event wakes the loop at once through the store's signal, and so
//! does a recorded batch (a retry due at once, or room freed under a webhook's cap); retries
//! that come due later are found by a periodic poll.
//!
//! Ordering: each webhook's rows are claimed oldest first, but up to `per_webhook_concurrency`
//! of them are in flight at once and a failed one is retried later, so receivers see no
//! ordering guarantee (neither does ACR's); they can order by the event `timestamp`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use wharf_store::Store;
use wharf_store::hooks::{AttemptRecord, Claimed, Outcome};

use crate::HooksConfig;
use crate::sender::Sender;

/// How often due retries are looked for when nothing wakes the loop.
const POLL: Duration = Duration::from_millis(500);
/// Largest batch of attempt results written in one transaction.
const RECORD_BATCH: usize = 1024;
/// How long the recorder waits for more results before writing a batch.
const RECORD_LINGER: Duration = Duration::from_millis(5);
/// Lease of deliveries handed over in memory. Long, because this process holds them until it
/// sends them (a webhook at its cap parks them), and a restart takes them back at once anyway.
const FAST_LEASE_MS: i64 = 3_600_000;
/// Most deliveries parked in memory for webhooks at their cap; past it they go back to the
/// queue and the poll claims them when there is room.
const MAX_PARKED: usize = 20_000;

pub(crate) struct Dispatcher {
    store: Store,
    sender: Sender,
    config: HooksConfig,
    inflight: Arc<Mutex<HashMap<String, usize>>>,
    slots: Arc<Semaphore>,
    freed: Arc<Notify>,
    /// Lease owner id of this process.
    instance: Arc<str>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Dispatcher {
    pub(crate) fn new(
        store: Store,
        sender: Sender,
        config: HooksConfig,
        instance: Arc<str>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_concurrency));
        Dispatcher {
            store,
            sender,
            config,
            inflight: Arc::default(),
            slots,
            freed: Arc::new(Notify::new()),
            instance,
        }
    }

    /// Runs until `stop` is notified. In-flight attempts finish and are recorded first.
    pub(crate) async fn run(self, stop: Arc<Notify>) {
        let stopped = stop.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        match self.store.recover_deliveries(&self.instance).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "resuming deliveries interrupted by a restart"),
            Err(e) => tracing::error!(error = %e, "recovering interrupted deliveries failed"),
        }
        let (tx, rx) = mpsc::unbounded_channel::<(AttemptRecord, Outcome)>();
        let recorder = tokio::spawn(record_loop(self.store.clone(), rx, self.freed.clone()));
        // Fresh deliveries arrive here straight from the committing transaction.
        let mut fast_rx = self.store.meta.lane.attach(&self.instance, FAST_LEASE_MS);
        let mut parked = Parked::default();
        let signal = self.store.outbox_signal.clone();
        // Lease: long enough to cover an attempt and its recording. Another process's claims
        // come back when it runs out; this server's own, from before a restart, at start.
        let lease_ms = (self.config.timeout.as_millis() as i64) * 2 + 30_000;
        loop {
            self.drain_parked(&mut parked, &tx);
            let free = self.slots.available_permits();
            let mut full_batch = false;
            if free > 0 {
                let per_webhook = |w: &str| {
                    // A webhook with deliveries parked in memory gets nothing from the queue
                    // until they are sent: they are older.
                    if parked.has(w) {
                        return 0;
                    }
                    let used = lock(&self.inflight).get(w).copied().unwrap_or(0);
                    self.config.per_webhook_concurrency.saturating_sub(used)
                };
                let want = free.min(512);
                match self
                    .store
                    .claim_due(want, &per_webhook, lease_ms, &self.instance)
                    .await
                {
                    Ok(claimed) => {
                        full_batch = claimed.len() == want;
                        for c in claimed {
                            self.spawn_send(c, tx.clone());
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "claiming deliveries failed");
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
                    for c in batch {
                        self.admit(c, &mut parked, &tx);
                    }
                    // Take whatever else arrived meanwhile before looking at the queue.
                    while let Ok(batch) = fast_rx.try_recv() {
                        for c in batch {
                            self.admit(c, &mut parked, &tx);
                        }
                    }
                    continue;
                }
                _ = signal.notified() => {}
                _ = self.freed.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        // New deliveries go to the queue from now on; those parked here stay leased to this
        // process and are taken back by the next one at start.
        self.store.meta.lane.detach();
        // Wait for in-flight sends, then for their results to be written.
        let _ = self
            .slots
            .acquire_many(self.config.max_concurrency as u32)
            .await;
        drop(tx);
        let _ = recorder.await;
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
            tokio::spawn(async move {
                if let Err(e) = store.release_leases(&[c.delivery_id]).await {
                    tracing::warn!(error = %e, "releasing a parked delivery failed; it is resent after a restart");
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
        let enabled = self.store.hooks.snapshot();
        let names: Vec<String> = parked.queues.keys().cloned().collect();
        for w in names {
            let live = enabled.iter().any(|h| h.name == w);
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
                    }
                }
            }
        }
    }

    fn spawn_send(&self, c: Claimed, tx: mpsc::UnboundedSender<(AttemptRecord, Outcome)>) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // Cannot happen (we claimed no more than the free slots); the lease expires and
            // the row is claimed again later.
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

async fn record_loop(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<(AttemptRecord, Outcome)>,
    recorded: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Under load, results trickle in one by one; waiting a moment lets a batch form, so the
        // history costs a few transactions a second rather than one per attempt. The delivery
        // itself is already done; only its bookkeeping waits.
        if rx.is_empty() {
            tokio::time::sleep(RECORD_LINGER).await;
        }
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // Retry a failed write: these rows hold the truth about what was sent.
        let mut delay = Duration::from_millis(100);
        while let Err(e) = store.record_attempts(&batch).await {
            tracing::error!(error = %e, "recording delivery attempts failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
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
