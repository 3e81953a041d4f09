//! Diffy's AWS Systems Manager Run Command transport.
//!
//! [`SsmTransport`] runs a payload on EC2 instances (or hybrid managed nodes)
//! through `SendCommand` with the `AWS-RunShellScript` document:
//!
//! - at most 50 instance ids per `SendCommand` (the API's limit), with
//!   `MaxConcurrency` and `MaxErrors` at 100 % so one bad instance never
//!   stops the others, the run's comment (an incident id) in `Comment`, cut
//!   to 100 characters, and `executionTimeout` from the per-host deadline;
//! - the payload's queries in **one** invocation per instance, its script
//!   gzip-compressed and base64-encoded on the way out and its output the
//!   same way on the way back, so real results fit SSM's inline limits; an
//!   output cut by SSM (24,000 characters) is detected and never parsed as
//!   if whole (see [`envelope`]): with an output bucket
//!   ([`SsmOptions::output_bucket`], `OutputS3BucketName`) the whole output
//!   is read from S3 instead, without one the cut output is kept as evidence
//!   and the host reported `truncated`;
//! - status by polling: one paginated `ListCommandInvocations` per command
//!   (50 instances) per round, and one `GetCommandInvocation` per finished
//!   instance for its output. An invocation not yet visible right after
//!   `SendCommand` (or `InvocationDoesNotExist`) is "not yet" for
//!   [`SsmOptions::visibility_grace`];
//! - throttling handled by the SDK's adaptive retry mode with jitter
//!   ([`SsmTransport::from_env`]); one overall deadline for the run, after
//!   which unfinished invocations are cancelled (`CancelCommand`) and
//!   reported `timed_out` with their last status;
//! - every `StatusDetails` value mapped to a per-host status: `Undeliverable`
//!   and `Delivery Timed Out` are `unreachable`, `Execution Timed Out` is
//!   `timed_out` (with the output that came back), `Cancelled`, `Terminated`
//!   and `Failed` have their own messages, and a status the SDK does not know
//!   is a `transport_error` naming it.
//!
//! No credential is ever part of a command: the instance runs the payload's
//! own text. The command id, the document (name, and the SHA-256 hash and
//! version `DescribeDocument` gives, which SSM then checks on `SendCommand`),
//! the SHA-256 of the commands, and every invocation's SSM status, details
//! and response code are kept with the host's result (`transport` map).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::CommandInvocationStatus;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use diffy_aws::{AwsContext, Scope};
use diffy_core::plugin::{ExecEnd, Execution, assemble_blocking};
use diffy_core::{CollectEvent, CollectRequest, Collection, Host, HostResult, HostStatus, PayloadSpec};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub mod envelope;

use envelope::{Decoded, INLINE_STDOUT_LIMIT};

/// Instance ids per `SendCommand` call: the API's limit.
pub const MAX_IDS_PER_SEND: usize = 50;
/// Characters of `Comment` the API accepts.
pub const MAX_COMMENT: usize = 100;

const PLUGIN: &str = "ssm";

/// Instances the SSM transport keeps in flight when the caller does not say.
pub const DEFAULT_CONCURRENCY: usize = 1000;

/// Settings of the SSM transport.
///
/// Written in `diffy.toml` as `[ssm]` (or a request body) with these names;
/// durations as `"2s"`. The output bucket needs a reader and is set in code
/// ([`SsmOptions::output_bucket`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SsmOptions {
    /// The command document. Default `AWS-RunShellScript`.
    pub document: String,
    /// Put in each command's `Comment` (cut to 100 characters): the
    /// incident id, so the commands are easy to find in CloudTrail.
    pub comment: Option<String>,
    /// Instance ids per `SendCommand` (1 to 50). Default 50.
    #[serde(deserialize_with = "batch")]
    pub batch: usize,
    /// Time between polling rounds. Default 2 s.
    #[serde(with = "diffy_core::settings::duration")]
    pub poll_interval: Duration,
    /// How long an invocation may stay invisible after `SendCommand` (not
    /// listed, or `InvocationDoesNotExist`) before the host is given up.
    /// Default 60 s.
    #[serde(with = "diffy_core::settings::duration")]
    pub visibility_grace: Duration,
    /// Time an instance's agent has to pick the command up (`TimeoutSeconds`
    /// of `SendCommand`, at least 30 s); also added to each host's deadline.
    /// Default 60 s.
    #[serde(serialize_with = "diffy_core::settings::duration::serialize", deserialize_with = "delivery")]
    pub delivery_timeout: Duration,
    /// Output fetches (`GetCommandInvocation`) in flight at once. Default 16.
    #[serde(deserialize_with = "diffy_core::settings::at_least_one::deserialize")]
    pub fetch_concurrency: usize,
    /// Where SSM also writes each invocation's whole output
    /// (`OutputS3BucketName`), read when the inline output was cut. Default
    /// none.
    #[serde(skip)]
    pub output_bucket: Option<OutputBucket>,
}

