//! Offloads, sans-IO: the virtio-net header that travels with every pod frame, and the
//! three jobs it hands us.
//!
//! - [`VnetHdr`]: the 10-byte `struct virtio_net_hdr` in front of each frame on a pod
//!   queue (and on the underlay packet socket). With `TSO4` on the TAP, a pod's TCP
//!   stream arrives as ~64 KB super-frames (`GSO_TCPV4`, `gso_size` = MSS) with a partial
//!   checksum (`NEEDS_CSUM`: the field holds the pseudo-header sum, we finish it).
//! - [`complete_checksum`]: finishes a partial checksum in software, for a frame that
//!   leaves through a socket that cannot carry the metadata (the tunnels).
//! - [`segment_tcpv4`]: software TSO. Splits a TCP super-segment, already behind its
//!   tunnel headers, into MSS-sized packets with their own lengths, IDs, sequence numbers,
//!   flags and checksums. It writes only headers: payloads stay where they are and the
//!   sender gathers them (`sendmsg` iovecs), so no payload byte is copied here.
//! - [`udp_gso_sends`]: how those segments are grouped into UDP GSO sends (VXLAN over the
//!   UDP socket), within the kernel's limits.
//! - [`Coalescer`]: GRO. Merges consecutive in-order segments of one TCP flow to one pod
//!   back into a super-frame with a `GSO_TCPV4` header, so a burst costs one TAP write
//!   instead of one per segment. Each merged segment's checksum is verified first, as the
//!   kernel's GRO does, because the pod will not check a super-frame again.
//!   [`Coalescer::offer`] and [`Coalescer::flush`] are the whole policy: which frames are
//!   held, and what the worker writes to pods, in which order.
//!
//! All offsets in a [`VnetHdr`] count from the start of the Ethernet header.

use std::net::Ipv4Addr;
use std::ops::Range;

use crate::packet::tcp::{TCP_ACK, TCP_CWR, TCP_FIN, TCP_PSH};
use crate::packet::{
    checksum, fold, put_be16, sum_words, EthernetFrame, Ipv4Packet, TcpPacket, ETHERTYPE_IPV4,
    ETH_HEADER_LEN, IPPROTO_TCP, TCP_CHECKSUM_OFFSET,
};

/// Bytes of a `struct virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// A `struct virtio_net_hdr` (little-endian fields on the wire, as on x86 and arm64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The checksum from `csum_start` on is partial: store its completion at
    /// `csum_start + csum_offset`.
    pub const F_NEEDS_CSUM: u8 = 1;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    /// Set together with a GSO type when the first segment carries CWR.
    pub const GSO_ECN: u8 = 0x80;
    /// A plain frame: no GSO, checksums complete.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    pub fn parse(bytes: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let le = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        VnetHdr {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// The GSO type without the ECN bit.
    pub fn gso_kind(self) -> u8 {
        self.gso_type & !Self::GSO_ECN
    }

    pub fn is_gso(self) -> bool {
        self.gso_kind() != Self::GSO_NONE
    }

    pub fn needs_csum(self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }
}

/// Bytes of a `struct virtio_net_hdr_v1_hash_tunnel`, the header in front of every frame
/// on a TAP set up for UDP-tunnel GSO (Linux 6.17).
pub const TUNNEL_VNET_HDR_LEN: usize = tapwire_sys::tap::TUNNEL_VNET_HDR_LEN;

/// A `struct virtio_net_hdr_v1_hash_tunnel`: the [`VnetHdr`] fields, then `num_buffers`,
/// the hash fields (unused here, zero), and the offsets of the outer transport header and
/// of the inner network header (from the start of the outer Ethernet header).
///
/// With it a VXLAN packet carrying a TCP super-frame crosses a TAP whole: the kernel (or
/// the device that finally sends it) cuts it into VXLAN datagrams and fills in each inner
/// TCP checksum, so userspace neither segments nor checksums it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelVnetHdr {
    pub hdr: VnetHdr,
    pub outer_th_offset: u16,
    pub inner_nh_offset: u16,
}

