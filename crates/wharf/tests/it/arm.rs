//! The management API at ARM's paths, through a real server with a configured subscription,
//! resource group and registry name: discovery of the names, the registry resource and its
//! policies (kept across a restart), webhooks, tokens, scope maps and credentials, `api-version`
//! checks, `nextLink` paging, case-insensitive paths and ARM's error shape on every failure.

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::{Receiver, Server, push_image};
use reqwest::Method;
use serde_json::{Value, json};

const MGMT: &str = "wharfm_arm-test-management-token-0123456789abcdefgh";
const SUB: &str = "6f1a2b3c-0000-4000-8000-00000000abcd";
const RG: &str = "rg-Prod";
const REG: &str = "fabrikam";
const V: &str = "api-version=2025-11-01";

fn r_path() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{REG}"
    )
}

fn config(dir: &std::path::Path) -> wharf::config::Config {
    let mut cfg = wharf::config::Config {
        data_dir: dir.to_owned(),
        ..Default::default()
    };
    cfg.auth.enabled = true;
    cfg.auth.management_token = MGMT.into();
    cfg.registry.name = REG.into();
    cfg.registry.subscription_id = SUB.into();
    cfg.registry.resource_group = RG.into();
    cfg.region = "westeurope".into();
    // The receiver of these tests listens on loopback.
    cfg.webhooks.allow_loopback = wharf::config::LoopbackTargets::Allow;
    cfg.webhooks.timeout_secs = 2;
    cfg
}

async fn start(dir: &std::path::Path) -> Server {
    Server::start_config(config(dir)).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One call with the management token as the Bearer value, as the Azure SDK sends it.
async fn call(
    c: &reqwest::Client,
    s: &Server,
    m: Method,
    path_and_query: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = if path_and_query.starts_with("http") {
        path_and_query.to_owned()
    } else {
        s.url(path_and_query)
    };
    let mut r = c.request(m, url).bearer_auth(MGMT);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// A call on `{R}{rest}` with the SDK's api-version.
async fn arm(
    c: &reqwest::Client,
    s: &Server,
    m: Method,
    rest: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let sep = if rest.contains('?') { '&' } else { '?' };
    call(c, s, m, &format!("{}{rest}{sep}{V}", r_path()), body).await
}

fn assert_arm_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

/// Every item of a list, following `nextLink` (absolute, as ARM gives it); and the number of
/// pages it took.
async fn all_pages(c: &reqwest::Client, s: &Server, first: &str) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut pages = 0;
    let mut url = first.to_owned();
    loop {
        let (st, v) = call(c, s, Method::GET, &url, None).await;
        assert_eq!(st, 200, "{url}: {v}");
        pages += 1;
        out.extend(v["value"].as_array().unwrap().iter().cloned());
        match v["nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&format!("http://{}/", s.addr)),
                    "nextLink is absolute: {next}"
                );
                assert!(next.contains(V), "nextLink keeps the api-version: {next}");
                url = next.to_owned();
            }
            None => return (out, pages),
        }
    }
}

