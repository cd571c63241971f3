//! The management API at ARM's paths (acr-webhooks.md §3, acr-auth.md §2–3, §6):
//!
//! - `GET /subscriptions[/{sub}]`, `…/resourceGroups[/{rg}]`: the one subscription and
//!   resource group, so a client can discover the names;
//! - `…/providers/Microsoft.ContainerRegistry/registries` by subscription and by resource group;
//! - `{R}` = `…/registries/{r}`: GET and PATCH of the registry (admin user, anonymous pull,
//!   quarantine and retention policies), `listCredentials`, `regenerateCredential`,
//!   `generateCredentials`, `webhooks`, `tokens` and `scopeMaps`.
//!
//! Routed by hand rather than by axum's router, because ARM matches its literal segments
//! ignoring case (`resourcegroups`, `microsoft.containerregistry`) and answers every failure —
//! unknown path, wrong method, bad query — in its own error shape. Every route needs an
//! `api-version` ARM publishes; every list pages with `$top` and an opaque `$skipToken` in an
//! absolute `nextLink`. Long-running operations complete synchronously (PUT 200/201 with the
//! provisioned resource, DELETE 200/204, POST 200), which the Azure SDK's pollers accept.
//!
//! `/wharf/v1/webhooks/…`, the management API of earlier versions, is an alias of the same
//! webhook operations: no `api-version` needed, the registry implied.

// The errors here are finished ARM error responses, made at most once per refused request and
// moved straight out: their size costs nothing, and boxing each would only add noise.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use wharf_auth::AuthError;
use wharf_core::ArmIdentity;
use wharf_core::arm::{PROVIDER, REGISTRY_TYPE};
use wharf_registry::{PoliciesPatch, RegistryError, RegistryPolicies};

use crate::AppState;
use crate::auth::{IsTls, request_host};
use crate::mgmt::{WebhookOp, arm_error, arm_out_of_space, bad_body, read_body};

/// The api-versions of `Microsoft.ContainerRegistry` the reference lists (acr-webhooks.md
/// §3.1): the stable ones, the preview webhooks first appeared in, and the newest preview
/// (Azure CLI's). The SDK's default, 2025-11-01, is the latest stable.
pub const API_VERSIONS: &[&str] = &[
    "2017-06-01-preview",
    "2017-10-01",
    "2019-05-01",
    "2021-09-01",
    "2022-12-01",
    "2023-07-01",
    "2025-04-01",
    "2025-11-01",
    "2026-09-01-preview",
];

/// The api-versions `Microsoft.Resources` publishes for subscriptions and resource groups
/// (what `az account` and the resource SDKs send), besides the registry's own.
const RESOURCES_API_VERSIONS: &[&str] = &[
    "2016-06-01",
    "2018-06-01",
    "2019-06-01",
    "2019-11-01",
    "2020-01-01",
    "2021-01-01",
    "2021-04-01",
    "2022-09-01",
    "2022-12-01",
];

/// Items per page of a list when the client sets no `$top`. Small, as ARM's pages are for
/// some resource types, so paging is exercised by ordinary use.
pub const DEFAULT_PAGE: usize = 20;
/// Larger `$top` values are served as this many.
pub const MAX_PAGE: usize = 1000;

/// What every operation needs to know of its request.
struct Ctx {
    app: AppState,
    method: Method,
    /// `scheme://host` as the client addressed the server: the start of every `nextLink`.
    origin: String,
    /// The path as the client sent it (its letter case kept), for `nextLink`.
    path: String,
    /// The query's pairs, decoded.
    query: Vec<(String, String)>,
    /// The host the client addressed (the login server when none is configured).
    host: String,
    /// Whether this came through the `/wharf/v1` alias (no api-version needed).
    alias: bool,
}

impl Ctx {
    fn new(app: AppState, req: &Request, alias: bool) -> Ctx {
        let host = request_host(req);
        let tls = req.extensions().get::<IsTls>().is_some_and(|t| t.0);
        let query = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Ctx {
            app,
            method: req.method().clone(),
            origin: format!("{}://{host}", if tls { "https" } else { "http" }),
            path: req.uri().path().to_owned(),
            query,
            host,
            alias,
        }
    }

