//! `diffy.toml`: defaults, named payloads and normalisation rules.
//!
//! ```toml
//! [defaults]
//! store = "/var/lib/diffy"
//! transport = "local"
//! payload = "shell"
//! format = "human"
//! method = "cluster,baseline"
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
//! [collect]                      # diffy_core::CollectOptions
//! concurrency = 200              # default: the transport's (local 8, ssh 100, ssm 1000)
//! host_deadline = "120s"
//! max_output_bytes = "256M"
//!
//! [ssh]                          # diffy_transport_ssh::SshOptions
//! config = "fleet_ssh_config"
//! user = "ec2-user"
//! identity = "/home/alice/.ssh/ir_ed25519"
//! jump = ["bastion.example.com"]
//! known_hosts = "known_hosts"
//! accept_new_host_keys = false
//! sudo = true
//! connection_attempts = 6        # while closed before the SSH banner (MaxStartups)
//!
//! [ssm]                          # diffy_transport_ssm::SsmOptions
//! poll_interval = "2s"
//!
//! [aws]                          # diffy_aws::AwsOptions
//! regions = ["eu-west-1"]
//! accounts = ["123456789012"]
//! role_name = "DiffyTriage"
//!
//! [queries.listeners]            # how a query's rows are compared
//! identity = ["line"]
//! volatile = []
//! weight = 2.0
//! ```
//!
//! Relative paths are relative to the configuration file's directory.
//! Flags win over `DIFFY_*` environment variables, which win over this file.
//!
//! `[collect]`, `[ssh]`, `[ssm]` and `[aws]` are the library's option
//! structs, deserialized as they are (one default per knob, in the struct);
//! `crate::context` lays the flags over them, in one place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

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
    pub hosts: Option<PathBuf>,
    pub incident_id: Option<String>,
    pub operator: Option<String>,
    pub suppressions: Option<PathBuf>,
    pub threshold: Option<f64>,
    pub history_days: Option<u32>,
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
    /// `[collect]`: a `diffy_core::CollectOptions`.
    pub collect: Option<toml::Table>,
    /// `[ssh]`: a `diffy_transport_ssh::SshOptions`.
    pub ssh: Option<toml::Table>,
    /// `[ssm]`: a `diffy_transport_ssm::SsmOptions`.
    pub ssm: Option<toml::Table>,
    /// `[aws]`: a `diffy_aws::AwsOptions`.
    pub aws: Option<toml::Table>,
    /// The directory relative paths start from.
    #[serde(skip)]
    pub base: PathBuf,
    /// Where the file was read from, if anywhere.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// What the file still says the old way (printed once at start).
    #[serde(skip)]
    pub warnings: Vec<String>,
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
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        config.source = Some(path);
        Ok(config)
    }

    /// Parses the text of a configuration file (read from `source`),
    /// checking every section this build has a plugin for.
    pub fn parse(text: &str, source: &str) -> CliResult<Self> {
        let invalid = |e: &dyn std::fmt::Display| {
            CliError::new(
                format!("configuration file {source} is not valid: {e}"),
                "see the diffy.toml example in the README; unknown keys are refused so typos do not go unnoticed",
            )
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| invalid(&e))?;
        // Where the collection limits were before they had a table of their
        // own: still read, with a warning, so that an old file keeps working.
        let mut warnings = Vec::new();
        if let Some(toml::Value::Table(d)) = table.get_mut("defaults") {
            let mut moved = toml::Table::new();
            for (old, new) in
                [("concurrency", "concurrency"), ("deadline", "host_deadline"), ("max_output", "max_output_bytes")]
            {
                if let Some(v) = d.remove(old) {
                    warnings.push(format!(
                        "configuration file {source}: [defaults] {old} has moved to [collect]; \
                         write it as `{new} = ...` under [collect]"
                    ));
                    moved.insert(new.to_string(), v);
                }
            }
            if !moved.is_empty() {
                let collect = table.entry("collect").or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(collect) = collect else {
                    return Err(invalid(&"[collect] must be a table"));
                };
                for (k, v) in moved {
                    if collect.contains_key(&k) || (k == "host_deadline" && collect.contains_key("deadline")) {
                        return Err(CliError::new(
                            format!("configuration file {source} sets {k} both in [defaults] and in [collect]"),
                            "keep the one under [collect]",
                        ));
                    }
                    collect.insert(k, v);
                }
            }
        }
        let mut config: Config = table.try_into().map_err(|e| invalid(&e))?;
        config.source = Some(PathBuf::from(source));
        config.warnings = warnings;
        config.section::<diffy_core::CollectOptions>("collect")?;
        #[cfg(feature = "transport-ssh")]
        config.section::<diffy_transport_ssh::SshOptions>("ssh")?;
        #[cfg(feature = "transport-ssm")]
        config.section::<diffy_transport_ssm::SsmOptions>("ssm")?;
        #[cfg(any(feature = "target-asg", feature = "transport-ssm", feature = "store-s3"))]
        config.section::<diffy_aws::AwsOptions>("aws")?;
        Ok(config)
    }

    fn table(&self, name: &str) -> Option<&toml::Table> {
        match name {
            "collect" => self.collect.as_ref(),
            "ssh" => self.ssh.as_ref(),
            "ssm" => self.ssm.as_ref(),
            "aws" => self.aws.as_ref(),
            _ => None,
        }
    }

    /// The options struct of a section (`collect`, `ssh`, `ssm`, `aws`):
    /// what the file sets, every other field at its default.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> CliResult<T> {
        let Some(t) = self.table(name) else { return Ok(T::default()) };
        t.clone().try_into().map_err(|e| {
            CliError::new(
                format!(
                    "configuration file {}: [{name}] is not valid: {e}",
                    self.source.as_deref().unwrap_or(Path::new("(none)")).display()
                ),
                "see the diffy.toml example in the README; unknown keys are refused so typos do not go unnoticed",
            )
        })
    }

    /// Whether the file has the section.
    pub fn has(&self, section: &str) -> bool {
        self.table(section).is_some()
    }

    /// Whether the file sets one of `keys` (a name and its aliases) in `section`.
    pub fn sets(&self, section: &str, keys: &[&str]) -> bool {
        self.table(section).is_some_and(|t| keys.iter().any(|k| t.contains_key(*k)))
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
        assert!(Config::parse("[defaults]\nstroe = 1\n", "t").is_err());
    }

    #[test]
    fn sections_are_the_library_options() {
        let c = Config::parse("[collect]\nconcurrency = 7\nhost_deadline = \"5m\"\n", "t").unwrap();
        let o: diffy_core::CollectOptions = c.section("collect").unwrap();
        assert_eq!(o.concurrency, Some(7));
        assert_eq!(o.host_deadline, std::time::Duration::from_secs(300));
        assert_eq!(o.max_output_bytes, diffy_core::CollectOptions::default().max_output_bytes);
        assert!(c.sets("collect", &["host_deadline", "deadline"]) && !c.sets("collect", &["grace"]));
        let e = Config::parse("[collect]\nconcurency = 7\n", "t").unwrap_err();
        assert!(e.message.contains("[collect] is not valid") && e.message.contains("concurency"), "{}", e.message);
        let e = Config::parse("[collect]\nconcurrency = 0\n", "t").unwrap_err();
        assert!(e.message.contains("at least 1"), "{}", e.message);
        let c = Config::parse("[defaults]\ndeadline = \"90s\"\nconcurrency = 3\n", "t").unwrap();
        let o: diffy_core::CollectOptions = c.section("collect").unwrap();
        assert_eq!((o.host_deadline, o.concurrency), (std::time::Duration::from_secs(90), Some(3)));
        assert_eq!(c.warnings.len(), 2);
        assert!(c.warnings[0].contains("[defaults] concurrency has moved to [collect]"), "{:?}", c.warnings);
        let e = Config::parse("[defaults]\nmax_output = \"1M\"\n[collect]\nmax_output_bytes = 5\n", "t").unwrap_err();
        assert!(e.message.contains("both in [defaults] and in [collect]"), "{}", e.message);
    }

    #[test]
    fn the_readme_example_and_the_module_example_parse() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n[defaults]").expect("the README has a diffy.toml example") + 8;
        let block = &readme[start..start + readme[start..].find("```").unwrap()];
        let c = Config::parse(block, "README.md").unwrap();
        assert!(c.has("collect") && c.has("ssh") && c.has("aws"));
        let module: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start_matches(' ')))
            .collect();
        Config::parse(&module, "config.rs").unwrap();
    }

    #[cfg(feature = "transport-ssh")]
    #[test]
    fn the_ssh_table_keeps_its_short_names() {
        use diffy_transport_ssh::{HostKeyPolicy, SshOptions};
        let c = Config::parse("[ssh]\nconfig = \"f\"\njump = [\"b\"]\naccept_new_host_keys = true\n", "t").unwrap();
        let o: SshOptions = c.section("ssh").unwrap();
        assert_eq!(o.config_file.as_deref(), Some(Path::new("f")));
        assert_eq!(o.jump_hosts, ["b"]);
        assert_eq!(o.host_keys, HostKeyPolicy::AcceptNew);
        assert!(Config::parse("[ssh]\nusr = \"x\"\n", "t").is_err());
        assert!(Config::parse("[ssh]\nhost_keys = \"yolo\"\n", "t").is_err());
    }
}
