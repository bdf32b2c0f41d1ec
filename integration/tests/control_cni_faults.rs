//! CNI calls when something is wrong on the node — each used to answer success for a pod
//! that had no traffic, or to leave the node half-changed:
//!
//! - the dataplane is down: CHECK of a running pod fails ("not served"), and an ADD fails
//!   with code 11 (try again later) once its wait is over, leaving nothing behind; with
//!   the dataplane back, CHECK passes and the same ADD succeeds with traffic;
//! - `CNI_NETNS` names the node's own namespace (`/proc/self/ns/net` as the agent sees it,
//!   or the agent's namespace by PID): refused, nothing created on the node;
//! - DEL while the datastore refuses writes: fails and leaves the pod whole (interface and
//!   traffic), so the runtime's retry finds it; the retry once the store is writable
//!   removes everything; the dataplane lets go of the pod before its TAP is removed (no
//!   EBADFD in its log).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tapwire_integration::check::{
    assert_failed_add_left_nothing, assert_nothing_recorded, assert_pings, REACHABLE_WITHIN,
};
use tapwire_integration::cni::{CniArgs, CniCommand, PluginRun};
use tapwire_integration::controlplane::{default_ipip_pool, POD_NAMESPACE};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab};

/// Asserts that a CNI call failed with an error object whose text holds every `needle`.
#[track_caller]
fn assert_cni_error(run: &PluginRun, what: &str, code: u64, needles: &[&str]) {
    assert!(!run.succeeded(), "{what} succeeded: {:?}", run.output);
    let error = run
        .error_object()
        .unwrap_or_else(|| panic!("{what}: no CNI error object: {:?}", run.output));
    eprintln!(
        "{what}: code {} {:?} {:?}",
        error.code, error.msg, error.details
    );
    assert_eq!(error.code, code, "{what}: {error:?}");
    let text = format!("{} {}", error.msg, error.details);
    for needle in needles {
        assert!(text.contains(needle), "{what}: {needle:?} not in {text:?}");
    }
}

#[test]
fn pods_are_added_and_checked_only_while_the_dataplane_serves_them() {
    if skip_unless_root("pods_are_added_and_checked_only_while_the_dataplane_serves_them") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods(&lab).unwrap();
    let run = cp.cni_check("node1", "pod-a").unwrap();
    assert!(run.succeeded(), "CHECK of a served pod: {:?}", run.output);

    cp.stop_dataplane("node1").unwrap();
    let run = cp.cni_check("node1", "pod-a").unwrap();
    assert_cni_error(&run, "CHECK with the dataplane down", 104, &["not served"]);

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
    assert_cni_error(
        &run,
        "ADD with the dataplane down",
        11,
        &["dataplane", "retry"],
    );
    assert!(
        took < Duration::from_secs(15),
        "the failing ADD took {took:?}"
    );
    assert_failed_add_left_nothing(&cp, &sandbox);

    cp.start_dataplane("node1").unwrap();
    cp.wait_ready("node1", Duration::from_secs(20)).unwrap();
    wait_reachable(&a, c.ip, Duration::from_secs(10)).unwrap();
    let run = cp.cni_check("node1", "pod-a").unwrap();
    assert!(
        run.succeeded(),
        "CHECK once the dataplane is back: {:?}",
        run.output
    );
    let b = cp.cni_add("node1", &sandbox).unwrap().pod;
    wait_reachable(&b, c.ip, REACHABLE_WITHIN).unwrap();
    assert_pings(&c, &b, 3);
}

#[test]
fn the_nodes_own_namespace_is_not_a_pod_namespace() {
    if skip_unless_root("the_nodes_own_namespace_is_not_a_pod_namespace") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_pool(&lab, &["node1"], &default_ipip_pool()).unwrap();
    let node = cp.node("node1").unwrap();
    let interfaces_before = node.netns().interfaces_besides_lo().unwrap();
    let control_pid = cp.control_pid("node1").unwrap().unwrap();
    let runtime = cp.runtime("node1").unwrap();
    let conf = cp.network_conf("node1").unwrap();
    for (n, netns) in [
        "/proc/self/ns/net".to_string(),
        format!("/proc/{control_pid}/ns/net"),
    ]
    .into_iter()
    .enumerate()
    {
        let args = CniArgs {
            container_id: cp.container_id(&format!("hostns{n}")),
            netns: netns.clone(),
            ifname: "pod0".into(),
            pod: Some((POD_NAMESPACE.into(), format!("hostns{n}"))),
        };
        let run = runtime.exec(CniCommand::Add, &conf, &args).unwrap();
        assert_cni_error(
            &run,
            &format!("ADD into {netns}"),
            4,
            &["node's own network namespace"],
        );
        assert_nothing_recorded(&cp, &args.container_id);
    }
    assert_eq!(
        node.netns().interfaces_besides_lo().unwrap(),
        interfaces_before,
        "an interface was made in the node's namespace"
    );
    // The node routes the pool through the host path TAP (via 169.254.1.1 dev
    // tapwire0); nothing else may name the pods' gateway.
    let routes = node.netns().exec(&["ip", "-4", "route"]).unwrap();
    assert!(
        routes
            .lines()
            .all(|route| !route.contains("169.254.1.1") || route.contains("dev tapwire0")),
        "a pod route on the node: {routes}"
    );
}

