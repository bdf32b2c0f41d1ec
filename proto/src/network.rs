//! The network facts both daemons build on, defined once: the gateway every pod routes
//! through and the MAC it answers with, the VXLAN port, the encapsulations with their
//! overhead, a pool's encapsulation mode as messages spell it, and Calico's VTEP MAC
//! derivation. Control computes pod MTUs, routes and VTEPs with them; the dataplane
//! answers ARP, encapsulates and checks tunnels with the same values.

use std::fmt;
use std::net::Ipv4Addr;

/// The pod's default gateway: a link-local address nobody owns. The dataplane answers the
/// pod's ARP for it; the node's kernel routes the pools through it on the host path.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The MAC the dataplane answers ARP for [`POD_GATEWAY`] with (Calico's).
pub const GATEWAY_MAC: [u8; 6] = [0xee; 6];

/// The IANA VXLAN UDP port: what nodes send VXLAN to, and the dataplane's default
/// `--vxlan-port`.
pub const VXLAN_PORT: u16 = 4789;

/// How packets to a remote block travel on the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encap {
    /// The pod packet itself, sent to the peer's underlay MAC.
    None,
    /// IP-in-IP (IP protocol 4): one outer IPv4 header.
    Ipip,
    /// VXLAN over UDP: outer Ethernet, IPv4, UDP and VXLAN headers.
    Vxlan,
}

impl Encap {
    /// Every encapsulation, in the order of their discriminants (index with `as usize`).
    pub const ALL: [Encap; 3] = [Encap::None, Encap::Ipip, Encap::Vxlan];

    /// Bytes the encapsulation adds to each pod packet on an IPv4 underlay: IPIP an IPv4
    /// header (20), VXLAN Ethernet, IPv4, UDP and VXLAN headers (14 + 20 + 8 + 8).
    pub const fn overhead_bytes(self) -> u32 {
        match self {
            Encap::None => 0,
            Encap::Ipip => 20,
            Encap::Vxlan => 50,
        }
    }

    /// `none`, `ipip` or `vxlan`: how logs, counters and `tapwirectl` name it.
    pub const fn name(self) -> &'static str {
        match self {
            Encap::None => "none",
            Encap::Ipip => "ipip",
            Encap::Vxlan => "vxlan",
        }
    }
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When a pool's traffic between nodes is encapsulated, as
/// [`IpamPool::ipip_mode`](crate::IpamPool::ipip_mode) and `vxlan_mode` carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EncapMode {
    /// Never encapsulate (Felix's `""`).
    #[default]
    Never,
    /// Always encapsulate (`"always"`).
    Always,
    /// Encapsulate only towards nodes in another underlay subnet (`"cross-subnet"`).
    CrossSubnet,
}

impl EncapMode {
    /// The string Felix sends: `""`, `"always"` or `"cross-subnet"`.
    pub const fn felix_name(self) -> &'static str {
        match self {
            EncapMode::Never => "",
            EncapMode::Always => "always",
            EncapMode::CrossSubnet => "cross-subnet",
        }
    }

    /// Reads a mode as a message carries it: Felix's strings in any case, and also
    /// `never` and `crosssubnet` (Calico's document spelling, lower-cased). `None` for
    /// anything else: an unknown mode is refused, not read as [`EncapMode::Never`].
    pub fn from_felix_name(value: &str) -> Option<EncapMode> {
        match value.to_ascii_lowercase().as_str() {
            "" | "never" => Some(EncapMode::Never),
            "always" => Some(EncapMode::Always),
            "cross-subnet" | "crosssubnet" => Some(EncapMode::CrossSubnet),
            _ => None,
        }
    }

    /// Whether traffic to a node is encapsulated, given whether that node shares this
    /// node's underlay subnet.
    pub const fn encapsulates(self, same_subnet: bool) -> bool {
        match self {
            EncapMode::Never => false,
            EncapMode::Always => true,
            EncapMode::CrossSubnet => !same_subnet,
        }
    }
}

/// Calico's VTEP MAC for a node that has none configured: `0x66`, then the first five
/// bytes of SHA-1 of the node name.
pub fn derive_vtep_mac(node: &str) -> [u8; 6] {
    let digest = sha1_smol::Sha1::from(node.as_bytes()).digest().bytes();
    [0x66, digest[0], digest[1], digest[2], digest[3], digest[4]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::format_mac;

    #[test]
    fn derived_vtep_macs_are_calicos() {
        // Reference values from Python's hashlib: 0x66, then sha1(name)[:5].
        assert_eq!(format_mac(derive_vtep_mac("node-a")), "66:07:02:c1:cc:60");
        assert_eq!(
            format_mac(derive_vtep_mac("kernel-host")),
            "66:68:21:5a:8f:91"
        );
        assert_ne!(derive_vtep_mac("node-a"), derive_vtep_mac("node-b"));
    }

    #[test]
    fn encap_modes_read_felix_strings_and_refuse_the_rest() {
        for mode in [EncapMode::Never, EncapMode::Always, EncapMode::CrossSubnet] {
            assert_eq!(EncapMode::from_felix_name(mode.felix_name()), Some(mode));
        }
        assert_eq!(
            EncapMode::from_felix_name("CrossSubnet"),
            Some(EncapMode::CrossSubnet)
        );
        assert_eq!(EncapMode::from_felix_name("Never"), Some(EncapMode::Never));
        for unknown in ["sometimes", "cross_subnet", " always", "true"] {
            assert_eq!(EncapMode::from_felix_name(unknown), None, "{unknown:?}");
        }
        assert!(EncapMode::CrossSubnet.encapsulates(false));
        assert!(!EncapMode::CrossSubnet.encapsulates(true));
        assert!(EncapMode::Always.encapsulates(true));
        assert!(!EncapMode::Never.encapsulates(false));
    }

    #[test]
    fn encap_indexes_and_names() {
        for (i, encap) in Encap::ALL.into_iter().enumerate() {
            assert_eq!(encap as usize, i);
        }
        assert_eq!(Encap::Vxlan.to_string(), "vxlan");
        assert_eq!(Encap::Ipip.overhead_bytes(), 20);
        assert_eq!(Encap::Vxlan.overhead_bytes(), 14 + 20 + 8 + 8);
    }
}
