//! The connector's binary: turns transparent huge pages off for itself
//! ([`promscale_connector::huge_pages`]), parses its flags, starts its logs and runs
//! [`promscale_connector::run`] until a shutdown signal.

/// mimalloc rather than the system's allocator: a request's series, labels and samples are
/// allocated by the task that decodes it and freed by the writer task that commits them,
/// often on another thread, which glibc's allocator serves slowly (its free, realloc and
/// malloc took about 40% of the connector's CPU in remote write 2.0's steady state). With
/// mimalloc (`make bench`'s settings, 5 alternating pairs, 2026-12-04) the steady state went
/// from 1.75x-1.85x to 2.09x-2.31x Prometheus 2.42's receiver in remote write 1.0, and from
/// 650,000-930,000 to 1,420,000-1,510,000 samples a second in remote write 2.0 (0.43x-0.61x to
/// 0.92x-0.98x Prometheus 3.16's receiver); rounds of new series did not change.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use promscale_connector::config::Config;

fn main() -> std::process::ExitCode {
    // Before any thread starts (huge_pages.rs says why).
    let huge_pages = promscale_connector::huge_pages::turn_off();
    run(huge_pages)
}

#[tokio::main]
async fn run(huge_pages: std::io::Result<()>) -> std::process::ExitCode {
    let config = Config::parse_with_flags();
    if let Err(e) = promscale_process::init_logs(&config.log_level, config.log_format) {
        eprintln!("{e}");
        return std::process::ExitCode::from(2);
    }
    if let Err(e) = huge_pages {
        tracing::warn!(error = %e, "could not turn transparent huge pages off for the connector: it runs, spending more CPU on zeroing memory");
    }
    match promscale_connector::run(config, promscale_process::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
