//! Configuration: one struct with a doc comment on every field, defaults in code (the one
//! source of every default), a TOML file on top, then `WHARF_*` environment variables (every
//! key has one: `WHARF_<KEY>` at the top level, `WHARF_<SECTION>_<KEY>` in a section; see
//! [`Config::load_layered`]), then flags (applied in `main`). [`Config::validate`] refuses a
//! bad value naming the key and where it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Directory for the embedded storage (SQLite database, blobs, upload sessions).
    pub data_dir: PathBuf,
    /// Region of this server. Webhooks default to it and fire for events of their region.
    pub region: String,
    /// Log format: "text" or "json".
    pub log_format: String,
    /// Log filter, in `tracing_subscriber`'s EnvFilter syntax (e.g. "info", "wharf=debug").
    pub log_level: String,
    /// Whether a mount request without `from` may find the blob in any repository.
    pub automatic_mount: bool,
    pub limits: Limits,
    pub webhooks: Webhooks,
    pub tls: Tls,
    pub auth: Auth,
    pub registry: Registry,
    pub gc: Gc,
    pub storage: Storage,
    pub node: Node,
    /// Where each key that is not a default came from ("config file …", a variable's name, a
    /// flag), by dotted key ("webhooks.timeout_secs"), for error messages.
    #[serde(skip)]
    pub sources: BTreeMap<String, String>,
}

/// Where the metadata and the blobs live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// The metadata database: "sqlite" (wharf.db in the data directory; one process) or a
    /// PostgreSQL URL, "postgres://user:password@host:port/database", which several nodes
    /// may share (each with its own data directory, the same `auth.secret_key`, its own
    /// `node.id` and, to share blobs, the same object-storage `blob_store`). Never shown in
    /// messages: the URL may hold a password.
    pub database: String,
    /// Most connections this node opens to PostgreSQL (2 to 1000).
    pub database_max_connections: u32,
    /// The blob store: "data-dir" (blobs/ and uploads/ under the data directory),
    /// "s3://bucket/prefix" (endpoint, region and credentials from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or "azure://container/prefix"
    /// (account and key from AZURE_STORAGE_CONNECTION_STRING).
    pub blob_store: String,
    /// Answer blob GETs with a 307 redirect to a URL of the object store, valid for
    /// [`DOWNLOAD_URL_LIFETIME`], as ACR and Distribution do: the bytes go from the bucket to
    /// the client, not through a node. The client must be able to reach the object store's
    /// endpoint. Needs object storage (`blob_store` s3:// or azure://; Azure with the
    /// account key).
    pub redirect_downloads: bool,
    /// MiB of this node's copies of blobs on object storage (`blob-cache/` in the data
    /// directory, emptied at start-up): whole blobs pushed in one request or streamed to a
    /// client are kept, least recently read evicted first, so a pull of a recent push is read
    /// from the node's disk instead of the bucket. Copies are verified against their digest
    /// and never take the free-space floor's room. 0 keeps none; unused on the data directory
    /// and with `redirect_downloads` (blob GETs then read the bucket).
    pub blob_cache_mib: u64,
}

/// How long the URL of a download redirect lasts: long enough for a slow client to start
/// the download (an expired URL fails the pull), short enough that a leaked URL soon stops
/// working. Distribution's default for the same redirect.
pub const DOWNLOAD_URL_LIFETIME: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// The default `storage.blob_cache_mib`: room for the layers of a few recent images.
pub const DEFAULT_BLOB_CACHE_MIB: u64 = 1024;
/// The largest `storage.blob_cache_mib` (16 TiB): past it, a typo rather than a size.
pub const MAX_BLOB_CACHE_MIB: u64 = 16 << 20;

/// `storage.database` for SQLite in the data directory.
pub const SQLITE: &str = "sqlite";

impl Default for Storage {
    fn default() -> Self {
        Storage {
            database: SQLITE.into(),
            database_max_connections: 16,
            blob_store: wharf_store::BlobLocation::default().to_string(),
            redirect_downloads: false,
            blob_cache_mib: DEFAULT_BLOB_CACHE_MIB,
        }
    }
}

/// Where the registry sits in ARM: the names in the management API's paths
/// (`/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/
/// Microsoft.ContainerRegistry/registries/{name}`) and in every resource `id`, the Event Grid
/// `topic` and the CloudEvents `source`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registry {
    /// The registry's name, 5 to 50 letters and digits: also the admin user's name.
    pub name: String,
    /// The subscription id, a GUID.
    pub subscription_id: String,
    /// The resource group: 1 to 90 letters, digits, '-', '_', '.', '(' or ')'.
    pub resource_group: String,
    /// The login server (the registry's `loginServer`, the token service name and the
    /// audience of issued tokens), host[:port]. Empty: the host clients address.
    pub login_server: String,
}

