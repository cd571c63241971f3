//! The OCI distribution API: one handler for `/v2/*`, which parses the path into an
//! [`OciEndpoint`] and dispatches on it and the method.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use wharf_core::{Algorithm, Digest, ErrorCode, Reference, RepoName, Tag};
use wharf_registry::{ByteStream, RequestInfo};

use crate::AppState;
use crate::error::{OciError, upload_range};
use crate::path::{OciEndpoint, parse};

type Result<T, E = OciError> = std::result::Result<T, E>;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// How long a client may take to send a manifest body.
const MANIFEST_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Catalog page size when the client gives no `n`.
const DEFAULT_CATALOG_PAGE: u32 = 1000;

pub async fn handle(State(app): State<AppState>, req: Request) -> Response {
    // Percent-decoded: the Azure SDK sends `a%2Fb` and `sha256%3A…`.
    let rest = crate::auth::decode(
        req.uri()
            .path()
            .strip_prefix("/v2")
            .map(|r| r.strip_prefix('/').unwrap_or(r))
            .unwrap_or(""),
    );
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let identity = req
        .extensions()
        .get::<crate::Caller>()
        .map(|c| c.identity.clone())
        .unwrap_or_else(|| "anonymous".into());
    let mut resp = match dispatch(&app, &rest, req).await {
        Ok(r) => r,
        // Some out-of-space failures reach us as plain I/O errors (SQLite reports a failure to
        // grow its shared-memory file as "disk I/O error"): one seen while the volume is full
        // is reported as what it is.
        Err(e) if e.status.is_server_error() && app.registry.storage_full() => {
            crate::error::out_of_space().into_response()
        }
        Err(e) => e.into_response(),
    };
    log_change(&identity, &method, &rest, resp.status(), started);
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// One info line per push (manifest PUT) and delete, so an operator sees the registry work:
/// who, which repository and reference, the status and how long it took. Identity is
/// the caller as the auth layer named it, never a credential.
fn log_change(
    identity: &str,
    method: &Method,
    rest: &str,
    status: StatusCode,
    started: std::time::Instant,
) {
    let action = match *method {
        Method::PUT => "push",
        Method::DELETE => "delete",
        _ => return,
    };
    let Some((repo, reference)) = rest.rsplit_once("/manifests/").or_else(|| {
        rest.rsplit_once("/blobs/")
            .filter(|(_, r)| action == "delete" && !r.starts_with("uploads"))
    }) else {
        return;
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        identity,
        repository = repo,
        reference,
        status = status.as_u16(),
        ms,
        "{action}"
    );
}

async fn dispatch(app: &AppState, rest: &str, req: Request) -> Result<Response> {
    let endpoint = parse(rest)?;
    let method = req.method().clone();
    let query = Query::parse(req.uri().query());
    // Whether the caller may pull quarantined images (see `Caller`).
    let qr = req
        .extensions()
        .get::<crate::Caller>()
        .is_some_and(|c| c.quarantine_reader);
    use OciEndpoint as E;
    match (endpoint, method) {
        (E::Base, Method::GET | Method::HEAD) => {
            Ok((StatusCode::OK, axum::Json(serde_json::json!({}))).into_response())
        }
        (E::Catalog, Method::GET) => catalog(app, &query).await,
        (E::Tags(repo), Method::GET) => tags(app, &repo, &query, qr).await,
        (E::Manifest(repo, r), Method::GET) => get_manifest(app, &repo, &r, true, qr).await,
        (E::Manifest(repo, r), Method::HEAD) => get_manifest(app, &repo, &r, false, qr).await,
        (E::Manifest(repo, r), Method::PUT) => put_manifest(app, &repo, &r, &query, req).await,
        (E::Manifest(repo, r), Method::DELETE) => {
            let info = request_info(&req);
            app.registry.delete_manifest(&repo, &r, &info).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (E::Blob(repo, d), Method::GET) => get_blob(app, &repo, &d, req.headers(), true, qr).await,
        (E::Blob(repo, d), Method::HEAD) => {
            get_blob(app, &repo, &d, req.headers(), false, qr).await
        }
        (E::Blob(repo, d), Method::DELETE) => {
            app.registry.delete_blob(&repo, &d).await?;
            Ok((StatusCode::ACCEPTED, [(CONTENT_DIGEST, d.to_string())]).into_response())
        }
        (E::UploadStart(repo), Method::POST) => start_upload(app, &repo, &query, req).await,
        (E::Upload(repo, id), Method::GET) => {
            let offset = app.registry.upload_offset(&repo, &id).await?;
            Ok(upload_response(StatusCode::NO_CONTENT, &repo, &id, offset))
        }
        (E::Upload(repo, id), Method::PATCH) => {
            let range = content_range(req.headers())?;
            let offset = app
                .registry
                .patch_upload(&repo, &id, range, body_stream(req))
                .await
                .map_err(|e| upload_error(e, &repo, &id))?;
            Ok(upload_response(StatusCode::ACCEPTED, &repo, &id, offset))
        }
        (E::Upload(repo, id), Method::PUT) => {
            let digest = required_digest(&query)?;
            let range = content_range(req.headers())?;
            app.registry
                .finish_upload(&repo, &id, &digest, range, body_stream(req))
                .await
                .map_err(|e| upload_error(e, &repo, &id))?;
            Ok(blob_created(&repo, &digest))
        }
        (E::Upload(repo, id), Method::DELETE) => {
            app.registry.cancel_upload(&repo, &id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (E::Referrers(repo, d), Method::GET) => referrers(app, &repo, &d, &query, qr).await,
        (E::InvalidTag(_, _), Method::GET | Method::HEAD | Method::DELETE) => Err(OciError::code(
            ErrorCode::ManifestUnknown,
            "manifest unknown",
        )),
        (E::InvalidTag(_, t), Method::PUT) => Err(OciError::code(
            ErrorCode::TagInvalid,
            format!("tag {t:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"),
        )),
        _ => Err(OciError::code(
            ErrorCode::Unsupported,
            "method not allowed on this endpoint",
        )),
    }
}

/// Query parameters, kept as a list because `tag` may repeat.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Self {
        Query(q.map(url_pairs).unwrap_or_default())
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn all(&self, k: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits and percent-decodes a query string. Written by hand because it is ten lines and
/// axum's `Query` extractor cannot keep repeated keys.
fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|v| v as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn request_info(req: &Request) -> RequestInfo {
    let h = req.headers();
    let get = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let ext = req.extensions();
    RequestInfo {
        id: uuid::Uuid::new_v4().to_string(),
        host: crate::auth::request_host(req),
        useragent: get(header::USER_AGENT),
        addr: ext
            .get::<crate::auth::ClientAddr>()
            .map(|a| a.0.to_string()),
        // ACR's actor is the user or token name; an anonymous caller has none.
        actor: ext
            .get::<crate::auth::Caller>()
            .map(|c| c.identity.strip_prefix("token:").unwrap_or(&c.identity))
            .filter(|i| !i.is_empty() && *i != "anonymous")
            .map(str::to_owned),
        tls: ext.get::<crate::auth::IsTls>().is_some_and(|t| t.0),
    }
}

fn body_stream(req: Request) -> impl ByteStream {
    req.into_body().into_data_stream().map_err(io::Error::other)
}

fn required_digest(q: &Query) -> Result<Digest> {
    let d = q.get("digest").ok_or_else(|| {
        OciError::code(
            ErrorCode::DigestInvalid,
            "digest query parameter is required",
        )
    })?;
    Digest::parse(d).map_err(|e| OciError::code(ErrorCode::DigestInvalid, e.to_string()))
}

/// Parses an upload `Content-Range: <start>-<end>` (no unit, inclusive). A `bytes ` or
/// `bytes=` prefix is tolerated because some clients send it.
fn content_range(h: &HeaderMap) -> Result<Option<(u64, u64)>> {
    let Some(v) = h.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || OciError::new(416, ErrorCode::BlobUploadInvalid, "malformed Content-Range");
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    Ok(Some((a, b)))
}

fn upload_location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn upload_response(status: StatusCode, repo: &RepoName, id: &str, offset: u64) -> Response {
    (
        status,
        [
            (header::LOCATION, upload_location(repo, id)),
            (header::RANGE, upload_range(offset)),
            (UPLOAD_UUID, id.to_owned()),
            (header::CONTENT_LENGTH, "0".to_owned()),
        ],
    )
        .into_response()
}

/// A 416 during an upload also tells the client where the session is.
fn upload_error(e: wharf_registry::RegistryError, repo: &RepoName, id: &str) -> OciError {
    let is_range = matches!(e, wharf_registry::RegistryError::RangeNotSatisfiable { .. });
    let err = OciError::from(e);
    if is_range {
        err.with_header(header::LOCATION, upload_location(repo, id))
    } else {
        err
    }
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{repo}/blobs/{digest}")),
            (CONTENT_DIGEST, digest.to_string()),
            (header::CONTENT_LENGTH, "0".to_owned()),
        ],
    )
        .into_response()
}

async fn start_upload(
    app: &AppState,
    repo: &RepoName,
    q: &Query,
    req: Request,
) -> Result<Response> {
    if let Some(m) = q.get("mount") {
        let digest = Digest::parse(m)
            .map_err(|e| OciError::code(ErrorCode::DigestInvalid, e.to_string()))?;
        let from = match q.get("from") {
            Some(f) => Some(
                RepoName::parse(f)
                    .map_err(|e| OciError::code(ErrorCode::NameInvalid, e.to_string()))?,
            ),
            None => None,
        };
        if app
            .registry
            .mount_blob(
                repo,
                &digest,
                from.as_ref(),
                app.automatic_mount
                    && req
                        .extensions()
                        .get::<crate::Caller>()
                        .is_some_and(|c| c.may_mount_anywhere),
                req.extensions()
                    .get::<crate::Caller>()
                    .is_some_and(|c| c.quarantine_reader),
            )
            .await?
        {
            return Ok(blob_created(repo, &digest));
        }
    } else if q.get("digest").is_some() {
        let digest = required_digest(q)?;
        app.registry
            .upload_whole(repo, &digest, body_stream(req))
            .await?;
        return Ok(blob_created(repo, &digest));
    }
    let algorithm = match q.get("digest-algorithm") {
        Some(a) => a
            .parse::<Algorithm>()
            .map_err(|e| OciError::code(ErrorCode::DigestInvalid, e.to_string()))?,
        None => Algorithm::Sha256,
    };
    let id = app.registry.start_upload(repo, algorithm).await?;
    Ok(upload_response(StatusCode::ACCEPTED, repo, &id, 0))
}

/// A parsed `Range: bytes=...` request header (one range only).
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// No usable range header: serve the whole blob.
    Whole,
    /// Inclusive start and end, already clipped to the blob.
    Part(u64, u64),
    Unsatisfiable,
}

fn byte_range(h: &HeaderMap, size: u64) -> ByteRange {
    let Some(s) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return ByteRange::Whole;
    };
    let Some(spec) = s.trim().strip_prefix("bytes=") else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        // Multiple ranges are optional in RFC 9110; serve the whole representation.
        return ByteRange::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return ByteRange::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) => {
            if start > end || start >= size {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(start, end.min(size - 1))
            }
        }
        (Ok(start), Err(_)) if b.is_empty() => {
            if start >= size {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(start, size - 1)
            }
        }
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 || size == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(size.saturating_sub(suffix), size - 1)
            }
        }
        _ => ByteRange::Unsatisfiable,
    }
}

