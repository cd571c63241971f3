//! Manifest parsing: OCI image manifests and indexes, Docker schema 2 manifests and manifest
//! lists, and artifacts (any `artifactType` or config media type).
//!
//! The registry stores the client's exact bytes; this module only extracts what the registry
//! must check or index: the blobs and child manifests referenced, the `subject`, the media type
//! and the artifact type. Unknown fields are ignored, as the image spec requires.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;

pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
    pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("manifest field {0} is missing or invalid")]
    Field(&'static str),
}

/// A descriptor as it appears in a manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

/// What kind of manifest a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (OCI or Docker schema 2): config + layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// The parts of a manifest the registry acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    /// The media type the manifest is served with.
    pub media_type: String,
    pub config: Option<Descriptor>,
    /// Layers of an image manifest; child manifests of an index.
    pub references: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without it the config media type (as the
    /// referrers API reports it).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    /// Blobs this manifest needs to exist: config and layers, except layers that are
    /// non-distributable (they carry `urls` and may live elsewhere).
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        let layers = match self.kind {
            ManifestKind::Image => &self.references[..],
            ManifestKind::Index => &[],
        };
        self.config
            .iter()
            .chain(layers.iter().filter(|d| !is_non_distributable(d)))
    }

    /// Child manifests an index needs to exist.
    pub fn required_manifests(&self) -> &[Descriptor] {
        match self.kind {
            ManifestKind::Index => &self.references,
            ManifestKind::Image => &[],
        }
    }

    /// Whether this is a Helm chart stored as an OCI artifact.
    pub fn is_helm_chart(&self) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| c.media_type == media::HELM_CONFIG)
    }
}

fn is_non_distributable(d: &Descriptor) -> bool {
    d.media_type.contains(".nondistributable.") || d.media_type.contains(".foreign.")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

fn is_image_type(t: &str) -> bool {
    t == media::OCI_MANIFEST || t == media::DOCKER_MANIFEST
}

fn is_index_type(t: &str) -> bool {
    t == media::OCI_INDEX || t == media::DOCKER_MANIFEST_LIST
}

/// Parses a manifest body. `content_type` is the request's `Content-Type` without parameters,
/// if any. Manifests may omit `mediaType` (umoci and Helm do), so the kind is taken from the
/// body's `mediaType`, else the `Content-Type`, else the shape of the document.
pub fn parse_manifest(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<ParsedManifest, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.schema_version.is_some_and(|v| v != 2) {
        return Err(ManifestError::Field("schemaVersion"));
    }
    let header = content_type
        .map(str::trim)
        .filter(|t| !t.is_empty() && *t != "application/octet-stream" && *t != "application/json");
    let media_type = match (&raw.media_type, header) {
        (Some(body_t), Some(h)) if body_t != h => {
            return Err(ManifestError::MediaTypeMismatch {
                body: body_t.clone(),
                header: h.to_owned(),
            });
        }
        (Some(t), _) => t.clone(),
        (None, Some(h)) => h.to_owned(),
        (None, None) => {
            if raw.manifests.is_some() {
                media::OCI_INDEX.to_owned()
            } else {
                media::OCI_MANIFEST.to_owned()
            }
        }
    };
    let kind = if is_image_type(&media_type) {
        ManifestKind::Image
    } else if is_index_type(&media_type) {
        ManifestKind::Index
    } else {
        return Err(ManifestError::UnsupportedMediaType(media_type));
    };
    match kind {
        ManifestKind::Image => {
            let config = raw.config.ok_or(ManifestError::Field("config"))?;
            if raw.manifests.is_some() {
                return Err(ManifestError::Field("manifests"));
            }
            let artifact_type = raw
                .artifact_type
                .clone()
                .or_else(|| Some(config.media_type.clone()));
            Ok(ParsedManifest {
                kind,
                media_type,
                config: Some(config),
                references: raw.layers.unwrap_or_default(),
                subject: raw.subject,
                artifact_type,
                annotations: raw.annotations,
            })
        }
        ManifestKind::Index => {
            let manifests = raw.manifests.ok_or(ManifestError::Field("manifests"))?;
            if raw.layers.is_some() {
                return Err(ManifestError::Field("layers"));
            }
            Ok(ParsedManifest {
                kind,
                media_type,
                config: None,
                references: manifests,
                subject: raw.subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    #[test]
    fn parses_an_oci_image_manifest_without_media_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]}}"#,
            d(1),
            d(2)
        );
        let m = parse_manifest(body.as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.media_type, media::OCI_MANIFEST);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn skips_non_distributable_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"a/b","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}","size":3,"urls":["https://example.com/x"]}}]}}"#,
            d(1),
            d(2)
        );
        let m = parse_manifest(body.as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.required_blobs().count(), 1);
    }

    #[test]
    fn parses_an_index_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":7}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":9}}}}"#,
            d(1),
            d(2)
        );
        let m = parse_manifest(body.as_bytes(), Some(media::OCI_INDEX)).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.required_manifests().len(), 1);
        assert_eq!(m.required_blobs().count(), 0);
        assert!(m.subject.is_some());
        assert_eq!(m.artifact_type, None);
    }

    #[test]
    fn rejects_bad_manifests() {
        assert!(matches!(
            parse_manifest(b"not json", None),
            Err(ManifestError::Json(_))
        ));
        assert!(parse_manifest(b"{}", Some(media::OCI_MANIFEST)).is_err());
        assert!(parse_manifest(br#"{"schemaVersion":1}"#, None).is_err());
        let body = format!(
            r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"x","digest":"{}","size":1}}]}}"#,
            d(1)
        );
        assert!(matches!(
            parse_manifest(body.as_bytes(), Some(media::OCI_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(parse_manifest(br#"{"config":{"digest":"sha256:zz"}}"#, None).is_err());
        assert!(matches!(
            parse_manifest(b"{}", Some("text/plain")),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
    }
}
