//! Scratch network namespaces for tests (feature `testing`).
//!
//! [`ScratchNetns`] runs `ip netns add` with a name unique to this process and deletes the
//! namespace when dropped, also when the test fails. It shells out to `ip` on purpose: tests
//! should check the kernel's state with the same tool a user would.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Distinguishes the namespaces one test process creates.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether the process runs as root; namespace tests skip themselves otherwise.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A named network namespace (`/var/run/netns/NAME`) deleted on drop.
#[derive(Debug)]
pub struct ScratchNetns {
    name: String,
    path: PathBuf,
}

impl ScratchNetns {
    /// Creates namespace `PREFIX<pid>_<n>` with `ip netns add`. Keep `prefix` short: the
    /// name also serves for interface names in some tests.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}_{n}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        let path = Path::new("/var/run/netns").join(&name);
        Ok(ScratchNetns { name, path })
    }

    /// The namespace name, for `ip -n NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for `run_in_netns`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `ip -n NAME ARGS…` and returns its standard output; a non-zero exit is an error
    /// carrying `ip`'s standard error.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        // Nothing useful can be done with a failure here; a leftover namespace is visible in
        // `ip netns list` under the test's prefix.
        let _ = run_ip(&["netns", "delete", &self.name]);
    }
}

/// Runs `ip ARGS…`, returning stdout, or an error with the command line and stderr.
fn run_ip(args: &[&str]) -> io::Result<String> {
    let output = Command::new("ip").args(args).output()?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
