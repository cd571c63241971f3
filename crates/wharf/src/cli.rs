//! `wharf webhook …`: a client of the management API that mirrors `az acr webhook` — the same
//! subcommands and flags, JSON output by default (flattened as az prints it), `table` and
//! `tsv` on request.
//!
//! Output is written through [`emit`], never `println!`, which panics when stdout is closed
//! (`wharf webhook list | head -1`) or full. Every answer must come from Wharf's management
//! API (it carries the `wharf-api` header), so a `--server` that points elsewhere is a clear
//! error rather than garbage on stdout.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

#[derive(Args)]
pub struct WebhookArgs {
    /// Wharf server to talk to.
    #[arg(
        long,
        global = true,
        env = "WHARF_SERVER",
        default_value = "http://127.0.0.1:5000"
    )]
    server: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "json")]
    output: Output,
    #[command(subcommand)]
    command: WebhookCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Json,
    Table,
    Tsv,
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Create a webhook.
    Create(CreateArgs),
    /// Update a webhook (only the fields given change).
    Update(UpdateArgs),
    /// Show a webhook.
    Show(NameArg),
    /// List webhooks.
    List,
    /// Delete a webhook.
    Delete(NameArg),
    /// Send a ping event to a webhook's endpoint.
    Ping(NameArg),
    /// List a webhook's recent delivery attempts, newest first.
    ListEvents(ListEventsArgs),
    /// Show a webhook's service URI, custom headers and signing secret (the only command that
    /// shows them).
    GetConfig(NameArg),
    /// Queue deliveries again: one event, or every failed delivery of the webhook.
    Redeliver(RedeliverArgs),
    /// Replace a signing webhook's secret; the old one keeps signing beside the new one for
    /// the grace period. get-config shows the new secret.
    RotateSecret(RotateArgs),
}

/// `--signing`: whether deliveries carry Standard Webhooks signatures.
#[derive(Clone, Copy, ValueEnum)]
enum Toggle {
    Enabled,
    Disabled,
}

impl Toggle {
    fn json(self) -> Value {
        json!({ "enabled": matches!(self, Toggle::Enabled) })
    }
}

#[derive(Args)]
struct NameArg {
    /// Name of the webhook.
    #[arg(long, short = 'n')]
    name: String,
}

#[derive(Args)]
struct CreateArgs {
    /// Name of the webhook: 5 to 50 letters and digits.
    #[arg(long, short = 'n')]
    name: String,
    /// Service URI the events are POSTed to.
    #[arg(long)]
    uri: String,
    /// Space-separated actions: push delete quarantine chart_push chart_delete.
    #[arg(long, num_args = 1.., required = true)]
    actions: Vec<String>,
    /// Scope, e.g. "repo:tag", "repo:*", "team/*:prod-*"; empty for all events.
    #[arg(long)]
    scope: Option<String>,
    /// Space-separated custom headers in key[=value] format.
    #[arg(long, num_args = 0..)]
    headers: Option<Vec<String>>,
    /// enabled or disabled.
    #[arg(long, default_value = "enabled")]
    status: String,
    /// Region; defaults to the server's.
    #[arg(long, short = 'l')]
    location: Option<String>,
    /// Sign deliveries the Standard Webhooks way (webhook-id, webhook-timestamp,
    /// webhook-signature headers; a Wharf extension). The server makes the secret; get-config
    /// shows it. Default: disabled, requests identical to ACR's.
    #[arg(long, value_enum)]
    signing: Option<Toggle>,
    /// Space-separated tags in key[=value] format.
    #[arg(long, num_args = 0..)]
    tags: Option<Vec<String>>,
}