async fn get_blob(
    app: &AppState,
    repo: &RepoName,
    d: &Digest,
    h: &HeaderMap,
    body: bool,
    quarantine_reader: bool,
) -> Result<Response> {
    let blob = app
        .registry
        .readable_blob(repo, d, quarantine_reader)
        .await?;
    let size = blob.size();
    let range = byte_range(h, size);
    let (status, start, len, content_range) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, size, None),
        ByteRange::Part(a, b) => (
            StatusCode::PARTIAL_CONTENT,
            a,
            b - a + 1,
            Some(format!("bytes {a}-{b}/{size}")),
        ),
        ByteRange::Unsatisfiable => {
            return Err(OciError::new(
                416,
                ErrorCode::RangeInvalid,
                "requested range not satisfiable",
            )
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
    };
    // 307 keeps the method; the client sends its Range header to the bucket, which answers
    // it. The URL is a credential for this one read: never logged.
    if body
        && let Some(to) = app
            .registry
            .blob_download_url(d)
            .await
            .and_then(|u| HeaderValue::from_str(&u).ok())
    {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        resp.headers_mut().insert(header::LOCATION, to);
        if let Ok(v) = HeaderValue::from_str(&d.to_string()) {
            resp.headers_mut().insert(CONTENT_DIGEST, v);
        }
        return Ok(resp);
    }
    let mut headers = vec![
        (header::CONTENT_LENGTH, len.to_string()),
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (CONTENT_DIGEST, d.to_string()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
        (header::ETAG, format!("\"{d}\"")),
    ];
    if let Some(cr) = content_range {
        headers.push((header::CONTENT_RANGE, cr));
    }
    let mut resp = if body {
        let stream = app.registry.read_blob(&blob, start, len).await?;
        Response::new(Body::from_stream(stream))
    } else {
        Response::new(Body::empty())
    };
    *resp.status_mut() = status;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    Ok(resp)
}

async fn get_manifest(
    app: &AppState,
    repo: &RepoName,
    r: &Reference,
    body: bool,
    quarantine_reader: bool,
) -> Result<Response> {
    let m = app
        .registry
        .get_manifest_as(repo, r, body, quarantine_reader)
        .await?;
    let headers = [
        (header::CONTENT_TYPE, m.media_type.clone()),
        (header::CONTENT_LENGTH, m.size.to_string()),
        (CONTENT_DIGEST, m.digest.to_string()),
        (header::ETAG, format!("\"{}\"", m.digest)),
    ];
    let mut resp = match m.body {
        Some(b) if body => Response::new(Body::from(b)),
        _ => Response::new(Body::empty()),
    };
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    Ok(resp)
}

async fn put_manifest(
    app: &AppState,
    repo: &RepoName,
    r: &Reference,
    q: &Query,
    req: Request,
) -> Result<Response> {
    let info = request_info(&req);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let limit = app.registry.limits.max_manifest_bytes;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }
    let body = tokio::time::timeout(
        MANIFEST_BODY_TIMEOUT,
        axum::body::to_bytes(req.into_body(), limit),
    )
    .await
    .map_err(|_| {
        OciError::new(
            408,
            ErrorCode::ManifestInvalid,
            "timed out reading the manifest",
        )
    })?
    .map_err(|_| too_large(limit))?;
    let mut extra = Vec::new();
    for t in q.all("tag") {
        extra
            .push(Tag::parse(t).map_err(|e| OciError::code(ErrorCode::TagInvalid, e.to_string()))?);
    }
    let tagged_by_query = !extra.is_empty();
    let out = app
        .registry
        .put_manifest(
            repo,
            r,
            content_type.as_deref(),
            body.to_vec(),
            extra,
            &info,
        )
        .await?;
    let mut resp = (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                format!("/v2/{repo}/manifests/{}", out.digest),
            ),
            (CONTENT_DIGEST, out.digest.to_string()),
            (header::CONTENT_LENGTH, "0".to_owned()),
        ],
    )
        .into_response();
    if let Some(v) = out
        .subject
        .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
    {
        resp.headers_mut().insert(OCI_SUBJECT, v);
    }
    if tagged_by_query {
        for t in &out.tags {
            if let Ok(v) = HeaderValue::from_str(t.as_str()) {
                resp.headers_mut().append(OCI_TAG, v);
            }
        }
    }
    Ok(resp)
}

