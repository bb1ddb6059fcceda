//! End to end: task verification with the built `job-closer run`, the real RabbitMQ and the sandbox —
//! tasks that succeed, fail, stay in progress for a while, a SIGKILL while checks are pending, batched
//! lookups, expired task ids, and TASK_CHECK=off. First checks come 300 ms after acceptance here
//! (3 s in the crash test, so that the kill lands while every check is waiting).

use crate::common;

use common::*;
use job_closer::tasks::pending;
use job_closer::{Fault, TaskRule};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SETTLE: Duration = Duration::from_secs(60);
const TASK_PREFIX: &str = "urn:li:simpleJobPostingTask:";

/// The external ids a worker's log reports as verified.
fn verified_ids(log: &str) -> Vec<String> {
    log_events(log, "Close verified.")
        .iter()
        .filter_map(|event| event["externalJobPostingId"].as_str().map(str::to_owned))
        .collect()
}

fn rule(status: &str, after_ms: u64, error_message: Option<&str>) -> TaskRule {
    TaskRule {
        status: status.into(),
        after: Duration::from_millis(after_ms),
        error_message: error_message.map(str::to_owned),
    }
}

/// Publishes `body` to `queue` with properties a producer might set, confirmed.
async fn publish_with(queues: &Queues, queue: &str, body: &[u8], properties: BasicProperties) {
    assert!(publish_confirmed(&queues.channel, queue, body, properties).await);
}

/// The scenario of these tests: a first check `delay_ms` after acceptance, JSON logs to parse.
fn checked(label: &str, delay_ms: u64) -> ScenarioBuilder {
    Scenario::builder(label)
        .task_check_delay_ms(delay_ms)
        .set("LOG_FORMAT", "json")
}

