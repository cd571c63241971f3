//! Access control through the real server: every route × every kind of caller gets the exact
//! status and error code of the route table (acr-auth.md §3.8), the token server grants
//! requested ∩ allowed, and secrets stay secret (never in listings, never in the database in
//! clear).

use crate::common;

use std::collections::BTreeSet;

use base64::Engine;
use common::{Server, push_image, sha256};
use reqwest::Method;
use serde_json::{Value, json};
use wharf_auth::jwt::{Claims, Keys};

const MGMT: &str = "wharfm_test-management-token-0123456789abcdefghijkl";
const R: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wharf/providers/Microsoft.ContainerRegistry/registries/wharf";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn config(dir: &std::path::Path) -> wharf::config::Config {
    let mut cfg = wharf::config::Config {
        data_dir: dir.to_owned(),
        ..Default::default()
    };
    cfg.auth.enabled = true;
    cfg.auth.management_token = MGMT.into();
    // The table makes many failed logins on purpose; the limiter has its own test.
    cfg.auth.max_failed_logins_per_minute = 100_000;
    cfg
}

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn mgmt(
    c: &reqwest::Client,
    s: &Server,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c
        .request(m, s.url(&format!("{R}{path}?api-version=2025-11-01")))
        .bearer_auth(MGMT)
        .header("content-type", "application/json");
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Creates a token on `scope_map` and returns its password1 (valid for `expiry`, if given).
async fn token(
    c: &reqwest::Client,
    s: &Server,
    name: &str,
    scope_map: &str,
    expiry: Option<String>,
) -> String {
    let (st, v) = mgmt(
        c,
        s,
        Method::PUT,
        &format!("/tokens/{name}"),
        Some(json!({"properties": {"scopeMapId": format!("{R}/scopeMaps/{scope_map}")}})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let mut body = json!({"tokenId": format!("{R}/tokens/{name}"), "name": "password1"});
    if let Some(e) = expiry {
        body["expiry"] = json!(e);
    }
    let (st, v) = mgmt(c, s, Method::POST, "/generateCredentials", Some(body)).await;
    assert_eq!(st, 200, "{v}");
    v["passwords"][0]["value"].as_str().unwrap().to_owned()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    Pull,
    Push,
    Delete,
    MetaRead,
    MetaWrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Login,
    Catalog,
    Mgmt,
    Team(Act),
    Other(Act),
}

/// (method, path, body, what it needs, the status when allowed)
type Route = (Method, String, Option<Vec<u8>>, Need, u16);

/// What one kind of caller may do, written out by hand from ACR's rules.
struct Caller {
    label: &'static str,
    auth: Option<String>,
    /// Credentials that check out (so a refusal is `insufficient_scope`, not a plain 401).
    valid: bool,
    team: BTreeSet<Act>,
    other: BTreeSet<Act>,
    catalog: bool,
    mgmt: bool,
}

fn basic(user: &str, pw: &str) -> Option<String> {
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    ))
}

fn set(a: &[Act]) -> BTreeSet<Act> {
    a.iter().copied().collect()
}

fn claims(service: &str, exp_in: i64, access: Vec<wharf_auth::ResourceScope>) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: "Wharf".into(),
        sub: "wharf".into(),
        kind: "admin".into(),
        aud: service.into(),
        exp: now + exp_in,
        nbf: now - 1,
        iat: now - 1,
        jti: "x".into(),
        grant_type: "access_token".into(),
        access,
        version: "1.0".into(),
    }
}

