//! # diffy-store-object
//!
//! Diffy's evidence store on object storage: S3 (`--store s3://bucket/prefix`)
//! for teams and for runs that outgrow one laptop, or any other
//! [`object_store`] backend (local disk and memory included, which is how the
//! same code is tested without a network).
//!
//! # Layout
//!
//! ```text
//! PREFIX/DIFFY-STORE                        marker: "diffy evidence store, format 1"
//! PREFIX/runs/RUN/run.json                  the run's manifest (RunManifest)
//! PREFIX/runs/RUN/results/HOST.json         one host's metadata (HostRecord)
//! PREFIX/runs/RUN/blobs/SHA256              raw output blocks, by content
//! PREFIX/baselines/TARGET.json              the target's baseline (BaselineRecord)
//! ```
//!
//! # How the contract is kept
//!
//! - **Never overwritten silently**: manifests, host records and create-only
//!   baselines are written with a conditional put (`If-None-Match: *` on S3),
//!   so two writers can never both succeed.
//! - **Whole or not at all**: a host's raw blocks are written first, under
//!   their SHA-256 (writing one again writes the same bytes), and its record
//!   last; a host exists once its record does, and its record names only
//!   blocks that are already there. Identical output of many hosts is kept
//!   once per run.
//! - **Verified on read**: every block's size and SHA-256 is checked against
//!   the record; a mismatch or a missing block is `Corrupt`.
//! - **Read once**: a block many hosts share is downloaded once for all of
//!   them (up to 256 MiB of blocks are kept while a run is read), with at most
//!   32 downloads in flight; [`BlobStore::requests`] counts what was asked.
//! - **Safe names**: ids were validated when made; each is one key segment,
//!   percent-encoded where S3 advises against a character.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use diffy_core::names::validate_component;
use diffy_core::persistence::{BaselineWrite, Persistence};
use diffy_core::result::{HostRecord, HostResult, RawPart};
use diffy_core::run::{BaselineRecord, RunManifest};
use diffy_core::{Error, HostId, Result, RunId, TargetKey};
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

const MARKER: &str = "DIFFY-STORE";
const MARKER_TEXT: &str = "diffy evidence store, format 1\n";
/// Blocks uploaded or downloaded at once for one host.
const BLOB_CONCURRENCY: usize = 8;
/// Block downloads in flight at once, all hosts together.
const READS_IN_FLIGHT: usize = 32;
/// Bytes of blocks kept for the other hosts of a run: past this, the cache
/// starts again (a block is then fetched again, never lost).
const SHARED_BLOCKS_BUDGET: u64 = 256 << 20;

/// One block download, awaited by every host that needs the block.
type Fetch =
    futures::future::Shared<futures::future::BoxFuture<'static, std::result::Result<Option<Bytes>, Arc<Error>>>>;

/// Reads shared by the hosts of a store: each distinct block is fetched once
/// while it is cached, with at most [`READS_IN_FLIGHT`] downloads at a time.
struct Reads {
    permits: tokio::sync::Semaphore,
    blocks: std::sync::Mutex<HashMap<Path, Fetch>>,
    cached: AtomicU64,
    gets: AtomicU64,
    puts: AtomicU64,
    lists: AtomicU64,
}

impl Default for Reads {
    fn default() -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(READS_IN_FLIGHT),
            blocks: std::sync::Mutex::new(HashMap::new()),
            cached: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            lists: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads").field("requests", &self.requests()).finish_non_exhaustive()
    }
}

impl Reads {
    fn requests(&self) -> Requests {
        Requests {
            gets: self.gets.load(Ordering::Relaxed),
            puts: self.puts.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
        }
    }
}

/// Requests a [`BlobStore`] has made since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Object reads.
    pub gets: u64,
    /// Object writes.
    pub puts: u64,
    /// Listings.
    pub lists: u64,
}

/// Runs and evidence in an object store. See the crate documentation.
#[derive(Clone, Debug)]
pub struct BlobStore {
    reads: Arc<Reads>,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    kind: &'static str,
    location: String,
}

fn store_error(kind: &'static str, action: &str, key: &Path, e: object_store::Error) -> Error {
    Error::Plugin {
        plugin: format!("{kind} store"),
        message: format!("cannot {action} {key}: {e}"),
        help: match &e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => Some(
                "check your AWS credentials and that they may s3:GetObject, s3:PutObject and s3:ListBucket on the store"
                    .into(),
            ),
            _ => None,
        },
        source: Some(Box::new(e)),
    }
}

