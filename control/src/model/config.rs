//! `node.toml`: the node agent's configuration ([`NodeConfig`]), its datastore section
//! and its checks. The only file this module reads.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{
    check_object_name, validate_name, BirdConfig, BlockAffinity, ModelError, NetworkingBackend,
    Node, Resource,
};

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
/// networking_backend = "datastore"                   # optional; "bird": routes by BGP
///
/// [bird]                                             # optional ([`BirdConfig`])
/// run_dir = "/run/tapwire/bird"
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
    /// Where routes to other nodes' blocks come from: `datastore` (the default) or `bird`.
    #[serde(default)]
    pub networking_backend: NetworkingBackend,
    /// How BIRD runs when the backend is `bird` ([`BirdConfig`]).
    #[serde(default)]
    pub bird: BirdConfig,
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
        if let Err((key, reason)) = config.bird.check() {
            return Err(invalid(key, reason));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MAX_NAME_BYTES;

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
}
