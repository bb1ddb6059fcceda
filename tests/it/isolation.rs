//! End to end, issue 18: the built worker against the real RabbitMQ and a sandbox where a seeded
//! share of the jobs is already closed on LinkedIn (expired), answered with LinkedIn's request-level
//! 409 that names no job. For 2,000 closes at 0 %, 2 %, 10 % and 30 % it prints and checks the
//! issue's figures (elements and requests per close), that every fresh close was accepted once,
//! every expired one settled as already closed and nothing dead-lettered; then the other unnamed
//! faults on the same mechanism (a strict LinkedIn's 400 for a job without a company, poison 500s),
//! a rate that drops from 10 % to 0 % with batches growing back, and duplicates of already-closed
//! jobs that are never sent while a replayed dead letter is.

use crate::common;

use common::*;
use job_closer::dead_letter::REPLAY_COUNT;
use job_closer::{Sandbox, SandboxConfig};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use std::collections::BTreeSet;
use std::time::Duration;

const CLOSES: usize = 2_000;
const SETTLE: Duration = Duration::from_secs(180);

/// TASK_CHECK=off (the measurement), a metrics listener to read, JSON logs.
fn isolation_scenario(label: &str, sandbox: SandboxConfig) -> ScenarioBuilder {
    Scenario::builder(label)
        .sandbox(sandbox)
        .set("TASK_CHECK", "off")
        .set("METRICS_ADDR", "127.0.0.1:0")
        .set("LOG_FORMAT", "json")
}

/// Ids unique to this run, so that which jobs the seed makes expired differs from run to run.
fn unique_ids(prefix: &str, n: usize) -> Vec<String> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    (0..n)
        .map(|i| format!("{prefix}-{}-{i}", &run[..8]))
        .collect()
}

fn expiring(rate: f64) -> SandboxConfig {
    SandboxConfig {
        already_closed_rate: rate,
        seed: Some(rand_seed()),
        ..SandboxConfig::default()
    }
}

/// A sandbox where exactly `rate` of `ids` expired on LinkedIn (a seed drawn until the share is
/// exact), so that a figure is checked at the rate and not at whatever share a seed gave.
fn expiring_exactly(rate: f64, ids: &[String]) -> SandboxConfig {
    let wanted = (rate * ids.len() as f64).round() as usize;
    loop {
        let config = expiring(rate);
        if ids
            .iter()
            .filter(|id| config.expired_on_linkedin(id))
            .count()
            == wanted
        {
            return config;
        }
    }
}

fn rand_seed() -> u64 {
    u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap())
}

/// What a run cost LinkedIn's quota.
struct Figures {
    requests: usize,
    elements: usize,
    closes: usize,
}

impl Figures {
    fn of(sandbox: &Sandbox, closes: usize) -> Figures {
        let sizes = sandbox.stats().request_sizes;
        Figures {
            requests: sizes.len(),
            elements: sizes.iter().sum(),
            closes,
        }
    }

    fn elements_per_close(&self) -> f64 {
        self.elements as f64 / self.closes as f64
    }

    fn requests_per_close(&self) -> f64 {
        self.requests as f64 / self.closes as f64
    }
}

