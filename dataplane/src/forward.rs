//! The forwarding decision, sans-IO: a frame plus the read-only [`Tables`] in, one action
//! out — an [`Outbound`] for what a pod or the host path sent, an [`Inbound`] for what
//! came from the underlay. Nothing here touches a file descriptor, allocates or locks; the
//! worker performs the action and does the counting.
//!
//! Each IPv4 header is validated once, where the frame enters; what routing, TTL
//! handling, ICMP errors and segmentation need travels on as an [`Ipv4Meta`].
//!
//! Frames sit in a [`PacketBuf`] with headroom in front, so encapsulation prepends its
//! headers in place and decapsulation writes the inner Ethernet header over the outer
//! one: no packet byte is copied on any path.

use std::net::Ipv4Addr;
use std::ops::Range;

use crate::offload::{self, VnetHdr};
use crate::packet::{
    self, emit_arp, emit_ethernet, emit_icmp_error, emit_udp_header, emit_vxlan, ArpPacket,
    EthernetFrame, IcmpError, Ipv4Packet, Ipv4Repr, Mac, TcpPacket, ARP_IPV4_LEN, ARP_REPLY,
    ARP_REQUEST, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HEADER_LEN, GATEWAY_MAC,
    IPPROTO_IPIP, IPPROTO_TCP, IPPROTO_UDP, POD_GATEWAY, UDP_HEADER_LEN, VXLAN_HEADER_LEN,
};
use crate::tables::{Encap, EndpointIdx, PeerIdx, RouteTarget, Tables};

/// Bytes reserved in front of every received frame: enough for an outer IPv4 + UDP +
/// VXLAN header in front of the pod's Ethernet header.
pub const HEADROOM: usize = 64;
/// Largest frame a buffer holds (a 64 KiB IPv4 packet plus Ethernet header).
pub const MAX_FRAME: usize = 65536 + ETH_HEADER_LEN;
/// Size of the scratch area replies (ARP, ICMP errors) are built in.
pub const SCRATCH_LEN: usize = 128;

const OUTER_VXLAN_LEN: usize = Ipv4Repr::HEADER_LEN + UDP_HEADER_LEN + VXLAN_HEADER_LEN;
// Pod frames start at HEADROOM, so every encapsulation fits in front of them.
const _: () = assert!(HEADROOM >= OUTER_VXLAN_LEN);

/// A frame with headroom. `data[start..end]` is the frame; `offload` its virtio-net
/// metadata (GSO, partial checksum), offsets counted from the Ethernet header.
#[derive(Debug)]
pub struct PacketBuf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
    offload: VnetHdr,
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    pub fn new() -> Self {
        Self {
            data: vec![0; HEADROOM + MAX_FRAME].into_boxed_slice(),
            start: HEADROOM,
            end: HEADROOM,
            offload: VnetHdr::NONE,
        }
    }

    /// The area a receive call writes into (after the headroom).
    pub fn receive_area(&mut self) -> &mut [u8] {
        &mut self.data[HEADROOM..]
    }

    /// Marks `len` bytes at the start of the receive area as the frame, with no offload
    /// metadata.
    pub fn set_received(&mut self, len: usize) {
        self.set_window(0, len);
    }

    /// Marks `len` bytes at `offset` into the receive area as the frame (one datagram of
    /// several received at once), with no offload metadata.
    pub fn set_window(&mut self, offset: usize, len: usize) {
        self.start = HEADROOM + offset.min(MAX_FRAME);
        self.end = self.start + len.min(MAX_FRAME - offset.min(MAX_FRAME));
        self.offload = VnetHdr::NONE;
    }

    /// Attaches the frame's virtio-net header (read with it from a TAP or packet socket).
    pub fn set_offload(&mut self, offload: VnetHdr) {
        self.offload = offload;
    }

    pub fn offload(&self) -> VnetHdr {
        self.offload
    }

    pub fn frame(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The bytes an action refers to.
    pub fn slice(&self, range: Range<usize>) -> &[u8] {
        &self.data[range]
    }

    /// The bytes an action refers to, to finish in place (a checksum).
    pub fn slice_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        &mut self.data[range]
    }
}

/// Why a packet was dropped. Each has a counter named `drop.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    MalformedEthernet,
    /// An IPv4 header that fails its checks (length, version, IHL, total length).
    MalformedIpv4,
    /// The IPv4 header checksum is wrong.
    BadChecksum,
    /// An ARP packet that is not Ethernet/IPv4 or is truncated.
    MalformedArp,
    /// An ARP reply, gratuitous ARP or probe for the pod's own address: nothing to answer.
    ArpIgnored,
    /// IPv6 is not forwarded yet.
    Ipv6,
    /// Any other ethertype.
    UnsupportedEthertype,
    /// An IPv4 frame not addressed to the gateway MAC.
    NotForGateway,
    /// Longer than the pod's MTU allows.
    Oversize,
    /// The source address is not one the pod owns.
    SpoofedSource,
    /// TTL would reach zero (an ICMP time-exceeded goes back to pods).
    TtlExceeded,
    /// Destination is an unused address of a local block.
    Blackhole,
    /// No route (an ICMP net-unreachable goes back to pods).
    NoRoute,
    /// DF set and larger than the route's MTU (an ICMP fragmentation-needed goes back).
    FragmentationNeeded,
    /// Larger than the route's MTU without DF: tapwire does not fragment.
    TooBigToForward,
    /// The next hop's MAC towards the peer is not resolved yet (unencapsulated route).
    NeighborUnresolved,
    /// The peer has no VTEP yet (VXLAN route).
    VtepUnknown,
    /// The ingress pod queue belongs to no endpoint in this table version.
    UnknownEndpoint,
    /// Tunnel traffic from an address that is not a known node or VTEP.
    UnknownTunnelSource,
    /// A VXLAN header without the I flag or too short.
    MalformedVxlan,
    /// A VXLAN frame with a VNI other than ours.
    WrongVni,
    /// A decapsulated frame whose inner MAC is not our VTEP's.
    NotForVtep,
    /// Traffic from the underlay to somewhere other than a local pod (no transit).
    NotLocal,
    /// A write to a pod queue or underlay socket failed (queue full, device gone).
    TxFailed,
    /// Offload metadata (virtio-net header) tapwire cannot honour: a GSO type other than
    /// TCP over IPv4, or checksum offsets outside the frame.
    BadOffload,
    /// Tunnel traffic from a known node whose inner source is not routed to that node
    /// (Calico's RPF check): a local pod's address, another node's, or none of the
    /// cluster's.
    TunnelSpoofedSource,
    /// IPIP while no route of this node uses IPIP.
    IpipNotInUse,
    /// VXLAN while no route of this node uses VXLAN.
    VxlanNotInUse,
    /// A frame from the host path whose source is a pod's address (inside a pool or a
    /// block): the node's kernel may not speak for a pod.
    HostSpoofedSource,
    /// A frame from the host path whose destination routes back to the host path.
    HostHairpin,
    /// A fragment of an IPIP packet seen on the underlay's packet socket (before the
    /// kernel's reassembly): tapwire does not reassemble, and never fragments what it sends.
    IpipFragment,
}

