//! Webhooks end to end: a real server on port 0, real receivers, real HTTP. The management API
//! (ARM shapes, validation, write-only secrets), ACR-shaped events for every registry action,
//! delivery (retries, timeouts, isolation, restarts, redelivery), history, and the `wharf
//! webhook` CLI.
//!
//! No test asserts how long something took; waits have generous deadlines, and the isolation
//! test only checks that one endpoint's events arrive while another endpoint is still hanging.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Behaviour, Received, Receiver, Server, fast_hooks, push_blob, push_image, sha256};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const TEST_UA: &str = "wharf-webhook-test/1.0 (integration)";
/// Long enough for any delivery on a busy two-core machine; only reached when a test fails.
const WAIT: Duration = Duration::from_secs(15);

// ---- helpers ------------------------------------------------------------------------------

/// A registry client with a recognisable User-Agent (reqwest sends none by default).
fn ua_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(TEST_UA)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn hook_url(s: &Server, name: &str) -> String {
    s.url(&format!("/wharf/v1/webhooks/{name}"))
}

async fn put_hook(c: &reqwest::Client, s: &Server, name: &str, body: Value) -> reqwest::Response {
    c.put(hook_url(s, name)).json(&body).send().await.unwrap()
}

/// Creates a webhook and asserts 201.
async fn create_hook(
    c: &reqwest::Client,
    s: &Server,
    name: &str,
    uri: &str,
    actions: &[&str],
    scope: &str,
) -> Value {
    create_hook_with(
        c,
        s,
        name,
        json!({"serviceUri": uri, "actions": actions, "scope": scope}),
    )
    .await
}

async fn create_hook_with(c: &reqwest::Client, s: &Server, name: &str, props: Value) -> Value {
    let r = put_hook(c, s, name, json!({ "properties": props })).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "create {name}: {v}");
    v
}

async fn patch_hook(c: &reqwest::Client, s: &Server, name: &str, body: Value) -> (u16, Value) {
    let r = c.patch(hook_url(s, name)).json(&body).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn post_json(c: &reqwest::Client, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = c.post(url).header("content-type", "application/json");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Every list-events entry of a webhook, following nextLink, newest first.
async fn list_events(c: &reqwest::Client, s: &Server, name: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = format!("{}/listEvents", hook_url(s, name));
    loop {
        let (st, v) = post_json(c, &url, None).await;
        assert_eq!(st, 200, "listEvents: {v}");
        out.extend(v["value"].as_array().unwrap().iter().cloned());
        match v["nextLink"].as_str() {
            Some(next) => url = absolute(s, next),
            None => return out,
        }
    }
}

fn absolute(s: &Server, link: &str) -> String {
    if link.starts_with("http://") || link.starts_with("https://") {
        link.to_owned()
    } else {
        s.url(link)
    }
}

/// Polls list-events until `f` accepts it (history is written asynchronously, in batches).
async fn wait_history(
    c: &reqwest::Client,
    s: &Server,
    name: &str,
    f: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = list_events(c, s, name).await;
        if f(&ev) || tokio::time::Instant::now() >= deadline {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for at least `n` requests on `path` and returns all of them.
async fn expect_events(r: &Receiver, path: &str, n: usize) -> Vec<Received> {
    let got = r.wait_for(path, n, WAIT).await;
    assert!(
        got.len() >= n,
        "{path}: expected {n} events, got {}: {:?}",
        got.len(),
        bodies(&got)
    );
    got
}

fn bodies(got: &[Received]) -> Vec<Value> {
    got.iter().map(|r| r.body.clone()).collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

fn assert_uuid(s: &str) {
    let parts: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    assert_eq!(lens, [8, 4, 4, 4, 12], "not a GUID: {s}");
    assert!(
        parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())),
        "not a GUID: {s}"
    );
}

/// `YYYY-MM-DDTHH:MM:SS.fffffffZ`: RFC 3339 UTC with exactly 7 fractional digits.
fn assert_timestamp(s: &str) {
    let b = s.as_bytes();
    let ok = b.len() == 28
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            27 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(ok, "timestamp not in the 7-digit UTC form: {s}");
}

/// Pushes a config and a layer, returns the image manifest bytes (not pushed).
async fn image_manifest(c: &reqwest::Client, s: &Server, repo: &str, salt: &str) -> Vec<u8> {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"salt\":\"{salt}\"}}");
    let layer = format!("layer-{salt}");
    let cd = push_blob(c, s, repo, config.as_bytes()).await;
    let ld = push_blob(c, s, repo, layer.as_bytes()).await;
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}],
    }))
    .unwrap()
}

async fn put_manifest(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    reference_and_query: &str,
    body: &[u8],
) {
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/{reference_and_query}")))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "manifest PUT: {:?}", r.text().await);
}

async fn delete(c: &reqwest::Client, url: &str) -> u16 {
    c.delete(url).send().await.unwrap().status().as_u16()
}

fn port_of(s: &Server) -> u16 {
    s.addr.port()
}

/// A loopback port with nothing listening on it (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn ids(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.body["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---- management API -----------------------------------------------------------------------

#[tokio::test]
async fn management_crud_in_arm_shapes() {
    let s = Server::start().await;
    let c = ua_client();
    let uri = "http://127.0.0.1:9/hooks/secret-path?token=tok3n";
    let r = put_hook(
        &c,
        &s,
        "deployHook1",
        json!({
            "location": "local",
            "tags": {"team": "platform"},
            "properties": {
                "serviceUri": uri,
                "customHeaders": {"Authorization": "Bearer hdr-s3cret"},
                "status": "enabled",
                "scope": "payments/ledger:*",
                "actions": ["push", "delete"]
            }
        }),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("secret-path") && !text.contains("tok3n") && !text.contains("hdr-s3cret"),
        "{text}"
    );
    let w: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(w["name"], "deployHook1");
    assert_eq!(w["type"], "Microsoft.ContainerRegistry/registries/webhooks");
    assert!(
        w["id"]
            .as_str()
            .unwrap()
            .ends_with("/registries/wharf/webhooks/deployHook1"),
        "{w}"
    );
    assert_eq!(w["location"], "local");
    assert_eq!(w["tags"], json!({"team": "platform"}));
    assert_eq!(
        w["properties"],
        json!({"status": "enabled", "scope": "payments/ledger:*", "actions": ["push", "delete"],
            "provisioningState": "Succeeded", "signing": {"enabled": false},
            "payloadFormat": "acr"})
    );

    // get
    let r = c.get(hook_url(&s, "deployHook1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("secret-path") && !text.contains("hdr-s3cret"),
        "{text}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["properties"],
        w["properties"]
    );

    // defaults: status enabled, location = server region, empty scope and tags
    create_hook_with(
        &c,
        &s,
        "second22",
        json!({"serviceUri": "https://example.invalid/x", "actions": ["push"]}),
    )
    .await;
    let r = c.get(s.url("/wharf/v1/webhooks")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("secret-path")
            && !text.contains("hdr-s3cret")
            && !text.contains("example.invalid"),
        "{text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deployHook1", "second22"]);
    let second = &list["value"][1];
    assert_eq!(second["location"], "local");
    assert_eq!(second["properties"]["status"], "enabled");
    assert_eq!(second["properties"]["scope"], "");

    // getCallbackConfig: the only place the secrets come back, unmasked
    let (st, cfg) = post_json(
        &c,
        &format!("{}/getCallbackConfig", hook_url(&s, "deployHook1")),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        cfg,
        json!({"serviceUri": uri, "customHeaders": {"Authorization": "Bearer hdr-s3cret"}})
    );

    // PATCH: only the given fields change
    let (st, w2) = patch_hook(
        &c,
        &s,
        "deployHook1",
        json!({"tags": {"team": "infra"}, "properties": {"status": "disabled", "actions": ["push", "quarantine"], "customHeaders": {"X-Token": "t2-secret"}}}),
    )
    .await;
    assert_eq!(st, 200, "{w2}");
    assert!(!w2.to_string().contains("t2-secret"));
    assert_eq!(w2["tags"], json!({"team": "infra"}));
    assert_eq!(w2["properties"]["status"], "disabled");
    assert_eq!(w2["properties"]["scope"], "payments/ledger:*");
    assert_eq!(w2["properties"]["actions"], json!(["push", "quarantine"]));
    assert_eq!(w2["location"], "local");
    let (_, cfg) = post_json(
        &c,
        &format!("{}/getCallbackConfig", hook_url(&s, "deployHook1")),
        None,
    )
    .await;
    assert_eq!(
        cfg,
        json!({"serviceUri": uri, "customHeaders": {"X-Token": "t2-secret"}})
    );
    // an empty PATCH changes nothing
    let (st, _) = patch_hook(&c, &s, "deployHook1", json!({})).await;
    assert_eq!(st, 200);

    // a PUT on an existing name replaces it whole (ARM's create-or-replace): 200
    let r = put_hook(
        &c,
        &s,
        "deployHook1",
        json!({"properties": {"serviceUri": uri, "actions": ["push"]}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let w: Value = r.json().await.unwrap();
    assert_eq!(w["properties"]["actions"], json!(["push"]), "{w}");
    assert_eq!(w["properties"]["scope"], "", "{w}");
    assert_eq!(w["tags"], json!({}), "{w}");

    // errors
    let r = put_hook(
        &c,
        &s,
        "deployHook1",
        json!({"location": "elsewhere", "properties": {"serviceUri": uri, "actions": ["push"]}}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["code"].is_string() && e["error"]["message"].is_string(),
        "{e}"
    );
    let r = c.get(hook_url(&s, "nosuchhook")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (st, _) = patch_hook(
        &c,
        &s,
        "nosuchhook",
        json!({"properties": {"status": "enabled"}}),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = post_json(&c, &format!("{}/ping", hook_url(&s, "nosuchhook")), None).await;
    assert_eq!(st, 404);

    // delete: 200, then 404 on get, 204 on a second delete
    assert_eq!(delete(&c, &hook_url(&s, "deployHook1")).await, 200);
    assert_eq!(
        c.get(hook_url(&s, "deployHook1"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(delete(&c, &hook_url(&s, "deployHook1")).await, 204);
    let list: Value = c
        .get(s.url("/wharf/v1/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_webhook_input_is_a_400_naming_the_field() {
    let s = Server::start().await;
    let c = ua_client();
    let ok_props = || json!({"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"]});
    let secret_uri = "ftp://user:uri-s3cret@127.0.0.1/tok-s3cret";
    // (name, body, field the message must name)
    let long_name = "a".repeat(51);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("abc", json!({"properties": ok_props()}), "name"),
        ("has-dash1", json!({"properties": ok_props()}), "name"),
        (&long_name, json!({"properties": ok_props()}), "name"),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["pull"]}}),
            "actions",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": []}}),
            "actions",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h"}}),
            "actions",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": "push"}}),
            "actions",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "scope": "Foo:bar"}}),
            "scope",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "scope": "a:b:c"}}),
            "scope",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "scope": "repo:bad tag"}}),
            "scope",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": secret_uri, "actions": ["push"]}}),
            "serviceUri",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "not a uri uri-s3cret", "actions": ["push"]}}),
            "serviceUri",
        ),
        (
            "goodname1",
            json!({"properties": {"actions": ["push"]}}),
            "serviceUri",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "status": "paused"}}),
            "status",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "customHeaders": "Bearer hdr-s3cret"}}),
            "customHeaders",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "customHeaders": {"Bad Header": "hdr-s3cret"}}}),
            "customHeaders",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "customHeaders": {"X-A": "hdr-s3cret\n"}}}),
            "customHeaders",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "customHeaders": {"X-A": 5}}}),
            "customHeaders",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"], "customHeaders": {"Content-Length": "1"}}}),
            "customHeaders",
        ),
        (
            "goodname1",
            json!({"properties": {"serviceUri": 42, "actions": ["push"]}}),
            "serviceUri",
        ),
        (
            "goodname1",
            json!({"location": "bad location!", "properties": ok_props()}),
            "location",
        ),
        (
            "goodname1",
            json!({"properties": ok_props(), "tags": "x"}),
            "tags",
        ),
        (
            "goodname1",
            json!({"properties": ok_props(), "unknownThing": 1}),
            "unknownThing",
        ),
        ("goodname1", json!([1, 2]), "body"),
    ];
    for (name, body, field) in cases {
        let r = put_hook(&c, &s, name, body.clone()).await;
        let st = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(st, 400, "{name} {body}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(field),
            "{body}: message {msg:?} should name {field}"
        );
        assert!(
            !text.contains("s3cret"),
            "a secret echoed in an error: {text}"
        );
    }
    // not JSON at all
    let r = c
        .put(hook_url(&s, "goodname1"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // nothing was created by the failures
    let list: Value = c
        .get(s.url("/wharf/v1/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"], json!([]));

    // update: the same rules, and location is fixed after creation
    create_hook_with(&c, &s, "goodname1", ok_props()).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"location": "westus"}), "location"),
        (json!({"properties": {"actions": ["nope"]}}), "actions"),
        (json!({"properties": {"actions": []}}), "actions"),
        (json!({"properties": {"scope": "UPPER"}}), "scope"),
        (
            json!({"properties": {"serviceUri": "gopher://x/uri-s3cret"}}),
            "serviceUri",
        ),
        (json!({"properties": {"status": "on"}}), "status"),
        (
            json!({"properties": {"customHeaders": {"X-A": ["hdr-s3cret"]}}}),
            "customHeaders",
        ),
    ];
    for (body, field) in cases {
        let (st, e) = patch_hook(&c, &s, "goodname1", body.clone()).await;
        assert_eq!(st, 400, "{body}: {e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(field),
            "{body}: message {msg:?} should name {field}"
        );
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
    let (_, cfg) = post_json(
        &c,
        &format!("{}/getCallbackConfig", hook_url(&s, "goodname1")),
        None,
    )
    .await;
    assert_eq!(
        cfg["serviceUri"], "http://127.0.0.1:9/h",
        "a rejected update changed nothing"
    );
}

