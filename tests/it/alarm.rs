//! A broker that pushes back: a RabbitMQ node of the test's own (never the shared broker) raises a
//! memory alarm (`rabbitmqctl set_vm_memory_high_watermark 0`), which blocks every connection that
//! publishes. The worker publishes on a connection of its own, so:
//!
//! - with `TASK_CHECK=off` and only valid closes, nothing needs publishing and the closes go on
//!   during the alarm, acked, to the last one; `check` meanwhile reports the alarm;
//! - with `TASK_CHECK=off` and invalid messages among the closes, the dead letters block the
//!   publishing connection while the closes are still acked on the consuming one (with one
//!   connection for both, every ack would wait behind the first blocked publish);
//! - with task checks on and invalid messages, what must publish (pending checks, dead letters)
//!   waits, unacked: one WARN with the broker's reason, `job_closer_broker_blocked` 1, `/readyz` 503
//!   naming it; when the alarm clears, one INFO and everything is settled — every close verified,
//!   every invalid message dead-lettered once, nothing left in any queue.
//!
//! One node serves the three phases, one after the other (an alarm is node-wide); starting it takes
//! ~10–20 s on this machine.

use crate::common;

use common::rabbit_nodes::RabbitNodes;
use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

/// A job the worker's validation refuses: dead-lettered as invalid without reaching LinkedIn.
fn invalid_job(id: &str) -> Value {
    let mut job = job(id);
    job.as_object_mut().unwrap().remove("title");
    job
}

/// Raises (`on`) or clears the node's memory alarm, and waits until the node says so and, when
/// raised, until it blocks a publish (the alarm reaches the connections a moment later).
async fn memory_alarm(nodes: &RabbitNodes, on: bool) {
    let watermark = if on { "0" } else { "0.4" };
    nodes.ctl_ok(0, &["set_vm_memory_high_watermark", watermark]);
    let what = if on {
        "the alarm raised"
    } else {
        "the alarm cleared"
    };
    eventually(Duration::from_secs(30), what, || async {
        let alarms = nodes.ctl_ok(0, &["eval", "rabbit_alarm:get_alarms()."]);
        alarms.contains("memory") == on
    })
    .await;
    if on {
        let url = nodes.nodes[0].url();
        eventually(Duration::from_secs(30), "a publish blocked", || {
            blocks_a_publish(&url)
        })
        .await;
    }
}

/// Whether the broker blocks a connection that publishes one message to no queue, within 3 s.
async fn blocks_a_publish(url: &str) -> bool {
    let connection = connect_to(url).await;
    let mut events = connection.events_listener();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            "alarm-test.nowhere".into(),
            Default::default(),
            b"",
            Default::default(),
        )
        .await
        .unwrap();
    let blocked = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(event) = events.next().await {
            if matches!(event, lapin::Event::ConnectionBlocked(_)) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    // A blocked connection cannot say goodbye; dropped, it goes with the test process at worst.
    if !blocked {
        let _ = connection.close(200, "".into()).await;
    }
    blocked
}

/// Closes the node's one connection whose client-given name is `name`; whether there was one.
fn close_connection_named(nodes: &RabbitNodes, name: &str) -> bool {
    let listing = nodes.ctl_ok(
        0,
        &[
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
        ],
    );
    let property = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = false;
    for line in listing.lines().filter(|line| line.contains(&property)) {
        let pid = line.split('\t').next().unwrap_or_default().trim();
        nodes.ctl_ok(0, &["close_connection", pid, "alarm test: connection lost"]);
        closed = true;
    }
    closed
}

/// Messages in `queue` on the node, ready or delivered and not yet acked.
fn messages(nodes: &RabbitNodes, queue: &str) -> u64 {
    nodes
        .ctl_ok(
            0,
            &["list_queues", "name", "messages", "--no-table-headers"],
        )
        .lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .find(|(name, _)| *name == queue)
        .and_then(|(_, count)| count.trim().parse().ok())
        .unwrap_or(0)
}

fn warnings_of(log: &str) -> Vec<Value> {
    log_events(
        log,
        "RabbitMQ blocks publishing (a memory or disk alarm): dead letters and task checks wait, unacknowledged, until it clears; closes that need nothing published go on.",
    )
}

/// A scenario on the test's node with what every phase reads: JSON logs and a metrics port.
fn on_node(nodes: &RabbitNodes, label: &str) -> ScenarioBuilder {
    Scenario::builder(label)
        .broker(&nodes.nodes[0].url())
        .set("METRICS_ADDR", "127.0.0.1:0")
        .set("LOG_FORMAT", "json")
}

/// Publishes `jobs`, raises the alarm and starts the worker: its process and metrics address.
async fn start_during_alarm(
    nodes: &RabbitNodes,
    scenario: &Scenario,
    jobs: &[Value],
) -> (WorkerProcess, String) {
    scenario.queues.publish_jobs(jobs).await;
    memory_alarm(nodes, true).await;
    let worker = scenario.spawn_worker();
    let base = metrics_base(&worker).await;
    (worker, base)
}

