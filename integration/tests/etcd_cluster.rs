//! A tapwire cluster on etcd, as an operator runs one across machines: a 3-member etcd
//! with mutual TLS in its own namespaces on the underlay ([`EtcdCluster`]), two nodes
//! whose controls keep their state there.
//!
//! - The walkthrough: a pool applied with `tapwirectl`, pods added through CNI ping each
//!   other across nodes; `etcdctl get --prefix /calico` shows Calico's key layout.
//! - Propagation: from `tapwirectl apply` on node1 of a document that adds a route, to that
//!   route in both nodes' computed state (what their dataplanes are sent): p50/p99 printed,
//!   on etcd (watches) and, for comparison, on the file store (woken by inotify).
//! - From a CNI ADD on node2 whose pod claims a new block to that block's route on both
//!   nodes: p50/p99 printed, and the new pod answers node1's pod at once.
//! - One member down, the leader: a TCP stream between pods never stalls; CNI ADD and DEL
//!   and `apply` work again within a few seconds.
//! - All of etcd down: pods keep talking; CNI ADD fails within seconds with an error
//!   saying the datastore is unreachable and leaves nothing behind; `tapwirectl` says so
//!   too; with etcd back, everything works again without restarting anything.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use tapwire_control::api::{Reply, Request};
use tapwire_integration::check::{
    assert_failed_add_left_nothing, assert_pings, assert_transfer, REACHABLE_WITHIN,
};
use tapwire_integration::cni::CniCommand;
use tapwire_integration::controlplane::ippool_yaml;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{
    skip_unless_root, tcp_transfer, ControlPlane, EtcdCluster, Lab, Transfer,
};

/// Whether node `on`'s computed routes hold `dst`.
fn has_route(cp: &ControlPlane<'_>, on: &str, dst: &str) -> bool {
    match cp.api(on, &Request::Routes) {
        Ok(Reply::Routes { routes }) => routes.iter().any(|r| r.dst == dst),
        _ => false,
    }
}

/// The `q`-quantile (nearest rank) of `samples`.
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

#[test]
fn the_walkthrough_on_etcd_with_calicos_keys_and_fast_propagation() {
    if skip_unless_root("the_walkthrough_on_etcd_with_calicos_keys_and_fast_propagation") {
        return;
    }
    let lab = Lab::new().unwrap();
    let etcd = EtcdCluster::start(&lab, 3).unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods_on_etcd(&lab, &etcd).unwrap();
    assert_pings(&a, &c, 3);
    assert_transfer(&a, &c, 5001, 16 << 20);

    let keys = etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/calico/"])
        .unwrap();
    for expected in [
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
        "/calico/resources/v3/projectcalico.org/nodes/node1",
        "/calico/resources/v3/projectcalico.org/nodes/node2",
        "/calico/ipam/v2/assignment/ipv4/block/10.65.",
        "/calico/ipam/v2/handle/",
        "/calico/ipam/v2/host/node1/ipv4/block/",
    ] {
        assert!(
            keys.contains(expected),
            "no key {expected}… in etcd:\n{keys}"
        );
    }

    let (p50, p99) = apply_to_route(&cp);
    eprintln!(
        "etcd: tapwirectl apply → route on both nodes: p50 {p50:.1?}, p99 {p99:.1?} (20 samples, apply included)"
    );
    cp.check_running().unwrap();
}

