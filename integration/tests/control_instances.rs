//! One instance of each daemon per node. A second `tapwire-control` or
//! `tapwire-dataplane` started with the running one's configuration (the mistake of an
//! operator who starts the service twice) refuses to start, naming the lock and the PID
//! that holds it, and leaves the running node alone: its sockets stay, the dataplane is
//! not reconnected, pods keep working and a new pod's CNI ADD succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_integration::check::{assert_pings, REACHABLE_WITHIN};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, Daemon, Lab};

#[test]
fn a_second_control_or_dataplane_for_a_node_refuses_to_start_and_changes_nothing() {
    if skip_unless_root(
        "a_second_control_or_dataplane_for_a_node_refuses_to_start_and_changes_nothing",
    ) {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods(&lab).unwrap();
    let reconnects_before = cp
        .control_log("node1")
        .unwrap()
        .matches("connected to the dataplane")
        .count();

    for (daemon, pid) in [
        (Daemon::Control, cp.control_pid("node1").unwrap()),
        (Daemon::Dataplane, cp.dataplane_pid("node1").unwrap()),
    ] {
        let pid = pid.expect("the first instance runs");
        let out = cp
            .run_second_instance("node1", daemon, Duration::from_secs(10))
            .unwrap();
        eprintln!("second {daemon:?}: {} {}", out.status, out.stderr.trim());
        assert!(
            !out.status.success(),
            "a second {daemon:?} started: {out:?}"
        );
        assert!(
            out.stderr.contains("already running")
                && out.stderr.contains(&format!("process {pid}")),
            "the refusal does not say who holds the node: {}",
            out.stderr
        );
    }

    // The running node is untouched: same processes, sockets served, no reconnection,
    // traffic flows and a new pod can be added.
    cp.check_running().unwrap();
    let status = cp.node_status("node1").unwrap();
    assert!(
        status.dataplane_connected && status.dataplane_in_sync,
        "{status:?}"
    );
    let reconnects_after = cp
        .control_log("node1")
        .unwrap()
        .matches("connected to the dataplane")
        .count();
    assert_eq!(
        reconnects_after, reconnects_before,
        "the dataplane connection was disturbed"
    );
    assert_pings(&a, &c, 3);
    let b = cp.add_pod("node1", "pod-b").unwrap();
    wait_reachable(&b, c.ip, REACHABLE_WITHIN).unwrap();
    assert_pings(&c, &b, 3);
}
