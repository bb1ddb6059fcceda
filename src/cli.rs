//! The command line: subcommands, their settings, and what each exits with.
//!
//! Exit codes: 0 done; 1 a broker, queue or runtime failure (with a clear message); 2 bad arguments or
//! bad input. `main.rs` only parses, sets up logging and signals, and maps [`CliError`] to a code.

use crate::check::CheckFailed;
use crate::config::{ConfigError, Credentials, RunArgs, expand_connection_name};
use crate::console::{self, ConsoleError, ServeArgs};
use crate::dlq::{self, DlqCommand, DlqError};
use crate::linkedin::LinkedInClient;
use crate::logging::LogFormat;
use crate::metrics::{self, Metrics};
use crate::outcome::Outcomes;
use crate::publish::{self, PublishArgs, PublishError};
use crate::sandbox::{self, Sandbox, SandboxArgs, SandboxConfig};
use crate::tasks::Schedule;
use crate::worker::{Worker, WorkerConfig, WorkerError};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser, Debug)]
#[command(
    name = "job-closer",
    version,
    about = "Closes LinkedIn job postings from a RabbitMQ queue."
)]
pub struct Cli {
    /// Log format: text for people, json for log shippers. Levels come from RUST_LOG.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the worker: consume close requests and close the jobs on LinkedIn.
    Run(Box<RunArgs>),
    /// Publish newline-delimited JSON close requests to the close queue.
    Publish(PublishArgs),
    /// Run the LinkedIn stand-in for tests and local trials.
    Sandbox(SandboxArgs),
    /// Inspect, group, replay (edited if need be), archive, restore or purge the dead letters.
    Dlq(DlqArgs),
    /// Check the configuration, the broker, both queues and the token endpoint; exit 0 when all pass.
    /// Takes the same settings as `run`.
    Check(Box<RunArgs>),
    /// GET a URL and exit 0 on HTTP 200 (container health checks; the image has no curl).
    Healthcheck(HealthcheckArgs),
    /// Print the JSON Schema (2020-12) of a close request, for producers to validate against (with
    /// --outcome: of an outcome message's body).
    Schema(SchemaArgs),
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    /// The schema of the outcome message's body (schema/outcome.schema.json) instead.
    #[arg(long)]
    pub(crate) outcome: bool,
}

/// `job-closer dlq ...`: the dead-letter tools, and the console that serves them as web pages. The
/// console is wired in here, not in `dlq`, because it is built on `dlq` (the module graph stays
/// acyclic).
#[derive(Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub(crate) command: DlqSubcommand,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DlqSubcommand {
    #[command(flatten)]
    Tools(DlqCommand),
    /// Serve the failure groups and the dead letters as web pages (read-only unless --actions).
    Serve(Box<ServeArgs>),
}

/// The logging a command starts with when `RUST_LOG` is unset: the daemons (`run`, `sandbox`, the
/// console) log what they do at `info`; the operator's one-shot commands print their results and
/// only warnings beside them, so that no "Connected to RabbitMQ" line lands between their output.
/// `check` probes queues that may not exist, and lapin logs each expected refusal as an error,
/// which would read as a failure next to check's own verdicts.
pub fn default_log_directives(command: &Command) -> &'static str {
    match command {
        Command::Run(_) | Command::Sandbox(_) => "info",
        Command::Dlq(DlqArgs {
            command: DlqSubcommand::Serve(_),
        }) => "info",
        Command::Check(_) => "warn,lapin=off",
        Command::Publish(_) | Command::Dlq(_) | Command::Healthcheck(_) | Command::Schema(_) => {
            "warn"
        }
    }
}

impl Command {
    /// Whether the command makes spans, and so starts exporting when the `OTEL_*` settings ask for
    /// it: the worker, and `publish` (which starts the trace its messages carry). The other tools
    /// carry trace context (`dlq replay` keeps a dead letter's) but make no spans of their own.
    pub fn traces(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Publish(_))
    }
}

/// `schema/close-request.schema.json`, built in so that `job-closer schema` prints the very file
/// that is published and tested: one source of truth.
pub const CLOSE_REQUEST_SCHEMA: &str = include_str!("../schema/close-request.schema.json");

/// The broker settings of a command that talks to the broker.
fn broker_args(command: &Command) -> Option<&crate::config::AmqpArgs> {
    match command {
        Command::Run(args) | Command::Check(args) => Some(&args.amqp),
        Command::Publish(args) => Some(&args.amqp),
        Command::Dlq(args) => Some(match &args.command {
            DlqSubcommand::Tools(DlqCommand::List(args)) => &args.amqp,
            DlqSubcommand::Tools(DlqCommand::Stats(args)) => &args.amqp,
            DlqSubcommand::Tools(DlqCommand::Replay(args)) => &args.amqp,
            DlqSubcommand::Tools(DlqCommand::Export(args)) => &args.amqp,
            DlqSubcommand::Tools(DlqCommand::Import(args)) => &args.amqp,
            DlqSubcommand::Tools(DlqCommand::Purge(args)) => &args.amqp,
            DlqSubcommand::Serve(args) => &args.amqp,
        }),
        Command::Sandbox(_) | Command::Healthcheck(_) | Command::Schema(_) => None,
    }
}

