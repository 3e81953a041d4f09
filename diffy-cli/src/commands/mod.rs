//! The commands, one file each, behind one dispatcher. Each turns its
//! arguments into library options through [`crate::context`], runs the
//! engine, prints the result through [`crate::output`] and takes its exit code
//! from [`crate::exit`]; no command imports another.

use std::io::Write;

use crate::cli::{Cli, Command};
use crate::context::Common;
use crate::error::CliResult;
use crate::exit::EXIT_CLEAN;

#[cfg(feature = "analysis")]
mod analyze;
mod baseline;
mod collect;
mod info;
mod runs;

pub use crate::context::parse_bytes;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult<u8> {
    let c = Common::new(&cli)?;
    match &cli.command {
        Command::Baseline(a) => baseline::run(&c, a).await,
        Command::Collect(a) => collect::run(&c, a).await,
        #[cfg(feature = "analysis")]
        Command::Analyze(a) => analyze::run(&c, a).await,
        #[cfg(not(feature = "analysis"))]
        Command::Analyze(_) => {
            crate::registry::lookup(crate::registry::PLUGINS, "analysis", "diffy")?;
            Err(crate::error::CliError::plain("the analysis is not compiled into this build of diffy"))
        }
        Command::Runs(a) => runs::run(&c, a).await,
        Command::Plugins => info::plugins(&c),
        Command::Schema(a) => info::schema(a),
        Command::Completions(a) => {
            // Into memory first: clap_complete panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(a.shell, &mut <Cli as clap::CommandFactory>::command(), "diffy", &mut script);
            std::io::stdout().lock().write_all(&script)?;
            Ok(EXIT_CLEAN)
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout().lock())?;
            Ok(EXIT_CLEAN)
        }
    }
}
