//! A node's life in the datastore, as an operator sees it:
//!
//! - a node whose processes restart keeps its IPAM blocks and its pods' addresses;
//! - a node gone for good, removed with `tapwirectl delete node NAME` on another node:
//!   within a second no dataplane routes to its blocks any more, and its workload
//!   endpoints, addresses, handles and blocks are gone from the datastore (Calico's IPAM
//!   garbage collection); `tapwirectl` lists what it released and warns that the node
//!   sent a heartbeat recently. The remaining node keeps working and adds pods.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use tapwire_control::api::{Reply, Request};
use tapwire_integration::check::{assert_pings, REACHABLE_WITHIN};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab};

/// The blocks node `node` holds: `(cidr, allocated addresses)`.
fn blocks_of(cp: &ControlPlane<'_>, node: &str) -> Vec<(String, usize)> {
    cp.ipam_blocks()
        .unwrap()
        .into_iter()
        .filter(|(_, owner, _)| owner == node)
        .map(|(cidr, _, n)| (cidr, n))
        .collect()
}

/// Whether node `on`'s computed routes send anything to node `to`.
fn routes_to(cp: &ControlPlane<'_>, on: &str, to: &str) -> bool {
    match cp.api(on, &Request::Routes).unwrap() {
        Reply::Routes { routes } => routes.iter().any(|r| r.node.as_deref() == Some(to)),
        other => panic!("routes answered with {other:?}"),
    }
}

#[test]
fn a_restarted_node_keeps_its_blocks_and_a_deleted_one_leaves_nothing_behind() {
    if skip_unless_root("a_restarted_node_keeps_its_blocks_and_a_deleted_one_leaves_nothing_behind")
    {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods(&lab).unwrap();
    let d = cp.add_pod("node2", "pod-d").unwrap();
    wait_reachable(&a, d.ip, REACHABLE_WITHIN).unwrap();
    let node2_blocks = blocks_of(&cp, "node2");
    assert_eq!(
        node2_blocks.iter().map(|b| b.1).sum::<usize>(),
        2,
        "{node2_blocks:?}"
    );

    // A restart of both processes: same blocks, same addresses, pods reachable again.
    cp.stop_control("node2").unwrap();
    cp.stop_dataplane("node2").unwrap();
    cp.start_dataplane("node2").unwrap();
    cp.start_control("node2").unwrap();
    assert_eq!(
        blocks_of(&cp, "node2"),
        node2_blocks,
        "a restart changed node2's blocks"
    );
    wait_reachable(&a, c.ip, Duration::from_secs(10)).unwrap();
    assert_pings(&a, &d, 2);

    // node2 is gone for good.
    cp.stop_control("node2").unwrap();
    cp.stop_dataplane("node2").unwrap();
    assert!(routes_to(&cp, "node1", "node2"));
    let started = Instant::now();
    let out = cp
        .ctl("node1")
        .unwrap()
        .run(&["delete", "node", "node2"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "Successfully deleted 1 'Node' resource(s)\n");
    for ip in [c.ip, d.ip] {
        assert!(
            out.stderr.contains(&format!("released {ip} ")),
            "{ip} not reported released: {}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("sent a heartbeat"), "{}", out.stderr);
    while routes_to(&cp, "node1", "node2") {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "node1 still routes to node2 {:?} after the delete",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "node1 dropped node2's routes {:?} after the delete began",
        started.elapsed()
    );
    assert!(
        blocks_of(&cp, "node2").is_empty(),
        "node2's blocks are left"
    );
    let endpoints = cp.workload_endpoints().unwrap();
    assert!(
        endpoints.iter().all(|ep| ep.spec.node != "node2"),
        "{endpoints:?}"
    );
    let handles = cp.ipam_handles().unwrap();
    assert_eq!(
        handles.len(),
        1,
        "only pod-a's handle may be left: {handles:?}"
    );
    let nodes = cp.ctl("node1").unwrap().ok(&["get", "nodes"]).unwrap();
    assert!(!nodes.contains("node2"), "{nodes}");

    // node1 goes on.
    let b = cp.add_pod("node1", "pod-b").unwrap();
    assert_pings(&a, &b, 2);
}
