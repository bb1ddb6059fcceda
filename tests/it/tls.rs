//! A RabbitMQ node with a TLS listener and a CA the test makes (openssl CLI): once with
//! `verify_none`, once requiring client certificates (`verify_peer`, `fail_if_no_peer_cert`).
//! `publish`, `run` and `check` connect with `AMQP_TLS_CA_FILE` (no `SSL_CERT_FILE` anywhere: the
//! children run with a cleared environment), and the usual mistakes fail saying what failed: the
//! wrong CA, no client certificate, a client certificate from another CA, the wrong host name.
//! LinkedIn calls keep the system roots: the broker CA is not trusted for them.

use crate::common;

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

/// `openssl s_server` presenting a certificate: how the broker's certificate is judged shows at the
/// TLS handshake, before any AMQP, so no broker node is needed for it. Killed when dropped.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl TlsServer {
    fn start(cert: &Path, key: &Path) -> TlsServer {
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            // Kept open: s_server ends at the end of its input.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the openssl CLI is installed (.ci/run installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "openssl s_server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsServer { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The line of `check`'s output for `step`.
fn step_line(output: &str, verdict_and_step: &str) -> String {
    output
        .lines()
        .find(|line| line.starts_with(verdict_and_step))
        .unwrap_or_else(|| panic!("no {verdict_and_step:?} line in:\n{output}"))
        .to_owned()
}

#[tokio::test]
async fn each_certificate_mistake_says_what_to_do_and_names_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let mistakes = certs.mistakes();
    let jobs = dir.path().join("jobs.ndjson");
    std::fs::write(&jobs, format!("{}\n", job("cert-mistake"))).unwrap();
    let base: Vec<(String, String)> = [
        ("AMQP_URL", "amqps://guest:guest@localhost:1/%2f".to_owned()),
        ("LINKEDIN_CLIENT_ID", "id".into()),
        ("LINKEDIN_CLIENT_SECRET", "not-used".into()),
        ("TASK_CHECK", "off".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    // The client certificate: a configuration error (exit 2), in the same words from `check` and
    // from any other command.
    let client_mistakes = [
        (
            &mistakes.v1_client_cert,
            &certs.client_key,
            "AMQP_TLS_CERT_FILE",
            &mistakes.v1_client_cert,
            "is an X.509 v1 certificate, as plain `openssl x509 -req` makes without an extension file, and TLS here takes only X.509 v3: re-issue it as X.509 v3, e.g. with an extension file",
        ),
        (
            &mistakes.expired_client_cert,
            &certs.client_key,
            "AMQP_TLS_CERT_FILE",
            &mistakes.expired_client_cert,
            "expired on 2020-02-01 00:00:00 UTC (valid from 2020-01-01 00:00:00 UTC to 2020-02-01 00:00:00 UTC): renew it",
        ),
        (
            &mistakes.future_client_cert,
            &certs.client_key,
            "AMQP_TLS_CERT_FILE",
            &mistakes.future_client_cert,
            "is not valid before 2099-01-01 00:00:00 UTC (valid from 2099-01-01 00:00:00 UTC to 2099-02-01 00:00:00 UTC",
        ),
        (
            &certs.client_cert,
            &certs.other_client_key,
            "AMQP_TLS_KEY_FILE",
            &certs.other_client_key,
            "is not the key of the certificate in AMQP_TLS_CERT_FILE",
        ),
    ];
    for (cert, key, setting, named, words) in client_mistakes {
        let mut env = base.clone();
        set(&mut env, "AMQP_TLS_CERT_FILE", path(cert));
        set(&mut env, "AMQP_TLS_KEY_FILE", path(key));
        let checked = cli_run(&["check"], &env).await;
        assert_eq!(checked.code, Some(2), "{}", checked.output());
        let line = step_line(&checked.output(), "FAIL  config");
        let expected = format!("{setting} {} is not usable: ", path(named));
        assert!(
            line.contains(&expected) && line.contains(words),
            "{expected}…{words} missing in:\n{line}"
        );
        assert!(!line.contains("does not go with"), "{line}");
        let published = cli_run(&["publish", &path(&jobs)], &env).await;
        assert_eq!(published.code, Some(2), "{}", published.output());
        assert!(
            published.output().contains(&expected) && published.output().contains(words),
            "publish says it otherwise:\n{}",
            published.output()
        );
    }

    // The broker's certificate, as presented at the handshake.
    let broker_mistakes = [
        (
            &mistakes.expired_server_cert,
            "expired on 2020-02-01 00:00:00 UTC (valid from 2020-01-01 00:00:00 UTC to 2020-02-01 00:00:00 UTC): renew it (the broker's ssl_options.certfile",
        ),
        (
            &mistakes.v1_server_cert,
            "is an X.509 v1 certificate, as plain `openssl x509 -req` makes without an extension file, and TLS here takes only X.509 v3: re-issue it as X.509 v3",
        ),
    ];
    for (cert, words) in broker_mistakes {
        let server = TlsServer::start(cert, &certs.server_key);
        let mut env = base.clone();
        set(
            &mut env,
            "AMQP_URL",
            format!("amqps://guest:guest@localhost:{}/%2f", server.port),
        );
        set(&mut env, "AMQP_TLS_CA_FILE", path(&certs.ca));
        let checked = cli_run(&["check"], &env).await;
        assert_eq!(checked.code, Some(1), "{}", checked.output());
        let line = step_line(&checked.output(), "FAIL  broker");
        assert!(
            line.contains("the broker's certificate for \"localhost\"") && line.contains(words),
            "{words} missing in:\n{line}"
        );
        assert!(
            line.contains(&format!("AMQP_TLS_CA_FILE {}", path(&certs.ca))),
            "{line}"
        );
    }

    // An issuer that is not trusted: the CA file that was read, and what it holds.
    let server = TlsServer::start(&certs.server_cert, &certs.server_key);
    let mut env = base.clone();
    set(
        &mut env,
        "AMQP_URL",
        format!("amqps://guest:guest@localhost:{}/%2f", server.port),
    );
    set(&mut env, "AMQP_TLS_CA_FILE", path(&certs.other_ca));
    let checked = cli_run(&["check"], &env).await;
    assert_eq!(checked.code, Some(1), "{}", checked.output());
    let line = step_line(&checked.output(), "FAIL  broker");
    let expected = format!(
        "was issued by \"CN=job-closer test CA, O=job-closer tests\", which is not trusted: it is not among the system roots and AMQP_TLS_CA_FILE {} (which holds \"CN=some other CA\")",
        path(&certs.other_ca)
    );
    assert!(line.contains(&expected), "{expected} missing in:\n{line}");
    drop(server);
}
