//! `wharf-bench webhooks …`: event-delivery benchmarks.
//!
//! Unlike `run`, these use Wharf's management API (`/wharf/v1/webhooks`) to
//! create webhooks, and an embedded HTTP receiver on 127.0.0.1 ([`Receiver`])
//! that records, per path, when each event arrived and its `id`, repository,
//! tag and digest. Manifests are pushed with the same client code as `run`;
//! each PUT's send time is kept so an event's latency is "PUT sent → event
//! received", matched by repository and tag (every manifest has its own tag).
//!
//! Scenarios (one JSON line each on stdout, like `run`, plus a summary on
//! stderr):
//! - `latency`: one webhook, manifests pushed at `--concurrency`; p50/p99/max
//!   event latency and missing events. `--flavor distribution` measures CNCF
//!   Distribution's notifications instead: its config must point an endpoint
//!   at `http://<--receiver>/distribution` ([`DIST_PATH`]).
//! - `throughput`: `--webhooks` webhooks all matching every push; deliveries/s
//!   from the first PUT sent to the last delivery received, then a check that
//!   one webhook's history (listEvents) holds as many attempts as it received.
//! - `isolation`: `--webhooks` webhooks; the same load twice, first with all
//!   healthy, then with the receiver hanging on the first webhook's path; the
//!   figure is the ratio of the other webhooks' p99 latencies.
//! - `crash`: spawns `wharf serve` itself, `kill -9`s it after `--kill-after`
//!   201s, restarts it on the same data directory, pushes the manifests not
//!   yet sent, and checks that every manifest that got its 201 (and every
//!   in-doubt one the restarted server has) had its event delivered.
//!
//! `wharf-bench webhooks report FILE…` prints the figures beside the targets
//! of the webhook issue; `scripts/bench/webhooks.sh` runs everything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response as HyperResponse, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{
    Blob, Ctx, MANIFEST_SET, Mode, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Report, RunArgs, Stats,
    check, check_digest_header, emit, fmt_num, gen_blobs, push_blob, round3, sha256_digest,
    tag_name,
};

/// The receiver path Distribution's notification endpoint must use.
pub(crate) const DIST_PATH: &str = "/distribution";
/// How often waiters look at the receiver. Latencies come from the arrival
/// timestamps, never from this.
const POLL: Duration = Duration::from_millis(10);
/// Only this many missing keys/failures are printed; all are counted.
const MAX_PRINTED: usize = 5;

#[derive(Args)]
pub(crate) struct WebhooksArgs {
    #[command(subcommand)]
    cmd: HookCmd,
}

#[derive(Subcommand)]
enum HookCmd {
    /// PUT sent → event received latency, one webhook.
    Latency(LatencyArgs),
    /// Deliveries/s with many webhooks matching every push.
    Throughput(ThroughputArgs),
    /// Latency of healthy webhooks while one hangs, against an all-healthy run.
    Isolation(IsolationArgs),
    /// kill -9 of the server mid-push; every acknowledged push must be delivered.
    Crash(CrashArgs),
    /// Print webhook results beside the issue's targets.
    Report(ReportArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Name of the registry under test, copied into every result line.
    #[arg(long, default_value = "wharf")]
    label: String,
    /// Seed for blob content, repository and webhook names. Default: the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Address of the embedded event receiver (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    receiver: SocketAddr,
    /// Concurrent manifest PUTs.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// After the last PUT, how long to wait for outstanding events, in seconds.
    #[arg(long, default_value_t = 60.0)]
    wait_secs: f64,
    /// Per-request timeout of the registry client, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Manifests pushed (and their events awaited) before measuring, so
    /// connection set-up and cold caches are not measured. Not in `crash`.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Upper bound on one push phase, in seconds: after it no new PUT starts
    /// (the manifests left count as not sent).
    #[arg(long, default_value_t = 300.0)]
    max_push_secs: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Flavor {
    /// Wharf: webhooks created through its management API.
    Wharf,
    /// CNCF Distribution: notifications configured in its config file to
    /// `http://<receiver>/distribution`; nothing is created.
    Distribution,
}

#[derive(Args)]
struct LatencyArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    #[arg(long)]
    registry: String,
    #[command(flatten)]
    common: Common,
    /// Which registry's event mechanism is measured.
    #[arg(long, value_enum, default_value = "wharf")]
    flavor: Flavor,
    /// Manifests pushed (one tag each).
    #[arg(long, default_value_t = 500)]
    manifests: usize,
}

#[derive(Args)]
struct ThroughputArgs {
    /// Registry base URL (Wharf), e.g. http://127.0.0.1:5000
    #[arg(long)]
    registry: String,
    #[command(flatten)]
    common: Common,
    /// Manifests pushed; deliveries = manifests x webhooks.
    #[arg(long, default_value_t = 2000)]
    manifests: usize,
    /// Webhooks, all matching every push.
    #[arg(long, default_value_t = 10)]
    webhooks: usize,
}

#[derive(Args)]
struct IsolationArgs {
    /// Registry base URL (Wharf), e.g. http://127.0.0.1:5000
    #[arg(long)]
    registry: String,
    #[command(flatten)]
    common: Common,
    /// Manifests pushed in each of the two runs.
    #[arg(long, default_value_t = 500)]
    manifests: usize,
    /// Webhooks, all matching every push; the first one hangs in the second run.
    #[arg(long, default_value_t = 10)]
    webhooks: usize,
    /// How long the receiver holds a request on the hanging path before
    /// answering 503 (longer than the server's per-attempt timeout).
    #[arg(long, default_value_t = 30.0)]
    hang_secs: f64,
}

#[derive(Args)]
struct CrashArgs {
    /// The wharf binary to run.
    #[arg(long)]
    wharf_bin: PathBuf,
    /// Data directory (created; reused by the restarted server).
    #[arg(long)]
    data_dir: PathBuf,
    /// Listen address (default: a free loopback port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Optional `--config` file for the server.
    #[arg(long)]
    wharf_config: Option<PathBuf>,
    /// Server stdout/stderr go here (appended; default: discarded).
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// The running server's pid is written here, so a wrapper script can kill
    /// it if this process dies first.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    /// Manifests pushed in all (before the kill and after the restart).
    #[arg(long, default_value_t = 1000)]
    manifests: usize,
    /// The server is killed when this many PUTs have got their 201.
    #[arg(long, default_value_t = 400)]
    kill_after: usize,
}

#[derive(Args)]
struct ReportArgs {
    /// Label of the registry whose targets are checked.
    #[arg(long, default_value = "wharf")]
    label: String,
    /// Label shown beside it for the latency figures.
    #[arg(long, default_value = "distribution")]
    compare: String,
    /// Files of JSON result lines.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Runs one `webhooks` subcommand; returns the process exit code.
pub(crate) fn main(args: WebhooksArgs) -> Result<i32> {
    if let HookCmd::Report(r) = &args.cmd {
        return report(r);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let result = match args.cmd {
            HookCmd::Latency(a) => latency(a).await,
            HookCmd::Throughput(a) => throughput(a).await,
            HookCmd::Isolation(a) => isolation(a).await,
            HookCmd::Crash(a) => crash(a).await,
            HookCmd::Report(_) => unreachable!("handled above"),
        };
        result.map(|ok| if ok { 0 } else { 2 })
    })
}

// ---------------------------------------------------------------------------
// Receiver

/// One event as it arrived.
#[derive(Clone, Debug)]
struct Arrival {
    at: Instant,
    id: String,
    digest: String,
}

#[derive(Default)]
struct PathLog {
    /// Every matching event, in arrival order, per `repository:tag`.
    by_key: HashMap<String, Vec<Arrival>>,
    /// Distinct keys per repository, for cheap "all arrived?" checks.
    distinct_by_repo: HashMap<String, usize>,
    /// Matching events, duplicates included.
    events: u64,
    /// HTTP requests to this path (a Distribution envelope may hold several
    /// events; a hanging path's requests count too).
    requests: u64,
}

#[derive(Default)]
struct RecvLog {
    paths: HashMap<String, PathLog>,
    /// Events that are not manifest pushes with a tag (blob pushes, pulls,
    /// pings, deletes).
    ignored: u64,
    /// Bodies that were not JSON events.
    unparsable: u64,
}

struct RecvState {
    log: Mutex<RecvLog>,
    /// Paths the receiver holds until `hang` has passed (or it stops).
    hang: Mutex<HashSet<String>>,
    hang_for: Duration,
    stop: watch::Sender<bool>,
}

/// The embedded event receiver: answers 200 to every POST at once, except on
/// hanging paths, and records what arrived.
struct Receiver {
    addr: SocketAddr,
    state: Arc<RecvState>,
    accept: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Receiver {
    async fn start(addr: SocketAddr, hang_for: Duration) -> Result<Receiver> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the event receiver to {addr}"))?;
        let addr = listener.local_addr()?;
        let (stop, _) = watch::channel(false);
        let state = Arc::new(RecvState {
            log: Mutex::default(),
            hang: Mutex::default(),
            hang_for,
            stop,
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let sock = match listener.accept().await {
                    Ok((sock, _)) => sock,
                    Err(_) => {
                        // Out of descriptors or similar: back off, don't spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Ok(Receiver {
            addr,
            state,
            accept,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set_hang(&self, path: &str, on: bool) {
        let mut h = lock(&self.state.hang);
        if on {
            h.insert(path.to_string());
        } else {
            h.remove(path);
        }
    }

    fn with_log<R>(&self, f: impl FnOnce(&RecvLog) -> R) -> R {
        f(&lock(&self.state.log))
    }

    /// Distinct keys of `repo` received on each of `paths`, summed.
    fn distinct(&self, paths: &[String], repo: &str) -> usize {
        self.with_log(|log| {
            paths
                .iter()
                .filter_map(|p| log.paths.get(p))
                .map(|pl| pl.distinct_by_repo.get(repo).copied().unwrap_or(0))
                .sum()
        })
    }

    /// Polls until `done` holds or `deadline` passes; returns whether it held.
    async fn wait_until(&self, deadline: Instant, done: impl Fn(&Receiver) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
        // Releases requests held on hanging paths.
        let _ = self.state.stop.send(true);
    }
}

type HookResponse = HyperResponse<Full<Bytes>>;

fn reply(status: StatusCode) -> HookResponse {
    let mut r = HyperResponse::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

async fn handle(st: Arc<RecvState>, req: Request<Incoming>) -> Result<HookResponse, Infallible> {
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST)),
    };
    // Arrival = the whole body is here.
    let at = Instant::now();
    record(&st, &path, at, &body);
    let hang = lock(&st.hang).contains(&path);
    if hang {
        let mut stop = st.stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(st.hang_for) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE));
    }
    Ok(reply(StatusCode::OK))
}

/// Records the manifest push events of one request body: a single ACR-shaped
/// event (Wharf) or a `{"events": [...]}` envelope (Distribution).
fn record(st: &RecvState, path: &str, at: Instant, body: &[u8]) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let mut log = lock(&st.log);
    let Some(v) = parsed else {
        log.unparsable += 1;
        log.paths.entry(path.to_string()).or_default().requests += 1;
        return;
    };
    let events: Vec<&Value> = match v.get("events").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![&v],
    };
    let mut ignored = 0;
    let pl = log.paths.entry(path.to_string()).or_default();
    pl.requests += 1;
    for ev in events {
        let target = &ev["target"];
        let (Some("push"), Some(tag), Some(repo)) = (
            ev["action"].as_str(),
            target["tag"].as_str().filter(|t| !t.is_empty()),
            target["repository"].as_str(),
        ) else {
            ignored += 1;
            continue;
        };
        let key = format!("{repo}:{tag}");
        let list = pl.by_key.entry(key).or_default();
        if list.is_empty() {
            *pl.distinct_by_repo.entry(repo.to_string()).or_default() += 1;
        }
        list.push(Arrival {
            at,
            id: ev["id"].as_str().unwrap_or("").to_string(),
            digest: target["digest"].as_str().unwrap_or("").to_string(),
        });
        pl.events += 1;
    }
    log.ignored += ignored;
}

