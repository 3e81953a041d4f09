//! # diffy-transport-ssh
//!
//! Diffy's [`Collection`](diffy_core::Collection) over SSH, with the system
//! OpenSSH client, so that `~/.ssh/config`, agents, `ProxyJump`,
//! `ProxyCommand` and bastions work as users already have them.
//!
//! Per host: one `ssh` process, one connection, one remote invocation
//! (`sh -s`, or `sudo -n sh -s`) that runs every query of the payload with
//! framed output. Hosts are worked on concurrently
//! ([`SshOptions::concurrency`], 100 by default).
//!
//! - **Host keys are checked strictly** by default: an unknown key is
//!   `host_key_unknown`, a changed one `host_key_mismatch` (during an incident
//!   that may mean an attacker). [`HostKeyPolicy::AcceptNew`] accepts keys of
//!   hosts never seen before, and still refuses changed ones.
//! - **Deadlines** are enforced on the host (each query under `timeout`) and
//!   locally. The script's standard input stays open while it runs
//!   ([`Script::eof_guarded_text`]): when a deadline passes or the run is
//!   cancelled, closing it stops the script and its running query on the host,
//!   and so does a dropped connection.
//! - **Nothing is left behind**: no control socket and no master process; each
//!   `ssh` child is waited for, and killed if it is dropped.
//! - Statuses: `ok`, `partial`, `non_zero_exit`, `timed_out`, `unreachable`,
//!   `auth_failed` (including `sudo` asking for a password),
//!   `host_key_mismatch`, `host_key_unknown`, `transport_error`, `cancelled`.
//! - No credential is ever sent to a host: authentication is the SSH client's.
//!
//! Why a plain `ssh` per host rather than a multiplexing master: the payload is
//! one invocation, so a master would only add a process, a control socket and
//! its protocol to every host; measured on 200 hosts, the client's CPU is
//! then that of one key exchange per host, and there is nothing to clean up.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use diffy_core::collection::{ExecLimits, HostExec};
use diffy_core::script::{ExecEnd, Execution, Script, payload_ended, remote_pid};
use diffy_core::target::{Resolution, Target};
use diffy_core::transport::output::{Capture, Driven, drive, read_limited};
use diffy_core::{CancellationToken, Error, Host, HostId, HostStatus, Result, TargetKey};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

const PLUGIN: &str = "ssh";

/// How long a stopped payload gets to end on the host (after its standard
/// input is closed) before the local `ssh` is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to do with host keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse hosts whose key is unknown or changed (`StrictHostKeyChecking=yes`).
    #[default]
    Strict,
    /// Accept and record keys of hosts never seen before; refuse changed keys
    /// (`StrictHostKeyChecking=accept-new`).
    AcceptNew,
}

/// How to reach hosts. Anything not set here comes from the SSH client's own
/// configuration (`~/.ssh/config`, or [`SshOptions::config_file`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SshOptions {
    /// The `ssh` program. Default `ssh`, from `PATH`.
    pub program: PathBuf,
    /// An ssh_config file to use instead of `~/.ssh/config` (`ssh -F`).
    pub config_file: Option<PathBuf>,
    /// Remote user.
    pub user: Option<String>,
    /// Remote port.
    pub port: Option<u16>,
    /// Identity file (used alone, `IdentitiesOnly=yes`).
    pub identity_file: Option<PathBuf>,
    /// Jump hosts, in order (`ssh -J`).
    pub jump_hosts: Vec<String>,
    /// Host key checking.
    pub host_keys: HostKeyPolicy,
    /// A known_hosts file to use instead of the user's.
    pub known_hosts_file: Option<PathBuf>,
    /// Time allowed to open the connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Interval of keepalives; a host that answers none of three is lost. Default 10 s.
    pub keepalive: Duration,
    /// Run the payload with `sudo -n` (never prompts; a password request is `auth_failed`).
    pub sudo: bool,
    /// Hosts worked on at once. Default 100.
    pub concurrency: usize,
    /// Attempts per host while the connection is closed before the SSH
    /// banner (see [`refused_before_banner`]): sshd does that to new
    /// connections beyond its `MaxStartups` (default `10:30:100`, easily
    /// reached on a jump host that every host's connection goes through).
    /// Retries wait 0.25 s, 0.5 s, 1 s, 2 s, then 4 s, each with random
    /// jitter, and never past the host's deadline. Default 6; 1 never retries.
    pub connection_attempts: u32,
}

