//! The protobuf messages, hand-written with prost's derives (no `.proto`, no codegen).
//! Field numbers are Felix's (REFERENCE.md §2) where Felix has the message, ≥ 1000 for
//! tapwire-only ones; changing a number breaks the wire format.
//!
//! Everything is plain data: addresses and CIDRs are strings, exactly as Felix sends
//! them, and are parsed (with errors) by whoever applies the message.

use std::collections::HashMap;

use crate::trace::{TraceDone, TraceRecord, TraceRequest};

/// Control → dataplane envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ToDataplane {
    /// Increases by one per message sent on a connection.
    #[prost(uint64, tag = "15")]
    pub sequence_number: u64,
    /// `None` when the sender used a payload this crate does not know: skip it.
    #[prost(
        oneof = "to_dataplane::Payload",
        tags = "1, 11, 12, 13, 14, 16, 17, 18, 23, 24, 25, 26, 30, 1000, 1001"
    )]
    pub payload: Option<to_dataplane::Payload>,
}

/// The payloads of [`ToDataplane`].
pub mod to_dataplane {
    use super::*;

    /// One control → dataplane message.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Payload {
        /// The snapshot sent since (re)connecting is complete.
        #[prost(message, tag = "1")]
        InSync(InSync),
        #[prost(message, tag = "11")]
        WorkloadEndpointUpdate(WorkloadEndpointUpdate),
        #[prost(message, tag = "12")]
        WorkloadEndpointRemove(WorkloadEndpointRemove),
        #[prost(message, tag = "13")]
        ConfigUpdate(ConfigUpdate),
        #[prost(message, tag = "14")]
        HostMetadataUpdate(HostMetadataUpdate),
        #[prost(message, tag = "16")]
        IpamPoolUpdate(IpamPoolUpdate),
        #[prost(message, tag = "17")]
        IpamPoolRemove(IpamPoolRemove),
        #[prost(message, tag = "18")]
        HostMetadataRemove(HostMetadataRemove),
        #[prost(message, tag = "23")]
        RouteUpdate(RouteUpdate),
        #[prost(message, tag = "24")]
        RouteRemove(RouteRemove),
        #[prost(message, tag = "25")]
        VtepUpdate(VxlanTunnelEndpointUpdate),
        #[prost(message, tag = "26")]
        VtepRemove(VxlanTunnelEndpointRemove),
        #[prost(message, tag = "30")]
        Encapsulation(Encapsulation),
        /// tapwire-only: asks for a [`CountersReply`](super::CountersReply).
        #[prost(message, tag = "1000")]
        CountersRequest(CountersRequest),
        /// tapwire-only: arms a packet trace.
        #[prost(message, tag = "1001")]
        TraceRequest(TraceRequest),
    }
}

/// Dataplane → control envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FromDataplane {
    /// Increases by one per message sent on a connection.
    #[prost(uint64, tag = "8")]
    pub sequence_number: u64,
    /// `None` when the sender used a payload this crate does not know: skip it.
    #[prost(
        oneof = "from_dataplane::Payload",
        tags = "3, 6, 7, 10, 1000, 1001, 1002"
    )]
    pub payload: Option<from_dataplane::Payload>,
}

/// The payloads of [`FromDataplane`].
pub mod from_dataplane {
    use super::*;

    /// One dataplane → control message.
    // Unboxed so payloads are built plainly; a few hundred bytes per control message
    // (never on the packet path) is not worth the indirection.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Payload {
        #[prost(message, tag = "3")]
        ProcessStatusUpdate(ProcessStatusUpdate),
        #[prost(message, tag = "6")]
        WorkloadEndpointStatusUpdate(WorkloadEndpointStatusUpdate),
        #[prost(message, tag = "7")]
        WorkloadEndpointStatusRemove(WorkloadEndpointStatusRemove),
        #[prost(message, tag = "10")]
        DataplaneInSync(DataplaneInSync),
        /// tapwire-only: answers a [`CountersRequest`](super::CountersRequest).
        #[prost(message, tag = "1000")]
        CountersReply(CountersReply),
        /// tapwire-only: one packet of a trace.
        #[prost(message, tag = "1001")]
        TraceRecord(TraceRecord),
        /// tapwire-only: a trace ended.
        #[prost(message, tag = "1002")]
        TraceDone(TraceDone),
    }
}

/// The end of the initial snapshot (control → dataplane).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InSync {}

/// The dataplane has applied the snapshot that ended with [`InSync`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct DataplaneInSync {}

/// Dataplane settings; sent first on every connection. Keys are in [`crate::config`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigUpdate {
    #[prost(map = "string, string", tag = "1")]
    pub config: HashMap<String, String>,
    /// Free text for logs (e.g. where the values came from).
    #[prost(string, tag = "3")]
    pub message: String,
}

