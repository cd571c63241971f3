//! Several nodes over one database (PostgreSQL) and one bucket (issue 8, item 4): what one
//! node writes, another serves and acts on. Each test starts two servers through the same
//! `wharf::start` as `wharf serve`, on their own data directories and node ids, sharing the
//! database and the blob prefix.
//!
//! They need `WHARF_TEST_DATABASE=postgres` and `WHARF_TEST_BLOB_STORE` (object storage):
//! `scripts/backends.sh`, which `.ci/run` calls, runs them so. Without those (SQLite and a
//! data directory are one process's by design) each test says so and returns.

use crate::common;

use std::time::{Duration, Instant};

use common::{Receiver, Server, TEST_SECRET_KEY, push_image, sha256};
use reqwest::Method;
use serde_json::{Value, json};

const MGMT: &str = "wharfm_nodes-management-token-0123456789abcdefghijklm";
const R: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wharf/providers/Microsoft.ContainerRegistry/registries/wharf";

/// Two nodes over one database and one blob prefix; None (with a note) when the run has no
/// shared backend.
async fn two_nodes(
    test: &str,
    auth: bool,
) -> Option<(Server, Server, tempfile::TempDir, tempfile::TempDir)> {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (Some(db), Some(blobs)) = (
        common::test_database(a_dir.path()).await,
        common::test_blob_store(a_dir.path()),
    ) else {
        eprintln!(
            "{test}: needs WHARF_TEST_DATABASE=postgres and WHARF_TEST_BLOB_STORE \
             (scripts/backends.sh); not run"
        );
        return None;
    };
    let node = |dir: &std::path::Path, id: &str| {
        let mut cfg = wharf::config::Config {
            data_dir: dir.to_owned(),
            webhooks: wharf::config::Webhooks::from_hooks(&common::fast_hooks()),
            ..Default::default()
        };
        cfg.storage.database = db.clone();
        cfg.storage.blob_store = blobs.clone();
        cfg.auth.secret_key = TEST_SECRET_KEY.into();
        cfg.node.id = id.into();
        if auth {
            cfg.auth.enabled = true;
            cfg.auth.management_token = MGMT.into();
        }
        cfg
    };
    let a = Server::start_config(node(a_dir.path(), "node-a")).await;
    let b = Server::start_config(node(b_dir.path(), "node-b")).await;
    Some((a, b, a_dir, b_dir))
}

