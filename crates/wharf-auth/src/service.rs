//! The access-control service: who is calling (Basic, Bearer JWT, the management credential,
//! or nobody), what they may do, and the token server's grants.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use wharf_store::IdentityStore;
use wharf_store::identities::TokenRow;
use wharf_store::{Sealer, StoreError};

use crate::jwt::{self, Claims, Keys};
use crate::scope::{RepoAction, ResourceScope, RuleSet, system_scope_map};
use crate::secret;

/// The user name that marks the password as an ACR refresh token (acr-auth.md §4.8).
pub const NULL_GUID: &str = "00000000-0000-0000-0000-000000000000";
/// ACR's subject for anonymous access tokens.
const ANONYMOUS_SUB: &str = "acr_anon_pull";

/// Settings keys in the identity store.
pub(crate) mod keys {
    pub const INITIALIZED: &str = "initialized";
    pub const ADMIN_ENABLED: &str = "admin_enabled";
    pub const ANONYMOUS_PULL: &str = "anonymous_pull";
    pub const ADMIN_PASSWORD: &str = "admin_password";
    pub const ADMIN_PASSWORD2: &str = "admin_password2";
    pub const MANAGEMENT_HASH: &str = "management_hash";
    /// Unix ms of the registry's first `creationDate` read (ARM's registry resource).
    pub const CREATED_AT: &str = "registry_created_at";
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Whether credentials are checked at all (off: the open, loopback-only development mode).
    pub enabled: bool,
    /// Where the registry sits in ARM: its name is also the admin user's name.
    pub arm: wharf_core::ArmIdentity,
    /// The login server (`service`, JWT `aud`); None: the host the client addressed.
    pub login_server: Option<String>,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    /// ACR-faithful: listing tags needs `metadata_read`; false: `pull` also lists tags (many
    /// generic clients never ask for `metadata_read`).
    pub tags_list_needs_metadata_read: bool,
    /// A fixed management credential from the configuration, instead of a generated one.
    pub management_token: Option<String>,
    /// Failed logins one client address may make per minute before it is refused (429).
    pub max_failed_logins_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            arm: wharf_core::ArmIdentity::default(),
            login_server: None,
            access_token_lifetime: Duration::from_secs(1200),
            refresh_token_lifetime: Duration::from_secs(3 * 3600),
            tags_list_needs_metadata_read: true,
            management_token: None,
            max_failed_logins_per_minute: 10,
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    Anonymous,
    Admin,
    Management,
    /// A repository-scoped token with its scope map's rules, resolved when it authenticated.
    Token {
        name: String,
        rules: Arc<RuleSet>,
    },
    /// A bearer access token: only what it carries.
    Bearer(Box<Claims>),
}

impl Principal {
    /// How the access log names the caller (never a credential).
    pub fn identity(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Admin => "admin".into(),
            Principal::Management => "management".into(),
            Principal::Token { name, .. } => format!("token:{name}"),
            Principal::Bearer(c) => match c.kind.as_str() {
                "token" => format!("token:{}", c.sub),
                k => k.to_owned(),
            },
        }
    }
}

/// Credentials as presented, already split from their header.
#[derive(Clone, Copy)]
pub enum Credentials<'a> {
    None,
    Basic { user: &'a str, password: &'a str },
    Bearer(&'a str),
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Any valid credential (`GET /v2/`).
    Authenticated,
    /// An action on a repository.
    Repo(String, RepoAction),
    /// `registry:catalog:*`.
    Catalog,
    /// The management API: the management credential or the admin user.
    Management,
}

