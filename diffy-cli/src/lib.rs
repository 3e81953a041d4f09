//! # diffy-cli
//!
//! The `diffy` command: argument parsing, configuration, the plugin registry
//! and printers around the `diffy-core` engine. The library crates hold the
//! logic; this crate only wires them, so `main` is a single call.

#[cfg(feature = "analysis")]
mod analyze;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod output;
pub mod registry;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DIFFY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn,diffy_core={level},diffy_analysis={level},diffy_cli={level}"))
    });
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Runs `diffy` with the process's arguments; returns the exit status.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_TROUBLE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::from(error::EXIT_TROUBLE)
        }
    }
}
