//! Queries and payloads: what runs on each host and how its output becomes rows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names::validate_query_name;
use crate::{Error, Result};

/// One row of a query's output: column name to value, all values as strings
/// (osquery's `--json` shape).
pub type Row = BTreeMap<String, String>;

/// How a query is run on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueryCommand {
    /// A POSIX `sh` command line, run as `sh -c COMMAND` with stdin from `/dev/null`.
    Shell(String),
    /// An osquery SQL statement, run by [`osqueryi_command`].
    Osquery(String),
}

/// The flags every `osqueryi` diffy runs gets: a host's flag file
/// (`/etc/osquery/osquery.flags`) cannot load extensions or change what it
/// reads, and no database, extension socket or event store is written.
pub const OSQUERYI_FLAGS: &str = "--flagfile=/dev/null --disable_database --disable_extensions --disable_events --json";

/// The shell that runs `sql` with `osqueryi` ([`OSQUERYI_FLAGS`]), then
/// `after` (if any), and exits with osqueryi's status. osqueryi creates
/// `~/.osquery/` (under `$HOME`, or the passwd home when `$HOME` is not
/// writable) whatever its flags say; it is removed afterwards when it did not
/// exist before and is empty.
pub fn osqueryi_command(sql: &str, after: Option<&str>) -> Result<String> {
    let quoted = crate::script::quote(sql)?;
    let after = after.map(|a| format!("( {a}\n) </dev/null\n")).unwrap_or_default();
    Ok(format!(
        r#"_o1=; _o2=
[ -n "$HOME" ] && [ ! -e "$HOME/.osquery" ] && _o1=$HOME/.osquery
_pw=$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6)
[ -n "$_pw" ] && [ ! -e "$_pw/.osquery" ] && _o2=$_pw/.osquery
osqueryi {OSQUERYI_FLAGS} {quoted}
_r=$?
[ -z "$_o1" ] || rmdir "$_o1" 2>/dev/null
[ -z "$_o2" ] || rmdir "$_o2" 2>/dev/null
{after}exit $_r"#
    ))
}

/// How a query's standard output is turned into rows on the collecting side.
///
/// The raw bytes are always kept as evidence; the format only says how to read
/// them. Bytes that are not UTF-8 are read with replacement characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputFormat {
    /// A JSON array of objects (`osqueryi --json`); scalar values become strings.
    Json,
    /// One row per non-empty line, in the column `line`.
    Lines,
    /// Tab-separated values; the first line names the columns.
    Tsv,
    /// `ss -H -tulnp` output, optionally followed by `exe<TAB>pid<TAB>path` lines.
    Ss,
    /// `/proc/modules`.
    ProcModules,
    /// `/etc/passwd`.
    Passwd,
    /// `path<TAB>crontab line` per line, as the built-in shell pack prints them.
    Crontab,
    /// `uid<TAB>username<TAB>key file<TAB>authorized_keys line` per line.
    AuthorizedKeys,
    /// `sha256sum` output.
    Sha256sum,
}

/// One read-only question asked of every host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "QueryDef", into = "QueryDef")]
pub struct Query {
    /// The query's name; see [`validate_query_name`].
    pub name: String,
    /// What runs on the host.
    pub command: QueryCommand,
    /// How its output becomes rows.
    pub format: OutputFormat,
    /// Columns that identify a row (a process by name, path and command line; a
    /// file hash by path). Rows are matched by these across hosts and against a
    /// baseline; other columns are attributes whose change is reported as
    /// "changed". Empty: every non-volatile column is identity.
    pub identity: Vec<String>,
    /// Columns that differ on every host for no security reason (pids, start
    /// times, addresses); they are ignored when rows are compared.
    pub volatile: Vec<String>,
    /// How much a rare row of this query matters relative to others (1.0 is an
    /// ordinary query); `None` lets the analysis choose.
    pub weight: Option<f64>,
    /// A deadline for this query alone, within the host's deadline.
    pub timeout: Option<Duration>,
    /// What the query looks for, for people reading reports.
    pub description: Option<String>,
}

