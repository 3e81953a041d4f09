//! The SSM Run Command transport against the project's scriptable SSM
//! endpoint (diffy_testkit::ssm_endpoint): the real AWS SDK over HTTP on
//! loopback, commands really executed once per instance id.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::Diffy;
use common::fleet::Fleet;
use diffy_core::plugin::Script;
use diffy_core::{CollectEvent, CollectOptions, CollectRequest, Collection, Host, HostStatus, PayloadSpec};
use diffy_testkit::ssm_endpoint::{EndpointOptions, Fault, SsmEndpoint};
use diffy_transport_ssm::{SsmOptions, SsmTransport};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

fn instance(i: usize) -> String {
    format!("i-{i:017x}")
}

/// An SDK client for the endpoint, as `SsmTransport::from_env` builds it
/// (adaptive retry), with test credentials.
fn client(url: &str) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ssm::config::Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(
            aws_sdk_ssm::config::retry::RetryConfig::adaptive()
                .with_max_attempts(10)
                .with_initial_backoff(Duration::from_millis(100)),
        )
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

fn payload() -> PayloadSpec {
    let text = r#"
name = "ident"
[[query]]
name = "whoami"
shell = 'echo "instance $DIFFY_INSTANCE_ID"; printf "caf\351\n"'
format = "lines"
"#;
    PayloadSpec::from_toml(text, "ident").unwrap()
}

async fn collect(
    t: &SsmTransport,
    hosts: Vec<Host>,
    spec: PayloadSpec,
    deadline: Duration,
) -> Vec<diffy_core::HostResult> {
    common::collect_results(t, hosts, spec, deadline).await
}

