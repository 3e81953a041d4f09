//! Analysis quality on simulated fleets with ground truth: every compromised
//! host is an outlier and ranks above every clean host, no clean host is an
//! outlier, and a 10 % canary is reported as a cohort, not as outliers.

mod common;

use std::collections::BTreeSet;

use common::Diffy;
use diffy_core::report::Report;
use diffy_testkit::fleet::{Compromise, FleetSpec, Truth, write_fleet};

fn analyse(spec: &FleetSpec, extra: &[&str]) -> (Report, Truth) {
    let d = Diffy::new();
    let truth = write_fleet(spec, &d.path("fleet"), false).unwrap();
    let mut args = vec!["analyze", "--import", "fleet", "--format", "json"];
    args.extend(extra);
    let r = d.run(&args);
    assert_eq!(r.code, 1, "compromised hosts were planted, so diffy exits 1\n{}", r.stderr);
    (r.report(), truth)
}

fn judge(spec: &FleetSpec, report: &Report, truth: &Truth) {
    let label = format!("{} hosts, seed {}", spec.hosts, spec.seed);
    assert_eq!(report.coverage.collected, spec.hosts, "{label}: every host analysed");
    let score = |h: &str| report.hosts.iter().find(|x| x.host == h).unwrap().score;
    for (host, kind) in &truth.compromised {
        let h = report.hosts.iter().find(|x| &x.host == host).unwrap();
        assert!(h.outlier, "{label}: {host} ({kind}) must be an outlier, score {}: {:#?}", h.score, h.findings);
        let top = &h.findings[0];
        assert_eq!(top.query, kind.query(), "{label}: {host} ({kind}): the planted row is the top finding: {top:#?}");
        // "of N" counts the hosts whose evidence for this query was usable.
        let of = top.prevalence.of;
        assert!(
            top.explanation.contains(&format!(" of {of} hosts")) && of <= spec.hosts && of * 100 >= spec.hosts * 95,
            "{label}: says on how many hosts: {top:?}"
        );
    }
    for h in report.hosts.iter().filter(|h| truth.is_clean(&h.host)) {
        assert!(!h.outlier, "{label}: clean host {} is not an outlier (score {}): {:#?}", h.host, h.score, h.findings);
    }
    let lowest_bad = truth.compromised.keys().map(|h| score(h)).fold(f64::MAX, f64::min);
    let highest_clean = report.hosts.iter().filter(|h| truth.is_clean(&h.host)).map(|h| h.score).fold(0.0, f64::max);
    assert!(
        lowest_bad > highest_clean,
        "{label}: compromised hosts rank above clean ones ({lowest_bad} vs {highest_clean})"
    );
    let ranked: Vec<&str> = report.hosts.iter().map(|h| h.host.as_str()).collect();
    let bad_positions: BTreeSet<usize> =
        truth.compromised.keys().map(|h| ranked.iter().position(|x| x == h).unwrap()).collect();
    assert_eq!(bad_positions, (0..truth.compromised.len()).collect(), "{label}: the hosts array is sorted by score");

    if !truth.canary.is_empty() {
        let canary: BTreeSet<String> = truth.canary.clone();
        let cohort = report.cohorts.iter().find(|c| c.hosts.iter().cloned().collect::<BTreeSet<_>>() == canary);
        let cohort = cohort
            .unwrap_or_else(|| panic!("{label}: the canary {canary:?} is reported as a cohort: {:#?}", report.cohorts));
        assert!(
            cohort.rows.iter().any(|r| r.query == "file_hashes"),
            "{label}: the cohort shows what sets it apart: {cohort:#?}"
        );
        for h in canary.iter().filter(|h| truth.is_clean(h)) {
            let hr = report.hosts.iter().find(|x| &x.host == h).unwrap();
            assert!(!hr.outlier, "{label}: canary host {h} is not an outlier");
            assert!(hr.cohorts.contains(&cohort.id), "{label}: canary host {h} names its cohort");
        }
    }
    if !truth.other_instance_type.is_empty() {
        let other = truth.other_instance_type.clone();
        assert!(
            report.cohorts.iter().any(|c| c.hosts.iter().cloned().collect::<BTreeSet<_>>() == other),
            "{label}: hosts of another instance type are a cohort: {:#?}",
            report.cohorts
        );
    }
}

