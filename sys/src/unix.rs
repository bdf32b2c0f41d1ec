//! Unix-domain sockets the tapwire daemons listen on, and the lock that keeps a second
//! instance of a daemon from taking over a socket another one is serving.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Held for the life of a daemon: an exclusive `flock(2)` on a lock file beside its socket
/// (`<socket>.lock`, mode 0600, holding the owner's PID). The kernel releases it when the
/// process exits, however it exits, so a crashed daemon never blocks its successor.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// The lock of whoever serves `socket`: `<socket>.lock`.
    pub fn for_socket(socket: &Path) -> io::Result<InstanceLock> {
        let mut name = socket.as_os_str().to_owned();
        name.push(".lock");
        InstanceLock::acquire(Path::new(&name))
    }

    /// Takes the lock at `path` without waiting. Fails with [`io::ErrorKind::WouldBlock`]
    /// and a message naming the holder's PID when another process holds it.
    pub fn acquire(path: &Path) -> io::Result<InstanceLock> {
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(context)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(context)?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = match holder.trim() {
                        "" => "another process".to_string(),
                        pid => format!("process {pid}"),
                    };
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "{}: held by {holder}: another instance is already running here; \
                             stop it first",
                            path.display()
                        ),
                    ));
                }
                _ => return Err(context(err)),
            }
        }
        file.set_len(0).map_err(context)?;
        file.rewind().map_err(context)?;
        writeln!(file, "{}", std::process::id()).map_err(context)?;
        Ok(InstanceLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Listens on `path` with mode 0600: creates the parent directory, replaces a stale
/// socket left by an earlier run (but refuses to remove anything that is not a socket),
/// binds, and restricts the socket to its owner. Errors name the path.
///
/// The caller must hold the socket's [`InstanceLock`] (which is why it is an argument):
/// without it, a second daemon would delete the live socket of the first.
pub fn bind_private(path: &Path, _held: &InstanceLock) -> io::Result<UnixListener> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(context)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(context)?,
        Ok(_) => {
            return Err(context(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(e)),
    }
    let listener = UnixListener::bind(path).map_err(context)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(context)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tw-sys-unix-{name}-{}", std::process::id()))
    }

    #[test]
    fn replaces_a_stale_socket_but_not_a_file() {
        let dir = scratch("stale");
        let sock = dir.join("sub").join("a.sock");
        let lock = InstanceLock::for_socket(&sock).unwrap();
        let first = bind_private(&sock, &lock).unwrap();
        drop(first);
        let again = bind_private(&sock, &lock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(again);
        let file = dir.join("plain");
        std::fs::write(&file, b"keep me").unwrap();
        let err = bind_private(&file, &lock).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_instance_is_refused_with_the_holders_pid_until_the_first_goes() {
        let dir = scratch("instance");
        let sock = dir.join("a.sock");
        let first = InstanceLock::for_socket(&sock).unwrap();
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        // flock locks belong to the open file description: a second open in this process
        // contends exactly as another process would.
        let err = InstanceLock::for_socket(&sock).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let text = err.to_string();
        assert!(
            text.contains(&format!("process {}", std::process::id()))
                && text.contains("already running"),
            "{text}"
        );
        drop(first);
        let second = InstanceLock::for_socket(&sock).unwrap();
        drop(second);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
