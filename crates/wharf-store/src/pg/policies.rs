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
pub(crate) struct PgPolicies {
    pg: Pg,
}

impl PgPolicies {
    pub(crate) fn new(pg: Pg) -> Self {
        PgPolicies { pg }
    }
}

#[async_trait]
impl PolicyStore for PgPolicies {
    async fn get(&self) -> Result<RegistryPolicies, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }

    async fn update(&self, patch: PoliciesPatch) -> Result<RegistryPolicies, StoreError> {
        Err(StoreError::Unavailable(
            "postgres: not implemented yet".into(),
        ))
    }
}