/// Waits until the worker settled `n` closes (closed, already closed or dead-lettered, per its
/// metrics) and the close queue is empty.
async fn until_settled(worker: &WorkerProcess, base: &str, queues: &Queues, n: usize) {
    wait_for(&[worker], SETTLE, "every close settled", || async {
        let text = metrics_of(base).await;
        let value = |series: &str| metric(&text, series).unwrap_or(0.0);
        let dead: f64 = text
            .lines()
            .filter(|line| line.starts_with("job_closer_elements_dead_lettered_total{"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        let settled = value("job_closer_elements_closed_total")
            + value("job_closer_elements_already_closed_total")
            + dead;
        settled as usize >= n && queues.depth(&queues.close).await == 0
    })
    .await;
}

/// 2,000 closes against a LinkedIn where exactly `rate` of them already expired: the figures, printed,
/// and what must hold of every close.
async fn closes_at(rate: f64, label: &str) -> Figures {
    let ids = unique_ids(label, CLOSES);
    let scenario = isolation_scenario(label, expiring_exactly(rate, &ids)).await;
    let (queues, sandbox) = scenario.parts();
    queues
        .publish_backlog(ids.iter().map(|id| job(id).to_string()))
        .await;
    let mut worker = scenario.spawn_worker();
    let base = metrics_base(&worker).await;
    until_settled(&worker, &base, queues, CLOSES).await;
    let text = metrics_of(&base).await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let stats = sandbox.stats();
    let figures = Figures::of(sandbox, CLOSES);
    let expired: BTreeSet<&String> = stats.refused_closes.keys().collect();
    let closed: BTreeSet<&String> = stats.closed.keys().collect();
    println!(
        "isolation at {:.0}% already closed ({} of {CLOSES} expired on LinkedIn): {} requests, {} elements; {:.3} elements and {:.3} requests per close; {} isolation requests",
        rate * 100.0,
        expired.len(),
        figures.requests,
        figures.elements,
        figures.elements_per_close(),
        figures.requests_per_close(),
        metric(&text, "job_closer_isolation_requests_total").unwrap_or(0.0),
    );
    // Every close settled exactly one way: the fresh ones accepted once, the expired ones refused
    // and settled as already closed, nothing dead-lettered.
    assert!(closed.is_disjoint(&expired));
    assert_eq!(closed.len() + expired.len(), CLOSES, "nothing lost");
    assert!(
        ids.iter()
            .all(|id| closed.contains(id) || expired.contains(id))
    );
    assert!(stats.closed.values().all(|n| *n == 1), "closed once each");
    assert_eq!(queues.depth(&queues.dead).await, 0, "nothing dead-lettered");
    assert_eq!(
        metric(&text, "job_closer_elements_already_closed_total"),
        Some(expired.len() as f64)
    );
    assert_eq!(
        metric(&text, "job_closer_elements_closed_total"),
        Some(closed.len() as f64)
    );
    // The quota counts every element sent, isolation resends included.
    assert_eq!(
        metric(&text, "job_closer_elements_sent_total"),
        Some(figures.elements as f64)
    );
    let isolation = metric(&text, "job_closer_isolation_requests_total").unwrap_or(-1.0);
    assert!(isolation >= 0.0 && isolation <= figures.requests as f64);
    if rate > 0.0 {
        assert!(isolation > 0.0, "culprits were isolated");
    }
    scenario.cleanup().await;
    figures
}

#[tokio::test]
async fn no_job_already_closed_costs_full_batches_as_before() {
    let figures = closes_at(0.0, "iso0").await;
    assert_eq!(figures.requests, CLOSES / 100, "100 elements per request");
    assert_eq!(figures.elements, CLOSES);
}

#[tokio::test]
async fn two_percent_already_closed_costs_at_most_1_2_elements_and_0_4_requests_per_close() {
    let figures = closes_at(0.02, "iso2").await;
    assert!(figures.elements_per_close() <= 1.2);
    assert!(figures.requests_per_close() <= 0.4);
}

#[tokio::test]
async fn ten_percent_already_closed_costs_at_most_1_5_elements_and_0_7_requests_per_close() {
    let figures = closes_at(0.10, "iso10").await;
    assert!(figures.elements_per_close() <= 1.5);
    assert!(figures.requests_per_close() <= 0.7);
}

#[tokio::test]
async fn thirty_percent_already_closed_costs_at_most_2_elements_per_close() {
    let figures = closes_at(0.30, "iso30").await;
    assert!(figures.elements_per_close() <= 2.0);
}

/// The same mechanism for LinkedIn's other unnamed one-job faults: a strict LinkedIn's request-level
/// 400 for a job without any company field (the validator lets it through: LinkedIn documents no
/// company field for CLOSE), and poison that earns a request a 500. The culprits are dead-lettered
/// with LinkedIn's status (`rejected` for the 400, `retries-exhausted` for the poison, as always),
/// every other close is accepted once, and both cost no more than the 10 % figures allow: once
/// culprits are common a 500 splits at once, and a lone poison is given up on after the run of 500s
/// the evidence asks for (`decide::lone_failures_to_give_up`).
#[tokio::test]
async fn unnamed_400s_and_poison_500s_share_the_mechanism() {
    for (fault, label) in [("400 company", "iso400"), ("500 poison", "iso500")] {
        let strict = SandboxConfig {
            strict: true,
            ..SandboxConfig::default()
        };
        let scenario = isolation_scenario(label, strict)
            // Room for the first runs of two 500s (before culprits are known to be common) to be
            // split before the budget they carry is spent.
            .set("RETRY_MAX_ELAPSED_MS", "6000")
            .await;
        let (queues, sandbox) = scenario.parts();
        let ids = unique_ids(label, CLOSES);
        // A tenth of the jobs, drawn at random: exactly a tenth, so that the bounds are checked at
        // 10 %, not at whatever share a coin gave this run.
        let mut drawn = vec![false; ids.len()];
        for i in rand::seq::index::sample(&mut rand::rng(), ids.len(), ids.len() / 10) {
            drawn[i] = true;
        }
        let culprit = |i: usize| drawn[i];
        let bodies: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut body = job(id);
                // A strict LinkedIn wants a company field; the culprits have none.
                if !(culprit(i) && fault.starts_with("400")) {
                    body["companyName"] = serde_json::json!("Acme");
                }
                if culprit(i) && fault.starts_with("500") {
                    body["externalJobPostingId"] = serde_json::json!(format!("poison-{id}"));
                }
                body.to_string()
            })
            .collect();
        sandbox.set_poison_prefix(Some("poison-"));
        queues.publish_backlog(bodies).await;
        let culprits = (0..ids.len()).filter(|&i| culprit(i)).count();
        let mut worker = scenario.spawn_worker();
        let base = metrics_base(&worker).await;
        until_settled(&worker, &base, queues, ids.len()).await;
        let text = metrics_of(&base).await;
        worker.terminate(Duration::from_secs(20)).await;
        if std::env::var_os("DEBUG_ISO").is_some() {
            std::fs::write(format!("/tmp/{label}.log"), worker.log_text()).unwrap();
        }
        let stats = sandbox.stats();
        let figures = Figures::of(sandbox, ids.len());
        let answered_500 = stats.responses_by_status.get(&500).copied().unwrap_or(0);
        println!(
            "isolation, {fault} at 10% ({culprits} of {}): {} requests, {} elements; {:.3} elements and {:.3} requests per close ({} answers 500)",
            ids.len(),
            figures.requests,
            figures.elements,
            figures.elements_per_close(),
            figures.requests_per_close(),
            answered_500,
        );
        assert_eq!(stats.closed.len(), ids.len() - culprits, "{fault}");
        assert!(stats.closed.values().all(|n| *n == 1), "{fault}");
        let dead = queues.drain(&queues.dead).await;
        assert_eq!(dead.len(), culprits, "{fault}");
        // A poison is given up on as it always was: retries-exhausted, LinkedIn's 500.
        let (reason, status) = if fault.starts_with("400") {
            ("rejected", 400)
        } else {
            ("retries-exhausted", 500)
        };
        assert!(
            dead.iter().all(|d| {
                d.header_str("x-error-reason").as_deref() == Some(reason)
                    && d.header_int("x-error-status") == Some(status)
            }),
            "{fault}"
        );
        assert!(metric(&text, "job_closer_isolation_requests_total").unwrap_or(0.0) > 0.0);
        if fault.starts_with("400") {
            assert!(figures.elements_per_close() <= 1.5, "{fault}");
            assert!(figures.requests_per_close() <= 0.7, "{fault}");
        } else {
            // A poison alone is given up on once its run of 500s (its group's counted, once every
            // sibling got through) outweighs LinkedIn's own rate of random failures — here, where
            // LinkedIn fails nothing else, at its first 500 alone or its second — while LinkedIn
            // answers others. The bounds, as for the 400; when every lone poison was
            // retried until RETRY_MAX_ELAPSED_MS it cost 3.2 elements and 2.4 requests per close.
            assert!(figures.elements_per_close() <= 1.5, "{fault}");
            assert!(figures.requests_per_close() <= 0.7, "{fault}");
        }
        scenario.cleanup().await;
    }
}

