//! The SQLite backend's implementation of the handles in `handles.rs`.
//!
//! Each method delegates to the inherent method of the same name in `meta.rs`, `attrs.rs`,
//! `policies.rs`, `gc.rs`, `hooks.rs` or `identities.rs`, where the SQL, the group commit of
//! manifest puts and the fast lane live; nothing here changes what is written or when it is
//! made durable. [`Store`] hands out the bundles each consumer holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use wharf_core::{Digest, PayloadFormat, Reference, RepoName, Tag};

use crate::attrs::{
    Attributes, FlagsPatch, ManifestAttrs, ManifestPatch, RepoAttrs, RepoPatch, StaleManifest,
    TagAttrs,
};
use crate::handles::{
    AttributeStore, DeleteEvents, DeliveryStore, HookStore, IdentityStore, PolicyStore,
    RegistryMeta, RegistryStore, ReleaseEvents, WebhookStore,
};
use crate::hooks::{
    AttemptRecord, DeliveryQueue, HistoryEntry, Outcome, QueuedDelivery, Room, WebhookDefs,
    WebhookRecord,
};
use crate::identities::{Identities, ScopeMapRow, TokenRow};
use crate::meta::{
    DeletedManifest, ManifestConfig, ManifestRow, Meta, NewManifest, Referrer, UploadRow,
};
use crate::outbox::{OutboxEvent, Subscribers};
use crate::policies::{Policies, PoliciesPatch, RegistryPolicies};
use crate::{SqliteStore, StoreError};

impl SqliteStore {
    /// The registry's handles over this data directory.
    pub fn registry_store(&self) -> RegistryStore {
        RegistryStore {
            meta: Arc::new(self.meta.clone()),
            attrs: Arc::new(self.attributes()),
            policies: Arc::new(self.policies()),
            gc: Arc::new(crate::gc::SqliteGc::new(
                self.meta.clone(),
                self.blobs.clone(),
            )),
            blobs: self.blobs.clone(),
            hooks: self.hooks.clone(),
            space: self.space.clone(),
            outbox_signal: self.outbox_signal.clone(),
            shared: false,
        }
    }

    /// The webhook service's handles over this data directory.
    pub fn hook_store(&self) -> HookStore {
        HookStore {
            webhooks: Arc::new(self.webhooks()),
            deliveries: Arc::new(self.deliveries()),
            hooks: self.hooks.clone(),
            lane: self.meta.lane.clone(),
            outbox_signal: self.outbox_signal.clone(),
            space: self.space.clone(),
            webhooks_changed: Arc::default(),
        }
    }

    /// The access-control handle over this data directory.
    pub fn identity_store(&self) -> Arc<dyn IdentityStore> {
        Arc::new(self.identities())
    }
}

#[async_trait]
impl RegistryMeta for Meta {
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Meta::repo_exists(self, repo).await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<i64>, StoreError> {
        Meta::blob_size(self, repo, digest).await
    }

    async fn blob_size_anywhere(&self, digest: &Digest) -> Result<Option<i64>, StoreError> {
        Meta::blob_size_anywhere(self, digest).await
    }

    async fn blob_holders(&self, digest: &Digest) -> Result<Vec<(RepoName, i64)>, StoreError> {
        Meta::blob_holders(self, digest).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Meta::unlink_blob(self, repo, digest).await
    }

