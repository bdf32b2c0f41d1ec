//! Checked views over the frames the forwarder touches, and the few emitters it needs.
//!
//! The hot path rewrites frames in place, so the views here are thin: a `new_checked`
//! constructor validates lengths once, after which no accessor can panic. Field offsets
//! live in private `field` modules. Nothing here allocates or performs I/O.

use std::net::Ipv4Addr;

/// A MAC address.
pub type Mac = [u8; 6];

/// The MAC address the forwarder answers ARP with: Calico's `ee:ee:ee:ee:ee:ee`.
pub const GATEWAY_MAC: Mac = [0xee; 6];
/// The link-local gateway every pod routes through.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The broadcast MAC.
pub const BROADCAST_MAC: Mac = [0xff; 6];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const ETH_HEADER_LEN: usize = 14;
pub const IPV4_MIN_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;
pub const VXLAN_HEADER_LEN: usize = 8;
pub const ARP_IPV4_LEN: usize = 28;

/// Reads a big-endian u16 at `at`; callers guarantee `at + 2 <= buf.len()`.
#[inline]
pub(crate) fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline]
pub(crate) fn put_be16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
fn ipv4_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

/// Why a frame could not be viewed as the protocol asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The buffer is shorter than the fixed header.
    #[error("truncated header")]
    Truncated,
    /// The IPv4 version nibble is not 4.
    #[error("not IPv4")]
    BadVersion,
    /// The IPv4 header length field is below 5 words or beyond the buffer.
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    /// The IPv4 total length is shorter than the header or longer than the buffer.
    #[error("bad IPv4 total length")]
    BadTotalLength,
    /// The ARP packet is not Ethernet/IPv4 or not a request/reply.
    #[error("unsupported ARP")]
    BadArp,
}

/// Ethernet II header view.
#[derive(Debug)]
pub struct EthernetFrame<T> {
    buffer: T,
}

mod eth_field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < ETH_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn dst(&self) -> Mac {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[eth_field::DST]);
        mac
    }

    pub fn src(&self) -> Mac {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[eth_field::SRC]);
        mac
    }

    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), eth_field::ETHERTYPE)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[eth_field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: Mac) {
        self.buffer.as_mut()[eth_field::DST].copy_from_slice(&mac);
    }

    pub fn set_src(&mut self, mac: Mac) {
        self.buffer.as_mut()[eth_field::SRC].copy_from_slice(&mac);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        put_be16(self.buffer.as_mut(), eth_field::ETHERTYPE, ethertype);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[eth_field::PAYLOAD..]
    }
}

/// Writes an Ethernet header at the start of `buf` (which must hold 14 bytes).
pub fn emit_ethernet(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[eth_field::DST].copy_from_slice(&dst);
    buf[eth_field::SRC].copy_from_slice(&src);
    put_be16(buf, eth_field::ETHERTYPE, ethertype);
}

/// ARP over Ethernet/IPv4 (RFC 826), the only kind pods send.
#[derive(Debug)]
pub struct ArpPacket<T> {
    buffer: T,
}

mod arp_field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Accepts only Ethernet/IPv4 ARP requests and replies.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let buf = buffer.as_ref();
        if buf.len() < ARP_IPV4_LEN {
            return Err(Malformed::Truncated);
        }
        let oper = be16(buf, arp_field::OPER);
        if be16(buf, arp_field::HTYPE) != 1
            || be16(buf, arp_field::PTYPE) != ETHERTYPE_IPV4
            || buf[arp_field::HLEN] != 6
            || buf[arp_field::PLEN] != 4
            || !(oper == ARP_REQUEST || oper == ARP_REPLY)
        {
            return Err(Malformed::BadArp);
        }
        Ok(Self { buffer })
    }

    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), arp_field::OPER)
    }

    pub fn sender_mac(&self) -> Mac {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[arp_field::SHA..arp_field::SHA + 6]);
        mac
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), arp_field::SPA)
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), arp_field::TPA)
    }
}

/// Writes a 28-byte Ethernet/IPv4 ARP packet at the start of `buf`.
pub fn emit_arp(buf: &mut [u8], operation: u16, sender: (Mac, Ipv4Addr), target: (Mac, Ipv4Addr)) {
    put_be16(buf, arp_field::HTYPE, 1);
    put_be16(buf, arp_field::PTYPE, ETHERTYPE_IPV4);
    buf[arp_field::HLEN] = 6;
    buf[arp_field::PLEN] = 4;
    put_be16(buf, arp_field::OPER, operation);
    buf[arp_field::SHA..arp_field::SHA + 6].copy_from_slice(&sender.0);
    buf[arp_field::SPA..arp_field::SPA + 4].copy_from_slice(&sender.1.octets());
    buf[arp_field::THA..arp_field::THA + 6].copy_from_slice(&target.0);
    buf[arp_field::TPA..arp_field::TPA + 4].copy_from_slice(&target.1.octets());
}

