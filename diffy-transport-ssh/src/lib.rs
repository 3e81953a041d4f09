//! # diffy-transport-ssh
//!
//! Diffy's [`Collection`](diffy_core::Collection) over SSH, with the system
//! OpenSSH client, so that `~/.ssh/config`, agents, `ProxyJump`,
//! `ProxyCommand` and bastions work as users already have them.
//!
//! Per host: one `ssh` process, one connection, one remote invocation
//! (`sh -s`, or `sudo -n sh -s`) that runs every query of the payload with
//! framed output. Hosts are worked on concurrently
//! ([`CollectOptions::concurrency`](diffy_core::CollectOptions::concurrency);
//! [`DEFAULT_CONCURRENCY`], 100, when it is unset).
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
use diffy_core::plugin::spawn_patiently;
use diffy_core::plugin::{Capture, Driven, drive, read_limited};
use diffy_core::plugin::{ExecEnd, Execution, Script, payload_ended, remote_pid};
use diffy_core::target::{Resolution, Target};
use diffy_core::{CancellationToken, Error, Host, HostId, HostStatus, Result, TargetKey};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

const PLUGIN: &str = "ssh";

/// How long a stopped payload gets to end on the host (after its standard
/// input is closed) before the local `ssh` is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to do with host keys. Written `"strict"` or `"accept-new"` in a
/// settings file; `true` and `false` (as `accept_new_host_keys = true`) mean
/// accept-new and strict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Refuse hosts whose key is unknown or changed (`StrictHostKeyChecking=yes`).
    #[default]
    Strict,
    /// Accept and record keys of hosts never seen before; refuse changed keys
    /// (`StrictHostKeyChecking=accept-new`).
    AcceptNew,
}

impl<'de> serde::Deserialize<'de> for HostKeyPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            AcceptNew(bool),
            Name(String),
        }
        match Written::deserialize(d)? {
            Written::AcceptNew(true) => Ok(Self::AcceptNew),
            Written::AcceptNew(false) => Ok(Self::Strict),
            Written::Name(n) => match n.as_str() {
                "strict" => Ok(Self::Strict),
                "accept-new" => Ok(Self::AcceptNew),
                _ => Err(serde::de::Error::custom(format!(
                    "unknown host key policy {n:?}; write \"strict\" or \"accept-new\""
                ))),
            },
        }
    }
}

/// Hosts the SSH transport works on at once when the caller does not say.
pub const DEFAULT_CONCURRENCY: usize = 100;

/// How to reach hosts. Anything not set here comes from the SSH client's own
/// configuration (`~/.ssh/config`, or [`SshOptions::config_file`]).
///
/// Written in `diffy.toml` as `[ssh]` (or a request body) with these names,
/// or the shorter `config`, `identity`, `jump` and `known_hosts`; durations
/// as `"10s"`. Relative paths are the caller's to resolve.
///
/// ```
/// let o: diffy_transport_ssh::SshOptions =
///     serde_json::from_str(r#"{ "user": "ec2-user", "jump": ["bastion"], "accept_new_host_keys": true }"#).unwrap();
/// assert_eq!(o.host_keys, diffy_transport_ssh::HostKeyPolicy::AcceptNew);
/// assert_eq!(o.connection_attempts, 6);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SshOptions {
    /// The `ssh` program. Default `ssh`, from `PATH`.
    pub program: PathBuf,
    /// An ssh_config file to use instead of `~/.ssh/config` (`ssh -F`).
    #[serde(alias = "config")]
    pub config_file: Option<PathBuf>,
    /// Remote user.
    pub user: Option<String>,
    /// Remote port.
    pub port: Option<u16>,
    /// Identity file (used alone, `IdentitiesOnly=yes`).
    #[serde(alias = "identity")]
    pub identity_file: Option<PathBuf>,
    /// Jump hosts, in order (`ssh -J`).
    #[serde(alias = "jump")]
    pub jump_hosts: Vec<String>,
    /// Host key checking. Default strict.
    #[serde(alias = "accept_new_host_keys")]
    pub host_keys: HostKeyPolicy,
    /// A known_hosts file to use instead of the user's.
    #[serde(alias = "known_hosts")]
    pub known_hosts_file: Option<PathBuf>,
    /// Time allowed to open the connection. Default 10 s.
    #[serde(with = "diffy_core::settings::duration")]
    pub connect_timeout: Duration,
    /// Interval of keepalives; a host that answers none of three is lost. Default 10 s.
    #[serde(with = "diffy_core::settings::duration")]
    pub keepalive: Duration,
    /// Run the payload with `sudo -n` (never prompts; a password request is `auth_failed`).
    pub sudo: bool,
    /// Attempts per host while the connection is closed before the SSH
    /// banner (see [`refused_before_banner`]): sshd does that to new
    /// connections beyond its `MaxStartups` (default `10:30:100`, easily
    /// reached on a jump host that every host's connection goes through).
    /// Retries wait 0.25 s, 0.5 s, 1 s, 2 s, then 4 s, each with random
    /// jitter, and never past the host's deadline. Default 6; 1 never retries.
    #[serde(deserialize_with = "diffy_core::settings::at_least_one::deserialize")]
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

