//! # diffy-fuzz
//!
//! The bodies of diffy's fuzz targets, one function per parser of bytes that
//! a host or another tool produced. `fuzz/fuzz_targets/*.rs` (cargo fuzz, on
//! nightly) call them with libFuzzer's inputs; `tests/corpus.rs` calls them
//! with every input of the committed corpora (`fuzz/corpus/TARGET/`) on
//! stable, so a crash once found stays fixed.
//!
//! Each function must not panic on any input, and checks what its parser
//! promises beyond that (sizes within limits, every query accounted for).
#![deny(missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use diffy_core::plugin::{ExecEnd, Execution, Script, assemble, payload_ended, remote_pid};
use diffy_core::{Host, OutputFormat, PayloadSpec, Query};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets, by name: what `fuzz/` builds and the corpus folders hold.
pub const TARGETS: &[(&str, Target)] = &[
    ("script_output", script_output),
    ("output_formats", output_formats),
    ("import_host", import_host),
    ("ssm_envelope", ssm_envelope),
    ("ssh_config", ssh_config),
    ("suppressions", suppressions),
    ("payload_toml", payload_toml),
];

/// The nonce of the script whose output [`script_output`] reads.
pub const NONCE: &str = "f00d";

fn spec() -> PayloadSpec {
    PayloadSpec {
        name: "fuzz".into(),
        setup: Some("true".into()),
        queries: vec![
            Query::shell("a", "echo a", OutputFormat::Lines),
            Query::shell("b", "echo b", OutputFormat::Json),
            Query::shell("c", "echo c", OutputFormat::Tsv),
        ],
        teardown: Some("true".into()),
    }
}

/// The framed output of the payload script (what `sh -s` printed on a host):
/// every query of the payload gets exactly one result, and no byte is
/// invented.
pub fn script_output(data: &[u8]) {
    let spec = spec();
    let script = Script::render_with_nonce(&spec, Duration::from_secs(30), NONCE).expect("the script renders");
    let _ = remote_pid(data, NONCE);
    let _ = payload_ended(data, NONCE);
    for end in [ExecEnd::Exited(0), ExecEnd::TimedOut, ExecEnd::Cancelled, ExecEnd::OutputLimit(1 << 20)] {
        let now = chrono::Utc::now();
        let exec = Execution {
            stdout: Bytes::copy_from_slice(data),
            stderr: Bytes::from_static(b"stderr"),
            end,
            started_at: now,
            finished_at: now,
            transport: Default::default(),
        };
        let r = assemble(Host::named("h").expect("a valid id"), &spec, &script, exec);
        assert_eq!(r.queries.len(), spec.queries.len() + 3, "setup, three queries, teardown, the context probe");
        assert!(r.raw_len() <= data.len() as u64 + 6, "no byte invented: {} of {}", r.raw_len(), data.len());
        for q in &r.queries {
            // What analysis does next with collected evidence.
            let _ = OutputFormat::Json.parse(&q.stdout);
        }
    }
}

/// Every [`OutputFormat`] parser on the same bytes.
pub fn output_formats(data: &[u8]) {
    for format in [
        OutputFormat::Json,
        OutputFormat::Lines,
        OutputFormat::Tsv,
        OutputFormat::Ss,
        OutputFormat::ProcModules,
        OutputFormat::Passwd,
        OutputFormat::Crontab,
        OutputFormat::AuthorizedKeys,
        OutputFormat::Sha256sum,
    ] {
        if let Ok(rows) = format.parse(data) {
            assert!(rows.len() <= data.len() + 1, "{format:?}: more rows than bytes");
        }
    }
}

/// One `--import` host file (`hosts/ID.json`).
pub fn import_host(data: &[u8]) {
    let (status, rows) = diffy_analysis::fuzzing::import_host_file(data);
    if !status.is_collected() {
        assert_eq!(rows, 0, "a host that was not read has no rows");
    }
}

/// What `GetCommandInvocation` returned as an instance's standard output,
/// decoded within a 1 MiB limit.
pub fn ssm_envelope(data: &[u8]) {
    use diffy_transport_ssm::envelope::{Decoded, decode};
    let text = String::from_utf8_lossy(data);
    const LIMIT: u64 = 1 << 20;
    match decode(&text, NONCE, LIMIT) {
        Decoded::Whole { stdout, stderr, .. } | Decoded::OverLimit { stdout, stderr } => {
            assert!((stdout.len() + stderr.len()) as u64 <= LIMIT, "decoded past the limit");
        }
        Decoded::Fatal(_) | Decoded::Damaged(_) => {}
    }
}

/// An ssh_config file read by the `ssh-config` target: every host it names
/// can be handed to ssh.
pub fn ssh_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = diffy_transport_ssh::SshConfigTarget::parse(&text, "fuzz") {
        for h in t.hosts() {
            assert!(diffy_transport_ssh::check_destination(h.address()).is_ok(), "{h:?}");
        }
    }
}

/// A suppressions file (TOML).
pub fn suppressions(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = diffy_analysis::Suppressions::parse(text, "fuzz");
    }
}

/// A payload file (TOML): one that loads also renders.
pub fn payload_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = PayloadSpec::from_toml(text, "fuzz") {
            let _ = Script::render_with_nonce(&spec, Duration::from_secs(5), NONCE);
        }
    }
}
