//! `CrossSubnet`, decided by the control plane from the nodes' underlay subnets: node1
//! and node2 share 192.168.0.0/24, node3 sits in 192.168.1.0/24 behind the lab's router
//! namespace. With an IPIP pool in `ipipMode: CrossSubnet`, traffic between node1 and
//! node2 goes unencapsulated (plain pod addresses on the wire) while traffic to and from
//! node3 is IPIP between the node addresses, across the router. Captures on the
//! underlay prove both; `tapwirectl routes` says the same.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_integration::capture;
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{ping, skip_unless_root, ControlPlane, Lab, Node, Pod};

fn assert_pings(from: &Pod, to: &Pod) {
    let stats = ping(from, to.ip, 3).unwrap();
    assert_eq!(
        stats.loss_percent, 0.0,
        "{} -> {}:\n{}",
        from.name, to.name, stats.output
    );
}

/// Captures two packets of `filter` on `node`'s `eth0` during one ping `from` → `to`.
fn capture_ping(node: &Node, filter: &str, from: &Pod, to: &Pod) -> Vec<String> {
    let cap = capture::start(node.netns(), "eth0", filter, 2).unwrap();
    ping(from, to.ip, 1).unwrap();
    cap.finish(Duration::from_secs(5)).unwrap()
}

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
    let ctl = cp.ctl("node1").unwrap();
    ctl.apply(&ippool_yaml(
        "cross-subnet-pool",
        "10.65.0.0/16",
        26,
        "CrossSubnet",
        "Never",
    ))
    .unwrap()
    .success()
    .unwrap();
    let a = cp.add_pod("node1", "pod-a").unwrap();
    let c = cp.add_pod("node2", "pod-c").unwrap();
    let e = cp.add_pod("node3", "pod-e").unwrap();
    // The pod MTU allows for the encapsulation some peers need.
    assert_eq!(a.mtu_bytes, 1480);

    for (from, to) in [(&a, &c), (&c, &a), (&a, &e), (&e, &a), (&c, &e), (&e, &c)] {
        wait_reachable(from, to.ip, Duration::from_secs(15)).unwrap();
        assert_pings(from, to);
    }

    // Same subnet: the pod addresses themselves on the wire, both ways.
    let plain = capture_ping(&node1, &format!("icmp and host {}", a.ip), &a, &c);
    let shown = plain.join("\n");
    assert_eq!(plain.len(), 2, "{shown}");
    assert!(plain.iter().all(|p| !p.contains("IPIP")), "{shown}");
    assert!(
        shown.contains(&format!("{} > {}: ICMP echo request", a.ip, c.ip))
            && shown.contains(&format!("{} > {}: ICMP echo reply", c.ip, a.ip)),
        "{shown}"
    );
    // ... and no IPIP between node1 and node2 meanwhile.
    let cap = capture::start(node2.netns(), "eth0", "ip proto 4", 1).unwrap();
    ping(&c, a.ip, 2).unwrap();
    let none = cap.finish(Duration::from_secs(1)).unwrap();
    assert!(none.is_empty(), "IPIP between same-subnet nodes: {none:?}");

    // Across subnets: IPIP between the node addresses, through the router.
    let tunnelled = capture_ping(&node1, "ip proto 4", &a, &e);
    let shown = tunnelled.join("\n");
    assert_eq!(tunnelled.len(), 2, "{shown}");
    assert!(
        tunnelled.iter().all(|p| p.contains("proto IPIP (4)")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{} > {}: ", node1.underlay_ip, node3.underlay_ip))
            && shown.contains(&format!("{} > {}: ", node3.underlay_ip, node1.underlay_ip)),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{} > {}: ICMP echo request", a.ip, e.ip)),
        "{shown}"
    );
    // node3's side of the router sees the same from node2's pod.
    let tunnelled = capture_ping(&node3, "ip proto 4", &c, &e);
    let shown = tunnelled.join("\n");
    assert_eq!(tunnelled.len(), 2, "{shown}");
    assert!(
        shown.contains(&format!("{} > {}: ", node2.underlay_ip, node3.underlay_ip)),
        "{shown}"
    );

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
