//! Conformance suites: every plugin of a kind runs the same checks of its
//! trait's contract. They panic with a message on the first broken promise,
//! like `assert!`; call them from a `#[tokio::test]` of the plugin's crate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use diffy_core::plugin::{BaselineRecord, Script};
use diffy_core::run::{RunCounts, RunLimits};
use diffy_core::{
    BaselineWrite, CancellationToken, CollectEvent, CollectOptions, CollectRequest, Collection, Error, Host, HostId,
    HostResult, HostStatus, OutputFormat, PayloadSpec, Persistence, Query, QueryResult, QueryStatus, RunId, RunKind,
    RunManifest, RunState, TargetKey,
};
use futures::StreamExt;

/// A survey run manifest of `target` with no hosts, started at `started_secs`.
pub fn manifest(id: &str, target: &str, started_secs: i64) -> RunManifest {
    let payload = PayloadSpec {
        name: "conformance".into(),
        setup: None,
        queries: vec![Query::shell("q", "echo q", OutputFormat::Lines)],
        teardown: None,
    };
    RunManifest {
        id: RunId::new(id).unwrap(),
        kind: RunKind::Survey,
        target: TargetKey::new(target).unwrap(),
        incident_id: Some("IR-1".into()),
        operator: Some("tester".into()),
        tool_version: "test".into(),
        target_plugin: "static".into(),
        transport: "test".into(),
        payload_hash: payload.hash(),
        payload,
        limits: RunLimits {
            concurrency: 1,
            requested_concurrency: None,
            concurrency_capped: None,
            host_deadline_secs: 1,
            max_output_bytes: 1,
        },
        started_at: Utc.timestamp_opt(1_700_000_000 + started_secs, 0).unwrap(),
        finished_at: None,
        state: RunState::Running,
        hosts: vec![Host::named("h1").unwrap()],
        not_targeted: vec![],
        counts: RunCounts::tally(1, []),
    }
}

/// A host's result whose first query printed `stdout`.
pub fn host_result(host: &str, stdout: &[u8]) -> HostResult {
    let mut r = HostResult::failed(
        Host::named(host).unwrap(),
        HostStatus::Ok,
        "",
        Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    );
    r.message = None;
    let mut q =
        QueryResult::new("q", QueryStatus::Ok, Some(0), Bytes::copy_from_slice(stdout), Bytes::from_static(b"warn\n"));
    q.started_at = Some(Utc.timestamp_opt(1_700_000_001, 0).unwrap());
    r.queries.push(q);
    r.queries.push(QueryResult::not_run("r", "the payload did not reach this query"));
    r.unframed_stdout = Bytes::from_static(b"banner\n");
    r.transport.insert("exit_code".into(), "0".into());
    r
}

fn assert_kind<T: std::fmt::Debug>(r: Result<T, Error>, want: &str, what: &str) {
    let ok =
        matches!((&r, want), (Err(Error::AlreadyExists { .. }), "exists") | (Err(Error::NotFound { .. }), "not found"));
    assert!(ok, "{what}: expected {want}, got {r:?}");
}

