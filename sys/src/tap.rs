//! Persistent multi-queue TAP devices in the calling thread's network namespace.
//!
//! A pod's `eth0` is a TAP created with `IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE` and made
//! persistent, so it outlives the process that created it and a dataplane restart does not
//! take the pod's interface away. The dataplane then attaches one [`TapQueue`] per worker.
//!
//! `TUNSETIFF` on `/dev/net/tun` both creates devices and attaches to existing ones, depending
//! on whether the name exists. Each function here pins down which one it means: creation
//! refuses an existing name (and passes `IFF_TUN_EXCL` against races), attaching refuses a
//! missing one and never leaves a stray device behind.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::ifname;

/// The character device through which TUN/TAP devices are made and attached.
const CLONE_DEVICE: &str = "/dev/net/tun";

/// The flags every tapwire TAP is created with: Ethernet frames, no packet-info prefix,
/// several queues.
const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;

/// Bytes of the `struct virtio_net_hdr` in front of every frame on a queue attached with
/// [`attach_queue_with_offloads`] (the kernel's default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;

/// Offloads a forwarder can ask of a TAP with [`TapQueue::set_offloads`] (`TUN_F_*`).
pub mod offload {
    /// The pod may leave TCP/UDP checksums to us (`NEEDS_CSUM`); required by the others.
    pub const CSUM: u32 = 0x01;
    /// The pod may send TCP over IPv4 as one super-frame (TSO), segmented by us.
    pub const TSO4: u32 = 0x02;
    /// The same for TCP over IPv6.
    pub const TSO6: u32 = 0x04;
    /// TCP super-frames inside a UDP tunnel (VXLAN) cross the device whole, described by
    /// the 24-byte tunnel header (`TUN_F_UDP_TUNNEL_GSO`, Linux 6.17; see
    /// [`TUNNEL_VNET_HDR_LEN`]). Older userspace headers lack it.
    pub const UDP_TUNNEL_GSO: u32 = 0x80;
}

/// Bytes of a `struct virtio_net_hdr_v1_hash_tunnel`: the header UDP-tunnel GSO needs
/// (set with [`TapQueue::set_vnet_hdr_len`]).
pub const TUNNEL_VNET_HDR_LEN: usize = 24;

/// One queue of a multi-queue TAP: each `read` returns one Ethernet frame the pod sent, each
/// `write` hands one Ethernet frame to the pod.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
}