#[tokio::test]
async fn a_webhook_created_on_one_node_fires_for_a_push_on_another() {
    let Some((a, b, _ad, _bd)) = two_nodes(
        "a_webhook_created_on_one_node_fires_for_a_push_on_another",
        false,
    )
    .await
    else {
        return;
    };
    let rcv = Receiver::start().await;
    let c = reqwest::Client::new();
    let r = c
        .put(a.url("/wharf/v1/webhooks/acrossnodes"))
        .json(&json!({"properties": {"serviceUri": rcv.url("/across"), "actions": ["push"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The other node learns of it through the database's notification, not a restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let got = loop {
        n += 1;
        push_image(&c, &b, "nodes/app", &format!("v{n}"), &format!("s{n}")).await;
        let got = rcv
            .wait_arrived("/across", 1, Duration::from_millis(500))
            .await;
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
    };
    assert!(
        !got.is_empty(),
        "a push on node-b raised no event for a webhook created on node-a"
    );
    let ev = &got[0].body;
    assert_eq!(ev["action"], "push");
    assert_eq!(ev["target"]["repository"], "nodes/app");
}

#[tokio::test]
async fn an_upload_spans_both_nodes_and_either_serves_the_image() {
    let Some((a, b, _ad, _bd)) = two_nodes(
        "an_upload_spans_both_nodes_and_either_serves_the_image",
        false,
    )
    .await
    else {
        return;
    };
    let c = reqwest::Client::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = sha256(&data);
    // POST on a, PATCHes alternating b, a, b, the finishing PUT on a.
    let r = c
        .post(a.url("/v2/nodes/chunked/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut location = r.headers()["location"].to_str().unwrap().to_owned();
    let nodes = [&b, &a, &b];
    let mut start = 0;
    for (i, chunk) in data.chunks(100_000).enumerate() {
        let r = c
            .patch(nodes[i].url(&location))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "PATCH {i} on the other node");
        location = r.headers()["location"].to_str().unwrap().to_owned();
        start += chunk.len();
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(a.url(&format!("{location}{sep}digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    for s in [&a, &b] {
        let got = c
            .get(s.url(&format!("/v2/nodes/chunked/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(sha256(&got.bytes().await.unwrap()), digest);
    }
    // A manifest pushed through one node is pulled from the other.
    let (md, body) = push_image(&c, &a, "nodes/app", "v1", "x").await;
    let got = c
        .get(b.url("/v2/nodes/app/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["docker-content-digest"], md.as_str());
    assert_eq!(got.bytes().await.unwrap().to_vec(), body);
}

async fn mgmt(c: &reqwest::Client, s: &Server, m: Method, path: &str, body: Value) -> (u16, Value) {
    let r = c
        .request(m, s.url(&format!("{R}{path}?api-version=2025-11-01")))
        .bearer_auth(MGMT)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_token_disabled_on_one_node_is_refused_by_the_other() {
    let Some((a, b, _ad, _bd)) =
        two_nodes("a_token_disabled_on_one_node_is_refused_by_the_other", true).await
    else {
        return;
    };
    let c = reqwest::Client::new();
    let (st, v) = mgmt(
        &c,
        &a,
        Method::PUT,
        "/tokens/puller",
        json!({"properties": {"scopeMapId": format!("{R}/scopeMaps/_repositories_pull")}}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = mgmt(
        &c,
        &a,
        Method::POST,
        "/generateCredentials",
        json!({"tokenId": format!("{R}/tokens/puller"), "name": "password1"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let password = v["passwords"][0]["value"].as_str().unwrap().to_owned();
    let login = |s: &Server| {
        c.get(s.url("/v2/"))
            .basic_auth("puller", Some(password.clone()))
            .send()
    };
    assert_eq!(
        login(&b).await.unwrap().status(),
        200,
        "node-b knows the token"
    );
    let (st, v) = mgmt(
        &c,
        &a,
        Method::PATCH,
        "/tokens/puller",
        json!({"properties": {"status": "disabled"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(login(&a).await.unwrap().status(), 401, "node-a refuses it");
    // node-b cached the login; the notification makes it forget.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = login(&b).await.unwrap().status();
        if st == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-b still accepts a token node-a disabled: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `storage.database` with `sslmode=verify-full&sslrootcert=…`: the node reaches PostgreSQL
/// over TLS and verifies its certificate (scripts/services.sh runs PostgreSQL with TLS on and a
/// certificate for 127.0.0.1 signed by a CA of its own), and every connection it holds is
/// encrypted (`pg_stat_ssl`). A CA that did not sign the server's certificate stops start-up
/// with a message that names the key and never the URL.
#[tokio::test]
async fn a_node_reaches_postgresql_over_verified_tls() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let (Some(db), Ok(ca)) = (
        common::test_database(dir.path()).await,
        std::env::var("WHARF_TEST_POSTGRES_CA"),
    ) else {
        eprintln!(
            "a_node_reaches_postgresql_over_verified_tls: needs WHARF_TEST_DATABASE=postgres \
             and WHARF_TEST_POSTGRES_CA (scripts/backends.sh); not run"
        );
        return;
    };
    let cfg = |url: String| {
        let mut cfg = wharf::config::Config {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        cfg.storage.database = url;
        cfg.auth.secret_key = TEST_SECRET_KEY.into();
        cfg
    };
    let name = db.rsplit('/').next().unwrap().to_owned();

    // A CA of another: the server's certificate does not verify, and nothing starts.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, common::TestCa::new("not the server's CA").pem()).unwrap();
    let wrong = format!("{db}?sslmode=verify-full&sslrootcert={}", other.display());
    let msg = start_error(&cfg(wrong)).await;
    assert!(msg.contains("storage.database"), "{msg}");
    assert!(
        !msg.contains("postgres://"),
        "the URL must not be shown: {msg}"
    );

    let url = format!("{db}?sslmode=verify-full&sslrootcert={ca}");
    let s = Server::start_config(cfg(url)).await;
    let (digest, _) = push_image(&common::client(), &s, "tls/app", "v1", "over tls").await;
    let admin = std::env::var("WHARF_TEST_POSTGRES_URL").unwrap();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let ssl: Vec<bool> = sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1 AND a.backend_type = 'client backend'",
    )
    .bind(&name)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!ssl.is_empty(), "the node holds connections to {name}");
    assert!(ssl.iter().all(|on| *on), "every connection is TLS: {ssl:?}");
    assert_serves(&common::client(), &s, "tls/app", "v1", &digest).await;
}

/// The error with which `wharf::start` refuses `cfg`, with its causes (start-up must fail).
async fn start_error(cfg: &wharf::config::Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match wharf::start(cfg, listener).await {
        Ok(_) => panic!(
            "{} with {} must not start",
            cfg.data_dir.display(),
            cfg.storage.database
        ),
        Err(e) => format!("{e:#}"),
    }
}

/// `s` serves the manifest `repo:tag` with this digest.
async fn assert_serves(c: &reqwest::Client, s: &Server, repo: &str, tag: &str, digest: &str) {
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        digest
    );
}

/// With blobs in a data directory, a PostgreSQL database and that directory are bound to each
/// other. A second node with a directory of its own is refused at start-up (it would
/// acknowledge blobs the first node cannot serve), and so is the directory pointed at another
/// database, whose garbage collection would delete every blob there (it links none of them).
/// Neither refusal binds anything: the first node restarts on its directory and serves what
/// it had, and the second directory still starts with a database of its own.
#[tokio::test]
async fn a_database_and_the_data_directory_of_its_blobs_are_bound_to_each_other() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (Some(db), Some(other_db)) = (
        common::test_database(a_dir.path()).await,
        common::test_database(b_dir.path()).await,
    ) else {
        eprintln!(
            "a_database_and_the_data_directory_of_its_blobs_are_bound_to_each_other: needs \
             WHARF_TEST_DATABASE=postgres (scripts/backends.sh); not run"
        );
        return;
    };
    let cfg = |dir: &std::path::Path, url: &str| {
        let mut cfg = wharf::config::Config {
            data_dir: dir.to_owned(),
            ..Default::default()
        };
        cfg.storage.database = url.to_owned();
        cfg.auth.secret_key = TEST_SECRET_KEY.into();
        cfg
    };
    let c = common::client();
    let a = Server::start_exact(cfg(a_dir.path(), &db)).await;
    let (digest, _) = push_image(&c, &a, "bound/app", "v1", "in a's directory").await;
    a.stop().await;

    for (dir, url, want) in [
        (
            b_dir.path(),
            &db,
            "this database's blobs are in another data directory than",
        ),
        (
            a_dir.path(),
            &other_db,
            "holds the blobs of another Wharf database",
        ),
    ] {
        let msg = start_error(&cfg(dir, url)).await;
        assert!(msg.contains(want), "{msg}");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
    }

    let a = Server::start_exact(cfg(a_dir.path(), &db)).await;
    assert_serves(&c, &a, "bound/app", "v1", &digest).await;
    let b = Server::start_exact(cfg(b_dir.path(), &other_db)).await;
    push_image(&c, &b, "bound/other", "v1", "in b's directory").await;
    a.stop().await;

    // SQLite on a directory PostgreSQL's blobs are in, and PostgreSQL on a SQLite registry's
    // directory: each would link none of the other's blobs, and collect them all.
    let sqlite_dir = tempfile::tempdir().unwrap();
    let s = Server::start_exact(wharf::config::Config {
        data_dir: sqlite_dir.path().to_owned(),
        ..Default::default()
    })
    .await;
    push_image(&c, &s, "sqlite/app", "v1", "in SQLite's directory").await;
    s.stop().await;
    // A database of its own, never bound: only the directory's SQLite registry refuses it.
    let fresh_db = common::test_database(sqlite_dir.path()).await.unwrap();
    let sqlite = |dir: &std::path::Path| wharf::config::Config {
        data_dir: dir.to_owned(),
        ..Default::default()
    };
    for (cfg, want) in [
        (
            sqlite(a_dir.path()),
            "holds the blobs of a PostgreSQL database",
        ),
        (
            cfg(sqlite_dir.path(), &fresh_db),
            "holds a SQLite registry (wharf.db)",
        ),
    ] {
        let msg = start_error(&cfg).await;
        assert!(msg.contains(want), "{msg}");
        assert!(msg.contains(&cfg.data_dir.display().to_string()), "{msg}");
    }
    assert!(
        !a_dir.path().join("wharf.db").exists(),
        "the refusal came before SQLite created its database"
    );
}