/// Checks a [`Persistence`] against its contract. `store` must be empty.
pub async fn persistence(store: &dyn Persistence) {
    let name = store.name().to_string();
    // Runs: create, read back, no silent overwrite.
    let mut m = manifest("20231114T221320Z-aaaaaa", "web", 0);
    assert_kind(store.get_run(&m.id).await, "not found", "get_run of an unknown run");
    store.create_run(&m).await.unwrap_or_else(|e| panic!("{name}: create_run: {e}"));
    assert_eq!(store.get_run(&m.id).await.unwrap(), m, "{name}: a run reads back as written");
    assert_kind(store.create_run(&m).await, "exists", "create_run of an existing id");
    m.state = RunState::Complete;
    m.finished_at = Some(Utc.timestamp_opt(1_700_000_100, 0).unwrap());
    store.update_run(&m).await.unwrap();
    assert_eq!(
        store.get_run(&m.id).await.unwrap().state,
        RunState::Complete,
        "{name}: update_run replaces the manifest"
    );
    assert_kind(
        store.update_run(&manifest("20231114T221320Z-bbbbbb", "web", 0)).await,
        "not found",
        "update_run of an unknown run",
    );

    // Host evidence: byte for byte, verified, never overwritten.
    let unknown = RunId::new("20231114T221320Z-cccccc").unwrap();
    assert_kind(
        store.put_host_result(&unknown, &host_result("h1", b"x")).await,
        "not found",
        "put_host_result for an unknown run",
    );
    let mut odd: Vec<u8> = (0u8..=255).collect();
    odd.extend_from_slice(b"\n\xff\xfe not utf-8 \0 with NUL");
    let big: Vec<u8> = (0..3 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let cases: Vec<(&str, Vec<u8>)> =
        vec![("h1", odd.clone()), ("h2", Vec::new()), ("h3", big.clone()), ("web 4@x:22 ÄÖ", b"ok\n".to_vec())];
    for (h, bytes) in &cases {
        store
            .put_host_result(&m.id, &host_result(h, bytes))
            .await
            .unwrap_or_else(|e| panic!("{name}: put_host_result {h}: {e}"));
    }
    for (h, bytes) in &cases {
        let back = store.get_host_result(&m.id, &HostId::new(*h).unwrap()).await.unwrap();
        let want = host_result(h, bytes);
        assert_eq!(
            back.queries[0].stdout,
            Bytes::copy_from_slice(bytes),
            "{name}: raw stdout of {h} comes back byte for byte"
        );
        assert_eq!(back, want, "{name}: the whole result of {h} comes back as written");
        assert_eq!(back.queries[0].stdout_sha256, diffy_core::result::sha256_hex(bytes), "{name}: SHA-256 of {h}");
    }
    assert_kind(
        store.put_host_result(&m.id, &host_result("h1", b"overwrite")).await,
        "exists",
        "put_host_result twice",
    );
    assert_eq!(
        store.get_host_result(&m.id, &HostId::new("h1").unwrap()).await.unwrap().queries[0].stdout,
        Bytes::from(odd),
        "{name}: a refused overwrite leaves the evidence intact"
    );
    assert_kind(
        store.get_host_result(&m.id, &HostId::new("nope").unwrap()).await,
        "not found",
        "get_host_result of an unknown host",
    );
    let hosts: Vec<String> = store.list_host_results(&m.id).await.unwrap().iter().map(ToString::to_string).collect();
    let mut want: Vec<String> = cases.iter().map(|(h, _)| h.to_string()).collect();
    want.sort();
    assert_eq!(hosts, want, "{name}: list_host_results is sorted and complete");

    // Concurrent writers of different hosts all land.
    let run2 = manifest("20231114T221320Z-dddddd", "api", 50);
    store.create_run(&run2).await.unwrap();
    let results: Vec<_> = futures::future::join_all((0..24).map(|i| {
        let r = host_result(&format!("c{i:02}"), format!("host {i}").as_bytes());
        let id = run2.id.clone();
        async move { store.put_host_result(&id, &r).await }
    }))
    .await;
    assert!(results.iter().all(Result::is_ok), "{name}: concurrent put_host_result: {results:?}");
    assert_eq!(store.list_host_results(&run2.id).await.unwrap().len(), 24, "{name}: every concurrent write is listed");

    // Listing: oldest first, filtered by target.
    let older = manifest("20231114T221320Z-eeeeee", "web", -100);
    store.create_run(&older).await.unwrap();
    let all: Vec<String> = store.list_runs(None).await.unwrap().iter().map(|r| r.id.to_string()).collect();
    assert_eq!(
        all,
        ["20231114T221320Z-eeeeee", "20231114T221320Z-aaaaaa", "20231114T221320Z-dddddd"],
        "{name}: list_runs oldest first"
    );
    let web: BTreeSet<String> = store
        .list_runs(Some(&TargetKey::new("web").unwrap()))
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(web.len(), 2, "{name}: list_runs filters by target");

    // Baselines: absent, created, never replaced silently, replaced on request.
    let key = TargetKey::new("web").unwrap();
    assert!(store.get_baseline(&key).await.unwrap().is_none(), "{name}: no baseline at first");
    let rec = BaselineRecord {
        target: key.clone(),
        run: older.id.clone(),
        set_at: older.started_at,
        set_by: Some("t".into()),
        replaces: None,
    };
    store.put_baseline(&rec, BaselineWrite::CreateOnly).await.unwrap();
    let rec2 = BaselineRecord { run: m.id.clone(), replaces: Some(older.id.clone()), ..rec.clone() };
    assert_kind(
        store.put_baseline(&rec2, BaselineWrite::CreateOnly).await,
        "exists",
        "put_baseline CreateOnly over a baseline",
    );
    assert_eq!(store.get_baseline(&key).await.unwrap(), Some(rec), "{name}: a refused baseline leaves the old one");
    store.put_baseline(&rec2, BaselineWrite::Replace).await.unwrap();
    assert_eq!(store.get_baseline(&key).await.unwrap(), Some(rec2), "{name}: Replace replaces");
    assert!(
        store.get_baseline(&TargetKey::new("api").unwrap()).await.unwrap().is_none(),
        "{name}: baselines are per target"
    );

    // Names that would escape the store cannot even be made.
    for bad in ["..", "../x", "a/b", "a\0b", "."] {
        assert!(
            HostId::new(bad).is_err() && RunId::new(bad).is_err() && TargetKey::new(bad).is_err(),
            "{bad:?} is refused"
        );
    }
}

/// What a transport under test can do.
#[derive(Clone, Debug)]
pub struct CollectionCaps {
    /// Grace the transport needs past the deadline (connection set-up).
    pub slack: Duration,
}

impl Default for CollectionCaps {
    fn default() -> Self {
        Self { slack: Duration::from_secs(10) }
    }
}

fn spec(queries: Vec<Query>) -> Arc<PayloadSpec> {
    Arc::new(PayloadSpec { name: "conformance".into(), setup: None, queries, teardown: None })
}

async fn run_all(
    c: &dyn Collection,
    hosts: &[Host],
    spec: Arc<PayloadSpec>,
    options: CollectOptions,
    cancel: CancellationToken,
) -> (Vec<CollectEvent>, BTreeMap<String, HostResult>) {
    let script = Arc::new(Script::render(&spec, options.host_deadline).unwrap());
    let req = CollectRequest::new(hosts.to_vec(), spec, script, options, cancel);
    let events: Vec<CollectEvent> = c.collect(req).collect().await;
    let mut results = BTreeMap::new();
    for e in &events {
        if let CollectEvent::Finished(r) = e {
            assert!(
                results.insert(r.host.id.to_string(), (**r).clone()).is_none(),
                "{}: one result per host ({})",
                c.name(),
                r.host.id
            );
        }
    }
    assert_eq!(results.len(), hosts.len(), "{}: exactly one result per requested host", c.name());
    (events, results)
}

/// Checks a [`Collection`] against its contract on `hosts` (at least 3,
/// reachable, with a POSIX shell and coreutils).
pub async fn collection(c: &dyn Collection, hosts: &[Host], caps: CollectionCaps) {
    let name = c.name().to_string();
    assert!(hosts.len() >= 3, "the suite needs at least 3 hosts");

    // Every byte comes back, per query, with statuses and exit codes.
    let queries = vec![
        Query::shell("binary", r"printf 'a\000b\377\376\n==DIFFY:fake:END==\n'", OutputFormat::Lines),
        Query::shell("stderr_and_code", "echo out; echo err >&2; exit 3", OutputFormat::Lines),
        Query::shell("missing", "no-such-command-diffy", OutputFormat::Lines),
        Query::shell("large", "head -c 3000000 /dev/zero | tr '\\0' 'x'", OutputFormat::Lines),
        Query::shell("stdin_closed", "cat; echo done", OutputFormat::Lines),
    ];
    let (events, results) =
        run_all(c, hosts, spec(queries), CollectOptions::default().concurrency(2), CancellationToken::new()).await;
    for (h, r) in &results {
        assert_eq!(
            r.status,
            HostStatus::Partial,
            "{name}: {h}: partial (some queries fail by design): {:?}",
            r.message
        );
        let q = |n: &str| {
            r.queries.iter().find(|q| q.name == n).unwrap_or_else(|| panic!("{name}: {h}: no result for {n}"))
        };
        assert_eq!(
            &q("binary").stdout[..],
            b"a\0b\xff\xfe\n==DIFFY:fake:END==\n",
            "{name}: {h}: binary output kept exactly"
        );
        assert_eq!(q("binary").status, QueryStatus::Ok);
        assert_eq!(q("stderr_and_code").status, QueryStatus::NonZeroExit, "{name}: {h}");
        assert_eq!(q("stderr_and_code").exit_code, Some(3), "{name}: {h}");
        assert_eq!(&q("stderr_and_code").stderr[..], b"err\n", "{name}: {h}: stderr kept per query");
        assert_eq!(q("missing").exit_code, Some(127), "{name}: {h}: a missing command exits 127");
        assert_eq!(q("missing").status, QueryStatus::CommandNotFound, "{name}: {h}");
        assert_eq!(q("large").stdout.len(), 3_000_000, "{name}: {h}: 3 MB kept whole");
        assert_eq!(
            &q("stdin_closed").stdout[..],
            b"done\n",
            "{name}: {h}: queries get no stdin (they must not eat the script)"
        );
    }
    // Started comes before Finished, and concurrency is bounded.
    let (mut running, mut most) = (BTreeSet::new(), 0);
    for e in &events {
        match e {
            CollectEvent::Started(h) => {
                assert!(running.insert(h.to_string()), "{name}: {h} started twice");
                most = most.max(running.len());
            }
            CollectEvent::Finished(r) => {
                running.remove(r.host.id.as_str());
            }
            _ => {}
        }
    }
    assert!(most <= 2, "{name}: at most `concurrency` (2) hosts at once, saw {most}");

    // A query that hangs is stopped at the host's deadline; the others still run.
    let deadline = Duration::from_secs(3);
    let t = Instant::now();
    let queries = vec![
        Query::shell("hang", "sleep 600", OutputFormat::Lines),
        Query::shell("after", "echo after", OutputFormat::Lines),
    ];
    let opts = CollectOptions::default().host_deadline(deadline).grace(Duration::from_secs(3));
    let (_, results) = run_all(c, hosts, spec(queries), opts, CancellationToken::new()).await;
    let took = t.elapsed();
    assert!(
        took < deadline + Duration::from_secs(3) + caps.slack,
        "{name}: a hanging query is stopped by the deadline, took {took:?}"
    );
    for (h, r) in &results {
        let hang = r.queries.iter().find(|q| q.name == "hang").unwrap();
        assert_eq!(
            hang.status,
            QueryStatus::TimedOut,
            "{name}: {h}: the hanging query timed out: {:?} {:?}",
            r.status,
            r.message
        );
        let after = r.queries.iter().find(|q| q.name == "after").unwrap();
        assert_ne!(after.status, QueryStatus::Ok, "{name}: {h}: nothing runs after the host deadline passed");
    }

    // Output past the limit stops the host, marks it truncated and keeps what came.
    let queries = vec![Query::shell("flood", "head -c 5000000 /dev/zero", OutputFormat::Lines)];
    let opts = CollectOptions::default().max_output_bytes(1 << 20);
    let (_, results) = run_all(c, &hosts[..1], spec(queries), opts, CancellationToken::new()).await;
    let r = results.values().next().unwrap();
    assert_eq!(r.status, HostStatus::Truncated, "{name}: over the output limit: {:?}", r.message);
    assert!(
        r.raw_len() > 0 && r.raw_len() <= 1 << 20,
        "{name}: what arrived is kept, up to the limit ({})",
        r.raw_len()
    );

    // Cancellation: every host still gets a result, promptly.
    let marker = format!("diffy-conformance-{}", std::process::id());
    let cancel = CancellationToken::new();
    let queries = vec![Query::shell("slow", format!("sleep 600 # {marker}"), OutputFormat::Lines)];
    let opts = CollectOptions::default().concurrency(1).host_deadline(Duration::from_secs(600));
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        trigger.cancel();
    });
    let t = Instant::now();
    let (_, results) = run_all(c, hosts, spec(queries), opts, cancel).await;
    assert!(t.elapsed() < Duration::from_secs(10) + caps.slack, "{name}: cancellation is prompt ({:?})", t.elapsed());
    assert!(results.values().all(|r| r.status == HostStatus::Cancelled), "{name}: cancelled hosts say so");

    // Nothing the payload started is left running on any host.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let check = format!("ps -eo args | grep -c '[s]leep 600 # {marker}' || true");
    let (_, results) = run_all(
        c,
        hosts,
        spec(vec![Query::shell("leftovers", check, OutputFormat::Lines)]),
        CollectOptions::default(),
        CancellationToken::new(),
    )
    .await;
    for (h, r) in &results {
        let q = &r.queries[0];
        assert_eq!(q.status, QueryStatus::Ok, "{name}: {h}: {:?}", r.message);
        assert_eq!(
            String::from_utf8_lossy(&q.stdout).trim(),
            "0",
            "{name}: {h}: cancelled queries leave no process behind"
        );
    }
}

