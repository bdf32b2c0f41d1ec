//! `kind: IPPool`: a range pods get addresses from, its block size and encapsulation.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::net::{cidr, nets_overlap};
use super::{validate_name, Metadata, ModelError, Resource};

/// An IP pool's block size when `spec.blockSize` is absent (Calico's default).
pub const DEFAULT_BLOCK_SIZE: u8 = 26;
/// The smallest IPv4 block prefix length Calico allows (the largest blocks).
pub const MIN_BLOCK_SIZE: u8 = 20;
/// The largest IPv4 block prefix length (one address per block).
pub const MAX_BLOCK_SIZE: u8 = 32;

/// Ranges no pool may touch: link-local (169.254.1.1 is every pod's gateway), loopback and
/// multicast.
const RESERVED_RANGES: [(&str, Ipv4Addr, u8); 3] = [
    (
        "the IPv4 link-local range",
        Ipv4Addr::new(169, 254, 0, 0),
        16,
    ),
    ("the IPv4 loopback range", Ipv4Addr::new(127, 0, 0, 0), 8),
    ("the IPv4 multicast range", Ipv4Addr::new(224, 0, 0, 0), 4),
];

fn is_false(b: &bool) -> bool {
    !*b
}

/// When a pool's traffic between nodes is encapsulated (`ipipMode`, `vxlanMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncapMode {
    /// Always encapsulate.
    Always,
    /// Encapsulate only towards nodes in another underlay subnet.
    CrossSubnet,
    /// Never encapsulate.
    #[default]
    Never,
}

impl EncapMode {
    /// Whether this mode ever encapsulates.
    pub fn is_enabled(self) -> bool {
        self != EncapMode::Never
    }

    /// The mode as the contract defines it: what `IPAMPool` carries to the dataplane
    /// ([`felix_name`](tapwire_proto::EncapMode::felix_name)) and which peers it
    /// encapsulates to ([`encapsulates`](tapwire_proto::EncapMode::encapsulates)).
    pub fn wire(self) -> tapwire_proto::EncapMode {
        match self {
            EncapMode::Always => tapwire_proto::EncapMode::Always,
            EncapMode::CrossSubnet => tapwire_proto::EncapMode::CrossSubnet,
            EncapMode::Never => tapwire_proto::EncapMode::Never,
        }
    }
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
            EncapMode::Never => "Never",
        })
    }
}

/// What addresses of a pool may be used for (Calico's `allowedUses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
}

impl AllowedUse {
    /// The name as written in documents and sent to the dataplane.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowedUse::Workload => "Workload",
            AllowedUse::Tunnel => "Tunnel",
        }
    }
}

/// `kind: IPPool`: a range pods get addresses from, and how its blocks are reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPool {
    pub metadata: Metadata,
    pub spec: IpPoolSpec,
}
resource!(IpPool, "IPPool");

/// The settings of an [`IpPool`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(with = "cidr")]
    pub cidr: Ipv4Net,
    /// The prefix length of the blocks the pool is cut into.
    #[serde(default = "default_block_size")]
    pub block_size: u8,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    /// Masquerade pod traffic leaving the pools.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// No new blocks or addresses come from a disabled pool; existing ones keep routing.
    #[serde(default)]
    pub disabled: bool,
    /// Accepted for calicoctl compatibility; tapwire supports only `all()` (every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// Accepted for calicoctl compatibility and passed to the dataplane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    /// With BGP (`networking_backend = "bird"`), the pool's blocks are not announced.
    #[serde(default, rename = "disableBGPExport", skip_serializing_if = "is_false")]
    pub disable_bgp_export: bool,
}

fn default_block_size() -> u8 {
    DEFAULT_BLOCK_SIZE
}

impl IpPool {
    /// A pool with Calico's defaults (/26 blocks, no encapsulation).
    pub fn new(name: impl Into<String>, cidr: Ipv4Net) -> IpPool {
        IpPool {
            metadata: Metadata::named(name),
            spec: IpPoolSpec {
                cidr,
                block_size: DEFAULT_BLOCK_SIZE,
                ipip_mode: EncapMode::Never,
                vxlan_mode: EncapMode::Never,
                nat_outgoing: false,
                disabled: false,
                node_selector: None,
                allowed_uses: Vec::new(),
                disable_bgp_export: false,
            },
        }
    }

