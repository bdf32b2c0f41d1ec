//! What an operator asks of IPAM, as `calicoctl ipam` answers it: how full each pool and
//! block is ([`Ipam::usage`]), whether the records agree ([`Ipam::check`]) and releasing
//! one leaked address ([`Ipam::release_address`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{handle_owned_by, Ipam, IpamError};
use crate::datastore::{Damaged, DatastoreExt};
use crate::model::{IpPool, IpamBlock, IpamHandle, Resource, WorkloadEndpoint};

/// How full the pools and their blocks are (`tapwirectl ipam show`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamUsage {
    /// By CIDR.
    pub pools: Vec<PoolUsage>,
    /// Every block, by CIDR.
    pub blocks: Vec<BlockUsage>,
    /// Pools and blocks that could not be read (left out above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<Damaged>,
}

/// One pool: its addresses and how many are allocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub name: String,
    pub cidr: Ipv4Net,
    pub disabled: bool,
    pub total: u64,
    pub in_use: u64,
}

/// One block: its node and how many of its addresses are allocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockUsage {
    pub cidr: Ipv4Net,
    pub node: Option<String>,
    pub total: u64,
    pub in_use: u64,
}

/// What [`Ipam::check`] found (`tapwirectl ipam check`); empty lists mean the records
/// agree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Allocations in the blocks.
    pub allocations: usize,
    /// Workload endpoints.
    pub endpoints: usize,
    /// Allocations no workload endpoint holds: leaked, unless an ADD is in flight (the
    /// control releases them once older than [`crate::agent::ORPHAN_GRACE`]).
    pub leaked: Vec<Leaked>,
    /// Addresses two workload endpoints claim, or two blocks allocate.
    pub duplicates: Vec<String>,
    /// Handle documents whose address no block allocates to them.
    pub orphaned_handles: Vec<String>,
    /// Workload endpoint addresses inside a pool that no block allocates.
    pub unallocated: Vec<String>,
    /// Documents that could not be read (their addresses could not be checked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<Damaged>,
}

impl CheckReport {
    /// Whether every record agrees with the others.
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty()
            && self.duplicates.is_empty()
            && self.orphaned_handles.is_empty()
            && self.unallocated.is_empty()
            && self.damaged.is_empty()
    }
}

/// An allocation no workload endpoint holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaked {
    pub address: Ipv4Addr,
    pub handle: String,
    /// The node of its block.
    pub node: Option<String>,
    /// When it was allocated (its handle's timestamp), RFC 3339, when recorded.
    pub since: Option<String>,
}

/// Why an address was not released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{address} is not allocated (no IPAM block holds it)")]
    NotAllocated { address: Ipv4Addr },
    #[error(
        "{address} is in use by workload endpoint {endpoint:?}; delete the pod (CNI DEL) to release it"
    )]
    InUse { address: Ipv4Addr, endpoint: String },
    /// Released or allocated anew by someone else between the read and the release.
    #[error(
        "{address} changed while it was being released (another release or a new pod took it); run `tapwirectl ipam check` and try again"
    )]
    Changed { address: Ipv4Addr },
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

/// The number of addresses of `net`.
fn size(net: Ipv4Net) -> u64 {
    1u64 << (32 - u32::from(net.prefix_len()))
}

