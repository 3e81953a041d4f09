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
        for w in &config.warnings {
            let _ = writeln!(std::io::stderr(), "warning: {w}");
        }
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
    diffy_core::settings::parse_bytes(s).map_err(|e| CliError::new(e, diffy_core::settings::BYTES_HELP))
}

pub(crate) fn parse_duration(s: &str) -> CliResult<Duration> {
    diffy_core::settings::parse_duration(s).map_err(|e| CliError::new(e, diffy_core::settings::DURATION_HELP))
}

// Where the settings meet: each function below starts from the library's
// options struct as `diffy.toml` wrote it (every knob it leaves out at the
// struct's one default), then lays the flags over it (clap has already laid
// the flags over their `DIFFY_*` variables). Nothing else merges settings.

/// `[collect]`, then `--concurrency`, `--deadline`, `--max-output`. A
/// concurrency left unset is the transport's own default, chosen (and fitted
/// to the process's limits) by the engine.
pub(crate) fn collect_options(c: &Common, t: &TransportArgs) -> CliResult<CollectOptions> {
    let mut o: CollectOptions = c.config.section("collect")?;
    if let Some(n) = t.concurrency {
        if n == 0 {
            return Err(CliError::new("--concurrency must be at least 1", "use e.g. --concurrency 64"));
        }
        o = o.concurrency(n);
    }
    if let Some(s) = t.deadline.as_deref() {
        o = o.host_deadline(parse_duration(s)?);
    }
    if let Some(s) = t.max_output.as_deref() {
        o = o.max_output_bytes(parse_bytes(s)?);
    }
    Ok(o)
}

/// `[ssh]` (its paths relative to `diffy.toml`), then the `--ssh-*` flags;
/// `[ssm]`, then the incident id as the commands' comment.
pub(crate) fn transport_settings(
    c: &Common,
    a: &crate::cli::SshArgs,
    incident: Option<&str>,
) -> CliResult<registry::TransportSettings> {
    let _ = (c, a, incident);
    #[allow(unused_mut)]
    let mut settings = registry::TransportSettings::default();
    #[cfg(feature = "transport-ssh")]
    {
        use diffy_transport_ssh::{HostKeyPolicy, SshOptions};
        let mut o: SshOptions = c.config.section("ssh")?;
        for p in [&mut o.config_file, &mut o.identity_file, &mut o.known_hosts_file].into_iter().flatten() {
            *p = c.config.path(p);
        }
        // A bare name is looked up on PATH; a path is the file's.
        if o.program.components().count() > 1 {
            o.program = c.config.path(&o.program);
        }
        if let Some(f) = &a.ssh_config {
            o = o.config_file(f);
        }
        if let Some(u) = &a.ssh_user {
            o = o.user(u);
        }
        if let Some(p) = a.ssh_port {
            o = o.port(p);
        }
        if let Some(i) = &a.ssh_identity {
            o = o.identity_file(i);
        }
        if !a.ssh_jump.is_empty() {
            o.jump_hosts = a.ssh_jump.clone();
        }
        if let Some(k) = &a.known_hosts {
            o = o.known_hosts_file(k);
        }
        if a.accept_new_host_keys {
            o = o.host_keys(HostKeyPolicy::AcceptNew);
        }
        if a.sudo {
            o = o.sudo(true);
        }
        if let Some(n) = a.ssh_connection_attempts {
            o = o.connection_attempts(n);
        }
        settings.ssh = o;
    }
    #[cfg(feature = "transport-ssm")]
    {
        let mut o: diffy_transport_ssm::SsmOptions = c.config.section("ssm")?;
        // The incident id goes in each command's Comment, for CloudTrail.
        if o.comment.is_none() {
            o = o.comment(match incident {
                Some(i) => format!("diffy {i}"),
                None => "diffy (read-only triage queries)".to_string(),
            });
        }
        settings.ssm = o;
    }
    Ok(settings)
}

