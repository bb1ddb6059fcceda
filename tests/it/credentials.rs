//! Credentials that change while the worker runs, end to end against the real RabbitMQ and the
//! sandbox: a LinkedIn client secret rotated in the sandbox holds the worker (a handful of token
//! requests, not a storm; `/readyz` 503 naming the credentials; nothing dead-lettered) until the
//! new secret is in `LINKEDIN_CLIENT_SECRET_FILE` — written by an atomic rename, or by a
//! Kubernetes-style `..data` symlink swap — and then every close goes through, in the same process.
//! A broker password rotated (a user of the test's own, its connection cut) is taken from
//! `AMQP_PASSWORD_FILE` at the reconnect. Files that go empty or unreadable keep the last good value
//! and say so, naming the setting and the path.

use crate::common;

use common::rabbitmqctl::{BrokerUser, close_connection_named, unique};
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(90);

/// How the secret reaches the file, as the operator's tooling would write it.
#[derive(Clone, Copy, Debug)]
enum Mount {
    /// A plain file, replaced by writing a temporary one and renaming it over.
    Renamed,
    /// A Kubernetes Secret volume: `secret` -> `..data/secret`, `..data` -> `..<timestamp>`; an
    /// update writes a new timestamped directory and renames a new `..data` link over the old.
    Kubernetes,
}

/// The secret's file in a directory of the test's own.
struct SecretMount {
    dir: tempfile::TempDir,
    mount: Mount,
    versions: u32,
}

impl SecretMount {
    fn new(mount: Mount, secret: &str) -> SecretMount {
        let mut secret_mount = SecretMount {
            dir: tempfile::tempdir().unwrap(),
            mount,
            versions: 0,
        };
        if let Mount::Kubernetes = mount {
            std::os::unix::fs::symlink("..data/secret", secret_mount.path()).unwrap();
        }
        secret_mount.write(secret);
        secret_mount
    }

    /// What LINKEDIN_CLIENT_SECRET_FILE names.
    fn path(&self) -> PathBuf {
        self.dir.path().join("secret")
    }

    /// Puts `contents` in place the way this mount is updated (a trailing newline, as Kubernetes
    /// and `echo` leave one).
    fn write(&mut self, contents: &str) {
        self.versions += 1;
        let dir = self.dir.path();
        match self.mount {
            Mount::Renamed => {
                let temporary = dir.join(format!(".secret.{}", self.versions));
                std::fs::write(&temporary, format!("{contents}\n")).unwrap();
                std::fs::rename(&temporary, self.path()).unwrap();
            }
            Mount::Kubernetes => {
                let version = format!("..2026_{:02}", self.versions);
                std::fs::create_dir(dir.join(&version)).unwrap();
                std::fs::write(dir.join(&version).join("secret"), format!("{contents}\n")).unwrap();
                std::os::unix::fs::symlink(&version, dir.join("..data_tmp")).unwrap();
                std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
            }
        }
    }

    /// Makes the file unreadable: the Kubernetes link points at a directory that is gone (root
    /// reads any file whatever its mode, so a removed file stands in for a forbidden one).
    fn break_it(&self) {
        match self.mount {
            Mount::Renamed => std::fs::remove_file(self.path()).unwrap(),
            Mount::Kubernetes => {
                let target = std::fs::read_link(self.dir.path().join("..data")).unwrap();
                std::fs::remove_dir_all(self.dir.path().join(target)).unwrap();
            }
        }
    }
}

/// Publishes a close for each of `{prefix}-0` .. `{prefix}-{n-1}`; returns their ids.
async fn publish(queues: &Queues, prefix: &str, n: usize) -> BTreeSet<String> {
    let (all, ids) = jobs(prefix, n);
    queues.publish_jobs(&all).await;
    ids
}

