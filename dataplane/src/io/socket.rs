//! Underlay sockets.
//!
//! - [`RawIpSender`]: an `IPPROTO_RAW` socket. We build the outer IPv4 header ourselves
//!   (IPIP and VXLAN alike, see `forward`), so one send-only socket serves both; being
//!   send-only it receives no copies of inbound traffic.
//! - [`UdpReceiver`]: the VXLAN port, one `SO_REUSEPORT` socket per worker.
//! - [`IpipSink`]: a raw protocol-4 socket that takes nothing (a filter refuses every
//!   packet): while it exists the kernel does not answer IPIP with protocol-unreachable.
//! - [`PacketSocket`]: `AF_PACKET` on the underlay interface, one per worker in a fanout
//!   group (flows hashed across workers), each with a BPF filter: one group for
//!   unencapsulated traffic (every frame but those for the node itself, which the
//!   sockets above and the kernel handle), one for IPIP to the node. Sending on it skips
//!   the kernel's per-packet route lookup: the frame is addressed already.
//! - [`ArpSocket`]: `AF_PACKET`/ARP for resolving next hops' underlay MACs ourselves.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::{size_of, size_of_val, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};

use super::{cvt, cvt_size};
use crate::offload::{Segments, MAX_SEGMENTS, VNET_HDR_LEN};

/// A non-blocking, close-on-exec socket (socket2), with the send or receive buffer of
/// [`SOCKET_BUFFER_BYTES`] that `buffers` names.
fn socket(domain: Domain, kind: Type, protocol: i32, buffers: Buffers) -> io::Result<Socket> {
    let socket = Socket::new(domain, kind.nonblocking(), Some(Protocol::from(protocol)))?;
    if buffers != Buffers::Receive {
        socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    }
    if buffers != Buffers::Send {
        socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    }
    Ok(socket)
}

/// Which of a socket's buffers [`socket`] enlarges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buffers {
    Send,
    Receive,
    Both,
}

/// `setsockopt` for the options socket2 does not offer (packet fanout, vnet headers, UDP
/// GRO).
fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T and its size is passed alongside.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Bytes asked for as a socket's send or receive buffer: room for bursts of 64 KB
/// super-frames in flight (a full send buffer would drop segments: no socket blocks).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn sockaddr_in(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(addr).to_be();
    sa
}

fn sendto_in(fd: RawFd, buf: &[u8], addr: Ipv4Addr, port: u16) -> io::Result<usize> {
    let sa = sockaddr_in(addr, port);
    // SAFETY: buf and sa are valid for the lengths passed.
    cvt_size(unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of_val(&sa) as libc::socklen_t,
        )
    })
}

/// `recvfrom` with a source address of type `A` (a libc sockaddr struct).
fn recvfrom_addr<A>(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, A)> {
    // SAFETY: A is a libc sockaddr struct: plain old data for which all-zero is valid.
    let mut addr: A = unsafe { zeroed() };
    let mut len = size_of::<A>() as libc::socklen_t;
    // SAFETY: buf, addr and len are valid and writable for the lengths passed.
    let n = cvt_size(unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut addr as *mut A).cast(),
            &mut len,
        )
    })?;
    Ok((n, addr))
}

fn recvfrom_in(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
    let (n, sa) = recvfrom_addr::<libc::sockaddr_in>(fd, buf)?;
    let addr = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
    Ok((n, SocketAddrV4::new(addr, u16::from_be(sa.sin_port))))
}

/// Sends complete IPv4 packets (header included) on the underlay.
#[derive(Debug)]
pub struct RawIpSender {
    fd: OwnedFd,
}

impl RawIpSender {
    pub fn open() -> io::Result<Self> {
        let fd = socket(Domain::IPV4, Type::RAW, libc::IPPROTO_RAW, Buffers::Send)?;
        Ok(Self { fd: fd.into() })
    }

    /// Sends `packet` (which starts with its IPv4 header) towards `dst`.
    pub fn send(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        sendto_in(self.fd.as_raw_fd(), packet, dst, 0)
    }

    /// Sends every segment of `segments` (headers built there, payloads in `frame`) to
    /// `dst` with as few `sendmmsg` calls as the kernel allows. Returns how many were sent.
    pub fn send_segments(
        &self,
        frame: &[u8],
        segments: &Segments,
        dst: Ipv4Addr,
    ) -> io::Result<usize> {
        let sa = sockaddr_in(dst, 0);
        send_segments(self.fd.as_raw_fd(), Some(&sa), None, frame, segments)
    }
}

