//! Webhook configuration vocabulary as ACR defines it: the actions a webhook subscribes to, its
//! status, its name, and the scope that decides which repository events it receives.
//!
//! Everything here is validated once, at parse time, so the delivery path can match events
//! against scopes without re-checking the configuration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A repository pattern longer than any repository name could never match, so it is rejected
/// instead of being stored. 255 is the cap the distribution clients put on names.
const MAX_REPOSITORY_PATTERN_LEN: usize = 255;

/// The distribution spec caps tags at 128 characters; a longer pattern would be a typo.
const MAX_TAG_PATTERN_LEN: usize = 128;

/// What a bare `repo` scope (no `:`) stands for, per ACR.
const DEFAULT_TAG: &str = "latest";

/// A rejected webhook setting. Messages start with the ARM property name so that the HTTP layer
/// can return them verbatim and the user knows which field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("name: must be 5 to 50 letters and digits")]
    InvalidName,
    #[error("scope: must contain at most one ':' (between repository and tag)")]
    ScopeTooManyColons,
    #[error(
        "scope: repository part must be 1 to 255 characters from a-z, 0-9, '.', '_', '-', '/' and the wildcard '*'"
    )]
    ScopeRepository,
    #[error(
        "scope: tag part must be 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', '-' and the wildcard '*'"
    )]
    ScopeTag,
    #[error(
        "actions: unknown action {0:?}, expected one of push, delete, quarantine, chart_push, chart_delete"
    )]
    UnknownAction(String),
    #[error("status: unknown value {0:?}, expected enabled or disabled")]
    UnknownStatus(String),
}

/// Serialises through `as_str` and deserialises through `FromStr`, so the JSON form and the
/// case-insensitive parsing rules cannot drift apart.
macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// An event kind a webhook can subscribe to. `ping` is not one: it is sent on request only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookAction {
    Push,
    Delete,
    Quarantine,
    ChartPush,
    ChartDelete,
}

impl WebhookAction {
    pub const ALL: [WebhookAction; 5] = [
        WebhookAction::Push,
        WebhookAction::Delete,
        WebhookAction::Quarantine,
        WebhookAction::ChartPush,
        WebhookAction::ChartDelete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAction::Push => "push",
            WebhookAction::Delete => "delete",
            WebhookAction::Quarantine => "quarantine",
            WebhookAction::ChartPush => "chart_push",
            WebhookAction::ChartDelete => "chart_delete",
        }
    }
}

impl FromStr for WebhookAction {
    type Err = WebhookError;

    /// Case-insensitive because ACR's enums are `modelAsString` and the Azure SDKs compare them
    /// ignoring case; a client sending `Push` must keep working.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookAction::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| WebhookError::UnknownAction(s.to_owned()))
    }
}

string_serde!(WebhookAction);

/// Whether a webhook delivers. A disabled webhook still exists and still matches events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WebhookStatus {
    /// The CLI and the portal default to enabled; ARM's own default is undocumented.
    #[default]
    Enabled,
    Disabled,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Enabled => "enabled",
            WebhookStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for WebhookStatus {
    type Err = WebhookError;

    /// Case-insensitive for the same reason as [`WebhookAction`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [WebhookStatus::Enabled, WebhookStatus::Disabled]
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| WebhookError::UnknownStatus(s.to_owned()))
    }
}

string_serde!(WebhookStatus);

/// A webhook name: 5 to 50 ASCII letters and digits (`^[a-zA-Z0-9]*$` in the ARM spec). It is
/// also a URL path segment, which is why nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookName(String);

