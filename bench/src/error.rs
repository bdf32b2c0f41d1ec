//! The harness's error type. Messages say what was being measured or read, so a failed
//! run explains itself without a debugger.

use std::io;

use tapwire_integration::LabError;

/// What went wrong during a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Building or driving a lab failed (the lab's message names the command).
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// A `/proc` file or a tool's output did not read as expected.
    #[error("cannot read {what}: {reason}")]
    Parse { what: String, reason: String },
    /// A measurement ran but produced nothing usable (no packets, no samples).
    #[error("measuring {what}: {reason}")]
    Measure { what: String, reason: String },
    /// Writing `results.json` failed.
    #[error("encoding results as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The run finished, but some of its parts failed (the report says which).
    #[error("{count} part(s) of the run failed; see above and {report}")]
    PartsFailed { count: usize, report: String },
    /// The run was asked for something it cannot do.
    #[error("invalid benchmark request: {0}")]
    Invalid(String),
}

impl BenchError {
    /// A [`BenchError::Io`] naming what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }

    /// A [`BenchError::Measure`].
    pub fn measure(what: impl Into<String>, reason: impl Into<String>) -> Self {
        BenchError::Measure {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Results of harness operations.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
