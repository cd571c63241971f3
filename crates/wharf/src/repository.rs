//! `wharf repository …`: `az acr repository` over the registry's `/acr/v1` data plane
//! (acr-auth.md §5): list, show, show-tags, show-manifests, update, untag, delete, with az's
//! flags and az's output shapes.
//!
//! Authentication is the data plane's, as az's: the admin user or a token user is sent as
//! Basic, which ACR accepts directly; when the server answers 401 with a Bearer challenge, the
//! CLI asks the token server for the challenge's scope (with the user and password, or with
//! the management token exchanged for a refresh token as az exchanges an Entra token, or
//! anonymously) and retries once with the access token. The token requests go to the
//! `--server` given, never to another host a challenge names: the credentials stay with the
//! server the user chose.

use clap::{Args, Subcommand, ValueEnum};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{Client, Conn, Output, error_message, finish, render_rows};

#[derive(Args)]
pub struct RepositoryArgs {
    #[command(flatten)]
    conn: Conn,
    /// Name of the registry: az acr repository's spelling of --registry, checked the same way.
    #[arg(long, short = 'n', global = true)]
    name: Option<String>,
    #[command(subcommand)]
    command: RepositoryCommand,
}

#[derive(Subcommand)]
enum RepositoryCommand {
    /// List the repositories of the registry.
    List(ListArgs),
    /// Show the attributes of a repository or an image.
    Show(Target),
    /// Show the tags of a repository.
    ShowTags(ShowArgs),
    /// Show the manifests of a repository.
    ShowManifests(ShowArgs),
    /// Update the attributes (locks) of a repository or an image.
    Update(UpdateArgs),
    /// Remove a tag; the manifest it points to and the repository stay.
    Untag(UntagArgs),
    /// Delete a repository, or an image by tag or digest (its manifest, every tag that points
    /// to it, and what only it referenced).
    Delete(DeleteArgs),
}

/// `--orderby`.
#[derive(Clone, Copy, ValueEnum)]
enum OrderBy {
    /// Oldest first (by last update time).
    #[value(name = "time_asc")]
    TimeAsc,
    /// Newest first (by last update time).
    #[value(name = "time_desc")]
    TimeDesc,
}

impl OrderBy {
    /// The data plane's spelling (acr-auth.md §5.1).
    fn param(self) -> &'static str {
        match self {
            OrderBy::TimeAsc => "timeasc",
            OrderBy::TimeDesc => "timedesc",
        }
    }
}

#[derive(Args)]
struct ListArgs {
    /// Most repositories to list (all by default).
    #[arg(long)]
    top: Option<usize>,
    /// Order by last update time: time_asc or time_desc. Sent as az sends it; the catalog of
    /// the /acr/v1 API has no order parameter, so Wharf lists repositories by name.
    #[arg(long, value_enum)]
    orderby: Option<OrderBy>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// Name of a repository, e.g. "team/app".
    #[arg(long)]
    repository: Option<String>,
    /// An image: name:tag or name@digest, e.g. "team/app:v1" or "team/app@sha256:…".
    #[arg(long, short = 't')]
    image: Option<String>,
}

#[derive(Args)]
struct ShowArgs {
    /// Name of the repository.
    #[arg(long)]
    repository: String,
    /// Most items to show (all by default).
    #[arg(long)]
    top: Option<usize>,
    /// Order by last update time: time_asc or time_desc.
    #[arg(long, value_enum)]
    orderby: Option<OrderBy>,
    /// Show every attribute of each item, not only its name (tags) or digest, tags and
    /// timestamp (manifests).
    #[arg(long)]
    detail: bool,
}

#[derive(Args)]
struct UpdateArgs {
    #[command(flatten)]
    target: Target,
    /// Whether the repository or image may be deleted.
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    delete_enabled: Option<bool>,
    /// Whether the repository or image may be written (pushed over, updated, deleted).
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    write_enabled: Option<bool>,
    /// Whether the repository or image may be read (pulled).
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    read_enabled: Option<bool>,
    /// Whether the repository or image appears in listings.
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    list_enabled: Option<bool>,
}

