//! The documents of tapwire's cluster state: plain serde data shaped like calicoctl's
//! (`apiVersion: projectcalico.org/v3`), and the node agent's TOML configuration.
//!
//! What users apply ([`IpPool`], [`Node`]) and what the control plane writes
//! ([`WorkloadEndpoint`], the IPAM documents [`IpamBlock`], [`BlockAffinity`],
//! [`IpamHandle`]) live here, with their validation. Specs reject unknown keys, naming the
//! key, so a typo is an error rather than a silently ignored setting.
//!
//! This module owns parsing and checking only: it does no I/O except
//! [`NodeConfig::load`] reading its one file. Storage is [`crate::datastore`]'s job,
//! address assignment [`crate::ipam`]'s and route computation [`crate::routes`]'s.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use ipnet::Ipv4Net;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
pub use tapwire_proto::text::{format_rfc3339, parse_rfc3339};

/// The `apiVersion` of every tapwire document, calicoctl's.
pub const API_VERSION: &str = "projectcalico.org/v3";
/// An IP pool's block size when `spec.blockSize` is absent (Calico's default).
pub const DEFAULT_BLOCK_SIZE: u8 = 26;
/// The smallest IPv4 block prefix length Calico allows (the largest blocks).
pub const MIN_BLOCK_SIZE: u8 = 20;
/// The largest IPv4 block prefix length (one address per block).
pub const MAX_BLOCK_SIZE: u8 = 32;
/// Object names (`metadata.name`) longer than this are rejected, everywhere
/// ([`check_object_name`]). Kubernetes allows 253, but the file store keeps an object in
/// `<name>.json` and writes it through `.<name>.json.tmp`, and a file name has at most 255
/// bytes.
pub const MAX_NAME_BYTES: usize = 240;

/// Ranges no pool may touch: link-local (169.254.1.1 is every pod's gateway), loopback and
/// multicast.
const RESERVED_RANGES: [(&str, Ipv4Addr, u8); 3] = [
    (
        "the IPv4 link-local range",
        Ipv4Addr::new(169, 254, 0, 0),
        16,
    ),
    ("the IPv4 loopback range", Ipv4Addr::new(127, 0, 0, 0), 8),
    ("the IPv4 multicast range", Ipv4Addr::new(224, 0, 0, 0), 4),
];

/// What is wrong with a document, a batch of documents or the node configuration.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The text is not valid YAML or JSON at all.
    #[error("invalid {format}: {message}")]
    Syntax {
        format: &'static str,
        message: String,
    },
    /// One document of a batch is wrong. `index` counts documents from 1 in the order they
    /// appear; `item` counts the items of a `kind: List` document from 1.
    #[error("document {index}{}{}: {}", item_label(*.item), doc_label(kind, name), error.detail())]
    InDocument {
        index: usize,
        item: Option<usize>,
        kind: Option<String>,
        name: Option<String>,
        error: Box<ModelError>,
    },
    /// A required top-level key is absent.
    #[error("missing {field}")]
    Missing { field: &'static str },
    #[error("apiVersion {found:?} is not supported (expected {API_VERSION:?})")]
    ApiVersion { found: String },
    /// A document's `kind` is not the one being read.
    #[error("kind {found:?} where {expected} was expected")]
    WrongKind {
        found: String,
        expected: &'static str,
    },
    /// `kind` names nothing a user can apply.
    #[error("kind {found:?} cannot be applied (expected one of: IPPool, Node, or a List of them)")]
    UnknownKind { found: String },
    /// The document does not have the shape of its kind (unknown key, wrong type, …).
    #[error("{kind} {name:?}: {message}")]
    Decode {
        kind: String,
        name: String,
        message: String,
    },
    /// The document has the right shape but a value is not acceptable.
    #[error("{kind} {name:?}: {field}: {reason}")]
    Invalid {
        kind: &'static str,
        name: String,
        field: &'static str,
        reason: String,
    },
}

impl ModelError {
    /// The message without the "kind name:" subject, for when the caller names it.
    pub fn detail(&self) -> String {
        match self {
            ModelError::Decode { message, .. } => message.clone(),
            ModelError::Invalid { field, reason, .. } => format!("{field}: {reason}"),
            other => other.to_string(),
        }
    }
}

fn item_label(item: Option<usize>) -> String {
    item.map(|i| format!(", item {i}")).unwrap_or_default()
}

fn doc_label(kind: &Option<String>, name: &Option<String>) -> String {
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n:?})"),
        (Some(k), None) => format!(" ({k})"),
        (None, Some(n)) => format!(" ({n:?})"),
        (None, None) => String::new(),
    }
}

/// Why the node configuration could not be loaded. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key (named) or a wrong type; the message has line and column.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// The TOML is well-formed but a value is not acceptable.
    #[error("{}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

// ---------------------------------------------------------------------------------------
// Shared pieces: metadata, MAC addresses, CIDR (de)serialization.

/// Kubernetes-style object metadata, as calicoctl prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The datastore's revision of this object; set by the datastore on every read and
    /// write, and the compare-and-swap token of an update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Metadata {
        Metadata {
            name: name.into(),
            ..Metadata::default()
        }
    }

    /// `resourceVersion` as a number, when it is one.
    pub fn revision(&self) -> Option<u64> {
        self.resource_version.as_deref()?.parse().ok()
    }
}

/// A typed document kind: how the datastore and the parsers know its `kind` string and
/// where its metadata is.
pub trait Resource: Serialize + DeserializeOwned + Clone + fmt::Debug {
    /// The document's `kind` (and the datastore's key for its collection).
    const KIND: &'static str;
    fn metadata(&self) -> &Metadata;
    fn metadata_mut(&mut self) -> &mut Metadata;
    fn name(&self) -> &str {
        &self.metadata().name
    }
}

macro_rules! resource {
    ($ty:ty, $kind:literal) => {
        impl Resource for $ty {
            const KIND: &'static str = $kind;
            fn metadata(&self) -> &Metadata {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut Metadata {
                &mut self.metadata
            }
        }
    };
}

/// An Ethernet MAC address; written `aa:bb:cc:dd:ee:ff` (parsing also accepts upper case
/// and `-` separators).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Calico's VTEP MAC for a node that has none configured: `0x66`, then the first five
    /// bytes of SHA-1 of the node name.
    pub fn derived_vtep(node: &str) -> MacAddr {
        let digest = sha1_smol::Sha1::from(node.as_bytes()).digest().bytes();
        MacAddr([0x66, digest[0], digest[1], digest[2], digest[3], digest[4]])
    }

    /// A multicast (group) address: the low bit of the first byte.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&tapwire_proto::text::format_mac(self.0))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not six hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected six hex bytes like aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<MacAddr, MacParseError> {
        tapwire_proto::text::parse_mac(s)
            .map(MacAddr)
            .ok_or_else(|| MacParseError(s.to_string()))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// Parses a pool or block CIDR (`10.65.0.0/16`); the prefix length is required.
/// Host bits are accepted here and rejected by validation, which can say which were set.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    if s.contains(':') {
        return Err(format!(
            "{s:?} is an IPv6 CIDR; tapwire pools and blocks are IPv4-only"
        ));
    }
    if !s.contains('/') {
        return Err(format!(
            "invalid CIDR {s:?}: missing the prefix length (e.g. 10.65.0.0/16)"
        ));
    }
    Ipv4Net::from_str(s)
        .map_err(|_| format!("invalid CIDR {s:?} (expected an IPv4 network like 10.65.0.0/16)"))
}

