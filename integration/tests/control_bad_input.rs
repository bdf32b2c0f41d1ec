//! Bad input to the control plane gets a clear error and changes nothing:
//!
//! - `tapwirectl apply -f` with invalid YAML, a bad CIDR, an unknown key, a pool
//!   overlapping the existing one, a pool inside 169.254.0.0/16, a pool with both IPIP and
//!   VXLAN enabled: each fails (non-zero exit) with a message naming the problem; the
//!   stored pools (`tapwirectl get ippools -o yaml`) are byte for byte what they were and
//!   the running pods still ping each other across nodes.
//! - `tapwire-control` with a node.toml holding an unknown key, or broken TOML: exits
//!   non-zero naming the file and the key.
//! - CNI ADD into a network namespace that does not exist, with an interface name the
//!   kernel refuses, or into a namespace that already has an `eth0`: a CNI error object
//!   and a non-zero exit; no TAP left in the pod's namespace (and its own `eth0` left
//!   alone), no IPAM handle or workload endpoint recorded for it.
//! - An exhausted pool (a /30 with /30 blocks: four addresses): the fifth pod's ADD fails
//!   with "no free pod address", leaves nothing behind, and the four pods keep working;
//!   once one is deleted, the address is reused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use tapwire_integration::check::{
    assert_failed_add_left_nothing, assert_nothing_recorded, assert_pings,
    assert_pings_once_reachable, REACHABLE_WITHIN,
};
use tapwire_integration::cni::{CniArgs, CniCommand, CniErrorObject, PluginRun};
use tapwire_integration::controlplane::{
    default_ipip_pool, ippool_yaml, DEFAULT_POOL_NAME, POD_NAMESPACE,
};
use tapwire_integration::lab::binary;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab, Pod};

/// Asserts that a CNI ADD (`what`) failed with a CNI error object, and returns it.
fn failed_add(run: &PluginRun, what: &str) -> CniErrorObject {
    assert!(!run.succeeded(), "{what} succeeded: {:?}", run.output);
    let error = run
        .error_object()
        .unwrap_or_else(|| panic!("no CNI error object on stdout: {:?}", run.output));
    eprintln!(
        "{what}: code {} {:?} {:?}",
        error.code, error.msg, error.details
    );
    error
}

