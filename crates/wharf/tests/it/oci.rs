//! The OCI distribution API against a real server over real HTTP: every behaviour the
//! conformance suites (v1.1.1 and the rewritten suite on the spec's main branch) check, plus
//! Wharf's own guarantees (bad input → 4xx, restart safety, idempotent finish).

use crate::common;

use common::{Server, client, push_blob, push_image, sha256, sha512};
use serde_json::{Value, json};

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("error body must be JSON");
    v["errors"][0]["code"]
        .as_str()
        .expect("errors[0].code")
        .to_owned()
}

#[tokio::test]
async fn base_endpoint_answers_200_with_api_version() {
    let s = Server::start().await;
    let r = client().get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
}

#[tokio::test]
async fn missing_blob_and_manifest_are_404_with_oci_errors() {
    let s = Server::start().await;
    let c = client();
    let d = sha256(b"nope");
    let r = c
        .get(s.url(&format!("/v2/a/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = c
        .head(s.url(&format!("/v2/a/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(s.url("/v2/a/manifests/latest")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = c
        .get(s.url(&format!("/v2/a/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn malformed_names_digests_and_tags_are_400_not_500() {
    let s = Server::start().await;
    let c = client();
    for (path, code) in [
        ("/v2/a/blobs/sha256:zzz", "DIGEST_INVALID"),
        (
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            "DIGEST_INVALID",
        ),
        ("/v2/a/manifests/sha256:123", "DIGEST_INVALID"),
        ("/v2/Upper/tags/list", "NAME_INVALID"),
        ("/v2/a/referrers/nothex", "DIGEST_INVALID"),
    ] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(error_code(r).await, code, "{path}");
    }
    // A reference that is no valid tag can name nothing: reads 404 (the v1.1.1 suite asks
    // for that), a PUT is refused as TAG_INVALID.
    let r = c
        .get(s.url("/v2/a/manifests/.INVALID_MANIFEST_NAME"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = c.head(s.url("/v2/a/manifests/-tag")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .put(s.url("/v2/a/manifests/-tag"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "TAG_INVALID");
    // Upload PUT with a malformed or missing digest.
    let r = c.post(s.url("/v2/a/blobs/uploads/")).send().await.unwrap();
    let loc = header(&r, "location").unwrap();
    let r = c
        .put(s.url(&format!("{loc}?digest=sha256:xyz")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = c.put(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Unsupported method.
    let r = c.patch(s.url("/v2/a/tags/list")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

#[tokio::test]
async fn monolithic_post_then_put_and_post_with_body() {
    let s = Server::start().await;
    let c = client();
    let data = b"monolithic blob".to_vec();
    let d = sha256(&data);
    let r = c
        .post(s.url("/v2/mono/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location").unwrap();
    assert!(header(&r, "docker-upload-uuid").is_some());
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(s.url(&format!("{loc}{sep}digest={d}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location").unwrap(),
        format!("/v2/mono/blobs/{d}")
    );
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    let r = c
        .get(s.url(&format!("/v2/mono/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);

    let d2 = push_blob(&c, &s, "mono", b"single request").await;
    let r = c
        .head(s.url(&format!("/v2/mono/blobs/{d2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("14"));
}

/// Every way a blob's bytes can arrive, around the size up to which a request that carries
/// them all is read into memory and written once (on object storage; `WHARF_TEST_BLOB_STORE`
/// runs this there too): a monolithic POST, a session finished by one PUT with the whole
/// body, and a session whose PATCH staged the bytes first. Each reads back whole.
#[tokio::test]
async fn whole_requests_below_and_above_the_in_memory_size_and_staged_sessions_read_back() {
    let s = Server::start().await;
    let c = client();
    for (i, len) in [(1u8, 3 << 20), (2, (16 << 20) + 1)] {
        for way in ["monolithic", "one PUT", "PATCH then PUT"] {
            let data: Vec<u8> = (0..len)
                .map(|k: usize| (k as u8).wrapping_mul(7).wrapping_add(i))
                .chain(way.bytes())
                .collect();
            let d = sha256(&data);
            let r = if way == "monolithic" {
                c.post(s.url(&format!("/v2/sizes/blobs/uploads/?digest={d}")))
                    .body(data.clone())
                    .send()
                    .await
                    .unwrap()
            } else {
                let r = c
                    .post(s.url("/v2/sizes/blobs/uploads/"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202, "{way}");
                let mut loc = header(&r, "location").unwrap();
                let mut last = data.clone();
                if way == "PATCH then PUT" {
                    let r = c
                        .patch(s.url(&loc))
                        .header("content-type", "application/octet-stream")
                        .body(data[..len / 2].to_vec())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202, "{way}");
                    loc = header(&r, "location").unwrap();
                    last = data[len / 2..].to_vec();
                }
                let sep = if loc.contains('?') { '&' } else { '?' };
                c.put(s.url(&format!("{loc}{sep}digest={d}")))
                    .header("content-type", "application/octet-stream")
                    .body(last)
                    .send()
                    .await
                    .unwrap()
            };
            assert_eq!(r.status(), 201, "{way}, {} bytes", data.len());
            let r = c
                .get(s.url(&format!("/v2/sizes/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{way}, {} bytes", data.len());
            assert!(
                r.bytes().await.unwrap() == data,
                "{way}, {} bytes: the blob read back differs",
                data.len()
            );
        }
    }
}

#[tokio::test]
async fn digest_mismatch_is_rejected_and_nothing_is_published() {
    let s = Server::start().await;
    let c = client();
    let wrong = sha256(b"other");
    let r = c
        .post(s.url(&format!("/v2/a/blobs/uploads/?digest={wrong}")))
        .body("content")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = c
        .head(s.url(&format!("/v2/a/blobs/{wrong}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .head(s.url(&format!("/v2/a/blobs/{}", sha256(b"content"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn streamed_upload_without_content_range() {
    let s = Server::start().await;
    let c = client();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = sha256(&data);
    let r = c
        .post(s.url("/v2/stream/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location").unwrap();
    let r = c
        .patch(s.url(&loc))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        header(&r, "range").unwrap(),
        format!("0-{}", data.len() - 1)
    );
    let loc = header(&r, "location").unwrap();
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c
        .get(s.url(&format!("/v2/stream/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.to_vec(), data);
}

#[tokio::test]
async fn chunked_upload_enforces_order_and_reports_status() {
    let s = Server::start().await;
    let c = client();
    let data: Vec<u8> = (0..2048u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = sha256(&data);
    let r = c
        .post(s.url("/v2/chunk/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location").unwrap();

    // A chunk that does not start at 0 is out of order.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "1024-2047")
        .header("content-type", "application/octet-stream")
        .body(data[1024..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));

    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-1023")
        .body(data[..1024].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-1023"));
    let loc = header(&r, "location").unwrap();

    // Re-sending the previous chunk is out of order too.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-1023")
        .body(data[..1024].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range").as_deref(), Some("0-1023"));

    // Status: 204 with Location and Range.
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-1023"));
    assert!(header(&r, "location").is_some());

    // A chunk whose length disagrees with its range is refused and changes nothing.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "1024-2047")
        .body(data[1024..1500].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(header(&r, "range").as_deref(), Some("0-1023"));

    let r = c
        .patch(s.url(&loc))
        .header("content-range", "1024-2047")
        .body(data[1024..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-2047"));
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Finishing again with the same digest is idempotent.
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c
        .get(s.url(&format!("/v2/chunk/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.to_vec(), data);
}

#[tokio::test]
async fn final_chunk_may_travel_in_the_put() {
    let s = Server::start().await;
    let c = client();
    let data = b"0123456789abcdef".to_vec();
    let d = sha256(&data);
    let loc = header(
        &c.post(s.url("/v2/fin/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    )
    .unwrap();
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-7")
        .body(data[..8].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .header("content-range", "8-15")
        .body(data[8..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn upload_cancel_and_unknown_sessions() {
    let s = Server::start().await;
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/cancel/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    )
    .unwrap();
    let r = c.delete(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = c
        .patch(s.url("/v2/cancel/blobs/uploads/../../etc"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let r = c
        .patch(s.url("/v2/cancel/blobs/uploads/00000000000000000000000000000000"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A session belongs to its repository.
    let loc = header(
        &c.post(s.url("/v2/one/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    )
    .unwrap();
    let other = loc.replace("/v2/one/", "/v2/two/");
    let r = c.get(s.url(&other)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// Abandoned sessions are expired with their bytes, whichever blob store holds them: the
/// expiry reads how long a session has been idle from the blob store, never a file's time.
#[tokio::test]
async fn abandoned_upload_sessions_expire_with_their_bytes() {
    let cfg = |dir: &std::path::Path| wharf::config::Config {
        data_dir: dir.to_owned(),
        limits: wharf::config::Limits {
            upload_expiry_secs: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_config(cfg(tmp.path())).await;
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/expiry/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    )
    .unwrap();
    let r = c
        .patch(s.url(&loc))
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = loc.rsplit('/').next().unwrap().to_owned();
    assert!(
        s.store
            .blobs()
            .upload_sessions()
            .await
            .unwrap()
            .iter()
            .any(|x| x.id == id)
    );
    s.stop().await;
    // Older than the expiry, and idle for as long.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // The expiry runs at start-up (then every ten minutes).
    let s = Server::start_config(cfg(tmp.path())).await;
    // The session's row goes first, then its bytes (on object storage a round trip later).
    // A pass that meets a busy store, or finds the session held by one of the status
    // requests below (on a shared store they list its bytes under its lock), is retried
    // 5 s later: up to 20 s.
    let (mut gone, mut bytes_gone) = (false, false);
    for _ in 0..200 {
        gone = c.get(s.url(&loc)).send().await.unwrap().status() == 404;
        bytes_gone = !s
            .store
            .blobs()
            .upload_sessions()
            .await
            .unwrap()
            .iter()
            .any(|x| x.id == id);
        if gone && bytes_gone {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the abandoned session was not expired");
    assert!(bytes_gone, "its bytes are gone from the blob store");
}

#[tokio::test]
async fn upload_offset_survives_a_restart() {
    let s = Server::start().await;
    let c = client();
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 199) as u8).collect();
    let d = sha256(&data);
    let loc = header(
        &c.post(s.url("/v2/restart/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    )
    .unwrap();
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-2047")
        .body(data[..2048].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let dir = s.stop().await;

    let s = Server::start_in(&dir, common::fast_hooks()).await;
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-2047"));
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "2048-4095")
        .body(data[2048..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c
        .get(s.url(&format!("/v2/restart/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.to_vec(), data);
}

#[tokio::test]
async fn cross_repository_mount() {
    let s = Server::start().await;
    let c = client();
    let d = push_blob(&c, &s, "src/repo", b"shared layer").await;
    // With from: mounted, 201 with the target's blob URL.
    let r = c
        .post(s.url(&format!(
            "/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location").unwrap(),
        format!("/v2/dst/repo/blobs/{d}")
    );
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    let r = c
        .head(s.url(&format!("/v2/dst/repo/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without from: a normal session (202), since automatic mounting is off.
    let r = c
        .post(s.url(&format!("/v2/third/blobs/uploads/?mount={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        header(&r, "location")
            .unwrap()
            .contains("/v2/third/blobs/uploads/")
    );
    // A missing blob: 202 and a session.
    let missing = sha256(b"missing");
    let r = c
        .post(s.url(&format!(
            "/v2/third/blobs/uploads/?mount={missing}&from=src/repo"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // A blob is not visible in a repository it was never pushed or mounted to.
    let r = c
        .head(s.url(&format!("/v2/third/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn blob_range_requests() {
    let s = Server::start().await;
    let c = client();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let d = push_blob(&c, &s, "range", &data).await;
    let url = s.url(&format!("/v2/range/blobs/{d}"));
    let r = c
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "content-range").as_deref(),
        Some("bytes 10-19/1000")
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), data[10..20].to_vec());
    // Overlapping the end: clipped.
    let r = c
        .get(&url)
        .header("range", "bytes=900-5000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "content-range").as_deref(),
        Some("bytes 900-999/1000")
    );
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    let r = c
        .get(&url)
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().to_vec(), data[995..].to_vec());
    let r = c
        .get(&url)
        .header("range", "bytes=990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), data[990..].to_vec());
    // Inverted and past-the-end ranges: 416, on GET and HEAD.
    for range in ["bytes=500-0", "bytes=5000-10000"] {
        let r = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 416, "{range}");
        let r = c.head(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 416, "{range}");
    }
    let r = c
        .head(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
}

#[tokio::test]
async fn sha512_blobs_and_manifests() {
    let s = Server::start().await;
    let c = client();
    let data = b"sha512 content".to_vec();
    let d = sha512(&data);
    let r = c
        .post(s.url(&format!("/v2/s512/blobs/uploads/?digest={d}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    let r = c
        .head(s.url(&format!("/v2/s512/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    // A session opened for sha512, streamed.
    let r = c
        .post(s.url("/v2/s512/blobs/uploads/?digest-algorithm=sha512"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location").unwrap();
    let data2 = b"streamed sha512".to_vec();
    let d2 = sha512(&data2);
    c.patch(s.url(&loc)).body(data2).send().await.unwrap();
    let r = c
        .put(s.url(&format!("{loc}?digest={d2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(s.url("/v2/s512/blobs/uploads/?digest-algorithm=md5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A manifest pushed by its sha512 digest.
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": data.len()},
        "layers": [],
    });
    let body = serde_json::to_vec(&m).unwrap();
    let md = sha512(&body);
    let r = c
        .put(s.url(&format!("/v2/s512/manifests/{md}")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest").unwrap(), md);
    let r = c
        .get(s.url(&format!("/v2/s512/manifests/{md}")))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest").unwrap(), md);
    assert_eq!(r.bytes().await.unwrap().to_vec(), body);
}

#[tokio::test]
async fn empty_blob_and_empty_json_blob() {
    let s = Server::start().await;
    let c = client();
    let d = push_blob(&c, &s, "empty", b"").await;
    let r = c
        .get(s.url(&format!("/v2/empty/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length").as_deref(), Some("0"));
    let d = push_blob(&c, &s, "empty", b"{}").await;
    assert_eq!(
        d,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
}

#[tokio::test]
async fn manifests_by_tag_and_digest_keep_exact_bytes() {
    let s = Server::start().await;
    let c = client();
    let (d, body) = push_image(&c, &s, "img", "v1", "a").await;
    for reference in ["v1", d.as_str()] {
        let r = c
            .get(s.url(&format!("/v2/img/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "content-type").as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
        assert_eq!(r.bytes().await.unwrap().to_vec(), body);
        let r = c
            .head(s.url(&format!("/v2/img/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "content-length").unwrap(),
            body.len().to_string()
        );
        assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    }
    // Push by digest.
    let r = c
        .put(s.url(&format!("/v2/img/manifests/{d}")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        header(&r, "location").unwrap(),
        format!("/v2/img/manifests/{d}")
    );
    // Digest in the URL that does not match the body.
    let r = c
        .put(s.url(&format!("/v2/img/manifests/{}", sha256(b"x"))))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

async fn put_manifest(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> reqwest::Response {
    c.put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[tokio::test]
async fn invalid_manifests_are_rejected_with_spec_codes() {
    let s = Server::start().await;
    let c = client();
    let r = put_manifest(&c, &s, "bad", "v1", OCI_MANIFEST, b"{not json").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let r = put_manifest(&c, &s, "bad", "v1", OCI_MANIFEST, b"{\"schemaVersion\":2}").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // References a blob the repository does not have.
    let cfg = push_blob(&c, &s, "bad", b"{}").await;
    let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg,"size":2},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":sha256(b"absent"),"size":6}]});
    let r = put_manifest(
        &c,
        &s,
        "bad",
        "v1",
        OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // An index whose child manifest is unknown.
    let idx = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[{"mediaType":OCI_MANIFEST,"digest":sha256(b"child"),"size":5}]});
    let r = put_manifest(
        &c,
        &s,
        "bad",
        "v1",
        OCI_INDEX,
        &serde_json::to_vec(&idx).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // Content-Type disagrees with mediaType.
    let r = put_manifest(
        &c,
        &s,
        "bad",
        "v1",
        OCI_INDEX,
        &serde_json::to_vec(&m).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 400);
    // Too large: 413.
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = put_manifest(&c, &s, "bad", "v1", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), 413);
    // Nothing was stored.
    let r = c.get(s.url("/v2/bad/manifests/v1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// Regression (issue 9): the image spec's descriptor and schemaVersion rules were not
/// enforced — a negative size or a descriptor without a mediaType was stored — and nesting was
/// unbounded. Each is a 400 MANIFEST_INVALID whose message names the field, and nothing is
/// stored.
#[tokio::test]
async fn manifests_breaking_descriptor_rules_are_manifest_invalid_naming_the_field() {
    let s = Server::start().await;
    let c = client();
    let cfg = push_blob(&c, &s, "strict", b"{}").await;
    let layer = push_blob(&c, &s, "strict", b"layer").await;
    let config =
        json!({"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg,"size":2});
    let layer_with = |size: Value| {
        json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"config":config,
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":layer,"size":size}]})
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (serde_json::to_vec(&layer_with(json!(-5))).unwrap(), "layers[0].size"),
        (serde_json::to_vec(&layer_with(json!(2.5))).unwrap(), "layers[0].size"),
        (
            serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg}})).unwrap(),
            "config.size",
        ),
        (
            serde_json::to_vec(&json!({"schemaVersion":1,"mediaType":OCI_MANIFEST,"config":config})).unwrap(),
            "schemaVersion",
        ),
        (
            serde_json::to_vec(&json!({"mediaType":OCI_MANIFEST,"config":config})).unwrap(),
            "schemaVersion",
        ),
        (
            serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"config":config,
                "layers":[{"digest":layer,"size":5}]})).unwrap(),
            "layers[0].mediaType",
        ),
        (
            serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"config":{"digest":cfg,"size":2}})).unwrap(),
            "config.mediaType",
        ),
        (
            serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":OCI_INDEX,
                "manifests":[{"digest":sha256(b"child"),"size":5}]})).unwrap(),
            "manifests[0].mediaType",
        ),
        // Deep nesting, far past serde_json's recursion limit: a 400, not a crash.
        ("[".repeat(100_000).into_bytes(), "nests deeper than 64"),
        (
            format!(
                r#"{{"schemaVersion":2,"x":{}{},"config":{}}}"#,
                "[".repeat(70),
                "]".repeat(70),
                config
            )
            .into_bytes(),
            "nests deeper than 64",
        ),
    ];
    for (body, names) in cases {
        let media_type = if body
            .windows(OCI_INDEX.len())
            .any(|w| w == OCI_INDEX.as_bytes())
        {
            OCI_INDEX
        } else {
            OCI_MANIFEST
        };
        let r = put_manifest(&c, &s, "strict", "v1", media_type, &body).await;
        assert_eq!(
            r.status(),
            400,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], "MANIFEST_INVALID", "{v}");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(names), "{msg:?} should name {names}");
    }
    let r = c
        .get(s.url("/v2/strict/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing was stored");
    // The same manifest with a valid size is accepted.
    let good = serde_json::to_vec(&layer_with(json!(5))).unwrap();
    let r = put_manifest(&c, &s, "strict", "v1", OCI_MANIFEST, &good).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

#[tokio::test]
async fn indexes_artifacts_docker_types_and_odd_manifests() {
    let s = Server::start().await;
    let c = client();
    let (child, child_body) = push_image(&c, &s, "multi", "child", "c").await;
    let idx = json!({"schemaVersion":2,"mediaType":OCI_INDEX,
        "manifests":[{"mediaType":OCI_MANIFEST,"digest":child,"size":child_body.len(),"platform":{"architecture":"amd64","os":"linux"}}]});
    let r = put_manifest(
        &c,
        &s,
        "multi",
        "index",
        OCI_INDEX,
        &serde_json::to_vec(&idx).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 201);
    // Nested index.
    let idx_body = serde_json::to_vec(&idx).unwrap();
    let idx_d = sha256(&idx_body);
    let nested = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[{"mediaType":OCI_INDEX,"digest":idx_d,"size":idx_body.len()}]});
    let r = put_manifest(
        &c,
        &s,
        "multi",
        "nested",
        OCI_INDEX,
        &serde_json::to_vec(&nested).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 201);

    // Docker schema 2 manifest and manifest list.
    let cfg = push_blob(&c, &s, "multi", b"{\"os\":\"linux\"}").await;
    let layer = push_blob(&c, &s, "multi", b"docker layer").await;
    let dm = json!({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
        "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":cfg,"size":14},
        "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":layer,"size":12}]});
    let dm_body = serde_json::to_vec(&dm).unwrap();
    let r = put_manifest(
        &c,
        &s,
        "multi",
        "docker",
        "application/vnd.docker.distribution.manifest.v2+json",
        &dm_body,
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = c
        .get(s.url("/v2/multi/manifests/docker"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    let dl = json!({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":sha256(&dm_body),"size":dm_body.len()}]});
    let r = put_manifest(
        &c,
        &s,
        "multi",
        "dlist",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &serde_json::to_vec(&dl).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 201);

    // Artifact with artifactType and the empty config; custom fields, a data field, no layers.
    let empty = push_blob(&c, &s, "multi", b"{}").await;
    let art = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"artifactType":"application/vnd.example.sbom",
        "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":empty,"size":2,"data":"e30="},
        "layers":[],"x-custom":{"anything":[1,2,3]},"annotations":{"k":"v"}});
    let art_body = serde_json::to_vec_pretty(&art).unwrap();
    let r = put_manifest(&c, &s, "multi", "sbom", OCI_MANIFEST, &art_body).await;
    assert_eq!(r.status(), 201);
    let got = c
        .get(s.url("/v2/multi/manifests/sbom"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        got.to_vec(),
        art_body,
        "bytes preserved, whitespace and custom fields included"
    );

    // Non-distributable layers need not be present.
    let nd = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":empty,"size":2},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":sha256(b"elsewhere"),"size":9,"urls":["https://example.com/layer"]}]});
    let r = put_manifest(
        &c,
        &s,
        "multi",
        "nondist",
        OCI_MANIFEST,
        &serde_json::to_vec(&nd).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 201);

    // Manifest without a top-level mediaType (umoci, Helm): typed by Content-Type.
    let nomt = json!({"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":empty,"size":2},"layers":[]});
    let r = put_manifest(
        &c,
        &s,
        "multi",
        "nomt",
        OCI_MANIFEST,
        &serde_json::to_vec(&nomt).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = c
        .head(s.url("/v2/multi/manifests/nomt"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));

    // A large manifest (just under 4 MiB of annotations) is accepted.
    let big = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":empty,"size":2},
        "layers":[],"annotations":{"big":"x".repeat(3_900_000)}});
    let r = put_manifest(
        &c,
        &s,
        "multi",
        "large",
        OCI_MANIFEST,
        &serde_json::to_vec(&big).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn subject_and_referrers() {
    let s = Server::start().await;
    let c = client();
    let (subject, body) = push_image(&c, &s, "ref", "v1", "s").await;
    let empty = push_blob(&c, &s, "ref", b"{}").await;
    // Referrers of a digest with none: 200 and an empty index, never 404.
    let r = c
        .get(s.url(&format!("/v2/ref/referrers/{}", sha256(b"none"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));
    let r = c
        .get(s.url(&format!("/v2/unknownrepo/referrers/{subject}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mk = |at: &str, subj: &str| {
        serde_json::to_vec(
            &json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"artifactType":at,
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":empty,"size":2},
            "layers":[],"subject":{"mediaType":OCI_MANIFEST,"digest":subj,"size":body.len()},
            "annotations":{"org.example.kind":at}}),
        )
        .unwrap()
    };
    let sig = mk("application/vnd.example.signature", &subject);
    let sbom = mk("application/vnd.example.sbom", &subject);
    for m in [&sig, &sbom] {
        let r = put_manifest(&c, &s, "ref", &sha256(m), OCI_MANIFEST, m).await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject").unwrap(), subject);
    }
    // A subject that does not exist (yet) is accepted.
    let missing = sha256(b"not pushed");
    let orphan = mk("application/vnd.example.signature", &missing);
    let r = put_manifest(&c, &s, "ref", &sha256(&orphan), OCI_MANIFEST, &orphan).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "oci-subject").unwrap(), missing);
    let v: Value = c
        .get(s.url(&format!("/v2/ref/referrers/{missing}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);

    let r = c
        .get(s.url(&format!("/v2/ref/referrers/{subject}")))
        .send()
        .await
        .unwrap();
    assert!(header(&r, "oci-filters-applied").is_none());
    let v: Value = r.json().await.unwrap();
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["digest"], json!(sha256(&sig)));
    assert_eq!(
        list[0]["artifactType"],
        json!("application/vnd.example.signature")
    );
    assert_eq!(list[0]["size"], json!(sig.len()));
    assert_eq!(
        list[0]["annotations"]["org.example.kind"],
        json!("application/vnd.example.signature")
    );

    let r = c
        .get(s.url(&format!(
            "/v2/ref/referrers/{subject}?artifactType=application/vnd.example.sbom"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let v: Value = r.json().await.unwrap();
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], json!(sha256(&sbom)));
}

#[tokio::test]
async fn tag_listing_is_sorted_and_paginated() {
    let s = Server::start().await;
    let c = client();
    let (d, body) = push_image(&c, &s, "tags", "b", "t").await;
    for t in ["a", "c", "B", "z", "1"] {
        let r = put_manifest(&c, &s, "tags", t, OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), 201);
    }
    let v: Value = c
        .get(s.url("/v2/tags/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], json!("tags"));
    assert_eq!(v["tags"], json!(["1", "B", "a", "b", "c", "z"]));

    let r = c.get(s.url("/v2/tags/tags/list?n=2")).send().await.unwrap();
    let link = header(&r, "link").expect("Link when truncated");
    assert_eq!(link, "</v2/tags/tags/list?n=2&last=B>; rel=\"next\"");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["1", "B"]));
    // Follow the links to the end.
    let mut all = vec![];
    let mut next = Some("/v2/tags/tags/list?n=2".to_owned());
    while let Some(u) = next {
        let r = c.get(s.url(&u)).send().await.unwrap();
        next = header(&r, "link").map(|l| {
            l.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_owned()
        });
        let v: Value = r.json().await.unwrap();
        all.extend(
            v["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(all, ["1", "B", "a", "b", "c", "z"]);
    // `last` is exclusive.
    let v: Value = c
        .get(s.url("/v2/tags/tags/list?last=b"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["c", "z"]));
    let r = c.get(s.url("/v2/tags/tags/list?n=6")).send().await.unwrap();
    assert!(header(&r, "link").is_none(), "no Link when nothing remains");
    let r = c.get(s.url("/v2/tags/tags/list?n=0")).send().await.unwrap();
    assert!(header(&r, "link").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!([]));
    let r = c
        .get(s.url("/v2/tags/tags/list?n=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "PAGINATION_NUMBER_INVALID");
    let r = c
        .get(s.url("/v2/nosuchrepo/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    let _ = d;
}

#[tokio::test]
async fn catalog_is_sorted_and_paginated() {
    let s = Server::start().await;
    let c = client();
    for r in ["b/x", "a", "c"] {
        push_blob(&c, &s, r, b"x").await;
    }
    let v: Value = c
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["repositories"], json!(["a", "b/x", "c"]));
    let r = c
        .get(s.url("/v2/_catalog?n=1&last=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "link").as_deref(),
        Some("</v2/_catalog?n=1&last=b/x>; rel=\"next\"")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["b/x"]));
}

#[tokio::test]
async fn push_by_digest_with_tag_parameters() {
    let s = Server::start().await;
    let c = client();
    let (d, body) = push_image(&c, &s, "tp", "seed", "p").await;
    let r = c
        .put(s.url(&format!("/v2/tp/manifests/{d}?tag=one&tag=two")))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let tags: Vec<String> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(tags, ["one", "two"]);
    for t in ["one", "two"] {
        let r = c
            .head(s.url(&format!("/v2/tp/manifests/{t}")))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    }
    let r = c
        .put(s.url(&format!("/v2/tp/manifests/{d}?tag=-bad")))
        .header("content-type", OCI_MANIFEST)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn deletes_of_tags_manifests_and_blobs() {
    let s = Server::start().await;
    let c = client();
    let (d, body) = push_image(&c, &s, "del", "keep", "d").await;
    put_manifest(&c, &s, "del", "gone", OCI_MANIFEST, &body).await;
    // Delete a tag: the manifest stays.
    let r = c
        .delete(s.url("/v2/del/manifests/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        c.get(s.url("/v2/del/manifests/gone"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(s.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let v: Value = c
        .get(s.url("/v2/del/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!(["keep"]));
    // Delete the manifest: it and every tag go.
    let r = c
        .delete(s.url(&format!("/v2/del/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        c.get(s.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(s.url("/v2/del/manifests/keep"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let v: Value = c
        .get(s.url("/v2/del/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!([]));
    let r = c
        .delete(s.url(&format!("/v2/del/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Delete a blob.
    let b = push_blob(&c, &s, "del", b"blob to delete").await;
    // Read it first, so a cached link would have to be forgotten by the delete.
    let r = c
        .head(s.url(&format!("/v2/del/blobs/{b}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(s.url(&format!("/v2/del/blobs/{b}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        c.get(s.url(&format!("/v2/del/blobs/{b}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = c
        .delete(s.url(&format!("/v2/del/blobs/{b}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn repository_delete_removes_everything() {
    let s = Server::start().await;
    let c = client();
    push_image(&c, &s, "whole/repo", "v1", "1").await;
    push_image(&c, &s, "whole/repo", "v2", "2").await;
    let layer = sha256(b"layer-1");
    let r = c
        .head(s.url(&format!("/v2/whole/repo/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.delete(s.url("/acr/v1/whole/repo")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifestsDeleted"].as_array().unwrap().len(), 2);
    let mut tags: Vec<String> = serde_json::from_value(v["tagsDeleted"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);
    assert_eq!(
        c.get(s.url("/v2/whole/repo/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.delete(s.url("/acr/v1/whole/repo"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = c
        .head(s.url(&format!("/v2/whole/repo/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "blob links go with the repository");
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_blob_are_safe() {
    let s = Server::start().await;
    let c = client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    let mut tasks = vec![];
    for i in 0..8 {
        let c = c.clone();
        let url = s.url(&format!(
            "/v2/conc{i}/blobs/uploads/?digest={}",
            sha256(&data)
        ));
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            c.post(url).body(data).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    for i in 0..8 {
        let got = c
            .get(s.url(&format!("/v2/conc{i}/blobs/{}", sha256(&data))))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.len(), data.len());
    }
}

#[tokio::test]
async fn a_third_party_oci_client_pushes_and_pulls() {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference};

    let s = Server::start().await;
    let oc = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: Reference = format!("{}/thirdparty/app:1.0", s.addr).parse().unwrap();
    let layer = ImageLayer::oci_v1(b"hello from oci-client".to_vec(), None);
    let config = Config::oci_v1(
        b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec(),
        None,
    );
    let pushed = oc
        .push(
            &reference,
            std::slice::from_ref(&layer),
            config,
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("push through oci-client");
    assert!(
        pushed
            .manifest_url
            .contains("/v2/thirdparty/app/manifests/")
    );
    let pulled = oc
        .pull(
            &reference,
            &RegistryAuth::Anonymous,
            vec!["application/vnd.oci.image.layer.v1.tar"],
        )
        .await
        .expect("pull through oci-client");
    assert_eq!(pulled.layers.len(), 1);
    assert_eq!(pulled.layers[0].data, layer.data);
    let tags = oc
        .list_tags(&reference, &RegistryAuth::Anonymous, None, None)
        .await
        .unwrap();
    assert_eq!(tags.tags, ["1.0"]);
}

#[tokio::test]
async fn concurrent_manifest_puts_fail_and_succeed_independently() {
    // Puts are group-committed; a bad manifest in a group must fail alone.
    let s = Server::start().await;
    let c = client();
    let cfg = push_blob(&c, &s, "group", b"{}").await;
    let mut tasks = vec![];
    for i in 0..40 {
        let layer = if i % 2 == 0 {
            cfg.clone()
        } else {
            sha256(format!("missing{i}").as_bytes())
        };
        let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg,"size":2},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":layer,"size":2}],
            "annotations":{"i":i.to_string()}});
        let url = s.url(&format!("/v2/group/manifests/t{i}"));
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put(url)
                .header("content-type", OCI_MANIFEST)
                .body(serde_json::to_vec(&m).unwrap())
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let status = t.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(status, 201, "t{i}");
        } else {
            assert_eq!(status, 400, "t{i}");
        }
    }
    let v: Value = c
        .get(s.url("/v2/group/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn a_refused_manifest_leaves_no_repository_behind() {
    let s = Server::start().await;
    let c = client();
    let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":sha256(b"nothing"),"size":7},
        "layers":[]});
    let r = put_manifest(
        &c,
        &s,
        "brand/new",
        "v1",
        OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = c
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["repositories"], json!([]));
    assert_eq!(
        c.get(s.url("/v2/brand/new/tags/list"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn huge_numbers_from_clients_are_handled() {
    let s = Server::start().await;
    let c = client();
    push_image(&c, &s, "big", "v1", "b").await;
    let r = c
        .get(s.url("/v2/_catalog?n=4294967295"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["big"]));
    let r = c
        .get(s.url("/v2/big/tags/list?n=4294967295"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["v1"]));
    let r = c
        .get(s.url("/v2/big/tags/list?n=99999999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let loc = header(
        &c.post(s.url("/v2/big/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    )
    .unwrap();
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-18446744073709551615")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
}

#[tokio::test]
async fn a_client_that_disconnects_mid_patch_leaves_a_consistent_session() {
    let s = Server::start().await;
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/gone/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    )
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body =
        reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let url = s.url(&loc);
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.patch(url).body(body).send().await }
    });
    tx.send(Ok(vec![7u8; 100_000])).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The client goes away mid-body.
    req.abort();
    drop(tx);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The session is intact: whatever arrived was dropped, and the offset is the old one.
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range").as_deref(), Some("0-0"));
    // A retry from that offset completes and the blob is exactly what was sent.
    let data = vec![9u8; 50_000];
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-49999")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let d = sha256(&data);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c
        .get(s.url(&format!("/v2/gone/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.to_vec(), data);
}

/// `storage.redirect_downloads`. On object storage (S3, Azure Blob: scripts/backends.sh runs
/// this module on both), a blob GET is a 307 to a URL of the bucket, which serves the bytes
/// and ranges of them to a client holding no registry credential, as ACR redirects to its
/// storage account; HEAD is still the registry's own answer, and a blob the repository does
/// not link is still a 404, never a URL. On the data directory, which has no such URL, the
/// setting is refused at start-up with a message naming the key.
#[tokio::test]
async fn blob_downloads_redirect_to_object_storage_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = wharf::config::Config {
        data_dir: tmp.path().to_owned(),
        storage: wharf::config::Storage {
            redirect_downloads: true,
            ..Default::default()
        },
        ..Default::default()
    };
    if common::test_blob_store(tmp.path()).is_none() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = match wharf::start(&cfg, listener).await {
            Ok(_) => panic!("redirect_downloads on the data directory must be refused"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("storage.redirect_downloads") && err.contains("object storage"),
            "{err}"
        );
        return;
    }
    let s = Server::start_config(cfg).await;
    let c = client();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = push_blob(&c, &s, "redir/app", &data).await;

    let r = c
        .get(s.url(&format!("/v2/redir/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        header(&r, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    let to = header(&r, "location").expect("a redirect names where to go");
    assert!(
        !to.starts_with(&s.url("/")),
        "the URL is the bucket's, not the registry's: {to}"
    );
    // A client with no registry credential reads the blob there, whole and in part.
    let bucket = reqwest::Client::new();
    let whole = bucket.get(&to).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &data[..]);
    let part = bucket
        .get(&to)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &data[1000..2000]);
    // The registry follows nothing for HEAD: its own answer, with the size.
    let h = c
        .head(s.url(&format!("/v2/redir/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    assert_eq!(
        header(&h, "content-length").as_deref(),
        Some(data.len().to_string().as_str())
    );
    // Not linked in this repository: 404, no URL.
    let other = c
        .get(s.url(&format!("/v2/redir/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert!(header(&other, "location").is_none());
    let unknown = c
        .get(s.url(&format!("/v2/redir/app/blobs/sha256:{}", "0".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // A client that follows redirects, as docker, podman and skopeo do, gets the bytes.
    let follow = reqwest::Client::new()
        .get(s.url(&format!("/v2/redir/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    assert_eq!(sha256(&follow.bytes().await.unwrap()), digest);
}
