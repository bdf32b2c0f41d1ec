//! The documents route computation (and, on a BGP node, BIRD's configuration) reads
//! ([`ClusterState`]): read from a store in full, or kept current change by change from
//! its watch ([`ClusterCache`]).

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use super::{decode, Damaged, Datastore, DatastoreError, ObjectChange, RawObject};
use crate::model::{
    BgpConfiguration, BgpPeer, IpPool, IpamBlock, Node, Resource, WorkloadEndpoint,
};
use crate::routes::ClusterState;

/// Everything route computation needs, read from the store: nodes, pools, block owners
/// and workload endpoints. Damaged documents are left out and named in
/// [`ClusterState::unreadable`] (which route computation reports as skipped).
pub fn read_cluster_state(store: &dyn Datastore) -> Result<ClusterState, DatastoreError> {
    Ok(ClusterCache::read(store, None)?.state())
}

/// A document as the cache keeps it: its revision and what routes need of it.
#[derive(Debug, Clone)]
struct Entry<T> {
    revision: u64,
    value: T,
}

/// The documents one node's route computation reads, kept current from the store's
/// watch: read in full once ([`ClusterCache::read`]), then changed one document per
/// change ([`ClusterCache::apply`]), so that one change in a cluster of thousands of nodes
/// costs one document rather than a read of all of them. Read in full again after a
/// [`super::Change::Relist`] or when the store cannot tell what changed.
///
/// Each document keeps its revision, and a change older than what is kept is ignored: a
/// watch that starts before a full read replays changes the read already has.
#[derive(Debug, Clone)]
pub struct ClusterCache {
    /// When set, only this node's workload endpoints are kept: routes need no other's.
    node: Option<String>,
    revision: u64,
    nodes: BTreeMap<String, Entry<Node>>,
    pools: BTreeMap<String, Entry<IpPool>>,
    /// Each block's CIDR and node (blocks affine to no node are not kept), by block name.
    blocks: BTreeMap<String, Entry<Option<(Ipv4Net, String)>>>,
    endpoints: BTreeMap<String, Entry<WorkloadEndpoint>>,
    bgp_peers: BTreeMap<String, Entry<BgpPeer>>,
    bgp_configurations: BTreeMap<String, Entry<BgpConfiguration>>,
    /// Documents that cannot be read, by (kind, name).
    unreadable: BTreeMap<(String, String), Damaged>,
}

impl ClusterCache {
    /// Reads everything (of node `node`'s interest, when given): the store's revision
    /// first, so that the cache holds at least every change up to [`ClusterCache::revision`].
    pub fn read(store: &dyn Datastore, node: Option<&str>) -> Result<ClusterCache, DatastoreError> {
        let mut cache = ClusterCache {
            node: node.map(str::to_string),
            revision: store.revision()?,
            nodes: BTreeMap::new(),
            pools: BTreeMap::new(),
            blocks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            bgp_peers: BTreeMap::new(),
            bgp_configurations: BTreeMap::new(),
            unreadable: BTreeMap::new(),
        };
        for kind in ROUTE_KINDS {
            let listing = store.list(kind)?;
            for damaged in listing.damaged {
                cache.put_damaged(damaged);
            }
            for object in listing.items {
                cache.put(object);
            }
        }
        Ok(cache)
    }

    /// The store revision the cache is current to.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Takes the changes a watch reported up to `revision`; returns whether any of them
    /// changes what routes are computed from (a node's heartbeat, a block's allocations or
    /// another node's pod do not).
    pub fn apply(&mut self, revision: u64, changes: &[ObjectChange]) -> bool {
        let mut relevant = false;
        for change in changes {
            relevant |= match change {
                ObjectChange::Put(object) => self.put(object.clone()),
                ObjectChange::Damaged(damaged) => self.put_damaged(damaged.clone()),
                ObjectChange::Deleted {
                    kind,
                    name,
                    revision,
                } => self.delete(kind, name, *revision),
            };
        }
        self.revision = self.revision.max(revision);
        relevant
    }

