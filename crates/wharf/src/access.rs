//! `wharf token …`, `wharf scope-map …`, `wharf credential …` and `wharf registry …`: clients
//! of the ARM management operations of access control (acr-auth.md §2–3) that mirror
//! `az acr token`, `az acr scope-map`, `az acr credential` and `az acr show/update` — the same
//! subcommands and flags (§3.9), JSON output flattened as az prints it, `table` and `tsv` on
//! request.
//!
//! Password values are printed only by the commands that exist to show them: `token create`
//! (unless --no-passwords), `token credential generate`, `credential show` and
//! `credential renew`. The server never returns a token password anywhere else.

use std::io::{self, BufRead, IsTerminal, Write};

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{
    Client, Conn, Output, finish, flatten, name_seg, query_active, render_rows, report_warning, s,
};

/// The actions a scope map may grant on a repository, as `az` accepts them (acr-auth.md §3.6).
const REPO_ACTIONS: [&str; 5] = [
    "content/read",
    "content/write",
    "content/delete",
    "metadata/read",
    "metadata/write",
];

#[derive(Clone, Copy, ValueEnum)]
enum Status {
    Enabled,
    Disabled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Disabled => "disabled",
        }
    }
}

// ---- `--repository REPO ACTION…` ----------------------------------------------------------

/// One repeatable `REPO ACTION…` flag. clap's derive cannot keep the groups of a repeatable
/// multi-value flag apart (`Vec<Vec<_>>` needs its unstable-v5 feature), so such a flag is
/// declared here by hand and read back occurrence by occurrence.
trait RulesFlag {
    /// The flag's id and long name (`--<ID>`).
    const ID: &'static str;
    const ALIAS: Option<&'static str>;
    const HELP: &'static str;
    const REQUIRED: bool;
}

/// The `REPO ACTION…` groups given with one [`RulesFlag`], one per occurrence.
struct Rules<F> {
    groups: Vec<Vec<String>>,
    flag: std::marker::PhantomData<F>,
}

impl<F: RulesFlag> clap::FromArgMatches for Rules<F> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let groups = m
            .get_occurrences::<String>(F::ID)
            .map(|occ| occ.map(|g| g.cloned().collect()).collect())
            .unwrap_or_default();
        Ok(Rules {
            groups,
            flag: std::marker::PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<F: RulesFlag> clap::Args for Rules<F> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut arg = clap::Arg::new(F::ID)
            .long(F::ID)
            .num_args(2..)
            .value_names(["REPO", "ACTION"])
            .value_parser(clap::value_parser!(String))
            .action(clap::ArgAction::Append)
            .required(F::REQUIRED)
            .help(F::HELP);
        if let Some(a) = F::ALIAS {
            arg = arg.visible_alias(a);
        }
        cmd.arg(arg)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

struct TokenRepository;
impl RulesFlag for TokenRepository {
    const ID: &'static str = "repository";
    const ALIAS: Option<&'static str> = None;
    const HELP: &'static str = "A repository and its actions (content/read, content/write, \
        content/delete, metadata/read, metadata/write); repeatable. Creates the scope map \
        `<token>-scope-map`, or reuses it if it grants exactly these actions";
    const REQUIRED: bool = false;
}

struct ScopeMapRepository;
impl RulesFlag for ScopeMapRepository {
    const ID: &'static str = "repository";
    const ALIAS: Option<&'static str> = None;
    const HELP: &'static str = "A repository and its actions (content/read, content/write, \
        content/delete, metadata/read, metadata/write); repeatable. The repository may end in \
        `/*`, or be `*`";
    const REQUIRED: bool = true;
}

struct AddRepository;
impl RulesFlag for AddRepository {
    const ID: &'static str = "add-repository";
    const ALIAS: Option<&'static str> = Some("add");
    const HELP: &'static str = "A repository and actions to add; repeatable";
    const REQUIRED: bool = false;
}

struct RemoveRepository;
impl RulesFlag for RemoveRepository {
    const ID: &'static str = "remove-repository";
    const ALIAS: Option<&'static str> = Some("remove");
    const HELP: &'static str = "A repository and actions to remove; repeatable";
    const REQUIRED: bool = false;
}

// ---- tokens ---------------------------------------------------------------------------------

#[derive(Args)]
pub struct TokenArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token (and, with --repository, its scope map), then generate its two
    /// passwords: the only time they are shown.
    Create(TokenCreate),
    /// Update a token's scope map or status (only the fields given change).
    #[command(
        long_about = "Update a token's scope map or status: only the fields given change.\n\n\
        Unlike `az acr token update`, which re-sends status=enabled when --status is not \
        given (and so silently re-enables a disabled token), this sends the status only when \
        --status is given."
    )]
    Update(TokenUpdate),
    /// Show a token (its password names and expiry dates, never their values).
    Show(TokenName),
    /// List tokens (password names and expiry dates, never their values).
    List,
    /// Delete a token; its passwords stop working at once.
    Delete(TokenDelete),
    /// Manage a token's passwords.
    Credential(TokenCredentialArgs),
}

