//! Collection: the command transport that runs a payload on many hosts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::names::{Host, HostId};
use crate::query::PayloadSpec;
use crate::result::{HostResult, HostStatus};
use crate::script::{Execution, Script, assemble_blocking};

/// Hosts at once of a transport that names no concurrency of its own.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Limits of one collection.
///
/// Written in `diffy.toml` as `[collect]` (or a request body) with the same
/// names; see [`crate::settings`] for how durations and sizes are written:
///
/// ```
/// let o: diffy_core::CollectOptions =
///     serde_json::from_str(r#"{ "concurrency": 200, "host_deadline": "5m" }"#).unwrap();
/// assert_eq!(o.concurrency, Some(200));
/// assert_eq!(o.max_output_bytes, 256 << 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CollectOptions {
    /// Hosts queried at once (at least 1). Default: the transport's own,
    /// [`Collection::default_concurrency`] (a local shell: a few; SSH:
    /// hundreds); the engine also fits it to the process's limits.
    #[serde(
        deserialize_with = "crate::settings::opt_at_least_one::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub concurrency: Option<usize>,
    /// Time each host gets for the whole payload, enforced on the host (each
    /// query under `timeout`) and locally. Default 120 s.
    #[serde(with = "crate::settings::duration", alias = "deadline")]
    pub host_deadline: Duration,
    /// Extra time the local side waits past `host_deadline` for the host's own
    /// timeout to report, before it stops the host by force. Default 5 s.
    #[serde(with = "crate::settings::duration")]
    pub grace: Duration,
    /// Bytes of output kept per host before the host is stopped and marked
    /// truncated. Default 256 MiB.
    #[serde(with = "crate::settings::bytes", alias = "max_output")]
    pub max_output_bytes: u64,
}

impl Default for CollectOptions {
    fn default() -> Self {
        Self {
            concurrency: None,
            host_deadline: Duration::from_secs(120),
            grace: Duration::from_secs(5),
            max_output_bytes: 256 << 20,
        }
    }
}

impl CollectOptions {
    /// Sets the concurrency (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// The hosts to work on at once: the concurrency set, else `default`
    /// (the transport's [`Collection::default_concurrency`]); at least 1.
    pub fn concurrency_or(&self, default: usize) -> usize {
        self.concurrency.unwrap_or(default).max(1)
    }

    /// Sets the per-host deadline.
    pub fn host_deadline(mut self, d: Duration) -> Self {
        self.host_deadline = d;
        self
    }

    /// Sets the grace period.
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Sets the output limit.
    pub fn max_output_bytes(mut self, n: u64) -> Self {
        self.max_output_bytes = n;
        self
    }
}

/// One collection to perform.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CollectRequest {
    /// The hosts to query.
    pub hosts: Vec<Host>,
    /// The payload.
    pub spec: Arc<PayloadSpec>,
    /// The payload rendered for this run.
    pub script: Arc<Script>,
    /// Limits.
    pub options: CollectOptions,
    /// Cancelled when the run must stop (Ctrl-C).
    pub cancel: CancellationToken,
}

impl CollectRequest {
    /// A collection of `script` (rendered from `spec`) on `hosts`, within
    /// `options`, stopped by `cancel`.
    pub fn new(
        hosts: Vec<Host>,
        spec: Arc<PayloadSpec>,
        script: Arc<Script>,
        options: CollectOptions,
        cancel: CancellationToken,
    ) -> Self {
        Self { hosts, spec, script, options, cancel }
    }
}

/// Progress of a collection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CollectEvent {
    /// The transport began work on a host.
    Started(HostId),
    /// A host finished, whatever the outcome.
    Finished(Box<HostResult>),
}

