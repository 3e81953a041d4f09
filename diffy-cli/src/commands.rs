//! The commands: flags, environment and `diffy.toml` turned into library
//! options, the engine run, and the result printed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use diffy_core::report::Report;
use diffy_core::{
    BaselineOptions, BaselineWrite, CancellationToken, CollectOptions, Engine, EngineBuilder, RunId, RunOptions,
    RunState, TargetKey,
};

use crate::cli::{
    BaselineArgs, Cli, CollectArgs, Command, Format, PayloadArgs, RunArgs, RunsArgs, SchemaArgs, SchemaKind,
    TargetArgs, TransportArgs,
};
use crate::config::Config;
use crate::error::{CliError, CliResult, EXIT_CLEAN, EXIT_INTERRUPTED, EXIT_TROUBLE};
use crate::output::{self, CliSink, RunListing};
use crate::registry;

/// Settings shared by every command.
pub(crate) struct Common {
    pub(crate) config: Config,
    pub(crate) format: Format,
    pub(crate) store: String,
}

impl Common {
    pub(crate) fn new(cli: &Cli) -> CliResult<Self> {
        let config = Config::load(cli.config.as_deref())?;
        let format = cli.format.or(config.defaults.format).unwrap_or(Format::Human);
        let store = cli.store.clone().or_else(|| config.defaults.store.clone()).unwrap_or_else(|| "diffy-store".into());
        Ok(Self { config, format, store })
    }

    pub(crate) fn sink(&self) -> CliSink {
        CliSink::new((self.format == Format::Jsonl).then(|| Box::new(std::io::stdout()) as Box<dyn Write + Send>))
    }
}

pub(crate) fn key(s: &str) -> CliResult<TargetKey> {
    TargetKey::new(s).map_err(CliError::from)
}

/// Parses `256M`, `1G`, `512KiB`, `1048576`.
pub fn parse_bytes(s: &str) -> CliResult<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| CliError::new(format!("{s:?} is not a size"), "write a size like 256M, 1G or 1048576"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(CliError::new(format!("{s:?} is not a size"), "write a size like 256M, 1G or 1048576")),
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| CliError::new(format!("{s:?} is not a usable size"), "use a size above zero"))
}

fn parse_duration(s: &str) -> CliResult<Duration> {
    let d = humantime::parse_duration(s)
        .map_err(|e| CliError::new(format!("{s:?} is not a duration: {e}"), "write a duration like 90s, 5m or 1h"))?;
    if d.is_zero() {
        return Err(CliError::new("the deadline must be longer than zero", "write a duration like 90s or 5m"));
    }
    Ok(d)
}

fn collect_options(c: &Common, t: &TransportArgs, transport_default: usize) -> CliResult<CollectOptions> {
    let d = &c.config.defaults;
    let mut concurrency = transport_default;
    if let Some(n) = t.concurrency.or(d.concurrency) {
        if n == 0 {
            return Err(CliError::new("--concurrency must be at least 1", "use e.g. --concurrency 64"));
        }
        concurrency = n;
    }
    // The engine runs fewer at once if the process's limits cannot hold
    // this many (and says so through the sink).
    let mut o = CollectOptions::default().concurrency(concurrency);
    if let Some(s) = t.deadline.as_deref().or(d.deadline.as_deref()) {
        o = o.host_deadline(parse_duration(s)?);
    }
    if let Some(s) = t.max_output.as_deref().or(d.max_output.as_deref()) {
        o = o.max_output_bytes(parse_bytes(s)?);
    }
    Ok(o)
}

pub(crate) fn run_options(c: &Common, r: &RunArgs) -> RunOptions {
    let d = &c.config.defaults;
    let mut o = RunOptions::default();
    if let Some(i) = r.incident_id.clone().or_else(|| d.incident_id.clone()) {
        o = o.incident_id(i);
    }
    let who = r
        .operator
        .clone()
        .or_else(|| d.operator.clone())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok());
    if let Some(w) = who {
        o = o.operator(w);
    }
    o
}

fn ssh_settings(c: &Common, a: &crate::cli::SshArgs) -> registry::SshSettings {
    let d = &c.config.ssh;
    registry::SshSettings {
        config: a.ssh_config.clone().or_else(|| d.config.as_ref().map(|p| c.config.path(p))),
        user: a.ssh_user.clone().or_else(|| d.user.clone()),
        port: a.ssh_port.or(d.port),
        identity: a.ssh_identity.clone().or_else(|| d.identity.as_ref().map(|p| c.config.path(p))),
        jump: if a.ssh_jump.is_empty() { d.jump.clone() } else { a.ssh_jump.clone() },
        known_hosts: a.known_hosts.clone().or_else(|| d.known_hosts.as_ref().map(|p| c.config.path(p))),
        accept_new_host_keys: a.accept_new_host_keys || d.accept_new_host_keys,
        sudo: a.sudo || d.sudo,
        connection_attempts: a.ssh_connection_attempts.or(d.connection_attempts),
    }
}

