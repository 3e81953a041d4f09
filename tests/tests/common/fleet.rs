//! A fleet of real Linux test hosts (namespaces, each with its own sshd),
//! started by tests/fleet/diffy-fleet and torn down when dropped.

#![allow(dead_code, unreachable_pub, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fleet/diffy-fleet");

/// A running fleet.
pub struct Fleet {
    pub dir: PathBuf,
    pub prefix: String,
    pub hosts: Vec<String>,
}

/// Why fleet tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root for network, PID and mount namespaces".into());
    }
    for tool in ["ip", "unshare", "nsenter", "socat", "ssh", "ssh-keygen", "/usr/sbin/sshd"] {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
        };
        if !found {
            return Some(format!("{tool} is not installed (openssh-server, socat, iproute2, util-linux)"));
        }
    }
    None
}

/// Whether fleets can run here; prints why not, and under CI fails instead.
pub fn available() -> bool {
    match unavailable() {
        None => true,
        Some(why) => {
            assert!(std::env::var("CI").is_err(), "CI must run the fleet tests, but: {why}");
            eprintln!("skipping: {why}");
            false
        }
    }
}

/// Whether sudo is installed here (the fleet's hosts share /usr); prints why
/// not, and under CI fails instead.
pub fn sudo_available() -> bool {
    if Command::new("sh").args(["-c", "command -v sudo"]).output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var("CI").is_err(), "CI must have sudo installed");
    eprintln!("skipping: sudo is not installed");
    false
}

impl Fleet {
    /// Starts `n` hosts named `<tag><pid>-1..n`; `None` (with the reason printed)
    /// where fleets cannot run. Under CI, that is a failure, not a skip.
    pub fn up(n: usize, tag: &str) -> Option<Fleet> {
        if !available() {
            return None;
        }
        let prefix = format!("{tag}{}", std::process::id() % 100_000);
        let dir = PathBuf::from(format!("/srv/diffy-fleet-{prefix}"));
        let fleet = Fleet { dir, prefix: prefix.clone(), hosts: (1..=n).map(|i| format!("{prefix}-{i}")).collect() };
        let out = fleet.script(&["up", &n.to_string()]);
        assert!(out.status.success(), "fleet up failed:\n{}", String::from_utf8_lossy(&out.stderr));
        Some(fleet)
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new(SCRIPT)
            .args(args)
            .args(["--dir", self.dir.to_str().unwrap(), "--prefix", &self.prefix])
            .output()
            .expect("the fleet script runs")
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i - 1]
    }

    /// Plants a compromise: listener, cron, key, uid0, shm.
    pub fn plant(&self, host: &str, kind: &str) {
        let out = self.script(&["plant", host, kind]);
        assert!(out.status.success(), "plant {kind} on {host}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Makes a host fail: stop-sshd, deny-auth, rekey.
    pub fn fault(&self, host: &str, kind: &str) {
        let out = self.script(&["fault", host, kind]);
        assert!(out.status.success(), "fault {kind} on {host}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Makes `host` a jump host to all the others, with sshd's default limits
    /// (or `max_startups`); returns its ssh_config (the others named
    /// `HOST-j`, reached through it) and the list of those names.
    pub fn bastion(&self, host: &str, max_startups: Option<&str>) -> (PathBuf, PathBuf) {
        let mut args = vec!["bastion", host];
        args.extend(max_startups);
        let out = self.script(&args);
        assert!(out.status.success(), "bastion {host}: {}", String::from_utf8_lossy(&out.stderr));
        (self.dir.join("ssh_config.jump"), self.dir.join("hosts.jump"))
    }

    /// Runs a shell command inside a host.
    pub fn exec(&self, host: &str, command: &str) -> Output {
        self.script(&["exec", host, "/bin/sh", "-c", command])
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!("fleet down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
