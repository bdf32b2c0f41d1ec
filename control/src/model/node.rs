//! `kind: Node`: a node of the cluster, its underlay address, VTEP and observed status.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::net::{cidr_list, interface_address, nets_overlap};
use super::{validate_name, MacAddr, Metadata, ModelError, Resource};

/// `kind: Node`: a node of the cluster, either registered by its own tapwire control or
/// declared by hand for a host that does not run tapwire (e.g. one using the kernel's
/// VXLAN as Calico's Linux dataplane does).
///
/// Which of the two it is shows in `status.tapwire`: a tapwire control writes it when it
/// registers its node and refreshes its heartbeat; a declared host has none. (Status is
/// observed state, so it is the place for "who manages this", and `tapwirectl apply` of a
/// spec never has to say.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default, skip_serializing_if = "NodeStatus::is_empty")]
    pub status: NodeStatus,
}
resource!(Node, "Node");

/// The desired facts of a [`Node`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// The node's underlay address, and its BGP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    /// The node's VXLAN tunnel address, when it has one.
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<Ipv4Addr>,
    /// The node's VTEP MAC; derived from the name when absent ([`MacAddr::derived_vtep`]).
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<MacAddr>,
    /// tapwire extension: fixed pod blocks of a host whose addresses tapwire's IPAM does
    /// not assign (a declared host). IPAM never hands out addresses inside them.
    #[serde(
        default,
        rename = "podCIDRs",
        with = "cidr_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub pod_cidrs: Vec<Ipv4Net>,
}

/// Calico's `spec.bgp`: the underlay address (also the node's BGP address and router id),
/// and what BGP uses (see [`crate::bgp`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeBgpSpec {
    /// The underlay address with its subnet (`192.168.0.1/24`); the subnet decides
    /// which peers `CrossSubnet` pools reach unencapsulated.
    #[serde(rename = "ipv4Address", with = "interface_address")]
    pub ipv4_address: Ipv4Net,
    /// Calico's IPIP tunnel address; kept for compatibility, unused by tapwire.
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<Ipv4Addr>,
    /// The node's AS number (else the `default` BGPConfiguration's, else 64512).
    #[serde(
        default,
        with = "crate::bgp::model::as_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub as_number: Option<u32>,
    /// Makes the node a BGP route reflector of this cluster ID (an IPv4-formatted ID).
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
}

/// Observed state of a [`Node`]. Unknown keys are ignored here (status is written by
/// the system, and documents exported from Calico carry status fields tapwire has not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Present when a tapwire control manages the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tapwire: Option<TapwireNodeStatus>,
}

impl NodeStatus {
    pub fn is_empty(&self) -> bool {
        self.tapwire.is_none()
    }
}

/// What a node's tapwire control reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapwireNodeStatus {
    /// When the control last refreshed this status, RFC 3339 UTC ([`format_rfc3339`](super::format_rfc3339)).
    pub last_heartbeat: String,
    /// The underlay interface the control found the node's address on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub underlay_interface: String,
    /// Whether the node's dataplane has applied the control's full state.
    #[serde(default)]
    pub dataplane_in_sync: bool,
}

impl Node {
    /// A node with an underlay address and nothing else.
    pub fn new(name: impl Into<String>, underlay: Ipv4Net) -> Node {
        Node {
            metadata: Metadata::named(name),
            spec: NodeSpec {
                bgp: Some(NodeBgpSpec {
                    ipv4_address: underlay,
                    ipv4_ipip_tunnel_addr: None,
                    as_number: None,
                    route_reflector_cluster_id: None,
                }),
                ..NodeSpec::default()
            },
            status: NodeStatus::default(),
        }
    }

    fn invalid(&self, field: &'static str, reason: String) -> ModelError {
        ModelError::Invalid {
            kind: Self::KIND,
            name: self.metadata.name.clone(),
            field,
            reason,
        }
    }

    /// The underlay address with its subnet.
    pub fn underlay(&self) -> Option<Ipv4Net> {
        self.spec.bgp.as_ref().map(|b| b.ipv4_address)
    }

    /// The VTEP MAC: the configured one, else Calico's derivation from the name.
    pub fn vtep_mac(&self) -> MacAddr {
        self.spec
            .vxlan_tunnel_mac_addr
            .unwrap_or_else(|| MacAddr::derived_vtep(&self.metadata.name))
    }

    /// Whether a tapwire control manages this node (see [`Node`]).
    pub fn is_managed(&self) -> bool {
        self.status.tapwire.is_some()
    }

    /// Checks the node: name, an underlay address, a unicast VTEP MAC, pod CIDRs without
    /// host bits and not overlapping each other.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name(Self::KIND, &self.metadata.name)?;
        let Some(underlay) = self.underlay() else {
            return Err(self.invalid(
                "spec.bgp.ipv4Address",
                "required: the node's underlay address with its subnet, e.g. 192.168.0.1/24".into(),
            ));
        };
        let addr = underlay.addr();
        if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
            return Err(self.invalid(
                "spec.bgp.ipv4Address",
                format!("{addr} cannot be a node's underlay address"),
            ));
        }
        if self.spec.bgp.as_ref().and_then(|b| b.as_number) == Some(0) {
            return Err(self.invalid(
                "spec.bgp.asNumber",
                "0 is not a valid AS number (1 to 4294967295)".into(),
            ));
        }
        if let Some(mac) = self.spec.vxlan_tunnel_mac_addr {
            if mac.is_multicast() || mac.0 == [0; 6] {
                return Err(self.invalid(
                    "spec.vxlanTunnelMACAddr",
                    format!("{mac} is not a unicast MAC address"),
                ));
            }
        }
        for (i, net) in self.spec.pod_cidrs.iter().enumerate() {
            if *net != net.trunc() {
                return Err(self.invalid(
                    "spec.podCIDRs",
                    format!("{net} has host bits set (the network is {})", net.trunc()),
                ));
            }
            if let Some(other) = self.spec.pod_cidrs[..i]
                .iter()
                .find(|o| nets_overlap(**o, *net))
            {
                return Err(self.invalid("spec.podCIDRs", format!("{net} overlaps {other}")));
            }
        }
        Ok(())
    }
}
