//! ACR's `/acr/v1` data plane through the real server (acr-auth.md §5): shapes, percent-encoded
//! names and digests, paging with `Link`, PATCH of changeable attributes, untag, repository
//! delete, and the `DELETE /v2/…/manifests/sha256%3A…` the Azure SDK sends.

use crate::common;

use common::{Server, client, push_blob, push_image, sha256};
use serde_json::{Value, json};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

async fn get(c: &reqwest::Client, s: &Server, path: &str) -> (u16, Value, Option<String>) {
    let r = c.get(s.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let link = r
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap_or(Value::Null), link)
}

async fn patch(c: &reqwest::Client, s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = c
        .patch(s.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// RFC 3339 UTC with exactly 7 fractional digits.
fn is_acr_time(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let Some((_, frac)) = s.split_once('.') else {
        return false;
    };
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        && frac.len() == 8
        && frac.ends_with('Z')
        && frac[..7].bytes().all(|b| b.is_ascii_digit())
}

fn all_enabled() -> Value {
    json!({"deleteEnabled": true, "writeEnabled": true, "readEnabled": true, "listEnabled": true})
}

#[tokio::test]
async fn repository_attributes_with_an_encoded_name() {
    let s = Server::start().await;
    let c = client();
    push_image(&c, &s, "library/hello", "v1", "a").await;
    push_image(&c, &s, "library/hello", "v2", "b").await;
    let (st, v, _) = get(&c, &s, "/acr/v1/library%2Fhello?api-version=2021-07-01").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["registry"], json!(s.addr.to_string()));
    assert_eq!(v["imageName"], "library/hello");
    assert_eq!(v["manifestCount"], 2);
    assert_eq!(v["tagCount"], 2);
    assert!(is_acr_time(&v["createdTime"]), "{v}");
    assert!(is_acr_time(&v["lastUpdateTime"]), "{v}");
    assert_eq!(v["changeableAttributes"], all_enabled());
    // The same through an unencoded path.
    let (st, w, _) = get(&c, &s, "/acr/v1/library/hello").await;
    assert_eq!((st, &w["imageName"]), (200, &v["imageName"]));

    // PATCH: partial, unknown fields ignored, teleportEnabled echoed, the whole object back.
    let (st, p) = patch(
        &c,
        &s,
        "/acr/v1/library%2Fhello?api-version=2021-07-01",
        json!({"listEnabled": false, "teleportEnabled": true, "somethingNew": 1}),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(
        p["changeableAttributes"],
        json!({"deleteEnabled": true, "writeEnabled": true, "readEnabled": true,
               "listEnabled": false, "teleportEnabled": true})
    );
    assert_eq!(p["manifestCount"], 2);
    let (_, g, _) = get(&c, &s, "/acr/v1/library%2Fhello").await;
    assert_eq!(g["changeableAttributes"], p["changeableAttributes"]);
    // A wrong type is a 400 in the OCI shape; nothing changes.
    let (st, e) = patch(
        &c,
        &s,
        "/acr/v1/library%2Fhello",
        json!({"readEnabled": "no"}),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert!(e["errors"][0]["code"].is_string());
    let (st, e) = patch(&c, &s, "/acr/v1/library%2Fhello", json!([1])).await;
    assert_eq!(st, 400, "{e}");

    // Unknown repository: 404 NAME_UNKNOWN with the name in detail.
    let (st, e, _) = get(&c, &s, "/acr/v1/no%2Fsuch").await;
    assert_eq!(st, 404);
    assert_eq!(e["errors"][0]["code"], "NAME_UNKNOWN");
    assert_eq!(e["errors"][0]["detail"]["name"], "no/such");
    let (st, _) = patch(&c, &s, "/acr/v1/no%2Fsuch", json!({"readEnabled": false})).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn catalog_pages_with_link() {
    let s = Server::start().await;
    let c = client();
    for r in ["a/one", "b/two", "c/three"] {
        push_image(&c, &s, r, "v1", r).await;
    }
    let (st, v, link) = get(&c, &s, "/acr/v1/_catalog?n=2").await;
    assert_eq!(st, 200);
    assert_eq!(v["repositories"], json!(["a/one", "b/two"]));
    let link = link.expect("a Link to the next page");
    assert_eq!(link, "</acr/v1/_catalog?last=b%2Ftwo&n=2>; rel=\"next\"");
    let next = &link[1..link.find('>').unwrap()];
    let (_, v, link) = get(&c, &s, next).await;
    assert_eq!(v["repositories"], json!(["c/three"]));
    assert_eq!(link, None);
    // Hidden from listings by listEnabled=false.
    patch(&c, &s, "/acr/v1/b%2Ftwo", json!({"listEnabled": false})).await;
    let (_, v, _) = get(&c, &s, "/acr/v1/_catalog").await;
    assert_eq!(v["repositories"], json!(["a/one", "c/three"]));
    let (_, v, _) = get(&c, &s, "/v2/_catalog").await;
    assert_eq!(v["repositories"], json!(["a/one", "c/three"]));
}

#[tokio::test]
async fn tags_list_order_filter_and_paging() {
    let s = Server::start().await;
    let c = client();
    let (d1, _) = push_image(&c, &s, "team/app", "v1", "1").await;
    let (d2, _) = push_image(&c, &s, "team/app", "latest", "2").await;
    // Later pushes have later times (millisecond clock).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = c
        .put(s.url("/v2/team/app/manifests/v2"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(
            c.get(s.url(&format!("/v2/team/app/manifests/{d1}")))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let (st, v, link) = get(&c, &s, "/acr/v1/team%2Fapp/_tags").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(link, None);
    assert_eq!(v["imageName"], "team/app");
    assert_eq!(v["registry"], json!(s.addr.to_string()));
    let names: Vec<&str> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["latest", "v1", "v2"], "lexical by default");
    let t = &v["tags"][0];
    assert_eq!(t["digest"], json!(d2));
    assert_eq!(t["signed"], false);
    assert!(is_acr_time(&t["createdTime"]) && is_acr_time(&t["lastUpdateTime"]));
    assert_eq!(t["changeableAttributes"], all_enabled());

    // Paging: n=1, Link exactly as ACR writes it.
    let (_, v, link) = get(&c, &s, "/acr/v1/team%2Fapp/_tags?n=1").await;
    assert_eq!(v["tags"].as_array().unwrap().len(), 1);
    assert_eq!(
        link.as_deref(),
        Some("</acr/v1/team%2Fapp/_tags?last=latest&n=1&orderby=>; rel=\"next\"")
    );
    let mut seen = vec![v["tags"][0]["name"].as_str().unwrap().to_owned()];
    let mut link = link;
    while let Some(l) = link {
        let (_, v, next) = get(&c, &s, &l[1..l.find('>').unwrap()]).await;
        for t in v["tags"].as_array().unwrap() {
            seen.push(t["name"].as_str().unwrap().to_owned());
        }
        link = next;
    }
    assert_eq!(seen, ["latest", "v1", "v2"]);

    // timedesc: v2 was updated last.
    let (_, v, _) = get(&c, &s, "/acr/v1/team%2Fapp/_tags?orderby=timedesc").await;
    assert_eq!(v["tags"][0]["name"], "v2");
    let (_, v, _) = get(&c, &s, "/acr/v1/team%2Fapp/_tags?orderby=timeasc").await;
    assert_eq!(v["tags"][2]["name"], "v2");
    let (_, v, link) = get(&c, &s, "/acr/v1/team%2Fapp/_tags?orderby=timedesc&n=1").await;
    assert_eq!(v["tags"][0]["name"], "v2");
    assert_eq!(
        link.as_deref(),
        Some("</acr/v1/team%2Fapp/_tags?last=v2&n=1&orderby=timedesc>; rel=\"next\"")
    );
    let (st, _, _) = get(&c, &s, "/acr/v1/team%2Fapp/_tags?orderby=sideways").await;
    assert_eq!(st, 400);
    let (st, _, _) = get(&c, &s, "/acr/v1/team%2Fapp/_tags?n=x").await;
    assert_eq!(st, 400);

    // digest filter (percent-encoded as the SDK sends it).
    let enc = d1.replace(':', "%3A");
    let (_, v, _) = get(&c, &s, &format!("/acr/v1/team%2Fapp/_tags?digest={enc}")).await;
    let names: Vec<&str> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v1", "v2"]);

    // One tag; PATCH it; unknown tag.
    let (st, v, _) = get(&c, &s, "/acr/v1/team%2Fapp/_tags/v1?api-version=2021-07-01").await;
    assert_eq!(st, 200);
    assert_eq!(v["imageName"], "team/app");
    assert_eq!(v["tag"]["name"], "v1");
    assert_eq!(v["tag"]["digest"], json!(d1));
    let (st, v) = patch(
        &c,
        &s,
        "/acr/v1/team%2Fapp/_tags/v1",
        json!({"deleteEnabled": false}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["tag"]["changeableAttributes"]["deleteEnabled"], false);
    assert_eq!(v["tag"]["changeableAttributes"]["writeEnabled"], true);
    let (st, v, _) = get(&c, &s, "/acr/v1/team%2Fapp/_tags/nope").await;
    assert_eq!(st, 404);
    assert_eq!(v["errors"][0]["code"], "TAG_UNKNOWN");
    let (st, _, _) = get(&c, &s, "/acr/v1/team%2Fnope/_tags").await;
    assert_eq!(st, 404);

    // listEnabled=false on a tag hides it from both listings.
    patch(
        &c,
        &s,
        "/acr/v1/team%2Fapp/_tags/latest",
        json!({"listEnabled": false}),
    )
    .await;
    let (_, v, _) = get(&c, &s, "/acr/v1/team%2Fapp/_tags").await;
    assert_eq!(v["tags"].as_array().unwrap().len(), 2);
    let (_, v, _) = get(&c, &s, "/v2/team/app/tags/list").await;
    assert_eq!(v["tags"], json!(["v1", "v2"]));
}

#[tokio::test]
async fn manifest_attributes_for_images_and_indexes() {
    let s = Server::start().await;
    let c = client();
    let (img, body) = push_image(&c, &s, "multi/arch", "amd", "x").await;
    let m: Value = serde_json::from_slice(&body).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": img, "size": body.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    });
    let ib = serde_json::to_vec(&index).unwrap();
    let r = c
        .put(s.url("/v2/multi/arch/manifests/latest"))
        .header("content-type", INDEX)
        .body(ib.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let idx = sha256(&ib);

    let (st, v, _) = get(
        &c,
        &s,
        &format!(
            "/acr/v1/multi%2Farch/_manifests/{}",
            img.replace(':', "%3A")
        ),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["imageName"], "multi/arch");
    let mf = &v["manifest"];
    assert_eq!(mf["digest"], json!(img));
    assert_eq!(mf["architecture"], "amd64");
    assert_eq!(mf["os"], "linux");
    assert_eq!(
        mf["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        mf["configMediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(mf["tags"], json!(["amd"]));
    let size = m["config"]["size"].as_i64().unwrap() + m["layers"][0]["size"].as_i64().unwrap();
    assert_eq!(mf["imageSize"], size);
    assert!(is_acr_time(&mf["createdTime"]) && is_acr_time(&mf["lastUpdateTime"]));
    assert_eq!(mf["changeableAttributes"], all_enabled());

    let (_, v, _) = get(&c, &s, &format!("/acr/v1/multi%2Farch/_manifests/{idx}")).await;
    assert_eq!(v["manifest"]["mediaType"], INDEX);
    assert_eq!(
        v["manifest"]["references"],
        json!([{"digest": img, "architecture": "amd64", "os": "linux"}])
    );
    assert_eq!(v["manifest"]["tags"], json!(["latest"]));

    // The listing, paged by digest with the digest percent-encoded in the Link.
    let (_, v, link) = get(&c, &s, "/acr/v1/multi%2Farch/_manifests?n=1").await;
    let first = v["manifests"][0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(first, std::cmp::min(img.clone(), idx.clone()));
    assert_eq!(
        link.unwrap(),
        format!(
            "</acr/v1/multi%2Farch/_manifests?last={}&n=1&orderby=>; rel=\"next\"",
            first.replace(':', "%3A")
        )
    );
    let (_, v, _) = get(&c, &s, "/acr/v1/multi%2Farch/_manifests").await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let (_, v, _) = get(&c, &s, "/acr/v1/multi%2Farch/_manifests?orderby=timedesc").await;
    assert_eq!(v["manifests"][0]["digest"], json!(idx));

    // PATCH a manifest; by tag it resolves to the digest.
    let (st, v) = patch(
        &c,
        &s,
        &format!(
            "/acr/v1/multi%2Farch/_manifests/{}",
            img.replace(':', "%3A")
        ),
        json!({"writeEnabled": false}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["manifest"]["changeableAttributes"]["writeEnabled"], false);
    let (st, v, _) = get(&c, &s, "/acr/v1/multi%2Farch/_manifests/amd").await;
    assert_eq!((st, &v["manifest"]["digest"]), (200, &json!(img)));
    let missing = sha256(b"missing");
    let (st, v, _) = get(
        &c,
        &s,
        &format!("/acr/v1/multi%2Farch/_manifests/{missing}"),
    )
    .await;
    assert_eq!(
        (st, v["errors"][0]["code"].as_str()),
        (404, Some("MANIFEST_UNKNOWN"))
    );
    // No DELETE on /_manifests/{digest} (manifests go through /v2).
    let r = c
        .delete(s.url(&format!("/acr/v1/multi%2Farch/_manifests/{missing}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn untag_repository_delete_and_encoded_digest_delete() {
    let s = Server::start().await;
    let c = client();
    let (d1, _) = push_image(&c, &s, "ns/repo", "v1", "1").await;
    let (d2, _) = push_image(&c, &s, "ns/repo", "v2", "2").await;
    // Untag: 202, the manifest stays.
    let r = c
        .delete(s.url("/acr/v1/ns%2Frepo/_tags/v1?api-version=2021-07-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (st, _, _) = get(&c, &s, "/v2/ns/repo/manifests/v1").await;
    assert_eq!(st, 404);
    let r = c
        .head(s.url(&format!("/v2/ns/repo/manifests/{d1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(s.url("/acr/v1/ns%2Frepo/_tags/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "TAG_UNKNOWN", "{v}");
    // an untag in a repository that does not exist: the repository is what is unknown
    for path in ["/acr/v1/nope/_tags/x", "/acr/v1/ns%2Fnope/_tags/v2"] {
        let r = c.delete(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_UNKNOWN", "{path}: {v}");
    }

    // DELETE /v2/{name}/manifests/sha256%3A… deletes for real.
    let r = c
        .delete(s.url(&format!(
            "/v2/ns%2Frepo/manifests/{}",
            d1.replace(':', "%3A")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .head(s.url(&format!("/v2/ns/repo/manifests/{d1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the manifest is gone");
    let r = c
        .delete(s.url(&format!(
            "/v2/ns%2Frepo/manifests/{}",
            d1.replace(':', "%3A")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Repository delete: 202 with what went, then 404.
    push_blob(&c, &s, "ns/repo", b"extra").await;
    let r = c.delete(s.url("/acr/v1/ns%2Frepo")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"manifestsDeleted": [d2], "tagsDeleted": ["v2"]}));
    let r = c.delete(s.url("/acr/v1/ns%2Frepo")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "NAME_UNKNOWN");
}

/// Paths that are no endpoint still answer with an error body in their family's shape: the
/// OCI one under `/v2`, `/acr` and `/oauth2`, ARM's elsewhere (the auth layer takes such paths
/// for management ones).
#[tokio::test]
async fn paths_that_are_no_endpoint_answer_with_an_error_body() {
    let s = Server::start().await;
    let c = client();
    for path in [
        "/acr/v1",
        "/acr/v1/",
        "/acr",
        "/acr/v2/x",
        "/acrx",
        "/oauth2/nope",
    ] {
        for m in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let r = c.request(m.clone(), s.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 404, "{m} {path}");
            let v: Value = r.json().await.unwrap();
            if path == "/acrx" {
                assert_eq!(v["error"]["code"], "NotFound", "{m} {path}: {v}");
            } else {
                assert_eq!(v["errors"][0]["code"], "NOT_FOUND", "{m} {path}: {v}");
                assert!(v["errors"][0]["message"].as_str().unwrap().contains(path));
            }
        }
    }
    for path in ["/", "/nope", "/nope/deeper", "/favicon.ico"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "NotFound", "{path}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
}
