//! # diffy-core
//!
//! The core of Diffy, a triage tool for cloud incident response: it runs a
//! payload of read-only queries on every host of a fleet, keeps every raw result
//! as evidence, and points at the hosts that stand out.
//!
//! This crate defines the data model and five small plugin traits, each with a
//! documented contract:
//!
//! | trait | does | built in here |
//! |---|---|---|
//! | [`Target`] | resolves a target key to hosts | [`StaticTarget`] |
//! | [`Payload`] | says which queries run | [`ShellPayload`], [`OsqueryPayload`], [`FilePayload`] |
//! | [`Collection`] | runs the payload on many hosts (the command transport) | [`LocalTransport`] via [`PerHost`] |
//! | [`Persistence`] | keeps runs and raw evidence | [`FsStore`] |
//! | [`Analysis`] | turns evidence into a [`Report`] | (see `diffy-analysis`) |
//!
//! The [`Engine`] wires them together and streams [`Event`]s to a caller's
//! [`EventSink`]. Per-host failures are data ([`HostResult`] with a
//! [`HostStatus`]), never errors: one host's failure never stops a run.
//!
//! All queries of a payload run in one invocation per host, as one `sh` script
//! whose output is framed per query ([`plugin::Script`]); transports only move
//! a script and its output.
//!
//! The top level is the caller's API. What transport, store, target and
//! analysis authors need besides (the script and its framing, output capture,
//! the store's records) is in [`plugin`].
//!
//! ```no_run
//! # async fn demo() -> diffy_core::Result<()> {
//! use diffy_core::*;
//! let engine = Engine::builder()
//!     .target(StaticTarget::new(vec![Host::named("localhost")?])?)
//!     .collection(PerHost::new(LocalTransport::new()))
//!     .payload(ShellPayload)
//!     .store(FsStore::open("./diffy-store")?)
//!     .build()?;
//! let key = TargetKey::new("my-laptop")?;
//! let run = engine
//!     .collect(&key, &RunOptions::default(), &NullSink, tokio_util::sync::CancellationToken::new())
//!     .await?;
//! println!("{} hosts collected", run.counts.collected);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod analysis;
pub mod collection;
pub mod engine;
mod error;
mod limits;
pub mod names;
pub mod parse;
pub mod payload;
pub mod persistence;
pub mod plugin;
pub mod query;
pub mod report;
pub mod result;
pub mod run;
mod script;
pub mod settings;
pub mod store;
pub mod target;
mod transport;
pub mod vantage;

pub use analysis::{Analysis, AnalysisInput, BaselineInput, HistoryInput, Observations};
pub use collection::{
    CollectEvent, CollectOptions, CollectRequest, Collection, ExecLimits, HostCost, HostExec, PerHost,
};
pub use engine::{
    AnalyzeOptions, BaselineOptions, Engine, EngineBuilder, Event, EventSink, NullSink, RunOptions, TOOL_VERSION,
};
pub use error::{BaselineRefusal, Error, Result};
pub use names::{Host, HostId, RunId, TargetKey};
pub use payload::{DeepPayload, FilePayload, OsqueryPayload, Payload, PayloadContext, ShellPayload};
pub use persistence::{BaselineWrite, Persistence, PersistenceExt};
pub use query::{OSQUERYI_FLAGS, OutputFormat, PayloadSpec, Query, QueryCommand, Row, osqueryi_command};
pub use report::{
    Cohort, CohortRow, Coverage, Finding, FindingKind, FleetFinding, HostReport, Method, Outcome, Prevalence, Report,
};
pub use result::{HostObservation, HostResult, HostStatus, QueryObservation, QueryOutcome, QueryResult, QueryStatus};
pub use run::{RunKind, RunManifest, RunState};
pub use store::FsStore;
pub use target::{Resolution, StaticTarget, Target};
pub use transport::LocalTransport;

/// Re-exported so that plugins and callers use the same version.
pub use tokio_util::sync::CancellationToken;
