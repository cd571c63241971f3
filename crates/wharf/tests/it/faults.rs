//! Faults and limits through the real server: the free-space floor, private data files,
//! start-up clean-up of half-made uploads, descriptor sizes, and webhooks that would loop back
//! into the registry or ping twice. (Real full disks, injected I/O errors and kill -9 at each
//! step run in `scripts/faults.sh`, which needs root for its tmpfs and strace.)

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Behaviour, Receiver, Server, client, fast_hooks, push_blob, sha256};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Only reached when a test fails.
const WAIT: Duration = Duration::from_secs(15);

fn config_in(dir: &std::path::Path, floor: &str) -> wharf::config::Config {
    let mut cfg = wharf::config::Config {
        data_dir: dir.to_owned(),
        webhooks: wharf::config::Webhooks::from_hooks(&fast_hooks()),
        ..Default::default()
    };
    cfg.limits.min_free_space = floor.to_owned();
    cfg
}

async fn create_hook(c: &reqwest::Client, s: &Server, name: &str, props: Value) -> (u16, Value) {
    let r = c
        .put(s.url(&format!("/wharf/v1/webhooks/{name}")))
        .json(&json!({ "properties": props }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn manifest(config: (&str, usize), layer: (&str, usize)) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.0, "size": layer.1}],
    }))
    .unwrap()
}

