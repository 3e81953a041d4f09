//! Hosts may be the attacker's, and so may files handed to diffy: nothing
//! they hold crashes diffy, reaches the terminal raw, or opens files outside
//! the store; one bad host never costs the others; evidence stays private.
//! Each test here failed before the fix it holds.

mod common;

use std::time::{Duration, Instant};

use common::{Diffy, only_run};
use diffy_core::HostStatus;

fn host_file(id: &str, user: &str) -> String {
    // An odd name with uid 0: a finding on its own, whatever else the fleet holds.
    let uid = if user == "app" { "1000" } else { "0" };
    serde_json::json!({
        "instance_id": id,
        "results": {"users": [{"username": "root", "uid": "0"}, {"username": user, "uid": uid}]}
    })
    .to_string()
}

fn fleet(d: &Diffy, n: usize) {
    for i in 1..=n {
        d.write(&format!("fleet/hosts/web-{i}.json"), &host_file(&format!("web-{i}"), "app"));
    }
}

/// What a terminal would act on: ESC, CSI, CR, DEL, C1 controls, bidi overrides.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .collect()
}

#[test]
fn host_text_reaches_the_terminal_escaped_and_shortened() {
    let d = Diffy::new();
    fleet(&d, 9);
    // A username that clears the screen, forges a report line and reverses text.
    let evil = "x\u{1b}[2J\u{1b}[31m\r\nNo outliers among 10 hosts.\u{202e}gnp.exe\u{9b}0m\u{7f}";
    d.write("fleet/hosts/web-10.json", &host_file("web-10", evil));
    let huge = "A".repeat(1 << 20);
    d.write("fleet/hosts/web-11.json", &host_file("web-11", &huge));
    let r = d.run(&["analyze", "--import", "fleet"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(raw_controls(&r.stdout), Vec::<char>::new(), "{}", r.stdout);
    assert!(r.stdout.contains(r"x\u{1b}[2J\u{1b}[31m\r\nNo outliers"), "shown escaped: {}", r.stdout);
    assert!(r.stdout.contains(r"\u{202e}gnp.exe"), "{}", r.stdout);
    assert!(!r.stdout.lines().any(|l| l.starts_with("No outliers")), "no forged line: {}", r.stdout);
    assert!(r.stdout.contains("web-11"), "{}", r.stdout);
    assert!(r.stdout.len() < 20_000, "a 1 MiB value does not make a 1 MiB report: {} bytes", r.stdout.len());
    // JSON keeps the value exactly (escaped by JSON itself), but capped for analysis.
    let j = d.run(&["analyze", "--import", "fleet", "--format", "json"]);
    assert!(j.stdout.contains(r"x\u001b[2J\u001b[31m\r\nNo outliers"), "{}", &j.stdout[..2000.min(j.stdout.len())]);
    assert!(j.stdout.len() < 200_000, "values past 64 KiB are capped: {} bytes", j.stdout.len());
    assert!(j.stdout.contains("1048576 bytes in all, sha256 "), "the cap says what it cut");
}

#[test]
fn deep_json_is_that_hosts_status_not_a_crash() {
    let d = Diffy::new();
    fleet(&d, 5);
    let deep = format!(
        "{{\"instance_id\": \"web-6\", \"results\": {{\"users\": [{{\"username\": {}1{}}}]}}}}",
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    d.write("fleet/hosts/web-6.json", &deep);
    let r = d.run(&["analyze", "--import", "fleet", "--format", "json"]);
    assert!(r.code == 0 || r.code == 1, "the others are analysed: {}\n{}", r.code, r.stderr);
    let report = r.report();
    assert_eq!(report.coverage.collected, 5);
    let bad = report.hosts.iter().find(|h| h.host == "web-6").unwrap();
    assert_eq!(bad.status, HostStatus::InvalidEvidence, "a parse problem is not a transport error");
    assert!(bad.message.as_deref().unwrap().contains("nests values deeper than 64 levels"), "{bad:?}");

    // In baseline.json it is a clear error, not an abort.
    d.write("fleet/baseline.json", &deep.replace("web-6", "golden"));
    let r = d.run(&["analyze", "--import", "fleet"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("baseline.json nests values deeper than 64 levels"), "{}", r.stderr);
}

#[test]
fn a_host_imported_twice_is_refused() {
    let d = Diffy::new();
    fleet(&d, 4);
    d.write("fleet/hosts/web-2-copy.json", &host_file("web-2", "app"));
    let r = d.run(&["analyze", "--import", "fleet"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("host web-2 is in two host files (hosts/web-2-copy.json and hosts/web-2.json)")
            || r.stderr.contains("host web-2 is in two host files (hosts/web-2.json and hosts/web-2-copy.json)"),
        "{}",
        r.stderr
    );
}

const PAYLOAD: &str = "[[query]]\nname = \"probe\"\nshell = \"echo \\\"$DIFFY_HOST\\\"; id -un\"\n";

fn collected(d: &Diffy, hosts: &[&str]) -> String {
    d.write("p.toml", PAYLOAD);
    let mut args = vec!["collect", "lab", "--payload", "p.toml"];
    for h in hosts {
        args.extend(["--host", h]);
    }
    let r = d.run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    only_run(&d.path("diffy-store"))
}

#[test]
fn one_corrupt_or_edited_host_does_not_cost_the_others() {
    let d = Diffy::new();
    let run = collected(&d, &["a", "b", "c", "e"]);
    let host_dir = |h: &str| d.path(&format!("diffy-store/runs/{run}/hosts/{h}"));
    // b: a flipped byte; c: a record edited to read outside the store.
    let raw = host_dir("b").join("probe.stdout");
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&raw, bytes).unwrap();
    let record = host_dir("c").join("result.json");
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace("\"name\": \"probe\"", "\"name\": \"../../../../../../etc/passwd\"")).unwrap();

    // Two of four hosts lost is more than the default --max-failed: exit 2,
    // with the report whole; a budget of two takes it as it is.
    let r = d.run(&["analyze", "--from", &run, "--format", "json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("2 of 4 targeted hosts were not covered"), "{}", r.stderr);
    let r = d.run(&["analyze", "--from", &run, "--format", "json", "--max-failed", "2"]);
    assert!(r.code == 0 || r.code == 1, "{}\n{}", r.code, r.stderr);
    let report = r.report();
    assert_eq!(report.coverage.collected, 2, "a and e are analysed");
    let host = |id: &str| report.hosts.iter().find(|h| h.host == id).unwrap();
    assert_eq!(host("b").status, HostStatus::InvalidEvidence);
    assert!(host("b").message.as_deref().unwrap().contains("probe.stdout: expected"), "{:?}", host("b"));
    assert_eq!(host("c").status, HostStatus::InvalidEvidence);
    assert!(host("c").message.as_deref().unwrap().contains("not a valid query name"), "{:?}", host("c"));
    assert!(!r.stdout.contains("root:x:0:0"), "nothing outside the store was read");
}

#[test]
fn evidence_is_private_and_readers_create_no_store() {
    let d = Diffy::new();
    collected(&d, &["a", "b"]);
    diffy_testkit::conformance::assert_owner_only(&d.path("diffy-store"));
    for args in [
        &["runs", "--store", "mistyped/path"][..],
        &["analyze", "--from", "20231114T221320Z-aaaaaa", "--store", "mistyped/path"][..],
    ] {
        let r = d.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("store \"mistyped/path\" not found"), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("mistyped/path does not exist"), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("a store is created by collect, baseline or analyze"), "{}", r.stderr);
        assert!(!d.path("mistyped").exists(), "{args:?} created a store");
    }
}

/// SIGTERM and SIGHUP stop a run as Ctrl-C does: the hosts that finished are
/// kept, the run is marked interrupted, the exit code is 130.
#[test]
fn sigterm_and_sighup_leave_an_interrupted_run_not_a_running_one() {
    for signal in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGHUP] {
        let d = Diffy::new();
        d.write(
            "slow.toml",
            "[[query]]\nname = \"slow\"\nshell = \"if [ \\\"$DIFFY_HOST\\\" = fast ]; then echo done; else sleep 60; fi\"\n",
        );
        let child = d
            .command(&["collect", "lab", "--payload", "slow.toml", "--host", "fast", "--host", "slow"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let fast = |d: &Diffy| {
            let runs = d.path("diffy-store/runs");
            std::fs::read_dir(&runs)
                .ok()
                .and_then(|mut e| e.next())
                .is_some_and(|e| e.unwrap().path().join("hosts/fast/result.json").exists())
        };
        let t = Instant::now();
        while !fast(&d) {
            assert!(t.elapsed() < Duration::from_secs(30), "the fast host never finished");
            std::thread::sleep(Duration::from_millis(50));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{signal}: {stderr}");
        let run = only_run(&d.path("diffy-store"));
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/run.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["state"], "interrupted", "{signal}: {manifest}");
        assert_eq!(manifest["counts"]["collected"], 1, "{signal}: what arrived is kept: {manifest}");
    }
}

/// Under a low open-files limit that cannot be raised, diffy runs fewer
/// hosts at once, says so, and loses none (before, hosts past the limit were
/// `transport_error`: "Too many open files").
#[test]
fn a_low_open_files_limit_costs_no_host() {
    let d = Diffy::new();
    d.write("p.toml", "[[query]]\nname = \"probe\"\nshell = \"sleep 0.2; echo ok\"\n");
    let mut args: Vec<String> = ["collect", "lab", "--payload", "p.toml", "--concurrency", "500", "--format", "json"]
        .map(String::from)
        .to_vec();
    for i in 1..=60 {
        args.extend(["--host".to_string(), format!("h{i}")]);
    }
    let c = d.command(&[]);
    // The same environment, through a shell that lowers both limits first.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 120 && exec \"$0\" \"$@\"")
        .arg(common::bin())
        .args(&args)
        .current_dir(d.dir.path())
        .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("500 hosts at once need more open files than the limit of 120 allows; running 14 at once"),
        "{stderr}"
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["counts"]["collected"], 60, "{m}");
    // The run keeps what ran, what was asked and why; its report says so.
    assert_eq!(m["limits"]["concurrency"], 14, "{m}");
    assert_eq!(m["limits"]["requested_concurrency"], 500, "{m}");
    let id = m["id"].as_str().unwrap();
    let report = d.run(&["analyze", "--from", id, "--format", "json"]).report();
    let run = report.run.expect("a stored run's report names it");
    assert_eq!(run.concurrency, Some(14), "{run:?}");
    assert!(run.concurrency_capped.as_deref().is_some_and(|w| w.contains("limit of 120")), "{run:?}");
    let text = d.run(&["analyze", "--from", id]);
    assert!(text.stdout.contains(", 14 HOSTS AT ONCE)"), "{}", text.stdout);
    assert!(text.stdout.contains("Concurrency: 500 hosts at once need more open files"), "{}", text.stdout);
}
