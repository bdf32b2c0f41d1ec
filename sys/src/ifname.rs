//! Interface names: the kernel's validity rules, and the `struct ifreq` that ioctls take.
//!
//! Every function that passes a name to the kernel goes through [`ifreq`], so a bad name is an
//! `InvalidInput` error naming it rather than a truncated or NUL-cut name reaching an ioctl.

use std::io;

/// The longest interface name the kernel accepts, in bytes (IFNAMSIZ minus the NUL).
pub(crate) const MAX_LEN_BYTES: usize = libc::IFNAMSIZ - 1;

/// Checks `name` against the kernel's rules for interface names (`dev_valid_name`).
pub(crate) fn validate(name: &str) -> io::Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_LEN_BYTES {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("it is a path component")
    } else if name
        .bytes()
        .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        Some("it contains a NUL, '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}: {reason}"),
        )),
    }
}

/// A zeroed `struct ifreq` whose `ifr_name` is `name` (validated, NUL-terminated).
pub(crate) fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    validate(name)?;
    // SAFETY: `ifreq` is a C struct of integers, byte arrays, a union of such and a pointer;
    // all-zero bytes are a valid value for every field (the pointer member becomes null).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        // `c_char` is i8 or u8 depending on the target; this is a byte copy either way.
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The ifindex of `name` in the calling thread's namespace, or `None` when there is no such
/// interface.
pub(crate) fn index_of(name: &str) -> io::Result<Option<u32>> {
    validate(name)?;
    let mut cname = [0u8; libc::IFNAMSIZ];
    cname[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `cname` is a NUL-terminated string (validate() bounds the length to
    // IFNAMSIZ - 1 and rejects interior NULs) that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr().cast()) };
    if index != 0 {
        return Ok(Some(index));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENODEV) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// The error for "no interface called `name` here".
pub(crate) fn not_found(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no network interface named {name:?} in this network namespace"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["eth0", "lo", "cali1234567890a", "tap-pod_1.x"] {
            assert!(validate(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_names_the_kernel_rejects() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a:b",
            "nul\0x",
            "sixteen-bytes-xx",
        ] {
            let err = validate(name).expect_err(name);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(
                err.to_string().contains(&format!("{name:?}")),
                "message names the interface: {err}"
            );
        }
    }

    #[test]
    fn ifreq_carries_the_name_nul_terminated() {
        let req = ifreq("eth0").expect("valid name");
        let bytes: Vec<u8> = req.ifr_name.iter().map(|&c| c as u8).collect();
        assert_eq!(&bytes[..5], b"eth0\0");
        assert!(bytes[5..].iter().all(|&b| b == 0));

        let longest = "a".repeat(MAX_LEN_BYTES);
        let req = ifreq(&longest).expect("15 bytes is allowed");
        assert_eq!(req.ifr_name[MAX_LEN_BYTES], 0);
    }
}
