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
use wharf_hooks::model::{WebhookCreate, WebhookUpdate, event_json, webhook_json};

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

/// Parses a JSON body; an empty body is the type's default.
fn body<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> Result<T, Response> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| {
        // serde's message names the field or position; it never echoes values of strings.
        arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            &format!("request body: {}", e),
        )
    })
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
    let p: WebhookCreate = match body(&b) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match app.hooks.create(&name, p).await {
        Ok(w) => (StatusCode::CREATED, axum::Json(webhook_json(&w))).into_response(),
        Err(e) => err(e),
    }
}

async fn update(State(app): State<AppState>, Path(name): Path<String>, b: Bytes) -> Response {
    let p: WebhookUpdate = match body(&b) {
        Ok(p) => p,
        Err(r) => return r,
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
    let skip = p.skip.unwrap_or(0).max(0);
    match app.hooks.list_events(&name, skip, top + 1).await {
        Ok(mut entries) => {
            let more = entries.len() as i64 > top;
            entries.truncate(top as usize);
            let mut out = json!({ "value": entries.iter().map(event_json).collect::<Vec<_>>() });
            if more {
                out["nextLink"] = json!(format!(
                    "/wharf/v1/webhooks/{name}/listEvents?$top={top}&$skipToken={}",
                    skip + top
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
    let r: Redeliver = match body(&b) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match app.hooks.redeliver(&name, r.event_id.as_deref()).await {
        Ok(n) => axum::Json(json!({ "redelivered": n })).into_response(),
        Err(e) => err(e),
    }
}
