//! The one harness of the end-to-end tests and the benchmark: the real RabbitMQ (from `AMQP_URL`),
//! uniquely named queues that are deleted afterwards (on drop too, when a test fails), the in-process
//! LinkedIn sandbox, and the built `job-closer` binary run as a child process the way an operator runs
//! it.
//!
//! Two entry points carry almost every test:
//! - [`Scenario`]: the prologue of a worker test in one builder call — queues (declared or not), a
//!   sandbox, the fast worker settings with the test's overrides, then `spawn_worker`, `settled`,
//!   `closes`/[`Tally`] and `cleanup`.
//! - [`Cli`]: the one way to run the binary — a cleared environment (only `PATH` is kept, so no
//!   setting leaks in from the developer's shell), arguments and settings, optional stdin; either to
//!   its end within a timeout ([`Cli::run`], a [`Run`] with exit code, stdout and stderr) or in the
//!   background with its output in a log file ([`Cli::spawn`], a [`WorkerProcess`]).
//!
//! Rejected: a harness per test file (tests/it/dlq.rs had one), which let the copies drift apart (one
//! redacted the password in its "unreachable" message, one did not; one inherited the caller's
//! environment, one cleared it).
#![allow(dead_code)]

pub mod certs;
pub mod http_proxy;
pub mod markdown;
pub mod otlp_receiver;
pub mod proxy;
pub mod rabbit_nodes;
pub mod rabbitmqctl;

use futures_util::StreamExt;
use job_closer::dead_letter::{Failure, Reason};
use job_closer::tasks::Schedule;
use job_closer::{Sandbox, SandboxConfig};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Connects to the broker the tests run against, or fails the test saying how to point it elsewhere.
pub async fn connect() -> Connection {
    connect_to(&amqp_url()).await
}

/// Connects to the broker at `url`, or fails saying that it is unreachable (without its password).
pub async fn connect_to(url: &str) -> Connection {
    match Connection::connect(url, ConnectionProperties::default()).await {
        Ok(connection) => connection,
        Err(error) => panic!(
            "RabbitMQ is unreachable at AMQP_URL={} ({error}). Start it (rabbitmq-server -detached) or set AMQP_URL.",
            job_closer::redact_url_password(url)
        ),
    }
}

/// Declares a durable classic queue as the worker does (`x-queue-type: classic`), so that the worker's
/// own declaration matches.
pub async fn declare_classic(channel: &Channel, queue: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
}

/// Declares a close queue as the worker does with its defaults: durable, classic, and a single
/// active consumer (`SINGLE_ACTIVE_CONSUMER=true`), so that the worker's own declaration matches.
pub async fn declare_close_queue(channel: &Channel, queue: &str) {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
}

/// The worker's default `TASK_CHECK_DELAY_MS`: its delay queues exist unless a test turns checks off.
pub const DEFAULT_TASK_CHECK_DELAY_MS: u64 = 300_000;

/// A close queue and a dead-letter queue with names no other test uses, plus the task-check queues the
/// worker derives from them; `cleanup` deletes them all.
pub struct Queues {
    pub close: String,
    pub dead: String,
    /// The broker they are on: `AMQP_URL`'s, unless made with [`Queues::on`].
    pub url: String,
    pub connection: Connection,
    pub channel: Channel,
    /// Every TASK_CHECK_DELAY_MS a worker was given, so cleanup finds every delay queue.
    task_delays_ms: Mutex<BTreeSet<u64>>,
    /// Further queues a test made (see [`Queues::also_delete`]).
    extra: Mutex<Vec<String>>,
    /// Exchanges a test made (see [`Queues::outcome_exchange`]).
    exchanges: Mutex<Vec<String>>,
    /// Set by `cleanup`; a test that fails before it still has its queues deleted on drop.
    cleaned: bool,
}

impl Queues {
    pub async fn new(label: &str) -> Queues {
        Queues::on(&amqp_url(), label).await
    }

