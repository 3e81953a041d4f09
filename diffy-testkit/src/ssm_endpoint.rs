//! A scriptable AWS Systems Manager endpoint for tests and benchmarks.
//!
//! It speaks the AWS JSON 1.1 protocol of `SendCommand`,
//! `ListCommandInvocations`, `GetCommandInvocation` and `CancelCommand` on a
//! loopback port, so the real AWS SDK talks to it over HTTP
//! (`AWS_ENDPOINT_URL_SSM=http://127.0.0.1:PORT`), and it **really executes**
//! each command, once per instance id, through an [`Executor`]: on this
//! machine (default) or inside a test host of the namespace fleet.
//!
//! What moto cannot do, it can inject: invocations invisible for a while
//! after `SendCommand`, Pending → InProgress → Success over time, throttling
//! at a configured request rate, output cut at SSM's inline limits (24,000
//! characters of stdout, 8,000 of stderr), instances that are undeliverable,
//! offline (`Delivery Timed Out`) or stalled past `executionTimeout`
//! (`Execution Timed Out`, really enforced by killing the process group). It
//! checks the API's own limits (50 instance ids per call, a comment of at
//! most 100 characters) and counts every call by operation.
//!
//! Like the agent, it writes each invocation's whole output to the command's
//! `OutputS3BucketName` (under `OutputS3KeyPrefix`) when given a writer for
//! that bucket ([`EndpointOptions::output_writer`], an S3 client against
//! moto, say); without one it writes nothing, as an agent whose instance
//! profile may not write to the bucket.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::Command;

/// SSM's inline limit on standard output (`GetCommandInvocation`).
pub const STDOUT_LIMIT: usize = 24_000;
/// SSM's inline limit on standard error.
pub const STDERR_LIMIT: usize = 8_000;

/// Builds the process that runs a command's text for one instance id.
pub type Executor = Arc<dyn Fn(&str, &str) -> Command + Send + Sync>;

/// What goes wrong with one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SSM cannot deliver to it: `Failed` / `Undeliverable`, at once.
    Undeliverable,
    /// Its agent is offline: `Pending` until [`EndpointOptions::offline_for`],
    /// then `TimedOut` / `Delivery Timed Out`.
    Offline,
    /// The command hangs before it ends: killed at its `executionTimeout`,
    /// then `TimedOut` / `Execution Timed Out`.
    Stall,
    /// Another instance, which knows the run's marker, forges this one's
    /// output: once the agent has written the real output object, the
    /// commands' output as run for another instance id replaces it, and is
    /// also written under a second key in the same folder.
    ForgedOutput,
}

/// How the endpoint behaves.
#[derive(Clone)]
pub struct EndpointOptions {
    /// Runs the commands. Default: `sh -c TEXT` on this machine with
    /// `DIFFY_INSTANCE_ID` set.
    pub executor: Executor,
    /// Invocations are neither listed nor gettable for this long after
    /// `SendCommand`.
    pub visible_after: Duration,
    /// Invocations stay `Pending` this long before they run.
    pub pending_for: Duration,
    /// Requests per second allowed (token bucket, burst of the same size);
    /// above it, `ThrottlingException`. `None`: no throttling.
    pub throttle_rps: Option<f64>,
    /// Faults by instance id.
    pub faults: HashMap<String, Fault>,
    /// How long an offline instance stays `Pending`.
    pub offline_for: Duration,
    /// Commands running at once (others wait, `InProgress`).
    pub parallel: usize,
    /// The bucket the "agents" may write output to, and a store rooted at
    /// it. Commands naming another bucket get no output object.
    pub output_writer: Option<(String, Arc<dyn object_store::ObjectStore>)>,
}

impl std::fmt::Debug for EndpointOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointOptions")
            .field("visible_after", &self.visible_after)
            .field("pending_for", &self.pending_for)
            .field("throttle_rps", &self.throttle_rps)
            .field("faults", &self.faults)
            .field("offline_for", &self.offline_for)
            .field("parallel", &self.parallel)
            .field("output_writer", &self.output_writer.as_ref().map(|(b, _)| b))
            .finish_non_exhaustive()
    }
}