fn batch<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    let n: usize = diffy_core::settings::at_least_one::deserialize(d)?;
    if n > MAX_IDS_PER_SEND {
        return Err(serde::de::Error::custom(format!("batch is at most {MAX_IDS_PER_SEND} (SendCommand's limit)")));
    }
    Ok(n)
}

fn delivery<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let t = diffy_core::settings::duration::deserialize(d)?;
    if t < Duration::from_secs(30) {
        return Err(serde::de::Error::custom("delivery_timeout is at least 30s (SendCommand's TimeoutSeconds)"));
    }
    Ok(t)
}

/// An S3 bucket (and key prefix) where the instances' agents write each
/// invocation's whole output, and a reader for it.
///
/// SSM writes `PREFIX/COMMAND-ID/INSTANCE-ID/<plugin>/<step>/stdout` (and
/// `stderr`) with the **instance's** credentials: its instance profile needs
/// `s3:PutObject` on the bucket (across accounts, the bucket policy must
/// allow it). Diffy reads the objects with `reader` (the responder's own
/// credentials) only when the inline output was cut.
#[derive(Clone, Debug)]
pub struct OutputBucket {
    bucket: String,
    prefix: String,
    reader: Arc<dyn ObjectStore>,
}

impl OutputBucket {
    /// Output in `bucket` under `prefix` (slashes at either end are
    /// dropped), read through `reader`, a store rooted at the bucket (see
    /// `diffy_aws::s3::store`).
    pub fn new(bucket: impl Into<String>, prefix: impl AsRef<str>, reader: Arc<dyn ObjectStore>) -> Self {
        Self { bucket: bucket.into(), prefix: prefix.as_ref().trim_matches('/').to_string(), reader }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix (may be empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `s3://bucket/prefix/COMMAND/INSTANCE/`, the folder of one invocation.
    fn folder(&self, command_id: &str, instance: &str) -> ObjectPath {
        let mut parts: Vec<&str> = self.prefix.split('/').filter(|p| !p.is_empty()).collect();
        parts.extend([command_id, instance]);
        ObjectPath::from_iter(parts)
    }
}

impl Default for SsmOptions {
    fn default() -> Self {
        Self {
            document: "AWS-RunShellScript".into(),
            comment: None,
            batch: MAX_IDS_PER_SEND,
            poll_interval: Duration::from_secs(2),
            visibility_grace: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(60),
            fetch_concurrency: 16,
            output_bucket: None,
        }
    }
}

impl SsmOptions {
    /// Sets the comment (an incident id); cut to 100 characters.
    pub fn comment(mut self, c: impl Into<String>) -> Self {
        self.comment = Some(c.into());
        self
    }

    /// Sets the instance ids per call (clamped to 1..=50).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.clamp(1, MAX_IDS_PER_SEND);
        self
    }

    /// Sets the polling interval.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Sets the visibility grace period.
    pub fn visibility_grace(mut self, d: Duration) -> Self {
        self.visibility_grace = d;
        self
    }

    /// Sets the delivery timeout (at least 30 s, as the API requires).
    pub fn delivery_timeout(mut self, d: Duration) -> Self {
        self.delivery_timeout = d.max(Duration::from_secs(30));
        self
    }

    /// Has SSM write each invocation's whole output to `bucket` too
    /// (`OutputS3BucketName`, `OutputS3KeyPrefix`), where Diffy reads it when
    /// the inline output was cut.
    pub fn output_bucket(mut self, bucket: OutputBucket) -> Self {
        self.output_bucket = Some(bucket);
        self
    }
}

/// The SSM Run Command transport. See the crate documentation.
#[derive(Clone, Debug)]
pub struct SsmTransport {
    clients: Clients,
    options: Arc<SsmOptions>,
}

/// Where the SSM clients come from.
#[derive(Clone, Debug)]
enum Clients {
    /// One client for every host.
    One(Client),
    /// A client per account and region, from the hosts' `account` and
    /// `region` labels.
    Scoped(Box<AwsContext>),
}

impl SsmTransport {
    /// A transport over `client` (configured by the caller: region,
    /// credentials, retry).
    pub fn new(client: Client, options: SsmOptions) -> Self {
        Self { clients: Clients::One(client), options: Arc::new(options) }
    }

    /// A transport that reaches each host in its own account and region (the
    /// host's `account` and `region` labels, as the `asg` target sets them),
    /// assuming the context's role in each account of its inventory.
    /// Commands are batched per account and region.
    pub fn with_context(ctx: AwsContext, options: SsmOptions) -> Self {
        Self { clients: Clients::Scoped(Box::new(ctx)), options: Arc::new(options) }
    }

    /// A transport with credentials and region from the standard AWS chain
    /// (environment, profiles, SSO, instance role), `AWS_ENDPOINT_URL` /
    /// `AWS_ENDPOINT_URL_SSM` honoured, and the adaptive retry mode (client
    /// side rate limiting, exponential backoff with jitter, 10 attempts) so
    /// that throttling slows the run down instead of failing hosts.
    pub async fn from_env(options: SsmOptions) -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(diffy_aws::retry_config(10))
            .load()
            .await;
        Self::new(Client::new(&config), options)
    }

