//! The Wharf server as a library: its configuration and the wiring of store, registry,
//! webhooks and HTTP into one running server. `main` and the integration tests both start
//! servers through [`start`] (and [`run`]), so the tests exercise the wiring that ships.
//!
//! It owns start-up and shutdown order only; the behaviour lives in the crates it wires. It
//! must not reach into the store's tables or name axum routes of its own.

pub mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Config;

/// A running server: its address, its store (for tests and tools that inspect it) and the
/// handles needed to stop it gracefully.
pub struct Server {
    addr: SocketAddr,
    store: wharf_store::Store,
    hooks: wharf_hooks::Hooks,
    stop: Option<oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    dispatcher: tokio::task::JoinHandle<()>,
    expirer: tokio::task::JoinHandle<()>,
    /// Applies the retention policy for untagged manifests every [`RETENTION_INTERVAL`].
    retention: tokio::task::JoinHandle<()>,
    /// Runs garbage collection every `gc.interval_secs` (None when that is 0).
    collector: Option<tokio::task::JoinHandle<()>>,
    registry: wharf_registry::Registry,
    clock: std::sync::Arc<dyn wharf_registry::Clock>,
    /// Reloads the TLS certificate when its files change (or on SIGHUP); None without TLS.
    tls_reloader: Option<tokio::task::JoinHandle<()>>,
    /// Reloads access control's identities when another node changed them (a shared
    /// database); None on SQLite.
    identity_follower: Option<tokio::task::JoinHandle<()>>,
    delivery_timeout: Duration,
    /// The credentials a first start with access control on created (shown once by `run`).
    initial_credentials: Option<wharf_auth::InitialCredentials>,
}

/// Opens the data directory, starts the webhook dispatcher and the upload expirer, and
/// serves on `listener` (HTTPS if `cfg.tls` names a certificate) until [`Server::stop`].
pub async fn start(cfg: &Config, listener: TcpListener) -> anyhow::Result<Server> {
    start_with_clock(
        cfg,
        listener,
        std::sync::Arc::new(wharf_registry::SystemClock),
    )
    .await
}

