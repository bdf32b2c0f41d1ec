//! The labs the paths run in, all on this host, all kept up for the whole run so that the
//! rounds can alternate between them:
//!
//! - [`TapwireCluster`]: tapwire's real control plane — two nodes running
//!   `tapwire-dataplane --workers 2` and `tapwire-control` over one file datastore, one
//!   pod per node added through the `tapwire` CNI plugin, and a second pod on node1 for the
//!   same-node paths; node1's own namespace reaches its pods through the host path
//!   (`tapwire0`). The IP pool is switched between unencapsulated, VXLAN and IPIP with
//!   `tapwirectl apply`, and a switch counts as done once a ping shows the new form on
//!   the underlay in both directions.
//! - [`kernel_local`]: one node routing between two veth pods, as Calico's Linux
//!   dataplane wires them; the node's own namespace reaches the second pod the same way.
//! - [`kernel_routed`]: two such nodes on one underlay segment, each routing the other's
//!   block to the other's underlay address, unencapsulated (Calico with BGP and
//!   `ipipMode`/`vxlanMode: Never`); a second such pair segments everything it sends on
//!   the underlay (the reference for IPIP, which cannot cross it any other way).
//! - [`kernel_vxlan`]: two nodes joined by `vxlan.calico`, as Felix programs it.
//!
//! Every pod of every path has the same MTU, [`POD_MTU`]: the tapwire pods get it from
//! the VXLAN pool they are created under (so no mode needs fragmentation), and the kernel
//! pods are given it, so MTU never explains a difference.

use std::time::Duration;

use tapwire_control::podnet::pod_mtu;
use tapwire_integration::capture::encapsulation_filter;
use tapwire_integration::controlplane::{ippool_yaml, time_switch, DEFAULT_POOL_NAME};
use tapwire_integration::kernel::{self, TxChecksum};
use tapwire_integration::lab::UNDERLAY_MTU;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{ControlPlane, Lab, Mode, Node, Pod};

use crate::error::{BenchError, Result};

/// The MTU of every pod in every path: what a VXLAN pool gives on a 1500-byte underlay.
pub const POD_MTU: u32 = 1450;
/// How long a new path may take to pass its first ping.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The two tapwire nodes.
pub const TAPWIRE_NODES: [&str; 2] = ["node1", "node2"];

/// The two pods traffic flows between: client → server.
#[derive(Debug, Clone)]
pub struct Pair {
    pub client: Pod,
    pub server: Pod,
}

impl Pair {
    /// Waits until each pod answers the other's pings.
    pub fn wait_reachable(&self) -> Result<()> {
        wait_reachable(&self.client, self.server.ip, REACHABLE_TIMEOUT)?;
        wait_reachable(&self.server, self.client.ip, REACHABLE_TIMEOUT)?;
        Ok(())
    }
}

/// The lab's IP pool document in `mode` (Calico's default pool, `10.65.0.0/16`, /26 blocks).
pub fn pool_for(mode: Mode) -> String {
    let (ipip, vxlan) = match mode {
        Mode::None => ("Never", "Never"),
        Mode::Ipip => ("Always", "Never"),
        Mode::Vxlan => ("Never", "Always"),
    };
    ippool_yaml(DEFAULT_POOL_NAME, "10.65.0.0/16", 26, ipip, vxlan)
}

/// tapwire's control plane on two nodes; see the module documentation.
#[derive(Debug)]
pub struct TapwireCluster<'lab> {
    cp: ControlPlane<'lab>,
    /// `pod-a` on node1 → `pod-b` on node2.
    pub pair: Pair,
    /// node1's own namespace → `pod-a`, through node1's host path.
    pub host: Pair,
    /// `pod-c` on node1 → `pod-a` on node1.
    pub local: Pair,
    mode: Mode,
}

