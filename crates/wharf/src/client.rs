//! What every management command shares: the global flags (server, registry name,
//! credentials, output format), the HTTP client that talks to Wharf's management API, and the
//! output helpers.
//!
//! Output is written through [`finish`], never `println!`, which panics when stdout is closed
//! (`wharf webhook list | head -1`) or full. Every answer must come from Wharf's management
//! API (it carries the `wharf-api` header, refusals of the auth layer included), so a
//! `--server` that points elsewhere is a clear error rather than garbage on stdout.
//!
//! Secrets: the credentials given here are only ever put in the `Authorization` header (marked
//! sensitive, so no debug output shows them); no message quotes them. Conn deliberately has no
//! `Debug`, and the environment values of the secret flags are hidden from `--help`.

use std::io::{self, Write};
use std::time::Duration;

use clap::Args;
use serde_json::Value;

/// The flags every management command takes, wherever they appear on the command line (listed
/// apart in `--help`, as az lists its global arguments).
#[derive(Args)]
#[command(next_help_heading = "Global Options")]
pub struct Conn {
    /// Wharf server to talk to.
    #[arg(
        long,
        global = true,
        env = "WHARF_SERVER",
        default_value = "http://127.0.0.1:5000"
    )]
    pub server: String,
    /// Name of the registry. Wharf serves one: when given, it must be the server's, or the
    /// command stops with an error naming both.
    #[arg(
        long,
        short = 'r',
        visible_alias = "registry-name",
        global = true,
        env = "WHARF_REGISTRY_NAME"
    )]
    pub registry: Option<String>,
    /// Name of the resource group. When given, it must be the one the server's registry is
    /// in, or the command stops with an error naming both.
    #[arg(long, short = 'g', global = true, env = "WHARF_RESOURCE_GROUP")]
    pub resource_group: Option<String>,
    /// ID of the subscription (az's --subscription). When given, it must be the one the
    /// server's registry is in, or the command stops with an error naming both.
    #[arg(long, global = true, env = "WHARF_SUBSCRIPTION_ID")]
    pub subscription: Option<String>,
    /// The management token (printed by the server at its first start with access control
    /// on), sent as `Authorization: Bearer`. Used in preference to --username/--password.
    /// Prefer the environment variable: a command line is visible to other local users.
    #[arg(
        long,
        visible_alias = "management-token",
        global = true,
        env = "WHARF_MANAGEMENT_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// User name for Basic authentication: the admin user, whose name is the registry's (or,
    /// for `wharf repository`, a token).
    #[arg(long, short = 'u', global = true, env = "WHARF_USERNAME")]
    pub username: Option<String>,
    /// Password for --username. Prefer the environment variable: a command line is visible to
    /// other local users.
    #[arg(
        long,
        short = 'p',
        global = true,
        env = "WHARF_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// PEM file of CA certificates to trust for an https --server, besides the built-in
    /// public roots (a private CA's ca.crt)
    #[arg(long, global = true, env = "WHARF_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Output format: json, jsonc (coloured on a terminal), yaml, yamlc (coloured on a
    /// terminal), table, tsv (values only, tab-separated, one line per item) or none.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "json")]
    pub output: Output,
    /// JMESPath query applied to the result before it is printed, e.g. "[].name" or
    /// "[?status=='enabled'].{name: name, scope: scope}". See https://jmespath.org.
    #[arg(long, global = true, value_parser = crate::output::parse_query)]
    pub query: Option<String>,
    /// Only show errors, suppressing warnings.
    #[arg(long, global = true)]
    pub only_show_errors: bool,
    /// Print each request and response on stderr (credentials, passwords, tokens, webhook
    /// URIs and header values are redacted).
    #[arg(long, global = true)]
    pub debug: bool,
}

pub use crate::output::Output;

/// The options that shape what this process prints, set once from the command line: the one
/// command a process runs is the only user, and passing them down would touch every helper.
struct Globals {
    query: Option<String>,
    only_show_errors: bool,
}

