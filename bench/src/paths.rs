//! The paths the harness compares, by name, and which kernel path each tapwire path is
//! measured against (and, for the host path, which tapwire path too). Pure definitions:
//! the labs that realize them are in [`crate::labs`].

use tapwire_integration::Mode;

/// One way a packet can go from a pod (or a node) to a pod on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// tapwire across two nodes, unencapsulated (`ipipMode: Never`, `vxlanMode: Never`).
    TapwireNone,
    /// tapwire across two nodes, VXLAN (`vxlanMode: Always`).
    TapwireVxlan,
    /// tapwire across two nodes, IP-in-IP (`ipipMode: Always`).
    TapwireIpip,
    /// tapwire, node1's own namespace → a pod on node1, through the host path (`tapwire0`).
    TapwireHost,
    /// tapwire, a pod on node1 → another pod on node1 (never encapsulated).
    TapwireLocal,
    /// The kernel, Calico's Linux dataplane without encapsulation across two nodes: pod →
    /// veth → node1's routing → the underlay → node2's routing → veth → pod.
    KernelRouted,
    /// `KernelRouted` with every packet on the underlay MTU-sized (segmentation offload
    /// off on both nodes' `eth0`): what the kernel itself does when the underlay cannot
    /// carry a super-frame whole, as it cannot carry tapwire's IPIP. The base of IPIP's
    /// floor; no tapwire path is compared with it.
    KernelRoutedMtu,
    /// The kernel, Calico's Linux dataplane on one node: two veth pods routed by it.
    KernelLocal,
    /// The kernel, Calico's Linux dataplane with VXLAN: two nodes joined by `vxlan.calico`.
    KernelVxlan,
    /// The kernel, Calico's Linux dataplane: a node's own namespace → a veth pod on it
    /// (`/32 dev caliX scope link`, proxy ARP on the host veth).
    KernelHost,
}

impl PathKind {
    /// Every path, in the order each round measures them (tapwire and kernel alternate so
    /// that drift during a round hits both sides of a comparison alike). The host and
    /// local paths follow VXLAN, the pool mode they are measured in, so that they cost no
    /// pool switch.
    pub const ROUND_ORDER: [PathKind; 10] = [
        PathKind::TapwireNone,
        PathKind::KernelRouted,
        PathKind::TapwireVxlan,
        PathKind::KernelVxlan,
        PathKind::TapwireHost,
        PathKind::KernelHost,
        PathKind::TapwireLocal,
        PathKind::KernelLocal,
        PathKind::TapwireIpip,
        PathKind::KernelRoutedMtu,
    ];

    /// Every path in report order: tapwire first, then the kernel.
    pub const REPORT_ORDER: [PathKind; 10] = [
        PathKind::TapwireNone,
        PathKind::TapwireVxlan,
        PathKind::TapwireIpip,
        PathKind::TapwireHost,
        PathKind::TapwireLocal,
        PathKind::KernelRouted,
        PathKind::KernelVxlan,
        PathKind::KernelHost,
        PathKind::KernelLocal,
        PathKind::KernelRoutedMtu,
    ];

