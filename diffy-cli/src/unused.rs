//! Flags the chosen plugins would ignore: refused, so that no flag seems to
//! do what it does not (a `--tag` without `--target asg` would silently
//! collect from other hosts than the responder meant). The same setting from
//! a `DIFFY_*` variable or `diffy.toml` is only warned about: those are
//! often set once for several kinds of run.

use crate::cli::{TargetArgs, TransportArgs};
use crate::config::Config;
use crate::error::{CliError, CliResult};

/// The plugins a run uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chosen<'a> {
    pub target: &'a str,
    pub transport: &'a str,
    pub store: &'a str,
}

impl Chosen<'_> {
    fn uses_aws(&self) -> bool {
        self.target == "asg" || self.transport == "ssm" || self.store.starts_with("s3://")
    }
}

/// One setting: its flag, the variable that can set it too, whether it is
/// set, the plugins that use it and whether this run uses it.
struct Setting {
    flag: &'static str,
    env: Option<&'static str>,
    set: bool,
    users: &'static str,
    used: bool,
}

fn settings(c: Chosen<'_>, t: &TargetArgs, tr: &TransportArgs) -> Vec<Setting> {
    let ssh = c.transport == "ssh";
    let aws = c.uses_aws();
    let s = &tr.ssh;
    let a = &t.aws;
    let row = |flag, env, set, users, used| Setting { flag, env, set, users, used };
    vec![
        row("--asg", None, !t.asg.is_empty(), "the asg target (--target asg)", c.target == "asg"),
        row("--tag", None, !t.tags.is_empty(), "the asg target (--target asg)", c.target == "asg"),
        row("--instance-id", None, !t.instance_ids.is_empty(), "the asg target (--target asg)", c.target == "asg"),
        row("--region", None, !a.regions.is_empty(), "the asg target, the ssm transport and the s3 store", aws),
        row("--account", None, !a.accounts.is_empty(), "the asg target, the ssm transport and the s3 store", aws),
        row(
            "--accounts",
            Some("DIFFY_ACCOUNTS"),
            a.accounts_file.is_some(),
            "the asg target, the ssm transport and the s3 store",
            aws,
        ),
        row(
            "--role-name",
            Some("DIFFY_ROLE_NAME"),
            a.role_name.is_some(),
            "the asg target, the ssm transport and the s3 store",
            aws,
        ),
        row(
            "--ssm-output",
            Some("DIFFY_SSM_OUTPUT"),
            a.ssm_output.is_some(),
            "the ssm transport (--transport ssm)",
            c.transport == "ssm",
        ),
        row(
            "--ssh-config",
            Some("DIFFY_SSH_CONFIG"),
            s.ssh_config.is_some(),
            "the ssh transport and the ssh-config target",
            ssh || c.target == "ssh-config",
        ),
        row("--ssh-user", Some("DIFFY_SSH_USER"), s.ssh_user.is_some(), "the ssh transport (--transport ssh)", ssh),
        row("--ssh-port", Some("DIFFY_SSH_PORT"), s.ssh_port.is_some(), "the ssh transport (--transport ssh)", ssh),
        row(
            "--ssh-identity",
            Some("DIFFY_SSH_IDENTITY"),
            s.ssh_identity.is_some(),
            "the ssh transport (--transport ssh)",
            ssh,
        ),
        row("--ssh-jump", None, !s.ssh_jump.is_empty(), "the ssh transport (--transport ssh)", ssh),
        row(
            "--known-hosts",
            Some("DIFFY_KNOWN_HOSTS"),
            s.known_hosts.is_some(),
            "the ssh transport (--transport ssh)",
            ssh,
        ),
        row("--accept-new-host-keys", None, s.accept_new_host_keys, "the ssh transport (--transport ssh)", ssh),
        row("--sudo", None, s.sudo, "the ssh transport (--transport ssh)", ssh),
        row(
            "--ssh-connection-attempts",
            Some("DIFFY_SSH_CONNECTION_ATTEMPTS"),
            s.ssh_connection_attempts.is_some(),
            "the ssh transport (--transport ssh)",
            ssh,
        ),
    ]
}

