//! The producer programs of `docs/producers.md`: the page quotes the files in `docs/producers/`
//! verbatim, and the Python one, run as a producer would run it against the real RabbitMQ, publishes
//! a close request that the worker closes — persistent, confirmed, mandatory, with a content type and
//! a message id, and with a body the published schema accepts.
//!
//! The Python interpreter is `PRODUCER_PYTHON` (`.ci/run` points it at a virtualenv with pika), or
//! `python3`. Without pika the test fails saying how to install it: it never passes silently.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const PYTHON_PRODUCER: &str = "docs/producers/publish_close_request.py";

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
            "docs/producers/publish_close_request.py",
            &[
                "confirm_delivery",
                "mandatory=True",
                "DeliveryMode.Persistent",
                "content_type",
                "message_id",
            ][..],
        ),
        (
            "docs/producers/publish_close_request.js",
            &[
                "createConfirmChannel",
                "mandatory: true",
                "persistent: true",
                "contentType",
                "messageId",
            ][..],
        ),
        (
            "docs/producers/PublishCloseRequest.java",
            &[
                "confirmSelect",
                "waitForConfirmsOrDie",
                "deliveryMode(2)",
                "contentType",
                "messageId",
                "addReturnListener",
            ][..],
        ),
        (
            "docs/producers/publish_close_request.go",
            &[
                "Confirm(false)",
                "NotifyReturn",
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

/// `PRODUCER_PYTHON`, else the virtualenv `.ci/run` leaves in `target/ci-python` (so the README's
/// test command works after one CI run), else `python3`.
fn python() -> String {
    if let Ok(python) = std::env::var("PRODUCER_PYTHON") {
        return python;
    }
    let venv = repo_path("target/ci-python/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".into()
}

/// Runs the Python producer as a producer would: its own process, settings from the environment.
async fn run_python_producer(queue: &str, external_id: &str) -> Output {
    let output = tokio::process::Command::new(python())
        .arg(repo_path(PYTHON_PRODUCER))
        .arg(external_id)
        .env("AMQP_URL", amqp_url())
        .env("CLOSE_QUEUE", queue)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); set PRODUCER_PYTHON", python()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'pika'"),
        "pika is not installed for {}: `pip install pika` (in a virtualenv), or run .ci/run, which \
         sets PRODUCER_PYTHON to one that has it",
        python()
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The Python producer publishes a close request for `external_id`, and says so.
async fn publish_with_python(queue: &str, external_id: &str) {
    let output = run_python_producer(queue, external_id).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "the producer failed:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(text(&output.stdout).contains(external_id));
}

#[tokio::test]
async fn the_python_producer_publishes_what_the_worker_closes() {
    let scenario = Scenario::builder("producer-python").await;
    let (queues, sandbox) = scenario.parts();

    // First with no worker, to see the message exactly as the producer left it.
    let inspected = format!("PY-{}", uuid::Uuid::new_v4().simple());
    publish_with_python(&queues.close, &inspected).await;
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
    let closed = format!("PY-{}", uuid::Uuid::new_v4().simple());
    publish_with_python(&queues.close, &closed).await;
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

#[tokio::test]
async fn the_python_producer_fails_when_no_queue_takes_the_message() {
    // Mandatory: a queue that does not exist is an error, not a silently dropped message.
    let missing = format!(
        "test.producer-python.{}.missing",
        uuid::Uuid::new_v4().simple()
    );
    let output = run_python_producer(&missing, "PY-UNROUTED").await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "publishing to a queue that does not exist must fail:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(
        text(&output.stderr).contains("no queue"),
        "{}",
        text(&output.stderr)
    );
}
