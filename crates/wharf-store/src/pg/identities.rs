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
pub(crate) struct PgIdentities {
    pg: Pg,
}

impl PgIdentities {
    pub(crate) fn new(pg: Pg) -> Self {
        PgIdentities { pg }
    }
}

#[async_trait]
impl IdentityStore for PgIdentities {
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn init_settings(&self, pairs: &[(&str, &str)]) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn all_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn scope_maps(&self) -> Result<Vec<ScopeMapRow>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn put_scope_map(&self, m: &ScopeMapRow) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delete_scope_map(&self, name: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn put_token(&self, t: &TokenRow) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }
}