impl Need {
    /// The scope a 401 challenge names for this need (None for `GET /v2/`).
    pub fn challenge_scope(&self) -> Option<String> {
        match self {
            Need::Authenticated | Need::Management => None,
            Need::Repo(n, a) => Some(format!("repository:{n}:{a}")),
            Need::Catalog => Some("registry:catalog:*".into()),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or credentials that do not check out: 401 with a challenge.
    Unauthenticated,
    /// Valid credentials without the needed permission: 401 `insufficient_scope`.
    InsufficientScope,
    /// Too many failed logins from this address: 429.
    TooManyAttempts,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("denied")]
    Denied(Denied),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl AuthError {
    /// The data volume is full (or below its floor): the caller answers 507.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, AuthError::Store(StoreError::OutOfSpace))
    }
}

impl From<Denied> for AuthError {
    fn from(d: Denied) -> Self {
        AuthError::Denied(d)
    }
}

/// Printed once, at the first start with access control on.
pub struct InitialCredentials {
    pub admin_user: String,
    pub admin_password: String,
    pub management_token: Option<String>,
}

/// The registry-wide state every check reads, kept in memory and reloaded on every change.
#[derive(Default)]
struct Snapshot {
    admin_enabled: bool,
    anonymous_pull: bool,
    /// Opened (decrypted) admin passwords: `password`, `password2`.
    admin_passwords: [Option<String>; 2],
    management_hash: Option<String>,
}

/// Verified Basic credentials, by a hash of user and password, so argon2 runs once per
/// credential per minute rather than once per request (the registry's hot paths authenticate
/// every request). Cleared whenever an identity changes.
#[derive(Default)]
struct BasicCache {
    map: HashMap<String, (Principal, Instant)>,
    /// Bumped by every reload. A verification caches its answer only if no reload ran since
    /// it read the token: one that read a token just before it was disabled must not put it
    /// back in the cache after the reload cleared it (the token would work for another
    /// minute).
    generation: u64,
}

const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
const BASIC_CACHE_MAX: usize = 10_000;
const LIMITER_MAX: usize = 100_000;

#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn IdentityStore>,
    sealer: Sealer,
    keys: Keys,
    cfg: AuthConfig,
    snapshot: RwLock<Snapshot>,
    /// Held from a reload's read to its replace, so reloads apply in the order they read: an
    /// older read (another node's notification) must not put back an admin password or
    /// setting that a newer reload already replaced.
    reloading: tokio::sync::Mutex<()>,
    cache: Mutex<BasicCache>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// argon2 verifications running at once: each takes 19 MiB and a core for tens of
    /// milliseconds, so a burst of logins (or of guesses) must queue rather than pile up.
    verifying: tokio::sync::Semaphore,
    /// The memory of finished verifications, reused by the next (at most one per slot).
    argon2_memory: Mutex<Vec<Vec<argon2::Block>>>,
}

