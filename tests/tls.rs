//! A RabbitMQ node with a TLS listener and a CA the test makes (openssl CLI): once with
//! `verify_none`, once requiring client certificates (`verify_peer`, `fail_if_no_peer_cert`).
//! `publish`, `run` and `check` connect with `AMQP_TLS_CA_FILE` (no `SSL_CERT_FILE` anywhere: the
//! children run with a cleared environment), and the usual mistakes fail saying what failed: the
//! wrong CA, no client certificate, a client certificate from another CA, the wrong host name.
//! LinkedIn calls keep the system roots: the broker CA is not trusted for them.

mod common;

use common::certs::Certs;
use common::rabbit_nodes::{RabbitNodes, free_port};
use common::*;
use job_closer::SandboxConfig;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn tls_config(port: u16, certs: &Certs, require_client_certificate: bool) -> String {
    let (verify, fail) = if require_client_certificate {
        ("verify_peer", "true")
    } else {
        ("verify_none", "false")
    };
    format!(
        "listeners.ssl.1 = 127.0.0.1:{port}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = {verify}\nssl_options.fail_if_no_peer_cert = {fail}\n",
        certs.ca.display(),
        certs.server_cert.display(),
        certs.server_key.display()
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_and_client_certificates_work_and_mistakes_say_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    // The broker runs as the rabbitmq user and must read its certificate and key.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let certs = Certs::make(dir.path());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let open_port = free_port();
    let mutual_port = free_port();
    let nodes = {
        let (open, mutual) = (
            tls_config(open_port, &certs, false),
            tls_config(mutual_port, &certs, true),
        );
        tokio::task::spawn_blocking(move || {
            RabbitNodes::start(
                2,
                move |i, _| if i == 0 { open.clone() } else { mutual.clone() },
            )
        })
        .await
        .unwrap()
    };

    let sandbox = sandbox(SandboxConfig::default()).await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let close = format!("test.tls.{id}");
    let config = sandbox.config();
    let base: Vec<(String, String)> = [
        (
            "AMQP_URL",
            format!("amqps://guest:guest@localhost:{open_port}/%2f"),
        ),
        ("AMQP_TLS_CA_FILE", path(&certs.ca)),
        ("CLOSE_QUEUE", close.clone()),
        ("DEAD_LETTER_QUEUE", format!("{close}.dead")),
        ("TASK_CHECK", "off".into()),
        ("LINKEDIN_API_URL", sandbox.api_url()),
        ("LINKEDIN_TOKEN_URL", sandbox.token_url()),
        ("LINKEDIN_CLIENT_ID", config.client_id.clone()),
        ("LINKEDIN_CLIENT_SECRET", config.client_secret.clone()),
        ("BATCH_LINGER_MS", "100".into()),
        ("RATE_LIMIT_PER_MINUTE", "0".into()),
        ("METRICS_ADDR", "".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let jobs = dir.path().join("jobs.ndjson");
    let write_jobs = |prefix: &str| {
        let lines: Vec<String> = (0..3)
            .map(|n| job(&format!("{prefix}-{n}")).to_string())
            .collect();
        std::fs::write(&jobs, lines.join("\n")).unwrap();
    };

    // 1. verify_none: publish and close over TLS with the private CA.
    write_jobs(&format!("tls-{id}-a"));
    let published = cli_run(&["publish", &path(&jobs)], &base).await;
    assert_eq!(published.code, Some(0), "{}", published.output());
    let mut worker = spawn_worker(&base);
    eventually(Duration::from_secs(60), "three closes over TLS", || async {
        sandbox.stats().closed.len() >= 3
    })
    .await;
    assert!(worker.terminate(Duration::from_secs(30)).await.success());
    assert!(
        worker.log_text().contains("amqps://guest:***@localhost"),
        "{}",
        worker.log_text()
    );

    // 2. The wrong CA, and no CA at all: the issuer is named.
    let mut wrong_ca = base.clone();
    set(&mut wrong_ca, "AMQP_TLS_CA_FILE", path(&certs.other_ca));
    let checked = cli_run(&["check"], &wrong_ca).await;
    assert_eq!(checked.code, Some(1), "{}", checked.output());
    assert!(
        checked.output().contains("FAIL  broker"),
        "{}",
        checked.output()
    );
    assert!(
        checked.output().contains("job-closer test CA"),
        "names the issuer:\n{}",
        checked.output()
    );
    assert!(
        checked.output().contains("not trusted"),
        "{}",
        checked.output()
    );
    let mut no_ca = base.clone();
    no_ca.retain(|(k, _)| k != "AMQP_TLS_CA_FILE");
    let published = cli_run(&["publish", &path(&jobs)], &no_ca).await;
    assert_eq!(published.code, Some(1), "{}", published.output());
    assert!(
        published.output().contains("AMQP_TLS_CA_FILE"),
        "says how to trust it:\n{}",
        published.output()
    );

    // 3. The wrong host name: the certificate is for localhost only.
    let mut wrong_host = base.clone();
    set(
        &mut wrong_host,
        "AMQP_URL",
        format!("amqps://guest:guest@127.0.0.1:{open_port}/%2f"),
    );
    let checked = cli_run(&["check"], &wrong_host).await;
    assert_eq!(checked.code, Some(1), "{}", checked.output());
    assert!(
        checked
            .output()
            .contains("not valid for the host name \"127.0.0.1\"")
            && checked.output().contains("localhost"),
        "names the host and the certificate's names:\n{}",
        checked.output()
    );

    // 4. A broker that requires client certificates.
    let mut mutual = base.clone();
    set(
        &mut mutual,
        "AMQP_URL",
        format!("amqps://guest:guest@localhost:{mutual_port}/%2f"),
    );
    let without = cli_run(&["publish", &path(&jobs)], &mutual).await;
    assert_eq!(without.code, Some(1), "{}", without.output());
    assert!(
        without.output().contains("AMQP_TLS_CERT_FILE"),
        "says a client certificate is needed:\n{}",
        without.output()
    );
    let mut stranger = mutual.clone();
    set(
        &mut stranger,
        "AMQP_TLS_CERT_FILE",
        path(&certs.other_client_cert),
    );
    set(
        &mut stranger,
        "AMQP_TLS_KEY_FILE",
        path(&certs.other_client_key),
    );
    let refused = cli_run(&["publish", &path(&jobs)], &stranger).await;
    assert_eq!(refused.code, Some(1), "{}", refused.output());
    assert!(
        refused.output().contains("client certificate") && refused.output().contains("CN=stranger"),
        "names the refused client certificate:\n{}",
        refused.output()
    );

    set(&mut mutual, "AMQP_TLS_CERT_FILE", path(&certs.client_cert));
    set(&mut mutual, "AMQP_TLS_KEY_FILE", path(&certs.client_key));
    write_jobs(&format!("tls-{id}-b"));
    let published = cli_run(&["publish", &path(&jobs)], &mutual).await;
    assert_eq!(published.code, Some(0), "{}", published.output());
    let checked = cli_run(&["check"], &mutual).await;
    assert_eq!(checked.code, Some(0), "{}", checked.output());
    let output = checked.output();
    let tls_line = output
        .lines()
        .find(|l| l.starts_with("ok    tls"))
        .unwrap_or_default();
    assert!(
        tls_line.contains("CN=job-closer-test-client"),
        "{}",
        checked.output()
    );
    assert!(tls_line.contains(&path(&certs.ca)), "{}", checked.output());
    let mut worker = spawn_worker(&mutual);
    eventually(
        Duration::from_secs(60),
        "three more closes over mutual TLS",
        || async { sandbox.stats().closed.len() >= 6 },
    )
    .await;
    assert!(worker.terminate(Duration::from_secs(30)).await.success());

    // 5. LinkedIn calls keep the system roots: the broker's CA does not make a server with a
    // certificate from it trusted for them (the TLS port stands in for such a server).
    let mut linkedin_on_private_ca = base.clone();
    set(
        &mut linkedin_on_private_ca,
        "LINKEDIN_TOKEN_URL",
        format!("https://localhost:{open_port}/oauth/v2/accessToken"),
    );
    let checked = cli_run(&["check"], &linkedin_on_private_ca).await;
    let token_line = checked
        .output()
        .lines()
        .find(|l| l.starts_with("FAIL  token"))
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        token_line.contains("certificate") || token_line.contains("unknownissuer"),
        "the token endpoint's certificate from the broker CA is refused:\n{}",
        checked.output()
    );

    // 6. Unusable files: exit 2, the setting named, the content never shown.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not-a-pem-sekrit\n").unwrap();
    let mut bad = base.clone();
    set(&mut bad, "AMQP_TLS_CA_FILE", path(&garbage));
    let refused = cli_run(&["publish", &path(&jobs)], &bad).await;
    assert_eq!(refused.code, Some(2), "{}", refused.output());
    assert!(
        refused.output().contains("AMQP_TLS_CA_FILE"),
        "{}",
        refused.output()
    );
    assert!(!refused.output().contains("sekrit"), "{}", refused.output());
    let mut half = base.clone();
    set(&mut half, "AMQP_TLS_KEY_FILE", path(&certs.client_key));
    let refused = cli_run(&["dlq", "list"], &half).await;
    assert_eq!(refused.code, Some(2), "{}", refused.output());
    assert!(
        refused.output().contains("AMQP_TLS_CERT_FILE"),
        "{}",
        refused.output()
    );
    drop(nodes);
}
