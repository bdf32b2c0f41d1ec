//! `CrossSubnet`, decided by the control plane from the nodes' underlay subnets: node1
//! and node2 share 192.168.0.0/24, node3 sits in 192.168.1.0/24 behind the lab's router
//! namespace. With an IPIP pool in `ipipMode: CrossSubnet`, traffic between node1 and
//! node2 goes unencapsulated (plain pod addresses on the wire) while traffic to and from
//! node3 is IPIP between the node addresses, across the router. Captures on the
//! underlay prove both; `tapwirectl routes` says the same.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_integration::capture;
use tapwire_integration::check::{assert_pings_once_reachable, echo_request, Captured, IPIP};
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::{ping, skip_unless_root, ControlPlane, Lab};

#[test]
fn crosssubnet_encapsulates_only_between_subnets() {
    if skip_unless_root("crosssubnet_encapsulates_only_between_subnets") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::new(&lab).unwrap();
    let node1 = cp.add_node_in_subnet("node1", 0).unwrap();
    let node2 = cp.add_node_in_subnet("node2", 0).unwrap();
    let node3 = cp.add_node_in_subnet("node3", 1).unwrap();
    let pool = ippool_yaml(
        "cross-subnet-pool",
        "10.65.0.0/16",
        26,
        "CrossSubnet",
        "Never",
    );
    cp.apply("node1", &pool).unwrap();
    let ctl = cp.ctl("node1").unwrap();
    let [a, c, e] = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-c"), ("node3", "pod-e")])
        .unwrap();
    // The pod MTU allows for the encapsulation some peers need.
    assert_eq!(a.mtu_bytes, 1480);

    assert_pings_once_reachable(
        &[(&a, &c), (&c, &a), (&a, &e), (&e, &a), (&c, &e), (&e, &c)],
        3,
    );

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
    let routes = ctl.ok(&["routes"]).unwrap();
    let line_of = |node: &str| {
        routes
            .lines()
            .find(|l| l.contains(node) && !l.contains("blackhole"))
            .unwrap_or_else(|| panic!("no route to {node}'s block in:\n{routes}"))
            .to_string()
    };
    let to_node2 = line_of("node2");
    let to_node3 = line_of("node3");
    assert!(!to_node2.contains("ipip"), "{routes}");
    assert!(to_node3.contains("ipip"), "{routes}");
    cp.check_running().unwrap();
}