/// The options diffy sets on every connection it makes, the destination's
/// and every jump host's, whatever the user's ssh_config says: no kind of
/// forwarding (agent, X11, GSSAPI credentials, ports, tunnels), no local
/// command, no host key updates, no terminal, no multiplexing, strict host
/// keys and batch mode. OpenSSH takes the first value it obtains for each
/// option, so these come before the user's configuration.
fn enforced_options(options: &SshOptions) -> Result<Vec<(&'static str, String)>> {
    let mut o: Vec<(&'static str, String)> = vec![
        ("BatchMode", "yes".into()),
        // One connection of our own: never a master, never someone else's.
        ("ControlMaster", "no".into()),
        ("ControlPath", "none".into()),
        (
            "StrictHostKeyChecking",
            match options.host_keys {
                HostKeyPolicy::Strict => "yes",
                HostKeyPolicy::AcceptNew => "accept-new",
            }
            .into(),
        ),
        // Nothing of the responder's reaches a host that may be the attacker's.
        ("ForwardAgent", "no".into()),
        ("ForwardX11", "no".into()),
        ("ForwardX11Trusted", "no".into()),
        ("GSSAPIDelegateCredentials", "no".into()),
        ("ClearAllForwardings", "yes".into()),
        ("Tunnel", "no".into()),
        ("PermitLocalCommand", "no".into()),
        ("UpdateHostKeys", "no".into()),
        ("RequestTTY", "no".into()),
        ("RemoteCommand", "none".into()),
        ("EscapeChar", "none".into()),
        ("ConnectTimeout", whole_seconds(options.connect_timeout).to_string()),
        ("ServerAliveInterval", whole_seconds(options.keepalive).to_string()),
        ("ServerAliveCountMax", "3".into()),
    ];
    if let Some(k) = &options.known_hosts_file {
        o.push(("UserKnownHostsFile", literal_path("known_hosts file", k)?));
    }
    Ok(o)
}

/// A per-run ssh_config (mode 0600, removed with the transport) that sets
/// [`enforced_options`] for every host, then includes the configuration ssh
/// would otherwise read. Passed with `-F`, which ssh hands on to the `ssh` it
/// runs for each `ProxyJump` hop (`-o` options are not handed on).
fn run_config(options: &SshOptions, enforced: &[(&'static str, String)]) -> Result<tempfile::NamedTempFile> {
    use std::io::Write as _;
    let mut text = String::from(
        "# Written by diffy for one run: the options it enforces on every connection,\n\
         # jump hosts included. The configuration ssh would otherwise read follows.\n\
         Host *\n",
    );
    for (k, v) in enforced {
        text.push_str(&format!("  {k} {v}\n"));
    }
    // Whatever follows applies to every host again.
    text.push_str("Match all\n");
    let includes: Vec<PathBuf> = match &options.config_file {
        // `ssh -F FILE` reads FILE only.
        Some(f) => vec![std::path::absolute(f).map_err(|e| Error::io(PLUGIN, "resolve", f, e))?],
        // Otherwise ssh reads the user's file, then the system's.
        None => std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".ssh/config"))
            .into_iter()
            .chain([PathBuf::from("/etc/ssh/ssh_config")])
            .filter(|p| p.is_file())
            .collect(),
    };
    for f in &includes {
        let s =
            f.to_str().ok_or_else(|| Error::invalid(format!("the ssh_config path {} is not UTF-8", f.display())))?;
        if s.contains(['"', '\n', '\r']) {
            return Err(Error::invalid(format!("the ssh_config path {s:?} contains a quote or a line break")));
        }
        text.push_str(&format!("Include \"{s}\"\n"));
    }
    let dir = std::env::temp_dir();
    let mut file = tempfile::Builder::new()
        .prefix("diffy-ssh-")
        .suffix(".conf")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(PLUGIN, "create", &dir, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| Error::io(PLUGIN, "write", file.path(), e))?;
    Ok(file)
}

