//! The renderer against golden files (what a reviewer reads as BIRD configuration), the
//! sessions each set-up gives, and BIRD itself (`bird -p`) accepting every rendering.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::model::{parse_documents, Document, IpPool};

const A: &str = "node-a";
const B: &str = "node-b";
const C: &str = "node-c";

fn node(name: &str, underlay: &str) -> Node {
    Node::new(name, underlay.parse().unwrap())
}

fn docs(text: &str) -> Vec<Document> {
    parse_documents(text).unwrap()
}

/// Three nodes (C in another subnet), one IPIP pool and a second one that is not
/// announced, a block on each node, plus `extra` documents.
fn cluster(extra: &str) -> ClusterState {
    let mut pool = IpPool::new("default-ipv4-ippool", "10.65.0.0/16".parse().unwrap());
    pool.spec.ipip_mode = crate::model::EncapMode::CrossSubnet;
    let mut quiet = IpPool::new("quiet", "10.70.0.0/16".parse().unwrap());
    quiet.spec.disable_bgp_export = true;
    let mut state = ClusterState {
        nodes: vec![
            node(A, "192.168.0.1/24"),
            node(B, "192.168.0.2/24"),
            node(C, "192.168.1.3/24"),
        ],
        pools: vec![pool, quiet],
        blocks: BTreeMap::from([
            ("10.65.0.0/26".parse().unwrap(), A.to_string()),
            ("10.65.0.192/26".parse().unwrap(), A.to_string()),
            ("10.70.0.0/26".parse().unwrap(), A.to_string()),
            ("10.65.0.64/26".parse().unwrap(), B.to_string()),
            ("10.65.0.128/26".parse().unwrap(), C.to_string()),
        ]),
        ..ClusterState::default()
    };
    for doc in docs(extra) {
        match doc {
            Document::BgpPeer(p) => state.bgp_peers.push(p),
            Document::BgpConfiguration(c) => state.bgp_configurations.push(c),
            Document::Node(n) => {
                state.nodes.retain(|m| m.name() != n.name());
                state.nodes.push(n);
            }
            Document::IpPool(p) => state.pools.push(p),
        }
    }
    state
}

fn bird_config() -> BirdConfig {
    BirdConfig {
        graceful_restart_secs: 30,
        ..BirdConfig::default()
    }
}

fn secrets(secret: &SecretKeyRef) -> Result<String, String> {
    match (secret.name.as_str(), secret.key.as_str()) {
        ("bgp", "tor") => Ok("s3cret\n".into()),
        ("bgp", "quoted") => Ok("a\"b".into()),
        _ => Err("No such file or directory (os error 2)".into()),
    }
}

fn render_for(cluster: &ClusterState, node: &str) -> Rendered {
    let bird = bird_config();
    render(
        cluster,
        RenderInputs {
            node,
            underlay_interface: "eth0",
            bird: &bird,
        },
        &secrets,
    )
    .unwrap()
}

/// (peer address, type, AS, rr client, passive) of each session.
fn summary(speaker: &Speaker) -> Vec<(String, PeerType, u32, bool, bool)> {
    speaker
        .sessions
        .iter()
        .map(|s| {
            (
                s.peer_ip.to_string(),
                s.peer_type,
                s.peer_as,
                s.rr_client,
                s.passive,
            )
        })
        .collect()
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/bgp/config/golden")
        .join(name)
}

/// Compares with the golden file (`TAPWIRE_BLESS=1` writes it instead).
fn assert_golden(name: &str, text: &str) {
    let path = golden_path(name);
    if std::env::var_os("TAPWIRE_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TAPWIRE_BLESS=1 writes it)", path.display()));
    assert_eq!(text, golden, "{name} differs from its golden file");
}

const ROUTER: &str = "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack0-tor}
spec: {node: node-a, peerIP: 192.168.0.254, asNumber: 64513, password: {secretKeyRef: {name: bgp, key: tor}}}
";

