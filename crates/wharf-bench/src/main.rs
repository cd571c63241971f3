//! `wharf-bench`: a load generator for any OCI distribution-spec registry.
//!
//! `run` speaks only the public `/v2/` API (no Wharf-specific endpoints), so
//! the same run can be pointed at Wharf and at CNCF Distribution and the
//! figures compared. `wharf-bench run` drives one registry through a list of
//! scenarios and prints, per scenario, one JSON line on stdout (machine
//! readable, see [`emit`]) and one human-readable line on stderr.
//! `wharf-bench table` turns JSON lines from several runs into a side-by-side
//! comparison table; `scripts/bench/registry.sh` uses both.
//! `wharf-bench webhooks …` measures event delivery (latency, throughput,
//! isolation from a hanging endpoint, durability across `kill -9`) with an
//! embedded receiver; see the [`webhooks`] module and
//! `scripts/bench/webhooks.sh`.
//!
//! Scenarios:
//! - `push-monolithic`, `push-streamed`, `push-chunked`: blob upload MiB/s
//!   (POST + PUT with body / POST + one PATCH + PUT / POST + ranged PATCHes +
//!   PUT). Each mode gets its own repository and its own random content so a
//!   registry can never deduplicate one mode's data against another's.
//! - `pull`: blob GET MiB/s; the client hashes every body and compares it with
//!   the digest it asked for.
//! - `head`: blob HEAD ops/s over keep-alive connections for a fixed time.
//! - `manifest-put`: OCI image manifests PUT by tag, ops/s.
//! - `tags`, `tags-paged`: full tag listings/s, unpaginated or with `?n=`
//!   (following `Link` headers either way).
//!
//! Credentials: `--basic USER:PASSWORD` sends Basic on every request
//! (Distribution's htpasswd, ACR/Wharf tokens); `--bearer-flow` follows the
//! Docker token flow instead (see the [`auth`] module). Without either, a 401
//! from `/v2/` stops the run.
//!
//! Every scenario sets up what it needs itself (untimed), so each can run in a
//! separate invocation as long as `--seed` is the same: blob content is derived
//! from the seed and only pushed when a HEAD says it is missing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LINK, LOCATION};
use reqwest::{Client, Response, Url};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

mod auth;
mod webhooks;

const OCTET: &str = "application/octet-stream";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MIB: f64 = 1024.0 * 1024.0;
/// Only this many error messages per scenario are printed; all are counted.
const MAX_PRINTED_ERRORS: usize = 5;

#[derive(Parser)]
#[command(about = "Load generator for OCI distribution-spec registries")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios against one registry.
    Run(RunArgs),
    /// Compare JSON result lines from several runs in one table.
    Table(TableArgs),
    /// Webhook delivery benchmarks (latency, throughput, isolation, crash).
    Webhooks(webhooks::WebhooksArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000; several, comma-separated, are used in
    /// turn (nodes over one database and bucket)
    #[arg(long)]
    registry: String,
    /// Name of the registry under test, copied into every result line.
    #[arg(long, default_value = "registry")]
    label: String,
    /// Comma-separated scenarios, run in the order given.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    scenario: Vec<Scenario>,
    /// Seed for blob content and repository names. Reuse it across
    /// invocations against the same registry so `pull`/`head`/`tags` find
    /// what earlier invocations pushed. Default: derived from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of blobs per push mode (and pulled).
    #[arg(long, default_value_t = 32)]
    blobs: usize,
    /// Size of each blob in MiB.
    #[arg(long, default_value_t = 8)]
    blob_mib: usize,
    /// PATCH size for `push-chunked`, in KiB.
    #[arg(long, default_value_t = 1024)]
    chunk_kib: usize,
    /// Concurrent uploads/downloads for push and pull.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Concurrent connections for `head`.
    #[arg(long, default_value_t = 16)]
    head_concurrency: usize,
    /// How long `head` runs, in seconds.
    #[arg(long, default_value_t = 5.0)]
    head_seconds: f64,
    /// Number of distinct manifests (and tags) for `manifest-put`.
    #[arg(long, default_value_t = 500)]
    manifests: usize,
    /// Concurrent PUTs for `manifest-put`.
    #[arg(long, default_value_t = 8)]
    manifest_concurrency: usize,
    /// Concurrent listers for `tags`/`tags-paged`.
    #[arg(long, default_value_t = 8)]
    tags_concurrency: usize,
    /// How long each tag-listing scenario runs, in seconds.
    #[arg(long, default_value_t = 5.0)]
    tags_seconds: f64,
    /// `n` for `tags-paged`.
    #[arg(long, default_value_t = 100)]
    tags_page_size: usize,
    /// Per-request timeout in seconds; a timed-out request counts as an error.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Send `Authorization: Basic …` with these credentials on every request
    /// (with `--bearer-flow`: only to the token realm). The environment
    /// variable keeps the password out of the process list.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "WHARF_BENCH_BASIC",
        hide_env_values = true
    )]
    basic: Option<String>,
    /// Use the Docker token flow: on a 401 with a Bearer challenge, fetch a
    /// token from its realm for every repository the run uses (pull,push, and
    /// metadata_read where tags are listed), send it as Bearer, and fetch
    /// again on a later 401.
    #[arg(long)]
    bearer_flow: bool,
}

#[derive(Args)]
struct TableArgs {
    /// Labels to show as columns, in order; then one ratio column per label
    /// after the first: first/second, first/third, ...
    #[arg(long, value_delimiter = ',', default_value = "wharf,distribution")]
    labels: Vec<String>,
    /// Files of JSON result lines (lines that are not JSON objects are skipped).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Scenario {
    PushMonolithic,
    PushStreamed,
    PushChunked,
    /// All three push modes.
    Push,
    Pull,
    Head,
    ManifestPut,
    Tags,
    TagsPaged,
    /// Everything, in the order listed above.
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Monolithic,
    Streamed,
    Chunked,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Monolithic => "monolithic",
            Mode::Streamed => "streamed",
            Mode::Chunked => "chunked",
        }
    }

    fn scenario(self) -> Scenario {
        match self {
            Mode::Monolithic => Scenario::PushMonolithic,
            Mode::Streamed => Scenario::PushStreamed,
            Mode::Chunked => Scenario::PushChunked,
        }
    }

    /// Distinct per mode so each mode's blobs have distinct content.
    fn content_set(self) -> u64 {
        match self {
            Mode::Monolithic => 1,
            Mode::Streamed => 2,
            Mode::Chunked => 3,
        }
    }
}

/// Content set for the manifest scenario's config/layer blobs.
const MANIFEST_SET: u64 = 100;

/// The `scenario` field a scenario's result line carries.
fn result_name(s: Scenario, page_size: usize) -> String {
    match s {
        Scenario::PushMonolithic => "blob_push_monolithic".into(),
        Scenario::PushStreamed => "blob_push_streamed".into(),
        Scenario::PushChunked => "blob_push_chunked".into(),
        Scenario::Pull => "blob_pull".into(),
        Scenario::Head => "blob_head".into(),
        Scenario::ManifestPut => "manifest_put".into(),
        Scenario::Tags => "tag_list".into(),
        Scenario::TagsPaged => format!("tag_list_n{page_size}"),
        Scenario::Push | Scenario::All => format!("{s:?}"),
    }
}