/// Asserts an ARM error response: the status, `{"error":{"code","message"}}` with this code,
/// and Wharf's management header. Returns the message.
async fn arm_error(r: reqwest::Response, status: u16, code: &str) -> String {
    let st = r.status().as_u16();
    let url = r.url().to_string();
    let api = r
        .headers()
        .get("wharf-api")
        .map(|v| v.to_str().unwrap().to_owned());
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    assert_eq!(st, status, "{url}: {text}");
    assert_eq!(
        api.as_deref(),
        Some("v1"),
        "{url}: no management header: {text}"
    );
    assert_eq!(ct.as_deref(), Some("application/json"), "{url}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(v["error"]["code"], code, "{text}");
    v["error"]["message"].as_str().unwrap().to_owned()
}

/// Regression (issue 9): a 70,000-character service URI was stored, and custom headers had no
/// bounds. Each limit is a 400 whose message names the field and the limit, and a refused
/// create or update stores nothing.
#[tokio::test]
async fn webhook_limits_are_a_400_naming_the_limit_and_store_nothing() {
    let s = Server::start().await;
    let c = ua_client();
    let long_uri = format!("http://127.0.0.1:9/{}", "a".repeat(70_000 - 19));
    assert_eq!(long_uri.len(), 70_000);
    let headers = |n: usize, name_len: usize, value_len: usize| -> Value {
        (0..n)
            .map(|i| {
                let name = format!("X-{i}-{}", "n".repeat(name_len.saturating_sub(4)));
                (name, json!("v".repeat(value_len)))
            })
            .collect::<serde_json::Map<String, Value>>()
            .into()
    };
    let props =
        |uri: &str, h: Value| json!({"serviceUri": uri, "actions": ["push"], "customHeaders": h});
    let ok_uri = "http://127.0.0.1:9/h";
    let cases: Vec<(Value, &str)> = vec![
        (
            props(&long_uri, json!({})),
            "serviceUri: must be at most 2048 characters",
        ),
        (
            props(ok_uri, headers(17, 8, 8)),
            "customHeaders: at most 16 headers",
        ),
        (props(ok_uri, headers(1, 257, 8)), "at most 256 characters"),
        (
            props(ok_uri, headers(1, 8, 4097)),
            "at most 4096 characters",
        ),
        (props(ok_uri, headers(3, 8, 3000)), "at most 8192 bytes"),
    ];
    for (p, want) in &cases {
        let r = put_hook(&c, &s, "limithook", json!({ "properties": p })).await;
        let msg = arm_error(r, 400, "InvalidParameter").await;
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        assert!(
            !msg.contains("aaaaaaaa") && !msg.contains("vvvvvvvv"),
            "{msg}"
        );
    }
    let list: Value = c
        .get(s.url("/wharf/v1/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"], json!([]), "nothing was stored");

    // At the limits exactly, it is accepted.
    let max_uri = format!("http://127.0.0.1:9/{}", "a".repeat(2048 - 19));
    create_hook_with(&c, &s, "limithook", props(&max_uri, headers(16, 8, 100))).await;
    // An update over a limit changes nothing.
    for (p, want) in cases {
        let (st, e) = patch_hook(&c, &s, "limithook", json!({ "properties": p })).await;
        assert_eq!(st, 400, "{e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
    let (_, cfg) = post_json(
        &c,
        &format!("{}/getCallbackConfig", hook_url(&s, "limithook")),
        None,
    )
    .await;
    assert_eq!(cfg["serviceUri"], max_uri.as_str());
    assert_eq!(cfg["customHeaders"].as_object().unwrap().len(), 16);
}

/// Regression (issue 9): axum's own refusals (bad query values, unknown paths, wrong methods,
/// oversized or non-JSON bodies) were plain text. Every management failure is ARM-shaped.
#[tokio::test]
async fn every_management_failure_is_arm_shaped() {
    let s = Server::start().await;
    let c = ua_client();
    create_hook(&c, &s, "armhook", "http://127.0.0.1:9/h", &["push"], "").await;
    let events = format!("{}/listEvents", hook_url(&s, "armhook"));

    // query values
    for q in ["$top=abc", "$top=-1", "$top=0", "$top=1.5", "$top="] {
        let r = c
            .post(format!("{events}?{q}"))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        let msg = arm_error(r, 400, "InvalidQueryParameterValue").await;
        assert!(msg.contains("$top"), "{q}: {msg}");
    }
    for q in ["$skipToken=abc", "$skipToken=-4"] {
        let r = c.get(format!("{events}?{q}")).send().await.unwrap();
        let msg = arm_error(r, 400, "InvalidQueryParameterValue").await;
        assert!(msg.contains("$skipToken"), "{q}: {msg}");
    }
    let r = c
        .post(format!("{events}?$top=5000&api-version=2023-07-01"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a large $top is capped, unknown parameters ignored"
    );

    // unknown routes
    for (m, path) in [
        (reqwest::Method::GET, "/wharf/v1"),
        (reqwest::Method::GET, "/wharf/v1/"),
        (reqwest::Method::GET, "/wharf/v1/nothing"),
        (
            reqwest::Method::GET,
            "/wharf/v1/webhooks/armhook/extra/segments",
        ),
        (
            reqwest::Method::POST,
            "/wharf/v1/webhooks/armhook/nosuchaction",
        ),
    ] {
        let r = c
            .request(m.clone(), s.url(path))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        let msg = arm_error(r, 404, "NotFound").await;
        assert!(msg.contains("no management operation"), "{m} {path}: {msg}");
    }

    // wrong methods: 405, ARM-shaped, with Allow kept
    for (m, path) in [
        (reqwest::Method::DELETE, "/wharf/v1/webhooks"),
        (reqwest::Method::POST, "/wharf/v1/webhooks/armhook"),
        (reqwest::Method::GET, "/wharf/v1/webhooks/armhook/ping"),
    ] {
        let r = c
            .request(m.clone(), s.url(path))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        let allow = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let msg = arm_error(r, 405, "MethodNotAllowed").await;
        assert!(msg.contains(m.as_str()), "{m} {path}: {msg}");
        assert!(
            allow.is_some_and(|a| !a.is_empty()),
            "{m} {path}: no Allow header"
        );
    }

    // content types: create and update need JSON; a body of another type is refused anywhere
    let body = json!({"properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"]}})
        .to_string();
    let url = hook_url(&s, "armhook2");
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
    ] {
        let mut req = c.put(&url).body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let msg = arm_error(req.send().await.unwrap(), 415, "UnsupportedMediaType").await;
        assert!(msg.contains("application/json"), "{ct:?}: {msg}");
    }
    let r = c
        .patch(hook_url(&s, "armhook"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    arm_error(r, 415, "UnsupportedMediaType").await;
    let r = c.patch(hook_url(&s, "armhook")).send().await.unwrap();
    arm_error(r, 415, "UnsupportedMediaType").await;
    let r = c
        .post(format!("{}/ping", hook_url(&s, "armhook")))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    arm_error(r, 415, "UnsupportedMediaType").await;
    let r = c
        .post(format!("{}/redeliver", hook_url(&s, "armhook")))
        .header("content-type", "application/xml")
        .body("<eventId/>")
        .send()
        .await
        .unwrap();
    arm_error(r, 415, "UnsupportedMediaType").await;
    // the type's parameters and letter case do not matter
    let r = c
        .put(&url)
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // In the open mode a cross-site page can make a browser send a form post or a body-less
    // POST without a CORS preflight (not a JSON one): what a form can send is refused, and a
    // body-less POST without a Content-Type (the Azure SDK's parameterless actions) only
    // without an Origin of another site.
    let callback = format!("{}/getCallbackConfig", hook_url(&s, "armhook"));
    for (ct, body) in [
        ("application/x-www-form-urlencoded", ""),
        ("application/x-www-form-urlencoded", "a=b"),
        ("multipart/form-data; boundary=x", "--x--\r\n"),
        ("text/plain", ""),
        ("text/plain", "{}"),
    ] {
        let r = c
            .post(&callback)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        arm_error(r, 415, "UnsupportedMediaType").await;
    }
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let r = c
            .post(&callback)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        arm_error(r, 415, "UnsupportedMediaType").await;
    }
    // a body without a type is not body-less
    let r = c.post(&callback).body("{}").send().await.unwrap();
    arm_error(r, 415, "UnsupportedMediaType").await;
    let r = c.post(&callback).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["serviceUri"], "http://127.0.0.1:9/h");
    let r = c
        .post(&callback)
        .header("origin", format!("http://{}", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{}/getCallbackConfig", hook_url(&s, "armhook")))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // malformed JSON, including nesting far past the parser's recursion limit
    let deep = "[".repeat(100_000);
    for bad in ["{nope", "[1,", "\"just a string\"", deep.as_str()] {
        let r = c
            .patch(hook_url(&s, "armhook"))
            .header("content-type", "application/json")
            .body(bad.to_owned())
            .send()
            .await
            .unwrap();
        let msg = arm_error(r, 400, "InvalidRequestContent").await;
        assert!(
            msg.starts_with("request body"),
            "{}: {msg}",
            &bad[..bad.len().min(20)]
        );
    }

    // oversized bodies: declared, and chunked without a length
    let huge = format!(r#"{{"tags":{{"t":"{}"}}}}"#, "x".repeat(200 * 1024));
    let r = c
        .patch(hook_url(&s, "armhook"))
        .header("content-type", "application/json")
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    let msg = arm_error(r, 413, "RequestBodyTooLarge").await;
    assert!(msg.contains("131072"), "{msg}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = huge
        .into_bytes()
        .chunks(16 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = c
        .patch(hook_url(&s, "armhook"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    arm_error(r, 413, "RequestBodyTooLarge").await;
    let (_, w) = (
        200,
        c.get(hook_url(&s, "armhook"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_eq!(w["tags"], json!({}), "a refused update changed nothing");

    // a name that is not UTF-8
    let r = c.get(s.url("/wharf/v1/webhooks/%FF")).send().await.unwrap();
    arm_error(r, 400, "InvalidParameter").await;
    // success answers carry the management header too
    let r = c.get(s.url("/wharf/v1/webhooks")).send().await.unwrap();
    assert_eq!(r.headers()["wharf-api"], "v1");
}

// ---- events -------------------------------------------------------------------------------

#[tokio::test]
async fn push_by_tag_delivers_one_acr_push_event_per_tag() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook_with(
        &c,
        &s,
        "pushhook",
        json!({"serviceUri": rcv.url("/push"), "actions": ["push"], "customHeaders": {"Authorization": "Basic dXNlcjpwYXNz", "X-Extra": "one"}}),
    )
    .await;
    let (digest, body) = push_image(&c, &s, "payments/ledger", "2.7.1", "a").await;
    let got = expect_events(&rcv, "/push", 1).await;
    assert_eq!(got.len(), 1, "{:?}", bodies(&got));
    let r = &got[0];
    let e = &r.body;

    // headers
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.headers["user-agent"].to_str().unwrap(),
        format!("Wharf/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.headers["authorization"], "Basic dXNlcjpwYXNz");
    assert_eq!(r.headers["x-extra"], "one");
    assert_eq!(
        r.headers["content-length"].to_str().unwrap(),
        r.raw.len().to_string()
    );

    // body: one compact object, ACR's keys in ACR's order
    let raw = std::str::from_utf8(&r.raw).unwrap();
    assert!(raw.starts_with("{\"id\":\""), "{raw}");
    assert!(!raw.contains("null") && !raw.contains('\n'), "{raw}");
    let order: Vec<usize> = [
        "\"id\"",
        "\"timestamp\"",
        "\"action\"",
        "\"target\"",
        "\"request\"",
    ]
    .iter()
    .map(|k| raw.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "key order: {raw}");
    assert_eq!(
        keys(e),
        sorted(&["id", "timestamp", "action", "target", "request"])
    );
    assert_uuid(e["id"].as_str().unwrap());
    assert_timestamp(e["timestamp"].as_str().unwrap());
    assert_eq!(e["action"], "push");
    let t = &e["target"];
    assert_eq!(
        keys(t),
        sorted(&["mediaType", "size", "digest", "length", "repository", "tag"])
    );
    assert_eq!(t["mediaType"], OCI_MANIFEST);
    assert_eq!(t["size"].as_i64(), Some(body.len() as i64));
    assert_eq!(t["length"].as_i64(), Some(body.len() as i64));
    assert_eq!(t["digest"], digest.as_str());
    assert_eq!(t["repository"], "payments/ledger");
    assert_eq!(t["tag"], "2.7.1");
    let q = &e["request"];
    assert_eq!(keys(q), sorted(&["id", "host", "method", "useragent"]));
    assert_uuid(q["id"].as_str().unwrap());
    assert_ne!(q["id"], e["id"]);
    assert_eq!(q["host"], format!("127.0.0.1:{}", port_of(&s)));
    assert_eq!(q["method"], "PUT");
    assert_eq!(q["useragent"], TEST_UA);

    // a second tag pointing at the same manifest is a second push, with its own event
    put_manifest(&c, &s, "payments/ledger", "latest", &body).await;
    let got = expect_events(&rcv, "/push", 2).await;
    assert_eq!(got[1].body["target"]["tag"], "latest");
    assert_eq!(got[1].body["target"]["digest"], digest.as_str());
    assert_ne!(got[1].body["id"], got[0].body["id"]);
    assert_ne!(got[1].body["request"]["id"], got[0].body["request"]["id"]);
}

/// Concurrent pushes are group-committed, and a group writes the events and deliveries of
/// all its puts in one statement each: every push still gets exactly one event at every
/// webhook that wants it, with the same id at each, and none at a webhook whose scope or
/// status excludes it.
#[tokio::test]
async fn concurrent_pushes_reach_every_matching_webhook_once_with_one_id() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "hookA", &rcv.url("/a"), &["push"], "").await;
    create_hook(&c, &s, "hookB", &rcv.url("/b"), &["push"], "crowd:*").await;
    create_hook(
        &c,
        &s,
        "elsewhere",
        &rcv.url("/other"),
        &["push"],
        "other:*",
    )
    .await;
    create_hook_with(
        &c,
        &s,
        "switchedoff",
        json!({"serviceUri": rcv.url("/off"), "actions": ["push"], "status": "disabled"}),
    )
    .await;
    let body = image_manifest(&c, &s, "crowd", "shared").await;
    const N: usize = 24;
    let tags: Vec<String> = (0..N).map(|i| format!("t{i}")).collect();
    futures_util::future::join_all(tags.iter().map(|t| put_manifest(&c, &s, "crowd", t, &body)))
        .await;
    let ids = |got: &[Received]| {
        let mut by_tag: Vec<(String, String)> = got
            .iter()
            .map(|r| {
                (
                    r.body["target"]["tag"].as_str().unwrap().to_owned(),
                    r.body["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        by_tag.sort();
        by_tag
    };
    let a = ids(&expect_events(&rcv, "/a", N).await);
    let b = ids(&expect_events(&rcv, "/b", N).await);
    // Settle: anything extra (a duplicate, a stray delivery) would arrive meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(&rcv.received("/a")), a, "one event per push at hookA");
    assert_eq!(ids(&rcv.received("/b")), b, "one event per push at hookB");
    let mut tags = tags;
    tags.sort();
    assert_eq!(a.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(), tags);
    assert_eq!(a, b, "the same event id at both webhooks");
    let distinct: std::collections::HashSet<&String> = a.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), N, "one id per push");
    assert!(rcv.received("/other").is_empty(), "out of scope");
    assert!(rcv.received("/off").is_empty(), "disabled");
}

#[tokio::test]
async fn request_host_is_the_host_the_client_addressed() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "hosthook", &rcv.url("/h"), &["push"], "").await;
    let body = image_manifest(&c, &s, "web", "host").await;
    let r = c
        .put(s.url("/v2/web/manifests/v1"))
        // A loopback name: the open mode answers only those (the auth tests cover others).
        .header("host", "registry.localhost:8443")
        .header("user-agent", "containerd/1.7.13")
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = expect_events(&rcv, "/h", 1).await;
    assert_eq!(got[0].body["request"]["host"], "registry.localhost:8443");
    assert_eq!(got[0].body["request"]["useragent"], "containerd/1.7.13");
}

#[tokio::test]
async fn custom_content_type_header_overrides_the_default() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook_with(
        &c,
        &s,
        "ctypehook",
        json!({"serviceUri": rcv.url("/ct"), "actions": ["push"], "customHeaders": {"content-type": "application/vnd.example+json", "User-Agent": "AzureContainerRegistry/1.0"}}),
    )
    .await;
    push_image(&c, &s, "ct", "v1", "ct").await;
    let got = expect_events(&rcv, "/ct", 1).await;
    let h = &got[0].headers;
    assert_eq!(h.get_all("content-type").iter().count(), 1);
    assert_eq!(h["content-type"], "application/vnd.example+json");
    assert_eq!(h.get_all("user-agent").iter().count(), 1);
    assert_eq!(h["user-agent"], "AzureContainerRegistry/1.0");
}

#[tokio::test]
async fn push_by_digest_has_no_tag_and_each_tag_parameter_gets_an_event() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "digesthook", &rcv.url("/d"), &["push"], "").await;

    let body = image_manifest(&c, &s, "bydigest", "d1").await;
    let digest = sha256(&body);
    put_manifest(&c, &s, "bydigest", &digest, &body).await;
    let got = expect_events(&rcv, "/d", 1).await;
    let t = &got[0].body["target"];
    assert_eq!(
        keys(t),
        sorted(&["mediaType", "size", "digest", "length", "repository"])
    );
    assert_eq!(t["digest"], digest.as_str());
    assert_eq!(t["repository"], "bydigest");
    assert!(
        !std::str::from_utf8(&got[0].raw)
            .unwrap()
            .contains("\"tag\"")
    );

    // PUT by digest with ?tag=a&tag=b: one event per tag, none without a tag
    let body2 = image_manifest(&c, &s, "bydigest", "d2").await;
    let digest2 = sha256(&body2);
    put_manifest(
        &c,
        &s,
        "bydigest",
        &format!("{digest2}?tag=a&tag=b"),
        &body2,
    )
    .await;
    let got = expect_events(&rcv, "/d", 3).await;
    let mut tags: Vec<&str> = got[1..]
        .iter()
        .map(|r| r.body["target"]["tag"].as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["a", "b"]);
    for r in &got[1..] {
        assert_eq!(r.body["target"]["digest"], digest2.as_str());
    }
    // and they really are tags now
    let r = c.get(s.url("/v2/bydigest/tags/list")).send().await.unwrap();
    let tl: Value = r.json().await.unwrap();
    assert_eq!(tl["tags"], json!(["a", "b"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rcv.received("/d").len(),
        3,
        "{:?}",
        bodies(&rcv.received("/d"))
    );
}

/// A tag named twice in one PUT (`/manifests/a?tag=b&tag=a`) is one tag: one event.
#[tokio::test]
async fn a_tag_named_twice_in_one_put_gets_one_event() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "twicehook", &rcv.url("/t"), &["push"], "").await;
    let body = image_manifest(&c, &s, "twice", "1").await;
    put_manifest(&c, &s, "twice", "a?tag=b&tag=a", &body).await;
    expect_events(&rcv, "/t", 2).await;
    // the PUT's deliveries were queued together and go out together; a duplicate would be here
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rcv.received("/t");
    let mut tags: Vec<&str> = got
        .iter()
        .map(|r| r.body["target"]["tag"].as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["a", "b"]);
}

#[tokio::test]
async fn delete_by_digest_sends_delete_and_untagging_sends_nothing() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "delhook1", &rcv.url("/del"), &["delete"], "").await;
    // a second webhook sees pushes: the sync point that proves the untag was processed
    create_hook(&c, &s, "pushsync1", &rcv.url("/sync"), &["push"], "").await;

    let (digest, _) = push_image(&c, &s, "app/api", "v1", "x").await;
    put_manifest(
        &c,
        &s,
        "app/api",
        "v1-alias",
        &image_manifest(&c, &s, "app/api", "x").await,
    )
    .await;
    expect_events(&rcv, "/sync", 2).await;

    // delete by tag: the tag goes, no event
    assert_eq!(
        delete(&c, &s.url("/v2/app/api/manifests/v1-alias")).await,
        202
    );
    // delete by digest: one delete event
    assert_eq!(
        delete(&c, &s.url(&format!("/v2/app/api/manifests/{digest}"))).await,
        202
    );
    let got = expect_events(&rcv, "/del", 1).await;
    let e = &got[0].body;
    assert_eq!(
        keys(e),
        sorted(&["id", "timestamp", "action", "target", "request"])
    );
    assert_eq!(e["action"], "delete");
    assert_uuid(e["id"].as_str().unwrap());
    assert_timestamp(e["timestamp"].as_str().unwrap());
    assert_eq!(
        e["target"],
        json!({"mediaType": OCI_MANIFEST, "digest": digest, "repository": "app/api"})
    );
    let q = &e["request"];
    assert_eq!(q["method"], "DELETE");
    assert_eq!(q["host"], format!("127.0.0.1:{}", port_of(&s)));
    assert_eq!(q["useragent"], TEST_UA);
    assert_uuid(q["id"].as_str().unwrap());
    // the untag raised nothing: exactly one delete event, even after another delivery went by
    post_json(&c, &format!("{}/ping", hook_url(&s, "delhook1")), None).await;
    rcv.wait_for("/del", 2, WAIT).await;
    let got = rcv.received("/del");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body["action"], "ping");
}

#[tokio::test]
async fn repository_delete_sends_one_delete_event_per_manifest() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "repodel1", &rcv.url("/rd"), &["delete"], "team/*:*").await;
    let (d1, _) = push_image(&c, &s, "team/svc", "v1", "1").await;
    let (d2, _) = push_image(&c, &s, "team/svc", "v2", "2").await;
    let b3 = image_manifest(&c, &s, "team/svc", "3").await;
    let d3 = sha256(&b3);
    put_manifest(&c, &s, "team/svc", &d3, &b3).await;

    let r = c.delete(s.url("/acr/v1/team/svc")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let got = expect_events(&rcv, "/rd", 3).await;
    let digests: BTreeSet<&str> = got
        .iter()
        .map(|r| r.body["target"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        digests,
        BTreeSet::from([d1.as_str(), d2.as_str(), d3.as_str()])
    );
    for r in &got {
        assert_eq!(r.body["action"], "delete");
        assert_eq!(
            keys(&r.body["target"]),
            sorted(&["mediaType", "digest", "repository"])
        );
        assert_eq!(r.body["target"]["repository"], "team/svc");
        assert_eq!(r.body["request"]["method"], "DELETE");
    }
    assert_eq!(ids(&got).into_iter().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(
        c.get(s.url("/v2/team/svc/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn helm_chart_raises_push_and_chart_push_then_delete_and_chart_delete() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(
        &c,
        &s,
        "charthook",
        &rcv.url("/chart"),
        &["push", "delete", "chart_push", "chart_delete"],
        "charts/*:*",
    )
    .await;
    let config = br#"{"apiVersion":"v2","name":"webapp","version":"1.4.0","description":"demo","type":"application","appVersion":"1.0.0"}"#;
    let chart = b"not really a tarball, but a layer";
    let cd = push_blob(&c, &s, "charts/webapp", config).await;
    let ld = push_blob(&c, &s, "charts/webapp", chart).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": cd, "size": config.len()},
        "layers": [{"mediaType": HELM_LAYER, "digest": ld, "size": chart.len()}],
    }))
    .unwrap();
    let digest = sha256(&m);
    put_manifest(&c, &s, "charts/webapp", "1.4.0", &m).await;

    let got = expect_events(&rcv, "/chart", 2).await;
    let by_action: BTreeMap<&str, &Value> = got
        .iter()
        .map(|r| (r.body["action"].as_str().unwrap(), &r.body))
        .collect();
    let push = by_action["push"];
    assert_eq!(push["target"]["tag"], "1.4.0");
    assert_eq!(push["request"]["method"], "PUT");
    let cp = by_action["chart_push"];
    assert_eq!(
        keys(cp),
        sorted(&["id", "timestamp", "action", "target"]),
        "chart events have no request: {cp}"
    );
    assert_uuid(cp["id"].as_str().unwrap());
    assert_timestamp(cp["timestamp"].as_str().unwrap());
    assert_ne!(cp["id"], push["id"]);
    let t = &cp["target"];
    assert_eq!(
        keys(t),
        sorted(&[
            "mediaType",
            "size",
            "digest",
            "repository",
            "tag",
            "name",
            "version"
        ])
    );
    assert_eq!(t["name"], "webapp");
    assert_eq!(t["version"], "1.4.0");
    assert_eq!(t["digest"], digest.as_str());
    assert_eq!(t["size"].as_i64(), Some(m.len() as i64));
    assert_eq!(t["repository"], "charts/webapp");
    // ACR's legacy chart shape: the package file name as tag, ACR's chart media type.
    assert_eq!(t["tag"], "webapp-1.4.0.tgz");
    assert_eq!(t["mediaType"], "application/vnd.acr.helm.chart");

    assert_eq!(
        delete(&c, &s.url(&format!("/v2/charts/webapp/manifests/{digest}"))).await,
        202
    );
    let got = expect_events(&rcv, "/chart", 4).await;
    let by_action: BTreeMap<&str, &Value> = got[2..]
        .iter()
        .map(|r| (r.body["action"].as_str().unwrap(), &r.body))
        .collect();
    assert_eq!(
        by_action.keys().copied().collect::<Vec<_>>(),
        ["chart_delete", "delete"]
    );
    let cdel = by_action["chart_delete"];
    assert!(cdel.get("request").is_none(), "{cdel}");
    assert_eq!(cdel["target"]["name"], "webapp");
    assert_eq!(cdel["target"]["version"], "1.4.0");
    assert_eq!(cdel["target"]["tag"], "webapp-1.4.0.tgz");
    assert_eq!(
        cdel["target"]["mediaType"],
        "application/vnd.acr.helm.chart"
    );
    assert_eq!(cdel["target"]["digest"], digest.as_str());
    assert_eq!(
        by_action["delete"]["target"],
        json!({"mediaType": OCI_MANIFEST, "digest": digest, "repository": "charts/webapp"})
    );
}

#[tokio::test]
async fn quarantine_webhook_gets_quarantine_events_on_push() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "scanner1", &rcv.url("/q"), &["quarantine"], "").await;
    let (digest, body) = push_image(&c, &s, "scanner-demo", "v9", "q").await;
    let got = expect_events(&rcv, "/q", 1).await;
    let e = &got[0].body;
    assert_eq!(e["action"], "quarantine");
    assert_eq!(
        keys(e),
        sorted(&["id", "timestamp", "action", "target", "request"])
    );
    assert_eq!(
        e["target"],
        json!({"size": body.len(), "digest": digest, "length": body.len(), "repository": "scanner-demo", "tag": "v9"})
    );
    assert_eq!(keys(&e["request"]), sorted(&["id", "host", "method"]));
    assert_eq!(e["request"]["method"], "PUT");
    assert_eq!(e["request"]["host"], format!("127.0.0.1:{}", port_of(&s)));
}

// ---- ping and history ---------------------------------------------------------------------

#[tokio::test]
async fn ping_is_delivered_and_recorded_with_secrets_masked() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    let uri = rcv.url("/ping/s3cret-path?code=qs-s3cret");
    create_hook_with(
        &c,
        &s,
        "pinghook",
        json!({"serviceUri": uri, "actions": ["push"], "customHeaders": {"Authorization": "Bearer hdr-s3cret"}}),
    )
    .await;
    let (st, v) = post_json(&c, &format!("{}/ping", hook_url(&s, "pinghook")), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(keys(&v), ["id"]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert_uuid(&id);

    // the ping went out at once, so it is already there
    let got = rcv.received("/ping/s3cret-path");
    assert_eq!(got.len(), 1);
    let e = &got[0].body;
    assert_eq!(keys(e), sorted(&["id", "timestamp", "action"]));
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["action"], "ping");
    assert_timestamp(e["timestamp"].as_str().unwrap());
    assert_eq!(got[0].headers["authorization"], "Bearer hdr-s3cret");
    assert_eq!(got[0].headers["content-type"], "application/json");

    let ev = wait_history(&c, &s, "pinghook", |e| !e.is_empty()).await;
    assert_eq!(ev.len(), 1);
    let h = &ev[0];
    let text = h.to_string();
    assert!(!text.contains("s3cret"), "secret in history: {text}");
    assert_eq!(h["id"], id.as_str());
    let req = &h["eventRequestMessage"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["version"], "1.1");
    assert_eq!(
        req["content"], got[0].body,
        "history holds the content that was sent"
    );
    assert_eq!(req["headers"]["Authorization"], "******");
    assert_eq!(req["headers"]["Content-Type"], "application/json");
    assert_eq!(
        req["headers"]["Content-Length"],
        got[0].raw.len().to_string()
    );
    let ru = req["requestUri"].as_str().unwrap();
    assert!(ru.starts_with(&rcv.base), "{ru}");
    let resp = &h["eventResponseMessage"];
    assert_eq!(resp["statusCode"], "200");
    assert_eq!(resp["reasonPhrase"], "OK");
    assert!(resp["headers"].is_object());
    assert!(resp["content"].is_string());
}

#[tokio::test]
async fn list_events_pages_newest_first() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "pagedhook", &rcv.url("/p"), &["push"], "").await;
    let mut sent = Vec::new();
    for _ in 0..5 {
        let (_, v) = post_json(&c, &format!("{}/ping", hook_url(&s, "pagedhook")), None).await;
        sent.push(v["id"].as_str().unwrap().to_owned());
    }
    wait_history(&c, &s, "pagedhook", |e| e.len() >= 5).await;
    let mut seen = Vec::new();
    let mut url = format!("{}/listEvents?$top=2", hook_url(&s, "pagedhook"));
    let mut pages = 0;
    loop {
        let (st, v) = post_json(&c, &url, None).await;
        assert_eq!(st, 200, "{v}");
        pages += 1;
        let page = v["value"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match v["nextLink"].as_str() {
            Some(next) => {
                // ARM SDKs fetch nextLink with GET; both work
                url = absolute(&s, next);
                if pages == 2 {
                    let r = c.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    sent.reverse();
    assert_eq!(seen, sent, "newest first, each once");

    // new entries arriving while paging do not shift later pages
    let (_, v) = post_json(
        &c,
        &format!("{}/listEvents?$top=2", hook_url(&s, "pagedhook")),
        None,
    )
    .await;
    let next = absolute(&s, v["nextLink"].as_str().unwrap());
    post_json(&c, &format!("{}/ping", hook_url(&s, "pagedhook")), None).await;
    wait_history(&c, &s, "pagedhook", |e| e.len() >= 6).await;
    let (_, v2) = post_json(&c, &next, None).await;
    let page2: Vec<&str> = v2["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(page2, [sent[2].as_str(), sent[3].as_str()]);
}

// ---- status and scope ---------------------------------------------------------------------

#[tokio::test]
async fn disabled_webhook_receives_nothing_until_enabled_again() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook_with(
        &c,
        &s,
        "offhook1",
        json!({"serviceUri": rcv.url("/off"), "actions": ["push"], "status": "disabled"}),
    )
    .await;
    create_hook(&c, &s, "control1", &rcv.url("/control"), &["push"], "").await;
    push_image(&c, &s, "quiet", "v1", "1").await;
    expect_events(&rcv, "/control", 1).await;
    // the control got the push; the disabled webhook never will (no delivery was queued)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rcv.received("/off").len(), 0);
    assert!(list_events(&c, &s, "offhook1").await.is_empty());

    let (st, _) = patch_hook(
        &c,
        &s,
        "offhook1",
        json!({"properties": {"status": "enabled"}}),
    )
    .await;
    assert_eq!(st, 200);
    push_image(&c, &s, "quiet", "v2", "2").await;
    let got = expect_events(&rcv, "/off", 1).await;
    assert_eq!(
        got[0].body["target"]["tag"], "v2",
        "only the event after re-enabling"
    );
    expect_events(&rcv, "/control", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rcv.received("/off").len(), 1);
}

#[tokio::test]
async fn disabling_a_webhook_cancels_its_pending_retries() {
    let mut cfg = fast_hooks();
    cfg.retry.schedule = vec![0, 1, 1, 1, 1, 1, 1, 1];
    let s = Server::start_with(cfg).await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.set(
        "/fail",
        Behaviour {
            status: 500,
            ..Default::default()
        },
    );
    create_hook(&c, &s, "flaky123", &rcv.url("/fail"), &["push"], "").await;
    push_image(&c, &s, "cancel", "v1", "1").await;
    rcv.wait_for("/fail", 1, WAIT).await;
    let (st, _) = patch_hook(
        &c,
        &s,
        "flaky123",
        json!({"properties": {"status": "disabled"}}),
    )
    .await;
    assert_eq!(st, 200);
    let n = rcv.received("/fail").len();
    // retries were due every second; none comes after the disable
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        rcv.received("/fail").len() <= n + 1,
        "an attempt in flight may finish, no more"
    );
    let counts = s.store.deliveries().delivery_counts().await.unwrap();
    assert_eq!(counts.get("pending"), None, "{counts:?}");
    assert_eq!(counts.get("cancelled"), Some(&1), "{counts:?}");
}

#[tokio::test]
async fn scope_miss_receives_nothing_and_wildcards_match_end_to_end() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    create_hook(&c, &s, "control2", &rcv.url("/all"), &["push"], "").await;
    create_hook(
        &c,
        &s,
        "misshook",
        &rcv.url("/miss"),
        &["push"],
        "other/repo:*",
    )
    .await;
    create_hook(
        &c,
        &s,
        "globhook",
        &rcv.url("/glob"),
        &["push"],
        "team/*:prod-*",
    )
    .await;
    create_hook(&c, &s, "barehook", &rcv.url("/bare"), &["push"], "team/web").await;
    create_hook(
        &c,
        &s,
        "exacthook",
        &rcv.url("/exact"),
        &["push"],
        "team/web:v1",
    )
    .await;

    push_image(&c, &s, "team/web", "prod-1", "a").await; // glob
    push_image(&c, &s, "team/a/b", "prod-2", "b").await; // glob: * crosses '/'
    push_image(&c, &s, "team/web", "dev-1", "c").await; // none of the scoped ones
    push_image(&c, &s, "team/web", "latest", "d").await; // bare = :latest
    push_image(&c, &s, "team/web", "v1", "e").await; // exact
    push_image(&c, &s, "teamx/web", "prod-3", "f").await; // not team/
    expect_events(&rcv, "/all", 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let image = |r: &Received| {
        format!(
            "{}:{}",
            r.body["target"]["repository"].as_str().unwrap(),
            r.body["target"]["tag"].as_str().unwrap()
        )
    };
    let glob: Vec<String> = rcv.received("/glob").iter().map(image).collect();
    assert_eq!(
        glob.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"team/web:prod-1".to_owned(), &"team/a/b:prod-2".to_owned()])
    );
    assert_eq!(
        rcv.received("/bare").iter().map(image).collect::<Vec<_>>(),
        ["team/web:latest"]
    );
    assert_eq!(
        rcv.received("/exact").iter().map(image).collect::<Vec<_>>(),
        ["team/web:v1"]
    );
    assert!(rcv.received("/miss").is_empty());
    assert!(list_events(&c, &s, "misshook").await.is_empty());
}

// ---- delivery -----------------------------------------------------------------------------

#[tokio::test]
async fn retry_after_500_sends_the_same_id_and_bytes() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.set(
        "/retry",
        Behaviour {
            status: 500,
            fail_first: 2,
            ..Default::default()
        },
    );
    create_hook(&c, &s, "retryhook", &rcv.url("/retry"), &["push"], "").await;
    push_image(&c, &s, "retry", "v1", "r").await;
    let got = expect_events(&rcv, "/retry", 3).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].raw, got[1].raw);
    assert_eq!(got[1].raw, got[2].raw);
    let id = got[0].body["id"].as_str().unwrap().to_owned();

    let ev = wait_history(&c, &s, "retryhook", |e| e.len() >= 3).await;
    assert_eq!(ev.len(), 3, "{ev:?}");
    let summary: Vec<(String, i64, String)> = ev
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["attempt"].as_i64().unwrap(),
                e["eventResponseMessage"]["statusCode"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (id.clone(), 3, "200".to_owned()),
            (id.clone(), 2, "500".to_owned()),
            (id.clone(), 1, "500".to_owned())
        ]
    );
    assert_eq!(ev[0]["deliveryState"], "delivered");
    assert_eq!(
        ev[1]["eventResponseMessage"]["reasonPhrase"],
        "Internal Server Error"
    );
    for e in &ev {
        assert_eq!(e["eventRequestMessage"]["content"], got[0].body);
    }
    // delivered once: no further attempts
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rcv.received("/retry").len(), 3);
}

