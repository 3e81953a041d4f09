//! What a host returned: per-query raw evidence with statuses, and its parsed
//! form for analysis.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names::Host;
use crate::query::{PayloadSpec, Row};
use crate::vantage::{Unseen, Vantage};

/// The SHA-256 of `bytes`, hex encoded.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How one query ended on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QueryStatus {
    /// Exited 0; its output is complete.
    Ok,
    /// Exited with a code other than 0 (and other than 127).
    NonZeroExit,
    /// Exited 127: the shell could not find the command it runs (`osqueryi`
    /// on a host without osquery, say).
    CommandNotFound,
    /// Stopped at its deadline or the host's; the output is what it printed until then.
    TimedOut,
    /// Its output was cut (output limit, a dropped connection, an inline limit).
    Truncated,
    /// Never ran: the host failed or its deadline had passed before this query.
    NotRun,
    /// Collected fine, but its output could not be read as its format. Set when
    /// evidence is parsed, never by a transport.
    Unparseable,
}

impl QueryStatus {
    /// The snake_case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryStatus::Ok => "ok",
            QueryStatus::NonZeroExit => "non_zero_exit",
            QueryStatus::CommandNotFound => "command_not_found",
            QueryStatus::TimedOut => "timed_out",
            QueryStatus::Truncated => "truncated",
            QueryStatus::NotRun => "not_run",
            QueryStatus::Unparseable => "unparseable",
        }
    }
}

impl fmt::Display for QueryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How collection ended on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostStatus {
    /// Every query ran and exited 0.
    Ok,
    /// The payload ran to its end, but some queries failed (see their statuses).
    Partial,
    /// The host's deadline passed before the payload finished.
    TimedOut,
    /// The host could not be reached (connection refused, no route, undeliverable).
    Unreachable,
    /// The host refused our credentials, or sudo wanted a password.
    AuthFailed,
    /// The host presented a key that does not match the known one. During an
    /// incident this may mean an attacker: check before trusting the host.
    HostKeyMismatch,
    /// The host's key is not known and strict checking refused it: add it to
    /// known_hosts (checked out of band), or accept new keys explicitly.
    HostKeyUnknown,
    /// The output was cut before the payload's end marker.
    Truncated,
    /// The payload script itself failed (no shell, no temporary directory).
    NonZeroExit,
    /// The transport failed in another way (API error, protocol error).
    TransportError,
    /// The run was interrupted before this host finished.
    Cancelled,
    /// What the host returned, or what was kept of it, could not be read: a
    /// malformed or corrupt record, an import file that is not valid JSON,
    /// output that made a parser fail. Whatever raw bytes there were are kept.
    InvalidEvidence,
}