/// One object's bytes; `Ok(None)` when it does not exist.
async fn fetch(store: &dyn ObjectStore, kind: &'static str, key: &Path) -> Result<Option<Bytes>> {
    let r = match store.get(key).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error(kind, "read", key, e)),
    };
    r.bytes().await.map(Some).map_err(|e| store_error(kind, "read", key, e))
}

fn part(s: &str) -> PathPart<'static> {
    PathPart::from(s.to_string())
}

fn decode(p: &str) -> String {
    percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned()
}

fn to_json<T: serde::Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec_pretty(value).expect("store records serialise");
    v.push(b'\n');
    Bytes::from(v)
}

impl BlobStore {
    /// A store under `prefix` of `store`. `kind` names it in messages (`s3`,
    /// `memory`); `location` says where it is (`s3://bucket/prefix`). Refuses
    /// a prefix that holds objects but is not a Diffy store, so evidence never
    /// lands among unrelated objects.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        kind: &'static str,
        location: impl Into<String>,
    ) -> Result<Self> {
        Self::open_as(store, prefix, kind, location, true).await
    }

    /// Opens the store under `prefix` only if there is one (its marker is
    /// there): for commands that only read, so that a mistyped prefix is an
    /// error, not a new store.
    pub async fn open_existing(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        kind: &'static str,
        location: impl Into<String>,
    ) -> Result<Self> {
        Self::open_as(store, prefix, kind, location, false).await
    }

    async fn open_as(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        kind: &'static str,
        location: impl Into<String>,
        create: bool,
    ) -> Result<Self> {
        let mut parts = Vec::new();
        for p in prefix.split('/').filter(|p| !p.is_empty()) {
            validate_component("store prefix segment", p)?;
            parts.push(part(p));
        }
        let s = Self { reads: Arc::default(), store, prefix: Path::from_iter(parts), kind, location: location.into() };
        let marker = s.key([MARKER]);
        match s.store.head(&marker).await {
            Ok(_) => return Ok(s),
            Err(object_store::Error::NotFound { .. }) if create => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    what: "store",
                    name: s.location.clone(),
                    help: Some(format!(
                        "{} holds no Diffy store: check --store (or [defaults] store); a store is created by collect, baseline or analyze",
                        s.location
                    )),
                });
            }
            Err(e) => return Err(store_error(kind, "read", &marker, e)),
        }
        let any = s.store.list(Some(&s.prefix)).next().await;
        if let Some(first) = any {
            let first = first.map_err(|e| store_error(kind, "list", &s.prefix, e))?;
            return Err(Error::invalid_with_help(
                format!("{} holds objects ({}) and is not a Diffy store", s.location, first.location),
                "choose an empty or new prefix with --store",
            ));
        }
        match s.put(&marker, Bytes::from_static(MARKER_TEXT.as_bytes()), true).await {
            Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(s),
            Err(e) => Err(e),
        }
    }

    #[cfg(feature = "s3")]
    /// A store at `s3://bucket[/prefix]`, with credentials from `aws`'s
    /// standard chain (profiles, SSO, roles; refreshed before they expire)
    /// and its region. `AWS_ENDPOINT_URL_S3`, or the context's endpoint
    /// (`AWS_ENDPOINT_URL`), point it at another endpoint (path-style
    /// requests, plain HTTP allowed there).
    pub async fn s3(url: &str, aws: &diffy_aws::AwsContext) -> Result<Self> {
        Self::s3_as(url, aws, true).await
    }

    #[cfg(feature = "s3")]
    /// [`BlobStore::s3`], for commands that only read: the store must exist.
    pub async fn s3_existing(url: &str, aws: &diffy_aws::AwsContext) -> Result<Self> {
        Self::s3_as(url, aws, false).await
    }

    #[cfg(feature = "s3")]
    async fn s3_as(url: &str, aws: &diffy_aws::AwsContext, create: bool) -> Result<Self> {
        if !url.starts_with("s3://") {
            return Err(Error::invalid(format!("{url:?} is not an s3:// location")));
        }
        let Some((bucket, prefix)) = diffy_aws::s3::parse_url(url) else {
            return Err(Error::invalid_with_help(
                format!("{url:?} does not name an S3 bucket"),
                "write --store s3://BUCKET/PREFIX",
            ));
        };
        let store = diffy_aws::s3::store(&bucket, aws)?;
        Self::open_as(Arc::new(store), &prefix, "s3", url.trim_end_matches('/'), create).await
    }

    fn key<'a>(&self, parts: impl IntoIterator<Item = &'a str>) -> Path {
        let mut p = self.prefix.clone();
        for s in parts {
            p = p.join(part(s));
        }
        p
    }

    fn run_key(&self, run: &RunId) -> Result<Path> {
        validate_component("run id", run.as_str())?;
        Ok(self.key(["runs", run.as_str(), "run.json"]))
    }

    fn result_key(&self, run: &RunId, host: &HostId) -> Result<Path> {
        validate_component("host id", host.as_str())?;
        Ok(self.key(["runs", run.as_str(), "results", &format!("{}.json", host.as_str())]))
    }

    fn blob_key(&self, run: &RunId, sha: &str) -> Result<Path> {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Corrupt {
                plugin: "object store",
                what: "host record".into(),
                message: format!("{sha:?} is not a SHA-256"),
            });
        }
        Ok(self.key(["runs", run.as_str(), "blobs", sha]))
    }

    fn baseline_key(&self, target: &TargetKey) -> Result<Path> {
        validate_component("target key", target.as_str())?;
        Ok(self.key(["baselines", &format!("{}.json", target.as_str())]))
    }

    async fn put(&self, key: &Path, bytes: Bytes, create_only: bool) -> Result<()> {
        let opts = PutOptions {
            mode: if create_only { PutMode::Create } else { PutMode::Overwrite },
            ..PutOptions::default()
        };
        self.reads.puts.fetch_add(1, Ordering::Relaxed);
        match self.store.put_opts(key, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Err(Error::AlreadyExists { what: "object", name: key.to_string(), help: None })
            }
            Err(e) => Err(store_error(self.kind, "write", key, e)),
        }
    }

    /// `Ok(None)` when the object does not exist.
    async fn get(&self, key: &Path) -> Result<Option<Bytes>> {
        self.reads.gets.fetch_add(1, Ordering::Relaxed);
        fetch(&*self.store, self.kind, key).await
    }

    /// A raw block, downloaded once for every host that needs it (see
    /// [`Reads`]); `Ok(None)` when it does not exist.
    async fn get_block(&self, key: &Path) -> Result<Option<Bytes>> {
        let fetch = {
            let mut blocks = self.reads.blocks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if self.reads.cached.load(Ordering::Relaxed) > SHARED_BLOCKS_BUDGET {
                blocks.clear();
                self.reads.cached.store(0, Ordering::Relaxed);
            }
            match blocks.get(key) {
                Some(f) => f.clone(),
                None => {
                    let (store, reads, kind, k) = (self.store.clone(), self.reads.clone(), self.kind, key.clone());
                    let f = async move {
                        let _permit = reads.permits.acquire().await.expect("the semaphore is never closed");
                        reads.gets.fetch_add(1, Ordering::Relaxed);
                        let b = fetch(&*store, kind, &k).await.map_err(Arc::new)?;
                        if let Some(b) = &b {
                            reads.cached.fetch_add(b.len() as u64, Ordering::Relaxed);
                        }
                        Ok(b)
                    }
                    .boxed()
                    .shared();
                    blocks.insert(key.clone(), f.clone());
                    f
                }
            }
        };
        fetch.await.map_err(|e| {
            // A failure is not kept: the next host asks again.
            self.reads.blocks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
            Error::Plugin { plugin: format!("{} store", self.kind), message: e.to_string(), help: None, source: None }
        })
    }

    /// Requests made since the store was opened (reads of records and
    /// blocks, writes, listings): what reading a run from S3 costs.
    pub fn requests(&self) -> Requests {
        self.reads.requests()
    }

    async fn exists(&self, key: &Path) -> Result<bool> {
        self.reads.gets.fetch_add(1, Ordering::Relaxed);
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(self.kind, "read", key, e)),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &Path, what: &str) -> Result<Option<T>> {
        let Some(bytes) = self.get(key).await? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Corrupt {
            plugin: "object store",
            what: format!("{what} {key}"),
            message: e.to_string(),
        })
    }

    /// Names directly under `dir` whose key ends with `suffix`, decoded, sorted.
    async fn names(&self, dir: &Path, suffix: &str) -> Result<Vec<String>> {
        self.reads.lists.fetch_add(1, Ordering::Relaxed);
        let listed =
            self.store.list_with_delimiter(Some(dir)).await.map_err(|e| store_error(self.kind, "list", dir, e))?;
        let mut out: Vec<String> = listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename())
            .filter_map(|f| f.strip_suffix(suffix))
            .map(decode)
            .collect();
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl Persistence for BlobStore {
    fn name(&self) -> &str {
        self.kind
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn create_run(&self, run: &RunManifest) -> Result<()> {
        let key = self.run_key(&run.id)?;
        self.put(&key, to_json(run), true).await.map_err(|e| match e {
            Error::AlreadyExists { .. } => Error::AlreadyExists { what: "run", name: run.id.to_string(), help: None },
            e => e,
        })
    }

    async fn update_run(&self, run: &RunManifest) -> Result<()> {
        let key = self.run_key(&run.id)?;
        if !self.exists(&key).await? {
            return Err(Error::NotFound { what: "run", name: run.id.to_string(), help: None });
        }
        self.put(&key, to_json(run), false).await
    }

    async fn put_host_result(&self, run: &RunId, result: &HostResult) -> Result<()> {
        let run_key = self.run_key(run)?;
        let key = self.result_key(run, &result.host.id)?;
        if !self.exists(&run_key).await? {
            return Err(Error::NotFound { what: "run", name: run.to_string(), help: None });
        }
        let exists = || Error::AlreadyExists {
            what: "host result",
            name: result.host.id.to_string(),
            help: Some("a host's evidence in a run is never overwritten; start a new run".into()),
        };
        if self.exists(&key).await? {
            return Err(exists());
        }
        // Raw blocks first, by content; the record last.
        let mut blocks: HashMap<&str, &Bytes> = HashMap::new();
        for q in &result.queries {
            blocks.insert(&q.stdout_sha256, &q.stdout);
            blocks.insert(&q.stderr_sha256, &q.stderr);
        }
        let record = result.record();
        blocks.insert(&record.unframed_stdout.sha256, &result.unframed_stdout);
        blocks.insert(&record.unframed_stderr.sha256, &result.unframed_stderr);
        let mut writes = Vec::new();
        for (sha, bytes) in blocks {
            if bytes.is_empty() {
                continue;
            }
            // The record's hashes are the store's keys: never trust them unchecked.
            if diffy_core::result::sha256_hex(bytes) != sha {
                return Err(Error::invalid(format!(
                    "host {}: a raw block does not match its SHA-256; refusing to store it",
                    result.host.id
                )));
            }
            writes.push((self.blob_key(run, sha)?, (*bytes).clone()));
        }
        futures::stream::iter(writes)
            .map(|(k, b)| async move { self.put(&k, b, false).await })
            .buffer_unordered(BLOB_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        self.put(&key, to_json(&record), true).await.map_err(|e| match e {
            Error::AlreadyExists { .. } => exists(),
            e => e,
        })
    }

    async fn get_run(&self, run: &RunId) -> Result<RunManifest> {
        let key = self.run_key(run)?;
        self.get_json(&key, "run manifest").await?.ok_or_else(|| Error::NotFound {
            what: "run",
            name: run.to_string(),
            help: Some("`diffy runs` lists the stored runs".into()),
        })
    }

    async fn list_host_results(&self, run: &RunId) -> Result<Vec<HostId>> {
        validate_component("run id", run.as_str())?;
        let dir = self.key(["runs", run.as_str(), "results"]);
        self.names(&dir, ".json").await?.into_iter().map(HostId::new).collect()
    }

    async fn get_host_result(&self, run: &RunId, host: &HostId) -> Result<HostResult> {
        let key = self.result_key(run, host)?;
        let Some(record): Option<HostRecord> = self.get_json(&key, "host result").await? else {
            return Err(Error::NotFound { what: "host result", name: host.to_string(), help: None });
        };
        let mut shas: Vec<String> = Vec::new();
        for q in &record.queries {
            for r in [&q.stdout, &q.stderr] {
                if r.bytes > 0 {
                    shas.push(r.sha256.clone());
                }
            }
        }
        for r in [&record.unframed_stdout, &record.unframed_stderr] {
            if r.bytes > 0 {
                shas.push(r.sha256.clone());
            }
        }
        shas.sort();
        shas.dedup();
        let fetched: Vec<(String, Option<Bytes>)> = futures::stream::iter(shas)
            .map(|sha| async move {
                let k = self.blob_key(run, &sha)?;
                Ok::<_, Error>((sha, self.get_block(&k).await?))
            })
            .buffer_unordered(BLOB_CONCURRENCY)
            .try_collect()
            .await?;
        let blobs: HashMap<String, Option<Bytes>> = fetched.into_iter().collect();
        // Which block each part is, before the record is consumed.
        let mut by_part: HashMap<String, String> = HashMap::new();
        for q in &record.queries {
            by_part.insert(format!("{}\0out", q.name), q.stdout.sha256.clone());
            by_part.insert(format!("{}\0err", q.name), q.stderr.sha256.clone());
        }
        by_part.insert("\0uout".into(), record.unframed_stdout.sha256.clone());
        by_part.insert("\0uerr".into(), record.unframed_stderr.sha256.clone());
        let name = host.to_string();
        let corrupt = |message: String| Error::Corrupt {
            plugin: "object store",
            what: format!("evidence of host {name} in run {run}"),
            message,
        };
        let rebuilt = record.into_result(|p| {
            let k = match p {
                RawPart::Stdout(q) => format!("{q}\0out"),
                RawPart::Stderr(q) => format!("{q}\0err"),
                RawPart::UnframedStdout => "\0uout".into(),
                RawPart::UnframedStderr => "\0uerr".into(),
            };
            let sha = by_part.get(&k).cloned().unwrap_or_default();
            match blobs.get(&sha) {
                Some(Some(b)) => Ok(b.clone()),
                _ => Err(corrupt(format!("raw block {sha} is missing"))),
            }
        })?;
        rebuilt.map_err(corrupt)
    }

    async fn list_runs(&self, target: Option<&TargetKey>) -> Result<Vec<RunManifest>> {
        let dir = self.key(["runs"]);
        self.reads.lists.fetch_add(1, Ordering::Relaxed);
        let listed =
            self.store.list_with_delimiter(Some(&dir)).await.map_err(|e| store_error(self.kind, "list", &dir, e))?;
        let ids: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(decode)).collect::<Vec<_>>();
        let manifests: Vec<Option<RunManifest>> = futures::stream::iter(ids)
            .map(|id| async move {
                let Ok(run) = RunId::new(id.as_str()) else { return Ok(None) };
                match self.get_json::<RunManifest>(&self.run_key(&run)?, "run manifest").await {
                    Ok(m) => Ok(m),
                    Err(e @ Error::Corrupt { .. }) => {
                        tracing::warn!("skipping unreadable run {id}: {e}");
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(BLOB_CONCURRENCY)
            .try_collect()
            .await?;
        let mut runs: Vec<RunManifest> =
            manifests.into_iter().flatten().filter(|m| target.is_none_or(|t| *t == m.target)).collect();
        runs.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.id.cmp(&b.id)));
        Ok(runs)
    }

    async fn put_baseline(&self, record: &BaselineRecord, mode: BaselineWrite) -> Result<()> {
        let key = self.baseline_key(&record.target)?;
        self.put(&key, to_json(record), mode == BaselineWrite::CreateOnly).await.map_err(|e| match e {
            Error::AlreadyExists { .. } => Error::AlreadyExists {
                what: "baseline for target",
                name: record.target.to_string(),
                help: Some(
                    "a baseline is never replaced silently; pass --replace to make this run the new baseline (the old \
                     run is kept)"
                        .into(),
                ),
            },
            e => e,
        })
    }

    async fn get_baseline(&self, target: &TargetKey) -> Result<Option<BaselineRecord>> {
        let key = self.baseline_key(target)?;
        self.get_json(&key, "baseline").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn conformance_in_memory() {
        let s = BlobStore::open(Arc::new(InMemory::new()), "evidence/IR-1", "memory", "memory://").await.unwrap();
        diffy_testkit::conformance::persistence(&s).await;
    }

    /// Forty hosts with the same output, read at once: each block is
    /// downloaded once, whoever asks first.
    #[tokio::test]
    async fn a_block_many_hosts_share_is_read_once() {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let s = BlobStore::open(mem.clone(), "", "memory", "memory://").await.unwrap();
        let m = diffy_testkit::conformance::manifest("20231114T221320Z-dddddd", "web", 0);
        s.create_run(&m).await.unwrap();
        for i in 0..40 {
            s.put_host_result(&m.id, &diffy_testkit::conformance::host_result(&format!("h{i}"), b"same\n"))
                .await
                .unwrap();
        }
        let reader = BlobStore::open_existing(mem, "", "memory", "memory://").await.unwrap();
        let opened = reader.requests().gets;
        let hosts = reader.list_host_results(&m.id).await.unwrap();
        let read: Vec<HostResult> = futures::stream::iter(hosts)
            .map(|h| {
                let (reader, id) = (&reader, &m.id);
                async move { reader.get_host_result(id, &h).await.unwrap() }
            })
            .buffer_unordered(40)
            .collect()
            .await;
        assert_eq!(read.len(), 40);
        let blocks: std::collections::BTreeSet<&String> = read
            .iter()
            .flat_map(|r| r.queries.iter())
            .filter(|q| !q.stdout.is_empty())
            .map(|q| &q.stdout_sha256)
            .collect();
        let stderr: std::collections::BTreeSet<&String> = read
            .iter()
            .flat_map(|r| r.queries.iter())
            .filter(|q| !q.stderr.is_empty())
            .map(|q| &q.stderr_sha256)
            .collect();
        let unframed =
            usize::from(!read[0].unframed_stdout.is_empty()) + usize::from(!read[0].unframed_stderr.is_empty());
        let r = reader.requests();
        assert_eq!(
            r.gets - opened,
            40 + (blocks.len() + stderr.len() + unframed) as u64,
            "one read per record, one per distinct block: {r:?}"
        );
        assert_eq!(r.lists, 1);
    }

    #[tokio::test]
    async fn an_edited_record_is_corrupt() {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let s = BlobStore::open(mem.clone(), "ev", "memory", "memory://ev").await.unwrap();
        diffy_testkit::conformance::edited_records(&s, async |run, host, from, to| {
            let key = s.result_key(&run, &host).unwrap();
            let text = String::from_utf8(mem.get(&key).await.unwrap().bytes().await.unwrap().to_vec()).unwrap();
            let edited = text.replace(&format!("\"name\": \"{from}\""), &format!("\"name\": \"{to}\""));
            assert_ne!(edited, text, "the record names the query");
            mem.put(&key, PutPayload::from(edited.into_bytes())).await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn conformance_on_local_disk() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let s = BlobStore::open(Arc::new(fs), "", "local", dir.path().display().to_string()).await.unwrap();
        diffy_testkit::conformance::persistence(&s).await;
    }

    #[tokio::test]
    async fn refuses_foreign_prefixes_and_reopens_its_own() {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        mem.put(&Path::from("logs/app.log"), PutPayload::from_static(b"x")).await.unwrap();
        let e = BlobStore::open(mem.clone(), "logs", "memory", "memory://logs").await.unwrap_err();
        assert!(e.to_string().contains("not a Diffy store"), "{e}");
        let e = BlobStore::open_existing(mem.clone(), "ev", "memory", "memory://ev").await.unwrap_err();
        assert!(matches!(e, Error::NotFound { what: "store", .. }), "{e}");
        BlobStore::open(mem.clone(), "ev", "memory", "memory://ev").await.unwrap();
        BlobStore::open_existing(mem.clone(), "ev", "memory", "memory://ev").await.expect("an existing store opens");
        BlobStore::open(mem.clone(), "ev", "memory", "memory://ev").await.expect("a store reopens");
        let e = BlobStore::open(mem, "ev/../logs", "memory", "x").await.unwrap_err();
        assert!(e.to_string().contains(".."), "{e}");
    }

    #[tokio::test]
    async fn a_missing_or_altered_block_is_corrupt() {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let s = BlobStore::open(mem.clone(), "", "memory", "memory://").await.unwrap();
        diffy_testkit::conformance::persistence(&s).await;
        let run = RunId::new("20231114T221320Z-aaaaaa").unwrap();
        let host = HostId::new("h3").unwrap();
        let r = s.get_host_result(&run, &host).await.unwrap();
        let k = s.blob_key(&run, &r.queries[0].stdout_sha256).unwrap();
        mem.put(&k, PutPayload::from_static(b"tampered")).await.unwrap();
        // A handle keeps the blocks it has read (and checked); a new one reads again.
        let again = s.get_host_result(&run, &host).await.unwrap();
        assert_eq!(again.queries[0].stdout, r.queries[0].stdout, "the checked block, from the handle's cache");
        let fresh = || BlobStore::open_existing(mem.clone(), "", "memory", "memory://");
        let e = fresh().await.unwrap().get_host_result(&run, &host).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        mem.delete(&k).await.unwrap();
        let e = fresh().await.unwrap().get_host_result(&run, &host).await.unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
