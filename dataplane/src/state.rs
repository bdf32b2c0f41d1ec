//! The desired state, as control described it, and how it becomes forwarding [`Tables`].
//!
//! `Desired` holds plain data parsed from proto messages (addresses validated here, once,
//! so the hot path never sees a string). [`build_tables`] is a function of the desired
//! state, the attached endpoints and the resolved neighbours: it performs no I/O, which
//! keeps route computation testable without devices.
//!
//! The state thread does not rebuild the FIB on every publish: a [`TablesBuilder`] keeps
//! its [`Fib`] between publishes and applies only the prefixes that changed — the routes
//! `Desired` journals as messages arrive ([`Desired::take_route_changes`]) and the nets of
//! endpoints attached or detached since. Only a change every target depends on (this
//! node's name, the peer list, the IP pools) or a new snapshot from control rebuilds it.
//! Either way the result equals [`build_tables`] on the same inputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tapwire_proto::{
    self as proto, config, to_dataplane::Payload, IpPoolType, RouteType, NETNS_ANNOTATION,
};

use crate::fib::{Fib, Prefix, PrefixError};
use crate::packet::Mac;
use crate::tables::{
    Encap, EndpointEntry, EndpointIdx, HostPath, LocalNode, Peer, PeerIdx, RouteTarget, Tables,
    TunnelsInUse,
};

/// A message that could not be applied. The message is skipped; state is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what}: bad prefix {value:?}: {source}")]
    BadPrefix {
        what: &'static str,
        value: String,
        source: PrefixError,
    },
    #[error("{what}: bad IPv4 address {value:?}")]
    BadAddress { what: &'static str, value: String },
    #[error("{what}: bad MAC address {value:?}")]
    BadMac { what: &'static str, value: String },
    #[error("{what}: missing field {field}")]
    Missing {
        what: &'static str,
        field: &'static str,
    },
    #[error(
        "workload endpoint {key}: no {NETNS_ANNOTATION:?} annotation naming the pod namespace"
    )]
    NoNetns { key: String },
    #[error("config {key}: bad value {value:?}")]
    BadConfig { key: String, value: String },
}

/// How an IP pool wants its blocks reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

impl EncapMode {
    fn parse(value: &str) -> EncapMode {
        match value.to_ascii_lowercase().as_str() {
            "always" => EncapMode::Always,
            "cross-subnet" | "crosssubnet" => EncapMode::CrossSubnet,
            _ => EncapMode::Never,
        }
    }