static GLOBALS: std::sync::OnceLock<Globals> = std::sync::OnceLock::new();

fn set_globals(conn: &Conn) {
    let _ = GLOBALS.set(Globals {
        query: conn.query.clone(),
        only_show_errors: conn.only_show_errors,
    });
}

/// How requests authenticate.
enum Credentials {
    None,
    Bearer(String),
    Basic(String, String),
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    /// The registry's name as given (-r), to check against the server's.
    wanted: Option<String>,
    /// The resource group as given (-g), to check against the server's.
    wanted_group: Option<String>,
    /// The subscription as given (--subscription), to check against the server's.
    wanted_subscription: Option<String>,
    /// The registry's ARM identity, as the server names it (see [`Client::connect`]).
    arm: Arm,
    creds: Credentials,
    debug: bool,
}

/// Where the server's registry sits in ARM.
#[derive(Default)]
struct Arm {
    id: String,
    name: String,
    /// The registry's `location` (the server's region).
    location: String,
}

/// The api-version of `GET /subscriptions` (Microsoft.Resources).
const SUBSCRIPTIONS_API_VERSION: &str = "2022-12-01";

/// The management API version this CLI speaks, as the server states it in `wharf-api`.
const API_VERSION: &str = "v1";

/// The certificates of a `--ca-cert` file, for a server whose certificate a private CA issued.
fn ca_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the CA certificate file {}: {e}",
            path.display()
        )
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found", path.display()));
    }
    Ok(certs)
}

/// How to authenticate, for the message of a 401 without credentials.
const AUTH_HINT: &str = "give the management token with --token (or WHARF_MANAGEMENT_TOKEN), \
    or the admin user with --username and --password (or WHARF_USERNAME and WHARF_PASSWORD)";

impl Client {
    pub fn new(conn: &Conn) -> Result<Self, String> {
        set_globals(conn);
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let creds = match (
            non_empty(&conn.token),
            non_empty(&conn.username),
            conn.password.clone(),
        ) {
            (Some(t), _, _) => {
                // It goes into a header as it is; reqwest would refuse it only at send time,
                // with a bare "builder error".
                if t.chars().any(char::is_control) {
                    return Err("the management token given with --token (or \
                         WHARF_MANAGEMENT_TOKEN) contains a line break or another control \
                         character: check how it was copied"
                        .into());
                }
                Credentials::Bearer(t)
            }
            (None, Some(u), Some(p)) => Credentials::Basic(u, p),
            (None, Some(_), None) => {
                return Err(
                    "--username needs a password: give it with --password or WHARF_PASSWORD".into(),
                );
            }
            (None, None, Some(p)) if !p.is_empty() => {
                return Err("--password needs a user name: give it with --username or \
                     WHARF_USERNAME (the admin user's name is the registry's)"
                    .into());
            }
            (None, None, _) => Credentials::None,
        };
        if !matches!(creds, Credentials::None) && plain_http_beyond_loopback(&conn.server) {
            // Not refused: a trusted network may be the user's choice. But they should know.
            report_warning(&format!(
                "sending credentials to {} over plain HTTP: anyone on the network path can \
                 read them",
                conn.server
            ));
        }
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &conn.ca_cert {
            for c in ca_certificates(path)? {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            // A redirect is not something the management API sends; following one would take
            // the request, credentials and body included, to a server the user did not name.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            // Generous: a webhook ping waits for the endpoint (5 s by default) before answering.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: conn.server.trim_end_matches('/').to_owned(),
            wanted: conn.registry.clone().filter(|s| !s.is_empty()),
            wanted_group: conn.resource_group.clone().filter(|s| !s.is_empty()),
            wanted_subscription: conn.subscription.clone().filter(|s| !s.is_empty()),
            arm: Arm::default(),
            creds,
            debug: conn.debug,
        })
    }

