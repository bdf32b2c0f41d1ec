//! Route computation tests: messages in, tables out.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use tapwire_proto::{
    config, to_dataplane::Payload, ConfigUpdate, HostMetadataUpdate, IpPoolType, IpamPool,
    IpamPoolUpdate, RouteRemove, RouteType, RouteUpdate, VxlanTunnelEndpointUpdate,
    WorkloadEndpoint, WorkloadEndpointId, WorkloadEndpointRemove, WorkloadEndpointUpdate,
    NETNS_ANNOTATION,
};

use super::*;
use crate::fib::Prefix;
use crate::tables::{Encap, RouteTarget, Tables, TunnelsInUse};

fn underlay() -> Underlay {
    Underlay {
        ip: "192.168.0.1".parse().unwrap(),
        mac: [2, 0, 0, 0, 1, 1],
        mtu_bytes: 1500,
        vxlan_port: 4789,
        host_path: None,
    }
}

fn pool(ipip: &str, vxlan: &str) -> Payload {
    Payload::IpamPoolUpdate(IpamPoolUpdate {
        id: "default".into(),
        pool: Some(IpamPool {
            cidr: "10.65.0.0/16".into(),
            ipip_mode: ipip.into(),
            vxlan_mode: vxlan.into(),
            ..Default::default()
        }),
    })
}

fn block(
    dst: &str,
    node: &str,
    node_ip: &str,
    pool_type: IpPoolType,
    same_subnet: bool,
) -> Payload {
    let mut update = RouteUpdate {
        dst: dst.into(),
        dst_node_name: node.into(),
        dst_node_ip: node_ip.into(),
        same_subnet,
        ..Default::default()
    };
    update.set_ip_pool_type(pool_type);
    update.add_type(if node == "node-a" {
        RouteType::LocalWorkload
    } else {
        RouteType::RemoteWorkload
    });
    Payload::RouteUpdate(update)
}

fn endpoint_update(workload: &str, addr: &str) -> Payload {
    Payload::WorkloadEndpointUpdate(WorkloadEndpointUpdate {
        id: Some(WorkloadEndpointId {
            orchestrator_id: "k8s".into(),
            workload_id: workload.into(),
            endpoint_id: "eth0".into(),
        }),
        endpoint: Some(WorkloadEndpoint {
            name: "eth0".into(),
            ipv4_nets: vec![addr.into()],
            annotations: [(
                NETNS_ANNOTATION.to_string(),
                format!("/var/run/netns/{workload}"),
            )]
            .into(),
            ..Default::default()
        }),
    })
}

/// node-a (us) with block 10.65.1.0/26 and pod-1; node-b owns 10.65.2.0/26.
fn cluster(ipip: &str, vxlan: &str, pool_type: IpPoolType, same_subnet: bool) -> Desired {
    let mut d = Desired::default();
    let messages = [
        Payload::ConfigUpdate(ConfigUpdate {
            config: [(config::HOSTNAME.to_string(), "node-a".to_string())].into(),
            ..Default::default()
        }),
        Payload::HostMetadataUpdate(HostMetadataUpdate {
            hostname: "node-b".into(),
            ipv4_addr: "192.168.0.2".into(),
            ..Default::default()
        }),
        Payload::VtepUpdate(VxlanTunnelEndpointUpdate {
            node: "node-b".into(),
            mac: "66:00:00:00:00:02".into(),
            ipv4_addr: "10.65.2.0".into(),
            parent_device_ip: "192.168.0.2".into(),
            ..Default::default()
        }),
        pool(ipip, vxlan),
        block("10.65.1.0/26", "node-a", "192.168.0.1", pool_type, true),
        block(
            "10.65.2.0/26",
            "node-b",
            "192.168.0.2",
            pool_type,
            same_subnet,
        ),
        endpoint_update("pod-1", "10.65.1.2/32"),
    ];
    for m in messages {
        d.apply(m).unwrap();
    }
    d
}

