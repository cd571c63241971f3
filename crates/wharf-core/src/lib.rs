//! Wharf's vocabulary, pure: digests, repository names, tags and references, manifest parsing,
//! OCI error codes, webhook actions and scopes, and the ACR event model with its JSON rendering.
//!
//! This crate does no I/O. It must not depend on tokio, axum, sqlx or any other crate of the
//! workspace: every other crate depends on it, never the other way round.

pub mod arm;
pub mod digest;
pub mod error;
pub mod event;
pub mod manifest;
pub mod name;
pub mod payload;
pub mod webhook;

pub use arm::ArmIdentity;
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::ErrorCode;
pub use event::{ChartAction, Event, EventAction, EventRequest, EventTarget, format_timestamp};
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest, parse_manifest};
pub use name::{NameError, Reference, RepoName, Tag};
pub use payload::{PayloadFormat, Rendered};
pub use webhook::{Scope, WebhookAction, WebhookError, WebhookName, WebhookStatus};
