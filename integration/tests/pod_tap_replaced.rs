//! A pod whose `eth0` is deleted and made again by a second CNI ADD (same container, same
//! arguments) gets its traffic back within seconds, without restarting anything: the
//! dataplane notices the dead queues, reports the endpoint down, and attaches the new TAP
//! as soon as it exists. The dataplane logs the event once, not once per worker and read.
//! Fed by the lab instead of control, the dataplane is seen to report the endpoint
//! `down` when the TAP goes and `up` when it is back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use tapwire_control::podnet::{self, PodInterfaceSpec};
use tapwire_integration::check::{assert_pings, assert_transfer, REACHABLE_WITHIN};
use tapwire_integration::controlplane::default_ipip_pool;
use tapwire_integration::desired::{endpoint_key, endpoint_update};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, Cluster, ControlPlane, Lab, Mode};

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
    let run = cp.cni_check("node1", "pa").unwrap();
    assert!(
        !run.succeeded(),
        "CHECK passed without eth0: {:?}",
        run.output
    );

    // The runtime adds the pod again: a new TAP named eth0 in the same namespace.
    let again = cp.cni_add("node1", &sandbox).unwrap().pod;
    let started = Instant::now();
    wait_reachable(&again, b.ip, Duration::from_secs(5)).unwrap();
    wait_reachable(&b, again.ip, Duration::from_secs(5)).unwrap();
    eprintln!(
        "pa reachable again {:.2?} after its second ADD",
        started.elapsed()
    );
    let run = cp.cni_check("node1", "pa").unwrap();
    assert!(
        run.succeeded(),
        "CHECK of the re-added pod: {:?}",
        run.output
    );
    let link = again.exec(&["ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("LOWER_UP"), "no queue attached: {link}");
    for (from, to) in [(&again, &b), (&b, &again)] {
        assert_pings(from, to, 5);
    }
    assert_transfer(&again, &b, 5001, 16 << 20);
    assert_transfer(&b, &again, 5002, 16 << 20);

    // One warning for the event: not one per worker, nor one per read.
    let log = cp.dataplane_log("node1").unwrap();
    assert_eq!(queue_failures(&log), 1, "{log}");
    cp.check_running().unwrap();
}

#[test]
fn the_dataplane_reports_a_pod_down_while_its_tap_is_gone_and_up_when_it_is_back() {
    if skip_unless_root(
        "the_dataplane_reports_a_pod_down_while_its_tap_is_gone_and_up_when_it_is_back",
    ) {
        return;
    }
    let lab = Lab::new().unwrap();
    let mut cluster = Cluster::start(&lab, Mode::Vxlan).unwrap();
    let (a, c) = cluster
        .reachable_pair("pod-a", "pod-c", REACHABLE_WITHIN)
        .unwrap();
    let key = endpoint_key(&a);
    let within = Duration::from_secs(5);

    a.netns().ip(&["link", "del", "eth0"]).unwrap();
    let control = cluster.dataplane("node1").unwrap().control().unwrap();
    control.wait_endpoint_status(&key, "down", within).unwrap();

    // The pod's interface made again, as the CNI plugin makes it: attached at the next
    // retry, with nothing sent by control.
    let iface = podnet::create_pod_interface(&PodInterfaceSpec {
        netns_path: a.netns().path(),
        ifname: "eth0".into(),
        address: a.ip,
        mtu_bytes: a.mtu_bytes,
    })
    .unwrap();
    let started = Instant::now();
    control.wait_endpoint_status(&key, "up", within).unwrap();
    eprintln!("up again {:.2?} after the TAP was back", started.elapsed());
    // The new TAP has a new MAC, which control announces (as tapwire-control does after
    // the CNI ADD); frames to the pod are addressed to it.
    let mut again = a.clone();
    again.mac = iface.mac;
    control.send(endpoint_update(&again)).unwrap();
    wait_reachable(&c, a.ip, within).unwrap();
    wait_reachable(&a, c.ip, within).unwrap();
    let log = cluster.dataplane("node1").unwrap().log();
    assert_eq!(queue_failures(&log), 1, "{log}");
    cluster.check_running().unwrap();
}
