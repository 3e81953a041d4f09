//! Suppressions: known-benign findings, declared in a file, counted in the
//! report and never silently dropped.
//!
//! ```toml
//! [[suppress]]
//! query = "processes"                       # glob on the query name
//! match = { name = "sshd", cmdline = "sshd: *@pts/*" }   # globs on row columns
//! hosts = ["bastion-*"]                     # optional globs on host ids
//! kinds = ["rare", "new"]                   # optional finding kinds
//! reason = "interactive admin sessions"
//! expires = "2026-12-31"                    # optional; afterwards the rule is ignored, with a warning
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use diffy_core::{Error, Finding, FindingKind, Result, Row};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    query: String,
    #[serde(default, rename = "match")]
    columns: BTreeMap<String, String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    kinds: Vec<FindingKind>,
    reason: String,
    #[serde(default)]
    expires: Option<NaiveDate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    suppress: Vec<RuleFile>,
}

/// One suppression rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Why the matched findings are benign.
    pub reason: String,
    /// The query glob as written.
    pub query: String,
    query_glob: GlobMatcher,
    columns: Vec<(String, GlobMatcher)>,
    hosts: Vec<GlobMatcher>,
    kinds: Vec<FindingKind>,
    /// After this day the rule no longer applies.
    pub expires: Option<NaiveDate>,
}

fn glob(pattern: &str, what: &str) -> Result<GlobMatcher> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::invalid(format!("suppression {what} pattern {pattern:?}: {e}")))
}

impl Rule {
    /// Whether the rule has expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|d| now.date_naive() > d)
    }

    fn matches(&self, host: &str, query: &str, kind: FindingKind, row: &Row) -> bool {
        self.query_glob.is_match(query)
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.is_match(host)))
            && self.columns.iter().all(|(c, g)| row.get(c).is_some_and(|v| g.is_match(v)))
    }
}

/// A set of suppression rules.
#[derive(Debug, Clone, Default)]
pub struct Suppressions {
    rules: Vec<Rule>,
}

impl Suppressions {
    /// No rules.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses rules from TOML text.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| {
            Error::invalid_with_help(
                format!("{source} is not a valid suppression file: {e}"),
                "each [[suppress]] needs `query` and `reason`; `match`, `hosts`, `kinds` and `expires` are optional",
            )
        })?;
        let mut rules = Vec::new();
        for r in file.suppress {
            if r.reason.trim().is_empty() {
                return Err(Error::invalid(format!("{source}: every suppression needs a reason")));
            }
            rules.push(Rule {
                query_glob: glob(&r.query, "query")?,
                columns: r.columns.iter().map(|(c, p)| Ok((c.clone(), glob(p, "column")?))).collect::<Result<_>>()?,
                hosts: r.hosts.iter().map(|h| glob(h, "host")).collect::<Result<_>>()?,
                kinds: r.kinds,
                reason: r.reason,
                query: r.query,
                expires: r.expires,
            });
        }
        Ok(Self { rules })
    }

    /// Reads rules from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("suppressions", "read", path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The index of the first unexpired rule matching the finding.
    pub(crate) fn matching(&self, now: DateTime<Utc>, host: &str, finding: &Finding) -> Option<usize> {
        self.rules.iter().position(|r| !r.expired(now) && r.matches(host, &finding.query, finding.kind, &finding.row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let s = Suppressions::parse(
            r#"
            [[suppress]]
            query = "processes"
            match = { cmdline = "sshd: *@pts/*" }
            hosts = ["bastion-*"]
            reason = "admin sessions"
            expires = "2030-01-01"
            "#,
            "s.toml",
        )
        .unwrap();
        let row: Row = [("cmdline".to_string(), "sshd: alice@pts/0".to_string())].into();
        let r = &s.rules()[0];
        assert!(r.matches("bastion-1", "processes", FindingKind::Rare, &row));
        assert!(!r.matches("web-1", "processes", FindingKind::Rare, &row));
        let late = DateTime::parse_from_rfc3339("2030-01-02T00:00:00Z").unwrap().with_timezone(&Utc);
        assert!(r.expired(late));
        assert!(Suppressions::parse("[[suppress]]\nquery='x'\nreason=''", "s").is_err());
        assert!(Suppressions::parse("[[suppress]]\nquery='x'\nreason='r'\nbogus=1", "s").is_err());
    }
}
