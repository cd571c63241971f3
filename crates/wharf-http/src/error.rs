//! Errors at the HTTP boundary: every registry error becomes the spec's status and error
//! body `{"errors":[{"code","message","detail"}]}`. Internal causes are logged here, once, and
//! never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wharf_core::ErrorCode;
use wharf_registry::RegistryError;

use crate::path::PathError;

/// An OCI error response.
#[derive(Debug)]
pub struct OciError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: serde_json::Value,
    /// Extra headers (e.g. `Range` and `Location` on a 416 during an upload).
    pub headers: Vec<(header::HeaderName, String)>,
}

impl OciError {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        OciError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
        }
    }

    pub fn code(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code.default_status(), code, message)
    }

    pub fn with_header(mut self, name: header::HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

impl From<PathError> for OciError {
    fn from(e: PathError) -> Self {
        OciError::new(e.status, e.code, e.message)
    }
}

impl From<RegistryError> for OciError {
    fn from(e: RegistryError) -> Self {
        use ErrorCode as C;
        match e {
            RegistryError::BlobUnknown => {
                OciError::code(C::BlobUnknown, "blob unknown to registry")
            }
            RegistryError::UploadUnknown => {
                OciError::code(C::BlobUploadUnknown, "blob upload unknown to registry")
            }
            RegistryError::UploadInvalid(m) => OciError::new(400, C::BlobUploadInvalid, m),
            RegistryError::DigestMismatch => OciError::code(
                C::DigestInvalid,
                "provided digest did not match uploaded content",
            ),
            RegistryError::DigestInvalid(m) => OciError::code(C::DigestInvalid, m),
            RegistryError::RangeNotSatisfiable { offset } => OciError::new(
                416,
                C::BlobUploadInvalid,
                "chunk does not start at the upload's current offset",
            )
            .with_header(header::RANGE, upload_range(offset)),
            RegistryError::SizeInvalid => {
                OciError::code(C::SizeInvalid, "content length did not match the range")
            }
            RegistryError::ManifestBlobUnknown(d) => OciError::code(
                C::ManifestBlobUnknown,
                "manifest references a blob or manifest unknown to the repository",
            )
            .with_detail(json!({ "digest": d.to_string() })),
            RegistryError::ManifestInvalid(m) => OciError::code(C::ManifestInvalid, m),
            RegistryError::ManifestUnknown => {
                OciError::code(C::ManifestUnknown, "manifest unknown")
            }
            RegistryError::NameUnknown => {
                OciError::code(C::NameUnknown, "repository name not known to registry")
            }
            RegistryError::TagUnknown => {
                OciError::code(C::TagUnknown, "the specified tag does not exist")
            }
            RegistryError::ManifestNotFound(t) => OciError::code(
                C::ManifestUnknown,
                format!("manifest tagged by {t:?} is not found"),
            ),
            RegistryError::Disallowed => disallowed(),
            RegistryError::Invalid(m) => OciError::new(400, C::Unsupported, m),
            RegistryError::TooManyTags => OciError::new(414, C::TagInvalid, "too many tags"),
            RegistryError::OutOfSpace => out_of_space(),
            RegistryError::Unavailable(m) => {
                tracing::info!(reason = %m, "asked the client to retry");
                OciError::new(
                    503,
                    C::Unavailable,
                    "temporarily unavailable: retry the request",
                )
                .with_header(header::RETRY_AFTER, "1".to_owned())
            }
            RegistryError::Internal(e) => internal(&e),
            RegistryError::Io(e) => internal(&e),
        }
    }
}

/// ACR's answer to an operation a lock or the quarantine forbids (acr-auth.md §4.9).
pub fn disallowed() -> OciError {
    OciError::code(
        ErrorCode::RegistryDisallowedOperation,
        "The operation is disallowed on this registry, repository or image. View troubleshooting steps at https://aka.ms/acr/faq/#why-does-my-pull-or-push-request-fail-with-disallowed-operation",
    )
    .with_detail(json!({}))
}

/// The data volume is full (or below its free-space floor): 507 Insufficient Storage with
/// the code distribution uses for a temporarily unavailable registry. Nothing was stored, so
/// the client may retry the same request once space is freed.
pub fn out_of_space() -> OciError {
    // Logged by the access log (every 5xx is, at warn): nothing more to say here.
    OciError::new(
        507,
        ErrorCode::Unavailable,
        "the registry is out of storage space; nothing was stored: retry once space is freed",
    )
}

/// Logs an internal failure and answers with a body that reveals nothing of it.
pub fn internal(e: &dyn std::fmt::Display) -> OciError {
    tracing::error!(error = %e, "internal error");
    OciError::new(500, ErrorCode::Unknown, "internal error")
}

/// The `Range` header of upload responses: `0-<last byte>`; `0-0` for an empty upload, as
/// Distribution sends.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let body = json!({
            "errors": [{
                "code": self.code.as_str(),
                "message": self.message,
                "detail": self.detail,
            }]
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}
