//! The resolver's decisions without sockets: which peers it wants, which next hop each
//! takes, when it asks, and what it reports.

use std::collections::{BTreeMap, HashMap};

use tapwire_proto::{to_dataplane::Payload, IpPoolType, IpamPool, IpamPoolUpdate, RouteType};

use super::*;
use crate::fixtures::{self, ip, prefix};
use crate::packet::ARP_REPLY;
use crate::state::{build_tables, Desired, Underlay};

const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 254);
const GW_MAC: Mac = [2, 0, 0, 0, 0xfe, 1];
const GW_NEW_MAC: Mac = [2, 0, 0, 0, 0xfe, 2];
/// Two peers in other subnets, behind the gateway.
const B: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);
const C: Ipv4Addr = Ipv4Addr::new(192, 168, 3, 3);
/// A peer on the link.
const D: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 4);
const D_MAC: Mac = [2, 0, 0, 0, 1, 4];
const UNDERLAY: u32 = 2;

fn route(gateway: Option<Ipv4Addr>, oif: u32) -> RouteLookup {
    RouteLookup {
        unicast: true,
        gateway,
        oif: Some(oif),
    }
}

#[test]
fn the_next_hop_is_the_peer_on_the_link_and_the_gateway_off_it() {
    assert_eq!(next_hop(D, &route(None, UNDERLAY), UNDERLAY), Ok(D));
    assert_eq!(next_hop(B, &route(Some(GW), UNDERLAY), UNDERLAY), Ok(GW));
    // Out of another interface (a second NIC, the host path): not ours to send on.
    assert_eq!(
        next_hop(B, &route(Some(GW), 7), UNDERLAY),
        Err(NoNextHop::OtherInterface(Some(7)))
    );
    let local = RouteLookup {
        unicast: false,
        gateway: None,
        oif: Some(1),
    };
    assert_eq!(next_hop(D, &local, UNDERLAY), Err(NoNextHop::NotUnicast));
    let no_interface = RouteLookup {
        oif: None,
        ..route(None, UNDERLAY)
    };
    assert_eq!(
        next_hop(D, &no_interface, UNDERLAY),
        Err(NoNextHop::OtherInterface(None))
    );
}

#[test]
fn the_wanted_set_is_the_peers_reached_unencapsulated() {
    // node-b (192.168.0.2) is reached in the given encapsulation, node-c (192.168.0.3)
    // unencapsulated. IPIP frames go to the next hop on the packet socket too; VXLAN
    // leaves through the node's kernel.
    assert_eq!(
        wanted_peers(&fixtures::tables(Encap::Vxlan)),
        [ip("192.168.0.3")]
    );
    assert_eq!(
        wanted_peers(&fixtures::tables(Encap::Ipip)),
        [ip("192.168.0.2"), ip("192.168.0.3")]
    );
    assert_eq!(
        wanted_peers(&fixtures::tables(Encap::None)),
        [ip("192.168.0.2"), ip("192.168.0.3")]
    );
    // A peer named by no route is not wanted; nor one whose only route is VXLAN.
    let mut tables = fixtures::tables(Encap::Vxlan);
    tables.fib.remove(&prefix("10.65.3.0/26"));
    assert_eq!(wanted_peers(&tables), [] as [Ipv4Addr; 0]);
    // The host path's route to a peer's own address counts too.
    tables.fib.insert(
        prefix("192.168.0.2/32"),
        RouteTarget::RemoteNode {
            peer: 0,
            encap: Encap::None,
        },
    );
    assert_eq!(wanted_peers(&tables), [ip("192.168.0.2")]);
}

/// A route update for `dst` owned by `node` at `node_ip`, in an IPIP pool.
fn block(dst: &str, node: &str, node_ip: &str, same_subnet: bool) -> Payload {
    let mut update = tapwire_proto::RouteUpdate {
        dst: dst.into(),
        dst_node_name: node.into(),
        dst_node_ip: node_ip.into(),
        same_subnet,
        ..Default::default()
    };
    update.set_ip_pool_type(IpPoolType::Ipip);
    update.add_type(RouteType::RemoteWorkload);
    Payload::RouteUpdate(update)
}

