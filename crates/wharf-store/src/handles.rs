//! The store's boundary: the narrow, trait-based handles each consumer holds, and the small
//! bundles of them each consumer is given.
//!
//! | handle | trait | held by |
//! |---|---|---|
//! | registry metadata (repositories, blob links, manifests, tags, upload sessions, the outbox writes of those changes) | [`RegistryMeta`] | `wharf-registry` |
//! | changeable attributes (locks, quarantine, `/acr/v1` reads) | [`AttributeStore`] | `wharf-registry` |
//! | registry policies | [`PolicyStore`] | `wharf-registry` |
//! | garbage collection's storage side | [`GcStore`] | `wharf-registry` |
//! | webhook definitions | [`WebhookStore`] | `wharf-hooks` |
//! | delivery queue and history | [`DeliveryStore`] | `wharf-hooks` |
//! | identities (access control) | [`IdentityStore`] | `wharf-auth` |
//! | blobs | [`BlobStore`] (an enum, static dispatch: its reads return streams) | `wharf-registry` |
//!
//! A backend implements the traits and fills in [`RegistryStore`] and [`HookStore`]; the
//! consumers name nothing else of it. SQLite is the first backend: the traits are implemented
//! in `sqlite.rs` by delegating to the inherent methods of [`crate::Meta`],
//! [`crate::Attributes`], [`crate::Policies`], [`crate::identities::Identities`],
//! [`crate::hooks::WebhookDefs`] and [`crate::hooks::DeliveryQueue`], where the SQL, the
//! group commit of manifest puts and the fast lane live: they are that backend's business,
//! not the boundary's.
//!
//! The traits use `async_trait` (a boxed future per call) so that consumers can hold
//! `Arc<dyn …>`: native `async fn` in traits is not dyn-compatible, and making every consumer
//! generic over its backend would spread type parameters through four crates. One allocation
//! per call is noise next to the database round trip behind it.
//!
//! Closures that build events from what a delete or a release found (`events`, `release`) are
//! passed as `&dyn Fn`, so that they run inside the backend's transaction, as the outbox
//! requires (DESIGN invariant 3), without making the methods generic.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use wharf_core::{Digest, PayloadFormat, Reference, RepoName, Tag};

use crate::StoreError;
use crate::attrs::{
    FlagsPatch, ManifestAttrs, ManifestPatch, Release, RepoAttrs, RepoPatch, StaleManifest,
    TagAttrs,
};
use crate::blobs::BlobStore;
use crate::gc::{GcFigures, GcOptions};
use crate::hooks::{AttemptRecord, HistoryEntry, Outcome, QueuedDelivery, Room, WebhookRecord};
use crate::identities::{ScopeMapRow, TokenRow};
use crate::meta::{DeletedManifest, ManifestConfig, ManifestRow, NewManifest, Referrer, UploadRow};
use crate::outbox::{FastLane, OutboxEvent, Subscribers};
use crate::policies::{PoliciesPatch, RegistryPolicies};
use crate::space::SpaceGuard;

/// Builds the events of a deleted manifest, inside the delete's transaction.
pub type DeleteEvents<'a> = &'a (dyn Fn(&DeletedManifest) -> Vec<OutboxEvent> + Send + Sync);
/// Builds the held-back push events of a released manifest, inside the release's transaction.
pub type ReleaseEvents<'a> = &'a (dyn Fn(&Release) -> Vec<OutboxEvent> + Send + Sync);

/// Registry metadata: repositories, blob links, manifests, tags, upload sessions, referrers.
/// Every change that raises events writes them to the outbox in its own transaction, with one
/// delivery row per webhook that `hooks` names (DESIGN invariant 3); the returned counts say
/// how many deliveries were queued, so the caller knows whether to wake the dispatcher.
#[async_trait]
pub trait RegistryMeta: Send + Sync + std::fmt::Debug {
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError>;

    /// Size of a blob if it is linked in `repo`.
    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<i64>, StoreError>;
    /// Size of a blob linked in any repository.
    async fn blob_size_anywhere(&self, digest: &Digest) -> Result<Option<i64>, StoreError>;
    /// Every repository linking a blob, with its size.
    async fn blob_holders(&self, digest: &Digest) -> Result<Vec<(RepoName, i64)>, StoreError>;
    /// Removes a blob's link from a repository; false if there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;

