//! The seed walkthrough ("Life of a Packet in Kubernetes", part 2: Calico) end to end,
//! through tapwire's control plane: two nodes run `tapwire-dataplane` and
//! `tapwire-control` over one datastore; an IP pool is applied with `tapwirectl apply -f`;
//! pods are added by invoking the `tapwire` CNI plugin as a container runtime does.
//!
//! - IPIP (`ipipMode: Always`): `tapwirectl get workloadendpoints` lists the pods with
//!   their node, network and interface; each pod sees Calico's routes and, after the
//!   first packet, 169.254.1.1 at ee:ee:ee:ee:ee:ee; pods ping across nodes and the
//!   underlay shows IP protocol 4 between the node addresses.
//! - `tapwirectl get ippool NAME -o yaml`, edited to `ipipMode: Never` and applied back
//!   with `apply -f -`: the underlay carries plain pod addresses within a second (the
//!   time is measured from tcpdump's stamps and printed), pings go on.
//! - `vxlanMode: Always` the same way, and a pool that is VXLAN from the start: the
//!   underlay shows UDP 4789 with VNI 4096, and pods get the VXLAN MTU.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_integration::check::{
    assert_pings, assert_pings_once_reachable, echo_request, Captured, IPIP, REACHABLE_WITHIN,
    VXLAN_VNI_4096,
};
use tapwire_integration::controlplane::{
    default_ipip_pool, ippool_yaml, time_switch, SwitchTiming, DEFAULT_POOL_NAME, POD_NAMESPACE,
};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab, Pod, Table};

/// A mode change must be on the wire, both ways, within this.
const SWITCH_BOUND: Duration = Duration::from_secs(1);

/// The `get workloadendpoints` row of `pod`, whether the table names it `pod` or
/// `namespace/pod`.
fn wep_row<'t>(table: &'t Table, pod: &Pod) -> &'t Vec<String> {
    table
        .find("WORKLOAD", &pod.name)
        .or_else(|| table.find("WORKLOAD", &format!("{POD_NAMESPACE}/{}", pod.name)))
        .unwrap_or_else(|| panic!("no row for {} in:\n{table:?}", pod.name))
}

fn report(what: &str, t: &SwitchTiming) {
    eprintln!(
        "{what}: tapwirectl apply took {:.0?}; new form on the wire after {:.0?} (requests) / \
         {:.0?} (replies); {} of {} pings answered meanwhile",
        t.apply, t.request_on_wire, t.reply_on_wire, t.pings_received, t.pings_sent
    );
}

