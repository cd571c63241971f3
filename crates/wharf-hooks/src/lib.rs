//! Wharf's webhooks: definitions and their validation, the ACR management operations and their
//! ARM JSON shapes, the delivery dispatcher with its retry policy, the HTTP sender with its
//! SSRF guard, Standard Webhooks signing, ping, history and redelivery.
//!
//! It owns the webhook domain: matching events to webhooks, the in-memory snapshot of the
//! definitions (the only place their secrets are held in memory), and claimed deliveries. The
//! store's outbox asks it "who wants this event" through `wharf_store::EventSubscribers`,
//! which [`Hooks::new`] attaches.
//!
//! It reads and writes webhook state only through the [`wharf_store::HookStore`] it is given:
//! the `WebhookStore` and `DeliveryStore` traits, whatever backend implements them; it never
//! sees registry metadata or identities. It must not call `wharf-registry` (registry
//! changes reach it through the store's outbox) or name axum.

mod dispatcher;
pub mod guard;
pub mod model;
pub mod retry;
pub mod sender;
pub mod signing;
pub mod snapshot;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use wharf_core::{
    Event, PayloadFormat, Scope, WebhookAction, WebhookError, WebhookName, WebhookStatus,
};
use wharf_store::hooks::{Outcome, QueuedDelivery, Signing, WebhookRecord};
use wharf_store::{HookStore, StoreError};

pub use crate::snapshot::{Claimed, HookSnapshot, WebhookCache};

use crate::model::{CallbackConfig, WebhookCreate, WebhookUpdate};
use crate::retry::RetryPolicy;
use crate::sender::Sender;
use crate::validate::{validate_headers, validate_uri};

#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    #[error("{0}")]
    Invalid(String),
    #[error("webhook {0} not found")]
    NotFound(String),
    #[error("webhook {0} already exists")]
    Conflict(String),
    #[error("status: webhook {0} is disabled; enable it before redelivering")]
    Disabled(String),
    #[error(
        "signing: webhook {0} does not sign its deliveries; enable signing before rotating its secret"
    )]
    SigningDisabled(String),
    /// The data volume is full or below its free-space floor; nothing was stored.
    #[error("out of storage space")]
    OutOfSpace,
    /// The metadata database cannot be reached; nothing was stored, a retry may succeed.
    #[error("the database is unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(StoreError),
}

impl From<StoreError> for HooksError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::OutOfSpace => HooksError::OutOfSpace,
            StoreError::DbUnavailable(m) => HooksError::Unavailable(m),
            e => HooksError::Internal(e),
        }
    }
}

impl From<WebhookError> for HooksError {
    fn from(e: WebhookError) -> Self {
        HooksError::Invalid(e.to_string())
    }
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// Region of this server; webhooks default to it and fire for its events only.
    pub region: String,
    pub user_agent: String,
    /// Per-attempt timeout (ACR: 5 s).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub max_concurrency: usize,
    pub per_webhook_concurrency: usize,
    pub history_retention: Duration,
    pub response_body_cap: usize,
    /// This server's listening address: service URIs that reach it are refused (a loop).
    pub own_addr: Option<std::net::SocketAddr>,
    /// Whether webhooks may target loopback addresses (127.0.0.0/8, ::1), which the SSRF
    /// guard blocks otherwise. Off by default; the server turns it on in its open
    /// development mode (no authentication, listening on loopback), where only local users
    /// can create webhooks and local receivers are the common case.
    pub allow_loopback: bool,
    /// Networks the SSRF guard lets webhooks reach although they are in a blocked range
    /// (a cloud metadata address only through an entry naming exactly that address).
    pub allow_networks: Vec<ipnet::IpNet>,
    /// This node's id: the owner of the delivery leases it takes. Two live processes must
    /// never share one (see [`DEFAULT_NODE_ID`]).
    pub node_id: String,
}