    /// A query parameter, its name matched ignoring case (ARM clients send both `$skipToken`
    /// and `$skiptoken`).
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn arm(&self) -> &ArmIdentity {
        &self.app.auth.config().arm
    }
}

/// `/subscriptions…`: every ARM route.
pub async fn handle(State(app): State<AppState>, req: Request) -> Response {
    let ctx = Ctx::new(app, &req, false);
    let segs = match segments(req.uri().path()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    route(ctx, &segs, req).await
}

/// Paths no route matched: ARM's in another letter case (`/Subscriptions/…`), or nothing.
pub async fn fallback(State(app): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_ascii_lowercase();
    if path == "/subscriptions" || path.starts_with("/subscriptions/") {
        let mut r = handle(State(app), req).await;
        r.headers_mut().insert(
            header::HeaderName::from_static(crate::mgmt::API_HEADER),
            HeaderValue::from_static(crate::mgmt::API_VERSION),
        );
        return r;
    }
    // The registry's own families (`/v2` and `/acr/v1` are routed; what reaches here under
    // them is no endpoint) answer in the OCI shape; anything else is taken for a management
    // path, as the auth layer takes it, and answers in ARM's.
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if matches!(first, "v2" | "acr" | "oauth2") {
        return crate::error::OciError::code(
            wharf_core::ErrorCode::NotFound,
            format!("no such endpoint: {}", req.uri().path()),
        )
        .into_response();
    }
    arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "no such path: {}; the management API is under /subscriptions",
            req.uri().path()
        ),
    )
}

/// `/wharf/v1/…`: the webhook operations of the earlier management API, the same handlers.
pub async fn handle_alias(State(app): State<AppState>, req: Request) -> Response {
    let ctx = Ctx::new(app, &req, true);
    let segs = match segments(req.uri().path()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // ["wharf", "v1", rest…]
    match segs.get(2..) {
        Some(rest @ [first, ..]) if first == "webhooks" => registry_op(&ctx, rest, req).await,
        Some([only]) if only == "gc" => garbage_collection(&ctx).await,
        _ => not_found(&ctx),
    }
}

/// `POST /wharf/v1/gc[?dryRun=true]`: one garbage collection now, answered with its figures
/// (a Wharf extension, which `wharf gc` calls; the management credential or the admin user
/// only, see `auth::needs`). The run finishes even if the client goes away.
async fn garbage_collection(ctx: &Ctx) -> Response {
    if ctx.method != Method::POST {
        return method_not_allowed(ctx, "POST");
    }
    let dry_run = match ctx.param("dryRun") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                "dryRun: must be true or false",
            );
        }
    };
    let registry = ctx.app.registry.clone();
    let run = tokio::spawn(async move { registry.collect_garbage(dry_run).await });
    match run.await {
        Ok(Ok(report)) => ok(json!(report)),
        // Object storage down, or the volume full: the run stopped where it was (what it did
        // is consistent, see wharf_store::gc) and may be asked for again.
        Ok(Err(RegistryError::Unavailable(m))) => {
            tracing::warn!(reason = %m, "garbage collection could not run");
            let mut r = arm_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the storage is temporarily unavailable: retry the run later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            r
        }
        Ok(Err(RegistryError::OutOfSpace)) => arm_out_of_space(),
        Ok(Err(e)) => internal(&e),
        Err(e) => internal(&e),
    }
}

/// The path's segments, percent-decoded.
fn segments(path: &str) -> Result<Vec<String>, Response> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        "path: every segment must be UTF-8 text once percent-decoded",
                    )
                })
        })
        .collect()
}

fn lit(seg: &str, want: &str) -> bool {
    seg.eq_ignore_ascii_case(want)
}

fn not_found(ctx: &Ctx) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "no management operation {} {}; the registry's operations are under {}",
            ctx.method,
            ctx.path,
            ctx.arm().registry_id()
        ),
    )
}

