//! The access-control CLI (`wharf token`, `scope-map`, `credential`, `registry`) run as the
//! real binary against a real server with access control on: what it creates works (and only
//! as far as it should) on the registry API, and it never prints a secret it should not.

use crate::common;

use common::{Server, client_with, push_image};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The management credential the test servers are configured with (so the tests know it).
const MGMT: &str = "wharfm_TestOnlyManagementTokenAAAAAAAAAAAAAAAAAAAA";

/// A server with access control on, in a temporary directory dropped with it.
struct AuthServer {
    server: Server,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for AuthServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

async fn start(auth: bool) -> AuthServer {
    start_limited(auth, 1000).await
}

async fn start_limited(auth: bool, max_failed_logins: u32) -> AuthServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.auth.enabled = auth;
    cfg.auth.management_token = MGMT.into();
    // Most tests make a few refused logins on purpose; they get a limit they never reach.
    cfg.auth.max_failed_logins_per_minute = max_failed_logins;
    AuthServer {
        server: Server::start_config(cfg).await,
        _dir: dir,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The JSON printed by a command that must have succeeded.
    fn ok(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.stdout).unwrap_or(Value::String(self.stdout.clone()))
        }
    }

    /// The error of a command that must have failed.
    fn err(&self) -> &str {
        assert_ne!(self.code, 0, "stdout: {}", self.stdout);
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        &self.stderr
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `wharf <args>` against `s` with exactly these credential variables.
async fn wharf_env(s: &Server, env: &[(&str, &str)], args: &[&str]) -> Out {
    let (code, stdout, stderr) = common::run_cli(&s.base, env, args).await;
    Out {
        code,
        stdout,
        stderr,
    }
}

/// Runs `wharf <args>` with the management token.
async fn wharf(s: &Server, args: &[&str]) -> Out {
    wharf_env(s, &[("WHARF_MANAGEMENT_TOKEN", MGMT)], args).await
}

/// GET `path` with Basic credentials: the status and the challenge, if any.
async fn get_as(s: &Server, user: &str, password: &str, path: &str) -> (StatusCode, String) {
    let r = common::client()
        .get(s.url(path))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status(), www)
}

