//! End to end: OpenTelemetry traces (issue 21), with the built `job-closer`, the real RabbitMQ, the
//! sandbox and the tests' own OTLP/HTTP receiver ([`common::otlp_receiver`]): a close request's
//! `traceparent` is the parent of its `process` span, the LinkedIn request (and its retry) is
//! linked to it, the task check is in the same trace as its child, the outcome carries the trace,
//! a dead letter's span has an error status and the reason, and the logs carry the ids; nothing
//! exported holds a secret; an unreachable collector costs dropped spans, never a close; and with
//! tracing unset no export is attempted.

use crate::common;

use common::otlp_receiver::*;
use common::*;
use job_closer::Fault;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(90);

/// A producer's trace context, unique per call: (trace id, parent span id, `traceparent`).
fn producer_context() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let traceparent = format!("00-{trace_id}-{span_id}-01");
    (trace_id, span_id, traceparent)
}

fn traced_properties(
    traceparent: &str,
    message_id: &str,
    reply_to: Option<&str>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(traceparent.into()),
    );
    headers.insert(
        "tracestate".into(),
        AMQPValue::LongString("ats=producer".into()),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_headers(headers);
    match reply_to {
        Some(queue) => properties.with_reply_to(queue.into()),
        None => properties,
    }
}

async fn publish(queues: &Queues, body: &[u8], properties: BasicProperties) {
    assert!(
        publish_confirmed(&queues.channel, &queues.close, body, properties).await,
        "the broker did not take the close request"
    );
}

/// Waits until the receiver holds spans satisfying `done`, showing the worker's log if it never does.
async fn spans_until(
    worker: &WorkerProcess,
    receiver: &OtlpReceiver,
    what: &str,
    done: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    wait_for(&[worker], SETTLE, what, || async {
        done(&receiver.spans())
    })
    .await;
    receiver.spans()
}

