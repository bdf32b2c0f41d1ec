//! Unencapsulated pod traffic across a routed fabric. The lab's underlay namespace routes
//! between subnet bridges (`br<s>`, router address `192.168.<s>.254`); taught each node's
//! pod blocks, as a top-of-rack router peering with the nodes by BGP would be
//! ([`ControlPlane::route_blocks_on_router`]), it routes pod addresses too. A node's
//! dataplane then sends a `Never` pool's frames for a peer in another subnet to the
//! gateway its own routing names for that peer (resolved by the dataplane's ARP) and
//! follows that routing when it changes. (`CrossSubnet` over such a fabric, which still
//! encapsulates exactly where the subnets differ, is in `control_crosssubnet`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use tapwire_integration::capture::{self, Timestamps};
use tapwire_integration::check::{
    assert_pings_once_reachable, Captured, CAPTURE_WITHIN, REACHABLE_WITHIN,
};
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::lab::format_mac;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{
    ping, skip_unless_root, tcp_transfer, ControlPlane, Lab, Node, Pod, Transfer,
};

/// How soon the dataplane must follow a change of the node's underlay routing or of its
/// gateway's MAC: the resolver looks routes up again at once on a change notification
/// and re-asks a gateway's MAC every 5 s.
const FOLLOWS_WITHIN: Duration = Duration::from_secs(10);

/// A `Never` pool on node1 (subnet 1) and node2 (subnet 2), a pod on each, their blocks
/// routed on the router.
fn never_pool_across_the_router(lab: &Lab) -> (ControlPlane<'_>, [Node; 2], [Pod; 2]) {
    let pool = ippool_yaml("fabric-pool", "10.65.0.0/16", 26, "Never", "Never");
    let names = [("node1", 1), ("node2", 2)];
    let cp = ControlPlane::with_pool_in_subnets(lab, &names, &pool).unwrap();
    let nodes = names.map(|(name, _)| cp.node(name).unwrap());
    let pods = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-b")])
        .unwrap();
    // Nothing is encapsulated: the pods get the whole underlay MTU.
    assert_eq!(pods[0].mtu_bytes, 1500);
    let routed = cp.route_blocks_on_router().unwrap();
    assert_eq!(routed.len(), 2, "one block per node: {routed:?}");
    (cp, nodes, pods)
}

/// The MAC of `interface` in the lab's router.
fn router_mac(lab: &Lab, interface: &'static str) -> String {
    format_mac(
        lab.underlay()
            .run(|| tapwire_sys::link::hwaddr(interface))
            .unwrap(),
    )
}

/// Bytes the router has sent out of `interface`.
fn router_tx_bytes(lab: &Lab, interface: &str) -> u64 {
    let path = format!("/sys/class/net/{interface}/statistics/tx_bytes");
    let text = lab.underlay().exec(&["cat", &path]).unwrap();
    text.trim().parse().unwrap()
}

#[test]
fn a_never_pool_crosses_the_router_unencapsulated() {
    if skip_unless_root("a_never_pool_crosses_the_router_unencapsulated") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [node1, node2], [a, b]) = never_pool_across_the_router(&lab);
    assert_pings_once_reachable(&[(&a, &b), (&b, &a)], 3);

    // node1 hands the pod's packet to its gateway, not to node2 (not on its link).
    let br1 = router_mac(&lab, "br1");
    Captured::of_one_ping(&node1, &format!("icmp and host {}", a.ip), &a, &b)
        .assert_echo(&a, &b)
        .assert_shows(&format!(
            "{} > {br1}, ethertype IPv4",
            format_mac(node1.underlay_mac)
        ));
    // The router forwards the pod addresses themselves: no IPIP, no VXLAN.
    let filter = format!("ip proto 4 or udp port 4789 or (icmp and host {})", a.ip);
    Captured::of_one_ping_on_router(&lab, "br2", &filter, &a, &b)
        .assert_echo(&a, &b)
        .assert_every("proto ICMP (1)")
        .assert_none("IPIP")
        .assert_none("VXLAN")
        .assert_shows(&format!(
            "{} > {}, ethertype IPv4",
            router_mac(&lab, "br2"),
            format_mac(node2.underlay_mac)
        ));

    // A bulk TCP stream crosses the router, every byte of it unencapsulated.
    let before = [cp.counters("node1").unwrap(), cp.counters("node2").unwrap()];
    let through_router = router_tx_bytes(&lab, "br2");
    let report = tcp_transfer(
        &a,
        &b,
        &Transfer::for_duration(Duration::from_secs(3), u64::MAX),
    )
    .unwrap();
    eprintln!("pod-a -> pod-b through the router, unencapsulated: {report}");
    assert!(report.bytes > 10 << 20, "{report}");
    let routed = router_tx_bytes(&lab, "br2") - through_router;
    assert!(
        routed >= report.bytes,
        "the router sent {routed} bytes to subnet 2 for a {report} stream"
    );
    let sent = cp.counters("node1").unwrap().since(&before[0]);
    let received = cp.counters("node2").unwrap().since(&before[1]);
    // At least one packet per 1500 bytes, nothing of it in a tunnel.
    let packets = report.bytes / 1500;
    assert!(
        sent.get("encap.none.tx_packets") >= packets,
        "node1:\n{}",
        sent.nonzero()
    );
    assert!(
        received.get("encap.none.rx_packets") >= packets,
        "node2:\n{}",
        received.nonzero()
    );
    for tunnel in ["encap.ipip.tx_packets", "encap.vxlan.tx_packets"] {
        assert_eq!(sent.get(tunnel), 0, "node1:\n{}", sent.nonzero());
    }
    cp.check_running().unwrap();
}

