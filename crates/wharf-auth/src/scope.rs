//! The two permission vocabularies and how they meet:
//! - Docker token scopes, as clients request them and as access tokens carry them:
//!   `repository:<name>:pull,push`, `registry:catalog:*`, space-joined or repeated;
//! - ACR scope-map actions: `repositories/<repo>/<content|metadata>/<read|write|delete>`, where
//!   `<repo>` may end in `/*` or be a bare `*`, and rules are additive.
//!
//! `content/read`↔`pull`, `content/write`↔`push`, `content/delete`↔`delete`,
//! `metadata/read`↔`metadata_read`, `metadata/write`↔`metadata_write` (acr-auth.md §3.6).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A Docker registry action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepoAction {
    Pull,
    Push,
    Delete,
    MetadataRead,
    MetadataWrite,
}

impl RepoAction {
    pub const ALL: [RepoAction; 5] = [
        RepoAction::Pull,
        RepoAction::Push,
        RepoAction::Delete,
        RepoAction::MetadataRead,
        RepoAction::MetadataWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RepoAction::Pull => "pull",
            RepoAction::Push => "push",
            RepoAction::Delete => "delete",
            RepoAction::MetadataRead => "metadata_read",
            RepoAction::MetadataWrite => "metadata_write",
        }
    }

    pub fn parse(s: &str) -> Option<RepoAction> {
        RepoAction::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The scope-map action that grants this Docker action.
    pub fn map_action(self) -> &'static str {
        match self {
            RepoAction::Pull => "content/read",
            RepoAction::Push => "content/write",
            RepoAction::Delete => "content/delete",
            RepoAction::MetadataRead => "metadata/read",
            RepoAction::MetadataWrite => "metadata/write",
        }
    }

    fn from_map_action(s: &str) -> Option<RepoAction> {
        RepoAction::ALL.into_iter().find(|a| a.map_action() == s)
    }
}

