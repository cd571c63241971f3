//! Locks through the real server: every `/v2` and `/acr/v1` route against each changeable
//! attribute (`writeEnabled`, `deleteEnabled`, `readEnabled`, `listEnabled`) set to false at
//! repository, tag and manifest level, and with no lock at all (acr-auth.md §5.4). A blocked
//! operation is 405 `REGISTRY_DISALLOWED_OPERATION` and changes nothing; `listEnabled` hides
//! the item from listings.

use crate::common;

use common::{Server, client, push_blob, push_image};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Repo,
    Tag,
    Manifest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    Write,
    Delete,
    Read,
    List,
}

impl Attr {
    fn field(self) -> &'static str {
        match self {
            Attr::Write => "writeEnabled",
            Attr::Delete => "deleteEnabled",
            Attr::Read => "readEnabled",
            Attr::List => "listEnabled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    GetManifestByTag,
    HeadManifestByTag,
    GetManifestByDigest,
    HeadManifestByDigest,
    GetBlob,
    HeadBlob,
    Referrers,
    PutManifestOverTag,
    PutManifestSameDigest,
    StartUpload,
    UploadChunk,
    UploadFinish,
    UploadStatus,
    UploadCancel,
    MountBlob,
    MountFromLocked,
    DeleteManifestByDigest,
    DeleteManifestByTag,
    DeleteBlob,
    TagsList,
    Catalog,
    AcrGetRepo,
    AcrPatchRepo,
    AcrDeleteRepo,
    AcrListTags,
    AcrGetTag,
    AcrPatchTag,
    AcrUntag,
    AcrListManifests,
    AcrGetManifest,
    AcrPatchManifest,
    AcrCatalog,
}

const ROUTES: [Route; 32] = {
    use Route::*;
    [
        GetManifestByTag,
        HeadManifestByTag,
        GetManifestByDigest,
        HeadManifestByDigest,
        GetBlob,
        HeadBlob,
        Referrers,
        PutManifestOverTag,
        PutManifestSameDigest,
        StartUpload,
        UploadChunk,
        UploadFinish,
        UploadStatus,
        UploadCancel,
        MountBlob,
        MountFromLocked,
        DeleteManifestByDigest,
        DeleteManifestByTag,
        DeleteBlob,
        TagsList,
        Catalog,
        AcrGetRepo,
        AcrPatchRepo,
        AcrDeleteRepo,
        AcrListTags,
        AcrGetTag,
        AcrPatchTag,
        AcrUntag,
        AcrListManifests,
        AcrGetManifest,
        AcrPatchManifest,
        AcrCatalog,
    ]
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Allowed, with this status.
    Ok(u16),
    /// 405 REGISTRY_DISALLOWED_OPERATION.
    Blocked,
    /// A listing that shows (true) or hides (false) the locked item.
    Listed(bool),
}

/// What ACR does, written out by hand from §5.4: `lock` is the attribute set to false, at
/// `level` (None: no lock).
fn want(route: Route, lock: Option<(Level, Attr)>) -> Want {
    use Attr::*;
    use Level::*;
    use Route::*;
    let allowed = match route {
        GetManifestByTag | HeadManifestByTag | GetManifestByDigest | HeadManifestByDigest
        | GetBlob | HeadBlob | Referrers => Want::Ok(200),
        PutManifestOverTag | PutManifestSameDigest | MountBlob | MountFromLocked => Want::Ok(201),
        StartUpload | UploadChunk => Want::Ok(202),
        UploadFinish => Want::Ok(201),
        UploadStatus | UploadCancel => Want::Ok(204),
        DeleteManifestByDigest | DeleteManifestByTag | DeleteBlob | AcrDeleteRepo | AcrUntag => {
            Want::Ok(202)
        }
        TagsList | Catalog | AcrListTags | AcrListManifests | AcrCatalog => Want::Listed(true),
        AcrGetRepo | AcrPatchRepo | AcrGetTag | AcrPatchTag | AcrGetManifest | AcrPatchManifest => {
            Want::Ok(200)
        }
    };
    let Some((level, attr)) = lock else {
        return allowed;
    };
    // A mount reads its source: from a read-locked repository nothing is mounted, and the
    // client gets the plain upload session the OCI spec prescribes then (see `mount_blob`).
    if route == MountFromLocked {
        return if (level, attr) == (Repo, Read) {
            Want::Ok(202)
        } else {
            allowed
        };
    }
    let blocked = match (level, attr) {
        // A write lock forbids changes and deletes; a delete lock, deletes.
        (Repo, Write) => matches!(
            route,
            PutManifestOverTag
                | PutManifestSameDigest
                | StartUpload
                | UploadChunk
                | UploadFinish
                | MountBlob
                | DeleteManifestByDigest
                | DeleteManifestByTag
                | DeleteBlob
                | AcrDeleteRepo
                | AcrUntag
        ),
        (Repo, Delete) => matches!(
            route,
            DeleteManifestByDigest | DeleteManifestByTag | DeleteBlob | AcrDeleteRepo | AcrUntag
        ),
        (Repo, Read) => matches!(
            route,
            GetManifestByTag
                | HeadManifestByTag
                | GetManifestByDigest
                | HeadManifestByDigest
                | GetBlob
                | HeadBlob
                | Referrers
        ),
        // The tag: an overwrite of it, its removal, or the delete of its manifest (which would
        // remove it).
        (Tag, Write) => matches!(
            route,
            PutManifestOverTag
                | DeleteManifestByDigest
                | DeleteManifestByTag
                | AcrDeleteRepo
                | AcrUntag
        ),
        (Tag, Delete) => matches!(
            route,
            DeleteManifestByDigest | DeleteManifestByTag | AcrDeleteRepo | AcrUntag
        ),
        (Tag, Read) => matches!(route, GetManifestByTag | HeadManifestByTag),
        // The manifest: an update of it (a push of the same digest) or its delete; an untag
        // leaves it alone (tag and manifest locks are separate).
        (Manifest, Write) => matches!(
            route,
            PutManifestSameDigest | DeleteManifestByDigest | AcrDeleteRepo
        ),
        (Manifest, Delete) => matches!(route, DeleteManifestByDigest | AcrDeleteRepo),
        (Manifest, Read) => matches!(
            route,
            GetManifestByTag | HeadManifestByTag | GetManifestByDigest | HeadManifestByDigest
        ),
        (_, List) => false,
    };
    if blocked {
        return Want::Blocked;
    }
    if attr == List {
        let hidden = match level {
            Repo => matches!(route, Catalog | AcrCatalog),
            Tag => matches!(route, TagsList | AcrListTags),
            Manifest => matches!(route, AcrListManifests),
        };
        if hidden {
            return Want::Listed(false);
        }
    }
    allowed
}

/// One repository with image `v1` (manifest `digest`, layer `layer`) and an upload session
/// opened before any lock (`upload`, its URL path).
struct Fixture {
    repo: String,
    digest: String,
    layer: String,
    body: Vec<u8>,
    upload: String,
}

async fn fixture(c: &reqwest::Client, s: &Server, repo: &str) -> Fixture {
    let (digest, body) = push_image(c, s, repo, "v1", repo).await;
    let m: Value = serde_json::from_slice(&body).unwrap();
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let upload = r.headers()["location"].to_str().unwrap().to_owned();
    Fixture {
        repo: repo.to_owned(),
        digest,
        layer: m["layers"][0]["digest"].as_str().unwrap().to_owned(),
        body,
        upload,
    }
}

async fn lock(c: &reqwest::Client, s: &Server, f: &Fixture, level: Level, attr: Attr, on: bool) {
    let enc = f.repo.replace('/', "%2F");
    let path = match level {
        Level::Repo => format!("/acr/v1/{enc}"),
        Level::Tag => format!("/acr/v1/{enc}/_tags/v1"),
        Level::Manifest => format!("/acr/v1/{enc}/_manifests/{}", f.digest.replace(':', "%3A")),
    };
    let r = c
        .patch(s.url(&path))
        .json(&json!({ attr.field(): on }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "lock {level:?} {attr:?}");
}

/// Runs `route` against the fixture; returns the status, the error code and whether the
/// locked item was listed (for listings).
async fn run(
    c: &reqwest::Client,
    s: &Server,
    f: &Fixture,
    route: Route,
    level: Level,
) -> (u16, Option<String>, Option<bool>) {
    use Route::*;
    let repo = &f.repo;
    let enc = repo.replace('/', "%2F");
    let d = &f.digest;
    let ed = d.replace(':', "%3A");
    let other = format!("{repo}-src");
    let (method, path, body, ctype): (Method, String, Option<Vec<u8>>, Option<&str>) = match route {
        GetManifestByTag => (Method::GET, format!("/v2/{repo}/manifests/v1"), None, None),
        HeadManifestByTag => (Method::HEAD, format!("/v2/{repo}/manifests/v1"), None, None),
        GetManifestByDigest => (Method::GET, format!("/v2/{repo}/manifests/{d}"), None, None),
        HeadManifestByDigest => (
            Method::HEAD,
            format!("/v2/{repo}/manifests/{d}"),
            None,
            None,
        ),
        GetBlob => (
            Method::GET,
            format!("/v2/{repo}/blobs/{}", f.layer),
            None,
            None,
        ),
        HeadBlob => (
            Method::HEAD,
            format!("/v2/{repo}/blobs/{}", f.layer),
            None,
            None,
        ),
        Referrers => (Method::GET, format!("/v2/{repo}/referrers/{d}"), None, None),
        PutManifestOverTag => {
            // Another manifest (same blobs, an annotation) onto tag v1.
            let mut m: Value = serde_json::from_slice(&f.body).unwrap();
            m["annotations"] = json!({"x": "y"});
            (
                Method::PUT,
                format!("/v2/{repo}/manifests/v1"),
                Some(serde_json::to_vec(&m).unwrap()),
                Some("application/vnd.oci.image.manifest.v1+json"),
            )
        }
        PutManifestSameDigest => (
            Method::PUT,
            format!("/v2/{repo}/manifests/{d}"),
            Some(f.body.clone()),
            Some("application/vnd.oci.image.manifest.v1+json"),
        ),
        StartUpload => (
            Method::POST,
            format!("/v2/{repo}/blobs/uploads/"),
            None,
            None,
        ),
        UploadChunk => (
            Method::PATCH,
            f.upload.clone(),
            Some(b"chunk".to_vec()),
            Some("application/octet-stream"),
        ),
        UploadFinish => (
            Method::PUT,
            format!("{}?digest={}", f.upload, common::sha256(b"whole")),
            Some(b"whole".to_vec()),
            Some("application/octet-stream"),
        ),
        UploadStatus => (Method::GET, f.upload.clone(), None, None),
        UploadCancel => (Method::DELETE, f.upload.clone(), None, None),
        MountBlob => {
            let b = push_blob(c, s, &other, b"mounted").await;
            (
                Method::POST,
                format!("/v2/{repo}/blobs/uploads/?mount={b}&from={other}"),
                None,
                None,
            )
        }
        // The fixture's layer, from the (locked) repository into another.
        MountFromLocked => (
            Method::POST,
            format!(
                "/v2/{repo}-dst/blobs/uploads/?mount={}&from={repo}",
                f.layer
            ),
            None,
            None,
        ),
        DeleteManifestByDigest => (
            Method::DELETE,
            format!("/v2/{enc}/manifests/{ed}"),
            None,
            None,
        ),
        DeleteManifestByTag => (
            Method::DELETE,
            format!("/v2/{repo}/manifests/v1"),
            None,
            None,
        ),
        DeleteBlob => (
            Method::DELETE,
            format!("/v2/{repo}/blobs/{}", f.layer),
            None,
            None,
        ),
        TagsList => (Method::GET, format!("/v2/{repo}/tags/list"), None, None),
        Catalog => (Method::GET, "/v2/_catalog".into(), None, None),
        AcrGetRepo => (Method::GET, format!("/acr/v1/{enc}"), None, None),
        AcrPatchRepo => (
            Method::PATCH,
            format!("/acr/v1/{enc}"),
            Some(b"{\"teleportEnabled\":false}".to_vec()),
            Some("application/json"),
        ),
        AcrDeleteRepo => (Method::DELETE, format!("/acr/v1/{enc}"), None, None),
        AcrListTags => (Method::GET, format!("/acr/v1/{enc}/_tags"), None, None),
        AcrGetTag => (Method::GET, format!("/acr/v1/{enc}/_tags/v1"), None, None),
        AcrPatchTag => (
            Method::PATCH,
            format!("/acr/v1/{enc}/_tags/v1"),
            Some(b"{}".to_vec()),
            Some("application/json"),
        ),
        AcrUntag => (
            Method::DELETE,
            format!("/acr/v1/{enc}/_tags/v1"),
            None,
            None,
        ),
        AcrListManifests => (Method::GET, format!("/acr/v1/{enc}/_manifests"), None, None),
        AcrGetManifest => (
            Method::GET,
            format!("/acr/v1/{enc}/_manifests/{ed}"),
            None,
            None,
        ),
        AcrPatchManifest => (
            Method::PATCH,
            format!("/acr/v1/{enc}/_manifests/{ed}"),
            Some(b"{}".to_vec()),
            Some("application/json"),
        ),
        AcrCatalog => (Method::GET, "/acr/v1/_catalog".into(), None, None),
    };
    let mut req = c.request(method.clone(), s.url(&path));
    if let Some(t) = ctype {
        req = req.header("content-type", t);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = if method == Method::HEAD {
        Value::Null
    } else {
        r.json().await.unwrap_or(Value::Null)
    };
    let code = v["errors"][0]["code"].as_str().map(str::to_owned);
    let names = |arr: &Value, k: &str| -> Vec<String> {
        arr.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        if k.is_empty() {
                            x.as_str().unwrap_or_default().to_owned()
                        } else {
                            x[k].as_str().unwrap_or_default().to_owned()
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let listed = match route {
        TagsList => Some(names(&v["tags"], "").contains(&"v1".to_owned())),
        AcrListTags => Some(names(&v["tags"], "name").contains(&"v1".to_owned())),
        AcrListManifests => Some(names(&v["manifests"], "digest").contains(d)),
        Catalog | AcrCatalog => Some(names(&v["repositories"], "").contains(repo)),
        _ => None,
    };
    let _ = level;
    (status, code, listed)
}

#[tokio::test]
async fn every_route_against_every_lock_at_every_level() {
    let s = Server::start().await;
    let c = client();
    let mut cases: Vec<Option<(Level, Attr)>> = vec![None];
    for level in [Level::Repo, Level::Tag, Level::Manifest] {
        for attr in [Attr::Write, Attr::Delete, Attr::Read, Attr::List] {
            cases.push(Some((level, attr)));
        }
    }
    let mut failures = Vec::new();
    let mut n = 0;
    for (ci, case) in cases.iter().enumerate() {
        for (ri, route) in ROUTES.iter().enumerate() {
            n += 1;
            let f = fixture(&c, &s, &format!("lk/c{ci}/r{ri}")).await;
            if let Some((level, attr)) = case {
                lock(&c, &s, &f, *level, *attr, false).await;
            }
            let level = case.map(|(l, _)| l).unwrap_or(Level::Repo);
            let (status, code, listed) = run(&c, &s, &f, *route, level).await;
            let want = want(*route, *case);
            let ok = match want {
                Want::Ok(st) => status == st,
                Want::Blocked => {
                    status == 405
                        && (code.as_deref() == Some("REGISTRY_DISALLOWED_OPERATION")
                            || code.is_none()
                                && matches!(
                                    route,
                                    Route::HeadManifestByTag
                                        | Route::HeadManifestByDigest
                                        | Route::HeadBlob
                                ))
                }
                Want::Listed(l) => status == 200 && listed == Some(l),
            };
            if !ok {
                failures.push(format!(
                    "{case:?} {route:?}: want {want:?}, got {status} {code:?} listed={listed:?}"
                ));
            }
            // A mount that fell back to an upload mounted nothing: the blob cannot be read
            // through the target.
            if *route == Route::MountFromLocked && status == 202 {
                let r = c
                    .get(s.url(&format!("/v2/{}-dst/blobs/{}", f.repo, f.layer)))
                    .send()
                    .await
                    .unwrap();
                if r.status() != 404 {
                    failures.push(format!(
                        "{case:?} {route:?}: not mounted, but the target serves it: {}",
                        r.status()
                    ));
                }
            }
            // A refused change changed nothing: the tag still points at the manifest.
            if want == Want::Blocked {
                let r = c
                    .get(s.url(&format!("/acr/v1/{}/_tags/v1", f.repo.replace('/', "%2F"))))
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json().await.unwrap();
                if v["tag"]["digest"] != json!(f.digest) {
                    failures.push(format!("{case:?} {route:?}: refused but changed: {v}"));
                }
            }
        }
    }
    assert!(n >= 13 * 32);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Lifting a lock lifts the refusal; locks at one level leave the others alone.
#[tokio::test]
async fn unlocking_restores_the_operation() {
    let s = Server::start().await;
    let c = client();
    let f = fixture(&c, &s, "unlock/me").await;
    lock(&c, &s, &f, Level::Repo, Attr::Read, false).await;
    let url = s.url(&format!("/v2/{}/manifests/v1", f.repo));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "REGISTRY_DISALLOWED_OPERATION");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("disallowed")
    );
    assert_eq!(v["errors"][0]["detail"], json!({}));
    lock(&c, &s, &f, Level::Repo, Attr::Read, true).await;
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);

    // A tag lock: the tag cannot be moved, but the manifest can still get other tags.
    lock(&c, &s, &f, Level::Tag, Attr::Write, false).await;
    let r = c
        .put(s.url(&format!("/v2/{}/manifests/v2", f.repo)))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(f.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    lock(&c, &s, &f, Level::Tag, Attr::Write, true).await;
    let r = c
        .delete(s.url(&format!("/v2/{}/manifests/{}", f.repo, f.digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

/// A mount reads its source: from a read-locked repository nothing is mounted, with `from` or
/// by automatic mounting (no `from`), and the client gets a plain upload session (202).
#[tokio::test]
async fn a_read_lock_is_not_bypassed_by_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = wharf::config::Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    cfg.automatic_mount = true;
    let s = Server::start_config(cfg).await;
    let c = client();
    let f = fixture(&c, &s, "lib/hello").await;
    lock(&c, &s, &f, Level::Repo, Attr::Read, false).await;
    for q in [
        format!("mount={}&from=lib/hello", f.layer),
        format!("mount={}", f.layer),
    ] {
        let r = c
            .post(s.url(&format!("/v2/lk/blobs/uploads/?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{q}");
        let r = c
            .get(s.url(&format!("/v2/lk/blobs/{}", f.layer)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{q}");
    }
    // Unlocked, both mount.
    lock(&c, &s, &f, Level::Repo, Attr::Read, true).await;
    for (i, q) in [
        format!("mount={}&from=lib/hello", f.layer),
        format!("mount={}", f.layer),
    ]
    .iter()
    .enumerate()
    {
        let r = c
            .post(s.url(&format!("/v2/lk{i}/blobs/uploads/?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{q}");
    }
}
