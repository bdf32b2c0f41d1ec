//! Route computation: a pure function from cluster state to what one node's dataplane
//! should hold, and the conversion of that into Felix-shaped messages.
//!
//! [`desired_state`] takes the documents ([`ClusterState`]) and this node's local facts
//! and returns a [`DesiredDataplane`]: host metadata and a VTEP for every node, the IP
//! pools, a route per block (this node's own blocks are local — the dataplane blackholes
//! their unused addresses — other nodes' blocks go to their node with the encapsulation
//! their pool asks for), a /32 route and an endpoint per local pod, the encapsulation
//! summary and the pod MTU. On a node whose networking backend is BIRD,
//! [`desired_state_with`] takes other nodes' blocks from what BGP learned
//! ([`RemoteRoutes::Bgp`]) instead of from the datastore. [`to_messages`] turns it into the
//! full snapshot sent on (re)connect; [`diff`] into the incremental update between two
//! states.
//!
//! No I/O, no clock: the same input always gives the same output, so every case is a
//! table-driven unit test. Invalid documents do not stop the computation: they are left
//! out and listed in [`DesiredDataplane::skipped`]. Only problems with this node itself
//! are errors.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Serialize, Serializer};
use tapwire_proto::{self as proto, config, to_dataplane::Payload, Encap, IpPoolType, RouteType};

use crate::model::{
    BgpConfiguration, BgpPeer, EncapMode, IpPool, MacAddr, ModelError, Node, PoolEncap, Resource,
    WorkloadEndpoint,
};
use crate::podnet::pod_mtu;

/// The VXLAN network identifier tapwire uses (Calico's default).
pub const VNI: u32 = config::DEFAULT_VXLAN_VNI;

/// Everything in the datastore that routes depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub nodes: Vec<Node>,
    pub pools: Vec<IpPool>,
    /// Each IPAM block and the node it is affine to.
    pub blocks: BTreeMap<Ipv4Net, String>,
    pub endpoints: Vec<WorkloadEndpoint>,
    /// The BGP documents: what BIRD's configuration is rendered from on a node whose
    /// networking backend is BIRD ([`crate::bgp::config`]).
    pub bgp_peers: Vec<BgpPeer>,
    pub bgp_configurations: Vec<BgpConfiguration>,
    /// Documents that could not be read (damaged in the store), with why; left out above
    /// and reported in [`DesiredDataplane::skipped`].
    pub unreadable: Vec<String>,
}

/// What only the node itself knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// The node's name (its [`Node`] document).
    pub name: String,
    /// The MTU of the underlay interface.
    pub underlay_mtu_bytes: u32,
}

/// Why this node's desired state cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("node {node:?} has no Node document (a control registers its node on start)")]
    UnknownNode { node: String },
    #[error("this node's Node document is invalid: {0}")]
    InvalidNode(ModelError),
}

/// A node as the dataplane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostEntry {
    pub ipv4_addr: Ipv4Addr,
    pub as_number: Option<u32>,
}

/// An IP pool as the dataplane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolEntry {
    pub cidr: Ipv4Net,
    pub masquerade: bool,
    pub ipip_mode: EncapMode,
    pub vxlan_mode: EncapMode,
    pub allowed_uses: Vec<String>,
}

/// A node's VXLAN tunnel endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VtepEntry {
    pub mac: MacAddr,
    pub tunnel_addr: Option<Ipv4Addr>,
    pub underlay_addr: Ipv4Addr,
}

/// What a route is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RouteKind {
    /// One of this node's blocks: addresses without a pod are blackholed.
    LocalBlock,
    /// A pod on this node.
    LocalWorkload,
    /// Another node's block.
    RemoteBlock,
}

/// The encapsulation of the pool a destination belongs to (Felix's `IPPoolType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PoolType {
    /// No pool contains the destination.
    None,
    NoEncap,
    Ipip,
    Vxlan,
}

