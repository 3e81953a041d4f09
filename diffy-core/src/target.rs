//! Targets: turning a target key into the hosts to query.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;

use crate::names::{Host, HostId, TargetKey};
use crate::run::NotTargeted;
use crate::{Error, Result};

/// The hosts a key resolved to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Hosts to query.
    pub hosts: Vec<Host>,
    /// Hosts that belong to the target but will not be queried, with the reason
    /// (an instance still `Pending`, one not managed by SSM). Reported, never hidden.
    pub not_targeted: Vec<NotTargeted>,
}

/// Resolves a target key to hosts.
///
/// # Contract
/// - Returns every host the key names, each once (host ids unique).
/// - Hosts that belong to the target but cannot be queried go to
///   [`Resolution::not_targeted`] with a reason, not into an error.
/// - An empty resolution is not an error; the engine reports it.
/// - `Err` means the target could not be asked at all (API denied, file
///   missing); the message says which.
#[async_trait]
pub trait Target: Send + Sync + std::fmt::Debug {
    /// The plugin's name (`static`, `asg`, ...).
    fn name(&self) -> &str;

    /// Resolves `key`.
    async fn resolve(&self, key: &TargetKey) -> Result<Resolution>;
}

/// A fixed list of hosts, from arguments or a file; the key only names the run.
#[derive(Clone, Debug, Default)]
pub struct StaticTarget {
    hosts: Vec<Host>,
}

impl StaticTarget {
    /// A target of these hosts. Fails on duplicate ids.
    pub fn new(hosts: Vec<Host>) -> Result<Self> {
        let mut seen = BTreeSet::new();
        for h in &hosts {
            if !seen.insert(h.id.clone()) {
                return Err(Error::invalid(format!("host {} is listed twice", h.id)));
            }
        }
        Ok(Self { hosts })
    }

    /// Reads hosts from text: one host per line, `ID [ADDRESS] [LABEL=VALUE ...]`;
    /// blank lines and `#` comments are skipped.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut hosts = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let id = words.next().unwrap_or_default();
            let id = HostId::new(id).map_err(|e| {
                Error::invalid_with_help(
                    format!("{source}:{}: {e}", n + 1),
                    "write one host per line: ID [ADDRESS] [LABEL=VALUE ...]",
                )
            })?;
            let mut host = Host::new(id);
            for w in words {
                match w.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        host.labels.insert(k.to_string(), v.to_string());
                    }
                    _ if host.address.is_none() => host.address = Some(w.to_string()),
                    _ => {
                        return Err(Error::invalid_with_help(
                            format!("{source}:{}: unexpected word {w:?}", n + 1),
                            "write one host per line: ID [ADDRESS] [LABEL=VALUE ...]",
                        ));
                    }
                }
            }
            hosts.push(host);
        }
        Self::new(hosts).map_err(|e| Error::invalid(format!("{source}: {e}")))
    }

    /// Reads hosts from a file (see [`StaticTarget::parse`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("static", "read", path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
}

#[async_trait]
impl Target for StaticTarget {
    fn name(&self) -> &str {
        "static"
    }

    async fn resolve(&self, _key: &TargetKey) -> Result<Resolution> {
        Ok(Resolution { hosts: self.hosts.clone(), not_targeted: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_files() {
        let t = StaticTarget::parse("# fleet\nweb-1\nweb-2 admin@10.0.0.2 az=a role=web\n\n", "hosts.txt").unwrap();
        assert_eq!(t.hosts().len(), 2);
        assert_eq!(t.hosts()[1].address(), "admin@10.0.0.2");
        assert_eq!(t.hosts()[1].labels["az"], "a");
        let err = StaticTarget::parse("a\na\n", "h").unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let err = StaticTarget::parse("../x\n", "h").unwrap_err();
        assert!(err.to_string().contains("h:1"), "{err}");
    }
}
