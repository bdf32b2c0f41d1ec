//! Child processes: short commands run to completion within a time bound ([`run`]) and
//! long-running ones ([`Proc`]: dataplanes, tcpdump, iperf3 servers) that are killed by
//! PID when dropped. Every child is registered with its lab's [`Resources`] while it
//! runs, so Ctrl-C and lab teardown can kill it too.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cleanup::{lock, Resources, Shared};
use crate::error::{LabError, Result};

/// How a command line is shown in messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// A running child process, registered with its lab; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    label: String,
    shared: Shared,
}

impl Proc {
    /// Starts `cmd` and registers it under `label`.
    pub fn spawn(shared: &Shared, label: impl Into<String>, cmd: &mut Command) -> Result<Proc> {
        let label = label.into();
        // Registration happens under the lock that cleanup takes, so a signal arriving
        // between spawn and registration at worst misses this one child.
        let mut resources = lock(shared);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: describe(cmd),
            source,
        })?;
        resources.add_pid(child.id(), label.clone());
        drop(resources);
        Ok(Proc {
            child,
            label,
            shared: shared.clone(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What this process is, as given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The child's piped standard output, if it was piped and not yet taken.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's piped standard input, if it was piped and not yet taken.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's piped standard error, if it was piped and not yet taken.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// Reaps the child if it has exited (unregistering it under the cleanup lock).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let mut resources = lock(&self.shared);
        reap(&mut self.child, &mut resources)
            .map_err(|source| LabError::io(format!("waiting for {}", self.label), source))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Sends `signal` if the process still runs.
    pub fn signal(&mut self, signal: libc::c_int) {
        let resources = lock(&self.shared);
        // Only while unreaped: checked under the lock that reaping takes.
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill has no memory arguments; the PID is our unreaped child.
                unsafe {
                    libc::kill(pid, signal);
                }
            }
        }
        drop(resources);
    }

    /// Asks the process to stop (SIGTERM), waits up to `grace`, then kills it.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        self.kill()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL);
        match self.wait_timeout(Duration::from_secs(10))? {
            Some(status) => Ok(status),
            None => Err(LabError::Timeout {
                what: format!("waiting for {} (pid {}) to die", self.label, self.pid()),
                after: Duration::from_secs(10),
            }),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Nothing to report from a destructor; a process that refuses SIGKILL for 10 s
        // stays registered and the lab's teardown tries again.
        let _ = self.kill();
    }
}

/// `child.try_wait()`, unregistering the PID when the child has been reaped.
fn reap(child: &mut Child, resources: &mut Resources) -> std::io::Result<Option<ExitStatus>> {
    let status = child.try_wait()?;
    if status.is_some() {
        resources.remove_pid(child.id());
    }
    Ok(status)
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    /// The standard output if the command succeeded, else a [`LabError::Command`].
    pub fn success(self) -> Result<String> {
        if self.status.success() {
            Ok(self.stdout)
        } else {
            Err(LabError::Command {
                command: self.command,
                status: self.status.to_string(),
                stderr: if self.stderr.trim().is_empty() {
                    self.stdout.trim().to_string()
                } else {
                    self.stderr.trim().to_string()
                },
            })
        }
    }
}

/// Reads a pipe to its end on a thread.
fn collect(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<String>> {
    let mut pipe = pipe?;
    std::thread::Builder::new()
        .name("tapwire-lab-pipe".into())
        .spawn(move || {
            let mut bytes = Vec::new();
            // A read error just ends the output early; the exit status tells the story.
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .ok()
}

/// Runs `cmd` to completion, killing it after `timeout`. Any exit status is returned;
/// use [`CommandOutput::success`] to require success.
pub fn run(shared: &Shared, cmd: Command, timeout: Duration) -> Result<CommandOutput> {
    run_with_input(shared, cmd, None, timeout)
}

/// Like [`run`], with `input` written to the command's standard input (then closed);
/// `None` gives it `/dev/null`. The input is written from a thread, so a command that
/// prints before reading cannot deadlock against us.
pub fn run_with_input(
    shared: &Shared,
    mut cmd: Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<CommandOutput> {
    let command = describe(&cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut proc = Proc::spawn(shared, command.clone(), &mut cmd)?;
    let writer = match (input, proc.take_stdin()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            std::thread::Builder::new()
                .name("tapwire-lab-stdin".into())
                // A command that exits without reading everything closes the pipe: its
                // exit status tells the story, not the write error.
                .spawn(move || {
                    let _ = pipe.write_all(&bytes);
                })
                .ok()
        }
        _ => None,
    };
    let stdout = collect(proc.take_stdout());
    let stderr = collect(proc.take_stderr());
    let status = match proc.wait_timeout(timeout)? {
        Some(status) => status,
        None => {
            proc.kill()?;
            return Err(LabError::Timeout {
                what: format!("running `{command}`"),
                after: timeout,
            });
        }
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let join = |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(CommandOutput {
        command,
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}
