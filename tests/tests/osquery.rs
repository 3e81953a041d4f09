//! The osquery pack against osquery itself: its statements against a copy of
//! osquery's table specs, recorded `osqueryi --json` answers against the
//! shell pack's answers of the same host, and the pack run against an
//! `osqueryi` that replays those answers the way osqueryi prints them.
//!
//! `tests/fixtures/osquery-specs/` holds the specs of the tables the pack
//! uses, copied from osquery/osquery at a5b14f63d98c0d4992ab8ae07d933e0d5ff008df
//! (Apache-2.0): files at the top are platform-independent, `linux/` and
//! `posix/` ones exist on Linux. `tests/fixtures/osquery-replay/web-1/` holds,
//! for one host, what each query's osquery form and shell form print.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::Diffy;
use diffy_analysis::profile::{HostNames, Profile};
use diffy_core::payload::{osquery_statements, row_shape};
use diffy_core::{OSQUERYI_FLAGS, OutputFormat, Row};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One osquery table: its Linux columns, and which are required.
#[derive(Debug)]
struct Spec {
    columns: BTreeSet<String>,
    required: BTreeSet<String>,
}

/// Reads a `.table` spec: `schema([...])` and the `extended_schema` blocks
/// for LINUX or POSIX (not WINDOWS or DARWIN).
fn read_spec(text: &str) -> Spec {
    let mut spec = Spec { columns: BTreeSet::new(), required: BTreeSet::new() };
    let mut on_linux = true;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("schema(") {
            on_linux = true;
        } else if let Some(platforms) = l.strip_prefix("extended_schema(") {
            let platforms = platforms.split(',').next().unwrap_or("");
            on_linux = platforms.contains("LINUX") || platforms.contains("POSIX");
        }
        if let Some(rest) = l.strip_prefix("Column(\"") {
            let name = rest.split('"').next().unwrap().to_string();
            if on_linux {
                if l.contains("required=True") {
                    spec.required.insert(name.clone());
                }
                spec.columns.insert(name);
            }
        }
    }
    spec
}

fn specs() -> BTreeMap<String, Spec> {
    let root = fixtures().join("osquery-specs");
    let mut out = BTreeMap::new();
    for dir in [root.clone(), root.join("linux"), root.join("posix")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "table") {
                let text = std::fs::read_to_string(&p).unwrap();
                let name = text.split("table_name(\"").nth(1).unwrap().split('"').next().unwrap().to_string();
                out.insert(name, read_spec(&text));
            }
        }
    }
    out
}

const KEYWORDS: &[&str] = &[
    "select", "distinct", "from", "where", "and", "or", "not", "in", "as", "case", "when", "then", "else", "end",
    "left", "join", "cross", "inner", "using", "on", "is", "null", "like",
];

/// What one SELECT reads: tables by alias, column references (alias or
/// none, column), and the output names.
struct Statement {
    tables: BTreeMap<String, String>,
    references: Vec<(Option<String>, String)>,
    outputs: Vec<String>,
    where_text: String,
    using: Vec<String>,
}

