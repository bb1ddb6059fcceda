//! Shared harness for the end-to-end tests: the real RabbitMQ (from `AMQP_URL`), uniquely named queues
//! that are deleted afterwards, the in-process LinkedIn sandbox, and the built `job-closer` binary run
//! as a child process the way an operator runs it.
#![allow(dead_code)]

pub mod certs;
pub mod http_proxy;
pub mod proxy;
pub mod rabbit_nodes;

use futures_util::StreamExt;
use job_closer::sandbox::{Sandbox, SandboxConfig};
use job_closer::tasks::Schedule;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Connects to the broker the tests run against, or fails the test saying how to point it elsewhere.
pub async fn connect() -> Connection {
    let url = amqp_url();
    match Connection::connect(&url, ConnectionProperties::default()).await {
        Ok(connection) => connection,
        Err(error) => panic!(
            "RabbitMQ is unreachable at AMQP_URL={url} ({error}). Start it (rabbitmq-server -detached) or set AMQP_URL."
        ),
    }
}

/// The worker's default `TASK_CHECK_DELAY_MS`: its delay queues exist unless a test turns checks off.
pub const DEFAULT_TASK_CHECK_DELAY_MS: u64 = 300_000;

/// A close queue and a dead-letter queue with names no other test uses, plus the task-check queues the
/// worker derives from them; `cleanup` deletes them all.
pub struct Queues {
    pub close: String,
    pub dead: String,
    pub connection: Connection,
    pub channel: Channel,
    /// Every TASK_CHECK_DELAY_MS a worker was given, so cleanup finds every delay queue.
    task_delays_ms: Mutex<BTreeSet<u64>>,
    /// Set by `cleanup`; a test that fails before it still has its queues deleted on drop.
    cleaned: bool,
}

impl Queues {
    pub async fn new(label: &str) -> Queues {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let connection = connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Queues {
            close: format!("test.{label}.{id}"),
            dead: format!("test.{label}.{id}.dead"),
            connection,
            channel,
            task_delays_ms: Mutex::new(BTreeSet::from([DEFAULT_TASK_CHECK_DELAY_MS])),
            cleaned: false,
        }
    }

    /// The setting for a worker whose first task check comes `delay_ms` after acceptance (noted for
    /// cleanup).
    pub fn task_check_env(&self, delay_ms: u64) -> (String, String) {
        self.task_delays_ms.lock().unwrap().insert(delay_ms);
        ("TASK_CHECK_DELAY_MS".into(), delay_ms.to_string())
    }

    /// The verification queue and every delay queue of every delay setting used.
    pub fn task_queues(&self) -> Vec<String> {
        let delays = self.task_delays_ms.lock().unwrap().clone();
        let names: BTreeSet<String> = delays
            .into_iter()
            .flat_map(|ms| Schedule::new(&self.close, Duration::from_millis(ms)).queue_names())
            .collect();
        names.into_iter().collect()
    }

    /// Messages ready in the task-check queues, all together.
    pub async fn task_depth(&self) -> u32 {
        let mut total = 0;
        for queue in self.task_queues() {
            total += self.depth(&queue).await;
        }
        total
    }

    /// Whether a queue exists (passive declare).
    pub async fn exists(&self, queue: &str) -> bool {
        let channel = self.connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable().passive(),
                FieldTable::default(),
            )
            .await
            .is_ok();
        if declared {
            let _ = channel.close(200, "".into()).await;
        }
        declared
    }

    /// Declares both queues as the worker would (classic), so publishes before the worker starts land.
    pub async fn declare(&self) {
        for name in [&self.close, &self.dead] {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("classic".into()),
            );
            self.channel
                .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
                .await
                .unwrap();
        }
    }

    pub async fn publish_raw(&self, queue: &str, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(uuid::Uuid::new_v4().to_string().into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "broker did not confirm the test message");
    }

    pub async fn publish_jobs(&self, jobs: &[Value]) {
        for job in jobs {
            self.publish_raw(&self.close, job.to_string().as_bytes())
                .await;
        }
    }

    /// Messages ready in a queue (passive declare; 0 when it does not exist).
    pub async fn depth(&self, queue: &str) -> u32 {
        let channel = self.connection.create_channel().await.unwrap();
        let result = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable().passive(),
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        let _ = channel.close(200, "".into()).await;
        result
    }

    /// Takes every message out of a queue.
    pub async fn drain(&self, queue: &str) -> Vec<Drained> {
        let mut out = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            let delivery = message.delivery;
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            out.push(Drained {
                body: delivery.data.clone(),
                headers: headers_json(delivery.properties.headers()),
                properties: delivery.properties.clone(),
            });
        }
        out
    }

    /// Every queue a test may have caused to exist.
    fn all_queues(&self) -> Vec<String> {
        let mut names = vec![self.close.clone(), self.dead.clone()];
        names.extend(self.task_queues());
        names
    }

    pub async fn cleanup(mut self) {
        for name in self.all_queues() {
            let _ = self
                .channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "".into()).await;
        self.cleaned = true;
    }
}

impl Drop for Queues {
    /// A failed test panics before `cleanup`: delete its queues anyway, on a thread of its own since
    /// the test's runtime is the one unwinding.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let names = self.all_queues();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            runtime.block_on(async {
                let Ok(connection) =
                    Connection::connect(&amqp_url(), ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for name in &names {
                        let _ = channel
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                let _ = connection.close(200, "".into()).await;
            });
        })
        .join();
    }
}