impl Default for SshOptions {
    fn default() -> Self {
        Self {
            program: PathBuf::from("ssh"),
            config_file: None,
            user: None,
            port: None,
            identity_file: None,
            jump_hosts: Vec::new(),
            host_keys: HostKeyPolicy::Strict,
            known_hosts_file: None,
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
            sudo: false,
            concurrency: 100,
            connection_attempts: 6,
        }
    }
}

impl SshOptions {
    /// Uses another `ssh` program.
    pub fn program(mut self, p: impl Into<PathBuf>) -> Self {
        self.program = p.into();
        self
    }

    /// Uses an ssh_config file.
    pub fn config_file(mut self, p: impl Into<PathBuf>) -> Self {
        self.config_file = Some(p.into());
        self
    }

    /// Sets the remote user.
    pub fn user(mut self, u: impl Into<String>) -> Self {
        self.user = Some(u.into());
        self
    }

    /// Sets the remote port.
    pub fn port(mut self, p: u16) -> Self {
        self.port = Some(p);
        self
    }

    /// Uses this identity file alone.
    pub fn identity_file(mut self, p: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(p.into());
        self
    }

    /// Adds a jump host.
    pub fn jump_host(mut self, h: impl Into<String>) -> Self {
        self.jump_hosts.push(h.into());
        self
    }

    /// Sets the host key policy.
    pub fn host_keys(mut self, p: HostKeyPolicy) -> Self {
        self.host_keys = p;
        self
    }

    /// Uses a known_hosts file.
    pub fn known_hosts_file(mut self, p: impl Into<PathBuf>) -> Self {
        self.known_hosts_file = Some(p.into());
        self
    }

