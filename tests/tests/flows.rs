//! Whole workflows through the real binary and the local transport: baseline,
//! novelty over time, and a run interrupted with Ctrl-C.

mod common;

use std::time::{Duration, Instant};

use common::{Diffy, only_run};
use diffy_core::report::{FindingKind, Method};

/// A payload whose hosts report the lines of `$STATE/<host>`, so a test can
/// change what each host shows between runs.
const STATE_PAYLOAD: &str = r#"
[[query]]
name = "services"
shell = 'cat "$STATE/$DIFFY_HOST"'
format = "lines"
"#;

fn fleet(d: &Diffy, hosts: &[&str], lines: &[&str]) {
    for h in hosts {
        d.write(&format!("state/{h}"), &(lines.join("\n") + "\n"));
    }
}

fn host_args<'a>(hosts: &[&'a str]) -> Vec<&'a str> {
    hosts.iter().flat_map(|h| ["--host", *h]).collect()
}

#[test]
fn baseline_finds_added_removed_and_drift() {
    let d = Diffy::new();
    let state = d.path("state");
    let d = d.env("STATE", state.to_str().unwrap());
    d.write("p.toml", STATE_PAYLOAD);
    let hosts = ["h1", "h2", "h3", "h4", "h5", "h6"];
    fleet(&d, &hosts, &["sshd", "cron", "nginx"]);
    let mut args = vec!["baseline", "lab", "--payload", "p.toml"];
    args.extend(host_args(&hosts[..2]));
    let b = d.run(&args);
    assert_eq!(b.code, 0, "{}", b.stderr);

    // Later: every host gained an agent (drift), h4 gained a backdoor, h5 lost nginx.
    fleet(&d, &hosts, &["sshd", "cron", "nginx", "new-agent"]);
    d.write("state/h4", "sshd\ncron\nnginx\nnew-agent\n/tmp/.x/backdoor -l 4444\n");
    d.write("state/h5", "sshd\ncron\nnew-agent\n");
    let mut args = vec!["analyze", "lab", "--payload", "p.toml", "--method", "baseline", "--format", "json"];
    args.extend(host_args(&hosts));
    let r = d.run(&args);
    let report = r.report();
    assert_eq!(report.methods, [Method::Baseline]);
    let prov = report.baseline.as_ref().unwrap();
    assert_eq!(prov.hosts, ["h1", "h2"], "provenance names the clean hosts");
    assert_eq!(prov.min_hosts, 2, "with two clean hosts, a row must be on both");
    let h4 = report.hosts.iter().find(|h| h.host == "h4").unwrap();
    let added = h4.findings.iter().find(|f| f.kind == FindingKind::Added).expect("h4 has an added row");
    assert_eq!(added.row["line"], "/tmp/.x/backdoor -l 4444");
    assert_eq!(added.methods, [Method::Baseline]);
    let h5 = report.hosts.iter().find(|h| h.host == "h5").unwrap();
    assert!(h5.findings.iter().any(|f| f.kind == FindingKind::Removed && f.row["line"] == "nginx"), "{h5:#?}");
    let drift = report.drift.iter().find(|f| f.row["line"] == "new-agent").expect("fleet-wide addition is drift");
    assert_eq!((drift.prevalence.hosts, drift.prevalence.of), (6, 6));
    assert!(
        report
            .hosts
            .iter()
            .all(|h| h.findings.iter().all(|f| f.row.get("line").map(String::as_str) != Some("new-agent"))),
        "drift is not repeated per host"
    );
    assert_eq!(report.hosts[0].host, "h4", "the backdoor ranks first");
}

