//! Manifest parsing: OCI image manifests and indexes, Docker schema 2 manifests and manifest
//! lists, and artifacts (any `artifactType` or config media type).
//!
//! The registry stores the client's exact bytes; this module checks the rules of the image
//! spec that the registry relies on (`schemaVersion` 2; every descriptor has a `mediaType`, a
//! valid `digest` and a non-negative integer `size`; bounded nesting) and extracts what the
//! registry must check or index: the blobs and child manifests referenced, the `subject`, the
//! media type and the artifact type. Unknown fields are ignored, as the image spec requires.
//!
//! The body is read into a `serde_json::Value` and checked field by field rather than through
//! derived `Deserialize` types, so that every refusal names the field it concerns
//! (`layers[2].size: must be a non-negative integer`) instead of serde's position-only text.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

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

/// How deeply a manifest's JSON may nest (the top-level object is depth 1). Real manifests
/// nest four levels (manifest, `layers`, a descriptor, its `annotations`) or five with a
/// `platform`; the bound keeps a hostile body from costing deep recursion anywhere it is read
/// later, and is checked before the JSON parser runs, so depth alone never reaches serde.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("manifest must be a JSON object")]
    NotAnObject,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    /// A field breaks a rule of the image spec: `field` is its path in the document
    /// (`config.digest`, `layers[1].size`).
    #[error("manifest field {field}: {rule}")]
    Field { field: String, rule: &'static str },
}

fn field_err(field: impl Into<String>, rule: &'static str) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        rule,
    }
}

/// A descriptor as it appears in a manifest, checked against the image spec's descriptor
/// rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    /// Never empty.
    pub media_type: String,
    pub digest: Digest,
    /// The size the manifest claims for the referenced content, in bytes; never negative
    /// (the spec's int64, kept signed because SQLite stores it as one).
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
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

    /// Blobs this manifest refers to, whether or not they must exist: config and every layer,
    /// non-distributable ones included. Garbage collection keeps what these name: a foreign
    /// layer a client chose to push is as acknowledged as any other.
    pub fn referenced_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        let layers = match self.kind {
            ManifestKind::Image => &self.references[..],
            ManifestKind::Index => &[],
        };
        self.config.iter().chain(layers.iter())
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
    check_depth(body)?;
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    let Value::Object(raw) = doc else {
        return Err(ManifestError::NotAnObject);
    };
    // Both the OCI image spec and Docker's schema 2 require `schemaVersion: 2`; schema 1
    // (signed Docker manifests) is a different format this registry does not accept.
    match raw.get("schemaVersion") {
        Some(v) if v.as_i64() == Some(2) => {}
        None | Some(Value::Null) => return Err(field_err("schemaVersion", "required, must be 2")),
        Some(_) => return Err(field_err("schemaVersion", "must be 2")),
    }
    let body_type = opt_string(&raw, "mediaType", "")?;
    let header = content_type
        .map(str::trim)
        .filter(|t| !t.is_empty() && *t != "application/octet-stream" && *t != "application/json");
    let media_type = match (body_type, header) {
        (Some(body_t), Some(h)) if body_t != h => {
            return Err(ManifestError::MediaTypeMismatch {
                body: body_t,
                header: h.to_owned(),
            });
        }
        (Some(t), _) => t,
        (None, Some(h)) => h.to_owned(),
        (None, None) => {
            if raw.contains_key("manifests") {
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
    let artifact_type = opt_string(&raw, "artifactType", "")?;
    let subject = match present(&raw, "subject") {
        Some(v) => Some(descriptor(v, "subject")?),
        None => None,
    };
    let annotations = string_map(&raw, "annotations", "")?;
    match kind {
        ManifestKind::Image => {
            if present(&raw, "manifests").is_some() {
                return Err(field_err("manifests", "not allowed in an image manifest"));
            }
            let config = match present(&raw, "config") {
                Some(v) => descriptor(v, "config")?,
                None => return Err(field_err("config", "required in an image manifest")),
            };
            let layers = descriptors(&raw, "layers")?;
            let artifact_type = artifact_type.or_else(|| Some(config.media_type.clone()));
            Ok(ParsedManifest {
                kind,
                media_type,
                config: Some(config),
                references: layers.unwrap_or_default(),
                subject,
                artifact_type,
                annotations,
            })
        }
        ManifestKind::Index => {
            if present(&raw, "layers").is_some() {
                return Err(field_err("layers", "not allowed in an index"));
            }
            let manifests = descriptors(&raw, "manifests")?
                .ok_or_else(|| field_err("manifests", "required in an index"))?;
            Ok(ParsedManifest {
                kind,
                media_type,
                config: None,
                references: manifests,
                subject,
                artifact_type,
                annotations,
            })
        }
    }
}

/// Refuses a body whose arrays and objects nest deeper than [`MAX_DEPTH`]. A byte scan rather
/// than a parse: it uses constant stack space whatever the input (a 100,000-deep `[[[…` costs
/// one pass), and runs before serde_json, whose own recursion limit (128) would refuse such a
/// body too but with a message about the parser instead of the rule.
fn check_depth(body: &[u8]) -> Result<(), ManifestError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ManifestError::TooDeep);
                }
            }
            // Unbalanced input is the parser's to report; here it must not underflow.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A field's value, with `null` treated as absent (as Go's encoding/json, which most clients