impl<'lab> TapwireCluster<'lab> {
    /// Starts both nodes, applies the VXLAN pool, adds `pod-a` and `pod-c` on node1 and
    /// `pod-b` on node2 through CNI and waits until every pair reaches each other.
    pub fn start(lab: &'lab Lab) -> Result<TapwireCluster<'lab>> {
        let cp = ControlPlane::with_pool(lab, &TAPWIRE_NODES, &pool_for(Mode::Vxlan))?;
        let [client, server, neighbour] = cp.add_pods([
            (TAPWIRE_NODES[0], "pod-a"),
            (TAPWIRE_NODES[1], "pod-b"),
            (TAPWIRE_NODES[0], "pod-c"),
        ])?;
        for pod in [&client, &server, &neighbour] {
            if pod.mtu_bytes != POD_MTU {
                return Err(BenchError::Invalid(format!(
                    "{} got MTU {} from the VXLAN pool, expected {POD_MTU}",
                    pod.name, pod.mtu_bytes
                )));
            }
        }
        let host = Pair {
            client: cp.node(TAPWIRE_NODES[0])?.as_host(),
            server: client.clone(),
        };
        let local = Pair {
            client: neighbour,
            server: client.clone(),
        };
        let pair = Pair { client, server };
        for p in [&pair, &host, &local] {
            p.wait_reachable()?;
        }
        Ok(TapwireCluster {
            cp,
            pair,
            host,
            local,
            mode: Mode::Vxlan,
        })
    }

    /// The pool's current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Applies the pool in `mode` (if it is not already) and returns once a ping between
    /// the pods shows the new encapsulation on node1's underlay both ways, with how long
    /// that took from the start of the apply.
    pub fn set_mode(&mut self, mode: Mode) -> Result<Option<Duration>> {
        if mode == self.mode {
            return Ok(None);
        }
        let ctl = self.cp.ctl(TAPWIRE_NODES[0])?;
        let node1 = self.cp.node(TAPWIRE_NODES[0])?;
        let filter = encapsulation_filter(mode, self.pair.client.ip);
        let timing = time_switch(
            &ctl,
            &pool_for(mode),
            &node1,
            &filter,
            &self.pair.client,
            &self.pair.server,
        )?;
        self.mode = mode;
        Ok(Some(timing.both_ways()))
    }

    /// The PIDs of both nodes' `tapwire-dataplane`.
    pub fn dataplane_pids(&self) -> Result<Vec<u32>> {
        TAPWIRE_NODES
            .iter()
            .map(|node| {
                self.cp.dataplane_pid(node)?.ok_or_else(|| {
                    BenchError::Invalid(format!("no tapwire-dataplane runs on {node}"))
                })
            })
            .collect()
    }

    /// Fails if a dataplane or control has exited.
    pub fn check_running(&self) -> Result<()> {
        Ok(self.cp.check_running()?)
    }
}

/// [`kernel_local`]'s node and its pairs.
#[derive(Debug, Clone)]
pub struct KernelLocal {
    /// The node (`kl`), on which the TAP wire of [`crate::taphop`] is built too.
    pub node: Node,
    /// `kl-a` → `kl-b`, two veth pods of one node.
    pub pair: Pair,
    /// The node's own namespace → `kl-b`.
    pub host: Pair,
}

/// One node routing between two veth pods (`kl-a` → `kl-b`), Calico-style; its own
/// namespace reaches `kl-b` by the same `/32 dev caliX scope link` route (and `kl-b`
/// answers through the proxy-ARPed host veth), as a Calico node reaches its pods.
pub fn kernel_local(lab: &Lab) -> Result<KernelLocal> {
    let node = lab.add_node("kl")?;
    kernel::enable_forwarding(&node)?;
    let client = kernel::add_veth_pod(lab, &node, "kl-a", node.pod_ip(2), POD_MTU)?;
    let server = kernel::add_veth_pod(lab, &node, "kl-b", node.pod_ip(3), POD_MTU)?;
    let host = Pair {
        client: node.as_host(),
        server: server.clone(),
    };
    let pair = Pair { client, server };
    pair.wait_reachable()?;
    host.wait_reachable()?;
    Ok(KernelLocal { node, pair, host })
}

/// How the kernel-routed nodes hand packets to the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// As a node does by default: a TCP super-frame crosses the underlay whole.
    SuperFrames,
    /// With segmentation offload off on each node's `eth0` (`ethtool -K eth0 tso off gso
    /// off`): the node segments every super-frame before the underlay, which then carries
    /// MTU-sized packets only — as it must carry tapwire's IPIP here (no virtio-net GSO
    /// type describes IPIP, and a veth's GRO merges nothing it is handed one packet at a
    /// time). The receiving node still coalesces nothing: its `eth0` is a veth.
    MtuPackets,
}