#[derive(Args)]
struct UntagArgs {
    /// The tag to remove, as name:tag.
    #[arg(long, short = 't')]
    image: String,
}

#[derive(Args)]
struct DeleteArgs {
    #[command(flatten)]
    target: Target,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// An image reference: a tag or a digest.
enum Reference {
    Tag(String),
    Digest(String),
}

/// A repository name as a path: the registry's grammar (lower-case letters and digits joined
/// by `.`, `_`, `__`, `-` and `/`), so no name can change which route is called.
fn repo_path(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "repository {name:?}: a name is lower-case letters and digits, separated by '.', \
             '_', '-' or '/'"
        ))
    }
}

/// `name:tag` or `name@digest`, as az's `_parse_image_name`.
fn parse_image(image: &str) -> Result<(String, Reference), String> {
    let bad = || format!("image {image:?}: expected name:tag or name@digest");
    if let Some((name, digest)) = image.split_once('@') {
        let (alg, hex) = digest.split_once(':').ok_or_else(bad)?;
        let ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            && hex.len() >= 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(bad());
        }
        return Ok((
            repo_path(name)?.to_owned(),
            Reference::Digest(digest.into()),
        ));
    }
    // The tag follows the last ':' after the last '/' (a name never holds a ':').
    let (name, tag) = image.rsplit_once(':').ok_or_else(bad)?;
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if !ok {
        return Err(bad());
    }
    Ok((repo_path(name)?.to_owned(), Reference::Tag(tag.into())))
}

/// The data plane's client: one call with the CLI's credentials, the token flow on a Bearer
/// challenge, `Link` paging.
struct DataPlane {
    c: Client,
    /// The access token of the last challenge answered, and its scope: reused while the
    /// server asks for the same scope.
    bearer: std::sync::Mutex<Option<(String, String)>>,
}

