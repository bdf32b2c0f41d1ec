//! The lab's one error type. Every message says what the lab was doing and, for commands,
//! the exact command line and what it printed, so a failed end-to-end test reads like a
//! transcript.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while building or driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A command could not be started at all (binary missing, fork failed).
    #[error("cannot start `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    /// Something did not happen within its time bound.
    #[error("timed out after {after:?} {what}")]
    Timeout { what: String, after: Duration },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// A binary the lab runs was not built.
    #[error(
        "{} does not exist: run `cargo build --workspace --bins` first, or point \
         TAPWIRE_BIN_DIR at the directory holding the tapwire binaries",
        path.display()
    )]
    BinaryMissing { path: PathBuf },
    /// A tool the lab shells out to is not installed.
    #[error("`{tool}` is not installed (Debian package {package}); scripts/test.sh installs it")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    /// The dataplane process ended while the lab expected it to run.
    #[error("tapwire-dataplane on {node} exited ({status}); its log ends with:\n{log_tail}")]
    DataplaneExited {
        node: String,
        status: String,
        log_tail: String,
    },
    /// The control connection to a dataplane broke or carried something unexpected.
    #[error("control connection to {node}: {reason}")]
    Control { node: String, reason: String },
    /// A tool printed something the lab could not read.
    #[error("cannot read the output of {what}: {reason}; the output was:\n{output}")]
    Parse {
        what: String,
        reason: String,
        output: String,
    },
    /// A TCP transfer did not deliver what was sent.
    #[error("TCP transfer {from} -> {to}: {reason}")]
    Transfer {
        from: String,
        to: String,
        reason: String,
    },
    /// podnet could not build a pod's interface.
    #[error("creating pod {pod}'s interface: {source}")]
    Podnet {
        pod: String,
        source: tapwire_control::podnet::PodnetError,
    },
    /// A CNI plugin failed (boxed: the error object makes it large).
    #[error(transparent)]
    Cni(Box<CniFailure>),
    /// `tapwire-control` did not come up, or exited.
    #[error("tapwire-control on {node}: {reason}")]
    Agent { node: String, reason: String },
    /// An etcd member of the lab did not come up, exited, or answered unexpectedly.
    #[error("etcd {member}: {reason}")]
    Etcd { member: String, reason: String },
    /// The lab was asked for something it cannot build.
    #[error("invalid lab request: {0}")]
    Invalid(String),
}

impl LabError {
    /// An [`LabError::Io`] naming what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}

/// A CNI plugin call that failed: the plugin, the call, how it exited and its CNI error
/// object (`code`, `msg`, `details`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "CNI {command} of {plugin} for container {container} failed ({exit}): code {code}: {msg}{}{}",
    if details.is_empty() { String::new() } else { format!(" ({details})") },
    if stderr.trim().is_empty() { String::new() } else { format!("; stderr: {}", stderr.trim()) }
)]
pub struct CniFailure {
    pub plugin: String,
    pub command: String,
    pub container: String,
    pub exit: String,
    pub code: u64,
    pub msg: String,
    pub details: String,
    pub stderr: String,
}

/// Results of lab operations.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
