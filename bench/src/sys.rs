//! The harness's few system calls, and the only `unsafe` in the crate: batched UDP send
//! and receive (`sendmmsg`/`recvmmsg`, so one syscall moves up to [`BATCH`] datagrams and
//! the sender is not the bottleneck of a packets-per-second test), a forced receive
//! buffer size, a bounded wait for a readable descriptor (the TAP-hop forwarder of
//! [`crate::taphop`]), and the clock-tick rate of `/proc` CPU times.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
pub const BATCH: usize = 64;
/// Bytes kept of each received datagram (the counter needs none of them).
const RECV_KEEP: usize = 128;

/// Sends `payload` `count` times (at most [`BATCH`]) on the connected `socket` with one
/// `sendmmsg`; returns how many datagrams the kernel took.
pub fn send_batch(socket: &UdpSocket, payload: &[u8], count: usize) -> io::Result<usize> {
    let count = count.min(BATCH);
    let mut iov = [libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    }; BATCH];
    // SAFETY: mmsghdr is plain old data; all-zero is a valid (empty) value.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (msg, iov) in msgs.iter_mut().zip(iov.iter_mut()) {
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `msgs[..count]` are valid headers whose single iovec points at `payload`,
    // which the kernel only reads and which outlives the call; the socket is connected,
    // so no address is needed.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            count as libc::c_uint,
            0,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Receive buffers for [`RecvBatch::recv`], allocated once.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<[u8; RECV_KEEP]>,
    /// The length of each datagram of the last batch.
    lens: Vec<usize>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; RECV_KEEP]; BATCH],
            lens: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// Receives up to [`BATCH`] datagrams with one `recvmmsg`, waiting (up to the socket's
    /// read timeout) only for the first; returns how many arrived. A timeout is
    /// `ErrorKind::WouldBlock`/`TimedOut`, as for `recv`.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        for (v, buf) in iov.iter_mut().zip(self.bufs.iter_mut()) {
            v.iov_base = buf.as_mut_ptr().cast();
            v.iov_len = RECV_KEEP;
        }
        // SAFETY: mmsghdr is plain old data; all-zero is a valid (empty) value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (msg, iov) in msgs.iter_mut().zip(iov.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at one iovec of RECV_KEEP writable bytes in
        // `self.bufs`, all alive for the call; no timeout pointer (the socket's SO_RCVTIMEO
        // bounds the wait).
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        self.lens.clear();
        self.lens
            .extend(msgs[..got].iter().map(|m| m.msg_len as usize));
        Ok(got)
    }

    /// The first byte of each datagram of the last batch (none for an empty datagram).
    pub fn first_bytes(&self) -> impl Iterator<Item = Option<u8>> + '_ {
        self.lens
            .iter()
            .zip(&self.bufs)
            .map(|(len, buf)| (*len > 0).then_some(buf[0]))
    }
}

/// Sets `socket`'s receive buffer to `bytes`, past `net.core.rmem_max` (`SO_RCVBUFFORCE`,
/// root), so a burst is not dropped by the receiving socket before the path is measured.
pub fn force_recv_buffer(socket: &UdpSocket, bytes: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the option value is a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until `fd` is readable (or in error, which the next read reports) or `timeout`
/// passes; returns whether it is. An interrupted wait counts as a timeout.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one live pollfd and a count of one; the descriptor is borrowed for the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    if ready < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(err)
        };
    }
    Ok(ready > 0)
}

/// Clock ticks per second of `/proc` CPU times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Sends SIGINT to `pid` (a child this process started and has not yet reaped, so the PID
/// cannot have been reused); a process already gone is not an error.
pub fn interrupt(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory arguments.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_sent_is_a_batch_received_with_its_first_bytes() -> io::Result<()> {
        let receiver = UdpSocket::bind("127.0.0.1:0")?;
        receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
        let sender = UdpSocket::bind("127.0.0.1:0")?;
        sender.connect(receiver.local_addr()?)?;
        let mut payload = [0u8; 64];
        payload[0] = 7;
        assert_eq!(send_batch(&sender, &payload, 3)?, 3);
        let mut batch = RecvBatch::default();
        let mut firsts = Vec::new();
        while firsts.len() < 3 {
            batch.recv(&receiver)?;
            firsts.extend(batch.first_bytes());
        }
        assert_eq!(firsts, [Some(7); 3]);
        Ok(())
    }
}
