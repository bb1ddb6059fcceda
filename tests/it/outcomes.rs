//! End to end: outcome messages (`reply_to` and `OUTCOME_EXCHANGE`) and `publish --wait`, with the
//! built `job-closer`, the real RabbitMQ and the sandbox — every outcome through both routes with
//! task checks off and on, no outcome before a close's task is known, a replayed dead letter that
//! then closes, SIGKILLs between the outcomes' confirms and the acks, a `reply_to` queue that does
//! not exist, an outcome exchange deleted under the worker, `check`'s line for the exchange, and
//! `publish --wait`'s exits 0, 3 and 4.

use crate::common;

use common::*;
use job_closer::outcome::{self, Kind, Outcome};
use job_closer::{Fault, SandboxConfig, TaskRule};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(90);
const TASK_PREFIX: &str = "urn:li:simpleJobPostingTask:";
const NOT_AUTHORIZED: &str =
    "Caller is not authorized to access the jobs for contract: urn:li:contract:9";

/// A close request's properties as a producer that wants to hear how it ended sets them.
fn asking(reply_to: &str, message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_reply_to(reply_to.into())
}

async fn publish(queues: &Queues, body: &Value, properties: BasicProperties) {
    let bytes = body.to_string();
    assert!(
        publish_confirmed(&queues.channel, &queues.close, bytes.as_bytes(), properties).await,
        "the broker did not take the close request"
    );
}

fn text(value: &Option<lapin::types::ShortString>) -> Option<String> {
    Drained::property(value)
}