impl HostStatus {
    /// The snake_case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Ok => "ok",
            HostStatus::Partial => "partial",
            HostStatus::TimedOut => "timed_out",
            HostStatus::Unreachable => "unreachable",
            HostStatus::AuthFailed => "auth_failed",
            HostStatus::HostKeyMismatch => "host_key_mismatch",
            HostStatus::HostKeyUnknown => "host_key_unknown",
            HostStatus::Truncated => "truncated",
            HostStatus::NonZeroExit => "non_zero_exit",
            HostStatus::TransportError => "transport_error",
            HostStatus::Cancelled => "cancelled",
            HostStatus::InvalidEvidence => "invalid_evidence",
        }
    }

    /// Whether the host returned usable evidence (all or part of its queries).
    pub fn is_collected(self) -> bool {
        matches!(self, HostStatus::Ok | HostStatus::Partial)
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One query's result on one host, with its raw output byte for byte.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The query's name (`_setup` and `_teardown` for the payload's own frames).
    pub name: String,
    /// How it ended.
    pub status: QueryStatus,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Raw standard output.
    pub stdout: Bytes,
    /// Raw standard error.
    pub stderr: Bytes,
    /// SHA-256 of `stdout`, hex.
    pub stdout_sha256: String,
    /// SHA-256 of `stderr`, hex.
    pub stderr_sha256: String,
    /// When it started, by the host's clock (second resolution), if reported.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended, by the host's clock, if reported.
    pub finished_at: Option<DateTime<Utc>>,
    /// A human explanation of a status other than `ok`.
    pub message: Option<String>,
}

impl QueryResult {
    /// A result whose hashes are computed from the bytes.
    pub fn new(
        name: impl Into<String>,
        status: QueryStatus,
        exit_code: Option<i32>,
        stdout: Bytes,
        stderr: Bytes,
    ) -> Self {
        Self {
            name: name.into(),
            status,
            exit_code,
            stdout_sha256: sha256_hex(&stdout),
            stderr_sha256: sha256_hex(&stderr),
            stdout,
            stderr,
            started_at: None,
            finished_at: None,
            message: None,
        }
    }

    /// A query that never ran.
    pub fn not_run(name: impl Into<String>, message: impl Into<String>) -> Self {
        let mut r = Self::new(name, QueryStatus::NotRun, None, Bytes::new(), Bytes::new());
        r.message = Some(message.into());
        r
    }
}

/// Facts a host reports about itself at the start of the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    /// The output of `hostname` on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// Everything one host returned for one run. Failures are data: a host that
/// could not be reached is a `HostResult` with status `unreachable`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostResult {
    /// The host.
    pub host: Host,
    /// How collection ended.
    pub status: HostStatus,
    /// A human explanation of a status other than `ok`.
    pub message: Option<String>,
    /// The exit code of the whole invocation, when known.
    pub exit_code: Option<i32>,
    /// When the transport started on this host (collector's clock).
    pub started_at: DateTime<Utc>,
    /// When it finished (collector's clock).
    pub finished_at: DateTime<Utc>,
    /// Facts the host reported.
    pub facts: HostFacts,
    /// One result per query of the payload, in payload order, plus `_setup`
    /// and `_teardown` when the payload has them.
    pub queries: Vec<QueryResult>,
    /// Bytes the transport received outside every query frame: login banners,
    /// the invocation's standard error, garbage, a partial frame. Never dropped.
    pub unframed_stdout: Bytes,
    /// The invocation's standard error (ssh's messages, the shell's errors).
    pub unframed_stderr: Bytes,
    /// Transport-specific evidence (an SSM command id, an ssh exit status).
    pub transport: BTreeMap<String, String>,
}

impl HostResult {
    /// A host that produced no output at all, with `status` and an explanation.
    pub fn failed(host: Host, status: HostStatus, message: impl Into<String>, at: DateTime<Utc>) -> Self {
        Self {
            host,
            status,
            message: Some(message.into()),
            exit_code: None,
            started_at: at,
            finished_at: at,
            facts: HostFacts::default(),
            queries: Vec::new(),
            unframed_stdout: Bytes::new(),
            unframed_stderr: Bytes::new(),
            transport: BTreeMap::new(),
        }
    }

    /// Total raw bytes held (all queries and unframed output).
    pub fn raw_len(&self) -> u64 {
        let q: usize = self.queries.iter().map(|q| q.stdout.len() + q.stderr.len()).sum();
        (q + self.unframed_stdout.len() + self.unframed_stderr.len()) as u64
    }

    /// The metadata of this result, without raw bytes; see [`HostRecord`].
    pub fn record(&self) -> HostRecord {
        HostRecord {
            host: self.host.clone(),
            status: self.status,
            message: self.message.clone(),
            exit_code: self.exit_code,
            started_at: self.started_at,
            finished_at: self.finished_at,
            facts: self.facts.clone(),
            queries: self
                .queries
                .iter()
                .map(|q| QueryRecord {
                    name: q.name.clone(),
                    status: q.status,
                    exit_code: q.exit_code,
                    stdout: RawRef { bytes: q.stdout.len() as u64, sha256: q.stdout_sha256.clone() },
                    stderr: RawRef { bytes: q.stderr.len() as u64, sha256: q.stderr_sha256.clone() },
                    started_at: q.started_at,
                    finished_at: q.finished_at,
                    message: q.message.clone(),
                })
                .collect(),
            unframed_stdout: RawRef::of(&self.unframed_stdout),
            unframed_stderr: RawRef::of(&self.unframed_stderr),
            transport: self.transport.clone(),
        }
    }