fn expand(scenarios: &[Scenario]) -> Vec<Scenario> {
    use Scenario::*;
    let mut out = Vec::new();
    for s in scenarios {
        let parts: &[Scenario] = match s {
            Push => &[PushMonolithic, PushStreamed, PushChunked],
            All => &[
                PushMonolithic,
                PushStreamed,
                PushChunked,
                Pull,
                Head,
                ManifestPut,
                Tags,
                TagsPaged,
            ],
            other => std::slice::from_ref(other),
        };
        for p in parts {
            if !out.contains(p) {
                out.push(*p);
            }
        }
    }
    out
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let code = rt.block_on(run(args))?;
            std::process::exit(code);
        }
        Cmd::Table(args) => table(&args),
        Cmd::Webhooks(args) => {
            let code = webhooks::main(args)?;
            std::process::exit(code);
        }
    }
}

/// Shared state of one `run` invocation.
struct Ctx {
    client: Client,
    base: Url,
    /// Every node's base URL (`--registry` lists several, comma-separated, for nodes that
    /// share one database and bucket): requests go to them in turn.
    bases: Vec<Url>,
    next: std::sync::atomic::AtomicUsize,
    label: String,
    seed: u64,
    /// Repository namespace of this seed, so runs with different seeds never
    /// share repositories (or deduplicate blobs) on the same registry.
    prefix: String,
    args: RunArgs,
    /// Bodies whose sha256 did not match the requested digest.
    mismatches: AtomicU64,
    auth: auth::Auth,
}

impl Ctx {
    fn url(&self, path: &str) -> Result<Url> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        self.bases[i].join(path).context("building URL")
    }

    /// Sends a request with the run's credentials (every request goes
    /// through here so none is sent without them).
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Response> {
        self.auth.send(&self.client, rb).await
    }
}

/// The token scopes the bearer flow asks for up front: every repository any
/// scenario uses (see [`push_repo`] and [`manifest_repo`]), so no timed
/// request meets a 401.
fn token_scopes(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = [Mode::Monolithic, Mode::Streamed, Mode::Chunked]
        .iter()
        .map(|m| format!("repository:{}:pull,push", push_repo(prefix, *m)))
        .collect();
    // ACR and Wharf want metadata_read to list tags; other token servers
    // grant what they know and ignore the rest.
    out.push(format!(
        "repository:{}:pull,push,metadata_read",
        manifest_repo_in(prefix)
    ));
    out
}

/// A blob held in memory for pushing.
struct Blob {
    data: Bytes,
    digest: String,
}

/// A blob known to be in the registry (content no longer needed).
#[derive(Clone)]
struct BlobRef {
    digest: String,
    size: u64,
}

impl Ctx {
    fn new(args: RunArgs) -> Result<Ctx> {
        let seed = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        let mut bases = Vec::new();
        for r in args.registry.split(',') {
            let mut base = Url::parse(r.trim()).context("--registry must be URLs")?;
            // Url::join drops the last path segment unless it ends with '/'.
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            bases.push(base);
        }
        let base = bases.first().cloned().context("--registry: no URL")?;
        let max_conns = args
            .concurrency
            .max(args.head_concurrency)
            .max(args.manifest_concurrency)
            .max(args.tags_concurrency);
        let client = Client::builder()
            // Loopback benchmark: an inherited HTTP(S)_PROXY must not intercept it.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(max_conns)
            .timeout(Duration::from_secs(args.timeout_secs))
            .build()?;
        let prefix = format!("wharf-bench/s{seed:016x}");
        let auth = auth::Auth::new(
            args.basic.as_deref(),
            args.bearer_flow,
            &token_scopes(&prefix),
        )?;
        Ok(Ctx {
            client,
            base,
            bases,
            next: std::sync::atomic::AtomicUsize::new(0),
            label: args.label.clone(),
            seed,
            prefix,
            mismatches: AtomicU64::new(0),
            auth,
            args,
        })
    }
}

async fn run(args: RunArgs) -> Result<i32> {
    let ctx = Arc::new(Ctx::new(args)?);

    // Fail fast with a clear message if nothing is listening.
    let v2 = ctx.url("v2/")?;
    let resp = ctx
        .send(ctx.client.get(v2.clone()))
        .await
        .with_context(|| format!("registry not reachable at {v2}"))?;
    if !resp.status().is_success() {
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED && !ctx.auth.has_credentials() {
            bail!(
                "GET {v2} returned {} (auth is not supported without --basic USER:PASSWORD)",
                resp.status()
            );
        }
        bail!(
            "GET {v2} returned {} (auth: {})",
            resp.status(),
            ctx.auth.describe()
        );
    }
    eprintln!(
        "[{}] registry {} seed {} repos under {}/ auth: {}",
        ctx.label,
        ctx.base,
        ctx.seed,
        ctx.prefix,
        ctx.auth.describe()
    );

    let mut any_errors = false;
    // Blobs the pull/head scenarios use; filled by push-monolithic or setup.
    let mut pull_set: Option<Vec<BlobRef>> = None;
    for scenario in expand(&ctx.args.scenario) {
        let outcome = match scenario {
            Scenario::PushMonolithic => {
                push_scenario(&ctx, Mode::Monolithic)
                    .await
                    .map(|(res, refs)| {
                        if res["errors"] == 0 {
                            pull_set = Some(refs);
                        }
                        res
                    })
            }
            Scenario::PushStreamed => push_scenario(&ctx, Mode::Streamed).await.map(|r| r.0),
            Scenario::PushChunked => push_scenario(&ctx, Mode::Chunked).await.map(|r| r.0),
            Scenario::Pull => match ensure_pull_set(&ctx, &mut pull_set).await {
                Ok(set) => pull_scenario(&ctx, set).await,
                Err(e) => Err(e),
            },
            Scenario::Head => match ensure_pull_set(&ctx, &mut pull_set).await {
                Ok(set) => head_scenario(&ctx, set).await,
                Err(e) => Err(e),
            },
            Scenario::ManifestPut => manifest_scenario(&ctx).await,
            Scenario::Tags => tags_scenario(&ctx, None).await,
            Scenario::TagsPaged => tags_scenario(&ctx, Some(ctx.args.tags_page_size)).await,
            Scenario::Push | Scenario::All => unreachable!("expanded above"),
        };
        match outcome {
            Ok(result) => any_errors |= result["errors"] != 0,
            Err(e) => {
                // Setup failed, so nothing was measured; still emit a line so
                // the failure shows up in the table instead of a silent gap.
                any_errors = true;
                eprintln!("[{}] {scenario:?} FAILED: {e:#}", ctx.label);
                let line = json!({
                    "label": ctx.label,
                    "registry": ctx.base.as_str(),
                    "scenario": result_name(scenario, ctx.args.tags_page_size),
                    "figure": 0.0,
                    "status": "failed",
                    "errors": 1,
                    "error": format!("{e:#}"),
                    "seed": ctx.seed,
                });
                println!("{line}");
            }
        }
    }
    let fetched = ctx.auth.fetched.load(Ordering::Relaxed);
    if fetched > 1 {
        // One is expected; more means a timed loop may have paid for a 401
        // and a token request.
        eprintln!(
            "[{}] bearer flow: {fetched} tokens fetched (refreshed during the run)",
            ctx.label
        );
    }
    let mismatches = ctx.mismatches.load(Ordering::Relaxed);
    if mismatches > 0 {
        eprintln!(
            "[{}] FAILED: {mismatches} blob bodies did not match their digest",
            ctx.label
        );
        return Ok(3);
    }
    Ok(if any_errors { 2 } else { 0 })
}