/// Sends every segment of `segments` on `fd`, each as one message: `prefix` (a virtio-net
/// header) if given, the segment's headers, its payload from `frame`; to `to` if given
/// (else the socket is bound or connected). As few `sendmmsg` calls as the kernel allows;
/// returns how many segments were sent (an error only if none was).
fn send_segments(
    fd: RawFd,
    to: Option<&libc::sockaddr_in>,
    prefix: Option<&[u8]>,
    frame: &[u8],
    segments: &Segments,
) -> io::Result<usize> {
    let count = segments.len().min(MAX_SEGMENTS);
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iovs = [[empty; 3]; MAX_SEGMENTS];
    let parts = if prefix.is_some() { 3 } else { 2 };
    for (i, iov) in iovs.iter_mut().enumerate().take(count) {
        let (header, payload) = segments.segment(i);
        let body = [iovec(header), iovec(&frame[payload])];
        match prefix {
            Some(prefix) => *iov = [iovec(prefix), body[0], body[1]],
            None => iov[..2].copy_from_slice(&body),
        }
    }
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
    let mut msgs: [libc::mmsghdr; MAX_SEGMENTS] = unsafe { zeroed() };
    for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()).take(count) {
        if let Some(sa) = to {
            msg.msg_hdr.msg_name = (sa as *const libc::sockaddr_in).cast_mut().cast();
            msg.msg_hdr.msg_namelen = size_of_val(sa) as libc::socklen_t;
        }
        msg.msg_hdr.msg_iov = iov.as_mut_ptr();
        msg.msg_hdr.msg_iovlen = parts;
    }
    let mut sent = 0;
    while sent < count {
        // SAFETY: every mmsghdr points at `to` (if any) and at iovecs over `prefix`,
        // `segments` and `frame`, all alive and unchanged for the duration of the call.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs[sent..].as_mut_ptr(),
                (count - sent) as libc::c_uint,
                0,
            )
        };
        if n <= 0 {
            return if sent > 0 {
                Ok(sent)
            } else {
                Err(io::Error::last_os_error())
            };
        }
        sent += n as usize;
    }
    Ok(sent)
}

fn iovec(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }
}

/// Sends VXLAN datagrams (the UDP payload: VXLAN header onwards); the kernel adds the
/// outer IPv4 and UDP headers and, with UDP GSO, cuts one send into equal datagrams.
///
/// A few sockets on distinct ephemeral ports per worker: a flow keeps one of them, so
/// flows spread over source ports for ECMP the way the kernel's flow-hashed port does.
#[derive(Debug)]
pub struct VxlanSender {
    fds: Vec<OwnedFd>,
}

impl VxlanSender {
    pub fn open(sockets: usize) -> io::Result<Self> {
        let fds = (0..sockets.max(1))
            .map(|_| {
                let socket = socket(Domain::IPV4, Type::DGRAM, 0, Buffers::Send)?;
                socket.bind(&SockAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))?;
                Ok(socket.into())
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { fds })
    }

    /// Sends the bytes of `iov` to `dst:port` from the socket `flow` selects: one
    /// datagram, or with `segment_size` one datagram per `segment_size` bytes (UDP GSO).
    pub fn send(
        &self,
        flow: u32,
        dst: Ipv4Addr,
        port: u16,
        iov: &[IoSlice<'_>],
        segment_size: Option<u16>,
    ) -> io::Result<usize> {
        let fd = &self.fds[flow as usize % self.fds.len()];
        let sa = sockaddr_in(dst, port);
        // Room for one cmsghdr carrying a u16, 8-byte aligned.
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&sa as *const libc::sockaddr_in).cast_mut().cast();
        msg.msg_namelen = size_of_val(&sa) as libc::socklen_t;
        msg.msg_iov = iov.as_ptr().cast_mut().cast();
        msg.msg_iovlen = iov.len();
        if let Some(size) = segment_size {
            msg.msg_control = control.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
            // SAFETY: msg_control points at `control`, which is large enough for one
            // cmsghdr with a u16 payload (CMSG_SPACE(2) <= 32 bytes); CMSG_FIRSTHDR returns
            // a pointer into it, and CMSG_DATA a pointer to its payload.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
            }
        }
        // SAFETY: msg points at `sa`, `control` and the caller's iovecs (IoSlice is
        // ABI-compatible with iovec), all alive for the duration of the call.
        cvt_size(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) })
    }
}

/// The VXLAN UDP port, shared by workers through `SO_REUSEPORT`.
#[derive(Debug)]
pub struct UdpReceiver {
    fd: OwnedFd,
}