/// The parameters of a `Bearer` challenge (`realm`, `service`, `scope`, quoted as RFC 7235
/// has them).
fn challenge(www: &str) -> Option<Vec<(String, String)>> {
    let rest = www.trim_start();
    let rest = rest
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("bearer "))
        .map(|_| &rest[7..])?;
    let mut params = Vec::new();
    let mut s = rest;
    while let Some(eq) = s.find('=') {
        let key = s[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = &s[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_owned(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((key, value));
        s = next;
    }
    Some(params)
}

impl DataPlane {
    fn new(c: Client) -> Self {
        DataPlane {
            c,
            bearer: std::sync::Mutex::new(None),
        }
    }

    /// One data-plane call. The status, the `Link` to the next page if any, and the JSON.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Option<String>, Value), String> {
        let cached = self.bearer.lock().ok().and_then(|b| b.clone());
        let mut resp = self
            .attempt(
                method.clone(),
                path,
                body,
                cached.as_ref().map(|(_, t)| t.as_str()),
            )
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let www = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(params) = www.as_deref().and_then(challenge) {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let scope = get("scope");
                let token = self.token(&get("realm"), &get("service"), &scope).await?;
                if let Ok(mut b) = self.bearer.lock() {
                    *b = Some((scope, token.clone()));
                }
                resp = self.attempt(method, path, body, Some(&token)).await?;
            }
        }
        let link = resp
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let (status, bytes) = self.c.read(resp).await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(&bytes));
        }
        let v = self.c.json_body(status, &bytes)?;
        if !status.is_success() {
            return Err(error_message(status, &v));
        }
        Ok((status, link, v))
    }

    async fn attempt(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        bearer: Option<&str>,
    ) -> Result<reqwest::Response, String> {
        let mut req = self
            .c
            .http()
            .request(method, format!("{}{path}", self.c.base()));
        req = match (bearer, self.c.basic()) {
            (Some(t), _) => req.bearer_auth(t),
            (None, Some((u, p))) => req.basic_auth(u, Some(p)),
            // The management token is not a data-plane credential: it is exchanged on the
            // challenge.
            (None, None) => req,
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        self.c.execute(req).await
    }

    /// An access token for `scope` from the server's token server.
    async fn token(&self, realm: &str, service: &str, scope: &str) -> Result<String, String> {
        // Only the realm's path is used: the token request, credentials included, goes to the
        // server the user named.
        let path = reqwest::Url::parse(realm)
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|_| "/oauth2/token".to_owned());
        let path = if path.is_empty() || path == "/" {
            "/oauth2/token".to_owned()
        } else {
            path
        };
        let url = format!("{}{path}", self.c.base());
        let req = if let Some(mgmt) = self.c.management_token() {
            let exchange = self
                .c
                .http()
                .post(format!("{}/oauth2/exchange", self.c.base()))
                .form(&[
                    ("grant_type", "access_token"),
                    ("service", service),
                    ("access_token", mgmt),
                ]);
            let v = self.token_call(exchange).await?;
            let refresh = v["refresh_token"]
                .as_str()
                .ok_or_else(|| self.c.shape_error("a refresh token"))?
                .to_owned();
            self.c.http().post(url).form(&[
                ("grant_type", "refresh_token"),
                ("service", service),
                ("scope", scope),
                ("refresh_token", &refresh),
            ])
        } else {
            let req = self
                .c
                .http()
                .get(url)
                .query(&[("service", service), ("scope", scope)]);
            match self.c.basic() {
                Some((u, p)) => req.basic_auth(u, Some(p)),
                None => req,
            }
        };
        let v = self.token_call(req).await?;
        v["access_token"]
            .as_str()
            .or_else(|| v["token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| self.c.shape_error("an access token"))
    }

    async fn token_call(&self, req: reqwest::RequestBuilder) -> Result<Value, String> {
        let resp = self.c.execute(req).await?;
        let (status, bytes) = self.c.read(resp).await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(&bytes));
        }
        let v = self.c.json_body(status, &bytes)?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(error_message(status, &v))
        }
    }

    /// The message of a refusal: what was sent, and the server's reason.
    fn unauthorized(&self, body: &[u8]) -> String {
        let reason = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| {
                v["errors"][0]["message"]
                    .as_str()
                    .or_else(|| v["error"]["message"].as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "authentication required".into());
        let sent = if self.c.management_token().is_some() {
            "the management token (--token)"
        } else if self.c.basic().is_some() {
            "the user name and password given (--username, --password)"
        } else {
            "no credentials: give the admin user or a token user with --username and --password, \
             or the management token with --token"
        };
        format!(
            "the server at {} refused the request ({reason}); sent {sent}",
            self.c.base()
        )
    }

    /// Every item of a paged list (`key` of each page), following `Link` until `top` items.
    async fn all(
        &self,
        first: String,
        key: &str,
        top: Option<usize>,
    ) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let (_, link, v) = self.send(Method::GET, &path, None).await?;
            let page = v[key]
                .as_array()
                .ok_or_else(|| self.c.shape_error(&format!("a list of {key}")))?;
            items.extend(page.iter().cloned());
            if top.is_some_and(|t| items.len() >= t) {
                break;
            }
            // Only a relative link is followed, as the SDK does: a page elsewhere is not ours.
            next = link.filter(|l| l.starts_with('/'));
            if next.as_deref() == Some(path.as_str()) {
                break;
            }
        }
        if let Some(t) = top {
            items.truncate(t);
        }
        Ok(items)
    }
}

/// The target of a `Link: <…>; rel="next"` header.
fn next_link(h: &str) -> Option<String> {
    h.split(',').find_map(|part| {
        let (url, params) = part.trim().split_once(';')?;
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            })
            .then(|| url.to_owned())
    })
}