/// Tokens: identifiers (with dots), string literals dropped, punctuation kept.
fn tokens(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            for d in chars.by_ref() {
                if d == '\'' {
                    break;
                }
            }
            out.push("'…'".into());
        } else if c.is_alphanumeric() || c == '_' {
            let mut w = c.to_string();
            while let Some(&d) = chars.peek() {
                if d.is_alphanumeric() || d == '_' || d == '.' {
                    w.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(w);
        } else if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    out
}

fn parse(sql: &str) -> Statement {
    let t = tokens(sql);
    let low: Vec<String> = t.iter().map(|x| x.to_ascii_lowercase()).collect();
    let from = low.iter().position(|x| x == "from").expect("a FROM");
    let where_at = low.iter().position(|x| x == "where").unwrap_or(t.len());
    let mut st = Statement {
        tables: BTreeMap::new(),
        references: Vec::new(),
        outputs: Vec::new(),
        where_text: low[where_at..].join(" "),
        using: Vec::new(),
    };
    // Tables: FROM t [alias], JOIN t [alias].
    let mut i = from;
    while i < where_at {
        if low[i] == "from" || low[i] == "join" {
            let table = t[i + 1].clone();
            let alias = t.get(i + 2).filter(|a| !KEYWORDS.contains(&a.to_ascii_lowercase().as_str()) && *a != ";");
            st.tables.insert(alias.cloned().unwrap_or_else(|| table.clone()), table);
        }
        if low[i] == "using" {
            let mut j = i + 2;
            while t[j] != ")" {
                if t[j] != "," {
                    st.using.push(t[j].clone());
                }
                j += 1;
            }
        }
        i += 1;
    }
    // The select list, split at commas outside parentheses.
    let mut items: Vec<Vec<String>> = vec![Vec::new()];
    let mut depth = 0;
    for w in &t[1..from] {
        match w.as_str() {
            "(" => depth += 1,
            ")" => depth -= 1,
            "," if depth == 0 => {
                items.push(Vec::new());
                continue;
            }
            _ => {}
        }
        items.last_mut().unwrap().push(w.clone());
    }
    for item in &items {
        let item: Vec<&String> = item.iter().filter(|w| !w.eq_ignore_ascii_case("distinct")).collect();
        let as_at = item.iter().rposition(|w| w.eq_ignore_ascii_case("as"));
        let (expr, name) = match as_at {
            Some(a) => (&item[..a], item[a + 1].clone()),
            None => (&item[..], item.last().unwrap().rsplit('.').next().unwrap().to_string()),
        };
        st.outputs.push(name);
        st.references.extend(expr.iter().filter_map(|w| reference(w)));
    }
    st.references.extend(t[where_at..].iter().filter_map(|w| reference(w)));
    st
}

fn reference(w: &str) -> Option<(Option<String>, String)> {
    let first = w.chars().next()?;
    if !(first.is_alphabetic() || first == '_') || KEYWORDS.contains(&w.to_ascii_lowercase().as_str()) {
        return None;
    }
    Some(match w.split_once('.') {
        Some((a, c)) => (Some(a.to_string()), c.to_string()),
        None => (None, w.to_string()),
    })
}

/// Every statement of the osquery pack reads tables that exist on Linux,
/// columns those tables have, gives their required columns, and names its
/// output columns exactly as the query's documented row shape.
#[test]
fn every_osquery_statement_matches_osquerys_table_specs() {
    let specs = specs();
    let statements: Vec<(&str, &str)> = osquery_statements().collect();
    assert!(statements.len() >= 5, "{statements:?}");
    for (name, sql) in statements {
        let st = parse(sql);
        for table in st.tables.values() {
            assert!(specs.contains_key(table), "{name}: table {table} is not one of osquery's Linux tables");
        }
        for (alias, column) in &st.references {
            let tables: Vec<&String> = match alias {
                Some(a) => vec![st.tables.get(a).unwrap_or_else(|| panic!("{name}: unknown alias {a} in {sql}"))],
                None => st.tables.values().collect(),
            };
            assert!(
                tables.iter().any(|t| specs[*t].columns.contains(column)),
                "{name}: no column {column} in {tables:?} (osquery a5b14f63): {sql}"
            );
        }
        for c in &st.using {
            for t in st.tables.values() {
                assert!(specs[t].columns.contains(c), "{name}: USING ({c}) but {t} has no {c}");
            }
        }
        for t in st.tables.values() {
            for req in &specs[t].required {
                assert!(
                    st.where_text.contains(req) || st.using.contains(req),
                    "{name}: {t}.{req} is required and the statement does not constrain it: {sql}"
                );
            }
        }
        let shape: Vec<&str> = row_shape(name).unwrap().to_vec();
        let outputs: Vec<&str> = st.outputs.iter().map(String::as_str).collect();
        assert_eq!(outputs, shape, "{name}: the statement's output names are the row shape");
        assert!(
            sql.matches(" AS ").count() >= shape.len(),
            "{name}: every output column is aliased, not named by SQLite's habit: {sql}"
        );
    }
}

/// The spec reader and the SQL reader themselves: a wrong column is caught.
#[test]
fn a_wrong_column_or_table_would_fail() {
    let specs = specs();
    let st = parse("SELECT p.pid AS pid, p.exe_path AS path FROM processes p WHERE p.on_disk = 0;");
    let missing: Vec<&String> =
        st.references.iter().filter(|(_, c)| !specs["processes"].columns.contains(c)).map(|(_, c)| c).collect();
    assert_eq!(missing, ["exe_path"]);
    assert!(!specs.contains_key("process_open_sockets_typo"));
    assert!(specs["processes"].columns.contains("on_disk"));
    assert!(!specs["processes"].columns.contains("elevated_token"), "a Windows-only column is not Linux's");
}

fn read_rows(format: OutputFormat, path: &Path) -> Vec<Row> {
    format.parse(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A row as the analysis compares it: the compared columns, normalised.
fn compared(query: &str, rows: &[Row]) -> BTreeSet<Vec<(String, String)>> {
    let profile = Profile::by_name(query);
    let names = HostNames::new("web-1", Some("web-1"));
    rows.iter()
        .map(|r| {
            r.iter()
                .filter(|(c, _)| profile.compared(c))
                .map(|(c, v)| {
                    let mut out = String::new();
                    profile.normalise_into(c, v, &names, &mut out);
                    (c.clone(), out)
                })
                .collect()
        })
        .collect()
}

fn shell_format(query: &str) -> OutputFormat {
    let q = diffy_core::payload::standard_query_named(query).unwrap();
    q.format
}

/// The same host through either pack: the recorded osqueryi answer and the
/// shell pack's answer give the same rows once read and normalised.
#[test]
fn the_same_host_answers_the_same_through_either_pack() {
    let dir = fixtures().join("osquery-replay/web-1");
    for (query, _) in osquery_statements() {
        let json = dir.join(format!("{query}.osqueryi.json"));
        let text = std::fs::read_to_string(&json).unwrap();
        // osqueryi's output rules: every value a string, keys in
        // alphabetical order (its rows are std::map).
        let parsed: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&text).unwrap();
        for r in &parsed {
            assert!(r.values().all(|v| v.is_string()), "{query}: osqueryi prints every value as a string");
            let keys: Vec<&String> = r.keys().collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "{query}: keys in alphabetical order");
            let shape: BTreeSet<&str> = row_shape(query).unwrap().iter().copied().collect();
            assert_eq!(r.keys().map(String::as_str).collect::<BTreeSet<_>>(), shape, "{query}: the row shape");
        }
        let osq = read_rows(OutputFormat::Json, &json);
        let sh = read_rows(shell_format(query), &dir.join(format!("{query}.shell.out")));
        for r in &sh {
            let shape: BTreeSet<&str> = row_shape(query).unwrap().iter().copied().collect();
            assert_eq!(r.keys().map(String::as_str).collect::<BTreeSet<_>>(), shape, "{query}: shell row shape");
        }
        assert_eq!(compared(query, &osq), compared(query, &sh), "{query}: osquery and shell answers of one host");
        assert!(!osq.is_empty());
    }
}

/// An osqueryi that behaves as the real one prints: it answers from the
/// recorded outputs, writes `~/.osquery/` as osqueryi does whatever its flags,
/// records its arguments, prints `[\n\n]` for no rows, and for `users` prints
/// its rows and then fails (an SQL error still prints what it had).
const FAKE_OSQUERYI: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "$REPLAY_ARGS"
h=$HOME; [ -w "$h" ] || h=$(getent passwd "$(id -u)" | cut -d: -f6)
mkdir -p "$h/.osquery"
for sql; do :; done
for q in processes listening_ports crontab kernel_modules users; do
  case $sql in *"FROM $q"*|*"FROM $q "*) table=$q; break ;; esac