    /// The settings.
    pub fn options(&self) -> &SsmOptions {
        &self.options
    }
}

/// Whether `id` looks like an EC2 instance id or a hybrid managed node id.
pub fn is_instance_id(id: &str) -> bool {
    let hex = |s: &str| (s.len() == 8 || s.len() == 17) && s.bytes().all(|b| b.is_ascii_hexdigit());
    id.strip_prefix("i-").is_some_and(hex) || id.strip_prefix("mi-").is_some_and(|s| s.len() == 17 && hex(s))
}

impl Collection for SsmTransport {
    fn name(&self) -> &str {
        PLUGIN
    }

    fn default_concurrency(&self) -> usize {
        DEFAULT_CONCURRENCY
    }

    fn collect(&self, request: CollectRequest) -> BoxStream<'static, CollectEvent> {
        let (tx, rx) = mpsc::channel::<CollectEvent>(1024);
        let run = Run {
            clients: self.clients.clone(),
            cache: Default::default(),
            docs: Default::default(),
            options: self.options.clone(),
            tx,
        };
        tokio::spawn(run.go(request));
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed()
    }
}

/// One collection in progress.
struct Run {
    clients: Clients,
    cache: tokio::sync::Mutex<HashMap<Scope, Client>>,
    docs: tokio::sync::Mutex<HashMap<Option<Scope>, Arc<Sent>>>,
    options: Arc<SsmOptions>,
    tx: mpsc::Sender<CollectEvent>,
}

/// A host whose invocation has been sent.
struct Flight {
    host: Host,
    command: usize,
    sent: Instant,
    sent_at: DateTime<Utc>,
    last: Option<(String, String)>,
}

impl Flight {
    /// The host's result when its invocation ended without usable output.
    fn failed(self, status: HostStatus, why: String, transport: BTreeMap<String, String>) -> HostResult {
        let mut r = HostResult::failed(self.host, status, why, self.sent_at);
        r.finished_at = Utc::now();
        r.transport = transport;
        r
    }
}

struct Command {
    id: String,
    client: Client,
    sent: Arc<Sent>,
    /// Hosts of this command still waiting for a final status.
    waiting: usize,
}

/// What was sent, as evidence: the document (name, SHA-256 hash and version
/// from `DescribeDocument`, which SSM then checks on `SendCommand`) and the
/// SHA-256 of the commands.
#[derive(Debug)]
struct Sent {
    document: String,
    document_hash: Option<String>,
    document_version: Option<String>,
    /// Why the hash is unknown (`DescribeDocument` refused, say).
    document_note: Option<String>,
    commands_sha256: String,
}

/// What the list said of an invocation.
enum Seen {
    /// Still on its way.
    Running,
    /// Finished: fetch its output.
    Fetch,
    /// Finished without output worth fetching.
    Done(HostStatus, String),
}

fn classify(status: &CommandInvocationStatus, details: &str) -> Seen {
    match details {
        "Undeliverable" => {
            return Seen::Done(
                HostStatus::Unreachable,
                "SSM could not deliver the command (Undeliverable): the instance is not a managed node, is stopped, \
                 or its agent has no route to SSM"
                    .into(),
            );
        }
        "Delivery Timed Out" => {
            return Seen::Done(
                HostStatus::Unreachable,
                "SSM could not deliver the command before its delivery timeout (Delivery Timed Out): the agent is \
                 offline or not running"
                    .into(),
            );
        }
        "Terminated" => {
            return Seen::Done(
                HostStatus::TransportError,
                "SSM terminated this invocation (Terminated): the command's MaxErrors was reached".into(),
            );
        }
        "Execution Timed Out" => return Seen::Fetch,
        _ => {}
    }
    match status {
        CommandInvocationStatus::Pending
        | CommandInvocationStatus::InProgress
        | CommandInvocationStatus::Delayed
        | CommandInvocationStatus::Cancelling => Seen::Running,
        CommandInvocationStatus::Success | CommandInvocationStatus::Failed | CommandInvocationStatus::TimedOut => {
            Seen::Fetch
        }
        CommandInvocationStatus::Cancelled => {
            Seen::Done(HostStatus::Cancelled, format!("SSM cancelled this invocation ({details})"))
        }
        other => Seen::Done(
            HostStatus::TransportError,
            format!("SSM returned a status diffy does not know: {:?} ({details})", other.as_str()),
        ),
    }
}

impl Run {
    /// The scope a host is reached in (`None` with a single client).
    fn scope(&self, host: &Host) -> Option<Scope> {
        match &self.clients {
            Clients::One(_) => None,
            Clients::Scoped(ctx) => Some(ctx.scope_of(&host.labels)),
        }
    }