    /// [`Queues::new`] on the broker at `url` (a node of the test's own).
    pub async fn on(url: &str, label: &str) -> Queues {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let connection = connect_to(url).await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Queues {
            close: format!("test.{label}.{id}"),
            dead: format!("test.{label}.{id}.dead"),
            url: url.to_owned(),
            connection,
            channel,
            task_delays_ms: Mutex::new(BTreeSet::from([DEFAULT_TASK_CHECK_DELAY_MS])),
            extra: Mutex::new(Vec::new()),
            exchanges: Mutex::new(Vec::new()),
            cleaned: false,
        }
    }

    /// [`Queues::new`], both queues declared as the worker declares them.
    pub async fn declared(label: &str) -> Queues {
        let queues = Queues::new(label).await;
        queues.declare().await;
        queues
    }

    /// Deletes `queue` with the others when the test ends.
    pub fn also_delete(&self, queue: &str) {
        self.extra.lock().unwrap().push(queue.to_owned());
    }

    /// A queue of this test's own (`{close}.{label}`), declared now and deleted with the others: a
    /// producer's `reply_to`, or a subscriber of the outcome exchange.
    pub async fn extra_queue(&self, label: &str) -> String {
        let name = format!("{}.{label}", self.close);
        declare_classic(&self.channel, &name).await;
        self.also_delete(&name);
        name
    }

    /// Deletes the exchange `name` with the queues when the test ends.
    pub fn also_delete_exchange(&self, name: &str) {
        self.exchanges.lock().unwrap().push(name.to_owned());
    }

    /// An `OUTCOME_EXCHANGE` of this test's own (`{close}.outcomes`), declared now as the worker
    /// declares it (durable, topic) and deleted with the queues.
    pub async fn outcome_exchange(&self) -> String {
        let name = format!("{}.outcomes", self.close);
        self.channel
            .exchange_declare(
                name.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("declare exchange {name}: {e}"));
        self.also_delete_exchange(&name);
        name
    }

    /// A queue of this test's own bound to `exchange` with `binding_key` (`#` for everything).
    pub async fn subscriber(&self, exchange: &str, label: &str, binding_key: &str) -> String {
        let queue = self.extra_queue(label).await;
        self.channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                binding_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("bind {queue} to {exchange}: {e}"));
        queue
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

    /// Declares both queues as the worker would with its defaults (classic, the close queue with a
    /// single active consumer), so publishes before the worker starts land.
    pub async fn declare(&self) {
        declare_close_queue(&self.channel, &self.close).await;
        declare_classic(&self.channel, &self.dead).await;
    }

    pub async fn publish_raw(&self, queue: &str, body: &[u8]) {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(uuid::Uuid::new_v4().to_string().into());
        assert!(
            publish_confirmed(&self.channel, queue, body, properties).await,
            "broker did not confirm the test message"
        );
    }