/// An engine for collecting: target, transport, payload and store.
pub(crate) async fn collecting_engine(
    c: &Common,
    t: &TargetArgs,
    tr: &TransportArgs,
    p: &PayloadArgs,
    r: &RunArgs,
) -> CliResult<EngineBuilder> {
    let d = &c.config.defaults;
    let transport_name = tr.transport.clone().or_else(|| d.transport.clone()).unwrap_or_else(|| "local".into());
    let target_name = t.target.clone().or_else(|| d.target.clone()).unwrap_or_else(|| "static".into());
    let payload_name = p.payload.clone().or_else(|| d.payload.clone()).unwrap_or_else(|| "shell".into());
    let chosen = crate::unused::Chosen { target: &target_name, transport: &transport_name, store: &c.store };
    for w in crate::unused::check(chosen, t, tr, &c.config)? {
        let _ = writeln!(std::io::stderr(), "warning: {w}");
    }
    let hosts = t.hosts.iter().map(|h| registry::parse_host(h)).collect::<CliResult<Vec<_>>>()?;
    let hosts_file: Option<PathBuf> = t.hosts_file.clone().or_else(|| d.hosts.as_ref().map(|h| c.config.path(h)));
    let ssh = ssh_settings(c, &tr.ssh);
    let incident = r.incident_id.clone().or_else(|| d.incident_id.clone());
    let aws = registry::AwsCell::new(registry::AwsSettings {
        regions: t.aws.regions.clone(),
        accounts: t.aws.accounts.clone(),
        accounts_file: t.aws.accounts_file.clone(),
        role_name: t.aws.role_name.clone(),
        ssm_output: t.aws.ssm_output.clone(),
        incident: incident.clone(),
        groups: t.asg.clone(),
        tags: t.tags.clone(),
        instance_ids: t.instance_ids.clone(),
    });
    let collection = registry::transport(&transport_name, &ssh, incident.as_deref(), &aws).await?;
    let target = registry::target(&target_name, hosts, hosts_file.as_deref(), &transport_name, &ssh, &aws).await?;
    let payload = registry::payload(&payload_name, &c.config)?;
    let store = registry::store(&c.store, &aws, registry::StoreUse::Write).await?;
    let mut options = collect_options(c, tr, collection.default_concurrency())?;
    // The deep packs read every packaged file: their own default deadline.
    if payload_name.ends_with("-deep") && tr.deadline.is_none() && d.deadline.is_none() {
        options = options.host_deadline(diffy_core::payload::DEEP_HOST_DEADLINE);
    }
    Ok(Engine::builder()
        .target_arc(target)
        .collection_arc(collection)
        .payload_arc(payload)
        .store_arc(store)
        .collect_options(options))
}

/// Starts watching Ctrl-C, SIGTERM and SIGHUP (a closed terminal, a `kill`,
/// a CI job stopped): the first cancels the run (what arrived is kept, the
/// run is marked interrupted), a second exits at once.
pub(crate) fn ctrl_c(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        tracing::warn!("cannot watch SIGTERM and SIGHUP; only Ctrl-C stops a run cleanly");
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
        return;
    };
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let what = tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_ok() { "interrupted" } else { return },
                Some(()) = term.recv() => "terminated (SIGTERM)",
                Some(()) = hup.recv() => "hung up (SIGHUP)",
            };
            if !first {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            first = false;
            // A closed terminal may be the reason: never fail on this write.
            let _ = writeln!(
                std::io::stderr(),
                "\n{what}: stopping the hosts still running; what arrived is kept (Ctrl-C again to quit at once)"
            );
            cancel.cancel();
        }
    });
}

pub(crate) fn evidence(c: &Common, run: &RunId) -> String {
    format!("{}/runs/{run}", c.store.trim_end_matches('/'))
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> CliResult<()> {
    // Stdout flushes at every line; a report has thousands of them.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| CliError::plain(format!("cannot write JSON: {e}")))?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// The failure budget of `--max-failed` (a count, or a percentage of the
/// targeted hosts); 10 % when not given.
pub(crate) fn max_failed(a: &crate::cli::CoverageArgs, targeted: usize) -> CliResult<usize> {
    let spec = a.max_failed.as_deref().unwrap_or("10%").trim();
    let bad = || {
        CliError::new(
            format!("--max-failed {spec:?} is neither a count nor a percentage"),
            "give a number of hosts (5) or a percentage of the targeted hosts (10%)",
        )
    };
    match spec.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            // Rounded up: one lost host of a small fleet is not yet heavy failure.
            Ok((targeted as f64 * p / 100.0).ceil() as usize)
        }
        None => spec.parse().map_err(|_| bad()),
    }
}

/// Exit 2 when more hosts failed or never reported than the budget allows,
/// saying so on standard error (what was printed is kept).
pub(crate) fn over_budget(a: &crate::cli::CoverageArgs, targeted: usize, not_covered: usize) -> CliResult<Option<u8>> {
    let budget = max_failed(a, targeted)?;
    if not_covered > budget {
        let _ = writeln!(
            std::io::stderr(),
            "error: {not_covered} of {targeted} targeted hosts were not covered (failed or never reported), more than \
             --max-failed allows ({budget}); see their statuses above, or raise --max-failed"
        );
        return Ok(Some(EXIT_TROUBLE));
    }
    Ok(None)
}

