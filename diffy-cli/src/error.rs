//! Errors as the command line shows them: what went wrong, and what to do.

use std::fmt;

/// Exit code: nothing found.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: outliers found.
pub const EXIT_OUTLIERS: u8 = 1;
/// Exit code: trouble (an unusable argument, no host collected, an error).
pub const EXIT_TROUBLE: u8 = 2;
/// Exit code: nothing found, but no analysed host's evidence could see
/// everything the payload asks (collected without root, say).
pub const EXIT_PARTIAL_VIEW: u8 = 3;
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
