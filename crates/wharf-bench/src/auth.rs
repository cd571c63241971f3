//! Credentials for `wharf-bench run`, the two ways registries take them:
//!
//! - `--basic USER:PASSWORD`: `Authorization: Basic …` on every request, as
//!   Distribution's htpasswd auth and ACR/Wharf tokens-over-Basic are used.
//!   The value is encoded once, so each request only copies a header.
//! - `--bearer-flow`: the Docker token flow. A request goes out with the
//!   current token (none at first); on a 401 the `WWW-Authenticate` challenge
//!   says where to get one, and a token is fetched from the realm (with the
//!   Basic credentials, or anonymously without `--basic`) for every scope the
//!   run needs, so the timed loops never see a 401; then the request is sent
//!   again once. An expired token, or a scope the challenge names that was not
//!   asked for, is handled the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};

pub struct Auth {
    /// `Basic …`, when credentials were given.
    basic: Option<HeaderValue>,
    bearer_flow: bool,
    /// What requests carry, and a generation that each refresh bumps, so
    /// tasks that got a 401 at the same time refresh only once.
    current: RwLock<(u64, Option<HeaderValue>)>,
    /// Scopes asked for so far (`repository:<name>` → actions). The lock also
    /// serialises refreshes.
    scopes: tokio::sync::Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Tokens fetched from the realm, for the summary line.
    pub fetched: AtomicU64,
}

impl Auth {
    /// `basic` is `USER:PASSWORD` (the password may contain ':'); empty means
    /// none, so a script can pass `WHARF_BENCH_BASIC=` for a registry without
    /// auth. `scopes` are the `repository:<name>:<actions>` the run will need,
    /// asked for in the first token request.
    pub fn new(basic: Option<&str>, bearer_flow: bool, scopes: &[String]) -> Result<Auth> {
        let basic = match basic.filter(|c| !c.is_empty()) {
            None => None,
            Some(cred) => {
                if !cred.contains(':') {
                    bail!("--basic must be USER:PASSWORD");
                }
                let b64 = base64::engine::general_purpose::STANDARD.encode(cred);
                let mut v = HeaderValue::from_str(&format!("Basic {b64}"))?;
                // Keeps it out of reqwest's Debug output.
                v.set_sensitive(true);
                Some(v)
            }
        };
        let mut wanted = BTreeMap::new();
        for s in scopes {
            merge_scope(&mut wanted, s);
        }
        // Without the flow Basic goes out from the first request; with it, the
        // first request is anonymous, as a Docker client's /v2/ ping is.
        let first = if bearer_flow { None } else { basic.clone() };
        Ok(Auth {
            basic,
            bearer_flow,
            current: RwLock::new((0, first)),
            scopes: tokio::sync::Mutex::new(wanted),
            fetched: AtomicU64::new(0),
        })
    }

    pub fn has_credentials(&self) -> bool {
        self.basic.is_some() || self.bearer_flow
    }

    pub fn describe(&self) -> &'static str {
        match (self.bearer_flow, self.basic.is_some()) {
            (true, true) => "bearer flow with Basic at the realm",
            (true, false) => "bearer flow, anonymous at the realm",
            (false, true) => "Basic on every request",
            (false, false) => "none",
        }
    }

    fn current(&self) -> (u64, Option<HeaderValue>) {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends `rb` with the current credentials; in the bearer flow, a 401 is
    /// answered by fetching a token and sending once more.
    pub async fn send(&self, client: &Client, rb: RequestBuilder) -> Result<Response> {
        let (generation, value) = self.current();
        if !self.bearer_flow {
            return Ok(with(rb, value).send().await?);
        }
        // Bodies here are Bytes, so the clone is cheap; a streamed body could
        // not be resent and just returns its 401.
        let again = rb.try_clone();
        let resp = with(rb, value).send().await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(again) = again else {
            return Ok(resp);
        };
        self.refresh(client, generation, resp.headers()).await?;
        Ok(with(again, self.current().1).send().await?)
    }

    /// Answers the challenge in `headers` (a 401 to a request sent with
    /// generation `seen`).
    async fn refresh(&self, client: &Client, seen: u64, headers: &HeaderMap) -> Result<()> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(|| anyhow!("HTTP 401 without a WWW-Authenticate challenge"))?;
        let mut scopes = self.scopes.lock().await;
        let new_scope = match challenge.param("scope") {
            Some(s) => s
                .split(' ')
                .fold(false, |acc, s| merge_scope(&mut scopes, s) | acc),
            None => false,
        };
        // Another task refreshed while this one waited: its token serves,
        // unless this challenge named a scope nobody had asked for yet.
        if self.current().0 != seen && !new_scope {
            return Ok(());
        }
        let value = if challenge.scheme.eq_ignore_ascii_case("basic") {
            self.basic
                .clone()
                .ok_or_else(|| anyhow!("the registry wants Basic credentials: pass --basic"))?
        } else if challenge.scheme.eq_ignore_ascii_case("bearer") {
            let v = fetch_token(client, &challenge, &scopes, self.basic.as_ref()).await?;
            self.fetched.fetch_add(1, Ordering::Relaxed);
            v
        } else {
            bail!("unsupported auth scheme {:?}", challenge.scheme);
        };
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        *cur = (cur.0 + 1, Some(value));
        Ok(())
    }
}