fn collection_code(m: &diffy_core::RunManifest) -> u8 {
    if m.counts.collected == 0 {
        EXIT_TROUBLE
    } else if m.state == RunState::Interrupted {
        EXIT_INTERRUPTED
    } else {
        EXIT_CLEAN
    }
}

async fn collect(c: &Common, a: &CollectArgs) -> CliResult<u8> {
    let key = key(&a.key)?;
    max_failed(&a.coverage, 0)?;
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
    if manifest.state == RunState::Interrupted {
        return Ok(EXIT_INTERRUPTED);
    }
    if manifest.counts.collected == 0 {
        return Err(CliError::new(
            format!("no host of {} could be collected", manifest.target),
            format!(
                "the hosts' statuses are in {}; check connectivity, credentials and the deadline",
                evidence(c, &manifest.id)
            ),
        ));
    }
    if let Some(code) =
        over_budget(&a.coverage, manifest.counts.targeted, manifest.counts.failed + manifest.counts.missing)?
    {
        return Ok(code);
    }
    Ok(collection_code(&manifest))
}

async fn baseline(c: &Common, a: &BaselineArgs) -> CliResult<u8> {
    let key = key(&a.key)?;
    let engine = collecting_engine(c, &a.target, &a.transport, &a.payload, &a.run).await?;
    // The analysis reads the key's latest run again, to refuse its outliers
    // as baseline hosts (a build without it cannot tell them).
    #[cfg(feature = "analysis")]
    let engine = engine.analysis(crate::analyze::analyzer(c, &crate::cli::MethodArgs::default())?);
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
    Ok(collection_code(&manifest))
}

async fn runs(c: &Common, a: &RunsArgs) -> CliResult<u8> {
    let store = registry::store(&c.store, &registry::AwsCell::default(), registry::StoreUse::Read).await?;
    let target = a.key.as_deref().map(key).transpose()?;
    let manifests = store.list_runs(target.as_ref()).await?;
    let mut baselines = std::collections::BTreeMap::new();
    for m in &manifests {
        if !baselines.contains_key(&m.target) {
            baselines.insert(m.target.clone(), store.get_baseline(&m.target).await?.map(|b| b.run));
        }
    }
    let listing: Vec<RunListing<'_>> = manifests
        .iter()
        .map(|m| RunListing {
            id: m.id.as_str(),
            target: m.target.as_str(),
            kind: m.kind,
            state: m.state,
            started_at: m.started_at,
            finished_at: m.finished_at,
            incident_id: m.incident_id.as_deref(),
            operator: m.operator.as_deref(),
            transport: &m.transport,
            payload: &m.payload.name,
            payload_hash: &m.payload_hash,
            hosts: m.counts.targeted,
            collected: m.counts.collected,
            failed: m.counts.failed,
            baseline: baselines.get(&m.target).and_then(|b| b.as_ref()) == Some(&m.id),
        })
        .collect();
    match c.format {
        Format::Human => output::runs(&mut std::io::stdout().lock(), &listing)?,
        Format::Json => print_json(&listing)?,
        Format::Jsonl => {
            let sink = c.sink();
            for r in &listing {
                sink.line("run", r)?;
            }
        }
    }
    Ok(EXIT_CLEAN)
}

fn plugins(c: &Common) -> CliResult<u8> {
    match c.format {
        Format::Human => output::plugins(&mut std::io::stdout().lock(), registry::PLUGINS)?,
        Format::Json => print_json(&registry::PLUGINS)?,
        Format::Jsonl => {
            let sink = c.sink();
            for p in registry::PLUGINS {
                sink.line("plugin", p)?;
            }
        }
    }
    Ok(EXIT_CLEAN)
}

fn schema(a: &SchemaArgs) -> CliResult<u8> {
    let schema = match a.which {
        SchemaKind::Report => Report::json_schema(),
        SchemaKind::Events => schemars::schema_for!(diffy_core::Event),
    };
    print_json(&schema)?;
    Ok(EXIT_CLEAN)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult<u8> {
    let c = Common::new(&cli)?;
    match &cli.command {
        Command::Baseline(a) => baseline(&c, a).await,
        Command::Collect(a) => collect(&c, a).await,
        #[cfg(feature = "analysis")]
        Command::Analyze(a) => crate::analyze::analyze(&c, a).await,
        #[cfg(not(feature = "analysis"))]
        Command::Analyze(_) => {
            registry::lookup(registry::PLUGINS, "analysis", "diffy")?;
            Err(CliError::plain("the analysis is not compiled into this build of diffy"))
        }
        Command::Runs(a) => runs(&c, a).await,
        Command::Plugins => plugins(&c),
        Command::Schema(a) => schema(a),
        Command::Completions(a) => {
            // Into memory first: clap_complete panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(a.shell, &mut <Cli as clap::CommandFactory>::command(), "diffy", &mut script);
            std::io::stdout().lock().write_all(&script)?;
            Ok(EXIT_CLEAN)
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout().lock())?;
            Ok(EXIT_CLEAN)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256M").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
    }
}
