//! The CLI as an az user drives it, run as the real binary against a real server: the output
//! formats and `--query` (as az applies them), `-r/-g` checked against the server's registry,
//! `--debug` without secrets, `--only-show-errors`, and `wharf repository …` (az acr
//! repository) and its effect on the registry.

use crate::common;

use common::{Server, client_with, push_image};
use serde_json::{Value, json};

/// The management credential the test servers are configured with (so the tests know it).
const MGMT: &str = "wharfm_TestOnlyManagementTokenAAAAAAAAAAAAAAAAAAAA";

/// A server in a temporary directory dropped with it; access control on or off.
struct TestServer {
    server: Server,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

async fn start(auth: bool) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.auth.enabled = auth;
    cfg.auth.management_token = MGMT.into();
    cfg.auth.max_failed_logins_per_minute = 1000;
    // The webhooks' receiver is on loopback (it is never called: no test pushes to it).
    cfg.webhooks.allow_networks = vec!["127.0.0.1/32".into()];
    TestServer {
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
            serde_json::from_str(&self.stdout)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
        }
    }

    /// The stdout of a command that must have succeeded.
    fn text(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// The error of a command that must have failed.
    fn err(&self) -> &str {
        assert_ne!(self.code, 0, "stdout: {}", self.stdout);
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        &self.stderr
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

/// A YAML document as JSON, to compare `-o yaml` with `-o json`.
fn yaml_to_json(text: &str) -> Value {
    fn conv(y: &yaml_rust2::Yaml) -> Value {
        use yaml_rust2::Yaml;
        match y {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => json!(b),
            Yaml::Integer(i) => json!(i),
            Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
            Yaml::String(s) => json!(s),
            Yaml::Array(a) => Value::Array(a.iter().map(conv).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| (k.as_str().unwrap().to_owned(), conv(v)))
                    .collect(),
            ),
            other => panic!("unexpected YAML {other:?}"),
        }
    }
    let docs = yaml_rust2::YamlLoader::load_from_str(text).unwrap();
    assert_eq!(docs.len(), 1, "{text}");
    conv(&docs[0])
}

/// One tsv line as az prints an object: its values in key order, a list as its length, an
/// object as nothing, booleans and nulls as Python spells them.
fn az_tsv_row(v: &Value) -> String {
    v.as_object()
        .unwrap()
        .values()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            Value::Array(a) => a.len().to_string(),
            Value::Object(_) => String::new(),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::Null => "None".into(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\t")
}

/// Two webhooks made with the CLI; the receiver URI and header carry secrets.
async fn two_webhooks(s: &Server) {
    for (name, actions) in [("hooka", "push"), ("hookb", "delete")] {
        wharf(
            s,
            &[
                "webhook",
                "create",
                "-n",
                name,
                "--uri",
                "http://127.0.0.1:9/p4th-s3cret",
                "--actions",
                actions,
                "--headers",
                "Authorization=Basic h-s3cret",
                "--scope",
                "app:*",
            ],
        )
        .await
        .ok();
    }
}

#[tokio::test]
async fn every_output_format_prints_the_same_result() {
    let s = start(true).await;
    two_webhooks(&s).await;
    let j = wharf(&s, &["webhook", "list"]).await;
    let list = j.ok();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    // az's JSON: two-space indentation
    assert!(j.stdout.starts_with("[\n  {\n    \""), "{}", j.stdout);

    // jsonc and yamlc are json and yaml exactly when stdout is not a terminal
    let jc = wharf(&s, &["webhook", "list", "-o", "jsonc"]).await;
    assert_eq!(jc.text(), j.stdout);
    let y = wharf(&s, &["webhook", "list", "-o", "yaml"]).await;
    assert_eq!(yaml_to_json(y.text()), list, "{}", y.stdout);
    assert!(!y.stdout.starts_with("---"), "{}", y.stdout);
    let yc = wharf(&s, &["webhook", "list", "-o", "yamlc"]).await;
    assert_eq!(yc.text(), y.stdout);
    assert!(!yc.stdout.contains('\x1b'));
    // a single object too
    let one = wharf(&s, &["webhook", "show", "-n", "hooka", "-o", "yaml"]).await;
    assert_eq!(yaml_to_json(one.text()), list[0]);

    // table: the webhook columns of az
    let t = wharf(&s, &["webhook", "list", "-o", "table"]).await;
    let lines: Vec<&str> = t.text().lines().collect();
    assert_eq!(
        lines[0]
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect::<Vec<_>>(),
        ["NAME", "LOCATION", "ACTIONS", "SCOPE", "STATUS"],
        "{}",
        t.stdout
    );
    assert!(lines[1].chars().all(|c| c == '-' || c == ' '));
    assert_eq!(lines.len(), 4, "{}", t.stdout);
    assert!(lines[2].starts_with("hooka ") && lines[2].contains("app:*"));

    // tsv: values only, one line per item, in key order
    let v = wharf(&s, &["webhook", "list", "-o", "tsv"]).await;
    let rows: Vec<&str> = v.text().lines().collect();
    assert_eq!(rows.len(), 2);
    for (row, item) in rows.iter().zip(list.as_array().unwrap()) {
        assert_eq!(*row, az_tsv_row(item));
    }

    // none: nothing, and success
    let n = wharf(&s, &["webhook", "list", "-o", "none"]).await;
    assert_eq!(n.text(), "");

    // the access-control commands share the formats
    let sm = wharf(&s, &["scope-map", "list"]).await.ok();
    let smy = wharf(&s, &["scope-map", "list", "-o", "yaml"]).await;
    assert_eq!(yaml_to_json(smy.text()), sm);
    let r = wharf(&s, &["registry", "show"]).await.ok();
    let rt = wharf(&s, &["registry", "show", "-o", "tsv"]).await;
    assert_eq!(rt.text(), format!("{}\n", az_tsv_row(&r)));

    // an unknown format is refused by the parser, naming the choices
    let o = wharf(&s, &["webhook", "list", "-o", "xml"]).await;
    assert!(o.err().contains("yamlc"), "{}", o.stderr);
}

#[tokio::test]
async fn query_is_applied_before_the_output_format() {
    let s = start(true).await;
    two_webhooks(&s).await;
    let v = wharf(&s, &["webhook", "list", "--query", "[].name"])
        .await
        .ok();
    assert_eq!(v, json!(["hooka", "hookb"]));
    let v = wharf(&s, &["webhook", "list", "--query", "length(@)"])
        .await
        .ok();
    assert_eq!(v, json!(2));
    let v = wharf(
        &s,
        &["webhook", "list", "--query", "[?name=='hookb'].actions[]"],
    )
    .await
    .ok();
    assert_eq!(v, json!(["delete"]));
    let v = wharf(
        &s,
        &[
            "webhook",
            "show",
            "-n",
            "hooka",
            "--query",
            "{n: name, s: status}",
        ],
    )
    .await
    .ok();
    assert_eq!(v, json!({"n": "hooka", "s": "enabled"}));

    // tsv of a projection: the classic az idiom
    let o = wharf(
        &s,
        &[
            "webhook",
            "list",
            "--query",
            "[].[name, status]",
            "-o",
            "tsv",
        ],
    )
    .await;
    assert_eq!(o.text(), "hooka\tenabled\nhookb\tenabled\n");
    let o = wharf(&s, &["webhook", "list", "--query", "[].name", "-o", "tsv"]).await;
    assert_eq!(o.text(), "hooka\nhookb\n");
    // yaml of a projection
    let o = wharf(&s, &["webhook", "list", "--query", "[].name", "-o", "yaml"]).await;
    assert_eq!(yaml_to_json(o.text()), json!(["hooka", "hookb"]));

    // table with a query: the command's own columns no longer apply; az's automatic table
    let o = wharf(
        &s,
        &[
            "webhook",
            "list",
            "--query",
            "[].{name: name, state: status}",
            "-o",
            "table",
        ],
    )
    .await;
    let lines: Vec<&str> = o.text().lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["Name", "State"],
        "{}",
        o.stdout
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["hooka", "enabled"]
    );
    assert_eq!(lines.len(), 4);

    // a query that is not JMESPath fails before anything is sent, naming the flag
    let o = wharf(&s, &["webhook", "list", "--query", "[?name=="]).await;
    assert!(o.err().contains("--query"), "{}", o.stderr);
    // one that fails on the data is an error, not half an output
    let o = wharf(&s, &["webhook", "list", "--query", "abs(@)"]).await;
    assert!(o.err().contains("--query"), "{}", o.stderr);
}

#[tokio::test]
async fn registry_and_resource_group_must_be_the_servers() {
    let s = start(true).await;
    // the server's own names (any case, as ARM) work
    for args in [
        &["token", "list", "-r", "wharf"][..],
        &["token", "list", "--registry", "WHARF", "-g", "wharf"],
        &["webhook", "list", "--resource-group", "wharf"],
        &["registry", "show", "-r", "wharf", "-g", "Wharf"],
    ] {
        let o = wharf(&s, args).await;
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
    }
    // another name is a clear error naming both
    for args in [
        &["token", "list", "-r", "elsewhere"][..],
        &["webhook", "list", "--registry", "elsewhere"],
        &["scope-map", "list", "-r", "elsewhere", "-o", "table"],
    ] {
        let o = wharf(&s, args).await;
        let e = o.err();
        assert!(
            e.contains("\"elsewhere\"") && e.contains("\"wharf\""),
            "{args:?}: {e}"
        );
    }
    for args in [
        &["token", "list", "-g", "other-rg"][..],
        &["webhook", "list", "--resource-group", "other-rg"],
        &["credential", "show", "-g", "other-rg"],
    ] {
        let o = wharf(&s, args).await;
        let e = o.err();
        assert!(
            e.contains("\"other-rg\"") && e.contains("\"wharf\"") && e.contains("resource group"),
            "{args:?}: {e}"
        );
    }
    // the environment variables are checked the same way
    let o = wharf_env(
        &s,
        &[
            ("WHARF_MANAGEMENT_TOKEN", MGMT),
            ("WHARF_RESOURCE_GROUP", "other-rg"),
        ],
        &["token", "list"],
    )
    .await;
    assert!(o.err().contains("\"other-rg\""), "{}", o.stderr);
}

/// A registry configured with its own names: the CLI finds them, and checks against them.
#[tokio::test]
async fn a_configured_registry_is_found_and_checked_by_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.auth.enabled = true;
    cfg.auth.management_token = MGMT.into();
    cfg.registry.name = "fabrikam".into();
    cfg.registry.resource_group = "rg-prod".into();
    cfg.registry.subscription_id = "6f1a2b3c-0000-4000-8000-00000000abcd".into();
    let s = Server::start_config(cfg).await;
    let r = wharf(&s, &["registry", "show"]).await.ok();
    assert_eq!(r["name"], "fabrikam");
    let r = wharf(&s, &["registry", "show", "-r", "fabrikam", "-g", "rg-prod"])
        .await
        .ok();
    assert_eq!(
        r["id"],
        "/subscriptions/6f1a2b3c-0000-4000-8000-00000000abcd/resourceGroups/rg-prod/providers/Microsoft.ContainerRegistry/registries/fabrikam"
    );
    // az's login-server form of the name
    wharf(&s, &["token", "list", "-r", "fabrikam.azurecr.io"])
        .await
        .ok();
    let e = wharf(&s, &["token", "list", "-r", "wharf"]).await;
    assert!(
        e.err().contains("\"wharf\"") && e.stderr.contains("\"fabrikam\""),
        "{}",
        e.stderr
    );
    let e = wharf(&s, &["repository", "list", "-g", "wharf"]).await;
    assert!(
        e.err().contains("\"wharf\"") && e.stderr.contains("\"rg-prod\""),
        "{}",
        e.stderr
    );
    wharf(
        &s,
        &["repository", "list", "-n", "fabrikam", "-g", "rg-prod"],
    )
    .await
    .ok();
    // az's --subscription, checked the same way
    wharf(
        &s,
        &[
            "token",
            "list",
            "--subscription",
            "6F1A2B3C-0000-4000-8000-00000000ABCD",
        ],
    )
    .await
    .ok();
    let e = wharf(
        &s,
        &[
            "repository",
            "list",
            "--subscription",
            "00000000-0000-0000-0000-000000000000",
        ],
    )
    .await;
    assert!(
        e.err().contains("\"00000000-0000-0000-0000-000000000000\"")
            && e.stderr
                .contains("\"6f1a2b3c-0000-4000-8000-00000000abcd\""),
        "{}",
        e.stderr
    );
}

