//! The webhook management API under `/wharf/v1/webhooks`, with ACR's ARM bodies and ARM's
//! `{"error":{"code","message"}}` error shape. Secrets leave only through getCallbackConfig.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use wharf_hooks::HooksError;
use wharf_hooks::model::{
    JsonType, REDELIVER_PARAMETERS, WEBHOOK_PARAMETERS, WebhookCreate, WebhookUpdate, check_body,
    event_json, webhook_json,
};

use crate::AppState;

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
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({ "error": { "code": code, "message": message, "target": null, "details": [] } }),
        ),
    )
        .into_response()
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

fn bad_body(message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", message)
}

async fn list(State(app): State<AppState>) -> Response {
    match app.hooks.list().await {
        Ok(v) => axum::Json(json!({ "value": v.iter().map(webhook_json).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => err(e),
    }
}

async fn show(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    match app.hooks.get(&name).await {
        Ok(w) => axum::Json(webhook_json(&w)).into_response(),
        Err(e) => err(e),
    }
}

async fn create(State(app): State<AppState>, Path(name): Path<String>, b: Bytes) -> Response {
    let p: WebhookCreate = match body(&b, WEBHOOK_PARAMETERS) {
        Ok(p) => p,
        Err(m) => return bad_body(&m),
    };
    match app.hooks.create(&name, p).await {
        Ok(w) => (StatusCode::CREATED, axum::Json(webhook_json(&w))).into_response(),
        Err(e) => err(e),
    }
}

async fn update(State(app): State<AppState>, Path(name): Path<String>, b: Bytes) -> Response {
    let p: WebhookUpdate = match body(&b, WEBHOOK_PARAMETERS) {
        Ok(p) => p,
        Err(m) => return bad_body(&m),
    };
    match app.hooks.update(&name, p).await {
        Ok(w) => axum::Json(webhook_json(&w)).into_response(),
        Err(e) => err(e),
    }
}

async fn remove(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    match app.hooks.delete(&name).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

async fn ping(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    match app.hooks.ping(&name).await {
        Ok(id) => axum::Json(json!({ "id": id })).into_response(),
        Err(e) => err(e),
    }
}

async fn get_config(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    match app.hooks.callback_config(&name).await {
        Ok(c) => axum::Json(c).into_response(),
        Err(e) => err(e),
    }
}

/// List-events paging, ARM style: `$top` is the page size; `$skipToken` is opaque to clients
/// (it is the id of the last attempt of the previous page, so pages stay stable while new
/// attempts are recorded) and comes from `nextLink`.
#[derive(Deserialize)]
struct Page {
    #[serde(rename = "$top")]
    top: Option<i64>,
    #[serde(rename = "$skipToken")]
    skip: Option<i64>,
}

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 1000;

async fn list_events(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(p): Query<Page>,
) -> Response {
    let top = p.top.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    match app.hooks.list_events(&name, p.skip, top + 1).await {
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

async fn redeliver(State(app): State<AppState>, Path(name): Path<String>, b: Bytes) -> Response {
    let r: Redeliver = match body(&b, REDELIVER_PARAMETERS) {
        Ok(r) => r,
        Err(m) => return bad_body(&m),
    };
    match app.hooks.redeliver(&name, r.event_id.as_deref()).await {
        Ok(n) => axum::Json(json!({ "redelivered": n })).into_response(),
        Err(e) => err(e),
    }
}