// ---------------------------------------------------------------------------
// Measurement

/// What one successful operation did.
#[derive(Default, Clone, Copy, Debug)]
struct OpOut {
    bytes: u64,
    requests: u64,
}

#[derive(Default)]
struct Stats {
    /// Latency of each successful operation, in microseconds.
    lat_us: Vec<u64>,
    ok: u64,
    errors: u64,
    bytes: u64,
    requests: u64,
    first_errors: Vec<String>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.lat_us.extend(other.lat_us);
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.requests += other.requests;
        for e in other.first_errors {
            if self.first_errors.len() < MAX_PRINTED_ERRORS {
                self.first_errors.push(e);
            }
        }
    }

    /// Nearest-rank percentile in milliseconds (`lat_us` must be sorted).
    fn pct_ms(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let rank = ((p * self.lat_us.len() as f64).ceil() as usize).clamp(1, self.lat_us.len());
        self.lat_us[rank - 1] as f64 / 1000.0
    }
}

/// How long a pool of workers keeps going.
#[derive(Clone, Copy)]
enum Limit {
    /// Operations 0..n, each exactly once.
    Count(usize),
    /// Operations 0, 1, 2, ... until the duration has passed.
    For(Duration),
}

/// Runs `op(i)` on `concurrency` tasks until `limit` is reached and returns
/// the merged stats and the wall time from the first start to the last end.
/// Failed operations are counted (not retried) and excluded from latencies.
async fn run_pool<F, Fut>(concurrency: usize, limit: Limit, op: F) -> (Stats, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<OpOut>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = match limit {
        Limit::For(d) => Some(start + d),
        Limit::Count(_) => None,
    };
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match (limit, deadline) {
                    (Limit::Count(n), _) if i >= n => break,
                    (_, Some(d)) if Instant::now() >= d => break,
                    _ => {}
                }
                let t0 = Instant::now();
                match op(i).await {
                    Ok(out) => {
                        st.lat_us.push(t0.elapsed().as_micros() as u64);
                        st.ok += 1;
                        st.bytes += out.bytes;
                        st.requests += out.requests;
                    }
                    Err(e) => {
                        st.errors += 1;
                        if st.first_errors.len() < MAX_PRINTED_ERRORS {
                            st.first_errors.push(format!("{e:#}"));
                        }
                    }
                }
            }
            st
        }));
    }
    let mut stats = Stats::default();
    for t in tasks {
        match t.await {
            Ok(st) => stats.merge(st),
            Err(e) => {
                stats.errors += 1;
                stats.first_errors.push(format!("worker panicked: {e}"));
            }
        }
    }
    let elapsed = start.elapsed();
    stats.lat_us.sort_unstable();
    (stats, elapsed)
}

/// What a scenario reports besides its [`Stats`].
struct Report<'a> {
    scenario: &'a str,
    /// The headline number, in `unit`.
    figure: f64,
    unit: &'a str,
    concurrency: usize,
    /// Parameters for the human-readable line.
    detail: &'a str,
    /// Scenario-specific fields merged into the JSON line.
    extra: Value,
}

/// Prints one scenario's result (JSON on stdout, a summary on stderr) and
/// returns the JSON.
fn emit(ctx: &Ctx, stats: &Stats, elapsed: Duration, rep: Report<'_>) -> Value {
    let Report {
        scenario,
        figure,
        unit,
        concurrency,
        detail,
        extra,
    } = rep;
    let status = if stats.errors == 0 { "ok" } else { "errors" };
    let mut v = json!({
        "label": ctx.label,
        "registry": ctx.base.as_str(),
        "scenario": scenario,
        "figure": round3(figure),
        "unit": unit,
        "status": status,
        "ops": stats.ok,
        "errors": stats.errors,
        "requests": stats.requests,
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "p50_ms": round3(stats.pct_ms(0.50)),
        "p99_ms": round3(stats.pct_ms(0.99)),
        "concurrency": concurrency,
        "seed": ctx.seed,
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    println!("{v}");
    for e in &stats.first_errors {
        eprintln!("[{}] {scenario} error: {e}", ctx.label);
    }
    let err_note = if stats.errors == 0 {
        String::new()
    } else {
        format!("  ** {} ERRORS **", stats.errors)
    };
    eprintln!(
        "[{}] {scenario:<22} {figure:>10.1} {unit:<7} p50 {:>8.2} ms  p99 {:>8.2} ms  ({detail}, c={concurrency}, {:.2} s){err_note}",
        ctx.label,
        stats.pct_ms(0.50),
        stats.pct_ms(0.99),
        elapsed.as_secs_f64(),
    );
    v
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------
// HTTP helpers

/// Turns a non-2xx response into an error carrying the start of the body
/// (registries put the OCI error code there).
async fn check(resp: Response, what: &str) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    Err(anyhow!("{what}: HTTP {status}: {}", body.trim()))
}

/// Resolves a Location header against the URL of the request that returned
/// it; registries send absolute URLs, absolute paths or relative references.
fn location(resp: &Response, request_url: &Url) -> Result<Url> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .ok_or_else(|| anyhow!("response {} has no Location header", resp.status()))?
        .to_str()
        .context("Location header is not ASCII")?;
    request_url
        .join(loc)
        .with_context(|| format!("bad Location {loc:?}"))
}

/// If the registry returned Docker-Content-Digest, it must be the one we sent.
fn check_digest_header(resp: &Response, want: &str, what: &str) -> Result<()> {
    if let Some(got) = resp.headers().get("docker-content-digest") {
        let got = got.to_str().unwrap_or("<non-ascii>");
        if got != want {
            bail!("{what}: Docker-Content-Digest {got} but expected {want}");
        }
    }
    Ok(())
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

// ---------------------------------------------------------------------------
// Blob content

/// SplitMix64 finaliser: spreads (seed, set, index) into independent seeds.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Generates and hashes `n` random blobs of `size` bytes, deterministically
/// from (seed, set), on all cores. Done before any timing starts so neither
/// generation nor hashing is measured.
fn gen_blobs(seed: u64, set: u64, n: usize, size: usize) -> Vec<Blob> {
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .min(n.max(1));
    let mut out: Vec<Option<Blob>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        for (t, slots) in out.chunks_mut(n.div_ceil(threads).max(1)).enumerate() {
            let first = t * n.div_ceil(threads).max(1);
            s.spawn(move || {
                for (k, slot) in slots.iter_mut().enumerate() {
                    let i = (first + k) as u64;
                    let mut rng = fastrand::Rng::with_seed(mix(mix(seed ^ mix(set)) ^ i));
                    let mut data = vec![0u8; size];
                    rng.fill(&mut data);
                    let digest = sha256_digest(&data);
                    *slot = Some(Blob {
                        data: Bytes::from(data),
                        digest,
                    });
                }
            });
        }
    });
    out.into_iter().map(|b| b.expect("generated")).collect()
}

