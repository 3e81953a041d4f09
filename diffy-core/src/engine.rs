//! The engine: wires a target, a transport, a payload, a store and an analysis,
//! and runs `baseline`, `collect` and `analyze`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::analysis::{Analysis, AnalysisInput, BaselineInput, HistoryInput};
use crate::collection::{CollectEvent, CollectOptions, CollectRequest, Collection};
use crate::names::{Host, HostId, RunId, TargetKey};
use crate::payload::{Payload, PayloadContext};
use crate::persistence::{BaselineWrite, Persistence, PersistenceExt};
use crate::report::{BaselineProvenance, Coverage, Finding, Method, Report, RunSummary};
use crate::result::{HostStatus, QueryStatus};
use crate::run::{BaselineRecord, RunCounts, RunKind, RunLimits, RunManifest, RunState};
use crate::script::Script;
use crate::target::{Resolution, Target};
use crate::{BaselineRefusal, Error, Result};

/// The version of Diffy recorded in runs and reports.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the engine tells its caller as a run goes. Serialised as
/// `{"type": "...", "data": {...}}`: the JSON Lines wire format.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A run began: its id and how many hosts it will query.
    RunStarted(RunStarted),
    /// Work began on a host.
    HostStarted(HostStarted),
    /// A host finished, with its status; its evidence is already stored.
    HostFinished(HostFinished),
    /// Collection ended.
    RunFinished(RunFinished),
    /// Analysis found something on a host.
    Finding(FindingEvent),
    /// The analysis's totals.
    Summary(Summary),
    /// The whole report (last event of `analyze`).
    Report(Box<Report>),
}

/// Data of [`Event::RunStarted`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStarted {
    /// Run id.
    pub run: RunId,
    /// Target key.
    pub target: TargetKey,
    /// Baseline or survey.
    pub kind: RunKind,
    /// Hosts to query.
    pub hosts: usize,
    /// Hosts left out.
    pub not_targeted: usize,
    /// Transport.
    pub transport: String,
    /// Payload name.
    pub payload: String,
    /// Payload hash.
    pub payload_hash: String,
    /// Hosts worked on at once.
    pub concurrency: usize,
    /// Why that is fewer than asked (the limits on open files or processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_capped: Option<String>,
}

/// Data of [`Event::HostStarted`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostStarted {
    /// The host.
    pub host: HostId,
}

/// Data of [`Event::HostFinished`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostFinished {
    /// The host.
    pub host: HostId,
    /// How it ended.
    pub status: HostStatus,
    /// Why, when not `ok`.
    pub message: Option<String>,
    /// Milliseconds it took.
    pub duration_ms: u64,
    /// Raw bytes kept.
    pub bytes: u64,
    /// Queries that did not end `ok`.
    pub failed_queries: Vec<(String, QueryStatus)>,
    /// Hosts finished so far, and in all.
    pub done: usize,
    /// Hosts in the run.
    pub of: usize,
}

/// Data of [`Event::RunFinished`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFinished {
    /// Run id.
    pub run: RunId,
    /// Complete or interrupted.
    pub state: RunState,
    /// Outcome counts.
    pub counts: RunCounts,
}

/// Data of [`Event::Finding`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FindingEvent {
    /// The host.
    pub host: String,
    /// The finding.
    pub finding: Finding,
}

/// Data of [`Event::Summary`].
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Hosts analysed.
    pub hosts: usize,
    /// Hosts marked outlier.
    pub outliers: usize,
    /// Cohorts found.
    pub cohorts: usize,
    /// Coverage.
    pub coverage: Coverage,
}

/// Receives the engine's events. The CLI's progress bar and printers are sinks;
/// an embedding tool can react to findings without parsing text.
pub trait EventSink: Send + Sync {
    /// Called for every event, in order, from the engine's task.
    fn event(&self, event: &Event);
}

/// A sink that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn event(&self, _event: &Event) {}
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn event(&self, event: &Event) {
        self(event)
    }
}

/// Who runs a run, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// The incident id (at most 100 characters, no control characters).
    pub incident_id: Option<String>,
    /// Who is running it.
    pub operator: Option<String>,
}

impl RunOptions {
    /// Sets the incident id.
    pub fn incident_id(mut self, id: impl Into<String>) -> Self {
        self.incident_id = Some(id.into());
        self
    }

    /// Sets the operator.
    pub fn operator(mut self, who: impl Into<String>) -> Self {
        self.operator = Some(who.into());
        self
    }