fn attached_pod_1() -> BTreeMap<String, AttachedEndpoint> {
    BTreeMap::from([(
        "k8s/pod-1/eth0".to_string(),
        AttachedEndpoint {
            slot: 0,
            mac: [2, 0, 0, 0, 0, 1],
            mtu_bytes: 1450,
        },
    )])
}

fn target(t: &Tables, addr: &str) -> Option<RouteTarget> {
    t.fib.lookup(addr.parse().unwrap()).copied()
}

fn remote_encap(d: &Desired) -> Option<Encap> {
    let t = build_tables(d, &underlay(), &attached_pod_1(), &HashMap::new());
    match target(&t, "10.65.2.9") {
        Some(RouteTarget::RemoteNode { encap, .. }) => Some(encap),
        _ => None,
    }
}

#[test]
fn the_tunnels_in_use_are_those_of_the_routes() {
    let in_use = |d: &Desired| {
        build_tables(d, &underlay(), &attached_pod_1(), &HashMap::new()).tunnels_in_use
    };
    let (ipip, vxlan, none) = (
        TunnelsInUse {
            ipip: true,
            vxlan: false,
        },
        TunnelsInUse {
            ipip: false,
            vxlan: true,
        },
        TunnelsInUse::default(),
    );
    assert_eq!(in_use(&cluster("Always", "", IpPoolType::Ipip, true)), ipip);
    assert_eq!(
        in_use(&cluster("", "Always", IpPoolType::Vxlan, true)),
        vxlan
    );
    assert_eq!(
        in_use(&cluster("Never", "", IpPoolType::NoEncap, true)),
        none
    );
    // Cross-subnet within the subnet: unencapsulated, no tunnel.
    assert_eq!(
        in_use(&cluster("CrossSubnet", "", IpPoolType::Ipip, true)),
        none
    );
    // No remote route at all (this node's blocks only): no tunnel.
    let mut alone = cluster("Always", "", IpPoolType::Ipip, true);
    alone.apply(route_remove("10.65.2.0/26")).unwrap();
    assert_eq!(in_use(&alone), none);

    // Kept up to date incrementally: the last IPIP route going turns IPIP off.
    let mut d = cluster("Always", "", IpPoolType::Ipip, true);
    let mut builder = TablesBuilder::default();
    let mut build = |d: &mut Desired| {
        let changes = d.take_route_changes();
        builder
            .build(d, changes, &underlay(), &attached_pod_1(), &HashMap::new())
            .tunnels_in_use
    };
    assert_eq!(build(&mut d), ipip);
    d.apply(block(
        "10.65.3.0/26",
        "node-b",
        "192.168.0.2",
        IpPoolType::Ipip,
        true,
    ))
    .unwrap();
    assert_eq!(build(&mut d), ipip);
    d.apply(route_remove("10.65.2.0/26")).unwrap();
    assert_eq!(build(&mut d), ipip);
    d.apply(route_remove("10.65.3.0/26")).unwrap();
    assert_eq!(build(&mut d), none);
}

#[test]
fn local_pods_blackholed_blocks_and_remote_blocks() {
    let d = cluster("", "Always", IpPoolType::Vxlan, true);
    let t = build_tables(&d, &underlay(), &attached_pod_1(), &HashMap::new());
    assert_eq!(target(&t, "10.65.1.2"), Some(RouteTarget::LocalEndpoint(0)));
    assert_eq!(target(&t, "10.65.1.3"), Some(RouteTarget::Blackhole));
    assert_eq!(target(&t, "10.66.0.1"), None);
    let Some(RouteTarget::RemoteNode { peer, encap }) = target(&t, "10.65.2.9") else {
        panic!("no remote route");
    };
    assert_eq!(encap, Encap::Vxlan);
    let peer = t.peer(peer).unwrap();
    assert_eq!(peer.name, "node-b");
    assert_eq!(peer.vtep_mac, Some([0x66, 0, 0, 0, 0, 2]));
    assert_eq!(t.local.vni, 4096);
    assert_eq!(t.local.vtep_mac, tapwire_proto::derive_vtep_mac("node-a"));
    let ep = t.endpoint(0).unwrap();
    assert!(ep.may_send_from("10.65.1.2".parse().unwrap()));
    assert!(!ep.may_send_from("10.65.1.3".parse().unwrap()));
}