    async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        algorithm: &str,
    ) -> Result<(), StoreError>;
    async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError>;
    /// Removes a session's row; false if there was none.
    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError>;
    /// Every session id, with whether it finished.
    async fn upload_ids(&self) -> Result<Vec<(String, bool)>, StoreError>;
    /// Sessions started before `cutoff_ms`.
    async fn stale_uploads(&self, cutoff_ms: i64) -> Result<Vec<String>, StoreError>;

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRow>, StoreError>;
    /// Stores a manifest, its tags and its events in one transaction, after checking that
    /// every required blob and child manifest is in the repository with the stated size.
    /// Returns how many deliveries were queued.
    async fn put_manifest(
        &self,
        m: &NewManifest,
        events: &[OutboxEvent],
        hooks: &Subscribers,
    ) -> Result<usize, StoreError>;
    /// Deletes a manifest and its tags with the events `events` builds, in one transaction.
    /// None: no such manifest.
    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError>;
    /// Like [`RegistryMeta::delete_manifest`], only if the manifest is still a retention
    /// candidate (untagged, unlocked, not updated since `cutoff_ms`) inside the transaction.
    async fn delete_stale_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: i64,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError>;
    /// Deletes a repository with everything in it, raising each manifest's events.
    async fn delete_repository(
        &self,
        repo: &RepoName,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(Vec<DeletedManifest>, usize)>, StoreError>;
    async fn manifest_config(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestConfig>, StoreError>;
    async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<Digest>, StoreError>;

    /// Removes a tag (no event, as on ACR); false if there was none.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError>;
    /// Tags in order after `last`, at most `n`. None: no such repository.
    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<String>>, StoreError>;
    async fn catalog(&self, last: Option<&str>, n: Option<u32>) -> Result<Vec<String>, StoreError>;
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        quarantine_reader: bool,
    ) -> Result<Vec<Referrer>, StoreError>;
}

/// ACR's changeable attributes (locks, quarantine) and the `/acr/v1` reads. `any_locks` and
/// `any_quarantined` are answered from memory: the push path asks them on every request.
#[async_trait]
pub trait AttributeStore: Send + Sync + std::fmt::Debug {
    async fn stale_untagged(&self, cutoff_ms: i64) -> Result<Vec<StaleManifest>, StoreError>;
    fn any_locks(&self) -> bool;
    fn any_quarantined(&self) -> bool;
    async fn blob_quarantined(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;
    async fn repository(&self, repo: &RepoName) -> Result<Option<RepoAttrs>, StoreError>;
    async fn repo_readable(&self, repo: &RepoName) -> Result<bool, StoreError>;
    async fn repo_writable(&self, repo: &RepoName) -> Result<bool, StoreError>;
    async fn tags(
        &self,
        repo: &RepoName,
        listing: bool,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<TagAttrs>>, StoreError>;
    async fn tag(&self, repo: &RepoName, tag: &Tag)
    -> Result<Option<Option<TagAttrs>>, StoreError>;
    async fn manifests(
        &self,
        repo: &RepoName,
        listing: bool,
        bodies_of: &[&str],
    ) -> Result<Option<Vec<ManifestAttrs>>, StoreError>;
    async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Option<ManifestAttrs>>, StoreError>;
    async fn update_repository(
        &self,
        repo: &RepoName,
        patch: RepoPatch,
    ) -> Result<Option<RepoAttrs>, StoreError>;
    async fn update_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        patch: FlagsPatch,
    ) -> Result<Option<Option<TagAttrs>>, StoreError>;
    /// Changes a manifest's flags or quarantine state; a release to `Passed` writes the
    /// held-back push events `release` builds in the same transaction.
    async fn update_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        patch: ManifestPatch,
        hooks: &Subscribers,
        release: ReleaseEvents<'_>,
    ) -> Result<Option<Option<(ManifestAttrs, usize)>>, StoreError>;
}

