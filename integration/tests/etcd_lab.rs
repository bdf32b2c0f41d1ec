//! The lab's etcd cluster ([`EtcdCluster`]): three members of Debian's etcd in their own
//! namespaces on the underlay, with mutual TLS, as tapwire-control's etcd datastore
//! will use it.
//!
//! - From the namespace of a node running tapwire-dataplane and tapwire-control, across
//!   the underlay router, etcdctl with the lab's client certificate writes and reads a
//!   key; without a client certificate, or with one from another CA, it is refused,
//!   writes nothing, and the members log the rejected handshakes.
//! - Killing the leader (SIGKILL) gets a new leader within a few seconds, and writes go
//!   on; the old leader, started again, rejoins with its data and catches up.
//! - With every member stopped, etcdctl fails within its bounds; started again, the
//!   cluster still holds everything written.
//! - At the end, no namespace, process or file of the lab is left.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use tapwire_integration::{skip_unless_root, ControlPlane, EtcdCluster, Lab, Netns};

/// How long a new leader may take after the old one is killed: the election timeout
/// (randomised to 1-2 s) plus a vote, with room for a split vote on a busy machine.
const FAILOVER_WITHIN: Duration = Duration::from_secs(6);
/// How long etcdctl may take to give up when no member runs (dial 1 s, request 3 s).
const FAIL_FAST_WITHIN: Duration = Duration::from_secs(6);

/// `etcdctl get --print-value-only KEY` from `netns` with the client certificate.
fn get(etcd: &EtcdCluster<'_>, netns: &Netns, key: &str) -> String {
    let out = etcd
        .etcdctl_from(netns, &["get", "--print-value-only", key])
        .unwrap()
        .success()
        .unwrap();
    out.trim().to_string()
}

fn put(etcd: &EtcdCluster<'_>, netns: &Netns, key: &str, value: &str) {
    let out = etcd
        .etcdctl_from(netns, &["put", key, value])
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(out.trim(), "OK", "etcdctl put {key}");
}

/// The lab's namespaces, processes and directory are gone.
fn assert_nothing_left(prefix: &str, pids: &[u32]) {
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&namespaces.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    for pid in pids {
        // A recycled PID would belong to something else; ours ran etcd.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("etcd"),
            "etcd (pid {pid}) still runs"
        );
    }
    let dir = std::env::temp_dir().join(prefix);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn a_node_reaches_the_etcd_cluster_with_mutual_tls_and_nothing_else_gets_in() {
    if skip_unless_root("a_node_reaches_the_etcd_cluster_with_mutual_tls_and_nothing_else_gets_in")
    {
        return;
    }
    let (prefix, pids) = {
        let lab = Lab::new().unwrap();
        let started = Instant::now();
        let etcd = EtcdCluster::start(&lab, 3).unwrap();
        eprintln!("3 etcd members healthy after {:?}", started.elapsed());
        assert_eq!(
            etcd.endpoints(),
            [
                "https://192.168.254.1:2379",
                "https://192.168.254.2:2379",
                "https://192.168.254.3:2379"
            ]
        );
        for key in [&etcd.tls().key_file, &lab.dir().join("etcd/ca.key")] {
            let mode = std::fs::metadata(key).unwrap().permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o600,
                "{}",
                key.display()
            );
        }
        let toml = etcd.datastore_toml();
        assert!(toml.starts_with("[datastore]\nkind = \"etcd\"\n"), "{toml}");
        assert!(toml.contains("\"https://192.168.254.3:2379\"]"), "{toml}");

        // A node running tapwire's dataplane and control (file datastore for now), in
        // another underlay subnet: the requests cross the underlay router.
        let cp = ControlPlane::new(&lab).unwrap();
        let node = cp.add_node_in_subnet("node1", 1).unwrap();
        put(&etcd, node.netns(), "/tapwire/lab/k1", "v1");
        assert_eq!(get(&etcd, node.netns(), "/tapwire/lab/k1"), "v1");

        // Mutual TLS: no client certificate, or one from another CA, gets nothing.
        let rogue = etcd.untrusted_client().unwrap();
        for (what, tls) in [
            ("no client certificate", None),
            ("another CA's", Some(&rogue)),
        ] {
            let began = Instant::now();
            let out = etcd
                .etcdctl_with(node.netns(), tls, &["put", "/tapwire/lab/intruder", what])
                .unwrap();
            eprintln!(
                "{what}: refused after {:?}: {}",
                began.elapsed(),
                out.stderr.trim()
            );
            assert!(!out.status.success(), "{what}: the put succeeded");
        }
        assert_eq!(get(&etcd, node.netns(), "/tapwire/lab/intruder"), "");
        // ... refused by the members' TLS, as their logs say.
        let logs: String = (0..etcd.len())
            .map(|i| etcd.member_log(i).unwrap())
            .collect();
        let rejected = |reason: &str| {
            logs.lines().any(|l| {
                l.contains("rejected connection")
                    && l.contains(&format!("\"remote-addr\":\"{}:", node.underlay_ip))
                    && l.contains(reason)
            })
        };
        assert!(
            rejected("tls: client didn't provide a certificate"),
            "{logs}"
        );
        assert!(
            rejected("certificate signed by unknown authority"),
            "{logs}"
        );

        let pids: Vec<u32> = (0..etcd.len())
            .map(|i| etcd.pid(i).unwrap().expect("member runs"))
            .collect();
        (lab.prefix().to_string(), pids)
    };
    assert_nothing_left(&prefix, &pids);
}

