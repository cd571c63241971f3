//! STUB: to be replaced by the PostgreSQL implementation.
#![allow(unused_imports, unused_variables, dead_code)]

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

use super::Pg;
use crate::handles::*;

#[derive(Debug)]
pub(crate) struct PgWebhooks {
    pg: Pg,
}

impl PgWebhooks {
    pub(crate) fn new(pg: Pg) -> Self {
        PgWebhooks { pg }
    }
}

#[async_trait]
impl WebhookStore for PgWebhooks {
    async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn update_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn get_webhook(&self, name: &str) -> Result<Option<WebhookRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn rotate_signing_secret(
        &self,
        name: &str,
        new_secret: &str,
        previous_until: i64,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn forget_expired_signing_secrets(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delete_webhook(&self, name: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }
}

#[derive(Debug)]
pub(crate) struct PgDeliveries {
    pg: Pg,
}

impl PgDeliveries {
    pub(crate) fn new(pg: Pg) -> Self {
        PgDeliveries { pg }
    }
}

#[async_trait]
impl DeliveryStore for PgDeliveries {
    async fn claim_due(
        &self,
        limit: usize,
        room: &Room,
        lease_ms: i64,
        owner: &str,
    ) -> Result<Vec<QueuedDelivery>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn release_leases(&self, ids: &[i64]) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn renew_leases(
        &self,
        ids: &[i64],
        owner: &str,
        lease_ms: i64,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delivery_leases(&self) -> Result<Vec<(i64, String, i64)>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn recover_deliveries(&self, owner: &str) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn fail_abandoned_pings(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn record_attempts(&self, batch: &[(AttemptRecord, Outcome)]) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
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
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn list_history(
        &self,
        webhook: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn redeliver(&self, webhook: &str, event_id: Option<&str>) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn has_delivery(&self, webhook: &str, event_id: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn prune_history(&self, cutoff_ms: i64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delivery_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }
}