#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// URL to check.
    #[arg(long, default_value = "http://127.0.0.1:9464/readyz")]
    pub(crate) url: String,
}

/// A failed command, by exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments, configuration or input: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The broker, the network or the runtime failed: exit 1.
    #[error("{0}")]
    Failed(String),
    /// `publish --wait`: every request ended, and some were dead-lettered: exit 3.
    #[error("{0}")]
    DeadLettered(String),
    /// `publish --wait`: the timeout passed with outcomes missing: exit 4.
    #[error("{0}")]
    OutcomesMissing(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::DeadLettered(_) => 3,
            CliError::OutcomesMissing(_) => 4,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(error: ConfigError) -> Self {
        CliError::Usage(error.to_string())
    }
}

impl From<CheckFailed> for CliError {
    fn from(failed: CheckFailed) -> Self {
        match failed {
            CheckFailed::Config(message) => CliError::Usage(message),
            CheckFailed::Steps(message) => CliError::Failed(message),
        }
    }
}

impl From<ConsoleError> for CliError {
    fn from(error: ConsoleError) -> Self {
        if error.is_usage() {
            CliError::Usage(error.to_string())
        } else {
            CliError::Failed(error.to_string())
        }
    }
}

impl From<DlqError> for CliError {
    fn from(error: DlqError) -> Self {
        if error.is_usage() {
            CliError::Usage(error.to_string())
        } else {
            CliError::Failed(error.to_string())
        }
    }
}

pub async fn execute(command: Command, shutdown: CancellationToken) -> Result<(), CliError> {
    // Broker files (AMQP_URL_FILE, AMQP_PASSWORD_FILE, TLS) are read and checked before anything
    // starts: a bad one is a configuration error (exit 2). `check` reports it as its config step.
    if let Some(amqp) = broker_args(&command)
        && !matches!(command, Command::Check(_))
    {
        amqp.broker()?;
    }
    match command {
        Command::Run(args) => run(*args, shutdown).await,
        Command::Publish(args) => run_publish(&args).await,
        Command::Sandbox(args) => sandbox::serve(args, shutdown)
            .await
            .map_err(|e| CliError::Failed(format!("sandbox: {e}"))),
        Command::Dlq(DlqArgs {
            command: DlqSubcommand::Tools(command),
        }) => dlq::execute(command, shutdown)
            .await
            .map_err(CliError::from),
        Command::Dlq(DlqArgs {
            command: DlqSubcommand::Serve(args),
        }) => console::serve(*args, shutdown)
            .await
            .map_err(CliError::from),
        Command::Healthcheck(args) => healthcheck(&args).await,
        Command::Check(args) => crate::check::check(*args).await.map_err(CliError::from),
        Command::Schema(args) => print_schema(if args.outcome {
            crate::outcome::SCHEMA
        } else {
            CLOSE_REQUEST_SCHEMA
        }),
    }
}

fn print_schema(schema: &str) -> Result<(), CliError> {
    use std::io::Write;
    // Not `print!`, which panics when the reader went away (`job-closer schema | head`).
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(schema.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Failed(format!("cannot write the schema: {e}")))
}

async fn run(mut args: RunArgs, shutdown: CancellationToken) -> Result<(), CliError> {
    let retry = args.retry.policy()?;
    // Kept alive for the worker's lifetime when --sandbox is on.
    let _sandbox = if args.sandbox {
        let sandbox_config = SandboxConfig {
            strict: args.sandbox_strict,
            ..SandboxConfig::default()
        };
        let sandbox = Sandbox::start(([127, 0, 0, 1], 0).into(), sandbox_config)
            .await
            .map_err(|e| CliError::Failed(format!("cannot start the sandbox: {e}")))?;
        let config = sandbox.config();
        info!(api_url = %sandbox.api_url(), "Sandbox mode: sending to the in-process LinkedIn stand-in.");
        args.linkedin.use_stand_in(
            sandbox.api_url(),
            sandbox.token_url(),
            config.client_id,
            config.client_secret,
        );
        Some(sandbox)
    } else {
        None
    };
    args.linkedin.check_urls()?;
    let credentials: Credentials = args.linkedin.credentials()?;
    let linkedin = LinkedInClient::new(&args.linkedin, credentials)
        .map_err(|e| CliError::Failed(format!("cannot build the HTTP client: {e}")))?;

    let metrics = Arc::new(Metrics::new());
    if !args.metrics_addr.trim().is_empty() {
        let addr: SocketAddr = args.metrics_addr.trim().parse().map_err(|_| {
            CliError::Usage(format!(
                "METRICS_ADDR must be host:port (e.g. 127.0.0.1:9464), got {:?}",
                args.metrics_addr
            ))
        })?;
        // A taken port (a second replica on the same host with the default address) must not stop
        // closes: the worker runs on, loudly without its endpoints.
        match metrics::serve(addr, metrics.clone(), shutdown.clone()).await {
            Ok(bound) => info!(addr = %bound, "Serving /healthz, /readyz and /metrics."),
            Err(error) => tracing::error!(
                %addr,
                %error,
                "Cannot listen on METRICS_ADDR; running without /healthz, /readyz and /metrics. Give each replica its own METRICS_ADDR."
            ),
        }
    }

    let outcomes = Outcomes::new(args.outcomes.exchange()?, &args.amqp.close_queue)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let config = WorkerConfig {
        batch_size: args.batch.effective_batch_size(),
        linger: args.batch.linger(),
        culprit_half_life: args.batch.culprit_half_life(),
        prefetch: args.batch.prefetch(),
        max_in_flight: usize::from(args.batch.max_in_flight),
        rate_limit_per_minute: args.batch.rate_limit_per_minute,
        rate_limit_per_day: args.batch.rate_limit_per_day,
        already_closed: args.answers.already_closed,
        retry,
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        connection_name: expand_connection_name(&args.amqp_connection_name),
        outcomes: Arc::new(outcomes),
        task_checks: args.tasks.enabled().then(|| {
            Arc::new(Schedule::new(
                &args.amqp.close_queue,
                args.tasks.first_delay(),
            ))
        }),
        amqp: args.amqp,
    };
    Worker::new(config, linkedin, metrics)
        .run(shutdown)
        .await
        .map_err(|WorkerError::Fatal(e)| CliError::Failed(e.to_string()))
}

