//! `diffy.toml`: defaults, named payloads and normalisation rules.
//!
//! ```toml
//! [defaults]
//! store = "/var/lib/diffy"
//! transport = "local"
//! payload = "shell"
//! format = "human"
//! method = "cluster,baseline"
//! concurrency = 64
//! deadline = "120s"
//! max_output = "256M"
//! hosts = "hosts.txt"
//! incident_id = "IR-1234"
//! operator = "alice"
//! suppressions = "suppressions.toml"
//! threshold = 5.0
//! history_days = 30
//!
//! [payloads]
//! web = "payloads/web.toml"      # a payload file, relative to this file
//!
//! [payloads.tiny]                # or a payload written inline
//! query = [{ name = "listeners", shell = "ss -H -tln", format = "lines" }]
//!
//! [ssh]                          # the ssh transport
//! config = "fleet_ssh_config"
//! user = "ec2-user"
//! identity = "/home/alice/.ssh/ir_ed25519"
//! jump = ["bastion.example.com"]
//! known_hosts = "known_hosts"
//! accept_new_host_keys = false
//! sudo = true
//! connection_attempts = 6        # while closed before the SSH banner (MaxStartups)
//!
//! [queries.listeners]            # how a query's rows are compared
//! identity = ["line"]
//! volatile = []
//! weight = 2.0
//! ```
//!
//! Relative paths are relative to the configuration file's directory.
//! Flags win over `DIFFY_*` environment variables, which win over this file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::Format;
use crate::error::{CliError, CliResult};

/// Defaults for flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub store: Option<String>,
    pub target: Option<String>,
    pub transport: Option<String>,
    pub payload: Option<String>,
    pub format: Option<Format>,
    pub method: Option<String>,
    pub concurrency: Option<usize>,
    pub deadline: Option<String>,
    pub max_output: Option<String>,
    pub hosts: Option<PathBuf>,
    pub incident_id: Option<String>,
    pub operator: Option<String>,
    pub suppressions: Option<PathBuf>,
    pub threshold: Option<f64>,
    pub history_days: Option<u32>,
}

/// Settings of the ssh transport.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshDefaults {
    pub config: Option<PathBuf>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    #[serde(default)]
    pub jump: Vec<String>,
    pub known_hosts: Option<PathBuf>,
    #[serde(default)]
    pub accept_new_host_keys: bool,
    #[serde(default)]
    pub sudo: bool,
    pub connection_attempts: Option<u32>,
}

/// A payload named in the configuration: a file, or written inline.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PayloadEntry {
    /// A payload file.
    File(PathBuf),
    /// A payload written inline (the payload file's tables).
    Inline(toml::Table),
}

/// Normalisation rules of one query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRulesEntry {
    pub identity: Option<Vec<String>>,
    pub volatile: Option<Vec<String>>,
    pub weight: Option<f64>,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub payloads: BTreeMap<String, PayloadEntry>,
    #[serde(default)]
    pub queries: BTreeMap<String, QueryRulesEntry>,
    #[serde(default)]
    pub ssh: SshDefaults,
    /// The directory relative paths start from.
    #[serde(skip)]
    pub base: PathBuf,
    /// Where the file was read from, if anywhere.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Config {
    /// Loads `explicit` (which must exist), else `./diffy.toml` or
    /// `~/.config/diffy/diffy.toml` when present, else defaults.
    pub fn load(explicit: Option<&Path>) -> CliResult<Self> {
        let path = match explicit {
            Some(p) => {
                if !p.exists() {
                    return Err(CliError::new(
                        format!("configuration file {} does not exist", p.display()),
                        "check --config or DIFFY_CONFIG, or remove it to use defaults",
                    ));
                }
                Some(p.to_path_buf())
            }
            None => {
                let local = PathBuf::from("diffy.toml");
                let user = std::env::var_os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                    .map(|d| d.join("diffy").join("diffy.toml"));
                [Some(local), user].into_iter().flatten().find(|p| p.is_file())
            }
        };
        let Some(path) = path else { return Ok(Self { base: PathBuf::from("."), ..Default::default() }) };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CliError::plain(format!("cannot read configuration file {}: {e}", path.display())))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| {
            CliError::new(
                format!("configuration file {} is not valid: {e}", path.display()),
                "see the diffy.toml example in the README; unknown keys are refused so typos do not go unnoticed",
            )
        })?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        config.source = Some(path);
        Ok(config)
    }

    /// A path from the file, made relative to the file's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let c: Config = toml::from_str(
            r#"
            [defaults]
            store = "/tmp/s"
            format = "json"
            threshold = 4.5
            [payloads]
            web = "web.toml"
            [payloads.tiny]
            query = [{ name = "x", shell = "echo x" }]
            [queries.x]
            identity = ["line"]
            "#,
        )
        .unwrap();
        assert_eq!(c.defaults.format, Some(Format::Json));
        assert!(matches!(c.payloads["web"], PayloadEntry::File(_)));
        assert!(matches!(c.payloads["tiny"], PayloadEntry::Inline(_)));
        assert!(toml::from_str::<Config>("[defaults]\nstroe = 1\n").is_err());
    }
}