#[derive(Args)]
struct TokenName {
    /// Name of the token.
    #[arg(long, short = 'n')]
    name: String,
}

#[derive(Args)]
struct TokenDelete {
    /// Name of the token.
    #[arg(long, short = 'n')]
    name: String,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Args)]
struct TokenCreate {
    /// Name of the token: 5 to 50 letters, digits or '-'.
    #[arg(long, short = 'n')]
    name: String,
    /// The scope map the token uses: a user-defined one or a system one such as
    /// _repositories_pull.
    #[arg(
        long,
        required_unless_present = "repository",
        conflicts_with = "repository"
    )]
    scope_map: Option<String>,
    #[command(flatten)]
    repository: Rules<TokenRepository>,
    /// Status of the token.
    #[arg(long, value_enum, default_value = "enabled")]
    status: Status,
    /// Do not generate passwords (generate them later with `token credential generate`).
    #[arg(long)]
    no_passwords: bool,
    /// Days until the passwords expire (default: never).
    #[arg(long, visible_alias = "days", conflicts_with_all = ["expiration", "no_passwords"],
          value_parser = clap::value_parser!(u32).range(1..=3_650_000))]
    expiration_in_days: Option<u32>,
    /// When the passwords expire, in RFC 3339, e.g. 2027-12-31T12:59:59Z (default: never).
    #[arg(long, conflicts_with = "no_passwords")]
    expiration: Option<String>,
}

#[derive(Args)]
struct TokenUpdate {
    /// Name of the token.
    #[arg(long, short = 'n')]
    name: String,
    /// The scope map the token uses from now on.
    #[arg(long)]
    scope_map: Option<String>,
    /// Status of the token; a disabled token's passwords are refused.
    #[arg(long, value_enum)]
    status: Option<Status>,
}

#[derive(Args)]
struct TokenCredentialArgs {
    #[command(subcommand)]
    command: TokenCredentialCommand,
}

#[derive(Subcommand)]
enum TokenCredentialCommand {
    /// Generate (or regenerate) a token's passwords and show them: the only time they are
    /// shown. Without --password1 or --password2, both.
    Generate(CredentialGenerate),
    /// Delete a token's passwords; they stop working at once.
    Delete(CredentialDelete),
}

#[derive(Args)]
struct CredentialGenerate {
    /// Name of the token.
    #[arg(long, short = 'n')]
    name: String,
    /// Generate password1.
    #[arg(long)]
    password1: bool,
    /// Generate password2.
    #[arg(long)]
    password2: bool,
    /// Days until the passwords expire (default: never).
    #[arg(long, visible_alias = "days", conflicts_with = "expiration",
          value_parser = clap::value_parser!(u32).range(1..=3_650_000))]
    expiration_in_days: Option<u32>,
    /// When the passwords expire, in RFC 3339, e.g. 2027-12-31T12:59:59Z (default: never).
    #[arg(long)]
    expiration: Option<String>,
}

