//! `asg-triage GROUP s3://BUCKET/PREFIX INCIDENT`: a custom binary built from
//! Diffy's crates. It runs a listeners-only payload through SSM Run Command
//! on the InService instances of an Auto Scaling group, keeps the evidence on
//! S3, analyses the herd, and prints the outliers. Credentials, region and
//! endpoints come from the standard AWS chain (`AWS_PROFILE`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, ...). Exit status: the report's outcome
//! ([`Outcome::exit_code`](diffy_core::report::Outcome::exit_code)), 2 on an
//! error.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use diffy_examples::{FindingCounter, ListenersPayload, asg_triage, summary};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [group, store, incident] = args.as_slice() else {
        eprintln!("usage: asg-triage GROUP s3://BUCKET/PREFIX INCIDENT");
        return std::process::ExitCode::from(2);
    };
    let payload = ListenersPayload { extra: std::env::var("ASG_TRIAGE_EXTRA").unwrap_or_default() };
    let counter = FindingCounter::default();
    let aws = match diffy_aws::AwsContext::from_env(
        diffy_aws::AwsOptions::default().session_name(format!("diffy-{incident}")),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match asg_triage(aws, group, store, incident, payload, &counter).await {
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
