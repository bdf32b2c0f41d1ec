//! A pod whose `eth0` is deleted and made again by a second CNI ADD (same container, same
//! arguments) gets its traffic back within seconds, without restarting anything: the
//! dataplane notices the dead queues, reports the endpoint down, and attaches the new TAP
//! as soon as it exists. The dataplane logs the event once, not once per worker and read.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use tapwire_integration::check::{assert_pings, assert_transfer, REACHABLE_WITHIN};
use tapwire_integration::controlplane::default_ipip_pool;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab};

/// Lines of a dataplane log that report a pod queue failing.
fn queue_failures(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("pod queue") && l.contains("WARN"))
        .count()
}

#[test]
fn a_pod_whose_tap_is_deleted_and_added_again_is_reattached() {
    if skip_unless_root("a_pod_whose_tap_is_deleted_and_added_again_is_reattached") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_pool(&lab, &["node1", "node2"], &default_ipip_pool()).unwrap();
    let sandbox = cp.sandbox("pa").unwrap();
    let a = cp.cni_add("node1", &sandbox).unwrap().pod;
    let b = cp.add_pod("node2", "pb").unwrap();
    wait_reachable(&a, b.ip, REACHABLE_WITHIN).unwrap();
    wait_reachable(&b, a.ip, REACHABLE_WITHIN).unwrap();

    // The pod's eth0 goes away: the dataplane stops using its queues.
    sandbox.netns.ip(&["link", "del", "eth0"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // The runtime adds the pod again: a new TAP named eth0 in the same namespace.
    let again = cp.cni_add("node1", &sandbox).unwrap().pod;
    let started = Instant::now();
    wait_reachable(&again, b.ip, Duration::from_secs(5)).unwrap();
    wait_reachable(&b, again.ip, Duration::from_secs(5)).unwrap();
    eprintln!(
        "pa reachable again {:.2?} after its second ADD",
        started.elapsed()
    );
    let link = again.exec(&["ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("LOWER_UP"), "no queue attached: {link}");
    for (from, to) in [(&again, &b), (&b, &again)] {
        assert_pings(from, to, 5);
    }
    assert_transfer(&again, &b, 5001, 16 << 20);
    assert_transfer(&b, &again, 5002, 16 << 20);

    let log = cp.dataplane_log("node1").unwrap();
    eprintln!("{log}");
    let failures = queue_failures(&log);
    assert!(
        failures <= 1,
        "{failures} warnings about the dead queue (one per event expected):\n{log}"
    );
    assert!(
        !log.contains("os error 77") || failures == 1,
        "EBADFD logged repeatedly:\n{log}"
    );
    cp.check_running().unwrap();
}
