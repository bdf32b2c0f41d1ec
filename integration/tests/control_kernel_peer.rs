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

use tapwire_control::model::MacAddr;
use tapwire_integration::check::{
    assert_pings_once_reachable, assert_transfer, Captured, VXLAN_VNI_4096,
};
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::kernel::{self, TxChecksum};
use tapwire_integration::lab::format_mac;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab};

const TRANSFER_BYTES: u64 = 8 << 20;

#[test]
fn a_declared_kernel_vxlan_node_interoperates_with_tapwire_nodes() {
    if skip_unless_root("a_declared_kernel_vxlan_node_interoperates_with_tapwire_nodes") {
        return;
    }
    let lab = Lab::new().unwrap();
    let pool = ippool_yaml("vxlan-pool", "10.65.0.0/16", 26, "Never", "Always");
    let cp = ControlPlane::with_pool(&lab, &["node1", "node2"], &pool).unwrap();
    let (node1, node2) = (cp.node("node1").unwrap(), cp.node("node2").unwrap());
    // node3: the kernel only. Its lab identity gives the VTEP MAC, tunnel address and
    // pod block Calico's IPAM would have given it.
    let node3 = lab.add_node("node3").unwrap();
    kernel::setup_vxlan_device(&node3, TxChecksum::Software).unwrap();

    let ctl = cp.ctl("node1").unwrap();
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
    let applied = cp.apply("node1", &declared).unwrap();
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

    let [a, c] = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-c")])
        .unwrap();
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

    assert_pings_once_reachable(&[(&a, &k), (&k, &a), (&c, &k), (&k, &c), (&a, &c)], 3);

    // The wire at the kernel node: VXLAN, VNI 4096, from the tapwire node and back.
    Captured::of_one_ping(&node3, "udp port 4789", &a, &k)
        .assert_every(VXLAN_VNI_4096)
        .assert_echo(&a, &k)
        // tapwire's frames go to the declared VTEP MAC.
        .assert_shows(&format_mac(node3.vtep_mac));

    for (from, to, port) in [(&a, &k, 5001), (&k, &c, 5002)] {
        assert_transfer(from, to, port, TRANSFER_BYTES);
    }

    // The declared host is a peer in node status.
    let status = ctl.ok(&["node", "status"]).unwrap();
    assert!(
        status.contains(&node3.underlay_ip.to_string()),
        "tapwirectl node status:\n{status}"
    );
    cp.check_running().unwrap();
}