/// Parses an interface address with its subnet (`192.168.0.1/24`); a bare address means
/// a /32.
pub fn parse_interface_address(s: &str) -> Result<Ipv4Net, String> {
    if !s.contains('/') {
        if let Ok(addr) = Ipv4Addr::from_str(s) {
            return Ok(Ipv4Net::from(addr));
        }
    }
    parse_cidr(s)
}

/// `serde(with)` for one CIDR as a string.
mod cidr {
    use super::*;

    pub fn serialize<S: Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        parse_cidr(&s).map_err(D::Error::custom)
    }
}

/// `serde(with)` for a list of CIDRs as strings.
mod cidr_list {
    use super::*;

    pub fn serialize<S: Serializer>(nets: &[Ipv4Net], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(|n| n.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Net>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings
            .iter()
            .map(|s| parse_cidr(s).map_err(D::Error::custom))
            .collect()
    }
}

/// `serde(with)` for an interface address with subnet.
mod interface_address {
    use super::*;

    pub fn serialize<S: Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        parse_interface_address(&s).map_err(D::Error::custom)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The rule every stored object's name follows (the datastore's keys, and so also every
/// name [`validate_name`] accepts): not empty, at most [`MAX_NAME_BYTES`], no `/`, NUL or
/// control character, no leading `.` (which also rules out `.` and `..`). The reason when
/// it does not.
pub fn check_object_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(format!("{c:?} is not allowed"));
    }
    Ok(())
}

/// Checks a user-chosen object name: a stored object's name ([`check_object_name`]) that
/// is also a DNS subdomain the way Kubernetes checks one: lower-case letters, digits, `-`
/// and `.`, starting and ending with a letter or digit.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), ModelError> {
    let invalid = |reason: String| ModelError::Invalid {
        kind,
        name: name.to_string(),
        field: "metadata.name",
        reason,
    };
    check_object_name(name).map_err(invalid)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(invalid(format!(
            "{c:?} is not allowed (use lower-case letters, digits, '-' and '.')"
        )));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(invalid(
            "must start and end with a letter or digit".to_string(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// IPPool

/// When a pool's traffic between nodes is encapsulated (`ipipMode`, `vxlanMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncapMode {
    /// Always encapsulate.
    Always,
    /// Encapsulate only towards nodes in another underlay subnet.
    CrossSubnet,
    /// Never encapsulate.
    #[default]
    Never,
}

impl EncapMode {
    /// Whether this mode ever encapsulates.
    pub fn is_enabled(self) -> bool {
        self != EncapMode::Never
    }

    /// Whether traffic to a node is encapsulated, given whether that node shares this
    /// node's underlay subnet.
    pub fn encapsulates(self, same_subnet: bool) -> bool {
        match self {
            EncapMode::Always => true,
            EncapMode::CrossSubnet => !same_subnet,
            EncapMode::Never => false,
        }
    }

    /// The string Felix sends in `IPAMPool` (`"always"`, `"cross-subnet"`, `""`).
    pub fn felix_name(self) -> &'static str {
        match self {
            EncapMode::Always => "always",
            EncapMode::CrossSubnet => "cross-subnet",
            EncapMode::Never => "",
        }
    }
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
            EncapMode::Never => "Never",
        })
    }
}

/// What addresses of a pool may be used for (Calico's `allowedUses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
}

impl AllowedUse {
    /// The name as written in documents and sent to the dataplane.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowedUse::Workload => "Workload",
            AllowedUse::Tunnel => "Tunnel",
        }
    }
}

/// `kind: IPPool`: a range pods get addresses from, and how its blocks are reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPool {
    pub metadata: Metadata,
    pub spec: IpPoolSpec,
}
resource!(IpPool, "IPPool");

/// The settings of an [`IpPool`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(with = "cidr")]
    pub cidr: Ipv4Net,
    /// The prefix length of the blocks the pool is cut into.
    #[serde(default = "default_block_size")]
    pub block_size: u8,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    /// Masquerade pod traffic leaving the pools.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// No new blocks or addresses come from a disabled pool; existing ones keep routing.
    #[serde(default)]
    pub disabled: bool,
    /// Accepted for calicoctl compatibility; tapwire supports only `all()` (every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// Accepted for calicoctl compatibility and passed to the dataplane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    /// Accepted for calicoctl compatibility; tapwire has no BGP, so it has no effect.
    #[serde(default, rename = "disableBGPExport", skip_serializing_if = "is_false")]
    pub disable_bgp_export: bool,
}

fn default_block_size() -> u8 {
    DEFAULT_BLOCK_SIZE
}

impl IpPool {
    /// A pool with Calico's defaults (/26 blocks, no encapsulation).
    pub fn new(name: impl Into<String>, cidr: Ipv4Net) -> IpPool {
        IpPool {
            metadata: Metadata::named(name),
            spec: IpPoolSpec {
                cidr,
                block_size: DEFAULT_BLOCK_SIZE,
                ipip_mode: EncapMode::Never,
                vxlan_mode: EncapMode::Never,
                nat_outgoing: false,
                disabled: false,
                node_selector: None,
                allowed_uses: Vec::new(),
                disable_bgp_export: false,
            },
        }
    }

    fn invalid(&self, field: &'static str, reason: String) -> ModelError {
        ModelError::Invalid {
            kind: Self::KIND,
            name: self.metadata.name.clone(),
            field,
            reason,
        }
    }

