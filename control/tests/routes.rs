//! Route computation, table-driven: every encapsulation mode against peers in the same and
//! in another underlay subnet, declared (non-tapwire) hosts, pod MTUs, the snapshot and
//! the diffs. The computed messages are also fed into the dataplane's own state machine
//! (`tapwire_dataplane::state`) to check that the forwarding decision a user cares about
//! — "packets to that pod go to node B as VXLAN" — is what comes out on the other side.
// clippy.toml allows unwrap/expect in #[test] fns; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tapwire_control::model::{
    EncapMode, IpPool, MacAddr, Metadata, Node, WorkloadEndpoint, WorkloadEndpointSpec,
};
use tapwire_control::routes::{
    desired_state, desired_state_with, diff, to_messages, ClusterState, DesiredDataplane,
    LearnedRoute, LocalNode, PoolType, RemoteRoutes, RouteKind, RoutesError, VNI,
};
use tapwire_dataplane::state::{build_tables, AttachedEndpoint, Desired, Underlay};
use tapwire_dataplane::tables::{RouteTarget, Tables};
use tapwire_proto::{
    config, to_dataplane::Payload, Encap, IpPoolType, RouteType, NETNS_ANNOTATION,
};

const A: &str = "node-a";
const B: &str = "node-b"; // same underlay subnet as A
const C: &str = "node-c"; // another underlay subnet

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn node(name: &str, underlay: &str) -> Node {
    Node::new(name, net(underlay))
}

fn pool(name: &str, cidr: &str, ipip: EncapMode, vxlan: EncapMode) -> IpPool {
    let mut p = IpPool::new(name, net(cidr));
    p.spec.ipip_mode = ipip;
    p.spec.vxlan_mode = vxlan;
    p
}

fn pod(node: &str, name: &str, addr: &str) -> WorkloadEndpoint {
    WorkloadEndpoint {
        metadata: Metadata {
            namespace: Some("default".into()),
            ..Metadata::named(WorkloadEndpoint::calico_name(node, "k8s", name, "eth0"))
        },
        spec: WorkloadEndpointSpec {
            node: node.into(),
            orchestrator: "k8s".into(),
            workload: name.into(),
            endpoint: "eth0".into(),
            interface_name: "eth0".into(),
            ip_networks: vec![net(&format!("{addr}/32"))],
            mac: Some("02:00:0a:41:00:02".parse().unwrap()),
            netns: Some(format!("/var/run/netns/{name}")),
            container_id: Some(format!("c-{name}")),
            profiles: Vec::new(),
        },
    }
}

/// Three nodes, one pool in the given modes, one block each, a pod on A and one on B.
fn cluster(ipip: EncapMode, vxlan: EncapMode) -> ClusterState {
    ClusterState {
        nodes: vec![
            node(A, "192.168.0.1/24"),
            node(B, "192.168.0.2/24"),
            node(C, "192.168.1.3/24"),
        ],
        pools: vec![pool("default-ipv4-ippool", "10.65.0.0/16", ipip, vxlan)],
        blocks: BTreeMap::from([
            (net("10.65.0.0/26"), A.to_string()),
            (net("10.65.0.64/26"), B.to_string()),
            (net("10.65.0.128/26"), C.to_string()),
        ]),
        endpoints: vec![pod(A, "pod-a", "10.65.0.2"), pod(B, "pod-b", "10.65.0.66")],
        ..ClusterState::default()
    }
}

fn local(name: &str) -> LocalNode {
    LocalNode {
        name: name.into(),
        underlay_mtu_bytes: 1500,
    }
}

fn compute(cluster: &ClusterState) -> DesiredDataplane {
    desired_state(cluster, &local(A)).unwrap()
}

/// The dataplane's state after applying `messages`; every message must apply cleanly.
fn dataplane(messages: Vec<Payload>) -> Desired {
    let mut desired = Desired::default();
    for m in messages {
        desired
            .apply(m)
            .expect("the dataplane accepts every message");
    }
    desired
}

/// The dataplane's forwarding tables on node A, with pod-a's queues attached.
fn tables(desired: &Desired) -> Tables {
    let underlay = Underlay {
        ip: ip("192.168.0.1"),
        mac: [2, 0, 0, 0, 0, 1],
        mtu_bytes: 1500,
        vxlan_port: 4789,
        host_path: None,
    };
    let attached = BTreeMap::from([(
        "k8s/default/pod-a/eth0".to_string(),
        AttachedEndpoint {
            slot: 0,
            mac: [2, 0, 10, 65, 0, 2],
            mtu_bytes: 1450,
        },
    )]);
    build_tables(desired, &underlay, &attached, &HashMap::new())
}

