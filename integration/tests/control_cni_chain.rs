//! The `tapwire` plugin as the first plugin of a chain, run as libcni runs a
//! configuration list: `tapwire`, then Debian's `tuning` plugin (containernetworking-
//! plugins), which gets `tapwire`'s result as `prevResult`, changes the pod's `eth0`
//! (MTU, promiscuous mode, a sysctl) and passes the result on. The pod works with the
//! tuned interface; CHECK passes for the whole chain; DEL runs in reverse order with the
//! cached result and leaves nothing behind.
//!
//! Also the plugin's VERSION (1.1.0, 1.0.0, 0.4.0 and 0.3.1) and STATUS (a 1.1.0
//! operation), and a chain whose list asks for 0.4.0 results.
//!
//! Skipped with a message when `/usr/lib/cni/tuning` is not installed
//! (`apt-get install containernetworking-plugins`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tapwire_integration::check::{
    assert_nothing_recorded, assert_pings_once_reachable, REACHABLE_WITHIN,
};
use tapwire_integration::cni::CniCommand;
use tapwire_integration::controlplane::{default_ipip_pool, result_ipv4, DEBIAN_CNI_DIR};
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, ControlPlane, Lab};

const SYSCTL: &str = "net.ipv4.conf.eth0.rp_filter";

#[test]
fn tapwire_then_tuning_as_a_chain() {
    if skip_unless_root("tapwire_then_tuning_as_a_chain") {
        return;
    }
    let tuning = Path::new(DEBIAN_CNI_DIR).join("tuning");
    if !tuning.is_file() {
        eprintln!(
            "skipping tapwire_then_tuning_as_a_chain: {} is missing \
             (apt-get install containernetworking-plugins)",
            tuning.display()
        );
        return;
    }
    let lab = Lab::new().unwrap();
    let cp = ControlPlane::with_pool(&lab, &["node1"], &default_ipip_pool()).unwrap();
    let runtime = cp.runtime("node1").unwrap();

    // VERSION and STATUS.
    let versions = runtime.versions("tapwire").unwrap();
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(versions.iter().any(|s| s == v), "{v} not in {versions:?}");
    }
    // STATUS came with spec 1.1.0: a 1.1.0 configuration gets it, a 1.0.0 one an error.
    let mut conf = cp.network_conf("node1").unwrap();
    conf["cniVersion"] = json!("1.1.0");
    let unused = cp.sandbox("unused").unwrap().args;
    let status = runtime.exec(CniCommand::Status, &conf, &unused).unwrap();
    assert!(status.succeeded(), "STATUS: {:?}", status.output);
    conf["cniVersion"] = json!("1.0.0");
    let status = runtime.exec(CniCommand::Status, &conf, &unused).unwrap();
    assert!(
        !status.succeeded(),
        "STATUS with a 1.0.0 config: {:?}",
        status.output
    );
    assert!(status.error_object().is_some(), "{:?}", status.output);

    // A plain pod to talk to.
    let plain = cp.add_pod("node1", "pod-plain").unwrap();

    // The chain.
    let list = cp
        .network_list(
            "node1",
            vec![json!({
                "type": "tuning",
                "mtu": 1400,
                "promisc": true,
                "sysctl": { SYSCTL: "2" },
            })],
        )
        .unwrap();
    let sandbox = cp.sandbox("pod-tuned").unwrap();
    let result = runtime.add_list(&list, &sandbox.args).unwrap();
    eprintln!("chain result: {result}");
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let netns = sandbox.netns.path().display().to_string();
    let interfaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let eth0 = interfaces
        .iter()
        .position(|i| i["name"] == "eth0" && i["sandbox"] == netns.as_str())
        .unwrap_or_else(|| panic!("no eth0 in sandbox {netns} in {result}"));
    let ip = &result["ips"][0];
    assert!(
        ip["address"].as_str().is_some_and(|a| a.ends_with("/32")),
        "{result}"
    );
    assert_eq!(ip["interface"], json!(eth0), "{result}");
    let routes = result["routes"].as_array().cloned().unwrap_or_default();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "0.0.0.0/0" && r["gw"] == "169.254.1.1"),
        "no default route via 169.254.1.1 in {result}"
    );
    let tuned = cp
        .record_pod("node1", &sandbox, result.clone(), Duration::ZERO)
        .unwrap()
        .pod;
    assert_eq!(tuned.ip, result_ipv4(&result).unwrap());

    // tuning did its part inside the pod, on tapwire's interface.
    let link = tuned.exec(&["ip", "-d", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("PROMISC"), "{link}");
    assert!(link.contains("mtu 1400"), "{link}");
    let value = tuned.exec(&["sysctl", "-n", SYSCTL]).unwrap();
    assert_eq!(value.trim(), "2", "{SYSCTL}");
    let addr = tuned
        .exec(&["ip", "-o", "-4", "addr", "show", "eth0"])
        .unwrap();
    assert!(addr.contains(&format!("inet {}/32", tuned.ip)), "{addr}");
    assert_pings_once_reachable(&[(&tuned, &plain)], 3);

    // CHECK the chain with the cached result, then DEL it in reverse order.
    runtime.check_list(&list, &sandbox.args, &result).unwrap();
    runtime
        .del_list(&list, &sandbox.args, Some(&result))
        .unwrap();
    let links = sandbox.netns.exec(&["ip", "-o", "link", "show"]).unwrap();
    assert!(!links.contains("eth0"), "eth0 left after DEL: {links}");
    assert_nothing_recorded(&cp, &sandbox.args.container_id);
    // DEL of the chain again succeeds (tapwire's DEL is idempotent; tuning has nothing
    // to restore).
    runtime
        .del_list(&list, &sandbox.args, Some(&result))
        .unwrap();

    // A list asking for 0.4.0 results: tapwire answers in 0.4.0's shape and tuning
    // accepts it as prevResult.
    let mut old = cp
        .network_list("node1", vec![json!({ "type": "tuning", "mtu": 1300 })])
        .unwrap();
    old["cniVersion"] = json!("0.4.0");
    let sandbox = cp.sandbox("pod-old").unwrap();
    let result = runtime.add_list(&old, &sandbox.args).unwrap();
    eprintln!("0.4.0 chain result: {result}");
    assert_eq!(result["cniVersion"], "0.4.0", "{result}");
    assert_eq!(result["ips"][0]["version"], "4", "{result}");
    let pod = cp
        .record_pod("node1", &sandbox, result.clone(), Duration::ZERO)
        .unwrap()
        .pod;
    assert_eq!(pod.mtu_bytes, 1300);
    wait_reachable(&pod, plain.ip, REACHABLE_WITHIN).unwrap();
    runtime
        .del_list(&old, &sandbox.args, Some(&result))
        .unwrap();
    cp.check_running().unwrap();
}
