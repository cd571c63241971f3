//! The quarantine policy through the real server (acr-webhooks.md §2.5, §7; acr-auth.md §5.4):
//! with it on, a push is stored `Quarantined` and raises only `quarantine`; pulls fail as
//! ACR's do (by tag "not found", by digest disallowed); a scanner's PATCH of `Failed` keeps it
//! blocked, and `Passed` releases it and raises the held-back `push`, once, in the same
//! transaction.

use crate::common;

use std::time::Duration;

use common::{Receiver, Server, client, push_image};
use serde_json::{Value, json};
use wharf_store::PoliciesPatch;

const WAIT: Duration = Duration::from_secs(15);
const UA: &str = "quarantine-test/1.0";

async fn deliveries(s: &Server) -> i64 {
    s.store
        .deliveries()
        .delivery_counts()
        .await
        .unwrap()
        .values()
        .sum()
}

async fn hook(c: &reqwest::Client, s: &Server, name: &str, uri: &str, actions: &[&str]) {
    let r = c
        .put(s.url(&format!("/wharf/v1/webhooks/{name}")))
        .json(&json!({"properties": {"serviceUri": uri, "actions": actions, "scope": ""}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

async fn manifest_attrs(c: &reqwest::Client, s: &Server, repo: &str, d: &str) -> Value {
    let r = c
        .get(s.url(&format!(
            "/acr/v1/{}/_manifests/{}",
            repo.replace('/', "%2F"),
            d.replace(':', "%3A")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["manifest"].clone()
}

async fn scan(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    d: &str,
    state: &str,
    details: &str,
) -> (u16, Value) {
    let r = c
        .patch(s.url(&format!(
            "/acr/v1/{}/_manifests/{}",
            repo.replace('/', "%2F"),
            d.replace(':', "%3A")
        )))
        .json(&json!({"quarantineState": state, "quarantineDetails": details}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_quarantined_push_is_held_until_a_scanner_passes_it() {
    let s = Server::start().await;
    let rx = Receiver::start().await;
    let c = reqwest::Client::builder().user_agent(UA).build().unwrap();
    hook(&c, &s, "scanner", &rx.url("/scan"), &["quarantine"]).await;
    hook(&c, &s, "deploy", &rx.url("/deploy"), &["push"]).await;
    s.store
        .policies()
        .update(PoliciesPatch {
            quarantine_enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();

    let repo = "scan/app";
    let (d, body) = push_image(&c, &s, repo, "v9", "q").await;
    // Queued in the push's own transaction: one delivery, the quarantine one; no push.
    assert_eq!(deliveries(&s).await, 1);
    let got = rx.wait_for("/scan", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let ev = &got[0].body;
    assert_eq!(ev["action"], "quarantine");
    assert_eq!(ev["target"]["digest"], json!(d));
    assert_eq!(ev["target"]["repository"], repo);
    assert_eq!(ev["target"]["tag"], "v9");
    assert_eq!(ev["target"]["size"], json!(body.len()));
    assert_eq!(ev["target"]["length"], json!(body.len()));
    assert!(ev["target"].get("mediaType").is_none(), "{ev}");
    assert_eq!(ev["request"]["method"], "PUT");
    assert!(ev["request"].get("useragent").is_none(), "{ev}");

    // Pulls fail as ACR's do.
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/v9")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{v}"
    );
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "REGISTRY_DISALLOWED_OPERATION");
    let r = c
        .head(s.url(&format!("/v2/{repo}/manifests/v9")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The data plane shows the state.
    let m = manifest_attrs(&c, &s, repo, &d).await;
    assert_eq!(m["changeableAttributes"]["quarantineState"], "Quarantined");

    // A bad state is refused; `Failed` keeps it blocked and raises nothing.
    let (st, _) = scan(&c, &s, repo, &d, "Maybe", "{}").await;
    assert_eq!(st, 400);
    let details = r#"{"state":"Scan Failed","link":"https://scanner.example.org/r/1"}"#;
    let (st, v) = scan(&c, &s, repo, &d, "Failed", details).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["manifest"]["changeableAttributes"]["quarantineState"],
        "Failed"
    );
    assert_eq!(
        v["manifest"]["changeableAttributes"]["quarantineDetails"],
        details
    );
    assert_eq!(deliveries(&s).await, 1);
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // `Passed` releases it: the held-back push is queued in the same transaction, once.
    let details = r#"{"state":"scan passed","link":"https://scanner.example.org/r/2"}"#;
    let (st, v) = scan(&c, &s, repo, &d, "Passed", details).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["manifest"]["changeableAttributes"]["quarantineState"],
        "Passed"
    );
    assert_eq!(deliveries(&s).await, 2);
    let got = rx.wait_for("/deploy", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let ev = &got[0].body;
    assert_eq!(ev["action"], "push");
    assert_eq!(ev["target"]["digest"], json!(d));
    assert_eq!(ev["target"]["tag"], "v9", "the tag it was pushed with");
    assert_eq!(
        ev["target"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(ev["request"]["method"], "PUT");
    assert_eq!(ev["request"]["useragent"], UA, "the push's own request");
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/v9")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Passing it again raises nothing more.
    let (st, _) = scan(&c, &s, repo, &d, "Passed", details).await;
    assert_eq!(st, 200);
    assert_eq!(deliveries(&s).await, 2);
    assert_eq!(rx.received("/deploy").len(), 1);
}

/// A verdict revised after the release (Passed → Failed → Passed) raises no second `push`:
/// only a manifest whose push is still held back is released.
#[tokio::test]
async fn a_repeated_release_raises_no_second_push() {
    let s = Server::start().await;
    let rx = Receiver::start().await;
    let c = client();
    hook(&c, &s, "deploy", &rx.url("/deploy"), &["push"]).await;
    s.store
        .policies()
        .update(PoliciesPatch {
            quarantine_enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let repo = "again/app";
    let (d, body) = push_image(&c, &s, repo, "v1", "r").await;
    assert_eq!(scan(&c, &s, repo, &d, "Passed", "{}").await.0, 200);
    assert_eq!(deliveries(&s).await, 1);
    assert_eq!(scan(&c, &s, repo, &d, "Failed", "{}").await.0, 200);
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/v1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "failed again: blocked");
    let (st, v) = scan(&c, &s, repo, &d, "Passed", "{}").await;
    assert_eq!(st, 200);
    assert_eq!(
        v["manifest"]["changeableAttributes"]["quarantineState"],
        "Passed"
    );
    assert_eq!(deliveries(&s).await, 1, "no second push");
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/v1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A push made while it was failed is held back, and the next release announces it, once.
    assert_eq!(scan(&c, &s, repo, &d, "Failed", "{}").await.0, 200);
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/v2")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(deliveries(&s).await, 1, "held back");
    assert_eq!(scan(&c, &s, repo, &d, "Passed", "{}").await.0, 200);
    assert_eq!(scan(&c, &s, repo, &d, "Passed", "{}").await.0, 200);
    assert_eq!(deliveries(&s).await, 2);
    let got = rx.wait_for("/deploy", 2, WAIT).await;
    let mut tags: Vec<&str> = got
        .iter()
        .map(|r| r.body["target"]["tag"].as_str().unwrap_or(""))
        .collect();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);
    for r in &got {
        assert!(
            !r.body["request"]["host"].as_str().unwrap_or("").is_empty(),
            "{}",
            r.body
        );
    }
}

#[tokio::test]
async fn without_the_policy_a_push_raises_both_events_and_pulls_work() {
    let s = Server::start().await;
    let rx = Receiver::start().await;
    let c = client();
    hook(
        &c,
        &s,
        "bothhooks",
        &rx.url("/both"),
        &["push", "quarantine"],
    )
    .await;
    let (d, _) = push_image(&c, &s, "plain/app", "v1", "p").await;
    assert_eq!(deliveries(&s).await, 2);
    let got = rx.wait_for("/both", 2, WAIT).await;
    let mut actions: Vec<&str> = got
        .iter()
        .map(|r| r.body["action"].as_str().unwrap())
        .collect();
    actions.sort();
    assert_eq!(actions, ["push", "quarantine"]);
    let r = c
        .get(s.url(&format!("/v2/plain/app/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = manifest_attrs(&c, &s, "plain/app", &d).await;
    assert!(m["changeableAttributes"].get("quarantineState").is_none());
}

/// A second push of a still-quarantined manifest under another tag is held back too, and the
/// release raises a push for each tag.
#[tokio::test]
async fn every_tag_pushed_while_quarantined_is_released() {
    let s = Server::start().await;
    let rx = Receiver::start().await;
    let c = client();
    hook(&c, &s, "deploy", &rx.url("/deploy"), &["push"]).await;
    s.store
        .policies()
        .update(PoliciesPatch {
            quarantine_enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let (d, body) = push_image(&c, &s, "two/tags", "a", "t").await;
    let r = c
        .put(s.url("/v2/two/tags/manifests/b"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(deliveries(&s).await, 0);
    let (st, _) = scan(&c, &s, "two/tags", &d, "Passed", "{}").await;
    assert_eq!(st, 200);
    assert_eq!(deliveries(&s).await, 2);
    let got = rx.wait_for("/deploy", 2, WAIT).await;
    let mut tags: Vec<&str> = got
        .iter()
        .map(|r| r.body["target"]["tag"].as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["a", "b"]);
}

const MGMT: &str = "wharfm_test-management-token-0123456789abcdefghijkl";
const R: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wharf/providers/Microsoft.ContainerRegistry/registries/wharf";

async fn arm(
    c: &reqwest::Client,
    s: &Server,
    m: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut r = c
        .request(m, s.url(&format!("{R}{path}?api-version=2025-11-01")))
        .bearer_auth(MGMT)
        .header("content-type", "application/json");
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let r = r.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// Only the registry's owners (the admin user, the management credential) pull quarantined
/// images, so a scanner running as one can read what it scans; a token cannot, even one with
/// every repository action.
#[tokio::test]
async fn only_the_registrys_owners_pull_quarantined_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.auth.enabled = true;
    cfg.auth.management_token = MGMT.into();
    let s = Server::start_config(cfg).await;
    let c = client();
    let creds = arm(&c, &s, reqwest::Method::POST, "/listCredentials", None).await;
    let admin_pw = creds["passwords"][0]["value"].as_str().unwrap().to_owned();
    arm(
        &c,
        &s,
        reqwest::Method::PUT,
        "/tokens/scanner",
        Some(json!({"properties": {"scopeMapId": format!("{R}/scopeMaps/_repositories_admin")}})),
    )
    .await;
    let v = arm(
        &c,
        &s,
        reqwest::Method::POST,
        "/generateCredentials",
        Some(json!({"tokenId": format!("{R}/tokens/scanner"), "name": "password1"})),
    )
    .await;
    let token_pw = v["passwords"][0]["value"].as_str().unwrap().to_owned();
    let as_user = |user: &str, pw: &str| {
        let mut h = reqwest::header::HeaderMap::new();
        let b = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{user}:{pw}"),
        );
        h.insert("authorization", format!("Basic {b}").parse().unwrap());
        reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap()
    };
    let admin = as_user("wharf", &admin_pw);
    let token = as_user("scanner", &token_pw);
    s.store
        .policies()
        .update(PoliciesPatch {
            quarantine_enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let (d, _) = push_image(&admin, &s, "held/img", "v1", "h").await;
    for path in [
        "/v2/held/img/manifests/v1".to_owned(),
        format!("/v2/held/img/manifests/{d}"),
        format!("/v2/held/img/blobs/{}", common::sha256(b"layer-h")),
    ] {
        let r = admin.get(s.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "admin {path}");
        let r = c.get(s.url(&path)).bearer_auth(MGMT).send().await.unwrap();
        assert_eq!(r.status(), 200, "management {path}");
        let r = token.get(s.url(&path)).send().await.unwrap();
        assert!(
            matches!(r.status().as_u16(), 404 | 405),
            "token {path}: {}",
            r.status()
        );
    }
    // Listings: the owners see the quarantined tag, the token does not.
    for path in ["/v2/held/img/tags/list", "/acr/v1/held%2Fimg/_tags"] {
        let listed = |v: Value| {
            v["tags"]
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t == "v1" || t["name"] == "v1"))
        };
        let v: Value = admin
            .get(s.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(listed(v.clone()), "admin {path}: {v}");
        let r = token.get(s.url(path)).send().await.unwrap();
        let st = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(st == 200 && !listed(v.clone()), "token {path}: {st} {v}");
    }
    // The token, with metadata rights, sees the state through /acr/v1 but cannot change it
    // (ACR's AcrQuarantineWriter): whoever can push must not release their own image.
    let url = s.url(&format!(
        "/acr/v1/held%2Fimg/_manifests/{}",
        d.replace(':', "%3A")
    ));
    let state = |v: Value| v["manifest"]["changeableAttributes"]["quarantineState"].clone();
    let v: Value = token.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(state(v), "Quarantined");
    for body in [
        json!({"quarantineState": "Passed"}),
        json!({"quarantineDetails": "{\"clean\":true}"}),
        json!({"quarantineState": "Failed", "readEnabled": true}),
    ] {
        let r = token.patch(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 403, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], "DENIED", "{v}");
    }
    let v: Value = token.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(state(v.clone()), "Quarantined", "nothing changed");
    assert!(
        v["manifest"]["changeableAttributes"]
            .get("quarantineDetails")
            .is_none_or(Value::is_null),
        "{v}"
    );
    // Its other attributes it may still change.
    let r = token
        .patch(&url)
        .json(&json!({"listEnabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = token
        .get(s.url("/v2/held/img/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "still quarantined");

    // The admin user, with a bearer token issued to it, and the management credential can.
    let v: Value = admin
        .get(s.url(&format!(
            "/oauth2/token?service={}&scope=repository:held/img:pull,metadata_read,metadata_write",
            s.addr
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin_jwt = v["access_token"].as_str().unwrap().to_owned();
    let r = c
        .patch(&url)
        .bearer_auth(&admin_jwt)
        .json(&json!({"quarantineState": "Failed", "quarantineDetails": "{}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let v: Value = admin.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(state(v), "Failed");
    let r = c
        .patch(&url)
        .bearer_auth(MGMT)
        .json(&json!({"quarantineState": "Passed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = token
        .get(s.url("/v2/held/img/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The policies as a management client turns them on: ARM's registry PATCH.
#[tokio::test]
async fn the_arm_registry_patch_turns_quarantine_on_and_off() {
    let s = Server::start().await;
    let c = client();
    let patch = |status: &'static str| {
        let c = c.clone();
        let url = s.url(&format!("{R}?api-version=2025-11-01"));
        async move {
            let r = c
                .patch(url)
                .json(
                    &json!({"properties": {"policies": {"quarantinePolicy": {"status": status}}}}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
        }
    };
    patch("enabled").await;
    let (d, _) = push_image(&c, &s, "arm/q", "v1", "a").await;
    let r = c
        .get(s.url(&format!("/v2/arm/q/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    patch("disabled").await;
    let (d2, _) = push_image(&c, &s, "arm/q", "v2", "b").await;
    let r = c
        .get(s.url(&format!("/v2/arm/q/manifests/{d2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "pushed with the policy off");
    let r = c
        .get(s.url(&format!("/v2/arm/q/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "still quarantined until a scanner decides");
}

/// The blobs of a quarantined image are as blocked as its manifest by digest: a blob that, in
/// that repository, only quarantined (or failed) manifests reference answers 405 to GET and
/// HEAD; one another manifest references too, or none yet (an upload in progress), is served.
#[tokio::test]
async fn blobs_of_a_quarantined_image_are_not_served() {
    let s = Server::start().await;
    let c = client();
    let policy = |on| {
        let store = s.store.clone();
        async move {
            store
                .policies()
                .update(PoliciesPatch {
                    quarantine_enabled: Some(on),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    };
    let blob_status = |repo: &'static str, d: String, head: bool| {
        let c = c.clone();
        let url = s.url(&format!("/v2/{repo}/blobs/{d}"));
        async move {
            let r = if head { c.head(url) } else { c.get(url) }
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            if !head && st == 405 {
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["errors"][0]["code"], "REGISTRY_DISALLOWED_OPERATION");
            }
            st
        }
    };
    let config = |salt: &str| {
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"salt\":\"{salt}\"}}").into_bytes()
    };
    let layer_x = common::sha256(b"layer-x");
    let config_x = common::sha256(&config("x"));

    // A blob no manifest references yet is served, with the policy on.
    policy(true).await;
    let lone = common::push_blob(&c, &s, "q/img", b"not yet referenced").await;
    assert_eq!(blob_status("q/img", lone.clone(), false).await, 200);

    let (d, _) = push_image(&c, &s, "q/img", "v1", "x").await;
    for head in [false, true] {
        assert_eq!(blob_status("q/img", layer_x.clone(), head).await, 405);
        assert_eq!(blob_status("q/img", config_x.clone(), head).await, 405);
    }
    assert_eq!(blob_status("q/img", lone.clone(), false).await, 200);
    // Nor can it be mounted elsewhere: the mount falls back to a plain upload session.
    let mount = |d: String| {
        let c = c.clone();
        let url = s.url(&format!("/v2/q/dst/blobs/uploads/?mount={d}&from=q/img"));
        async move { c.post(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(mount(config_x.clone()).await, 202);
    assert_eq!(blob_status("q/dst", config_x.clone(), false).await, 404);
    assert_eq!(mount(lone.clone()).await, 201);

    // Another, released manifest in the repository references the layer: it is served; the
    // config only the quarantined image has stays blocked.
    policy(false).await;
    let other = config("other");
    let other_d = common::push_blob(&c, &s, "q/img", &other).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": other_d, "size": other.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_x, "size": 7}],
    });
    let r = c
        .put(s.url("/v2/q/img/manifests/other"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&m).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(blob_status("q/img", layer_x.clone(), false).await, 200);
    assert_eq!(blob_status("q/img", config_x.clone(), false).await, 405);

    // Failed keeps it blocked; Passed serves it.
    assert_eq!(scan(&c, &s, "q/img", &d, "Failed", "{}").await.0, 200);
    assert_eq!(blob_status("q/img", config_x.clone(), true).await, 405);
    assert_eq!(scan(&c, &s, "q/img", &d, "Passed", "{}").await.0, 200);
    for head in [false, true] {
        assert_eq!(blob_status("q/img", config_x.clone(), head).await, 200);
        assert_eq!(blob_status("q/img", layer_x.clone(), head).await, 200);
    }
    assert_eq!(mount(config_x.clone()).await, 201);
    assert_eq!(blob_status("q/dst", config_x.clone(), false).await, 200);
    // Failed again after the release: blocked again.
    assert_eq!(scan(&c, &s, "q/img", &d, "Failed", "{}").await.0, 200);
    assert_eq!(blob_status("q/img", config_x.clone(), false).await, 405);
}

/// Listings show no quarantined content to those who may not pull it: `tags/list` and
/// `_tags` leave out tags of quarantined manifests (a pull by them answers "not found"), and
/// the referrers API leaves out quarantined referrers, and those with `listEnabled` false.
#[tokio::test]
async fn listings_hide_quarantined_tags_and_referrers() {
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    let s = Server::start().await;
    let c = client();
    let policy = |on| {
        let store = s.store.clone();
        async move {
            store
                .policies()
                .update(PoliciesPatch {
                    quarantine_enabled: Some(on),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    };
    let repo = "list/app";
    let (subject, body) = push_image(&c, &s, repo, "v0", "l0").await;
    let empty = common::push_blob(&c, &s, repo, b"{}").await;
    let mk = |at: &str| {
        serde_json::to_vec(
            &json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"artifactType":at,
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":empty,"size":2},
            "layers":[],"subject":{"mediaType":OCI_MANIFEST,"digest":subject,"size":body.len()}}),
        )
        .unwrap()
    };
    let put = |m: Vec<u8>| {
        let c = c.clone();
        let url = s.url(&format!("/v2/{repo}/manifests/{}", common::sha256(&m)));
        async move {
            let r = c
                .put(url)
                .header("content-type", OCI_MANIFEST)
                .body(m.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            common::sha256(&m)
        }
    };
    let unlisted = put(mk("application/vnd.example.unlisted")).await;
    let r = c
        .patch(s.url(&format!(
            "/acr/v1/list%2Fapp/_manifests/{}",
            unlisted.replace(':', "%3A")
        )))
        .json(&json!({"listEnabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    policy(true).await;
    let (held, _) = push_image(&c, &s, repo, "v1", "l1").await;
    let held_ref = put(mk("application/vnd.example.signature")).await;

    let tags = |path: String, key: &'static str| {
        let c = c.clone();
        let url = s.url(&path);
        async move {
            let v: Value = c.get(url).send().await.unwrap().json().await.unwrap();
            v[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    t.as_str()
                        .unwrap_or_else(|| t["name"].as_str().unwrap())
                        .to_owned()
                })
                .collect::<Vec<_>>()
        }
    };
    let referrers = || {
        let c = c.clone();
        let url = s.url(&format!("/v2/{repo}/referrers/{subject}"));
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["digest"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(tags(format!("/v2/{repo}/tags/list"), "tags").await, ["v0"]);
    assert_eq!(
        tags("/acr/v1/list%2Fapp/_tags".into(), "tags").await,
        ["v0"]
    );
    assert_eq!(referrers().await, Vec::<String>::new());

    // Released, they are listed; the unlisted referrer stays hidden.
    assert_eq!(scan(&c, &s, repo, &held, "Passed", "{}").await.0, 200);
    assert_eq!(scan(&c, &s, repo, &held_ref, "Passed", "{}").await.0, 200);
    assert_eq!(
        tags(format!("/v2/{repo}/tags/list"), "tags").await,
        ["v0", "v1"]
    );
    assert_eq!(
        tags("/acr/v1/list%2Fapp/_tags".into(), "tags").await,
        ["v0", "v1"]
    );
    assert_eq!(referrers().await, vec![held_ref.clone()]);
    // Failed again: hidden again.
    assert_eq!(scan(&c, &s, repo, &held_ref, "Failed", "{}").await.0, 200);
    assert_eq!(referrers().await, Vec::<String>::new());
}