    /// Checks the pool on its own: name, CIDR (no host bits, no reserved range), block
    /// size, and at most one encapsulation.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name(Self::KIND, &self.metadata.name)?;
        let cidr = self.spec.cidr;
        if cidr != cidr.trunc() {
            return Err(self.invalid(
                "spec.cidr",
                format!("{cidr} has host bits set (the network is {})", cidr.trunc()),
            ));
        }
        for (what, addr, len) in RESERVED_RANGES {
            let reserved = Ipv4Net::new(addr, len).unwrap_or_default();
            if nets_overlap(cidr, reserved) {
                return Err(self.invalid("spec.cidr", format!("{cidr} overlaps {what} {reserved}")));
            }
        }
        let block = self.spec.block_size;
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block) {
            return Err(self.invalid(
                "spec.blockSize",
                format!(
                    "{block} is out of range (IPv4 allows {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE})"
                ),
            ));
        }
        if block < cidr.prefix_len() {
            return Err(self.invalid(
                "spec.blockSize",
                format!(
                    "/{block} blocks do not fit in the /{} pool {cidr} (blockSize must be at least the pool's prefix length)",
                    cidr.prefix_len()
                ),
            ));
        }
        if self.spec.ipip_mode.is_enabled() && self.spec.vxlan_mode.is_enabled() {
            return Err(self.invalid(
                "spec.ipipMode",
                format!(
                    "ipipMode {} and vxlanMode {} are both enabled; a pool uses at most one encapsulation",
                    self.spec.ipip_mode, self.spec.vxlan_mode
                ),
            ));
        }
        if let Some(selector) = &self.spec.node_selector {
            let selector = selector.trim();
            if !selector.is_empty() && selector != "all()" {
                return Err(self.invalid(
                    "spec.nodeSelector",
                    format!("{selector:?} is not supported; tapwire pools apply to all() nodes"),
                ));
            }
        }
        Ok(())
    }

    /// Checks that this pool overlaps none of `others` (a pool of the same name is the
    /// one being replaced and is skipped).
    pub fn check_overlap<'a>(
        &self,
        others: impl IntoIterator<Item = &'a IpPool>,
    ) -> Result<(), ModelError> {
        for other in others {
            if other.metadata.name != self.metadata.name
                && nets_overlap(self.spec.cidr, other.spec.cidr)
            {
                return Err(self.invalid(
                    "spec.cidr",
                    format!(
                        "{} overlaps IPPool {:?} ({})",
                        self.spec.cidr, other.metadata.name, other.spec.cidr
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that replacing `old` (the stored pool of the same name) by this one changes
    /// nothing that claimed blocks depend on: the CIDR and the block size are fixed for
    /// the life of a pool (delete it and create a new one instead).
    pub fn check_update(&self, old: &IpPool) -> Result<(), ModelError> {
        if self.spec.cidr != old.spec.cidr {
            return Err(self.invalid(
                "spec.cidr",
                format!(
                    "cannot change from {} to {}; create a new pool instead",
                    old.spec.cidr, self.spec.cidr
                ),
            ));
        }
        if self.spec.block_size != old.spec.block_size {
            return Err(self.invalid(
                "spec.blockSize",
                format!(
                    "cannot change from {} to {}; create a new pool instead",
                    old.spec.block_size, self.spec.block_size
                ),
            ));
        }
        Ok(())
    }

    /// The encapsulation this pool uses (IPIP or VXLAN, whichever mode is enabled).
    pub fn encapsulation(&self) -> PoolEncap {
        if self.spec.ipip_mode.is_enabled() {
            PoolEncap::Ipip(self.spec.ipip_mode)
        } else if self.spec.vxlan_mode.is_enabled() {
            PoolEncap::Vxlan(self.spec.vxlan_mode)
        } else {
            PoolEncap::None
        }
    }
}

/// A valid pool's encapsulation, with the mode of the enabled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEncap {
    None,
    Ipip(EncapMode),
    Vxlan(EncapMode),
}

/// Whether two networks share an address.
pub fn nets_overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

// ---------------------------------------------------------------------------------------
// Node

/// `kind: Node`: a node of the cluster, either registered by its own tapwire control or
/// declared by hand for a host that does not run tapwire (e.g. one using the kernel's
/// VXLAN as Calico's Linux dataplane does).
///
/// Which of the two it is shows in `status.tapwire`: a tapwire control writes it when it
/// registers its node and refreshes its heartbeat; a declared host has none. (Status is
/// observed state, so it is the place for "who manages this", and `tapwirectl apply` of a
/// spec never has to say.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default, skip_serializing_if = "NodeStatus::is_empty")]
    pub status: NodeStatus,
}
resource!(Node, "Node");

/// The desired facts of a [`Node`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// Calico keeps the node's underlay address under `bgp`; tapwire has no BGP but
    /// keeps the shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    /// The node's VXLAN tunnel address, when it has one.
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<Ipv4Addr>,
    /// The node's VTEP MAC; derived from the name when absent ([`MacAddr::derived_vtep`]).
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<MacAddr>,
    /// tapwire extension: fixed pod blocks of a host whose addresses tapwire's IPAM does
    /// not assign (a declared host). IPAM never hands out addresses inside them.
    #[serde(
        default,
        rename = "podCIDRs",
        with = "cidr_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub pod_cidrs: Vec<Ipv4Net>,
}

/// Calico's `spec.bgp`: here only the underlay address matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeBgpSpec {
    /// The underlay address with its subnet (`192.168.0.1/24`); the subnet decides
    /// which peers `CrossSubnet` pools reach unencapsulated.
    #[serde(rename = "ipv4Address", with = "interface_address")]
    pub ipv4_address: Ipv4Net,
    /// Calico's IPIP tunnel address; kept for compatibility, unused by tapwire.
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<Ipv4Addr>,
    /// Calico's AS number; passed to the dataplane in host metadata, otherwise unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
}

/// Observed state of a [`Node`]. Unknown keys are ignored here (status is written by
/// the system, and documents exported from Calico carry status fields tapwire has not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Present when a tapwire control manages the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tapwire: Option<TapwireNodeStatus>,
}

impl NodeStatus {
    pub fn is_empty(&self) -> bool {
        self.tapwire.is_none()
    }
}

/// What a node's tapwire control reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapwireNodeStatus {
    /// When the control last refreshed this status, RFC 3339 UTC ([`format_rfc3339`]).
    pub last_heartbeat: String,
    /// The underlay interface the control found the node's address on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub underlay_interface: String,
    /// Whether the node's dataplane has applied the control's full state.
    #[serde(default)]
    pub dataplane_in_sync: bool,
}

impl Node {
    /// A node with an underlay address and nothing else.
    pub fn new(name: impl Into<String>, underlay: Ipv4Net) -> Node {
        Node {
            metadata: Metadata::named(name),
            spec: NodeSpec {
                bgp: Some(NodeBgpSpec {
                    ipv4_address: underlay,
                    ipv4_ipip_tunnel_addr: None,
                    as_number: None,
                }),
                ..NodeSpec::default()
            },
            status: NodeStatus::default(),
        }
    }

    fn invalid(&self, field: &'static str, reason: String) -> ModelError {
        ModelError::Invalid {
            kind: Self::KIND,
            name: self.metadata.name.clone(),
            field,
            reason,
        }
    }

    /// The underlay address with its subnet.
    pub fn underlay(&self) -> Option<Ipv4Net> {
        self.spec.bgp.as_ref().map(|b| b.ipv4_address)
    }

    /// The VTEP MAC: the configured one, else Calico's derivation from the name.
    pub fn vtep_mac(&self) -> MacAddr {
        self.spec
            .vxlan_tunnel_mac_addr
            .unwrap_or_else(|| MacAddr::derived_vtep(&self.metadata.name))
    }

    /// Whether a tapwire control manages this node (see [`Node`]).
    pub fn is_managed(&self) -> bool {
        self.status.tapwire.is_some()
    }

