//! Assertions the end-to-end tests share, phrased the way a user checks a cluster: pings
//! answered without loss, a verified TCP transfer of the full size, what a capture on
//! the underlay shows during one ping, and that the control plane kept nothing of a pod
//! whose ADD failed.
//!
//! Unlike the rest of the lab, which returns [`crate::LabError`]s, these panic: they are
//! for tests only. Each message carries what was seen (ping's output, the captured
//! packets), and `#[track_caller]` points the failure at the test line that asked.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::capture;
use crate::controlplane::{ControlPlane, Sandbox};
use crate::lab::{Lab, Node, Pod};
use crate::netns::Netns;
use crate::traffic::{ping, tcp_transfer, wait_reachable, PingStats, Transfer, TransferReport};

/// How long a pod may take to reach another the first time (ARP, neighbour resolution,
/// routes arriving from the control plane).
pub const REACHABLE_WITHIN: Duration = Duration::from_secs(15);
/// How long [`Captured::of_one_ping`] waits for the request and the reply.
pub const CAPTURE_WITHIN: Duration = Duration::from_secs(5);
/// What tcpdump prints for a VXLAN packet with tapwire's (and Calico's) VNI.
pub const VXLAN_VNI_4096: &str = "VXLAN, flags [I] (0x08), vni 4096";
/// What tcpdump prints for an IPIP outer header.
pub const IPIP: &str = "proto IPIP (4)";

/// Pings `to` from `from` `count` times and asserts that every echo was answered.
#[track_caller]
pub fn assert_pings(from: &Pod, to: &Pod, count: u32) -> PingStats {
    let stats = match ping(from, to.ip, count) {
        Ok(stats) => stats,
        Err(err) => panic!("ping {} -> {}: {err}", from.name, to.name),
    };
    assert_eq!(
        stats.loss_percent, 0.0,
        "{} -> {}:\n{}",
        from.name, to.name, stats.output
    );
    stats
}

/// For every `(from, to)` of `pairs`, in order: waits until `to` answers `from` (within
/// [`REACHABLE_WITHIN`]), then asserts `count` pings without loss.
#[track_caller]
pub fn assert_pings_once_reachable(pairs: &[(&Pod, &Pod)], count: u32) {
    for (from, to) in pairs {
        if let Err(err) = wait_reachable(from, to.ip, REACHABLE_WITHIN) {
            panic!("{} -> {}: {err}", from.name, to.name);
        }
        assert_pings(from, to, count);
    }
}

