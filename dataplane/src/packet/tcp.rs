//! TCP (RFC 9293) header view: what segmentation and coalescing read and rewrite. The
//! forwarder never terminates TCP, so there is no `Repr`.

use super::ipv4::Ipv4Packet;
use super::{be16, be32, put_be16, Malformed, IPPROTO_TCP, IPPROTO_UDP};

/// Length of a TCP header without options.
pub const TCP_MIN_HEADER_LEN: usize = 20;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

mod field {
    use std::ops::Range;
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    /// Both ports: TCP and UDP alike start with them.
    pub const PORTS: Range<usize> = 0..4;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// Data offset (high nibble), reserved bits and NS (low nibble).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// TCP header view. `new_checked` validates the data offset against the buffer (the
/// segment: TCP header and payload, nothing after), so every accessor is in bounds.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T> {
    buffer: T,
}

/// Offset of the checksum field from the start of the TCP header: what a virtio-net
/// header's `csum_offset` holds for TCP.
pub const TCP_CHECKSUM_OFFSET: u16 = field::CHECKSUM as u16;

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let buf = buffer.as_ref();
        if buf.len() < TCP_MIN_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        let header_len = usize::from(buf[field::DATA_OFFSET] >> 4) * 4;
        if header_len < TCP_MIN_HEADER_LEN || header_len > buf.len() {
            return Err(Malformed::BadDataOffset);
        }
        Ok(Self { buffer })
    }

    /// A view over a header this crate has validated (or is building) itself: the caller
    /// guarantees the buffer holds the whole header. Accessors may panic otherwise.
    pub(crate) fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes, options included (the data offset).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The three reserved bits and NS, the low nibble of the data offset byte.
    pub fn reserved_and_ns(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFFSET] & 0x0f
    }

    /// CWR, ECE, URG, ACK, PSH, RST, SYN and FIN (the `TCP_*` bits).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent_pointer(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_seq_number(&mut self, seq: u32) {
        let at = field::SEQ;
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    pub fn set_checksum(&mut self, sum: u16) {
        put_be16(self.buffer.as_mut(), field::CHECKSUM, sum);
    }
}

/// Transport ports of a TCP or UDP packet, when the packet carries them (not a later
/// fragment, at least the four bytes of ports present).
pub fn transport_ports(ip: &Ipv4Packet<&[u8]>) -> Option<(u16, u16)> {
    if ip.is_later_fragment() || !matches!(ip.protocol(), IPPROTO_TCP | IPPROTO_UDP) {
        return None;
    }
    let ports = ip.payload().get(field::PORTS)?;
    Some((be16(ports, field::SRC_PORT), be16(ports, field::DST_PORT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP header as Linux sends it mid-stream (40000 → 5201, PSH|ACK, a timestamp
    /// option) followed by 4 payload bytes.
    const SEGMENT: [u8; 36] = [
        0x9c, 0x40, 0x14, 0x51, // ports
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x4d, // ack
        0x80, 0x18, 0x02, 0x00, // data offset 8 words, PSH|ACK, window 512
        0xab, 0xcd, 0x00, 0x00, // checksum, urgent
        0x01, 0x01, 0x08, 0x0a, 0, 0, 0, 9, 0, 0, 0, 7, // NOP NOP timestamps
        b'd', b'a', b't', b'a',
    ];

    #[test]
    fn reads_every_field() {
        let tcp = TcpPacket::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (40000, 5201));
        assert_eq!(tcp.seq_number(), 0x1234_5678);
        assert_eq!(tcp.ack_number(), 77);
        assert_eq!(tcp.header_len(), 32);
        assert_eq!(tcp.reserved_and_ns(), 0);
        assert_eq!(tcp.flags(), TCP_PSH | TCP_ACK);
        assert_eq!(tcp.window(), 512);
        assert_eq!(tcp.checksum(), 0xabcd);
        assert_eq!(tcp.urgent_pointer(), 0);
        assert_eq!(tcp.options().len(), 12);
        assert_eq!(tcp.header().len(), 32);
        assert_eq!(tcp.payload(), b"data");
    }

    #[test]
    fn truncated_and_bad_offsets_are_refused() {
        assert_eq!(
            TcpPacket::new_checked(&SEGMENT[..19]).unwrap_err(),
            Malformed::Truncated
        );
        // The options run past the buffer.
        assert_eq!(
            TcpPacket::new_checked(&SEGMENT[..31]).unwrap_err(),
            Malformed::BadDataOffset
        );
        // Exactly the header: no payload.
        assert!(TcpPacket::new_checked(&SEGMENT[..32])
            .unwrap()
            .payload()
            .is_empty());
        let mut bad = SEGMENT;
        for offset in 0..5u8 {
            bad[12] = offset << 4;
            assert_eq!(
                TcpPacket::new_checked(&bad[..]).unwrap_err(),
                Malformed::BadDataOffset
            );
        }
        bad[12] = 0xf0; // 60 bytes of header in 36
        assert_eq!(
            TcpPacket::new_checked(&bad[..]).unwrap_err(),
            Malformed::BadDataOffset
        );
    }

    #[test]
    fn setters_write_their_fields_only() {
        let mut seg = SEGMENT;
        let mut tcp = TcpPacket::new_checked(&mut seg[..]).unwrap();
        tcp.set_seq_number(0xffff_fff0);
        tcp.set_flags(TCP_ACK | TCP_FIN);
        tcp.set_checksum(0x1111);
        assert_eq!(tcp.seq_number(), 0xffff_fff0);
        assert_eq!(tcp.flags(), TCP_ACK | TCP_FIN);
        assert_eq!(tcp.checksum(), 0x1111);
        let changed: Vec<usize> = (0..SEGMENT.len())
            .filter(|&i| seg[i] != SEGMENT[i])
            .collect();
        assert_eq!(changed, vec![4, 5, 6, 7, 13, 16, 17]);
    }

    #[test]
    fn ports_of_tcp_and_udp_but_not_of_later_fragments() {
        use crate::packet::{Ipv4Repr, IPPROTO_ICMP};
        let mut pkt = [0u8; 24];
        let emit = |pkt: &mut [u8; 24], protocol| {
            Ipv4Repr {
                src: [10, 0, 0, 1].into(),
                dst: [10, 0, 0, 2].into(),
                protocol,
                ttl: 64,
                dont_fragment: false,
                payload_len: 4,
            }
            .emit(&mut pkt[..]);
            pkt[20..24].copy_from_slice(&SEGMENT[..4]);
        };
        emit(&mut pkt, IPPROTO_UDP);
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(transport_ports(&ip), Some((40000, 5201)));
        emit(&mut pkt, IPPROTO_ICMP);
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(transport_ports(&ip), None);
        emit(&mut pkt, IPPROTO_TCP);
        pkt[7] = 1; // fragment offset 8
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(transport_ports(&ip), None);
        // Three bytes of ports.
        emit(&mut pkt, IPPROTO_TCP);
        let ip = Ipv4Packet::new_checked(&pkt[..23]);
        assert!(ip.is_err(), "total length 24 beyond 23 bytes");
        pkt[3] = 23;
        let ip = Ipv4Packet::new_checked(&pkt[..23]).unwrap();
        assert_eq!(transport_ports(&ip), None);
    }
}
