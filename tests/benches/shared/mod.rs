//! What the benchmarks share: their settings from the environment, and
//! summaries of repeated runs.

#![allow(dead_code, unreachable_pub)] // each benchmark uses its part

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use diffy_core::plugin::{ExecEnd, Execution, Script, assemble};
use diffy_core::run::{RunCounts, RunLimits};
use diffy_core::{Host, HostResult, RunId, RunKind, RunManifest, RunState, ShellPayload, TargetKey};

/// Sizes to run, from `var` (comma-separated), else `default`.
pub fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are numbers"))
        .collect()
}

/// Runs per cell: DIFFY_BENCH_RUNS, default 5.
pub fn runs() -> usize {
    std::env::var("DIFFY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5)
}

/// Where benchmarks write stores and other tools' outputs:
/// DIFFY_BENCH_STORE_DIR, else the workspace's target/ (the disk a
/// responder's store would be on, not a tmpfs). What filesystem that is
/// matters: creating and flushing a store's files costs far more CPU on some
/// (ext4 without a journal) than on others.
pub fn store_base() -> std::path::PathBuf {
    std::env::var_os("DIFFY_BENCH_STORE_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    )
}

/// CPU seconds spent by the whole machine (every process, the test hosts'
/// included) since boot, from /proc/stat.
pub fn machine_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: Vec<f64> = stat.lines().next().unwrap().split_whitespace().skip(1).map(|t| t.parse().unwrap()).collect();
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let busy: f64 = ticks.iter().sum::<f64>() - ticks[3] - ticks[4];
    busy / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64
}

/// Median, lowest and highest.
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut x = v.to_vec();
    x.sort_by(f64::total_cmp);
    (x[x.len() / 2], x[0], x[x.len() - 1])
}

/// The shell pack's real result on this machine.
pub fn real_result() -> HostResult {
    let spec = ShellPayload::pack();
    let script = Script::render(&spec, Duration::from_secs(120)).unwrap();
    let started_at = Utc::now();
    let mut child = Command::new("sh")
        .arg("-s")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    // Written from a thread, so that output filling its pipe cannot stall the script.
    let (mut stdin, text) = (child.stdin.take().unwrap(), script.text().to_string());
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let exec = Execution {
        stdout: Bytes::from(out.stdout),
        stderr: Bytes::from(out.stderr),
        end: ExecEnd::Exited(out.status.code().unwrap_or(-1)),
        started_at,
        finished_at: Utc::now(),
        transport: Default::default(),
    };
    assemble(Host::named("bench-0").unwrap(), &spec, &script, exec)
}

pub fn manifest(id: &RunId, hosts: usize) -> RunManifest {
    let payload = ShellPayload::pack();
    RunManifest {
        id: id.clone(),
        kind: RunKind::Survey,
        target: TargetKey::new("bench").unwrap(),
        incident_id: None,
        operator: None,
        tool_version: "bench".into(),
        target_plugin: "static".into(),
        transport: "bench".into(),
        payload_hash: payload.hash(),
        payload,
        limits: RunLimits {
            concurrency: 50,
            requested_concurrency: None,
            concurrency_capped: None,
            host_deadline_secs: 120,
            max_output_bytes: 1 << 28,
        },
        started_at: Utc::now(),
        finished_at: None,
        state: RunState::Running,
        hosts: (0..hosts).map(|i| Host::named(&format!("bench-{i}")).unwrap()).collect(),
        not_targeted: vec![],
        counts: RunCounts::tally(hosts, []),
    }
}