    /// Runs the payload with `sudo -n`.
    pub fn sudo(mut self, on: bool) -> Self {
        self.sudo = on;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets the keepalive interval.
    pub fn keepalive(mut self, d: Duration) -> Self {
        self.keepalive = d;
        self
    }

    /// Sets the concurrency.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the attempts per host while connections are refused before the
    /// SSH banner (at least 1).
    pub fn connection_attempts(mut self, n: u32) -> Self {
        self.connection_attempts = n.max(1);
        self
    }
}

fn check_file(what: &str, p: &Path) -> Result<()> {
    if p.is_file() {
        Ok(())
    } else {
        Err(Error::invalid_with_help(
            format!("{what} {} does not exist", p.display()),
            format!("check the path of the {what}"),
        ))
    }
}

/// A path for an ssh option that expands `%` tokens and `~`, and splits
/// unquoted words (`-o UserKnownHostsFile=...`, `-i`): taken literally.
fn literal_path(what: &str, p: &Path) -> Result<String> {
    let s = p.to_str().ok_or_else(|| Error::invalid(format!("the {what} path {} is not UTF-8", p.display())))?;
    if s.contains(['"', '\n', '\r']) {
        return Err(Error::invalid(format!(
            "the {what} path {s:?} contains a quote or a line break, which ssh cannot take"
        )));
    }
    let s = s.replace('%', "%%");
    Ok(if s.contains(char::is_whitespace) { format!("\"{s}\"") } else { s })
}

fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The SSH transport. Wrap it in [`diffy_core::PerHost`] to get a [`diffy_core::Collection`].
#[derive(Debug)]
pub struct SshTransport {
    options: SshOptions,
    /// Everything before the destination.
    args: Vec<OsString>,
}

impl SshTransport {
    /// A transport with `options`; checks the files it names.
    pub fn new(options: SshOptions) -> Result<Self> {
        if let Some(f) = &options.config_file {
            check_file("ssh_config file", f)?;
        }
        if let Some(f) = &options.identity_file {
            check_file("identity file", f)?;
        }
        let mut args: Vec<OsString> = Vec::new();
        let mut opt = |o: String| {
            args.push("-o".into());
            args.push(o.into());
        };
        opt("BatchMode=yes".into());
        // One connection of our own: never a master, never someone else's.
        opt("ControlMaster=no".into());
        opt("ControlPath=none".into());
        opt(format!(
            "StrictHostKeyChecking={}",
            match options.host_keys {
                HostKeyPolicy::Strict => "yes",
                HostKeyPolicy::AcceptNew => "accept-new",
            }
        ));
        opt(format!("ConnectTimeout={}", whole_seconds(options.connect_timeout)));
        opt(format!("ServerAliveInterval={}", whole_seconds(options.keepalive)));
        opt("ServerAliveCountMax=3".into());
        if let Some(k) = &options.known_hosts_file {
            opt(format!("UserKnownHostsFile={}", literal_path("known_hosts file", k)?));
        }
        if let Some(k) = &options.identity_file {
            opt("IdentitiesOnly=yes".into());
            opt(format!("IdentityFile={}", literal_path("identity file", k)?));
        }
        // No terminal: the output is data, and no escape character is read.
        args.push("-T".into());
        if let Some(f) = &options.config_file {
            args.push("-F".into());
            args.push(f.into());
        }
        if let Some(u) = &options.user {
            args.push("-l".into());
            args.push(u.into());
        }
        if let Some(p) = options.port {
            args.push("-p".into());
            args.push(p.to_string().into());
        }
        if !options.jump_hosts.is_empty() {
            args.push("-J".into());
            args.push(options.jump_hosts.join(",").into());
        }
        Ok(Self { options, args })
    }

    /// The options.
    pub fn options(&self) -> &SshOptions {
        &self.options
    }

    /// The `ssh` command line for `destination`.
    pub fn command_line(&self, destination: &str) -> Vec<OsString> {
        let mut v = Vec::with_capacity(self.args.len() + 7);
        v.push(self.options.program.clone().into_os_string());
        v.extend(self.args.iter().cloned());
        v.push("--".into());
        v.push(destination.into());
        if self.options.sudo {
            v.extend(["sudo", "-n", "sh", "-s"].map(OsString::from));
        } else {
            v.extend(["sh", "-s"].map(OsString::from));
        }
        v
    }
}

/// Turns what ssh said into a host status and a message for the report.
pub fn classify(text: &str) -> (HostStatus, String) {
    let lower = text.to_ascii_lowercase();
    let said: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@') && !l.starts_with("Warning: Permanently added"))
        .collect();
    let said = said.join(" ");
    let has = |s: &str| lower.contains(s);
    if has("remote host identification has changed") || (has("host key for") && has("has changed")) {
        return (
            HostStatus::HostKeyMismatch,
            format!(
                "THE HOST KEY HAS CHANGED: this may be an attacker in the middle, or a rebuilt host; verify its key out of band before trusting anything from it ({said})"
            ),
        );
    }
    if has("host key verification failed") || (has("host key is known") && has("strict checking")) {
        return (
            HostStatus::HostKeyUnknown,
            format!(
                "no known host key and strict checking is on: verify the key and add it to known_hosts, or accept new keys explicitly ({said})"
            ),
        );
    }
    if has("permission denied") || has("too many authentication failures") || has("no more authentication methods") {
        return (HostStatus::AuthFailed, format!("authentication failed ({said})"));
    }
    let unreachable = [
        "connection refused",
        "no route to host",
        "network is unreachable",
        "could not resolve",
        "name or service not known",
        "connection timed out",
        "operation timed out",
        "timed out",
        "connection closed by",
        "connection reset",
        "kex_exchange_identification",
        "broken pipe",
        "closed by remote host",
        "proxycommand",
        "exited with status",
    ];
    if unreachable.iter().any(|u| has(u)) {
        return (HostStatus::Unreachable, format!("cannot reach the host ({said})"));
    }
    (HostStatus::TransportError, format!("ssh failed ({said})"))
}

/// Whether all that ssh said is that the connection closed before the SSH
/// banner arrived (`kex_exchange_identification: Connection closed by remote
/// host`, or reset), from this connection and any jump host's. That is what
/// sshd does to new connections beyond its `MaxStartups`, so another attempt
/// a moment later may well get in; nothing ran on the host. Any other line (a
/// ProxyCommand's or socat's error, a refused TCP connection, a failed
/// forward, a host key or authentication message) is a failure of its own and
/// is not retried.
pub fn refused_before_banner(stderr: &str) -> bool {
    let mut banner = false;
    for line in stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(why) = line.strip_prefix("kex_exchange_identification: ") {
            if why != "Connection closed by remote host" && !why.starts_with("read: Connection reset by peer") {
                return false;
            }
            banner = true;
        } else if !line.starts_with("Connection closed by ") && !line.starts_with("Connection reset by ") {
            return false;
        }
    }
    banner
}

