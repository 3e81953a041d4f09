//! The plugins this build contains, chosen by cargo features. No hidden
//! registration: this table is the whole list, so a build is easy to audit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffy_core::{Collection, Host, HostId, Payload, Persistence, Target};
use serde::Serialize;

use crate::config::Config;
#[cfg(feature = "payload-file")]
use crate::config::PayloadEntry;
use crate::error::{CliError, CliResult};

/// One plugin Diffy knows.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PluginInfo {
    /// target, transport, payload, store or analysis.
    pub kind: &'static str,
    /// Its name on the command line.
    pub name: &'static str,
    /// The cargo feature of `diffy-cli` that builds it in.
    pub feature: &'static str,
    /// Whether this build has it.
    pub compiled: bool,
    /// What it does.
    pub about: &'static str,
}

/// Every plugin of this workspace.
pub const PLUGINS: &[PluginInfo] = &[
    PluginInfo {
        kind: "target",
        name: "static",
        feature: "target-static",
        compiled: cfg!(feature = "target-static"),
        about: "hosts from --host and --hosts FILE",
    },
    PluginInfo {
        kind: "target",
        name: "ssh-config",
        feature: "transport-ssh",
        compiled: cfg!(feature = "transport-ssh"),
        about: "hosts from the Host entries of --ssh-config FILE",
    },
    PluginInfo {
        kind: "target",
        name: "asg",
        feature: "target-asg",
        compiled: cfg!(feature = "target-asg"),
        about: "AWS Auto Scaling groups (InService instances), --tag filters, --instance-id; many accounts via assume-role",
    },
    PluginInfo {
        kind: "transport",
        name: "local",
        feature: "transport-local",
        compiled: cfg!(feature = "transport-local"),
        about: "runs the payload on this machine, once per host, with DIFFY_HOST set",
    },
    PluginInfo {
        kind: "transport",
        name: "ssh",
        feature: "transport-ssh",
        compiled: cfg!(feature = "transport-ssh"),
        about: "the system OpenSSH client: ssh_config, agents, ProxyJump; strict host keys; optional sudo -n",
    },
    PluginInfo {
        kind: "transport",
        name: "ssm",
        feature: "transport-ssm",
        compiled: cfg!(feature = "transport-ssm"),
        about: "AWS Systems Manager Run Command (AWS-RunShellScript); hosts are instance ids; AWS_ENDPOINT_URL honoured",
    },
    PluginInfo {
        kind: "payload",
        name: "shell",
        feature: "payload-shell",
        compiled: cfg!(feature = "payload-shell"),
        about: "standard security pack in POSIX sh (ss, /proc, /etc/passwd, cron, keys, sha256sum)",
    },
    PluginInfo {
        kind: "payload",
        name: "osquery",
        feature: "payload-osquery",
        compiled: cfg!(feature = "payload-osquery"),
        about: "standard security pack as osqueryi --json queries",
    },
    PluginInfo {
        kind: "payload",
        name: "shell-deep",
        feature: "payload-shell",
        compiled: cfg!(feature = "payload-shell"),
        about: "the shell pack, then dpkg --verify / rpm -Va (tens of seconds a host; deadline 480s unless given)",
    },
    PluginInfo {
        kind: "payload",
        name: "osquery-deep",
        feature: "payload-osquery",
        compiled: cfg!(feature = "payload-osquery"),
        about: "the osquery pack, then dpkg --verify / rpm -Va (tens of seconds a host; deadline 480s unless given)",
    },
    PluginInfo {
        kind: "payload",
        name: "file",
        feature: "payload-file",
        compiled: cfg!(feature = "payload-file"),
        about: "queries from a TOML payload file or from [payloads] in diffy.toml",
    },
    PluginInfo {
        kind: "store",
        name: "fs",
        feature: "store-fs",
        compiled: cfg!(feature = "store-fs"),
        about: "runs and raw evidence in a local directory (--store DIR)",
    },
    PluginInfo {
        kind: "store",
        name: "s3",
        feature: "store-s3",
        compiled: cfg!(feature = "store-s3"),
        about: "runs and raw evidence on S3 (--store s3://BUCKET/PREFIX), conditional writes, verified reads",
    },
    PluginInfo {
        kind: "analysis",
        name: "diffy",
        feature: "analysis",
        compiled: cfg!(feature = "analysis"),
        about: "baseline, cluster (with cohorts) and novelty analysis",
    },
];