/// Why `destination` cannot be given to ssh, if it cannot: only host-name
/// characters (letters, digits, `.`, `-`, `_`, `:` for IPv6, one `user@`)
/// reach ssh, which may hand the name to a `ProxyCommand` shell as `%h`.
pub fn check_destination(destination: &str) -> std::result::Result<(), String> {
    let host = match destination.split_once('@') {
        Some((user, host)) => {
            if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(format!("the user in {destination:?} is not a plain user name"));
            }
            host
        }
        None => destination,
    };
    if host.is_empty() || host.starts_with(['-', '.']) {
        return Err(format!("{destination:?} is not a host name"));
    }
    if let Some(c) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-:".contains(*c))) {
        return Err(format!("{destination:?} contains {c:?}, which is not a host-name character"));
    }
    Ok(())
}

/// The SSH transport. Wrap it in [`diffy_core::PerHost`] to get a [`diffy_core::Collection`].
#[derive(Debug)]
pub struct SshTransport {
    options: SshOptions,
    /// Everything before the destination.
    args: Vec<OsString>,
    /// The per-run ssh_config the arguments name (removed on drop).
    config: tempfile::NamedTempFile,
}

impl SshTransport {
    /// A transport with `options`; checks the files it names and writes the
    /// run's ssh_config (see [`SshTransport::config_text`]).
    pub fn new(options: SshOptions) -> Result<Self> {
        if let Some(f) = &options.config_file {
            check_file("ssh_config file", f)?;
        }
        if let Some(f) = &options.identity_file {
            check_file("identity file", f)?;
        }
        let enforced = enforced_options(&options)?;
        let config = run_config(&options, &enforced)?;
        // No agent, X11 or GSSAPI forwarding; no terminal, so no escape
        // character is read and the output is data.
        let mut args: Vec<OsString> = ["-a", "-x", "-k", "-T"].map(OsString::from).to_vec();
        // The destination gets them on the command line too (they win there
        // whatever the file says); jump hosts get them from the file.
        for (k, v) in &enforced {
            args.push("-o".into());
            args.push(format!("{k}={v}").into());
        }
        if let Some(k) = &options.identity_file {
            args.push("-o".into());
            args.push("IdentitiesOnly=yes".into());
            args.push("-o".into());
            args.push(format!("IdentityFile={}", literal_path("identity file", k)?).into());
        }
        args.push("-F".into());
        args.push(config.path().into());
        if let Some(u) = &options.user {
            args.push("-l".into());
            args.push(u.into());
        }
        if let Some(p) = options.port {
            args.push("-p".into());
            args.push(p.to_string().into());
        }
        if !options.jump_hosts.is_empty() {
            for j in &options.jump_hosts {
                check_destination(j).map_err(|why| Error::invalid(format!("jump host: {why}")))?;
            }
            args.push("-J".into());
            args.push(options.jump_hosts.join(",").into());
        }
        Ok(Self { options, args, config })
    }

    /// The options.
    pub fn options(&self) -> &SshOptions {
        &self.options
    }