impl TunnelVnetHdr {
    /// `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4`, OR-ed with the inner GSO type.
    pub const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;

    /// The header of a VXLAN frame (outer Ethernet onwards) whose inner IPv4 header starts
    /// at `inner_ip` and carries a TCP header of `tcp_len` bytes, the outer UDP header at
    /// `outer_udp`: with `gso` (the pod's segment size and ECN bit) a super-frame, else a
    /// plain frame whose checksums are complete.
    pub fn vxlan(
        outer_udp: usize,
        inner_ip: usize,
        ip_len: usize,
        tcp_len: usize,
        gso: Option<(u16, bool)>,
    ) -> Option<TunnelVnetHdr> {
        let Some((mss, ecn)) = gso else {
            return Some(TunnelVnetHdr::default());
        };
        let tcp = inner_ip + ip_len;
        let ecn = if ecn { VnetHdr::GSO_ECN } else { 0 };
        Some(TunnelVnetHdr {
            hdr: VnetHdr {
                flags: VnetHdr::F_NEEDS_CSUM,
                gso_type: Self::GSO_UDP_TUNNEL_IPV4 | VnetHdr::GSO_TCPV4 | ecn,
                hdr_len: u16::try_from(tcp + tcp_len).ok()?,
                gso_size: mss,
                csum_start: u16::try_from(tcp).ok()?,
                csum_offset: TCP_CHECKSUM_OFFSET,
            },
            outer_th_offset: u16::try_from(outer_udp).ok()?,
            inner_nh_offset: u16::try_from(inner_ip).ok()?,
        })
    }

    pub fn to_bytes(self) -> [u8; TUNNEL_VNET_HDR_LEN] {
        let mut b = [0u8; TUNNEL_VNET_HDR_LEN];
        b[..VNET_HDR_LEN].copy_from_slice(&self.hdr.to_bytes());
        // num_buffers (10), hash_value (12), hash_report (16), padding (18): zero.
        b[20..22].copy_from_slice(&self.outer_th_offset.to_le_bytes());
        b[22..24].copy_from_slice(&self.inner_nh_offset.to_le_bytes());
        b
    }
}

/// The offload header for a TCP/IPv4 packet that arrived whole although it is longer than
/// the `mtu_bytes` its sender's segments fit in (`frame`: Ethernet onwards): a super-frame a
/// sender on this host handed the kernel unsegmented (a tunnel super-frame crossing a veth
/// underlay reaches a UDP socket whole). It goes on as one: `GSO_TCPV4` with segments as
/// large as `mtu_bytes` allows, and the checksum marked partial, as the kernel kept it.
/// `None` for anything else.
///
/// Over a real network such a frame never arrives: the sending device segments it and
/// the receiving kernel hands the socket ordinary datagrams (or a UDP GRO run of them).
pub fn whole_tcpv4(frame: &[u8], mtu_bytes: usize) -> Option<VnetHdr> {
    // Every packet from a tunnel comes here: the cheap refusals first.
    let ip = Ipv4Packet::new_checked(frame.get(ETH_HEADER_LEN..)?).ok()?;
    if ip.protocol() != IPPROTO_TCP || ip.is_fragment() || ip.total_len() <= mtu_bytes {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.into_payload()).ok()?;
    if tcp.payload().is_empty() {
        return None;
    }
    let (ip_len, tcp_len) = (ip.header_len(), tcp.header_len());
    let mss = mtu_bytes.checked_sub(ip_len + tcp_len).filter(|m| *m > 0)?;
    let cwr = tcp.flags() & TCP_CWR != 0;
    let tcp = ETH_HEADER_LEN + ip_len;
    Some(VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4 | if cwr { VnetHdr::GSO_ECN } else { 0 },
        hdr_len: u16::try_from(tcp + tcp_len).ok()?,
        gso_size: u16::try_from(mss).ok()?,
        csum_start: u16::try_from(tcp).ok()?,
        csum_offset: TCP_CHECKSUM_OFFSET,
    })
}

