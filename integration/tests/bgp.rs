//! BGP with BIRD (issue 14) on lab clusters whose nodes run `networking_backend = "bird"`:
//! every `tapwire-control` runs Debian's BIRD in its node's namespace (its files in the
//! lab's directory) and routes other nodes' blocks by what BIRD learns.
//!
//! - **Full mesh**: three nodes, a `Never` pool; each node's block reaches the other two
//!   through BGP alone (BIRD's kernel table of learned routes holds them with the owner
//!   as next hop), pods ping across nodes unencapsulated, and `tapwirectl node status`
//!   shows calicoctl's table with both mesh sessions Established. The time from a pod's
//!   ADD (its node claiming a block) to the other nodes' dataplanes routing the block is
//!   printed.
//! - **Route reflector**: the mesh off (`BGPConfiguration`), node1 a route reflector
//!   (`routeReflectorClusterID`, label `route-reflector: 'true'`) and one `BGPPeer`
//!   (`nodeSelector: all()`, `peerSelector: route-reflector == 'true'`): node2 and node3
//!   peer with node1 only, learn each other's blocks through it with their owner as next
//!   hop, and their pods ping.
//! - **A node stops**: node3's control and dataplane stop (its BIRD goes with the
//!   control); its peers keep its routes for the graceful restart time it announced,
//!   then withdraw them; `node status` shows its session down. The withdrawal time is
//!   printed.
//! - **Restarts**: pings every 50 ms from a pod on node1 to one on node2 while node2's
//!   and then node1's `tapwire-control` restart (each time BIRD restarts too, in graceful
//!   restart) and node1's BIRD is killed (the control starts it again), each step waiting
//!   for the BIRDs to finish their recovery as a rolling restart would: not one ping is
//!   lost.
//! - **A router**: node1 and node2 in different subnets, the lab's router between them
//!   running its own stock BIRD (AS 64513), peering with each node through a node
//!   specific `BGPPeer`: the router learns both pod blocks from BGP alone (its `show
//!   route` and its kernel's main table), and pods on the two nodes reach each other
//!   unencapsulated through it (the dataplane sends to the underlay's gateway).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tapwire_control::api::{PeerRow, Reply, Request, RouteRow};
use tapwire_integration::bird::{birdc, RouterBird};
use tapwire_integration::check::{assert_pings, assert_pings_once_reachable, Captured};
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::traffic::ping_start;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab};

/// How long peers keep a stopped node's routes (what every lab node announces).
const GRACEFUL_RESTART_SECS: u16 = 20;
/// How long sessions and routes may take to converge in the lab.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);
/// BIRD's kernel table of learned routes (tapwire's default).
const LEARNED_TABLE: &str = "30583";

fn never_pool() -> String {
    ippool_yaml("default-ipv4-ippool", "10.65.0.0/16", 26, "Never", "Never")
}

/// A BGP control plane of `names` in underlay subnet 0, with the `Never` pool.
fn bgp_cluster<'lab>(lab: &'lab Lab, names: &[&str]) -> ControlPlane<'lab> {
    ControlPlane::new(lab)
        .unwrap()
        .with_bird(GRACEFUL_RESTART_SECS)
        .unwrap()
        .started(
            &names.iter().map(|name| (*name, 0)).collect::<Vec<_>>(),
            Some(&never_pool()),
        )
        .unwrap()
}

/// The /26 block holding `ip`.
fn block_of(ip: Ipv4Addr) -> String {
    let base = u32::from(ip) & !0x3f;
    format!("{}/26", Ipv4Addr::from(base))
}

fn routes(cp: &ControlPlane<'_>, node: &str) -> Vec<RouteRow> {
    match cp.api(node, &Request::Routes).unwrap() {
        Reply::Routes { routes } => routes,
        other => panic!("routes of {node}: {other:?}"),
    }
}

/// The node whose dataplane routes `block` remotely on `node`, if any.
fn remote_owner(cp: &ControlPlane<'_>, node: &str, block: &str) -> Option<String> {
    routes(cp, node)
        .into_iter()
        .find(|r| r.dst == block && r.kind == "remote")
        .and_then(|r| r.node)
}