#[derive(Args)]
struct CredentialDelete {
    /// Name of the token.
    #[arg(long, short = 'n')]
    name: String,
    /// Delete password1.
    #[arg(long, required_unless_present = "password2")]
    password1: bool,
    /// Delete password2.
    #[arg(long)]
    password2: bool,
}

// ---- scope maps -----------------------------------------------------------------------------

#[derive(Args)]
pub struct ScopeMapArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: ScopeMapCommand,
}

#[derive(Subcommand)]
enum ScopeMapCommand {
    /// Create a scope map: the repositories and actions a token using it may access.
    Create(ScopeMapCreate),
    /// Add or remove repository actions, or change the description. Changes apply at once
    /// to every token that uses the scope map.
    Update(ScopeMapUpdate),
    /// Show a scope map.
    Show(ScopeMapName),
    /// List scope maps, the five system ones included.
    List,
    /// Delete a scope map (refused while a token uses it).
    Delete(ScopeMapDelete),
}

#[derive(Args)]
struct ScopeMapName {
    /// Name of the scope map.
    #[arg(long, short = 'n')]
    name: String,
}

#[derive(Args)]
struct ScopeMapDelete {
    /// Name of the scope map.
    #[arg(long, short = 'n')]
    name: String,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Args)]
struct ScopeMapCreate {
    /// Name of the scope map: 5 to 50 letters, digits, '-' or '_'.
    #[arg(long, short = 'n')]
    name: String,
    #[command(flatten)]
    repository: Rules<ScopeMapRepository>,
    /// Description, at most 256 characters.
    #[arg(long)]
    description: Option<String>,
}

#[derive(Args)]
struct ScopeMapUpdate {
    /// Name of the scope map.
    #[arg(long, short = 'n')]
    name: String,
    #[command(flatten)]
    add_repository: Rules<AddRepository>,
    #[command(flatten)]
    remove_repository: Rules<RemoveRepository>,
    /// New description, at most 256 characters.
    #[arg(long)]
    description: Option<String>,
}

// ---- admin credentials and registry settings ------------------------------------------------

#[derive(Args)]
pub struct CredentialArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: CredentialCommand,
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Show the admin user's name and both passwords.
    Show,
    /// Regenerate one of the admin user's passwords and show both.
    Renew(RenewArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum AdminPassword {
    Password,
    Password2,
}

#[derive(Args)]
struct RenewArgs {
    /// The password to regenerate.
    #[arg(long, value_enum)]
    password_name: AdminPassword,
}

#[derive(Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Show the registry: login server, admin user and anonymous pull settings (`az acr show`).
    Show,
    /// Turn the admin user or anonymous pull on or off (`az acr update`).
    Update(RegistryUpdate),
}

#[derive(Args)]
struct RegistryUpdate {
    /// Whether the admin user (user name: the registry's name) may sign in.
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    admin_enabled: Option<bool>,
    /// Whether anyone may pull and read metadata without credentials.
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    anonymous_pull_enabled: Option<bool>,
}

// ---- running --------------------------------------------------------------------------------

async fn run<F, Fut>(conn: &Conn, f: F) -> i32
where
    F: FnOnce(Client, Output) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let res = match Client::connect(conn).await {
        Ok(c) => f(c, conn.output).await,
        Err(e) => Err(e),
    };
    finish(res)
}

/// Runs one `wharf token` command and returns the process's exit status.
pub async fn token(a: TokenArgs) -> i32 {
    run(&a.conn, |c, out| token_inner(c, a.command, out)).await
}

/// Runs one `wharf scope-map` command and returns the process's exit status.
pub async fn scope_map(a: ScopeMapArgs) -> i32 {
    run(&a.conn, |c, out| scope_map_inner(c, a.command, out)).await
}

/// Runs one `wharf credential` command and returns the process's exit status.
pub async fn credential(a: CredentialArgs) -> i32 {
    run(&a.conn, |c, out| credential_inner(c, a.command, out)).await
}