/// The IPv4 and TCP views of one packet.
type TcpIpv4<'a> = (Ipv4Packet<&'a [u8]>, TcpPacket<&'a [u8]>);

/// The IPv4 and TCP views of `packet`, when it is an IPv4 packet carrying a whole TCP
/// header.
fn tcp_over_ipv4(packet: &[u8]) -> Option<TcpIpv4<'_>> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.protocol() != IPPROTO_TCP {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.into_payload()).ok()?;
    Some((ip, tcp))
}

/// How many packets `frame` (Ethernet onwards) stands for on a wire of its segment size:
/// 1 unless it is a TCP/IPv4 super-frame.
pub fn segment_count(frame: &[u8], hdr: VnetHdr) -> usize {
    if !hdr.is_gso() || hdr.gso_size == 0 {
        return 1;
    }
    let Some((_, tcp)) = frame.get(ETH_HEADER_LEN..).and_then(tcp_over_ipv4) else {
        return 1;
    };
    tcp.payload()
        .len()
        .div_ceil(usize::from(hdr.gso_size))
        .max(1)
}

/// Why an offloaded frame could not be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("checksum offsets point outside the frame")]
    BadChecksumOffsets,
    #[error("GSO type {0} is not TCP over IPv4")]
    UnsupportedGso(u8),
    #[error("GSO frame with a malformed IPv4/TCP header or a zero segment size")]
    MalformedGso,
    #[error("GSO frame would need more than {MAX_SEGMENTS} segments")]
    TooManySegments,
}

/// Finishes the partial checksum `hdr` describes, in place (what `skb_checksum_help`
/// does). `frame` starts with the Ethernet header.
pub fn complete_checksum(frame: &mut [u8], hdr: VnetHdr) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > frame.len() {
        return Err(OffloadError::BadChecksumOffsets);
    }
    let sum = checksum(&frame[start..]);
    // 0 would mean "no checksum" to UDP; the kernel sends 0xffff instead, and so do we.
    put_be16(frame, field, if sum == 0 { 0xffff } else { sum });
    Ok(())
}

/// Most segments [`segment_tcpv4`] makes from one super-frame (the kernel's UDP GSO limit
/// is 64 segments per send; a 64 KB frame at the smallest MSS a TAP produces fits).
pub const MAX_SEGMENTS: usize = 128;
/// Most header bytes in front of a segment's payload: tunnel prefix (up to 36) plus
/// IPv4 and TCP headers with options (60 each).
pub const MAX_SEGMENT_HEADER: usize = 160;

/// What precedes the inner IPv4 header of a super-frame being segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer {
    /// An outer IPv4 header (IPIP) at byte `at`, ending where the inner one starts: its
    /// length and checksum are redone per segment. Bytes before it (the underlay Ethernet
    /// header) are copied as they are.
    Ipv4 { at: usize },
    /// Bytes with no length field (VXLAN header + inner Ethernet, or an Ethernet header).
    Opaque,
}

/// What [`segment_tcpv4`] leaves in each segment's TCP checksum field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentChecksum {
    /// The full checksum, computed here: for a socket that carries no offload metadata.
    Full,
    /// The pseudo-header sum, as a partial checksum holds it: for a sender that hands each
    /// segment on with [`Segments::partial_checksum`] as its virtio-net header, so whoever
    /// finally needs the checksum (a NIC, or nobody on a virtual link) finishes it. No pass
    /// over the payload here.
    Partial,
}

/// The segments of one super-frame: per-segment headers built here, payloads as ranges
/// into the frame that was segmented.
#[derive(Debug)]
pub struct Segments {
    headers: Box<[u8]>,
    header_len: usize,
    /// Where each segment's TCP header starts.
    tcp_at: usize,
    payloads: Vec<Range<usize>>,
}

impl Default for Segments {
    fn default() -> Self {
        Self::new()
    }
}