/// The registry policies (quarantine, retention). `get` is on the push path: a backend
/// answers it from memory where it can.
#[async_trait]
pub trait PolicyStore: Send + Sync + std::fmt::Debug {
    async fn get(&self) -> Result<RegistryPolicies, StoreError>;
    async fn update(&self, patch: PoliciesPatch) -> Result<RegistryPolicies, StoreError>;
}

/// Garbage collection's storage side (see `gc.rs` for why a concurrent push never loses a
/// blob; a backend must keep that argument true).
#[async_trait]
pub trait GcStore: Send + Sync + std::fmt::Debug {
    /// Links published content into `repo`, checking inside the linking transaction that the
    /// content is still there (`Unavailable` if a collection removed it).
    async fn link_published(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: i64,
        now_ms: i64,
        upload: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Refreshes a link's last use if older than `refresh_ms`; false if the link is gone.
    async fn touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_ms: i64,
        refresh_ms: i64,
    ) -> Result<bool, StoreError>;
    async fn collect(&self, opts: GcOptions) -> Result<GcFigures, StoreError>;
}

/// Webhook definitions, secrets sealed at rest and opened on the way out.
#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug {
    /// `Conflict` if the name is taken.
    async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError>;
    /// `NotFound` if there is no such webhook.
    async fn update_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError>;
    async fn get_webhook(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError>;
    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError>;
    async fn rotate_signing_secret(
        &self,
        name: &str,
        new_secret: &str,
        previous_until: i64,
    ) -> Result<Option<WebhookRecord>, StoreError>;
    async fn forget_expired_signing_secrets(&self) -> Result<u64, StoreError>;
    /// Deletes a webhook with its deliveries and history; false if there was none.
    async fn delete_webhook(&self, name: &str) -> Result<bool, StoreError>;
}

/// The delivery queue (claims with node-owned leases, attempt results) and the history.
#[async_trait]
pub trait DeliveryStore: Send + Sync + std::fmt::Debug {
    /// Leases up to `limit` due deliveries to `owner` for `lease_ms`, each webhook's oldest
    /// first and no more per webhook than `room` allows.
    async fn claim_due(
        &self,
        limit: usize,
        room: &Room,
        lease_ms: i64,
        owner: &str,
    ) -> Result<Vec<QueuedDelivery>, StoreError>;
    /// Gives leased deliveries back to the queue, due now.
    async fn release_leases(&self, ids: &[i64]) -> Result<(), StoreError>;
    /// Extends the leases `owner` still holds; returns how many.
    async fn renew_leases(
        &self,
        ids: &[i64],
        owner: &str,
        lease_ms: i64,
    ) -> Result<u64, StoreError>;
    /// Every leased delivery: id, owner, lease end.
    async fn delivery_leases(&self) -> Result<Vec<(i64, String, i64)>, StoreError>;
    /// Start-up: takes back `owner`'s own leases and expired ones; returns how many.
    async fn recover_deliveries(&self, owner: &str) -> Result<u64, StoreError>;
    async fn fail_abandoned_pings(&self) -> Result<u64, StoreError>;
    /// Records attempts and moves their deliveries on, in one transaction.
    async fn record_attempts(&self, batch: &[(AttemptRecord, Outcome)]) -> Result<(), StoreError>;
    async fn create_ping(
        &self,
        webhook: &str,
        event_id: &str,
        body: &[u8],
        format: PayloadFormat,
        owner: &str,
        lease_ms: i64,
    ) -> Result<i64, StoreError>;
    /// A webhook's history, newest first, before the id `before`.
    async fn list_history(
        &self,
        webhook: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Queues a delivery again (one event, or every failed one); returns how many.
    async fn redeliver(&self, webhook: &str, event_id: Option<&str>) -> Result<u64, StoreError>;
    async fn has_delivery(&self, webhook: &str, event_id: &str) -> Result<bool, StoreError>;
    async fn prune_history(&self, cutoff_ms: i64) -> Result<(), StoreError>;
    /// Deliveries per state.
    async fn delivery_counts(&self) -> Result<BTreeMap<String, i64>, StoreError>;
}

/// Identities for access control. Values arrive sealed or hashed: a backend never sees a
/// secret in clear.
#[async_trait]
pub trait IdentityStore: Send + Sync + std::fmt::Debug {
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets several settings in one transaction.
    async fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<(), StoreError>;
    /// Sets the settings only if none is set yet (first start); true if it did.
    async fn init_settings(&self, pairs: &[(&str, &str)]) -> Result<bool, StoreError>;
    async fn all_settings(&self) -> Result<Vec<(String, String)>, StoreError>;
    async fn scope_maps(&self) -> Result<Vec<ScopeMapRow>, StoreError>;
    async fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>, StoreError>;
    /// Creates or replaces; true if created.
    async fn put_scope_map(&self, m: &ScopeMapRow) -> Result<bool, StoreError>;
    /// `Conflict` while a token uses it; false if there was none.
    async fn delete_scope_map(&self, name: &str) -> Result<bool, StoreError>;
    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;
    async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError>;
    /// Creates or replaces; true if created.
    async fn put_token(&self, t: &TokenRow) -> Result<bool, StoreError>;
    async fn delete_token(&self, name: &str) -> Result<bool, StoreError>;
}

/// What the registry holds of the store: its metadata handles, the blobs, the outbox's
/// question to the webhook service, the free-space floor and the dispatcher's wake-up.
#[derive(Clone, Debug)]
pub struct RegistryStore {
    pub meta: Arc<dyn RegistryMeta>,
    pub attrs: Arc<dyn AttributeStore>,
    pub policies: Arc<dyn PolicyStore>,
    pub gc: Arc<dyn GcStore>,
    pub blobs: BlobStore,
    /// Who wants which event (names only), and what the renderers need.
    pub hooks: Subscribers,
    pub space: SpaceGuard,
    /// Wakes this node's dispatcher after a change queued deliveries.
    pub outbox_signal: Arc<Notify>,
    /// Whether other nodes share this store (a shared database): state cached in this
    /// process, such as an upload session's offset, may then be stale.
    pub shared: bool,
}

impl RegistryStore {
    pub fn attributes(&self) -> &dyn AttributeStore {
        self.attrs.as_ref()
    }

