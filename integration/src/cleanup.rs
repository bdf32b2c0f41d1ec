//! What a lab has created and must remove: running child processes (by PID), network
//! namespaces and its temporary directory.
//!
//! Each lab records its resources in a [`Resources`] shared with a process-wide registry,
//! so that three paths tear the same list down: the lab's `Drop` (normal end and panics),
//! and a signal thread ([`install_signal_cleanup`]) on Ctrl-C, SIGTERM or SIGHUP, which
//! cleans every live lab and exits with status 130.
//!
//! PIDs are only killed while still registered, and a child is only reaped (by
//! [`crate::process::Proc`]) while holding the same lock that unregisters it, so a PID
//! that is killed always belongs to our own unreaped child, never to a recycled number.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};

/// Everything one lab created that outlives a function call.
#[derive(Debug, Default)]
pub struct Resources {
    /// Running (unreaped) children: PID → what it is, for messages.
    pids: BTreeMap<u32, String>,
    /// Network namespaces, in creation order (deleted in reverse).
    namespaces: Vec<String>,
    /// Directories removed at the end.
    dirs: BTreeSet<PathBuf>,
}

/// A lab's resources, shared by its nodes, pods, processes and the signal thread.
pub type Shared = Arc<Mutex<Resources>>;

/// Locks `shared`, ignoring poisoning: cleanup must still run after a panic.
pub fn lock(shared: &Mutex<Resources>) -> MutexGuard<'_, Resources> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Resources {
    pub fn add_pid(&mut self, pid: u32, label: String) {
        self.pids.insert(pid, label);
    }

    pub fn remove_pid(&mut self, pid: u32) {
        self.pids.remove(&pid);
    }

    pub fn add_namespace(&mut self, name: String) {
        self.namespaces.push(name);
    }

    pub fn add_dir(&mut self, dir: PathBuf) {
        self.dirs.insert(dir);
    }

    /// Kills every registered child with SIGKILL. They stay registered until their owner
    /// reaps them; killing a zombie again is harmless.
    pub fn kill_all(&self) {
        for pid in self.pids.keys() {
            let Ok(pid) = libc::pid_t::try_from(*pid) else {
                continue;
            };
            // SAFETY: kill has no memory arguments. The PID is an unreaped child of this
            // process (see the module comment), so it cannot name anybody else's process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Deletes every namespace and directory; returns what could not be removed.
    pub fn remove_namespaces_and_dirs(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some(ns) = self.namespaces.pop() {
            let output = Command::new("ip")
                .args(["netns", "delete", &ns])
                .stdin(Stdio::null())
                .output();
            match output {
                Ok(out) if out.status.success() => {}
                Ok(out) => failures.push(format!(
                    "ip netns delete {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(err) => failures.push(format!("ip netns delete {ns}: {err}")),
            }
        }
        for dir in std::mem::take(&mut self.dirs) {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    failures.push(format!("removing {}: {err}", dir.display()));
                }
            }
        }
        failures
    }
}

/// Live labs, by id, for the signal thread.
static LABS: Mutex<BTreeMap<u64, Weak<Mutex<Resources>>>> = Mutex::new(BTreeMap::new());
static NEXT_LAB: AtomicU64 = AtomicU64::new(1);

/// Registers a lab's resources with the signal thread; returns the id to unregister with.
pub fn register(shared: &Shared) -> u64 {
    let id = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
    LABS.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, Arc::downgrade(shared));
    id
}

/// Forgets a lab (it cleaned up itself).
pub fn unregister(id: u64) {
    LABS.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
}

/// Kills the processes and removes the namespaces of every live lab.
fn cleanup_all_labs() {
    let labs: Vec<Shared> = LABS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for shared in labs {
        let mut resources = lock(&shared);
        resources.kill_all();
        // Give the killed processes a moment to exit so their namespaces go with them.
        std::thread::sleep(std::time::Duration::from_millis(100));
        for failure in resources.remove_namespaces_and_dirs() {
            crate::lab::note(format_args!("tapwire lab cleanup: {failure}"));
        }
    }
}

/// Write end of the self-pipe the signal handler writes to; -1 until installed.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
static INSTALL: Once = Once::new();

extern "C" fn on_signal(_signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; `byte` lives for the call. A failed or
        // short write only means an earlier signal already woke the cleanup thread.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP clean up every live lab, then exit with status 130.
///
/// The handler only writes a byte to a pipe; a dedicated thread does the cleanup, so it
/// works whatever the interrupted threads were doing. Installed once per process; called
/// by [`crate::Lab::new`]. If installation fails, labs still clean up on drop.
pub fn install_signal_cleanup() {
    INSTALL.call_once(|| {
        if let Err(err) = install() {
            eprintln!("tapwire lab: cannot install the Ctrl-C cleanup handler: {err}");
        }
    });
}

fn install() -> std::io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two descriptors, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just created fds[0]; nothing else owns it.
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
    std::thread::Builder::new()
        .name("tapwire-lab-signals".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            if matches!(reader.read(&mut byte), Ok(1)) {
                crate::lab::note(format_args!(
                    "tapwire lab: interrupted; removing lab namespaces and processes"
                ));
                cleanup_all_labs();
                std::process::exit(130);
            }
        })?;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction is plain data; all-zero is a valid starting value.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is a valid sigaction whose handler only calls write(2), which
        // is async-signal-safe; the old action is not requested.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
