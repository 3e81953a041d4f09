//! The filesystem store.
//!
//! # Layout
//!
//! ```text
//! ROOT/DIFFY-STORE                         marker: "diffy evidence store, format 1"
//! ROOT/runs/RUN/run.json                   the run's manifest (RunManifest)
//! ROOT/runs/RUN/hosts/HOST/result.json     the host's metadata (HostRecord)
//! ROOT/runs/RUN/hosts/HOST/QUERY.stdout    a query's raw standard output
//! ROOT/runs/RUN/hosts/HOST/QUERY.stderr    a query's raw standard error
//! ROOT/runs/RUN/hosts/HOST/_unframed.stdout  bytes outside every query frame
//! ROOT/runs/RUN/hosts/HOST/_unframed.stderr  the invocation's standard error
//! ROOT/baselines/TARGET.json               the target's baseline (BaselineRecord)
//! ```
//!
//! Empty raw blocks are not written. Files are written to a temporary name in
//! the same directory, flushed, and renamed; a host's directory is assembled
//! under a temporary name and renamed into place, so a host's evidence appears
//! whole or not at all. Names starting with `.` are temporary and ignored.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::names::{HostId, RunId, TargetKey, fill_random, validate_component};
use crate::persistence::{BaselineWrite, Persistence};
use crate::result::{HostRecord, HostResult, RawPart};
use crate::run::{BaselineRecord, RunManifest};
use crate::{Error, Result};

const PLUGIN: &str = "fs store";
const MARKER: &str = "DIFFY-STORE";
const MARKER_TEXT: &str = "diffy evidence store, format 1\n";

/// Runs and evidence in a directory (see the module documentation for the layout).
#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (and creates, if needed) a store at `root`. Refuses a non-empty
    /// directory that is not a Diffy store, so evidence never lands among
    /// unrelated files. What it creates only its owner can read (0700
    /// directories, 0600 files): evidence holds what hosts would not show
    /// to everyone.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        create_dirs(&root)?;
        let marker = root.join(MARKER);
        if !marker.exists() {
            let mut entries = fs::read_dir(&root).map_err(|e| Error::io(PLUGIN, "read", &root, e))?;
            if entries.next().is_some() {
                return Err(Error::invalid_with_help(
                    format!("{} is not empty and is not a Diffy store", root.display()),
                    "choose an empty or new directory with --store",
                ));
            }
            write_atomic(&marker, MARKER_TEXT.as_bytes(), false)?;
        }
        Ok(Self { root })
    }

    /// Opens the store at `root` only if there is one: for commands that
    /// only read, so that a mistyped path is an error, not a new store.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.join(MARKER).is_file() {
            let why = if root.exists() { "is not a Diffy store" } else { "does not exist" };
            return Err(Error::NotFound {
                what: "store",
                name: root.display().to_string(),
                help: Some(format!(
                    "{} {why}: check --store (or [defaults] store); a store is created by collect, baseline or analyze",
                    root.display()
                )),
            });
        }
        Ok(Self { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn run_dir(&self, run: &RunId) -> Result<PathBuf> {
        validate_component("run id", run.as_str())?;
        Ok(self.root.join("runs").join(run.as_str()))
    }

    /// The directory holding one host's evidence in one run.
    pub fn host_dir(&self, run: &RunId, host: &HostId) -> Result<PathBuf> {
        validate_component("host id", host.as_str())?;
        Ok(self.run_dir(run)?.join("hosts").join(host.as_str()))
    }

    fn baseline_path(&self, target: &TargetKey) -> Result<PathBuf> {
        validate_component("target key", target.as_str())?;
        Ok(self.root.join("baselines").join(format!("{}.json", target.as_str())))
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let mut r = [0u8; 6];
    fill_random(&mut r);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.{}.tmp", hex::encode(r)))
}

/// Creates `dir` and its missing parents, each readable by its owner only.
fn create_dirs(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(PLUGIN, "create", dir, e))
}

/// Creates the new directory `dir` (its parent exists), for its owner only.
fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Creates the new file `path`, readable and writable by its owner only.
fn create_file(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(PLUGIN, "create", path, e))
}

