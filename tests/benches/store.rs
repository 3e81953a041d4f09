//! Benchmark: the fs store writing hosts' evidence, as a collection does when
//! hosts finish. Each host is the real result of the standard shell pack run
//! on this machine (its raw outputs and `result.json`, every file flushed to
//! disk), stored under another host name. Prints a table of wall time and the
//! CPU of this process (all its threads: the store writes on tokio's blocking
//! pool) and of the whole machine (which also counts the kernel's own threads
//! writing to the disk, such as a journal's commits), one host at a time and
//! 50 at once.
//!
//! `cargo bench -p diffy-tests --bench store`. Sizes: DIFFY_BENCH_SIZES=200,1000;
//! runs per cell: DIFFY_BENCH_RUNS=5 (medians). The store is written in a
//! temporary directory under DIFFY_BENCH_STORE_DIR (default: the workspace's
//! target/, so the disk a responder's store would be on, not a tmpfs).

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use diffy_core::run::{RunCounts, RunLimits};
use diffy_core::script::{ExecEnd, Execution, Script, assemble};
use diffy_core::{
    FsStore, Host, HostId, HostResult, Persistence, RunId, RunKind, RunManifest, RunState, ShellPayload, TargetKey,
};
use futures::StreamExt;
use nix::sys::resource::{UsageWho, getrusage};

mod shared;

/// The shell pack's real result on this machine.
fn real_result() -> HostResult {
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

fn manifest(id: &RunId, hosts: usize) -> RunManifest {
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
        limits: RunLimits { concurrency: 50, host_deadline_secs: 120, max_output_bytes: 1 << 28 },
        started_at: Utc::now(),
        finished_at: None,
        state: RunState::Running,
        hosts: (0..hosts).map(|i| Host::named(&format!("bench-{i}")).unwrap()).collect(),
        not_targeted: vec![],
        counts: RunCounts::tally(hosts, []),
    }
}

fn cpu_seconds() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// Stores `n` copies of `one` (as hosts bench-0..n), `at_once` at a time:
/// (wall, CPU of this process, CPU of the machine).
async fn store_hosts(dir: &std::path::Path, one: &HostResult, n: usize, at_once: usize) -> (f64, f64, f64) {
    let store = Arc::new(FsStore::open(dir).unwrap());
    // Each run has a store of its own.
    let id = RunId::new("20261123T000000Z-000001").unwrap();
    store.create_run(&manifest(&id, n)).await.unwrap();
    let results: Vec<HostResult> = (0..n)
        .map(|i| {
            let mut r = one.clone();
            r.host = Host::new(HostId::new(format!("bench-{i}")).unwrap());
            r
        })
        .collect();
    let (cpu, machine, t) = (cpu_seconds(), shared::machine_seconds(), Instant::now());
    futures::stream::iter(results)
        .for_each_concurrent(at_once, |r| {
            let (store, id) = (store.clone(), id.clone());
            async move { store.put_host_result(&id, &r).await.unwrap() }
        })
        .await;
    (t.elapsed().as_secs_f64(), cpu_seconds() - cpu, shared::machine_seconds() - machine)
}

fn main() {
    let sizes = shared::sizes("DIFFY_BENCH_SIZES", "200,1000");
    let runs = shared::runs();
    let base = shared::store_base();
    let one = real_result();
    let files = one
        .queries
        .iter()
        .map(|q| usize::from(!q.stdout.is_empty()) + usize::from(!q.stderr.is_empty()))
        .sum::<usize>()
        + usize::from(!one.unframed_stdout.is_empty())
        + usize::from(!one.unframed_stderr.is_empty())
        + 1;
    let bytes: usize = one.queries.iter().map(|q| q.stdout.len() + q.stderr.len()).sum();
    println!(
        "one host: the shell pack's result here, {files} files, {bytes} bytes of raw output; store under {}",
        base.display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!();
    println!("| hosts | at once | wall | per host | CPU (this process) | CPU per host | machine CPU per host |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        for at_once in [1, 50] {
            let mut walls = Vec::new();
            let mut cpus = Vec::new();
            let mut machines = Vec::new();
            for _ in 0..runs {
                let dir = tempfile::tempdir_in(&base).unwrap();
                let (w, c, m) = rt.block_on(store_hosts(dir.path(), &one, n, at_once));
                walls.push(w);
                cpus.push(c);
                machines.push(m);
            }
            let (w, c, m) = (shared::spread(&walls).0, shared::spread(&cpus).0, shared::spread(&machines).0);
            println!(
                "| {n} | {at_once} | {w:.2} s | {:.2} ms | {c:.2} s | {:.2} ms | {:.2} ms |",
                w * 1000.0 / n as f64,
                c * 1000.0 / n as f64,
                m * 1000.0 / n as f64
            );
        }
    }
}
