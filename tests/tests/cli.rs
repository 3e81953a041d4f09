//! The command line as users meet it: help, errors, exit codes, formats,
//! configuration precedence, and the JSON contract.

mod common;

use common::{Diffy, filters};

#[test]
fn help_is_stable() {
    let d = Diffy::new();
    let top = d.run(&["--help"]);
    assert_eq!(top.code, 0);
    insta::assert_snapshot!("help", top.stdout);
    for cmd in ["analyze", "baseline", "collect", "runs"] {
        let r = d.run(&[cmd, "--help"]);
        assert_eq!(r.code, 0);
        insta::assert_snapshot!(format!("help_{cmd}"), r.stdout);
    }
}

#[test]
fn plugins_lists_what_this_build_has() {
    let d = Diffy::new();
    let r = d.run(&["plugins"]);
    assert_eq!(r.code, 0);
    insta::assert_snapshot!("plugins", r.stdout);
    let json = d.run(&["plugins", "--format", "json"]).json();
    assert!(json.as_array().unwrap().iter().all(|p| p["compiled"] == true));
}

#[test]
fn report_schema_is_snapshotted() {
    let d = Diffy::new();
    let r = d.run(&["schema"]);
    assert_eq!(r.code, 0);
    insta::assert_snapshot!("report_schema", r.stdout);
    let e = d.run(&["schema", "events"]);
    insta::assert_snapshot!("events_schema", e.stdout);
}

#[test]
fn unusable_arguments_exit_2_and_say_what_to_do() {
    let d = Diffy::new();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["analyze"], "required", ""),
        (
            &["analyze", "web", "--transport", "carrier-pigeon"],
            "unknown transport \"carrier-pigeon\"",
            "this build knows: local",
        ),
        (&["analyze", "web", "--payload", "nope.toml"], "unknown payload \"nope.toml\"", "--payload shell"),
        (&["collect", "../etc"], "invalid target key \"../etc\"", "without '/'"),
        (&["collect", "web", "--deadline", "soon"], "is not a duration", "90s"),
        (&["collect", "web", "--max-output", "lots"], "is not a size", "256M"),
        (&["collect", "web", "--incident-id", ""], "incident id \"\" is unusable", "IR-1234"),
        (&["analyze", "web", "--method", "magic"], "unknown analysis method \"magic\"", "baseline, cluster or novelty"),
        (&["analyze", "--import", "no-such-dir"], "no-such-dir is not a directory", "hosts/<host>.json"),
        (&["analyze", "--from", "20990101T000000Z-abcdef"], "run \"20990101T000000Z-abcdef\" not found", "diffy runs"),
        (&["analyze", "web", "--transport", "local", "--host", "a/b"], "invalid host id", ""),
        (&["collect", "web", "--store", "gs://bucket/prefix"], "no store for gs:// locations", "s3://BUCKET/PREFIX"),
        (&["collect", "web", "--store", "s3://bucket/prefix"], "no AWS region is configured", "AWS_REGION"),
        (&["collect", "web", "--target", "asg", "--tag", "Service"], "\"Service\" is not a tag filter", "KEY=VALUE"),
        (
            &["collect", "web", "--transport", "ssm", "--ssm-output", "ssm-output/IR-1"],
            "--ssm-output \"ssm-output/IR-1\" does not name an S3 bucket",
            "s3://BUCKET/PREFIX",
        ),
        (&["analyze", "web", "--threshold=0"], "threshold 0 is unusable", "above 0"),
    ];
    for (args, msg, help) in cases {
        let r = d.run(args);
        assert_eq!(r.code, 2, "{args:?} should exit 2:\n{}", r.stderr);
        assert!(r.stderr.contains(msg), "{args:?}: expected {msg:?} in:\n{}", r.stderr);
        assert!(r.stderr.contains(help), "{args:?}: expected help {help:?} in:\n{}", r.stderr);
    }
}