impl Segments {
    pub fn new() -> Segments {
        Segments {
            headers: vec![0; MAX_SEGMENTS * MAX_SEGMENT_HEADER].into_boxed_slice(),
            header_len: 0,
            tcp_at: 0,
            payloads: Vec::with_capacity(MAX_SEGMENTS),
        }
    }

    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// Every segment's header length (they are all alike).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The virtio-net header of every segment cut with [`SegmentChecksum::Partial`]: no
    /// GSO, the TCP checksum partial.
    pub fn partial_checksum(&self) -> VnetHdr {
        VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_NONE,
            hdr_len: self.header_len as u16,
            gso_size: 0,
            csum_start: self.tcp_at as u16,
            csum_offset: TCP_CHECKSUM_OFFSET,
        }
    }

    /// Segment `i`: its headers, and the range of its payload in the segmented frame.
    pub fn segment(&self, i: usize) -> (&[u8], Range<usize>) {
        let at = i * MAX_SEGMENT_HEADER;
        (
            &self.headers[at..at + self.header_len],
            self.payloads[i].clone(),
        )
    }
}

/// Software TSO: splits `frame` (`outer` bytes, then an IPv4 header at `inner_ip`, a TCP
/// header and the payload) into segments carrying at most `mss` payload bytes each.
///
/// Per segment: inner IPv4 total length, ID (+1 per segment, as Linux does) and header
/// checksum; TCP sequence number, FIN/PSH only on the last segment, CWR only on the first,
/// and the TCP checksum as `checksum` asks; with [`Outer::Ipv4`] also the outer total
/// length and checksum. The inner TCP checksum field of `frame` may hold anything (a
/// partial sum from the pod).
pub fn segment_tcpv4(
    frame: &[u8],
    outer: Outer,
    inner_ip: usize,
    mss: usize,
    checksum: SegmentChecksum,
    out: &mut Segments,
) -> Result<(), OffloadError> {
    out.payloads.clear();
    let (ip, tcp) = frame
        .get(inner_ip..)
        .and_then(tcp_over_ipv4)
        .filter(|_| mss > 0)
        .ok_or(OffloadError::MalformedGso)?;
    // An outer IPv4 header must end where the inner one starts.
    if let Outer::Ipv4 { at } = outer {
        let outer_len = frame
            .get(at..)
            .and_then(|b| Ipv4Packet::new_checked(b).ok());
        if outer_len.map(|ip| at + ip.header_len()) != Some(inner_ip) {
            return Err(OffloadError::MalformedGso);
        }
    }
    let (ihl, thl) = (ip.header_len(), tcp.header_len());
    let tcp_at = inner_ip + ihl;
    let payload_at = tcp_at + thl;
    let ip_end = inner_ip + ip.total_len();
    if payload_at > MAX_SEGMENT_HEADER {
        return Err(OffloadError::MalformedGso);
    }
    let payload_len = ip_end - payload_at;
    let count = payload_len.div_ceil(mss).max(1);
    if count > MAX_SEGMENTS {
        return Err(OffloadError::TooManySegments);
    }
    let template = &frame[..payload_at];
    let first_id = ip.ident();
    let first_seq = tcp.seq_number();
    let flags = tcp.flags();
    let pseudo_addrs = ip.pseudo_header_sum(0);

    out.header_len = payload_at;
    out.tcp_at = tcp_at;
    for i in 0..count {
        let start = payload_at + i * mss;
        let end = (start + mss).min(ip_end);
        let seg_payload = end - start;
        let h = &mut out.headers[i * MAX_SEGMENT_HEADER..i * MAX_SEGMENT_HEADER + payload_at];
        h.copy_from_slice(template);

        // Inner IPv4.
        let inner_total = ihl + thl + seg_payload;
        let mut seg_ip = Ipv4Packet::new_unchecked(&mut h[inner_ip..tcp_at]);
        seg_ip.set_total_len(inner_total as u16);
        seg_ip.set_ident(first_id.wrapping_add(i as u16));
        seg_ip.fill_checksum();

        // TCP.
        let mut seg_flags = flags;
        if i + 1 < count {
            seg_flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            seg_flags &= !TCP_CWR;
        }
        let mut seg_tcp = TcpPacket::new_unchecked(&mut h[tcp_at..payload_at]);
        seg_tcp.set_seq_number(first_seq.wrapping_add((i * mss) as u32));
        seg_tcp.set_flags(seg_flags);
        let pseudo = pseudo_addrs + (thl + seg_payload) as u32;
        match checksum {
            SegmentChecksum::Full => {
                seg_tcp.set_checksum(0);
                let mut sum = sum_words(&h[tcp_at..payload_at], pseudo);
                sum = sum_words(&frame[start..end], sum);
                TcpPacket::new_unchecked(&mut h[tcp_at..payload_at]).set_checksum(!fold(sum));
            }
            SegmentChecksum::Partial => seg_tcp.set_checksum(fold(pseudo)),
        }

        // Outer IPv4 (IPIP).
        if let Outer::Ipv4 { at } = outer {
            let mut outer_ip = Ipv4Packet::new_unchecked(&mut h[at..inner_ip]);
            outer_ip.set_total_len((inner_ip - at + inner_total) as u16);
            outer_ip.fill_checksum();
        }
        out.payloads.push(start..end);
    }
    Ok(())
}