#[tokio::test]
async fn succeeded_tasks_are_verified_despite_lookup_trouble_and_leave_nothing_behind() {
    let scenario = checked("tasks-ok", 300).await;
    let (queues, sandbox) = scenario.parts();
    // Lookup trouble of every kind is waited out; none of it may dead-letter a close.
    sandbox.push_task_fault(
        Fault::Status {
            status: 503,
            retry_after_secs: None,
            message: None,
        },
        2,
    );
    sandbox.push_task_fault(Fault::Garbage200, 1);
    sandbox.push_task_fault(
        Fault::Status {
            status: 429,
            retry_after_secs: Some(1),
            message: None,
        },
        1,
    );
    sandbox.push_task_fault(Fault::WrongCount200, 1);
    let jobs: Vec<_> = (0..40).map(|i| job(&format!("ok-{i}"))).collect();
    queues.publish_jobs(&jobs).await;

    let mut worker = scenario.spawn_worker();
    wait_for(&[&worker], SETTLE, "every close verified", || async {
        verified_ids(&worker.log_text()).len() >= 40
    })
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let log = worker.log_text();
    let verified: BTreeSet<_> = verified_ids(&log).into_iter().collect();
    assert_eq!(verified.len(), 40, "{log}");
    assert_eq!(verified_ids(&log).len(), 40, "each verified once");
    assert!(
        log_events(&log, "Close verified.").iter().all(|event| {
            event["job_posting"]
                .as_str()
                .is_some_and(|urn| urn.starts_with("urn:li:jobPosting:"))
                && event["task_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(TASK_PREFIX))
                && event["status"] == "SUCCEEDED"
        }),
        "{log}"
    );
    assert!(
        !log_events(&log, "Task lookup failed; retrying.").is_empty(),
        "{log}"
    );
    let stats = sandbox.stats();
    assert!(stats.last_task_status.values().all(|s| s == "SUCCEEDED"));
    assert_eq!(queues.depth(&queues.dead).await, 0, "nothing dead-lettered");
    assert_eq!(queues.depth(&queues.close).await, 0);
    assert_eq!(queues.task_depth().await, 0, "no check left pending");
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_failed_task_dead_letters_the_original_request() {
    let scenario = checked("tasks-failed", 300).await;
    let (queues, sandbox) = scenario.parts();
    let message = "Job fail-1 was dropped: true (sandbox says no)";
    sandbox.set_task_rule("fail-", rule("FAILED", 0, Some(message)));
    // Odd spacing and key order must survive: the dead letter is the original, byte for byte.
    let body = br#"  {"title":"Engineer", "externalJobPostingId" : "fail-1","companyApplyUrl":"https://x.example/a","description":"We are hiring a backend engineer to build and run distributed systems. This position has been filled; thank you for applying.","listedAt":1700000000000,"location":"Berlin"}  "#;
    let mut headers = FieldTable::default();
    headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    publish_with(
        queues,
        &queues.close,
        body,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id("msg-fail-1".into())
            .with_content_type("application/json".into())
            .with_headers(headers),
    )
    .await;
    queues.publish_jobs(&[job("ok-1")]).await;

    let mut worker = scenario.spawn_worker();
    wait_for(
        &[&worker],
        SETTLE,
        "the failure dead-lettered, the other verified",
        || async {
            queues.depth(&queues.dead).await >= 1 && !verified_ids(&worker.log_text()).is_empty()
        },
    )
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let dead = queues.drain(&queues.dead).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.body, body.to_vec(), "original body byte for byte");
    assert_eq!(
        letter.header_str("x-error-reason").as_deref(),
        Some("task-failed")
    );
    assert_eq!(
        letter.header_str("x-error-message").as_deref(),
        Some(message)
    );
    assert_eq!(letter.header_int("x-error-status"), Some(200));
    let task_id = letter.header_str("x-task-id").unwrap();
    assert!(task_id.starts_with(TASK_PREFIX), "{task_id}");
    assert_eq!(
        letter.header_str("x-original-queue").as_deref(),
        Some(queues.close.as_str())
    );
    assert_eq!(letter.header_int("x-attempts"), Some(1), "one status check");
    assert!(letter.header_str("x-dead-lettered-at").is_some());
    // The original's properties, not the pending check's bookkeeping.
    assert_eq!(letter.header_str("tenant").as_deref(), Some("acme"));
    assert_eq!(
        letter.properties.message_id().as_ref().map(|m| m.as_str()),
        Some("msg-fail-1")
    );
    assert_eq!(
        letter
            .properties
            .content_type()
            .as_ref()
            .map(|m| m.as_str()),
        Some("application/json")
    );
    for bookkeeping in [
        pending::EXTERNAL_ID,
        pending::ACCEPTED_AT,
        pending::CHECKS,
        pending::SEND_ATTEMPTS,
        "x-death",
        "x-first-death-queue",
    ] {
        assert!(
            !letter.headers.contains_key(bookkeeping),
            "{bookkeeping} in {:?}",
            letter.headers
        );
    }
    assert_eq!(verified_ids(&worker.log_text()), ["ok-1"]);
    assert_eq!(queues.task_depth().await, 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn tasks_in_progress_are_checked_again_until_they_end() {
    let scenario = checked("tasks-slow", 300)
        // The versioned API: tasks are looked up under /rest with LinkedIn-Version as well.
        .set("LINKEDIN_API_VERSION", "202504")
        .await;
    let (queues, sandbox) = scenario.parts();
    // IN_PROGRESS for 1.5 s: seen at the 0.3 s and 0.9 s checks, SUCCEEDED at 2.1 s.
    sandbox.set_task_rule("slow-", rule("SUCCEEDED", 1500, None));
    // IN_PROGRESS for ever: checked again and again, never dead-lettered within the day.
    // (PROCESSED is an end: see tests/it/answers.rs.)
    sandbox.set_task_rule("stuck-", rule("IN_PROGRESS", 0, None));
    let mut jobs: Vec<_> = (0..10).map(|i| job(&format!("slow-{i}"))).collect();
    jobs.push(job("stuck-1"));
    queues.publish_jobs(&jobs).await;

    let mut worker = scenario.spawn_worker();
    wait_for(
        &[&worker],
        SETTLE,
        "slow tasks verified, stuck one rechecked",
        || async {
            let log = worker.log_text();
            let stuck_rechecks = log_events(&log, "Close task not finished; checking again later.")
                .iter()
                .filter(|event| event["externalJobPostingId"] == "stuck-1")
                .count();
            verified_ids(&log).len() >= 10 && stuck_rechecks >= 3
        },
    )
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let stats = sandbox.stats();
    assert!(
        stats.task_statuses.get("IN_PROGRESS").copied().unwrap_or(0) >= 10,
        "{stats:?}"
    );
    let verified: BTreeSet<_> = verified_ids(&worker.log_text()).into_iter().collect();
    let slow: BTreeSet<_> = (0..10).map(|i| format!("slow-{i}")).collect();
    assert_eq!(verified, slow);
    assert!(stats.linkedin_versions.contains("202504"), "{stats:?}");
    let log = worker.log_text();
    let rechecks = log_events(&log, "Close task not finished; checking again later.");
    assert!(
        rechecks
            .iter()
            .any(|event| event["externalJobPostingId"] == "stuck-1"
                && event["status"] == "IN_PROGRESS"),
        "{log}"
    );
    assert!(
        rechecks
            .iter()
            .any(|event| event["status"] == "IN_PROGRESS"),
        "{log}"
    );
    assert_eq!(queues.depth(&queues.dead).await, 0, "nothing dead-lettered");
    assert_eq!(
        queues.task_depth().await,
        1,
        "the unfinished check is kept by the broker across the shutdown"
    );
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_sigkill_while_checks_are_pending_loses_no_verification() {
    let scenario = checked("tasks-crash", 3000).await;
    let (queues, sandbox) = scenario.parts();
    sandbox.set_task_rule("crash-fail-", rule("FAILED", 0, Some("dropped")));
    let ok: BTreeSet<String> = (0..60).map(|i| format!("crash-ok-{i}")).collect();
    let failing: BTreeSet<String> = (0..20).map(|i| format!("crash-fail-{i}")).collect();
    let jobs: Vec<_> = ok.iter().chain(&failing).map(|id| job(id)).collect();
    queues.publish_jobs(&jobs).await;

    let mut first = scenario.spawn_worker();
    wait_for(
        &[&first],
        SETTLE,
        "every close accepted and its check pending",
        || async { sandbox.stats().closed.len() == 80 && queues.task_depth().await >= 80 },
    )
    .await;
    first.kill();
    let queried_before_kill = sandbox.stats().task_ids_queried;
    let pending_after_kill = queues.task_depth().await;
    println!("killed with {queried_before_kill} ids queried, {pending_after_kill} checks pending");
    assert!(
        pending_after_kill >= 80,
        "the pending checks are the broker's, not the dead worker's"
    );

    let mut second = scenario.spawn_worker();
    let all_verified = |second: &WorkerProcess| {
        let mut verified: BTreeSet<String> = verified_ids(&first.log_text()).into_iter().collect();
        verified.extend(verified_ids(&second.log_text()));
        verified
    };
    wait_for(
        &[&first, &second],
        SETTLE,
        "every accepted job verified or dead-lettered",
        || async {
            all_verified(&second).is_superset(&ok)
                && queues.depth(&queues.dead).await >= 20
                && queues.task_depth().await == 0
                && queues.depth(&queues.close).await == 0
        },
    )
    .await;
    assert_eq!(
        second.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let dead_ids: BTreeSet<String> = queues
        .drain(&queues.dead)
        .await
        .iter()
        .inspect(|letter| {
            assert_eq!(
                letter.header_str("x-error-reason").as_deref(),
                Some("task-failed")
            )
        })
        .filter_map(|letter| letter.external_id())
        .collect();
    assert_eq!(dead_ids, failing, "every failed task dead-lettered");
    let verified = all_verified(&second);
    assert_eq!(verified, ok, "every succeeded task verified, no failed one");
    let accepted: BTreeSet<String> = sandbox.stats().closed.keys().cloned().collect();
    let settled: BTreeSet<String> = verified.union(&dead_ids).cloned().collect();
    assert_eq!(
        accepted, settled,
        "every accepted job ends verified or dead-lettered"
    );
    assert_eq!(queues.task_depth().await, 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn status_checks_are_batched() {
    let scenario = checked("tasks-batch", 300).await;
    let (queues, sandbox) = scenario.parts();
    let jobs: Vec<_> = (0..300).map(|i| job(&format!("batch-{i}"))).collect();
    queues.publish_jobs(&jobs).await;
    let mut worker = scenario.spawn_worker();
    wait_for(&[&worker], SETTLE, "every close verified", || async {
        verified_ids(&worker.log_text()).len() >= 300
    })
    .await;
    worker.terminate(Duration::from_secs(20)).await;
    let stats = sandbox.stats();
    println!(
        "{} task ids in {} lookups",
        stats.task_ids_queried, stats.task_queries
    );
    assert!(stats.task_ids_queried >= 300);
    assert!(
        stats.task_queries * 10 <= stats.task_ids_queried,
        "at least ten ids per lookup on average: {} ids in {} lookups",
        stats.task_ids_queried,
        stats.task_queries
    );
    let log = worker.log_text();
    assert!(
        !log.contains("Task lookup failed"),
        "no lookup was refused (414 etc.): {log}"
    );
    assert_eq!(queues.task_depth().await, 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_task_id_past_its_lifetime_is_dead_lettered_as_task_unknown() {
    let scenario = checked("tasks-expired", 300).await;
    let (queues, sandbox) = scenario.parts();
    let mut worker = scenario.spawn_worker();
    let check_queue = queues.task_queues()[0].clone();
    assert!(check_queue.ends_with(".tasks.check"));
    wait_for(
        &[&worker],
        SETTLE,
        "the worker declared its task queues",
        || async { queues.exists(&check_queue).await },
    )
    .await;

    // A pending check accepted 25 hours ago whose task LinkedIn no longer knows.
    let body = job("gone-1").to_string();
    let accepted_at = SystemTime::now() - Duration::from_secs(25 * 3600);
    let mut headers = FieldTable::default();
    let put = |headers: &mut FieldTable, key: &str, value: AMQPValue| {
        headers.insert(key.into(), value);
    };
    put(
        &mut headers,
        pending::TASK_ID,
        AMQPValue::LongString(format!("{TASK_PREFIX}gone").into()),
    );
    put(
        &mut headers,
        pending::EXTERNAL_ID,
        AMQPValue::LongString("gone-1".into()),
    );
    put(
        &mut headers,
        pending::ACCEPTED_AT,
        AMQPValue::LongLongInt(accepted_at.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64),
    );
    put(&mut headers, pending::CHECKS, AMQPValue::LongInt(7));
    publish_with(
        queues,
        &check_queue,
        body.as_bytes(),
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers),
    )
    .await;

    wait_for(&[&worker], SETTLE, "dead-lettered", || async {
        queues.depth(&queues.dead).await == 1
    })
    .await;
    worker.terminate(Duration::from_secs(20)).await;
    let dead = queues.drain(&queues.dead).await;
    let letter = &dead[0];
    assert_eq!(letter.body, body.as_bytes());
    assert_eq!(
        letter.header_str("x-error-reason").as_deref(),
        Some("task-unknown")
    );
    assert_eq!(
        letter.header_str("x-task-id"),
        Some(format!("{TASK_PREFIX}gone"))
    );
    assert_eq!(letter.header_int("x-attempts"), Some(8));
    assert!(
        letter
            .header_str("x-error-message")
            .unwrap()
            .contains("expired")
    );
    assert!(!letter.headers.contains_key(pending::CHECKS));
    assert_eq!(sandbox.stats().task_statuses.get("NOT_FOUND"), Some(&1));
    scenario.cleanup().await;
}

#[tokio::test]
async fn task_check_off_trusts_the_202() {
    let scenario = checked("tasks-off", 300).set("TASK_CHECK", "off").await;
    let (queues, sandbox) = scenario.parts();
    queues
        .publish_jobs(&[job("off-1"), job("off-2"), job("off-3")])
        .await;
    let mut worker = scenario.spawn_worker();
    scenario.settled(3, 0, SETTLE).await;
    // Time enough for a check that should not happen.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    assert_eq!(sandbox.stats().task_queries, 0);
    for queue in queues.task_queues() {
        assert!(!queues.exists(&queue).await, "{queue} declared");
    }
    assert_eq!(queues.depth(&queues.close).await, 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn the_settings_are_documented_in_help() {
    let help = run_help();
    for setting in [
        "env: TASK_CHECK=",
        "env: TASK_CHECK_DELAY_MS=",
        "default: 300000",
        "on, off",
    ] {
        assert!(help.contains(setting), "{setting} missing from:\n{help}");
    }
    let output = cli(&["run"])
        .env("TASK_CHECK", "sometimes")
        .env("LINKEDIN_CLIENT_ID", "x")
        .env("LINKEDIN_CLIENT_SECRET", "y")
        .run()
        .await;
    assert_eq!(output.code, Some(2));
}