impl DropReason {
    pub const ALL: [DropReason; 31] = [
        DropReason::MalformedEthernet,
        DropReason::MalformedIpv4,
        DropReason::BadChecksum,
        DropReason::MalformedArp,
        DropReason::ArpIgnored,
        DropReason::Ipv6,
        DropReason::UnsupportedEthertype,
        DropReason::NotForGateway,
        DropReason::Oversize,
        DropReason::SpoofedSource,
        DropReason::TtlExceeded,
        DropReason::Blackhole,
        DropReason::NoRoute,
        DropReason::FragmentationNeeded,
        DropReason::TooBigToForward,
        DropReason::NeighborUnresolved,
        DropReason::VtepUnknown,
        DropReason::UnknownEndpoint,
        DropReason::UnknownTunnelSource,
        DropReason::MalformedVxlan,
        DropReason::WrongVni,
        DropReason::NotForVtep,
        DropReason::NotLocal,
        DropReason::TxFailed,
        DropReason::BadOffload,
        DropReason::TunnelSpoofedSource,
        DropReason::IpipNotInUse,
        DropReason::VxlanNotInUse,
        DropReason::HostSpoofedSource,
        DropReason::HostHairpin,
        DropReason::IpipFragment,
    ];

    /// The counter name (snake case).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::MalformedEthernet => "malformed_ethernet",
            DropReason::MalformedIpv4 => "malformed_ipv4",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::MalformedArp => "malformed_arp",
            DropReason::ArpIgnored => "arp_ignored",
            DropReason::Ipv6 => "ipv6",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::NotForGateway => "not_for_gateway",
            DropReason::Oversize => "oversize",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::Blackhole => "blackhole",
            DropReason::NoRoute => "no_route",
            DropReason::FragmentationNeeded => "fragmentation_needed",
            DropReason::TooBigToForward => "too_big_to_forward",
            DropReason::NeighborUnresolved => "neighbor_unresolved",
            DropReason::VtepUnknown => "vtep_unknown",
            DropReason::UnknownEndpoint => "unknown_endpoint",
            DropReason::UnknownTunnelSource => "unknown_tunnel_source",
            DropReason::MalformedVxlan => "malformed_vxlan",
            DropReason::WrongVni => "wrong_vni",
            DropReason::NotForVtep => "not_for_vtep",
            DropReason::NotLocal => "not_local",
            DropReason::TxFailed => "tx_failed",
            DropReason::BadOffload => "bad_offload",
            DropReason::TunnelSpoofedSource => "tunnel_spoofed_source",
            DropReason::IpipNotInUse => "ipip_not_in_use",
            DropReason::VxlanNotInUse => "vxlan_not_in_use",
            DropReason::HostSpoofedSource => "host_spoofed_source",
            DropReason::HostHairpin => "host_hairpin",
            DropReason::IpipFragment => "ipip_fragment",
        }
    }
}

/// What the worker should do with a frame a pod or the host path sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Drop and count.
    Drop(DropReason),
    /// Drop and count, and write `scratch[..reply_len]` (an ICMP error) back to the
    /// ingress pod.
    DropWithIcmp {
        reason: DropReason,
        reply_len: usize,
    },
    /// Write `scratch[..len]` (an ARP reply) back to the ingress pod (or host path).
    Reply { len: usize },
    /// Write the frame to the host path TAP (the node's kernel), with its offload metadata.
    ToHost {
        frame: Range<usize>,
        offload: VnetHdr,
    },
    /// Write the frame to a local pod, with its offload metadata.
    ToPod {
        endpoint: EndpointIdx,
        frame: Range<usize>,
        offload: VnetHdr,
    },
    /// Send an IPIP packet to the peer `dst`; with `tso`, cut into segments first (`tso`'s
    /// offsets count from the start of `frame`).
    ///
    /// `framed`: `frame` starts with an Ethernet header to the peer's MAC (or its
    /// gateway's) and goes on the underlay packet socket with `offload` — a partial
    /// checksum stays partial, and segments are cut with partial checksums, so no pass
    /// over the payload here. Otherwise (the MAC is not resolved yet) `frame` starts with
    /// the outer IPv4 header and goes through the raw IP socket, the kernel routing it,
    /// with every checksum complete and `offload` empty.
    ToPeerIpip {
        dst: Ipv4Addr,
        frame: Range<usize>,
        offload: VnetHdr,
        tso: Option<Tso>,
        framed: bool,
    },
    /// Send a VXLAN datagram (`payload`: the VXLAN header onwards) to a peer's VTEP; the
    /// socket adds outer IPv4 and UDP. `flow` picks the source port; with `tso`, cut into
    /// segments first (one UDP GSO send).
    ToPeerVxlan {
        dst: Ipv4Addr,
        flow: u32,
        payload: Range<usize>,
        tso: Option<Tso>,
    },
    /// Send an Ethernet frame on the underlay interface (unencapsulated routes), with its
    /// offload metadata: the kernel segments a super-frame only if the device needs it.
    ToPeerEthernet {
        frame: Range<usize>,
        offload: VnetHdr,
    },
}

