//! A running tapwire cluster in a lab: nodes, pods, one dataplane per node, and the
//! control plane's job of pushing the [`desired`](crate::desired) state to each dataplane
//! and waiting until it is applied (in sync, every local endpoint "up").
//!
//! [`Cluster::start`] builds the standard shape the tests use: two nodes (`node1`,
//! `node2`) with two pods each (`pod-a`, `pod-b` on node1; `pod-c`, `pod-d` on node2).

use std::net::Ipv4Addr;
use std::time::Duration;

use tapwire_control::podnet::pod_mtu;

use crate::control::Counters;
use crate::desired::{self, Mode};
use crate::error::{LabError, Result};
use crate::lab::{Dataplane, Lab, Node, Pod, CONTROL_TIMEOUT, UNDERLAY_MTU};

/// What cluster to build.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub mode: Mode,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub workers: usize,
    /// The pods' MTU; `None` means `pod_mtu(UNDERLAY_MTU, mode)`.
    pub pod_mtu_bytes: Option<u32>,
}

impl ClusterSpec {
    /// Two nodes with two pods each, two workers per dataplane.
    pub fn two_by_two(mode: Mode) -> ClusterSpec {
        ClusterSpec {
            mode,
            nodes: 2,
            pods_per_node: 2,
            workers: 2,
            pod_mtu_bytes: None,
        }
    }
}

/// Nodes, pods and dataplanes of one tapwire cluster.
#[derive(Debug)]
pub struct Cluster {
    pub mode: Mode,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub dataplanes: Vec<Dataplane>,
}

/// `pod-a`, `pod-b`, … in creation order across nodes.
fn pod_name(n: usize) -> String {
    let letter = char::from(b'a' + (n % 26) as u8);
    if n < 26 {
        format!("pod-{letter}")
    } else {
        format!("pod-{letter}{}", n / 26)
    }
}

impl Cluster {
    /// The standard 2 × 2 cluster in `mode`, synced and ready.
    pub fn start(lab: &Lab, mode: Mode) -> Result<Cluster> {
        Cluster::start_with(lab, &ClusterSpec::two_by_two(mode))
    }

    /// Builds nodes, pods and dataplanes as `spec` says, pushes the snapshot to every
    /// dataplane and waits until each is in sync with its endpoints up.
    pub fn start_with(lab: &Lab, spec: &ClusterSpec) -> Result<Cluster> {
        let mtu = spec
            .pod_mtu_bytes
            .unwrap_or_else(|| pod_mtu(UNDERLAY_MTU, spec.mode.encap()));
        let mut nodes = Vec::with_capacity(spec.nodes);
        let mut pods = Vec::new();
        for i in 0..spec.nodes {
            let node = lab.add_node(&format!("node{}", i + 1))?;
            for j in 0..spec.pods_per_node {
                let host = u8::try_from(j + 2)
                    .ok()
                    .filter(|h| *h < 64)
                    .ok_or_else(|| LabError::Invalid("at most 62 pods per /26 block".into()))?;
                let pod = lab.add_pod(&node, &pod_name(pods.len()), node.pod_ip(host), mtu)?;
                pods.push(pod);
            }
            nodes.push(node);
        }
        let dataplanes = nodes
            .iter()
            .map(|node| lab.start_dataplane(node, spec.workers))
            .collect::<Result<Vec<_>>>()?;
        let mut cluster = Cluster {
            mode: spec.mode,
            nodes,
            pods,
            dataplanes,
        };
        cluster.sync()?;
        Ok(cluster)
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LabError::Invalid(format!("no pod {name} in the cluster")))
    }

    /// Copies of pods `from` and `to` (so the cluster stays free for `&mut` calls), once
    /// `to` answers `from`'s pings (within `timeout`; the first packets may go to ARP).
    pub fn reachable_pair(&self, from: &str, to: &str, timeout: Duration) -> Result<(Pod, Pod)> {
        let (from, to) = (self.pod(from)?.clone(), self.pod(to)?.clone());
        crate::traffic::wait_reachable(&from, to.ip, timeout)?;
        Ok((from, to))
    }

    /// The pods of node `node`.
    pub fn pods_on(&self, node: &str) -> Vec<&Pod> {
        self.pods.iter().filter(|p| p.node == node).collect()
    }

    /// The dataplane of node `node`.
    pub fn dataplane(&mut self, node: &str) -> Result<&mut Dataplane> {
        self.dataplanes
            .iter_mut()
            .find(|d| d.node().name == node)
            .ok_or_else(|| LabError::Invalid(format!("no dataplane on node {node}")))
    }

    /// Sends the full snapshot to every dataplane over its current connection and waits
    /// until each is in sync with its local endpoints up.
    pub fn sync(&mut self) -> Result<()> {
        for i in 0..self.dataplanes.len() {
            self.sync_node(i)?;
        }
        Ok(())
    }

    /// Sends the snapshot to dataplane `i` and waits for it to apply.
    pub fn sync_node(&mut self, i: usize) -> Result<()> {
        let dataplane = self
            .dataplanes
            .get_mut(i)
            .ok_or_else(|| LabError::Invalid(format!("no dataplane {i}")))?;
        push_snapshot(dataplane, &self.nodes, &self.pods, self.mode)
    }

    /// Switches every dataplane to `mode` with incremental updates (pool and routes),
    /// then waits until each has processed them (a counters round trip).
    pub fn switch_mode(&mut self, mode: Mode) -> Result<()> {
        for dataplane in &mut self.dataplanes {
            let own = dataplane.node().clone();
            dataplane.check_running()?;
            let control = dataplane.control()?;
            control.send_all(desired::switch_mode(&own, &self.nodes, mode))?;
        }
        // Messages on one connection are applied in order: a counters reply proves the
        // switch has been applied (and published) before it.
        for dataplane in &mut self.dataplanes {
            dataplane.counters()?;
        }
        self.mode = mode;
        Ok(())
    }

    /// Counters of every dataplane, by node name order.
    pub fn counters(&mut self) -> Result<Vec<Counters>> {
        self.dataplanes
            .iter_mut()
            .map(Dataplane::counters)
            .collect()
    }

    /// Fails if any dataplane has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.dataplanes
            .iter_mut()
            .try_for_each(Dataplane::check_running)
    }

    /// Waits until `from` gets an answer from `to` (neighbour resolution, first ARP).
    pub fn wait_reachable(&self, from: &str, to: Ipv4Addr, timeout: Duration) -> Result<()> {
        crate::traffic::wait_reachable(self.pod(from)?, to, timeout)
    }
}

/// Sends `dataplane` the full snapshot for its node (config, every node, the pool in
/// `mode`, routes, the endpoints of its own pods among `pods`, `InSync`) over its current
/// connection, and waits until it is in sync with those endpoints up.
pub fn push_snapshot(
    dataplane: &mut Dataplane,
    nodes: &[Node],
    pods: &[Pod],
    mode: Mode,
) -> Result<()> {
    let own = dataplane.node().clone();
    let messages = desired::snapshot(&own, nodes, pods, mode);
    dataplane.check_running()?;
    let control = dataplane.control()?;
    control.send_all(messages)?;
    control.wait_in_sync(CONTROL_TIMEOUT)?;
    for pod in pods.iter().filter(|p| p.node == own.name) {
        control.wait_endpoint_status(&desired::endpoint_key(pod), "up", CONTROL_TIMEOUT)?;
    }
    Ok(())
}
