//! The node's kernel side of the host path: what control programs so that the node and
//! the pods reach each other through the dataplane's host path TAP (`tapwire0`), and
//! natOutgoing.
//!
//! - **Routes**: one per IP pool, `<pool> via 169.254.1.1 dev tapwire0 onlink src <node
//!   address> mtu <pod MTU>` (rtnetlink), replaced when pools change; routes through
//!   the TAP that no pool asks for any more are deleted. The node's kernel thus sends
//!   everything for pods into the dataplane, which delivers it like any other traffic.
//! - **Sysctl**: `net.ipv4.ip_forward = 1` — pods' traffic to the world is routed by the
//!   kernel (the dataplane sets the TAP's own: IPv6 off, loose reverse-path filter).
//! - **nftables**: one table, `ip tapwire`, replaced whole (`nft -f -`, atomically) on
//!   every change: the masquerade rule Calico's Linux dataplane uses (source in a
//!   natOutgoing pool, destination in no pool → masquerade to the outgoing interface's
//!   address), and a forward rule that keeps the kernel from handing the dataplane a
//!   second copy of what the dataplane already took from the underlay itself
//!   (unencapsulated traffic from the other nodes' pods and kernels).
//!
//! [`HostPathPlan`] and [`nft_ruleset`] are pure (what the node should have); [`HostPath`]
//! makes the kernel match them, again whenever the plan changes, the TAP is re-created,
//! or [`REFRESH`] has passed (someone flushed the ruleset).

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tapwire_proto::POD_GATEWAY;
use tapwire_sys::link;
use tapwire_sys::netlink::{Netlink, RouteScope, RouteSpec};

use crate::routes::{DesiredDataplane, RouteKind};

/// How often the kernel's state is programmed again even when nothing changed.
pub const REFRESH: Duration = Duration::from_secs(10);
/// The nftables table control owns (family `ip`).
pub const NFT_TABLE: &str = "tapwire";

/// What the node's kernel needs for the host path, from the desired dataplane state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPathPlan {
    /// Every IP pool: routed into the host path TAP; destinations that are never NATed.
    pub pools: BTreeSet<Ipv4Net>,
    /// Pools with natOutgoing: their pods' traffic to outside every pool is masqueraded.
    pub masquerade: BTreeSet<Ipv4Net>,
    /// Sources the dataplane takes from the underlay itself (unencapsulated): the other
    /// nodes' blocks and addresses.
    pub peer_sources: BTreeSet<Ipv4Net>,
    /// MTU of the pool routes: the pods' MTU (the TAP's is the underlay's).
    pub pod_mtu_bytes: u32,
}

impl HostPathPlan {
    pub fn of(desired: &DesiredDataplane) -> HostPathPlan {
        let pools = desired.pools.values().map(|p| p.cidr).collect();
        let masquerade = desired
            .pools
            .values()
            .filter(|p| p.masquerade)
            .map(|p| p.cidr)
            .collect();
        let blocks = desired
            .routes
            .iter()
            .filter(|(_, r)| r.kind == RouteKind::RemoteBlock)
            .map(|(cidr, _)| *cidr);
        let hosts = desired
            .hosts
            .iter()
            .filter(|(name, _)| **name != desired.hostname)
            .map(|(_, h)| Ipv4Net::from(h.ipv4_addr));
        HostPathPlan {
            pools,
            masquerade,
            peer_sources: blocks.chain(hosts).collect(),
            pod_mtu_bytes: desired.pod_mtu_bytes,
        }
    }
}

/// The whole `ip tapwire` table for `plan`, as `nft -f` reads it: created if missing,
/// deleted and written anew in one transaction, so applying it twice changes nothing.
pub fn nft_ruleset(plan: &HostPathPlan, host_interface: &str, underlay_interface: &str) -> String {
    let set = |name: &str, members: &BTreeSet<Ipv4Net>| {
        let mut out =
            format!("\tset {name} {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n");
        if !members.is_empty() {
            let list: Vec<String> = members.iter().map(|m| m.trunc().to_string()).collect();
            out.push_str(&format!("\t\telements = {{ {} }}\n", list.join(", ")));
        }
        out.push_str("\t}\n");
        out
    };
    let mut out = format!("table ip {NFT_TABLE} {{}}\ndelete table ip {NFT_TABLE}\n");
    out.push_str(&format!("table ip {NFT_TABLE} {{\n"));
    out.push_str(&set("pools", &plan.pools));
    out.push_str(&set("masquerade_pools", &plan.masquerade));
    out.push_str(&set("peer_sources", &plan.peer_sources));
    out.push_str(
        "\tchain nat_outgoing {\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr @masquerade_pools ip daddr != @pools masquerade\n\
         \t}\n",
    );
    out.push_str(&format!(
        "\tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{underlay_interface}\" oifname \"{host_interface}\" ip saddr @peer_sources drop\n\
         \t}}\n"
    ));
    out.push_str("}\n");
    out
}