pub struct Drained {
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, AMQPValue>,
    pub properties: BasicProperties,
}

impl Drained {
    pub fn header_str(&self, key: &str) -> Option<String> {
        match self.headers.get(key)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        }
    }

    pub fn header_int(&self, key: &str) -> Option<i64> {
        match self.headers.get(key)? {
            AMQPValue::LongInt(v) => Some(i64::from(*v)),
            AMQPValue::LongLongInt(v) => Some(*v),
            AMQPValue::ShortInt(v) => Some(i64::from(*v)),
            _ => None,
        }
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn external_id(&self) -> Option<String> {
        self.json()?
            .get("externalJobPostingId")?
            .as_str()
            .map(str::to_owned)
    }
}

fn headers_json(headers: &Option<FieldTable>) -> BTreeMap<String, AMQPValue> {
    headers
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A job description of LinkedIn's minimum length (100 to 25,000 characters), so that no test passes
/// only because the sandbox is more lenient than LinkedIn.
pub const DESCRIPTION: &str = "We are hiring a backend engineer to build and run distributed systems. This position has been filled; thank you for applying.";

/// A complete close request for job `id`, as LinkedIn's spec wants every field: an absolute https
/// `companyApplyUrl`, a description of 100+ characters, a short title, `listedAt` in epoch ms.
pub fn job(id: &str) -> Value {
    json!({
        "companyApplyUrl": format!("https://jobs.example.com/{id}"),
        "externalJobPostingId": id,
        "description": DESCRIPTION,
        "title": "Engineer",
        "listedAt": 1_700_000_000_000u64,
        "location": "San Francisco, California",
    })
}

pub fn premium_job(id: &str, contract: &str) -> Value {
    let mut job = job(id);
    job["listingType"] = json!("PREMIUM");
    job["contract"] = json!(contract);
    job
}

pub async fn sandbox(config: SandboxConfig) -> Sandbox {
    Sandbox::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("sandbox starts")
}

/// The built binary, running `run` against the given queues and sandbox.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_job-closer")
}

/// Settings that make tests fast; each test may override any of them.
pub fn worker_env(queues: &Queues, sandbox: &Sandbox) -> Vec<(String, String)> {
    let config = sandbox.config();
    [
        ("AMQP_URL", amqp_url()),
        ("CLOSE_QUEUE", queues.close.clone()),
        ("DEAD_LETTER_QUEUE", queues.dead.clone()),
        ("LINKEDIN_API_URL", sandbox.api_url()),
        ("LINKEDIN_TOKEN_URL", sandbox.token_url()),
        ("LINKEDIN_CLIENT_ID", config.client_id),
        ("LINKEDIN_CLIENT_SECRET", config.client_secret),
        ("BATCH_LINGER_MS", "100".into()),
        ("RETRY_INITIAL_MS", "50".into()),
        ("RETRY_MAX_MS", "400".into()),
        ("RATE_LIMIT_PER_MINUTE", "0".into()),
        ("METRICS_ADDR", "".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `job-closer run --help`, with an empty environment (so that defaults show as defaults).
pub fn run_help() -> String {
    let output = Command::new(binary())
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("job-closer run --help");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn spawn_worker(env: &[(String, String)]) -> WorkerProcess {
    spawn_command(&["run"], env)
}

pub fn spawn_command(args: &[&str], env: &[(String, String)]) -> WorkerProcess {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("job-closer starts");
    WorkerProcess {
        child,
        log,
        _dir: dir,
    }
}

impl WorkerProcess {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGTERM, then the exit status (fails the test if it takes longer than `within`).
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait(within).await
    }

    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "job-closer did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `condition` until it holds, failing the test with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the sandbox has closed every id, the close queue is empty and nothing is unacked.
pub async fn wait_settled(
    queues: &Queues,
    sandbox: &Sandbox,
    closed: usize,
    dead: u32,
    within: Duration,
) {
    eventually(within, "every message closed or dead-lettered", || async {
        let stats = sandbox.stats();
        stats.closed.len() >= closed && queues.depth(&queues.dead).await >= dead
    })
    .await;
}

/// Consumes a queue with a stream consumer for a while (for tests that need a competing consumer).
pub async fn count_stream(channel: &Channel, queue: &str, within: Duration) -> usize {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = 0;
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(delivery)) = consumer.next().await {
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            seen += 1;
        }
    })
    .await;
    seen
}

/// The address the worker's metrics listener bound (METRICS_ADDR=127.0.0.1:0 picks a free port),
/// read from its "Serving /healthz" log line.
pub async fn metrics_base(worker: &WorkerProcess) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = worker.log_text();
        let base = log
            .lines()
            .find(|line| line.contains("Serving /healthz"))
            .and_then(|line| {
                let at = line.find("addr")?;
                line[at..]
                    .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .find(|part| part.contains(':') && part.len() > 8)
                    .map(|addr| format!("http://{addr}"))
            });
        if let Some(base) = base {
            return base;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never said where it serves /metrics:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs a URL: its status and body (status 0 when nothing answered).
pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// One series' value from Prometheus text, e.g. `job_closer_requests_total{outcome="answered"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

pub async fn metrics_of(base: &str) -> String {
    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "/metrics answered {status}");
    text
}

/// The worker's JSON log lines (LOG_FORMAT=json) whose message is `message`.
pub fn log_events(log: &str, message: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == message)
        .collect()
}