    /// Describes the document once per account and region.
    async fn sent(&self, scope: Option<&Scope>, client: &Client, commands_sha256: &str) -> Arc<Sent> {
        let mut docs = self.docs.lock().await;
        if let Some(d) = docs.get(&scope.cloned()) {
            return d.clone();
        }
        let document = self.options.document.clone();
        let sent = match client.describe_document().name(&document).send().await {
            Ok(out) => {
                let d = out.document();
                Sent {
                    document_hash: d.and_then(|d| d.hash()).map(str::to_string),
                    document_version: d.and_then(|d| d.document_version()).map(str::to_string),
                    document_note: None,
                    document,
                    commands_sha256: commands_sha256.to_string(),
                }
            }
            Err(e) => {
                let why = format!("DescribeDocument failed: {}", describe(&e));
                tracing::warn!("{why}; the document's hash is not recorded or checked");
                Sent {
                    document,
                    document_hash: None,
                    document_version: None,
                    document_note: Some(why),
                    commands_sha256: commands_sha256.to_string(),
                }
            }
        };
        let sent = Arc::new(sent);
        docs.insert(scope.cloned(), sent.clone());
        sent
    }

    async fn client(&self, scope: Option<&Scope>) -> Client {
        match (&self.clients, scope) {
            (Clients::One(c), _) => c.clone(),
            (Clients::Scoped(ctx), scope) => {
                let scope = scope.cloned().unwrap_or_else(|| ctx.scope_of(&BTreeMap::new()));
                let mut cache = self.cache.lock().await;
                if let Some(c) = cache.get(&scope) {
                    return c.clone();
                }
                let c = Client::new(&ctx.config(&scope).await);
                cache.insert(scope, c.clone());
                c
            }
        }
    }

    async fn go(self, request: CollectRequest) {
        let CollectRequest { hosts, spec, script, options, cancel, .. } = request;
        let o = self.options.clone();
        let commands_text = envelope::wrap(script.text(), script.nonce(), &spec.name);
        let commands_sha256 = diffy_core::result::sha256_hex(commands_text.join("\n").as_bytes());
        // The instance's own limit: the script stops itself at the deadline;
        // SSM's executionTimeout backs it up.
        let exec_timeout = (options.host_deadline + options.grace).as_secs().max(30);
        // Each host's deadline runs from when its command was sent: hosts
        // waiting for room (more hosts than `concurrency`) have not started,
        // and are never given up for the time the others took.
        let per_host = options.host_deadline + options.grace + o.delivery_timeout;
        let concurrency = options.concurrency_or(DEFAULT_CONCURRENCY);

        let mut queue = VecDeque::new();
        for host in hosts {
            if is_instance_id(host.address()) {
                queue.push_back((self.scope(&host), host));
            } else {
                let why = format!(
                    "{:?} is not an EC2 instance id (i-…) or managed node id (mi-…); the ssm transport needs one \
                     (as the host id, or as its address: ID=i-0123456789abcdef0)",
                    host.address()
                );
                self.finish(HostResult::failed(host, HostStatus::TransportError, why, Utc::now())).await;
            }
        }

        // A command goes to one account and region: keep each scope's hosts together.
        queue.make_contiguous().sort_by(|a, b| a.0.cmp(&b.0));
        let mut commands: Vec<Command> = Vec::new();
        let mut flights: HashMap<String, Flight> = HashMap::new();
        let mut fetches: JoinSet<()> = JoinSet::new();
        let fetch_slots = Arc::new(tokio::sync::Semaphore::new(o.fetch_concurrency.max(1)));
        let mut fetching = 0usize;

        loop {
            // Send to more instances while there is room.
            while !queue.is_empty() && !cancel.is_cancelled() && flights.len() + fetching < concurrency {
                let batch = o.batch.clamp(1, MAX_IDS_PER_SEND);
                let room = (concurrency - flights.len() - fetching).min(batch);
                let scope = queue.front().map(|(s, _)| s.clone()).expect("not empty");
                let same = queue.iter().take_while(|(s, _)| *s == scope).count();
                // Whole batches only (fewer calls), unless fewer hosts are left.
                if room < batch.min(concurrency).min(same) {
                    break;
                }
                let chunk: Vec<Host> = (0..room.min(same)).filter_map(|_| queue.pop_front().map(|(_, h)| h)).collect();
                let sent_at = Utc::now();
                let client = self.client(scope.as_ref()).await;
                let sent = self.sent(scope.as_ref(), &client, &commands_sha256).await;
                match self.send(&client, &sent, &chunk, &commands_text, exec_timeout).await {
                    Ok(id) => {
                        tracing::debug!(command = %id, instances = chunk.len(), scope = ?scope, "sent");
                        commands.push(Command { id, client, sent, waiting: chunk.len() });
                        for host in chunk {
                            let _ = self.tx.send(CollectEvent::Started(host.id.clone())).await;
                            let key = host.address().to_string();
                            flights.insert(
                                key,
                                Flight { host, command: commands.len() - 1, sent: Instant::now(), sent_at, last: None },
                            );
                        }
                    }
                    Err(why) => {
                        for host in chunk {
                            let r = HostResult::failed(host, HostStatus::TransportError, why.clone(), sent_at);
                            self.finish(r).await;
                        }
                    }
                }
            }
            if flights.is_empty() && queue.is_empty() {
                break;
            }
            if cancel.is_cancelled() {
                self.give_up(&commands, flights, queue, HostStatus::Cancelled, "the run was interrupted").await;
                break;
            }
            let late: Vec<String> =
                flights.iter().filter(|(_, f)| f.sent.elapsed() >= per_host).map(|(k, _)| k.clone()).collect();
            if !late.is_empty() {
                let late: HashMap<String, Flight> = late
                    .into_iter()
                    .map(|k| {
                        let f = flights.remove(&k).expect("present");
                        (k, f)
                    })
                    .collect();
                for f in late.values() {
                    commands[f.command].waiting -= 1;
                }
                let why = format!("no result within the host's deadline ({}s after it was sent)", per_host.as_secs());
                self.give_up(&commands, late, VecDeque::new(), HostStatus::TimedOut, &why).await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(o.poll_interval) => {}
                () = cancel.cancelled() => continue,
            }
            while fetches.try_join_next().is_some() {
                fetching -= 1;
            }

            // One polling round: list each command that still has hosts waiting.
            for (ci, cmd) in commands.iter_mut().enumerate() {
                if cmd.waiting == 0 {
                    continue;
                }
                let listed = match self.list(&cmd.client, &cmd.id).await {
                    Ok(l) => l,
                    Err(why) => {
                        // Retries are exhausted; try again next round, until the deadline.
                        tracing::warn!(command = %cmd.id, "listing invocations failed: {why}");
                        continue;
                    }
                };
                for (instance, status, details) in listed {
                    let Some(f) = flights.get_mut(&instance).filter(|f| f.command == ci) else { continue };
                    f.last = Some((status.as_str().to_string(), details.clone()));
                    match classify(&status, &details) {
                        Seen::Running => {}
                        Seen::Fetch => {
                            let f = flights.remove(&instance).expect("present");
                            cmd.waiting -= 1;
                            fetching += 1;
                            let job = Fetch {
                                client: cmd.client.clone(),
                                tx: self.tx.clone(),
                                command_id: cmd.id.clone(),
                                sent: cmd.sent.clone(),
                                spec: spec.clone(),
                                script: script.clone(),
                                grace: o.visibility_grace,
                                poll: o.poll_interval,
                                max_output_bytes: options.max_output_bytes,
                                output_bucket: o.output_bucket.clone(),
                            };
                            let slots = fetch_slots.clone();
                            fetches.spawn(async move {
                                let _slot = slots.acquire_owned().await;
                                job.run(f).await;
                            });
                        }
                        Seen::Done(st, why) => {
                            let f = flights.remove(&instance).expect("present");
                            cmd.waiting -= 1;
                            let ev = evidence(&cmd.id, &cmd.sent, Some((&status, &details)), None);
                            self.finish(f.failed(st, why, ev)).await;
                        }
                    }
                }
            }
            // Invocations SSM never showed within the grace period.
            let lost: Vec<String> = flights
                .iter()
                .filter(|(_, f)| f.last.is_none() && f.sent.elapsed() > o.visibility_grace)
                .map(|(k, _)| k.clone())
                .collect();
            for k in lost {
                let f = flights.remove(&k).expect("present");
                commands[f.command].waiting -= 1;
                let why = format!(
                    "SSM never listed an invocation for this instance within {}s of SendCommand",
                    o.visibility_grace.as_secs()
                );
                let ev = evidence(&commands[f.command].id, &commands[f.command].sent, None, None);
                self.finish(f.failed(HostStatus::TransportError, why, ev)).await;
            }
        }
        while fetches.join_next().await.is_some() {}
    }

