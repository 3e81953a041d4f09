//! The report: per host a status, a score, an outlier flag and findings that
//! say why; cohorts; coverage. This is Diffy's output contract: its JSON
//! Schema ([`Report::json_schema`]) is snapshotted, and every type here rejects
//! unknown fields so that consumers notice any change.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{RunId, TargetKey};
use crate::query::Row;
use crate::result::{HostStatus, QueryStatus};
use crate::run::{RunKind, RunManifest, RunState};
use crate::vantage::Vantage;

/// The value of [`Report::schema`] for this version of the report.
pub const REPORT_SCHEMA: &str = "diffy.report/v1";

/// An analysis method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Method {
    /// Each host against the herd: rare rows, cohorts.
    Cluster,
    /// Each host against a baseline collected from clean hosts.
    Baseline,
    /// Rows this target key has not shown in earlier runs.
    Novelty,
}

impl Method {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Baseline => "baseline",
            Method::Cluster => "cluster",
            Method::Novelty => "novelty",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Method {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "baseline" => Ok(Method::Baseline),
            "cluster" => Ok(Method::Cluster),
            "novelty" => Ok(Method::Novelty),
            other => Err(crate::Error::invalid_with_help(
                format!("unknown analysis method {other:?}"),
                "use baseline, cluster or novelty (several separated by commas), or all",
            )),
        }
    }
}

/// On how many hosts something was seen, of how many that could have shown it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prevalence {
    /// Hosts on which it was seen.
    pub hosts: usize,
    /// Hosts whose evidence for this query was usable.
    pub of: usize,
}

impl fmt::Display for Prevalence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} hosts", self.hosts, self.of)
    }
}

/// How a finding's row relates to what is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// Present here, on few other hosts (cluster).
    Rare,
    /// Present here, not in the baseline (baseline).
    Added,
    /// In the baseline, absent here (baseline).
    Removed,
    /// The same identity (a file's path, a user's name) with other attributes
    /// than the baseline's or the herd's (baseline, cluster).
    Changed,
    /// Present on nearly every other host, absent here (cluster).
    Missing,
    /// Never seen on this target in the history window (novelty).
    New,
}

impl FindingKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Rare => "rare",
            FindingKind::Added => "added",
            FindingKind::Removed => "removed",
            FindingKind::Changed => "changed",
            FindingKind::Missing => "missing",
            FindingKind::New => "new",
        }
    }
}

/// One reason a host stands out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The query whose row this is.
    pub query: String,
    /// How the row relates to what is expected.
    pub kind: FindingKind,
    /// The methods that raised it.
    pub methods: Vec<Method>,
    /// The row as this host reported it (for `removed` and `missing`: the
    /// expected row this host lacks).
    pub row: Row,
    /// For `changed`: the row others (or the baseline) have for the same identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Row>,
    /// On how many hosts this row was seen.
    pub prevalence: Prevalence,
    /// This finding's part of the host's score.
    pub score: f64,
    /// What makes the row security-relevant ("executable in /tmp", "uid 0").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indicators: Vec<String>,
    /// One sentence saying what was seen, where, and why it matters.
    pub explanation: String,
}

/// A query that gave no usable rows on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryFailure {
    /// The query.
    pub query: String,
    /// How it failed.
    pub status: QueryStatus,
    /// Why.
    pub message: String,
}

/// One targeted host in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// The host's id.
    pub host: String,
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How collection ended.
    pub status: HostStatus,
    /// Why, when the status is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Position by score among analysed hosts, 1 = most anomalous.
    pub rank: Option<usize>,
    /// The host's anomaly score (sum of its findings' scores, see the analysis's
    /// documentation).
    pub score: f64,
    /// Whether the score reaches the report's threshold.
    pub outlier: bool,
    /// Cohorts the host belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohorts: Vec<String>,
    /// Campaigns (the same security-relevant rows on several hosts) the host
    /// belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<String>,
    /// Why the host stands out, highest score first.
    pub findings: Vec<Finding>,
    /// Queries that gave no usable rows on this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_queries: Vec<QueryFailure>,
    /// Findings matched by a suppression rule (counted, not scored).
    #[serde(default)]
    pub suppressed: usize,
    /// How its evidence was collected (user, sudo, `/proc`), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vantage: Option<Vantage>,
    /// Queries that could not read everything on this host: their rows are
    /// what the payload could see, and nothing absent from them is reported
    /// as missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen: Vec<QueryUnseen>,
}