impl UdpReceiver {
    pub fn bind(port: u16) -> io::Result<Self> {
        let socket = socket(Domain::IPV4, Type::DGRAM, 0, Buffers::Receive)?;
        socket.set_reuse_port(true)?;
        socket
            .bind(&SockAddr::from(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                port,
            )))
            .map_err(|e| io::Error::new(e.kind(), format!("binding UDP port {port}: {e}")))?;
        Ok(Self { fd: socket.into() })
    }

    /// Receives one datagram (the UDP payload) and its sender.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        recvfrom_in(self.fd.as_raw_fd(), buf)
    }

    /// Asks the kernel to hand over runs of same-sized datagrams from one sender as one
    /// buffer (UDP GRO); [`UdpReceiver::recv_coalesced`] then reports the datagram size.
    pub fn enable_gro(&self) -> io::Result<()> {
        setsockopt(self.fd.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, &1i32)
    }

    /// Receives one datagram or one GRO run of them: the bytes, the sender, and for a run
    /// the size of each datagram in it (the last may be shorter).
    pub fn recv_coalesced(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4, Option<u16>)> {
        // SAFETY: sockaddr_in and msghdr are plain old data; all-zero is valid.
        let mut sa: libc::sockaddr_in = unsafe { zeroed() };
        let mut control = [0u64; 8];
        let mut iov = [IoSliceMut::new(buf)];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut sa as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of_val(&sa) as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: msg points at `sa`, `control` and `buf` (through `iov`), all writable
        // and alive for the duration of the call.
        let n = cvt_size(unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) })?;
        let mut segment = None;
        // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR walk
        // only within them, and a UDP_GRO cmsg carries an int.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                    let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
                    segment = u16::try_from(size).ok().filter(|s| *s > 0);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        let addr = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        Ok((
            n,
            SocketAddrV4::new(addr, u16::from_be(sa.sin_port)),
            segment,
        ))
    }
}

impl AsRawFd for UdpReceiver {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A raw IPIP socket that receives nothing: workers take IPIP from the underlay's
/// packet sockets (on every worker, hashed by flow), but without any raw socket of
/// protocol 4 the kernel would answer each IPIP packet with ICMP protocol-unreachable. A
/// filter refusing every packet keeps it from holding copies.
#[derive(Debug)]
pub struct IpipSink {
    _fd: OwnedFd,
}

impl IpipSink {
    pub fn open() -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_IPIP)),
        )?;
        socket.attach_filter(&[SockFilter::new(BPF_RET_K, 0, 0, 0)])?;
        Ok(Self { _fd: socket.into() })
    }
}

/// Most frames one [`PacketSocket::recv_batch`] takes.
pub const MAX_RECV_BATCH: usize = 64;

fn bind_packet(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll for the length passed.
    cvt(unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of_val(&sll) as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Receives a frame from a packet socket, skipping frames this host sent itself.
/// Returns `Ok(None)` for a skipped frame.
fn recv_incoming(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let (n, sll) = recvfrom_addr::<libc::sockaddr_ll>(fd, buf)?;
    Ok((sll.sll_pkttype != libc::PACKET_OUTGOING).then_some(n))
}

fn send_frame(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: frame is valid for its length; the socket is bound, so no address is needed.
    cvt_size(unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), 0) })
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;

/// Which frames of the underlay a [`PacketSocket`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderlayFrames {
    /// Every IPv4 frame except those to the node's own address: unencapsulated pod
    /// traffic (tunnel traffic and the node's own go to the kernel and the other sockets).
    NotTo(Ipv4Addr),
    /// IPIP to the node's own address.
    IpipTo(Ipv4Addr),
}