impl Default for EndpointOptions {
    fn default() -> Self {
        Self {
            executor: Arc::new(|instance, text| {
                let mut c = Command::new("sh");
                c.arg("-c").arg(text).env("DIFFY_INSTANCE_ID", instance);
                c
            }),
            visible_after: Duration::ZERO,
            pending_for: Duration::ZERO,
            throttle_rps: None,
            faults: HashMap::new(),
            offline_for: Duration::from_secs(3),
            parallel: 16,
            output_writer: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Invocation {
    command_id: String,
    instance: String,
    sent: Instant,
    status: &'static str,
    details: &'static str,
    code: i32,
    stdout: String,
    stderr: String,
    /// `s3://bucket/key` of the whole stdout, once written.
    stdout_url: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    /// Invocations of each command, in the order of its instance ids.
    commands: BTreeMap<String, Vec<Invocation>>,
    calls: BTreeMap<String, u64>,
    throttled: BTreeMap<String, u64>,
    sent_instances: u64,
    next: u64,
    tokens: f64,
    refilled: Option<Instant>,
    cancelled: HashSet<(String, String)>,
    comments: Vec<String>,
    started: Option<Instant>,
    list_times: Vec<Duration>,
    output_errors: Vec<String>,
}

/// A running endpoint; it stops when dropped.
#[derive(Debug)]
pub struct SsmEndpoint {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SsmEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Calls counted by the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// Requests by operation, throttled ones included.
    pub by_operation: BTreeMap<String, u64>,
    /// Requests answered `ThrottlingException`, by operation.
    pub throttled: BTreeMap<String, u64>,
    /// Instance ids received by `SendCommand`, over all calls.
    pub sent_instances: u64,
    /// The comments of the commands received.
    pub comments: Vec<String>,
}

impl Calls {
    /// Requests of `operation`, throttled ones included.
    pub fn of(&self, operation: &str) -> u64 {
        self.by_operation.get(operation).copied().unwrap_or(0)
    }
}

impl SsmEndpoint {
    /// Starts the endpoint on a free loopback port.
    pub async fn start(options: EndpointOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            tokens: options.throttle_rps.unwrap_or(0.0),
            started: Some(Instant::now()),
            ..State::default()
        }));
        let shared = Arc::new(Shared { options, state: state.clone(), running: tokio::sync::Semaphore::new(1).into() });
        shared.running.add_permits(shared.options.parallel.max(1) - 1);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The calls so far.
    pub fn calls(&self) -> Calls {
        let s = self.state.lock().expect("state");
        Calls {
            by_operation: s.calls.clone(),
            throttled: s.throttled.clone(),
            sent_instances: s.sent_instances,
            comments: s.comments.clone(),
        }
    }

    /// When each `ListCommandInvocations` call that was served (not
    /// throttled) arrived, from the endpoint's start.
    pub fn list_call_times(&self) -> Vec<Duration> {
        self.state.lock().expect("state").list_times.clone()
    }

    /// Output objects that could not be written to the output bucket, and why.
    pub fn output_errors(&self) -> Vec<String> {
        self.state.lock().expect("state").output_errors.clone()
    }

    /// Invocations still running or pending (not in a final state).
    pub fn unfinished(&self) -> usize {
        let s = self.state.lock().expect("state");
        s.commands.values().flatten().filter(|i| matches!(i.status, "Pending" | "InProgress")).count()
    }
}

struct Shared {
    options: EndpointOptions,
    state: Arc<Mutex<State>>,
    running: Arc<tokio::sync::Semaphore>,
}

fn error(code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"__type": code, "message": message}).to_string();
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-errortype", code)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn ok(v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("a valid response")
}

/// The endpoint's one document, as `DescribeDocument` shows it.
const DOCUMENT: &str = r#"{"schemaVersion":"2.2","description":"Run a shell script.","mainSteps":[{"action":"aws:runShellScript","name":"runShellScript","inputs":{"runCommand":"{{ commands }}","timeoutSeconds":"{{ executionTimeout }}"}}]}"#;

/// The SHA-256 of [`DOCUMENT`], hex.
pub fn document_hash() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(DOCUMENT.as_bytes()))
}

fn describe_document(input: &Value) -> Response<Full<Bytes>> {
    if input["Name"].as_str() != Some("AWS-RunShellScript") {
        return error("InvalidDocument", "The specified document does not exist.");
    }
    ok(json!({"Document": {
        "Name": "AWS-RunShellScript",
        "Hash": document_hash(),
        "HashType": "Sha256",
        "DocumentVersion": "1",
        "LatestVersion": "1",
        "DefaultVersion": "1",
        "DocumentType": "Command",
        "DocumentFormat": "JSON",
        "Owner": "Amazon",
        "Status": "Active",
    }}))
}