fn traceparent_trace(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_close_joins_its_producers_trace_from_delivery_to_task_check_and_outcome() {
    let receiver = OtlpReceiver::start().await;
    let scenario = Scenario::builder("trace-life")
        .task_check_delay_ms(300)
        .set("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .set("LOG_FORMAT", "json")
        .await;
    let (queues, sandbox) = scenario.parts();
    let replies = queues.extra_queue("replies").await;
    // The first request is answered 503: a retry, as an event with its delay.
    sandbox.push_fault(Fault::linkedin(503, "Service unavailable"), 1);

    let (trace, parent, traceparent) = producer_context();
    let body = job("tr-closed").to_string();
    publish(
        queues,
        body.as_bytes(),
        traced_properties(&traceparent, "m-tr-closed", Some(&replies)),
    )
    .await;
    let (dead_trace, dead_parent, dead_traceparent) = producer_context();
    publish(
        queues,
        br#"{"externalJobPostingId":"tr-invalid"}"#,
        traced_properties(&dead_traceparent, "m-tr-invalid", None),
    )
    .await;

    let worker = scenario.spawn_worker();
    let outcome = {
        let taken = std::sync::Mutex::new(Vec::new());
        wait_for(&[&worker], SETTLE, "the outcome in reply_to", || async {
            let more = queues.drain(&replies).await;
            let mut taken = taken.lock().unwrap();
            taken.extend(more);
            !taken.is_empty()
        })
        .await;
        taken.into_inner().unwrap().remove(0)
    };
    assert_eq!(outcome.outcome().outcome.as_str(), "closed");

    let check_queue = queues
        .task_queues()
        .into_iter()
        .next()
        .expect("the verification queue");
    let close_name = format!("process {}", queues.close);
    let check_name = format!("process {check_queue}");
    let spans = spans_until(
        &worker,
        &receiver,
        "process, request, check and lookup spans of the trace, and the dead letter's",
        |spans| {
            let in_trace = |name: &str| spans.iter().any(|s| s.trace_id == trace && s.name == name);
            in_trace(&close_name)
                && in_trace(&check_name)
                && spans
                    .iter()
                    .filter(|s| s.name == "POST simpleJobPostings")
                    .count()
                    >= 2
                && spans.iter().any(|s| s.name == "GET simpleJobPostingTasks")
                && spans.iter().any(|s| s.trace_id == dead_trace)
        },
    )
    .await;

    // The process span: the producer's context is its parent.
    let process = spans
        .iter()
        .find(|s| s.trace_id == trace && s.name == close_name)
        .unwrap();
    assert_eq!(process.parent_span_id, parent, "{process:?}");
    assert_eq!(process.kind, KIND_CONSUMER);
    assert_eq!(process.service_name, "job-closer");
    for (key, value) in [
        ("messaging.system", "rabbitmq"),
        ("messaging.destination.name", queues.close.as_str()),
        ("messaging.operation.type", "process"),
        ("messaging.message.id", "m-tr-closed"),
        ("messaging.rabbitmq.message.redelivered", "false"),
        ("job.external_id", "tr-closed"),
        ("job_closer.outcome", "closed"),
    ] {
        assert_eq!(process.attribute(key), Some(value), "{key} of {process:?}");
    }
    assert!(
        process
            .attribute("messaging.rabbitmq.message.delivery_tag")
            .is_some()
    );
    assert_ne!(process.status_code, STATUS_ERROR);

    // The LinkedIn requests: linked to the process span, the first retried after a 503.
    let linked = |span: &ReceivedSpan| {
        span.links
            .iter()
            .any(|(t, s)| *t == trace && *s == process.span_id)
    };
    let mut requests: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "POST simpleJobPostings" && linked(s))
        .collect();
    requests.sort_by_key(|s| s.attribute("job_closer.attempt").map(str::to_owned));
    assert_eq!(requests.len(), 2, "two attempts, both linked: {spans:#?}");
    let (first, second) = (requests[0], requests[1]);
    for request in [first, second] {
        assert_eq!(request.kind, KIND_CLIENT);
        assert_eq!(request.attribute("http.request.method"), Some("POST"));
        assert_eq!(request.attribute("server.address"), Some("127.0.0.1"));
        assert_eq!(
            request.attribute("messaging.batch.message_count"),
            Some("1")
        );
    }
    assert_eq!(first.attribute("job_closer.attempt"), Some("1"));
    assert_eq!(first.attribute("http.response.status_code"), Some("503"));
    assert_eq!(first.status_code, STATUS_ERROR);
    let retry = first
        .events
        .iter()
        .find(|(name, _)| name == "retry")
        .unwrap_or_else(|| panic!("a retry event on {first:?}"));
    assert!(
        retry.1.contains_key("job_closer.retry.delay_ms"),
        "{retry:?}"
    );
    assert_eq!(second.attribute("job_closer.attempt"), Some("2"));
    let status: u16 = second
        .attribute("http.response.status_code")
        .and_then(|s| s.parse().ok())
        .expect("a status");
    assert!((200..300).contains(&status), "{second:?}");

    // The token request is a CLIENT span of its own.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "POST accessToken" && s.kind == KIND_CLIENT),
        "{spans:#?}"
    );

    // The task check: in the same trace, the child of the span that closed the job.
    let check = spans
        .iter()
        .find(|s| s.trace_id == trace && s.name == check_name)
        .unwrap();
    assert_eq!(check.parent_span_id, process.span_id, "{check:?}");
    assert_eq!(check.kind, KIND_CONSUMER);
    assert_eq!(check.attribute("job_closer.outcome"), Some("closed"));
    assert!(
        spans.iter().any(|s| s.name == "GET simpleJobPostingTasks"
            && s.links
                .iter()
                .any(|(t, id)| *t == trace && *id == check.span_id)),
        "the lookup is linked to the check: {spans:#?}"
    );

    // The outcome carries the trace, with the worker's (the check's) span as its parent.
    let outcome_parent = outcome
        .header_str("traceparent")
        .expect("the outcome carries a traceparent");
    assert_eq!(
        traceparent_trace(&outcome_parent),
        (trace.clone(), check.span_id.clone())
    );

    // The dead letter: an error status naming the reason; its message keeps the request's headers.
    let dead = spans
        .iter()
        .find(|s| s.trace_id == dead_trace && s.name == close_name)
        .unwrap();
    assert_eq!(dead.parent_span_id, dead_parent);
    assert_eq!(dead.status_code, STATUS_ERROR, "{dead:?}");
    assert!(dead.status_message.starts_with("invalid"), "{dead:?}");
    assert_eq!(
        dead.attribute("job_closer.dead_letter.reason"),
        Some("invalid")
    );
    assert_eq!(dead.attribute("job_closer.outcome"), Some("dead-lettered"));
    let letters = queues.drain(&queues.dead).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].header_str("traceparent").as_deref(),
        Some(dead_traceparent.as_str())
    );
    assert_eq!(
        letters[0].header_str("tracestate").as_deref(),
        Some("ats=producer")
    );

    // Nothing sent to LinkedIn carried the context (the sandbox records what it was sent).
    let log = worker.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let traced_line = |message: &str, span_id: &str| {
        lines.iter().any(|line| {
            line["message"] == message && line["trace_id"] == *trace && line["span_id"] == span_id
        })
    };
    assert!(
        traced_line("Closed.", &process.span_id),
        "the close's log line carries its ids:\n{log}"
    );
    assert!(
        traced_line("Close verified.", &check.span_id),
        "the check's log line carries its ids:\n{log}"
    );
    let untraced = lines
        .iter()
        .find(|line| line["message"] == "Consuming.")
        .expect("the consuming line");
    assert!(
        untraced.get("trace_id").is_none(),
        "a line outside any span carries no ids: {untraced}"
    );
    drop(worker);
    scenario.cleanup().await;
}