/// The pause before attempt `next` (2, 3, ...): 0.25 s doubling up to 4 s,
/// each between half and all of that at random, so that hosts refused
/// together do not come back together.
fn retry_pause(next: u32) -> Duration {
    let full = Duration::from_millis(250).saturating_mul(1 << (next.saturating_sub(2)).min(4));
    full.mul_f64(rand::random_range(0.5..=1.0))
}

/// Keeps the refused attempts in the host's transport evidence.
fn record_refusals(transport: &mut BTreeMap<String, String>, refusals: &[String], attempts: usize) {
    transport.insert("attempts".into(), attempts.to_string());
    transport.insert("refused_before_banner".into(), refusals.join("; "));
}

fn failed(
    status: HostStatus,
    message: String,
    started_at: chrono::DateTime<Utc>,
    transport: BTreeMap<String, String>,
) -> Execution {
    Execution {
        stdout: Bytes::new(),
        stderr: Bytes::new(),
        end: ExecEnd::Failed { status, message },
        started_at,
        finished_at: Utc::now(),
        transport,
    }
}

fn shown(args: &[OsString]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| {
            let a = a.to_string_lossy();
            let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
            if plain { a.into_owned() } else { shlex::try_quote(&a).map_or_else(|_| a.to_string(), |q| q.into_owned()) }
        })
        .collect();
    words.join(" ")
}