#[test]
fn pool_modes_pick_the_encapsulation() {
    assert_eq!(
        remote_encap(&cluster("Always", "", IpPoolType::Ipip, true)),
        Some(Encap::Ipip)
    );
    assert_eq!(
        remote_encap(&cluster("Never", "", IpPoolType::NoEncap, true)),
        Some(Encap::None)
    );
    assert_eq!(
        remote_encap(&cluster("CrossSubnet", "", IpPoolType::Ipip, true)),
        Some(Encap::None)
    );
    assert_eq!(
        remote_encap(&cluster("CrossSubnet", "", IpPoolType::Ipip, false)),
        Some(Encap::Ipip)
    );
    assert_eq!(
        remote_encap(&cluster("", "cross-subnet", IpPoolType::Vxlan, false)),
        Some(Encap::Vxlan)
    );
}

#[test]
fn unknown_modes_and_pool_types_are_refused_naming_the_field_and_the_value() {
    let mut d = cluster("", "Always", IpPoolType::Vxlan, true);
    let before = d.clone();
    let route_of_type = |ip_pool_type| {
        Payload::RouteUpdate(RouteUpdate {
            dst: "10.65.9.0/26".into(),
            dst_node_name: "node-b".into(),
            dst_node_ip: "192.168.0.2".into(),
            ip_pool_type,
            ..Default::default()
        })
    };
    let cases = [
        (
            pool("sometimes", ""),
            r#"IPAMPool.ipip_mode: unknown value "sometimes" (expected "", "always" or "cross-subnet")"#,
        ),
        (
            pool("", "vxlan-please"),
            r#"IPAMPool.vxlan_mode: unknown value "vxlan-please" (expected "", "always" or "cross-subnet")"#,
        ),
        (
            route_of_type(7),
            "RouteUpdate.ip_pool_type: unknown value 7 (expected 0 (none), 1 (no encapsulation), 2 (VXLAN) or 3 (IPIP))",
        ),
        (
            route_of_type(-1),
            "RouteUpdate.ip_pool_type: unknown value -1 (expected 0 (none), 1 (no encapsulation), 2 (VXLAN) or 3 (IPIP))",
        ),
    ];
    for (message, want) in cases {
        let err = d.apply(message).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert_eq!(d, before, "state changed after: {err}");
    }
    // Every known value is still read: Felix's spellings and Calico's.
    for (mode, encap) in [("always", Encap::Vxlan), ("Never", Encap::None)] {
        let d = cluster("", mode, IpPoolType::Vxlan, true);
        assert_eq!(remote_encap(&d), Some(encap), "{mode}");
    }
}

#[test]
fn bad_messages_are_rejected_without_changing_state() {
    let mut d = cluster("", "Always", IpPoolType::Vxlan, true);
    let before = d.clone();
    let bad = [
        block(
            "10.65.9.0/33",
            "node-b",
            "192.168.0.2",
            IpPoolType::Vxlan,
            true,
        ),
        block(
            "not-a-cidr",
            "node-b",
            "192.168.0.2",
            IpPoolType::Vxlan,
            true,
        ),
        block(
            "10.65.9.0/26",
            "node-b",
            "192.168.0.300",
            IpPoolType::Vxlan,
            true,
        ),
        Payload::VtepUpdate(VxlanTunnelEndpointUpdate {
            node: "node-c".into(),
            mac: "66:00:00:00:00".into(),
            parent_device_ip: "192.168.0.3".into(),
            ..Default::default()
        }),
        Payload::WorkloadEndpointUpdate(WorkloadEndpointUpdate {
            id: Some(WorkloadEndpointId::default()),
            endpoint: Some(WorkloadEndpoint::default()),
        }),
        Payload::ConfigUpdate(ConfigUpdate {
            config: [(config::VXLAN_VNI.to_string(), "99999999".to_string())].into(),
            ..Default::default()
        }),
    ];
    for message in bad {
        let err = d.apply(message).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert_eq!(d, before, "state changed after: {err}");
    }
}