    /// A client that knows the server's registry: [`Client::new`], then the registry's ARM
    /// path learnt from the server as any ARM client would (`GET /subscriptions`, then the
    /// registries of that subscription), so the CLI needs no subscription or resource group.
    pub async fn connect(conn: &Conn) -> Result<Self, String> {
        let mut c = Client::new(conn)?;
        let subs = c
            .call(
                reqwest::Method::GET,
                &format!("/subscriptions?api-version={SUBSCRIPTIONS_API_VERSION}"),
                None,
            )
            .await?;
        let sub = subs["value"][0]["subscriptionId"]
            .as_str()
            .ok_or_else(|| c.shape_error("a list of subscriptions"))?
            .to_owned();
        if let Some(want) = &c.wanted_subscription
            && !want.eq_ignore_ascii_case(&sub)
        {
            return Err(format!(
                "the server at {} serves subscription {sub:?}, not {want:?}; check \
                 --subscription or WHARF_SUBSCRIPTION_ID",
                c.base
            ));
        }
        let regs = c
            .call(
                reqwest::Method::GET,
                &format!(
                    "/subscriptions/{sub}/providers/Microsoft.ContainerRegistry/registries?api-version={}",
                    wharf_auth::model::API_VERSION
                ),
                None,
            )
            .await?;
        let regs = c.list(&regs, "a list of registries")?;
        // az strips a login-server suffix from --registry (`r.azurecr.io` names `r`).
        let wanted = c
            .wanted
            .as_deref()
            .map(|w| w.split('.').next().unwrap_or(w));
        let reg = match wanted {
            None => regs.first(),
            Some(w) => regs.iter().find(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(w))
            }),
        };
        let Some(reg) = reg else {
            let names: Vec<String> = regs
                .iter()
                .filter_map(|r| r["name"].as_str())
                .map(|n| format!("{n:?}"))
                .collect();
            return Err(format!(
                "the server at {} has no registry {:?} (it serves {}); check --registry (-r) \
                 or WHARF_REGISTRY_NAME",
                c.base,
                wanted.unwrap_or_default(),
                names.join(", ")
            ));
        };
        let id = reg["id"]
            .as_str()
            .ok_or_else(|| c.shape_error("a registry"))?;
        let name = reg["name"].as_str().unwrap_or_default().to_owned();
        // `/subscriptions/{sub}/resourceGroups/{rg}/providers/…`
        let segs: Vec<&str> = id.split('/').collect();
        let group = segs
            .iter()
            .position(|s| s.eq_ignore_ascii_case("resourceGroups"))
            .and_then(|i| segs.get(i + 1))
            .ok_or_else(|| c.shape_error("a registry with a resource id"))?;
        if let Some(want) = &c.wanted_group
            && !want.eq_ignore_ascii_case(group)
        {
            return Err(format!(
                "the registry {name:?} of the server at {} is in resource group {group:?}, not \
                 {want:?}; check --resource-group (-g) or WHARF_RESOURCE_GROUP",
                c.base
            ));
        }
        let location = reg["location"].as_str().unwrap_or_default().to_owned();
        c.arm = Arm {
            id: id.to_owned(),
            name,
            location,
        };
        Ok(c)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The registry's name, as the server names it.
    pub fn registry(&self) -> &str {
        &self.arm.name
    }

    /// The registry's location, which ARM requires of a webhook created without `--location`
    /// (az sends the same).
    pub fn location(&self) -> &str {
        &self.arm.location
    }

    /// `{R}`: the ARM id of the registry these commands manage.
    pub fn registry_id(&self) -> String {
        self.arm.id.clone()
    }

    /// The path of an ARM operation under `{R}` (`rest` is "" or starts with `/`, and may
    /// have a query), with the `api-version` the Azure SDK sends.
    pub fn arm_path(&self, rest: &str) -> String {
        let sep = if rest.contains('?') { '&' } else { '?' };
        format!(
            "{}{rest}{sep}api-version={}",
            self.registry_id(),
            wharf_auth::model::API_VERSION
        )
    }

    /// The path and query of a `nextLink`, to fetch from the server this client talks to
    /// (never from the host the link names: the credentials go only to --server).
    pub fn link_path(&self, link: &str) -> String {
        match link.split_once("://") {
            Some((_, rest)) => match rest.find('/') {
                Some(i) => rest[i..].to_owned(),
                None => "/".to_owned(),
            },
            None => link.to_owned(),
        }
    }

    /// One management call; `path` is from the server's root. The answer's JSON (Null for an
    /// empty body) on success, the message to print otherwise. A GET of a list follows its
    /// `nextLink`s and answers with every item, as az shows whole lists.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let get = method == reqwest::Method::GET;
        let (status, mut v) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(error_message(status, &v));
        }
        // Bounded, against a server that links pages in a circle.
        for _ in 0..10_000 {
            let Some(next) = v["nextLink"].as_str().filter(|_| get).map(str::to_owned) else {
                break;
            };
            let (status, page) = self
                .send(reqwest::Method::GET, &self.link_path(&next), None)
                .await?;
            if !status.is_success() {
                return Err(error_message(status, &page));
            }
            let more = self.list(&page, "a page of a list")?;
            if let Some(all) = v["value"].as_array_mut() {
                all.extend(more);
            }
            v["nextLink"] = page["nextLink"].clone();
        }
        if let Some(o) = v.as_object_mut().filter(|_| get) {
            o.remove("nextLink");
        }
        Ok(v)
    }

    /// A GET of something that may not exist: None for a 404.
    pub async fn get_opt(&self, path: &str) -> Result<Option<Value>, String> {
        let (status, v) = self.send(reqwest::Method::GET, path, None).await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            Ok(None)
        } else if status.is_success() {
            Ok(Some(v))
        } else {
            Err(error_message(status, &v))
        }
    }

    /// Sends a call and returns the status and JSON of an answer that came from Wharf's
    /// management API; a 401 is already an error with the way to authenticate.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(reqwest::StatusCode, Value), String> {
        let url = format!("{}{path}", self.base);
        let changes = method != reqwest::Method::GET;
        let mut req = self.http.request(method.clone(), &url);
        req = self.authorize(req);
        if let Some(b) = &body {
            req = req.json(b);
        } else if changes {
            // Every management call that changes something says JSON, body or not (the
            // server refuses others: that is what keeps cross-site form posts out).
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        let resp = self.execute(req).await?;
        let status = resp.status();
        // Checked before the body is read: whatever else answered (a web server's HTML page,
        // another API's 404) is not worth reading, let alone printing.
        match resp.headers().get("wharf-api").map(|v| v.as_bytes()) {
            Some(v) if v == API_VERSION.as_bytes() => {}
            Some(v) => {
                return Err(format!(
                    "the Wharf server at {} speaks management API {:?}, this CLI speaks {API_VERSION}",
                    self.base,
                    String::from_utf8_lossy(v)
                ));
            }
            None => {
                return Err(format!(
                    "{} does not answer like a Wharf server (HTTP {status}, without Wharf's \
                     management API marker); check --server or WHARF_SERVER",
                    self.base
                ));
            }
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized());
        }
        let (status, bytes) = self.read(resp).await?;
        Ok((status, self.json_body(status, &bytes)?))
    }

    /// The request with this client's credentials.
    pub(crate) fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.creds {
            Credentials::None => req,
            Credentials::Bearer(t) => req.bearer_auth(t),
            Credentials::Basic(u, p) => req.basic_auth(u, Some(p)),
        }
    }

    /// The user name and password given, for the data plane's token server.
    pub(crate) fn basic(&self) -> Option<(&str, &str)> {
        match &self.creds {
            Credentials::Basic(u, p) => Some((u, p)),
            _ => None,
        }
    }

    /// The management token given, which the token server exchanges for a refresh token.
    pub(crate) fn management_token(&self) -> Option<&str> {
        match &self.creds {
            Credentials::Bearer(t) => Some(t),
            _ => None,
        }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request (shown on stderr with --debug), naming the cause of a failure.
    pub(crate) async fn execute(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        let req = req
            .build()
            .map_err(|e| format!("cannot build the request: {}", e.without_url()))?;
        if self.debug {
            crate::debug::request(&req);
        }
        let resp = self.http.execute(req).await.map_err(|e| {
            // reqwest's own message ("error sending request") hides the cause, such as an
            // untrusted certificate; the chain below it names it.
            let e = e.without_url();
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg = format!("{msg}: {c}");
                cause = c.source();
            }
            format!("cannot reach the Wharf server at {}: {msg}", self.base)
        })?;
        if self.debug {
            crate::debug::response_head(resp.status(), resp.headers());
        }
        Ok(resp)
    }

    /// Reads an answer's body (shown on stderr with --debug).
    pub(crate) async fn read(
        &self,
        resp: reqwest::Response,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the answer of {}: {}", self.base, e.without_url()))?
            .to_vec();
        if self.debug {
            crate::debug::response_body(&bytes);
        }
        Ok((status, bytes))
    }

    /// An answer's JSON; Null for an empty body.
    pub(crate) fn json_body(
        &self,
        status: reqwest::StatusCode,
        bytes: &[u8],
    ) -> Result<Value, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(bytes).map_err(|_| {
            format!(
                "the server at {} answered HTTP {status} with a body that is not JSON",
                self.base
            )
        })
    }

    /// The message for a 401: what was (or was not) sent and how to authenticate. The server's
    /// own message is generic; the CLI knows which flag the credential came from.
    fn unauthorized(&self) -> String {
        match &self.creds {
            Credentials::None => format!(
                "authentication required: the server at {} has access control on; {AUTH_HINT}",
                self.base
            ),
            Credentials::Bearer(_) => format!(
                "the server at {} refused the management token given with --token \
                 (or WHARF_MANAGEMENT_TOKEN): it is not the server's management token",
                self.base
            ),
            Credentials::Basic(..) => format!(
                "the server at {} refused the user name and password given with --username and \
                 --password (or WHARF_USERNAME and WHARF_PASSWORD): the management API takes the \
                 admin user (its name is the registry's, and it must be enabled) or the \
                 management token (--token)",
                self.base
            ),
        }
    }

    /// An answer that must be a JSON object.
    pub fn object(&self, v: Value, what: &str) -> Result<Value, String> {
        if v.is_object() {
            Ok(v)
        } else {
            Err(self.shape_error(what))
        }
    }

    /// The `value` array of a list answer.
    pub fn list(&self, v: &Value, what: &str) -> Result<Vec<Value>, String> {
        v["value"]
            .as_array()
            .cloned()
            .ok_or_else(|| self.shape_error(what))
    }

    pub fn shape_error(&self, what: &str) -> String {
        format!(
            "the server at {} sent an unexpected answer: not {what}",
            self.base
        )
    }
}