fn too_large(limit: usize) -> OciError {
    OciError::new(
        413,
        ErrorCode::SizeInvalid,
        format!("manifest exceeds the {limit}-byte limit"),
    )
}

/// Parses `n` (a page size) and `last` for the paginated listings.
pub(crate) fn pagination(q: &Query) -> Result<(Option<u32>, Option<String>)> {
    let n = match q.get("n") {
        Some(s) => Some(s.parse::<u32>().map_err(|_| {
            OciError::code(
                ErrorCode::PaginationNumberInvalid,
                "n must be a non-negative integer",
            )
        })?),
        None => None,
    };
    Ok((n, q.get("last").map(str::to_owned)))
}

/// Fetches one more than asked to know whether a `Link` to the next page is needed.
fn next_link(base: &str, items: &mut Vec<String>, n: Option<u32>) -> Option<String> {
    let n = n? as usize;
    if items.len() <= n {
        return None;
    }
    items.truncate(n);
    let last = items.last()?;
    Some(format!("<{base}?n={n}&last={last}>; rel=\"next\""))
}

async fn tags(app: &AppState, repo: &RepoName, q: &Query, qr: bool) -> Result<Response> {
    let (n, last) = pagination(q)?;
    let mut list = if n == Some(0) {
        if !app.registry.repo_exists(repo).await? {
            return Err(OciError::code(
                ErrorCode::NameUnknown,
                "repository name not known to registry",
            ));
        }
        Vec::new()
    } else {
        app.registry
            .list_tags(repo, last.as_deref(), n.map(|n| n.saturating_add(1)), qr)
            .await?
    };
    let link = next_link(&format!("/v2/{repo}/tags/list"), &mut list, n);
    let body = serde_json::json!({ "name": repo.as_str(), "tags": list });
    let mut resp = axum::Json(body).into_response();
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, l);
    }
    Ok(resp)
}