fn cut(s: &str, chars: usize) -> String {
    s.chars().take(chars).collect()
}

impl Shared {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let target = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_start_matches("AmazonSSM.")
            .to_string();
        let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
            return error("SerializationException", "unreadable body");
        };
        let Ok(input) = serde_json::from_slice::<Value>(&body) else {
            return error("SerializationException", "the body is not JSON");
        };
        {
            let mut s = self.state.lock().expect("state");
            *s.calls.entry(target.clone()).or_default() += 1;
            if let Some(rps) = self.options.throttle_rps {
                let now = Instant::now();
                let last = s.refilled.replace(now).unwrap_or(now);
                s.tokens = (s.tokens + now.duration_since(last).as_secs_f64() * rps).min(rps.max(1.0));
                if s.tokens < 1.0 {
                    *s.throttled.entry(target.clone()).or_default() += 1;
                    return error("ThrottlingException", "Rate exceeded");
                }
                s.tokens -= 1.0;
            }
            if target == "ListCommandInvocations" {
                let at = s.started.map_or(Duration::ZERO, |t| t.elapsed());
                s.list_times.push(at);
            }
        }
        match target.as_str() {
            "SendCommand" => self.send_command(&input),
            "ListCommandInvocations" => self.list(&input),
            "GetCommandInvocation" => self.get(&input),
            "CancelCommand" => self.cancel(&input),
            "DescribeDocument" => describe_document(&input),
            other => error("InvalidAction", &format!("this endpoint does not implement {other:?}")),
        }
    }

    fn send_command(self: &Arc<Self>, input: &Value) -> Response<Full<Bytes>> {
        let ids: Vec<String> = input["InstanceIds"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if ids.is_empty() || ids.len() > 50 {
            return error("ValidationException", "InstanceIds must hold 1 to 50 ids");
        }
        let comment = input["Comment"].as_str().unwrap_or_default();
        if comment.chars().count() > 100 {
            return error("ValidationException", "Comment is longer than 100 characters");
        }
        if input["DocumentName"].as_str() != Some("AWS-RunShellScript") {
            return error("InvalidDocument", "this endpoint runs AWS-RunShellScript only");
        }
        if let Some(h) = input["DocumentHash"].as_str() {
            if h != document_hash() || input["DocumentHashType"].as_str() != Some("Sha256") {
                return error("InvalidDocument", "the document's hash does not match");
            }
        }
        let lines: Vec<&str> = input["Parameters"]["commands"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let text = lines.join("\n");
        let timeout: u64 =
            input["Parameters"]["executionTimeout"][0].as_str().and_then(|s| s.parse().ok()).unwrap_or(3600);
        let output = input["OutputS3BucketName"].as_str().map(|b| {
            (b.to_string(), input["OutputS3KeyPrefix"].as_str().unwrap_or_default().trim_matches('/').to_string())
        });
        let id = {
            let mut s = self.state.lock().expect("state");
            s.next += 1;
            s.sent_instances += ids.len() as u64;
            s.comments.push(comment.to_string());
            let id = format!("{:08x}-0000-4000-8000-{:012x}", s.next, s.next);
            let now = Instant::now();
            let invs = ids
                .iter()
                .map(|i| Invocation {
                    command_id: id.clone(),
                    instance: i.clone(),
                    sent: now,
                    status: "Pending",
                    details: "Pending",
                    code: -1,
                    stdout: String::new(),
                    stderr: String::new(),
                    stdout_url: None,
                })
                .collect();
            s.commands.insert(id.clone(), invs);
            id
        };
        for instance in &ids {
            let me = self.clone();
            let (id, instance, text, output) = (id.clone(), instance.clone(), text.clone(), output.clone());
            tokio::spawn(async move {
                me.execute(&id, &instance, &text, Duration::from_secs(timeout), output.as_ref()).await;
            });
        }
        ok(json!({"Command": {
            "CommandId": id,
            "DocumentName": "AWS-RunShellScript",
            "Comment": comment,
            "InstanceIds": ids,
            "Status": "Pending",
            "TargetCount": ids.len(),
            "RequestedDateTime": chrono::Utc::now().timestamp() as f64,
        }}))
    }

    fn set(&self, id: &str, instance: &str, f: impl FnOnce(&mut Invocation)) {
        let mut s = self.state.lock().expect("state");
        if let Some(inv) = s.commands.get_mut(id).and_then(|v| v.iter_mut().find(|i| i.instance == instance)) {
            if !matches!(inv.status, "Cancelled") {
                f(inv);
            }
        }
    }

    fn is_cancelled(&self, id: &str, instance: &str) -> bool {
        self.state.lock().expect("state").cancelled.contains(&(id.to_string(), instance.to_string()))
    }

    /// Writes the whole output where the agent would, if it may.
    async fn write_output(
        &self,
        id: &str,
        instance: &str,
        output: Option<&(String, String)>,
        stdout: &[u8],
        stderr: &[u8],
    ) -> Option<String> {
        let (bucket, prefix) = output?;
        let (allowed, store) = self.options.output_writer.as_ref()?;
        if allowed != bucket {
            return None;
        }
        let mut parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        parts.extend([id, instance, "awsrunShellScript", "0.awsrunShellScript"]);
        let folder = object_store::path::Path::from_iter(parts);
        for (name, bytes) in [("stdout", stdout), ("stderr", stderr)] {
            let key = folder.clone().join(name);
            let put = object_store::ObjectStoreExt::put(store.as_ref(), &key, bytes.to_vec().into());
            if let Err(e) = put.await {
                let why = format!("writing s3://{bucket}/{key}: {e}");
                self.state.lock().expect("state").output_errors.push(why);
                return None;
            }
        }
        Some(format!("https://s3.amazonaws.com/{bucket}/{}", folder.join("stdout")))
    }

    /// [`Fault::ForgedOutput`]: what another instance writes for this one.
    async fn forge_output(&self, id: &str, instance: &str, output: Option<&(String, String)>, text: &str) {
        let Ok(forged) = (self.options.executor)("i-0f0f0f0f0f0f0f0f0", text).output().await else { return };
        self.write_output(id, instance, output, &forged.stdout, &forged.stderr).await;
        let (Some((_, prefix)), Some((_, store))) = (output, self.options.output_writer.as_ref()) else { return };
        let mut parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        parts.extend([id, instance, "zz-forged", "stdout"]);
        let key = object_store::path::Path::from_iter(parts);
        let _ = object_store::ObjectStoreExt::put(store.as_ref(), &key, forged.stdout.into()).await;
    }

    async fn execute(
        &self,
        id: &str,
        instance: &str,
        text: &str,
        timeout: Duration,
        output: Option<&(String, String)>,
    ) {
        let fault = self.options.faults.get(instance).copied();
        match fault {
            Some(Fault::Undeliverable) => {
                self.set(id, instance, |i| (i.status, i.details) = ("Failed", "Undeliverable"));
                return;
            }
            Some(Fault::Offline) => {
                tokio::time::sleep(self.options.offline_for).await;
                self.set(id, instance, |i| (i.status, i.details) = ("TimedOut", "Delivery Timed Out"));
                return;
            }
            _ => {}
        }
        tokio::time::sleep(self.options.pending_for).await;
        let _slot = self.running.clone().acquire_owned().await;
        if self.is_cancelled(id, instance) {
            return;
        }
        self.set(id, instance, |i| (i.status, i.details) = ("InProgress", "InProgress"));
        let text = if fault == Some(Fault::Stall) { format!("{text}\nsleep 100000") } else { text.to_string() };
        let mut cmd = (self.options.executor)(instance, &text);
        cmd.process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("failed to run commands: {e}");
                self.set(id, instance, |i| (i.status, i.details, i.code, i.stderr) = ("Failed", "Failed", 1, msg));
                return;
            }
        };
        let pgid = child.id();
        let wait = child.wait_with_output();
        tokio::pin!(wait);
        let limit = tokio::time::sleep(timeout);
        tokio::pin!(limit);
        let out = loop {
            tokio::select! {
                r = &mut wait => break Ok(r),
                () = &mut limit => break Err(()),
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if self.is_cancelled(id, instance) {
                        // CancelCommand stops a running command.
                        if let Some(pgid) = pgid {
                            stop_group(pgid).await;
                        }
                        return;
                    }
                }
            }
        };
        match out {
            Ok(Ok(out)) => {
                let code = out.status.code().unwrap_or(-1);
                let (status, details) = if code == 0 { ("Success", "Success") } else { ("Failed", "Failed") };
                let url = self.write_output(id, instance, output, &out.stdout, &out.stderr).await;
                if fault == Some(Fault::ForgedOutput) {
                    self.forge_output(id, instance, output, &text).await;
                }
                let stdout = cut(&String::from_utf8_lossy(&out.stdout), STDOUT_LIMIT);
                let stderr = cut(&String::from_utf8_lossy(&out.stderr), STDERR_LIMIT);
                self.set(id, instance, |i| {
                    (i.status, i.details, i.code, i.stdout, i.stderr) = (status, details, code, stdout, stderr);
                    i.stdout_url = url;
                });
            }
            Ok(Err(e)) => {
                let msg = format!("failed to wait for commands: {e}");
                self.set(id, instance, |i| (i.status, i.details, i.code, i.stderr) = ("Failed", "Failed", 1, msg));
            }
            Err(_) => {
                // The agent kills the command at its executionTimeout.
                if let Some(pgid) = pgid {
                    stop_group(pgid).await;
                }
                let msg = format!("command timed out after {}s", timeout.as_secs());
                self.set(id, instance, |i| {
                    (i.status, i.details, i.code, i.stderr) = ("TimedOut", "Execution Timed Out", 124, msg);
                });
            }
        }
    }

    fn visible(&self, inv: &Invocation) -> bool {
        inv.sent.elapsed() >= self.options.visible_after
    }

    fn list(&self, input: &Value) -> Response<Full<Bytes>> {
        let Some(id) = input["CommandId"].as_str() else {
            return error("ValidationException", "this endpoint lists by CommandId only");
        };
        let max = input["MaxResults"].as_u64().unwrap_or(50).clamp(1, 50) as usize;
        let start: usize = input["NextToken"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
        let s = self.state.lock().expect("state");
        let Some(invs) = s.commands.get(id) else {
            return error("InvalidCommandId", "no such command");
        };
        let visible: Vec<&Invocation> = invs.iter().filter(|i| self.visible(i)).collect();
        let page: Vec<Value> = visible
            .iter()
            .skip(start)
            .take(max)
            .map(|i| {
                json!({
                    "CommandId": i.command_id,
                    "InstanceId": i.instance,
                    "DocumentName": "AWS-RunShellScript",
                    "Status": i.status,
                    "StatusDetails": i.details,
                    "RequestedDateTime": chrono::Utc::now().timestamp() as f64,
                })
            })
            .collect();
        let mut out = json!({"CommandInvocations": page});
        if start + max < visible.len() {
            out["NextToken"] = json!((start + max).to_string());
        }
        ok(out)
    }

    fn get(&self, input: &Value) -> Response<Full<Bytes>> {
        let (Some(id), Some(instance)) = (input["CommandId"].as_str(), input["InstanceId"].as_str()) else {
            return error("ValidationException", "CommandId and InstanceId are required");
        };
        let s = self.state.lock().expect("state");
        let Some(inv) = s.commands.get(id).and_then(|v| v.iter().find(|i| i.instance == instance)) else {
            return error("InvocationDoesNotExist", "no such invocation");
        };
        if !self.visible(inv) {
            return error("InvocationDoesNotExist", "no such invocation");
        }
        ok(json!({
            "CommandId": inv.command_id,
            "InstanceId": inv.instance,
            "DocumentName": "AWS-RunShellScript",
            "PluginName": "aws:runShellScript",
            "ResponseCode": inv.code,
            "Status": inv.status,
            "StatusDetails": inv.details,
            "StandardOutputContent": inv.stdout,
            "StandardOutputUrl": inv.stdout_url.clone().unwrap_or_default(),
            "StandardErrorContent": inv.stderr,
        }))
    }

    fn cancel(&self, input: &Value) -> Response<Full<Bytes>> {
        let Some(id) = input["CommandId"].as_str() else {
            return error("ValidationException", "CommandId is required");
        };
        let ids: Option<Vec<String>> =
            input["InstanceIds"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
        let mut s = self.state.lock().expect("state");
        let Some(invs) = s.commands.get_mut(id) else {
            return error("InvalidCommandId", "no such command");
        };
        let mut hit = Vec::new();
        for inv in invs.iter_mut() {
            let chosen = ids.as_ref().is_none_or(|ids| ids.contains(&inv.instance));
            if chosen && matches!(inv.status, "Pending" | "InProgress") {
                inv.status = "Cancelled";
                inv.details = "Cancelled";
                hit.push((id.to_string(), inv.instance.clone()));
            }
        }
        s.cancelled.extend(hit);
        ok(json!({}))
    }
}

/// Stops a command as this endpoint models the agent doing it (on
/// `CancelCommand` and at `executionTimeout`): SIGTERM to the command's
/// process group, then SIGKILL to what is left two seconds later.
async fn stop_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    let group = nix::unistd::Pid::from_raw(pgid);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
}
