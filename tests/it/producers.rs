//! The producer programs of `docs/producers.md`: the page quotes the files in `docs/producers/`
//! verbatim, and each of them — Python, Node, Java and Go — built with its own toolchain and run as a
//! producer would run it against the real RabbitMQ, publishes a close request that the worker closes:
//! persistent, confirmed, mandatory, with a content type and a message id, and with a body the
//! published schema accepts. The checks are one pair of functions over a [`Producer`], so the four
//! languages are held to the same ones.
//!
//! Where each toolchain comes from (`.ci/run` installs them and sets the variables):
//! - Python: `PRODUCER_PYTHON` (a virtualenv with pika), else `target/ci-python`, else `python3`.
//! - Node: `PRODUCER_NODE` (default `node`) with `NODE_PATH` set to `PRODUCER_NODE_MODULES`, a
//!   `node_modules` directory holding amqplib (default `target/ci-node/node_modules`).
//! - Java: `javac` and `java` on `PATH` (Debian's `default-jdk-headless`) with the class path
//!   `PRODUCER_JAVA_CLASSPATH` (default the jars of Debian's `librabbitmq-client-java` and
//!   `libslf4j-java`: `/usr/share/java/amqp-client.jar:/usr/share/java/slf4j-api.jar`).
//! - Go: `PRODUCER_GO` (default `go`) in GOPATH mode (`GO111MODULE=off`) with `GOPATH` set to
//!   `PRODUCER_GOPATH` (default `/usr/share/gocode`, where Debian's
//!   `golang-github-rabbitmq-amqp091-go-dev` puts amqp091-go).
//!
//! Java is compiled with `javac -Xlint:all -Werror`, Go vetted and built, once per test run, into
//! this test's `CARGO_TARGET_TMPDIR`. A missing toolchain or library fails the test naming what to
//! install: it never passes silently.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

const PYTHON_PRODUCER: &str = "docs/producers/publish_close_request.py";
const NODE_PRODUCER: &str = "docs/producers/publish_close_request.js";
const JAVA_PRODUCER: &str = "docs/producers/PublishCloseRequest.java";
const GO_PRODUCER: &str = "docs/producers/publish_close_request.go";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

/// The fenced code block after each `<!-- verbatim: PATH -->` marker, by path.
fn quoted_programs(page: &str) -> Vec<(String, String)> {
    let mut quoted = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .trim()
            .strip_prefix("<!-- verbatim:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "a code block must follow the marker for {path}, found {fence:?}"
        );
        let mut code = String::new();
        for line in lines.by_ref() {
            if line == "```" {
                break;
            }
            code.push_str(line);
            code.push('\n');
        }
        quoted.push((path.trim().to_owned(), code));
    }
    quoted
}