/// Rule 2, both ways: at 10 % already closed, fresh requests shrink; once the jobs stop being
/// expired, they grow back to BATCH_SIZE by themselves (a short CULPRIT_HALF_LIFE_MS keeps the test
/// short; the default's minutes are checked with a paused clock in `worker::isolation`).
#[tokio::test]
async fn batches_shrink_at_ten_percent_and_grow_back_once_culprits_stop() {
    let scenario = isolation_scenario("isodrop", expiring(0.10))
        .set("CULPRIT_HALF_LIFE_MS", "1000")
        .await;
    let (queues, sandbox) = scenario.parts();
    let first = unique_ids("isodrop-a", 1_000);
    queues
        .publish_backlog(first.iter().map(|id| job(id).to_string()))
        .await;
    let mut worker = scenario.spawn_worker();
    let base = metrics_base(&worker).await;
    until_settled(&worker, &base, queues, first.len()).await;
    let shrunk = *sandbox
        .stats()
        .request_sizes
        .iter()
        .rev()
        .take(50)
        .max()
        .unwrap();
    assert!(shrunk < 20, "requests at 10% stay small: {shrunk}");

    // The culprits stop: closes keep coming, and requests grow back.
    sandbox.set_already_closed_rate(0.0);
    let before = sandbox.stats().request_sizes.len();
    let mut published = first.len();
    let mut grown = false;
    for round in 0..120 {
        let more = unique_ids(&format!("isodrop-b{round}"), 300);
        queues
            .publish_backlog(more.iter().map(|id| job(id).to_string()))
            .await;
        published += more.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = metrics_of(&base).await;
        let sizes = sandbox.stats().request_sizes;
        let recent_full = sizes[before..].iter().rev().take(3).all(|&n| n == 100);
        if metric(&text, "job_closer_batch_target_size") == Some(100.0) && recent_full {
            grown = true;
            println!(
                "isolation: back to requests of 100 after {:.1} s ({} requests since the drop)",
                (round + 1) as f64 * 0.5,
                sizes.len() - before
            );
            break;
        }
    }
    assert!(grown, "requests grew back to BATCH_SIZE");
    until_settled(&worker, &base, queues, published).await;
    worker.terminate(Duration::from_secs(20)).await;
    assert_eq!(queues.depth(&queues.dead).await, 0);
    scenario.cleanup().await;
}