// ---------------------------------------------------------------------------
// Registry side: context, manifests, pushes, management API

fn bench_ctx(registry: &str, c: &Common) -> Result<Ctx> {
    // A `run` context with only what the webhook scenarios use set.
    Ctx::new(RunArgs {
        registry: registry.to_string(),
        label: c.label.clone(),
        scenario: Vec::new(),
        seed: c.seed,
        blobs: 0,
        blob_mib: 0,
        chunk_kib: 1024,
        concurrency: c.concurrency,
        head_concurrency: 1,
        head_seconds: 0.0,
        manifests: 0,
        manifest_concurrency: c.concurrency,
        tags_concurrency: 1,
        tags_seconds: 0.0,
        tags_page_size: 100,
        timeout_secs: c.timeout_secs,
    })
}

/// Fails fast, with a clear message, if the registry does not answer `/v2/`.
async fn ping_registry(ctx: &Ctx) -> Result<()> {
    let v2 = ctx.url("v2/")?;
    let resp = ctx
        .client
        .get(v2.clone())
        .send()
        .await
        .with_context(|| format!("registry not reachable at {v2}"))?;
    check(resp, "GET /v2/").await?;
    Ok(())
}

/// The manifests of one run: distinct bodies (and digests), one tag each, in
/// one repository.
struct Load {
    repo: String,
    bodies: Vec<Bytes>,
    digests: Vec<String>,
}

impl Load {
    fn key(&self, i: usize) -> String {
        format!("{}:{}", self.repo, tag_name(i))
    }
}

/// Pushes (untimed) the config and layer blobs into `repo` and builds `n`
/// manifests that differ by an annotation naming `repo` and the index.
async fn prepare_load(ctx: &Ctx, repo: &str, n: usize) -> Result<Load> {
    let layer = gen_blobs(ctx.seed, MANIFEST_SET, 1, 64 * 1024).remove(0);
    let config_json = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
    }))?;
    let config = Blob {
        digest: sha256_digest(&config_json),
        data: Bytes::from(config_json),
    };
    for b in [&config, &layer] {
        let url = ctx.url(&format!("v2/{repo}/blobs/{}", b.digest))?;
        let resp = ctx.client.head(url).send().await?;
        if !resp.status().is_success() {
            push_blob(ctx, repo, b, Mode::Monolithic)
                .await
                .context("setup: pushing manifest blobs")?;
        }
    }
    let mut bodies = Vec::with_capacity(n);
    let mut digests = Vec::with_capacity(n);
    for i in 0..n {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config.digest, "size": config.data.len() },
            "layers": [{ "mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.data.len() }],
            "annotations": {
                "dev.wharf.bench.seed": ctx.seed.to_string(),
                "dev.wharf.bench.repo": repo,
                "dev.wharf.bench.index": i.to_string(),
            },
        });
        let body = serde_json::to_vec(&m)?;
        digests.push(sha256_digest(&body));
        bodies.push(Bytes::from(body));
    }
    Ok(Load {
        repo: repo.to_string(),
        bodies,
        digests,
    })
}

