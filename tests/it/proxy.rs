//! Proxies as corporate hosts set them machine-wide: LinkedIn-bound calls to a non-loopback host go
//! through `HTTP_PROXY`/`HTTPS_PROXY` (with credentials, masked in `check`) unless `NO_PROXY` says
//! otherwise; loopback — `healthcheck` against 127.0.0.1 or localhost, the in-process sandbox —
//! never does, even when the proxy would answer 502.
//!
//! `linkedin.test` resolves nowhere: only the test's own proxy knows it, and forwards it to the
//! sandbox on 127.0.0.1. Nothing leaves 127.0.0.1.

use crate::common;

use common::http_proxy::HttpProxy;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn linkedin_calls_take_the_proxy_and_loopback_never_does() {
    let scenario = Scenario::builder("proxy")
        .undeclared()
        .set("LINKEDIN_API_URL", "http://linkedin.test")
        .await;
    let (queues, sandbox) = scenario.parts();
    let mut env = scenario.env.clone();
    let proxy = HttpProxy::start(Some(sandbox.addr())).await;
    let bad_gateway = HttpProxy::start(None).await;
    let proxy_password = format!("ProxyPw{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let proxy_with_credentials = format!(
        "http://ops:{proxy_password}@127.0.0.1:{}",
        proxy.addr.port()
    );

    set(
        &mut env,
        "LINKEDIN_TOKEN_URL",
        "http://linkedin.test/oauth/v2/accessToken",
    );
    set(&mut env, "HTTP_PROXY", &proxy_with_credentials);
    set(&mut env, "TASK_CHECK", "off");

    // check: the token comes through the proxy, which is shown with its password masked.
    let (code, output) = run_cli(&["check"], &env).await;
    assert_eq!(code, Some(0), "{output}");
    let proxy_line = output
        .lines()
        .find(|l| l.starts_with("ok    proxy"))
        .unwrap_or_default();
    assert!(
        proxy_line.contains(&format!(
            "through http://ops:***@127.0.0.1:{}/ (HTTP_PROXY)",
            proxy.addr.port()
        )),
        "{output}"
    );
    assert!(!output.contains(&proxy_password), "{output}");
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|s| s
            .request_line
            .starts_with("POST http://linkedin.test/oauth/v2/accessToken")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|s| s
            .proxy_authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))),
        "credentials go as Proxy-Authorization: {seen:?}"
    );

    // run: the closes go through the proxy too.
    queues.declare().await;
    queues.publish_jobs(&[job("px-1"), job("px-2")]).await;
    let mut worker = spawn_worker(&env);
    eventually(
        Duration::from_secs(60),
        "closes through the proxy",
        || async { sandbox.stats().closed.len() >= 2 },
    )
    .await;
    assert!(worker.terminate(Duration::from_secs(30)).await.success());
    assert!(
        proxy.seen().iter().any(|s| s
            .request_line
            .starts_with("POST http://linkedin.test/v2/simpleJobPostings")),
        "{:?}",
        proxy.seen()
    );

    // NO_PROXY: linkedin.test is then reached directly, which fails (it resolves nowhere).
    let before = proxy.seen().len();
    let mut no_proxy = env.clone();
    set(&mut no_proxy, "NO_PROXY", "example.com,linkedin.test");
    let (code, output) = run_cli(&["check"], &no_proxy).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("FAIL  token"), "{output}");
    assert!(output.contains("direct (NO_PROXY)"), "{output}");
    assert_eq!(
        proxy.seen().len(),
        before,
        "NO_PROXY kept the request off the proxy"
    );

    // Loopback is never proxied, even by a proxy that answers 502 to everything.
    let mut broken = worker_env(queues, sandbox);
    for key in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy"] {
        set(&mut broken, key, bad_gateway.url());
    }
    let stats = format!("http://127.0.0.1:{}/_sandbox/stats", sandbox.addr().port());
    let (code, output) = run_cli(&["healthcheck", "--url", &stats], &broken).await;
    assert_eq!(
        code,
        Some(0),
        "healthcheck against 127.0.0.1 bypasses the proxy: {output}"
    );
    let by_name = format!("http://localhost:{}/_sandbox/stats", sandbox.addr().port());
    let (code, output) = run_cli(&["healthcheck", "--url", &by_name], &broken).await;
    assert_eq!(code, Some(0), "and against localhost: {output}");
    let (code, output) = run_cli(&["check", "--sandbox"], &broken).await;
    assert!(
        output.contains("ok    token"),
        "the in-process sandbox is not proxied: {output}"
    );
    assert!(output.contains("loopback is never proxied"), "{output}");
    let _ = code;
    assert!(bad_gateway.seen().is_empty(), "{:?}", bad_gateway.seen());
    // The same proxy does take a non-loopback URL: the 502 is its answer.
    let (code, output) = run_cli(
        &["healthcheck", "--url", "http://linkedin.test/readyz"],
        &broken,
    )
    .await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("502"), "{output}");
    assert_eq!(bad_gateway.seen().len(), 1);
    scenario.cleanup().await;
}
