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
//!
//! Files: `env` (the `CNI_*` variables and the verb), `config` (the network configuration
//! and the versions), `error` (codes and error objects), `commands` (one agent call per
//! verb) and `result` (`VERSION`'s and `ADD`'s output, `prevResult` merging).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::api::{ApiError, Reply, Request};

mod commands;
mod config;
mod env;
mod error;
mod result;

pub use commands::stale_attachments;
pub use config::{
    Attachment, Dns, NetworkConfig, DEFAULT_TIMEOUT_MS, LATEST_VERSION, MAX_CONFIG_BYTES,
    MAX_TIMEOUT_MS, MIN_MTU, SUPPORTED_VERSIONS,
};
pub use env::{parse_cni_args, CniArgs, Command, Environment};
pub use error::{ErrorObject, PluginError};
pub use result::VersionObject;

use commands::dispatch;

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The result, version or error JSON (one line, newline-terminated), or empty.
    pub stdout: String,
    pub success: bool,
}

/// Runs one CNI invocation: `env` and the configuration on `stdin` in, what to print out.
/// `agent` performs one API call (in the binary, [`api::call`](crate::api::call)).
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

#[cfg(test)]
mod tests;
