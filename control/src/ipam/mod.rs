//! IP address management: one address per pod from the cluster's IP pools, never the same
//! address twice, however many CNI ADDs run at once on however many nodes.
//!
//! Pools are cut into blocks (`spec.blockSize`, /26 by default). A node claims a free
//! block on demand by *creating* its [`IpamBlock`] document: the datastore's create is a
//! compare-and-swap, so exactly one claimer wins. Addresses are then taken from the
//! node's own blocks, lowest free ordinal first, by a compare-and-swap update of the
//! block; a conflict means someone else changed the block first, and the operation reads
//! again and retries (bounded, with jittered backoff). Every address of a block is used,
//! including its first and last, as Calico does: pod addresses are /32 routes, so there is
//! no network or broadcast address to avoid. Blocks are never borrowed from other nodes:
//! when no block is free, assignment fails with [`IpamError::ExhaustedPool`].
//!
//! Each allocation is recorded under a handle id (one per pod, e.g. the CNI container
//! id), which makes [`Ipam::assign`] and [`Ipam::release`] idempotent. When a release
//! empties a block, the block and its affinity are deleted, so nothing leaks.
//!
//! Write order, so that a crash at any point leaves a state the next call repairs: claim =
//! block (with the first allocation) → [`BlockAffinity`] → [`IpamHandle`]; assign = block
//! → handle; release = block → (block delete → affinity delete) → handle. The block is the
//! source of truth; affinities and handles are indexes ([`Ipam::repair`] rebuilds them).
//! Addresses inside a [`Node`]'s fixed `podCIDRs` (declared hosts) are never handed out.
//!
//! The blocks are cross-checked against the other records of an address, so that a lost or
//! damaged block document never leads to an address handed out twice: a new allocation
//! never takes an address that an [`IpamHandle`] or a [`WorkloadEndpoint`] holds, a block
//! whose document is damaged keeps its range claimed (its CIDR is in its name), and
//! [`Ipam::repair`] rebuilds a lost block from its handles. Allocations nobody owns (a
//! control killed in the middle of an ADD) are found by [`Ipam::release_orphans`].

mod inspect;

pub use inspect::{BlockUsage, CheckReport, IpamUsage, Leaked, PoolUsage, ReleaseError};

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;

use crate::datastore::{check_name, Damaged, Datastore, DatastoreError, DatastoreExt};
use crate::model::{
    BlockAffinity, IpPool, IpamBlock, IpamHandle, Node, Resource, WorkloadEndpoint,
};

/// How many conflicting rounds an operation tolerates before giving up.
pub const MAX_ATTEMPTS: u32 = 100;

/// Why an address could not be assigned or released.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// There is no enabled, valid IP pool.
    #[error("no enabled IP pool to assign an address to {handle:?} on node {node} from")]
    NoPool { node: String, handle: String },
    /// Every block of every enabled pool is claimed, and this node's blocks are full.
    #[error(
        "IP pools exhausted: no free address for {handle:?} on node {node} (every block of {pools} is claimed by a node or full)"
    )]
    ExhaustedPool {
        node: String,
        handle: String,
        pools: String,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// Too many concurrent writers changed the same documents, round after round.
    #[error("gave up on {handle:?} after {attempts} rounds of conflicting concurrent updates")]
    Contention { handle: String, attempts: u32 },
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
}

/// What [`Ipam::repair`] fixed, and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Affinities written for blocks that had none.
    pub affinities_created: usize,
    /// Affinities removed because their node holds no such block.
    pub affinities_removed: usize,
    /// Handles written for allocations that had none.
    pub handles_created: usize,
    /// Handles removed because no block holds their allocation.
    pub handles_removed: usize,
    /// Empty blocks released.
    pub blocks_released: usize,
    /// Lost blocks written again from their handles.
    pub blocks_rebuilt: usize,
    /// What was left as it is, and why (a damaged block, handles of a lost block whose
    /// node is unknown): those ranges stay out of use until someone repairs them.
    pub unresolved: Vec<String>,
}

/// The IPAM handle of a pod interface: one per (CNI network, container, interface),
/// `"{network}.{container_id}.{ifname}"` (`tapwire` when the network has no name).
pub fn handle_id(network: &str, container_id: &str, ifname: &str) -> String {
    let network = if network.is_empty() {
        "tapwire"
    } else {
        network
    };
    format!("{network}.{container_id}.{ifname}")
}

/// Whether `handle` ([`handle_id`]) is the allocation of `endpoint` (same container and
/// interface, whatever the network).
pub fn handle_owned_by(handle: &str, endpoint: &WorkloadEndpoint) -> bool {
    let Some(container_id) = endpoint.spec.container_id.as_deref() else {
        return false;
    };
    let suffix = format!(".{container_id}.{}", endpoint.spec.endpoint);
    handle
        .strip_suffix(&suffix)
        .is_some_and(|network| !network.is_empty())
}

/// The CIDRs of damaged block documents (from their names): claimed, though unreadable.
fn damaged_block_cidrs(damaged: &[Damaged]) -> Vec<Ipv4Net> {
    damaged
        .iter()
        .filter_map(|d| IpamBlock::cidr_from_name(&d.name))
        .collect()
}

/// The lowest ordinal of `block` that is neither allocated nor held elsewhere, with its
/// address.
fn lowest_unheld(block: &IpamBlock, held: &BTreeSet<Ipv4Addr>) -> Option<(u32, Ipv4Addr)> {
    let mut ordinal = 0u32;
    while let Some(addr) = block.address(ordinal) {
        if !block.spec.allocations.contains_key(&ordinal) && !held.contains(&addr) {
            return Some((ordinal, addr));
        }
        ordinal = ordinal.checked_add(1)?;
    }
    None
}

/// Where a handle's address is.
struct Allocation {
    block: IpamBlock,
    ordinal: u32,
    addr: Ipv4Addr,
}

/// The outcome of one optimistic round.
enum Round<T> {
    Done(T),
    /// A compare-and-swap lost against a concurrent writer: read again.
    Retry,
}

/// IPAM over a datastore. Cheap to create; holds no state of its own, so any number of
/// instances (threads, processes, nodes) can work on the same store.
#[derive(Debug, Clone, Copy)]
pub struct Ipam<'a> {
    store: &'a dyn Datastore,
}

fn conflict(e: &DatastoreError) -> bool {
    matches!(
        e,
        DatastoreError::Conflict { .. }
            | DatastoreError::AlreadyExists { .. }
            | DatastoreError::NotFound { .. }
    )
}

fn check(what: &'static str, value: &str) -> Result<(), IpamError> {
    check_name(value).map_err(|e| match e {
        DatastoreError::InvalidKey { reason, .. } => IpamError::InvalidName {
            what,
            value: value.to_string(),
            reason,
        },
        other => IpamError::Datastore(other),
    })
}

