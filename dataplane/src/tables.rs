//! The read-only tables a worker forwards with: one immutable version per publish.
//!
//! The state thread builds a new [`Tables`] from the desired state and publishes it;
//! workers take one snapshot per batch. Nothing here changes after publication, so the
//! hot path reads it without locks. Endpoint slots are stable across versions: slot *i*
//! names the same pod for as long as the pod exists, so queues registered with a worker's
//! poller can be matched to the snapshot by slot.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::fib::{Fib, Prefix};
use crate::packet::Mac;

/// A slot in [`Tables::endpoints`].
pub type EndpointIdx = u32;
/// An index into [`Tables::peers`].
pub type PeerIdx = u32;

/// How packets to a remote block travel on the underlay: the contract's definition, with
/// its overhead (checked against the headers `forward` writes in its tests).
pub use tapwire_proto::Encap;

/// Where a route sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// A pod on this node.
    LocalEndpoint(EndpointIdx),
    /// One of this node's blocks with no pod at that address: drop silently, as the
    /// kernel's blackhole route does.
    Blackhole,
    /// A block owned by another node, or that node's own underlay address (its host
    /// path on the far side).
    RemoteNode { peer: PeerIdx, encap: Encap },
    /// Inside an IP pool but in no block anyone owns: dropped with ICMP net-unreachable,
    /// as before there was a host path.
    PoolUnrouted,
    /// The node's kernel, through the host path TAP: the node's own addresses and
    /// everything outside the pools.
    Host,
}

/// This node's own underlay and tunnel identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub underlay_ip: Ipv4Addr,
    pub underlay_mac: Mac,
    pub underlay_mtu_bytes: u32,
    pub vtep_mac: Mac,
    pub vni: u32,
    pub vxlan_port: u16,
    /// The host path TAP, when the dataplane has one.
    pub host_path: Option<HostPath>,
}

/// The node's kernel side of the host path TAP (`tapwire0`): frames to the kernel are
/// addressed to its MAC; the kernel may send frames up to its MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPath {
    pub mac: Mac,
    pub mtu_bytes: u32,
}

/// Another node, as far as the forwarder needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    /// Set once a VXLANTunnelEndpointUpdate names this node.
    pub vtep_mac: Option<Mac>,
    /// Where frames addressed on the underlay to this peer (unencapsulated, IPIP) go: the
    /// MAC of the next hop the node's routing gives for `underlay_ip` — the peer's own when
    /// it is on the underlay link, its gateway's when not — found by [`crate::resolver`].
    /// `None` until resolved.
    pub next_hop_mac: Option<Mac>,
}

/// Which tunnels this node accepts from its peers: an encapsulation is accepted while
/// some route of this node uses it, as Felix allows IPIP and VXLAN only while a pool does.
/// Decided per encapsulation for all peers at once: during a pool's mode switch each node
/// accepts the new encapsulation as soon as its own routes use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelsInUse {
    pub ipip: bool,
    pub vxlan: bool,
}

impl TunnelsInUse {
    /// In use by a route of encapsulation `encap` (unencapsulated routes use no tunnel).
    pub fn with(self, encap: Encap) -> TunnelsInUse {
        match encap {
            Encap::None => self,
            Encap::Ipip => TunnelsInUse { ipip: true, ..self },
            Encap::Vxlan => TunnelsInUse {
                vxlan: true,
                ..self
            },
        }
    }
}

/// A local pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointEntry {
    /// `orchestrator/workload/endpoint`, as the counters name it.
    pub key: String,
    pub mac: Mac,
    pub mtu_bytes: u32,
    /// Addresses the pod may send from: its own nets plus any allowed spoofed prefixes.
    pub allowed_sources: Vec<Prefix>,
}

impl EndpointEntry {
    pub fn may_send_from(&self, src: Ipv4Addr) -> bool {
        self.allowed_sources.iter().any(|p| p.contains(src))
    }
}

/// One published version of everything the workers read.
#[derive(Debug, Clone)]
pub struct Tables {
    pub local: LocalNode,
    pub fib: Fib<RouteTarget>,
    pub endpoints: Vec<Option<EndpointEntry>>,
    pub peers: Vec<Peer>,
    /// Underlay address → peer, for accepting tunnel traffic only from known nodes.
    pub peer_by_underlay: HashMap<Ipv4Addr, PeerIdx>,
    /// The encapsulations routes use: tunnel traffic of any other is refused.
    pub tunnels_in_use: TunnelsInUse,
}

impl Tables {
    pub fn endpoint(&self, idx: EndpointIdx) -> Option<&EndpointEntry> {
        self.endpoints.get(idx as usize).and_then(Option::as_ref)
    }

    pub fn peer(&self, idx: PeerIdx) -> Option<&Peer> {
        self.peers.get(idx as usize)
    }

    /// An empty table set for a node that has not been configured yet.
    pub fn empty(local: LocalNode) -> Self {
        Self {
            local,
            fib: Fib::new(),
            endpoints: Vec::new(),
            peers: Vec::new(),
            peer_by_underlay: HashMap::new(),
            tunnels_in_use: TunnelsInUse::default(),
        }
    }
}