    /// Persistent messages into the close queue, confirms awaited a thousand at a time: a backlog
    /// this size would take long one by one.
    pub async fn publish_backlog(&self, bodies: impl IntoIterator<Item = String>) {
        for (i, body) in bodies.into_iter().enumerate() {
            self.channel
                .basic_publish(
                    "".into(),
                    self.close.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            if i % 1000 == 999 {
                self.channel.wait_for_confirms().await.unwrap();
            }
        }
        self.channel.wait_for_confirms().await.unwrap();
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
                routing_key: delivery.routing_key.to_string(),
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
        names.extend(self.extra.lock().unwrap().iter().cloned());
        names
    }

    pub async fn cleanup(mut self) {
        for name in self.all_queues() {
            let _ = self
                .channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let exchanges = self.exchanges.lock().unwrap().clone();
        for name in exchanges {
            let _ = self
                .channel
                .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
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
        let url = self.url.clone();
        let exchanges = self.exchanges.lock().unwrap().clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            runtime.block_on(async {
                let Ok(connection) =
                    Connection::connect(&url, ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for name in &names {
                        let _ = channel
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    for name in &exchanges {
                        let _ = channel
                            .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                }
                let _ = connection.close(200, "".into()).await;
            });
        })
        .join();
    }
}

#[derive(Debug)]
pub struct Drained {
    /// The routing key it was published with.
    pub routing_key: String,
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

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as an outcome message's (panics when it is not one).
    pub fn outcome(&self) -> job_closer::outcome::Outcome {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an outcome ({e}): {}", self.body_text()))
    }

    /// A property that is text (`message_id`, `correlation_id`, ...), as a `String`.
    pub fn property(value: &Option<lapin::types::ShortString>) -> Option<String> {
        value.as_ref().map(|v| v.to_string())
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
    let mut env = fast_worker_env(sandbox);
    set(&mut env, "AMQP_URL", &queues.url);
    set(&mut env, "CLOSE_QUEUE", &queues.close);
    set(&mut env, "DEAD_LETTER_QUEUE", &queues.dead);
    env
}

/// [`worker_env`] without a broker or queues: for a test with brokers of its own (a cluster).
pub fn fast_worker_env(sandbox: &Sandbox) -> Vec<(String, String)> {
    let config = sandbox.config();
    [
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

/// Sets `key` in a child's environment, replacing any value it had.
pub fn set(env: &mut Vec<(String, String)>, key: &str, value: impl AsRef<str>) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value.as_ref().to_owned()));
}

/// Removes `key` from a child's environment.
pub fn without(env: &mut Vec<(String, String)>, key: &str) {
    env.retain(|(k, _)| k != key);
}

/// `job-closer run --help`, with an empty environment (so that defaults show as defaults).
pub fn run_help() -> String {
    cli(&["run", "--help"]).run_blocking().stdout
}

pub fn spawn_worker(env: &[(String, String)]) -> WorkerProcess {
    spawn_command(&["run"], env)
}

pub fn spawn_command(args: &[&str], env: &[(String, String)]) -> WorkerProcess {
    cli(args).envs(env).spawn()
}

/// How long a [`Cli::run`] may take unless the test says otherwise: generous, the machine is shared.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// One invocation of the built binary, set up before it runs: see the module documentation.
pub struct Cli {
    program: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    within: Duration,
}

/// `job-closer <args>` with a cleared environment (only `PATH`), stdin closed.
pub fn cli(args: &[&str]) -> Cli {
    cli_of(binary(), args)
}

/// [`cli`] for another build of the binary (the benchmark's release build).
pub fn cli_of(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Cli {
    Cli {
        program: vec![program.as_ref().to_string_lossy().into_owned()],
        args: args.iter().map(|arg| arg.to_string()).collect(),
        env: Vec::new(),
        stdin: None,
        within: CLI_TIMEOUT,
    }
}

/// A finished command: exit code (None when a signal ended it) and what it printed.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The run, after asserting that it exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "expected exit 0: {self:#?}");
        self
    }

    /// Both streams, stdout first: for what may be said on either.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Each line of stdout, parsed as JSON (fails the test on a line that is not).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

impl Cli {
    pub fn arg(mut self, arg: impl AsRef<str>) -> Cli {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Cli {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Cli {
        set(&mut self.env, key, value);
        self
    }

    pub fn envs(mut self, env: &[(String, String)]) -> Cli {
        for (key, value) in env {
            set(&mut self.env, key, value);
        }
        self
    }

    /// What the command reads on stdin (closed otherwise).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cli {
        self.stdin = Some(bytes.into());
        self
    }

    /// How long [`Cli::run`] waits before it kills the command and fails the test.
    pub fn within(mut self, within: Duration) -> Cli {
        self.within = within;
        self
    }

    /// Runs the binary under another program (e.g. `/usr/bin/time -f ...`).
    pub fn wrapped_in(mut self, program: &[&str]) -> Cli {
        let mut wrapped: Vec<String> = program.iter().map(|part| part.to_string()).collect();
        wrapped.append(&mut self.program);
        self.program = wrapped;
        self
    }

    fn std_command(&self) -> Command {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        command
    }

    /// The command for a test that handles the child itself (kills it mid-way): output piped, killed
    /// when dropped.
    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(self.std_command());
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs the command to its end, without blocking the runtime a test's sandbox answers on.
    pub async fn run(self) -> Run {
        match tokio::task::spawn_blocking(move || self.run_blocking()).await {
            Ok(run) => run,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    /// Runs the command to its end (for tests without a runtime); kills it and fails the test when it
    /// takes longer than its timeout.
    pub fn run_blocking(mut self) -> Run {
        let mut child = self
            .std_command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{:?} does not start: {e}", self.program));
        if let (Some(bytes), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&bytes);
            });
        }
        let stdout = read_to_end(child.stdout.take());
        let stderr = read_to_end(child.stderr.take());
        let deadline = Instant::now() + self.within;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{:?} {:?} did not exit within {:?}; stderr:\n{}",
                    self.program,
                    self.args,
                    self.within,
                    stderr.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code: status.code(),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        }
    }

    /// Starts the command in the background, stdout and stderr into one log file.
    pub fn spawn(self) -> WorkerProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .std_command()
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{:?} does not start: {e}", self.program));
        WorkerProcess {
            child,
            log,
            _dir: dir,
        }
    }
}

/// A pipe read to its end on a thread of its own, so that a chatty child never blocks on a full pipe.
fn read_to_end(
    pipe: Option<impl std::io::Read + Send + 'static>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
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

/// Close requests for `{prefix}-0` .. `{prefix}-{n-1}`, and their ids.
pub fn jobs(prefix: &str, n: usize) -> (Vec<Value>, BTreeSet<String>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    (
        ids.iter().map(|id| job(id)).collect(),
        ids.into_iter().collect(),
    )
}

/// Of `ids`, how many the sandbox closed (distinct), and how many closes it was sent more than once.
pub fn closes(sandbox: &Sandbox, ids: &BTreeSet<String>) -> (usize, u64) {
    let stats = sandbox.stats();
    let closed = ids
        .iter()
        .filter(|id| stats.closed.contains_key(*id))
        .count();
    // A job is closed once; LinkedIn (and the sandbox) refuses a close it receives again with a
    // 409, counted in `refused_closes`: those are the re-sent closes.
    let resent = stats
        .closed
        .values()
        .map(|n| n.saturating_sub(1))
        .sum::<u64>()
        + stats.refused_closes.values().sum::<u64>();
    (closed, resent)
}

/// The figures a test that breaks things reports: published, closed, dead-lettered, re-sent, lost.
pub struct Tally {
    pub published: usize,
    pub closed: usize,
    pub dead: usize,
    pub resent: u64,
}

impl Tally {
    pub fn lost(&self) -> i64 {
        self.published as i64 - (self.closed + self.dead) as i64
    }

    pub fn print(&self, test: &str) {
        println!(
            "{test}: published {}, closed {}, dead-lettered {}, re-sent {}, lost {}",
            self.published,
            self.closed,
            self.dead,
            self.resent,
            self.lost()
        );
    }
}

/// What a worker test sets up before it starts the worker; see [`Scenario::builder`].
pub struct ScenarioBuilder {
    label: String,
    broker: Option<String>,
    sandbox: SandboxConfig,
    declare: bool,
    settings: Vec<(String, String)>,
    task_check_delay_ms: Option<u64>,
    outcome_exchange: bool,
}

impl ScenarioBuilder {
    /// An `OUTCOME_EXCHANGE` of the scenario's own, declared before the worker starts (so that
    /// subscribers can bind to it) and deleted with the queues; see [`Scenario::outcome_exchange`].
    pub fn outcome_exchange(mut self) -> ScenarioBuilder {
        self.outcome_exchange = true;
        self
    }

    /// The sandbox's configuration (the default otherwise).
    pub fn sandbox(mut self, config: SandboxConfig) -> ScenarioBuilder {
        self.sandbox = config;
        self
    }

    /// A sandbox that takes `latency` to answer (otherwise the default sandbox).
    pub fn latency(mut self, latency: Duration) -> ScenarioBuilder {
        self.sandbox.latency = latency;
        self
    }

    /// The queues on the broker at `url` (a node of the test's own) instead of `AMQP_URL`'s; the
    /// worker is pointed at it.
    pub fn broker(mut self, url: &str) -> ScenarioBuilder {
        self.broker = Some(url.to_owned());
        self
    }

    /// Leaves the queues for the test (or the worker) to declare.
    pub fn undeclared(mut self) -> ScenarioBuilder {
        self.declare = false;
        self
    }

    /// A worker setting over [`worker_env`]'s.
    pub fn set(mut self, key: &str, value: impl AsRef<str>) -> ScenarioBuilder {
        set(&mut self.settings, key, value);
        self
    }

    /// `TASK_CHECK_DELAY_MS`, noted so that cleanup finds its delay queues.
    pub fn task_check_delay_ms(mut self, delay_ms: u64) -> ScenarioBuilder {
        self.task_check_delay_ms = Some(delay_ms);
        self
    }

    pub async fn build(self) -> Scenario {
        let url = self.broker.unwrap_or_else(amqp_url);
        let queues = Queues::on(&url, &self.label).await;
        if self.declare {
            queues.declare().await;
        }
        let sandbox = sandbox(self.sandbox).await;
        let mut env = worker_env(&queues, &sandbox);
        for (key, value) in &self.settings {
            set(&mut env, key, value);
        }
        if let Some(delay_ms) = self.task_check_delay_ms {
            let (key, value) = queues.task_check_env(delay_ms);
            set(&mut env, &key, value);
        }
        if self.outcome_exchange {
            let exchange = queues.outcome_exchange().await;
            set(&mut env, "OUTCOME_EXCHANGE", exchange);
        }
        Scenario {
            queues,
            sandbox,
            env,
        }
    }
}

/// `Scenario::builder(label)...await` builds the scenario.
impl std::future::IntoFuture for ScenarioBuilder {
    type Output = Scenario;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Scenario> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.build())
    }
}

