//! Messages → desired state: each control message is checked (addresses parsed once,
//! here) and applied to [`Desired`], which journals the route prefixes it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tapwire_proto::{
    self as proto, config, derive_vtep_mac, to_dataplane::Payload, Encap, EncapMode, IpPoolType,
    RouteType, NETNS_ANNOTATION,
};

use crate::fib::{Prefix, PrefixError};
use crate::packet::Mac;

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
    /// An enumerated field holds a value this dataplane does not know (a newer or broken
    /// sender): the message is refused rather than read as a default.
    #[error("{field}: unknown value {value} (expected {expected})")]
    UnknownValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
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
    pub(super) route_nodes: BTreeMap<String, BTreeMap<Ipv4Addr, usize>>,
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
    pub(super) lineage: u64,
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
    /// Control arms a packet trace.
    TraceRequested(proto::TraceRequest),
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

/// Reads an IP pool's IPIP or VXLAN mode; an unknown one is an error naming `field`.
fn parse_encap_mode(field: &'static str, value: &str) -> Result<EncapMode, StateError> {
    EncapMode::from_felix_name(value).ok_or_else(|| StateError::UnknownValue {
        field,
        value: format!("{value:?}"),
        expected: "\"\", \"always\" or \"cross-subnet\"",
    })
}

/// Reads a route's pool type; an unknown number is an error, not [`IpPoolType::None`].
fn parse_pool_type(value: i32) -> Result<IpPoolType, StateError> {
    IpPoolType::try_from(value).map_err(|_| StateError::UnknownValue {
        field: "RouteUpdate.ip_pool_type",
        value: value.to_string(),
        expected: "0 (none), 1 (no encapsulation), 2 (VXLAN) or 3 (IPIP)",
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(what: &'static str, value: &str) -> Result<Mac, StateError> {
    tapwire_proto::text::parse_mac(value).ok_or_else(|| StateError::BadMac {
        what,
        value: value.to_string(),
    })
}

impl Desired {
    /// Applies one message. On error nothing has changed.
    pub fn apply(&mut self, payload: Payload) -> Result<Applied, StateError> {
        Ok(match payload {
            Payload::InSync(_) => Applied::InSync,
            Payload::CountersRequest(_) => Applied::CountersRequested,
            Payload::TraceRequest(request) => Applied::TraceRequested(request),
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
                    ipip: parse_encap_mode("IPAMPool.ipip_mode", &pool.ipip_mode)?,
                    vxlan: parse_encap_mode("IPAMPool.vxlan_mode", &pool.vxlan_mode)?,
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
                let key = id.key();
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
                    pool_type: parse_pool_type(update.ip_pool_type)?,
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
    pub(super) fn encap_for(&self, dst: &Prefix, route: &RouteSpec) -> Encap {
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
            IpPoolType::Ipip if ipip.encapsulates(route.same_subnet) => Encap::Ipip,
            IpPoolType::Vxlan if vxlan.encapsulates(route.same_subnet) => Encap::Vxlan,
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
    let key = id.key();
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
