//! The connector's binary: parses its flags, starts its logs and runs [`promscale_connector::run`]
//! until a shutdown signal.

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

/// Transparent huge pages off for this process, before its threads start. mimalloc asks
/// for them on its arenas (where the kernel offers them on request, as Debian's and Ubuntu's
/// default `madvise` does; `always` gives them unasked), then hands freed memory back in
/// 64 KiB pieces a second later; the next allocation there faults in a whole 2 MiB page,
/// which the kernel zeroes first. That zeroing (`clear_page_erms`) was a quarter of the
/// connector's CPU in a run of `remote-write-bench --rollouts 30`. Without huge pages
/// (`make bench`'s settings, 12 alternating pairs, 2026-12-04, medians) the steady state
/// went from 1.92x to 2.10x Prometheus 2.42's receiver and the slowest request of a run
/// from 180 ms (85 to 292) to 102 ms (93 to 117); rounds of new series did not change.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) with PR_SET_THP_DISABLE takes integer arguments only and changes a
    // flag of this process's memory map; it has no other effect.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    run()
}

#[tokio::main]
async fn run() -> std::process::ExitCode {
    let config = Config::parse_with_flags();
    if let Err(e) = promscale_process::init_logs(&config.log_level, config.log_format) {
        eprintln!("{e}");
        return std::process::ExitCode::from(2);
    }
    match promscale_connector::run(config, promscale_process::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