/// Finds a plugin, or says why it cannot be used.
pub fn lookup(plugins: &'static [PluginInfo], kind: &str, name: &str) -> CliResult<&'static PluginInfo> {
    match plugins.iter().find(|p| p.kind == kind && p.name == name) {
        Some(p) if p.compiled => Ok(p),
        Some(p) => Err(CliError::new(
            format!("the {kind} plugin {name:?} is not compiled into this build of diffy"),
            format!("rebuild with it: cargo build --release -p diffy-cli --features {}", p.feature),
        )),
        None => {
            let known: Vec<&str> = plugins.iter().filter(|p| p.kind == kind).map(|p| p.name).collect();
            Err(CliError::new(
                format!("unknown {kind} {name:?}"),
                format!("this build knows: {} (`diffy plugins` lists every plugin)", known.join(", ")),
            ))
        }
    }
}

fn not_built(kind: &str, name: &str) -> CliError {
    CliError::plain(format!("the {kind} plugin {name:?} is not compiled into this build of diffy"))
}

/// The option structs of the transports this build has: `diffy.toml`'s
/// tables with the flags laid over them (`crate::context` does that, in one
/// place).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TransportSettings {
    /// The ssh transport and the ssh-config target.
    #[cfg(feature = "transport-ssh")]
    pub ssh: diffy_transport_ssh::SshOptions,
    /// The ssm transport (its output bucket comes from
    /// [`AwsSettings::ssm_output`]).
    #[cfg(feature = "transport-ssm")]
    pub ssm: diffy_transport_ssm::SsmOptions,
}

/// What the AWS plugins are told by flags, the environment and `diffy.toml`.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    /// Accounts, regions, role and session name.
    #[cfg(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3"))]
    pub options: diffy_aws::AwsOptions,
    /// Account inventory file, read when the context first loads; its
    /// accounts come before `options.accounts`.
    pub accounts_file: Option<PathBuf>,
    /// `s3://bucket/prefix` for SSM's whole outputs.
    pub ssm_output: Option<String>,
    /// Auto Scaling groups.
    pub groups: Vec<String>,
    /// Tag filters.
    pub tags: Vec<String>,
    /// Instance ids.
    pub instance_ids: Vec<String>,
}

/// The AWS context, loaded once on first use and shared by target,
/// transport and store.
#[derive(Debug, Default)]
pub struct AwsCell {
    settings: AwsSettings,
    #[cfg(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3"))]
    cell: tokio::sync::OnceCell<diffy_aws::AwsContext>,
}