impl WebhookName {
    pub fn parse(s: &str) -> Result<Self, WebhookError> {
        if (5..=50).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(WebhookName(s.to_owned()))
        } else {
            Err(WebhookError::InvalidName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WebhookName {
    type Err = WebhookError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookName::parse(s)
    }
}

string_serde!(WebhookName);

/// Which repository events a webhook receives.
///
/// The forms ACR documents, plus `*` wildcards:
///
/// | scope | matches |
/// |---|---|
/// | `""` (empty) | every event, tagged or not |
/// | `repo:tag` | exactly that repository and tag |
/// | `repo:*` | every tag of `repo`, and `repo`'s events without a tag |
/// | `repo` (no `:`) | `repo:latest`, as ACR defines it |
/// | `retail/web-api:prod-*`, `production/*:*`, `*:latest`, `*:*` | glob on each part |
///
/// A `*` matches any run of characters, including none. In the repository part it also crosses
/// `/`, so `production/*` covers `production/a/b`. The scope is split at its *last* `:`, since
/// repository names may contain `/` but never `:`. Bare `*` follows the bare-repository rule and
/// means `*:latest`; write `*:*` (or leave the scope empty) for everything.
///
/// **Events without a tag** (a `delete`, a push by digest) match only when the tag pattern is
/// `*` (any pattern made of `*` alone, such as `**`, counts) or the scope is empty, and the
/// repository part matches as usual. A tag-specific pattern (`repo:v1`, `repo:prod-*`, bare
/// `repo`) never matches them: such a webhook asked for particular tags, and an event that
/// names no tag cannot be shown to concern one of them. An empty tag (`Some("")`, which some
/// ACR fixtures send for digest pushes) counts as no tag.
///
/// Matching is case-sensitive: repository names are lower-case by grammar, and tags are
/// case-sensitive in the distribution spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Scope {
    /// The scope exactly as configured, so that it reads back the way the user typed it.
    raw: String,
    /// Byte offset of the `:` separating repository and tag; `None` for empty and bare scopes.
    colon: Option<usize>,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Self, WebhookError> {
        if s.is_empty() {
            return Ok(Scope::default());
        }
        let colon = s.rfind(':');
        let (repository, tag) = match colon {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        if repository.contains(':') {
            return Err(WebhookError::ScopeTooManyColons);
        }
        let repository_ok = !repository.is_empty()
            && repository.len() <= MAX_REPOSITORY_PATTERN_LEN
            && repository
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'/' | b'-' | b'*'));
        if !repository_ok {
            return Err(WebhookError::ScopeRepository);
        }
        if let Some(tag) = tag {
            let tag_ok = !tag.is_empty()
                && tag.len() <= MAX_TAG_PATTERN_LEN
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*'));
            if !tag_ok {
                return Err(WebhookError::ScopeTag);
            }
        }
        Ok(Scope {
            raw: s.to_owned(),
            colon,
        })
    }

    /// The scope as configured: `""` stays empty and a bare `repo` stays bare.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True when every event matches, tagged or not: the empty scope, or `*:*` and its
    /// equivalents. Lets callers skip matching and show "all repositories".
    pub fn is_everything(&self) -> bool {
        match self.parts() {
            None => true,
            Some((repository, tag)) => only_stars(repository) && only_stars(tag),
        }
    }

    /// Whether an event on `repository`, with `tag` if it has one, falls within this scope.
    /// See the type's documentation for the rule on events without a tag.
    pub fn matches(&self, repository: &str, tag: Option<&str>) -> bool {
        let Some((repository_pattern, tag_pattern)) = self.parts() else {
            return true;
        };
        if !glob_match(repository_pattern.as_bytes(), repository.as_bytes()) {
            return false;
        }
        match tag.filter(|t| !t.is_empty()) {
            Some(tag) => glob_match(tag_pattern.as_bytes(), tag.as_bytes()),
            None => only_stars(tag_pattern),
        }
    }

    /// `(repository pattern, tag pattern)`, with a bare scope's implied `latest`; `None` for the
    /// empty scope.
    fn parts(&self) -> Option<(&str, &str)> {
        if self.raw.is_empty() {
            return None;
        }
        Some(match self.colon {
            Some(i) => (&self.raw[..i], &self.raw[i + 1..]),
            None => (self.raw.as_str(), DEFAULT_TAG),
        })
    }
}

impl FromStr for Scope {
    type Err = WebhookError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::parse(s)
    }
}

string_serde!(Scope);

fn only_stars(pattern: &str) -> bool {
    pattern.bytes().all(|b| b == b'*')
}