/// What every outcome message is, whatever it says: returns its body, checked against the published
/// schema.
fn checked(message: &Drained) -> Outcome {
    let properties = &message.properties;
    assert_eq!(
        text(properties.content_type()).as_deref(),
        Some(outcome::CONTENT_TYPE)
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(text(properties.kind()).as_deref(), Some(outcome::TYPE));
    let message_id = text(properties.message_id()).expect("a message_id");
    assert!(uuid::Uuid::parse_str(&message_id).is_ok(), "{message_id}");
    let body: Value = serde_json::from_slice(&message.body).expect("a JSON body");
    let schema: Value = serde_json::from_str(outcome::SCHEMA).unwrap();
    assert!(
        jsonschema::draft202012::is_valid(&schema, &body),
        "schema/outcome.schema.json refuses {body}"
    );
    let outcome = message.outcome();
    assert_eq!(
        message.header_str(outcome::HEADER).as_deref(),
        Some(outcome.outcome.as_str()),
        "x-outcome says what the body says"
    );
    outcome
}

fn message_id(message: &Drained) -> String {
    text(message.properties.message_id()).expect("a message_id")
}

/// Outcome messages by the external id they are about (each id at most once).
fn by_external_id(messages: &[Drained]) -> BTreeMap<String, (&Drained, Outcome)> {
    let mut map = BTreeMap::new();
    for message in messages {
        let outcome = checked(message);
        let id = outcome.external_job_posting_id.clone().expect("an id");
        assert!(
            map.insert(id.clone(), (message, outcome)).is_none(),
            "two outcomes for {id}"
        );
    }
    map
}

/// Takes outcome messages out of `queue` until `count` were taken (shows the workers' logs if not).
async fn collect(
    queues: &Queues,
    workers: &[&WorkerProcess],
    queue: &str,
    count: usize,
) -> Vec<Drained> {
    let taken = std::sync::Mutex::new(Vec::new());
    wait_for(
        workers,
        SETTLE,
        &format!("{count} outcome(s) in {queue}"),
        || async {
            let more = queues.drain(queue).await;
            let mut taken = taken.lock().unwrap();
            taken.extend(more);
            taken.len() >= count
        },
    )
    .await;
    taken.into_inner().unwrap()
}

fn metric_of(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
}

#[tokio::test]
async fn every_outcome_reaches_reply_to_and_the_exchange_with_task_checks_off() {
    let scenario = Scenario::builder("outcomes-off")
        .sandbox(SandboxConfig {
            allowed_contracts: Some(vec!["urn:li:contract:7".into()]),
            ..SandboxConfig::default()
        })
        .set("TASK_CHECK", "off")
        .set("METRICS_ADDR", "127.0.0.1:0")
        .outcome_exchange()
        .await;
    let exchange = scenario.outcome_exchange();
    let (queues, sandbox) = scenario.parts();
    let replies = queues.extra_queue("replies").await;
    let everything = queues.subscriber(&exchange, "all", "#").await;
    let failures = queues
        .subscriber(&exchange, "failures", "dead-lettered")
        .await;
    sandbox.mark_absent(&["oc-absent"]);

    publish(queues, &job("oc-closed"), asking(&replies, "m-closed")).await;
    let correlated = asking(&replies, "m-correlated").with_correlation_id("c-77".into());
    publish(queues, &job("oc-correlated"), correlated).await;
    publish(queues, &job("oc-absent"), asking(&replies, "m-absent")).await;
    let premium = premium_job("oc-rejected", "urn:li:contract:9");
    publish(queues, &premium, asking(&replies, "m-rejected")).await;
    let mut untitled = job("oc-invalid");
    untitled.as_object_mut().unwrap().remove("title");
    publish(queues, &untitled, asking(&replies, "m-invalid")).await;
    // No reply_to: its outcome goes to the exchange only.
    let plain = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id("m-plain".into());
    publish(queues, &job("oc-plain"), plain).await;

    let mut worker = scenario.spawn_worker();
    let base = metrics_base(&worker).await;
    let replied = collect(queues, &[&worker], &replies, 5).await;
    let published = collect(queues, &[&worker], &everything, 6).await;
    let failed = collect(queues, &[&worker], &failures, 2).await;

    let reply = by_external_id(&replied);
    let ids: BTreeSet<&str> = reply.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "oc-absent",
            "oc-closed",
            "oc-correlated",
            "oc-invalid",
            "oc-rejected"
        ]),
        "one outcome per request that named a reply_to"
    );
    let (message, closed) = &reply["oc-closed"];
    assert_eq!(closed.outcome, Kind::Closed);
    assert_eq!(
        closed.verified,
        Some(false),
        "TASK_CHECK=off trusts the 202"
    );
    assert!(closed.job_posting.is_none());
    assert!(
        closed
            .task_id
            .as_deref()
            .is_some_and(|t| t.starts_with(TASK_PREFIX))
    );
    // Sent once, or twice when its batch was split to isolate oc-absent's request-level 409.
    assert!((1..=2).contains(&closed.attempts), "{closed:?}");
    assert_eq!(closed.request_message_id.as_deref(), Some("m-closed"));
    assert_eq!(closed.close_queue, queues.close);
    assert_eq!(
        text(message.properties.correlation_id()).as_deref(),
        Some("m-closed"),
        "without a correlation id, the request's message id"
    );
    let (message, _) = &reply["oc-correlated"];
    assert_eq!(
        text(message.properties.correlation_id()).as_deref(),
        Some("c-77")
    );
    let (_, absent) = &reply["oc-absent"];
    assert_eq!(absent.outcome, Kind::AlreadyClosed);
    assert_eq!(absent.status, Some(409));
    assert!(
        absent
            .message
            .as_deref()
            .is_some_and(|m| m.contains("already closed")),
        "{absent:?}"
    );
    let (_, rejected) = &reply["oc-rejected"];
    assert_eq!(rejected.outcome, Kind::DeadLettered);
    assert_eq!(
        (
            rejected.reason.as_deref(),
            rejected.status,
            rejected.message.as_deref()
        ),
        (Some("rejected"), Some(403), Some(NOT_AUTHORIZED))
    );
    assert_eq!(rejected.attempts, 1);
    let (_, invalid) = &reply["oc-invalid"];
    assert_eq!(
        (invalid.reason.as_deref(), invalid.status, invalid.attempts),
        (Some("invalid"), Some(422), 0)
    );
    assert!(invalid.message.as_deref().unwrap().contains("/title"));

    // The outcomes of the dead letters say what the dead letters' headers say.
    let dead = queues.drain(&queues.dead).await;
    assert_eq!(dead.len(), 2);
    for letter in &dead {
        let id = letter.external_id().unwrap();
        let (_, told) = &reply[&id];
        assert_eq!(told.reason, letter.header_str("x-error-reason"), "{id}");
        assert_eq!(
            told.status.map(i64::from),
            letter.header_int("x-error-status")
        );
        assert_eq!(told.message, letter.header_str("x-error-message"));
        assert_eq!(
            Some(i64::from(told.attempts)),
            letter.header_int("x-attempts")
        );
    }

    // The exchange: every outcome, routed by what it is; the same message as the reply_to copy.
    let all = by_external_id(&published);
    assert_eq!(all.len(), 6);
    assert_eq!(all["oc-plain"].1.outcome, Kind::Closed);
    for (id, (message, told)) in &all {
        assert_eq!(message.routing_key, told.outcome.as_str(), "{id}");
        if let Some((copy, same)) = reply.get(id) {
            assert_eq!(message_id(message), message_id(copy), "{id}");
            assert_eq!(told, same, "{id}");
        }
    }
    let failed: BTreeSet<String> = by_external_id(&failed).into_keys().collect();
    assert_eq!(
        failed,
        BTreeSet::from(["oc-invalid".to_owned(), "oc-rejected".to_owned()]),
        "a subscriber of `dead-lettered` gets just those"
    );

    let metrics = metrics_of(&base).await;
    for (outcome, count) in [
        ("closed", 3.0),
        ("already-closed", 1.0),
        ("dead-lettered", 2.0),
    ] {
        let series = format!(r#"job_closer_outcomes_total{{outcome="{outcome}"}}"#);
        assert_eq!(metric_of(&metrics, &series), count, "{series}");
    }
    assert_eq!(
        metric_of(&metrics, "job_closer_outcome_unroutable_total"),
        0.0
    );
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    assert_eq!(queues.depth(&queues.close).await, 0);
    scenario.cleanup().await;
}

