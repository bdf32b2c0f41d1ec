//! The desired state a lab's control plane sends, as Felix would send it: a pure function
//! of the nodes, the pods and the encapsulation [`Mode`]. No I/O here.
//!
//! The cluster has one IP pool, [`POOL_CIDR`]; node *i* owns block `10.65.i.0/26` and its
//! tunnel address is the block's first address. Every dataplane gets: its config (own
//! name, VNI), host metadata and a VTEP for every node (itself included), the pool, the
//! encapsulation summary, a route for every block (its own is a blackhole, the others go
//! to their node), the `/32` local-workload routes and endpoints of its own pods, then
//! `InSync`.

use std::collections::HashMap;

use tapwire_proto::{
    config, to_dataplane::Payload, ConfigUpdate, Encap, Encapsulation, HostMetadataUpdate, InSync,
    IpPoolType, IpamPool, IpamPoolUpdate, RouteType, RouteUpdate, VxlanTunnelEndpointUpdate,
    WorkloadEndpoint, WorkloadEndpointId, WorkloadEndpointUpdate, NETNS_ANNOTATION,
};

use crate::lab::{format_mac, Node, Pod};

/// The cluster's IP pool.
pub const POOL_CIDR: &str = "10.65.0.0/16";
/// The pool's id in `IpamPoolUpdate`.
pub const POOL_ID: &str = "default-ipv4-ippool";
/// The VXLAN network identifier (Calico's default).
pub const VNI: u32 = config::DEFAULT_VXLAN_VNI;

/// How the pool's blocks are reached across nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Routed unencapsulated (`ipipMode: Never`, `vxlanMode: Never`).
    None,
    /// IP-in-IP (`ipipMode: Always`).
    Ipip,
    /// VXLAN (`vxlanMode: Always`).
    Vxlan,
}

impl Mode {
    /// Every mode, in the order the demo and measurements use.
    pub const ALL: [Mode; 3] = [Mode::None, Mode::Ipip, Mode::Vxlan];

    /// The encapsulation, for [`tapwire_control::podnet::pod_mtu`].
    pub fn encap(self) -> Encap {
        match self {
            Mode::None => Encap::None,
            Mode::Ipip => Encap::Ipip,
            Mode::Vxlan => Encap::Vxlan,
        }
    }

