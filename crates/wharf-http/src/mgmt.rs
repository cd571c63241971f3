//! The webhook management API under `/wharf/v1/webhooks`, with ACR's ARM bodies and ARM's
//! `{"error":{"code","message"}}` error shape. Secrets leave only through getCallbackConfig.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::json;
use wharf_hooks::HooksError;
use wharf_hooks::model::{
    JsonType, REDELIVER_PARAMETERS, ROTATE_PARAMETERS, RotateSigningSecret, WEBHOOK_PARAMETERS,
    WebhookCreate, WebhookUpdate, check_body, event_json, webhook_json,
};

use crate::AppState;

/// Most bytes in a management request body. Far above any valid body (a 2048-character
/// service URI and 8 KiB of custom headers), so a field that is too long gets its own 400
/// naming that field's limit; only a body past this bound is refused unread, with 413.
pub const MAX_BODY_BYTES: usize = 128 * 1024;

/// Sent on every management response, so a client can tell Wharf's management API from
/// whatever else answers at the address it was given (another server, a proxy's error page).
pub const API_HEADER: &str = "wharf-api";
pub const API_VERSION: &str = "v1";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list))
        .route(
            "/webhooks/{name}",
            get(show).put(create).patch(update).delete(remove),
        )
        .route("/webhooks/{name}/ping", post(ping))
        .route(
            "/webhooks/{name}/listEvents",
            post(list_events).get(list_events),
        )
        .route("/webhooks/{name}/getCallbackConfig", post(get_config))
        .route("/webhooks/{name}/redeliver", post(redeliver))
        .route(
            "/webhooks/{name}/rotateSigningSecret",
            post(rotate_signing_secret),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn(arm_responses))
}

pub(crate) fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(
            json!({ "error": { "code": code, "message": message, "target": null, "details": [] } }),
        ),
    )
        .into_response();
    // Also on refusals made before the management router runs (the auth layer's), so the CLI
    // knows it is talking to Wharf.
    r.headers_mut().insert(
        HeaderName::from_static(API_HEADER),
        HeaderValue::from_static(API_VERSION),
    );
    r
}

/// Every management response carries [`API_HEADER`], and every failure is ARM-shaped: the
/// handlers' own errors already are, and this catches what axum answers by itself before a
/// handler runs (405 with an empty body for a known path with another method) or anything
/// else that is not JSON, keeping its status and headers (`Allow` on a 405).
pub(crate) async fn arm_responses(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (code, message) = match status {
            StatusCode::METHOD_NOT_ALLOWED => (
                "MethodNotAllowed",
                format!(
                    "method {method} is not allowed here; allowed: {}",
                    resp.headers()
                        .get(header::ALLOW)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                ),
            ),
            StatusCode::NOT_FOUND => ("NotFound", "no such management operation".to_owned()),
            s if s.is_server_error() => ("InternalServerError", "internal error".to_owned()),
            s => (
                "BadRequest",
                format!(
                    "the request was refused: {}",
                    s.canonical_reason().unwrap_or("client error")
                ),
            ),
        };
        let mut arm = arm_error(status, code, &message);
        // Keep what axum set (`Allow`), but not the old body's framing or type.
        for (k, v) in resp.headers() {
            if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                arm.headers_mut().append(k.clone(), v.clone());
            }
        }
        resp = arm;
    }
    resp.headers_mut().insert(
        HeaderName::from_static(API_HEADER),
        HeaderValue::from_static(API_VERSION),
    );
    resp
}

/// Paths under `/wharf/v1` that name no operation. ARM answers an unknown resource path with
/// a 404 in its error shape, and so does Wharf. Also routed directly for `/wharf/v1/`, which
/// the nested router does not see, hence the header set here too.
pub(crate) async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let mut resp = arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "no management operation {method} {}; see /wharf/v1/webhooks",
            uri.path()
        ),
    );
    resp.headers_mut().insert(
        HeaderName::from_static(API_HEADER),
        HeaderValue::from_static(API_VERSION),
    );
    resp
}

fn err(e: HooksError) -> Response {
    match e {
        HooksError::Invalid(m) => arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", &m),
        HooksError::NotFound(_) => {
            arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", &e.to_string())
        }
        HooksError::Conflict(_) => arm_error(StatusCode::CONFLICT, "Conflict", &e.to_string()),
        HooksError::Disabled(_) => {
            arm_error(StatusCode::CONFLICT, "WebhookDisabled", &e.to_string())
        }
        HooksError::SigningDisabled(_) => {
            arm_error(StatusCode::CONFLICT, "SigningDisabled", &e.to_string())
        }
        HooksError::OutOfSpace => arm_error(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            "the registry is out of storage space; nothing was stored: retry once space is freed",
        ),
        HooksError::Internal(inner) => {
            tracing::error!(error = %inner, "webhook management failed");
            arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "internal error",
            )
        }
    }
}

