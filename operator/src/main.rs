//! promscale-operator: will reconcile PromscaleStack and MetricPolicy resources into connector
//! Deployments, Services and database settings. Not implemented yet: it refuses to start
//! rather than pretend to reconcile anything.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "promscale-operator",
    version,
    about = "Kubernetes operator for PromscaleStack and MetricPolicy (not implemented yet)"
)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!("promscale-operator is not implemented yet; deploy promscale-connector directly for now");
    std::process::ExitCode::from(2)
}
