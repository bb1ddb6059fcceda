//! End to end: the built `job-closer run` against the real RabbitMQ and the sandbox — the happy path,
//! each documented LinkedIn error, poison in a good batch, duplicates and contracts, token expiry under
//! concurrency, SIGTERM, and the dead-letter headers.

use crate::common;

use common::*;
use job_closer::{Fault, SandboxConfig};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn closes_every_job_in_full_batches() {
    let scenario = Scenario::builder("happy").await;
    let (queues, sandbox) = scenario.parts();
    let jobs: Vec<_> = (0..250).map(|i| job(&format!("happy-{i}"))).collect();
    queues.publish_jobs(&jobs).await;

    let mut worker = scenario.spawn_worker();
    scenario.settled(250, 0, SETTLE).await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let stats = sandbox.stats();
    assert_eq!(stats.closed.len(), 250);
    assert!(
        stats.closed.values().all(|n| *n == 1),
        "each job closed once"
    );
    assert!(stats.request_sizes.iter().all(|n| *n <= 100));
    assert!(
        stats.request_sizes.iter().filter(|n| **n == 100).count() >= 2,
        "{:?}",
        stats.request_sizes
    );
    assert_eq!(stats.token_requests, 1, "one shared token");
    assert_eq!(queues.depth(&queues.close).await, 0);
    assert_eq!(queues.depth(&queues.dead).await, 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn documented_errors_are_dead_lettered_with_linkedins_message() {
    let scenario = Scenario::builder("errors")
        .sandbox(SandboxConfig {
            allowed_contracts: Some(vec!["urn:li:contract:1".into()]),
            ..SandboxConfig::default()
        })
        .await;
    let (queues, sandbox) = scenario.parts();
    let mut wrong_type = job("err-title-number");
    wrong_type["title"] = json!(42);
    let mut missing = job("err-missing");
    missing.as_object_mut().unwrap().remove("title");
    let mut create = job("err-create");
    create["jobPostingOperationType"] = json!("CREATE");
    let mut numeric_id = job("x");
    numeric_id["externalJobPostingId"] = json!(12345);
    let published = vec![
        job("ok-1"),
        wrong_type,
        premium_job("ok-premium", "urn:li:contract:1"),
        premium_job("err-contract-a", "urn:li:contract:2"),
        premium_job("err-contract-b", "urn:li:contract:2"),
        missing,
        create,
        numeric_id,
        job("ok-2"),
    ];
    queues.publish_jobs(&published).await;
    queues.publish_raw(&queues.close, b"\xff not json").await;

    let mut worker = scenario.spawn_worker();
    scenario.settled(3, 7, SETTLE).await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let closed: BTreeSet<_> = sandbox.stats().closed.keys().cloned().collect();
    assert_eq!(
        closed,
        ["ok-1", "ok-2", "ok-premium"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let dead = queues.drain(&queues.dead).await;
    assert_eq!(dead.len(), 7);
    let by_id = |id: &str| {
        dead.iter()
            .find(|d| d.external_id().as_deref() == Some(id))
            .unwrap()
    };

    let title = by_id("err-title-number");
    assert_eq!(title.header_int("x-error-status"), Some(422));
    assert_eq!(
        title.header_str("x-error-reason").as_deref(),
        Some("rejected")
    );
    assert!(
        title
            .header_str("x-error-message")
            .unwrap()
            .starts_with("ERROR :: /title ::")
    );

    for id in ["err-contract-a", "err-contract-b"] {
        let contract = by_id(id);
        assert_eq!(contract.header_int("x-error-status"), Some(403));
        assert_eq!(
            contract.header_str("x-error-message").as_deref(),
            Some("Caller is not authorized to access the jobs for contract: urn:li:contract:2")
        );
    }

    let missing = by_id("err-missing");
    assert_eq!(
        missing.header_str("x-error-reason").as_deref(),
        Some("invalid")
    );
    assert_eq!(missing.header_int("x-error-status"), Some(422));
    assert_eq!(
        missing.header_str("x-error-message").as_deref(),
        Some("ERROR :: /title :: field is required but not found and has no default value")
    );
    assert_eq!(missing.header_int("x-attempts"), Some(0));
    assert_eq!(
        by_id("err-create").header_str("x-error-reason").as_deref(),
        Some("invalid")
    );

    // Poison that LinkedIn would answer with a 500 for the whole request never reaches it.
    let poison = dead
        .iter()
        .find(|d| {
            d.json()
                .is_some_and(|v| v["externalJobPostingId"] == json!(12345))
        })
        .unwrap();
    assert_eq!(
        poison.header_str("x-error-reason").as_deref(),
        Some("invalid")
    );
    assert!(!sandbox.stats().responses_by_status.contains_key(&500));

    let garbage = dead.iter().find(|d| d.body.starts_with(b"\xff")).unwrap();
    assert_eq!(garbage.body, b"\xff not json", "body kept byte for byte");
    assert!(
        garbage
            .header_str("x-error-message")
            .unwrap()
            .contains("UTF-8")
    );

    for letter in &dead {
        assert_eq!(
            letter.header_str("x-original-queue").as_deref(),
            Some(queues.close.as_str())
        );
        let at = letter.header_str("x-dead-lettered-at").unwrap();
        assert!(
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{at}"
        );
        assert!(
            letter.properties.message_id().is_some(),
            "original properties kept"
        );
    }
    scenario.cleanup().await;
}

#[tokio::test]
async fn dead_letters_keep_the_body_and_properties_byte_for_byte() {
    let scenario = Scenario::builder("bytes").await;
    let queues = &scenario.queues;
    // Odd spacing and key order must survive: the dead letter is the original, not a re-serialisation.
    let body = br#"  { "title" : 7, "externalJobPostingId":"bytes-1","companyApplyUrl":"https://jobs.example.com/bytes-1","description":"We are hiring a backend engineer to build and run distributed systems. This position has been filled; thank you for applying.","listedAt":1700000000000,"location":"Berlin" }  "#;
    queues.publish_raw(&queues.close, body).await;
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "dead letter", || async {
        queues.depth(&queues.dead).await == 1
    })
    .await;
    worker.terminate(Duration::from_secs(20)).await;
    let dead = queues.drain(&queues.dead).await;
    assert_eq!(dead[0].body, body.to_vec());
    assert_eq!(dead[0].header_int("x-attempts"), Some(1));
    assert_eq!(dead[0].properties.delivery_mode(), &Some(2));
    scenario.cleanup().await;
}

#[tokio::test]
async fn duplicates_and_contracts_never_share_a_request() {
    let scenario = Scenario::builder("dups").await;
    let (queues, sandbox) = scenario.parts();
    // The sandbox answers 400 to a request with duplicate ids, like LinkedIn; none may happen.
    let mut jobs = Vec::new();
    for i in 0..30 {
        jobs.push(job(&format!("dup-{}", i % 10)));
        jobs.push(premium_job(&format!("c1-{i}"), "urn:li:contract:1"));
        jobs.push(premium_job(&format!("c2-{i}"), "urn:li:contract:2"));
    }
    queues.publish_jobs(&jobs).await;
    let mut worker = scenario.spawn_worker();
    // Each dup-N is closed three times: LinkedIn closes it once and answers the other two with a
    // 409 "already closed", which the worker settles as `already-closed` (or never sends at all,
    // knowing the job was closed a moment ago) — never as a dead letter.
    eventually(
        SETTLE,
        "70 jobs closed and 20 re-closes settled",
        || async {
            sandbox.stats().closed.len() == 70
                && worker.log_text().matches("Already closed.").count() == 20
        },
    )
    .await;
    worker.terminate(Duration::from_secs(20)).await;
    let stats = sandbox.stats();
    assert_eq!(stats.responses_by_status.get(&400), None, "{stats:?}");
    assert_eq!(stats.closed.get("dup-3"), Some(&1), "{stats:?}");
    assert!(
        stats.closed.values().all(|&closes| closes == 1),
        "{stats:?}"
    );
    assert_eq!(queues.depth(&queues.dead).await, 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_however_many_requests_are_in_flight() {
    let scenario = Scenario::builder("token")
        .latency(Duration::from_millis(300))
        .set("BATCH_SIZE", "10")
        .set("MAX_IN_FLIGHT", "8")
        .await;
    let (queues, sandbox) = scenario.parts();
    let jobs: Vec<_> = (0..400).map(|i| job(&format!("tok-{i}"))).collect();
    queues.publish_jobs(&jobs).await;
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "several requests in flight", || async {
        sandbox.stats().max_concurrent_requests >= 4
    })
    .await;
    sandbox.expire_tokens();
    scenario.settled(400, 0, SETTLE).await;
    worker.terminate(Duration::from_secs(20)).await;
    let stats = sandbox.stats();
    assert_eq!(
        stats.token_requests, 2,
        "one token, then exactly one renewal"
    );
    assert!(stats.responses_by_status.get(&401).copied().unwrap_or(0) >= 1);
    assert_eq!(
        queues.depth(&queues.dead).await,
        0,
        "a 401 never dead-letters"
    );
    scenario.cleanup().await;
}

#[tokio::test]
async fn sigterm_settles_everything_in_hand_and_exits_zero() {
    let scenario = Scenario::builder("sigterm")
        .latency(Duration::from_millis(400))
        .set("BATCH_SIZE", "20")
        .await;
    let (queues, sandbox) = scenario.parts();
    let jobs: Vec<_> = (0..600).map(|i| job(&format!("term-{i}"))).collect();
    queues.publish_jobs(&jobs).await;
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "work under way", || async {
        sandbox.stats().requests >= 2
    })
    .await;
    let status = worker.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log_text());

    let closed = sandbox.stats().closed.len() as u32;
    let waiting = queues.depth(&queues.close).await;
    let dead = queues.depth(&queues.dead).await;
    println!("published 600, closed {closed}, back in queue {waiting}, dead-lettered {dead}");
    assert!(closed > 0);
    assert_eq!(dead, 0);
    // Every request is either closed or back in the queue; a closed one may also be back only if its
    // ack was lost, which a clean shutdown must not do.
    assert_eq!(
        closed + waiting,
        600,
        "lost = {}",
        600 - (closed + waiting) as i64
    );
    scenario.cleanup().await;
}

#[tokio::test]
async fn whole_request_failures_are_retried_then_given_up_on() {
    let scenario = Scenario::builder("exhaust")
        .set("RETRY_MAX_ELAPSED_MS", "1500")
        .await;
    let (queues, sandbox) = scenario.parts();
    sandbox.set_outage(Some(Fault::Status {
        status: 503,
        retry_after_secs: None,
        message: Some("Service Unavailable".into()),
    }));
    queues
        .publish_jobs(&[job("exhaust-1"), job("exhaust-2")])
        .await;
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "both dead-lettered", || async {
        queues.depth(&queues.dead).await == 2
    })
    .await;
    worker.terminate(Duration::from_secs(20)).await;
    let dead = queues.drain(&queues.dead).await;
    for letter in &dead {
        assert_eq!(
            letter.header_str("x-error-reason").as_deref(),
            Some("retries-exhausted")
        );
        assert_eq!(letter.header_int("x-error-status"), Some(503));
        assert_eq!(
            letter.header_str("x-error-message").as_deref(),
            Some("Service Unavailable")
        );
        assert!(letter.header_int("x-attempts").unwrap() >= 2);
    }
    scenario.cleanup().await;
}

#[tokio::test]
async fn transient_failures_that_recover_lose_nothing() {
    let scenario = Scenario::builder("recover").await;
    let (queues, sandbox) = scenario.parts();
    sandbox.push_fault(
        Fault::Status {
            status: 500,
            retry_after_secs: None,
            message: None,
        },
        3,
    );
    sandbox.push_fault(Fault::WrongCount200, 1);
    sandbox.push_fault(Fault::Garbage200, 1);
    sandbox.push_fault(
        Fault::Status {
            status: 429,
            retry_after_secs: Some(1),
            message: None,
        },
        1,
    );
    let jobs: Vec<_> = (0..50).map(|i| job(&format!("rec-{i}"))).collect();
    queues.publish_jobs(&jobs).await;
    let mut worker = scenario.spawn_worker();
    scenario.settled(50, 0, SETTLE).await;
    worker.terminate(Duration::from_secs(20)).await;
    assert_eq!(queues.depth(&queues.dead).await, 0);
    let log = worker.log_text();
    assert!(log.contains("Retrying."), "{log}");
    assert!(
        log.contains("rec-0"),
        "retries are logged with the external ids"
    );
    scenario.cleanup().await;
}

#[tokio::test]
async fn bad_settings_are_refused_with_a_clear_error() {
    for (name, value, expect) in [
        ("BATCH_SIZE", "101", "101"),
        ("BATCH_SIZE", "0", "0"),
        ("AMQP_URL", "http://nope", "amqp"),
    ] {
        let output = cli(&["run"])
            .env(name, value)
            .env("LINKEDIN_CLIENT_ID", "x")
            .env("LINKEDIN_CLIENT_SECRET", "y")
            .run()
            .await;
        assert_eq!(output.code, Some(2), "{name}={value}");
        let stderr = &output.stderr;
        assert!(stderr.contains(expect), "{stderr}");
    }
    // The environment is cleared: neither LINKEDIN_CLIENT_ID nor LINKEDIN_CLIENT_SECRET is set.
    let output = cli(&["run"]).run().await;
    assert_eq!(output.code, Some(2));
    assert!(output.stderr.contains("LINKEDIN_CLIENT_ID"));
}

#[tokio::test]
async fn the_versioned_rest_api_and_string_lifetimes_work() {
    let scenario = Scenario::builder("rest")
        .sandbox(SandboxConfig {
            expires_in_as_string: true,
            ..SandboxConfig::default()
        })
        .set("LINKEDIN_API_VERSION", "202504")
        .await;
    let (queues, sandbox) = scenario.parts();
    queues.publish_jobs(&[job("rest-1"), job("rest-2")]).await;
    let mut worker = scenario.spawn_worker();
    scenario.settled(2, 0, SETTLE).await;
    worker.terminate(Duration::from_secs(20)).await;
    let stats = sandbox.stats();
    assert!(stats.linkedin_versions.contains("202504"), "{stats:?}");
    assert_eq!(stats.token_requests, 1);
    scenario.cleanup().await;
}

#[tokio::test]
async fn run_sandbox_closes_without_credentials() {
    let queues = Queues::new("runsandbox").await;
    queues.declare().await;
    queues.publish_jobs(&[job("sbx-1")]).await;
    let env: Vec<(String, String)> = [
        ("AMQP_URL", amqp_url()),
        ("CLOSE_QUEUE", queues.close.clone()),
        ("DEAD_LETTER_QUEUE", queues.dead.clone()),
        ("METRICS_ADDR", String::new()),
        ("BATCH_LINGER_MS", "50".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut worker = spawn_command(&["run", "--sandbox"], &env);
    eventually(SETTLE, "closed by the in-process sandbox", || async {
        worker.log_text().contains("sbx-1") && queues.depth(&queues.close).await == 0
    })
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    assert!(
        worker.log_text().contains("Closed."),
        "{}",
        worker.log_text()
    );
    assert_eq!(queues.depth(&queues.dead).await, 0);
    queues.cleanup().await;
}

#[tokio::test]
async fn publish_validates_every_line_and_publishes_all_or_nothing() {
    let queues = Queues::new("publish").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.ndjson");
    let good = job("pub-1").to_string();
    std::fs::write(
        &file,
        format!("{good}\n\n{{\"title\":\"x\"}}\n{}\n", job("pub-2")),
    )
    .unwrap();
    let publish = |args: &[&str]| {
        cli(&["publish"])
            .args(args)
            .env("AMQP_URL", amqp_url())
            .env("CLOSE_QUEUE", &queues.close)
            .env("DEAD_LETTER_QUEUE", &queues.dead)
    };
    let file = file.to_str().unwrap();
    let output = publish(&[file]).run().await;
    assert_eq!(output.code, Some(2));
    let stderr = &output.stderr;
    assert!(
        stderr.contains("line 3: ERROR :: /companyApplyUrl"),
        "{stderr}"
    );
    assert_eq!(queues.depth(&queues.close).await, 0, "nothing published");

    let output = publish(&["--skip-invalid", file]).run().await;
    assert_eq!(output.code, Some(0));
    assert!(output.stdout.contains("Published 2"));

    let from_stdin = publish(&["-"]).stdin(format!("{good}\n")).run().await;
    assert_eq!(from_stdin.code, Some(0), "{from_stdin:#?}");

    let published = queues.drain(&queues.close).await;
    assert_eq!(published.len(), 3);
    assert_eq!(
        published[0].body,
        good.as_bytes(),
        "published byte for byte"
    );
    for message in &published {
        assert_eq!(message.properties.delivery_mode(), &Some(2));
        assert_eq!(
            message
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str()),
            Some("application/json")
        );
        assert!(message.properties.message_id().is_some());
    }
    queues.cleanup().await;
}

#[tokio::test]
async fn queues_declared_elsewhere_without_arguments_are_accepted() {
    // Producers often declare the queue themselves, plainly durable, before the worker ever runs.
    let scenario = Scenario::builder("plain").undeclared().await;
    let queues = &scenario.queues;
    for name in [&queues.close, &queues.dead] {
        queues
            .channel
            .queue_declare(
                name.as_str().into(),
                lapin::options::QueueDeclareOptions::durable(),
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
    }
    queues.publish_jobs(&[job("plain-1")]).await;
    // Such a close queue has no single active consumer: with the default, the worker refuses it,
    // naming the setting that takes it as it is.
    let mut refused = scenario.spawn_worker();
    assert_eq!(refused.wait(Duration::from_secs(15)).await.code(), Some(1));
    let log = refused.log_text();
    assert!(log.contains("SINGLE_ACTIVE_CONSUMER=false"), "{log}");
    let mut env = scenario.env.clone();
    set(&mut env, "SINGLE_ACTIVE_CONSUMER", "false");
    let mut worker = spawn_worker(&env);
    scenario.settled(1, 0, SETTLE).await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    scenario.cleanup().await;
}