/// Most UDP payload bytes one GSO send may carry (an IPv4 datagram's limit, less headers).
pub const MAX_UDP_GSO_BYTES: usize = 65_507;
/// Most datagrams one GSO send may be cut into (the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels, 128 on newer).
pub const MAX_UDP_GSO_SEGMENTS: usize = 64;

/// One UDP GSO send out of a run of equal datagrams: which of them it carries, and the
/// segment size to hand the kernel (`None`: a lone datagram, sent plain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpGsoSend {
    pub segments: Range<usize>,
    pub gso_size: Option<u16>,
}

/// Groups `count` datagrams of `segment_len` bytes each (the last may be shorter) into
/// as few UDP GSO sends as the kernel accepts: at most [`MAX_UDP_GSO_BYTES`] and
/// [`MAX_UDP_GSO_SEGMENTS`] per send, at least one datagram each.
pub fn udp_gso_sends(count: usize, segment_len: usize) -> impl Iterator<Item = UdpGsoSend> {
    let per_send = (MAX_UDP_GSO_BYTES / segment_len.max(1)).clamp(1, MAX_UDP_GSO_SEGMENTS);
    (0..count).step_by(per_send).map(move |first| {
        let last = (first + per_send).min(count);
        UdpGsoSend {
            segments: first..last,
            gso_size: (last - first > 1).then_some(segment_len as u16),
        }
    })
}

/// Largest IPv4 packet a merged frame may grow to.
const MAX_MERGED_IP: usize = 65535;
/// Buffer for one merged frame: Ethernet header plus the largest IPv4 packet.
const MERGE_BUF: usize = ETH_HEADER_LEN + MAX_MERGED_IP;

/// The flow a pending merged frame belongs to, and what the next segment must look like.
#[derive(Debug, Clone, Copy)]
struct Pending {
    endpoint: u32,
    key: FlowKey,
    ip_len: usize,
    tcp_len: usize,
    next_seq: u32,
    mss: usize,
    segments: usize,
    /// A short segment or one with PSH/FIN ended the run: nothing more merges.
    closed: bool,
    /// Whether the first segment's checksum has been verified (done on the first merge).
    first_verified: bool,
    /// The first segment's checksum is partial (it goes on marked so if it stays alone).
    partial: bool,
}

/// What [`Coalescer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    /// Held (alone or merged into the pending frame); nothing to write yet.
    Held,
    /// It cannot join the pending frame: write out [`Coalescer::pending`], call
    /// [`Coalescer::clear`], and push the frame again.
    FlushFirst,
    /// Not something GRO merges (not TCP/IPv4, or a bad checksum): write it as it is
    /// (after flushing any pending frame, to keep order).
    Bypass,
}

