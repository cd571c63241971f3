//! Test harness: a real Wharf server on 127.0.0.1 port 0 with a temporary data directory,
//! and a programmable webhook receiver.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tokio::sync::Notify;

pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    pub data_dir: PathBuf,
    pub store: wharf_store::Store,
    /// The server, started through the same `wharf::start` as `wharf serve`.
    running: Option<wharf::Server>,
    /// The temporary data directory this server owns (deleted with it), if any.
    tmp: Option<tempfile::TempDir>,
}

/// A data directory handed on from a stopped server to the next one: it stays on disk while
/// this value lives, and is deleted after.
pub struct DataDir {
    path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl std::ops::Deref for DataDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

/// The blob store a test server on `data_dir` uses when `WHARF_TEST_BLOB_STORE` names one
/// (`s3://bucket/prefix`, `azure://container/prefix`; see scripts/backends.sh): that location
/// with a sub-prefix named after the data directory, so servers running at once never share
/// blobs, and a server restarted on the same directory finds its own again. None: the data
/// directory (the default).
pub fn test_blob_store(data_dir: &Path) -> Option<String> {
    let base = std::env::var("WHARF_TEST_BLOB_STORE")
        .ok()
        .filter(|v| !v.is_empty())?;
    let name: String = data_dir
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    Some(format!("{}/{name}", base.trim_end_matches('/')))
}

/// The metadata database a test server on `data_dir` uses when `WHARF_TEST_DATABASE=postgres`
/// (see scripts/backends.sh): a database of its own on the server `WHARF_TEST_POSTGRES_URL`
/// names, named after the data directory, so servers running at once never share one and a
/// server restarted on the same directory finds its own again. None: SQLite (the default).
pub async fn test_database(data_dir: &Path) -> Option<String> {
    use sqlx::Connection;
    if std::env::var("WHARF_TEST_DATABASE").ok()? != "postgres" {
        return None;
    }
    let admin = std::env::var("WHARF_TEST_POSTGRES_URL")
        .expect("WHARF_TEST_DATABASE=postgres needs WHARF_TEST_POSTGRES_URL (scripts/services.sh)");
    let name: String = data_dir
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase();
    let name = format!("wharf_it_{}", &name[name.len().saturating_sub(40)..]);
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
        .is_some();
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}

/// The master key test servers on PostgreSQL share (base64 of 32 bytes; not a secret).
pub const TEST_SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The `auth.secret_key` a test server started by the harness gets: the fixed test key on
/// PostgreSQL, none (the data directory's `wharf.key`) on SQLite.
pub fn test_secret_key() -> Option<&'static str> {
    (std::env::var("WHARF_TEST_DATABASE").ok()? == "postgres").then_some(TEST_SECRET_KEY)
}

