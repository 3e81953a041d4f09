//! Evidence collected elsewhere, read as the observations the engine
//! analyses: a folder of per-host JSON files.
//!
//! ```text
//! DIR/hosts/<host id>.json   {"instance_id": "<host id>",
//!                             "results": {"<query>": [{"column": "value", ...}, ...], ...}}
//! DIR/baseline.json          optional: one object of the same shape, or an array of them
//! ```
//!
//! Optional fields: `hostname` (folded like the host id), `labels` (an object
//! of strings, used to describe cohorts), and per query, instead of rows,
//! `{"error": "..."}` for a query that failed on that host. Values may be any
//! JSON scalar; they are read as osquery prints them (a nested value as its
//! JSON text).
//!
//! A host file that is not valid JSON, nests deeper than [`MAX_DEPTH`], or
//! lacks `results` is that host's `invalid_evidence`; the others are read.
//! Two files holding the same host are refused, naming both. The same faults
//! in `baseline.json` are an error. Host files are parsed on blocking
//! threads, several at once, and handed on in file order as they are read:
//! a large folder is never held in memory whole.
//!
//! [`Engine::analyze_import`](crate::Engine::analyze_import) analyses a
//! folder; [`read_dir`] gives its observations to a caller's own analysis.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use simd_json::{Buffers, Node, StaticNode, Tape};

use crate::analysis::Observations;
use crate::names::{Host, HostId};
use crate::query::Row;
use crate::result::{HostFacts, HostObservation, HostStatus, QueryObservation, QueryOutcome, QueryStatus};
use crate::{Error, Result};

/// How deep values may nest in a host file (the file's own object, its
/// results, a query's rows and a row's columns take four levels). Deeper
/// files are refused before anything walks them.
pub const MAX_DEPTH: usize = 64;

/// An import folder, opened: its hosts stream as they are parsed.
#[derive(Debug)]
#[non_exhaustive]
pub struct Imported {
    /// The folder, as given.
    pub dir: PathBuf,
    /// How many host files it has.
    pub host_files: usize,
    /// The hosts' observations, in file order. A host found in two files
    /// ends the stream with an error naming both.
    pub survey: Observations,
    /// `baseline.json`'s hosts, when the folder has one (read whole: it is
    /// one or a few hosts).
    pub baseline: Option<Vec<HostObservation>>,
    /// Where the baseline was read from.
    pub baseline_source: Option<String>,
}

/// Opens an import folder: lists its host files (an error when there are
/// none), reads `baseline.json` when present, and streams the hosts.
pub fn read_dir(dir: &Path) -> Result<Imported> {
    let files = host_files(dir)?;
    let baseline_path = dir.join("baseline.json");
    let (baseline, baseline_source) = if baseline_path.exists() {
        (Some(read_baseline(&baseline_path)?), Some(baseline_path.display().to_string()))
    } else {
        (None, None)
    };
    let host_files = files.len();
    let at_once = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let seen: Arc<Mutex<HashMap<HostId, String>>> = Arc::default();
    let survey = futures::stream::iter(files.into_iter().enumerate())
        .map(|(i, path)| async move {
            tokio::task::spawn_blocking(move || read_host_file(&path, i))
                .await
                .map_err(|e| Error::plugin("import", format!("reading a host file failed: {e}")))
        })
        .buffered(at_once)
        .map(move |r| {
            let (obs, file) = r?;
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(first) = seen.insert(obs.host.id.clone(), file.clone()) {
                return Err(Error::invalid_with_help(
                    format!("host {} is in two host files (hosts/{first} and hosts/{file})", obs.host.id),
                    "each host must be imported once: remove the copy, or give it its own instance_id",
                ));
            }
            Ok(obs)
        });
    Ok(Imported { dir: dir.to_path_buf(), host_files, survey: Observations::new(survey), baseline, baseline_source })
}

/// Reads one host file's bytes as an import does (for fuzzing and tests):
/// the host's observation, `invalid_evidence` when the bytes are not a host
/// file.
pub fn read_host_bytes(bytes: &[u8]) -> HostObservation {
    let mut bytes = bytes.to_vec();
    PARSER.with_borrow_mut(|p| parse(p, &mut bytes, "fuzzed", "hosts/fuzzed.json"))
}

