//! `tapwire-lab`: tapwire in network namespaces, for people rather than tests.
//!
//! - `tapwire-lab demo` walks through "Life of a Packet in Kubernetes" (part 2, Calico) on
//!   tapwire's control plane: two nodes running `tapwire-dataplane` and `tapwire-control`
//!   over one datastore, an IPIP pool applied with `tapwirectl apply -f`, pods added by
//!   invoking the `tapwire` CNI plugin as a container runtime does, `tapwirectl get
//!   workloadendpoints` and `tapwirectl routes`, a pod's routes and neighbour table, a
//!   cross-node ping and the IPIP packets on the underlay; then the pool edited to
//!   `ipipMode: Never` (plain pod addresses on the wire, and how long the switch took) and
//!   to `vxlanMode: Always` (UDP 4789, VNI 4096).
//! - `tapwire-lab demo --dataplane-only` is the earlier demo without the control plane:
//!   the lab pushes desired state to the dataplanes itself, one mode after the other.
//!
//! Measurements against the kernel's paths are `tapwire-bench run` (`scripts/bench.sh`).
//!
//! Every lab is removed when its step ends, on errors, and on Ctrl-C. Needs root; the
//! tapwire binaries are taken from this executable's directory (or `$TAPWIRE_BIN_DIR`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tapwire_integration::cni::CniCommand;
use tapwire_integration::controlplane::{default_ipip_pool, time_switch, DEFAULT_POOL_NAME};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{
    capture, install_signal_cleanup, Cluster, ControlPlane, Lab, LabError, Mode, Node, Pod,
    Tapwirectl,
};

