//! No password of any form of `AMQP_URL` in any output: `run`, `check` and `publish` at
//! `RUST_LOG=trace` with a multi-node `AMQP_URL` (the real broker plus nodes that refuse, each with a
//! password of its own), and with the password from `AMQP_PASSWORD_FILE` and the list from
//! `AMQP_URL_FILE`. Bad files are configuration errors (exit 2) that name the setting, never the
//! content.

use crate::common;

use common::*;
use std::time::Duration;

/// Passwords with characters that need percent-encoding, as an operator would write them.
fn secrets() -> (String, String) {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    (format!("Pw1@:/#?{tag}"), format!("Pw2%,;{tag}"))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn assert_no_secret(output: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!output.contains(secret), "{secret:?} printed in:\n{output}");
        let encoded = encode(secret);
        assert!(
            !output.contains(&encoded),
            "{encoded:?} printed in:\n{output}"
        );
    }
}

#[tokio::test]
async fn no_password_of_a_node_list_appears_at_trace_level() {
    let scenario = Scenario::builder("secrets").undeclared().await;
    let sandbox = &scenario.sandbox;
    let mut env = scenario.env.clone();
    let (first, second) = secrets();
    // The broker (its password is the public default) and two nodes that refuse connections.
    let closed_port = common::rabbit_nodes::free_port();
    let list = format!(
        "amqp://guest:{}@127.0.0.1:{closed_port}/%2f, amqp://guest:guest@127.0.0.1:5672/%2f ,amqps://other:{}@127.0.0.1:{closed_port}/%2f",
        encode(&first),
        encode(&second)
    );
    set(&mut env, "AMQP_URL", &list);
    set(&mut env, "RUST_LOG", "trace");
    set(&mut env, "TASK_CHECK", "off");
    let secrets = [first.as_str(), second.as_str()];

    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.ndjson");
    std::fs::write(&jobs, format!("{}\n{}\n", job("sec-1"), job("sec-2"))).unwrap();
    let (code, output) = run_cli(&["publish", jobs.to_str().unwrap()], &env).await;
    assert_eq!(code, Some(0), "{output}");
    assert_no_secret(&output, &secrets);

    let (code, output) = run_cli(&["check"], &env).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("nodes: amqp://guest:***@127.0.0.1"),
        "{output}"
    );
    assert_no_secret(&output, &secrets);

    let mut worker = spawn_worker(&env);
    eventually(Duration::from_secs(60), "both closed", || async {
        sandbox.stats().closed.len() >= 2
    })
    .await;
    // A few reconnects through the refusing nodes, then a clean stop.
    assert!(worker.terminate(Duration::from_secs(30)).await.success());
    let output = worker.log_text();
    assert!(output.contains("Connected to RabbitMQ."), "{output}");
    assert_no_secret(&output, &secrets);

    // The same list from AMQP_URL_FILE, and every password replaced by AMQP_PASSWORD_FILE: the
    // broker accepts "guest" from the file although every URL names another password.
    let url_file = dir.path().join("amqp-url");
    let password_file = dir.path().join("amqp-password");
    std::fs::write(
        &url_file,
        format!(
            "amqp://guest:{}@127.0.0.1:5672/%2f,amqp://guest:{}@127.0.0.1:{closed_port}/%2f\n",
            encode(&first),
            encode(&second)
        ),
    )
    .unwrap();
    std::fs::write(&password_file, "guest\n").unwrap();
    let mut from_files = env.clone();
    set(
        &mut from_files,
        "AMQP_URL",
        "amqp://nobody:wrong@127.0.0.1:1/%2f",
    );
    set(&mut from_files, "AMQP_URL_FILE", url_file.to_str().unwrap());
    set(
        &mut from_files,
        "AMQP_PASSWORD_FILE",
        password_file.to_str().unwrap(),
    );
    let (code, output) = run_cli(&["check"], &from_files).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("from AMQP_URL_FILE"), "{output}");
    assert_no_secret(&output, &secrets);
    let (code, output) = run_cli(&["dlq", "stats"], &from_files).await;
    assert_eq!(code, Some(0), "{output}");
    assert_no_secret(&output, &secrets);

    // Unreadable and empty files: exit 2, naming the setting, never the content.
    let mut missing = from_files.clone();
    set(
        &mut missing,
        "AMQP_PASSWORD_FILE",
        "/nonexistent/amqp-password",
    );
    let (code, output) = run_cli(&["publish", jobs.to_str().unwrap()], &missing).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("AMQP_PASSWORD_FILE"), "{output}");
    std::fs::write(
        &url_file,
        format!("http://guest:{}@host/\n", encode(&first)),
    )
    .unwrap();
    let (code, output) = run_cli(&["run"], &from_files).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("AMQP_URL_FILE"), "{output}");
    assert_no_secret(&output, &secrets);
    let (code, output) = run_cli(&["run", "--help"], &env).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("AMQP_PASSWORD_FILE") && output.contains("AMQP_TLS_CA_FILE"),
        "{output}"
    );
    assert_no_secret(&output, &secrets);
    scenario.cleanup().await;
}