/// The query of a list's first page: az asks for pages of 100.
fn list_query(top: Option<usize>, orderby: Option<OrderBy>) -> String {
    let n = top.map_or(100, |t| t.clamp(1, 100));
    match orderby {
        Some(o) => format!("?n={n}&orderby={}", o.param()),
        None => format!("?n={n}"),
    }
}

/// Runs one `wharf repository` command and returns the process's exit status.
pub async fn run(mut a: RepositoryArgs) -> i32 {
    if let Some(n) = a.name.take() {
        if a.conn.registry.as_ref().is_some_and(|r| r != &n) {
            return finish(Err(
                "give the registry once: --name (-n) and --registry (-r) differ".into(),
            ));
        }
        a.conn.registry = Some(n);
    }
    let out = a.conn.output;
    // The data plane needs no ARM id: the server's names are looked up (through the
    // management API, which a token user may not call) only to check a -r, -g or
    // --subscription given.
    let check = a.conn.registry.is_some()
        || a.conn.resource_group.is_some()
        || a.conn.subscription.is_some();
    let client = if check {
        Client::connect(&a.conn).await
    } else {
        Client::new(&a.conn)
    };
    let res = match client {
        Ok(c) => run_inner(&DataPlane::new(c), a.command, out).await,
        Err(e) => Err(e),
    };
    finish(res)
}

/// The `/acr/v1` path of a repository or an image's tag or manifest.
fn attributes_path(t: &Target) -> Result<String, String> {
    match (&t.repository, &t.image) {
        (Some(r), None) => Ok(format!("/acr/v1/{}", repo_path(r)?)),
        (None, Some(i)) => Ok(match parse_image(i)? {
            (name, Reference::Tag(tag)) => format!("/acr/v1/{name}/_tags/{tag}"),
            (name, Reference::Digest(d)) => format!("/acr/v1/{name}/_manifests/{d}"),
        }),
        _ => Err("give --repository or --image".into()),
    }
}