#[test]
fn bad_documents_configs_and_cni_calls_fail_clearly_and_change_nothing() {
    if skip_unless_root("bad_documents_configs_and_cni_calls_fail_clearly_and_change_nothing") {
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_pool(&lab, &["node1", "node2"], &default_ipip_pool()).unwrap();
    let ctl = cp.ctl("node1").unwrap();
    let [a, c] = cp
        .add_pods([("node1", "pod-a"), ("node2", "pod-c")])
        .unwrap();
    wait_reachable(&a, c.ip, REACHABLE_WITHIN).unwrap();
    let pools_before = ctl.get_yaml("ippools", None).unwrap();
    let handles_before = cp.ipam_handles().unwrap();
    let blocks_before = cp.ipam_blocks().unwrap();

    let pool =
        |name: &str, cidr: &str, ipip: &str, vxlan: &str| ippool_yaml(name, cidr, 26, ipip, vxlan);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "invalid YAML",
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: broken\n\
             spec: [cidr: 10.70.0.0/16\n"
                .to_string(),
            vec!["invalid YAML"],
        ),
        (
            "a CIDR with a /33 prefix",
            pool("bad-cidr", "10.70.0.0/33", "Always", "Never"),
            vec!["invalid CIDR", "10.70.0.0/33"],
        ),
        (
            "a CIDR with host bits",
            pool("host-bits", "10.70.0.1/16", "Always", "Never"),
            vec!["host bits", "10.70.0.1/16"],
        ),
        (
            "an unknown key",
            pool("typo", "10.70.0.0/16", "Always", "Never").replace("ipipMode", "ipipMood"),
            vec!["ipipMood"],
        ),
        (
            "a pool overlapping the existing one",
            pool("overlap", "10.65.128.0/17", "Always", "Never"),
            vec!["overlaps", DEFAULT_POOL_NAME],
        ),
        (
            "a pool inside 169.254.0.0/16",
            pool("link-local", "169.254.0.0/24", "Always", "Never"),
            vec!["169.254.0.0/16", "link-local"],
        ),
        (
            "both encapsulations enabled",
            pool("both", "10.70.0.0/16", "Always", "Always"),
            vec!["both enabled"],
        ),
        (
            "a mode change that also changes the CIDR",
            pool(DEFAULT_POOL_NAME, "10.65.0.0/17", "Never", "Never"),
            vec!["cannot change", "10.65.0.0/16"],
        ),
    ];
    for (what, documents, expected) in &cases {
        let out = ctl.apply(documents).unwrap();
        let said = format!("{}{}", out.stdout, out.stderr);
        eprintln!("{what}: tapwirectl apply said: {}", said.trim());
        assert!(!out.status.success(), "{what} was accepted: {said}");
        for phrase in expected {
            assert!(said.contains(phrase), "{what}: no {phrase:?} in: {said}");
        }
        assert_eq!(
            ctl.get_yaml("ippools", None).unwrap(),
            pools_before,
            "{what} changed the stored pools"
        );
    }
    assert_pings(&a, &c, 3);
    assert_pings(&c, &a, 3);

    // tapwire-control with a bad node.toml: a non-zero exit naming the file and the key.
    let good = std::fs::read_to_string(cp.config_path("node1").unwrap()).unwrap();
    let control = binary("tapwire-control").unwrap();
    for (what, text, expected) in [
        (
            "an unknown key",
            good.replace("underlay_interface", "underlay_iface"),
            "underlay_iface",
        ),
        (
            "an unknown key in [datastore]",
            good.replace("kind = \"file\"", "kind = \"file\"\ndirectory = \"/tmp\""),
            "directory",
        ),
        (
            "broken TOML",
            good.replace("node = \"node1\"", "node = \"node1"),
            "node1.bad.toml",
        ),
    ] {
        let path = lab.dir().join("node1.bad.toml");
        std::fs::write(&path, &text).unwrap();
        let mut cmd = Command::new(&control);
        cmd.arg("--config").arg(&path);
        let out = lab.run(cmd, None, Duration::from_secs(10)).unwrap();
        eprintln!("node.toml with {what}: {}", out.stderr.trim());
        assert!(!out.status.success(), "{what}: tapwire-control started");
        assert!(
            out.stderr.contains(expected),
            "{what}: no {expected:?} in: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&path.display().to_string()),
            "{what}: the file is not named: {}",
            out.stderr
        );
    }
    cp.check_running().unwrap();

    // CNI ADD into a namespace that does not exist.
    let runtime = cp.runtime("node1").unwrap();
    let conf = cp.network_conf("node1").unwrap();
    let ghost = CniArgs {
        container_id: cp.container_id("ghost"),
        netns: format!("/var/run/netns/{}-ghost", lab.prefix()),
        ifname: "eth0".into(),
        pod: Some((POD_NAMESPACE.into(), "ghost".into())),
    };
    let run = runtime.exec(CniCommand::Add, &conf, &ghost).unwrap();
    let error = failed_add(&run, "ADD into a missing netns");
    assert!(error.code > 0);
    assert!(
        error.msg.contains("namespace") || error.details.contains("namespace"),
        "{error:?}"
    );
    assert!(
        format!("{} {}", error.msg, error.details).contains(&ghost.netns),
        "the error does not name the netns: {error:?}"
    );
    assert_nothing_recorded(&cp, &ghost.container_id);

    // CNI ADD with an interface name the kernel refuses (16 bytes): fails after IPAM
    // assigned an address, which must be given back.
    let sandbox = cp.sandbox("pod-x").unwrap();
    let bad_if = CniArgs {
        ifname: "eth0-far-too-long".into(),
        ..sandbox.args.clone()
    };
    let run = runtime.exec(CniCommand::Add, &conf, &bad_if).unwrap();
    let error = failed_add(&run, "ADD with a 17-byte ifname");
    assert!(
        format!("{} {}", error.msg, error.details).contains("eth0-far-too-long"),
        "the error does not name the interface: {error:?}"
    );
    assert_failed_add_left_nothing(&cp, &sandbox);

    // CNI ADD into a namespace that already has an `eth0` (not ours): fails after IPAM
    // assigned an address, which must be given back; the existing device is left alone.
    sandbox
        .netns
        .exec(&["ip", "link", "add", "eth0", "type", "bridge"])
        .unwrap();
    let run = runtime.exec(CniCommand::Add, &conf, &sandbox.args).unwrap();
    let error = failed_add(&run, "ADD over an existing eth0");
    assert!(
        format!("{} {}", error.msg, error.details).contains("eth0"),
        "the error does not name the interface: {error:?}"
    );
    let link = sandbox
        .netns
        .exec(&["ip", "-d", "link", "show", "eth0"])
        .unwrap();
    assert!(
        link.contains("bridge"),
        "the pod's own eth0 was replaced: {link}"
    );
    assert_eq!(sandbox.netns.interfaces_besides_lo().unwrap(), ["eth0"]);
    assert_nothing_recorded(&cp, &sandbox.args.container_id);
    sandbox.netns.exec(&["ip", "link", "del", "eth0"]).unwrap();

    // After all that: the same pools, handles and blocks, and the pods still talk.
    assert_eq!(ctl.get_yaml("ippools", None).unwrap(), pools_before);
    assert_eq!(cp.ipam_handles().unwrap(), handles_before);
    assert_eq!(cp.ipam_blocks().unwrap(), blocks_before);
    assert_pings(&a, &c, 3);
    // The pod that failed twice can still be added properly.
    let x = cp.cni_add("node1", &sandbox).unwrap().pod;
    wait_reachable(&x, c.ip, REACHABLE_WITHIN).unwrap();
    cp.check_running().unwrap();
}

