//! The real `wharf` binary: flags, environment, config file, JSON logs, graceful shutdown
//! on SIGTERM with a request in flight, and HTTPS with a certificate reloaded on SIGHUP.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wharf serve` on port 0 and reads the address it logged.
fn start(args: &[&str], envs: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.arg("serve")
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn wharf");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("wharf listening") {
            // Both formats carry addr=…; JSON as "addr":"…".
            let v: Option<serde_json::Value> = serde_json::from_str(&line).ok();
            addr = match v {
                Some(v) => v["fields"]["addr"].as_str().map(str::to_owned),
                None => line.split("addr=").nth(1).map(|s| {
                    s.split_whitespace()
                        .next()
                        .unwrap()
                        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
                        .to_owned()
                }),
            };
            break;
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child,
        addr: addr.expect("server logged its address"),
    }
}

#[tokio::test]
async fn serve_reads_flags_environment_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(
        &cfg,
        "region = \"westeurope\"\nlog_format = \"text\"\n[limits]\nmax_manifest_bytes = 1000\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let p = start(
        &["--listen", "127.0.0.1:0", "--config", cfg.to_str().unwrap()],
        &[
            ("WHARF_DATA_DIR", data.to_str().unwrap()),
            ("WHARF_LOG_FORMAT", "json"),
        ],
    );
    let c = reqwest::Client::new();
    let r = c
        .get(format!("http://{}/v2/", p.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        data.join("wharf.db").exists(),
        "the environment's data dir is used"
    );
    // The config file's manifest limit applies.
    let r = c
        .put(format!("http://{}/v2/a/manifests/v1", p.addr))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(vec![b' '; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // The config file's region is the default location of new webhooks.
    let r = c
        .put(format!("http://{}/wharf/v1/webhooks/regionhook", p.addr))
        .json(&serde_json::json!({"properties": {"serviceUri": "http://127.0.0.1:9/x", "actions": ["push"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["location"], "westeurope");
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "lisen = \"oops\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("parsing config file"), "{err}");
    // A flag's value is refused naming its key and the flag it came from.
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redirect-downloads"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.redirect_downloads (from --redirect-downloads)")
            && err.contains("needs blobs on object storage"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--config",
        "--log-format",
        "--tls-cert",
        "--tls-key",
        "--redirect-downloads",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
}

#[tokio::test]
async fn sigterm_lets_an_inflight_upload_finish() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let p = start(&["--listen", "127.0.0.1:0", "--data-dir", &data_dir], &[]);
    let base = format!("http://{}", p.addr);
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/v2/slow/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();

    // A body that trickles in: the first half now, the second after SIGTERM was sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream(rx));
    let url = format!("{base}{loc}");
    let req = tokio::spawn({
        let c = c.clone();
        async move {
            c.patch(url)
                .header("content-range", "0-1999")
                .body(body)
                .send()
                .await
        }
    });
    tx.send(Ok(vec![1u8; 1000])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = p.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(vec![2u8; 1000])).await.unwrap();
    drop(tx);
    let resp = req.await.unwrap().expect("in-flight request completes");
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["range"], "0-1999");

    // The server exits cleanly, and the upload is intact after a restart.
    let mut p = p;
    let status = p.child.wait().unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    let p2 = start(&["--listen", "127.0.0.1:0", "--data-dir", &data_dir], &[]);
    let r = c
        .get(format!("http://{}{loc}", p2.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-1999");
}

#[tokio::test]
async fn serve_https_from_flags_and_reload_the_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, ca_b) = (common::TestCa::new("CA A"), common::TestCa::new("CA B"));
    let (a, b) = (ca_a.leaf(), ca_b.leaf());
    let (cert, key) = a.install(dir.path());
    // No polling: only SIGHUP can make the server look at the files again.
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, "[tls]\nreload_interval_secs = 0\n").unwrap();
    let data = dir.path().join("data");
    let p = start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
        ],
        &[("WHARF_TLS_KEY", key.to_str().unwrap())],
    );
    let url = format!("https://{}/v2/", p.addr);
    let presented = || async {
        let c = ca_a
            .client()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_b.pem().as_bytes()).unwrap())
            .tls_info(true)
            .build()
            .unwrap();
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec)
    };
    assert_eq!(presented().await, Some(a.der.clone()));

    b.install(dir.path());
    let pid = p.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while presented().await != Some(b.der.clone()) {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not load the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGHUP reloaded; it did not end the process.
    let mut p = p;
    assert!(p.child.try_wait().unwrap().is_none());
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_second_process_on_the_same_data_directory_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let first = start(&["--listen", "127.0.0.1:0", "--data-dir", data], &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second server started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another Wharf process")
            && err.contains(&format!("pid {}", first.child.id())),
        "{err}"
    );
    // The first one still serves.
    let r = reqwest::get(format!("http://{}/v2/", first.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Once it is gone (even by SIGKILL), the directory is free again.
    drop(first);
    let again = start(&["--listen", "127.0.0.1:0", "--data-dir", data], &[]);
    let r = reqwest::get(format!("http://{}/v2/", again.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Issue 8, item 7: nested keys from `WHARF_<SECTION>_<KEY>` variables take effect, a flag
/// beats a variable, and a bad variable stops start-up naming itself and its key.
#[tokio::test]
async fn nested_settings_come_from_wharf_variables() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rx = common::Receiver::start().await;
    let token = "wharfm_env-test-management-token-0123456789abcdef";
    let p = start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[
            ("WHARF_AUTH_ENABLED", "true"),
            ("WHARF_AUTH_MANAGEMENT_TOKEN", token),
            // Access control on is not the open development mode: loopback targets are
            // refused unless this variable allows them.
            ("WHARF_WEBHOOKS_ALLOW_LOOPBACK", "allow"),
            ("WHARF_WEBHOOKS_USER_AGENT", "EnvAgent/1.0"),
            // The flag wins over the variable.
            ("WHARF_LISTEN", "127.0.0.1:1"),
        ],
    );
    assert_ne!(p.addr, "127.0.0.1:1");
    let c = reqwest::Client::new();
    let r = c
        .get(format!("http://{}/v2/", p.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "access control is on");
    let hook = format!("http://{}/wharf/v1/webhooks/envhook", p.addr);
    let r = c
        .put(&hook)
        .bearer_auth(token)
        .json(
            &serde_json::json!({"properties": {"serviceUri": rx.url("/env"), "actions": ["push"]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "the variable's management token is accepted"
    );
    let r = c
        .post(format!("{hook}/ping"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = rx.wait_for("/env", 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "the ping reached the loopback receiver");
    assert_eq!(got[0].headers["user-agent"], "EnvAgent/1.0");
}

#[test]
fn a_bad_wharf_variable_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{envs:?} must stop start-up");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = serve(&[("WHARF_WEBHOOKS_TIMEOUT_SECS", "0")]);
    assert!(
        e.contains("webhooks.timeout_secs (from WHARF_WEBHOOKS_TIMEOUT_SECS) is 0"),
        "{e}"
    );
    let e = serve(&[("WHARF_AUTH_ACCESS_TOKEN_LIFETIME_SECS", "soon")]);
    assert!(e.contains("WHARF_AUTH_ACCESS_TOKEN_LIFETIME_SECS"), "{e}");
    let e = serve(&[("WHARF_WEBHOOKS_TIMEOUT", "5")]);
    assert!(
        e.contains("WHARF_WEBHOOKS_TIMEOUT:") && e.contains("WHARF_WEBHOOKS_TIMEOUT_SECS"),
        "{e}"
    );
    let e = serve(&[("WHARF_SECRET_KEY", "not shown\tever")]);
    assert!(
        e.contains("WHARF_SECRET_KEY") && !e.contains("not shown"),
        "{e}"
    );
    assert!(
        !data.join("wharf.db").exists(),
        "nothing was created before the configuration was checked"
    );
}

#[test]
fn a_bad_blob_store_stops_start_up_naming_the_key_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(args);
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AZURE_STORAGE_CONNECTION_STRING",
            "WHARF_STORAGE_BLOB_STORE",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            !out.status.success(),
            "{args:?} {envs:?} must stop start-up"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = serve(&["--blob-store", "gs://bucket"], &[]);
    assert!(
        e.contains("storage.blob_store (from --blob-store) is \"gs://bucket\""),
        "{e}"
    );
    let e = serve(&[], &[("WHARF_STORAGE_BLOB_STORE", "s3://No_Such")]);
    assert!(
        e.contains("storage.blob_store (from WHARF_STORAGE_BLOB_STORE)"),
        "{e}"
    );
    // Plain http carries signed requests: only to loopback. Refused before any request.
    let secret = "TopSecretValue0123456789";
    let e = serve(
        &["--blob-store", "s3://wharf-test/p"],
        &[
            ("AWS_ENDPOINT_URL", "http://s3.invalid:9000"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
    );
    assert!(
        e.contains("storage.blob_store") && e.contains("not loopback"),
        "{e}"
    );
    assert!(!e.contains(secret), "{e}");
    let e = serve(&["--blob-store", "azure://wharf-test"], &[]);
    assert!(
        e.contains("storage.blob_store") && e.contains("AZURE_STORAGE_CONNECTION_STRING"),
        "{e}"
    );
    let key = "U2VjcmV0S2V5VmFsdWVOb3RUb0JlU2hvd24=";
    let e = serve(
        &["--blob-store", "azure://wharf-test"],
        &[(
            "AZURE_STORAGE_CONNECTION_STRING",
            &format!("AccountName=acct;AccountKey={key};BlobEndpoint=http://blob.invalid/acct"),
        )],
    );
    assert!(
        e.contains("storage.blob_store") && e.contains("not loopback"),
        "{e}"
    );
    assert!(!e.contains(key) && !e.contains("U2VjcmV0"), "{e}");
    assert!(
        !data.join("wharf.db").exists(),
        "nothing was created before the blob store's settings were checked"
    );
    // Well-formed, but nothing answers there: start-up stops, naming the key.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = serve(
        &["--blob-store", "s3://wharf-test/p"],
        &[
            ("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}")),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
    );
    assert!(e.contains("storage.blob_store (s3://wharf-test/p)"), "{e}");
    assert!(!e.contains(secret), "{e}");
}