const NOT_SENT: u8 = 0;
const SENT: u8 = 1;
const ACKED: u8 = 2;
const FAILED: u8 = 3;

/// Per manifest: when its PUT was sent and how it ended.
struct Pushes {
    sent: Vec<OnceLock<Instant>>,
    state: Vec<AtomicU8>,
    put_stats: Mutex<Stats>,
}

impl Pushes {
    fn new(n: usize) -> Pushes {
        Pushes {
            sent: (0..n).map(|_| OnceLock::new()).collect(),
            state: (0..n).map(|_| AtomicU8::new(NOT_SENT)).collect(),
            put_stats: Mutex::default(),
        }
    }

    fn state(&self, i: usize) -> u8 {
        self.state[i].load(Ordering::SeqCst)
    }

    fn with_state(&self, s: u8) -> Vec<usize> {
        (0..self.state.len())
            .filter(|&i| self.state(i) == s)
            .collect()
    }

    fn first_sent(&self) -> Option<Instant> {
        self.sent.iter().filter_map(|s| s.get().copied()).min()
    }
}

/// PUTs `load`'s manifests `indices` on `concurrency` tasks, recording send
/// times and outcomes in `pushes`. Stops taking new manifests once `stop` is
/// set; `on_ack` runs after each 201 is recorded.
async fn push_load(
    ctx: &Arc<Ctx>,
    load: &Arc<Load>,
    pushes: &Arc<Pushes>,
    indices: Vec<usize>,
    c: &Common,
    stop: Arc<AtomicBool>,
    on_ack: Arc<dyn Fn(usize) + Send + Sync>,
) -> Duration {
    let concurrency = c.concurrency;
    let indices = Arc::new(indices);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(c.max_push_secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (ctx, load, pushes) = (ctx.clone(), load.clone(), pushes.clone());
        let (indices, next, stop, on_ack) =
            (indices.clone(), next.clone(), stop.clone(), on_ack.clone());
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= indices.len() || stop.load(Ordering::SeqCst) {
                    break;
                }
                if Instant::now() >= deadline {
                    st.errors += 1;
                    if st.first_errors.len() < MAX_PRINTED {
                        st.first_errors
                            .push("push phase hit --max-push-secs; stopped".to_string());
                    }
                    break;
                }
                let i = indices[k];
                match put_tagged(&ctx, &load, &pushes, i).await {
                    Ok(us) => {
                        pushes.state[i].store(ACKED, Ordering::SeqCst);
                        st.lat_us.push(us);
                        st.ok += 1;
                        on_ack(i);
                    }
                    Err(e) => {
                        pushes.state[i].store(FAILED, Ordering::SeqCst);
                        st.errors += 1;
                        if st.first_errors.len() < MAX_PRINTED {
                            st.first_errors.push(format!("{}: {e:#}", tag_name(i)));
                        }
                    }
                }
            }
            st
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        match t.await {
            Ok(st) => all.merge(st),
            Err(e) => {
                all.errors += 1;
                all.first_errors.push(format!("pusher panicked: {e}"));
            }
        }
    }
    let elapsed = start.elapsed();
    lock(&pushes.put_stats).merge(all);
    elapsed
}

/// One manifest PUT by tag; returns its duration in microseconds.
async fn put_tagged(ctx: &Ctx, load: &Load, pushes: &Pushes, i: usize) -> Result<u64> {
    let url = ctx.url(&format!("v2/{}/manifests/{}", load.repo, tag_name(i)))?;
    let req = ctx
        .client
        .put(url)
        .header(CONTENT_TYPE, OCI_MANIFEST)
        .body(load.bodies[i].clone());
    pushes.state[i].store(SENT, Ordering::SeqCst);
    let t0 = Instant::now();
    let _ = pushes.sent[i].set(t0);
    let resp = req.send().await.context("PUT manifest")?;
    let resp = check(resp, "PUT manifest").await?;
    check_digest_header(&resp, &load.digests[i], "PUT manifest")?;
    Ok(t0.elapsed().as_micros() as u64)
}

fn no_ack() -> Arc<dyn Fn(usize) + Send + Sync> {
    Arc::new(|_| {})
}

/// Webhook names: letters and digits only (5-50), distinct per seed.
fn hook_name(ctx: &Ctx, kind: &str, i: usize) -> String {
    format!("wb{kind}{:08x}n{i}", ctx.seed as u32)
}

fn hook_path(name: &str) -> String {
    format!("/hook/{name}")
}

async fn create_webhook(ctx: &Ctx, name: &str, service_uri: &str) -> Result<()> {
    let url = ctx.url(&format!("wharf/v1/webhooks/{name}"))?;
    let body = json!({
        "properties": { "serviceUri": service_uri, "actions": ["push"], "scope": "" }
    });
    let resp = ctx
        .client
        .put(url)
        .json(&body)
        .send()
        .await
        .context("PUT webhook")?;
    check(resp, &format!("creating webhook {name}")).await?;
    Ok(())
}

/// Best effort: a failure is printed, not fatal (the figures are already in).
async fn delete_webhooks(ctx: &Ctx, names: &[String]) {
    for name in names {
        let res = async {
            let url = ctx.url(&format!("wharf/v1/webhooks/{name}"))?;
            let resp = ctx.client.delete(url).send().await?;
            check(resp, &format!("deleting webhook {name}")).await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(e) = res {
            eprintln!("[{}] cleanup: {e:#}", ctx.label);
        }
    }
}

/// Creates `n` webhooks pointing at the receiver; returns their names.
async fn create_webhooks(ctx: &Ctx, recv: &Receiver, kind: &str, n: usize) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = hook_name(ctx, kind, i);
        if let Err(e) = create_webhook(ctx, &name, &recv.url(&hook_path(&name))).await {
            delete_webhooks(ctx, &names).await;
            return Err(e);
        }
        names.push(name);
    }
    Ok(names)
}

/// Every entry of a webhook's delivery history (all pages).
async fn list_events(ctx: &Ctx, name: &str) -> Result<Vec<Value>> {
    let mut url = ctx.url(&format!("wharf/v1/webhooks/{name}/listEvents"))?;
    url.query_pairs_mut().append_pair("$top", "1000");
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let resp = ctx
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .send()
            .await
            .context("listEvents")?;
        let v: Value = check(resp, "listEvents")
            .await?
            .json()
            .await
            .context("listEvents body")?;
        if let Some(list) = v["value"].as_array() {
            out.extend(list.iter().cloned());
        }
        match v["nextLink"].as_str() {
            Some(next) => url = url.join(next).context("bad nextLink")?,
            None => return Ok(out),
        }
    }
    bail!("listEvents pagination does not terminate")
}

// ---------------------------------------------------------------------------
// Analysis

/// Latencies (PUT sent → first arrival) of the acknowledged manifests of
/// `load` on `paths`, and the keys missing on each path.
struct Matched {
    stats: Stats,
    missing: Vec<(String, String)>,
    expected: usize,
    /// Arrivals beyond the first for a key (at-least-once duplicates).
    duplicates: u64,
    /// Keys whose arrivals carried more than one distinct event id.
    id_mismatches: u64,
    /// Arrivals whose digest is not the manifest's.
    wrong_digest: u64,
    last_arrival: Option<Instant>,
}