fn method_not_allowed(ctx: &Ctx, allow: &str) -> Response {
    let mut r = arm_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "method {} is not allowed on {}; allowed: {allow}",
            ctx.method, ctx.path
        ),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow_static(allow)));
    r
}

/// `Allow` values are the few literals below; a header needs a `'static` or a parse.
fn allow_static(allow: &str) -> &'static str {
    match allow {
        "GET" => "GET",
        "POST" => "POST",
        "GET, PATCH" => "GET, PATCH",
        "GET, POST" => "GET, POST",
        _ => "GET, PUT, PATCH, DELETE",
    }
}

/// Checks `api-version` against the published ones (ARM's codes and messages).
fn check_api_version(ctx: &Ctx, extra: &[&str]) -> Result<(), Response> {
    if ctx.alias {
        return Ok(());
    }
    let Some(v) = ctx.param("api-version") else {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let known = |list: &[&str]| list.iter().any(|k| k.eq_ignore_ascii_case(v));
    if known(API_VERSIONS) || known(extra) {
        return Ok(());
    }
    let supported: Vec<&str> = API_VERSIONS.iter().chain(extra).copied().collect();
    Err(arm_error(
        StatusCode::BAD_REQUEST,
        "InvalidApiVersionParameter",
        &format!(
            "The api-version '{v}' is invalid. The supported versions are '{}'.",
            supported.join(",")
        ),
    ))
}

/// ARM's answers for a subscription, resource group or registry this server does not have.
fn check_subscription(ctx: &Ctx, sub: &str) -> Result<(), Response> {
    if sub.eq_ignore_ascii_case(&ctx.arm().subscription) {
        return Ok(());
    }
    Err(arm_error(
        StatusCode::NOT_FOUND,
        "SubscriptionNotFound",
        &format!("The subscription '{sub}' could not be found."),
    ))
}

fn check_resource_group(ctx: &Ctx, sub: &str, rg: &str) -> Result<(), Response> {
    check_subscription(ctx, sub)?;
    if rg.eq_ignore_ascii_case(&ctx.arm().resource_group) {
        return Ok(());
    }
    Err(arm_error(
        StatusCode::NOT_FOUND,
        "ResourceGroupNotFound",
        &format!("Resource group '{rg}' could not be found."),
    ))
}

fn check_registry(ctx: &Ctx, sub: &str, rg: &str, registry: &str) -> Result<(), Response> {
    check_resource_group(ctx, sub, rg)?;
    if registry.eq_ignore_ascii_case(&ctx.arm().registry) {
        return Ok(());
    }
    Err(arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource '{REGISTRY_TYPE}/{registry}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    ))
}

/// Routes an ARM path (its segments start with `subscriptions`).
async fn route(ctx: Ctx, segs: &[String], req: Request) -> Response {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let r = match s.as_slice() {
        [s0] if lit(s0, "subscriptions") => {
            resource_list(&ctx, RESOURCES_API_VERSIONS, |ctx| {
                Ok(vec![subscription_json(ctx.arm())])
            })
            .await
        }
        [s0, sub] if lit(s0, "subscriptions") => get_only(&ctx, RESOURCES_API_VERSIONS, |ctx| {
            check_subscription(ctx, sub)?;
            Ok(subscription_json(ctx.arm()))
        }),
        [s0, sub, s2] if lit(s0, "subscriptions") && lit(s2, "resourceGroups") => {
            resource_list(&ctx, RESOURCES_API_VERSIONS, |ctx| {
                check_subscription(ctx, sub)?;
                Ok(vec![resource_group_json(ctx)])
            })
            .await
        }
        [s0, sub, s2, rg] if lit(s0, "subscriptions") && lit(s2, "resourceGroups") => {
            get_only(&ctx, RESOURCES_API_VERSIONS, |ctx| {
                check_resource_group(ctx, sub, rg)?;
                Ok(resource_group_json(ctx))
            })
        }
        [s0, sub, s2, s3, s4]
            if lit(s0, "subscriptions")
                && lit(s2, "providers")
                && lit(s3, PROVIDER)
                && lit(s4, "registries") =>
        {
            registry_list(&ctx, |ctx| check_subscription(ctx, sub)).await
        }
        [s0, sub, s2, rg, s4, s5, s6]
            if lit(s0, "subscriptions")
                && lit(s2, "resourceGroups")
                && lit(s4, "providers")
                && lit(s5, PROVIDER)
                && lit(s6, "registries") =>
        {
            registry_list(&ctx, |ctx| check_resource_group(ctx, sub, rg)).await
        }
        [s0, sub, s2, rg, s4, s5, s6, registry, ..]
            if lit(s0, "subscriptions")
                && lit(s2, "resourceGroups")
                && lit(s4, "providers")
                && lit(s5, PROVIDER)
                && lit(s6, "registries") =>
        {
            if let Err(r) =
                check_api_version(&ctx, &[]).and_then(|()| check_registry(&ctx, sub, rg, registry))
            {
                return r;
            }
            return registry_op(&ctx, &segs[8..], req).await;
        }
        _ => Err(not_found(&ctx)),
    };
    r.unwrap_or_else(|e| e)
}

/// A GET-only resource.
fn get_only(
    ctx: &Ctx,
    versions: &[&str],
    f: impl FnOnce(&Ctx) -> Result<Value, Response>,
) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx, "GET"));
    }
    check_api_version(ctx, versions)?;
    f(ctx).map(ok)
}