#[test]
fn removals_take_effect() {
    let mut d = cluster("", "Always", IpPoolType::Vxlan, true);
    assert_eq!(
        d.apply(Payload::RouteRemove(RouteRemove {
            dst: "10.65.2.0/26".into()
        }))
        .unwrap(),
        Applied::Changed
    );
    assert_eq!(remote_encap(&d), None);
    let removed = d
        .apply(Payload::WorkloadEndpointRemove(WorkloadEndpointRemove {
            id: Some(WorkloadEndpointId {
                orchestrator_id: "k8s".into(),
                workload_id: "pod-1".into(),
                endpoint_id: "eth0".into(),
            }),
        }))
        .unwrap();
    assert_eq!(removed, Applied::EndpointRemoved("k8s/pod-1/eth0".into()));
    let t = build_tables(&d, &underlay(), &attached_pod_1(), &HashMap::new());
    assert_eq!(target(&t, "10.65.1.2"), Some(RouteTarget::Blackhole));
}

#[test]
fn resolved_neighbours_fill_in_peer_macs() {
    let d = cluster("Never", "", IpPoolType::NoEncap, true);
    let neighbors = HashMap::from([("192.168.0.2".parse().unwrap(), [2, 0, 0, 0, 1, 2])]);
    let t = build_tables(&d, &underlay(), &attached_pod_1(), &neighbors);
    assert_eq!(t.peers[0].next_hop_mac, Some([2, 0, 0, 0, 1, 2]));
}

/// Every (prefix, target) of a table's FIB.
fn fib_entries(t: &Tables) -> Vec<(Prefix, RouteTarget)> {
    t.fib.iter().map(|(p, v)| (p, *v)).collect()
}

fn route_remove(dst: &str) -> Payload {
    Payload::RouteRemove(RouteRemove { dst: dst.into() })
}