impl Outbound {
    /// Whether the frame was dropped (and counted), with or without an ICMP error.
    pub fn is_drop(&self) -> bool {
        matches!(self, Outbound::Drop(_) | Outbound::DropWithIcmp { .. })
    }
}

/// What the worker should do with a frame from the underlay (a tunnel or the packet
/// socket): only ever delivered locally, never answered or sent on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Drop and count.
    Drop(DropReason),
    /// Write the frame to the host path TAP (the node's kernel), with its offload metadata.
    ToHost {
        frame: Range<usize>,
        offload: VnetHdr,
    },
    /// Write the frame to a local pod, with its offload metadata.
    ToPod {
        endpoint: EndpointIdx,
        frame: Range<usize>,
        offload: VnetHdr,
    },
    /// Underlay traffic that is not ours to handle (the kernel sees it too).
    Ignore,
}

impl Inbound {
    /// Whether the frame was dropped (and counted).
    pub fn is_drop(&self) -> bool {
        matches!(self, Inbound::Drop(_))
    }
}

/// A TCP super-frame to be segmented on the way out (software TSO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tso {
    /// Offset of the inner IPv4 header from the start of the action's range.
    pub inner_ip: usize,
    /// Lengths of the inner IPv4 and TCP headers, as validated when the frame arrived.
    pub ip_header_len: usize,
    pub tcp_header_len: usize,
    /// Payload bytes per segment.
    pub mss: u16,
    /// The first segment carries CWR (the pod's `GSO_ECN`).
    pub ecn: bool,
}

/// Where an IPv4 packet entered: a pod or the host path (with the sender's MAC, to
/// address replies), or a tunnel.
#[derive(Debug, Clone, Copy)]
enum Ingress {
    Pod { mac: Mac },
    Host { mac: Mac },
    Underlay,
}

/// An IPv4 packet in a [`PacketBuf`] that has passed `Ipv4Packet::new_checked` (and, for
/// a super-frame, `TcpPacket::new_checked`): where it lies and the fields the decision
/// reads. Passed from the entry point to routing, TTL handling, ICMP errors and TSO, so the
/// header is validated once.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Meta {
    /// The packet is `start..end` in the buffer (header to total length).
    start: usize,
    end: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    dont_fragment: bool,
    /// Bytes of each packet on the wire: the total length, or a segment's for a
    /// super-frame (a super-frame leaves as segments: each must fit the route, not the
    /// whole).
    wire_len: usize,
    /// For a super-frame, its IPv4 and TCP header lengths.
    gso_headers: Option<(usize, usize)>,
    /// [`flow_hash`] of the packet.
    flow: u32,
}

impl Ipv4Meta {
    /// Reads `ip`, a view of `buf.data[start..]`, with the frame's offload metadata. A
    /// super-frame tapwire cannot segment (not TCP, a bad TCP header, no segment size) is
    /// `BadOffload`.
    #[inline(always)]
    fn new(ip: &Ipv4Packet<&[u8]>, start: usize, offload: VnetHdr) -> Result<Self, DropReason> {
        let (wire_len, gso_headers) = if offload.is_gso() {
            let tcp_header_len = gso_tcp_header_len(ip, offload).ok_or(DropReason::BadOffload)?;
            let headers = ip.header_len() + tcp_header_len;
            (
                headers + usize::from(offload.gso_size),
                Some((ip.header_len(), tcp_header_len)),
            )
        } else {
            (ip.total_len(), None)
        };
        Ok(Self {
            start,
            end: start + ip.total_len(),
            src: ip.src(),
            dst: ip.dst(),
            ttl: ip.ttl(),
            dont_fragment: ip.dont_fragment(),
            wire_len,
            gso_headers,
            flow: flow_hash(ip),
        })
    }

    /// The packet's view, without validating it again.
    fn view<'a>(&self, buf: &'a PacketBuf) -> Ipv4Packet<&'a [u8]> {
        Ipv4Packet::new_unchecked(&buf.data[self.start..self.end])
    }

    fn view_mut<'a>(&self, buf: &'a mut PacketBuf) -> Ipv4Packet<&'a mut [u8]> {
        Ipv4Packet::new_unchecked(&mut buf.data[self.start..self.end])
    }
}

/// A frame a pod wrote to its TAP queue.
pub fn from_pod(
    tables: &Tables,
    ingress: EndpointIdx,
    buf: &mut PacketBuf,
    scratch: &mut [u8; SCRATCH_LEN],
) -> Outbound {
    let Some(endpoint) = tables.endpoint(ingress) else {
        return Outbound::Drop(DropReason::UnknownEndpoint);
    };
    let frame = &buf.data[buf.start..buf.end];
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Outbound::Drop(DropReason::MalformedEthernet);
    };
    match eth.ethertype() {
        ETHERTYPE_ARP => answer_arp(tables, endpoint.may_send_from_fn(), &eth, scratch),
        ETHERTYPE_IPV4 => {
            let ip = match check_local_ipv4(
                &eth,
                buf.start + ETH_HEADER_LEN,
                buf.offload,
                endpoint.mtu_bytes,
            ) {
                Ok(ip) => ip,
                Err(reason) => return Outbound::Drop(reason),
            };
            if !endpoint.may_send_from(ip.src) {
                return Outbound::Drop(DropReason::SpoofedSource);
            }
            let ingress = Ingress::Pod { mac: eth.src() };
            route_ipv4(tables, buf, ip, ingress, scratch)
        }
        ETHERTYPE_IPV6 => Outbound::Drop(DropReason::Ipv6),
        _ => Outbound::Drop(DropReason::UnsupportedEthertype),
    }
}

