//! The CNI plugin `tapwire` (`"type": "tapwire"`): the CNI protocol, spec 1.1.0 (and the
//! 1.0.0, 0.4.0, 0.3.1 and 0.3.0 results a runtime may ask for), translated to and from
//! the node agent's local API ([`crate::api`]).
//!
//! What this module owns: reading the `CNI_*` environment and the network configuration
//! on stdin, validating them the way the spec and libcni's plugin skeleton do, one agent
//! call per command, the result in the version the configuration asks for (merged into
//! `prevResult` when tapwire is not first in a chain), and error objects with the spec's
//! codes. What it must not do: touch the pod's namespace, interfaces or addresses (the
//! agent does that), or print: [`run`] returns what the `tapwire` binary prints, and the
//! agent is reached through a function the caller passes in, so everything here is
//! testable without sockets.
//!
//! Choices where the spec leaves room:
//!
//! - Versions: `supportedVersions` is 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0. 0.1.0/0.2.0
//!   (the `ip4` result shape) are not spoken. `VERSION` echoes the `cniVersion` it was
//!   given on stdin (the spec's rule), or [`LATEST_VERSION`] when there is none.
//! - Chaining: with a `prevResult`, everything in it is kept as it is and tapwire's
//!   interface, address (its `interface` index pointing at the appended interface) and
//!   routes are appended; the previous `dns` wins over the configuration's `dns`.
//!   An interface named `CNI_IFNAME` already listed in the sandbox is an error, as the
//!   spec requires.
//! - Unreachable agent: `ADD`, `DEL`, `CHECK` and `GC` fail with code 11 (try again
//!   later). For `DEL` this is deliberate: the agent holds the address and the endpoint,
//!   and a `DEL` that "succeeded" without it would leak both for good (the runtime forgets
//!   the attachment after a successful `DEL`). `STATUS` answers 50 (not available).
//! - `GC` (1.1.0): the agent's endpoints on this node whose (container id, interface) pair
//!   is not in `cni.dev/valid-attachments` are deleted one by one with the agent's own DEL;
//!   a missing list is an error rather than "nothing is valid". The agent does not record
//!   which network an endpoint belongs to, so this assumes one tapwire network per node.
//! - `CNI_PATH` is never required: tapwire delegates to no other plugin.
//! - `CNI_ARGS`: the Kubernetes keys are read; unknown keys are an error unless
//!   `IgnoreUnknown=1` (libcni's rule). Values may contain `=`; empty pairs are skipped.
//! - `ipam` and `ipMasq: true` in the configuration are refused (code 2): tapwire assigns
//!   pod addresses itself and does no masquerading, and silently ignoring either would
//!   surprise whoever wrote them.
//! - `mtu` (Calico's key) is the pod interface's MTU: from 576 up to what the pools'
//!   encapsulation leaves of the node's underlay, which the agent checks at ADD (code 7
//!   above it); without it the pod gets that largest MTU.

use std::ffi::OsString;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{self, codes, ApiError, CniAddReply, CniRequest, Reply, Request, ResourceKind};

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

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME_BYTES: usize = 15;

/// The CNI verb in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    /// The verb as the runtime spells it (`ADD`); commands are case-sensitive.
    pub fn parse(text: &str) -> Option<Command> {
        match text {
            "ADD" => Some(Command::Add),
            "DEL" => Some(Command::Del),
            "CHECK" => Some(Command::Check),
            "STATUS" => Some(Command::Status),
            "GC" => Some(Command::Gc),
            "VERSION" => Some(Command::Version),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// The variables the spec requires besides `CNI_COMMAND`, in libcni's order.
    fn required_variables(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Status | Command::Gc | Command::Version => &[],
        }
    }

    /// The oldest configuration version that has this verb.
    fn minimum_version(self) -> Option<&'static str> {
        match self {
            Command::Check => Some("0.4.0"),
            Command::Status | Command::Gc => Some("1.1.0"),
            Command::Add | Command::Del | Command::Version => None,
        }
    }
}

/// The `CNI_*` variables. Unset and empty are the same (as in libcni).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
    /// Variables that are set but are not UTF-8 (reported as invalid, code 4).
    pub not_unicode: Vec<&'static str>,
}

impl Environment {
    /// Reads the variables through `lookup` (the process environment in the binary).
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<OsString>) -> Environment {
        let mut env = Environment::default();
        let mut read = |name: &'static str, env: &mut Environment| -> Option<String> {
            let value = lookup(name)?;
            match value.into_string() {
                Ok(s) if s.is_empty() => None,
                Ok(s) => Some(s),
                Err(_) => {
                    env.not_unicode.push(name);
                    None
                }
            }
        };
        env.command = read("CNI_COMMAND", &mut env);
        env.container_id = read("CNI_CONTAINERID", &mut env);
        env.netns = read("CNI_NETNS", &mut env);
        env.ifname = read("CNI_IFNAME", &mut env);
        env.args = read("CNI_ARGS", &mut env);
        env.path = read("CNI_PATH", &mut env);
        env
    }

    /// The process environment.
    pub fn from_process() -> Environment {
        Environment::from_lookup(|name| std::env::var_os(name))
    }

    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "CNI_COMMAND" => self.command.as_deref(),
            "CNI_CONTAINERID" => self.container_id.as_deref(),
            "CNI_NETNS" => self.netns.as_deref(),
            "CNI_IFNAME" => self.ifname.as_deref(),
            "CNI_ARGS" => self.args.as_deref(),
            "CNI_PATH" => self.path.as_deref(),
            _ => None,
        }
    }
}

