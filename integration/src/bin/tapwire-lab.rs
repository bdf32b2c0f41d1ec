//! `tapwire-lab`: tapwire in network namespaces, for people rather than tests.
//!
//! - `tapwire-lab demo` builds a 2-node × 2-pod cluster for each encapsulation mode in turn
//!   and walks through the life of a packet: the pod's routes, a cross-node ping, the
//!   pod's neighbour table, and the packets on the underlay as tcpdump decodes them.
//! - `tapwire-lab measure` measures ping round-trip time and single-stream TCP throughput
//!   (iperf3) across nodes for each mode, next to kernel baselines measured in the same
//!   run: a routed veth path between two pods of one node, and two nodes joined by the
//!   kernel's VXLAN the way Calico's Linux dataplane configures it.
//!
//! Every lab is removed when its step ends, on errors, and on Ctrl-C. Needs root; the
//! tapwire binaries are taken from this executable's directory (or `$TAPWIRE_BIN_DIR`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tapwire_control::podnet::pod_mtu;
use tapwire_integration::kernel::{self, TxChecksum};
use tapwire_integration::lab::{bin_dir, UNDERLAY_MTU};
use tapwire_integration::traffic::{ping_in, wait_reachable, IperfReport};
use tapwire_integration::{
    capture, install_signal_cleanup, iperf3, Cluster, ClusterSpec, Lab, LabError, Mode, Pod,
};

