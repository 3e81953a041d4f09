//! The one error type of `diffy-core`, grouped by what a caller can act on.
//!
//! Per-host failures (a host that is unreachable, times out, prints garbage) are
//! *not* errors: they are [`HostResult`](crate::HostResult)s with a status. An
//! [`Error`] means an operation as a whole could not be done: an unusable
//! argument, a store that cannot be written, a missing run.

use std::path::PathBuf;

/// A convenient alias for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop an operation of Diffy's core or of a plugin.
///
/// Plugins report their own failures as [`Error::Plugin`] (or the more specific
/// categories) with their name attached, so a message always says which part failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name used as a file name or identifier (host id, target key, run id,
    /// query name) is unusable: empty, too long, or would escape the store.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What kind of name it is ("target key", "host id", ...).
        what: &'static str,
        /// The offending value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// An argument, payload or configuration value is unusable.
    #[error("{message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
        /// What to do about it.
        help: Option<String>,
    },

    /// Something asked for does not exist (a run, a baseline, a file).
    #[error("{what} {name:?} not found")]
    NotFound {
        /// What kind of thing ("run", "baseline", ...).
        what: &'static str,
        /// Its name.
        name: String,
        /// What to do about it.
        help: Option<String>,
    },

    /// Something would be overwritten that must never be overwritten silently
    /// (a baseline, a run, a host's evidence).
    #[error("{what} {name:?} already exists")]
    AlreadyExists {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
        /// What to do about it.
        help: Option<String>,
    },

    /// The engine lacks a part that the operation needs.
    #[error("the engine has no {part}: {help}")]
    NotConfigured {
        /// The missing part ("transport", "target", ...).
        part: &'static str,
        /// How to provide it.
        help: &'static str,
    },

    /// Reading or writing local files failed.
    #[error("{plugin}: cannot {action} {}: {source}", path.display())]
    Io {
        /// The plugin that did the I/O.
        plugin: &'static str,
        /// What it tried to do ("write", "read", "rename", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Stored data does not match what was written (bad JSON, checksum mismatch).
    #[error("{plugin}: corrupt {what}: {message}")]
    Corrupt {
        /// The plugin that found it.
        plugin: &'static str,
        /// What is corrupt.
        what: String,
        /// How it is corrupt.
        message: String,
    },

    /// A plugin failed for a reason of its own (an API error, a missing binary).
    #[error("{plugin}: {message}")]
    Plugin {
        /// The plugin's name ("ssm", "ssh", "asg", ...).
        plugin: String,
        /// What went wrong.
        message: String,
        /// What to do about it.
        help: Option<String>,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// The target resolved to no host: there is nothing to collect.
    #[error("{message}")]
    NoHosts {
        /// The target key.
        target: String,
        /// Hosts of the target that were left out before collection.
        left_out: usize,
        /// What happened, with the first hosts left out and why.
        message: String,
    },

    /// A baseline run was collected but not made the target's baseline.
    #[error("{message}")]
    BaselineRefused {
        /// The run concerned: the baseline run collected (kept in the store
        /// as evidence), or for [`BaselineRefusal::Outliers`] the survey run
        /// whose outliers the hosts were (nothing was collected).
        run: String,
        /// Why it was refused.
        reason: BaselineRefusal,
        /// What happened.
        message: String,
        /// What to do about it.
        help: String,
    },

    /// The operation was cancelled (Ctrl-C) before it could finish.
    #[error("cancelled")]
    Cancelled,
}

/// Why a baseline run was not made the baseline ([`Error::BaselineRefused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BaselineRefusal {
    /// No host of it could be collected.
    NothingCollected,
    /// It was interrupted before every host reported.
    Interrupted,
    /// Hosts it would be taken from were outliers of the target's latest run.
    Outliers,
}

impl Error {
    /// A short suggestion of what to do next, when there is one.
    pub fn help(&self) -> Option<String> {
        match self {
            Error::InvalidName { what, .. } => Some(format!(
                "a {what} must be 1 to 200 characters, without '/', '\\', NUL or control characters, and not '.' or '..'"
            )),
            Error::InvalidInput { help, .. }
            | Error::NotFound { help, .. }
            | Error::AlreadyExists { help, .. }
            | Error::Plugin { help, .. } => help.clone(),
            Error::NoHosts { .. } => Some("name hosts with --host or --hosts FILE, or check the target's name".into()),
            Error::BaselineRefused { help, .. } => Some(help.clone()),
            Error::NotConfigured { help, .. } => Some((*help).to_string()),
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    Some("check the permissions of the store directory, or choose another with --store".into())
                }
                std::io::ErrorKind::StorageFull => Some("free disk space or choose another --store".into()),
                _ => None,
            },
            Error::Corrupt { .. } => Some(
                "the stored evidence was changed or damaged after it was written; keep a copy before doing anything else".into(),
            ),
            Error::Cancelled => None,
        }
    }

    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput { message: message.into(), help: None }
    }

    /// Builds an [`Error::InvalidInput`] with a suggestion.
    pub fn invalid_with_help(message: impl Into<String>, help: impl Into<String>) -> Self {
        Error::InvalidInput { message: message.into(), help: Some(help.into()) }
    }

    /// Builds an [`Error::Plugin`] without a source.
    pub fn plugin(plugin: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Plugin { plugin: plugin.into(), message: message.into(), help: None, source: None }
    }

    /// Builds an [`Error::Io`].
    pub fn io(plugin: &'static str, action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { plugin, action, path: path.into(), source }
    }
}