impl fmt::Display for RepoAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resource scope as requested or granted: `type:name:action,action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceScope {
    #[serde(rename = "type", alias = "Type")]
    pub kind: String,
    #[serde(alias = "Name")]
    pub name: String,
    #[serde(alias = "Actions")]
    pub actions: Vec<String>,
}

impl ResourceScope {
    pub fn repository(name: &str, actions: &[RepoAction]) -> Self {
        ResourceScope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
        }
    }

    pub fn catalog() -> Self {
        ResourceScope {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// Most scopes one token request may carry (more is abuse, not a client).
const MAX_SCOPES: usize = 64;

/// Parses the `scope` values of a token request: each may be repeated or hold several scopes
/// joined by spaces (acr-auth.md §4.2). Scopes that do not parse are ignored, as a token
/// server grants what it can; the type's class (`repository(plugin)`) is dropped; the name may
/// hold a `host:port`, so the type ends at the first `:` and the actions start after the last.
pub fn parse_requested<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<ResourceScope> {
    let mut out = Vec::new();
    for v in values {
        for s in v.split(' ').filter(|s| !s.is_empty()) {
            if out.len() >= MAX_SCOPES {
                return out;
            }
            let (Some((kind, rest)), Some((_, actions))) = (s.split_once(':'), s.rsplit_once(':'))
            else {
                continue;
            };
            let Some(name) = rest.rsplit_once(':').map(|(n, _)| n) else {
                continue;
            };
            let kind = kind.split_once('(').map(|(k, _)| k).unwrap_or(kind);
            if kind.is_empty() || name.is_empty() {
                continue;
            }
            let actions: Vec<String> = actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
            out.push(ResourceScope {
                kind: kind.to_owned(),
                name: name.to_owned(),
                actions,
            });
        }
    }
    out
}

/// A scope-map rule: a repository pattern and one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pattern: RepoPattern,
    action: RepoAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RepoPattern {
    /// `*`: every repository.
    All,
    /// `p/*`: every repository under `p/`, at any depth (not `p` itself).
    Prefix(String),
    Exact(String),
}

impl Rule {
    /// Parses `repositories/<repo>/<content|metadata>/<read|write|delete>`. The repository is
    /// lower-cased, as the CLI does. Errors name the rule for a 400.
    pub fn parse(s: &str) -> Result<Rule, String> {
        let bad = |why: &str| format!("actions: {s:?} {why}");
        let rest = s
            .strip_prefix("repositories/")
            .ok_or_else(|| bad("must start with repositories/"))?;
        let (repo, kind) = rest
            .rsplit_once('/')
            .ok_or_else(|| bad("must end in content/… or metadata/…"))?;
        let (repo, area) = repo
            .rsplit_once('/')
            .ok_or_else(|| bad("must name a repository"))?;
        let action = RepoAction::from_map_action(&format!("{area}/{kind}")).ok_or_else(|| {
            bad("must end in content/read, content/write, content/delete, metadata/read or metadata/write")
        })?;
        let repo = repo.to_ascii_lowercase();
        let pattern = if repo == "*" {
            RepoPattern::All
        } else if let Some(p) = repo.strip_suffix("/*") {
            if p.is_empty() || p.contains('*') {
                return Err(bad("may hold one wildcard, as a trailing /* or a bare *"));
            }
            // What comes before `/*` must itself be a repository name (or a leading part of
            // one), or the rule could never cover anything.
            wharf_core::RepoName::parse(p).map_err(|_| bad("names an invalid repository"))?;
            RepoPattern::Prefix(format!("{p}/"))
        } else if repo.contains('*') || repo.is_empty() {
            return Err(bad("may hold one wildcard, as a trailing /* or a bare *"));
        } else {
            wharf_core::RepoName::parse(&repo).map_err(|_| bad("names an invalid repository"))?;
            RepoPattern::Exact(repo)
        };
        Ok(Rule { pattern, action })
    }

    fn covers(&self, repo: &str) -> bool {
        match &self.pattern {
            RepoPattern::All => true,
            RepoPattern::Prefix(p) => repo.starts_with(p.as_str()),
            RepoPattern::Exact(r) => r == repo,
        }
    }
}

/// A scope map's rules, evaluated additively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet(Vec<Rule>);

impl RuleSet {
    pub fn parse<S: AsRef<str>>(actions: &[S]) -> Result<RuleSet, String> {
        actions
            .iter()
            .map(|a| Rule::parse(a.as_ref()))
            .collect::<Result<_, _>>()
            .map(RuleSet)
    }

    /// The Docker actions these rules allow on `repo`.
    pub fn allowed(&self, repo: &str) -> BTreeSet<RepoAction> {
        self.0
            .iter()
            .filter(|r| r.covers(repo))
            .map(|r| r.action)
            .collect()
    }
}

/// ACR's five system scope maps, exactly as a live registry lists them (acr-auth.md §3.7).
pub const SYSTEM_SCOPE_MAPS: &[(&str, &str, &[&str])] = &[
    (
        "_repositories_pull",
        "Can pull any repository of the registry",
        &["repositories/*/content/read"],
    ),
    (
        "_repositories_pull_metadata_read",
        "Can perform all read operations on the registry",
        &[
            "repositories/*/content/read",
            "repositories/*/metadata/read",
        ],
    ),
    (
        "_repositories_push",
        "Can push to any repository of the registry",
        &[
            "repositories/*/content/read",
            "repositories/*/content/write",
        ],
    ),
    (
        "_repositories_push_metadata_write",
        "Can perform all read and write operations on the registry",
        &[
            "repositories/*/metadata/read",
            "repositories/*/metadata/write",
            "repositories/*/content/read",
            "repositories/*/content/write",
        ],
    ),
    (
        "_repositories_admin",
        "Can perform all read, write and delete operations on the registry",
        &[
            "repositories/*/metadata/read",
            "repositories/*/metadata/write",
            "repositories/*/content/read",
            "repositories/*/content/write",
            "repositories/*/content/delete",
        ],
    ),
];