/// tapwire in network namespaces: a guided demo and side-by-side measurements.
#[derive(Debug, Parser)]
#[command(name = "tapwire-lab", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Walk through the life of a packet in each encapsulation mode.
    Demo {
        /// Only this mode (default: none, ipip and vxlan in turn).
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
    },
    /// Measure ping RTT and TCP throughput per mode next to kernel baselines.
    Measure {
        /// Seconds of iperf3 per path.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Pings per path (100 ms apart).
        #[arg(long, default_value_t = 20)]
        pings: u32,
        /// Dataplane worker threads per node.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    None,
    Ipip,
    Vxlan,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::None => Mode::None,
            ModeArg::Ipip => Mode::Ipip,
            ModeArg::Vxlan => Mode::Vxlan,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !tapwire_integration::is_root() {
        eprintln!("tapwire-lab: needs root (it creates network namespaces, veths and TAPs)");
        return ExitCode::from(2);
    }
    install_signal_cleanup();
    let result = match args.command {
        Command::Demo { mode } => {
            let modes = mode.map_or(Mode::ALL.to_vec(), |m| vec![m.into()]);
            modes.into_iter().try_for_each(demo)
        }
        Command::Measure {
            seconds,
            pings,
            workers,
        } => measure(seconds, pings, workers),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tapwire-lab: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The pool setting a mode corresponds to, for headings.
fn pool_setting(mode: Mode) -> &'static str {
    match mode {
        Mode::None => "ipipMode: Never, vxlanMode: Never",
        Mode::Ipip => "ipipMode: Always",
        Mode::Vxlan => "vxlanMode: Always",
    }
}

fn show(prompt: &str, command: &str, output: &str) {
    println!("{prompt}$ {command}");
    for line in output.lines() {
        println!("    {line}");
    }
    println!();
}

fn demo(mode: Mode) -> Result<(), LabError> {
    println!(
        "=== {mode}: IP pool 10.65.0.0/16 with {} ===\n",
        pool_setting(mode)
    );
    let lab = Lab::new()?;
    let cluster = Cluster::start(&lab, mode)?;
    for node in &cluster.nodes {
        let pods: Vec<String> = cluster
            .pods_on(&node.name)
            .iter()
            .map(|p| format!("{} {}", p.name, p.ip))
            .collect();
        println!(
            "{}: underlay {} (eth0), block {}, tunnel address {}; pods: {}",
            node.name,
            node.underlay_ip,
            node.block,
            node.tunnel_ip,
            pods.join(", ")
        );
    }
    println!();
    let a = cluster.pod("pod-a")?;
    let c = cluster.pod("pod-c")?;

    show("pod-a", "ip route", &a.exec(&["ip", "route"])?);
    show(
        "pod-a",
        "ip -d link show eth0",
        &a.exec(&["ip", "-d", "link", "show", "eth0"])?,
    );
    wait_reachable(a, c.ip, Duration::from_secs(15))?;
    let node1 = &cluster.nodes[0];
    let filter = match mode {
        Mode::None => format!("icmp and host {}", a.ip),
        Mode::Ipip => "ip proto 4".to_string(),
        Mode::Vxlan => "udp port 4789".to_string(),
    };
    let cap = capture::start(node1.netns(), "eth0", &filter, 4)?;
    let ping = a.exec(&["ping", "-n", "-c", "2", "-i", "0.2", &c.ip.to_string()])?;
    show("pod-a", &format!("ping -c 2 {}", c.ip), &ping);
    show("pod-a", "ip neigh", &a.exec(&["ip", "neigh"])?);
    let packets = cap.finish(Duration::from_secs(5))?;
    println!("node1$ tcpdump -i eth0 -nn -v -e '{filter}'    # on the underlay, during that ping");
    for packet in packets {
        for line in packet.lines() {
            println!("    {line}");
        }
        println!();
    }
    Ok(())
}

/// One row of the measurement table.
struct Row {
    path: String,
    rtt_avg_ms: Option<f64>,
    iperf: IperfReport,
}

fn measure_pair(
    path: &str,
    from: &Pod,
    to: &Pod,
    pings: u32,
    seconds: u32,
) -> Result<Row, LabError> {
    wait_reachable(from, to.ip, Duration::from_secs(15))?;
    wait_reachable(to, from.ip, Duration::from_secs(15))?;
    let stats = ping_in(from.netns(), to.ip, pings, Duration::from_millis(100))?;
    let iperf = iperf3(from, to, seconds)?;
    eprintln!(
        "  {path}: rtt avg {} ms, {:.2} Gbit/s ({} retransmits)",
        stats.rtt_avg_ms.map_or("-".into(), |r| format!("{r:.3}")),
        iperf.gbps,
        iperf.retransmits
    );
    Ok(Row {
        path: path.to_string(),
        rtt_avg_ms: stats.rtt_avg_ms,
        iperf,
    })
}

fn measure(seconds: u32, pings: u32, workers: usize) -> Result<(), LabError> {
    let bins = bin_dir()?;
    println!(
        "tapwire-lab measure: {pings} pings and {seconds} s of iperf3 (1 TCP stream) per path; \
         {workers} dataplane workers per node; binaries from {}\n",
        bins.display()
    );
    let mut rows = Vec::new();
    for mode in Mode::ALL {
        eprintln!("measuring tapwire {mode} ...");
        let lab = Lab::new()?;
        let spec = ClusterSpec {
            workers,
            ..ClusterSpec::two_by_two(mode)
        };
        let cluster = Cluster::start_with(&lab, &spec)?;
        if mode == Mode::None {
            let (a, b) = (cluster.pod("pod-a")?, cluster.pod("pod-b")?);
            rows.push(measure_pair("tapwire, same node", a, b, pings, seconds)?);
        }
        let (a, c) = (cluster.pod("pod-a")?, cluster.pod("pod-c")?);
        rows.push(measure_pair(
            &format!("tapwire {mode}, across nodes"),
            a,
            c,
            pings,
            seconds,
        )?);
    }

    eprintln!("measuring kernel baselines ...");
    {
        let lab = Lab::new()?;
        let node = lab.add_node("node1")?;
        kernel::enable_forwarding(&node)?;
        let p1 = kernel::add_veth_pod(&lab, &node, "pod-a", node.pod_ip(2), UNDERLAY_MTU)?;
        let p2 = kernel::add_veth_pod(&lab, &node, "pod-b", node.pod_ip(3), UNDERLAY_MTU)?;
        rows.push(measure_pair(
            "kernel veth routed, same node",
            &p1,
            &p2,
            pings,
            seconds,
        )?);
    }
    {
        let lab = Lab::new()?;
        let n1 = lab.add_node("node1")?;
        let n2 = lab.add_node("node2")?;
        let mtu = pod_mtu(UNDERLAY_MTU, Mode::Vxlan.encap());
        for (node, peer) in [(&n1, &n2), (&n2, &n1)] {
            kernel::setup_vxlan_device(node, TxChecksum::Offload)?;
            kernel::add_vxlan_peer(node, peer)?;
        }
        let p1 = kernel::add_veth_pod(&lab, &n1, "pod-a", n1.pod_ip(2), mtu)?;
        let p2 = kernel::add_veth_pod(&lab, &n2, "pod-c", n2.pod_ip(2), mtu)?;
        rows.push(measure_pair(
            "kernel VXLAN (Calico-style), across nodes",
            &p1,
            &p2,
            pings,
            seconds,
        )?);
    }

    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    let reference = rows
        .iter()
        .find(|r| r.path.starts_with("kernel VXLAN"))
        .map(|r| r.iperf.gbps);
    println!(
        "{:<44} {:>13} {:>12} {:>12} {:>16}",
        "path", "ping avg (ms)", "TCP Gbit/s", "retransmits", "vs kernel VXLAN"
    );
    println!("{}", "-".repeat(101));
    for row in rows {
        let ratio = reference
            .filter(|r| *r > 0.0)
            .map_or("-".to_string(), |r| format!("{:.2}x", row.iperf.gbps / r));
        println!(
            "{:<44} {:>13} {:>12.2} {:>12} {:>16}",
            row.path,
            row.rtt_avg_ms.map_or("-".into(), |r| format!("{r:.3}")),
            row.iperf.gbps,
            row.iperf.retransmits,
            ratio
        );
    }
}