/// What one query could not read on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryUnseen {
    /// The query.
    pub query: String,
    /// How many files, directories or processes it was denied.
    pub count: usize,
    /// The first of them.
    pub first: Vec<String>,
}

/// What the run's evidence could not see: the first thing a reader must know
/// before trusting "no outliers".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Visibility {
    /// Analysed hosts whose evidence saw only part of what the payload asks
    /// (a query was denied something, or the collection ran without root,
    /// under `hidepid` or confined).
    pub partial: usize,
    /// Analysed hosts that did not say how they were collected (imported
    /// evidence, runs of older versions).
    pub unknown: usize,
    /// How the analysed hosts were collected, one entry per way.
    pub collected_as: Vec<VantageGroup>,
    /// Per query: on how many hosts it could not read everything.
    pub queries: Vec<QueryVisibility>,
    /// Whether hosts were collected with different privileges: rows only the
    /// privileged could read look rare on them.
    pub mixed_privileges: bool,
    /// What the reader should do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// Hosts collected the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VantageGroup {
    /// User and uid (`root (uid 0)`, `ops (uid 1001)`).
    pub user: String,
    /// Limits on what it could see, in words (empty: none known).
    pub limits: Vec<String>,
    /// How many hosts.
    pub hosts: usize,
    /// The first of them.
    pub examples: Vec<String>,
}

/// One query's blind spots across the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryVisibility {
    /// The query.
    pub query: String,
    /// On how many analysed hosts it could not read everything.
    pub hosts: usize,
    /// Items denied, summed over those hosts.
    pub unseen: usize,
    /// The first items denied (distinct, across hosts).
    pub first: Vec<String>,
}

/// Whether a cohort's distinguishing row is present on its hosts or absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// The cohort's hosts have this row; the others do not.
    Present,
    /// The others have this row; the cohort's hosts do not.
    Absent,
}

/// A row that sets a cohort apart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CohortRow {
    /// The query.
    pub query: String,
    /// Present on the cohort, or absent from it.
    pub presence: Presence,
    /// The row (normalised: volatile columns left out).
    pub row: Row,
    /// On how many hosts the row was seen.
    pub prevalence: Prevalence,
}

/// What explains a cohort.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CohortKind {
    /// A label (a launch template version, an image, an instance type, a
    /// launch window, a label of the host list) sets these hosts apart: a
    /// deploy. Its rows, sensitive ones included, are not scored.
    Deploy,
    /// No label explains it: only rows that are not security-relevant are
    /// left unscored; any sensitive row it had is scored (see campaigns).
    #[default]
    Unexplained,
}

/// A sizeable group of hosts that differ from the rest in the same way (a
/// canary, a blue/green half): reported once, not as outliers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cohort {
    /// The cohort's id within this report (`cohort-1`, ...).
    pub id: String,
    /// Deploy (a label explains it) or unexplained.
    #[serde(default)]
    pub kind: CohortKind,
    /// The label that explains it (`launch_template=lt-0abc v8`, `launched
    /// 2026-11-30T10:00:00Z to 2026-11-30T10:20:00Z`), for a deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explained_by: Option<String>,
    /// Its hosts.
    pub hosts: Vec<String>,
    /// How many hosts it has, of how many analysed.
    pub prevalence: Prevalence,
    /// Labels every host of the cohort shares and some others lack.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The rows that set it apart.
    pub rows: Vec<CohortRow>,
    /// One sentence saying what the cohort is.
    pub explanation: String,
}

/// One row of a campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRow {
    /// The query.
    pub query: String,
    /// Rare, changed, added or new.
    pub kind: FindingKind,
    /// The row (normalised: volatile columns left out).
    pub row: Row,
    /// Why it is security-relevant.
    pub indicators: Vec<String>,
    /// On how many hosts, of how many with usable evidence for the query.
    pub prevalence: Prevalence,
    /// The hosts that have it.
    pub hosts: Vec<String>,
}