impl Default for Registry {
    fn default() -> Self {
        let d = wharf_core::ArmIdentity::default();
        Registry {
            name: d.registry,
            subscription_id: d.subscription,
            resource_group: d.resource_group,
            login_server: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Check credentials on every request: the admin user, tokens with scope maps, the token
    /// server. Off, Wharf is open to whoever reaches it, so it then answers only requests
    /// addressed to a loopback host and refuses to listen elsewhere (see `insecure_open`).
    pub enabled: bool,
    /// Listen on a non-loopback address with access control off. Anyone who can reach the
    /// registry can then push, delete and read webhook secrets.
    pub insecure_open: bool,
    /// Moved to `registry.name`; refused here with a message saying so.
    #[doc(hidden)]
    #[serde(skip_serializing)]
    pub registry_name: Option<String>,
    /// Moved to `registry.login_server`; refused here with a message saying so.
    #[doc(hidden)]
    #[serde(skip_serializing)]
    pub login_server: Option<String>,
    /// Lifetime of access tokens from the token server, in seconds.
    pub access_token_lifetime_secs: u64,
    /// ACR-faithful tag listing, which needs `metadata_read`; false lets `pull` list tags too
    /// (many generic clients never ask for `metadata_read`).
    pub tags_list_needs_metadata_read: bool,
    /// A fixed management credential (a Bearer token for the management API and
    /// /oauth2/exchange). Empty: one is generated at the first start and printed once.
    pub management_token: String,
    /// The master key for secrets at rest, base64 of 32 bytes. Empty: `wharf.key` in the
    /// data directory, created at the first start.
    pub secret_key: String,
    /// Failed logins one client address may make per minute before it is refused (429).
    pub max_failed_logins_per_minute: u32,
}

impl Default for Auth {
    fn default() -> Self {
        let d = wharf_auth::AuthConfig::default();
        Auth {
            enabled: d.enabled,
            insecure_open: false,
            registry_name: None,
            login_server: None,
            access_token_lifetime_secs: d.access_token_lifetime.as_secs(),
            tags_list_needs_metadata_read: d.tags_list_needs_metadata_read,
            management_token: String::new(),
            secret_key: String::new(),
            max_failed_logins_per_minute: d.max_failed_logins_per_minute,
        }
    }
}

impl Auth {
    pub fn service_config(&self, registry: &Registry) -> wharf_auth::AuthConfig {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        wharf_auth::AuthConfig {
            enabled: self.enabled,
            arm: registry.arm(),
            login_server: non_empty(&registry.login_server),
            access_token_lifetime: Duration::from_secs(self.access_token_lifetime_secs),
            tags_list_needs_metadata_read: self.tags_list_needs_metadata_read,
            management_token: non_empty(&self.management_token),
            max_failed_logins_per_minute: self.max_failed_logins_per_minute,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest manifest accepted, in bytes (larger ones get 413).
    pub max_manifest_bytes: usize,
    /// Most tags one manifest PUT may set (URL tag plus `?tag=`).
    pub max_tags_per_put: usize,
    /// Upload sessions older than this and untouched for as long are deleted (abandoned).
    pub upload_expiry_secs: u64,
    /// How long a client may take to send its request headers.
    pub header_timeout_secs: u64,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Writes are refused (507) while the data volume has less free space than this: "auto"
    /// (1 % of the volume, at most 256 MiB), bytes, "512MiB", "2GiB", or a percentage of the
    /// volume such as "1%"; "0" turns the floor off.
    pub min_free_space: String,
}

/// Online garbage collection of blobs (see docs/ARCHITECTURE.md, "Garbage collection").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gc {
    /// Seconds between scheduled runs in the server; 0 turns the schedule off (`wharf gc`
    /// still runs one on request).
    pub interval_secs: u64,
    /// A blob link no manifest references goes once unused (pushed, mounted, read) for this
    /// many seconds, and content no repository links once written this long ago: the time a
    /// push may take between uploading a blob and pushing the manifest that references it.
    /// At least 1.
    pub grace_secs: u64,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            interval_secs: wharf_registry::gc::DEFAULT_INTERVAL.as_secs(),
            grace_secs: wharf_registry::gc::DEFAULT_GRACE.as_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Webhooks {
    /// User-Agent of deliveries. Receivers that recognise ACR by its agent can be given
    /// "AzureContainerRegistry/1.0".
    pub user_agent: String,
    /// Per-attempt timeout in seconds (ACR: 5).
    pub timeout_secs: u64,
    /// Delay before each attempt, in seconds; its length is the number of attempts.
    pub retry_schedule_secs: Vec<u64>,
    /// Jitter applied to retry delays, as a fraction (0.2 = ±20 %).
    pub retry_jitter: f64,
    /// Deliveries in flight at once, overall.
    pub max_concurrency: usize,
    /// Deliveries in flight at once to one webhook.
    pub per_webhook_concurrency: usize,
    /// How long delivery history is kept, in days.
    pub history_retention_days: u64,
    /// How much of a response body is kept in history, in bytes.
    pub response_body_cap: usize,
    /// Whether webhooks may target loopback addresses (127.0.0.0/8, ::1), which the SSRF
    /// guard blocks otherwise: "auto" allows them only in the open development mode (no
    /// authentication, listening on a loopback address, as `wharf serve` does by default),
    /// "allow" always, "refuse" never.
    pub allow_loopback: LoopbackTargets,
    /// Networks webhooks may reach although the SSRF guard blocks them (private, link-local,
    /// CGNAT, ...), in CIDR notation ("10.0.0.0/8", "fd00::/8") or as single addresses. A
    /// cloud metadata address (169.254.169.254, ...) opens only for an entry naming exactly it.
    pub allow_networks: Vec<String>,
}

/// This server as one node among several sharing a database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Node {
    /// This node's id (1 to 64 letters, digits, '-', '_' or '.'): the owner of the webhook
    /// delivery leases it takes. A restarted node takes its own id's leases back at once, and
    /// leaves other ids' leases until they expire, so two live processes must never share an
    /// id. The default suits a single node: the data directory's lock file already allows
    /// only one process on it.
    pub id: String,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            id: wharf_hooks::DEFAULT_NODE_ID.to_owned(),
        }
    }
}

/// `webhooks.allow_loopback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopbackTargets {
    Auto,
    Allow,
    Refuse,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM file with the server's certificate chain, leaf first. With `key`, the listener
    /// serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN); without both, plain HTTP.
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1; not encrypted).
    pub key: Option<PathBuf>,
    /// How often the two files are checked for changes, in seconds; a change is loaded for
    /// new connections. 0 turns the check off (SIGHUP still reloads).
    pub reload_interval_secs: u64,
    /// How long a client may take to complete the TLS handshake, in seconds.
    pub handshake_timeout_secs: u64,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            reload_interval_secs: 5,
            // The listener's own default: one source.
            handshake_timeout_secs: wharf_http::ServeOptions::default()
                .tls_handshake_timeout
                .as_secs(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".into(),
            data_dir: PathBuf::from("./wharf-data"),
            region: "local".into(),
            log_format: "text".into(),
            log_level: "info".into(),
            automatic_mount: false,
            limits: Limits::default(),
            webhooks: Webhooks::default(),
            tls: Tls::default(),
            auth: Auth::default(),
            registry: Registry::default(),
            gc: Gc::default(),
            storage: Storage::default(),
            node: Node::default(),
            sources: BTreeMap::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        // The registry's and the listener's own defaults: one source.
        let registry = wharf_registry::Limits::default();
        let serve = wharf_http::ServeOptions::default();
        Limits {
            max_manifest_bytes: registry.max_manifest_bytes,
            max_tags_per_put: registry.max_tags_per_put,
            upload_expiry_secs: 24 * 3600,
            header_timeout_secs: serve.header_timeout.as_secs(),
            shutdown_grace_secs: serve.shutdown_grace.as_secs(),
            min_free_space: "auto".into(),
        }
    }
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks::from_hooks(&wharf_hooks::HooksConfig::default())
    }
}

impl Webhooks {
    /// The file settings that give these delivery settings (whole seconds and days).
    pub fn from_hooks(d: &wharf_hooks::HooksConfig) -> Self {
        let d = d.clone();
        Webhooks {
            user_agent: d.user_agent,
            timeout_secs: d.timeout.as_secs(),
            retry_schedule_secs: d.retry.schedule,
            retry_jitter: d.retry.jitter,
            max_concurrency: d.max_concurrency,
            per_webhook_concurrency: d.per_webhook_concurrency,
            history_retention_days: d.history_retention.as_secs() / 86400,
            response_body_cap: d.response_body_cap,
            // The delivery settings' flag is derived from the listener (see `Config::hooks`);
            // the file's default leaves that decision to the server.
            allow_loopback: LoopbackTargets::Auto,
            allow_networks: d.allow_networks.iter().map(|n| n.to_string()).collect(),
        }
    }
}

