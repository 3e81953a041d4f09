//! `diffy analyze`: collect then analyse, re-analyse a stored run, or analyse
//! imported evidence.

use std::io::Write;
use std::sync::Arc;

use diffy_core::engine::emit_report;
use diffy_core::report::{Method, Report};
use diffy_core::{AnalyzeOptions, CancellationToken, Engine, RunId};

use crate::cli::{AnalyzeArgs, Format};
use crate::context::{Common, analyzer, collecting_engine, ctrl_c, evidence, key, print_json, run_options};
use crate::error::{CliError, CliResult};
use crate::exit::{self, Analysed};
use crate::output::{self, CliSink};
use crate::registry;

fn parse_methods(s: &str) -> CliResult<Vec<Method>> {
    if s.trim() == "all" {
        return Ok(vec![Method::Cluster, Method::Baseline, Method::Novelty]);
    }
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let m: Method = part.parse().map_err(CliError::from)?;
        if !v.contains(&m) {
            v.push(m);
        }
    }
    if v.is_empty() {
        return Err(CliError::new(
            "no analysis method given",
            "use --method cluster, baseline, novelty (comma-separated) or all",
        ));
    }
    Ok(v)
}

fn print_report(c: &Common, sink: &CliSink, r: &Report, evidence: Option<&str>, show: usize) -> CliResult<()> {
    match c.format {
        Format::Human => output::report(&mut std::io::stdout().lock(), r, evidence, show)?,
        Format::Json => print_json(r)?,
        // The events, the summary and the report itself went out as they came.
        Format::Jsonl => {
            let _ = sink;
        }
    }
    Ok(())
}

pub(super) async fn run(c: &Common, a: &AnalyzeArgs) -> CliResult<u8> {
    let d = &c.config.defaults;
    let analysis = analyzer(c, &a.method)?;
    let methods = a.method.method.as_deref().or(d.method.as_deref()).map(parse_methods).transpose()?;
    let show = a.show.unwrap_or(5);
    exit::max_failed(&a.coverage, 0)?;
    let sink = c.sink();
    let source = match (&a.from, &a.import) {
        (Some(_), _) => Some("--from"),
        (_, Some(_)) => Some("--import"),
        _ => None,
    };
    if let Some(source) = source {
        for w in crate::unused::check_reanalysis(source, &a.target, &a.transport, &a.payload, &a.run, &c.config)? {
            let _ = writeln!(std::io::stderr(), "warning: {w}");
        }
    }
    if let Some(dir) = &a.import {
        if !dir.is_dir() {
            return Err(CliError::new(
                format!("{} is not a directory", dir.display()),
                "--import takes a folder with hosts/<host>.json files",
            ));
        }
        let dir = dir.clone();
        let ms = methods.clone();
        let report = tokio::task::spawn_blocking(move || analysis.analyze_import(&dir, ms.as_deref()))
            .await
            .map_err(|e| CliError::plain(format!("the analysis failed: {e}")))??;
        emit_report(&report, &sink);
        print_report(c, &sink, &report, None, show)?;
        return exit::for_report(&report, &a.coverage, Analysed::Stored);
    }
    let mut options = AnalyzeOptions::default();
    if let Some(m) = methods {
        options = options.methods(m);
    }
    if let Some(days) = a.method.history_days.or(d.history_days) {
        options = options.history_days(days);
    }
    if let Some(b) = &a.method.baseline_run {
        options = options.baseline_run(RunId::new(b.as_str()).map_err(CliError::from)?);
    }
    let analysis: Arc<dyn diffy_core::Analysis> = Arc::new(analysis);
    if let Some(from) = &a.from {
        let run = RunId::new(from.as_str()).map_err(CliError::from)?;
        let store = registry::store(&c.store, &crate::context::store_aws(c)?, registry::StoreUse::Read).await?;
        if let Some(k) = &a.key {
            let m = store.get_run(&run).await?;
            if m.target.as_str() != k {
                return Err(CliError::new(
                    format!("run {run} is of target {}, not {k}", m.target),
                    "drop the key, or give the run's own target key",
                ));
            }
        }
        let engine = Engine::builder().store_arc(store).analysis_arc(analysis).build()?;
        let report = engine.analyze_run(&run, &options, &sink).await?;
        print_report(c, &sink, &report, Some(&evidence(c, &run)), show)?;
        return exit::for_report(&report, &a.coverage, Analysed::Stored);
    }
    let key = key(a.key.as_deref().expect("clap requires a key without --from or --import"))?;
    let engine =
        collecting_engine(c, &a.target, &a.transport, &a.payload, &a.run).await?.analysis_arc(analysis).build()?;
    let run = run_options(c, &a.run);
    let cancel = CancellationToken::new();
    ctrl_c(cancel.clone());
    let report = engine.analyze(&key, &run, &options, &sink, cancel.clone()).await;
    sink.finish();
    let report = report?;
    let id = report.run.as_ref().map(|r| r.id.clone());
    print_report(c, &sink, &report, id.as_ref().map(|id| evidence(c, id)).as_deref(), show)?;
    exit::for_report(&report, &a.coverage, Analysed::Collected { interrupted: cancel.is_cancelled() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        assert_eq!(parse_methods("cluster, baseline").unwrap(), vec![Method::Cluster, Method::Baseline]);
        assert_eq!(parse_methods("all").unwrap().len(), 3);
        assert!(parse_methods("magic").unwrap_err().help.unwrap().contains("baseline, cluster or novelty"));
    }
}