    fn validate(&self) -> Result<()> {
        if let Some(id) = &self.incident_id {
            if id.is_empty() || id.chars().count() > 100 || id.chars().any(char::is_control) {
                return Err(Error::invalid_with_help(
                    format!("incident id {id:?} is unusable"),
                    "use 1 to 100 printable characters, e.g. IR-1234",
                ));
            }
        }
        Ok(())
    }
}

/// How [`Engine::baseline`] makes its run the baseline.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BaselineOptions {
    /// Whether an existing baseline may be replaced. Default: it may not.
    pub write: BaselineWrite,
    /// Take the baseline even from hosts that were outliers of the key's
    /// latest survey run. Default: refused.
    pub allow_outliers: bool,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        Self { write: BaselineWrite::CreateOnly, allow_outliers: false }
    }
}

impl BaselineOptions {
    /// Sets whether an existing baseline may be replaced.
    pub fn write(mut self, write: BaselineWrite) -> Self {
        self.write = write;
        self
    }

    /// Sets whether outliers of the latest run may be baseline hosts.
    pub fn allow_outliers(mut self, allow: bool) -> Self {
        self.allow_outliers = allow;
        self
    }
}

/// How to analyse.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnalyzeOptions {
    /// Methods to apply. Default: cluster, plus baseline when the key has one,
    /// plus novelty when it has history.
    pub methods: Option<Vec<Method>>,
    /// Days of history for novelty. Default 30.
    pub history_days: u32,
    /// At most this many earlier runs are read for novelty. Default 50.
    pub max_history_runs: usize,
    /// Use this run as the baseline instead of the key's current baseline.
    pub baseline_run: Option<RunId>,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self { methods: None, history_days: 30, max_history_runs: 50, baseline_run: None }
    }
}

impl AnalyzeOptions {
    /// Sets the methods.
    pub fn methods(mut self, methods: Vec<Method>) -> Self {
        self.methods = Some(methods);
        self
    }

    /// Sets the novelty window.
    pub fn history_days(mut self, days: u32) -> Self {
        self.history_days = days;
        self
    }

    /// Uses a given baseline run.
    pub fn baseline_run(mut self, run: RunId) -> Self {
        self.baseline_run = Some(run);
        self
    }
}

/// How many hosts' evidence is written to the store at once.
const STORE_WRITES_AT_ONCE: usize = 32;

/// Builds an [`Engine`]. Every part is optional here; an operation that needs
/// a missing part fails with [`Error::NotConfigured`] saying which.
#[derive(Debug, Default)]
pub struct EngineBuilder {
    target: Option<Arc<dyn Target>>,
    collection: Option<Arc<dyn Collection>>,
    payload: Option<Arc<dyn Payload>>,
    store: Option<Arc<dyn Persistence>>,
    analysis: Option<Arc<dyn Analysis>>,
    options: CollectOptions,
}

impl EngineBuilder {
    /// Sets the target.
    pub fn target(mut self, t: impl Target + 'static) -> Self {
        self.target = Some(Arc::new(t));
        self
    }

    /// Sets the transport.
    pub fn collection(mut self, c: impl Collection + 'static) -> Self {
        self.collection = Some(Arc::new(c));
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, p: impl Payload + 'static) -> Self {
        self.payload = Some(Arc::new(p));
        self
    }

    /// Sets the store.
    pub fn store(mut self, s: impl Persistence + 'static) -> Self {
        self.store = Some(Arc::new(s));
        self
    }

    /// Sets the analysis.
    pub fn analysis(mut self, a: impl Analysis + 'static) -> Self {
        self.analysis = Some(Arc::new(a));
        self
    }

    /// Sets the target from a shared handle.
    pub fn target_arc(mut self, t: Arc<dyn Target>) -> Self {
        self.target = Some(t);
        self
    }

    /// Sets the transport from a shared handle.
    pub fn collection_arc(mut self, c: Arc<dyn Collection>) -> Self {
        self.collection = Some(c);
        self
    }

    /// Sets the payload from a shared handle.
    pub fn payload_arc(mut self, p: Arc<dyn Payload>) -> Self {
        self.payload = Some(p);
        self
    }

    /// Sets the store from a shared handle.
    pub fn store_arc(mut self, s: Arc<dyn Persistence>) -> Self {
        self.store = Some(s);
        self
    }

    /// Sets the analysis from a shared handle.
    pub fn analysis_arc(mut self, a: Arc<dyn Analysis>) -> Self {
        self.analysis = Some(a);
        self
    }

