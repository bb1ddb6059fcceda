//! `job-closer check`: the pre-flight for an operator or a deployment pipeline. With the same
//! settings as `run`, it validates the configuration, connects to the broker, checks both queues
//! (do they exist, would `run` declare them with the same arguments, how many messages wait), checks
//! the outcome exchange when `OUTCOME_EXCHANGE` is set (does it exist, is it the durable topic
//! exchange `run` declares), and obtains a token from the token endpoint. It prints one line per step, verdict first:
//!
//! ```text
//! ok    config       queue type quorum, single active consumer off, client id "acme", secret from LINKEDIN_CLIENT_SECRET_FILE
//! ok    broker       connected to amqps://job-closer:***@rabbit-2:5671/%2f (node 2 of 3); nodes: amqps://job-closer:***@rabbit-1:5671/%2f, amqps://job-closer:***@rabbit-2:5671/%2f, amqps://job-closer:***@rabbit-3:5671/%2f
//! ok    tls          amqps on 3 of 3 node(s); trusted: the system roots and AMQP_TLS_CA_FILE /run/secrets/ca.pem (1 certificate(s)); client certificate subject "CN=job-closer" (issuer "CN=Acme CA") from /run/secrets/client.pem
//! ok    close queue  'linkedin.jobs.close' exists with matching arguments; 12 ready, 1 consumer(s)
//! ok    dlq          'linkedin.jobs.close.dead' does not exist yet; `run` declares it
//! ok    alarm        none: RabbitMQ takes publishes (a probe message to no queue was confirmed)
//! ok    outcomes     exchange 'jobs.outcomes' (OUTCOME_EXCHANGE) exists as a durable topic exchange; ...
//! ok    proxy        LinkedIn calls go through http://ops:***@proxy.corp:3128 (HTTPS_PROXY); NO_PROXY=.corp.example
//! ok    tracing      on: OTLP http/protobuf to http://otel-collector:4318/v1/traces, 1 header(s) (values not shown); service "job-closer", sampler parentbased_always_on
//! FAIL  token        the token endpoint refused the client credentials (HTTP 401): ...
//! ```
//!
//! Every step runs even when an earlier one failed (unless it depends on it), so one run shows every
//! problem. The alarm step publishes a one-byte message that no queue receives: RabbitMQ tells a
//! connection that publishing is blocked only once it publishes (see [`crate::amqp::flow`]). Exit code: 0 when all pass, 2 when the configuration is invalid, 1 otherwise. Nothing
//! printed comes from a secret: URLs are shown with their password redacted and the client secret
//! only by where it came from.

use crate::amqp::settings::{BrokerSettings, UrlSource};
use crate::amqp::{self, AmqpError, Connected, Connector, QueueRole, close_or_sever};
use crate::config::{AmqpArgs, Credentials, QueueType, RunArgs, redact_url_password};
use crate::http_proxy::{ProxyRules, describe_route};
use crate::linkedin::token::{ClientSecret, HttpTokenSource, TokenSource};
use crate::outcome;
use crate::sandbox::{Sandbox, SandboxConfig};
use lapin::Connection;
use std::net::SocketAddr;
use std::time::Duration;

/// What the connection is called in the broker's connection list.
const CONNECTION_NAME: &str = "job-closer check";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    Fail,
    Skip,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One printed line: a step and what came of it.
#[derive(Debug)]
pub(crate) struct StepResult {
    pub(crate) step: &'static str,
    pub(crate) verdict: Verdict,
    pub(crate) detail: String,
}

impl StepResult {
    fn ok(step: &'static str, detail: impl Into<String>) -> Self {
        StepResult {
            step,
            verdict: Verdict::Ok,
            detail: detail.into(),
        }
    }

    fn fail(step: &'static str, detail: impl Into<String>) -> Self {
        StepResult {
            step,
            verdict: Verdict::Fail,
            detail: detail.into(),
        }
    }

    fn skip(step: &'static str, detail: impl Into<String>) -> Self {
        StepResult {
            step,
            verdict: Verdict::Skip,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for StepResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<5} {:<12} {}",
            self.verdict.label(),
            self.step,
            self.detail
        )
    }
}

