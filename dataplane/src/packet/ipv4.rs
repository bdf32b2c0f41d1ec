//! IPv4 (RFC 791): the header view every path validates once, and the header tapwire
//! emits (outer tunnel headers, ICMP errors).

use std::net::Ipv4Addr;

use super::checksum::{checksum, fold, sum_words};
use super::{be16, ipv4_at, put_be16, Malformed};

/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = 20;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    /// Source and destination, the addresses the transport pseudo-header sums.
    pub const ADDRESSES: Range<usize> = 12..20;
    pub const OPTIONS: usize = 20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// IPv4 header view. `new_checked` validates version, IHL and total length against the
/// buffer, so every accessor below is in bounds.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let buf = buffer.as_ref();
        if buf.len() < IPV4_MIN_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        if buf[field::VER_IHL] >> 4 != 4 {
            return Err(Malformed::BadVersion);
        }
        let header_len = usize::from(buf[field::VER_IHL] & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER_LEN || header_len > buf.len() {
            return Err(Malformed::BadHeaderLength);
        }
        let total_len = usize::from(be16(buf, field::TOTAL_LEN));
        if total_len < header_len || total_len > buf.len() {
            return Err(Malformed::BadTotalLength);
        }
        Ok(Self { buffer })
    }

    /// A view over a header this crate has validated (or is building) itself: the caller
    /// guarantees the buffer holds the whole header, and the total length when reading
    /// the payload. Accessors may panic otherwise.
    pub(crate) fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN byte (once the type of service).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::TOTAL_LEN))
    }

    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// The flags and fragment offset word, as on the wire.
    pub fn flags_and_fragment(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    pub fn dont_fragment(&self) -> bool {
        self.flags_and_fragment() & FLAG_DF != 0
    }

    /// True for any fragment but the first (offset > 0): such packets carry no L4 header.
    pub fn is_later_fragment(&self) -> bool {
        self.flags_and_fragment() & FRAG_OFFSET_MASK != 0
    }

    /// True for any fragment (more fragments follow, or an offset > 0).
    pub fn is_fragment(&self) -> bool {
        self.flags_and_fragment() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn src(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SRC.start)
    }

    pub fn dst(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::DST.start)
    }

    /// The options (the header beyond its first 20 bytes).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
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
        header_checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// The transport pseudo-header's sum (addresses, protocol and `l4_len`), not folded:
    /// what a TCP or UDP checksum starts from.
    pub fn pseudo_header_sum(&self, l4_len: usize) -> u32 {
        sum_words(
            &self.buffer.as_ref()[field::ADDRESSES],
            u32::from(self.protocol()) + l4_len as u32,
        )
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// [`Self::payload`], borrowed from the buffer rather than the view: for a view of
    /// the transport header that outlives this one.
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_total_len(&mut self, len: u16) {
        put_be16(self.buffer.as_mut(), field::TOTAL_LEN, len);
    }

    pub fn set_ident(&mut self, ident: u16) {
        put_be16(self.buffer.as_mut(), field::IDENT, ident);
    }

    /// Recomputes the header checksum over the whole header.
    pub fn fill_checksum(&mut self) {
        let header_len = self.header_len();
        let buf = self.buffer.as_mut();
        put_be16(buf, field::CHECKSUM, 0);
        let sum = header_checksum(&buf[..header_len]);
        put_be16(buf, field::CHECKSUM, sum);
    }

    /// Decrements TTL and patches the header checksum incrementally (RFC 1624).
    pub fn decrement_ttl(&mut self) {
        let buf = self.buffer.as_mut();
        buf[field::TTL] = buf[field::TTL].wrapping_sub(1);
        // TTL is the high byte of the 16-bit word at offset 8: it dropped by 0x0100.
        let old = be16(buf, field::CHECKSUM);
        let sum = u32::from(old) + 0x0100;
        let folded = (sum & 0xffff) + (sum >> 16);
        put_be16(buf, field::CHECKSUM, folded as u16);
    }
}

