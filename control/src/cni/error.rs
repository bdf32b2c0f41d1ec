//! [`PluginError`]: why a CNI call failed, its spec error code, and the error object
//! the plugin prints.

use std::io;

use serde::{Deserialize, Serialize};

use super::{Command, MAX_CONFIG_BYTES};
use crate::api::{codes, ApiError};

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
    pub(super) fn from_agent(command: Command, error: ApiError) -> PluginError {
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