/// The same security-relevant rows on several hosts, that no deploy explains:
/// one compromise run across the fleet. Each row scores at least the analysis's
/// strong floor on every host that has it (alone, the default threshold).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// The campaign's id within this report (`campaign-1`, ...).
    pub id: String,
    /// On most of the fleet (more than half of the hosts): the worst case,
    /// reported first.
    pub fleet_wide: bool,
    /// Every host that has one of its rows.
    pub hosts: Vec<String>,
    /// How many hosts, of how many analysed.
    pub prevalence: Prevalence,
    /// Its rows, strongest first.
    pub rows: Vec<CampaignRow>,
    /// One sentence saying what it is.
    pub explanation: String,
}

/// A difference shared by most of the fleet (drift since the baseline, a row
/// new to the whole group): reported once, not per host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetFinding {
    /// The query.
    pub query: String,
    /// Added, removed, changed or new.
    pub kind: FindingKind,
    /// The method that raised it.
    pub method: Method,
    /// The row.
    pub row: Row,
    /// On how many hosts.
    pub prevalence: Prevalence,
    /// One sentence.
    pub explanation: String,
}

/// A host that gave no usable evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostFailure {
    /// The host.
    pub host: String,
    /// Its status.
    pub status: HostStatus,
    /// Why.
    pub message: Option<String>,
}

/// A host of the target that was not queried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotTargetedHost {
    /// The host.
    pub host: String,
    /// Why it was left out.
    pub reason: String,
}

/// Who was looked at, and who could not be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Coverage {
    /// Hosts the run set out to query.
    pub targeted: usize,
    /// Hosts with usable evidence, which the analysis covers.
    pub collected: usize,
    /// Hosts that failed (see `failed_hosts`).
    pub failed: usize,
    /// Hosts that never reported because the run was interrupted.
    pub missing: usize,
    /// Hosts of the target left out before collection (see `not_targeted_hosts`).
    pub not_targeted: usize,
    /// Host-query pairs without usable rows (on collected hosts).
    pub failed_queries: usize,
    /// The failed hosts.
    pub failed_hosts: Vec<HostFailure>,
    /// The hosts left out.
    pub not_targeted_hosts: Vec<NotTargetedHost>,
}

impl Coverage {
    /// Whether every targeted host was analysed and none was left out.
    pub fn is_full(&self) -> bool {
        self.failed == 0 && self.missing == 0 && self.not_targeted == 0
    }
}

/// Where the baseline came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineProvenance {
    /// The baseline run, when it came from the store.
    pub run: Option<RunId>,
    /// Where it came from otherwise (a `baseline.json` file).
    pub source: Option<String>,
    /// The clean hosts it was taken from.
    pub hosts: Vec<String>,
    /// When it was collected.
    pub collected_at: Option<DateTime<Utc>>,
    /// The payload hash it was collected with.
    pub payload_hash: Option<String>,
    /// A row is part of the baseline when at least this many of its hosts have it.
    pub min_hosts: usize,
}

/// The earlier runs novelty compared against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryWindow {
    /// Days looked back.
    pub days: u32,
    /// Runs found in that window.
    pub runs: usize,
    /// The oldest run's start.
    pub since: Option<DateTime<Utc>>,
}

/// Findings matched by one suppression rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressedCount {
    /// The rule's reason.
    pub reason: String,
    /// The rule's query.
    pub query: String,
    /// Findings it matched.
    pub findings: usize,
    /// Hosts those findings were on.
    pub hosts: usize,
}

/// The run a report is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    /// Run id.
    pub id: RunId,
    /// Target key.
    pub target: TargetKey,
    /// Baseline or survey.
    pub kind: RunKind,
    /// Incident id.
    pub incident_id: Option<String>,
    /// Operator.
    pub operator: Option<String>,
    /// Payload hash.
    pub payload_hash: String,
    /// The payload's name (`osquery`, `shell`, a file's): which pack answered.
    /// Each query's description says what osquery and the shell pack see
    /// differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether every host reported.
    pub state: RunState,
    /// Hosts collected at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Why that was fewer than asked (the limits on open files or processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_capped: Option<String>,
}