#[test]
fn novelty_marks_what_the_group_never_showed() {
    let d = Diffy::new();
    let state = d.path("state");
    let d = d.env("STATE", state.to_str().unwrap());
    d.write("p.toml", STATE_PAYLOAD);
    let hosts = ["h1", "h2", "h3", "h4", "h5"];
    fleet(&d, &hosts, &["sshd", "cron"]);
    for _ in 0..2 {
        let mut args = vec!["collect", "lab", "--payload", "p.toml"];
        args.extend(host_args(&hosts));
        assert_eq!(d.run(&args).code, 0);
    }
    d.write("state/h3", "sshd\ncron\nminer --pool stratum+tcp://pool.example:3333\n");
    let mut args = vec!["analyze", "lab", "--payload", "p.toml", "--format", "json"];
    args.extend(host_args(&hosts));
    let r = d.run(&args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.report();
    assert_eq!(report.methods, [Method::Cluster, Method::Novelty], "novelty is on by default once there is history");
    let h = report.history.as_ref().unwrap();
    assert_eq!((h.days, h.runs), (30, 2));
    let h3 = &report.hosts[0];
    assert_eq!(h3.host, "h3");
    let f = &h3.findings[0];
    assert_eq!(f.methods, [Method::Cluster, Method::Novelty], "{f:?}");
    assert!(f.explanation.contains("first seen"), "{}", f.explanation);
    assert!(f.indicators.iter().any(|i| i.contains("cryptominer")), "{f:?}");
}

#[test]
fn ctrl_c_keeps_what_arrived_and_marks_the_run_interrupted() {
    let d = Diffy::new();
    let marker = format!("diffy-test-{}", std::process::id());
    d.write(
        "slow.toml",
        &format!("[[query]]\nname = \"slow\"\nshell = '''case \"$DIFFY_HOST\" in h1) echo fast;; *) sleep 600 # {marker}\n;; esac'''\n"),
    );
    let child = d
        .command(&[
            "collect",
            "lab",
            "--payload",
            "slow.toml",
            "--concurrency",
            "1",
            "--deadline",
            "10m",
            "--host",
            "h1",
            "--host",
            "h2",
            "--host",
            "h3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let store = d.path("diffy-store");
    // Wait until h1's evidence is stored and h2 is running.
    let t = Instant::now();
    loop {
        let stored = std::fs::read_dir(store.join("runs"))
            .ok()
            .and_then(|mut r| r.next())
            .map(|e| e.unwrap().path().join("hosts/h1/result.json"));
        if stored.is_some_and(|p| p.exists()) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "h1 never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(15), "Ctrl-C stops the run promptly: {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("what arrived is kept"));
    let run = only_run(&store);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.join(format!("runs/{run}/run.json"))).unwrap()).unwrap();
    assert_eq!(manifest["state"], "interrupted");
    assert_eq!(std::fs::read_to_string(store.join(format!("runs/{run}/hosts/h1/slow.stdout"))).unwrap(), "fast\n");
    assert_eq!(manifest["counts"]["by_status"]["cancelled"], 2, "{manifest}");
    // Nothing is left running.
    std::thread::sleep(Duration::from_millis(500));
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains(&marker), "no payload process is left behind");
    // The interrupted run can still be analysed, and says it is incomplete.
    let r = d.run(&["analyze", "--from", &run, "--format", "json"]);
    let report = r.report();
    assert_eq!(report.run.unwrap().state, diffy_core::RunState::Interrupted);
    assert_eq!(report.coverage.failed, 2);
}

/// A baseline is refused from hosts that were outliers of the target's latest
/// run, naming them, unless `--force`; from other hosts it is taken.
#[test]
fn a_baseline_is_not_taken_from_the_latest_runs_outliers() {
    let d = Diffy::new();
    let state = d.path("state");
    let d = d.env("STATE", state.to_str().unwrap());
    d.write("p.toml", &STATE_PAYLOAD.replace("format = \"lines\"", "format = \"lines\"\nweight = 3.0"));
    let hosts = ["h1", "h2", "h3", "h4", "h5", "h6"];
    fleet(&d, &hosts, &["sshd", "cron", "nginx"]);
    d.write("state/h4", "sshd\ncron\nnginx\n/tmp/.x/backdoor -l 4444\n");
    let mut args = vec!["analyze", "lab", "--payload", "p.toml", "--method", "cluster"];
    args.extend(host_args(&hosts));
    let r = d.run(&args);
    assert_eq!(r.code, 1, "h4 stands out: {}\n{}", r.stdout, r.stderr);

    let mut args = vec!["baseline", "lab", "--payload", "p.toml"];
    args.extend(host_args(&["h1", "h4"]));
    let r = d.run(&args);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("1 of the hosts to take the baseline from was one of the outliers of run"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(": h4;"), "names the host: {}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    // No baseline was set: the next one needs no --replace.

    let mut args = vec!["baseline", "lab", "--payload", "p.toml"];
    args.extend(host_args(&["h1", "h2"]));
    let r = d.run(&args);
    assert_eq!(r.code, 0, "clean hosts: {}", r.stderr);
    assert!(r.stdout.contains("Taken from 2 hosts: h1, h2."), "{}", r.stdout);

    let mut args = vec!["baseline", "lab", "--payload", "p.toml", "--replace", "--force"];
    args.extend(host_args(&["h1", "h4"]));
    let r = d.run(&args);
    assert_eq!(r.code, 0, "--force takes it anyway: {}", r.stderr);
    assert!(r.stdout.contains("Taken from 2 hosts: h1, h4."), "{}", r.stdout);
}
