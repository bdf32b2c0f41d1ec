//! The BGP documents, calicoctl-shaped: `BGPConfiguration` (the cluster's AS number, the
//! node-to-node mesh, BIRD's log level) and `BGPPeer` (a peering with a router or with
//! selected nodes), with their validation; and the node agent's BGP settings in
//! `node.toml` (`networking_backend`, `[bird]`).
//!
//! Parsing and checking only, like [`crate::model`]: storing is the datastore's job,
//! turning the documents into BIRD's configuration [`super::config`]'s.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::selector::Selector;
use crate::model::{check_object_name, validate_name, Metadata, ModelError, Resource};

/// The AS number of nodes when neither their `Node` nor the `default` BGPConfiguration
/// says (Calico's).
pub const DEFAULT_AS_NUMBER: u32 = 64512;
/// The name of the one BGPConfiguration tapwire reads: the cluster-wide one.
pub const DEFAULT_CONFIGURATION: &str = "default";

// ---------------------------------------------------------------------------------------
// AS numbers

/// `serde(with)` for an optional AS number: an integer, or a string holding one, plain
/// (`"64512"`) or in asdot notation (`"1.10"` = 1 × 65536 + 10), as Calico accepts them.
/// Written back as an integer. 0 is refused by validation, not here.
pub mod as_number {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(asn: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match asn {
            Some(asn) => s.serialize_u32(*asn),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let raw = Option::<Raw>::deserialize(d)?;
        raw.map(|raw| match raw {
            Raw::Number(n) => u32::try_from(n)
                .map_err(|_| D::Error::custom(format!("AS number {n} is larger than 4294967295"))),
            Raw::Text(text) => parse(&text).map_err(D::Error::custom),
        })
        .transpose()
    }

    /// Parses `64512` or asdot `1.10`.
    pub fn parse(text: &str) -> Result<u32, String> {
        let bad =
            || format!("invalid AS number {text:?} (expected 1 to 4294967295, or asdot like 1.10)");
        match text.split_once('.') {
            Some((high, low)) => {
                let high: u16 = high.parse().map_err(|_| bad())?;
                let low: u16 = low.parse().map_err(|_| bad())?;
                Ok(u32::from(high) << 16 | u32::from(low))
            }
            None => text.parse().map_err(|_| bad()),
        }
    }
}

/// The error for `field` of document `doc`.
fn invalid<T: Resource>(doc: &T, field: &'static str, reason: String) -> ModelError {
    ModelError::Invalid {
        kind: T::KIND,
        name: doc.name().to_string(),
        field,
        reason,
    }
}

/// Refuses AS number 0 (reserved, RFC 7607).
fn check_as_number(asn: Option<u32>) -> Result<(), String> {
    match asn {
        Some(0) => Err("0 is not a valid AS number (1 to 4294967295)".into()),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// BGPConfiguration

/// How much BIRD logs (`logSeverityScreen`): Calico's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogSeverity {
    Debug,
    #[default]
    Info,
    Warning,
    Error,
    Fatal,
}

impl LogSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            LogSeverity::Debug => "Debug",
            LogSeverity::Info => "Info",
            LogSeverity::Warning => "Warning",
            LogSeverity::Error => "Error",
            LogSeverity::Fatal => "Fatal",
        }
    }
}

/// `kind: BGPConfiguration`: the cluster's BGP settings. tapwire reads the one named
/// `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpConfiguration {
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: BgpConfigurationSpec,
}

/// The settings of a [`BgpConfiguration`]; every one optional, with Calico's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BgpConfigurationSpec {
    /// Whether every node peers with every other (default true). Off, nodes peer only as
    /// BGPPeer documents say (with route reflectors, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// The AS number of nodes whose `Node` does not set one (default 64512).
    #[serde(default, with = "as_number", skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// How much BIRD logs (default Info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogSeverity>,
}

impl Resource for BgpConfiguration {
    const KIND: &'static str = "BGPConfiguration";
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }
}

