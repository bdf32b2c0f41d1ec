//! The paths the harness compares, by name, and which kernel path each tapwire path is
//! measured against. Pure definitions: the labs that realize them are in [`crate::labs`].

use tapwire_integration::Mode;

/// One way a packet can go from a pod to a pod on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// tapwire across two nodes, unencapsulated (`ipipMode: Never`, `vxlanMode: Never`).
    TapwireNone,
    /// tapwire across two nodes, VXLAN (`vxlanMode: Always`).
    TapwireVxlan,
    /// tapwire across two nodes, IP-in-IP (`ipipMode: Always`).
    TapwireIpip,
    /// The kernel, Calico's Linux dataplane without encapsulation: two veth pods routed by
    /// one node.
    KernelRouted,
    /// The kernel, Calico's Linux dataplane with VXLAN: two nodes joined by `vxlan.calico`.
    KernelVxlan,
}

impl PathKind {
    /// Every path, in the order each round measures them (tapwire and kernel alternate so
    /// that drift during a round hits both sides of a comparison alike).
    pub const ROUND_ORDER: [PathKind; 5] = [
        PathKind::TapwireNone,
        PathKind::KernelRouted,
        PathKind::TapwireVxlan,
        PathKind::KernelVxlan,
        PathKind::TapwireIpip,
    ];

    /// Every path in report order: tapwire first, then the kernel.
    pub const REPORT_ORDER: [PathKind; 5] = [
        PathKind::TapwireNone,
        PathKind::TapwireVxlan,
        PathKind::TapwireIpip,
        PathKind::KernelRouted,
        PathKind::KernelVxlan,
    ];

    /// The name in `results.json` and the tables.
    pub fn name(self) -> &'static str {
        match self {
            PathKind::TapwireNone => "tapwire-none",
            PathKind::TapwireVxlan => "tapwire-vxlan",
            PathKind::TapwireIpip => "tapwire-ipip",
            PathKind::KernelRouted => "kernel-routed",
            PathKind::KernelVxlan => "kernel-vxlan",
        }
    }

    /// The path called `name`.
    pub fn from_name(name: &str) -> Option<PathKind> {
        PathKind::REPORT_ORDER
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// The tapwire pool mode of a tapwire path; `None` for kernel paths.
    pub fn tapwire_mode(self) -> Option<Mode> {
        match self {
            PathKind::TapwireNone => Some(Mode::None),
            PathKind::TapwireVxlan => Some(Mode::Vxlan),
            PathKind::TapwireIpip => Some(Mode::Ipip),
            PathKind::KernelRouted | PathKind::KernelVxlan => None,
        }
    }

    /// The kernel path a tapwire path is compared with. IPIP is compared with kernel
    /// VXLAN: this kernel has no IPIP (no `ipip` device type), so there is no kernel IPIP
    /// path to measure.
    pub fn counterpart(self) -> Option<PathKind> {
        match self {
            PathKind::TapwireNone => Some(PathKind::KernelRouted),
            PathKind::TapwireVxlan | PathKind::TapwireIpip => Some(PathKind::KernelVxlan),
            PathKind::KernelRouted | PathKind::KernelVxlan => None,
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
            PathKind::KernelRouted => {
                "kernel, two veth pods on one node, routed (Calico's Linux dataplane, no encapsulation)"
            }
            PathKind::KernelVxlan => {
                "kernel, pod on node1 → pod on node2 over vxlan.calico (Calico's Linux dataplane, VXLAN)"
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
        }
        assert_eq!(
            PathKind::TapwireIpip.counterpart(),
            Some(PathKind::KernelVxlan)
        );
        assert_eq!(PathKind::ROUND_ORDER.len(), PathKind::REPORT_ORDER.len());
    }
}