impl PoolType {
    fn of(pool: Option<&IpPool>) -> PoolType {
        match pool.map(IpPool::encapsulation) {
            None => PoolType::None,
            Some(PoolEncap::None) => PoolType::NoEncap,
            Some(PoolEncap::Ipip(_)) => PoolType::Ipip,
            Some(PoolEncap::Vxlan(_)) => PoolType::Vxlan,
        }
    }

    fn proto(self) -> IpPoolType {
        match self {
            PoolType::None => IpPoolType::None,
            PoolType::NoEncap => IpPoolType::NoEncap,
            PoolType::Ipip => IpPoolType::Ipip,
            PoolType::Vxlan => IpPoolType::Vxlan,
        }
    }
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    pub kind: RouteKind,
    /// The node owning the destination.
    pub node: String,
    /// That node's underlay address.
    pub node_ip: Ipv4Addr,
    pub pool_type: PoolType,
    /// The owner shares this node's underlay subnet.
    pub same_subnet: bool,
    pub nat_outgoing: bool,
    /// How packets to a remote block travel (what the dataplane will do with the
    /// pool's mode and `same_subnet`); `None` for local routes.
    #[serde(serialize_with = "serialize_encap")]
    pub encap: Encap,
}

/// `none`, `ipip` or `vxlan` ([`Encap::name`]).
fn serialize_encap<S: Serializer>(encap: &Encap, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(encap.name())
}

/// A local pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointEntry {
    pub orchestrator: String,
    pub workload_id: String,
    pub endpoint: String,
    /// The interface inside the pod (`eth0`).
    pub interface_name: String,
    pub mac: Option<MacAddr>,
    pub ipv4_nets: Vec<Ipv4Net>,
    /// The pod's network namespace path.
    pub netns: String,
}

impl EndpointEntry {
    /// The dataplane's key ([`proto::WorkloadEndpointId::key`]).
    pub fn key(&self) -> String {
        self.id().key()
    }

    fn id(&self) -> proto::WorkloadEndpointId {
        proto::WorkloadEndpointId {
            orchestrator_id: self.orchestrator.clone(),
            workload_id: self.workload_id.clone(),
            endpoint_id: self.endpoint.clone(),
        }
    }
}

/// Which encapsulations the pools use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EncapsulationEntry {
    pub ipip: bool,
    pub vxlan: bool,
    pub no_encap: bool,
}

/// Everything one node's dataplane should hold: exactly what control sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredDataplane {
    pub hostname: String,
    pub vni: u32,
    /// The MTU of this node's pod interfaces: the underlay MTU less the largest overhead
    /// any pool may need (IPIP 20, VXLAN 50, none 0). Used when pods are set up; not a
    /// dataplane message.
    pub pod_mtu_bytes: u32,
    /// By node name.
    pub hosts: BTreeMap<String, HostEntry>,
    /// By pool id (its CIDR, as Felix keys pools).
    pub pools: BTreeMap<String, PoolEntry>,
    /// By node name.
    pub vteps: BTreeMap<String, VtepEntry>,
    /// By destination.
    pub routes: BTreeMap<Ipv4Net, RouteEntry>,
    /// By `orchestrator/workload/endpoint` (the dataplane's key).
    pub endpoints: BTreeMap<String, EndpointEntry>,
    pub encapsulation: EncapsulationEntry,
    /// Documents left out, and why. Not sent; for logs and `tapwirectl`.
    pub skipped: Vec<String>,
}