/// Receive coalescing towards pods: one pending frame per worker.
#[derive(Debug)]
pub struct Coalescer {
    buf: Box<[u8]>,
    len: usize,
    pending: Option<Pending>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer {
            buf: vec![0; MERGE_BUF].into_boxed_slice(),
            len: 0,
            pending: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// Offers `frame` (Ethernet + IPv4, addressed to the pod `endpoint`). A `partial`
    /// frame's TCP checksum is the partial one a sender on this host left for the device
    /// (see [`partial_tcp_checksum`]): it is trusted, as the kernel trusts it, and the
    /// frame keeps that mark if it goes on alone.
    fn push(&mut self, endpoint: u32, frame: &[u8], partial: bool) -> Push {
        let Some(seg) = TcpSegment::parse(frame) else {
            return if self.pending.is_some() {
                Push::FlushFirst
            } else {
                Push::Bypass
            };
        };
        let Some(p) = self.pending else {
            self.start(endpoint, frame, &seg, partial);
            return Push::Held;
        };
        let same_shape = p.endpoint == endpoint
            && !p.closed
            && seg.key == p.key
            && seg.ip_len == p.ip_len
            && seg.tcp_len == p.tcp_len
            && seg.seq == p.next_seq
            && seg.payload_len <= p.mss
            && seg.payload_len > 0
            && seg.flags & !(TCP_PSH | TCP_ACK) == 0
            && self.len + seg.payload_len <= MERGE_BUF
            && self.headers_match(&seg, &p);
        if !same_shape {
            return Push::FlushFirst;
        }
        if !p.first_verified && !tcp_checksum_ok(&self.buf[..self.len]) {
            // The held segment is corrupt: let it go to the pod alone, which drops it.
            return Push::FlushFirst;
        }
        let payload = seg.tcp.payload();
        let held = &mut self.buf[self.len..self.len + payload.len()];
        if partial {
            held.copy_from_slice(payload);
        } else {
            // Verify while copying: one pass over the payload. A bad segment's bytes stay
            // beyond `len`, i.e. are never used.
            let tcp_len = seg.tcp_len + seg.payload_len;
            let mut sum = seg.ip.pseudo_header_sum(tcp_len);
            sum = sum_words(seg.tcp.header(), sum);
            if fold(copy_and_sum(held, payload, sum)) != 0xffff {
                return Push::FlushFirst;
            }
        }
        self.len += payload.len();
        let mut held_tcp = TcpPacket::new_unchecked(&mut self.buf[ETH_HEADER_LEN + p.ip_len..]);
        held_tcp.set_flags(held_tcp.flags() | seg.flags & TCP_PSH);
        self.pending = Some(Pending {
            next_seq: seg.seq.wrapping_add(seg.payload_len as u32),
            segments: p.segments + 1,
            closed: seg.payload_len < p.mss || seg.flags & TCP_PSH != 0,
            first_verified: true,
            ..p
        });
        Push::Held
    }

    fn start(&mut self, endpoint: u32, frame: &[u8], seg: &TcpSegment<'_>, partial: bool) {
        let end = seg.payload_at + seg.payload_len;
        self.buf[..end].copy_from_slice(&frame[..end]);
        self.len = end;
        self.pending = Some(Pending {
            endpoint,
            key: seg.key,
            ip_len: seg.ip_len,
            tcp_len: seg.tcp_len,
            next_seq: seg.seq.wrapping_add(seg.payload_len as u32),
            mss: seg.payload_len,
            segments: 1,
            // Anything but a plain ACK-carrying data segment stands alone; PSH ends a run.
            closed: seg.payload_len == 0 || seg.flags & !TCP_ACK != 0,
            first_verified: partial,
            partial,
        });
    }

    /// The IPv4 header (but length, ID and checksum) and the TCP header (but sequence
    /// number, PSH and checksum) of `seg` equal the held ones, as Linux's GRO requires.
    /// The caller has checked that the header lengths, addresses and ports are equal.
    fn headers_match(&self, seg: &TcpSegment<'_>, p: &Pending) -> bool {
        // The held frame was a valid segment when it started; only lengths, checksums and
        // PSH changed since.
        let held_ip = Ipv4Packet::new_unchecked(&self.buf[ETH_HEADER_LEN..self.len]);
        let held_tcp = TcpPacket::new_unchecked(&self.buf[ETH_HEADER_LEN + p.ip_len..self.len]);
        let (ip, tcp) = (&seg.ip, &seg.tcp);
        // Version and protocol are the same by parsing: DSCP/ECN, flags/fragment, TTL, options.
        held_ip.dscp_ecn() == ip.dscp_ecn()
            && held_ip.flags_and_fragment() == ip.flags_and_fragment()
            && held_ip.ttl() == ip.ttl()
            && held_ip.options() == ip.options()
            && held_tcp.ack_number() == tcp.ack_number()
            && held_tcp.reserved_and_ns() == tcp.reserved_and_ns()
            && held_tcp.window() == tcp.window()
            && held_tcp.urgent_pointer() == tcp.urgent_pointer()
            && held_tcp.options() == tcp.options()
    }

    /// The frame to write for the pending run, with its vnet header: a lone segment goes
    /// as it came; a merged run as a `GSO_TCPV4` super-frame with a partial checksum.
    fn pending(&mut self) -> Option<(u32, VnetHdr, &[u8])> {
        let p = self.pending?;
        let frame = &mut self.buf[..self.len];
        let tcp = ETH_HEADER_LEN + p.ip_len;
        if p.segments == 1 {
            let hdr = if p.partial {
                VnetHdr {
                    flags: VnetHdr::F_NEEDS_CSUM,
                    hdr_len: (tcp + p.tcp_len) as u16,
                    csum_start: tcp as u16,
                    csum_offset: TCP_CHECKSUM_OFFSET,
                    ..VnetHdr::NONE
                }
            } else {
                VnetHdr::NONE
            };
            return Some((p.endpoint, hdr, frame));
        }
        let ip_total = self.len - ETH_HEADER_LEN;
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_HEADER_LEN..]);
        ip.set_total_len(ip_total as u16);
        ip.fill_checksum();
        // A partial checksum holds the pseudo-header sum, not complemented.
        let pseudo = ip.pseudo_header_sum(ip_total - p.ip_len);
        TcpPacket::new_unchecked(&mut frame[tcp..]).set_checksum(fold(pseudo));
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: (tcp + p.tcp_len) as u16,
            gso_size: p.mss as u16,
            csum_start: tcp as u16,
            csum_offset: TCP_CHECKSUM_OFFSET,
        };
        Some((p.endpoint, hdr, frame))
    }

    /// Forgets the pending frame (after it was written).
    fn clear(&mut self) {
        self.pending = None;
        self.len = 0;
    }

    /// How many segments the pending frame holds (0 when none).
    pub fn pending_segments(&self) -> usize {
        self.pending.map_or(0, |p| p.segments)
    }

    /// Offers `frame` (Ethernet onwards, with its `offload` metadata), bound for the pod
    /// `endpoint`, and calls `write(endpoint, hdr, frame)` for every frame that must go
    /// to a pod now, in order: a held run that `frame` cannot join, then `frame` itself
    /// unless it is held for merging. A frame that already carries offload metadata (a
    /// super-frame, a partial checksum) and anything GRO does not merge go as they are,
    /// after what was held.
    pub fn offer(
        &mut self,
        endpoint: u32,
        frame: &[u8],
        offload: VnetHdr,
        mut write: impl FnMut(u32, VnetHdr, &[u8]),
    ) {
        let partial = offload != VnetHdr::NONE && partial_tcp_checksum(frame, offload);
        if offload != VnetHdr::NONE && !partial {
            self.flush(&mut write);
            return write(endpoint, offload, frame);
        }
        // At most twice round: after a flush nothing is pending, and an empty coalescer
        // either holds the frame or lets it by.
        loop {
            match self.push(endpoint, frame, partial) {
                Push::Held => return,
                Push::FlushFirst => self.flush(&mut write),
                Push::Bypass => {
                    self.flush(&mut write);
                    return write(endpoint, offload, frame);
                }
            }
        }
    }

    /// Writes out the held run, if any, through `write` (as [`Coalescer::offer`] does),
    /// and forgets it. The worker calls it at the end of every receive batch, so nothing
    /// waits for a later packet.
    pub fn flush(&mut self, mut write: impl FnMut(u32, VnetHdr, &[u8])) {
        if let Some((endpoint, hdr, frame)) = self.pending() {
            write(endpoint, hdr, frame);
        }
        self.clear();
    }
}

