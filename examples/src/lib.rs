//! # diffy-examples
//!
//! How another tool embeds Diffy: pick the plugins, build an [`Engine`], react
//! to events as they come, and read the [`Report`]. Nothing here uses the CLI.
//!
//! [`ListenersPayload`] shows a plugin of one's own: a payload that asks only
//! for listening sockets, with its own normalisation.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use diffy_analysis::Analyzer;
use diffy_core::engine::Event;
use diffy_core::{
    AnalyzeOptions, CancellationToken, CollectOptions, Engine, EventSink, FsStore, Host, LocalTransport, Method,
    OutputFormat, Payload, PayloadContext, PayloadSpec, PerHost, Query, Report, Result, RunOptions, StaticTarget,
    TargetKey,
};

/// A payload plugin: TCP listeners only, as `port<TAB>program` rows.
#[derive(Clone, Debug, Default)]
pub struct ListenersPayload {
    /// Extra shell to append (tests plant anomalies with it).
    pub extra: String,
}

impl Payload for ListenersPayload {
    fn name(&self) -> &str {
        "listeners"
    }

    fn spec(&self, _ctx: &PayloadContext) -> Result<PayloadSpec> {
        let shell = format!(
            "printf 'port\\tprogram\\n'; ss -H -tln 2>/dev/null | awk '{{n=split($4,a,\":\"); print a[n] \"\\tunknown\"}}'; {}",
            self.extra
        );
        Ok(PayloadSpec {
            name: "listeners".into(),
            setup: None,
            queries: vec![Query::shell("listeners", shell, OutputFormat::Tsv).identity(["port"]).weight(3.0)],
            teardown: None,
        })
    }
}

/// Counts findings as the engine reports them: what an embedding tool would
/// forward to its own alerting.
#[derive(Debug, Default)]
pub struct FindingCounter {
    /// Findings seen.
    pub findings: AtomicUsize,
    /// Hosts finished.
    pub hosts: AtomicUsize,
}

impl EventSink for FindingCounter {
    fn event(&self, event: &Event) {
        match event {
            Event::Finding(_) => {
                self.findings.fetch_add(1, Ordering::Relaxed);
            }
            Event::HostFinished(_) => {
                self.hosts.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// What the example binaries print: one line per outlier with its first
/// finding, one per host left out, and the totals.
pub fn summary(report: &Report, counter: &FindingCounter) -> String {
    let mut out = String::new();
    for h in report.outliers() {
        out.push_str(&format!("{} score {}: {}\n", h.host, h.score, h.findings[0].explanation));
    }
    for n in &report.coverage.not_targeted_hosts {
        out.push_str(&format!("not targeted: {} ({})\n", n.host, n.reason));
    }
    out.push_str(&format!(
        "{} hosts, {} findings, {} outliers\n",
        counter.hosts.load(Ordering::Relaxed),
        counter.findings.load(Ordering::Relaxed),
        report.outliers().count()
    ));
    out
}

/// Collects `payload` from `hosts` with the local transport into a store at
/// `store`, and analyses the run by cluster.
pub async fn triage(
    hosts: &[&str],
    store: &Path,
    payload: impl Payload + 'static,
    sink: &dyn EventSink,
) -> Result<Report> {
    let hosts = hosts.iter().map(|h| Host::named(h)).collect::<Result<Vec<_>>>()?;
    let engine = Engine::builder()
        .target(StaticTarget::new(hosts)?)
        .collection(PerHost::new(LocalTransport::new()))
        .payload(payload)
        .store(FsStore::open(store)?)
        .analysis(Analyzer::new())
        .collect_options(CollectOptions::default().concurrency(8))
        .build()?;
    let key = TargetKey::new("example")?;
    let options = AnalyzeOptions::default().methods(vec![Method::Cluster]);
    engine.analyze(&key, &RunOptions::default(), &options, sink, CancellationToken::new()).await
}

/// The AWS composition: the instances of an Auto Scaling group (`asg`
/// target, accounts and regions from `aws`), the payload run on them through
/// SSM Run Command (`ssm` transport, commands tagged with `incident`), the
/// evidence kept on S3 (`store` is `s3://BUCKET/PREFIX`), and a cluster
/// analysis of the run.
pub async fn asg_triage(
    aws: diffy_aws::AwsContext,
    group: &str,
    store: &str,
    incident: &str,
    payload: impl Payload + 'static,
    sink: &dyn EventSink,
) -> Result<Report> {
    use diffy_transport_ssm::{SsmOptions, SsmTransport};
    let engine = Engine::builder()
        .target(diffy_target_asg::AsgTarget::new(aws.clone(), Vec::new()))
        .collection(SsmTransport::with_context(aws.clone(), SsmOptions::default().comment(format!("diffy {incident}"))))
        .payload(payload)
        .store(diffy_store_object::BlobStore::s3(store, &aws).await?)
        .analysis(Analyzer::new())
        .build()?;
    let key = TargetKey::new(group)?;
    let options = AnalyzeOptions::default().methods(vec![Method::Cluster]);
    let run = RunOptions::default().incident_id(incident);
    engine.analyze(&key, &run, &options, sink, CancellationToken::new()).await
}
