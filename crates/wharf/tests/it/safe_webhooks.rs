//! Safe webhooks, end to end on a real server with real receivers: Standard Webhooks signing
//! (opt-in, server-made secrets, rotation with a grace period, secrets only in
//! getCallbackConfig) and the SSRF guard (blocked literals refused at create, blocked
//! resolutions refused at send time and recorded, redirects not followed, the allow-list).
//!
//! Signatures are checked here with `ring` directly, independently of the server's signing
//! code, and with the reference test vector in the unit tests; tests/e2e/test_webhook_signing.py
//! checks them with the Python `standardwebhooks` library. No test asserts how long something
//! took.

use crate::common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Received, Receiver, Server, client, fast_hooks, push_image};
use serde_json::{Value, json};
use wharf::config::{Config, LoopbackTargets, Webhooks};

/// Long enough for any delivery on a busy two-core machine; only reached when a test fails.
const WAIT: Duration = Duration::from_secs(15);

// ---- helpers ------------------------------------------------------------------------------

fn hook_url(s: &Server, name: &str) -> String {
    s.url(&format!("/wharf/v1/webhooks/{name}"))
}

async fn create(c: &reqwest::Client, s: &Server, name: &str, props: Value) -> (u16, Value) {
    let r = c
        .put(hook_url(s, name))
        .json(&json!({ "properties": props }))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn patch(c: &reqwest::Client, s: &Server, name: &str, props: Value) -> (u16, Value) {
    let r = c
        .patch(hook_url(s, name))
        .json(&json!({ "properties": props }))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// A management POST: always JSON, which the open mode requires of every management call.
async fn post(c: &reqwest::Client, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = c.post(url).header("content-type", "application/json");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn callback_config(c: &reqwest::Client, s: &Server, name: &str) -> Value {
    let (st, v) = post(c, &format!("{}/getCallbackConfig", hook_url(s, name)), None).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn ping(c: &reqwest::Client, s: &Server, name: &str) -> String {
    let (st, v) = post(c, &format!("{}/ping", hook_url(s, name)), None).await;
    assert_eq!(st, 200, "ping: {v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The history's raw text and entries, newest first.
async fn history(c: &reqwest::Client, s: &Server, name: &str) -> (String, Vec<Value>) {
    let r = c
        .post(format!("{}/listEvents", hook_url(s, name)))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    (text, v["value"].as_array().cloned().unwrap_or_default())
}

/// Polls the history until `f` accepts it (it is written asynchronously, in batches).
async fn wait_history(
    c: &reqwest::Client,
    s: &Server,
    name: &str,
    f: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, ev) = history(c, s, name).await;
        if f(&ev) || tokio::time::Instant::now() >= deadline {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The Standard Webhooks v1 signature of a request under a `whsec_` secret, computed here
/// from the spec, not with the server's code.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "v1,{}",
        STANDARD.encode(ring::hmac::sign(&key, &signed).as_ref())
    )
}

/// The signatures a request carries, after checking its id and timestamp headers: the id is
/// the event's, the timestamp whole unix seconds within the receivers' ±5 min tolerance.
fn signatures(r: &Received) -> Vec<String> {
    let id = header(r, "webhook-id").expect("webhook-id");
    assert_eq!(
        id,
        r.body["id"].as_str().unwrap(),
        "webhook-id is the event id"
    );
    let ts: i64 = header(r, "webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .expect("whole seconds");
    let now = unix_now();
    assert!((now - ts).abs() <= 300, "timestamp {ts}, now {now}");
    header(r, "webhook-signature")
        .expect("webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Whether `r` carries a valid signature under `secret`.
fn verifies(r: &Received, secret: &str) -> bool {
    let want = expected_signature(
        secret,
        header(r, "webhook-id").unwrap_or(""),
        header(r, "webhook-timestamp").unwrap_or(""),
        &r.raw,
    );
    signatures(r).contains(&want)
}

/// A server whose SSRF guard is strict (loopback refused, as when it listens beyond this
/// machine or requires authentication), with these networks opened. The returned directory
/// must outlive the server.
async fn strict_server(allow_networks: &[&str]) -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut webhooks = Webhooks::from_hooks(&fast_hooks());
    webhooks.allow_loopback = LoopbackTargets::Refuse;
    webhooks.allow_networks = allow_networks.iter().map(|n| n.to_string()).collect();
    let s = Server::start_config(Config {
        data_dir: tmp.path().to_owned(),
        webhooks,
        ..Default::default()
    })
    .await;
    (s, tmp)
}

fn port_of(url: &str) -> u16 {
    reqwest::Url::parse(url).unwrap().port().unwrap()
}

// ---- signing ------------------------------------------------------------------------------

#[tokio::test]
async fn signing_is_off_by_default_and_deliveries_stay_acr_identical() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = client();
    let (st, w) = create(
        &c,
        &s,
        "plainhook",
        json!({"serviceUri": rcv.url("/plain"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["properties"]["signing"], json!({"enabled": false}));
    let cfg = callback_config(&c, &s, "plainhook").await;
    assert!(cfg.get("signingSecret").is_none(), "{cfg}");
    push_image(&c, &s, "plain/app", "v1", "p").await;
    let got = rcv.wait_for("/plain", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert!(got[0].headers.get(name).is_none(), "{name} sent unasked");
    }
}

#[tokio::test]
async fn signed_deliveries_verify_with_the_secret_from_get_config() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = client();
    // The first attempt fails: the retry must be signed again, with its own timestamp.
    rcv.script("/signed", &[(500, Duration::ZERO)]);
    let (st, w) = create(
        &c,
        &s,
        "signedhook",
        json!({"serviceUri": rcv.url("/signed"), "actions": ["push"], "signing": {"enabled": true}}),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["properties"]["signing"], json!({"enabled": true}));
    let secret = callback_config(&c, &s, "signedhook").await["signingSecret"]
        .as_str()
        .expect("getCallbackConfig returns the secret")
        .to_owned();
    let raw = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert!((24..=64).contains(&raw.len()), "{} bytes", raw.len());

    // Listings never carry it.
    for url in [hook_url(&s, "signedhook"), s.url("/wharf/v1/webhooks")] {
        let text = c.get(url).send().await.unwrap().text().await.unwrap();
        assert!(
            !text.contains(&secret) && !text.contains("whsec_"),
            "{text}"
        );
    }

    push_image(&c, &s, "signed/app", "v1", "s").await;
    let got = rcv.wait_for("/signed", 2, WAIT).await;
    assert_eq!(got.len(), 2, "a failed attempt and its retry");
    for r in &got {
        let sigs = signatures(r);
        assert_eq!(sigs.len(), 1, "one secret, one signature: {sigs:?}");
        assert!(verifies(r, &secret), "signature does not verify: {sigs:?}");
    }
    assert_eq!(
        header(&got[0], "webhook-id"),
        header(&got[1], "webhook-id"),
        "a retry keeps the id"
    );
    let other = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    assert!(!verifies(&got[1], &other), "only the right secret verifies");

    // History: id and timestamp as sent, the signature masked, the secret nowhere.
    let ev = wait_history(&c, &s, "signedhook", |e| e.len() >= 2).await;
    let (text, _) = history(&c, &s, "signedhook").await;
    let h = &ev[0]["eventRequestMessage"]["headers"];
    assert_eq!(h["webhook-signature"], "******", "{h}");
    assert_eq!(h["webhook-id"], header(&got[1], "webhook-id").unwrap());
    assert!(h["webhook-timestamp"].as_str().is_some(), "{h}");
    let sig = header(&got[1], "webhook-signature").unwrap();
    let b64 = sig.trim_start_matches("v1,");
    assert!(!text.contains(b64), "the signature is masked in history");
    assert!(!text.contains(&secret), "{text}");
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_during_the_grace_period() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = client();
    let (st, _) = create(
        &c,
        &s,
        "rotatehook",
        json!({"serviceUri": rcv.url("/rot"), "actions": ["push"], "signing": {"enabled": true}}),
    )
    .await;
    assert_eq!(st, 201);
    let old = callback_config(&c, &s, "rotatehook").await["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();

    // Default grace period: a day.
    let (st, w) = post(
        &c,
        &format!("{}/rotateSigningSecret", hook_url(&s, "rotatehook")),
        None,
    )
    .await;
    assert_eq!(st, 200, "{w}");
    let text = w.to_string();
    assert!(
        !text.contains("whsec_"),
        "rotate does not return secrets: {text}"
    );
    let expires = w["properties"]["signing"]["previousSecretExpiresAt"]
        .as_str()
        .expect("the old secret's end is shown");
    let day_from_now = unix_now() + 86_400;
    let expires_at = parse_rfc3339(expires);
    assert!(
        (expires_at - day_from_now).abs() <= 300,
        "{expires} is about a day from now"
    );
    let new = callback_config(&c, &s, "rotatehook").await["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);

    ping(&c, &s, "rotatehook").await;
    let got = rcv.wait_for("/rot", 1, WAIT).await;
    let sigs = signatures(&got[0]);
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    let id = header(&got[0], "webhook-id").unwrap();
    let ts = header(&got[0], "webhook-timestamp").unwrap();
    assert_eq!(
        sigs,
        [
            expected_signature(&new, id, ts, &got[0].raw),
            expected_signature(&old, id, ts, &got[0].raw)
        ],
        "the new secret's signature first, then the old one's"
    );

    // Rotating with no grace period: the replaced secret stops at once.
    let (st, w) = post(
        &c,
        &format!("{}/rotateSigningSecret", hook_url(&s, "rotatehook")),
        Some(json!({"gracePeriodSeconds": 0})),
    )
    .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["properties"]["signing"], json!({"enabled": true}));
    let newest = callback_config(&c, &s, "rotatehook").await["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    ping(&c, &s, "rotatehook").await;
    let got = rcv.wait_for("/rot", 2, WAIT).await;
    assert_eq!(signatures(&got[1]).len(), 1);
    assert!(verifies(&got[1], &newest));
    assert!(!verifies(&got[1], &new) && !verifies(&got[1], &old));
}

/// Seconds since the epoch of an RFC 3339 time as the API writes it.
fn parse_rfc3339(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .timestamp()
}

#[tokio::test]
async fn rotation_needs_signing_and_a_valid_grace_period() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = client();
    let (st, _) = create(
        &c,
        &s,
        "unsigned1",
        json!({"serviceUri": rcv.url("/u"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201);
    let url = |n: &str| format!("{}/rotateSigningSecret", hook_url(&s, n));
    let (st, v) = post(&c, &url("unsigned1"), None).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "SigningDisabled");
    let (st, v) = post(&c, &url("nosuchhook"), None).await;
    assert_eq!(st, 404, "{v}");

    let (st, _) = patch(&c, &s, "unsigned1", json!({"signing": {"enabled": true}})).await;
    assert_eq!(st, 200);
    for (body, code, field) in [
        (
            json!({"gracePeriodSeconds": -1}),
            "InvalidParameter",
            "gracePeriodSeconds",
        ),
        (
            json!({"gracePeriodSeconds": "1h"}),
            "InvalidParameter",
            "gracePeriodSeconds",
        ),
        (
            json!({"gracePeriodSeconds": 604_801}),
            "InvalidParameter",
            "gracePeriodSeconds",
        ),
        (
            json!({"secret": "whsec_bWluZQ=="}),
            "InvalidParameter",
            "secret",
        ),
    ] {
        let (st, v) = post(&c, &url("unsigned1"), Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{msg}");
        assert!(!msg.contains("bWluZQ"), "the value is not echoed: {msg}");
    }
    let (st, v) = post(
        &c,
        &url("unsigned1"),
        Some(json!({"gracePeriodSeconds": 604_800})),
    )
    .await;
    assert_eq!(st, 200, "a week is the longest grace period: {v}");
}

#[tokio::test]
async fn the_signing_secret_is_the_servers_and_survives_disabling() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = client();
    // A secret cannot be supplied.
    let (st, v) = create(
        &c,
        &s,
        "ownsecret",
        json!({"serviceUri": rcv.url("/o"), "actions": ["push"],
               "signing": {"enabled": true, "secret": "whsec_bWluZQ=="}}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("properties.signing.secret: unknown property"),
        "{msg}"
    );
    assert!(!msg.contains("bWluZQ"), "{msg}");

    // Enabled later: the secret is made then, kept while disabled, the same when re-enabled.
    let (st, _) = create(
        &c,
        &s,
        "latersign",
        json!({"serviceUri": rcv.url("/l"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, w) = patch(&c, &s, "latersign", json!({"signing": {"enabled": true}})).await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["properties"]["signing"]["enabled"], true);
    let secret = callback_config(&c, &s, "latersign").await["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = patch(&c, &s, "latersign", json!({"signing": {"enabled": false}})).await;
    assert_eq!(st, 200);
    assert!(
        callback_config(&c, &s, "latersign")
            .await
            .get("signingSecret")
            .is_none()
    );
    ping(&c, &s, "latersign").await;
    let got = rcv.wait_for("/l", 1, WAIT).await;
    assert!(got[0].headers.get("webhook-signature").is_none());
    // An update that does not name signing leaves it alone.
    let (st, _) = patch(&c, &s, "latersign", json!({"signing": {"enabled": true}})).await;
    assert_eq!(st, 200);
    let (st, _) = patch(&c, &s, "latersign", json!({"scope": "x/*:*"})).await;
    assert_eq!(st, 200);
    assert_eq!(
        callback_config(&c, &s, "latersign").await["signingSecret"],
        secret.as_str()
    );
    ping(&c, &s, "latersign").await;
    let got = rcv.wait_for("/l", 2, WAIT).await;
    assert!(verifies(&got[1], &secret));

    // While signing is on, its headers are Wharf's.
    let (st, v) = patch(
        &c,
        &s,
        "latersign",
        json!({"customHeaders": {"Webhook-Signature": "v1,forged"}}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("customHeaders:") && msg.contains("signing"),
        "{msg}"
    );
}

// ---- CLI ----------------------------------------------------------------------------------

async fn wharf_cli(server: &str, args: &[&str]) -> Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.arg("webhook").args(args).env("WHARF_SERVER", server);
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test]
async fn cli_enables_signing_rotates_the_secret_and_shows_it_only_in_get_config() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let uri = rcv.url("/cli");
    let w = wharf_cli(
        &s.base,
        &[
            "create",
            "-n",
            "clisign",
            "--uri",
            &uri,
            "--actions",
            "push",
            "--signing",
            "enabled",
        ],
    )
    .await;
    assert_eq!(w["signing"], json!({"enabled": true}), "{w}");
    let cfg = wharf_cli(&s.base, &["get-config", "-n", "clisign"]).await;
    let first = cfg["signingSecret"].as_str().unwrap().to_owned();
    assert!(first.starts_with("whsec_"));
    let w = wharf_cli(
        &s.base,
        &["rotate-secret", "-n", "clisign", "--grace-period", "60"],
    )
    .await;
    assert!(w["signing"]["previousSecretExpiresAt"].is_string(), "{w}");
    assert!(!w.to_string().contains("whsec_"));
    let cfg = wharf_cli(&s.base, &["get-config", "-n", "clisign"]).await;
    assert_ne!(cfg["signingSecret"].as_str().unwrap(), first);
    let w = wharf_cli(
        &s.base,
        &["update", "-n", "clisign", "--signing", "disabled"],
    )
    .await;
    assert_eq!(w["signing"], json!({"enabled": false}));
    let cfg = wharf_cli(&s.base, &["get-config", "-n", "clisign"]).await;
    assert!(cfg.get("signingSecret").is_none(), "{cfg}");
}

// ---- SSRF guard ---------------------------------------------------------------------------

#[tokio::test]
async fn strict_guard_refuses_blocked_literals_at_create_naming_the_rule() {
    let (s, _dir) = strict_server(&[]).await;
    let c = client();
    for (uri, rule) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://10.20.30.40/hook", "private network"),
        ("http://192.168.1.1:8080/hook", "private network"),
        ("http://172.16.5.4/hook", "private network"),
        ("http://[fd12::1]/hook", "unique local"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://[::ffff:127.0.0.1]:9/hook", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://[::ffff:10.0.0.1]/", "private network"),
        ("http://169.254.3.4/", "link-local"),
        ("http://100.64.1.1/", "CGNAT"),
        ("http://0.0.0.0:9/", "unspecified"),
        ("http://2130706433:9/", "loopback"),
    ] {
        let (st, v) = create(
            &c,
            &s,
            "blockedhook",
            json!({"serviceUri": uri, "actions": ["push"]}),
        )
        .await;
        assert_eq!(st, 400, "{uri}: {v}");
        assert_eq!(v["error"]["code"], "InvalidParameter", "{uri}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("serviceUri: refused"), "{uri}: {msg}");
        assert!(msg.contains(rule), "{uri}: {msg} should name {rule}");
        assert!(
            !msg.contains("/hook") && !msg.contains(":9"),
            "{uri} echoed: {msg}"
        );
    }
    // Names are judged when a delivery is sent (see the next test); an update to a blocked
    // literal is refused like a create and changes nothing.
    let rcv = Receiver::start().await;
    let named = format!("http://localhost:{}/n", port_of(&rcv.base));
    let (st, v) = create(
        &c,
        &s,
        "namedhook",
        json!({"serviceUri": named, "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = patch(
        &c,
        &s,
        "namedhook",
        json!({"serviceUri": "http://10.0.0.1/"}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        callback_config(&c, &s, "namedhook").await["serviceUri"],
        named.as_str()
    );
}

#[tokio::test]
async fn strict_guard_refuses_a_name_resolving_to_loopback_at_send_time() {
    let (s, _dir) = strict_server(&[]).await;
    let rcv = Receiver::start().await;
    let c = client();
    let uri = format!("http://localhost:{}/rebound", port_of(&rcv.base));
    let (st, v) = create(
        &c,
        &s,
        "localname",
        json!({"serviceUri": uri, "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    push_image(&c, &s, "ssrf/app", "v1", "r").await;
    // Failed like any attempt and retried on the schedule (three attempts in these tests).
    let ev = wait_history(&c, &s, "localname", |e| {
        e.len() >= 3 && e[0]["deliveryState"] == "failed"
    })
    .await;
    assert!(ev.len() >= 3, "{ev:?}");
    for e in &ev {
        let err = e["error"].as_str().unwrap_or_default();
        assert!(
            err.contains("blocked address") && err.contains("loopback"),
            "{err}"
        );
        assert!(!err.contains("rebound"), "the URI is not echoed: {err}");
        assert_eq!(e["eventResponseMessage"]["statusCode"], "");
    }
    // Ping goes through the same guard.
    let id = ping(&c, &s, "localname").await;
    let (_, ev) = history(&c, &s, "localname").await;
    let p = ev.iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert!(p["error"].as_str().unwrap().contains("loopback"), "{p}");
    assert!(
        rcv.arrived("/rebound").is_empty(),
        "nothing reached the receiver"
    );
}

#[tokio::test]
async fn a_stored_target_that_became_blocked_is_refused_at_send_time() {
    // Created while loopback was open (development mode), sent after a restart in strict mode.
    let rcv = Receiver::start().await;
    let c = client();
    let s = Server::start().await;
    let (st, _) = create(
        &c,
        &s,
        "wasopen1",
        json!({"serviceUri": rcv.url("/was"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201);
    let dir = s.stop().await;
    let mut webhooks = Webhooks::from_hooks(&fast_hooks());
    webhooks.allow_loopback = LoopbackTargets::Refuse;
    let s = Server::start_config(Config {
        data_dir: dir.to_path_buf(),
        webhooks,
        ..Default::default()
    })
    .await;
    let id = ping(&c, &s, "wasopen1").await;
    let (_, ev) = history(&c, &s, "wasopen1").await;
    let p = ev.iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert!(p["error"].as_str().unwrap().contains("loopback"), "{p}");
    assert_eq!(p["deliveryState"], "failed");
    assert!(rcv.arrived("/was").is_empty());
    s.stop().await;
}

#[tokio::test]
async fn the_allow_list_opens_a_network() {
    let (s, _dir) = strict_server(&["127.0.0.1/32"]).await;
    let rcv = Receiver::start().await;
    let c = client();
    let (st, v) = create(
        &c,
        &s,
        "allowedlit",
        json!({"serviceUri": rcv.url("/lit"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    // A name: of what localhost resolves to, 127.0.0.1 is open (::1 is not, and is skipped).
    let named = format!("http://localhost:{}/name", port_of(&rcv.base));
    let (st, v) = create(
        &c,
        &s,
        "allowedname",
        json!({"serviceUri": named, "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    push_image(&c, &s, "allowed/app", "v1", "a").await;
    assert_eq!(rcv.wait_for("/lit", 1, WAIT).await.len(), 1);
    assert_eq!(rcv.wait_for("/name", 1, WAIT).await.len(), 1);
    // Outside the list stays refused.
    let (st, v) = create(
        &c,
        &s,
        "notallowed",
        json!({"serviceUri": "http://127.0.0.2:9/", "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("loopback"));
}

#[tokio::test]
async fn development_mode_reaches_local_receivers_by_name_but_never_itself() {
    // The default `wharf serve`: no authentication, listening on loopback.
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let c = client();
    let named = format!("http://localhost:{}/dev", port_of(&rcv.base));
    let (st, v) = create(
        &c,
        &s,
        "devlocal1",
        json!({"serviceUri": named, "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    ping(&c, &s, "devlocal1").await;
    assert_eq!(rcv.wait_for("/dev", 1, WAIT).await.len(), 1);
    // Other blocked ranges stay blocked in development mode.
    let (st, v) = create(
        &c,
        &s,
        "devmeta1",
        json!({"serviceUri": "http://169.254.169.254/", "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = create(
        &c,
        &s,
        "devself1",
        json!({"serviceUri": format!("http://localhost:{}/v2/", s.addr.port()), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("own listener")
    );
}

#[tokio::test]
async fn a_redirect_from_an_allowed_receiver_is_not_followed() {
    let s = Server::start().await;
    let target = Receiver::start().await;
    let c = client();
    // An allowed receiver that answers with a redirect to another (also allowed) one.
    let location = target.url("/stolen");
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (st, v) = create(
        &c,
        &s,
        "redirected",
        json!({"serviceUri": redirector, "actions": ["push"], "customHeaders": {"Authorization": "Bearer r3dir"}}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    ping(&c, &s, "redirected").await;
    push_image(&c, &s, "redir/app", "v1", "d").await;
    let ev = wait_history(&c, &s, "redirected", |e| {
        e.iter().filter(|x| x["deliveryState"] == "failed").count() >= 2
    })
    .await;
    assert!(ev.len() >= 2, "{ev:?}");
    for e in &ev {
        assert_eq!(e["eventResponseMessage"]["statusCode"], "307", "{e}");
    }
    assert!(
        target.arrived("/stolen").is_empty(),
        "the redirect was followed"
    );
}

/// The signature covers the bytes sent: in a non-ACR payload format, the rendered body.
#[tokio::test]
async fn cli_sets_the_payload_format_and_signatures_cover_the_rendered_body() {
    let s = Server::start().await;
    let rcv = Receiver::start().await;
    let uri = rcv.url("/fmt");
    let w = wharf_cli(
        &s.base,
        &[
            "create",
            "-n",
            "clifmt1",
            "--uri",
            &uri,
            "--actions",
            "push",
            "--signing",
            "enabled",
            "--payload-format",
            "cloudevents-binary",
        ],
    )
    .await;
    assert_eq!(w["payloadFormat"], "cloudevents-binary", "{w}");
    let w = wharf_cli(
        &s.base,
        &["update", "-n", "clifmt1", "--payload-format", "eventgrid"],
    )
    .await;
    assert_eq!(w["payloadFormat"], "eventgrid", "{w}");
    let w = wharf_cli(&s.base, &["show", "-n", "clifmt1"]).await;
    assert_eq!(w["payloadFormat"], "eventgrid", "{w}");
    let secret = wharf_cli(&s.base, &["get-config", "-n", "clifmt1"]).await["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();

    let c = client();
    push_image(&c, &s, "fmt/signed", "v1", "f").await;
    let got = rcv.wait_for("/fmt", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(
        r.body[0]["eventType"],
        "Microsoft.ContainerRegistry.ImagePushed"
    );
    assert_eq!(header(r, "webhook-id"), r.body[0]["id"].as_str());
    // (`verifies` expects an object body; Event Grid's is an array.)
    let want = expected_signature(
        &secret,
        header(r, "webhook-id").unwrap(),
        header(r, "webhook-timestamp").unwrap(),
        &r.raw,
    );
    assert_eq!(
        header(r, "webhook-signature"),
        Some(want.as_str()),
        "signature over the Event Grid body"
    );
}
