//! ACR's `/acr/v1` data plane (acr-auth.md §5): the catalog; repository, tag and manifest
//! attributes with GET and PATCH; tag and manifest listings with `n`/`last`/`orderby`/`digest`
//! and `Link` paging; untag; repository delete. Names and digests arrive percent-encoded
//! (`library%2Fhello`, `sha256%3A…`). `api-version` is optional and ignored (§5.5).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use wharf_core::{Digest, ErrorCode, Reference, RepoName};
use wharf_registry::acr::{FlagsPatch, ManifestPatch, OrderBy, Page, RepoPatch};

use crate::AppState;
use crate::error::OciError;
use crate::oci::{Query, pagination, request_info};
use crate::path::{AcrEndpoint, parse_acr};

type Result<T, E = OciError> = std::result::Result<T, E>;

/// Catalog page size when the client gives no `n` (as on `/v2/_catalog`).
const DEFAULT_CATALOG_PAGE: u32 = 1000;
/// Largest PATCH body accepted (a handful of attributes and a scan summary).
const MAX_PATCH: usize = 64 * 1024;

/// What `Link` URLs escape: everything but RFC 3986's unreserved characters, so a name's `/`
/// becomes `%2F` and a digest's `:` `%3A`, as ACR writes them.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

pub async fn handle(State(app): State<AppState>, req: Request) -> Response {
    let rest = crate::auth::decode(req.uri().path().strip_prefix("/acr/v1/").unwrap_or(""));
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let identity = req
        .extensions()
        .get::<crate::Caller>()
        .map(|c| c.identity.clone())
        .unwrap_or_else(|| "anonymous".into());
    let resp = match dispatch(&app, &rest, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if matches!(method, Method::PATCH | Method::DELETE) {
        tracing::info!(
            identity,
            %method,
            path = %rest,
            status = resp.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "acr data plane change"
        );
    }
    resp
}

async fn dispatch(app: &AppState, rest: &str, req: Request) -> Result<Response> {
    let endpoint = parse_acr(rest)?;
    let q = Query::parse(req.uri().query());
    let registry = app.auth.service(&crate::auth::request_host(&req));
    let method = req.method().clone();
    let reg = &app.registry;
    // Whether the caller may see quarantined images (see `Caller`).
    let qr = req
        .extensions()
        .get::<crate::Caller>()
        .is_some_and(|c| c.quarantine_reader);
    use AcrEndpoint as E;
    match (endpoint, method) {
        (E::Catalog, Method::GET) => catalog(app, &q).await,
        (E::Repo(repo), Method::GET) => {
            let a = reg
                .repository_attributes(&repo)
                .await
                .map_err(repo_err(&repo))?;
            Ok(json_with(&registry, a, None))
        }
        (E::Repo(repo), Method::PATCH) => {
            let body = patch_body(req).await?;
            let patch = RepoPatch {
                flags: flags_patch(&body)?,
                teleport_enabled: bool_field(&body, "teleportEnabled")?,
            };
            let a = reg
                .update_repository_attributes(&repo, patch)
                .await
                .map_err(repo_err(&repo))?;
            Ok(json_with(&registry, a, None))
        }
        (E::Repo(repo), Method::DELETE) => {
            let info = request_info(&req);
            let out = reg
                .delete_repository(&repo, &info)
                .await
                .map_err(repo_err(&repo))?;
            Ok((StatusCode::ACCEPTED, axum::Json(out)).into_response())
        }
        (E::Tags(repo), Method::GET) => {
            let (n, last) = pagination(&q)?;
            let order = orderby(&q)?;
            let digest = match q.get("digest").filter(|d| !d.is_empty()) {
                Some(d) => Some(
                    Digest::parse(d)
                        .map_err(|e| OciError::code(ErrorCode::DigestInvalid, e.to_string()))?,
                ),
                None => None,
            };
            let page = reg
                .tag_list(&repo, last.as_deref(), n, order, digest.as_ref(), qr)
                .await
                .map_err(repo_err(&repo))?;
            let mut extra = String::new();
            if let Some(d) = &digest {
                extra = format!("&digest={}", enc(&d.to_string()));
            }
            listing(&registry, &repo, "_tags", "tags", page, n, &q, &extra)
        }
        (E::Tag(repo, tag), Method::GET) => {
            let t = reg
                .tag_attributes(&repo, &tag)
                .await
                .map_err(repo_err(&repo))?;
            Ok(json_with(
                &registry,
                json!({"imageName": repo.as_str(), "tag": t}),
                None,
            ))
        }
        (E::Tag(repo, tag), Method::PATCH) => {
            let body = patch_body(req).await?;
            let t = reg
                .update_tag_attributes(&repo, &tag, flags_patch(&body)?)
                .await
                .map_err(repo_err(&repo))?;
            Ok(json_with(
                &registry,
                json!({"imageName": repo.as_str(), "tag": t}),
                None,
            ))
        }
        (E::Tag(repo, tag), Method::DELETE) => {
            // Untag: the manifest and its layers stay, and no event fires (ACR's `delete`
            // fires only when a manifest goes; acr-webhooks.md §2.3).
            let info = request_info(&req);
            match reg
                .delete_manifest(&repo, &Reference::Tag(tag.clone()), &info)
                .await
            {
                Ok(()) => Ok(StatusCode::ACCEPTED.into_response()),
                // No such tag, or no such repository: ACR names the repository when it is the
                // repository that is missing.
                Err(wharf_registry::RegistryError::ManifestUnknown) => {
                    Err(match reg.tag_attributes(&repo, &tag).await {
                        Err(e @ wharf_registry::RegistryError::NameUnknown) => repo_err(&repo)(e),
                        _ => OciError::code(
                            ErrorCode::TagUnknown,
                            "the specified tag does not exist",
                        ),
                    })
                }
                Err(e) => Err(repo_err(&repo)(e)),
            }
        }
        (E::Manifests(repo), Method::GET) => {
            let (n, last) = pagination(&q)?;
            let order = orderby(&q)?;
            let page = reg
                .manifest_list(&repo, last.as_deref(), n, order)
                .await
                .map_err(repo_err(&repo))?;
            listing(&registry, &repo, "_manifests", "manifests", page, n, &q, "")
        }
        (E::Manifest(repo, r), Method::GET) => {
            let d = resolve(app, &repo, r).await?;
            let m = reg
                .manifest_attributes(&repo, &d)
                .await
                .map_err(repo_err(&repo))?;
            Ok(json_with(
                &registry,
                json!({"imageName": repo.as_str(), "manifest": m}),
                None,
            ))
        }
        (E::Manifest(repo, r), Method::PATCH) => {
            let d = resolve(app, &repo, r).await?;
            // Only a quarantine writer changes the quarantine state (see `quarantine_writer`);
            // read before the body consumes the request.
            let writer = quarantine_writer(app, &req);
            let body = patch_body(req).await?;
            if !writer
                && (body.contains_key("quarantineState") || body.contains_key("quarantineDetails"))
            {
                return Err(OciError::code(
                    ErrorCode::Denied,
                    "requested access to the resource is denied: changing the quarantine state needs the admin user or the management credential (ACR's AcrQuarantineWriter)",
                ));
            }
            let patch = ManifestPatch {
                flags: flags_patch(&body)?,
                quarantine_state: string_field(&body, "quarantineState")?,
                quarantine_details: string_field(&body, "quarantineDetails")?,
            };
            let m = reg
                .update_manifest_attributes(&repo, &d, patch)
                .await
                .map_err(repo_err(&repo))?;
            Ok(json_with(
                &registry,
                json!({"imageName": repo.as_str(), "manifest": m}),
                None,
            ))
        }
        _ => Err(OciError::code(
            ErrorCode::Unsupported,
            "method not allowed on this endpoint",
        )),
    }
}

/// Whether the caller may release or fail a quarantined image (ACR's AcrQuarantineWriter):
/// the same owners who may read quarantined images, the admin user and the management
/// credential, by Basic or by a token issued to them. A push or metadata right is not enough:
/// otherwise whoever can push could release their own image unscanned. In the open mode
/// (no access control) everything is open, this too.
///
/// Refused with 403 `DENIED`, not ACR's 401 challenge for a token that lacks an action
/// (acr-auth.md §4.9): no token scope grants this right, so a client that fetched a new token
/// on the challenge would only be refused again.
fn quarantine_writer(app: &AppState, req: &Request) -> bool {
    !app.auth.enabled()
        || req
            .extensions()
            .get::<crate::Caller>()
            .is_some_and(|c| c.quarantine_reader)
}

/// A registry error, with ACR's `detail` for an unknown repository.
fn repo_err(repo: &RepoName) -> impl Fn(wharf_registry::RegistryError) -> OciError + '_ {
    move |e| match e {
        wharf_registry::RegistryError::NameUnknown => OciError::code(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .with_detail(json!({ "name": repo.as_str() })),
        e => OciError::from(e),
    }
}

/// The digest a manifest route names: a digest as is, a tag through its tag.
async fn resolve(app: &AppState, repo: &RepoName, r: Reference) -> Result<Digest> {
    match r {
        Reference::Digest(d) => Ok(d),
        Reference::Tag(t) => {
            let a = app
                .registry
                .tag_attributes(repo, &t)
                .await
                .map_err(repo_err(repo))?;
            Digest::parse(&a.digest).map_err(|e| crate::error::internal(&e))
        }
    }
}

/// A JSON object with `registry` (the login server) added, and a `Link` header if given.
fn json_with(registry: &str, v: impl serde::Serialize, link: Option<String>) -> Response {
    let mut obj = match serde_json::to_value(v) {
        Ok(Value::Object(o)) => o,
        Ok(_) | Err(_) => Map::new(),
    };
    obj.insert("registry".into(), Value::String(registry.to_owned()));
    let mut resp = axum::Json(Value::Object(obj)).into_response();
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, l);
    }
    resp
}