#[test]
fn a_foreign_directory_is_not_used_as_a_store() {
    let d = Diffy::new();
    d.write("mine/notes.txt", "keep me");
    let r = d.run(&["collect", "web", "--store", "mine"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not empty and is not a Diffy store"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(d.path("mine/notes.txt")).unwrap(), "keep me");
}

#[test]
fn flags_beat_environment_beats_config_file() {
    let d = Diffy::new();
    d.write("diffy.toml", "[defaults]\nformat = \"json\"\nstore = \"from-config\"\n");
    // Reading never creates a store: the one named by diffy.toml is missing.
    let r = d.run(&["runs"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("from-config does not exist"), "store from diffy.toml: {}", r.stderr);
    assert!(!d.path("from-config").exists());
    d.write("from-config/DIFFY-STORE", "diffy evidence store, format 1\n");
    let r = d.run(&["runs"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "[]", "format and store from diffy.toml");
    let d = d.env("DIFFY_FORMAT", "human");
    let r = d.run(&["runs"]);
    assert!(r.stdout.starts_with("No runs stored yet"), "environment beats the file: {}", r.stdout);
    let r = d.run(&["runs", "--format", "jsonl"]);
    assert_eq!(r.stdout, "", "a flag beats the environment (no runs: no lines)");
    d.write("bad.toml", "[defaults]\nfromat = \"json\"\n");
    let r = d.run(&["runs", "--config", "bad.toml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown field `fromat`"), "{}", r.stderr);
    let r = d.run(&["runs", "--config", "missing.toml"]);
    assert!(r.stderr.contains("configuration file missing.toml does not exist"), "{}", r.stderr);
}

#[test]
fn named_payloads_and_query_rules_from_the_config_file() {
    let d = Diffy::new();
    d.write(
        "diffy.toml",
        r#"
[defaults]
payload = "tiny"
method = "cluster"

[payloads.tiny]
query = [{ name = "hello", shell = "echo hello from $DIFFY_HOST", format = "lines" }]

[queries.hello]
identity = ["line"]
weight = 2.0
"#,
    );
    let r = d.run(&["analyze", "lab", "--host", "a", "--host", "b", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = r.report();
    assert_eq!(report.coverage.collected, 2);
    let run = common::only_run(&d.path("diffy-store"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/run.json"))).unwrap())
            .unwrap();
    assert_eq!(manifest["payload"]["name"], "tiny");
    assert_eq!(
        std::fs::read_to_string(d.path(&format!("diffy-store/runs/{run}/hosts/a/hello.stdout"))).unwrap(),
        "hello from a\n"
    );
}

#[test]
fn jsonl_is_an_event_stream_ending_with_the_report() {
    let d = Diffy::new();
    let r = d.run(&["analyze", "lab", "--host", "h1", "--host", "h2", "--host", "h3", "--format", "jsonl"]);
    // 3: this machine hides something from the standard pack (a container's
    // init, say), and the report says so.
    assert!([0, 1, 3].contains(&r.code), "{}", r.stderr);
    let lines: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (raw, l) in r.stdout.lines().zip(&lines) {
        assert!(raw.starts_with("{\"type\":\""), "every line starts with its type: {raw}");
        assert_eq!(l.as_object().unwrap().len(), 2, "every line is {{type, data}}: {l}");
    }
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"run_started"));
    assert_eq!(types.iter().filter(|t| **t == "host_finished").count(), 3);
    assert!(types.contains(&"run_finished") && types.contains(&"summary"));
    assert_eq!(types.last(), Some(&"report"));
    let report: diffy_core::Report = serde_json::from_value(lines.last().unwrap()["data"].clone()).unwrap();
    assert_eq!(report.hosts.len(), 3);
}

#[test]
fn runs_lists_baselines_and_surveys() {
    let d = Diffy::new();
    assert_eq!(d.run(&["baseline", "lab", "--host", "h1", "--incident-id", "IR-7"]).code, 0);
    let again = d.run(&["baseline", "lab", "--host", "h1"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already has baseline run"), "{}", again.stderr);
    assert!(again.stderr.contains("--replace"), "{}", again.stderr);
    assert_eq!(d.run(&["collect", "lab", "--host", "h1"]).code, 0);
    let r = d.run(&["runs"]);
    let mut settings = insta::Settings::clone_current();
    for (re, with) in filters() {
        settings.add_filter(re, with);
    }
    settings.bind(|| insta::assert_snapshot!("runs", r.stdout));
    let json = d.run(&["runs", "lab", "--format", "json"]).json();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["baseline"], true);
    assert_eq!(list[0]["incident_id"], "IR-7");
    assert_eq!(list[1]["kind"], "survey");
    let replaced = d.run(&["baseline", "lab", "--host", "h1", "--replace"]);
    assert_eq!(replaced.code, 0, "{}", replaced.stderr);
    assert!(replaced.stdout.contains("replacing"), "{}", replaced.stdout);
    assert!(replaced.stdout.contains("Taken from 1 host: h1."), "the baseline names its hosts: {}", replaced.stdout);
    assert_eq!(
        d.run(&["runs", "--format", "json"]).json().as_array().unwrap().len(),
        3,
        "the old baseline run is kept"
    );
}

/// A flag that the chosen plugins would ignore is refused, naming the plugin
/// that uses it; the same setting from the environment is a warning.
#[test]
fn flags_the_chosen_plugins_ignore_are_refused() {
    let d = Diffy::new();
    for (args, says) in [
        (&["collect", "web", "--host", "a", "--tag", "app=web"][..], "--tag is used only by the asg target"),
        (&["collect", "web", "--host", "a", "--ssh-user", "ops"][..], "--ssh-user is used only by the ssh transport"),
        (
            &["baseline", "web", "--host", "a", "--ssm-output", "s3://b/p"][..],
            "--ssm-output is used only by the ssm transport",
        ),
        (&["analyze", "web", "--host", "a", "--sudo"][..], "--sudo is used only by the ssh transport"),
    ] {
        let r = d.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("this run has --target static and --transport local"), "{}", r.stderr);
    }
    assert!(!d.path("diffy-store/runs").exists(), "nothing was collected");
    let d = d.env("DIFFY_SSH_USER", "ops");
    let r = d.run(&["collect", "web", "--host", "a"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("warning: DIFFY_SSH_USER is set, but only the ssh transport"), "{}", r.stderr);
}

/// `analyze --from` and `--import` analyse hosts already collected: a flag
/// that would choose or reach hosts is refused, not silently ignored.
#[test]
fn reanalysis_refuses_flags_that_choose_hosts() {
    let d = Diffy::new();
    let r = d.run(&["collect", "web", "--host", "a", "--host", "b", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run = r.json()["id"].as_str().unwrap().to_string();
    std::fs::create_dir_all(d.path("import/hosts")).unwrap();
    for (args, says) in [
        (vec!["analyze", "--from", &run, "--host", "a"], "--host chooses or reaches hosts to collect from, and --from"),
        (vec!["analyze", "--from", &run, "--transport", "ssh"], "--transport chooses or reaches hosts"),
        (vec!["analyze", "--from", &run, "--ssh-user", "ops"], "--ssh-user chooses or reaches hosts"),
        (
            vec!["analyze", "--import", "import", "--hosts", "hosts.txt"],
            "--hosts chooses or reaches hosts to collect from, and --import",
        ),
        (vec!["analyze", "--import", "import", "--payload", "osquery"], "--payload chooses"),
    ] {
        let r = d.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("a subset would change what the herd is"), "{}", r.stderr);
    }
    let d = d.env("DIFFY_TRANSPORT", "ssh");
    let r = d.run(&["analyze", "--from", &run, "--method", "cluster"]);
    assert!([0, 3].contains(&r.code), "nothing found (3: in a partial view of this machine): {}", r.stderr);
    assert!(r.stderr.contains("warning: DIFFY_TRANSPORT is set, but --from collects nothing"), "{}", r.stderr);
    d.write("diffy.toml", "[defaults]\ntransport = \"ssh\"\nhosts = \"hosts.txt\"\n[ssh]\nuser = \"ops\"\n");
    let r = d.run(&["analyze", "--from", &run, "--method", "cluster"]);
    assert!([0, 3].contains(&r.code), "{}", r.stderr);
    assert!(
        r.stderr.contains("warning: diffy.toml's transport, hosts, [ssh] are not used: --from collects nothing"),
        "{}",
        r.stderr
    );
}

/// Shell completions and the man page come from the same clap definitions.
#[test]
fn completions_and_man_page_are_generated() {
    let d = Diffy::new();
    let bash = d.run(&["completions", "bash"]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    assert!(bash.stdout.contains("complete -F _diffy"), "{}", bash.stdout);
    assert!(bash.stdout.contains("--ssh-connection-attempts"), "every flag is completed");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let r = d.run(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        assert!(r.stdout.contains("baseline"), "{shell}");
    }
    let man = d.run(&["man"]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(man.stdout.contains(".TH diffy 1"), "{}", &man.stdout[..200.min(man.stdout.len())]);
    assert!(man.stdout.contains("Exit status: 0 nothing found"), "the man page carries the exit codes");
    assert_eq!(d.run(&["completions", "tcsh"]).code, 2);
}

/// Every command line of the README is either run by a test (verbatim) or
/// listed with the reason it cannot be, and the list names nothing the
/// README no longer has.
#[test]
fn every_readme_command_is_run_or_listed() {
    use common::readme::{COMMANDS, Readme};
    let readme = Readme::load();
    assert!(readme.lines.len() >= 20, "{} command lines found", readme.lines.len());
    let unknown: Vec<String> = readme
        .lines
        .iter()
        .filter(|l| !COMMANDS.iter().any(|(k, _)| *k == l.key))
        .map(|l| format!("README.md:{}: {}", l.number, l.key))
        .collect();
    assert!(
        unknown.is_empty(),
        "README commands neither run by a test nor listed in common/readme.rs:\n{}",
        unknown.join("\n")
    );
    let stale: Vec<&str> =
        COMMANDS.iter().map(|(k, _)| *k).filter(|k| !readme.lines.iter().any(|l| l.key == *k)).collect();
    assert!(stale.is_empty(), "listed in common/readme.rs but not in the README: {stale:?}");
}

/// The README's first commands: the main job on the demo fleet.
#[test]
fn readme_commands_that_run_anywhere() {
    let readme = common::readme::Readme::load();
    let d = Diffy::new();
    let line = readme.line(
        "./target/release/diffy analyze --import demo/fleet",
        "cli::readme_commands_that_run_anywhere",
        &[],
    );
    let r = d.sh(&line);
    assert_eq!(r.code, 1, "the demo fleet has outliers: {}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Coverage: 30 of 30"), "{}", r.stdout);
    assert!(r.stdout.contains("3 outliers of 30 hosts"), "{}", r.stdout);
}

/// The osquery pack's tables return only what the caller can read; its
/// queries name the rest as the shell pack's do. Run as nobody (from root)
/// with a stand-in `osqueryi` that returns no rows.
#[test]
fn the_osquery_pack_says_what_it_could_not_read() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        assert!(std::env::var("CI").is_err(), "CI runs as root");
        return;
    }
    let d = Diffy::new();
    let bin = d.write("fake/osqueryi", "#!/bin/sh\necho '[]'\n");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    for p in [d.path(""), d.path("fake")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
    }
    let mut c = d.program("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", common::bin()]);
    c.args(["analyze", "lab", "--payload", "osquery", "--host", "a", "--host", "b", "--host", "c", "--format", "json"]);
    c.env("PATH", format!("{}:/usr/bin:/bin", d.path("fake").display()));
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 3: nothing found in a partial view; 1: the three "hosts" are this
    // machine at three moments, and its processes (a build, say) differ.
    assert!(
        matches!(out.status.code(), Some(1 | 3)),
        "a partial view: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: diffy_core::Report = serde_json::from_str(&stdout).unwrap();
    let v = &report.visibility;
    assert_eq!(v.partial, 3);
    assert!(v.collected_as[0].user.starts_with("nobody (uid 65534)"), "{v:#?}");
    let keys = v.queries.iter().find(|q| q.query == "authorized_keys").unwrap_or_else(|| panic!("{v:#?}"));
    assert_eq!((keys.hosts, keys.first[0].as_str()), (3, "/root/.ssh"));
    assert!(v.queries.iter().any(|q| q.query == "shell_history" && q.first[0] == "/root"), "{v:#?}");
}
