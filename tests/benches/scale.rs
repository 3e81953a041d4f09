//! Benchmark: thousands of SSH hosts in one run, from a shell with the common
//! soft `ulimit -n 1024`. Brings up a namespace fleet, lowers this process's
//! soft open-files limit (the hard one stays: what a login shell has), then
//! collects every host with diffy and with `parallel-ssh`, at the same
//! concurrency, over the same ssh_config, with the same script. Prints, per
//! tool: hosts collected, hosts lost (and to what), wall time, client CPU
//! (user + system of every client process: diffy or parallel-ssh, the ssh
//! clients, their ProxyCommands) and the client's peak memory (the summed
//! resident size of the client's process tree, sampled every 200 ms).
//!
//! `cargo bench --profile dev -p diffy-tests --bench scale` (as root; needs
//! openssh-server, socat and pssh). Hosts: DIFFY_BENCH_SCALE_HOSTS=2000;
//! concurrency: DIFFY_BENCH_SCALE_CONCURRENCY=500; soft limit:
//! DIFFY_BENCH_SCALE_NOFILE=1024; runs per tool: DIFFY_BENCH_RUNS (2 here).
//! Payload: DIFFY_BENCH_SCALE_PAYLOAD=small (one query: what resource limits
//! cost is the point, and the standard pack's CPU on 2,000 hosts would take
//! the machine 20 minutes) or `shell` (the standard pack).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diffy_core::plugin::Script;
use diffy_core::{PayloadSpec, ShellPayload};
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};

mod shared;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fleet/diffy-fleet");

const SMALL: &str = "[[query]]\nname = \"ident\"\nshell = 'uname -a; id; cat /etc/machine-id'\nformat = \"lines\"\n";

fn cpu_seconds() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// The summed resident size (bytes) of `root` and its descendants.
fn tree_rss(root: u32) -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut rss: HashMap<u32, u64> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The fields after the command name (which may hold spaces).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (Some(pp), Some(pages)) =
            (f.get(1).and_then(|s| s.parse().ok()), f.get(21).and_then(|s| s.parse::<u64>().ok()))
        else {
            continue;
        };
        parent.insert(pid, pp);
        rss.insert(pid, pages * page);
    }
    rss.iter()
        .filter(|(pid, _)| {
            let mut p = **pid;
            for _ in 0..64 {
                if p == root {
                    return true;
                }
                match parent.get(&p) {
                    Some(&pp) if pp != 0 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .map(|(_, r)| *r)
        .sum()
}

struct Sample {
    wall: f64,
    cpu: f64,
    peak_rss: u64,
    ok: usize,
    lost: usize,
    why: String,
}

/// Runs `c` to its end, sampling its process tree's memory.
fn measure(mut c: Command) -> (Sample, std::process::Output) {
    let cpu = cpu_seconds();
    let t = Instant::now();
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("it starts");
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(tree_rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let out = child.wait_with_output().expect("it ends");
    let wall = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let s = Sample {
        wall,
        cpu: cpu_seconds() - cpu,
        peak_rss: peak.load(Ordering::Relaxed),
        ok: 0,
        lost: 0,
        why: String::new(),
    };
    (s, out)
}

fn fleet(args: &[&str], dir: &Path, prefix: &str) -> bool {
    Command::new(SCRIPT)
        .args(args)
        .args(["--dir", dir.to_str().unwrap(), "--prefix", prefix])
        .status()
        .is_ok_and(|s| s.success())
}

fn diffy(cfg: &Path, store: &Path, payload: &Path, concurrency: usize, n: usize) -> Sample {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diffy-under-test"));
    c.args(["collect", "bench", "--transport", "ssh", "--target", "ssh-config", "--format", "json"])
        .arg("--payload")
        .arg(payload)
        .arg("--ssh-config")
        .arg(cfg)
        .arg("--store")
        .arg(store)
        .args(["--concurrency", &concurrency.to_string(), "--deadline", "600s"]);
    let (mut s, out) = measure(c);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("a run manifest: {e}\n{}", String::from_utf8_lossy(&out.stderr));
    });
    let by = m["counts"]["by_status"].as_object().cloned().unwrap_or_default();
    s.ok = by.get("ok").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    s.lost = n - s.ok;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    // What the hosts that were not ok said (the first three).
    let mut said = Vec::new();
    if let Some(id) = m["id"].as_str() {
        for e in std::fs::read_dir(store.join("runs").join(id).join("hosts")).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("result.json")) else { continue };
            let r: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if r["status"] != "ok" && said.len() < 3 {
                said.push(format!("{}: {} {}", e.file_name().to_string_lossy(), r["status"], r["message"]));
            }
        }
    }
    s.why = format!(
        "effective concurrency {}; statuses {}{}{}",
        m["limits"]["concurrency"],
        serde_json::Value::Object(by),
        if warned.is_empty() { String::new() } else { format!("; {}", warned.join(" / ")) },
        if said.is_empty() { String::new() } else { format!("; {}", said.join(" / ")) }
    );
    s
}

