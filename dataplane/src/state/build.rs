//! Desired state → tables: [`build_tables`] from scratch, or [`TablesBuilder`] applying
//! only the prefixes that changed since its last build.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use tapwire_proto::{config, EncapMode};

use super::{Desired, PoolSpec, RouteChanges, RouteSpec};
use crate::fib::{Fib, Prefix};
use crate::packet::Mac;
use crate::tables::{
    Encap, EndpointEntry, EndpointIdx, HostPath, LocalNode, Peer, PeerIdx, RouteTarget, Tables,
    TunnelsInUse,
};

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