/// How often the retention policy runs (ACR runs it in the background too; a manifest may
/// outlive its retention by up to this long).
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// [`start`] with the clock the retention policy reads (tests inject one).
pub async fn start_with_clock(
    cfg: &Config,
    listener: TcpListener,
    clock: std::sync::Arc<dyn wharf_registry::Clock>,
) -> anyhow::Result<Server> {
    cfg.validate()?;
    let floor = cfg.free_space_floor()?;
    let blob_store = cfg
        .blob_location()
        .map_err(|e| anyhow::anyhow!("storage.blob_store: {e}"))?;
    let database = cfg
        .database_url()
        .map_err(|e| anyhow::anyhow!("storage.database: {e}"))?;
    // Before the data directory is touched: a bad certificate is a configuration error.
    let tls = match cfg.tls_files()? {
        Some(files) => Some(wharf_http::tls::CertResolver::load(files)?),
        None => None,
    };
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let open_to_network = !cfg.auth.enabled && !addr.ip().is_loopback();
    if open_to_network && !cfg.auth.insecure_open {
        anyhow::bail!(
            "refusing to listen on {addr} with access control off: anyone who can reach it could \
             push, delete and read webhook secrets. Turn access control on with --auth (or \
             [auth] enabled = true), or pass --insecure-open-registry to run open anyway"
        );
    }
    // Settings are checked before anything is opened.
    let hooks_cfg = cfg.hooks(addr)?;
    if hooks_cfg.allow_loopback {
        tracing::info!("webhooks may target loopback addresses (webhooks.allow_loopback)");
    }
    let store = wharf_store::Store::open(
        &cfg.data_dir,
        &wharf_store::StoreOptions {
            region: cfg.region.clone(),
            floor,
            secret_key: (!cfg.auth.secret_key.is_empty()).then(|| cfg.auth.secret_key.clone()),
            registry_id: cfg.registry.arm().registry_id(),
            source_addr: addr.to_string(),
            blob_store: blob_store.clone(),
            database,
            database_max_connections: cfg.storage.database_max_connections,
            // Redirected GETs read the bucket, never a node's copies: none are kept.
            blob_cache: if cfg.storage.redirect_downloads {
                0
            } else {
                cfg.storage.blob_cache_mib << 20
            },
        },
    )
    .await
    .map_err(|e| match e {
        // The blob store's own settings are wrong (a missing variable, a bad endpoint):
        // named by its key. The messages name variables, never their values.
        wharf_store::StoreError::Config(m) | wharf_store::StoreError::Backend(m) => {
            anyhow::anyhow!("storage.blob_store ({blob_store}): {m}")
        }
        // Names the key; never the URL, which may hold a password.
        wharf_store::StoreError::Database(m) => anyhow::anyhow!("{m}"),
        e => anyhow::Error::new(e),
    })
    .with_context(|| format!("opening data directory {}", cfg.data_dir.display()))?;
    let (auth, initial) = wharf_auth::Auth::open(
        store.identity_store(),
        store.sealer(),
        cfg.auth.service_config(&cfg.registry),
    )
    .await
    .context("loading identities")?;
    let identity_follower = store.identities_changed().map(|c| auth.follow_changes(c));
    if !cfg.auth.enabled {
        if open_to_network {
            tracing::warn!(%addr, "access control is OFF and the registry listens beyond loopback: anyone who can reach it can push, delete and read webhook secrets");
        } else {
            tracing::info!(
                "access control is off: open to requests addressed to this machine's loopback only (turn it on with --auth)"
            );
        }
    }
    let registry = wharf_registry::Registry::new(
        store.registry_store(),
        wharf_registry::Limits {
            max_manifest_bytes: cfg.limits.max_manifest_bytes,
            max_tags_per_put: cfg.limits.max_tags_per_put,
        },
    )
    // `validate` bounds both durations.
    .with_gc(
        clock.clone(),
        Duration::from_secs(cfg.gc.grace_secs),
        Duration::from_secs(cfg.limits.upload_expiry_secs),
    );
    // `validate` refused redirects without object storage.
    let registry = if cfg.storage.redirect_downloads {
        registry.with_download_redirects(config::DOWNLOAD_URL_LIFETIME)
    } else {
        registry
    };
    // Before anything can write: the outbox asks the webhook service who wants each event.
    let hooks = wharf_hooks::Hooks::new(store.hook_store(), hooks_cfg)
        .await
        .context("starting the webhook service")?;
    let dispatcher = hooks.start();

    // `validate` bounds the setting well inside i64 milliseconds.
    let expiry_ms = i64::try_from(cfg.limits.upload_expiry_secs.saturating_mul(1000))
        .context("limits.upload_expiry_secs is too large")?;
    let reg2 = registry.clone();
    // How soon a pass that failed or met a busy session is tried again.
    const EXPIRY_RETRY: Duration = Duration::from_secs(5);
    let expirer = tokio::spawn(async move {
        loop {
            // A pass that failed (storage or database briefly unavailable) is tried again
            // soon, not after the full interval.
            let next = match reg2.expire_uploads(expiry_ms).await {
                Ok(done) => {
                    if done.expired > 0 {
                        tracing::info!(count = done.expired, "expired abandoned upload sessions");
                    }
                    // A stale session a request held is looked at again soon: waiting the
                    // full interval would leave it (and its bytes) for ten more minutes.
                    if done.busy > 0 {
                        EXPIRY_RETRY
                    } else {
                        Duration::from_secs(600)
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiring upload sessions failed; retrying in 5 s");
                    EXPIRY_RETRY
                }
            };
            tokio::time::sleep(next).await;
        }
    });

    let (reg3, clock2) = (registry.clone(), clock.clone());
    let retention = tokio::spawn(async move {
        loop {
            run_retention(&reg3, clock2.as_ref()).await;
            tokio::time::sleep(RETENTION_INTERVAL).await;
        }
    });

    let collector = (cfg.gc.interval_secs > 0).then(|| {
        let (reg4, every) = (registry.clone(), Duration::from_secs(cfg.gc.interval_secs));
        tokio::spawn(async move {
            loop {
                // The first run one interval after start-up, not during it.
                tokio::time::sleep(every).await;
                // Logged inside, failure included; the next run tries again.
                let _ = run_gc(&reg4, false).await;
            }
        })
    });

    let app = wharf_http::router(wharf_http::AppState::new(wharf_http::AppParts {
        registry: registry.clone(),
        hooks: hooks.clone(),
        auth,
        automatic_mount: cfg.automatic_mount,
        open_to_network,
    }));
    let tls_reloader = match &tls {
        Some(resolver) => Some(spawn_tls_reloader(
            resolver.clone(),
            Duration::from_secs(cfg.tls.reload_interval_secs),
        )?),
        None => None,
    };
    let opts = wharf_http::ServeOptions {
        header_timeout: Duration::from_secs(cfg.limits.header_timeout_secs),
        shutdown_grace: Duration::from_secs(cfg.limits.shutdown_grace_secs),
        tls: match tls {
            Some(resolver) => Some(wharf_http::tls::server_config(resolver)?),
            None => None,
        },
        tls_handshake_timeout: Duration::from_secs(cfg.tls.handshake_timeout_secs),
    };
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(wharf_http::serve(listener, app, opts, async {
        let _ = stopped.await;
    }));
    tracing::info!(%addr, scheme, data_dir = %cfg.data_dir.display(), "wharf listening");
    Ok(Server {
        addr,
        store,
        hooks,
        stop: Some(stop),
        serving,
        dispatcher,
        expirer,
        retention,
        collector,
        registry,
        clock,
        tls_reloader,
        identity_follower,
        delivery_timeout: Duration::from_secs(cfg.webhooks.timeout_secs),
        initial_credentials: initial,
    })
}

/// One retention pass; failures are logged (the next pass tries again).
async fn run_retention(
    registry: &wharf_registry::Registry,
    clock: &dyn wharf_registry::Clock,
) -> usize {
    match registry.apply_retention(clock.now_ms()).await {
        Ok(d) => {
            if !d.is_empty() {
                tracing::info!(
                    count = d.len(),
                    "retention policy deleted untagged manifests"
                );
            }
            d.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "retention pass failed");
            0
        }
    }
}