/// IPv4 header view. `new_checked` validates version, IHL and total length against the
/// buffer, so every accessor below is in bounds.
#[derive(Debug)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

mod ip_field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const IPV4_FLAG_DF: u16 = 0x4000;
const IPV4_FLAG_MF: u16 = 0x2000;
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let buf = buffer.as_ref();
        if buf.len() < IPV4_MIN_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        if buf[ip_field::VER_IHL] >> 4 != 4 {
            return Err(Malformed::BadVersion);
        }
        let header_len = usize::from(buf[ip_field::VER_IHL] & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER_LEN || header_len > buf.len() {
            return Err(Malformed::BadHeaderLength);
        }
        let total_len = usize::from(be16(buf, ip_field::TOTAL_LEN));
        if total_len < header_len || total_len > buf.len() {
            return Err(Malformed::BadTotalLength);
        }
        Ok(Self { buffer })
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[ip_field::VER_IHL] & 0x0f) * 4
    }

    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), ip_field::TOTAL_LEN))
    }

    pub fn dont_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), ip_field::FLAGS_FRAG) & IPV4_FLAG_DF != 0
    }

    /// True for any fragment but the first (offset > 0): such packets carry no L4 header.
    pub fn is_later_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), ip_field::FLAGS_FRAG) & IPV4_FRAG_OFFSET_MASK != 0
    }

    pub fn is_fragment(&self) -> bool {
        let flags = be16(self.buffer.as_ref(), ip_field::FLAGS_FRAG);
        flags & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[ip_field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[ip_field::PROTOCOL]
    }

    pub fn src(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), ip_field::SRC)
    }

    pub fn dst(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), ip_field::DST)
    }

    /// The whole packet up to its total length (a frame may carry Ethernet padding).
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len()]
    }

    /// The transport payload (after the header, up to the total length).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }

    /// Checks the header checksum.
    pub fn checksum_ok(&self) -> bool {
        checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Decrements TTL and patches the header checksum incrementally (RFC 1624).
    pub fn decrement_ttl(&mut self) {
        let buf = self.buffer.as_mut();
        buf[ip_field::TTL] = buf[ip_field::TTL].wrapping_sub(1);
        // TTL is the high byte of the 16-bit word at offset 8: it dropped by 0x0100.
        let old = be16(buf, ip_field::CHECKSUM);
        let sum = u32::from(old) + 0x0100;
        let folded = (sum & 0xffff) + (sum >> 16);
        put_be16(buf, ip_field::CHECKSUM, folded as u16);
    }
}

/// Fields of an IPv4 header tapwire emits (outer tunnel headers and ICMP errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub dont_fragment: bool,
    /// Length of everything after the 20-byte header.
    pub payload_len: usize,
}

impl Ipv4Repr {
    pub const HEADER_LEN: usize = IPV4_MIN_HEADER_LEN;

    /// Writes a 20-byte header with a correct checksum at the start of `buf`.
    /// The identification field is 0; with DF set that is what Linux sends too.
    pub fn emit(&self, buf: &mut [u8]) {
        let total = (Self::HEADER_LEN + self.payload_len).min(usize::from(u16::MAX));
        buf[0] = 0x45;
        buf[1] = 0;
        put_be16(buf, ip_field::TOTAL_LEN, total as u16);
        put_be16(buf, 4, 0);
        put_be16(
            buf,
            ip_field::FLAGS_FRAG,
            if self.dont_fragment { IPV4_FLAG_DF } else { 0 },
        );
        buf[ip_field::TTL] = self.ttl;
        buf[ip_field::PROTOCOL] = self.protocol;
        put_be16(buf, ip_field::CHECKSUM, 0);
        buf[ip_field::SRC..ip_field::SRC + 4].copy_from_slice(&self.src.octets());
        buf[ip_field::DST..ip_field::DST + 4].copy_from_slice(&self.dst.octets());
        let sum = checksum(&buf[..Self::HEADER_LEN]);
        put_be16(buf, ip_field::CHECKSUM, sum);
    }
}

