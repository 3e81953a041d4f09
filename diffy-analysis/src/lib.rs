//! # diffy-analysis
//!
//! Finds the hosts of a fleet that deserve forensics, and says why.
//!
//! Three methods, alone or together; each finding says which raised it:
//!
//! - **cluster**: no baseline needed. For each query, how many hosts have each
//!   normalised row ([`profile`]). Rows on few hosts are findings ("seen on 1
//!   of 200 hosts"); rows on nearly every host but this one are `missing`; a
//!   row whose identity (a file's path, a user's name) is common but whose
//!   attributes differ is `changed`.
//! - **baseline**: each host against a baseline from one or several clean hosts
//!   (a row belongs to the baseline when most of its hosts have it): `added`,
//!   `removed`, `changed`. Differences shared by most of the fleet are reported
//!   once as drift, not on every host.
//! - **novelty**: rows the target key has never shown in its earlier runs of
//!   the last N days are `new`; new rows on most hosts are reported once as drift.
//!
//! ## Cohorts
//!
//! Hosts that differ from the rest *together* — the same rows present (or
//! absent) on the same group of at least `max(2, 3 %)` of the hosts and at
//! most half — are a cohort: a canary, a blue/green half, a launch template
//! version. A cohort needs at least two such rows (a deploy adds something and
//! removes something), groups whose host sets overlap by 80 % or more are
//! merged, and a cohort of two hosts must have both gained and lost rows (a
//! replacement, not just additions). A cohort's rows are reported once with
//! the cohort and are not scored, within limits set by each row's
//! [`indicators::Relevance`]:
//!
//! - a **deploy** cohort is one that a label explains: some `key=value` of the
//!   hosts (launch template or configuration version, image, instance type,
//!   Auto Scaling group, any label of `--hosts` or of imported host files)
//!   whose hosts are the cohort's within a fifth (Jaccard ≥ 0.8), or a launch
//!   window holding the cohort's hosts and (nearly) no others; placement
//!   labels (zone, region, account) do not count. It explains every row but
//!   patterns of attack, and needs no particular shape (one row on two hosts
//!   will do);
//! - an **unexplained** cohort explains only rows that are not
//!   security-relevant. Its sensitive rows (a changed system binary, a new
//!   key, account or kernel module, a PAM or sudoers rule, a web server or
//!   interpreter listening) are scored like anyone's. Rows with indicators of
//!   severity above 2 that are not sensitive never join a cohort.
//!
//! ## Campaigns
//!
//! The same compromise run across the fleet lands the same rows on many hosts.
//! A strong row (attack or sensitive, not explained by a deploy) counts, for
//! the cluster method, on any share up to half of the analysed hosts (a herd of
//! [`MIN_HERD`] or more, not counting hosts that could not read where it lies,
//! and not on nine tenths of those that could read it), and whatever its share
//! when the baseline lacks it or the target's history never showed it: it
//! contributes at least
//! [`STRONG_FLOOR`] plus its rarity, so that alone it makes its host an outlier
//! and rarer rows still rank higher. Strong rows on two hosts or more are
//! grouped by the hosts that have them into the report's campaigns, each
//! naming its hosts; one on most of the fleet is **fleet-wide**, listed first
//! and repeated at the top of the warnings. A file hash that fails its
//! package's checksum is never the usual value of its path, so a tampered
//! binary on half the fleet is still the changed one.
//!
//! ## Scoring
//!
//! Each finding contributes `weight × severity × strength`:
//!
//! - **weight** of the query, as the payload declares it, else by kind:
//!   kernel_modules 6, hidden_processes 6, persistence 5, file_capabilities 5, users 4,
//!   authorized_keys 4, loaded_code 4, file_hashes 3, suid_bin 3, temp_files 3, shadow 3,
//!   package_integrity 3, crontab 2.5, listening_ports 2, startup_items 2, processes 1,
//!   other 1, shell_history 0.5;
//! - **severity** from the row's security indicators ([`indicators`]), 1 when
//!   none (a second uid-0 account 8, a reverse shell 6, an executable in `/tmp`
//!   5, a download-and-run cron entry 5, a changed system binary 2, ...), and
//!   0.2 for kernel threads, whose presence comes and goes;
//! - **strength** from the method: cluster uses [`rarity`] (1 for rows on at
//!   most max(1, 2 %) of the hosts, falling to 0 at half of them); absences
//!   count half; baseline and novelty count fully when the herd is smaller than
//!   [`MIN_HERD`] hosts, else like cluster (novelty: `0.5 × (1 − k/N)`);
//! - strong rows contribute at least [`STRONG_FLOOR`] plus their rarity (see
//!   campaigns).
//!
//! Within one query, findings count with diminishing returns (1, ½, ¼, …), so
//! a flood of weak rows of one kind cannot outweigh one strong row, while
//! evidence across queries (a listener, its process, its cron entry) adds up.
//! A host is an **outlier** when its score reaches the threshold, 5 by
//! default: one strong finding alone (a new kernel module, a root key, a
//! process from `/tmp`), or several moderate ones together, but not a few
//! ordinary rare rows.
//!
//! ## Speed
//!
//! Rows are normalised and interned as they are read: each distinct row is
//! stored once per query and hosts hold row ids. [`Analyzer::analyze_import`]
//! reads host files in parallel straight into those tables.
#![deny(missing_docs)]

