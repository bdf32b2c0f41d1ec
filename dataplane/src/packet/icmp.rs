//! The ICMP errors (RFC 792) the forwarder originates, quoting the packet they are about.

use std::net::Ipv4Addr;

use super::checksum::checksum;
use super::ethernet::{emit_ethernet, ETH_HEADER_LEN};
use super::ipv4::{Ipv4Packet, Ipv4Repr};
use super::{put_be16, Mac, ETHERTYPE_IPV4, IPPROTO_ICMP};

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// "Rest of header": unused, or the next-hop MTU of a fragmentation-needed.
    pub const REST: Range<usize> = 4..8;
    pub const DATA: usize = 8;
}

const HEADER_LEN: usize = field::DATA;
/// How much of the offending packet an error quotes beyond its header (RFC 792).
const QUOTE_EXTRA: usize = 8;
/// ICMP types that are queries, not errors: echo reply/request, timestamp, address mask.
const QUERY_TYPES: [u8; 6] = [0, 8, 13, 14, 17, 18];

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
        let icmp_type = offender.payload().get(field::TYPE).copied()?;
        if !QUERY_TYPES.contains(&icmp_type) {
            return None;
        }
    }
    let quote_len = (offender.header_len() + QUOTE_EXTRA).min(offender.total_len());
    let quote = &offender.packet()[..quote_len];
    let icmp_len = HEADER_LEN + quote.len();
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
    icmp[field::TYPE] = icmp_type;
    icmp[field::CODE] = code;
    put_be16(icmp, field::CHECKSUM, 0);
    let rest = match kind {
        IcmpError::FragmentationNeeded { mtu } => u32::from(mtu),
        _ => 0,
    };
    icmp[field::REST].copy_from_slice(&rest.to_be_bytes());
    icmp[field::DATA..].copy_from_slice(quote);
    let sum = checksum(icmp);
    put_be16(icmp, field::CHECKSUM, sum);
    Some(frame_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_frames::PING_FRAME;
    use crate::packet::GATEWAY_MAC;

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
    fn no_error_when_the_buffer_is_short_or_the_offender_has_no_icmp_type() {
        let ip = Ipv4Packet::new_checked(&PING_FRAME[ETH_HEADER_LEN..]).unwrap();
        let from = Ipv4Addr::new(192, 168, 0, 1);
        let eth = ([0; 6], GATEWAY_MAC);
        let mut short = [0u8; 69];
        assert_eq!(
            emit_icmp_error(&mut short, eth, from, &ip, IcmpError::TimeExceeded),
            None
        );
        // An ICMP packet with no ICMP header at all.
        let mut bare = PING_FRAME[ETH_HEADER_LEN..ETH_HEADER_LEN + 20].to_vec();
        bare[2..4].copy_from_slice(&20u16.to_be_bytes());
        let ip = Ipv4Packet::new_checked(&bare[..]).unwrap();
        let mut out = [0u8; 128];
        assert_eq!(
            emit_icmp_error(&mut out, eth, from, &ip, IcmpError::TimeExceeded),
            None
        );
    }
}
