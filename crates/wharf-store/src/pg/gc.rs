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
pub(crate) struct PgGc {
    pg: Pg,
    blobs: BlobStore,
}

impl PgGc {
    pub(crate) fn new(pg: Pg, blobs: BlobStore) -> Self {
        PgGc { pg, blobs }
    }
}

#[async_trait]
impl GcStore for PgGc {
    async fn link_published(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: i64,
        now_ms: i64,
        upload: Option<&str>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_ms: i64,
        refresh_ms: i64,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn collect(&self, opts: GcOptions) -> Result<GcFigures, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }
}