/// A worker test's world: its queues, its sandbox and the worker's settings.
pub struct Scenario {
    pub queues: Queues,
    pub sandbox: Sandbox,
    pub env: Vec<(String, String)>,
}

impl Scenario {
    /// Queues `test.<label>.<uuid>` (declared unless told otherwise), a default sandbox, the fast
    /// worker settings; awaiting the builder makes them.
    pub fn builder(label: &str) -> ScenarioBuilder {
        ScenarioBuilder {
            label: label.to_owned(),
            broker: None,
            sandbox: SandboxConfig::default(),
            declare: true,
            settings: Vec::new(),
            task_check_delay_ms: None,
            outcome_exchange: false,
        }
    }

    /// The worker's `OUTCOME_EXCHANGE` (see [`ScenarioBuilder::outcome_exchange`]).
    pub fn outcome_exchange(&self) -> String {
        self.env
            .iter()
            .find(|(key, _)| key == "OUTCOME_EXCHANGE")
            .map(|(_, value)| value.clone())
            .expect("a scenario built with .outcome_exchange()")
    }

    /// The queues and the sandbox, for a test to use by name.
    pub fn parts(&self) -> (&Queues, &Sandbox) {
        (&self.queues, &self.sandbox)
    }

    /// `job-closer run` with the scenario's settings.
    pub fn spawn_worker(&self) -> WorkerProcess {
        spawn_worker(&self.env)
    }