/// Where node A's dataplane sends a packet for `dst`: ("local", …), ("blackhole", …) or
/// (peer name, encapsulation).
fn decision(tables: &Tables, dst: &str) -> (String, Option<Encap>) {
    match tables.fib.lookup(ip(dst)) {
        Some(RouteTarget::LocalEndpoint(_)) => ("local".into(), None),
        Some(RouteTarget::Blackhole) => ("blackhole".into(), None),
        Some(RouteTarget::PoolUnrouted) => ("pool, no route".into(), None),
        Some(RouteTarget::Host) => ("host".into(), None),
        Some(RouteTarget::RemoteNode { peer, encap }) => {
            (tables.peer(*peer).unwrap().name.clone(), Some(*encap))
        }
        None => ("no route".into(), None),
    }
}

fn route_update<'a>(messages: &'a [Payload], dst: &str) -> &'a tapwire_proto::RouteUpdate {
    messages
        .iter()
        .find_map(|m| match m {
            Payload::RouteUpdate(r) if r.dst == dst => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no route update for {dst}"))
}

#[test]
fn every_mode_against_peers_in_the_same_and_another_subnet() {
    use EncapMode::{Always, CrossSubnet, Never};
    // (ipipMode, vxlanMode, peer, peer's block, pod address there, same subnet,
    //  pool type, encapsulation on the wire)
    let table = [
        (
            Always,
            Never,
            B,
            "10.65.0.64/26",
            "10.65.0.66",
            true,
            PoolType::Ipip,
            Encap::Ipip,
        ),
        (
            Always,
            Never,
            C,
            "10.65.0.128/26",
            "10.65.0.130",
            false,
            PoolType::Ipip,
            Encap::Ipip,
        ),
        (
            CrossSubnet,
            Never,
            B,
            "10.65.0.64/26",
            "10.65.0.66",
            true,
            PoolType::Ipip,
            Encap::None,
        ),
        (
            CrossSubnet,
            Never,
            C,
            "10.65.0.128/26",
            "10.65.0.130",
            false,
            PoolType::Ipip,
            Encap::Ipip,
        ),
        (
            Never,
            Always,
            B,
            "10.65.0.64/26",
            "10.65.0.66",
            true,
            PoolType::Vxlan,
            Encap::Vxlan,
        ),
        (
            Never,
            Always,
            C,
            "10.65.0.128/26",
            "10.65.0.130",
            false,
            PoolType::Vxlan,
            Encap::Vxlan,
        ),
        (
            Never,
            CrossSubnet,
            B,
            "10.65.0.64/26",
            "10.65.0.66",
            true,
            PoolType::Vxlan,
            Encap::None,
        ),
        (
            Never,
            CrossSubnet,
            C,
            "10.65.0.128/26",
            "10.65.0.130",
            false,
            PoolType::Vxlan,
            Encap::Vxlan,
        ),
        (
            Never,
            Never,
            B,
            "10.65.0.64/26",
            "10.65.0.66",
            true,
            PoolType::NoEncap,
            Encap::None,
        ),
        (
            Never,
            Never,
            C,
            "10.65.0.128/26",
            "10.65.0.130",
            false,
            PoolType::NoEncap,
            Encap::None,
        ),
    ];
    for (ipip, vxlan, peer, block, pod_addr, same_subnet, pool_type, encap) in table {
        let case = format!("ipipMode {ipip}, vxlanMode {vxlan}, to {peer}");
        let desired = compute(&cluster(ipip, vxlan));
        assert!(desired.skipped.is_empty(), "{case}: {:?}", desired.skipped);

        let route = &desired.routes[&net(block)];
        assert_eq!(route.kind, RouteKind::RemoteBlock, "{case}");
        assert_eq!(route.node, peer, "{case}");
        assert_eq!(route.same_subnet, same_subnet, "{case}");
        assert_eq!(route.pool_type, pool_type, "{case}");
        assert_eq!(route.encap, encap, "{case}");

        let messages = to_messages(&desired);
        let update = route_update(&messages, block);
        assert!(update.has_type(RouteType::RemoteWorkload), "{case}");
        assert_eq!(update.dst_node_name, peer, "{case}");
        assert_eq!(
            update.dst_node_ip,
            if peer == B {
                "192.168.0.2"
            } else {
                "192.168.1.3"
            },
            "{case}"
        );
        assert_eq!(update.same_subnet, same_subnet, "{case}");
        let expected_type = match pool_type {
            PoolType::Ipip => IpPoolType::Ipip,
            PoolType::Vxlan => IpPoolType::Vxlan,
            PoolType::NoEncap => IpPoolType::NoEncap,
            PoolType::None => IpPoolType::None,
        };
        assert_eq!(update.ip_pool_type, expected_type as i32, "{case}");

        // What node A's dataplane does with a packet to a pod on the peer.
        let tables = tables(&dataplane(messages));
        assert_eq!(
            decision(&tables, pod_addr),
            (peer.to_string(), Some(encap)),
            "{case}"
        );
    }
}

#[test]
fn own_blocks_are_local_and_unused_addresses_blackholed() {
    let desired = compute(&cluster(EncapMode::Always, EncapMode::Never));
    let own = &desired.routes[&net("10.65.0.0/26")];
    assert_eq!(own.kind, RouteKind::LocalBlock);
    assert_eq!(own.node, A);
    let messages = to_messages(&desired);
    let update = route_update(&messages, "10.65.0.0/26");
    assert_eq!(
        update.dst_node_name, A,
        "dst_node_name = FelixHostname → blackhole"
    );
    assert!(update.has_type(RouteType::LocalWorkload));
    assert!(!update.local_workload);

    let tables = tables(&dataplane(messages));
    assert_eq!(decision(&tables, "10.65.0.2").0, "local", "pod-a");
    assert_eq!(
        decision(&tables, "10.65.0.3").0,
        "blackhole",
        "no pod there"
    );
    assert_eq!(decision(&tables, "10.66.0.1").0, "no route");
}

#[test]
fn local_pods_get_a_route_and_an_endpoint_with_their_netns() {
    let desired = compute(&cluster(EncapMode::Never, EncapMode::Always));
    assert_eq!(desired.endpoints.len(), 1, "only this node's pods");
    let endpoint = &desired.endpoints["k8s/default/pod-a/eth0"];
    assert_eq!(endpoint.netns, "/var/run/netns/pod-a");
    let route = &desired.routes[&net("10.65.0.2/32")];
    assert_eq!(route.kind, RouteKind::LocalWorkload);
    assert!(
        !desired.routes.contains_key(&net("10.65.0.66/32")),
        "pod-b is B's"
    );

    let messages = to_messages(&desired);
    let update = messages
        .iter()
        .find_map(|m| match m {
            Payload::WorkloadEndpointUpdate(u) => Some(u),
            _ => None,
        })
        .unwrap();
    let id = update.id.as_ref().unwrap();
    assert_eq!(
        (
            id.orchestrator_id.as_str(),
            id.workload_id.as_str(),
            id.endpoint_id.as_str()
        ),
        ("k8s", "default/pod-a", "eth0")
    );
    let ep = update.endpoint.as_ref().unwrap();
    assert_eq!(ep.annotations[NETNS_ANNOTATION], "/var/run/netns/pod-a");
    assert_eq!(ep.ipv4_nets, ["10.65.0.2/32"]);
    assert_eq!(ep.mac, "02:00:0a:41:00:02");
    assert_eq!(ep.name, "eth0");
    assert_eq!(ep.state, "active");
    let pod_route = route_update(&messages, "10.65.0.2/32");
    assert!(pod_route.local_workload && pod_route.has_type(RouteType::LocalWorkload));

    let dp_state = dataplane(messages);
    assert_eq!(dp_state.endpoints.len(), 1);
    let spec = &dp_state.endpoints["k8s/default/pod-a/eth0"];
    assert_eq!(spec.netns.to_str(), Some("/var/run/netns/pod-a"));
}

#[test]
fn a_declared_kernel_vxlan_host_is_a_peer() {
    let mut state = cluster(EncapMode::Never, EncapMode::Always);
    let mut kernel = node("kernel-host", "192.168.1.9/24");
    kernel.spec.ipv4_vxlan_tunnel_addr = Some(ip("10.70.0.1"));
    kernel.spec.pod_cidrs = vec![net("10.70.0.0/26")];
    state.nodes.push(kernel);
    state.pools.push(pool(
        "kernel-pool",
        "10.70.0.0/16",
        EncapMode::Never,
        EncapMode::Always,
    ));
    let desired = compute(&state);
    assert!(desired.skipped.is_empty(), "{:?}", desired.skipped);

    let vtep = &desired.vteps["kernel-host"];
    assert_eq!(vtep.mac, MacAddr::derived_vtep("kernel-host"));
    assert_eq!(vtep.mac.to_string(), "66:68:21:5a:8f:91");
    assert_eq!(vtep.tunnel_addr, Some(ip("10.70.0.1")));
    assert_eq!(vtep.underlay_addr, ip("192.168.1.9"));
    let route = &desired.routes[&net("10.70.0.0/26")];
    assert_eq!(
        (route.kind, route.node.as_str()),
        (RouteKind::RemoteBlock, "kernel-host")
    );
    assert_eq!(route.encap, Encap::Vxlan);

    let messages = to_messages(&desired);
    let vtep_update = messages
        .iter()
        .find_map(|m| match m {
            Payload::VtepUpdate(v) if v.node == "kernel-host" => Some(v),
            _ => None,
        })
        .unwrap();
    assert_eq!(vtep_update.mac, "66:68:21:5a:8f:91");
    assert_eq!(vtep_update.ipv4_addr, "10.70.0.1");
    assert_eq!(vtep_update.parent_device_ip, "192.168.1.9");

    let tables = tables(&dataplane(messages));
    assert_eq!(
        decision(&tables, "10.70.0.5"),
        ("kernel-host".to_string(), Some(Encap::Vxlan))
    );
    let peer = tables
        .peers
        .iter()
        .find(|p| p.name == "kernel-host")
        .unwrap();
    assert_eq!(peer.vtep_mac, Some(MacAddr::derived_vtep("kernel-host").0));
    // Our own VTEP MAC is Calico's derivation too, unless the Node sets one.
    assert_eq!(tables.local.vtep_mac, MacAddr::derived_vtep(A).0);
}

#[test]
fn a_configured_vtep_mac_wins_over_the_derived_one() {
    let mut state = cluster(EncapMode::Never, EncapMode::Always);
    state.nodes[1].spec.vxlan_tunnel_mac_addr = Some("02:aa:bb:cc:dd:ee".parse().unwrap());
    let desired = compute(&state);
    assert_eq!(desired.vteps[B].mac.to_string(), "02:aa:bb:cc:dd:ee");
    assert_eq!(desired.vteps[C].mac, MacAddr::derived_vtep(C));
}

#[test]
fn pod_mtu_is_the_underlay_mtu_less_the_largest_overhead() {
    use EncapMode::{Always, CrossSubnet, Never};
    let two_pools = |first: (EncapMode, EncapMode), second: (EncapMode, EncapMode)| {
        let mut state = cluster(first.0, first.1);
        state
            .pools
            .push(pool("second", "10.66.0.0/16", second.0, second.1));
        state
    };
    let table = [
        ("no encapsulation", cluster(Never, Never), 1500),
        ("IPIP", cluster(Always, Never), 1480),
        ("IPIP cross-subnet", cluster(CrossSubnet, Never), 1480),
        ("VXLAN", cluster(Never, Always), 1450),
        ("VXLAN cross-subnet", cluster(Never, CrossSubnet), 1450),
        (
            "IPIP and VXLAN pools",
            two_pools((Always, Never), (Never, Always)),
            1450,
        ),
        (
            "IPIP and plain pools",
            two_pools((Always, Never), (Never, Never)),
            1480,
        ),
        (
            "no pools",
            ClusterState {
                pools: Vec::new(),
                ..cluster(Never, Never)
            },
            1500,
        ),
    ];
    for (case, state, mtu) in table {
        assert_eq!(compute(&state).pod_mtu_bytes, mtu, "{case}");
    }
    let jumbo = desired_state(
        &cluster(Never, Always),
        &LocalNode {
            name: A.into(),
            underlay_mtu_bytes: 9000,
        },
    )
    .unwrap();
    assert_eq!(jumbo.pod_mtu_bytes, 8950);
}

#[test]
fn the_pool_and_encapsulation_messages_speak_felix() {
    use EncapMode::{Always, CrossSubnet, Never};
    for (ipip, vxlan, ipip_s, vxlan_s) in [
        (Always, Never, "always", ""),
        (CrossSubnet, Never, "cross-subnet", ""),
        (Never, Always, "", "always"),
        (Never, CrossSubnet, "", "cross-subnet"),
        (Never, Never, "", ""),
    ] {
        let mut state = cluster(ipip, vxlan);
        state.pools[0].spec.nat_outgoing = true;
        let messages = to_messages(&compute(&state));
        let update = messages
            .iter()
            .find_map(|m| match m {
                Payload::IpamPoolUpdate(u) => Some(u),
                _ => None,
            })
            .unwrap();
        assert_eq!(update.id, "10.65.0.0/16");
        let p = update.pool.as_ref().unwrap();
        assert_eq!(
            (p.ipip_mode.as_str(), p.vxlan_mode.as_str()),
            (ipip_s, vxlan_s)
        );
        assert_eq!(p.cidr, "10.65.0.0/16");
        assert!(p.masquerade);
        assert_eq!(p.allowed_uses, ["Workload", "Tunnel"]);
        let Some(Payload::Encapsulation(e)) = messages.iter().rev().nth(1) else {
            panic!("Encapsulation is second to last")
        };
        assert_eq!(e.ipip_enabled, ipip != Never);
        assert_eq!(e.vxlan_enabled, vxlan != Never);
        assert_eq!(e.no_encap_enabled, ipip == Never && vxlan == Never);
        assert!(route_update(&messages, "10.65.0.64/26").nat_outgoing);
    }
}

/// The position of each payload kind in the snapshot order.
fn rank(payload: &Payload) -> usize {
    match payload {
        Payload::ConfigUpdate(_) => 0,
        Payload::HostMetadataUpdate(_) => 1,
        Payload::IpamPoolUpdate(_) => 2,
        Payload::VtepUpdate(_) => 3,
        Payload::RouteUpdate(_) => 4,
        Payload::WorkloadEndpointUpdate(_) => 5,
        Payload::Encapsulation(_) => 6,
        Payload::InSync(_) => 7,
        _ => usize::MAX,
    }
}

#[test]
fn the_snapshot_starts_with_config_and_ends_with_in_sync() {
    let desired = compute(&cluster(EncapMode::Always, EncapMode::Never));
    let messages = to_messages(&desired);
    let ranks: Vec<usize> = messages.iter().map(rank).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "order: {ranks:?}");
    assert_eq!(ranks.first(), Some(&0));
    assert_eq!(ranks.last(), Some(&7));
    let Payload::ConfigUpdate(c) = &messages[0] else {
        panic!("config first")
    };
    assert_eq!(c.config[config::HOSTNAME], A);
    assert_eq!(c.config[config::VXLAN_VNI], "4096");
    assert_eq!(VNI, 4096);
    // Counts: 3 hosts, 1 pool, 3 VTEPs, 3 blocks + 1 pod route, 1 endpoint.
    let count = |r: usize| ranks.iter().filter(|x| **x == r).count();
    assert_eq!(
        [count(1), count(2), count(3), count(4), count(5)],
        [3, 1, 3, 4, 1]
    );
    let hosts: Vec<(String, String)> = messages
        .iter()
        .filter_map(|m| match m {
            Payload::HostMetadataUpdate(h) => Some((h.hostname.clone(), h.ipv4_addr.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        hosts,
        [
            (A.to_string(), "192.168.0.1".to_string()),
            (B.to_string(), "192.168.0.2".to_string()),
            (C.to_string(), "192.168.1.3".to_string()),
        ]
    );
    // Pure: the same input gives the same output.
    assert_eq!(
        to_messages(&compute(&cluster(EncapMode::Always, EncapMode::Never))),
        messages
    );
}

/// Checks that `old`'s snapshot followed by `diff(old, new)` leaves the dataplane exactly
/// where `new`'s snapshot does, and returns the diff.
fn diff_reaches(old: &DesiredDataplane, new: &DesiredDataplane) -> Vec<Payload> {
    let changes = diff(old, new);
    let mut incremental = to_messages(old);
    incremental.extend(changes.clone());
    assert_eq!(dataplane(incremental), dataplane(to_messages(new)));
    changes
}

#[test]
fn an_unchanged_state_diffs_to_nothing() {
    let desired = compute(&cluster(EncapMode::Always, EncapMode::Never));
    assert!(diff(&desired, &desired.clone()).is_empty());
    // Re-reading the same documents gives no change either.
    let again = compute(&cluster(EncapMode::Always, EncapMode::Never));
    assert!(diff(&desired, &again).is_empty());
}

#[test]
fn deleted_blocks_and_endpoints_diff_to_removes() {
    let before_state = cluster(EncapMode::Always, EncapMode::Never);
    let before = compute(&before_state);
    let mut after_state = before_state.clone();
    after_state.blocks.remove(&net("10.65.0.64/26"));
    after_state.endpoints.retain(|e| e.spec.workload != "pod-a");
    let after = compute(&after_state);
    let changes = diff_reaches(&before, &after);
    assert_eq!(changes.len(), 3, "{changes:?}");
    let mut removed_routes: Vec<&str> = changes
        .iter()
        .filter_map(|m| match m {
            Payload::RouteRemove(r) => Some(r.dst.as_str()),
            _ => None,
        })
        .collect();
    removed_routes.sort();
    assert_eq!(removed_routes, ["10.65.0.2/32", "10.65.0.64/26"]);
    let Payload::WorkloadEndpointRemove(r) = &changes[0] else {
        panic!("the endpoint goes first: {changes:?}")
    };
    assert_eq!(r.id.as_ref().unwrap().workload_id, "default/pod-a");
}

#[test]
fn a_pool_mode_switch_diffs_to_pool_routes_and_encapsulation() {
    let ipip = compute(&cluster(EncapMode::Always, EncapMode::Never));
    let vxlan = compute(&cluster(EncapMode::Never, EncapMode::Always));
    let changes = diff_reaches(&ipip, &vxlan);
    let ranks: Vec<usize> = changes.iter().map(rank).collect();
    // One pool update, a route update per route (their pool type changed), the summary.
    assert_eq!(ranks, [2, 4, 4, 4, 4, 6], "{changes:?}");
    let tables = tables(&dataplane({
        let mut m = to_messages(&ipip);
        m.extend(changes);
        m
    }));
    assert_eq!(
        decision(&tables, "10.65.0.130"),
        (C.to_string(), Some(Encap::Vxlan))
    );
}

#[test]
fn a_node_leaving_diffs_to_removes_of_its_route_vtep_and_host() {
    let before_state = cluster(EncapMode::Never, EncapMode::Always);
    let mut after_state = before_state.clone();
    after_state.nodes.retain(|n| n.metadata.name != C);
    after_state.blocks.remove(&net("10.65.0.128/26"));
    let changes = diff_reaches(&compute(&before_state), &compute(&after_state));
    let kinds: Vec<&str> = changes
        .iter()
        .map(|m| match m {
            Payload::RouteRemove(_) => "route",
            Payload::VtepRemove(_) => "vtep",
            Payload::HostMetadataRemove(_) => "host",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["route", "vtep", "host"]);
}

#[test]
fn a_new_pod_and_a_moved_block_diff_to_updates_only() {
    let before_state = cluster(EncapMode::Always, EncapMode::Never);
    let mut after_state = before_state.clone();
    after_state.endpoints.push(pod(A, "pod-a2", "10.65.0.3"));
    // B released its block and C claimed it.
    after_state
        .blocks
        .insert(net("10.65.0.64/26"), C.to_string());
    let changes = diff_reaches(&compute(&before_state), &compute(&after_state));
    let ranks: Vec<usize> = changes.iter().map(rank).collect();
    assert_eq!(ranks, [4, 4, 5], "{changes:?}");
    assert_eq!(route_update(&changes, "10.65.0.64/26").dst_node_name, C);
}

#[test]
fn invalid_documents_are_skipped_and_the_rest_still_routes() {
    let mut state = cluster(EncapMode::Always, EncapMode::Never);
    let mut both = pool("both", "10.80.0.0/16", EncapMode::Always, EncapMode::Always);
    both.spec.nat_outgoing = true;
    state.pools.push(both);
    state.pools.push(pool(
        "overlap",
        "10.65.0.0/24",
        EncapMode::Never,
        EncapMode::Never,
    ));
    let mut no_underlay = node("node-d", "192.168.0.4/24");
    no_underlay.spec.bgp = None;
    state.nodes.push(no_underlay);
    state.blocks.insert(net("10.65.1.0/26"), "node-gone".into());
    let mut no_netns = pod(A, "pod-x", "10.65.0.9");
    no_netns.spec.netns = None;
    state.endpoints.push(no_netns);

    let desired = compute(&state);
    let skipped = desired.skipped.join("\n");
    assert_eq!(desired.skipped.len(), 5, "{skipped}");
    for expected in [
        "both enabled",
        "overlaps IPPool \"default-ipv4-ippool\"",
        "node-d",
        "block 10.65.1.0/26: its node \"node-gone\" is unknown",
        "no spec.netns",
    ] {
        assert!(
            skipped.contains(expected),
            "{expected:?} not in:\n{skipped}"
        );
    }
    assert_eq!(desired.pools.len(), 1);
    assert_eq!(desired.routes.len(), 4, "3 blocks + pod-a");
    assert!(!desired.hosts.contains_key("node-d"));
    dataplane(to_messages(&desired));
}

#[test]
fn this_node_must_be_known_and_valid() {
    let state = cluster(EncapMode::Always, EncapMode::Never);
    let err = desired_state(&state, &local("node-z")).unwrap_err();
    assert!(matches!(err, RoutesError::UnknownNode { .. }), "{err}");
    assert!(err.to_string().contains("\"node-z\""), "{err}");
    let mut broken = state;
    broken.nodes[0].spec.bgp = None;
    let err = desired_state(&broken, &local(A)).unwrap_err();
    assert!(matches!(err, RoutesError::InvalidNode(_)), "{err}");
    assert!(err.to_string().contains("spec.bgp.ipv4Address"), "{err}");
}

#[test]
fn cross_subnet_uses_the_local_subnet_and_bare_addresses_are_host_routes() {
    let mut state = cluster(EncapMode::CrossSubnet, EncapMode::Never);
    // A wider subnet on A makes C a same-subnet peer; a /32 on B makes B a stranger.
    state.nodes[0] = node(A, "192.168.0.1/16");
    let desired = compute(&state);
    assert!(desired.routes[&net("10.65.0.128/26")].same_subnet);
    assert_eq!(desired.routes[&net("10.65.0.128/26")].encap, Encap::None);
    state.nodes[0] = node(A, "192.168.0.1/32");
    let desired = compute(&state);
    assert!(!desired.routes[&net("10.65.0.64/26")].same_subnet);
    assert_eq!(desired.routes[&net("10.65.0.64/26")].encap, Encap::Ipip);
}

#[test]
fn an_endpoint_added_to_a_computed_state_equals_the_state_computed_with_it() {
    // What a CNI ADD hands the dataplane at once (the published state plus its endpoint)
    // must be exactly what the next full recompute yields, in every mode: otherwise the
    // recompute would send the dataplane a correction.
    for (ipip, vxlan) in [
        (EncapMode::Always, EncapMode::Never),
        (EncapMode::Never, EncapMode::CrossSubnet),
        (EncapMode::Never, EncapMode::Never),
    ] {
        let before = cluster(ipip, vxlan);
        let mut after = before.clone();
        let new_pod = pod(A, "pod-new", "10.65.0.3");
        after.endpoints.push(new_pod.clone());
        let mut fast = compute(&before);
        let pools: Vec<&IpPool> = before.pools.iter().collect();
        fast.add_local_endpoint(&new_pod, &pools, ip("192.168.0.1"))
            .unwrap();
        assert_eq!(fast, compute(&after), "{ipip:?}/{vxlan:?}");
        assert!(diff(&fast, &compute(&after)).is_empty());
    }
    // An endpoint the dataplane could not attach is refused, with the reason.
    let mut no_netns = pod(A, "pod-x", "10.65.0.4");
    no_netns.spec.netns = None;
    let mut state = compute(&cluster(EncapMode::Always, EncapMode::Never));
    let err = state
        .add_local_endpoint(&no_netns, &[], ip("192.168.0.1"))
        .unwrap_err();
    assert!(err.contains("no spec.netns"), "{err}");
}

fn learned(dst: &str, next_hop: &str) -> LearnedRoute {
    LearnedRoute {
        dst: net(dst),
        next_hop: ip(next_hop),
    }
}

#[test]
fn with_bgp_vxlan_pools_are_still_routed_from_ipam_as_felix_does() {
    use EncapMode::{Always, Never};
    let state = cluster(Never, Always);
    // BGP learned nothing (a VXLAN pool with disableBGPExport is not announced at all):
    // the other nodes' blocks are routed from IPAM all the same, over VXLAN.
    let desired = desired_state_with(&state, &local(A), RemoteRoutes::Bgp(&[])).unwrap();
    assert_eq!(desired.routes, compute(&state).routes);
    let remote: Vec<(String, Encap)> = desired
        .routes
        .iter()
        .filter(|(_, r)| r.kind == RouteKind::RemoteBlock)
        .map(|(dst, r)| (dst.to_string(), r.encap))
        .collect();
    assert_eq!(
        remote,
        [
            ("10.65.0.64/26".into(), Encap::Vxlan),
            ("10.65.0.128/26".into(), Encap::Vxlan)
        ]
    );
}

#[test]
fn with_bgp_other_nodes_blocks_come_from_what_bgp_learned_only() {
    use EncapMode::{CrossSubnet, Never};
    let mut state = cluster(CrossSubnet, Never);
    // A declared host with a fixed pod CIDR: static, from the datastore.
    let mut host = node("kernel-host", "192.168.1.9/24");
    host.spec.pod_cidrs = vec![net("10.65.9.0/24")];
    state.nodes.push(host);
    let routes = [
        // B's block, learned from B.
        learned("10.65.0.64/26", "192.168.0.2"),
        // Something A holds itself: A's own block comes from the datastore.
        learned("10.65.0.0/26", "192.168.0.2"),
        // A block the datastore does not know (yet): BGP's word is enough.
        learned("10.65.7.0/26", "192.168.1.3"),
        // Outside every pool: the node's kernel routes it, not the dataplane.
        learned("172.16.0.0/16", "192.168.0.254"),
        // A pool route whose next hop is no node.
        learned("10.65.8.0/26", "192.168.0.254"),
    ];
    let desired = desired_state_with(&state, &local(A), RemoteRoutes::Bgp(&routes)).unwrap();
    let summary: Vec<(String, RouteKind, String, Encap)> = desired
        .routes
        .iter()
        .filter(|(_, r)| r.kind != RouteKind::LocalWorkload)
        .map(|(dst, r)| (dst.to_string(), r.kind, r.node.clone(), r.encap))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "10.65.0.0/26".into(),
                RouteKind::LocalBlock,
                A.into(),
                Encap::None
            ),
            // Same subnet, CrossSubnet pool: unencapsulated, as from the datastore.
            (
                "10.65.0.64/26".into(),
                RouteKind::RemoteBlock,
                B.into(),
                Encap::None
            ),
            // C announced nothing for its IPAM block 10.65.0.128/26 (it stopped): no route.
            (
                "10.65.7.0/26".into(),
                RouteKind::RemoteBlock,
                C.into(),
                Encap::Ipip
            ),
            (
                "10.65.9.0/24".into(),
                RouteKind::RemoteBlock,
                "kernel-host".into(),
                Encap::Ipip
            ),
        ]
    );
    assert_eq!(
        desired.skipped,
        ["BGP route 10.65.8.0/26 via 192.168.0.254: the next hop is no node's underlay address"]
    );
    // Everything else is as the datastore backend has it.
    let datastore = compute(&state);
    assert_eq!(desired.hosts, datastore.hosts);
    assert_eq!(desired.vteps, datastore.vteps);
    assert_eq!(desired.endpoints, datastore.endpoints);
    // Withdrawing B's route removes it from the dataplane: one RouteRemove.
    let without_b = desired_state_with(&state, &local(A), RemoteRoutes::Bgp(&routes[2..])).unwrap();
    let removes: Vec<String> = diff(&desired, &without_b)
        .into_iter()
        .map(|m| match m {
            Payload::RouteRemove(r) => r.dst,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(removes, ["10.65.0.64/26"]);
    // The dataplane sends B's pods to B unencapsulated and C's new block to C over IPIP.
    let tables = tables(&dataplane(to_messages(&desired)));
    assert_eq!(
        decision(&tables, "10.65.0.66"),
        (B.into(), Some(Encap::None))
    );
    assert_eq!(
        decision(&tables, "10.65.7.9"),
        (C.into(), Some(Encap::Ipip))
    );
    assert_eq!(decision(&tables, "10.65.0.130"), ("no route".into(), None));
}