/// The collection conformance suite every transport runs, over SSM: each
/// instance's commands run on this machine through the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_over_ssm() {
    let endpoint = SsmEndpoint::start(EndpointOptions::default()).await.unwrap();
    let t = SsmTransport::new(client(&endpoint.url()), SsmOptions::default().poll_interval(Duration::from_millis(300)));
    let hosts: Vec<Host> = (1..=3).map(|i| Host::named(&instance(i)).unwrap()).collect();
    diffy_testkit::conformance::collection(&t, &hosts, diffy_testkit::conformance::CollectionCaps::default()).await;
    assert_eq!(endpoint.unfinished(), 0, "nothing is left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_twenty_instances_take_three_sends_and_one_fetch_each_under_throttling() {
    let endpoint = SsmEndpoint::start(EndpointOptions {
        visible_after: Duration::from_millis(1500),
        pending_for: Duration::from_millis(500),
        throttle_rps: Some(10.0),
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let options = SsmOptions::default()
        .comment(format!("diffy IR-1234 {}", "x".repeat(200)))
        .poll_interval(Duration::from_millis(500));
    let t = SsmTransport::new(client(&endpoint.url()), options);
    let hosts: Vec<Host> = (1..=120).map(|i| Host::named(&instance(i)).unwrap()).collect();
    let results = collect(&t, hosts, payload(), Duration::from_secs(30)).await;

    assert_eq!(results.len(), 120);
    for r in &results {
        assert_eq!(r.status, HostStatus::Ok, "{}: {:?}", r.host.id, r.message);
        let out = &r.queries[0].stdout;
        let want = format!("instance {}\ncaf\u{fffd}\n", r.host.id);
        assert_eq!(String::from_utf8_lossy(out), want, "each instance ran the payload itself");
        assert!(
            r.transport["ssm.command_id"].len() > 10 && r.transport["ssm.status"] == "Success",
            "{:?}",
            r.transport
        );
    }
    let calls = endpoint.calls();
    assert_eq!(calls.of("SendCommand"), 3 + calls.throttled.get("SendCommand").copied().unwrap_or(0), "{calls:?}");
    assert_eq!(calls.sent_instances, 120, "{calls:?}");
    let gets = calls.of("GetCommandInvocation") - calls.throttled.get("GetCommandInvocation").copied().unwrap_or(0);
    assert_eq!(gets, 120, "one output fetch per instance: {calls:?}");
    assert!(calls.throttled.values().sum::<u64>() > 0, "the run was throttled: {calls:?}");
    assert!(calls.comments.iter().all(|c| c.starts_with("diffy IR-1234") && c.chars().count() == 100), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_faults_end_as_the_right_status_and_the_others_complete() {
    let faults = HashMap::from([
        (instance(2), Fault::Undeliverable),
        (instance(3), Fault::Offline),
        (instance(4), Fault::Stall),
    ]);
    let endpoint = SsmEndpoint::start(EndpointOptions {
        faults,
        offline_for: Duration::from_secs(2),
        visible_after: Duration::from_millis(800),
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    let t = SsmTransport::new(client(&endpoint.url()), SsmOptions::default().poll_interval(Duration::from_millis(300)));
    let spec = PayloadSpec::from_toml(
        r#"
name = "mixed"
[[query]]
name = "big"
shell = 'if [ "$DIFFY_INSTANCE_ID" = "i-00000000000000005" ]; then head -c 60000 /dev/urandom | od -An -tx1; else echo small; fi'
format = "lines"
"#,
        "mixed",
    )
    .unwrap();
    let mut hosts: Vec<Host> = (1..=6).map(|i| Host::named(&instance(i)).unwrap()).collect();
    hosts.push(Host::named("web-1").unwrap());
    let results = collect(&t, hosts, spec, Duration::from_secs(3)).await;
    let by: BTreeMap<String, &diffy_core::HostResult> = results.iter().map(|r| (r.host.id.to_string(), r)).collect();
    let status = |i: &str| by[i].status;
    assert_eq!(status(&instance(1)), HostStatus::Ok, "{:?}", by[&instance(1)].message);
    assert_eq!(status(&instance(6)), HostStatus::Ok);
    assert_eq!(status(&instance(2)), HostStatus::Unreachable, "{:?}", by[&instance(2)].message);
    assert!(by[&instance(2)].message.as_deref().unwrap().contains("Undeliverable"));
    assert_eq!(status(&instance(3)), HostStatus::Unreachable, "{:?}", by[&instance(3)].message);
    assert!(by[&instance(3)].message.as_deref().unwrap().contains("Delivery Timed Out"));
    assert_eq!(status(&instance(4)), HostStatus::TimedOut, "{:?}", by[&instance(4)].message);
    assert_eq!(by[&instance(4)].transport["ssm.status_details"], "Execution Timed Out");
    let big = by[&instance(5)];
    assert_eq!(big.status, HostStatus::Truncated, "{:?}", big.message);
    assert!(big.message.as_deref().unwrap().contains("24000"), "{:?}", big.message);
    assert_eq!(big.unframed_stdout.len(), 24_000, "the cut output is kept as evidence");
    assert_eq!(status("web-1"), HostStatus::TransportError);
    assert!(by["web-1"].message.as_deref().unwrap().contains("not an EC2 instance id"));
    assert_eq!(endpoint.unfinished(), 0, "nothing is left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_stops_the_commands_on_the_instances() {
    let endpoint = SsmEndpoint::start(EndpointOptions::default()).await.unwrap();
    let t = SsmTransport::new(client(&endpoint.url()), SsmOptions::default().poll_interval(Duration::from_millis(200)));
    let spec = PayloadSpec::from_toml("[[query]]\nname = \"slow\"\nshell = 'sleep 60'\n", "slow").unwrap();
    let script = Script::render(&spec, Duration::from_secs(120)).unwrap();
    let cancel = CancellationToken::new();
    let request = CollectRequest::new(
        (1..=3).map(|i| Host::named(&instance(i)).unwrap()).collect(),
        Arc::new(spec),
        Arc::new(script),
        CollectOptions::default(),
        cancel.clone(),
    );
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        c2.cancel();
    });
    let results: Vec<_> = t
        .collect(request)
        .filter_map(|e| async move {
            match e {
                CollectEvent::Finished(r) => Some(*r),
                _ => None,
            }
        })
        .collect()
        .await;
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.status == HostStatus::Cancelled), "{results:#?}");
    assert_eq!(endpoint.calls().of("CancelCommand"), 1);
    assert_eq!(endpoint.unfinished(), 0, "the invocations were cancelled on the instances");
}

/// End to end through the `diffy` binary: 30 instances, each a real test host
/// of the namespace fleet (the endpoint runs each instance's command inside
/// its host), two of them compromised, four of them failing in the ways SSM
/// fails, under throttling and delayed visibility.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_instances_over_ssm_find_the_planted_hosts_and_every_fault() {
    let Some(fleet) = Fleet::up(30, "ssm") else { return };
    let hosts_of: HashMap<String, String> = (1..=30).map(|i| (instance(i), fleet.host(i).to_string())).collect();
    let (bad1, bad2) = (7, 19);
    fleet.plant(fleet.host(bad1), "listener");
    fleet.plant(fleet.host(bad2), "cron");
    fleet.plant(fleet.host(bad2), "key");
    // A host whose results do not fit SSM's inline output.
    let out = fleet.exec(
        fleet.host(27),
        "head -c 40000 /dev/urandom | base64 -w 60 | sed 's/^/ssh-ed25519 AAAA/' >> /root/.ssh/authorized_keys",
    );
    assert!(out.status.success());
    let script = common::fleet::SCRIPT;
    let (dir, prefix) = (fleet.dir.to_str().unwrap().to_string(), fleet.prefix.clone());
    let executor: diffy_testkit::ssm_endpoint::Executor = Arc::new(move |id: &str, text: &str| {
        let mut c = tokio::process::Command::new(script);
        c.args(["--dir", &dir, "--prefix", &prefix, "exec", &hosts_of[id], "/bin/sh", "-c", text]);
        // An SSM agent does not carry cargo's LD_LIBRARY_PATH: a host's
        // process caught with it is a loaded_code finding.
        c.env_remove("LD_LIBRARY_PATH");
        c
    });
    let endpoint = SsmEndpoint::start(EndpointOptions {
        executor,
        faults: HashMap::from([
            (instance(3), Fault::Undeliverable),
            (instance(11), Fault::Offline),
            (instance(23), Fault::Stall),
        ]),
        visible_after: Duration::from_secs(2),
        pending_for: Duration::from_secs(1),
        throttle_rps: Some(10.0),
        offline_for: Duration::from_secs(5),
        ..EndpointOptions::default()
    })
    .await
    .unwrap();

    let d = Diffy::new()
        .env("AWS_ENDPOINT_URL_SSM", &endpoint.url())
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let lines: String = (1..=30).map(|i| format!("{}\n", instance(i))).collect();
    d.write("hosts.txt", &lines);
    let args = [
        "analyze",
        "api-v001",
        "--transport",
        "ssm",
        "--hosts",
        "hosts.txt",
        "--payload",
        "shell",
        "--method",
        "cluster",
        // The whole shell pack on 30 namespace hosts at once, on 2 shared
        // cores: room for a noisy machine (the stalled host waits it out).
        "--deadline",
        "45s",
        "--incident-id",
        "IR-1234",
        "--format",
        "json",
    ];
    let r = tokio::task::spawn_blocking(move || {
        let r = d.run(&args);
        (d, r)
    })
    .await
    .unwrap();
    let (d, r) = r;
    assert_eq!(r.code, 1, "outliers found: {}", r.stderr);
    let report = r.report();
    let statuses: BTreeMap<String, String> =
        report.hosts.iter().map(|h| (h.host.clone(), h.status.to_string())).collect();
    assert_eq!(statuses[&instance(3)], "unreachable", "{statuses:?}");
    assert_eq!(statuses[&instance(11)], "unreachable", "{statuses:?}");
    assert_eq!(statuses[&instance(23)], "timed_out", "{statuses:?}");
    assert_eq!(statuses[&instance(27)], "truncated", "{statuses:?}");
    let ok = statuses.values().filter(|s| *s == "ok").count();
    assert_eq!(ok, 26, "every other instance completed: {statuses:?}");
    let outliers: BTreeSet<String> = report.outliers().map(|h| h.host.clone()).collect();
    assert_eq!(outliers, BTreeSet::from([instance(bad1), instance(bad2)]), "{:#?}", report.hosts);
    let findings = |i: usize| report.hosts.iter().find(|h| h.host == instance(i)).unwrap().findings.clone();
    assert!(findings(bad1).iter().any(|f| f.query == "listening_ports" && f.row.values().any(|v| v.contains("4444"))));
    assert!(findings(bad2).iter().any(|f| f.query == "crontab" && f.row.values().any(|v| v.contains("x.sh"))));
    assert!(endpoint.calls().throttled.values().sum::<u64>() > 0, "throttling was exercised: {:?}", endpoint.calls());
    assert!(endpoint.calls().comments.iter().all(|c| c == "diffy IR-1234"), "{:?}", endpoint.calls());
    // The evidence keeps the SSM command id and every invocation's status.
    let run = common::only_run(&d.path("diffy-store"));
    let rec =
        std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/hosts/{}/result.json", instance(23)))).unwrap();
    assert!(rec.contains("ssm.command_id") && rec.contains("Execution Timed Out"), "{rec}");
    let hash = diffy_testkit::ssm_endpoint::document_hash();
    assert!(rec.contains(&format!("\"ssm.document_sha256\": \"{hash}\"")), "the document's hash: {rec}");
    assert!(rec.contains("ssm.commands_sha256"), "{rec}");
}

/// More instances than `concurrency`: a host waiting for room has not
/// started, and its deadline runs from when its command is sent. Before, one
/// deadline ran from the start of the run, so at 10,000 instances 5,750
/// were given up "before this host was sent".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_waiting_for_room_are_not_timed_out_by_the_others() {
    let endpoint = SsmEndpoint::start(EndpointOptions {
        visible_after: Duration::from_millis(200),
        pending_for: Duration::from_millis(2500),
        ..EndpointOptions::default()
    })
    .await
    .unwrap();
    // One at a time, about 3 s each: 14 take longer than one host's deadline
    // (2 s + 1 s grace + the 30 s delivery timeout).
    let t = SsmTransport::new(
        client(&endpoint.url()),
        SsmOptions::default().poll_interval(Duration::from_millis(300)).delivery_timeout(Duration::from_secs(30)),
    );
    let hosts: Vec<Host> = (1..=14).map(|i| Host::named(&instance(i)).unwrap()).collect();
    let started = std::time::Instant::now();
    let options = diffy_core::CollectOptions::default()
        .concurrency(1)
        .host_deadline(Duration::from_secs(2))
        .grace(Duration::from_secs(1));
    let results = common::collect_results_with(&t, hosts, payload(), options).await;
    let took = started.elapsed();
    let not_ok: Vec<String> = results
        .iter()
        .filter(|r| r.status != HostStatus::Ok)
        .map(|r| format!("{}: {} {:?}", r.host.id, r.status, r.message))
        .collect();
    assert!(not_ok.is_empty(), "every host is collected, after {took:?}: {not_ok:#?}");
    assert_eq!(results.len(), 14);
    assert!(took > Duration::from_secs(33), "the run outlasted one host's deadline ({took:?}), or this proves nothing");
}