impl From<&RunManifest> for RunSummary {
    fn from(m: &RunManifest) -> Self {
        RunSummary {
            id: m.id.clone(),
            target: m.target.clone(),
            kind: m.kind,
            incident_id: m.incident_id.clone(),
            operator: m.operator.clone(),
            payload_hash: m.payload_hash.clone(),
            payload: Some(m.payload.name.clone()),
            started_at: m.started_at,
            finished_at: m.finished_at,
            state: m.state,
            concurrency: Some(m.limits.concurrency),
            concurrency_capped: m.limits.concurrency_capped.clone(),
        }
    }
}

/// The analysis of one run (or of imported evidence).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Always [`REPORT_SCHEMA`] for this version.
    pub schema: String,
    /// The tool and version that made it (`diffy 0.1.0`).
    pub tool: String,
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// The run analysed, when it came from the store.
    pub run: Option<RunSummary>,
    /// The folder analysed, for `--import`.
    pub imported_from: Option<String>,
    /// The methods applied.
    pub methods: Vec<Method>,
    /// The score at which a host is an outlier.
    pub threshold: f64,
    /// Who was looked at.
    pub coverage: Coverage,
    /// Every targeted host, highest score first, then hosts without evidence.
    pub hosts: Vec<HostReport>,
    /// The same security-relevant rows on several hosts (fleet-wide ones first).
    #[serde(default)]
    pub campaigns: Vec<Campaign>,
    /// Groups of hosts that differ together.
    pub cohorts: Vec<Cohort>,
    /// Differences shared by most of the fleet.
    pub drift: Vec<FleetFinding>,
    /// The baseline used, if any.
    pub baseline: Option<BaselineProvenance>,
    /// The history used, if any.
    pub history: Option<HistoryWindow>,
    /// Suppressed findings, per rule.
    pub suppressed: Vec<SuppressedCount>,
    /// Things the reader must know to trust the result (a small herd, missing
    /// hosts, an expired suppression).
    pub warnings: Vec<String>,
    /// What the evidence could not see.
    #[serde(default)]
    pub visibility: Visibility,
}

/// What a report comes to, for a caller deciding what to do next (and for a
/// process's exit status: [`Outcome::exit_code`]).
///
/// ```
/// use diffy_core::report::Outcome;
/// assert_eq!(Outcome::Outliers.exit_code(), 1);
/// assert_eq!(Outcome::Clean.exit_code(), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// At least one host is an outlier: it needs acting on, whatever else
    /// failed.
    Outliers,
    /// Nothing found, and the analysed hosts' evidence saw what the payload
    /// asks.
    Clean,
    /// Nothing found, but every analysed host saw only part of what the
    /// payload asks (collected without root, say): "clean" would say too much.
    PartialView,
    /// No host's evidence could be analysed.
    NothingAnalysed,
}

impl Outcome {
    /// The exit status `diffy` gives it: clean 0, outliers 1, nothing
    /// analysed 2, a partial view 3.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Clean => 0,
            Self::Outliers => 1,
            Self::NothingAnalysed => 2,
            Self::PartialView => 3,
        }
    }
}

impl Report {
    /// What the report comes to: outliers first (whatever else failed), then
    /// nothing analysed, a partial view, or clean.
    pub fn outcome(&self) -> Outcome {
        if self.outliers().next().is_some() {
            Outcome::Outliers
        } else if self.coverage.collected == 0 {
            Outcome::NothingAnalysed
        } else if self.partial_view() {
            Outcome::PartialView
        } else {
            Outcome::Clean
        }
    }

    /// The hosts marked outlier, in rank order.
    pub fn outliers(&self) -> impl Iterator<Item = &HostReport> {
        self.hosts.iter().filter(|h| h.outlier)
    }

    /// Whether every analysed host saw only part of what the payload asks:
    /// "no outliers" on such a run says little.
    pub fn partial_view(&self) -> bool {
        self.coverage.collected > 0 && self.visibility.partial == self.coverage.collected
    }

    /// The JSON Schema of the report.
    pub fn json_schema() -> schemars::Schema {
        schemars::schema_for!(Report)
    }
}
