//! `wharf webhook …`: a client of the management API that mirrors `az acr webhook` — the same
//! subcommands and flags, JSON output by default (flattened as az prints it), `table` and
//! `tsv` on request. The connection, credentials and output helpers are shared with the
//! access-control commands ([`crate::client`]).

use std::collections::BTreeMap;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::{self, Conn, Output, flatten, render_rows, s};

#[derive(Args)]
pub struct WebhookArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: WebhookCommand,
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

/// `--payload-format`: the shape of the deliveries (`properties.payloadFormat`).
#[derive(Clone, Copy, ValueEnum)]
enum PayloadFormatArg {
    /// ACR's webhook body, unchanged (the default).
    Acr,
    /// An Event Grid schema event (a one-element array), data as Event Grid's for ACR.
    Eventgrid,
    /// CloudEvents 1.0, structured mode (Content-Type: application/cloudevents+json).
    Cloudevents,
    /// CloudEvents 1.0, binary mode (ce-* headers, the event data as the body).
    CloudeventsBinary,
}

impl PayloadFormatArg {
    fn json(self) -> Value {
        // clap's names for the variants are the API's names.
        json!(self.to_possible_value().map(|v| v.get_name().to_owned()))
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
    /// Region; defaults to the registry's (the server's region).
    #[arg(long, short = 'l')]
    location: Option<String>,
    /// Sign deliveries the Standard Webhooks way (webhook-id, webhook-timestamp,
    /// webhook-signature headers; a Wharf extension). The server makes the secret; get-config
    /// shows it. Default: disabled, requests identical to ACR's.
    #[arg(long, value_enum)]
    signing: Option<Toggle>,
    /// Shape of the deliveries (a Wharf extension): acr (ACR's body, the default), eventgrid
    /// (Event Grid schema), cloudevents (CloudEvents 1.0 structured JSON) or
    /// cloudevents-binary (CloudEvents binary mode: ce-* headers, data as the body).
    #[arg(long, value_enum)]
    payload_format: Option<PayloadFormatArg>,
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
    /// New shape of the deliveries: acr, eventgrid, cloudevents or cloudevents-binary.
    /// Deliveries already queued keep the format they were written with.
    #[arg(long, value_enum)]
    payload_format: Option<PayloadFormatArg>,
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

/// The webhook operations, under the registry's ARM path (`{R}/webhooks`), through the shared
/// management client (whose `object` and `list` it exposes as they are).
struct Client(client::Client);

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        self.0
            .call(method, &self.0.arm_path(&format!("/webhooks{path}")), body)
            .await
    }
}

impl std::ops::Deref for Client {
    type Target = client::Client;
    fn deref(&self) -> &client::Client {
        &self.0
    }
}

/// Runs one `wharf webhook` command and returns the process's exit status.
pub async fn run(a: WebhookArgs) -> i32 {
    let res = match client::Client::connect(&a.conn).await {
        Ok(c) => run_inner(&Client(c), a.command, a.conn.output).await,
        Err(e) => Err(e),
    };
    client::finish(res)
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
            if let Some(f) = a.payload_format {
                props["payloadFormat"] = f.json();
            }
            // ARM requires a location; without --location, the registry's, as az sends.
            let location = a.location.unwrap_or_else(|| c.location().to_owned());
            let body = json!({
                "location": location,
                "properties": props,
                "tags": kv(&a.tags.unwrap_or_default()),
            });
            // ARM's PUT replaces an existing webhook; `create` never overwrites one by mistake
            // (`update` changes one).
            let path = c.arm_path(&format!("/webhooks/{}", a.name));
            if c.get_opt(&path).await?.is_some() {
                return Err(format!(
                    "webhook {} already exists: change it with `wharf webhook update`",
                    a.name
                ));
            }
            let w = c
                .call(Method::PUT, &format!("/{}", a.name), Some(body))
                .await?;
            render_webhooks(&[flatten(&c.object(w, "a webhook")?)], out, false)?
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
            if let Some(f) = a.payload_format {
                props.insert("payloadFormat".into(), f.json());
            }
            let mut body = json!({ "properties": props });
            if let Some(t) = a.tags {
                body["tags"] = json!(kv(&t));
            }
            let w = c
                .call(Method::PATCH, &format!("/{}", a.name), Some(body))
                .await?;
            render_webhooks(&[flatten(&c.object(w, "a webhook")?)], out, false)?
        }
        WebhookCommand::Show(a) => {
            let w = c.call(Method::GET, &format!("/{}", a.name), None).await?;
            render_webhooks(&[flatten(&c.object(w, "a webhook")?)], out, false)?
        }
        WebhookCommand::List => {
            let v = c.call(Method::GET, "", None).await?;
            let list: Vec<Value> = c
                .list(&v, "a list of webhooks")?
                .iter()
                .map(flatten)
                .collect();
            render_webhooks(&list, out, true)?
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
            render_rows(&v, out, &["ID"], |v| vec![s(&v["id"])], false)?
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
            )?
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
            render_webhooks(&[flatten(&c.object(w, "a webhook")?)], out, false)?
        }
        WebhookCommand::ListEvents(a) => {
            let mut all = Vec::new();
            let first = format!("/{}/listEvents?$top={}", a.name, a.top.clamp(1, 1000));
            let mut v = c.call(Method::POST, &first, None).await?;
            loop {
                all.extend(c.list(&v, "a list of events")?);
                match v["nextLink"].as_str() {
                    Some(next) if all.len() < a.top => {
                        // The link is the whole next request, api-version included.
                        let path = c.link_path(next);
                        v = c.0.call(Method::POST, &path, None).await?;
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
            )?
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
            )?
        }
    };
    Ok(text)
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

fn render_webhooks(list: &[Value], out: Output, as_list: bool) -> Result<String, String> {
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