impl DesiredDataplane {
    /// Adds one of this node's workload endpoints and the routes to its addresses — the
    /// one definition [`desired_state`] uses for every endpoint, and a CNI ADD uses to hand
    /// its new pod to the dataplane without recomputing everything. `pools` are the valid
    /// pools, `local_ip` this node's underlay address. An endpoint the dataplane cannot
    /// attach is refused with the reason.
    pub fn add_local_endpoint(
        &mut self,
        wep: &WorkloadEndpoint,
        pools: &[&IpPool],
        local_ip: Ipv4Addr,
    ) -> Result<(), String> {
        let Some(netns) = wep.spec.netns.as_deref().filter(|n| !n.is_empty()) else {
            return Err(format!(
                "WorkloadEndpoint {:?}: no spec.netns (the pod's network namespace)",
                wep.name()
            ));
        };
        let entry = EndpointEntry {
            orchestrator: wep.spec.orchestrator.clone(),
            workload_id: wep.workload_id(),
            endpoint: wep.spec.endpoint.clone(),
            interface_name: wep.spec.interface_name.clone(),
            mac: wep.spec.mac,
            ipv4_nets: wep.spec.ip_networks.clone(),
            netns: netns.to_string(),
        };
        for net in &wep.spec.ip_networks {
            let pool = pool_of(pools, *net);
            self.routes.insert(
                *net,
                RouteEntry {
                    kind: RouteKind::LocalWorkload,
                    node: self.hostname.clone(),
                    node_ip: local_ip,
                    pool_type: PoolType::of(pool),
                    same_subnet: false,
                    nat_outgoing: pool.is_some_and(|p| p.spec.nat_outgoing),
                    encap: Encap::None,
                },
            );
        }
        self.endpoints.insert(entry.key(), entry);
        Ok(())
    }
}

/// The most specific pool containing `net`.
fn pool_of<'p>(pools: &[&'p IpPool], net: Ipv4Net) -> Option<&'p IpPool> {
    pools
        .iter()
        .copied()
        .filter(|p| p.spec.cidr.contains(&net))
        .max_by_key(|p| p.spec.cidr.prefix_len())
}

/// The encapsulation packets to a remote block get.
fn effective_encap(pool: Option<&IpPool>, same_subnet: bool) -> Encap {
    match pool.map(IpPool::encapsulation) {
        Some(PoolEncap::Ipip(mode)) if mode.wire().encapsulates(same_subnet) => Encap::Ipip,
        Some(PoolEncap::Vxlan(mode)) if mode.wire().encapsulates(same_subnet) => Encap::Vxlan,
        _ => Encap::None,
    }
}

/// The encapsulation of `pools` with the largest overhead: the pods' MTU must leave room
/// for it, whichever peer a packet goes to.
pub fn worst_encap<'a>(pools: impl IntoIterator<Item = &'a IpPool>) -> Encap {
    pools
        .into_iter()
        .map(|pool| match pool.encapsulation() {
            PoolEncap::None => Encap::None,
            PoolEncap::Ipip(_) => Encap::Ipip,
            PoolEncap::Vxlan(_) => Encap::Vxlan,
        })
        .max_by_key(|encap| encap.overhead_bytes())
        .unwrap_or(Encap::None)
}

/// A route BGP learned, as BIRD wrote it to the kernel table tapwire-control reads: a
/// destination and its BGP next hop (the address of the node, or router, that announced
/// it — also when a router lies between).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LearnedRoute {
    pub dst: Ipv4Net,
    pub next_hop: Ipv4Addr,
}

/// Where the routes to other nodes' blocks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteRoutes<'r> {
    /// The datastore: every IPAM block's owner (the `datastore` networking backend).
    Datastore,
    /// BGP (the `bird` backend): each block another node's BIRD announced and this node's
    /// BIRD learned. A block whose node stopped announcing it (a node that stopped) has
    /// no route, whatever the datastore says.
    Bgp(&'r [LearnedRoute]),
}