/// Whether `offload` marks `frame` (Ethernet onwards) as one TCP/IPv4 segment whose only
/// offload is a partial TCP checksum: what a sender on this host hands a virtual link
/// (tapwire's own IPIP segments, see [`SegmentChecksum::Partial`]), which the kernel
/// delivers with the mark kept. Such a segment can join a coalesced run unverified.
fn partial_tcp_checksum(frame: &[u8], offload: VnetHdr) -> bool {
    let tcp_at = frame
        .get(ETH_HEADER_LEN..)
        .and_then(tcp_over_ipv4)
        .map(|(ip, _)| ETH_HEADER_LEN + ip.header_len());
    offload.flags == VnetHdr::F_NEEDS_CSUM
        && !offload.is_gso()
        && offload.csum_offset == TCP_CHECKSUM_OFFSET
        && tcp_at == Some(usize::from(offload.csum_start))
}

/// The addresses and ports of a TCP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
}

/// A TCP/IPv4 frame as coalescing sees it: its views, and what it compares.
struct TcpSegment<'a> {
    ip: Ipv4Packet<&'a [u8]>,
    tcp: TcpPacket<&'a [u8]>,
    key: FlowKey,
    ip_len: usize,
    tcp_len: usize,
    seq: u32,
    flags: u8,
    payload_at: usize,
    payload_len: usize,
}