/// A GET-only list, paged.
async fn resource_list(
    ctx: &Ctx,
    versions: &[&str],
    f: impl FnOnce(&Ctx) -> Result<Vec<Value>, Response>,
) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx, "GET"));
    }
    check_api_version(ctx, versions)?;
    let page = Page::read(ctx)?;
    let items = f(ctx)?;
    Ok(ok(page.of(ctx, items)))
}

async fn registry_list(
    ctx: &Ctx,
    check: impl FnOnce(&Ctx) -> Result<(), Response>,
) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx, "GET"));
    }
    check_api_version(ctx, &[])?;
    check(ctx)?;
    let page = Page::read(ctx)?;
    let r = registry_json(ctx).await?;
    Ok(ok(page.of(ctx, vec![r])))
}

fn subscription_json(arm: &ArmIdentity) -> Value {
    json!({
        "id": arm.subscription_id(),
        "subscriptionId": arm.subscription,
        "displayName": "Wharf",
        "state": "Enabled",
        "tenantId": wharf_core::arm::DEFAULT_SUBSCRIPTION,
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "Wharf",
            "spendingLimit": "Off",
        },
        "authorizationSource": "RoleBased",
    })
}

fn resource_group_json(ctx: &Ctx) -> Value {
    let arm = ctx.arm();
    json!({
        "id": arm.resource_group_id(),
        "name": arm.resource_group,
        "type": "Microsoft.Resources/resourceGroups",
        "location": ctx.app.hooks.config().region,
        "properties": {"provisioningState": "Succeeded"},
    })
}

// ---- paging ----------------------------------------------------------------------------

/// `$top` and `$skipToken` of a list request. The token is opaque to clients (base64url of
/// the last name, or history id, of the previous page) and only ever comes from a `nextLink`.
struct Page {
    top: usize,
    after: Option<String>,
}

fn bad_query(message: &str) -> Response {
    arm_error(
        StatusCode::BAD_REQUEST,
        "InvalidQueryParameterValue",
        message,
    )
}

