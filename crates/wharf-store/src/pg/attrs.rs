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
pub(crate) struct PgAttrs {
    pg: Pg,
}

impl PgAttrs {
    pub(crate) fn new(pg: Pg) -> Self {
        PgAttrs { pg }
    }
}

#[async_trait]
impl AttributeStore for PgAttrs {
    async fn stale_untagged(&self, cutoff_ms: i64) -> Result<Vec<StaleManifest>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    fn any_locks(&self) -> bool {
        true
    }

    fn any_quarantined(&self) -> bool {
        true
    }

    async fn blob_quarantined(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn repository(&self, repo: &RepoName) -> Result<Option<RepoAttrs>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn repo_readable(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn repo_writable(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn tags(
        &self,
        repo: &RepoName,
        listing: bool,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<TagAttrs>>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn manifests(
        &self,
        repo: &RepoName,
        listing: bool,
        bodies_of: &[&str],
    ) -> Result<Option<Vec<ManifestAttrs>>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Option<ManifestAttrs>>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn update_repository(
        &self,
        repo: &RepoName,
        patch: RepoPatch,
    ) -> Result<Option<RepoAttrs>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn update_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        patch: FlagsPatch,
    ) -> Result<Option<Option<TagAttrs>>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn update_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        patch: ManifestPatch,
        hooks: &Subscribers,
        release: ReleaseEvents<'_>,
    ) -> Result<Option<Option<(ManifestAttrs, usize)>>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }
}