/// A command transport: runs a payload on many hosts.
///
/// # Contract
/// - Yields exactly one [`CollectEvent::Finished`] per requested host, in the
///   order hosts finish, then ends. A host that fails (unreachable, refused,
///   timed out, garbage) is a result with that status, never a stream error.
/// - Yields [`CollectEvent::Started`] for a host before its `Finished`, when it
///   actually starts work on it.
/// - Works on at most `options.concurrency` hosts at once, or its own
///   [`default_concurrency`](Self::default_concurrency) when that is `None`
///   ([`CollectOptions::concurrency_or`]).
/// - Every host finishes by `host_deadline + grace` after it started; the
///   deadline is enforced on the host as well, because stopping the local side
///   does not stop a remote command.
/// - When `cancel` fires: starts no new host, stops running ones promptly, and
///   still yields a result for every host (status `cancelled`, with whatever
///   output had arrived).
/// - Raw output is kept byte for byte (up to `max_output_bytes`, then the host
///   is stopped and marked `truncated`).
/// - Never sends credentials to hosts.
pub trait Collection: Send + Sync + std::fmt::Debug {
    /// The transport's name (`local`, `ssh`, `ssm`).
    fn name(&self) -> &str;

    /// How many hosts this transport works on at once when the caller does
    /// not say (a local shell: a few; SSH: hundreds). Default
    /// [`DEFAULT_CONCURRENCY`].
    fn default_concurrency(&self) -> usize {
        DEFAULT_CONCURRENCY
    }

    /// What each host in flight holds on this machine; the engine fits its
    /// concurrency to the process's limits with it. Default: nothing.
    fn host_cost(&self) -> HostCost {
        HostCost::NONE
    }

    /// Starts the collection; results arrive on the stream as hosts finish.
    fn collect(&self, request: CollectRequest) -> BoxStream<'static, CollectEvent>;
}

/// What one host in flight holds on this machine while a transport works on
/// it. The engine runs no more hosts at once than the process's limits on
/// open files and processes can give this to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostCost {
    /// Descriptors (pipes, sockets) held here per host.
    pub descriptors: u64,
    /// Child processes started here per host.
    pub processes: u64,
}

impl HostCost {
    /// Nothing held here per host (a transport that talks to an API).
    pub const NONE: HostCost = HostCost { descriptors: 0, processes: 0 };

    /// A cost of `descriptors` and `processes` per host.
    pub const fn new(descriptors: u64, processes: u64) -> Self {
        Self { descriptors, processes }
    }
}

/// Limits handed to [`HostExec::exec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecLimits {
    /// When to stop the host by force: the host deadline plus the grace period.
    pub deadline: Duration,
    /// Output bytes to keep before stopping the host.
    pub max_output_bytes: u64,
}

/// A transport that runs one script on one host at a time. Wrap it in
/// [`PerHost`] to get a [`Collection`] with concurrency, cancellation and
/// framing handled once for every such transport.
#[async_trait]
pub trait HostExec: Send + Sync + std::fmt::Debug + 'static {
    /// The transport's name.
    fn name(&self) -> &str;

    /// See [`Collection::default_concurrency`].
    fn default_concurrency(&self) -> usize {
        DEFAULT_CONCURRENCY
    }

    /// See [`Collection::host_cost`].
    fn host_cost(&self) -> HostCost {
        HostCost::NONE
    }

    /// Runs `script` on `host` (as `sh -s` with the script on standard input,
    /// or equivalent), honouring `limits` and `cancel`, and returns what came
    /// back. Failures are returned as [`crate::plugin::ExecEnd::Failed`].
    async fn exec(&self, host: &Host, script: &Script, limits: ExecLimits, cancel: &CancellationToken) -> Execution;
}

/// A [`Collection`] built from a [`HostExec`].
#[derive(Debug)]
pub struct PerHost<E> {
    exec: Arc<E>,
}

impl<E: HostExec> PerHost<E> {
    /// Wraps `exec`.
    pub fn new(exec: E) -> Self {
        Self { exec: Arc::new(exec) }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &E {
        &self.exec
    }
}

impl<E: HostExec> Collection for PerHost<E> {
    fn name(&self) -> &str {
        self.exec.name()
    }

    fn default_concurrency(&self) -> usize {
        self.exec.default_concurrency()
    }

    fn host_cost(&self) -> HostCost {
        self.exec.host_cost()
    }