/// One garbage collection (the registry logs its figures at info); a failure is logged at
/// warn, and the next run tries again.
async fn run_gc(
    registry: &wharf_registry::Registry,
    dry_run: bool,
) -> anyhow::Result<wharf_registry::GcReport> {
    registry.collect_garbage(dry_run).await.map_err(|e| {
        tracing::warn!(error = %e, "garbage collection failed");
        e.into()
    })
}

/// Starts the task that keeps the served certificate in step with its files: checked every
/// `interval` (zero: never) and on SIGHUP. A pair that does not load is logged and the
/// previous certificate stays in use.
fn spawn_tls_reloader(
    resolver: std::sync::Arc<wharf_http::tls::CertResolver>,
    interval: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Registered now, not inside the task: SIGHUP's default action ends the process, so a
    // reload asked for right after start-up must find the handler in place.
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    #[cfg(unix)]
    let mut hangup_open = true;
    Ok(tokio::spawn(async move {
        loop {
            let tick = async {
                if interval.is_zero() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(interval).await;
            };
            #[cfg(unix)]
            let forced = tokio::select! {
                _ = tick => false,
                got = hangup.recv(), if hangup_open => {
                    if got.is_none() {
                        // The signal driver is gone; polling it again would spin.
                        hangup_open = false;
                        continue;
                    }
                    true
                }
            };
            #[cfg(not(unix))]
            let forced = {
                tick.await;
                false
            };
            let r = resolver.clone();
            // File reads and PEM parsing: off the async workers.
            let outcome = tokio::task::spawn_blocking(move || {
                if forced {
                    r.reload().map(|()| true)
                } else {
                    r.reload_if_changed()
                }
            })
            .await;
            let cert = resolver.files().cert.display();
            match outcome {
                Ok(Ok(true)) => tracing::info!(%cert, "TLS certificate reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(
                    error = %e,
                    "TLS certificate not reloaded; still serving the previous one"
                ),
                Err(e) => tracing::warn!(error = %e, "TLS certificate reload failed"),
            }
        }
    }))
}

/// The credentials created at the first start with access control on, printed once on
/// standard output (never to the log, which may be collected and kept).
fn print_initial_credentials(c: &wharf_auth::InitialCredentials) {
    let mut out = format!(
        "\n==> Access control is on. These credentials are shown once; store them now.\n\
         admin user:      {}\n\
         admin password:  {}\n",
        c.admin_user, c.admin_password
    );
    if let Some(m) = &c.management_token {
        out.push_str(&format!("management token: {m}\n"));
    }
    out.push_str(
        "(`wharf credential show` lists the admin passwords again with the management token.)\n\n",
    );
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// Serves until `shutdown` completes, then stops gracefully: what `wharf serve` runs.
pub async fn run(
    cfg: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut server = start(cfg, listener).await?;
    if let Some(c) = server.take_initial_credentials() {
        print_initial_credentials(&c);
    }
    shutdown.await;
    server.stop().await
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin password and management token a first start with access control on created,
    /// once: `run` (what `wharf serve` runs) prints them on standard output; an embedding
    /// program or a test decides for itself.
    pub fn take_initial_credentials(&mut self) -> Option<wharf_auth::InitialCredentials> {
        self.initial_credentials.take()
    }

    pub fn store(&self) -> &wharf_store::Store {
        &self.store
    }

    /// Runs one pass of the retention policy now, at the server's clock, as the periodic task
    /// does. Returns how many manifests it deleted.
    pub async fn run_retention(&self) -> usize {
        run_retention(&self.registry, self.clock.as_ref()).await
    }

    /// Runs one garbage collection now, as the scheduled task does (and `wharf gc` asks).
    pub async fn run_gc(&self, dry_run: bool) -> anyhow::Result<wharf_registry::GcReport> {
        run_gc(&self.registry, dry_run).await
    }

    /// Stops the way SIGTERM does: no new connections, in-flight requests finish (within
    /// the grace period), in-flight deliveries finish and are recorded, the database closes.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let served = (&mut self.serving).await;
        tracing::info!("shutting down: finishing in-flight deliveries");
        // Aborted tasks are awaited so that their clones of the store are dropped before this
        // returns: the store's lock on the data directory lasts as long as any clone does, and
        // a restart in the same process must find it free.
        self.expirer.abort();
        let _ = (&mut self.expirer).await;
        self.retention.abort();
        let _ = (&mut self.retention).await;
        if let Some(c) = self.collector.take() {
            c.abort();
            let _ = c.await;
        }
        if let Some(r) = self.tls_reloader.take() {
            r.abort();
            let _ = r.await;
        }
        if let Some(f) = self.identity_follower.take() {
            f.abort();
            let _ = f.await;
        }
        self.hooks.shutdown();
        let _ = tokio::time::timeout(
            self.delivery_timeout + Duration::from_secs(5),
            &mut self.dispatcher,
        )
        .await;
        self.store.close().await;
        tracing::info!("stopped");
        served.context("the HTTP server task failed")??;
        Ok(())
    }
}