#[tokio::test]
async fn publish_starts_a_trace_or_continues_traceparent_and_passes_it_on_with_tracing_off() {
    let receiver = OtlpReceiver::start().await;
    let queues = Queues::declared("trace-publish").await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.ndjson");
    std::fs::write(&jobs, format!("{}\n{}\n", job("tp-1"), job("tp-2"))).unwrap();
    let env = [
        ("AMQP_URL".to_owned(), queues.url.clone()),
        ("CLOSE_QUEUE".to_owned(), queues.close.clone()),
        ("DEAD_LETTER_QUEUE".to_owned(), queues.dead.clone()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            receiver.endpoint(),
        ),
    ];

    let run = cli(&["publish", jobs.to_str().unwrap()])
        .envs(&env)
        .run()
        .await;
    assert_eq!(run.code, Some(0), "{}", run.output());
    let published = queues.drain(&queues.close).await;
    assert_eq!(published.len(), 2);
    let parents: Vec<(String, String)> = published
        .iter()
        .map(|m| traceparent_trace(&m.header_str("traceparent").expect("a traceparent")))
        .collect();
    assert_eq!(parents[0], parents[1], "one trace, one span per run");
    // Exported before the command exited.
    let spans = receiver.spans();
    let run_span = spans
        .iter()
        .find(|s| s.span_id == parents[0].1)
        .unwrap_or_else(|| panic!("the run's span was exported: {spans:#?}"));
    assert_eq!(run_span.trace_id, parents[0].0);
    assert_eq!(run_span.kind, KIND_PRODUCER);
    assert_eq!(run_span.name, format!("publish {}", queues.close));
    assert_eq!(run_span.parent_span_id, "", "a new root");
    assert_eq!(
        run_span.attribute("messaging.batch.message_count"),
        Some("2")
    );

    // TRACEPARENT in the environment: the run continues it.
    let (trace, parent, traceparent) = producer_context();
    let run = cli(&["publish", jobs.to_str().unwrap()])
        .envs(&env)
        .env("TRACEPARENT", &traceparent)
        .run()
        .await;
    assert_eq!(run.code, Some(0), "{}", run.output());
    let published = queues.drain(&queues.close).await;
    let (trace_of_message, span_of_message) =
        traceparent_trace(&published[0].header_str("traceparent").unwrap());
    assert_eq!(trace_of_message, trace);
    assert_ne!(span_of_message, parent, "the run's own span is the parent");
    assert!(
        receiver
            .spans()
            .iter()
            .any(|s| s.span_id == span_of_message && s.parent_span_id == parent)
    );

    // Tracing off: TRACEPARENT is passed on as it is; without it, nothing is added.
    let off = [
        ("AMQP_URL".to_owned(), queues.url.clone()),
        ("CLOSE_QUEUE".to_owned(), queues.close.clone()),
        ("DEAD_LETTER_QUEUE".to_owned(), queues.dead.clone()),
    ];
    let run = cli(&["publish", jobs.to_str().unwrap()])
        .envs(&off)
        .env("TRACEPARENT", &traceparent)
        .run()
        .await;
    assert_eq!(run.code, Some(0), "{}", run.output());
    let published = queues.drain(&queues.close).await;
    assert_eq!(
        published[0].header_str("traceparent").as_deref(),
        Some(traceparent.as_str())
    );
    let run = cli(&["publish", jobs.to_str().unwrap()])
        .envs(&off)
        .run()
        .await;
    assert_eq!(run.code, Some(0), "{}", run.output());
    let published = queues.drain(&queues.close).await;
    assert_eq!(published[0].header_str("traceparent"), None);
    queues.cleanup().await;
}