pub fn system_scope_map(
    name: &str,
) -> Option<&'static (&'static str, &'static str, &'static [&'static str])> {
    SYSTEM_SCOPE_MAPS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RepoAction::*;

    #[test]
    fn requested_scopes_parse_repeated_and_space_joined() {
        let got = parse_requested([
            "repository:a/b:pull,push registry:catalog:*",
            "repository(plugin):p:pull",
            "repository:localhost:5000/x:pull",
            "garbage",
            "",
        ]);
        let shown: Vec<String> = got.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "repository:a/b:pull,push",
                "registry:catalog:*",
                "repository:p:pull",
                "repository:localhost:5000/x:pull"
            ]
        );
    }

    #[test]
    fn rules_are_additive_and_wildcards_follow_acr() {
        let rules = RuleSet::parse(&[
            "repositories/sample/*/content/read",
            "repositories/sample/teama/*/content/write",
            "repositories/sample/teama/projectb/content/delete",
            "repositories/Tools/JQ/metadata/read",
        ])
        .unwrap();
        let set = |v: &[RepoAction]| v.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(
            rules.allowed("sample/teama/projectb"),
            set(&[Pull, Push, Delete])
        );
        assert_eq!(rules.allowed("sample/teama/projectc"), set(&[Pull, Push]));
        assert_eq!(rules.allowed("sample/x"), set(&[Pull]));
        assert_eq!(rules.allowed("sample"), set(&[]), "p/* does not cover p");
        assert_eq!(
            rules.allowed("tools/jq"),
            set(&[MetadataRead]),
            "lower-cased"
        );
        assert_eq!(
            RuleSet::parse(&["repositories/*/content/read"])
                .unwrap()
                .allowed("any/thing"),
            set(&[Pull])
        );
    }

    #[test]
    fn bad_rules_name_the_rule() {
        for bad in [
            "repositories/a/contentWrite",
            "repositories/a/content/exec",
            "repos/a/content/read",
            "repositories/sample/*/teama/content/read",
            "repositories/sample/teama*/content/read",
            "repositories/a/*/b/*/content/read",
            "repositories//content/read",
            "repositories/a b/*/content/read",
            "repositories/-a/*/content/read",
        ] {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.starts_with("actions: ") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn system_scope_maps_parse() {
        for (name, _, actions) in SYSTEM_SCOPE_MAPS {
            RuleSet::parse(actions).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let admin = RuleSet::parse(system_scope_map("_repositories_admin").unwrap().2).unwrap();
        assert_eq!(admin.allowed("x").len(), 5);
    }
}

/// Property tests of both vocabularies: no input panics, a well-formed requested scope reads
/// back unchanged, and scope-map rules parse and cover what ACR says they cover.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    const NAME: &str = r"[a-z0-9]{1,6}((\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}((\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}){0,2}";
    /// One path component of a repository name.
    const COMPONENT: &str = r"[a-z0-9]{1,6}((\.|_|-)[a-z0-9]{1,6}){0,2}";

    fn action() -> impl Strategy<Value = RepoAction> {
        prop::sample::select(RepoAction::ALL.to_vec())
    }

    /// `type:name:actions` as clients write it; the name may carry a `host:port`.
    fn requested() -> impl Strategy<Value = ResourceScope> {
        (
            prop_oneof![
                "repository|registry".prop_map(String::from),
                "[a-z_-]{1,10}"
            ],
            prop_oneof![
                NAME,
                "[a-z.]{1,8}:[0-9]{1,5}/[a-z0-9/]{1,10}",
                "[a-zA-Z0-9:/._@-]{1,16}"
            ],
            prop::collection::vec(r"\*|pull|push|delete|metadata_read|[a-z_*]{1,10}", 0..4),
        )
            .prop_map(|(kind, name, actions)| ResourceScope {
                kind,
                name,
                actions,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_requested_scopes_never_panic(values in prop::collection::vec(any::<String>(), 0..4)) {
            let got = parse_requested(values.iter().map(String::as_str));
            prop_assert!(got.len() <= MAX_SCOPES);
            for s in &got {
                prop_assert!(!s.kind.is_empty() && !s.name.is_empty());
                prop_assert!(!s.kind.contains([':', '(', ' ']));
                prop_assert!(s.actions.iter().all(|a| !a.is_empty() && !a.contains([':', ',', ' '])));
            }
        }

        /// Near the grammar: colons, commas, spaces and a class in parentheses, in any order.
        #[test]
        fn requested_scopes_near_the_grammar_never_panic(v in r"[a-z():, *]{0,24}") {
            let got = parse_requested([v.as_str()]);
            for s in &got {
                prop_assert!(!s.kind.is_empty() && !s.name.is_empty());
            }
        }

        #[test]
        fn requested_scopes_round_trip_through_display(scopes in prop::collection::vec(requested(), 1..4), joined in any::<bool>()) {
            let shown: Vec<String> = scopes.iter().map(ToString::to_string).collect();
            let got = if joined {
                parse_requested([shown.join(" ").as_str()])
            } else {
                parse_requested(shown.iter().map(String::as_str))
            };
            prop_assert_eq!(&got, &scopes);
            let again: Vec<String> = got.iter().map(ToString::to_string).collect();
            prop_assert_eq!(again, shown);
        }

        #[test]
        fn the_class_of_a_type_is_dropped(scope in requested(), class in "[a-z]{1,8}") {
            let s = scope.to_string();
            let with_class = s.replacen(':', &format!("({class}):"), 1);
            prop_assert_eq!(parse_requested([with_class.as_str()]), vec![scope]);
        }

        #[test]
        fn too_many_scopes_are_cut_at_the_cap(n in 0usize..100) {
            let v = vec!["repository:a:pull"; n];
            prop_assert_eq!(parse_requested(v).len(), n.min(MAX_SCOPES));
        }

        #[test]
        fn arbitrary_rules_never_panic(rules in prop::collection::vec(any::<String>(), 0..3), repo in any::<String>()) {
            for r in &rules {
                let _ = Rule::parse(r);
            }
            if let Ok(set) = RuleSet::parse(&rules) {
                let _ = set.allowed(&repo);
            }
        }

        /// Near the grammar: wildcards anywhere, empty segments, other areas and verbs.
        #[test]
        fn rules_near_the_grammar_never_panic(
            repo in r"[a-zA-Z*/_.-]{0,10}",
            area in "content|metadata|[a-z]{0,4}|",
            verb in "read|write|delete|[a-z]{0,4}",
            probe in r"[a-z/]{0,8}",
        ) {
            let s = format!("repositories/{repo}/{area}/{verb}");
            if let Ok(rule) = Rule::parse(&s) {
                let _ = RuleSet(vec![rule]).allowed(&probe);
            }
        }

        #[test]
        fn generated_rules_parse_and_cover_their_repository(name in NAME, a in action(), upper in any::<bool>()) {
            let written = if upper { name.to_ascii_uppercase() } else { name.clone() };
            let rules = RuleSet::parse(&[format!("repositories/{written}/{}", a.map_action())]).unwrap();
            prop_assert_eq!(rules.allowed(&name), BTreeSet::from([a]));
            let (below, sibling) = (format!("{name}/x"), format!("{name}x"));
            prop_assert!(rules.allowed(&below).is_empty());
            prop_assert!(rules.allowed(&sibling).is_empty());
            let all = RuleSet::parse(&[format!("repositories/*/{}", a.map_action())]).unwrap();
            prop_assert_eq!(all.allowed(&name), BTreeSet::from([a]));
        }

        /// `p/*` covers everything under `p/`, at any depth, but never `p` itself nor a sibling
        /// that merely starts with the same characters.
        #[test]
        fn prefix_rules_cover_below_and_not_the_prefix(
            p in NAME,
            below in prop::collection::vec(COMPONENT, 1..3),
            a in action(),
        ) {
            let rules = RuleSet::parse(&[format!("repositories/{p}/*/{}", a.map_action())]).unwrap();
            prop_assert!(rules.allowed(&p).is_empty());
            let under = format!("{p}/{}", below.join("/"));
            prop_assert_eq!(rules.allowed(&under), BTreeSet::from([a]));
            for sibling in [format!("{p}{}", below[0]), format!("{p}-{}", below[0])] {
                prop_assert!(rules.allowed(&sibling).is_empty());
            }
        }
    }
}