    fn collect(&self, request: CollectRequest) -> BoxStream<'static, CollectEvent> {
        let (tx, rx) = mpsc::channel::<CollectEvent>(256);
        let exec = self.exec.clone();
        tokio::spawn(async move {
            let CollectRequest { hosts, spec, script, options, cancel } = request;
            let limits = ExecLimits {
                deadline: options.host_deadline + options.grace,
                max_output_bytes: options.max_output_bytes,
            };
            let concurrency = options.concurrency_or(exec.default_concurrency());
            futures::stream::iter(hosts)
                .for_each_concurrent(concurrency, |host| {
                    let (tx, exec, spec, script, cancel) =
                        (tx.clone(), exec.clone(), spec.clone(), script.clone(), cancel.clone());
                    async move {
                        if cancel.is_cancelled() {
                            let r = HostResult::failed(
                                host,
                                HostStatus::Cancelled,
                                "the run was interrupted before this host started",
                                Utc::now(),
                            );
                            let _ = tx.send(CollectEvent::Finished(Box::new(r))).await;
                            return;
                        }
                        let _ = tx.send(CollectEvent::Started(host.id.clone())).await;
                        // A transport that panics on one host fails that host,
                        // never the hosts after it.
                        let started = Utc::now();
                        let run = std::panic::AssertUnwindSafe(exec.exec(&host, &script, limits, &cancel));
                        let execution = futures::FutureExt::catch_unwind(run).await.unwrap_or_else(|p| {
                            let why = crate::script::panic_message(p.as_ref());
                            let message = format!("the {} transport failed on this host ({why})", exec.name());
                            Execution::failed(HostStatus::TransportError, message, started)
                        });
                        let result = assemble_blocking(host, spec, script, execution).await;
                        let _ = tx.send(CollectEvent::Finished(Box::new(result))).await;
                    }
                })
                .await;
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::query::{OutputFormat, Query};
    use crate::script::ExecEnd;

    #[test]
    fn options_round_trip_through_json() {
        for o in [CollectOptions::default(), CollectOptions::default().concurrency(7)] {
            let text = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<CollectOptions>(&text).unwrap(), o, "{text}");
        }
        let o: CollectOptions = serde_json::from_str(r#"{"concurrency": null}"#).unwrap();
        assert_eq!(o.concurrency, None);
        let e = serde_json::from_str::<CollectOptions>(r#"{"concurrency": 0}"#).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    /// Answers every host with an empty exit 0, and panics on `b`.
    #[derive(Debug)]
    struct PanicsOnB;

    #[async_trait]
    impl HostExec for PanicsOnB {
        fn name(&self) -> &str {
            "panics-on-b"
        }

        fn default_concurrency(&self) -> usize {
            1
        }

        async fn exec(&self, host: &Host, _: &Script, _: ExecLimits, _: &CancellationToken) -> Execution {
            assert!(host.id.as_str() != "b", "a transport bug");
            Execution {
                stdout: Bytes::new(),
                stderr: Bytes::new(),
                end: ExecEnd::Exited(0),
                started_at: Utc::now(),
                finished_at: Utc::now(),
                transport: Default::default(),
            }
        }
    }

    #[tokio::test]
    async fn a_transport_that_panics_on_one_host_fails_that_host_only() {
        let spec = PayloadSpec {
            name: "t".into(),
            setup: None,
            queries: vec![Query::shell("q", "true", OutputFormat::Lines)],
            teardown: None,
        };
        let script = Script::render_with_nonce(&spec, Duration::from_secs(5), "n").unwrap();
        let hosts: Vec<Host> = ["a", "b", "c"].map(|h| Host::named(h).unwrap()).to_vec();
        let request = CollectRequest {
            hosts,
            spec: Arc::new(spec),
            script: Arc::new(script),
            options: CollectOptions::default().concurrency(1),
            cancel: CancellationToken::new(),
        };
        let results: Vec<HostResult> = PerHost::new(PanicsOnB)
            .collect(request)
            .filter_map(|e| async move {
                match e {
                    CollectEvent::Finished(r) => Some(*r),
                    CollectEvent::Started(_) => None,
                }
            })
            .collect()
            .await;
        let ids: Vec<&str> = results.iter().map(|r| r.host.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "the host after the panic is still collected");
        assert_eq!(results[1].status, HostStatus::TransportError);
        let m = results[1].message.as_deref().unwrap();
        assert!(m.contains("the panics-on-b transport failed on this host (a panic: a transport bug)"), "{m}");
    }
}
