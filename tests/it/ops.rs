//! Operating job-closer, end to end against the real RabbitMQ and the sandbox: `check`, the metrics
//! and health endpoints during a real run and a reconnect, JSON logs, secrets that never reach a log
//! or an error (even at `RUST_LOG=trace`), queue arguments that clash, quorum queues' delivery limit,
//! and two replicas on one queue — classic, quorum, and single active consumer with fail-over.
//!
//! Tests that need their own broker user or must cut one connection use `rabbitmqctl`
//! (`common::rabbitmqctl`), and touch only the users and connections they made.

use crate::common;

use common::rabbitmqctl::{BrokerUser, close_connection_named, unique};
use common::*;
use job_closer::declare_queues;
use job_closer::{AmqpArgs, QueueType};
use job_closer::{Fault, Sandbox, SandboxConfig};
use lapin::options::{BasicGetOptions, BasicNackOptions};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

// --- helpers ---

async fn wait_ready(base: &str) {
    eventually(Duration::from_secs(15), "/readyz 200", || async {
        get(&format!("{base}/readyz")).await.0 == 200
    })
    .await;
}

fn amqp_args(queues: &Queues, queue_type: QueueType, single_active_consumer: bool) -> AmqpArgs {
    AmqpArgs {
        amqp_url: amqp_url().parse().unwrap(),
        files: Default::default(),
        close_queue: queues.close.clone(),
        dead_letter_queue: queues.dead.clone(),
        queue_type,
        single_active_consumer,
        delivery_limit: 20,
    }
}

/// Declares both queues exactly as `run` would with these settings.
async fn declare_like_run(queues: &Queues, args: &AmqpArgs) {
    declare_queues(&queues.connection, args)
        .await
        .expect("the broker accepts the queue arguments");
}

/// A job LinkedIn's checks never see: it fails local validation and is dead-lettered as invalid.
fn invalid_job(id: &str) -> Value {
    let mut job = job(id);
    job.as_object_mut().unwrap().remove("title");
    job
}