#[test]
fn a_pod_added_on_one_node_is_routed_on_the_other_within_milliseconds() {
    if skip_unless_root("a_pod_added_on_one_node_is_routed_on_the_other_within_milliseconds") {
        return;
    }
    let lab = Lab::new().unwrap();
    let etcd = EtcdCluster::start(&lab, 3).unwrap();
    // /32 blocks: every pod claims a block of its own, so every ADD makes a route the
    // other node must learn (with /26 blocks only a node's first pod in a block does).
    let pool = ippool_yaml("per-pod", "10.66.0.0/16", 32, "Always", "Never");
    let cp = ControlPlane::with_pool_on_etcd(&lab, &etcd, &["node1", "node2"], &pool).unwrap();
    let a = cp.add_pod("node1", "pod-a").unwrap();
    let mut samples = Vec::new();
    let mut there_at_return = 0;
    for i in 0..10 {
        let sandbox = cp.sandbox(&format!("pod-{i}")).unwrap();
        let started = Instant::now();
        let added = cp.cni_add("node2", &sandbox).unwrap();
        let dst = format!("{}/32", added.pod.ip);
        let on_both = || has_route(&cp, "node1", &dst) && has_route(&cp, "node2", &dst);
        there_at_return += usize::from(on_both());
        while !on_both() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{dst} did not reach both nodes"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(started.elapsed());
        // What a user sees: the new pod answers a pod on the other node at once.
        wait_reachable(&a, added.pod.ip, Duration::from_secs(1)).unwrap();
    }
    let (p50, p99) = (quantile(&mut samples, 0.5), quantile(&mut samples, 0.99));
    eprintln!(
        "etcd: CNI ADD on node2 (start) → its block's route on both nodes: p50 {p50:.1?}, \
         p99 {p99:.1?} (10 samples, the ADD included); already there when the ADD returned: \
         {there_at_return}/10"
    );
    assert!(p99 < Duration::from_secs(1), "{p99:?}");
    cp.check_running().unwrap();
}