/// For each setting that must not be set: from its `DIFFY_*` variable, a
/// warning; from the command line, the first one refuses the run.
fn refuse_flags_warn_env(
    settings: impl Iterator<Item = Setting>,
    warning: impl Fn(&Setting, &str) -> String,
    refusal: impl Fn(&Setting) -> CliError,
) -> CliResult<Vec<String>> {
    let mut warnings = Vec::new();
    for s in settings {
        match s.env.filter(|v| std::env::var_os(v).is_some()) {
            Some(var) => warnings.push(warning(&s, var)),
            None => return Err(refusal(&s)),
        }
    }
    Ok(warnings)
}

/// Refuses a flag that no chosen plugin uses; returns warnings for settings
/// from the environment or `diffy.toml` that this run ignores.
pub(crate) fn check(c: Chosen<'_>, t: &TargetArgs, tr: &TransportArgs, config: &Config) -> CliResult<Vec<String>> {
    let unused = settings(c, t, tr).into_iter().filter(|s| s.set && !s.used);
    let mut warnings = refuse_flags_warn_env(
        unused,
        |s, var| {
            format!(
                "{var} is set, but only {} use it (this run: --target {}, --transport {}); it is ignored",
                s.users, c.target, c.transport
            )
        },
        |s| {
            CliError::new(
                format!(
                    "{} is used only by {}, and this run has --target {} and --transport {}",
                    s.flag, s.users, c.target, c.transport
                ),
                format!("drop {}, or choose the plugin that uses it", s.flag),
            )
        },
    )?;
    if c.transport != "ssh" && c.target != "ssh-config" && config.has("ssh") {
        warnings.push(format!(
            "diffy.toml's [ssh] settings are not used by --transport {} (only by --transport ssh)",
            c.transport
        ));
    }
    if c.transport != "ssm" && config.has("ssm") {
        warnings.push(format!(
            "diffy.toml's [ssm] settings are not used by --transport {} (only by --transport ssm)",
            c.transport
        ));
    }
    if !c.uses_aws() && config.has("aws") {
        warnings.push(format!(
            "diffy.toml's [aws] settings are not used by this run (--target {}, --transport {}, --store {})",
            c.target, c.transport, c.store
        ));
    }
    Ok(warnings)
}