/// Which kind of step failed: the configuration (exit 2), or the broker, a queue or the token
/// endpoint (exit 1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckFailed {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Steps(String),
}

/// Runs every step, printing each line as soon as it is known, and maps the verdicts to an exit.
pub(crate) async fn check(mut args: RunArgs) -> Result<(), CheckFailed> {
    let mut results = Vec::new();
    let mut report = |result: StepResult| {
        println!("{result}");
        results.push((result.step, result.verdict));
    };

    // Kept alive until the token step has used it.
    let _sandbox = match sandbox_for(&mut args).await {
        Ok(sandbox) => sandbox,
        Err(failed) => {
            report(failed);
            None
        }
    };

    let credentials = match check_config(&args) {
        Ok(credentials) => {
            report(StepResult::ok("config", describe_config(&args)));
            Some(credentials)
        }
        Err(problems) => {
            report(StepResult::fail("config", problems.join("; ")));
            // Broker settings are already parsed; still worth checking. The token step needs
            // working credentials and URLs.
            None
        }
    };

    for result in check_broker(&args).await {
        report(result);
    }

    report(StepResult::ok(
        "proxy",
        describe_proxy(&args, &ProxyRules::from_env()),
    ));

    report(match crate::telemetry::describe() {
        Ok(line) => StepResult::ok("tracing", line),
        // Also a configuration problem (exit 2), reported by the config step.
        Err(error) => StepResult::fail("tracing", error.to_string()),
    });

    match credentials {
        Some(credentials) => report(check_token(&args, credentials).await),
        None => report(StepResult::skip("token", "needs a valid configuration")),
    }
    verdict(&results)
}

/// With `--sandbox`: the in-process stand-in, with the LinkedIn settings pointed at it.
async fn sandbox_for(args: &mut RunArgs) -> Result<Option<Sandbox>, StepResult> {
    if !args.sandbox {
        return Ok(None);
    }
    match Sandbox::start(([127, 0, 0, 1], 0).into(), SandboxConfig::default()).await {
        Ok(sandbox) => {
            let config = sandbox.config();
            args.linkedin.use_stand_in(
                sandbox.api_url(),
                sandbox.token_url(),
                config.client_id,
                config.client_secret,
            );
            Ok(Some(sandbox))
        }
        Err(error) => Err(StepResult::fail(
            "config",
            format!("cannot start the sandbox: {error}"),
        )),
    }
}

/// The broker, TLS and queue steps: each queue is looked at only once a node answered.
async fn check_broker(args: &RunArgs) -> Vec<StepResult> {
    let needs_broker = || {
        vec![
            StepResult::skip("close queue", "needs the broker"),
            StepResult::skip("dlq", "needs the broker"),
            StepResult::skip("alarm", "needs the broker"),
        ]
    };
    let Ok(settings) = args.amqp.broker() else {
        // Already reported by the config step.
        let mut results = vec![StepResult::skip("broker", "needs valid broker settings")];
        results.extend(needs_broker());
        results.push(check_outcomes(None, args).await);
        return results;
    };
    let connector = Connector::new(settings.clone(), CONNECTION_NAME);
    match connector.connect().await {
        Ok(Connected {
            connection,
            node,
            index,
            severer,
        }) => {
            let mut results = vec![
                StepResult::ok(
                    "broker",
                    format!(
                        "connected to {node} (node {} of {}); nodes: {}",
                        index + 1,
                        settings.nodes.len(),
                        node_list(&settings)
                    ),
                ),
                StepResult::ok("tls", describe_tls(&settings)),
            ];
            for (step, name, role) in [
                ("close queue", &args.amqp.close_queue, QueueRole::Close),
                ("dlq", &args.amqp.dead_letter_queue, QueueRole::DeadLetter),
            ] {
                results.push(check_queue(&connection, &args.amqp, step, name, role).await);
            }
            results.push(check_outcomes(Some(&connection), args).await);
            // Last: a blocked connection can do nothing more, not even close.
            results.push(check_alarm(&connection).await);
            close_or_sever(&connection, &severer, Duration::from_secs(2)).await;
            results
        }
        Err(error) => {
            let mut results = vec![
                StepResult::fail(
                    "broker",
                    format!("{error}; nodes: {}", node_list(&settings)),
                ),
                StepResult::ok("tls", describe_tls(&settings)),
            ];
            results.extend(needs_broker());
            results.push(check_outcomes(None, args).await);
            results
        }
    }
}