/// Polls `check` every 20 ms until it holds; the time it took, or a panic after `within`.
#[track_caller]
fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// The rows of `tapwirectl node status`'s IPv4 BGP table on `node`, as cells.
fn bgp_table(cp: &ControlPlane<'_>, node: &str) -> (String, Vec<Vec<String>>) {
    let text = cp.ctl(node).unwrap().ok(&["node", "status"]).unwrap();
    let rows = text
        .split("IPv4 BGP status\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no IPv4 BGP status on {node}:\n{text}"))
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with('|'))
        .skip(1) // the header
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    (text, rows)
}

/// The BGP peers of `node`'s agent (what `node status` shows).
fn bgp_peers(cp: &ControlPlane<'_>, node: &str) -> Vec<PeerRow> {
    match cp.api(node, &Request::BgpStatus).unwrap() {
        Reply::BgpStatus { bgp: Some(bgp) } => bgp.peers,
        other => panic!("BGP status of {node}: {other:?}"),
    }
}

/// Waits until `node`'s BIRD has finished its graceful restart recovery (`show status`
/// says nothing of one) and every session is established: what a rolling restart waits
/// for before it moves on to the next node.
#[track_caller]
fn wait_recovered(cp: &ControlPlane<'_>, node: &str) {
    wait_until(
        &format!("{node}'s BIRD out of graceful restart recovery"),
        CONVERGE_WITHIN,
        || {
            birdc(&cp.bird_socket(node), "show status").is_ok_and(|lines| {
                !lines
                    .iter()
                    .any(|l| l.text.contains("Graceful restart recovery"))
            })
        },
    );
    wait_established(cp, node);
}

/// Waits until every BGP session of `node` is established; their number.
#[track_caller]
fn wait_established(cp: &ControlPlane<'_>, node: &str) -> usize {
    let mut count = 0;
    wait_until(
        &format!("every BGP session of {node} established"),
        CONVERGE_WITHIN,
        || {
            let peers = bgp_peers(cp, node);
            count = peers.len();
            !peers.is_empty() && peers.iter().all(|p| p.state == "up")
        },
    );
    count
}

#[test]
fn a_full_mesh_of_three_nodes_routes_every_block_by_bgp() {
    if skip_unless_root("a_full_mesh_of_three_nodes_routes_every_block_by_bgp") {
        return;
    }
    let lab = Lab::new().unwrap();
    let names = ["node1", "node2", "node3"];
    let cp = bgp_cluster(&lab, &names);
    for node in names {
        assert_eq!(wait_established(&cp, node), 2, "{node}: two mesh sessions");
    }
    let mut pods = Vec::new();
    for (node, pod) in [("node1", "pod-a"), ("node2", "pod-b"), ("node3", "pod-c")] {
        // The pod's node claims a block during the ADD; time it from the ADD's start to
        // the others' dataplanes routing it.
        let start = Instant::now();
        let added = cp.add_pod(node, pod).unwrap();
        let add = start.elapsed();
        let block = block_of(added.ip);
        for other in names.iter().filter(|n| **n != node) {
            wait_until(
                &format!("{other} routing {node}'s block {block}"),
                CONVERGE_WITHIN,
                || remote_owner(&cp, other, &block).as_deref() == Some(node),
            );
            eprintln!(
                "convergence: {node}'s new block {block} routed on {other} {:.0?} after the \
                 ADD began (the ADD took {add:.0?})",
                start.elapsed()
            );
        }
        pods.push(added);
    }
    // The routes came from BGP: BIRD's table holds each block with its owner as next hop.
    let table = cp
        .node("node1")
        .unwrap()
        .netns()
        .exec(&["ip", "route", "show", "table", LEARNED_TABLE])
        .unwrap();
    for (pod, node) in [(&pods[1], "node2"), (&pods[2], "node3")] {
        let via = cp.node(node).unwrap().underlay_ip;
        assert!(
            table.contains(&format!("{} via {via} ", block_of(pod.ip))),
            "node1's table {LEARNED_TABLE}:\n{table}"
        );
    }
    let [a, b, c] = [&pods[0], &pods[1], &pods[2]];
    assert_pings_once_reachable(&[(a, b), (b, c), (c, a)], 5);
    // Unencapsulated: the Never pool, nodes on one L2 segment.
    let capture = Captured::of_one_ping(&cp.node("node1").unwrap(), "icmp", a, b);
    capture.assert_echo(a, b);
    // calicoctl's table: both mesh peers up and Established.
    let (text, rows) = bgp_table(&cp, "node1");
    eprintln!("tapwirectl node status on node1:\n{text}");
    assert!(text.contains("BIRD: BIRD 2."), "{text}");
    assert!(
        text.contains("\nIPv6 BGP status\nNo IPv6 peers found.\n"),
        "{text}"
    );
    let mut peers: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), r[4].clone()))
        .collect();
    peers.sort();
    assert_eq!(
        peers,
        [
            (
                "192.168.0.2".into(),
                "node-to-node mesh".into(),
                "up".into(),
                "Established".into()
            ),
            (
                "192.168.0.3".into(),
                "node-to-node mesh".into(),
                "up".into(),
                "Established".into()
            ),
        ],
        "{text}"
    );
}