    /// Checks the node: name, an underlay address, a unicast VTEP MAC, pod CIDRs without
    /// host bits and not overlapping each other.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name(Self::KIND, &self.metadata.name)?;
        let Some(underlay) = self.underlay() else {
            return Err(self.invalid(
                "spec.bgp.ipv4Address",
                "required: the node's underlay address with its subnet, e.g. 192.168.0.1/24".into(),
            ));
        };
        let addr = underlay.addr();
        if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
            return Err(self.invalid(
                "spec.bgp.ipv4Address",
                format!("{addr} cannot be a node's underlay address"),
            ));
        }
        if let Some(mac) = self.spec.vxlan_tunnel_mac_addr {
            if mac.is_multicast() || mac.0 == [0; 6] {
                return Err(self.invalid(
                    "spec.vxlanTunnelMACAddr",
                    format!("{mac} is not a unicast MAC address"),
                ));
            }
        }
        for (i, net) in self.spec.pod_cidrs.iter().enumerate() {
            if *net != net.trunc() {
                return Err(self.invalid(
                    "spec.podCIDRs",
                    format!("{net} has host bits set (the network is {})", net.trunc()),
                ));
            }
            if let Some(other) = self.spec.pod_cidrs[..i]
                .iter()
                .find(|o| nets_overlap(**o, *net))
            {
                return Err(self.invalid("spec.podCIDRs", format!("{net} overlaps {other}")));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// WorkloadEndpoint

/// `kind: WorkloadEndpoint`: one pod interface, written by the control plane on a CNI ADD
/// and deleted on DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEndpoint {
    pub metadata: Metadata,
    pub spec: WorkloadEndpointSpec,
}
resource!(WorkloadEndpoint, "WorkloadEndpoint");

/// The facts of a [`WorkloadEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    /// The node the pod runs on.
    pub node: String,
    /// `k8s` for Kubernetes pods, `cni` for anything else a runtime started.
    pub orchestrator: String,
    /// The pod name (Kubernetes) or the container id.
    pub workload: String,
    /// The interface's name as the orchestrator knows it (`eth0`).
    pub endpoint: String,
    /// The interface's device name (with tapwire: the TAP inside the pod, `eth0`).
    pub interface_name: String,
    /// The pod's addresses, `/32`s.
    #[serde(with = "cidr_list")]
    pub ip_networks: Vec<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// tapwire: the pod's network namespace path, where its TAP lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The runtime's container id (the CNI `CNI_CONTAINERID`).
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}

#[cfg(test)]
impl WorkloadEndpoint {
    /// The endpoint the agent writes for CNI pod `container_id` on `node` (tests).
    pub(crate) fn cni_pod(node: &str, container_id: &str, address: Ipv4Net) -> WorkloadEndpoint {
        WorkloadEndpoint {
            metadata: Metadata::named(format!("{node}-cni-{container_id}-eth0")),
            spec: WorkloadEndpointSpec {
                node: node.to_string(),
                orchestrator: "cni".into(),
                workload: container_id.to_string(),
                endpoint: "eth0".into(),
                interface_name: "eth0".into(),
                ip_networks: vec![address],
                mac: None,
                netns: None,
                container_id: Some(container_id.to_string()),
                profiles: Vec::new(),
            },
        }
    }
}

impl WorkloadEndpoint {
    /// Calico's endpoint name: node, orchestrator, workload and endpoint joined by `-`,
    /// with each part's own dashes doubled (`node-a`, `k8s`, `web-1`, `eth0` →
    /// `node--a-k8s-web--1-eth0`).
    pub fn calico_name(node: &str, orchestrator: &str, workload: &str, endpoint: &str) -> String {
        [node, orchestrator, workload, endpoint]
            .iter()
            .map(|part| part.replace('-', "--"))
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The workload id Felix uses: `namespace/workload` when namespaced, else the workload.
    pub fn workload_id(&self) -> String {
        match &self.metadata.namespace {
            Some(ns) if !ns.is_empty() => format!("{ns}/{}", self.spec.workload),
            _ => self.spec.workload.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// IPAM documents: a simpler equivalent of Calico's.
//
// Calico keeps, per block, an allocations array indexing into an attributes array plus an
// `unallocated` free list, and moves BlockAffinity through pending → confirmed →
// pendingDeletion. tapwire keeps:
// - IPAMBlock: the block's CIDR, its affinity (`host:<node>`) and a map ordinal → handle.
//   Creating the block document *is* the claim (a compare-and-swap create), so it is the
//   source of truth for who owns a block and which addresses are taken.
// - BlockAffinity: an index (node, CIDR) written after the block and removed after it,
//   which is why only the `confirmed` state exists.
// - IPAMHandle: handle id → its one address, an index so a release needs no block scan.

/// `kind: IPAMBlock`: a block of a pool, claimed by one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamBlock {
    pub metadata: Metadata,
    pub spec: IpamBlockSpec,
}
resource!(IpamBlock, "IPAMBlock");

/// The contents of an [`IpamBlock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpamBlockSpec {
    #[serde(with = "cidr")]
    pub cidr: Ipv4Net,
    /// `host:<node>`, Calico's spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Address ordinal within the block (0 = the block's first address) → handle id.
    #[serde(default)]
    pub allocations: BTreeMap<u32, String>,
}

impl IpamBlock {
    /// An empty block affine to `node`.
    pub fn new(cidr: Ipv4Net, node: &str) -> IpamBlock {
        IpamBlock {
            metadata: Metadata::named(Self::name_for(cidr)),
            spec: IpamBlockSpec {
                cidr,
                affinity: Some(format!("host:{node}")),
                allocations: BTreeMap::new(),
            },
        }
    }

    /// The document name of the block `cidr`: `10.65.0.64/26` → `10-65-0-64-26` (Calico's).
    pub fn name_for(cidr: Ipv4Net) -> String {
        cidr.to_string().replace(['.', '/'], "-")
    }

    /// The CIDR a block document name stands for ([`IpamBlock::name_for`] backwards), so
    /// that a damaged block still tells which range it claims. `None` for any other name.
    pub fn cidr_from_name(name: &str) -> Option<Ipv4Net> {
        let parts: Vec<&str> = name.split('-').collect();
        let [a, b, c, d, len] = parts.as_slice() else {
            return None;
        };
        let cidr: Ipv4Net = format!("{a}.{b}.{c}.{d}/{len}").parse().ok()?;
        (Self::name_for(cidr) == name && cidr == cidr.trunc()).then_some(cidr)
    }

    /// The node the block is affine to.
    pub fn node(&self) -> Option<&str> {
        self.spec.affinity.as_deref()?.strip_prefix("host:")
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.spec.cidr.prefix_len().min(32)))
    }

    /// The address of `ordinal`, if inside the block.
    pub fn address(&self, ordinal: u32) -> Option<Ipv4Addr> {
        (u64::from(ordinal) < self.size())
            .then(|| Ipv4Addr::from(u32::from(self.spec.cidr.network()).wrapping_add(ordinal)))
    }

    /// The ordinal of `addr`, if inside the block.
    pub fn ordinal(&self, addr: Ipv4Addr) -> Option<u32> {
        self.spec
            .cidr
            .contains(&addr)
            .then(|| u32::from(addr).wrapping_sub(u32::from(self.spec.cidr.network())))
    }

    /// The lowest ordinal not allocated.
    pub fn lowest_free(&self) -> Option<u32> {
        let mut expected = 0u32;
        for &ordinal in self.spec.allocations.keys() {
            if ordinal != expected {
                break;
            }
            expected += 1;
        }
        (u64::from(expected) < self.size()).then_some(expected)
    }

    /// The ordinal allocated to `handle`, if any.
    pub fn ordinal_of_handle(&self, handle: &str) -> Option<u32> {
        self.spec
            .allocations
            .iter()
            .find(|(_, h)| h.as_str() == handle)
            .map(|(o, _)| *o)
    }
}

/// The state of a [`BlockAffinity`]. tapwire's claim is the block document itself, so an
/// affinity is only ever written once the claim is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    #[default]
    Confirmed,
}

/// `kind: BlockAffinity`: node ↔ block, as `calicoctl ipam show --show-blocks` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockAffinity {
    pub metadata: Metadata,
    pub spec: BlockAffinitySpec,
}
resource!(BlockAffinity, "BlockAffinity");

