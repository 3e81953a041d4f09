//! The payload as one POSIX `sh` script with framed output, and the parser that
//! turns what came back into per-query results.
//!
//! # Wire format
//!
//! Every line Diffy's script prints starts with `==DIFFY:<nonce>:`, where the
//! nonce is random per run, and ends with `==`:
//!
//! ```text
//! ==DIFFY:N:BEGIN <pid of the script> <hostname>==
//! ==DIFFY:N:START <query>==
//! ==DIFFY:N:Q <query> <exit code> <stdout bytes> <stderr bytes> <start> <end>==
//! <exactly stdout bytes><exactly stderr bytes>
//! ==DIFFY:N:SKIP <query>==          (the host's deadline passed first)
//! ==DIFFY:N:FATAL <message>==       (the script could not run)
//! ==DIFFY:N:END==
//! ```
//!
//! Frames are length-prefixed, so query output may contain any bytes (binary,
//! non-UTF-8, lines that look like frames) without confusing the parser. Each
//! query's output is buffered in a private temporary directory (`mktemp -d`,
//! mode 0700) that the script removes on exit. Each query runs under the host's
//! `timeout` (when present), with the time left before the host's deadline, so
//! a hanging query is stopped on the host itself and the others still run.
//! Queries run as background jobs that the script waits for, so that a hang-up
//! or termination (a dropped connection, a cancelled run) reaches the script at
//! once, and its trap stops the running query's whole process group and frames
//! what that query printed so far (exit code 143) before it exits: nothing is
//! left running on the host, and nothing it printed is lost while the channel
//! is still open.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::names::{Host, fill_random};
use crate::query::{PayloadSpec, QueryCommand};
use crate::result::{HostFacts, HostResult, HostStatus, QueryResult, QueryStatus};
use crate::{Error, Result};

/// The frame name of the payload's setup commands.
pub const SETUP: &str = "_setup";
/// The frame name of the payload's teardown commands.
pub const TEARDOWN: &str = "_teardown";
/// The frame name of the probe of how the payload runs (user, sudo, `/proc`,
/// capabilities), which every script runs first; see [`crate::vantage`].
pub const CONTEXT: &str = "_context";

/// A payload rendered as a script for one run.
#[derive(Clone, Debug)]
pub struct Script {
    nonce: String,
    text: String,
    deadline: Duration,
}

impl Script {
    /// Renders `spec` with a fresh random nonce; each host gets `deadline`
    /// (rounded up to whole seconds) for the whole payload.
    pub fn render(spec: &PayloadSpec, deadline: Duration) -> Result<Self> {
        let mut nonce = [0u8; 8];
        fill_random(&mut nonce);
        Self::render_with_nonce(spec, deadline, &hex::encode(nonce))
    }

    /// Renders with a given nonce (tests and replays).
    pub fn render_with_nonce(spec: &PayloadSpec, deadline: Duration, nonce: &str) -> Result<Self> {
        spec.validate()?;
        if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::invalid("a script nonce must be ASCII letters and digits"));
        }
        let secs = deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0);
        let secs = secs.max(1);
        let mut s = String::with_capacity(4096);
        s.push_str(&format!(
            "# Diffy payload {:?}, sha256 {}. Read-only queries; output is framed per query.\n",
            spec.name.replace('\n', " "),
            spec.hash()
        ));
        s.push_str(PRELUDE.replace("@NONCE@", nonce).replace("@DEADLINE@", &secs.to_string()).as_str());
        s.push_str(&format!("_dq {CONTEXT} 10 {}\n", quote(crate::vantage::CONTEXT_SH)?));
        if let Some(setup) = &spec.setup {
            s.push_str(&format!("_ds {SETUP} {}\n", quote(setup)?));
        }
        for q in &spec.queries {
            let command = match &q.command {
                QueryCommand::Shell(c) => c.clone(),
                QueryCommand::Osquery(sql) => crate::query::osqueryi_command(sql, None)?,
            };
            let timeout = q.timeout.map_or(0, |t| t.as_secs().max(1));
            s.push_str(&format!("_dq {} {timeout} {}\n", q.name, quote(&command)?));
        }
        if let Some(teardown) = &spec.teardown {
            s.push_str(&format!("_ds {TEARDOWN} {}\n", quote(teardown)?));
        }
        s.push_str("printf '==DIFFY:%s:END==\\n' \"$_dn\"\n");
        Ok(Self { nonce: nonce.to_string(), text: s, deadline })
    }

    /// The script's text, for `sh -s` on the host (its standard input closed
    /// once the text is sent), or as a command (SSM).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The script for `sh -s` over a channel whose standard input the caller
    /// keeps open while the script runs, and closes to stop it.
    ///
    /// The whole text is one compound command, so the shell reads all of it
    /// before running any of it; then a watchdog waits on standard input, and
    /// when it closes (the caller closed it, or the connection dropped and the
    /// server closed it) it sends the script `TERM`, whose trap stops the
    /// running query's process group. A script that ends normally stops its
    /// watchdog and exits, without waiting for the input to close.
    ///
    /// This is how a transport without a second channel (a plain `ssh` child)
    /// stops a payload on the host: dropping a local process alone does not.
    pub fn eof_guarded_text(&self) -> String {
        let mut s = String::with_capacity(self.text.len() + 256);
        s.push_str("{\nexec 3<&0\n");
        // Background lists get /dev/null as input unless redirected: read fd 3.
        s.push_str("( while read -r _ <&3; do :; done; kill -TERM $$ ) >/dev/null 2>&1 &\n_dw=$!\n");
        s.push_str(&self.text);
        s.push_str("exit\n}\n");
        s
    }

    /// The run's nonce.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The per-host deadline the script enforces on the host.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