// ---------------------------------------------------------------------------
// Blob push

async fn push_blob(ctx: &Ctx, repo: &str, blob: &Blob, mode: Mode) -> Result<OpOut> {
    let client = &ctx.client;
    let start_url = ctx.url(&format!("v2/{repo}/blobs/uploads/"))?;
    let resp = ctx
        .send(client.post(start_url.clone()).header(CONTENT_LENGTH, 0))
        .await
        .context("POST upload")?;
    let resp = check(resp, "POST upload").await?;
    let mut url = location(&resp, &start_url)?;
    let mut requests = 1;
    let len = blob.data.len();
    match mode {
        Mode::Monolithic => {}
        Mode::Streamed => {
            // One PATCH with the whole body and no Content-Range.
            let resp = ctx
                .send(
                    client
                        .patch(url.clone())
                        .header(CONTENT_TYPE, OCTET)
                        .body(blob.data.clone()),
                )
                .await
                .context("PATCH upload")?;
            let resp = check(resp, "PATCH upload").await?;
            url = location(&resp, &url)?;
            requests += 1;
        }
        Mode::Chunked => {
            let chunk = (ctx.args.chunk_kib * 1024).max(1);
            let mut start = 0;
            while start < len {
                let end = (start + chunk).min(len);
                let resp = ctx
                    .send(
                        client
                            .patch(url.clone())
                            .header(CONTENT_TYPE, OCTET)
                            // Inclusive range, no "bytes=" prefix, as the spec shows.
                            .header("content-range", format!("{start}-{}", end - 1))
                            .body(blob.data.slice(start..end)),
                    )
                    .await
                    .context("PATCH chunk")?;
                let resp = check(resp, &format!("PATCH chunk {start}-{}", end - 1)).await?;
                url = location(&resp, &url)?;
                requests += 1;
                start = end;
            }
        }
    }
    // The upload URL may already carry query state; append, don't replace.
    url.query_pairs_mut().append_pair("digest", &blob.digest);
    let req = client.put(url).header(CONTENT_TYPE, OCTET);
    let req = if mode == Mode::Monolithic {
        req.body(blob.data.clone())
    } else {
        req.header(CONTENT_LENGTH, 0)
    };
    let resp = ctx.send(req).await.context("PUT upload")?;
    let resp = check(resp, "PUT upload").await?;
    check_digest_header(&resp, &blob.digest, "PUT upload")?;
    requests += 1;
    Ok(OpOut {
        bytes: len as u64,
        requests,
    })
}

async fn push_scenario(ctx: &Arc<Ctx>, mode: Mode) -> Result<(Value, Vec<BlobRef>)> {
    let a = &ctx.args;
    let blobs = Arc::new(gen_blobs(
        ctx.seed,
        mode.content_set(),
        a.blobs,
        a.blob_mib * 1024 * 1024,
    ));
    let repo = Arc::new(push_repo(&ctx.prefix, mode));
    let (c, b, r) = (ctx.clone(), blobs.clone(), repo.clone());
    let (stats, elapsed) = run_pool(a.concurrency, Limit::Count(a.blobs), move |i| {
        let (c, b, r) = (c.clone(), b.clone(), r.clone());
        async move { push_blob(&c, &r, &b[i], mode).await }
    })
    .await;
    let mibs = stats.bytes as f64 / MIB / elapsed.as_secs_f64();
    let mut detail = format!("{} x {} MiB", a.blobs, a.blob_mib);
    if mode == Mode::Chunked {
        let _ = write!(detail, ", {} KiB chunks", a.chunk_kib);
    }
    let res = emit(
        ctx,
        &stats,
        elapsed,
        Report {
            scenario: &result_name(mode.scenario(), 0),
            figure: mibs,
            unit: "MiB/s",
            concurrency: a.concurrency,
            detail: &detail,
            extra: json!({
                "bytes": stats.bytes,
                "blobs": a.blobs,
                "blob_mib": a.blob_mib,
                "chunk_kib": if mode == Mode::Chunked { Some(a.chunk_kib) } else { None },
                "repo": repo.as_str(),
            }),
        },
    );
    let refs = blobs
        .iter()
        .map(|b| BlobRef {
            digest: b.digest.clone(),
            size: b.data.len() as u64,
        })
        .collect();
    Ok((res, refs))
}

fn push_repo(prefix: &str, mode: Mode) -> String {
    format!("{prefix}/push-{}", mode.name())
}

fn pull_repo(ctx: &Ctx) -> String {
    push_repo(&ctx.prefix, Mode::Monolithic)
}

/// Returns the blobs `pull` and `head` use: those `push-monolithic` pushed.
/// When that scenario did not run in this invocation, regenerates the same
/// content from the seed and pushes (untimed) whatever the registry lacks.
async fn ensure_pull_set(ctx: &Arc<Ctx>, cache: &mut Option<Vec<BlobRef>>) -> Result<Vec<BlobRef>> {
    if let Some(set) = cache {
        return Ok(set.clone());
    }
    let a = &ctx.args;
    let blobs = gen_blobs(
        ctx.seed,
        Mode::Monolithic.content_set(),
        a.blobs,
        a.blob_mib * 1024 * 1024,
    );
    let repo = pull_repo(ctx);
    let mut pushed = 0;
    for b in &blobs {
        let url = ctx.url(&format!("v2/{repo}/blobs/{}", b.digest))?;
        let resp = ctx.send(ctx.client.head(url)).await?;
        if !resp.status().is_success() {
            push_blob(ctx, &repo, b, Mode::Monolithic)
                .await
                .context("setup: pushing blobs to pull")?;
            pushed += 1;
        }
    }
    if pushed > 0 {
        eprintln!("[{}] setup: pushed {pushed} blobs to {repo}", ctx.label);
    }
    let set: Vec<BlobRef> = blobs
        .iter()
        .map(|b| BlobRef {
            digest: b.digest.clone(),
            size: b.data.len() as u64,
        })
        .collect();
    *cache = Some(set.clone());
    Ok(set)
}

// ---------------------------------------------------------------------------
// Blob pull and HEAD

async fn pull_blob(ctx: &Ctx, repo: &str, blob: &BlobRef) -> Result<OpOut> {
    let url = ctx.url(&format!("v2/{repo}/blobs/{}", blob.digest))?;
    let resp = ctx.send(ctx.client.get(url)).await.context("GET blob")?;
    let mut resp = check(resp, "GET blob").await?;
    // Hash while streaming so the client never buffers a whole blob.
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.context("reading blob body")? {
        hasher.update(&chunk);
        n += chunk.len() as u64;
    }
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if got != blob.digest || n != blob.size {
        ctx.mismatches.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "[{}] DIGEST MISMATCH: GET {} returned {n} bytes hashing to {got} (expected {} bytes)",
            ctx.label, blob.digest, blob.size
        );
        bail!("digest mismatch for {}", blob.digest);
    }
    Ok(OpOut {
        bytes: n,
        requests: 1,
    })
}

