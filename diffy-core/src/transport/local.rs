//! The local shell transport: runs the payload on this machine.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::output::{Driven, drive};
use crate::collection::{ExecLimits, HostExec};
use crate::names::Host;
use crate::result::HostStatus;
use crate::script::{ExecEnd, Execution, Script};

/// Runs the payload with `/bin/sh -s` on this machine, once per host.
///
/// Each invocation gets `DIFFY_HOST` (the host's id) and `DIFFY_HOST_ADDRESS`
/// in its environment, so one machine can stand in for several hosts when
/// replaying or testing. Every invocation runs in its own process group, which
/// is killed when the host's deadline passes, the run is cancelled or the output
/// limit is reached; processes the payload leaves behind are killed with it.
#[derive(Clone, Debug)]
pub struct LocalTransport {
    shell: PathBuf,
    env: BTreeMap<String, String>,
}

impl Default for LocalTransport {
    fn default() -> Self {
        Self { shell: PathBuf::from("/bin/sh"), env: BTreeMap::new() }
    }
}

impl LocalTransport {
    /// A transport using `/bin/sh`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses another POSIX shell.
    pub fn shell(mut self, shell: impl Into<PathBuf>) -> Self {
        self.shell = shell.into();
        self
    }

    /// Adds an environment variable for every invocation.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

fn signal_group(pid: Option<u32>, signal: nix::sys::signal::Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // Only called while the group leader has not been reaped, or while
        // processes it left behind still hold our pipes: the id is still ours.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

fn kill_group(pid: Option<u32>) {
    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Whether the process has exited, without reaping it: while it is unreaped,
/// its process group id cannot be reused, so signalling the group stays safe.
fn exited(pid: u32) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let Ok(raw) = i32::try_from(pid) else { return true };
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::Pid(nix::unistd::Pid::from_raw(raw)), flags), Ok(WaitStatus::StillAlive))
}

/// Stops the payload: TERM first, so that its trap stops the running query's
/// own process group (`timeout` makes one), then, after up to two seconds,
/// KILL whatever is left in the payload's group.
async fn stop(pid: Option<u32>) {
    signal_group(pid, nix::sys::signal::Signal::SIGTERM);
    if let Some(p) = pid {
        for _ in 0..20 {
            if exited(p) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    kill_group(pid);
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

#[async_trait]
impl HostExec for LocalTransport {
    fn name(&self) -> &str {
        "local"
    }

    /// Every host runs on this machine: a few at a time.
    fn default_concurrency(&self) -> usize {
        8
    }

    /// Three pipes and a spare; the script's shell and the command it runs.
    fn host_cost(&self) -> crate::collection::HostCost {
        crate::collection::HostCost::new(4, 2)
    }

    async fn exec(&self, host: &Host, script: &Script, limits: ExecLimits, cancel: &CancellationToken) -> Execution {
        let started_at = Utc::now();
        let mut cmd = Command::new(&self.shell);
        cmd.arg("-s")
            .envs(&self.env)
            .env("DIFFY_HOST", host.id.as_str())
            .env("DIFFY_HOST_ADDRESS", host.address())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let until = std::time::Instant::now() + limits.deadline;
        let mut child = match super::spawn::spawn_patiently(&mut cmd, until).await.0 {
            Ok(c) => c,
            Err(e) => {
                let why = format!("cannot start {}: {e}", self.shell.display());
                return Execution::failed(HostStatus::TransportError, why, started_at);
            }
        };
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            let text = script.text().to_string();
            tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let mut out_pipe = child.stdout.take().expect("stdout is piped");
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let (out, err, driven) =
            drive(&mut out_pipe, &mut err_pipe, child.wait(), limits.deadline, limits.max_output_bytes, cancel).await;
        let end = match driven {
            Driven::Exited(status) => {
                // Processes the payload left behind may still hold the pipes
                // (the drain gave up on them): they are in its group.
                if !(out.eof && err.eof) {
                    kill_group(pid);
                }
                ExecEnd::Exited(status.map(exit_code).unwrap_or(-1))
            }
            Driven::TimedOut => ExecEnd::TimedOut,
            Driven::Cancelled => ExecEnd::Cancelled,
            Driven::OutputLimit(n) => ExecEnd::OutputLimit(n),
        };
        if !matches!(end, ExecEnd::Exited(_)) {
            stop(pid).await;
        }
        let _ = child.wait().await;
        Execution {
            stdout: Bytes::from(out.bytes),
            stderr: Bytes::from(err.bytes),
            end,
            started_at,
            finished_at: Utc::now(),
            transport: BTreeMap::new(),
        }
    }
}
