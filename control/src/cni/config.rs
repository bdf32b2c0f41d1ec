//! The network configuration on stdin: the versions tapwire speaks, decoding and
//! checking the fields it reads.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::env::is_cni_name;
use super::{Command, PluginError};
use crate::api;

/// The spec versions tapwire speaks, oldest first (the `VERSION` answer).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest spec version tapwire implements.
pub const LATEST_VERSION: &str = "1.1.0";

/// The largest network configuration read from stdin. Even a long chain's `prevResult`
/// or a `GC` list of thousands of attachments is far below this.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// How long one agent call may take unless the configuration says `timeout_ms`. An ADD
/// includes IPAM, building the TAP and waiting (up to 5 s) for the dataplane to attach.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// The largest accepted `timeout_ms` (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// Where a Unix socket path must fit (`sun_path` is 108 bytes, NUL included).
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The `dns` dictionary (configuration and result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The fields of the network configuration tapwire reads; everything else a runtime or
/// an administrator adds (`runtimeConfig`, `args`, `capabilities`…) is ignored.
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type", default)]
    _plugin_type: Option<String>,
    #[serde(default)]
    api_socket: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Map<String, Value>>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(rename = "ipMasq", default)]
    ip_masq: Option<bool>,
    /// Calico's `mtu`: the pod interface's MTU.
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
    /// libcni also sends the list under this key (the spec once named it so).
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<Vec<Attachment>>,
}

/// A validated network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub cni_version: String,
    pub name: String,
    pub api_socket: PathBuf,
    pub timeout: Duration,
    pub prev_result: Option<Map<String, Value>>,
    pub dns: Option<Dns>,
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The pod interface's MTU, when the configuration sets one (at most what the pools'
    /// encapsulation leaves of the underlay's: the agent refuses more).
    pub mtu: Option<u32>,
}

/// The smallest `mtu` the configuration may ask for: the IPv4 datagram every host must
/// accept.
pub const MIN_MTU: u32 = 576;

impl NetworkConfig {
    /// Decodes and validates `bytes` for `command` (version checks included).
    pub fn parse(bytes: &[u8], command: Command) -> Result<NetworkConfig, PluginError> {
        let raw: RawConfig =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
                .map_err(|e| PluginError::DecodeConfig(e.to_string()))?;
        let name = match raw.name {
            None => {
                return Err(PluginError::InvalidConfig {
                    msg: "missing network name".into(),
                    details: "the configuration has no \"name\"".into(),
                })
            }
            Some(name) if !is_cni_name(&name) => {
                return Err(PluginError::InvalidConfig {
                    msg: "invalid characters found in network name".into(),
                    details: format!("{name:?} (allowed: letters, digits, _ . -, not first)"),
                })
            }
            Some(name) => name,
        };
        let cni_version = raw.cni_version.unwrap_or_default();
        check_version(&cni_version, command)?;
        if let Some(ipam) = raw.ipam {
            return Err(PluginError::UnsupportedField {
                key: "ipam",
                value: ipam.to_string(),
                reason: "tapwire assigns pod addresses from its own IP pools; remove the \
                         ipam section",
            });
        }
        if raw.ip_masq == Some(true) {
            return Err(PluginError::UnsupportedField {
                key: "ipMasq",
                value: "true".into(),
                reason: "tapwire does no masquerading",
            });
        }
        let api_socket = raw
            .api_socket
            .unwrap_or_else(|| api::DEFAULT_API_SOCKET.to_string());
        if !api_socket.starts_with('/')
            || api_socket.len() > MAX_SOCKET_PATH_BYTES
            || api_socket.contains('\0')
        {
            return Err(PluginError::InvalidConfig {
                msg: "invalid api_socket".into(),
                details: format!(
                    "{api_socket:?} is not an absolute path of at most \
                     {MAX_SOCKET_PATH_BYTES} bytes"
                ),
            });
        }
        if let Some(mtu) = raw.mtu.filter(|mtu| !(MIN_MTU..=65535).contains(mtu)) {
            return Err(PluginError::InvalidConfig {
                msg: "invalid mtu".into(),
                details: format!(
                    "{mtu} is not between {MIN_MTU} and 65535 (leave mtu out to get the \
                     largest the pools' encapsulation allows)"
                ),
            });
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(PluginError::InvalidConfig {
                msg: "invalid timeout_ms".into(),
                details: format!("{timeout_ms} is not between 1 and {MAX_TIMEOUT_MS}"),
            });
        }
        Ok(NetworkConfig {
            cni_version,
            name,
            api_socket: PathBuf::from(api_socket),
            timeout: Duration::from_millis(timeout_ms),
            prev_result: raw.prev_result,
            dns: raw.dns,
            valid_attachments: raw.valid_attachments.or(raw.attachments),
            mtu: raw.mtu,
        })
    }
}

/// Whether tapwire speaks `version`, and whether `command` exists in it.
pub(super) fn check_version(version: &str, command: Command) -> Result<(), PluginError> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        let given = if version.is_empty() {
            "the configuration has no cniVersion (read as 0.1.0)".to_string()
        } else {
            format!("the configuration is {version}")
        };
        return Err(PluginError::IncompatibleVersion {
            msg: "incompatible CNI versions".into(),
            details: format!(
                "{given}; tapwire supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        });
    }
    if let Some(minimum) = command.minimum_version() {
        if version_key(version) < version_key(minimum) {
            return Err(PluginError::IncompatibleVersion {
                msg: format!("config version does not allow {}", command.name()),
                details: format!(
                    "{} needs cniVersion {minimum} or later; the configuration is {version}",
                    command.name()
                ),
            });
        }
    }
    Ok(())
}

/// `1.0.0` → (1, 0, 0), for ordering the supported versions.
pub(super) fn version_key(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}