async fn pull_scenario(ctx: &Arc<Ctx>, set: Vec<BlobRef>) -> Result<Value> {
    let a = &ctx.args;
    let n = set.len();
    let set = Arc::new(set);
    let repo = Arc::new(pull_repo(ctx));
    let (c, s, r) = (ctx.clone(), set.clone(), repo.clone());
    let (stats, elapsed) = run_pool(a.concurrency, Limit::Count(n), move |i| {
        let (c, s, r) = (c.clone(), s.clone(), r.clone());
        async move { pull_blob(&c, &r, &s[i]).await }
    })
    .await;
    let mibs = stats.bytes as f64 / MIB / elapsed.as_secs_f64();
    Ok(emit(
        ctx,
        &stats,
        elapsed,
        Report {
            scenario: &result_name(Scenario::Pull, 0),
            figure: mibs,
            unit: "MiB/s",
            concurrency: a.concurrency,
            detail: &format!("{n} x {} MiB, sha256 verified", a.blob_mib),
            extra: json!({
                "bytes": stats.bytes,
                "blobs": n,
                "blob_mib": a.blob_mib,
                "digest_mismatches": ctx.mismatches.load(Ordering::Relaxed),
            }),
        },
    ))
}

async fn head_blob(ctx: &Ctx, url: Url, size: u64) -> Result<OpOut> {
    let resp = ctx.send(ctx.client.head(url)).await.context("HEAD blob")?;
    let resp = check(resp, "HEAD blob").await?;
    // reqwest reports a HEAD body as empty, so read the header itself.
    let len = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if len != Some(size) {
        bail!("HEAD blob: Content-Length {len:?}, expected {size}");
    }
    Ok(OpOut {
        bytes: 0,
        requests: 1,
    })
}

async fn head_scenario(ctx: &Arc<Ctx>, set: Vec<BlobRef>) -> Result<Value> {
    let a = &ctx.args;
    if set.is_empty() {
        bail!("head needs at least one blob (--blobs)");
    }
    let repo = pull_repo(ctx);
    // Build URLs up front so the timed loop is only the request.
    let targets: Vec<(Url, u64)> = set
        .iter()
        .map(|b| Ok((ctx.url(&format!("v2/{repo}/blobs/{}", b.digest))?, b.size)))
        .collect::<Result<_>>()?;
    let targets = Arc::new(targets);
    let (c, t) = (ctx.clone(), targets.clone());
    let (stats, elapsed) = run_pool(
        a.head_concurrency,
        Limit::For(Duration::from_secs_f64(a.head_seconds)),
        move |i| {
            let (c, t) = (c.clone(), t.clone());
            async move {
                let (url, size) = &t[i % t.len()];
                head_blob(&c, url.clone(), *size).await
            }
        },
    )
    .await;
    let ops = stats.ok as f64 / elapsed.as_secs_f64();
    Ok(emit(
        ctx,
        &stats,
        elapsed,
        Report {
            scenario: &result_name(Scenario::Head, 0),
            figure: ops,
            unit: "ops/s",
            concurrency: a.head_concurrency,
            detail: &format!("{} blobs, {:.0} s", targets.len(), a.head_seconds),
            extra: json!({ "blobs": targets.len() }),
        },
    ))
}

// ---------------------------------------------------------------------------
// Manifests and tags

fn manifest_repo(ctx: &Ctx) -> String {
    manifest_repo_in(&ctx.prefix)
}

fn manifest_repo_in(prefix: &str) -> String {
    format!("{prefix}/manifests")
}

fn tag_name(i: usize) -> String {
    format!("t{i:06}")
}

/// Pushes (untimed) the config and layer blobs the manifests reference and
/// returns the manifest bodies, one per tag, differing by an annotation.
async fn prepare_manifests(ctx: &Ctx) -> Result<Vec<Bytes>> {
    let repo = manifest_repo(ctx);
    let layer = gen_blobs(ctx.seed, MANIFEST_SET, 1, 64 * 1024).remove(0);
    // A minimal but valid OCI image config whose diff_id is the (uncompressed)
    // layer's digest, so strict registries accept it too.
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
        let resp = ctx.send(ctx.client.head(url)).await?;
        if !resp.status().is_success() {
            push_blob(ctx, &repo, b, Mode::Monolithic)
                .await
                .context("setup: pushing manifest blobs")?;
        }
    }
    let mut out = Vec::with_capacity(ctx.args.manifests);
    for i in 0..ctx.args.manifests {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": config.digest,
                "size": config.data.len(),
            },
            "layers": [{
                "mediaType": OCI_LAYER,
                "digest": layer.digest,
                "size": layer.data.len(),
            }],
            "annotations": {
                "dev.wharf.bench.seed": ctx.seed.to_string(),
                "dev.wharf.bench.index": i.to_string(),
            },
        });
        out.push(Bytes::from(serde_json::to_vec(&m)?));
    }
    Ok(out)
}

async fn put_manifest(ctx: &Ctx, repo: &str, tag: &str, body: Bytes) -> Result<OpOut> {
    let url = ctx.url(&format!("v2/{repo}/manifests/{tag}"))?;
    let digest = sha256_digest(&body);
    let resp = ctx
        .send(
            ctx.client
                .put(url)
                .header(CONTENT_TYPE, OCI_MANIFEST)
                .body(body),
        )
        .await
        .context("PUT manifest")?;
    let resp = check(resp, "PUT manifest").await?;
    // The registry must store the bytes as sent, so the digest must match.
    check_digest_header(&resp, &digest, "PUT manifest")?;
    Ok(OpOut {
        bytes: 0,
        requests: 1,
    })
}

async fn manifest_scenario(ctx: &Arc<Ctx>) -> Result<Value> {
    let a = &ctx.args;
    let bodies = Arc::new(prepare_manifests(ctx).await?);
    let repo = Arc::new(manifest_repo(ctx));
    let (c, b, r) = (ctx.clone(), bodies.clone(), repo.clone());
    let (stats, elapsed) = run_pool(
        a.manifest_concurrency,
        Limit::Count(bodies.len()),
        move |i| {
            let (c, b, r) = (c.clone(), b.clone(), r.clone());
            async move { put_manifest(&c, &r, &tag_name(i), b[i].clone()).await }
        },
    )
    .await;
    let ops = stats.ok as f64 / elapsed.as_secs_f64();
    Ok(emit(
        ctx,
        &stats,
        elapsed,
        Report {
            scenario: &result_name(Scenario::ManifestPut, 0),
            figure: ops,
            unit: "ops/s",
            concurrency: a.manifest_concurrency,
            detail: &format!("{} manifests, one tag each", bodies.len()),
            extra: json!({ "manifests": bodies.len(), "repo": repo.as_str() }),
        },
    ))
}

/// Fetches the complete tag list, following `Link: <...>; rel="next"`
/// (whether or not `n` was asked for). Returns the tags and request count.
async fn list_tags(ctx: &Ctx, repo: &str, page: Option<usize>) -> Result<(Vec<String>, u64)> {
    #[derive(serde::Deserialize)]
    struct TagList {
        tags: Option<Vec<String>>,
    }
    let mut url = ctx.url(&format!("v2/{repo}/tags/list"))?;
    if let Some(n) = page {
        url.query_pairs_mut().append_pair("n", &n.to_string());
    }
    let mut tags = Vec::new();
    let mut requests = 0;
    loop {
        let resp = ctx
            .send(ctx.client.get(url.clone()))
            .await
            .context("GET tags")?;
        let resp = check(resp, "GET tags").await?;
        requests += 1;
        let next = next_link(resp.headers(), &url)?;
        let body: TagList = resp.json().await.context("tags/list body")?;
        tags.extend(body.tags.unwrap_or_default());
        match next {
            Some(n) => url = n,
            None => return Ok((tags, requests)),
        }
        if requests > 100_000 {
            bail!("tags/list pagination does not terminate");
        }
    }
}

