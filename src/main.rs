//! The `job-closer` binary: parse, start tracing (for the commands that trace) and logging, install
//! signals, run the command, flush the traces, exit with its code.

use clap::Parser;
use job_closer::{Cli, Tracing};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

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
    let default_directives = job_closer::default_log_directives(&cli.command);
    // Before logging, whose subscriber stacks on the tracing layer.
    let mut tracing = if cli.command.traces() {
        match job_closer::start_tracing() {
            Ok(tracing) => Some(tracing),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(error.exit_code());
            }
        }
    } else {
        None
    };
    let layer = tracing.as_mut().and_then(Tracing::take_layer);
    job_closer::init_logging(cli.log_format, default_directives, layer);
    let shutdown = CancellationToken::new();
    if let Err(error) = watch_signals(shutdown.clone()) {
        eprintln!("error: cannot install signal handlers: {error:#}");
        return ExitCode::from(1);
    }
    let result = job_closer::execute(cli.command, shutdown).await;
    if let Some(tracing) = tracing {
        tracing.shutdown().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