/// The message of a failed call: the server's (ARM's `error.message`, or the registry API's
/// `errors[0].message`), or the status.
pub(crate) fn error_message(status: reqwest::StatusCode, v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .or_else(|| v["errors"][0]["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {status}"))
}

/// Whether `server` is a plain `http://` URL whose host is not this machine's loopback.
fn plain_http_beyond_loopback(server: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(server) else {
        return false;
    };
    if u.scheme() != "http" {
        return false;
    }
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => {
            let d = host.to_ascii_lowercase();
            d != "localhost" && !d.ends_with(".localhost")
        }
    }
}

/// A token or scope-map name as a path segment. ARM names are letters, digits, `-` and `_`
/// (the server checks the exact rules); anything else is refused here, so that no name (`..`,
/// `a/b`, `x?y`) can change which operation is called.
pub fn name_seg(kind: &str, name: &str) -> Result<String, String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{kind} {name:?}: a name is made of letters, digits, '-' and '_'"
        ))
    }
}

/// Prints a command's output (or its error) and returns the process's exit status.
pub fn finish(res: Result<String, String>) -> i32 {
    match res.map(|text| emit(&text)) {
        Ok(Ok(())) => 0,
        // The reader went away (`| head -1`): it has what it wanted; nothing to report.
        Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Ok(Err(e)) => {
            report(&format!("cannot write the output: {e}"));
            1
        }
        Err(e) => {
            report(&e);
            1
        }
    }
}