/// A frame the node's kernel wrote to the host path TAP: traffic from the node (or routed
/// by it, such as replies to masqueraded pod traffic) to pods. It is routed like a pod's
/// frame, except that its source may be anything but a pod's: no address inside a pool
/// or a block (`drop.host_spoofed_source`).
pub fn from_host(
    tables: &Tables,
    buf: &mut PacketBuf,
    scratch: &mut [u8; SCRATCH_LEN],
) -> Outbound {
    let Some(host) = tables.local.host_path else {
        return Outbound::Drop(DropReason::UnknownEndpoint);
    };
    let frame = &buf.data[buf.start..buf.end];
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Outbound::Drop(DropReason::MalformedEthernet);
    };
    match eth.ethertype() {
        // The kernel resolves the gateway 169.254.1.1 its pool routes name.
        ETHERTYPE_ARP => answer_arp(tables, |_| false, &eth, scratch),
        ETHERTYPE_IPV4 => {
            let ip = match check_local_ipv4(
                &eth,
                buf.start + ETH_HEADER_LEN,
                buf.offload,
                host.mtu_bytes,
            ) {
                Ok(ip) => ip,
                Err(reason) => return Outbound::Drop(reason),
            };
            let src = ip.src;
            let pod_source = match tables.fib.lookup(src) {
                None | Some(RouteTarget::Host) => false,
                // Another node's own address (routed by this node's kernel) is not a pod's.
                Some(RouteTarget::RemoteNode { peer, .. }) => {
                    tables.peer(*peer).is_none_or(|p| p.underlay_ip != src)
                }
                Some(_) => true,
            };
            if pod_source {
                return Outbound::Drop(DropReason::HostSpoofedSource);
            }
            let ingress = Ingress::Host { mac: eth.src() };
            route_ipv4(tables, buf, ip, ingress, scratch)
        }
        ETHERTYPE_IPV6 => Outbound::Drop(DropReason::Ipv6),
        _ => Outbound::Drop(DropReason::UnsupportedEthertype),
    }
}

/// The checks every IPv4 frame a local sender (pod or host path, of MTU `mtu_bytes`)
/// writes must pass: addressed to the gateway, a sane header with a good checksum, within
/// the MTU, offload metadata tapwire can honour. `ip_start` is where the IPv4 header lies
/// in the buffer. Returns the validated packet.
fn check_local_ipv4(
    eth: &EthernetFrame<&[u8]>,
    ip_start: usize,
    offload: VnetHdr,
    mtu_bytes: u32,
) -> Result<Ipv4Meta, DropReason> {
    if eth.dst() != GATEWAY_MAC {
        return Err(DropReason::NotForGateway);
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| DropReason::MalformedIpv4)?;
    let meta = Ipv4Meta::new(&ip, ip_start, offload)?;
    if meta.wire_len > mtu_bytes as usize {
        return Err(DropReason::Oversize);
    }
    if offload.needs_csum()
        && usize::from(offload.csum_start) + usize::from(offload.csum_offset) + 2
            > ETH_HEADER_LEN + ip.total_len()
    {
        return Err(DropReason::BadOffload);
    }
    if !ip.checksum_ok() {
        return Err(DropReason::BadChecksum);
    }
    Ok(meta)
}

/// Proxy-ARP: answer every request with the gateway MAC, except for the pod's own
/// address (duplicate-address probes and gratuitous ARP must go unanswered).
fn answer_arp(
    _tables: &Tables,
    owns: impl Fn(Ipv4Addr) -> bool,
    eth: &EthernetFrame<&[u8]>,
    scratch: &mut [u8; SCRATCH_LEN],
) -> Outbound {
    let Ok(arp) = ArpPacket::new_checked(eth.payload()) else {
        return Outbound::Drop(DropReason::MalformedArp);
    };
    let target = arp.target_ip();
    if arp.operation() != ARP_REQUEST || target == arp.sender_ip() || owns(target) {
        return Outbound::Drop(DropReason::ArpIgnored);
    }
    let requester = (arp.sender_mac(), arp.sender_ip());
    emit_ethernet(&mut scratch[..], requester.0, GATEWAY_MAC, ETHERTYPE_ARP);
    emit_arp(
        &mut scratch[ETH_HEADER_LEN..],
        ARP_REPLY,
        (GATEWAY_MAC, target),
        requester,
    );
    Outbound::Reply {
        len: ETH_HEADER_LEN + ARP_IPV4_LEN,
    }
}

impl crate::tables::EndpointEntry {
    fn may_send_from_fn(&self) -> impl Fn(Ipv4Addr) -> bool + '_ {
        move |addr| self.may_send_from(addr)
    }
}