fn pssh(cfg: &Path, hosts_file: &Path, script: &Path, out_dir: &Path, concurrency: usize) -> Sample {
    let mut c = Command::new("parallel-ssh");
    c.args(["-p", &concurrency.to_string(), "-t", "0", "-I"])
        .arg("-h")
        .arg(hosts_file)
        .arg("-x")
        .arg(format!("-F {}", cfg.display()))
        .arg("-o")
        .arg(out_dir.join("out"))
        .arg("-e")
        .arg(out_dir.join("err"))
        .arg("sh -s")
        .stdin(std::fs::File::open(script).unwrap());
    let (mut s, out) = measure(c);
    let text = String::from_utf8_lossy(&out.stdout);
    s.ok = text.lines().filter(|l| l.contains("[SUCCESS]")).count();
    let failures: Vec<&str> = text.lines().filter(|l| l.contains("[FAILURE]")).collect();
    // A host pssh never reached (it died first, or never started it) has no
    // line at all: lost is every host without a [SUCCESS].
    let hosts = std::fs::read_to_string(hosts_file).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    s.lost = hosts - s.ok;
    let unreported = hosts - s.ok - failures.len();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for f in &failures {
        // `[1] 12:00:00 [FAILURE] host Exited with error code 255`
        let why = f.split_once("[FAILURE]").map_or("", |(_, r)| r.trim());
        let why = why.split_once(' ').map_or(why, |(_, r)| r);
        *reasons.entry(why.to_string()).or_default() += 1;
    }
    let errs = String::from_utf8_lossy(&out.stderr);
    let emfile = errs.matches("Too many open files").count();
    s.why = format!(
        "exit {:?}; failures {reasons:?}; {unreported} hosts with no line at all{}",
        out.status.code(),
        if emfile > 0 { format!("; 'Too many open files' {emfile} times on its stderr") } else { String::new() }
    );
    s
}

fn main() {
    let root = nix::unistd::Uid::effective().is_root();
    let tools = ["parallel-ssh", "socat", "ssh", "sshd"].iter().all(|t| {
        Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
    });
    if !root || !tools {
        println!("skipping: the scale benchmark needs root and openssh-server, socat and pssh installed");
        return;
    }
    let var = |k: &str, d: usize| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let n = var("DIFFY_BENCH_SCALE_HOSTS", 2000);
    let concurrency = var("DIFFY_BENCH_SCALE_CONCURRENCY", 500);
    let nofile = var("DIFFY_BENCH_SCALE_NOFILE", 1024) as u64;
    let runs = std::env::var("DIFFY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(2usize);
    let payload_kind = std::env::var("DIFFY_BENCH_SCALE_PAYLOAD").unwrap_or_else(|_| "small".into());
    let only = std::env::var("DIFFY_BENCH_SCALE_TOOLS").ok();
    let work = tempfile::tempdir_in(shared::store_base()).unwrap();
    let spec =
        if payload_kind == "shell" { ShellPayload::pack() } else { PayloadSpec::from_toml(SMALL, "small").unwrap() };
    let payload = if payload_kind == "shell" {
        PathBuf::from("shell")
    } else {
        let p = work.path().join("payload.toml");
        std::fs::write(&p, SMALL).unwrap();
        p
    };
    let script = work.path().join("payload.sh");
    std::fs::write(&script, Script::render(&spec, Duration::from_secs(600)).unwrap().text()).unwrap();

    let prefix = format!("s{}", std::process::id() % 10000);
    let dir = PathBuf::from(format!("/srv/diffy-fleet-scale-{prefix}"));
    let t = Instant::now();
    assert!(fleet(&["up", &n.to_string()], &dir, &prefix), "the fleet comes up");
    let up = t.elapsed();
    eprintln!("{n} hosts up in {up:.1?}");
    // What a login shell has: a soft limit of `nofile`, the hard one unchanged.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, nofile.min(hard), hard).unwrap();
    let cfg = dir.join("ssh_config");
    let mut rows: Vec<(&str, Vec<Sample>)> = vec![("diffy", vec![]), ("parallel-ssh", vec![])];
    for i in 0..runs {
        // Which tool goes first alternates; DIFFY_BENCH_SCALE_TOOLS=diffy
        // (or parallel-ssh) runs one only.
        for k in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            if only.as_deref().is_some_and(|t| t != rows[k].0) {
                continue;
            }
            let s = if k == 0 {
                diffy(&cfg, &work.path().join(format!("store-{i}")), &payload, concurrency, n)
            } else {
                let out = work.path().join(format!("pssh-{i}"));
                pssh(&cfg, &dir.join("hosts.txt"), &script, &out, concurrency)
            };
            eprintln!(
                "run {}: {}: {} ok, {} lost, {:.1} s wall, {:.1} s CPU, peak {:.0} MB; {}",
                i + 1,
                rows[k].0,
                s.ok,
                s.lost,
                s.wall,
                s.cpu,
                s.peak_rss as f64 / 1e6,
                s.why
            );
            rows[k].1.push(s);
        }
    }
    // The table first: taking 2,000 hosts down takes minutes.
    println!(
        "\n{n} SSH hosts (fleet up in {:.0} s), --concurrency {concurrency} / -p {concurrency}, soft ulimit -n {nofile} (hard {hard}), payload {payload_kind}, {runs} runs each\n",
        up.as_secs_f64()
    );
    println!(
        "| tool | hosts ok (each run) | hosts lost | wall s median (min–max) | client CPU s median | client peak RSS MB median | what happened (last run) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (tool, v) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        let (w, wmin, wmax) = shared::spread(&v.iter().map(|s| s.wall).collect::<Vec<_>>());
        let (cpu, _, _) = shared::spread(&v.iter().map(|s| s.cpu).collect::<Vec<_>>());
        let (rss, _, _) = shared::spread(&v.iter().map(|s| s.peak_rss as f64 / 1e6).collect::<Vec<_>>());
        println!(
            "| {tool} | {} | {} | {w:.1} ({wmin:.1}–{wmax:.1}) | {cpu:.1} | {rss:.0} | {} |",
            v.iter().map(|s| s.ok.to_string()).collect::<Vec<_>>().join(", "),
            v.iter().map(|s| s.lost.to_string()).collect::<Vec<_>>().join(", "),
            v.last().map_or("", |s| s.why.as_str())
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    assert!(fleet(&["down"], &dir, &prefix), "the fleet goes down");
}
