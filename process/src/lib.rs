//! What every promscale binary does around its work: structured logs on stderr in the format
//! the user picked, and a future that completes when Kubernetes (or a person) asks the process
//! to stop.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (key=value fields)
    Logfmt,
    /// One JSON object per line
    Json,
}

/// Installs the global `tracing` subscriber; `level` is a level or tracing's `target=level`
/// list. Colours only on a terminal.
pub fn init_logs(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("invalid --log.level {level:?}: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Logfmt => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM (what Kubernetes sends before killing a pod).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: finishing what is in flight");
}
