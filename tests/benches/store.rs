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

use std::sync::Arc;
use std::time::Instant;

use diffy_core::{FsStore, Host, HostId, HostResult, Persistence, RunId};
use futures::StreamExt;
use nix::sys::resource::{UsageWho, getrusage};

mod shared;

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
    store.create_run(&shared::manifest(&id, n)).await.unwrap();
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
    let one = shared::real_result();
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
