//! Where each document lives in etcd: Calico's key layout, so that
//! `etcdctl get --prefix /calico` reads the way a Calico operator expects. Only the keys
//! follow Calico; the values are tapwire's own JSON documents. Sans-IO: names in, keys out
//! and back.
//!
//! | kind | key |
//! |---|---|
//! | `IPPool`, `Node` | `/calico/resources/v3/projectcalico.org/{ippools,nodes}/<name>` |
//! | `BGPPeer`, `BGPConfiguration` | `/calico/resources/v3/projectcalico.org/{bgppeers,bgpconfigurations}/<name>` |
//! | `WorkloadEndpoint` `<ns>.<rest>` | `/calico/resources/v3/projectcalico.org/workloadendpoints/<ns>/<rest>` |
//! | `WorkloadEndpoint` without a `.` | `/calico/resources/v3/projectcalico.org/workloadendpoints/<name>` |
//! | `IPAMBlock` `10-65-0-0-26` | `/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26` |
//! | `BlockAffinity` `node-a-10-65-0-0-26` | `/calico/ipam/v2/host/node-a/ipv4/block/10.65.0.0-26` |
//! | `IPAMHandle` `<id>` | `/calico/ipam/v2/handle/<id>` |
//! | any other kind | `/calico/tapwire/<Kind>/<name>` |
//!
//! tapwire's object names are flat (one collection per kind). Calico nests namespaced
//! kinds one level deeper; a workload endpoint's name carries its Kubernetes namespace
//! before the first `.` (`kube-system.node--a-k8s-dns-eth0`, see the agent), so that part
//! becomes the namespace level, and names without a `.` (pods started without Kubernetes)
//! sit directly under `workloadendpoints/`. The mapping is purely textual, so every name has
//! exactly one key and back.

use ipnet::Ipv4Net;

use crate::model::{BlockAffinity, IpamBlock};

/// Everything tapwire stores is under this prefix (what a watch covers).
pub const ROOT: &str = "/calico/";
const RESOURCES: &str = "/calico/resources/v3/projectcalico.org/";
const BLOCKS: &str = "/calico/ipam/v2/assignment/ipv4/block/";
const HOSTS: &str = "/calico/ipam/v2/host/";
const HANDLES: &str = "/calico/ipam/v2/handle/";
const TAPWIRE: &str = "/calico/tapwire/";
const WORKLOAD_ENDPOINTS: &str = "workloadendpoints";

/// How one kind's names map to keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A Calico v3 resource of this plural (`ippools`).
    Resource(&'static str),
    Block,
    Affinity,
    Handle,
    /// A kind Calico does not have.
    Other,
}

fn layout(kind: &str) -> Layout {
    match kind {
        "IPPool" => Layout::Resource("ippools"),
        "Node" => Layout::Resource("nodes"),
        "BGPPeer" => Layout::Resource("bgppeers"),
        "BGPConfiguration" => Layout::Resource("bgpconfigurations"),
        "WorkloadEndpoint" => Layout::Resource(WORKLOAD_ENDPOINTS),
        "IPAMBlock" => Layout::Block,
        "BlockAffinity" => Layout::Affinity,
        "IPAMHandle" => Layout::Handle,
        _ => Layout::Other,
    }
}

/// A block's CIDR as Calico writes it in keys: `10.65.0.0/26` → `10.65.0.0-26`.
fn cidr_segment(cidr: Ipv4Net) -> String {
    cidr.to_string().replace('/', "-")
}

fn parse_cidr_segment(segment: &str) -> Option<Ipv4Net> {
    let (addr, len) = segment.rsplit_once('-')?;
    let cidr: Ipv4Net = format!("{addr}/{len}").parse().ok()?;
    (cidr_segment(cidr) == segment && cidr == cidr.trunc()).then_some(cidr)
}

/// A block affinity's name split into its node and CIDR (`node-a-10-65-0-0-26`).
fn split_affinity(name: &str) -> Option<(&str, Ipv4Net)> {
    let mut cut = name.len();
    for _ in 0..5 {
        cut = name[..cut].rfind('-')?;
    }
    let (node, block) = (&name[..cut], &name[cut + 1..]);
    let cidr = IpamBlock::cidr_from_name(block)?;
    (!node.is_empty()).then_some((node, cidr))
}