#[tokio::test]
async fn debug_shows_the_traffic_without_secrets() {
    let s = start(true).await;
    let o = wharf(
        &s,
        &[
            "webhook",
            "create",
            "-n",
            "hooka",
            "--uri",
            "http://127.0.0.1:9/p4th-s3cret",
            "--actions",
            "push",
            "--headers",
            "Authorization=Basic h-s3cret",
            "--debug",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    for want in [
        "DEBUG: Request URL: '",
        "DEBUG: Request method: 'PUT'",
        "'authorization': '*****'",
        "DEBUG: Request body: ",
        "\"actions\":[\"push\"]",
        "DEBUG: Response status: ",
        "DEBUG: Response content: ",
    ] {
        assert!(o.stderr.contains(want), "{want} missing from {}", o.stderr);
    }
    for secret in [MGMT, "p4th-s3cret", "h-s3cret"] {
        assert!(!o.stderr.contains(secret), "{secret} in {}", o.stderr);
    }
    // debug goes to stderr: stdout is the same JSON as without it
    assert_eq!(o.ok()["name"], "hooka");

    // the one command that shows the URI: on stdout, never in the debug lines
    let o = wharf(&s, &["webhook", "get-config", "-n", "hooka", "--debug"]).await;
    assert!(o.stdout.contains("p4th-s3cret"), "{}", o.stdout);
    assert!(!o.stderr.contains("s3cret"), "{}", o.stderr);

    // admin passwords
    wharf(&s, &["registry", "update", "--admin-enabled", "true"])
        .await
        .ok();
    let o = wharf(&s, &["credential", "show", "--debug"]).await;
    let c = o.ok();
    for p in c["passwords"].as_array().unwrap() {
        let pw = p["value"].as_str().unwrap();
        assert!(!o.stderr.contains(pw), "{}", o.stderr);
    }
    assert!(o.stderr.contains("POST"), "{}", o.stderr);
    // and the admin user's Basic credentials on the command line
    let pw = c["passwords"][0]["value"].as_str().unwrap().to_owned();
    let o = wharf_env(
        &s,
        &[("WHARF_USERNAME", "wharf"), ("WHARF_PASSWORD", &pw)],
        &["token", "list", "--debug"],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains(&pw), "{}", o.stderr);
    assert!(
        o.stderr.contains("'authorization': '*****'"),
        "{}",
        o.stderr
    );
}

#[tokio::test]
async fn only_show_errors_keeps_warnings_off_stderr() {
    let s = start(true).await;
    let args = [
        "token",
        "create",
        "-n",
        "citoken1",
        "--scope-map",
        "_repositories_pull",
    ];
    let o = wharf(&s, &args).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("WARNING:"), "{}", o.stderr);
    let mut quiet = args.to_vec();
    quiet[3] = "cibtoken2";
    quiet.push("--only-show-errors");
    let o = wharf(&s, &quiet).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stderr, "");
    assert_eq!(o.ok()["name"], "cibtoken2");
    // errors still show
    let o = wharf(
        &s,
        &["token", "show", "-n", "nosuchtoken", "--only-show-errors"],
    )
    .await;
    assert!(o.err().starts_with("ERROR: "), "{}", o.stderr);
}