/// The nodes with a usable underlay address, by name; the others are skipped with why.
/// `local` must be among them: an unusable own document is an error.
pub(crate) fn usable_nodes<'c>(
    cluster: &'c ClusterState,
    local: &str,
    skipped: &mut Vec<String>,
) -> Result<BTreeMap<&'c str, (&'c Node, Ipv4Net)>, RoutesError> {
    let mut nodes = BTreeMap::new();
    for node in &cluster.nodes {
        let checked = node.validate().and_then(|()| {
            node.underlay().ok_or(ModelError::Missing {
                field: "spec.bgp.ipv4Address",
            })
        });
        match checked {
            Ok(underlay) => {
                nodes.insert(node.name(), (node, underlay));
            }
            Err(e) if node.name() == local => return Err(RoutesError::InvalidNode(e)),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    if !nodes.contains_key(local) {
        return Err(RoutesError::UnknownNode {
            node: local.to_string(),
        });
    }
    Ok(nodes)
}

/// The valid pools; of two overlapping pools (a race between two applies), the first by
/// name wins. The others are skipped with why.
pub(crate) fn usable_pools<'c>(
    cluster: &'c ClusterState,
    skipped: &mut Vec<String>,
) -> Vec<&'c IpPool> {
    let mut pools: Vec<&IpPool> = Vec::new();
    for pool in &cluster.pools {
        match pool
            .validate()
            .and_then(|()| pool.check_overlap(pools.iter().copied()))
        {
            Ok(()) => pools.push(pool),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    pools
}

/// Where the datastore says a block's owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockSource {
    /// An IPAM block affine to the node.
    Ipam,
    /// A fixed pod CIDR of the node's document (a declared host's).
    PodCidr,
}

/// Every block's owner: IPAM's blocks, then the nodes' fixed pod CIDRs (one that is an
/// IPAM block of another node is skipped with why).
pub(crate) fn block_owners<'c>(
    cluster: &'c ClusterState,
    nodes: &BTreeMap<&'c str, (&'c Node, Ipv4Net)>,
    skipped: &mut Vec<String>,
) -> BTreeMap<Ipv4Net, (&'c str, BlockSource)> {
    let mut owners: BTreeMap<Ipv4Net, (&str, BlockSource)> = cluster
        .blocks
        .iter()
        .map(|(cidr, node)| (*cidr, (node.as_str(), BlockSource::Ipam)))
        .collect();
    for (name, (node, _)) in nodes {
        for cidr in &node.spec.pod_cidrs {
            match owners.get(cidr) {
                Some((owner, _)) if owner != name => skipped.push(format!(
                    "Node {name:?}: spec.podCIDRs: {cidr} is an IPAM block of node {owner:?}"
                )),
                _ => {
                    owners.insert(*cidr, (name, BlockSource::PodCidr));
                }
            }
        }
    }
    owners
}

/// Computes what `local`'s dataplane should hold, routing other nodes' blocks as the
/// datastore says.
pub fn desired_state(
    cluster: &ClusterState,
    local: &LocalNode,
) -> Result<DesiredDataplane, RoutesError> {
    desired_state_with(cluster, local, RemoteRoutes::Datastore)
}