fn with(rb: RequestBuilder, value: Option<HeaderValue>) -> RequestBuilder {
    match value {
        Some(v) => rb.header(AUTHORIZATION, v),
        None => rb,
    }
}

/// Adds one `type:name:actions` scope to `into`; true if it added an action.
fn merge_scope(into: &mut BTreeMap<String, BTreeSet<String>>, scope: &str) -> bool {
    // Actions are after the last ':' (names carry no ':'; "registry:catalog:*"
    // splits the same way).
    let Some((resource, actions)) = scope.trim().rsplit_once(':') else {
        return false;
    };
    let set = into.entry(resource.to_string()).or_default();
    let mut added = false;
    for a in actions.split(',').filter(|a| !a.is_empty()) {
        added |= set.insert(a.to_string());
    }
    added
}

async fn fetch_token(
    client: &Client,
    ch: &Challenge,
    scopes: &BTreeMap<String, BTreeSet<String>>,
    basic: Option<&HeaderValue>,
) -> Result<HeaderValue> {
    let realm = ch
        .param("realm")
        .ok_or_else(|| anyhow!("Bearer challenge without a realm"))?;
    let mut url = Url::parse(realm).with_context(|| format!("bearer realm {realm:?}"))?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(service) = ch.param("service") {
            q.append_pair("service", service);
        }
        for (resource, actions) in scopes {
            let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
            q.append_pair("scope", &format!("{resource}:{}", actions.join(",")));
        }
    }
    let resp = with(client.get(url), basic.cloned())
        .send()
        .await
        .context("GET token")?;
    let status = resp.status();
    if !status.is_success() {
        let body: String = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        bail!("token request to {realm}: HTTP {status}: {}", body.trim());
    }
    #[derive(serde::Deserialize)]
    struct TokenBody {
        token: Option<String>,
        access_token: Option<String>,
    }
    let body: TokenBody = resp.json().await.context("token response body")?;
    // Docker's spec names it `token`; OAuth2 servers say `access_token`.
    let token = body
        .token
        .or(body.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("token response from {realm} holds no token"))?;
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).context("token")?;
    v.set_sensitive(true);
    Ok(v)
}

/// One `WWW-Authenticate` challenge: `Scheme k="v",k2=v2`.
#[derive(Debug, PartialEq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the first challenge of a `WWW-Authenticate` value. Quoted values
/// may hold commas (`scope="repository:a:pull,push"`) and `\` escapes.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim_start();
    let (scheme, mut rest) = match value.find(' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        let mut val = String::new();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            rest = &quoted[end..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            val.push_str(rest[..end].trim());
            rest = &rest[end..];
        }
        params.push((key, val));
    }
    Some(Challenge {
        scheme: scheme.to_string(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_commas_in_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:5000/oauth2/token",service="127.0.0.1:5000",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.param("realm"), Some("http://127.0.0.1:5000/oauth2/token"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));
        let c = parse_challenge(r#"Basic realm="a \"b\"", charset=UTF-8"#).unwrap();
        assert_eq!(c.scheme, "Basic");
        assert_eq!(c.param("realm"), Some(r#"a "b""#));
        assert_eq!(c.param("charset"), Some("UTF-8"));
        assert_eq!(parse_challenge("Basic").unwrap().params, vec![]);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn scopes_merge_per_resource() {
        let mut m = BTreeMap::new();
        assert!(merge_scope(&mut m, "repository:a/b:pull,push"));
        assert!(!merge_scope(&mut m, "repository:a/b:push"));
        assert!(merge_scope(&mut m, "repository:a/b:metadata_read"));
        assert!(merge_scope(&mut m, "registry:catalog:*"));
        let want: BTreeSet<String> = ["metadata_read", "pull", "push"].map(String::from).into();
        assert_eq!(m["repository:a/b"], want);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn basic_needs_a_colon_and_encodes_once() {
        assert!(Auth::new(Some("nocolon"), false, &[]).is_err());
        let a = Auth::new(Some(""), false, &[]).unwrap();
        assert!(!a.has_credentials() && a.current().1.is_none());
        let a = Auth::new(Some("u:p:w"), false, &[]).unwrap();
        assert_eq!(a.current().1.unwrap(), "Basic dTpwOnc=");
        let a = Auth::new(Some("u:p"), true, &[]).unwrap();
        assert!(a.current().1.is_none(), "the bearer flow starts anonymous");
    }
}