/// The node id of a server that is not given one. Right for a single node: on the embedded
/// store the data directory's lock file lets one process at a time use the queue, so a
/// restarted server finds only its own earlier leases under this id and takes them back at
/// once. Nodes sharing a queue must each be given an id of their own.
pub const DEFAULT_NODE_ID: &str = "node-1";

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            region: "local".to_owned(),
            user_agent: format!("Wharf/{}", env!("CARGO_PKG_VERSION")),
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            max_concurrency: 256,
            per_webhook_concurrency: 16,
            history_retention: Duration::from_secs(30 * 24 * 3600),
            response_body_cap: 4096,
            own_addr: None,
            allow_loopback: false,
            allow_networks: Vec::new(),
            node_id: DEFAULT_NODE_ID.to_owned(),
        }
    }
}

/// The webhook service: management operations plus the background dispatcher.
#[derive(Clone)]
pub struct Hooks {
    store: HookStore,
    sender: Sender,
    config: HooksConfig,
    stop: Arc<Notify>,
    /// This node's id as a lease owner in the delivery queue.
    node: Arc<str>,
    /// The enabled webhooks: what the outbox matches events against, and what deliveries
    /// are sent with.
    cache: WebhookCache,
}

pub type Result<T, E = HooksError> = std::result::Result<T, E>;