    /// Sets collection limits.
    pub fn collect_options(mut self, o: CollectOptions) -> Self {
        self.options = o;
        self
    }

    /// Checks the options and builds the engine. A store is required: every
    /// operation keeps or reads evidence.
    pub fn build(self) -> Result<Engine> {
        let store = self.store.ok_or(Error::NotConfigured {
            part: "store",
            help: "every operation keeps or reads evidence: call EngineBuilder::store (e.g. FsStore::open)",
        })?;
        if self.options.host_deadline.is_zero() {
            return Err(Error::invalid("the per-host deadline must be longer than zero"));
        }
        if self.options.max_output_bytes == 0 {
            return Err(Error::invalid("the per-host output limit must be more than zero bytes"));
        }
        Ok(Engine {
            target: self.target,
            collection: self.collection,
            payload: self.payload,
            store,
            analysis: self.analysis,
            options: self.options,
        })
    }
}

/// Runs Diffy's operations. See [`EngineBuilder`].
#[derive(Debug, Clone)]
pub struct Engine {
    target: Option<Arc<dyn Target>>,
    collection: Option<Arc<dyn Collection>>,
    payload: Option<Arc<dyn Payload>>,
    store: Arc<dyn Persistence>,
    analysis: Option<Arc<dyn Analysis>>,
    options: CollectOptions,
}

fn need<'a, T: ?Sized>(part: &'a Option<Arc<T>>, name: &'static str, help: &'static str) -> Result<&'a Arc<T>> {
    part.as_ref().ok_or(Error::NotConfigured { part: name, help })
}

