//! Evidence collected elsewhere: a folder of per-host JSON files.
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
//! JSON scalar; they are read as osquery prints them. Files are parsed in
//! parallel, straight into the interned tables, without building rows.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffy_core::{Error, HostId, HostStatus, QueryStatus, Result};
use rayon::prelude::*;
use simd_json::{Buffers, Node, StaticNode, Tape};

use diffy_core::report::QueryFailure;

use crate::dataset::{Builder, HostEntry, HostQuery, Profiles, Role, finish_ids};
use crate::profile::HostNames;

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

/// Walks one query's value: rows are interned as they are read.
fn walk_query<'a>(
    tape: &[Node<'a>],
    at: usize,
    builder: &mut Builder,
    table: usize,
    names: &HostNames<'_>,
    host_index: u32,
    buf: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> HostQuery {
    let failed = |builder: &Builder, message: String| {
        HostQuery::Failed(QueryFailure {
            query: builder.tables[table].name.clone(),
            status: QueryStatus::NonZeroExit,
            message,
        })
    };
    match tape[at] {
        Node::Array { len, .. } => {
            let mut ids = Vec::with_capacity(len);
            let mut i = at + 1;
            for n in 0..len {
                let Node::Object { len: cols, .. } = tape[i] else {
                    return failed(builder, format!("row {n} is not an object of column names to values"));
                };
                buf.clear();
                let mut j = i + 1;
                for _ in 0..cols {
                    let Node::String(col) = tape[j] else { unreachable!("object keys are strings") };
                    buf.push((col, value(tape, j + 1)));
                    j += 1 + span(tape, j + 1);
                }
                ids.push(builder.intern_row(table, names, host_index, buf));
                i += span(tape, i);
            }
            finish_ids(&mut ids);
            HostQuery::Rows(ids)
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
            let message = message.unwrap_or_else(|| {
                let mut o = String::new();
                write_json(tape, at, &mut o);
                format!("not a list of rows: {o}")
            });
            failed(builder, message)
        }
        Node::Static(StaticNode::Null) => failed(builder, "no result (null)".into()),
        Node::String(s) => failed(builder, s.to_string()),
        Node::Static(v) => failed(builder, format!("not a list of rows: {}", scalar_text(v))),
    }
}

/// Walks one host file's tape into `builder`.
fn walk_host(
    tape: &[Node<'_>],
    builder: &mut Builder,
    role: Role,
    fallback_id: &str,
) -> std::result::Result<HostEntry, String> {
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
    let id = id.unwrap_or_else(|| fallback_id.to_string());
    let mut queries = Vec::new();
    if let Some(r) = results {
        let names = HostNames::new(&id, hostname.as_deref());
        let host_index = builder.next_host_index(role);
        let Node::Object { len, .. } = tape[r] else { unreachable!() };
        let mut buf = Vec::with_capacity(16);
        let mut j = r + 1;
        for _ in 0..len {
            let Node::String(name) = tape[j] else { return Err("query names must be strings".into()) };
            if diffy_core::names::validate_query_name(name).is_ok() {
                let table = builder.table(name);
                let q = walk_query(tape, j + 1, builder, table, &names, host_index, &mut buf);
                queries.push((table, q));
            }
            j += 1 + span(tape, j + 1);
        }
    } else {
        return Err("the host file has no results object".into());
    }
    Ok(HostEntry { id, labels, status: HostStatus::Ok, message: None, queries, vantage: None, unseen: Vec::new() })
}

/// What was found in an import folder.
#[derive(Debug)]
pub(crate) struct Imported {
    pub builder: Builder,
    pub baseline_source: Option<String>,
}

/// How deep values may nest in a host file (the file's own object, its
/// results, a query's rows and a row's columns take four levels). Deeper
/// files are refused before anything walks them.
pub(crate) const MAX_DEPTH: usize = 64;

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

fn failed_entry(id: &str, message: String) -> HostEntry {
    HostEntry {
        id: id.to_string(),
        labels: BTreeMap::new(),
        status: HostStatus::InvalidEvidence,
        message: Some(message),
        queries: Vec::new(),
        vantage: None,
        unseen: Vec::new(),
    }
}

/// Adds one host file's content (or its failure) to `builder`. The file's
/// bytes are parsed in place.
fn add_file(builder: &mut Builder, role: Role, fallback_id: &str, bytes: &mut [u8], source: &str, parser: &mut Parser) {
    let mut tape = parser.tape.take().unwrap_or_else(Tape::null).reset();
    let parsed = simd_json::fill_tape(bytes, &mut parser.buffers, &mut tape);
    let entry = match parsed {
        Ok(()) if depth(&tape.0) > MAX_DEPTH => {
            failed_entry(fallback_id, format!("{source} nests values deeper than {MAX_DEPTH} levels"))
        }
        Ok(()) => match walk_host(&tape.0, builder, role, fallback_id) {
            Ok(entry) => match HostId::new(entry.id.as_str()) {
                Ok(_) => entry,
                Err(e) => failed_entry(fallback_id, format!("{source}: {e}")),
            },
            // Rows interned before the error stay in the tables, unreferenced.
            Err(e) => failed_entry(fallback_id, format!("{source} is not a valid host file: {e}")),
        },
        Err(e) => failed_entry(fallback_id, format!("{source} is not valid JSON: {e}")),
    };
    parser.tape = Some(tape.reset());
    builder.push_host(role, entry);
}

/// Reads one host file's bytes as an import does, into a fresh table set;
/// returns the host's status and how many rows it gave (for fuzzing).
pub(crate) fn read_one(bytes: &[u8], profiles: Arc<Profiles>) -> (HostStatus, usize) {
    let mut builder = Builder::new(profiles);
    let mut parser = Parser::default();
    let mut bytes = bytes.to_vec();
    add_file(&mut builder, Role::Survey, "fuzzed", &mut bytes, "hosts/fuzzed.json", &mut parser);
    let host = &builder.survey[0];
    let rows = host.queries.iter().map(|(_, q)| if let HostQuery::Rows(r) = q { r.len() } else { 0 }).sum();
    (host.status, rows)
}

/// A parser's reusable buffers, one per thread.
#[derive(Default)]
struct Parser {
    buffers: Buffers,
    tape: Option<Tape<'static>>,
}

fn host_files(dir: &Path) -> Result<Vec<PathBuf>> {
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

/// A host read from two files would be counted twice: refuse the import,
/// as a static target refuses a host listed twice.
fn refuse_duplicates(builder: &Builder, files: &[PathBuf]) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    // Hosts are pushed in file order (rayon keeps it through fold and reduce).
    let file = |i: usize| {
        (builder.survey.len() == files.len()).then(|| files[i].file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    for (i, h) in builder.survey.iter().enumerate() {
        if let Some(first) = seen.insert(h.id.as_str(), i) {
            let files = match (file(first).flatten(), file(i).flatten()) {
                (Some(a), Some(b)) => format!(" (hosts/{a} and hosts/{b})"),
                _ => String::new(),
            };
            return Err(Error::invalid_with_help(
                format!("host {} is in two host files{files}", h.id),
                "each host must be imported once: remove the copy, or give it its own instance_id",
            ));
        }
    }
    Ok(())
}

/// Reads an import folder in parallel.
pub(crate) fn load(dir: &Path, profiles: Arc<Profiles>) -> Result<Imported> {
    let files = host_files(dir)?;
    let t0 = std::time::Instant::now();
    let builder = files
        .par_iter()
        .fold(
            || (Builder::new(profiles.clone()), Parser::default()),
            |(mut b, mut parser), path| {
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("host").to_string();
                let source = format!("hosts/{}", path.file_name().and_then(|s| s.to_str()).unwrap_or(""));
                match std::fs::read(path) {
                    Ok(mut bytes) => add_file(&mut b, Role::Survey, &stem, &mut bytes, &source, &mut parser),
                    Err(e) => b.push_host(Role::Survey, failed_entry(&stem, format!("cannot read {source}: {e}"))),
                }
                (b, parser)
            },
        )
        .map(|(b, _)| b)
        .reduce(|| Builder::new(profiles.clone()), Builder::merge);
    tracing::debug!("read {} host files in {:?}", files.len(), t0.elapsed());
    let mut builder = builder;
    refuse_duplicates(&builder, &files)?;
    let baseline_path = dir.join("baseline.json");
    let mut baseline_source = None;
    if baseline_path.exists() {
        let bytes = std::fs::read(&baseline_path).map_err(|e| Error::io("import", "read", &baseline_path, e))?;
        let mut parser = Parser::default();
        let value_is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        if value_is_array {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(format!(
                    "{} is not a valid baseline (an array of host objects): {e}",
                    baseline_path.display()
                ))
            })?;
            for (i, item) in items.iter().enumerate() {
                let mut one = item.get().as_bytes().to_vec();
                add_file(
                    &mut builder,
                    Role::Baseline,
                    &format!("baseline-{}", i + 1),
                    &mut one,
                    "baseline.json",
                    &mut parser,
                );
            }
        } else {
            let mut one = bytes;
            add_file(&mut builder, Role::Baseline, "baseline", &mut one, "baseline.json", &mut parser);
        }
        if let Some(bad) = builder.baseline.iter().find(|h| !h.status.is_collected()) {
            return Err(Error::invalid(bad.message.clone().unwrap_or_else(|| "baseline.json is not valid".into())));
        }
        baseline_source = Some(baseline_path.display().to_string());
    }
    Ok(Imported { builder, baseline_source })
}