pub(crate) fn quote(s: &str) -> Result<String> {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .map_err(|_| Error::invalid("a command contains a NUL byte, which no shell can pass on"))
}

// The system directories come first: a planted /usr/local/bin/ss must not
// shadow the real one. The caller's PATH stays last, for tools installed
// elsewhere (osqueryi under /opt).
const PRELUDE: &str = r#"PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin:$PATH
export PATH
LC_ALL=C
export LC_ALL
umask 077
_dn=@NONCE@
_dd=
trap 'rm -rf "$_dd"; [ -z "${_dw:-}" ] || { kill "$_dw"; wait "$_dw"; } 2>/dev/null' EXIT
_dd=$(mktemp -d "${TMPDIR:-/tmp}/diffy.XXXXXXXXXX" 2>/dev/null) || _dd=
if [ -z "$_dd" ] || [ ! -d "$_dd" ]; then
  printf '==DIFFY:%s:FATAL cannot create a temporary directory in %s==\n' "$_dn" "${TMPDIR:-/tmp}"
  exit 97
fi
_dp=
_dc=
# Stopped mid-query: stop its process group, then frame what it printed so far
# (exactly the bytes counted, as it may still be writing), and exit.
trap 'if [ -n "$_dp" ]; then kill -TERM -"$_dp" 2>/dev/null; kill -TERM "$_dp" 2>/dev/null; _df "$_dc" 143 "$_s" exact; fi; exit 143' HUP INT TERM
_dnow=$(date +%s)
_de=$(( _dnow + @DEADLINE@ ))
if command -v timeout >/dev/null 2>&1; then _dt=1; else _dt=0; fi
printf '==DIFFY:%s:BEGIN %s %s==\n' "$_dn" "$$" "$(hostname 2>/dev/null | head -n 1)"
# One frame: sizes from a single wc, the end time doubles as the next start.
# A fourth argument: the query may still be writing, copy exactly those sizes.
_df() {
  _dnow=$(date +%s)
  _dx=${4:-}
  set -- "$1" "$2" "$3" $(cd "$_dd" && exec wc -c o e)
  printf '==DIFFY:%s:Q %s %s %s %s %s %s==\n' "$_dn" "$1" "$2" "$4" "$6" "$3" "$_dnow"
  if [ -z "$_dx" ]; then cat "$_dd/o" "$_dd/e"; else head -c "$4" "$_dd/o"; head -c "$6" "$_dd/e"; fi
}
# Queries run with DIFFY_QUERY=1, so that queries about processes can leave
# the payload's own out.
_dq() {
  _s=$_dnow
  _dc=$1
  _l=$(( _de - _s ))
  if [ "$_l" -le 0 ]; then printf '==DIFFY:%s:SKIP %s==\n' "$_dn" "$1"; return 0; fi
  if [ "$2" -gt 0 ] && [ "$2" -lt "$_l" ]; then _l=$2; fi
  printf '==DIFFY:%s:START %s==\n' "$_dn" "$1"
  if [ "$_dt" = 1 ]; then
    DIFFY_QUERY=1 timeout -k 2 "$_l" /bin/sh -c "$3" </dev/null >"$_dd/o" 2>"$_dd/e" 3<&- &
  else
    DIFFY_QUERY=1 /bin/sh -c "$3" </dev/null >"$_dd/o" 2>"$_dd/e" 3<&- &
  fi
  _dp=$!
  wait "$_dp"
  _r=$?
  _dp=
  _df "$1" "$_r" "$_s"
}
_ds() {
  _s=$_dnow
  printf '==DIFFY:%s:START %s==\n' "$_dn" "$1"
  { eval "$2"; } </dev/null >"$_dd/o" 2>"$_dd/e" 3<&-
  _df "$1" $? "$_s"
}
"#;