mod dataset;
mod explain;
mod import;
pub mod indicators;
pub mod profile;
mod score;
pub mod suppress;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diffy_core::report::{BaselineProvenance, Method, Report};
use diffy_core::{Analysis, AnalysisInput, Error, HostObservation, PayloadSpec, QueryOutcome, Result};
use futures::StreamExt;
use serde::Deserialize;

use crate::dataset::{Builder, Profiles, Role, Scratch, Seen};
use crate::profile::{HostNames, Profile};
pub use crate::score::{MIN_HERD, STRONG_FLOOR, cohort_min, rarity};

/// Entry points for the fuzz targets (`fuzz/`) and their corpus replay; not
/// part of the supported API.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    /// Reads one `--import` host file's bytes as `analyze --import` does:
    /// the host's status and how many rows it gave.
    pub fn import_host_file(bytes: &[u8]) -> (diffy_core::HostStatus, usize) {
        let profiles = Arc::new(crate::dataset::Profiles::new(std::iter::empty()));
        crate::import::read_one(bytes, profiles)
    }
}
pub use crate::suppress::Suppressions;

/// The default outlier threshold.
pub const DEFAULT_THRESHOLD: f64 = 5.0;

/// Overrides of a query's normalisation, e.g. from `[queries.NAME]` in `diffy.toml`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRules {
    /// Identity columns.
    pub identity: Option<Vec<String>>,
    /// Volatile columns.
    pub volatile: Option<Vec<String>>,
    /// Weight of a fully rare row.
    pub weight: Option<f64>,
}

/// Diffy's analysis. See the crate documentation for the methods and scoring.
#[derive(Clone, Debug)]
pub struct Analyzer {
    threshold: f64,
    suppressions: Suppressions,
    rules: BTreeMap<String, QueryRules>,
    now: Option<DateTime<Utc>>,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self { threshold: DEFAULT_THRESHOLD, suppressions: Suppressions::none(), rules: BTreeMap::new(), now: None }
    }
}

