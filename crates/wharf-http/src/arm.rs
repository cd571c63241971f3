//! The ARM management operations of access control, at ARM's paths under
//! `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{r}`
//! (acr-auth.md §2–3): the registry resource's admin and anonymous-pull settings,
//! `listCredentials`, `regenerateCredential`, `generateCredentials`, `tokens` and `scopeMaps`.
//! Bodies and errors are ARM-shaped; long-running operations complete synchronously (200/201/
//! 204), which the Azure SDK's pollers accept. `api-version` is accepted as given.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wharf_auth::AuthError;
use wharf_auth::model::{RESOURCE_GROUP, SUBSCRIPTION};

use crate::AppState;
use crate::auth::{host_of, request_host};
use crate::mgmt::{JsonBody, OptionalBody, arm_error, bad_body};

pub const PREFIX: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{registry}";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(show_registry).patch(update_registry))
        .route("/listCredentials", post(list_credentials))
        .route("/regenerateCredential", post(regenerate_credential))
        .route("/generateCredentials", post(generate_credentials))
        .route("/tokens", get(list_tokens))
        .route(
            "/tokens/{name}",
            get(show_token)
                .put(put_token)
                .patch(patch_token)
                .delete(delete_token),
        )
        .route("/scopeMaps", get(list_scope_maps))
        .route(
            "/scopeMaps/{name}",
            get(show_scope_map)
                .put(put_scope_map)
                .patch(patch_scope_map)
                .delete(delete_scope_map),
        )
        .fallback(crate::mgmt::not_found)
        .layer(axum::middleware::from_fn(crate::mgmt::arm_responses))
}

/// The `{sub}`, `{rg}` and `{registry}` of the path: only this registry's are served.
#[derive(serde::Deserialize)]
struct Ids {
    sub: String,
    rg: String,
    registry: String,
    name: Option<String>,
}

impl Ids {
    /// The refusal for another registry's path, if it is one.
    fn refusal(&self, app: &AppState) -> Option<Response> {
        let ours = self.sub.eq_ignore_ascii_case(SUBSCRIPTION)
            && self.rg.eq_ignore_ascii_case(RESOURCE_GROUP)
            && self
                .registry
                .eq_ignore_ascii_case(&app.auth.config().registry_name);
        (!ours).then(|| {
            arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!(
                    "no registry {} in resource group {} of subscription {}",
                    self.registry, self.rg, self.sub
                ),
            )
        })
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

fn err(e: AuthError) -> Response {
    match e {
        AuthError::Invalid(m) => arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", &m),
        AuthError::NotFound(what) => arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("{what} not found"),
        ),
        AuthError::Conflict(m) => arm_error(StatusCode::CONFLICT, "Conflict", &m),
        e if e.is_out_of_space() => arm_error(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            "the registry is out of storage space; nothing was stored: retry once space is freed",
        ),
        other => {
            tracing::error!(error = %other, "identity management failed");
            arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "internal error",
            )
        }
    }
}

/// Parses a body; the error is the 400 to answer.
fn parse<T: DeserializeOwned + Default>(b: &[u8]) -> Result<T, Box<Response>> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // serde's messages may quote values; none of these bodies carries a secret, but the
    // position is all a client needs.
    serde_json::from_slice(b).map_err(|e| {
        Box::new(bad_body(&format!(
            "request body: not the expected JSON (line {}, column {})",
            e.line(),
            e.column()
        )))
    })
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn answer(r: Result<Value, AuthError>) -> Response {
    r.map_or_else(err, ok)
}

