//! A named network namespace of a lab (`/var/run/netns/NAME`) and the ways to act inside
//! it: commands through `ip netns exec` (what a user would type), and Rust closures on a
//! thread that has entered it ([`tapwire_sys::netns::run_in_netns`]).

use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cleanup::{lock, Shared};
use crate::error::{LabError, Result};
use crate::process::{self, CommandOutput, Proc};

/// How long an ordinary command (`ip`, `sysctl`, …) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A network namespace the lab created; deleted when the lab is dropped.
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
    shared: Shared,
}

impl Netns {
    /// Creates namespace `name` with `lo` up and registers it for deletion.
    pub(crate) fn create(shared: &Shared, name: &str) -> Result<Netns> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "add", name]);
        process::run(shared, cmd, COMMAND_TIMEOUT)?.success()?;
        lock(shared).add_namespace(name.to_string());
        let ns = Netns {
            name: name.to_string(),
            shared: shared.clone(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle for namespace `name` that has not been created (nor registered) yet.
    pub(crate) fn unmade(shared: &Shared, name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            shared: shared.clone(),
        }
    }

    /// The namespace name, for `ip -n NAME` and `ip netns exec NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for `setns` (and the dataplane's netns annotation).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A `Command` that runs `args` inside the namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` inside the namespace and returns its standard output; a non-zero exit
    /// is an error carrying the command line and its standard error.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        self.exec_output(args, COMMAND_TIMEOUT)?.success()
    }

    /// Runs `args` inside the namespace within `timeout`, whatever its exit status.
    pub fn exec_output(&self, args: &[&str], timeout: Duration) -> Result<CommandOutput> {
        process::run(&self.shared, self.command(args), timeout)
    }

    /// Runs `args` inside the namespace with extra environment variables `env` and, if
    /// given, `input` on its standard input; returns whatever it printed, whatever its
    /// exit status (a runtime invoking a CNI plugin reads both).
    pub fn exec_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput> {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        process::run_with_input(&self.shared, cmd, input, timeout)
    }

    /// Runs `ip -n NAME ARGS…` and returns its standard output.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        process::run(&self.shared, cmd, COMMAND_TIMEOUT)?.success()
    }

    /// Creates a veth pair: `name` in this namespace, its peer `eth0` in `peer` (how a
    /// node joins the underlay and a kernel pod joins its node). Both ends stay down.
    pub fn add_veth_to_eth0(&self, name: &str, peer: &Netns) -> Result<()> {
        self.ip(&[
            "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
        ])?;
        Ok(())
    }

    /// The names of the namespace's interfaces other than `lo` (`ip -o link`, without
    /// the `@peer` suffix of veths).
    pub fn interfaces_besides_lo(&self) -> Result<Vec<String>> {
        Ok(self
            .exec(&["ip", "-o", "link", "show"])?
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .filter(|name| name != "lo")
            .collect())
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward`, …).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Starts a long-running process inside the namespace, registered under `label`.
    pub fn spawn(
        &self,
        label: impl Into<String>,
        args: &[&str],
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Proc> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        Proc::spawn(&self.shared, label, &mut cmd)
    }

    /// Runs `f` on a thread inside the namespace. Sockets it creates stay in the namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> io::Result<T> + Send,
    {
        tapwire_sys::netns::run_in_netns(&self.path(), f)
            .map_err(|source| LabError::io(format!("inside namespace {}", self.name), source))
    }
}