/// Exit 0 when every step passed; a failed config step is a usage error (exit 2).
fn verdict(results: &[(&'static str, Verdict)]) -> Result<(), CheckFailed> {
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, verdict)| *verdict == Verdict::Fail)
        .map(|(step, _)| *step)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let message = format!("check failed: {}", failed.join(", "));
    if failed.contains(&"config") {
        Err(CheckFailed::Config(message))
    } else {
        Err(CheckFailed::Steps(message))
    }
}

/// Every configuration problem at once, so a single run shows them all.
fn check_config(args: &RunArgs) -> Result<Credentials, Vec<String>> {
    let mut problems = Vec::new();
    if let Err(error) = args.amqp.broker() {
        problems.push(error.to_string());
    }
    if let Err(error) = args.retry.policy() {
        problems.push(error.to_string());
    }
    if let Err(error) = crate::telemetry::describe() {
        problems.push(error.to_string());
    }
    if let Err(error) = args.linkedin.check_urls() {
        problems.push(error.to_string());
    }
    if let Err(error) = args.outcomes.exchange() {
        problems.push(error.to_string());
    }
    let metrics_addr = args.metrics_addr.trim();
    if !metrics_addr.is_empty() && metrics_addr.parse::<SocketAddr>().is_err() {
        problems.push(format!(
            "METRICS_ADDR must be host:port (e.g. 127.0.0.1:9464), got {metrics_addr:?}"
        ));
    }
    if args.amqp.queue_type == QueueType::Quorum && args.amqp.delivery_limit == 0 {
        problems.push(
            "DELIVERY_LIMIT must be at least 1: a quorum queue would dead-letter every message on its first redelivery"
                .into(),
        );
    }
    let credentials = args.linkedin.credentials();
    if let Err(error) = &credentials {
        problems.push(error.to_string());
    }
    match credentials {
        Ok(credentials) if problems.is_empty() => Ok(credentials),
        _ => Err(problems),
    }
}

fn describe_config(args: &RunArgs) -> String {
    let queue_type = amqp::queue_type_name(args.amqp.queue_type);
    let secret_from = match (&args.linkedin.linkedin_client_secret_file, args.sandbox) {
        (_, true) => "the in-process sandbox".to_owned(),
        (Some(path), false) => format!("LINKEDIN_CLIENT_SECRET_FILE {}", path.display()),
        (None, false) => "LINKEDIN_CLIENT_SECRET".to_owned(),
    };
    let files = &args.amqp.files;
    let mut broker_from = String::new();
    if let Some(path) = &files.amqp_url_file {
        broker_from.push_str(&format!(", AMQP_URL from AMQP_URL_FILE {}", path.display()));
    }
    if let Some(path) = &files.amqp_password_file {
        broker_from.push_str(&format!(
            ", broker password from AMQP_PASSWORD_FILE {}",
            path.display()
        ));
    }
    format!(
        "queue type {queue_type}, single active consumer {}, client id {:?}, secret from {secret_from}{broker_from}",
        if args.amqp.single_active_consumer {
            "on"
        } else {
            "off"
        },
        args.linkedin.linkedin_client_id.as_deref().unwrap_or(""),
    )
}

fn node_list(settings: &BrokerSettings) -> String {
    let list = settings
        .nodes
        .iter()
        .map(|node| node.redacted())
        .collect::<Vec<_>>()
        .join(", ");
    match settings.url_source {
        UrlSource::Env => list,
        UrlSource::File => format!("{list} (from AMQP_URL_FILE)"),
    }
}

