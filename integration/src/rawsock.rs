//! Hand-made Ethernet frames sent from inside a namespace through an `AF_PACKET` socket,
//! for feeding the dataplane input no well-behaved pod would produce. The kernel still
//! applies its own checks (minimum header length, MTU); each frame's outcome is returned
//! so a test can tell "the kernel refused to send it" from "the dataplane dropped it".

use std::io;
use std::mem::{size_of_val, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tapwire_sys::link;

use crate::error::Result;
use crate::netns::Netns;

/// Sends each frame (starting with its Ethernet header) out of `ifname` in `netns`.
/// The outer `Result` fails if the socket cannot be set up; each inner one is that
/// frame's `sendto` outcome (bytes sent, or e.g. `EINVAL`/`EMSGSIZE` from the kernel).
pub fn send_frames(
    netns: &Netns,
    ifname: &str,
    frames: &[Vec<u8>],
) -> Result<Vec<io::Result<usize>>> {
    netns.run(|| {
        let ifindex = link::ifindex(ifname)?;
        let socket = packet_socket()?;
        Ok(frames
            .iter()
            .map(|frame| send_one(&socket, ifindex, frame))
            .collect())
    })
}

/// A send-only `AF_PACKET` raw socket (protocol 0: it receives nothing).
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send_one(socket: &OwnedFd, ifindex: u32, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::sa_family_t;
    addr.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    addr.sll_halen = 6;
    if let Some(dst) = frame.get(..6) {
        addr.sll_addr[..6].copy_from_slice(dst);
    }
    // SAFETY: `frame` is valid for reads of its length and `addr` is a valid sockaddr_ll
    // whose size is passed alongside; sendto does not keep either pointer.
    let n = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of_val(&addr) as libc::socklen_t,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
