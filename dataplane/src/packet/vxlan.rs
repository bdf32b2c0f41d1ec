//! VXLAN (RFC 7348): the 8-byte header, flags with the I bit and a 24-bit VNI.

use super::{be32, Malformed};

pub const VXLAN_HEADER_LEN: usize = 8;

mod field {
    pub const FLAGS: usize = 0;
    pub const VNI: usize = 4;
    pub const PAYLOAD: usize = 8;
}

/// The I flag: the VNI is valid.
const FLAG_VNI: u8 = 0x08;

/// VXLAN header view; `new_checked` also requires the I flag.
#[derive(Debug)]
pub struct VxlanHeader<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let buf = buffer.as_ref();
        if buf.len() < VXLAN_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        if buf[field::FLAGS] & FLAG_VNI == 0 {
            return Err(Malformed::BadVxlanFlags);
        }
        Ok(Self { buffer })
    }

    pub fn vni(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VNI) >> 8
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

/// Writes a VXLAN header with the I flag and `vni` at the start of `buf`.
pub fn emit_vxlan(buf: &mut [u8], vni: u32) {
    buf[field::FLAGS..field::VNI].copy_from_slice(&[FLAG_VNI, 0, 0, 0]);
    buf[field::VNI..field::PAYLOAD].copy_from_slice(&(vni << 8).to_be_bytes());
}

/// The VNI of a VXLAN header, or `None` if the buffer is short or the I flag is clear.
pub fn parse_vxlan(buf: &[u8]) -> Option<u32> {
    VxlanHeader::new_checked(buf).ok().map(|h| h.vni())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_header_round_trip() {
        let mut buf = [0u8; 8];
        emit_vxlan(&mut buf, 4096);
        assert_eq!(buf, [0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0x00]);
        assert_eq!(parse_vxlan(&buf), Some(4096));
        assert_eq!(
            VxlanHeader::new_checked(&buf[..7]).unwrap_err(),
            Malformed::Truncated
        );
        assert!(VxlanHeader::new_checked(&buf[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn the_i_flag_is_required_and_reserved_bits_are_ignored() {
        let mut buf = [0u8; 8];
        emit_vxlan(&mut buf, 0xff_ffff);
        buf[7] = 0x5a; // the reserved byte after the VNI
        assert_eq!(parse_vxlan(&buf), Some(0xff_ffff));
        buf[0] = 0x00;
        assert_eq!(
            VxlanHeader::new_checked(&buf[..]).unwrap_err(),
            Malformed::BadVxlanFlags
        );
    }
}
