//! The IPAM documents: [`IpamBlock`], [`BlockAffinity`] and [`IpamHandle`], a simpler
//! equivalent of Calico's.
//!
//!
//! Calico keeps, per block, an allocations array indexing into an attributes array plus an
//! `unallocated` free list, and moves BlockAffinity through pending → confirmed →
//! pendingDeletion. tapwire keeps:
//! - IPAMBlock: the block's CIDR, its affinity (`host:<node>`) and a map ordinal → handle.
//!   Creating the block document *is* the claim (a compare-and-swap create), so it is the
//!   source of truth for who owns a block and which addresses are taken.
//! - BlockAffinity: an index (node, CIDR) written after the block and removed after it,
//!   which is why only the `confirmed` state exists.
//! - IPAMHandle: handle id → its one address, an index so a release needs no block scan.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::net::cidr;
use super::{format_rfc3339, parse_rfc3339, Metadata};

/// `kind: IPAMBlock`: a block of a pool, claimed by one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamBlock {
    pub metadata: Metadata,
    pub spec: IpamBlockSpec,
}
resource!(IpamBlock, "IPAMBlock");

/// The contents of an [`IpamBlock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpamBlockSpec {
    #[serde(with = "cidr")]
    pub cidr: Ipv4Net,
    /// `host:<node>`, Calico's spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Address ordinal within the block (0 = the block's first address) → handle id.
    #[serde(default)]
    pub allocations: BTreeMap<u32, String>,
}

impl IpamBlock {
    /// An empty block affine to `node`.
    pub fn new(cidr: Ipv4Net, node: &str) -> IpamBlock {
        IpamBlock {
            metadata: Metadata::named(Self::name_for(cidr)),
            spec: IpamBlockSpec {
                cidr,
                affinity: Some(format!("host:{node}")),
                allocations: BTreeMap::new(),
            },
        }
    }

    /// The document name of the block `cidr`: `10.65.0.64/26` → `10-65-0-64-26` (Calico's).
    pub fn name_for(cidr: Ipv4Net) -> String {
        cidr.to_string().replace(['.', '/'], "-")
    }

    /// The CIDR a block document name stands for ([`IpamBlock::name_for`] backwards), so
    /// that a damaged block still tells which range it claims. `None` for any other name.
    pub fn cidr_from_name(name: &str) -> Option<Ipv4Net> {
        let parts: Vec<&str> = name.split('-').collect();
        let [a, b, c, d, len] = parts.as_slice() else {
            return None;
        };
        let cidr: Ipv4Net = format!("{a}.{b}.{c}.{d}/{len}").parse().ok()?;
        (Self::name_for(cidr) == name && cidr == cidr.trunc()).then_some(cidr)
    }

    /// The node the block is affine to.
    pub fn node(&self) -> Option<&str> {
        self.spec.affinity.as_deref()?.strip_prefix("host:")
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.spec.cidr.prefix_len().min(32)))
    }

    /// The address of `ordinal`, if inside the block.
    pub fn address(&self, ordinal: u32) -> Option<Ipv4Addr> {
        (u64::from(ordinal) < self.size())
            .then(|| Ipv4Addr::from(u32::from(self.spec.cidr.network()).wrapping_add(ordinal)))
    }

    /// The ordinal of `addr`, if inside the block.
    pub fn ordinal(&self, addr: Ipv4Addr) -> Option<u32> {
        self.spec
            .cidr
            .contains(&addr)
            .then(|| u32::from(addr).wrapping_sub(u32::from(self.spec.cidr.network())))
    }

    /// The lowest ordinal not allocated.
    pub fn lowest_free(&self) -> Option<u32> {
        let mut expected = 0u32;
        for &ordinal in self.spec.allocations.keys() {
            if ordinal != expected {
                break;
            }
            expected += 1;
        }
        (u64::from(expected) < self.size()).then_some(expected)
    }

    /// The ordinal allocated to `handle`, if any.
    pub fn ordinal_of_handle(&self, handle: &str) -> Option<u32> {
        self.spec
            .allocations
            .iter()
            .find(|(_, h)| h.as_str() == handle)
            .map(|(o, _)| *o)
    }
}

/// The state of a [`BlockAffinity`]. tapwire's claim is the block document itself, so an
/// affinity is only ever written once the claim is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    #[default]
    Confirmed,
}