#[test]
fn an_exhausted_pool_fails_the_add_cleanly_and_frees_up_on_delete() {
    if skip_unless_root("an_exhausted_pool_fails_the_add_cleanly_and_frees_up_on_delete") {
        return;
    }
    let lab = Lab::new().unwrap();
    let tiny = ippool_yaml("tiny", "10.80.0.0/30", 30, "Never", "Never");
    let cp = ControlPlane::with_pool(&lab, &["node1"], &tiny).unwrap();
    let pods: Vec<Pod> = (1..=4)
        .map(|i| cp.add_pod("node1", &format!("pod-{i}")).unwrap())
        .collect();
    let mut ips: Vec<_> = pods.iter().map(|p| p.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 4, "{ips:?}");

    let sandbox = cp.sandbox("pod-5").unwrap();
    let err = cp.cni_add("node1", &sandbox).unwrap_err().to_string();
    eprintln!("fifth pod in a 4-address pool: {err}");
    assert!(err.contains("no free pod address"), "{err}");
    assert!(
        err.contains("tiny") || err.contains("10.80.0.0/30"),
        "{err}"
    );
    assert_failed_add_left_nothing(&cp, &sandbox);
    assert_eq!(cp.ipam_handles().unwrap().len(), 4);
    assert_eq!(cp.workload_endpoints().unwrap().len(), 4);

    assert_pings_once_reachable(&[(&pods[0], &pods[3])], 3);

    // Deleting a pod gives its address back.
    let freed = pods[1].ip;
    let del = cp.del_pod("pod-2").unwrap();
    assert!(del.succeeded(), "{:?}", del.output);
    let fifth = cp.cni_add("node1", &sandbox).unwrap().pod;
    assert_eq!(fifth.ip, freed);
    wait_reachable(&fifth, pods[0].ip, REACHABLE_WITHIN).unwrap();
    cp.check_running().unwrap();
}