/// Publishes `n` more closes under `prefix`, adds them to `all`, and waits until the sandbox has
/// closed every one of `all`.
async fn close_more(
    worker: &WorkerProcess,
    scenario: &Scenario,
    all: &mut BTreeSet<String>,
    prefix: &str,
    n: usize,
) {
    all.extend(publish(&scenario.queues, prefix, n).await);
    let what = format!("every close, {prefix} included");
    wait_for(&[worker], SETTLE, &what, || async {
        closes(&scenario.sandbox, all).0 == all.len()
    })
    .await;
}

/// The scenario's settings with the client secret in a file of `mount` instead of
/// `LINKEDIN_CLIENT_SECRET`.
fn with_secret_file(scenario: &Scenario, mount: Mount) -> (SecretMount, Vec<(String, String)>) {
    let secret = SecretMount::new(mount, &scenario.sandbox.config().client_secret);
    let mut env = scenario.env.clone();
    without(&mut env, "LINKEDIN_CLIENT_SECRET");
    set(
        &mut env,
        "LINKEDIN_CLIENT_SECRET_FILE",
        secret.path().display().to_string(),
    );
    (secret, env)
}

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// Waits until the worker has said `times` times what is wrong with the file of `setting` at
/// `path` (the ERROR names both).
async fn said_of_file(worker: &WorkerProcess, setting: &str, path: &str, times: usize) {
    let said = format!("{setting} {path}: it ");
    let what = format!("the ERROR naming {setting} and {path}");
    wait_for(&[worker], SETTLE, &what, || async {
        count_lines(&worker.log_text(), &said) >= times
    })
    .await;
}

/// A rotation in the sandbox while the worker runs: held, a handful of token requests, then the
/// new secret through `mount`, and every close through. With task checks on, so that the verifier
/// meets the refusal too.
async fn rotation_is_a_file_change(label: &str, mount: Mount) {
    let scenario = Scenario::builder(label)
        .set("METRICS_ADDR", "127.0.0.1:0")
        .set("BATCH_SIZE", "20")
        .set("RETRY_MAX_MS", "300")
        // Far shorter than the hold: were any of it spent on the refusal, closes would be lost.
        .set("RETRY_MAX_ELAPSED_MS", "1000")
        .task_check_delay_ms(300)
        .await;
    let (queues, sandbox) = scenario.parts();
    let (mut secret, env) = with_secret_file(&scenario, mount);
    let mut worker = spawn_worker(&env);
    let base = metrics_base(&worker).await;
    close_more(
        &worker,
        &scenario,
        &mut BTreeSet::new(),
        &format!("{label}-a"),
        60,
    )
    .await;

    // The secret is rotated in LinkedIn's portal: the old one is refused, its tokens expire.
    let new_secret = unique("RotatedSecret/+=");
    sandbox.rotate_client_secret(&new_secret);
    let second = publish(queues, &format!("{label}-b"), 200).await;
    wait_for(&[&worker], SETTLE, "held for the credentials", || async {
        let text = metrics_of(&base).await;
        let (ready, body) = get(&format!("{base}/readyz")).await;
        metric(&text, "job_closer_linkedin_blocked") == Some(1.0)
            && ready == 503
            && body.contains("refuses the client credentials")
            && body.contains("LINKEDIN_CLIENT_SECRET_FILE")
    })
    .await;
    let requests_at_hold = sandbox.stats().token_requests;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during_hold = sandbox.stats().token_requests - requests_at_hold;
    println!("{label}: {during_hold} token requests in 10 s of hold");
    assert!(
        (1..=6).contains(&during_hold),
        "one token request per backoff step for the whole worker, a handful: {during_hold} in 10 s"
    );
    let text = metrics_of(&base).await;
    assert!(
        metric(&text, "job_closer_token_refusals_total").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503);
    assert_eq!(queues.depth(&queues.dead).await, 0, "nothing dead-lettered");
    let waiting = queues.depth(&queues.close).await;
    assert!(
        waiting >= 150,
        "stopped consuming and gave back: {waiting} of 200 in the queue"
    );

    // The new secret reaches the file: the same process picks it up and carries on.
    secret.write(&new_secret);
    wait_for(
        &[&worker],
        SETTLE,
        "every close after the new secret",
        || async { closes(sandbox, &second).0 == 200 },
    )
    .await;
    wait_for(&[&worker], SETTLE, "ready again", || async {
        get(&format!("{base}/readyz")).await.0 == 200
    })
    .await;
    wait_for(&[&worker], SETTLE, "every task verified", || async {
        let text = metrics_of(&base).await;
        metric(
            &text,
            r#"job_closer_tasks_verified_total{status="SUCCEEDED"}"#,
        ) == Some(260.0)
    })
    .await;
    let text = metrics_of(&base).await;
    assert_eq!(metric(&text, "job_closer_linkedin_blocked"), Some(0.0));
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the same process all along"
    );
    assert!(worker.terminate(Duration::from_secs(30)).await.success());
    assert_eq!(queues.depth(&queues.dead).await, 0);
    assert_eq!(queues.depth(&queues.close).await, 0);
    assert_eq!(queues.task_depth().await, 0);

    let log = worker.log_text();
    let reloaded = format!("client secret reloaded from {}", secret.path().display());
    assert!(log.contains(&reloaded), "{reloaded} missing in:\n{log}");
    let held = count_lines(&log, "refuses the client credentials");
    assert!(
        (1..=2).contains(&held),
        "one ERROR a minute at most, not one per batch: {held}"
    );
    let error = log
        .lines()
        .find(|line| line.contains("refuses the client credentials"))
        .unwrap();
    assert!(
        error.contains("ERROR")
            && error.contains("LINKEDIN_CLIENT_ID")
            && error.contains("LINKEDIN_CLIENT_SECRET_FILE"),
        "{error}"
    );
    assert!(
        count_lines(&log, "No LinkedIn token") <= 2,
        "no line per batch per retry:\n{log}"
    );
    assert!(!log.contains(&new_secret), "the new secret was logged");
    assert!(
        !log.contains(&sandbox_secret_default()),
        "the old secret was logged"
    );
    scenario.cleanup().await;
}

