//! Ethernet II header.

use super::{be16, mac_at, put_be16, Mac, Malformed};

pub const ETH_HEADER_LEN: usize = 14;

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// Ethernet II header view.
#[derive(Debug)]
pub struct EthernetFrame<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < ETH_HEADER_LEN {
            return Err(Malformed::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn dst(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::DST.start)
    }

    pub fn src(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::SRC.start)
    }

    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    pub fn set_src(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        put_be16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// Writes an Ethernet header at the start of `buf` (which must hold 14 bytes).
pub fn emit_ethernet(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[field::DST].copy_from_slice(&dst);
    buf[field::SRC].copy_from_slice(&src);
    put_be16(buf, field::ETHERTYPE, ethertype);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_frames::PING_FRAME;
    use crate::packet::{ETHERTYPE_IPV4, GATEWAY_MAC};

    #[test]
    fn reads_a_captured_header_and_refuses_a_short_one() {
        let eth = EthernetFrame::new_checked(&PING_FRAME[..]).unwrap();
        assert_eq!(eth.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(eth.dst(), GATEWAY_MAC);
        assert_eq!(eth.src(), [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(eth.payload().len(), 84);
        assert_eq!(
            EthernetFrame::new_checked(&PING_FRAME[..13]).unwrap_err(),
            Malformed::Truncated
        );
        assert!(EthernetFrame::new_checked(&PING_FRAME[..14])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn emit_then_view_round_trips() {
        let mut buf = [0u8; ETH_HEADER_LEN];
        emit_ethernet(&mut buf, [1; 6], [2; 6], 0x86dd);
        let mut eth = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        assert_eq!(
            (eth.dst(), eth.src(), eth.ethertype()),
            ([1; 6], [2; 6], 0x86dd)
        );
        eth.set_dst([3; 6]);
        eth.set_src([4; 6]);
        eth.set_ethertype(ETHERTYPE_IPV4);
        assert_eq!(&buf[..12], &[3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4]);
        assert_eq!(&buf[12..], &[8, 0]);
    }
}