/// Routes the IPv4 packet `ip` (validated by the caller, behind an Ethernet header). The
/// Ethernet header is rewritten or replaced as the route needs.
fn route_ipv4(
    tables: &Tables,
    buf: &mut PacketBuf,
    ip: Ipv4Meta,
    ingress: Ingress,
    scratch: &mut [u8; SCRATCH_LEN],
) -> Outbound {
    let (ip_start, packet_end) = (ip.start, ip.end);
    let eth_start = ip_start - ETH_HEADER_LEN;
    let offload = buf.offload;
    let (dst, ttl, wire_len, dont_fragment, flow) =
        (ip.dst, ip.ttl, ip.wire_len, ip.dont_fragment, ip.flow);
    let icmp = |buf: &PacketBuf, scratch: &mut [u8; SCRATCH_LEN], reason, kind| {
        icmp_error(tables, buf, &ip, ingress, scratch, reason, kind)
    };

    let target = match tables.fib.lookup(dst) {
        None | Some(RouteTarget::PoolUnrouted) => {
            return icmp(buf, scratch, DropReason::NoRoute, IcmpError::NetUnreachable)
        }
        Some(RouteTarget::Blackhole) => return Outbound::Drop(DropReason::Blackhole),
        Some(target) => *target,
    };
    match (ingress, target) {
        (Ingress::Underlay, RouteTarget::LocalEndpoint(_)) => {}
        // A peer's pod or kernel talking to this node's own address, through the tunnel
        // (see `state::build::host_path_routes`).
        (Ingress::Underlay, RouteTarget::Host) if dst == tables.local.underlay_ip => {}
        (Ingress::Underlay, _) => return Outbound::Drop(DropReason::NotLocal),
        (Ingress::Host { .. }, RouteTarget::Host) => {
            return Outbound::Drop(DropReason::HostHairpin)
        }
        _ => {}
    }
    if ttl <= 1 {
        return icmp(
            buf,
            scratch,
            DropReason::TtlExceeded,
            IcmpError::TimeExceeded,
        );
    }
    let mtu = match target {
        RouteTarget::LocalEndpoint(idx) => match tables.endpoint(idx) {
            Some(ep) => ep.mtu_bytes,
            None => return Outbound::Drop(DropReason::UnknownEndpoint),
        },
        RouteTarget::RemoteNode { encap, .. } => tables
            .local
            .underlay_mtu_bytes
            .saturating_sub(encap.overhead_bytes()),
        RouteTarget::Host => match tables.local.host_path {
            Some(host) => host.mtu_bytes,
            None => return Outbound::Drop(DropReason::NoRoute),
        },
        RouteTarget::Blackhole => return Outbound::Drop(DropReason::Blackhole),
        RouteTarget::PoolUnrouted => return Outbound::Drop(DropReason::NoRoute),
    };
    if wire_len > mtu as usize {
        if dont_fragment {
            let kind = IcmpError::FragmentationNeeded {
                mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
            };
            return icmp(buf, scratch, DropReason::FragmentationNeeded, kind);
        }
        return Outbound::Drop(DropReason::TooBigToForward);
    }
    // The tunnels carry no offload metadata, but for IPIP framed for the packet socket: a
    // partial checksum is finished here (a super-frame is segmented, with full checksums,
    // on the way out).
    let ipip_mac = |peer| tables.peer(peer).and_then(|p| p.next_hop_mac);
    let tunnel = match target {
        RouteTarget::RemoteNode {
            encap: Encap::Vxlan,
            ..
        } => true,
        RouteTarget::RemoteNode {
            encap: Encap::Ipip,
            peer,
        } => ipip_mac(peer).is_none(),
        _ => false,
    };
    if tunnel && offload.needs_csum() && !offload.is_gso() {
        if offload::complete_checksum(&mut buf.data[eth_start..packet_end], offload).is_err() {
            return Outbound::Drop(DropReason::BadOffload);
        }
        buf.offload = VnetHdr::NONE;
    }
    ip.view_mut(buf).decrement_ttl();
    let tso = |inner_ip: usize| {
        let (ip_header_len, tcp_header_len) = ip.gso_headers?;
        Some(Tso {
            inner_ip,
            ip_header_len,
            tcp_header_len,
            mss: offload.gso_size,
            ecn: offload.gso_type & VnetHdr::GSO_ECN != 0,
        })
    };

    match target {
        RouteTarget::LocalEndpoint(idx) => {
            let Some(ep) = tables.endpoint(idx) else {
                return Outbound::Drop(DropReason::UnknownEndpoint);
            };
            emit_ethernet(
                &mut buf.data[eth_start..],
                ep.mac,
                GATEWAY_MAC,
                ETHERTYPE_IPV4,
            );
            Outbound::ToPod {
                endpoint: idx,
                frame: eth_start..packet_end,
                offload,
            }
        }
        RouteTarget::RemoteNode { peer, encap } => {
            let Some(peer) = tables.peer(peer) else {
                return Outbound::Drop(DropReason::NoRoute);
            };
            let local = &tables.local;
            match encap {
                Encap::None => {
                    let Some(peer_mac) = peer.next_hop_mac else {
                        return Outbound::Drop(DropReason::NeighborUnresolved);
                    };
                    emit_ethernet(
                        &mut buf.data[eth_start..],
                        peer_mac,
                        local.underlay_mac,
                        ETHERTYPE_IPV4,
                    );
                    Outbound::ToPeerEthernet {
                        frame: eth_start..packet_end,
                        offload,
                    }
                }
                Encap::Ipip => {
                    let outer_start = ip_start - Ipv4Repr::HEADER_LEN;
                    prepend_outer_ipv4(
                        buf,
                        outer_start..packet_end,
                        tables,
                        peer.underlay_ip,
                        IPPROTO_IPIP,
                        dont_fragment,
                    );
                    let Some(peer_mac) = peer.next_hop_mac else {
                        return Outbound::ToPeerIpip {
                            dst: peer.underlay_ip,
                            frame: outer_start..packet_end,
                            offload: VnetHdr::NONE,
                            tso: tso(Ipv4Repr::HEADER_LEN),
                            framed: false,
                        };
                    };
                    let frame_start = outer_start - ETH_HEADER_LEN;
                    emit_ethernet(
                        &mut buf.data[frame_start..],
                        peer_mac,
                        local.underlay_mac,
                        ETHERTYPE_IPV4,
                    );
                    // Offsets count from the frame's start, now the outer Ethernet header.
                    let moved = (eth_start - frame_start) as u16;
                    let offload = match offload.needs_csum() && !offload.is_gso() {
                        true => VnetHdr {
                            csum_start: offload.csum_start + moved,
                            hdr_len: offload.hdr_len.saturating_add(moved),
                            ..offload
                        },
                        false => VnetHdr::NONE,
                    };
                    Outbound::ToPeerIpip {
                        dst: peer.underlay_ip,
                        frame: frame_start..packet_end,
                        offload,
                        tso: tso(ETH_HEADER_LEN + Ipv4Repr::HEADER_LEN),
                        framed: true,
                    }
                }
                Encap::Vxlan => {
                    let Some(peer_vtep) = peer.vtep_mac else {
                        return Outbound::Drop(DropReason::VtepUnknown);
                    };
                    emit_ethernet(
                        &mut buf.data[eth_start..],
                        peer_vtep,
                        local.vtep_mac,
                        ETHERTYPE_IPV4,
                    );
                    let vxlan_start = eth_start - VXLAN_HEADER_LEN;
                    emit_vxlan(&mut buf.data[vxlan_start..], local.vni);
                    Outbound::ToPeerVxlan {
                        dst: peer.underlay_ip,
                        flow,
                        payload: vxlan_start..packet_end,
                        tso: tso(VXLAN_HEADER_LEN + ETH_HEADER_LEN),
                    }
                }
            }
        }
        RouteTarget::Host => {
            let Some(host) = tables.local.host_path else {
                return Outbound::Drop(DropReason::NoRoute);
            };
            emit_ethernet(
                &mut buf.data[eth_start..],
                host.mac,
                GATEWAY_MAC,
                ETHERTYPE_IPV4,
            );
            Outbound::ToHost {
                frame: eth_start..packet_end,
                offload,
            }
        }
        RouteTarget::Blackhole => Outbound::Drop(DropReason::Blackhole),
        RouteTarget::PoolUnrouted => Outbound::Drop(DropReason::NoRoute),
    }
}