/// argon2 verifications at once (about the cores of a small machine).
const MAX_VERIFYING: usize = 2;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auth {
    /// Loads the identities. With access control on and nothing set up yet, creates the admin
    /// credentials (and the management credential unless one is configured), enables the
    /// admin user, and returns them for printing once.
    pub async fn open(
        store: Arc<dyn IdentityStore>,
        sealer: Sealer,
        cfg: AuthConfig,
    ) -> Result<(Auth, Option<InitialCredentials>), StoreError> {
        let keys = Keys::new(&sealer.derive_key(b"wharf jwt v1"));
        let mut initial = None;
        if cfg.enabled && store.setting(keys::INITIALIZED).await?.is_none() {
            let p1 = secret::generate_password()?;
            let p2 = secret::generate_password()?;
            let mgmt = match &cfg.management_token {
                Some(_) => None,
                None => Some(secret::generate_management_token()?),
            };
            let sealed1 = sealer.seal(&p1)?;
            let sealed2 = sealer.seal(&p2)?;
            let mut pairs = vec![
                (keys::ADMIN_ENABLED, "true".to_owned()),
                (keys::ADMIN_PASSWORD, sealed1),
                (keys::ADMIN_PASSWORD2, sealed2),
            ];
            if let Some(m) = &mgmt {
                pairs.push((keys::MANAGEMENT_HASH, secret::fast_hash(m)));
            }
            pairs.push((keys::INITIALIZED, "true".to_owned()));
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if store.init_settings(&refs).await? {
                initial = Some(InitialCredentials {
                    admin_user: cfg.arm.registry.clone(),
                    admin_password: p1,
                    management_token: mgmt,
                });
            }
        }
        let auth = Auth {
            inner: Arc::new(Inner {
                store,
                sealer,
                keys,
                cfg,
                snapshot: RwLock::default(),
                reloading: tokio::sync::Mutex::default(),
                cache: Mutex::default(),
                failures: Mutex::default(),
                verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
                argon2_memory: Mutex::default(),
            }),
        };
        auth.reload().await?;
        Ok((auth, initial))
    }

    pub fn enabled(&self) -> bool {
        self.inner.cfg.enabled
    }

    pub fn config(&self) -> &AuthConfig {
        &self.inner.cfg
    }

    pub(crate) fn store(&self) -> &dyn IdentityStore {
        self.inner.store.as_ref()
    }

    pub(crate) fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    /// Reloads the snapshot (and forgets cached logins) each time `changed` fires: another
    /// node changed the identities. The task runs until aborted.
    pub fn follow_changes(
        &self,
        changed: std::sync::Arc<tokio::sync::Notify>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                changed.notified().await;
                if let Err(e) = this.reload().await {
                    tracing::warn!(error = %e, "reloading identities after another node's change failed");
                }
            }
        })
    }

    /// Rebuilds the snapshot after a change and forgets cached logins.
    pub(crate) async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let settings: HashMap<String, String> =
            self.inner.store.all_settings().await?.into_iter().collect();
        let open = |k: &str| -> Result<Option<String>, StoreError> {
            settings
                .get(k)
                .map(|v| self.inner.sealer.open(v))
                .transpose()
        };
        let snap = Snapshot {
            admin_enabled: settings
                .get(keys::ADMIN_ENABLED)
                .is_some_and(|v| v == "true"),
            anonymous_pull: settings
                .get(keys::ANONYMOUS_PULL)
                .is_some_and(|v| v == "true"),
            admin_passwords: [open(keys::ADMIN_PASSWORD)?, open(keys::ADMIN_PASSWORD2)?],
            management_hash: match &self.inner.cfg.management_token {
                Some(t) => Some(secret::fast_hash(t)),
                None => settings.get(keys::MANAGEMENT_HASH).cloned(),
            },
        };
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner()) = snap;
        let mut cache = lock(&self.inner.cache);
        cache.map.clear();
        cache.generation += 1;
        Ok(())
    }

    fn snap(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn anonymous_pull(&self) -> bool {
        self.snap().anonymous_pull
    }

    pub fn admin_enabled(&self) -> bool {
        self.snap().admin_enabled
    }

    /// The login server for a request that addressed `host`.
    pub fn service(&self, host: &str) -> String {
        match &self.inner.cfg.login_server {
            Some(s) => s.clone(),
            None => host.to_ascii_lowercase(),
        }
    }

    // ---- authentication ----------------------------------------------------------------

    /// Who presented these credentials. `None` is anonymous (allowed or not is decided by what
    /// is needed). Bad credentials are never downgraded to anonymous (acr-auth.md §4.10).
    pub async fn authenticate(
        &self,
        creds: Credentials<'_>,
        service: &str,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        if let Some(ip) = client
            && self.limited(ip)
        {
            return Err(Denied::TooManyAttempts.into());
        }
        let who = match creds {
            Credentials::None => Some(Principal::Anonymous),
            Credentials::Basic { user, password } => self.basic(user, password, service).await?,
            Credentials::Bearer(t) => self.bearer(t, service),
        };
        match who {
            Some(p) => Ok(p),
            None => {
                if let Some(ip) = client {
                    self.failed(ip);
                }
                tracing::info!(client = ?client, "authentication failed");
                Err(Denied::Unauthenticated.into())
            }
        }
    }

    async fn basic(
        &self,
        user: &str,
        password: &str,
        service: &str,
    ) -> Result<Option<Principal>, AuthError> {
        if user == NULL_GUID {
            // An ACR refresh token in place of a password.
            return Ok(self.refresh_principal(password, service).await?);
        }
        if user.eq_ignore_ascii_case(&self.inner.cfg.arm.registry) {
            let snap = self.snap();
            let ok = snap.admin_enabled
                && snap
                    .admin_passwords
                    .iter()
                    .flatten()
                    .any(|p| secret::secret_eq(p, password));
            return Ok(ok.then_some(Principal::Admin));
        }
        let key = secret::fast_hash(&format!("{user}\u{0}{password}"));
        if let Some(p) = self.cached(&key) {
            return Ok(Some(p));
        }
        // Queue for a verification slot, then look again: concurrent first requests with the
        // same credential verify it once, the others find it cached.
        let _slot = self
            .inner
            .verifying
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the verifier is shut down".into()))?;
        if let Some(p) = self.cached(&key) {
            return Ok(Some(p));
        }
        let generation = lock(&self.inner.cache).generation;
        let Some(t) = self.inner.store.token(user).await? else {
            return Ok(None);
        };
        if !t.enabled {
            return Ok(None);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let live: Vec<(String, Option<i64>)> = t
            .passwords
            .iter()
            .filter(|p| p.expiry.is_none_or(|e| e > now))
            .map(|p| (p.hash.clone(), p.expiry))
            .collect();
        let pw = password.to_owned();
        let mut memory = lock(&self.inner.argon2_memory).pop().unwrap_or_default();
        // argon2 costs tens of milliseconds of CPU: off the async runtime.
        let (matched, memory) = tokio::task::spawn_blocking(move || {
            let found = live
                .into_iter()
                .find(|(h, _)| secret::verify_password_with(&pw, h, &mut memory))
                .map(|(_, expiry)| expiry);
            (found, memory)
        })
        .await
        .unwrap_or((None, Vec::new()));
        lock(&self.inner.argon2_memory).push(memory);
        let Some(expiry) = matched else {
            return Ok(None);
        };
        let p = self.token_principal(&t).await?;
        // Cached no longer than the password lives.
        let mut until = Instant::now() + BASIC_CACHE_TTL;
        if let Some(e) = expiry {
            let left = Duration::from_millis(u64::try_from(e - now).unwrap_or(0));
            until = until.min(Instant::now() + left);
        }
        let mut cache = lock(&self.inner.cache);
        if cache.generation != generation {
            // An identity changed while this was verified: answer from what was read (the
            // request began before the change), but do not keep it.
            return Ok(Some(p));
        }
        if cache.map.len() >= BASIC_CACHE_MAX {
            cache.map.clear();
        }
        cache.map.insert(key, (p.clone(), until));
        Ok(Some(p))
    }

    fn cached(&self, key: &str) -> Option<Principal> {
        match lock(&self.inner.cache).map.get(key) {
            Some((p, until)) if Instant::now() < *until => Some(p.clone()),
            _ => None,
        }
    }

    async fn token_principal(&self, t: &TokenRow) -> Result<Principal, AuthError> {
        let actions = self.scope_map_actions(&t.scope_map).await?;
        let rules = RuleSet::parse(&actions)
            .map_err(|e| StoreError::Corrupt(format!("scope map {}: {e}", t.scope_map)))?;
        Ok(Principal::Token {
            name: t.name.clone(),
            rules: Arc::new(rules),
        })
    }

    /// The actions of a scope map, system or user-defined (empty if it is gone).
    pub(crate) async fn scope_map_actions(&self, name: &str) -> Result<Vec<String>, StoreError> {
        if let Some((_, _, actions)) = system_scope_map(name) {
            return Ok(actions.iter().map(|a| (*a).to_owned()).collect());
        }
        Ok(self
            .inner
            .store
            .scope_map(name)
            .await?
            .map(|m| m.actions)
            .unwrap_or_default())
    }

    fn bearer(&self, token: &str, service: &str) -> Option<Principal> {
        if token.starts_with("wharfm_") {
            let snap = self.snap();
            let hash = secret::fast_hash(token);
            return snap
                .management_hash
                .as_deref()
                .is_some_and(|h| secret::secret_eq(h, &hash))
                .then_some(Principal::Management);
        }
        let c = self.inner.keys.verify(token)?;
        (c.grant_type == "access_token" && c.aud.eq_ignore_ascii_case(service))
            .then(|| Principal::Bearer(Box::new(c)))
    }

    /// The principal a refresh token stands for, as it is now (a token disabled since, or an
    /// admin user turned off, no longer gets access).
    async fn refresh_principal(
        &self,
        refresh: &str,
        service: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let Some(c) = self.inner.keys.verify(refresh) else {
            return Ok(None);
        };
        if c.grant_type != "refresh_token" || !c.aud.eq_ignore_ascii_case(service) {
            return Ok(None);
        }
        Ok(match c.kind.as_str() {
            "management" => Some(Principal::Management),
            "admin" => self.admin_enabled().then_some(Principal::Admin),
            "token" => match self.inner.store.token(&c.sub).await? {
                Some(t) if t.enabled => self.token_principal(&t).await.ok(),
                _ => None,
            },
            _ => None,
        })
    }

    fn limited(&self, ip: IpAddr) -> bool {
        let max = self.inner.cfg.max_failed_logins_per_minute;
        match lock(&self.inner.failures).get(&ip) {
            Some((n, since)) => *n >= max && since.elapsed() < Duration::from_secs(60),
            None => false,
        }
    }

    fn failed(&self, ip: IpAddr) {
        let mut f = lock(&self.inner.failures);
        if f.len() >= LIMITER_MAX {
            f.retain(|_, (_, since)| since.elapsed() < Duration::from_secs(60));
        }
        let e = f.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= Duration::from_secs(60) {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    // ---- authorization -------------------------------------------------------------------

    /// The Docker actions `p` may take on repository `repo`.
    pub fn allowed(&self, p: &Principal, repo: &str) -> BTreeSet<RepoAction> {
        match p {
            Principal::Admin | Principal::Management => RepoAction::ALL.into_iter().collect(),
            Principal::Token { rules, .. } => rules.allowed(repo),
            Principal::Anonymous => {
                if self.anonymous_pull() {
                    [RepoAction::Pull, RepoAction::MetadataRead].into()
                } else {
                    BTreeSet::new()
                }
            }
            Principal::Bearer(c) => c
                .access
                .iter()
                .filter(|a| a.kind == "repository" && (a.name == repo || a.name == "*"))
                .flat_map(|a| a.actions.iter().filter_map(|s| RepoAction::parse(s)))
                .collect(),
        }
    }

    /// Whether `p` may list the catalog: never a repository-scoped token (acr-auth.md §3.6).
    pub fn catalog_allowed(&self, p: &Principal) -> bool {
        match p {
            Principal::Admin | Principal::Management => true,
            Principal::Token { .. } => false,
            Principal::Anonymous => self.anonymous_pull(),
            Principal::Bearer(c) => c
                .access
                .iter()
                .any(|a| a.kind == "registry" && a.name == "catalog" && !a.actions.is_empty()),
        }
    }

    /// Checks that `p` may do everything in `needs`.
    pub fn check(&self, p: &Principal, needs: &[Need]) -> Result<(), Denied> {
        let anonymous = matches!(p, Principal::Anonymous)
            || matches!(p, Principal::Bearer(c) if c.kind == "anonymous");
        for need in needs {
            let ok = match need {
                // `/v2/` without credentials is how clients learn the challenge.
                Need::Authenticated => !matches!(p, Principal::Anonymous),
                Need::Management => {
                    matches!(p, Principal::Management | Principal::Admin)
                        || matches!(p, Principal::Bearer(c) if c.kind == "admin" || c.kind == "management")
                }
                Need::Catalog => self.catalog_allowed(p),
                Need::Repo(repo, a) => {
                    let allowed = self.allowed(p, repo);
                    allowed.contains(a)
                        || (*a == RepoAction::MetadataRead
                            && !self.inner.cfg.tags_list_needs_metadata_read
                            && allowed.contains(&RepoAction::Pull))
                }
            };
            if !ok {
                return Err(if anonymous {
                    Denied::Unauthenticated
                } else {
                    Denied::InsufficientScope
                });
            }
        }
        Ok(())
    }

    // ---- the token server ------------------------------------------------------------

    /// An access token for `p` granting requested ∩ allowed, per resource; resources with an
    /// empty grant are left out (that is not an error, acr-auth.md §4.2).
    pub fn issue_access(
        &self,
        p: &Principal,
        requested: &[ResourceScope],
        service: &str,
    ) -> Result<(String, i64), AuthError> {
        let mut access: Vec<ResourceScope> = Vec::new();
        for r in requested {
            let granted: Vec<String> = match r.kind.as_str() {
                "repository" => {
                    let allowed = self.allowed(p, &r.name);
                    let mut g: Vec<String> = r
                        .actions
                        .iter()
                        .filter(|a| {
                            RepoAction::parse(a).is_some_and(|a| {
                                allowed.contains(&a)
                                    || (a == RepoAction::MetadataRead
                                        && !self.inner.cfg.tags_list_needs_metadata_read
                                        && allowed.contains(&RepoAction::Pull))
                            })
                        })
                        .cloned()
                        .collect();
                    // `*` asks for everything allowed.
                    if r.actions.iter().any(|a| a == "*") {
                        g.extend(allowed.iter().map(|a| a.as_str().to_owned()));
                    }
                    g.sort();
                    g.dedup();
                    g
                }
                "registry" if r.name == "catalog" && self.catalog_allowed(p) => {
                    vec!["*".to_owned()]
                }
                _ => Vec::new(),
            };
            if granted.is_empty() {
                continue;
            }
            match access
                .iter_mut()
                .find(|a| a.kind == r.kind && a.name == r.name)
            {
                Some(a) => {
                    a.actions.extend(granted);
                    a.actions.sort();
                    a.actions.dedup();
                }
                None => access.push(ResourceScope {
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                    actions: granted,
                }),
            }
        }
        let lifetime = self.inner.cfg.access_token_lifetime;
        self.sign(p, service, "access_token", access, lifetime)
    }

    /// A refresh token for `p` (the exchange and `offline_token` flows).
    pub fn issue_refresh(&self, p: &Principal, service: &str) -> Result<(String, i64), AuthError> {
        let lifetime = self.inner.cfg.refresh_token_lifetime;
        self.sign(p, service, "refresh_token", Vec::new(), lifetime)
    }

    fn sign(
        &self,
        p: &Principal,
        service: &str,
        grant_type: &str,
        access: Vec<ResourceScope>,
        lifetime: Duration,
    ) -> Result<(String, i64), AuthError> {
        let (kind, sub) = match p {
            Principal::Anonymous => ("anonymous".to_owned(), ANONYMOUS_SUB.to_owned()),
            Principal::Admin => ("admin".to_owned(), self.inner.cfg.arm.registry.clone()),
            Principal::Management => ("management".to_owned(), "management".to_owned()),
            Principal::Token { name, .. } => ("token".to_owned(), name.clone()),
            Principal::Bearer(c) => (c.kind.clone(), c.sub.clone()),
        };
        let now = chrono::Utc::now().timestamp();
        let secs = lifetime.as_secs() as i64;
        let jti = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            wharf_store::seal::random_bytes::<12>()?,
        );
        let claims = Claims {
            iss: jwt::ISSUER.into(),
            sub,
            kind,
            aud: service.to_owned(),
            exp: now + secs,
            nbf: now,
            iat: now,
            jti,
            grant_type: grant_type.into(),
            access,
            version: "1.0".into(),
        };
        let t = self.inner.keys.sign(&claims).ok_or_else(|| {
            AuthError::Store(StoreError::Unavailable("signing a token failed".into()))
        })?;
        Ok((t, secs))
    }

    /// `grant_type=refresh_token`: the principal behind a refresh token, as it is now.
    pub async fn from_refresh(
        &self,
        refresh: &str,
        service: &str,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        match self.refresh_principal(refresh, service).await? {
            Some(p) => Ok(p),
            None => {
                if let Some(ip) = client {
                    self.failed(ip);
                }
                Err(Denied::Unauthenticated.into())
            }
        }
    }

    /// `/oauth2/exchange`: the management credential stands in for an Entra token.
    pub fn exchange(
        &self,
        access_token: &str,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        if let Some(ip) = client
            && self.limited(ip)
        {
            return Err(Denied::TooManyAttempts.into());
        }
        match self.bearer(access_token, "") {
            Some(Principal::Management) => Ok(Principal::Management),
            _ => {
                if let Some(ip) = client {
                    self.failed(ip);
                }
                Err(Denied::Unauthenticated.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

    use tokio::sync::Notify;
    use wharf_store::identities::{PasswordRow, ScopeMapRow};

    use super::*;

    /// Identities in memory. With `hold` set, the next `token` or `all_settings` call reads
    /// at once and then waits for `gate` before answering: a read that happened before a
    /// change committed and answers after it.
    #[derive(Debug, Default)]
    struct Held {
        settings: Mutex<HashMap<String, String>>,
        tokens: Mutex<HashMap<String, TokenRow>>,
        hold: AtomicBool,
        reads: AtomicUsize,
        gate: Notify,
    }

    impl Held {
        async fn held<T>(&self, read: T) -> T {
            self.reads.fetch_add(1, SeqCst);
            if self.hold.swap(false, SeqCst) {
                self.gate.notified().await;
            }
            read
        }

        async fn until_reads(&self, n: usize) {
            while self.reads.load(SeqCst) < n {
                tokio::task::yield_now().await;
            }
        }
    }

    #[async_trait::async_trait]
    impl IdentityStore for Held {
        async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
            Ok(lock(&self.settings).get(key).cloned())
        }
        async fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<(), StoreError> {
            let mut s = lock(&self.settings);
            for (k, v) in pairs {
                s.insert((*k).to_owned(), (*v).to_owned());
            }
            Ok(())
        }
        async fn init_settings(&self, pairs: &[(&str, &str)]) -> Result<bool, StoreError> {
            self.set_settings(pairs).await?;
            Ok(true)
        }
        async fn all_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
            let read = lock(&self.settings)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(self.held(read).await)
        }
        async fn scope_maps(&self) -> Result<Vec<ScopeMapRow>, StoreError> {
            Ok(Vec::new())
        }
        async fn scope_map(&self, _: &str) -> Result<Option<ScopeMapRow>, StoreError> {
            Ok(None)
        }
        async fn put_scope_map(&self, _: &ScopeMapRow) -> Result<bool, StoreError> {
            unreachable!("not used here")
        }
        async fn delete_scope_map(&self, _: &str) -> Result<bool, StoreError> {
            unreachable!("not used here")
        }
        async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
            Ok(lock(&self.tokens).values().cloned().collect())
        }
        async fn token(&self, name: &str) -> Result<Option<TokenRow>, StoreError> {
            let read = lock(&self.tokens).get(name).cloned();
            Ok(self.held(read).await)
        }
        async fn put_token(&self, t: &TokenRow) -> Result<bool, StoreError> {
            Ok(lock(&self.tokens)
                .insert(t.name.clone(), t.clone())
                .is_none())
        }
        async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
            Ok(lock(&self.tokens).remove(name).is_some())
        }
    }

    async fn open(store: &Arc<Held>) -> Auth {
        let cfg = AuthConfig {
            enabled: true,
            ..AuthConfig::default()
        };
        let (auth, _) = Auth::open(store.clone(), Sealer::from_master([7; 32]), cfg)
            .await
            .unwrap();
        auth
    }

    /// A login verified while its token was being disabled answers from what it read, but
    /// does not cache it: the next login with the same password is refused at once, not a
    /// minute later.
    #[tokio::test(flavor = "current_thread")]
    async fn a_token_disabled_during_a_login_is_not_cached_as_enabled() {
        let store = Arc::new(Held::default());
        store
            .put_token(&TokenRow {
                name: "ci".into(),
                scope_map: "_repositories_pull".into(),
                enabled: true,
                passwords: vec![PasswordRow {
                    name: "password1".into(),
                    hash: secret::hash_password("hunter22").unwrap(),
                    created_at: 0,
                    expiry: None,
                }],
                created_at: 0,
            })
            .await
            .unwrap();
        let auth = open(&store).await;
        let reads = store.reads.load(SeqCst);
        store.hold.store(true, SeqCst);
        let login = tokio::spawn({
            let auth = auth.clone();
            async move { auth.basic("ci", "hunter22", "svc").await }
        });
        store.until_reads(reads + 1).await;
        // The token is disabled and the change reloads, while the login holds its read.
        lock(&store.tokens).get_mut("ci").unwrap().enabled = false;
        auth.reload().await.unwrap();
        store.gate.notify_one();
        assert!(
            login.await.unwrap().unwrap().is_some(),
            "read before the change"
        );
        assert!(
            auth.basic("ci", "hunter22", "svc").await.unwrap().is_none(),
            "a disabled token must not log in from the cache"
        );
    }

    /// Reloads apply in the order they read: an older read finishing late does not bring back
    /// the admin user a newer reload disabled.
    #[tokio::test(flavor = "current_thread")]
    async fn an_older_reload_never_replaces_a_newer_one() {
        let store = Arc::new(Held::default());
        let auth = open(&store).await;
        assert!(
            auth.snap().admin_enabled,
            "a first start enables the admin user"
        );
        let reads = store.reads.load(SeqCst);
        store.hold.store(true, SeqCst);
        let older = tokio::spawn({
            let auth = auth.clone();
            async move { auth.reload().await }
        });
        store.until_reads(reads + 1).await;
        store
            .set_settings(&[(keys::ADMIN_ENABLED, "false")])
            .await
            .unwrap();
        let newer = tokio::spawn({
            let auth = auth.clone();
            async move { auth.reload().await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        store.gate.notify_one();
        older.await.unwrap().unwrap();
        newer.await.unwrap().unwrap();
        assert!(!auth.snap().admin_enabled, "the admin user stays disabled");
    }
}