/// DELETE: 200 if it was there, 204 if not (ARM).
fn deleted(r: Result<bool, AuthError>) -> Response {
    match r {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

fn put_answer(r: Result<(Value, bool), AuthError>) -> Response {
    match r {
        Ok((v, true)) => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Ok((v, false)) => ok(v),
        Err(e) => err(e),
    }
}

fn list(r: Result<Vec<Value>, AuthError>) -> Response {
    match r {
        Ok(v) => ok(json!({ "value": v })),
        Err(e) => err(e),
    }
}

macro_rules! checked {
    ($ids:expr, $app:expr) => {
        if let Some(r) = $ids.refusal(&$app) {
            return r;
        }
    };
}

async fn show_registry(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    req: Request,
) -> Response {
    checked!(ids, app);
    let login = app.auth.service(&request_host(&req));
    ok(app.auth.registry_resource(&login))
}

async fn update_registry(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    JsonBody(b): JsonBody,
) -> Response {
    checked!(ids, app);
    let u = match parse(&b) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    // The same login server as a GET names: ARM answers a PATCH with the whole resource.
    let login = app.auth.service(&host_of(&headers, &uri));
    match app.auth.update_registry(u).await {
        Ok(()) => ok(app.auth.registry_resource(&login)),
        Err(e) => err(e),
    }
}

async fn list_credentials(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    _: OptionalBody,
) -> Response {
    checked!(ids, app);
    answer(app.auth.list_credentials().await)
}

async fn regenerate_credential(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    JsonBody(b): JsonBody,
) -> Response {
    checked!(ids, app);
    match parse(&b) {
        Ok(r) => answer(app.auth.regenerate_credential(r).await),
        Err(r) => *r,
    }
}

async fn generate_credentials(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    JsonBody(b): JsonBody,
) -> Response {
    checked!(ids, app);
    match parse(&b) {
        Ok(g) => answer(app.auth.generate_credentials(g).await),
        Err(r) => *r,
    }
}

async fn list_tokens(State(app): State<AppState>, Path(ids): Path<Ids>) -> Response {
    checked!(ids, app);
    list(app.auth.list_tokens().await)
}

async fn show_token(State(app): State<AppState>, Path(ids): Path<Ids>) -> Response {
    checked!(ids, app);
    answer(app.auth.get_token(ids.name()).await)
}

async fn put_token(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    JsonBody(b): JsonBody,
) -> Response {
    checked!(ids, app);
    match parse(&b) {
        Ok(t) => put_answer(app.auth.put_token(ids.name(), t, false).await),
        Err(r) => *r,
    }
}

async fn patch_token(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    JsonBody(b): JsonBody,
) -> Response {
    checked!(ids, app);
    match parse(&b) {
        Ok(t) => answer(
            app.auth
                .put_token(ids.name(), t, true)
                .await
                .map(|(v, _)| v),
        ),
        Err(r) => *r,
    }
}

async fn delete_token(State(app): State<AppState>, Path(ids): Path<Ids>) -> Response {
    checked!(ids, app);
    deleted(app.auth.delete_token(ids.name()).await)
}

async fn list_scope_maps(State(app): State<AppState>, Path(ids): Path<Ids>) -> Response {
    checked!(ids, app);
    list(app.auth.list_scope_maps().await)
}

async fn show_scope_map(State(app): State<AppState>, Path(ids): Path<Ids>) -> Response {
    checked!(ids, app);
    answer(app.auth.get_scope_map(ids.name()).await)
}

async fn put_scope_map(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    JsonBody(b): JsonBody,
) -> Response {
    checked!(ids, app);
    match parse(&b) {
        Ok(m) => put_answer(app.auth.put_scope_map(ids.name(), m, false).await),
        Err(r) => *r,
    }
}

async fn patch_scope_map(
    State(app): State<AppState>,
    Path(ids): Path<Ids>,
    JsonBody(b): JsonBody,
) -> Response {
    checked!(ids, app);
    match parse(&b) {
        Ok(m) => answer(
            app.auth
                .put_scope_map(ids.name(), m, true)
                .await
                .map(|(v, _)| v),
        ),
        Err(r) => *r,
    }
}

async fn delete_scope_map(State(app): State<AppState>, Path(ids): Path<Ids>) -> Response {
    checked!(ids, app);
    deleted(app.auth.delete_scope_map(ids.name()).await)
}