#[test]
fn incremental_builds_equal_full_builds_and_touch_only_changed_prefixes() {
    let mut d = cluster("", "Always", IpPoolType::Vxlan, true);
    let mut builder = TablesBuilder::default();
    let mut attached = attached_pod_1();
    let build = |builder: &mut TablesBuilder,
                 d: &mut Desired,
                 attached: &BTreeMap<String, AttachedEndpoint>| {
        let changes = d.take_route_changes();
        let t = builder.build(d, changes, &underlay(), attached, &HashMap::new());
        let full = build_tables(d, &underlay(), attached, &HashMap::new());
        assert_eq!(fib_entries(&t), fib_entries(&full));
        assert_eq!(t.peers, full.peers);
        assert_eq!(t.endpoints, full.endpoints);
        assert_eq!(t.tunnels_in_use, full.tunnels_in_use);
        t
    };

    // The first build has nothing to start from.
    build(&mut builder, &mut d, &attached);
    assert_eq!(builder.last_update(), Some(FibUpdate::Rebuilt));

    // Many remote blocks of node-b, then one more: only that one prefix is looked at.
    for i in 0..200u32 {
        let dst = format!("10.65.{}.{}/26", 10 + i / 4, (i % 4) * 64);
        d.apply(block(
            &dst,
            "node-b",
            "192.168.0.2",
            IpPoolType::Vxlan,
            true,
        ))
        .unwrap();
    }
    build(&mut builder, &mut d, &attached);
    assert_eq!(
        builder.last_update(),
        Some(FibUpdate::Incremental { prefixes: 200 })
    );
    d.apply(block(
        "10.65.200.0/26",
        "node-b",
        "192.168.0.2",
        IpPoolType::Vxlan,
        true,
    ))
    .unwrap();
    let t = build(&mut builder, &mut d, &attached);
    assert_eq!(
        builder.last_update(),
        Some(FibUpdate::Incremental { prefixes: 1 })
    );
    assert!(matches!(
        target(&t, "10.65.200.9"),
        Some(RouteTarget::RemoteNode { .. })
    ));

    // A removal, and a route changing hands to this node (a blackhole now).
    d.apply(route_remove("10.65.10.0/26")).unwrap();
    d.apply(block(
        "10.65.10.64/26",
        "node-a",
        "192.168.0.1",
        IpPoolType::Vxlan,
        true,
    ))
    .unwrap();
    let t = build(&mut builder, &mut d, &attached);
    assert_eq!(
        builder.last_update(),
        Some(FibUpdate::Incremental { prefixes: 2 })
    );
    assert_eq!(target(&t, "10.65.10.9"), None);
    assert_eq!(target(&t, "10.65.10.70"), Some(RouteTarget::Blackhole));
    // Removing an absent route journals nothing.
    d.apply(route_remove("10.99.0.0/26")).unwrap();
    build(&mut builder, &mut d, &attached);
    assert_eq!(
        builder.last_update(),
        Some(FibUpdate::Incremental { prefixes: 0 })
    );

    // A second pod attached: its /32 is the only delta.
    d.apply(endpoint_update("pod-2", "10.65.1.3/32")).unwrap();
    attached.insert(
        "k8s/pod-2/eth0".to_string(),
        AttachedEndpoint {
            slot: 1,
            mac: [2, 0, 0, 0, 0, 2],
            mtu_bytes: 1450,
        },
    );
    let t = build(&mut builder, &mut d, &attached);
    assert_eq!(
        builder.last_update(),
        Some(FibUpdate::Incremental { prefixes: 1 })
    );
    assert_eq!(target(&t, "10.65.1.3"), Some(RouteTarget::LocalEndpoint(1)));
    // …and detached again: back to the block's blackhole.
    attached.remove("k8s/pod-2/eth0");
    let t = build(&mut builder, &mut d, &attached);
    assert_eq!(target(&t, "10.65.1.3"), Some(RouteTarget::Blackhole));

    // A pool change can change every route's encapsulation: rebuilt.
    d.apply(pool("Always", "")).unwrap();
    build(&mut builder, &mut d, &attached);
    assert_eq!(builder.last_update(), Some(FibUpdate::Rebuilt));
    // A new peer renumbers peers: rebuilt.
    d.apply(Payload::HostMetadataUpdate(HostMetadataUpdate {
        hostname: "node-0".into(),
        ipv4_addr: "192.168.0.9".into(),
        ..Default::default()
    }))
    .unwrap();
    build(&mut builder, &mut d, &attached);
    assert_eq!(builder.last_update(), Some(FibUpdate::Rebuilt));

    // A fresh snapshot from control (another Desired) cannot be applied as deltas.
    let mut snapshot = cluster("", "Always", IpPoolType::Vxlan, true);
    build(&mut builder, &mut snapshot, &attached);
    assert_eq!(builder.last_update(), Some(FibUpdate::Rebuilt));
}

#[test]
fn a_route_journal_overflowing_forces_a_rebuild() {
    let mut d = cluster("", "Always", IpPoolType::Vxlan, true);
    let mut builder = TablesBuilder::default();
    let changes = d.take_route_changes();
    builder.build(&d, changes, &underlay(), &attached_pod_1(), &HashMap::new());
    for i in 0..5000u32 {
        let dst = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
        d.apply(block(
            &dst,
            "node-b",
            "192.168.0.2",
            IpPoolType::Vxlan,
            true,
        ))
        .unwrap();
    }
    let changes = d.take_route_changes();
    assert!(changes.prefixes().is_none());
    let t = builder.build(&d, changes, &underlay(), &attached_pod_1(), &HashMap::new());
    assert_eq!(builder.last_update(), Some(FibUpdate::Rebuilt));
    assert_eq!(
        fib_entries(&t),
        fib_entries(&build_tables(
            &d,
            &underlay(),
            &attached_pod_1(),
            &HashMap::new()
        ))
    );
    assert!(d
        .take_route_changes()
        .prefixes()
        .is_some_and(|p| p.is_empty()));
}