impl Page {
    fn read(ctx: &Ctx) -> Result<Page, Response> {
        let top = match ctx.param("$top") {
            None => DEFAULT_PAGE,
            Some(t) => match t.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n.min(MAX_PAGE),
                _ => {
                    return Err(bad_query(
                        "Invalid value for query parameter '$top': must be a whole number, at least 1.",
                    ));
                }
            },
        };
        let after = match ctx.param("$skipToken") {
            None => None,
            Some(t) => Some(
                URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        bad_query(
                            "Invalid value for query parameter '$skipToken': not a token from this server; use the nextLink it returned.",
                        )
                    })?,
            ),
        };
        Ok(Page { top, after })
    }

    /// The `nextLink` that continues after `last`: this request's URL with its own
    /// parameters (api-version) kept, and `$top`/`$skipToken` set.
    fn next_link(&self, ctx: &Ctx, last: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &ctx.query {
            if !k.eq_ignore_ascii_case("$top") && !k.eq_ignore_ascii_case("$skipToken") {
                q.append_pair(k, v);
            }
        }
        q.append_pair("$top", &self.top.to_string());
        q.append_pair("$skipToken", &URL_SAFE_NO_PAD.encode(last));
        format!("{}{}?{}", ctx.origin, ctx.path, q.finish())
    }

    /// One page of resources, ordered by name (ignoring case, as ARM names compare).
    fn of(&self, ctx: &Ctx, mut items: Vec<Value>) -> Value {
        let key = |v: &Value| {
            let n = v["name"].as_str().unwrap_or_default();
            (n.to_ascii_lowercase(), n.to_owned())
        };
        items.sort_by_key(key);
        let start = match &self.after {
            Some(after) => {
                let after = (after.to_ascii_lowercase(), after.clone());
                items.partition_point(|v| key(v) <= after)
            }
            None => 0,
        };
        let rest = items.split_off(start.min(items.len()));
        let more = rest.len() > self.top;
        let value: Vec<Value> = rest.into_iter().take(self.top).collect();
        let mut out = json!({ "value": value });
        if more && let Some(last) = value.last().and_then(|v| v["name"].as_str()) {
            out["nextLink"] = json!(self.next_link(ctx, last));
        }
        out
    }
}

// ---- the registry and what is under it ---------------------------------------------------

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn auth_err(e: AuthError) -> Response {
    match e {
        AuthError::Invalid(m) => arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", &m),
        AuthError::NotFound(what) => arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("{what} not found"),
        ),
        AuthError::Conflict(m) => arm_error(StatusCode::CONFLICT, "Conflict", &m),
        e if e.is_out_of_space() => arm_out_of_space(),
        other => internal(&other),
    }
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "management operation failed");
    arm_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "internal error",
    )
}

/// Parses a body (an empty one is the type's default); the error is the 400 to answer.
fn parse<T: DeserializeOwned + Default>(b: &[u8]) -> Result<T, Response> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // serde's messages may quote values; the position is all a client needs.
    serde_json::from_slice(b).map_err(|e| {
        let at = format!("(line {}, column {})", e.line(), e.column());
        let object = serde_json::from_slice::<Value>(b).is_ok_and(|v| v.is_object());
        if e.classify() == serde_json::error::Category::Data && object {
            // A property of the wrong type: a bad parameter, as a bad value is (and as the
            // webhook bodies answer it), not an unreadable body.
            arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                &format!("request body: a property has a value of the wrong type {at}"),
            )
        } else {
            bad_body(&format!("request body: not the expected JSON {at}"))
        }
    })
}

/// A resource created (201) or replaced (200) by a PUT.
fn put_answer(r: Result<(Value, bool), AuthError>) -> Response {
    match r {
        Ok((v, true)) => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Ok((v, false)) => ok(v),
        Err(e) => auth_err(e),
    }
}

/// DELETE: 200 if it was there, 204 if not (ARM).
fn deleted(r: Result<bool, AuthError>) -> Response {
    match r {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => auth_err(e),
    }
}