/// Computes what `local`'s dataplane should hold, with the routes to other nodes' blocks
/// from `remote`.
///
/// With [`RemoteRoutes::Bgp`], a block has one source: this node's own blocks come from
/// the datastore (BIRD announces them), fixed pod CIDRs of declared hosts too (static
/// configuration), VXLAN pools' blocks too (as Felix routes them: Calico's BIRD leaves
/// VXLAN routes to Felix), and every other block from what BGP learned. A learned route is
/// matched to the node whose underlay address is its next hop, and gets the encapsulation
/// of the pool holding it, as a datastore route would; learned routes outside every pool
/// are left to the node's kernel (the dataplane sends only pods' traffic to nodes), and
/// those whose next hop is no node's are skipped with why.
pub fn desired_state_with(
    cluster: &ClusterState,
    local: &LocalNode,
    remote: RemoteRoutes<'_>,
) -> Result<DesiredDataplane, RoutesError> {
    let mut skipped = cluster.unreadable.clone();
    let nodes = usable_nodes(cluster, &local.name, &mut skipped)?;
    let my_underlay = nodes
        .get(local.name.as_str())
        .map(|(_, underlay)| *underlay)
        .ok_or_else(|| RoutesError::UnknownNode {
            node: local.name.clone(),
        })?;
    let my_subnet = my_underlay.trunc();
    let pools = usable_pools(cluster, &mut skipped);

    let mut desired = DesiredDataplane {
        hostname: local.name.clone(),
        vni: VNI,
        ..DesiredDataplane::default()
    };

    for (name, (node, underlay)) in &nodes {
        desired.hosts.insert(
            name.to_string(),
            HostEntry {
                ipv4_addr: underlay.addr(),
                as_number: node.spec.bgp.as_ref().and_then(|b| b.as_number),
            },
        );
        desired.vteps.insert(
            name.to_string(),
            VtepEntry {
                mac: node.vtep_mac(),
                tunnel_addr: node.spec.ipv4_vxlan_tunnel_addr,
                underlay_addr: underlay.addr(),
            },
        );
    }

    for pool in &pools {
        let encap = pool.encapsulation();
        desired.encapsulation.ipip |= matches!(encap, PoolEncap::Ipip(_));
        desired.encapsulation.vxlan |= matches!(encap, PoolEncap::Vxlan(_));
        desired.encapsulation.no_encap |= encap == PoolEncap::None;
        let allowed_uses = if pool.spec.allowed_uses.is_empty() {
            vec!["Workload".to_string(), "Tunnel".to_string()]
        } else {
            pool.spec
                .allowed_uses
                .iter()
                .map(|u| u.as_str().to_string())
                .collect()
        };
        desired.pools.insert(
            pool.spec.cidr.to_string(),
            PoolEntry {
                cidr: pool.spec.cidr,
                masquerade: pool.spec.nat_outgoing,
                ipip_mode: pool.spec.ipip_mode,
                vxlan_mode: pool.spec.vxlan_mode,
                allowed_uses,
            },
        );
    }
    desired.pod_mtu_bytes = pod_mtu(local.underlay_mtu_bytes, worst_encap(pools.iter().copied()));

    let route_to = |cidr: Ipv4Net, owner: &str, owner_ip: Ipv4Addr| {
        let pool = pool_of(&pools, cidr);
        let local_block = owner == local.name;
        let same_subnet = !local_block && my_subnet.contains(&owner_ip);
        RouteEntry {
            kind: if local_block {
                RouteKind::LocalBlock
            } else {
                RouteKind::RemoteBlock
            },
            node: owner.to_string(),
            node_ip: owner_ip,
            pool_type: PoolType::of(pool),
            same_subnet,
            nat_outgoing: pool.is_some_and(|p| p.spec.nat_outgoing),
            encap: if local_block {
                Encap::None
            } else {
                effective_encap(pool, same_subnet)
            },
        }
    };
    for (cidr, (owner, source)) in block_owners(cluster, &nodes, &mut skipped) {
        // With BGP, other nodes' blocks come from what BIRD learned — but VXLAN pools'
        // from IPAM, as Felix routes them (Calico's BIRD leaves VXLAN routes to Felix, and
        // a pool with `disableBGPExport` is not announced at all).
        let from_bgp = matches!(remote, RemoteRoutes::Bgp(_))
            && !pool_of(&pools, cidr).is_some_and(|p| p.spec.vxlan_mode.is_enabled());
        if from_bgp && source == BlockSource::Ipam && owner != local.name {
            continue;
        }
        let Some(&(_, owner_underlay)) = nodes.get(owner) else {
            skipped.push(format!("block {cidr}: its node {owner:?} is unknown"));
            continue;
        };
        desired
            .routes
            .insert(cidr, route_to(cidr, owner, owner_underlay.addr()));
    }
    if let RemoteRoutes::Bgp(learned) = remote {
        let by_address: HashMap<Ipv4Addr, &str> = nodes
            .iter()
            .map(|(name, (_, underlay))| (underlay.addr(), *name))
            .collect();
        for route in learned {
            if desired.routes.contains_key(&route.dst) || pool_of(&pools, route.dst).is_none() {
                // This node's own block, a declared host's (both the datastore's), or a
                // destination outside the pools (the node's kernel routes those).
                continue;
            }
            match by_address.get(&route.next_hop) {
                Some(owner) if *owner != local.name => {
                    desired
                        .routes
                        .insert(route.dst, route_to(route.dst, owner, route.next_hop));
                }
                Some(_) => {}
                None => skipped.push(format!(
                    "BGP route {} via {}: the next hop is no node's underlay address",
                    route.dst, route.next_hop
                )),
            }
        }
    }

    // This node's pods.
    for wep in cluster
        .endpoints
        .iter()
        .filter(|w| w.spec.node == local.name)
    {
        if let Err(e) = desired.add_local_endpoint(wep, &pools, my_underlay.addr()) {
            skipped.push(e);
        }
    }

    desired.skipped = skipped;
    Ok(desired)
}

