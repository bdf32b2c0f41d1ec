//! tapwire interoperates with Calico's Linux dataplane over VXLAN: node1 runs tapwire,
//! node2 runs nothing but the kernel, programmed the way Calico programs it
//! (`vxlan.calico`, an onlink route per remote block, a permanent neighbour entry and an
//! FDB entry for the peer VTEP, veth pods behind proxy-ARP). Pods on the two nodes ping
//! each other and exchange verified TCP streams in both directions.
//!
//! `vxlan.calico` computes transmit checksums in software, as Felix configures it: with
//! offload on, a veth underlay delivers the kernel's inner packets with checksums never
//! filled in (see `tapwire_integration::kernel`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_control::podnet::pod_mtu;
use tapwire_integration::check::{
    assert_pings, assert_transfer, Captured, REACHABLE_WITHIN, VXLAN_VNI_4096,
};
use tapwire_integration::kernel::{self, TxChecksum};
use tapwire_integration::lab::UNDERLAY_MTU;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{push_snapshot, skip_unless_root, Lab, Mode};

const TRANSFER_BYTES: u64 = 20 << 20;

#[test]
fn tapwire_and_kernel_vxlan_nodes_carry_pings_and_tcp_both_ways() {
    if skip_unless_root("tapwire_and_kernel_vxlan_nodes_carry_pings_and_tcp_both_ways") {
        return;
    }
    let lab = Lab::new().unwrap();
    let tapwire_node = lab.add_node("node1").unwrap();
    let kernel_node = lab.add_node("node2").unwrap();
    let mtu = pod_mtu(UNDERLAY_MTU, Mode::Vxlan.encap());

    // node2: the kernel, as Calico's Linux dataplane sets it up.
    kernel::setup_vxlan_node(&kernel_node, TxChecksum::Software, &[&tapwire_node]).unwrap();
    let k = kernel::add_veth_pod(&lab, &kernel_node, "pod-k", kernel_node.pod_ip(2), mtu).unwrap();

    // node1: tapwire, told about node2 (host, VTEP with the kernel device's MAC, block).
    let t = lab
        .add_pod(&tapwire_node, "pod-t", tapwire_node.pod_ip(2), mtu)
        .unwrap();
    let mut dataplane = lab.start_dataplane(&tapwire_node, 2).unwrap();
    let nodes = [tapwire_node.clone(), kernel_node.clone()];
    push_snapshot(
        &mut dataplane,
        &nodes,
        std::slice::from_ref(&t),
        Mode::Vxlan,
    )
    .unwrap();

    wait_reachable(&t, k.ip, REACHABLE_WITHIN).unwrap();
    wait_reachable(&k, t.ip, REACHABLE_WITHIN).unwrap();
    for (from, to) in [(&t, &k), (&k, &t)] {
        assert_pings(from, to, 5);
    }

    // The kernel's frames really are VXLAN on the wire, answered by tapwire's.
    Captured::of_one_ping_within(
        &tapwire_node,
        "udp port 4789",
        &k,
        &t,
        Duration::from_secs(10),
    )
    .assert_every(VXLAN_VNI_4096)
    .assert_echo(&k, &t);

    for (from, to, port) in [(&t, &k, 5001), (&k, &t, 5002)] {
        assert_transfer(from, to, port, TRANSFER_BYTES);
    }
    let counters = dataplane.counters().unwrap();
    assert!(
        counters.get("encap.vxlan.tx_packets") > 10_000,
        "{}",
        counters.nonzero()
    );
    assert!(
        counters.get("encap.vxlan.rx_packets") > 10_000,
        "{}",
        counters.nonzero()
    );
    dataplane.check_running().unwrap();
}
