//! Names that double as file names: target keys, host ids, run ids, query names.
//!
//! Every store keeps evidence under paths built from these names, so each is
//! validated when it is made: nothing that could escape a directory (`..`,
//! `/`, `\`, NUL, control characters) ever becomes a name.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const MAX_NAME: usize = 200;

/// Checks that `value` is safe to use as one path component.
///
/// Rejects the empty string, `.` and `..`, anything with `/`, `\`, NUL or
/// another control character, invisible and bidirectional formatting
/// characters (U+200B..U+200F, U+202A..U+202E, U+2066..U+2069, ...), and
/// names longer than 200 bytes.
pub fn validate_component(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value == "." || value == ".." {
        Some("'.' and '..' would escape the store")
    } else if value.len() > MAX_NAME {
        Some("it is longer than 200 bytes")
    } else if value.contains('/') || value.contains('\\') {
        Some("it contains a path separator")
    } else if value.contains('\0') {
        Some("it contains a NUL byte")
    } else if value.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if value.chars().any(|c| {
        matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    }) {
        // Names are shown as they are: none may reorder or hide what a terminal shows.
        Some("it contains an invisible or bidirectional formatting character")
    } else if value.starts_with('.') {
        Some("it starts with '.', which stores reserve for temporary files")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName { what, value: value.to_string(), reason }),
        None => Ok(()),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                validate_component($what, &value)?;
                Ok(Self(value))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// What a run is about: an Auto Scaling group name, a service name, a fleet.
    /// Runs, baselines and history are kept per target key.
    TargetKey,
    "target key"
);

name_type!(
    /// One host's identity within a run: an instance id, a hostname, `user@host`.
    HostId,
    "host id"
);

name_type!(
    /// The identity of one run, unique within a store. Made by [`RunId::generate`]
    /// so that ids sort by time.
    RunId,
    "run id"
);

impl RunId {
    /// A new id: the UTC start time and 6 random hex digits, e.g. `20261122T231500Z-3fa9c2`.
    pub fn generate(now: chrono::DateTime<chrono::Utc>) -> Self {
        let mut bytes = [0u8; 3];
        fill_random(&mut bytes);
        Self(format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), hex::encode(bytes)))
    }
}

/// Fills `buf` with random bytes from the operating system.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // The OS generator failing is not recoverable in any useful way; a
    // clock-derived fallback keeps ids unique enough within one process.
    if getrandom::fill(buf).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
}

/// A query's name: ASCII letters, digits, `_`, `-` and `.`, starting with a
/// letter or digit, at most 64 bytes. Names beginning with `_` are reserved
/// for Diffy's own frames (`_setup`, `_teardown`).
pub fn validate_query_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what: "query name",
            value: name.to_string(),
            reason: "use 1 to 64 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit",
        })
    }
}

/// A host to be queried: its id, how to reach it, and descriptive labels
/// (account, region, availability zone, instance type, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host's identity in runs and reports.
    pub id: HostId,
    /// How a transport reaches it (hostname, `user@host:port`, instance id),
    /// when that differs from the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Descriptive labels; analysis may use them to explain cohorts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Host {
    /// A host whose address is its id and which has no labels.
    pub fn new(id: HostId) -> Self {
        Self { id, address: None, labels: BTreeMap::new() }
    }

    /// Parses and validates a host id, then builds a [`Host`].
    pub fn named(id: &str) -> Result<Self> {
        Ok(Self::new(HostId::new(id)?))
    }

    /// Sets the address.
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The address a transport should use: the explicit address, else the id.
    pub fn address(&self) -> &str {
        self.address.as_deref().unwrap_or(self.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_tricks() {
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a\0b", "a\nb", ".hidden", "web\u{202e}1", "a\u{200b}b"] {
            let err = TargetKey::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName { what: "target key", .. }), "{bad:?}: {err}");
        }
        assert!(HostId::new("x".repeat(201)).is_err());
    }

    #[test]
    fn accepts_ordinary_names() {
        for good in ["api-v001", "i-0abc123", "root@web-1:2222", "[::1]:22", "web.example.com", "ÄÖ"] {
            HostId::new(good).unwrap();
        }
    }

    #[test]
    fn deserialising_validates() {
        let err = serde_json::from_str::<TargetKey>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("path separator"), "{err}");
    }

    #[test]
    fn run_ids_sort_by_time_and_are_valid() {
        let a = RunId::generate(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let b = RunId::generate(chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap());
        assert!(a < b);
        RunId::new(a.as_str()).unwrap();
        assert!(a.as_str().starts_with("20231114T221320Z-"), "{a}");
    }

    #[test]
    fn query_names() {
        validate_query_name("listening_ports").unwrap();
        validate_query_name("a.b-c").unwrap();
        for bad in ["", "_setup", ".x", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_query_name(bad).is_err(), "{bad:?}");
        }
    }
}