/// Webhook settings fast enough for tests: 1 s timeout, retries after 0.3 s.
pub fn fast_hooks() -> wharf_hooks::HooksConfig {
    wharf_hooks::HooksConfig {
        timeout: Duration::from_secs(1),
        retry: wharf_hooks::retry::RetryPolicy {
            schedule: vec![0, 0, 0],
            jitter: 0.0,
        },
        ..Default::default()
    }
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(fast_hooks()).await
    }

    /// A server in a fresh temporary directory with these webhook settings.
    pub async fn start_with(hooks_cfg: wharf_hooks::HooksConfig) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Server::start_in(tmp.path(), hooks_cfg).await;
        s.tmp = Some(tmp);
        s
    }

    pub async fn start_in(dir: &Path, hooks_cfg: wharf_hooks::HooksConfig) -> Server {
        Server::start_config(wharf::config::Config {
            data_dir: dir.to_owned(),
            region: hooks_cfg.region.clone(),
            webhooks: wharf::config::Webhooks::from_hooks(&hooks_cfg),
            ..Default::default()
        })
        .await
    }

    /// A server with this exact configuration (its `data_dir` must exist or be creatable).
    pub async fn start_config(cfg: wharf::config::Config) -> Server {
        Server::start_clock(cfg, std::sync::Arc::new(wharf_registry::SystemClock)).await
    }

    /// A server with exactly this configuration, whatever backends the run tests: the run's
    /// database and blob store are not put in for the defaults (a test of one combination).
    pub async fn start_exact(cfg: wharf::config::Config) -> Server {
        Server::start_inner(
            cfg,
            std::sync::Arc::new(wharf_registry::SystemClock),
            Backends::AsGiven,
        )
        .await
    }

    /// [`Server::start_config`] with the clock the retention policy reads.
    pub async fn start_clock(
        cfg: wharf::config::Config,
        clock: std::sync::Arc<dyn wharf_registry::Clock>,
    ) -> Server {
        Server::start_inner(cfg, clock, Backends::Run).await
    }

    /// A server whose metadata is SQLite in its data directory whatever backend the run
    /// tests: for tests of the SQLite file itself.
    pub async fn start_sqlite(cfg: wharf::config::Config) -> Server {
        Server::start_inner(
            cfg,
            std::sync::Arc::new(wharf_registry::SystemClock),
            Backends::RunButSqlite,
        )
        .await
    }

    async fn start_inner(
        mut cfg: wharf::config::Config,
        clock: std::sync::Arc<dyn wharf_registry::Clock>,
        backends: Backends,
    ) -> Server {
        if backends != Backends::AsGiven
            && cfg.storage.blob_store == wharf::config::Storage::default().blob_store
            && let Some(b) = test_blob_store(&cfg.data_dir)
        {
            cfg.storage.blob_store = b;
        }
        // A test of what SQLite alone has (its file, its history) keeps it.
        if cfg.storage.database == wharf::config::SQLITE
            && backends == Backends::Run
            && let Some(url) = test_database(&cfg.data_dir).await
        {
            cfg.storage.database = url;
            if cfg.auth.secret_key.is_empty() {
                cfg.auth.secret_key = TEST_SECRET_KEY.into();
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = wharf::start_with_clock(&cfg, listener, clock)
            .await
            .unwrap();
        let addr = running.addr();
        let scheme = if cfg.tls.cert.is_some() {
            "https"
        } else {
            "http"
        };
        Server {
            addr,
            base: format!("{scheme}://{addr}"),
            data_dir: cfg.data_dir.clone(),
            store: running.store().clone(),
            running: Some(running),
            tmp: None,
        }
    }

    /// Runs one retention pass now at the server's clock (see `wharf::start_with_clock`).
    pub async fn run_retention(&self) -> usize {
        match &self.running {
            Some(r) => r.run_retention().await,
            None => 0,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server the way SIGTERM does: no new connections, in-flight work finishes.
    pub async fn stop(mut self) -> DataDir {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        DataDir {
            path: self.data_dir.clone(),
            _tmp: self.tmp.take(),
        }
    }
}

/// Which backends a test server gets where its configuration has the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backends {
    /// The run's database and blob store (`WHARF_TEST_DATABASE`, `WHARF_TEST_BLOB_STORE`).
    Run,
    /// The run's blob store, SQLite in the data directory.
    RunButSqlite,
    /// The configuration as given.
    AsGiven,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    pub raw: Bytes,
}

/// What the receiver answers on one path.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub status: u16,
    pub delay: Duration,
    /// Answer this many requests with `status`, then 200.
    pub fail_first: usize,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 200,
            delay: Duration::ZERO,
            fail_first: usize::MAX,
        }
    }
}

/// Scripted answers of one path: (status, delay), first to last.
type Script = std::collections::VecDeque<(u16, Duration)>;

#[derive(Clone, Default)]
struct RecvState {
    got: Arc<Mutex<Vec<Received>>>,
    /// Every request as it arrives, before any delay (a request the sender gave up on is here
    /// but maybe not in `got`).
    arrived: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<std::collections::HashMap<String, (Behaviour, usize)>>>,
    /// Per path, answers consumed one per request before `behaviour` applies.
    script: Arc<Mutex<std::collections::HashMap<String, Script>>>,
    notify: Arc<Notify>,
}

