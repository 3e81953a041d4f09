//! `diffy runs`: the stored runs, newest first, and which is each target's
//! baseline.

use crate::cli::{Format, RunsArgs};
use crate::context::{Common, key, print_json};
use crate::error::CliResult;
use crate::exit::EXIT_CLEAN;
use crate::output::{self, RunListing};
use crate::registry;

pub(super) async fn run(c: &Common, a: &RunsArgs) -> CliResult<u8> {
    let store = registry::store(&c.store, &crate::context::store_aws(c)?, registry::StoreUse::Read).await?;
    let target = a.key.as_deref().map(key).transpose()?;
    let manifests = store.list_runs(target.as_ref()).await?;
    let mut baselines = std::collections::BTreeMap::new();
    for m in &manifests {
        if !baselines.contains_key(&m.target) {
            baselines.insert(m.target.clone(), store.get_baseline(&m.target).await?.map(|b| b.run));
        }
    }
    let listing: Vec<RunListing<'_>> = manifests
        .iter()
        .map(|m| RunListing {
            id: m.id.as_str(),
            target: m.target.as_str(),
            kind: m.kind,
            state: m.state,
            started_at: m.started_at,
            finished_at: m.finished_at,
            incident_id: m.incident_id.as_deref(),
            operator: m.operator.as_deref(),
            transport: &m.transport,
            payload: &m.payload.name,
            payload_hash: &m.payload_hash,
            hosts: m.counts.targeted,
            collected: m.counts.collected,
            failed: m.counts.failed,
            baseline: baselines.get(&m.target).and_then(|b| b.as_ref()) == Some(&m.id),
        })
        .collect();
    match c.format {
        Format::Human => output::runs(&mut std::io::stdout().lock(), &listing)?,
        Format::Json => print_json(&listing)?,
        Format::Jsonl => {
            let sink = c.sink();
            for r in &listing {
                sink.line("run", r)?;
            }
        }
    }
    Ok(EXIT_CLEAN)
}
