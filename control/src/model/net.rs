//! IPv4 networks in documents: parsing pool and block CIDRs and interface addresses, their
//! `serde(with)` helpers, and overlap.

use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Parses a pool or block CIDR (`10.65.0.0/16`); the prefix length is required.
/// Host bits are accepted here and rejected by validation, which can say which were set.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    if s.contains(':') {
        return Err(format!(
            "{s:?} is an IPv6 CIDR; tapwire pools and blocks are IPv4-only"
        ));
    }
    if !s.contains('/') {
        return Err(format!(
            "invalid CIDR {s:?}: missing the prefix length (e.g. 10.65.0.0/16)"
        ));
    }
    Ipv4Net::from_str(s)
        .map_err(|_| format!("invalid CIDR {s:?} (expected an IPv4 network like 10.65.0.0/16)"))
}

/// Parses an interface address with its subnet (`192.168.0.1/24`); a bare address means
/// a /32.
pub fn parse_interface_address(s: &str) -> Result<Ipv4Net, String> {
    if !s.contains('/') {
        if let Ok(addr) = Ipv4Addr::from_str(s) {
            return Ok(Ipv4Net::from(addr));
        }
    }
    parse_cidr(s)
}

/// `serde(with)` for one CIDR as a string.
pub(super) mod cidr {
    use super::*;

    pub fn serialize<S: Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        parse_cidr(&s).map_err(D::Error::custom)
    }
}

/// `serde(with)` for a list of CIDRs as strings.
pub(super) mod cidr_list {
    use super::*;

    pub fn serialize<S: Serializer>(nets: &[Ipv4Net], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(|n| n.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Net>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .map(|s| parse_cidr(s).map_err(D::Error::custom))
            .collect()
    }
}

/// `serde(with)` for an interface address with subnet.
pub(super) mod interface_address {
    use super::*;

    pub fn serialize<S: Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        parse_interface_address(&s).map_err(D::Error::custom)
    }
}

/// Whether two networks share an address.
pub fn nets_overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