impl BgpConfiguration {
    /// The `default` configuration with nothing set (Calico's defaults apply).
    pub fn new() -> BgpConfiguration {
        BgpConfiguration {
            metadata: Metadata::named(DEFAULT_CONFIGURATION),
            spec: BgpConfigurationSpec::default(),
        }
    }

    /// Checks the name (`default`: the only one tapwire reads) and the AS number.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name(Self::KIND, &self.metadata.name)?;
        if self.metadata.name != DEFAULT_CONFIGURATION {
            return Err(invalid(
                self,
                "metadata.name",
                format!(
                    "tapwire reads only the cluster-wide BGPConfiguration, named {DEFAULT_CONFIGURATION:?}"
                ),
            ));
        }
        check_as_number(self.spec.as_number).map_err(|r| invalid(self, "spec.asNumber", r))
    }

    pub fn mesh_enabled(&self) -> bool {
        self.spec.node_to_node_mesh_enabled.unwrap_or(true)
    }

    pub fn as_number(&self) -> u32 {
        self.spec.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }

    pub fn log_severity(&self) -> LogSeverity {
        self.spec.log_severity_screen.unwrap_or_default()
    }
}

impl Default for BgpConfiguration {
    fn default() -> Self {
        BgpConfiguration::new()
    }
}

// ---------------------------------------------------------------------------------------
// BGPPeer

/// `kind: BGPPeer`: a BGP peering of some nodes — with a router (`peerIP`, `asNumber`) or
/// with other nodes (`peerSelector`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    pub metadata: Metadata,
    pub spec: BgpPeerSpec,
}

/// Which nodes peer with whom (see [`BgpPeer`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BgpPeerSpec {
    /// Only this node peers (a "node specific" peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only the nodes this selects peer; without `node` and `nodeSelector` every node
    /// does (a "global" peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// The peer's address (a router, say). Either this or `peerSelector`.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<Ipv4Addr>,
    /// The peer's AS number; required with `peerIP`.
    #[serde(default, with = "as_number", skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// The peers are the nodes this selects (at their underlay address, in their AS); the
    /// peering works both ways, as Calico's does (the usual route-reflector set-up:
    /// `nodeSelector: all()`, `peerSelector: route-reflector == 'true'`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    /// The TCP MD5 password of the session, from a secret (see [`SecretKeyRef`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
}

/// `password` of a [`BgpPeer`]: Calico's shape, a reference to a secret's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPassword {
    #[serde(rename = "secretKeyRef")]
    pub secret_key_ref: SecretKeyRef,
}

/// A secret's key. Calico reads a Kubernetes Secret; tapwire reads the file
/// `<secrets_dir>/<name>/<key>` of each node (`[bird] secrets_dir` in `node.toml`, the
/// layout of a Secret mounted as a volume), so the password is never in the datastore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

impl Resource for BgpPeer {
    const KIND: &'static str = "BGPPeer";
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }
}