    /// The documents, as route computation takes them.
    pub fn state(&self) -> ClusterState {
        ClusterState {
            nodes: values(&self.nodes),
            pools: values(&self.pools),
            blocks: self
                .blocks
                .values()
                .filter_map(|entry| entry.value.clone())
                .collect(),
            endpoints: values(&self.endpoints),
            bgp_peers: values(&self.bgp_peers),
            bgp_configurations: values(&self.bgp_configurations),
            unreadable: self.unreadable.values().map(Damaged::to_string).collect(),
        }
    }

    /// Stores a document (or why it cannot be read); whether routes may change.
    fn put(&mut self, object: RawObject) -> bool {
        let (kind, name, revision) = (object.kind.clone(), object.name.clone(), object.revision);
        let damaged = |error: DatastoreError| Damaged::new(&kind, &name, &error);
        let stored = match kind.as_str() {
            IpamBlock::KIND => decode::<IpamBlock>(object).map(|block| {
                let owner = block.node().map(|node| (block.spec.cidr, node.to_string()));
                store(&mut self.blocks, &name, revision, owner, |a, b| a == b)
            }),
            // Labels too: BGP peers select nodes by them.
            Node::KIND => decode::<Node>(object).map(|node| {
                store(&mut self.nodes, &name, revision, node, |a, b| {
                    a.spec == b.spec && a.metadata.labels == b.metadata.labels
                })
            }),
            BgpPeer::KIND => decode::<BgpPeer>(object).map(|peer| {
                store(&mut self.bgp_peers, &name, revision, peer, |a, b| {
                    a.spec == b.spec
                })
            }),
            BgpConfiguration::KIND => decode::<BgpConfiguration>(object).map(|config| {
                store(
                    &mut self.bgp_configurations,
                    &name,
                    revision,
                    config,
                    |a, b| a.spec == b.spec,
                )
            }),
            IpPool::KIND => decode::<IpPool>(object).map(|pool| {
                store(&mut self.pools, &name, revision, pool, |a, b| {
                    a.spec == b.spec
                })
            }),
            WorkloadEndpoint::KIND => decode::<WorkloadEndpoint>(object).map(|endpoint| {
                if self
                    .node
                    .as_ref()
                    .is_some_and(|node| *node != endpoint.spec.node)
                {
                    // Another node's pod (or one that moved away): not kept.
                    return remove(&mut self.endpoints, &name, revision);
                }
                store(&mut self.endpoints, &name, revision, endpoint, |a, b| {
                    a.spec == b.spec
                })
            }),
            _ => return false,
        };
        match stored {
            Ok(Some(changed)) => {
                let was_damaged = self.unreadable.remove(&(kind, name)).is_some();
                changed || was_damaged
            }
            // Older than what is kept.
            Ok(None) => false,
            Err(error) => self.put_damaged(damaged(error)),
        }
    }

    /// Records a document that cannot be read in place of what was kept of it; whether
    /// it is of a kind routes read.
    fn put_damaged(&mut self, damaged: Damaged) -> bool {
        if !is_route_kind(&damaged.kind) {
            return false;
        }
        self.delete(&damaged.kind, &damaged.name, u64::MAX);
        self.unreadable
            .insert((damaged.kind.clone(), damaged.name.clone()), damaged);
        true
    }

    /// Forgets a document deleted at `revision`; whether anything was forgotten.
    fn delete(&mut self, kind: &str, name: &str, revision: u64) -> bool {
        let removed = match kind {
            IpamBlock::KIND => remove(&mut self.blocks, name, revision),
            Node::KIND => remove(&mut self.nodes, name, revision),
            IpPool::KIND => remove(&mut self.pools, name, revision),
            WorkloadEndpoint::KIND => remove(&mut self.endpoints, name, revision),
            BgpPeer::KIND => remove(&mut self.bgp_peers, name, revision),
            BgpConfiguration::KIND => remove(&mut self.bgp_configurations, name, revision),
            _ => return false,
        };
        let was_damaged = self
            .unreadable
            .remove(&(kind.to_string(), name.to_string()))
            .is_some();
        removed == Some(true) || was_damaged
    }
}

