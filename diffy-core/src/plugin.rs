//! What plugin authors need, in one place.
//!
//! A caller composes plugins with the crate's top level ([`Engine`](crate::Engine),
//! the five traits, the option structs, [`Report`](crate::Report)). A plugin
//! author also needs the pieces below; they are not part of the caller's API
//! and may grow between minor versions.
//!
//! - **A transport** implements [`Collection`](crate::Collection), or, for one
//!   process per host, [`HostExec`] wrapped in [`PerHost`](crate::PerHost): it
//!   runs the rendered [`Script`] (its framed output is what
//!   [`assemble`] splits into per-query results), reports an [`Execution`]
//!   with how it ended ([`ExecEnd`]), within the [`ExecLimits`], and says what
//!   one host costs it ([`HostCost`]) so that the engine can fit the
//!   concurrency to the process's limits. [`drive`], [`read_limited`] and
//!   [`Capture`] read a child's output under a byte limit and a deadline;
//!   [`spawn_patiently`] retries a spawn that failed for want of a file or a
//!   process ([`is_transient`]). [`remote_pid`] and [`payload_ended`] read the
//!   script's own markers.
//! - **A store** implements [`Persistence`], keeping
//!   [`HostRecord`]s (raw output, by [`RawPart`]), run manifests with their
//!   [`RunCounts`] and [`RunLimits`], and the [`BaselineRecord`] of each key;
//!   [`sha256_hex`] names evidence. The conformance suite in `diffy-testkit`
//!   checks the contract.
//! - **A target** implements [`Target`](crate::Target) and answers a
//!   [`Resolution`](crate::Resolution), naming the hosts it left out
//!   ([`NotTargeted`]).
//! - **An analysis** implements [`Analysis`](crate::Analysis) over an
//!   [`AnalysisInput`](crate::AnalysisInput); [`stored_observations`] streams
//!   a stored run's hosts as the engine does.
//!
//! Panics inside a plugin's blocking work become text with [`panic_text`] and
//! [`panic_message`], so that one host's bug is that host's status.

use std::sync::Arc;

use futures::StreamExt;

pub use crate::collection::{ExecLimits, HostCost, HostExec};
pub use crate::result::{HostRecord, RawPart, sha256_hex};
pub use crate::run::{BaselineRecord, NotTargeted, RunCounts, RunLimits};
pub use crate::script::{
    CONTEXT, ExecEnd, Execution, SETUP, Script, TEARDOWN, assemble, assemble_blocking, panic_message, panic_text,
    payload_ended, remote_pid,
};
pub use crate::transport::output::{Capture, Driven, drive, read_limited};
pub use crate::transport::spawn::{is_transient, spawn_patiently};

use crate::analysis::Observations;
use crate::names::{Host, HostId, RunId};
use crate::persistence::Persistence;
use crate::result::{HostObservation, HostStatus};

/// Hosts of a stored run read at once when it is analysed again.
const STORED_HOSTS_AT_ONCE: usize = 32;

/// Streams a stored run's hosts as observations, parsed per `payload`, in
/// the order of `hosts`. A host whose evidence cannot be read or parsed is
/// that host's `invalid_evidence`; the others are still analysed.
pub fn stored_observations(
    store: Arc<dyn Persistence>,
    run: RunId,
    hosts: Vec<HostId>,
    payload: Arc<crate::query::PayloadSpec>,
) -> Observations {
    Observations::new(
        futures::stream::iter(hosts)
            .map(move |host| {
                let (store, run, payload) = (store.clone(), run.clone(), payload.clone());
                async move {
                    let unreadable = |host: HostId, message: String| HostObservation {
                        host: Host::new(host),
                        status: HostStatus::InvalidEvidence,
                        message: Some(message),
                        facts: Default::default(),
                        vantage: None,
                        queries: Vec::new(),
                    };
                    let result = match store.get_host_result(&run, &host).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!("cannot read the evidence of {host}: {e}");
                            return Ok(unreadable(host.clone(), format!("its stored evidence cannot be read: {e}")));
                        }
                    };
                    Ok(tokio::task::spawn_blocking(move || result.observe(&payload)).await.unwrap_or_else(|e| {
                        unreadable(host, format!("diffy failed while parsing its evidence ({})", panic_text(e)))
                    }))
                }
            })
            // Several hosts at once (a remote store answers each request slowly), in order.
            .buffered(STORED_HOSTS_AT_ONCE),
    )
}