impl Ipam<'_> {
    /// How full each pool and block is.
    pub fn usage(&self) -> Result<IpamUsage, IpamError> {
        let pools = self.store.list_as::<IpPool>()?;
        let blocks = self.store.list_as::<IpamBlock>()?;
        let mut usage = IpamUsage {
            damaged: pools.damaged.into_iter().chain(blocks.damaged).collect(),
            ..IpamUsage::default()
        };
        usage.blocks = blocks
            .items
            .iter()
            .map(|block| BlockUsage {
                cidr: block.spec.cidr,
                node: block.node().map(str::to_string),
                total: size(block.spec.cidr),
                in_use: block.spec.allocations.len() as u64,
            })
            .collect();
        usage.blocks.sort_by_key(|b| b.cidr);
        usage.pools = pools
            .items
            .iter()
            .map(|pool| PoolUsage {
                name: pool.name().to_string(),
                cidr: pool.spec.cidr,
                disabled: pool.spec.disabled,
                total: size(pool.spec.cidr),
                in_use: usage
                    .blocks
                    .iter()
                    .filter(|b| pool.spec.cidr.contains(&b.cidr))
                    .map(|b| b.in_use)
                    .sum(),
            })
            .collect();
        usage.pools.sort_by_key(|p| p.cidr);
        Ok(usage)
    }

    /// Checks the blocks, handles and workload endpoints against each other, as
    /// `calicoctl ipam check` does; changes nothing.
    pub fn check(&self) -> Result<CheckReport, IpamError> {
        let blocks = self.store.list_as::<IpamBlock>()?;
        let handles = self.store.list_as::<IpamHandle>()?;
        let endpoints = self.store.list_as::<WorkloadEndpoint>()?;
        let pools = self.store.list_as::<IpPool>()?;
        let mut report = CheckReport {
            endpoints: endpoints.items.len(),
            damaged: [blocks.damaged, handles.damaged, endpoints.damaged]
                .into_iter()
                .flatten()
                .collect(),
            ..CheckReport::default()
        };
        let handle_docs: BTreeMap<&str, &IpamHandle> = handles
            .items
            .iter()
            .map(|h| (h.spec.handle_id.as_str(), h))
            .collect();

        // Every allocation, by address: (handle, block).
        let mut allocated: BTreeMap<Ipv4Addr, Vec<(&str, &IpamBlock)>> = BTreeMap::new();
        for block in &blocks.items {
            for (&ordinal, handle) in &block.spec.allocations {
                if let Some(address) = block.address(ordinal) {
                    allocated
                        .entry(address)
                        .or_default()
                        .push((handle.as_str(), block));
                    report.allocations += 1;
                }
            }
        }
        // Every endpoint address, by address.
        let mut used: BTreeMap<Ipv4Addr, Vec<&WorkloadEndpoint>> = BTreeMap::new();
        for endpoint in &endpoints.items {
            for net in &endpoint.spec.ip_networks {
                used.entry(net.addr()).or_default().push(endpoint);
            }
        }

        for (address, holders) in &allocated {
            if holders.len() > 1 {
                let blocks: Vec<String> = holders
                    .iter()
                    .map(|(_, b)| b.spec.cidr.to_string())
                    .collect();
                report.duplicates.push(format!(
                    "{address} is allocated in blocks {}",
                    blocks.join(", ")
                ));
            }
            for (handle, block) in holders {
                let owned = used
                    .get(address)
                    .is_some_and(|eps| eps.iter().any(|ep| handle_owned_by(handle, ep)));
                if !owned {
                    report.leaked.push(Leaked {
                        address: *address,
                        handle: handle.to_string(),
                        node: block.node().map(str::to_string),
                        since: handle_docs
                            .get(handle)
                            .and_then(|h| h.spec.timestamp.clone()),
                    });
                }
            }
        }
        for (address, eps) in &used {
            if eps.len() > 1 {
                let names: Vec<&str> = eps.iter().map(|ep| ep.name()).collect();
                report.duplicates.push(format!(
                    "{address} is used by workload endpoints {}",
                    names.join(", ")
                ));
            }
            let in_pool = pools.items.iter().any(|p| p.spec.cidr.contains(address));
            if in_pool && !allocated.contains_key(address) {
                let names: Vec<&str> = eps.iter().map(|ep| ep.name()).collect();
                report.unallocated.push(format!(
                    "{address} (workload endpoint {}) is allocated by no block",
                    names.join(", ")
                ));
            }
        }
        // Damaged blocks keep their ranges: their handles are not orphans.
        let unreadable: BTreeSet<Ipv4Net> = report
            .damaged
            .iter()
            .filter_map(|d| IpamBlock::cidr_from_name(&d.name))
            .collect();
        for handle in &handles.items {
            let allocates = allocated
                .get(&handle.spec.address)
                .is_some_and(|holders| holders.iter().any(|(h, _)| *h == handle.spec.handle_id));
            if !allocates && !unreadable.contains(&handle.spec.block) {
                report.orphaned_handles.push(format!(
                    "{} ({} in {})",
                    handle.spec.handle_id, handle.spec.address, handle.spec.block
                ));
            }
        }
        Ok(report)
    }

    /// Releases `address` whatever handle holds it (`calicoctl ipam release --ip`); refused
    /// while a workload endpoint uses it. Returns the handle it was allocated to.
    pub fn release_address(&self, address: Ipv4Addr) -> Result<String, ReleaseError> {
        let endpoints = self
            .store
            .list_as::<WorkloadEndpoint>()
            .map_err(IpamError::from)?;
        if let Some(endpoint) = endpoints
            .items
            .iter()
            .find(|ep| ep.spec.ip_networks.iter().any(|n| n.addr() == address))
        {
            return Err(ReleaseError::InUse {
                address,
                endpoint: endpoint.name().to_string(),
            });
        }
        let blocks = self.store.list_as::<IpamBlock>().map_err(IpamError::from)?;
        let held = blocks.items.iter().find_map(|block| {
            let ordinal = block.ordinal(address)?;
            let handle = block.spec.allocations.get(&ordinal)?;
            Some((handle.clone(), block.spec.cidr))
        });
        let Some((handle, cidr)) = held else {
            return Err(ReleaseError::NotAllocated { address });
        };
        if !self.release_allocation(&handle, cidr, address)? {
            return Err(ReleaseError::Changed { address });
        }
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{Datastore, MemStore};
    use crate::ipam::handle_id;

    fn endpoint(node: &str, pod: &str, address: Ipv4Addr) -> WorkloadEndpoint {
        WorkloadEndpoint::cni_pod(node, pod, Ipv4Net::from(address))
    }

    /// A pool, two pods on node-a with endpoints, and one allocation without an endpoint.
    fn cluster() -> MemStore {
        let store = MemStore::default();
        store
            .create_as(&IpPool::new("p", "10.65.0.0/24".parse().unwrap()))
            .unwrap();
        let ipam = Ipam::new(&store);
        for pod in ["a1", "a2"] {
            let address = ipam
                .assign("node-a", &handle_id("net", pod, "eth0"))
                .unwrap();
            store.create_as(&endpoint("node-a", pod, address)).unwrap();
        }
        ipam.assign("node-b", &handle_id("net", "lost", "eth0"))
            .unwrap();
        store
    }

    #[test]
    fn usage_counts_each_pool_and_block() {
        let store = cluster();
        let usage = Ipam::new(&store).usage().unwrap();
        assert_eq!(
            usage.pools,
            [PoolUsage {
                name: "p".into(),
                cidr: "10.65.0.0/24".parse().unwrap(),
                disabled: false,
                total: 256,
                in_use: 3,
            }]
        );
        let blocks: Vec<_> = usage
            .blocks
            .iter()
            .map(|b| {
                (
                    b.cidr.to_string(),
                    b.node.clone().unwrap(),
                    b.total,
                    b.in_use,
                )
            })
            .collect();
        assert_eq!(
            blocks,
            [
                ("10.65.0.0/26".into(), "node-a".into(), 64, 2),
                ("10.65.0.64/26".into(), "node-b".into(), 64, 1),
            ]
        );
    }

    #[test]
    fn check_finds_leaks_duplicates_orphaned_handles_and_unallocated_addresses() {
        let store = cluster();
        let ipam = Ipam::new(&store);
        let report = ipam.check().unwrap();
        assert_eq!((report.allocations, report.endpoints), (3, 2));
        let leaked: Vec<_> = report
            .leaked
            .iter()
            .map(|l| (l.address.to_string(), l.handle.clone()))
            .collect();
        assert_eq!(
            leaked,
            [("10.65.0.64".to_string(), "net.lost.eth0".to_string())]
        );
        assert!(report.leaked[0].since.is_some(), "the handle's timestamp");
        assert!(report.duplicates.is_empty() && report.orphaned_handles.is_empty());
        assert!(!report.is_clean());

        // An endpoint that claims a2's address too, and one with an address no block has.
        store
            .create_as(&endpoint("node-b", "copy", "10.65.0.1".parse().unwrap()))
            .unwrap();
        store
            .create_as(&endpoint("node-b", "stray", "10.65.0.200".parse().unwrap()))
            .unwrap();
        // A handle whose allocation is gone.
        let mut block = store.get_as::<IpamBlock>("10-65-0-64-26").unwrap().unwrap();
        block.spec.allocations.clear();
        store.update_as(&block).unwrap();
        let report = ipam.check().unwrap();
        assert!(report.leaked.is_empty(), "{report:?}");
        assert_eq!(
            report.duplicates,
            ["10.65.0.1 is used by workload endpoints node-a-cni-a2-eth0, node-b-cni-copy-eth0"]
        );
        assert_eq!(
            report.orphaned_handles,
            ["net.lost.eth0 (10.65.0.64 in 10.65.0.64/26)"]
        );
        assert_eq!(
            report.unallocated,
            ["10.65.0.200 (workload endpoint node-b-cni-stray-eth0) is allocated by no block"]
        );
    }

    #[test]
    fn a_clean_cluster_checks_clean() {
        let store = cluster();
        let ipam = Ipam::new(&store);
        ipam.release("net.lost.eth0").unwrap();
        let report = ipam.check().unwrap();
        assert!(report.is_clean(), "{report:?}");
    }

    #[test]
    fn release_takes_a_leak_and_refuses_an_address_in_use() {
        let store = cluster();
        let ipam = Ipam::new(&store);
        let err = ipam
            .release_address("10.65.0.0".parse().unwrap())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("in use by workload endpoint \"node-a-cni-a1-eth0\""),
            "{err}"
        );
        let err = ipam
            .release_address("10.65.0.99".parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("is not allocated"), "{err}");
        let before = store.revision().unwrap();
        assert_eq!(
            ipam.release_address("10.65.0.64".parse().unwrap()).unwrap(),
            "net.lost.eth0"
        );
        assert!(store.revision().unwrap() > before);
        // Its block was emptied and released with it, and its handle is gone.
        assert!(ipam.check().unwrap().is_clean());
        assert_eq!(ipam.usage().unwrap().blocks.len(), 1);
    }
}
