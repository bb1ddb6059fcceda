//! Fault tests: break things for real — cut the broker socket, SIGKILL the worker, take LinkedIn down,
//! throttle, flood with poison — and count. Every test prints published / closed / dead-lettered /
//! re-sent / lost and asserts lost = 0.

use crate::common;

use common::proxy::{Proxy, upstream_of};
use common::*;
use job_closer::{Fault, SandboxConfig};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn poison_only_linkedin_sees_is_isolated_and_its_neighbours_close() {
    let scenario = Scenario::builder("isolate")
        .set("RETRY_MAX_ELAPSED_MS", "8000")
        .await;
    let (queues, sandbox) = scenario.parts();
    sandbox.set_poison_prefix(Some("poison-"));
    let (mut all, ids) = jobs("good", 60);
    all.insert(30, job("poison-1"));
    queues.publish_jobs(&all).await;
    let started = Instant::now();
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "good neighbours closed", || async {
        closes(sandbox, &ids).0 == 60
    })
    .await;
    let good_done = started.elapsed();
    eventually(SETTLE, "poison dead-lettered", || async {
        queues.depth(&queues.dead).await == 1
    })
    .await;
    worker.terminate(Duration::from_secs(20)).await;
    let dead = queues.drain(&queues.dead).await;
    let tally = Tally {
        published: 61,
        closed: closes(sandbox, &ids).0,
        dead: dead.len(),
        resent: 0,
    };
    tally.print("isolate");
    assert!(
        good_done < Duration::from_secs(6),
        "the good elements waited {good_done:?} behind the poison"
    );
    assert_eq!(dead[0].external_id().as_deref(), Some("poison-1"));
    assert_eq!(dead[0].header_int("x-error-status"), Some(500));
    assert_eq!(
        dead[0].header_str("x-error-reason").as_deref(),
        Some("retries-exhausted")
    );
    assert_eq!(tally.lost(), 0);
    scenario.cleanup().await;
}

/// Messages in a queue, ready or delivered and not yet acked, as the broker counts them. A passive
/// declare counts only the ready ones, which misses what a worker has in hand.
async fn ready_and_unacked(queue: &str) -> u64 {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("rabbitmqctl cannot run ({e}); this test needs it on PATH"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&queue))
        .map(|fields| {
            fields[1..]
                .iter()
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(u64::MAX)
}

#[tokio::test]
async fn a_cut_broker_connection_is_survived_and_nothing_is_lost() {
    let scenario = Scenario::builder("cut")
        .latency(Duration::from_millis(30))
        .await;
    let (queues, sandbox) = scenario.parts();
    let mut env = scenario.env.clone();
    let (all, ids) = jobs("cut", 1500);
    queues.publish_jobs(&all).await;
    let proxy = Proxy::start(upstream_of(&amqp_url())).await;
    set(&mut env, "AMQP_URL", proxy.amqp_url(&amqp_url()));
    set(&mut env, "BATCH_SIZE", "50");
    let mut worker = spawn_worker(&env);

    eventually(SETTLE, "some closed", || async {
        closes(sandbox, &ids).0 >= 200
    })
    .await;
    proxy.refuse(true);
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker stays up"
    );
    proxy.refuse(false);
    eventually(SETTLE, "all closed after reconnecting", || async {
        closes(sandbox, &ids).0 == 1500
    })
    .await;
    // A second cut, without refusing, while work is still going on or just done. Accepted closes are
    // acked only once their task check is confirmed by the broker, so some may still be in hand:
    // they return to the queue, and the reconnected worker sends them again.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for(
        &[&worker],
        SETTLE,
        "what was in hand at the cut is settled again",
        || async { ready_and_unacked(&queues.close).await == 0 },
    )
    .await;
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );

    let tally = scenario.tally(1500, &ids).await;
    let resent = tally.resent;
    tally.print("broker cut");
    let log = worker.log_text();
    assert!(
        log.contains("reconnecting"),
        "reconnect attempts are logged:\n{log}"
    );
    assert_eq!(tally.lost(), 0);
    assert_eq!(queues.depth(&queues.close).await, 0);
    // Only what was in hand when the socket died can be sent twice: at most a prefetch (5 batches
    // of 50) per cut.
    assert!(resent <= 2 * 250, "re-sent {resent}");
    scenario.cleanup().await;
}

