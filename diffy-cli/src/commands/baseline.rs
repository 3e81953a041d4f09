//! `diffy baseline`: collect a run and make it the target's baseline.

use std::io::Write;

use diffy_core::{BaselineOptions, BaselineWrite, CancellationToken};

use crate::cli::{BaselineArgs, Format};
use crate::context::{Common, collecting_engine, ctrl_c, evidence, key, print_json, run_options};
use crate::error::CliResult;
use crate::exit;
use crate::output;

pub(super) async fn run(c: &Common, a: &BaselineArgs) -> CliResult<u8> {
    let key = key(&a.key)?;
    let engine = collecting_engine(c, &a.target, &a.transport, &a.payload, &a.run).await?;
    // The analysis reads the key's latest run again, to refuse its outliers
    // as baseline hosts (a build without it cannot tell them).
    #[cfg(feature = "analysis")]
    let engine = engine.analysis(crate::context::analyzer(c, &crate::cli::MethodArgs::default())?);
    let engine = engine.build()?;
    let run = run_options(c, &a.run);
    let cancel = CancellationToken::new();
    ctrl_c(cancel.clone());
    let sink = c.sink();
    let mode = if a.replace { BaselineWrite::Replace } else { BaselineWrite::CreateOnly };
    let options = BaselineOptions::default().write(mode).allow_outliers(a.force);
    let result = engine.baseline(&key, &run, &options, &sink, cancel).await;
    sink.finish();
    let (manifest, record) = result?;
    match c.format {
        Format::Human => {
            output::run_summary(&mut std::io::stdout().lock(), &manifest, &evidence(c, &manifest.id))?;
            let mut out = std::io::stdout().lock();
            write!(out, "Run {} is now the baseline of {}", record.run, record.target)?;
            match &record.replaces {
                Some(old) => writeln!(out, " (replacing {old}, which stays in the store).")?,
                None => writeln!(out, ".")?,
            }
            // Say from which hosts: a baseline is only as clean as they are.
            let from: Vec<&str> = manifest.hosts.iter().map(|h| h.id.as_str()).collect();
            let shown = if from.len() <= 20 {
                from.join(", ")
            } else {
                format!("{}, … {} more (--format json lists them)", from[..20].join(", "), from.len() - 20)
            };
            writeln!(out, "Taken from {} host{}: {shown}.", from.len(), if from.len() == 1 { "" } else { "s" })?;
        }
        Format::Json => print_json(&serde_json::json!({ "run": manifest, "baseline": record }))?,
        Format::Jsonl => {
            sink.line("run", &manifest)?;
            sink.line("baseline", &record)?;
        }
    }
    exit::for_run(&manifest, None, &evidence(c, &manifest.id))
}