fn orderby(q: &Query) -> Result<OrderBy> {
    let v = q.get("orderby").unwrap_or("");
    OrderBy::parse(v).ok_or_else(|| {
        OciError::new(
            400,
            ErrorCode::Unsupported,
            format!("orderby must be none, timedesc or timeasc, not {v:?}"),
        )
    })
}

/// A tag or manifest listing: the page under `key`, and ACR's `Link` to the next one
/// (relative, the name and cursor percent-encoded, `orderby` always present).
#[allow(clippy::too_many_arguments)]
fn listing<T: serde::Serialize>(
    registry: &str,
    repo: &RepoName,
    route: &str,
    key: &str,
    page: Page<T>,
    n: Option<u32>,
    q: &Query,
    extra: &str,
) -> Result<Response> {
    let link = match (page.next, n) {
        (Some(last), Some(n)) => Some(format!(
            "</acr/v1/{}/{route}?last={}&n={n}&orderby={}{extra}>; rel=\"next\"",
            enc(repo.as_str()),
            enc(&last),
            enc(q.get("orderby").unwrap_or("")),
        )),
        _ => None,
    };
    let mut body = Map::new();
    body.insert("imageName".into(), json!(repo.as_str()));
    body.insert(key.into(), json!(page.items));
    Ok(json_with(registry, Value::Object(body), link))
}