/// and registries use, does for optional fields).
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn opt_string(
    obj: &Map<String, Value>,
    key: &str,
    parent: &str,
) -> Result<Option<String>, ManifestError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field_err(path(parent, key), "must be a string")),
    }
}

fn string_map(
    obj: &Map<String, Value>,
    key: &str,
    parent: &str,
) -> Result<Option<BTreeMap<String, String>>, ManifestError> {
    let bad = || {
        field_err(
            path(parent, key),
            "must be an object whose values are strings",
        )
    };
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// An optional array of descriptors (`layers`, `manifests`).
fn descriptors(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<Descriptor>>, ManifestError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| descriptor(v, &format!("{key}[{i}]")))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(field_err(key, "must be an array of descriptors")),
    }
}

/// One descriptor, under the image spec's rules (descriptor.md): `mediaType`, `digest` and
/// `size` are required; `size` is an int64 and a size cannot be negative.
fn descriptor(v: &Value, at: &str) -> Result<Descriptor, ManifestError> {
    let Value::Object(o) = v else {
        return Err(field_err(at, "must be a descriptor object"));
    };
    let media_type = match present(o, "mediaType") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None => return Err(field_err(path(at, "mediaType"), "required")),
        Some(_) => {
            return Err(field_err(
                path(at, "mediaType"),
                "must be a non-empty string",
            ));
        }
    };
    let digest = match present(o, "digest") {
        Some(Value::String(s)) => Digest::parse(s).map_err(|_| {
            field_err(
                path(at, "digest"),
                "must be a sha256 or sha512 digest (algorithm:lower-case hex)",
            )
        })?,
        None => return Err(field_err(path(at, "digest"), "required")),
        Some(_) => return Err(field_err(path(at, "digest"), "must be a string")),
    };
    let size = match present(o, "size") {
        // `as_i64` is None for fractions, exponents and integers above i64::MAX alike.
        Some(Value::Number(n)) => n.as_i64().filter(|s| *s >= 0).ok_or_else(|| {
            field_err(
                path(at, "size"),
                "must be a non-negative integer (bytes, at most 2^63-1)",
            )
        })?,
        None => {
            return Err(field_err(
                path(at, "size"),
                "required (a non-negative integer)",
            ));
        }
        Some(_) => {
            return Err(field_err(
                path(at, "size"),
                "must be a non-negative integer (bytes, at most 2^63-1)",
            ));
        }
    };
    let urls = match present(o, "urls") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|u| u.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| field_err(path(at, "urls"), "must be an array of strings"))?,
        ),
        Some(_) => return Err(field_err(path(at, "urls"), "must be an array of strings")),
    };
    Ok(Descriptor {
        media_type,
        digest,
        size,
        artifact_type: opt_string(o, "artifactType", at)?,
        annotations: string_map(o, "annotations", at)?,
        urls,
    })
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
        assert_eq!(
            parse_manifest(b"[2]", None),
            Err(ManifestError::NotAnObject)
        );
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"x","digest":"{}","size":1}}]}}"#,
            d(1)
        );
        assert!(matches!(
            parse_manifest(body.as_bytes(), Some(media::OCI_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(parse_manifest(br#"{"config":{"digest":"sha256:zz"}}"#, None).is_err());
        assert!(matches!(
            parse_manifest(br#"{"schemaVersion":2}"#, Some("text/plain")),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
    }

    /// The field a refusal names, e.g. `layers[0].size`.
    fn refused_field(body: &str) -> String {
        match parse_manifest(body.as_bytes(), None) {
            Err(ManifestError::Field { field, .. }) => field,
            other => panic!("{body}: expected a field error, got {other:?}"),
        }
    }

    fn image_with_layer(layer: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{layer}]}}"#,
            d(1)
        )
    }

    #[test]
    fn schema_version_must_be_present_and_2() {
        for sv in [
            "",
            r#""schemaVersion":1,"#,
            r#""schemaVersion":"2","#,
            r#""schemaVersion":2.5,"#,
            r#""schemaVersion":null,"#,
        ] {
            let body = format!(
                r#"{{{sv}"config":{{"mediaType":"a/b","digest":"{}","size":2}}}}"#,
                d(1)
            );
            assert_eq!(refused_field(&body), "schemaVersion", "{body}");
        }
    }

    #[test]
    fn descriptor_size_must_be_a_non_negative_integer() {
        let dg = d(2);
        for size in [
            r#""size":-1"#,
            r#""size":1.5"#,
            r#""size":"3""#,
            r#""size":1e3"#,
            r#""size":9223372036854775808"#,
            "",
        ] {
            let sep = if size.is_empty() { "" } else { "," };
            let layer = format!(r#"{{"mediaType":"a/b","digest":"{dg}"{sep}{size}}}"#);
            assert_eq!(
                refused_field(&image_with_layer(&layer)),
                "layers[0].size",
                "{layer}"
            );
        }
        let layer = format!(r#"{{"mediaType":"a/b","digest":"{dg}","size":0}}"#);
        let m = parse_manifest(image_with_layer(&layer).as_bytes(), None).unwrap();
        assert_eq!(m.references[0].size, 0);
        let layer = format!(r#"{{"mediaType":"a/b","digest":"{dg}","size":9223372036854775807}}"#);
        let m = parse_manifest(image_with_layer(&layer).as_bytes(), None).unwrap();
        assert_eq!(m.references[0].size, i64::MAX);
    }

    #[test]
    fn every_descriptor_needs_a_media_type_digest_and_size() {
        let (a, b) = (d(1), d(2));
        let cases = [
            (
                format!(r#"{{"schemaVersion":2,"config":{{"digest":"{a}","size":2}}}}"#),
                "config.mediaType",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"","digest":"{a}","size":2}}}}"#
                ),
                "config.mediaType",
            ),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"a/b","size":2}}"#.to_owned(),
                "config.digest",
            ),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:zz","size":2}}"#
                    .to_owned(),
                "config.digest",
            ),
            (
                image_with_layer(&format!(r#"{{"mediaType":7,"digest":"{b}","size":1}}"#)),
                "layers[0].mediaType",
            ),
            (
                image_with_layer(&format!(
                    r#"{{"mediaType":"a/b","digest":"{b}","size":1}},{{"digest":"{b}","size":1}}"#
                )),
                "layers[1].mediaType",
            ),
            (image_with_layer("5"), "layers[0]"),
            (
                format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{a}","size":2}}]}}"#),
                "manifests[0].mediaType",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"manifests":[],"subject":{{"digest":"{a}","size":2}}}}"#
                ),
                "subject.mediaType",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"manifests":[],"subject":{{"mediaType":"a/b","digest":"{a}","size":-2}}}}"#
                ),
                "subject.size",
            ),
            (
                r#"{"schemaVersion":2,"manifests":[],"annotations":{"a":1}}"#.to_owned(),
                "annotations",
            ),
            (
                image_with_layer(&format!(
                    r#"{{"mediaType":"a/b","digest":"{b}","size":1,"urls":"x"}}"#
                )),
                "layers[0].urls",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(refused_field(&body), field, "{body}");
        }
    }

    #[test]
    fn docker_schema_2_and_artifacts_with_an_empty_config_parse() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":14}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":12}}]}}"#,
            media::DOCKER_MANIFEST,
            d(1),
            d(2)
        );
        let m = parse_manifest(docker.as_bytes(), Some(media::DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            media::DOCKER_MANIFEST_LIST,
            media::DOCKER_MANIFEST,
            d(3)
        );
        let m = parse_manifest(list.as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        let artifact = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/vnd.example.sbom","config":{{"mediaType":"{}","digest":"{}","size":2,"data":"e30="}},"layers":[],"subject":{{"mediaType":"{}","digest":"{}","size":9}}}}"#,
            media::OCI_MANIFEST,
            media::OCI_EMPTY,
            d(4),
            media::OCI_MANIFEST,
            d(5)
        );
        let m = parse_manifest(artifact.as_bytes(), None).unwrap();
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
        assert_eq!(m.subject.map(|s| s.size), Some(9));
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        // 64 levels: the manifest object plus 63 nested arrays in an ignored field.
        let ok_depth = format!(
            r#"{{"schemaVersion":2,"x":{}{}, "config":{{"mediaType":"a/b","digest":"{}","size":2}}}}"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1),
            d(1)
        );
        assert!(parse_manifest(ok_depth.as_bytes(), None).is_ok());
        let too_deep = ok_depth.replacen("[", "[[", 1).replacen("]", "]]", 1);
        assert_eq!(
            parse_manifest(too_deep.as_bytes(), None),
            Err(ManifestError::TooDeep)
        );
        // Far past serde_json's own limit, and unbalanced: refused before any parsing.
        let huge = "[".repeat(100_000);
        assert_eq!(
            parse_manifest(huge.as_bytes(), None),
            Err(ManifestError::TooDeep)
        );
        // Brackets inside strings (escaped quotes included) are not nesting.
        let in_string = format!(
            r#"{{"schemaVersion":2,"annotations":{{"k":"\"{}"}},"config":{{"mediaType":"a/b","digest":"{}","size":2}}}}"#,
            "[".repeat(1000),
            d(1)
        );
        assert!(parse_manifest(in_string.as_bytes(), None).is_ok());
    }
}