/// How a transport's invocation of the script ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEnd {
    /// The script's process exited with this code.
    Exited(i32),
    /// The local deadline passed and the invocation was stopped.
    TimedOut,
    /// The run was cancelled and the invocation was stopped.
    Cancelled,
    /// The output limit was reached and the invocation was stopped.
    OutputLimit(u64),
    /// The transport failed (connection, authentication, API).
    Failed {
        /// The host status this failure means.
        status: HostStatus,
        /// What happened.
        message: String,
    },
}

/// What one invocation of the script on one host returned, before parsing.
#[derive(Clone, Debug)]
pub struct Execution {
    /// Everything read from standard output (up to the output limit).
    pub stdout: Bytes,
    /// Everything read from standard error.
    pub stderr: Bytes,
    /// How it ended.
    pub end: ExecEnd,
    /// When it started (collector's clock).
    pub started_at: DateTime<Utc>,
    /// When it ended (collector's clock).
    pub finished_at: DateTime<Utc>,
    /// Transport evidence to keep with the result.
    pub transport: BTreeMap<String, String>,
}

impl Execution {
    /// An invocation that failed before any output (the transport could not
    /// start, or failed): `status` and what happened, nothing kept.
    pub fn failed(status: HostStatus, message: impl Into<String>, started_at: DateTime<Utc>) -> Self {
        Execution {
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            end: ExecEnd::Failed { status, message: message.into() },
            started_at,
            finished_at: Utc::now(),
            transport: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Frames {
    hostname: Option<String>,
    pid: Option<u32>,
    begun: bool,
    ended: bool,
    fatal: Option<String>,
    started: Vec<String>,
    skipped: Vec<String>,
    results: Vec<RawFrame>,
    unframed: Vec<u8>,
}

#[derive(Debug)]
struct RawFrame {
    name: String,
    code: i32,
    stdout: Bytes,
    stderr: Bytes,
    complete: bool,
    started: Option<i64>,
    finished: Option<i64>,
}

fn parse_frames(out: &Bytes, nonce: &str) -> Frames {
    let marker = format!("==DIFFY:{nonce}:");
    let finder = memchr::memmem::Finder::new(marker.as_bytes());
    let mut f = Frames::default();
    let mut pos = 0;
    while pos < out.len() {
        let Some(at) = finder.find(&out[pos..]).map(|i| pos + i) else {
            f.unframed.extend_from_slice(&out[pos..]);
            break;
        };
        f.unframed.extend_from_slice(&out[pos..at]);
        let header_start = at + marker.len();
        let Some(nl) = memchr::memchr(b'\n', &out[header_start..]).map(|i| header_start + i) else {
            f.unframed.extend_from_slice(&out[at..]);
            break;
        };
        let line = String::from_utf8_lossy(&out[header_start..nl]);
        let Some(line) = line.strip_suffix("==") else {
            f.unframed.extend_from_slice(&out[at..=nl]);
            pos = nl + 1;
            continue;
        };
        pos = nl + 1;
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "BEGIN" => {
                f.begun = true;
                let (pid, h) = rest.split_once(' ').unwrap_or((rest, ""));
                f.pid = pid.parse().ok();
                let h = h.trim();
                f.hostname = (!h.is_empty()).then(|| h.to_string());
            }
            "START" => f.started.push(rest.to_string()),
            "SKIP" => f.skipped.push(rest.to_string()),
            "FATAL" => f.fatal = Some(rest.to_string()),
            "END" => f.ended = true,
            "Q" => {
                let p: Vec<&str> = rest.split(' ').collect();
                let parsed = (p.len() == 6)
                    .then(|| {
                        Some((
                            p[0].to_string(),
                            p[1].parse::<i32>().ok()?,
                            p[2].parse::<usize>().ok()?,
                            p[3].parse::<usize>().ok()?,
                            p[4].parse::<i64>().ok(),
                            p[5].parse::<i64>().ok(),
                        ))
                    })
                    .flatten();
                let Some((name, code, out_len, err_len, started, finished)) = parsed else {
                    f.unframed.extend_from_slice(&out[at..pos]);
                    continue;
                };
                let avail = out.len() - pos;
                // The sizes are the host's word: never trust them to add up.
                let complete = out_len.checked_add(err_len).is_some_and(|n| avail >= n);
                let o = out_len.min(avail);
                let e = err_len.min(avail - o);
                let stdout = out.slice(pos..pos + o);
                let stderr = out.slice(pos + o..pos + o + e);
                pos += o + e;
                f.results.push(RawFrame { name, code, stdout, stderr, complete, started, finished });
            }
            _ => f.unframed.extend_from_slice(&out[at..pos]),
        }
    }
    f
}

fn host_time(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

/// The pid the payload script reported on the host (from its `BEGIN` frame),
/// once that frame has arrived: a transport uses it to stop the script on the
/// host when a run is cancelled or a deadline passes.
pub fn remote_pid(stdout: &[u8], nonce: &str) -> Option<u32> {
    let marker = format!("==DIFFY:{nonce}:BEGIN ");
    let at = memchr::memmem::find(stdout, marker.as_bytes())? + marker.len();
    let rest = &stdout[at..];
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Whether the payload script's `END` frame has arrived: a transport that
/// sees its connection fail can tell a lost run from one that ended.
pub fn payload_ended(stdout: &[u8], nonce: &str) -> bool {
    memchr::memmem::find(stdout, format!("==DIFFY:{nonce}:END==").as_bytes()).is_some()
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let mut line: String = line.chars().take(300).collect();
    if line.len() < text.trim().len() && !line.is_empty() {
        line.push_str(" …");
    }
    line
}

fn exit_message(code: i32, stderr: &[u8]) -> String {
    let what = match code {
        126 => "exit 126 (command found but not executable)".to_string(),
        127 => "exit 127 (command not found)".to_string(),
        c if c > 128 && c < 160 => format!("exit {c} (killed by signal {})", c - 128),
        c => format!("exit {c}"),
    };
    let err = first_line(stderr);
    if err.is_empty() { what } else { format!("{what}: {err}") }
}

/// [`assemble`] on the blocking pool (hashing large outputs is CPU work),
/// for transports. Should parsing panic, the host is `invalid_evidence` with
/// its raw output kept unframed, and the run goes on.
pub async fn assemble_blocking(
    host: Host,
    spec: std::sync::Arc<PayloadSpec>,
    script: std::sync::Arc<Script>,
    exec: Execution,
) -> HostResult {
    let kept = (host.clone(), exec.clone());
    match tokio::task::spawn_blocking(move || assemble(host, &spec, &script, exec)).await {
        Ok(result) => result,
        Err(e) => unreadable_output(kept.0, kept.1, &panic_text(e)),
    }
}

/// The result of a host whose output diffy failed to read (`why`): status
/// `invalid_evidence`, every raw byte kept unframed.
fn unreadable_output(host: Host, exec: Execution, why: &str) -> HostResult {
    tracing::error!("reading the output of {} failed: {why}", host.id);
    let mut r = HostResult::failed(
        host,
        HostStatus::InvalidEvidence,
        format!("diffy failed while reading this host's output ({why}); its raw output is kept"),
        exec.started_at,
    );
    r.finished_at = exec.finished_at;
    r.unframed_stdout = exec.stdout;
    r.unframed_stderr = exec.stderr;
    r.transport = exec.transport;
    r
}

/// What a failed task said (its panic message, if it had one).
pub fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => panic_message(payload.as_ref()),
        Err(e) => e.to_string(),
    }
}

/// A panic's message, from its payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .map_or_else(|| "a panic".to_string(), |m| format!("a panic: {m}"))
}

/// Turns one invocation's raw output into a [`HostResult`]: per-query results
/// from the frames, statuses for queries that never finished, and every byte
/// outside the frames kept as unframed evidence.
pub fn assemble(host: Host, spec: &PayloadSpec, script: &Script, exec: Execution) -> HostResult {
    let frames = parse_frames(&exec.stdout, script.nonce());
    let deadline = script.deadline().as_secs();
    let mut names: Vec<&str> = Vec::new();
    if spec.setup.is_some() {
        names.push(SETUP);
    }
    names.extend(spec.queries.iter().map(|q| q.name.as_str()));
    if spec.teardown.is_some() {
        names.push(TEARDOWN);
    }
    // Run first, kept last: the payload's own results come in its order.
    names.push(CONTEXT);
    let mut queries = Vec::with_capacity(names.len());
    let mut unframed = frames.unframed;
    let mut results = frames.results;
    for name in &names {
        let framed = results.iter().position(|r| r.name == *name).map(|i| results.remove(i));
        let q = match framed {
            Some(r) => {
                let (status, message) = if !r.complete {
                    let status =
                        if exec.end == ExecEnd::TimedOut { QueryStatus::TimedOut } else { QueryStatus::Truncated };
                    let message =
                        format!("output cut after {} bytes of stdout and {} of stderr", r.stdout.len(), r.stderr.len());
                    (status, Some(message))
                } else if r.code == 143 && !frames.ended && matches!(exec.end, ExecEnd::TimedOut | ExecEnd::Cancelled) {
                    // Framed by the script's trap as it was stopped.
                    let (status, why) = if exec.end == ExecEnd::TimedOut {
                        (QueryStatus::TimedOut, format!("still running at the host's deadline ({deadline}s)"))
                    } else {
                        (QueryStatus::Truncated, "interrupted while running".to_string())
                    };
                    (status, Some(format!("{why}; what it printed until then is kept")))
                } else if r.code == 0 {
                    (QueryStatus::Ok, None)
                } else if r.code == 124 {
                    (QueryStatus::TimedOut, Some("stopped on the host at its deadline".to_string()))
                } else if r.code == 127 {
                    (QueryStatus::CommandNotFound, Some(exit_message(r.code, &r.stderr)))
                } else {
                    (QueryStatus::NonZeroExit, Some(exit_message(r.code, &r.stderr)))
                };
                let mut q = QueryResult::new(*name, status, Some(r.code), r.stdout, r.stderr);
                q.started_at = host_time(r.started);
                q.finished_at = host_time(r.finished);
                q.message = message;
                q
            }
            None => {
                let running = frames.started.iter().any(|s| s == name);
                let (status, message) = if frames.skipped.iter().any(|s| s == name) {
                    (QueryStatus::NotRun, format!("the host's deadline ({deadline}s) had passed before it started"))
                } else if running {
                    match &exec.end {
                        ExecEnd::TimedOut => {
                            (QueryStatus::TimedOut, format!("still running at the host's deadline ({deadline}s)"))
                        }
                        ExecEnd::Cancelled => (QueryStatus::NotRun, "interrupted while running".to_string()),
                        ExecEnd::OutputLimit(limit) => {
                            (QueryStatus::Truncated, format!("the host's output passed the limit of {limit} bytes"))
                        }
                        ExecEnd::Failed { message, .. } => (QueryStatus::NotRun, message.clone()),
                        ExecEnd::Exited(code) => {
                            (QueryStatus::NotRun, format!("the payload stopped (exit {code}) while it ran"))
                        }
                    }
                } else {
                    (QueryStatus::NotRun, "the payload did not reach this query".to_string())
                };
                let mut q = QueryResult::new(*name, status, None, Bytes::new(), Bytes::new());
                q.message = Some(message);
                q
            }
        };
        queries.push(q);
    }
    // Frames for names not in the payload are kept as unframed evidence.
    for r in results {
        unframed.extend_from_slice(&r.stdout);
        unframed.extend_from_slice(&r.stderr);
    }
    // The context probe tells how the payload ran; it is not one of its queries.
    let own: Vec<&QueryResult> = queries.iter().filter(|q| q.name != CONTEXT).collect();
    let payload_queries_ok = own.iter().all(|q| q.status == QueryStatus::Ok);
    let stderr_line = first_line(&exec.stderr);
    let (status, message) = match (&exec.end, frames.ended) {
        (ExecEnd::Failed { status, message }, _) => (*status, Some(message.clone())),
        (_, true) if payload_queries_ok => (HostStatus::Ok, None),
        (_, true) if own.iter().any(|q| q.status == QueryStatus::TimedOut) => {
            let late: Vec<String> = own
                .iter()
                .filter(|q| matches!(q.status, QueryStatus::TimedOut | QueryStatus::NotRun))
                .map(|q| format!("{} {}", q.name, q.status))
                .collect();
            (HostStatus::TimedOut, Some(format!("the host's deadline ({deadline}s) passed: {}", late.join(", "))))
        }
        (_, true) => {
            let failed: Vec<String> = own
                .iter()
                .filter(|q| q.status != QueryStatus::Ok)
                .map(|q| format!("{} {}", q.name, q.status))
                .collect();
            (
                HostStatus::Partial,
                Some(format!("{} of {} queries failed: {}", failed.len(), own.len(), failed.join(", "))),
            )
        }
        (ExecEnd::TimedOut, false) => {
            (HostStatus::TimedOut, Some(format!("the payload did not finish within the host's deadline ({deadline}s)")))
        }
        (ExecEnd::Cancelled, false) => (HostStatus::Cancelled, Some("interrupted before the host finished".into())),
        (ExecEnd::OutputLimit(limit), false) => {
            (HostStatus::Truncated, Some(format!("output passed the limit of {limit} bytes; what arrived is kept")))
        }
        (ExecEnd::Exited(code), false) => match (&frames.fatal, frames.begun) {
            (Some(fatal), _) => (HostStatus::NonZeroExit, Some(format!("the payload could not run: {fatal}"))),
            (None, false) => {
                let mut m = format!("the payload script did not start (exit {code})");
                if !stderr_line.is_empty() {
                    m.push_str(&format!(": {stderr_line}"));
                }
                (HostStatus::NonZeroExit, Some(m))
            }
            (None, true) => {
                (HostStatus::Truncated, Some(format!("the output ended before the payload's end marker (exit {code})")))
            }
        },
    };
    let mut transport = exec.transport;
    if let ExecEnd::Exited(code) = exec.end {
        transport.entry("exit_code".into()).or_insert_with(|| code.to_string());
    }
    HostResult {
        host,
        status,
        message,
        exit_code: match exec.end {
            ExecEnd::Exited(c) => Some(c),
            _ => None,
        },
        started_at: exec.started_at,
        finished_at: exec.finished_at,
        facts: HostFacts { hostname: frames.hostname },
        queries,
        unframed_stdout: Bytes::from(unframed),
        unframed_stderr: exec.stderr,
        transport,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{OutputFormat, Query};

    fn spec() -> PayloadSpec {
        PayloadSpec {
            name: "t".into(),
            setup: None,
            queries: vec![
                Query::shell("a", "echo a", OutputFormat::Lines),
                Query::shell("b", "echo 'b'\"$x\"", OutputFormat::Lines),
            ],
            teardown: None,
        }
    }

    fn exec(stdout: &[u8], end: ExecEnd) -> Execution {
        Execution {
            stdout: Bytes::copy_from_slice(stdout),
            stderr: Bytes::new(),
            end,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            transport: BTreeMap::new(),
        }
    }

    #[test]
    fn renders_quoted_commands() {
        let s = Script::render_with_nonce(&spec(), Duration::from_millis(1500), "n1").unwrap();
        assert!(s.text().contains("_dq b 0 'echo '\\''b'\\''\"$x\"'") || s.text().contains("_dq b 0 "), "{}", s.text());
        assert!(s.text().contains("+ 2 ))"), "deadline rounds up: {}", s.text());
        assert!(Script::render_with_nonce(&spec(), Duration::from_secs(1), "a b").is_err());
    }

    #[test]
    fn parses_frames_with_arbitrary_bytes() {
        let s = Script::render_with_nonce(&spec(), Duration::from_secs(5), "n1").unwrap();
        let mut out = b"motd banner\n==DIFFY:n1:BEGIN 4242 web-1==\n==DIFFY:n1:START a==\n".to_vec();
        // Output that contains a fake frame marker and non-UTF-8 bytes.
        let body = b"==DIFFY:n1:END==\n\xff\x00";
        out.extend_from_slice(format!("==DIFFY:n1:Q a 0 {} 3 100 101==\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"err");
        out.extend_from_slice(b"==DIFFY:n1:START b==\n==DIFFY:n1:Q b 127 0 9 100 100==\nnot found==DIFFY:n1:END==\n");
        let r = assemble(Host::named("h").unwrap(), &spec(), &s, exec(&out, ExecEnd::Exited(0)));
        assert_eq!(r.status, HostStatus::Partial);
        assert_eq!(r.facts.hostname.as_deref(), Some("web-1"));
        assert_eq!(remote_pid(&out, "n1"), Some(4242));
        assert_eq!(remote_pid(b"==DIFFY:n1:BEGIN ", "n1"), None);
        assert!(payload_ended(&out, "n1"));
        assert!(!payload_ended(&out, "n2"), "another run's end marker is not this one's");
        assert!(!payload_ended(b"==DIFFY:n1:BEGIN 1 h==\n", "n1"));
        assert_eq!(&r.queries[0].stdout[..], body);
        assert_eq!(&r.queries[0].stderr[..], b"err");
        assert_eq!(r.queries[0].status, QueryStatus::Ok);
        assert_eq!(r.queries[1].status, QueryStatus::CommandNotFound);
        assert_eq!(r.queries[1].message.as_deref(), Some("exit 127 (command not found): not found"));
        assert_eq!(&r.unframed_stdout[..], b"motd banner\n");
    }

    #[test]
    fn sizes_that_overflow_are_a_cut_frame() {
        let s = Script::render_with_nonce(&spec(), Duration::from_secs(5), "n1").unwrap();
        let max = usize::MAX;
        let out = format!("==DIFFY:n1:BEGIN 7 h==\n==DIFFY:n1:START a==\n==DIFFY:n1:Q a 0 {max} {max} 1 1==\nabc");
        let r = assemble(Host::named("h").unwrap(), &spec(), &s, exec(out.as_bytes(), ExecEnd::Exited(0)));
        assert_eq!(r.queries[0].status, QueryStatus::Truncated);
        assert_eq!(&r.queries[0].stdout[..], b"abc");
    }

    #[tokio::test]
    async fn a_parser_panic_is_that_hosts_status_with_its_bytes_kept() {
        let panicked = tokio::task::spawn_blocking(|| panic!("index out of bounds")).await.unwrap_err();
        let why = panic_text(panicked);
        assert_eq!(why, "a panic: index out of bounds");
        let r = unreadable_output(Host::named("h").unwrap(), exec(b"raw\xff", ExecEnd::Exited(0)), &why);
        assert_eq!(r.status, HostStatus::InvalidEvidence);
        assert_eq!(&r.unframed_stdout[..], b"raw\xff");
        assert!(r.message.unwrap().contains("(a panic: index out of bounds); its raw output is kept"));
    }

    #[test]
    fn timeout_marks_running_query() {
        let s = Script::render_with_nonce(&spec(), Duration::from_secs(5), "n1").unwrap();
        let out =
            b"==DIFFY:n1:BEGIN 7 h==\n==DIFFY:n1:START a==\n==DIFFY:n1:Q a 0 2 0 1 1==\na\n==DIFFY:n1:START b==\n";
        let r = assemble(Host::named("h").unwrap(), &spec(), &s, exec(out, ExecEnd::TimedOut));
        assert_eq!(r.status, HostStatus::TimedOut);
        assert_eq!(r.queries[0].status, QueryStatus::Ok);
        assert_eq!(r.queries[1].status, QueryStatus::TimedOut);
    }

    #[test]
    fn cut_frame_is_truncated_and_kept() {
        let s = Script::render_with_nonce(&spec(), Duration::from_secs(5), "n1").unwrap();
        let out = b"==DIFFY:n1:BEGIN 7 h==\n==DIFFY:n1:START a==\n==DIFFY:n1:Q a 0 100 0 1 1==\npartial";
        let r = assemble(Host::named("h").unwrap(), &spec(), &s, exec(out, ExecEnd::Exited(0)));
        assert_eq!(r.status, HostStatus::Truncated);
        assert_eq!(r.queries[0].status, QueryStatus::Truncated);
        assert_eq!(&r.queries[0].stdout[..], b"partial");
        assert_eq!(r.queries[1].status, QueryStatus::NotRun);
    }

    #[test]
    fn garbage_is_kept_as_unframed() {
        let s = Script::render_with_nonce(&spec(), Duration::from_secs(5), "n1").unwrap();
        let r = assemble(Host::named("h").unwrap(), &spec(), &s, exec(b"sh: 1: garbage\n", ExecEnd::Exited(2)));
        assert_eq!(r.status, HostStatus::NonZeroExit);
        assert_eq!(&r.unframed_stdout[..], b"sh: 1: garbage\n");
        assert!(r.queries.iter().all(|q| q.status == QueryStatus::NotRun));
    }

    /// Runs the guarded text under `shell -s`, with standard input held open.
    fn run_guarded(shell: &str, spec: &PayloadSpec) -> (std::process::Child, std::process::ChildStdin) {
        use std::io::Write;
        let s = Script::render_with_nonce(spec, Duration::from_secs(60), "g1").unwrap();
        let mut child = std::process::Command::new(shell)
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(s.eof_guarded_text().as_bytes()).unwrap();
        (child, stdin)
    }

    fn wait_at_most(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn shells() -> Vec<&'static str> {
        ["/bin/sh", "dash", "bash"]
            .into_iter()
            .filter(|s| std::process::Command::new(s).args(["-c", ":"]).status().is_ok_and(|x| x.success()))
            .collect()
    }

    #[test]
    fn guarded_script_ends_on_its_own_while_its_input_stays_open() {
        for shell in shells() {
            let (mut child, stdin) = run_guarded(shell, &spec());
            let status = wait_at_most(&mut child, 10).unwrap_or_else(|| panic!("{shell}: the script ends by itself"));
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut out).unwrap();
            assert!(status.success(), "{shell}: {status}");
            assert!(
                String::from_utf8_lossy(&out).ends_with("==DIFFY:g1:END==\n"),
                "{shell}: {}",
                String::from_utf8_lossy(&out)
            );
            drop(stdin);
        }
    }

    #[test]
    fn closing_a_guarded_scripts_input_stops_it_and_its_query() {
        for (i, shell) in shells().into_iter().enumerate() {
            // A duration of its own, to find the query's own process.
            let marker = format!("sleep 300.{i}{}", std::process::id());
            let slow = PayloadSpec {
                name: "t".into(),
                setup: None,
                queries: vec![Query::shell("slow", format!("echo so far; {marker}"), OutputFormat::Lines)],
                teardown: None,
            };
            let (mut child, stdin) = run_guarded(shell, &slow);
            let running = || {
                let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
                String::from_utf8_lossy(&ps.stdout).lines().any(|l| l.starts_with(&marker))
            };
            let t = std::time::Instant::now();
            while !running() {
                assert!(t.elapsed() < Duration::from_secs(10), "{shell}: the query never started");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(wait_at_most(&mut child, 1).is_none(), "{shell}: runs while its input is open");
            drop(stdin);
            let status = wait_at_most(&mut child, 5).unwrap_or_else(|| panic!("{shell}: closing the input stops it"));
            assert_eq!(status.code(), Some(143), "{shell}: stopped by its TERM trap");
            let t = std::time::Instant::now();
            while running() {
                assert!(t.elapsed() < Duration::from_secs(5), "{shell}: the running query is stopped too");
                std::thread::sleep(Duration::from_millis(20));
            }
            // The trap framed what the query had printed, and nothing is lost.
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut out).unwrap();
            let script = Script::render_with_nonce(&slow, Duration::from_secs(60), "g1").unwrap();
            let r = assemble(Host::named("h").unwrap(), &slow, &script, exec(&out, ExecEnd::Cancelled));
            assert_eq!(r.status, HostStatus::Cancelled, "{shell}: {}", String::from_utf8_lossy(&out));
            assert_eq!(r.queries[0].status, QueryStatus::Truncated, "{shell}: {:?}", r.queries[0]);
            assert_eq!(&r.queries[0].stdout[..], b"so far\n", "{shell}");
            assert_eq!(r.queries[0].exit_code, Some(143), "{shell}");
            assert!(r.unframed_stdout.is_empty(), "{shell}: {:?}", r.unframed_stdout);
        }
    }
}