/// Writes the outer IPv4 header (this node to `dst`) at the start of `packet`, whose
/// payload is already in place behind it. One function for IPIP and VXLAN alike.
fn prepend_outer_ipv4(
    buf: &mut PacketBuf,
    packet: Range<usize>,
    tables: &Tables,
    dst: Ipv4Addr,
    protocol: u8,
    dont_fragment: bool,
) -> Range<usize> {
    let outer = Ipv4Repr {
        src: tables.local.underlay_ip,
        dst,
        protocol,
        ttl: 64,
        dont_fragment,
        payload_len: packet.len() - Ipv4Repr::HEADER_LEN,
    };
    outer.emit(&mut buf.data[packet.start..]);
    packet
}

/// Bytes in front of a VXLAN header on the underlay: Ethernet, IPv4 and UDP headers.
pub const VXLAN_UNDERLAY_PREFIX: usize = ETH_HEADER_LEN + Ipv4Repr::HEADER_LEN + UDP_HEADER_LEN;
// The VXLAN header of a pod's frame sits at HEADROOM - VXLAN_HEADER_LEN.
const _: () = assert!(HEADROOM >= VXLAN_UNDERLAY_PREFIX + VXLAN_HEADER_LEN);

/// Where a VXLAN packet leaves when the node's kernel sends it: the underlay TAP's MAC
/// (the frame is addressed to it, so the kernel routes it), the node's address and the
/// VXLAN port.
#[derive(Debug, Clone, Copy)]
pub struct VxlanUnderlay {
    pub tap_mac: Mac,
    pub src: Ipv4Addr,
    pub port: u16,
}

/// Completes the VXLAN packet of a [`Outbound::ToPeerVxlan`] (`payload`: the VXLAN header
/// onwards) into an Ethernet frame for the underlay TAP, in place: outer Ethernet, IPv4
/// (this node → `dst`) and UDP headers (source port from `flow`, as the kernel derives it
/// from the inner flow; no UDP checksum, as the kernel's VXLAN sends by default), and the
/// tunnel offload header that lets a super-frame (`tso`) cross whole.
///
/// `None` when the frame cannot be sent that way (more than an IPv4 packet holds): the
/// caller segments it in software instead.
pub fn vxlan_underlay_frame(
    buf: &mut PacketBuf,
    payload: Range<usize>,
    via: VxlanUnderlay,
    dst: Ipv4Addr,
    flow: u32,
    tso: Option<Tso>,
) -> Option<(Range<usize>, offload::TunnelVnetHdr)> {
    let start = payload.start.checked_sub(VXLAN_UNDERLAY_PREFIX)?;
    let udp_len = UDP_HEADER_LEN + payload.len();
    if Ipv4Repr::HEADER_LEN + udp_len > usize::from(u16::MAX) || payload.end > buf.data.len() {
        return None;
    }
    let outer_udp = ETH_HEADER_LEN + Ipv4Repr::HEADER_LEN;
    let inner_ip = VXLAN_UNDERLAY_PREFIX + VXLAN_HEADER_LEN + ETH_HEADER_LEN;
    let hdr = match tso {
        Some(tso) => offload::TunnelVnetHdr::vxlan(
            outer_udp,
            inner_ip,
            tso.ip_header_len,
            tso.tcp_header_len,
            Some((tso.mss, tso.ecn)),
        )?,
        None => offload::TunnelVnetHdr::default(),
    };
    let frame = &mut buf.data[start..payload.end];
    emit_ethernet(frame, via.tap_mac, via.tap_mac, ETHERTYPE_IPV4);
    Ipv4Repr {
        src: via.src,
        dst,
        protocol: IPPROTO_UDP,
        ttl: 64,
        dont_fragment: false,
        payload_len: udp_len,
    }
    .emit(&mut frame[ETH_HEADER_LEN..]);
    // The kernel's VXLAN picks a source port in the dynamic range from the flow's hash.
    let sport = 0xc000 | (flow as u16 & 0x3fff);
    emit_udp_header(&mut frame[outer_udp..], (sport, via.port), payload.len());
    Some((start..payload.end, hdr))
}

