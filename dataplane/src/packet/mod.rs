//! The frames the forwarder touches: one file per format, each a zero-copy view and the
//! few emitters the forwarder needs (smoltcp's `wire` pattern).
//!
//! The hot path rewrites frames in place, so the views are thin: `new_checked` validates
//! lengths once, after which no accessor can panic. Each format declares its field
//! offsets once, in its own `field` module. Nothing here allocates or performs I/O.
//!
//! - [`ethernet`]: Ethernet II header.
//! - [`arp`]: ARP over Ethernet/IPv4 (proxy-ARP and the underlay resolver).
//! - [`ipv4`]: the IPv4 header view and the header tapwire emits.
//! - [`tcp`]: the TCP header view (offloads: segmentation, coalescing).
//! - [`udp`]: the UDP header tapwire emits in front of VXLAN.
//! - [`vxlan`]: the VXLAN header.
//! - [`icmp`]: the ICMP errors the forwarder originates.
//! - [`checksum`](mod@checksum): the Internet checksum.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;
pub mod vxlan;

use std::net::Ipv4Addr;

pub use arp::{emit_arp, ArpPacket, ARP_IPV4_LEN, ARP_REPLY, ARP_REQUEST};
pub use checksum::{checksum, fold, sum_words};
pub use ethernet::{emit_ethernet, EthernetFrame, ETH_HEADER_LEN};
pub use icmp::{emit_icmp_error, IcmpError};
pub use ipv4::{Ipv4Packet, Ipv4Repr, IPV4_MIN_HEADER_LEN};
pub use tcp::{transport_ports, TcpPacket, TCP_CHECKSUM_OFFSET, TCP_MIN_HEADER_LEN};
pub use udp::{emit_udp_header, UDP_HEADER_LEN};
pub use vxlan::{emit_vxlan, parse_vxlan, VxlanHeader, VXLAN_HEADER_LEN};

/// A MAC address.
pub type Mac = [u8; 6];

/// The gateway every pod routes through and the MAC the forwarder answers its ARP with,
/// as the contract defines them.
pub use tapwire_proto::{GATEWAY_MAC, POD_GATEWAY};
/// The broadcast MAC.
pub const BROADCAST_MAC: Mac = [0xff; 6];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

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
    /// The TCP data offset is below 5 words or beyond the segment.
    #[error("bad TCP data offset")]
    BadDataOffset,
    /// The VXLAN header's I flag (a valid VNI follows) is clear.
    #[error("VXLAN without the I flag")]
    BadVxlanFlags,
}

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
fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[inline]
fn ipv4_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

#[inline]
fn mac_at(buf: &[u8], at: usize) -> Mac {
    let mut mac = [0; 6];
    mac.copy_from_slice(&buf[at..at + 6]);
    mac
}

/// Frames shared by the format tests.
#[cfg(test)]
mod test_frames {
    /// The headers of an ICMP echo request from 10.65.0.2 to 10.65.1.3 in the shape ping
    /// sends (DF, TTL 64, 84-byte total length), Ethernet header included; payload zeroed.
    pub const PING_FRAME: [u8; 98] = {
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
}