/// Sends `bytes` verified bytes from `from` to `to` over TCP to port `port`, asserts
/// that all of them arrived, and logs the goodput.
#[track_caller]
pub fn assert_transfer(from: &Pod, to: &Pod, port: u16, bytes: u64) -> TransferReport {
    let spec = Transfer {
        port,
        ..Transfer::bytes(bytes)
    };
    let report = match tcp_transfer(from, to, &spec) {
        Ok(report) => report,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(report.bytes, bytes);
    eprintln!("{} -> {}: {report}", from.name, to.name);
    report
}

/// tcpdump's line for an echo request `from` → `to` (`10.65.1.2 > 10.65.2.2: ICMP echo
/// request`).
pub fn echo_request(from: Ipv4Addr, to: Ipv4Addr) -> String {
    format!("{from} > {to}: ICMP echo request")
}

/// tcpdump's line for an echo reply `from` → `to`.
pub fn echo_reply(from: Ipv4Addr, to: Ipv4Addr) -> String {
    format!("{from} > {to}: ICMP echo reply")
}

/// The packets a capture on the underlay saw (one text per packet, see
/// [`capture::group_packets`]), with assertions on them that print them all on failure.
#[derive(Debug, Clone)]
pub struct Captured {
    pub packets: Vec<String>,
}

impl Captured {
    /// Captures `filter` on `node`'s `eth0` during one ping `from` → `to` and asserts
    /// that two packets (the request and the reply) appeared within [`CAPTURE_WITHIN`].
    #[track_caller]
    pub fn of_one_ping(node: &Node, filter: &str, from: &Pod, to: &Pod) -> Captured {
        Captured::of_one_ping_within(node, filter, from, to, CAPTURE_WITHIN)
    }

    /// [`Captured::of_one_ping`], waiting up to `within` for the two packets.
    #[track_caller]
    pub fn of_one_ping_within(
        node: &Node,
        filter: &str,
        from: &Pod,
        to: &Pod,
        within: Duration,
    ) -> Captured {
        let where_ = format!("{}'s eth0", node.name);
        Captured::two_packets(&where_, node.netns(), "eth0", filter, from, to, within)
    }

    /// [`Captured::of_one_ping`] on `interface` of the lab's router (its underlay
    /// namespace: `br<subnet>`) instead of a node's `eth0`.
    #[track_caller]
    pub fn of_one_ping_on_router(
        lab: &Lab,
        interface: &str,
        filter: &str,
        from: &Pod,
        to: &Pod,
    ) -> Captured {
        let where_ = format!("the router's {interface}");
        let netns = lab.underlay();
        Captured::two_packets(&where_, netns, interface, filter, from, to, CAPTURE_WITHIN)
    }

    #[track_caller]
    fn two_packets(
        where_: &str,
        netns: &Netns,
        interface: &str,
        filter: &str,
        from: &Pod,
        to: &Pod,
        within: Duration,
    ) -> Captured {
        let packets = match capture::during_one_ping_on(netns, interface, filter, from, to, within)
        {
            Ok(packets) => packets,
            Err(err) => panic!("capturing '{filter}' on {where_}: {err}"),
        };
        let captured = Captured { packets };
        assert_eq!(captured.packets.len(), 2, "{}", captured.shown());
        captured
    }

    /// Every packet, one after the other.
    pub fn shown(&self) -> String {
        self.packets.join("\n")
    }

    /// Asserts that every packet contains `needle`.
    #[track_caller]
    pub fn assert_every(&self, needle: &str) -> &Captured {
        assert!(
            self.packets.iter().all(|p| p.contains(needle)),
            "{}",
            self.shown()
        );
        self
    }

    /// Asserts that no packet contains `needle`.
    #[track_caller]
    pub fn assert_none(&self, needle: &str) -> &Captured {
        assert!(
            self.packets.iter().all(|p| !p.contains(needle)),
            "{}",
            self.shown()
        );
        self
    }

    /// Asserts that some packet contains `needle`.
    #[track_caller]
    pub fn assert_shows(&self, needle: &str) -> &Captured {
        let shown = self.shown();
        assert!(shown.contains(needle), "{shown}");
        self
    }

    /// Asserts that the capture holds the echo request `from` → `to` and its reply.
    #[track_caller]
    pub fn assert_echo(&self, from: &Pod, to: &Pod) -> &Captured {
        self.assert_shows(&echo_request(from.ip, to.ip))
            .assert_shows(&echo_reply(to.ip, from.ip))
    }
}

/// Asserts that the control plane holds nothing for container `container`: no IPAM
/// handle and no workload endpoint.
#[track_caller]
pub fn assert_nothing_recorded(cp: &ControlPlane<'_>, container: &str) {
    let handles = match cp.ipam_handles() {
        Ok(handles) => handles,
        Err(err) => panic!("{err}"),
    };
    assert!(
        handles.iter().all(|h| !h.contains(container)),
        "an IPAM handle of {container} is left: {handles:?}"
    );
    let endpoints = match cp.workload_endpoints() {
        Ok(endpoints) => endpoints,
        Err(err) => panic!("{err}"),
    };
    assert!(
        endpoints
            .iter()
            .all(|e| e.spec.container_id.as_deref() != Some(container)),
        "a workload endpoint of {container} is left: {endpoints:?}"
    );
}

/// Asserts that a pod whose ADD failed left nothing behind: no interface besides `lo` in
/// its namespace, and nothing recorded for its container (see
/// [`assert_nothing_recorded`]).
#[track_caller]
pub fn assert_failed_add_left_nothing(cp: &ControlPlane<'_>, sandbox: &Sandbox) {
    let left = match sandbox.netns.interfaces_besides_lo() {
        Ok(left) => left,
        Err(err) => panic!("{err}"),
    };
    assert!(
        left.is_empty(),
        "the failed ADD left {left:?} in {}",
        sandbox.name
    );
    assert_nothing_recorded(cp, &sandbox.args.container_id);
}
