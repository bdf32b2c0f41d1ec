//! UDP (RFC 768): the header tapwire emits in front of VXLAN.

use std::net::Ipv4Addr;

use super::checksum::{fold, sum_words};
use super::{put_be16, IPPROTO_UDP};

pub const UDP_HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Writes a UDP header at the start of `buf` for `payload_len` bytes behind it, with no
/// checksum (0: allowed over IPv4, and what the kernel's VXLAN sends by default).
pub fn emit_udp_header(buf: &mut [u8], ports: (u16, u16), payload_len: usize) {
    put_be16(buf, field::SRC_PORT, ports.0);
    put_be16(buf, field::DST_PORT, ports.1);
    put_be16(buf, field::LENGTH, (UDP_HEADER_LEN + payload_len) as u16);
    put_be16(buf, field::CHECKSUM, 0);
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
    emit_udp_header(buf, ports, payload_len);
    let udp_len = UDP_HEADER_LEN + payload_len;
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = IPPROTO_UDP;
    put_be16(&mut pseudo, 10, udp_len as u16);
    let sum = !fold(sum_words(&buf[..udp_len], sum_words(&pseudo, 0)));
    // A computed 0 is sent as 0xffff: 0 means "no checksum" for UDP over IPv4.
    put_be16(buf, field::CHECKSUM, if sum == 0 { 0xffff } else { sum });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::checksum;

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

    #[test]
    fn a_header_without_checksum() {
        let mut buf = [0xffu8; 8];
        emit_udp_header(&mut buf, (0xc123, 4789), 100);
        assert_eq!(buf, [0xc1, 0x23, 0x12, 0xb5, 0, 108, 0, 0]);
    }
}