fn rule(status: &str, after_ms: u64, error_message: Option<&str>) -> TaskRule {
    TaskRule {
        status: status.into(),
        after: Duration::from_millis(after_ms),
        error_message: error_message.map(str::to_owned),
    }
}

#[tokio::test]
async fn with_task_checks_on_an_outcome_waits_for_the_task_and_a_duplicate_for_its_first() {
    let scenario = Scenario::builder("outcomes-on")
        .task_check_delay_ms(300)
        .set("LOG_FORMAT", "json")
        .outcome_exchange()
        .await;
    let exchange = scenario.outcome_exchange();
    let (queues, sandbox) = scenario.parts();
    let replies = queues.extra_queue("replies").await;
    let everything = queues.subscriber(&exchange, "all", "#").await;
    let dropped = "Job fail-1 was dropped: true (sandbox says no)";
    // IN_PROGRESS at the first check (0.3 s) and the second (0.9 s), SUCCEEDED at the third.
    sandbox.set_task_rule("slow-", rule("SUCCEEDED", 1500, None));
    sandbox.set_task_rule("fail-", rule("FAILED", 0, Some(dropped)));
    sandbox.mark_absent(&["gone-1"]);
    // Each of ok-1 and fail-1 twice, as a producer that publishes twice: the second is never
    // sent, and is told what the first one's task says.
    for (id, message_id) in [
        ("slow-1", "m-slow"),
        ("ok-1", "m-ok-a"),
        ("ok-1", "m-ok-b"),
        ("fail-1", "m-fail-a"),
        ("fail-1", "m-fail-b"),
        ("gone-1", "m-gone"),
    ] {
        publish(queues, &job(id), asking(&replies, message_id)).await;
    }

    let mut worker = scenario.spawn_worker();
    wait_for(
        &[&worker],
        SETTLE,
        "slow-1's task seen in progress",
        || async {
            log_events(
                &worker.log_text(),
                "Close task not finished; checking again later.",
            )
            .iter()
            .any(|event| event["externalJobPostingId"] == "slow-1")
        },
    )
    .await;
    // LinkedIn accepted slow-1 and its task is still running: nobody is told it closed.
    let early = queues.drain(&replies).await;
    assert!(
        early
            .iter()
            .all(|m| m.outcome().external_job_posting_id.as_deref() != Some("slow-1")),
        "an outcome for a close whose task is still in progress: {:?}",
        early.iter().map(Drained::body_text).collect::<Vec<_>>()
    );
    let mut replied = early;
    replied.extend(collect(queues, &[&worker], &replies, 6 - replied.len()).await);
    let published = collect(queues, &[&worker], &everything, 6).await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let mut told: BTreeMap<String, Vec<(String, Outcome)>> = BTreeMap::new();
    for message in &replied {
        let outcome = checked(message);
        let id = outcome.external_job_posting_id.clone().unwrap();
        told.entry(id)
            .or_default()
            .push((message_id(message), outcome));
    }
    let slow = &told["slow-1"];
    assert_eq!(slow.len(), 1);
    let slow = &slow[0].1;
    assert_eq!((slow.outcome, slow.verified), (Kind::Closed, Some(true)));
    assert!(
        slow.job_posting
            .as_deref()
            .is_some_and(|urn| urn.starts_with("urn:li:jobPosting:")),
        "a verified close carries the job's URN: {slow:?}"
    );
    assert!(
        slow.task_id
            .as_deref()
            .is_some_and(|t| t.starts_with(TASK_PREFIX))
    );
    // Sent once, or more when its batch was split to isolate gone-1's request-level 409.
    assert!(slow.attempts >= 1, "{slow:?}");

    let ok = &told["ok-1"];
    assert_eq!(ok.len(), 2, "{ok:?}");
    for (_, outcome) in ok {
        assert_eq!(
            (outcome.outcome, outcome.verified),
            (Kind::Closed, Some(true))
        );
        assert!(outcome.job_posting.is_some());
    }
    assert_eq!(
        ok[0].1.task_id, ok[1].1.task_id,
        "the duplicate waited on the first's task"
    );
    assert_ne!(ok[0].0, ok[1].0, "two requests, two outcome ids");
    let requests: BTreeSet<_> = ok
        .iter()
        .map(|(_, o)| o.request_message_id.clone())
        .collect();
    assert_eq!(requests.len(), 2);
    let mut attempts: Vec<u32> = ok.iter().map(|(_, o)| o.attempts).collect();
    attempts.sort();
    assert!(
        attempts[0] == 0 && attempts[1] >= 1,
        "the duplicate was never sent: {attempts:?}"
    );

    let fail = &told["fail-1"];
    assert_eq!(
        fail.len(),
        2,
        "both copies learn the job is still open: {fail:?}"
    );
    for (_, outcome) in fail {
        assert_eq!(outcome.outcome, Kind::DeadLettered);
        assert_eq!(outcome.reason.as_deref(), Some("task-failed"));
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.message.as_deref(), Some(dropped));
        assert!(
            outcome
                .task_id
                .as_deref()
                .is_some_and(|t| t.starts_with(TASK_PREFIX))
        );
    }
    let gone = &told["gone-1"];
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1.outcome, Kind::AlreadyClosed);
    assert_eq!(gone[0].1.verified, None, "no task to verify");

    let stats = sandbox.stats();
    assert_eq!(stats.closed.get("ok-1"), Some(&1), "{stats:?}");
    assert_eq!(stats.closed.get("fail-1"), Some(&1), "{stats:?}");
    assert!(!stats.refused_closes.contains_key("ok-1"), "{stats:?}");
    assert_eq!(queues.depth(&queues.dead).await, 2, "both fail-1 requests");
    assert_eq!(queues.task_depth().await, 0, "no check left pending");
    // The exchange had the same six.
    let mut exchange_ids: Vec<String> = published.iter().map(message_id).collect();
    let mut reply_ids: Vec<String> = replied.iter().map(message_id).collect();
    exchange_ids.sort();
    reply_ids.sort();
    assert_eq!(exchange_ids, reply_ids);
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_replayed_dead_letter_that_then_closes_is_told_closed() {
    let scenario = Scenario::builder("outcomes-replay")
        .task_check_delay_ms(300)
        .await;
    let (queues, sandbox) = scenario.parts();
    let replies = queues.extra_queue("replies").await;
    // The contract is not granted at first; it is by the time of the replay.
    sandbox.push_fault(Fault::linkedin(403, NOT_AUTHORIZED), 1);
    let premium = premium_job("rp-1", "urn:li:contract:9");
    publish(queues, &premium, asking(&replies, "m-replayed")).await;

    let mut worker = scenario.spawn_worker();
    let first = collect(queues, &[&worker], &replies, 1).await;
    let dead = checked(&first[0]);
    assert_eq!(dead.outcome, Kind::DeadLettered);
    assert_eq!(
        (dead.reason.as_deref(), dead.status),
        (Some("rejected"), Some(403))
    );

    let replay = cli_run(&["dlq", "replay"], &scenario.env).await;
    assert_eq!(replay.code, Some(0), "{replay:?}");
    assert!(
        replay.stdout.contains("Moved 1 dead letter(s)"),
        "{replay:?}"
    );
    let second = collect(queues, &[&worker], &replies, 1).await;
    let closed = checked(&second[0]);
    assert_eq!(
        (closed.outcome, closed.verified),
        (Kind::Closed, Some(true))
    );
    assert!(closed.job_posting.is_some());
    assert_eq!(closed.external_job_posting_id.as_deref(), Some("rp-1"));
    assert_eq!(closed.request_message_id.as_deref(), Some("m-replayed"));
    assert_eq!(
        dead.request_message_id, closed.request_message_id,
        "the same request"
    );
    assert_ne!(message_id(&first[0]), message_id(&second[0]));
    assert_eq!(
        text(second[0].properties.correlation_id()).as_deref(),
        Some("m-replayed")
    );
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    assert_eq!(queues.depth(&queues.dead).await, 0);
    scenario.cleanup().await;
}