/// The operations under `{R}`; `rest` is the path below it.
async fn registry_op(ctx: &Ctx, rest: &[String], req: Request) -> Response {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = ctx.method.clone();
    let is = |want: &Method| m == *want;
    // The body: required (and JSON) for PUT and PATCH and the POST actions that take one;
    // otherwise optional, but JSON if present.
    let needs_body = matches!(m, Method::PUT | Method::PATCH)
        || matches!(r.as_slice(), [a] if lit(a, "regenerateCredential") || lit(a, "generateCredentials"));
    let body = match read_body(req, needs_body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let app = &ctx.app;
    let arm = ctx.arm();
    match r.as_slice() {
        [] if is(&Method::GET) => registry_json(ctx).await.map_or_else(|e| e, ok),
        [] if is(&Method::PATCH) => update_registry(ctx, &body).await,
        [] => method_not_allowed(ctx, "GET, PATCH"),
        [a] if lit(a, "listCredentials") => match m {
            Method::POST => app.auth.list_credentials().await.map_or_else(auth_err, ok),
            _ => method_not_allowed(ctx, "POST"),
        },
        [a] if lit(a, "regenerateCredential") => match m {
            Method::POST => match parse(&body) {
                Ok(r) => app
                    .auth
                    .regenerate_credential(r)
                    .await
                    .map_or_else(auth_err, ok),
                Err(e) => e,
            },
            _ => method_not_allowed(ctx, "POST"),
        },
        [a] if lit(a, "generateCredentials") => match m {
            Method::POST => match parse(&body) {
                Ok(g) => app
                    .auth
                    .generate_credentials(g)
                    .await
                    .map_or_else(auth_err, ok),
                Err(e) => e,
            },
            _ => method_not_allowed(ctx, "POST"),
        },
        [a] if lit(a, "webhooks") => match m {
            Method::GET => match Page::read(ctx) {
                Ok(page) => match crate::mgmt::list_webhooks(app, arm).await {
                    Ok(items) => ok(page.of(ctx, items)),
                    Err(e) => e,
                },
                Err(e) => e,
            },
            _ => method_not_allowed(ctx, "GET"),
        },
        [a, name] if lit(a, "webhooks") => {
            let op = match m {
                Method::GET => WebhookOp::Get(name),
                Method::PUT => WebhookOp::Put {
                    name,
                    body,
                    location_required: !ctx.alias,
                },
                Method::PATCH => WebhookOp::Patch(name, body),
                Method::DELETE => WebhookOp::Delete(name),
                _ => return method_not_allowed(ctx, "GET, PUT, PATCH, DELETE"),
            };
            crate::mgmt::webhook(app, arm, op).await
        }
        [a, name, action] if lit(a, "webhooks") && lit(action, "listEvents") => match m {
            // ARM SDKs fetch a nextLink page with GET.
            Method::POST | Method::GET => list_events(ctx, name).await,
            _ => method_not_allowed(ctx, "GET, POST"),
        },
        [a, name, action] if lit(a, "webhooks") => {
            let op = if lit(action, "ping") {
                WebhookOp::Ping(name)
            } else if lit(action, "getCallbackConfig") {
                WebhookOp::GetCallbackConfig(name)
            } else if lit(action, "redeliver") {
                WebhookOp::Redeliver(name, body)
            } else if lit(action, "rotateSigningSecret") {
                WebhookOp::RotateSigningSecret(name, body)
            } else {
                return not_found(ctx);
            };
            if m != Method::POST {
                return method_not_allowed(ctx, "POST");
            }
            crate::mgmt::webhook(app, arm, op).await
        }
        [a] if lit(a, "tokens") => match m {
            Method::GET => paged(ctx, app.auth.list_tokens().await),
            _ => method_not_allowed(ctx, "GET"),
        },
        [a, name] if lit(a, "tokens") => match m {
            Method::GET => app.auth.get_token(name).await.map_or_else(auth_err, ok),
            Method::PUT | Method::PATCH => match parse(&body) {
                Ok(t) => {
                    let patch = m == Method::PATCH;
                    let r = app.auth.put_token(name, t, patch).await;
                    // A PATCH answers 200 whatever it did; only a PUT creates (201).
                    put_answer(r.map(|(v, created)| (v, created && !patch)))
                }
                Err(e) => e,
            },
            Method::DELETE => deleted(app.auth.delete_token(name).await),
            _ => method_not_allowed(ctx, "GET, PUT, PATCH, DELETE"),
        },
        [a] if lit(a, "scopeMaps") => match m {
            Method::GET => paged(ctx, app.auth.list_scope_maps().await),
            _ => method_not_allowed(ctx, "GET"),
        },
        [a, name] if lit(a, "scopeMaps") => match m {
            Method::GET => app.auth.get_scope_map(name).await.map_or_else(auth_err, ok),
            Method::PUT | Method::PATCH => match parse(&body) {
                Ok(b) => {
                    let patch = m == Method::PATCH;
                    let r = app.auth.put_scope_map(name, b, patch).await;
                    put_answer(r.map(|(v, created)| (v, created && !patch)))
                }
                Err(e) => e,
            },
            Method::DELETE => deleted(app.auth.delete_scope_map(name).await),
            _ => method_not_allowed(ctx, "GET, PUT, PATCH, DELETE"),
        },
        _ => not_found(ctx),
    }
}

fn paged(ctx: &Ctx, items: Result<Vec<Value>, AuthError>) -> Response {
    let page = match Page::read(ctx) {
        Ok(p) => p,
        Err(e) => return e,
    };
    match items {
        Ok(items) => ok(page.of(ctx, items)),
        Err(e) => auth_err(e),
    }
}

/// listEvents, paged by history id (newest first), so pages stay stable while deliveries are
/// recorded.
async fn list_events(ctx: &Ctx, name: &str) -> Response {
    let page = match Page::read(ctx) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let before = match page.after.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return bad_query(
                "Invalid value for query parameter '$skipToken': not a token from this server; use the nextLink it returned.",
            );
        }
    };
    match crate::mgmt::list_events(&ctx.app, name, before, page.top).await {
        Ok((value, next)) => {
            let mut out = json!({ "value": value });
            if let Some(id) = next {
                out["nextLink"] = json!(page.next_link(ctx, &id.to_string()));
            }
            ok(out)
        }
        Err(e) => e,
    }
}