fn match_events(recv: &Receiver, paths: &[String], load: &Load, pushes: &Pushes) -> Matched {
    let mut m = Matched {
        stats: Stats::default(),
        missing: Vec::new(),
        expected: 0,
        duplicates: 0,
        id_mismatches: 0,
        wrong_digest: 0,
        last_arrival: None,
    };
    recv.with_log(|log| {
        for path in paths {
            let pl = log.paths.get(path);
            for i in 0..load.bodies.len() {
                if pushes.state(i) != ACKED {
                    continue;
                }
                m.expected += 1;
                let key = load.key(i);
                let Some(list) = pl.and_then(|pl| pl.by_key.get(&key)) else {
                    m.missing.push((path.clone(), key));
                    continue;
                };
                let sent = *pushes.sent[i].get().expect("acked manifests were sent");
                let first = list.iter().map(|a| a.at).min().expect("non-empty");
                let last = list.iter().map(|a| a.at).max().expect("non-empty");
                m.stats
                    .lat_us
                    .push(first.saturating_duration_since(sent).as_micros() as u64);
                m.stats.ok += 1;
                m.duplicates += list.len() as u64 - 1;
                let ids: HashSet<&str> = list.iter().map(|a| a.id.as_str()).collect();
                if ids.len() > 1 {
                    m.id_mismatches += 1;
                }
                m.wrong_digest +=
                    list.iter().filter(|a| a.digest != load.digests[i]).count() as u64;
                m.last_arrival = m.last_arrival.max(Some(last));
            }
        }
    });
    m.stats.lat_us.sort_unstable();
    m
}

fn max_ms(st: &Stats) -> f64 {
    st.lat_us.last().map_or(0.0, |&us| us as f64 / 1000.0)
}

fn print_missing(label: &str, m: &Matched) {
    for (path, key) in m.missing.iter().take(MAX_PRINTED) {
        eprintln!("[{label}]   missing: {key} on {path}");
    }
    if m.missing.len() > MAX_PRINTED {
        eprintln!("[{label}]   ... and {} more", m.missing.len() - MAX_PRINTED);
    }
}

/// PUTs/s and PUT p50/p99 (ms) of a push phase, as JSON fields.
fn put_figures(pushes: &Pushes, push_time: Duration) -> Value {
    let mut st = lock(&pushes.put_stats);
    st.lat_us.sort_unstable();
    json!({
        "put_per_s": round3(st.ok as f64 / push_time.as_secs_f64().max(1e-9)),
        "put_p50_ms": round3(st.pct_ms(0.50)),
        "put_p99_ms": round3(st.pct_ms(0.99)),
    })
}

