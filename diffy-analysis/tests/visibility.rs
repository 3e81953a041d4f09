//! What the evidence could not see: "not readable" is never "absent", and
//! hosts collected with other privileges are not called unusual for seeing
//! more.

use diffy_analysis::Analyzer;
use diffy_core::report::{FindingKind, Method};
use diffy_core::vantage::{Unseen, Vantage};
use diffy_core::{
    Analysis, AnalysisInput, Host, HostId, HostObservation, HostStatus, Observations, PayloadSpec, QueryObservation,
    QueryOutcome, Row, ShellPayload,
};

fn key_row(file: &str, key: &str) -> Row {
    [
        ("uid", "0"),
        ("username", "root"),
        ("key_file", file),
        ("algorithm", "ssh-ed25519"),
        ("key", key),
        ("comment", ""),
    ]
    .into_iter()
    .map(|(c, v)| (c.to_string(), v.to_string()))
    .collect()
}

fn vantage(uid: u32, user: &str) -> Vantage {
    Vantage::parse(format!("uid\t{uid}\nuser\t{user}\nsudo_available\tyes\n").as_bytes()).unwrap()
}

fn host(id: &str, v: Vantage, keys: Vec<Row>, unseen: Option<&str>) -> HostObservation {
    HostObservation {
        host: Host::new(HostId::new(id).unwrap()),
        status: HostStatus::Ok,
        message: None,
        facts: Default::default(),
        vantage: Some(v),
        queries: vec![QueryObservation {
            query: "authorized_keys".into(),
            outcome: QueryOutcome::Rows(keys),
            unseen: unseen.map(|p| Unseen { count: 1, first: vec![p.to_string()] }),
        }],
    }
}

async fn analyze(hosts: Vec<HostObservation>) -> diffy_core::Report {
    let spec: PayloadSpec = ShellPayload::pack();
    let input = AnalysisInput {
        run: None,
        imported_from: Some("test".into()),
        methods: vec![Method::Cluster],
        payload: spec,
        targeted: hosts.iter().map(|h| h.host.clone()).collect(),
        not_targeted: Vec::new(),
        survey: Observations::from_vec(hosts),
        baseline: None,
        history: Vec::new(),
        history_days: 0,
    };
    Analyzer::new().analyze(input).await.unwrap()
}

/// Nine hosts read root's keys; one could not open /root: its lack of the
/// fleet's key is not a "missing" finding, and the report says what it could
/// not read.
#[tokio::test]
async fn a_row_hidden_by_permissions_is_not_missing() {
    let fleet_key = key_row("/root/.ssh/authorized_keys", "AAAAdeploy");
    let mut hosts: Vec<HostObservation> =
        (1..=9).map(|i| host(&format!("h{i}"), vantage(0, "root"), vec![fleet_key.clone()], None)).collect();
    hosts.push(host("blind", vantage(1001, "ops"), Vec::new(), Some("/root/.ssh")));
    let r = analyze(hosts).await;
    let blind = r.hosts.iter().find(|h| h.host == "blind").unwrap();
    assert!(
        blind.findings.iter().all(|f| !matches!(f.kind, FindingKind::Missing | FindingKind::Removed)),
        "{:#?}",
        blind.findings
    );
    assert_eq!(blind.unseen[0].first, ["/root/.ssh"]);
    assert_eq!(r.visibility.partial, 1);
    assert!(r.visibility.mixed_privileges);
    assert!(r.warnings[0].starts_with("hosts were collected with different privileges (9 as root (uid 0), 1 as ops"));
    assert!(!r.partial_view(), "nine hosts saw everything");
}

/// One host collected as root sees a key under /root that the nine hosts
/// collected as ops could not open: it is not rare among them. A key where
/// they could read is still rare.
#[tokio::test]
async fn seeing_more_is_not_standing_out() {
    let mut hosts: Vec<HostObservation> =
        (1..=9).map(|i| host(&format!("h{i}"), vantage(1001, "ops"), Vec::new(), Some("/root/.ssh"))).collect();
    hosts.push(host("rooted", vantage(0, "root"), vec![key_row("/root/.ssh/authorized_keys", "AAAAroot")], None));
    let r = analyze(hosts).await;
    let rooted = r.hosts.iter().find(|h| h.host == "rooted").unwrap();
    assert!(rooted.findings.is_empty(), "{:#?}", rooted.findings);
    assert!(!rooted.outlier);

    let mut hosts: Vec<HostObservation> =
        (1..=9).map(|i| host(&format!("h{i}"), vantage(1001, "ops"), Vec::new(), Some("/root/.ssh"))).collect();
    hosts.push(host(
        "planted",
        vantage(1001, "ops"),
        vec![key_row("/home/ops/.ssh/authorized_keys", "AAAAattacker")],
        Some("/root/.ssh"),
    ));
    let r = analyze(hosts).await;
    let planted = r.hosts.iter().find(|h| h.host == "planted").unwrap();
    assert!(planted.findings.iter().any(|f| f.kind == FindingKind::Rare), "{:#?}", planted.findings);
    assert!(r.partial_view(), "every host saw only part");
    assert_eq!(r.visibility.queries[0].hosts, 10);
}
