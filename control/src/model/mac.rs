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
    /// Calico's VTEP MAC for a node that has none configured: `0x66`, then the first five
    /// bytes of SHA-1 of the node name.
    pub fn derived_vtep(node: &str) -> MacAddr {
        let digest = sha1_smol::Sha1::from(node.as_bytes()).digest().bytes();
        MacAddr([0x66, digest[0], digest[1], digest[2], digest[3], digest[4]])
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
    fn derived_vtep_mac_is_calicos() {
        // Calico: 0x66, then the first five bytes of SHA-1 of the name (reference values
        // from Python's hashlib).
        assert_eq!(
            MacAddr::derived_vtep("node-a").to_string(),
            "66:07:02:c1:cc:60"
        );
        assert_eq!(
            MacAddr::derived_vtep("kernel-host").to_string(),
            "66:68:21:5a:8f:91"
        );
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
