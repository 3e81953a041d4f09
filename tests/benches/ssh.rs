//! Benchmark: a full collection of the standard shell pack over SSH, on the
//! namespace fleet, side by side with `parallel-ssh -p 50` running the same
//! script over the same hosts and settings, with the floor of one key
//! exchange per host (`ssh HOST true`, 50 at a time), and with bare ssh
//! running the payload (`ssh HOST sh -s < script`, 50 at a time: what running
//! it costs any tool before it keeps anything). Prints a table of wall
//! time, client CPU (user + system of every client process: diffy or
//! parallel-ssh, the ssh clients, their ProxyCommands) and the CPU of the
//! whole machine, which also runs the test hosts' sshd and payloads: on a
//! small machine that is what bounds the wall time.
//!
//! `cargo bench -p diffy-tests --bench ssh` (as root; needs openssh-server,
//! socat and pssh). Sizes: DIFFY_BENCH_SSH_SIZES=100,200. Runs per cell:
//! DIFFY_BENCH_RUNS=5 (medians are shown; the runs interleave, and each
//! is printed on stderr). diffy's stores and parallel-ssh's outputs go to a
//! temporary directory under DIFFY_BENCH_STORE_DIR (default: the workspace's
//! target/); both count in the client CPU, so the filesystem matters.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diffy_core::ShellPayload;
use diffy_core::plugin::Script;
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

mod shared;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fleet/diffy-fleet");
const PARALLEL: usize = 50;

fn cpu_seconds() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// Reaps every exited descendant handed to us (we are a subreaper), so that
/// their CPU time is counted.
fn reap() {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() > until {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => {}
            Err(_) => return, // no children left
        }
    }
}

/// One measured run.
#[derive(Clone, Copy)]
struct Sample {
    /// Wall seconds.
    wall: f64,
    /// User + system seconds of the client processes.
    cpu: f64,
    /// Busy seconds of the whole machine: clients and test hosts.
    machine: f64,
}

/// Runs `f` and measures it.
fn measure(f: impl FnOnce()) -> Sample {
    reap();
    let (cpu, machine) = (cpu_seconds(), shared::machine_seconds());
    let t = Instant::now();
    f();
    let wall = t.elapsed().as_secs_f64();
    reap();
    Sample { wall, cpu: cpu_seconds() - cpu, machine: shared::machine_seconds() - machine }
}

fn fleet(args: &[&str], dir: &Path, prefix: &str) -> bool {
    Command::new(SCRIPT)
        .args(args)
        .args(["--dir", dir.to_str().unwrap(), "--prefix", prefix])
        .status()
        .is_ok_and(|s| s.success())
}

fn hosts(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("hosts.txt")).unwrap().lines().map(str::to_string).collect()
}

/// Runs `ssh HOST COMMAND` on every host, 50 at a time, with `stdin` (a file)
/// or nothing as its input. `true` is the floor of one key exchange per host;
/// `sh -s` with the payload's script is what any tool running the payload
/// over ssh costs, before it stores anything.
fn bare_ssh(cfg: &Path, hosts: &[String], command: &str, stdin: Option<&Path>) {
    for chunk in hosts.chunks(PARALLEL) {
        let children: Vec<_> = chunk
            .iter()
            .map(|h| {
                let input = stdin.map_or_else(Stdio::null, |f| std::fs::File::open(f).unwrap().into());
                Command::new("ssh")
                    .arg("-F")
                    .arg(cfg)
                    .args(["-T", h, command])
                    .stdin(input)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("ssh runs")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "ssh {command} failed");
        }
    }
}