/// `kind: BlockAffinity`: node ↔ block, as `calicoctl ipam show --show-blocks` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockAffinity {
    pub metadata: Metadata,
    pub spec: BlockAffinitySpec,
}
resource!(BlockAffinity, "BlockAffinity");

/// The contents of a [`BlockAffinity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlockAffinitySpec {
    #[serde(default)]
    pub state: AffinityState,
    pub node: String,
    #[serde(with = "cidr")]
    pub cidr: Ipv4Net,
}

impl BlockAffinity {
    pub fn new(node: &str, cidr: Ipv4Net) -> BlockAffinity {
        BlockAffinity {
            metadata: Metadata::named(Self::name_for(node, cidr)),
            spec: BlockAffinitySpec {
                state: AffinityState::Confirmed,
                node: node.to_string(),
                cidr,
            },
        }
    }

    /// `node-a` + `10.65.0.0/26` → `node-a-10-65-0-0-26` (Calico's).
    pub fn name_for(node: &str, cidr: Ipv4Net) -> String {
        format!("{node}-{}", IpamBlock::name_for(cidr))
    }
}

/// `kind: IPAMHandle`: the address a handle (one pod's allocation) holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamHandle {
    pub metadata: Metadata,
    pub spec: IpamHandleSpec,
}
resource!(IpamHandle, "IPAMHandle");

/// The contents of an [`IpamHandle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpamHandleSpec {
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// The block holding the address.
    #[serde(with = "cidr")]
    pub block: Ipv4Net,
    pub address: Ipv4Addr,
    /// When the allocation was made (or, for one found without its handle, first seen),
    /// RFC 3339 UTC ([`format_rfc3339`]); Calico's `timestamp` attribute. The orphan sweep
    /// leaves allocations younger than an ADD could take alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl IpamHandle {
    pub fn new(
        handle_id: &str,
        block: Ipv4Net,
        address: Ipv4Addr,
        allocated: SystemTime,
    ) -> IpamHandle {
        IpamHandle {
            metadata: Metadata::named(handle_id),
            spec: IpamHandleSpec {
                handle_id: handle_id.to_string(),
                block,
                address,
                timestamp: Some(format_rfc3339(allocated)),
            },
        }
    }

    /// When the allocation was made, if recorded.
    pub fn allocated_at(&self) -> Option<SystemTime> {
        parse_rfc3339(self.spec.timestamp.as_deref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn block_arithmetic() {
        let mut block = IpamBlock::new(net("10.65.1.64/26"), "node-a");
        assert_eq!(block.metadata.name, "10-65-1-64-26");
        // A damaged block's range, from its name alone.
        assert_eq!(
            IpamBlock::cidr_from_name("10-65-1-64-26"),
            Some(net("10.65.1.64/26"))
        );
        for other in [
            "10-65-1-65-26",
            "10-65-1-64",
            "010-65-1-64-26",
            "a-b-c-d-26",
            "x",
        ] {
            assert_eq!(IpamBlock::cidr_from_name(other), None, "{other}");
        }
        assert_eq!(block.node(), Some("node-a"));
        assert_eq!(block.size(), 64);
        assert_eq!(block.address(0), Some(Ipv4Addr::new(10, 65, 1, 64)));
        assert_eq!(block.address(63), Some(Ipv4Addr::new(10, 65, 1, 127)));
        assert_eq!(block.address(64), None);
        assert_eq!(block.ordinal(Ipv4Addr::new(10, 65, 1, 70)), Some(6));
        assert_eq!(block.ordinal(Ipv4Addr::new(10, 65, 1, 128)), None);
        assert_eq!(block.lowest_free(), Some(0));
        block.spec.allocations.insert(0, "a".into());
        block.spec.allocations.insert(1, "b".into());
        block.spec.allocations.insert(3, "c".into());
        assert_eq!(block.lowest_free(), Some(2));
        assert_eq!(block.ordinal_of_handle("c"), Some(3));
        let full = IpamBlock {
            spec: IpamBlockSpec {
                allocations: (0..64).map(|o| (o, format!("h{o}"))).collect(),
                ..block.spec.clone()
            },
            ..block.clone()
        };
        assert_eq!(full.lowest_free(), None);
        let single = IpamBlock::new(net("10.65.1.5/32"), "node-a");
        assert_eq!(single.size(), 1);
        assert_eq!(single.address(0), Some(Ipv4Addr::new(10, 65, 1, 5)));
        let big = IpamBlock::new(net("10.64.0.0/20"), "node-a");
        assert_eq!(big.size(), 4096);
    }
}
