//! # diffy-transport-ssh
//!
//! Diffy's [`Collection`](diffy_core::Collection) over SSH, with the system
//! OpenSSH client (through the `openssh` crate), so that `~/.ssh/config`,
//! agents, `ProxyJump`, `ProxyCommand` and bastions work as users already have
//! them.
//!
//! Per host: one connection (a multiplexing master), one remote invocation
//! (`sh -s`, or `sudo -n sh -s`) that runs every query of the payload with
//! framed output, then the connection is closed. Hosts are worked on
//! concurrently ([`SshOptions::concurrency`], 100 by default).
//!
//! - **Host keys are checked strictly** by default: an unknown key is
//!   `host_key_unknown`, a changed one `host_key_mismatch` (during an incident
//!   that may mean an attacker). [`HostKeyPolicy::AcceptNew`] accepts keys of
//!   hosts never seen before, and still refuses changed ones.
//! - **Deadlines** are enforced on the host (each query under `timeout`) and
//!   locally; when a deadline passes or the run is cancelled, the payload is
//!   stopped on the host (`kill -TERM` of the script, whose trap stops the
//!   running query's process group) before the connection is closed.
//! - **Nothing is left behind**: control sockets live in a short private
//!   directory (socket paths over 107 bytes fail), masters are closed after
//!   each host, and any master left over (a connection attempt cut short) is
//!   closed when the transport is dropped.
//! - Statuses: `ok`, `partial`, `non_zero_exit`, `timed_out`, `unreachable`,
//!   `auth_failed` (including `sudo` asking for a password),
//!   `host_key_mismatch`, `host_key_unknown`, `transport_error`, `cancelled`.
//! - No credential is ever sent to a host: authentication is the SSH client's.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use diffy_core::collection::{ExecLimits, HostExec};
use diffy_core::script::{ExecEnd, Execution, Script, remote_pid};
use diffy_core::target::{Resolution, Target};
use diffy_core::transport::output::{Driven, drive};
use diffy_core::{CancellationToken, Error, Host, HostId, HostStatus, Result, TargetKey};
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt;

const PLUGIN: &str = "ssh";

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
    /// Time allowed to open the TCP connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Interval of keepalives; a host that answers none of three is lost. Default 10 s.
    pub keepalive: Duration,
    /// Run the payload with `sudo -n` (never prompts; a password request is `auth_failed`).
    pub sudo: bool,
    /// Hosts worked on at once. Default 100.
    pub concurrency: usize,
    /// Where control sockets go; default a fresh `dfy-ssh-*` directory under
    /// `$TMPDIR` when that path is short (sockets need under 108 bytes), else `/tmp`.
    pub control_dir: Option<PathBuf>,
}

impl Default for SshOptions {
    fn default() -> Self {
        Self {
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
            control_dir: None,
        }
    }
}

impl SshOptions {
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