/// The contents of a [`BlockAffinity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlockAffinitySpec {
    #[serde(default)]
    pub state: AffinityState,
    pub node: String,
    #[serde(with = "cidr")]
    pub cidr: Ipv4Net,
}

impl BlockAffinity {
    pub fn new(node: &str, cidr: Ipv4Net) -> BlockAffinity {
        BlockAffinity {
            metadata: Metadata::named(Self::name_for(node, cidr)),
            spec: BlockAffinitySpec {
                state: AffinityState::Confirmed,
                node: node.to_string(),
                cidr,
            },
        }
    }

    /// `node-a` + `10.65.0.0/26` → `node-a-10-65-0-0-26` (Calico's).
    pub fn name_for(node: &str, cidr: Ipv4Net) -> String {
        format!("{node}-{}", IpamBlock::name_for(cidr))
    }
}

/// `kind: IPAMHandle`: the address a handle (one pod's allocation) holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamHandle {
    pub metadata: Metadata,
    pub spec: IpamHandleSpec,
}
resource!(IpamHandle, "IPAMHandle");

/// The contents of an [`IpamHandle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpamHandleSpec {
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// The block holding the address.
    #[serde(with = "cidr")]
    pub block: Ipv4Net,
    pub address: Ipv4Addr,
    /// When the allocation was made (or, for one found without its handle, first seen),
    /// RFC 3339 UTC ([`format_rfc3339`]); Calico's `timestamp` attribute. The orphan sweep
    /// leaves allocations younger than an ADD could take alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl IpamHandle {
    pub fn new(
        handle_id: &str,
        block: Ipv4Net,
        address: Ipv4Addr,
        allocated: SystemTime,
    ) -> IpamHandle {
        IpamHandle {
            metadata: Metadata::named(handle_id),
            spec: IpamHandleSpec {
                handle_id: handle_id.to_string(),
                block,
                address,
                timestamp: Some(format_rfc3339(allocated)),
            },
        }
    }

    /// When the allocation was made, if recorded.
    pub fn allocated_at(&self) -> Option<SystemTime> {
        parse_rfc3339(self.spec.timestamp.as_deref()?)
    }
}

// ---------------------------------------------------------------------------------------
// Documents as users apply them.

/// A document a user can apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    IpPool(IpPool),
    Node(Node),
}

impl Document {
    pub fn kind(&self) -> &'static str {
        match self {
            Document::IpPool(_) => IpPool::KIND,
            Document::Node(_) => Node::KIND,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Document::IpPool(p) => p.name(),
            Document::Node(n) => n.name(),
        }
    }

    /// Checks the document on its own (see [`IpPool::validate`], [`Node::validate`]).
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Document::IpPool(p) => p.validate(),
            Document::Node(n) => n.validate(),
        }
    }

    /// The calicoctl-shaped value (`apiVersion`, `kind`, `metadata`, `spec`, …).
    pub fn to_value(&self) -> Value {
        match self {
            Document::IpPool(p) => to_document_value(p),
            Document::Node(n) => to_document_value(n),
        }
    }
}

/// Checks a batch about to be applied, before anything is written: every document on its
/// own, no two documents with the same kind and name, no pool overlapping another pool of
/// the batch or an `existing` one (pools of the same name are replaced, not overlapped),
/// and no pool changing the CIDR or block size of its stored version. Errors name the
/// document by position.
pub fn check_batch(docs: &[Document], existing_pools: &[IpPool]) -> Result<(), ModelError> {
    let at = |index: usize, doc: &Document, error: ModelError| ModelError::InDocument {
        index: index + 1,
        item: None,
        kind: Some(doc.kind().to_string()),
        name: Some(doc.name().to_string()),
        error: Box::new(error),
    };
    let batch_pools: Vec<&IpPool> = docs
        .iter()
        .filter_map(|d| match d {
            Document::IpPool(p) => Some(p),
            Document::Node(_) => None,
        })
        .collect();
    for (i, doc) in docs.iter().enumerate() {
        doc.validate().map_err(|e| at(i, doc, e))?;
        if let Some(first) = docs[..i]
            .iter()
            .position(|d| d.kind() == doc.kind() && d.name() == doc.name())
        {
            return Err(at(
                i,
                doc,
                ModelError::Invalid {
                    kind: doc.kind(),
                    name: doc.name().to_string(),
                    field: "metadata.name",
                    reason: format!("also defined by document {}", first + 1),
                },
            ));
        }
        if let Document::IpPool(pool) = doc {
            // Stored pools that the batch replaces do not count as existing.
            let kept = existing_pools
                .iter()
                .filter(|e| !batch_pools.iter().any(|b| b.name() == e.name()));
            pool.check_overlap(kept.chain(batch_pools.iter().copied()))
                .map_err(|e| at(i, doc, e))?;
            if let Some(old) = existing_pools.iter().find(|e| e.name() == pool.name()) {
                pool.check_update(old).map_err(|e| at(i, doc, e))?;
            }
        }
    }
    Ok(())
}

/// Parses documents a user applies: YAML (one document, several separated by `---`, or a
/// `kind: List` / `kind: IPPoolList`… with `items`) or JSON (one object, an array of
/// objects, or a List). Empty YAML documents are skipped. Each document is decoded
/// strictly: unknown keys are errors naming the key, and errors name the document by
/// position, kind and name. Documents are not validated here (see [`check_batch`]).
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ModelError> {
    let values = parse_values(text)?;
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let index = i + 1;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(ModelError::InDocument {
                        index,
                        item: None,
                        kind: Some(kind.to_string()),
                        name: None,
                        error: Box::new(ModelError::Decode {
                            kind: kind.to_string(),
                            name: String::new(),
                            message: "items must be a list of documents".into(),
                        }),
                    })
                }
            };
            for (j, item) in items.into_iter().enumerate() {
                docs.push(parse_document(item, index, Some(j + 1))?);
            }
        } else {
            docs.push(parse_document(value, index, None)?);
        }
    }
    Ok(docs)
}

/// Splits text into untyped documents: JSON when it starts with `{` or `[`, else YAML.
fn parse_values(text: &str) -> Result<Vec<Value>, ModelError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match serde_json::from_str(text) {
            Ok(Value::Array(items)) => return Ok(items),
            Ok(other) => return Ok(vec![other]),
            // YAML flow style (`[{kind: IPPool, …}]`) also starts like this.
            Err(e) => {
                return parse_yaml(text).map_err(|_| ModelError::Syntax {
                    format: "JSON",
                    message: e.to_string(),
                })
            }
        }
    }
    parse_yaml(text)
}

fn parse_yaml(text: &str) -> Result<Vec<Value>, ModelError> {
    let mut values = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ModelError::Syntax {
            format: "YAML",
            message: format!("document {}: {e}", i + 1),
        })?;
        match value {
            // A top-level sequence of documents, as JSON arrays are read.
            Value::Array(items) => values.extend(items),
            other => values.push(other),
        }
    }
    Ok(values)
}