#[tokio::test]
async fn sigkill_then_restart_closes_everything() {
    let scenario = Scenario::builder("kill")
        .latency(Duration::from_millis(100))
        .set("BATCH_SIZE", "50")
        .set("MAX_IN_FLIGHT", "4")
        .await;
    let (queues, sandbox) = scenario.parts();
    let (all, ids) = jobs("kill", 1500);
    queues.publish_jobs(&all).await;
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "some closed", || async {
        closes(sandbox, &ids).0 >= 300
    })
    .await;
    worker.signal(Signal::SIGKILL);
    worker.wait(Duration::from_secs(5)).await;
    let after_kill = closes(sandbox, &ids).0;

    let mut restarted = scenario.spawn_worker();
    eventually(SETTLE, "all closed after the restart", || async {
        closes(sandbox, &ids).0 == 1500
    })
    .await;
    restarted.terminate(Duration::from_secs(20)).await;
    let tally = scenario.tally(1500, &ids).await;
    let resent = tally.resent;
    tally.print("sigkill");
    assert!(after_kill < 1500, "the kill happened mid-run");
    assert_eq!(tally.lost(), 0);
    // Bounded by what was in flight: prefetch = 50 * (4 + 1).
    assert!(resent <= 250, "re-sent {resent}");
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_linkedin_outage_is_ridden_out_within_the_prefetch() {
    let scenario = Scenario::builder("outage")
        .set("BATCH_SIZE", "50")
        .set("MAX_IN_FLIGHT", "2")
        .set("RETRY_MAX_ELAPSED_MS", "60000")
        .set("HTTP_TIMEOUT_MS", "500")
        .await;
    let (queues, sandbox) = scenario.parts();
    sandbox.set_outage(Some(Fault::Status {
        status: 503,
        retry_after_secs: None,
        message: Some("Service Unavailable".into()),
    }));
    sandbox.set_token_outage(Some(503));
    let (all, ids) = jobs("outage", 600);
    queues.publish_jobs(&all).await;
    let mut worker = scenario.spawn_worker();

    // Token endpoint down first, then the API answers 503, then it stops answering at all:
    // nothing is dead-lettered and only the prefetch (50 * (2 + 1) = 150) is taken meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sandbox.set_token_outage(None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    sandbox.set_outage(Some(Fault::Hang));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = queues.depth(&queues.close).await;
    assert!(
        waiting >= 450,
        "consumed beyond the prefetch during the outage: {waiting} left"
    );
    assert_eq!(queues.depth(&queues.dead).await, 0);
    sandbox.set_outage(None);

    eventually(SETTLE, "recovered by itself", || async {
        closes(sandbox, &ids).0 == 600
    })
    .await;
    worker.terminate(Duration::from_secs(20)).await;
    let tally = scenario.tally(600, &ids).await;
    tally.print("outage");
    assert_eq!(tally.dead, 0);
    assert_eq!(tally.lost(), 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn throttling_slows_the_whole_worker_and_never_dead_letters() {
    let scenario = Scenario::builder("throttle")
        .set("BATCH_SIZE", "25")
        .set("RETRY_MAX_ELAPSED_MS", "500")
        .await;
    let (queues, sandbox) = scenario.parts();
    sandbox.push_fault(
        Fault::Status {
            status: 429,
            retry_after_secs: Some(2),
            message: Some("Too many requests".into()),
        },
        1,
    );
    sandbox.push_fault(
        Fault::Status {
            status: 429,
            retry_after_secs: None,
            message: None,
        },
        2,
    );
    let (all, ids) = jobs("throttle", 300);
    queues.publish_jobs(&all).await;
    let started = Instant::now();
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "all closed", || async {
        closes(sandbox, &ids).0 == 300
    })
    .await;
    let took = started.elapsed();
    worker.terminate(Duration::from_secs(20)).await;
    let tally = scenario.tally(300, &ids).await;
    tally.print("throttle");
    // 12 batches and 4 in flight: had only the throttled batch waited, the rest would be done at once.
    assert!(
        took >= Duration::from_secs(2),
        "finished in {took:?} despite Retry-After: 2"
    );
    assert_eq!(
        tally.dead, 0,
        "a 429 never dead-letters, even past RETRY_MAX_ELAPSED_MS"
    );
    assert_eq!(tally.lost(), 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn the_rate_limit_holds_over_a_minute() {
    let scenario = Scenario::builder("rate")
        .set("RATE_LIMIT_PER_MINUTE", "60")
        .set("BATCH_SIZE", "20")
        .await;
    let (queues, sandbox) = scenario.parts();
    let (all, ids) = jobs("rate", 80);
    queues.publish_jobs(&all).await;
    let started = Instant::now();
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "the first minute's 60", || async {
        closes(sandbox, &ids).0 == 60
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        closes(sandbox, &ids).0,
        60,
        "no more than 60 within the first minute"
    );
    eventually(
        Duration::from_secs(90),
        "the rest in the next minute",
        || async { closes(sandbox, &ids).0 == 80 },
    )
    .await;
    let took = started.elapsed();
    worker.terminate(Duration::from_secs(20)).await;
    println!("rate limit: 80 elements at 60/minute took {took:?}");
    assert!(took >= Duration::from_secs(59), "{took:?}");
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_poison_flood_is_dead_lettered_and_every_valid_request_closes() {
    let scenario = Scenario::builder("flood").await;
    let (queues, sandbox) = scenario.parts();
    let (valid, ids) = jobs("flood", 200);
    let mut malformed: Vec<Vec<u8>> = Vec::new();
    let mut seed = 0x2545F4914F6CDD1Du64;
    for _ in 0..20 {
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        malformed.push(bytes);
    }
    malformed.push(b"\xc3\x28 invalid utf-8".to_vec());
    malformed.push(vec![b'x'; 1 << 20]);
    let mut huge_object = br#"{"blob":""#.to_vec();
    huge_object.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge_object.extend_from_slice(b"\"}");
    malformed.push(huge_object);
    let depth = 100_000;
    malformed.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
    malformed
        .push(format!("{{\"a\":{}{}}}", "{\"b\":".repeat(depth), "}".repeat(depth)).into_bytes());
    let mut wrong = job("wrong-1");
    wrong["listedAt"] = json!("yesterday");
    malformed.push(wrong.to_string().into_bytes());
    let mut wrong = job("wrong-2");
    wrong["externalJobPostingId"] = json!(42);
    malformed.push(wrong.to_string().into_bytes());
    malformed.push(b"[{\"externalJobPostingId\":\"in-array\"}]".to_vec());
    malformed.push(b"null".to_vec());
    malformed.push(Vec::new());

    for (i, job) in valid.iter().enumerate() {
        queues
            .publish_raw(&queues.close, job.to_string().as_bytes())
            .await;
        if let Some(bad) = malformed.get(i) {
            queues.publish_raw(&queues.close, bad).await;
        }
    }
    let mut worker = scenario.spawn_worker();
    let expected_dead = malformed.len() as u32;
    eventually(SETTLE, "everything settled", || async {
        closes(sandbox, &ids).0 == 200 && queues.depth(&queues.dead).await == expected_dead
    })
    .await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker is still running"
    );
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let dead = queues.drain(&queues.dead).await;
    let tally = Tally {
        published: 200 + malformed.len(),
        closed: closes(sandbox, &ids).0,
        dead: dead.len(),
        resent: 0,
    };
    tally.print("poison flood");
    assert_eq!(tally.lost(), 0);
    for letter in &dead {
        assert_eq!(
            letter.header_str("x-error-reason").as_deref(),
            Some("invalid")
        );
        assert!(!letter.header_str("x-error-message").unwrap().is_empty());
        assert!(
            malformed.contains(&letter.body),
            "dead letter body is an original, byte for byte"
        );
    }
    assert!(!worker.log_text().contains("panicked"));
    scenario.cleanup().await;
}

#[tokio::test]
async fn a_second_signal_exits_at_once_and_loses_nothing() {
    let scenario = Scenario::builder("twice")
        .latency(Duration::from_secs(20))
        .await;
    let (queues, slow) = scenario.parts();
    let (all, ids) = jobs("twice", 100);
    queues.publish_jobs(&all).await;
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "requests in flight", || async {
        slow.stats().requests >= 1
    })
    .await;
    worker.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "waits for in-flight requests"
    );
    let started = Instant::now();
    worker.signal(Signal::SIGTERM);
    worker.wait(Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3));

    let fast = sandbox(SandboxConfig::default()).await;
    let mut again = spawn_worker(&scenario.env_for(&fast));
    eventually(SETTLE, "all closed by the next worker", || async {
        closes(&fast, &ids).0 == 100
    })
    .await;
    again.terminate(Duration::from_secs(20)).await;
    let tally = Tally {
        published: 100,
        closed: closes(&fast, &ids).0,
        dead: queues.depth(&queues.dead).await as usize,
        resent: 0,
    };
    tally.print("second signal");
    assert_eq!(tally.lost(), 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn the_shutdown_timeout_bounds_the_wait_and_gives_everything_back() {
    let scenario = Scenario::builder("timeout")
        .latency(Duration::from_secs(20))
        .set("SHUTDOWN_TIMEOUT_MS", "1000")
        .await;
    let (queues, slow) = scenario.parts();
    let (all, ids) = jobs("timeout", 100);
    queues.publish_jobs(&all).await;
    let mut worker = scenario.spawn_worker();
    eventually(SETTLE, "requests in flight", || async {
        slow.stats().requests >= 1
    })
    .await;
    let started = Instant::now();
    assert_eq!(
        worker.terminate(Duration::from_secs(10)).await.code(),
        Some(0)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually(
        Duration::from_secs(10),
        "every message back in the queue",
        || async { queues.depth(&queues.close).await == 100 },
    )
    .await;
    let fast = sandbox(SandboxConfig::default()).await;
    let mut again = spawn_worker(&scenario.env_for(&fast));
    eventually(SETTLE, "all closed", || async {
        closes(&fast, &ids).0 == 100
    })
    .await;
    again.terminate(Duration::from_secs(20)).await;
    scenario.cleanup().await;
}

/// Peak resident memory of a process, from the kernel's high-water mark.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn drain_backlog(n: usize) {
    let scenario = Scenario::builder("backlog").await;
    let (queues, sandbox) = scenario.parts();
    let body = job("backlog").to_string();
    queues
        .publish_backlog((0..n).map(|i| body.replace("\"backlog\"", &format!("\"backlog-{i}\""))))
        .await;
    let mut worker = scenario.spawn_worker();
    let pid = worker.child.id();
    let started = Instant::now();
    eventually(Duration::from_secs(300), "backlog drained", || async {
        sandbox.stats().closed.len() == n
    })
    .await;
    let took = started.elapsed();
    let peak = peak_rss_kib(pid);
    worker.terminate(Duration::from_secs(20)).await;
    println!(
        "backlog: {n} messages drained in {took:?}, peak RSS {:.1} MiB",
        peak as f64 / 1024.0
    );
    assert!(peak > 0);
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
    assert_eq!(queues.depth(&queues.dead).await, 0);
    scenario.cleanup().await;
}

#[tokio::test]
async fn memory_stays_bounded_while_draining_a_backlog() {
    drain_backlog(20_000).await;
}

/// The full-size soak: `scripts/soak.sh` runs it.
#[tokio::test]
#[ignore]
async fn memory_stays_bounded_while_draining_100k() {
    drain_backlog(100_000).await;
}

// --- the combined-fault soak ---

/// How often the soak cuts the worker's broker connections, and kills and restarts it.
const SOAK_CUT_EVERY: Duration = Duration::from_secs(4);
const SOAK_KILL_EVERY: Duration = Duration::from_secs(15);

/// The seed of everything random in a soak (the sandbox's answers, which ids are published twice,
/// the order, the jitter): `SOAK_SEED`, or a fixed one, so a failing run can be repeated.
fn soak_seed() -> u64 {
    std::env::var("SOAK_SEED")
        .ok()
        .and_then(|seed| seed.trim().parse().ok())
        .unwrap_or(20)
}

/// Everything at once for `chaos`: `valid` distinct closes published over most of it, 5% of them
/// twice and 2% invalid messages beside them, task checks on (a one-second first check), the sandbox
/// answering random 500s, 429s and multi-second stalls (longer than the worker's HTTP timeout, so
/// stalled closes are sent again and answered 409), the broker connections cut every few seconds
/// (the TCP proxy) and the worker SIGKILLed and restarted every ~15 s. Then the faults stop and
/// everything settles: every valid close reached the sandbox, none was dead-lettered, every invalid
/// one was, and nothing is left in any queue.
async fn soak(label: &str, chaos: Duration, valid: usize) {
    use rand::seq::SliceRandom;
    use rand::{RngExt, SeedableRng};
    let seed = soak_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let faults = job_closer::RandomFaults {
        server_error_rate: 0.04,
        throttle_rate: 0.03,
        stall_rate: 0.03,
        stall_ms: 3000,
    };
    let scenario = Scenario::builder(label)
        .sandbox(SandboxConfig {
            seed: Some(seed),
            random_faults: faults,
            ..SandboxConfig::default()
        })
        .task_check_delay_ms(1000)
        .set("HTTP_TIMEOUT_MS", "2000")
        .await;
    let (queues, sandbox) = scenario.parts();
    let proxy = Proxy::start(upstream_of(&amqp_url())).await;
    let mut env = scenario.env.clone();
    set(&mut env, "AMQP_URL", proxy.amqp_url(&amqp_url()));

    let (jobs, ids) = jobs(label, valid);
    let mut bodies: Vec<String> = jobs.iter().map(Value::to_string).collect();
    let twice: Vec<String> = jobs
        .iter()
        .filter(|_| rng.random_bool(0.05))
        .map(Value::to_string)
        .collect();
    let invalid: BTreeSet<String> = (0..valid / 50)
        .map(|i| format!("{label}-invalid-{i}"))
        .collect();
    bodies.extend(twice.iter().cloned());
    bodies.extend(invalid.iter().map(|id| {
        let mut job = job(id);
        job.as_object_mut().unwrap().remove("title");
        job.to_string()
    }));
    bodies.shuffle(&mut rng);
    let published = bodies.len();
    println!(
        "soak {label}: seed {seed}, {:?} of faults, {valid} closes, {} published twice, {} invalid",
        chaos,
        twice.len(),
        invalid.len()
    );

    // The producer publishes straight to the broker (the proxy cuts only the worker), spread over
    // the first 80% of the chaos.
    let pace = chaos.mul_f64(0.8).div_f64(published as f64);
    let close_queue = queues.close.clone();
    let producer = tokio::spawn(async move {
        let connection = connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        let started = Instant::now();
        for (i, body) in bodies.iter().enumerate() {
            tokio::time::sleep_until((started + pace.mul_f64(i as f64)).into()).await;
            let properties = lapin::BasicProperties::default().with_delivery_mode(2);
            assert!(
                publish_confirmed(&channel, &close_queue, body.as_bytes(), properties).await,
                "the broker did not confirm a close request"
            );
        }
        let _ = connection.close(200, "".into()).await;
    });

    let mut worker = spawn_worker(&env);
    let (mut kills, mut cuts) = (0u32, 0u32);
    let started = Instant::now();
    let mut next_cut = started + SOAK_CUT_EVERY;
    let mut next_kill = started + SOAK_KILL_EVERY;
    let mut next_report = started + Duration::from_secs(30);
    while started.elapsed() < chaos {
        let next = next_cut.min(next_kill).min(next_report);
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        if now >= next_kill {
            worker.signal(Signal::SIGKILL);
            worker.wait(Duration::from_secs(10)).await;
            worker = spawn_worker(&env);
            kills += 1;
            next_kill = now + SOAK_KILL_EVERY + Duration::from_millis(rng.random_range(0..2000));
        }
        if now >= next_cut {
            proxy.cut();
            cuts += 1;
            next_cut = now + SOAK_CUT_EVERY + Duration::from_millis(rng.random_range(0..1000));
        }
        if now >= next_report {
            let stats = sandbox.stats();
            println!(
                "soak {label} at {:?}: {} closed, {kills} kills, {cuts} cuts, random faults {:?}",
                started.elapsed(),
                stats.closed.len(),
                stats.random_faults
            );
            next_report = now + Duration::from_secs(30);
        }
    }
    producer.await.expect("the producer published everything");

    // Calm: no more faults; the worker it has now finishes the job.
    sandbox.set_random_faults(job_closer::RandomFaults::default());
    let chaos_took = started.elapsed();
    wait_for(
        &[&worker],
        Duration::from_secs(300),
        "every close settled and every queue empty",
        || async {
            closes(sandbox, &ids).0 == ids.len()
                && ready_and_unacked(&queues.close).await == 0
                && queues.task_depth().await == 0
                && queues.depth(&queues.dead).await as usize >= invalid.len()
        },
    )
    .await;
    let settled_after = started.elapsed() - chaos_took;
    assert_eq!(
        worker.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );

    let stats = sandbox.stats();
    let letters = queues.drain(&queues.dead).await;
    let dead: BTreeSet<String> = letters.iter().filter_map(|d| d.external_id()).collect();
    let valid_dead: Vec<&String> = dead.intersection(&ids).collect();
    let (closed, resent) = closes(sandbox, &ids);
    let sent: usize = stats.request_sizes.iter().sum();
    println!(
        "soak {label}: published {published}, closed {closed} of {valid}, kills {kills}, cuts {cuts}, \
         elements sent per close {:.2}, re-sent {resent}, re-closes answered 409 {}, \
         dead-lettered {} ({} invalid, {} duplicate dead letters), random faults {:?}, \
         chaos {chaos_took:?}, settled {settled_after:?} after",
        sent as f64 / valid as f64,
        stats.refused_closes.values().sum::<u64>(),
        letters.len(),
        dead.len(),
        letters.len() - dead.len(),
        stats.random_faults,
    );
    assert_eq!(closed, valid, "every valid close reached LinkedIn");
    // Why, if one was: the reason, LinkedIn's status and message, and the attempts.
    let why: Vec<String> = letters
        .iter()
        .filter(|d| d.external_id().is_some_and(|id| ids.contains(&id)))
        .map(|d| {
            format!(
                "{:?}: {:?} {:?} {:?} after {:?} attempts",
                d.external_id(),
                d.header_str("x-error-reason"),
                d.header_int("x-error-status"),
                d.header_str("x-error-message"),
                d.header_int("x-attempts"),
            )
        })
        .collect();
    assert!(
        valid_dead.is_empty(),
        "valid closes dead-lettered: {valid_dead:?}: {why:?}"
    );
    assert_eq!(dead, invalid, "every invalid message dead-lettered");
    assert_eq!(
        letters.len(),
        letters.iter().filter(|d| d.external_id().is_some()).count(),
        "every dead letter names its job"
    );
    assert_eq!(queues.depth(&queues.close).await, 0);
    assert_eq!(queues.task_depth().await, 0);
    assert!(kills >= (chaos.as_secs() / 20) as u32, "{kills} kills");
    assert!(cuts >= (chaos.as_secs() / 6) as u32, "{cuts} cuts");
    for kind in ["500", "429", "stall"] {
        assert!(
            stats.random_faults.get(kind).copied().unwrap_or(0) > 0,
            "the sandbox gave no random {kind}: {:?}",
            stats.random_faults
        );
    }
    assert!(
        stats.refused_closes.values().sum::<u64>() > 0,
        "re-closes were answered 409"
    );
    scenario.cleanup().await;
}

#[tokio::test]
async fn two_minutes_of_every_fault_at_once_lose_nothing() {
    soak("soak", Duration::from_secs(120), 3000).await;
}

/// The ten-minute soak: `scripts/soak.sh` runs it.
#[tokio::test]
#[ignore]
async fn ten_minutes_of_every_fault_at_once_lose_nothing() {
    soak("soak10", Duration::from_secs(600), 15_000).await;
}