/// `AF_PACKET` socket for IPv4 frames on the underlay interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket on `ifindex` that takes `frames` and joins fanout group `group`
    /// (hashing flows — the inner flow, for IPIP — across the workers' sockets).
    pub fn open(ifindex: u32, group: u16, frames: UnderlayFrames) -> io::Result<Self> {
        let protocol = i32::from(ETH_P_IP.to_be());
        let fd = socket(Domain::PACKET, Type::RAW, protocol, Buffers::Both)?;
        fd.attach_filter(&underlay_filter(frames))?;
        bind_packet(fd.as_raw_fd(), ifindex, ETH_P_IP)?;
        // Frames carry a virtio-net header both ways, so GSO super-frames and partial
        // checksums cross the underlay intact (the kernel segments or checksums only if
        // the device cannot take them).
        setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, &1i32)?;
        let fanout = u32::from(group) | (libc::PACKET_FANOUT_HASH << 16);
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            &fanout,
        )?;
        Ok(Self { fd: fd.into() })
    }

    /// Receives up to `lens.len()` frames with one `recvmmsg`: frame *i*'s virtio-net
    /// header into `vnets[i]`, the frame into `area[i * slot..(i + 1) * slot]`, its
    /// length into `lens[i]` (0 for a frame that did not fit its slot). Returns how many
    /// arrived. For sockets whose filter takes nothing this host sends.
    pub fn recv_batch(
        &self,
        vnets: &mut [[u8; VNET_HDR_LEN]; MAX_RECV_BATCH],
        area: &mut [u8],
        slot: usize,
        lens: &mut [usize; MAX_RECV_BATCH],
    ) -> io::Result<usize> {
        let count = (area.len() / slot.max(1)).min(MAX_RECV_BATCH);
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iovs = [[empty; 2]; MAX_RECV_BATCH];
        let slots = area.chunks_exact_mut(slot.max(1)).zip(vnets.iter_mut());
        for (iov, (chunk, vnet)) in iovs.iter_mut().zip(slots).take(count) {
            *iov = [
                libc::iovec {
                    iov_base: vnet.as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    iov_base: chunk.as_mut_ptr().cast(),
                    iov_len: chunk.len(),
                },
            ];
        }
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
        let mut msgs: [libc::mmsghdr; MAX_RECV_BATCH] = unsafe { zeroed() };
        for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()).take(count) {
            msg.msg_hdr.msg_iov = iov.as_mut_ptr();
            msg.msg_hdr.msg_iovlen = 2;
        }
        // SAFETY: the first `count` mmsghdrs point at iovecs over distinct `vnets` entries
        // and disjoint slots of `area`, writable and alive for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (len, msg) in lens.iter_mut().zip(&msgs).take(n) {
            let truncated = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let received = (msg.msg_len as usize).checked_sub(VNET_HDR_LEN);
            *len = received.filter(|_| !truncated).unwrap_or(0);
        }
        Ok(n)
    }

    /// Sends every segment of `segments` (each a complete frame: headers built there,
    /// payload from `frame`), each behind the virtio-net header `vnet`. Returns how many
    /// were sent.
    pub fn send_segments(
        &self,
        vnet: &[u8; VNET_HDR_LEN],
        frame: &[u8],
        segments: &Segments,
    ) -> io::Result<usize> {
        send_segments(self.fd.as_raw_fd(), None, Some(vnet), frame, segments)
    }

    /// Receives one frame and its virtio-net header; `Ok(None)` for a frame this host
    /// sent itself.
    pub fn recv(&self, vnet: &mut [u8; VNET_HDR_LEN], buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: sockaddr_ll and msghdr are plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        let mut iov = [IoSliceMut::new(vnet), IoSliceMut::new(buf)];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = size_of_val(&sll) as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = 2;
        // SAFETY: msg points at `sll`, `vnet` and `buf`, writable and alive for the call.
        let n = cvt_size(unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) })?;
        if sll.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        Ok(Some(n.saturating_sub(VNET_HDR_LEN)))
    }

    /// Sends one frame with its virtio-net header.
    pub fn send(&self, vnet: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<usize> {
        let iov = [IoSlice::new(vnet), IoSlice::new(frame)];
        // SAFETY: IoSlice is ABI-compatible with iovec; both slices are valid for reads
        // for the duration of the call.
        cvt_size(unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr().cast(), 2) })
    }
}

/// `PACKET_VNET_HDR` from `<linux/if_packet.h>`.
const PACKET_VNET_HDR: libc::c_int = 15;

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The classic BPF program for `frames` (offsets from the Ethernet header: the IPv4
/// destination at 30, the protocol at 23).
fn underlay_filter(frames: UnderlayFrames) -> Vec<SockFilter> {
    let load_dst = SockFilter::new(
        (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        0,
        0,
        30,
    );
    let load_protocol = SockFilter::new(
        (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16,
        0,
        0,
        23,
    );
    let jeq = |k: u32, jt: u8, jf: u8| {
        SockFilter::new(
            (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        )
    };
    let (accept, drop) = (
        SockFilter::new(BPF_RET_K, 0, 0, u32::MAX),
        SockFilter::new(BPF_RET_K, 0, 0, 0),
    );
    match frames {
        // To the node: drop; else accept.
        UnderlayFrames::NotTo(node_ip) => {
            vec![load_dst, jeq(u32::from(node_ip), 0, 1), drop, accept]
        }
        // To the node and IPIP: accept; else drop.
        UnderlayFrames::IpipTo(node_ip) => vec![
            load_dst,
            jeq(u32::from(node_ip), 0, 3),
            load_protocol,
            jeq(libc::IPPROTO_IPIP as u32, 0, 1),
            accept,
            drop,
        ],
    }
}

/// `AF_PACKET` socket for ARP on the underlay interface (peer MAC resolution).
#[derive(Debug)]
pub struct ArpSocket {
    fd: OwnedFd,
}

impl ArpSocket {
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let protocol = Some(Protocol::from(i32::from(ETH_P_ARP.to_be())));
        let fd = Socket::new(Domain::PACKET, Type::RAW.nonblocking(), protocol)?;
        bind_packet(fd.as_raw_fd(), ifindex, ETH_P_ARP)?;
        Ok(Self { fd: fd.into() })
    }

    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        recv_incoming(self.fd.as_raw_fd(), buf)
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        send_frame(self.fd.as_raw_fd(), frame)
    }

    /// Waits until the socket is readable or `timeout_ms` passes; true if readable.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd.
        let n = cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })?;
        Ok(n > 0)
    }
}