fn config_message(d: &DesiredDataplane) -> Payload {
    Payload::ConfigUpdate(proto::ConfigUpdate {
        config: HashMap::from([
            (config::HOSTNAME.to_string(), d.hostname.clone()),
            (config::VXLAN_VNI.to_string(), d.vni.to_string()),
        ]),
        message: "tapwire-control".to_string(),
    })
}

fn host_message(name: &str, host: &HostEntry) -> Payload {
    Payload::HostMetadataUpdate(proto::HostMetadataUpdate {
        hostname: name.to_string(),
        ipv4_addr: host.ipv4_addr.to_string(),
        asnumber: host.as_number.map(|n| n.to_string()).unwrap_or_default(),
        ..Default::default()
    })
}

fn pool_message(id: &str, pool: &PoolEntry) -> Payload {
    Payload::IpamPoolUpdate(proto::IpamPoolUpdate {
        id: id.to_string(),
        pool: Some(proto::IpamPool {
            cidr: pool.cidr.to_string(),
            masquerade: pool.masquerade,
            ipip_mode: pool.ipip_mode.wire().felix_name().to_string(),
            vxlan_mode: pool.vxlan_mode.wire().felix_name().to_string(),
            allowed_uses: pool.allowed_uses.clone(),
        }),
    })
}

fn vtep_message(node: &str, vtep: &VtepEntry) -> Payload {
    Payload::VtepUpdate(proto::VxlanTunnelEndpointUpdate {
        node: node.to_string(),
        mac: vtep.mac.to_string(),
        ipv4_addr: vtep.tunnel_addr.map(|a| a.to_string()).unwrap_or_default(),
        parent_device_ip: vtep.underlay_addr.to_string(),
        ..Default::default()
    })
}

fn route_message(dst: Ipv4Net, route: &RouteEntry) -> Payload {
    let mut update = proto::RouteUpdate {
        ip_pool_type: route.pool_type.proto() as i32,
        dst: dst.to_string(),
        dst_node_name: route.node.clone(),
        dst_node_ip: route.node_ip.to_string(),
        same_subnet: route.same_subnet,
        nat_outgoing: route.nat_outgoing,
        local_workload: route.kind == RouteKind::LocalWorkload,
        ..Default::default()
    };
    update.add_type(match route.kind {
        RouteKind::LocalBlock | RouteKind::LocalWorkload => RouteType::LocalWorkload,
        RouteKind::RemoteBlock => RouteType::RemoteWorkload,
    });
    Payload::RouteUpdate(update)
}

fn endpoint_message(endpoint: &EndpointEntry) -> Payload {
    Payload::WorkloadEndpointUpdate(proto::WorkloadEndpointUpdate {
        id: Some(endpoint.id()),
        endpoint: Some(proto::WorkloadEndpoint {
            state: "active".to_string(),
            name: endpoint.interface_name.clone(),
            mac: endpoint.mac.map(|m| m.to_string()).unwrap_or_default(),
            ipv4_nets: endpoint.ipv4_nets.iter().map(|n| n.to_string()).collect(),
            annotations: HashMap::from([(
                proto::NETNS_ANNOTATION.to_string(),
                endpoint.netns.clone(),
            )]),
            ..Default::default()
        }),
    })
}

fn encapsulation_message(e: EncapsulationEntry) -> Payload {
    Payload::Encapsulation(proto::Encapsulation {
        ipip_enabled: e.ipip,
        vxlan_enabled: e.vxlan,
        vxlan_enabled_v6: false,
        no_encap_enabled: e.no_encap,
    })
}

