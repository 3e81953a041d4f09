//! `diffy plugins` and `diffy schema`: what this build has, and the JSON
//! Schemas of its output.

use diffy_core::report::Report;

use crate::cli::Format;
use crate::cli::{SchemaArgs, SchemaKind};
use crate::context::{Common, print_json};
use crate::error::CliResult;
use crate::exit::EXIT_CLEAN;
use crate::output;
use crate::registry;

pub(super) fn plugins(c: &Common) -> CliResult<u8> {
    match c.format {
        Format::Human => output::plugins(&mut std::io::stdout().lock(), registry::PLUGINS)?,
        Format::Json => print_json(&registry::PLUGINS)?,
        Format::Jsonl => {
            let sink = c.sink();
            for p in registry::PLUGINS {
                sink.line("plugin", p)?;
            }
        }
    }
    Ok(EXIT_CLEAN)
}

pub(super) fn schema(a: &SchemaArgs) -> CliResult<u8> {
    let schema = match a.which {
        SchemaKind::Report => Report::json_schema(),
        SchemaKind::Events => schemars::schema_for!(diffy_core::Event),
    };
    print_json(&schema)?;
    Ok(EXIT_CLEAN)
}
