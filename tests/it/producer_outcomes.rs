//! The Python programs of `docs/producers.md` that hear how a close ended, run as a producer would
//! run them against the real RabbitMQ and the worker: `close_and_wait.py` publishes with `reply_to`
//! and waits for its outcome (exit 0 when closed, 3 when dead-lettered), `consume_outcomes.py`
//! follows the outcome exchange from a queue of its own. (`tests/it/producers.rs` checks that the page
//! quotes them verbatim, with every other program of `docs/producers/`.)
//!
//! The interpreter is `PRODUCER_PYTHON` (`.ci/run` points it at a virtualenv with pika), else the
//! virtualenv `.ci/run` leaves in `target/ci-python`, else `python3`. Without pika the tests fail
//! saying how to install it: they never pass silently.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const PYTHON_WAITING_PRODUCER: &str = "docs/producers/close_and_wait.py";
const PYTHON_OUTCOME_CONSUMER: &str = "docs/producers/consume_outcomes.py";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One of the programs, its own process, with `AMQP_URL` and `env`; to its end.
async fn run_python(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = python_command(program, args, env)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); set PRODUCER_PYTHON", python()));
    assert_has_pika(&output);
    output
}

fn python_command(program: &str, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python());
    command
        .arg(repo_path(program))
        .args(args)
        .env("AMQP_URL", amqp_url())
        .envs(env.iter().copied())
        .kill_on_drop(true);
    command
}

fn assert_has_pika(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'pika'"),
        "pika is not installed for {}: `pip install pika` (in a virtualenv), or run .ci/run, which \
         sets PRODUCER_PYTHON to one that has it",
        python()
    );
}

#[test]
fn the_programs_do_what_the_page_says_a_listener_must_do() {
    for (path, must_mention) in [
        (
            PYTHON_WAITING_PRODUCER,
            &[
                "confirm_delivery",
                "mandatory=True",
                "DeliveryMode.Persistent",
                "exclusive=True",
                "reply_to=",
                "correlation_id=",
            ][..],
        ),
        (
            PYTHON_OUTCOME_CONSUMER,
            &[
                "exchange_type=\"topic\"",
                "durable=True",
                "queue_bind",
                "basic_ack",
                "message_id",
            ][..],
        ),
    ] {
        let code = std::fs::read_to_string(repo_path(path)).unwrap();
        for needle in must_mention {
            assert!(code.contains(needle), "{path} does not use {needle}");
        }
    }
}

#[tokio::test]
async fn the_python_producer_that_waits_hears_how_its_close_ended() {
    let scenario = Scenario::builder("producer-wait")
        .task_check_delay_ms(300)
        .await;
    let (queues, sandbox) = scenario.parts();
    let mut worker = scenario.spawn_worker();
    let env = [
        ("CLOSE_QUEUE", queues.close.as_str()),
        ("TIMEOUT_SECONDS", "60"),
    ];

    // Closed, verified: the outcome names the job on LinkedIn; exit 0.
    let closed = format!("PYW-{}", uuid::Uuid::new_v4().simple());
    let output = run_python(PYTHON_WAITING_PRODUCER, &[&closed], &env).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not an outcome ({e}): {}", text(&output.stdout)));
    assert_eq!(outcome["externalJobPostingId"], closed.as_str());
    assert_eq!(outcome["outcome"], "closed");
    assert_eq!(outcome["verified"], true);
    assert!(
        outcome["jobPosting"]
            .as_str()
            .is_some_and(|urn| urn.starts_with("urn:li:jobPosting:")),
        "{outcome}"
    );

    // LinkedIn refuses it: dead-lettered, with LinkedIn's words; exit 3.
    let message = "Caller is not authorized to access the jobs for contract: urn:li:contract:9";
    sandbox.push_fault(job_closer::Fault::linkedin(403, message), 1);
    let refused = format!("PYW-{}", uuid::Uuid::new_v4().simple());
    let output = run_python(PYTHON_WAITING_PRODUCER, &[&refused], &env).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["outcome"], "dead-lettered");
    assert_eq!(outcome["reason"], "rejected");
    assert_eq!(outcome["message"], message);
    assert_eq!(queues.depth(&queues.dead).await, 1);
    assert_eq!(
        worker.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    scenario.cleanup().await;
}

#[tokio::test]
async fn the_python_consumer_follows_every_outcome_on_the_exchange() {
    let scenario = Scenario::builder("producer-outcomes")
        .set("TASK_CHECK", "off")
        .outcome_exchange()
        .await;
    let exchange = scenario.outcome_exchange();
    let (queues, sandbox) = scenario.parts();
    let queue = format!("{}.ats", queues.close);
    queues.also_delete(&queue);
    let env = [
        ("OUTCOME_EXCHANGE", exchange.as_str()),
        ("OUTCOME_QUEUE", queue.as_str()),
        ("OUTCOME_COUNT", "3"),
    ];
    let consumer = python_command(PYTHON_OUTCOME_CONSUMER, &[], &env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); set PRODUCER_PYTHON", python()));
    // It consumes once it has declared and bound its queue: only then can no outcome miss it.
    eventually(
        Duration::from_secs(30),
        "the consumer on its queue",
        || async { consumers_of(queues, &queue).await > 0 },
    )
    .await;

    sandbox.mark_absent(&["PYC-gone"]);
    queues
        .publish_jobs(&[job("PYC-1"), job("PYC-2"), job("PYC-gone")])
        .await;
    let mut worker = scenario.spawn_worker();
    let output = tokio::time::timeout(Duration::from_secs(60), consumer.wait_with_output())
        .await
        .expect("the consumer heard three outcomes within a minute")
        .unwrap();
    assert_has_pika(&output);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines: std::collections::BTreeSet<String> =
        text(&output.stdout).lines().map(str::to_owned).collect();
    for expected in [
        "PYC-1  closed  ",
        "PYC-2  closed  ",
        "PYC-gone  already-closed  ",
    ] {
        assert!(
            lines.iter().any(|line| line.starts_with(expected)),
            "no line {expected:?} in {lines:?}"
        );
    }
    assert_eq!(
        worker.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    scenario.cleanup().await;
}

/// Consumers of a queue (passive declare; 0 when it does not exist).
async fn consumers_of(queues: &Queues, queue: &str) -> u32 {
    let channel = queues.connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .map(|q| q.consumer_count())
        .unwrap_or(0);
    let _ = channel.close(200, "".into()).await;
    declared
}