/// The tally of a phase whose worker is gone: printed, nothing lost; then the queues go.
async fn finish(scenario: Scenario, published: usize, ids: &BTreeSet<String>, what: &str) {
    let tally = scenario.tally(published, ids).await;
    tally.print(what);
    assert_eq!(tally.lost(), 0);
    scenario.cleanup().await;
}

/// Phase 1: `TASK_CHECK=off` and only valid closes: nothing to publish, the closes go on.
async fn closes_go_on_when_nothing_needs_publishing(nodes: &RabbitNodes) {
    let scenario = on_node(nodes, "flow").set("TASK_CHECK", "off").await;
    let (queues, sandbox) = scenario.parts();
    let (all, ids) = jobs("flow", 400);
    let (mut worker, base) = start_during_alarm(nodes, &scenario, &all).await;

    let check = cli_run(&["check"], &scenario.env).await;
    let alarm_line = check
        .stdout
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some("alarm"))
        .unwrap_or_else(|| panic!("no alarm line: {}", check.stdout));
    assert!(alarm_line.starts_with("FAIL  alarm"), "{alarm_line}");
    assert!(alarm_line.contains("low on memory"), "{alarm_line}");
    assert_eq!(check.code, Some(1), "{}", check.stdout);
    assert!(
        check.stdout.contains("ok    close queue"),
        "the queue steps still ran: {}",
        check.stdout
    );

    wait_for(
        &[&worker],
        SETTLE,
        "every close sent and acked during the alarm",
        || async { closes(sandbox, &ids).0 == ids.len() && messages(nodes, &queues.close) == 0 },
    )
    .await;
    let alarms = nodes.ctl_ok(0, &["eval", "rabbit_alarm:get_alarms()."]);
    assert!(alarms.contains("memory"), "the alarm lasted: {alarms}");
    let text = metrics_of(&base).await;
    assert_eq!(
        metric(&text, "job_closer_broker_blocked"),
        Some(0.0),
        "nothing was published, so nothing was blocked"
    );
    assert_eq!(
        metric(&text, "job_closer_elements_closed_total"),
        Some(ids.len() as f64)
    );
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0),
        "shuts down cleanly during the alarm"
    );
    assert!(warnings_of(&worker.log_text()).is_empty());
    memory_alarm(nodes, false).await;
    finish(
        scenario,
        ids.len(),
        &ids,
        "memory alarm, nothing to publish",
    )
    .await;
}

/// Phase 2: `TASK_CHECK=off`, invalid messages among the closes: their dead letters block the
/// publishing connection, and the closes are acked on the consuming one all the same.
async fn closes_are_acked_beside_blocked_dead_letters(nodes: &RabbitNodes) {
    let scenario = on_node(nodes, "apart")
        .latency(Duration::from_millis(200))
        .set("TASK_CHECK", "off")
        .await;
    let (queues, sandbox) = scenario.parts();
    let (valid, ids) = jobs("apart", 300);
    let invalid: BTreeSet<String> = (0..10).map(|i| format!("apart-invalid-{i}")).collect();
    let mut all = Vec::new();
    for (i, job) in valid.into_iter().enumerate() {
        if i % 30 == 0 {
            all.push(invalid_job(&format!("apart-invalid-{}", i / 30)));
        }
        all.push(job);
    }
    let (mut worker, base) = start_during_alarm(nodes, &scenario, &all).await;
    wait_for(
        &[&worker],
        SETTLE,
        "every close acked while the dead letters wait",
        || async {
            closes(sandbox, &ids).0 == ids.len()
                && messages(nodes, &queues.close) == invalid.len() as u64
        },
    )
    .await;
    let text = metrics_of(&base).await;
    assert_eq!(metric(&text, "job_closer_broker_blocked"), Some(1.0));
    assert_eq!(warnings_of(&worker.log_text()).len(), 1);
    assert_eq!(queues.depth(&queues.dead).await, 0);
    memory_alarm(nodes, false).await;
    wait_for(&[&worker], SETTLE, "the dead letters published", || async {
        queues.depth(&queues.dead).await as usize == invalid.len()
            && messages(nodes, &queues.close) == 0
    })
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let what = "memory alarm, closes acked beside blocked dead letters";
    finish(scenario, all.len(), &ids, what).await;
}