/// TLS in use, what is trusted, and the client certificate.
fn describe_tls(settings: &BrokerSettings) -> String {
    let tls = &settings.tls;
    let on_tls = settings.nodes.iter().filter(|node| node.is_tls()).count();
    let files_given = tls.ca_file.is_some() || tls.client.is_some();
    if on_tls == 0 {
        return if files_given {
            "off: no amqps:// node (AMQP_TLS_* settings are unused)".into()
        } else {
            "off: no amqps:// node".into()
        };
    }
    let trusted = match &tls.ca_file {
        Some(path) => format!(
            "the system roots and AMQP_TLS_CA_FILE {} ({} certificate(s))",
            path.display(),
            tls.extra_roots
        ),
        None => "the system roots (no AMQP_TLS_CA_FILE)".into(),
    };
    let client = match &tls.client {
        Some(identity) => match &identity.summary {
            Some(summary) => format!(
                "client certificate subject \"{}\" (issuer \"{}\") from {}",
                summary.subject,
                summary.issuer,
                identity.cert_file.display()
            ),
            None => format!("client certificate from {}", identity.cert_file.display()),
        },
        None => "no client certificate".into(),
    };
    format!(
        "amqps on {on_tls} of {} node(s); trusted: {trusted}; {client}",
        settings.nodes.len()
    )
}

/// The proxy LinkedIn calls take (credentials masked); loopback never takes one.
fn describe_proxy(args: &RunArgs, rules: &ProxyRules) -> String {
    let route = |text: &str| {
        url::Url::parse(text)
            .map(|target| describe_route(&rules.route(&target)))
            .unwrap_or_else(|_| "(not a URL)".into())
    };
    let api = route(&args.linkedin.linkedin_api_url);
    let token = route(&args.linkedin.linkedin_token_url);
    let mut text = if api == token {
        format!("LinkedIn calls go {api}")
    } else {
        format!("LinkedIn API calls go {api}; token requests go {token}")
    };
    if let Some(no_proxy) = rules.no_proxy() {
        text.push_str(&format!("; NO_PROXY={no_proxy}"));
    }
    text
}

/// Existence by a passive declare; compatibility by declaring the queue with `run`'s arguments,
/// which is a no-op for an equivalent queue and a PRECONDITION_FAILED naming the argument otherwise.
/// A missing queue is not created: `run` declares it.
async fn check_queue(
    connection: &Connection,
    amqp_args: &AmqpArgs,
    step: &'static str,
    name: &str,
    role: QueueRole,
) -> StepResult {
    let existing = match amqp::probe_queue(connection, name).await {
        Ok(existing) => existing,
        Err(AmqpError::MissingQueue { .. }) => {
            return StepResult::ok(
                step,
                format!("'{name}' does not exist yet; `run` declares it"),
            );
        }
        Err(error @ AmqpError::BadQueueName(_)) => {
            return StepResult::fail(step, error.to_string());
        }
        Err(AmqpError::Broker(error)) => {
            return StepResult::fail(step, format!("cannot inspect '{name}': {error}"));
        }
        Err(error) => return StepResult::fail(step, format!("cannot inspect '{name}': {error}")),
    };
    match amqp::declare_queue(connection, name, amqp::queue_arguments(amqp_args, role)).await {
        Ok(_) => {
            let consumers = existing.consumers;
            let replicas = if role == QueueRole::Close
                && !amqp_args.single_active_consumer
                && consumers > 0
            {
                "; with SINGLE_ACTIVE_CONSUMER=false each replica applies its own RATE_LIMIT_PER_MINUTE and token: together they may exceed LinkedIn's limit"
            } else {
                ""
            };
            StepResult::ok(
                step,
                format!(
                    "'{name}' exists with matching arguments; {} ready, {consumers} consumer(s){replicas}",
                    existing.ready,
                ),
            )
        }
        Err(error @ AmqpError::QueueMismatch { .. }) => StepResult::fail(step, error.to_string()),
        Err(error) => StepResult::fail(step, format!("cannot check '{name}': {error}")),
    }
}