/// `[aws]`, then `--region`, `--account`, `--role-name`, and the incident id
/// as the assumed-role session name; the flags that choose instances.
pub(crate) fn aws_settings(c: &Common, t: &TargetArgs, incident: Option<&str>) -> CliResult<registry::AwsSettings> {
    let a = &t.aws;
    #[cfg(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3"))]
    let options = {
        let mut o: diffy_aws::AwsOptions = c.config.section("aws")?;
        if !a.regions.is_empty() {
            o.regions = a.regions.clone();
        }
        if !a.accounts.is_empty() {
            o.accounts = Vec::new();
            for id in &a.accounts {
                if !o.accounts.iter().any(|x| &x.id == id) {
                    o.accounts.push(diffy_aws::Account::new(id.clone())?);
                }
            }
        }
        if let Some(r) = &a.role_name {
            o = o.role_name(r);
        }
        if let Some(i) = incident.filter(|_| !c.config.sets("aws", &["session_name"])) {
            o = o.session_name(format!("diffy-{i}"));
        }
        o
    };
    #[cfg(not(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3")))]
    let _ = (c, incident);
    Ok(registry::AwsSettings {
        #[cfg(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3"))]
        options,
        accounts_file: a.accounts_file.clone(),
        ssm_output: a.ssm_output.clone(),
        groups: t.asg.clone(),
        tags: t.tags.clone(),
        instance_ids: t.instance_ids.clone(),
    })
}

/// The AWS context for reading a store (`runs`, `analyze --from`): `[aws]`
/// from the file, no target flags.
pub(crate) fn store_aws(c: &Common) -> CliResult<registry::AwsCell> {
    Ok(registry::AwsCell::new(aws_settings(c, &TargetArgs::default(), None)?))
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
    let incident = r.incident_id.clone().or_else(|| d.incident_id.clone());
    let settings = transport_settings(c, &tr.ssh, incident.as_deref())?;
    let aws = registry::AwsCell::new(aws_settings(c, t, incident.as_deref())?);
    let mut options = collect_options(c, tr)?;
    let collection = registry::transport(&transport_name, &settings, &aws).await?;
    let target = registry::target(&target_name, hosts, hosts_file.as_deref(), &transport_name, &settings, &aws).await?;
    let payload = registry::payload(&payload_name, &c.config)?;
    let store = registry::store(&c.store, &aws, registry::StoreUse::Write).await?;
    // The deep packs read every packaged file: their own default deadline.
    if payload_name.ends_with("-deep")
        && tr.deadline.is_none()
        && !c.config.sets("collect", &["host_deadline", "deadline"])
    {
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
    fn flags_are_laid_over_the_file() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["diffy", "collect", "k", "--deadline", "9s"]).unwrap();
        let crate::cli::Command::Collect(a) = cli.command else { unreachable!() };
        let c = Common {
            config: Config::parse("[collect]\nconcurrency = 3\nhost_deadline = \"1m\"\n", "t").unwrap(),
            format: Format::Human,
            store: String::new(),
        };
        let o = collect_options(&c, &a.transport).unwrap();
        assert_eq!(o.concurrency, Some(3), "from the file");
        assert_eq!(o.host_deadline, Duration::from_secs(9), "the flag wins");
        assert_eq!(o.grace, CollectOptions::default().grace, "the struct's default");
    }

    #[cfg(feature = "transport-ssh")]
    #[test]
    fn ssh_paths_are_the_files() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["diffy", "collect", "k", "--ssh-user", "ir"]).unwrap();
        let crate::cli::Command::Collect(a) = cli.command else { unreachable!() };
        let mut config =
            Config::parse("[ssh]\nprogram = \"bin/ssh\"\nknown_hosts_file = \"kh\"\nuser = \"x\"\n", "t").unwrap();
        config.base = PathBuf::from("/etc/diffy");
        let c = Common { config, format: Format::Human, store: String::new() };
        let s = transport_settings(&c, &a.transport.ssh, None).unwrap();
        assert_eq!(s.ssh.program, PathBuf::from("/etc/diffy/bin/ssh"));
        assert_eq!(s.ssh.known_hosts_file, Some(PathBuf::from("/etc/diffy/kh")));
        assert_eq!(s.ssh.user.as_deref(), Some("ir"), "the flag wins");
        let c = Common { config: Config::parse("[ssh]\nprogram = \"ssh\"\n", "t").unwrap(), ..c };
        assert_eq!(
            transport_settings(&c, &a.transport.ssh, None).unwrap().ssh.program,
            PathBuf::from("ssh"),
            "on PATH"
        );
    }
}
