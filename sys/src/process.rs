//! Children that must not outlive their parent: [`die_with_parent`] asks the kernel to
//! kill the child (SIGKILL) when the thread that started it ends, for instance because
//! the process was killed. tapwire-control starts BIRD this way, so a BIRD never runs on
//! without the control that configures it; the next control starts a new one (and BGP
//! graceful restart keeps the routes meanwhile).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child started from `command` receive SIGKILL when the thread that spawns it
/// exits (`PR_SET_PDEATHSIG`: the kernel tracks the spawning *thread*, so spawn from a
/// thread that lives as long as the child should). If the parent is already gone when
/// the child starts, the spawn fails (`ESRCH`) instead of leaving an orphan.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid); it builds its error from an errno
    // without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    #[test]
    fn the_child_dies_when_the_thread_that_started_it_ends() {
        let mut child = std::thread::spawn(|| {
            die_with_parent(&mut Command::new("sleep"))
                .arg("30")
                .spawn()
                .expect("sleep")
        })
        .join()
        .expect("the spawning thread");
        // The spawning thread has ended: the kernel sends SIGKILL.
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child outlived the thread that started it");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
