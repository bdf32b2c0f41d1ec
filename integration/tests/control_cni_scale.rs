//! Many pods at once, the way a node drain or a rollout hits CNI: 50 CNI ADDs across two
//! nodes (25 each) from 8 concurrent runtime threads, each ADD a real execution of the
//! `tapwire` plugin, then 50 DELs the same way.
//!
//! - Every pod gets an address and an `eth0` carrying it; no address is given twice; the
//!   datastore lists every pod as a workload endpoint.
//! - Latency: from the start of the ADD until the new pod's first ping to a pod on the
//!   other node is answered (interface built, dataplane attached, routes known on both
//!   nodes); p50 and p99 over the 50 pods are printed, next to the plugin's own time.
//! - After the DELs: no pod namespace has an interface besides `lo`, no workload endpoint,
//!   IPAM handle or block is left but those of the two probe pods — and none at all once
//!   those are deleted too.
//! - DEL is idempotent: DEL twice, and DEL of a container that was never added, succeed.
//!
//! On the file store and on a 3-member etcd with mutual TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tapwire_integration::check::REACHABLE_WITHIN;
use tapwire_integration::cni::CniArgs;
use tapwire_integration::controlplane::{default_ipip_pool, POD_NAMESPACE};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, EtcdCluster, Lab, Pod, Sandbox};

const PODS: usize = 50;
const THREADS: usize = 8;

/// The `q`-quantile (nearest rank) of sorted `samples`.
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// Runs `job` on every index below `count` from `THREADS` threads.
fn in_parallel<T: Send>(count: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let value = job(i);
                results.lock().unwrap().push((i, value));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, v)| v).collect()
}

struct Added {
    pod: Pod,
    add: Duration,
    ready: Duration,
}

#[test]
fn fifty_concurrent_adds_then_dels_across_two_nodes() {
    if skip_unless_root("fifty_concurrent_adds_then_dels_across_two_nodes") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_pool(&lab, &["node1", "node2"], &default_ipip_pool()).unwrap();
    fifty_adds_then_dels(&cp);
}

#[test]
fn on_etcd_fifty_concurrent_adds_then_dels_across_two_nodes() {
    if skip_unless_root("on_etcd_fifty_concurrent_adds_then_dels_across_two_nodes") {
        return;
    }
    let lab = Lab::new().unwrap();
    let etcd = EtcdCluster::start(&lab, 3).unwrap();
    let cp =
        ControlPlane::with_pool_on_etcd(&lab, &etcd, &["node1", "node2"], &default_ipip_pool())
            .unwrap();
    fifty_adds_then_dels(&cp);
}