#[test]
fn a_route_reflector_replaces_the_mesh() {
    if skip_unless_root("a_route_reflector_replaces_the_mesh") {
        return;
    }
    let lab = Lab::new().unwrap();
    let names = ["node1", "node2", "node3"];
    let cp = bgp_cluster(&lab, &names);
    let rr_ip = cp.node("node1").unwrap().underlay_ip;
    cp.apply(
        "node1",
        &format!(
            "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {{name: default}}
spec: {{nodeToNodeMeshEnabled: false}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: node1, labels: {{route-reflector: 'true'}}}}
spec: {{bgp: {{ipv4Address: {rr_ip}/24, routeReflectorClusterID: 224.0.0.1}}}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {{name: peer-with-route-reflectors}}
spec: {{nodeSelector: all(), peerSelector: \"route-reflector == 'true'\"}}
"
        ),
    )
    .unwrap();
    // node2 and node3 peer with the reflector only; it peers with both.
    wait_until(
        "sessions as the reflector set-up says",
        CONVERGE_WITHIN,
        || {
            let peers = |node| {
                let mut p: Vec<(String, String, String)> = bgp_peers(&cp, node)
                    .into_iter()
                    .map(|p| (p.address, p.peer_type, p.state))
                    .collect();
                p.sort();
                p
            };
            let up = |ip: &str| {
                (
                    ip.to_string(),
                    "node specific".to_string(),
                    "up".to_string(),
                )
            };
            peers("node1") == [up("192.168.0.2"), up("192.168.0.3")]
                && peers("node2") == [up("192.168.0.1")]
                && peers("node3") == [up("192.168.0.1")]
        },
    );
    let [b, c] = cp
        .add_pods([("node2", "pod-b"), ("node3", "pod-c")])
        .unwrap();
    // Reflected with the owner as next hop.
    let block_c = block_of(c.ip);
    let took = wait_until("node2 routing node3's block", CONVERGE_WITHIN, || {
        remote_owner(&cp, "node2", &block_c).as_deref() == Some("node3")
    });
    eprintln!(
        "convergence through the reflector: node3's block {block_c} on node2 after {took:.0?}"
    );
    let table = cp
        .node("node2")
        .unwrap()
        .netns()
        .exec(&["ip", "route", "show", "table", LEARNED_TABLE])
        .unwrap();
    assert!(
        table.contains(&format!("{block_c} via 192.168.0.3 ")),
        "node2's table {LEARNED_TABLE}:\n{table}"
    );
    assert_pings_once_reachable(&[(&b, &c), (&c, &b)], 5);
}

#[test]
fn a_stopped_nodes_blocks_are_withdrawn_from_the_others() {
    if skip_unless_root("a_stopped_nodes_blocks_are_withdrawn_from_the_others") {
        return;
    }
    let lab = Lab::new().unwrap();
    let names = ["node1", "node2", "node3"];
    let cp = bgp_cluster(&lab, &names);
    let [_, _, c] = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-b"), ("node3", "pod-c")])
        .unwrap();
    let block = block_of(c.ip);
    for node in ["node1", "node2"] {
        wait_until(
            &format!("{node} routing node3's block"),
            CONVERGE_WITHIN,
            || remote_owner(&cp, node, &block).is_some(),
        );
    }
    // node3 stops: its BIRD goes with its control, without withdrawing anything.
    let stopped = Instant::now();
    cp.stop_control("node3").unwrap();
    cp.stop_dataplane("node3").unwrap();
    let limit = Duration::from_secs(u64::from(GRACEFUL_RESTART_SECS) + 15);
    for node in ["node1", "node2"] {
        wait_until(&format!("{node} withdrawing node3's block"), limit, || {
            remote_owner(&cp, node, &block).is_none()
        });
        eprintln!(
            "convergence: node3's block {block} withdrawn on {node} {:.1?} after it stopped \
             (graceful restart time {GRACEFUL_RESTART_SECS} s)",
            stopped.elapsed()
        );
    }
    // Kept while the graceful restart time ran, not dropped at once.
    assert!(
        stopped.elapsed() >= Duration::from_secs(u64::from(GRACEFUL_RESTART_SECS) - 2),
        "withdrawn after {:?}, before the graceful restart time",
        stopped.elapsed()
    );
    let (text, rows) = bgp_table(&cp, "node1");
    let node3 = rows
        .iter()
        .find(|r| r[0] == "192.168.0.3")
        .unwrap_or_else(|| panic!("no session to node3:\n{text}"));
    assert_eq!(node3[2], "down", "{text}");
    let node2 = rows.iter().find(|r| r[0] == "192.168.0.2").unwrap();
    assert_eq!(
        (node2[2].as_str(), node2[4].as_str()),
        ("up", "Established"),
        "{text}"
    );
}

#[test]
fn control_restarts_and_a_killed_bird_lose_no_ping() {
    if skip_unless_root("control_restarts_and_a_killed_bird_lose_no_ping") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = bgp_cluster(&lab, &["node1", "node2"]);
    let [a, b] = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-b")])
        .unwrap();
    assert_pings_once_reachable(&[(&a, &b)], 3);
    for node in ["node1", "node2"] {
        wait_established(&cp, node);
    }
    let interval = Duration::from_millis(50);
    let ping = ping_start(&a, b.ip, 600, interval).unwrap();
    for node in ["node2", "node1"] {
        let bird = cp.bird_pid(node).unwrap();
        let started = Instant::now();
        cp.restart_control(node).unwrap();
        let took = wait_until(&format!("{node}'s BIRD back"), CONVERGE_WITHIN, || {
            let now = cp.bird_pid(node).unwrap();
            now.is_some() && now != bird
        });
        wait_recovered(&cp, node);
        eprintln!(
            "tapwire-control on {node} restarted; BIRD {bird:?} -> {:?} after {took:.1?}, \
             recovered with its sessions up {:.1?} after the restart began",
            cp.bird_pid(node).unwrap(),
            started.elapsed()
        );
        // The peer too (it was the helper of this restart).
        for other in ["node1", "node2"] {
            wait_recovered(&cp, other);
        }
    }
    // BIRD crashes; its control starts it again.
    let bird = cp.bird_pid("node1").unwrap().expect("BIRD runs on node1");
    let killed = Instant::now();
    lab.run(
        {
            let mut kill = std::process::Command::new("kill");
            kill.args(["-KILL", &bird.to_string()]);
            kill
        },
        None,
        Duration::from_secs(5),
    )
    .unwrap()
    .success()
    .unwrap();
    let took = wait_until("node1's BIRD started again", CONVERGE_WITHIN, || {
        cp.bird_pid("node1").unwrap().is_some_and(|p| p != bird)
    });
    wait_recovered(&cp, "node1");
    eprintln!(
        "BIRD on node1 killed: started again after {took:.1?}, recovered with its sessions up \
         {:.1?} after the kill",
        killed.elapsed()
    );
    let stats = ping.finish().unwrap();
    eprintln!(
        "pings across the restarts: {} sent, {} received",
        stats.transmitted, stats.received
    );
    assert!(stats.transmitted > 100, "{}", stats.output);
    assert_eq!(stats.loss_percent, 0.0, "{}", stats.output);
}

/// node1 in subnet 0 and node2 in subnet 1 with the `Never` pool, and the lab's router
/// running BIRD (AS 64513) peering with both through node specific BGPPeers; returns once
/// both sessions with the router are established.
fn routed_cluster(lab: &Lab) -> (ControlPlane<'_>, RouterBird) {
    let cp = ControlPlane::new(lab)
        .unwrap()
        .with_bird(GRACEFUL_RESTART_SECS)
        .unwrap();
    cp.add_node_in_subnet("node1", 0).unwrap();
    cp.add_node_in_subnet("node2", 1).unwrap();
    cp.apply("node1", &never_pool()).unwrap();
    let node_ip = |name| cp.node(name).unwrap().underlay_ip;
    let router = RouterBird::start(
        lab,
        lab.underlay(),
        "router",
        Ipv4Addr::new(192, 168, 0, 254),
        64513,
        &[(node_ip("node1"), 64512), (node_ip("node2"), 64512)],
    )
    .unwrap();
    cp.apply(
        "node1",
        "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: node1-tor}
spec: {node: node1, peerIP: 192.168.0.254, asNumber: 64513}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: node2-tor}
spec: {node: node2, peerIP: 192.168.1.254, asNumber: 64513}
",
    )
    .unwrap();
    // Both nodes' sessions to the router are node specific and up.
    for node in ["node1", "node2"] {
        let subnet = cp.node(node).unwrap().subnet;
        let router_ip = format!("192.168.{subnet}.254");
        wait_until(
            &format!("{node}'s session to the router"),
            CONVERGE_WITHIN,
            || {
                bgp_peers(&cp, node).iter().any(|p| {
                    p.address == router_ip && p.peer_type == "node specific" && p.state == "up"
                })
            },
        );
    }
    (cp, router)
}

#[test]
fn a_router_learns_every_pod_block_from_bgp_alone() {
    if skip_unless_root("a_router_learns_every_pod_block_from_bgp_alone") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, router) = routed_cluster(&lab);
    let protocols = router.protocols().unwrap();
    assert!(
        protocols
            .iter()
            .filter(|p| p.proto == "BGP")
            .all(|p| p.info == "Established"),
        "{protocols:?}"
    );
    for (node, pod) in [("node1", "pod-a"), ("node2", "pod-c")] {
        // The pod's node claims a block during the ADD: time it to the router.
        let start = Instant::now();
        let added = cp.add_pod(node, pod).unwrap();
        let block = block_of(added.ip);
        wait_until(
            &format!("the router learning {block}"),
            CONVERGE_WITHIN,
            || {
                router
                    .routes()
                    .unwrap()
                    .iter()
                    .any(|r| r.dst == block && r.protocol.starts_with("node"))
            },
        );
        eprintln!(
            "convergence: {node}'s new block {block} at the router {:.0?} after the ADD began",
            start.elapsed()
        );
        // What BGP taught it is in its kernel: it forwards pods' traffic by it.
        let via = cp.node(node).unwrap().underlay_ip;
        let kernel = lab
            .underlay()
            .exec(&["ip", "route", "show", "proto", "bird"])
            .unwrap();
        assert!(
            kernel.contains(&format!("{block} via {via} ")),
            "the router's routes from BIRD:\n{kernel}"
        );
    }
}

#[test]
fn routed_pods_reach_each_other_unencapsulated_through_the_router() {
    if skip_unless_root("routed_pods_reach_each_other_unencapsulated_through_the_router") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, _router) = routed_cluster(&lab);
    let [a, c] = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-c")])
        .unwrap();
    wait_until("node1 routing node2's block", CONVERGE_WITHIN, || {
        remote_owner(&cp, "node1", &block_of(c.ip)).as_deref() == Some("node2")
    });
    assert_pings_once_reachable(&[(&a, &c), (&c, &a)], 5);
    assert_pings(&a, &c, 10);
    // The router carries the pods' own packets, on both of its subnets: no tunnel.
    for bridge in ["br0", "br1"] {
        Captured::of_one_ping_on_router(&lab, bridge, "icmp", &a, &c).assert_echo(&a, &c);
    }
}