/// The key of object `name` of `kind` (both already checked as a kind and a name), or why
/// the name has no key: IPAM blocks and affinities are named after their CIDR.
pub fn key(kind: &str, name: &str) -> Result<String, String> {
    match layout(kind) {
        Layout::Resource(WORKLOAD_ENDPOINTS) => match name.split_once('.') {
            Some((namespace, rest)) => Ok(format!(
                "{RESOURCES}{WORKLOAD_ENDPOINTS}/{namespace}/{rest}"
            )),
            None => Ok(format!("{RESOURCES}{WORKLOAD_ENDPOINTS}/{name}")),
        },
        Layout::Resource(plural) => Ok(format!("{RESOURCES}{plural}/{name}")),
        Layout::Block => IpamBlock::cidr_from_name(name)
            .map(|cidr| format!("{BLOCKS}{}", cidr_segment(cidr)))
            .ok_or_else(|| "an IPAM block is named after its CIDR (10-65-0-0-26)".to_string()),
        Layout::Affinity => split_affinity(name)
            .map(|(node, cidr)| format!("{HOSTS}{node}/ipv4/block/{}", cidr_segment(cidr)))
            .ok_or_else(|| {
                "a block affinity is named after its node and CIDR (node-a-10-65-0-0-26)"
                    .to_string()
            }),
        Layout::Handle => Ok(format!("{HANDLES}{name}")),
        Layout::Other => Ok(format!("{TAPWIRE}{kind}/{name}")),
    }
}

/// The prefix under which every object of `kind` lives (what a listing ranges over).
pub fn prefix(kind: &str) -> String {
    match layout(kind) {
        Layout::Resource(plural) => format!("{RESOURCES}{plural}/"),
        Layout::Block => BLOCKS.to_string(),
        Layout::Affinity => HOSTS.to_string(),
        Layout::Handle => HANDLES.to_string(),
        Layout::Other => format!("{TAPWIRE}{kind}/"),
    }
}

/// The object name a key under [`prefix`]`(kind)` stands for ([`key`] backwards); `None`
/// for a key of that range that is not one of this kind's (an IPv6 affinity of a Calico
/// cluster, say).
pub fn name(kind: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix(kind).as_str())?;
    let name = match layout(kind) {
        Layout::Resource(WORKLOAD_ENDPOINTS) => match rest.split_once('/') {
            Some((namespace, name)) if !namespace.contains('.') && !name.contains('/') => {
                format!("{namespace}.{name}")
            }
            Some(_) => return None,
            None if !rest.contains('.') => rest.to_string(),
            None => return None,
        },
        Layout::Resource(_) | Layout::Handle | Layout::Other => rest.to_string(),
        Layout::Block => IpamBlock::name_for(parse_cidr_segment(rest)?),
        Layout::Affinity => {
            let (node, block) = rest.split_once("/ipv4/block/")?;
            BlockAffinity::name_for(node, parse_cidr_segment(block)?)
        }
    };
    let round_trip = key_is(kind, &name, key);
    (round_trip && crate::model::check_object_name(&name).is_ok()).then_some(name)
}

/// The kinds Calico's layout places ([`layout`] is not [`Layout::Other`] for them).
const CALICO_KINDS: [&str; 8] = [
    "IPPool",
    "Node",
    "BGPPeer",
    "BGPConfiguration",
    "WorkloadEndpoint",
    "IPAMBlock",
    "BlockAffinity",
    "IPAMHandle",
];

/// The object (kind, name) a key stands for, as a watch event names it; `None` for a key
/// that is no object of tapwire's (a Calico key tapwire does not use).
pub fn object(key: &str) -> Option<(String, String)> {
    if let Some(rest) = key.strip_prefix(TAPWIRE) {
        let (kind, _) = rest.split_once('/')?;
        let kind_is_ours =
            layout(kind) == Layout::Other && crate::datastore::check_kind(kind).is_ok();
        return kind_is_ours
            .then(|| Some((kind.to_string(), name(kind, key)?)))
            .flatten();
    }
    CALICO_KINDS
        .iter()
        .find_map(|kind| Some((kind.to_string(), name(kind, key)?)))
}

fn key_is(kind: &str, name: &str, key: &str) -> bool {
    self::key(kind, name).is_ok_and(|k| k == key)
}