    /// The name in `results.json` and the tables.
    pub fn name(self) -> &'static str {
        match self {
            PathKind::TapwireNone => "tapwire-none",
            PathKind::TapwireVxlan => "tapwire-vxlan",
            PathKind::TapwireIpip => "tapwire-ipip",
            PathKind::TapwireHost => "tapwire-host",
            PathKind::TapwireLocal => "tapwire-local",
            PathKind::KernelRouted => "kernel-routed",
            PathKind::KernelRoutedMtu => "kernel-routed-mtu",
            PathKind::KernelLocal => "kernel-local",
            PathKind::KernelVxlan => "kernel-vxlan",
            PathKind::KernelHost => "kernel-host",
        }
    }

    /// The path called `name`.
    pub fn from_name(name: &str) -> Option<PathKind> {
        PathKind::REPORT_ORDER
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// The tapwire pool mode of a tapwire path; `None` for kernel paths. Traffic to a
    /// pod on the same node is never encapsulated, but the host and local paths are
    /// measured in VXLAN mode all the same: there the host path's pool route carries the
    /// pods' MTU ([`crate::labs::POD_MTU`]), which another mode would change.
    pub fn tapwire_mode(self) -> Option<Mode> {
        match self {
            PathKind::TapwireNone => Some(Mode::None),
            PathKind::TapwireVxlan | PathKind::TapwireHost | PathKind::TapwireLocal => {
                Some(Mode::Vxlan)
            }
            PathKind::TapwireIpip => Some(Mode::Ipip),
            PathKind::KernelRouted
            | PathKind::KernelRoutedMtu
            | PathKind::KernelVxlan
            | PathKind::KernelHost
            | PathKind::KernelLocal => None,
        }
    }

    /// The kernel path a tapwire path is compared with. The two-node paths have two-node
    /// counterparts: unencapsulated with `kernel-routed`, VXLAN and IPIP with
    /// `kernel-vxlan` (this kernel has no IPIP, no `ipip` device type, so there is no
    /// kernel IPIP path to measure). The same-node paths have same-node counterparts:
    /// `tapwire-local` with `kernel-local`, `tapwire-host` with `kernel-host`.
    pub fn counterpart(self) -> Option<PathKind> {
        match self {
            PathKind::TapwireNone => Some(PathKind::KernelRouted),
            PathKind::TapwireVxlan | PathKind::TapwireIpip => Some(PathKind::KernelVxlan),
            PathKind::TapwireHost => Some(PathKind::KernelHost),
            PathKind::TapwireLocal => Some(PathKind::KernelLocal),
            PathKind::KernelRouted
            | PathKind::KernelRoutedMtu
            | PathKind::KernelVxlan
            | PathKind::KernelHost
            | PathKind::KernelLocal => None,
        }
    }

    /// The kernel path a tapwire path's floor is built on (see [`crate::floor`]): its
    /// counterpart, except for IPIP. The kernel VXLAN path carries a super-frame whole
    /// from node to node, which IPIP cannot here (no virtio-net GSO type describes IPIP:
    /// the forwarder must hand the underlay MTU-sized packets, and a veth handed them one
    /// send at a time coalesces none), so IPIP's floor is built on the kernel's own cost
    /// with MTU-sized packets on the underlay, `kernel-routed-mtu`.
    pub fn floor_base(self) -> Option<PathKind> {
        match self {
            PathKind::TapwireIpip => Some(PathKind::KernelRoutedMtu),
            other => other.counterpart(),
        }
    }

    /// How many times a byte on this tapwire path crosses a TAP into the forwarder and
    /// out again beyond what its kernel counterpart does (see [`crate::floor`]): once per
    /// node the forwarder runs on. Across two nodes: twice (node1 reads the pod's TAP and
    /// sends on the underlay, node2 receives and writes the pod's TAP); on one node:
    /// once. Kernel paths: none.
    pub fn tap_hops(self) -> u32 {
        match self {
            PathKind::TapwireNone | PathKind::TapwireVxlan | PathKind::TapwireIpip => 2,
            PathKind::TapwireHost | PathKind::TapwireLocal => 1,
            PathKind::KernelRouted
            | PathKind::KernelRoutedMtu
            | PathKind::KernelVxlan
            | PathKind::KernelHost
            | PathKind::KernelLocal => 0,
        }
    }

    /// The tapwire path a tapwire path is also compared with: the host path (node → its
    /// pod) with pod → pod on the same node, which it should not be slower than (issue 11).
    pub fn tapwire_peer(self) -> Option<PathKind> {
        match self {
            PathKind::TapwireHost => Some(PathKind::TapwireLocal),
            _ => None,
        }
    }

    /// One line saying what the path is, for the report.
    pub fn description(self) -> &'static str {
        match self {
            PathKind::TapwireNone => {
                "tapwire, pod on node1 → pod on node2, unencapsulated (ipipMode/vxlanMode Never)"
            }
            PathKind::TapwireVxlan => {
                "tapwire, pod on node1 → pod on node2, VXLAN (vxlanMode: Always)"
            }
            PathKind::TapwireIpip => {
                "tapwire, pod on node1 → pod on node2, IP-in-IP (ipipMode: Always)"
            }
            PathKind::KernelRoutedMtu => {
                "kernel, as kernel-routed with segmentation offload off on both nodes' eth0 (ethtool -K eth0 tso off gso off): every packet crosses the underlay MTU-sized, as tapwire's IPIP must here; the base of IPIP's floor, compared with no tapwire path"
            }
            PathKind::KernelRouted => {
                "kernel, pod on node1 → veth → node1's routes → underlay → node2's routes → veth → pod on node2, unencapsulated (Calico's Linux dataplane: /32 dev caliX scope link, proxy ARP, the peer's block via its underlay address)"
            }
            PathKind::KernelLocal => {
                "kernel, pod on node1 → veth → node1's routes → veth → pod on node1 (Calico's Linux dataplane, one node)"
            }
            PathKind::KernelVxlan => {
                "kernel, pod on node1 → pod on node2 over vxlan.calico (Calico's Linux dataplane, VXLAN)"
            }
            PathKind::TapwireHost => {
                "tapwire, node1's own namespace → pod on node1 through the host path tapwire0 (pool in VXLAN mode; not encapsulated)"
            }
            PathKind::TapwireLocal => {
                "tapwire, pod on node1 → pod on node1 (pool in VXLAN mode; not encapsulated)"
            }
            PathKind::KernelHost => {
                "kernel, a node's own namespace → veth pod on it (/32 dev caliX scope link, proxy ARP; Calico's Linux dataplane)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tapwire_path_has_a_kernel_counterpart() {
        for path in PathKind::REPORT_ORDER {
            assert_eq!(PathKind::from_name(path.name()), Some(path));
            assert_eq!(path.tapwire_mode().is_some(), path.counterpart().is_some());
            assert_eq!(path.tapwire_mode().is_some(), path.tap_hops() > 0);
        }
        assert_eq!(
            PathKind::TapwireIpip.counterpart(),
            Some(PathKind::KernelVxlan)
        );
        assert_eq!(
            PathKind::TapwireIpip.floor_base(),
            Some(PathKind::KernelRoutedMtu)
        );
        assert_eq!(
            PathKind::TapwireVxlan.floor_base(),
            Some(PathKind::KernelVxlan)
        );
        assert_eq!(PathKind::KernelRoutedMtu.floor_base(), None);
        assert_eq!(PathKind::ROUND_ORDER.len(), PathKind::REPORT_ORDER.len());
        for path in PathKind::ROUND_ORDER {
            assert!(PathKind::REPORT_ORDER.contains(&path), "{path:?}");
        }
    }

    #[test]
    fn paths_are_compared_across_as_many_nodes() {
        assert_eq!(
            PathKind::TapwireNone.counterpart(),
            Some(PathKind::KernelRouted)
        );
        assert_eq!(
            PathKind::TapwireHost.counterpart(),
            Some(PathKind::KernelHost)
        );
        assert_eq!(
            PathKind::TapwireLocal.counterpart(),
            Some(PathKind::KernelLocal)
        );
        assert_eq!(
            PathKind::TapwireHost.tapwire_peer(),
            Some(PathKind::TapwireLocal)
        );
        assert_eq!(PathKind::TapwireLocal.tapwire_peer(), None);
    }

    #[test]
    fn a_round_switches_the_pool_no_more_than_before() {
        // Count the mode changes along a round, starting from the VXLAN pool the cluster
        // is created with: the same-node paths must ride on VXLAN's switch.
        let mut mode = Mode::Vxlan;
        let mut switches = 0;
        for path in PathKind::ROUND_ORDER {
            if let Some(m) = path.tapwire_mode() {
                if m != mode {
                    switches += 1;
                    mode = m;
                }
            }
        }
        assert_eq!(switches, 3);
    }
}
