//! A host that does not run tapwire, declared with a `Node` document, is a VXLAN peer of
//! tapwire nodes. node1 and node2 run tapwire (`tapwire-control` + dataplane, pods added
//! through the CNI plugin); node3 runs only the kernel's VXLAN, programmed the way
//! Calico's Linux dataplane programs it (`vxlan.calico`, an onlink route per remote block,
//! a permanent neighbour entry and an FDB entry per peer VTEP, veth pods behind
//! proxy-ARP). node3 is declared with `tapwirectl apply -f` (underlay address, VTEP MAC,
//! tunnel address, its pod CIDR); node3's kernel learns the tapwire nodes' blocks from
//! IPAM and their VTEP MACs the way Calico derives them. Pods on all three nodes ping each
//! other and exchange verified TCP streams both ways; the wire shows VXLAN with VNI 4096.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_control::model::MacAddr;
use tapwire_integration::capture;
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::kernel::{self, TxChecksum};
use tapwire_integration::lab::format_mac;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{ping, skip_unless_root, tcp_transfer, ControlPlane, Lab, Transfer};

const TRANSFER_BYTES: u64 = 8 << 20;

#[test]
fn a_declared_kernel_vxlan_node_interoperates_with_tapwire_nodes() {
    if skip_unless_root("a_declared_kernel_vxlan_node_interoperates_with_tapwire_nodes") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::new(&lab).unwrap();
    let node1 = cp.add_node("node1").unwrap();
    let node2 = cp.add_node("node2").unwrap();
    // node3: the kernel only. Its lab identity gives the VTEP MAC, tunnel address and
    // pod block Calico's IPAM would have given it.
    let node3 = lab.add_node("node3").unwrap();
    kernel::setup_vxlan_device(&node3, TxChecksum::Software).unwrap();

    let ctl = cp.ctl("node1").unwrap();
    ctl.apply(&ippool_yaml(
        "vxlan-pool",
        "10.65.0.0/16",
        26,
        "Never",
        "Always",
    ))
    .unwrap()
    .success()
    .unwrap();
    let declared = format!(
        "apiVersion: projectcalico.org/v3\n\
         kind: Node\n\
         metadata:\n  name: {name}\n\
         spec:\n  bgp:\n    ipv4Address: {underlay}/24\n  \
         ipv4VXLANTunnelAddr: {tunnel}\n  vxlanTunnelMACAddr: {mac}\n  \
         podCIDRs:\n  - {block}\n",
        name = node3.name,
        underlay = node3.underlay_ip,
        tunnel = node3.tunnel_ip,
        mac = format_mac(node3.vtep_mac),
        block = node3.block,
    );
    let applied = ctl.apply(&declared).unwrap().success().unwrap();
    assert!(applied.contains("Node"), "{applied}");
    let nodes = ctl.table(&["get", "nodes"]).unwrap();
    for name in ["node1", "node2", "node3"] {
        assert!(
            nodes
                .rows
                .iter()
                .any(|r| r.first().is_some_and(|c| c == name)),
            "{name} missing from tapwirectl get nodes: {nodes:?}"
        );
    }

    let a = cp.add_pod("node1", "pod-a").unwrap();
    let c = cp.add_pod("node2", "pod-c").unwrap();
    let k = kernel::add_veth_pod(&lab, &node3, "pod-k", node3.pod_ip(2), a.mtu_bytes).unwrap();
    assert!(
        !node3.block.contains(a.ip) && !node3.block.contains(c.ip),
        "IPAM handed out an address of the declared node's pod CIDR: {} {}",
        a.ip,
        c.ip
    );

    // node3's kernel: a route per tapwire block, to the node's VTEP (Calico's MAC
    // derivation from the node name, as the Node documents leave it unset).
    for (pod, node) in [(&a, &node1), (&c, &node2)] {
        let (block, owner) = cp.block_of(pod.ip).unwrap();
        assert_eq!(owner, node.name);
        let vtep = MacAddr::derived_vtep(&node.name).0;
        kernel::add_vxlan_route(
            &node3,
            &block.to_string(),
            block.addr,
            vtep,
            node.underlay_ip,
        )
        .unwrap();
    }

    for (from, to) in [(&a, &k), (&k, &a), (&c, &k), (&k, &c), (&a, &c)] {
        wait_reachable(from, to.ip, Duration::from_secs(15)).unwrap();
        let stats = ping(from, to.ip, 3).unwrap();
        assert_eq!(
            stats.loss_percent, 0.0,
            "{} -> {}:\n{}",
            from.name, to.name, stats.output
        );
    }

    // The wire at the kernel node: VXLAN, VNI 4096, from the tapwire node and back.
    let cap = capture::start(node3.netns(), "eth0", "udp port 4789", 2).unwrap();
    ping(&a, k.ip, 1).unwrap();
    let packets = cap.finish(Duration::from_secs(5)).unwrap();
    let shown = packets.join("\n");
    assert_eq!(packets.len(), 2, "{shown}");
    assert!(
        packets
            .iter()
            .all(|p| p.contains("VXLAN, flags [I] (0x08), vni 4096")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{} > {}: ICMP echo request", a.ip, k.ip))
            && shown.contains(&format!("{} > {}: ICMP echo reply", k.ip, a.ip)),
        "{shown}"
    );
    // tapwire's frames go to the declared VTEP MAC.
    assert!(shown.contains(&format_mac(node3.vtep_mac)), "{shown}");

    for (from, to, port) in [(&a, &k, 5001), (&k, &c, 5002)] {
        let spec = Transfer {
            port,
            ..Transfer::bytes(TRANSFER_BYTES)
        };
        let report = tcp_transfer(from, to, &spec).unwrap();
        assert_eq!(report.bytes, TRANSFER_BYTES);
        eprintln!(
            "{} -> {}: {} MiB in {:.2?} ({:.2} Gbit/s)",
            from.name,
            to.name,
            report.bytes >> 20,
            report.duration,
            report.gbps()
        );
    }

    // The declared host is a peer in node status.
    let status = ctl.ok(&["node", "status"]).unwrap();
    assert!(
        status.contains(&node3.underlay_ip.to_string()),
        "tapwirectl node status:\n{status}"
    );
    cp.check_running().unwrap();
}