fn lines_of(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

// --- check ---

#[tokio::test]
async fn check_passes_when_all_is_well_and_names_the_failing_step_otherwise() {
    let scenario = Scenario::builder("ops-check")
        .sandbox(SandboxConfig {
            client_secret: unique("ClientSecret"),
            ..SandboxConfig::default()
        })
        .await;
    let (queues, sandbox) = scenario.parts();
    queues
        .publish_jobs(&[job("c-1"), job("c-2"), job("c-3")])
        .await;
    let env = worker_env(queues, sandbox);

    let output = cli_run(&["check"], &env).await;
    let stdout = &output.stdout;
    assert_eq!(output.code, Some(0), "{stdout}\n{}", &output.stderr);
    let lines = lines_of(stdout);
    for step in ["config", "broker", "close queue", "dlq", "token"] {
        let line = lines
            .iter()
            .find(|l| l[6..].starts_with(step))
            .unwrap_or_else(|| panic!("no {step} line in\n{stdout}"));
        assert!(line.starts_with("ok "), "{line}");
    }
    assert!(stdout.contains("3 ready"), "{stdout}");
    assert!(stdout.contains("amqp://guest:***@"), "{stdout}");
    assert_eq!(sandbox.stats().tokens_issued, 1);

    // A wrong client secret: the token step fails, the secret is never printed.
    let wrong_secret = unique("WrongSecret");
    let mut wrong = env.clone();
    set(&mut wrong, "LINKEDIN_CLIENT_SECRET", &wrong_secret);
    let output = cli_run(&["check"], &wrong).await;
    let all = format!("{}{}", &output.stdout, &output.stderr);
    assert_eq!(output.code, Some(1), "{all}");
    let token_line = lines_of(&all)
        .into_iter()
        .find(|l| l.starts_with("FAIL  token"))
        .unwrap_or_else(|| panic!("no failing token line in\n{all}"));
    assert!(token_line.contains("401"), "{token_line}");
    assert!(
        all.contains("ok    broker"),
        "the other steps still ran:\n{all}"
    );
    assert!(!all.contains(&wrong_secret) && !all.contains(&sandbox.config().client_secret));

    // A wrong AMQP password: redacted in the verdict and in the error.
    let wrong_password = unique("WrongAmqpPw");
    let mut wrong = env.clone();
    set(
        &mut wrong,
        "AMQP_URL",
        format!("amqp://guest:{wrong_password}@127.0.0.1:5672/%2f"),
    );
    let output = cli_run(&["check"], &wrong).await;
    let all = format!("{}{}", &output.stdout, &output.stderr);
    assert_eq!(output.code, Some(1), "{all}");
    assert!(all.contains("FAIL  broker"), "{all}");
    assert!(all.contains("amqp://guest:***@127.0.0.1"), "{all}");
    assert!(!all.contains(&wrong_password), "{all}");
    assert!(all.contains("skip  close queue"), "{all}");
    assert!(all.contains("ok    token"), "{all}");

    // Queues declared with other arguments: the step names the argument and the setting.
    let mut quorum = env.clone();
    set(&mut quorum, "QUEUE_TYPE", "quorum");
    let output = cli_run(&["check"], &quorum).await;
    let stdout = &output.stdout;
    assert_eq!(output.code, Some(1), "{stdout}");
    let queue_line = lines_of(stdout)
        .into_iter()
        .find(|l| l.starts_with("FAIL  close queue"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(queue_line.contains("inequivalent arg '"), "{queue_line}");
    assert!(queue_line.contains("QUEUE_TYPE"), "{queue_line}");
    assert_eq!(
        queues.depth(&queues.close).await,
        3,
        "check consumed nothing"
    );

    // Missing credentials are a configuration failure: exit 2, and no token is asked for.
    let mut missing = env.clone();
    without(&mut missing, "LINKEDIN_CLIENT_SECRET");
    let output = cli_run(&["check"], &missing).await;
    let stdout = &output.stdout;
    assert_eq!(output.code, Some(2), "{stdout}");
    assert!(stdout.contains("FAIL  config"), "{stdout}");
    assert!(stdout.contains("skip  token"), "{stdout}");
    scenario.cleanup().await;
}

#[tokio::test]
async fn neither_help_nor_a_settings_error_shows_a_secret() {
    let password = unique("AmqpPw");
    let client_secret = unique("ClientSecret");
    let env = vec![
        (
            "AMQP_URL".to_owned(),
            format!("amqp://someone:{password}@127.0.0.1:99999/%2f"),
        ),
        ("LINKEDIN_CLIENT_ID".to_owned(), "id".to_owned()),
        ("LINKEDIN_CLIENT_SECRET".to_owned(), client_secret.clone()),
    ];
    for args in [
        &["run", "--help"][..],
        &["check", "--help"],
        &["run"],
        &["check"],
    ] {
        let output = cli_run(args, &env).await;
        let all = format!("{}{}", &output.stdout, &output.stderr);
        assert!(!all.contains(&password), "{args:?}: {all}");
        assert!(!all.contains(&client_secret), "{args:?}: {all}");
        if !args.contains(&"--help") {
            assert_eq!(output.code, Some(2), "{args:?}: {all}");
            assert!(all.contains("invalid port number"), "{args:?}: {all}");
        }
    }
}

// --- a full run: metrics, JSON logs, secrets ---

#[tokio::test]
async fn a_full_run_moves_the_metrics_and_its_trace_log_holds_no_secret() {
    let scenario = Scenario::builder("ops-run")
        .sandbox(SandboxConfig {
            client_secret: unique("ClientSecret"),
            ..SandboxConfig::default()
        })
        .await;
    let (queues, sandbox) = scenario.parts();
    let mut env = scenario.env.clone();
    let user = BrokerUser::new().await;
    // The secret comes from a file, as a Docker or Kubernetes secret would (trailing newline too).
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("linkedin_client_secret");
    std::fs::write(
        &secret_file,
        format!("{}\n", sandbox.config().client_secret),
    )
    .unwrap();

    without(&mut env, "LINKEDIN_CLIENT_SECRET");
    set(
        &mut env,
        "LINKEDIN_CLIENT_SECRET_FILE",
        secret_file.to_str().unwrap(),
    );
    set(&mut env, "AMQP_URL", user.url());
    set(&mut env, "LOG_FORMAT", "json");
    set(&mut env, "RUST_LOG", "trace");
    set(&mut env, "METRICS_ADDR", "127.0.0.1:0");
    set(&mut env, "BATCH_SIZE", "10");

    // One whole-request failure, so that something is retried.
    sandbox.push_fault(
        Fault::Status {
            status: 500,
            retry_after_secs: None,
            message: Some("Internal Server Error".into()),
        },
        1,
    );
    let mut rejected = job("run-rejected");
    rejected["title"] = json!(42);
    let mut jobs: Vec<Value> = (0..40).map(|i| job(&format!("run-{i}"))).collect();
    jobs.push(invalid_job("run-invalid-1"));
    jobs.push(invalid_job("run-invalid-2"));
    jobs.push(rejected);
    queues.publish_jobs(&jobs).await;

    let mut worker = spawn_worker(&env);
    let base = metrics_base(&worker).await;
    scenario.settled(40, 3, SETTLE).await;
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    // The depth gauges are refreshed every few seconds: wait for the settled view.
    let dead_depth = format!("job_closer_queue_messages{{queue=\"{}\"}}", queues.dead);
    let close_depth = format!("job_closer_queue_messages{{queue=\"{}\"}}", queues.close);
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let text = loop {
        let text = metrics_of(&base).await;
        if metric(&text, &dead_depth) == Some(3.0) && metric(&text, &close_depth) == Some(0.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue depth gauges never showed the settled queues:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let value = |series: &str| {
        metric(&text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"))
    };
    assert_eq!(value("job_closer_messages_consumed_total"), 43.0);
    assert_eq!(value("job_closer_elements_closed_total"), 40.0);
    assert_eq!(
        value(r#"job_closer_elements_dead_lettered_total{reason="invalid",status="422"}"#),
        2.0
    );
    assert_eq!(
        value(r#"job_closer_elements_dead_lettered_total{reason="rejected",status="422"}"#),
        1.0
    );
    assert!(value("job_closer_elements_retried_total") >= 1.0);
    assert!(value(r#"job_closer_requests_total{outcome="answered"}"#) >= 4.0);
    assert_eq!(
        value(r#"job_closer_requests_total{outcome="transient"}"#),
        1.0
    );
    assert_eq!(value("job_closer_token_requests_total"), 1.0);
    assert!(value("job_closer_batch_size_count") >= 5.0);
    assert!(value("job_closer_batch_size_sum") >= 41.0);
    assert!(value("job_closer_request_duration_seconds_count") >= 5.0);
    assert_eq!(value("job_closer_requests_in_flight"), 0.0);
    for family in [
        "job_closer_messages_consumed",
        "job_closer_elements_closed",
        "job_closer_elements_dead_lettered",
        "job_closer_elements_retried",
        "job_closer_requests",
        "job_closer_token_requests",
        "job_closer_batch_size",
        "job_closer_request_duration_seconds",
        "job_closer_requests_in_flight",
        "job_closer_queue_messages",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }

    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let log = worker.log_text();

    // JSON logs: every line is one JSON object.
    let events: Vec<Value> = lines_of(&log)
        .into_iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "TRACE"),
        "RUST_LOG=trace was in force"
    );
    // Every dead letter and every retry names the job, the status and the message.
    let named = |message: &str, id: &str| {
        events
            .iter()
            .find(|e| e["message"] == message && e["externalJobPostingId"] == id)
            .unwrap_or_else(|| {
                let similar: Vec<String> = events
                    .iter()
                    .filter(|e| e.to_string().contains(id))
                    .map(Value::to_string)
                    .collect();
                panic!("no {message:?} event for {id}; events naming it:\n{similar:#?}")
            })
            .clone()
    };
    let invalid = named("Dead-lettered.", "run-invalid-1");
    assert_eq!(invalid["status"], 422);
    assert_eq!(invalid["reason"], "invalid");
    assert!(
        invalid["error_message"]
            .as_str()
            .unwrap()
            .contains("/title :: field is required"),
        "{invalid}"
    );
    let rejected = named("Dead-lettered.", "run-rejected");
    assert_eq!(rejected["status"], 422);
    assert!(
        rejected["error_message"]
            .as_str()
            .unwrap()
            .contains("/title"),
        "LinkedIn's message is logged: {rejected}"
    );
    let retried: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["message"] == "Retrying.")
        .map(|retry| {
            assert_eq!(retry["status"], 500, "{retry}");
            assert_eq!(retry["error_message"], "Internal Server Error", "{retry}");
            retry["externalJobPostingId"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        retried.len() as f64,
        value("job_closer_elements_retried_total"),
        "one line for each retried element"
    );
    // Log shippers keep one value per key: a field must not shadow the event's message.
    for line in lines_of(&log) {
        assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
    }

    // No secret, token or password anywhere, in any form the libraries might print it.
    let password_bytes = format!("{:?}", user.password.as_bytes());
    let password_bytes = password_bytes.trim_matches(['[', ']']);
    let tokens = sandbox.issued_tokens();
    assert_eq!(tokens.len(), 1);
    let mut secrets = vec![
        sandbox.config().client_secret,
        user.password.clone(),
        password_bytes.to_owned(),
    ];
    secrets.extend(tokens);
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret leaked into the log: {secret}"
        );
    }
    assert!(
        log.contains(&format!("amqp://{}:***@127.0.0.1", user.name)),
        "the broker is logged with its password redacted"
    );
    scenario.cleanup().await;
}

#[tokio::test]
async fn readyz_is_503_while_the_worker_reconnects_and_healthz_stays_200() {
    let scenario = Scenario::builder("ops-ready").await;
    let queues = &scenario.queues;
    let mut env = scenario.env.clone();
    let user = BrokerUser::new().await;
    let connection_name = unique("job-closer ops-ready");
    set(&mut env, "AMQP_URL", user.url());
    set(&mut env, "AMQP_CONNECTION_NAME", &connection_name);
    set(&mut env, "METRICS_ADDR", "127.0.0.1:0");
    let mut worker = spawn_worker(&env);
    let base = metrics_base(&worker).await;
    wait_ready(&base).await;
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    // Cut the worker's connection and keep it from coming back until permissions return.
    user.revoke().await;
    assert!(
        close_connection_named(&connection_name).await,
        "the worker's connection is listed under its AMQP_CONNECTION_NAME"
    );
    eventually(Duration::from_secs(10), "/readyz 503", || async {
        get(&format!("{base}/readyz")).await.0 == 503
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        503,
        "still reconnecting"
    );
    assert_eq!(
        get(&format!("{base}/healthz")).await.0,
        200,
        "alive while reconnecting"
    );

    user.grant().await;
    wait_ready(&base).await;
    let text = metrics_of(&base).await;
    assert!(metric(&text, "job_closer_broker_reconnects_total").unwrap() >= 1.0);
    queues.publish_jobs(&[job("ready-1"), job("ready-2")]).await;
    scenario.settled(2, 0, SETTLE).await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let log = worker.log_text();
    assert!(log.contains("reconnecting"), "{log}");
    assert!(
        log.contains(&format!("amqp://{}:***@", user.name)),
        "broker errors name the URL, redacted: {log}"
    );
    assert!(!log.contains('\u{1b}'), "no colour codes in a log file");
    assert!(!log.contains(&user.password), "{log}");
    scenario.cleanup().await;
}

// --- queue arguments ---

/// Starts a worker with `env` on a queue that clashes with it: it exits 1 with one error line,
/// which is returned after the checks every such line passes (the queue, the argument, the way out).
async fn refused_line(env: &[(String, String)], close_queue: &str, argument: &str) -> String {
    let mut worker = spawn_worker(env);
    let status = worker.wait(Duration::from_secs(15)).await;
    let log = worker.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let error = log
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {log}"))
        .to_owned();
    assert!(error.contains(close_queue), "{error}");
    assert!(error.contains(argument), "{error}");
    assert!(error.contains("drain and delete"), "{error}");
    error
}

#[tokio::test]
async fn a_queue_declared_with_other_arguments_is_refused_naming_the_argument_and_the_fix() {
    // Declared as the worker does by default: classic, single active consumer.
    let scenario = Scenario::builder("ops-mismatch").await;
    let queues = &scenario.queues;
    for (name, value, argument, fix) in [
        ("QUEUE_TYPE", "quorum", "inequivalent arg '", "QUEUE_TYPE"),
        (
            "SINGLE_ACTIVE_CONSUMER",
            "false",
            "x-single-active-consumer",
            "SINGLE_ACTIVE_CONSUMER=true",
        ),
    ] {
        let mut env = scenario.env.clone();
        set(&mut env, name, value);
        let error = refused_line(&env, &queues.close, argument).await;
        assert!(error.contains(fix), "{name}={value}: {error}");
    }
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_close_queue_from_before_single_active_consumer_was_the_default_names_both_ways_out() {
    // What a worker of an earlier version declared by default: no x-single-active-consumer.
    let queues = Queues::new("ops-upgrade").await;
    declare_like_run(&queues, &amqp_args(&queues, QueueType::Classic, false)).await;
    let sandbox = sandbox(SandboxConfig::default()).await;
    let env = worker_env(&queues, &sandbox);
    let error = refused_line(&env, &queues.close, "x-single-active-consumer").await;
    assert!(error.contains("SINGLE_ACTIVE_CONSUMER=false"), "{error}");
    // Either way out works: the setting that takes the queue as it is...
    let mut as_it_is = env.clone();
    set(&mut as_it_is, "SINGLE_ACTIVE_CONSUMER", "false");
    queues.publish_jobs(&[job("upgrade-1")]).await;
    let mut worker = spawn_worker(&as_it_is);
    eventually(SETTLE, "closed on the queue as it is", || async {
        sandbox.stats().closed.contains_key("upgrade-1")
    })
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    // ... or the drained queue deleted, and declared anew by a worker with the defaults.
    assert_eq!(queues.depth(&queues.close).await, 0);
    queues
        .channel
        .queue_delete(queues.close.as_str().into(), Default::default())
        .await
        .unwrap();
    let mut worker = spawn_worker(&env);
    eventually(SETTLE, "the queue declared anew", || async {
        queues.exists(&queues.close).await
    })
    .await;
    queues.publish_jobs(&[job("upgrade-2")]).await;
    eventually(SETTLE, "closed on the new queue", || async {
        sandbox.stats().closed.contains_key("upgrade-2")
    })
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let output = cli_run(&["check"], &env).await;
    assert!(
        output.stdout.contains("exists with matching arguments"),
        "{}",
        output.stdout
    );
    queues.cleanup().await;
}

#[tokio::test]
async fn a_quorum_queue_dead_letters_a_message_past_its_delivery_limit() {
    let queues = Queues::new("ops-limit").await;
    let mut args = amqp_args(&queues, QueueType::Quorum, false);
    args.delivery_limit = 2;
    declare_like_run(&queues, &args).await;
    queues
        .publish_raw(&queues.close, b"crashes every consumer")
        .await;
    // Each nack with requeue stands for a consumer that crashed holding the message.
    let mut deliveries = 0;
    while let Some(message) = queues
        .channel
        .basic_get(
            queues.close.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
    {
        deliveries += 1;
        assert!(deliveries <= 5, "the delivery limit did not take effect");
        message
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(Duration::from_secs(5), "the message in the DLQ", || async {
        queues.depth(&queues.dead).await == 1
    })
    .await;
    assert_eq!(
        queues.drain(&queues.dead).await[0].body,
        b"crashes every consumer"
    );
    queues.cleanup().await;
}

// --- replicas ---

struct Replica {
    process: WorkerProcess,
    base: String,
}

impl Replica {
    async fn start(env: &[(String, String)]) -> Replica {
        let process = spawn_worker(env);
        let base = metrics_base(&process).await;
        wait_ready(&base).await;
        Replica { process, base }
    }

    async fn consumed(&self) -> f64 {
        metric(
            &metrics_of(&self.base).await,
            "job_closer_messages_consumed_total",
        )
        .unwrap()
    }
}

/// A replica's settings; `single_active_consumer` `None` leaves it at the worker's default.
fn replica_env(
    queues: &Queues,
    sandbox: &Sandbox,
    queue_type: &str,
    single_active_consumer: Option<bool>,
) -> Vec<(String, String)> {
    let mut env = worker_env(queues, sandbox);
    set(&mut env, "QUEUE_TYPE", queue_type);
    if let Some(single_active_consumer) = single_active_consumer {
        set(
            &mut env,
            "SINGLE_ACTIVE_CONSUMER",
            single_active_consumer.to_string(),
        );
    }
    set(&mut env, "METRICS_ADDR", "127.0.0.1:0");
    set(&mut env, "BATCH_SIZE", "10");
    set(&mut env, "MAX_IN_FLIGHT", "1");
    // Small prefetch, so both replicas get a share instead of the first taking everything.
    set(&mut env, "PREFETCH", "20");
    env
}

/// 280 good jobs and 20 invalid ones, with their ids.
fn replica_jobs(label: &str) -> (Vec<Value>, BTreeSet<String>, BTreeSet<String>) {
    let good: BTreeSet<String> = (0..280).map(|i| format!("{label}-{i}")).collect();
    let invalid: BTreeSet<String> = (0..20).map(|i| format!("{label}-invalid-{i}")).collect();
    let jobs = good
        .iter()
        .map(|id| job(id))
        .chain(invalid.iter().map(|id| invalid_job(id)))
        .collect();
    (jobs, good, invalid)
}

/// Every good job closed at least once and every invalid one dead-lettered at least once: nothing
/// lost, whichever replica handled it.
async fn assert_nothing_lost(
    queues: &Queues,
    sandbox: &Sandbox,
    good: &BTreeSet<String>,
    invalid: &BTreeSet<String>,
) {
    eventually(SETTLE, "every job closed or dead-lettered", || async {
        sandbox.stats().closed.len() >= good.len()
            && queues.depth(&queues.dead).await as usize >= invalid.len()
    })
    .await;
    let closed: BTreeSet<String> = sandbox.stats().closed.keys().cloned().collect();
    assert_eq!(&closed, good);
    let dead: BTreeSet<String> = queues
        .drain(&queues.dead)
        .await
        .iter()
        .filter_map(|d| d.external_id())
        .collect();
    assert_eq!(&dead, invalid);
    assert_eq!(queues.depth(&queues.close).await, 0);
}

async fn two_replicas_share_the_work(queue_type: QueueType, label: &str) {
    let queues = Queues::new(label).await;
    declare_like_run(&queues, &amqp_args(&queues, queue_type, false)).await;
    let sandbox = sandbox(SandboxConfig {
        latency: Duration::from_millis(20),
        ..SandboxConfig::default()
    })
    .await;
    let type_name = match queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    let env = replica_env(&queues, &sandbox, type_name, Some(false));
    let mut first = Replica::start(&env).await;
    let mut second = Replica::start(&env).await;
    let (jobs, good, invalid) = replica_jobs(label);
    queues.publish_jobs(&jobs).await;
    assert_nothing_lost(&queues, &sandbox, &good, &invalid).await;
    let (a, b) = (first.consumed().await, second.consumed().await);
    assert!(a > 0.0 && b > 0.0, "both replicas worked: {a} and {b}");
    assert_eq!(a + b, 300.0, "each message consumed once");
    for replica in [&mut first, &mut second] {
        assert_eq!(
            replica
                .process
                .terminate(Duration::from_secs(20))
                .await
                .code(),
            Some(0)
        );
    }
    assert_eq!(sandbox.stats().token_requests, 2, "one token per replica");
    // The queues the replicas declared are exactly what `check` expects with the same settings.
    let output = cli_run(&["check"], &env).await;
    let stdout = &output.stdout;
    assert_eq!(output.code, Some(0), "{stdout}");
    assert!(
        stdout.contains("exists with matching arguments; 0 ready"),
        "{stdout}"
    );
    queues.cleanup().await;
}

#[tokio::test]
async fn two_replicas_on_a_classic_queue_lose_nothing() {
    two_replicas_share_the_work(QueueType::Classic, "ops-classic").await;
}

#[tokio::test]
async fn two_replicas_on_a_quorum_queue_lose_nothing() {
    two_replicas_share_the_work(QueueType::Quorum, "ops-quorum").await;
}

#[tokio::test]
async fn with_the_defaults_one_replica_consumes_and_the_standby_takes_over_when_it_is_killed() {
    let label = "ops-sac";
    // The replicas declare the queues themselves, with the defaults: a single active consumer.
    let queues = Queues::new(label).await;
    // 28 requests of 10, one at a time: at 200 ms each the active replica is still mid-way (about
    // 4 s of work left) when the test has seen 60 closes, even on a loaded machine.
    let sandbox = sandbox(SandboxConfig {
        latency: Duration::from_millis(200),
        ..SandboxConfig::default()
    })
    .await;
    let mut env = replica_env(&queues, &sandbox, "classic", None);
    without(&mut env, "QUEUE_TYPE");
    let mut active = Replica::start(&env).await;
    let mut standby = Replica::start(&env).await;
    let (jobs, good, invalid) = replica_jobs(label);
    queues.publish_jobs(&jobs).await;

    eventually(SETTLE, "the active replica under way", || async {
        sandbox.stats().closed.len() >= 60
    })
    .await;
    assert!(active.consumed().await > 0.0);
    assert_eq!(
        standby.consumed().await,
        0.0,
        "the standby receives nothing"
    );
    assert_eq!(
        sandbox.stats().token_requests,
        1,
        "one token for the two replicas: the standby has not asked LinkedIn for anything"
    );
    assert!(
        sandbox.stats().closed.len() < good.len(),
        "the active replica was killed mid-way"
    );
    active.process.signal(nix::sys::signal::Signal::SIGKILL);
    active.process.wait(Duration::from_secs(5)).await;
    let requests_before_takeover = sandbox.stats().requests;

    assert_nothing_lost(&queues, &sandbox, &good, &invalid).await;
    assert!(standby.consumed().await > 0.0, "the standby took over");
    // What the killed replica held comes back redelivered and goes one element per request (at
    // most a prefetch of 20); the rest goes in full batches of 10, also while those singles still
    // take the one request slot, instead of staying as small as the acks that made room for it.
    let remaining = good.len() - 60;
    let takeover_requests = sandbox.stats().requests - requests_before_takeover;
    assert!(
        takeover_requests <= 20 + remaining.div_ceil(10) as u64 + 5,
        "the standby sent {takeover_requests} requests for at most {remaining} closes"
    );
    assert_eq!(
        standby
            .process
            .terminate(Duration::from_secs(20))
            .await
            .code(),
        Some(0)
    );
    queues.cleanup().await;
}

#[tokio::test]
async fn a_taken_metrics_port_does_not_stop_the_worker() {
    // Two replicas on one host with the default METRICS_ADDR: the second still closes jobs.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let queues = common::Queues::new("portclash").await;
    queues.declare().await;
    let sandbox = common::sandbox(job_closer::SandboxConfig::default()).await;
    queues.publish_jobs(&[common::job("clash-1")]).await;
    let mut env = common::worker_env(&queues, &sandbox);
    env.retain(|(k, _)| k != "METRICS_ADDR");
    env.push(("METRICS_ADDR".into(), addr));
    let mut worker = common::spawn_worker(&env);
    common::eventually(
        Duration::from_secs(30),
        "closed despite the taken port",
        || async { sandbox.stats().closed.contains_key("clash-1") },
    )
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    assert!(
        worker.log_text().contains("Cannot listen on METRICS_ADDR"),
        "{}",
        worker.log_text()
    );
    drop(taken);
    queues.cleanup().await;
}