fn host_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::invalid_with_help(
            format!("{} is not a directory", dir.display()),
            "--import takes a folder with hosts/<host>.json files",
        ));
    }
    let hosts = dir.join("hosts");
    let entries = std::fs::read_dir(&hosts).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::invalid_with_help(
            format!("{} has no hosts/ folder", dir.display()),
            "an import folder holds hosts/<host id>.json files, and optionally baseline.json",
        ),
        _ => Error::io("import", "read", &hosts, e),
    })?;
    let mut files = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io("import", "read", &hosts, e))?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") && e.file_type().is_ok_and(|t| t.is_file()) {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::invalid_with_help(
            format!("{} has no host files", hosts.display()),
            "an import folder holds hosts/<host id>.json files",
        ));
    }
    Ok(files)
}

fn read_baseline(path: &Path) -> Result<Vec<HostObservation>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("import", "read", path, e))?;
    let mut hosts = Vec::new();
    PARSER.with_borrow_mut(|parser| -> Result<()> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(format!("{} is not a valid baseline (an array of host objects): {e}", path.display()))
            })?;
            for (i, item) in items.iter().enumerate() {
                let mut one = item.get().as_bytes().to_vec();
                hosts.push(parse(parser, &mut one, &format!("baseline-{}", i + 1), "baseline.json"));
            }
        } else {
            let mut one = bytes;
            hosts.push(parse(parser, &mut one, "baseline", "baseline.json"));
        }
        Ok(())
    })?;
    if let Some(bad) = hosts.iter().find(|h| !h.status.is_collected()) {
        return Err(Error::invalid(bad.message.clone().unwrap_or_else(|| "baseline.json is not valid".into())));
    }
    Ok(hosts)
}

/// Reads and parses one host file; returns its observation and file name.
fn read_host_file(path: &Path, index: usize) -> (HostObservation, String) {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("").to_string();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("host");
    // A file name that is no host id still names its host.
    let stem = if HostId::new(stem).is_ok() { stem.to_string() } else { format!("file-{}", index + 1) };
    let source = format!("hosts/{name}");
    let obs = match std::fs::read(path) {
        Ok(mut bytes) => PARSER.with_borrow_mut(|p| parse(p, &mut bytes, &stem, &source)),
        Err(e) => failed(&stem, format!("cannot read {source}: {e}")),
    };
    (obs, name)
}

/// A parser's reusable buffers, one per thread.
#[derive(Default)]
struct Parser {
    buffers: Buffers,
    tape: Option<Tape<'static>>,
}

thread_local! {
    static PARSER: std::cell::RefCell<Parser> = std::cell::RefCell::default();
}

fn failed(id: &str, message: String) -> HostObservation {
    HostObservation {
        host: Host::new(HostId::new(id).unwrap_or_else(|_| HostId::new("host").expect("a valid id"))),
        status: HostStatus::InvalidEvidence,
        message: Some(message),
        facts: HostFacts::default(),
        vantage: None,
        queries: Vec::new(),
    }
}

/// Parses one host file's bytes in place.
fn parse(parser: &mut Parser, bytes: &mut [u8], fallback_id: &str, source: &str) -> HostObservation {
    let mut tape = parser.tape.take().unwrap_or_else(Tape::null).reset();
    let obs = match simd_json::fill_tape(bytes, &mut parser.buffers, &mut tape) {
        Ok(()) if depth(&tape.0) > MAX_DEPTH => {
            failed(fallback_id, format!("{source} nests values deeper than {MAX_DEPTH} levels"))
        }
        Ok(()) => match walk_host(&tape.0, fallback_id) {
            Ok((id, obs)) => match HostId::new(id.as_str()) {
                Ok(id) => HostObservation { host: Host { id, ..obs.host }, ..obs },
                Err(e) => failed(fallback_id, format!("{source}: {e}")),
            },
            Err(e) => failed(fallback_id, format!("{source} is not a valid host file: {e}")),
        },
        Err(e) => failed(fallback_id, format!("{source} is not valid JSON: {e}")),
    };
    parser.tape = Some(tape.reset());
    obs
}

