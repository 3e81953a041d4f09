//! What every command shares: the settings from flags, `DIFFY_*` and
//! `diffy.toml` ([`Common`]), turned into library options, the engine built
//! from the chosen plugins, Ctrl-C, and JSON output. Commands import from
//! here; nothing here imports a command.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use diffy_core::{CancellationToken, CollectOptions, Engine, EngineBuilder, RunId, RunOptions, TargetKey};

use crate::cli::{Cli, Format, PayloadArgs, RunArgs, TargetArgs, TransportArgs};
use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::exit::EXIT_INTERRUPTED;
use crate::output::CliSink;
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

pub(crate) fn parse_duration(s: &str) -> CliResult<Duration> {
    let d = humantime::parse_duration(s)
        .map_err(|e| CliError::new(format!("{s:?} is not a duration: {e}"), "write a duration like 90s, 5m or 1h"))?;
    if d.is_zero() {
        return Err(CliError::new("the deadline must be longer than zero", "write a duration like 90s or 5m"));
    }
    Ok(d)
}

pub(crate) fn collect_options(c: &Common, t: &TransportArgs, transport_default: usize) -> CliResult<CollectOptions> {
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

pub(crate) fn ssh_settings(c: &Common, a: &crate::cli::SshArgs) -> registry::SshSettings {
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

/// The analysis, as flags and `diffy.toml` configure it.
#[cfg(feature = "analysis")]
pub(crate) fn analyzer(c: &Common, m: &crate::cli::MethodArgs) -> CliResult<diffy_analysis::Analyzer> {
    let d = &c.config.defaults;
    let mut a = diffy_analysis::Analyzer::new();
    if let Some(t) = m.threshold.or(d.threshold) {
        a = a.threshold(t)?;
    }
    if let Some(s) = m.suppressions.clone().or_else(|| d.suppressions.as_ref().map(|p| c.config.path(p))) {
        a = a.suppressions(diffy_analysis::Suppressions::from_file(&s)?);
    }
    for (name, r) in &c.config.queries {
        a = a.query_rules(
            name.clone(),
            diffy_analysis::QueryRules { identity: r.identity.clone(), volatile: r.volatile.clone(), weight: r.weight },
        );
    }
    Ok(a)
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
