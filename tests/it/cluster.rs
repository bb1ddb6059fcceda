//! A three-node RabbitMQ cluster of the test's own, quorum queues, and a worker given all three
//! nodes: the node it is connected to is stopped (`rabbitmqctl stop_app`), later another one is
//! killed (SIGKILL of its beam), and nothing is lost — published = closed + dead-lettered — while
//! consuming resumes on another node within seconds.
//!
//! One cluster serves this binary's test; starting it takes ~20–30 s on this machine.

use crate::common;

use common::rabbit_nodes::{RabbitNodes, free_port};
use common::*;
use job_closer::SandboxConfig;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A connection to the first node of `candidates` that answers.
async fn connect_to_any(nodes: &RabbitNodes, candidates: &[usize]) -> Connection {
    for &i in candidates {
        if let Ok(connection) =
            Connection::connect(&nodes.nodes[i].url(), ConnectionProperties::default()).await
        {
            return connection;
        }
    }
    panic!("no node of {candidates:?} of the test cluster accepts connections");
}

/// Publishes close requests persistently with confirms, through a node in `alive`; returns the
/// ids the broker confirmed.
async fn publish(nodes: &RabbitNodes, alive: &[usize], queue: &str, ids: &[String]) -> Vec<String> {
    let connection = connect_to_any(nodes, alive).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirmed = Vec::new();
    for id in ids {
        let body = serde_json::to_vec(&job(id)).unwrap();
        let properties = BasicProperties::default().with_delivery_mode(2);
        if publish_confirmed(&channel, queue, &body, properties).await {
            confirmed.push(id.clone());
        }
    }
    let _ = connection.close(200, "published".into()).await;
    confirmed
}

async fn depth(nodes: &RabbitNodes, alive: &[usize], queue: &str) -> u32 {
    let connection = connect_to_any(nodes, alive).await;
    let channel = connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable().passive(),
            FieldTable::default(),
        )
        .await;
    let count = declared.map(|q| q.message_count()).unwrap_or(0);
    let _ = connection.close(200, "".into()).await;
    count
}