fn icmp_error(
    tables: &Tables,
    buf: &PacketBuf,
    ip: &Ipv4Meta,
    ingress: Ingress,
    scratch: &mut [u8; SCRATCH_LEN],
    reason: DropReason,
    kind: IcmpError,
) -> Outbound {
    // Errors go back only to pods and the host path: the sender of decapsulated traffic
    // is behind a tunnel. The node's kernel would refuse an error from its own address
    // (a martian source), so the host path's come from the gateway.
    let (mac, from) = match ingress {
        Ingress::Pod { mac } => (mac, tables.local.underlay_ip),
        Ingress::Host { mac } => (mac, POD_GATEWAY),
        Ingress::Underlay => return Outbound::Drop(reason),
    };
    let offender = ip.view(buf);
    match emit_icmp_error(&mut scratch[..], (mac, GATEWAY_MAC), from, &offender, kind) {
        Some(reply_len) => Outbound::DropWithIcmp { reason, reply_len },
        None => Outbound::Drop(reason),
    }
}

/// A VXLAN frame received on the UDP socket: `buf` holds the UDP payload (VXLAN header
/// and inner Ethernet frame), `outer_src` the sender's underlay address.
pub fn from_vxlan(tables: &Tables, outer_src: Ipv4Addr, buf: &mut PacketBuf) -> Inbound {
    let Some(&sender) = tables
        .peer_by_underlay
        .get(&outer_src)
        .filter(|&&p| tables.peer(p).is_some_and(|p| p.vtep_mac.is_some()))
    else {
        return Inbound::Drop(DropReason::UnknownTunnelSource);
    };
    if !tables.tunnels_in_use.vxlan {
        return Inbound::Drop(DropReason::VxlanNotInUse);
    }
    let Some(vni) = packet::parse_vxlan(buf.frame()) else {
        return Inbound::Drop(DropReason::MalformedVxlan);
    };
    if vni != tables.local.vni {
        return Inbound::Drop(DropReason::WrongVni);
    }
    let eth_start = buf.start + VXLAN_HEADER_LEN;
    let Ok(inner) = EthernetFrame::new_checked(&buf.data[eth_start..buf.end]) else {
        return Inbound::Drop(DropReason::MalformedEthernet);
    };
    if inner.dst() != tables.local.vtep_mac {
        return Inbound::Drop(DropReason::NotForVtep);
    }
    if inner.ethertype() != ETHERTYPE_IPV4 {
        return Inbound::Drop(drop_for_ethertype(inner.ethertype()));
    }
    // A TCP super-frame a sender on this host passed to its kernel whole (tapwire through
    // its underlay TAP, or a kernel VXLAN device with offloads on) reaches the socket whole
    // over a virtual underlay: it goes on to the pod whole.
    let inner_mtu = tables
        .local
        .underlay_mtu_bytes
        .saturating_sub(Encap::Vxlan.overhead_bytes());
    if let Some(hdr) = offload::whole_tcpv4(&buf.data[eth_start..buf.end], inner_mtu as usize) {
        buf.offload = hdr;
    }
    decapsulated(tables, buf, eth_start, sender)
}

/// An IPIP frame from the underlay's IPIP packet socket: `buf` holds the Ethernet
/// header, the outer IPv4 header and the inner packet, with the offload metadata the
/// socket gave (a partial checksum, when the sender is on this host).
pub fn from_ipip_frame(tables: &Tables, buf: &mut PacketBuf) -> Inbound {
    match EthernetFrame::new_checked(buf.frame()) {
        Ok(eth) if eth.ethertype() == ETHERTYPE_IPV4 => {}
        _ => return Inbound::Drop(DropReason::MalformedEthernet),
    }
    // The kernel checks (and reassembles) the outer header only after a packet socket has
    // its copy: a fragment's payload is no inner header.
    match Ipv4Packet::new_checked(&buf.frame()[ETH_HEADER_LEN..]) {
        Ok(outer) if !outer.checksum_ok() => return Inbound::Drop(DropReason::BadChecksum),
        Ok(outer) if outer.is_fragment() => return Inbound::Drop(DropReason::IpipFragment),
        Ok(_) => {}
        Err(_) => return Inbound::Drop(DropReason::MalformedIpv4),
    }
    decapsulate_ipip(tables, buf, buf.start + ETH_HEADER_LEN)
}

/// An IPIP packet as a raw IP socket gives it: `buf` holds the outer IPv4 header and the
/// inner packet.
pub fn from_ipip(tables: &Tables, buf: &mut PacketBuf) -> Inbound {
    decapsulate_ipip(tables, buf, buf.start)
}

/// The IPIP packet whose outer IPv4 header starts at `outer_at` in `buf`: from a known
/// peer, while IPIP is in use, its inner packet goes on as a frame of its own.
fn decapsulate_ipip(tables: &Tables, buf: &mut PacketBuf, outer_at: usize) -> Inbound {
    let (outer_src, inner_start) = match Ipv4Packet::new_checked(&buf.data[outer_at..buf.end]) {
        Ok(outer) if outer.protocol() == IPPROTO_IPIP => (outer.src(), outer.header_len()),
        Ok(_) => return Inbound::Ignore,
        Err(_) => return Inbound::Drop(DropReason::MalformedIpv4),
    };
    let Some(&sender) = tables.peer_by_underlay.get(&outer_src) else {
        return Inbound::Drop(DropReason::UnknownTunnelSource);
    };
    if !tables.tunnels_in_use.ipip {
        return Inbound::Drop(DropReason::IpipNotInUse);
    }
    // The outer header (>= 20 bytes) has been read: its tail becomes the inner frame's
    // Ethernet header, and the headroom covers the rest.
    let eth_start = outer_at + inner_start - ETH_HEADER_LEN;
    // Offsets count from the frame's start, which moves to the inner Ethernet header. No
    // sender cuts IPIP super-frames (no GSO type describes them).
    let moved = (eth_start - buf.start) as u16;
    let offload = buf.offload;
    if offload.is_gso() || (offload.needs_csum() && offload.csum_start < moved) {
        return Inbound::Drop(DropReason::BadOffload);
    }
    if offload.needs_csum() {
        buf.offload = VnetHdr {
            csum_start: offload.csum_start - moved,
            hdr_len: offload.hdr_len.saturating_sub(moved),
            ..offload
        };
    }
    emit_ethernet(&mut buf.data[eth_start..], [0; 6], [0; 6], ETHERTYPE_IPV4);
    decapsulated(tables, buf, eth_start, sender)
}