    /// The scenario's settings, pointed at another sandbox (a second LinkedIn for a second worker).
    pub fn env_for(&self, other: &Sandbox) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        for (key, value) in worker_env(&self.queues, other) {
            if key.starts_with("LINKEDIN_") {
                set(&mut env, &key, value);
            }
        }
        env
    }

    /// Waits until the sandbox closed `closed` jobs and `dead` messages are in the dead-letter queue.
    pub async fn settled(&self, closed: usize, dead: u32, within: Duration) {
        wait_settled(&self.queues, &self.sandbox, closed, dead, within).await;
    }

    /// The tally of `ids`, published `published`: closed and re-sent as the sandbox saw them, dead
    /// as the dead-letter queue holds them now.
    pub async fn tally(&self, published: usize, ids: &BTreeSet<String>) -> Tally {
        let (closed, resent) = closes(&self.sandbox, ids);
        Tally {
            published,
            closed,
            dead: self.queues.depth(&self.queues.dead).await as usize,
            resent,
        }
    }

    pub async fn cleanup(self) {
        self.queues.cleanup().await;
    }
}

/// `job-closer <args>` with the settings `env`, to its end: its exit code and all it printed (stdout,
/// then stderr).
pub async fn run_cli(args: &[&str], env: &[(String, String)]) -> (Option<i32>, String) {
    let run = cli(args).envs(env).run().await;
    (run.code, run.output())
}