/// Writes the whole output to stdout, returning errors instead of panicking as `println!`
/// does. Rust ignores SIGPIPE, so a closed pipe arrives here as `BrokenPipe`.
fn emit(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// An error on stderr; if even stderr is closed there is no one left to tell.
pub fn report(message: &str) {
    let _ = writeln!(io::stderr().lock(), "ERROR: {message}");
}

/// A warning on stderr (az prints its hints and warnings there too).
pub fn report_warning(message: &str) {
    if GLOBALS.get().is_some_and(|g| g.only_show_errors) {
        return;
    }
    let _ = writeln!(io::stderr().lock(), "WARNING: {message}");
}

/// az prints ARM resources with their properties flattened into the top level. A property
/// whose name is also a top-level one (a scope map's `type`) gets autorest's name for it
/// (`typePropertiesType`), as in az's output.
pub fn flatten(w: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let Some(o) = w.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in o {
        if k != "properties" {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(p) = o.get("properties").and_then(Value::as_object) {
        for (pk, pv) in p {
            let key = if o.contains_key(pk) {
                let mut c = pk.chars();
                let cap: String = c
                    .next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default();
                format!("{pk}Properties{cap}")
            } else {
                pk.clone()
            };
            out.insert(key, pv.clone());
        }
    }
    Value::Object(out)
}

/// A JSON value as a table cell: strings bare, null empty.
pub fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether `--query` was given (a command's own table columns do not apply then).
pub fn query_active() -> bool {
    GLOBALS.get().is_some_and(|g| g.query.is_some())
}

/// The output text of a command: its result `v` after `--query`, in the `-o` format; `headers`
/// and `row` are its own table (one row per item if `is_list`), as az's table transformers.
pub fn render_rows(
    v: &Value,
    out: Output,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
    is_list: bool,
) -> Result<String, String> {
    let query = GLOBALS.get().and_then(|g| g.query.as_deref());
    let columns = (!headers.is_empty()).then_some(crate::output::Columns { headers, row: &row });
    crate::output::render(v, out, query, columns, is_list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flatten_renames_a_property_that_shadows_a_top_level_field() {
        let m = json!({"name": "m", "type": "Microsoft.ContainerRegistry/registries/scopeMaps",
                       "properties": {"type": "UserDefined", "actions": ["a"]}});
        let f = flatten(&m);
        assert_eq!(
            f["type"],
            "Microsoft.ContainerRegistry/registries/scopeMaps"
        );
        assert_eq!(f["typePropertiesType"], "UserDefined");
        assert_eq!(f["actions"], json!(["a"]));
        assert!(f.get("properties").is_none());
    }

    #[test]
    fn names_cannot_change_the_operation_called() {
        assert_eq!(name_seg("token", "ci-pull_1").unwrap(), "ci-pull_1");
        for bad in ["", "..", "a/b", "x?y", "a%2Fb", "caf\u{e9}"] {
            assert!(name_seg("token", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_is_noticed_only_beyond_loopback() {
        assert!(plain_http_beyond_loopback("http://registry.example:5000"));
        assert!(plain_http_beyond_loopback("http://10.0.0.1"));
        for s in [
            "http://127.0.0.1:5000",
            "http://localhost:5000",
            "http://[::1]:5000",
            "https://registry.example",
        ] {
            assert!(!plain_http_beyond_loopback(s), "{s}");
        }
    }
}
