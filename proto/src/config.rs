//! Keys of the [`ConfigUpdate::config`](crate::ConfigUpdate::config) map that tapwire
//! reads, and their defaults. Felix's key names where Felix has the setting; the
//! tapwire-only keys are prefixed `Tapwire`. Values are strings, as in Felix.

/// This node's name, as the datastore knows it (matches `RouteUpdate::dst_node_name`).
pub const HOSTNAME: &str = "FelixHostname";

/// The VXLAN network identifier used on the underlay.
pub const VXLAN_VNI: &str = "VXLANVNI";
/// Calico's VNI when [`VXLAN_VNI`] is absent.
pub const DEFAULT_VXLAN_VNI: u32 = 4096;

/// The UDP destination port of VXLAN packets.
pub const VXLAN_PORT: &str = "VXLANPort";
/// The IANA VXLAN port, used when [`VXLAN_PORT`] is absent.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// The name of the host interface that carries traffic between nodes.
pub const UNDERLAY_INTERFACE: &str = "TapwireUnderlayInterface";

/// The pod MTU, in bytes, when routes use IPIP.
pub const IPIP_MTU: &str = "IpInIpMtu";

/// The pod MTU, in bytes, when routes use VXLAN.
pub const VXLAN_MTU: &str = "VXLANMTU";