fn sandbox_secret_default() -> String {
    job_closer::SandboxConfig::default().client_secret
}

#[tokio::test]
async fn a_rotated_client_secret_holds_until_the_new_one_is_renamed_into_the_file() {
    rotation_is_a_file_change("rotate-rename", Mount::Renamed).await;
}

#[tokio::test]
async fn a_rotated_client_secret_holds_until_the_kubernetes_secret_is_swapped() {
    rotation_is_a_file_change("rotate-k8s", Mount::Kubernetes).await;
}

/// A secret file that goes empty, then unreadable, keeps the last good value: with every token
/// expired meanwhile, the worker gets new ones with it and closes on.
#[tokio::test]
async fn a_client_secret_file_gone_bad_keeps_the_last_good_secret() {
    let scenario = Scenario::builder("secret-gone-bad")
        .set("TASK_CHECK", "off")
        .await;
    let (queues, sandbox) = scenario.parts();
    let (mut secret, env) = with_secret_file(&scenario, Mount::Kubernetes);
    let mut worker = spawn_worker(&env);
    let path = secret.path().display().to_string();
    let mut all = BTreeSet::new();
    close_more(&worker, &scenario, &mut all, "gone-bad-a", 40).await;
    for (step, spoil) in ["empty", "unreadable"].into_iter().enumerate() {
        match spoil {
            "empty" => secret.write(""),
            _ => secret.break_it(),
        }
        said_of_file(&worker, "LINKEDIN_CLIENT_SECRET_FILE", &path, step + 1).await;
        let tokens_before = sandbox.stats().tokens_issued;
        sandbox.expire_tokens();
        // Closed with new tokens, had with the last good secret.
        close_more(
            &worker,
            &scenario,
            &mut all,
            &format!("gone-bad-{spoil}"),
            40,
        )
        .await;
        assert!(
            sandbox.stats().tokens_issued > tokens_before,
            "a new token was had with the last good secret"
        );
    }
    assert!(worker.terminate(Duration::from_secs(30)).await.success());
    let log = worker.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(&format!("LINKEDIN_CLIENT_SECRET_FILE {path}: it ")))
        .collect();
    assert_eq!(
        errors.len(),
        2,
        "once per change, not at every poll: {errors:?}"
    );
    assert!(
        errors.iter().all(|line| line.contains("ERROR")),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("it is empty; keeping the last good value"),
        "{errors:?}"
    );
    assert!(errors[1].contains("it cannot be read ("), "{errors:?}");
    assert_eq!(queues.depth(&queues.dead).await, 0);
    assert!(!log.contains(&sandbox_secret_default()));
    scenario.cleanup().await;
}