fn parse_document(value: Value, index: usize, item: Option<usize>) -> Result<Document, ModelError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let wrap = |error: ModelError| ModelError::InDocument {
        index,
        item,
        kind: kind.clone(),
        name: name.clone(),
        error: Box::new(error),
    };
    match kind.as_deref() {
        Some(IpPool::KIND) => from_document_value(value).map(Document::IpPool),
        Some(Node::KIND) => from_document_value(value).map(Document::Node),
        Some(other) => Err(ModelError::UnknownKind {
            found: other.to_string(),
        }),
        None if !value.is_object() => Err(ModelError::Decode {
            kind: String::new(),
            name: String::new(),
            message: format!(
                "expected a document (a mapping), found {}",
                json_type(&value)
            ),
        }),
        None => Err(ModelError::Missing { field: "kind" }),
    }
    .map_err(wrap)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Decodes one calicoctl-shaped document of kind `T`: checks `apiVersion` and `kind`,
/// then decodes the rest strictly.
pub fn from_document_value<T: Resource>(value: Value) -> Result<T, ModelError> {
    let Value::Object(mut map) = value else {
        return Err(ModelError::Decode {
            kind: T::KIND.to_string(),
            name: String::new(),
            message: format!("expected a mapping, found {}", json_type(&value)),
        });
    };
    match map.remove("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            return Err(ModelError::ApiVersion {
                found: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
            })
        }
        None => {
            return Err(ModelError::Missing {
                field: "apiVersion",
            })
        }
    }
    match map.remove("kind") {
        Some(Value::String(k)) if k == T::KIND => {}
        Some(other) => {
            return Err(ModelError::WrongKind {
                found: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
                expected: T::KIND,
            })
        }
        None => return Err(ModelError::Missing { field: "kind" }),
    }
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        ModelError::Decode {
            kind: T::KIND.to_string(),
            name,
            message,
        }
    })
}

/// The calicoctl-shaped value of a document: `apiVersion`, `kind`, then its fields.
pub fn to_document_value<T: Resource>(doc: &T) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("apiVersion".into(), Value::String(API_VERSION.into()));
    map.insert("kind".into(), Value::String(T::KIND.into()));
    // Serializing plain data with string keys cannot fail; an empty object would be the
    // only (unreachable) fallback.
    if let Ok(Value::Object(fields)) = serde_json::to_value(doc) {
        map.extend(fields);
    }
    Value::Object(map)
}

// ---------------------------------------------------------------------------------------
// Time stamps for heartbeats (RFC 3339, UTC, whole seconds).

// ---------------------------------------------------------------------------------------
// Node configuration (TOML)

/// Where `tapwire-control` serves the dataplane when the config does not say.
pub const DEFAULT_DATAPLANE_SOCKET: &str = "/run/tapwire/dataplane.sock";
/// Where `tapwire-control` serves the CLI and the CNI plugin when the config does not say.
pub const DEFAULT_API_SOCKET: &str = "/run/tapwire/api.sock";
/// The host path TAP the dataplane creates and control routes the pools through, when the
/// config does not say.
pub const DEFAULT_HOST_INTERFACE: &str = "tapwire0";
/// The file datastore's directory when the config does not say.
pub const DEFAULT_DATASTORE_PATH: &str = "/var/lib/tapwire";

/// `tapwire-control --config node.toml`:
///
/// ```toml
/// node = "node-a"
/// underlay_interface = "eth0"
/// host_interface = "tapwire0"                        # optional; "" = no host path
/// dataplane_socket = "/run/tapwire/dataplane.sock"   # optional
/// api_socket = "/run/tapwire/api.sock"               # optional
/// metrics_addr = "127.0.0.1:9102"                    # optional: Prometheus metrics
///
/// [datastore]                                        # optional: this is the default
/// kind = "file"
/// path = "/var/lib/tapwire"
/// ```
///
/// or, for a cluster of several hosts, etcd v3 ([`EtcdConfig`]):
///
/// ```toml
/// [datastore]
/// kind = "etcd"
/// endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
/// ca_file = "/etc/tapwire/etcd-ca.pem"               # optional: verifies the servers
/// cert_file = "/etc/tapwire/etcd-client.pem"         # optional, with key_file: mutual TLS
/// key_file = "/etc/tapwire/etcd-client-key.pem"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name in the datastore.
    pub node: String,
    /// The interface carrying traffic between nodes; the node's underlay address is read
    /// from it.
    pub underlay_interface: String,
    /// The dataplane's host path TAP: control routes the pool CIDRs into it and programs
    /// natOutgoing (nftables table `ip tapwire`). Empty: control leaves the node's
    /// kernel alone.
    #[serde(default = "default_host_interface")]
    pub host_interface: String,
    #[serde(default = "default_dataplane_socket")]
    pub dataplane_socket: PathBuf,
    #[serde(default = "default_api_socket")]
    pub api_socket: PathBuf,
    /// Where Prometheus metrics are served (`127.0.0.1:9102`); absent: nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub datastore: DatastoreConfig,
}

/// Which datastore backend, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DatastoreConfig {
    /// The embedded file store: one directory, shared by every control on the host.
    File {
        #[serde(default = "default_datastore_path")]
        path: PathBuf,
    },
    /// etcd v3, shared by every node of the cluster.
    Etcd(EtcdConfig),
}

/// `[datastore] kind = "etcd"`: where etcd is and how to reach it. Checked by
/// [`EtcdConfig::check`] (every problem names its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// `http://HOST:PORT` or `https://HOST:PORT` (all of one scheme); the client fails
    /// over between them.
    pub endpoints: Vec<String>,
    /// The CA certificate (PEM) that etcd's server certificates are verified against;
    /// without it, an `https://` endpoint is verified against the system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// This node's client certificate (PEM) for mutual TLS, with [`EtcdConfig::key_file`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of [`EtcdConfig::cert_file`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl EtcdConfig {
    /// A configuration of plain `http://` endpoints.
    pub fn plain(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }

    /// Whether the endpoints are `https://` (checked to be all of one scheme).
    pub fn uses_tls(&self) -> bool {
        self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// Checks the endpoints and the TLS files (they must be readable PEM files); the error
    /// is the key at fault (`datastore.ca_file`) and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.endpoints.is_empty() {
            return Err((
                "datastore.endpoints",
                "must list at least one etcd endpoint".into(),
            ));
        }
        for endpoint in &self.endpoints {
            check_endpoint(endpoint).map_err(|reason| ("datastore.endpoints", reason))?;
        }
        let tls = self.uses_tls();
        if tls && self.endpoints.iter().any(|e| e.starts_with("http://")) {
            return Err((
                "datastore.endpoints",
                "mixes http:// and https:// endpoints; use one scheme for all".into(),
            ));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err((
                    "datastore.cert_file",
                    "a client certificate needs its key_file too".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "datastore.key_file",
                    "a client key needs its cert_file too".into(),
                ))
            }
            _ => {}
        }
        for (key, file) in self.tls_files() {
            if !tls {
                return Err((
                    key,
                    "TLS files need https:// endpoints (these are http://)".into(),
                ));
            }
            let pem = read_pem(file).map_err(|reason| (key, reason))?;
            // A file given for the wrong key (the key for the certificate) is the usual slip.
            let (marker, what) = if key == "datastore.key_file" {
                (&b"PRIVATE KEY-----"[..], "private key")
            } else {
                (&b"-----BEGIN CERTIFICATE-----"[..], "certificate")
            };
            if !pem.windows(marker.len()).any(|w| w == marker) {
                return Err((key, format!("{} holds no {what} (PEM)", file.display())));
            }
        }
        Ok(())
    }

    /// The TLS files that are set, with their keys.
    pub fn tls_files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("datastore.ca_file", &self.ca_file),
            ("datastore.cert_file", &self.cert_file),
            ("datastore.key_file", &self.key_file),
        ]
        .into_iter()
        .filter_map(|(key, file)| Some((key, file.as_deref()?)))
        .collect()
    }
}