fn password(creds: &Value, name: &str) -> String {
    creds["passwords"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {creds}"))["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn tokens_and_scope_maps_made_with_the_cli_work_on_the_registry_api() {
    let s = start(true).await;
    let mgmt = client_with(&format!("Bearer {MGMT}"));
    push_image(&mgmt, &s, "app", "v1", "a").await;
    push_image(&mgmt, &s, "other", "v1", "o").await;

    // scope-map create / update, az's action vocabulary with the repository lower-cased
    let m = wharf(
        &s,
        &[
            "scope-map",
            "create",
            "-n",
            "team-map",
            "--repository",
            "Team/App",
            "content/read",
            "metadata/read",
            "--description",
            "team",
        ],
    )
    .await
    .ok();
    assert_eq!(m["name"], "team-map");
    assert_eq!(m["description"], "team");
    assert_eq!(m["typePropertiesType"], "UserDefined");
    assert_eq!(
        m["actions"],
        json!([
            "repositories/team/app/content/read",
            "repositories/team/app/metadata/read"
        ])
    );
    let m = wharf(
        &s,
        &[
            "scope-map",
            "update",
            "-n",
            "team-map",
            "--add-repository",
            "team/app",
            "content/write",
            "--remove",
            "team/app",
            "metadata/read",
        ],
    )
    .await
    .ok();
    assert_eq!(
        m["actions"],
        json!([
            "repositories/team/app/content/read",
            "repositories/team/app/content/write"
        ])
    );
    assert_eq!(m["description"], "team", "kept");
    let o = wharf(
        &s,
        &[
            "scope-map",
            "update",
            "-n",
            "team-map",
            "--add",
            "x/y",
            "content/read",
            "--remove",
            "x/y",
            "content/read",
        ],
    )
    .await;
    assert!(o.err().contains("ambiguous"), "{}", o.stderr);
    let o = wharf(
        &s,
        &[
            "scope-map",
            "create",
            "-n",
            "bad-map",
            "--repository",
            "app",
            "pull",
        ],
    )
    .await;
    assert!(o.err().contains("content/read"), "{}", o.stderr);
    let o = wharf(
        &s,
        &["scope-map", "list", "--query", "[].name", "-o", "tsv"],
    )
    .await;
    let names: Vec<&str> = o.stdout.lines().collect();
    assert!(
        names.contains(&"_repositories_pull") && names.contains(&"team-map"),
        "{}",
        o.stdout
    );

    // token create --repository: the default scope map, then both passwords, shown this once
    let o = wharf(
        &s,
        &[
            "token",
            "create",
            "-n",
            "ci-token",
            "--repository",
            "app",
            "content/read",
            "metadata/read",
        ],
    )
    .await;
    let t = o.ok();
    assert_eq!(t["name"], "ci-token");
    assert_eq!(t["status"], "enabled");
    assert!(
        t["scopeMapId"]
            .as_str()
            .unwrap()
            .ends_with("/registries/wharf/scopeMaps/ci-token-scope-map"),
        "{t}"
    );
    assert_eq!(t["credentials"]["username"], "ci-token");
    let p1 = password(&t["credentials"], "password1");
    let p2 = password(&t["credentials"], "password2");
    assert_ne!(p1, p2);
    assert!(
        o.stderr
            .contains(&format!("docker login {} -u ci-token -p {p1}", s.addr)),
        "{}",
        o.stderr
    );
    let m = wharf(&s, &["scope-map", "show", "-n", "ci-token-scope-map"])
        .await
        .ok();
    assert_eq!(m["description"], "Created by token: ci-token");
    // the default scope map is reused when it grants the same, and never silently changed
    let o = wharf(
        &s,
        &[
            "token",
            "create",
            "-n",
            "ci-token2",
            "--scope-map",
            "ci-token-scope-map",
            "--no-passwords",
        ],
    )
    .await;
    assert!(
        o.ok()["credentials"]["passwords"] == json!([]),
        "{}",
        o.stdout
    );
    assert!(!o.stderr.contains("docker login"), "{}", o.stderr);
    let o = wharf(
        &s,
        &[
            "token",
            "create",
            "-n",
            "ci-token",
            "--repository",
            "app",
            "content/read",
            "content/write",
        ],
    )
    .await;
    assert!(o.err().contains("scope-map update"), "{}", o.stderr);

    // the generated passwords work, only as far as the scope map goes
    for p in [&p1, &p2] {
        let (st, _) = get_as(&s, "ci-token", p, "/v2/app/tags/list").await;
        assert_eq!(st, 200);
    }
    let (st, www) = get_as(&s, "ci-token", &p1, "/v2/other/tags/list").await;
    assert_eq!(st, 401);
    assert!(www.contains("insufficient_scope"), "{www}");

    // show and list never print a password value, in any format
    for args in [
        &["token", "show", "-n", "ci-token"][..],
        &["token", "list"],
        &["token", "list", "-o", "table"],
        &["token", "list", "-o", "tsv"],
        &["token", "show", "-n", "ci-token", "-o", "table"],
    ] {
        let o = wharf(&s, args).await;
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(
            !o.all().contains(&p1) && !o.all().contains(&p2),
            "{args:?}: {}",
            o.all()
        );
    }
    let t = wharf(&s, &["token", "show", "-n", "ci-token"]).await.ok();
    let names: Vec<&str> = t["credentials"]["passwords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p.get("value").is_none(), "{p}");
            p["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(names, ["password1", "password2"]);
    let o = wharf(&s, &["token", "list", "-o", "table"]).await;
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("PASSWORD1 EXPIRY"),
        "{}",
        o.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ci-token ")
            && l.contains("ci-token-scope-map")
            && l.contains("never")),
        "{}",
        o.stdout
    );

    // credential delete: a PATCH keeping the others; the deleted password is refused at once
    let t = wharf(
        &s,
        &[
            "token",
            "credential",
            "delete",
            "-n",
            "ci-token",
            "--password1",
        ],
    )
    .await
    .ok();
    assert_eq!(
        t["credentials"]["passwords"].as_array().unwrap().len(),
        1,
        "{t}"
    );
    assert_eq!(t["credentials"]["passwords"][0]["name"], "password2");
    let (st, www) = get_as(&s, "ci-token", &p1, "/v2/app/tags/list").await;
    assert_eq!(st, 401);
    assert!(!www.contains("insufficient_scope"), "{www}");
    assert_eq!(
        get_as(&s, "ci-token", &p2, "/v2/app/tags/list").await.0,
        200
    );
    let o = wharf(
        &s,
        &[
            "token",
            "credential",
            "delete",
            "-n",
            "ci-token",
            "--password1",
        ],
    )
    .await;
    assert!(o.err().contains("no password1"), "{}", o.stderr);

    // credential generate: only the password named, with an expiry
    let g = wharf(
        &s,
        &[
            "token",
            "credential",
            "generate",
            "-n",
            "ci-token",
            "--password1",
            "--expiration-in-days",
            "30",
        ],
    )
    .await
    .ok();
    assert_eq!(g["username"], "ci-token");
    assert_eq!(g["passwords"].as_array().unwrap().len(), 1, "{g}");
    assert_eq!(g["passwords"][0]["name"], "password1");
    assert!(g["passwords"][0]["expiry"].is_string(), "{g}");
    let p1 = password(&g, "password1");
    assert_eq!(
        get_as(&s, "ci-token", &p1, "/v2/app/tags/list").await.0,
        200
    );
    assert_eq!(
        get_as(&s, "ci-token", &p2, "/v2/app/tags/list").await.0,
        200
    );
    let o = wharf(
        &s,
        &[
            "token",
            "credential",
            "generate",
            "-n",
            "ci-token",
            "--query",
            "passwords[].[name, value]",
            "-o",
            "tsv",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows: Vec<Vec<&str>> = o.stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{}", o.stdout);
    assert_eq!(rows[0][0], "password1");
    assert_eq!(rows[1][0], "password2");
    let (p1, p2) = (rows[0][1].to_owned(), rows[1][1].to_owned());
    assert_eq!(
        get_as(&s, "ci-token", &p2, "/v2/app/tags/list").await.0,
        200
    );

    // a disabled token is refused; an update without --status leaves the status alone
    let t = wharf(
        &s,
        &["token", "update", "-n", "ci-token", "--status", "disabled"],
    )
    .await
    .ok();
    assert_eq!(t["status"], "disabled");
    assert_eq!(
        get_as(&s, "ci-token", &p1, "/v2/app/tags/list").await.0,
        401
    );
    let t = wharf(
        &s,
        &[
            "token",
            "update",
            "-n",
            "ci-token",
            "--scope-map",
            "_repositories_pull",
        ],
    )
    .await
    .ok();
    assert_eq!(t["status"], "disabled", "az would have re-enabled it");
    assert!(
        t["scopeMapId"]
            .as_str()
            .unwrap()
            .ends_with("/scopeMaps/_repositories_pull")
    );
    assert_eq!(
        get_as(&s, "ci-token", &p1, "/v2/app/tags/list").await.0,
        401
    );
    wharf(
        &s,
        &["token", "update", "-n", "ci-token", "--status", "enabled"],
    )
    .await
    .ok();
    // _repositories_pull pulls everything but cannot list tags
    assert_eq!(
        get_as(&s, "ci-token", &p1, "/v2/other/manifests/v1")
            .await
            .0,
        200
    );
    let (st, www) = get_as(&s, "ci-token", &p1, "/v2/other/tags/list").await;
    assert_eq!(st, 401);
    assert!(www.contains("insufficient_scope"), "{www}");
    let o = wharf(&s, &["token", "update", "-n", "ci-token"]).await;
    assert!(o.err().contains("nothing to update"), "{}", o.stderr);

    // delete asks for confirmation; without a terminal it needs --yes
    let o = wharf(&s, &["token", "delete", "-n", "ci-token"]).await;
    assert!(o.err().contains("--yes"), "{}", o.stderr);
    assert_eq!(
        get_as(&s, "ci-token", &p1, "/v2/other/manifests/v1")
            .await
            .0,
        200
    );
    wharf(&s, &["token", "delete", "-n", "ci-token", "--yes"])
        .await
        .ok();
    let o = wharf(&s, &["token", "show", "-n", "ci-token"]).await;
    assert!(o.err().contains("not found"), "{}", o.stderr);
    assert_eq!(
        get_as(&s, "ci-token", &p2, "/v2/other/manifests/v1")
            .await
            .0,
        401
    );

    // a scope map in use cannot go; an unused one can
    let o = wharf(
        &s,
        &["scope-map", "delete", "-n", "ci-token-scope-map", "-y"],
    )
    .await;
    assert!(o.err().contains("used by a token"), "{}", o.stderr);
    wharf(&s, &["scope-map", "delete", "-n", "team-map", "--yes"])
        .await
        .ok();
    let o = wharf(&s, &["scope-map", "show", "-n", "team-map"]).await;
    assert!(o.err().contains("not found"), "{}", o.stderr);
}

#[tokio::test]
async fn admin_credentials_and_registry_settings_through_the_cli() {
    let s = start(true).await;
    let mgmt = client_with(&format!("Bearer {MGMT}"));
    push_image(&mgmt, &s, "app", "v1", "a").await;

    let c = wharf(&s, &["credential", "show"]).await.ok();
    assert_eq!(c["username"], "wharf");
    let (a1, a2) = (password(&c, "password"), password(&c, "password2"));
    assert_eq!(get_as(&s, "wharf", &a1, "/v2/_catalog").await.0, 200);
    let o = wharf(&s, &["credential", "show", "-o", "table"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines[0].starts_with("USERNAME") && lines[0].contains("PASSWORD2"),
        "{}",
        o.stdout
    );
    assert!(
        lines[2].starts_with("wharf") && lines[2].contains(&a1) && lines[2].contains(&a2),
        "{}",
        o.stdout
    );

    // the admin user can manage too (Basic), through the environment or the flags
    let o = wharf_env(
        &s,
        &[("WHARF_USERNAME", "wharf"), ("WHARF_PASSWORD", &a1)],
        &["token", "list"],
    )
    .await;
    assert_eq!(o.ok(), json!([]));
    assert!(!o.all().contains(&a1));
    let o = wharf_env(&s, &[], &["scope-map", "list", "-u", "wharf", "-p", &a2]).await;
    assert_eq!(o.ok().as_array().unwrap().len(), 5, "the system scope maps");

    // renew: a new `password`, `password2` unchanged; the old one is refused at once
    let c = wharf(&s, &["credential", "renew", "--password-name", "password"])
        .await
        .ok();
    let n1 = password(&c, "password");
    assert_ne!(n1, a1);
    assert_eq!(password(&c, "password2"), a2);
    assert_eq!(get_as(&s, "wharf", &a1, "/v2/_catalog").await.0, 401);
    assert_eq!(get_as(&s, "wharf", &n1, "/v2/_catalog").await.0, 200);

    // registry show / update
    let r = wharf(&s, &["registry", "show"]).await.ok();
    assert_eq!(r["name"], "wharf");
    assert_eq!(r["adminUserEnabled"], true);
    assert_eq!(r["anonymousPullEnabled"], false);
    assert_eq!(r["loginServer"], s.addr.to_string());
    // tsv as az prints it: the values in key order, Python's spelling of booleans and null, a
    // nested list as its length, a nested object as an empty cell
    let o = wharf(&s, &["registry", "show", "-o", "tsv"]).await;
    let cells: Vec<&str> = o.stdout.trim_end_matches('\n').split('\t').collect();
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(cells.len(), keys.len(), "{}", o.stdout);
    for (k, c) in keys.iter().zip(&cells) {
        let want = match &r[k.as_str()] {
            Value::String(v) => v.clone(),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::Object(_) => String::new(),
            Value::Array(a) => a.len().to_string(),
            Value::Null => "None".into(),
            other => other.to_string(),
        };
        assert_eq!(*c, want, "{k}: {}", o.stdout);
    }
    assert_eq!(
        common::client()
            .get(s.url("/v2/app/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = wharf(
        &s,
        &[
            "registry",
            "update",
            "--admin-enabled",
            "false",
            "--anonymous-pull-enabled",
            "true",
        ],
    )
    .await
    .ok();
    assert_eq!(r["adminUserEnabled"], false);
    assert_eq!(r["anonymousPullEnabled"], true);
    assert_eq!(r["loginServer"], s.addr.to_string(), "as a GET says");
    assert_eq!(get_as(&s, "wharf", &n1, "/v2/_catalog").await.0, 401);
    assert_eq!(
        common::client()
            .get(s.url("/v2/app/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // as az: the admin passwords are of no use while the admin user is disabled
    let o = wharf(&s, &["credential", "show"]).await;
    assert!(
        o.err().contains("registry update --admin-enabled true"),
        "{}",
        o.stderr
    );
    let o = wharf(&s, &["registry", "update"]).await;
    assert!(o.err().contains("nothing to update"), "{}", o.stderr);
    wharf(&s, &["registry", "update", "--admin-enabled", "true"])
        .await
        .ok();
    assert_eq!(get_as(&s, "wharf", &n1, "/v2/_catalog").await.0, 200);
}

#[tokio::test]
async fn management_commands_without_good_credentials_say_how_to_authenticate() {
    let s = start(true).await;
    for args in [
        &["token", "list"][..],
        &["scope-map", "show", "-n", "_repositories_pull"],
        &["credential", "show"],
        &["registry", "show"],
        &["webhook", "list"],
    ] {
        let o = wharf_env(&s, &[], args).await;
        let e = o.err();
        for hint in [
            "authentication required",
            "--token",
            "WHARF_MANAGEMENT_TOKEN",
            "--username",
            "--password",
            "WHARF_USERNAME",
            "WHARF_PASSWORD",
        ] {
            assert!(e.contains(hint), "{args:?}: {hint}: {e}");
        }
    }

    // refused credentials: said which, never echoed
    let wrong = "wharfm_NotTheRightTokenBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let o = wharf_env(&s, &[("WHARF_MANAGEMENT_TOKEN", wrong)], &["token", "list"]).await;
    assert!(
        o.err().contains("refused the management token"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains(wrong));
    let o = wharf_env(
        &s,
        &[],
        &["token", "list", "-u", "wharf", "-p", "not-the-password"],
    )
    .await;
    assert!(
        o.err().contains("refused the user name and password"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("not-the-password"));
    let o = wharf_env(
        &s,
        &[("WHARF_MANAGEMENT_TOKEN", &format!("{MGMT}\nmore"))],
        &["token", "list"],
    )
    .await;
    assert!(o.err().contains("line break"), "{}", o.stderr);
    assert!(!o.stderr.contains(MGMT));
    let o = wharf_env(&s, &[("WHARF_USERNAME", "wharf")], &["token", "list"]).await;
    assert!(o.err().contains("WHARF_PASSWORD"), "{}", o.stderr);

    // the secret flags' environment values stay out of --help
    let o = wharf_env(
        &s,
        &[
            ("WHARF_MANAGEMENT_TOKEN", MGMT),
            ("WHARF_PASSWORD", "env-s3cret"),
        ],
        &["token", "create", "--help"],
    )
    .await;
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("WHARF_MANAGEMENT_TOKEN"), "{}", o.stdout);
    assert!(
        !o.all().contains(MGMT) && !o.all().contains("env-s3cret"),
        "{}",
        o.all()
    );

    // with the token: webhook commands too; another registry's name is a clear error
    assert_eq!(wharf(&s, &["webhook", "list"]).await.ok(), json!([]));
    let o = wharf(&s, &["token", "list", "--registry-name", "elsewhere"]).await;
    assert!(
        o.err().contains("no registry \"elsewhere\""),
        "{}",
        o.stderr
    );
    let o = wharf(&s, &["token", "show", "-n", "../listCredentials"]).await;
    assert!(o.err().contains("letters, digits"), "{}", o.stderr);
}

/// The failed-login limiter's 429 on a management call comes from Wharf (with its marker), so
/// the CLI passes on its message instead of calling the server a stranger.
#[tokio::test]
async fn too_many_failed_logins_are_reported_as_such() {
    let s = start_limited(true, 1).await;
    let o = wharf_env(
        &s,
        &[("WHARF_MANAGEMENT_TOKEN", "wharfm_wrong")],
        &["token", "list"],
    )
    .await;
    assert!(
        o.err().contains("refused the management token"),
        "{}",
        o.stderr
    );
    let o = wharf(&s, &["token", "list"]).await;
    assert!(o.err().contains("too many failed logins"), "{}", o.stderr);
}

/// In the open mode the server takes a management call that changes something only as JSON
/// (the cross-site guard): every one the CLI makes says so, with a body or without.
#[tokio::test]
async fn open_mode_management_calls_are_json() {
    let s = start(false).await;
    let env: &[(&str, &str)] = &[];
    wharf_env(
        &s,
        env,
        &[
            "scope-map",
            "create",
            "-n",
            "open-map",
            "--repository",
            "app",
            "content/read",
        ],
    )
    .await
    .ok();
    wharf_env(
        &s,
        env,
        &[
            "scope-map",
            "update",
            "-n",
            "open-map",
            "--description",
            "d",
        ],
    )
    .await
    .ok();
    let t = wharf_env(
        &s,
        env,
        &[
            "token",
            "create",
            "-n",
            "open-token",
            "--scope-map",
            "open-map",
        ],
    )
    .await
    .ok();
    assert_eq!(t["credentials"]["passwords"].as_array().unwrap().len(), 2);
    wharf_env(
        &s,
        env,
        &[
            "token",
            "credential",
            "delete",
            "-n",
            "open-token",
            "--password1",
            "--password2",
        ],
    )
    .await
    .ok();
    wharf_env(&s, env, &["registry", "update", "--admin-enabled", "true"])
        .await
        .ok();
    // listCredentials is a POST without a body
    let c = wharf_env(&s, env, &["credential", "show"]).await.ok();
    assert_eq!(c["username"], "wharf");
    wharf_env(
        &s,
        env,
        &["credential", "renew", "--password-name", "password2"],
    )
    .await
    .ok();
    wharf_env(&s, env, &["token", "delete", "-n", "open-token", "--yes"])
        .await
        .ok();
}