/// Parses `webhooks.allow_networks` entries: CIDR, or a bare address for that one address.
fn parse_networks(entries: &[String]) -> anyhow::Result<Vec<ipnet::IpNet>> {
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<ipnet::IpNet>()
                .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                // Host bits set ("10.1.2.3/8") mean the network they are in.
                .map(|n| n.trunc())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "webhooks.allow_networks: {e:?} is not a network (like \"10.0.0.0/8\") \
                         or an IP address"
                    )
                })
        })
        .collect()
}

impl Registry {
    /// The ARM identity these settings name.
    pub fn arm(&self) -> wharf_core::ArmIdentity {
        wharf_core::ArmIdentity {
            subscription: self.subscription_id.clone(),
            resource_group: self.resource_group.clone(),
            registry: self.name.clone(),
        }
    }
}

impl Config {
    /// Where `key` (dotted, "webhooks.timeout_secs") got its value: a flag, a variable, the
    /// config file, or the default.
    pub fn source(&self, key: &str) -> &str {
        self.sources.get(key).map_or("the default", String::as_str)
    }

    /// Records that a flag set `key`.
    pub fn set_by(&mut self, key: &str, source: &str) {
        self.sources.insert(key.to_owned(), source.to_owned());
    }

    /// An error naming the key, its value (unless secret) and where the value came from.
    fn bad(&self, key: &str, value: &dyn std::fmt::Debug, why: &str) -> anyhow::Error {
        anyhow::anyhow!("{key} (from {}) is {value:?}: {why}", self.source(key))
    }