/// Rule 3: what LinkedIn called already closed is remembered for an hour. Duplicates — published
/// right behind their originals (in hand at once) and again once everything settled — are settled
/// as already closed without being sent; a replayed dead letter of one is sent all the same.
#[tokio::test]
async fn duplicates_of_already_closed_jobs_are_never_sent_but_a_replay_is() {
    let scenario = isolation_scenario("isodup", expiring(0.30)).await;
    let (queues, sandbox) = scenario.parts();
    let ids = unique_ids("isodup", 300);
    let mut order = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        order.push(id.clone());
        if i % 3 == 0 {
            order.push(id.clone());
        }
    }
    queues
        .publish_backlog(order.iter().map(|id| job(id).to_string()))
        .await;
    let mut worker = scenario.spawn_worker();
    let base = metrics_base(&worker).await;
    until_settled(&worker, &base, queues, order.len()).await;
    let expired: Vec<String> = sandbox.stats().refused_closes.keys().cloned().collect();
    assert!(expired.len() > 30, "{}", expired.len());

    // Each expired job was settled once on LinkedIn's own 409 (its duplicate from what the worker
    // remembered), and no accepted job was sent again (LinkedIn would have refused it).
    let linkedin_said = |log: &str| -> Vec<String> {
        log_events(log, "Already closed.")
            .into_iter()
            .filter(|event| event["error_message"] == job_closer::ALREADY_CLOSED_MESSAGE)
            .map(|event| event["externalJobPostingId"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut said = linkedin_said(&worker.log_text());
    said.sort();
    assert_eq!(
        said, expired,
        "each expired job settled once on LinkedIn's word"
    );
    let stats = sandbox.stats();
    assert!(
        stats
            .closed
            .keys()
            .all(|id| !stats.refused_closes.contains_key(id))
    );
    assert!(stats.closed.values().all(|n| *n == 1));

    // Everything again, once settled: nothing of it goes to LinkedIn.
    let requests_before = stats.request_sizes.len();
    queues
        .publish_backlog(ids.iter().map(|id| job(id).to_string()))
        .await;
    until_settled(&worker, &base, queues, order.len() + ids.len()).await;
    assert_eq!(
        sandbox.stats().request_sizes.len(),
        requests_before,
        "duplicates were sent"
    );
    assert_eq!(linkedin_said(&worker.log_text()).len(), expired.len());

    // A replayed dead letter is always sent.
    let replayed = &expired[0];
    let mut headers = FieldTable::default();
    headers.insert(REPLAY_COUNT.into(), AMQPValue::LongLongInt(1));
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    assert!(
        publish_confirmed(
            &queues.channel,
            &queues.close,
            job(replayed).to_string().as_bytes(),
            properties
        )
        .await
    );
    let settled = order.len() + ids.len() + 1;
    until_settled(&worker, &base, queues, settled).await;
    let text = metrics_of(&base).await;
    worker.terminate(Duration::from_secs(20)).await;
    assert_eq!(
        linkedin_said(&worker.log_text()).len(),
        expired.len() + 1,
        "the replay was sent and refused"
    );
    assert_eq!(sandbox.stats().request_sizes.len(), requests_before + 1);
    let total = order.len() + ids.len() + 1;
    assert_eq!(
        metric(&text, "job_closer_elements_already_closed_total").unwrap_or(0.0)
            + metric(&text, "job_closer_elements_closed_total").unwrap_or(0.0),
        total as f64
    );
    assert_eq!(queues.depth(&queues.dead).await, 0);
    scenario.cleanup().await;
}
