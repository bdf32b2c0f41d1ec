//! End to end, per encapsulation mode: two nodes with two pods each, tapwire on both.
//! Pods reach each other on the same node and across nodes in both directions without
//! loss, a 100 MiB TCP stream across nodes arrives byte for byte, and the underlay shows
//! the encapsulation the mode promises (IPIP between the node addresses, VXLAN on UDP
//! 4789 with VNI 4096, or the bare pod packet between the node MACs).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_integration::capture;
use tapwire_integration::check::{assert_pings, IPIP, REACHABLE_WITHIN, VXLAN_VNI_4096};
use tapwire_integration::lab::format_mac;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{ping, skip_unless_root, tcp_transfer, Cluster, Lab, Mode, Transfer};

const TRANSFER_BYTES: u64 = 100 << 20;

fn pods_reach_each_other_and_the_underlay_shows(mode: Mode) {
    let lab = Lab::new().unwrap();
    let mut cluster = Cluster::start(&lab, mode).unwrap();
    let pod = |name: &str| cluster.pod(name).unwrap().clone();
    let (a, b, c, d) = (pod("pod-a"), pod("pod-b"), pod("pod-c"), pod("pod-d"));
    let (node1, node2) = (cluster.nodes[0].clone(), cluster.nodes[1].clone());

    let pairs = [
        (&a, &b, "same node"),
        (&b, &a, "same node"),
        (&c, &d, "same node"),
        (&d, &c, "same node"),
        (&a, &c, "across nodes"),
        (&c, &a, "across nodes"),
        (&b, &d, "across nodes"),
        (&d, &b, "across nodes"),
    ];
    // The first packets may go to ARP (pod gateway, peer underlay MAC).
    for (from, to, _) in &pairs {
        wait_reachable(from, to.ip, REACHABLE_WITHIN).unwrap();
    }
    for (from, to, where_) in &pairs {
        let stats = ping(from, to.ip, 5).unwrap();
        assert_eq!(
            stats.loss_percent, 0.0,
            "{mode}: {} -> {} ({where_}) lost packets:\n{}",
            from.name, to.name, stats.output
        );
    }

    // What crosses the underlay for a cross-node ping.
    let filter = capture::encapsulation_filter(mode, a.ip);
    let cap = capture::start(node1.netns(), "eth0", &filter, 4).unwrap();
    assert_pings(&a, &c, 2);
    let packets = cap.finish(Duration::from_secs(10)).unwrap();
    let shown = packets.join("\n");
    assert_eq!(
        packets.len(),
        4,
        "{mode}: expected 2 requests + 2 replies:\n{shown}"
    );
    let request = packets
        .iter()
        .find(|p| p.contains(&format!("{} > {}: ICMP echo request", a.ip, c.ip)))
        .unwrap_or_else(|| panic!("{mode}: no echo request {} > {}:\n{shown}", a.ip, c.ip));
    let reply = packets
        .iter()
        .find(|p| p.contains(&format!("{} > {}: ICMP echo reply", c.ip, a.ip)))
        .unwrap_or_else(|| panic!("{mode}: no echo reply {} > {}:\n{shown}", c.ip, a.ip));
    let (ip1, ip2) = (node1.underlay_ip, node2.underlay_ip);
    match mode {
        Mode::Ipip => {
            for (packet, outer) in [
                (request, format!("{ip1} > {ip2}")),
                (reply, format!("{ip2} > {ip1}")),
            ] {
                assert!(packet.contains(IPIP), "not IPIP:\n{packet}");
                assert!(
                    packet.contains(&outer),
                    "outer header is not {outer}:\n{packet}"
                );
            }
        }
        Mode::Vxlan => {
            for (packet, outer) in [(request, format!("{ip1}.")), (reply, format!("{ip2}."))] {
                assert!(
                    packet.contains(VXLAN_VNI_4096),
                    "not VXLAN vni 4096:\n{packet}"
                );
                assert!(
                    packet.contains(".4789: VXLAN"),
                    "not to UDP port 4789:\n{packet}"
                );
                assert!(
                    packet.contains(&outer),
                    "outer source is not {outer}:\n{packet}"
                );
            }
            // The inner Ethernet header goes between the VTEP MACs.
            let vteps = format!(
                "{} > {}",
                format_mac(node1.vtep_mac),
                format_mac(node2.vtep_mac)
            );
            assert!(
                request.contains(&vteps),
                "inner frame not {vteps}:\n{request}"
            );
        }
        Mode::None => {
            for packet in [request, reply] {
                assert!(packet.contains("proto ICMP (1)"), "encapsulated:\n{packet}");
                assert!(
                    !packet.contains("IPIP") && !packet.contains("VXLAN"),
                    "encapsulated:\n{packet}"
                );
            }
            let macs = format!(
                "{} > {}",
                format_mac(node1.underlay_mac),
                format_mac(node2.underlay_mac)
            );
            assert!(
                request.contains(&macs),
                "request not sent node1 -> node2 MAC ({macs}):\n{request}"
            );
        }
    }

    let before = cluster.counters().unwrap();
    let report = tcp_transfer(&a, &c, &Transfer::bytes(TRANSFER_BYTES)).unwrap();
    assert_eq!(report.bytes, TRANSFER_BYTES);
    eprintln!("{mode}: pod-a -> pod-c: {report}");
    let after = cluster.counters().unwrap();
    let sent = after[0].since(&before[0]);
    let received = after[1].since(&before[1]);
    let tx = format!("encap.{}.tx_packets", mode.name());
    let rx = format!("encap.{}.rx_packets", mode.name());
    // 100 MiB in segments of at most 1500 bytes: at least ~70 000 packets.
    assert!(
        sent.get(&tx) > 70_000,
        "node1 {tx} = {}:\n{}",
        sent.get(&tx),
        sent.nonzero()
    );
    assert!(
        received.get(&rx) > 70_000,
        "node2 {rx} = {}:\n{}",
        received.get(&rx),
        received.nonzero()
    );
    cluster.check_running().unwrap();
}

#[test]
fn unencapsulated() {
    if skip_unless_root("unencapsulated") {
        return;
    }
    pods_reach_each_other_and_the_underlay_shows(Mode::None);
}

#[test]
fn ipip() {
    if skip_unless_root("ipip") {
        return;
    }
    pods_reach_each_other_and_the_underlay_shows(Mode::Ipip);
}

#[test]
fn vxlan() {
    if skip_unless_root("vxlan") {
        return;
    }
    pods_reach_each_other_and_the_underlay_shows(Mode::Vxlan);
}
