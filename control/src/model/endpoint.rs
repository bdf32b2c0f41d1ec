//! `kind: WorkloadEndpoint`: one pod interface, as the control plane records it.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::net::cidr_list;
use super::{MacAddr, Metadata};

/// `kind: WorkloadEndpoint`: one pod interface, written by the control plane on a CNI ADD
/// and deleted on DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEndpoint {
    pub metadata: Metadata,
    pub spec: WorkloadEndpointSpec,
}
resource!(WorkloadEndpoint, "WorkloadEndpoint");

/// The facts of a [`WorkloadEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    /// The node the pod runs on.
    pub node: String,
    /// `k8s` for Kubernetes pods, `cni` for anything else a runtime started.
    pub orchestrator: String,
    /// The pod name (Kubernetes) or the container id.
    pub workload: String,
    /// The interface's name as the orchestrator knows it (`eth0`).
    pub endpoint: String,
    /// The interface's device name (with tapwire: the TAP inside the pod, `eth0`).
    pub interface_name: String,
    /// The pod's addresses, `/32`s.
    #[serde(with = "cidr_list")]
    pub ip_networks: Vec<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// tapwire: the pod's network namespace path, where its TAP lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The runtime's container id (the CNI `CNI_CONTAINERID`).
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}

#[cfg(test)]
impl WorkloadEndpoint {
    /// The endpoint the agent writes for CNI pod `container_id` on `node` (tests).
    pub(crate) fn cni_pod(node: &str, container_id: &str, address: Ipv4Net) -> WorkloadEndpoint {
        WorkloadEndpoint {
            metadata: Metadata::named(format!("{node}-cni-{container_id}-eth0")),
            spec: WorkloadEndpointSpec {
                node: node.to_string(),
                orchestrator: "cni".into(),
                workload: container_id.to_string(),
                endpoint: "eth0".into(),
                interface_name: "eth0".into(),
                ip_networks: vec![address],
                mac: None,
                netns: None,
                container_id: Some(container_id.to_string()),
                profiles: Vec::new(),
            },
        }
    }
}

impl WorkloadEndpoint {
    /// Calico's endpoint name: node, orchestrator, workload and endpoint joined by `-`,
    /// with each part's own dashes doubled (`node-a`, `k8s`, `web-1`, `eth0` →
    /// `node--a-k8s-web--1-eth0`).
    pub fn calico_name(node: &str, orchestrator: &str, workload: &str, endpoint: &str) -> String {
        [node, orchestrator, workload, endpoint]
            .iter()
            .map(|part| part.replace('-', "--"))
            .collect::<Vec<_>>()
            .join("-")
    }

    /// How the dataplane identifies this endpoint (its key is
    /// [`WorkloadEndpointId::key`](tapwire_proto::WorkloadEndpointId::key)).
    pub fn dataplane_id(&self) -> tapwire_proto::WorkloadEndpointId {
        tapwire_proto::WorkloadEndpointId {
            orchestrator_id: self.spec.orchestrator.clone(),
            workload_id: self.workload_id(),
            endpoint_id: self.spec.endpoint.clone(),
        }
    }

    /// The workload id Felix uses: `namespace/workload` when namespaced, else the workload.
    pub fn workload_id(&self) -> String {
        match &self.metadata.namespace {
            Some(ns) if !ns.is_empty() => format!("{ns}/{}", self.spec.workload),
            _ => self.spec.workload.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_endpoint_names() {
        assert_eq!(
            WorkloadEndpoint::calico_name("node-a", "k8s", "web-1", "eth0"),
            "node--a-k8s-web--1-eth0"
        );
    }
}
