use promscale_connector::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