/// Writes `contents` (and a newline) to `path` through a temporary file renamed over it.
fn replace_file(path: &Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{contents}\n")).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The broker password is rotated: the worker reads AMQP_PASSWORD_FILE again at the reconnect and
/// goes on; a file gone empty or missing keeps the last good password.
#[tokio::test]
async fn a_rotated_broker_password_is_read_again_at_the_reconnect() {
    let scenario = Scenario::builder("amqp-password")
        .set("TASK_CHECK", "off")
        .set("METRICS_ADDR", "127.0.0.1:0")
        .await;
    let queues = &scenario.queues;
    let mut user = BrokerUser::new().await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("amqp-password");
    replace_file(&password_file, &user.password);
    let connection_name = unique("job-closer amqp-password");
    let mut env = scenario.env.clone();
    // The URL's own password is wrong: only the file's works.
    set(
        &mut env,
        "AMQP_URL",
        format!("amqp://{}:not-this-one@127.0.0.1:5672/%2f", user.name),
    );
    set(
        &mut env,
        "AMQP_PASSWORD_FILE",
        password_file.display().to_string(),
    );
    set(&mut env, "AMQP_CONNECTION_NAME", &connection_name);
    let mut worker = spawn_worker(&env);
    let base = metrics_base(&worker).await;

    let mut all = BTreeSet::new();
    close_more(&worker, &scenario, &mut all, "amqp-pw-a", 30).await;
    let old_password = user.password.clone();
    let new_password = unique("RotatedAmqpPw");
    user.change_password(&new_password).await;
    replace_file(&password_file, &new_password);
    assert!(
        close_connection_named(&connection_name).await,
        "the worker's connection is listed under its AMQP_CONNECTION_NAME"
    );
    // Closed after reconnecting with the new password.
    close_more(&worker, &scenario, &mut all, "amqp-pw-b", 30).await;

    // Emptied, then removed: the last good password reconnects each time.
    let path = password_file.display().to_string();
    for (step, spoil) in ["empty", "removed"].into_iter().enumerate() {
        match spoil {
            "empty" => std::fs::write(&password_file, "").unwrap(),
            _ => std::fs::remove_file(&password_file).unwrap(),
        }
        wait_for(&[&worker], SETTLE, "the worker's connection", || async {
            close_connection_named(&connection_name).await
        })
        .await;
        said_of_file(&worker, "AMQP_PASSWORD_FILE", &path, step + 1).await;
        // Closed after reconnecting with the last good password.
        close_more(
            &worker,
            &scenario,
            &mut all,
            &format!("amqp-pw-{spoil}"),
            30,
        )
        .await;
    }
    let text = metrics_of(&base).await;
    assert!(
        metric(&text, "job_closer_broker_reconnects_total").unwrap_or(0.0) >= 3.0,
        "{text}"
    );
    assert!(worker.terminate(Duration::from_secs(30)).await.success());
    let log = worker.log_text();
    let reloaded = format!("broker password reloaded from {path}");
    assert_eq!(count_lines(&log, &reloaded), 1, "{log}");
    assert!(
        log.contains(&format!(
            "AMQP_PASSWORD_FILE {path}: it is empty; keeping the last good value."
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("AMQP_PASSWORD_FILE {path}: it cannot be read (")),
        "{log}"
    );
    for password in [&old_password, &new_password] {
        assert!(
            !log.contains(password.as_str()),
            "a broker password was logged"
        );
    }
    assert_eq!(queues.depth(&queues.dead).await, 0);
    scenario.cleanup().await;
}