/// Property tests: no body panics the parser (arbitrary bytes, arbitrary JSON built from the
/// manifest vocabulary, valid manifests with one byte changed), whatever it accepts keeps the
/// descriptor rules, and a valid generated manifest yields exactly the descriptors it holds.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const KEYS: &[&str] = &[
        "schemaVersion",
        "mediaType",
        "artifactType",
        "config",
        "layers",
        "manifests",
        "subject",
        "annotations",
        "digest",
        "size",
        "urls",
        "platform",
    ];

    fn content_type() -> impl Strategy<Value = Option<&'static str>> {
        prop::sample::select(vec![
            None,
            Some(media::OCI_MANIFEST),
            Some(media::OCI_INDEX),
            Some(media::DOCKER_MANIFEST),
            Some(media::DOCKER_MANIFEST_LIST),
            Some("application/json"),
            Some(" "),
            Some("text/plain"),
        ])
    }

    fn digest() -> impl Strategy<Value = String> {
        prop_oneof!["sha256:[a-f0-9]{64}", "sha512:[a-f0-9]{128}"]
    }

    fn media_type() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                media::OCI_MANIFEST,
                media::OCI_INDEX,
                media::DOCKER_MANIFEST,
                media::DOCKER_MANIFEST_LIST,
                media::OCI_EMPTY,
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
            ])
            .prop_map(str::to_owned),
            "[a-z]{1,8}/[a-z0-9.+-]{1,16}",
        ]
    }

    /// Leaves that a manifest's fields take (and near misses: negative, fractional and huge
    /// numbers, empty strings, other types).
    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            Just(json!(2)),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            digest().prop_map(Value::String),
            media_type().prop_map(Value::String),
            ".{0,8}".prop_map(Value::String),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(KEYS).prop_map(str::to_owned),
            1 => ".{0,6}",
        ]
    }

    /// JSON of bounded depth and size, with the manifest's keys in its objects.
    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Usually a map of strings, as annotations must be.
    fn annotations() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => prop::collection::btree_map(".{0,4}", ".{0,4}", 0..3).prop_map(|m| json!(m)),
            1 => value(),
        ]
    }

    /// A descriptor-shaped object whose required fields are each often right, sometimes
    /// missing or wrong, so that every descriptor rule is reached.
    fn near_descriptor() -> impl Strategy<Value = Value> {
        let field = |right: BoxedStrategy<Value>| prop_oneof![6 => right.prop_map(Some), 1 => Just(None), 1 => leaf().prop_map(Some)];
        (
            field(media_type().prop_map(Value::String).boxed()),
            field(digest().prop_map(Value::String).boxed()),
            field((0..=i64::MAX).prop_map(Value::from).boxed()),
            proptest::option::of(prop_oneof![
                3 => prop::collection::vec(".{0,8}", 0..3).prop_map(|u| json!(u)),
                1 => value(),
            ]),
            proptest::option::of(annotations()),
        )
            .prop_map(|(m, d, size, urls, annotations)| {
                let mut o = Map::new();
                let fields = [("mediaType", m), ("digest", d), ("size", size)];
                for (k, v) in fields
                    .into_iter()
                    .chain([("urls", urls), ("annotations", annotations)])
                {
                    if let Some(v) = v {
                        o.insert(k.into(), v);
                    }
                }
                Value::Object(o)
            })
    }

    /// A top-level object with a manifest's fields, each present or not, usually of the
    /// right shape, plus stray keys.
    fn manifest_like() -> impl Strategy<Value = Value> {
        let descriptors = || {
            prop_oneof![
                4 => prop::collection::vec(near_descriptor(), 0..4).prop_map(Value::Array),
                1 => value(),
            ]
        };
        (
            prop_oneof![
                8 => Just(Some(json!(2))),
                1 => Just(None),
                1 => leaf().prop_map(Some),
            ],
            proptest::option::of(prop_oneof![
                4 => media_type().prop_map(Value::String),
                1 => leaf(),
            ]),
            proptest::option::of(prop_oneof![4 => near_descriptor(), 1 => value()]),
            proptest::option::of(descriptors()),
            proptest::option::of(descriptors()),
            proptest::option::of(prop_oneof![4 => near_descriptor(), 1 => value()]),
            proptest::option::of(annotations()),
            prop::collection::btree_map(".{0,6}", value(), 0..3),
        )
            .prop_map(
                |(sv, mt, config, layers, manifests, subject, annotations, extra)| {
                    let mut o: Map<String, Value> = extra.into_iter().collect();
                    let fields = [
                        ("schemaVersion", sv),
                        ("mediaType", mt),
                        ("config", config),
                        ("layers", layers),
                        ("manifests", manifests),
                        ("subject", subject),
                        ("annotations", annotations),
                    ];
                    for (k, v) in fields {
                        if let Some(v) = v {
                            o.insert(k.into(), v);
                        }
                    }
                    Value::Object(o)
                },
            )
    }

    fn check_descriptor(d: &Descriptor) -> Result<(), TestCaseError> {
        prop_assert!(!d.media_type.is_empty());
        prop_assert!(d.size >= 0);
        prop_assert_eq!(Digest::parse(&d.digest.to_string()), Ok(d.digest.clone()));
        Ok(())
    }

    /// What every accepted manifest satisfies, whatever the input was.
    fn check_accepted(m: &ParsedManifest) -> Result<(), TestCaseError> {
        match m.kind {
            ManifestKind::Image => {
                prop_assert!(is_image_type(&m.media_type));
                prop_assert!(m.config.is_some());
            }
            ManifestKind::Index => {
                prop_assert!(is_index_type(&m.media_type));
                prop_assert!(m.config.is_none());
            }
        }
        for d in m.config.iter().chain(&m.references).chain(&m.subject) {
            check_descriptor(d)?;
        }
        Ok(())
    }

    #[derive(Debug, Clone)]
    struct Desc {
        media_type: String,
        digest: String,
        size: i64,
        artifact_type: Option<String>,
        annotations: Option<BTreeMap<String, String>>,
        urls: Option<Vec<String>>,
    }

    impl Desc {
        fn to_json(&self) -> Value {
            let mut o = json!({
                "mediaType": self.media_type,
                "digest": self.digest,
                "size": self.size,
            });
            if let Some(a) = &self.artifact_type {
                o["artifactType"] = json!(a);
            }
            if let Some(a) = &self.annotations {
                o["annotations"] = json!(a);
            }
            if let Some(u) = &self.urls {
                o["urls"] = json!(u);
            }
            o
        }

        fn expected(&self) -> Descriptor {
            Descriptor {
                media_type: self.media_type.clone(),
                digest: Digest::parse(&self.digest).unwrap(),
                size: self.size,
                artifact_type: self.artifact_type.clone(),
                annotations: self.annotations.clone(),
                urls: self.urls.clone(),
            }
        }
    }

    fn descriptor() -> impl Strategy<Value = Desc> {
        (
            media_type(),
            digest(),
            prop_oneof![0..1024i64, Just(i64::MAX), 0..=i64::MAX],
            proptest::option::of(media_type()),
            proptest::option::of(prop::collection::btree_map(".{0,8}", ".{0,8}", 0..3)),
            proptest::option::of(prop::collection::vec("https://[a-z]{1,8}/.{0,8}", 0..3)),
        )
            .prop_map(
                |(media_type, digest, size, artifact_type, annotations, urls)| Desc {
                    media_type,
                    digest,
                    size,
                    artifact_type,
                    annotations,
                    urls,
                },
            )
    }

    fn valid_body() -> impl Strategy<Value = Vec<u8>> {
        (descriptor(), prop::collection::vec(descriptor(), 0..4)).prop_map(|(c, l)| {
            let layers: Vec<Value> = l.iter().map(Desc::to_json).collect();
            serde_json::to_vec(
                &json!({"schemaVersion": 2, "config": c.to_json(), "layers": layers}),
            )
            .unwrap()
        })
    }

    /// Arbitrary JSON shaped like a manifest. Run on a thread with a larger stack: building
    /// this strategy's value trees nests deeply, and unoptimised (dependencies are built at
    /// opt-level 0 in the dev profile) it needs more than a test thread's 2 MiB.
    #[test]
    fn arbitrary_json_never_panics() {
        let run = || {
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
            runner.run(&(manifest_like(), content_type()), |(doc, ct)| {
                let body = serde_json::to_vec(&doc).unwrap();
                if let Ok(m) = parse_manifest(&body, ct) {
                    check_accepted(&m)?;
                }
                Ok(())
            })
        };
        let outcome = std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..256),
            ct in content_type(),
        ) {
            if let Ok(m) = parse_manifest(&body, ct) {
                check_accepted(&m)?;
            }
        }

        /// Byte soup from JSON's own alphabet, so that the depth scanner's string and escape
        /// states are entered and left in every order.
        #[test]
        fn json_alphabet_soup_never_panics(body in r#"[\[\]{}"\\:,0-9a-z ]{0,128}"#) {
            if let Ok(m) = parse_manifest(body.as_bytes(), None) {
                check_accepted(&m)?;
            }
        }

        #[test]
        fn valid_manifests_with_one_byte_changed_never_panic(
            body in valid_body(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut body = body;
            let i = at.index(body.len());
            body[i] = byte;
            if let Ok(m) = parse_manifest(&body, None) {
                check_accepted(&m)?;
            }
        }

        #[test]
        fn valid_image_manifests_expose_their_descriptors(
            config in descriptor(),
            layers in prop::collection::vec(descriptor(), 0..5),
            subject in proptest::option::of(descriptor()),
            artifact_type in proptest::option::of(media_type()),
            annotations in proptest::option::of(prop::collection::btree_map(".{0,8}", ".{0,8}", 0..3)),
            declared in prop::sample::select(vec![None, Some(media::OCI_MANIFEST), Some(media::DOCKER_MANIFEST)]),
            send_content_type in any::<bool>(),
        ) {
            let mut doc = json!({
                "schemaVersion": 2,
                "config": config.to_json(),
                "layers": layers.iter().map(Desc::to_json).collect::<Vec<_>>(),
            });
            if let Some(t) = declared {
                doc["mediaType"] = json!(t);
            }
            if let Some(s) = &subject {
                doc["subject"] = s.to_json();
            }
            if let Some(a) = &artifact_type {
                doc["artifactType"] = json!(a);
            }
            if let Some(a) = &annotations {
                doc["annotations"] = json!(a);
            }
            let ct = declared.filter(|_| send_content_type);
            let m = parse_manifest(&serde_json::to_vec(&doc).unwrap(), ct).unwrap();
            prop_assert_eq!(m.kind, ManifestKind::Image);
            prop_assert_eq!(m.media_type.as_str(), declared.unwrap_or(media::OCI_MANIFEST));
            prop_assert_eq!(m.config.as_ref(), Some(&config.expected()));
            let want: Vec<Descriptor> = layers.iter().map(Desc::expected).collect();
            prop_assert_eq!(&m.references, &want);
            prop_assert_eq!(&m.subject, &subject.as_ref().map(Desc::expected));
            prop_assert_eq!(&m.annotations, &annotations);
            let want_artifact = artifact_type.unwrap_or(config.media_type.clone());
            prop_assert_eq!(m.artifact_type.as_ref(), Some(&want_artifact));
            prop_assert!(m.required_manifests().is_empty());
            let required: Vec<&Descriptor> = m.required_blobs().collect();
            let want_required: Vec<&Descriptor> = m.config.iter()
                .chain(want.iter().filter(|d| !is_non_distributable(d)))
                .collect();
            prop_assert_eq!(required, want_required);
        }

        #[test]
        fn valid_indexes_expose_their_manifests(
            manifests in prop::collection::vec(descriptor(), 0..5),
            declared in prop::sample::select(vec![None, Some(media::OCI_INDEX), Some(media::DOCKER_MANIFEST_LIST)]),
        ) {
            let mut doc = json!({
                "schemaVersion": 2,
                "manifests": manifests.iter().map(Desc::to_json).collect::<Vec<_>>(),
            });
            if let Some(t) = declared {
                doc["mediaType"] = json!(t);
            }
            let m = parse_manifest(&serde_json::to_vec(&doc).unwrap(), None).unwrap();
            prop_assert_eq!(m.kind, ManifestKind::Index);
            let want: Vec<Descriptor> = manifests.iter().map(Desc::expected).collect();
            prop_assert_eq!(m.required_manifests(), &want[..]);
            prop_assert_eq!(m.required_blobs().count(), 0);
        }

        /// Nesting is refused exactly past [`MAX_DEPTH`], however the brackets are mixed.
        #[test]
        fn nesting_is_refused_exactly_past_the_limit(open in r"[\[{]{1,100}") {
            let depth = open.len();
            let mut body = String::new();
            for c in open.chars() {
                // An object's member needs a key.
                body.push_str(if c == '{' { "{\"k\":" } else { "[" });
            }
            body.push('0');
            for c in open.chars().rev() {
                body.push(if c == '{' { '}' } else { ']' });
            }
            let r = parse_manifest(body.as_bytes(), None);
            prop_assert_eq!(r == Err(ManifestError::TooDeep), depth > MAX_DEPTH, "{:?}", r);
        }
    }
}