/// The `{name}` path segment. axum's own `Path` rejection is plain text; this one is ARM's
/// shape (it fails only for a segment that is not UTF-8 once percent-decoded).
struct Name(String);

impl<S: Send + Sync> FromRequestParts<S> for Name {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(n)) => Ok(Name(n)),
            Err(_) => Err(arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                "name: must be UTF-8 text once percent-decoded",
            )),
        }
    }
}

/// Whether the request says its body is JSON: `application/json`, parameters (a charset)
/// allowed, any letter case.
fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn unsupported_media_type() -> Response {
    arm_error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        "Content-Type: a request body must be application/json",
    )
}

fn too_large() -> Response {
    arm_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestBodyTooLarge",
        &format!("request body: must be at most {MAX_BODY_BYTES} bytes"),
    )
}

/// Reads a management request body: at most [`MAX_BODY_BYTES`] (a larger declared length is
/// refused before reading), and only as JSON. `required` is for the operations that take a
/// body (create and update), which need the JSON type even when the body is empty; the others
/// accept a request without a body, but not a body of another type.
async fn read_body(req: Request, required: bool) -> Result<Bytes, Response> {
    let json = is_json(req.headers());
    if required && !json {
        return Err(unsupported_media_type());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES);
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        // A chunked body that outgrew the bound.
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
        // The client went away or sent broken framing; it will hardly read the answer.
        Err(_) => return Err(bad_body("request body: could not be read")),
    };
    if !bytes.is_empty() && !json {
        return Err(unsupported_media_type());
    }
    Ok(bytes)
}

/// The body of an operation that takes one (create, update).
pub(crate) struct JsonBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        read_body(req, true).await.map(JsonBody)
    }
}

/// The body of an operation that may have one (redeliver, rotateSigningSecret), or should have
/// none (the rest): empty, or JSON within the size bound.
pub(crate) struct OptionalBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for OptionalBody {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        read_body(req, false).await.map(OptionalBody)
    }
}