/// Keeps the node's kernel programmed for the host path.
#[derive(Debug)]
pub struct HostPath {
    host_interface: String,
    underlay_interface: String,
    node_address: Ipv4Addr,
    /// What was last programmed completely, and into which TAP (its ifindex).
    applied: Option<(HostPathPlan, u32)>,
    last_programmed: Option<Instant>,
    /// The last failure logged, so a lasting one is logged once.
    last_error: Option<String>,
}

impl HostPath {
    pub fn new(host_interface: &str, underlay_interface: &str, node_address: Ipv4Addr) -> Self {
        HostPath {
            host_interface: host_interface.to_string(),
            underlay_interface: underlay_interface.to_string(),
            node_address,
            applied: None,
            last_programmed: None,
            last_error: None,
        }
    }

    /// Programs the kernel for `desired` if anything changed (the plan, the TAP) or
    /// [`REFRESH`] has passed. Failures are logged (once while they last) and retried on
    /// the next call.
    pub fn reconcile(&mut self, desired: &DesiredDataplane) {
        let plan = HostPathPlan::of(desired);
        // The dataplane creates the TAP: until it has, there is nothing to route through.
        let ifindex = match link::ifindex(&self.host_interface) {
            Ok(ifindex) => ifindex,
            Err(err) => {
                self.failed(format!(
                    "host path interface {} not there yet (is tapwire-dataplane running?): {err}",
                    self.host_interface
                ));
                return;
            }
        };
        let fresh = self.last_programmed.is_some_and(|t| t.elapsed() < REFRESH);
        if fresh && self.applied.as_ref() == Some(&(plan.clone(), ifindex)) {
            return;
        }
        self.last_programmed = Some(Instant::now());
        match self.program(&plan, ifindex) {
            Ok(()) => {
                if self.applied.as_ref().map(|(p, _)| p) != Some(&plan) {
                    tracing::info!(
                        pools = plan.pools.len(),
                        masquerade = plan.masquerade.len(),
                        interface = %self.host_interface,
                        "host path programmed"
                    );
                }
                self.applied = Some((plan, ifindex));
                self.last_error = None;
            }
            Err(err) => {
                self.applied = None;
                self.failed(err);
            }
        }
    }

    fn failed(&mut self, err: String) {
        if self.last_error.as_ref() != Some(&err) {
            tracing::warn!(%err, "programming the host path failed; retrying");
            self.last_error = Some(err);
        }
    }

    fn program(&self, plan: &HostPathPlan, ifindex: u32) -> Result<(), String> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| format!("enabling IPv4 forwarding: {e}"))?;
        let mut netlink = Netlink::open().map_err(|e| format!("rtnetlink: {e}"))?;
        for pool in &plan.pools {
            let route = RouteSpec {
                dst: pool.network(),
                prefix_len: pool.prefix_len(),
                gateway: Some(POD_GATEWAY),
                oif: ifindex,
                scope: RouteScope::Universe,
                onlink: true,
                prefsrc: Some(self.node_address),
                mtu_bytes: Some(plan.pod_mtu_bytes).filter(|m| *m > 0),
            };
            netlink.add_ipv4_route(&route).map_err(|e| {
                format!(
                    "route {pool} via {POD_GATEWAY} dev {} onlink: {e}",
                    self.host_interface
                )
            })?;
        }
        let table = std::fs::read_to_string("/proc/net/route")
            .map_err(|e| format!("reading /proc/net/route: {e}"))?;
        for stale in routes_through(&table, &self.host_interface)
            .into_iter()
            .filter(|r| !plan.pools.contains(r))
        {
            match netlink.del_ipv4_route(stale.network(), stale.prefix_len(), ifindex) {
                Ok(()) => {
                    tracing::info!(route = %stale, "removed the route of a pool that is gone")
                }
                Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
                Err(err) => return Err(format!("deleting route {stale}: {err}")),
            }
        }
        apply_nft(&nft_ruleset(
            plan,
            &self.host_interface,
            &self.underlay_interface,
        ))
    }
}

/// Runs `nft -f -` with `ruleset` on its standard input.
fn apply_nft(ruleset: &str) -> Result<(), String> {
    let run = || -> io::Result<std::process::Output> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(ruleset.as_bytes())?;
        }
        child.wait_with_output()
    };
    match run() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "nft -f - ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Err("nft not found: natOutgoing needs the nftables package (nft in PATH)".to_string())
        }
        Err(err) => Err(format!("running nft: {err}")),
    }
}

