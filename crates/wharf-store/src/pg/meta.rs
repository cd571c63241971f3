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
pub(crate) struct PgMeta {
    pg: Pg,
    blobs: BlobStore,
}

impl PgMeta {
    pub(crate) fn new(pg: Pg, blobs: BlobStore) -> Self {
        PgMeta { pg, blobs }
    }
}

#[async_trait]
impl RegistryMeta for PgMeta {
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<i64>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn blob_size_anywhere(&self, digest: &Digest) -> Result<Option<i64>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn blob_holders(&self, digest: &Digest) -> Result<Vec<(RepoName, i64)>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        algorithm: &str,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn upload_ids(&self) -> Result<Vec<(String, bool)>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn stale_uploads(&self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRow>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn put_manifest(
        &self,
        m: &NewManifest,
        events: &[OutboxEvent],
        hooks: &Subscribers,
    ) -> Result<usize, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delete_stale_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: i64,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(DeletedManifest, usize)>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delete_repository(
        &self,
        repo: &RepoName,
        hooks: &Subscribers,
        events: DeleteEvents<'_>,
    ) -> Result<Option<(Vec<DeletedManifest>, usize)>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn manifest_config(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestConfig>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<Digest>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
        quarantine_reader: bool,
    ) -> Result<Option<Vec<String>>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn catalog(&self, last: Option<&str>, n: Option<u32>) -> Result<Vec<String>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        quarantine_reader: bool,
    ) -> Result<Vec<Referrer>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }
}
