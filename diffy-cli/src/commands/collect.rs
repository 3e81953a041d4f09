//! `diffy collect`: run the payload on every host and store the evidence.

use diffy_core::CancellationToken;

use crate::cli::{CollectArgs, Format};
use crate::context::{Common, collecting_engine, ctrl_c, evidence, key, print_json, run_options};
use crate::error::CliResult;
use crate::exit;
use crate::output;

pub(super) async fn run(c: &Common, a: &CollectArgs) -> CliResult<u8> {
    let key = key(&a.key)?;
    // An unusable --max-failed is refused before any host is touched.
    exit::max_failed(&a.coverage, 0)?;
    let engine = collecting_engine(c, &a.target, &a.transport, &a.payload, &a.run).await?.build()?;
    let run = run_options(c, &a.run);
    let cancel = CancellationToken::new();
    ctrl_c(cancel.clone());
    let sink = c.sink();
    let manifest = engine.collect(&key, &run, &sink, cancel).await;
    sink.finish();
    let manifest = manifest?;
    match c.format {
        Format::Human => output::run_summary(&mut std::io::stdout().lock(), &manifest, &evidence(c, &manifest.id))?,
        Format::Json => print_json(&manifest)?,
        Format::Jsonl => sink.line("run", &manifest)?,
    }
    exit::for_run(&manifest, Some(&a.coverage), &evidence(c, &manifest.id))
}