impl AwsCell {
    /// A cell for these settings.
    pub fn new(settings: AwsSettings) -> Self {
        Self {
            settings,
            #[cfg(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3"))]
            cell: tokio::sync::OnceCell::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The context: the standard credential chain, the accounts and regions,
    /// loaded on the first call (async: profiles, SSO, IMDS), on whatever
    /// runtime the caller has.
    #[cfg(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3"))]
    pub async fn get(&self) -> CliResult<diffy_aws::AwsContext> {
        self.cell.get_or_try_init(|| self.load()).await.cloned()
    }

    #[cfg(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3"))]
    async fn load(&self) -> CliResult<diffy_aws::AwsContext> {
        let s = &self.settings;
        let mut o = s.options.clone();
        if let Some(f) = &s.accounts_file {
            let mut accounts = diffy_aws::read_inventory(f)?;
            for a in o.accounts {
                if !accounts.iter().any(|x| x.id == a.id) {
                    accounts.push(a);
                }
            }
            o.accounts = accounts;
        }
        Ok(diffy_aws::AwsContext::from_env(o).await?)
    }
}

/// Parses `ID[=ADDRESS]`.
pub fn parse_host(s: &str) -> CliResult<Host> {
    let (id, address) = match s.split_once('=') {
        Some((id, a)) => (id, Some(a)),
        None => (s, None),
    };
    let mut h = Host::new(HostId::new(id).map_err(CliError::from)?);
    h.address = address.map(str::to_string);
    Ok(h)
}

/// This machine's name, as the default host of the local transport.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| HostId::new(s.as_str()).is_ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Builds the target.
pub async fn target(
    name: &str,
    hosts: Vec<Host>,
    hosts_file: Option<&Path>,
    transport: &str,
    settings: &TransportSettings,
    aws: &AwsCell,
) -> CliResult<Arc<dyn Target>> {
    lookup(PLUGINS, "target", name)?;
    #[cfg(feature = "target-static")]
    if name == "static" {
        let mut all = hosts;
        if let Some(f) = hosts_file {
            all.extend(diffy_core::StaticTarget::from_file(f)?.hosts().iter().cloned());
        }
        if all.is_empty() {
            if transport != "local" {
                return Err(CliError::new(
                    "no hosts to query",
                    "name them with --host ID[=ADDRESS] (repeatable) or --hosts FILE, or use --target ssh-config --ssh-config FILE",
                ));
            }
            all.push(Host::new(HostId::new(local_hostname()).map_err(CliError::from)?));
        }
        return Ok(Arc::new(diffy_core::StaticTarget::new(all)?));
    }
    #[cfg(feature = "transport-ssh")]
    if name == "ssh-config" {
        let Some(config) = &settings.ssh.config_file else {
            return Err(CliError::new(
                "--target ssh-config needs an ssh_config file",
                "name it with --ssh-config FILE",
            ));
        };
        let mut t = diffy_transport_ssh::SshConfigTarget::from_file(config)?;
        // --host and --hosts choose among the file's hosts, never add to them.
        let mut chosen: Vec<HostId> = hosts.iter().map(|h| h.id.clone()).collect();
        if let Some(f) = hosts_file {
            chosen.extend(diffy_core::StaticTarget::from_file(f)?.hosts().iter().map(|h| h.id.clone()));
        }
        if !chosen.is_empty() {
            t = t.select(&chosen, &config.display().to_string())?;
        }
        if t.hosts().is_empty() {
            return Err(CliError::new(
                format!("{} has no Host entry without wildcards", config.display()),
                "add a `Host NAME` entry per host, or list hosts with --hosts FILE",
            ));
        }
        return Ok(Arc::new(t));
    }
    #[cfg(feature = "target-asg")]
    if name == "asg" {
        use diffy_target_asg::{AsgTarget, Selector};
        let s = aws.settings();
        let mut selectors: Vec<Selector> = s.groups.iter().map(|g| Selector::Group(g.clone())).collect();
        for t in &s.tags {
            selectors.push(Selector::tag(t)?);
        }
        if !s.instance_ids.is_empty() {
            selectors.push(Selector::instances(s.instance_ids.iter().cloned())?);
        }
        let mut t = AsgTarget::new(aws.get().await?, selectors);
        // --host and --hosts choose among the target's instances, never add to them.
        let mut chosen: Vec<String> = hosts.iter().map(|h| h.id.to_string()).collect();
        if let Some(f) = hosts_file {
            chosen.extend(diffy_core::StaticTarget::from_file(f)?.hosts().iter().map(|h| h.id.to_string()));
        }
        if !chosen.is_empty() {
            t = t.select(chosen);
        }
        return Ok(Arc::new(t));
    }
    let _ = (hosts, hosts_file, transport, settings, aws);
    Err(not_built("target", name))
}

/// Builds the transport.
pub async fn transport(name: &str, settings: &TransportSettings, aws: &AwsCell) -> CliResult<Arc<dyn Collection>> {
    lookup(PLUGINS, "transport", name)?;
    #[cfg(feature = "transport-local")]
    if name == "local" {
        return Ok(Arc::new(diffy_core::PerHost::new(diffy_core::LocalTransport::new())));
    }
    #[cfg(feature = "transport-ssh")]
    if name == "ssh" {
        let t = diffy_transport_ssh::SshTransport::new(settings.ssh.clone())?;
        return Ok(Arc::new(diffy_core::PerHost::new(t)));
    }
    #[cfg(feature = "transport-ssm")]
    if name == "ssm" {
        use diffy_transport_ssm::SsmTransport;
        let mut o = settings.ssm.clone();
        if o.comment.is_none() {
            o = o.comment("diffy (read-only triage queries)");
        }
        // Checked before the AWS configuration loads: a typo is a usage error.
        let output = match &aws.settings().ssm_output {
            None => None,
            Some(url) => Some(diffy_aws::s3::parse_url(url).ok_or_else(|| {
                diffy_core::Error::invalid_with_help(
                    format!("--ssm-output {url:?} does not name an S3 bucket"),
                    "write --ssm-output s3://BUCKET/PREFIX",
                )
            })?),
        };
        let ctx = aws.get().await?;
        if let Some((bucket, prefix)) = output {
            let reader = diffy_aws::s3::store(&bucket, &ctx)?;
            o = o.output_bucket(diffy_transport_ssm::OutputBucket::new(bucket, prefix, Arc::new(reader)));
        }
        return Ok(Arc::new(SsmTransport::with_context(ctx, o)));
    }
    let _ = (settings, aws);
    Err(not_built("transport", name))
}

/// Builds the payload: `shell`, `osquery`, a name from the configuration, or a file.
pub fn payload(name: &str, config: &Config) -> CliResult<Arc<dyn Payload>> {
    match name {
        "shell" => {
            lookup(PLUGINS, "payload", "shell")?;
            #[cfg(feature = "payload-shell")]
            return Ok(Arc::new(diffy_core::ShellPayload));
            #[allow(unreachable_code)]
            Err(not_built("payload", name))
        }
        "osquery" => {
            lookup(PLUGINS, "payload", "osquery")?;
            #[cfg(feature = "payload-osquery")]
            return Ok(Arc::new(diffy_core::OsqueryPayload));
            #[allow(unreachable_code)]
            Err(not_built("payload", name))
        }
        "shell-deep" => {
            lookup(PLUGINS, "payload", "shell-deep")?;
            #[cfg(feature = "payload-shell")]
            return Ok(Arc::new(diffy_core::DeepPayload { osquery: false }));
            #[allow(unreachable_code)]
            Err(not_built("payload", name))
        }
        "osquery-deep" => {
            lookup(PLUGINS, "payload", "osquery-deep")?;
            #[cfg(feature = "payload-osquery")]
            return Ok(Arc::new(diffy_core::DeepPayload { osquery: true }));
            #[allow(unreachable_code)]
            Err(not_built("payload", name))
        }
        other => {
            let entry = config.payloads.get(other);
            let path = Path::new(other);
            if entry.is_none() && !path.is_file() {
                let named: Vec<&str> = config.payloads.keys().map(String::as_str).collect();
                return Err(CliError::new(
                    format!(
                        "unknown payload {other:?}: not shell, osquery or their -deep packs, not named in diffy.toml, and no such file"
                    ),
                    if named.is_empty() {
                        "use --payload shell, --payload osquery, or the path of a payload file".to_string()
                    } else {
                        format!("use shell, osquery, a payload file, or one of: {}", named.join(", "))
                    },
                ));
            }
            lookup(PLUGINS, "payload", "file")?;
            #[cfg(feature = "payload-file")]
            {
                let p = match entry {
                    Some(PayloadEntry::File(f)) => diffy_core::FilePayload::from_path(&config.path(f))?,
                    Some(PayloadEntry::Inline(table)) => {
                        let text = toml::to_string(table).map_err(|e| CliError::plain(e.to_string()))?;
                        diffy_core::FilePayload::from_spec(diffy_core::PayloadSpec::from_toml(&text, other)?)?
                    }
                    None => diffy_core::FilePayload::from_path(path)?,
                };
                return Ok(Arc::new(p));
            }
            #[allow(unreachable_code)]
            {
                let _ = (entry, path);
                Err(not_built("payload", "file"))
            }
        }
    }
}

/// Whether a command may create the store it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreUse {
    /// The command writes evidence: a missing store is created.
    Write,
    /// The command only reads: a missing store is an error.
    Read,
}

/// Opens the store.
pub async fn store(location: &str, aws: &AwsCell, usage: StoreUse) -> CliResult<Arc<dyn Persistence>> {
    if location.starts_with("s3://") {
        lookup(PLUGINS, "store", "s3")?;
        #[cfg(feature = "store-s3")]
        {
            let ctx = aws.get().await?;
            let s = match usage {
                StoreUse::Write => diffy_store_object::BlobStore::s3(location, &ctx).await,
                StoreUse::Read => diffy_store_object::BlobStore::s3_existing(location, &ctx).await,
            }?;
            return Ok(Arc::new(s));
        }
    }
    let _ = (aws, usage);
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(CliError::new(
            format!("no store for {scheme}:// locations in this build"),
            "use a local directory (--store ./diffy-store) or S3 (--store s3://BUCKET/PREFIX)",
        ));
    }
    lookup(PLUGINS, "store", "fs")?;
    #[cfg(feature = "store-fs")]
    return Ok(Arc::new(match usage {
        StoreUse::Write => diffy_core::FsStore::open(location)?,
        StoreUse::Read => diffy_core::FsStore::open_existing(location)?,
    }));
    #[allow(unreachable_code)]
    Err(not_built("store", "fs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAKE: &[PluginInfo] = &[
        PluginInfo { kind: "transport", name: "local", feature: "transport-local", compiled: true, about: "" },
        PluginInfo { kind: "transport", name: "ssh", feature: "transport-ssh", compiled: false, about: "" },
    ];

    #[test]
    fn missing_plugin_says_not_compiled_in_and_how_to_get_it() {
        let e = lookup(FAKE, "transport", "ssh").unwrap_err();
        assert_eq!(e.message, "the transport plugin \"ssh\" is not compiled into this build of diffy");
        assert_eq!(
            e.help.as_deref(),
            Some("rebuild with it: cargo build --release -p diffy-cli --features transport-ssh")
        );
        let e = lookup(FAKE, "transport", "carrier-pigeon").unwrap_err();
        assert!(e.help.unwrap().contains("this build knows: local, ssh"));
        assert!(lookup(FAKE, "transport", "local").is_ok());
    }

    #[test]
    fn hosts_with_addresses() {
        let h = parse_host("web-1=admin@127.0.0.1").unwrap();
        assert_eq!(h.id.as_str(), "web-1");
        assert_eq!(h.address(), "admin@127.0.0.1");
        assert!(parse_host("../x").is_err());
    }
}