/// The scenario of the module documentation, on `cp` (two nodes with a pool).
fn fifty_adds_then_dels(cp: &ControlPlane<'_>) {
    // One pod per node that every new pod pings.
    let probes = cp
        .add_pods([("node1", "probe-1"), ("node2", "probe-2")])
        .unwrap();
    wait_reachable(&probes[0], probes[1].ip, REACHABLE_WITHIN).unwrap();

    let node_of = |i: usize| if i % 2 == 0 { "node1" } else { "node2" };
    // The runtime creates sandboxes before calling CNI; that is not part of the latency.
    let sandboxes: Vec<Sandbox> = (0..PODS)
        .map(|i| cp.sandbox(&format!("p{i:02}")).unwrap())
        .collect();

    let started = Instant::now();
    let added: Vec<Added> = in_parallel(PODS, |i| {
        let node = node_of(i);
        let peer = &probes[if node == "node1" { 1 } else { 0 }];
        let t0 = Instant::now();
        let added = cp.cni_add(node, &sandboxes[i]).unwrap();
        let ip = peer.ip.to_string();
        // Every 10 ms until the first reply, for at most 10 s.
        let out = added
            .pod
            .netns()
            .exec_output(
                &["ping", "-n", "-q", "-c", "1", "-i", "0.01", "-w", "10", &ip],
                Duration::from_secs(20),
            )
            .unwrap();
        assert!(
            out.status.success(),
            "{} ({}) never reached {ip}: {}",
            added.pod.name,
            added.pod.ip,
            out.stdout
        );
        Added {
            ready: t0.elapsed(),
            add: added.add_elapsed,
            pod: added.pod,
        }
    });
    let all_added = started.elapsed();

    // Unique addresses, each on its pod's eth0.
    let mut ips = BTreeSet::new();
    for a in added.iter().map(|a| &a.pod).chain(&probes) {
        assert!(ips.insert(a.ip), "{} was given twice", a.ip);
        let addr = a.exec(&["ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
        assert!(
            addr.contains(&format!("inet {}/32", a.ip)),
            "{}: {addr}",
            a.name
        );
    }
    let endpoints = cp.workload_endpoints().unwrap();
    assert_eq!(endpoints.len(), PODS + 2);
    let table = cp
        .ctl("node2")
        .unwrap()
        .table(&["get", "workloadendpoints"])
        .unwrap();
    assert_eq!(table.rows.len(), PODS + 2, "{table:?}");
    for node in ["node1", "node2"] {
        let pods = added.iter().filter(|a| a.pod.node == node).count();
        assert_eq!(pods, PODS / 2, "pods on {node}");
    }

    let mut ready: Vec<Duration> = added.iter().map(|a| a.ready).collect();
    let mut plugin: Vec<Duration> = added.iter().map(|a| a.add).collect();
    ready.sort();
    plugin.sort();
    eprintln!(
        "{PODS} CNI ADDs on 2 nodes from {THREADS} threads in {all_added:.2?}: \
         ADD until the pod's ping to the other node is answered: p50 {:.0?}, p99 {:.0?}, \
         max {:.0?}; the plugin's ADD alone: p50 {:.0?}, p99 {:.0?}",
        quantile(&ready, 0.5),
        quantile(&ready, 0.99),
        ready[ready.len() - 1],
        quantile(&plugin, 0.5),
        quantile(&plugin, 0.99),
    );

    // 50 DELs, concurrently.
    let started = Instant::now();
    let dels = in_parallel(PODS, |i| cp.del_pod(&format!("p{i:02}")).unwrap());
    for del in &dels {
        assert!(del.succeeded(), "DEL failed: {:?}", del.output);
    }
    eprintln!("{PODS} CNI DELs in {:.2?}", started.elapsed());
    for sandbox in &sandboxes {
        let left = sandbox.netns.interfaces_besides_lo().unwrap();
        assert!(left.is_empty(), "{} still has {left:?}", sandbox.name);
    }
    let endpoints = cp.workload_endpoints().unwrap();
    let names: Vec<&str> = endpoints.iter().map(|e| e.spec.workload.as_str()).collect();
    assert_eq!(names, ["probe-1", "probe-2"], "workload endpoints left");
    let handles = cp.ipam_handles().unwrap();
    assert_eq!(handles.len(), 2, "IPAM handles left: {handles:?}");
    let blocks = cp.ipam_blocks().unwrap();
    let allocated: usize = blocks.iter().map(|(_, _, n)| n).sum();
    assert_eq!(allocated, 2, "addresses left allocated: {blocks:?}");
    assert!(
        blocks.iter().all(|(_, _, n)| *n > 0),
        "empty blocks were not released: {blocks:?}"
    );
    // The probes still talk.
    wait_reachable(&probes[0], probes[1].ip, Duration::from_secs(5)).unwrap();

    // DEL twice, and DEL of something never added: both succeed.
    let again = cp.cni_del("node1", &sandboxes[0].args, None).unwrap();
    assert!(again.succeeded(), "a second DEL failed: {:?}", again.output);
    let never = CniArgs {
        container_id: cp.container_id("never-added"),
        netns: String::new(),
        ifname: "eth0".into(),
        pod: Some((POD_NAMESPACE.into(), "never-added".into())),
    };
    for node in ["node1", "node2"] {
        let run = cp.cni_del(node, &never, None).unwrap();
        assert!(
            run.succeeded(),
            "DEL without ADD failed on {node}: {:?}",
            run.output
        );
    }

    // The probes go too: nothing at all is left.
    for probe in ["probe-1", "probe-2"] {
        let del = cp.del_pod(probe).unwrap();
        assert!(del.succeeded(), "{:?}", del.output);
    }
    assert!(cp.workload_endpoints().unwrap().is_empty());
    assert!(cp.ipam_handles().unwrap().is_empty());
    assert!(
        cp.ipam_blocks().unwrap().is_empty(),
        "{:?}",
        cp.ipam_blocks().unwrap()
    );
    cp.check_running().unwrap();
}
