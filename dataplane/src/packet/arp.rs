//! ARP over Ethernet/IPv4 (RFC 826), the only kind pods send.

use std::net::Ipv4Addr;

use super::{be16, ipv4_at, mac_at, put_be16, Mac, Malformed, ETHERTYPE_IPV4};

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_IPV4_LEN: usize = 28;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
const HTYPE_ETHERNET: u16 = 1;

mod field {
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

/// ARP packet view.
#[derive(Debug)]
pub struct ArpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Accepts only Ethernet/IPv4 ARP requests and replies.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let buf = buffer.as_ref();
        if buf.len() < ARP_IPV4_LEN {
            return Err(Malformed::Truncated);
        }
        let oper = be16(buf, field::OPER);
        if be16(buf, field::HTYPE) != HTYPE_ETHERNET
            || be16(buf, field::PTYPE) != ETHERTYPE_IPV4
            || buf[field::HLEN] != 6
            || buf[field::PLEN] != 4
            || !(oper == ARP_REQUEST || oper == ARP_REPLY)
        {
            return Err(Malformed::BadArp);
        }
        Ok(Self { buffer })
    }

    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    pub fn sender_mac(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::SHA)
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SPA)
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::TPA)
    }
}

/// Writes a 28-byte Ethernet/IPv4 ARP packet at the start of `buf`.
pub fn emit_arp(buf: &mut [u8], operation: u16, sender: (Mac, Ipv4Addr), target: (Mac, Ipv4Addr)) {
    put_be16(buf, field::HTYPE, HTYPE_ETHERNET);
    put_be16(buf, field::PTYPE, ETHERTYPE_IPV4);
    buf[field::HLEN] = 6;
    buf[field::PLEN] = 4;
    put_be16(buf, field::OPER, operation);
    buf[field::SHA..field::SHA + 6].copy_from_slice(&sender.0);
    buf[field::SPA..field::SPA + 4].copy_from_slice(&sender.1.octets());
    buf[field::THA..field::THA + 6].copy_from_slice(&target.0);
    buf[field::TPA..field::TPA + 4].copy_from_slice(&target.1.octets());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::POD_GATEWAY;

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
    fn only_requests_and_replies_are_accepted() {
        let mut buf = [0u8; ARP_IPV4_LEN];
        emit_arp(&mut buf, 3, ([2; 6], POD_GATEWAY), ([0; 6], POD_GATEWAY));
        assert_eq!(
            ArpPacket::new_checked(&buf[..]).unwrap_err(),
            Malformed::BadArp
        );
        emit_arp(
            &mut buf,
            ARP_REPLY,
            ([2; 6], POD_GATEWAY),
            ([0; 6], POD_GATEWAY),
        );
        assert_eq!(
            ArpPacket::new_checked(&buf[..]).unwrap().operation(),
            ARP_REPLY
        );
        buf[1] = 6; // IEEE 802 hardware type
        assert_eq!(
            ArpPacket::new_checked(&buf[..]).unwrap_err(),
            Malformed::BadArp
        );
    }
}