/// How deep the values on `tape` nest, counted without recursion.
fn depth(tape: &[Node<'_>]) -> usize {
    let mut open: Vec<usize> = Vec::new();
    let mut deepest = 0;
    for (i, node) in tape.iter().enumerate() {
        while open.last().is_some_and(|&end| end <= i) {
            open.pop();
        }
        if let Node::Object { count, .. } | Node::Array { count, .. } = node {
            open.push(i + 1 + count);
            deepest = deepest.max(open.len());
        }
    }
    deepest
}

/// Nodes a value occupies on the tape (a container counts its contents).
fn span(tape: &[Node<'_>], i: usize) -> usize {
    match tape[i] {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// Writes the JSON text of the value at `i` (for nested values in a column).
fn write_json(tape: &[Node<'_>], i: usize, out: &mut String) {
    match tape[i] {
        Node::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Node::Static(v) => out.push_str(&scalar_text(v)),
        Node::Array { len, .. } => {
            out.push('[');
            let mut j = i + 1;
            for n in 0..len {
                if n > 0 {
                    out.push(',');
                }
                write_json(tape, j, out);
                j += span(tape, j);
            }
            out.push(']');
        }
        Node::Object { len, .. } => {
            out.push('{');
            let mut j = i + 1;
            for n in 0..len {
                if n > 0 {
                    out.push(',');
                }
                write_json(tape, j, out);
                out.push(':');
                write_json(tape, j + 1, out);
                j += 1 + span(tape, j + 1);
            }
            out.push('}');
        }
    }
}

fn scalar_text(v: StaticNode) -> String {
    match v {
        StaticNode::Null => String::new(),
        StaticNode::Bool(b) => b.to_string(),
        StaticNode::I64(n) => n.to_string(),
        StaticNode::U64(n) => n.to_string(),
        StaticNode::F64(f) => f.to_string(),
        #[allow(unreachable_patterns)]
        _ => String::new(),
    }
}

/// A column value as osquery prints it: strings as they are, scalars as text.
fn value<'a>(tape: &[Node<'a>], i: usize) -> Cow<'a, str> {
    match tape[i] {
        Node::String(s) => Cow::Borrowed(s),
        Node::Static(v) => Cow::Owned(scalar_text(v)),
        _ => {
            let mut out = String::new();
            write_json(tape, i, &mut out);
            Cow::Owned(out)
        }
    }
}

/// One query's value: its rows, or why there are none.
fn walk_query(tape: &[Node<'_>], at: usize) -> QueryOutcome {
    let failed = |message: String| QueryOutcome::Failed { status: QueryStatus::NonZeroExit, message };
    match tape[at] {
        Node::Array { len, .. } => {
            let mut rows = Vec::with_capacity(len);
            let mut i = at + 1;
            for n in 0..len {
                let Node::Object { len: cols, .. } = tape[i] else {
                    return failed(format!("row {n} is not an object of column names to values"));
                };
                let mut row = Row::new();
                let mut j = i + 1;
                for _ in 0..cols {
                    let Node::String(col) = tape[j] else { unreachable!("object keys are strings") };
                    row.insert(col.to_string(), value(tape, j + 1).into_owned());
                    j += 1 + span(tape, j + 1);
                }
                rows.push(row);
                i += span(tape, i);
            }
            QueryOutcome::Rows(rows)
        }
        Node::Object { len, .. } => {
            let mut i = at + 1;
            let mut message = None;
            for _ in 0..len {
                if matches!(tape[i], Node::String("error")) {
                    message = Some(value(tape, i + 1).into_owned());
                }
                i += 1 + span(tape, i + 1);
            }
            failed(message.unwrap_or_else(|| {
                let mut o = String::new();
                write_json(tape, at, &mut o);
                format!("not a list of rows: {o}")
            }))
        }
        Node::Static(StaticNode::Null) => failed("no result (null)".into()),
        Node::String(s) => failed(s.to_string()),
        Node::Static(v) => failed(format!("not a list of rows: {}", scalar_text(v))),
    }
}

/// One host file's tape: the host's id (its `instance_id`, else the file's
/// name) and observation.
fn walk_host(tape: &[Node<'_>], fallback_id: &str) -> std::result::Result<(String, HostObservation), String> {
    let Some(Node::Object { len, .. }) = tape.first().copied() else {
        return Err("a host file must be a JSON object with instance_id and results".into());
    };
    let (mut id, mut hostname, mut labels, mut results) = (None, None, BTreeMap::new(), None);
    let mut i = 1;
    for _ in 0..len {
        let Node::String(key) = tape[i] else { return Err("object keys must be strings".into()) };
        let v = i + 1;
        match (key, tape[v]) {
            ("instance_id", Node::String(s)) => id = Some(s.to_string()),
            ("instance_id", _) => return Err("instance_id must be a string".into()),
            ("hostname", Node::String(s)) => hostname = Some(s.to_string()),
            ("labels", Node::Object { len, .. }) => {
                let mut j = v + 1;
                for _ in 0..len {
                    if let Node::String(k) = tape[j] {
                        labels.insert(k.to_string(), value(tape, j + 1).into_owned());
                    }
                    j += 1 + span(tape, j + 1);
                }
            }
            ("results", Node::Object { .. }) => results = Some(v),
            ("results", _) => return Err("results must be an object of query names to rows".into()),
            _ => {}
        }
        i = v + span(tape, v);
    }
    let Some(r) = results else { return Err("the host file has no results object".into()) };
    let Node::Object { len, .. } = tape[r] else { unreachable!("results is an object") };
    let mut queries = Vec::with_capacity(len);
    let mut j = r + 1;
    for _ in 0..len {
        let Node::String(name) = tape[j] else { return Err("query names must be strings".into()) };
        if crate::names::validate_query_name(name).is_ok() {
            queries.push(QueryObservation { query: name.to_string(), outcome: walk_query(tape, j + 1), unseen: None });
        }
        j += 1 + span(tape, j + 1);
    }
    let host = Host { id: HostId::new(fallback_id).map_err(|e| e.to_string())?, address: None, labels };
    let obs = HostObservation {
        host,
        status: HostStatus::Ok,
        message: None,
        facts: HostFacts { hostname },
        vantage: None,
        queries,
    };
    Ok((id.unwrap_or_else(|| fallback_id.to_string()), obs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_file_reads_as_an_observation() {
        let o = read_host_bytes(
            br#"{"instance_id": "i-1", "hostname": "web-1", "labels": {"deploy": "canary"},
                "results": {"ports": [{"port": 22, "ok": true, "x": [1, "a"]}], "cron": {"error": "denied"}}}"#,
        );
        assert_eq!((o.host.id.as_str(), o.status), ("i-1", HostStatus::Ok));
        assert_eq!(o.facts.hostname.as_deref(), Some("web-1"));
        assert_eq!(o.host.labels["deploy"], "canary");
        let QueryOutcome::Rows(rows) = &o.queries[0].outcome else { panic!("{o:?}") };
        assert_eq!(rows[0]["port"], "22");
        assert_eq!(rows[0]["ok"], "true");
        assert_eq!(rows[0]["x"], r#"[1,"a"]"#);
        assert_eq!(
            o.queries[1].outcome,
            QueryOutcome::Failed { status: QueryStatus::NonZeroExit, message: "denied".into() }
        );
    }

    #[test]
    fn bad_bytes_are_the_hosts_invalid_evidence() {
        for (bytes, why) in [
            (&b"{not json"[..], "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (b"{\"instance_id\": \"a\"}", "no results object"),
            (b"{\"instance_id\": \"../x\", \"results\": {}}", "hosts/fuzzed.json:"),
        ] {
            let o = read_host_bytes(bytes);
            assert_eq!(o.status, HostStatus::InvalidEvidence);
            assert!(o.message.as_deref().unwrap().contains(why), "{why}: {:?}", o.message);
        }
        let deep = format!("{{\"instance_id\": \"a\", \"results\": {{\"q\": {}{}}}}}", "[".repeat(70), "]".repeat(70));
        assert!(read_host_bytes(deep.as_bytes()).message.unwrap().contains("deeper than 64"));
    }
}