    /// The text of the run's ssh_config: the enforced `Host *` block, then an
    /// `Include` of the configuration ssh would read otherwise.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config.path()).unwrap_or_default()
    }

    /// The `ssh` command line for `destination`.
    pub fn command_line(&self, destination: &str) -> Vec<OsString> {
        let mut v = Vec::with_capacity(self.args.len() + 7);
        v.push(self.options.program.clone().into_os_string());
        v.extend(self.args.iter().cloned());
        v.push("--".into());
        v.push(destination.into());
        // The system's shell, not the first `sh` on the remote user's PATH.
        if self.options.sudo {
            v.extend(["sudo", "-n", "/bin/sh", "-s"].map(OsString::from));
        } else {
            v.extend(["/bin/sh", "-s"].map(OsString::from));
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
/// a moment later may well get in; nothing ran on the host. A banner that
/// did not come within `ConnectTimeout` (`Connection timed out during banner
/// exchange`) is the same sshd, or a jump host, too busy to answer yet, and
/// is tried again too. Any other line (a
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
        } else if line == "Connection timed out during banner exchange" {
            banner = true;
        } else {
            // A ProxyCommand's socat that could no longer write to ssh,
            // which had given up: what follows the failure, not another one.
            let proxy_left = line.contains(" socat[") && line.contains(" E write(") && line.ends_with("): Broken pipe");
            let aftermath = line.starts_with("Connection closed by ")
                || line.starts_with("Connection reset by ")
                || (line.starts_with("Connection to ") && line.ends_with(" timed out"))
                || proxy_left;
            if !aftermath {
                return false;
            }
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
    Execution { transport, ..Execution::failed(status, message, started_at) }
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
        DEFAULT_CONCURRENCY
    }

    /// Three pipes and a spare; `ssh` and its `ProxyCommand`, if any.
    fn host_cost(&self) -> diffy_core::collection::HostCost {
        diffy_core::collection::HostCost::new(4, 2)
    }

    async fn exec(&self, host: &Host, script: &Script, limits: ExecLimits, cancel: &CancellationToken) -> Execution {
        let started_at = Utc::now();
        let begun = Instant::now();
        let destination = host.address().to_string();
        let line = self.command_line(&destination);
        let mut transport =
            BTreeMap::from([("destination".to_string(), destination.clone()), ("command".to_string(), shown(&line))]);
        if let Err(why) = check_destination(&destination) {
            return failed(
                HostStatus::TransportError,
                format!("not given to ssh: {why}; use the host's name or address"),
                started_at,
                transport,
            );
        }
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
            // A passing shortage of descriptors or processes waits, within the deadline.
            let (spawned, waits) = spawn_patiently(&mut cmd, begun + limits.deadline).await;
            if waits > 0 {
                transport.insert("spawn_waits".into(), waits.to_string());
            }
            let mut child = match spawned {
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
                            "; the connection was closed before the SSH banner, or the banner did not come ({n} attempt{}): sshd does that beyond its MaxStartups or when it is too busy, on the host or a jump host (lower --concurrency, or raise MaxStartups there), and so does a ProxyCommand that fails without a word",
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

/// The hosts named by the `Host` entries of an ssh_config file and the files
/// it includes (patterns with `*`, `?` or `!` are skipped); the key only
/// names the run.
///
/// Lines are read as OpenSSH reads them: `Keyword value` or
/// `Keyword=value`, keywords in any case, values in double quotes, a word
/// starting with `#` ends the line. `Include` is followed (glob patterns,
/// `~/`, relative paths from `~/.ssh` as for a user's configuration, 16
/// levels at most). `Match` blocks name no host of their own and are skipped.
#[derive(Clone, Debug)]
pub struct SshConfigTarget {
    hosts: Vec<Host>,
}

/// How deep `Include` may nest (OpenSSH's own limit).
const INCLUDE_DEPTH: usize = 16;

/// One ssh_config line as OpenSSH splits it: the keyword, lowercased, and
/// its arguments; `None` for blank and comment lines.
fn config_words(line: &str) -> std::result::Result<Option<(String, Vec<String>)>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else { break };
        if c == '#' {
            break;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => word.push(c),
                    None => return Err("an unterminated quote".into()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        args.push(word);
    }
    Ok(Some((keyword, args)))
}

/// What one ssh_config file says that the target needs, in order.
enum ConfigEntry {
    Host(HostId),
    Include(String),
}

impl SshConfigTarget {
    /// Reads the `Host` entries of `path` and of the files it includes.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut hosts = Vec::new();
        read_config(path, 0, &mut hosts)?;
        Ok(Self { hosts })
    }

    /// Reads `Host` entries from ssh_config text (an `Include` in it is an
    /// error here: there is no file to resolve it from).
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut hosts = Vec::new();
        for entry in config_entries(text, source)? {
            match entry {
                ConfigEntry::Host(id) => add_host(&mut hosts, id),
                ConfigEntry::Include(p) => {
                    return Err(Error::invalid(format!("{source}: Include {p:?} needs a file to be read from")));
                }
            }
        }
        Ok(Self { hosts })
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Only the hosts named in `ids`, in that order: `--host` and `--hosts`
    /// choose among the file's hosts. A name the file does not have is an
    /// error naming it (a baseline taken from hosts nobody chose could hold
    /// the compromise it should reveal).
    pub fn select(self, ids: &[HostId], source: &str) -> Result<Self> {
        let mut chosen = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(h) = self.hosts.iter().find(|h| &h.id == id) else {
                return Err(Error::invalid_with_help(
                    format!("host {id} is not a Host entry of {source}"),
                    format!("--host and --hosts choose among the Host entries of {source}; check the name"),
                ));
            };
            if !chosen.iter().any(|c: &Host| c.id == h.id) {
                chosen.push(h.clone());
            }
        }
        Ok(Self { hosts: chosen })
    }
}

fn add_host(hosts: &mut Vec<Host>, id: HostId) {
    if !hosts.iter().any(|h| h.id == id) {
        hosts.push(Host::new(id));
    }
}

fn read_config(path: &Path, depth: usize, hosts: &mut Vec<Host>) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(PLUGIN, "read", path, e))?;
    let source = path.display().to_string();
    for entry in config_entries(&text, &source)? {
        match entry {
            ConfigEntry::Host(id) => add_host(hosts, id),
            ConfigEntry::Include(_) if depth + 1 >= INCLUDE_DEPTH => {
                return Err(Error::invalid(format!(
                    "{source}: Include nests deeper than {INCLUDE_DEPTH} levels (a loop?)"
                )));
            }
            ConfigEntry::Include(pattern) => {
                for file in include_files(&pattern)? {
                    read_config(&file, depth + 1, hosts)?;
                }
            }
        }
    }
    Ok(())
}