#[tokio::test]
async fn the_names_are_discoverable_and_every_id_uses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path()).await;
    let c = client();

    let (st, v) = call(
        &c,
        &s,
        Method::GET,
        "/subscriptions?api-version=2022-12-01",
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    assert_eq!(v["value"][0]["subscriptionId"], SUB);
    assert_eq!(v["value"][0]["id"], format!("/subscriptions/{SUB}"));
    assert_eq!(v["value"][0]["state"], "Enabled");
    let (st, v) = call(
        &c,
        &s,
        Method::GET,
        &format!("/subscriptions/{SUB}?{V}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["subscriptionId"], SUB);
    let (st, v) = call(
        &c,
        &s,
        Method::GET,
        &format!("/subscriptions/{SUB}/resourceGroups/{RG}?{V}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], RG);
    assert_eq!(v["location"], "westeurope");

    let by_sub =
        format!("/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/registries?{V}");
    let by_rg = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries?{V}"
    );
    for list in [&by_sub, &by_rg] {
        let (st, v) = call(&c, &s, Method::GET, list, None).await;
        assert_eq!(st, 200, "{v}");
        let regs = v["value"].as_array().unwrap();
        assert_eq!(regs.len(), 1, "{v}");
        assert_eq!(regs[0]["id"], r_path());
        assert_eq!(regs[0]["name"], REG);
        assert!(v.get("nextLink").is_none());
    }

    let (st, reg) = arm(&c, &s, Method::GET, "", None).await;
    assert_eq!(st, 200, "{reg}");
    assert_eq!(reg["id"], r_path());
    assert_eq!(reg["name"], REG);
    assert_eq!(reg["type"], "Microsoft.ContainerRegistry/registries");
    assert_eq!(reg["location"], "westeurope");
    assert_eq!(reg["sku"]["name"], "Premium");
    let p = &reg["properties"];
    assert_eq!(p["loginServer"], format!("127.0.0.1:{}", s.addr.port()));
    assert_eq!(p["provisioningState"], "Succeeded");
    // access control on: the admin user is on from the first start (its password printed)
    assert_eq!(p["adminUserEnabled"], true);
    assert_eq!(p["anonymousPullEnabled"], false);
    assert_eq!(p["policies"]["quarantinePolicy"]["status"], "disabled");
    assert_eq!(p["policies"]["retentionPolicy"]["status"], "disabled");
    assert_eq!(p["policies"]["retentionPolicy"]["days"], 7);
    assert_eq!(p["policies"]["trustPolicy"]["status"], "disabled");
    let created = p["creationDate"].as_str().unwrap().to_owned();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&created).is_ok(),
        "{created}"
    );

    // children's ids are under the configured registry's
    let (st, m) = arm(&c, &s, Method::GET, "/scopeMaps/_repositories_pull", None).await;
    assert_eq!(st, 200, "{m}");
    assert_eq!(
        m["id"],
        format!("{}/scopeMaps/_repositories_pull", r_path())
    );
    let rcv = Receiver::start().await;
    let (st, w) = arm(
        &c,
        &s,
        Method::PUT,
        "/webhooks/idhook1",
        Some(json!({"location": "westeurope", "properties": {"serviceUri": rcv.url("/h"), "actions": ["push"]}})),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["id"], format!("{}/webhooks/idhook1", r_path()));

    // ARM's path segments ignore case; the ids keep the configured spelling
    let shouted = format!(
        "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/{}/PROVIDERS/microsoft.containerregistry/REGISTRIES/{}/WEBHOOKS/idhook1?{V}",
        SUB.to_uppercase(),
        RG.to_lowercase(),
        REG.to_uppercase()
    );
    let (st, w2) = call(&c, &s, Method::GET, &shouted, None).await;
    assert_eq!(st, 200, "{w2}");
    assert_eq!(w2["id"], w["id"]);
    let (st, v) = call(
        &c,
        &s,
        Method::GET,
        &shouted.replace("/WEBHOOKS/idhook1", ""),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], r_path());

    // another subscription, resource group or registry: ARM's not-found answers
    let other = |sub: &str, rg: &str, reg: &str| {
        format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{reg}/webhooks?{V}"
        )
    };
    for (path, code) in [
        (
            other("00000000-0000-0000-0000-000000000001", RG, REG),
            "SubscriptionNotFound",
        ),
        (other(SUB, "rg-other", REG), "ResourceGroupNotFound"),
        (other(SUB, RG, "contoso"), "ResourceNotFound"),
        (
            format!(
                "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.ContainerRegistry/registries?{V}"
            ),
            "SubscriptionNotFound",
        ),
        (
            format!("/subscriptions/{SUB}/resourceGroups/nope?{V}"),
            "ResourceGroupNotFound",
        ),
    ] {
        let (st, v) = call(&c, &s, Method::GET, &path, None).await;
        assert_eq!(st, 404, "{path}: {v}");
        assert_arm_error(&v, code);
    }

    // the same id as the Event Grid topic of deliveries
    let (st, _) = arm(
        &c,
        &s,
        Method::PATCH,
        "/webhooks/idhook1",
        Some(json!({"properties": {"payloadFormat": "eventgrid"}})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = arm(&c, &s, Method::POST, "/webhooks/idhook1/ping", None).await;
    assert_eq!(st, 200);
    let got = rcv.wait_arrived("/h", 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body[0]["topic"], r_path(), "{}", got[0].body);
}

#[tokio::test]
async fn api_version_is_required_and_must_be_published() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path()).await;
    let c = client();
    let r = r_path();

    let (st, v) = call(&c, &s, Method::GET, &r, None).await;
    assert_eq!(st, 400, "{v}");
    assert_arm_error(&v, "MissingApiVersionParameter");
    for path in [
        format!("{r}/webhooks?api-version=2099-01-01"),
        format!("{r}?api-version=latest"),
        format!("/subscriptions/{SUB}?api-version=1"),
    ] {
        let (st, v) = call(&c, &s, Method::GET, &path, None).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert_arm_error(&v, "InvalidApiVersionParameter");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with("The api-version '"), "{m}");
        assert!(
            m.contains("2025-11-01"),
            "the supported versions are listed: {m}"
        );
    }
    for version in [
        "2017-10-01",
        "2019-05-01",
        "2021-09-01",
        "2022-12-01",
        "2023-07-01",
        "2025-04-01",
        "2025-11-01",
        "2026-09-01-preview",
    ] {
        let (st, v) = call(
            &c,
            &s,
            Method::GET,
            &format!("{r}/tokens?api-version={version}"),
            None,
        )
        .await;
        assert_eq!(st, 200, "{version}: {v}");
    }
    // every ARM route checks it, POST actions and lists included
    let (st, v) = call(&c, &s, Method::POST, &format!("{r}/listCredentials"), None).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = call(&c, &s, Method::GET, "/subscriptions", None).await;
    assert_eq!(st, 400, "{v}");
    assert_arm_error(&v, "MissingApiVersionParameter");
    // the /wharf/v1 alias needs none
    let (st, v) = call(&c, &s, Method::GET, "/wharf/v1/webhooks", None).await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test]