/// The end of the range of keys starting with `prefix` (etcd's `range_end`).
pub fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_calicos_and_map_back_to_names() {
        for (kind, name, key) in [
            (
                "IPPool",
                "default-ipv4-ippool",
                "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
            ),
            (
                "Node",
                "node-a.lab",
                "/calico/resources/v3/projectcalico.org/nodes/node-a.lab",
            ),
            (
                "WorkloadEndpoint",
                "kube-system.node--a-k8s-dns-eth0",
                "/calico/resources/v3/projectcalico.org/workloadendpoints/kube-system/node--a-k8s-dns-eth0",
            ),
            (
                "WorkloadEndpoint",
                "node--a-cni-0123abcd-eth0",
                "/calico/resources/v3/projectcalico.org/workloadendpoints/node--a-cni-0123abcd-eth0",
            ),
            (
                "IPAMBlock",
                "10-65-0-64-26",
                "/calico/ipam/v2/assignment/ipv4/block/10.65.0.64-26",
            ),
            (
                "BlockAffinity",
                "node-a-10-65-0-0-26",
                "/calico/ipam/v2/host/node-a/ipv4/block/10.65.0.0-26",
            ),
            (
                "BlockAffinity",
                "n.1-2-3-4-5-10-65-0-0-26",
                "/calico/ipam/v2/host/n.1-2-3-4-5/ipv4/block/10.65.0.0-26",
            ),
            (
                "IPAMHandle",
                "k8s-pod-network.abc123",
                "/calico/ipam/v2/handle/k8s-pod-network.abc123",
            ),
            (
                "BGPPeer",
                "rack1-tor",
                "/calico/resources/v3/projectcalico.org/bgppeers/rack1-tor",
            ),
            (
                "BGPConfiguration",
                "default",
                "/calico/resources/v3/projectcalico.org/bgpconfigurations/default",
            ),
            ("Counter", "c", "/calico/tapwire/Counter/c"),
        ] {
            assert_eq!(super::key(kind, name).unwrap(), key, "{kind} {name}");
            assert!(key.starts_with(&prefix(kind)), "{key}");
            assert!(key.starts_with(ROOT));
            assert_eq!(super::name(kind, key).as_deref(), Some(name), "{key}");
            assert_eq!(
                object(key),
                Some((kind.to_string(), name.to_string())),
                "{key}"
            );
        }
    }

    #[test]
    fn names_without_a_key_and_keys_of_others_are_refused() {
        for name in ["10-65-0-1-26", "10-65-0-0", "x"] {
            let err = key("IPAMBlock", name).unwrap_err();
            assert!(err.contains("named after its CIDR"), "{name}: {err}");
        }
        assert!(key("BlockAffinity", "10-65-0-0-26").is_err(), "no node");
        assert!(key("BlockAffinity", "node-a").is_err());
        // Calico keys tapwire does not use, in the ranges it lists.
        for (kind, key) in [
            (
                "BlockAffinity",
                "/calico/ipam/v2/host/node-a/ipv6/block/fd00::-122",
            ),
            (
                "IPAMBlock",
                "/calico/ipam/v2/assignment/ipv4/block/10.65.0.1-26",
            ),
            (
                "WorkloadEndpoint",
                "/calico/resources/v3/projectcalico.org/workloadendpoints/a.b/c",
            ),
            (
                "WorkloadEndpoint",
                "/calico/resources/v3/projectcalico.org/workloadendpoints/a.b",
            ),
            (
                "IPPool",
                "/calico/resources/v3/projectcalico.org/ippools/a/b",
            ),
            (
                "IPPool",
                "/calico/resources/v3/projectcalico.org/ippools/.hidden",
            ),
            ("IPPool", "/calico/resources/v3/projectcalico.org/nodes/a"),
        ] {
            assert_eq!(name(kind, key), None, "{key}");
            if kind != "IPPool" || !key.contains("/nodes/") {
                assert_eq!(object(key), None, "{key}");
            }
        }
        for key in [
            "/calico/felix/v2/x",
            "/calico/tapwire/Node/a",
            "/calico/tapwire/a",
            "/calico/tapwire/../a",
        ] {
            assert_eq!(object(key), None, "{key}");
        }
    }

    #[test]
    fn range_end_is_the_next_prefix() {
        assert_eq!(range_end("/calico/"), b"/calico0");
        assert_eq!(
            range_end("/calico/ipam/v2/handle/"),
            b"/calico/ipam/v2/handle0"
        );
    }
}
