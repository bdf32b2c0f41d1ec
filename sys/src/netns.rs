//! Running code inside another network namespace without moving the caller.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling *thread* only. Doing it on a
//! thread that lives on (a worker, an async executor's thread) leaks the namespace into
//! unrelated work, so [`run_in_netns`] does it on a fresh thread that ends with the closure.
//! Sockets and TAP queues opened inside keep their namespace after the thread is gone, which is
//! how the dataplane holds queues of pods while itself staying in the node's namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Runs `f` on a new thread that has entered the network namespace at `netns_path`
/// (for example `/var/run/netns/NAME` or `/proc/PID/ns/net`) and returns what `f` returns.
///
/// The calling thread never changes namespace. `f` may borrow from the caller. A panic in `f`
/// is propagated to the caller.
///
/// Errors: the namespace file cannot be opened (the message names the path; a missing path
/// is `ErrorKind::NotFound`), it is not a network namespace or `setns` is refused (the message
/// names the path), or `f`'s own error, returned unchanged.
pub fn run_in_netns<T, F>(netns_path: &Path, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> io::Result<T> + Send,
{
    // Opened here rather than on the new thread so that a bad path costs no thread.
    let netns = File::open(netns_path).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!(
                "cannot open network namespace {}: {err}",
                netns_path.display()
            ),
        )
    })?;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("tapwire-netns".to_owned())
            .spawn_scoped(scope, || {
                enter(&netns).map_err(|err| {
                    io::Error::new(
                        err.kind(),
                        format!(
                            "cannot enter network namespace {}: {err}",
                            netns_path.display()
                        ),
                    )
                })?;
                f()
            })?;
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the network namespace `netns` refers to.
fn enter(netns: &File) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `netns` keeps open for the call; with
    // CLONE_NEWNET the kernel checks that it refers to a network namespace (EINVAL otherwise).
    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_names_the_path() {
        let path = Path::new("/var/run/netns/tapwire-no-such-namespace");
        let err = run_in_netns(path, || Ok(())).expect_err("path does not exist");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .contains("/var/run/netns/tapwire-no-such-namespace"),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_namespace_is_refused_with_its_path() {
        // setns needs CAP_SYS_ADMIN before it looks at the file type; either way it fails.
        let err = run_in_netns(Path::new("/proc/self/stat"), || Ok(()))
            .expect_err("not a namespace file");
        assert!(
            err.to_string()
                .contains("cannot enter network namespace /proc/self/stat"),
            "{err}"
        );
    }

    #[test]
    fn own_namespace_runs_the_closure_and_returns_its_value() {
        // Entering the namespace we are already in works for root only.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let borrowed = String::from("borrowed from the caller");
        let len = run_in_netns(Path::new("/proc/self/ns/net"), || Ok(borrowed.len()))
            .expect("own namespace");
        assert_eq!(len, 24);
    }

    #[test]
    fn the_closures_error_comes_back_unchanged() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let err = run_in_netns::<(), _>(Path::new("/proc/self/ns/net"), || {
            Err(io::Error::from_raw_os_error(libc::EEXIST))
        })
        .expect_err("closure failed");
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    }
}