    /// Checks what the parsers cannot, before anything starts: ranges, required values, the
    /// registry's ARM names, keys that moved. Nothing is clamped or replaced: a value that
    /// does not fit is refused with its key and where it came from.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.auth.registry_name.is_some() {
            anyhow::bail!("auth.registry_name has moved: set registry.name instead");
        }
        if self.auth.login_server.is_some() {
            anyhow::bail!("auth.login_server has moved: set registry.login_server instead");
        }
        let required = [
            ("listen", &self.listen),
            ("region", &self.region),
            ("log_level", &self.log_level),
            ("webhooks.user_agent", &self.webhooks.user_agent),
        ];
        for (key, v) in required {
            if v.trim().is_empty() {
                return Err(self.bad(key, v, "a value is required"));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(self.bad("data_dir", &self.data_dir, "a value is required"));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(self.bad("log_format", &self.log_format, "must be text or json"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(self.bad("log_level", &self.log_level, &e.to_string()));
        }
        let at_least_one = [
            (
                "limits.max_manifest_bytes",
                self.limits.max_manifest_bytes as u64,
            ),
            (
                "limits.max_tags_per_put",
                self.limits.max_tags_per_put as u64,
            ),
            ("limits.upload_expiry_secs", self.limits.upload_expiry_secs),
            ("gc.grace_secs", self.gc.grace_secs),
            (
                "limits.header_timeout_secs",
                self.limits.header_timeout_secs,
            ),
            (
                "tls.handshake_timeout_secs",
                self.tls.handshake_timeout_secs,
            ),
            ("webhooks.timeout_secs", self.webhooks.timeout_secs),
            (
                "webhooks.max_concurrency",
                self.webhooks.max_concurrency as u64,
            ),
            (
                "webhooks.per_webhook_concurrency",
                self.webhooks.per_webhook_concurrency as u64,
            ),
            (
                "webhooks.history_retention_days",
                self.webhooks.history_retention_days,
            ),
            (
                "auth.max_failed_logins_per_minute",
                u64::from(self.auth.max_failed_logins_per_minute),
            ),
        ];
        for (key, v) in at_least_one {
            if v == 0 {
                return Err(self.bad(key, &v, "must be at least 1"));
            }
        }
        // Beyond these, a duration no longer fits the timers and clocks it feeds.
        let at_most = [
            (
                "limits.upload_expiry_secs",
                self.limits.upload_expiry_secs,
                MAX_SECS,
            ),
            (
                "limits.header_timeout_secs",
                self.limits.header_timeout_secs,
                MAX_SECS,
            ),
            (
                "limits.shutdown_grace_secs",
                self.limits.shutdown_grace_secs,
                MAX_SECS,
            ),
            (
                "tls.handshake_timeout_secs",
                self.tls.handshake_timeout_secs,
                MAX_SECS,
            ),
            (
                "tls.reload_interval_secs",
                self.tls.reload_interval_secs,
                MAX_SECS,
            ),
            (
                "webhooks.timeout_secs",
                self.webhooks.timeout_secs,
                MAX_SECS,
            ),
            (
                "webhooks.history_retention_days",
                self.webhooks.history_retention_days,
                MAX_SECS / 86400,
            ),
            (
                "auth.access_token_lifetime_secs",
                self.auth.access_token_lifetime_secs,
                MAX_SECS,
            ),
            ("gc.interval_secs", self.gc.interval_secs, MAX_SECS),
            ("gc.grace_secs", self.gc.grace_secs, MAX_SECS),
        ];
        for (key, v, max) in at_most {
            if v > max {
                return Err(self.bad(key, &v, &format!("must be at most {max}")));
            }
        }
        if self.auth.access_token_lifetime_secs < 60 {
            return Err(self.bad(
                "auth.access_token_lifetime_secs",
                &self.auth.access_token_lifetime_secs,
                "must be at least 60 (clients need time to use a token)",
            ));
        }
        let w = &self.webhooks;
        if w.retry_schedule_secs.is_empty() {
            return Err(self.bad(
                "webhooks.retry_schedule_secs",
                &w.retry_schedule_secs,
                "needs at least one attempt, e.g. [0]",
            ));
        }
        if let Some(d) = w.retry_schedule_secs.iter().find(|d| **d > MAX_SECS) {
            return Err(self.bad(
                "webhooks.retry_schedule_secs",
                &w.retry_schedule_secs,
                &format!("the delay {d} is more than {MAX_SECS}"),
            ));
        }
        if !(0.0..=1.0).contains(&w.retry_jitter) {
            return Err(self.bad(
                "webhooks.retry_jitter",
                &w.retry_jitter,
                "must be a fraction from 0.0 to 1.0",
            ));
        }
        if let Err(e) = parse_networks(&w.allow_networks) {
            return Err(self.bad("webhooks.allow_networks", &w.allow_networks, &e.to_string()));
        }
        if let Err(e) = self
            .limits
            .min_free_space
            .parse::<wharf_store::FreeSpaceFloor>()
        {
            return Err(self.bad("limits.min_free_space", &self.limits.min_free_space, &e));
        }
        match self.blob_location() {
            Err(e) => return Err(self.bad("storage.blob_store", &self.storage.blob_store, &e)),
            Ok(wharf_store::BlobLocation::DataDir) if self.storage.redirect_downloads => {
                return Err(self.bad(
                    "storage.redirect_downloads",
                    &true,
                    "needs blobs on object storage (storage.blob_store s3:// or azure://): \
                     the data directory has no URL to redirect to",
                ));
            }
            Ok(_) => {}
        }
        if let Err(e) = self.database_url() {
            anyhow::bail!(
                "storage.database (from {}): {e}",
                self.source("storage.database")
            );
        }
        let n = self.storage.database_max_connections;
        if !(2..=1000).contains(&n) {
            return Err(self.bad(
                "storage.database_max_connections",
                &n,
                "must be from 2 to 1000",
            ));
        }
        if self.storage.blob_cache_mib > MAX_BLOB_CACHE_MIB {
            return Err(self.bad(
                "storage.blob_cache_mib",
                &self.storage.blob_cache_mib,
                &format!("must be from 0 to {MAX_BLOB_CACHE_MIB} (16 TiB)"),
            ));
        }
        // Secrets: named, never shown.
        for (key, v) in [
            ("auth.management_token", &self.auth.management_token),
            ("auth.secret_key", &self.auth.secret_key),
        ] {
            if v.chars().any(|c| c.is_control() || c == ' ') {
                anyhow::bail!(
                    "{key} (from {}) contains a space or a control character",
                    self.source(key)
                );
            }
        }
        let id = &self.node.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(self.bad(
                "node.id",
                id,
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        self.validate_registry()?;
        self.tls_files()?;
        Ok(())
    }

    /// The registry's ARM names, checked against ARM's rules.
    fn validate_registry(&self) -> anyhow::Result<()> {
        use wharf_core::arm::ArmIdentityError as E;
        let r = &self.registry;
        if let Err(e) = r.arm().validate() {
            let (key, value) = match e {
                E::Subscription => ("registry.subscription_id", &r.subscription_id),
                E::ResourceGroup => ("registry.resource_group", &r.resource_group),
                E::Registry => ("registry.name", &r.name),
            };
            return Err(self.bad(key, value, &e.to_string()));
        }
        let l = &r.login_server;
        if l.contains("://")
            || l.contains('/')
            || l.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(self.bad(
                "registry.login_server",
                l,
                "must be host[:port], without a scheme or a path",
            ));
        }
        Ok(())
    }

    /// The file alone over the defaults (no variables, no flags).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        Config::load_layered(path, std::iter::empty())
    }

    /// Defaults, then the file at `path`, then the `WHARF_*` configuration variables among
    /// `env` (see [`env_settings`]); every value goes through one deserialization. Flags come
    /// after, in `main`.
    pub fn load_layered(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table = toml::Table::new();
        let mut sources = BTreeMap::new();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            // Parsed as the struct first: toml's own errors point at the line and the key.
            toml::from_str::<Config>(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            table = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            let from = format!("config file {}", path.display());
            for (k, v) in &table {
                match v.as_table() {
                    Some(section) => {
                        for kk in section.keys() {
                            sources.insert(format!("{k}.{kk}"), from.clone());
                        }
                    }
                    None => {
                        sources.insert(k.clone(), from.clone());
                    }
                }
            }
        }
        for s in env_settings(env)? {
            let slot = match s.key.section {
                "" => &mut table,
                section => table
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .context("a section of the config file is not a table")?,
            };
            slot.insert(s.key.name.to_owned(), s.value);
            sources.insert(s.key.dotted(), s.var);
        }
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .context("reading the configuration")?;
        cfg.sources = sources;
        Ok(cfg)
    }

    /// The parsed free-space floor.
    pub fn free_space_floor(&self) -> anyhow::Result<wharf_store::FreeSpaceFloor> {
        self.limits
            .min_free_space
            .parse()
            .map_err(|e: String| anyhow::anyhow!("limits.min_free_space: {e}"))
    }

    /// `storage.database`: None for SQLite, the URL for PostgreSQL. The error never repeats
    /// the value (it may hold a password).
    pub fn database_url(&self) -> Result<Option<String>, String> {
        let d = self.storage.database.trim();
        if d == SQLITE {
            return Ok(None);
        }
        if !(d.starts_with("postgres://") || d.starts_with("postgresql://")) {
            return Err(format!(
                "must be \"{SQLITE}\" or a PostgreSQL URL (postgres://user:password@host:port/database)"
            ));
        }
        Ok(Some(d.to_owned()))
    }

    /// The parsed `storage.blob_store`.
    pub fn blob_location(&self) -> Result<wharf_store::BlobLocation, String> {
        self.storage.blob_store.parse()
    }

    /// The certificate and key files, if TLS is configured; an error if only one is given.
    pub fn tls_files(&self) -> anyhow::Result<Option<wharf_http::tls::CertFiles>> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => Ok(Some(wharf_http::tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!(
                "tls.cert (from {}) is set but tls.key is not: give both or neither",
                self.source("tls.cert")
            ),
            (None, Some(_)) => anyhow::bail!(
                "tls.key (from {}) is set but tls.cert is not: give both or neither",
                self.source("tls.key")
            ),
        }
    }

    /// Whether the server runs in its open development mode: access control off and
    /// listening on loopback (the default `wharf serve`), so only this machine's users can
    /// create webhooks. There, loopback webhook targets are allowed by default: local
    /// receivers are what they test with. Open beyond loopback (`insecure_open`) is not
    /// development mode: anyone reachable could aim webhooks at this machine's services.
    pub fn open_development_mode(&self, listen: std::net::SocketAddr) -> bool {
        !self.auth.enabled && listen.ip().is_loopback()
    }

    /// Delivery settings for a server listening on `listen`.
    pub fn hooks(&self, listen: std::net::SocketAddr) -> anyhow::Result<wharf_hooks::HooksConfig> {
        let w = &self.webhooks;
        let allow_loopback = match w.allow_loopback {
            LoopbackTargets::Auto => self.open_development_mode(listen),
            LoopbackTargets::Allow => true,
            LoopbackTargets::Refuse => false,
        };
        Ok(wharf_hooks::HooksConfig {
            allow_loopback,
            allow_networks: parse_networks(&w.allow_networks)?,
            own_addr: Some(listen),
            region: self.region.clone(),
            user_agent: w.user_agent.clone(),
            // Values `validate` has checked: no clamping here.
            timeout: Duration::from_secs(w.timeout_secs),
            retry: wharf_hooks::retry::RetryPolicy {
                schedule: w.retry_schedule_secs.clone(),
                jitter: w.retry_jitter,
            },
            max_concurrency: w.max_concurrency,
            per_webhook_concurrency: w.per_webhook_concurrency,
            history_retention: Duration::from_secs(w.history_retention_days * 86400),
            response_body_cap: w.response_body_cap,
            node_id: self.node.id.clone(),
        })
    }
}

/// The longest duration in seconds a setting may give: about 100 years, far beyond any use,
/// and well inside what `Duration`, `Instant` and millisecond clocks can add.
const MAX_SECS: u64 = 100 * 365 * 86400;

/// The TOML type of a config key, for reading it from a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    /// A TOML array literal, e.g. `["10.0.0.0/8"]` or `[0, 5, 300]`.
    List,
}

