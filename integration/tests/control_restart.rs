//! Restarting the node processes on a running cluster (two nodes, an IPIP pool, pods
//! added through the CNI plugin):
//!
//! - `tapwire-control` is stopped by PID and started again on both nodes, one after the
//!   other, while a verified TCP stream runs from node1 to node2: the stream never
//!   notices (the dataplanes keep forwarding on what they hold; each control resends the
//!   full state on reconnect and the dataplane keeps what is still wanted), and the pods'
//!   interfaces are the same devices afterwards.
//! - `tapwire-dataplane` is stopped and started again on node2: the pod there keeps its
//!   `eth0` (same device, MAC and address: the TAP is persistent and lives in the pod's
//!   namespace), the restarted dataplane gets the full state from control and reattaches,
//!   pings resume within a few seconds and a new TCP transfer succeeds.
//! - `tapwire-dataplane` killed (SIGKILL) on node2 under a TCP stream and started again
//!   half a second later: pings (one every 10 ms) are answered within a second of the
//!   restart, the stream completes with every byte verified, and the pod keeps its `eth0`.
//!
//! The first runs on the file store and on a 3-member etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use tapwire_integration::check::{assert_pings, assert_transfer};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{
    skip_unless_root, tcp_transfer, ControlPlane, EtcdCluster, Lab, Pod, Transfer,
};

/// What identifies the pod's `eth0` and its address: ifindex, MTU and MAC from
/// `ip -o link show eth0`, the address from `ip -o -4 addr show eth0`. (The link state is
/// left out: a TAP has no carrier while no dataplane holds its queues.)
fn interface_view(pod: &Pod) -> String {
    let link = pod.exec(&["ip", "-o", "link", "show", "eth0"]).unwrap();
    let words: Vec<&str> = link.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or("?")
    };
    let addr = pod
        .exec(&["ip", "-o", "-4", "addr", "show", "eth0"])
        .unwrap();
    let inet = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or("?")
        .to_string();
    format!(
        "ifindex {} mtu {} mac {} inet {inet}",
        words.first().copied().unwrap_or("?"),
        after("mtu"),
        after("link/ether")
    )
}

#[test]
fn a_stream_survives_control_restarts_and_traffic_resumes_after_a_dataplane_restart() {
    if skip_unless_root(
        "a_stream_survives_control_restarts_and_traffic_resumes_after_a_dataplane_restart",
    ) {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods(&lab).unwrap();
    restarts_under_traffic(&cp, &a, &c);
}

#[test]
fn on_etcd_a_stream_survives_control_restarts_and_traffic_resumes_after_a_dataplane_restart() {
    if skip_unless_root(
        "on_etcd_a_stream_survives_control_restarts_and_traffic_resumes_after_a_dataplane_restart",
    ) {
        return;
    }
    let lab = Lab::new().unwrap();
    let etcd = EtcdCluster::start(&lab, 3).unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods_on_etcd(&lab, &etcd).unwrap();
    restarts_under_traffic(&cp, &a, &c);
}

/// The control and dataplane restarts of the module documentation, on `cp`.
fn restarts_under_traffic(cp: &ControlPlane<'_>, a: &Pod, c: &Pod) {
    let before = (interface_view(a), interface_view(c));

    // Control restarts under a running stream.
    let stream_for = Duration::from_secs(8);
    let report = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let spec = Transfer {
                // A stall of more than 3 s would mean forwarding stopped.
                stall_timeout: Duration::from_secs(3),
                ..Transfer::for_duration(stream_for, u64::MAX)
            };
            tcp_transfer(a, c, &spec)
        });
        std::thread::sleep(Duration::from_secs(1));
        for node in ["node1", "node2"] {
            let old = cp.control_pid(node).unwrap();
            let started = Instant::now();
            cp.restart_control(node).unwrap();
            let new = cp.control_pid(node).unwrap();
            assert_ne!(old, new, "tapwire-control on {node} was not replaced");
            eprintln!(
                "tapwire-control on {node}: pid {old:?} -> {new:?}, back in sync after {:.0?}",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        stream.join().expect("transfer thread panicked")
    });
    let report = report.unwrap();
    eprintln!("stream across both control restarts: {report}, every byte verified");
    assert!(report.bytes > 0);
    assert_eq!(
        (interface_view(a), interface_view(c)),
        before,
        "a control restart changed a pod's interface"
    );

    // A dataplane restart on node2.
    let c_before = interface_view(c);
    let stopped = Instant::now();
    cp.stop_dataplane("node2").unwrap();
    // The pod keeps its interface while no dataplane runs.
    assert_eq!(
        interface_view(c),
        c_before,
        "eth0 changed with the dataplane gone"
    );
    cp.start_dataplane("node2").unwrap();
    cp.wait_ready("node2", Duration::from_secs(20)).unwrap();
    wait_reachable(a, c.ip, Duration::from_secs(10)).unwrap();
    let outage = stopped.elapsed();
    eprintln!("dataplane restart on node2: pings answered again {outage:.2?} after the stop");
    assert!(outage < Duration::from_secs(10), "{outage:?}");
    assert_eq!(
        interface_view(c),
        c_before,
        "the dataplane restart changed the pod's interface"
    );
    let link = c.exec(&["ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(
        link.contains("LOWER_UP"),
        "the restarted dataplane did not reattach: {link}"
    );
    for (from, to) in [(&a, &c), (&c, &a)] {
        assert_pings(from, to, 5);
    }
    assert_transfer(c, a, 5002, 16 << 20);
    cp.check_running().unwrap();
}

#[test]
fn a_stream_survives_a_dataplane_killed_and_restarted_and_traffic_resumes_at_once() {
    if skip_unless_root(
        "a_stream_survives_a_dataplane_killed_and_restarted_and_traffic_resumes_at_once",
    ) {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods(&lab).unwrap();
    let c_before = interface_view(&c);
    let (report, resumed) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let spec = Transfer {
                // The outage below is well under this; TCP retransmits across it.
                stall_timeout: Duration::from_secs(6),
                ..Transfer::for_duration(Duration::from_secs(6), u64::MAX)
            };
            tcp_transfer(&a, &c, &spec)
        });
        std::thread::sleep(Duration::from_secs(1));
        cp.kill_dataplane("node2").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        cp.start_dataplane("node2").unwrap();
        let restarted = Instant::now();
        // A probe every 10 ms until the first reply (at most 10 s).
        let ip = c.ip.to_string();
        let out = a
            .netns()
            .exec_output(
                &["ping", "-n", "-q", "-c", "1", "-i", "0.01", "-w", "10", &ip],
                Duration::from_secs(20),
            )
            .unwrap();
        assert!(out.status.success(), "{ip} never answered: {}", out.stdout);
        let resumed = restarted.elapsed();
        (stream.join().expect("transfer thread panicked"), resumed)
    });
    let report = report.unwrap();
    eprintln!(
        "dataplane kill -9 on node2: pings answered {resumed:.2?} after its restart; \
         the stream across it: {report}, every byte verified"
    );
    assert!(resumed < Duration::from_secs(1), "{resumed:?}");
    assert_eq!(
        interface_view(&c),
        c_before,
        "the crash changed the pod's interface"
    );
    assert_transfer(&c, &a, 5002, 16 << 20);
    cp.check_running().unwrap();
}