    fn invalid(&self, field: &'static str, reason: String) -> ModelError {
        ModelError::Invalid {
            kind: Self::KIND,
            name: self.metadata.name.clone(),
            field,
            reason,
        }
    }

    /// Checks the pool on its own: name, CIDR (no host bits, no reserved range), block
    /// size, and at most one encapsulation.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name(Self::KIND, &self.metadata.name)?;
        let cidr = self.spec.cidr;
        if cidr != cidr.trunc() {
            return Err(self.invalid(
                "spec.cidr",
                format!("{cidr} has host bits set (the network is {})", cidr.trunc()),
            ));
        }
        for (what, addr, len) in RESERVED_RANGES {
            let reserved = Ipv4Net::new(addr, len).unwrap_or_default();
            if nets_overlap(cidr, reserved) {
                return Err(self.invalid("spec.cidr", format!("{cidr} overlaps {what} {reserved}")));
            }
        }
        let block = self.spec.block_size;
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block) {
            return Err(self.invalid(
                "spec.blockSize",
                format!(
                    "{block} is out of range (IPv4 allows {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE})"
                ),
            ));
        }
        if block < cidr.prefix_len() {
            return Err(self.invalid(
                "spec.blockSize",
                format!(
                    "/{block} blocks do not fit in the /{} pool {cidr} (blockSize must be at least the pool's prefix length)",
                    cidr.prefix_len()
                ),
            ));
        }
        if self.spec.ipip_mode.is_enabled() && self.spec.vxlan_mode.is_enabled() {
            return Err(self.invalid(
                "spec.ipipMode",
                format!(
                    "ipipMode {} and vxlanMode {} are both enabled; a pool uses at most one encapsulation",
                    self.spec.ipip_mode, self.spec.vxlan_mode
                ),
            ));
        }
        if let Some(selector) = &self.spec.node_selector {
            let selector = selector.trim();
            if !selector.is_empty() && selector != "all()" {
                return Err(self.invalid(
                    "spec.nodeSelector",
                    format!("{selector:?} is not supported; tapwire pools apply to all() nodes"),
                ));
            }
        }
        Ok(())
    }

    /// Checks that this pool overlaps none of `others` (a pool of the same name is the
    /// one being replaced and is skipped).
    pub fn check_overlap<'a>(
        &self,
        others: impl IntoIterator<Item = &'a IpPool>,
    ) -> Result<(), ModelError> {
        for other in others {
            if other.metadata.name != self.metadata.name
                && nets_overlap(self.spec.cidr, other.spec.cidr)
            {
                return Err(self.invalid(
                    "spec.cidr",
                    format!(
                        "{} overlaps IPPool {:?} ({})",
                        self.spec.cidr, other.metadata.name, other.spec.cidr
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that replacing `old` (the stored pool of the same name) by this one changes
    /// nothing that claimed blocks depend on: the CIDR and the block size are fixed for
    /// the life of a pool (delete it and create a new one instead).
    pub fn check_update(&self, old: &IpPool) -> Result<(), ModelError> {
        if self.spec.cidr != old.spec.cidr {
            return Err(self.invalid(
                "spec.cidr",
                format!(
                    "cannot change from {} to {}; create a new pool instead",
                    old.spec.cidr, self.spec.cidr
                ),
            ));
        }
        if self.spec.block_size != old.spec.block_size {
            return Err(self.invalid(
                "spec.blockSize",
                format!(
                    "cannot change from {} to {}; create a new pool instead",
                    old.spec.block_size, self.spec.block_size
                ),
            ));
        }
        Ok(())
    }

    /// The encapsulation this pool uses (IPIP or VXLAN, whichever mode is enabled).
    pub fn encapsulation(&self) -> PoolEncap {
        if self.spec.ipip_mode.is_enabled() {
            PoolEncap::Ipip(self.spec.ipip_mode)
        } else if self.spec.vxlan_mode.is_enabled() {
            PoolEncap::Vxlan(self.spec.vxlan_mode)
        } else {
            PoolEncap::None
        }
    }
}

/// A valid pool's encapsulation, with the mode of the enabled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEncap {
    None,
    Ipip(EncapMode),
    Vxlan(EncapMode),
}