#[test]
fn peers_named_only_by_routes_come_and_go_with_their_routes() {
    let mut d = Desired::default();
    d.apply(block(
        "10.65.7.0/26",
        "node-c",
        "192.168.0.3",
        IpPoolType::NoEncap,
        true,
    ))
    .unwrap();
    let t = build_tables(&d, &underlay(), &BTreeMap::new(), &HashMap::new());
    assert_eq!(t.peers.len(), 1);
    assert_eq!(t.peers[0].name, "node-c");
    assert_eq!(
        t.peers[0].underlay_ip,
        "192.168.0.3".parse::<Ipv4Addr>().unwrap()
    );
    d.apply(route_remove("10.65.7.0/26")).unwrap();
    let t = build_tables(&d, &underlay(), &BTreeMap::new(), &HashMap::new());
    assert!(t.peers.is_empty());
}

#[test]
fn a_host_path_adds_a_default_route_the_pools_and_the_peers_addresses() {
    let d = cluster("Always", "Never", IpPoolType::Ipip, false);
    let without = build_tables(&d, &underlay(), &attached_pod_1(), &HashMap::new());
    assert_eq!(target(&without, "8.8.8.8"), None);
    assert_eq!(target(&without, "10.65.9.9"), None);

    let host = Underlay {
        host_path: Some(crate::tables::HostPath {
            mac: [2, 0, 0, 0, 0, 0x99],
            mtu_bytes: 1500,
        }),
        ..underlay()
    };
    let t = build_tables(&d, &host, &attached_pod_1(), &HashMap::new());
    assert_eq!(target(&t, "8.8.8.8"), Some(RouteTarget::Host));
    assert_eq!(target(&t, "192.168.0.1"), Some(RouteTarget::Host));
    assert_eq!(target(&t, "10.65.9.9"), Some(RouteTarget::PoolUnrouted));
    assert_eq!(target(&t, "10.65.1.2"), Some(RouteTarget::LocalEndpoint(0)));
    assert_eq!(target(&t, "10.65.1.3"), Some(RouteTarget::Blackhole));
    assert!(matches!(
        target(&t, "10.65.2.9"),
        Some(RouteTarget::RemoteNode {
            encap: Encap::Ipip,
            ..
        })
    ));
    let Some(RouteTarget::RemoteNode { peer, encap }) = target(&t, "192.168.0.2") else {
        panic!("node-b's own address routes to node-b");
    };
    assert_eq!(
        (t.peers[peer as usize].name.as_str(), encap),
        ("node-b", Encap::Ipip)
    );

    // Incremental builds keep them: a route removed falls back to the pool's entry.
    let mut d = d;
    let mut builder = TablesBuilder::default();
    let changes = d.take_route_changes();
    builder.build(&d, changes, &host, &attached_pod_1(), &HashMap::new());
    d.apply(Payload::RouteRemove(tapwire_proto::RouteRemove {
        dst: "10.65.2.0/26".into(),
    }))
    .unwrap();
    let changes = d.take_route_changes();
    let t = builder.build(&d, changes, &host, &attached_pod_1(), &HashMap::new());
    assert!(matches!(
        builder.last_update(),
        Some(FibUpdate::Incremental { .. })
    ));
    assert_eq!(target(&t, "10.65.2.9"), Some(RouteTarget::PoolUnrouted));
    assert_eq!(target(&t, "8.8.8.8"), Some(RouteTarget::Host));
}
