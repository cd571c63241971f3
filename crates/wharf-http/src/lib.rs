//! Wharf's HTTP surface: the OCI distribution API under `/v2/`, ACR's data plane under
//! `/acr/v1/` (attributes, listings, locks, quarantine release), and the management API at
//! ARM's paths under `/subscriptions/` (with `/wharf/v1/webhooks` as an alias of its webhook
//! operations); error mapping
//! to the spec's bodies; and the connection loop — plain HTTP/1.1, or TLS with HTTP/2 and
//! HTTP/1.1 by ALPN and a certificate that can be reloaded (`tls`) — with timeouts, graceful
//! shutdown and the per-request `ClientAddr` and `IsTls` extensions.
//!
//! Handlers parse requests into typed values at the edge (DESIGN invariant 7) and call
//! `wharf-registry`, `wharf-hooks` and `wharf-auth`. It does not depend on `wharf-store`:
//! registry state (policies included) goes through the registry, webhook state through the
//! webhook service, identities through access control.

mod acr;
mod arm;
pub mod auth;
pub mod error;
mod mgmt;
mod oci;
pub mod path;
pub mod tls;
mod token;

pub use auth::{Caller, ClientAddr, IsTls};

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use axum::routing::{any, get, post};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;
use wharf_hooks::Hooks;
use wharf_registry::Registry;

/// Everything a handler needs, shared: axum clones the state for every extractor and layer
/// of every request, and one reference count is cheaper than one per field inside
/// (`AppState::clone` was about 1% of a manifest push's CPU).
#[derive(Clone)]
pub struct AppState(std::sync::Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        AppState(std::sync::Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct AppParts {
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
        .route("/acr/v1/{*rest}", any(acr::handle))
        .route(
            "/oauth2/token",
            get(token::get_token).post(token::post_token),
        )
        .route("/oauth2/exchange", post(token::exchange))
        .merge(management())
        // ARM's paths ignore case, `/Subscriptions/…` included.
        .fallback(arm::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// The management API: ARM's paths (routed by `arm` itself, which ignores the case of their
/// literal segments as ARM does) and the `/wharf/v1` alias; every answer carries the
/// `wharf-api` header and ARM's error shape.
fn management() -> Router<AppState> {
    Router::new()
        .route("/subscriptions", any(arm::handle))
        .route("/subscriptions/", any(arm::handle))
        .route("/subscriptions/{*rest}", any(arm::handle))
        .route("/wharf/v1", any(arm::handle_alias))
        .route("/wharf/v1/", any(arm::handle_alias))
        .route("/wharf/v1/{*rest}", any(arm::handle_alias))
        .layer(axum::middleware::from_fn(mgmt::arm_responses))
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

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long a client may take to send its request headers. Over HTTP/2, where requests
    /// share a connection, how long a connection may go without a request in flight.
    pub header_timeout: Duration,
    /// How long in-flight requests get to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this configuration (see [`tls::server_config`]); plain HTTP/1.1
    /// without it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a client may take to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish (up to the grace period) and returns.
///
/// A hand-written loop over hyper rather than `axum::serve`, because axum's server cannot set
/// a header-read timeout, which is what protects the registry from slow-loris clients. With
/// TLS, the protocol is the one ALPN chose: HTTP/2 for `h2`, HTTP/1.1 otherwise (hyper-util's
/// auto builder would sniff the first bytes instead, which TLS makes unnecessary). Plain
/// HTTP stays HTTP/1.1 only.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // Every connection task holds a receiver: `true` asks it to close gracefully, and the
    // sender's `closed()` tells when the last one has ended. Hand-rolled rather than hyper-util's
    // GracefulShutdown because a connection still in its TLS handshake has no hyper connection
    // to watch yet, and must not start serving after shutdown began.
    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let timeouts = Timeouts {
        header: opts.header_timeout,
        handshake: opts.tls_handshake_timeout,
    };
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
                tokio::spawn(connection(
                    stream,
                    peer,
                    app.clone(),
                    acceptor.clone(),
                    timeouts,
                    stop_rx.clone(),
                ));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = stop_tx.closed() => {}
        _ = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    handshake: Duration,
}

/// One accepted connection, from the TLS handshake (if any) to its end.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let Some(acceptor) = tls else {
        let svc = per_connection(app, peer, IsTls(false), None);
        serve_http1(TokioIo::new(stream), svc, peer, timeouts, stop).await;
        return;
    };
    // Bounded: a client that opens a connection and trickles (or never sends) its hello
    // would otherwise hold a socket and a task forever.
    let handshake = tokio::time::timeout(timeouts.handshake, acceptor.accept(stream));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stopping(&mut stop) => return,
    };
    if stream.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2) {
        serve_http2(TokioIo::new(stream), app, peer, timeouts, stop).await;
    } else {
        let svc = per_connection(app, peer, IsTls(true), None);
        serve_http1(TokioIo::new(stream), svc, peer, timeouts, stop).await;
    }
}

