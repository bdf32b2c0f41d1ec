//! The state thread's handling of pod TAPs that go away under it, against real TAPs in a
//! scratch namespace (root only; skipped otherwise). No worker threads run: the tests play
//! the workers' part by handing the state thread the events they would send.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use tapwire_proto::{from_dataplane::Payload, FrameReader, FromDataplane, WorkloadEndpointId};
use tapwire_sys::testing::{is_root, ScratchNetns};
use tapwire_sys::{netns, tap};

use super::*;
use crate::counters::WorkerCounters;
use crate::io::{queue_attached, Poller};
use crate::state::build_tables;

const KEY: &str = "k8s/default.pa/eth0";

/// A state thread with `workers` worker handles (pollers, no threads) and a control
/// connection whose other end is returned, to read what the dataplane reports.
fn dataplane(workers: usize) -> (Dataplane, UnixStream) {
    let underlay = Underlay {
        ip: Ipv4Addr::new(192, 0, 2, 1),
        mac: [0x02, 0, 0, 0, 0, 1],
        mtu_bytes: 1500,
        vxlan_port: 4789,
        host_path: None,
    };
    let handles = (0..workers)
        .map(|_| {
            Arc::new(WorkerHandle {
                poller: Poller::new().unwrap(),
                counters: WorkerCounters::default(),
            })
        })
        .collect();
    let tables = build_tables(
        &Desired::default(),
        &underlay,
        &BTreeMap::new(),
        &HashMap::new(),
    );
    let snapshot = Rcu::new(Snapshot {
        tables,
        pods: Vec::new(),
    });
    let (resolver, _) = mpsc::channel();
    let mut dp = Dataplane::new(underlay, handles, snapshot, resolver);
    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    dp.conn = Some((1, ours));
    (dp, theirs)
}

fn endpoint(ns: &ScratchNetns) -> EndpointSpec {
    let net: crate::fib::Prefix = "10.65.0.2/32".parse().unwrap();
    EndpointSpec {
        key: KEY.into(),
        id: WorkloadEndpointId {
            orchestrator_id: "k8s".into(),
            workload_id: "default.pa".into(),
            endpoint_id: "eth0".into(),
        },
        netns: ns.path().to_path_buf(),
        ifname: "eth0".into(),
        mac: None,
        nets: vec![net],
        allowed_sources: vec![net],
    }
}

fn create_tap(ns: &ScratchNetns) {
    netns::run_in_netns(ns.path(), || tap::create_persistent("eth0")).unwrap();
}

/// The endpoint statuses control was sent since the last call ("up", "down", "removed").
fn statuses(control: &UnixStream) -> Vec<String> {
    let mut reader = FrameReader::new(control);
    let mut out = Vec::new();
    while let Ok(Some(msg)) = reader.next::<FromDataplane>() {
        match msg.payload {
            Some(Payload::WorkloadEndpointStatusUpdate(u)) => {
                out.push(u.status.map(|s| s.status).unwrap_or_default());
            }
            Some(Payload::WorkloadEndpointStatusRemove(_)) => out.push("removed".into()),
            _ => {}
        }
    }
    out
}

fn attachment(dp: &Dataplane) -> (u32, u32) {
    let att = dp.attached.get(KEY).expect("attached");
    (att.info.slot, att.pod.generation)
}

#[test]
fn a_dead_queue_reported_by_every_worker_detaches_once_and_reattaches_when_the_tap_is_back() {
    if !is_root() {
        return;
    }
    let ns = ScratchNetns::new("twdp").unwrap();
    create_tap(&ns);
    let (mut dp, control) = dataplane(2);
    dp.live.endpoints.insert(KEY.into(), endpoint(&ns));
    dp.attach(KEY);
    assert_eq!(statuses(&control), ["up"]);
    let (slot, generation) = attachment(&dp);
    let old = Arc::clone(&dp.attached[KEY].pod);
    assert!(old.queues.iter().all(queue_attached));

    ns.ip(&["link", "del", "eth0"]).unwrap();
    assert!(
        !old.queues.iter().any(queue_attached),
        "queues of a deleted TAP"
    );
    // Both workers report it; only the first report changes anything.
    for worker in 0..2 {
        let dead = DeadQueue {
            slot,
            generation,
            worker,
            errno: Some(libc::EBADFD),
        };
        assert_eq!(
            dp.handle(Event::QueueDead(dead)),
            worker == 0,
            "worker {worker}"
        );
    }
    assert!(!dp.attached.contains_key(KEY));
    assert!(dp.unattached.contains_key(KEY));
    assert_eq!(statuses(&control), ["down"]);

    // Retried while there is no TAP: quietly.
    assert!(!dp.retry_unattached());
    assert!(statuses(&control).is_empty());

    // A new TAP of the same name (CNI ADD again): attached at the next retry.
    create_tap(&ns);
    assert!(dp.retry_unattached());
    assert_eq!(statuses(&control), ["up"]);
    let (_, new_generation) = attachment(&dp);
    assert_ne!(new_generation, generation);
    assert!(dp.attached[KEY].pod.queues.iter().all(queue_attached));
    assert!(dp.unattached.is_empty());

    // A late report about the old attachment is stale.
    let late = DeadQueue {
        slot,
        generation,
        worker: 1,
        errno: Some(libc::EBADFD),
    };
    assert!(!dp.handle(Event::QueueDead(late)));
    assert!(dp.attached.contains_key(KEY));
    assert!(statuses(&control).is_empty());

    // Control removes the endpoint: its status is withdrawn.
    dp.live.endpoints.remove(KEY);
    dp.detach(KEY);
    assert_eq!(statuses(&control), ["removed"]);
}

#[test]
fn a_resync_attaches_again_a_tap_replaced_before_any_worker_noticed() {
    if !is_root() {
        return;
    }
    let ns = ScratchNetns::new("twdp").unwrap();
    create_tap(&ns);
    let (mut dp, control) = dataplane(2);
    dp.live.endpoints.insert(KEY.into(), endpoint(&ns));
    dp.reconcile_endpoints();
    assert_eq!(statuses(&control), ["up"]);
    let (_, generation) = attachment(&dp);

    // Unchanged TAP: a resync keeps the queues.
    dp.reconcile_endpoints();
    assert_eq!(statuses(&control), ["up"]);
    assert_eq!(attachment(&dp).1, generation);

    ns.ip(&["link", "del", "eth0"]).unwrap();
    create_tap(&ns);
    dp.reconcile_endpoints();
    assert_eq!(statuses(&control), ["down", "up"]);
    assert_ne!(attachment(&dp).1, generation);
    assert!(dp.attached[KEY].pod.queues.iter().all(queue_attached));

    // Deleted and not back yet: down, and retried.
    ns.ip(&["link", "del", "eth0"]).unwrap();
    dp.reconcile_endpoints();
    assert_eq!(statuses(&control), ["down"]);
    assert!(dp.unattached.contains_key(KEY));
    assert!(!dp.attached.contains_key(KEY));
}

#[test]
fn loopback_is_a_virtual_device_where_partial_checksums_may_leave() {
    // `lo` has no `device` link in sysfs, as veths and bridges have none.
    assert!(super::startup::is_virtual_device("lo"));
}