/// Runs one `wharf registry` command and returns the process's exit status.
pub async fn registry(a: RegistryArgs) -> i32 {
    run(&a.conn, |c, out| registry_inner(c, a.command, out)).await
}

fn token_path(c: &Client, name: &str) -> Result<String, String> {
    Ok(c.arm_path(&format!("/tokens/{}", name_seg("token", name)?)))
}

fn scope_map_path(c: &Client, name: &str) -> Result<String, String> {
    Ok(c.arm_path(&format!("/scopeMaps/{}", name_seg("scope map", name)?)))
}

fn scope_map_id(c: &Client, name: &str) -> Result<String, String> {
    Ok(format!(
        "{}/scopeMaps/{}",
        c.registry_id(),
        name_seg("scope map", name)?
    ))
}

/// `REPO ACTION…` groups as scope-map actions, the way az builds them: repository lower-cased,
/// only the five repository actions, duplicates dropped (order kept).
fn parse_actions(rules: &[Vec<String>]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for rule in rules {
        let Some((repo, actions)) = rule.split_first() else {
            continue;
        };
        let repo = repo.to_lowercase();
        for a in actions {
            let a = a.to_lowercase();
            if !REPO_ACTIONS.contains(&a.as_str()) {
                return Err(format!(
                    "invalid action {a:?} for repository {repo:?}: valid actions are {}",
                    REPO_ACTIONS.join(", ")
                ));
            }
            let full = format!("repositories/{repo}/{a}");
            if !out.contains(&full) {
                out.push(full);
            }
        }
    }
    Ok(out)
}

/// The `expiry` to send: in N days, as given, or none (never).
fn expiry(days: Option<u32>, at: Option<String>) -> Result<Option<String>, String> {
    match (days, at) {
        (Some(d), _) => chrono::Utc::now()
            .checked_add_signed(chrono::TimeDelta::days(i64::from(d)))
            .map(|t| Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
            .ok_or_else(|| format!("--expiration-in-days {d}: too far in the future")),
        (None, at) => Ok(at),
    }
}

/// Asks before something permanent, as az does; `--yes` skips the question, and without a
/// terminal to ask on the command needs it.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<(), String> {
    if yes {
        return Ok(());
    }
    if !io::stdin().is_terminal() {
        return Err(format!(
            "{question} Confirm with --yes (there is no terminal to ask on)"
        ));
    }
    // A blocking read on the runtime's thread is fine here: the CLI does nothing else while it
    // waits for the user.
    let mut err = io::stderr().lock();
    let _ = write!(err, "{question} Continue? (y/N): ");
    let _ = err.flush();
    let mut answer = String::new();
    io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err("cancelled".into())
    }
}

/// The login server to name in the `docker login` hint: the registry's, or else the host of
/// --server.
async fn login_server(c: &Client) -> String {
    if let Ok(r) = c.call(Method::GET, &c.arm_path(""), None).await
        && let Some(l) = r["properties"]["loginServer"].as_str()
        && !l.is_empty()
    {
        return l.to_owned();
    }
    let b = c.base();
    b.split_once("://").map(|(_, h)| h).unwrap_or(b).to_owned()
}