// ---- the registry resource -------------------------------------------------------------

fn status(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

/// The registry resource (`Registry`). What Wharf does not implement is shown with the value
/// that describes it (no encryption, no private endpoints, public network access), read-only.
async fn registry_json(ctx: &Ctx) -> Result<Value, Response> {
    let app = &ctx.app;
    let arm = ctx.arm();
    let policies = app.registry.policies().await.map_err(|e| internal(&e))?;
    let created = app.auth.creation_date().await.map_err(auth_err)?;
    Ok(registry_value(ctx, arm, &policies, created))
}

fn rfc3339(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| json!(wharf_core::format_timestamp(&t)))
        .unwrap_or(Value::Null)
}

fn registry_value(ctx: &Ctx, arm: &ArmIdentity, p: &RegistryPolicies, created: i64) -> Value {
    let app = &ctx.app;
    let mut retention = json!({"days": p.retention_days, "status": status(p.retention_enabled)});
    if let Some(t) = p.retention_updated_at {
        retention["lastUpdatedTime"] = rfc3339(t);
    }
    json!({
        "id": arm.registry_id(),
        "name": arm.registry,
        "type": REGISTRY_TYPE,
        "location": app.hooks.config().region,
        "tags": {},
        "sku": {"name": "Premium", "tier": "Premium"},
        "properties": {
            "loginServer": app.auth.service(&ctx.host),
            "creationDate": rfc3339(created),
            "provisioningState": "Succeeded",
            "adminUserEnabled": app.auth.admin_enabled(),
            "anonymousPullEnabled": app.auth.anonymous_pull(),
            "policies": {
                "quarantinePolicy": {"status": status(p.quarantine_enabled)},
                "trustPolicy": {"type": "Notary", "status": "disabled"},
                "retentionPolicy": retention,
                "exportPolicy": {"status": "enabled"},
                "azureADAuthenticationAsArmPolicy": {"status": "disabled"},
            },
            "encryption": {"status": "disabled"},
            "dataEndpointEnabled": false,
            "dataEndpointHostNames": [],
            "privateEndpointConnections": [],
            "publicNetworkAccess": "Enabled",
            "networkRuleBypassOptions": "AzureServices",
            "zoneRedundancy": "Disabled",
        },
    })
}

/// What a registry PATCH may change.
#[derive(Default)]
struct RegistryChange {
    admin: Option<bool>,
    anonymous: Option<bool>,
    policies: PoliciesPatch,
}