    /// Sets the concurrency.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
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

/// The SSH transport. Wrap it in [`diffy_core::PerHost`] to get a [`diffy_core::Collection`].
#[derive(Debug)]
pub struct SshTransport {
    options: SshOptions,
    builder: SessionBuilder,
    control: Control,
}

/// The control directory: ours to clean.
#[derive(Debug)]
enum Control {
    Owned(tempfile::TempDir),
    Given(PathBuf),
}

impl Control {
    fn path(&self) -> &Path {
        match self {
            Control::Owned(t) => t.path(),
            Control::Given(p) => p,
        }
    }
}

impl SshTransport {
    /// A transport with `options`; checks the files it names and makes the
    /// control directory.
    pub fn new(options: SshOptions) -> Result<Self> {
        if let Some(f) = &options.config_file {
            check_file("ssh_config file", f)?;
        }
        if let Some(f) = &options.identity_file {
            check_file("identity file", f)?;
        }
        let control = match &options.control_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::io(PLUGIN, "create", d, e))?;
                Control::Given(d.clone())
            }
            None => {
                // Short: unix socket paths must stay under 108 bytes, so
                // $TMPDIR only when its path is short, else /tmp.
                let tmp = std::env::temp_dir();
                let base = if tmp.as_os_str().len() <= 40 && tmp.is_dir() { tmp.as_path() } else { Path::new("/tmp") };
                let dir = tempfile::Builder::new()
                    .prefix("dfy-ssh-")
                    .tempdir_in(if base.is_dir() { base } else { Path::new(".") })
                    .map_err(|e| Error::io(PLUGIN, "create", base, e))?;
                Control::Owned(dir)
            }
        };
        let longest = control.path().as_os_str().len() + "/.ssh-connectionXXXXXX/master".len();
        if longest > 100 {
            return Err(Error::invalid_with_help(
                format!("the control directory {} is too long for ssh's control sockets", control.path().display()),
                "choose a control directory with a short path, such as one under /tmp",
            ));
        }
        let mut b = SessionBuilder::default();
        b.known_hosts_check(match options.host_keys {
            HostKeyPolicy::Strict => KnownHosts::Strict,
            HostKeyPolicy::AcceptNew => KnownHosts::Add,
        })
        .connect_timeout(options.connect_timeout)
        .server_alive_interval(options.keepalive)
        .control_directory(control.path())
        // A master orphaned by a crash exits once idle, instead of forever.
        .control_persist(ControlPersist::IdleFor(std::num::NonZeroUsize::new(60).expect("60 is not zero")));
        if let Some(f) = &options.config_file {
            b.config_file(f);
        }
        if let Some(u) = &options.user {
            b.user(u.clone());
        }
        if let Some(p) = options.port {
            b.port(p);
        }
        if let Some(k) = &options.identity_file {
            b.keyfile(k);
        }
        if !options.jump_hosts.is_empty() {
            b.jump_hosts(&options.jump_hosts);
        }
        if let Some(k) = &options.known_hosts_file {
            b.user_known_hosts_file(k);
        }
        Ok(Self { options, builder: b, control })
    }

    /// The options.
    pub fn options(&self) -> &SshOptions {
        &self.options
    }

    /// The control directory.
    pub fn control_dir(&self) -> &Path {
        self.control.path()
    }

    fn remote_command<'s>(&self, session: &'s Session, program: &str) -> openssh::OwningCommand<&'s Session> {
        if self.options.sudo {
            let mut c = session.command("sudo");
            c.arg("-n").arg(program);
            c
        } else {
            session.command(program)
        }
    }

    /// Stops the payload script on the host (its trap stops the running query).
    async fn stop_remote(&self, session: &Session, pid: u32) {
        let mut c = self.remote_command(session, "kill");
        c.arg("-TERM").arg(pid.to_string()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if tokio::time::timeout(Duration::from_secs(5), c.status()).await.is_err() {
            tracing::warn!("stopping the payload (pid {pid}) on the host took too long");
        }
    }
}

