//! The CLI's output, as az (knack) produces it: `--query` (JMESPath) applied to the command's
//! result first, then `-o json|jsonc|yaml|yamlc|table|tsv|none`.
//!
//! - json: two-space indented, keys sorted (az sorts them; so does serde_json's map).
//! - jsonc / yamlc: the same text in colour, but only when stdout is a terminal; in a pipe or a
//!   file they are json / yaml exactly, as az's are.
//! - yaml: emitted with yaml-rust2 (maintained; its parser is what the tests read it back with).
//! - table: a command's own columns (az's "table transformer", e.g. `NAME LOCATION ACTIONS
//!   SCOPE STATUS` for webhooks) when there is no `--query`; otherwise, or for commands without
//!   one, knack's automatic table: one column per scalar field, headed by its name with the
//!   first letter capitalised (`Result` for a list of scalars), `id`/`type`/`etag` left out.
//! - tsv: knack's rules: one line per item of a list (else one line), the item's values only
//!   (an object's in key order), tab-separated; a nested list prints as its length, a nested
//!   object as nothing, booleans and nulls as Python prints them (`True`, `None`), except a
//!   bare boolean row, which is lower case.
//! - none: nothing.
//!
//! A difference from az: the jmespath crate keeps objects in key order, so a multiselect hash
//! (`--query "[].{b:x,a:y}"`) yields its keys sorted, not in the order written. A multiselect
//! list (`--query "[].[x,y]"`) keeps its order, and is what az's docs use for tsv anyway.

use std::fmt::Write as _;
use std::io::IsTerminal;

use clap::ValueEnum;
use serde_json::Value;

/// `-o/--output`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Output {
    /// JSON, two-space indented, keys sorted.
    Json,
    /// JSON, coloured when printed to a terminal.
    Jsonc,
    /// YAML.
    Yaml,
    /// YAML, coloured when printed to a terminal.
    Yamlc,
    /// An aligned table with a header line.
    Table,
    /// Tab-separated values, one line per item, no header (for scripts).
    Tsv,
    /// No output (the exit status tells the outcome).
    None,
}

/// A command's own table: its headers and the cells of one row of an item.
pub struct Columns<'a> {
    pub headers: &'a [&'a str],
    pub row: &'a dyn Fn(&Value) -> Vec<String>,
}

/// Checks a `--query` expression when the command line is parsed, as az does, so a typo fails
/// before anything is sent.
pub fn parse_query(q: &str) -> Result<String, String> {
    jmespath::compile(q)
        .map(|_| q.to_owned())
        .map_err(|e| format!("not a valid JMESPath expression: {e}"))
}

/// `--query` applied to a result.
pub fn apply_query(q: &str, v: &Value) -> Result<Value, String> {
    let expr = jmespath::compile(q).map_err(|e| format!("--query: {e}"))?;
    let data = jmespath::Variable::try_from(v).map_err(|e| format!("--query: {e}"))?;
    let found = expr.search(data).map_err(|e| format!("--query: {e}"))?;
    serde_json::to_value(&*found).map_err(|e| format!("--query: {e}"))
}

/// The text to print for a command's result `v`. `columns` is the command's own table, used
/// for `-o table` without `--query`; `is_list` tells whether `v` is a list of such rows.
pub fn render(
    v: &Value,
    out: Output,
    query: Option<&str>,
    columns: Option<Columns<'_>>,
    is_list: bool,
) -> Result<String, String> {
    let queried;
    let v = match query {
        Some(q) => {
            queried = apply_query(q, v)?;
            &queried
        }
        None => v,
    };
    let colour = matches!(out, Output::Jsonc | Output::Yamlc) && std::io::stdout().is_terminal();
    Ok(match out {
        Output::None => String::new(),
        Output::Json | Output::Jsonc if colour => {
            let mut s = String::new();
            json_coloured(v, 0, &mut s);
            s + "\n"
        }
        Output::Json | Output::Jsonc => json(v),
        Output::Yaml | Output::Yamlc => {
            let y = yaml(v)?;
            if colour { yaml_coloured(&y) } else { y }
        }
        Output::Tsv => tsv(v),
        Output::Table => match columns {
            Some(c) if query.is_none() => {
                let items: Vec<&Value> = if is_list {
                    v.as_array().map(|a| a.iter().collect()).unwrap_or_default()
                } else {
                    vec![v]
                };
                let rows = items.iter().map(|i| (c.row)(i)).collect();
                table(c.headers.iter().map(|h| h.to_string()).collect(), rows)
            }
            _ => auto_table(v),
        },
    })
}