#[test]
fn the_page_quotes_every_producer_program_verbatim() {
    let page = read("docs/producers.md");
    let quoted = quoted_programs(&page);
    let mut files: Vec<String> = std::fs::read_dir(repo_path("docs/producers"))
        .unwrap()
        .map(|e| {
            format!(
                "docs/producers/{}",
                e.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    files.sort();
    let mut quoted_paths: Vec<String> = quoted.iter().map(|(p, _)| p.clone()).collect();
    quoted_paths.sort();
    assert_eq!(
        quoted_paths, files,
        "docs/producers.md must quote each file in docs/producers/ once"
    );
    for (path, code) in &quoted {
        assert_eq!(
            code,
            &read(path),
            "docs/producers.md's copy of {path} differs from the file: edit the file, then paste it"
        );
    }
    // Python, Node, Java and Go, each setting what the page says a producer must set.
    for (path, must_mention) in [
        (
            PYTHON_PRODUCER,
            &[
                "confirm_delivery",
                "mandatory=True",
                "DeliveryMode.Persistent",
                "content_type",
                "message_id",
            ][..],
        ),
        (
            NODE_PRODUCER,
            &[
                "createConfirmChannel",
                "mandatory: true",
                "persistent: true",
                "contentType",
                "messageId",
            ][..],
        ),
        (
            JAVA_PRODUCER,
            &[
                "confirmSelect",
                "waitForConfirmsOrDie",
                "deliveryMode(2)",
                "contentType",
                "messageId",
                "addReturnListener",
                "basicPublish(\"\", queue, true,",
            ][..],
        ),
        (
            GO_PRODUCER,
            &[
                "Confirm(false)",
                "NotifyPublish",
                "NotifyReturn",
                "queue, true, false",
                "amqp.Persistent",
                "ContentType",
                "MessageId",
            ][..],
        ),
    ] {
        let code = read(path);
        for needle in must_mention {
            assert!(code.contains(needle), "{path} does not use {needle}");
        }
    }
}

/// One producer program, ready to run: the command that runs it (the external id is appended),
/// the environment it needs besides `AMQP_URL` and `CLOSE_QUEUE`, and how its output reads when
/// its client library is missing.
struct Producer {
    /// The language, as the messages name it; its lower case labels the test's queues.
    language: &'static str,
    /// A prefix for the external ids it publishes, so a close in the sandbox names its producer.
    id_prefix: &'static str,
    program: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// A line of stderr meaning "the client library is not installed", and what to do about it.
    missing_library: Option<(&'static str, String)>,
}

impl Producer {
    /// Runs the program as a producer would: its own process, settings from the environment.
    async fn run(&self, queue: &str, external_id: &str) -> Output {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .arg(external_id)
            .env("AMQP_URL", amqp_url())
            .env("CLOSE_QUEUE", queue)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .unwrap_or_else(|_| panic!("the {} producer ran for a minute", self.language))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): tests/it/producers.rs's doc says where the {} \
                     toolchain comes from",
                    self.program, self.language
                )
            });
        if let Some((symptom, fix)) = &self.missing_library {
            assert!(!text(&output.stderr).contains(symptom), "{fix}");
        }
        output
    }
}

/// Runs a toolchain command to its end, and fails the test saying what to install when the tool
/// is missing or the command fails (a program of the page that does not build is a failure).
fn toolchain(command: &mut Command, install: &str) {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown} ({e}): {install}"));
    assert!(
        output.status.success(),
        "{shown} failed:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn env_or(name: &str, fallback: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fallback.to_owned())
}

/// A directory for compiled programs, under this test binary's scratch directory.
fn build_dir(language: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("producers")
        .join(language);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// `PRODUCER_PYTHON`, else the virtualenv `.ci/run` leaves in `target/ci-python` (so the test command of
/// README.md and docs/testing.md works after one CI run), else `python3`.
fn python() -> &'static Producer {
    static PRODUCER: OnceLock<Producer> = OnceLock::new();
    PRODUCER.get_or_init(|| {
        let venv = repo_path("target/ci-python/bin/python");
        let python = std::env::var("PRODUCER_PYTHON").unwrap_or_else(|_| {
            if venv.exists() {
                venv.display().to_string()
            } else {
                "python3".into()
            }
        });
        Producer {
            language: "Python",
            id_prefix: "PY",
            missing_library: Some((
                "No module named 'pika'",
                format!(
                    "pika is not installed for {python}: `pip install pika` (in a virtualenv), or \
                     run .ci/run, which sets PRODUCER_PYTHON to one that has it"
                ),
            )),
            program: python,
            args: vec![repo_path(PYTHON_PRODUCER).display().to_string()],
            env: Vec::new(),
        }
    })
}

/// `PRODUCER_NODE` (default `node`), finding amqplib through `NODE_PATH` in
/// `PRODUCER_NODE_MODULES`, else in the `target/ci-node/node_modules` that `.ci/run` fills.
fn node() -> &'static Producer {
    static PRODUCER: OnceLock<Producer> = OnceLock::new();
    PRODUCER.get_or_init(|| {
        let node = env_or("PRODUCER_NODE", "node");
        toolchain(
            Command::new(&node).arg("--version"),
            "install Node.js (apt-get install nodejs), or set PRODUCER_NODE",
        );
        let modules = std::env::var("PRODUCER_NODE_MODULES").unwrap_or_else(|_| {
            repo_path("target/ci-node/node_modules")
                .display()
                .to_string()
        });
        let install = format!(
            "amqplib is not in {modules}: run .ci/run (it installs the pinned amqplib into \
             target/ci-node with npm), or set PRODUCER_NODE_MODULES to a node_modules directory \
             that has amqplib"
        );
        assert!(Path::new(&modules).join("amqplib").is_dir(), "{install}");
        Producer {
            language: "Node",
            id_prefix: "JS",
            program: node,
            args: vec![repo_path(NODE_PRODUCER).display().to_string()],
            env: vec![("NODE_PATH", modules)],
            missing_library: Some(("Cannot find module 'amqplib'", install)),
        }
    })
}