/// Waits until `from` reaches `to`, failing past [`FOLLOWS_WITHIN`]; returns how long.
fn time_until_reachable(from: &Pod, to: &Pod, what: &str) -> Duration {
    let start = Instant::now();
    wait_reachable(from, to.ip, FOLLOWS_WITHIN).unwrap_or_else(|err| panic!("{what}: {err}"));
    let took = start.elapsed();
    eprintln!(
        "{what}: {} reaches {} again after {took:.1?}",
        from.name, to.name
    );
    took
}

#[test]
fn the_next_hop_follows_the_nodes_routes_and_its_gateways_mac() {
    if skip_unless_root("the_next_hop_follows_the_nodes_routes_and_its_gateways_mac") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [node1, _], [a, b]) = never_pool_across_the_router(&lab);
    wait_reachable(&a, b.ip, REACHABLE_WITHIN).unwrap();
    wait_reachable(&b, a.ip, REACHABLE_WITHIN).unwrap();

    // node1 loses its way to node2's subnet: its dataplane stops sending there (a
    // counted drop) instead of sending to a gateway its routing no longer names.
    node1.netns().ip(&["route", "del", "default"]).unwrap();
    let deadline = Instant::now() + FOLLOWS_WITHIN;
    while ping(&a, b.ip, 1).unwrap().received > 0 {
        assert!(
            Instant::now() < deadline,
            "still reaching node2 without a route"
        );
    }
    let before = cp.counters("node1").unwrap();
    let stats = ping(&a, b.ip, 2).unwrap();
    assert_eq!(stats.received, 0, "{}", stats.output);
    let dropped = cp.counters("node1").unwrap().since(&before);
    assert!(
        dropped.get("drop.neighbor_unresolved") >= 2,
        "node1:\n{}",
        dropped.nonzero()
    );

    // A route through another gateway: the dataplane asks for that gateway and sends
    // to it.
    let new_gateway = Ipv4Addr::new(192, 168, 1, 253);
    lab.underlay()
        .ip(&["addr", "add", &format!("{new_gateway}/24"), "dev", "br1"])
        .unwrap();
    let asked = capture::start_with(
        node1.netns(),
        "eth0",
        &format!("arp and dst host {new_gateway}"),
        1,
        Timestamps::Epoch,
    )
    .unwrap();
    let route_added = SystemTime::now();
    node1
        .netns()
        .ip(&[
            "route",
            "add",
            "192.168.2.0/24",
            "via",
            &new_gateway.to_string(),
        ])
        .unwrap();
    time_until_reachable(&a, &b, "a route via another gateway");
    let asked = Captured {
        packets: asked.finish(CAPTURE_WITHIN).unwrap(),
    };
    asked.assert_shows(&format!(
        "Request who-has {new_gateway} tell {}",
        node1.underlay_ip
    ));
    let first_request = asked.packets.first().and_then(|p| capture::packet_time(p));
    let followed = first_request
        .and_then(|t| t.duration_since(route_added).ok())
        .unwrap_or_else(|| panic!("no time on the request: {}", asked.shown()));
    eprintln!("the route change: node1 asked for {new_gateway} {followed:.1?} after it");
    assert!(followed < Duration::from_secs(2), "{followed:?}");

    // The gateway's MAC changes without a word (the bridge's, and that of its port
    // towards node1, whose address the bridge also takes frames for): the dataplane
    // finds the new one.
    let new_mac = "02:00:00:00:fe:01";
    for (device, mac) in [("br1", new_mac), ("n1", "02:00:00:00:fe:02")] {
        lab.underlay()
            .ip(&["link", "set", device, "address", mac])
            .unwrap();
    }
    time_until_reachable(&a, &b, "the gateway's new MAC");
    let node1_mac = format_mac(node1.underlay_mac);
    Captured::of_one_ping(&node1, &format!("icmp and host {}", a.ip), &a, &b)
        .assert_shows(&format!("{node1_mac} > {new_mac}, ethertype IPv4"))
        .assert_shows(&format!("{new_mac} > {node1_mac}, ethertype IPv4"));
    assert_pings_once_reachable(&[(&a, &b), (&b, &a)], 3);
    cp.check_running().unwrap();
}