/// Phase 3: task checks on, invalid messages: what must publish waits, either connection lost
/// ends the session, and everything settles once the alarm clears.
async fn what_must_publish_waits_and_settles_after_the_alarm(nodes: &RabbitNodes) {
    let name = format!("alarm-worker-{}", uuid::Uuid::new_v4().simple());
    let scenario = on_node(nodes, "hold")
        .task_check_delay_ms(300)
        .set("AMQP_CONNECTION_NAME", &name)
        .await;
    let (queues, sandbox) = scenario.parts();
    let (mut all, ids) = jobs("hold", 200);
    let invalid: BTreeSet<String> = (0..20).map(|i| format!("hold-invalid-{i}")).collect();
    all.extend(invalid.iter().map(|id| invalid_job(id)));
    let (mut worker, base) = start_during_alarm(nodes, &scenario, &all).await;
    wait_for(
        &[&worker],
        SETTLE,
        "the broker blocks the worker's publishing",
        || async { metric(&metrics_of(&base).await, "job_closer_broker_blocked") == Some(1.0) },
    )
    .await;
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("broker blocked"), "{body}");
    assert!(body.contains("low on memory"), "{body}");
    // LinkedIn still gets the closes; their settling waits for the broker.
    wait_for(&[&worker], SETTLE, "every close sent", || async {
        closes(sandbox, &ids).0 == ids.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = messages(nodes, &queues.close);
    assert_eq!(
        held,
        all.len() as u64,
        "every message still the broker's, unacked, while its copy cannot be published"
    );
    assert_eq!(queues.depth(&queues.dead).await, 0);
    let warnings = warnings_of(&worker.log_text());
    assert_eq!(warnings.len(), 1, "one WARN: {warnings:?}");
    assert_eq!(warnings[0]["level"], "WARN");
    assert_eq!(warnings[0]["reason"], "low on memory");

    // Either connection lost ends the session, the blocked publishing one included: the next
    // session is blocked in its turn. What the lost session had written before the broker stopped
    // reading may still be taken when the alarm clears (at least once, as after any lost session),
    // so a dead letter may arrive twice — never more often than that, and never lost.
    let losses = |log: &str| {
        log_events(
            log,
            "Lost the broker session; in-hand deliveries will be redelivered.",
        )
        .iter()
        .filter_map(|event| event["error"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
    };
    // The publishing connection's loss is seen by its watch alone; the consuming one's also by
    // its consumers, whichever notices first.
    for (lost, named) in [
        (format!("{name} (publishing)"), "the publishing connection"),
        (name.clone(), ""),
    ] {
        let log = worker.log_text();
        let (warned, lost_before) = (warnings_of(&log).len(), losses(&log).len());
        assert!(close_connection_named(nodes, &lost), "no connection {lost}");
        wait_for(
            &[&worker],
            SETTLE,
            "a new session, blocked again",
            || async {
                let log = worker.log_text();
                let losses = losses(&log);
                losses.len() == lost_before + 1
                    && losses.last().is_some_and(|why| why.contains(named))
                    && warnings_of(&log).len() == warned + 1
            },
        )
        .await;
    }

    memory_alarm(nodes, false).await;
    wait_for(
        &[&worker],
        SETTLE,
        "everything settled once the alarm cleared",
        || async {
            let text = metrics_of(&base).await;
            // Redelivered after the lost sessions, a close LinkedIn already took is answered 409
            // and settled as already closed, without a task check.
            let verified = metric(
                &text,
                r#"job_closer_tasks_verified_total{status="SUCCEEDED"}"#,
            )
            .unwrap_or(0.0);
            let already = metric(&text, "job_closer_elements_already_closed_total").unwrap_or(0.0);
            verified + already >= ids.len() as f64
                && queues.depth(&queues.dead).await as usize >= invalid.len()
                && messages(nodes, &queues.close) == 0
                && queues.task_depth().await == 0
        },
    )
    .await;
    // Anything stale the severed connections held would land now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = metrics_of(&base).await;
    assert_eq!(metric(&text, "job_closer_broker_blocked"), Some(0.0));
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    let log = worker.log_text();
    let unblocked = log_events(&log, "RabbitMQ unblocked publishing.");
    assert_eq!(
        unblocked.len(),
        1,
        "one INFO, from the last session: {unblocked:?}"
    );
    assert_eq!(unblocked[0]["level"], "INFO");
    assert_eq!(warnings_of(&log).len(), 3, "one WARN per blocked session");
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let letters = queues.drain(&queues.dead).await;
    let dead: BTreeSet<String> = letters
        .iter()
        .filter_map(|letter| letter.external_id())
        .collect();
    assert_eq!(
        dead, invalid,
        "every invalid message dead-lettered, no valid one"
    );
    let duplicates = letters.len() - dead.len();
    println!("duplicate dead letters after the two lost sessions: {duplicates}");
    assert!(duplicates <= invalid.len(), "{duplicates} duplicates");
    let check = cli_run(&["check"], &scenario.env).await;
    assert!(
        check.stdout.contains("ok    alarm"),
        "check sees the alarm gone: {}",
        check.stdout
    );
    // The dead letters were drained above: the tally counts them from there.
    let tally = Tally {
        dead: dead.len(),
        ..scenario.tally(all.len(), &ids).await
    };
    tally.print("memory alarm, checks and dead letters held, both connections lost once");
    assert_eq!(tally.lost(), 0);
    scenario.cleanup().await;
}

/// One node serves the three phases, one after the other: an alarm is node-wide.
#[tokio::test]
async fn a_memory_alarm_is_reported_closes_go_on_where_they_can_and_nothing_is_lost() {
    let nodes = RabbitNodes::start(1, |_, _| String::new());
    closes_go_on_when_nothing_needs_publishing(&nodes).await;
    closes_are_acked_beside_blocked_dead_letters(&nodes).await;
    what_must_publish_waits_and_settles_after_the_alarm(&nodes).await;
}