impl Drop for SshTransport {
    fn drop(&mut self) {
        // Masters whose connection attempt was cut short may still be up:
        // ask each to exit, through its control socket.
        let Ok(entries) = std::fs::read_dir(self.control.path()) else { return };
        for e in entries.flatten() {
            let socket = e.path().join("master");
            if socket.exists() {
                let _ = std::process::Command::new("ssh")
                    .arg("-S")
                    .arg(&socket)
                    .args(["-O", "exit", "diffy-cleanup"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
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

fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
        let mut transport = BTreeMap::from([("destination".to_string(), destination.clone())]);
        if cancel.is_cancelled() {
            return failed(
                HostStatus::Cancelled,
                "the run was interrupted before this host started".into(),
                started_at,
                transport,
            );
        }
        // A connection attempt is not raced against cancellation: cutting it
        // short could orphan a master. The connect timeout bounds it.
        let connect = tokio::time::timeout(limits.deadline, self.builder.connect_mux(&destination)).await;
        let session = match connect {
            Err(_) => {
                return failed(
                    HostStatus::TimedOut,
                    format!("connecting took longer than the host's deadline ({}s)", limits.deadline.as_secs()),
                    started_at,
                    transport,
                );
            }
            Ok(Err(e)) => {
                let (status, message) = classify(&error_text(&e));
                return failed(status, message, started_at, transport);
            }
            Ok(Ok(s)) => s,
        };
        transport.insert("connect_ms".into(), begun.elapsed().as_millis().to_string());
        if cancel.is_cancelled() {
            let _ = session.close().await;
            return failed(
                HostStatus::Cancelled,
                "the run was interrupted before the payload started".into(),
                started_at,
                transport,
            );
        }
        let mut cmd = self.remote_command(&session, "sh");
        cmd.arg("-s").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match cmd.spawn().await {
            Ok(c) => c,
            Err(e) => {
                let (status, message) = classify(&error_text(&e));
                let _ = session.close().await;
                return failed(status, message, started_at, transport);
            }
        };
        let stdin = child.stdin().take();
        let text = script.text().to_string();
        let writer = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(text.as_bytes()).await;
                let _ = stdin.shutdown().await;
            }
        });
        let mut out = child.stdout().take().expect("stdout is piped");
        let mut err = child.stderr().take().expect("stderr is piped");
        let remaining = limits.deadline.saturating_sub(begun.elapsed());
        let running = Instant::now();
        let (o, e, driven) = drive(&mut out, &mut err, child.wait(), remaining, limits.max_output_bytes, cancel).await;
        writer.abort();
        transport.insert("run_ms".into(), running.elapsed().as_millis().to_string());
        let stderr_text = String::from_utf8_lossy(&e.bytes).to_string();
        let end = match driven {
            Driven::Exited(Ok(status)) => {
                let code = status.code().unwrap_or(-1);
                transport.insert("exit_code".into(), code.to_string());
                if self.options.sudo && code != 0 && stderr_text.contains("sudo:") && stderr_text.contains("password") {
                    ExecEnd::Failed {
                        status: HostStatus::AuthFailed,
                        message: format!("sudo -n refused to run without a password ({})", stderr_text.trim()),
                    }
                } else {
                    ExecEnd::Exited(code)
                }
            }
            Driven::Exited(Err(e)) => ExecEnd::Failed {
                status: HostStatus::Unreachable,
                message: format!(
                    "the connection was lost while the payload ran; what arrived is kept ({})",
                    error_text(&e)
                ),
            },
            other => {
                if let Some(pid) = remote_pid(&o.bytes, script.nonce()) {
                    self.stop_remote(&session, pid).await;
                }
                match other {
                    Driven::TimedOut => ExecEnd::TimedOut,
                    Driven::Cancelled => ExecEnd::Cancelled,
                    Driven::OutputLimit(n) => ExecEnd::OutputLimit(n),
                    Driven::Exited(_) => unreachable!("handled above"),
                }
            }
        };
        drop((out, err));
        let closing = Instant::now();
        if tokio::time::timeout(Duration::from_secs(5), session.close()).await.is_err() {
            tracing::warn!("closing the connection to {destination} took too long");
        }
        transport.insert("close_ms".into(), closing.elapsed().as_millis().to_string());
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
    fn control_dir_must_be_short() {
        let long = std::env::temp_dir().join("x".repeat(90));
        let err = SshTransport::new(SshOptions { control_dir: Some(long.clone()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
        let _ = std::fs::remove_dir_all(long);
        let t = SshTransport::new(SshOptions::default()).unwrap();
        let dir = t.control_dir().to_path_buf();
        assert!(dir.to_string_lossy().starts_with("/tmp/dfy-ssh-"), "{}", dir.display());
        drop(t);
        assert!(!dir.exists(), "the control directory is removed with the transport");
    }
}
