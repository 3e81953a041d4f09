//! Analysis: turning runs into a report.

use async_trait::async_trait;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};

use crate::Result;
use crate::names::Host;
use crate::query::PayloadSpec;
use crate::report::{BaselineProvenance, Method, Report, RunSummary};
use crate::result::HostObservation;
use crate::run::NotTargeted;

/// Hosts' parsed evidence, one host at a time, so that analyses of large
/// fleets need not hold every host's rows at once.
pub struct Observations(BoxStream<'static, Result<HostObservation>>);

impl Observations {
    /// Wraps a stream.
    pub fn new(stream: impl Stream<Item = Result<HostObservation>> + Send + 'static) -> Self {
        Self(stream.boxed())
    }

    /// Observations already in memory.
    pub fn from_vec(hosts: Vec<HostObservation>) -> Self {
        Self::new(futures::stream::iter(hosts.into_iter().map(Ok)))
    }
}

impl std::fmt::Debug for Observations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observations(..)")
    }
}

impl Stream for Observations {
    type Item = Result<HostObservation>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// The baseline to compare against.
#[derive(Debug)]
pub struct BaselineInput {
    /// Where it came from.
    pub provenance: BaselineProvenance,
    /// The payload it was collected with.
    pub payload: PayloadSpec,
    /// Its hosts' evidence.
    pub hosts: Observations,
}

/// One earlier run of the same target key, for novelty.
#[derive(Debug)]
pub struct HistoryInput {
    /// The run.
    pub run: RunSummary,
    /// Its hosts' evidence.
    pub hosts: Observations,
}

/// Everything an analysis looks at.
#[derive(Debug)]
pub struct AnalysisInput {
    /// The run analysed, when it came from the store.
    pub run: Option<RunSummary>,
    /// The folder analysed, for imported evidence.
    pub imported_from: Option<String>,
    /// The methods to apply.
    pub methods: Vec<Method>,
    /// The payload the survey was collected with (query names, identity and
    /// volatile columns, weights).
    pub payload: PayloadSpec,
    /// Every host the run set out to query. Hosts without an observation are
    /// reported as missing.
    pub targeted: Vec<Host>,
    /// Hosts of the target left out before collection.
    pub not_targeted: Vec<NotTargeted>,
    /// The survey's evidence.
    pub survey: Observations,
    /// The baseline, when the baseline method is asked for and one exists.
    pub baseline: Option<BaselineInput>,
    /// Earlier runs within the novelty window, oldest first.
    pub history: Vec<HistoryInput>,
    /// The novelty window in days (for the report).
    pub history_days: u32,
}

/// Turns evidence into a report.
///
/// # Contract
/// - The report has one [`HostReport`](crate::HostReport) per targeted host,
///   failed ones included (with their status, score 0, not outlier).
/// - Every finding carries its prevalence ("k of N hosts") and an explanation.
/// - Coverage is always filled in, and a warning is added when hosts are
///   missing or the herd is too small for the result to mean much.
/// - A method asked for but impossible (baseline without a baseline) is a
///   warning in the report, not an error.
/// - `Err` is for failures to read the evidence, not for odd evidence.
#[async_trait]
pub trait Analysis: Send + Sync + std::fmt::Debug {
    /// The analysis's name.
    fn name(&self) -> &str;

    /// Analyses `input`.
    async fn analyze(&self, input: AnalysisInput) -> Result<Report>;
}
