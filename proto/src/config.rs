//! Keys of the [`ConfigUpdate::config`](crate::ConfigUpdate::config) map that tapwire
//! reads, and their defaults: Felix's key names, string values as in Felix.

/// This node's name, as the datastore knows it (matches `RouteUpdate::dst_node_name`).
pub const HOSTNAME: &str = "FelixHostname";

/// The VXLAN network identifier used on the underlay.
pub const VXLAN_VNI: &str = "VXLANVNI";
/// Calico's VNI when [`VXLAN_VNI`] is absent.
pub const DEFAULT_VXLAN_VNI: u32 = 4096;
