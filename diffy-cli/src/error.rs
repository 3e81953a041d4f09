//! Errors as the command line shows them: what went wrong, and what to do.

use std::fmt;

pub use crate::exit::{EXIT_CLEAN, EXIT_INTERRUPTED, EXIT_OUTLIERS, EXIT_PARTIAL_VIEW, EXIT_TROUBLE};

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
        // Messages may quote what a host or a file said: shown escaped, one line each.
        write!(f, "error: {}", crate::output::term(&self.message, 4000))?;
        if let Some(h) = &self.help {
            write!(f, "\nhelp: {}", crate::output::term(h, 4000))?;
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

#[cfg(test)]
mod tests {
    use super::CliError;

    #[test]
    fn messages_reach_the_terminal_escaped() {
        let e = CliError::new("host said \u{1b}[2J\r\nerror: forged\u{202e}", "run \u{9b}0m this");
        let shown = e.to_string();
        assert_eq!(shown, "error: host said \\u{1b}[2J\\r\\nerror: forged\\u{202e}\nhelp: run \\u{9b}0m this");
    }
}