async fn token_inner(c: Client, cmd: TokenCommand, out: Output) -> Result<String, String> {
    Ok(match cmd {
        TokenCommand::Create(a) => token_create(&c, a, out).await?,
        TokenCommand::Update(a) => {
            let mut props = serde_json::Map::new();
            if let Some(m) = &a.scope_map {
                props.insert("scopeMapId".into(), json!(scope_map_id(&c, m)?));
            }
            if let Some(st) = a.status {
                props.insert("status".into(), json!(st.as_str()));
            }
            if props.is_empty() {
                return Err("nothing to update: give --scope-map and/or --status".into());
            }
            let t = c
                .call(
                    Method::PATCH,
                    &token_path(&c, &a.name)?,
                    Some(json!({ "properties": props })),
                )
                .await?;
            render_tokens(&[flatten(&c.object(t, "a token")?)], out, false)?
        }
        TokenCommand::Show(a) => {
            let t = c.call(Method::GET, &token_path(&c, &a.name)?, None).await?;
            render_tokens(&[flatten(&c.object(t, "a token")?)], out, false)?
        }
        TokenCommand::List => {
            let v = c.call(Method::GET, &c.arm_path("/tokens"), None).await?;
            let list: Vec<Value> = c
                .list(&v, "a list of tokens")?
                .iter()
                .map(flatten)
                .collect();
            render_tokens(&list, out, true)?
        }
        TokenCommand::Delete(a) => {
            let path = token_path(&c, &a.name)?;
            confirm(
                &format!(
                    "Deleting token {} is permanent: its passwords stop working.",
                    a.name
                ),
                a.yes,
            )?;
            c.call(Method::DELETE, &path, None).await?;
            String::new()
        }
        TokenCommand::Credential(TokenCredentialArgs { command }) => match command {
            TokenCredentialCommand::Generate(a) => {
                let names = match (a.password1, a.password2) {
                    (true, false) => Some("password1"),
                    (false, true) => Some("password2"),
                    // Both or neither: no name, and the server makes both (as az does).
                    _ => None,
                };
                let v = generate(&c, &a.name, names, a.expiration_in_days, a.expiration).await?;
                render_passwords(&v, out)?
            }
            TokenCredentialCommand::Delete(a) => {
                let path = token_path(&c, &a.name)?;
                let t = c.call(Method::GET, &path, None).await?;
                let t = c.object(t, "a token")?;
                let existing: Vec<String> = t["properties"]["credentials"]["passwords"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p["name"].as_str())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut delete = Vec::new();
                if a.password1 {
                    delete.push("password1");
                }
                if a.password2 {
                    delete.push("password2");
                }
                for d in &delete {
                    if !existing.iter().any(|e| e == d) {
                        return Err(format!("token {} has no {d}", a.name));
                    }
                }
                // The PATCH names the passwords to keep (acr-auth.md §3.2).
                let keep: Vec<Value> = existing
                    .iter()
                    .filter(|e| !delete.contains(&e.as_str()))
                    .map(|e| json!({ "name": e }))
                    .collect();
                let body = json!({"properties": {"credentials": {"passwords": keep}}});
                let t = c.call(Method::PATCH, &path, Some(body)).await?;
                render_tokens(&[flatten(&c.object(t, "a token")?)], out, false)?
            }
        },
    })
}

/// `generateCredentials` for a token: `{username, passwords}` with the values.
async fn generate(
    c: &Client,
    token: &str,
    name: Option<&str>,
    days: Option<u32>,
    at: Option<String>,
) -> Result<Value, String> {
    let mut body = json!({
        "tokenId": format!("{}/tokens/{}", c.registry_id(), name_seg("token", token)?),
    });
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    if let Some(e) = expiry(days, at)? {
        body["expiry"] = json!(e);
    }
    let v = c
        .call(
            Method::POST,
            &c.arm_path("/generateCredentials"),
            Some(body),
        )
        .await?;
    let v = c.object(v, "generated credentials")?;
    if !v["passwords"].is_array() {
        return Err(c.shape_error("generated credentials"));
    }
    Ok(v)
}

