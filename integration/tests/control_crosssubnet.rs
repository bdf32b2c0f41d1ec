//! `CrossSubnet`, decided by the control plane from the nodes' underlay subnets: node1
//! and node2 share 192.168.0.0/24, node3 sits in 192.168.1.0/24 behind the lab's router
//! namespace. Traffic between node1 and node2 goes unencapsulated (plain pod addresses on
//! the wire) while traffic to and from node3 is encapsulated between the node addresses,
//! across the router — also when the router knows the pod blocks and could route the pod
//! packets themselves. Captures on the underlay prove both; `tapwirectl routes` says the
//! same.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_integration::capture;
use tapwire_integration::check::{
    assert_pings_once_reachable, echo_request, Captured, CAPTURE_WITHIN, IPIP, VXLAN_VNI_4096,
};
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::lab::format_mac;
use tapwire_integration::{ping, skip_unless_root, ControlPlane, Lab, Node, Pod};

/// node1 and node2 in subnet 0, node3 in subnet 1, a CrossSubnet pool in IPIP (`ipip`)
/// or VXLAN, and a pod on each node (`pod-a`, `pod-c`, `pod-e`), all reaching each other.
fn three_nodes(lab: &Lab, ipip: bool) -> (ControlPlane<'_>, [Node; 3], [Pod; 3]) {
    let (ipip_mode, vxlan_mode) = if ipip {
        ("CrossSubnet", "Never")
    } else {
        ("Never", "CrossSubnet")
    };
    let pool = ippool_yaml(
        "cross-subnet-pool",
        "10.65.0.0/16",
        26,
        ipip_mode,
        vxlan_mode,
    );
    let names = [("node1", 0), ("node2", 0), ("node3", 1)];
    let cp = ControlPlane::with_pool_in_subnets(lab, &names, &pool).unwrap();
    let nodes = names.map(|(name, _)| cp.node(name).unwrap());
    let pods = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-c"), ("node3", "pod-e")])
        .unwrap();
    let [a, c, e] = &pods;
    assert_pings_once_reachable(&[(a, c), (c, a), (a, e), (e, a), (c, e), (e, c)], 3);
    (cp, nodes, pods)
}

/// The line of `tapwirectl routes` on `cp`'s node1 for `node`'s block.
fn route_to(cp: &ControlPlane<'_>, node: &str) -> String {
    let routes = cp.ctl("node1").unwrap().ok(&["routes"]).unwrap();
    routes
        .lines()
        .find(|l| l.contains(node) && !l.contains("blackhole"))
        .unwrap_or_else(|| panic!("no route to {node}'s block in:\n{routes}"))
        .to_string()
}

#[test]
fn crosssubnet_encapsulates_only_between_subnets() {
    if skip_unless_root("crosssubnet_encapsulates_only_between_subnets") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [node1, node2, node3], [a, c, e]) = three_nodes(&lab, true);
    // The pod MTU allows for the encapsulation some peers need.
    assert_eq!(a.mtu_bytes, 1480);

    // Same subnet: the pod addresses themselves on the wire, both ways.
    Captured::of_one_ping(&node1, &format!("icmp and host {}", a.ip), &a, &c)
        .assert_none("IPIP")
        .assert_echo(&a, &c);
    // ... and no IPIP between node1 and node2 meanwhile.
    let cap = capture::start(node2.netns(), "eth0", "ip proto 4", 1).unwrap();
    ping(&c, a.ip, 2).unwrap();
    let none = cap.finish(Duration::from_secs(1)).unwrap();
    assert!(none.is_empty(), "IPIP between same-subnet nodes: {none:?}");

    // Across subnets: IPIP between the node addresses, through the router.
    Captured::of_one_ping(&node1, "ip proto 4", &a, &e)
        .assert_every(IPIP)
        .assert_shows(&format!("{} > {}: ", node1.underlay_ip, node3.underlay_ip))
        .assert_shows(&format!("{} > {}: ", node3.underlay_ip, node1.underlay_ip))
        .assert_shows(&echo_request(a.ip, e.ip));
    // node3's side of the router sees the same from node2's pod.
    Captured::of_one_ping(&node3, "ip proto 4", &c, &e)
        .assert_shows(&format!("{} > {}: ", node2.underlay_ip, node3.underlay_ip));

    // The control plane's view: node1 reaches node2's block plainly, node3's by IPIP.
    let (to_node2, to_node3) = (route_to(&cp, "node2"), route_to(&cp, "node3"));
    assert!(!to_node2.contains("ipip"), "{to_node2}");
    assert!(to_node3.contains("ipip"), "{to_node3}");
    cp.check_running().unwrap();
}

#[test]
fn crosssubnet_keeps_encapsulating_across_a_routed_fabric() {
    if skip_unless_root("crosssubnet_keeps_encapsulating_across_a_routed_fabric") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [node1, node2, node3], [a, c, e]) = three_nodes(&lab, false);
    // The router could route the pods' own addresses now; CrossSubnet encapsulates anyway.
    assert_eq!(cp.route_blocks_on_router().unwrap().len(), 3);

    // Same subnet: the pod packet itself, straight to node2's MAC (not the router's).
    Captured::of_one_ping(&node1, &format!("icmp and host {}", a.ip), &a, &c)
        .assert_echo(&a, &c)
        .assert_shows(&format!(
            "{} > {}, ethertype IPv4",
            format_mac(node1.underlay_mac),
            format_mac(node2.underlay_mac)
        ));
    // Across the router: VXLAN between the node addresses, never the bare pod packet.
    Captured::of_one_ping_on_router(&lab, "br1", "udp port 4789", &a, &e)
        .assert_every(VXLAN_VNI_4096)
        .assert_shows(&format!("{}.", node1.underlay_ip))
        .assert_shows(&format!("{}.4789", node3.underlay_ip))
        .assert_shows(&echo_request(a.ip, e.ip));
    let bare = capture::during_one_ping_on(
        lab.underlay(),
        "br1",
        &format!("icmp and host {}", a.ip),
        &a,
        &e,
        CAPTURE_WITHIN,
    )
    .unwrap();
    assert!(bare.is_empty(), "bare pod packets on the router: {bare:?}");

    let before = cp.counters("node1").unwrap();
    ping(&a, c.ip, 3).unwrap();
    ping(&a, e.ip, 3).unwrap();
    let sent = cp.counters("node1").unwrap().since(&before);
    assert!(
        sent.get("encap.none.tx_packets") >= 3 && sent.get("encap.vxlan.tx_packets") >= 3,
        "node1:\n{}",
        sent.nonzero()
    );
    let (to_node2, to_node3) = (route_to(&cp, "node2"), route_to(&cp, "node3"));
    assert!(to_node2.contains("encap none"), "{to_node2}");
    assert!(to_node3.contains("encap vxlan"), "{to_node3}");
    cp.check_running().unwrap();
}
