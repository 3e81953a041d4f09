//! Benchmark: what the standard shell pack costs a host, query by query, on
//! this machine and (as root) on a fleet host: wall seconds (median, min,
//! max of the runs) and the bytes each query returns. The queries added for
//! the persistence surface are marked, so the pack's cost before and after
//! them is the sum of the other rows and of all. The last lines give the
//! whole framed output, raw and after gzip and base64 (what SSM's 24,000
//! character inline output must hold).
//!
//! `cargo bench -p diffy-tests --bench pack`. Runs: DIFFY_BENCH_RUNS=5.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diffy_core::plugin::Script;
use diffy_core::{QueryCommand, ShellPayload};

#[path = "../tests/common/fleet.rs"]
mod fleet;
mod shared;

/// The queries of the persistence surface (issue 18).
const NEW: &[&str] = &["persistence", "loaded_code", "file_capabilities", "temp_files", "shadow", "hidden_processes"];

/// Runs `text` with `sh -c` where `wrap` says (here, or inside a fleet host).
fn run(wrap: &[String], text: &str) -> (Duration, usize, usize) {
    let mut c = Command::new(&wrap[0]);
    c.args(&wrap[1..]).arg(text).stdin(Stdio::null());
    let t = Instant::now();
    let out = c.output().expect("the shell runs");
    (t.elapsed(), out.stdout.len(), out.stderr.len())
}

fn table(place: &str, wrap: &[String], runs: usize) {
    let spec = ShellPayload::pack();
    // The deep pack's own query, measured after, outside the pack's totals.
    let deep = ShellPayload::deep_pack();
    let deep_only = deep.queries.iter().filter(|q| !spec.queries.iter().any(|s| s.name == q.name));
    println!("\n{place}: the standard shell pack, {runs} runs per query");
    println!("| query | new | wall median | min | max | stdout bytes | stderr bytes |");
    println!("|---|:-:|---:|---:|---:|---:|---:|");
    let (mut before, mut after, mut bytes_before, mut bytes_after) = (0.0, 0.0, 0, 0);
    for q in &spec.queries {
        let QueryCommand::Shell(text) = &q.command else { continue };
        let mut walls = Vec::new();
        let (mut out, mut err) = (0, 0);
        for _ in 0..runs {
            let (w, o, e) = run(wrap, text);
            walls.push(w.as_secs_f64());
            (out, err) = (o, e);
        }
        walls.sort_by(f64::total_cmp);
        let median = walls[walls.len() / 2];
        let new = NEW.contains(&q.name.as_str());
        after += median;
        bytes_after += out + err;
        if !new {
            before += median;
            bytes_before += out + err;
        }
        println!(
            "| {} | {} | {:.3} s | {:.3} | {:.3} | {out} | {err} |",
            q.name,
            if new { "yes" } else { "" },
            median,
            walls[0],
            walls[walls.len() - 1]
        );
    }
    println!("| **before** (without the new queries) | | {before:.3} s | | | {bytes_before} | |");
    println!("| **after** (the whole pack) | | {after:.3} s | | | {bytes_after} | |");
    for q in deep_only {
        let QueryCommand::Shell(text) = &q.command else { continue };
        let mut walls = Vec::new();
        let (mut out, mut err) = (0, 0);
        for _ in 0..runs.min(3) {
            let (w, o, e) = run(wrap, text);
            walls.push(w.as_secs_f64());
            (out, err) = (o, e);
        }
        walls.sort_by(f64::total_cmp);
        println!(
            "| {} (deep pack only, {} runs) | | {:.3} s | {:.3} | {:.3} | {out} | {err} |",
            q.name,
            walls.len(),
            walls[walls.len() / 2],
            walls[0],
            walls[walls.len() - 1]
        );
    }
    let script = Script::render(&spec, Duration::from_secs(120)).expect("the pack renders");
    // The whole script as a transport sends it: `sh -s` reading it.
    let feed = |program: &[String], input: &[u8]| -> Vec<u8> {
        let mut c = Command::new(&program[0]);
        c.args(&program[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = c.spawn().expect("it starts");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
        let out = child.wait_with_output().expect("it ends");
        let _ = writer.join();
        out.stdout
    };
    let mut shell: Vec<String> = wrap[..wrap.len() - 1].to_vec();
    shell.push("-s".into());
    let t = Instant::now();
    let framed = feed(&shell, script.text().as_bytes());
    let whole = t.elapsed();
    let packed = feed(&["sh".into(), "-c".into(), "gzip -c | base64 -w0 | wc -c".into()], &framed);
    println!(
        "whole script: {:.2} s, {} bytes framed, {} characters after gzip and base64 (SSM's inline limit: 24,000)",
        whole.as_secs_f64(),
        framed.len(),
        String::from_utf8_lossy(&packed).trim()
    );
}

fn main() {
    let runs = shared::runs();
    table("this machine (--transport local)", &["sh".into(), "-c".into()], runs);
    if fleet::unavailable().is_some() {
        eprintln!("no fleet host: {}", fleet::unavailable().unwrap());
        return;
    }
    let Some(f) = fleet::Fleet::up(1, "pak") else { return };
    let wrap: Vec<String> =
        [fleet::SCRIPT, "exec", &f.hosts[0], "--dir", f.dir.to_str().unwrap(), "--prefix", &f.prefix, "/bin/sh", "-c"]
            .map(String::from)
            .to_vec();
    table("a fleet host (namespaces, as root over nsenter)", &wrap, runs);
}