#[test]
fn with_cross_subnet_ipip_the_peers_in_this_subnet_and_beyond_it_are_wanted() {
    let mut desired = Desired::default();
    for message in [
        Payload::IpamPoolUpdate(IpamPoolUpdate {
            id: "default".into(),
            pool: Some(IpamPool {
                cidr: "10.65.0.0/16".into(),
                ipip_mode: "cross-subnet".into(),
                ..Default::default()
            }),
        }),
        block("10.65.2.0/26", "node-b", "192.168.1.2", true),
        block("10.65.3.0/26", "node-c", "192.168.2.3", false),
    ] {
        desired.apply(message).expect("a valid message");
    }
    let underlay = Underlay {
        ip: ip("192.168.1.1"),
        mac: [2, 0, 0, 0, 1, 1],
        mtu_bytes: 1500,
        vxlan_port: 4789,
        host_path: None,
    };
    let tables = build_tables(&desired, &underlay, &BTreeMap::new(), &HashMap::new());
    // node-c's block travels in IPIP, framed for the next hop the node's routing gives.
    let target = tables.fib.lookup(ip("10.65.3.1"));
    assert!(
        matches!(
            target,
            Some(RouteTarget::RemoteNode {
                encap: Encap::Ipip,
                ..
            })
        ),
        "{target:?}"
    );
    assert_eq!(
        wanted_peers(&tables),
        [ip("192.168.1.2"), ip("192.168.2.3")]
    );
}

/// The resolver's state after wanting B, C (behind the gateway) and D (on the link).
fn three_peers() -> Neighbors {
    let mut n = Neighbors::default();
    let (new, withdrawn) = n.set_wanted(&[D, C, B]);
    assert_eq!(new, [D, B, C], "every peer is new, in address order");
    assert!(withdrawn.is_empty());
    assert_eq!(
        n.set_next_hop(B, Some(GW)),
        None,
        "nothing known of the gateway yet"
    );
    assert_eq!(n.set_next_hop(C, Some(GW)), None);
    assert_eq!(n.set_next_hop(D, Some(D)), None);
    n
}

fn resolved(peer: Ipv4Addr, mac: Mac) -> Resolved {
    Resolved {
        peer,
        mac: Some(mac),
    }
}

#[test]
fn peers_behind_one_gateway_share_its_request_and_its_answer() {
    let mut n = three_peers();
    let t0 = Instant::now();
    // One request for the gateway (not for B or C), one for D.
    assert_eq!(n.due(t0), [D, GW]);
    assert_eq!(
        n.learned(GW, GW_MAC, t0),
        [resolved(B, GW_MAC), resolved(C, GW_MAC)]
    );
    assert_eq!(n.learned(D, D_MAC, t0), [resolved(D, D_MAC)]);
    assert_eq!(n.mac_of(B), Some(GW_MAC));
    // Someone else's ARP changes nothing.
    assert!(n.learned(ip("192.168.1.9"), [2; 6], t0).is_empty());
    // A peer added behind the resolved gateway is resolved at once, with no request.
    n.set_wanted(&[B, C, D, ip("192.168.4.4")]);
    assert_eq!(
        n.set_next_hop(ip("192.168.4.4"), Some(GW)),
        Some(resolved(ip("192.168.4.4"), GW_MAC))
    );
    assert!(n.due(t0 + Duration::from_millis(1)).is_empty());
}

#[test]
fn unanswered_hops_are_asked_every_retry_and_answered_ones_at_their_refresh() {
    let mut n = three_peers();
    let t0 = Instant::now();
    assert_eq!(n.due(t0), [D, GW]);
    assert!(n.due(t0 + RETRY / 2).is_empty(), "asked a moment ago");
    let t1 = t0 + RETRY;
    assert_eq!(n.due(t1), [D, GW], "no answer: ask again");
    n.learned(GW, GW_MAC, t1);
    n.learned(D, D_MAC, t1);
    assert!(n.due(t1 + REFRESH_GATEWAY / 2).is_empty(), "both fresh");
    // The gateway, which carries B's and C's traffic, is checked far more often than D.
    assert_eq!(n.due(t1 + REFRESH_GATEWAY), [GW]);
    n.learned(GW, GW_MAC, t1 + REFRESH_GATEWAY);
    assert_eq!(n.due(t1 + REFRESH_ON_LINK - RETRY), [GW]);
    assert_eq!(n.due(t1 + REFRESH_ON_LINK), [D, GW]);
}