/// Publishes `requests` (body, message id) to the close queue, persistent, confirms pipelined.
async fn publish_backlog(queues: &Queues, requests: &[(Value, String)]) {
    for (index, (body, message_id)) in requests.iter().enumerate() {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.as_str().into());
        queues
            .channel
            .basic_publish(
                "".into(),
                queues.close.as_str().into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                properties,
            )
            .await
            .unwrap();
        if index % 500 == 499 {
            queues.channel.wait_for_confirms().await.unwrap();
        }
    }
    queues.channel.wait_for_confirms().await.unwrap();
}

/// What the SIGKILL test read off the exchange: per request (message id), each outcome kind with
/// the outcome message ids it came with (one per message, repeats included).
#[derive(Default)]
struct Heard {
    by_request: BTreeMap<String, BTreeMap<Kind, Vec<String>>>,
    messages: usize,
}

impl Heard {
    fn add(&mut self, messages: Vec<Drained>) {
        for message in messages {
            let outcome = message.outcome();
            let request = outcome
                .request_message_id
                .clone()
                .expect("requestMessageId");
            self.by_request
                .entry(request)
                .or_default()
                .entry(outcome.outcome)
                .or_default()
                .push(message_id(&message));
            self.messages += 1;
        }
    }

    /// Takes what arrives in `queue` until `done` says so (failing the test after a while).
    async fn until(
        &mut self,
        queues: &Queues,
        worker: &WorkerProcess,
        queue: &str,
        done: impl Fn(&Heard) -> bool,
    ) {
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            self.add(queues.drain(queue).await);
            if done(self) {
                return;
            }
            if std::time::Instant::now() > deadline {
                let log = worker.log_text();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                panic!(
                    "outcomes for {} requests only; the worker's log ends:\n{}",
                    self.by_request.len(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests told the same outcome more than once.
    fn repeats(&self) -> usize {
        self.by_request
            .values()
            .flat_map(BTreeMap::values)
            .filter(|ids| ids.len() > 1)
            .count()
    }
}

#[tokio::test]
async fn a_sigkill_between_the_outcomes_and_the_acks_repeats_outcomes_and_loses_none() {
    const VALID: usize = 3000;
    const KILLS_AT_MOST: usize = 10;
    // Small batches answered slowly: the backlog takes long enough to drain that a kill lands in it
    // even when this test's own process is slowed by a busy machine (with 100-element batches answered
    // in 40 ms, the whole backlog was once told before the first kill).
    let scenario = Scenario::builder("outcomes-kill")
        .latency(Duration::from_millis(150))
        .set("BATCH_SIZE", "25")
        .task_check_delay_ms(200)
        .set("RUST_LOG", "warn")
        .outcome_exchange()
        .await;
    let exchange = scenario.outcome_exchange();
    let (queues, sandbox) = scenario.parts();
    let heard_queue = queues.subscriber(&exchange, "all", "#").await;
    // Valid closes, with an invalid one and a job LinkedIn no longer has every 40th.
    let mut requests = Vec::new();
    let mut valid = BTreeSet::new();
    let mut invalid = BTreeSet::new();
    let mut absent = Vec::new();
    for i in 0..VALID {
        let id = format!("kill-{i}");
        requests.push((job(&id), format!("m-{id}")));
        valid.insert(id);
        if i % 40 == 0 {
            let bad = format!("kill-bad-{i}");
            let mut body = job(&bad);
            body["listedAt"] = Value::String("yesterday".into());
            requests.push((body, format!("m-{bad}")));
            invalid.insert(bad);
            let gone = format!("kill-gone-{i}");
            requests.push((job(&gone), format!("m-{gone}")));
            absent.push(gone);
        }
    }
    sandbox.mark_absent(&absent);
    publish_backlog(queues, &requests).await;
    let total = requests.len();

    let mut heard = Heard::default();
    let mut worker = scenario.spawn_worker();
    let mut kills = 0;
    // Kill when the outcomes have moved on by a twelfth of the backlog since the last kill, until a
    // repeat shows that a kill landed between an outcome's confirm and its ack (and at least twice).
    while kills < KILLS_AT_MOST && (kills < 2 || heard.repeats() == 0) {
        let goal = heard.by_request.len() + total / 12;
        if goal >= total {
            break;
        }
        heard
            .until(queues, &worker, &heard_queue, |heard| {
                heard.by_request.len() >= goal
            })
            .await;
        worker.signal(Signal::SIGKILL);
        worker.wait(Duration::from_secs(10)).await;
        kills += 1;
        println!(
            "outcomes-sigkill: kill {kills} at {} of {total} requests told, {} repeats so far",
            heard.by_request.len(),
            heard.repeats()
        );
        worker = scenario.spawn_worker();
    }
    heard
        .until(queues, &worker, &heard_queue, |heard| {
            heard.by_request.len() >= total
        })
        .await;
    wait_for(&[&worker], SETTLE, "every queue empty", || async {
        queues.depth(&queues.close).await == 0 && queues.task_depth().await == 0
    })
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    heard.add(queues.drain(&heard_queue).await);

    // Every request was told, and every repeat of an outcome carries the same message id.
    let requested: BTreeSet<String> = requests.iter().map(|(_, id)| id.clone()).collect();
    let told: BTreeSet<String> = heard.by_request.keys().cloned().collect();
    assert_eq!(told, requested, "a request without an outcome");
    for (request, kinds) in &heard.by_request {
        for (kind, ids) in kinds {
            let distinct: BTreeSet<&String> = ids.iter().collect();
            assert_eq!(
                distinct.len(),
                1,
                "{request} told {kind} under several ids: {ids:?}"
            );
        }
        // A close LinkedIn accepted just before a kill is sent again after it, and then LinkedIn
        // says it is already closed: either is the truth about a valid close, never a dead letter.
        let ended_as: &[Kind] = if request.starts_with("m-kill-bad-") {
            &[Kind::DeadLettered]
        } else if request.starts_with("m-kill-gone-") {
            &[Kind::AlreadyClosed]
        } else {
            &[Kind::Closed, Kind::AlreadyClosed]
        };
        assert!(
            kinds.keys().all(|kind| ended_as.contains(kind)),
            "{request}: {kinds:?}"
        );
    }
    let repeats = heard.repeats();
    assert!(
        repeats > 0,
        "none of {kills} SIGKILLs landed between an outcome's confirm and its ack"
    );

    // Nothing lost: every valid close reached LinkedIn, every invalid request is dead-lettered.
    let (closed, resent) = closes(sandbox, &valid);
    let dead = queues.drain(&queues.dead).await;
    let dead_ids: BTreeSet<String> = dead.iter().filter_map(Drained::external_id).collect();
    assert_eq!(
        dead_ids, invalid,
        "exactly the invalid requests are dead-lettered"
    );
    let tally = Tally {
        published: valid.len() + invalid.len(),
        closed,
        dead: dead_ids.len(),
        resent,
    };
    tally.print("outcomes-sigkill");
    println!(
        "outcomes-sigkill: {total} requests, {kills} SIGKILLs, {} outcome messages, {repeats} repeated outcomes (same id), {} dead letters",
        heard.messages,
        dead.len()
    );
    assert_eq!(tally.lost(), 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_reply_to_queue_that_does_not_exist_is_counted_and_warned_about_once() {
    let scenario = Scenario::builder("outcomes-unroutable")
        .set("TASK_CHECK", "off")
        .set("METRICS_ADDR", "127.0.0.1:0")
        .await;
    let (queues, sandbox) = scenario.parts();
    let missing = format!("{}.nobody-declared-this", queues.close);
    let (with_reply, _) = jobs("unroutable", 40);
    for (i, body) in with_reply.iter().enumerate() {
        publish(queues, body, asking(&missing, &format!("m-{i}"))).await;
    }
    // Neither a reply_to nor OUTCOME_EXCHANGE: nothing is published for these.
    let (silent, _) = jobs("silent", 10);
    queues.publish_jobs(&silent).await;

    let mut worker = scenario.spawn_worker();
    let base = metrics_base(&worker).await;
    wait_for(&[&worker], SETTLE, "every close settled", || async {
        let metrics = metrics_of(&base).await;
        metric(&metrics, "job_closer_elements_closed_total") == Some(50.0)
            && metric(&metrics, "job_closer_outcome_unroutable_total") == Some(40.0)
    })
    .await;
    wait_for(&[&worker], SETTLE, "the close queue empty", || async {
        queues.depth(&queues.close).await == 0
    })
    .await;
    let metrics = metrics_of(&base).await;
    assert_eq!(
        metric_of(&metrics, r#"job_closer_outcomes_total{outcome="closed"}"#),
        40.0,
        "an outcome for each request with a reply_to, none for the others"
    );
    assert_eq!(sandbox.stats().closed.len(), 50);
    assert_eq!(queues.depth(&queues.dead).await, 0, "never dead-lettered");
    assert!(!queues.exists(&missing).await, "and nothing declared it");
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    assert_eq!(queues.depth(&queues.close).await, 0, "everything acked");
    let log = worker.log_text();
    let warnings = log
        .lines()
        .filter(|line| line.contains("reply_to queue does not exist"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for 40 unroutable outcomes (at most one a minute):\n{log}"
    );
    assert!(
        log.contains(&missing),
        "the warning names the queue:\n{log}"
    );
    scenario.cleanup().await;
}

fn ndjson(bodies: &[Value]) -> String {
    bodies.iter().map(|b| format!("{b}\n")).collect()
}

#[tokio::test]
async fn publish_wait_exits_0_3_or_4_and_says_which_ids() {
    let scenario = Scenario::builder("outcomes-wait")
        .sandbox(SandboxConfig {
            allowed_contracts: Some(vec!["urn:li:contract:7".into()]),
            ..SandboxConfig::default()
        })
        .task_check_delay_ms(300)
        .await;
    let sandbox = &scenario.sandbox;
    sandbox.set_task_rule("stuck-", rule("IN_PROGRESS", 0, None));
    sandbox.mark_absent(&["w-gone"]);
    let mut worker = scenario.spawn_worker();
    let publish_wait = |bodies: &[Value], extra: &[&str]| {
        let mut args = vec!["publish", "--wait"];
        args.extend_from_slice(extra);
        args.push("-");
        cli(&args).envs(&scenario.env).stdin(ndjson(bodies)).run()
    };

    // 0: every request closed or already closed.
    let run = publish_wait(
        &[job("w-1"), job("w-2"), job("w-gone")],
        &["--timeout", "60"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("Published 3 close request(s)"),
        "{run:#?}"
    );
    for id in ["w-1", "w-2"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{id}  closed  urn:li:jobPosting:"))),
            "{run:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("w-gone  already-closed  409 ")),
        "{run:#?}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("closed 2, already-closed 1, dead-lettered 0, waiting 0")
    );

    // 3: one dead-lettered, named.
    let refused = premium_job("w-refused", "urn:li:contract:9");
    let run = publish_wait(&[job("w-3"), refused], &["--timeout", "60"]).await;
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "w-refused  dead-lettered  rejected 403 {NOT_AUTHORIZED}"
        )),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("closed 1, already-closed 0, dead-lettered 1, waiting 0")
    );
    assert!(run.stderr.contains("w-refused"), "{run:#?}");

    // 4: a task that never ends; the ids still waiting are listed.
    let run = publish_wait(&[job("w-4"), job("stuck-1")], &["--timeout", "4"]).await;
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(
        run.stdout.contains("w-4  closed  urn:li:jobPosting:"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("stuck-1  waiting"), "{run:#?}");
    assert!(
        run.stdout
            .contains("closed 1, already-closed 0, dead-lettered 0, waiting 1")
    );
    assert!(
        run.stderr.contains("still waiting: stuck-1"),
        "the ids still waiting: {run:#?}"
    );

    // --json: each outcome's body, and nothing else, on standard output.
    let run = publish_wait(&[job("w-5")], &["--timeout", "60", "--json"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let bodies = run.json_lines();
    assert_eq!(bodies.len(), 1, "{run:#?}");
    let told: Outcome = serde_json::from_value(bodies[0].clone()).unwrap();
    assert_eq!(told.external_job_posting_id.as_deref(), Some("w-5"));
    assert_eq!(told.outcome, Kind::Closed);
    assert!(
        run.stderr
            .contains("closed 1, already-closed 0, dead-lettered 0, waiting 0")
    );

    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    scenario.cleanup().await;
}

#[tokio::test]
async fn an_outcome_exchange_deleted_while_running_is_declared_again_and_nothing_is_lost() {
    let scenario = Scenario::builder("outcomes-deleted")
        .set("TASK_CHECK", "off")
        .set("LOG_FORMAT", "json")
        .outcome_exchange()
        .await;
    let exchange = scenario.outcome_exchange();
    let (queues, sandbox) = scenario.parts();
    let replies = queues.extra_queue("replies").await;
    let (before, _) = jobs("before", 5);
    for (i, body) in before.iter().enumerate() {
        publish(queues, body, asking(&replies, &format!("m-before-{i}"))).await;
    }
    let mut worker = scenario.spawn_worker();
    collect(queues, &[&worker], &replies, 5).await;

    // An operator deletes the exchange: the broker closes the channel that publishes to it.
    queues
        .channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
    let (after, _) = jobs("after", 5);
    for (i, body) in after.iter().enumerate() {
        publish(queues, body, asking(&replies, &format!("m-after-{i}"))).await;
    }
    let told = collect(queues, &[&worker], &replies, 5).await;
    let ids: BTreeSet<String> = by_external_id(&told).into_keys().collect();
    let expected: BTreeSet<String> = (0..5).map(|i| format!("after-{i}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(sandbox.stats().closed.len(), 10);
    assert!(
        worker
            .log_text()
            .contains("the publishing channel was closed by the broker"),
        "the session was renewed"
    );
    let declared = queues
        .connection
        .create_channel()
        .await
        .unwrap()
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    assert!(declared.is_ok(), "declared again: {declared:?}");
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    assert_eq!(queues.depth(&queues.close).await, 0);
    assert_eq!(queues.depth(&queues.dead).await, 0, "nothing dead-lettered");
    scenario.cleanup().await;
}

/// `check`'s line for a step (`ok    outcomes     ...`), or a failure showing all it printed.
fn check_line<'a>(run: &'a Run, step: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|line| line.get(6..).is_some_and(|rest| rest.starts_with(step)))
        .unwrap_or_else(|| panic!("no {step} line: {run:#?}"))
}

async fn exchange_exists(queues: &Queues, exchange: &str) -> bool {
    let channel = queues.connection.create_channel().await.unwrap();
    let options = lapin::options::ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let kind = lapin::ExchangeKind::Topic;
    let exists = channel
        .exchange_declare(exchange.into(), kind, options, Default::default())
        .await
        .is_ok();
    if exists {
        let _ = channel.close(200, "".into()).await;
    }
    exists
}

#[tokio::test]
async fn check_shows_the_outcome_exchange_or_that_none_is_set() {
    let unset = Scenario::builder("outcomes-check").await;
    let queues = &unset.queues;
    let run = cli_run(&["check"], &unset.env).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        check_line(&run, "outcomes").starts_with("ok    outcomes     OUTCOME_EXCHANGE not set"),
        "{run:#?}"
    );

    // Set but not there yet: passes, and check creates nothing.
    let missing = format!("{}.outcomes", queues.close);
    let mut env = unset.env.clone();
    set(&mut env, "OUTCOME_EXCHANGE", &missing);
    let run = cli_run(&["check"], &env).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let line = check_line(&run, "outcomes");
    assert!(
        line.starts_with("ok ") && line.contains("does not exist yet"),
        "{line}"
    );
    assert!(
        !exchange_exists(queues, &missing).await,
        "check declared it"
    );

    // There, as run declares it.
    let scenario = Scenario::builder("outcomes-check-set")
        .outcome_exchange()
        .await;
    let run = cli_run(&["check"], &scenario.env).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let line = check_line(&run, "outcomes");
    assert!(
        line.contains("exists as a durable topic exchange")
            && line.contains("closed, already-closed, dead-lettered"),
        "{line}"
    );

    // Of another type: named, exit 1.
    let fanout = format!("{}.fanout", scenario.queues.close);
    scenario.queues.also_delete_exchange(&fanout);
    scenario
        .queues
        .channel
        .exchange_declare(
            fanout.as_str().into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let mut env = scenario.env.clone();
    set(&mut env, "OUTCOME_EXCHANGE", &fanout);
    let run = cli_run(&["check"], &env).await;
    // And `run` refuses it the same way, at once.
    let worker = cli(&["run"])
        .envs(&env)
        .within(Duration::from_secs(60))
        .run()
        .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let line = check_line(&run, "outcomes");
    assert!(
        line.starts_with("FAIL")
            && line.contains("inequivalent arg 'type'")
            && line.contains("OUTCOME_EXCHANGE"),
        "{line}"
    );
    assert_eq!(worker.code, Some(1), "{worker:#?}");
    assert!(
        worker.stderr.contains("must name a durable topic exchange"),
        "{worker:#?}"
    );

    // A name RabbitMQ reserves: a configuration error.
    let mut env = scenario.env.clone();
    set(&mut env, "OUTCOME_EXCHANGE", "amq.outcomes");
    let run = cli_run(&["check"], &env).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stdout.contains("FAIL  config") && run.stdout.contains("amq."),
        "{run:#?}"
    );
    scenario.cleanup().await;
}