/// Adds `extra`'s fields to the object `v`.
fn merged(mut v: Value, extra: Value) -> Value {
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

fn print_put_errors(label: &str, pushes: &Pushes) -> u64 {
    let st = lock(&pushes.put_stats);
    for e in &st.first_errors {
        eprintln!("[{label}]   PUT error: {e}");
    }
    st.errors
}

/// Waits (bounded) until every path has `load.repo`'s acknowledged manifests.
async fn wait_for_all(
    recv: &Receiver,
    paths: &[String],
    load: &Load,
    pushes: &Pushes,
    wait: Duration,
) -> bool {
    let acked = pushes.with_state(ACKED).len();
    let want = acked * paths.len();
    recv.wait_until(Instant::now() + wait, |r| {
        r.distinct(paths, &load.repo) >= want
    })
    .await
}

// ---------------------------------------------------------------------------
// Scenarios

/// Pushes one load against the receiver and returns the event matching for
/// `measured` paths (after waiting for stragglers) plus the push duration.
async fn measured_run(
    ctx: &Arc<Ctx>,
    recv: &Receiver,
    measured: &[String],
    repo: &str,
    manifests: usize,
    c: &Common,
) -> Result<(Matched, Arc<Load>, Arc<Pushes>, Duration)> {
    let load = Arc::new(prepare_load(ctx, repo, manifests).await?);
    let pushes = Arc::new(Pushes::new(manifests));
    let push_time = push_load(
        ctx,
        &load,
        &pushes,
        (0..manifests).collect(),
        c,
        Arc::default(),
        no_ack(),
    )
    .await;
    let wait = Duration::from_secs_f64(c.wait_secs);
    if !wait_for_all(recv, measured, &load, &pushes, wait).await {
        eprintln!(
            "[{}] gave up waiting for events after {:.0} s",
            ctx.label, c.wait_secs
        );
    }
    let m = match_events(recv, measured, &load, &pushes);
    Ok((m, load, pushes, push_time))
}

/// Pushes `--warmup` manifests into a repository of their own and waits for
/// their events on `paths`; nothing is measured.
async fn warm_up(ctx: &Arc<Ctx>, recv: &Receiver, paths: &[String], c: &Common) -> Result<()> {
    if c.warmup == 0 {
        return Ok(());
    }
    let repo = format!("{}/hooks-warmup", ctx.prefix);
    let (m, ..) = measured_run(ctx, recv, paths, &repo, c.warmup, c).await?;
    eprintln!(
        "[{}]   warm-up: {} manifests, {} of {} events",
        ctx.label, c.warmup, m.stats.ok, m.expected
    );
    Ok(())
}

async fn latency(a: LatencyArgs) -> Result<bool> {
    let c = &a.common;
    let ctx = Arc::new(bench_ctx(&a.registry, c)?);
    ping_registry(&ctx).await?;
    let recv = Receiver::start(c.receiver, Duration::from_secs(1)).await?;
    eprintln!(
        "[{}] webhooks latency: registry {} receiver {} seed {}",
        ctx.label, ctx.base, recv.addr, ctx.seed
    );
    let (paths, hooks) = match a.flavor {
        Flavor::Wharf => {
            let hooks = create_webhooks(&ctx, &recv, "l", 1).await?;
            (vec![hook_path(&hooks[0])], hooks)
        }
        Flavor::Distribution => (vec![DIST_PATH.to_string()], Vec::new()),
    };
    let repo = format!("{}/hooks-latency", ctx.prefix);
    let run = match warm_up(&ctx, &recv, &paths, c).await {
        Ok(()) => measured_run(&ctx, &recv, &paths, &repo, a.manifests, c).await,
        Err(e) => Err(e),
    };
    delete_webhooks(&ctx, &hooks).await;
    let (m, _, pushes, push_time) = run?;
    let put_errors = print_put_errors(&ctx.label, &pushes);
    print_missing(&ctx.label, &m);
    let ignored = recv.with_log(|l| l.ignored);
    let mut stats = m.stats;
    let missing = m.missing.len() as u64;
    stats.errors = put_errors + missing;
    let ok = stats.errors == 0 && m.id_mismatches == 0 && m.wrong_digest == 0;
    emit(
        &ctx,
        &stats,
        push_time,
        Report {
            scenario: "webhook_latency",
            figure: stats.pct_ms(0.50),
            unit: "ms",
            concurrency: c.concurrency,
            detail: &format!(
                "{} manifests, {:?} events, {missing} missing, max {:.2} ms",
                a.manifests,
                a.flavor,
                max_ms(&stats)
            ),
            extra: merged(
                json!({
                    "flavor": format!("{:?}", a.flavor).to_lowercase(),
                    "manifests": a.manifests,
                    "put_errors": put_errors,
                    "expected": m.expected,
                    "received": stats.ok,
                    "missing": missing,
                    "duplicates": m.duplicates,
                    "id_mismatches": m.id_mismatches,
                    "wrong_digest": m.wrong_digest,
                    "ignored_events": ignored,
                    "max_ms": round3(max_ms(&stats)),
                }),
                put_figures(&pushes, push_time),
            ),
        },
    );
    Ok(ok)
}

async fn throughput(a: ThroughputArgs) -> Result<bool> {
    let c = &a.common;
    let ctx = Arc::new(bench_ctx(&a.registry, c)?);
    ping_registry(&ctx).await?;
    let recv = Receiver::start(c.receiver, Duration::from_secs(1)).await?;
    eprintln!(
        "[{}] webhooks throughput: {} webhooks x {} manifests, receiver {} seed {}",
        ctx.label, a.webhooks, a.manifests, recv.addr, ctx.seed
    );
    let hooks = create_webhooks(&ctx, &recv, "t", a.webhooks).await?;
    let paths: Vec<String> = hooks.iter().map(|h| hook_path(h)).collect();
    let repo = format!("{}/hooks-throughput", ctx.prefix);
    let run = match warm_up(&ctx, &recv, &paths, c).await {
        Ok(()) => measured_run(&ctx, &recv, &paths, &repo, a.manifests, c).await,
        Err(e) => Err(e),
    };
    let (m, load, pushes, push_time) = match run {
        Ok(r) => r,
        Err(e) => {
            delete_webhooks(&ctx, &hooks).await;
            return Err(e);
        }
    };
    let put_errors = print_put_errors(&ctx.label, &pushes);
    print_missing(&ctx.label, &m);
    let missing = m.missing.len() as u64;
    let first = pushes.first_sent();
    let span = match (first, m.last_arrival) {
        (Some(f), Some(l)) => l.saturating_duration_since(f),
        _ => Duration::ZERO,
    };
    let delivered = m.stats.ok;
    let rate = if span.is_zero() {
        0.0
    } else {
        delivered as f64 / span.as_secs_f64()
    };

    // History: the first webhook's attempts must all be recorded. Results are
    // written in batches after the response, so allow a little settling.
    let received0 = recv.with_log(|l| l.paths.get(&paths[0]).map_or(0, |p| p.events));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut history: Vec<Value> = Vec::new();
    let mut history_err = None;
    loop {
        match list_events(&ctx, &hooks[0]).await {
            Ok(h) => history = h,
            Err(e) => history_err = Some(format!("{e:#}")),
        }
        if history.len() as u64 == received0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    delete_webhooks(&ctx, &hooks).await;
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut hist_keys = HashSet::new();
    for e in &history {
        let s = e["deliveryState"]
            .as_str()
            .map_or_else(|| e["deliveryState"].to_string(), str::to_string);
        *states.entry(s).or_default() += 1;
        let t = &e["eventRequestMessage"]["content"]["target"];
        if let (Some(r), Some(tag)) = (t["repository"].as_str(), t["tag"].as_str())
            && r == load.repo
        {
            hist_keys.insert(tag.to_string());
        }
    }
    let history_ok = history.len() as u64 == received0
        && hist_keys.len() == pushes.with_state(ACKED).len()
        && history_err.is_none();
    if let Some(e) = &history_err {
        eprintln!("[{}]   listEvents error: {e}", ctx.label);
    }
    eprintln!(
        "[{}]   history of {}: {} attempts ({} distinct tags; states {states:?}), receiver got {received0}",
        ctx.label,
        hooks[0],
        history.len(),
        hist_keys.len()
    );
    let mut stats = m.stats;
    stats.errors = put_errors + missing + u64::from(!history_ok);
    emit(
        &ctx,
        &stats,
        span,
        Report {
            scenario: "webhook_throughput",
            figure: rate,
            unit: "deliv/s",
            concurrency: c.concurrency,
            detail: &format!(
                "{} webhooks x {} manifests, pushed in {:.2} s, {missing} missing, {} duplicates",
                a.webhooks,
                a.manifests,
                push_time.as_secs_f64(),
                m.duplicates
            ),
            extra: merged(
                json!({
                    "webhooks": a.webhooks,
                    "manifests": a.manifests,
                    "put_errors": put_errors,
                    "push_s": round3(push_time.as_secs_f64()),
                    "expected": m.expected,
                    "delivered": delivered,
                    "missing": missing,
                    "duplicates": m.duplicates,
                    "id_mismatches": m.id_mismatches,
                    "history_webhook": hooks[0],
                    "history_attempts": history.len(),
                    "history_distinct_tags": hist_keys.len(),
                    "history_states": states,
                    "history_received": received0,
                    "history_ok": history_ok,
                    "history_error": history_err,
                }),
                put_figures(&pushes, push_time),
            ),
        },
    );
    Ok(stats.errors == 0 && m.id_mismatches == 0)
}

async fn isolation(a: IsolationArgs) -> Result<bool> {
    let c = &a.common;
    if a.webhooks < 2 {
        bail!("isolation needs at least 2 webhooks");
    }
    let ctx = Arc::new(bench_ctx(&a.registry, c)?);
    ping_registry(&ctx).await?;
    let recv = Receiver::start(c.receiver, Duration::from_secs_f64(a.hang_secs)).await?;
    eprintln!(
        "[{}] webhooks isolation: {} webhooks x {} manifests, receiver {} seed {}",
        ctx.label, a.webhooks, a.manifests, recv.addr, ctx.seed
    );
    let hooks = create_webhooks(&ctx, &recv, "i", a.webhooks).await?;
    let paths: Vec<String> = hooks.iter().map(|h| hook_path(h)).collect();
    let healthy = &paths[1..];
    let hang_path_requests = || recv.with_log(|l| l.paths.get(&paths[0]).map_or(0, |p| p.requests));
    let res = async {
        // All healthy. Every path, the first one included, must be complete
        // before the second run; the figure uses the same nine paths in both.
        warm_up(&ctx, &recv, &paths, c).await?;
        let repo = format!("{}/hooks-iso-healthy", ctx.prefix);
        let (_, load, pushes, _) = measured_run(&ctx, &recv, &paths, &repo, a.manifests, c).await?;
        let base = match_events(&recv, healthy, &load, &pushes);
        let base_put_errors = print_put_errors(&ctx.label, &pushes);
        print_missing(&ctx.label, &base);
        recv.set_hang(&paths[0], true);
        let before = hang_path_requests();
        let repo = format!("{}/hooks-iso-hanging", ctx.prefix);
        let hang = measured_run(&ctx, &recv, healthy, &repo, a.manifests, c).await?;
        // Attempts the hanging webhook got while the healthy ones were served.
        let hang_requests = hang_path_requests() - before;
        Ok::<_, anyhow::Error>((base, base_put_errors, hang, hang_requests))
    }
    .await;
    delete_webhooks(&ctx, &hooks).await;
    recv.set_hang(&paths[0], false);
    let (base, base_put_errors, (m, _, pushes, push_time), hang_requests) = res?;
    let put_errors = print_put_errors(&ctx.label, &pushes);
    print_missing(&ctx.label, &m);
    let missing = m.missing.len() as u64;
    let base_p99 = base.stats.pct_ms(0.99);
    let p99 = m.stats.pct_ms(0.99);
    let ratio = if base_p99 > 0.0 { p99 / base_p99 } else { 0.0 };
    let mut stats = m.stats;
    stats.errors = put_errors + missing + base_put_errors + base.missing.len() as u64;
    emit(
        &ctx,
        &stats,
        push_time,
        Report {
            scenario: "webhook_isolation",
            figure: ratio,
            unit: "x",
            concurrency: c.concurrency,
            detail: &format!(
                "{} of {} webhooks healthy, p99 {p99:.2} ms vs {base_p99:.2} ms all healthy; {hang_requests} requests held on the hanging path",
                healthy.len(),
                a.webhooks,
            ),
            extra: merged(
                json!({
                    "webhooks": a.webhooks,
                    "manifests": a.manifests,
                    "put_errors": put_errors,
                    "healthy_p50_ms": round3(base.stats.pct_ms(0.50)),
                    "healthy_p99_ms": round3(base_p99),
                    "healthy_max_ms": round3(max_ms(&base.stats)),
                    "healthy_missing": base.missing.len(),
                    "hanging_p50_ms": round3(stats.pct_ms(0.50)),
                    "hanging_p99_ms": round3(p99),
                    "hanging_max_ms": round3(max_ms(&stats)),
                    "expected": m.expected,
                    "missing": missing,
                    "hang_requests": hang_requests,
                    "hang_secs": a.hang_secs,
                }),
                put_figures(&pushes, push_time),
            ),
        },
    );
    Ok(stats.errors == 0)
}

// ---------------------------------------------------------------------------
// Crash

/// A `wharf serve` child; killed (SIGKILL) and reaped when dropped.
struct Server {
    child: Mutex<Option<Child>>,
    /// Removed once the child is reaped, so a wrapper never kills a pid that
    /// has been reused.
    pid_file: Option<PathBuf>,
}

impl Server {
    fn spawn(a: &CrashArgs, listen: SocketAddr) -> Result<Server> {
        let mut cmd = Command::new(&a.wharf_bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--data-dir")
            .arg(&a.data_dir)
            .stdin(Stdio::null());
        if let Some(cfg) = &a.wharf_config {
            cmd.arg("--config").arg(cfg);
        }
        match &a.server_log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", a.wharf_bin.display()))?;
        if let Some(p) = &a.pid_file {
            std::fs::write(p, format!("{}\n", child.id()))
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(Server {
            child: Mutex::new(Some(child)),
            pid_file: a.pid_file.clone(),
        })
    }

    /// SIGKILL, at once; the process is reaped by [`Server::reap`].
    fn kill9(&self) {
        if let Some(c) = lock(&self.child).as_mut() {
            let _ = c.kill();
        }
    }

    fn reap(&self) -> Option<std::process::ExitStatus> {
        let mut g = lock(&self.child);
        let status = g.as_mut().and_then(|c| {
            let _ = c.kill();
            c.wait().ok()
        });
        if g.take().is_some()
            && let Some(p) = &self.pid_file
        {
            let _ = std::fs::remove_file(p);
        }
        status
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        lock(&self.child)
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (at most 30 s) for `/v2/` to answer.
    async fn wait_ready(&self, ctx: &Ctx) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = ctx.url("v2/")?;
        loop {
            if let Some(status) = self.exited() {
                bail!("wharf exited during startup ({status}); see its log");
            }
            let ok = ctx
                .client
                .get(url.clone())
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("wharf did not answer /v2/ within 30 s; see its log");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.reap();
    }
}

fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

async fn crash(a: CrashArgs) -> Result<bool> {
    let c = a.common.clone();
    if a.kill_after == 0 || a.kill_after >= a.manifests {
        bail!("--kill-after must be between 1 and --manifests - 1");
    }
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("creating {}", a.data_dir.display()))?;
    let listen = match a.listen {
        Some(l) => l,
        None => free_port()?,
    };
    let ctx = Arc::new(bench_ctx(&format!("http://{listen}"), &c)?);
    let recv = Receiver::start(c.receiver, Duration::from_secs(1)).await?;
    let server = Arc::new(Server::spawn(&a, listen)?);
    server.wait_ready(&ctx).await?;
    eprintln!(
        "[{}] webhooks crash: {} manifests, kill -9 after {} 201s; server {listen} receiver {} seed {}",
        ctx.label, a.manifests, a.kill_after, recv.addr, ctx.seed
    );
    let hooks = create_webhooks(&ctx, &recv, "c", 1).await?;
    let paths = vec![hook_path(&hooks[0])];
    let repo = format!("{}/hooks-crash", ctx.prefix);
    let load = Arc::new(prepare_load(&ctx, &repo, a.manifests).await?);
    let pushes = Arc::new(Pushes::new(a.manifests));

    // Phase 1: push until the kill.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let killed_at: Arc<OnceLock<Instant>> = Arc::default();
    let on_ack: Arc<dyn Fn(usize) + Send + Sync> = {
        let (server, stop, acked, killed_at) = (
            server.clone(),
            stop.clone(),
            acked.clone(),
            killed_at.clone(),
        );
        let kill_after = a.kill_after;
        Arc::new(move |_| {
            if acked.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                server.kill9();
                let _ = killed_at.set(Instant::now());
                stop.store(true, Ordering::SeqCst);
            }
        })
    };
    push_load(
        &ctx,
        &load,
        &pushes,
        (0..a.manifests).collect(),
        &c,
        stop,
        on_ack,
    )
    .await;
    if killed_at.get().is_none() {
        bail!(
            "the server was never killed: only {} of {} PUTs got 201",
            acked.load(Ordering::SeqCst),
            a.kill_after
        );
    }
    let status = server.reap();
    let acked_before: Vec<usize> = pushes.with_state(ACKED);
    let in_doubt: Vec<usize> = (0..a.manifests)
        .filter(|&i| matches!(pushes.state(i), SENT | FAILED))
        .collect();
    let delivered_before_restart = match_events(&recv, &paths, &load, &pushes).stats.ok;
    eprintln!(
        "[{}]   killed ({}): {} acknowledged, {} in doubt, {} events already delivered",
        ctx.label,
        status.map_or("?".to_string(), |s| s.to_string()),
        acked_before.len(),
        in_doubt.len(),
        delivered_before_restart
    );
    {
        // Expected: these were in flight when the server died.
        let mut st = lock(&pushes.put_stats);
        for e in st.first_errors.drain(..) {
            eprintln!("[{}]   in flight at the kill: {e}", ctx.label);
        }
        st.errors = 0;
    }
    drop(server);

    // Restart on the same data directory.
    let restarted_at = Instant::now();
    let server = Server::spawn(&a, listen)?;
    server.wait_ready(&ctx).await?;
    let ready_after = restarted_at.elapsed();

    // In-doubt manifests: the restarted server either has them (then their
    // events must come too) or not (then an event would be a phantom).
    let mut committed_in_doubt = Vec::new();
    for &i in &in_doubt {
        let url = ctx.url(&format!("v2/{}/manifests/{}", load.repo, tag_name(i)))?;
        let resp = ctx
            .client
            .head(url)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .context("HEAD in-doubt manifest")?;
        if resp.status().is_success() {
            committed_in_doubt.push(i);
        }
    }

    // Phase 2: the manifests never sent, against the restarted server.
    let rest = pushes.with_state(NOT_SENT);
    push_load(
        &ctx,
        &load,
        &pushes,
        rest.clone(),
        &c,
        Arc::default(),
        no_ack(),
    )
    .await;
    let put_errors_after = rest.iter().filter(|&&i| pushes.state(i) != ACKED).count();

    // Every acknowledged manifest (both phases) and every committed in-doubt
    // one must be delivered; wait for them, bounded.
    let mut must: Vec<usize> = pushes.with_state(ACKED);
    must.extend(&committed_in_doubt);
    let keys: Vec<String> = must.iter().map(|&i| load.key(i)).collect();
    let path = paths[0].clone();
    let wait = Duration::from_secs_f64(c.wait_secs);
    let complete = recv
        .wait_until(Instant::now() + wait, |r| {
            r.with_log(|l| {
                l.paths
                    .get(&path)
                    .is_some_and(|pl| keys.iter().all(|k| pl.by_key.contains_key(k)))
            })
        })
        .await;
    let recovery = restarted_at.elapsed();

    // Tally.
    let mut lost_acked = Vec::new();
    let mut lost_committed = Vec::new();
    let mut phantom = 0;
    let mut duplicates = 0u64;
    let mut id_mismatch = 0u64;
    let mut last_phase1 = None;
    recv.with_log(|l| {
        let pl = l.paths.get(&path);
        for i in 0..a.manifests {
            let list = pl.and_then(|pl| pl.by_key.get(&load.key(i)));
            let got = list.is_some_and(|v| !v.is_empty());
            if let Some(v) = list {
                duplicates += v.len() as u64 - 1;
                let ids: HashSet<&str> = v.iter().map(|x| x.id.as_str()).collect();
                if ids.len() > 1 {
                    id_mismatch += 1;
                    eprintln!(
                        "[{}]   {} arrived with {} different ids",
                        ctx.label,
                        load.key(i),
                        ids.len()
                    );
                }
            }
            let was_acked_before = acked_before.contains(&i);
            if was_acked_before && let Some(v) = list {
                last_phase1 = last_phase1.max(v.iter().map(|x| x.at).min());
            }
            if pushes.state(i) == ACKED && !got {
                lost_acked.push(i);
            } else if committed_in_doubt.contains(&i) && !got {
                lost_committed.push(i);
            } else if in_doubt.contains(&i) && !committed_in_doubt.contains(&i) && got {
                phantom += 1;
            }
        }
    });
    for &i in lost_acked.iter().take(MAX_PRINTED) {
        eprintln!("[{}]   LOST: {} got 201, no event", ctx.label, load.key(i));
    }
    for &i in lost_committed.iter().take(MAX_PRINTED) {
        eprintln!(
            "[{}]   LOST: {} (in doubt, but stored) has no event",
            ctx.label,
            load.key(i)
        );
    }
    if !complete {
        eprintln!(
            "[{}]   gave up waiting for events after {:.0} s",
            ctx.label, c.wait_secs
        );
    }
    let put_errors_after = print_put_errors(&ctx.label, &pushes).max(put_errors_after as u64);
    let acked_total = pushes.with_state(ACKED).len();
    let lost = lost_acked.len() as u64;
    // Latencies of the acknowledged manifests (those pushed before the kill
    // include the restart), for the summary line.
    let mut stats = match_events(&recv, &paths, &load, &pushes).stats;
    stats.errors = lost + lost_committed.len() as u64 + id_mismatch + put_errors_after;
    let phase1_recovered_s = last_phase1.map(|t: Instant| {
        round3(
            t.saturating_duration_since(restarted_at)
                .as_secs_f64()
                .max(0.0),
        )
    });
    drop(server);
    emit(
        &ctx,
        &stats,
        recovery,
        Report {
            scenario: "webhook_crash",
            figure: lost as f64,
            unit: "lost",
            concurrency: c.concurrency,
            detail: &format!(
                "{} manifests, killed after {} 201s; {acked_total} acknowledged in all, {} in doubt ({} stored), {duplicates} duplicates",
                a.manifests,
                a.kill_after,
                in_doubt.len(),
                committed_in_doubt.len()
            ),
            extra: json!({
                "manifests": a.manifests,
                "kill_after": a.kill_after,
                "acked_before_kill": acked_before.len(),
                "delivered_before_restart": delivered_before_restart,
                "in_doubt": in_doubt.len(),
                "in_doubt_stored": committed_in_doubt.len(),
                "acked_total": acked_total,
                "lost": lost,
                "lost_in_doubt_stored": lost_committed.len(),
                "phantom_events": phantom,
                "duplicates": duplicates,
                "id_mismatches": id_mismatch,
                "put_errors_after_restart": put_errors_after,
                "restart_ready_s": round3(ready_after.as_secs_f64()),
                "all_delivered_after_restart_s": complete.then(|| round3(recovery.as_secs_f64())),
                "pre_kill_events_last_first_arrival_s": phase1_recovered_s,
            }),
        },
    );
    Ok(stats.errors == 0)
}

// ---------------------------------------------------------------------------
// Report

fn report(args: &ReportArgs) -> Result<i32> {
    // scenario -> label -> last line seen.
    let mut rows: HashMap<(String, String), Value> = HashMap::new();
    for path in &args.files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(s), Some(l)) = (v["scenario"].as_str(), v["label"].as_str()) else {
                continue;
            };
            rows.insert((s.to_string(), l.to_string()), v);
        }
    }
    print!("{}", render_report(&rows, &args.label, &args.compare));
    Ok(0)
}