    /// Parses each query's output per the payload, for analysis. Queries that did
    /// not end `ok`, or whose output cannot be read, become failures with a message.
    pub fn observe(&self, spec: &PayloadSpec) -> HostObservation {
        let mut queries = Vec::with_capacity(spec.queries.len());
        for query in &spec.queries {
            let result = self.queries.iter().find(|r| r.name == query.name);
            let outcome = match result {
                None => QueryOutcome::Failed {
                    status: QueryStatus::NotRun,
                    message: self.message.clone().unwrap_or_else(|| format!("host {}", self.status)),
                },
                Some(r) if r.status != QueryStatus::Ok => QueryOutcome::Failed {
                    status: r.status,
                    message: r.message.clone().unwrap_or_else(|| r.status.to_string()),
                },
                Some(r) => match query.format.parse(&r.stdout) {
                    Ok(rows) => QueryOutcome::Rows(rows),
                    Err(e) => QueryOutcome::Failed { status: QueryStatus::Unparseable, message: e.0 },
                },
            };
            let unseen = result.and_then(|r| Unseen::from_stderr(&r.stderr));
            queries.push(QueryObservation { query: query.name.clone(), outcome, unseen });
        }
        let vantage = self
            .queries
            .iter()
            .find(|r| r.name == crate::script::CONTEXT && r.status == QueryStatus::Ok)
            .and_then(|r| Vantage::parse(&r.stdout));
        HostObservation {
            host: self.host.clone(),
            status: self.status,
            message: self.message.clone(),
            facts: self.facts.clone(),
            vantage,
            queries,
        }
    }
}

/// Size and SHA-256 of a block of raw bytes kept by a store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRef {
    /// Length in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

impl RawRef {
    /// Describes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self { bytes: bytes.len() as u64, sha256: sha256_hex(bytes) }
    }
}

/// A query's metadata as stores keep it beside the raw bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRecord {
    /// Query name.
    pub name: String,
    /// Status.
    pub status: QueryStatus,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// The raw standard output's size and hash.
    pub stdout: RawRef,
    /// The raw standard error's size and hash.
    pub stderr: RawRef,
    /// Host-clock start.
    pub started_at: Option<DateTime<Utc>>,
    /// Host-clock end.
    pub finished_at: Option<DateTime<Utc>>,
    /// Explanation.
    pub message: Option<String>,
}

/// A [`HostResult`] without its raw bytes: what stores write as `result.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    /// The host.
    pub host: Host,
    /// Status.
    pub status: HostStatus,
    /// Explanation.
    pub message: Option<String>,
    /// Exit code of the invocation.
    pub exit_code: Option<i32>,
    /// Collector-clock start.
    pub started_at: DateTime<Utc>,
    /// Collector-clock end.
    pub finished_at: DateTime<Utc>,
    /// Facts the host reported.
    #[serde(default)]
    pub facts: HostFacts,
    /// Per-query metadata.
    pub queries: Vec<QueryRecord>,
    /// Unframed output's size and hash.
    pub unframed_stdout: RawRef,
    /// Invocation stderr's size and hash.
    pub unframed_stderr: RawRef,
    /// Transport evidence.
    #[serde(default)]
    pub transport: BTreeMap<String, String>,
}