#[tokio::test]
async fn nothing_exported_holds_a_secret_at_trace_level() {
    let receiver = OtlpReceiver::start().await;
    let scenario = Scenario::builder("trace-secrets")
        .set("TASK_CHECK", "off")
        .await;
    let sandbox = &scenario.sandbox;
    let mut env = scenario.env.clone();
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let amqp_password = format!("Pw{tag}");
    // A node that refuses (with a password of its own) before the real broker.
    let closed_port = common::rabbit_nodes::free_port();
    set(
        &mut env,
        "AMQP_URL",
        format!(
            "amqp://guest:{amqp_password}@127.0.0.1:{closed_port}/%2f,{}",
            scenario.queues.url
        ),
    );
    set(&mut env, "RUST_LOG", "trace");
    set(&mut env, "OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    set(
        &mut env,
        "OTEL_EXPORTER_OTLP_HEADERS",
        "x-api-key=collector-key",
    );
    set(&mut env, "OTEL_TRACES_SAMPLER", "always_on");
    // A failed first request: the retry path is traced too.
    sandbox.push_fault(Fault::linkedin(500, "Internal error"), 1);
    let (traceparent_trace_id, _, traceparent) = producer_context();
    publish(
        &scenario.queues,
        job("ts-1").to_string().as_bytes(),
        traced_properties(&traceparent, "m-ts-1", None),
    )
    .await;
    let mut worker = spawn_worker(&env);
    scenario.settled(1, 0, SETTLE).await;
    assert!(worker.terminate(Duration::from_secs(30)).await.success());
    // Shutdown flushed the last spans.
    let spans = receiver.spans();
    assert!(
        spans.iter().any(|s| s.trace_id == traceparent_trace_id),
        "the close's spans were exported: {spans:#?}"
    );
    let exported = receiver.everything_received();
    let client_secret = sandbox.config().client_secret;
    let mut secrets = vec![client_secret.clone(), amqp_password.clone()];
    secrets.extend(sandbox.issued_tokens());
    assert!(secrets.len() >= 3, "a token was issued");
    for secret in &secrets {
        assert!(
            !exported.contains(secret.as_str()),
            "{secret:?} was exported:\n{exported}"
        );
    }
    // The configured header is sent (and is the only thing of ours in the headers).
    let headers = receiver.first_headers().expect("an export");
    assert_eq!(
        headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        Some("collector-key")
    );
    assert!(!worker.log_text().contains(&client_secret));
    scenario.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_collector_drops_spans_and_every_close_goes_through() {
    let scenario = Scenario::builder("trace-down")
        .set("TASK_CHECK", "off")
        .set("METRICS_ADDR", "127.0.0.1:0")
        .set("OTEL_TRACES_SAMPLER", "always_on")
        .await;
    let refusing = OtlpReceiver::refusing().await;
    let mut env = scenario.env.clone();
    set(&mut env, "OTEL_EXPORTER_OTLP_ENDPOINT", refusing.endpoint());
    let (jobs, ids) = jobs("td", 60);
    scenario.queues.publish_jobs(&jobs).await;
    let worker = spawn_worker(&env);
    scenario.settled(ids.len(), 0, SETTLE).await;
    let tally = scenario.tally(jobs.len(), &ids).await;
    assert_eq!(tally.lost(), 0, "every close went through");
    assert_eq!(tally.closed, ids.len());
    let base = metrics_base(&worker).await;
    let dropped = std::sync::Mutex::new(0.0);
    wait_for(&[&worker], SETTLE, "dropped spans counted", || async {
        let text = metrics_of(&base).await;
        let count = metric(&text, "job_closer_trace_spans_dropped_total").unwrap_or(0.0);
        *dropped.lock().unwrap() = count;
        count > 0.0
    })
    .await;
    assert!(refusing.requests() > 0, "the worker did try to export");
    let log = worker.log_text();
    assert!(
        log.contains("Could not export spans"),
        "the drop is logged too:\n{log}"
    );
    // Text logs name the ids of the span a line was written in.
    assert!(
        log.lines().any(|line| line.contains("Closed.")
            && line.contains(" trace_id=")
            && line.contains(" span_id=")),
        "a close's text line carries its ids:\n{log}"
    );
    drop(worker);

    // A closed port: the same, without any answer at all.
    let port = common::rabbit_nodes::free_port();
    set(
        &mut env,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    );
    let (more, more_ids) = common::jobs("td-closed", 20);
    scenario.queues.publish_jobs(&more).await;
    let worker = spawn_worker(&env);
    scenario
        .settled(ids.len() + more_ids.len(), 0, SETTLE)
        .await;
    let base = metrics_base(&worker).await;
    wait_for(&[&worker], SETTLE, "dropped spans counted", || async {
        let text = metrics_of(&base).await;
        metric(&text, "job_closer_trace_spans_dropped_total").unwrap_or(0.0) > 0.0
    })
    .await;
    drop(worker);
    scenario.cleanup().await;
}

#[tokio::test]
async fn tracing_unset_makes_no_export_and_no_connection_and_check_says_so() {
    let receiver = OtlpReceiver::start().await;
    let scenario = Scenario::builder("trace-unset")
        .set("TASK_CHECK", "off")
        .await;
    let broker_port = url::Url::parse(&scenario.queues.url)
        .ok()
        .and_then(|url| url.port())
        .unwrap_or(5672);
    let expected = [broker_port, scenario.sandbox.addr().port()];
    let (jobs, ids) = jobs("tu", 5);
    scenario.queues.publish_jobs(&jobs).await;
    let mut worker = scenario.spawn_worker();
    scenario.settled(ids.len(), 0, SETTLE).await;
    // Connected to the broker and LinkedIn, and to nothing else.
    let ports = remote_ports(worker.child.id());
    assert!(
        ports.contains(&broker_port),
        "the probe sees the broker connection: {ports:?}"
    );
    assert!(
        ports.iter().all(|port| expected.contains(port)),
        "only the broker {broker_port} and LinkedIn: {ports:?}"
    );
    assert!(worker.terminate(Duration::from_secs(30)).await.success());
    assert_eq!(receiver.requests(), 0);
    let log = worker.log_text();
    assert!(!log.contains("trace_id="), "no ids without tracing:\n{log}");

    // The same probe with tracing on sees the collector's connection: it can tell.
    let mut env = scenario.env.clone();
    set(&mut env, "OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    let (more, more_ids) = common::jobs("tu-on", 3);
    scenario.queues.publish_jobs(&more).await;
    let mut traced = spawn_worker(&env);
    scenario
        .settled(ids.len() + more_ids.len(), 0, SETTLE)
        .await;
    let collector_port = url::Url::parse(&receiver.endpoint())
        .unwrap()
        .port()
        .unwrap();
    eventually(SETTLE, "a connection to the collector", || async {
        remote_ports(traced.child.id()).contains(&collector_port)
    })
    .await;
    assert!(traced.terminate(Duration::from_secs(30)).await.success());
    assert!(receiver.requests() > 0);

    // check: one line for tracing, off here; on with where it exports (no credentials, no headers).
    let (code, output) = run_cli(&["check"], &scenario.env).await;
    assert_eq!(code, Some(0), "{output}");
    let line = output
        .lines()
        .find(|line| line.contains("tracing"))
        .unwrap_or_else(|| panic!("a tracing line in:\n{output}"));
    assert!(line.starts_with("ok") && line.contains("off"), "{line}");
    let mut env = scenario.env.clone();
    set(
        &mut env,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "https://user:endpoint-pass@otel.example:4318",
    );
    set(
        &mut env,
        "OTEL_EXPORTER_OTLP_HEADERS",
        "api-key=header-secret",
    );
    let (code, output) = run_cli(&["check"], &env).await;
    assert_eq!(code, Some(0), "{output}");
    let line = output
        .lines()
        .find(|line| line.contains("tracing"))
        .unwrap();
    assert!(
        line.contains("on:") && line.contains("https://otel.example:4318/v1/traces"),
        "{line}"
    );
    assert!(
        !output.contains("endpoint-pass") && !output.contains("header-secret"),
        "{output}"
    );
    // grpc is not built in: a configuration error, exit 2, for check and run alike.
    set(&mut env, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let (code, output) = run_cli(&["check"], &env).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("http/protobuf"), "{output}");
    let (code, output) = run_cli(&["run"], &env).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{output}");
    scenario.cleanup().await;
}

/// The remote ports of the established TCP connections process `pid` holds, from /proc (its
/// socket inodes, looked up in the kernel's TCP tables).
fn remote_ports(pid: u32) -> Vec<u16> {
    let inodes: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().to_string();
                    link.strip_prefix("socket:[")
                        .and_then(|rest| rest.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let tables = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    tables
        .lines()
        .filter_map(|line| {
            // sl, local address, remote address, state, …, inode (the tenth field).
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote = fields.get(2)?.rsplit(':').next()?;
            let established = *fields.get(3)? == "01";
            (established && inodes.contains(*fields.get(9)?))
                .then(|| u16::from_str_radix(remote, 16).ok())
                .flatten()
        })
        .collect()
}
