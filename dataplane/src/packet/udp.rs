//! UDP (RFC 768): the header tapwire emits in front of VXLAN.

use super::put_be16;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_without_checksum() {
        let mut buf = [0xffu8; 8];
        emit_udp_header(&mut buf, (0xc123, 4789), 100);
        assert_eq!(buf, [0xc1, 0x23, 0x12, 0xb5, 0, 108, 0, 0]);
    }
}
