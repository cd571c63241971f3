//! The `wharf` binary: `wharf serve` runs the registry; `wharf webhook …`, `wharf token …`,
//! `wharf scope-map …`, `wharf credential …` and `wharf registry …` manage it through the
//! management API, mirroring `az acr webhook`, `az acr token` and their kin; `wharf repository
//! …` mirrors `az acr repository` over the /acr/v1 data plane; `wharf gc` asks the server for a
//! garbage collection.

mod access;
mod cli;
mod client;
mod debug;
mod gc;
mod output;
mod repository;

use wharf::config;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A self-hosted OCI registry with ACR-compatible webhooks"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (embedded storage, no setup needed).
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(ServeArgs),
    /// Manage webhooks, like `az acr webhook`.
    Webhook(cli::WebhookArgs),
    /// Manage repository-scoped tokens and their passwords, like `az acr token`.
    Token(access::TokenArgs),
    /// Manage scope maps (what tokens may do to which repositories), like `az acr scope-map`.
    ScopeMap(access::ScopeMapArgs),
    /// Show or renew the admin user's passwords, like `az acr credential`.
    Credential(access::CredentialArgs),
    /// Show the registry or turn the admin user and anonymous pull on or off, like
    /// `az acr show` and `az acr update`.
    Registry(access::RegistryArgs),
    /// List, show, lock, untag and delete repositories and images, like `az acr repository`
    /// (over the registry's /acr/v1 data plane).
    Repository(repository::RepositoryArgs),
    /// Run garbage collection on the server now and print its figures.
    ///
    /// Removes blob links that no manifest references and nothing used within [gc]
    /// grace_secs, blob content that no repository links, and abandoned upload sessions;
    /// manifests stay (untagged ones go by the retention policy). The management credential
    /// or the admin user only.
    Gc(gc::GcArgs),
}