/// The Internet checksum (RFC 1071) of `data`: 0 when `data` already holds a valid one.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// One's-complement sum of `data` as big-endian 16-bit words, plus `initial`, folded to
/// 32 bits (equal to the word-by-word sum once [`fold`]ed).
///
/// The bulk is summed as native-endian 64-bit words in four independent accumulators with
/// end-around carry, then folded and byte-swapped once: one's-complement addition does not
/// depend on byte order (RFC 1071 §2(B)), so this equals the big-endian word sum, at
/// several bytes per cycle instead of two.
pub fn sum_words(data: &[u8], initial: u32) -> u32 {
    const BLOCK: usize = 32;
    let mut acc = [0u64; 4];
    let mut blocks = data.chunks_exact(BLOCK);
    for block in &mut blocks {
        for (lane, word) in acc.iter_mut().zip(block.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let (sum, carry) = lane.overflowing_add(u64::from_ne_bytes(bytes));
            // End-around carry: after an overflow `sum` is below u64::MAX, so +1 fits.
            *lane = sum + u64::from(carry);
        }
    }
    let mut total = 0u64;
    for lane in acc {
        let (sum, carry) = total.overflowing_add(lane);
        total = sum + u64::from(carry);
    }
    let native = fold(fold_64(total));
    let bulk = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    // The bulk has an even length, so the rest keeps its big-endian word pairing.
    sum_words_serial(blocks.remainder(), u64::from(initial) + u64::from(bulk))
}