done
case $table in
  crontab) printf '[\n\n]\n'; exit 0 ;;
  users) cat "$REPLAY_DIR/users.osqueryi.json"; echo 'Error: database disk image is malformed' >&2; exit 1 ;;
  *) cat "$REPLAY_DIR/$table.osqueryi.json" ;;
esac
"#;

#[test]
fn the_osquery_pack_runs_osqueryi_as_recorded_and_leaves_no_trace() {
    let d = Diffy::new();
    let bin = d.path("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = d.write("fake-bin/osqueryi", FAKE_OSQUERYI);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let replay = fixtures().join("osquery-replay/web-1");
    let args_log = d.path("osqueryi-args");
    let d = d
        .env("PATH", &format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
        .env("REPLAY_DIR", replay.to_str().unwrap())
        .env("REPLAY_ARGS", args_log.to_str().unwrap());
    let r = d.run(&["collect", "web", "--host", "web-1", "--payload", "osquery", "--format", "json"]);
    assert!([0, 1].contains(&r.code), "{}", r.stderr);
    let run = r.json()["id"].as_str().unwrap().to_string();
    let host = d.host_result(&run, "web-1");
    let status = |q: &str| {
        host["queries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == q)
            .unwrap_or_else(|| panic!("{q}: {host}"))
            .clone()
    };
    for q in ["processes", "listening_ports", "kernel_modules"] {
        let s = status(q);
        assert_eq!(s["status"], "ok", "{q}: {s}");
        let stored = std::fs::read(d.path(&format!("diffy-store/runs/{run}/hosts/web-1/{q}.stdout"))).unwrap();
        assert_eq!(stored, std::fs::read(replay.join(format!("{q}.osqueryi.json"))).unwrap(), "{q}: kept as printed");
    }
    assert_eq!(status("crontab")["status"], "ok", "`[\\n\\n]` is no rows, not an error");
    let users = status("users");
    assert_ne!(users["status"], "ok", "osqueryi's non-zero exit is the query's: {users}");
    assert_eq!(users["exit_code"], 1, "{users}");
    assert!(users["stdout"]["bytes"].as_u64().unwrap() > 0, "the rows printed before the error are kept: {users}");
    let stderr = std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/hosts/web-1/users.stderr"))).unwrap();
    assert!(stderr.contains("Error: database disk image is malformed"), "{stderr}");

    let calls = std::fs::read_to_string(&args_log).unwrap();
    assert_eq!(calls.lines().count(), 5, "osqueryi answers five queries; the others are the shell pack's: {calls}");
    for call in calls.lines() {
        assert!(call.starts_with(OSQUERYI_FLAGS), "every osqueryi gets the flags: {call}");
    }
    assert!(!d.path(".osquery").exists(), "~/.osquery that osqueryi created is removed");

    // Where ~/.osquery was there before, it stays.
    std::fs::create_dir_all(d.path(".osquery")).unwrap();
    let r = d.run(&["collect", "web", "--host", "web-1", "--payload", "osquery", "--format", "json"]);
    assert!([0, 1].contains(&r.code), "{}", r.stderr);
    assert!(d.path(".osquery").exists(), "a ~/.osquery the host had is not diffy's to remove");
}