async fn token_create(c: &Client, a: TokenCreate, out: Output) -> Result<String, String> {
    let path = token_path(c, &a.name)?;
    let scope_map = match a.scope_map {
        Some(m) => m,
        None => default_scope_map(c, &a.name, &a.repository.groups).await?,
    };
    let body = json!({"properties": {
        "scopeMapId": scope_map_id(c, &scope_map)?,
        "status": a.status.as_str(),
    }});
    let t = c.call(Method::PUT, &path, Some(body)).await?;
    let mut t = flatten(&c.object(t, "a token")?);
    if a.no_passwords {
        return render_tokens(&[t], out, false);
    }
    let creds = generate(c, &a.name, None, a.expiration_in_days, a.expiration).await?;
    // As az shows it: the token, its credentials holding the user name and password values.
    t["credentials"]["username"] = creds["username"].clone();
    t["credentials"]["passwords"] = creds["passwords"].clone();
    let password1 = creds["passwords"].as_array().and_then(|ps| {
        ps.iter()
            .find(|p| p["name"] == "password1")
            .or_else(|| ps.first())
            .and_then(|p| p["value"].as_str())
    });
    if let Some(p) = password1 {
        report_warning(&format!(
            "Store the generated passwords safely: they cannot be shown again. To sign in: \
             docker login {} -u {} -p {p}",
            login_server(c).await,
            s(&creds["username"]),
        ));
    }
    if out == Output::Table && !query_active() {
        // The token's row, then the passwords' rows: the values must not be lost to the
        // table's one-line-per-token columns.
        Ok(format!(
            "{}\n{}",
            render_tokens(&[t], out, false)?,
            render_passwords(&creds, out)?
        ))
    } else {
        // az's output: the token, its credentials holding the password values (`--query
        // credentials.passwords[0].value -o tsv` gets one).
        render_tokens(&[t], out, false)
    }
}