/// tapwire in network namespaces: a guided demo.
#[derive(Debug, Parser)]
#[command(name = "tapwire-lab", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Walk through the life of a packet: pools, pods (CNI), routes and the wire.
    Demo {
        /// Without the control plane: the lab feeds the dataplanes, one mode at a time.
        #[arg(long)]
        dataplane_only: bool,
        /// With --dataplane-only: only this mode (default: none, ipip and vxlan in turn).
        #[arg(long, value_enum, requires = "dataplane_only")]
        mode: Option<ModeArg>,
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
        Command::Demo {
            dataplane_only: false,
            ..
        } => demo_control_plane(),
        Command::Demo {
            dataplane_only: true,
            mode,
        } => {
            let modes = mode.map_or(Mode::ALL.to_vec(), |m| vec![m.into()]);
            modes.into_iter().try_for_each(demo)
        }
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

/// Prints a tcpdump capture, one packet after the other.
fn show_packets(node: &str, filter: &str, packets: &[String]) {
    println!("{node}$ tcpdump -i eth0 -nn -v -e '{filter}'    # on the underlay, during that ping");
    for packet in packets {
        for line in packet.lines() {
            println!("    {line}");
        }
        println!();
    }
}

/// Runs a `tapwirectl` command and shows it with its output (stderr too, if it failed).
fn ctl_show(prompt: &str, ctl: &Tapwirectl<'_>, args: &[&str]) -> Result<String, LabError> {
    let out = ctl.run(args)?;
    let shown = format!("{}{}", out.stdout, out.stderr);
    show(prompt, &format!("tapwirectl {}", args.join(" ")), &shown);
    out.success()
}

/// `ip route` and a ping from `from` to `to`, with the underlay capture of `filter` on
/// `node`.
fn ping_and_capture(node: &Node, filter: &str, from: &Pod, to: &Pod) -> Result<(), LabError> {
    let cap = capture::start(node.netns(), "eth0", filter, 4)?;
    let ping = from.exec(&["ping", "-n", "-c", "2", "-i", "0.2", &to.ip.to_string()])?;
    show(
        &from.name,
        &format!("ping -c 2 {}    # {} on {}", to.ip, to.name, to.node),
        &ping,
    );
    let packets = cap.finish(Duration::from_secs(5))?;
    show_packets(&node.name, filter, &packets);
    Ok(())
}

fn demo_control_plane() -> Result<(), LabError> {
    println!("=== tapwire's control plane: two nodes, one datastore ===\n");
    let lab = Lab::new()?;
    let cp = ControlPlane::new(&lab)?;
    let node1 = cp.add_node("node1")?;
    let node2 = cp.add_node("node2")?;
    for node in [&node1, &node2] {
        println!(
            "{}: underlay {} (eth0); running tapwire-dataplane and tapwire-control --config {}",
            node.name,
            node.underlay_ip,
            cp.config_path(&node.name)?.display()
        );
    }
    println!();
    let config = std::fs::read_to_string(cp.config_path("node1")?)
        .map_err(|e| LabError::io("reading node1's config", e))?;
    show("node1", "cat node1.toml", &config);
    let ctl = cp.ctl("node1")?;
    println!(
        "(tapwirectl below talks to node1's agent: --api {})\n",
        ctl.api().display()
    );
    ctl_show("node1", &ctl, &["node", "status"])?;

    println!("=== An IP pool, as calicoctl's IPPool document ===\n");
    let pool = default_ipip_pool();
    let pool_file = lab.dir().join("pool.yaml");
    std::fs::write(&pool_file, &pool).map_err(|e| LabError::io("writing pool.yaml", e))?;
    show("node1", "cat pool.yaml", &pool);
    let out = ctl.apply_file(&pool_file)?;
    show(
        "node1",
        "tapwirectl apply -f pool.yaml",
        &format!("{}{}", out.stdout, out.stderr),
    );
    out.success()?;

    println!("=== Pods, added by the CNI plugin as a container runtime runs it ===\n");
    let sandbox = cp.sandbox("pod-a")?;
    let conf = cp.network_conf("node1")?;
    let runtime = cp.runtime("node1")?;
    let run = runtime.exec(CniCommand::Add, &conf, &sandbox.args)?;
    show(
        "node1",
        &format!(
            "CNI_COMMAND=ADD CNI_CONTAINERID={} CNI_NETNS={} CNI_IFNAME=eth0 \\\n    \
             CNI_ARGS='{}' CNI_PATH={} \\\n    tapwire <<< '{}'",
            sandbox.args.container_id,
            sandbox.args.netns,
            sandbox.args.cni_args(),
            runtime.cni_path(),
            conf
        ),
        &run.output.stdout,
    );
    let elapsed = run.elapsed;
    let result = run.into_result()?;
    let a = cp.record_pod("node1", &sandbox, result, elapsed)?.pod;
    let b = cp.add_pod("node1", "pod-b")?;
    let c = cp.add_pod("node2", "pod-c")?;
    let d = cp.add_pod("node2", "pod-d")?;
    for pod in [&b, &c, &d] {
        println!("(CNI ADD {} on {}: {})", pod.name, pod.node, pod.ip);
    }
    println!();
    // Each agent learns the other node's new block within its 100 ms datastore poll.
    wait_reachable(&a, c.ip, Duration::from_secs(15))?;
    wait_reachable(&b, d.ip, Duration::from_secs(15))?;
    ctl_show("node1", &ctl, &["get", "workloadendpoints"])?;
    ctl_show("node1", &ctl, &["routes"])?;

    println!("=== The life of a packet from pod-a (node1) to pod-c (node2), IPIP ===\n");
    show("pod-a", "ip route", &a.exec(&["ip", "route"])?);
    show(
        "pod-a",
        "ip -d link show eth0",
        &a.exec(&["ip", "-d", "link", "show", "eth0"])?,
    );
    ping_and_capture(&node1, "ip proto 4", &a, &c)?;
    show("pod-a", "ip neigh", &a.exec(&["ip", "neigh"])?);

    println!("=== Switching the pool to ipipMode: Never on the running cluster ===\n");
    let yaml = ctl_show(
        "node1",
        &ctl,
        &["get", "ippool", DEFAULT_POOL_NAME, "-o", "yaml"],
    )?;
    let never = yaml.replace("ipipMode: Always", "ipipMode: Never");
    println!("(edited: ipipMode: Never)\n");
    let timing = time_switch(
        &ctl,
        &never,
        &node1,
        &format!("icmp and host {}", a.ip),
        &a,
        &c,
    )?;
    println!(
        "node1$ tapwirectl apply -f -    # the edited document on stdin\n    \
         (apply took {:.0?}; plain pod addresses on the wire {:.0?} later from node1 and \
         {:.0?} later from node2;\n    {} of {} pings, 10 ms apart, answered meanwhile)\n",
        timing.apply,
        timing.request_on_wire,
        timing.reply_on_wire,
        timing.pings_received,
        timing.pings_sent
    );
    ctl_show("node1", &ctl, &["routes"])?;
    ping_and_capture(&node1, &format!("icmp and host {}", a.ip), &a, &c)?;

    println!("=== And to vxlanMode: Always (applied on node2) ===\n");
    let yaml = ctl.get_yaml("ippool", Some(DEFAULT_POOL_NAME))?;
    let vxlan = yaml.replace("vxlanMode: Never", "vxlanMode: Always");
    let ctl2 = cp.ctl("node2")?;
    let timing = time_switch(&ctl2, &vxlan, &node1, "udp port 4789", &a, &c)?;
    println!(
        "node2$ tapwirectl apply -f -    # vxlanMode: Always\n    \
         (apply took {:.0?}; VXLAN on the wire {:.0?} later from node1 and {:.0?} later \
         from node2; {} of {} pings answered meanwhile)\n",
        timing.apply,
        timing.request_on_wire,
        timing.reply_on_wire,
        timing.pings_received,
        timing.pings_sent
    );
    ctl_show("node1", &ctl, &["routes"])?;
    ping_and_capture(&node1, "udp port 4789", &b, &d)?;
    ctl_show("node1", &ctl, &["stats"])?;
    cp.check_running()?;
    Ok(())
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
    let filter = capture::encapsulation_filter(mode, a.ip);
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