impl Analyzer {
    /// An analyzer with the default threshold and no suppressions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the outlier threshold (a score, see the crate documentation).
    pub fn threshold(mut self, threshold: f64) -> Result<Self> {
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(Error::invalid(format!("threshold {threshold} is unusable; use a number above 0")));
        }
        self.threshold = threshold;
        Ok(self)
    }

    /// Sets the suppressions.
    pub fn suppressions(mut self, s: Suppressions) -> Self {
        self.suppressions = s;
        self
    }

    /// Overrides one query's normalisation.
    pub fn query_rules(mut self, query: impl Into<String>, rules: QueryRules) -> Self {
        self.rules.insert(query.into(), rules);
        self
    }

    /// Fixes "now" (for suppression expiry and the report's time), for tests.
    pub fn now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }

    fn apply_rules(&self, mut p: Profile) -> Profile {
        if let Some(r) = self.rules.get(&p.name) {
            if let Some(i) = &r.identity {
                p.identity = i.clone();
            }
            if let Some(v) = &r.volatile {
                p.volatile = v.iter().cloned().collect();
            }
            if let Some(w) = r.weight {
                p.weight = w;
            }
        }
        p
    }

    fn profiles(&self, payload: Option<&PayloadSpec>) -> Profiles {
        let mut all: Vec<Profile> = payload.map(|p| p.queries.iter().map(Profile::of).collect()).unwrap_or_default();
        for name in self.rules.keys() {
            if !all.iter().any(|p| &p.name == name) {
                all.push(Profile::by_name(name));
            }
        }
        Profiles::new(all.into_iter().map(|p| self.apply_rules(p)))
    }

    fn settings(&self) -> score::Settings {
        score::Settings { threshold: self.threshold, now: self.now.unwrap_or_else(Utc::now) }
    }

    /// Analyses a folder of evidence collected elsewhere (see the `import`
    /// format below), without collecting. `methods`: default cluster, plus
    /// baseline when the folder has `baseline.json`.
    ///
    /// ```text
    /// DIR/hosts/<host id>.json   {"instance_id": "...", "results": {"<query>": [{col: "value"}, ...]}}
    /// DIR/baseline.json          optional, the same shape (or an array of such objects)
    /// ```
    pub fn analyze_import(&self, dir: &Path, methods: Option<&[Method]>) -> Result<Report> {
        let profiles = Arc::new(self.profiles(None));
        let imported = import::load(dir, profiles)?;
        let has_baseline = !imported.builder.baseline.is_empty();
        let mut warnings = Vec::new();
        let methods: Vec<Method> = match methods {
            Some(m) => m.to_vec(),
            None if has_baseline => vec![Method::Cluster, Method::Baseline],
            None => vec![Method::Cluster],
        };
        if methods.contains(&Method::Baseline) && !has_baseline {
            warnings.push(format!("no baseline.json in {}: the baseline method was skipped", dir.display()));
        }
        if methods.contains(&Method::Novelty) {
            warnings.push("imported evidence has no history: the novelty method was skipped".into());
        }
        let applied: Vec<Method> = methods
            .iter()
            .copied()
            .filter(|m| match m {
                Method::Cluster => true,
                Method::Baseline => has_baseline,
                // Imported evidence has no history; a method added later
                // is not applied to it until it says how.
                _ => false,
            })
            .collect();
        let baseline = imported.baseline_source.map(|source| BaselineProvenance {
            run: None,
            source: Some(source),
            hosts: Vec::new(),
            collected_at: None,
            payload_hash: None,
            min_hosts: 0,
        });
        let ctx = score::Context {
            run: None,
            imported_from: Some(dir.display().to_string()),
            methods: applied,
            targeted: None,
            not_targeted: Vec::new(),
            baseline,
            history: None,
            history_days: 0,
            warnings,
        };
        let t0 = std::time::Instant::now();
        let r = score::analyze(imported.builder, ctx, &self.settings(), &self.suppressions);
        tracing::debug!("scored {} hosts in {:?}", r.coverage.collected, t0.elapsed());
        Ok(r)
    }
}

