//! Command-line arguments. These types stay in the CLI: they are turned into
//! library options (`CollectOptions`, `RunOptions`, ...) in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Text for people.
    Human,
    /// One JSON document.
    Json,
    /// JSON Lines: one `{"type": ..., "data": ...}` event per line as the run goes.
    Jsonl,
}

const AFTER_HELP: &str = "\
Exit status: 0 nothing found, 1 outliers found, 2 trouble (an unusable argument, or no host could be collected), 3 nothing found but no host's evidence could see everything (collected without root, say), 130 interrupted. More hosts failed than --max-failed allows (default 10%): 2.
Settings come from flags, then DIFFY_* environment variables, then diffy.toml, then defaults.";

/// Diffy: triage for cloud incident response. Runs read-only queries on every
/// host of a fleet, keeps every raw result as evidence, and points at the
/// hosts that stand out, saying why.
#[derive(Debug, Parser)]
#[command(name = "diffy", bin_name = "diffy", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,

    /// Configuration file [default: ./diffy.toml, else ~/.config/diffy/diffy.toml, if present].
    #[arg(long, global = true, env = "DIFFY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Evidence store: a directory [default: ./diffy-store].
    #[arg(long, global = true, env = "DIFFY_STORE", value_name = "DIR")]
    pub store: Option<String>,

    /// Output format [default: human].
    #[arg(long, global = true, env = "DIFFY_FORMAT", value_enum)]
    pub format: Option<Format>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collect a baseline from known-clean hosts and make it the target's baseline.
    Baseline(BaselineArgs),
    /// Collect evidence from every host of a target, without analysing it.
    Collect(CollectArgs),
    /// Collect, then analyse: who stands out, and why (or re-analyse with --from, or --import).
    Analyze(AnalyzeArgs),
    /// List stored runs.
    Runs(RunsArgs),
    /// List the plugins compiled into this build.
    Plugins,
    /// Print the JSON Schema of the report or of the JSON Lines events.
    Schema(SchemaArgs),
    /// Print a shell completion script (e.g. `diffy completions bash > ~/.local/share/bash-completion/completions/diffy`).
    Completions(CompletionsArgs),
    /// Print the man page, in roff (e.g. `diffy man > /usr/local/share/man/man1/diffy.1`).
    Man,
}

/// `diffy completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Which hosts.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Target")]
pub struct TargetArgs {
    /// Target plugin: static, ssh-config, or asg [default: static].
    #[arg(long, env = "DIFFY_TARGET", value_name = "NAME")]
    pub target: Option<String>,

    /// A host, as `ID[=ADDRESS]` (repeatable). With --target ssh-config or
    /// asg it chooses among the target's hosts (an unknown one is an error).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,

    /// A file of hosts, one per line: `ID [ADDRESS] [LABEL=VALUE ...]`.
    #[arg(long = "hosts", env = "DIFFY_HOSTS", value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,

    /// Auto Scaling group to target (repeatable; --target asg). Default: the target key.
    #[arg(long = "asg", value_name = "NAME")]
    pub asg: Vec<String>,

    /// EC2 tag filter KEY=VALUE[,VALUE...] (repeatable, all must match; --target asg).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,

    /// EC2 instance id to target (repeatable; --target asg).
    #[arg(long = "instance-id", value_name = "ID")]
    pub instance_ids: Vec<String>,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Where AWS plugins look (the asg target, the ssm transport, the s3 store).
/// Credentials come from the standard AWS chain; AWS_ENDPOINT_URL is honoured.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "AWS (--target asg, --transport ssm, --store s3://)")]
pub struct AwsArgs {
    /// Region to look in (repeatable). Default: AWS_REGION or the profile's region.
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,

    /// Account to look in, assuming --role-name there (repeatable).
    #[arg(long = "account", value_name = "ID")]
    pub accounts: Vec<String>,

    /// Inventory of accounts: one per line, ID [name=NAME] [regions=R1,R2] [role=ROLE].
    #[arg(long = "accounts", env = "DIFFY_ACCOUNTS", value_name = "FILE")]
    pub accounts_file: Option<PathBuf>,

    /// Role assumed in each account. Default DiffyTriage.
    #[arg(long, env = "DIFFY_ROLE_NAME", value_name = "NAME")]
    pub role_name: Option<String>,

    /// SSM also writes each host's whole output here (OutputS3BucketName);
    /// diffy reads it when the inline output was cut at 24,000 characters.
    #[arg(long, env = "DIFFY_SSM_OUTPUT", value_name = "s3://BUCKET/PREFIX")]
    pub ssm_output: Option<String>,
}

/// How to reach them.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Transport")]
pub struct TransportArgs {
    /// Transport plugin: local, ssh or ssm [default: local].
    #[arg(long, env = "DIFFY_TRANSPORT", value_name = "NAME")]
    pub transport: Option<String>,

    /// Hosts queried at once [default: 8 for local, 100 for ssh, 1000 for ssm].
    #[arg(long, env = "DIFFY_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,

    /// Time each host gets for the whole payload, e.g. 90s, 5m [default: 120s].
    #[arg(long, env = "DIFFY_DEADLINE", value_name = "DURATION")]
    pub deadline: Option<String>,

    /// Output kept per host before it is stopped and marked truncated, e.g. 512M [default: 256M].
    #[arg(long, env = "DIFFY_MAX_OUTPUT", value_name = "BYTES")]
    pub max_output: Option<String>,