#[test]
fn losing_the_etcd_leader_stops_no_traffic_and_the_control_plane_fails_over() {
    if skip_unless_root("losing_the_etcd_leader_stops_no_traffic_and_the_control_plane_fails_over")
    {
        return;
    }
    let lab = Lab::new().unwrap();
    let etcd = EtcdCluster::start(&lab, 3).unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods_on_etcd(&lab, &etcd).unwrap();
    let leader = etcd.wait_for_leader(Duration::from_secs(5)).unwrap();

    let (report, failover) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let spec = Transfer {
                // Forwarding never depends on etcd: any stall is a failure.
                stall_timeout: Duration::from_secs(2),
                ..Transfer::for_duration(Duration::from_secs(6), u64::MAX)
            };
            tcp_transfer(&a, &c, &spec)
        });
        std::thread::sleep(Duration::from_millis(500));
        etcd.kill_member(leader).unwrap();
        let killed = Instant::now();
        // The first CNI ADD that succeeds after the kill.
        let sandbox = cp.sandbox("pod-b").unwrap();
        let b = loop {
            match cp.cni_add("node1", &sandbox) {
                Ok(added) => break added.pod,
                Err(err) => {
                    assert!(
                        killed.elapsed() < Duration::from_secs(15),
                        "no ADD succeeded 15 s after the leader died: {err}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let failover = killed.elapsed();
        wait_reachable(&b, c.ip, REACHABLE_WITHIN).unwrap();
        (stream.join().expect("transfer thread panicked"), failover)
    });
    let report = report.unwrap();
    eprintln!("etcd leader killed: a CNI ADD succeeded {failover:.2?} later; the stream meanwhile: {report}");
    assert!(failover < Duration::from_secs(10), "{failover:?}");
    // DEL and apply through the survivors.
    let run = cp.del_pod("pod-b").unwrap();
    assert!(run.succeeded(), "{:?}", run.output);
    cp.apply(
        "node2",
        &tapwire_integration::controlplane::ippool_yaml(
            "second",
            "10.66.0.0/16",
            26,
            "Always",
            "Never",
        ),
    )
    .unwrap();
    etcd.start_member(leader).unwrap();
    cp.check_running().unwrap();
}

#[test]
fn with_all_of_etcd_down_pods_keep_talking_adds_fail_fast_and_all_comes_back() {
    if skip_unless_root("with_all_of_etcd_down_pods_keep_talking_adds_fail_fast_and_all_comes_back")
    {
        return;
    }
    let lab = Lab::new().unwrap();
    let etcd = EtcdCluster::start(&lab, 3).unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods_on_etcd(&lab, &etcd).unwrap();
    etcd.stop_all().unwrap();

    // Forwarding goes on, on the last state.
    assert_pings(&a, &c, 3);
    assert_transfer(&c, &a, 5002, 16 << 20);

    // An ADD fails fast, says why, and leaves nothing (checked once etcd is back).
    let sandbox = cp.sandbox("pod-b").unwrap();
    let started = Instant::now();
    let run = cp
        .runtime("node1")
        .unwrap()
        .exec(
            CniCommand::Add,
            &cp.network_conf("node1").unwrap(),
            &sandbox.args,
        )
        .unwrap();
    let took = started.elapsed();
    assert!(!run.succeeded(), "ADD succeeded with etcd down");
    let error = run.error_object().expect("a CNI error object");
    eprintln!("ADD with etcd down, after {took:.2?}: {error:?}");
    let text = format!("{} {}", error.msg, error.details).to_lowercase();
    assert!(
        text.contains("datastore") && text.contains("unreachable"),
        "{error:?}"
    );
    assert!(took < Duration::from_secs(15), "the ADD took {took:?}");
    assert!(sandbox.netns.interfaces_besides_lo().unwrap().is_empty());
    let out = cp.ctl("node1").unwrap().run(&["get", "ippools"]).unwrap();
    assert!(
        !out.status.success(),
        "get ippools succeeded with etcd down"
    );
    assert!(
        out.stderr.to_lowercase().contains("unreachable"),
        "{}",
        out.stderr
    );

    // etcd returns: everything works again, nothing restarted.
    let pids = (
        cp.control_pid("node1").unwrap(),
        cp.dataplane_pid("node1").unwrap(),
    );
    etcd.start_all().unwrap();
    assert_failed_add_left_nothing(&cp, &sandbox);
    let deadline = Instant::now() + Duration::from_secs(15);
    let b = loop {
        match cp.cni_add("node1", &sandbox) {
            Ok(added) => break added.pod,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "no ADD succeeded after etcd came back: {err}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    wait_reachable(&b, c.ip, REACHABLE_WITHIN).unwrap();
    assert_eq!(
        (
            cp.control_pid("node1").unwrap(),
            cp.dataplane_pid("node1").unwrap()
        ),
        pids,
        "a process was restarted"
    );
    cp.ctl("node1").unwrap().ok(&["get", "ippools"]).unwrap();
    cp.check_running().unwrap();
}

/// Applies on node1, 20 times, a declared host with a pod CIDR of its own, and times each
/// until both nodes route to it (the `tapwirectl` run included): (p50, p99).
fn apply_to_route(cp: &ControlPlane<'_>) -> (Duration, Duration) {
    let mut samples = Vec::new();
    for i in 0..20u8 {
        let cidr = format!("10.200.{i}.0/24");
        let doc = format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: ext-{i}\n\
             spec:\n  bgp:\n    ipv4Address: 192.168.0.{}/24\n  podCIDRs: [\"{cidr}\"]\n",
            100 + i
        );
        let started = Instant::now();
        cp.apply("node1", &doc).unwrap();
        while !(has_route(cp, "node1", &cidr) && has_route(cp, "node2", &cidr)) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{cidr} did not reach both nodes"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        samples.push(started.elapsed());
    }
    (quantile(&mut samples, 0.5), quantile(&mut samples, 0.99))
}

#[test]
fn on_the_file_store_a_change_propagates_as_well() {
    if skip_unless_root("on_the_file_store_a_change_propagates_as_well") {
        return;
    }
    // The same measurement on the embedded store, for comparison.
    let lab = Lab::new().unwrap();
    let (cp, _) = ControlPlane::two_nodes_two_pods(&lab).unwrap();
    let (p50, p99) = apply_to_route(&cp);
    eprintln!(
        "file store: tapwirectl apply → route on both nodes: p50 {p50:.1?}, p99 {p99:.1?} (20 samples, apply included)"
    );
    assert!(p99 < Duration::from_secs(1), "{p99:?}");
}
