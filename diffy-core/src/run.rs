//! Runs: one collection over a target, with its provenance and coverage.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{Host, RunId, TargetKey};
use crate::query::PayloadSpec;
use crate::result::HostStatus;

/// What a run is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Collected from known-clean hosts, to compare later runs against.
    Baseline,
    /// Collected during an incident, to find the outliers.
    Survey,
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunKind::Baseline => "baseline",
            RunKind::Survey => "survey",
        })
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunState {
    /// Collection is under way, or the collecting process died (a run that
    /// stays `running` was never finished: treat it as incomplete).
    Running,
    /// Every targeted host reported.
    Complete,
    /// Stopped early (Ctrl-C); the hosts that reported are kept.
    Interrupted,
}

/// A host that was part of the target but not queried, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotTargeted {
    /// The host.
    pub host: Host,
    /// Why it was left out ("lifecycle state Pending", "not managed by SSM").
    pub reason: String,
}

/// Counts of hosts by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCounts {
    /// Hosts the run set out to query.
    pub targeted: usize,
    /// Hosts that returned usable evidence (status `ok` or `partial`).
    pub collected: usize,
    /// Hosts that reported a failure.
    pub failed: usize,
    /// Hosts that never reported (the run was interrupted first).
    pub missing: usize,
    /// Hosts per status.
    pub by_status: BTreeMap<String, usize>,
}

impl RunCounts {
    /// Counts `statuses` against `targeted` hosts.
    pub fn tally(targeted: usize, statuses: impl IntoIterator<Item = HostStatus>) -> Self {
        let mut counts = RunCounts { targeted, ..Default::default() };
        let mut reported = 0;
        for s in statuses {
            reported += 1;
            if s.is_collected() {
                counts.collected += 1;
            } else {
                counts.failed += 1;
            }
            *counts.by_status.entry(s.as_str().to_string()).or_default() += 1;
        }
        counts.missing = targeted.saturating_sub(reported);
        counts
    }
}

/// Limits a run was collected with, kept for the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunLimits {
    /// Hosts queried at once: what ran, after fitting to the process's limits.
    pub concurrency: usize,
    /// The concurrency asked for, when the limits on open files or processes
    /// could not hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_concurrency: Option<usize>,
    /// Why fewer hosts ran at once than asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_capped: Option<String>,
    /// Per-host deadline, in seconds.
    pub host_deadline_secs: u64,
    /// Per-host output limit, in bytes.
    pub max_output_bytes: u64,
}

/// Everything about a run except the hosts' evidence: who, what, when, how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunManifest {
    /// The run's id.
    pub id: RunId,
    /// Baseline or survey.
    pub kind: RunKind,
    /// The target key.
    pub target: TargetKey,
    /// The incident this run belongs to, if given.
    pub incident_id: Option<String>,
    /// Who ran it.
    pub operator: Option<String>,
    /// Diffy's version.
    pub tool_version: String,
    /// The target plugin that resolved the hosts.
    pub target_plugin: String,
    /// The transport that collected.
    pub transport: String,
    /// The payload, in full, so the evidence can be re-read without it.
    pub payload: PayloadSpec,
    /// SHA-256 of the payload.
    pub payload_hash: String,
    /// Collection limits.
    pub limits: RunLimits,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it finished (absent while running).
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the run stands.
    pub state: RunState,
    /// The hosts it set out to query.
    pub hosts: Vec<Host>,
    /// Hosts of the target that were left out, and why.
    pub not_targeted: Vec<NotTargeted>,
    /// Outcome counts (final once the run is finished).
    pub counts: RunCounts,
}

impl RunManifest {
    /// Whether every targeted host reported.
    pub fn is_complete(&self) -> bool {
        self.state == RunState::Complete
    }
}

/// The current baseline of a target key: which run, set when and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineRecord {
    /// The target key.
    pub target: TargetKey,
    /// The baseline run.
    pub run: RunId,
    /// When it was made the baseline.
    pub set_at: DateTime<Utc>,
    /// Who made it the baseline.
    pub set_by: Option<String>,
    /// The run it replaced, if any (kept in the store).
    pub replaces: Option<RunId>,
}
