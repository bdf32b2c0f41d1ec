//! `tapwire-dataplane --socket PATH [--workers N] [--busy-poll-us N] [--host-interface NAME] [--vxlan-tap-interface NAME] [--metrics-addr ADDR:PORT]`: the forwarder of one node. Run it in
//! the node's network namespace; control connects to the socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tapwire_dataplane::daemon::{self, Options};

/// tapwire's userspace pod-network forwarder.
#[derive(Debug, Parser)]
#[command(name = "tapwire-dataplane", version)]
struct Args {
    /// Unix socket control connects to (created with mode 0600).
    #[arg(long)]
    socket: PathBuf,
    /// Worker threads (each holds one queue of every pod TAP). Default: one per core.
    #[arg(long)]
    workers: Option<usize>,
    /// The node's underlay interface.
    #[arg(long, default_value = "eth0")]
    underlay_interface: String,
    /// UDP port for VXLAN.
    #[arg(long, default_value_t = tapwire_proto::VXLAN_PORT)]
    vxlan_port: u16,
    /// After handling packets, a worker keeps polling (yielding the CPU between polls)
    /// this long before it blocks, so a reply arriving soon finds it awake. 0 disables.
    #[arg(long, default_value_t = daemon::DEFAULT_BUSY_POLL_US, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    busy_poll_us: u32,
    /// The host path TAP the dataplane creates (or reuses) in the node's namespace: the
    /// node's kernel reaches pods through it, and pods reach the node and the world.
    /// An empty name runs without a host path.
    #[arg(long, default_value = daemon::DEFAULT_HOST_INTERFACE)]
    host_interface: String,
    /// The TAP in the node's namespace VXLAN leaves through (created at start, gone at
    /// exit): super-frames cross it whole and the node's kernel routes them out (it needs
    /// Linux 6.17's UDP-tunnel GSO; without it VXLAN is segmented in userspace and sent
    /// on UDP sockets). An empty name always uses the sockets.
    #[arg(long, default_value = daemon::DEFAULT_VXLAN_TAP_INTERFACE)]
    vxlan_tap_interface: String,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9101): per
    /// endpoint and per encapsulation packets and bytes, drops by reason, worker busy
    /// time. Off unless given.
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
    let workers = match args.workers {
        Some(0) => {
            eprintln!("tapwire-dataplane: --workers must be at least 1");
            return ExitCode::from(2);
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let opts = Options {
        socket: args.socket,
        workers,
        underlay_interface: args.underlay_interface,
        vxlan_port: args.vxlan_port,
        busy_poll: std::time::Duration::from_micros(u64::from(args.busy_poll_us)),
        host_interface: Some(args.host_interface).filter(|name| !name.is_empty()),
        vxlan_tap_interface: Some(args.vxlan_tap_interface).filter(|name| !name.is_empty()),
        metrics_addr: args.metrics_addr,
    };
    match daemon::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tapwire-dataplane: {err}");
            ExitCode::FAILURE
        }
    }
}