/// A programmable webhook receiver on 127.0.0.1: records every POST, answers per path.
pub struct Receiver {
    pub base: String,
    state: RecvState,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_at("127.0.0.1:0").await
    }

    /// A receiver on a given address (e.g. a port a webhook already points at).
    pub async fn start_at(addr: &str) -> Receiver {
        let state = RecvState::default();
        let app = axum::Router::new().fallback(recv).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            base: format!("http://{addr}"),
            state,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn set(&self, path: &str, b: Behaviour) {
        self.state
            .behaviour
            .lock()
            .unwrap()
            .insert(path.to_owned(), (b, 0));
    }

    /// The next requests on `path` get these answers (status, delay), one each, in order;
    /// after that the path's `Behaviour` (or 200) applies again.
    pub fn script(&self, path: &str, steps: &[(u16, Duration)]) {
        self.state
            .script
            .lock()
            .unwrap()
            .insert(path.to_owned(), steps.iter().copied().collect());
    }

    /// Requests on `path` as they arrived, before the receiver's delay and answer.
    pub fn arrived(&self, path: &str) -> Vec<Received> {
        on_path(&self.state.arrived, path)
    }

    /// Waits until `path` saw at least `n` arrivals (or the timeout passes) and returns them.
    pub async fn wait_arrived(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_count(timeout, n, || self.arrived(path)).await
    }

    /// Polls `f` whenever a request arrives or completes, until it returns Some or the timeout
    /// passes (then None).
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a request landing in between is not missed.
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = f() {
                return Some(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        on_path(&self.state.got, path)
    }

    /// Waits until `path` got at least `n` requests (or the timeout passes) and returns them.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_count(timeout, n, || self.received(path)).await
    }

    /// Polls `list` until it holds at least `n` entries or the timeout passes.
    async fn wait_count(
        &self,
        timeout: Duration,
        n: usize,
        list: impl Fn() -> Vec<Received>,
    ) -> Vec<Received> {
        self.wait_until(timeout, || {
            let got = list();
            (got.len() >= n).then_some(got)
        })
        .await
        .unwrap_or_else(list)
    }
}

async fn recv(
    State(s): State<RecvState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path().to_owned();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    s.arrived.lock().unwrap().push(Received {
        path: path.clone(),
        headers: headers.clone(),
        body: v,
        raw: body.clone(),
    });
    s.notify.notify_waiters();
    let scripted = s
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(|q| q.pop_front());
    let (status, delay) = if let Some(step) = scripted {
        step
    } else {
        let mut b = s.behaviour.lock().unwrap();
        match b.get_mut(&path) {
            Some((beh, count)) => {
                *count += 1;
                let st = if *count <= beh.fail_first {
                    beh.status
                } else {
                    200
                };
                (st, beh.delay)
            }
            None => (200, Duration::ZERO),
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    s.got.lock().unwrap().push(Received {
        path,
        headers,
        body: v,
        raw: body,
    });
    s.notify.notify_waiters();
    StatusCode::from_u16(status).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Pushes a blob monolithically; returns its digest.
pub async fn push_blob(c: &reqwest::Client, s: &Server, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "blob push");
    d
}

/// Pushes a config and a layer and an image manifest referencing them under `reference`.
/// Returns (manifest digest, manifest bytes).
pub async fn push_image(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    reference: &str,
    salt: &str,
) -> (String, Vec<u8>) {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"salt\":\"{salt}\"}}");
    let layer = format!("layer-{salt}");
    let cd = push_blob(c, s, repo, config.as_bytes()).await;
    let ld = push_blob(c, s, repo, layer.as_bytes()).await;
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}],
    });
    let body = serde_json::to_vec(&m).unwrap();
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "manifest push: {:?}", r.text().await);
    (sha256(&body), body)
}

/// A throwaway certificate authority for TLS tests.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A server certificate and its key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate itself (DER), to compare with what a server presents.
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1 signed by this CA.
    pub fn leaf(&self) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::IpAddress(
            std::net::Ipv4Addr::LOCALHOST.into(),
        ));
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A reqwest client that trusts this CA (and only the built-in roots besides).
    pub fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem().as_bytes()).unwrap())
    }
}

impl Leaf {
    /// Writes the certificate and key as `cert.pem` and `key.pem` in `dir`, each replaced
    /// atomically (written beside, then renamed), as certificate tools do.
    pub fn install(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        for (path, text) in [(&key, &self.key_pem), (&cert, &self.cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (cert, key)
    }
}

/// The requests in `list` that went to `path`.
fn on_path(list: &Mutex<Vec<Received>>, path: &str) -> Vec<Received> {
    list.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .cloned()
        .collect()
}

/// Runs the real `wharf` binary (`wharf <args>`) against `base` with exactly these
/// variables for credentials and the registry's names: the ones the CLI reads are cleared
/// first, so the environment the tests run in never leaks in. Returns the exit code, stdout
/// and stderr.
pub async fn run_cli(base: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args)
        .env("WHARF_SERVER", base)
        .stdin(std::process::Stdio::null());
    for v in [
        "WHARF_MANAGEMENT_TOKEN",
        "WHARF_USERNAME",
        "WHARF_PASSWORD",
        "WHARF_REGISTRY_NAME",
        "WHARF_RESOURCE_GROUP",
        "WHARF_SUBSCRIPTION_ID",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

/// A registry client that sends these credentials (an `Authorization` value) on every
/// request and follows no redirect.
pub fn client_with(auth: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, auth.parse().unwrap());
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(h)
        .build()
        .unwrap()
}