/// Folds a 64-bit one's-complement sum to 32 bits.
fn fold_64(mut sum: u64) -> u32 {
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// [`sum_words`] for short data: big-endian words one by one.
fn sum_words_serial(data: &[u8], initial: u64) -> u32 {
    let mut sum = initial;
    let mut pairs = data.chunks_exact(2);
    for pair in &mut pairs {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold_64(sum)
}

/// Folds a one's-complement sum to 16 bits (not complemented).
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Transport ports of a TCP or UDP packet, when the packet carries them.
pub fn transport_ports(ip: &Ipv4Packet<&[u8]>) -> Option<(u16, u16)> {
    if ip.is_later_fragment() || !matches!(ip.protocol(), IPPROTO_TCP | IPPROTO_UDP) {
        return None;
    }
    let l4 = ip.payload();
    (l4.len() >= 4).then(|| (be16(l4, 0), be16(l4, 2)))
}

/// ICMP messages the forwarder originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 3 code 0: no route to the destination network.
    NetUnreachable,
    /// Type 3 code 4 with the next-hop MTU.
    FragmentationNeeded { mtu: u16 },
    /// Type 11 code 0: TTL reached zero in transit.
    TimeExceeded,
}

impl IcmpError {
    fn type_code(self) -> (u8, u8) {
        match self {
            IcmpError::NetUnreachable => (3, 0),
            IcmpError::FragmentationNeeded { .. } => (3, 4),
            IcmpError::TimeExceeded => (11, 0),
        }
    }
}

/// How much of the offending packet an ICMP error quotes: its header plus 8 bytes (RFC 792).
const ICMP_QUOTE_EXTRA: usize = 8;
const ICMP_HEADER_LEN: usize = 8;

/// Builds `Ethernet | IPv4 | ICMP error quoting `offender`` into `out`, addressed back to
/// the offender's source. Returns the frame length, or `None` when RFC 1122 says no error
/// may be sent (the offender is an ICMP error itself, a later fragment, or has a
/// broadcast/multicast address) or `out` is too small.
pub fn emit_icmp_error(
    out: &mut [u8],
    eth: (Mac, Mac),
    from: Ipv4Addr,
    offender: &Ipv4Packet<&[u8]>,
    kind: IcmpError,
) -> Option<usize> {
    let (src, dst) = (offender.src(), offender.dst());
    if offender.is_later_fragment()
        || src.is_broadcast()
        || src.is_multicast()
        || src.is_unspecified()
        || dst.is_broadcast()
        || dst.is_multicast()
    {
        return None;
    }
    if offender.protocol() == IPPROTO_ICMP {
        // Never answer an ICMP error with an error; queries (echo) are fine.
        let icmp_type = offender.payload().first().copied()?;
        if !matches!(icmp_type, 0 | 8 | 13 | 14 | 17 | 18) {
            return None;
        }
    }
    let quote_len = (offender.header_len() + ICMP_QUOTE_EXTRA).min(offender.total_len());
    let quote = &offender.packet()[..quote_len];
    let icmp_len = ICMP_HEADER_LEN + quote.len();
    let frame_len = ETH_HEADER_LEN + Ipv4Repr::HEADER_LEN + icmp_len;
    if out.len() < frame_len {
        return None;
    }
    emit_ethernet(out, eth.0, eth.1, ETHERTYPE_IPV4);
    let ip = Ipv4Repr {
        src: from,
        dst: src,
        protocol: IPPROTO_ICMP,
        ttl: 64,
        dont_fragment: false,
        payload_len: icmp_len,
    };
    ip.emit(&mut out[ETH_HEADER_LEN..]);
    let icmp = &mut out[ETH_HEADER_LEN + Ipv4Repr::HEADER_LEN..frame_len];
    let (icmp_type, code) = kind.type_code();
    icmp[0] = icmp_type;
    icmp[1] = code;
    put_be16(icmp, 2, 0);
    let rest = match kind {
        IcmpError::FragmentationNeeded { mtu } => u32::from(mtu),
        _ => 0,
    };
    icmp[4..8].copy_from_slice(&rest.to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(quote);
    let sum = checksum(icmp);
    put_be16(icmp, 2, sum);
    Some(frame_len)
}

/// The 8-byte VXLAN header (RFC 7348): flags with the I bit, 24-bit VNI.
pub fn emit_vxlan(buf: &mut [u8], vni: u32) {
    buf[..4].copy_from_slice(&[0x08, 0, 0, 0]);
    buf[4..8].copy_from_slice(&(vni << 8).to_be_bytes());
}

/// The VNI of a VXLAN header, or `None` if the buffer is short or the I flag is clear.
pub fn parse_vxlan(buf: &[u8]) -> Option<u32> {
    let header = buf.get(..VXLAN_HEADER_LEN)?;
    if header[0] & 0x08 == 0 {
        return None;
    }
    Some(u32::from_be_bytes([header[4], header[5], header[6], header[7]]) >> 8)
}

/// Writes a UDP header over IPv4 at the start of `buf` (followed by `payload_len` bytes
/// already in place) with its checksum computed over the pseudo-header.
pub fn emit_udp(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    payload_len: usize,
) {
    let udp_len = UDP_HEADER_LEN + payload_len;
    put_be16(buf, 0, ports.0);
    put_be16(buf, 2, ports.1);
    put_be16(buf, 4, udp_len as u16);
    put_be16(buf, 6, 0);
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = IPPROTO_UDP;
    put_be16(&mut pseudo, 10, udp_len as u16);
    let sum = !fold(sum_words(&buf[..udp_len], sum_words(&pseudo, 0)));
    // A computed 0 is sent as 0xffff: 0 means "no checksum" for UDP over IPv4.
    put_be16(buf, 6, if sum == 0 { 0xffff } else { sum });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers of an ICMP echo request from 10.65.0.2 to 10.65.1.3 in the shape ping sends
    /// (DF, TTL 64, 84-byte total length), Ethernet header included; payload zeroed.
    const PING_FRAME: [u8; 98] = {
        let mut f = [0u8; 98];
        let head: [u8; 34] = [
            0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x08, 0xdd, 0x0a, 0x41,
            0x00, 0x02, 0x0a, 0x41, 0x01, 0x03,
        ];
        let mut i = 0;
        while i < head.len() {
            f[i] = head[i];
            i += 1;
        }
        f[34] = 8; // echo request
        f
    };

    #[test]
    fn ipv4_view_reads_a_captured_header() {
        let eth = EthernetFrame::new_checked(&PING_FRAME[..]).unwrap();
        assert_eq!(eth.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(eth.dst(), GATEWAY_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src(), Ipv4Addr::new(10, 65, 0, 2));
        assert_eq!(ip.dst(), Ipv4Addr::new(10, 65, 1, 3));
        assert_eq!(ip.ttl(), 64);
        assert!(ip.dont_fragment());
        assert_eq!(ip.total_len(), 84);
        assert!(ip.checksum_ok());
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut frame = PING_FRAME;
        let mut ip = Ipv4Packet::new_checked(&mut frame[ETH_HEADER_LEN..]).unwrap();
        for expected in (1..64).rev() {
            ip.decrement_ttl();
            assert_eq!(ip.ttl(), expected);
            assert!(ip.checksum_ok(), "checksum broken at ttl {expected}");
        }
    }

    #[test]
    fn malformed_ipv4_headers_are_rejected() {
        let ip = &PING_FRAME[ETH_HEADER_LEN..];
        assert_eq!(
            Ipv4Packet::new_checked(&ip[..19]).unwrap_err(),
            Malformed::Truncated
        );
        let mut bad = ip.to_vec();
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Malformed::BadHeaderLength
        );
        bad[0] = 0x4f; // 60-byte header, fine for the buffer but beyond total length 84? no: 60 < 84
        bad[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Malformed::BadTotalLength
        );
        bad[0] = 0x45;
        bad[2..4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Malformed::BadTotalLength
        );
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Malformed::BadVersion
        );
    }

    #[test]
    fn arp_round_trip() {
        let mut buf = [0u8; ARP_IPV4_LEN];
        let pod_mac = [2, 0, 0, 0, 0, 1];
        emit_arp(
            &mut buf,
            ARP_REQUEST,
            (pod_mac, Ipv4Addr::new(10, 65, 0, 2)),
            ([0; 6], POD_GATEWAY),
        );
        let arp = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(arp.operation(), ARP_REQUEST);
        assert_eq!(arp.sender_mac(), pod_mac);
        assert_eq!(arp.sender_ip(), Ipv4Addr::new(10, 65, 0, 2));
        assert_eq!(arp.target_ip(), POD_GATEWAY);
        buf[5] = 16; // IPv6-sized protocol address: not ours
        assert_eq!(
            ArpPacket::new_checked(&buf[..]).unwrap_err(),
            Malformed::BadArp
        );
        assert_eq!(
            ArpPacket::new_checked(&buf[..27]).unwrap_err(),
            Malformed::Truncated
        );
    }

    #[test]
    fn icmp_error_quotes_the_offender_and_checks_out() {
        let ip = Ipv4Packet::new_checked(&PING_FRAME[ETH_HEADER_LEN..]).unwrap();
        let mut out = [0u8; 128];
        let len = emit_icmp_error(
            &mut out,
            ([2, 0, 0, 0, 0, 1], GATEWAY_MAC),
            Ipv4Addr::new(192, 168, 0, 1),
            &ip,
            IcmpError::FragmentationNeeded { mtu: 1450 },
        )
        .unwrap();
        assert_eq!(len, 14 + 20 + 8 + 28);
        let reply = Ipv4Packet::new_checked(&out[ETH_HEADER_LEN..len]).unwrap();
        assert!(reply.checksum_ok());
        assert_eq!(reply.dst(), Ipv4Addr::new(10, 65, 0, 2));
        let icmp = reply.payload();
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450);
        assert_eq!(checksum(icmp), 0);
        assert_eq!(&icmp[8..], &PING_FRAME[ETH_HEADER_LEN..ETH_HEADER_LEN + 28]);
    }

    #[test]
    fn no_icmp_error_about_an_icmp_error() {
        let mut frame = PING_FRAME;
        frame[34] = 3; // destination unreachable
        let ip = Ipv4Packet::new_checked(&frame[ETH_HEADER_LEN..]).unwrap();
        let mut out = [0u8; 128];
        let from = Ipv4Addr::new(192, 168, 0, 1);
        let eth = ([0; 6], GATEWAY_MAC);
        assert_eq!(
            emit_icmp_error(&mut out, eth, from, &ip, IcmpError::TimeExceeded),
            None
        );
    }

    #[test]
    fn udp_checksum_verifies() {
        let mut buf = [0u8; 8 + 5];
        buf[8..].copy_from_slice(b"hello");
        let (src, dst) = (Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 2));
        emit_udp(&mut buf, src, dst, (40000, 4789), 5);
        let mut pseudo = Vec::from(&src.octets()[..]);
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, IPPROTO_UDP, 0, 13]);
        pseudo.extend_from_slice(&buf);
        assert_eq!(checksum(&pseudo), 0);
    }

    fn naive_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for (i, b) in data.iter().enumerate() {
            sum += if i % 2 == 0 {
                u32::from(*b) << 8
            } else {
                u32::from(*b)
            };
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    proptest::proptest! {
        #[test]
        fn checksum_matches_the_rfc1071_definition(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            proptest::prop_assert_eq!(checksum(&data), naive_checksum(&data));
        }

        #[test]
        fn sums_continue_from_any_initial_value(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            initial in proptest::prelude::any::<u32>(),
        ) {
            // The reference: 16-bit big-endian words added to `initial` one at a time.
            let mut reference = u64::from(initial);
            for (i, b) in data.iter().enumerate() {
                reference += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
            }
            while reference >> 16 != 0 {
                reference = (reference & 0xffff) + (reference >> 16);
            }
            proptest::prop_assert_eq!(u64::from(fold(sum_words(&data, initial))), reference);
        }
    }

    #[test]
    fn vxlan_header_round_trip() {
        let mut buf = [0u8; 8];
        emit_vxlan(&mut buf, 4096);
        assert_eq!(buf, [0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0x00]);
        assert_eq!(parse_vxlan(&buf), Some(4096));
        assert_eq!(parse_vxlan(&buf[..7]), None);
    }
}