impl Query {
    /// A shell query whose output is read as `format`.
    pub fn shell(name: impl Into<String>, command: impl Into<String>, format: OutputFormat) -> Self {
        Self::with_command(name, QueryCommand::Shell(command.into()), format)
    }

    /// An osquery query (output read as JSON).
    pub fn osquery(name: impl Into<String>, sql: impl Into<String>) -> Self {
        Self::with_command(name, QueryCommand::Osquery(sql.into()), OutputFormat::Json)
    }

    fn with_command(name: impl Into<String>, command: QueryCommand, format: OutputFormat) -> Self {
        Self {
            name: name.into(),
            command,
            format,
            identity: Vec::new(),
            volatile: Vec::new(),
            weight: None,
            timeout: None,
            description: None,
        }
    }

    /// Sets the identity columns.
    pub fn identity<I: IntoIterator<Item = S>, S: Into<String>>(mut self, columns: I) -> Self {
        self.identity = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the volatile columns.
    pub fn volatile<I: IntoIterator<Item = S>, S: Into<String>>(mut self, columns: I) -> Self {
        self.volatile = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Sets the description.
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Checks the name, the command and the weight.
    pub fn validate(&self) -> Result<()> {
        validate_query_name(&self.name)?;
        let text = match &self.command {
            QueryCommand::Shell(c) | QueryCommand::Osquery(c) => c,
        };
        if text.trim().is_empty() {
            return Err(Error::invalid(format!("query {:?} has an empty command", self.name)));
        }
        if text.contains('\0') {
            return Err(Error::invalid(format!("query {:?} has a NUL byte in its command", self.name)));
        }
        if let Some(w) = self.weight {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::invalid(format!("query {:?} has weight {w}; use a number >= 0", self.name)));
            }
        }
        Ok(())
    }
}

/// The serialised shape of a [`Query`], as written in payload files:
///
/// ```toml
/// [[query]]
/// name = "listeners"
/// shell = "ss -H -tlnp"      # or: osquery = "SELECT ..."
/// format = "lines"           # default: json for osquery, lines for shell
/// identity = ["line"]
/// weight = 2.0
/// timeout = "30s"
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct QueryDef {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    osquery: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<OutputFormat>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    identity: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    volatile: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

impl TryFrom<QueryDef> for Query {
    type Error = Error;
    fn try_from(d: QueryDef) -> Result<Self> {
        let (command, default_format) = match (d.shell, d.osquery) {
            (Some(s), None) => (QueryCommand::Shell(s), OutputFormat::Lines),
            (None, Some(q)) => (QueryCommand::Osquery(q), OutputFormat::Json),
            _ => {
                return Err(Error::invalid(format!(
                    "query {:?} must have exactly one of `shell` or `osquery`",
                    d.name
                )));
            }
        };
        let timeout = d
            .timeout
            .map(|t| {
                humantime::parse_duration(&t)
                    .map_err(|e| Error::invalid(format!("query {:?}: timeout {t:?}: {e}", d.name)))
            })
            .transpose()?;
        let q = Query {
            name: d.name,
            command,
            format: d.format.unwrap_or(default_format),
            identity: d.identity,
            volatile: d.volatile,
            weight: d.weight,
            timeout,
            description: d.description,
        };
        q.validate()?;
        Ok(q)
    }
}

impl From<Query> for QueryDef {
    fn from(q: Query) -> Self {
        let (shell, osquery) = match q.command {
            QueryCommand::Shell(s) => (Some(s), None),
            QueryCommand::Osquery(s) => (None, Some(s)),
        };
        QueryDef {
            name: q.name,
            shell,
            osquery,
            format: Some(q.format),
            identity: q.identity,
            volatile: q.volatile,
            weight: q.weight,
            timeout: q.timeout.map(|t| humantime::format_duration(t).to_string()),
            description: q.description,
        }
    }
}

/// Everything one host runs in one invocation: optional setup, the queries,
/// optional teardown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PayloadSpec {
    /// The payload's name ("shell", "osquery", or a file's name).
    pub name: String,
    /// Shell commands run first, in the same shell as the queries (so `export`
    /// works). Their output is kept as the `_setup` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// The queries, in the order they run.
    #[serde(rename = "query")]
    pub queries: Vec<Query>,
    /// Shell commands run last; output kept as the `_teardown` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<String>,
}

