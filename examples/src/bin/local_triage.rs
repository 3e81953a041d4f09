//! `local-triage HOST...`: a custom binary built from Diffy's crates. It runs a
//! listeners-only payload once per named host on this machine (the local
//! transport sets `DIFFY_HOST`), analyses the herd, and prints the outliers.
//! Exit status: the report's outcome (0 none, 1 outliers, 2 nothing analysed,
//! 3 a partial view), 2 on an error.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use diffy_examples::{FindingCounter, ListenersPayload, summary, triage};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: local-triage HOST...  (set LOCAL_TRIAGE_EXTRA to add shell to the payload)");
        return std::process::ExitCode::from(2);
    }
    let hosts: Vec<&str> = args.iter().map(String::as_str).collect();
    let store = std::env::var("LOCAL_TRIAGE_STORE").unwrap_or_else(|_| "local-triage-store".into());
    let payload = ListenersPayload { extra: std::env::var("LOCAL_TRIAGE_EXTRA").unwrap_or_default() };
    let counter = FindingCounter::default();
    match triage(&hosts, std::path::Path::new(&store), payload, &counter).await {
        Ok(report) => {
            print!("{}", summary(&report, &counter));
            std::process::ExitCode::from(report.outcome().exit_code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
