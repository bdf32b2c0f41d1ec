//! Example tables and frames shared by the forward tests and the packet-path benches:
//! a node with two pods and two peers, and builders for the frames pods and peers send.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::fib::{Fib, Prefix};
use crate::forward::PacketBuf;
use crate::packet::{
    emit_ethernet, Ipv4Repr, Mac, ETHERTYPE_IPV4, ETH_HEADER_LEN, GATEWAY_MAC, IPPROTO_IPIP,
    IPPROTO_TCP,
};
use crate::tables::{Encap, EndpointEntry, LocalNode, Peer, RouteTarget, Tables, TunnelsInUse};

pub const POD_A_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
pub const POD_B_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0b];
pub const NODE_MAC: Mac = [0x02, 0, 0, 0, 1, 1];
pub const PEER_MAC: Mac = [0x02, 0, 0, 0, 1, 2];
pub const OUR_VTEP: Mac = [0x66, 1, 1, 1, 1, 1];
pub const PEER_VTEP: Mac = [0x66, 2, 2, 2, 2, 2];

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("fixture address")
}

pub fn prefix(s: &str) -> Prefix {
    s.parse().expect("fixture prefix")
}

/// Node 192.168.0.1 with pods a (10.65.1.2, slot 0) and b (10.65.1.3, slot 1) in block
/// 10.65.1.0/26; peer node-b at 192.168.0.2 owns 10.65.2.0/26 (`encap`) and, for the
/// unresolved case, node-c at 192.168.0.3 owns 10.65.3.0/26 unencapsulated. The only
/// tunnel in use is `encap`'s.
pub fn tables(encap: Encap) -> Tables {
    let mut fib = Fib::new();
    fib.insert(prefix("10.65.1.0/26"), RouteTarget::Blackhole);
    fib.insert(prefix("10.65.1.2/32"), RouteTarget::LocalEndpoint(0));
    fib.insert(prefix("10.65.1.3/32"), RouteTarget::LocalEndpoint(1));
    fib.insert(
        prefix("10.65.2.0/26"),
        RouteTarget::RemoteNode { peer: 0, encap },
    );
    fib.insert(
        prefix("10.65.3.0/26"),
        RouteTarget::RemoteNode {
            peer: 1,
            encap: Encap::None,
        },
    );
    let endpoint = |key: &str, mac, addr: &str| EndpointEntry {
        key: key.into(),
        mac,
        mtu_bytes: 1450,
        allowed_sources: vec![prefix(addr)],
    };
    Tables {
        local: LocalNode {
            underlay_ip: ip("192.168.0.1"),
            underlay_mac: NODE_MAC,
            underlay_mtu_bytes: 1500,
            vtep_mac: OUR_VTEP,
            vni: 4096,
            vxlan_port: tapwire_proto::VXLAN_PORT,
            host_path: None,
        },
        fib,
        endpoints: vec![
            Some(endpoint("k8s/a/eth0", POD_A_MAC, "10.65.1.2/32")),
            Some(endpoint("k8s/b/eth0", POD_B_MAC, "10.65.1.3/32")),
        ],
        peers: vec![
            Peer {
                name: "node-b".into(),
                underlay_ip: ip("192.168.0.2"),
                vtep_mac: Some(PEER_VTEP),
                next_hop_mac: Some(PEER_MAC),
            },
            Peer {
                name: "node-c".into(),
                underlay_ip: ip("192.168.0.3"),
                vtep_mac: None,
                next_hop_mac: None,
            },
        ],
        peer_by_underlay: HashMap::from([(ip("192.168.0.2"), 0), (ip("192.168.0.3"), 1)]),
        tunnels_in_use: TunnelsInUse::default().with(encap),
    }
}

/// An IPv4/TCP packet (20-byte TCP header with ports) of `payload` extra bytes.
pub fn ipv4_packet(src: &str, dst: &str, ttl: u8, df: bool, payload: usize) -> Vec<u8> {
    let l4_len = 20 + payload;
    let mut pkt = vec![0u8; Ipv4Repr::HEADER_LEN + l4_len];
    Ipv4Repr {
        src: ip(src),
        dst: ip(dst),
        protocol: IPPROTO_TCP,
        ttl,
        dont_fragment: df,
        payload_len: l4_len,
    }
    .emit(&mut pkt);
    pkt[20..22].copy_from_slice(&40000u16.to_be_bytes());
    pkt[22..24].copy_from_slice(&80u16.to_be_bytes());
    pkt
}

/// An IPIP packet from `outer_src` to this node (192.168.0.1) carrying a TCP packet
/// `inner_src` → `inner_dst` (TTL 63, DF, 100 payload bytes).
pub fn ipip_packet(outer_src: &str, inner_src: &str, inner_dst: &str) -> Vec<u8> {
    let inner = ipv4_packet(inner_src, inner_dst, 63, true, 100);
    let mut pkt = vec![0u8; Ipv4Repr::HEADER_LEN];
    Ipv4Repr {
        src: ip(outer_src),
        dst: ip("192.168.0.1"),
        protocol: IPPROTO_IPIP,
        ttl: 64,
        dont_fragment: true,
        payload_len: inner.len(),
    }
    .emit(&mut pkt);
    pkt.extend(inner);
    pkt
}

pub fn eth_frame(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETH_HEADER_LEN];
    emit_ethernet(&mut f, dst, src, ethertype);
    f.extend_from_slice(payload);
    f
}

/// What pod a (10.65.1.2) writes to its TAP for a TCP packet to `dst`.
pub fn pod_a_sends(dst: &str, ttl: u8, df: bool, payload: usize) -> Vec<u8> {
    let pkt = ipv4_packet("10.65.1.2", dst, ttl, df, payload);
    eth_frame(GATEWAY_MAC, POD_A_MAC, ETHERTYPE_IPV4, &pkt)
}

/// A buffer holding `bytes` as if just received.
pub fn received(bytes: &[u8]) -> PacketBuf {
    let mut buf = PacketBuf::new();
    buf.receive_area()[..bytes.len()].copy_from_slice(bytes);
    buf.set_received(bytes.len());
    buf
}
