//! Configuration: one struct with a doc comment on every field, defaults in code, a TOML file
//! on top, then `WHARF_*` environment variables and flags (applied in `main`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
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
}

/// Where the registry sits in ARM: the names in the management API's paths
/// (`/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/
/// Microsoft.ContainerRegistry/registries/{name}`) and in every resource `id`, the Event Grid
/// `topic` and the CloudEvents `source`.
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
    pub registry_name: Option<String>,
    /// Moved to `registry.login_server`; refused here with a message saying so.
    #[doc(hidden)]
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
            access_token_lifetime: Duration::from_secs(self.access_token_lifetime_secs.max(60)),
            tags_list_needs_metadata_read: self.tags_list_needs_metadata_read,
            management_token: non_empty(&self.management_token),
            max_failed_logins_per_minute: self.max_failed_logins_per_minute.max(1),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

/// `webhooks.allow_loopback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopbackTargets {
    Auto,
    Allow,
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
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
            handshake_timeout_secs: 10,
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
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_tags_per_put: 32,
            upload_expiry_secs: 24 * 3600,
            header_timeout_secs: 30,
            shutdown_grace_secs: 30,
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

    /// Checks the names against ARM's rules; the message names the setting, its flag and its
    /// variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        use wharf_core::arm::ArmIdentityError as E;
        if let Err(e) = self.arm().validate() {
            let (key, flag, var, value) = match e {
                E::Subscription => (
                    "registry.subscription_id",
                    "--subscription-id",
                    "WHARF_SUBSCRIPTION_ID",
                    &self.subscription_id,
                ),
                E::ResourceGroup => (
                    "registry.resource_group",
                    "--resource-group",
                    "WHARF_RESOURCE_GROUP",
                    &self.resource_group,
                ),
                E::Registry => (
                    "registry.name",
                    "--registry-name",
                    "WHARF_REGISTRY_NAME",
                    &self.name,
                ),
            };
            anyhow::bail!("{key} ({flag}, {var}) is {value:?}: {e}");
        }
        let l = &self.login_server;
        if l.contains("://")
            || l.contains('/')
            || l.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            anyhow::bail!(
                "registry.login_server (--login-server, WHARF_LOGIN_SERVER) is {l:?}: must be \
                 host[:port], without a scheme or a path"
            );
        }
        Ok(())
    }
}

impl Config {
    /// Checks what the parsers cannot: the registry's ARM names, and keys that moved.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.auth.registry_name.is_some() {
            anyhow::bail!("auth.registry_name has moved: set registry.name instead");
        }
        if self.auth.login_server.is_some() {
            anyhow::bail!("auth.login_server has moved: set registry.login_server instead");
        }
        self.registry.validate()
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// The parsed free-space floor.
    pub fn free_space_floor(&self) -> anyhow::Result<wharf_store::FreeSpaceFloor> {
        self.limits
            .min_free_space
            .parse()
            .map_err(|e: String| anyhow::anyhow!("limits.min_free_space: {e}"))
    }

    /// The certificate and key files, if TLS is configured; an error if only one is given.
    pub fn tls_files(&self) -> anyhow::Result<Option<wharf_http::tls::CertFiles>> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => Ok(Some(wharf_http::tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!("tls.cert (--tls-cert) is set but tls.key is not"),
            (None, Some(_)) => anyhow::bail!("tls.key (--tls-key) is set but tls.cert is not"),
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
            timeout: Duration::from_secs(w.timeout_secs.max(1)),
            retry: wharf_hooks::retry::RetryPolicy {
                schedule: if w.retry_schedule_secs.is_empty() {
                    vec![0]
                } else {
                    w.retry_schedule_secs.clone()
                },
                jitter: w.retry_jitter.clamp(0.0, 1.0),
            },
            max_concurrency: w.max_concurrency.max(1),
            per_webhook_concurrency: w.per_webhook_concurrency.max(1),
            history_retention: Duration::from_secs(w.history_retention_days * 86400),
            response_body_cap: w.response_body_cap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_matches_the_defaults() {
        let text = include_str!("../../../wharf.example.toml");
        let c: Config = toml::from_str(text).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.data_dir, d.data_dir);
        assert_eq!(c.limits.max_manifest_bytes, d.limits.max_manifest_bytes);
        assert_eq!(
            c.webhooks.retry_schedule_secs,
            d.webhooks.retry_schedule_secs
        );
        assert_eq!(c.webhooks.timeout_secs, 5);
        assert_eq!(c.limits.min_free_space, d.limits.min_free_space);
        assert_eq!(c.auth.enabled, d.auth.enabled);
        assert_eq!(c.registry.name, d.registry.name);
        assert_eq!(c.registry.subscription_id, d.registry.subscription_id);
        assert_eq!(c.registry.resource_group, d.registry.resource_group);
        assert_eq!(c.registry.login_server, d.registry.login_server);
        c.validate().unwrap();
        assert_eq!(
            c.auth.access_token_lifetime_secs,
            d.auth.access_token_lifetime_secs
        );
        assert_eq!(
            c.auth.max_failed_logins_per_minute,
            d.auth.max_failed_logins_per_minute
        );
        assert_eq!(c.webhooks.allow_loopback, d.webhooks.allow_loopback);
        assert_eq!(c.webhooks.allow_networks, d.webhooks.allow_networks);
        assert_eq!(c.tls.cert, None, "plain HTTP unless asked for");
        assert_eq!(c.tls.reload_interval_secs, d.tls.reload_interval_secs);
        assert_eq!(c.tls.handshake_timeout_secs, d.tls.handshake_timeout_secs);
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
