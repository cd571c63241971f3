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

/// Property tests: the scanners accept exactly the spec's regular expressions (checked against
/// the `regex` crate as an independent oracle), never panic, and round-trip what they accept.
#[cfg(test)]
mod proptests {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use regex::Regex;

    use super::*;

    /// One path component of the spec's name grammar. Runs are bounded so that four
    /// components stay below [`MAX_NAME_LEN`]; longer names are generated separately.
    const COMPONENT: &str = r"[a-z0-9]{1,8}((\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}";
    const NAME_RE: &str =
        r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$";
    const TAG: &str = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";
    const TAG_RE: &str = r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$";

    fn valid_name() -> impl Strategy<Value = String> {
        prop::collection::vec(COMPONENT, 1..=4).prop_map(|c| c.join("/"))
    }

    fn spec_name(s: &str) -> bool {
        static RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(NAME_RE).unwrap());
        s.len() <= MAX_NAME_LEN && RE.is_match(s)
    }

    fn spec_tag(s: &str) -> bool {
        static RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(TAG_RE).unwrap());
        RE.is_match(s)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn valid_names_parse_and_round_trip(s in valid_name()) {
            let n = RepoName::parse(&s).unwrap();
            prop_assert_eq!(n.as_str(), s.as_str());
            prop_assert_eq!(RepoName::parse(&n.to_string()).unwrap(), n);
        }

        /// Near the grammar (its alphabet, separators in every arrangement, a few foreign
        /// characters) so that every branch of the scanner is taken, with the regex as oracle.
        #[test]
        fn names_are_accepted_exactly_by_the_spec_grammar(s in r"[a-z0-9._/-]{0,24}|[a-zA-Z0-9._/:@ -]{0,12}") {
            prop_assert_eq!(RepoName::parse(&s).is_ok(), spec_name(&s), "{:?}", s);
        }

        /// One edit away from a valid name (a separator doubled, tripled or moved to an edge,
        /// an upper-case letter, a `:`), where an off-by-one in the scanner would show.
        #[test]
        fn names_one_edit_from_valid_are_judged_by_the_spec_grammar(
            s in valid_name(),
            at in any::<prop::sample::Index>(),
            c in prop::sample::select(vec!['.', '_', '-', '/', 'A', ':', '0']),
            delete in any::<bool>(),
        ) {
            let mut s = s;
            let i = at.index(s.len() + 1);
            if delete && i < s.len() {
                s.remove(i);
            } else {
                s.insert(i, c);
            }
            prop_assert_eq!(RepoName::parse(&s).is_ok(), spec_name(&s), "{:?}", s);
        }

        /// Around the length cap: as many components as it takes to cross 255 characters.
        #[test]
        fn long_names_are_capped_at_255(c in prop::collection::vec(COMPONENT, 1..=16)) {
            let s = c.join("/");
            prop_assert_eq!(RepoName::parse(&s).is_ok(), s.len() <= MAX_NAME_LEN);
        }

        #[test]
        fn arbitrary_strings_never_panic_and_only_spec_names_pass(s in any::<String>()) {
            prop_assert_eq!(RepoName::parse(&s).is_ok(), spec_name(&s));
            prop_assert_eq!(Tag::parse(&s).is_ok(), spec_tag(&s));
            let _ = Reference::parse(&s);
        }

        #[test]
        fn valid_tags_parse_and_round_trip(s in TAG) {
            let t = Tag::parse(&s).unwrap();
            prop_assert_eq!(t.to_string(), s.clone());
            let r = Reference::parse(&s).unwrap();
            prop_assert_eq!(&r, &Reference::Tag(t));
            prop_assert_eq!(r.to_string(), s);
        }

        #[test]
        fn tags_are_accepted_exactly_by_the_spec_grammar(s in r"[a-zA-Z0-9._/:+-]{0,4}|[a-z_.-]{126,130}") {
            prop_assert_eq!(Tag::parse(&s).is_ok(), spec_tag(&s), "{:?}", s);
        }

        #[test]
        fn digest_references_round_trip(hex in "[a-f0-9]{64}") {
            let s = format!("sha256:{hex}");
            let r = Reference::parse(&s).unwrap();
            prop_assert!(matches!(r, Reference::Digest(_)));
            prop_assert_eq!(r.to_string(), s);
        }
    }
}