/// `PublishCloseRequest.java` compiled by `javac` (warnings as errors) against
/// `PRODUCER_JAVA_CLASSPATH`, run by `java` with the same class path.
fn java() -> &'static Producer {
    static PRODUCER: OnceLock<Producer> = OnceLock::new();
    PRODUCER.get_or_init(|| {
        let install_jdk = "install a JDK (apt-get install default-jdk-headless)";
        let classpath = env_or(
            "PRODUCER_JAVA_CLASSPATH",
            "/usr/share/java/amqp-client.jar:/usr/share/java/slf4j-api.jar",
        );
        for jar in classpath.split(':') {
            assert!(
                Path::new(jar).exists(),
                "{jar} (of the Java producer's class path) does not exist: apt-get install \
                 librabbitmq-client-java, or set PRODUCER_JAVA_CLASSPATH to the amqp-client 5.x \
                 and slf4j-api jars"
            );
        }
        let classes = build_dir("java");
        toolchain(
            Command::new("javac")
                .args(["-Xlint:all", "-Werror", "-cp", &classpath, "-d"])
                .arg(&classes)
                .arg(repo_path(JAVA_PRODUCER)),
            install_jdk,
        );
        toolchain(Command::new("java").arg("-version"), install_jdk);
        Producer {
            language: "Java",
            id_prefix: "JAVA",
            program: "java".into(),
            args: vec![
                "-cp".into(),
                format!("{}:{classpath}", classes.display()),
                "PublishCloseRequest".into(),
            ],
            env: Vec::new(),
            missing_library: None,
        }
    })
}