/// A selector field as written: `None` when absent or blank.
fn selector_text(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl BgpPeer {
    /// Checks the peer: a name, `node` or `nodeSelector` (not both), `peerIP` with
    /// `asNumber` or `peerSelector` (exactly one of the two), selectors that parse, a
    /// unicast peer address, and a password reference that names a file.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name(Self::KIND, &self.metadata.name)?;
        let spec = &self.spec;
        if let Some(node) = &spec.node {
            validate_name(Self::KIND, node).map_err(|e| invalid(self, "spec.node", e.detail()))?;
            if selector_text(&spec.node_selector).is_some() {
                return Err(invalid(
                    self,
                    "spec.nodeSelector",
                    "give node or nodeSelector, not both".into(),
                ));
            }
        }
        for (field, text) in [
            ("spec.nodeSelector", &spec.node_selector),
            ("spec.peerSelector", &spec.peer_selector),
        ] {
            if let Some(text) = selector_text(text) {
                Selector::parse(text).map_err(|e| invalid(self, field, e))?;
            }
        }
        match (spec.peer_ip, selector_text(&spec.peer_selector)) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    self,
                    "spec.peerSelector",
                    "give peerIP or peerSelector, not both".into(),
                ))
            }
            (None, None) => {
                return Err(invalid(
                    self,
                    "spec.peerIP",
                    "required (or peerSelector, to peer with nodes)".into(),
                ))
            }
            (Some(ip), None) => {
                if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback()
                {
                    return Err(invalid(
                        self,
                        "spec.peerIP",
                        format!("{ip} cannot be a BGP peer's address"),
                    ));
                }
                if spec.as_number.is_none() {
                    return Err(invalid(
                        self,
                        "spec.asNumber",
                        format!("required with peerIP (the AS of {ip})"),
                    ));
                }
            }
            (None, Some(_)) => {}
        }
        check_as_number(spec.as_number).map_err(|r| invalid(self, "spec.asNumber", r))?;
        if let Some(password) = &spec.password {
            let secret = &password.secret_key_ref;
            for (field, part) in [
                ("spec.password.secretKeyRef.name", &secret.name),
                ("spec.password.secretKeyRef.key", &secret.key),
            ] {
                check_object_name(part).map_err(|r| invalid(self, field, r))?;
            }
        }
        Ok(())
    }

    /// The node selector, when the peer has one (validated documents only).
    pub fn node_selector(&self) -> Option<Selector> {
        selector_text(&self.spec.node_selector).and_then(|s| Selector::parse(s).ok())
    }

    /// The peer selector, when the peer has one (validated documents only).
    pub fn peer_selector(&self) -> Option<Selector> {
        selector_text(&self.spec.peer_selector).and_then(|s| Selector::parse(s).ok())
    }

    /// Whether the peer applies to every node (Calico's "global" peer): neither `node`
    /// nor `nodeSelector`.
    pub fn is_global(&self) -> bool {
        self.spec.node.is_none() && selector_text(&self.spec.node_selector).is_none()
    }
}

// ---------------------------------------------------------------------------------------
// node.toml

/// `networking_backend` in `node.toml`: where this node learns the routes to other
/// nodes' blocks (Calico's `CALICO_NETWORKING_BACKEND`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkingBackend {
    /// From the datastore: every node reads every block's owner (Calico's `vxlan` or
    /// `none`, which program routes from IPAM without BGP).
    #[default]
    Datastore,
    /// From BGP: BIRD, started and configured by `tapwire-control`, announces this
    /// node's blocks and learns the others' (Calico's `bird`).
    Bird,
}

/// Where BIRD's binary is (Debian's `bird2`).
pub const DEFAULT_BIRD_BINARY: &str = "/usr/sbin/bird";
/// Where BIRD's configuration, control socket and log are kept.
pub const DEFAULT_BIRD_RUN_DIR: &str = "/run/tapwire/bird";
/// The kernel routing table BIRD writes the routes it learned into, for
/// `tapwire-control` to read; no rule points at it, so it is never used for forwarding.
/// 30583 is 0x7477, "tw".
pub const DEFAULT_KERNEL_TABLE: u32 = 30583;
/// How long peers keep this node's routes while its BIRD restarts (BGP graceful
/// restart; Calico's default).
pub const DEFAULT_GRACEFUL_RESTART_SECS: u16 = 120;
/// Where BGPPeer passwords are read from (`<dir>/<secret>/<key>`).
pub const DEFAULT_SECRETS_DIR: &str = "/etc/tapwire/bgp-secrets";