    #[command(flatten)]
    pub ssh: SshArgs,
}

/// How the ssh transport connects. Anything not given comes from the SSH
/// client's own configuration.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "SSH (--transport ssh)")]
pub struct SshArgs {
    /// An ssh_config file to use instead of ~/.ssh/config; with --target ssh-config, its Host entries are the hosts.
    #[arg(long, env = "DIFFY_SSH_CONFIG", value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// Remote user.
    #[arg(long, env = "DIFFY_SSH_USER", value_name = "USER")]
    pub ssh_user: Option<String>,

    /// Remote port.
    #[arg(long, env = "DIFFY_SSH_PORT", value_name = "PORT")]
    pub ssh_port: Option<u16>,

    /// Identity file (used alone).
    #[arg(long, env = "DIFFY_SSH_IDENTITY", value_name = "FILE")]
    pub ssh_identity: Option<PathBuf>,

    /// Jump host, in order (repeatable).
    #[arg(long = "ssh-jump", value_name = "HOST")]
    pub ssh_jump: Vec<String>,

    /// A known_hosts file to use instead of the user's.
    #[arg(long, env = "DIFFY_KNOWN_HOSTS", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Accept the keys of hosts never seen before (changed keys are still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// Run the payload with `sudo -n` (a password prompt is reported, never answered).
    #[arg(long)]
    pub sudo: bool,

    /// Attempts per host while its connection is closed before the SSH banner, as sshd does
    /// beyond its MaxStartups (on a busy jump host, say); 1 never retries [default: 6].
    #[arg(long, env = "DIFFY_SSH_CONNECTION_ATTEMPTS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub ssh_connection_attempts: Option<u32>,
}

/// What to ask.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Payload")]
pub struct PayloadArgs {
    /// Payload: `shell`, `osquery`, a name from diffy.toml, or a payload file [default: shell].
    #[arg(long, env = "DIFFY_PAYLOAD", value_name = "NAME|FILE")]
    pub payload: Option<String>,
}

/// Who and why.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Run")]
pub struct RunArgs {
    /// Incident id recorded with the run (at most 100 characters).
    #[arg(long, env = "DIFFY_INCIDENT_ID", value_name = "ID")]
    pub incident_id: Option<String>,

    /// Who is running it [default: $USER].
    #[arg(long, env = "DIFFY_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,
}

/// How much failure a run may have before it is trouble.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Coverage")]
pub struct CoverageArgs {
    /// Hosts that may fail or never report before the run exits 2: a count,
    /// or a percentage of the targeted hosts, e.g. 0, 5, 10% [default: 10%].
    #[arg(long, env = "DIFFY_MAX_FAILED", value_name = "N|PERCENT")]
    pub max_failed: Option<String>,
}

/// `diffy baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Target key: what the runs are about (an Auto Scaling group, a service).
    pub key: String,

    /// Replace the target's existing baseline (its run stays in the store).
    #[arg(long)]
    pub replace: bool,

    /// Take the baseline even from hosts that were outliers of the target's latest run.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
    #[command(flatten)]
    pub payload: PayloadArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `diffy collect`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Target key: what the runs are about (an Auto Scaling group, a service).
    pub key: String,

    #[command(flatten)]
    pub coverage: CoverageArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
    #[command(flatten)]
    pub payload: PayloadArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Analysis settings.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Analysis")]
pub struct MethodArgs {
    /// Methods: cluster, baseline, novelty (comma-separated), or all
    /// [default: cluster, plus baseline when the target has one, plus novelty when it has history].
    #[arg(long, env = "DIFFY_METHOD", value_name = "METHODS")]
    pub method: Option<String>,

    /// Score at which a host is an outlier [default: 5].
    #[arg(long, env = "DIFFY_THRESHOLD", value_name = "SCORE")]
    pub threshold: Option<f64>,

    /// Known-benign findings to suppress (counted, never hidden): a TOML file.
    #[arg(long, env = "DIFFY_SUPPRESSIONS", value_name = "FILE")]
    pub suppressions: Option<PathBuf>,

    /// Days of earlier runs that novelty compares against [default: 30].
    #[arg(long, env = "DIFFY_HISTORY_DAYS", value_name = "DAYS")]
    pub history_days: Option<u32>,

    /// Compare against this run instead of the target's baseline.
    #[arg(long, value_name = "RUN")]
    pub baseline_run: Option<String>,
}

/// `diffy analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Target key (not needed with --from or --import).
    #[arg(required_unless_present_any = ["from", "import"])]
    pub key: Option<String>,

    /// Re-analyse a stored run without collecting again.
    #[arg(long, value_name = "RUN", conflicts_with = "import")]
    pub from: Option<String>,

    /// Analyse evidence collected elsewhere: DIR/hosts/<host>.json (and DIR/baseline.json).
    #[arg(long, value_name = "DIR")]
    pub import: Option<PathBuf>,

    /// Findings shown per host in human output [default: 5].
    #[arg(long, value_name = "N")]
    pub show: Option<usize>,

    #[command(flatten)]
    pub method: MethodArgs,
    #[command(flatten)]
    pub coverage: CoverageArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
    #[command(flatten)]
    pub payload: PayloadArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `diffy runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only runs of this target key.
    pub key: Option<String>,
}

/// `diffy schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which schema.
    #[arg(value_enum, default_value = "report")]
    pub which: SchemaKind,
}

/// Schemas `diffy schema` prints.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SchemaKind {
    /// The report (`--format json` of `analyze`).
    Report,
    /// One JSON Lines event (`--format jsonl`).
    Events,
}