fn diffy(cfg: &Path, store: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffy-under-test"))
        .args([
            "collect",
            "bench",
            "--transport",
            "ssh",
            "--target",
            "ssh-config",
            "--payload",
            "shell",
            "--format",
            "json",
        ])
        .arg("--ssh-config")
        .arg(cfg)
        .arg("--store")
        .arg(store)
        .args(["--concurrency", &PARALLEL.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("diffy runs");
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a run manifest");
    assert_eq!(m["counts"]["by_status"]["ok"], m["counts"]["targeted"], "every host collected: {}", m["counts"]);
}

fn pssh(cfg: &Path, hosts_file: &Path, script: &Path, out: &Path) {
    let status = Command::new("parallel-ssh")
        .args(["-p", &PARALLEL.to_string(), "-t", "0", "-I"])
        .arg("-h")
        .arg(hosts_file)
        .arg("-x")
        .arg(format!("-F {}", cfg.display()))
        .arg("-o")
        .arg(out.join("out"))
        .arg("-e")
        .arg(out.join("err"))
        .arg("sh -s")
        .stdin(std::fs::File::open(script).unwrap())
        .stdout(Stdio::null())
        .status()
        .expect("parallel-ssh runs");
    assert!(status.success(), "parallel-ssh reported failures");
}

/// The median of each measure over runs (each on its own).
fn medians(v: &[Sample]) -> Sample {
    let median = |of: fn(&Sample) -> f64| shared::spread(&v.iter().map(of).collect::<Vec<_>>()).0;
    Sample { wall: median(|s| s.wall), cpu: median(|s| s.cpu), machine: median(|s| s.machine) }
}

fn main() {
    let root = nix::unistd::Uid::effective().is_root();
    let tools = ["parallel-ssh", "socat", "ssh"].iter().all(|t| {
        Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
    });
    if !root || !tools {
        println!("skipping: the SSH benchmark needs root and openssh-server, socat and pssh installed");
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).expect("become a subreaper");
    let sizes = shared::sizes("DIFFY_BENCH_SSH_SIZES", "100,200");
    let runs = shared::runs();
    let work = tempfile::tempdir_in(shared::store_base()).unwrap();
    println!("diffy's stores and parallel-ssh's outputs under {}", work.path().display());
    let script = work.path().join("payload.sh");
    let rendered = Script::render(&ShellPayload::pack(), Duration::from_secs(120)).unwrap();
    std::fs::write(&script, rendered.text()).unwrap();
    let mut rows = Vec::new();
    for n in sizes {
        let prefix = format!("b{}", std::process::id() % 10000);
        let dir = PathBuf::from(format!("/srv/diffy-fleet-bench-{prefix}"));
        let t = Instant::now();
        assert!(fleet(&["up", &n.to_string()], &dir, &prefix), "the fleet comes up");
        eprintln!("{n} hosts up in {:.1?}", t.elapsed());
        let cfg_default = dir.join("ssh_config");
        let cfg_curve = dir.join("ssh_config_curve25519");
        let text = std::fs::read_to_string(&cfg_default).unwrap();
        std::fs::write(
            &cfg_curve,
            text.replace("  LogLevel ERROR", "  LogLevel ERROR\n  KexAlgorithms curve25519-sha256"),
        )
        .unwrap();
        let list = hosts(&dir);
        let kexes = [("default (sntrup761x25519)", &cfg_default), ("curve25519-sha256", &cfg_curve)];
        // Runs interleave (the floor, bare ssh with the payload, then diffy and
        // parallel-ssh, for each key exchange, then again), so that a slow
        // spell of the machine hits all alike.
        let mut cells: Vec<[Vec<Sample>; 4]> = kexes.iter().map(|_| [vec![], vec![], vec![], vec![]]).collect();
        for i in 0..runs {
            for (k, (kex, cfg)) in kexes.iter().enumerate() {
                let f = measure(|| bare_ssh(cfg, &list, "true", None));
                let b = measure(|| bare_ssh(cfg, &list, "sh -s", Some(&script)));
                let store = work.path().join(format!("store-{n}-{i}-{k}"));
                let out = work.path().join(format!("pssh-{n}-{i}-{k}"));
                let run_diffy = || measure(|| diffy(cfg, &store));
                let run_pssh = || measure(|| pssh(cfg, &dir.join("hosts.txt"), &script, &out));
                // Which tool goes first alternates, so that neither always
                // follows the floor's run.
                let (d, p) = if i % 2 == 0 {
                    let d = run_diffy();
                    (d, run_pssh())
                } else {
                    let p = run_pssh();
                    (run_diffy(), p)
                };
                eprintln!(
                    "{n} hosts, {kex}, run {}: floor {:.2} s CPU; bare ssh with the payload {:.2} s CPU; diffy {:.2} s wall, {:.2} s CPU, machine {:.2} s; parallel-ssh {:.2} s wall, {:.2} s CPU, machine {:.2} s",
                    i + 1,
                    f.cpu,
                    b.cpu,
                    d.wall,
                    d.cpu,
                    d.machine,
                    p.wall,
                    p.cpu,
                    p.machine
                );
                cells[k][0].push(f);
                cells[k][1].push(b);
                cells[k][2].push(d);
                cells[k][3].push(p);
            }
        }
        for ((kex, _), [f, b, d, p]) in kexes.iter().zip(cells) {
            let ratios: Vec<f64> = f.iter().zip(&d).map(|(f, d)| d.cpu / f.cpu).collect();
            let over_bare: Vec<f64> = b.iter().zip(&d).map(|(b, d)| d.cpu / b.cpu).collect();
            let faster = d.iter().zip(&p).filter(|(d, p)| d.wall < p.wall).count();
            rows.push(Row {
                hosts: n,
                kex,
                floor_cpu: medians(&f).cpu,
                bare_cpu: medians(&b).cpu,
                diffy: medians(&d),
                pssh: medians(&p),
                faster,
                ratio: shared::spread(&ratios),
                over_bare: shared::spread(&over_bare),
            });
        }
        assert!(fleet(&["down"], &dir, &prefix), "the fleet goes down");
    }
    println!();
    println!(
        "Collection of the standard shell pack over SSH, {PARALLEL} hosts at a time, median of {runs} runs, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| hosts | key exchange | diffy wall | parallel-ssh wall | runs diffy was faster | diffy client CPU | parallel-ssh client CPU | floor CPU (ssh true) | bare ssh with the payload CPU | diffy CPU / floor (median, range) | diffy CPU / bare ssh (median, range) | machine CPU diffy / parallel-ssh |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (ratio, low, high) = r.ratio;
        let (over, over_low, over_high) = r.over_bare;
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {} of {runs} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {ratio:.2} ({low:.2}–{high:.2}) | {over:.2} ({over_low:.2}–{over_high:.2}) | {:.1} s / {:.1} s |",
            r.hosts,
            r.kex,
            r.diffy.wall,
            r.pssh.wall,
            r.faster,
            r.diffy.cpu,
            r.pssh.cpu,
            r.floor_cpu,
            r.bare_cpu,
            r.diffy.machine,
            r.pssh.machine,
        );
    }
}

/// One line of the table: medians over the runs.
struct Row {
    hosts: usize,
    kex: &'static str,
    floor_cpu: f64,
    bare_cpu: f64,
    diffy: Sample,
    pssh: Sample,
    faster: usize,
    ratio: (f64, f64, f64),
    over_bare: (f64, f64, f64),
}
