//! `job-closer dlq serve`: the dead-letter console — the failure groups, a chart of when things
//! failed, each group's dead letters and each dead letter's body and headers as web pages, the same
//! data as JSON for scripts, and, only when started with `--actions` and a token, replay, archive
//! and purge buttons.
//!
//! It is a face over `dlq`, not a second `dlq`: every page is drawn from one walk of the queue
//! ([`crate::dlq::walk`], the non-destructive scan, so browsing never removes, reorders or
//! duplicates a dead letter, with a worker running beside it), grouped by `dlq stats`' own counting,
//! its dead letters kept as `dlq list --json`'s records; every button goes through the moving code
//! of `dlq replay`, `dlq export --delete` and `dlq purge`. The one door in is [`serve`], called by
//! the command line.
//!
//! The parts: [`cache`] keeps a walk per selection (and shares the broker, one walk at a time);
//! [`selection`] reads a link's filters and page; [`views`] are the templates, [`chart`] the SVG
//! chart and [`message`] one dead letter in words; [`auth`] the token, the session cookie and the
//! form tokens; [`actions`] the two steps of a button; [`guard`] what every request passes (host,
//! read-only, cross-site) and the headers every response carries; [`routes`] the URLs.
//!
//! Rejected designs: RabbitMQ's management API "get messages" (it takes the messages off the queue
//! and requeues them at the head, reordered); a page that walks the queue on every request (10 to
//! 20 seconds for 100,000 dead letters); a script-driven page over the JSON API (script is what a
//! dead letter must never get to run, and the Content-Security-Policy forbids it); walking on a
//! timer (an idle console would keep hiding the queue from the operator's own `dlq` commands).

mod actions;
mod auth;
mod cache;
mod chart;
mod guard;
mod message;
mod routes;
mod selection;
mod views;

use crate::amqp::AmqpError;
use crate::config::{AmqpArgs, ConfigError, read_secret_file};
use crate::dlq::filter::{Filter, parse_age};
use crate::dlq::scan::{DEAD_LETTER_SETTING, ready_count};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The setting that holds the console's token.
pub(crate) const TOKEN_FILE_SETTING: &str = "DLQ_CONSOLE_TOKEN_FILE";

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    /// Address to serve the console on (host:port; 127.0.0.1:0 picks a free port).
    #[arg(long, env = "DLQ_CONSOLE_LISTEN", default_value = "127.0.0.1:8025")]
    pub(crate) listen: SocketAddr,
    /// Show replay, export and purge buttons (needs DLQ_CONSOLE_TOKEN_FILE); without it every
    /// POST is refused.
    #[arg(long, env = "DLQ_CONSOLE_ACTIONS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) actions: bool,
    /// File holding the token that signs in for the buttons (sign-in form or `Authorization:
    /// Bearer`).
    #[arg(long, env = TOKEN_FILE_SETTING)]
    pub(crate) token_file: Option<PathBuf>,
    /// Where the export button writes its archives (`export --delete`).
    #[arg(long, env = "DLQ_CONSOLE_ARCHIVE_DIR", default_value = ".")]
    pub(crate) archive_dir: PathBuf,
    /// A page older than this reads the queue again (30s, 5m).
    #[arg(long, env = "DLQ_CONSOLE_MAX_AGE", default_value = "5s", value_parser = parse_max_age)]
    pub(crate) max_age: Duration,
    /// A host name the console answers to besides localhost and IP addresses (repeatable or
    /// comma-separated: the name a proxy in front of it forwards).
    #[arg(
        long = "allow-host",
        env = "DLQ_CONSOLE_ALLOW_HOSTS",
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub(crate) allow_hosts: Vec<String>,
    /// What the console shows at most: links narrow it, never widen it.
    #[command(flatten)]
    pub(crate) filter: Filter,
}

fn parse_max_age(text: &str) -> Result<Duration, String> {
    let age = parse_age(text.trim())
        .ok_or_else(|| format!("{text:?} is not an age such as 5s, 30s or 5m"))?;
    Duration::try_from(age).map_err(|_| format!("{text:?} is negative"))
}

/// How the console failed to start or stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    /// Bad settings: fix the command line or a file (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The broker or the dead-letter queue cannot be used (exit 1).
    #[error(transparent)]
    Broker(#[from] AmqpError),
    /// The address is taken or not ours (exit 1).
    #[error("cannot serve the console on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl From<ConfigError> for ConsoleError {
    fn from(error: ConfigError) -> Self {
        ConsoleError::Usage(error.to_string())
    }
}

impl ConsoleError {
    pub(crate) fn is_usage(&self) -> bool {
        matches!(self, ConsoleError::Usage(_))
            || matches!(self, ConsoleError::Broker(AmqpError::Config(_)))
    }
}

/// Serves the console until `shutdown`; the settings are checked, and the dead-letter queue looked
/// at, before anything listens.
pub(crate) async fn serve(
    args: ServeArgs,
    shutdown: CancellationToken,
) -> Result<(), ConsoleError> {
    let auth = match (args.actions, &args.token_file) {
        (false, _) => None,
        (true, None) => {
            return Err(ConsoleError::Usage(format!(
                "--actions needs {TOKEN_FILE_SETTING} (or --token-file): the buttons replay, export and purge dead letters, so they need a token"
            )));
        }
        (true, Some(path)) => Some(auth::Auth::new(&read_secret_file(
            TOKEN_FILE_SETTING,
            path,
        )?)),
    };
    if args.actions && !args.archive_dir.is_dir() {
        return Err(ConsoleError::Usage(format!(
            "DLQ_CONSOLE_ARCHIVE_DIR {} is not a directory: the export button writes its archives there",
            args.archive_dir.display()
        )));
    }
    if !args.actions && args.token_file.is_some() {
        info!("{TOKEN_FILE_SETTING} is set but --actions is not: the console is read-only.");
    }
    let cache = Arc::new(cache::Cache::new(
        args.amqp.clone(),
        args.filter.clone(),
        args.max_age,
        shutdown.clone(),
    ));
    {
        let mut broker = cache.broker().await;
        let connection = broker.connection().await?;
        ready_count(
            connection,
            &args.amqp.dead_letter_queue,
            DEAD_LETTER_SETTING,
        )
        .await?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ConsoleError::Listen {
            addr: args.listen,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ConsoleError::Listen {
            addr: args.listen,
            source,
        })?;
    let mode = if auth.is_some() {
        "actions on: sign in with the token"
    } else {
        "read-only"
    };
    println!("Dead-letter console on http://{bound}/ ({mode})");
    let _ = std::io::stdout().flush();
    info!(
        addr = %bound,
        queue = %args.amqp.dead_letter_queue,
        actions = auth.is_some(),
        "Serving the dead-letter console."
    );
    let state = routes::Console {
        cache: cache.clone(),
        amqp: args.amqp,
        auth,
        plans: actions::Plans::default(),
        archive_dir: args.archive_dir,
        allowed_hosts: args.allow_hosts,
        shutdown: shutdown.clone(),
    };
    let served = axum::serve(listener, routes::router(Arc::new(state)))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    cache.close().await;
    served.map_err(|source| ConsoleError::Listen {
        addr: bound,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_bound_the_cache() {
        assert_eq!(parse_max_age("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_max_age(" 2m "), Ok(Duration::from_secs(120)));
        assert!(parse_max_age("soon").is_err());
        assert!(ConsoleError::Usage("x".into()).is_usage());
        assert!(!ConsoleError::Broker(AmqpError::BadQueueName("q".into())).is_usage());
    }
}