/// Reads a PEM file: its contents, or why it cannot be used (naming the file).
pub fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if !bytes
        .windows(b"-----BEGIN ".len())
        .any(|w| w == b"-----BEGIN ")
    {
        return Err(format!("{} is not a PEM file", path.display()));
    }
    Ok(bytes)
}

/// Checks an etcd endpoint: `http://HOST:PORT` or `https://HOST:PORT`.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let bad = |why: &str| format!("{endpoint:?} is not an etcd endpoint: {why}");
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| bad("expected http://HOST:PORT or https://HOST:PORT"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("only a host and a port may follow the scheme"));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("the port is missing (etcd's is usually 2379)"))?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    if !host_ok {
        return Err(bad("the host is not a name or an address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port is not a number from 1 to 65535")),
    }
}

impl Default for DatastoreConfig {
    fn default() -> DatastoreConfig {
        DatastoreConfig::File {
            path: default_datastore_path(),
        }
    }
}

fn default_dataplane_socket() -> PathBuf {
    PathBuf::from(DEFAULT_DATAPLANE_SOCKET)
}

fn default_host_interface() -> String {
    DEFAULT_HOST_INTERFACE.to_string()
}

fn default_api_socket() -> PathBuf {
    PathBuf::from(DEFAULT_API_SOCKET)
}

fn default_datastore_path() -> PathBuf {
    PathBuf::from(DEFAULT_DATASTORE_PATH)
}