/// What `CNI_ARGS` carries that tapwire reads (Kubernetes runtimes pass these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Parses `K=V;K2=V2` (see the module doc for the rules).
pub fn parse_cni_args(text: &str) -> Result<CniArgs, PluginError> {
    let invalid = |reason: String| PluginError::InvalidEnvironment {
        variable: "CNI_ARGS",
        reason,
        value: text.to_string(),
    };
    let mut args = CniArgs::default();
    let mut ignore_unknown = false;
    let mut unknown = Vec::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(format!("{pair:?} is not KEY=VALUE")));
        };
        let slot = match key {
            "K8S_POD_NAMESPACE" => &mut args.pod_namespace,
            "K8S_POD_NAME" => &mut args.pod_name,
            "K8S_POD_INFRA_CONTAINER_ID" => &mut args.pod_infra_container_id,
            "K8S_POD_UID" => &mut args.pod_uid,
            "IgnoreUnknown" => {
                ignore_unknown = match value.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(invalid(format!(
                            "IgnoreUnknown={value} is not 1, true, 0 or false"
                        )))
                    }
                };
                continue;
            }
            "" => return Err(invalid(format!("{pair:?} has an empty key"))),
            _ => {
                unknown.push(pair);
                continue;
            }
        };
        *slot = (!value.is_empty()).then(|| value.to_string());
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(invalid(format!(
            "unknown keys [{}] (add IgnoreUnknown=1 to have them ignored)",
            unknown.join(";")
        )));
    }
    Ok(args)
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`: the spec's rule for container ids and network names.
fn is_cni_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Why `name` cannot be a Linux interface name, if it cannot.
fn interface_name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_IFNAME_BYTES {
        return Some(format!(
            "interface name is too long (at most {MAX_IFNAME_BYTES} bytes)"
        ));
    }
    if name == "." || name == ".." {
        return Some("interface name is . or ..".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Some("interface name contains / or : or whitespace".into());
    }
    None
}

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
fn check_version(version: &str, command: Command) -> Result<(), PluginError> {
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
fn version_key(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// Why a CNI call failed; each variant maps to one spec (or tapwire) error code.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Required `CNI_*` variables are unset or empty (code 4).
    #[error("required environment variables [{}] missing", .variables.join(","))]
    MissingEnvironment {
        variables: Vec<&'static str>,
        command: Option<Command>,
    },
    /// A `CNI_*` variable has a value the spec does not allow (code 4).
    #[error("invalid {variable}: {reason} ({value:?})")]
    InvalidEnvironment {
        variable: &'static str,
        reason: String,
        value: String,
    },
    /// `CNI_COMMAND` is not a verb tapwire knows (code 4).
    #[error("unknown CNI_COMMAND {0:?}")]
    UnknownCommand(String),
    /// Reading stdin failed (code 5).
    #[error("reading the network configuration from stdin failed: {0}")]
    ReadConfig(io::Error),
    /// More than [`MAX_CONFIG_BYTES`] on stdin (code 5).
    #[error("the network configuration on stdin is larger than {MAX_CONFIG_BYTES} bytes")]
    ConfigTooLarge,
    /// Stdin is not a JSON object of the expected shape (code 6).
    #[error("cannot decode the network configuration: {0}")]
    DecodeConfig(String),
    /// `prevResult` is not a CNI result (code 6).
    #[error("cannot decode prevResult: {0}")]
    DecodePrevResult(String),
    /// The configuration's `cniVersion` is not spoken, or lacks the verb (code 1).
    #[error("{msg}: {details}")]
    IncompatibleVersion { msg: String, details: String },
    /// A configuration value is invalid (code 7).
    #[error("{msg}: {details}")]
    InvalidConfig { msg: String, details: String },
    /// A configuration field tapwire cannot honour (code 2).
    #[error("unsupported field in network configuration: {key}: {value} ({reason})")]
    UnsupportedField {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The agent's socket could not be used (code 11, or 50 for STATUS).
    #[error("tapwire-control is not reachable: {error}")]
    AgentUnreachable { command: Command, error: ApiError },
    /// The agent refused (its code, passed on unchanged).
    #[error("{0}")]
    Agent(ApiError),
    /// The agent answered, but not what the call expects (code 6).
    #[error("unexpected answer from tapwire-control: {0}")]
    UnexpectedReply(String),
    /// GC could not delete every stale endpoint (11 if the agent went away, else the
    /// first failure's code).
    #[error("GC left stale endpoints: {}", .failures.join("; "))]
    GcIncomplete { code: u32, failures: Vec<String> },
}

impl PluginError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            PluginError::MissingEnvironment { .. }
            | PluginError::InvalidEnvironment { .. }
            | PluginError::UnknownCommand(_) => codes::INVALID_ENVIRONMENT,
            PluginError::ReadConfig(_) | PluginError::ConfigTooLarge => codes::IO_FAILURE,
            PluginError::DecodeConfig(_)
            | PluginError::DecodePrevResult(_)
            | PluginError::UnexpectedReply(_) => codes::DECODE_FAILURE,
            PluginError::IncompatibleVersion { .. } => codes::INCOMPATIBLE_VERSION,
            PluginError::InvalidConfig { .. } => codes::INVALID_NETWORK_CONFIG,
            PluginError::UnsupportedField { .. } => codes::UNSUPPORTED_FIELD,
            PluginError::AgentUnreachable {
                command: Command::Status,
                ..
            } => codes::PLUGIN_NOT_AVAILABLE,
            PluginError::AgentUnreachable { .. } => codes::TRY_AGAIN_LATER,
            PluginError::Agent(err) => err.code,
            PluginError::GcIncomplete { code, .. } => *code,
        }
    }

    /// The error object's `msg` (short) and `details` (the specifics).
    fn msg_and_details(&self) -> (String, String) {
        match self {
            PluginError::MissingEnvironment { command, .. } => {
                let details = match command {
                    Some(c) if !c.required_variables().is_empty() => format!(
                        "{} needs CNI_COMMAND, {}",
                        c.name(),
                        c.required_variables().join(", ")
                    ),
                    _ => "CNI_COMMAND is one of ADD, DEL, CHECK, STATUS, GC, VERSION".into(),
                };
                (self.to_string(), details)
            }
            PluginError::InvalidEnvironment {
                variable,
                reason,
                value,
            } => (
                format!("invalid {variable}: {reason}"),
                format!("{value:?}"),
            ),
            PluginError::UnknownCommand(command) => (
                format!("unknown CNI_COMMAND: {command}"),
                "tapwire handles ADD, DEL, CHECK, STATUS, GC and VERSION".into(),
            ),
            PluginError::ReadConfig(err) => (
                "reading the network configuration from stdin failed".into(),
                err.to_string(),
            ),
            PluginError::ConfigTooLarge => (
                "network configuration too large".into(),
                format!("more than {MAX_CONFIG_BYTES} bytes on stdin"),
            ),
            PluginError::DecodeConfig(details) => (
                "cannot decode the network configuration".into(),
                details.clone(),
            ),
            PluginError::DecodePrevResult(details) => {
                ("cannot decode prevResult".into(), details.clone())
            }
            PluginError::IncompatibleVersion { msg, details }
            | PluginError::InvalidConfig { msg, details } => (msg.clone(), details.clone()),
            PluginError::UnsupportedField { key, value, reason } => (
                format!("unsupported field in network configuration: {key}: {value}"),
                (*reason).to_string(),
            ),
            PluginError::AgentUnreachable { error, .. } => {
                ("tapwire-control is not reachable".into(), error.to_string())
            }
            PluginError::Agent(err) => (err.msg.clone(), err.details.clone()),
            PluginError::UnexpectedReply(details) => (
                "unexpected answer from tapwire-control".into(),
                details.clone(),
            ),
            PluginError::GcIncomplete { failures, .. } => (
                "GC could not delete every stale endpoint".into(),
                failures.join("; "),
            ),
        }
    }

    /// The spec's error object.
    pub fn to_object(&self, cni_version: &str) -> ErrorObject {
        let (msg, details) = self.msg_and_details();
        ErrorObject {
            cni_version: cni_version.to_string(),
            code: self.code(),
            msg,
            details,
        }
    }

    /// An agent failure, with connection failures told apart from refusals.
    fn from_agent(command: Command, error: ApiError) -> PluginError {
        if error.code == codes::UNREACHABLE {
            PluginError::AgentUnreachable { command, error }
        } else {
            PluginError::Agent(error)
        }
    }
}

/// The CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// The `VERSION` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionObject {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The result, version or error JSON (one line, newline-terminated), or empty.
    pub stdout: String,
    pub success: bool,
}

/// Runs one CNI invocation: `env` and the configuration on `stdin` in, what to print out.
/// `agent` performs one API call (in the binary, [`api::call`]).
pub fn run(
    env: &Environment,
    stdin: &mut dyn Read,
    mut agent: impl FnMut(&Path, &Request, Duration) -> Result<Reply, ApiError>,
) -> Outcome {
    let mut bytes = Vec::new();
    let read = stdin
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes);
    // Error objects carry the configuration's cniVersion whenever it can be read.
    let version_hint = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string));
    let error_version = version_hint
        .clone()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| LATEST_VERSION.to_string());
    let result = dispatch(env, read.map(|_| bytes), version_hint, &mut agent);
    match result {
        Ok(stdout) => Outcome {
            stdout: stdout.map(|s| s + "\n").unwrap_or_default(),
            success: true,
        },
        Err(err) => Outcome {
            stdout: to_json(&err.to_object(&error_version)) + "\n",
            success: false,
        },
    }
}

/// Compact JSON. Serializing these plain structs cannot fail; the fallback is an error
/// object written by hand.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| {
        format!(
            r#"{{"cniVersion":"{LATEST_VERSION}","code":5,"msg":"encoding the output failed","details":""}}"#
        )
    })
}

fn dispatch(
    env: &Environment,
    stdin: io::Result<Vec<u8>>,
    version_hint: Option<String>,
    agent: &mut dyn FnMut(&Path, &Request, Duration) -> Result<Reply, ApiError>,
) -> Result<Option<String>, PluginError> {
    let not_unicode = |variable: &'static str| PluginError::InvalidEnvironment {
        variable,
        reason: "not valid UTF-8".into(),
        value: String::new(),
    };
    if env.not_unicode.contains(&"CNI_COMMAND") {
        return Err(not_unicode("CNI_COMMAND"));
    }
    let Some(command_text) = env.command.as_deref() else {
        return Err(PluginError::MissingEnvironment {
            variables: vec!["CNI_COMMAND"],
            command: None,
        });
    };
    let command = Command::parse(command_text)
        .ok_or_else(|| PluginError::UnknownCommand(command_text.to_string()))?;
    if command == Command::Version {
        // Probing must work whatever stdin holds: the answer only echoes its cniVersion.
        let version = VersionObject {
            cni_version: version_hint
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| LATEST_VERSION.to_string()),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        };
        return Ok(Some(to_json(&version)));
    }
    if let Some(&variable) = env.not_unicode.first() {
        return Err(not_unicode(variable));
    }
    let bytes = stdin.map_err(PluginError::ReadConfig)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(PluginError::ConfigTooLarge);
    }
    let missing: Vec<&'static str> = command
        .required_variables()
        .iter()
        .copied()
        .filter(|name| env.get(name).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(PluginError::MissingEnvironment {
            variables: missing,
            command: Some(command),
        });
    }
    let config = NetworkConfig::parse(&bytes, command)?;
    let call = Call {
        config: &config,
        command,
    };
    match command {
        Command::Add => {
            let request = attachment_request(env, &config)?;
            call.add(env, request, agent).map(Some)
        }
        Command::Del => {
            let request = attachment_request(env, &config)?;
            call.expect_done(Request::CniDel(request), agent)
                .map(|()| None)
        }
        Command::Check => {
            let request = attachment_request(env, &config)?;
            call.check(request, agent).map(|()| None)
        }
        Command::Status => call.expect_done(Request::CniStatus, agent).map(|()| None),
        Command::Gc => call.gc(agent).map(|()| None),
        // Answered above, before stdin was needed.
        Command::Version => Ok(None),
    }
}

/// The agent request for an attachment verb, after the spec's checks of its variables.
fn attachment_request(
    env: &Environment,
    config: &NetworkConfig,
) -> Result<CniRequest, PluginError> {
    let container_id = env.container_id.clone().unwrap_or_default();
    if !is_cni_name(&container_id) {
        return Err(PluginError::InvalidEnvironment {
            variable: "CNI_CONTAINERID",
            reason: "invalid characters in container id".into(),
            value: container_id,
        });
    }
    let ifname = env.ifname.clone().unwrap_or_default();
    if let Some(reason) = interface_name_problem(&ifname) {
        return Err(PluginError::InvalidEnvironment {
            variable: "CNI_IFNAME",
            reason,
            value: ifname,
        });
    }
    let args = parse_cni_args(env.args.as_deref().unwrap_or(""))?;
    Ok(CniRequest {
        container_id,
        netns: env.netns.clone().unwrap_or_default(),
        ifname,
        pod_namespace: args.pod_namespace,
        pod_name: args.pod_name,
        network: config.name.clone(),
        mtu: config.mtu,
    })
}

/// One validated call: the configuration and the verb.
struct Call<'a> {
    config: &'a NetworkConfig,
    command: Command,
}

type AgentFn<'a> = &'a mut dyn FnMut(&Path, &Request, Duration) -> Result<Reply, ApiError>;

impl Call<'_> {
    fn call(&self, request: &Request, agent: AgentFn<'_>) -> Result<Reply, PluginError> {
        agent(&self.config.api_socket, request, self.config.timeout)
            .map_err(|e| PluginError::from_agent(self.command, e))
    }

    /// DEL, CHECK and STATUS: the agent answers `done` or an error.
    fn expect_done(&self, request: Request, agent: AgentFn<'_>) -> Result<(), PluginError> {
        match self.call(&request, agent)? {
            Reply::Done => Ok(()),
            other => Err(PluginError::UnexpectedReply(format!(
                "{} was answered with {}",
                self.command.name(),
                other.describe()
            ))),
        }
    }

    fn add(
        &self,
        env: &Environment,
        request: CniRequest,
        agent: AgentFn<'_>,
    ) -> Result<String, PluginError> {
        let prev = match &self.config.prev_result {
            Some(prev) => Some(PrevResult::parse(prev)?),
            None => None,
        };
        if let Some(prev) = &prev {
            let netns = env.netns.as_deref().unwrap_or("");
            if prev.has_interface(&request.ifname, netns) {
                return Err(PluginError::InvalidConfig {
                    msg: format!(
                        "interface {} already exists in the container",
                        request.ifname
                    ),
                    details: format!(
                        "prevResult lists {} in sandbox {netns}; an earlier plugin of the \
                         chain created it",
                        request.ifname
                    ),
                });
            }
        }
        let reply = match self.call(&Request::CniAdd(request), agent)? {
            Reply::CniAdd(reply) => reply,
            other => {
                return Err(PluginError::UnexpectedReply(format!(
                    "ADD was answered with {}",
                    other.describe()
                )))
            }
        };
        let ours = Attached::from_reply(&reply)?;
        let result = build_result(
            &self.config.cni_version,
            &ours,
            prev.as_ref(),
            self.config.dns.as_ref(),
        );
        Ok(to_json(&result))
    }

    /// CHECK: `prevResult` must list tapwire's interface with an address; the agent then
    /// checks the interface and address against what ADD recorded.
    fn check(&self, request: CniRequest, agent: AgentFn<'_>) -> Result<(), PluginError> {
        let Some(prev) = &self.config.prev_result else {
            return Err(PluginError::InvalidConfig {
                msg: "CHECK needs prevResult".into(),
                details: "the runtime must pass the result of the ADD as prevResult".into(),
            });
        };
        let prev = PrevResult::parse(prev)?;
        let Some(index) = prev.interface_index(&request.ifname, &request.netns) else {
            return Err(PluginError::InvalidConfig {
                msg: format!("prevResult does not list interface {}", request.ifname),
                details: format!(
                    "expected {} in sandbox {} among prevResult.interfaces",
                    request.ifname, request.netns
                ),
            });
        };
        if !prev.has_address_on(index) {
            return Err(PluginError::InvalidConfig {
                msg: format!("prevResult lists no address on {}", request.ifname),
                details: format!("no entry of prevResult.ips has \"interface\": {index}"),
            });
        }
        self.expect_done(Request::CniCheck(request), agent)
    }

    /// GC: delete this node's endpoints that are not in the valid list.
    fn gc(&self, agent: AgentFn<'_>) -> Result<(), PluginError> {
        let Some(valid) = &self.config.valid_attachments else {
            return Err(PluginError::InvalidConfig {
                msg: "GC needs cni.dev/valid-attachments".into(),
                details: "without the list every endpoint would look stale; nothing deleted".into(),
            });
        };
        let node = match self.call(&Request::NodeStatus, agent)? {
            Reply::NodeStatus(status) => status.node,
            other => {
                return Err(PluginError::UnexpectedReply(format!(
                    "node status was answered with {}",
                    other.describe()
                )))
            }
        };
        let items = match self.call(
            &Request::Get {
                kind: ResourceKind::Workloadendpoints,
                name: None,
            },
            agent,
        )? {
            Reply::Documents { items, .. } => items,
            other => {
                return Err(PluginError::UnexpectedReply(format!(
                    "get workloadendpoints was answered with {}",
                    other.describe()
                )))
            }
        };
        let stale = stale_attachments(&items, &node, valid);
        let mut failures = Vec::new();
        let mut code = None;
        let total = stale.len();
        for (done, attachment) in stale.iter().enumerate() {
            let request = Request::CniDel(CniRequest {
                container_id: attachment.container_id.clone(),
                netns: String::new(),
                ifname: attachment.ifname.clone(),
                pod_namespace: None,
                pod_name: None,
                network: self.config.name.clone(),
                mtu: None,
            });
            let outcome = match self.call(&request, agent) {
                Ok(Reply::Done) => Ok(()),
                Ok(other) => Err(PluginError::UnexpectedReply(format!(
                    "DEL was answered with {}",
                    other.describe()
                ))),
                Err(e) => Err(e),
            };
            let Err(err) = outcome else { continue };
            failures.push(format!(
                "{}/{}: {err}",
                attachment.container_id, attachment.ifname
            ));
            if matches!(err, PluginError::AgentUnreachable { .. }) {
                // The agent is gone: the rest would fail the same way (each after a
                // timeout, perhaps). The runtime's next GC retries them.
                code = Some(codes::TRY_AGAIN_LATER);
                let left = total - done - 1;
                if left > 0 {
                    failures.push(format!("{left} more not attempted"));
                }
                break;
            }
            code.get_or_insert(err.code());
        }
        // Addresses whose endpoint never got written (an ADD cut short by a crash) have
        // nothing for the DELs above to find: the agent releases them once they are older
        // than any ADD in flight could be.
        if code != Some(codes::TRY_AGAIN_LATER) {
            if let Err(err) = self.call(&Request::ReleaseOrphans, agent) {
                failures.push(format!("releasing addresses without an endpoint: {err}"));
                code.get_or_insert(err.code());
            }
        }
        match code {
            None => Ok(()),
            Some(code) => Err(PluginError::GcIncomplete { code, failures }),
        }
    }
}

/// The endpoints in `items` (workload endpoint documents) that belong to `node`, carry a
/// container id, and are not in `valid`. Documents without a container id were not made
/// by CNI and are never touched.
pub fn stale_attachments(items: &[Value], node: &str, valid: &[Attachment]) -> Vec<Attachment> {
    items
        .iter()
        .filter_map(|doc| {
            let spec = doc.get("spec")?;
            if spec.get("node")?.as_str()? != node {
                return None;
            }
            let container_id = spec.get("containerID")?.as_str()?;
            let ifname = spec.get("endpoint")?.as_str()?;
            let still_valid = valid
                .iter()
                .any(|a| a.container_id == container_id && a.ifname == ifname);
            (!still_valid && !container_id.is_empty()).then(|| Attachment {
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            })
        })
        .collect()
}

/// A `prevResult`, checked for the shape tapwire relies on; entries stay as given.
#[derive(Debug, Clone, PartialEq)]
struct PrevResult {
    interfaces: Vec<Value>,
    ips: Vec<Value>,
    routes: Vec<Value>,
    dns: Option<Value>,
    /// Other top-level fields (without `cniVersion`, which the output sets).
    extra: Map<String, Value>,
}

impl PrevResult {
    fn parse(prev: &Map<String, Value>) -> Result<PrevResult, PluginError> {
        let list = |key: &str| -> Result<Vec<Value>, PluginError> {
            match prev.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => {
                    if let Some(i) = items.iter().position(|v| !v.is_object()) {
                        return Err(PluginError::DecodePrevResult(format!(
                            "prevResult.{key}[{i}] is not an object"
                        )));
                    }
                    Ok(items.clone())
                }
                Some(_) => Err(PluginError::DecodePrevResult(format!(
                    "prevResult.{key} is not a list"
                ))),
            }
        };
        let interfaces = list("interfaces")?;
        let ips = list("ips")?;
        let routes = list("routes")?;
        for (i, ip) in ips.iter().enumerate() {
            match ip.get("interface") {
                None | Some(Value::Null) => {}
                Some(Value::Number(n))
                    if n.as_u64().is_some_and(|n| n < interfaces.len() as u64) => {}
                Some(other) => {
                    return Err(PluginError::DecodePrevResult(format!(
                        "prevResult.ips[{i}].interface is {other}, not an index into the {} \
                         interfaces",
                        interfaces.len()
                    )))
                }
            }
        }
        let dns = match prev.get("dns") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => {
                return Err(PluginError::DecodePrevResult(
                    "prevResult.dns is not an object".into(),
                ))
            }
        };
        let extra = prev
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "cniVersion" | "interfaces" | "ips" | "routes" | "dns"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(PrevResult {
            interfaces,
            ips,
            routes,
            dns,
            extra,
        })
    }

    /// The index of interface `name` in sandbox `netns` (an entry without a sandbox is on
    /// the host and never matches).
    fn interface_index(&self, name: &str, netns: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(name)
                && i.get("sandbox").and_then(Value::as_str) == Some(netns)
        })
    }

    fn has_interface(&self, name: &str, netns: &str) -> bool {
        self.interface_index(name, netns).is_some()
    }

    fn has_address_on(&self, index: usize) -> bool {
        self.ips.iter().any(|ip| {
            ip.get("interface").and_then(Value::as_u64) == Some(index as u64)
                && ip.get("address").and_then(Value::as_str).is_some()
        })
    }
}

/// The agent's answer to ADD, checked to be well-formed CIDRs and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attached {
    interface: String,
    mac: String,
    sandbox: String,
    mtu: u32,
    address: IpNet,
    gateway: Option<IpAddr>,
    routes: Vec<(IpNet, Option<IpAddr>)>,
}

impl Attached {
    fn from_reply(reply: &CniAddReply) -> Result<Attached, PluginError> {
        let bad = |what: &str, value: &str| {
            PluginError::UnexpectedReply(format!("ADD answered {what} {value:?}"))
        };
        let address: IpNet = reply
            .address
            .parse()
            .map_err(|_| bad("an address that is not a CIDR:", &reply.address))?;
        let gateway = if reply.gateway.is_empty() {
            None
        } else {
            Some(
                reply
                    .gateway
                    .parse()
                    .map_err(|_| bad("a gateway that is not an address:", &reply.gateway))?,
            )
        };
        let mut routes = Vec::with_capacity(reply.routes.len());
        for route in &reply.routes {
            let dst: IpNet = route
                .dst
                .parse()
                .map_err(|_| bad("a route destination that is not a CIDR:", &route.dst))?;
            let gw = match &route.gw {
                Some(gw) => Some(
                    gw.parse()
                        .map_err(|_| bad("a route gateway that is not an address:", gw))?,
                ),
                None => None,
            };
            routes.push((dst, gw));
        }
        if reply.interface.is_empty() {
            return Err(bad("an empty interface name", ""));
        }
        Ok(Attached {
            interface: reply.interface.clone(),
            mac: reply.mac.clone(),
            sandbox: reply.sandbox.clone(),
            mtu: reply.mtu,
            address,
            gateway,
            routes,
        })
    }
}

/// An interface entry of the result.
#[derive(Debug, Serialize)]
struct InterfaceOut {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    mac: String,
    /// 1.1.0 results carry the interface MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    sandbox: String,
}

/// An `ips` entry; `version` exists in 0.3.x/0.4.0 results only.
#[derive(Debug, Serialize)]
struct IpOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    interface: usize,
}

#[derive(Debug, Serialize)]
struct RouteOut {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
}

/// A result entry: tapwire's own (fields in spec order) or one kept from `prevResult`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Entry<T> {
    Ours(T),
    Kept(Value),
}

/// The ADD result (1.1.0, 1.0.0, 0.4.0 and 0.3.x share this shape).
#[derive(Debug, Serialize)]
struct ResultOut {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    interfaces: Vec<Entry<InterfaceOut>>,
    ips: Vec<Entry<IpOut>>,
    routes: Vec<Entry<RouteOut>>,
    dns: Entry<Dns>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// The ADD result in `version`: `prev`'s entries first, then tapwire's.
fn build_result(
    version: &str,
    ours: &Attached,
    prev: Option<&PrevResult>,
    config_dns: Option<&Dns>,
) -> ResultOut {
    let pre_1_0 = version_key(version) < (1, 0, 0);
    let with_mtu = version_key(version) >= (1, 1, 0);
    let kept = |items: Option<&Vec<Value>>| -> Vec<Value> { items.cloned().unwrap_or_default() };
    let mut interfaces: Vec<Entry<InterfaceOut>> = kept(prev.map(|p| &p.interfaces))
        .into_iter()
        .map(Entry::Kept)
        .collect();
    let index = interfaces.len();
    interfaces.push(Entry::Ours(InterfaceOut {
        name: ours.interface.clone(),
        mac: ours.mac.clone(),
        mtu: (with_mtu && ours.mtu > 0).then_some(ours.mtu),
        sandbox: ours.sandbox.clone(),
    }));
    let mut ips: Vec<Entry<IpOut>> = kept(prev.map(|p| &p.ips))
        .into_iter()
        .map(Entry::Kept)
        .collect();
    ips.push(Entry::Ours(IpOut {
        version: pre_1_0.then_some(match ours.address {
            IpNet::V4(_) => "4",
            IpNet::V6(_) => "6",
        }),
        address: ours.address.to_string(),
        gateway: ours.gateway.map(|g| g.to_string()),
        interface: index,
    }));
    let mut routes: Vec<Entry<RouteOut>> = kept(prev.map(|p| &p.routes))
        .into_iter()
        .map(Entry::Kept)
        .collect();
    routes.extend(ours.routes.iter().map(|(dst, gw)| {
        Entry::Ours(RouteOut {
            dst: dst.to_string(),
            gw: gw.map(|g| g.to_string()),
        })
    }));
    let dns = match prev.and_then(|p| p.dns.clone()) {
        Some(kept) => Entry::Kept(kept),
        None => Entry::Ours(config_dns.cloned().unwrap_or_default()),
    };
    ResultOut {
        cni_version: version.to_string(),
        interfaces,
        ips,
        routes,
        dns,
        extra: prev.map(|p| p.extra.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CniRoute;

    fn env(command: &str) -> Environment {
        Environment {
            command: Some(command.into()),
            container_id: Some("c0ffee".into()),
            netns: Some("/var/run/netns/pod".into()),
            ifname: Some("eth0".into()),
            args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1".into()),
            path: Some("/opt/cni/bin".into()),
            not_unicode: Vec::new(),
        }
    }

    fn add_reply() -> CniAddReply {
        CniAddReply {
            interface: "eth0".into(),
            mac: "02:00:0a:41:01:02".into(),
            sandbox: "/var/run/netns/pod".into(),
            address: "10.65.1.2/32".into(),
            gateway: "169.254.1.1".into(),
            mtu: 1450,
            routes: vec![CniRoute {
                dst: "0.0.0.0/0".into(),
                gw: Some("169.254.1.1".into()),
            }],
        }
    }

    fn run_with(env: &Environment, stdin: &str, reply: Result<Reply, ApiError>) -> Outcome {
        let mut stdin = stdin.as_bytes();
        run(env, &mut stdin, |_, _, _| reply.clone())
    }

    fn json(outcome: &Outcome) -> Value {
        serde_json::from_str(&outcome.stdout).unwrap()
    }

    #[test]
    fn commands_parse_case_sensitively() {
        assert_eq!(Command::parse("ADD"), Some(Command::Add));
        assert_eq!(Command::parse("GC"), Some(Command::Gc));
        assert_eq!(Command::parse("add"), None);
        assert_eq!(Command::parse(""), None);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let env = Environment::from_lookup(|name| match name {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_NETNS" => Some("".into()),
            _ => None,
        });
        assert_eq!(env.command.as_deref(), Some("ADD"));
        assert_eq!(env.netns, None);
    }

    #[test]
    fn non_utf8_variables_are_reported() {
        use std::os::unix::ffi::OsStringExt;
        let env = Environment::from_lookup(|name| match name {
            "CNI_COMMAND" => Some("DEL".into()),
            "CNI_IFNAME" => Some(OsString::from_vec(vec![0xff, 0xfe])),
            _ => None,
        });
        assert_eq!(env.not_unicode, vec!["CNI_IFNAME"]);
        let out = run_with(&env, "{}", Ok(Reply::Done));
        assert!(!out.success);
        assert_eq!(json(&out)["code"], 4);
        assert!(json(&out)["msg"].as_str().unwrap().contains("CNI_IFNAME"));
        // VERSION only needs CNI_COMMAND.
        let env = Environment {
            command: Some("VERSION".into()),
            ..env
        };
        assert!(run_with(&env, "", Ok(Reply::Done)).success);
    }

    #[test]
    fn cni_args_kubernetes_keys() {
        let args = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;FOO=bar",
        )
        .unwrap();
        assert_eq!(args.pod_namespace.as_deref(), Some("kube-system"));
        assert_eq!(args.pod_name.as_deref(), Some("dns-0"));
        assert_eq!(args.pod_infra_container_id.as_deref(), Some("abc"));
        assert_eq!(args.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
        // A trailing separator is tolerated; '=' inside a value is kept.
        let args = parse_cni_args("K8S_POD_NAME=a=b;").unwrap();
        assert_eq!(args.pod_name.as_deref(), Some("a=b"));
    }

    #[test]
    fn cni_args_errors_name_the_problem() {
        let err = parse_cni_args("FOO=bar;K8S_POD_NAME=x").unwrap_err();
        assert_eq!(err.code(), 4);
        assert!(err.to_string().contains("unknown keys [FOO=bar]"), "{err}");
        // IgnoreUnknown counts wherever it appears.
        assert!(parse_cni_args("FOO=bar;IgnoreUnknown=true").is_ok());
        assert!(parse_cni_args("FOO=bar;IgnoreUnknown=0").is_err());
        let err = parse_cni_args("IgnoreUnknown=maybe").unwrap_err();
        assert!(err.to_string().contains("IgnoreUnknown=maybe"), "{err}");
        let err = parse_cni_args("K8S_POD_NAME").unwrap_err();
        assert!(err.to_string().contains("not KEY=VALUE"), "{err}");
        assert!(parse_cni_args("=x").is_err());
    }

    #[test]
    fn names_follow_the_spec_pattern() {
        for good in ["k8s-pod-network", "a", "0_x.y-z"] {
            assert!(is_cni_name(good), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é"] {
            assert!(!is_cni_name(bad), "{bad}");
        }
        assert_eq!(interface_name_problem("eth0"), None);
        assert!(interface_name_problem("a-very-long-name").is_some());
        assert!(interface_name_problem("..").is_some());
        assert!(interface_name_problem("et h0").is_some());
        assert!(interface_name_problem("eth:0").is_some());
    }

    #[test]
    fn versions_and_verbs() {
        assert!(check_version("1.0.0", Command::Add).is_ok());
        assert!(check_version("0.3.0", Command::Del).is_ok());
        assert_eq!(check_version("0.2.0", Command::Add).unwrap_err().code(), 1);
        assert_eq!(check_version("", Command::Add).unwrap_err().code(), 1);
        assert_eq!(
            check_version("0.3.1", Command::Check).unwrap_err().code(),
            1
        );
        assert!(check_version("0.4.0", Command::Check).is_ok());
        assert_eq!(
            check_version("1.0.0", Command::Status).unwrap_err().code(),
            1
        );
        assert!(check_version("1.1.0", Command::Gc).is_ok());
    }

    #[test]
    fn config_checks() {
        let parse = |text: &str| NetworkConfig::parse(text.as_bytes(), Command::Add);
        let config = parse(r#"{"cniVersion":"1.0.0","name":"net","type":"tapwire"}"#).unwrap();
        assert_eq!(config.api_socket, Path::new(api::DEFAULT_API_SOCKET));
        assert_eq!(config.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        let code = |text: &str| parse(text).unwrap_err().code();
        assert_eq!(code(r#"{"cniVersion":"1.0.0"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"a b"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":1,"name":"n"}"#), 6);
        assert_eq!(code(r#"[1,2]"#), 6);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","api_socket":"rel.sock"}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","timeout_ms":0}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","timeout_ms":-5}"#),
            6
        );
        let err =
            parse(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#).unwrap_err();
        assert_eq!(err.code(), 2);
        let object = err.to_object("1.0.0");
        assert!(object.msg.contains("ipam") && object.msg.contains("host-local"));
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","ipMasq":true}"#),
            2
        );
        // mtu: taken, in range; out of range or not a number is an error, never ignored.
        let config = parse(r#"{"cniVersion":"1.0.0","name":"n","mtu":1400}"#).unwrap();
        assert_eq!(config.mtu, Some(1400));
        let err = parse(r#"{"cniVersion":"1.0.0","name":"n","mtu":100}"#).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(
            err.to_string().contains("100 is not between 576 and 65535"),
            "{err}"
        );
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","mtu":70000}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","mtu":"1400"}"#), 6);
        // Decode errors say where.
        let err =
            parse(r#"{"cniVersion":"1.0.0","name":"n","dns":{"nameservers":"x"}}"#).unwrap_err();
        assert!(err.to_string().contains("dns.nameservers"), "{err}");
    }

    #[test]
    fn add_result_per_version() {
        let config = |v: &str| format!(r#"{{"cniVersion":"{v}","name":"net","type":"tapwire"}}"#);
        let reply = Ok(Reply::CniAdd(add_reply()));
        let out = run_with(&env("ADD"), &config("1.1.0"), reply.clone());
        assert!(out.success, "{}", out.stdout);
        assert_eq!(
            json(&out)["interfaces"][0],
            serde_json::json!({"name":"eth0","mac":"02:00:0a:41:01:02","mtu":1450,
                               "sandbox":"/var/run/netns/pod"})
        );
        let out = run_with(&env("ADD"), &config("1.0.0"), reply.clone());
        assert_eq!(json(&out)["interfaces"][0].get("mtu"), None);
        assert_eq!(json(&out)["ips"][0].get("version"), None);
        let out = run_with(&env("ADD"), &config("0.3.1"), reply);
        assert_eq!(json(&out)["ips"][0]["version"], "4");
        assert_eq!(json(&out)["cniVersion"], "0.3.1");
    }

    #[test]
    fn chained_add_appends_with_the_right_index() {
        let config = r#"{"cniVersion":"1.0.0","name":"net","type":"tapwire","prevResult":{
            "cniVersion":"1.0.0",
            "interfaces":[{"name":"br0","mac":"00:11:22:33:44:55"}],
            "ips":[{"address":"192.168.0.2/24","interface":0}],
            "dns":{"nameservers":["10.0.0.10"]},
            "custom":{"kept":true}}}"#;
        let out = run_with(&env("ADD"), config, Ok(Reply::CniAdd(add_reply())));
        assert!(out.success, "{}", out.stdout);
        let v = json(&out);
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(v["ips"][1]["interface"], 1);
        assert_eq!(v["ips"][0]["address"], "192.168.0.2/24");
        assert_eq!(v["dns"]["nameservers"][0], "10.0.0.10");
        assert_eq!(v["custom"]["kept"], true);
    }

    #[test]
    fn chained_add_refuses_an_existing_interface() {
        let config = r#"{"cniVersion":"1.0.0","name":"net","prevResult":{
            "interfaces":[{"name":"eth0","sandbox":"/var/run/netns/pod"}]}}"#;
        let mut called = false;
        let mut stdin = config.as_bytes();
        let out = run(&env("ADD"), &mut stdin, |_, _, _| {
            called = true;
            Ok(Reply::CniAdd(add_reply()))
        });
        assert!(!out.success);
        assert!(!called, "the agent must not be asked");
        assert_eq!(json(&out)["code"], 7);
    }

    #[test]
    fn bad_prev_results_are_decode_errors() {
        for prev in [
            r#"{"interfaces":{}}"#,
            r#"{"ips":[1]}"#,
            r#"{"interfaces":[],"ips":[{"address":"1.2.3.4/32","interface":3}]}"#,
            r#"{"dns":[]}"#,
        ] {
            let config = format!(r#"{{"cniVersion":"1.0.0","name":"n","prevResult":{prev}}}"#);
            let out = run_with(&env("ADD"), &config, Ok(Reply::CniAdd(add_reply())));
            assert_eq!(json(&out)["code"], 6, "{prev}: {}", out.stdout);
        }
    }

    #[test]
    fn a_malformed_agent_answer_is_an_error() {
        let mut reply = add_reply();
        reply.address = "10.65.1.2".into();
        let out = run_with(
            &env("ADD"),
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
            Ok(Reply::CniAdd(reply)),
        );
        assert!(!out.success);
        assert_eq!(json(&out)["code"], 6);
        let out = run_with(
            &env("DEL"),
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
            Ok(Reply::Routes { routes: vec![] }),
        );
        assert_eq!(json(&out)["code"], 6);
    }

    #[test]
    fn stale_attachments_are_this_nodes_cni_endpoints_not_listed() {
        let wep = |node: &str, cid: Option<&str>, ep: &str| {
            let mut spec = serde_json::json!({"node": node, "endpoint": ep});
            if let Some(cid) = cid {
                spec["containerID"] = cid.into();
            }
            serde_json::json!({"kind": "WorkloadEndpoint", "spec": spec})
        };
        let items = vec![
            wep("node-a", Some("keep"), "eth0"),
            wep("node-a", Some("gone"), "eth0"),
            wep("node-a", Some("keep"), "net1"),
            wep("node-b", Some("other-node"), "eth0"),
            wep("node-a", None, "eth0"),
            serde_json::json!("garbage"),
        ];
        let valid = vec![Attachment {
            container_id: "keep".into(),
            ifname: "eth0".into(),
        }];
        let stale = stale_attachments(&items, "node-a", &valid);
        let pairs: Vec<(&str, &str)> = stale
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        assert_eq!(pairs, vec![("gone", "eth0"), ("keep", "net1")]);
    }

    #[test]
    fn unreachable_maps_per_verb() {
        let unreachable = Err(ApiError::new(codes::UNREACHABLE, "cannot reach", "ENOENT"));
        let out = run_with(
            &env("DEL"),
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
            unreachable.clone(),
        );
        assert_eq!(json(&out)["code"], 11);
        let out = run_with(
            &env("STATUS"),
            r#"{"cniVersion":"1.1.0","name":"n"}"#,
            unreachable,
        );
        assert_eq!(json(&out)["code"], 50);
    }

    #[test]
    fn gc_stops_when_the_agent_goes_away() {
        let wep = |cid: &str| serde_json::json!({"spec": {"node": "n1", "containerID": cid, "endpoint": "eth0"}});
        let mut dels = 0;
        let mut stdin =
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[]}"#.as_bytes();
        let env = Environment {
            command: Some("GC".into()),
            ..Environment::default()
        };
        let out = run(&env, &mut stdin, |_, req, _| match req {
            Request::NodeStatus => Ok(Reply::NodeStatus(crate::api::NodeStatusReply {
                node: "n1".into(),
                underlay_address: String::new(),
                dataplane_connected: true,
                dataplane_in_sync: true,
                last_heartbeat_secs: None,
                peers: vec![],
            })),
            Request::Get { .. } => Ok(Reply::Documents {
                items: vec![wep("a"), wep("b"), wep("c")],
                damaged: Vec::new(),
            }),
            _ => {
                dels += 1;
                Err(ApiError::new(
                    codes::UNREACHABLE,
                    "cannot reach",
                    "ECONNREFUSED",
                ))
            }
        });
        assert!(!out.success);
        assert_eq!(dels, 1);
        let v = json(&out);
        assert_eq!(v["code"], 11);
        assert!(
            v["details"]
                .as_str()
                .unwrap()
                .ends_with("2 more not attempted"),
            "{v}"
        );
    }

    #[test]
    fn oversized_stdin_is_refused() {
        let big = vec![b' '; MAX_CONFIG_BYTES + 10];
        let out = run(&env("ADD"), &mut big.as_slice(), |_, _, _| Ok(Reply::Done));
        assert!(!out.success);
        assert_eq!(json(&out)["code"], 5);
    }
}