/// How variables map to config keys; the defaults are in wharf.example.toml.
const SERVE_AFTER_HELP: &str = "\
Configuration: defaults < the --config file < WHARF_* variables < flags.
Every key of the file has a variable: WHARF_<KEY> for a top-level key (WHARF_LISTEN,
WHARF_LOG_LEVEL), WHARF_<SECTION>_<KEY> for a key in a section (WHARF_WEBHOOKS_TIMEOUT_SECS,
WHARF_AUTH_ACCESS_TOKEN_LIFETIME_SECS, WHARF_TLS_CERT). Values are written as in the file
without quotes: text, integers, numbers, true/false; lists as TOML arrays, e.g.
WHARF_WEBHOOKS_ALLOW_NETWORKS='[\"10.0.0.0/8\"]'. An empty variable counts as unset.
Older names kept: WHARF_LOG (log_level), WHARF_MIN_FREE_SPACE, WHARF_AUTH (auth.enabled),
WHARF_INSECURE_OPEN_REGISTRY (auth.insecure_open), WHARF_MANAGEMENT_TOKEN, WHARF_SECRET_KEY,
WHARF_SUBSCRIPTION_ID, WHARF_RESOURCE_GROUP, WHARF_LOGIN_SERVER (in [registry]).
A bad value, or a WHARF_<SECTION>_ variable naming no key of the section, stops start-up
with a message naming the key and where its value came from.
Garbage collection runs every [gc] interval_secs (default 3600; 0: only on `wharf gc`) and
keeps an unreferenced blob for [gc] grace_secs after its last use (default 86400, at least 1):
WHARF_GC_INTERVAL_SECS, WHARF_GC_GRACE_SECS.";

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long)]
    listen: Option<String>,
    /// Data directory [default: ./wharf-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file (see wharf.example.toml). Every key of it can also be set by a
    /// WHARF_* variable, and every flag overrides both (see below)
    #[arg(long, env = "WHARF_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json [default: text]
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter, e.g. info or wharf_http=debug [default: info]
    #[arg(long)]
    log_level: Option<String>,
    /// Region of this server [default: local]
    #[arg(long)]
    region: Option<String>,
    /// Refuse writes while the data volume has less free space than this: auto (1% of the
    /// volume, at most 256 MiB), bytes, KiB, MiB, GiB or a percentage of the volume, e.g.
    /// 512MiB or 2% (0 turns the floor off) [default: auto]
    #[arg(long)]
    min_free_space: Option<String>,
    /// Where blobs live: data-dir, s3://bucket/prefix (endpoint, region and keys from
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or
    /// azure://container/prefix (from AZURE_STORAGE_CONNECTION_STRING) [default: data-dir]
    #[arg(long, value_name = "URL")]
    blob_store: Option<String>,
    /// Answer a blob GET with a 307 to a URL the bucket signs (20 minutes), so the bytes go
    /// from object storage to the client; needs --blob-store on S3, or on Azure with an
    /// account key [default: off]
    #[arg(long)]
    redirect_downloads: bool,
    /// The metadata database: sqlite (in the data directory) or
    /// postgres://user:password@host:port/database, which several nodes may share (they need
    /// the same --blob-store on object storage and the same auth.secret_key)
    /// [default: sqlite]
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain, leaf first; needs
    /// --tls-key. Reloaded when the file changes or on SIGHUP [default: plain HTTP]
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1; not encrypted)
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The registry's name (5 to 50 letters and digits): the `{registryName}` of the ARM
    /// management paths and ids, and the admin user's name [default: wharf]
    #[arg(long)]
    registry_name: Option<String>,
    /// The subscription id (a GUID) of the ARM management paths and ids
    /// [default: 00000000-0000-0000-0000-000000000000]
    #[arg(long)]
    subscription_id: Option<String>,
    /// The resource group of the ARM management paths and ids [default: wharf]
    #[arg(long)]
    resource_group: Option<String>,
    /// The login server (host[:port]): the registry's loginServer, the token service name and
    /// the audience of issued tokens [default: the host clients address]
    #[arg(long)]
    login_server: Option<String>,
    /// This node's id, the owner of its webhook delivery leases: 1 to 64 letters, digits,
    /// '-', '_' or '.'. Every node sharing a database needs its own; a restart with the same
    /// id takes its leases back at once [default: node-1]
    #[arg(long)]
    node_id: Option<String>,
    /// Turn access control on: the admin user, tokens and scope maps, the token server. The
    /// first start prints the admin password and a management token once [default: off]
    #[arg(long)]
    auth: bool,
    /// Run WITHOUT access control on a non-loopback address: anyone who can reach the
    /// registry can push, delete and read webhook secrets. Without --auth, Wharf refuses to
    /// listen beyond loopback unless this is given
    #[arg(long)]
    insecure_open_registry: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match args.command {
        Command::Serve(s) => rt.block_on(serve(s)),
        Command::Webhook(w) => std::process::exit(rt.block_on(cli::run(w))),
        Command::Token(a) => std::process::exit(rt.block_on(access::token(a))),
        Command::ScopeMap(a) => std::process::exit(rt.block_on(access::scope_map(a))),
        Command::Credential(a) => std::process::exit(rt.block_on(access::credential(a))),
        Command::Registry(a) => std::process::exit(rt.block_on(access::registry(a))),
        Command::Repository(a) => std::process::exit(rt.block_on(repository::run(a))),
        Command::Gc(a) => std::process::exit(rt.block_on(gc::run(a))),
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        let Ok(k) = k.into_string() else { continue };
        match v.into_string() {
            Ok(v) => env.push((k, v)),
            // Not read as something else: refused, by name.
            Err(_) if k.starts_with("WHARF_") => anyhow::bail!("{k} is not valid UTF-8"),
            Err(_) => {}
        }
    }
    let mut cfg = config::Config::load_layered(a.config.as_deref(), env)?;
    // Flags last; each records itself as the source of its key for error messages.
    macro_rules! flag {
        ($v:expr, $key:literal, $flag:literal, $slot:expr) => {
            if let Some(v) = $v {
                $slot = v;
                cfg.set_by($key, $flag);
            }
        };
    }
    flag!(a.listen, "listen", "--listen", cfg.listen);
    flag!(a.data_dir, "data_dir", "--data-dir", cfg.data_dir);
    flag!(a.log_format, "log_format", "--log-format", cfg.log_format);
    flag!(a.log_level, "log_level", "--log-level", cfg.log_level);
    flag!(a.region, "region", "--region", cfg.region);
    flag!(a.node_id, "node.id", "--node-id", cfg.node.id);
    flag!(
        a.min_free_space,
        "limits.min_free_space",
        "--min-free-space",
        cfg.limits.min_free_space
    );
    flag!(
        a.blob_store,
        "storage.blob_store",
        "--blob-store",
        cfg.storage.blob_store
    );
    flag!(
        a.redirect_downloads.then_some(true),
        "storage.redirect_downloads",
        "--redirect-downloads",
        cfg.storage.redirect_downloads
    );
    flag!(
        a.database,
        "storage.database",
        "--database",
        cfg.storage.database
    );
    flag!(
        a.registry_name,
        "registry.name",
        "--registry-name",
        cfg.registry.name
    );
    flag!(
        a.subscription_id,
        "registry.subscription_id",
        "--subscription-id",
        cfg.registry.subscription_id
    );
    flag!(
        a.resource_group,
        "registry.resource_group",
        "--resource-group",
        cfg.registry.resource_group
    );
    flag!(
        a.login_server,
        "registry.login_server",
        "--login-server",
        cfg.registry.login_server
    );
    flag!(
        a.auth.then_some(true),
        "auth.enabled",
        "--auth",
        cfg.auth.enabled
    );
    flag!(
        a.insecure_open_registry.then_some(true),
        "auth.insecure_open",
        "--insecure-open-registry",
        cfg.auth.insecure_open
    );
    flag!(a.tls_cert.map(Some), "tls.cert", "--tls-cert", cfg.tls.cert);
    flag!(a.tls_key.map(Some), "tls.key", "--tls-key", cfg.tls.key);
    // Before the listener is bound: every bad value is a configuration error.
    cfg.validate()?;
    init_logging(&cfg)?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    wharf::run(&cfg, listener, shutdown_signal()).await
}

