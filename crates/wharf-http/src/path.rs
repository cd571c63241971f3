//! Parses `/v2/...` paths into a typed [`OciEndpoint`], reading from the right: repository
//! names contain slashes, but the last segments of every endpoint are fixed words.

use wharf_core::{Digest, ErrorCode, NameError, Reference, RepoName};

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