    async fn finish(&self, r: HostResult) {
        let _ = self.tx.send(CollectEvent::Finished(Box::new(r))).await;
    }

    async fn send(
        &self,
        client: &Client,
        sent: &Sent,
        chunk: &[Host],
        commands: &[String],
        exec_timeout: u64,
    ) -> Result<String, String> {
        let o = &self.options;
        let mut req = client
            .send_command()
            .document_name(&o.document)
            .set_instance_ids(Some(chunk.iter().map(|h| h.address().to_string()).collect()))
            .parameters("commands", commands.to_vec())
            .parameters("executionTimeout", vec![exec_timeout.to_string()])
            .timeout_seconds(o.delivery_timeout.as_secs().max(30) as i32)
            .max_concurrency("100%")
            .max_errors("100%");
        if let Some(h) = &sent.document_hash {
            // SSM refuses the command if the document changed since it was described.
            req = req.document_hash(h).document_hash_type(aws_sdk_ssm::types::DocumentHashType::Sha256);
        }
        if let Some(c) = &o.comment {
            req = req.comment(c.chars().take(MAX_COMMENT).collect::<String>());
        }
        if let Some(b) = &o.output_bucket {
            req = req.output_s3_bucket_name(&b.bucket);
            if !b.prefix.is_empty() {
                req = req.output_s3_key_prefix(&b.prefix);
            }
        }
        let out = req.send().await.map_err(|e| format!("SendCommand failed: {}", describe(&e)))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| "SendCommand returned no command id".to_string())
    }

    async fn list(
        &self,
        client: &Client,
        command_id: &str,
    ) -> Result<Vec<(String, CommandInvocationStatus, String)>, String> {
        let mut pages =
            client.list_command_invocations().command_id(command_id).max_results(50).into_paginator().send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| describe(&e))?;
            for inv in page.command_invocations() {
                let (Some(id), Some(st)) = (inv.instance_id(), inv.status()) else { continue };
                all.push((id.to_string(), st.clone(), inv.status_details().unwrap_or_default().to_string()));
            }
        }
        Ok(all)
    }

    async fn give_up(
        &self,
        commands: &[Command],
        flights: HashMap<String, Flight>,
        queue: VecDeque<(Option<Scope>, Host)>,
        status: HostStatus,
        why: &str,
    ) {
        // Stop what is still running on the instances.
        let mut by_command: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (k, f) in &flights {
            by_command.entry(f.command).or_default().push(k.clone());
        }
        for (ci, ids) in by_command {
            let r = commands[ci]
                .client
                .cancel_command()
                .command_id(&commands[ci].id)
                .set_instance_ids(Some(ids))
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(command = %commands[ci].id, "CancelCommand failed: {}", describe(&e));
            }
        }
        for (_, f) in flights {
            let last =
                f.last.as_ref().map_or("never listed by SSM".to_string(), |(s, d)| format!("last seen {s} ({d})"));
            let mut ev = evidence(&commands[f.command].id, &commands[f.command].sent, None, None);
            if let Some((s, d)) = f.last.clone() {
                ev.insert("ssm.status".into(), s);
                ev.insert("ssm.status_details".into(), d);
            }
            self.finish(f.failed(status, format!("{why}; {last}; the invocation was cancelled"), ev)).await;
        }
        for (_, host) in queue {
            self.finish(HostResult::failed(host, status, format!("{why} before this host was sent"), Utc::now())).await;
        }
    }
}