async fn run_publish(args: &PublishArgs) -> Result<(), CliError> {
    match publish::publish(args).await {
        Ok(report) => {
            report_invalid(&report.skipped);
            if !report.skipped.is_empty() {
                eprintln!("Skipped {} invalid line(s).", report.skipped.len());
            }
            let published = format!(
                "Published {} close request(s) to '{}'.",
                report.published, args.amqp.close_queue
            );
            // With --json, standard output holds nothing but outcome bodies.
            if args.json {
                eprintln!("{published}");
            } else {
                println!("{published}");
            }
            match report.waiter {
                Some(waiter) => await_outcomes(waiter, args.timeout).await,
                None => Ok(()),
            }
        }
        Err(PublishError::InvalidLines(lines)) => {
            report_invalid(&lines);
            Err(CliError::Usage(
                PublishError::InvalidLines(lines).to_string(),
            ))
        }
        Err(error @ PublishError::Read { .. }) => Err(CliError::Usage(error.to_string())),
        Err(error @ (PublishError::Broker { .. } | PublishError::Waiting { .. })) => {
            Err(CliError::Failed(error.to_string()))
        }
    }
}

/// `publish --wait`: the outcomes, then the exit code they call for.
async fn await_outcomes(waiter: publish::wait::Waiter, timeout_secs: u64) -> Result<(), CliError> {
    use publish::wait::Verdict;
    let timeout = Duration::from_secs(timeout_secs);
    match waiter.wait(timeout).await {
        Ok(Verdict::AllClosed) => Ok(()),
        Ok(Verdict::DeadLettered(ids)) => Err(CliError::DeadLettered(format!(
            "{} close request(s) dead-lettered (see `job-closer dlq list`): {}",
            ids.len(),
            ids.join(", ")
        ))),
        Ok(Verdict::Missing(ids)) => Err(CliError::OutcomesMissing(format!(
            "no outcome within {timeout_secs} s for {} close request(s); still waiting: {}",
            ids.len(),
            ids.join(", ")
        ))),
        Err(error) => Err(CliError::Failed(error.to_string())),
    }
}

fn report_invalid(lines: &[(usize, crate::close_request::Invalid)]) {
    for (line, why) in lines {
        eprintln!("line {line}: {why}");
    }
}

async fn healthcheck(args: &HealthcheckArgs) -> Result<(), CliError> {
    let client = crate::linkedin::http_client(Duration::from_secs(5))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    match client.get(&args.url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(CliError::Failed(format!(
            "{} answered {}",
            args.url,
            response.status()
        ))),
        Err(error) => Err(CliError::Failed(format!("{}: {error}", args.url))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_daemons_log_at_info_and_the_one_shot_commands_only_warn() {
        let directives = |args: &[&str]| {
            let cli =
                Cli::try_parse_from(std::iter::once("job-closer").chain(args.iter().copied()))
                    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            default_log_directives(&cli.command)
        };
        assert_eq!(directives(&["run"]), "info");
        assert_eq!(directives(&["sandbox"]), "info");
        assert_eq!(directives(&["dlq", "serve"]), "info");
        assert_eq!(directives(&["check"]), "warn,lapin=off");
        for one_shot in [
            &["publish"][..],
            &["schema"],
            &["healthcheck"],
            &["dlq", "list"],
            &["dlq", "stats", "--json"],
            &["dlq", "replay", "--dry-run"],
            &["dlq", "purge", "--yes"],
        ] {
            assert_eq!(directives(one_shot), "warn", "{one_shot:?}");
        }
    }
}