/// One key of the config file: its section ("" at the top level), name and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    kind: Kind,
}

impl Key {
    /// "webhooks.timeout_secs", or "listen" at the top level.
    pub fn dotted(&self) -> String {
        match self.section {
            "" => self.name.to_owned(),
            s => format!("{s}.{}", self.name),
        }
    }

    /// `WHARF_WEBHOOKS_TIMEOUT_SECS`, `WHARF_LISTEN`.
    pub fn variable(&self) -> String {
        format!("WHARF_{}", self.dotted().replace('.', "_")).to_uppercase()
    }

    fn secret(&self) -> bool {
        SECRET_KEYS.contains(&self.dotted().as_str())
    }
}

const fn key(section: &'static str, name: &'static str, kind: Kind) -> Key {
    Key {
        section,
        name,
        kind,
    }
}

/// The sections of the config file.
pub const SECTIONS: &[&str] = &[
    "limits", "webhooks", "tls", "auth", "registry", "gc", "storage", "node",
];

/// Every key of the config file (a test checks this against the struct).
pub const KEYS: &[Key] = &[
    key("", "listen", Kind::Str),
    key("", "data_dir", Kind::Str),
    key("", "region", Kind::Str),
    key("", "log_format", Kind::Str),
    key("", "log_level", Kind::Str),
    key("", "automatic_mount", Kind::Bool),
    key("limits", "max_manifest_bytes", Kind::Int),
    key("limits", "max_tags_per_put", Kind::Int),
    key("limits", "upload_expiry_secs", Kind::Int),
    key("limits", "header_timeout_secs", Kind::Int),
    key("limits", "shutdown_grace_secs", Kind::Int),
    key("limits", "min_free_space", Kind::Str),
    key("webhooks", "user_agent", Kind::Str),
    key("webhooks", "timeout_secs", Kind::Int),
    key("webhooks", "retry_schedule_secs", Kind::List),
    key("webhooks", "retry_jitter", Kind::Float),
    key("webhooks", "max_concurrency", Kind::Int),
    key("webhooks", "per_webhook_concurrency", Kind::Int),
    key("webhooks", "history_retention_days", Kind::Int),
    key("webhooks", "response_body_cap", Kind::Int),
    key("webhooks", "allow_loopback", Kind::Str),
    key("webhooks", "allow_networks", Kind::List),
    key("tls", "cert", Kind::Str),
    key("tls", "key", Kind::Str),
    key("tls", "reload_interval_secs", Kind::Int),
    key("tls", "handshake_timeout_secs", Kind::Int),
    key("auth", "enabled", Kind::Bool),
    key("auth", "insecure_open", Kind::Bool),
    key("auth", "access_token_lifetime_secs", Kind::Int),
    key("auth", "tags_list_needs_metadata_read", Kind::Bool),
    key("auth", "management_token", Kind::Str),
    key("auth", "secret_key", Kind::Str),
    key("auth", "max_failed_logins_per_minute", Kind::Int),
    key("registry", "name", Kind::Str),
    key("registry", "subscription_id", Kind::Str),
    key("registry", "resource_group", Kind::Str),
    key("registry", "login_server", Kind::Str),
    key("gc", "interval_secs", Kind::Int),
    key("gc", "grace_secs", Kind::Int),
    key("storage", "blob_store", Kind::Str),
    key("storage", "redirect_downloads", Kind::Bool),
    key("storage", "blob_cache_mib", Kind::Int),
    key("storage", "database", Kind::Str),
    key("storage", "database_max_connections", Kind::Int),
    key("node", "id", Kind::Str),
];

/// Keys whose values never appear in a message.
const SECRET_KEYS: &[&str] = &[
    "auth.management_token",
    "auth.secret_key",
    "storage.database",
];

/// The variables these keys had before every key had one; they keep their meaning, next to
/// the generic name.
pub const ALIASES: &[(&str, &str)] = &[
    ("WHARF_LOG", "log_level"),
    ("WHARF_MIN_FREE_SPACE", "limits.min_free_space"),
    ("WHARF_AUTH", "auth.enabled"),
    ("WHARF_INSECURE_OPEN_REGISTRY", "auth.insecure_open"),
    ("WHARF_MANAGEMENT_TOKEN", "auth.management_token"),
    ("WHARF_SECRET_KEY", "auth.secret_key"),
    ("WHARF_SUBSCRIPTION_ID", "registry.subscription_id"),
    ("WHARF_RESOURCE_GROUP", "registry.resource_group"),
    ("WHARF_LOGIN_SERVER", "registry.login_server"),
    ("WHARF_DATABASE", "storage.database"),
];

/// A config value read from a variable.
#[derive(Debug)]
pub struct EnvSetting {
    pub var: String,
    pub key: Key,
    pub value: toml::Value,
}

fn find_key(dotted: &str) -> Option<Key> {
    KEYS.iter().copied().find(|k| k.dotted() == dotted)
}

/// Which key a variable sets: `Ok(None)` for a variable that is no configuration (`WHARF_CONFIG`,
/// the CLI's `WHARF_SERVER`, ...), an error for one that names a section but no key of it.
fn resolve(var: &str) -> anyhow::Result<Option<Key>> {
    if let Some((_, dotted)) = ALIASES.iter().find(|(a, _)| *a == var) {
        return Ok(find_key(dotted));
    }
    let Some(rest) = var.strip_prefix("WHARF_") else {
        return Ok(None);
    };
    let rest = rest.to_ascii_lowercase();
    if let Some(k) = KEYS.iter().find(|k| k.section.is_empty() && k.name == rest) {
        return Ok(Some(*k));
    }
    for section in SECTIONS {
        if let Some(name) = rest.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            if let Some(k) = KEYS
                .iter()
                .find(|k| k.section == *section && k.name == name)
            {
                return Ok(Some(*k));
            }
            let known: Vec<String> = KEYS
                .iter()
                .filter(|k| k.section == *section)
                .map(Key::variable)
                .collect();
            anyhow::bail!(
                "{var}: [{section}] has no key {name:?}; its variables are {}",
                known.join(", ")
            );
        }
    }
    Ok(None)
}

