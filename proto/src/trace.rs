//! tapwire-only messages of the packet trace (`tapwirectl trace`), at payload numbers ≥ 1000
//! (Felix has nothing like them).
//!
//! Control arms a trace with a [`TraceRequest`]; the dataplane answers one [`TraceRecord`]
//! per traced packet as it happens, then one [`TraceDone`] when the trace ends (the packets
//! asked for were traced, the time ran out, another trace replaced it, or it was refused).
//! A record says what one packet's walk through a worker was, as VPP's packet trace does:
//! where it was received, what it was parsed as, the route looked up, the action taken and
//! the counters that action touches. Everything is plain data; names are those
//! `tapwirectl stats` uses (endpoints as `orchestrator/workload/endpoint`, counters as
//! `drop.no_route`, encapsulations as `none`/`ipip`/`vxlan`). With the `serde` feature the
//! records and the end derive serde, so control's JSON API carries them unchanged.

/// Control → dataplane: trace the next `count` packets.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct TraceRequest {
    /// Chosen by control; every record and the [`TraceDone`] of this trace carry it.
    #[prost(uint32, tag = "1")]
    pub trace_id: u32,
    /// How many packets to trace (the dataplane traces at most
    /// [`MAX_TRACE_PACKETS`]).
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Only packets from or to this endpoint (`orchestrator/workload/endpoint`); empty:
    /// every packet.
    #[prost(string, tag = "3")]
    pub endpoint: String,
    /// How long the trace stays armed; then it ends with whatever it has.
    #[prost(uint32, tag = "4")]
    pub timeout_ms: u32,
}

/// The most packets one trace records.
pub const MAX_TRACE_PACKETS: u32 = 1000;

/// Dataplane → control: one traced packet.
#[derive(Clone, PartialEq, prost::Message)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TraceRecord {
    #[prost(uint32, tag = "1")]
    pub trace_id: u32,
    /// 1 for the trace's first record.
    #[prost(uint32, tag = "2")]
    pub index: u32,
    /// The worker thread that handled the packet.
    #[prost(uint32, tag = "3")]
    pub worker: u32,
    /// When, in microseconds since the trace was armed.
    #[prost(uint64, tag = "4")]
    pub elapsed_us: u64,
    #[prost(message, optional, tag = "5")]
    pub ingress: Option<TraceIngress>,
    #[prost(message, optional, tag = "6")]
    pub packet: Option<TracePacket>,
    /// The route looked up for the destination; absent when none was (ARP, a frame that
    /// did not parse as IPv4).
    #[prost(message, optional, tag = "7")]
    pub route: Option<TraceRoute>,
    #[prost(message, optional, tag = "8")]
    pub action: Option<TraceAction>,
    /// The counters the action touches, by the names `tapwirectl stats` shows.
    #[prost(string, repeated, tag = "9")]
    pub counters: Vec<String>,
}

/// Where a traced packet was received.
#[derive(Clone, PartialEq, prost::Message)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TraceIngress {
    /// `pod` (a pod's TAP), `host` (the host path TAP), `vxlan`, `ipip` (a tunnel from a
    /// peer) or `underlay` (the underlay's packet socket, unencapsulated).
    #[prost(string, tag = "1")]
    pub kind: String,
    /// For `pod`: the endpoint.
    #[prost(string, tag = "2")]
    pub endpoint: String,
    /// For a tunnel: the sender's underlay address.
    #[prost(string, tag = "3")]
    pub peer_ip: String,
    /// For a tunnel: the sender's node name, when it is a known node.
    #[prost(string, tag = "4")]
    pub peer_node: String,
}