    /// Lower-case name, as the dataplane's counters spell it (`encap.<name>.tx_packets`).
    pub fn name(self) -> &'static str {
        self.encap().name()
    }

    /// The pool's `(ipip_mode, vxlan_mode)` strings.
    fn pool_modes(self) -> (&'static str, &'static str) {
        match self {
            Mode::None => ("", ""),
            Mode::Ipip => ("always", ""),
            Mode::Vxlan => ("", "always"),
        }
    }

    /// The `ip_pool_type` of routes to remote blocks.
    fn pool_type(self) -> IpPoolType {
        match self {
            Mode::None => IpPoolType::NoEncap,
            Mode::Ipip => IpPoolType::Ipip,
            Mode::Vxlan => IpPoolType::Vxlan,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `ConfigUpdate`: the node's own name and the VNI. Always sent first.
pub fn config_update(own: &Node) -> Payload {
    let config = HashMap::from([
        (config::HOSTNAME.to_string(), own.name.clone()),
        (config::VXLAN_VNI.to_string(), VNI.to_string()),
    ]);
    Payload::ConfigUpdate(ConfigUpdate {
        config,
        message: "tapwire lab".into(),
    })
}

/// `HostMetadataUpdate` for `node`.
pub fn host_update(node: &Node) -> Payload {
    Payload::HostMetadataUpdate(HostMetadataUpdate {
        hostname: node.name.clone(),
        ipv4_addr: node.underlay_ip.to_string(),
        ..Default::default()
    })
}

/// `VtepUpdate` for `node`: its VTEP MAC, tunnel address and underlay address.
pub fn vtep_update(node: &Node) -> Payload {
    Payload::VtepUpdate(VxlanTunnelEndpointUpdate {
        node: node.name.clone(),
        mac: format_mac(node.vtep_mac),
        ipv4_addr: node.tunnel_ip.to_string(),
        parent_device_ip: node.underlay_ip.to_string(),
        ..Default::default()
    })
}

/// `IpamPoolUpdate` for the lab pool in `mode`.
pub fn pool_update(mode: Mode) -> Payload {
    let (ipip_mode, vxlan_mode) = mode.pool_modes();
    Payload::IpamPoolUpdate(IpamPoolUpdate {
        id: POOL_ID.into(),
        pool: Some(IpamPool {
            cidr: POOL_CIDR.into(),
            masquerade: false,
            ipip_mode: ipip_mode.into(),
            vxlan_mode: vxlan_mode.into(),
            allowed_uses: vec!["Workload".into(), "Tunnel".into()],
        }),
    })
}

/// `Encapsulation`: which encapsulations the pools use.
pub fn encapsulation(mode: Mode) -> Payload {
    Payload::Encapsulation(Encapsulation {
        ipip_enabled: mode == Mode::Ipip,
        vxlan_enabled: mode == Mode::Vxlan,
        vxlan_enabled_v6: false,
        no_encap_enabled: mode == Mode::None,
    })
}

/// The route for `block_owner`'s block as `own` sees it: its own block is local (the
/// dataplane blackholes unused addresses), another node's goes to that node.
pub fn block_route(own: &Node, block_owner: &Node, mode: Mode) -> Payload {
    route_to(own, block_owner, &block_owner.block.to_string(), mode)
}

/// The route for prefix `dst` (CIDR text) of `owner`'s pods as `own` sees it, like
/// [`block_route`] for any prefix (e.g. the many blocks of a large synthetic cluster).
pub fn route_to(own: &Node, owner: &Node, dst: &str, mode: Mode) -> Payload {
    let mut route = RouteUpdate {
        dst: dst.to_string(),
        dst_node_name: owner.name.clone(),
        dst_node_ip: owner.underlay_ip.to_string(),
        ..Default::default()
    };
    if owner.name == own.name {
        route.add_type(RouteType::LocalWorkload);
    } else {
        route.add_type(RouteType::RemoteWorkload);
        route.ip_pool_type = mode.pool_type() as i32;
        route.same_subnet = owner.subnet == own.subnet;
    }
    Payload::RouteUpdate(route)
}

/// The `/32` local-workload route Felix sends for a pod on this node.
pub fn pod_route(own: &Node, pod: &Pod) -> Payload {
    let mut route = RouteUpdate {
        dst: format!("{}/32", pod.ip),
        dst_node_name: own.name.clone(),
        dst_node_ip: own.underlay_ip.to_string(),
        local_workload: true,
        ip_pool_type: IpPoolType::None as i32,
        ..Default::default()
    };
    route.add_type(RouteType::LocalWorkload);
    Payload::RouteUpdate(route)
}

/// The endpoint id of `pod` (`k8s/<pod>/eth0`).
pub fn endpoint_id(pod: &Pod) -> WorkloadEndpointId {
    WorkloadEndpointId {
        orchestrator_id: "k8s".into(),
        workload_id: pod.name.clone(),
        endpoint_id: "eth0".into(),
    }
}

/// The dataplane's key for `pod`'s endpoint, as endpoint counters name it.
pub fn endpoint_key(pod: &Pod) -> String {
    endpoint_id(pod).key()
}

/// `WorkloadEndpointUpdate` for a local pod, with its netns in the annotation.
pub fn endpoint_update(pod: &Pod) -> Payload {
    Payload::WorkloadEndpointUpdate(WorkloadEndpointUpdate {
        id: Some(endpoint_id(pod)),
        endpoint: Some(WorkloadEndpoint {
            state: "active".into(),
            name: "eth0".into(),
            mac: format_mac(pod.mac),
            ipv4_nets: vec![format!("{}/32", pod.ip)],
            annotations: HashMap::from([(
                NETNS_ANNOTATION.to_string(),
                pod.netns().path().display().to_string(),
            )]),
            ..Default::default()
        }),
    })
}

/// The full snapshot for `own`'s dataplane: config first, `InSync` last.
pub fn snapshot(own: &Node, nodes: &[Node], pods: &[Pod], mode: Mode) -> Vec<Payload> {
    let mut out = vec![config_update(own)];
    out.extend(nodes.iter().map(host_update));
    out.push(pool_update(mode));
    out.push(encapsulation(mode));
    out.extend(nodes.iter().map(vtep_update));
    out.extend(nodes.iter().map(|n| block_route(own, n, mode)));
    let local: Vec<&Pod> = pods.iter().filter(|p| p.node == own.name).collect();
    out.extend(local.iter().map(|p| pod_route(own, p)));
    out.extend(local.iter().map(|p| endpoint_update(p)));
    out.push(Payload::InSync(InSync {}));
    out
}

/// The incremental update that moves `own`'s dataplane to `mode`: the pool's new modes,
/// the encapsulation summary and the remote block routes with the new pool type.
pub fn switch_mode(own: &Node, nodes: &[Node], mode: Mode) -> Vec<Payload> {
    let mut out = vec![pool_update(mode), encapsulation(mode)];
    out.extend(
        nodes
            .iter()
            .filter(|n| n.name != own.name)
            .map(|n| block_route(own, n, mode)),
    );
    out
}