#[test]
fn the_etcd_cluster_survives_losing_its_leader_and_a_full_restart() {
    if skip_unless_root("the_etcd_cluster_survives_losing_its_leader_and_a_full_restart") {
        return;
    }
    let (prefix, pids) = {
        let lab = Lab::new().unwrap();
        let started = Instant::now();
        let etcd = EtcdCluster::start(&lab, 3).unwrap();
        eprintln!("3 etcd members healthy after {:?}", started.elapsed());
        let node = lab.add_node("node1").unwrap();
        put(&etcd, node.netns(), "/tapwire/lab/before", "1");

        // The leader crashes: the other two elect a new one and take writes.
        let old = etcd.leader().unwrap().expect("a leader");
        let killed = Instant::now();
        etcd.kill_member(old).unwrap();
        let new = etcd.wait_for_leader(FAILOVER_WITHIN).unwrap();
        eprintln!(
            "leader etcd{} killed; etcd{} leads after {:?}",
            old + 1,
            new + 1,
            killed.elapsed()
        );
        assert_ne!(new, old);
        put(&etcd, node.netns(), "/tapwire/lab/during", "2");
        eprintln!(
            "first write after the kill done {:?} after it",
            killed.elapsed()
        );

        // The old leader comes back with its data and catches up.
        let restarted = Instant::now();
        etcd.start_member(old).unwrap();
        eprintln!(
            "etcd{} healthy again after {:?}",
            old + 1,
            restarted.elapsed()
        );
        let local = etcd
            .etcdctl_at(
                old,
                &[
                    "get",
                    "--consistency=s",
                    "--print-value-only",
                    "/tapwire/lab/during",
                ],
            )
            .unwrap();
        assert_eq!(local.trim(), "2", "the restarted member's own copy");

        // Everything down: clients fail within their bounds, not hang.
        etcd.stop_all().unwrap();
        for i in 0..etcd.len() {
            assert!(!etcd.is_running(i).unwrap());
        }
        assert_eq!(etcd.leader().unwrap(), None);
        let began = Instant::now();
        let out = etcd
            .etcdctl_from(node.netns(), &["get", "/tapwire/lab/before"])
            .unwrap();
        let took = began.elapsed();
        eprintln!(
            "with every member stopped, etcdctl failed after {took:?}: {}",
            out.stderr.trim()
        );
        assert!(!out.status.success());
        assert!(took < FAIL_FAST_WITHIN, "etcdctl took {took:?} to fail");

        // Everything up again: the data is still there.
        let restarted = Instant::now();
        etcd.start_all().unwrap();
        eprintln!("full restart healthy after {:?}", restarted.elapsed());
        assert_eq!(get(&etcd, node.netns(), "/tapwire/lab/before"), "1");
        assert_eq!(get(&etcd, node.netns(), "/tapwire/lab/during"), "2");
        assert!(etcd.leader().unwrap().is_some());

        let pids: Vec<u32> = (0..etcd.len())
            .map(|i| etcd.pid(i).unwrap().expect("member runs"))
            .collect();
        (lab.prefix().to_string(), pids)
    };
    assert_nothing_left(&prefix, &pids);
}

/// The lab refuses to put a node where the etcd members live.
#[test]
fn nodes_cannot_join_the_etcd_subnet() {
    if skip_unless_root("nodes_cannot_join_the_etcd_subnet") {
        return;
    }
    let lab = Lab::new().unwrap();
    let err = lab
        .add_node_in_subnet("node1", tapwire_integration::lab::ETCD_SUBNET)
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert!(!Path::new(&format!("/var/run/netns/{}-node1", lab.prefix())).exists());
}
