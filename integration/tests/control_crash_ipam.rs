//! `tapwire-control` killed (SIGKILL) in the middle of 20 concurrent CNI ADDs on its node,
//! then started again:
//!
//! - every ADD either succeeded or failed with a CNI error saying what happened
//!   (tapwire-control closed the connection, or could not be reached) — none hangs;
//! - after the restart, IPAM holds an address only for pods that have a workload
//!   endpoint: the start-up repair released what the interrupted ADDs had allocated;
//! - the runtime's retry of every failed ADD succeeds (a TAP the crashed ADD left in the
//!   pod's namespace is replaced), and every pod reaches a pod on the other node;
//! - in the end, one address, one handle and one endpoint per pod, no address twice.
//!
//! On the file store and on a 3-member etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tapwire_integration::check::REACHABLE_WITHIN;
use tapwire_integration::cni::CniCommand;
use tapwire_integration::controlplane::default_ipip_pool;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, EtcdCluster, Lab, Sandbox};

const PODS: usize = 20;

#[test]
fn a_control_killed_during_concurrent_adds_leaks_no_address_and_retries_succeed() {
    if skip_unless_root(
        "a_control_killed_during_concurrent_adds_leaks_no_address_and_retries_succeed",
    ) {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_pool(&lab, &["node1", "node2"], &default_ipip_pool()).unwrap();
    killed_during_adds(&cp);
}

#[test]
fn on_etcd_a_control_killed_during_concurrent_adds_leaks_no_address() {
    if skip_unless_root("on_etcd_a_control_killed_during_concurrent_adds_leaks_no_address") {
        return;
    }
    let lab = Lab::new().unwrap();
    let etcd = EtcdCluster::start(&lab, 3).unwrap();
    let cp =
        ControlPlane::with_pool_on_etcd(&lab, &etcd, &["node1", "node2"], &default_ipip_pool())
            .unwrap();
    killed_during_adds(&cp);
}

/// The scenario of the module documentation, on `cp` (two nodes with a pool).
fn killed_during_adds(cp: &ControlPlane<'_>) {
    let probe = cp.add_pod("node2", "probe").unwrap();
    let sandboxes: Vec<Sandbox> = (0..PODS)
        .map(|i| cp.sandbox(&format!("p{i:02}")).unwrap())
        .collect();
    let runtime = cp.runtime("node1").unwrap();
    let conf = cp.network_conf("node1").unwrap();

    let runs = std::thread::scope(|scope| {
        let adds: Vec<_> = sandboxes
            .iter()
            .map(|sandbox| {
                let (runtime, conf) = (&runtime, &conf);
                scope.spawn(move || runtime.exec(CniCommand::Add, conf, &sandbox.args).unwrap())
            })
            .collect();
        // Kill the control once some of the ADDs have gone through and others are half-way.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cp.workload_endpoints().unwrap().len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        cp.kill_control("node1").unwrap();
        adds.into_iter()
            .map(|h| h.join().expect("ADD thread panicked"))
            .collect::<Vec<_>>()
    });
    let failed: Vec<usize> = (0..PODS).filter(|&i| !runs[i].succeeded()).collect();
    eprintln!(
        "{} of {PODS} ADDs failed when the control was killed",
        failed.len()
    );
    for &i in &failed {
        let error = runs[i]
            .error_object()
            .unwrap_or_else(|| panic!("no CNI error object: {:?}", runs[i].output));
        let text = format!("{} {}", error.msg, error.details);
        assert!(
            text.contains("closed the connection") || text.contains("not reachable"),
            "ADD of {}: {text}",
            sandboxes[i].name
        );
        assert_eq!(error.code, 11, "{text}");
    }

    for i in (0..PODS).filter(|i| !failed.contains(i)) {
        let result = runs[i].json().expect("a successful ADD prints its result");
        cp.record_pod("node1", &sandboxes[i], result, runs[i].elapsed)
            .unwrap();
    }

    cp.start_control("node1").unwrap();
    let endpoints = cp.workload_endpoints().unwrap();
    let handles = cp.ipam_handles().unwrap();
    eprintln!(
        "after the restart: {} endpoints, {} handles",
        endpoints.len(),
        handles.len()
    );
    for handle in &handles {
        assert!(
            endpoints.iter().any(|ep| {
                ep.spec
                    .container_id
                    .as_deref()
                    .is_some_and(|c| handle.contains(c))
            }),
            "handle {handle} has no workload endpoint: {endpoints:?}"
        );
    }
    let allocated: usize = cp.ipam_blocks().unwrap().iter().map(|b| b.2).sum();
    assert_eq!(allocated, handles.len(), "allocations without a handle");

    // The runtime retries what failed.
    for &i in &failed {
        cp.cni_add("node1", &sandboxes[i]).unwrap();
    }
    let mut ips = BTreeSet::new();
    for sandbox in &sandboxes {
        let pod = cp.pod(&sandbox.name).unwrap();
        assert!(ips.insert(pod.ip), "{} given twice", pod.ip);
        wait_reachable(&pod, probe.ip, REACHABLE_WITHIN).unwrap();
    }
    assert_eq!(cp.ipam_handles().unwrap().len(), PODS + 1);
    assert_eq!(cp.workload_endpoints().unwrap().len(), PODS + 1);
    // What an operator runs to see the same: every record agrees, every pod counted.
    let ctl = cp.ctl("node1").unwrap();
    let check = ctl.ok(&["ipam", "check"]).unwrap();
    assert!(check.ends_with("No problems found.\n"), "{check}");
    let show = ctl.ok(&["ipam", "show"]).unwrap();
    assert!(
        show.contains(&format!("| {} (", PODS + 1)),
        "{} addresses in use: {show}",
        PODS + 1
    );
    cp.check_running().unwrap();
}