impl Engine {
    /// A new builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Persistence> {
        &self.store
    }

    /// Collects a survey run of `key`: resolves the hosts, runs the payload on
    /// them, and stores each host's evidence as soon as it arrives. When
    /// `cancel` fires, the hosts that reported are kept and the run is marked
    /// interrupted.
    pub async fn collect(
        &self,
        key: &TargetKey,
        run: &RunOptions,
        sink: &dyn EventSink,
        cancel: CancellationToken,
    ) -> Result<RunManifest> {
        self.collect_kind(key, RunKind::Survey, None, run, sink, cancel).await
    }

    /// Collects a baseline run of `key` from its (clean) hosts and makes it the
    /// key's baseline. An existing baseline is replaced only with
    /// [`BaselineWrite::Replace`]. When the engine has an analysis, hosts that
    /// were outliers of the key's latest survey run (among its hosts, by
    /// cluster analysis) are refused unless
    /// [`BaselineOptions::allow_outliers`]: a baseline taken from them could
    /// hold the compromise it should reveal. Both checks happen before
    /// collecting.
    pub async fn baseline(
        &self,
        key: &TargetKey,
        run: &RunOptions,
        options: &BaselineOptions,
        sink: &dyn EventSink,
        cancel: CancellationToken,
    ) -> Result<(RunManifest, BaselineRecord)> {
        let mode = options.write;
        let existing = self.store.get_baseline(key).await?;
        if let (Some(old), BaselineWrite::CreateOnly) = (&existing, mode) {
            return Err(Error::AlreadyExists {
                what: "baseline for target",
                name: key.to_string(),
                help: Some(format!(
                    "target {key} already has baseline run {} (set {}); pass --replace to collect a new one (the old run is kept)",
                    old.run,
                    old.set_at.format("%Y-%m-%d %H:%M UTC")
                )),
            });
        }
        run.validate()?;
        // Resolved once: the hosts checked are the hosts collected.
        let target = need(&self.target, "target", "call EngineBuilder::target (e.g. StaticTarget)")?;
        let resolution = target.resolve(key).await?;
        if !options.allow_outliers {
            self.refuse_outliers_as_baseline(key, &resolution.hosts).await?;
        }
        let manifest = self.collect_kind(key, RunKind::Baseline, Some(resolution), run, sink, cancel).await?;
        if manifest.counts.collected == 0 {
            return Err(Error::BaselineRefused {
                run: manifest.id.to_string(),
                reason: BaselineRefusal::NothingCollected,
                message: format!("baseline run {} collected no host, so it was not made the baseline", manifest.id),
                help: "check the hosts' statuses with `diffy runs` and the run's evidence, then try again".into(),
            });
        }
        if manifest.state != RunState::Complete {
            return Err(Error::BaselineRefused {
                run: manifest.id.to_string(),
                reason: BaselineRefusal::Interrupted,
                message: format!("baseline run {} was interrupted, so it was not made the baseline", manifest.id),
                help: "collect the baseline again and let it finish".into(),
            });
        }
        let record = BaselineRecord {
            target: key.clone(),
            run: manifest.id.clone(),
            set_at: Utc::now(),
            set_by: run.operator.clone(),
            replaces: existing.map(|e| e.run),
        };
        self.store.put_baseline(&record, mode).await?;
        Ok((manifest, record))
    }

    /// Fails when hosts this key would take a baseline from were outliers of
    /// its latest survey run (analysed again from the store by cluster
    /// analysis, as `analyze --from RUN --method cluster` would).
    async fn refuse_outliers_as_baseline(&self, key: &TargetKey, hosts: &[Host]) -> Result<()> {
        if self.analysis.is_none() {
            return Ok(());
        }
        let latest = self
            .store
            .list_runs(Some(key))
            .await?
            .into_iter()
            .filter(|r| r.kind == RunKind::Survey && r.counts.collected > 0)
            .max_by_key(|r| r.started_at);
        let Some(latest) = latest else { return Ok(()) };
        // Against the herd only: after a deploy every host differs from the
        // old baseline, and replacing it is the point.
        let options = AnalyzeOptions::default().methods(vec![Method::Cluster]);
        let report = self.analyze_run(&latest.id, &options, &NullSink).await?;
        let suspect: Vec<&str> = report
            .outliers()
            .filter(|o| hosts.iter().any(|h| h.id.as_str() == o.host))
            .map(|o| o.host.as_str())
            .collect();
        if suspect.is_empty() {
            return Ok(());
        }
        let shown = if suspect.len() <= 10 {
            suspect.join(", ")
        } else {
            format!("{}, … {} more", suspect[..10].join(", "), suspect.len() - 10)
        };
        Err(Error::BaselineRefused {
            run: latest.id.to_string(),
            reason: BaselineRefusal::Outliers,
            message: format!(
                "{} of the hosts to take the baseline from {} outliers of run {} (the latest run of {key}): {shown}; \
                 a baseline taken from them could hold the compromise it should reveal",
                suspect.len(),
                if suspect.len() == 1 { "was one of the" } else { "were" },
                latest.id
            ),
            help: format!(
                "choose hosts you know are clean (see `diffy analyze --from {}`), or pass --force to take the \
                 baseline from these anyway",
                latest.id
            ),
        })
    }

    /// Collects a run of `kind`, from `resolution` when the caller resolved
    /// the target already.
    async fn collect_kind(
        &self,
        key: &TargetKey,
        kind: RunKind,
        resolution: Option<Resolution>,
        run: &RunOptions,
        sink: &dyn EventSink,
        cancel: CancellationToken,
    ) -> Result<RunManifest> {
        run.validate()?;
        let target = need(&self.target, "target", "call EngineBuilder::target (e.g. StaticTarget)")?;
        let collection = need(
            &self.collection,
            "transport",
            "call EngineBuilder::collection (e.g. PerHost::new(LocalTransport::new()))",
        )?;
        let payload = need(&self.payload, "payload", "call EngineBuilder::payload (e.g. ShellPayload)")?;
        let resolution = match resolution {
            Some(r) => r,
            None => target.resolve(key).await?,
        };
        if resolution.hosts.is_empty() {
            let left: Vec<String> =
                resolution.not_targeted.iter().take(5).map(|n| format!("{}: {}", n.host.id, n.reason)).collect();
            let more = resolution.not_targeted.len().saturating_sub(left.len());
            return Err(Error::NoHosts {
                target: key.to_string(),
                left_out: resolution.not_targeted.len(),
                message: match resolution.not_targeted.len() {
                    0 => format!("target {key} resolved to no host"),
                    n => format!(
                        "target {key} resolved to no host; {n} left out ({}{})",
                        left.join("; "),
                        if more > 0 { format!("; {more} more") } else { String::new() }
                    ),
                },
            });
        }
        let spec = payload.spec(&PayloadContext { target: key.clone() })?;
        let script = Script::render(&spec, self.options.host_deadline)?;
        // Hosts past the limits on open files or processes would be lost:
        // run fewer at once, and keep why.
        let requested = self.options.concurrency_or(collection.default_concurrency());
        let fitted =
            crate::limits::fit_concurrency(requested, collection.host_cost(), crate::limits::ProcessLimits::current());
        let started_at = Utc::now();
        let mut manifest = RunManifest {
            id: RunId::generate(started_at),
            kind,
            target: key.clone(),
            incident_id: run.incident_id.clone(),
            operator: run.operator.clone(),
            tool_version: TOOL_VERSION.to_string(),
            target_plugin: target.name().to_string(),
            transport: collection.name().to_string(),
            payload_hash: spec.hash(),
            payload: spec.clone(),
            limits: RunLimits {
                concurrency: fitted.concurrency,
                requested_concurrency: fitted.capped.as_ref().map(|_| requested),
                concurrency_capped: fitted.capped.clone(),
                host_deadline_secs: self.options.host_deadline.as_secs(),
                max_output_bytes: self.options.max_output_bytes,
            },
            started_at,
            finished_at: None,
            state: RunState::Running,
            hosts: resolution.hosts.clone(),
            not_targeted: resolution.not_targeted,
            counts: RunCounts::tally(resolution.hosts.len(), []),
        };
        self.store.create_run(&manifest).await?;
        sink.event(&Event::RunStarted(RunStarted {
            run: manifest.id.clone(),
            target: key.clone(),
            kind,
            hosts: manifest.hosts.len(),
            not_targeted: manifest.not_targeted.len(),
            transport: manifest.transport.clone(),
            payload: spec.name.clone(),
            payload_hash: manifest.payload_hash.clone(),
            concurrency: fitted.concurrency,
            concurrency_capped: fitted.capped,
        }));
        let total = manifest.hosts.len();
        let request = CollectRequest {
            hosts: resolution.hosts,
            spec: Arc::new(spec),
            script: Arc::new(script),
            options: self.options.clone().concurrency(fitted.concurrency),
            cancel: cancel.clone(),
        };
        let mut stream = collection.collect(request);
        let mut statuses = Vec::with_capacity(total);
        let mut store_error = None;
        // Hosts are stored as they finish, several at once: storing one at a
        // time (about a dozen flushed files each) falls behind a fast
        // collection, and the last hosts to finish would wait for the others.
        let (store, run_id) = (&*self.store, &manifest.id);
        let mut storing = futures::stream::FuturesUnordered::new();
        let mut collecting = true;
        while collecting || !storing.is_empty() {
            tokio::select! {
                event = stream.next(), if collecting && storing.len() < STORE_WRITES_AT_ONCE => match event {
                    None => collecting = false,
                    Some(CollectEvent::Started(host)) => sink.event(&Event::HostStarted(HostStarted { host })),
                    Some(CollectEvent::Finished(result)) => storing.push(async move {
                        let stored = store.put_host_result(run_id, &result).await;
                        (result, stored)
                    }),
                },
                Some((result, stored)) = storing.next(), if !storing.is_empty() => {
                    if let Err(e) = stored {
                        // Evidence that cannot be kept must not be collected
                        // further: stop the run and say why.
                        tracing::error!("cannot store the evidence of {}: {e}", result.host.id);
                        cancel.cancel();
                        store_error.get_or_insert(e);
                        continue;
                    }
                    statuses.push(result.status);
                    sink.event(&Event::HostFinished(HostFinished {
                        host: result.host.id.clone(),
                        status: result.status,
                        message: result.message.clone(),
                        duration_ms: (result.finished_at - result.started_at).num_milliseconds().max(0) as u64,
                        bytes: result.raw_len(),
                        failed_queries: result
                            .queries
                            .iter()
                            .filter(|q| q.status != QueryStatus::Ok)
                            .map(|q| (q.name.clone(), q.status))
                            .collect(),
                        done: statuses.len(),
                        of: total,
                    }));
                }
            }
        }
        drop(storing);
        manifest.finished_at = Some(Utc::now());
        manifest.counts = RunCounts::tally(total, statuses.iter().copied());
        let interrupted = cancel.is_cancelled() || statuses.contains(&HostStatus::Cancelled);
        manifest.state =
            if interrupted || manifest.counts.missing > 0 { RunState::Interrupted } else { RunState::Complete };
        self.store.update_run(&manifest).await?;
        sink.event(&Event::RunFinished(RunFinished {
            run: manifest.id.clone(),
            state: manifest.state,
            counts: manifest.counts.clone(),
        }));
        match store_error {
            Some(e) => Err(e),
            None => Ok(manifest),
        }
    }

    /// Collects a survey of `key`, then analyses it (see [`Engine::analyze_run`]).
    /// An interrupted collection is still analysed, and says so.
    pub async fn analyze(
        &self,
        key: &TargetKey,
        run: &RunOptions,
        options: &AnalyzeOptions,
        sink: &dyn EventSink,
        cancel: CancellationToken,
    ) -> Result<Report> {
        let manifest = self.collect(key, run, sink, cancel).await?;
        self.analyze_run(&manifest.id, options, sink).await
    }

    /// Analyses a stored run without collecting again.
    pub async fn analyze_run(&self, run: &RunId, options: &AnalyzeOptions, sink: &dyn EventSink) -> Result<Report> {
        let analysis =
            need(&self.analysis, "analysis", "call EngineBuilder::analysis (e.g. diffy_analysis::Analyzer)")?;
        let manifest = self.store.get_run(run).await?;
        let baseline_record = match &options.baseline_run {
            Some(id) => Some(BaselineRecord {
                target: manifest.target.clone(),
                run: id.clone(),
                set_at: Utc::now(),
                set_by: None,
                replaces: None,
            }),
            None => self.store.get_baseline(&manifest.target).await?,
        };
        let since: DateTime<Utc> = manifest.started_at - chrono::Duration::days(i64::from(options.history_days));
        let mut history: Vec<RunManifest> = self
            .store
            .history(&manifest.target, since)
            .await?
            .into_iter()
            .filter(|r| r.id != manifest.id && r.started_at <= manifest.started_at)
            .collect();
        if history.len() > options.max_history_runs {
            history.drain(..history.len() - options.max_history_runs);
        }
        let methods = match &options.methods {
            Some(m) => m.clone(),
            None => {
                let mut m = vec![Method::Cluster];
                if baseline_record.is_some() {
                    m.push(Method::Baseline);
                }
                if !history.is_empty() {
                    m.push(Method::Novelty);
                }
                m
            }
        };
        let baseline = match (&baseline_record, methods.contains(&Method::Baseline)) {
            (Some(rec), true) if rec.run != manifest.id => {
                let b = self.store.get_run(&rec.run).await?;
                let hosts = self.store.list_host_results(&b.id).await?;
                let payload = Arc::new(b.payload.clone());
                Some(BaselineInput {
                    provenance: BaselineProvenance {
                        run: Some(b.id.clone()),
                        source: None,
                        hosts: hosts.iter().map(ToString::to_string).collect(),
                        collected_at: Some(b.started_at),
                        payload_hash: Some(b.payload_hash.clone()),
                        min_hosts: 0,
                    },
                    payload: b.payload.clone(),
                    hosts: crate::plugin::stored_observations(self.store.clone(), b.id.clone(), hosts, payload),
                })
            }
            _ => None,
        };
        let mut history_inputs = Vec::new();
        if methods.contains(&Method::Novelty) {
            for h in &history {
                let hosts = self.store.list_host_results(&h.id).await?;
                history_inputs.push(HistoryInput {
                    run: RunSummary::from(h),
                    hosts: crate::plugin::stored_observations(
                        self.store.clone(),
                        h.id.clone(),
                        hosts,
                        Arc::new(h.payload.clone()),
                    ),
                });
            }
        }
        let hosts = self.store.list_host_results(&manifest.id).await?;
        let input = AnalysisInput {
            run: Some(RunSummary::from(&manifest)),
            imported_from: None,
            methods,
            payload: manifest.payload.clone(),
            targeted: manifest.hosts.clone(),
            not_targeted: manifest.not_targeted.clone(),
            survey: crate::plugin::stored_observations(
                self.store.clone(),
                manifest.id.clone(),
                hosts,
                Arc::new(manifest.payload.clone()),
            ),
            baseline,
            history: history_inputs,
            history_days: options.history_days,
        };
        let report = analysis.analyze(input).await?;
        emit_report(&report, sink);
        Ok(report)
    }
}

/// Sends a report's findings, its summary and the report itself to `sink`.
pub fn emit_report(report: &Report, sink: &dyn EventSink) {
    for h in &report.hosts {
        for f in &h.findings {
            sink.event(&Event::Finding(FindingEvent { host: h.host.clone(), finding: f.clone() }));
        }
    }
    sink.event(&Event::Summary(Summary {
        hosts: report.coverage.collected,
        outliers: report.outliers().count(),
        cohorts: report.cohorts.len(),
        coverage: report.coverage.clone(),
    }));
    sink.event(&Event::Report(Box::new(report.clone())));
}
