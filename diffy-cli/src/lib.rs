//! # diffy-cli
//!
//! The `diffy` command: argument parsing, configuration, the plugin registry
//! and printers around the `diffy-core` engine. The library crates hold the
//! logic; this crate only wires them, so `main` is a single call.

pub mod cli;
pub mod commands;
pub mod config;
mod context;
pub mod error;
pub mod exit;
pub mod output;
pub mod registry;
mod unused;

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

/// How many threads run async tasks: 1 unless `TOKIO_WORKER_THREADS` says.
///
/// These threads only wait (on ssh's pipes, HTTP, timers); parsing, storing
/// and analysing run on the blocking pool, which grows as needed. One thread
/// keeps up with hundreds of concurrent hosts and spares the cross-thread
/// wake-ups of several: with one per core, a collection over SSH cost about
/// 0.7 ms more CPU per host on 2 cores (`tests/benches/ssh.rs`).
fn async_threads() -> usize {
    let setting = std::env::var("TOKIO_WORKER_THREADS").ok();
    threads_from(setting.as_deref()).unwrap_or_else(|bad| {
        tracing::warn!("TOKIO_WORKER_THREADS={bad:?} is not a positive number; using 1 async thread");
        1
    })
}

/// The number of async threads `setting` asks for, or the setting refused.
fn threads_from(setting: Option<&str>) -> Result<usize, &str> {
    match setting {
        None => Ok(1),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(v),
        },
    }
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime
/// and many servers do): each host in flight holds a few pipes, and the
/// common soft default of 1024 would otherwise cost hosts at high
/// concurrency. What is still too low, the engine fits its concurrency to.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        tracing::debug!("raised the open-files limit from {soft} to {hard}");
    }
}

/// Runs `diffy` with the process's arguments; returns the exit status.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    raise_open_files();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(async_threads()).enable_all().build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::EXIT_TROUBLE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::from(exit::EXIT_TROUBLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::threads_from;

    #[test]
    fn one_async_thread_unless_told() {
        assert_eq!(threads_from(None), Ok(1));
        assert_eq!(threads_from(Some("4")), Ok(4));
        assert_eq!(threads_from(Some(" 2 ")), Ok(2));
        assert_eq!(threads_from(Some("0")), Err("0"));
        assert_eq!(threads_from(Some("many")), Err("many"));
    }
}