#[derive(Args)]
struct UpdateArgs {
    /// Name of the webhook.
    #[arg(long, short = 'n')]
    name: String,
    /// New service URI the events are POSTed to.
    #[arg(long)]
    uri: Option<String>,
    /// Space-separated actions, replacing the current ones: push delete quarantine chart_push
    /// chart_delete.
    #[arg(long, num_args = 1..)]
    actions: Option<Vec<String>>,
    /// New scope, e.g. "repo:tag", "repo:*", "team/*:prod-*"; "" for all events.
    #[arg(long)]
    scope: Option<String>,
    /// Space-separated custom headers in key[=value] format; `--headers ''` clears them.
    #[arg(long, num_args = 0..)]
    headers: Option<Vec<String>>,
    /// enabled or disabled.
    #[arg(long)]
    status: Option<String>,
    /// Space-separated tags in key[=value] format, replacing the current ones.
    #[arg(long, num_args = 0..)]
    tags: Option<Vec<String>>,
    /// Sign deliveries the Standard Webhooks way, or stop signing. Enabling it the first time
    /// makes a secret (see get-config); disabling keeps it for a later enable.
    #[arg(long, value_enum)]
    signing: Option<Toggle>,
}

#[derive(Args)]
struct RotateArgs {
    /// Name of the webhook.
    #[arg(long, short = 'n')]
    name: String,
    /// How long the old secret keeps signing beside the new one, in seconds (at most 604800,
    /// 7 days; 0 stops it at once). Default: 86400 (one day).
    #[arg(long)]
    grace_period: Option<u64>,
}

#[derive(Args)]
struct ListEventsArgs {
    /// Name of the webhook.
    #[arg(long, short = 'n')]
    name: String,
    /// Most entries to show.
    #[arg(long, default_value_t = 100)]
    top: usize,
}

#[derive(Args)]
struct RedeliverArgs {
    /// Name of the webhook.
    #[arg(long, short = 'n')]
    name: String,
    /// The event to deliver again; without it, every failed delivery is queued again.
    #[arg(long)]
    event_id: Option<String>,
}

/// az's `key[=value]` lists: split at the first `=`; a key alone gets ""; an empty item is
/// skipped (so `--headers ''` sends an empty map).
fn kv(items: &[String]) -> BTreeMap<String, String> {
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (s.clone(), String::new()),
        })
        .collect()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

/// The management API version this CLI speaks, as the server states it in `wharf-api`.
const API_VERSION: &str = "v1";

impl Client {
    fn new(base: String) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // A redirect is not something the management API sends; following one would take
            // the request, body included, to a server the user did not name.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            // Generous: a ping waits for the endpoint (5 s by default) before answering.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(Client { http, base })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!(
            "{}/wharf/v1/webhooks{}",
            self.base.trim_end_matches('/'),
            path
        );
        let changes = method != reqwest::Method::GET;
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        } else if changes {
            // Every management call that changes something says JSON, body or not (the
            // server refuses others: that is what keeps cross-site form posts out).
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        let resp = req.send().await.map_err(|e| {
            format!(
                "cannot reach the Wharf server at {}: {}",
                self.base,
                e.without_url()
            )
        })?;
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
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the answer of {}: {}", self.base, e.without_url()))?;
        let v: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                format!(
                    "the server at {} answered HTTP {status} with a body that is not JSON",
                    self.base
                )
            })?
        };
        if status.is_success() {
            Ok(v)
        } else {
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {status}"));
            Err(msg)
        }
    }

    /// An answer that must be a JSON object (a webhook, a config, a ping id).
    fn object(&self, v: Value, what: &str) -> Result<Value, String> {
        if v.is_object() {
            Ok(v)
        } else {
            Err(self.shape_error(what))
        }
    }

    /// The `value` array of a list answer.
    fn list(&self, v: &Value, what: &str) -> Result<Vec<Value>, String> {
        v["value"]
            .as_array()
            .cloned()
            .ok_or_else(|| self.shape_error(what))
    }

    fn shape_error(&self, what: &str) -> String {
        format!(
            "the server at {} sent an unexpected answer: not {what}",
            self.base
        )
    }
}