/// `PATCH {R}` (`RegistryUpdateParameters`): the admin user, anonymous pull and the
/// quarantine and retention policies change; any other property given must equal what the
/// registry shows (sending back a resource read earlier works), or the PATCH is refused
/// naming it. Everything is checked before anything is written.
async fn update_registry(ctx: &Ctx, body: &Bytes) -> Response {
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return bad_body(&format!(
                    "request body: not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ));
            }
        }
    };
    let Some(obj) = v.as_object() else {
        return bad_body("request body: must be a JSON object");
    };
    let current = match registry_json(ctx).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut change = RegistryChange::default();
    if let Err(m) = read_change(obj, "", &current, &mut change) {
        return arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", &m);
    }
    let app = &ctx.app;
    if change.admin.is_some() || change.anonymous.is_some() {
        let u = wharf_auth::model::RegistryUpdate {
            properties: Some(wharf_auth::model::RegistryUpdateProps {
                admin_user_enabled: change.admin,
                anonymous_pull_enabled: change.anonymous,
            }),
            ..Default::default()
        };
        if let Err(e) = app.auth.update_registry(u).await {
            return auth_err(e);
        }
    }
    if change.policies != PoliciesPatch::default()
        && let Err(e) = app.registry.update_policies(change.policies).await
    {
        return if matches!(e, RegistryError::OutOfSpace) {
            arm_out_of_space()
        } else {
            internal(&e)
        };
    }
    registry_json(ctx).await.map_or_else(|e| e, ok)
}

fn enabled_or_disabled(path: &str, v: &Value) -> Result<bool, String> {
    match v.as_str() {
        Some(s) if s.eq_ignore_ascii_case("enabled") => Ok(true),
        Some(s) if s.eq_ignore_ascii_case("disabled") => Ok(false),
        _ => Err(format!("{path}: must be \"enabled\" or \"disabled\"")),
    }
}

/// Walks a PATCH body: the writable leaves go into `change`; every other leaf must equal the
/// current resource's (`current`, the same path).
fn read_change(
    obj: &Map<String, Value>,
    prefix: &str,
    current: &Value,
    change: &mut RegistryChange,
) -> Result<(), String> {
    for (k, v) in obj {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        // A null is "not given", as autorest clients send unset optionals.
        if v.is_null() {
            continue;
        }
        let cur = &current[k.as_str()];
        // A writable value equal to the current one is no change: nothing is written (and the
        // retention policy's lastUpdatedTime stays).
        let unchanged = match (v, cur) {
            (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
            _ => v == cur,
        };
        match path.as_str() {
            "properties.adminUserEnabled" => {
                let b = v
                    .as_bool()
                    .ok_or(format!("{path}: must be true or false"))?;
                change.admin = (!unchanged).then_some(b);
            }
            "properties.anonymousPullEnabled" => {
                let b = v
                    .as_bool()
                    .ok_or(format!("{path}: must be true or false"))?;
                change.anonymous = (!unchanged).then_some(b);
            }
            "properties.policies.quarantinePolicy.status" => {
                let on = enabled_or_disabled(&path, v)?;
                change.policies.quarantine_enabled = (!unchanged).then_some(on);
            }
            "properties.policies.retentionPolicy.status" => {
                let on = enabled_or_disabled(&path, v)?;
                change.policies.retention_enabled = (!unchanged).then_some(on);
            }
            "properties.policies.retentionPolicy.days" => {
                let days = v
                    .as_u64()
                    .filter(|d| *d <= 365)
                    .ok_or(format!("{path}: must be a whole number from 0 to 365"))?;
                change.policies.retention_days = (!unchanged).then_some(days as u32);
            }
            _ => match v.as_object() {
                Some(inner) if cur.is_object() || cur.is_null() => {
                    if cur.is_null() && !inner.is_empty() {
                        return Err(format!("{path}: not supported by Wharf"));
                    }
                    read_change(inner, &path, cur, change)?;
                }
                _ => {
                    // ARM's enums are compared ignoring case (`Premium`, `premium`).
                    if !unchanged {
                        return Err(if cur.is_null() {
                            format!("{path}: not supported by Wharf")
                        } else {
                            format!("{path}: read-only on Wharf (it is {cur})")
                        });
                    }
                }
            },
        }
    }
    Ok(())
}
