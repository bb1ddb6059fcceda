//! The `job-closer` binary: parse, set up logging and signals, run the command, exit with its code.

use clap::Parser;
use job_closer::cli::{self, Cli, LogFormat};
use std::io::IsTerminal;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal: in files, `docker logs` and log shippers they
        // are noise, and styling every line was half the cost of logging each close.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The first SIGTERM/SIGINT asks for a graceful shutdown; a second one exits at once. Nothing is lost
/// either way: unacknowledged deliveries return to the queue when the connection drops.
fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            received += 1;
            if received == 1 {
                tracing::info!("Shutdown requested; a second signal exits at once.");
                shutdown.cancel();
            } else {
                tracing::warn!(
                    "Second signal: exiting now; unacknowledged messages return to the queue."
                );
                std::process::exit(0);
            }
        }
    });
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let shutdown = CancellationToken::new();
    if let Err(error) = watch_signals(shutdown.clone()) {
        eprintln!("error: cannot install signal handlers: {error:#}");
        return ExitCode::from(1);
    }
    match cli::execute(cli.command, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
