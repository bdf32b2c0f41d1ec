//! Everything that makes a syscall on the packet path: the underlay sockets, the poller,
//! and (through `tapwire-sys`) the pod TAP queues. The only module of this crate with
//! `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

mod poll;
mod socket;
mod tap;

pub use poll::{Poller, Token};
pub use socket::{
    ArpSocket, IpipSink, PacketSocket, RawIpSender, UdpReceiver, UnderlayFrames, VxlanSender,
    MAX_RECV_BATCH,
};
pub use tap::queue_attached;

use std::io;

/// Turns a libc return value into an `io::Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Turns a libc `ssize_t` return value into an `io::Result<usize>`.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}