impl NodeConfig {
    /// Reads and checks the configuration file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        NodeConfig::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason,
        };
        let config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if let Err(ModelError::Invalid { reason, .. }) = validate_name(Node::KIND, &config.node) {
            return Err(invalid("node", reason));
        }
        // The node's block affinities are named after it: they must be storable too.
        let widest = Ipv4Net::new(Ipv4Addr::new(255, 255, 255, 255), 32)
            .map(|cidr| BlockAffinity::name_for(&config.node, cidr));
        if let Ok(affinity) = widest {
            if let Err(reason) = check_object_name(&affinity) {
                return Err(invalid(
                    "node",
                    format!(
                        "too long for the names derived from it (its block affinities: {reason})"
                    ),
                ));
            }
        }
        let not_ifname =
            |name: &str| name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0', '"']);
        for (key, ifname, optional) in [
            ("underlay_interface", &config.underlay_interface, false),
            ("host_interface", &config.host_interface, true),
        ] {
            if not_ifname(ifname) && !(optional && ifname.is_empty()) {
                return Err(invalid(
                    key,
                    format!(
                        "{ifname:?} is not an interface name (1 to 15 bytes, no '/', '\"' or spaces)"
                    ),
                ));
            }
        }
        match &config.datastore {
            DatastoreConfig::File { path } if path.as_os_str().is_empty() => {
                return Err(invalid("datastore.path", "must not be empty".into()))
            }
            DatastoreConfig::Etcd(etcd) => {
                if let Err((key, reason)) = etcd.check() {
                    return Err(invalid(key, reason));
                }
            }
            DatastoreConfig::File { .. } => {}
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn derived_vtep_mac_is_calicos() {
        // Calico: 0x66, then the first five bytes of SHA-1 of the name (reference values
        // from Python's hashlib).
        assert_eq!(
            MacAddr::derived_vtep("node-a").to_string(),
            "66:07:02:c1:cc:60"
        );
        assert_eq!(
            MacAddr::derived_vtep("kernel-host").to_string(),
            "66:68:21:5a:8f:91"
        );
        let node = Node::new("node-a", net("192.168.0.1/24"));
        assert_eq!(node.vtep_mac().to_string(), "66:07:02:c1:cc:60");
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

    #[test]
    fn node_config_defaults_and_errors_name_file_and_key() {
        let path = Path::new("/etc/tapwire/node.toml");
        let config =
            NodeConfig::parse("node = \"node-a\"\nunderlay_interface = \"eth0\"\n", path).unwrap();
        assert_eq!(config.dataplane_socket, Path::new(DEFAULT_DATAPLANE_SOCKET));
        assert_eq!(config.api_socket, Path::new(DEFAULT_API_SOCKET));
        assert_eq!(
            config.datastore,
            DatastoreConfig::File {
                path: PathBuf::from(DEFAULT_DATASTORE_PATH)
            }
        );
        let full = "node = \"node-b\"\nunderlay_interface = \"ens3\"\ndataplane_socket = \"/tmp/d.sock\"\napi_socket = \"/tmp/a.sock\"\n[datastore]\nkind = \"file\"\npath = \"/srv/tapwire\"\n";
        let config = NodeConfig::parse(full, path).unwrap();
        assert_eq!(
            config.datastore,
            DatastoreConfig::File {
                path: PathBuf::from("/srv/tapwire")
            }
        );
        let err = |text: &str| NodeConfig::parse(text, path).unwrap_err().to_string();
        // etcd: the file store's keys are not etcd's.
        let msg = err("node = \"a\"\nunderlay_interface = \"eth0\"\n[datastore]\nkind = \"etcd\"\npath = \"/x\"\n");
        assert!(msg.contains("unknown field `path`"), "{msg}");
        let msg = err("node = \"a\"\nunderlay_interface = \"eth0\"\nunderlay_mtu = 1500\n");
        assert!(msg.starts_with("/etc/tapwire/node.toml"), "{msg}");
        assert!(msg.contains("unknown field `underlay_mtu`"), "{msg}");
        let msg = err("node = \"a\"\nunderlay_interface = \"eth0\"\n[datastore]\nkind = \"file\"\ndir = \"/x\"\n");
        assert!(msg.contains("unknown field `dir`"), "{msg}");
        let msg =
            err("node = \"a\"\nunderlay_interface = \"eth0\"\n[datastore]\nkind = \"consul\"\n");
        assert!(msg.contains("unknown variant `consul`"), "{msg}");
        let msg = err("node = \"a\"\n");
        assert!(msg.contains("missing field `underlay_interface`"), "{msg}");
        let msg = err("node = \"Node_A\"\nunderlay_interface = \"eth0\"\n");
        assert!(msg.contains(": node:"), "{msg}");
        // Room for its affinities' names ("<node>-255-255-255-255-32").
        let longest = "n".repeat(MAX_NAME_BYTES - 19);
        let text = format!("node = \"{longest}\"\nunderlay_interface = \"eth0\"\n");
        assert!(NodeConfig::parse(&text, path).is_ok());
        let msg = err(&format!(
            "node = \"{longest}n\"\nunderlay_interface = \"eth0\"\n"
        ));
        assert!(msg.contains(": node: too long"), "{msg}");
        let msg = err("node = \"a\"\nunderlay_interface = \"an-interface-name-too-long\"\n");
        assert!(msg.contains("underlay_interface"), "{msg}");
        let msg = err("node = [\n");
        assert!(msg.contains("line 1"), "{msg}");
        let msg = NodeConfig::load(Path::new("/nonexistent/tapwire.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("reading /nonexistent/tapwire.toml"), "{msg}");
    }

    #[test]
    fn etcd_config_and_its_errors_name_the_key() {
        let path = Path::new("/etc/tapwire/node.toml");
        let head = "node = \"a\"\nunderlay_interface = \"eth0\"\n[datastore]\nkind = \"etcd\"\n";
        let parse = |keys: &str| NodeConfig::parse(&format!("{head}{keys}\n"), path);
        let err = |keys: &str| parse(keys).unwrap_err().to_string();
        let config =
            parse("endpoints = [\"http://127.0.0.1:2379\", \"http://etcd-2.lab:2379/\"]").unwrap();
        assert_eq!(
            config.datastore,
            DatastoreConfig::Etcd(EtcdConfig::plain([
                "http://127.0.0.1:2379",
                "http://etcd-2.lab:2379/"
            ]))
        );
        let dir = std::env::temp_dir().join(format!("tapwire-etcd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let not_pem = dir.join("notes.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let key = dir.join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nMII=\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let tls = format!(
            "endpoints = [\"https://10.0.0.1:2379\", \"https://[fd00::1]:2379\"]\nca_file = \"{0}\"\ncert_file = \"{0}\"\nkey_file = \"{1}\"",
            pem.display(),
            key.display()
        );
        let DatastoreConfig::Etcd(etcd) = parse(&tls).unwrap().datastore else {
            panic!("not etcd")
        };
        assert!(etcd.uses_tls());
        assert_eq!(etcd.tls_files().len(), 3);
        // https without a CA file: the system's CAs verify the servers.
        assert!(parse("endpoints = [\"https://10.0.0.1:2379\"]").is_ok());

        let prefix = "/etc/tapwire/node.toml: ";
        for (keys, expected) in [
            ("endpoints = []", "datastore.endpoints: must list at least one etcd endpoint"),
            ("endpoints = [\"10.0.0.1:2379\"]", "datastore.endpoints: \"10.0.0.1:2379\" is not an etcd endpoint: expected http://HOST:PORT or https://HOST:PORT"),
            ("endpoints = [\"http://10.0.0.1\"]", "datastore.endpoints: \"http://10.0.0.1\" is not an etcd endpoint: the port is missing (etcd's is usually 2379)"),
            ("endpoints = [\"http://10.0.0.1:99999\"]", "datastore.endpoints: \"http://10.0.0.1:99999\" is not an etcd endpoint: the port is not a number from 1 to 65535"),
            ("endpoints = [\"http://10.0.0.1:2379/v3\"]", "datastore.endpoints: \"http://10.0.0.1:2379/v3\" is not an etcd endpoint: only a host and a port may follow the scheme"),
            ("endpoints = [\"http://:2379\"]", "datastore.endpoints: \"http://:2379\" is not an etcd endpoint: the host is not a name or an address"),
            ("endpoints = [\"http://a:1\", \"https://b:1\"]", "datastore.endpoints: mixes http:// and https:// endpoints; use one scheme for all"),
        ] {
            assert_eq!(err(keys), format!("{prefix}{expected}"), "{keys}");
        }
        let https = "endpoints = [\"https://10.0.0.1:2379\"]";
        let msg = err(&format!("{https}\ncert_file = \"{}\"", pem.display()));
        assert_eq!(
            msg,
            format!("{prefix}datastore.cert_file: a client certificate needs its key_file too")
        );
        let msg = err(&format!("{https}\nkey_file = \"{}\"", pem.display()));
        assert_eq!(
            msg,
            format!("{prefix}datastore.key_file: a client key needs its cert_file too")
        );
        let msg = err(&format!("{https}\nca_file = \"/nonexistent/ca.pem\""));
        assert!(
            msg.starts_with(&format!(
                "{prefix}datastore.ca_file: reading /nonexistent/ca.pem: "
            )),
            "{msg}"
        );
        let msg = err(&format!("{https}\nca_file = \"{}\"", not_pem.display()));
        assert_eq!(
            msg,
            format!(
                "{prefix}datastore.ca_file: {} is not a PEM file",
                not_pem.display()
            )
        );
        let msg = err(&format!(
            "endpoints = [\"http://10.0.0.1:2379\"]\nca_file = \"{}\"",
            pem.display()
        ));
        assert_eq!(
            msg,
            format!(
                "{prefix}datastore.ca_file: TLS files need https:// endpoints (these are http://)"
            )
        );
        let msg = err(&format!("{https}\ncafile = \"x\""));
        assert!(msg.contains("unknown field `cafile`"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mac_round_trip() {
        let mac: MacAddr = "AA-bb-cc-dd-ee-0F".parse().unwrap();
        assert_eq!(mac.to_string(), "aa:bb:cc:dd:ee:0f");
        assert!("aa:bb:cc:dd:ee".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:ff:00".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:fg".parse::<MacAddr>().is_err());
    }

    #[test]
    fn block_arithmetic() {
        let mut block = IpamBlock::new(net("10.65.1.64/26"), "node-a");
        assert_eq!(block.metadata.name, "10-65-1-64-26");
        // A damaged block's range, from its name alone.
        assert_eq!(
            IpamBlock::cidr_from_name("10-65-1-64-26"),
            Some(net("10.65.1.64/26"))
        );
        for other in [
            "10-65-1-65-26",
            "10-65-1-64",
            "010-65-1-64-26",
            "a-b-c-d-26",
            "x",
        ] {
            assert_eq!(IpamBlock::cidr_from_name(other), None, "{other}");
        }
        assert_eq!(block.node(), Some("node-a"));
        assert_eq!(block.size(), 64);
        assert_eq!(block.address(0), Some(Ipv4Addr::new(10, 65, 1, 64)));
        assert_eq!(block.address(63), Some(Ipv4Addr::new(10, 65, 1, 127)));
        assert_eq!(block.address(64), None);
        assert_eq!(block.ordinal(Ipv4Addr::new(10, 65, 1, 70)), Some(6));
        assert_eq!(block.ordinal(Ipv4Addr::new(10, 65, 1, 128)), None);
        assert_eq!(block.lowest_free(), Some(0));
        block.spec.allocations.insert(0, "a".into());
        block.spec.allocations.insert(1, "b".into());
        block.spec.allocations.insert(3, "c".into());
        assert_eq!(block.lowest_free(), Some(2));
        assert_eq!(block.ordinal_of_handle("c"), Some(3));
        let full = IpamBlock {
            spec: IpamBlockSpec {
                allocations: (0..64).map(|o| (o, format!("h{o}"))).collect(),
                ..block.spec.clone()
            },
            ..block.clone()
        };
        assert_eq!(full.lowest_free(), None);
        let single = IpamBlock::new(net("10.65.1.5/32"), "node-a");
        assert_eq!(single.size(), 1);
        assert_eq!(single.address(0), Some(Ipv4Addr::new(10, 65, 1, 5)));
        let big = IpamBlock::new(net("10.64.0.0/20"), "node-a");
        assert_eq!(big.size(), 4096);
    }

    #[test]
    fn workload_endpoint_names() {
        assert_eq!(
            WorkloadEndpoint::calico_name("node-a", "k8s", "web-1", "eth0"),
            "node--a-k8s-web--1-eth0"
        );
    }
}