const REFLECTOR: &str = "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, asNumber: 64512, logSeverityScreen: Warning}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-a, labels: {route-reflector: 'true'}}
spec: {bgp: {ipv4Address: 192.168.0.1/24, routeReflectorClusterID: 224.0.0.1}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec: {nodeSelector: all(), peerSelector: \"route-reflector == 'true'\"}
";

#[test]
fn a_full_mesh_node_with_a_router_renders_as_its_golden_file() {
    let rendered = render_for(&cluster(ROUTER), A);
    assert_golden("node-a-mesh-and-router.conf", &rendered.text);
    assert_eq!(
        summary(&rendered.speaker),
        [
            (
                "192.168.0.254".into(),
                PeerType::NodeSpecific,
                64513,
                false,
                false
            ),
            ("192.168.0.2".into(), PeerType::Mesh, 64512, false, true),
            ("192.168.1.3".into(), PeerType::Mesh, 64512, false, true),
        ]
    );
    assert!(
        rendered.speaker.skipped.is_empty(),
        "{:?}",
        rendered.speaker.skipped
    );
    // Only this node's blocks of announced pools are in the static protocol.
    assert!(rendered
        .text
        .contains("\troute 10.65.0.0/26 blackhole;\n\troute 10.65.0.192/26 blackhole;\n}"));
    assert!(!rendered.text.contains("10.70.0.0/26"));
    assert!(!rendered.text.contains("10.65.0.64/26"));
    // The router is not B's peer; for B, A is the lower address (B connects to it).
    let b = render_for(&cluster(ROUTER), B);
    assert_eq!(
        summary(&b.speaker),
        [
            ("192.168.0.1".into(), PeerType::Mesh, 64512, false, false),
            ("192.168.1.3".into(), PeerType::Mesh, 64512, false, true),
        ]
    );
}

#[test]
fn a_route_reflector_and_its_clients_render_as_their_golden_files() {
    let state = cluster(REFLECTOR);
    let reflector = render_for(&state, A);
    assert_golden("node-a-route-reflector.conf", &reflector.text);
    // The reflector peers with both clients, which are its rr clients.
    assert_eq!(
        summary(&reflector.speaker),
        [
            (
                "192.168.0.2".into(),
                PeerType::NodeSpecific,
                64512,
                true,
                true
            ),
            (
                "192.168.1.3".into(),
                PeerType::NodeSpecific,
                64512,
                true,
                true
            ),
        ]
    );
    // A client peers with the reflector only (no mesh), which connects to it.
    let client = render_for(&state, C);
    assert_golden("node-c-reflector-client.conf", &client.text);
    assert_eq!(
        summary(&client.speaker),
        [(
            "192.168.0.1".into(),
            PeerType::NodeSpecific,
            64512,
            false,
            false
        )]
    );
}

#[test]
fn sessions_follow_selectors_as_numbers_and_precedence() {
    let state = cluster(
        "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-c, labels: {rack: b}}
spec: {bgp: {ipv4Address: 192.168.1.3/24, asNumber: 65003}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: core}
spec: {peerIP: 10.0.0.1, asNumber: 65000}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack-b-tor}
spec: {nodeSelector: \"rack == 'b'\", peerIP: 192.168.1.254, asNumber: 64999}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: b-direct}
spec: {node: node-a, peerIP: 192.168.0.2, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: broken}
spec: {peerIP: 10.0.0.9}
",
    );
    let a = sessions(&state, A).unwrap();
    assert_eq!(a.as_number, 65001, "the configuration's AS");
    assert_eq!(
        summary(&a),
        [
            // The node-specific peer to B wins over the mesh session to B.
            (
                "192.168.0.2".into(),
                PeerType::NodeSpecific,
                65001,
                false,
                true
            ),
            ("10.0.0.1".into(), PeerType::Global, 65000, false, false),
            // C is in its own AS: eBGP over the mesh.
            ("192.168.1.3".into(), PeerType::Mesh, 65003, false, true),
        ]
    );
    assert!(
        a.skipped.iter().any(|s| s.contains("BGPPeer \"broken\"")),
        "{:?}",
        a.skipped
    );
    assert!(
        a.skipped.iter().any(|s| s.contains("node-to-node mesh (node-b)") && s.contains("BGPPeer \"b-direct\"")),
        "{:?}",
        a.skipped
    );
    let c = sessions(&state, C).unwrap();
    assert_eq!(c.as_number, 65003, "its own AS");
    assert_eq!(
        summary(&c),
        [
            (
                "192.168.1.254".into(),
                PeerType::NodeSpecific,
                64999,
                false,
                false
            ),
            ("10.0.0.1".into(), PeerType::Global, 65000, false, false),
            ("192.168.0.1".into(), PeerType::Mesh, 65001, false, false),
            ("192.168.0.2".into(), PeerType::Mesh, 65001, false, false),
        ]
    );
    // eBGP sessions get only this node's blocks; iBGP sessions may be reflected to.
    let rendered = render_for(&state, C);
    assert!(rendered.text.contains("protocol bgp Mesh_192_168_0_1 from tapwire_peer {\n\tdescription \"node-to-node mesh (node-a)\";\n\tneighbor 192.168.0.1 as 65001;\n\tipv4 {\n\t\texport filter tapwire_export;"), "{}", rendered.text);
    assert_eq!(
        sessions(&state, "node-x").unwrap_err().to_string(),
        "node \"node-x\" has no Node document (a control registers its node on start)"
    );
}

#[test]
fn a_peer_whose_password_cannot_be_read_is_left_out_saying_why() {
    let state = cluster(
        "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: missing}
spec: {peerIP: 10.0.0.1, asNumber: 65000, password: {secretKeyRef: {name: bgp, key: nope}}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: quoted}
spec: {peerIP: 10.0.0.2, asNumber: 65000, password: {secretKeyRef: {name: bgp, key: quoted}}}
",
    );
    let rendered = render_for(&state, A);
    let peers: Vec<String> = rendered
        .speaker
        .sessions
        .iter()
        .map(|s| s.peer_ip.to_string())
        .collect();
    assert_eq!(peers, ["192.168.0.2", "192.168.1.3"]);
    let skipped = rendered.speaker.skipped.join("\n");
    assert!(
        skipped.contains(
            "BGPPeer \"missing\": session to 10.0.0.1 left out: password bgp/nope: No such file"
        ),
        "{skipped}"
    );
    assert!(
        skipped.contains("password bgp/quoted: holds a quote"),
        "{skipped}"
    );
    assert!(!rendered.text.contains("10.0.0.1"));
}

#[test]
fn bird_accepts_every_rendering() {
    let bird = Path::new(super::super::model::DEFAULT_BIRD_BINARY);
    if !bird.is_file() {
        eprintln!(
            "skipped: {} is not installed (Debian's bird2)",
            bird.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("mesh", cluster(ROUTER), A),
        ("reflector", cluster(REFLECTOR), A),
        ("client", cluster(REFLECTOR), C),
        (
            "no-pools-no-peers",
            ClusterState {
                nodes: vec![node(A, "192.168.0.1/24")],
                ..ClusterState::default()
            },
            A,
        ),
    ];
    for (name, state, node) in cases {
        let path = dir.path().join(format!("{name}.conf"));
        std::fs::write(&path, render_for(&state, node).text).unwrap();
        let out = std::process::Command::new(bird)
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: bird -p refused it: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