/// A node of the cluster and its underlay addresses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HostMetadataUpdate {
    #[prost(string, tag = "1")]
    pub hostname: String,
    #[prost(string, tag = "2")]
    pub ipv4_addr: String,
    #[prost(string, tag = "3")]
    pub ipv6_addr: String,
    #[prost(string, tag = "4")]
    pub asnumber: String,
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
}

/// A node left the cluster.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HostMetadataRemove {
    #[prost(string, tag = "1")]
    pub hostname: String,
    #[prost(string, tag = "2")]
    pub ipv4_addr: String,
}

/// An IP pool was created or changed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpamPoolUpdate {
    /// The pool's identity (its CIDR in Felix).
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub pool: Option<IpamPool>,
}

/// An IP pool was deleted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpamPoolRemove {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// An IP pool's settings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpamPool {
    #[prost(string, tag = "1")]
    pub cidr: String,
    /// NAT-outgoing: masquerade pod traffic leaving the pools.
    #[prost(bool, tag = "2")]
    pub masquerade: bool,
    /// `""` (never), `"always"` or `"cross-subnet"` ([`EncapMode`](crate::EncapMode));
    /// anything else makes the dataplane refuse the message.
    #[prost(string, tag = "3")]
    pub ipip_mode: String,
    /// As [`IpamPool::ipip_mode`].
    #[prost(string, tag = "4")]
    pub vxlan_mode: String,
    #[prost(string, repeated, tag = "5")]
    pub allowed_uses: Vec<String>,
}

/// Identifies a workload endpoint (a pod interface). Tag 1 is reserved in Felix.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct WorkloadEndpointId {
    #[prost(string, tag = "2")]
    pub orchestrator_id: String,
    #[prost(string, tag = "3")]
    pub workload_id: String,
    #[prost(string, tag = "4")]
    pub endpoint_id: String,
}

impl WorkloadEndpointId {
    /// `orchestrator/workload/endpoint`: the one key both daemons file an endpoint under
    /// (the dataplane's endpoint table and counters, control's endpoint status).
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.orchestrator_id, self.workload_id, self.endpoint_id
        )
    }
}

/// A local workload endpoint was created or changed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadEndpointUpdate {
    #[prost(message, optional, tag = "1")]
    pub id: Option<WorkloadEndpointId>,
    #[prost(message, optional, tag = "5")]
    pub endpoint: Option<WorkloadEndpoint>,
}

/// A local workload endpoint was deleted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadEndpointRemove {
    #[prost(message, optional, tag = "1")]
    pub id: Option<WorkloadEndpointId>,
}

/// A pod interface. Felix's policy fields (tiers, NAT, QoS, …) are not modelled.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadEndpoint {
    /// `"active"` or `"inactive"`.
    #[prost(string, tag = "1")]
    pub state: String,
    /// The interface name (the pod's TAP).
    #[prost(string, tag = "2")]
    pub name: String,
    /// The pod interface's MAC, `aa:bb:cc:dd:ee:ff`.
    #[prost(string, tag = "3")]
    pub mac: String,
    #[prost(string, repeated, tag = "4")]
    pub profile_ids: Vec<String>,
    /// The pod's IPv4 addresses as CIDRs (`10.65.0.3/32`).
    #[prost(string, repeated, tag = "5")]
    pub ipv4_nets: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub ipv6_nets: Vec<String>,
    /// Source prefixes the pod may send from besides its own addresses.
    #[prost(string, repeated, tag = "10")]
    pub allow_spoofed_source_prefixes: Vec<String>,
    /// Free-form annotations; tapwire keeps the pod netns path under
    /// [`NETNS_ANNOTATION`](crate::NETNS_ANNOTATION).
    #[prost(map = "string, string", tag = "11")]
    pub annotations: HashMap<String, String>,
}

impl WorkloadEndpoint {
    /// The pod's network namespace path, from [`NETNS_ANNOTATION`](crate::NETNS_ANNOTATION).
    pub fn netns(&self) -> Option<&str> {
        self.annotations
            .get(crate::NETNS_ANNOTATION)
            .map(String::as_str)
    }
}

/// The kinds of a route; [`RouteUpdate::types`] is a bitwise OR of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RouteType {
    /// No bit set: the route only carries information about a CIDR (e.g. a pool).
    CidrInfo = 0,
    RemoteWorkload = 1,
    RemoteHost = 2,
    LocalWorkload = 4,
    LocalHost = 8,
    RemoteTunnel = 16,
    LocalTunnel = 32,
}

/// The encapsulation of the pool a route's destination belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum IpPoolType {
    None = 0,
    NoEncap = 1,
    Vxlan = 2,
    Ipip = 3,
}