/// `[bird]` in `node.toml`: how `tapwire-control` runs BIRD when `networking_backend =
/// "bird"`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BirdConfig {
    /// BIRD's binary.
    #[serde(default = "default_binary")]
    pub binary: PathBuf,
    /// A directory of this node's own (created 0700): `bird.conf`, the control socket
    /// `bird.ctl`, the log `bird.log` and `bird.pid`.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// The kernel table of learned routes ([`DEFAULT_KERNEL_TABLE`]).
    #[serde(default = "default_kernel_table")]
    pub kernel_table: u32,
    /// The restart time this node announces (1 to 4095 s): how long peers keep its
    /// routes when its BIRD stops without withdrawing them — while `tapwire-control`
    /// restarts, and when the node stops for good.
    #[serde(default = "default_graceful_restart_secs")]
    pub graceful_restart_secs: u16,
    /// Where BGPPeer passwords are read from.
    #[serde(default = "default_secrets_dir")]
    pub secrets_dir: PathBuf,
}

impl Default for BirdConfig {
    fn default() -> Self {
        BirdConfig {
            binary: default_binary(),
            run_dir: default_run_dir(),
            kernel_table: default_kernel_table(),
            graceful_restart_secs: default_graceful_restart_secs(),
            secrets_dir: default_secrets_dir(),
        }
    }
}

fn default_binary() -> PathBuf {
    PathBuf::from(DEFAULT_BIRD_BINARY)
}

fn default_run_dir() -> PathBuf {
    PathBuf::from(DEFAULT_BIRD_RUN_DIR)
}

fn default_kernel_table() -> u32 {
    DEFAULT_KERNEL_TABLE
}

fn default_graceful_restart_secs() -> u16 {
    DEFAULT_GRACEFUL_RESTART_SECS
}

fn default_secrets_dir() -> PathBuf {
    PathBuf::from(DEFAULT_SECRETS_DIR)
}

