//! A small harness: run the real `diffy` binary in a scratch directory with a
//! clean environment, and read what it printed.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory with its own store, and no user configuration.
pub struct Diffy {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What a run printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    pub fn report(&self) -> diffy_core::Report {
        // Report and every type in it reject unknown fields.
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not a report ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_diffy-under-test")
}

impl Diffy {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), env: Vec::new() }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The `result.json` stored for `host` in `run` of the default store.
    pub fn host_result(&self, run: &str, host: &str) -> serde_json::Value {
        let p = self.path(&format!("diffy-store/runs/{run}/hosts/{host}/result.json"));
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.program(bin());
        c.args(args);
        c
    }

    /// `program` in the scratch directory with the same clean environment
    /// as diffy gets (a shell, or a wrapper that runs diffy).
    pub fn program(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("DIFFY_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.env("HOME", self.dir.path()).env("XDG_CONFIG_HOME", self.dir.path().join(".config")).env("USER", "tester");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs a shell command line (a README line) in the scratch directory,
    /// where `diffy` (on PATH) and `./target/release/diffy` are the binary
    /// under test, and `demo` and `tests` are the repository's.
    pub fn sh(&self, line: &str) -> Run {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let bin_dir = self.path(".bin");
        if !bin_dir.exists() {
            std::fs::create_dir_all(self.path("target/release")).unwrap();
            std::fs::create_dir_all(&bin_dir).unwrap();
            std::os::unix::fs::symlink(bin(), bin_dir.join("diffy")).unwrap();
            std::os::unix::fs::symlink(bin(), self.path("target/release/diffy")).unwrap();
            for d in ["demo", "tests"] {
                std::os::unix::fs::symlink(repo.join(d), self.path(d)).unwrap();
            }
        }
        let mut c = self.program("sh");
        c.args(["-c", line]);
        c.env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()));
        Self::finish(c.output().unwrap())
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Self::finish(self.command(args).output().unwrap())
    }

    fn finish(out: Output) -> Run {
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(!run.stderr.contains("panicked"), "diffy panicked:\n{}", run.stderr);
        run
    }
}

/// The single run id in a store.
pub fn only_run(store: &Path) -> String {
    let mut runs: Vec<String> = std::fs::read_dir(store.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.pop().unwrap()
}

/// insta filters for values that change every run.
pub fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\d{8}T\d{6}Z-[0-9a-f]{6}", "[RUN]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[TIME]"),
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "[TIME]"),
        (r"/tmp/\.tmp[A-Za-z0-9]+", "[TMP]"),
        (r#""duration_ms": \d+"#, r#""duration_ms": [MS]"#),
    ]
}
pub mod fleet;
pub mod readme;

/// Runs `spec` on `hosts` through `t` (its default concurrency, a one-second
/// grace) and returns the hosts' results in the order they finished.
pub async fn collect_results(
    t: &dyn diffy_core::Collection,
    hosts: Vec<diffy_core::Host>,
    spec: diffy_core::PayloadSpec,
    deadline: std::time::Duration,
) -> Vec<diffy_core::HostResult> {
    let options =
        diffy_core::CollectOptions::default().host_deadline(deadline).grace(std::time::Duration::from_secs(1));
    collect_results_with(t, hosts, spec, options).await
}

/// Runs `spec` on `hosts` through `t` within `options`.
pub async fn collect_results_with(
    t: &dyn diffy_core::Collection,
    hosts: Vec<diffy_core::Host>,
    spec: diffy_core::PayloadSpec,
    options: diffy_core::CollectOptions,
) -> Vec<diffy_core::HostResult> {
    use futures::StreamExt;
    let script = diffy_core::plugin::Script::render(&spec, options.host_deadline).unwrap();
    let request = diffy_core::CollectRequest::new(
        hosts,
        std::sync::Arc::new(spec),
        std::sync::Arc::new(script),
        options,
        tokio_util::sync::CancellationToken::new(),
    );
    t.collect(request)
        .filter_map(|e| async move {
            match e {
                diffy_core::CollectEvent::Finished(r) => Some(*r),
                _ => None,
            }
        })
        .collect()
        .await
}