#[test]
fn twelve_hosts() {
    for seed in 1..=6 {
        let spec = FleetSpec::new(12, seed);
        let (report, truth) = analyse(&spec, &[]);
        assert!(!truth.compromised.is_empty() && truth.canary.len() == 2);
        judge(&spec, &report, &truth);
        assert!(report.warnings.iter().all(|w| !w.contains("needs a herd")), "12 hosts are a herd");
    }
}

#[test]
fn two_hundred_hosts() {
    for seed in 1..=3 {
        let spec = FleetSpec::new(200, seed).other_instance_type(if seed == 2 { 0.15 } else { 0.0 });
        let (report, truth) = analyse(&spec, &[]);
        assert_eq!(truth.compromised.len(), Compromise::ALL.len(), "one of each kind");
        assert!(truth.compromised.keys().any(|h| truth.canary.contains(h)), "one compromise hides in the canary");
        judge(&spec, &report, &truth);
    }
}

#[test]
fn two_thousand_hosts() {
    let spec = FleetSpec::new(2000, 11).other_instance_type(0.05).labels(true);
    let (report, truth) = analyse(&spec, &[]);
    assert_eq!(truth.compromised.len(), 2 * Compromise::ALL.len(), "two of each kind");
    judge(&spec, &report, &truth);
    let canary = report.cohorts.iter().find(|c| c.hosts.len() == truth.canary.len()).unwrap();
    assert_eq!(
        canary.labels.get("launch_template_version").map(String::as_str),
        Some("8"),
        "labels describe the cohort"
    );
}

#[test]
fn every_kind_of_compromise_is_found_alone_in_a_small_fleet() {
    for (i, kind) in Compromise::ALL.iter().enumerate() {
        let spec = FleetSpec::new(12, 100 + i as u64).compromises(vec![*kind]);
        let (report, truth) = analyse(&spec, &[]);
        judge(&spec, &report, &truth);
        assert_eq!(report.outliers().count(), 1, "{kind}: exactly one outlier");
    }
}