async fn run_inner(dp: &DataPlane, cmd: RepositoryCommand, out: Output) -> Result<String, String> {
    let none = |_: &Value| Vec::new();
    match cmd {
        RepositoryCommand::List(a) => {
            let first = format!("/acr/v1/_catalog{}", list_query(a.top, a.orderby));
            let names = dp.all(first, "repositories", a.top).await?;
            render_rows(&Value::Array(names), out, &[], none, true)
        }
        RepositoryCommand::Show(t) => {
            let (_, _, v) = dp.send(Method::GET, &attributes_path(&t)?, None).await?;
            render_rows(&v, out, &[], none, false)
        }
        RepositoryCommand::ShowTags(a) => {
            let first = format!(
                "/acr/v1/{}/_tags{}",
                repo_path(&a.repository)?,
                list_query(a.top, a.orderby)
            );
            let tags = dp.all(first, "tags", a.top).await?;
            let v = if a.detail {
                Value::Array(tags)
            } else {
                Value::Array(tags.iter().map(|t| t["name"].clone()).collect())
            };
            render_rows(&v, out, &[], none, true)
        }
        RepositoryCommand::ShowManifests(a) => {
            let first = format!(
                "/acr/v1/{}/_manifests{}",
                repo_path(&a.repository)?,
                list_query(a.top, a.orderby)
            );
            let manifests = dp.all(first, "manifests", a.top).await?;
            let v = if a.detail {
                Value::Array(manifests)
            } else {
                // az's summary of a manifest.
                Value::Array(
                    manifests
                        .iter()
                        .map(|m| {
                            json!({
                                "digest": m["digest"],
                                "tags": m.get("tags").cloned().unwrap_or(json!([])),
                                "timestamp": m["lastUpdateTime"],
                            })
                        })
                        .collect(),
                )
            };
            render_rows(&v, out, &[], none, true)
        }
        RepositoryCommand::Update(a) => {
            let mut body = serde_json::Map::new();
            for (k, v) in [
                ("deleteEnabled", a.delete_enabled),
                ("writeEnabled", a.write_enabled),
                ("readEnabled", a.read_enabled),
                ("listEnabled", a.list_enabled),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if body.is_empty() {
                return Err(
                    "nothing to update: give --delete-enabled, --write-enabled, \
                     --read-enabled and/or --list-enabled"
                        .into(),
                );
            }
            let path = attributes_path(&a.target)?;
            let (_, _, v) = dp
                .send(Method::PATCH, &path, Some(&Value::Object(body)))
                .await?;
            render_rows(&v, out, &[], none, false)
        }
        RepositoryCommand::Untag(a) => {
            let (name, reference) = parse_image(&a.image)?;
            let Reference::Tag(tag) = reference else {
                return Err(format!(
                    "image {:?}: untag takes name:tag (to delete by digest, use delete --image)",
                    a.image
                ));
            };
            dp.send(Method::DELETE, &format!("/acr/v1/{name}/_tags/{tag}"), None)
                .await?;
            Ok(String::new())
        }
        RepositoryCommand::Delete(a) => match (&a.target.repository, &a.target.image) {
            (Some(r), None) => {
                let path = format!("/acr/v1/{}", repo_path(r)?);
                crate::access::confirm(
                    &format!(
                        "This operation will delete the repository '{r}' and all the images \
                         in it."
                    ),
                    a.yes,
                )?;
                let (_, _, v) = dp.send(Method::DELETE, &path, None).await?;
                render_rows(&v, out, &[], none, false)
            }
            (None, Some(i)) => {
                let (name, reference) = parse_image(i)?;
                let digest = match reference {
                    Reference::Digest(d) => d,
                    Reference::Tag(tag) => {
                        // The tag's manifest, as the SDK resolves it (acr-auth.md §5.1).
                        let (_, _, v) = dp
                            .send(Method::GET, &format!("/acr/v1/{name}/_tags/{tag}"), None)
                            .await?;
                        v["tag"]["digest"]
                            .as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| dp.c.shape_error("a tag with a digest"))?
                    }
                };
                crate::access::confirm(
                    &format!(
                        "This operation will delete the manifest '{name}@{digest}' and all the \
                         tags that point to it."
                    ),
                    a.yes,
                )?;
                dp.send(
                    Method::DELETE,
                    &format!("/v2/{name}/manifests/{digest}"),
                    None,
                )
                .await?;
                Ok(String::new())
            }
            _ => Err("give --repository or --image".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_parse_as_az_parses_them() {
        let (n, r) = parse_image("team/app:v1.2").unwrap();
        assert_eq!(n, "team/app");
        assert!(matches!(r, Reference::Tag(t) if t == "v1.2"));
        let d = format!("sha256:{}", "a".repeat(64));
        let (n, r) = parse_image(&format!("app@{d}")).unwrap();
        assert_eq!(n, "app");
        assert!(matches!(r, Reference::Digest(x) if x == d));
        for bad in [
            "app",
            "app:",
            "App:v1",
            "app@sha256",
            "app@sha256:zz",
            "../x:v1",
            "a/../b:v1",
            "app:v1?x=1",
            "app:v1/x",
            "team//app:v1",
        ] {
            assert!(parse_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_and_links_are_read() {
        let p = challenge(
            r#"Bearer realm="http://h/oauth2/token",service="h",scope="repository:a/b:metadata_read""#,
        )
        .unwrap();
        assert_eq!(p[0], ("realm".into(), "http://h/oauth2/token".into()));
        assert_eq!(
            p[2],
            ("scope".into(), "repository:a/b:metadata_read".into())
        );
        assert!(challenge(r#"Basic realm="x""#).is_none());
        assert_eq!(
            next_link(r#"</acr/v1/a%2Fb/_tags?last=v2&n=2&orderby=>; rel="next""#).as_deref(),
            Some("/acr/v1/a%2Fb/_tags?last=v2&n=2&orderby=")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }
}