/// The full snapshot sent on every (re)connect: config, host metadata, pools, VTEPs,
/// routes, endpoints, encapsulation, then `InSync`.
pub fn to_messages(desired: &DesiredDataplane) -> Vec<Payload> {
    let mut out = vec![config_message(desired)];
    out.extend(desired.hosts.iter().map(|(n, h)| host_message(n, h)));
    out.extend(desired.pools.iter().map(|(id, p)| pool_message(id, p)));
    out.extend(desired.vteps.iter().map(|(n, v)| vtep_message(n, v)));
    out.extend(desired.routes.iter().map(|(d, r)| route_message(*d, r)));
    out.extend(desired.endpoints.values().map(endpoint_message));
    out.push(encapsulation_message(desired.encapsulation));
    out.push(Payload::InSync(proto::InSync {}));
    out
}

/// Updates for `new` entries that are absent from or different in `old`.
fn changed<'m, K: Ord, V: PartialEq>(
    old: &'m BTreeMap<K, V>,
    new: &'m BTreeMap<K, V>,
) -> impl Iterator<Item = (&'m K, &'m V)> {
    new.iter().filter(move |(k, v)| old.get(k) != Some(*v))
}

/// Keys of `old` entries that `new` no longer has.
fn gone<'m, K: Ord, V>(
    old: &'m BTreeMap<K, V>,
    new: &'m BTreeMap<K, V>,
) -> impl Iterator<Item = (&'m K, &'m V)> {
    old.iter().filter(move |(k, _)| !new.contains_key(k))
}

/// The incremental update that moves a dataplane holding `old` to `new`: the config if
/// it changed, removes for what is gone (endpoints, routes, VTEPs, pools, hosts — users
/// before what they use), updates for what is new or changed (in snapshot order), and
/// the encapsulation summary if it changed. Empty when nothing changed. (The dataplane
/// applies everything queued before publishing, so the order never exposes a half state
/// to packets; it keeps the dataplane's own state coherent in between.)
pub fn diff(old: &DesiredDataplane, new: &DesiredDataplane) -> Vec<Payload> {
    let mut out = Vec::new();
    if old.hostname != new.hostname || old.vni != new.vni {
        out.push(config_message(new));
    }
    for (_, endpoint) in gone(&old.endpoints, &new.endpoints) {
        out.push(Payload::WorkloadEndpointRemove(
            proto::WorkloadEndpointRemove {
                id: Some(endpoint.id()),
            },
        ));
    }
    for (dst, _) in gone(&old.routes, &new.routes) {
        out.push(Payload::RouteRemove(proto::RouteRemove {
            dst: dst.to_string(),
        }));
    }
    for (node, _) in gone(&old.vteps, &new.vteps) {
        out.push(Payload::VtepRemove(proto::VxlanTunnelEndpointRemove {
            node: node.clone(),
        }));
    }
    for (id, _) in gone(&old.pools, &new.pools) {
        out.push(Payload::IpamPoolRemove(proto::IpamPoolRemove {
            id: id.clone(),
        }));
    }
    for (name, host) in gone(&old.hosts, &new.hosts) {
        out.push(Payload::HostMetadataRemove(proto::HostMetadataRemove {
            hostname: name.clone(),
            ipv4_addr: host.ipv4_addr.to_string(),
        }));
    }
    out.extend(changed(&old.hosts, &new.hosts).map(|(n, h)| host_message(n, h)));
    out.extend(changed(&old.pools, &new.pools).map(|(id, p)| pool_message(id, p)));
    out.extend(changed(&old.vteps, &new.vteps).map(|(n, v)| vtep_message(n, v)));
    out.extend(changed(&old.routes, &new.routes).map(|(d, r)| route_message(*d, r)));
    out.extend(changed(&old.endpoints, &new.endpoints).map(|(_, e)| endpoint_message(e)));
    if old.encapsulation != new.encapsulation {
        out.push(encapsulation_message(new.encapsulation));
    }
    out
}