async fn catalog(app: &AppState, q: &Query) -> Result<Response> {
    let (n, last) = pagination(q)?;
    let n = Some(n.unwrap_or(DEFAULT_CATALOG_PAGE));
    let mut list = if n == Some(0) {
        Vec::new()
    } else {
        app.registry
            .catalog(last.as_deref(), n.map(|n| n.saturating_add(1)))
            .await?
    };
    let link = next_link("/v2/_catalog", &mut list, n);
    let mut resp = axum::Json(serde_json::json!({ "repositories": list })).into_response();
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, l);
    }
    Ok(resp)
}

async fn referrers(
    app: &AppState,
    repo: &RepoName,
    d: &Digest,
    q: &Query,
    qr: bool,
) -> Result<Response> {
    let filter = q.get("artifactType").filter(|s| !s.is_empty());
    let body = app.registry.referrers(repo, d, filter, qr).await?;
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wharf_core::manifest::media::OCI_INDEX),
    );
    if filter.is_some() {
        resp.headers_mut()
            .insert(FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}

/// Property tests of the header and query parsers: no client input panics them, valid ranges
/// parse to their bounds, and numbers past `u64` are refusals rather than overflows.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn with(name: HeaderName, value: &[u8]) -> Option<HeaderMap> {
        let v = HeaderValue::from_bytes(value).ok()?;
        let mut h = HeaderMap::new();
        h.insert(name, v);
        Some(h)
    }

    fn header(name: HeaderName, value: &str) -> HeaderMap {
        with(name, value.as_bytes()).unwrap()
    }

    /// Offsets from both ends of the `u64` range, where off-by-ones and overflows live.
    fn offset() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..1024u64,
            any::<u64>(),
            (0..1024u64).prop_map(|d| u64::MAX - d)
        ]
    }

    /// A decimal number above `u64::MAX`.
    fn too_big() -> impl Strategy<Value = String> {
        prop_oneof![
            (1..=u64::MAX as u128).prop_map(|x| (u64::MAX as u128 + x).to_string()),
            "[1-9][0-9]{20,40}",
        ]
    }

    fn blob_size() -> impl Strategy<Value = u64> {
        prop_oneof![0..4u64, offset()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn content_range_never_panics(v in prop::collection::vec(any::<u8>(), 0..48)) {
            if let Some(h) = with(header::CONTENT_RANGE, &v) {
                let _ = content_range(&h);
            }
        }

        #[test]
        fn content_range_near_the_grammar_never_panics(v in r"(bytes=|bytes |)[ 0-9+-]{0,24}(/[0-9*]{0,4}|)") {
            let _ = content_range(&header(header::CONTENT_RANGE, &v));
        }

        #[test]
        fn valid_content_ranges_parse_to_their_bounds(
            x in offset(),
            y in offset(),
            prefix in "|bytes=|bytes ",
            total in "|/[0-9]{1,6}|/\\*",
            pad in "| ",
        ) {
            let (a, b) = (x.min(y), x.max(y));
            let h = header(header::CONTENT_RANGE, &format!("{prefix}{a}{pad}-{pad}{b}{total}"));
            prop_assert_eq!(content_range(&h).ok(), Some(Some((a, b))));
        }

        #[test]
        fn overflowing_content_ranges_are_errors(n in too_big(), x in offset(), first in any::<bool>()) {
            let v = if first { format!("{n}-{x}") } else { format!("{x}-{n}") };
            prop_assert!(content_range(&header(header::CONTENT_RANGE, &v)).is_err());
        }

        #[test]
        fn byte_ranges_never_panic_and_stay_inside_the_blob(
            v in prop::collection::vec(any::<u8>(), 0..48),
            size in blob_size(),
        ) {
            if let Some(h) = with(header::RANGE, &v)
                && let ByteRange::Part(a, b) = byte_range(&h, size)
            {
                prop_assert!(a <= b && b < size);
            }
        }

        #[test]
        fn byte_ranges_near_the_grammar_stay_inside_the_blob(
            v in r"bytes=[ 0-9,+-]{0,12}|bytes=[0-9]{18,22}-[0-9]{0,22}|bytes=-[0-9]{18,22}",
            size in blob_size(),
        ) {
            if let ByteRange::Part(a, b) = byte_range(&header(header::RANGE, &v), size) {
                prop_assert!(a <= b && b < size, "{} of {}: {}-{}", v, size, a, b);
            }
        }

        #[test]
        fn valid_byte_ranges_are_served(x in offset(), y in offset(), size in blob_size()) {
            let (a, b) = (x.min(y), x.max(y));
            let want = if a < size {
                ByteRange::Part(a, b.min(size - 1))
            } else {
                ByteRange::Unsatisfiable
            };
            prop_assert_eq!(byte_range(&header(header::RANGE, &format!("bytes={a}-{b}")), size), want);
            if a < b {
                let backwards = byte_range(&header(header::RANGE, &format!("bytes={b}-{a}")), size);
                prop_assert_eq!(backwards, ByteRange::Unsatisfiable);
            }
        }

        #[test]
        fn open_and_suffix_byte_ranges_are_served(n in offset(), size in blob_size()) {
            let open = byte_range(&header(header::RANGE, &format!("bytes={n}-")), size);
            let want = if n < size { ByteRange::Part(n, size - 1) } else { ByteRange::Unsatisfiable };
            prop_assert_eq!(open, want);
            let suffix = byte_range(&header(header::RANGE, &format!("bytes=-{n}")), size);
            let want = if n == 0 || size == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(size - n.min(size), size - 1)
            };
            prop_assert_eq!(suffix, want);
        }

        #[test]
        fn overflowing_byte_ranges_are_unsatisfiable(n in too_big(), size in blob_size()) {
            for v in [format!("bytes={n}-"), format!("bytes=-{n}"), format!("bytes=0-{n}"), format!("bytes={n}-1")] {
                prop_assert_eq!(byte_range(&header(header::RANGE, &v), size), ByteRange::Unsatisfiable);
            }
        }

        #[test]
        fn query_decoding_never_panics(q in any::<String>()) {
            let _ = url_pairs(&q);
            let _ = Query::parse(Some(&q));
        }

        /// `%` next to partial or non-hex escapes and multi-byte characters.
        #[test]
        fn query_decoding_near_escapes_never_panics(q in r"([%+=&]|%[0-9a-fA-F]{0,2}|[a-z]|é|\x{1F600}){0,12}") {
            let _ = url_pairs(&q);
        }

        #[test]
        fn form_encoded_pairs_round_trip(pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..4)) {
            let q = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&pairs)
                .finish();
            prop_assert_eq!(url_pairs(&q), pairs);
        }
    }
}
