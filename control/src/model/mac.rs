//! [`MacAddr`]: an Ethernet address in documents, and Calico's VTEP MAC derivation.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet MAC address; written `aa:bb:cc:dd:ee:ff` (parsing also accepts upper case
/// and `-` separators).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Calico's VTEP MAC for a node that has none configured
    /// ([`tapwire_proto::derive_vtep_mac`], the derivation the dataplane uses too).
    pub fn derived_vtep(node: &str) -> MacAddr {
        MacAddr(tapwire_proto::derive_vtep_mac(node))
    }

    /// A multicast (group) address: the low bit of the first byte.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&tapwire_proto::text::format_mac(self.0))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not six hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected six hex bytes like aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<MacAddr, MacParseError> {
        tapwire_proto::text::parse_mac(s)
            .map(MacAddr)
            .ok_or_else(|| MacParseError(s.to_string()))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use ipnet::Ipv4Net;

    use super::*;
    use crate::model::Node;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_node_without_a_vtep_mac_gets_calicos_derivation() {
        // Calico: 0x66, then the first five bytes of SHA-1 of the name (the reference
        // value from Python's hashlib).
        let node = Node::new("node-a", net("192.168.0.1/24"));
        assert_eq!(node.vtep_mac().to_string(), "66:07:02:c1:cc:60");
    }

    #[test]
    fn mac_round_trip() {
        let mac: MacAddr = "AA-bb-cc-dd-ee-0F".parse().unwrap();
        assert_eq!(mac.to_string(), "aa:bb:cc:dd:ee:0f");
        assert!("aa:bb:cc:dd:ee".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:ff:00".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:fg".parse::<MacAddr>().is_err());
    }
}