/// Whether a memory or disk alarm blocks publishers now.
async fn check_alarm(connection: &Connection) -> StepResult {
    match amqp::probe_publishing(connection).await {
        Ok(None) => StepResult::ok(
            "alarm",
            "none: RabbitMQ takes publishes (a probe message to no queue was confirmed)",
        ),
        Ok(Some(reason)) => StepResult::fail(
            "alarm",
            format!(
                "RabbitMQ blocks publishing: {reason:?} (a memory or disk alarm; `rabbitmq-diagnostics alarms` on a node names it). `run` keeps closing jobs that need nothing published, but dead letters and task checks wait until the alarm clears"
            ),
        ),
        Err(error) if error.to_string().contains("ACCESS_REFUSED") => StepResult::fail(
            "alarm",
            format!(
                "cannot tell: the broker refused the probe publish ({error}); `run` publishes its dead letters and task checks the same way (default exchange), so the user needs write permission there"
            ),
        ),
        Err(error) => StepResult::fail("alarm", format!("cannot tell: {error}")),
    }
}

/// The outcome exchange: not set, or — like a queue — missing (`run` declares it), or existing as the
/// durable topic exchange `run` declares (a declare with `run`'s arguments changes nothing then, and
/// names what differs otherwise). `broker` is `None` when no node answered.
async fn check_outcomes(broker: Option<&Connection>, args: &RunArgs) -> StepResult {
    const STEP: &str = "outcomes";
    let exchange = match args.outcomes.exchange() {
        Ok(None) => {
            return StepResult::ok(
                STEP,
                "OUTCOME_EXCHANGE not set: outcomes go only to the reply_to queue of the requests that name one",
            );
        }
        Ok(Some(exchange)) => exchange,
        Err(_) => return StepResult::skip(STEP, "needs a valid OUTCOME_EXCHANGE"),
    };
    let Some(connection) = broker else {
        return StepResult::skip(STEP, "needs the broker");
    };
    match amqp::probe_exchange(connection, exchange, outcome::EXCHANGE_SETTING).await {
        Ok(()) => {}
        Err(AmqpError::MissingExchange { .. }) => {
            return StepResult::ok(
                STEP,
                format!(
                    "exchange '{exchange}' (OUTCOME_EXCHANGE) does not exist yet; `run` declares it, durable, of type topic"
                ),
            );
        }
        Err(error) => {
            return StepResult::fail(
                STEP,
                format!("cannot inspect exchange '{exchange}': {error}"),
            );
        }
    }
    match outcome::declare_exchange(connection, exchange).await {
        Ok(()) => StepResult::ok(
            STEP,
            format!(
                "exchange '{exchange}' (OUTCOME_EXCHANGE) exists as a durable topic exchange; outcomes go to it with routing keys {}",
                outcome::Kind::ALL.map(outcome::Kind::as_str).join(", ")
            ),
        ),
        Err(error @ AmqpError::ExchangeMismatch { .. }) => {
            StepResult::fail(STEP, error.to_string())
        }
        Err(error) => {
            StepResult::fail(STEP, format!("cannot check exchange '{exchange}': {error}"))
        }
    }
}

/// One token from the token endpoint, through the same client `run` uses.
async fn check_token(args: &RunArgs, credentials: Credentials) -> StepResult {
    let url = args.linkedin.linkedin_token_url.clone();
    let http = match crate::linkedin::http_client(args.linkedin.http_timeout()) {
        Ok(http) => http,
        Err(error) => {
            return StepResult::fail("token", format!("cannot build the HTTP client: {error}"));
        }
    };
    let secret = credentials.client_secret.clone();
    let source = HttpTokenSource::new(
        http,
        url.clone(),
        credentials.client_id,
        ClientSecret::Fixed(credentials.client_secret),
    );
    match source.fetch().await {
        Ok(fresh) => StepResult::ok(
            "token",
            format!(
                "obtained an access token from {} (valid for {} s)",
                redact_url_password(&url),
                fresh.lifetime.as_secs()
            ),
        ),
        // The endpoint's own words are shown; should they ever quote the secret, it is blotted out.
        Err(error) => StepResult::fail("token", error.to_string().replace(secret.expose(), "***")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_with_the_verdict_then_the_step() {
        let line = StepResult::fail("token", "refused").to_string();
        assert_eq!(line, "FAIL  token        refused");
        let line = StepResult::ok("broker", "connected").to_string();
        assert_eq!(line, "ok    broker       connected");
    }
}