#[test]
fn ipip_pool_then_never_then_vxlan_through_cni_and_tapwirectl() {
    if skip_unless_root("ipip_pool_then_never_then_vxlan_through_cni_and_tapwirectl") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_nodes(&lab, &["node1", "node2"]).unwrap();
    let (node1, node2) = (cp.node("node1").unwrap(), cp.node("node2").unwrap());
    let ctl = cp.ctl("node1").unwrap();

    // The pool, as a file a user writes and applies.
    let pool_file = lab.dir().join("pool.yaml");
    std::fs::write(&pool_file, default_ipip_pool()).unwrap();
    let applied = ctl.apply_file(&pool_file).unwrap().success().unwrap();
    assert!(applied.contains("IPPool"), "{applied}");

    let [a, b, c, d] = cp
        .add_pods([
            ("node1", "pod-a"),
            ("node1", "pod-b"),
            ("node2", "pod-c"),
            ("node2", "pod-d"),
        ])
        .unwrap();
    let pods = [&a, &b, &c, &d];
    let mut ips: Vec<_> = pods.iter().map(|p| p.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 4, "duplicate pod addresses: {pods:?}");

    // calicoctl's table: WORKLOAD NODE NETWORKS INTERFACE.
    let table = ctl.table(&["get", "workloadendpoints"]).unwrap();
    for column in ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"] {
        assert!(table.column(column).is_some(), "no {column} in {table:?}");
    }
    for pod in pods {
        let row = wep_row(&table, pod);
        assert_eq!(table.cell(row, "NODE"), Some(pod.node.as_str()), "{row:?}");
        assert_eq!(
            table.cell(row, "NETWORKS"),
            Some(format!("{}/32", pod.ip).as_str()),
            "{row:?}"
        );
        assert_eq!(table.cell(row, "INTERFACE"), Some("eth0"), "{row:?}");
    }
    // Every node's CLI sees the same datastore.
    let from_node2 = cp
        .ctl("node2")
        .unwrap()
        .table(&["get", "workloadendpoints"])
        .unwrap();
    assert_eq!(from_node2.rows.len(), 4, "{from_node2:?}");

    // Inside a pod: Calico's two routes and the IPIP MTU.
    let routes = a.exec(&["ip", "route"]).unwrap();
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("169.254.1.1 dev eth0 scope link"),
        "{routes}"
    );
    assert_eq!(a.mtu_bytes, 1480, "pod MTU with an IPIP pool");

    assert_pings_once_reachable(&[(&a, &c), (&c, &a), (&b, &d), (&a, &b)], 5);
    let neigh = a.exec(&["ip", "neigh"]).unwrap();
    assert!(
        neigh.contains("169.254.1.1 dev eth0 lladdr ee:ee:ee:ee:ee:ee"),
        "{neigh}"
    );

    // The underlay: IP protocol 4 between the node addresses, the pods inside.
    Captured::of_one_ping(&node1, "ip proto 4", &a, &c)
        .assert_every(IPIP)
        .assert_shows(&format!("{} > {}: ", node1.underlay_ip, node2.underlay_ip))
        .assert_echo(&a, &c);
    let routes = ctl.ok(&["routes"]).unwrap();
    assert!(routes.contains("ipip"), "tapwirectl routes:\n{routes}");
    // The route a packet to pod-c takes, alone, as `ip route get` shows one.
    let to_c = ctl.ok(&["routes", &c.ip.to_string()]).unwrap();
    assert!(
        to_c.lines().count() == 1 && to_c.contains("encap ipip node node2"),
        "tapwirectl routes {}:\n{to_c}",
        c.ip
    );
    // Every part of the node runs this build.
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let versions = ctl.ok(&["version"]).unwrap();
    for part in ["Client", "Agent", "Dataplane"] {
        assert!(
            versions.contains(&format!("{part} Version:"))
                && versions.matches(&version).count() == 3,
            "tapwirectl version:\n{versions}"
        );
    }

    // Edit the pool as calicoctl users do: get -o yaml, change the mode, apply it back.
    let yaml = ctl.get_yaml("ippool", Some(DEFAULT_POOL_NAME)).unwrap();
    assert!(yaml.contains("ipipMode: Always"), "{yaml}");
    let never = yaml.replace("ipipMode: Always", "ipipMode: Never");
    let filter = format!("icmp and host {}", a.ip);
    let timing = time_switch(&ctl, &never, &node1, &filter, &a, &c).unwrap();
    report("ipipMode Always -> Never", &timing);
    assert!(
        timing.both_ways() <= SWITCH_BOUND,
        "unencapsulated traffic took {:?} to appear: {timing:?}",
        timing.both_ways()
    );
    assert_pings(&a, &c, 5);
    assert_pings(&d, &b, 5);
    let yaml = ctl.get_yaml("ippool", Some(DEFAULT_POOL_NAME)).unwrap();
    assert!(yaml.contains("ipipMode: Never"), "{yaml}");
    let routes = ctl.ok(&["routes"]).unwrap();
    assert!(!routes.contains("ipip"), "tapwirectl routes:\n{routes}");

    // And to VXLAN, applied on the other node this time.
    let vxlan = yaml.replace("vxlanMode: Never", "vxlanMode: Always");
    assert_ne!(vxlan, yaml, "no vxlanMode: Never in:\n{yaml}");
    let ctl2 = cp.ctl("node2").unwrap();
    let timing = time_switch(&ctl2, &vxlan, &node1, "udp port 4789", &a, &c).unwrap();
    report("vxlanMode Never -> Always", &timing);
    assert!(
        timing.both_ways() <= SWITCH_BOUND,
        "VXLAN took {:?} to appear: {timing:?}",
        timing.both_ways()
    );
    assert_pings(&a, &c, 5);
    Captured::of_one_ping(&node1, "udp port 4789", &b, &d).assert_every(VXLAN_VNI_4096);
    cp.check_running().unwrap();
}

#[test]
fn a_vxlan_pool_carries_pods_in_udp_4789_with_vni_4096() {
    if skip_unless_root("a_vxlan_pool_carries_pods_in_udp_4789_with_vni_4096") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_nodes(&lab, &["node1", "node2"]).unwrap();
    let (node1, node2) = (cp.node("node1").unwrap(), cp.node("node2").unwrap());
    // Applied on node2 this time.
    let pool = ippool_yaml("vxlan-pool", "10.66.0.0/16", 26, "Never", "Always");
    cp.apply("node2", &pool).unwrap();
    let ctl = cp.ctl("node2").unwrap();
    let [a, c] = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-c")])
        .unwrap();
    assert_eq!(a.mtu_bytes, 1450, "pod MTU with a VXLAN pool");
    assert_eq!(c.mtu_bytes, 1450, "pod MTU with a VXLAN pool");
    wait_reachable(&a, c.ip, REACHABLE_WITHIN).unwrap();
    wait_reachable(&c, a.ip, REACHABLE_WITHIN).unwrap();

    Captured::of_one_ping(&node2, "udp port 4789", &c, &a)
        .assert_every(VXLAN_VNI_4096)
        .assert_shows(&format!("{}.", node2.underlay_ip))
        .assert_shows(&format!("{}.4789", node1.underlay_ip))
        .assert_shows(&echo_request(c.ip, a.ip));
    let routes = ctl.ok(&["routes"]).unwrap();
    assert!(routes.contains("vxlan"), "tapwirectl routes:\n{routes}");
    assert_pings(&a, &c, 5);
    cp.check_running().unwrap();
}