/// Glob match where `*` is the only metacharacter and matches any run of bytes, `/` included.
///
/// Two pointers with a single backtrack point: on a mismatch we return to the most recent `*`
/// and let it swallow one more byte. Earlier stars never need revisiting, because the latest
/// star can already absorb anything they could, so the worst case is O(pattern × text) rather
/// than the exponential blow-up of naive recursion.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Pattern index just after the latest `*`, and the text index that star is matched up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                backtrack = Some((p, t));
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star_p, star_t)) => {
                    p = star_p;
                    t = star_t + 1;
                    backtrack = Some((star_p, t));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matching_table() {
        // (scope, repository, tag, expected)
        let cases: &[(&str, &str, Option<&str>, bool)] = &[
            // Empty scope: everything, tagged or not.
            ("", "foo", Some("latest"), true),
            ("", "samples/nginx", Some("v1"), true),
            ("", "foo", None, true),
            ("", "a/b/c", None, true),
            // repo:tag, exact.
            ("foo:bar", "foo", Some("bar"), true),
            ("foo:bar", "foo", Some("baz"), false),
            ("foo:bar", "foo", Some("bar2"), false),
            ("foo:bar", "foo", Some("ba"), false),
            ("foo:bar", "foo", Some("Bar"), false),
            ("foo:bar", "foobar", Some("bar"), false),
            ("foo:bar", "fo", Some("bar"), false),
            ("foo:bar", "foo/bar", Some("bar"), false),
            ("foo:bar", "x/foo", Some("bar"), false),
            ("foo:bar", "foo", None, false),
            ("samples/nginx:1.25", "samples/nginx", Some("1.25"), true),
            ("samples/nginx:1.25", "samples/nginx", Some("1.26"), false),
            ("samples/nginx:1.25", "nginx", Some("1.25"), false),
            ("samples/nginx:1.25", "samples/nginx2", Some("1.25"), false),
            // repo:*, every tag plus tag-less events.
            ("foo:*", "foo", Some("latest"), true),
            ("foo:*", "foo", Some("v1.2.3"), true),
            ("foo:*", "foo", None, true),
            ("foo:*", "foo", Some(""), true),
            ("foo:*", "foobar", Some("latest"), false),
            ("foo:*", "foo/bar", Some("latest"), false),
            ("foo:*", "foo/bar", None, false),
            ("foo:*", "bar", None, false),
            ("samples/nginx:*", "samples/nginx", Some("alpine"), true),
            ("samples/nginx:*", "samples/nginx", None, true),
            ("samples/nginx:*", "samples", Some("alpine"), false),
            (
                "samples/nginx:*",
                "samples/nginx/extra",
                Some("alpine"),
                false,
            ),
            // Bare repo = repo:latest.
            ("foo", "foo", Some("latest"), true),
            ("foo", "foo", Some("v1"), false),
            ("foo", "foo", Some("Latest"), false),
            ("foo", "foo", None, false),
            ("foo", "foo", Some(""), false),
            ("foo", "foobar", Some("latest"), false),
            ("samples/nginx", "samples/nginx", Some("latest"), true),
            ("samples/nginx", "samples/nginx", Some("stable"), false),
            // Wildcards in the tag part.
            (
                "retail/web-api:prod-*",
                "retail/web-api",
                Some("prod-1"),
                true,
            ),
            (
                "retail/web-api:prod-*",
                "retail/web-api",
                Some("prod-"),
                true,
            ),
            (
                "retail/web-api:prod-*",
                "retail/web-api",
                Some("prod"),
                false,
            ),
            (
                "retail/web-api:prod-*",
                "retail/web-api",
                Some("staging-1"),
                false,
            ),
            (
                "retail/web-api:prod-*",
                "retail/web-api",
                Some("xprod-1"),
                false,
            ),
            ("retail/web-api:prod-*", "retail/web-api", None, false),
            (
                "retail/web-api:prod-*",
                "retail/web-api2",
                Some("prod-1"),
                false,
            ),
            ("foo:*-rc*", "foo", Some("1.0-rc1"), true),
            ("foo:*-rc*", "foo", Some("-rc"), true),
            ("foo:*-rc*", "foo", Some("1.0-r"), false),
            ("foo:v*.*.*", "foo", Some("v1.2.3"), true),
            ("foo:v*.*.*", "foo", Some("v1.2"), false),
            ("foo:*.tgz", "helm", Some("a.tgz"), false),
            ("helm:*.tgz", "helm", Some("ingress-proxy-3.2.0.tgz"), true),
            // Wildcards in the repository part; `*` crosses `/`.
            ("production/*:*", "production/api", Some("v1"), true),
            ("production/*:*", "production/team/api", Some("v1"), true),
            ("production/*:*", "production/api", None, true),
            ("production/*:*", "production", Some("v1"), false),
            ("production/*:*", "production2/api", Some("v1"), false),
            (
                "production/*:*",
                "staging/production/api",
                Some("v1"),
                false,
            ),
            ("*:latest", "foo", Some("latest"), true),
            ("*:latest", "samples/nginx", Some("latest"), true),
            ("*:latest", "foo", Some("v1"), false),
            ("*:latest", "foo", None, false),
            ("*/nginx:*", "samples/nginx", Some("1"), true),
            ("*/nginx:*", "a/b/nginx", Some("1"), true),
            ("*/nginx:*", "nginx", Some("1"), false),
            ("*/nginx:*", "samples/nginx-extras", Some("1"), false),
            ("team-*/api:*", "team-a/api", Some("1"), true),
            ("team-*/api:*", "team-a/b/api", Some("1"), true),
            ("team-*/api:*", "team-a/api/v2", Some("1"), false),
            ("*nginx*:*", "samples/nginx-extras", None, true),
            ("a*b*c:*", "a/x/b/y/c", Some("t"), true),
            ("a*b*c:*", "a/x/b/y/cd", Some("t"), false),
            ("**:*", "anything/at/all", None, true),
            ("foo:**", "foo", None, true),
            ("*:*", "x", None, true),
            ("*:*", "x/y", Some("z"), true),
            // Bare wildcard repositories follow the bare rule: tag `latest`.
            ("*", "foo", Some("latest"), true),
            ("*", "foo", Some("v1"), false),
            ("*", "foo", None, false),
            ("production/*", "production/api", Some("latest"), true),
            ("production/*", "production/api", Some("v2"), false),
        ];
        for &(scope, repository, tag, expected) in cases {
            let parsed = Scope::parse(scope).unwrap_or_else(|e| panic!("{scope:?}: {e}"));
            assert_eq!(
                parsed.matches(repository, tag),
                expected,
                "scope {scope:?} vs {repository:?} tag {tag:?}"
            );
            assert_eq!(parsed.as_str(), scope);
        }
    }

    #[test]
    fn scope_everything() {
        for s in ["", "*:*", "**:*", "*:**"] {
            assert!(Scope::parse(s).unwrap().is_everything(), "{s:?}");
        }
        for s in ["*", "foo:*", "*:latest", "*/x:*", "foo"] {
            assert!(!Scope::parse(s).unwrap().is_everything(), "{s:?}");
        }
        assert!(Scope::default().is_everything());
        assert_eq!(Scope::default().as_str(), "");
    }

    #[test]
    fn invalid_scopes() {
        use WebhookError::*;
        let long_tag = format!("foo:{}", "a".repeat(129));
        let max_tag = format!("foo:{}", "a".repeat(128));
        let long_repo = "a".repeat(256);
        let cases: &[(&str, WebhookError)] = &[
            ("a:b:c", ScopeTooManyColons),
            ("foo::bar", ScopeTooManyColons),
            ("::", ScopeTooManyColons),
            (":", ScopeRepository),
            (":latest", ScopeRepository),
            ("Foo:latest", ScopeRepository),
            ("foo bar:latest", ScopeRepository),
            (" foo", ScopeRepository),
            ("foo?:latest", ScopeRepository),
            ("foo@sha256", ScopeRepository),
            ("héllo", ScopeRepository),
            (&long_repo, ScopeRepository),
            ("foo:", ScopeTag),
            ("foo:a/b", ScopeTag),
            ("foo:v 1", ScopeTag),
            ("foo:v?", ScopeTag),
            ("foo:lätest", ScopeTag),
            (&long_tag, ScopeTag),
        ];
        for (scope, expected) in cases {
            assert_eq!(Scope::parse(scope).as_ref(), Err(expected), "{scope:?}");
        }
        assert!(Scope::parse(&max_tag).is_ok());
        assert!(Scope::parse(&"a".repeat(255)).is_ok());
        assert!(Scope::parse("Foo:V1.0_RC-2").is_err());
        assert!(Scope::parse("foo:V1.0_RC-2").is_ok());
        assert!(Scope::parse("my.repo/sub_dir/a-b:*").is_ok());
    }

    #[test]
    fn scope_errors_name_the_field() {
        for s in ["a:b:c", ":x", "foo:"] {
            let msg = Scope::parse(s).unwrap_err().to_string();
            assert!(msg.starts_with("scope: "), "{msg}");
        }
    }

    #[test]
    fn glob_has_no_exponential_backtracking() {
        let pattern = format!("{}b", "*a".repeat(30));
        let text = "a".repeat(10_000);
        assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
        let text_b = format!("{text}b");
        assert!(glob_match(pattern.as_bytes(), text_b.as_bytes()));
    }

    #[test]
    fn glob_basics() {
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"*", b"a/b"));
        assert!(glob_match(b"a*", b"a"));
        assert!(!glob_match(b"a*", b"ba"));
        assert!(glob_match(b"*a", b"bba"));
        assert!(!glob_match(b"*a", b"ab"));
        assert!(glob_match(b"a*a", b"aa"));
        assert!(!glob_match(b"a*a", b"a"));
        assert!(glob_match(b"*ab*ab", b"xabyabab"));
    }

    #[test]
    fn scope_serde_round_trip() {
        let scope: Scope = serde_json::from_str("\"payments/ledger:*\"").unwrap();
        assert!(scope.matches("payments/ledger", None));
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            "\"payments/ledger:*\""
        );
        assert!(serde_json::from_str::<Scope>("\"a:b:c\"").is_err());
    }

    #[test]
    fn names() {
        for ok in ["abcde", "ledgerdeploy", "A1b2C", &"x".repeat(50), "12345"] {
            assert_eq!(WebhookName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "abcd",
            &"x".repeat(51),
            "ledger-deploy",
            "ledger_deploy",
            "ledger deploy",
            "ledger.deploy",
            "lédger",
            "abcd/e",
        ] {
            assert_eq!(
                WebhookName::parse(bad),
                Err(WebhookError::InvalidName),
                "{bad:?}"
            );
        }
        assert_eq!(
            WebhookError::InvalidName.to_string(),
            "name: must be 5 to 50 letters and digits"
        );
        let name: WebhookName = serde_json::from_str("\"hook12\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"hook12\"");
        assert!(serde_json::from_str::<WebhookName>("\"hook\"").is_err());
    }

    #[test]
    fn actions() {
        let expected = ["push", "delete", "quarantine", "chart_push", "chart_delete"];
        for (action, s) in WebhookAction::ALL.into_iter().zip(expected) {
            assert_eq!(action.as_str(), s);
            assert_eq!(action.to_string(), s);
            assert_eq!(s.parse::<WebhookAction>(), Ok(action));
            assert_eq!(s.to_uppercase().parse::<WebhookAction>(), Ok(action));
            assert_eq!(serde_json::to_string(&action).unwrap(), format!("\"{s}\""));
        }
        assert_eq!("Chart_Push".parse(), Ok(WebhookAction::ChartPush));
        for bad in ["", "ping", "pushed", "chart-push", "chartpush", " push"] {
            assert_eq!(
                bad.parse::<WebhookAction>(),
                Err(WebhookError::UnknownAction(bad.to_owned()))
            );
        }
        let msg = "ping".parse::<WebhookAction>().unwrap_err().to_string();
        assert!(msg.starts_with("actions: "), "{msg}");

        let list: Vec<WebhookAction> = serde_json::from_str(r#"["push","DELETE"]"#).unwrap();
        assert_eq!(list, [WebhookAction::Push, WebhookAction::Delete]);
        assert!(serde_json::from_str::<Vec<WebhookAction>>(r#"["ping"]"#).is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(WebhookStatus::default(), WebhookStatus::Enabled);
        assert_eq!("enabled".parse(), Ok(WebhookStatus::Enabled));
        assert_eq!("Disabled".parse(), Ok(WebhookStatus::Disabled));
        assert_eq!(WebhookStatus::Disabled.to_string(), "disabled");
        assert_eq!(
            serde_json::to_string(&WebhookStatus::Enabled).unwrap(),
            "\"enabled\""
        );
        let st: WebhookStatus = serde_json::from_str("\"ENABLED\"").unwrap();
        assert_eq!(st, WebhookStatus::Enabled);
        let err = "on".parse::<WebhookStatus>().unwrap_err();
        assert!(err.to_string().starts_with("status: "));
    }
}

/// Property tests of the scope grammar and its matching: no input panics either, what parses
/// reads back as typed, and the backtracking glob agrees with a naive recursive one.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    const NAME: &str = r"[a-z0-9]{1,6}((\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}((\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}){0,2}";
    const TAG: &str = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,40}";

    /// The obvious exponential definition of the glob, as the oracle for [`glob_match`].
    fn naive_glob(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| naive_glob(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && naive_glob(rest, &t[1..]),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_scopes_never_panic(
            s in any::<String>(),
            repo in any::<String>(),
            tag in any::<Option<String>>(),
        ) {
            if let Ok(scope) = Scope::parse(&s) {
                prop_assert_eq!(scope.as_str(), s.as_str());
                let _ = scope.matches(&repo, tag.as_deref());
                let _ = scope.is_everything();
            }
        }

        /// Near the grammar: colons anywhere, stars, upper case, the characters each part
        /// allows and the other does not.
        #[test]
        fn scopes_near_the_grammar_never_panic_and_read_back(
            s in r"[a-zA-Z0-9*:/._ -]{0,12}",
            repo in r"[a-z/*]{0,6}",
            tag in proptest::option::of(r"[a-zA-Z*]{0,4}"),
        ) {
            if let Ok(scope) = Scope::parse(&s) {
                prop_assert_eq!(scope.as_str(), s.as_str());
                let _ = scope.matches(&repo, tag.as_deref());
            }
        }

        #[test]
        fn generated_valid_scopes_parse_and_round_trip(
            repo in r"[a-z0-9._/*-]{1,40}",
            tag in proptest::option::of(r"[a-zA-Z0-9._*-]{1,40}"),
        ) {
            let s = match &tag {
                Some(t) => format!("{repo}:{t}"),
                None => repo.clone(),
            };
            let scope = Scope::parse(&s).unwrap();
            prop_assert_eq!(scope.as_str(), s.as_str());
            let json = serde_json::to_string(&scope).unwrap();
            prop_assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), scope);
        }

        #[test]
        fn repo_star_matches_every_tag_of_repo_and_only_repo(
            repo in NAME,
            other in NAME,
            tag in TAG,
        ) {
            let scope = Scope::parse(&format!("{repo}:*")).unwrap();
            prop_assert!(scope.matches(&repo, Some(&tag)));
            prop_assert!(scope.matches(&repo, None));
            prop_assert_eq!(scope.matches(&other, Some(&tag)), other == repo);
        }

        #[test]
        fn exact_scopes_match_exactly(repo in NAME, tag in TAG, other in TAG) {
            let scope = Scope::parse(&format!("{repo}:{tag}")).unwrap();
            prop_assert!(scope.matches(&repo, Some(&tag)));
            prop_assert_eq!(scope.matches(&repo, Some(&other)), other == tag);
            prop_assert!(!scope.matches(&repo, None));
            // A bare repository is `repo:latest`.
            let bare = Scope::parse(&repo).unwrap();
            prop_assert_eq!(bare.matches(&repo, Some(&tag)), tag == DEFAULT_TAG);
        }

        #[test]
        fn everything_matches_everything(repo in any::<String>(), tag in any::<Option<String>>()) {
            for s in ["", "*:*", "**:**"] {
                let scope = Scope::parse(s).unwrap();
                prop_assert!(scope.is_everything());
                prop_assert!(scope.matches(&repo, tag.as_deref()));
            }
        }

        /// Small alphabets so that stars, matches and near-misses are all common.
        #[test]
        fn glob_agrees_with_the_naive_definition(p in r"[ab*]{0,8}", t in r"[ab]{0,12}") {
            prop_assert_eq!(
                glob_match(p.as_bytes(), t.as_bytes()),
                naive_glob(p.as_bytes(), t.as_bytes()),
                "{:?} vs {:?}", p, t
            );
        }
    }
}