/// az's JSON: two-space indentation, a final newline.
pub fn json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// YAML text of a JSON value, without the document marker (az prints none).
///
/// yaml-rust2's emitter leaves some strings bare that its own parser then reads as numbers
/// (`0o17`, an octal 15), so every string that would resolve to something else as a plain
/// scalar is emitted through a placeholder the emitter must quote, then written as a JSON
/// string: JSON's double-quoted strings are YAML's.
pub fn yaml(v: &Value) -> Result<String, String> {
    let mut tag = "@wharf-quoted-".to_owned();
    while any_string_contains(v, &tag) {
        tag.push('-');
    }
    let mut forced = Vec::new();
    let doc = to_yaml(v, &tag, &mut forced);
    let mut s = String::new();
    yaml_rust2::YamlEmitter::new(&mut s)
        .dump(&doc)
        .map_err(|e| format!("cannot write YAML: {e}"))?;
    for (i, original) in forced.iter().enumerate() {
        // The quotes and the closing `@` keep `…-1@` from matching inside `…-10@`.
        let quoted = serde_json::to_string(original).map_err(|e| e.to_string())?;
        s = s.replace(&format!("\"{tag}{i}@\""), &quoted);
    }
    let body = s
        .strip_prefix("---\n")
        .or_else(|| s.strip_prefix("--- "))
        .unwrap_or(&s);
    Ok(format!("{body}\n"))
}

fn any_string_contains(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s.contains(needle),
        Value::Array(a) => a.iter().any(|x| any_string_contains(x, needle)),
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| k.contains(needle) || any_string_contains(x, needle)),
        _ => false,
    }
}

/// A string as a YAML node: itself, or a placeholder (see [`yaml`]).
fn yaml_string(s: &str, tag: &str, forced: &mut Vec<String>) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    if matches!(Yaml::from_str(s), Yaml::String(_)) {
        Yaml::String(s.to_owned())
    } else {
        forced.push(s.to_owned());
        Yaml::String(format!("{tag}{}@", forced.len() - 1))
    }
}

fn to_yaml(v: &Value, tag: &str, forced: &mut Vec<String>) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            // A float, or an integer beyond i64: its JSON spelling is a valid YAML float.
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => yaml_string(s, tag, forced),
        Value::Array(a) => Yaml::Array(a.iter().map(|x| to_yaml(x, tag, forced)).collect()),
        Value::Object(o) => Yaml::Hash(
            o.iter()
                .map(|(k, x)| (yaml_string(k, tag, forced), to_yaml(x, tag, forced)))
                .collect(),
        ),
    }
}

const KEY: &str = "\x1b[94m";
const STRING: &str = "\x1b[32m";
const LITERAL: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// JSON as [`json`] lays it out, keys, strings and literals in colour.
fn json_coloured(v: &Value, level: usize, s: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Array(a) if !a.is_empty() => {
            s.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                s.push_str(&pad(level + 1));
                json_coloured(x, level + 1, s);
                s.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            s.push_str(&pad(level));
            s.push(']');
        }
        Value::Object(o) if !o.is_empty() => {
            s.push_str("{\n");
            for (i, (k, x)) in o.iter().enumerate() {
                let key = Value::String(k.clone()).to_string();
                let _ = write!(s, "{}{KEY}{key}{RESET}: ", pad(level + 1));
                json_coloured(x, level + 1, s);
                s.push_str(if i + 1 < o.len() { ",\n" } else { "\n" });
            }
            s.push_str(&pad(level));
            s.push('}');
        }
        Value::String(_) => {
            let _ = write!(s, "{STRING}{v}{RESET}");
        }
        Value::Array(_) | Value::Object(_) => s.push_str(&v.to_string()),
        _ => {
            let _ = write!(s, "{LITERAL}{v}{RESET}");
        }
    }
}

/// YAML text with its mapping keys in colour. The emitter quotes every scalar that holds
/// `: ` or starts with a quote, so the first unquoted `:` at the end or before a space on a
/// line (after indentation and list dashes) ends a key.
fn yaml_coloured(y: &str) -> String {
    let mut out = String::new();
    for line in y.lines() {
        let rest = line.trim_start_matches([' ', '-']);
        let prefix = &line[..line.len() - rest.len()];
        let key_end = if rest.starts_with('"') {
            closing_quote(rest).filter(|&i| rest[i + 1..].starts_with(':'))
        } else {
            rest.find(": ")
                .or_else(|| rest.ends_with(':').then(|| rest.len() - 1))
                .map(|i| i.saturating_sub(1))
        };
        match key_end {
            Some(i) if !rest.starts_with('\'') => {
                let (key, value) = rest.split_at(i + 1);
                let value = value.strip_prefix(':').unwrap_or(value);
                let _ = writeln!(out, "{prefix}{KEY}{key}{RESET}:{STRING}{value}{RESET}");
            }
            _ => {
                let _ = writeln!(out, "{prefix}{STRING}{rest}{RESET}");
            }
        }
    }
    out
}

