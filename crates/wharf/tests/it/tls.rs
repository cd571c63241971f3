//! HTTPS: a server started through `wharf::start` with a certificate from a throwaway CA,
//! pushed to and pulled from over HTTP/1.1 and HTTP/2, and its certificate replaced on disk
//! while it runs.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::Version;
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A TLS server with `leaf` installed in `dir`, its files checked every `reload_secs`.
async fn tls_server(dir: &Path, leaf: &Leaf, reload_secs: u64) -> Server {
    let (cert, key) = leaf.install(dir);
    Server::start_config(wharf::config::Config {
        data_dir: dir.join("data"),
        webhooks: wharf::config::Webhooks::from_hooks(&fast_hooks()),
        tls: wharf::config::Tls {
            cert: Some(cert),
            key: Some(key),
            reload_interval_secs: reload_secs,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn push_and_pull_over_https_with_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Wharf test CA");
    let s = tls_server(dir.path(), &ca.leaf(), 5).await;
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);
    let rcv = Receiver::start().await;
    let h1 = ca.client().http1_only().build().unwrap();
    // Offers h2 and http/1.1 by ALPN; the server prefers h2.
    let h2 = ca.client().build().unwrap();

    let r = h1
        .put(s.url("/wharf/v1/webhooks/tlshook"))
        .json(&json!({"properties": {"serviceUri": rcv.url("/h"), "actions": ["push"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    for (c, version, repo) in [
        (&h1, Version::HTTP_11, "tls/h1"),
        (&h2, Version::HTTP_2, "tls/h2"),
    ] {
        let r = c.get(s.url("/v2/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version, "{repo}");

        let (digest, body) = push_image(c, &s, repo, "v1", repo).await;
        let r = c
            .get(s.url(&format!("/v2/{repo}/manifests/v1")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version, "{repo}");
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(r.bytes().await.unwrap(), body);

        // push_image's layer is "layer-<salt>".
        let layer = format!("layer-{repo}");
        let r = c
            .get(s.url(&format!("/v2/{repo}/blobs/{}", sha256(layer.as_bytes()))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version, "{repo}");
        assert_eq!(r.bytes().await.unwrap(), layer.as_bytes());
    }

    // HTTP/2 requests carry :authority and no Host header; the event's host is the same.
    let got = rcv.wait_for("/h", 2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "one push event per protocol");
    for e in &got {
        assert_eq!(
            e.body["request"]["host"],
            s.addr.to_string(),
            "{}",
            e.body["target"]["repository"]
        );
    }
    s.stop().await;
}

/// What certificate a fresh connection is shown.
async fn presented(builder: reqwest::ClientBuilder, s: &Server) -> Option<Vec<u8>> {
    let c = builder.tls_info(true).build().unwrap();
    let r = c.get(s.url("/v2/")).send().await.ok()?;
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, ca_b) = (TestCa::new("CA A"), TestCa::new("CA B"));
    let (a, b) = (ca_a.leaf(), ca_b.leaf());
    let s = tls_server(dir.path(), &a, 1).await;
    let trusts_both = || {
        ca_a.client()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_b.pem().as_bytes()).unwrap())
    };
    assert_eq!(presented(trusts_both(), &s).await, Some(a.der.clone()));
    // A connection made with A, kept in this client's pool across the swap.
    let before = ca_a.client().http1_only().build().unwrap();
    let r = before.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    b.install(dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = presented(trusts_both(), &s).await;
        if got.as_deref() == Some(b.der.as_slice()) {
            break;
        }
        assert_eq!(got, Some(a.der.clone()), "A until the swap, then B");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The established connection lives on; a new one that trusts only A's CA is refused.
    let r = before.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let fresh = ca_a.client().build().unwrap();
    assert!(fresh.get(s.url("/v2/")).send().await.is_err());
    s.stop().await;
}

#[tokio::test]
async fn a_bad_certificate_or_key_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = TestCa::new("CA").leaf();
    let (cert, key) = leaf.install(dir.path());
    let try_start = |cert: Option<&Path>, key: Option<&Path>| {
        let cfg = wharf::config::Config {
            data_dir: dir.path().join("data"),
            tls: wharf::config::Tls {
                cert: cert.map(Path::to_owned),
                key: key.map(Path::to_owned),
                ..Default::default()
            },
            ..Default::default()
        };
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            match wharf::start(&cfg, listener).await {
                Ok(_) => panic!("started with a bad TLS configuration"),
                Err(e) => format!("{e:#}"),
            }
        }
    };

    let e = try_start(Some(&dir.path().join("missing.pem")), Some(&key)).await;
    assert!(e.contains("missing.pem"), "{e}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let e = try_start(Some(&garbage), Some(&key)).await;
    assert!(
        e.contains("garbage.pem") && e.contains("no CERTIFICATE"),
        "{e}"
    );
    let e = try_start(Some(&cert), Some(&garbage)).await;
    assert!(
        e.contains("garbage.pem") && e.contains("no private key"),
        "{e}"
    );
    let e = try_start(Some(&cert), None).await;
    assert!(e.contains("tls.key"), "{e}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the configuration is known to be good"
    );
}

#[tokio::test]
async fn the_webhook_cli_trusts_a_private_ca_given_with_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Wharf test CA");
    let s = tls_server(dir.path(), &ca.leaf(), 5).await;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let cli = |with_ca: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(["webhook", "list", "--server", &s.base]);
        if with_ca {
            cmd.env("WHARF_CA_CERT", &ca_file);
        } else {
            cmd.env_remove("WHARF_CA_CERT");
        }
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let o = cli(true).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
    // Without it, the server's certificate is not trusted.
    let o = cli(false).await.unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach") && err.contains("certificate"),
        "the cause is named: {err}"
    );
    s.stop().await;
}
