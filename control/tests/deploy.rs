//! The files under `deploy/` are what an operator installs: each must be accepted by the
//! code that reads it, so that a change of the configuration format cannot leave them
//! behind.
// clippy.toml allows unwrap/expect in #[test] fns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::Value;
use tapwire_control::cni::{Command, NetworkConfig};
use tapwire_control::model::NodeConfig;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn the_shipped_node_toml_is_a_valid_node_configuration() {
    let config = NodeConfig::load(&deploy("node.toml")).unwrap();
    assert_eq!(config.api_socket, PathBuf::from("/run/tapwire/api.sock"));
    assert_eq!(
        config.dataplane_socket,
        PathBuf::from("/run/tapwire/dataplane.sock")
    );
}

#[test]
fn the_shipped_conflist_is_what_the_plugin_accepts() {
    let list: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("10-tapwire.conflist")).unwrap())
            .unwrap();
    // What libcni hands the first plugin: its own keys plus the list's name and version.
    let mut conf = list["plugins"][0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    assert_eq!(conf["type"], "tapwire");
    let parsed = NetworkConfig::parse(conf.to_string().as_bytes(), Command::Add).unwrap();
    assert_eq!(parsed.name, "k8s-pod-network");
}

#[test]
fn the_units_start_the_binaries_with_the_shipped_paths() {
    let dataplane = std::fs::read_to_string(deploy("tapwire-dataplane.service")).unwrap();
    assert!(dataplane.contains("--socket /run/tapwire/dataplane.sock"));
    let control = std::fs::read_to_string(deploy("tapwire-control.service")).unwrap();
    assert!(control.contains("--config /etc/tapwire/node.toml"));
    assert!(control.contains("After=network-online.target tapwire-dataplane.service"));
}
