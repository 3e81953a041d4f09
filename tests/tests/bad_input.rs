//! Bad input through the local transport: each failure is a per-host status in
//! the report, the raw bytes are kept, the run completes, nothing panics.

mod common;

use std::time::{Duration, Instant};

use common::{Diffy, only_run};
use diffy_core::{HostStatus, QueryStatus};

#[test]
fn osqueryi_missing_is_a_status_with_advice_and_kept_stderr() {
    let d = Diffy::new().env("PATH", "/usr/bin:/bin");
    let r = d.run(&["analyze", "lab", "--payload", "osquery", "--host", "a", "--host", "b", "--format", "json"]);
    assert_eq!(r.code, 2, "no host gave usable rows: trouble\n{}", r.stderr);
    assert!(r.stderr.contains("osqueryi is not installed on these hosts: use --payload shell"), "{}", r.stderr);
    let report = r.report();
    assert_eq!(report.coverage.collected, 0);
    assert_eq!(report.coverage.failed, 2);
    for h in &report.hosts {
        assert_eq!(
            h.failed_queries.len(),
            diffy_core::OsqueryPayload::pack().queries.len(),
            "every query failed on {}",
            h.host
        );
        assert!(
            h.failed_queries.iter().all(|f| f.status == QueryStatus::CommandNotFound && f.message.contains("exit 127")),
            "{h:?}"
        );
    }
    let run = only_run(&d.path("diffy-store"));
    let stderr = std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/hosts/a/processes.stderr"))).unwrap();
    assert!(stderr.contains("osqueryi") && stderr.contains("not found"), "the raw stderr is kept: {stderr}");
}

const PAYLOAD: &str = r#"
[[query]]
name = "probe"
format = "json"
shell = '''
case "$DIFFY_HOST" in
  garbage) echo "this is not json at all";;
  binary) printf '[{"v": "\377\376 raw"}]\n';;
  big) head -c 100000000 /dev/zero | tr '\0' 'a';;
  hang) sleep 600;;
  fail) echo '[]'; echo 'probe failed' >&2; exit 4;;
  *) echo '[{"v": "ok"}]';;
esac
'''

[[query]]
name = "after"
shell = "echo after"
"#;

#[test]
fn every_kind_of_bad_host_gets_its_status_and_keeps_its_bytes() {
    let d = Diffy::new();
    d.write("bad.toml", PAYLOAD);
    let hosts = ["ok1", "ok2", "ok3", "garbage", "binary", "big", "hang", "fail"];
    let mut args = vec!["analyze", "lab", "--payload", "bad.toml", "--deadline", "5s", "--format", "json"];
    for h in &hosts {
        args.extend(["--host", h]);
    }
    let t = Instant::now();
    let r = d.run(&args);
    let took = t.elapsed();
    assert!(r.code == 0 || r.code == 1, "the run completes despite bad hosts: {}\n{}", r.code, r.stderr);
    assert!(took < Duration::from_secs(60), "the hanging host does not hold the run: {took:?}");
    let report = r.report();
    assert_eq!(report.hosts.len(), hosts.len(), "every targeted host is in the report");
    let host = |id: &str| report.hosts.iter().find(|h| h.host == id).unwrap_or_else(|| panic!("no {id}"));
    let failed = |id: &str, q: &str| host(id).failed_queries.iter().find(|f| f.query == q).map(|f| f.status);

    assert_eq!(host("ok1").status, HostStatus::Ok);
    assert!(host("ok1").failed_queries.is_empty());
    assert_eq!(failed("garbage", "probe"), Some(QueryStatus::Unparseable));
    assert!(host("garbage").failed_queries[0].message.contains("not valid JSON"), "{:?}", host("garbage"));
    assert!(failed("binary", "probe").is_none(), "non-UTF-8 inside JSON is read with replacement characters");
    assert_eq!(failed("big", "probe"), Some(QueryStatus::Unparseable), "100 MB of non-JSON");
    assert_eq!(host("hang").status, HostStatus::TimedOut);
    assert_eq!(failed("hang", "probe"), Some(QueryStatus::TimedOut));
    assert_eq!(failed("hang", "after"), Some(QueryStatus::NotRun));
    assert_eq!(failed("fail", "probe"), Some(QueryStatus::NonZeroExit));
    assert!(host("fail").failed_queries[0].message.contains("exit 4: probe failed"), "{:?}", host("fail"));
    assert!(report.warnings.iter().any(|w| w.contains("were not analysed")), "{:?}", report.warnings);

    // The raw evidence is kept byte for byte, with its hash.
    let run = only_run(&d.path("diffy-store"));
    let host_dir = |h: &str| d.path(&format!("diffy-store/runs/{run}/hosts/{h}"));
    assert_eq!(std::fs::read(host_dir("binary").join("probe.stdout")).unwrap(), b"[{\"v\": \"\xff\xfe raw\"}]\n");
    assert_eq!(std::fs::metadata(host_dir("big").join("probe.stdout")).unwrap().len(), 100_000_000);
    assert_eq!(std::fs::read_to_string(host_dir("garbage").join("probe.stdout")).unwrap(), "this is not json at all\n");
    assert_eq!(std::fs::read_to_string(host_dir("fail").join("probe.stderr")).unwrap(), "probe failed\n");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(host_dir("big").join("result.json")).unwrap()).unwrap();
    assert_eq!(record["queries"][0]["stdout"]["bytes"], 100_000_000);
    assert_eq!(record["queries"][0]["stdout"]["sha256"].as_str().unwrap().len(), 64);

    // The same evidence can be analysed again from the store.
    let again = d.run(&["analyze", "--from", &run, "--format", "json"]);
    assert!(again.code == 0 || again.code == 1, "{}", again.stderr);
    assert_eq!(again.report().coverage, report.coverage);
}

