//! Benchmark: `diffy analyze --import` end to end (the real binary, JSON
//! report written to /dev/null) on simulated fleets of about 300 rows per host
//! (about 58 KB of JSON per host). Prints a table of wall time and peak RSS.
//!
//! `cargo bench -p diffy-tests --bench import`
//! Sizes and repetitions: DIFFY_BENCH_SIZES=1000,10000 DIFFY_BENCH_RUNS=5.
//! Fleets are generated once into target/bench-fleets/.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diffy_testkit::fleet::{FleetSpec, write_fleet};
use nix::sys::resource::{UsageWho, getrusage};

mod shared;

fn fleet(n: usize) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-fleets").join(n.to_string());
    if !dir.join("truth.json").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        write_fleet(&FleetSpec::new(n, 42), &dir, false).expect("the fleet is written");
        println!("generated {n} hosts in {:.1?} at {}", t.elapsed(), dir.display());
    }
    dir
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("hosts")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn main() {
    let sizes = shared::sizes("DIFFY_BENCH_SIZES", "1000,10000");
    let runs = shared::runs();
    let bin = env!("CARGO_BIN_EXE_diffy-under-test");
    let mut rows = Vec::new();
    // Ascending sizes: the children's peak RSS is a maximum over all runs so far.
    let mut sizes = sizes;
    sizes.sort_unstable();
    for n in sizes {
        let dir = fleet(n);
        let bytes = dir_bytes(&dir);
        // One warm-up run brings the files into the page cache.
        let mut times: Vec<Duration> = Vec::new();
        for i in 0..=runs {
            let t = Instant::now();
            let status = Command::new(bin)
                .args(["analyze", "--import"])
                .arg(&dir)
                .args(["--format", "json"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status()
                .expect("diffy runs");
            let took = t.elapsed();
            assert_eq!(status.code(), Some(1), "the fleet has outliers, so diffy exits 1");
            if i > 0 {
                times.push(took);
            }
        }
        times.sort();
        let rss_kib = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage").max_rss();
        let median = times[times.len() / 2];
        rows.push((n, bytes, median, times[0], times[times.len() - 1], rss_kib));
    }
    println!();
    println!(
        "diffy analyze --import (cluster + cohorts + scoring, JSON report), {runs} runs after a warm-up, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| hosts | JSON | wall median | wall min | wall max | µs per host | peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (n, bytes, median, min, max, rss) in rows {
        println!(
            "| {n} | {:.0} MB | {:.2} s | {:.2} s | {:.2} s | {:.0} | {:.0} MB |",
            bytes as f64 / 1e6,
            median.as_secs_f64(),
            min.as_secs_f64(),
            max.as_secs_f64(),
            median.as_secs_f64() * 1e6 / n as f64,
            rss as f64 / 1024.0
        );
    }
}