/// Stops a payload whose run ends early: closes its standard input, which
/// stops the script on the host (it frames what the running query printed so
/// far, then exits), and gives it [`STOP_GRACE`] to end before killing the
/// local `ssh`. What arrives meanwhile is kept, up to `keep` bytes per stream;
/// with `keep` `None` (the output limit was reached) it is read and dropped.
async fn stop(
    child: &mut Child,
    stdin: Option<ChildStdin>,
    (out, err): (&mut ChildStdout, &mut ChildStderr),
    (o, e): (&mut Capture, &mut Capture),
    keep: Option<u64>,
    started_on_host: bool,
) {
    drop(stdin);
    if started_on_host {
        let drained = async {
            match keep {
                Some(limit) => {
                    let _ = tokio::join!(read_limited(out, o, limit), read_limited(err, e, limit), child.wait());
                }
                None => {
                    let (mut sink_out, mut sink_err) = (tokio::io::sink(), tokio::io::sink());
                    let _ = tokio::join!(
                        tokio::io::copy(out, &mut sink_out),
                        tokio::io::copy(err, &mut sink_err),
                        child.wait()
                    );
                }
            }
        };
        if tokio::time::timeout(STOP_GRACE, drained).await.is_err() {
            tracing::warn!("the payload did not end within {STOP_GRACE:?} of being stopped; closing the connection");
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[async_trait]
impl HostExec for SshTransport {
    fn name(&self) -> &str {
        PLUGIN
    }

    fn default_concurrency(&self) -> usize {
        self.options.concurrency
    }

    async fn exec(&self, host: &Host, script: &Script, limits: ExecLimits, cancel: &CancellationToken) -> Execution {
        let started_at = Utc::now();
        let begun = Instant::now();
        let destination = host.address().to_string();
        let line = self.command_line(&destination);
        let mut transport =
            BTreeMap::from([("destination".to_string(), destination.clone()), ("command".to_string(), shown(&line))]);
        if cancel.is_cancelled() {
            return failed(
                HostStatus::Cancelled,
                "the run was interrupted before this host started".into(),
                started_at,
                transport,
            );
        }
        // Connections closed before the SSH banner (sshd beyond its
        // MaxStartups, on the host or a jump host) are tried again.
        let mut refusals: Vec<String> = Vec::new();
        let (mut child, mut out, mut err, mut o, mut e, driven, stdin, started_on_host, stderr_text, refused) = loop {
            let mut cmd = Command::new(&line[0]);
            cmd.args(&line[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    return failed(
                        HostStatus::TransportError,
                        format!("cannot start {}: {e}", self.options.program.display()),
                        started_at,
                        transport,
                    );
                }
            };
            // Held open while the payload runs: closing it stops the payload.
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let text = script.eof_guarded_text();
            let writer = tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
                let _ = stdin.flush().await;
                stdin
            });
            let mut out = child.stdout.take().expect("stdout is piped");
            let mut err = child.stderr.take().expect("stderr is piped");
            let left = limits.deadline.saturating_sub(begun.elapsed());
            let (o, e, driven) = drive(&mut out, &mut err, child.wait(), left, limits.max_output_bytes, cancel).await;
            // The script, or nothing if writing it had not finished.
            writer.abort();
            let stdin = writer.await.ok();
            let started_on_host = remote_pid(&o.bytes, script.nonce()).is_some();
            let stderr_text = String::from_utf8_lossy(&e.bytes).into_owned();
            let refused = matches!(&driven, Driven::Exited(Ok(status)) if status.code() == Some(255))
                && !started_on_host
                && refused_before_banner(&stderr_text);
            let attempt = refusals.len() as u32 + 1;
            if refused && attempt < self.options.connection_attempts {
                let pause = retry_pause(attempt + 1);
                // Only if the next attempt still has time to connect.
                if begun.elapsed() + pause + Duration::from_secs(1) < limits.deadline {
                    refusals.push(format!(
                        "attempt {attempt} at +{:.2}s: {}",
                        begun.elapsed().as_secs_f64(),
                        stderr_text.split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = cancel.cancelled() => {
                            record_refusals(&mut transport, &refusals, refusals.len());
                            return failed(
                                HostStatus::Cancelled,
                                "the run was interrupted while waiting to connect again".into(),
                                started_at,
                                transport,
                            );
                        }
                    }
                }
            }
            break (child, out, err, o, e, driven, stdin, started_on_host, stderr_text, refused);
        };
        if !refusals.is_empty() {
            record_refusals(&mut transport, &refusals, refusals.len() + 1);
        }
        let end = match driven {
            Driven::Exited(Ok(status)) => {
                drop(stdin);
                let code = status.code().unwrap_or(-1);
                transport.insert("exit_code".into(), code.to_string());
                if code == 255 && !started_on_host {
                    let (status, mut message) = classify(&stderr_text);
                    if refused {
                        let n = refusals.len() + 1;
                        message.push_str(&format!(
                            "; the connection was closed before the SSH banner ({n} attempt{}): sshd does that beyond its MaxStartups, on the host or a jump host (lower --concurrency, or raise MaxStartups there), and so does a ProxyCommand that fails without a word",
                            if n == 1 { "" } else { "s" }
                        ));
                    }
                    ExecEnd::Failed { status, message }
                } else if code == 255 && !payload_ended(&o.bytes, script.nonce()) {
                    let said = stderr_text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
                    ExecEnd::Failed {
                        status: HostStatus::Unreachable,
                        message: format!(
                            "the connection was lost while the payload ran; what arrived is kept ({said})"
                        ),
                    }
                } else if self.options.sudo
                    && code != 0
                    && stderr_text.contains("sudo:")
                    && stderr_text.contains("password")
                {
                    ExecEnd::Failed {
                        status: HostStatus::AuthFailed,
                        message: format!("sudo -n refused to run without a password ({})", stderr_text.trim()),
                    }
                } else {
                    ExecEnd::Exited(code)
                }
            }
            Driven::Exited(Err(e)) => {
                drop(stdin);
                ExecEnd::Failed { status: HostStatus::TransportError, message: format!("waiting for ssh failed: {e}") }
            }
            other => {
                let keep = match other {
                    Driven::OutputLimit(_) => None,
                    _ => Some(limits.max_output_bytes),
                };
                stop(&mut child, stdin, (&mut out, &mut err), (&mut o, &mut e), keep, started_on_host).await;
                match other {
                    Driven::TimedOut if !started_on_host => ExecEnd::Failed {
                        status: HostStatus::TimedOut,
                        message: format!(
                            "the payload had not started when the host's deadline ({}s) passed: connecting, authenticating or starting the remote shell took too long",
                            limits.deadline.as_secs()
                        ),
                    },
                    Driven::TimedOut => ExecEnd::TimedOut,
                    Driven::Cancelled if !started_on_host => ExecEnd::Failed {
                        status: HostStatus::Cancelled,
                        message: "the run was interrupted before the payload started".into(),
                    },
                    Driven::Cancelled => ExecEnd::Cancelled,
                    Driven::OutputLimit(n) => ExecEnd::OutputLimit(n),
                    Driven::Exited(_) => unreachable!("handled above"),
                }
            }
        };
        transport.insert("run_ms".into(), begun.elapsed().as_millis().to_string());
        Execution {
            stdout: Bytes::from(o.bytes),
            stderr: Bytes::from(e.bytes),
            end,
            started_at,
            finished_at: Utc::now(),
            transport,
        }
    }
}

/// The hosts named by the `Host` entries of an ssh_config file (patterns with
/// `*`, `?` or `!` are skipped); the key only names the run.
#[derive(Clone, Debug)]
pub struct SshConfigTarget {
    hosts: Vec<Host>,
}

impl SshConfigTarget {
    /// Reads the `Host` entries of `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(PLUGIN, "read", path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Reads `Host` entries from ssh_config text.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut hosts = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            if !kw.eq_ignore_ascii_case("host") {
                continue;
            }
            for pattern in words {
                if pattern.contains(['*', '?', '!']) {
                    continue;
                }
                let id = HostId::new(pattern)
                    .map_err(|e| Error::invalid(format!("{source}: Host {pattern:?} cannot be a host id: {e}")))?;
                if !hosts.iter().any(|h: &Host| h.id == id) {
                    hosts.push(Host::new(id));
                }
            }
        }
        Ok(Self { hosts })
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
}