fn add_observation(builder: &mut Builder, role: Role, obs: &HostObservation) {
    let mut sink = builder.host(
        role,
        obs.host.id.to_string(),
        obs.facts.hostname.clone(),
        obs.host.labels.clone(),
        obs.status,
        obs.message.clone(),
    );
    sink.vantage(obs.vantage.clone());
    for q in &obs.queries {
        if let Some(u) = &q.unseen {
            sink.unseen(&q.query, u.clone());
        }
        match &q.outcome {
            QueryOutcome::Rows(rows) => {
                sink.rows(&q.query, rows.iter().map(|r| r.iter().map(|(c, v)| (c.as_str(), v.as_str())).collect()))
            }
            QueryOutcome::Failed { status, message } => sink.failed(&q.query, *status, message.clone()),
        }
    }
    sink.finish();
}

#[async_trait]
impl Analysis for Analyzer {
    fn name(&self) -> &str {
        "diffy"
    }

    async fn analyze(&self, input: AnalysisInput) -> Result<Report> {
        let profiles = Arc::new(self.profiles(Some(&input.payload)));
        let mut builder = Builder::new(profiles.clone());
        let mut warnings = Vec::new();
        let mut survey = input.survey;
        while let Some(obs) = survey.next().await {
            add_observation(&mut builder, Role::Survey, &obs?);
        }
        let mut methods = input.methods.clone();
        let mut baseline = None;
        match input.baseline {
            Some(b) if methods.contains(&Method::Baseline) => {
                if b.payload.hash() != input.payload.hash() {
                    warnings.push(format!(
                        "the baseline was collected with another payload ({} vs {}); only queries of the same name were compared",
                        b.payload.name, input.payload.name
                    ));
                }
                let mut hosts = b.hosts;
                while let Some(obs) = hosts.next().await {
                    add_observation(&mut builder, Role::Baseline, &obs?);
                }
                if builder.baseline.iter().all(|h| !h.usable()) {
                    warnings
                        .push("the baseline has no host with usable evidence: the baseline method was skipped".into());
                    methods.retain(|m| *m != Method::Baseline);
                }
                baseline = Some(b.provenance);
            }
            _ if methods.contains(&Method::Baseline) => {
                warnings.push(
                    "this target has no baseline (collect one with `diffy baseline`): the baseline method was skipped"
                        .into(),
                );
                methods.retain(|m| *m != Method::Baseline);
            }
            _ => {}
        }
        let mut history = None;
        if methods.contains(&Method::Novelty) {
            if input.history.is_empty() {
                warnings.push(format!(
                    "no earlier run of this target in the last {} days: the novelty method was skipped",
                    input.history_days
                ));
                methods.retain(|m| *m != Method::Novelty);
            } else {
                let mut seen = Seen { runs: input.history.len(), ..Default::default() };
                let mut scratch = Scratch::default();
                for h in input.history {
                    seen.since = Some(seen.since.map_or(h.run.started_at, |s: DateTime<Utc>| s.min(h.run.started_at)));
                    let mut hosts = h.hosts;
                    while let Some(obs) = hosts.next().await {
                        let obs = obs?;
                        let names = HostNames::new(obs.host.id.as_str(), obs.facts.hostname.as_deref());
                        for q in &obs.queries {
                            if let QueryOutcome::Rows(rows) = &q.outcome {
                                let profile = profiles.get(&q.query);
                                seen.add(
                                    &profile,
                                    &names,
                                    rows.iter().map(|r| r.iter().map(|(c, v)| (c.as_str(), v.as_str())).collect()),
                                    &mut scratch,
                                );
                            }
                        }
                    }
                }
                history = Some(seen);
            }
        }
        let ctx = score::Context {
            run: input.run,
            imported_from: input.imported_from,
            methods,
            targeted: Some(input.targeted.iter().map(|h| (h.id.to_string(), h.labels.clone())).collect()),
            not_targeted: input.not_targeted,
            baseline,
            history,
            history_days: input.history_days,
            warnings,
        };
        let settings = self.settings();
        let suppressions = self.suppressions.clone();
        tokio::task::spawn_blocking(move || score::analyze(builder, ctx, &settings, &suppressions))
            .await
            .map_err(|e| Error::plugin("analysis", format!("the analysis failed: {e}")))
    }
}