/// Makes a directory immutable (`chattr +i`) until dropped: even root cannot create,
/// rename or remove files in it, as with a datastore that refuses every write.
struct Immutable(PathBuf);

impl Immutable {
    fn new(dir: &Path) -> Immutable {
        let out = Command::new("chattr").arg("+i").arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "chattr +i {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_del_the_datastore_refuses_leaves_the_pod_whole_and_its_retry_removes_everything() {
    if skip_unless_root(
        "a_del_the_datastore_refuses_leaves_the_pod_whole_and_its_retry_removes_everything",
    ) {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, c]) = ControlPlane::two_nodes_two_pods(&lab).unwrap();
    let added = cp.cni_pod("pod-a").unwrap();

    {
        let _frozen = Immutable::new(cp.datastore_dir().unwrap());
        let run = cp
            .cni_del("node1", &added.args, Some(&added.result))
            .unwrap();
        assert!(
            !run.succeeded(),
            "DEL succeeded on a frozen store: {:?}",
            run.output
        );
        eprintln!("DEL on a frozen store: {:?}", run.error_object());
        assert_eq!(
            a.netns().interfaces_besides_lo().unwrap(),
            ["eth0"],
            "the failed DEL removed the pod's interface"
        );
        assert_pings(&a, &c, 2);
    }

    let log_before = cp.dataplane_log("node1").unwrap().len();
    let run = cp
        .cni_del("node1", &added.args, Some(&added.result))
        .unwrap();
    assert!(run.succeeded(), "the retried DEL: {:?}", run.output);
    assert!(a.netns().interfaces_besides_lo().unwrap().is_empty());
    assert_nothing_recorded(&cp, &added.args.container_id);
    std::thread::sleep(Duration::from_millis(300));
    let log = cp.dataplane_log("node1").unwrap();
    let after_del = &log[log_before..];
    assert!(
        !after_del.contains("os error 77"),
        "the dataplane read a deleted TAP: {after_del}"
    );
    cp.check_running().unwrap();
}

#[test]
fn the_configured_mtu_is_the_pods_and_more_than_the_tunnel_allows_is_refused() {
    if skip_unless_root("the_configured_mtu_is_the_pods_and_more_than_the_tunnel_allows_is_refused")
    {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_pool(&lab, &["node1"], &default_ipip_pool()).unwrap();
    let add_with_mtu = |mtu: u32, sandbox: &tapwire_integration::controlplane::Sandbox| {
        let mut conf = cp.network_conf("node1").unwrap();
        conf["mtu"] = mtu.into();
        cp.runtime("node1")
            .unwrap()
            .exec(CniCommand::Add, &conf, &sandbox.args)
            .unwrap()
    };
    // IPIP on a 1500-byte underlay leaves 1480: asking for more is refused, not clamped.
    let sandbox = cp.sandbox("pod-big").unwrap();
    let run = add_with_mtu(1500, &sandbox);
    assert_cni_error(
        &run,
        "ADD with mtu 1500",
        7,
        &["mtu 1500", "at most 1480", "ipip"],
    );
    assert_failed_add_left_nothing(&cp, &sandbox);

    // Less is what the pod gets.
    let sandbox = cp.sandbox("pod-small").unwrap();
    let result = add_with_mtu(1400, &sandbox).into_result().unwrap();
    let pod = cp
        .record_pod("node1", &sandbox, result, Duration::ZERO)
        .unwrap()
        .pod;
    assert_eq!(pod.mtu_bytes, 1400);
    // Without the key, the largest.
    let default = cp.add_pod("node1", "pod-default").unwrap();
    assert_eq!(default.mtu_bytes, 1480);
    assert_pings(&pod, &default, 2);
}