impl BirdConfig {
    /// Checks the values; the error is the key at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, path) in [
            ("bird.binary", &self.binary),
            ("bird.run_dir", &self.run_dir),
            ("bird.secrets_dir", &self.secrets_dir),
        ] {
            if !path.is_absolute() {
                return Err((key, format!("{} is not an absolute path", path.display())));
            }
            if path.to_string_lossy().contains(['"', '\n']) {
                return Err((key, "must not contain '\"' or a line break".into()));
            }
        }
        // 0 unspecified, 252 compat, 253 default, 254 main, 255 local: the kernel's own.
        if matches!(self.kernel_table, 0 | 252..=255) {
            return Err((
                "bird.kernel_table",
                format!(
                    "{} is one of the kernel's own tables (0, 252–255); choose another",
                    self.kernel_table
                ),
            ));
        }
        if !(1..=4095).contains(&self.graceful_restart_secs) {
            return Err((
                "bird.graceful_restart_secs",
                format!(
                    "{} is out of range (BGP carries 1 to 4095 seconds)",
                    self.graceful_restart_secs
                ),
            ));
        }
        Ok(())
    }

    /// BIRD's configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.run_dir.join("bird.conf")
    }

    /// BIRD's control socket (what `birdc -s` takes).
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("bird.ctl")
    }

    /// BIRD's log (its standard error).
    pub fn log_file(&self) -> PathBuf {
        self.run_dir.join("bird.log")
    }

    /// BIRD's PID file.
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("bird.pid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_documents, Document};

    fn one(text: &str) -> Document {
        let mut docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    fn peer(spec: &str) -> BgpPeer {
        let text =
            format!("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: p}}\nspec: {spec}\n");
        match one(&text) {
            Document::BgpPeer(peer) => peer,
            other => panic!("not a peer: {other:?}"),
        }
    }

    #[test]
    fn calicoctl_bgp_documents_parse_with_calicos_defaults() {
        let Document::BgpConfiguration(config) = one("apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: false
  asNumber: 63400
")
        else {
            panic!("not a BGPConfiguration")
        };
        config.validate().unwrap();
        assert!(!config.mesh_enabled());
        assert_eq!(config.as_number(), 63400);
        assert_eq!(config.log_severity(), LogSeverity::Info);
        let empty = BgpConfiguration::new();
        assert!(empty.mesh_enabled());
        assert_eq!(empty.as_number(), DEFAULT_AS_NUMBER);
        assert_eq!(empty.log_severity(), LogSeverity::Info);

        let p = peer("{node: rack1-host1, peerIP: 192.168.1.1, asNumber: 63400}");
        p.validate().unwrap();
        assert_eq!(p.spec.peer_ip, Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(!p.is_global());
        assert!(peer("{peerIP: 192.168.1.1, asNumber: 1}").is_global());
        let rr = peer("{nodeSelector: all(), peerSelector: \"route-reflector == 'true'\"}");
        rr.validate().unwrap();
        assert!(rr.node_selector().unwrap().is_all());
        assert!(!rr.is_global());
        // asdot and quoted AS numbers; written back as integers.
        assert_eq!(
            peer("{peerIP: 10.0.0.1, asNumber: '1.10'}").spec.as_number,
            Some(65546)
        );
        assert_eq!(
            peer("{peerIP: 10.0.0.1, asNumber: '64513'}").spec.as_number,
            Some(64513)
        );
        let value = crate::model::to_document_value(&peer("{peerIP: 10.0.0.1, asNumber: '1.10'}"));
        assert_eq!(value["spec"]["asNumber"], 65546);
        let with_password = peer(
            "{peerIP: 10.0.0.1, asNumber: 64513, password: {secretKeyRef: {name: bgp, key: rr}}}",
        );
        with_password.validate().unwrap();
        assert_eq!(
            with_password.spec.password.unwrap().secret_key_ref,
            SecretKeyRef {
                name: "bgp".into(),
                key: "rr".into()
            }
        );
    }

    #[test]
    fn bgp_documents_that_cannot_work_are_refused_naming_the_field() {
        for (spec, expected) in [
            ("{asNumber: 64513}", "spec.peerIP: required"),
            ("{peerIP: 10.0.0.1}", "spec.asNumber: required with peerIP"),
            (
                "{peerIP: 10.0.0.1, asNumber: 0}",
                "0 is not a valid AS number",
            ),
            (
                "{peerIP: 0.0.0.0, asNumber: 1}",
                "cannot be a BGP peer's address",
            ),
            (
                "{peerIP: 224.0.0.5, asNumber: 1}",
                "cannot be a BGP peer's address",
            ),
            (
                "{node: a, nodeSelector: all(), peerIP: 10.0.0.1, asNumber: 1}",
                "node or nodeSelector, not both",
            ),
            (
                "{peerIP: 10.0.0.1, asNumber: 1, peerSelector: all()}",
                "peerIP or peerSelector, not both",
            ),
            (
                "{nodeSelector: 'has(', peerIP: 10.0.0.1, asNumber: 1}",
                "spec.nodeSelector: expected",
            ),
            ("{peerSelector: 'rack = a'}", "spec.peerSelector: expected"),
            ("{node: Node_A, peerIP: 10.0.0.1, asNumber: 1}", "spec.node"),
            (
                "{peerIP: 10.0.0.1, asNumber: 1, password: {secretKeyRef: {name: ../x, key: k}}}",
                "spec.password.secretKeyRef.name",
            ),
        ] {
            let err = peer(spec).validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{spec}: {err}");
        }
        for (text, expected) in [
            (
                "{peerIP: 10.0.0.1, asNumber: 4294967296}",
                "larger than 4294967295",
            ),
            ("{peerIP: 10.0.0.1, asNumber: 'x.1'}", "invalid AS number"),
            ("{peerIP: 10.0.0.1:179, asNumber: 1}", "spec.peerIP"),
            (
                "{peerIP: 10.0.0.1, asNumber: 1, keepOriginalNextHop: true}",
                "unknown field",
            ),
        ] {
            let doc = format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: p}}\nspec: {text}\n"
            );
            let err = parse_documents(&doc).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let Document::BgpConfiguration(other) = one(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.a}\n",
        ) else {
            panic!()
        };
        let err = other.validate().unwrap_err().to_string();
        assert!(err.contains("only the cluster-wide"), "{err}");
        let err = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {logSeverityScreen: Loud}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("logSeverityScreen"), "{err}");
    }

    #[test]
    fn a_nodes_bgp_fields_are_calicos() {
        let Document::Node(node) = one("apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: rr1, labels: {route-reflector: 'true'}}
spec:
  bgp: {ipv4Address: 192.168.0.1/24, asNumber: '1.10', routeReflectorClusterID: 224.0.0.1}
")
        else {
            panic!("not a node")
        };
        node.validate().unwrap();
        let bgp = node.spec.bgp.as_ref().unwrap();
        assert_eq!(bgp.as_number, Some(65546));
        assert_eq!(
            bgp.route_reflector_cluster_id,
            Some(Ipv4Addr::new(224, 0, 0, 1))
        );
        let value = crate::model::to_document_value(&node);
        assert_eq!(value["spec"]["bgp"]["routeReflectorClusterID"], "224.0.0.1");
        let err = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n}\nspec: {bgp: {ipv4Address: 192.168.0.1/24, routeReflectorClusterID: not-an-id}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("routeReflectorClusterID"), "{err}");
        let mut zero = node.clone();
        zero.spec.bgp.as_mut().unwrap().as_number = Some(0);
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("spec.bgp.asNumber"), "{err}");
    }

    #[test]
    fn node_toml_turns_bgp_on_and_checks_the_bird_keys() {
        use crate::model::{ConfigError, NodeConfig};
        let path = std::path::Path::new("/etc/tapwire/node.toml");
        let base = "node = \"node-a\"\nunderlay_interface = \"eth0\"\n";
        let off = NodeConfig::parse(base, path).unwrap();
        assert_eq!(off.networking_backend, NetworkingBackend::Datastore);
        assert_eq!(off.bird, BirdConfig::default());
        let on = NodeConfig::parse(
            &format!("{base}networking_backend = \"bird\"\n[bird]\nrun_dir = \"/run/x\"\ngraceful_restart_secs = 10\n"),
            path,
        )
        .unwrap();
        assert_eq!(on.networking_backend, NetworkingBackend::Bird);
        assert_eq!(on.bird.control_socket(), PathBuf::from("/run/x/bird.ctl"));
        assert_eq!(on.bird.graceful_restart_secs, 10);
        let err =
            NodeConfig::parse(&format!("{base}networking_backend = \"bgp\"\n"), path).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("networking_backend"), "{err}");
        let err = NodeConfig::parse(&format!("{base}[bird]\nkernel_table = 255\n"), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bird.kernel_table"), "{err}");
        let err = NodeConfig::parse(&format!("{base}[bird]\nsocket = \"/x\"\n"), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `socket`"), "{err}");
    }

    #[test]
    fn bird_settings_default_and_refuse_the_kernels_tables() {
        let config = BirdConfig::default();
        config.check().unwrap();
        assert_eq!(config.kernel_table, 30583);
        assert_eq!(
            config.control_socket(),
            PathBuf::from("/run/tapwire/bird/bird.ctl")
        );
        for (change, key) in [
            (
                BirdConfig {
                    kernel_table: 254,
                    ..BirdConfig::default()
                },
                "bird.kernel_table",
            ),
            (
                BirdConfig {
                    graceful_restart_secs: 0,
                    ..BirdConfig::default()
                },
                "bird.graceful_restart_secs",
            ),
            (
                BirdConfig {
                    graceful_restart_secs: 4096,
                    ..BirdConfig::default()
                },
                "bird.graceful_restart_secs",
            ),
            (
                BirdConfig {
                    run_dir: "run".into(),
                    ..BirdConfig::default()
                },
                "bird.run_dir",
            ),
        ] {
            assert_eq!(change.check().unwrap_err().0, key);
        }
    }
}