    pub fn policies(&self) -> &dyn PolicyStore {
        self.policies.as_ref()
    }

    pub fn gc(&self) -> &dyn GcStore {
        self.gc.as_ref()
    }

    /// Ok if a write may go ahead under the free-space floor.
    pub fn check_space(&self) -> Result<(), StoreError> {
        self.space.check()
    }

    /// Tells the dispatcher that new deliveries may be due.
    pub fn wake_dispatcher(&self) {
        self.outbox_signal.notify_one();
    }
}

/// What the webhook service holds of the store: the definitions, the queue and history, the
/// outbox's question it answers (attached at start-up), the fast lane committed deliveries
/// arrive by, the wake-up the dispatcher waits on, and the free-space floor.
#[derive(Clone, Debug)]
pub struct HookStore {
    pub webhooks: Arc<dyn WebhookStore>,
    pub deliveries: Arc<dyn DeliveryStore>,
    pub hooks: Subscribers,
    /// Where committed deliveries are handed to this node's dispatcher.
    pub lane: Arc<FastLane>,
    pub outbox_signal: Arc<Notify>,
    pub space: SpaceGuard,
    /// Fired when another node changed the webhook definitions: the snapshot must be read
    /// again. A backend one process owns (SQLite) never fires it.
    pub webhooks_changed: Arc<Notify>,
}

impl HookStore {
    pub fn webhooks(&self) -> &dyn WebhookStore {
        self.webhooks.as_ref()
    }

    pub fn deliveries(&self) -> &dyn DeliveryStore {
        self.deliveries.as_ref()
    }

    /// Ok if a write may go ahead under the free-space floor.
    pub fn check_space(&self) -> Result<(), StoreError> {
        self.space.check()
    }

    /// Tells the dispatcher that new deliveries may be due.
    pub fn wake_dispatcher(&self) {
        self.outbox_signal.notify_one();
    }
}