/// Reads one variable's text as the key's TOML type.
fn parse_value(var: &str, key: Key, raw: &str) -> anyhow::Result<toml::Value> {
    let shown = |raw: &str| {
        if key.secret() {
            String::from("(a secret, not shown)")
        } else {
            format!("{raw:?}")
        }
    };
    let dotted = key.dotted();
    let t = raw.trim();
    Ok(match key.kind {
        Kind::Str => toml::Value::String(raw.to_owned()),
        Kind::Int => toml::Value::Integer(t.parse().map_err(|_| {
            anyhow::anyhow!("{var} ({dotted}) is {}: must be an integer", shown(raw))
        })?),
        Kind::Float => match t.parse::<f64>() {
            Ok(f) if f.is_finite() => toml::Value::Float(f),
            _ => anyhow::bail!("{var} ({dotted}) is {}: must be a number", shown(raw)),
        },
        Kind::Bool => toml::Value::Boolean(match t.to_ascii_lowercase().as_str() {
            // The words clap accepted for these variables before, so their meaning stays.
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => anyhow::bail!(
                "{var} ({dotted}) is {}: must be true or false (or 1/0, yes/no, on/off)",
                shown(raw)
            ),
        }),
        Kind::List => {
            let parsed = t
                .starts_with('[')
                .then(|| toml::from_str::<toml::Table>(&format!("v = {t}")).ok())
                .flatten()
                .and_then(|mut tb| tb.remove("v"));
            match parsed {
                Some(v @ toml::Value::Array(_)) => v,
                _ => anyhow::bail!(
                    "{var} ({dotted}) is {}: must be a TOML array, e.g. [\"a\", \"b\"] or [0, 5]",
                    shown(raw)
                ),
            }
        }
    })
}