async fn catalog(app: &AppState, q: &Query) -> Result<Response> {
    let (n, last) = pagination(q)?;
    let n = n.unwrap_or(DEFAULT_CATALOG_PAGE);
    let mut list = if n == 0 {
        Vec::new()
    } else {
        app.registry
            .catalog(last.as_deref(), Some(n.saturating_add(1)))
            .await?
    };
    let mut link = None;
    if list.len() > n as usize {
        list.truncate(n as usize);
        if let Some(l) = list.last() {
            link = Some(format!(
                "</acr/v1/_catalog?last={}&n={n}>; rel=\"next\"",
                enc(l)
            ));
        }
    }
    let mut resp = axum::Json(json!({ "repositories": list })).into_response();
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, l);
    }
    Ok(resp)
}

/// A PATCH body: a JSON object (an empty body is an empty patch).
async fn patch_body(req: Request) -> Result<Map<String, Value>> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_PATCH)
        .await
        .map_err(|_| {
            OciError::new(
                413,
                ErrorCode::SizeInvalid,
                format!("body exceeds {MAX_PATCH} bytes"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(OciError::new(
            400,
            ErrorCode::Unsupported,
            "the body must be a JSON object of changeable attributes",
        )),
    }
}

/// A boolean attribute, if present; unknown fields are ignored (§5.4).
fn bool_field(body: &Map<String, Value>, k: &str) -> Result<Option<bool>> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(OciError::new(
            400,
            ErrorCode::Unsupported,
            format!("{k} must be true or false"),
        )),
    }
}

fn string_field(body: &Map<String, Value>, k: &str) -> Result<Option<String>> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(OciError::new(
            400,
            ErrorCode::Unsupported,
            format!("{k} must be a string"),
        )),
    }
}

fn flags_patch(body: &Map<String, Value>) -> Result<FlagsPatch> {
    Ok(FlagsPatch {
        write_enabled: bool_field(body, "writeEnabled")?,
        delete_enabled: bool_field(body, "deleteEnabled")?,
        read_enabled: bool_field(body, "readEnabled")?,
        list_enabled: bool_field(body, "listEnabled")?,
    })
}