/// The kinds the cache keeps.
const ROUTE_KINDS: [&str; 6] = [
    IpamBlock::KIND,
    Node::KIND,
    IpPool::KIND,
    WorkloadEndpoint::KIND,
    BgpPeer::KIND,
    BgpConfiguration::KIND,
];

fn is_route_kind(kind: &str) -> bool {
    ROUTE_KINDS.contains(&kind)
}

fn values<T: Clone>(map: &BTreeMap<String, Entry<T>>) -> Vec<T> {
    map.values().map(|entry| entry.value.clone()).collect()
}

/// Keeps `value` (written at `revision`) under `name` unless what is kept is newer;
/// `None` when it is, else whether what routes read changed (`same` compares that).
fn store<T>(
    map: &mut BTreeMap<String, Entry<T>>,
    name: &str,
    revision: u64,
    value: T,
    same: impl Fn(&T, &T) -> bool,
) -> Option<bool> {
    match map.get_mut(name) {
        Some(kept) if kept.revision > revision => None,
        Some(kept) => {
            let changed = !same(&kept.value, &value);
            *kept = Entry { revision, value };
            Some(changed)
        }
        None => {
            map.insert(name.to_string(), Entry { revision, value });
            Some(true)
        }
    }
}

/// Forgets `name` if what is kept is not newer than `revision`; `None` when it is, else
/// whether there was something to forget.
fn remove<T>(map: &mut BTreeMap<String, Entry<T>>, name: &str, revision: u64) -> Option<bool> {
    match map.get(name) {
        Some(kept) if kept.revision > revision => None,
        Some(_) => Some(map.remove(name).is_some()),
        None => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{DatastoreExt, MemStore};
    use crate::model::{self, format_rfc3339, TapwireNodeStatus};

    fn endpoint(node: &str, pod: &str, address: &str) -> WorkloadEndpoint {
        WorkloadEndpoint::cni_pod(node, pod, address.parse().unwrap())
    }

    /// What a watch would tell of a write: the object as stored.
    fn put<T: Resource>(doc: &T) -> ObjectChange {
        let revision = doc.metadata().revision().unwrap();
        ObjectChange::Put(RawObject {
            kind: T::KIND.to_string(),
            name: doc.name().to_string(),
            revision,
            value: model::to_document_value(doc),
        })
    }

    fn deleted<T: Resource>(store: &MemStore, name: &str) -> ObjectChange {
        store.delete(T::KIND, name, None).unwrap();
        ObjectChange::Deleted {
            kind: T::KIND.to_string(),
            name: name.to_string(),
            revision: store.revision().unwrap(),
        }
    }

    fn cluster() -> MemStore {
        let store = MemStore::default();
        store
            .create_as(&IpPool::new("p", "10.65.0.0/16".parse().unwrap()))
            .unwrap();
        for (node, address) in [("node-a", "192.168.0.1/24"), ("node-b", "192.168.0.2/24")] {
            store
                .create_as(&Node::new(node, address.parse().unwrap()))
                .unwrap();
        }
        store
            .create_as(&IpamBlock::new("10.65.0.0/26".parse().unwrap(), "node-a"))
            .unwrap();
        store
            .create_as(&endpoint("node-a", "a1", "10.65.0.1/32"))
            .unwrap();
        store
    }

    #[test]
    fn changes_applied_one_by_one_give_what_a_full_read_gives() {
        let store = cluster();
        let mut cache = ClusterCache::read(&store, Some("node-a")).unwrap();
        let mut changes = Vec::new();
        let block = store
            .create_as(&IpamBlock::new("10.65.0.64/26".parse().unwrap(), "node-b"))
            .unwrap();
        changes.push(put(&block));
        changes.push(put(&store
            .create_as(&endpoint("node-a", "a2", "10.65.0.2/32"))
            .unwrap()));
        changes.push(put(&store
            .create_as(&endpoint("node-b", "b1", "10.65.0.65/32"))
            .unwrap()));
        let mut pool = store.get_as::<IpPool>("p").unwrap().unwrap();
        pool.spec.nat_outgoing = true;
        changes.push(put(&store.update_as(&pool).unwrap()));
        changes.push(deleted::<WorkloadEndpoint>(&store, "node-a-cni-a1-eth0"));
        changes.push(deleted::<Node>(&store, "node-b"));
        let revision = store.revision().unwrap();
        assert!(cache.apply(revision, &changes));
        assert_eq!(cache.revision(), revision);
        assert_eq!(
            cache.state(),
            ClusterCache::read(&store, Some("node-a")).unwrap().state()
        );
        // Only this node's pods are kept.
        let names: Vec<_> = cache
            .state()
            .endpoints
            .iter()
            .map(|e| e.name().to_string())
            .collect();
        assert_eq!(names, ["node-a-cni-a2-eth0"]);
        // Without a node, every pod: what `read_cluster_state` reads.
        assert_eq!(read_cluster_state(&store).unwrap().endpoints.len(), 2);
    }

    #[test]
    fn changes_routes_do_not_read_need_no_recompute() {
        let store = cluster();
        let mut cache = ClusterCache::read(&store, Some("node-a")).unwrap();
        // A heartbeat: the node's status only.
        let mut node = store.get_as::<Node>("node-b").unwrap().unwrap();
        node.status.tapwire = Some(TapwireNodeStatus {
            last_heartbeat: format_rfc3339(std::time::SystemTime::now()),
            underlay_interface: "eth0".into(),
            dataplane_in_sync: true,
        });
        let heartbeat = put(&store.update_as(&node).unwrap());
        // An allocation in a block: its owner stays.
        let mut block = store.get_as::<IpamBlock>("10-65-0-0-26").unwrap().unwrap();
        block.spec.allocations.insert(5, "h".into());
        let allocation = put(&store.update_as(&block).unwrap());
        // Another node's pod, a handle.
        let other = put(&store
            .create_as(&endpoint("node-b", "b1", "10.65.0.65/32"))
            .unwrap());
        let handle = ObjectChange::Put(RawObject {
            kind: "IPAMHandle".into(),
            name: "h".into(),
            revision: store.revision().unwrap(),
            value: serde_json::json!({}),
        });
        let revision = store.revision().unwrap();
        assert!(!cache.apply(revision, &[heartbeat, allocation, other, handle]));
        assert_eq!(
            cache.state(),
            ClusterCache::read(&store, Some("node-a")).unwrap().state()
        );
        // The node's address moves: that is a change.
        node = store.get_as::<Node>("node-b").unwrap().unwrap();
        node.spec.bgp.as_mut().unwrap().ipv4_address = "192.168.0.9/24".parse().unwrap();
        let moved = put(&store.update_as(&node).unwrap());
        assert!(cache.apply(store.revision().unwrap(), &[moved]));
    }

    #[test]
    fn bgp_documents_and_node_labels_are_kept_and_count_as_changes() {
        let store = cluster();
        let mut cache = ClusterCache::read(&store, Some("node-a")).unwrap();
        let mut peer = crate::model::BgpPeer {
            metadata: model::Metadata::named("tor"),
            spec: crate::bgp::model::BgpPeerSpec {
                peer_ip: Some("192.168.0.254".parse().unwrap()),
                as_number: Some(64513),
                ..Default::default()
            },
        };
        let created = put(&store.create_as(&peer).unwrap());
        assert!(cache.apply(store.revision().unwrap(), &[created]));
        peer = store.get_as("tor").unwrap().unwrap();
        peer.spec.as_number = Some(64514);
        let changed = put(&store.update_as(&peer).unwrap());
        let config = put(&store.create_as(&BgpConfiguration::new()).unwrap());
        assert!(cache.apply(store.revision().unwrap(), &[changed, config]));
        // A label (BGP peers select nodes by them).
        let mut node = store.get_as::<Node>("node-b").unwrap().unwrap();
        node.metadata
            .labels
            .insert("route-reflector".into(), "true".into());
        let labelled = put(&store.update_as(&node).unwrap());
        assert!(cache.apply(store.revision().unwrap(), &[labelled]));
        let state = cache.state();
        assert_eq!(state.bgp_peers.len(), 1);
        assert_eq!(state.bgp_peers[0].spec.as_number, Some(64514));
        assert_eq!(state.bgp_configurations.len(), 1);
        assert_eq!(
            state,
            ClusterCache::read(&store, Some("node-a")).unwrap().state()
        );
        let gone = deleted::<crate::model::BgpPeer>(&store, "tor");
        assert!(cache.apply(store.revision().unwrap(), &[gone]));
        assert!(cache.state().bgp_peers.is_empty());
    }

    #[test]
    fn a_change_older_than_what_is_kept_is_ignored() {
        let store = cluster();
        let first = store
            .create_as(&IpamBlock::new("10.65.0.64/26".parse().unwrap(), "node-b"))
            .unwrap();
        let removed = deleted::<IpamBlock>(&store, "10-65-0-64-26");
        let recreated = store
            .create_as(&IpamBlock::new("10.65.0.64/26".parse().unwrap(), "node-a"))
            .unwrap();
        // A watch that started before the full read replays all three.
        let mut cache = ClusterCache::read(&store, Some("node-a")).unwrap();
        let expected = cache.state();
        let replay = [put(&first), removed, put(&recreated)];
        assert!(!cache.apply(store.revision().unwrap(), &replay[..2]));
        assert_eq!(cache.state(), expected);
        assert!(!cache.apply(store.revision().unwrap(), &replay));
        assert_eq!(cache.state(), expected);
        assert_eq!(
            expected
                .blocks
                .get(&"10.65.0.64/26".parse().unwrap())
                .map(String::as_str),
            Some("node-a")
        );
    }

    #[test]
    fn a_damaged_document_is_reported_until_it_is_repaired_or_deleted() {
        let store = cluster();
        let mut cache = ClusterCache::read(&store, Some("node-a")).unwrap();
        let damaged = ObjectChange::Damaged(Damaged {
            kind: "Node".into(),
            name: "node-b".into(),
            reason: "not JSON".into(),
        });
        assert!(cache.apply(store.revision().unwrap(), &[damaged]));
        let state = cache.state();
        assert_eq!(state.nodes.len(), 1, "the damaged node is left out");
        assert_eq!(state.unreadable, ["damaged Node \"node-b\": not JSON"]);
        // A value that is JSON but not a Node is damaged too.
        let wrong = ObjectChange::Put(RawObject {
            kind: "Node".into(),
            name: "node-c".into(),
            revision: store.revision().unwrap(),
            value: serde_json::json!({"spec": {"nope": 1}}),
        });
        assert!(cache.apply(store.revision().unwrap(), &[wrong]));
        assert_eq!(cache.state().unreadable.len(), 2);
        // Written anew, and deleted: reported no more.
        let node = store.get_as::<Node>("node-b").unwrap().unwrap();
        let repaired = put(&store.update_as(&node).unwrap());
        let gone = ObjectChange::Deleted {
            kind: "Node".into(),
            name: "node-c".into(),
            revision: store.revision().unwrap(),
        };
        assert!(cache.apply(store.revision().unwrap(), &[repaired, gone]));
        assert_eq!(
            cache.state(),
            ClusterCache::read(&store, Some("node-a")).unwrap().state()
        );
        // Damage to a kind routes do not read is not reported here.
        let handle = ObjectChange::Damaged(Damaged {
            kind: "IPAMHandle".into(),
            name: "h".into(),
            reason: "not JSON".into(),
        });
        assert!(!cache.apply(store.revision().unwrap(), &[handle]));
        assert!(cache.state().unreadable.is_empty());
    }
}