/// `analyze --from RUN` and `--import DIR` analyse hosts already collected:
/// every flag that chooses or reaches hosts, or shapes a collection, is
/// refused (a `--host` there would seem to narrow the analysis, and a subset
/// would change what the herd is). The same setting from a `DIFFY_*`
/// variable is only warned about.
#[cfg(feature = "analysis")]
pub(crate) fn check_reanalysis(
    source: &str,
    t: &TargetArgs,
    tr: &TransportArgs,
    payload: &crate::cli::PayloadArgs,
    run: &crate::cli::RunArgs,
    config: &Config,
) -> CliResult<Vec<String>> {
    let c = Chosen { target: "", transport: "", store: "" };
    let row = |flag, env, set| Setting { flag, env, set, users: "", used: false };
    let mut rows = vec![
        row("--target", Some("DIFFY_TARGET"), t.target.is_some()),
        row("--host", None, !t.hosts.is_empty()),
        row("--hosts", Some("DIFFY_HOSTS"), t.hosts_file.is_some()),
        row("--transport", Some("DIFFY_TRANSPORT"), tr.transport.is_some()),
        row("--concurrency", Some("DIFFY_CONCURRENCY"), tr.concurrency.is_some()),
        row("--deadline", Some("DIFFY_DEADLINE"), tr.deadline.is_some()),
        row("--max-output", Some("DIFFY_MAX_OUTPUT"), tr.max_output.is_some()),
        row("--payload", Some("DIFFY_PAYLOAD"), payload.payload.is_some()),
        row("--incident-id", Some("DIFFY_INCIDENT_ID"), run.incident_id.is_some()),
        row("--operator", Some("DIFFY_OPERATOR"), run.operator.is_some()),
    ];
    rows.extend(settings(c, t, tr));
    let mut warnings = refuse_flags_warn_env(
        rows.into_iter().filter(|s| s.set),
        |_, var| format!("{var} is set, but {source} collects nothing; it is ignored"),
        |s| {
            CliError::new(
                format!(
                    "{} chooses or reaches hosts to collect from, and {source} analyses hosts already collected",
                    s.flag
                ),
                format!(
                    "drop {}; {source} analyses every host it holds, since a subset would change what the herd is \
                     (collect the hosts you want with `diffy analyze KEY` instead)",
                    s.flag
                ),
            )
        },
    )?;
    let d = &config.defaults;
    let mut keys: Vec<&str> = [
        ("target", d.target.is_some()),
        ("transport", d.transport.is_some()),
        ("payload", d.payload.is_some()),
        ("hosts", d.hosts.is_some()),
        ("incident_id", d.incident_id.is_some()),
        ("operator", d.operator.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| k)
    .collect();
    for section in ["[collect]", "[ssh]", "[ssm]"] {
        if config.has(section.trim_matches(['[', ']'])) {
            keys.push(section);
        }
    }
    if !keys.is_empty() {
        warnings.push(format!("diffy.toml's {} are not used: {source} collects nothing", keys.join(", ")));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Chosen, check};
    use crate::cli::{Cli, Command};
    use crate::config::Config;

    /// Every flag, with a value, and the plugins (target, transport, store)
    /// that use it.
    /// Whether the chosen plugins use a flag.
    type Uses = fn(Chosen<'_>) -> bool;

    const FLAGS: &[(&[&str], Uses)] = &[
        (&["--asg", "web"], |c| c.target == "asg"),
        (&["--tag", "app=web"], |c| c.target == "asg"),
        (&["--instance-id", "i-0123456789abcdef0"], |c| c.target == "asg"),
        (&["--region", "eu-west-1"], aws),
        (&["--account", "123456789012"], aws),
        (&["--accounts", "accounts.txt"], aws),
        (&["--role-name", "Triage"], aws),
        (&["--ssm-output", "s3://b/p"], |c| c.transport == "ssm"),
        (&["--ssh-config", "cfg"], |c| c.transport == "ssh" || c.target == "ssh-config"),
        (&["--ssh-user", "ops"], ssh),
        (&["--ssh-port", "2222"], ssh),
        (&["--ssh-identity", "id"], ssh),
        (&["--ssh-jump", "bastion"], ssh),
        (&["--known-hosts", "kh"], ssh),
        (&["--accept-new-host-keys"], ssh),
        (&["--sudo"], ssh),
        (&["--ssh-connection-attempts", "2"], ssh),
        // Used by every plugin: never refused.
        (&["--concurrency", "5"], |_| true),
        (&["--deadline", "10s"], |_| true),
        (&["--max-output", "1M"], |_| true),
        (&["--host", "web-1"], |_| true),
        (&["--hosts", "hosts.txt"], |_| true),
    ];

    fn aws(c: Chosen<'_>) -> bool {
        c.target == "asg" || c.transport == "ssm" || c.store.starts_with("s3://")
    }

    fn ssh(c: Chosen<'_>) -> bool {
        c.transport == "ssh"
    }

    #[test]
    fn every_flag_against_every_plugin() {
        let mut checked = 0;
        for target in ["static", "ssh-config", "asg"] {
            for transport in ["local", "ssh", "ssm"] {
                for store in ["diffy-store", "s3://evidence/ir"] {
                    let chosen = Chosen { target, transport, store };
                    for (flag, used) in FLAGS {
                        let args = ["diffy", "collect", "key"].iter().chain(flag.iter()).copied();
                        let cli = Cli::try_parse_from(args).unwrap();
                        let Command::Collect(a) = cli.command else { unreachable!() };
                        let r = check(chosen, &a.target, &a.transport, &Config::default());
                        let what = format!("{flag:?} with {chosen:?}");
                        if used(chosen) {
                            assert!(r.is_ok_and(|w| w.is_empty()), "{what} must be accepted");
                        } else {
                            let e = r.expect_err(&what).to_string();
                            assert!(e.contains(&format!("{} is used only by ", flag[0])), "{what}: {e}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 3 * 2 * FLAGS.len());
    }
}