impl TapQueue {
    /// The queue's file descriptor, for registering with epoll.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one frame into `buf`; returns its length. A frame longer than `buf` is
    /// truncated by the kernel. `WouldBlock` when non-blocking and nothing is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call
        // and the descriptor is owned by `self`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        // A negative return is the only failure; the conversion fails exactly then.
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Writes one frame from `buf`; returns the number of bytes taken (the whole frame).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call
        // and the descriptor is owned by `self`.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Reads one frame scattered over `bufs` (with a vnet header: the header first);
    /// returns the bytes read.
    pub fn readv(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        let count = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: IoSliceMut is ABI-compatible with `struct iovec`; every slice is valid for
        // writes of its length for the duration of the call, and `count` does not exceed
        // the number of slices.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), bufs.as_ptr().cast(), count) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Writes one frame gathered from `bufs` (with a vnet header: the header first).
    pub fn writev(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let count = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: IoSlice is ABI-compatible with `struct iovec`; every slice is valid for
        // reads of its length for the duration of the call.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), bufs.as_ptr().cast(), count) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Tells the device which offloads the reader handles (`offload::*` flags): with
    /// `CSUM | TSO4` the pod's kernel hands over 64 KB TCP super-frames with partial
    /// checksums. Device-wide; needs a queue attached with a vnet header.
    pub fn set_offloads(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned flag word) on a
        // descriptor attached to a TUN/TAP device, which `self` always is.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD as _,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sets the length of the virtio-net header in front of every frame (`TUNSETVNETHDRSZ`),
    /// device-wide: [`VNET_HDR_LEN`] by default, [`TUNNEL_VNET_HDR_LEN`] for UDP-tunnel GSO.
    pub fn set_vnet_hdr_len(&self, len: usize) -> io::Result<()> {
        let len =
            libc::c_int::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points at `len`,
        // alive for the call; the descriptor is a TUN/TAP queue owned by `self`.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETVNETHDRSZ as _,
                &len as *const libc::c_int,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Switches `O_NONBLOCK` on or off.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: F_GETFL takes no argument and only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = if nonblocking {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if wanted == flags {
            return Ok(());
        }
        // SAFETY: F_SETFL with an int argument only changes the descriptor's status flags.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes the whole device persistent (`true`) or not (`false`). A non-persistent device
    /// disappears when its last queue is closed.
    pub fn set_persistent(&self, persistent: bool) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes its argument by value (0 or 1), not as a pointer, on a
        // descriptor attached to a TUN/TAP device, which `self` always is.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETPERSIST as _,
                libc::c_ulong::from(persistent),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<TapQueue> for OwnedFd {
    fn from(queue: TapQueue) -> OwnedFd {
        queue.fd
    }
}

/// Creates a persistent multi-queue TAP named `name` in the calling thread's namespace, with
/// no queue attached (the device has no carrier until one is).
///
/// Errors: `EEXIST` (`ErrorKind::AlreadyExists`) when any interface of that name exists;
/// `InvalidInput` for a malformed name; otherwise the kernel's error.
pub fn create_persistent(name: &str) -> io::Result<()> {
    if ifname::index_of(name)?.is_some() {
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    // IFF_TUN_EXCL makes TUNSETIFF fail with EBUSY instead of attaching, should the name
    // appear between the check above and the ioctl.
    let queue = open_queue(name, TAP_FLAGS | libc::IFF_TUN_EXCL, false).map_err(|err| {
        if err.raw_os_error() == Some(libc::EBUSY) {
            io::Error::from_raw_os_error(libc::EEXIST)
        } else {
            err
        }
    })?;
    // On failure `queue` closes and, being the only queue of a non-persistent device, takes
    // the device with it.
    queue.set_persistent(true)
}

/// Attaches a new, non-blocking queue to the existing multi-queue TAP `name` in the calling
/// thread's namespace.
///
/// Errors: `NotFound` (message naming the device) when there is no such interface;
/// `EINVAL` when `name` is not a multi-queue TAP without vnet header, or `EBUSY` when it is a
/// single-queue TAP already in use.
pub fn attach_queue(name: &str) -> io::Result<TapQueue> {
    attach_with_flags(name, TAP_FLAGS)
}

/// Like [`attach_queue`], but every frame read from or written to the queue starts with a
/// [`VNET_HDR_LEN`]-byte `struct virtio_net_hdr` (GSO and checksum metadata), which the
/// offloads of [`TapQueue::set_offloads`] need.
///
/// The vnet-header flag is device-wide and set by the latest attach: attach every queue of
/// a device the same way.
pub fn attach_queue_with_offloads(name: &str) -> io::Result<TapQueue> {
    attach_with_flags(name, TAP_FLAGS | libc::IFF_VNET_HDR)
}

fn attach_with_flags(name: &str, flags: libc::c_int) -> io::Result<TapQueue> {
    let Some(index) = ifname::index_of(name)? else {
        return Err(ifname::not_found(name));
    };
    let queue = open_queue(name, flags, true)?;
    // TUNSETIFF creates a device when the name is free. If the TAP was deleted between the
    // lookup and the ioctl, we now hold a fresh non-persistent device with a new index;
    // dropping our only queue deletes it again.
    if ifname::index_of(name)? != Some(index) {
        return Err(ifname::not_found(name));
    }
    Ok(queue)
}

/// Deletes the persistent TAP `name` in the calling thread's namespace: attaches a queue,
/// clears persistence and closes the queue. Succeeds when there is no such interface.
///
/// The device disappears once every queue is closed; queues still held elsewhere (a running
/// dataplane) keep it alive until they are closed. Use `netlink::Netlink::del_link` to remove
/// it at once.
pub fn delete_persistent(name: &str) -> io::Result<()> {
    let queue = match attach_queue(name) {
        Ok(queue) => queue,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    queue.set_persistent(false)
}

/// Opens `/dev/net/tun` and binds it with `TUNSETIFF` to device `name` with `flags`.
fn open_queue(name: &str, flags: libc::c_int, nonblocking: bool) -> io::Result<TapQueue> {
    let mut req = ifname::ifreq(name)?;
    // The TUN flags all fit in the C short the ioctl reads (the highest is 0x8000, which is
    // the sign bit, as in C).
    req.ifr_ifru.ifru_flags = flags as libc::c_short;

    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if nonblocking {
        options.custom_flags(libc::O_NONBLOCK);
    }
    // std opens with O_CLOEXEC.
    let file = options
        .open(CLONE_DEVICE)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot open {CLONE_DEVICE}: {err}")))?;
    let fd = OwnedFd::from(file);
    // SAFETY: TUNSETIFF reads (and updates) exactly one `struct ifreq`; `req` is valid and
    // exclusively borrowed for the call, and `fd` is an open /dev/net/tun descriptor.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF as _,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TapQueue { fd })
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::netns::run_in_netns;
    use crate::testing::{is_root, ScratchNetns};

    #[test]
    fn exclusive_flag_refuses_to_attach_to_an_existing_tap() {
        if !is_root() {
            return;
        }
        let ns = ScratchNetns::new("twtap").expect("ip netns add");
        let err = run_in_netns(ns.path(), || {
            create_persistent("tw0")?;
            // What create_persistent would do had the name appeared after its check.
            open_queue("tw0", TAP_FLAGS | libc::IFF_TUN_EXCL, false).map(drop)
        })
        .expect_err("exists");
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        let details = ns
            .ip(&["-d", "-o", "link", "show", "tw0"])
            .expect("ip link");
        assert!(details.contains("numqueues 0"), "not attached: {details}");
    }
}