/// Fetches one finished invocation's output and yields the host's result.
struct Fetch {
    client: Client,
    tx: mpsc::Sender<CollectEvent>,
    command_id: String,
    sent: Arc<Sent>,
    spec: Arc<PayloadSpec>,
    script: Arc<diffy_core::plugin::Script>,
    grace: Duration,
    poll: Duration,
    max_output_bytes: u64,
    output_bucket: Option<OutputBucket>,
}

impl Fetch {
    async fn run(self, f: Flight) {
        let instance = f.host.address().to_string();
        let started = Instant::now();
        let out = loop {
            let r =
                self.client.get_command_invocation().command_id(&self.command_id).instance_id(&instance).send().await;
            match r {
                Ok(out) => break Ok(out),
                Err(e) if e.code() == Some("InvocationDoesNotExist") && started.elapsed() < self.grace => {
                    tokio::time::sleep(self.poll).await;
                }
                Err(e) => break Err(format!("GetCommandInvocation failed: {}", describe(&e))),
            }
        };
        let result = match out {
            Err(why) => {
                let ev = evidence(&self.command_id, &self.sent, None, None);
                f.failed(HostStatus::TransportError, why, ev)
            }
            Ok(out) => {
                let status = out.status().cloned().unwrap_or(CommandInvocationStatus::from("unknown"));
                let details = out.status_details().unwrap_or_default().to_string();
                let mut text = out.standard_output_content().unwrap_or_default().to_string();
                let err_text = out.standard_error_content().unwrap_or_default().to_string();
                let code = out.response_code();
                let mut transport = evidence(&self.command_id, &self.sent, Some((&status, &details)), Some(code));
                let inline_chars = text.chars().count();
                transport.insert("ssm.output_chars".into(), inline_chars.to_string());
                let timed_out = details == "Execution Timed Out" || status == CommandInvocationStatus::TimedOut;
                let nonce = self.script.nonce();
                let mut decoded = envelope::decode(&text, nonce, self.max_output_bytes);
                // Cut by SSM's inline limit: the whole output may be in the output bucket.
                let cut = inline_chars >= INLINE_STDOUT_LIMIT || text.contains("--output truncated--");
                let mut source = Source::Inline;
                if let (Decoded::Damaged(_), true, Some(bucket)) = (&decoded, cut, &self.output_bucket) {
                    let inline = text.clone();
                    let url = out.standard_output_url().filter(|u| !u.is_empty());
                    source = match self.full_output(bucket, &instance, url, &inline).await {
                        Ok(full) => {
                            transport.insert("ssm.output_source".into(), full.url.clone());
                            transport.insert("ssm.output_s3_bytes".into(), full.size.to_string());
                            text = full.text;
                            decoded = envelope::decode(&text, nonce, self.max_output_bytes);
                            if full.capped { Source::S3Capped(full.url, full.size) } else { Source::S3(full.url) }
                        }
                        Err(why) => {
                            transport.insert("ssm.output_s3_error".into(), why.clone());
                            Source::S3Failed(why)
                        }
                    };
                }
                let (stdout, stderr, end) = match decoded {
                    Decoded::Whole { code, stdout, stderr } => {
                        (stdout, stderr, if timed_out { ExecEnd::TimedOut } else { ExecEnd::Exited(code) })
                    }
                    Decoded::OverLimit { stdout, stderr } => {
                        (stdout, stderr, ExecEnd::OutputLimit(self.max_output_bytes))
                    }
                    Decoded::Fatal(why) => (
                        Bytes::from(text),
                        Bytes::from(err_text),
                        ExecEnd::Failed {
                            status: HostStatus::TransportError,
                            message: format!("the payload could not start on the instance: {why}"),
                        },
                    ),
                    Decoded::Damaged(why) => {
                        let end = match source {
                            Source::S3Capped(url, size) => ExecEnd::Failed {
                                status: HostStatus::Truncated,
                                message: format!(
                                    "the whole output at {url} is {size} bytes, past what the output limit of {} \
                                     bytes can decode to; its first part is kept as evidence",
                                    self.max_output_bytes
                                ),
                            },
                            Source::S3(url) if !timed_out => ExecEnd::Failed {
                                status: HostStatus::TransportError,
                                message: format!("the whole output read from {url} is unusable: {why}"),
                            },
                            Source::S3Failed(s3) => ExecEnd::Failed {
                                status: HostStatus::Truncated,
                                message: format!(
                                    "SSM returned only the first {INLINE_STDOUT_LIMIT} characters of this instance's \
                                     encoded output ({why}), and the whole output could not be read from the output \
                                     bucket: {s3}. The cut output is kept as evidence"
                                ),
                            },
                            Source::Inline if cut => ExecEnd::Failed {
                                status: HostStatus::Truncated,
                                message: format!(
                                    "SSM returned only the first {INLINE_STDOUT_LIMIT} characters of this instance's \
                                     encoded output ({why}); the cut output is kept as evidence. Configure an output \
                                     bucket (diffy --ssm-output s3://BUCKET/PREFIX) to read whole outputs, or use a smaller payload"
                                ),
                            },
                            _ if timed_out => ExecEnd::TimedOut,
                            _ => ExecEnd::Failed {
                                status: HostStatus::TransportError,
                                message: format!(
                                    "SSM reports {} ({details}, exit {code}) and the output is unusable: {why}",
                                    status.as_str()
                                ),
                            },
                        };
                        (Bytes::from(text), Bytes::from(err_text), end)
                    }
                };
                let execution =
                    Execution { stdout, stderr, end, started_at: f.sent_at, finished_at: Utc::now(), transport };
                let (spec, script, host) = (self.spec.clone(), self.script.clone(), f.host);
                assemble_blocking(host, spec, script, execution).await
            }
        };
        let _ = self.tx.send(CollectEvent::Finished(Box::new(result))).await;
    }