/// Sleeps a little before another round, longer after more conflicts, with jitter so
/// that colliding writers spread out.
fn backoff(attempt: u32) {
    let spread = u64::from(attempt.min(10)) * 2;
    let jitter = RandomState::new().hash_one(attempt) % spread.max(1);
    std::thread::sleep(Duration::from_micros(500 + jitter * 1000));
}

impl<'a> Ipam<'a> {
    pub fn new(store: &'a dyn Datastore) -> Ipam<'a> {
        Ipam { store }
    }

    /// The address of `handle_id` on `node`: the one it already holds, else the lowest
    /// free address of a block affine to `node`, else the first address of a newly
    /// claimed block.
    pub fn assign(&self, node: &str, handle_id: &str) -> Result<Ipv4Addr, IpamError> {
        check("node name", node)?;
        check("handle id", handle_id)?;
        self.retry(handle_id, || self.try_assign(node, handle_id))
    }

    /// Releases the address `handle_id` holds, if any, and the block if it became empty.
    /// Idempotent: releasing an unknown handle is `Ok(None)`.
    pub fn release(&self, handle_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        check("handle id", handle_id)?;
        self.retry(handle_id, || self.try_release(handle_id))
    }

    /// The address `handle_id` holds, if any.
    pub fn lookup(&self, handle_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        check("handle id", handle_id)?;
        Ok(self.find_allocation(handle_id, false)?.1.map(|a| a.addr))
    }

    /// The blocks affine to `node`, by CIDR.
    pub fn blocks_of(&self, node: &str) -> Result<Vec<IpamBlock>, IpamError> {
        let mut blocks: Vec<IpamBlock> = self
            .store
            .list_as::<IpamBlock>()?
            .items
            .into_iter()
            .filter(|b| b.node() == Some(node))
            .collect();
        blocks.sort_by_key(|b| b.spec.cidr);
        Ok(blocks)
    }

    fn retry<T>(
        &self,
        handle_id: &str,
        mut round: impl FnMut() -> Result<Round<T>, IpamError>,
    ) -> Result<T, IpamError> {
        for attempt in 1..=MAX_ATTEMPTS {
            match round()? {
                Round::Done(value) => return Ok(value),
                Round::Retry => backoff(attempt),
            }
        }
        Err(IpamError::Contention {
            handle: handle_id.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Enabled, valid pools, by CIDR.
    fn usable_pools(&self) -> Result<Vec<IpPool>, IpamError> {
        let mut pools: Vec<IpPool> = self
            .store
            .list_as::<IpPool>()?
            .items
            .into_iter()
            .filter(|p| !p.spec.disabled && p.validate().is_ok())
            .collect();
        pools.sort_by_key(|p| p.spec.cidr);
        Ok(pools)
    }

    /// The handle document (if any) and the block + ordinal holding `handle_id`'s
    /// allocation (if any): through the handle document when it is right, else by
    /// scanning blocks (an allocation whose handle write was lost). When the handle's block
    /// is damaged, `strict` makes that an error (an assign cannot tell whether the handle
    /// still holds its address there); otherwise the handle counts as holding nothing.
    fn find_allocation(
        &self,
        handle_id: &str,
        strict: bool,
    ) -> Result<(Option<IpamHandle>, Option<Allocation>), IpamError> {
        let handle = match self.store.get_as::<IpamHandle>(handle_id) {
            Ok(handle) => handle,
            // A damaged handle is only a damaged index: the blocks say where the allocation
            // is, and the handle is written again below.
            Err(e) if e.is_damage() => {
                tracing::warn!(%handle_id, %e, "removing a damaged IPAM handle");
                match self.store.delete(IpamHandle::KIND, handle_id, None) {
                    Ok(()) | Err(DatastoreError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(h) = &handle {
            let block = match self
                .store
                .get_as::<IpamBlock>(&IpamBlock::name_for(h.spec.block))
            {
                Ok(block) => block,
                // Its range stays claimed whatever happens here.
                Err(e) if e.is_damage() && !strict => None,
                Err(e) => return Err(e.into()),
            };
            if let Some(block) = block {
                if let Some(ordinal) = block.ordinal(h.spec.address) {
                    if block.spec.allocations.get(&ordinal).map(String::as_str) == Some(handle_id) {
                        let addr = h.spec.address;
                        return Ok((
                            handle,
                            Some(Allocation {
                                block,
                                ordinal,
                                addr,
                            }),
                        ));
                    }
                }
            }
        }
        let found = self
            .store
            .list_as::<IpamBlock>()?
            .items
            .into_iter()
            .find_map(|block| {
                let ordinal = block.ordinal_of_handle(handle_id)?;
                let addr = block.address(ordinal)?;
                Some(Allocation {
                    block,
                    ordinal,
                    addr,
                })
            });
        Ok((handle, found))
    }

    fn try_assign(&self, node: &str, handle_id: &str) -> Result<Round<Ipv4Addr>, IpamError> {
        // Idempotence: the handle already holds an address.
        let (handle, found) = self.find_allocation(handle_id, true)?;
        if let Some(stale) = &handle {
            let valid = found.as_ref().is_some_and(|a| {
                a.addr == stale.spec.address && a.block.spec.cidr == stale.spec.block
            });
            if valid {
                return Ok(Round::Done(stale.spec.address));
            }
            // A handle document that does not match the blocks (a crash half-way).
            match self
                .store
                .delete_as::<IpamHandle>(handle_id, stale.metadata.revision())
            {
                Ok(()) => {}
                Err(e) if conflict(&e) => return Ok(Round::Retry),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(a) = found {
            // Allocated, but the handle write was lost.
            return self.record_handle(handle_id, a.block.spec.cidr, a.addr);
        }

        let pools = self.usable_pools()?;
        if pools.is_empty() {
            return Err(IpamError::NoPool {
                node: node.to_string(),
                handle: handle_id.to_string(),
            });
        }
        let listing = self.store.list_as::<IpamBlock>()?;
        let blocks = listing.items;
        let held = self.held_addresses()?;

        // A free address in one of this node's blocks.
        let mut mine: Vec<&IpamBlock> = blocks
            .iter()
            .filter(|b| b.node() == Some(node))
            .filter(|b| pools.iter().any(|p| p.spec.cidr.contains(&b.spec.cidr)))
            .collect();
        mine.sort_by_key(|b| b.spec.cidr);
        if let Some((block, (ordinal, addr))) = mine
            .into_iter()
            .find_map(|b| Some((b, lowest_unheld(b, &held)?)))
        {
            let mut updated = block.clone();
            updated
                .spec
                .allocations
                .insert(ordinal, handle_id.to_string());
            return match self.store.update_as(&updated) {
                Ok(_) => self.record_handle(handle_id, block.spec.cidr, addr),
                Err(e) if conflict(&e) => Ok(Round::Retry),
                Err(e) => Err(e.into()),
            };
        }

        // Claim a new block, with this handle's allocation already in it.
        let reserved: Vec<Ipv4Net> = self
            .store
            .list_as::<Node>()?
            .items
            .into_iter()
            .flat_map(|n| n.spec.pod_cidrs)
            .collect();
        let mut claimed: Vec<Ipv4Net> = blocks.iter().map(|b| b.spec.cidr).collect();
        claimed.extend(damaged_block_cidrs(&listing.damaged));
        let Some(cidr) = free_block(&pools, &claimed, &reserved, &held) else {
            return Err(IpamError::ExhaustedPool {
                node: node.to_string(),
                handle: handle_id.to_string(),
                pools: pools
                    .iter()
                    .map(|p| format!("{} ({})", p.name(), p.spec.cidr))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let mut block = IpamBlock::new(cidr, node);
        block.spec.allocations.insert(0, handle_id.to_string());
        match self.store.create_as(&block) {
            Ok(_) => {}
            Err(e) if conflict(&e) => return Ok(Round::Retry),
            Err(e) => return Err(e.into()),
        }
        self.ensure_affinity(node, cidr)?;
        self.record_handle(handle_id, cidr, cidr.network())
    }

    /// Every address some record holds besides the blocks: the handles' and the workload
    /// endpoints'. A new allocation never takes one of these, so that a block document that
    /// was lost (and a range claimed again) cannot lead to an address in use twice.
    fn held_addresses(&self) -> Result<BTreeSet<Ipv4Addr>, IpamError> {
        let mut held: BTreeSet<Ipv4Addr> = self
            .store
            .list_as::<IpamHandle>()?
            .items
            .iter()
            .map(|h| h.spec.address)
            .collect();
        for endpoint in self.store.list_as::<WorkloadEndpoint>()?.items {
            held.extend(endpoint.spec.ip_networks.iter().map(|n| n.addr()));
        }
        Ok(held)
    }

    /// Writes the handle document of an allocation just made.
    fn record_handle(
        &self,
        handle_id: &str,
        block: Ipv4Net,
        addr: Ipv4Addr,
    ) -> Result<Round<Ipv4Addr>, IpamError> {
        match self
            .store
            .create_as(&IpamHandle::new(handle_id, block, addr, SystemTime::now()))
        {
            Ok(_) => Ok(Round::Done(addr)),
            Err(e) if conflict(&e) => {
                // Someone recorded this handle meanwhile: a repair that found our
                // allocation (then it is ours), or a concurrent assign of the same handle
                // (then theirs stands and ours is undone, so that one handle never holds
                // two addresses). The next round returns whichever stands.
                let existing = self.store.get_as::<IpamHandle>(handle_id)?;
                if existing.is_some_and(|h| h.spec.block == block && h.spec.address == addr) {
                    return Ok(Round::Done(addr));
                }
                self.undo_allocation(handle_id, block, addr)?;
                Ok(Round::Retry)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `handle_id`'s allocation of `addr` from block `cidr`, if it is still there.
    fn undo_allocation(
        &self,
        handle_id: &str,
        cidr: Ipv4Net,
        addr: Ipv4Addr,
    ) -> Result<(), IpamError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(block) = self.store.get_as::<IpamBlock>(&IpamBlock::name_for(cidr))? else {
                return Ok(());
            };
            let Some(ordinal) = block.ordinal(addr) else {
                return Ok(());
            };
            if block.spec.allocations.get(&ordinal).map(String::as_str) != Some(handle_id) {
                return Ok(());
            }
            if self.free_ordinal(block, ordinal)? {
                return Ok(());
            }
        }
        Err(IpamError::Contention {
            handle: handle_id.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Frees `ordinal` of `block` (as read) with a compare-and-swap, and releases the block
    /// if that emptied it. `false` when a concurrent writer changed the block first.
    fn free_ordinal(&self, mut block: IpamBlock, ordinal: u32) -> Result<bool, IpamError> {
        block.spec.allocations.remove(&ordinal);
        let stored = match self.store.update_as(&block) {
            Ok(stored) => stored,
            Err(e) if conflict(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if stored.spec.allocations.is_empty() {
            self.release_empty_block(&stored)?;
        }
        Ok(true)
    }

    /// Makes sure the affinity index names `node` for `cidr`. When it already exists, it
    /// is rewritten, so that a release that read it earlier fails its compare-and-swap
    /// delete instead of removing the affinity of a block that was just re-claimed.
    fn ensure_affinity(&self, node: &str, cidr: Ipv4Net) -> Result<(), IpamError> {
        let affinity = BlockAffinity::new(node, cidr);
        for _ in 0..MAX_ATTEMPTS {
            let existing = match self.store.get_as::<BlockAffinity>(affinity.name()) {
                Ok(existing) => existing,
                // Only an index: a damaged one is written again.
                Err(e) if e.is_damage() => {
                    match self
                        .store
                        .delete(BlockAffinity::KIND, affinity.name(), None)
                    {
                        Ok(()) | Err(DatastoreError::NotFound { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let result = match existing {
                None => self.store.create_as(&affinity),
                Some(existing) => self.store.update_as(&existing),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            handle: affinity.name().to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    fn try_release(&self, handle_id: &str) -> Result<Round<Option<Ipv4Addr>>, IpamError> {
        let (handle, found) = self.find_allocation(handle_id, false)?;
        let mut released = None;
        if let Some(Allocation {
            block,
            ordinal,
            addr,
        }) = found
        {
            released = Some(addr);
            if !self.free_ordinal(block, ordinal)? {
                return Ok(Round::Retry);
            }
        }
        if let Some(handle) = handle {
            match self
                .store
                .delete_as::<IpamHandle>(handle_id, handle.metadata.revision())
            {
                Ok(()) => {}
                // Already gone: someone else finished this release.
                Err(DatastoreError::NotFound { .. }) => {}
                Err(e) if conflict(&e) => return Ok(Round::Retry),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Round::Done(released))
    }

    /// Deletes a block that was empty at the revision read, then its affinity. Losing the
    /// compare-and-swap means someone allocated from it meanwhile: then it stays.
    fn release_empty_block(&self, block: &IpamBlock) -> Result<bool, IpamError> {
        match self
            .store
            .delete_as::<IpamBlock>(block.name(), block.metadata.revision())
        {
            Ok(()) => {}
            Err(e) if conflict(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if let Some(node) = block.node() {
            self.remove_stale_affinity(node, block.spec.cidr)?;
        }
        Ok(true)
    }

    /// Removes `node`'s affinity for `cidr` unless `node` holds that block (again). The
    /// affinity's revision is read before the block, and a claim writes the block before
    /// rewriting the affinity, so a concurrent re-claim always survives.
    fn remove_stale_affinity(&self, node: &str, cidr: Ipv4Net) -> Result<bool, IpamError> {
        let name = BlockAffinity::name_for(node, cidr);
        let Some(affinity) = self.store.get_as::<BlockAffinity>(&name)? else {
            return Ok(false);
        };
        let block = match self.store.get_as::<IpamBlock>(&IpamBlock::name_for(cidr)) {
            Ok(block) => block,
            // Whose it is cannot be read: the affinity may be the only record of it.
            Err(e) if e.is_damage() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if block.is_some_and(|b| b.node() == Some(node)) {
            return Ok(false);
        }
        match self
            .store
            .delete_as::<BlockAffinity>(&name, affinity.metadata.revision())
        {
            Ok(()) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Brings the indexes back in line with the blocks after a crash: affinities for
    /// blocks without one, no affinity without its block, a handle for every allocation,
    /// no handle whose block does not hold it, no empty block; and a block whose document
    /// was lost is written again from its handles, affine to the node its affinity or its
    /// endpoints name. What it cannot decide (a damaged block, lost blocks of an unknown
    /// node) is left as it is, its range out of use, and listed in
    /// [`RepairReport::unresolved`]. Safe to run while other IPAM operations are in flight
    /// (it uses the same compare-and-swap steps they do).
    pub fn repair(&self) -> Result<RepairReport, IpamError> {
        let mut report = RepairReport::default();
        // One listing of each kind, checked in memory: a cluster of thousands of nodes is
        // three reads, not one per document. Only what is wrong is written, each write a
        // compare-and-swap against the revision listed (or re-checked by the step). The
        // indexes are listed before the blocks: an assign writes its block before its
        // handle, so every handle listed has its allocation in the blocks listed after.
        let handles = self.store.list_as::<IpamHandle>()?;
        let affinities = self.store.list_as::<BlockAffinity>()?;
        let blocks = self.store.list_as::<IpamBlock>()?;
        for damaged in &blocks.damaged {
            report.unresolved.push(format!(
                "{damaged}; its range stays out of use until it is deleted or rewritten"
            ));
        }
        let affinity_names: BTreeSet<&str> = affinities.items.iter().map(|a| a.name()).collect();
        // Damaged handles are rewritten by the next assign or release of the handle.
        let handle_names: BTreeSet<&str> = handles
            .items
            .iter()
            .map(|h| h.name())
            .chain(handles.damaged.iter().map(|d| d.name.as_str()))
            .collect();
        for block in &blocks.items {
            if block.spec.allocations.is_empty() {
                if self.release_empty_block(block)? {
                    report.blocks_released += 1;
                }
                continue;
            }
            if let Some(node) = block.node() {
                let name = BlockAffinity::name_for(node, block.spec.cidr);
                if !affinity_names.contains(name.as_str()) {
                    self.ensure_affinity(node, block.spec.cidr)?;
                    report.affinities_created += 1;
                }
            }
            for (&ordinal, handle_id) in &block.spec.allocations {
                let (Some(addr), Ok(())) = (block.address(ordinal), check_name(handle_id)) else {
                    continue;
                };
                if !handle_names.contains(handle_id.as_str()) {
                    let doc = IpamHandle::new(handle_id, block.spec.cidr, addr, SystemTime::now());
                    match self.store.create_as(&doc) {
                        Ok(_) => report.handles_created += 1,
                        Err(e) if conflict(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let by_name: BTreeMap<&str, &IpamBlock> =
            blocks.items.iter().map(|b| (b.name(), b)).collect();
        let damaged_blocks: BTreeSet<&str> =
            blocks.damaged.iter().map(|d| d.name.as_str()).collect();
        let mut lost: BTreeMap<Ipv4Net, Vec<IpamHandle>> = BTreeMap::new();
        for handle in handles.items {
            let block_name = IpamBlock::name_for(handle.spec.block);
            let Some(block) = by_name.get(block_name.as_str()) else {
                // Kept when the block is damaged: it tells which address was in use.
                if !damaged_blocks.contains(block_name.as_str()) {
                    lost.entry(handle.spec.block).or_default().push(handle);
                }
                continue;
            };
            let holds = block
                .ordinal(handle.spec.address)
                .and_then(|ordinal| block.spec.allocations.get(&ordinal));
            if holds.map(String::as_str) != Some(handle.name()) {
                match self
                    .store
                    .delete_as::<IpamHandle>(handle.name(), handle.metadata.revision())
                {
                    Ok(()) => report.handles_removed += 1,
                    Err(e) if conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for (cidr, handles) in lost {
            self.rebuild_block(cidr, &handles, &mut report)?;
        }
        // After the rebuilds, which write affinities of their own; an affinity that looks
        // stale in the listing is checked again by `remove_stale_affinity`.
        for affinity in &affinities.items {
            let held = by_name
                .get(IpamBlock::name_for(affinity.spec.cidr).as_str())
                .is_some_and(|b| b.node() == Some(affinity.spec.node.as_str()));
            if !held && self.remove_stale_affinity(&affinity.spec.node, affinity.spec.cidr)? {
                report.affinities_removed += 1;
            }
        }
        Ok(report)
    }

    /// Writes block `cidr` again from the handles that name it, affine to the node its
    /// affinity (else its handles' endpoints) names; reports instead when that node is
    /// not known for sure or the range is now inside another block. Handles that neither
    /// an affinity nor any endpoint vouches for are what a release interrupted between
    /// deleting the empty block and deleting the handle leaves: no pod uses their
    /// addresses, and they are removed (else they would keep the range out of use forever).
    fn rebuild_block(
        &self,
        cidr: Ipv4Net,
        handles: &[IpamHandle],
        report: &mut RepairReport,
    ) -> Result<(), IpamError> {
        let addresses: Vec<String> = handles
            .iter()
            .map(|h| format!("{} ({})", h.spec.address, h.name()))
            .collect();
        let mut unresolved = |why: String| {
            report.unresolved.push(format!(
                "block {cidr} is lost; handles {} name it, but {why}; the handles are kept and the range stays out of use",
                addresses.join(", ")
            ));
        };
        let blocks = self.store.list_as::<IpamBlock>()?;
        if let Some(other) = blocks
            .items
            .iter()
            .map(|b| b.spec.cidr)
            .chain(damaged_block_cidrs(&blocks.damaged))
            .find(|other| crate::model::nets_overlap(*other, cidr))
        {
            unresolved(format!("block {other} now overlaps it"));
            return Ok(());
        }
        let by_affinity: BTreeSet<String> = self
            .store
            .list_as::<BlockAffinity>()?
            .items
            .into_iter()
            .filter(|a| a.spec.cidr == cidr)
            .map(|a| a.spec.node)
            .collect();
        let by_endpoint: BTreeSet<String> = self
            .store
            .list_as::<WorkloadEndpoint>()?
            .items
            .into_iter()
            .filter(|ep| {
                handles.iter().any(|h| handle_owned_by(h.name(), ep))
                    || ep
                        .spec
                        .ip_networks
                        .iter()
                        .any(|n| handles.iter().any(|h| h.spec.address == n.addr()))
            })
            .map(|ep| ep.spec.node)
            .collect();
        if by_affinity.is_empty() && by_endpoint.is_empty() {
            for handle in handles {
                match self
                    .store
                    .delete_as::<IpamHandle>(handle.name(), handle.metadata.revision())
                {
                    Ok(()) => report.handles_removed += 1,
                    Err(e) if conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(());
        }
        let node = match (by_affinity.len(), by_endpoint.len()) {
            (1, _) => by_affinity.iter().next().cloned(),
            (0, 1) => by_endpoint.iter().next().cloned(),
            _ => None,
        };
        let Some(node) = node else {
            unresolved(format!(
                "its node is not known for sure (affinities: {by_affinity:?}, endpoints' nodes: {by_endpoint:?})"
            ));
            return Ok(());
        };
        let mut block = IpamBlock::new(cidr, &node);
        for handle in handles {
            let Some(ordinal) = block.ordinal(handle.spec.address) else {
                continue;
            };
            block
                .spec
                .allocations
                .entry(ordinal)
                .or_insert_with(|| handle.name().to_string());
        }
        if block.spec.allocations.is_empty() {
            unresolved("none of their addresses is inside it".into());
            return Ok(());
        }
        match self.store.create_as(&block) {
            Ok(_) => report.blocks_rebuilt += 1,
            // Someone else wrote it meanwhile (another repair): theirs stands.
            Err(e) if conflict(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        self.ensure_affinity(&node, cidr)
    }

    /// Releases every address of `node`'s blocks, and so the blocks and their affinities:
    /// what `tapwirectl delete node` does for a node that is gone for good, as Calico's
    /// IPAM garbage collection does. Returns what was released.
    pub fn release_node(&self, node: &str) -> Result<Vec<(String, Ipv4Addr)>, IpamError> {
        self.release_orphans(node, &[], Duration::ZERO, SystemTime::now())
    }

    /// Releases every allocation of a block affine to `node` that no endpoint of
    /// `endpoints` owns ([`handle_owned_by`]) and that is at least `min_age` old at `now`:
    /// what a control killed in the middle of ADDs leaves. An allocation without a handle,
    /// or whose handle has no timestamp, counts as made at `now` (its handle is written
    /// with `now`), so it goes on a later sweep; with `min_age` zero (no ADD can be in
    /// flight) everything orphaned goes at once. `endpoints` must be read after the
    /// allocations it should protect were made (an ADD writes its endpoint last, so an
    /// ADD in flight is protected by `min_age` instead). Each release is a compare-and-swap
    /// like [`Ipam::release`], so concurrent assigns are safe. Returns what was released.
    pub fn release_orphans(
        &self,
        node: &str,
        endpoints: &[WorkloadEndpoint],
        min_age: Duration,
        now: SystemTime,
    ) -> Result<Vec<(String, Ipv4Addr)>, IpamError> {
        check("node name", node)?;
        let mut released = Vec::new();
        for block in self.blocks_of(node)? {
            for (&ordinal, handle_id) in &block.spec.allocations {
                if endpoints.iter().any(|ep| handle_owned_by(handle_id, ep)) {
                    continue;
                }
                let Some(addr) = block.address(ordinal) else {
                    continue;
                };
                let age = self.allocation_age(handle_id, block.spec.cidr, addr, min_age, now)?;
                if age < min_age {
                    continue;
                }
                if self.release_allocation(handle_id, block.spec.cidr, addr)? {
                    released.push((handle_id.clone(), addr));
                }
            }
        }
        Ok(released)
    }

    /// How old `handle_id`'s allocation of `addr` in `cidr` is, by its handle; zero when
    /// that is not recorded, after recording `now` (unless `min_age` is zero, when the age
    /// does not matter).
    fn allocation_age(
        &self,
        handle_id: &str,
        cidr: Ipv4Net,
        addr: Ipv4Addr,
        min_age: Duration,
        now: SystemTime,
    ) -> Result<Duration, IpamError> {
        let handle = match self.store.get_as::<IpamHandle>(handle_id) {
            Ok(handle) => handle,
            Err(e) if e.is_damage() || check_name(handle_id).is_err() => return Ok(Duration::ZERO),
            Err(e) => return Err(e.into()),
        };
        let ours = handle
            .as_ref()
            .filter(|h| h.spec.block == cidr && h.spec.address == addr);
        if let Some(at) = ours.and_then(IpamHandle::allocated_at) {
            return Ok(now.duration_since(at).unwrap_or(Duration::ZERO));
        }
        if min_age.is_zero() {
            return Ok(Duration::ZERO);
        }
        // Start the clock: write the handle (with `now`) as repair would.
        let result = match (&handle, ours) {
            (None, _) => self
                .store
                .create_as(&IpamHandle::new(handle_id, cidr, addr, now))
                .map(|_| ()),
            (Some(h), Some(_)) => {
                let mut stamped = h.clone();
                stamped.spec.timestamp = Some(crate::model::format_rfc3339(now));
                self.store.update_as(&stamped).map(|_| ())
            }
            // A handle naming another address: a repair's business, not ours.
            (Some(_), None) => Ok(()),
        };
        match result {
            Ok(()) => Ok(Duration::ZERO),
            Err(e) if conflict(&e) => Ok(Duration::ZERO),
            Err(e) => Err(e.into()),
        }
    }

    /// Frees `handle_id`'s allocation of `addr` in `cidr` if it is still there, then its
    /// handle if that still names it. `false` when the allocation was already gone.
    fn release_allocation(
        &self,
        handle_id: &str,
        cidr: Ipv4Net,
        addr: Ipv4Addr,
    ) -> Result<bool, IpamError> {
        let mut freed = false;
        for attempt in 1..=MAX_ATTEMPTS {
            let Some(block) = self.store.get_as::<IpamBlock>(&IpamBlock::name_for(cidr))? else {
                break;
            };
            let Some(ordinal) = block.ordinal(addr) else {
                break;
            };
            if block.spec.allocations.get(&ordinal).map(String::as_str) != Some(handle_id) {
                break;
            }
            if self.free_ordinal(block, ordinal)? {
                freed = true;
                break;
            }
            if attempt == MAX_ATTEMPTS {
                return Err(IpamError::Contention {
                    handle: handle_id.to_string(),
                    attempts: MAX_ATTEMPTS,
                });
            }
            backoff(attempt);
        }
        if !freed {
            return Ok(false);
        }
        let handle = match self.store.get_as::<IpamHandle>(handle_id) {
            Ok(handle) => handle,
            Err(e) if e.is_damage() || check_name(handle_id).is_err() => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(h) = handle.filter(|h| h.spec.block == cidr && h.spec.address == addr) {
            match self
                .store
                .delete_as::<IpamHandle>(h.name(), h.metadata.revision())
            {
                Ok(()) => {}
                Err(e) if conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}

/// The lowest block of the first pool that has one which is neither claimed (nor
/// overlapping a claimed block of another size) nor inside a declared host's pod CIDRs,
/// and holds no address that is `held` elsewhere.
fn free_block(
    pools: &[IpPool],
    claimed_blocks: &[Ipv4Net],
    reserved: &[Ipv4Net],
    held: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Net> {
    // Claimed ranges by first address → last address; claimed blocks never overlap, so
    // the nearest range starting at or before a candidate's end is the only one to check.
    let claimed: BTreeMap<u32, u32> = claimed_blocks
        .iter()
        .map(|b| (u32::from(b.network()), u32::from(b.broadcast())))
        .collect();
    let exact: BTreeSet<Ipv4Net> = claimed_blocks.iter().copied().collect();
    for pool in pools {
        let Ok(candidates) = pool.spec.cidr.subnets(pool.spec.block_size) else {
            continue;
        };
        for cidr in candidates {
            if exact.contains(&cidr) {
                continue;
            }
            let (start, end) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
            let overlaps_claimed = claimed
                .range(..=end)
                .next_back()
                .is_some_and(|(_, &claimed_end)| claimed_end >= start);
            let overlaps_reserved = reserved
                .iter()
                .any(|r| crate::model::nets_overlap(*r, cidr));
            let holds_held = held
                .range(cidr.network()..=cidr.broadcast())
                .next()
                .is_some();
            if !overlaps_claimed && !overlaps_reserved && !holds_held {
                return Some(cidr);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::MemStore;
    use crate::model::EncapMode;

    fn pool(name: &str, cidr: &str, block_size: u8) -> IpPool {
        let mut p = IpPool::new(name, cidr.parse().unwrap());
        p.spec.block_size = block_size;
        p
    }

    fn store_with(pools: &[IpPool]) -> MemStore {
        let store = MemStore::new();
        for p in pools {
            store.create_as(p).unwrap();
        }
        store
    }

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn first_addresses_come_from_one_claimed_block_per_node() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        assert_eq!(ipam.assign("node-a", "h1").unwrap(), addr("10.65.0.0"));
        assert_eq!(ipam.assign("node-a", "h2").unwrap(), addr("10.65.0.1"));
        assert_eq!(ipam.assign("node-b", "h3").unwrap(), addr("10.65.0.64"));
        let blocks = ipam.blocks_of("node-a").unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].spec.cidr.to_string(), "10.65.0.0/26");
        let affinities = store.list_as::<BlockAffinity>().unwrap().items;
        let names: Vec<_> = affinities.iter().map(|a| a.name().to_string()).collect();
        assert_eq!(names, ["node-a-10-65-0-0-26", "node-b-10-65-0-64-26"]);
    }

    #[test]
    fn assign_is_idempotent_per_handle() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        let first = ipam.assign("node-a", "h1").unwrap();
        assert_eq!(ipam.assign("node-a", "h1").unwrap(), first);
        assert_eq!(ipam.lookup("h1").unwrap(), Some(first));
        assert_eq!(store.list_as::<IpamHandle>().unwrap().items.len(), 1);
    }

    #[test]
    fn release_frees_the_address_and_the_empty_block() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        let a = ipam.assign("node-a", "h1").unwrap();
        let b = ipam.assign("node-a", "h2").unwrap();
        assert_eq!(ipam.release("h1").unwrap(), Some(a));
        assert_eq!(ipam.release("h1").unwrap(), None, "release is idempotent");
        // The lowest free ordinal is reused.
        assert_eq!(ipam.assign("node-a", "h3").unwrap(), a);
        assert_eq!(ipam.release("h2").unwrap(), Some(b));
        assert_eq!(ipam.release("h3").unwrap(), Some(a));
        assert!(store.list_as::<IpamBlock>().unwrap().items.is_empty());
        assert!(store.list_as::<BlockAffinity>().unwrap().items.is_empty());
        assert!(store.list_as::<IpamHandle>().unwrap().items.is_empty());
        assert_eq!(ipam.release("never-assigned").unwrap(), None);
    }

    #[test]
    fn a_full_block_leads_to_a_second_block() {
        let store = store_with(&[pool("p", "10.65.0.0/28", 30)]);
        let ipam = Ipam::new(&store);
        let got: Vec<_> = (0..5)
            .map(|i| ipam.assign("node-a", &format!("h{i}")).unwrap())
            .collect();
        assert_eq!(got[3], addr("10.65.0.3"));
        assert_eq!(got[4], addr("10.65.0.4"));
        assert_eq!(ipam.blocks_of("node-a").unwrap().len(), 2);
    }

    #[test]
    fn an_exhausted_pool_is_a_clear_error_and_changes_nothing() {
        let store = store_with(&[pool("tiny", "10.65.0.0/30", 31)]);
        let ipam = Ipam::new(&store);
        for i in 0..4 {
            ipam.assign("node-a", &format!("h{i}")).unwrap();
        }
        let before = store.revision().unwrap();
        let err = ipam.assign("node-b", "h9").unwrap_err();
        assert!(matches!(err, IpamError::ExhaustedPool { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("exhausted") && msg.contains("tiny (10.65.0.0/30)"),
            "{msg}"
        );
        assert_eq!(store.revision().unwrap(), before, "nothing written");
    }

    #[test]
    fn disabled_and_invalid_pools_are_not_used() {
        let mut disabled = pool("off", "10.65.0.0/16", 26);
        disabled.spec.disabled = true;
        let mut both = pool("both", "10.66.0.0/16", 26);
        both.spec.ipip_mode = EncapMode::Always;
        both.spec.vxlan_mode = EncapMode::Always;
        let store = store_with(&[disabled.clone(), both]);
        let ipam = Ipam::new(&store);
        let err = ipam.assign("node-a", "h1").unwrap_err();
        assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
        store.create_as(&pool("on", "10.67.0.0/16", 26)).unwrap();
        assert_eq!(ipam.assign("node-a", "h1").unwrap(), addr("10.67.0.0"));
    }

    #[test]
    fn declared_pod_cidrs_are_never_handed_out() {
        let store = store_with(&[pool("p", "10.65.0.0/24", 26)]);
        let mut external = Node::new("kernel-host", "192.168.0.9/24".parse().unwrap());
        external.spec.pod_cidrs = vec!["10.65.0.0/26".parse().unwrap()];
        store.create_as(&external).unwrap();
        let ipam = Ipam::new(&store);
        assert_eq!(ipam.assign("node-a", "h1").unwrap(), addr("10.65.0.64"));
    }

    #[test]
    fn blocks_of_another_size_are_not_overlapped() {
        // A /24 block left over from a deleted pool that used /24 blocks.
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let old = IpamBlock {
            spec: crate::model::IpamBlockSpec {
                allocations: BTreeMap::from([(5, "old".to_string())]),
                ..IpamBlock::new("10.65.0.0/24".parse().unwrap(), "node-z").spec
            },
            ..IpamBlock::new("10.65.0.0/24".parse().unwrap(), "node-z")
        };
        store.create_as(&old).unwrap();
        let ipam = Ipam::new(&store);
        assert_eq!(ipam.assign("node-a", "h1").unwrap(), addr("10.65.1.0"));
    }

    #[test]
    fn names_that_cannot_be_keys_are_rejected() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        let err = ipam.assign("node-a", "../etc/passwd").unwrap_err();
        assert!(
            matches!(
                err,
                IpamError::InvalidName {
                    what: "handle id",
                    ..
                }
            ),
            "{err}"
        );
        assert!(ipam.assign("", "h").is_err());
        assert!(ipam.release("a/b").is_err());
    }

    #[test]
    fn repair_rebuilds_indexes_after_a_crash() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        let a = ipam.assign("node-a", "h1").unwrap();
        ipam.assign("node-a", "h2").unwrap();
        // Crash after the block write: no handle, no affinity.
        store.delete_as::<IpamHandle>("h1", None).unwrap();
        store
            .delete_as::<BlockAffinity>("node-a-10-65-0-0-26", None)
            .unwrap();
        // A handle whose allocation is gone, and an affinity without a block.
        store
            .create_as(&IpamHandle::new(
                "ghost",
                "10.65.0.0/26".parse().unwrap(),
                addr("10.65.0.9"),
                SystemTime::now(),
            ))
            .unwrap();
        store
            .create_as(&BlockAffinity::new(
                "node-q",
                "10.65.9.0/26".parse().unwrap(),
            ))
            .unwrap();
        let report = ipam.repair().unwrap();
        assert_eq!(
            report,
            RepairReport {
                affinities_created: 1,
                affinities_removed: 1,
                handles_created: 1,
                handles_removed: 1,
                blocks_released: 0,
                ..RepairReport::default()
            }
        );
        assert_eq!(ipam.repair().unwrap(), RepairReport::default());
        // Without the handle document, assign and release still find the allocation.
        store.delete_as::<IpamHandle>("h1", None).unwrap();
        assert_eq!(ipam.assign("node-a", "h1").unwrap(), a);
        store.delete_as::<IpamHandle>("h1", None).unwrap();
        assert_eq!(ipam.release("h1").unwrap(), Some(a));
    }

    fn endpoint(node: &str, container_id: &str, address: Ipv4Addr) -> WorkloadEndpoint {
        WorkloadEndpoint::cni_pod(node, container_id, Ipv4Net::from(address))
    }

    fn pod_handle(container_id: &str) -> String {
        handle_id("k8s-pod-network", container_id, "eth0")
    }

    #[test]
    fn handle_ids_and_their_endpoints() {
        assert_eq!(handle_id("net", "c1", "eth0"), "net.c1.eth0");
        assert_eq!(handle_id("", "c1", "eth0"), "tapwire.c1.eth0");
        let ep = endpoint("node-a", "c1", addr("10.65.0.1"));
        assert!(handle_owned_by("net.c1.eth0", &ep));
        assert!(handle_owned_by("tapwire.c1.eth0", &ep));
        assert!(!handle_owned_by("net.c1.eth1", &ep));
        assert!(!handle_owned_by("net.xc1.eth0", &ep));
        assert!(!handle_owned_by(".c1.eth0", &ep));
        let mut no_container = ep.clone();
        no_container.spec.container_id = None;
        assert!(!handle_owned_by("net.c1.eth0", &no_container));
    }

    #[test]
    fn orphans_of_a_crash_are_released_and_owned_allocations_kept() {
        // A control killed during 20 ADDs: 20 allocations, endpoints for 8.
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        let mut endpoints = Vec::new();
        for i in 0..20 {
            let container = format!("c{i}");
            let a = ipam.assign("node-a", &pod_handle(&container)).unwrap();
            if i % 5 < 2 {
                endpoints.push(endpoint("node-a", &container, a));
            }
        }
        // Another node's allocation without an endpoint is not this node's business.
        let elsewhere = ipam.assign("node-b", &pod_handle("b1")).unwrap();
        let released = ipam
            .release_orphans("node-a", &endpoints, Duration::ZERO, SystemTime::now())
            .unwrap();
        assert_eq!(released.len(), 12, "{released:?}");
        for ep in &endpoints {
            let handle = pod_handle(ep.spec.container_id.as_deref().unwrap());
            assert_eq!(
                ipam.lookup(&handle).unwrap(),
                Some(ep.spec.ip_networks[0].addr())
            );
        }
        let blocks = ipam.blocks_of("node-a").unwrap();
        let allocated: usize = blocks.iter().map(|b| b.spec.allocations.len()).sum();
        assert_eq!(allocated, 8);
        assert_eq!(store.list_as::<IpamHandle>().unwrap().items.len(), 9);
        assert_eq!(ipam.lookup(&pod_handle("b1")).unwrap(), Some(elsewhere));
        // Nothing more to do.
        let again = ipam
            .release_orphans("node-a", &endpoints, Duration::ZERO, SystemTime::now())
            .unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn young_orphans_are_left_for_a_later_sweep() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        let min_age = Duration::from_secs(60);
        let now = SystemTime::now();
        let young = ipam.assign("node-a", &pod_handle("young")).unwrap();
        // An allocation whose handle write was lost, and one whose handle has no time.
        let lost = ipam.assign("node-a", &pod_handle("lost")).unwrap();
        store
            .delete_as::<IpamHandle>(&pod_handle("lost"), None)
            .unwrap();
        let untimed = ipam.assign("node-a", &pod_handle("untimed")).unwrap();
        let mut handle = store
            .get_as::<IpamHandle>(&pod_handle("untimed"))
            .unwrap()
            .unwrap();
        handle.spec.timestamp = None;
        store.update_as(&handle).unwrap();

        // In flight as far as anyone can tell: nothing goes, and the clock starts for the
        // two without a time.
        let released = ipam.release_orphans("node-a", &[], min_age, now).unwrap();
        assert!(released.is_empty(), "{released:?}");
        for h in ["lost", "untimed"] {
            let handle = store.get_as::<IpamHandle>(&pod_handle(h)).unwrap().unwrap();
            assert!(handle.allocated_at().is_some(), "{h}");
        }
        // Later, all three are old enough.
        let later = now + Duration::from_secs(120);
        let mut released = ipam.release_orphans("node-a", &[], min_age, later).unwrap();
        released.sort();
        let mut expected = vec![
            (pod_handle("lost"), lost),
            (pod_handle("untimed"), untimed),
            (pod_handle("young"), young),
        ];
        expected.sort();
        assert_eq!(released, expected);
        assert!(store.list_as::<IpamBlock>().unwrap().items.is_empty());
        assert!(store.list_as::<IpamHandle>().unwrap().items.is_empty());
        assert!(store.list_as::<BlockAffinity>().unwrap().items.is_empty());
    }

    #[test]
    fn a_sweep_never_releases_an_add_in_flight() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let ipam = Ipam::new(&store);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let released = ipam
                        .release_orphans("node-a", &[], Duration::from_secs(60), SystemTime::now())
                        .unwrap();
                    assert!(released.is_empty(), "{released:?}");
                }
            });
            let ipam = Ipam::new(&store);
            let mut got = BTreeSet::new();
            for i in 0..40 {
                assert!(got.insert(
                    ipam.assign("node-a", &pod_handle(&format!("c{i}")))
                        .unwrap()
                ));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let ipam = Ipam::new(&store);
        for i in 0..40 {
            assert!(ipam
                .lookup(&pod_handle(&format!("c{i}")))
                .unwrap()
                .is_some());
        }
    }

    #[test]
    fn a_lost_block_is_rebuilt_from_its_handles() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        let a = ipam.assign("node-a", "h1").unwrap();
        let b = ipam.assign("node-a", "h2").unwrap();
        store.delete_as::<IpamBlock>("10-65-0-0-26", None).unwrap();
        // Before any repair, the next ADD hands out nothing in use.
        let c = ipam.assign("node-b", "h3").unwrap();
        assert!(![a, b].contains(&c), "{c} handed out twice");
        assert_eq!(c, addr("10.65.0.64"));

        let report = ipam.repair().unwrap();
        assert_eq!(report.blocks_rebuilt, 1, "{report:?}");
        assert!(report.unresolved.is_empty(), "{report:?}");
        let block = store.get_as::<IpamBlock>("10-65-0-0-26").unwrap().unwrap();
        assert_eq!(block.node(), Some("node-a"));
        assert_eq!(
            block.spec.allocations,
            BTreeMap::from([(0, "h1".to_string()), (1, "h2".to_string())])
        );
        assert_eq!(ipam.lookup("h1").unwrap(), Some(a));
        assert_eq!(ipam.assign("node-a", "h4").unwrap(), addr("10.65.0.2"));
        assert_eq!(ipam.repair().unwrap(), RepairReport::default());
    }

    #[test]
    fn a_lost_block_takes_its_node_from_the_endpoints_or_stays_out_of_use() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        let a = ipam.assign("node-a", &pod_handle("c1")).unwrap();
        let b = ipam.assign("node-a", &pod_handle("c2")).unwrap();
        store.delete_as::<IpamBlock>("10-65-0-0-26", None).unwrap();
        store
            .delete_as::<BlockAffinity>("node-a-10-65-0-0-26", None)
            .unwrap();
        // Endpoints on two nodes claim its addresses: the node is not known for sure, the
        // handles are kept and the range stays out of use.
        let on_b = store.create_as(&endpoint("node-b", "c2", b)).unwrap();
        store.create_as(&endpoint("node-a", "c1", a)).unwrap();
        let report = ipam.repair().unwrap();
        assert_eq!(report.blocks_rebuilt, 0);
        assert_eq!(report.handles_removed, 0);
        assert!(
            report.unresolved.iter().any(|u| u.contains("10.65.0.0/26")),
            "{report:?}"
        );
        assert!(store
            .get_as::<IpamHandle>(&pod_handle("c1"))
            .unwrap()
            .is_some());
        assert_eq!(ipam.assign("node-b", "other").unwrap(), addr("10.65.0.64"));
        // With only node-a's endpoint, the node is known.
        store
            .delete_as::<WorkloadEndpoint>(on_b.name(), None)
            .unwrap();
        let report = ipam.repair().unwrap();
        assert_eq!(report.blocks_rebuilt, 1, "{report:?}");
        let block = store.get_as::<IpamBlock>("10-65-0-0-26").unwrap().unwrap();
        assert_eq!(block.node(), Some("node-a"));
        assert!(store
            .get_as::<BlockAffinity>("node-a-10-65-0-0-26")
            .unwrap()
            .is_some());
    }

    #[test]
    fn handles_left_by_an_interrupted_release_do_not_hold_a_range_forever() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        ipam.assign("node-a", "h1").unwrap();
        // A release that deleted the emptied block and its affinity, then died before the
        // handle: no affinity and no endpoint vouch for it.
        store.delete_as::<IpamBlock>("10-65-0-0-26", None).unwrap();
        store
            .delete_as::<BlockAffinity>("node-a-10-65-0-0-26", None)
            .unwrap();
        let report = ipam.repair().unwrap();
        assert_eq!(report.handles_removed, 1, "{report:?}");
        assert_eq!(report.blocks_rebuilt, 0, "{report:?}");
        assert!(report.unresolved.is_empty(), "{report:?}");
        assert_eq!(ipam.assign("node-b", "h2").unwrap(), addr("10.65.0.0"));
    }

    #[test]
    fn a_handle_in_a_damaged_block_is_refused_by_assign_and_released() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        ipam.assign("node-a", "h1").unwrap();
        let damaged = serde_json::json!({"spec": "garbage"});
        let block = store.get("IPAMBlock", "10-65-0-0-26").unwrap().unwrap();
        store
            .update("IPAMBlock", "10-65-0-0-26", damaged, block.revision)
            .unwrap();
        // Whether h1 still holds its address there cannot be told: no second address.
        let err = ipam.assign("node-a", "h1").unwrap_err();
        assert!(err.to_string().contains("10-65-0-0-26"), "{err}");
        // A DEL lets go of the handle; the range stays claimed.
        assert_eq!(ipam.release("h1").unwrap(), None);
        assert!(store.get_as::<IpamHandle>("h1").unwrap().is_none());
        assert_eq!(ipam.assign("node-a", "h2").unwrap(), addr("10.65.0.64"));
    }

    #[test]
    fn addresses_of_endpoints_are_never_handed_out() {
        let store = store_with(&[pool("p", "10.65.0.0/16", 26)]);
        let ipam = Ipam::new(&store);
        // A pod whose block and handle are both gone: only its endpoint remains.
        store
            .create_as(&endpoint("node-z", "c9", addr("10.65.0.5")))
            .unwrap();
        assert_eq!(ipam.assign("node-a", "h1").unwrap(), addr("10.65.0.64"));
        // Inside a block: the endpoint's address is skipped.
        store
            .create_as(&endpoint("node-a", "c8", addr("10.65.0.65")))
            .unwrap();
        assert_eq!(ipam.assign("node-a", "h2").unwrap(), addr("10.65.0.66"));
    }
}