#[async_trait]
impl Target for SshConfigTarget {
    fn name(&self) -> &str {
        "ssh-config"
    }

    async fn resolve(&self, _key: &TargetKey) -> Result<Resolution> {
        Ok(Resolution { hosts: self.hosts.clone(), not_targeted: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_messages_become_statuses() {
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\nHost key for dfy-3 has changed and you have requested strict checking.\nHost key verification failed.";
        assert_eq!(classify(changed).0, HostStatus::HostKeyMismatch);
        assert!(classify(changed).1.starts_with("THE HOST KEY HAS CHANGED"));
        let unknown = "No ED25519 host key is known for dfy-3 and you have requested strict checking.\r\nHost key verification failed.";
        assert_eq!(classify(unknown).0, HostStatus::HostKeyUnknown);
        assert_eq!(classify("root@dfy-1: Permission denied (publickey).").0, HostStatus::AuthFailed);
        assert_eq!(
            classify("kex_exchange_identification: Connection closed by remote host").0,
            HostStatus::Unreachable
        );
        assert_eq!(classify("ssh: connect to host 203.0.113.9 port 22: Connection refused").0, HostStatus::Unreachable);
        assert_eq!(classify("something odd").0, HostStatus::TransportError);
    }

    #[test]
    fn only_a_bare_refusal_before_the_banner_is_retried() {
        // sshd beyond MaxStartups: directly, through a ProxyCommand, through a jump host.
        assert!(refused_before_banner(
            "kex_exchange_identification: read: Connection reset by peer\r\nConnection reset by 198.51.100.7 port 22\r\n"
        ));
        assert!(refused_before_banner(
            "kex_exchange_identification: Connection closed by remote host\r\nConnection closed by UNKNOWN port 65535\r\n"
        ));
        assert!(refused_before_banner(
            "kex_exchange_identification: Connection closed by remote host\r\nkex_exchange_identification: Connection closed by remote host\r\n"
        ));
        // Anything else said is a failure of its own.
        for other in [
            "",
            "Connection closed by 198.51.100.7 port 22",
            "2026/11/23 19:00:44 socat[1765] E connect(5, AF=2 127.0.0.1:22, 16): Connection refused\nkex_exchange_identification: Connection closed by remote host\nConnection closed by UNKNOWN port 65535",
            "nsenter: cannot open /run/netns/web-9: No such file or directory\nkex_exchange_identification: Connection closed by remote host",
            "channel 0: open failed: connect failed: Connection refused\nstdio forwarding failed\nkex_exchange_identification: Connection closed by remote host",
            "kex_exchange_identification: banner line contains invalid characters",
            "ssh: connect to host 198.51.100.7 port 22: Connection refused",
            "root@web-1: Permission denied (publickey).",
        ] {
            assert!(!refused_before_banner(other), "{other:?}");
        }
    }

    #[test]
    fn retry_pauses_double_up_to_four_seconds_with_jitter() {
        for (next, full) in [(2, 250), (3, 500), (4, 1000), (5, 2000), (6, 4000), (9, 4000)] {
            for _ in 0..50 {
                let p = retry_pause(next).as_millis();
                assert!((full / 2..=full).contains(&p), "attempt {next}: {p} ms");
            }
        }
    }

    #[test]
    fn ssh_config_hosts() {
        let t = SshConfigTarget::parse(
            "Host web-1 web-2\n  User root\nHost *.internal\nHost db-1 !db-2\nhost web-1\n",
            "cfg",
        )
        .unwrap();
        let ids: Vec<&str> = t.hosts().iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["web-1", "web-2", "db-1"]);
    }

    #[test]
    fn command_line_is_quoted_and_strict() {
        let t = SshTransport::new(
            SshOptions::default().user("ec2-user").port(2222).jump_host("bastion").jump_host("inner").sudo(true),
        )
        .unwrap();
        let line = shown(&t.command_line("web-1"));
        assert!(
            line.starts_with(
                "ssh -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o StrictHostKeyChecking=yes"
            ),
            "{line}"
        );
        assert!(line.ends_with("-T -l ec2-user -p 2222 -J bastion,inner -- web-1 sudo -n sh -s"), "{line}");
        let t = SshTransport::new(
            SshOptions::default().host_keys(HostKeyPolicy::AcceptNew).known_hosts_file("/srv/ir 7/known_%h"),
        )
        .unwrap();
        let line = shown(&t.command_line("db-1"));
        assert!(line.contains("StrictHostKeyChecking=accept-new"), "{line}");
        assert!(line.contains(r#"'UserKnownHostsFile="/srv/ir 7/known_%%h"'"#), "{line}");
        assert!(line.ends_with("-T -- db-1 sh -s"), "{line}");
        let err = SshTransport::new(SshOptions::default().identity_file("/nonexistent/id")).unwrap_err();
        assert!(err.to_string().contains("identity file /nonexistent/id does not exist"), "{err}");
    }
}