/// The router as one connection's service: every request gets the connection's
/// [`ClientAddr`] and [`IsTls`] (what the auth layer reads), and, if `in_flight` is given, counts as in flight until its
/// response body has been sent or dropped.
fn per_connection(
    app: Router,
    peer: SocketAddr,
    tls: IsTls,
    in_flight: Option<Arc<watch::Sender<usize>>>,
) -> TowerToHyperService<
    impl tower::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future = impl Future<Output = Result<Response, Infallible>> + Send,
    > + Clone
    + Send
    + 'static,
> {
    TowerToHyperService::new(tower::service_fn(
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            req.extensions_mut().insert(tls);
            let guard = in_flight.clone().map(InFlight::begin);
            let call = app.clone().oneshot(req);
            async move {
                let resp = match call.await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok(match guard {
                    None => resp,
                    // The guard rides in the body, so a long download counts as in flight
                    // until its last byte, not just until its headers.
                    Some(guard) => resp.map(|body| {
                        axum::body::Body::new(body.map_frame(move |frame| {
                            let _in_flight = &guard;
                            frame
                        }))
                    }),
                })
            }
        },
    ))
}

/// One request in flight on an HTTP/2 connection (see [`idle`]).
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn begin(count: Arc<watch::Sender<usize>>) -> InFlight {
        count.send_modify(|n| *n += 1);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn serve_http1<I, S>(
    io: I,
    svc: S,
    peer: SocketAddr,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = axum::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // hyper's header-read timeout also runs while a keep-alive connection waits for its next
    // request, so idle connections are bounded too.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopping(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn serve_http2<I>(
    io: I,
    app: Router,
    peer: SocketAddr,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // hyper has no header-read timeout for HTTP/2, where requests are multiplexed and a
    // stream's headers arrive in one frame. What slow-loris costs there is an idle connection,
    // so a connection with no request in flight for the header timeout is closed: GOAWAY,
    // then dropped if it does not end by itself (a client that never sent its preface).
    let (count, mut in_flight) = watch::channel(0usize);
    let svc = per_connection(app, peer, IsTls(true), Some(Arc::new(count)));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = idle(&mut in_flight, timeouts.header) => {
                if closing {
                    tracing::debug!(%peer, "dropping an HTTP/2 connection that did not close");
                    return;
                }
                tracing::debug!(%peer, "closing an idle HTTP/2 connection");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stopping(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Completes once the server is shutting down (or gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here rather than hold it in a select.
    let _ = stop.wait_for(|s| *s).await;
}

/// Completes once `in_flight` has stayed at zero for `period`.
async fn idle(in_flight: &mut watch::Receiver<usize>, period: Duration) {
    loop {
        if in_flight.wait_for(|n| *n == 0).await.is_err() {
            return;
        }
        // Any change (a request beginning, even one that also ended) restarts the wait.
        if tokio::time::timeout(period, in_flight.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}