/// A route to `dst` was created or changed. Tag 1 is reserved in Felix.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteUpdate {
    /// Bitmap of [`RouteType`]s; query it with [`RouteUpdate::has_type`].
    #[prost(int32, tag = "12")]
    pub types: i32,
    /// An [`IpPoolType`]; a number it does not define makes the dataplane refuse the
    /// message.
    #[prost(enumeration = "IpPoolType", tag = "2")]
    pub ip_pool_type: i32,
    /// The destination CIDR.
    #[prost(string, tag = "3")]
    pub dst: String,
    /// The node that owns `dst`.
    #[prost(string, tag = "4")]
    pub dst_node_name: String,
    /// That node's underlay address.
    #[prost(string, tag = "5")]
    pub dst_node_ip: String,
    /// The owner is in this node's underlay subnet (cross-subnet modes skip encap).
    #[prost(bool, tag = "7")]
    pub same_subnet: bool,
    #[prost(bool, tag = "8")]
    pub nat_outgoing: bool,
    #[prost(bool, tag = "9")]
    pub local_workload: bool,
    #[prost(message, optional, tag = "10")]
    pub tunnel_type: Option<TunnelType>,
    /// `dst` is an address borrowed from another node's block.
    #[prost(bool, tag = "11")]
    pub borrowed: bool,
}

impl RouteUpdate {
    /// Whether the route has kind `t`. [`RouteType::CidrInfo`] is the absence of
    /// every other kind, so it matches only when no bit is set.
    pub fn has_type(&self, t: RouteType) -> bool {
        match t {
            RouteType::CidrInfo => self.types == 0,
            bit => self.types & bit as i32 != 0,
        }
    }

    /// Adds kind `t` to [`RouteUpdate::types`].
    pub fn add_type(&mut self, t: RouteType) {
        self.types |= t as i32;
    }
}

/// The route to `dst` was deleted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteRemove {
    #[prost(string, tag = "2")]
    pub dst: String,
}

/// How a tunnel route reaches its node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct TunnelType {
    #[prost(bool, tag = "1")]
    pub ipip: bool,
    #[prost(bool, tag = "2")]
    pub vxlan: bool,
    #[prost(bool, tag = "3")]
    pub wireguard: bool,
}

/// A node's VXLAN tunnel endpoint (VTEP).
#[derive(Clone, PartialEq, prost::Message)]
pub struct VxlanTunnelEndpointUpdate {
    #[prost(string, tag = "1")]
    pub node: String,
    /// The VTEP's MAC (the inner Ethernet destination).
    #[prost(string, tag = "2")]
    pub mac: String,
    /// The node's tunnel address.
    #[prost(string, tag = "3")]
    pub ipv4_addr: String,
    /// The node's underlay address (the outer IPv4 destination).
    #[prost(string, tag = "4")]
    pub parent_device_ip: String,
    #[prost(string, tag = "5")]
    pub mac_v6: String,
    #[prost(string, tag = "6")]
    pub ipv6_addr: String,
    #[prost(string, tag = "7")]
    pub parent_device_ipv6: String,
}

/// A node's VTEP was deleted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VxlanTunnelEndpointRemove {
    #[prost(string, tag = "1")]
    pub node: String,
}

/// Which encapsulations the cluster's pools use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Encapsulation {
    #[prost(bool, tag = "1")]
    pub ipip_enabled: bool,
    #[prost(bool, tag = "2")]
    pub vxlan_enabled: bool,
    #[prost(bool, tag = "3")]
    pub vxlan_enabled_v6: bool,
    #[prost(bool, tag = "4")]
    pub no_encap_enabled: bool,
}

/// The dataplane's heartbeat.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessStatusUpdate {
    /// When the heartbeat was sent, RFC 3339.
    #[prost(string, tag = "1")]
    pub iso_timestamp: String,
    /// Seconds since the dataplane started.
    #[prost(double, tag = "2")]
    pub uptime: f64,
    /// The dataplane's version (tapwire's addition; empty from a sender without it).
    #[prost(string, tag = "3")]
    pub version: String,
}

/// An endpoint's state as the dataplane sees it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadEndpointStatusUpdate {
    #[prost(message, optional, tag = "1")]
    pub id: Option<WorkloadEndpointId>,
    #[prost(message, optional, tag = "2")]
    pub status: Option<EndpointStatus>,
    #[prost(message, optional, tag = "3")]
    pub endpoint: Option<WorkloadEndpoint>,
}

/// `"up"` or `"down"`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct EndpointStatus {
    #[prost(string, tag = "1")]
    pub status: String,
}

/// The dataplane no longer has the endpoint.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadEndpointStatusRemove {
    #[prost(message, optional, tag = "1")]
    pub id: Option<WorkloadEndpointId>,
}

/// tapwire-only: asks the dataplane for its counters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountersRequest {}

/// tapwire-only: the dataplane's counters, summed over workers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountersReply {
    #[prost(message, repeated, tag = "1")]
    pub counters: Vec<Counter>,
}

/// One named counter (e.g. a drop reason).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Counter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub value: u64,
}