/// The Internet checksum of an IPv4 header. The usual 20 bytes are summed word by word
/// in straight-line code, a fraction of the instructions of the general loop in
/// [`checksum`], which takes the rest: every forwarded packet pays for one or two of these.
fn header_checksum(header: &[u8]) -> u16 {
    match <&[u8; IPV4_MIN_HEADER_LEN]>::try_from(header) {
        Ok(fixed) => {
            let mut sum = 0u32;
            for pair in fixed.chunks_exact(2) {
                sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
            }
            !fold(sum)
        }
        Err(_) => checksum(header),
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
        buf[field::VER_IHL] = 0x45;
        buf[field::DSCP_ECN] = 0;
        put_be16(buf, field::TOTAL_LEN, total as u16);
        put_be16(buf, field::IDENT, 0);
        let flags = if self.dont_fragment { FLAG_DF } else { 0 };
        put_be16(buf, field::FLAGS_FRAG, flags);
        buf[field::TTL] = self.ttl;
        buf[field::PROTOCOL] = self.protocol;
        buf[field::SRC].copy_from_slice(&self.src.octets());
        buf[field::DST].copy_from_slice(&self.dst.octets());
        Ipv4Packet::new_unchecked(&mut buf[..Self::HEADER_LEN]).fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_frames::PING_FRAME;
    use crate::packet::{ETH_HEADER_LEN, IPPROTO_ICMP, IPPROTO_TCP};

    #[test]
    fn ipv4_view_reads_a_captured_header() {
        let ip = Ipv4Packet::new_checked(&PING_FRAME[ETH_HEADER_LEN..]).unwrap();
        assert_eq!(ip.src(), Ipv4Addr::new(10, 65, 0, 2));
        assert_eq!(ip.dst(), Ipv4Addr::new(10, 65, 1, 3));
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), IPPROTO_ICMP);
        assert_eq!(ip.ident(), 0x1c46);
        assert!(ip.dont_fragment());
        assert!(!ip.is_fragment() && !ip.is_later_fragment());
        assert_eq!(ip.total_len(), 84);
        assert_eq!(ip.header_len(), 20);
        assert!(ip.options().is_empty());
        assert_eq!(ip.payload().len(), 64);
        assert!(ip.checksum_ok());
    }

    #[test]
    fn padding_beyond_the_total_length_is_not_payload() {
        let mut padded = PING_FRAME[ETH_HEADER_LEN..].to_vec();
        padded.extend_from_slice(&[0xaa; 6]);
        let ip = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(ip.packet().len(), 84);
        assert_eq!(ip.payload().len(), 64);
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
        assert_eq!(
            Ipv4Packet::new_checked(&ip[..0]).unwrap_err(),
            Malformed::Truncated
        );
        let mut bad = ip.to_vec();
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Malformed::BadHeaderLength
        );
        // A 60-byte header fits the buffer but not the 40-byte total length.
        bad[0] = 0x4f;
        bad[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Malformed::BadTotalLength
        );
        // A 60-byte header beyond a 40-byte buffer.
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..40]).unwrap_err(),
            Malformed::BadHeaderLength
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
    fn header_checksums_with_and_without_options_agree_with_the_general_sum() {
        let mut header = [0u8; 60];
        for (i, b) in header.iter_mut().enumerate() {
            *b = (i * 37 + 11) as u8;
        }
        for len in (20..=60).step_by(4) {
            assert_eq!(
                header_checksum(&header[..len]),
                checksum(&header[..len]),
                "{len}"
            );
        }
        assert_eq!(header_checksum(&[0xff; 20]), checksum(&[0xff; 20]));
    }

    #[test]
    fn fragments_are_told_apart() {
        let mut pkt = PING_FRAME[ETH_HEADER_LEN..].to_vec();
        pkt[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // MF, offset 0
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert!(ip.is_fragment() && !ip.is_later_fragment() && !ip.dont_fragment());
        pkt[6..8].copy_from_slice(&0x0001u16.to_be_bytes()); // offset 8, last
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert!(ip.is_fragment() && ip.is_later_fragment());
    }

    #[test]
    fn emitted_headers_parse_back_and_setters_keep_them_valid() {
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 2),
            protocol: IPPROTO_TCP,
            ttl: 64,
            dont_fragment: true,
            payload_len: 100,
        };
        let mut buf = [0u8; 120];
        repr.emit(&mut buf);
        let mut ip = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert!(ip.checksum_ok());
        assert_eq!(
            (
                ip.src(),
                ip.dst(),
                ip.protocol(),
                ip.ttl(),
                ip.dont_fragment()
            ),
            (repr.src, repr.dst, repr.protocol, repr.ttl, true)
        );
        assert_eq!(ip.total_len(), 120);
        ip.set_total_len(60);
        ip.set_ident(7);
        ip.fill_checksum();
        assert!(ip.checksum_ok());
        assert_eq!((ip.total_len(), ip.ident()), (60, 7));
        // The pseudo-header: 192.168.0.1 + 192.168.0.2 + protocol 6 + length 40.
        let expected: u32 = 0xc0a8 + 0x0001 + 0xc0a8 + 0x0002 + 6 + 40;
        let fold = crate::packet::fold;
        assert_eq!(fold(ip.pseudo_header_sum(40)), fold(expected));
    }
}
