//! IPv4 prefixes as the route table keys them: normalized, ordered, parsed from CIDR text.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Why a prefix could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// A prefix length above 32 was given for an IPv4 prefix.
    #[error("prefix length {0} is longer than 32")]
    LengthTooLong(u8),
    /// The address part of a CIDR string is not a dotted-quad IPv4 address.
    #[error("{input:?}: {address:?} is not an IPv4 address")]
    BadAddress { input: String, address: String },
    /// The part after `/` is not a number from 0 to 32.
    #[error("{input:?}: prefix length {length:?} is not a number from 0 to 32")]
    BadLength { input: String, length: String },
}

/// An IPv4 prefix with its host bits zeroed.
///
/// Ordered by address, then length, so a covering prefix sorts before every prefix inside
/// it ("prefix order": `10.0.0.0/8 < 10.0.0.0/16 < 10.0.0.0/24 < 10.0.1.0/24 < 11.0.0.0/8`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    // Field order is the derived `Ord`: address first, then length.
    addr: u32,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len`; host bits of `addr` are cleared, so `10.0.0.7/24` becomes
    /// `10.0.0.0/24`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Prefix, PrefixError> {
        Self::from_u32(u32::from(addr), len)
    }

    /// [`Prefix::new`] for an address as a host-order `u32`.
    pub fn from_u32(addr: u32, len: u8) -> Result<Prefix, PrefixError> {
        if len > 32 {
            return Err(PrefixError::LengthTooLong(len));
        }
        Ok(Prefix {
            addr: addr & mask(len),
            len,
        })
    }

    /// A prefix from a host-order address and a length the caller knows is at most 32
    /// (longer lengths are clamped to 32). Host bits are cleared.
    pub(crate) const fn masked(addr: u32, len: u8) -> Prefix {
        let len = if len > 32 { 32 } else { len };
        Prefix {
            addr: addr & mask(len),
            len,
        }
    }

    /// `0.0.0.0/0`, the default route.
    pub const DEFAULT: Prefix = Prefix { addr: 0, len: 0 };

    /// A /32 for one host.
    pub const fn host(addr: Ipv4Addr) -> Prefix {
        Prefix {
            addr: addr.to_bits(),
            len: 32,
        }
    }

    /// The network address (host bits zero).
    pub const fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.addr)
    }

    /// The network address as a host-order `u32`.
    pub const fn addr_u32(&self) -> u32 {
        self.addr
    }

    /// The prefix length, 0..=32.
    #[allow(clippy::len_without_is_empty)] // a prefix length, not a collection size
    pub const fn len(&self) -> u8 {
        self.len
    }

    /// The netmask as a host-order `u32` (`/24` → `0xffff_ff00`).
    pub const fn mask_u32(&self) -> u32 {
        mask(self.len)
    }

    /// The last address inside the prefix (the broadcast address for a subnet).
    pub const fn last_u32(&self) -> u32 {
        self.addr | !mask(self.len)
    }

    /// Whether `addr` lies inside this prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.contains_u32(u32::from(addr))
    }

    /// [`Prefix::contains`] for a host-order `u32`.
    pub const fn contains_u32(&self, addr: u32) -> bool {
        addr & mask(self.len) == self.addr
    }

    /// Whether `other` lies entirely inside this prefix (a prefix covers itself).
    pub const fn covers(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains_u32(other.addr)
    }
}

/// The netmask for a length of at most 32.
const fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        // `len` is 1..=32 here, so the shift is 0..=31.
        _ => u32::MAX << (32 - len as u32),
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// Parses `a.b.c.d/len`, or a bare `a.b.c.d` as a /32. Host bits are cleared as in
    /// [`Prefix::new`].
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (address, length) = match s.split_once('/') {
            Some((address, length)) => (address, Some(length)),
            None => (s, None),
        };
        let addr: Ipv4Addr = address.parse().map_err(|_| PrefixError::BadAddress {
            input: s.to_owned(),
            address: address.to_owned(),
        })?;
        let len = match length {
            None => 32,
            Some(length) => {
                let bad = || PrefixError::BadLength {
                    input: s.to_owned(),
                    length: length.to_owned(),
                };
                // `u8::from_str` accepts a leading '+'; a CIDR length is digits only.
                if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                match length.parse::<u8>() {
                    Ok(len) if len <= 32 => len,
                    _ => return Err(bad()),
                }
            }
        };
        Prefix::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        match s.parse() {
            Ok(p) => p,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_cidr_and_bare_address() {
        let net = p("10.0.0.0/26");
        assert_eq!(net.addr(), Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(net.len(), 26);
        assert_eq!(net.to_string(), "10.0.0.0/26");

        let host = p("192.168.1.7");
        assert_eq!(host, Prefix::host(Ipv4Addr::new(192, 168, 1, 7)));
        assert_eq!(host.to_string(), "192.168.1.7/32");

        assert_eq!(p("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(p("255.255.255.255/32").last_u32(), u32::MAX);
    }

    #[test]
    fn clears_host_bits() {
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("10.1.2.3/0").to_string(), "0.0.0.0/0");
        assert_eq!(
            Prefix::new(Ipv4Addr::new(172, 16, 255, 1), 12).map(|p| p.to_string()),
            Ok("172.16.0.0/12".to_owned())
        );
    }

    #[test]
    fn rejects_bad_input_with_clear_errors() {
        assert_eq!(
            Prefix::new(Ipv4Addr::LOCALHOST, 33),
            Err(PrefixError::LengthTooLong(33))
        );
        let cases = [
            (
                "10.0.0.0/33",
                "\"10.0.0.0/33\": prefix length \"33\" is not a number from 0 to 32",
            ),
            (
                "10.0.0.0/",
                "\"10.0.0.0/\": prefix length \"\" is not a number from 0 to 32",
            ),
            (
                "10.0.0.0/+8",
                "\"10.0.0.0/+8\": prefix length \"+8\" is not a number from 0 to 32",
            ),
            (
                "10.0.0.0/8/9",
                "\"10.0.0.0/8/9\": prefix length \"8/9\" is not a number from 0 to 32",
            ),
            (
                "10.0.0.0/300",
                "\"10.0.0.0/300\": prefix length \"300\" is not a number from 0 to 32",
            ),
            (
                "10.0.0/8",
                "\"10.0.0/8\": \"10.0.0\" is not an IPv4 address",
            ),
            ("", "\"\": \"\" is not an IPv4 address"),
            (
                "fd00::/8",
                "\"fd00::/8\": \"fd00::\" is not an IPv4 address",
            ),
        ];
        for (input, message) in cases {
            match input.parse::<Prefix>() {
                Ok(p) => panic!("{input} parsed as {p}"),
                Err(e) => assert_eq!(e.to_string(), message),
            }
        }
    }

    #[test]
    fn contains_and_covers() {
        let net = p("10.0.0.64/26");
        assert!(net.contains(Ipv4Addr::new(10, 0, 0, 64)));
        assert!(net.contains(Ipv4Addr::new(10, 0, 0, 127)));
        assert!(!net.contains(Ipv4Addr::new(10, 0, 0, 63)));
        assert!(!net.contains(Ipv4Addr::new(10, 0, 0, 128)));
        assert!(p("0.0.0.0/0").contains(Ipv4Addr::BROADCAST));
        assert!(p("10.0.0.0/8").covers(&net));
        assert!(net.covers(&net));
        assert!(!net.covers(&p("10.0.0.0/8")));
        assert!(!net.covers(&p("10.0.0.0/26")));
    }

    #[test]
    fn orders_covering_prefix_first() {
        let mut v = [
            p("11.0.0.0/8"),
            p("10.0.1.0/24"),
            p("10.0.0.0/24"),
            p("10.0.0.0/16"),
            p("10.0.0.0/8"),
        ];
        v.sort();
        let text: Vec<String> = v.iter().map(Prefix::to_string).collect();
        assert_eq!(
            text,
            [
                "10.0.0.0/8",
                "10.0.0.0/16",
                "10.0.0.0/24",
                "10.0.1.0/24",
                "11.0.0.0/8"
            ]
        );
    }
}
