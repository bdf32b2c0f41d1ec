//! `tapwire-control --config node.toml [--metrics-addr ADDR:PORT]`: the node agent. Registers the node, keeps the
//! dataplane in step with the datastore, and serves the CNI plugin and the CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tapwire_control::agent;
use tapwire_control::model::NodeConfig;

/// tapwire's node agent.
#[derive(Debug, Parser)]
#[command(name = "tapwire-control", version)]
struct Args {
    /// The node configuration (TOML).
    #[arg(long, default_value = "/etc/tapwire/node.toml")]
    config: PathBuf,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (datastore, IPAM, sync and
    /// CNI latencies and errors); overrides node.toml's `metrics_addr`. Off unless one of
    /// them gives an address.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TAPWIRE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut config = match NodeConfig::load(&args.config) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("tapwire-control: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(addr) = args.metrics_addr {
        config.metrics_addr = Some(addr);
    }
    match agent::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tapwire-control: {err}");
            ExitCode::FAILURE
        }
    }
}