/// `job-closer <args>` with the settings `env`, to its end.
pub async fn cli_run(args: &[&str], env: &[(String, String)]) -> Run {
    cli(args).envs(env).run().await
}

/// Like [`eventually`], but a timeout shows the end of each worker's log: that is where the reason is.
pub async fn wait_for<F, Fut>(
    workers: &[&WorkerProcess],
    within: Duration,
    what: &str,
    mut condition: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        if Instant::now() > deadline {
            let logs: Vec<String> = workers.iter().map(|worker| log_tail(worker, 200)).collect();
            panic!(
                "timed out after {within:?} waiting for: {what}; worker log(s):\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `lines` lines of a worker's log.
fn log_tail(worker: &WorkerProcess, lines: usize) -> String {
    let log = worker.log_text();
    let tail: Vec<&str> = log.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Publishes `body` to `queue` through a channel in confirm mode, `mandatory`: whether the broker
/// confirmed it.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> bool {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .is_ack()
}

// Dead letters, as the dlq and console tests make them.

/// LinkedIn's message for a close request without a title.
pub const TITLE_MISSING: &str =
    "ERROR :: /title :: field is required but not found and has no default value\n";

/// LinkedIn's 403 for a contract the application may not post for.
pub fn contract_403(contract: u32) -> String {
    format!("Caller is not authorized to access the jobs for contract: urn:li:contract:{contract}")
}

/// A failure after three requests.
pub fn failure(reason: Reason, status: u16, message: &str) -> Failure {
    Failure {
        reason,
        status,
        message: message.to_owned(),
        attempts: 3,
        task_id: None,
    }
}

/// Publishes messages to `queue` on a confirm channel, 512 confirms outstanding at most, and fails
/// the test unless the broker took each one.
pub async fn publish_all(
    channel: &Channel,
    queue: &str,
    messages: Vec<(Vec<u8>, BasicProperties)>,
) {
    let mut pending: VecDeque<PublisherConfirm> = VecDeque::new();
    for (body, properties) in messages {
        if pending.len() == 512 {
            let confirmation = pending.pop_front().unwrap().await.expect("confirm");
            job_closer::check_confirmation(queue, confirmation).expect("confirmed");
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            )
            .await
            .expect("publish");
        pending.push_back(confirm);
    }
    for confirm in pending {
        job_closer::check_confirmation(queue, confirm.await.expect("confirm")).expect("confirmed");
    }
}