/// `publish_close_request.go` vetted and built by `PRODUCER_GO` in GOPATH mode, against the
/// amqp091-go sources under `PRODUCER_GOPATH`.
fn go() -> &'static Producer {
    static PRODUCER: OnceLock<Producer> = OnceLock::new();
    PRODUCER.get_or_init(|| {
        let go = env_or("PRODUCER_GO", "go");
        let gopath = env_or("PRODUCER_GOPATH", "/usr/share/gocode");
        assert!(
            Path::new(&gopath)
                .join("src/github.com/rabbitmq/amqp091-go")
                .is_dir(),
            "no amqp091-go under {gopath}/src: apt-get install \
             golang-github-rabbitmq-amqp091-go-dev, or set PRODUCER_GOPATH to a GOPATH that has \
             github.com/rabbitmq/amqp091-go"
        );
        let dir = build_dir("go");
        let binary = dir.join("publish_close_request");
        let go_command = |args: &[&str]| {
            let mut command = Command::new(&go);
            command
                .args(args)
                .env("GO111MODULE", "off")
                .env("GOPATH", &gopath)
                .env("GOCACHE", dir.join("cache"));
            command
        };
        let install = "install Go (apt-get install golang-go), or set PRODUCER_GO";
        let source = repo_path(GO_PRODUCER).display().to_string();
        toolchain(&mut go_command(&["vet", &source]), install);
        toolchain(
            go_command(&["build", "-o"]).arg(&binary).arg(&source),
            install,
        );
        Producer {
            language: "Go",
            id_prefix: "GO",
            program: binary.display().to_string(),
            args: Vec::new(),
            env: Vec::new(),
            missing_library: None,
        }
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The producer publishes a close request for `external_id`, and says so.
async fn publish(producer: &Producer, queue: &str, external_id: &str) {
    let output = producer.run(queue, external_id).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "the {} producer failed:\n{}{}",
        producer.language,
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(text(&output.stdout).contains(external_id));
}

/// What the page promises of every producer: its message, seen as it left it, is persistent,
/// JSON with a UUID message id and a body the worker and the schema accept; and with a worker
/// running, the worker closes it and dead-letters nothing.
async fn publishes_what_the_worker_closes(producer: &Producer) {
    let label = format!("producer-{}", producer.language.to_lowercase());
    let scenario = Scenario::builder(&label).await;
    let (queues, sandbox) = scenario.parts();

    // First with no worker, to see the message exactly as the producer left it.
    let inspected = format!("{}-{}", producer.id_prefix, uuid::Uuid::new_v4().simple());
    publish(producer, &queues.close, &inspected).await;
    let drained = queues.drain(&queues.close).await;
    assert_eq!(drained.len(), 1, "one message published");
    let message = &drained[0];
    let properties = &message.properties;
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    let message_id = properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string())
        .expect("a message_id");
    assert!(
        uuid::Uuid::parse_str(&message_id).is_ok(),
        "message_id {message_id} is not a UUID"
    );
    let request = job_closer::close_request::validate(&message.body)
        .unwrap_or_else(|e| panic!("the worker would dead-letter the producer's body: {e}"));
    assert_eq!(request.external_id, inspected);
    let schema: serde_json::Value = serde_json::from_str(job_closer::CLOSE_REQUEST_SCHEMA).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
    assert!(
        jsonschema::draft202012::is_valid(&schema, &body),
        "the published schema refuses the producer's body {body}"
    );

    // Then with the worker running: the close reaches LinkedIn (the sandbox).
    let mut worker = scenario.spawn_worker();
    let closed = format!("{}-{}", producer.id_prefix, uuid::Uuid::new_v4().simple());
    publish(producer, &queues.close, &closed).await;
    eventually(
        Duration::from_secs(30),
        "the worker closed the producer's job",
        || async { sandbox.stats().closed.get(&closed) == Some(&1) },
    )
    .await;
    eventually(Duration::from_secs(10), "the close queue empty", || async {
        queues.depth(&queues.close).await == 0
    })
    .await;
    assert_eq!(queues.depth(&queues.dead).await, 0, "nothing dead-lettered");
    assert_eq!(
        worker.terminate(Duration::from_secs(30)).await.code(),
        Some(0),
        "{}",
        worker.log_text()
    );
    scenario.cleanup().await;
}

/// Mandatory: a queue that does not exist is an error (exit code 1, saying so), not a silently
/// dropped message.
async fn fails_when_no_queue_takes_the_message(producer: &Producer) {
    let missing = format!(
        "test.producer-{}.{}.missing",
        producer.language.to_lowercase(),
        uuid::Uuid::new_v4().simple()
    );
    let unrouted = format!("{}-UNROUTED", producer.id_prefix);
    let output = producer.run(&missing, &unrouted).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "the {} producer publishing to a queue that does not exist must fail:\n{}{}",
        producer.language,
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(
        text(&output.stderr).contains("no queue"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn the_python_producer_publishes_what_the_worker_closes() {
    publishes_what_the_worker_closes(python()).await;
}

#[tokio::test]
async fn the_python_producer_fails_when_no_queue_takes_the_message() {
    fails_when_no_queue_takes_the_message(python()).await;
}

#[tokio::test]
async fn the_node_producer_publishes_what_the_worker_closes() {
    publishes_what_the_worker_closes(node()).await;
}

#[tokio::test]
async fn the_node_producer_fails_when_no_queue_takes_the_message() {
    fails_when_no_queue_takes_the_message(node()).await;
}

#[tokio::test]
async fn the_java_producer_publishes_what_the_worker_closes() {
    publishes_what_the_worker_closes(java()).await;
}

#[tokio::test]
async fn the_java_producer_fails_when_no_queue_takes_the_message() {
    fails_when_no_queue_takes_the_message(java()).await;
}

#[tokio::test]
async fn the_go_producer_publishes_what_the_worker_closes() {
    publishes_what_the_worker_closes(go()).await;
}

#[tokio::test]
async fn the_go_producer_fails_when_no_queue_takes_the_message() {
    fails_when_no_queue_takes_the_message(go()).await;
}