/// The `Host` names and `Include` patterns of ssh_config text.
fn config_entries(text: &str, source: &str) -> Result<Vec<ConfigEntry>> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{source}:{}", n + 1);
        let Some((keyword, args)) = config_words(line).map_err(|why| Error::invalid(format!("{}: {why}", at())))?
        else {
            continue;
        };
        match keyword.as_str() {
            "host" => {
                for pattern in args {
                    if pattern.contains(['*', '?', '!']) {
                        continue;
                    }
                    check_destination(&pattern)
                        .map_err(|why| Error::invalid(format!("{}: Host {pattern:?} cannot be a host: {why}", at())))?;
                    let id = HostId::new(pattern.as_str())
                        .map_err(|e| Error::invalid(format!("{}: Host {pattern:?} cannot be a host id: {e}", at())))?;
                    entries.push(ConfigEntry::Host(id));
                }
            }
            "include" => entries.extend(args.into_iter().map(ConfigEntry::Include)),
            _ => {}
        }
    }
    Ok(entries)
}

/// The files an `Include` pattern names, in order: `~/` is the home
/// directory, a relative pattern is under `~/.ssh` (as ssh reads a user's
/// configuration), globs expand; a pattern that matches nothing is skipped,
/// as ssh does.
fn include_files(pattern: &str) -> Result<Vec<PathBuf>> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    let full = if let Some(rest) = pattern.strip_prefix("~/") {
        home.join(rest)
    } else if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        home.join(".ssh").join(pattern)
    };
    let text = full.to_str().ok_or_else(|| Error::invalid(format!("Include {pattern:?} is not UTF-8")))?;
    let paths = glob::glob(text).map_err(|e| Error::invalid(format!("Include {pattern:?}: {e}")))?;
    let mut files: Vec<PathBuf> = paths.filter_map(std::result::Result::ok).filter(|p| p.is_file()).collect();
    files.sort();
    Ok(files)
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
        assert!(refused_before_banner(
            "Connection timed out during banner exchange\r\nConnection to UNKNOWN port 65535 timed out\r\n"
        ));
        assert!(refused_before_banner(
            "Connection timed out during banner exchange\r\n2026/12/02 17:30:06 socat[21113] E write(1, 0x55d0d224f000, 1564): Broken pipe\n"
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
    fn hosts_given_choose_among_the_files() {
        let t = SshConfigTarget::parse("Host web-1 web-2 web-3\n", "cfg").unwrap();
        let ids = |names: &[&str]| names.iter().map(|n| HostId::new(*n).unwrap()).collect::<Vec<_>>();
        let chosen = t.clone().select(&ids(&["web-3", "web-1"]), "cfg").unwrap();
        let got: Vec<&str> = chosen.hosts().iter().map(|h| h.id.as_str()).collect();
        assert_eq!(got, ["web-3", "web-1"]);
        let err = t.select(&ids(&["web-1", "web-9"]), "cfg").unwrap_err();
        assert!(err.to_string().contains("host web-9 is not a Host entry of cfg"), "{err}");
    }

    #[test]
    fn ssh_config_is_read_as_openssh_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/a.conf"), "Host=inc-1\n").unwrap();
        std::fs::write(dir.path().join("conf.d/b.conf"), "  HOST \"inc-2\" # second\n").unwrap();
        let main = dir.path().join("config");
        std::fs::write(
            &main,
            format!(
                "# fleet\nHost web-1 # primary\nHost = web-2\nHost\tweb-3 web-4\nMatch host web-9 exec \"true\"\n  User x\nInclude {}/conf.d/*.conf\nInclude {}/none-*.conf\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let t = SshConfigTarget::from_file(&main).unwrap();
        let ids: Vec<&str> = t.hosts().iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["web-1", "web-2", "web-3", "web-4", "inc-1", "inc-2"]);
        // A comment word, a bad host name and a loop are refused or ignored, never hosts.
        let err = SshConfigTarget::parse("Host web-1 $(id)\n", "cfg").unwrap_err();
        assert!(err.to_string().contains("cannot be a host"), "{err}");
        let looped = dir.path().join("loop");
        std::fs::write(&looped, format!("Include {}\n", looped.display())).unwrap();
        let err = SshConfigTarget::from_file(&looped).unwrap_err();
        assert!(err.to_string().contains("deeper than 16"), "{err}");
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
                "ssh -a -x -k -T -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o StrictHostKeyChecking=yes"
            ),
            "{line}"
        );
        for forbid in [
            "ForwardAgent=no",
            "ForwardX11=no",
            "GSSAPIDelegateCredentials=no",
            "ClearAllForwardings=yes",
            "PermitLocalCommand=no",
            "UpdateHostKeys=no",
        ] {
            assert!(line.contains(&format!("-o {forbid} ")), "{forbid}: {line}");
        }
        let config = t.config.path().display().to_string();
        assert!(
            line.ends_with(&format!("-F {config} -l ec2-user -p 2222 -J bastion,inner -- web-1 sudo -n /bin/sh -s")),
            "{line}"
        );
        let t = SshTransport::new(
            SshOptions::default().host_keys(HostKeyPolicy::AcceptNew).known_hosts_file("/srv/ir 7/known_%h"),
        )
        .unwrap();
        let line = shown(&t.command_line("db-1"));
        assert!(line.contains("StrictHostKeyChecking=accept-new"), "{line}");
        assert!(line.contains(r#"'UserKnownHostsFile="/srv/ir 7/known_%%h"'"#), "{line}");
        assert!(line.ends_with("-- db-1 /bin/sh -s"), "{line}");
        let err = SshTransport::new(SshOptions::default().identity_file("/nonexistent/id")).unwrap_err();
        assert!(err.to_string().contains("identity file /nonexistent/id does not exist"), "{err}");
        let err = SshTransport::new(SshOptions::default().jump_host("-oProxyCommand=x")).unwrap_err();
        assert!(err.to_string().contains("jump host"), "{err}");
    }

    #[test]
    fn the_run_config_enforces_first_then_includes_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("my config");
        std::fs::write(&user, "Host *\n  ForwardAgent yes\n").unwrap();
        let t = SshTransport::new(SshOptions::default().config_file(&user).known_hosts_file("/srv/kh")).unwrap();
        let text = t.config_text();
        let enforced = text.find("Host *\n").unwrap();
        let include = text.find(&format!("Include \"{}\"", user.display())).unwrap();
        assert!(enforced < include, "{text}");
        for line in ["  ForwardAgent no\n", "  BatchMode yes\n", "  UserKnownHostsFile /srv/kh\n", "Match all\n"] {
            assert!(text[..include].contains(line), "{line:?} in {text}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.config.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let path = t.config.path().to_path_buf();
        drop(t);
        assert!(!path.exists(), "the run's config is removed with the transport");
    }

    #[test]
    fn only_host_names_become_destinations() {
        for good in ["web-1", "ec2-user@10.0.0.1", "db_2.internal", "fe80::1", "h"] {
            assert!(check_destination(good).is_ok(), "{good}");
        }
        for bad in
            ["a b", "x$(id)", "x`id`", "-oProxyCommand=x", "@web", "a@b@c", "web;id", ".x", "h%h", "w\n", "", "u$@h"]
        {
            assert!(check_destination(bad).is_err(), "{bad:?}");
        }
    }
}