fn sync_dir(dir: &Path) {
    // Best effort: not every filesystem lets a directory be fsynced.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` atomically. With `no_clobber`, fails with
/// `AlreadyExists` when `path` exists (checked atomically by hard-linking).
fn write_atomic(path: &Path, bytes: &[u8], no_clobber: bool) -> Result<()> {
    let dir = path.parent().expect("store paths have a parent");
    create_dirs(dir)?;
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = create_file(&tmp)?;
        f.write_all(bytes).map_err(|e| Error::io(PLUGIN, "write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io(PLUGIN, "flush", &tmp, e))?;
        if no_clobber {
            fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    Error::AlreadyExists { what: "file", name: path.display().to_string(), help: None }
                }
                _ => Error::io(PLUGIN, "link", path, e),
            })?;
            let _ = fs::remove_file(&tmp);
        } else {
            fs::rename(&tmp, path).map_err(|e| Error::io(PLUGIN, "rename", path, e))?;
        }
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(PLUGIN, "read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        plugin: PLUGIN,
        what: format!("{what} {}", path.display()),
        message: e.to_string(),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(value).expect("store records serialise");
    v.push(b'\n');
    v
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::plugin(PLUGIN, format!("a store operation failed: {}", crate::script::panic_text(e))))
    })
}

fn raw_file(part: RawPart<'_>) -> String {
    match part {
        RawPart::Stdout(q) => format!("{q}.stdout"),
        RawPart::Stderr(q) => format!("{q}.stderr"),
        RawPart::UnframedStdout => "_unframed.stdout".into(),
        RawPart::UnframedStderr => "_unframed.stderr".into(),
    }
}

fn write_host(dir: &Path, result: &HostResult) -> Result<()> {
    let hosts = dir.parent().expect("host dirs have a parent");
    create_dirs(hosts)?;
    if dir.exists() {
        return Err(Error::AlreadyExists {
            what: "host result",
            name: result.host.id.to_string(),
            help: Some("a host's evidence in a run is never overwritten; start a new run".into()),
        });
    }
    let tmp = temp_name(dir);
    let write = || -> Result<()> {
        create_dir(&tmp).map_err(|e| Error::io(PLUGIN, "create", &tmp, e))?;
        let put = |name: String, bytes: &Bytes| -> Result<()> {
            if bytes.is_empty() {
                return Ok(());
            }
            crate::names::validate_component("raw file name", &name)?;
            let p = tmp.join(&name);
            let mut f = create_file(&p)?;
            f.write_all(bytes).map_err(|e| Error::io(PLUGIN, "write", &p, e))?;
            f.sync_all().map_err(|e| Error::io(PLUGIN, "flush", &p, e))
        };
        for q in &result.queries {
            put(raw_file(RawPart::Stdout(&q.name)), &q.stdout)?;
            put(raw_file(RawPart::Stderr(&q.name)), &q.stderr)?;
        }
        put(raw_file(RawPart::UnframedStdout), &result.unframed_stdout)?;
        put(raw_file(RawPart::UnframedStderr), &result.unframed_stderr)?;
        let meta = tmp.join("result.json");
        let mut f = create_file(&meta)?;
        f.write_all(&to_json(&result.record())).map_err(|e| Error::io(PLUGIN, "write", &meta, e))?;
        f.sync_all().map_err(|e| Error::io(PLUGIN, "flush", &meta, e))?;
        sync_dir(&tmp);
        // Renaming a directory onto an existing, non-empty one fails: the
        // evidence of a host is never replaced.
        fs::rename(&tmp, dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty => {
                Error::AlreadyExists { what: "host result", name: result.host.id.to_string(), help: None }
            }
            _ => Error::io(PLUGIN, "rename", dir, e),
        })?;
        sync_dir(hosts);
        Ok(())
    };
    let r = write();
    if r.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    r
}