async fn every_failure_is_arm_shaped() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path()).await;
    let c = client();
    let r = r_path();

    // paths that are no endpoint, with access control on: the data plane's family answers in
    // the OCI shape (its challenge too), anything else in ARM's
    for path in ["/acr/v1", "/acr/v1/"] {
        let (st, v) = call(&c, &s, Method::GET, path, None).await;
        assert_eq!(st, 404, "{path}: {v}");
        assert_eq!(v["errors"][0]["code"], "NOT_FOUND", "{path}: {v}");
        let resp = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED", "{path}: {v}");
    }
    let (st, v) = call(&c, &s, Method::GET, "/nope", None).await;
    assert_eq!(st, 404, "{v}");
    assert_arm_error(&v, "NotFound");

    // unknown routes under /subscriptions
    for path in [
        format!("{r}/nosuch?{V}"),
        format!("{r}/webhooks/abcde/nosuch?{V}"),
        format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Other.Provider/things?{V}"),
        format!("/subscriptions/{SUB}/elsewhere?{V}"),
    ] {
        let (st, v) = call(&c, &s, Method::GET, &path, None).await;
        assert_eq!(st, 404, "{path}: {v}");
        assert_arm_error(&v, "NotFound");
    }
    // wrong methods
    for (m, path, allow) in [
        (Method::DELETE, format!("{r}?{V}"), "GET, PATCH"),
        (Method::GET, format!("{r}/listCredentials?{V}"), "POST"),
        (Method::POST, format!("{r}/webhooks?{V}"), "GET"),
        (
            Method::POST,
            format!("{r}/tokens/abcde?{V}"),
            "GET, PUT, PATCH, DELETE",
        ),
        (Method::PUT, format!("/subscriptions?{V}"), "GET"),
    ] {
        let resp = c
            .request(m.clone(), s.url(&path))
            .bearer_auth(MGMT)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{m} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{m} {path}");
        let v: Value = resp.json().await.unwrap();
        assert_arm_error(&v, "MethodNotAllowed");
    }
    // malformed JSON, a body of another type, a non-object
    for (path, body) in [
        (format!("{r}/webhooks/abcde?{V}"), "{\"location\": "),
        (format!("{r}/tokens/abcde?{V}"), "[1,"),
        (format!("{r}?{V}"), "not json"),
        (format!("{r}?{V}"), "[]"),
    ] {
        let m = if path.ends_with(&format!("{REG}?{V}")) {
            Method::PATCH
        } else {
            Method::PUT
        };
        let resp = c
            .request(m, s.url(&path))
            .bearer_auth(MGMT)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path} {body}");
        let v: Value = resp.json().await.unwrap();
        assert_arm_error(&v, "InvalidRequestContent");
    }
    let resp = c
        .put(s.url(&format!("{r}/webhooks/abcde?{V}")))
        .bearer_auth(MGMT)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_arm_error(&resp.json().await.unwrap(), "UnsupportedMediaType");
    // bad query values
    for q in ["$top=0", "$top=many", "$skipToken=%%%", "$skipToken=!!"] {
        let (st, v) = call(&c, &s, Method::GET, &format!("{r}/scopeMaps?{V}&{q}"), None).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert_arm_error(&v, "InvalidQueryParameterValue");
    }
    // WebhookCreateParameters.location is required at ARM's paths, on create and on replace;
    // the /wharf/v1 alias still defaults it to the server's region
    let rcv = Receiver::start().await;
    let props = json!({"serviceUri": rcv.url("/loc"), "actions": ["push"]});
    for body in [
        json!({"properties": props}),
        json!({"location": null, "properties": props}),
    ] {
        let (st, v) = arm(&c, &s, Method::PUT, "/webhooks/nolocation", Some(body)).await;
        assert_eq!(st, 400, "{v}");
        assert_arm_error(&v, "LocationRequired");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with("location: required"), "{m}");
        assert!(m.contains("westeurope"), "{m}");
    }
    let (st, _) = arm(&c, &s, Method::GET, "/webhooks/nolocation", None).await;
    assert_eq!(st, 404, "nothing was created");
    let resp = c
        .put(s.url("/wharf/v1/webhooks/nolocation"))
        .bearer_auth(MGMT)
        .json(&json!({"properties": props}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["location"], "westeurope");
    let (st, v) = arm(
        &c,
        &s,
        Method::PUT,
        "/webhooks/nolocation",
        Some(json!({"properties": props})),
    )
    .await;
    assert_eq!(st, 400, "a replace needs it too: {v}");
    assert_arm_error(&v, "LocationRequired");
    let (st, v) = arm(
        &c,
        &s,
        Method::PUT,
        "/webhooks/nolocation",
        Some(json!({"location": "westeurope", "properties": props})),
    )
    .await;
    assert_eq!(st, 200, "{v}");

    // a named property that is wrong, by its type or by its value, is InvalidParameter alike,
    // on every resource; only a body that is no JSON object is InvalidRequestContent
    let hook = |p: Value| {
        let mut props = json!({"serviceUri": rcv.url("/loc"), "actions": ["push"]});
        for (k, v) in p.as_object().unwrap() {
            props[k] = v.clone();
        }
        json!({"location": "westeurope", "properties": props})
    };
    for (m, rest, body, field) in [
        (
            Method::PUT,
            "/webhooks/typed",
            hook(json!({"scope": 5})),
            "properties.scope",
        ),
        (
            Method::PUT,
            "/webhooks/typed",
            hook(json!({"scope": "a:b:c"})),
            "scope",
        ),
        (
            Method::PUT,
            "/webhooks/typed",
            hook(json!({"actions": "push"})),
            "properties.actions",
        ),
        (
            Method::PUT,
            "/webhooks/typed",
            hook(json!({"actions": ["nope"]})),
            "actions",
        ),
        (
            Method::PUT,
            "/webhooks/typed",
            hook(json!({"status": true})),
            "properties.status",
        ),
        (
            Method::PUT,
            "/webhooks/typed",
            hook(json!({"status": "sometimes"})),
            "status",
        ),
        (
            Method::PUT,
            "/webhooks/typed",
            json!({"location": 1, "properties": {}}),
            "location",
        ),
        (
            Method::PUT,
            "/webhooks/typed",
            hook(json!({"nosuch": 1})),
            "properties.nosuch",
        ),
        (
            Method::PATCH,
            "/webhooks/nolocation",
            json!({"properties": {"scope": []}}),
            "properties.scope",
        ),
        (
            Method::PATCH,
            "",
            json!({"properties": {"adminUserEnabled": "yes"}}),
            "properties.adminUserEnabled",
        ),
        (
            Method::PATCH,
            "",
            json!({"properties": {"policies": {"retentionPolicy": {"days": 999}}}}),
            "properties.policies.retentionPolicy.days",
        ),
        (
            Method::PUT,
            "/tokens/typedtoken",
            json!({"properties": {"status": 5}}),
            "request body",
        ),
        (
            Method::PUT,
            "/scopeMaps/typedmap",
            json!({"properties": {"actions": "repositories/a/content/read"}}),
            "request body",
        ),
    ] {
        let (st, v) = arm(&c, &s, m.clone(), rest, Some(body.clone())).await;
        assert_eq!(st, 400, "{m} {rest} {body}: {v}");
        assert_arm_error(&v, "InvalidParameter");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{m} {rest} {body}: {msg}");
    }
    for (m, rest, body) in [
        (Method::PUT, "/webhooks/typed", "[]"),
        (Method::PUT, "/webhooks/typed", "5"),
        (Method::PUT, "/tokens/typedtoken", "[]"),
        (Method::PATCH, "", "\"x\""),
    ] {
        let resp = c
            .request(m.clone(), s.url(&format!("{r}{rest}?{V}")))
            .bearer_auth(MGMT)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{m} {rest} {body}");
        assert_arm_error(&resp.json().await.unwrap(), "InvalidRequestContent");
    }

    // invalid values in bodies
    let (st, v) = arm(&c, &s, Method::PUT, "/webhooks/ab", Some(json!({"location": "westeurope", "properties": {"serviceUri": "http://127.0.0.1:9/x", "actions": ["push"]}}))).await;
    assert_eq!(st, 400, "{v}");
    assert_arm_error(&v, "InvalidParameter");
    let (st, v) = arm(&c, &s, Method::GET, "/webhooks/nosuchhook", None).await;
    assert_eq!(st, 404, "{v}");
    assert_arm_error(&v, "ResourceNotFound");
    let (st, v) = arm(&c, &s, Method::GET, "/tokens/nosuchtoken", None).await;
    assert_eq!(st, 404, "{v}");
    assert_arm_error(&v, "ResourceNotFound");

    // authentication: the management token is the Bearer value; anything else is refused
    for auth in [
        Some("Bearer wharfm_not-the-token"),
        Some("Bearer "),
        None,
        Some("Basic Zm9vOmJhcg=="),
    ] {
        let mut req = c.get(s.url(&format!("{r}?{V}")));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let v: Value = resp.json().await.unwrap();
        assert_arm_error(&v, "InvalidAuthenticationToken");
    }
    // never the 409 that makes the SDK try to register the provider
    let (st, _) = arm(&c, &s, Method::GET, "", None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn registry_settings_and_policies_change_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path()).await;
    let c = client();

    let (st, before) = arm(&c, &s, Method::GET, "", None).await;
    assert_eq!(st, 200);
    // sending back the resource as read changes nothing and is accepted
    let (st, v) = arm(&c, &s, Method::PATCH, "", Some(before.clone())).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, before);

    let (st, v) = arm(
        &c,
        &s,
        Method::PATCH,
        "",
        Some(json!({"properties": {
            "adminUserEnabled": true,
            "anonymousPullEnabled": true,
            "policies": {
                "quarantinePolicy": {"status": "enabled"},
                "retentionPolicy": {"days": 30, "status": "Enabled"},
            },
        }})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let p = &v["properties"];
    assert_eq!(p["adminUserEnabled"], true);
    assert_eq!(p["anonymousPullEnabled"], true);
    assert_eq!(p["policies"]["quarantinePolicy"]["status"], "enabled");
    assert_eq!(p["policies"]["retentionPolicy"]["status"], "enabled");
    assert_eq!(p["policies"]["retentionPolicy"]["days"], 30);
    let stamped = p["policies"]["retentionPolicy"]["lastUpdatedTime"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&stamped).is_ok(),
        "{stamped}"
    );
    assert_eq!(p["provisioningState"], "Succeeded");

    // only what is given changes
    let (st, v) = arm(
        &c,
        &s,
        Method::PATCH,
        "",
        Some(json!({"properties": {"policies": {"retentionPolicy": {"days": 0}}}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["properties"]["policies"]["retentionPolicy"]["days"], 0);
    assert_eq!(
        v["properties"]["policies"]["retentionPolicy"]["status"],
        "enabled"
    );
    assert_eq!(
        v["properties"]["policies"]["quarantinePolicy"]["status"],
        "enabled"
    );

    // invalid values and read-only properties: 400 naming the property, nothing written
    for (body, needle) in [
        (
            json!({"properties": {"policies": {"retentionPolicy": {"days": 366}}}}),
            "retentionPolicy.days",
        ),
        (
            json!({"properties": {"policies": {"retentionPolicy": {"days": -1}}}}),
            "retentionPolicy.days",
        ),
        (
            json!({"properties": {"policies": {"retentionPolicy": {"days": 1.5}}}}),
            "retentionPolicy.days",
        ),
        (
            json!({"properties": {"policies": {"quarantinePolicy": {"status": "on"}}}}),
            "quarantinePolicy.status",
        ),
        (
            json!({"properties": {"adminUserEnabled": "yes"}}),
            "adminUserEnabled",
        ),
        (json!({"sku": {"name": "Basic"}}), "sku.name"),
        (
            json!({"properties": {"loginServer": "elsewhere.example"}}),
            "loginServer",
        ),
        (
            json!({"properties": {"policies": {"trustPolicy": {"status": "enabled"}}}}),
            "trustPolicy.status",
        ),
        (
            json!({"properties": {"networkRuleSet": {"defaultAction": "Deny"}}}),
            "networkRuleSet",
        ),
        (
            json!({"properties": {"adminUserEnabled": false, "policies": {"retentionPolicy": {"days": 400}}}}),
            "days",
        ),
    ] {
        let (st, v) = arm(&c, &s, Method::PATCH, "", Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {v}");
        assert_arm_error(&v, "InvalidParameter");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let (_, now) = arm(&c, &s, Method::GET, "", None).await;
    assert_eq!(
        now["properties"]["adminUserEnabled"], true,
        "a refused PATCH wrote nothing"
    );

    // the admin user it enabled works on the registry
    let (st, creds) = arm(&c, &s, Method::POST, "/listCredentials", None).await;
    assert_eq!(st, 200, "{creds}");
    assert_eq!(creds["username"], REG);
    let (st, regen) = arm(
        &c,
        &s,
        Method::POST,
        "/regenerateCredential",
        Some(json!({"name": "password2"})),
    )
    .await;
    assert_eq!(st, 200, "{regen}");
    assert_eq!(
        regen["passwords"][0]["value"],
        creds["passwords"][0]["value"]
    );
    assert_ne!(
        regen["passwords"][1]["value"],
        creds["passwords"][1]["value"]
    );

    // persisted: a restarted server shows the same registry
    let (_, shown) = arm(&c, &s, Method::GET, "", None).await;
    let dir = s.stop().await;
    let s = start(&dir).await;
    let (st, again) = arm(&c, &s, Method::GET, "", None).await;
    assert_eq!(st, 200);
    let mut a = again.clone();
    let mut b = shown.clone();
    // the login server is the address clients use, which changed with the port
    a["properties"]["loginServer"] = Value::Null;
    b["properties"]["loginServer"] = Value::Null;
    assert_eq!(a, b);
    assert_eq!(
        again["properties"]["policies"]["quarantinePolicy"]["status"],
        "enabled"
    );
    assert_eq!(
        again["properties"]["policies"]["retentionPolicy"]["days"],
        0
    );
}

#[tokio::test]
async fn webhooks_at_arm_paths_fire_and_page() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path()).await;
    let c = client();
    let rcv = Receiver::start().await;
    let create = json!({
        "location": "westeurope",
        "tags": {"team": "platform"},
        "properties": {
            "serviceUri": rcv.url("/deploy"),
            "customHeaders": {"Authorization": "Bearer s3cret"},
            "status": "enabled",
            "scope": "app:*",
            "actions": ["push", "delete"],
        },
    });

    // create (201) then replace (200), both with the whole provisioned resource
    let (st, w) = arm(
        &c,
        &s,
        Method::PUT,
        "/webhooks/deployhook",
        Some(create.clone()),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["properties"]["provisioningState"], "Succeeded");
    assert_eq!(w["name"], "deployhook");
    assert_eq!(w["type"], "Microsoft.ContainerRegistry/registries/webhooks");
    assert_eq!(w["location"], "westeurope");
    assert_eq!(w["tags"], json!({"team": "platform"}));
    assert!(
        !w.to_string().contains("s3cret") && !w.to_string().contains(&rcv.url("/deploy")),
        "{w}"
    );
    let (st, w) = arm(
        &c,
        &s,
        Method::PUT,
        "/webhooks/deployhook",
        Some(create.clone()),
    )
    .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["properties"]["scope"], "app:*");

    // PATCH, GET
    let (st, w) = arm(
        &c,
        &s,
        Method::PATCH,
        "/webhooks/deployhook",
        Some(json!({"tags": {"team": "ops"}, "properties": {"actions": ["push"]}})),
    )
    .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["tags"], json!({"team": "ops"}));
    assert_eq!(w["properties"]["actions"], json!(["push"]));
    let (st, g) = arm(&c, &s, Method::GET, "/webhooks/deployhook", None).await;
    assert_eq!(st, 200);
    assert_eq!(g, w);

    // getCallbackConfig: the only place the secrets show
    let (st, cb) = arm(
        &c,
        &s,
        Method::POST,
        "/webhooks/deployhook/getCallbackConfig",
        None,
    )
    .await;
    assert_eq!(st, 200, "{cb}");
    assert_eq!(cb["serviceUri"], rcv.url("/deploy"));
    assert_eq!(cb["customHeaders"]["Authorization"], "Bearer s3cret");

    // a push fires it (the admin user pushes)
    let (st, _) = arm(
        &c,
        &s,
        Method::PATCH,
        "",
        Some(json!({"properties": {"adminUserEnabled": true}})),
    )
    .await;
    assert_eq!(st, 200);
    let (_, creds) = arm(&c, &s, Method::POST, "/listCredentials", None).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{REG}:{}",
        creds["passwords"][0]["value"].as_str().unwrap()
    ));
    let pusher = reqwest::Client::builder()
        .default_headers({
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("authorization", format!("Basic {basic}").parse().unwrap());
            h
        })
        .build()
        .unwrap();
    push_image(&pusher, &s, "app", "v1", "arm").await;
    let got = rcv
        .wait_arrived("/deploy", 1, Duration::from_secs(10))
        .await;
    assert_eq!(got[0].body["action"], "push");
    assert_eq!(got[0].body["target"]["repository"], "app");
    assert_eq!(got[0].headers["authorization"], "Bearer s3cret");

    // ping, then listEvents pages through the history with GET nextLinks (as the SDK does)
    for _ in 0..3 {
        let (st, p) = arm(&c, &s, Method::POST, "/webhooks/deployhook/ping", None).await;
        assert_eq!(st, 200, "{p}");
        assert!(p["id"].as_str().is_some_and(uuid_like), "{p}");
    }
    rcv.wait_arrived("/deploy", 4, Duration::from_secs(10))
        .await;
    let mut events = Vec::new();
    for _ in 0..100 {
        let (st, v) = arm(
            &c,
            &s,
            Method::POST,
            "/webhooks/deployhook/listEvents?$top=3",
            None,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        events = v["value"].as_array().unwrap().clone();
        let mut next = v["nextLink"].as_str().map(str::to_owned);
        while let Some(n) = next {
            let (st, p) = call(&c, &s, Method::GET, &n, None).await;
            assert_eq!(st, 200, "{p}");
            events.extend(p["value"].as_array().unwrap().iter().cloned());
            next = p["nextLink"].as_str().map(str::to_owned);
        }
        if events.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 4, "{events:?}");
    // (history is recorded as attempts finish, so the push may come before or after the pings)
    let mut actions: Vec<&str> = events
        .iter()
        .map(|e| {
            e["eventRequestMessage"]["content"]["action"]
                .as_str()
                .unwrap()
        })
        .collect();
    actions.sort();
    assert_eq!(actions, ["ping", "ping", "ping", "push"]);
    assert!(
        events
            .iter()
            .all(|e| e["eventResponseMessage"]["statusCode"] == "200"),
        "{events:?}"
    );
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "no event twice across pages");

    // the alias is the same handler
    let (st, a) = call(&c, &s, Method::GET, "/wharf/v1/webhooks/deployhook", None).await;
    assert_eq!(st, 200);
    assert_eq!(a, g);

    // list pages
    for i in 0..4 {
        let (st, _) = arm(&c, &s, Method::PUT, &format!("/webhooks/pagehook{i}"), Some(json!({"location": "westeurope", "properties": {"serviceUri": rcv.url("/p"), "actions": ["push"]}}))).await;
        assert_eq!(st, 201);
    }
    let (all, pages) = all_pages(&c, &s, &format!("{}/webhooks?{V}&$top=2", r_path())).await;
    assert_eq!(pages, 3);
    let names: Vec<&str> = all.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "deployhook",
            "pagehook0",
            "pagehook1",
            "pagehook2",
            "pagehook3"
        ]
    );

    // DELETE: 200, then 204
    let r = c
        .delete(s.url(&format!("{}/webhooks/deployhook?{V}", r_path())))
        .bearer_auth(MGMT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(s.url(&format!("{}/webhooks/deployhook?{V}", r_path())))
        .bearer_auth(MGMT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (st, _) = arm(&c, &s, Method::GET, "/webhooks/deployhook", None).await;
    assert_eq!(st, 404);
}

fn uuid_like(s: &str) -> bool {
    wharf_core::arm::is_guid(s)
}

#[tokio::test]
async fn tokens_scope_maps_and_credentials_page_and_answer_as_arm_does() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path()).await;
    let c = client();
    let r = r_path();

    // scope maps: PUT 201 / 200, PATCH 200, paging across the five system maps and these
    for i in 0..7 {
        let (st, v) = arm(
            &c,
            &s,
            Method::PUT,
            &format!("/scopeMaps/team-{i}"),
            Some(
                json!({"properties": {"actions": [format!("repositories/team{i}/content/read")]}}),
            ),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["id"], format!("{r}/scopeMaps/team-{i}"));
        assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    }
    let (st, v) = arm(&c, &s, Method::PUT, "/scopeMaps/team-0", Some(json!({"properties": {"description": "replaced", "actions": ["repositories/team0/content/write", "repositories/team0/content/read"]}}))).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = arm(
        &c,
        &s,
        Method::PATCH,
        "/scopeMaps/team-0",
        Some(json!({"properties": {"description": "patched"}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["properties"]["description"], "patched");
    assert_eq!(v["properties"]["actions"].as_array().unwrap().len(), 2);
    let (maps, pages) = all_pages(&c, &s, &format!("{r}/scopeMaps?{V}&$top=5")).await;
    assert_eq!(pages, 3);
    assert_eq!(maps.len(), 12);
    let mut names: Vec<String> = maps
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 12, "no item twice: {names:?}");
    // the default page is 20; one page
    let (_, p) = all_pages(&c, &s, &format!("{r}/scopeMaps?{V}")).await;
    assert_eq!(p, 1);

    // tokens
    for i in 0..3 {
        let (st, v) = arm(&c, &s, Method::PUT, &format!("/tokens/citok-{i}"), Some(json!({"properties": {"scopeMapId": format!("{r}/scopeMaps/team-{i}"), "status": "enabled"}}))).await;
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["id"], format!("{r}/tokens/citok-{i}"));
        assert_eq!(
            v["properties"]["scopeMapId"],
            format!("{r}/scopeMaps/team-{i}")
        );
    }
    let (st, v) = arm(
        &c,
        &s,
        Method::PUT,
        "/tokens/citok-0",
        Some(json!({"properties": {"scopeMapId": format!("{r}/scopeMaps/_repositories_pull")}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = arm(
        &c,
        &s,
        Method::PATCH,
        "/tokens/citok-0",
        Some(json!({"properties": {"status": "disabled"}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["properties"]["status"], "disabled");
    let (tokens, pages) = all_pages(&c, &s, &format!("{r}/tokens?{V}&$top=2")).await;
    assert_eq!((tokens.len(), pages), (3, 2));

    let (st, g) = arm(
        &c,
        &s,
        Method::POST,
        "/generateCredentials",
        Some(json!({"tokenId": format!("{r}/tokens/citok-1")})),
    )
    .await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["username"], "citok-1");
    assert_eq!(g["passwords"].as_array().unwrap().len(), 2);
    let (st, t) = arm(&c, &s, Method::GET, "/tokens/citok-1", None).await;
    assert_eq!(st, 200);
    assert_eq!(
        t["properties"]["credentials"]["passwords"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        !t.to_string()
            .contains(g["passwords"][0]["value"].as_str().unwrap())
    );

    // a scope map in use cannot go; DELETE 200 then 204
    let (st, v) = arm(&c, &s, Method::DELETE, "/scopeMaps/team-1", None).await;
    assert_eq!(st, 409, "{v}");
    assert_arm_error(&v, "Conflict");
    for (path, want) in [
        ("/tokens/citok-1", 200),
        ("/tokens/citok-1", 204),
        ("/scopeMaps/team-1", 200),
        ("/scopeMaps/team-1", 204),
    ] {
        let resp = c
            .delete(s.url(&format!("{r}{path}?{V}")))
            .bearer_auth(MGMT)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{path}");
    }
}

/// `wharf …` against this server: the management token in the environment, nothing else.
fn wharf_cli(s: &Server, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args)
        .env("WHARF_SERVER", &s.base)
        .env("WHARF_MANAGEMENT_TOKEN", MGMT);
    for v in ["WHARF_USERNAME", "WHARF_PASSWORD", "WHARF_REGISTRY_NAME"] {
        cmd.env_remove(v);
    }
    cmd.output().unwrap()
}

/// The CLI needs no subscription or resource group: it learns the registry's ARM path from the
/// server, and shows whole lists however many pages they take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_a_configured_registry_and_reads_every_page() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path()).await;
    let c = client();
    for i in 0..25 {
        let (st, _) = arm(
            &c,
            &s,
            Method::PUT,
            &format!("/scopeMaps/clipage-{i:02}"),
            Some(json!({"properties": {"actions": [format!("repositories/r{i}/content/read")]}})),
        )
        .await;
        assert_eq!(st, 201);
    }
    let run = |args: Vec<String>| {
        // The CLI is a blocking child process; the server runs on the other worker.
        let out = tokio::task::block_in_place(|| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            wharf_cli(&s, &a)
        });
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = run(vec!["scope-map".into(), "list".into()]);
    assert_eq!(code, 0, "{err}");
    let maps: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        maps.as_array().unwrap().len(),
        30,
        "5 system maps and 25, over two pages"
    );
    assert!(
        maps[0]["id"].as_str().unwrap().starts_with(&r_path()),
        "{}",
        maps[0]
    );

    let (code, out, err) = run(vec!["registry".into(), "show".into()]);
    assert_eq!(code, 0, "{err}");
    let reg: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reg["id"], r_path());

    let (code, _, err) = run(vec![
        "webhook".into(),
        "create".into(),
        "-n".into(),
        "clihook1".into(),
        "--uri".into(),
        "http://127.0.0.1:9/x".into(),
        "--actions".into(),
        "push".into(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, w) = arm(&c, &s, Method::GET, "/webhooks/clihook1", None).await;
    assert_eq!(w["id"], format!("{}/webhooks/clihook1", r_path()));
    // without --location the CLI sends the registry's, as az does (ARM requires one)
    assert_eq!(w["location"], "westeurope");

    // the name, when given, must be the server's (any letter case)
    let (code, _, err) = run(vec![
        "token".into(),
        "list".into(),
        "--registry-name".into(),
        "FABRIKAM".into(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(vec![
        "token".into(),
        "list".into(),
        "--registry-name".into(),
        "contoso".into(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("has no registry \"contoso\"") && err.contains(REG),
        "{err}"
    );
}

/// In the open mode (no access control), ARM's parameterless actions come as the management
/// SDK sends them: POST, no body, no Content-Type. They work; what a cross-site page can make a
/// browser send (a form's types, or a body-less POST naming another origin) stays refused.
#[tokio::test]
async fn open_mode_takes_bodyless_actions_and_refuses_cross_site_posts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.auth.enabled = false;
    cfg.auth.management_token = String::new();
    let s = Server::start_config(cfg).await;
    let c = client();
    let receiver = Receiver::start().await;
    let r = r_path();
    // as the SDK sends them: no Authorization in the open mode, no body, no Content-Type
    let bare = |path: &str| c.post(s.url(&format!("{r}{path}?{V}")));

    let (st, v) = call(&c, &s, Method::PUT, &format!("{r}/webhooks/openhook?{V}"), Some(json!({
        "location": "westeurope",
        "properties": {"serviceUri": receiver.url("/open"), "customHeaders": {"X-Team": "a"}, "actions": ["push"]},
    })))
    .await;
    assert_eq!(st, 201, "{v}");

    let resp = bare("/listCredentials").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["username"], REG);
    assert_eq!(v["passwords"][0]["name"], "password");
    assert_eq!(v["passwords"][1]["name"], "password2");

    let resp = bare("/webhooks/openhook/getCallbackConfig")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["serviceUri"], receiver.url("/open"));
    assert_eq!(v["customHeaders"], json!({"X-Team": "a"}));

    let resp = bare("/webhooks/openhook/ping").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let ping_id = v["id"].as_str().unwrap().to_owned();
    let got = receiver
        .wait_arrived("/open", 1, Duration::from_secs(10))
        .await;
    let body = &got[0].body;
    assert_eq!(body["action"], "ping");
    assert_eq!(body["id"], ping_id);

    // the attempt is recorded once the delivery's answer is in
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let resp = bare("/webhooks/openhook/listEvents").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        if v["value"].as_array().is_some_and(|a| !a.is_empty())
            || tokio::time::Instant::now() > deadline
        {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        events["value"].as_array().map(Vec::len),
        Some(1),
        "{events}"
    );
    assert_eq!(events["value"][0]["id"], ping_id);

    // cross-site: a form's types, with a body or without, and a body-less POST with the
    // Origin of another site; nothing was regenerated or delivered by any of them
    let before: Value = bare("/listCredentials")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ping = format!("{r}/webhooks/openhook/ping?{V}");
    let regen = format!("{r}/regenerateCredential?{V}");
    for (path, ct, origin, body) in [
        (&ping, Some("application/x-www-form-urlencoded"), None, ""),
        (
            &ping,
            Some("multipart/form-data; boundary=x"),
            None,
            "--x--\r\n",
        ),
        (&ping, Some("text/plain"), None, ""),
        (&regen, Some("text/plain"), None, r#"{"name":"password"}"#),
        (&ping, None, Some("https://evil.example"), ""),
        (&ping, None, Some("null"), ""),
        (&regen, None, None, r#"{"name":"password"}"#),
    ] {
        let mut req = c.post(s.url(path)).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 415, "{path} {ct:?} {origin:?}");
        assert_arm_error(&resp.json().await.unwrap(), "UnsupportedMediaType");
    }
    let after: Value = bare("/listCredentials")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(receiver.arrived("/open").len(), 1);
    s.stop().await;
}
