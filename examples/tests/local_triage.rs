//! The example binary and library work end to end.

use std::sync::atomic::Ordering;

use diffy_examples::{FindingCounter, ListenersPayload, triage};

const PLANT: &str = r#"case "$DIFFY_HOST" in n3) printf '31337\t/dev/shm/.x/backdoor\n';; esac"#;

#[tokio::test(flavor = "multi_thread")]
async fn library_finds_the_planted_listener() {
    let dir = tempfile::tempdir().unwrap();
    let counter = FindingCounter::default();
    let hosts = ["n1", "n2", "n3", "n4", "n5", "n6"];
    let report = triage(&hosts, dir.path(), ListenersPayload { extra: PLANT.into() }, &counter).await.unwrap();
    let outliers: Vec<&str> = report.outliers().map(|h| h.host.as_str()).collect();
    assert_eq!(outliers, ["n3"]);
    assert_eq!(report.hosts[0].findings[0].row["port"], "31337");
    assert_eq!(counter.hosts.load(Ordering::Relaxed), 6);
    assert!(counter.findings.load(Ordering::Relaxed) >= 1);
}

#[test]
fn binary_prints_outliers_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_local-triage"))
        .args(["n1", "n2", "n3", "n4", "n5"])
        .env("LOCAL_TRIAGE_STORE", dir.path().join("store"))
        .env("LOCAL_TRIAGE_EXTRA", PLANT)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("n3 score "), "{stdout}");
    assert!(stdout.contains("5 hosts"), "{stdout}");
}