/// What a traced packet was parsed as, before the dataplane changed it. For tunnel
/// traffic, the inner packet.
#[derive(Clone, PartialEq, prost::Message)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TracePacket {
    /// The Ethernet type (0x0800 IPv4, 0x0806 ARP, …); 0 when the frame had no Ethernet
    /// header to read.
    #[prost(uint32, tag = "1")]
    pub ethertype: u32,
    /// Bytes as received (for tunnels: the inner frame or packet).
    #[prost(uint32, tag = "2")]
    pub frame_bytes: u32,
    /// IPv4 (or ARP sender/target) addresses; empty when not parsed.
    #[prost(string, tag = "3")]
    pub src: String,
    #[prost(string, tag = "4")]
    pub dst: String,
    /// The IP protocol number (1 ICMP, 6 TCP, 17 UDP, …).
    #[prost(uint32, tag = "5")]
    pub protocol: u32,
    #[prost(uint32, tag = "6")]
    pub src_port: u32,
    #[prost(uint32, tag = "7")]
    pub dst_port: u32,
    #[prost(uint32, tag = "8")]
    pub ttl: u32,
    /// The IPv4 total length.
    #[prost(uint32, tag = "9")]
    pub ip_bytes: u32,
    /// For ICMP: type and code, and for echo request/reply its identifier and sequence.
    #[prost(uint32, tag = "10")]
    pub icmp_type: u32,
    #[prost(uint32, tag = "11")]
    pub icmp_code: u32,
    #[prost(uint32, tag = "12")]
    pub icmp_id: u32,
    #[prost(uint32, tag = "13")]
    pub icmp_seq: u32,
    /// For ARP: the operation (1 request, 2 reply).
    #[prost(uint32, tag = "14")]
    pub arp_operation: u32,
    /// For a TCP super-frame (GSO): the segment size, and the wire packets it stands for.
    #[prost(uint32, tag = "15")]
    pub gso_size: u32,
    #[prost(uint32, tag = "16")]
    pub segments: u32,
    /// Whether the IPv4 header was read (src, dst, protocol, ttl and ip_bytes are set).
    #[prost(bool, tag = "17")]
    pub ipv4: bool,
}

/// The route a traced packet's destination matched.
#[derive(Clone, PartialEq, prost::Message)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TraceRoute {
    /// The longest prefix in the table holding the destination (`10.65.2.0/26`).
    #[prost(string, tag = "1")]
    pub prefix: String,
    /// `local` (a pod of this node), `blackhole`, `remote` (another node), `host` (the
    /// node's kernel through the host path) or `unrouted` (inside a pool, in no block);
    /// `none` when no route holds the destination.
    #[prost(string, tag = "2")]
    pub target: String,
    /// For `local`: the endpoint.
    #[prost(string, tag = "3")]
    pub endpoint: String,
    /// For `remote`: the node, its underlay address and the encapsulation.
    #[prost(string, tag = "4")]
    pub peer_node: String,
    #[prost(string, tag = "5")]
    pub peer_ip: String,
    #[prost(string, tag = "6")]
    pub encap: String,
}

/// What the dataplane did with a traced packet.
#[derive(Clone, PartialEq, prost::Message)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TraceAction {
    /// `deliver` (to a local pod), `encapsulate` (to a peer in `encap`, `none` being the
    /// bare packet to the peer's underlay MAC), `host` (to the node's kernel), `reply` (an
    /// ARP answer on the same queue) or `drop`.
    #[prost(string, tag = "1")]
    pub kind: String,
    /// For `deliver`: the endpoint.
    #[prost(string, tag = "2")]
    pub endpoint: String,
    /// For `encapsulate`: the peer.
    #[prost(string, tag = "3")]
    pub peer_node: String,
    #[prost(string, tag = "4")]
    pub peer_ip: String,
    #[prost(string, tag = "5")]
    pub encap: String,
    /// For `drop`: the reason, as its counter names it (`no_route`).
    #[prost(string, tag = "6")]
    pub drop_reason: String,
    /// For `drop`: an ICMP error went back to the sender.
    #[prost(bool, tag = "7")]
    pub icmp_error: bool,
}

/// Dataplane → control: the trace ended; nothing more comes for `trace_id`.
#[derive(Clone, PartialEq, prost::Message)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TraceDone {
    #[prost(uint32, tag = "1")]
    pub trace_id: u32,
    /// Records sent for this trace.
    #[prost(uint32, tag = "2")]
    pub records: u32,
    /// Packets that were traced but whose record was lost (the workers' trace buffer was
    /// full).
    #[prost(uint64, tag = "3")]
    pub dropped: u64,
    /// Why it ended: `complete`, `timeout`, `replaced` (a newer trace arrived) or `refused`.
    #[prost(string, tag = "4")]
    pub reason: String,
    /// For `refused`: why (an endpoint that is not attached here).
    #[prost(string, tag = "5")]
    pub error: String,
}