#[tokio::test]
async fn a_delivery_that_always_fails_ends_failed_and_can_be_redelivered() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.set(
        "/down",
        Behaviour {
            status: 503,
            ..Default::default()
        },
    );
    create_hook(&c, &s, "downhook", &rcv.url("/down"), &["push"], "").await;
    push_image(&c, &s, "down", "v1", "1").await;
    push_image(&c, &s, "down", "v2", "2").await;
    // fast_hooks: three attempts each, then failed
    let ev = wait_history(&c, &s, "downhook", |e| {
        e.iter().filter(|e| e["deliveryState"] == "failed").count() == 2
    })
    .await;
    assert_eq!(ev.len(), 6, "{ev:?}");
    assert_eq!(rcv.received("/down").len(), 6);
    let counts = s.store.deliveries().delivery_counts().await.unwrap();
    assert_eq!(counts.get("failed"), Some(&2), "{counts:?}");
    let first_ids: BTreeSet<String> = ids(&rcv.received("/down")).into_iter().collect();
    assert_eq!(first_ids.len(), 2);

    // the endpoint recovers: redeliver every failed delivery
    rcv.set("/down", Behaviour::default());
    let (st, v) = post_json(
        &c,
        &format!("{}/redeliver", hook_url(&s, "downhook")),
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["redelivered"], 2);
    let got = expect_events(&rcv, "/down", 8).await;
    let again: BTreeSet<String> = ids(&got[6..]).into_iter().collect();
    assert_eq!(again, first_ids, "same event ids");
    let raw_by_id: BTreeMap<String, &[u8]> = got
        .iter()
        .map(|r| (r.body["id"].as_str().unwrap().to_owned(), &r.raw[..]))
        .collect();
    for r in &got {
        assert_eq!(
            &r.raw[..],
            raw_by_id[r.body["id"].as_str().unwrap()],
            "same bytes"
        );
    }
    wait_history(&c, &s, "downhook", |e| e.len() >= 8).await;
    let counts = s.store.deliveries().delivery_counts().await.unwrap();
    assert_eq!(counts.get("delivered"), Some(&2), "{counts:?}");

    // nothing failed any more
    let (_, v) = post_json(&c, &format!("{}/redeliver", hook_url(&s, "downhook")), None).await;
    assert_eq!(v["redelivered"], 0);
    // one event, by id, even though it was delivered
    let one = first_ids.iter().next().unwrap().clone();
    let (st, v) = post_json(
        &c,
        &format!("{}/redeliver", hook_url(&s, "downhook")),
        Some(json!({"eventId": one})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["redelivered"], 1);
    let got = expect_events(&rcv, "/down", 9).await;
    assert_eq!(got[8].body["id"], one.as_str());
    // an unknown event id is a 400 naming eventId
    let (st, v) = post_json(
        &c,
        &format!("{}/redeliver", hook_url(&s, "downhook")),
        Some(json!({"eventId": "nope"})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("eventId"),
        "{v}"
    );
}

#[tokio::test]
async fn redelivery_gets_a_fresh_retry_schedule() {
    let mut cfg = fast_hooks();
    cfg.retry.schedule = vec![0, 0];
    let s = Server::start_with(cfg).await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.set(
        "/again",
        Behaviour {
            status: 500,
            ..Default::default()
        },
    );
    create_hook(&c, &s, "againhook", &rcv.url("/again"), &["push"], "").await;
    push_image(&c, &s, "again", "v1", "1").await;
    wait_history(&c, &s, "againhook", |e| {
        e.first().is_some_and(|e| e["deliveryState"] == "failed")
    })
    .await;
    assert_eq!(rcv.received("/again").len(), 2);
    // still failing once after the redelivery: the schedule's retry must still happen
    rcv.script("/again", &[(500, Duration::ZERO)]);
    rcv.set("/again", Behaviour::default());
    let (_, v) = post_json(
        &c,
        &format!("{}/redeliver", hook_url(&s, "againhook")),
        None,
    )
    .await;
    assert_eq!(v["redelivered"], 1);
    let got = expect_events(&rcv, "/again", 4).await;
    assert_eq!(got.len(), 4);
    let ev = wait_history(&c, &s, "againhook", |e| {
        e.first().is_some_and(|e| e["deliveryState"] == "delivered")
    })
    .await;
    let attempts: Vec<i64> = ev.iter().map(|e| e["attempt"].as_i64().unwrap()).collect();
    assert_eq!(
        attempts,
        [4, 3, 2, 1],
        "attempt numbers continue across redeliveries"
    );
}

#[tokio::test]
async fn timeout_is_recorded_as_504_and_retried() {
    let s = Server::start().await; // 1 s timeout
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.script("/slow/tok3n", &[(200, Duration::from_millis(2500))]);
    create_hook(&c, &s, "slowhook", &rcv.url("/slow/tok3n"), &["push"], "").await;
    push_image(&c, &s, "slow", "v1", "1").await;
    let ev = wait_history(&c, &s, "slowhook", |e| {
        e.first().is_some_and(|e| e["deliveryState"] == "delivered")
    })
    .await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    let timed_out = &ev[1];
    assert_eq!(timed_out["attempt"], 1);
    assert_eq!(timed_out["eventResponseMessage"]["statusCode"], "504");
    assert_eq!(timed_out["error"], "timed out");
    assert!(!timed_out.to_string().contains("tok3n"), "{timed_out}");
    assert_eq!(ev[0]["attempt"], 2);
    assert_eq!(ev[0]["eventResponseMessage"]["statusCode"], "200");
    assert_eq!(ev[0]["id"], ev[1]["id"]);
    let arrived = rcv.arrived("/slow/tok3n");
    assert!(arrived.len() >= 2);
    assert_eq!(arrived[0].raw, arrived[1].raw);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.set(
        "/moved",
        Behaviour {
            status: 307,
            ..Default::default()
        },
    );
    create_hook(&c, &s, "movedhook", &rcv.url("/moved"), &["push"], "").await;
    let (st, _) = post_json(&c, &format!("{}/ping", hook_url(&s, "movedhook")), None).await;
    assert_eq!(st, 200);
    let ev = wait_history(&c, &s, "movedhook", |e| !e.is_empty()).await;
    assert_eq!(ev[0]["eventResponseMessage"]["statusCode"], "307");
    assert_eq!(ev[0]["deliveryState"], "failed");
}

#[tokio::test]
async fn failures_never_leak_the_service_uri_or_header_values() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.set(
        "/leak/u-s3cret",
        Behaviour {
            status: 500,
            ..Default::default()
        },
    );
    let down = format!(
        "http://user:pw-s3cret@127.0.0.1:{}/p-s3cret?k=q-s3cret",
        closed_port()
    );
    create_hook_with(
        &c,
        &s,
        "leak5xx",
        json!({"serviceUri": rcv.url("/leak/u-s3cret?sig=q-s3cret"), "actions": ["push"], "customHeaders": {"X-Key": "h-s3cret"}}),
    )
    .await;
    create_hook_with(
        &c,
        &s,
        "leakdown",
        json!({"serviceUri": down, "actions": ["push"], "customHeaders": {"Authorization": "h-s3cret"}}),
    )
    .await;
    push_image(&c, &s, "leak", "v1", "1").await;
    for name in ["leak5xx", "leakdown"] {
        let ev = wait_history(&c, &s, name, |e| {
            e.first().is_some_and(|e| e["deliveryState"] == "failed")
        })
        .await;
        assert_eq!(ev.len(), 3, "{name}: {ev:?}");
        let text = serde_json::to_string(&ev).unwrap();
        assert!(
            !text.contains("s3cret"),
            "{name}: secret in history: {text}"
        );
        for e in &ev {
            assert!(
                e["eventRequestMessage"]["requestUri"]
                    .as_str()
                    .unwrap()
                    .ends_with("/******")
            );
        }
    }
    let down_ev = list_events(&c, &s, "leakdown").await;
    assert_eq!(down_ev[0]["error"], "connection failed");
    assert_eq!(
        down_ev[0]["eventRequestMessage"]["headers"]["Authorization"],
        "******"
    );
    let ev5 = list_events(&c, &s, "leak5xx").await;
    assert_eq!(ev5[0]["eventResponseMessage"]["statusCode"], "500");
    // ping failures answer like any ping: the id, nothing about the endpoint
    let (st, v) = post_json(&c, &format!("{}/ping", hook_url(&s, "leakdown")), None).await;
    assert_eq!(st, 200);
    assert!(!v.to_string().contains("s3cret"));
    // nor do show/list
    for url in [hook_url(&s, "leakdown"), s.url("/wharf/v1/webhooks")] {
        let text = c.get(url).send().await.unwrap().text().await.unwrap();
        assert!(!text.contains("s3cret"), "{text}");
    }
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_other_webhooks() {
    // Small concurrency limits, so a backlog for the hanging endpoint builds up quickly, and a
    // timeout longer than the hang, so its attempts really do hang.
    let mut cfg = fast_hooks();
    cfg.timeout = Duration::from_secs(30);
    cfg.max_concurrency = 4;
    cfg.per_webhook_concurrency = 2;
    let s = Server::start_with(cfg).await;
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    slow.set(
        "/a",
        Behaviour {
            delay: Duration::from_secs(10),
            ..Default::default()
        },
    );
    let c = ua_client();
    create_hook(&c, &s, "hookaslow", &slow.url("/a"), &["push"], "").await;
    create_hook(&c, &s, "hookbfast", &fast.url("/b"), &["push"], "").await;
    let body = image_manifest(&c, &s, "iso", "1").await;
    let n = 20;
    for i in 0..n {
        put_manifest(&c, &s, "iso", &format!("t{i}"), &body).await;
    }
    // B's deadline is well inside A's 10 s hang: B must not wait behind A.
    let got = fast.wait_for("/b", n, Duration::from_secs(3)).await;
    let tags: BTreeSet<String> = got
        .iter()
        .map(|r| r.body["target"]["tag"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        tags.len(),
        n,
        "the fast webhook got {} of {n} events while the slow one hung",
        tags.len()
    );
    assert!(slow.received("/a").is_empty(), "A is still hanging");
    assert!(
        slow.arrived("/a").len() <= 2,
        "A is held to its own concurrency cap"
    );
}

#[tokio::test]
async fn pending_deliveries_are_sent_after_a_restart() {
    let mut cfg = fast_hooks();
    cfg.retry.schedule = vec![0, 2, 2, 2, 2, 2, 2, 2];
    let s = Server::start_with(cfg.clone()).await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.set(
        "/r",
        Behaviour {
            status: 500,
            ..Default::default()
        },
    );
    let down_port = closed_port();
    create_hook(&c, &s, "restart500", &rcv.url("/r"), &["push"], "").await;
    create_hook(
        &c,
        &s,
        "restartdown",
        &format!("http://127.0.0.1:{down_port}/d"),
        &["push"],
        "",
    )
    .await;
    let body = image_manifest(&c, &s, "durable", "1").await;
    for t in ["a", "b", "c"] {
        put_manifest(&c, &s, "durable", t, &body).await;
    }
    rcv.wait_for("/r", 3, WAIT).await;
    wait_history(&c, &s, "restartdown", |e| e.len() >= 3).await;
    let first: BTreeSet<String> = ids(&rcv.received("/r")).into_iter().collect();
    assert_eq!(first.len(), 3);
    let counts = s.store.deliveries().delivery_counts().await.unwrap();
    assert_eq!(counts.get("pending"), Some(&6), "{counts:?}");

    let dir = s.stop().await;
    rcv.set("/r", Behaviour::default());
    let down = Receiver::start_at(&format!("127.0.0.1:{down_port}")).await;
    let before = rcv.received("/r").len();
    let s = Server::start_in(&dir, cfg).await;

    let ok = rcv
        .wait_until(WAIT, || {
            let got = rcv.received("/r");
            let after: BTreeSet<String> = ids(&got[before..]).into_iter().collect();
            (after == first).then_some(())
        })
        .await;
    assert!(
        ok.is_some(),
        "after restart: {:?}",
        ids(&rcv.received("/r")[before..])
    );
    let got = down.wait_for("/d", 3, WAIT).await;
    let down_ids: BTreeSet<String> = ids(&got).into_iter().collect();
    assert_eq!(down_ids.len(), 3);
    // the same events went to both webhooks (one event row, one delivery per webhook)
    assert_eq!(down_ids, first);
    let c2 = ua_client();
    wait_history(&c2, &s, "restart500", |e| {
        e.first().is_some_and(|e| e["deliveryState"] == "delivered")
    })
    .await;
}

// ---- crash: the real binary, killed with SIGKILL mid-delivery -----------------------------

struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_wharf(data_dir: &std::path::Path, config: &std::path::Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"]);
    if let Some(b) = common::test_blob_store(data_dir) {
        cmd.args(["--blob-store", &b]);
    }
    // The same database the harness gives a server on this data directory.
    if let Some(url) = common::test_database(data_dir).await {
        cmd.args(["--database", &url])
            .env("WHARF_SECRET_KEY", common::TEST_SECRET_KEY);
    }
    let mut child = cmd
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("wharf listening") {
            let v: Value = serde_json::from_str(&line).unwrap();
            addr = v["fields"]["addr"].as_str().map(str::to_owned);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child,
        base: format!("http://{}", addr.expect("wharf logged its address")),
    }
}

#[tokio::test]
async fn leased_deliveries_are_sent_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    // A 30 s timeout: attempts are still in flight (leased) when the process is killed.
    std::fs::write(
        &config,
        "[webhooks]\ntimeout_secs = 30\nretry_schedule_secs = [0, 1, 1, 1]\nretry_jitter = 0.0\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let rcv = Receiver::start().await;
    rcv.set(
        "/crash",
        Behaviour {
            delay: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let c = ua_client();

    let p = spawn_wharf(&data, &config).await;
    let r = c
        .put(format!("{}/wharf/v1/webhooks/crashhook", p.base))
        .json(&json!({"properties": {"serviceUri": rcv.url("/crash"), "actions": ["push"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let m = {
        // push_image needs a Server; speak OCI directly to the child process
        let cfg = b"{\"os\":\"linux\"}";
        let layer = b"crash-layer";
        for blob in [&cfg[..], &layer[..]] {
            let r = c
                .post(format!(
                    "{}/v2/crash/blobs/uploads/?digest={}",
                    p.base,
                    sha256(blob)
                ))
                .body(blob.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(cfg), "size": cfg.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": layer.len()}],
        }))
        .unwrap()
    };
    for t in ["one", "two"] {
        let r = c
            .put(format!("{}/v2/crash/manifests/{t}", p.base))
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let first = rcv.wait_arrived("/crash", 2, WAIT).await;
    assert_eq!(first.len(), 2);
    let first_ids: BTreeSet<String> = ids(&first).into_iter().collect();

    // SIGKILL: no graceful shutdown, the two deliveries stay leased in the database
    drop(p);
    rcv.set("/crash", Behaviour::default());
    let p = spawn_wharf(&data, &config).await;
    // Well inside the lease a crashed process leaves behind (2 × 30 s + 30 s).
    let again = rcv
        .wait_until(Duration::from_secs(20), || {
            let got = rcv.received("/crash");
            let s: BTreeSet<String> = ids(&got).into_iter().collect();
            (s == first_ids).then_some(got)
        })
        .await;
    assert!(
        again.is_some(),
        "not redelivered after the crash: {:?}",
        ids(&rcv.received("/crash"))
    );
    drop(p);
}

/// Pushes a small image under each tag to a server at `base` (a child process: no `Server`).
async fn push_tags(c: &reqwest::Client, base: &str, repo: &str, tags: &[&str]) {
    let cfg = b"{\"os\":\"linux\"}";
    let layer = b"lease-layer";
    for blob in [&cfg[..], &layer[..]] {
        let r = c
            .post(format!(
                "{base}/v2/{repo}/blobs/uploads/?digest={}",
                sha256(blob)
            ))
            .body(blob.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(cfg), "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": layer.len()}],
    }))
    .unwrap();
    for t in tags {
        let r = c
            .put(format!("{base}/v2/{repo}/manifests/{t}"))
            .header("content-type", OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Issue 8: a node's start-up leaves the unexpired leases of other node ids alone (they may be
/// live and working), and a delivery whose node died is taken over once its lease, a few
/// delivery timeouts long, runs out, and delivered with the same event id.
#[tokio::test]
async fn another_nodes_lease_is_left_alone_at_start_and_taken_over_when_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    // A 2 s timeout: node-a's leases last 6 s.
    std::fs::write(
        &config,
        "[webhooks]\ntimeout_secs = 2\nretry_schedule_secs = [0, 1, 1, 1]\nretry_jitter = 0.0\n\
         [node]\nid = \"node-a\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let rcv = Receiver::start().await;
    rcv.set(
        "/takeover",
        Behaviour {
            delay: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let c = ua_client();
    let a = spawn_wharf(&data, &config).await;
    let r = c
        .put(format!("{}/wharf/v1/webhooks/takeover", a.base))
        .json(&json!({"properties": {"serviceUri": rcv.url("/takeover"), "actions": ["push"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    push_tags(&c, &a.base, "takeover", &["one"]).await;
    let first = rcv.wait_arrived("/takeover", 1, WAIT).await;
    assert_eq!(first.len(), 1);
    // node-a dies mid-attempt, its lease still running.
    drop(a);
    rcv.set("/takeover", Behaviour::default());

    // node-b starts on the same queue.
    let mut cfg = wharf::config::Config {
        data_dir: data.clone(),
        webhooks: wharf::config::Webhooks::from_hooks(&fast_hooks()),
        ..Default::default()
    };
    cfg.node.id = "node-b".into();
    let b = Server::start_config(cfg).await;
    let leases = b.store.deliveries().delivery_leases().await.unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    let (_, owner, until) = &leases[0];
    assert_eq!(owner, "node-a", "start-up did not seize node-a's lease");
    assert!(
        *until <= now_ms() + 6_000,
        "node-a's lease lasts 3 × its 2 s timeout, not an hour: {until}"
    );

    // Taken over once it expired, and delivered with the same event id.
    let again = rcv
        .wait_until(Duration::from_secs(30), || {
            let got = rcv.received("/takeover");
            (!got.is_empty()).then_some(got)
        })
        .await
        .expect("the expired delivery was taken over and delivered");
    assert_eq!(ids(&again), ids(&first), "a duplicate keeps its event id");
    assert!(
        now_ms() >= *until,
        "node-b sent before node-a's lease ran out"
    );
    // Recorded as delivered (results are written in batches, a moment after the send).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let counts = b.store.deliveries().delivery_counts().await.unwrap();
        if counts.get("delivered") == Some(&1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
}

/// Issue 8: leases last three delivery timeouts, are owned by the configured node id, and are
/// renewed while the node still holds the delivery (queued in memory behind a webhook at its
/// cap), so a live node never loses one: each event is delivered once.
#[tokio::test]
async fn leases_follow_the_timeout_and_are_renewed_while_the_node_holds_them() {
    let tmp = tempfile::tempdir().unwrap();
    let hooks_cfg = wharf_hooks::HooksConfig {
        per_webhook_concurrency: 1,
        ..fast_hooks()
    };
    let mut cfg = wharf::config::Config {
        data_dir: tmp.path().to_owned(),
        webhooks: wharf::config::Webhooks::from_hooks(&hooks_cfg),
        ..Default::default()
    };
    cfg.node.id = "node-r".into();
    // 1 s timeout: 3 s leases, renewed every second.
    assert_eq!(cfg.webhooks.timeout_secs, 1);
    let s = Server::start_config(cfg).await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.set(
        "/slow",
        Behaviour {
            delay: Duration::from_millis(400),
            ..Default::default()
        },
    );
    create_hook(&c, &s, "slowhook", &rcv.url("/slow"), &["push"], "").await;
    let tags = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "t10"];
    // Pushed at once, so that the deliveries queue up however slowly one push goes on a
    // loaded machine (pushed one after the other, each delivery could be sent before the next
    // push, and no lease would need renewing).
    let bodies: Vec<String> = (0..tags.len()).map(|i| i.to_string()).collect();
    let pushes = (tags.iter().zip(&bodies)).map(|(t, b)| push_image(&c, &s, "renew", t, b));
    futures_util::future::join_all(pushes).await;
    // One at a time, 0.4 s each: the last ones wait in memory longer than a lease lasts.
    let mut first_seen: BTreeMap<i64, i64> = BTreeMap::new();
    let mut renewed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries never finished"
        );
        let leases = s.store.deliveries().delivery_leases().await.unwrap();
        let now = now_ms();
        for (id, owner, until) in &leases {
            assert_eq!(owner, "node-r");
            assert!(
                *until <= now + 3_000,
                "a lease of 3 timeouts at most: {until} at {now}"
            );
            assert!(
                *until > now - 200,
                "a held lease never runs out: {until} at {now}"
            );
            let first = *first_seen.entry(*id).or_insert(*until);
            renewed |= *until > first;
        }
        if rcv.received("/slow").len() >= tags.len() && leases.is_empty() {
            break;
        }
        assert!(
            rcv.received("/slow").len() <= tags.len(),
            "a delivery was sent twice"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        renewed,
        "leases of deliveries waiting in memory were renewed"
    );
    let got = ids(&rcv.received("/slow"));
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), tags.len(), "each event once: {got:?}");
    s.stop().await;
}

/// Regression: a webhook deleted while one of its deliveries was in flight left an attempt
/// whose delivery row was gone; recording it failed on the foreign key and the recorder retried
/// that batch forever, so no attempt of any webhook was recorded again.
#[tokio::test]
async fn deleting_a_webhook_mid_delivery_does_not_wedge_the_history() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    rcv.script("/gone", &[(200, Duration::from_millis(700))]);
    create_hook(&c, &s, "gonehook", &rcv.url("/gone"), &["push"], "wedge").await;
    push_image(&c, &s, "wedge", "latest", "1").await;
    rcv.wait_arrived("/gone", 1, WAIT).await;
    assert_eq!(delete(&c, &hook_url(&s, "gonehook")).await, 200);
    rcv.wait_for("/gone", 1, WAIT).await;
    // Give the dispatcher a moment to record the orphaned attempt before the next webhook
    // exists (with reused delivery ids it would otherwise land on the new webhook's row).
    tokio::time::sleep(Duration::from_millis(500)).await;

    create_hook(&c, &s, "stayhook", &rcv.url("/stay"), &["push"], "").await;
    push_image(&c, &s, "wedge", "v2", "2").await;
    expect_events(&rcv, "/stay", 1).await;
    let ev = wait_history(&c, &s, "stayhook", |e| !e.is_empty()).await;
    assert_eq!(ev.len(), 1, "the later delivery's attempt was recorded");
    let counts = s.store.deliveries().delivery_counts().await.unwrap();
    assert_eq!(counts.get("delivered"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("pending"), None, "{counts:?}");
}

// ---- CLI ----------------------------------------------------------------------------------

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn wharf_cli(server: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.arg("webhook").args(args).env("WHARF_SERVER", server);
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

fn ok(o: &Out) -> Value {
    assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    if o.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&o.stdout).unwrap_or(Value::String(o.stdout.clone()))
    }
}

#[tokio::test]
async fn cli_mirrors_az_acr_webhook() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let uri = rcv.url("/cli/p4th-s3cret");
    let base = s.base.clone();

    let w = ok(&wharf_cli(
        &base,
        &[
            "create",
            "-n",
            "clihook1",
            "--uri",
            &uri,
            "--actions",
            "push",
            "delete",
            "--headers",
            "Authorization=Basic h-s3cret",
            "--scope",
            "cli/*:*",
            "--tags",
            "team=web",
        ],
    )
    .await);
    // az's flattened shape
    assert_eq!(w["name"], "clihook1");
    assert_eq!(w["actions"], json!(["push", "delete"]));
    assert_eq!(w["scope"], "cli/*:*");
    assert_eq!(w["status"], "enabled");
    assert_eq!(w["location"], "local");
    assert_eq!(w["tags"], json!({"team": "web"}));
    assert_eq!(w["provisioningState"], "Succeeded");
    assert!(w.get("properties").is_none());

    let o = wharf_cli(&base, &["show", "-n", "clihook1"]).await;
    assert!(!o.stdout.contains("s3cret"), "{}", o.stdout);
    assert_eq!(ok(&o)["scope"], "cli/*:*");

    // global flags go anywhere, as with az
    let o = wharf_cli(&base, &["list", "-o", "table"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains("s3cret"), "{}", o.stdout);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", o.stdout);
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("LOCATION")
            && lines[0].contains("ACTIONS")
            && lines[0].contains("SCOPE")
            && lines[0].contains("STATUS"),
        "{}",
        o.stdout
    );
    assert!(lines[1].starts_with("----"));
    assert!(
        lines[2].starts_with("clihook1")
            && lines[2].contains("push, delete")
            && lines[2].contains("cli/*:*")
            && lines[2].contains("enabled"),
        "{}",
        o.stdout
    );
    // tsv as az: values only; a query picks and orders them
    let o = wharf_cli(
        &base,
        &[
            "list",
            "--query",
            "[].[name, location, join(', ', actions), scope, status]",
            "-o",
            "tsv",
        ],
    )
    .await;
    assert_eq!(
        o.stdout.trim_end().split('\t').collect::<Vec<_>>(),
        ["clihook1", "local", "push, delete", "cli/*:*", "enabled"]
    );

    let v = ok(&wharf_cli(&base, &["ping", "-n", "clihook1"]).await);
    let ping_id = v["id"].as_str().unwrap().to_owned();
    assert_uuid(&ping_id);
    let got = rcv.received("/cli/p4th-s3cret");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["action"], "ping");
    assert_eq!(got[0].headers["authorization"], "Basic h-s3cret");

    // an image push, so list-events has both kinds
    let c = ua_client();
    push_image(&c, &s, "cli/app", "v1", "cli").await;
    expect_events(&rcv, "/cli/p4th-s3cret", 2).await;
    wait_history(&c, &s, "clihook1", |e| e.len() >= 2).await;
    let o = wharf_cli(&base, &["list-events", "-n", "clihook1", "-o", "table"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains("s3cret"), "{}", o.stdout);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", o.stdout);
    for h in ["ID", "ACTION", "IMAGE", "HTTP STATUS", "TIMESTAMP"] {
        assert!(lines[0].contains(h), "{}", o.stdout);
    }
    assert!(
        lines[2].contains("push") && lines[2].contains("cli/app:v1") && lines[2].contains("200 OK"),
        "{}",
        o.stdout
    );
    assert!(
        lines[3].starts_with(&ping_id) && lines[3].contains("ping") && lines[3].contains("200 OK"),
        "{}",
        o.stdout
    );
    let v = ok(&wharf_cli(&base, &["list-events", "-n", "clihook1"]).await);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(!v.to_string().contains("s3cret"));
    let v = ok(&wharf_cli(&base, &["list-events", "-n", "clihook1", "--top", "1"]).await);
    assert_eq!(v.as_array().unwrap().len(), 1);

    let v = ok(&wharf_cli(&base, &["get-config", "-n", "clihook1"]).await);
    assert_eq!(
        v,
        json!({"serviceUri": uri, "customHeaders": {"Authorization": "Basic h-s3cret"}})
    );

    let w = ok(&wharf_cli(&base, &["update", "-n", "clihook1", "--status", "disabled"]).await);
    assert_eq!(w["status"], "disabled");
    assert_eq!(w["scope"], "cli/*:*", "update changes only what was given");
    assert_eq!(w["actions"], json!(["push", "delete"]));
    // `--headers ''` clears the headers
    ok(&wharf_cli(&base, &["update", "-n", "clihook1", "--headers", ""]).await);
    let v = ok(&wharf_cli(&base, &["get-config", "-n", "clihook1"]).await);
    assert_eq!(v["customHeaders"], json!({}));
    // a disabled webhook refuses redelivery; enabled again, nothing has failed
    let o = wharf_cli(&base, &["redeliver", "-n", "clihook1"]).await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("disabled"), "{}", o.stderr);
    ok(&wharf_cli(&base, &["update", "-n", "clihook1", "--status", "enabled"]).await);
    let v = ok(&wharf_cli(&base, &["redeliver", "-n", "clihook1"]).await);
    assert_eq!(v["redelivered"], 0);

    // errors: non-zero exit, a message on stderr, no secret anywhere
    let o = wharf_cli(&base, &["show", "-n", "nosuchhook"]).await;
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("nosuchhook") && o.stderr.contains("not found"),
        "{}",
        o.stderr
    );
    let o = wharf_cli(
        &base,
        &[
            "create",
            "-n",
            "clihook2",
            "--uri",
            "ftp://u:pw-s3cret@127.0.0.1/p-s3cret",
            "--actions",
            "push",
        ],
    )
    .await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("serviceUri"), "{}", o.stderr);
    assert!(
        !o.stderr.contains("s3cret") && !o.stdout.contains("s3cret"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = wharf_cli(
        &base,
        &[
            "create",
            "-n",
            "clihook2",
            "--uri",
            "http://127.0.0.1:9/x",
            "--actions",
            "pull",
        ],
    )
    .await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("actions"), "{}", o.stderr);
    let o = wharf_cli(
        &base,
        &[
            "create",
            "-n",
            "clihook1",
            "--uri",
            "http://127.0.0.1:9/x",
            "--actions",
            "push",
        ],
    )
    .await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    let o = wharf_cli(&format!("http://127.0.0.1:{}", closed_port()), &["list"]).await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("cannot reach"), "{}", o.stderr);

    let o = wharf_cli(&base, &["delete", "-n", "clihook1"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = wharf_cli(&base, &["show", "-n", "clihook1"]).await;
    assert_ne!(o.code, 0);
    let v = ok(&wharf_cli(&base, &["list"]).await);
    assert_eq!(v, json!([]));
}

/// `wharf webhook ARGS` against `server` with stdout piped, stderr captured.
fn spawn_cli(server: &str, args: &[&str], stdout: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("webhook")
        .args(args)
        .env("WHARF_SERVER", server)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a CLI process and returns (exit code, stderr); the code is None if a signal
/// ended it.
async fn finish(mut child: Child) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        let status = child.wait().unwrap();
        (status.code(), err)
    })
    .await
    .unwrap()
}

/// Regression (issue 9): `wharf webhook list | head -1` panicked ("failed printing to stdout:
/// Broken pipe") once the reader had closed the pipe. A closed pipe now ends the command
/// quietly with status 0; a full disk is an error message, not a panic.
#[tokio::test]
async fn cli_output_into_a_closed_pipe_ends_quietly() {
    let s = Server::start().await;
    let c = ua_client();
    // More JSON than a pipe holds (64 KiB on Linux) plus what the reader buffers, so the CLI
    // is still writing when the reader goes away: 64 webhooks of about 2.5 KB each.
    let tags: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("tag{i}"), json!("t".repeat(120))))
        .collect();
    let creates = (0..64).map(|i| {
        let c = c.clone();
        let url = hook_url(&s, &format!("pipehook{i:03}"));
        let body = json!({"tags": tags, "properties": {"serviceUri": "http://127.0.0.1:9/h", "actions": ["push"]}});
        async move { c.put(url).json(&body).send().await.unwrap().status() }
    });
    for st in futures_util::future::join_all(creates).await {
        assert_eq!(st, 201);
    }
    let o = wharf_cli(&s.base, &["list"]).await;
    assert!(
        o.stdout.len() > 128 * 1024,
        "output too small to fill a pipe: {}",
        o.stdout.len()
    );

    // The reader takes one line, then closes its end.
    let mut child = spawn_cli(&s.base, &["list"], Stdio::piped());
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(first, "[\n");
    let (code, err) = finish(child).await;
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(err.is_empty(), "a closed pipe is not an error: {err}");

    // The pipe closed before the first byte is written.
    let mut child = spawn_cli(&s.base, &["list", "-o", "table"], Stdio::piped());
    drop(child.stdout.take());
    let (code, err) = finish(child).await;
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, Some(0), "stderr: {err}");

    // A full device: an error on stderr and a failure status, no panic.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let child = spawn_cli(&s.base, &["list"], Stdio::from(full));
        let (code, err) = finish(child).await;
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(code, Some(1), "stderr: {err}");
        assert!(err.contains("cannot write the output"), "{err}");
    }
}

/// Regression (issue 9): a `--server` that was not Wharf (a web server, another API) made the
/// CLI print the other server's page, or an empty list, as if it were Wharf's answer. Any
/// answer without Wharf's management marker is now refused with a message naming the server.
#[tokio::test]
async fn cli_refuses_a_server_that_is_not_wharf() {
    use axum::http::{StatusCode, header};
    let app = axum::Router::new()
        .route(
            "/html/{*rest}",
            axum::routing::any(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body>It works!</body></html>",
                )
            }),
        )
        .route(
            "/json/{*rest}",
            axum::routing::any(|| async { axum::Json(json!({"value": [{"name": "notwharf"}]})) }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    for server in [format!("{base}/html"), format!("{base}/json"), base.clone()] {
        for args in [
            &["list"][..],
            &["show", "-n", "somehook1"],
            &[
                "create",
                "-n",
                "somehook1",
                "--uri",
                "http://127.0.0.1:9/h",
                "--actions",
                "push",
            ],
        ] {
            let o = wharf_cli(&server, args).await;
            assert_eq!(o.code, 1, "{server} {args:?}: {}{}", o.stdout, o.stderr);
            assert!(o.stdout.is_empty(), "{server} {args:?}: {}", o.stdout);
            assert!(
                o.stderr.contains(&server)
                    && o.stderr.contains("does not answer like a Wharf server"),
                "{server} {args:?}: {}",
                o.stderr
            );
            assert!(
                !o.stderr.contains("It works") && !o.stderr.contains("panicked"),
                "{}",
                o.stderr
            );
        }
    }
}

// ---- payload formats ----------------------------------------------------------------------

const TOPIC: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wharf/providers/Microsoft.ContainerRegistry/registries/wharf";

/// ACR's Event Grid data for an event whose ACR body is `acr`: ACR's fields, `location` after
/// `action`, `target.url` for image events.
/// The Event Grid data expected for an ACR event received by a server at `host` in the open
/// mode over plain HTTP. `got` is a received data object: the client's port and the node's
/// instance id are taken from it once they are checked to be of the right kind.
fn event_data(acr: &Value, location: &str, host: &str, got: &Value) -> Value {
    let mut data = json!({
        "id": acr["id"], "timestamp": acr["timestamp"], "action": acr["action"],
        "location": location,
    });
    let mut target = acr["target"].clone();
    target["url"] = json!(format!(
        "http://{host}/v2/{}/manifests/{}",
        str_of(&target["repository"]),
        str_of(&target["digest"])
    ));
    data["target"] = target;
    let mut request = json!({"id": acr["request"]["id"]});
    let addr = str_of(&got["request"]["addr"]);
    assert!(addr.starts_with("127.0.0.1:"), "request.addr {addr}");
    request["addr"] = json!(addr);
    for k in ["host", "method", "useragent"] {
        request[k] = acr["request"][k].clone();
    }
    data["request"] = request;
    // The open mode has no actor.
    let instance = str_of(&got["source"]["instanceID"]);
    assert_eq!(instance.len(), 36, "instanceID {instance}");
    data["source"] = json!({"addr": host, "instanceID": instance});
    data
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers[name].to_str().unwrap()
}

#[tokio::test]
async fn payload_formats_render_push_and_delete_per_webhook() {
    let s_ = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    for (name, format) in [
        ("fmtacr", None),
        ("fmteventgrid", Some("eventgrid")),
        ("fmtcloud", Some("cloudevents")),
        ("fmtbinary", Some("cloudevents-binary")),
    ] {
        let mut props =
            json!({"serviceUri": rcv.url(&format!("/{name}")), "actions": ["push", "delete"]});
        if let Some(f) = format {
            props["payloadFormat"] = json!(f);
        }
        let w = create_hook_with(&c, &s_, name, props).await;
        assert_eq!(w["properties"]["payloadFormat"], format.unwrap_or("acr"));
    }
    let (digest, _) = push_image(&c, &s_, "payments/ledger", "2.7.1", "fmt").await;
    assert_eq!(
        delete(
            &c,
            &s_.url(&format!("/v2/payments/ledger/manifests/{digest}"))
        )
        .await,
        202
    );
    let host = format!("127.0.0.1:{}", port_of(&s_));
    let acr = expect_events(&rcv, "/fmtacr", 2).await;
    let eg = expect_events(&rcv, "/fmteventgrid", 2).await;
    let ce = expect_events(&rcv, "/fmtcloud", 2).await;
    let bin = expect_events(&rcv, "/fmtbinary", 2).await;
    for (i, (ty, subject)) in [
        (
            "Microsoft.ContainerRegistry.ImagePushed",
            "payments/ledger:2.7.1",
        ),
        (
            "Microsoft.ContainerRegistry.ImageDeleted",
            "payments/ledger",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let a = &acr[i].body;
        assert_eq!(a["action"], ["push", "delete"][i]);
        // ACR's format is unchanged: no location, no url.
        assert!(a.get("location").is_none() && a["target"].get("url").is_none());
        assert_eq!(header(&acr[i], "content-type"), "application/json");
        let data = event_data(a, "local", &host, &bin[i].body);

        // Event Grid: a one-element array, ids and times from the ACR event.
        assert_eq!(header(&eg[i], "content-type"), "application/json");
        assert_eq!(
            eg[i].body,
            json!([{
                "id": a["id"], "topic": TOPIC, "subject": subject, "eventType": ty,
                "eventTime": a["timestamp"], "data": data, "dataVersion": "2.0",
                "metadataVersion": "1",
            }])
        );
        assert!(
            std::str::from_utf8(&eg[i].raw)
                .unwrap()
                .starts_with("[{\"id\":")
        );

        // CloudEvents, structured.
        assert_eq!(
            header(&ce[i], "content-type"),
            "application/cloudevents+json"
        );
        assert_eq!(
            ce[i].body,
            json!({
                "specversion": "1.0", "id": a["id"], "source": TOPIC, "type": ty,
                "subject": subject, "time": a["timestamp"],
                "datacontenttype": "application/json", "data": data,
            })
        );

        // CloudEvents, binary: attributes in ce-* headers, the data as the body.
        let b = &bin[i];
        assert_eq!(header(b, "content-type"), "application/json");
        assert_eq!(header(b, "ce-specversion"), "1.0");
        assert_eq!(header(b, "ce-id"), str_of(&a["id"]));
        assert_eq!(header(b, "ce-source"), TOPIC);
        assert_eq!(header(b, "ce-type"), ty);
        assert_eq!(header(b, "ce-subject"), subject);
        assert_eq!(header(b, "ce-time"), str_of(&a["timestamp"]));
        assert!(b.headers.get("ce-datacontenttype").is_none());
        assert_eq!(b.body, data);
        assert_eq!(
            header(b, "content-length"),
            b.raw.len().to_string().as_str()
        );
    }
    // list-events shows what was sent, in the webhook's format.
    let hist = wait_history(&c, &s_, "fmtcloud", |e| e.len() >= 2).await;
    let sent: Vec<Value> = hist
        .iter()
        .map(|h| h["eventRequestMessage"]["content"].clone())
        .collect();
    assert!(sent.contains(&ce[0].body), "{sent:?}");
    let hist = wait_history(&c, &s_, "fmtbinary", |e| e.len() >= 2).await;
    let h = &hist[0]["eventRequestMessage"]["headers"];
    assert!(h["ce-type"].as_str().is_some(), "{h}");
}

#[tokio::test]
async fn payload_format_is_validated_shown_updated_and_kept_per_delivery() {
    let s_ = Server::start().await;
    let rcv = Receiver::start().await;
    let c = ua_client();
    let r = put_hook(
        &c,
        &s_,
        "fmtbad1",
        json!({"properties": {"serviceUri": rcv.url("/x"), "actions": ["push"], "payloadFormat": "xml"}}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v.to_string().contains("payloadFormat"), "{v}");
    create_hook(&c, &s_, "fmtupd1", &rcv.url("/u"), &["push"], "").await;
    let (code, v) = patch_hook(
        &c,
        &s_,
        "fmtupd1",
        json!({"properties": {"payloadFormat": "CloudEvents"}}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["properties"]["payloadFormat"], "cloudevents");
    let (code, v) = patch_hook(
        &c,
        &s_,
        "fmtupd1",
        json!({"properties": {"payloadFormat": 7}}),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert!(v.to_string().contains("properties.payloadFormat"), "{v}");
    let listed: Value = c
        .get(s_.url("/wharf/v1/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed
            .to_string()
            .contains("\"payloadFormat\":\"cloudevents\""),
        "{listed}"
    );
    push_image(&c, &s_, "fmt/app", "v1", "u").await;
    let got = expect_events(&rcv, "/u", 1).await;
    assert_eq!(
        got[0].body["type"],
        "Microsoft.ContainerRegistry.ImagePushed"
    );
    assert_eq!(got[0].body["subject"], "fmt/app:v1");

    // A delivery keeps the format it was queued with: after a switch to eventgrid, a
    // redelivery of that event sends the same CloudEvents bytes; new events use eventgrid.
    // (The attempt is recorded first: a delivery still in flight is not redelivered.)
    wait_history(&c, &s_, "fmtupd1", |e| !e.is_empty()).await;
    let (code, v) = patch_hook(
        &c,
        &s_,
        "fmtupd1",
        json!({"properties": {"payloadFormat": "eventgrid"}}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (st, v) = post_json(
        &c,
        &format!("{}/redeliver", hook_url(&s_, "fmtupd1")),
        Some(json!({"eventId": got[0].body["id"]})),
    )
    .await;
    assert_eq!((st, &v["redelivered"]), (200, &json!(1)), "{v}");
    let again = expect_events(&rcv, "/u", 2).await;
    assert_eq!(again[1].raw, got[0].raw);
    push_image(&c, &s_, "fmt/app", "v2", "u2").await;
    let later = expect_events(&rcv, "/u", 3).await;
    assert_eq!(
        later[2].body[0]["eventType"],
        "Microsoft.ContainerRegistry.ImagePushed"
    );
    assert_eq!(later[2].body[0]["subject"], "fmt/app:v2");

    // A ping in a non-ACR format: Wharf's own event type, no subject, ACR's fields as data.
    let (st, v) = post_json(&c, &format!("{}/ping", hook_url(&s_, "fmtupd1")), None).await;
    assert_eq!(st, 200, "{v}");
    let pinged = expect_events(&rcv, "/u", 4).await;
    let p = &pinged[3].body[0];
    assert_eq!(p["eventType"], "Wharf.ContainerRegistry.Ping");
    assert_eq!(p["subject"], "");
    assert_eq!(p["id"], v["id"]);
    assert_eq!(
        keys(&p["data"]),
        sorted(&["id", "timestamp", "action", "location"])
    );
    assert_eq!(p["data"]["action"], "ping");
}