/// Two nodes on one underlay segment, one veth pod each (`kr-a` on kr1 → `kr-b` on kr2;
/// `km-…` for [`Underlay::MtuPackets`]), routed without encapsulation as Calico's Linux
/// dataplane does with BGP and `ipipMode`/`vxlanMode: Never`: each node has a blackhole
/// route for its own block, a `/32 dev caliX scope link` route per pod (proxy ARP on the
/// host veth) and the peer's block `via` the peer's underlay address on `eth0` (what BIRD
/// learns from the peer). The underlay is the lab's, as for [`kernel_vxlan`]: each node's
/// `eth0` is a veth into one bridge.
pub fn kernel_routed(lab: &Lab, underlay: Underlay) -> Result<Pair> {
    let prefix = match underlay {
        Underlay::SuperFrames => "kr",
        Underlay::MtuPackets => "km",
    };
    let n1 = lab.add_node(&format!("{prefix}1"))?;
    let n2 = lab.add_node(&format!("{prefix}2"))?;
    for (node, peer) in [(&n1, &n2), (&n2, &n1)] {
        kernel::enable_forwarding(node)?;
        let ns = node.netns();
        ns.ip(&["route", "add", "blackhole", &node.block.to_string()])?;
        ns.ip(&[
            "route",
            "add",
            &peer.block.to_string(),
            "via",
            &peer.underlay_ip.to_string(),
            "dev",
            "eth0",
        ])?;
        if underlay == Underlay::MtuPackets {
            kernel::segmentation_offload_off(node, "eth0")?;
        }
    }
    let client = kernel::add_veth_pod(lab, &n1, &format!("{prefix}-a"), n1.pod_ip(2), POD_MTU)?;
    let server = kernel::add_veth_pod(lab, &n2, &format!("{prefix}-b"), n2.pod_ip(2), POD_MTU)?;
    let pair = Pair { client, server };
    pair.wait_reachable()?;
    Ok(pair)
}

/// Two nodes joined by `vxlan.calico`, one veth pod each (`kv-a` on kv1 → `kv-b` on kv2).
///
/// Transmit checksum offload stays on, as Felix leaves it on this kernel (it turns it off
/// only on kernels older than 5.7, for a since-fixed checksum bug; felix#2815): both ends
/// are kernels, which trust the offload flag they receive.
pub fn kernel_vxlan(lab: &Lab) -> Result<Pair> {
    let n1 = lab.add_node("kv1")?;
    let n2 = lab.add_node("kv2")?;
    kernel::setup_vxlan_node(&n1, TxChecksum::Offload, &[&n2])?;
    kernel::setup_vxlan_node(&n2, TxChecksum::Offload, &[&n1])?;
    let client = kernel::add_veth_pod(lab, &n1, "kv-a", n1.pod_ip(2), POD_MTU)?;
    let server = kernel::add_veth_pod(lab, &n2, "kv-b", n2.pod_ip(2), POD_MTU)?;
    let pair = Pair { client, server };
    pair.wait_reachable()?;
    Ok(pair)
}

/// [`POD_MTU`] is what the control plane computes for a VXLAN pool on this underlay.
pub fn pod_mtu_matches_the_vxlan_pool() -> bool {
    pod_mtu(UNDERLAY_MTU, Mode::Vxlan.encap()) == POD_MTU
}
