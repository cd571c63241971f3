//! Parses `/v2/...` paths into a typed [`OciEndpoint`], reading from the right: repository
//! names contain slashes, but the last segments of every endpoint are fixed words.

use wharf_core::{Digest, ErrorCode, NameError, Reference, RepoName, Tag};

/// An endpoint of the distribution spec, with the spec's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciEndpoint {
    /// end-1: `GET /v2/`
    Base,
    /// `GET /v2/_catalog` (a reserved prior extension, defined by Distribution)
    Catalog,
    /// end-8a/8b: `GET /v2/<name>/tags/list`
    Tags(RepoName),
    /// end-3, end-7, end-9: `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// A manifest URL whose reference is not a valid tag (and does not look like a digest):
    /// nothing can be stored under it, so reads and deletes answer 404 and a PUT 400.
    InvalidTag(RepoName, String),
    /// end-2, end-10: `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// end-4a/4b/11: `POST /v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// end-5, end-6, end-13, end-14: `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// end-12a/12b: `GET /v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

/// Why a path was refused, as the spec's error code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub code: ErrorCode,
    pub status: u16,
    pub message: String,
}

fn err(code: ErrorCode, status: u16, message: impl Into<String>) -> PathError {
    PathError {
        code,
        status,
        message: message.into(),
    }
}

fn name(s: &str) -> Result<RepoName, PathError> {
    RepoName::parse(s).map_err(|e| err(ErrorCode::NameInvalid, 400, e.to_string()))
}

fn digest(s: &str) -> Result<Digest, PathError> {
    Digest::parse(s).map_err(|e| err(ErrorCode::DigestInvalid, 400, e.to_string()))
}

/// Parses the part of the path after `/v2/` (percent-decoding is not needed: no valid name,
/// tag or digest contains an escaped character).
pub fn parse(rest: &str) -> Result<OciEndpoint, PathError> {
    let not_found = || err(ErrorCode::NameUnknown, 404, "no such endpoint");
    if rest.is_empty() {
        return Ok(OciEndpoint::Base);
    }
    if rest == "_catalog" {
        return Ok(OciEndpoint::Catalog);
    }
    if let Some(n) = rest.strip_suffix("/tags/list") {
        return Ok(OciEndpoint::Tags(name(n)?));
    }
    if let Some(n) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Ok(OciEndpoint::UploadStart(name(n)?));
    }
    let (head, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
    if let Some(n) = head.strip_suffix("/blobs/uploads") {
        return Ok(OciEndpoint::Upload(name(n)?, last.to_owned()));
    }
    let (n, kind) = head.rsplit_once('/').ok_or_else(not_found)?;
    match kind {
        "manifests" => {
            let repo = name(n)?;
            match Reference::parse(last) {
                Ok(reference) => Ok(OciEndpoint::Manifest(repo, reference)),
                Err(NameError::Digest(d)) => Err(err(ErrorCode::DigestInvalid, 400, d.to_string())),
                Err(_) => Ok(OciEndpoint::InvalidTag(repo, last.to_owned())),
            }
        }
        "blobs" => Ok(OciEndpoint::Blob(name(n)?, digest(last)?)),
        "referrers" => Ok(OciEndpoint::Referrers(name(n)?, digest(last)?)),
        _ => Err(not_found()),
    }
}

/// An endpoint of ACR's `/acr/v1` data plane (acr-auth.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcrEndpoint {
    /// `/acr/v1/_catalog`
    Catalog,
    /// `/acr/v1/{name}`
    Repo(RepoName),
    /// `/acr/v1/{name}/_tags`
    Tags(RepoName),
    /// `/acr/v1/{name}/_tags/{reference}`
    Tag(RepoName, Tag),
    /// `/acr/v1/{name}/_manifests`
    Manifests(RepoName),
    /// `/acr/v1/{name}/_manifests/{digest}` (a tag is accepted and resolved)
    Manifest(RepoName, Reference),
}

