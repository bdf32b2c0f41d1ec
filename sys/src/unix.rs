//! Unix-domain sockets the tapwire daemons listen on.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Listens on `path` with mode 0600: creates the parent directory, replaces a stale
/// socket left by an earlier run (but refuses to remove anything that is not a socket),
/// binds, and restricts the socket to its owner. Errors name the path.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
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

    #[test]
    fn replaces_a_stale_socket_but_not_a_file() {
        let dir = std::env::temp_dir().join(format!("tw-sys-unix-{}", std::process::id()));
        let sock = dir.join("sub").join("a.sock");
        let first = bind_private(&sock).unwrap();
        drop(first);
        let again = bind_private(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(again);
        let file = dir.join("plain");
        std::fs::write(&file, b"keep me").unwrap();
        let err = bind_private(&file).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