/// Parses a JSON body whose fields have the types in `shape`; an empty body is the type's
/// default.
///
/// serde's data errors quote the offending value (`invalid type: string "Bearer …"`), and
/// the value may be a secret, so types are checked first by [`check_body`], whose messages
/// name the field and the rule only. Syntax errors give a position, never content.
/// The error is the message for [`bad_body`].
fn body<T: for<'de> Deserialize<'de> + Default>(
    b: &Bytes,
    shape: &[(&str, JsonType)],
) -> Result<T, String> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| {
        format!(
            "request body: not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    check_body(&v, shape)?;
    serde_json::from_value(v).map_err(|_| "request body: does not match the expected shape".into())
}

pub(crate) fn bad_body(message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", message)
}

async fn list(State(app): State<AppState>, _: OptionalBody) -> Response {
    match app.hooks.list().await {
        Ok(v) => axum::Json(json!({ "value": v.iter().map(webhook_json).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => err(e),
    }
}

async fn show(State(app): State<AppState>, Name(name): Name, _: OptionalBody) -> Response {
    match app.hooks.get(&name).await {
        Ok(w) => axum::Json(webhook_json(&w)).into_response(),
        Err(e) => err(e),
    }
}

async fn create(State(app): State<AppState>, Name(name): Name, JsonBody(b): JsonBody) -> Response {
    let p: WebhookCreate = match body(&b, WEBHOOK_PARAMETERS) {
        Ok(p) => p,
        Err(m) => return bad_body(&m),
    };
    match app.hooks.create(&name, p).await {
        Ok(w) => (StatusCode::CREATED, axum::Json(webhook_json(&w))).into_response(),
        Err(e) => err(e),
    }
}

async fn update(State(app): State<AppState>, Name(name): Name, JsonBody(b): JsonBody) -> Response {
    let p: WebhookUpdate = match body(&b, WEBHOOK_PARAMETERS) {
        Ok(p) => p,
        Err(m) => return bad_body(&m),
    };
    match app.hooks.update(&name, p).await {
        Ok(w) => axum::Json(webhook_json(&w)).into_response(),
        Err(e) => err(e),
    }
}

async fn remove(State(app): State<AppState>, Name(name): Name, _: OptionalBody) -> Response {
    match app.hooks.delete(&name).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

async fn ping(State(app): State<AppState>, Name(name): Name, _: OptionalBody) -> Response {
    match app.hooks.ping(&name).await {
        Ok(id) => axum::Json(json!({ "id": id })).into_response(),
        Err(e) => err(e),
    }
}

async fn get_config(State(app): State<AppState>, Name(name): Name, _: OptionalBody) -> Response {
    match app.hooks.callback_config(&name).await {
        Ok(c) => axum::Json(c).into_response(),
        Err(e) => err(e),
    }
}

/// List-events paging, ARM style: `$top` is the page size; `$skipToken` is opaque to clients
/// (it is the id of the last attempt of the previous page, so pages stay stable while new
/// attempts are recorded) and comes from `nextLink`. Both are read as text and checked here,
/// so a bad value gets an ARM error naming the parameter; other parameters (`api-version`)
/// are ignored.
#[derive(Deserialize)]
struct PageQuery {
    #[serde(rename = "$top")]
    top: Option<String>,
    #[serde(rename = "$skipToken")]
    skip: Option<String>,
}

const DEFAULT_PAGE: i64 = 50;
/// Larger `$top` values are served as this many, as ARM list operations cap page sizes.
const MAX_PAGE: i64 = 1000;

fn bad_query(message: &str) -> Response {
    arm_error(
        StatusCode::BAD_REQUEST,
        "InvalidQueryParameterValue",
        message,
    )
}

/// The page size and position of a list-events request; the error is the message for
/// [`bad_query`].
fn page(q: Result<Query<PageQuery>, QueryRejection>) -> Result<(i64, Option<i64>), String> {
    // A rejection here means the query string itself is malformed (bad percent-encoding).
    let Ok(Query(q)) = q else {
        return Err("query string: not valid URL encoding".to_owned());
    };
    let top = match q.top.as_deref() {
        None => DEFAULT_PAGE,
        Some(t) => match t.trim().parse::<i64>() {
            Ok(n) if n >= 1 => n.min(MAX_PAGE),
            _ => return Err("$top: must be a whole number, at least 1".to_owned()),
        },
    };
    let skip = match q.skip.as_deref() {
        None => None,
        Some(t) => match t.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(
                    "$skipToken: not a token from this server; use the nextLink it returned"
                        .to_owned(),
                );
            }
        },
    };
    Ok((top, skip))
}

async fn list_events(
    State(app): State<AppState>,
    Name(name): Name,
    q: Result<Query<PageQuery>, QueryRejection>,
    _: OptionalBody,
) -> Response {
    let (top, skip) = match page(q) {
        Ok(p) => p,
        Err(m) => return bad_query(&m),
    };
    match app.hooks.list_events(&name, skip, top + 1).await {
        Ok(mut entries) => {
            let more = entries.len() as i64 > top;
            entries.truncate(top as usize);
            let mut out = json!({ "value": entries.iter().map(event_json).collect::<Vec<_>>() });
            if let Some(last) = entries.last().filter(|_| more) {
                out["nextLink"] = json!(format!(
                    "/wharf/v1/webhooks/{name}/listEvents?$top={top}&$skipToken={}",
                    last.id
                ));
            }
            axum::Json(out).into_response()
        }
        Err(e) => err(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Redeliver {
    event_id: Option<String>,
}

async fn redeliver(
    State(app): State<AppState>,
    Name(name): Name,
    OptionalBody(b): OptionalBody,
) -> Response {
    let r: Redeliver = match body(&b, REDELIVER_PARAMETERS) {
        Ok(r) => r,
        Err(m) => return bad_body(&m),
    };
    match app.hooks.redeliver(&name, r.event_id.as_deref()).await {
        Ok(n) => axum::Json(json!({ "redelivered": n })).into_response(),
        Err(e) => err(e),
    }
}

/// Wharf's rotateSigningSecret action: a new secret, the old one signing beside it for
/// `gracePeriodSeconds` (default a day). Answers with the Webhook, which says until when the
/// old secret signs; the new secret itself comes only from getCallbackConfig.
async fn rotate_signing_secret(
    State(app): State<AppState>,
    Name(name): Name,
    OptionalBody(b): OptionalBody,
) -> Response {
    let r: RotateSigningSecret = match body(&b, ROTATE_PARAMETERS) {
        Ok(r) => r,
        Err(m) => return bad_body(&m),
    };
    match app
        .hooks
        .rotate_signing_secret(&name, r.grace_period_seconds)
        .await
    {
        Ok(w) => axum::Json(webhook_json(&w)).into_response(),
        Err(e) => err(e),
    }
}