/// A frame seen on the underlay interface's packet socket: unencapsulated pod traffic
/// from a peer, or anything else the kernel also receives (which we ignore).
///
/// With a host path, only traffic from the other nodes (a source in their blocks or their
/// own address) is taken here; the rest — the world's traffic to pods — is the kernel's
/// to route (and un-masquerade, and filter) into the host path. Control's nftables rule
/// keeps the kernel from forwarding a second copy of what is taken here.
pub fn from_underlay_ethernet(tables: &Tables, buf: &mut PacketBuf) -> Inbound {
    let ip_start = buf.start + ETH_HEADER_LEN;
    // Parsed once: what decides whether the frame is ours is also what routes it.
    let ip = {
        let Ok(eth) = EthernetFrame::new_checked(buf.frame()) else {
            return Inbound::Ignore;
        };
        if eth.ethertype() != ETHERTYPE_IPV4 || eth.dst() != tables.local.underlay_mac {
            return Inbound::Ignore;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return Inbound::Ignore;
        };
        if !matches!(
            tables.fib.lookup(ip.dst()),
            Some(RouteTarget::LocalEndpoint(_))
        ) {
            return Inbound::Ignore;
        }
        if tables.local.host_path.is_some()
            && !matches!(
                tables.fib.lookup(ip.src()),
                Some(RouteTarget::RemoteNode { .. })
            )
        {
            return Inbound::Ignore;
        }
        if !ip.checksum_ok() {
            return Inbound::Drop(DropReason::BadChecksum);
        }
        match Ipv4Meta::new(&ip, ip_start, buf.offload) {
            Ok(meta) => meta,
            Err(reason) => return Inbound::Drop(reason),
        }
    };
    route_inbound(tables, buf, ip)
}

/// Validates the inner IPv4 packet of tunnel traffic and routes it to a pod. The tunnel
/// names the node that sent it (`sender`): the inner source must route to that node — a
/// block or host address it owns — as Calico's RPF check on tunnel devices demands.
/// Otherwise any node could inject packets "from" a local pod, another node's pods or the
/// outside world.
fn decapsulated(
    tables: &Tables,
    buf: &mut PacketBuf,
    eth_start: usize,
    sender: PeerIdx,
) -> Inbound {
    let ip_start = eth_start + ETH_HEADER_LEN;
    let ip = {
        let ip = match Ipv4Packet::new_checked(&buf.data[ip_start..buf.end]) {
            Ok(ip) if ip.checksum_ok() => ip,
            Ok(_) => return Inbound::Drop(DropReason::BadChecksum),
            Err(_) => return Inbound::Drop(DropReason::MalformedIpv4),
        };
        let owned_by_sender = matches!(
            tables.fib.lookup(ip.src()),
            Some(RouteTarget::RemoteNode { peer, .. }) if *peer == sender
        );
        if !owned_by_sender {
            return Inbound::Drop(DropReason::TunnelSpoofedSource);
        }
        match Ipv4Meta::new(&ip, ip_start, buf.offload) {
            Ok(meta) => meta,
            Err(reason) => return Inbound::Drop(reason),
        }
    };
    route_inbound(tables, buf, ip)
}

/// Routes a packet from the underlay, validated into `ip`: to a pod or the host path.
fn route_inbound(tables: &Tables, buf: &mut PacketBuf, ip: Ipv4Meta) -> Inbound {
    let mut scratch = [0u8; SCRATCH_LEN];
    match route_ipv4(tables, buf, ip, Ingress::Underlay, &mut scratch) {
        Outbound::ToPod {
            endpoint,
            frame,
            offload,
        } => Inbound::ToPod {
            endpoint,
            frame,
            offload,
        },
        Outbound::ToHost { frame, offload } => Inbound::ToHost { frame, offload },
        Outbound::Drop(reason) | Outbound::DropWithIcmp { reason, .. } => Inbound::Drop(reason),
        // Routing sends nothing from the underlay onwards or back (no transit, and errors
        // go only to local senders); should it, the frame is not ours to deliver.
        Outbound::Reply { .. }
        | Outbound::ToPeerIpip { .. }
        | Outbound::ToPeerVxlan { .. }
        | Outbound::ToPeerEthernet { .. } => Inbound::Drop(DropReason::NotLocal),
    }
}

/// The TCP header length of a super-frame tapwire can segment (TCP over IPv4, a valid TCP
/// header, non-zero MSS), or `None`.
fn gso_tcp_header_len(ip: &Ipv4Packet<&[u8]>, offload: VnetHdr) -> Option<usize> {
    if offload.gso_kind() != VnetHdr::GSO_TCPV4
        || ip.protocol() != IPPROTO_TCP
        || offload.gso_size == 0
    {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some(tcp.header_len())
}

fn drop_for_ethertype(ethertype: u16) -> DropReason {
    match ethertype {
        ETHERTYPE_IPV6 => DropReason::Ipv6,
        _ => DropReason::UnsupportedEthertype,
    }
}

/// A hash of the flow's addresses, protocol and ports (when present), so that every
/// packet of a flow takes the same VXLAN source port and ECMP path.
fn flow_hash(ip: &Ipv4Packet<&[u8]>) -> u32 {
    let (sport, dport) = packet::transport_ports(ip).unwrap_or((0, 0));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for word in [
        u64::from(u32::from(ip.src())),
        u64::from(u32::from(ip.dst())),
        u64::from(ip.protocol()) << 32 | u64::from(sport) << 16 | u64::from(dport),
    ] {
        h = (h ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests;