/// The node (other than `not`) holding the worker's connection, waiting up to `within`.
async fn connected_node(
    nodes: &RabbitNodes,
    name: &str,
    not: Option<usize>,
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let found: Vec<usize> = nodes
            .nodes_with_connection(name)
            .into_iter()
            .filter(|&i| Some(i) != not)
            .collect();
        if let Some(&i) = found.first() {
            return i;
        }
        if Instant::now() > deadline {
            panic!(
                "the worker's connection '{name}' did not show up on any other node within {within:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the test watches while it takes nodes away: the cluster, the worker (its connection named
/// `name`) and the sandbox it closes on.
struct Watch<'a> {
    nodes: &'a RabbitNodes,
    name: &'a str,
    worker: &'a WorkerProcess,
    sandbox: &'a job_closer::Sandbox,
}

impl Watch<'_> {
    /// Waits until the worker, whose node `lost` went away at `at` (`what`: noun and participle),
    /// is connected to another node and closing again (more than `closed_before` + 5), within 30 s of
    /// the loss; returns the node it moved to.
    async fn moved_on(
        &self,
        lost: usize,
        (noun, participle): (&str, &str),
        at: Instant,
        closed_before: usize,
    ) -> usize {
        let next = connected_node(self.nodes, self.name, Some(lost), Duration::from_secs(60)).await;
        let reconnected = at.elapsed();
        wait_for(
            &[self.worker],
            Duration::from_secs(60),
            &format!("closing again after the {noun}"),
            || async { self.sandbox.stats().closed.len() > closed_before + 5 },
        )
        .await;
        let resumed = at.elapsed();
        println!(
            "{participle} {}: worker on {} after {:.1} s, closing again after {:.1} s",
            self.nodes.nodes[lost].name,
            self.nodes.nodes[next].name,
            reconnected.as_secs_f64(),
            resumed.as_secs_f64()
        );
        assert!(
            resumed < Duration::from_secs(30),
            "consuming resumed only after {resumed:?}"
        );
        next
    }
}

async fn reconnects_metric(port: u16) -> f64 {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let Ok(response) = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return -1.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find(|line| line.starts_with("job_closer_broker_reconnects_total "))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_then_killing_the_connected_node_loses_nothing() {
    let started = Instant::now();
    let nodes = tokio::task::spawn_blocking(|| RabbitNodes::cluster(3))
        .await
        .unwrap();
    println!(
        "three-node cluster up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Slow enough that closes are still under way when the nodes go.
    let sandbox = sandbox(SandboxConfig {
        latency: Duration::from_millis(300),
        ..SandboxConfig::default()
    })
    .await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let close = format!("test.cluster.{id}");
    let dead = format!("{close}.dead");
    let name = format!("cluster-test-{}", &id[..8]);
    let metrics_port = free_port();
    let urls: Vec<String> = nodes.nodes.iter().map(|node| node.url()).collect();
    let mut env = fast_worker_env(&sandbox);
    for (key, value) in [
        ("AMQP_URL", urls.join(",")),
        ("CLOSE_QUEUE", close.clone()),
        ("DEAD_LETTER_QUEUE", dead.clone()),
        ("QUEUE_TYPE", "quorum".into()),
        ("TASK_CHECK", "off".into()),
        ("BATCH_SIZE", "5".into()),
        ("MAX_IN_FLIGHT", "1".into()),
        ("AMQP_CONNECTION_NAME", name.clone()),
        ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
    ] {
        set(&mut env, key, value);
    }
    let mut worker = spawn_worker(&env);

    let watch = Watch {
        nodes: &nodes,
        name: &name,
        worker: &worker,
        sandbox: &sandbox,
    };
    let first = connected_node(&nodes, &name, None, Duration::from_secs(60)).await;
    println!("worker connected to {}", nodes.nodes[first].name);
    let all = [0, 1, 2];
    let mut published: Vec<String> = Vec::new();
    let batch: Vec<String> = (0..120).map(|n| format!("cl-{id}-a{n}")).collect();
    published.extend(publish(&nodes, &all, &close, &batch).await);
    let closed = |sandbox: &job_closer::Sandbox| sandbox.stats().closed.len();
    eventually(Duration::from_secs(60), "the first closes", || async {
        closed(&sandbox) >= 20
    })
    .await;

    // 1. The connected node stops its RabbitMQ application: the worker must move on.
    let before = closed(&sandbox);
    let stopped_at = Instant::now();
    let stop_node = first;
    tokio::task::block_in_place(|| nodes.stop_app(stop_node));
    let second = watch
        .moved_on(stop_node, ("stop", "stopped"), stopped_at, before)
        .await;

    // The stopped node comes back, so that the queue keeps its majority when the next one dies.
    tokio::task::block_in_place(|| nodes.start_app(stop_node));
    let batch: Vec<String> = (0..60).map(|n| format!("cl-{id}-b{n}")).collect();
    let alive: Vec<usize> = all.iter().copied().filter(|&i| i != second).collect();
    published.extend(publish(&nodes, &alive, &close, &batch).await);

    // 2. The node the worker is on now is killed outright.
    let before = closed(&sandbox);
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| nodes.kill(second));
    watch
        .moved_on(second, ("kill", "killed"), killed_at, before)
        .await;

    // Everything published ends closed or dead-lettered.
    let published_ids: BTreeSet<String> = published.iter().cloned().collect();
    let mut dead_count;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = sandbox.stats();
        let closed_ids: BTreeSet<&String> = stats
            .closed
            .keys()
            .filter(|k| published_ids.contains(*k))
            .collect();
        dead_count = depth(&nodes, &alive, &dead).await as usize;
        if closed_ids.len() + dead_count >= published_ids.len() {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = sandbox.stats();
    let closed_ids: BTreeSet<&String> = stats
        .closed
        .keys()
        .filter(|k| published_ids.contains(*k))
        .collect();
    let lost: Vec<&String> = published_ids
        .iter()
        .filter(|id| !closed_ids.contains(id))
        .collect();
    let lost_count = lost.len().saturating_sub(dead_count);
    let reconnects = reconnects_metric(metrics_port).await;
    println!(
        "published {}, closed {}, dead-lettered {dead_count}, lost {lost_count}; closes sent {} (duplicates are redeliveries), job_closer_broker_reconnects_total {reconnects}",
        published_ids.len(),
        closed_ids.len(),
        stats.closed.values().sum::<u64>(),
    );
    assert_eq!(
        published_ids.len(),
        180,
        "the broker confirmed every publish"
    );
    assert_eq!(
        closed_ids.len() + dead_count,
        published_ids.len(),
        "published = closed + dead-lettered; not closed: {lost:?}\nworker log:\n{}",
        worker.log_text()
    );
    assert_eq!(lost_count, 0);
    assert!(
        reconnects >= 2.0,
        "job_closer_broker_reconnects_total counts both failovers, read {reconnects}"
    );
    let log = worker.log_text();
    assert!(
        log.matches("Connected to RabbitMQ.").count() >= 3,
        "connected three times (start, two failovers):\n{log}"
    );
    assert!(
        !log.contains("guest:guest@"),
        "passwords are redacted:\n{log}"
    );

    let status = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", worker.log_text());
    let connection = connect_to_any(&nodes, &alive).await;
    let channel = connection.create_channel().await.unwrap();
    for queue in [&close, &dead] {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    drop(nodes);
}