    /// Reads an invocation's whole standard output from the output bucket.
    ///
    /// Every instance may write to the bucket, and every instance knows the
    /// run's marker, so an object is only believed when it is the one this
    /// instance's agent wrote: its exact key (the `StandardOutputUrl` SSM
    /// returned, else where the agent writes for `AWS-RunShellScript`) and
    /// content that begins with the inline output, which comes from the SSM
    /// API itself. The agent writes the object before it reports a final
    /// status, but it may not be visible at once: it is looked for again for
    /// a few seconds.
    async fn full_output(
        &self,
        bucket: &OutputBucket,
        instance: &str,
        stdout_url: Option<&str>,
        inline: &str,
    ) -> Result<FullOutput, String> {
        let folder = bucket.folder(&self.command_id, instance);
        let key = match stdout_url.and_then(|u| output_key(u, &bucket.bucket)) {
            Some(key) => {
                let key = ObjectPath::parse(&key).map_err(|e| format!("SSM's StandardOutputUrl {key:?}: {e}"))?;
                if !key.prefix_matches(&folder) {
                    return Err(format!(
                        "SSM's StandardOutputUrl names s3://{}/{key}, outside this invocation's folder s3://{}/{folder}/",
                        bucket.bucket, bucket.bucket
                    ));
                }
                key
            }
            None => folder.clone().join("awsrunShellScript").join("0.awsrunShellScript").join("stdout"),
        };
        let url = format!("s3://{}/{key}", bucket.bucket);
        let started = Instant::now();
        let meta = loop {
            match bucket.reader.head(&key).await {
                Ok(m) => break m,
                Err(object_store::Error::NotFound { .. }) if started.elapsed() < self.grace.min(OUTPUT_LAG) => {
                    tokio::time::sleep(self.poll).await;
                }
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(format!(
                        "no stdout object at {url} (does the instance profile allow s3:PutObject on the bucket?)"
                    ));
                }
                Err(e) => return Err(format!("reading {url} failed: {e}")),
            }
        };
        // Encoded output is at most about 4/3 of the compressed bytes; past
        // this, it cannot decode within the limit.
        let cap = self.max_output_bytes.saturating_mul(3).saturating_add(1 << 20);
        let capped = meta.size > cap;
        let read = async {
            if capped {
                bucket.reader.get_range(&key, 0..cap).await
            } else {
                bucket.reader.get(&key).await?.bytes().await
            }
        };
        let bytes = read.await.map_err(|e| format!("reading {url} failed: {e}"))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let known = inline_part(inline);
        if !text.starts_with(known) {
            return Err(format!(
                "{url} does not begin with the {} characters SSM returned inline, so it is not this instance's output (another instance may have written it; see the bucket policy in the README); it was not used",
                known.chars().count()
            ));
        }
        Ok(FullOutput { text, url, size: meta.size, capped })
    }
}

