//! Benchmark: the SSM transport against the scriptable SSM endpoint with
//! 1,000 instances (each a real `sh` run on this machine), with and without
//! throttling. Prints API calls by operation, the most list calls in one
//! polling round, wall time and failed hosts.
//!
//! `cargo bench -p diffy-tests --bench ssm`. Instances:
//! DIFFY_BENCH_SSM_INSTANCES=1000; throttled rate: DIFFY_BENCH_SSM_RPS=20
//! (`none`: the unthrottled run only).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use diffy_core::plugin::Script;
use diffy_core::{CollectEvent, CollectOptions, CollectRequest, Collection, Host, HostStatus, PayloadSpec};
use diffy_testkit::ssm_endpoint::{EndpointOptions, SsmEndpoint};
use diffy_transport_ssm::{SsmOptions, SsmTransport};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_secs(1);

fn client(url: &str) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ssm::config::Credentials::new("AKIDBENCH", "secret", None, None, "bench"))
        .retry_config(
            aws_sdk_ssm::config::retry::RetryConfig::adaptive()
                .with_max_attempts(10)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(10)),
        )
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

struct Row {
    label: String,
    calls: diffy_testkit::ssm_endpoint::Calls,
    max_list_per_round: u64,
    wall: f64,
    ok: usize,
    failed: usize,
}

async fn one(n: usize, rps: Option<f64>) -> Row {
    let endpoint = SsmEndpoint::start(EndpointOptions {
        visible_after: Duration::from_millis(500),
        pending_for: Duration::from_secs(1),
        throttle_rps: rps,
        parallel: 64,
        ..EndpointOptions::default()
    })
    .await
    .expect("endpoint");
    let t = SsmTransport::new(client(&endpoint.url()), SsmOptions::default().poll_interval(POLL));
    let spec = PayloadSpec::from_toml(
        "[[query]]\nname = \"ident\"\nshell = 'echo \"$DIFFY_INSTANCE_ID\"; uname -a'\nformat = \"lines\"\n",
        "bench",
    )
    .expect("payload");
    let script = Script::render(&spec, Duration::from_secs(300)).expect("script");
    let hosts: Vec<Host> = (1..=n).map(|i| Host::named(&format!("i-{i:017x}")).expect("id")).collect();
    let request = CollectRequest::new(
        hosts,
        Arc::new(spec),
        Arc::new(script),
        CollectOptions::default().host_deadline(Duration::from_secs(300)).concurrency(1000),
        CancellationToken::new(),
    );
    let start = Instant::now();
    let results: Vec<_> = t
        .collect(request)
        .filter_map(|e| async move {
            match e {
                CollectEvent::Finished(r) => Some(r.status),
                _ => None,
            }
        })
        .collect()
        .await;
    let wall = start.elapsed().as_secs_f64();
    let ok = results.iter().filter(|s| **s == HostStatus::Ok).count();
    let calls = endpoint.calls();
    // List calls of one round come back to back; rounds are POLL apart.
    let mut max_round = 0u64;
    let mut this = 0u64;
    let mut last: Option<Duration> = None;
    for at in endpoint.list_call_times() {
        if last.is_some_and(|l| at - l > POLL / 2) {
            max_round = max_round.max(this);
            this = 0;
        }
        this += 1;
        last = Some(at);
    }
    max_round = max_round.max(this);
    Row {
        label: rps.map_or("no throttling".into(), |r| format!("throttled at {r} req/s")),
        calls,
        max_list_per_round: max_round,
        wall,
        ok,
        failed: results.len() - ok,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("DIFFY_BENCH_SSM_INSTANCES").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    // DIFFY_BENCH_SSM_RPS=none: the unthrottled run only.
    let rps = std::env::var("DIFFY_BENCH_SSM_RPS").ok();
    let throttled = match rps.as_deref() {
        Some("none") => None,
        other => Some(other.and_then(|s| s.parse().ok()).unwrap_or(20.0)),
    };
    let mut rows = Vec::new();
    for r in std::iter::once(None).chain(throttled.map(Some)) {
        let row = one(n, r).await;
        eprintln!("{}: {:.1}s", row.label, row.wall);
        rows.push(row);
    }
    println!("\nSSM transport, {n} instances, poll every {}s (scriptable endpoint on loopback)\n", POLL.as_secs());
    println!(
        "| {:<22} | {:>8} | {:>11} | {:>11} | {:>11} | {:>6} | {:>14} | {:>7} | {:>4} | {:>6} |",
        "run", "Describe", "Send", "List", "Get", "Cancel", "max list/round", "wall s", "ok", "failed"
    );
    println!("|{}|", ["-"; 10].map(|_| "---").join("|"));
    for r in &rows {
        // Calls served, and in brackets those answered ThrottlingException (retried by the SDK).
        let op = |name: &str| {
            let throttled = r.calls.throttled.get(name).copied().unwrap_or(0);
            let served = r.calls.of(name) - throttled;
            if throttled > 0 { format!("{served} (+{throttled})") } else { served.to_string() }
        };
        println!(
            "| {:<22} | {:>8} | {:>11} | {:>11} | {:>11} | {:>6} | {:>14} | {:>7.1} | {:>4} | {:>6} |",
            r.label,
            op("DescribeDocument"),
            op("SendCommand"),
            op("ListCommandInvocations"),
            op("GetCommandInvocation"),
            op("CancelCommand"),
            r.max_list_per_round,
            r.wall,
            r.ok,
            r.failed
        );
    }
    println!("\n(calls served; (+N): answered ThrottlingException and retried by the SDK's adaptive retry)");
}