/// Resolves the `rel="next"` target of the Link headers, if any.
fn next_link(headers: &HeaderMap, request_url: &Url) -> Result<Option<Url>> {
    for value in headers.get_all(LINK) {
        let value = value.to_str().context("Link header is not ASCII")?;
        if let Some(target) = parse_next(value) {
            let url = request_url
                .join(target)
                .with_context(|| format!("bad Link target {target:?}"))?;
            return Ok(Some(url));
        }
    }
    Ok(None)
}

/// Finds `<target>` of the `rel="next"` entry in one Link header value.
fn parse_next(value: &str) -> Option<&str> {
    value.split(',').find_map(|part| {
        let open = part.find('<')?;
        let close = part.find('>')?;
        let params = &part[close + 1..];
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        (open < close && is_next).then(|| &part[open + 1..close])
    })
}

async fn tags_scenario(ctx: &Arc<Ctx>, page: Option<usize>) -> Result<Value> {
    let a = &ctx.args;
    let repo = Arc::new(manifest_repo(ctx));
    let want = a.manifests;
    // Setup: the repository must hold exactly the manifest scenario's tags.
    let have = list_tags(ctx, &repo, None)
        .await
        .map(|(t, _)| t.len())
        .unwrap_or(0);
    if have != want {
        let bodies = prepare_manifests(ctx).await?;
        for (i, body) in bodies.into_iter().enumerate() {
            put_manifest(ctx, &repo, &tag_name(i), body)
                .await
                .context("setup: tagging manifests")?;
        }
        eprintln!("[{}] setup: tagged {want} manifests in {repo}", ctx.label);
    }
    let (c, r) = (ctx.clone(), repo.clone());
    let (stats, elapsed) = run_pool(
        a.tags_concurrency,
        Limit::For(Duration::from_secs_f64(a.tags_seconds)),
        move |_| {
            let (c, r) = (c.clone(), r.clone());
            async move {
                let (tags, requests) = list_tags(&c, &r, page).await?;
                // Pagination bugs show up as missing or repeated tags.
                let distinct: std::collections::HashSet<&String> = tags.iter().collect();
                if tags.len() != want || distinct.len() != want {
                    bail!(
                        "tags/list returned {} tags ({} distinct), expected {want}",
                        tags.len(),
                        distinct.len()
                    );
                }
                Ok(OpOut { bytes: 0, requests })
            }
        },
    )
    .await;
    let ops = stats.ok as f64 / elapsed.as_secs_f64();
    let pages = if stats.ok > 0 {
        stats.requests as f64 / stats.ok as f64
    } else {
        0.0
    };
    let (name, detail) = match page {
        None => (
            result_name(Scenario::Tags, 0),
            format!("{want} tags, full listings"),
        ),
        Some(n) => (
            result_name(Scenario::TagsPaged, n),
            format!("{want} tags, n={n}, {pages:.1} pages/listing"),
        ),
    };
    Ok(emit(
        ctx,
        &stats,
        elapsed,
        Report {
            scenario: &name,
            figure: ops,
            unit: "lists/s",
            concurrency: a.tags_concurrency,
            detail: &detail,
            extra: json!({
                "tags": want,
                "page_size": page,
                "pages_per_listing": round3(pages),
                "requests_per_s": round3(stats.requests as f64 / elapsed.as_secs_f64()),
            }),
        },
    ))
}

// ---------------------------------------------------------------------------
// Comparison table

/// One (scenario, label) result as read back from JSON lines.
struct Row {
    figure: f64,
    unit: String,
    errors: u64,
    p50: Option<f64>,
    p99: Option<f64>,
}

fn table(args: &TableArgs) -> Result<()> {
    print!("{}", render_table(args)?);
    Ok(())
}

