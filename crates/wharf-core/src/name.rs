//! Repository names, tags and references, validated against the distribution spec's grammar.
//!
//! The grammar is simple enough that a hand-written scanner is clearer and cheaper than pulling
//! a regex engine into the vocabulary crate.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Longest repository name we accept. Clients cap `host[:port]/name` at 255 characters.
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "repository name must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)* and be at most 255 characters"
    )]
    InvalidName,
    #[error("tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag,
    #[error("reference is neither a valid tag nor a valid digest")]
    InvalidReference,
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A repository name such as `library/nginx`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(NameError::InvalidName);
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // One alphanumeric run.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // A separator: `.`, `_`, `__` or one or more `-`.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == b.len() {
            return false;
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag such as `v1.2.3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::InvalidTag)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(Digest::parse(s)?))
        } else {
            Tag::parse(s)
                .map(Reference::Tag)
                .map_err(|_| NameError::InvalidReference)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_follow_the_spec_grammar() {
        for good in [
            "a",
            "library/nginx",
            "a.b_c__d---e/f0",
            "conformance/tests-1",
            "x/y/z/w",
        ] {
            assert!(RepoName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a_",
            "a b",
            "a:b",
            &"a".repeat(256),
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        assert!(Tag::parse("latest").is_ok());
        assert!(Tag::parse("_x.Y-1").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        assert!(Tag::parse(&"a".repeat(129)).is_err());
        assert!(Tag::parse(".a").is_err());
        assert!(Tag::parse("-a").is_err());
        assert!(Tag::parse("a/b").is_err());
        assert!(Tag::parse("").is_err());
    }

    #[test]
    fn references_are_tags_or_digests() {
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
        let d = Digest::sha256_of(b"x").to_string();
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:nothex").is_err());
        assert!(Reference::parse("a b").is_err());
    }
}