    async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        algorithm: &str,
    ) -> Result<(), StoreError> {
        Meta::create_upload(self, id, repo, algorithm).await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError> {
        Meta::get_upload(self, id).await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        Meta::delete_upload(self, id).await
    }

    async fn upload_ids(&self) -> Result<Vec<(String, bool)>, StoreError> {
        Meta::upload_ids(self).await
    }

    async fn stale_uploads(&self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        Meta::stale_uploads(self, cutoff_ms).await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRow>, StoreError> {
        Meta::get_manifest(self, repo, reference, with_body).await
    }

    async fn put_manifest(
        &self,
        m: &NewManifest,
        events: &[OutboxEvent],
        hooks: &Subscribers,
    ) -> Result<usize, StoreError> {
        Meta::put_manifest(self, m, events, hooks).await
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError> {
        Meta::delete_manifest(self, repo, digest, hooks, events).await
    }

    async fn delete_stale_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: i64,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError> {
        Meta::delete_stale_manifest(self, repo, digest, cutoff_ms, hooks, events).await
    }

    async fn delete_repository(
        &self,
        repo: &RepoName,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(Vec<DeletedManifest>, usize)>, StoreError> {
        Meta::delete_repository(self, repo, hooks, events).await
    }

    async fn manifest_config(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestConfig>, StoreError> {
        Meta::manifest_config(self, repo, digest).await
    }

    async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<Digest>, StoreError> {
        Meta::manifest_digests(self, repo).await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        Meta::delete_tag(self, repo, tag).await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<String>>, StoreError> {
        Meta::list_tags(self, repo, last, n, quarantine_reader).await
    }

    async fn catalog(&self, last: Option<&str>, n: Option<u32>) -> Result<Vec<String>, StoreError> {
        Meta::catalog(self, last, n).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        quarantine_reader: bool,
    ) -> Result<Vec<Referrer>, StoreError> {
        Meta::referrers(self, repo, subject, quarantine_reader).await
    }
}

#[async_trait]
impl AttributeStore for Attributes {
    async fn stale_untagged(&self, cutoff_ms: i64) -> Result<Vec<StaleManifest>, StoreError> {
        Attributes::stale_untagged(self, cutoff_ms).await
    }

    fn any_locks(&self) -> bool {
        Attributes::any_locks(self)
    }

    fn any_quarantined(&self) -> bool {
        Attributes::any_quarantined(self)
    }

    async fn blob_quarantined(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Attributes::blob_quarantined(self, repo, digest).await
    }

    async fn repository(&self, repo: &RepoName) -> Result<Option<RepoAttrs>, StoreError> {
        Attributes::repository(self, repo).await
    }

    async fn repo_readable(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Attributes::repo_readable(self, repo).await
    }

    async fn repo_writable(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Attributes::repo_writable(self, repo).await
    }

    async fn tags(
        &self,
        repo: &RepoName,
        listing: bool,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<TagAttrs>>, StoreError> {
        Attributes::tags(self, repo, listing, quarantine_reader).await
    }

    async fn tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        Attributes::tag(self, repo, tag).await
    }

    async fn manifests(
        &self,
        repo: &RepoName,
        listing: bool,
        bodies_of: &[&str],
    ) -> Result<Option<Vec<ManifestAttrs>>, StoreError> {
        Attributes::manifests(self, repo, listing, bodies_of).await
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Option<ManifestAttrs>>, StoreError> {
        Attributes::manifest(self, repo, digest).await
    }

    async fn update_repository(
        &self,
        repo: &RepoName,
        patch: RepoPatch,
    ) -> Result<Option<RepoAttrs>, StoreError> {
        Attributes::update_repository(self, repo, patch).await
    }

    async fn update_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        patch: FlagsPatch,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        Attributes::update_tag(self, repo, tag, patch).await
    }

    async fn update_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        patch: ManifestPatch,
        hooks: &Subscribers,
        release: ReleaseEvents<'_>,
    ) -> Result<Option<Option<(ManifestAttrs, usize)>>, StoreError> {
        Attributes::update_manifest(self, repo, digest, patch, hooks, release).await
    }
}

#[async_trait]
impl PolicyStore for Policies {
    async fn get(&self) -> Result<RegistryPolicies, StoreError> {
        Policies::get(self).await
    }

    async fn update(&self, patch: PoliciesPatch) -> Result<RegistryPolicies, StoreError> {
        Policies::update(self, patch).await
    }
}

#[async_trait]
impl WebhookStore for WebhookDefs {
    async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        WebhookDefs::create_webhook(self, w).await
    }

    async fn update_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        WebhookDefs::update_webhook(self, w).await
    }

    async fn get_webhook(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        WebhookDefs::get_webhook(self, name).await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        WebhookDefs::list_webhooks(self).await
    }

    async fn rotate_signing_secret(
        &self,
        name: &str,
        new_secret: &str,
        previous_until: i64,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        WebhookDefs::rotate_signing_secret(self, name, new_secret, previous_until).await
    }

    async fn forget_expired_signing_secrets(&self) -> Result<u64, StoreError> {
        WebhookDefs::forget_expired_signing_secrets(self).await
    }

    async fn delete_webhook(&self, name: &str) -> Result<bool, StoreError> {
        WebhookDefs::delete_webhook(self, name).await
    }
}

#[async_trait]
impl DeliveryStore for DeliveryQueue {
    async fn claim_due(
        &self,
        limit: usize,
        room: &Room,
        lease_ms: i64,
        owner: &str,
    ) -> Result<Vec<QueuedDelivery>, StoreError> {
        DeliveryQueue::claim_due(self, limit, room, lease_ms, owner).await
    }

    async fn release_leases(&self, ids: &[i64]) -> Result<(), StoreError> {
        DeliveryQueue::release_leases(self, ids).await
    }

    async fn renew_leases(
        &self,
        ids: &[i64],
        owner: &str,
        lease_ms: i64,
    ) -> Result<u64, StoreError> {
        DeliveryQueue::renew_leases(self, ids, owner, lease_ms).await
    }

    async fn delivery_leases(&self) -> Result<Vec<(i64, String, i64)>, StoreError> {
        DeliveryQueue::delivery_leases(self).await
    }

    async fn recover_deliveries(&self, owner: &str) -> Result<u64, StoreError> {
        DeliveryQueue::recover_deliveries(self, owner).await
    }

    async fn fail_abandoned_pings(&self) -> Result<u64, StoreError> {
        DeliveryQueue::fail_abandoned_pings(self).await
    }

    async fn record_attempts(&self, batch: &[(AttemptRecord, Outcome)]) -> Result<(), StoreError> {
        DeliveryQueue::record_attempts(self, batch).await
    }

    async fn create_ping(
        &self,
        webhook: &str,
        event_id: &str,
        body: &[u8],
        format: PayloadFormat,
        owner: &str,
        lease_ms: i64,
    ) -> Result<i64, StoreError> {
        DeliveryQueue::create_ping(self, webhook, event_id, body, format, owner, lease_ms).await
    }

    async fn list_history(
        &self,
        webhook: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        DeliveryQueue::list_history(self, webhook, before, limit).await
    }

    async fn redeliver(&self, webhook: &str, event_id: Option<&str>) -> Result<u64, StoreError> {
        DeliveryQueue::redeliver(self, webhook, event_id).await
    }

    async fn has_delivery(&self, webhook: &str, event_id: &str) -> Result<bool, StoreError> {
        DeliveryQueue::has_delivery(self, webhook, event_id).await
    }

    async fn prune_history(&self, cutoff_ms: i64) -> Result<(), StoreError> {
        DeliveryQueue::prune_history(self, cutoff_ms).await
    }

    async fn delivery_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        DeliveryQueue::delivery_counts(self).await
    }
}

#[async_trait]
impl IdentityStore for Identities {
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Identities::setting(self, key).await
    }

    async fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
        Identities::set_settings(self, pairs).await
    }

    async fn init_settings(&self, pairs: &[(&str, &str)]) -> Result<bool, StoreError> {
        Identities::init_settings(self, pairs).await
    }

    async fn all_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        Identities::all_settings(self).await
    }

    async fn scope_maps(&self) -> Result<Vec<ScopeMapRow>, StoreError> {
        Identities::scope_maps(self).await
    }

    async fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>, StoreError> {
        Identities::scope_map(self, name).await
    }

    async fn put_scope_map(&self, m: &ScopeMapRow) -> Result<bool, StoreError> {
        Identities::put_scope_map(self, m).await
    }

    async fn delete_scope_map(&self, name: &str) -> Result<bool, StoreError> {
        Identities::delete_scope_map(self, name).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        Identities::tokens(self).await
    }

    async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError> {
        Identities::token(self, name).await
    }

    async fn put_token(&self, t: &TokenRow) -> Result<bool, StoreError> {
        Identities::put_token(self, t).await
    }

    async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        Identities::delete_token(self, name).await
    }
}
