//! A level-triggered epoll set. The state thread adds and removes pod queues while the
//! owning worker waits on it: `epoll_ctl` is safe to call from another thread.
//!
//! Not `mio`: mio registers every source edge-triggered, while a worker reads at most a
//! batch from each ready descriptor per wake-up (so one busy pod cannot starve the others)
//! and relies on level-triggered readiness to come back to what it left unread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// What a readiness event refers to, packed into epoll's 64-bit user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// Queue of the pod in endpoint slot `slot`, attached in generation `generation`.
    Pod { slot: u32, generation: u32 },
    /// The worker's VXLAN UDP socket.
    Vxlan,
    /// The worker's IPIP packet socket.
    Ipip,
    /// The underlay packet socket (unencapsulated traffic).
    Underlay,
    /// The worker's queue of the host path TAP.
    Host,
}

impl Token {
    fn pack(self) -> u64 {
        match self {
            Token::Pod { slot, generation } => (u64::from(generation) << 32) | u64::from(slot),
            Token::Vxlan => u64::MAX,
            Token::Ipip => u64::MAX - 1,
            Token::Underlay => u64::MAX - 2,
            Token::Host => u64::MAX - 3,
        }
    }

    fn unpack(data: u64) -> Token {
        match data {
            u64::MAX => Token::Vxlan,
            d if d == u64::MAX - 1 => Token::Ipip,
            d if d == u64::MAX - 2 => Token::Underlay,
            d if d == u64::MAX - 3 => Token::Host,
            d => Token::Pod {
                slot: d as u32,
                generation: (d >> 32) as u32,
            },
        }
    }
}

/// An epoll instance.
#[derive(Debug)]
pub struct Poller {
    fd: OwnedFd,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory arguments; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    pub fn add(&self, fd: RawFd, token: Token) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token.pack(),
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) })?;
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event pointer is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Waits up to `timeout_ms` and appends ready tokens to `out` (cleared first).
    pub fn wait(
        &self,
        events: &mut [libc::epoll_event],
        out: &mut Vec<Token>,
        timeout_ms: i32,
    ) -> io::Result<()> {
        out.clear();
        // SAFETY: `events` is a valid, writable array of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len().min(i32::MAX as usize) as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(err);
        }
        out.extend(events[..n as usize].iter().map(|e| Token::unpack(e.u64)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Pod {
                slot: 7,
                generation: 3,
            },
            Token::Pod {
                slot: 0,
                generation: 0,
            },
            Token::Vxlan,
            Token::Ipip,
            Token::Underlay,
            Token::Host,
        ] {
            assert_eq!(Token::unpack(t.pack()), t);
        }
    }
}