#[tokio::test]
async fn help_lists_the_global_options() {
    let s = start(false).await;
    for cmd in [
        &["webhook", "list", "--help"][..],
        &["repository", "show-tags", "--help"],
        &["token", "create", "--help"],
    ] {
        let o = wharf(&s, cmd).await;
        let h = o.text();
        for flag in [
            "--output",
            "--query",
            "--only-show-errors",
            "--debug",
            "--registry",
            "--resource-group",
            "--subscription",
        ] {
            assert!(h.contains(flag), "{cmd:?} lacks {flag}: {h}");
        }
    }
}

// ---- wharf repository ----------------------------------------------------------------------

/// Pushes `repo:tag` and answers the manifest's digest.
async fn push(c: &reqwest::Client, s: &Server, repo: &str, tag: &str) -> String {
    push_image(c, s, repo, tag, &format!("{repo}-{tag}"))
        .await
        .0
}

/// The status of a GET on the registry, as the management token.
async fn status(c: &reqwest::Client, s: &Server, path: &str) -> u16 {
    c.get(s.url(path)).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn repository_commands_act_on_the_registry() {
    let s = start(true).await;
    let c = client_with(&format!("Bearer {MGMT}"));
    let d1 = push(&c, &s, "team/app", "v1").await;
    let d2 = push(&c, &s, "team/app", "v2").await;
    push(&c, &s, "other", "latest").await;

    // list
    let v = wharf(&s, &["repository", "list"]).await.ok();
    assert_eq!(v, json!(["other", "team/app"]));
    let v = wharf(&s, &["repository", "list", "--top", "1"]).await.ok();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let o = wharf(&s, &["repository", "list", "-o", "tsv"]).await;
    assert_eq!(o.text(), "other\nteam/app\n");
    let o = wharf(&s, &["repository", "list", "-o", "table"]).await;
    assert_eq!(o.text(), "Result\n--------\nother\nteam/app\n");

    // show: repository, tag, manifest
    let v = wharf(&s, &["repository", "show", "--repository", "team/app"])
        .await
        .ok();
    assert_eq!(v["imageName"], "team/app");
    assert_eq!(v["tagCount"], 2);
    assert_eq!(v["manifestCount"], 2);
    let v = wharf(&s, &["repository", "show", "--image", "team/app:v1"])
        .await
        .ok();
    assert_eq!(v["tag"]["name"], "v1");
    assert_eq!(v["tag"]["digest"], d1.as_str());
    let v = wharf(&s, &["repository", "show", "-t", &format!("team/app@{d2}")])
        .await
        .ok();
    assert_eq!(v["manifest"]["digest"], d2.as_str());
    let o = wharf(&s, &["repository", "show", "--repository", "nope"]).await;
    assert!(o.err().contains("ERROR"), "{}", o.stderr);
    let o = wharf(&s, &["repository", "show"]).await;
    assert!(o.err().contains("--repository"), "{}", o.stderr);

    // show-tags
    let v = wharf(&s, &["repository", "show-tags", "--repository", "team/app"])
        .await
        .ok();
    assert_eq!(v, json!(["v1", "v2"]));
    let v = wharf(
        &s,
        &[
            "repository",
            "show-tags",
            "--repository",
            "team/app",
            "--orderby",
            "time_desc",
        ],
    )
    .await
    .ok();
    assert_eq!(v, json!(["v2", "v1"]));
    let v = wharf(
        &s,
        &[
            "repository",
            "show-tags",
            "--repository",
            "team/app",
            "--detail",
            "--top",
            "1",
        ],
    )
    .await
    .ok();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "v1");
    assert_eq!(v[0]["digest"], d1.as_str());
    let o = wharf(
        &s,
        &[
            "repository",
            "show-tags",
            "--repository",
            "team/app",
            "--detail",
            "--query",
            "[].[name, digest]",
            "-o",
            "tsv",
        ],
    )
    .await;
    assert_eq!(o.text(), format!("v1\t{d1}\nv2\t{d2}\n"));

    // show-manifests: az's summary, or every attribute with --detail
    let v = wharf(
        &s,
        &["repository", "show-manifests", "--repository", "team/app"],
    )
    .await
    .ok();
    let m = v.as_array().unwrap();
    assert_eq!(m.len(), 2, "{v}");
    for x in m {
        let keys: Vec<&String> = x.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["digest", "tags", "timestamp"], "{x}");
    }
    let mine = m.iter().find(|x| x["digest"] == d1.as_str()).unwrap();
    assert_eq!(mine["tags"], json!(["v1"]));
    let v = wharf(
        &s,
        &[
            "repository",
            "show-manifests",
            "--repository",
            "team/app",
            "--detail",
        ],
    )
    .await
    .ok();
    assert!(v[0]["changeableAttributes"].is_object(), "{v}");

    // update: a lock, seen on the registry
    let v = wharf(
        &s,
        &[
            "repository",
            "update",
            "--image",
            "team/app:v1",
            "--write-enabled",
            "false",
        ],
    )
    .await
    .ok();
    assert_eq!(v["tag"]["changeableAttributes"]["writeEnabled"], false);
    let r: Value = c
        .get(s.url("/acr/v1/team/app/_tags/v1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["tag"]["changeableAttributes"]["writeEnabled"], false);
    let v = wharf(
        &s,
        &[
            "repository",
            "update",
            "--repository",
            "other",
            "--list-enabled",
            "false",
            "--delete-enabled",
            "true",
        ],
    )
    .await
    .ok();
    assert_eq!(v["changeableAttributes"]["listEnabled"], false);
    assert_eq!(v["changeableAttributes"]["deleteEnabled"], true);
    wharf(
        &s,
        &[
            "repository",
            "update",
            "--repository",
            "other",
            "--list-enabled",
            "true",
        ],
    )
    .await
    .ok();
    let o = wharf(&s, &["repository", "update", "--repository", "other"]).await;
    assert!(o.err().contains("nothing to update"), "{}", o.stderr);

    // a locked image cannot be deleted: the server's refusal, as it words it
    let o = wharf(
        &s,
        &["repository", "delete", "--image", "team/app:v1", "--yes"],
    )
    .await;
    assert!(o.err().contains("disallowed"), "{}", o.stderr);
    assert_eq!(status(&c, &s, "/v2/team/app/manifests/v1").await, 200);

    // untag: the tag goes, the manifest stays
    let o = wharf(&s, &["repository", "untag", "--image", "team/app:v2"]).await;
    assert_eq!(o.text(), "");
    assert_eq!(status(&c, &s, "/v2/team/app/manifests/v2").await, 404);
    assert_eq!(
        status(&c, &s, &format!("/v2/team/app/manifests/{d2}")).await,
        200
    );
    let o = wharf(
        &s,
        &["repository", "untag", "--image", &format!("team/app@{d2}")],
    )
    .await;
    assert!(o.err().contains("name:tag"), "{}", o.stderr);

    // delete an image: asks first (no terminal here), then deletes the manifest
    let o = wharf(
        &s,
        &["repository", "delete", "--image", &format!("team/app@{d2}")],
    )
    .await;
    assert!(o.err().contains("--yes"), "{}", o.stderr);
    assert_eq!(
        status(&c, &s, &format!("/v2/team/app/manifests/{d2}")).await,
        200
    );
    wharf(
        &s,
        &[
            "repository",
            "delete",
            "--image",
            &format!("team/app@{d2}"),
            "--yes",
        ],
    )
    .await
    .text();
    assert_eq!(
        status(&c, &s, &format!("/v2/team/app/manifests/{d2}")).await,
        404
    );

    // delete by tag: the tag's manifest goes, once unlocked
    wharf(
        &s,
        &[
            "repository",
            "update",
            "--image",
            "team/app:v1",
            "--write-enabled",
            "true",
        ],
    )
    .await
    .ok();
    wharf(
        &s,
        &["repository", "delete", "--image", "team/app:v1", "--yes"],
    )
    .await
    .text();
    assert_eq!(
        status(&c, &s, &format!("/v2/team/app/manifests/{d1}")).await,
        404
    );

    // delete a repository: what was deleted, as the data plane answers
    let v = wharf(
        &s,
        &["repository", "delete", "--repository", "other", "--yes"],
    )
    .await
    .ok();
    assert_eq!(v["tagsDeleted"], json!(["latest"]), "{v}");
    assert_eq!(v["manifestsDeleted"].as_array().unwrap().len(), 1, "{v}");
    let v = wharf(&s, &["repository", "list"]).await.ok();
    assert!(!v.as_array().unwrap().contains(&json!("other")), "{v}");

    // az's -n names the registry for these commands, checked like -r
    let o = wharf(&s, &["repository", "list", "-n", "elsewhere"]).await;
    assert!(o.err().contains("\"elsewhere\""), "{}", o.stderr);
    wharf(&s, &["repository", "list", "-n", "wharf"]).await.ok();
    // a name that could change the route is refused before anything is sent
    let o = wharf(&s, &["repository", "show", "--repository", "../v2/x"]).await;
    assert!(o.err().contains("repository"), "{}", o.stderr);
}

#[tokio::test]
async fn repository_lists_follow_link_pages() {
    let s = start(true).await;
    let c = client_with(&format!("Bearer {MGMT}"));
    let (_, body) = push_image(&c, &s, "many", "t000", "m").await;
    // 120 tags: more than one page of az's 100
    for i in 1..120 {
        let r = c
            .put(s.url(&format!("/v2/many/manifests/t{i:03}")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let v = wharf(&s, &["repository", "show-tags", "--repository", "many"])
        .await
        .ok();
    let want: Vec<String> = (0..120).map(|i| format!("t{i:03}")).collect();
    assert_eq!(v, json!(want));
    let v = wharf(
        &s,
        &[
            "repository",
            "show-tags",
            "--repository",
            "many",
            "--top",
            "110",
        ],
    )
    .await
    .ok();
    assert_eq!(v, json!(want[..110]));
    let o = wharf(
        &s,
        &[
            "repository",
            "show-tags",
            "--repository",
            "many",
            "--debug",
            "-o",
            "none",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("last=t099"), "{}", o.stderr);
}

#[tokio::test]
async fn repository_commands_take_the_token_challenge() {
    let s = start(true).await;
    let c = client_with(&format!("Bearer {MGMT}"));
    push(&c, &s, "app", "v1").await;
    push(&c, &s, "secret", "v1").await;

    // the management token: exchanged for a refresh token, then an access token, on the
    // challenge; none of them in the debug lines
    let o = wharf(
        &s,
        &["repository", "show-tags", "--repository", "app", "--debug"],
    )
    .await;
    assert_eq!(o.ok(), json!(["v1"]));
    assert!(o.stderr.contains("/oauth2/exchange"), "{}", o.stderr);
    assert!(o.stderr.contains("Response status: 401"), "{}", o.stderr);
    assert!(!o.stderr.contains(MGMT), "{}", o.stderr);
    assert!(o.stderr.contains("access_token=*****"), "{}", o.stderr);
    assert!(
        o.stderr.contains("\"refresh_token\":\"*****\""),
        "{}",
        o.stderr
    );

    // a token user (Basic, as ACR takes it) that may read app's metadata only
    wharf(
        &s,
        &[
            "token",
            "create",
            "-n",
            "reader1",
            "--repository",
            "app",
            "metadata/read",
            "content/read",
        ],
    )
    .await
    .ok();
    let g = wharf(
        &s,
        &[
            "token",
            "credential",
            "generate",
            "-n",
            "reader1",
            "--password1",
        ],
    )
    .await
    .ok();
    let pw = g["passwords"][0]["value"].as_str().unwrap().to_owned();
    let env = [
        ("WHARF_USERNAME", "reader1"),
        ("WHARF_PASSWORD", pw.as_str()),
    ];
    let o = wharf_env(&s, &env, &["repository", "show", "--repository", "app"]).await;
    assert_eq!(o.ok()["imageName"], "app");
    let o = wharf_env(&s, &env, &["repository", "show", "--repository", "secret"]).await;
    assert!(o.err().contains("refused"), "{}", o.stderr);
    let o = wharf_env(
        &s,
        &env,
        &["repository", "delete", "--repository", "app", "--yes"],
    )
    .await;
    assert!(o.err().contains("refused"), "{}", o.stderr);
    assert_eq!(status(&c, &s, "/v2/app/manifests/v1").await, 200);

    // no credentials: the way to give them
    let o = wharf_env(&s, &[], &["repository", "list"]).await;
    assert!(o.err().contains("--username"), "{}", o.stderr);
}