#[test]
fn import_with_a_baseline_tags_findings_and_reports_drift() {
    let d = Diffy::new();
    let spec = FleetSpec::new(40, 5);
    let truth = write_fleet(&spec, &d.path("fleet"), true).unwrap();
    let r = d.run(&["analyze", "--import", "fleet", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.report();
    assert_eq!(report.methods.len(), 2, "cluster and baseline: {:?}", report.methods);
    assert!(report.baseline.as_ref().unwrap().source.as_deref().unwrap().ends_with("baseline.json"));
    judge(&spec, &report, &truth);
    for host in truth.compromised.keys() {
        let h = report.hosts.iter().find(|x| &x.host == host).unwrap();
        assert!(h.findings[0].methods.len() == 2, "{host}: raised by both methods: {:?}", h.findings[0]);
    }
    let only_baseline = d.run(&["analyze", "--import", "fleet", "--method", "baseline", "--format", "json"]).report();
    assert!(only_baseline.hosts.iter().flat_map(|h| &h.findings).all(|f| f.methods == [diffy_core::Method::Baseline]));
}

#[test]
fn suppressions_are_counted_not_hidden() {
    let d = Diffy::new();
    let spec = FleetSpec::new(30, 9).compromises(vec![Compromise::MaliciousCron]);
    let truth = write_fleet(&spec, &d.path("fleet"), false).unwrap();
    let bad = truth.compromised.keys().next().unwrap();
    d.write(
        "suppress.toml",
        "[[suppress]]\nquery = \"crontab\"\nmatch = { path = \"/var/spool/cron/crontabs/root\" }\nreason = \"the ops team's job runner\"\n\n[[suppress]]\nquery = \"processes\"\nreason = \"expired rule\"\nexpires = \"2020-01-01\"\n",
    );
    let r = d.run(&["analyze", "--import", "fleet", "--suppressions", "suppress.toml", "--format", "json"]);
    assert_eq!(r.code, 0, "the only compromise was suppressed\n{}", r.stderr);
    let report = r.report();
    assert_eq!(report.suppressed.len(), 1);
    assert_eq!(report.suppressed[0].reason, "the ops team's job runner");
    assert_eq!(report.suppressed[0].hosts, 1);
    assert_eq!(report.hosts.iter().find(|h| &h.host == bad).unwrap().suppressed, 1);
    assert!(
        report.warnings.iter().any(|w| w.contains("\"expired rule\" expired on 2020-01-01")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn broken_host_files_are_failed_hosts_not_failed_runs() {
    let d = Diffy::new();
    let spec = FleetSpec::new(20, 3).compromises(vec![Compromise::Uid0User]);
    write_fleet(&spec, &d.path("fleet"), false).unwrap();
    d.write("fleet/hosts/i-broken.json", "{\"instance_id\": \"i-broken\", \"results\": {\"users\": [");
    d.write(
        "fleet/hosts/i-partial.json",
        r#"{"instance_id": "i-partial", "results": {"users": {"error": "osquery timed out"}}}"#,
    );
    let r = d.run(&["analyze", "--import", "fleet", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.report();
    assert_eq!(report.coverage.failed, 2, "{:?}", report.coverage);
    let broken = report.coverage.failed_hosts.iter().find(|h| h.host == "i-broken").unwrap();
    assert!(broken.message.as_deref().unwrap().contains("not valid JSON"), "{broken:?}");
    let partial = report.coverage.failed_hosts.iter().find(|h| h.host == "i-partial").unwrap();
    assert!(partial.message.as_deref().unwrap().contains("osquery timed out"), "{partial:?}");
    assert!(
        report.warnings.iter().any(|w| w.contains("2 of 22 targeted hosts were not analysed")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn the_demo_fleet_of_the_readme_shows_its_planted_compromises() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/fleet");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("truth.json")).unwrap()).unwrap();
    let d = Diffy::new();
    let r = d.run(&["analyze", "--import", demo.to_str().unwrap(), "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.report();
    let outliers: BTreeSet<&str> = report.outliers().map(|h| h.host.as_str()).collect();
    let planted: BTreeSet<&str> = truth["compromised"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(outliers, planted, "the README's demo shows exactly the planted compromises");
    assert!(report.cohorts.len() >= 2, "and the canary and the other instance type as cohorts");
}

/// Every kind of compromise, run across a share of the fleet with the same
/// artifact everywhere, beside a 10 % canary: shares are grouped so that the
/// campaigns of one fleet reach at most 80 % of its old-version hosts.
fn campaign_fleets(hosts: usize, labels: bool) -> Vec<FleetSpec> {
    let kinds = Compromise::ALL;
    let mut specs = Vec::new();
    let mut seed = hosts as u64 * 10 + labels as u64;
    for (share, per_fleet) in [(0.02, 8), (0.05, 8), (0.10, 4), (0.25, 2), (0.50, 1)] {
        for group in kinds.chunks(per_fleet) {
            seed += 1;
            let mut spec = FleetSpec::new(hosts, seed).labels(labels);
            if share >= 0.5 {
                // A single compromise of the same kind would share the
                // campaign's folded rows and carry it past half the fleet.
                spec = spec.compromises(vec![]);
            }
            if hosts >= 1000 {
                spec = spec.other_instance_type(0.03);
            }
            for &kind in group {
                spec = spec.campaign(kind, share);
            }
            specs.push(spec);
        }
    }
    specs
}

fn judge_campaigns(spec: &FleetSpec, report: &Report, truth: &Truth, labels: bool, how: &str) {
    let label = format!("{} hosts, seed {}, {how}", spec.hosts, spec.seed);
    for (kind, hosts) in &truth.campaigns {
        let c = report
            .campaigns
            .iter()
            // A single compromise of the same kind may share the campaign's
            // row once numbers are folded (a reverse shell's address): it joins.
            .find(|c| {
                c.rows.iter().any(|r| {
                    let with: BTreeSet<String> = r.hosts.iter().cloned().collect();
                    r.query == kind.query() && with.is_superset(hosts) && with.len() <= hosts.len() + 2
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "{label}: the {kind} campaign on {} hosts is reported with its hosts: {:#?}",
                    hosts.len(),
                    report.campaigns
                )
            });
        assert!(
            c.hosts.iter().all(|h| truth.compromised.contains_key(h)),
            "{label}: {kind}: only compromised hosts: {c:#?}"
        );
        assert!(!c.fleet_wide, "{label}: {kind} on at most half the fleet is not fleet-wide");
        for h in hosts {
            let hr = report.hosts.iter().find(|x| &x.host == h).unwrap();
            assert!(hr.campaigns.contains(&c.id), "{label}: {h} names its campaign");
        }
    }
    let canary =
        report.cohorts.iter().find(|c| c.hosts.iter().cloned().collect::<BTreeSet<_>>() == truth.canary).unwrap();
    if labels {
        assert_eq!(canary.kind, diffy_core::report::CohortKind::Deploy, "{label}: a labelled canary is a deploy");
        assert!(canary.explained_by.is_some(), "{label}: and says which label explains it");
    } else {
        assert_eq!(
            canary.kind,
            diffy_core::report::CohortKind::Unexplained,
            "{label}: nothing explains an unlabelled canary"
        );
    }
}

fn campaigns_at(hosts: usize, labels: bool) {
    for spec in campaign_fleets(hosts, labels) {
        let d = Diffy::new();
        let truth = write_fleet(&spec, &d.path("fleet"), true).unwrap();
        for (how, extra) in [("with a baseline", &[][..]), ("without a baseline", &["--method", "cluster"][..])] {
            let mut args = vec!["analyze", "--import", "fleet", "--format", "json"];
            args.extend(extra);
            let r = d.run(&args);
            assert_eq!(r.code, 1, "{}", r.stderr);
            let report = r.report();
            judge(&spec, &report, &truth);
            judge_campaigns(&spec, &report, &truth, labels, how);
        }
    }
}

#[test]
fn campaigns_on_two_hundred_labelled_hosts() {
    campaigns_at(200, true);
}

#[test]
fn campaigns_on_two_hundred_unlabelled_hosts() {
    campaigns_at(200, false);
}

#[test]
fn campaigns_on_two_thousand_labelled_hosts() {
    campaigns_at(2000, true);
}

#[test]
fn campaigns_on_two_thousand_unlabelled_hosts() {
    campaigns_at(2000, false);
}

/// A campaign that reached most of the fleet is the worst case: with a
/// baseline, every host it reached is an outlier and the campaign is reported
/// first, as fleet-wide, at the top of the report.
#[test]
fn a_campaign_on_most_of_the_fleet_is_reported_first() {
    let d = Diffy::new();
    let spec = FleetSpec::new(200, 77).compromises(vec![]).campaign(Compromise::MaliciousCron, 0.8);
    let truth = write_fleet(&spec, &d.path("fleet"), true).unwrap();
    let r = d.run(&["analyze", "--import", "fleet", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.report();
    judge(&spec, &report, &truth);
    let first = &report.campaigns[0];
    assert!(first.fleet_wide, "{first:#?}");
    assert_eq!(first.hosts.len(), 160);
    assert!(first.rows[0].indicators.iter().any(|i| i.contains("downloads and runs code")), "{first:#?}");
    assert!(report.warnings[0].starts_with("FLEET-WIDE: 160 of 200 hosts"), "{:?}", report.warnings);
    assert!(
        report.drift.iter().all(|d| d.query != "crontab" || !d.explanation.contains("| sh")),
        "not hidden in drift: {:#?}",
        report.drift
    );
    let text = d.run(&["analyze", "--import", "fleet"]).stdout;
    let campaign = text.find("campaign-1 FLEET-WIDE: 160 of 200 hosts").expect(&text);
    let outliers = text.find("160 outliers of 200 hosts").expect(&text);
    assert!(campaign < outliers, "the campaign is read before its hosts:\n{text}");
}

/// Hosts launched together, and no others then, are a deploy even when no
/// other label says so.
#[test]
fn a_launch_window_explains_a_cohort() {
    let d = Diffy::new();
    let spec = FleetSpec::new(200, 78).labels(true).campaign(Compromise::RootKey, 0.1);
    let truth = write_fleet(&spec, &d.path("fleet"), false).unwrap();
    for entry in std::fs::read_dir(d.path("fleet/hosts")).unwrap() {
        let path = entry.unwrap().path();
        let mut host: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        host["labels"].as_object_mut().unwrap().retain(|k, _| k == "launch_time");
        std::fs::write(&path, serde_json::to_vec(&host).unwrap()).unwrap();
    }
    let r = d.run(&["analyze", "--import", "fleet", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = r.report();
    judge(&spec, &report, &truth);
    let canary =
        report.cohorts.iter().find(|c| c.hosts.iter().cloned().collect::<BTreeSet<_>>() == truth.canary).unwrap();
    assert_eq!(canary.kind, diffy_core::report::CohortKind::Deploy);
    let by = canary.explained_by.as_deref().unwrap();
    assert!(by.starts_with("launched 2025-12-08T") && by.contains(" to "), "{by}");
    assert!(canary.explanation.contains(by), "{}", canary.explanation);
    // The campaign's hosts were launched over weeks among the others: no window explains them.
    assert!(report.campaigns.iter().any(|c| c.rows[0].query == "authorized_keys" && c.hosts.len() >= 20));
}