/// `<token>-scope-map` with these actions: created, or reused if it grants exactly them (as
/// az's `create_default_scope_map` does; other actions are an error, not a silent change).
async fn default_scope_map(
    c: &Client,
    token: &str,
    rules: &[Vec<String>],
) -> Result<String, String> {
    let name = format!("{token}-scope-map");
    let actions = parse_actions(rules)?;
    let path = scope_map_path(c, &name)?;
    match c.get_opt(&path).await? {
        Some(m) => {
            let mut have: Vec<String> = m["properties"]["actions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let mut want = actions.clone();
            have.sort();
            want.sort();
            if have != want {
                return Err(format!(
                    "the scope map {name} already exists with other actions; change it with \
                     `wharf scope-map update -n {name} --add-repository … --remove-repository …`, \
                     or create the token with --scope-map {name}"
                ));
            }
            Ok(name)
        }
        None => {
            let body = json!({"properties": {
                "actions": actions,
                "description": format!("Created by token: {token}"),
            }});
            c.call(Method::PUT, &path, Some(body)).await?;
            Ok(name)
        }
    }
}

/// A token password's expiry for a table: "never", or "" when there is no such password.
fn password_expiry(t: &Value, name: &str) -> String {
    t["credentials"]["passwords"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .map(|p| match p["expiry"].as_str() {
            Some(e) => e.to_owned(),
            None => "never".to_owned(),
        })
        .unwrap_or_default()
}

fn render_tokens(list: &[Value], out: Output, as_list: bool) -> Result<String, String> {
    let v = if as_list {
        Value::Array(list.to_vec())
    } else {
        list.first().cloned().unwrap_or(Value::Null)
    };
    render_rows(
        &v,
        out,
        &[
            "NAME",
            "SCOPE MAP",
            "STATUS",
            "PASSWORD1 EXPIRY",
            "PASSWORD2 EXPIRY",
            "CREATED",
        ],
        |t| {
            let map = s(&t["scopeMapId"]);
            vec![
                s(&t["name"]),
                map.rsplit('/').next().unwrap_or("").to_owned(),
                s(&t["status"]),
                password_expiry(t, "password1"),
                password_expiry(t, "password2"),
                s(&t["creationDate"]),
            ]
        },
        as_list,
    )
}

/// `generateCredentials`' answer: one row per password.
fn render_passwords(v: &Value, out: Output) -> Result<String, String> {
    if out != Output::Table || query_active() {
        return render_rows(v, out, &[], |_| Vec::new(), false);
    }
    let user = s(&v["username"]);
    render_rows(
        &v["passwords"],
        out,
        &["USERNAME", "PASSWORD NAME", "VALUE", "EXPIRY"],
        |p| {
            vec![
                user.clone(),
                s(&p["name"]),
                s(&p["value"]),
                p["expiry"].as_str().unwrap_or("never").to_owned(),
            ]
        },
        true,
    )
}

async fn scope_map_inner(c: Client, cmd: ScopeMapCommand, out: Output) -> Result<String, String> {
    Ok(match cmd {
        ScopeMapCommand::Create(a) => {
            let mut props = json!({ "actions": parse_actions(&a.repository.groups)? });
            if let Some(d) = a.description {
                props["description"] = json!(d);
            }
            let m = c
                .call(
                    Method::PUT,
                    &scope_map_path(&c, &a.name)?,
                    Some(json!({ "properties": props })),
                )
                .await?;
            render_scope_maps(&[flatten(&c.object(m, "a scope map")?)], out, false)?
        }
        ScopeMapCommand::Update(a) => {
            let path = scope_map_path(&c, &a.name)?;
            let add = parse_actions(&a.add_repository.groups)?;
            let remove = parse_actions(&a.remove_repository.groups)?;
            // The result would depend on the order the two are applied in (az refuses too).
            let both: Vec<&str> = add
                .iter()
                .filter(|x| remove.contains(x))
                .map(|x| x.trim_start_matches("repositories/"))
                .collect();
            if !both.is_empty() {
                return Err(format!(
                    "ambiguous update: both added and removed: {}",
                    both.join(", ")
                ));
            }
            let mut props = serde_json::Map::new();
            if !add.is_empty() || !remove.is_empty() {
                let m = c.call(Method::GET, &path, None).await?;
                let m = c.object(m, "a scope map")?;
                let mut actions: Vec<String> = m["properties"]["actions"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                for x in add {
                    if !actions.contains(&x) {
                        actions.push(x);
                    }
                }
                actions.retain(|x| !remove.contains(x));
                // A PATCH replaces the whole list: send the merged one (acr-auth.md §3.3).
                props.insert("actions".into(), json!(actions));
            }
            if let Some(d) = a.description {
                props.insert("description".into(), json!(d));
            }
            if props.is_empty() {
                return Err(
                    "nothing to update: give --add-repository, --remove-repository \
                            and/or --description"
                        .into(),
                );
            }
            let m = c
                .call(Method::PATCH, &path, Some(json!({ "properties": props })))
                .await?;
            render_scope_maps(&[flatten(&c.object(m, "a scope map")?)], out, false)?
        }
        ScopeMapCommand::Show(a) => {
            let m = c
                .call(Method::GET, &scope_map_path(&c, &a.name)?, None)
                .await?;
            render_scope_maps(&[flatten(&c.object(m, "a scope map")?)], out, false)?
        }
        ScopeMapCommand::List => {
            let v = c.call(Method::GET, &c.arm_path("/scopeMaps"), None).await?;
            let list: Vec<Value> = c
                .list(&v, "a list of scope maps")?
                .iter()
                .map(flatten)
                .collect();
            render_scope_maps(&list, out, true)?
        }
        ScopeMapCommand::Delete(a) => {
            let path = scope_map_path(&c, &a.name)?;
            confirm(
                &format!("Deleting scope map {} is permanent.", a.name),
                a.yes,
            )?;
            c.call(Method::DELETE, &path, None).await?;
            String::new()
        }
    })
}

fn render_scope_maps(list: &[Value], out: Output, as_list: bool) -> Result<String, String> {
    let v = if as_list {
        Value::Array(list.to_vec())
    } else {
        list.first().cloned().unwrap_or(Value::Null)
    };
    render_rows(
        &v,
        out,
        &["NAME", "TYPE", "CREATED", "DESCRIPTION"],
        |m| {
            vec![
                s(&m["name"]),
                s(&m["typePropertiesType"]),
                s(&m["creationDate"]),
                s(&m["description"]),
            ]
        },
        as_list,
    )
}

async fn credential_inner(
    c: Client,
    cmd: CredentialCommand,
    out: Output,
) -> Result<String, String> {
    // As az does, client-side: the admin user's passwords are of no use while it is disabled.
    let r = c.call(Method::GET, &c.arm_path(""), None).await?;
    if r["properties"]["adminUserEnabled"] != json!(true) {
        return Err(format!(
            "the admin user of registry {} is disabled: enable it with \
             `wharf registry update --admin-enabled true`",
            c.registry()
        ));
    }
    let v = match cmd {
        CredentialCommand::Show => {
            c.call(Method::POST, &c.arm_path("/listCredentials"), None)
                .await?
        }
        CredentialCommand::Renew(a) => {
            let name = match a.password_name {
                AdminPassword::Password => "password",
                AdminPassword::Password2 => "password2",
            };
            c.call(
                Method::POST,
                &c.arm_path("/regenerateCredential"),
                Some(json!({ "name": name })),
            )
            .await?
        }
    };
    let v = c.object(v, "the admin credentials")?;
    let value = |name: &str| {
        v["passwords"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .map(|p| s(&p["value"]))
            .unwrap_or_default()
    };
    let (p1, p2) = (value("password"), value("password2"));
    render_rows(
        &v,
        out,
        &["USERNAME", "PASSWORD", "PASSWORD2"],
        |v| vec![s(&v["username"]), p1.clone(), p2.clone()],
        false,
    )
}

async fn registry_inner(c: Client, cmd: RegistryCommand, out: Output) -> Result<String, String> {
    let r = match cmd {
        RegistryCommand::Show => c.call(Method::GET, &c.arm_path(""), None).await?,
        RegistryCommand::Update(a) => {
            let mut props = serde_json::Map::new();
            if let Some(v) = a.admin_enabled {
                props.insert("adminUserEnabled".into(), json!(v));
            }
            if let Some(v) = a.anonymous_pull_enabled {
                props.insert("anonymousPullEnabled".into(), json!(v));
            }
            if props.is_empty() {
                return Err(
                    "nothing to update: give --admin-enabled and/or --anonymous-pull-enabled"
                        .into(),
                );
            }
            c.call(
                Method::PATCH,
                &c.arm_path(""),
                Some(json!({ "properties": props })),
            )
            .await?
        }
    };
    let r = flatten(&c.object(r, "a registry")?);
    render_rows(
        &r,
        out,
        &[
            "NAME",
            "LOCATION",
            "SKU",
            "LOGIN SERVER",
            "ADMIN ENABLED",
            "ANONYMOUS PULL",
        ],
        |r| {
            vec![
                s(&r["name"]),
                s(&r["location"]),
                s(&r["sku"]["name"]),
                s(&r["loginServer"]),
                s(&r["adminUserEnabled"]),
                s(&r["anonymousPullEnabled"]),
            ]
        },
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(groups: &[&[&str]]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| g.iter().map(|s| (*s).to_owned()).collect())
            .collect()
    }

    #[test]
    fn actions_are_built_as_az_builds_them() {
        let a = parse_actions(&rules(&[
            &["Team/App", "content/read", "CONTENT/WRITE"],
            &["tools/*", "metadata/read", "content/read"],
            &["team/app", "content/read"],
        ]))
        .unwrap();
        assert_eq!(
            a,
            [
                "repositories/team/app/content/read",
                "repositories/team/app/content/write",
                "repositories/tools/*/metadata/read",
                "repositories/tools/*/content/read",
            ]
        );
        let e = parse_actions(&rules(&[&["app", "pull"]])).unwrap_err();
        assert!(e.contains("\"pull\"") && e.contains("content/read"), "{e}");
    }

    #[test]
    fn expiry_in_days_is_rfc3339_in_the_future() {
        let e = expiry(Some(30), None).unwrap().unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(&e).unwrap();
        assert!(t > chrono::Utc::now() + chrono::TimeDelta::days(29));
        assert_eq!(
            expiry(None, Some("2030-01-01T00:00:00Z".into())).unwrap(),
            Some("2030-01-01T00:00:00Z".into())
        );
        assert_eq!(expiry(None, None).unwrap(), None);
    }
}