/// What a target asks of a figure.
enum Target {
    AtMost(f64),
    AtLeast(f64),
    Zero,
    /// Shown, no target.
    Info,
}

fn verdict(t: &Target, v: Option<f64>) -> &'static str {
    match (t, v) {
        (_, None) => "-",
        (Target::Info, _) => "",
        (Target::AtMost(max), Some(v)) if v <= *max => "ok",
        (Target::AtLeast(min), Some(v)) if v >= *min => "ok",
        (Target::Zero, Some(0.0)) => "ok",
        _ => "MISSED",
    }
}

/// Result lines by (scenario, label).
type Rows = HashMap<(String, String), Value>;

fn render_report(rows: &Rows, label: &str, compare: &str) -> String {
    let get = |scenario: &str, label: &str| rows.get(&(scenario.to_string(), label.to_string()));
    let num = |v: Option<&Value>, field: &str| v.and_then(|v| v[field].as_f64());
    let lat = get("webhook_latency", label);
    let dist = get("webhook_latency", compare);
    let thr = get("webhook_throughput", label);
    let iso = get("webhook_isolation", label);
    let crash = get("webhook_crash", label);
    let history = thr.map(|t| {
        if t["history_ok"].as_bool() == Some(true) {
            0.0
        } else {
            1.0
        }
    });
    let missing_of = |v: Option<&Value>| {
        v.map(|v| {
            format!(
                "{} of {}",
                v["missing"].as_u64().unwrap_or(0),
                v["expected"].as_u64().unwrap_or(0)
            )
        })
    };
    /// (name, target, its check, ours, theirs); names ending in a unit
    /// (`(ms)`, `(s)`, `/s)`, `(x)`) are measurements, all others counts.
    type Line<'a> = (&'a str, &'a str, Target, Option<f64>, Option<f64>);
    let lines: Vec<Line<'_>> = vec![
        (
            "latency p50 (ms)",
            "<= 2",
            Target::AtMost(2.0),
            num(lat, "p50_ms"),
            num(dist, "p50_ms"),
        ),
        (
            "latency p99 (ms)",
            "<= 20",
            Target::AtMost(20.0),
            num(lat, "p99_ms"),
            num(dist, "p99_ms"),
        ),
        (
            "latency max (ms)",
            "",
            Target::Info,
            num(lat, "max_ms"),
            num(dist, "max_ms"),
        ),
        (
            "latency: events missing",
            "0",
            Target::Zero,
            num(lat, "missing"),
            num(dist, "missing"),
        ),
        (
            "latency: PUT errors",
            "0",
            Target::Zero,
            num(lat, "put_errors"),
            num(dist, "put_errors"),
        ),
        (
            "throughput (deliveries/s)",
            ">= 5000",
            Target::AtLeast(5000.0),
            num(thr, "figure"),
            None,
        ),
        (
            "throughput: manifest PUTs (/s)",
            "",
            Target::Info,
            num(thr, "put_per_s"),
            None,
        ),
        (
            "throughput: PUT p99 (ms)",
            "",
            Target::Info,
            num(thr, "put_p99_ms"),
            None,
        ),
        (
            "throughput: missing",
            "0",
            Target::Zero,
            num(thr, "missing"),
            None,
        ),
        (
            "throughput: history mismatch",
            "0",
            Target::Zero,
            history,
            None,
        ),
        (
            "isolation p99 all healthy (ms)",
            "",
            Target::Info,
            num(iso, "healthy_p99_ms"),
            None,
        ),
        (
            "isolation p99 one hanging (ms)",
            "",
            Target::Info,
            num(iso, "hanging_p99_ms"),
            None,
        ),
        (
            "isolation p99 ratio (x)",
            "<= 2",
            Target::AtMost(2.0),
            num(iso, "figure"),
            None,
        ),
        (
            "isolation: missing",
            "0",
            Target::Zero,
            num(iso, "missing"),
            None,
        ),
        (
            "crash: acknowledged (201)",
            "",
            Target::Info,
            num(crash, "acked_total"),
            None,
        ),
        (
            "crash: acknowledged, no event",
            "0",
            Target::Zero,
            num(crash, "lost"),
            None,
        ),
        (
            "crash: stored in doubt, no event",
            "0",
            Target::Zero,
            num(crash, "lost_in_doubt_stored"),
            None,
        ),
        (
            "crash: duplicates (allowed)",
            "",
            Target::Info,
            num(crash, "duplicates"),
            None,
        ),
        (
            "crash: duplicates, other id",
            "0",
            Target::Zero,
            num(crash, "id_mismatches"),
            None,
        ),
        (
            "crash: all delivered after (s)",
            "",
            Target::Info,
            num(crash, "all_delivered_after_restart_s"),
            None,
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:<8} | {:>12} | {:>12} | verdict",
        "figure", "target", label, compare
    );
    let _ = writeln!(out, "{}", "-".repeat(84));
    let cell = |v: Option<f64>, count: bool| match v {
        None => "-".to_string(),
        Some(x) if count => format!("{x:.0}"),
        Some(x) => fmt_num(x),
    };
    for (name, target_text, target, ours, theirs) in &lines {
        let count = !["(ms)", "(s)", "/s)", "(x)"]
            .iter()
            .any(|unit| name.ends_with(unit));
        let _ = writeln!(
            out,
            "{name:<34} {target_text:<8} | {:>12} | {:>12} | {}",
            cell(*ours, count),
            cell(*theirs, count),
            verdict(target, *ours)
        );
    }
    if let Some(m) = missing_of(lat) {
        let _ = writeln!(
            out,
            "(latency events missing: {label} {m}; {compare} {})",
            missing_of(dist).unwrap_or_else(|| "-".into())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, body: &str) -> u16 {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(url)
            .body(body.to_string())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    #[tokio::test]
    async fn receiver_records_acr_events_and_distribution_envelopes() {
        let recv = Receiver::start("127.0.0.1:0".parse().unwrap(), Duration::from_secs(5))
            .await
            .unwrap();
        let acr = r#"{"id":"e1","action":"push","target":{"repository":"r","tag":"t1","digest":"sha256:a"}}"#;
        assert_eq!(post(&recv.url("/hook/a"), acr).await, 200);
        assert_eq!(post(&recv.url("/hook/a"), acr).await, 200);
        let env = r#"{"events":[
            {"id":"d1","action":"push","target":{"mediaType":"application/octet-stream","repository":"r","digest":"sha256:b"}},
            {"id":"d2","action":"push","target":{"repository":"r","tag":"t2","digest":"sha256:c"}},
            {"id":"d3","action":"pull","target":{"repository":"r","tag":"t2","digest":"sha256:c"}}]}"#;
        assert_eq!(post(&recv.url(DIST_PATH), env).await, 200);
        assert_eq!(post(&recv.url("/hook/a"), "not json").await, 200);
        recv.with_log(|l| {
            let a = &l.paths["/hook/a"];
            assert_eq!((a.events, a.requests), (2, 3));
            assert_eq!(a.by_key["r:t1"].len(), 2);
            assert_eq!(a.distinct_by_repo["r"], 1);
            let d = &l.paths[DIST_PATH];
            assert_eq!(d.by_key["r:t2"][0].id, "d2");
            assert_eq!((l.ignored, l.unparsable), (2, 1));
        });
        assert_eq!(recv.distinct(&["/hook/a".into(), DIST_PATH.into()], "r"), 2);
    }

    #[tokio::test]
    async fn receiver_hangs_only_on_hanging_paths() {
        let recv = Receiver::start("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30))
            .await
            .unwrap();
        recv.set_hang("/hook/slow", true);
        let url = recv.url("/hook/slow");
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let t0 = Instant::now();
        let res = client
            .post(&url)
            .body("{}")
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(res.unwrap_err().is_timeout());
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert_eq!(post(&recv.url("/hook/fast"), "{}").await, 200);
        // The held request was recorded when it arrived.
        assert_eq!(recv.with_log(|l| l.paths["/hook/slow"].requests), 1);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(&Target::AtMost(2.0), Some(1.5)), "ok");
        assert_eq!(verdict(&Target::AtMost(2.0), Some(2.5)), "MISSED");
        assert_eq!(verdict(&Target::AtLeast(5000.0), Some(4999.0)), "MISSED");
        assert_eq!(verdict(&Target::Zero, Some(0.0)), "ok");
        assert_eq!(verdict(&Target::Zero, None), "-");
        assert_eq!(verdict(&Target::Info, Some(3.0)), "");
    }

    #[test]
    fn report_reads_figures_per_label() {
        let lat = json!({"scenario":"webhook_latency","label":"wharf","p50_ms":1.0,"p99_ms":30.5,"missing":0,"expected":500});
        let dist = json!({"scenario":"webhook_latency","label":"distribution","p50_ms":4.0,"p99_ms":9.0,"missing":2,"expected":500});
        let mut rows = Rows::new();
        rows.insert(("webhook_latency".into(), "wharf".into()), lat);
        rows.insert(("webhook_latency".into(), "distribution".into()), dist);
        let out = render_report(&rows, "wharf", "distribution");
        let p99 = out.lines().find(|l| l.starts_with("latency p99")).unwrap();
        assert!(
            p99.contains("30.5") && p99.contains("9.00") && p99.ends_with("MISSED"),
            "{p99}"
        );
        assert!(
            out.contains("wharf 0 of 500; distribution 2 of 500"),
            "{out}"
        );
    }

    #[test]
    fn hook_names_are_valid() {
        let ctx = bench_ctx(
            "http://127.0.0.1:1",
            &Common {
                label: "x".into(),
                seed: Some(u64::MAX),
                receiver: "127.0.0.1:0".parse().unwrap(),
                concurrency: 1,
                wait_secs: 1.0,
                timeout_secs: 1,
                warmup: 0,
                max_push_secs: 1.0,
            },
        )
        .unwrap();
        let n = hook_name(&ctx, "t", 9);
        assert!((5..=50).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