/// One info line per delivery outcome, so an operator sees events leave: webhook, event,
/// attempt, status and duration (never the URI or header values, which are secrets).
pub(crate) fn log_outcome(c: &Claimed, record: &wharf_store::hooks::AttemptRecord, success: bool) {
    // No status: the request got no answer (refused, timed out); `error` says why.
    let status = record.status_code.unwrap_or(0);
    if success {
        tracing::info!(webhook = %c.webhook, event = %c.event_id, attempt = c.attempt,
            status, ms = record.duration_ms, "delivered");
    } else {
        tracing::info!(webhook = %c.webhook, event = %c.event_id, attempt = c.attempt,
            status, error = record.error.as_deref().unwrap_or(""), ms = record.duration_ms,
            "delivery attempt failed");
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn guard_of(config: &HooksConfig) -> guard::TargetGuard {
    guard::TargetGuard::new(
        config.own_addr,
        config.allow_loopback,
        config.allow_networks.clone(),
    )
}

/// Longest grace period of a rotated signing secret: a week is room for any receiver's
/// deployment cycle, and an old secret must not sign forever.
pub const MAX_GRACE_PERIOD_SECS: u64 = 7 * 24 * 3600;
/// Grace period of a rotated secret when the caller names none (Svix's default too).
pub const DEFAULT_GRACE_PERIOD_SECS: u64 = 24 * 3600;

fn new_secret() -> Result<String> {
    signing::generate_secret().map_err(|_| {
        HooksError::Internal(StoreError::Unavailable(
            "the random source failed to give a signing secret".into(),
        ))
    })
}

/// While a webhook signs, the Standard Webhooks headers are Wharf's to set: a custom header
/// with one of their names would be replaced, so it is refused rather than silently dropped.
fn check_signing_headers(rec: &WebhookRecord) -> Result<()> {
    if !rec.signing.enabled {
        return Ok(());
    }
    match rec.custom_headers.keys().find(|k| {
        signing::SIGNING_HEADERS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(k))
    }) {
        Some(k) => Err(HooksError::Invalid(format!(
            "customHeaders: {k:?} cannot be set while signing is enabled: Wharf sets it"
        ))),
        None => Ok(()),
    }
}

/// `properties.payloadFormat`, when given.
fn parse_payload_format(f: Option<&str>) -> Result<Option<PayloadFormat>> {
    f.map(|f| {
        f.parse()
            .map_err(|e| HooksError::Invalid(format!("payloadFormat: {e}")))
    })
    .transpose()
}

fn validate_actions(actions: &[String]) -> Result<Vec<WebhookAction>> {
    if actions.is_empty() {
        return Err(HooksError::Invalid(
            "actions: at least one of push, delete, quarantine, chart_push, chart_delete is required".into(),
        ));
    }
    let mut out = Vec::new();
    for a in actions {
        let a: WebhookAction = a.parse()?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

impl Hooks {
    /// Builds the webhook service over `store`: loads the snapshot of the webhook definitions
    /// and attaches it to the store's outbox as its answer to "who wants this event". Done
    /// before the server accepts changes, so no event misses a webhook that exists.
    pub async fn new(store: HookStore, config: HooksConfig) -> Result<Self> {
        let sender = Sender::new(
            config.timeout,
            config.user_agent.clone(),
            config.response_body_cap,
            guard_of(&config),
        )
        .map_err(|e| {
            HooksError::Internal(StoreError::Unavailable(format!(
                "building the webhook sender: {e}"
            )))
        })?;
        let cache = WebhookCache::new(&config.region);
        cache.reload(store.webhooks()).await?;
        store.hooks.attach(Arc::new(cache.clone()));
        Ok(Hooks {
            node: Arc::from(config.node_id.as_str()),
            store,
            sender,
            config,
            stop: Arc::new(Notify::new()),
            cache,
        })
    }

    /// Rebuilds the snapshot after a webhook was written. A failure is logged: the write
    /// itself stands, and the next reload catches up.
    async fn reload(&self) {
        if let Err(e) = self.cache.reload(self.store.webhooks()).await {
            tracing::error!(error = %e, "reloading the webhook snapshot failed");
        }
    }

    pub fn config(&self) -> &HooksConfig {
        &self.config
    }

    /// Starts the dispatcher and the history pruner. The returned handle finishes once
    /// [`Hooks::shutdown`] was called and in-flight attempts are recorded.
    ///
    /// Deliveries this node id had leased before a restart but not finished (it crashed
    /// mid-attempt), and deliveries whose lease expired (their node died), are taken back
    /// first and sent again, with the same event id and bytes. Leases other nodes hold and
    /// keep renewing are left alone.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let d = dispatcher::Dispatcher::new(
            self.store.clone(),
            self.sender.clone(),
            self.config.clone(),
            self.node.clone(),
            self.cache.clone(),
        );
        let stop = self.stop.clone();
        let store = self.store.clone();
        let retention = self.config.history_retention;
        let pruner = tokio::spawn(async move {
            loop {
                let cutoff = now_ms() - retention.as_millis() as i64;
                if let Err(e) = store.deliveries().prune_history(cutoff).await {
                    tracing::warn!(error = %e, "pruning webhook history failed");
                }
                if let Err(e) = store.webhooks().forget_expired_signing_secrets().await {
                    tracing::warn!(error = %e, "forgetting expired signing secrets failed");
                }
                // Pings whose node died mid-send (this node's own are failed at its start).
                if let Err(e) = store.deliveries().fail_abandoned_pings().await {
                    tracing::warn!(error = %e, "failing abandoned pings failed");
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        // Webhooks another node created, changed or deleted (a shared database tells): the
        // snapshot is read again, so that node's webhook fires for pushes here too.
        let changed = self.store.webhooks_changed.clone();
        let (cache, store) = (self.cache.clone(), self.store.clone());
        let reloader = tokio::spawn(async move {
            loop {
                changed.notified().await;
                if let Err(e) = cache.reload(store.webhooks()).await {
                    tracing::error!(error = %e, "reloading the webhook snapshot failed");
                }
            }
        });
        tokio::spawn(async move {
            d.run(stop).await;
            pruner.abort();
            reloader.abort();
        })
    }

    pub fn shutdown(&self) {
        self.stop.notify_one();
    }

    pub async fn create(&self, name: &str, p: WebhookCreate) -> Result<WebhookRecord> {
        let name = WebhookName::parse(name)?;
        let props = p
            .properties
            .ok_or_else(|| HooksError::Invalid("properties: required".into()))?;
        let uri = props
            .service_uri
            .ok_or_else(|| HooksError::Invalid("serviceUri: required".into()))?;
        validate_uri(&uri)?;
        self.check_target(&uri).await?;
        self.store.check_space()?;
        let actions = validate_actions(&props.actions.unwrap_or_default())?;
        let headers = props.custom_headers.unwrap_or_default();
        validate_headers(&headers)?;
        let scope = props.scope.unwrap_or_default();
        Scope::parse(&scope)?;
        let status = match props.status {
            Some(s) => s.parse::<WebhookStatus>()?,
            None => WebhookStatus::Enabled,
        };
        let location = p.location.unwrap_or_else(|| self.config.region.clone());
        if location.is_empty()
            || location.len() > 64
            || !location
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(HooksError::Invalid(
                "location: must be 1 to 64 letters, digits or '-'".into(),
            ));
        }
        let signing = match props.signing.and_then(|s| s.enabled) {
            Some(true) => Signing {
                enabled: true,
                secret: Some(new_secret()?),
                previous: None,
            },
            _ => Signing::default(),
        };
        let payload_format = parse_payload_format(props.payload_format.as_deref())?;
        let now = now_ms();
        let rec = WebhookRecord {
            name: name.as_str().to_owned(),
            service_uri: uri,
            custom_headers: headers,
            actions,
            status,
            scope,
            location,
            tags: p.tags.unwrap_or_default(),
            signing,
            payload_format: payload_format.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        check_signing_headers(&rec)?;
        match self.store.webhooks().create_webhook(&rec).await {
            Ok(()) => {
                self.reload().await;
                Ok(rec)
            }
            Err(StoreError::Conflict) => Err(HooksError::Conflict(rec.name)),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn update(&self, name: &str, p: WebhookUpdate) -> Result<WebhookRecord> {
        if p.location.is_some() {
            return Err(HooksError::Invalid(
                "location: cannot be changed after creation".into(),
            ));
        }
        let mut rec = self.get(name).await?;
        self.store.check_space()?;
        if let Some(tags) = p.tags {
            rec.tags = tags;
        }
        if let Some(props) = p.properties {
            if let Some(u) = props.service_uri {
                validate_uri(&u)?;
                self.check_target(&u).await?;
                rec.service_uri = u;
            }
            if let Some(h) = props.custom_headers {
                validate_headers(&h)?;
                rec.custom_headers = h;
            }
            if let Some(a) = props.actions {
                rec.actions = validate_actions(&a)?;
            }
            if let Some(s) = props.scope {
                Scope::parse(&s)?;
                rec.scope = s;
            }
            if let Some(s) = props.status {
                rec.status = s.parse()?;
            }
            if let Some(enabled) = props.signing.and_then(|s| s.enabled) {
                rec.signing.enabled = enabled;
                // A secret is made the first time signing is enabled, and kept from then on
                // (the store keeps an existing one even if this update raced another).
                if enabled && rec.signing.secret.is_none() {
                    rec.signing.secret = Some(new_secret()?);
                }
            }
            if let Some(f) = parse_payload_format(props.payload_format.as_deref())? {
                rec.payload_format = f;
            }
        }
        check_signing_headers(&rec)?;
        rec.updated_at = now_ms();
        match self.store.webhooks().update_webhook(&rec).await {
            Ok(()) => {
                self.reload().await;
                Ok(rec)
            }
            Err(StoreError::NotFound) => Err(HooksError::NotFound(name.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// ARM's create-or-replace PUT: creates the webhook, or replaces an existing one whole
    /// (what the body omits goes back to its default, as a PUT does; the location cannot
    /// change). Returns the webhook and whether it was created.
    pub async fn create_or_replace(
        &self,
        name: &str,
        p: WebhookCreate,
    ) -> Result<(WebhookRecord, bool)> {
        match self.create(name, p.clone()).await {
            Ok(rec) => return Ok((rec, true)),
            Err(HooksError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let existing = self.get(name).await?;
        if p.location
            .as_deref()
            .is_some_and(|l| !l.eq_ignore_ascii_case(&existing.location))
        {
            return Err(HooksError::Invalid(
                "location: cannot be changed after creation".into(),
            ));
        }
        let props = p
            .properties
            .ok_or_else(|| HooksError::Invalid("properties: required".into()))?;
        if props.service_uri.is_none() {
            return Err(HooksError::Invalid("serviceUri: required".into()));
        }
        if props.actions.is_none() {
            return Err(HooksError::Invalid(
                "actions: at least one of push, delete, quarantine, chart_push, chart_delete is required".into(),
            ));
        }
        let whole = WebhookUpdate {
            location: None,
            tags: Some(p.tags.unwrap_or_default()),
            properties: Some(model::WebhookProps {
                custom_headers: Some(props.custom_headers.unwrap_or_default()),
                status: Some(props.status.unwrap_or_else(|| "enabled".into())),
                scope: Some(props.scope.unwrap_or_default()),
                signing: Some(model::SigningProps {
                    enabled: Some(props.signing.and_then(|s| s.enabled).unwrap_or(false)),
                }),
                payload_format: Some(
                    props
                        .payload_format
                        .unwrap_or_else(|| PayloadFormat::Acr.as_str().to_owned()),
                ),
                ..props
            }),
        };
        Ok((self.update(name, whole).await?, false))
    }

    /// A service URI whose literal address the SSRF guard blocks, or that reaches this
    /// server's own listener (a loop), is refused. Names are checked again at every send.
    async fn check_target(&self, uri: &str) -> Result<()> {
        guard_of(&self.config)
            .check_uri(uri)
            .await
            .map_err(|why| HooksError::Invalid(format!("serviceUri: {why}")))
    }

    /// Replaces a signing webhook's secret with a new one; the old one keeps signing beside
    /// it for `grace_period_secs` (default a day, at most a week; 0 drops it at once), so
    /// receivers can switch without rejecting a delivery. One old secret at most: rotating
    /// again within a grace period drops the older one.
    pub async fn rotate_signing_secret(
        &self,
        name: &str,
        grace_period_secs: Option<u64>,
    ) -> Result<WebhookRecord> {
        let grace = grace_period_secs.unwrap_or(DEFAULT_GRACE_PERIOD_SECS);
        if grace > MAX_GRACE_PERIOD_SECS {
            return Err(HooksError::Invalid(format!(
                "gracePeriodSeconds: must be at most {MAX_GRACE_PERIOD_SECS} (7 days)"
            )));
        }
        let rec = self.get(name).await?;
        if !rec.signing.enabled {
            return Err(HooksError::SigningDisabled(rec.name));
        }
        self.store.check_space()?;
        let until = now_ms() + (grace as i64) * 1000;
        match self
            .store
            .webhooks()
            .rotate_signing_secret(&rec.name, &new_secret()?, until)
            .await?
        {
            Some(rec) => {
                self.reload().await;
                Ok(rec)
            }
            // Deleted or its signing disabled since we read it.
            None => match self.store.webhooks().get_webhook(name).await? {
                Some(rec) => Err(HooksError::SigningDisabled(rec.name)),
                None => Err(HooksError::NotFound(name.to_owned())),
            },
        }
    }

    pub async fn get(&self, name: &str) -> Result<WebhookRecord> {
        self.store
            .webhooks()
            .get_webhook(name)
            .await?
            .ok_or_else(|| HooksError::NotFound(name.to_owned()))
    }

    pub async fn list(&self) -> Result<Vec<WebhookRecord>> {
        Ok(self.store.webhooks().list_webhooks().await?)
    }

    /// Returns false if there was no such webhook.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let deleted = self.store.webhooks().delete_webhook(name).await?;
        self.reload().await;
        Ok(deleted)
    }

    pub async fn callback_config(&self, name: &str) -> Result<CallbackConfig> {
        let rec = self.get(name).await?;
        Ok(CallbackConfig {
            service_uri: rec.service_uri,
            custom_headers: rec.custom_headers,
            signing_secret: rec.signing.secret.filter(|_| rec.signing.enabled),
        })
    }

    /// Sends a ping at once through the same sender, records the attempt, and returns the
    /// event id. A disabled webhook can still be pinged: the ping is how an operator tests an
    /// endpoint before enabling it.
    ///
    /// One ping is one attempt: its delivery never enters the retry queue, and the send and
    /// its record run on a task of their own, so a caller that disconnects still gets its
    /// ping sent and recorded exactly once.
    pub async fn ping(&self, name: &str) -> Result<String> {
        let rec = self.get(name).await?;
        self.store.check_space()?;
        // Time-ordered, as every event id (see the registry's events).
        let id = uuid::Uuid::now_v7().to_string();
        let body = Event::ping(id.clone(), chrono::Utc::now()).to_bytes();
        let delivery_id = self
            .store
            .deliveries()
            .create_ping(
                &rec.name,
                &id,
                &body,
                rec.payload_format,
                &self.node,
                dispatcher::lease_ms(self.config.timeout),
            )
            .await?;
        // A disabled webhook is not in the snapshot: the ping is sent with the record read
        // here.
        let target = HookSnapshot {
            name: rec.name.clone(),
            actions: rec.actions,
            scope: Scope::default(),
            location: rec.location,
            service_uri: rec.service_uri,
            custom_headers: rec.custom_headers,
            signing: rec.signing,
            payload_format: rec.payload_format,
        };
        let claimed = Claimed::new(
            QueuedDelivery {
                delivery_id,
                webhook: rec.name.clone(),
                event_id: id.clone(),
                attempt: 1,
                round_attempt: 1,
                max_attempts: Some(1),
                body,
                format: rec.payload_format,
            },
            &target,
            self.store.hooks.registry_id(),
        );
        let (sender, store) = (self.sender.clone(), self.store.clone());
        let task = tokio::spawn(async move {
            let res = sender.send(&claimed).await;
            let outcome = if res.success {
                Outcome::Delivered
            } else {
                Outcome::Failed
            };
            log_outcome(&claimed, &res.record, res.success);
            store
                .deliveries()
                .record_attempts(&[(res.record, outcome)])
                .await
        });
        match task.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(HooksError::Internal(StoreError::Unavailable(format!(
                    "ping task failed: {e}"
                ))));
            }
        }
        Ok(id)
    }

    /// One page of a webhook's history, newest first: attempts older than `before` (the id
    /// of the last entry of the previous page), or the newest.
    pub async fn list_events(
        &self,
        name: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<wharf_store::hooks::HistoryEntry>> {
        let rec = self.get(name).await?;
        Ok(self
            .store
            .deliveries()
            .list_history(&rec.name, before, limit)
            .await?)
    }

    /// Queues one event again (`event_id`), or every failed delivery of the webhook. A
    /// disabled webhook refuses: its deliveries would only be cancelled again.
    pub async fn redeliver(&self, name: &str, event_id: Option<&str>) -> Result<u64> {
        let rec = self.get(name).await?;
        if rec.status == WebhookStatus::Disabled {
            return Err(HooksError::Disabled(rec.name));
        }
        let unknown = match event_id {
            Some(e) => (!self.store.deliveries().has_delivery(&rec.name, e).await?).then_some(e),
            None => None,
        };
        if let Some(e) = unknown {
            return Err(HooksError::Invalid(format!(
                "eventId: no event {e} for webhook {}",
                rec.name
            )));
        }
        let n = self
            .store
            .deliveries()
            .redeliver(&rec.name, event_id)
            .await?;
        if n > 0 {
            self.store.wake_dispatcher();
        }
        Ok(n)
    }
}
