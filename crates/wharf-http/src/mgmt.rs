//! What the management API shares: ARM's `{"error":{"code","message"}}` shape on every
//! failure, the request-body rules (JSON, size bound), and the webhook operations with ACR's
//! ARM bodies, which `arm` routes at ARM's paths (and at the `/wharf/v1/webhooks` alias).
//! Secrets leave only through getCallbackConfig.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_core::ArmIdentity;
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

/// 507 `InsufficientStorage`: a management change refused for lack of space (nothing stored).
pub(crate) fn arm_out_of_space() -> Response {
    arm_error(
        StatusCode::INSUFFICIENT_STORAGE,
        "InsufficientStorage",
        "the registry is out of storage space; nothing was stored: retry once space is freed",
    )
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

pub(crate) fn hooks_err(e: HooksError) -> Response {
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
        HooksError::OutOfSpace => arm_out_of_space(),
        HooksError::Unavailable(m) => {
            tracing::warn!(error = %m, "webhook management: the database is unavailable");
            let mut r = arm_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the registry's database is unavailable; retry the request",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            r
        }
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
pub(crate) async fn read_body(req: Request, required: bool) -> Result<Bytes, Response> {
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

/// Parses a JSON body whose fields have the types in `shape`; an empty body is the type's
/// default. The error is the 400 to answer.
///
/// serde's data errors quote the offending value (`invalid type: string "Bearer …"`), and
/// the value may be a secret, so types are checked first by [`check_body`], whose messages
/// name the field and the rule only. Syntax errors give a position, never content.
///
/// Codes, as for every management body: `InvalidRequestContent` when the body cannot be read
/// as a JSON object at all; `InvalidParameter` for anything wrong with a named field — its
/// type, its value (the handlers' checks), or a field that does not exist — so a client sees
/// one code for `"scope": 5` and `"scope": "a b"` alike (the registry PATCH answers the same).
// The error is a finished response, made once per refused request and moved straight out
// (as in `arm`): boxing it would only add noise.
#[allow(clippy::result_large_err)]
fn body<T: for<'de> Deserialize<'de> + Default>(
    b: &Bytes,
    shape: &[(&str, JsonType)],
) -> Result<T, Response> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| {
        bad_body(&format!(
            "request body: not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if !v.is_object() {
        return Err(bad_body("request body: must be a JSON object"));
    }
    check_body(&v, shape)
        .map_err(|m| arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", &m))?;
    serde_json::from_value(v)
        .map_err(|_| bad_body("request body: does not match the expected shape"))
}

pub(crate) fn bad_body(message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", message)
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// One webhook operation (the path below the registry, `webhooks/{name}[/action]`, already
/// matched by the router), with its body where it takes one.
pub(crate) enum WebhookOp<'a> {
    Get(&'a str),
    /// Create or replace; `location_required` at ARM's paths, where
    /// `WebhookCreateParameters.location` is required (the `/wharf/v1` alias keeps defaulting
    /// it to the server's region).
    Put {
        name: &'a str,
        body: Bytes,
        location_required: bool,
    },
    Patch(&'a str, Bytes),
    Delete(&'a str),
    Ping(&'a str),
    GetCallbackConfig(&'a str),
    Redeliver(&'a str, Bytes),
    RotateSigningSecret(&'a str, Bytes),
}

/// Every webhook, as ARM's `Webhook` (`arm` pages them).
pub(crate) async fn list_webhooks(
    app: &AppState,
    arm: &ArmIdentity,
) -> Result<Vec<Value>, Response> {
    app.hooks
        .list()
        .await
        .map(|v| v.iter().map(|w| webhook_json(arm, w)).collect())
        .map_err(hooks_err)
}

/// Runs a webhook operation other than the two lists.
pub(crate) async fn webhook(app: &AppState, arm: &ArmIdentity, op: WebhookOp<'_>) -> Response {
    match webhook_op(app, arm, op).await {
        Ok(r) | Err(r) => r,
    }
}

async fn webhook_op(
    app: &AppState,
    arm: &ArmIdentity,
    op: WebhookOp<'_>,
) -> Result<Response, Response> {
    let hooks = &app.hooks;
    let one = |w: &_| webhook_json(arm, w);
    let r = match op {
        WebhookOp::Get(name) => hooks.get(name).await.map(|w| ok(one(&w))),
        WebhookOp::Put {
            name,
            body: b,
            location_required,
        } => {
            let p: WebhookCreate = body(&b, WEBHOOK_PARAMETERS)?;
            if location_required && p.location.is_none() {
                // ARM's own refusal of a tracked resource without one (az sends the registry's
                // location when --location is not given).
                return Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "LocationRequired",
                    &format!(
                        "location: required. The location property is required for this definition (this registry's location is '{}').",
                        app.hooks.config().region
                    ),
                ));
            }
            hooks.create_or_replace(name, p).await.map(|(w, created)| {
                // ARM: 201 for a new resource, 200 for a replaced one; both with the whole
                // resource, provisioned, which ends the SDK's poller at once.
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (status, axum::Json(one(&w))).into_response()
            })
        }
        WebhookOp::Patch(name, b) => {
            let p: WebhookUpdate = body(&b, WEBHOOK_PARAMETERS)?;
            hooks.update(name, p).await.map(|w| ok(one(&w)))
        }
        WebhookOp::Delete(name) => hooks.delete(name).await.map(|gone| {
            if gone {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }),
        WebhookOp::Ping(name) => hooks.ping(name).await.map(|id| ok(json!({ "id": id }))),
        WebhookOp::GetCallbackConfig(name) => hooks
            .callback_config(name)
            .await
            .map(|c| axum::Json(c).into_response()),
        WebhookOp::Redeliver(name, b) => {
            let r: Redeliver = body(&b, REDELIVER_PARAMETERS)?;
            hooks
                .redeliver(name, r.event_id.as_deref())
                .await
                .map(|n| ok(json!({ "redelivered": n })))
        }
        WebhookOp::RotateSigningSecret(name, b) => {
            // Wharf's action: a new secret, the old one signing beside it for
            // `gracePeriodSeconds` (default a day). Answers with the Webhook, which says until
            // when the old secret signs; the new secret itself comes only from
            // getCallbackConfig.
            let r: RotateSigningSecret = body(&b, ROTATE_PARAMETERS)?;
            hooks
                .rotate_signing_secret(name, r.grace_period_seconds)
                .await
                .map(|w| ok(one(&w)))
        }
    };
    r.map_err(hooks_err)
}

/// One page of a webhook's delivery history, newest first: up to `top` attempts older than
/// attempt `before`, and the id to continue from if there are more.
pub(crate) async fn list_events(
    app: &AppState,
    name: &str,
    before: Option<i64>,
    top: usize,
) -> Result<(Vec<Value>, Option<i64>), Response> {
    let mut entries = app
        .hooks
        .list_events(name, before, top as i64 + 1)
        .await
        .map_err(hooks_err)?;
    let more = entries.len() > top;
    entries.truncate(top);
    let next = entries.last().filter(|_| more).map(|e| e.id);
    Ok((entries.iter().map(event_json).collect(), next))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Redeliver {
    event_id: Option<String>,
}
