//! Parsing and checking documents as users write them.

use ipnet::Ipv4Net;

use crate::model::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn one(text: &str) -> Document {
    let mut docs = parse_documents(text).unwrap();
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

fn parse_err(text: &str) -> String {
    parse_documents(text).unwrap_err().to_string()
}

fn validate_err(text: &str) -> String {
    one(text).validate().unwrap_err().to_string()
}

const POOL: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.65.0.0/16
  ipipMode: Always
  natOutgoing: true
";

#[test]
fn a_calicoctl_pool_parses_with_calicos_defaults() {
    let Document::IpPool(pool) = one(POOL) else {
        panic!("not a pool")
    };
    assert_eq!(pool.metadata.name, "default-ipv4-ippool");
    assert_eq!(pool.spec.cidr, net("10.65.0.0/16"));
    assert_eq!(pool.spec.block_size, 26);
    assert_eq!(pool.spec.ipip_mode, EncapMode::Always);
    assert_eq!(pool.spec.vxlan_mode, EncapMode::Never);
    assert!(pool.spec.nat_outgoing);
    assert!(!pool.spec.disabled);
    pool.validate().unwrap();
    assert_eq!(pool.encapsulation(), PoolEncap::Ipip(EncapMode::Always));
}

#[test]
fn what_calicoctl_get_prints_can_be_applied_back() {
    // `calicoctl get ippool -o yaml` output, including the fields tapwire only accepts.
    let text = "apiVersion: projectcalico.org/v3
items:
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata:
    creationTimestamp: \"2024-05-01T12:00:00Z\"
    name: default-ipv4-ippool
    resourceVersion: \"712\"
    uid: 4c1c8b1e-0000-4000-8000-000000000000
  spec:
    allowedUses:
    - Workload
    - Tunnel
    blockSize: 26
    cidr: 10.65.0.0/16
    ipipMode: Never
    natOutgoing: true
    nodeSelector: all()
    vxlanMode: CrossSubnet
kind: IPPoolList
metadata:
  resourceVersion: \"712\"
";
    let docs = parse_documents(text).unwrap();
    assert_eq!(docs.len(), 1);
    docs[0].validate().unwrap();
    let Document::IpPool(pool) = &docs[0] else {
        panic!("not a pool")
    };
    assert_eq!(pool.spec.vxlan_mode, EncapMode::CrossSubnet);
    assert_eq!(pool.metadata.revision(), Some(712));
    // And it prints back in the same shape.
    let value = docs[0].to_value();
    assert_eq!(value["apiVersion"], API_VERSION);
    assert_eq!(value["kind"], "IPPool");
    assert_eq!(value["spec"]["cidr"], "10.65.0.0/16");
    assert_eq!(value["spec"]["vxlanMode"], "CrossSubnet");
    assert_eq!(value["spec"]["blockSize"], 26);
}

#[test]
fn several_documents_yaml_streams_lists_and_json() {
    let node = "apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: kernel-host
spec:
  bgp:
    ipv4Address: 192.168.1.9/24
  ipv4VXLANTunnelAddr: 10.70.0.1
  vxlanTunnelMACAddr: 66:68:21:5A:8F:91
  podCIDRs: [10.70.0.0/26]
";
    let stream = format!("---\n{POOL}---\n{node}---\n");
    let docs = parse_documents(&stream).unwrap();
    assert_eq!(docs.len(), 2, "the empty trailing document is skipped");
    assert_eq!(
        (docs[0].kind(), docs[0].name()),
        ("IPPool", "default-ipv4-ippool")
    );
    assert_eq!((docs[1].kind(), docs[1].name()), ("Node", "kernel-host"));
    let Document::Node(n) = &docs[1] else {
        panic!("not a node")
    };
    n.validate().unwrap();
    assert!(!n.is_managed());
    assert_eq!(n.underlay(), Some(net("192.168.1.9/24")));
    assert_eq!(n.vtep_mac().to_string(), "66:68:21:5a:8f:91");
    assert_eq!(n.spec.pod_cidrs, vec![net("10.70.0.0/26")]);

    let list = "kind: List\napiVersion: v1\nitems:\n- {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: a}, spec: {cidr: 10.1.0.0/16}}\n- {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: b}, spec: {cidr: 10.2.0.0/16}}\n";
    let names: Vec<_> = parse_documents(list)
        .unwrap()
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);

    let json = r#"[{"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "j"}, "spec": {"cidr": "10.3.0.0/16", "vxlanMode": "Always"}}]"#;
    let Document::IpPool(pool) = one(json) else {
        panic!("not a pool")
    };
    assert_eq!(pool.spec.vxlan_mode, EncapMode::Always);
    assert!(parse_documents("").unwrap().is_empty());
    // YAML flow style looks like JSON at first sight.
    let flow = "[{apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: f}, spec: {cidr: 10.4.0.0/16}}]";
    assert_eq!(one(flow).name(), "f");
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_the_document() {
    let text = format!(
        "{POOL}---\n{}",
        POOL.replace("ipipMode", "ipipMod")
            .replace("default-ipv4-ippool", "second")
    );
    let msg = parse_err(&text);
    assert!(msg.contains("document 2"), "{msg}");
    assert!(msg.contains("IPPool \"second\""), "{msg}");
    assert!(msg.contains("unknown field `ipipMod`"), "{msg}");
    let msg = parse_err(&POOL.replace("spec:", "spce:"));
    assert!(msg.contains("unknown field `spce`"), "{msg}");
    let msg = parse_err(&POOL.replace("ipipMode: Always", "ipipMode: Sometimes"));
    assert!(msg.contains("unknown variant `Sometimes`"), "{msg}");
    assert!(msg.contains("CrossSubnet"), "{msg}");
}

#[test]
fn broken_syntax_and_wrong_headers_are_clear_errors() {
    let msg = parse_err("kind: IPPool\n  bad: [indent\n");
    assert!(msg.starts_with("invalid YAML"), "{msg}");
    assert!(msg.contains("line"), "{msg}");
    let msg = parse_err("{\"kind\": ");
    assert!(msg.starts_with("invalid JSON"), "{msg}");
    let msg = parse_err(&POOL.replace("projectcalico.org/v3", "projectcalico.org/v2"));
    assert!(
        msg.contains("apiVersion \"projectcalico.org/v2\" is not supported"),
        "{msg}"
    );
    let msg = parse_err(&POOL.replace("kind: IPPool", "kind: NetworkPolicy"));
    assert!(
        msg.contains("kind \"NetworkPolicy\" cannot be applied"),
        "{msg}"
    );
    let msg = parse_err(&POOL.replace("kind: IPPool\n", ""));
    assert!(msg.contains("missing kind"), "{msg}");
    let msg = parse_err("just a string\n");
    assert!(msg.contains("expected a document"), "{msg}");
    let msg = parse_err(&POOL.replace("10.65.0.0/16", "10.65.0/16"));
    assert!(msg.contains("invalid CIDR \"10.65.0/16\""), "{msg}");
    let msg = parse_err(&POOL.replace("10.65.0.0/16", "10.65.0.0"));
    assert!(msg.contains("missing the prefix length"), "{msg}");
    let msg = parse_err(&POOL.replace("10.65.0.0/16", "fd00::/64"));
    assert!(msg.contains("IPv4-only"), "{msg}");
    let msg = parse_err(&POOL.replace("natOutgoing: true", "natOutgoing: sure"));
    assert!(msg.contains("spec.natOutgoing: invalid type"), "{msg}");
    let msg = parse_err(&format!("{POOL}  blockSize: big\n"));
    assert_eq!(
            msg,
            "document 1 (IPPool \"default-ipv4-ippool\"): spec.blockSize: invalid type: string \"big\", expected u8"
        );
}

#[test]
fn pool_validation_names_the_field_and_the_problem() {
    let msg = validate_err(&POOL.replace("10.65.0.0/16", "10.65.0.1/16"));
    assert!(
        msg.contains("spec.cidr") && msg.contains("host bits"),
        "{msg}"
    );
    assert!(msg.contains("10.65.0.0/16"), "{msg}");
    let msg = validate_err(&POOL.replace("10.65.0.0/16", "169.254.0.0/24"));
    assert!(msg.contains("link-local"), "{msg}");
    let msg = validate_err(&POOL.replace("10.65.0.0/16", "160.0.0.0/4"));
    assert!(
        msg.contains("link-local"),
        "a pool containing 169.254/16: {msg}"
    );
    let msg = validate_err(&format!("{POOL}  blockSize: 19\n"));
    assert!(
        msg.contains("spec.blockSize") && msg.contains("out of range"),
        "{msg}"
    );
    let msg = validate_err(&format!("{POOL}  blockSize: 33\n"));
    assert!(msg.contains("out of range"), "{msg}");
    let msg = validate_err(&format!("{}  blockSize: 24\n", POOL.replace("/16", "/26")));
    assert!(msg.contains("do not fit"), "{msg}");
    let msg = validate_err(&format!("{POOL}  vxlanMode: CrossSubnet\n"));
    assert!(msg.contains("both enabled"), "{msg}");
    let msg = validate_err(&POOL.replace("default-ipv4-ippool", "Default_Pool"));
    assert!(msg.contains("metadata.name"), "{msg}");
    let msg = validate_err(&format!("{POOL}  nodeSelector: role == 'edge'\n"));
    assert!(msg.contains("not supported"), "{msg}");
    // The boundary values are accepted.
    one(&format!("{POOL}  blockSize: 20\n")).validate().unwrap();
    one(&format!("{}  blockSize: 32\n", POOL.replace("/16", "/32")))
        .validate()
        .unwrap();
}

#[test]
fn batches_reject_overlaps_duplicates_and_immutable_changes() {
    let pool = |name: &str, cidr: &str| IpPool::new(name, net(cidr));
    let existing = [pool("a", "10.65.0.0/16")];
    let batch = [Document::IpPool(pool("b", "10.65.128.0/17"))];
    let msg = check_batch(&batch, &existing).unwrap_err().to_string();
    assert!(msg.contains("document 1 (IPPool \"b\")"), "{msg}");
    assert!(
        msg.contains("overlaps IPPool \"a\" (10.65.0.0/16)"),
        "{msg}"
    );
    // Re-applying "a" (same CIDR, new mode) in the same batch does not make room.
    let moved = [
        Document::IpPool(pool("b", "10.65.128.0/17")),
        Document::IpPool(IpPool {
            spec: IpPoolSpec {
                ipip_mode: EncapMode::Always,
                ..existing[0].spec.clone()
            },
            ..existing[0].clone()
        }),
    ];
    let msg = check_batch(&moved, &existing).unwrap_err().to_string();
    assert!(
        msg.contains("document 1") && msg.contains("overlaps"),
        "{msg}"
    );
    let two = [
        Document::IpPool(pool("x", "10.1.0.0/16")),
        Document::IpPool(pool("y", "10.1.0.0/24")),
    ];
    let msg = check_batch(&two, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("document 1") || msg.contains("document 2"),
        "{msg}"
    );
    let dup = [
        Document::IpPool(pool("x", "10.1.0.0/16")),
        Document::IpPool(pool("x", "10.2.0.0/16")),
    ];
    let msg = check_batch(&dup, &[]).unwrap_err().to_string();
    assert!(msg.contains("also defined by document 1"), "{msg}");
    let resized = [Document::IpPool(pool("a", "10.66.0.0/16"))];
    let msg = check_batch(&resized, &existing).unwrap_err().to_string();
    assert!(msg.contains("cannot change from 10.65.0.0/16"), "{msg}");
    // A mode change of an existing pool is what users do all the time.
    let mut switched = existing[0].clone();
    switched.spec.vxlan_mode = EncapMode::Always;
    check_batch(&[Document::IpPool(switched)], &existing).unwrap();
}

#[test]
fn node_validation() {
    let base = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n1\n";
    let msg = validate_err(base);
    assert!(
        msg.contains("spec.bgp.ipv4Address") && msg.contains("required"),
        "{msg}"
    );
    let ok = format!("{base}spec:\n  bgp:\n    ipv4Address: 192.168.0.1\n");
    let Document::Node(n) = one(&ok) else {
        panic!("not a node")
    };
    assert_eq!(
        n.underlay(),
        Some(net("192.168.0.1/32")),
        "a bare address is a /32"
    );
    let msg = validate_err(&format!("{ok}  vxlanTunnelMACAddr: 01:00:5e:00:00:01\n"));
    assert!(msg.contains("not a unicast"), "{msg}");
    let msg = validate_err(&format!("{ok}  podCIDRs: [10.70.0.1/26]\n"));
    assert!(msg.contains("host bits"), "{msg}");
    let msg = validate_err(&format!("{ok}  podCIDRs: [10.70.0.0/26, 10.70.0.0/24]\n"));
    assert!(msg.contains("overlaps"), "{msg}");
    let msg = parse_err(&format!("{ok}  vxlanTunnelMACAddr: 66:00\n"));
    assert!(msg.contains("invalid MAC address"), "{msg}");
    let msg = parse_err(&format!("{ok}  wireguard: {{}}\n"));
    assert!(msg.contains("unknown field `wireguard`"), "{msg}");
}