/// Which block of raw bytes a store is asked for when rebuilding a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawPart<'a> {
    /// A query's standard output.
    Stdout(&'a str),
    /// A query's standard error.
    Stderr(&'a str),
    /// Bytes outside the frames.
    UnframedStdout,
    /// The invocation's standard error.
    UnframedStderr,
}

/// Whether `name` can name a query's stored output: a valid query name, or
/// the payload's own `_setup`, `_teardown` and `_context`.
fn is_stored_query_name(name: &str) -> bool {
    name == crate::script::SETUP
        || name == crate::script::TEARDOWN
        || name == crate::script::CONTEXT
        || crate::names::validate_query_name(name).is_ok()
}

impl HostRecord {
    /// Rebuilds the full result, asking `read` for each block of raw bytes and
    /// checking its size and SHA-256 against the record. A mismatch is reported
    /// as `Err(description)`: the evidence was changed after it was written.
    pub fn into_result<E>(
        self,
        mut read: impl FnMut(RawPart<'_>) -> Result<Bytes, E>,
    ) -> Result<Result<HostResult, String>, E> {
        fn check(what: &str, raw: &RawRef, bytes: &Bytes) -> Result<(), String> {
            if raw.bytes != bytes.len() as u64 || raw.sha256 != sha256_hex(bytes) {
                return Err(format!(
                    "{what}: expected {} bytes with SHA-256 {}, found {} bytes with SHA-256 {}",
                    raw.bytes,
                    raw.sha256,
                    bytes.len(),
                    sha256_hex(bytes)
                ));
            }
            Ok(())
        }
        // Names become file names when the raw bytes are read: a record edited
        // to name `../x` must not open a file outside the host's evidence.
        if let Some(bad) = self.queries.iter().find(|q| !is_stored_query_name(&q.name)) {
            return Ok(Err(format!("the record names a query {:?}, which is not a valid query name", bad.name)));
        }
        let mut queries = Vec::with_capacity(self.queries.len());
        for q in self.queries {
            let stdout = if q.stdout.bytes == 0 { Bytes::new() } else { read(RawPart::Stdout(&q.name))? };
            let stderr = if q.stderr.bytes == 0 { Bytes::new() } else { read(RawPart::Stderr(&q.name))? };
            if let Err(e) = check(&format!("{}.stdout", q.name), &q.stdout, &stdout)
                .and_then(|()| check(&format!("{}.stderr", q.name), &q.stderr, &stderr))
            {
                return Ok(Err(e));
            }
            queries.push(QueryResult {
                name: q.name,
                status: q.status,
                exit_code: q.exit_code,
                stdout,
                stderr,
                stdout_sha256: q.stdout.sha256,
                stderr_sha256: q.stderr.sha256,
                started_at: q.started_at,
                finished_at: q.finished_at,
                message: q.message,
            });
        }
        let unframed_stdout =
            if self.unframed_stdout.bytes == 0 { Bytes::new() } else { read(RawPart::UnframedStdout)? };
        let unframed_stderr =
            if self.unframed_stderr.bytes == 0 { Bytes::new() } else { read(RawPart::UnframedStderr)? };
        if let Err(e) = check("unframed stdout", &self.unframed_stdout, &unframed_stdout)
            .and_then(|()| check("unframed stderr", &self.unframed_stderr, &unframed_stderr))
        {
            return Ok(Err(e));
        }
        Ok(Ok(HostResult {
            host: self.host,
            status: self.status,
            message: self.message,
            exit_code: self.exit_code,
            started_at: self.started_at,
            finished_at: self.finished_at,
            facts: self.facts,
            queries,
            unframed_stdout,
            unframed_stderr,
            transport: self.transport,
        }))
    }
}

/// One host's evidence, parsed: what analysis consumes.
#[derive(Clone, Debug, PartialEq)]
pub struct HostObservation {
    /// The host.
    pub host: Host,
    /// How collection ended.
    pub status: HostStatus,
    /// Why, when the status is not `ok`.
    pub message: Option<String>,
    /// Facts the host reported (its hostname, used to fold self-references).
    pub facts: HostFacts,
    /// How the evidence was collected (user, sudo, `/proc`), when the host
    /// reported it.
    pub vantage: Option<Vantage>,
    /// One entry per query of the payload.
    pub queries: Vec<QueryObservation>,
}

/// One query's parsed outcome on one host.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryObservation {
    /// The query's name.
    pub query: String,
    /// Its rows, or why there are none.
    pub outcome: QueryOutcome,
    /// What it could not read, if it reported anything: its rows are what
    /// the payload could see, not all there is.
    pub unseen: Option<Unseen>,
}

/// Rows, or the reason a query has none to offer.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryOutcome {
    /// The query's rows (possibly none: an empty crontab is a fact).
    Rows(Vec<Row>),
    /// The query failed; its rows are unknown, not empty.
    Failed {
        /// How it failed.
        status: QueryStatus,
        /// Why.
        message: String,
    },
}
