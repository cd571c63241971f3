//! The connection loop (`wharf_http::serve`) over real sockets: the request extensions it
//! sets, TLS with ALPN, the handshake and idle bounds, and graceful shutdown over HTTP/2.
//! A small router of its own stands in for Wharf's, so each test sees what the loop did.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Version;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use wharf_http::tls::{CertFiles, CertResolver};
use wharf_http::{ClientAddr, IsTls, ServeOptions};

/// Generous: these tests check that something happens, never how fast.
const DEADLINE: Duration = Duration::from_secs(60);

fn app() -> Router {
    Router::new()
        .route(
            "/who",
            get(|req: Request| async move {
                let addr = req
                    .extensions()
                    .get::<ClientAddr>()
                    .map(|a| a.0.to_string());
                let tls = match req.extensions().get::<IsTls>() {
                    Some(IsTls(true)) => "tls",
                    Some(IsTls(false)) => "plain",
                    None => "unknown",
                };
                format!("{} {tls}", addr.unwrap_or_default())
            }),
        )
        .route(
            "/slow",
            // A response that takes a while to stream: three chunks, 700 ms apart.
            get(|| async {
                let chunks = futures_util::stream::unfold(0u8, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    Some((Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 10])), i + 1))
                });
                Body::from_stream(chunks)
            }),
        )
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(DEADLINE, &mut self.done)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
    }
}

async fn start(opts: ServeOptions, dir: Option<tempfile::TempDir>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(wharf_http::serve(listener, app(), opts, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        done,
        _dir: dir,
    }
}

/// A throwaway CA, and a server certificate for 127.0.0.1 that it signed.
struct Pki {
    ca_der: Vec<u8>,
    dir: tempfile::TempDir,
    files: CertFiles,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv4Addr::LOCALHOST.into(),
    ));
    let leaf = p.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = CertFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, leaf.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    Pki {
        ca_der: ca.der().to_vec(),
        dir,
        files,
    }
}

async fn start_tls(mut opts: ServeOptions) -> (Running, Vec<u8>) {
    let pki = pki();
    let resolver = CertResolver::load(pki.files.clone()).unwrap();
    opts.tls = Some(wharf_http::tls::server_config(resolver).unwrap());
    (start(opts, Some(pki.dir)).await, pki.ca_der)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` offering `alpn`, trusting `ca`. Returns it and the local
/// address the server sees.
async fn tls_connect(addr: SocketAddr, ca: &[u8], alpn: &[&[u8]]) -> (Tls, SocketAddr) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.to_vec().into()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    (tls, local)
}

fn get_req(addr: SocketAddr, path: &str, version: Version) -> hyper::Request<Empty<Bytes>> {
    let mut b = hyper::Request::get(format!("https://{addr}{path}")).version(version);
    if version == Version::HTTP_11 {
        b = b.uri(path).header("host", addr.to_string());
    }
    b.body(Empty::new()).unwrap()
}

/// GET `path` over HTTP/1.1 on `io`; the status line's version and the body.
async fn h1_get<I>(io: I, addr: SocketAddr, path: &str) -> (Version, String)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(get_req(addr, path, Version::HTTP_11))
        .await
        .unwrap();
    let v = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (v, String::from_utf8(body.to_vec()).unwrap())
}

/// Waits until the peer closes `io` (a read returns end of stream or an error).
async fn closed_by_server<I: tokio::io::AsyncRead + Unpin>(mut io: I) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closed the connection");
}

#[tokio::test]
async fn every_request_carries_its_client_address_and_whether_it_came_over_tls() {
    let plain = start(ServeOptions::default(), None).await;
    let tcp = TcpStream::connect(plain.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let (v, body) = h1_get(tcp, plain.addr, "/who").await;
    assert_eq!(v, Version::HTTP_11);
    assert_eq!(body, format!("{local} plain"));
    plain.stop().await;

    let (tls, ca) = start_tls(ServeOptions::default()).await;
    // No ALPN at all is HTTP/1.1, as is an explicit http/1.1.
    for alpn in [&[][..], &[&b"http/1.1"[..]][..]] {
        let (io, local) = tls_connect(tls.addr, &ca, alpn).await;
        let (v, body) = h1_get(io, tls.addr, "/who").await;
        assert_eq!(v, Version::HTTP_11);
        assert_eq!(body, format!("{local} tls"));
    }

    let (io, local) = tls_connect(tls.addr, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        let resp = send
            .send_request(get_req(tls.addr, "/who", Version::HTTP_2))
            .await
            .unwrap();
        assert_eq!(resp.version(), Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("{local} tls").as_bytes());
    }
    drop(send);
    tls.stop().await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_dropped() {
    let (tls, _ca) = start_tls(ServeOptions {
        tls_handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    // Connected, silent: no ClientHello.
    let silent = TcpStream::connect(tls.addr).await.unwrap();
    closed_by_server(silent).await;
    // Half a ClientHello (a record header announcing more than is sent).
    let mut half = TcpStream::connect(tls.addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    closed_by_server(half).await;
    tls.stop().await;
}

#[tokio::test]
async fn idle_http2_connections_are_closed_and_busy_ones_are_not() {
    let (tls, ca) = start_tls(ServeOptions {
        header_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await;

    // h2 negotiated, then not even the connection preface.
    let (silent, _) = tls_connect(tls.addr, &ca, &[b"h2"]).await;
    closed_by_server(silent).await;

    // A response that streams for longer than the idle bound arrives whole: it counts as in
    // flight until its last byte.
    let (io, _) = tls_connect(tls.addr, &ca, &[b"h2"]).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let resp = send
        .send_request(get_req(tls.addr, "/slow", Version::HTTP_2))
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 30);

    // Then, with nothing in flight, the server ends the connection.
    tokio::time::timeout(DEADLINE, conn)
        .await
        .expect("the idle connection was closed")
        .unwrap()
        .ok();
    tls.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_http2_response_in_flight_finish() {
    let (tls, ca) = start_tls(ServeOptions::default()).await;
    let (io, _) = tls_connect(tls.addr, &ca, &[b"h2"]).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(get_req(tls.addr, "/slow", Version::HTTP_2))
        .await
        .unwrap();
    // The headers are here and the body is streaming: now stop the server.
    let stopping = tokio::spawn(tls.stop());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 30, "the whole body, after shutdown began");
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("serve returned once the response was done")
        .unwrap();
}