fn init_logging(cfg: &config::Config) -> anyhow::Result<()> {
    // `validate` has checked both the filter and the format.
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .with_context(|| format!("log_level {:?}", cfg.log_level))?;
    // Colours only on a terminal: escape codes in a log file or a pipe are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cfg.log_format.as_str() {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("log_format must be text or json, not {other:?}"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Regression (issue 9): several flags (`--name` of most subcommands, most of `update`'s)
    /// showed no help. Walks the whole clap tree, so a flag added later without a doc comment
    /// fails here.
    #[test]
    fn every_command_and_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: argument {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{sub_path}: no description"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut cmd = super::Args::command();
        cmd.clone().debug_assert();
        // Building adds what clap generates (--help, --version, the `help` subcommand) and
        // propagates global flags (--server, --output) to every subcommand.
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "wharf", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
        // The walk saw the commands that matter.
        let webhook = cmd.find_subcommand("webhook").expect("the webhook command");
        assert!(webhook.find_subcommand("create").is_some());
        let token = cmd.find_subcommand("token").expect("the token command");
        let credential = token
            .find_subcommand("credential")
            .expect("token credential");
        assert!(credential.find_subcommand("generate").is_some());
        for c in ["scope-map", "credential", "registry", "repository"] {
            assert!(cmd.find_subcommand(c).is_some(), "{c}");
        }
        assert!(cmd.find_subcommand("serve").is_some());
    }

    /// One source of defaults: the `[default: …]` that `wharf serve --help` shows for a flag
    /// is what the configuration defaults to.
    #[test]
    fn serve_help_shows_the_configuration_s_defaults() {
        let defaults = toml::Table::try_from(wharf::config::Config::default()).unwrap();
        let get = |key: &str| -> String {
            let v = match key.split_once('.') {
                Some((s, k)) => &defaults[s][k],
                None => &defaults[key],
            };
            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
        };
        let mut cmd = super::Args::command();
        cmd.build();
        let serve = cmd.find_subcommand("serve").unwrap();
        let mut checked = 0;
        for (flag, key) in [
            ("listen", "listen"),
            ("data_dir", "data_dir"),
            ("log_format", "log_format"),
            ("log_level", "log_level"),
            ("region", "region"),
            ("min_free_space", "limits.min_free_space"),
            ("blob_store", "storage.blob_store"),
            ("database", "storage.database"),
            ("registry_name", "registry.name"),
            ("subscription_id", "registry.subscription_id"),
            ("resource_group", "registry.resource_group"),
            ("node_id", "node.id"),
        ] {
            let arg = serve.get_arguments().find(|a| a.get_id() == flag).unwrap();
            let help = arg.get_help().unwrap().to_string();
            let shown = help
                .rsplit_once("[default: ")
                .and_then(|(_, d)| d.strip_suffix(']'))
                .unwrap_or_else(|| panic!("--{flag} shows no default: {help}"));
            assert_eq!(shown, get(key), "--{flag}");
            checked += 1;
        }
        assert_eq!(checked, 12);
        let after = serve.get_after_help().unwrap().to_string();
        assert!(after.contains("WHARF_<SECTION>_<KEY>"), "{after}");
    }
}
