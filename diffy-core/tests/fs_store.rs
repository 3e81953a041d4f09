//! The filesystem store runs the persistence conformance suite, and keeps its
//! own promises: tampering is detected, temporary files are invisible, and a
//! directory that is not a store is not used.

use diffy_core::{Error, FsStore, HostId, Persistence, RunId};

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("store")).unwrap();
    diffy_testkit::conformance::persistence(&store).await;
}

#[tokio::test]
async fn tampered_evidence_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    diffy_testkit::conformance::persistence(&store).await;
    let run = RunId::new("20231114T221320Z-aaaaaa").unwrap();
    let host = HostId::new("h1").unwrap();
    let raw = store.host_dir(&run, &host).unwrap().join("q.stdout");
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&raw, bytes).unwrap();
    let err = store.get_host_result(&run, &host).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("q.stdout: expected"), "{err}");
}

#[tokio::test]
async fn temporary_files_are_invisible_and_foreign_dirs_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    diffy_testkit::conformance::persistence(&store).await;
    let run = RunId::new("20231114T221320Z-aaaaaa").unwrap();
    // A writer that died mid-way leaves a dot-directory behind.
    std::fs::create_dir(dir.path().join("runs").join(run.as_str()).join("hosts").join(".h9.tmp")).unwrap();
    let hosts = store.list_host_results(&run).await.unwrap();
    assert!(hosts.iter().all(|h| !h.as_str().starts_with('.')), "{hosts:?}");

    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let err = FsStore::open(foreign.path()).unwrap_err();
    assert!(err.to_string().contains("is not a Diffy store"), "{err}");
    assert_eq!(err.help().unwrap(), "choose an empty or new directory with --store");
}

#[tokio::test]
async fn an_edited_record_opens_nothing_outside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("store")).unwrap();
    // What an edited record would make a trusting store read.
    std::fs::write(dir.path().join("outside.stdout"), "not evidence").unwrap();
    diffy_testkit::conformance::edited_records(&store, async |run, host, from, to| {
        let record = store.host_dir(&run, &host).unwrap().join("result.json");
        let text = std::fs::read_to_string(&record).unwrap();
        let edited = text.replace(&format!("\"name\": \"{from}\""), &format!("\"name\": \"{to}\""));
        assert_ne!(edited, text, "the record names the query");
        std::fs::write(&record, edited).unwrap();
    })
    .await;
}

#[tokio::test]
async fn evidence_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = FsStore::open(&root).unwrap();
    diffy_testkit::conformance::persistence(&store).await;
    let seen = diffy_testkit::conformance::assert_owner_only(&root);
    assert!(seen > 10, "the suite wrote runs, hosts and baselines: {seen}");
}

#[tokio::test]
async fn a_missing_store_is_not_created_by_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let err = FsStore::open_existing(dir.path().join("typo")).unwrap_err();
    assert!(matches!(err, Error::NotFound { what: "store", .. }), "{err}");
    assert!(!dir.path().join("typo").exists());
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = FsStore::open_existing(dir.path()).unwrap_err();
    assert!(err.help().unwrap().contains("is not a Diffy store"), "{err:?}");
    FsStore::open(dir.path().join("store")).unwrap();
    FsStore::open_existing(dir.path().join("store")).unwrap();
}