/// az prints a Webhook with its properties flattened into the top level.
fn flatten(w: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(o) = w.as_object() {
        for (k, v) in o {
            if k == "properties" {
                if let Some(p) = v.as_object() {
                    for (pk, pv) in p {
                        out.insert(pk.clone(), pv.clone());
                    }
                }
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Runs one `wharf webhook` command and returns the process's exit status.
pub async fn run(a: WebhookArgs) -> i32 {
    let res = match Client::new(a.server.clone()) {
        Ok(client) => run_inner(&client, a.command, a.output).await,
        Err(e) => Err(e),
    };
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
fn report(message: &str) {
    let _ = writeln!(io::stderr().lock(), "ERROR: {message}");
}

/// Performs the command and returns what it prints.
async fn run_inner(c: &Client, cmd: WebhookCommand, out: Output) -> Result<String, String> {
    use reqwest::Method;
    let text = match cmd {
        WebhookCommand::Create(a) => {
            let mut props =
                json!({ "serviceUri": a.uri, "actions": a.actions, "status": a.status });
            if let Some(s) = a.scope {
                props["scope"] = json!(s);
            }
            if let Some(h) = a.headers {
                props["customHeaders"] = json!(kv(&h));
            }
            if let Some(t) = a.signing {
                props["signing"] = t.json();
            }
            let mut body = json!({ "properties": props, "tags": kv(&a.tags.unwrap_or_default()) });
            if let Some(l) = a.location {
                body["location"] = json!(l);
            }
            let w = c
                .call(Method::PUT, &format!("/{}", a.name), Some(body))
                .await?;
            render_webhooks(&[flatten(&c.object(w, "a webhook")?)], out, false)
        }
        WebhookCommand::Update(a) => {
            let mut props = serde_json::Map::new();
            if let Some(u) = a.uri {
                props.insert("serviceUri".into(), json!(u));
            }
            if let Some(x) = a.actions {
                props.insert("actions".into(), json!(x));
            }
            if let Some(s) = a.scope {
                props.insert("scope".into(), json!(s));
            }
            if let Some(h) = a.headers {
                props.insert("customHeaders".into(), json!(kv(&h)));
            }
            if let Some(s) = a.status {
                props.insert("status".into(), json!(s));
            }
            if let Some(t) = a.signing {
                props.insert("signing".into(), t.json());
            }
            let mut body = json!({ "properties": props });
            if let Some(t) = a.tags {
                body["tags"] = json!(kv(&t));
            }
            let w = c
                .call(Method::PATCH, &format!("/{}", a.name), Some(body))
                .await?;
            render_webhooks(&[flatten(&c.object(w, "a webhook")?)], out, false)
        }
        WebhookCommand::Show(a) => {
            let w = c.call(Method::GET, &format!("/{}", a.name), None).await?;
            render_webhooks(&[flatten(&c.object(w, "a webhook")?)], out, false)
        }
        WebhookCommand::List => {
            let v = c.call(Method::GET, "", None).await?;
            let list: Vec<Value> = c
                .list(&v, "a list of webhooks")?
                .iter()
                .map(flatten)
                .collect();
            render_webhooks(&list, out, true)
        }
        WebhookCommand::Delete(a) => {
            c.call(Method::DELETE, &format!("/{}", a.name), None)
                .await?;
            String::new()
        }
        WebhookCommand::Ping(a) => {
            let v = c
                .call(Method::POST, &format!("/{}/ping", a.name), None)
                .await?;
            let v = c.object(v, "a ping id")?;
            render_rows(&v, out, &["ID"], |v| vec![s(&v["id"])], false)
        }
        WebhookCommand::GetConfig(a) => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/{}/getCallbackConfig", a.name),
                    None,
                )
                .await?;
            let v = c.object(v, "a callback config")?;
            render_rows(
                &v,
                out,
                &["SERVICE URI", "HEADERS", "SIGNING SECRET"],
                |v| {
                    vec![
                        s(&v["serviceUri"]),
                        v["customHeaders"].to_string(),
                        s(&v["signingSecret"]),
                    ]
                },
                false,
            )
        }
        WebhookCommand::RotateSecret(a) => {
            let body = match a.grace_period {
                Some(g) => json!({ "gracePeriodSeconds": g }),
                None => json!({}),
            };
            let w = c
                .call(
                    Method::POST,
                    &format!("/{}/rotateSigningSecret", a.name),
                    Some(body),
                )
                .await?;
            render_webhooks(&[flatten(&c.object(w, "a webhook")?)], out, false)
        }
        WebhookCommand::ListEvents(a) => {
            let mut all = Vec::new();
            let mut path = format!("/{}/listEvents?$top={}", a.name, a.top.clamp(1, 1000));
            loop {
                let v = c.call(Method::POST, &path, None).await?;
                all.extend(c.list(&v, "a list of events")?);
                match v["nextLink"].as_str() {
                    Some(next) if all.len() < a.top => {
                        path = next.trim_start_matches("/wharf/v1/webhooks").to_owned();
                    }
                    _ => break,
                }
            }
            all.truncate(a.top);
            render_rows(
                &Value::Array(all),
                out,
                &["ID", "ACTION", "IMAGE", "HTTP STATUS", "TIMESTAMP"],
                event_row,
                true,
            )
        }
        WebhookCommand::Redeliver(a) => {
            let body = match a.event_id {
                Some(e) => json!({ "eventId": e }),
                None => json!({}),
            };
            let v = c
                .call(Method::POST, &format!("/{}/redeliver", a.name), Some(body))
                .await?;
            let v = c.object(v, "a redelivery count")?;
            render_rows(
                &v,
                out,
                &["REDELIVERED"],
                |v| vec![v["redelivered"].to_string()],
                false,
            )
        }
    };
    Ok(text)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn event_row(e: &Value) -> Vec<String> {
    let content = &e["eventRequestMessage"]["content"];
    let target = &content["target"];
    let image = match (target["repository"].as_str(), target["tag"].as_str()) {
        (Some(r), Some(t)) => format!("{r}:{t}"),
        (Some(r), None) => r.to_owned(),
        _ => String::new(),
    };
    let resp = &e["eventResponseMessage"];
    let status = format!("{} {}", s(&resp["statusCode"]), s(&resp["reasonPhrase"]))
        .trim()
        .to_owned();
    vec![
        s(&e["id"]),
        s(&content["action"]),
        image,
        status,
        s(&content["timestamp"]),
    ]
}

fn render_webhooks(list: &[Value], out: Output, as_list: bool) -> String {
    let v = if as_list {
        Value::Array(list.to_vec())
    } else {
        list.first().cloned().unwrap_or(Value::Null)
    };
    render_rows(
        &v,
        out,
        &["NAME", "LOCATION", "ACTIONS", "SCOPE", "STATUS"],
        |w| {
            let actions: Vec<String> = w["actions"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            vec![
                s(&w["name"]),
                s(&w["location"]),
                actions.join(", "),
                s(&w["scope"]),
                s(&w["status"]),
            ]
        },
        as_list,
    )
}

/// The output text of a command: pretty JSON, or one row per item as tsv or an aligned table.
fn render_rows(
    v: &Value,
    out: Output,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
    is_list: bool,
) -> String {
    let mut text = String::new();
    let mut line = |l: &str| {
        text.push_str(l);
        text.push('\n');
    };
    match out {
        Output::Json => line(&serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Tsv | Output::Table => {
            let items: Vec<&Value> = if is_list {
                v.as_array().map(|a| a.iter().collect()).unwrap_or_default()
            } else {
                vec![v]
            };
            let rows: Vec<Vec<String>> = items.iter().map(|i| row(i)).collect();
            if matches!(out, Output::Tsv) {
                for r in rows {
                    line(&r.join("\t"));
                }
                return text;
            }
            let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
            for r in &rows {
                for (i, c) in r.iter().enumerate() {
                    if let Some(w) = widths.get_mut(i) {
                        *w = (*w).max(c.chars().count());
                    }
                }
            }
            let cells = |cells: Vec<String>| {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{:<w$}", c, w = widths.get(i).copied().unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            line(&cells(headers.iter().map(|h| h.to_string()).collect()));
            line(&cells(widths.iter().map(|w| "-".repeat(*w)).collect()));
            for r in rows {
                line(&cells(r));
            }
        }
    }
    text
}