async fn put_manifest(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    tag: &str,
    body: &[u8],
) -> (u16, Value) {
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn error_code(v: &Value) -> &str {
    v["errors"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn writes_below_the_free_space_floor_get_507_and_reads_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    let rcv = Receiver::start().await;
    let s = Server::start_config(config_in(tmp.path(), "0")).await;
    let (st, _) = create_hook(
        &c,
        &s,
        "floorhook",
        json!({"serviceUri": rcv.url("/h"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201);
    let cd = push_blob(&c, &s, "floor/app", b"{}").await;
    let ld = push_blob(&c, &s, "floor/app", b"layer").await;
    let body = manifest((&cd, 2), (&ld, 5));
    assert_eq!(put_manifest(&c, &s, "floor/app", "v1", &body).await.0, 201);
    rcv.wait_for("/h", 1, WAIT).await;
    let dir = s.stop().await;

    // A floor no volume can meet: every write is refused cleanly, reads are served.
    let s = Server::start_config(config_in(&dir, "100%")).await;
    let r = c
        .post(s.url(&format!(
            "/v2/floor/app/blobs/uploads/?digest={}",
            sha256(b"more")
        )))
        .body("more")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "UNAVAILABLE");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("out of storage space"),
        "{v}"
    );
    let r = c
        .post(s.url("/v2/floor/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507, "starting an upload");
    let (st, v) = put_manifest(&c, &s, "floor/app", "v2", &body).await;
    assert_eq!((st, error_code(&v)), (507, "UNAVAILABLE"), "{v}");
    let (st, v) = create_hook(
        &c,
        &s,
        "another",
        json!({"serviceUri": rcv.url("/x"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 507, "{v}");
    let r = c
        .get(s.url("/v2/floor/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), body);
    let r = c
        .get(s.url(&format!("/v2/floor/app/blobs/{ld}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"layer");
    let tags: Value = c
        .get(s.url("/v2/floor/app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["v1"]), "the refused v2 left nothing");
    let dir = s.stop().await;

    // Space is back: the same push succeeds and fires its event.
    let s = Server::start_config(config_in(&dir, "0")).await;
    assert_eq!(put_manifest(&c, &s, "floor/app", "v2", &body).await.0, 201);
    let got = rcv.wait_for("/h", 2, WAIT).await;
    let tags: Vec<&str> = got
        .iter()
        .filter_map(|r| r.body["target"]["tag"].as_str())
        .collect();
    assert_eq!(tags, ["v1", "v2"], "no event for the refused push");
    s.stop().await;
}

#[tokio::test]
async fn the_data_directory_and_database_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start_config(config_in(&dir, "0")).await;
    let c = client();
    push_blob(&c, &s, "private/app", b"x").await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for f in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    s.stop().await;
}

#[tokio::test]
async fn half_made_upload_sessions_are_cleaned_up_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    let s = Server::start_config(config_in(tmp.path(), "0")).await;
    let start = |c: reqwest::Client, url: String| async move {
        let r = c.post(url).send().await.unwrap();
        assert_eq!(r.status(), 202);
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    let kept = start(c.clone(), s.url("/v2/up/app/blobs/uploads/")).await;
    let fileless = start(c.clone(), s.url("/v2/up/app/blobs/uploads/")).await;
    let dir = s.stop().await;
    let id = |loc: &str| loc.rsplit('/').next().unwrap().to_owned();
    // A crash between a start's two steps leaves a row without a file; between a cancel's,
    // a file without a row.
    std::fs::remove_file(dir.join("uploads").join(id(&fileless))).unwrap();
    let stray = dir.join("uploads").join("0123456789abcdef0123456789abcdef");
    std::fs::write(&stray, b"orphan").unwrap();

    let s = Server::start_config(config_in(&dir, "0")).await;
    assert!(!stray.exists(), "a file without a session is removed");
    let abs = |loc: &str| {
        if loc.starts_with('/') {
            s.url(loc)
        } else {
            loc.to_owned()
        }
    };
    let r = c.get(abs(&fileless)).send().await.unwrap();
    assert_eq!(r.status(), 404, "a session without a file is gone");
    let r = c.get(abs(&kept)).send().await.unwrap();
    assert_eq!(r.status(), 204, "a whole session survives");
    let ids: Vec<String> = std::fs::read_dir(dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(ids, [id(&kept)]);
    s.stop().await;
}

#[tokio::test]
async fn a_descriptor_whose_size_is_not_the_blobs_is_refused() {
    let s = Server::start().await;
    let c = client();
    let cd = push_blob(&c, &s, "sizes/app", b"{}").await;
    let ld = push_blob(&c, &s, "sizes/app", b"layer").await;
    for (cfg_size, layer_size) in [(2, 6), (3, 5), (2, 4)] {
        let (st, v) = put_manifest(
            &c,
            &s,
            "sizes/app",
            "v1",
            &manifest((&cd, cfg_size), (&ld, layer_size)),
        )
        .await;
        assert_eq!((st, error_code(&v)), (400, "MANIFEST_INVALID"), "{v}");
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains("size"),
            "{v}"
        );
    }
    let r = c
        .get(s.url("/v2/sizes/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing stored");
    assert_eq!(
        put_manifest(&c, &s, "sizes/app", "v1", &manifest((&cd, 2), (&ld, 5)))
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn a_webhook_aimed_at_this_registry_is_refused() {
    let s = Server::start().await;
    let c = client();
    let port = s.addr.port();
    for uri in [
        format!("http://127.0.0.1:{port}/wharf/v1/webhooks/loop/ping"),
        format!("http://localhost:{port}/v2/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let (st, v) = create_hook(
            &c,
            &s,
            "loophook",
            json!({"serviceUri": uri, "actions": ["push"]}),
        )
        .await;
        assert_eq!(st, 400, "{uri}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("serviceUri:") && msg.contains("own listener"),
            "{msg}"
        );
        assert!(
            !msg.contains(&port.to_string()),
            "the URI is never echoed: {msg}"
        );
    }
    let rcv = Receiver::start().await;
    let (st, _) = create_hook(
        &c,
        &s,
        "finehook",
        json!({"serviceUri": rcv.url("/h"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201);
    let r = c
        .patch(s.url("/wharf/v1/webhooks/finehook"))
        .json(&json!({"properties": {"serviceUri": format!("http://127.0.0.1:{port}/v2/")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an update to ourselves");
    let v: Value = c
        .post(s.url("/wharf/v1/webhooks/finehook/getCallbackConfig"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["serviceUri"],
        rcv.url("/h"),
        "the refused update changed nothing"
    );
}

#[tokio::test]
async fn a_ping_whose_client_disconnects_is_sent_and_recorded_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_config(config_in(tmp.path(), "0")).await;
    let c = client();
    let rcv = Receiver::start().await;
    // The receiver answers the ping slowly; the client gives up long before.
    rcv.set(
        "/slow",
        Behaviour {
            status: 200,
            delay: Duration::from_millis(800),
            ..Default::default()
        },
    );
    let (st, _) = create_hook(
        &c,
        &s,
        "pinged",
        json!({"serviceUri": rcv.url("/slow"), "actions": ["push"]}),
    )
    .await;
    assert_eq!(st, 201);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let r = impatient
        .post(s.url("/wharf/v1/webhooks/pinged/ping"))
        .header("content-type", "application/json")
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    let got = rcv.wait_for("/slow", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let ping_id = got[0].body["id"].as_str().unwrap().to_owned();
    let history = || async {
        let v: Value = c
            .post(s.url("/wharf/v1/webhooks/pinged/listEvents"))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].as_array().cloned().unwrap_or_default()
    };
    let mut events = Vec::new();
    for _ in 0..150 {
        events = history().await;
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 1, "recorded once: {events:?}");
    let counts = s.store.deliveries().delivery_counts().await.unwrap();
    assert_eq!(
        counts.get("pending"),
        None,
        "a ping never waits in the queue: {counts:?}"
    );
    let dir = s.stop().await;

    // After a restart the ping is not sent again. A push sent afterwards is a marker: the
    // dispatcher resumes interrupted deliveries before it handles new ones.
    rcv.set("/slow", Behaviour::default());
    let s = Server::start_config(config_in(&dir, "0")).await;
    let cd = push_blob(&c, &s, "pinged/app", b"{}").await;
    let ld = push_blob(&c, &s, "pinged/app", b"layer").await;
    assert_eq!(
        put_manifest(&c, &s, "pinged/app", "v1", &manifest((&cd, 2), (&ld, 5)))
            .await
            .0,
        201
    );
    let got = rcv.wait_for("/slow", 2, WAIT).await;
    let actions: Vec<&str> = got
        .iter()
        .map(|r| r.body["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["ping", "push"]);
    assert_eq!(got[0].body["id"], ping_id.as_str());
    s.stop().await;
}
