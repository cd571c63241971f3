//! Wharf's HTTP surface: the OCI distribution API under `/v2/`, the ACR-style repository
//! delete under `/acr/v1/`, and the webhook management API under `/wharf/v1/`; error mapping
//! to the spec's bodies; and the connection loop with timeouts and graceful shutdown.
//!
//! Handlers parse requests into typed values at the edge (DESIGN invariant 7) and call
//! `wharf-registry` and `wharf-hooks`. This crate must not touch the store's tables directly
//! for registry or webhook state: it goes through those two crates.

mod arm;
pub mod auth;
pub mod error;
mod mgmt;
mod oci;
pub mod path;
mod token;

pub use auth::{Caller, ClientAddr, IsTls};

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use wharf_core::{ErrorCode, RepoName};
use wharf_hooks::Hooks;
use wharf_registry::{Registry, RequestInfo};

use crate::error::OciError;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub hooks: Hooks,
    /// Identities, credentials and the token server's logic.
    pub auth: wharf_auth::Auth,
    /// Whether a mount without `from` may find the blob in any repository.
    pub automatic_mount: bool,
    /// Access control off on a non-loopback listener, by the operator's explicit choice: the
    /// loopback-Host check of the open mode is off too.
    pub open_to_network: bool,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", any(oci::handle))
        .route("/v2/", any(oci::handle))
        .route("/v2/{*rest}", any(oci::handle))
        .route("/acr/v1/{*name}", delete(delete_repository))
        .route(
            "/oauth2/token",
            get(token::get_token).post(token::post_token),
        )
        .route("/oauth2/exchange", post(token::exchange))
        .nest("/wharf/v1", mgmt::router())
        // The nested router sees `/wharf/v1` but not `/wharf/v1/`.
        .route("/wharf/v1/", any(mgmt::not_found))
        .nest(arm::PREFIX, arm::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// One line per request at debug level (`WHARF_LOG=wharf_http=debug`): method, path (never the
/// query, which may carry secrets), status, duration and the caller's identity. Server errors are logged at warn.
async fn access_log(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    // The caller as the auth layer named it (never a credential).
    let identity = resp
        .extensions()
        .get::<Caller>()
        .map(|c| c.identity.as_str())
        .unwrap_or("-");
    if status >= 500 {
        tracing::warn!(%method, %path, status, ms, identity, "request failed");
    } else {
        tracing::debug!(%method, %path, status, ms, identity, "request");
    }
    resp
}

/// `DELETE /acr/v1/{name}`: deletes a repository with all its manifests and tags, as ACR's
/// data plane does, raising one `delete` event per manifest.
async fn delete_repository(
    State(app): State<AppState>,
    Path(name): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    let repo = match RepoName::parse(&name) {
        Ok(r) => r,
        Err(e) => return OciError::code(ErrorCode::NameInvalid, e.to_string()).into_response(),
    };
    let info = RequestInfo {
        id: uuid::Uuid::new_v4().to_string(),
        host: header_str(&headers, axum::http::header::HOST),
        useragent: Some(header_str(&headers, axum::http::header::USER_AGENT))
            .filter(|s| !s.is_empty()),
    };
    let started = std::time::Instant::now();
    let resp = match app.registry.delete_repository(&repo, &info).await {
        Ok(out) => (StatusCode::ACCEPTED, axum::Json(out)).into_response(),
        Err(e) => OciError::from(e).into_response(),
    };
    tracing::info!(
        identity = caller.map(|c| c.0.identity).unwrap_or_default(),
        repository = %repo,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "delete repository"
    );
    resp
}

fn header_str(h: &HeaderMap, name: axum::http::header::HeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long in-flight requests get to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish (up to the grace period) and returns.
///
/// A hand-written loop over hyper rather than `axum::serve`, because axum's server cannot set
/// a header-read timeout, which is what protects the registry from slow-loris clients.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (stream, peer) = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // The peer address and transport reach the auth layer as request extensions.
                let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
                    app.clone(),
                    move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(ClientAddr(peer));
                        req.extensions_mut().insert(IsTls(false));
                        req
                    },
                ));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(opts.header_timeout)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
}
