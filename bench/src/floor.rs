//! The copy floor of a forwarder with TAPs at the pods, modelled from this machine's own
//! figures (../shared/REFERENCE.md §8 has the sources).
//!
//! A byte crossing a kernel path is copied twice: the sending application's write and the
//! receiving application's read. A tapwire path adds, on each node its forwarder runs on,
//! one *TAP hop*: a copy out of the kernel (the pod's TAP read, or the underlay receive)
//! and one back in (the underlay send, or the pod's TAP write), with their system calls.
//! However well the forwarder is built, it cannot cost less than
//!
//! > floor = the base kernel path's machine CPU s/Gbit + TAP hops × one TAP hop's cost
//!
//! with two hops across two nodes and one on a node (see [`PathKind::tap_hops`]), one
//! hop's cost measured here by [`crate::taphop`], and as base the path's kernel
//! counterpart — for IPIP the kernel with MTU-sized packets on the underlay (see
//! [`PathKind::floor_base`]). Measured over floor says how far a path is from what a TAP
//! forwarder can reach on this machine.
//!
//! The floor also bounds throughput: a forwarder at its floor that had every vCPU of the
//! machine to itself, senders and receivers included, moves at most vCPUs / floor Gbit/s.
//! Over the counterpart's measured rate, that is the highest ratio the path can show on
//! this machine ([`Floor::ceiling_gbps`]). Pure arithmetic.

use crate::paths::PathKind;

/// One tapwire path's modelled floor beside its measured cost, machine CPU s/Gbit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    pub path: PathKind,
    /// The kernel path the floor is built on ([`PathKind::floor_base`]).
    pub base: PathKind,
    /// The base path's measured machine CPU s/Gbit.
    pub base_s_per_gbit: f64,
    pub hops: u32,
    /// One TAP hop, machine CPU s/Gbit.
    pub hop_s_per_gbit: f64,
    /// `base_s_per_gbit + hops × hop_s_per_gbit`.
    pub floor_s_per_gbit: f64,
    /// The path's measured machine CPU s/Gbit.
    pub measured_s_per_gbit: f64,
}

impl Floor {
    /// The floor of tapwire path `path`, measured at `measured` machine CPU s/Gbit, whose
    /// base kernel path measured `base` and where one TAP hop costs `hop`; `None` for a
    /// kernel path.
    pub fn model(path: PathKind, measured: f64, base: f64, hop: f64) -> Option<Floor> {
        let base_kind = path.floor_base()?;
        let hops = path.tap_hops();
        Some(Floor {
            path,
            base: base_kind,
            base_s_per_gbit: base,
            hops,
            hop_s_per_gbit: hop,
            floor_s_per_gbit: base + f64::from(hops) * hop,
            measured_s_per_gbit: measured,
        })
    }

    /// The most a forwarder at this floor could move on a machine of `vcpus` vCPUs, all of
    /// them its own: vCPUs / floor, Gbit/s. `None` when the floor is not positive.
    pub fn ceiling_gbps(&self, vcpus: usize) -> Option<f64> {
        (self.floor_s_per_gbit > 0.0).then(|| vcpus as f64 / self.floor_s_per_gbit)
    }

    /// Measured / floor: 1 is the floor itself; `None` when the floor is not positive.
    pub fn ratio(&self) -> Option<f64> {
        (self.floor_s_per_gbit > 0.0 && self.measured_s_per_gbit.is_finite())
            .then(|| self.measured_s_per_gbit / self.floor_s_per_gbit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_machine_model_gives_its_floor() {
        // REFERENCE §8: veth path 0.063, one hop 0.036, unencapsulated measured 0.134.
        let floor = Floor::model(PathKind::TapwireNone, 0.134, 0.063, 0.036);
        let floor = floor.map(|f| (f.base, f.hops, f.floor_s_per_gbit, f.ratio()));
        let Some((counterpart, hops, floor_s, Some(ratio))) = floor else {
            panic!("{floor:?}")
        };
        assert_eq!((counterpart, hops), (PathKind::KernelRouted, 2));
        assert!((floor_s - 0.135).abs() < 1e-9, "{floor_s}");
        assert!((ratio - 0.134 / 0.135).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn same_node_paths_pay_one_hop_and_kernel_paths_have_no_floor() {
        let local = Floor::model(PathKind::TapwireLocal, 0.2, 0.08, 0.05);
        assert_eq!(
            local.map(|f| (f.base, f.hops)),
            Some((PathKind::KernelLocal, 1))
        );
        assert!(local.is_some_and(|f| (f.floor_s_per_gbit - 0.13).abs() < 1e-9));
        let vxlan = Floor::model(PathKind::TapwireVxlan, 0.3, 0.1, 0.05);
        assert_eq!(vxlan.map(|f| f.base), Some(PathKind::KernelVxlan));
        let ipip = Floor::model(PathKind::TapwireIpip, 0.5, 0.25, 0.05);
        assert_eq!(ipip.map(|f| f.base), Some(PathKind::KernelRoutedMtu));
        assert_eq!(Floor::model(PathKind::KernelRouted, 0.1, 0.1, 0.05), None);
        let zero = Floor::model(PathKind::TapwireNone, 0.1, 0.0, 0.0);
        assert_eq!(zero.and_then(|f| f.ratio()), None);
        assert_eq!(zero.and_then(|f| f.ceiling_gbps(2)), None);
    }

    #[test]
    fn the_ceiling_is_every_vcpu_spent_at_the_floor() {
        // 0.08 s of CPU per Gbit: two vCPUs move at most 25 Gbit/s.
        let floor = Floor::model(PathKind::TapwireNone, 0.136, 0.048, 0.016);
        let ceiling = floor.and_then(|f| f.ceiling_gbps(2));
        assert!(
            ceiling.is_some_and(|c| (c - 25.0).abs() < 1e-9),
            "{ceiling:?}"
        );
    }
}
