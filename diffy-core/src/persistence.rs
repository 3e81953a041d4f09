//! Persistence: where runs and their raw evidence are kept.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::names::{HostId, RunId, TargetKey};
use crate::result::HostResult;
use crate::run::{BaselineRecord, RunManifest};

/// Whether [`Persistence::put_baseline`] may replace an existing baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineWrite {
    /// Fail with [`Error::AlreadyExists`](crate::Error::AlreadyExists) if the
    /// key has a baseline.
    CreateOnly,
    /// Replace it (the old baseline's run stays in the store).
    Replace,
}

/// Keeps runs, hosts' raw evidence and baselines.
///
/// # Contract
/// - **Nothing is lost or overwritten silently.** `create_run` fails with
///   `AlreadyExists` for a known id; `put_host_result` fails with
///   `AlreadyExists` when the host already has a result in that run;
///   `put_baseline` with `CreateOnly` fails when the key has a baseline.
/// - **Atomic and durable.** When a `put_*`/`create_*`/`update_*` returns `Ok`,
///   the data is durable, and readers see either the old state or the whole
///   new one, never a part.
/// - **Byte for byte.** Raw output comes back exactly as written;
///   `get_host_result` checks every block's size and SHA-256 and fails with
///   `Corrupt` on a mismatch.
/// - **Safe names.** Every id used in a path was validated when it was made
///   ([`crate::names`]); stores must still refuse names that would escape them.
/// - Missing runs and hosts are `NotFound`; a missing baseline is `Ok(None)`.
/// - **Concurrent writes.** The engine stores several hosts of one run at once
///   (different hosts, never the same one twice); two hosts' identical raw
///   blocks may be written at the same moment.
#[async_trait]
pub trait Persistence: Send + Sync + std::fmt::Debug {
    /// The store's kind (`fs`, `s3`).
    fn name(&self) -> &str;

    /// Where it is, for messages (`/var/lib/diffy`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Records a new run (before collection starts).
    async fn create_run(&self, run: &RunManifest) -> Result<()>;

    /// Replaces a run's manifest (progress, end, counts).
    async fn update_run(&self, run: &RunManifest) -> Result<()>;

    /// Keeps one host's result and raw evidence for `run`.
    async fn put_host_result(&self, run: &RunId, result: &HostResult) -> Result<()>;

    /// A run's manifest.
    async fn get_run(&self, run: &RunId) -> Result<RunManifest>;

    /// The hosts with a result in `run`, sorted.
    async fn list_host_results(&self, run: &RunId) -> Result<Vec<HostId>>;

    /// One host's result, raw evidence included and verified.
    async fn get_host_result(&self, run: &RunId, host: &HostId) -> Result<HostResult>;

    /// Runs, oldest first; only those of `target` when given.
    async fn list_runs(&self, target: Option<&TargetKey>) -> Result<Vec<RunManifest>>;

    /// Makes a run the baseline of its target key.
    async fn put_baseline(&self, record: &BaselineRecord, mode: BaselineWrite) -> Result<()>;

    /// The baseline of `target`, if it has one.
    async fn get_baseline(&self, target: &TargetKey) -> Result<Option<BaselineRecord>>;
}

/// Conveniences over [`Persistence`], for every store.
#[async_trait]
pub trait PersistenceExt: Persistence {
    /// Runs of `target` that started at or after `since`, oldest first.
    async fn history(&self, target: &TargetKey, since: DateTime<Utc>) -> Result<Vec<RunManifest>> {
        Ok(self.list_runs(Some(target)).await?.into_iter().filter(|r| r.started_at >= since).collect())
    }
}

impl<P: Persistence + ?Sized> PersistenceExt for P {}