#[tokio::test]
async fn every_route_for_every_caller() {
    use Act::*;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_config(config(tmp.path())).await;
    let c = plain();
    let service = format!("127.0.0.1:{}", s.addr.port());

    // The admin password, as `wharf credential show` gets it.
    let (st, creds) = mgmt(&c, &s, Method::POST, "/listCredentials", None).await;
    assert_eq!(st, 200);
    assert_eq!(creds["username"], "wharf");
    let admin_pw = creds["passwords"][0]["value"].as_str().unwrap().to_owned();
    let admin = reqwest::Client::builder()
        .default_headers({
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                "authorization",
                basic("wharf", &admin_pw).unwrap().parse().unwrap(),
            );
            h
        })
        .build()
        .unwrap();
    // Content to read: team/app:v1 and other/x:v1.
    let (team_digest, team_body) = push_image(&admin, &s, "team/app", "v1", "t").await;
    push_image(&admin, &s, "other/x", "v1", "o").await;
    let team_config = serde_json::from_slice::<Value>(&team_body).unwrap()["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();

    // Tokens: one per system scope map, a custom wildcard map, a disabled one, an expiring one.
    let (st, v) = mgmt(&c, &s, Method::PUT, "/scopeMaps/team-rw", Some(json!({"properties": {"description": "team", "actions": [
        "repositories/team/*/content/read", "repositories/team/*/content/write", "repositories/team/*/metadata/read"]}}))).await;
    assert_eq!(st, 201, "{v}");
    let pull = token(&c, &s, "tpull", "_repositories_pull", None).await;
    let pullmeta = token(
        &c,
        &s,
        "tpullmeta",
        "_repositories_pull_metadata_read",
        None,
    )
    .await;
    let push = token(&c, &s, "tpush", "_repositories_push", None).await;
    let pushmeta = token(
        &c,
        &s,
        "tpushmeta",
        "_repositories_push_metadata_write",
        None,
    )
    .await;
    let tadmin = token(&c, &s, "tadmin", "_repositories_admin", None).await;
    let team = token(&c, &s, "tteam", "team-rw", None).await;
    let disabled = token(&c, &s, "tdisabled", "_repositories_admin", None).await;
    let (st, _) = mgmt(
        &c,
        &s,
        Method::PATCH,
        "/tokens/tdisabled",
        Some(json!({"properties": {"status": "disabled"}})),
    )
    .await;
    assert_eq!(st, 200);
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let expiring = token(
        &c,
        &s,
        "texpired",
        "_repositories_admin",
        Some(soon.to_rfc3339()),
    )
    .await;

    // JWTs: one from the token server, and forged, expired and wrong-audience ones.
    let key = wharf_store::Sealer::load_or_create(tmp.path(), common::test_secret_key())
        .unwrap()
        .derive_key(b"wharf jwt v1");
    let keys = Keys::new(&key);
    let all = vec![wharf_auth::ResourceScope::repository(
        "team/app",
        &[wharf_auth::RepoAction::Pull],
    )];
    let forged = Keys::new(&[9; 32])
        .sign(&claims(&service, 600, all.clone()))
        .unwrap();
    let expired = keys.sign(&claims(&service, -600, all.clone())).unwrap();
    let wrong_aud = keys
        .sign(&claims("elsewhere.example", 600, all.clone()))
        .unwrap();
    let r: Value = c
        .get(s.url(&format!("/oauth2/token?service={service}&scope=repository:team/app:pull,push,delete&scope=repository:other/x:pull")))
        .header("authorization", basic("tteam", &team).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team_jwt = r["access_token"].as_str().unwrap().to_owned();
    let granted = keys.verify(&team_jwt).unwrap().access;
    assert_eq!(
        granted.len(),
        1,
        "other/x granted nothing, so it is left out: {granted:?}"
    );
    assert_eq!(granted[0].name, "team/app");
    assert_eq!(granted[0].actions, ["pull", "push"], "requested ∩ allowed");

    // Wait out the expiring password (no timing is asserted: it only has to be past).
    while chrono::Utc::now() < soon + chrono::Duration::milliseconds(200) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let everything = set(&[Pull, Push, Delete, MetaRead, MetaWrite]);
    let none = BTreeSet::new();
    let caller = |label,
                  auth: Option<String>,
                  valid,
                  team: BTreeSet<Act>,
                  other: BTreeSet<Act>,
                  catalog,
                  mgmt| Caller {
        label,
        auth,
        valid,
        team,
        other,
        catalog,
        mgmt,
    };
    let callers = vec![
        caller(
            "anonymous",
            None,
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
        caller(
            "admin",
            basic("wharf", &admin_pw),
            true,
            everything.clone(),
            everything.clone(),
            true,
            true,
        ),
        caller(
            "management",
            Some(format!("Bearer {MGMT}")),
            true,
            everything.clone(),
            everything.clone(),
            true,
            true,
        ),
        caller(
            "_repositories_pull",
            basic("tpull", &pull),
            true,
            set(&[Pull]),
            set(&[Pull]),
            false,
            false,
        ),
        caller(
            "_repositories_pull_metadata_read",
            basic("tpullmeta", &pullmeta),
            true,
            set(&[Pull, MetaRead]),
            set(&[Pull, MetaRead]),
            false,
            false,
        ),
        caller(
            "_repositories_push",
            basic("tpush", &push),
            true,
            set(&[Pull, Push]),
            set(&[Pull, Push]),
            false,
            false,
        ),
        caller(
            "_repositories_push_metadata_write",
            basic("tpushmeta", &pushmeta),
            true,
            set(&[Pull, Push, MetaRead, MetaWrite]),
            set(&[Pull, Push, MetaRead, MetaWrite]),
            false,
            false,
        ),
        caller(
            "_repositories_admin",
            basic("tadmin", &tadmin),
            true,
            everything.clone(),
            everything.clone(),
            false,
            false,
        ),
        caller(
            "custom wildcard map",
            basic("tteam", &team),
            true,
            set(&[Pull, Push, MetaRead]),
            none.clone(),
            false,
            false,
        ),
        caller(
            "bearer from the token server",
            Some(format!("Bearer {team_jwt}")),
            true,
            set(&[Pull, Push]),
            none.clone(),
            false,
            false,
        ),
        caller(
            "disabled token",
            basic("tdisabled", &disabled),
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
        caller(
            "expired password",
            basic("texpired", &expiring),
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
        caller(
            "wrong password",
            basic("tadmin", "not-the-password"),
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
        caller(
            "unknown user",
            basic("nobody", "x"),
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
        caller(
            "forged JWT",
            Some(format!("Bearer {forged}")),
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
        caller(
            "expired JWT",
            Some(format!("Bearer {expired}")),
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
        caller(
            "wrong-audience JWT",
            Some(format!("Bearer {wrong_aud}")),
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
        caller(
            "malformed header",
            Some("Basic !!!".into()),
            false,
            none.clone(),
            none.clone(),
            false,
            false,
        ),
    ];

    let missing = format!("sha256:{}", "0".repeat(64));
    let manifest_v2 = team_body.clone();
    // (method, path, body, what it needs, the status when allowed)
    let routes: Vec<Route> = vec![
        (Method::GET, "/v2/".into(), None, Need::Login, 200),
        (Method::GET, "/v2/_catalog".into(), None, Need::Catalog, 200),
        (
            Method::GET,
            "/v2/team/app/tags/list".into(),
            None,
            Need::Team(MetaRead),
            200,
        ),
        (
            Method::GET,
            "/v2/team/app/manifests/v1".into(),
            None,
            Need::Team(Pull),
            200,
        ),
        (
            Method::HEAD,
            format!("/v2/team/app/manifests/{team_digest}"),
            None,
            Need::Team(Pull),
            200,
        ),
        (
            Method::GET,
            format!("/v2/team/app/blobs/{team_config}"),
            None,
            Need::Team(Pull),
            200,
        ),
        (
            Method::GET,
            format!("/v2/team/app/referrers/{team_digest}"),
            None,
            Need::Team(Pull),
            200,
        ),
        (
            Method::PUT,
            "/v2/team/app/manifests/v2".into(),
            Some(manifest_v2),
            Need::Team(Push),
            201,
        ),
        (
            Method::POST,
            "/v2/team/app/blobs/uploads/".into(),
            None,
            Need::Team(Push),
            202,
        ),
        (
            Method::DELETE,
            format!("/v2/team/app/manifests/{missing}"),
            None,
            Need::Team(Delete),
            404,
        ),
        (
            Method::DELETE,
            format!("/v2/team/app/blobs/{missing}"),
            None,
            Need::Team(Delete),
            404,
        ),
        (
            Method::DELETE,
            "/acr/v1/team/gone".into(),
            None,
            Need::Team(Delete),
            404,
        ),
        // The /acr/v1 data plane (acr-auth.md §3.8).
        (
            Method::GET,
            "/acr/v1/_catalog".into(),
            None,
            Need::Catalog,
            200,
        ),
        (
            Method::GET,
            "/acr/v1/team%2Fapp?api-version=2021-07-01".into(),
            None,
            Need::Team(MetaRead),
            200,
        ),
        (
            Method::PATCH,
            "/acr/v1/team%2Fapp".into(),
            None,
            Need::Team(MetaWrite),
            200,
        ),
        (
            Method::GET,
            "/acr/v1/team/app/_tags".into(),
            None,
            Need::Team(MetaRead),
            200,
        ),
        (
            Method::GET,
            "/acr/v1/team%2Fapp/_tags/v1".into(),
            None,
            Need::Team(MetaRead),
            200,
        ),
        (
            Method::PATCH,
            "/acr/v1/team%2Fapp/_tags/v1".into(),
            None,
            Need::Team(MetaWrite),
            200,
        ),
        (
            Method::DELETE,
            "/acr/v1/team%2Fapp/_tags/nope".into(),
            None,
            Need::Team(Delete),
            404,
        ),
        (
            Method::GET,
            "/acr/v1/team%2Fapp/_manifests".into(),
            None,
            Need::Team(MetaRead),
            200,
        ),
        (
            Method::GET,
            format!(
                "/acr/v1/team%2Fapp/_manifests/{}",
                team_digest.replace(':', "%3A")
            ),
            None,
            Need::Team(MetaRead),
            200,
        ),
        (
            Method::PATCH,
            format!("/acr/v1/team%2Fapp/_manifests/{team_digest}"),
            None,
            Need::Team(MetaWrite),
            200,
        ),
        (
            Method::GET,
            "/acr/v1/other%2Fx/_tags".into(),
            None,
            Need::Other(MetaRead),
            200,
        ),
        (
            Method::GET,
            "/v2/other/x/manifests/v1".into(),
            None,
            Need::Other(Pull),
            200,
        ),
        (
            Method::GET,
            "/v2/other/x/tags/list".into(),
            None,
            Need::Other(MetaRead),
            200,
        ),
        (
            Method::GET,
            "/wharf/v1/webhooks".into(),
            None,
            Need::Mgmt,
            200,
        ),
        (
            Method::GET,
            format!("{R}/tokens?api-version=2025-11-01"),
            None,
            Need::Mgmt,
            200,
        ),
        (
            Method::GET,
            format!("{R}/scopeMaps/_repositories_pull?api-version=2025-11-01"),
            None,
            Need::Mgmt,
            200,
        ),
    ];

    let mut failures = Vec::new();
    let mut checked = 0;
    for who in &callers {
        for (m, path, body, need, ok_status) in &routes {
            let allowed = match need {
                Need::Login => who.valid,
                Need::Catalog => who.catalog,
                Need::Mgmt => who.mgmt,
                Need::Team(a) => who.team.contains(a),
                Need::Other(a) => who.other.contains(a),
            };
            let mut req = c.request(m.clone(), s.url(path));
            if let Some(a) = &who.auth {
                req = req.header("authorization", a);
            }
            if let Some(b) = body {
                req = req.header("content-type", OCI_MANIFEST).body(b.clone());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let www = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let text = resp.text().await.unwrap_or_default();
            checked += 1;
            let want = if allowed { *ok_status } else { 401 };
            let mut wrong = status != want;
            if !allowed && !wrong && *m != Method::HEAD {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = if matches!(need, Need::Mgmt) {
                    v["error"]["code"].as_str().unwrap_or("").to_owned()
                } else {
                    v["errors"][0]["code"].as_str().unwrap_or("").to_owned()
                };
                let want_code = if matches!(need, Need::Mgmt) {
                    "InvalidAuthenticationToken"
                } else {
                    "UNAUTHORIZED"
                };
                let scoped = www.contains("error=\"insufficient_scope\"");
                wrong = code != want_code
                    || !www.starts_with("Bearer realm=\"http://")
                    || !www.contains(&format!("service=\"{service}\""))
                    || scoped != who.valid;
                if let Need::Team(a) | Need::Other(a) = need {
                    let repo = if matches!(need, Need::Team(_)) {
                        "team/app"
                    } else {
                        "other/x"
                    };
                    let action = match a {
                        Pull => "pull",
                        Push => "push",
                        Delete => "delete",
                        MetaRead => "metadata_read",
                        MetaWrite => "metadata_write",
                    };
                    let repo = if path.starts_with("/acr/v1/team/gone") {
                        "team/gone"
                    } else {
                        repo
                    };
                    wrong |= !www.contains(&format!("scope=\"repository:{repo}:{action}\""));
                }
            }
            if wrong {
                failures.push(format!(
                    "{} {m} {path}: got {status} (want {want}) {www} {text}",
                    who.label
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Anonymous pull on: anonymous reads and lists, and still cannot write.
    let (st, _) = mgmt(
        &c,
        &s,
        Method::PATCH,
        "",
        Some(json!({"properties": {"anonymousPullEnabled": true}})),
    )
    .await;
    assert_eq!(st, 200);
    let r = c
        .get(s.url(
            "/oauth2/token?scope=repository:team/app:pull,push,metadata_read&scope=registry:catalog:*",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an anonymous token");
    let t: Value = r.json().await.unwrap();
    let anon = t["token"].as_str().unwrap();
    let granted = keys.verify(anon).unwrap().access;
    assert_eq!(granted[0].actions, ["metadata_read", "pull"], "no push");
    assert_eq!(granted[1].name, "catalog");
    for (m, path, want) in [
        (Method::GET, "/v2/team/app/manifests/v1", 200),
        (Method::GET, "/v2/team/app/tags/list", 200),
        (Method::GET, "/v2/_catalog", 200),
        (Method::POST, "/v2/team/app/blobs/uploads/", 401),
        (Method::DELETE, "/acr/v1/team/app", 401),
    ] {
        let r = c
            .request(m.clone(), s.url(path))
            .bearer_auth(anon)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "anonymous pull: {m} {path}");
    }
    // Stale credentials are not downgraded to anonymous.
    let r = c
        .get(s.url("/v2/team/app/manifests/v1"))
        .header("authorization", basic("tadmin", "wrong").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Admin user disabled: its Basic login fails.
    let (st, _) = mgmt(
        &c,
        &s,
        Method::PATCH,
        "",
        Some(json!({"properties": {"adminUserEnabled": false}})),
    )
    .await;
    assert_eq!(st, 200);
    let r = admin
        .get(s.url("/v2/team/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "disabled admin");
    assert!(
        !r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    s.stop().await;
}

#[tokio::test]
async fn the_token_server_speaks_every_grant_and_scope_form() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_config(config(tmp.path())).await;
    let c = plain();
    let service = format!("127.0.0.1:{}", s.addr.port());
    let pw = token(&c, &s, "grants", "_repositories_push", None).await;
    let form = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let post = |path: &'static str, body: String| {
        c.post(s.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let key = wharf_store::Sealer::load_or_create(tmp.path(), common::test_secret_key())
        .unwrap()
        .derive_key(b"wharf jwt v1");
    let keys = Keys::new(&key);
    let access = |v: &Value| {
        keys.verify(v["access_token"].as_str().unwrap())
            .unwrap()
            .access
    };

    // password grant, scopes space-joined in one field (oras, the Azure SDK)
    let r: Value = post(
        "/oauth2/token",
        form(&[
            ("grant_type", "password"),
            ("service", &service),
            ("username", "grants"),
            ("password", &pw),
            ("scope", "repository:a:pull,push repository:b:pull"),
        ]),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let a = access(&r);
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(r["token"], r["access_token"]);
    assert!(r["expires_in"].as_i64().unwrap() > 0);
    // repeated scope fields (containers/image), and an offline request gets a refresh token
    let r: Value = post(
        "/oauth2/token",
        format!(
            "{}&scope=repository%3Ac%3Apull&scope=repository%3Ad%3Apush&access_type=offline",
            form(&[
                ("grant_type", "password"),
                ("service", &service),
                ("username", "grants"),
                ("password", &pw)
            ])
        ),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(access(&r).len(), 2);
    let refresh = r["refresh_token"].as_str().unwrap().to_owned();
    // refresh grant
    let r = post(
        "/oauth2/token",
        form(&[
            ("grant_type", "refresh_token"),
            ("service", &service),
            ("refresh_token", &refresh),
            ("scope", "repository:e:pull,delete"),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let a = access(&r.json().await.unwrap());
    assert_eq!(
        a[0].actions,
        ["pull"],
        "delete is not allowed by _repositories_push"
    );
    // exchange: the management credential stands in for the Entra token
    let r: Value = post(
        "/oauth2/exchange",
        form(&[
            ("grant_type", "access_token"),
            ("service", &service),
            ("access_token", MGMT),
        ]),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let ex_refresh = r["refresh_token"].as_str().unwrap().to_owned();
    let r: Value = post(
        "/oauth2/token",
        form(&[
            ("grant_type", "refresh_token"),
            ("service", &service),
            ("refresh_token", &ex_refresh),
            ("scope", "registry:catalog:*"),
        ]),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(access(&r)[0].name, "catalog");
    // the null-GUID user carries a refresh token as its password (az acr login)
    let r = c
        .get(s.url("/v2/_catalog"))
        .basic_auth("00000000-0000-0000-0000-000000000000", Some(&ex_refresh))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // refusals
    for body in [
        form(&[
            ("grant_type", "password"),
            ("service", &service),
            ("username", "grants"),
            ("password", "wrong"),
        ]),
        form(&[
            ("grant_type", "refresh_token"),
            ("service", &service),
            ("refresh_token", "garbage"),
        ]),
        form(&[("grant_type", "password"), ("service", &service)]),
    ] {
        let r = post("/oauth2/token", body.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");
    }
    let r = post(
        "/oauth2/exchange",
        form(&[
            ("grant_type", "access_token"),
            ("service", &service),
            ("access_token", "wharfm_wrong"),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let r = post(
        "/oauth2/token",
        form(&[("grant_type", "client_credentials")]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    // a refresh token of a token disabled since is refused
    let (st, _) = mgmt(
        &c,
        &s,
        Method::PATCH,
        "/tokens/grants",
        Some(json!({"properties": {"status": "disabled"}})),
    )
    .await;
    assert_eq!(st, 200);
    let r = post(
        "/oauth2/token",
        form(&[
            ("grant_type", "refresh_token"),
            ("service", &service),
            ("refresh_token", &refresh),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_address() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.auth.max_failed_logins_per_minute = 3;
    let s = Server::start_config(cfg).await;
    let c = plain();
    let pw = token(&c, &s, "limited", "_repositories_pull", None).await;
    for _ in 0..3 {
        let r = c
            .get(s.url("/v2/"))
            .basic_auth("limited", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = c
        .get(s.url("/v2/"))
        .basic_auth("limited", Some(&pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "even a right password waits out the limit");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
    s.stop().await;
}

#[tokio::test]
async fn secrets_stay_secret_at_rest_and_in_listings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    // With access control on, the SSRF guard refuses loopback targets unless opened.
    cfg.webhooks.allow_networks = vec!["127.0.0.1/32".into()];
    let s = Server::start_config(cfg).await;
    let c = plain();
    let pw = token(&c, &s, "secretive", "_repositories_pull", None).await;
    let (_, creds) = mgmt(&c, &s, Method::POST, "/listCredentials", None).await;
    let admin_pw = creds["passwords"][0]["value"].as_str().unwrap().to_owned();
    let hook_secret = "hook-s3cret-in-the-uri";
    let header_secret = "Bearer header-s3cret";
    let r = c
        .put(s.url("/wharf/v1/webhooks/secrethook"))
        .bearer_auth(MGMT)
        .json(&json!({"properties": {"serviceUri": format!("http://127.0.0.1:9/h?token={hook_secret}"), "actions": ["push"], "customHeaders": {"Authorization": header_secret}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // listings show no password values
    for path in ["/tokens", "/tokens/secretive", "/scopeMaps"] {
        let (_, v) = mgmt(&c, &s, Method::GET, path, None).await;
        let text = v.to_string();
        // The password entries keep their names and dates, never a value.
        assert!(
            !text.contains(&pw) && !text.contains("\"value\":\""),
            "{path}: {text}"
        );
    }
    s.stop().await;
    // nothing secret in the database files in clear
    let mut db = Vec::new();
    for f in ["wharf.db", "wharf.db-wal"] {
        if let Ok(b) = std::fs::read(tmp.path().join(f)) {
            db.extend(b);
        }
    }
    let text = String::from_utf8_lossy(&db);
    for secret in [
        pw.as_str(),
        admin_pw.as_str(),
        hook_secret,
        header_secret,
        MGMT,
    ] {
        assert!(
            !text.contains(secret),
            "{secret} is in the database in clear"
        );
    }
}

#[tokio::test]
async fn plaintext_webhook_secrets_from_before_are_sealed_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    // A database as an older Wharf left it: the webhook's URI and headers in clear.
    {
        // SQLite's history: PostgreSQL never held secrets in clear.
        let s = Server::start_sqlite(wharf::config::Config {
            data_dir: tmp.path().to_owned(),
            ..Default::default()
        })
        .await;
        let c = plain();
        let r = c
            .put(s.url("/wharf/v1/webhooks/oldhook1"))
            .json(&json!({"properties": {"serviceUri": "http://127.0.0.1:9/h?token=old-s3cret", "actions": ["push"]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        s.stop().await;
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            tmp.path().join("wharf.db").display()
        ))
        .await
        .unwrap();
        sqlx::query("UPDATE webhooks SET service_uri = 'http://127.0.0.1:9/h?token=old-s3cret', custom_headers = '{}'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let s = Server::start_sqlite(wharf::config::Config {
        data_dir: tmp.path().to_owned(),
        ..Default::default()
    })
    .await;
    let c = plain();
    let v: Value = c
        .post(s.url("/wharf/v1/webhooks/oldhook1/getCallbackConfig"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["serviceUri"], "http://127.0.0.1:9/h?token=old-s3cret",
        "still readable"
    );
    s.stop().await;
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        tmp.path().join("wharf.db").display()
    ))
    .await
    .unwrap();
    let stored: String = sqlx::query_scalar("SELECT service_uri FROM webhooks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(stored.starts_with("sealed:v1:"), "{stored}");
    pool.close().await;
}

#[tokio::test]
async fn without_auth_wharf_refuses_a_non_loopback_listener_and_foreign_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = wharf::config::Config {
        data_dir: tmp.path().to_owned(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = match wharf::start(&cfg, listener).await {
        Ok(_) => panic!("started open on 0.0.0.0"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("--auth") && err.contains("--insecure-open-registry"),
        "{err}"
    );
    // The explicit opt-out starts, and serves every host.
    let mut open = cfg.clone();
    open.auth.insecure_open = true;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let running = wharf::start(&open, listener).await.unwrap();
    let r = plain()
        .get(format!("http://127.0.0.1:{}/v2/", running.addr().port()))
        .header("host", "registry.example:5000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    running.stop().await.unwrap();
    // The open mode answers loopback hosts only (DNS rebinding).
    let s = Server::start_config(cfg).await;
    let c = plain();
    let r = c
        .get(s.url("/v2/"))
        .header("host", "attacker.example:5000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(s.url("/v2/"))
        .header("host", "localhost:5000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ...and refuses management posts that are not JSON (cross-site forms).
    let r = c
        .post(s.url("/wharf/v1/webhooks/x1234/ping"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let _ = sha256(b"");
    s.stop().await;
}

/// The Event Grid and CloudEvents data name who pushed (`actor.name`: the token's name), from
/// where (`request.addr`) and on which node (`source`); ACR's own body names none of them.
#[tokio::test]
async fn event_data_names_the_actor_the_client_and_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.webhooks.allow_networks = vec!["127.0.0.1/32".into()];
    let s = Server::start_config(cfg).await;
    let rcv = common::Receiver::start().await;
    let c = plain();
    for (name, format) in [("ceactor", "cloudevents-binary"), ("acractor", "acr")] {
        let (st, v) = mgmt(
            &c,
            &s,
            Method::PUT,
            &format!("/webhooks/{name}"),
            Some(json!({"location": "local", "properties": {
                "serviceUri": rcv.url(&format!("/{name}")), "actions": ["push"],
                "payloadFormat": format}})),
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
    let pw = token(&c, &s, "ci-bot", "_repositories_push", None).await;
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        basic("ci-bot", &pw).unwrap().parse().unwrap(),
    );
    let bot = reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap();
    push_image(&bot, &s, "team/app", "v1", "actor").await;
    let data = &rcv
        .wait_for("/ceactor", 1, std::time::Duration::from_secs(10))
        .await[0]
        .body;
    assert_eq!(data["actor"], json!({"name": "ci-bot"}), "{data}");
    let addr = data["request"]["addr"].as_str().unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{data}");
    assert_eq!(data["source"]["addr"], s.addr.to_string(), "{data}");
    assert!(data["source"]["instanceID"].as_str().unwrap().len() == 36);
    assert_eq!(
        data["target"]["url"],
        format!(
            "http://{}/v2/team/app/manifests/{}",
            s.addr,
            data["target"]["digest"].as_str().unwrap()
        )
    );
    let acr = &rcv
        .wait_for("/acractor", 1, std::time::Duration::from_secs(10))
        .await[0];
    assert!(acr.body.get("actor").is_none() && acr.body.get("source").is_none());
    assert!(
        !acr.raw.contains(&b'\n'),
        "the extras line reached a receiver"
    );
}