impl<'a> TcpSegment<'a> {
    fn parse(frame: &'a [u8]) -> Option<TcpSegment<'a>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != ETHERTYPE_IPV4 {
            return None;
        }
        let (ip, tcp) = tcp_over_ipv4(&frame[ETH_HEADER_LEN..])?;
        // Fragments (MF set or a non-zero offset) never merge.
        if ip.is_fragment() {
            return None;
        }
        let (ip_len, tcp_len) = (ip.header_len(), tcp.header_len());
        Some(TcpSegment {
            key: FlowKey {
                src: ip.src(),
                dst: ip.dst(),
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
            },
            ip_len,
            tcp_len,
            seq: tcp.seq_number(),
            flags: tcp.flags(),
            payload_at: ETH_HEADER_LEN + ip_len + tcp_len,
            payload_len: tcp.payload().len(),
            ip,
            tcp,
        })
    }
}

/// Copies `src` to `dst` (equal lengths) and returns the one's-complement sum of `src`
/// added to `initial`, as [`sum_words`] would. The copy is the platform `memcpy` and the
/// sum then reads `dst` while it is still in cache: both run at tens of GB/s, faster than
/// one fused loop that must do both a word at a time.
fn copy_and_sum(dst: &mut [u8], src: &[u8], initial: u32) -> u32 {
    dst.copy_from_slice(src);
    sum_words(dst, initial)
}

/// Whether the TCP checksum of `frame` (Ethernet + IPv4 + TCP) is right.
fn tcp_checksum_ok(frame: &[u8]) -> bool {
    let Some(ip) = frame
        .get(ETH_HEADER_LEN..)
        .and_then(|packet| Ipv4Packet::new_checked(packet).ok())
    else {
        return false;
    };
    let tcp = ip.payload();
    fold(sum_words(tcp, ip.pseudo_header_sum(tcp.len()))) == 0xffff
}

#[cfg(test)]
mod tests;
