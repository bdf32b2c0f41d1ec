//! Pod TAP queues beyond reading and writing (which `tapwire-sys` does): whether a queue
//! is still attached to a device.

use tapwire_sys::tap::TapQueue;

use super::cvt;

/// Whether `queue` is still attached to its TAP. A queue whose device was deleted (the
/// pod's `eth0` removed, or its namespace destroyed) stays open but is detached: every
/// read and ioctl on it fails with `EBADFD`. A replacement device with the same name is
/// a different device, which this queue never reaches.
pub fn queue_attached(queue: &TapQueue) -> bool {
    // `struct ifreq` is plain data; TUNGETIFF fills in the name and flags.
    // SAFETY: all-zero bytes are a valid `ifreq` (integers, byte arrays and unions of them).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes at most one `struct ifreq` to the pointer, which is valid and
    // exclusively borrowed for the call; the descriptor is open for as long as `queue` lives.
    let rc = cvt(unsafe {
        libc::ioctl(
            queue.as_raw_fd(),
            libc::TUNGETIFF as _,
            &mut req as *mut libc::ifreq,
        )
    });
    // Only a detached queue fails: the request and its buffer are always valid.
    !matches!(rc, Err(err) if err.raw_os_error() == Some(libc::EBADFD))
}
