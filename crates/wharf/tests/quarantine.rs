//! The quarantine policy through the real server (acr-webhooks.md §2.5, §7; acr-auth.md §5.4):
//! with it on, a push is stored `Quarantined` and raises only `quarantine`; pulls fail as
//! ACR's do (by tag "not found", by digest disallowed); a scanner's PATCH of `Failed` keeps it
//! blocked, and `Passed` releases it and raises the held-back `push`, once, in the same
//! transaction.

mod common;

use std::time::Duration;

use common::{Receiver, Server, client, push_image};
use serde_json::{Value, json};
use wharf_store::PoliciesPatch;

const WAIT: Duration = Duration::from_secs(15);
const UA: &str = "quarantine-test/1.0";

async fn deliveries(s: &Server) -> i64 {
    s.store.delivery_counts().await.unwrap().values().sum()
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