fn render_table(args: &TableArgs) -> Result<String> {
    // scenario -> label -> row, with scenarios kept in first-seen order.
    let mut order: Vec<String> = Vec::new();
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for path in &args.files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let Ok(Value::Object(v)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(scenario), Some(label), Some(figure)) = (
                v.get("scenario").and_then(Value::as_str),
                v.get("label").and_then(Value::as_str),
                v.get("figure").and_then(Value::as_f64),
            ) else {
                continue;
            };
            if !order.iter().any(|s| s == scenario) {
                order.push(scenario.to_string());
            }
            rows.insert(
                (scenario.to_string(), label.to_string()),
                Row {
                    figure,
                    unit: v
                        .get("unit")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    errors: v.get("errors").and_then(Value::as_u64).unwrap_or(0),
                    p50: v.get("p50_ms").and_then(Value::as_f64),
                    p99: v.get("p99_ms").and_then(Value::as_f64),
                },
            );
        }
    }
    let labels = &args.labels;
    let ratio_heads: Vec<String> = labels
        .iter()
        .skip(1)
        .map(|l| format!("{}/{l}", labels[0]))
        .collect();
    let cell = |r: Option<&Row>, f: &dyn Fn(&Row) -> Option<f64>| -> String {
        match r {
            None => "-".to_string(),
            Some(r) => {
                let v = f(r).map_or("-".to_string(), fmt_num);
                if r.errors > 0 {
                    format!("{v} (ERR {})", r.errors)
                } else {
                    v
                }
            }
        }
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "-".to_string(),
    };

    let mut out = String::new();
    let mut header = format!("{:<24} {:<8}", "figure", "unit");
    for l in labels {
        let _ = write!(header, " | {l:>18}");
    }
    for h in &ratio_heads {
        let _ = write!(header, " | {h}");
    }
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.len().max(60)));
    type Pick = fn(&Row) -> Option<f64>;
    let sections: [(&str, Pick); 3] = [
        ("", |r| Some(r.figure)),
        ("p50", |r| r.p50),
        ("p99", |r| r.p99),
    ];
    for (suffix, pick) in sections {
        for scenario in &order {
            let per_label: Vec<Option<&Row>> = labels
                .iter()
                .map(|l| rows.get(&(scenario.clone(), l.clone())))
                .collect();
            let Some(any) = per_label.iter().flatten().next() else {
                continue;
            };
            if !suffix.is_empty() && per_label.iter().flatten().all(|r| pick(r).is_none()) {
                continue; // e.g. RSS rows have no latency
            }
            let (name, unit) = if suffix.is_empty() {
                (scenario.clone(), any.unit.clone())
            } else {
                (format!("{scenario} {suffix}"), "ms".to_string())
            };
            let mut line = format!("{name:<24} {unit:<8}");
            for r in &per_label {
                let _ = write!(line, " | {:>18}", cell(*r, &pick));
            }
            let a = per_label.first().copied().flatten().and_then(pick);
            for (other, h) in per_label.iter().skip(1).zip(&ratio_heads) {
                // Padded to the header so several ratio columns line up.
                let _ = write!(
                    line,
                    " | {:>w$}",
                    ratio(a, other.and_then(pick)),
                    w = h.len()
                );
            }
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(out)
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// One request as seen by the fake registry.
    struct Req {
        method: String,
        /// Path and query.
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Req {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        fn query(&self, key: &str) -> Option<String> {
            let url = Url::parse(&format!("http://x{}", self.target)).ok()?;
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        }

        fn path(&self) -> &str {
            self.target.split('?').next().unwrap_or("")
        }
    }

    type Reply = (u16, Vec<(&'static str, String)>, Vec<u8>);

    /// A keep-alive HTTP/1.1 server just good enough for reqwest, so the
    /// client's protocol handling can be tested without a real registry
    /// (Distribution 2.8 never paginates tags, for instance).
    async fn serve<H>(handler: H) -> String
    where
        H: Fn(Req) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = vec![0u8; 64 * 1024];
                    loop {
                        let head_end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p;
                            }
                            match sock.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                        buf.drain(..head_end + 4);
                        let mut lines = head.split("\r\n");
                        let mut request_line = lines.next().unwrap_or("").split(' ');
                        let method = request_line.next().unwrap_or("").to_string();
                        let target = request_line.next().unwrap_or("").to_string();
                        let headers: Vec<(String, String)> = lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect();
                        let len = headers
                            .iter()
                            .find(|(k, _)| k == "content-length")
                            .map_or(0, |(_, v)| v.parse().unwrap());
                        while buf.len() < len {
                            match sock.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        }
                        let body = buf.drain(..len).collect();
                        let (status, hdrs, rbody) = handler(Req {
                            method,
                            target,
                            headers,
                            body,
                        });
                        let mut out =
                            format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", rbody.len());
                        for (k, v) in hdrs {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        if sock.write_all(out.as_bytes()).await.is_err()
                            || sock.write_all(&rbody).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn ctx(registry: &str, extra: &[&str]) -> Ctx {
        let mut argv = vec!["wharf-bench", "run", "--registry", registry, "--seed", "9"];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).cmd {
            Cmd::Run(args) => Ctx::new(args).unwrap(),
            Cmd::Table(_) | Cmd::Webhooks(_) => unreachable!(),
        }
    }

    /// Fake upload endpoint that answers each step with a different form of
    /// Location (path-absolute, relative, absolute URL) and checks ranges,
    /// the preserved `_state` query and the final digest.
    fn upload_handler(received: Arc<Mutex<Vec<u8>>>) -> impl Fn(Req) -> Reply {
        move |req: Req| {
            let mut data = received.lock().unwrap();
            let step: usize = req
                .path()
                .strip_prefix("/up/")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            match (req.method.as_str(), req.path()) {
                ("POST", "/v2/r/blobs/uploads/") => {
                    data.clear();
                    (202, vec![("location", "/up/0?_state=s".into())], vec![])
                }
                ("PATCH", _) if req.query("_state").as_deref() == Some("s") => {
                    if let Some(range) = req.header("content-range") {
                        let want = format!("{}-{}", data.len(), data.len() + req.body.len() - 1);
                        if range != want {
                            return (416, vec![], vec![]);
                        }
                    }
                    data.extend_from_slice(&req.body);
                    let next = match step {
                        0 => "1?_state=s".to_string(),
                        1 => format!("http://{}/up/2?_state=s", req.header("host").unwrap()),
                        n => format!("/up/{}?_state=s", n + 1),
                    };
                    (202, vec![("location", next)], vec![])
                }
                ("PUT", _) if req.query("_state").as_deref() == Some("s") => {
                    data.extend_from_slice(&req.body);
                    let digest = sha256_digest(&data);
                    if req.query("digest") != Some(digest.clone()) {
                        return (400, vec![], b"DIGEST_INVALID".to_vec());
                    }
                    (201, vec![("docker-content-digest", digest)], vec![])
                }
                _ => (404, vec![], vec![]),
            }
        }
    }

    #[tokio::test]
    async fn push_modes_follow_every_location_form() {
        let received = Arc::new(Mutex::new(Vec::new()));
        let url = serve(upload_handler(received.clone())).await;
        let ctx = ctx(&url, &["--chunk-kib", "1"]);
        let blob = gen_blobs(1, 1, 1, 4000).remove(0);
        let out = push_blob(&ctx, "r", &blob, Mode::Chunked).await.unwrap();
        // POST + 4 ranged PATCHes (1024 B each, the last one 928 B) + PUT.
        assert_eq!(out.requests, 6);
        assert_eq!(*received.lock().unwrap(), blob.data);
        for mode in [Mode::Streamed, Mode::Monolithic] {
            push_blob(&ctx, "r", &blob, mode).await.unwrap();
            assert_eq!(*received.lock().unwrap(), blob.data, "{mode:?}");
        }
    }

    #[tokio::test]
    async fn non_2xx_is_an_error_with_the_body() {
        let url = serve(|_| (500, vec![], b"boom".to_vec())).await;
        let ctx = ctx(&url, &[]);
        let blob = gen_blobs(1, 1, 1, 10).remove(0);
        let err = push_blob(&ctx, "r", &blob, Mode::Monolithic)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("HTTP 500"), "{err:#}");
        assert!(format!("{err:#}").contains("boom"), "{err:#}");
    }

    #[tokio::test]
    async fn pull_detects_a_wrong_body() {
        let url = serve(|_| (200, vec![], b"not the blob".to_vec())).await;
        let ctx = ctx(&url, &[]);
        let blob = gen_blobs(1, 1, 1, 12).remove(0);
        let r = BlobRef {
            digest: blob.digest.clone(),
            size: 12,
        };
        assert!(pull_blob(&ctx, "r", &r).await.is_err());
        assert_eq!(ctx.mismatches.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn tag_listing_follows_link_pages() {
        let all: Vec<String> = (0..5).map(tag_name).collect();
        let url = serve(move |req| {
            let n: usize = req.query("n").map_or(all.len(), |n| n.parse().unwrap());
            let start = req
                .query("last")
                .map_or(0, |l| all.iter().position(|t| *t == l).unwrap() + 1);
            let page = &all[start..(start + n).min(all.len())];
            let mut headers = vec![];
            if start + n < all.len() {
                let last = page.last().unwrap();
                let link = format!("</v2/r/tags/list?n={n}&last={last}>; rel=\"next\"");
                headers.push(("link", link));
            }
            let body = serde_json::to_vec(&json!({ "name": "r", "tags": page })).unwrap();
            (200, headers, body)
        })
        .await;
        let ctx = ctx(&url, &[]);
        let (tags, requests) = list_tags(&ctx, "r", Some(2)).await.unwrap();
        assert_eq!(tags, (0..5).map(tag_name).collect::<Vec<_>>());
        assert_eq!(requests, 3);
        let (tags, requests) = list_tags(&ctx, "r", None).await.unwrap();
        assert_eq!((tags.len(), requests), (5, 1));
    }

    #[test]
    fn link_parsing() {
        assert_eq!(
            parse_next(r#"</v2/r/tags/list?n=2&last=b>; rel="next""#),
            Some("/v2/r/tags/list?n=2&last=b")
        );
        assert_eq!(parse_next(r#"<a>; rel="prev", <b>; rel=next"#), Some("b"));
        assert_eq!(parse_next(r#"<a>; rel="prev""#), None);
    }

    #[test]
    fn blobs_are_deterministic_and_distinct_per_set() {
        let a = gen_blobs(5, 1, 3, 100);
        let b = gen_blobs(5, 1, 3, 100);
        let c = gen_blobs(5, 2, 3, 100);
        assert_eq!(a[2].data, b[2].data);
        assert_eq!(a[0].digest, sha256_digest(&a[0].data));
        let digests: std::collections::HashSet<_> =
            a.iter().chain(&c).map(|b| b.digest.clone()).collect();
        assert_eq!(digests.len(), 6);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let st = Stats {
            lat_us: (1..=100).map(|i| i * 1000).collect(),
            ..Stats::default()
        };
        assert_eq!(st.pct_ms(0.50), 50.0);
        assert_eq!(st.pct_ms(0.99), 99.0);
        assert_eq!(Stats::default().pct_ms(0.5), 0.0);
    }

    #[test]
    fn scenario_expansion_dedups_in_order() {
        use Scenario::*;
        assert_eq!(
            expand(&[Pull, Push, PushStreamed]),
            vec![Pull, PushMonolithic, PushStreamed, PushChunked]
        );
        assert_eq!(expand(&[All]).len(), 8);
    }

    fn run_args(registry: &str, extra: &[&str]) -> RunArgs {
        let mut argv = vec!["wharf-bench", "run", "--registry", registry, "--seed", "9"];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).cmd {
            Cmd::Run(args) => args,
            Cmd::Table(_) | Cmd::Webhooks(_) => unreachable!(),
        }
    }

    #[tokio::test]
    async fn a_401_without_credentials_says_auth_is_not_supported() {
        let url = serve(|_| {
            (
                401,
                vec![("www-authenticate", "Basic realm=\"r\"".into())],
                vec![],
            )
        })
        .await;
        let err = run(run_args(&url, &[])).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("auth is not supported"),
            "{err:#}"
        );
        // With credentials that are refused, the message says which were sent.
        let err = run(run_args(&url, &["--basic", "u:p"])).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("Basic on every request"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn basic_goes_on_every_request() {
        let received = Arc::new(Mutex::new(Vec::new()));
        let auths = Arc::new(Mutex::new(Vec::new()));
        let (inner, seen) = (upload_handler(received.clone()), auths.clone());
        let url = serve(move |req| {
            seen.lock()
                .unwrap()
                .push(req.header("authorization").map(str::to_string));
            inner(req)
        })
        .await;
        let ctx = ctx(&url, &["--chunk-kib", "1", "--basic", "u:p"]);
        let blob = gen_blobs(1, 1, 1, 4000).remove(0);
        push_blob(&ctx, "r", &blob, Mode::Chunked).await.unwrap();
        let auths = auths.lock().unwrap();
        assert_eq!(auths.len(), 6);
        // base64("u:p")
        assert!(
            auths.iter().all(|a| a.as_deref() == Some("Basic dTpw")),
            "{auths:?}"
        );
    }

    /// A registry with a token server at /token that accepts only the last
    /// token it issued.
    #[derive(Default)]
    struct TokenServer {
        valid: String,
        /// Per token request: its Authorization header and its scopes.
        requests: Vec<(Option<String>, Vec<String>)>,
    }

    async fn token_registry(st: Arc<Mutex<TokenServer>>) -> String {
        serve(move |req| {
            let mut st = st.lock().unwrap();
            if req.path() == "/token" {
                let url = Url::parse(&format!("http://x{}", req.target)).unwrap();
                let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
                assert!(q.contains(&("service".into(), "svc".into())), "{q:?}");
                let scopes = q
                    .into_iter()
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v)
                    .collect();
                st.requests
                    .push((req.header("authorization").map(str::to_string), scopes));
                st.valid = format!("tok{}", st.requests.len());
                let body = serde_json::to_vec(&json!({ "token": st.valid })).unwrap();
                return (200, vec![], body);
            }
            if req.header("authorization") == Some(format!("Bearer {}", st.valid).as_str()) {
                return (200, vec![], vec![]);
            }
            let realm = format!("http://{}/token", req.header("host").unwrap());
            let www = format!("Bearer realm=\"{realm}\",service=\"svc\"");
            (401, vec![("www-authenticate", www)], vec![])
        })
        .await
    }

    #[tokio::test]
    async fn bearer_flow_fetches_one_token_for_all_scopes_and_refreshes_on_401() {
        let st = Arc::new(Mutex::new(TokenServer::default()));
        let url = token_registry(st.clone()).await;
        let ctx = Arc::new(ctx(&url, &["--basic", "u:p", "--bearer-flow"]));
        // Tasks refused at the same moment fetch one token between them.
        let v2 = ctx.url("v2/").unwrap();
        let sends = (0..8).map(|_| {
            let (ctx, v2) = (ctx.clone(), v2.clone());
            async move { ctx.send(ctx.client.get(v2)).await.unwrap().status() }
        });
        for status in futures_util::future::join_all(sends).await {
            assert_eq!(status, 200);
        }
        {
            let st = st.lock().unwrap();
            assert_eq!(st.requests.len(), 1);
            let (auth, scopes) = &st.requests[0];
            assert_eq!(auth.as_deref(), Some("Basic dTpw"));
            let p = "wharf-bench/s0000000000000009";
            for want in [
                format!("repository:{p}/push-monolithic:pull,push"),
                format!("repository:{p}/push-streamed:pull,push"),
                format!("repository:{p}/push-chunked:pull,push"),
                format!("repository:{p}/manifests:metadata_read,pull,push"),
            ] {
                assert!(scopes.contains(&want), "{want} not in {scopes:?}");
            }
        }
        // The token expires: the next request is refused once, then retried.
        st.lock().unwrap().valid = "expired".into();
        let resp = ctx.send(ctx.client.get(v2)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(st.lock().unwrap().requests.len(), 2);
        assert_eq!(ctx.auth.fetched.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn token_scopes_name_the_scenarios_repositories() {
        let c = ctx("http://127.0.0.1:1", &[]);
        let scopes = token_scopes(&c.prefix);
        for repo in [
            pull_repo(&c),
            push_repo(&c.prefix, Mode::Streamed),
            push_repo(&c.prefix, Mode::Chunked),
            manifest_repo(&c),
        ] {
            assert!(
                scopes
                    .iter()
                    .any(|s| s.starts_with(&format!("repository:{repo}:"))),
                "{repo} missing from {scopes:?}"
            );
        }
    }

    #[test]
    fn table_has_a_ratio_per_other_label() {
        let dir = std::env::temp_dir().join(format!("wharf-bench-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("r.jsonl");
        let lines = [("a", 10.0), ("b", 5.0), ("c", 20.0)].map(|(l, x)| {
            json!({"label": l, "scenario": "s", "figure": x, "unit": "ops/s"}).to_string()
        });
        std::fs::write(&f, lines.join("\n")).unwrap();
        let out = render_table(&TableArgs {
            labels: vec!["a".into(), "b".into(), "c".into()],
            files: vec![f],
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut lines = out.lines();
        let header = lines.next().unwrap();
        assert!(header.ends_with("| a/b | a/c"), "{header}");
        let row = lines.nth(1).unwrap();
        assert!(row.ends_with("| 2.00 | 0.50"), "{row}");
    }
}
