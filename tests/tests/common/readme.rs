//! The README's command lines, each either run by a test or listed here with
//! the reason it cannot run in the test suite. `cli::every_readme_command_is_run_or_listed`
//! fails when the README gains a command this table does not know, or the
//! table names one the README no longer has.
//!
//! A test runs a line through `sh -c`, verbatim, in a scratch directory where
//! `diffy` and `./target/release/diffy` are the binary under test and `demo`
//! and `tests` are the repository's (see [`crate::common::Diffy::sh`]). The only
//! substitutions are those [`Readme::line`] is given, named by the test.

#![allow(dead_code, unreachable_pub)]

/// Where a README command is exercised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    /// Run verbatim by this test (`binary::function`).
    Test(&'static str),
    /// Not run by the test suite, and why.
    NotRun(&'static str),
}

/// Every command line of the README's `sh` blocks (comments and `\`
/// continuations removed, spaces collapsed), and where it is exercised.
pub const COMMANDS: &[(&str, Where)] = &[
    (
        "cargo build --release -p diffy-cli",
        Where::NotRun(
            "the test suite builds the same crate (cargo test builds diffy-cli's binary); a release build takes \
             another ~10 minutes on 2 cores",
        ),
    ),
    ("./target/release/diffy analyze --import demo/fleet", Where::Test("cli::readme_commands_that_run_anywhere")),
    (
        "./target/release/diffy analyze web --transport ssh --hosts hosts.txt --ssh-config ~/.ssh/config --payload shell --method cluster",
        Where::Test("ssh::readme_commands_on_the_fleet"),
    ),
    (
        "./target/release/diffy collect api-v001 --target asg --transport ssm --store s3://bucket/prefix --incident-id IR-1234",
        Where::Test("aws::readme_commands_against_moto"),
    ),
    (
        "./target/release/diffy analyze --from RUN --store s3://bucket/prefix --method cluster",
        Where::Test("aws::readme_commands_against_moto"),
    ),
    (
        "python3 -m venv ~/.cache/diffy-moto && ~/.cache/diffy-moto/bin/pip install 'moto[server]>=5.1,<6'",
        Where::NotRun("what .ci/run itself does before the tests (it installs moto this way)"),
    ),
    (
        "export DIFFY_MOTO_SERVER=~/.cache/diffy-moto/bin/moto_server",
        Where::NotRun("what .ci/run itself does before the tests"),
    ),
    ("cargo test --workspace --locked", Where::NotRun("the test command itself: .ci/run runs exactly this line")),
    (
        "diffy analyze web --transport ssh --hosts hosts.txt --ssh-config ssh_config --format json",
        Where::Test("ssh::readme_commands_on_the_fleet"),
    ),
    (
        "diffy analyze web --transport ssh --target ssh-config --ssh-config ssh_config",
        Where::Test("ssh::readme_commands_on_the_fleet"),
    ),
    (
        "diffy collect web --transport ssh --hosts hosts.txt --ssh-user ec2-user --ssh-jump bastion --sudo",
        Where::NotRun(
            "needs an ec2-user account with sudo on every host and a jump host named bastion; the same options \
             are run on the fleet by ssh::a_jump_host_gets_the_same_strict_options and the --sudo fleet tests",
        ),
    ),
    (
        "sudo tests/fleet/diffy-fleet up 20 --dir /srv/fleet --prefix web",
        Where::Test("ssh::readme_commands_on_the_fleet"),
    ),
    (
        "sudo tests/fleet/diffy-fleet plant web-4 listener --dir /srv/fleet --prefix web",
        Where::Test("ssh::readme_commands_on_the_fleet"),
    ),
    (
        "sudo tests/fleet/diffy-fleet bastion web-20 --dir /srv/fleet --prefix web",
        Where::Test("ssh::readme_commands_on_the_fleet"),
    ),
    (
        "diffy analyze web --transport ssh --target ssh-config --ssh-config /srv/fleet/ssh_config",
        Where::Test("ssh::readme_commands_on_the_fleet"),
    ),
    (
        "sudo tests/fleet/diffy-fleet down --dir /srv/fleet --prefix web",
        Where::Test("ssh::readme_commands_on_the_fleet"),
    ),
    (
        "diffy collect api-v001 --target asg --transport ssm --incident-id IR-1234",
        Where::Test("aws::readme_commands_against_moto"),
    ),
    (
        "diffy collect api --target asg --asg api-v001 --asg api-v002 --transport ssm",
        Where::Test("aws::readme_commands_against_moto"),
    ),
    (
        "diffy collect api --target asg --tag Service=api --tag Env=prod --transport ssm",
        Where::Test("aws::readme_commands_against_moto"),
    ),
    (
        "diffy collect ir --target asg --instance-id i-0123456789abcdef0 --transport ssm",
        Where::Test("aws::readme_commands_against_moto"),
    ),
    (
        "diffy collect api-v001 --target asg --accounts accounts.txt --region us-east-1 --region eu-west-1 --transport ssm",
        Where::Test("aws::readme_commands_against_moto"),
    ),
    (
        "diffy collect api-v001 --transport ssm --hosts instances.txt --incident-id IR-1234",
        Where::Test("aws::readme_commands_against_moto"),
    ),
    ("cargo install cargo-fuzz", Where::NotRun("installs a tool from crates.io (minutes); fuzzing needs nightly")),
    (
        "cd fuzz && cargo +nightly fuzz run -O script_output -- -max_total_time=900 -dict=dicts/script_output.dict",
        Where::NotRun(
            "a 15-minute fuzzing session on nightly; its corpus is replayed on stable by diffy-fuzz's corpus test",
        ),
    ),
];

/// A command line of the README: its text as run, and its key in [`COMMANDS`].
#[derive(Clone, Debug)]
pub struct Line {
    /// Where it starts in README.md (1-based).
    pub number: usize,
    /// The line as written, continuations joined.
    pub text: String,
    /// Without its comment, spaces collapsed.
    pub key: String,
}

/// The README.
pub struct Readme {
    pub lines: Vec<Line>,
}

fn key(text: &str) -> String {
    // A comment starts at a `#` after white space, outside quotes.
    let mut out = String::new();
    let mut quote = None;
    let mut prev_space = true;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev_space => break,
            None => {}
        }
        prev_space = c.is_whitespace();
        out.push(c);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Readme {
    /// Reads the repository's README.md.
    pub fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        Self::parse(&std::fs::read_to_string(path).expect("README.md"))
    }

    /// The command lines of the `sh` blocks of `text`.
    pub fn parse(text: &str) -> Self {
        let mut lines = Vec::new();
        let mut in_sh = false;
        let mut pending: Option<(usize, String)> = None;
        for (i, l) in text.lines().enumerate() {
            if l.starts_with("```") {
                in_sh = l.trim() == "```sh";
                continue;
            }
            if !in_sh {
                continue;
            }
            let (number, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
            joined.push_str(l.trim_start_matches(' ').trim_end());
            if let Some(rest) = joined.strip_suffix('\\') {
                pending = Some((number, rest.to_string() + " "));
                continue;
            }
            let k = key(&joined);
            if !k.is_empty() {
                lines.push(Line { number, text: joined, key: k });
            }
        }
        Self { lines }
    }

    /// The README line with this key, as written, with `substitutions`
    /// applied where they occur; panics if the README does not have it or the table does not
    /// say this test runs it.
    pub fn line(&self, key: &str, test: &'static str, substitutions: &[(&str, &str)]) -> String {
        let l = self
            .lines
            .iter()
            .find(|l| l.key == key)
            .unwrap_or_else(|| panic!("the README no longer has `{key}`: update the test and COMMANDS"));
        let listed = COMMANDS.iter().find(|(k, _)| *k == key).map(|(_, w)| *w);
        assert_eq!(listed, Some(Where::Test(test)), "COMMANDS must say that {test} runs `{key}`");
        let mut text = l.text.clone();
        for (from, to) in substitutions {
            text = text.replace(from, to);
        }
        text
    }
}