/// The configuration variables among `env`, each read as its key's type and checked against
/// the key's field alone (so a wrong type names the variable). An empty variable counts as
/// unset, as it did when clap read these. Two variables for one key (a name and its alias)
/// are an error rather than a silent choice.
pub fn env_settings(
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Vec<EnvSetting>> {
    let mut out: BTreeMap<String, EnvSetting> = BTreeMap::new();
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (var, raw) in env {
        let Some(key) = resolve(&var)? else {
            continue;
        };
        if raw.is_empty() {
            continue;
        }
        let value = parse_value(&var, key, &raw)?;
        let mut probe = toml::Table::new();
        match key.section {
            "" => {
                probe.insert(key.name.into(), value.clone());
            }
            s => {
                let mut inner = toml::Table::new();
                inner.insert(key.name.into(), value.clone());
                probe.insert(s.into(), toml::Value::Table(inner));
            }
        }
        if let Err(e) = toml::Value::Table(probe).try_into::<Config>() {
            let dotted = key.dotted();
            if key.secret() {
                anyhow::bail!("{var} ({dotted}) is not a valid value");
            }
            anyhow::bail!("{var} ({dotted}) is {raw:?}: {}", e.to_string().trim());
        }
        if let Some(other) = out.get(&key.dotted()) {
            anyhow::bail!(
                "{} and {var} both set {}: set only one",
                other.var,
                key.dotted()
            );
        }
        out.insert(key.dotted(), EnvSetting { var, key, value });
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_matches_the_defaults() {
        // One source of defaults: the example file shows exactly what the code defaults to.
        let text = include_str!("../../../wharf.example.toml");
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        Config::default().validate().unwrap();
        let example: toml::Table = toml::from_str(text).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(example, defaults);
        assert_eq!(c.tls.cert, None, "plain HTTP unless asked for");
    }

    #[test]
    fn tls_needs_both_files() {
        let c: Config = toml::from_str("[tls]\ncert = \"/etc/wharf/cert.pem\"\n").unwrap();
        let e = c.tls_files().unwrap_err().to_string();
        assert!(e.contains("tls.key"), "{e}");
        let c: Config = toml::from_str("[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n").unwrap();
        let f = c.tls_files().unwrap().unwrap();
        assert_eq!(f.cert, PathBuf::from("/c.pem"));
        assert_eq!(f.key, PathBuf::from("/k.pem"));
    }

    #[test]
    fn loopback_targets_follow_the_development_mode_unless_set() {
        let local: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let public: std::net::SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let mut c = Config::default();
        assert!(c.hooks(local).unwrap().allow_loopback);
        assert!(!c.hooks(public).unwrap().allow_loopback);
        c.auth.enabled = true;
        assert!(
            !c.hooks(local).unwrap().allow_loopback,
            "with access control on, webhook managers need not be local users"
        );
        c.webhooks.allow_loopback = LoopbackTargets::Refuse;
        c.auth.enabled = false;
        assert!(!c.hooks(local).unwrap().allow_loopback);
        c.webhooks.allow_loopback = LoopbackTargets::Allow;
        assert!(c.hooks(public).unwrap().allow_loopback);
    }

    #[test]
    fn allow_networks_take_cidrs_and_addresses_and_refuse_the_rest() {
        let mut c = Config::default();
        c.webhooks.allow_networks = vec![
            "10.0.0.0/8".into(),
            "127.0.0.1".into(),
            "fd00::/8".into(),
            "192.168.7.9/16".into(),
        ];
        let nets: Vec<String> = c
            .hooks("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .allow_networks
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "192.168.0.0/16"]
        );
        c.webhooks.allow_networks = vec!["10.0.0.0/33".into()];
        let e = c.hooks("127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("webhooks.allow_networks"), "{e}");
        let t: Result<Config, _> = toml::from_str("[webhooks]\nallow_loopback = \"sometimes\"");
        assert!(t.is_err());
    }

    #[test]
    fn the_registry_identity_is_checked_with_the_setting_named() {
        Config::default().validate().unwrap();
        let c: Config = toml::from_str(
            "[registry]\nname = \"fabrikam\"\nsubscription_id = \"6f1a2b3c-0000-4000-8000-00000000abcd\"\nresource_group = \"rg-prod\"\nlogin_server = \"fabrikam.example:5000\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.registry.arm().registry_id(),
            "/subscriptions/6f1a2b3c-0000-4000-8000-00000000abcd/resourceGroups/rg-prod/providers/Microsoft.ContainerRegistry/registries/fabrikam"
        );
        for (toml, key) in [
            (
                "[registry]\nsubscription_id = \"nope\"",
                "registry.subscription_id",
            ),
            (
                "[registry]\nresource_group = \"a b\"",
                "registry.resource_group",
            ),
            ("[registry]\nname = \"ab\"", "registry.name"),
            (
                "[registry]\nlogin_server = \"https://x\"",
                "registry.login_server",
            ),
            ("[auth]\nregistry_name = \"wharf\"", "registry.name"),
        ] {
            let c: Config = toml::from_str(toml).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(file: Option<&str>, vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let c = Config::load_layered(file.map(|_| path.as_path()), env(vars))?;
        c.validate()?;
        Ok(c)
    }

    fn err(file: Option<&str>, vars: &[(&str, &str)]) -> String {
        format!("{:#}", load(file, vars).unwrap_err())
    }

    #[test]
    fn keys_list_every_field_of_the_struct_and_nothing_else() {
        // The defaults serialized: every key but the optional TLS paths.
        let t = toml::Table::try_from(Config::default()).unwrap();
        let mut from_struct: Vec<String> = Vec::new();
        for (k, v) in &t {
            match v.as_table() {
                Some(s) => from_struct.extend(s.keys().map(|kk| format!("{k}.{kk}"))),
                None => from_struct.push(k.clone()),
            }
        }
        from_struct.extend(["tls.cert".into(), "tls.key".into()]);
        from_struct.sort();
        let mut listed: Vec<String> = KEYS.iter().map(Key::dotted).collect();
        listed.sort();
        assert_eq!(from_struct, listed);
        for k in KEYS {
            let v = if k.section.is_empty() { "" } else { k.section };
            assert!(v.is_empty() || SECTIONS.contains(&v), "{k:?}");
        }
        for (alias, key) in ALIASES {
            assert!(find_key(key).is_some(), "{alias} -> {key}");
        }
    }

    #[test]
    fn every_section_and_the_top_level_take_variables_of_every_type() {
        let c = load(
            None,
            &[
                ("WHARF_LISTEN", "127.0.0.1:7000"),
                ("WHARF_LOG_LEVEL", "debug"),
                ("WHARF_AUTOMATIC_MOUNT", "true"),
                ("WHARF_LIMITS_MAX_MANIFEST_BYTES", "1000"),
                ("WHARF_LIMITS_MIN_FREE_SPACE", "2GiB"),
                ("WHARF_WEBHOOKS_TIMEOUT_SECS", "9"),
                ("WHARF_WEBHOOKS_RETRY_JITTER", "0.5"),
                ("WHARF_WEBHOOKS_RETRY_SCHEDULE_SECS", "[0, 1, 2]"),
                ("WHARF_WEBHOOKS_ALLOW_NETWORKS", "[\"10.0.0.0/8\"]"),
                ("WHARF_WEBHOOKS_ALLOW_LOOPBACK", "refuse"),
                ("WHARF_TLS_RELOAD_INTERVAL_SECS", "0"),
                ("WHARF_AUTH_ACCESS_TOKEN_LIFETIME_SECS", "600"),
                ("WHARF_AUTH_ENABLED", "1"),
                ("WHARF_AUTH_MANAGEMENT_TOKEN", "wharfm_abc"),
                ("WHARF_REGISTRY_NAME", "fabrikam"),
                ("WHARF_REGISTRY_RESOURCE_GROUP", "rg-prod"),
                ("WHARF_NODE_ID", "node-7"),
                // Not configuration: left alone.
                ("WHARF_SERVER", "http://x"),
                ("WHARF_CONFIG", "/nowhere"),
                ("WHARF_BENCH_BASIC", "u:p"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:7000");
        assert_eq!(c.log_level, "debug");
        assert!(c.automatic_mount);
        assert_eq!(c.limits.max_manifest_bytes, 1000);
        assert_eq!(c.limits.min_free_space, "2GiB");
        assert_eq!(c.webhooks.timeout_secs, 9);
        assert_eq!(c.node.id, "node-7");
        assert_eq!(c.webhooks.retry_jitter, 0.5);
        assert_eq!(c.webhooks.retry_schedule_secs, [0, 1, 2]);
        assert_eq!(c.webhooks.allow_networks, ["10.0.0.0/8"]);
        assert_eq!(c.webhooks.allow_loopback, LoopbackTargets::Refuse);
        assert_eq!(c.tls.reload_interval_secs, 0);
        assert_eq!(c.auth.access_token_lifetime_secs, 600);
        assert!(c.auth.enabled);
        assert_eq!(c.auth.management_token, "wharfm_abc");
        assert_eq!(c.registry.name, "fabrikam");
        assert_eq!(c.registry.resource_group, "rg-prod");
        assert_eq!(
            c.source("webhooks.timeout_secs"),
            "WHARF_WEBHOOKS_TIMEOUT_SECS"
        );
        assert_eq!(c.source("region"), "the default");
        // TLS paths, and the older names.
        let c = load(
            None,
            &[
                ("WHARF_TLS_CERT", "/c.pem"),
                ("WHARF_TLS_KEY", "/k.pem"),
                ("WHARF_LOG", "warn"),
                ("WHARF_AUTH", "true"),
                ("WHARF_INSECURE_OPEN_REGISTRY", "false"),
                ("WHARF_MIN_FREE_SPACE", "0"),
                (
                    "WHARF_SUBSCRIPTION_ID",
                    "6f1a2b3c-0000-4000-8000-00000000abcd",
                ),
                ("WHARF_RESOURCE_GROUP", "rg2"),
                ("WHARF_LOGIN_SERVER", "reg.example:5000"),
                ("WHARF_MANAGEMENT_TOKEN", "wharfm_x"),
                ("WHARF_SECRET_KEY", ""),
            ],
        )
        .unwrap();
        assert_eq!(c.tls.cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(c.tls.key, Some(PathBuf::from("/k.pem")));
        assert_eq!(c.log_level, "warn");
        assert!(c.auth.enabled && !c.auth.insecure_open);
        assert_eq!(c.limits.min_free_space, "0");
        assert_eq!(
            c.registry.subscription_id,
            "6f1a2b3c-0000-4000-8000-00000000abcd"
        );
        assert_eq!(c.registry.resource_group, "rg2");
        assert_eq!(c.registry.login_server, "reg.example:5000");
        assert_eq!(c.auth.management_token, "wharfm_x");
        assert_eq!(c.auth.secret_key, "", "an empty variable counts as unset");
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_the_defaults() {
        let file = "region = \"westeurope\"\n[webhooks]\ntimeout_secs = 7\nmax_concurrency = 3\n";
        let c = load(Some(file), &[("WHARF_WEBHOOKS_TIMEOUT_SECS", "11")]).unwrap();
        assert_eq!(c.webhooks.timeout_secs, 11);
        assert_eq!(c.webhooks.max_concurrency, 3, "the file's other keys stay");
        assert_eq!(c.region, "westeurope");
        assert_eq!(
            c.webhooks.per_webhook_concurrency,
            Webhooks::default().per_webhook_concurrency
        );
        assert!(c.source("region").starts_with("config file "));
        assert_eq!(
            c.source("webhooks.timeout_secs"),
            "WHARF_WEBHOOKS_TIMEOUT_SECS"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_variable() {
        for (var, value, want) in [
            ("WHARF_WEBHOOKS_TIMEOUT_SECS", "soon", "must be an integer"),
            (
                "WHARF_WEBHOOKS_TIMEOUT_SECS",
                "-1",
                "WHARF_WEBHOOKS_TIMEOUT_SECS",
            ),
            ("WHARF_WEBHOOKS_RETRY_JITTER", "lots", "must be a number"),
            ("WHARF_AUTH_ENABLED", "maybe", "must be true or false"),
            ("WHARF_AUTH", "maybe", "must be true or false"),
            ("WHARF_WEBHOOKS_ALLOW_NETWORKS", "10.0.0.0/8", "TOML array"),
            (
                "WHARF_WEBHOOKS_RETRY_SCHEDULE_SECS",
                "[\"a\"]",
                "retry_schedule_secs",
            ),
            (
                "WHARF_WEBHOOKS_ALLOW_LOOPBACK",
                "sometimes",
                "allow_loopback",
            ),
            ("WHARF_LIMITS_MAX_TAGS_PER_PUT", "1.5", "must be an integer"),
        ] {
            let e = err(None, &[(var, value)]);
            assert!(e.contains(var), "{var}={value}: {e}");
            assert!(e.contains(want), "{var}={value}: {e}");
        }
    }

    #[test]
    fn an_unknown_key_of_a_known_section_is_refused_with_the_section_s_keys() {
        let e = err(None, &[("WHARF_WEBHOOKS_TIMEOUT", "5")]);
        assert!(e.contains("WHARF_WEBHOOKS_TIMEOUT:"), "{e}");
        assert!(e.contains("WHARF_WEBHOOKS_TIMEOUT_SECS"), "{e}");
        let e = err(None, &[("WHARF_AUTH_REGISTRY_NAME", "x")]);
        assert!(e.contains("WHARF_AUTH_ENABLED"), "{e}");
        let e = err(None, &[("WHARF_TLS_CA", "x")]);
        assert!(e.contains("[tls] has no key"), "{e}");
    }

    #[test]
    fn a_name_and_its_alias_together_are_refused() {
        let e = err(None, &[("WHARF_LOG", "info"), ("WHARF_LOG_LEVEL", "debug")]);
        assert!(e.contains("WHARF_LOG and WHARF_LOG_LEVEL"), "{e}");
    }

    #[test]
    fn secrets_from_variables_never_appear_in_errors() {
        let secret = "s3cr3t-never-shown";
        let e = err(None, &[("WHARF_SECRET_KEY", &format!("{secret}\n"))]);
        assert!(
            e.contains("auth.secret_key") && e.contains("WHARF_SECRET_KEY"),
            "{e}"
        );
        assert!(!e.contains(secret), "{e}");
        let e = err(
            None,
            &[("WHARF_AUTH_MANAGEMENT_TOKEN", &format!("a {secret}"))],
        );
        assert!(e.contains("auth.management_token"), "{e}");
        assert!(!e.contains(secret), "{e}");
    }

    #[test]
    fn bad_values_are_refused_not_clamped_naming_key_and_source() {
        for (file, vars, want) in [
            (
                "",
                &[("WHARF_WEBHOOKS_TIMEOUT_SECS", "0")][..],
                "webhooks.timeout_secs (from WHARF_WEBHOOKS_TIMEOUT_SECS) is 0",
            ),
            (
                "",
                &[("WHARF_NODE_ID", "node a")][..],
                "node.id (from WHARF_NODE_ID) is \"node a\": must be 1 to 64 letters",
            ),
            ("[node]\nid = \"\"\n", &[][..], "node.id (from config file"),
            (
                "[webhooks]\nretry_jitter = 1.5\n",
                &[][..],
                "webhooks.retry_jitter (from config file",
            ),
            (
                "[webhooks]\nretry_schedule_secs = []\n",
                &[][..],
                "webhooks.retry_schedule_secs",
            ),
            (
                "",
                &[("WHARF_WEBHOOKS_MAX_CONCURRENCY", "0")][..],
                "webhooks.max_concurrency",
            ),
            (
                "",
                &[("WHARF_WEBHOOKS_PER_WEBHOOK_CONCURRENCY", "0")][..],
                "webhooks.per_webhook_concurrency",
            ),
            (
                "",
                &[("WHARF_WEBHOOKS_HISTORY_RETENTION_DAYS", "0")][..],
                "webhooks.history_retention_days",
            ),
            (
                "",
                &[("WHARF_AUTH_ACCESS_TOKEN_LIFETIME_SECS", "59")][..],
                "auth.access_token_lifetime_secs",
            ),
            (
                "",
                &[("WHARF_STORAGE_BLOB_CACHE_MIB", "99999999999")][..],
                "storage.blob_cache_mib (from WHARF_STORAGE_BLOB_CACHE_MIB) is 99999999999",
            ),
            (
                "",
                &[("WHARF_AUTH_MAX_FAILED_LOGINS_PER_MINUTE", "0")][..],
                "auth.max_failed_logins_per_minute",
            ),
            (
                "",
                &[("WHARF_LIMITS_HEADER_TIMEOUT_SECS", "0")][..],
                "limits.header_timeout_secs",
            ),
            (
                "",
                &[("WHARF_LIMITS_UPLOAD_EXPIRY_SECS", "99999999999999")][..],
                "must be at most",
            ),
            (
                "",
                &[("WHARF_TLS_HANDSHAKE_TIMEOUT_SECS", "0")][..],
                "tls.handshake_timeout_secs",
            ),
            (
                "",
                &[("WHARF_LIMITS_MIN_FREE_SPACE", "lots")][..],
                "limits.min_free_space (from WHARF_LIMITS_MIN_FREE_SPACE)",
            ),
            (
                "",
                &[("WHARF_WEBHOOKS_ALLOW_NETWORKS", "[\"10.0.0.0/33\"]")][..],
                "webhooks.allow_networks",
            ),
            (
                "",
                &[("WHARF_LOG_FORMAT", "yaml")][..],
                "log_format (from WHARF_LOG_FORMAT)",
            ),
            ("", &[("WHARF_REGION", " ")][..], "region"),
            (
                "",
                &[("WHARF_REGISTRY_NAME", "ab")][..],
                "registry.name (from WHARF_REGISTRY_NAME)",
            ),
            (
                "",
                &[("WHARF_SUBSCRIPTION_ID", "nope")][..],
                "registry.subscription_id (from WHARF_SUBSCRIPTION_ID)",
            ),
            (
                "",
                &[("WHARF_TLS_CERT", "/c.pem")][..],
                "tls.cert (from WHARF_TLS_CERT)",
            ),
        ] {
            let e = err(Some(file), vars);
            assert!(e.contains(want), "{file:?} {vars:?}: {e}");
        }
    }
}