impl PayloadSpec {
    /// Checks every query, and that names are unique and at least one query exists.
    pub fn validate(&self) -> Result<()> {
        if self.queries.is_empty() {
            return Err(Error::invalid_with_help(
                format!("payload {:?} has no queries", self.name),
                "add at least one [[query]] with a name and a `shell` or `osquery` command",
            ));
        }
        let mut seen = BTreeSet::new();
        for q in &self.queries {
            q.validate()?;
            if !seen.insert(q.name.as_str()) {
                return Err(Error::invalid(format!("payload {:?} has two queries named {:?}", self.name, q.name)));
            }
        }
        for (what, text) in [("setup", &self.setup), ("teardown", &self.teardown)] {
            if text.as_deref().is_some_and(|t| t.contains('\0')) {
                return Err(Error::invalid(format!("payload {:?}: {what} has a NUL byte", self.name)));
            }
        }
        Ok(())
    }

    /// The SHA-256 of the payload's canonical JSON form, hex encoded. Two runs
    /// with the same hash asked the same questions.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("a payload always serialises");
        hex::encode(Sha256::digest(&json))
    }

    /// The query named `name`.
    pub fn query(&self, name: &str) -> Option<&Query> {
        self.queries.iter().find(|q| q.name == name)
    }

    /// Reads a payload from TOML text (see [`QueryDef`]'s shape); `name` is used
    /// when the text has none.
    pub fn from_toml(text: &str, name: &str) -> Result<Self> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            name: Option<String>,
            setup: Option<String>,
            #[serde(default)]
            query: Vec<Query>,
            teardown: Option<String>,
        }
        let f: File = toml::from_str(text).map_err(|e| {
            Error::invalid_with_help(
                format!("payload {name:?} is not a valid payload file: {e}"),
                "a payload file has `[[query]]` tables with `name` and `shell` or `osquery`",
            )
        })?;
        let spec = PayloadSpec {
            name: f.name.unwrap_or_else(|| name.to_string()),
            setup: f.setup,
            queries: f.query,
            teardown: f.teardown,
        };
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_from_toml() {
        let spec = PayloadSpec::from_toml(
            r#"
            [[query]]
            name = "listeners"
            shell = "ss -H -tlnp"
            identity = ["line"]
            timeout = "30s"

            [[query]]
            name = "users"
            osquery = "SELECT * FROM users"
            weight = 3
            "#,
            "custom",
        )
        .unwrap();
        assert_eq!(spec.name, "custom");
        assert_eq!(spec.queries[0].format, OutputFormat::Lines);
        assert_eq!(spec.queries[0].timeout, Some(Duration::from_secs(30)));
        assert_eq!(spec.queries[1].format, OutputFormat::Json);
        assert_eq!(spec.queries[1].weight, Some(3.0));
        // JSON round trip keeps everything, and the hash is stable.
        let back: PayloadSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.hash(), spec.hash());
    }

    #[test]
    fn payload_errors_are_clear() {
        let err = PayloadSpec::from_toml("[[query]]\nname = \"x\"\n", "p").unwrap_err();
        assert!(err.to_string().contains("exactly one of `shell` or `osquery`"), "{err}");
        let err = PayloadSpec::from_toml("", "p").unwrap_err();
        assert!(err.to_string().contains("has no queries"), "{err}");
        let err = PayloadSpec::from_toml("[[query]]\nname=\"a\"\nshell=\"x\"\n[[query]]\nname=\"a\"\nshell=\"y\"", "p")
            .unwrap_err();
        assert!(err.to_string().contains("two queries named"), "{err}");
        let err = PayloadSpec::from_toml("[[query]]\nname=\"../a\"\nshell=\"x\"", "p").unwrap_err();
        assert!(err.to_string().contains("query name"), "{err}");
    }
}