/// The destinations of main-table IPv4 routes through `interface`, from the text of
/// `/proc/net/route` (`Iface Destination Gateway Flags RefCnt Use Metric Mask …`, the
/// addresses as little-endian hex). Lines that do not parse are skipped.
pub fn routes_through(table: &str, interface: &str) -> Vec<Ipv4Net> {
    // The kernel prints each address's in-memory (network-order) word as a host integer:
    // its native-endian bytes are the address's bytes.
    let bytes = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first() != Some(&interface) {
                return None;
            }
            let dst = bytes(fields.get(1)?)?;
            let mask = bytes(fields.get(7)?)?;
            let len = u8::try_from(u32::from_be_bytes(mask).leading_ones()).ok()?;
            Ipv4Net::new(Ipv4Addr::from(dst), len).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EncapMode;
    use crate::routes::{HostEntry, PoolEntry, PoolType, RouteEntry};
    use tapwire_proto::Encap;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn desired() -> DesiredDataplane {
        let mut d = DesiredDataplane {
            hostname: "node-a".into(),
            pod_mtu_bytes: 1480,
            ..DesiredDataplane::default()
        };
        for (cidr, masquerade) in [("10.65.0.0/16", true), ("10.66.0.0/16", false)] {
            d.pools.insert(
                cidr.into(),
                PoolEntry {
                    cidr: net(cidr),
                    masquerade,
                    ipip_mode: EncapMode::Always,
                    vxlan_mode: EncapMode::Never,
                    allowed_uses: vec![],
                },
            );
        }
        for (name, ip) in [("node-a", "192.168.0.1"), ("node-b", "192.168.0.2")] {
            d.hosts.insert(
                name.into(),
                HostEntry {
                    ipv4_addr: ip.parse().unwrap(),
                    as_number: None,
                },
            );
        }
        for (cidr, kind, node) in [
            ("10.65.1.0/26", RouteKind::LocalBlock, "node-a"),
            ("10.65.1.2/32", RouteKind::LocalWorkload, "node-a"),
            ("10.65.2.0/26", RouteKind::RemoteBlock, "node-b"),
        ] {
            d.routes.insert(
                net(cidr),
                RouteEntry {
                    kind,
                    node: node.into(),
                    node_ip: "192.168.0.2".parse().unwrap(),
                    pool_type: PoolType::Ipip,
                    same_subnet: true,
                    nat_outgoing: true,
                    encap: Encap::Ipip,
                },
            );
        }
        d
    }

    #[test]
    fn the_plan_has_every_pool_the_masquerading_ones_and_the_peers() {
        let plan = HostPathPlan::of(&desired());
        assert_eq!(
            plan.pools,
            BTreeSet::from([net("10.65.0.0/16"), net("10.66.0.0/16")])
        );
        assert_eq!(plan.masquerade, BTreeSet::from([net("10.65.0.0/16")]));
        assert_eq!(
            plan.peer_sources,
            BTreeSet::from([net("10.65.2.0/26"), net("192.168.0.2/32")])
        );
        assert_eq!(plan.pod_mtu_bytes, 1480);
    }

    #[test]
    fn the_ruleset_replaces_the_whole_table_with_calicos_masquerade_rule() {
        let text = nft_ruleset(&HostPathPlan::of(&desired()), "tapwire0", "eth0");
        let want = "table ip tapwire {}\n\
delete table ip tapwire\n\
table ip tapwire {\n\
\tset pools {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = { 10.65.0.0/16, 10.66.0.0/16 }\n\t}\n\
\tset masquerade_pools {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = { 10.65.0.0/16 }\n\t}\n\
\tset peer_sources {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t\telements = { 10.65.2.0/26, 192.168.0.2/32 }\n\t}\n\
\tchain nat_outgoing {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
\t\tip saddr @masquerade_pools ip daddr != @pools masquerade\n\t}\n\
\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\
\t\tiifname \"eth0\" oifname \"tapwire0\" ip saddr @peer_sources drop\n\t}\n\
}\n";
        assert_eq!(text, want);
        // Without natOutgoing pools the set is empty (nft refuses an empty element list).
        let mut d = desired();
        for pool in d.pools.values_mut() {
            pool.masquerade = false;
        }
        let text = nft_ruleset(&HostPathPlan::of(&d), "tapwire0", "eth0");
        assert!(text.contains("\tset masquerade_pools {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\t}\n"));
    }

    #[test]
    fn routes_through_the_tap_are_read_from_proc_net_route() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
tapwire0\t0000410A\t0101FEA9\t0007\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
tapwire0\t0200410A\t0101FEA9\t0007\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
tapwire0\tgarbage\n";
        assert_eq!(
            routes_through(table, "tapwire0"),
            vec![net("10.65.0.0/16"), net("10.65.0.2/32")]
        );
        assert_eq!(routes_through(table, "eth1"), vec![]);
    }
}