    fn applies(self, same_subnet: bool) -> bool {
        match self {
            EncapMode::Never => false,
            EncapMode::Always => true,
            EncapMode::CrossSubnet => !same_subnet,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub cidr: Prefix,
    pub ipip: EncapMode,
    pub vxlan: EncapMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub key: String,
    pub id: proto::WorkloadEndpointId,
    pub netns: PathBuf,
    /// The TAP's name inside the pod namespace.
    pub ifname: String,
    pub mac: Option<Mac>,
    pub nets: Vec<Prefix>,
    pub allowed_sources: Vec<Prefix>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub local_workload: bool,
    pub pool_type: IpPoolType,
    pub node: String,
    pub node_ip: Option<Ipv4Addr>,
    pub same_subnet: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepSpec {
    pub mac: Mac,
    pub underlay_ip: Ipv4Addr,
}

/// Everything control asked for.
///
/// Equality compares what control asked for, not the bookkeeping beside it (the route
/// journal and the per-node route counts derived from `routes`).
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub hostname: String,
    pub vni: Option<u32>,
    pub hosts: BTreeMap<String, Ipv4Addr>,
    pub pools: BTreeMap<String, PoolSpec>,
    pub endpoints: BTreeMap<String, EndpointSpec>,
    pub routes: BTreeMap<Prefix, RouteSpec>,
    pub vteps: BTreeMap<String, VtepSpec>,
    pub encapsulation: proto::Encapsulation,
    /// Node → the node addresses its routes name, with how many routes name each: the
    /// peers routes introduce, without scanning every route on each publish.
    route_nodes: BTreeMap<String, BTreeMap<Ipv4Addr, usize>>,
    /// Routes changed since the last [`Desired::take_route_changes`].
    route_changes: RouteChanges,
}

impl PartialEq for Desired {
    fn eq(&self, other: &Desired) -> bool {
        self.hostname == other.hostname
            && self.vni == other.vni
            && self.hosts == other.hosts
            && self.pools == other.pools
            && self.endpoints == other.endpoints
            && self.routes == other.routes
            && self.vteps == other.vteps
            && self.encapsulation == other.encapsulation
    }
}

impl Eq for Desired {}

/// The route prefixes a [`Desired`] changed since they were last taken.
#[derive(Debug, Clone)]
pub struct RouteChanges {
    /// Which `Desired` these changes belong to: a builder that last saw another one (a
    /// new snapshot from control) cannot apply them as deltas.
    lineage: u64,
    prefixes: BTreeSet<Prefix>,
    /// More changed than is worth journaling (a snapshot arriving): rebuild instead.
    overflowed: bool,
}

impl RouteChanges {
    /// Journaled prefixes beyond which a rebuild is cheaper than applying them.
    const LIMIT: usize = 4096;

    /// "Everything may have changed": forces a full build.
    pub fn everything() -> RouteChanges {
        RouteChanges {
            overflowed: true,
            ..RouteChanges::default()
        }
    }

    fn record(&mut self, prefix: Prefix) {
        if self.overflowed {
            return;
        }
        self.prefixes.insert(prefix);
        if self.prefixes.len() > Self::LIMIT {
            self.overflowed = true;
            self.prefixes = BTreeSet::new();
        }
    }

    /// The changed prefixes, or `None` if too many changed to list.
    pub fn prefixes(&self) -> Option<&BTreeSet<Prefix>> {
        (!self.overflowed).then_some(&self.prefixes)
    }
}

impl Default for RouteChanges {
    /// An empty journal of a new lineage.
    fn default() -> RouteChanges {
        static NEXT_LINEAGE: AtomicU64 = AtomicU64::new(1);
        RouteChanges {
            lineage: NEXT_LINEAGE.fetch_add(1, Ordering::Relaxed),
            prefixes: BTreeSet::new(),
            overflowed: false,
        }
    }
}

/// What applying one message changed, so the caller knows what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Tables need rebuilding.
    Changed,
    /// An endpoint was added or changed: attach its queues.
    EndpointChanged(String),
    /// An endpoint was removed: detach its queues.
    EndpointRemoved(String),
    /// The snapshot is complete.
    InSync,
    /// Control asks for counters.
    CountersRequested,
    /// Nothing to do.
    Nothing,
}

fn parse_prefix(what: &'static str, value: &str) -> Result<Prefix, StateError> {
    value.parse().map_err(|source| StateError::BadPrefix {
        what,
        value: value.to_string(),
        source,
    })
}

fn parse_addr(what: &'static str, value: &str) -> Result<Ipv4Addr, StateError> {
    // Felix sends node addresses either bare or as /32 CIDRs.
    let bare = value.split('/').next().unwrap_or(value);
    bare.parse().map_err(|_| StateError::BadAddress {
        what,
        value: value.to_string(),
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(what: &'static str, value: &str) -> Result<Mac, StateError> {
    tapwire_proto::text::parse_mac(value).ok_or_else(|| StateError::BadMac {
        what,
        value: value.to_string(),
    })
}

/// `orchestrator/workload/endpoint`: how endpoints are keyed and named in counters.
pub fn endpoint_key(id: &proto::WorkloadEndpointId) -> String {
    format!(
        "{}/{}/{}",
        id.orchestrator_id, id.workload_id, id.endpoint_id
    )
}

impl Desired {
    /// Applies one message. On error nothing has changed.
    pub fn apply(&mut self, payload: Payload) -> Result<Applied, StateError> {
        Ok(match payload {
            Payload::InSync(_) => Applied::InSync,
            Payload::CountersRequest(_) => Applied::CountersRequested,
            Payload::ConfigUpdate(update) => {
                if let Some(name) = update.config.get(config::HOSTNAME) {
                    self.hostname = name.clone();
                }
                if let Some(value) = update.config.get(config::VXLAN_VNI) {
                    let vni = value
                        .parse::<u32>()
                        .ok()
                        .filter(|v| *v < 1 << 24)
                        .ok_or_else(|| StateError::BadConfig {
                            key: config::VXLAN_VNI.into(),
                            value: value.clone(),
                        })?;
                    self.vni = Some(vni);
                }
                Applied::Changed
            }
            Payload::HostMetadataUpdate(update) => {
                let addr = parse_addr("host metadata", &update.ipv4_addr)?;
                self.hosts.insert(update.hostname, addr);
                Applied::Changed
            }
            Payload::HostMetadataRemove(remove) => {
                self.hosts.remove(&remove.hostname);
                Applied::Changed
            }
            Payload::IpamPoolUpdate(update) => {
                let pool = update.pool.ok_or(StateError::Missing {
                    what: "IPAM pool update",
                    field: "pool",
                })?;
                let spec = PoolSpec {
                    cidr: parse_prefix("IPAM pool", &pool.cidr)?,
                    ipip: EncapMode::parse(&pool.ipip_mode),
                    vxlan: EncapMode::parse(&pool.vxlan_mode),
                };
                self.pools.insert(update.id, spec);
                Applied::Changed
            }
            Payload::IpamPoolRemove(remove) => {
                self.pools.remove(&remove.id);
                Applied::Changed
            }
            Payload::WorkloadEndpointUpdate(update) => {
                let spec = endpoint_spec(update)?;
                let key = spec.key.clone();
                if self.endpoints.get(&key) == Some(&spec) {
                    return Ok(Applied::Nothing);
                }
                self.endpoints.insert(key.clone(), spec);
                Applied::EndpointChanged(key)
            }
            Payload::WorkloadEndpointRemove(remove) => {
                let id = remove.id.ok_or(StateError::Missing {
                    what: "workload endpoint remove",
                    field: "id",
                })?;
                let key = endpoint_key(&id);
                match self.endpoints.remove(&key) {
                    Some(_) => Applied::EndpointRemoved(key),
                    None => Applied::Nothing,
                }
            }
            Payload::RouteUpdate(update) => {
                let dst = parse_prefix("route", &update.dst)?;
                let node_ip = match update.dst_node_ip.as_str() {
                    "" => None,
                    ip => Some(parse_addr("route dst_node_ip", ip)?),
                };
                let spec = RouteSpec {
                    local_workload: update.local_workload
                        || (update.has_type(RouteType::LocalWorkload) && dst.len() == 32),
                    pool_type: IpPoolType::try_from(update.ip_pool_type).unwrap_or_default(),
                    node: update.dst_node_name,
                    node_ip,
                    same_subnet: update.same_subnet,
                };
                self.count_route_node(&spec, 1);
                if let Some(old) = self.routes.insert(dst, spec) {
                    self.count_route_node(&old, -1);
                }
                self.route_changes.record(dst);
                Applied::Changed
            }
            Payload::RouteRemove(remove) => {
                let dst = parse_prefix("route remove", &remove.dst)?;
                if let Some(old) = self.routes.remove(&dst) {
                    self.count_route_node(&old, -1);
                    self.route_changes.record(dst);
                }
                Applied::Changed
            }
            Payload::VtepUpdate(update) => {
                let spec = VtepSpec {
                    mac: parse_mac("VTEP", &update.mac)?,
                    underlay_ip: parse_addr("VTEP parent_device_ip", &update.parent_device_ip)?,
                };
                self.vteps.insert(update.node, spec);
                Applied::Changed
            }
            Payload::VtepRemove(remove) => {
                self.vteps.remove(&remove.node);
                Applied::Changed
            }
            Payload::Encapsulation(encapsulation) => {
                self.encapsulation = encapsulation;
                Applied::Changed
            }
        })
    }

    /// Takes the journal of route prefixes changed since the last call.
    pub fn take_route_changes(&mut self) -> RouteChanges {
        let lineage = self.route_changes.lineage;
        std::mem::replace(
            &mut self.route_changes,
            RouteChanges {
                lineage,
                prefixes: BTreeSet::new(),
                overflowed: false,
            },
        )
    }

    /// Counts one more (`delta` 1) or one fewer (-1) route naming `route.node_ip`.
    fn count_route_node(&mut self, route: &RouteSpec, delta: isize) {
        let Some(ip) = route.node_ip else {
            return;
        };
        let ips = self.route_nodes.entry(route.node.clone()).or_default();
        let count = ips.entry(ip).or_default();
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            ips.remove(&ip);
            if ips.is_empty() {
                self.route_nodes.remove(&route.node);
            }
        }
    }

    /// The encapsulation a remote route gets: its pool's mode for the pool type the
    /// route names (Always, or CrossSubnet when the peer is in another subnet).
    fn encap_for(&self, dst: &Prefix, route: &RouteSpec) -> Encap {
        let pool = self
            .pools
            .values()
            .filter(|p| p.cidr.len() <= dst.len() && p.cidr.contains(dst.addr()))
            .max_by_key(|p| p.cidr.len());
        let (ipip, vxlan) = match pool {
            Some(pool) => (pool.ipip, pool.vxlan),
            // No pool known: the route's own pool type stands for "always".
            None => (EncapMode::Always, EncapMode::Always),
        };
        match route.pool_type {
            IpPoolType::Ipip if ipip.applies(route.same_subnet) => Encap::Ipip,
            IpPoolType::Vxlan if vxlan.applies(route.same_subnet) => Encap::Vxlan,
            _ => Encap::None,
        }
    }

    /// This node's VTEP MAC: the one control announced, else Calico's derivation.
    pub fn own_vtep_mac(&self) -> Mac {
        self.vteps
            .get(&self.hostname)
            .map(|v| v.mac)
            .unwrap_or_else(|| derive_vtep_mac(&self.hostname))
    }
}

fn endpoint_spec(update: proto::WorkloadEndpointUpdate) -> Result<EndpointSpec, StateError> {
    let what = "workload endpoint";
    let id = update.id.ok_or(StateError::Missing { what, field: "id" })?;
    let endpoint = update.endpoint.ok_or(StateError::Missing {
        what,
        field: "endpoint",
    })?;
    let key = endpoint_key(&id);
    let netns = endpoint
        .netns()
        .map(PathBuf::from)
        .ok_or_else(|| StateError::NoNetns { key: key.clone() })?;
    let nets = endpoint
        .ipv4_nets
        .iter()
        .map(|n| parse_prefix("workload endpoint ipv4_nets", n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut allowed_sources = nets.clone();
    for p in &endpoint.allow_spoofed_source_prefixes {
        // IPv6 prefixes are allowed by Felix but irrelevant to an IPv4-only forwarder.
        if !p.contains(':') {
            allowed_sources.push(parse_prefix("allow_spoofed_source_prefixes", p)?);
        }
    }
    let mac = match endpoint.mac.as_str() {
        "" => None,
        mac => Some(parse_mac("workload endpoint mac", mac)?),
    };
    Ok(EndpointSpec {
        key,
        id,
        netns,
        ifname: if endpoint.name.is_empty() {
            "eth0".to_string()
        } else {
            endpoint.name
        },
        mac,
        nets,
        allowed_sources,
    })
}

/// Calico's VTEP MAC for a node without one configured: 0x66, then the first five bytes
/// of SHA-1 of the node name.
pub fn derive_vtep_mac(node: &str) -> Mac {
    let digest = sha1_smol::Sha1::from(node.as_bytes()).digest().bytes();
    [0x66, digest[0], digest[1], digest[2], digest[3], digest[4]]
}

/// An attached endpoint as the tables need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedEndpoint {
    pub slot: EndpointIdx,
    pub mac: Mac,
    pub mtu_bytes: u32,
}

/// The node facts that do not come from control: read from the underlay interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub mtu_bytes: u32,
    pub vxlan_port: u16,
    /// The host path TAP's kernel side, when the dataplane has one.
    pub host_path: Option<HostPath>,
}

/// Builds one version of the forwarding tables from scratch. Pure: same inputs, same
/// tables.
pub fn build_tables(
    desired: &Desired,
    underlay: &Underlay,
    attached: &BTreeMap<String, AttachedEndpoint>,
    neighbors: &HashMap<Ipv4Addr, Mac>,
) -> Tables {
    TablesBuilder::default().build(
        desired,
        RouteChanges::everything(),
        underlay,
        attached,
        neighbors,
    )
}

/// How the last [`TablesBuilder::build`] produced its FIB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibUpdate {
    /// Built from every route and endpoint.
    Rebuilt,
    /// Only these many prefixes were looked at (and changed where they differed).
    Incremental { prefixes: usize },
}

/// What every route's target depends on besides the route itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Basis {
    lineage: u64,
    hostname: String,
    peer_by_name: BTreeMap<String, PeerIdx>,
    pools: BTreeMap<String, PoolSpec>,
    /// With a host path: the routes every version has besides control's — see
    /// [`host_path_routes`].
    host_routes: BTreeMap<Prefix, RouteTarget>,
}

/// The state thread's FIB between publishes: applies route and endpoint deltas to it
/// instead of rebuilding it. See the module docs.
#[derive(Debug, Default)]
pub struct TablesBuilder {
    fib: Fib<RouteTarget>,
    /// What `fib` was computed against; `None` before the first build.
    basis: Option<Basis>,
    /// The endpoint nets in `fib`, prefix → slot.
    endpoint_nets: BTreeMap<Prefix, EndpointIdx>,
    /// How many entries of `fib` use each encapsulation (indexed by `Encap as usize`).
    encap_routes: EncapRoutes,
    last: Option<FibUpdate>,
}

/// Remote routes per encapsulation, kept up to date as the FIB changes, so that which
/// tunnels are in use is known without scanning the routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EncapRoutes([usize; Encap::ALL.len()]);

impl EncapRoutes {
    /// Counts `target` in (`added`) or out.
    fn count(&mut self, target: Option<&RouteTarget>, added: bool) {
        if let Some(RouteTarget::RemoteNode { encap, .. }) = target {
            let n = &mut self.0[*encap as usize];
            *n = if added {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
        }
    }

    fn in_use(self) -> TunnelsInUse {
        Encap::ALL
            .into_iter()
            .filter(|e| self.0[*e as usize] > 0)
            .fold(TunnelsInUse::default(), TunnelsInUse::with)
    }
}

impl TablesBuilder {
    /// The next version of the tables: equal to [`build_tables`] on the same inputs, but
    /// the FIB is this builder's, updated at the prefixes in `changes` and at endpoint
    /// nets that changed since the last build (the rest is shared with the previous
    /// version). `changes` must be [`Desired::take_route_changes`] of `desired`.
    pub fn build(
        &mut self,
        desired: &Desired,
        changes: RouteChanges,
        underlay: &Underlay,
        attached: &BTreeMap<String, AttachedEndpoint>,
        neighbors: &HashMap<Ipv4Addr, Mac>,
    ) -> Tables {
        let local = LocalNode {
            underlay_ip: underlay.ip,
            underlay_mac: underlay.mac,
            underlay_mtu_bytes: underlay.mtu_bytes,
            vtep_mac: desired.own_vtep_mac(),
            vni: desired.vni.unwrap_or(config::DEFAULT_VXLAN_VNI),
            vxlan_port: underlay.vxlan_port,
            host_path: underlay.host_path,
        };

        // Peers: every other node named by host metadata, a VTEP or a route.
        let mut peer_ips: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
        for (name, ip) in &desired.hosts {
            peer_ips.insert(name, *ip);
        }
        for (name, vtep) in &desired.vteps {
            peer_ips.entry(name).or_insert(vtep.underlay_ip);
        }
        for (name, ips) in &desired.route_nodes {
            if let Some((ip, _)) = ips.first_key_value() {
                peer_ips.entry(name).or_insert(*ip);
            }
        }
        peer_ips.remove(desired.hostname.as_str());
        let mut peers = Vec::with_capacity(peer_ips.len());
        let mut peer_by_name = BTreeMap::new();
        let mut peer_by_underlay = HashMap::new();
        for (name, ip) in peer_ips {
            let idx = peers.len() as u32;
            peers.push(Peer {
                name: name.to_string(),
                underlay_ip: ip,
                vtep_mac: desired.vteps.get(name).map(|v| v.mac),
                next_hop_mac: neighbors.get(&ip).copied(),
            });
            peer_by_name.insert(name.to_string(), idx);
            peer_by_underlay.insert(ip, idx);
            if let Some(vtep) = desired.vteps.get(name) {
                peer_by_underlay.insert(vtep.underlay_ip, idx);
            }
        }

        let slots = attached
            .values()
            .map(|a| a.slot as usize + 1)
            .max()
            .unwrap_or(0);
        let mut endpoints = vec![None; slots];
        // Later endpoints win a net two of them claim, as successive inserts would.
        let mut endpoint_nets = BTreeMap::new();
        for (key, att) in attached {
            let Some(spec) = desired.endpoints.get(key) else {
                continue;
            };
            for net in &spec.nets {
                endpoint_nets.insert(*net, att.slot);
            }
            endpoints[att.slot as usize] = Some(EndpointEntry {
                key: key.clone(),
                mac: spec.mac.unwrap_or(att.mac),
                mtu_bytes: att.mtu_bytes,
                allowed_sources: spec.allowed_sources.clone(),
            });
        }

        let host_routes = match underlay.host_path {
            Some(_) => host_path_routes(desired, &peers),
            None => BTreeMap::new(),
        };
        let basis = Basis {
            lineage: changes.lineage,
            hostname: desired.hostname.clone(),
            peer_by_name,
            pools: desired.pools.clone(),
            host_routes,
        };
        let target = |dst: &Prefix| -> Option<RouteTarget> {
            if let Some(&slot) = endpoint_nets.get(dst) {
                return Some(RouteTarget::LocalEndpoint(slot));
            }
            if let Some(route) = desired.routes.get(dst) {
                if let Some(target) = route_target(desired, &basis.peer_by_name, dst, route) {
                    return Some(target);
                }
            }
            basis.host_routes.get(dst).copied()
        };
        let update = match changes.prefixes() {
            Some(changed) if self.basis.as_ref() == Some(&basis) => {
                // Prefixes whose endpoint slot appeared, vanished or moved.
                let mut dirty: BTreeSet<Prefix> = changed.clone();
                for (net, slot) in &endpoint_nets {
                    if self.endpoint_nets.get(net) != Some(slot) {
                        dirty.insert(*net);
                    }
                }
                for net in self.endpoint_nets.keys() {
                    if !endpoint_nets.contains_key(net) {
                        dirty.insert(*net);
                    }
                }
                for prefix in &dirty {
                    let want = target(prefix);
                    let have = self.fib.get(prefix).copied();
                    if want == have {
                        continue;
                    }
                    self.encap_routes.count(have.as_ref(), false);
                    self.encap_routes.count(want.as_ref(), true);
                    match want {
                        Some(want) => {
                            self.fib.insert(*prefix, want);
                        }
                        None => {
                            self.fib.remove(prefix);
                        }
                    }
                }
                FibUpdate::Incremental {
                    prefixes: dirty.len(),
                }
            }
            _ => {
                let mut encap_routes = EncapRoutes::default();
                let routes = desired
                    .routes
                    .keys()
                    .chain(endpoint_nets.keys())
                    .chain(basis.host_routes.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter_map(|dst| Some((*dst, target(dst)?)))
                    .inspect(|(_, target)| encap_routes.count(Some(target), true));
                self.fib = routes.collect();
                self.encap_routes = encap_routes;
                FibUpdate::Rebuilt
            }
        };
        self.basis = Some(basis);
        self.endpoint_nets = endpoint_nets;
        self.last = Some(update);

        Tables {
            local,
            fib: self.fib.clone(),
            endpoints,
            peers,
            peer_by_underlay,
            tunnels_in_use: self.encap_routes.in_use(),
        }
    }

    /// How the last build produced its FIB (`None` before the first).
    pub fn last_update(&self) -> Option<FibUpdate> {
        self.last
    }
}

/// The routes a dataplane with a host path holds besides control's blocks and pods:
///
/// - `0.0.0.0/0` → the host path: the node's own addresses and everything beyond the
///   pools go to the node's kernel (which routes, masquerades and filters them);
/// - each pool's CIDR → [`RouteTarget::PoolUnrouted`]: an address of a pool in no block
///   anyone owns still draws ICMP net-unreachable instead of leaving for the world;
/// - each peer's underlay address (/32) → that peer, in the tunnel the pools use (VXLAN if
///   a pool uses VXLAN, else IPIP if one uses IPIP, else unencapsulated). Pod traffic to
///   another node's own address then arrives through that node's dataplane and host
///   path, and its replies come back the same way; and tunnel traffic from a peer's
///   kernel to our pods passes the tunnel source check (its source routes to the peer).
fn host_path_routes(desired: &Desired, peers: &[Peer]) -> BTreeMap<Prefix, RouteTarget> {
    let mut routes = BTreeMap::new();
    routes.insert(Prefix::DEFAULT, RouteTarget::Host);
    for pool in desired.pools.values() {
        routes.insert(pool.cidr, RouteTarget::PoolUnrouted);
    }
    let pools = || desired.pools.values();
    let encap = if pools().any(|p| p.vxlan != EncapMode::Never) {
        Encap::Vxlan
    } else if pools().any(|p| p.ipip != EncapMode::Never) {
        Encap::Ipip
    } else {
        Encap::None
    };
    for (idx, peer) in peers.iter().enumerate() {
        let Ok(peer_idx) = PeerIdx::try_from(idx) else {
            break;
        };
        let host = Prefix::host(peer.underlay_ip);
        // A peer address inside a pool would shadow pod routes: leave it to them.
        if !pools().any(|p| p.cidr.contains(peer.underlay_ip)) {
            routes.insert(
                host,
                RouteTarget::RemoteNode {
                    peer: peer_idx,
                    encap,
                },
            );
        }
    }
    routes
}

/// Where a route of `desired` sends packets, or `None` if it adds no FIB entry.
fn route_target(
    desired: &Desired,
    peer_by_name: &BTreeMap<String, PeerIdx>,
    dst: &Prefix,
    route: &RouteSpec,
) -> Option<RouteTarget> {
    if route.local_workload {
        return None; // served by the endpoint's own /32s
    }
    if route.node == desired.hostname {
        return Some(RouteTarget::Blackhole);
    }
    // A remote block of a node we know nothing about adds nothing.
    let &peer = peer_by_name.get(route.node.as_str())?;
    Some(RouteTarget::RemoteNode {
        peer,
        encap: desired.encap_for(dst, route),
    })
}

#[cfg(test)]
mod tests;