fn visible_entries(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(PLUGIN, "read", dir, e)),
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(PLUGIN, "read", dir, e))?;
        if let Some(name) = e.file_name().to_str() {
            if !name.starts_with('.') {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

#[async_trait]
impl Persistence for FsStore {
    fn name(&self) -> &str {
        "fs"
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn create_run(&self, run: &RunManifest) -> Result<()> {
        let dir = self.run_dir(&run.id)?;
        let bytes = to_json(run);
        let id = run.id.to_string();
        blocking(move || {
            let runs = dir.parent().expect("run dirs have a parent");
            create_dirs(runs)?;
            create_dir(&dir).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { what: "run", name: id, help: None },
                _ => Error::io(PLUGIN, "create", &dir, e),
            })?;
            write_atomic(&dir.join("run.json"), &bytes, true)
        })
        .await
    }

    async fn update_run(&self, run: &RunManifest) -> Result<()> {
        let dir = self.run_dir(&run.id)?;
        let bytes = to_json(run);
        let id = run.id.to_string();
        blocking(move || {
            if !dir.join("run.json").exists() {
                return Err(Error::NotFound { what: "run", name: id, help: None });
            }
            write_atomic(&dir.join("run.json"), &bytes, false)
        })
        .await
    }

    async fn put_host_result(&self, run: &RunId, result: &HostResult) -> Result<()> {
        let run_dir = self.run_dir(run)?;
        let dir = self.host_dir(run, &result.host.id)?;
        let result = result.clone();
        let id = run.to_string();
        blocking(move || {
            if !run_dir.join("run.json").exists() {
                return Err(Error::NotFound { what: "run", name: id, help: None });
            }
            write_host(&dir, &result)
        })
        .await
    }

    async fn get_run(&self, run: &RunId) -> Result<RunManifest> {
        let path = self.run_dir(run)?.join("run.json");
        let id = run.to_string();
        blocking(move || {
            if !path.exists() {
                return Err(Error::NotFound {
                    what: "run",
                    name: id,
                    help: Some("`diffy runs` lists the stored runs".into()),
                });
            }
            read_json(&path, "run manifest")
        })
        .await
    }

    async fn list_host_results(&self, run: &RunId) -> Result<Vec<HostId>> {
        let dir = self.run_dir(run)?.join("hosts");
        blocking(move || visible_entries(&dir)?.into_iter().map(HostId::new).collect()).await
    }

    async fn get_host_result(&self, run: &RunId, host: &HostId) -> Result<HostResult> {
        let dir = self.host_dir(run, host)?;
        let name = host.to_string();
        blocking(move || {
            let meta = dir.join("result.json");
            if !meta.exists() {
                return Err(Error::NotFound { what: "host result", name, help: None });
            }
            let record: HostRecord = read_json(&meta, "host result")?;
            let rebuilt = record.into_result(|part| {
                let p = dir.join(raw_file(part));
                fs::read(&p).map(Bytes::from).map_err(|e| Error::io(PLUGIN, "read", &p, e))
            })?;
            rebuilt.map_err(|message| Error::Corrupt {
                plugin: PLUGIN,
                what: format!("evidence of host {name}"),
                message,
            })
        })
        .await
    }

    async fn list_runs(&self, target: Option<&TargetKey>) -> Result<Vec<RunManifest>> {
        let dir = self.root.join("runs");
        let target = target.cloned();
        blocking(move || {
            let mut runs = Vec::new();
            for name in visible_entries(&dir)? {
                let path = dir.join(&name).join("run.json");
                if !path.exists() {
                    continue;
                }
                match read_json::<RunManifest>(&path, "run manifest") {
                    Ok(m) if target.as_ref().is_none_or(|t| *t == m.target) => runs.push(m),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("skipping unreadable run {name}: {e}"),
                }
            }
            runs.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.id.cmp(&b.id)));
            Ok(runs)
        })
        .await
    }

    async fn put_baseline(&self, record: &BaselineRecord, mode: BaselineWrite) -> Result<()> {
        let path = self.baseline_path(&record.target)?;
        let bytes = to_json(record);
        let target = record.target.to_string();
        blocking(move || {
            write_atomic(&path, &bytes, mode == BaselineWrite::CreateOnly).map_err(|e| match e {
                Error::AlreadyExists { .. } => Error::AlreadyExists {
                    what: "baseline for target",
                    name: target,
                    help: Some("a baseline is never replaced silently; pass --replace to make this run the new baseline (the old run is kept)".into()),
                },
                other => other,
            })
        })
        .await
    }

    async fn get_baseline(&self, target: &TargetKey) -> Result<Option<BaselineRecord>> {
        let path = self.baseline_path(target)?;
        blocking(move || if path.exists() { read_json(&path, "baseline").map(Some) } else { Ok(None) }).await
    }
}