/// Checks that `store` distrusts its own records when it reads them: a host
/// record edited (by whoever can write to the store) so that a query is named
/// `../../../outside` must be [`Error::Corrupt`], never a file or object read
/// outside the host's evidence. `rename_query(run, host, from, to)` edits the
/// stored record of `host` in `run`, replacing the query name `from` with
/// `to`, as such an editor would. `store` may hold other runs.
pub async fn edited_records<F>(store: &dyn Persistence, rename_query: F)
where
    F: AsyncFnOnce(RunId, HostId, String, String),
{
    let name = store.name().to_string();
    let m = manifest("20231114T235959Z-eeeeee", "edited", 7);
    store.create_run(&m).await.unwrap_or_else(|e| panic!("{name}: create_run: {e}"));
    let host = HostId::new("h-edit").unwrap();
    store.put_host_result(&m.id, &host_result("h-edit", b"kept\n")).await.unwrap();
    assert!(store.get_host_result(&m.id, &host).await.is_ok(), "{name}: the record reads back before it is edited");
    rename_query(m.id.clone(), host.clone(), "q".into(), "../../../outside".into()).await;
    match store.get_host_result(&m.id, &host).await {
        Err(Error::Corrupt { message, .. }) => {
            assert!(message.contains("not a valid query name"), "{name}: {message}");
        }
        other => panic!("{name}: a record naming a query ../../../outside must be corrupt, got {other:?}"),
    }
}

/// Checks that everything under `root` is its owner's only (directories
/// 0700, files 0600), as evidence must be; returns how many entries it saw.
pub fn assert_owner_only(root: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is a directory others can read", p.display());
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{} is a file others can read", p.display());
        }
        seen += 1;
    }
    seen
}