/// The key of `url` (SSM's `StandardOutputUrl`: `https://s3.amazonaws.com/BUCKET/KEY`,
/// a regional `https://s3.REGION.amazonaws.com/BUCKET/KEY`, or
/// `https://BUCKET.s3....amazonaws.com/KEY`) when it is in `bucket`.
fn output_key(url: &str, bucket: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    let key =
        if host.starts_with(&format!("{bucket}.")) { path } else { path.strip_prefix(bucket)?.strip_prefix('/')? };
    let key = percent_encoding::percent_decode_str(key).decode_utf8().ok()?.into_owned();
    (!key.is_empty() && !key.split('/').any(|p| p == ".." || p == ".")).then_some(key)
}

/// What of the inline output came from the instance: all of it, less a
/// truncation notice the agent may append when it cuts the output.
fn inline_part(inline: &str) -> &str {
    let lower = inline.to_ascii_lowercase();
    match lower.rfind("output truncated") {
        Some(at) => {
            let start = lower[..at].trim_end_matches(['-', ' ']).len();
            inline[..start].trim_end_matches(['\n', '\r'])
        }
        None => inline,
    }
}

/// How long to look again for an output object that is not listed yet.
const OUTPUT_LAG: Duration = Duration::from_secs(10);

/// Where the output that was decoded came from.
enum Source {
    /// `GetCommandInvocation`'s inline output.
    Inline,
    /// The whole output, from the output bucket.
    S3(String),
    /// The first part of an output object too large for the output limit.
    S3Capped(String, u64),
    /// The inline output was cut and the output bucket could not be read.
    S3Failed(String),
}

/// An invocation's standard output read from the output bucket.
struct FullOutput {
    text: String,
    url: String,
    size: u64,
    capped: bool,
}

fn evidence(
    command_id: &str,
    sent: &Sent,
    status: Option<(&CommandInvocationStatus, &str)>,
    code: Option<i32>,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("ssm.command_id".into(), command_id.to_string());
    m.insert("ssm.document".into(), sent.document.clone());
    m.insert(
        "ssm.document_sha256".into(),
        sent.document_hash.clone().or_else(|| sent.document_note.clone()).unwrap_or_else(|| "unknown".into()),
    );
    if let Some(v) = &sent.document_version {
        m.insert("ssm.document_version".into(), v.clone());
    }
    m.insert("ssm.commands_sha256".into(), sent.commands_sha256.clone());
    if let Some((s, d)) = status {
        m.insert("ssm.status".into(), s.as_str().to_string());
        m.insert("ssm.status_details".into(), d.to_string());
    }
    if let Some(c) = code {
        m.insert("ssm.response_code".into(), c.to_string());
    }
    m
}

/// A one-line description of an SDK error: its code and message, or what
/// failed underneath (connection, credentials, timeout).
fn describe<E, R>(e: &aws_sdk_ssm::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_ssm::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => err.to_string(),
            }
        }
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        for ok in ["i-0123456789abcdef0", "i-12345678", "mi-0123456789abcdef0"] {
            assert!(is_instance_id(ok), "{ok}");
        }
        for bad in ["web-1", "i-", "i-123", "i-0123456789abcdef0; rm -rf /", "mi-12345678", "../i-12345678"] {
            assert!(!is_instance_id(bad), "{bad}");
        }
    }

    #[test]
    fn every_status_detail_has_a_meaning() {
        use CommandInvocationStatus as S;
        let st = |s: &S, d: &str| match classify(s, d) {
            Seen::Running => "running".to_string(),
            Seen::Fetch => "fetch".to_string(),
            Seen::Done(h, _) => h.as_str().to_string(),
        };
        assert_eq!(st(&S::Failed, "Undeliverable"), "unreachable");
        assert_eq!(st(&S::TimedOut, "Delivery Timed Out"), "unreachable");
        assert_eq!(st(&S::TimedOut, "Execution Timed Out"), "fetch");
        assert_eq!(st(&S::Failed, "Failed"), "fetch");
        assert_eq!(st(&S::Failed, "Terminated"), "transport_error");
        assert_eq!(st(&S::Cancelled, "Cancelled"), "cancelled");
        assert_eq!(st(&S::Pending, "Pending"), "running");
        assert_eq!(st(&S::InProgress, "InProgress"), "running");
        assert_eq!(st(&S::Delayed, "Delayed"), "running");
        assert_eq!(st(&S::Success, "Success"), "fetch");
        assert_eq!(st(&S::from("Exploded"), "Boom"), "transport_error");
    }
}