/// The index of the quote closing a double-quoted scalar that starts `s`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// A value as Python's `str()` prints it: what knack's table and tsv cells show.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// knack's tsv.
pub fn tsv(v: &Value) -> String {
    fn cell(v: &Value) -> String {
        match v {
            Value::Array(a) => a.len().to_string(),
            Value::Object(_) => String::new(),
            other => py_str(other),
        }
    }
    fn row(v: &Value, out: &mut String) {
        match v {
            Value::Object(o) => out.push_str(&o.values().map(cell).collect::<Vec<_>>().join("\t")),
            Value::Array(a) => out.push_str(&a.iter().map(cell).collect::<Vec<_>>().join("\t")),
            Value::Bool(b) => out.push_str(&b.to_string()),
            other => out.push_str(&cell(other)),
        }
        out.push('\n');
    }
    let mut out = String::new();
    match v {
        Value::Array(items) => items.iter().for_each(|i| row(i, &mut out)),
        other => row(other, &mut out),
    }
    out
}

/// knack's automatic table.
fn auto_table(v: &Value) -> String {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    // Columns in order of first appearance across the rows.
    let mut headers: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    for item in items {
        let cells: Vec<(String, String)> = match item {
            Value::Object(o) => o
                .iter()
                .filter(|(k, x)| {
                    !["id", "type", "etag"].contains(&k.as_str())
                        && !matches!(x, Value::Null | Value::Array(_) | Value::Object(_))
                })
                .map(|(k, x)| (capitalise(k), py_str(x)))
                .collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("Column{}", i + 1), py_str(x)))
                .collect(),
            other => vec![("Result".to_owned(), py_str(other))],
        };
        for (h, _) in &cells {
            if !headers.contains(h) {
                headers.push(h.clone());
            }
        }
        rows.push(cells);
    }
    let rows = rows
        .into_iter()
        .map(|cells| {
            headers
                .iter()
                .map(|h| {
                    cells
                        .iter()
                        .find(|(k, _)| k == h)
                        .map(|(_, c)| c.clone())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    table(headers, rows)
}

fn capitalise(k: &str) -> String {
    let mut c = k.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// An aligned table: the headers, a line of dashes under each, the rows; two spaces between
/// columns (what az's tables look like).
pub fn table(headers: Vec<String>, rows: Vec<Vec<String>>) -> String {
    if headers.is_empty() {
        return String::new();
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut l = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned();
        l.push('\n');
        l
    };
    let mut text = line(&headers);
    text.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for r in rows {
        text.push_str(&line(&r));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A YAML document back as JSON, for comparing with what was emitted.
    fn from_yaml(y: &yaml_rust2::Yaml) -> Value {
        use yaml_rust2::Yaml;
        match y {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => json!(b),
            Yaml::Integer(i) => json!(i),
            Yaml::Real(r) => json!(r.parse::<f64>().expect("a float")),
            Yaml::String(s) => json!(s),
            Yaml::Array(a) => Value::Array(a.iter().map(from_yaml).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().unwrap_or_else(|| panic!("key {k:?}")).to_owned(),
                            from_yaml(v),
                        )
                    })
                    .collect(),
            ),
            other => panic!("unexpected YAML node {other:?}"),
        }
    }

    fn parse_yaml(text: &str) -> Value {
        let docs = yaml_rust2::YamlLoader::load_from_str(text).expect("YAML that parses");
        assert_eq!(docs.len(), 1, "{text}");
        from_yaml(&docs[0])
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            (-1e12f64..1e12).prop_map(|f| json!(f)),
            // Strings that look like other YAML scalars, keys, comments, documents.
            prop_oneof![
                Just("0o17".to_owned()),
                Just("-.inf".to_owned()),
                Just("@wharf-quoted-0@".to_owned()),
                Just("true".to_owned()),
                Just("null".to_owned()),
                Just("~".to_owned()),
                Just("12".to_owned()),
                Just("1.5".to_owned()),
                Just("no".to_owned()),
                Just("---".to_owned()),
                Just("a: b".to_owned()),
                Just("- x".to_owned()),
                Just("# c".to_owned()),
                Just(" padded ".to_owned()),
                "\\PC{0,12}",
                any::<String>(),
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,8}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever a command prints as YAML reads back as the value it printed.
        #[test]
        fn yaml_parses_back_to_the_same_value(v in arb_json()) {
            let text = yaml(&v).unwrap();
            prop_assert_eq!(parse_yaml(&text), v, "{}", text);
        }

        /// Colour adds escape codes and nothing else: without them it is the plain text.
        #[test]
        fn colour_only_adds_escape_codes(v in arb_json()) {
            let strip = |s: &str| {
                let mut out = String::new();
                let mut it = s.chars().peekable();
                while let Some(c) = it.next() {
                    if c == '\x1b' {
                        for d in it.by_ref() {
                            if d == 'm' { break; }
                        }
                    } else {
                        out.push(c);
                    }
                }
                out
            };
            let mut c = String::new();
            json_coloured(&v, 0, &mut c);
            prop_assert_eq!(strip(&c) + "\n", json(&v));
            let y = yaml(&v).unwrap();
            prop_assert_eq!(strip(&yaml_coloured(&y)), y);
        }
    }

    /// Strings YAML gives a meaning to, or that emitters get wrong: each reads back as itself.
    #[test]
    fn awkward_strings_survive_yaml() {
        for s in [
            "\u{feff}x",
            "\u{85}",
            "\u{2028}",
            "\u{2029}",
            "a\u{0}b",
            "\t",
            "\r\n",
            "é",
            "🙂",
            "- ",
            "? x",
            ": x",
            "x #y",
            "x: ",
            "@x",
            "`x",
            "%x",
            "!x",
            "*x",
            "&x",
            "|",
            ">",
            "'",
            "\"",
            "\\",
            "0x1F",
            "0o17",
            "1e3",
            ".inf",
            "-.inf",
            ".nan",
            "+1",
            "012",
            "1_000",
            "2026-12-01",
            "=",
            "<<",
            "",
            " ",
            "~",
        ] {
            let v = json!({ s: [s, {"k": s}] });
            let text = yaml(&v).unwrap();
            assert_eq!(parse_yaml(&text), v, "{s:?}: {text}");
        }
    }

    #[test]
    fn tsv_prints_values_as_knack_does() {
        let v = json!([
            {"name": "a", "count": 2, "tags": ["x", "y"], "attrs": {"k": 1}, "on": true, "gone": null},
            {"name": "b", "count": 3, "tags": [], "attrs": {}, "on": false, "gone": null}
        ]);
        // keys sorted: attrs count gone name on tags
        assert_eq!(tsv(&v), "\t2\tNone\ta\tTrue\t2\n\t3\tNone\tb\tFalse\t0\n");
        assert_eq!(tsv(&json!(["r1", "r2"])), "r1\nr2\n");
        assert_eq!(tsv(&json!([["a", 1], ["b", 2]])), "a\t1\nb\t2\n");
        assert_eq!(tsv(&json!(true)), "true\n");
        assert_eq!(tsv(&json!("x")), "x\n");
    }

    #[test]
    fn auto_table_has_a_column_per_scalar_field() {
        let v = json!([
            {"name": "a", "id": "/x", "type": "t", "size": 1, "tags": ["x"], "ok": true},
            {"name": "b", "id": "/y", "type": "t", "size": 22, "tags": [], "ok": false}
        ]);
        let t = auto_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["Name", "Ok", "Size"]
        );
        assert_eq!(lines[1], "----  -----  ----", "{t}");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["a", "True", "1"]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["b", "False", "22"]
        );
        let t = auto_table(&json!(["repo1", "repo2"]));
        assert_eq!(t, "Result\n------\nrepo1\nrepo2\n");
    }

    #[test]
    fn query_is_applied_before_the_format() {
        let v = json!([{"name": "a", "n": 1}, {"name": "b", "n": 2}]);
        let cols = Columns {
            headers: &["NAME"],
            row: &|v: &Value| vec![v["name"].as_str().unwrap_or("").to_owned()],
        };
        let t = render(&v, Output::Table, None, Some(cols), true).unwrap();
        assert!(t.starts_with("NAME\n"), "{t}");
        let cols = Columns {
            headers: &["NAME"],
            row: &|v: &Value| vec![v["name"].as_str().unwrap_or("").to_owned()],
        };
        // with a query, the command's own columns no longer fit: knack's table
        let t = render(&v, Output::Table, Some("[?n > `1`]"), Some(cols), true).unwrap();
        assert!(t.starts_with("N  Name\n"), "{t}");
        assert_eq!(
            render(&v, Output::Tsv, Some("[].name"), None, true).unwrap(),
            "a\nb\n"
        );
        assert_eq!(
            render(&v, Output::Json, Some("[0].n"), None, true).unwrap(),
            "1\n"
        );
        assert_eq!(render(&v, Output::None, None, None, true).unwrap(), "");
        assert!(parse_query("[?").is_err());
        assert!(render(&v, Output::Json, Some("length(@[0].n)"), None, true).is_err());
    }
}