/// Parses the percent-decoded part of the path after `/acr/v1/`. No name component can
/// start with `_`, so `_tags` and `_manifests` are unambiguous wherever they appear.
pub fn parse_acr(rest: &str) -> Result<AcrEndpoint, PathError> {
    if rest == "_catalog" {
        return Ok(AcrEndpoint::Catalog);
    }
    if let Some(n) = rest.strip_suffix("/_tags") {
        return Ok(AcrEndpoint::Tags(name(n)?));
    }
    if let Some(n) = rest.strip_suffix("/_manifests") {
        return Ok(AcrEndpoint::Manifests(name(n)?));
    }
    if let Some((n, t)) = rest.rsplit_once("/_tags/") {
        let repo = name(n)?;
        let tag = Tag::parse(t).map_err(|_| {
            err(
                ErrorCode::TagUnknown,
                404,
                "the specified tag does not exist",
            )
        })?;
        return Ok(AcrEndpoint::Tag(repo, tag));
    }
    if let Some((n, r)) = rest.rsplit_once("/_manifests/") {
        let repo = name(n)?;
        return match Reference::parse(r) {
            Ok(reference) => Ok(AcrEndpoint::Manifest(repo, reference)),
            Err(NameError::Digest(d)) => Err(err(ErrorCode::DigestInvalid, 400, d.to_string())),
            Err(_) => Err(err(ErrorCode::ManifestUnknown, 404, "manifest unknown")),
        };
    }
    Ok(AcrEndpoint::Repo(name(rest)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        Digest::sha256_of(b"x").to_string()
    }

    #[test]
    fn parses_every_endpoint() {
        let r = |s: &str| RepoName::parse(s).unwrap();
        let dg = Digest::parse(&d()).unwrap();
        let cases: Vec<(String, OciEndpoint)> = vec![
            ("".into(), OciEndpoint::Base),
            ("_catalog".into(), OciEndpoint::Catalog),
            ("a/b/tags/list".into(), OciEndpoint::Tags(r("a/b"))),
            (
                "a/b/manifests/v1".into(),
                OciEndpoint::Manifest(r("a/b"), Reference::parse("v1").unwrap()),
            ),
            (
                format!("a/manifests/{}", d()),
                OciEndpoint::Manifest(r("a"), Reference::Digest(dg.clone())),
            ),
            (
                format!("a/b/c/blobs/{}", d()),
                OciEndpoint::Blob(r("a/b/c"), dg.clone()),
            ),
            ("a/blobs/uploads/".into(), OciEndpoint::UploadStart(r("a"))),
            ("a/blobs/uploads".into(), OciEndpoint::UploadStart(r("a"))),
            (
                "a/b/blobs/uploads/abc".into(),
                OciEndpoint::Upload(r("a/b"), "abc".into()),
            ),
            (
                format!("a/referrers/{}", d()),
                OciEndpoint::Referrers(r("a"), dg.clone()),
            ),
            // Repository names may end in words the grammar uses elsewhere.
            (
                "manifests/tags/list".into(),
                OciEndpoint::Tags(r("manifests")),
            ),
            (
                format!("blobs/blobs/{}", d()),
                OciEndpoint::Blob(r("blobs"), dg),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), Ok(want), "{path}");
        }
    }

    #[test]
    fn parses_acr_endpoints() {
        let r = |s: &str| RepoName::parse(s).unwrap();
        assert_eq!(parse_acr("_catalog"), Ok(AcrEndpoint::Catalog));
        assert_eq!(parse_acr("a/b"), Ok(AcrEndpoint::Repo(r("a/b"))));
        assert_eq!(parse_acr("a/b/_tags"), Ok(AcrEndpoint::Tags(r("a/b"))));
        assert_eq!(
            parse_acr("a/_tags/v1"),
            Ok(AcrEndpoint::Tag(r("a"), Tag::parse("v1").unwrap()))
        );
        assert_eq!(
            parse_acr("a/_manifests"),
            Ok(AcrEndpoint::Manifests(r("a")))
        );
        let dg = Digest::parse(&d()).unwrap();
        assert_eq!(
            parse_acr(&format!("a/b/_manifests/{}", d())),
            Ok(AcrEndpoint::Manifest(r("a/b"), Reference::Digest(dg)))
        );
        // Names may end in words other endpoints use.
        assert_eq!(
            parse_acr("tags/manifests"),
            Ok(AcrEndpoint::Repo(r("tags/manifests")))
        );
        assert_eq!(parse_acr("A").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(
            parse_acr("a/_tags/-x").unwrap_err().code,
            ErrorCode::TagUnknown
        );
        assert_eq!(
            parse_acr("a/_manifests/sha256:12").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
    }

    #[test]
    fn refuses_bad_paths_with_spec_codes() {
        assert_eq!(
            parse("A/tags/list").unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert_eq!(
            parse("a/blobs/sha256:zz").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
        assert_eq!(
            parse("a/blobs/md5:00").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
        assert_eq!(
            parse("a/manifests/sha256:1").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
        assert!(matches!(
            parse("a/manifests/-bad"),
            Ok(OciEndpoint::InvalidTag(..))
        ));
        assert_eq!(
            parse("a/referrers/nope").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
        assert_eq!(parse("a").unwrap_err().status, 404);
        assert_eq!(parse("a/b/c").unwrap_err().status, 404);
    }
}

/// Property tests: no path panics the parser, and the path of every endpoint parses back to
/// that endpoint, including names made of the words the grammar uses as fixed segments.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    /// A name component: generated, or one of the fixed words of the endpoint grammar, which
    /// are valid components too and are what a right-to-left parser could trip on.
    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            r"[a-z0-9]{1,6}((\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}",
            prop::sample::select(vec![
                "blobs",
                "uploads",
                "manifests",
                "tags",
                "list",
                "referrers",
                "v2",
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn repo() -> impl Strategy<Value = RepoName> {
        prop::collection::vec(component(), 1..=4)
            .prop_map(|c| RepoName::parse(&c.join("/")).unwrap())
    }

    fn digest() -> impl Strategy<Value = Digest> {
        prop_oneof!["sha256:[a-f0-9]{64}", "sha512:[a-f0-9]{128}"]
            .prop_map(|s| Digest::parse(&s).unwrap())
    }

    fn reference() -> impl Strategy<Value = Reference> {
        prop_oneof![
            r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}"
                .prop_map(|t| Reference::Tag(wharf_core::Tag::parse(&t).unwrap())),
            digest().prop_map(Reference::Digest),
        ]
    }

    /// Every endpoint, with the path that names it.
    fn endpoint() -> impl Strategy<Value = (String, OciEndpoint)> {
        prop_oneof![
            Just((String::new(), OciEndpoint::Base)),
            Just(("_catalog".to_owned(), OciEndpoint::Catalog)),
            repo().prop_map(|n| (format!("{n}/tags/list"), OciEndpoint::Tags(n))),
            (repo(), reference())
                .prop_map(|(n, r)| (format!("{n}/manifests/{r}"), OciEndpoint::Manifest(n, r))),
            (
                repo(),
                r"[.-][a-zA-Z0-9._-]{0,8}|[a-zA-Z0-9_][a-zA-Z0-9._-]{128,130}|[a-z]{1,4}[+@!~][a-z]{0,4}"
            )
                .prop_map(|(n, t)| (format!("{n}/manifests/{t}"), OciEndpoint::InvalidTag(n, t))),
            (repo(), digest())
                .prop_map(|(n, d)| (format!("{n}/blobs/{d}"), OciEndpoint::Blob(n, d))),
            (repo(), any::<bool>()).prop_map(|(n, slash)| {
                let path = format!("{n}/blobs/uploads{}", if slash { "/" } else { "" });
                (path, OciEndpoint::UploadStart(n))
            }),
            (repo(), "[a-zA-Z0-9_=-]{1,40}").prop_map(|(n, id)| {
                (
                    format!("{n}/blobs/uploads/{id}"),
                    OciEndpoint::Upload(n, id),
                )
            }),
            (repo(), digest())
                .prop_map(|(n, d)| (format!("{n}/referrers/{d}"), OciEndpoint::Referrers(n, d))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_paths_never_panic(s in any::<String>()) {
            let _ = parse(&s);
        }

        /// Paths made of the grammar's own pieces in any order, with stray slashes.
        #[test]
        fn paths_of_grammar_words_never_panic(
            parts in prop::collection::vec(
                r"blobs|uploads|manifests|tags|list|referrers|_catalog|sha256:[a-f0-9]{0,65}|[a-zA-Z:.-]{0,3}",
                0..7,
            ),
        ) {
            let _ = parse(&parts.join("/"));
        }

        #[test]
        fn every_endpoint_parses_back((path, want) in endpoint()) {
            prop_assert_eq!(parse(&path), Ok(want), "{}", path);
        }

        /// A malformed digest is the spec's DIGEST_INVALID, not a 404 or a tag.
        #[test]
        fn malformed_digests_are_digest_invalid(
            n in repo(),
            kind in "blobs|referrers|manifests",
            d in "sha256:[a-f0-9]{0,63}|sha512:[a-f0-9]{64}|md5:[a-f0-9]{32}|sha256:[A-F]{64}",
        ) {
            let got = parse(&format!("{n}/{kind}/{d}"));
            prop_assert_eq!(got.map_err(|e| e.code), Err(ErrorCode::DigestInvalid));
        }
    }
}
