//! Errors as the command line shows them: what went wrong, and what to do.

use std::fmt;

/// Exit code: nothing found.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: outliers found.
pub const EXIT_OUTLIERS: u8 = 1;
/// Exit code: trouble (an unusable argument, no host collected, an error).
pub const EXIT_TROUBLE: u8 = 2;
/// Exit code: interrupted by Ctrl-C (what arrived was kept).
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error that ends the command.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong.
    pub message: String,
    /// What to do next.
    pub help: Option<String>,
}

impl CliError {
    /// An error with a suggestion.
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self { message: message.into(), help: Some(help.into()) }
    }

    /// An error without a suggestion.
    pub fn plain(message: impl Into<String>) -> Self {
        Self { message: message.into(), help: None }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.help {
            write!(f, "\nhelp: {h}")?;
        }
        Ok(())
    }
}

impl From<diffy_core::Error> for CliError {
    fn from(e: diffy_core::Error) -> Self {
        let help = e.help();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(&format!(": {text}"));
            }
            source = s.source();
        }
        Self { message, help }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::plain(format!("cannot write output: {e}"))
    }
}

/// Result of a command.
pub type CliResult<T> = Result<T, CliError>;