#[test]
fn output_over_the_limit_is_truncated_and_kept() {
    let d = Diffy::new();
    d.write("flood.toml", "[[query]]\nname = \"flood\"\nshell = \"head -c 5000000 /dev/zero\"\n");
    let r = d.run(&[
        "collect",
        "lab",
        "--payload",
        "flood.toml",
        "--host",
        "a",
        "--host",
        "b",
        "--max-output",
        "1M",
        "--format",
        "json",
    ]);
    assert_eq!(r.code, 2, "no host collected whole: {}", r.stderr);
    let m = r.json();
    assert_eq!(m["counts"]["by_status"]["truncated"], 2, "{m}");
    let run = only_run(&d.path("diffy-store"));
    let kept: u64 = std::fs::read_dir(d.path(&format!("diffy-store/runs/{run}/hosts/a")))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(kept > 0 && kept <= 1 << 20, "what arrived is kept, up to the limit: {kept}");
}

/// A run that lost more hosts than --max-failed allows (default 10 %) is not
/// "nothing found": exit 2, saying how many, and the report's first line says
/// it too; a wider budget takes the run as it is.
#[test]
fn heavy_failure_is_trouble_not_nothing_found() {
    let d = Diffy::new();
    d.write(
        "p.toml",
        "[[query]]\nname = \"q\"\nformat = \"lines\"\nshell = 'case \"$DIFFY_HOST\" in h1|h2) sleep 30 ;; *) echo same ;; esac'\n",
    );
    let hosts: Vec<String> = (1..=10).map(|i| format!("h{i}")).collect();
    let run = |extra: &[&str]| {
        let mut args = vec!["analyze", "lab", "--payload", "p.toml", "--deadline", "2s", "--method", "cluster"];
        for h in &hosts {
            args.extend(["--host", h.as_str()]);
        }
        args.extend(extra);
        d.run(&args)
    };
    let r = run(&[]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.lines().next().unwrap().ends_with(", 2 of 10 hosts NOT COVERED)"), "{}", r.stdout);
    assert!(
        r.stderr.contains(
            "2 of 10 targeted hosts were not covered (failed or never reported), more than --max-failed allows (1)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(run(&["--max-failed", "25%"]).code, 0);
    assert_eq!(run(&["--max-failed", "2"]).code, 0);
    let bad = run(&["--max-failed", "lots"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("--max-failed \"lots\" is neither a count nor a percentage"), "{}", bad.stderr);
    let mut args = vec!["collect", "lab", "--payload", "p.toml", "--deadline", "2s"];
    for h in &hosts {
        args.extend(["--host", h.as_str()]);
    }
    let c = d.run(&args);
    assert_eq!(c.code, 2, "collect too: {}", c.stderr);
}
