//! The report as people and programs read it, snapshotted so that every
//! change to it is seen. Volatile values (run ids, times, paths) are filtered.

mod common;

use common::{Diffy, filters};
use diffy_testkit::fleet::{FleetSpec, write_fleet};

fn settings(d: &Diffy) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    for (re, with) in filters() {
        s.add_filter(re, with);
    }
    s.add_filter(r"pid=\d+", "pid=[PID]");
    let dir = d.dir.path().display().to_string();
    s.add_filter(&regex_escape(&dir), "[DIR]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '/' { c.to_string() } else { format!("\\{c}") }).collect()
}

#[test]
fn report_of_an_imported_fleet() {
    let d = Diffy::new();
    let spec = FleetSpec::new(12, 3).other_instance_type(0.15);
    write_fleet(&spec, &d.path("fleet"), false).unwrap();
    let human = d.run(&["analyze", "--import", "fleet"]);
    assert_eq!(human.code, 1);
    let json = d.run(&["analyze", "--import", "fleet", "--format", "json"]);
    assert_eq!(json.code, 1);
    json.report(); // deserialises with deny_unknown_fields
    settings(&d).bind(|| {
        insta::assert_snapshot!("import_human", human.stdout);
        insta::assert_snapshot!("import_json", json.stdout);
    });
}

#[test]
fn report_of_a_collected_run_with_a_failed_host() {
    let d = Diffy::new();
    d.write(
        "p.toml",
        r#"
[[query]]
name = "listeners"
format = "tsv"
identity = ["port", "path"]
shell = '''
printf 'port\tpath\tpid\n'
printf '22\t/usr/sbin/sshd\t%s\n' "$$"
printf '443\t/usr/sbin/nginx\t%s\n' "$$"
case "$DIFFY_HOST" in
  web-3) printf '4444\t/dev/shm/.k/kworker\t%s\n' "$$";;
  web-5) sleep 30;;
esac
'''
"#,
    );
    let hosts: Vec<String> = (1..=6).map(|i| format!("web-{i}")).collect();
    let mut args = vec!["analyze", "web", "--payload", "p.toml", "--deadline", "3s", "--incident-id", "IR-42"];
    for h in &hosts {
        args.extend(["--host", h.as_str()]);
    }
    let human = d.run(&args);
    assert_eq!(human.code, 1, "{}", human.stderr);
    let run = common::only_run(&d.path("diffy-store"));
    let json = d.run(&["analyze", "--from", &run, "--format", "json"]);
    assert_eq!(json.code, 1);
    let report = json.report();
    assert_eq!(report.hosts[0].host, "web-3");
    assert!(report.hosts[0].outlier);
    // How this machine ran the payload is each host's evidence, but it
    // depends on the machine: checked here, redacted below, and tested on
    // the fleet (ssh::what_an_unprivileged_run_could_not_see_is_said_first).
    assert!(report.hosts.iter().all(|h| h.vantage.as_ref().is_some_and(|v| v.uid.is_some())), "{:#?}", report.hosts);
    assert_eq!(report.visibility.unknown, 0);
    settings(&d).bind(|| {
        insta::assert_snapshot!("run_human", human.stdout);
        insta::assert_json_snapshot!("run_json", report, {
            ".generated_at" => "[TIME]",
            ".run.started_at" => "[TIME]",
            ".run.finished_at" => "[TIME]",
            ".run.id" => "[RUN]",
            ".baseline" => "[BASELINE]",
            ".run.operator" => "[OPERATOR]",
            ".hosts[].findings[].row.pid" => "[PID]",
            ".hosts[].vantage" => "[VANTAGE]",
            ".visibility" => "[VISIBILITY]",
        });
    });
}