#[test]
fn a_gateways_new_mac_reaches_every_peer_behind_it() {
    let mut n = three_peers();
    let t0 = Instant::now();
    n.due(t0);
    n.learned(GW, GW_MAC, t0);
    assert!(
        n.learned(GW, GW_MAC, t0).is_empty(),
        "the same answer again"
    );
    // The gateway announces a new MAC (or answers a refresh with it).
    assert_eq!(
        n.learned(GW, GW_NEW_MAC, t0 + REFRESH_GATEWAY),
        [resolved(B, GW_NEW_MAC), resolved(C, GW_NEW_MAC)]
    );
    assert_eq!(n.mac_of(D), None, "D is not behind the gateway");
}

#[test]
fn a_route_change_moves_a_peer_to_its_new_next_hop() {
    let mut n = three_peers();
    let t0 = Instant::now();
    n.due(t0);
    n.learned(GW, GW_MAC, t0);
    let other_gw = ip("192.168.1.253");
    // B's route now names another gateway: B's frames stop until it answers.
    assert_eq!(
        n.set_next_hop(B, Some(other_gw)),
        Some(Resolved { peer: B, mac: None })
    );
    assert_eq!(n.set_next_hop(B, Some(other_gw)), None, "unchanged");
    assert_eq!(n.due(t0 + Duration::from_millis(1)), [other_gw]);
    assert_eq!(
        n.learned(other_gw, [2, 0, 0, 0, 0xfd, 1], t0),
        [resolved(B, [2, 0, 0, 0, 0xfd, 1])]
    );
    // C alone keeps the first gateway; once C moves too, it is forgotten.
    assert_eq!(n.mac_of(C), Some(GW_MAC));
    n.set_next_hop(C, Some(other_gw));
    assert!(n.learned(GW, GW_NEW_MAC, t0).is_empty(), "nobody uses it");
    // B's route is gone: its frames go nowhere.
    assert_eq!(
        n.set_next_hop(B, None),
        Some(Resolved { peer: B, mac: None })
    );
    assert_eq!(n.next_hop_of(B), None);
    // It comes back through the gateway C uses: resolved at once.
    assert_eq!(
        n.set_next_hop(B, Some(other_gw)),
        Some(resolved(B, [2, 0, 0, 0, 0xfd, 1]))
    );
}

#[test]
fn peers_no_longer_wanted_are_withdrawn_and_forgotten() {
    let mut n = three_peers();
    let t0 = Instant::now();
    n.due(t0);
    n.learned(GW, GW_MAC, t0);
    // D was never answered: nothing to withdraw for it.
    let (new, withdrawn) = n.set_wanted(&[C]);
    assert!(new.is_empty());
    assert_eq!(withdrawn, [Resolved { peer: B, mac: None }]);
    assert_eq!(n.peers(), [C]);
    assert_eq!(n.mac_of(C), Some(GW_MAC), "C still uses the gateway");
    let (_, withdrawn) = n.set_wanted(&[]);
    assert_eq!(withdrawn, [Resolved { peer: C, mac: None }]);
    assert!(
        n.due(t0 + REFRESH_ON_LINK).is_empty(),
        "nothing left to ask"
    );
    assert_eq!(n.set_next_hop(B, Some(GW)), None, "B is not wanted");
}

#[test]
fn requests_replies_and_announcements_name_their_sender() {
    let us = ([2, 0, 0, 0, 0, 1], ip("192.168.1.1"));
    let req = request(us.0, us.1, GW);
    assert_eq!(sender(&req), Some((us.1, us.0)));
    let mut reply = [0u8; ETH_HEADER_LEN + ARP_IPV4_LEN];
    emit_ethernet(&mut reply, us.0, GW_MAC, ETHERTYPE_ARP);
    emit_arp(&mut reply[ETH_HEADER_LEN..], ARP_REPLY, (GW_MAC, GW), us);
    assert_eq!(sender(&reply), Some((GW, GW_MAC)));
    // A gratuitous announcement: a broadcast request for its own address.
    let mut announce = [0u8; ETH_HEADER_LEN + ARP_IPV4_LEN];
    emit_ethernet(&mut announce, BROADCAST_MAC, GW_NEW_MAC, ETHERTYPE_ARP);
    emit_arp(
        &mut announce[ETH_HEADER_LEN..],
        ARP_REQUEST,
        (GW_NEW_MAC, GW),
        ([0; 6], GW),
    );
    assert_eq!(sender(&announce), Some((GW, GW_NEW_MAC)));
    for cut in 0..announce.len() - 1 {
        assert_eq!(sender(&announce[..cut]), None, "cut at {cut}");
    }
    let mut not_arp = announce;
    not_arp[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    assert_eq!(sender(&not_arp), None);
}
