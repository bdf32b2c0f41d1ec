//! A small hand-written rtnetlink client: IPv4 addresses, IPv4 routes (add, replace,
//! delete), link deletion.
//!
//! Requests go to the kernel on a `NETLINK_ROUTE` socket in the calling thread's namespace,
//! each with `NLM_F_ACK`; [`Netlink`] waits for the matching acknowledgement and turns a
//! negative error code into `io::Error::from_raw_os_error`. When the kernel attaches an
//! extended-ack message ("Nexthop has invalid gateway", …) it is appended to the error text.
//!
//! Message encoding is separated from the socket (the `encode_*` functions build the bytes,
//! [`parse_ack`] reads a reply) so that both are unit-tested without privileges. Layouts
//! follow `linux/netlink.h`, `linux/rtnetlink.h` and `linux/if_addr.h`: headers in host byte
//! order, addresses in network order, every attribute padded to 4 bytes.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Attribute and message alignment (`NLA_ALIGNTO`, `NLMSG_ALIGNTO`).
const ALIGN_TO: usize = 4;
/// `sizeof(struct nlmsghdr)`.
pub(crate) const NLMSG_HDR_LEN: usize = 16;
/// `sizeof(struct nlattr)`.
pub(crate) const NLA_HDR_LEN: usize = 4;
/// `NLMSGERR_ATTR_MSG`: extended-ack attribute carrying a NUL-terminated error string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Receive buffer: an acknowledgement with extended-ack attributes fits many times over.
pub(crate) const RECV_BUF_LEN: usize = 16 * 1024;

pub(crate) const AF_INET: u8 = libc::AF_INET as u8;
/// `RTNH_F_ONLINK` (`linux/rtnetlink.h`): the gateway is on the link.
const RTNH_F_ONLINK: u32 = 4;
/// `RTAX_MTU` (`linux/rtnetlink.h`): the MTU metric inside `RTA_METRICS`.
const RTAX_MTU: u16 = 2;

/// Scope of a route (`rtm_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteScope {
    /// `RT_SCOPE_UNIVERSE`: a route via a gateway, valid everywhere.
    Universe,
    /// `RT_SCOPE_LINK`: the destination is directly on the link (no gateway).
    Link,
}

impl RouteScope {
    fn to_kernel(self) -> u8 {
        match self {
            RouteScope::Universe => libc::RT_SCOPE_UNIVERSE,
            RouteScope::Link => libc::RT_SCOPE_LINK,
        }
    }
}

/// One IPv4 unicast route in the main table, for example
/// `169.254.1.1/32 dev eth0 scope link` or `0.0.0.0/0 via 169.254.1.1 dev eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination network address (no bits set beyond `prefix_len`).
    pub dst: Ipv4Addr,
    /// Destination prefix length, 0–32 (0 is the default route).
    pub prefix_len: u8,
    /// Next hop, if the destination is not on the link.
    pub gateway: Option<Ipv4Addr>,
    /// Outgoing interface index.
    pub oif: u32,
    /// Route scope.
    pub scope: RouteScope,
    /// Use the gateway although no address of the interface covers it (`onlink`).
    pub onlink: bool,
    /// The source address for traffic the node itself sends along the route (`src`).
    pub prefsrc: Option<Ipv4Addr>,
    /// The path MTU along the route (`mtu`), when smaller than the interface's.
    pub mtu_bytes: Option<u32>,
}

/// An rtnetlink socket in the namespace of the thread that opened it.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    next_seq: u32,
}

impl Netlink {
    /// Opens and binds a `NETLINK_ROUTE` socket, asking for extended acks and for error
    /// replies without the echoed request.
    pub fn open() -> io::Result<Self> {
        Ok(Netlink {
            fd: open_route_socket(0)?,
            next_seq: 1,
        })
    }

    /// Adds (or replaces) IPv4 address `addr/prefix_len` on interface `ifindex`, scope
    /// universe — what `ip addr replace ADDR/LEN dev IF` does.
    pub fn add_ipv4_address(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> io::Result<()> {
        check_prefix_len(prefix_len)?;
        let seq = self.take_seq();
        self.request(seq, &encode_new_address(seq, ifindex, addr, prefix_len))
    }

    /// Adds (or replaces) an IPv4 unicast route in the main table — what
    /// `ip route replace …` does.
    pub fn add_ipv4_route(&mut self, route: &RouteSpec) -> io::Result<()> {
        check_route(route)?;
        let seq = self.take_seq();
        self.request(seq, &encode_new_route(seq, route))
    }

    /// Deletes the main-table IPv4 route to `dst/prefix_len` through interface `oif` —
    /// what `ip route del DST/LEN dev IF` does. `ESRCH` when there is none.
    pub fn del_ipv4_route(&mut self, dst: Ipv4Addr, prefix_len: u8, oif: u32) -> io::Result<()> {
        check_prefix_len(prefix_len)?;
        let seq = self.take_seq();
        self.request(seq, &encode_del_route(seq, dst, prefix_len, oif))
    }

    /// Deletes interface `ifindex` — what `ip link del` does. `ENODEV` when it does not exist.
    pub fn del_link(&mut self, ifindex: u32) -> io::Result<()> {
        let seq = self.take_seq();
        self.request(seq, &encode_del_link(seq, ifindex))
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    /// Sends one request and waits for the kernel's acknowledgement of sequence `seq`.
    fn request(&mut self, seq: u32, message: &[u8]) -> io::Result<()> {
        // SAFETY: all-zero is a valid sockaddr_nl; port id 0 addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `message` is valid for reads of its length and `kernel` is a valid
        // sockaddr_nl of the size passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                socklen_of::<libc::sockaddr_nl>(),
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }

        let mut buf = vec![0u8; RECV_BUF_LEN];
        loop {
            // SAFETY: `buf` is valid for writes of its length for the duration of the call.
            let received =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let received = match usize::try_from(received) {
                Ok(0) => return Err(malformed("empty datagram")),
                Ok(n) => n,
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(err);
                }
            };
            let reply = buf.get(..received).unwrap_or_default();
            if let Some(result) = parse_ack(reply, seq)? {
                return result;
            }
            // A reply to something else (a stale sequence number): keep waiting for ours.
        }
    }
}

/// A bound `NETLINK_ROUTE` socket in the calling thread's namespace, subscribed to the
/// multicast `groups` (`RTMGRP_*` bits; 0 for none), asking for extended acks and for
/// error replies without the echoed request.
pub(crate) fn open_route_socket(groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: all-zero is a valid sockaddr_nl (port id 0 = let the kernel choose).
    let mut local: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    local.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    local.nl_groups = groups;
    // SAFETY: `local` is a valid sockaddr_nl and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&local as *const libc::sockaddr_nl).cast(),
            socklen_of::<libc::sockaddr_nl>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // Both options only improve error replies; kernels without them still work.
    for option in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
        let on: libc::c_int = 1;
        // SAFETY: SOL_NETLINK boolean options read one c_int from a valid pointer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                option,
                (&on as *const libc::c_int).cast(),
                socklen_of::<libc::c_int>(),
            );
        }
    }
    Ok(fd)
}

/// Reads one datagram from the kernel. Returns `Ok(None)` when it holds no acknowledgement
/// for `seq`, `Ok(Some(result))` with the request's outcome when it does, and `Err` when the
/// datagram is malformed.
pub fn parse_ack(datagram: &[u8], seq: u32) -> io::Result<Option<io::Result<()>>> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let (msg_len, msg_type, msg_seq) = match (read_u32(rest, 0), read_u16(rest, 4)) {
            (Some(len), Some(ty)) => (len as usize, ty, read_u32(rest, 8)),
            _ => return Err(malformed("truncated message header")),
        };
        if msg_len < NLMSG_HDR_LEN || msg_len > rest.len() {
            return Err(malformed("message length out of bounds"));
        }
        let payload = &rest[NLMSG_HDR_LEN..msg_len];
        if msg_type == libc::NLMSG_ERROR as u16 && msg_seq == Some(seq) {
            let flags = read_u16(rest, 6).unwrap_or(0);
            return parse_error_payload(payload, flags).map(Some);
        }
        rest = rest.get(align(msg_len)..).unwrap_or_default();
    }
    Ok(None)
}

/// Interprets the payload of an `NLMSG_ERROR` message (`struct nlmsgerr` + ext-ack TLVs).
pub(crate) fn parse_error_payload(payload: &[u8], flags: u16) -> io::Result<io::Result<()>> {
    let code = read_i32(payload, 0).ok_or_else(|| malformed("truncated error code"))?;
    if code == 0 {
        return Ok(Ok(()));
    }
    // The kernel sends -errno; anything else would be a kernel bug, reported as EINVAL.
    let errno = code
        .checked_neg()
        .filter(|e| *e > 0)
        .unwrap_or(libc::EINVAL);
    let os_error = io::Error::from_raw_os_error(errno);
    let detail = if flags & libc::NLM_F_ACK_TLVS as u16 != 0 {
        // Without NLM_F_CAPPED the request itself is echoed before the TLVs.
        let echoed_len = if flags & libc::NLM_F_CAPPED as u16 != 0 {
            NLMSG_HDR_LEN
        } else {
            read_u32(payload, 4).map_or(NLMSG_HDR_LEN, |len| len as usize)
        };
        payload
            .get(4 + align(echoed_len)..)
            .and_then(ext_ack_message)
    } else {
        None
    };
    Ok(Err(match detail {
        Some(text) => io::Error::new(os_error.kind(), format!("{os_error}: {text}")),
        None => os_error,
    }))
}

/// The `NLMSGERR_ATTR_MSG` string among extended-ack attributes, if any.
fn ext_ack_message(mut attrs: &[u8]) -> Option<String> {
    while let (Some(len), Some(ty)) = (read_u16(attrs, 0), read_u16(attrs, 2)) {
        let len = usize::from(len);
        let body = attrs.get(NLA_HDR_LEN..len)?;
        if ty == NLMSGERR_ATTR_MSG {
            let text = body.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        attrs = attrs.get(align(len).max(NLA_HDR_LEN)..)?;
    }
    None
}

/// `RTM_NEWADDR` for `addr/prefix_len` on `ifindex`, `NLM_F_CREATE | NLM_F_REPLACE`.
pub fn encode_new_address(seq: u32, ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    let mut msg = MessageBuilder::new(
        libc::RTM_NEWADDR,
        libc::NLM_F_CREATE | libc::NLM_F_REPLACE,
        seq,
    );
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    msg.put(&[AF_INET, prefix_len, 0, libc::RT_SCOPE_UNIVERSE]);
    msg.put(&ifindex.to_ne_bytes());
    msg.attr(libc::IFA_LOCAL, &addr.octets());
    msg.attr(libc::IFA_ADDRESS, &addr.octets());
    msg.finish()
}

/// `RTM_NEWROUTE` for `route` in the main table, protocol boot, unicast,
/// `NLM_F_CREATE | NLM_F_REPLACE`.
pub fn encode_new_route(seq: u32, route: &RouteSpec) -> Vec<u8> {
    let mut msg = MessageBuilder::new(
        libc::RTM_NEWROUTE,
        libc::NLM_F_CREATE | libc::NLM_F_REPLACE,
        seq,
    );
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    // Protocol "boot" is what `ip route add` uses, so `ip route` shows no "proto" field.
    msg.put(&[
        AF_INET,
        route.prefix_len,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_BOOT,
        route.scope.to_kernel(),
        libc::RTN_UNICAST,
    ]);
    let flags = if route.onlink { RTNH_F_ONLINK } else { 0 };
    msg.put(&flags.to_ne_bytes());
    if route.prefix_len > 0 {
        msg.attr(libc::RTA_DST, &route.dst.octets());
    }
    if let Some(gateway) = route.gateway {
        msg.attr(libc::RTA_GATEWAY, &gateway.octets());
    }
    msg.attr(libc::RTA_OIF, &route.oif.to_ne_bytes());
    if let Some(src) = route.prefsrc {
        msg.attr(libc::RTA_PREFSRC, &src.octets());
    }
    if let Some(mtu) = route.mtu_bytes {
        // RTA_METRICS nests attributes: one RTAX_MTU.
        let mut metric = Vec::with_capacity(8);
        metric.extend_from_slice(&8u16.to_ne_bytes());
        metric.extend_from_slice(&RTAX_MTU.to_ne_bytes());
        metric.extend_from_slice(&mtu.to_ne_bytes());
        msg.attr(libc::RTA_METRICS, &metric);
    }
    msg.finish()
}

/// `RTM_DELROUTE` for `dst/prefix_len` through `oif` in the main table (any protocol,
/// scope "nowhere": what `ip route del` sends).
pub fn encode_del_route(seq: u32, dst: Ipv4Addr, prefix_len: u8, oif: u32) -> Vec<u8> {
    let mut msg = MessageBuilder::new(libc::RTM_DELROUTE, 0, seq);
    msg.put(&[
        AF_INET,
        prefix_len,
        0,
        0,
        libc::RT_TABLE_MAIN,
        0,
        libc::RT_SCOPE_NOWHERE,
        0,
    ]);
    msg.put(&0u32.to_ne_bytes());
    if prefix_len > 0 {
        msg.attr(libc::RTA_DST, &dst.octets());
    }
    msg.attr(libc::RTA_OIF, &oif.to_ne_bytes());
    msg.finish()
}

/// `RTM_DELLINK` for interface `ifindex`.
pub fn encode_del_link(seq: u32, ifindex: u32) -> Vec<u8> {
    let mut msg = MessageBuilder::new(libc::RTM_DELLINK, 0, seq);
    // struct ifinfomsg: family, pad, type (u16), index (i32), flags (u32), change (u32).
    msg.put(&[libc::AF_UNSPEC as u8, 0]);
    msg.put(&0u16.to_ne_bytes());
    msg.put(&ifindex.to_ne_bytes());
    msg.put(&0u32.to_ne_bytes());
    msg.put(&0u32.to_ne_bytes());
    msg.finish()
}

/// Builds one netlink request: header, fixed family header, attributes.
struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// Starts a request of `msg_type`; `NLM_F_REQUEST | NLM_F_ACK` are always set.
    fn new(msg_type: u16, flags: libc::c_int, seq: u32) -> Self {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags) as u16;
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched by finish()
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it in
        MessageBuilder { buf }
    }

    /// Appends raw bytes (the family header); callers keep it 4-byte aligned.
    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends one attribute, padded to `NLA_ALIGNTO`.
    fn attr(&mut self, attr_type: u16, payload: &[u8]) {
        // Attributes here are at most 8 bytes; the cast cannot truncate.
        let len = (NLA_HDR_LEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&attr_type.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// Patches the total length into the header and returns the message.
    fn finish(mut self) -> Vec<u8> {
        // Messages here are well under 4 GiB; the cast cannot truncate.
        let len = (self.buf.len() as u32).to_ne_bytes();
        self.buf[..4].copy_from_slice(&len);
        self.buf
    }
}

fn check_prefix_len(prefix_len: u8) -> io::Result<()> {
    if prefix_len > 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("IPv4 prefix length {prefix_len} is longer than 32"),
        ));
    }
    Ok(())
}

/// Refuses what the kernel would refuse with a bare `EINVAL`, with a message saying why.
fn check_route(route: &RouteSpec) -> io::Result<()> {
    check_prefix_len(route.prefix_len)?;
    let mask = u32::MAX
        .checked_shl(32 - u32::from(route.prefix_len))
        .unwrap_or(0);
    if u32::from(route.dst) & !mask != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "route destination {}/{} has bits set beyond the prefix length",
                route.dst, route.prefix_len
            ),
        ));
    }
    Ok(())
}

pub(crate) fn align(len: usize) -> usize {
    (len + ALIGN_TO - 1) & !(ALIGN_TO - 1)
}

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let raw = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([raw[0], raw[1]]))
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    read_u32(bytes, at).map(|v| v as i32)
}

pub(crate) fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink reply from the kernel: {what}"),
    )
}

pub(crate) fn socklen_of<T>() -> libc::socklen_t {
    // Socket address and option structs are a few bytes; the cast cannot truncate.
    std::mem::size_of::<T>() as libc::socklen_t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nlmsghdr bytes (host order) for the expected messages below.
    fn header(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    #[test]
    fn new_address_bytes() {
        let msg = encode_new_address(7, 3, Ipv4Addr::new(10, 65, 0, 2), 32);
        // NLM_F_REQUEST 0x1 | NLM_F_ACK 0x4 | NLM_F_REPLACE 0x100 | NLM_F_CREATE 0x400.
        let mut want = header(40, 20, 0x0505, 7);
        want.extend_from_slice(&[2, 32, 0, 0]); // AF_INET, /32, no flags, scope universe
        want.extend_from_slice(&3u32.to_ne_bytes()); // ifindex
        want.extend_from_slice(&8u16.to_ne_bytes()); // IFA_LOCAL, 4 + 4 bytes
        want.extend_from_slice(&2u16.to_ne_bytes());
        want.extend_from_slice(&[10, 65, 0, 2]);
        want.extend_from_slice(&8u16.to_ne_bytes()); // IFA_ADDRESS
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[10, 65, 0, 2]);
        assert_eq!(msg, want);
    }

    #[test]
    fn link_scope_route_bytes() {
        let route = RouteSpec {
            dst: Ipv4Addr::new(169, 254, 1, 1),
            prefix_len: 32,
            gateway: None,
            oif: 2,
            scope: RouteScope::Link,
            onlink: false,
            prefsrc: None,
            mtu_bytes: None,
        };
        let msg = encode_new_route(1, &route);
        let mut want = header(44, 24, 0x0505, 1);
        // AF_INET, /32, src 0, tos 0, table main 254, proto boot 3, scope link 253, unicast 1
        want.extend_from_slice(&[2, 32, 0, 0, 254, 3, 253, 1]);
        want.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
        want.extend_from_slice(&8u16.to_ne_bytes()); // RTA_DST
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[169, 254, 1, 1]);
        want.extend_from_slice(&8u16.to_ne_bytes()); // RTA_OIF
        want.extend_from_slice(&4u16.to_ne_bytes());
        want.extend_from_slice(&2u32.to_ne_bytes());
        assert_eq!(msg, want);
    }

    #[test]
    fn default_route_has_gateway_and_no_destination() {
        let route = RouteSpec {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(Ipv4Addr::new(169, 254, 1, 1)),
            oif: 9,
            scope: RouteScope::Universe,
            onlink: false,
            prefsrc: None,
            mtu_bytes: None,
        };
        let msg = encode_new_route(2, &route);
        let mut want = header(44, 24, 0x0505, 2);
        want.extend_from_slice(&[2, 0, 0, 0, 254, 3, 0, 1]);
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes()); // RTA_GATEWAY
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&[169, 254, 1, 1]);
        want.extend_from_slice(&8u16.to_ne_bytes()); // RTA_OIF
        want.extend_from_slice(&4u16.to_ne_bytes());
        want.extend_from_slice(&9u32.to_ne_bytes());
        assert_eq!(msg, want);
    }

    #[test]
    fn del_link_bytes() {
        let msg = encode_del_link(5, 4);
        let mut want = header(32, 17, 0x0005, 5);
        want.extend_from_slice(&[0, 0, 0, 0]); // AF_UNSPEC, pad, type 0
        want.extend_from_slice(&4u32.to_ne_bytes());
        want.extend_from_slice(&[0; 8]); // flags, change
        assert_eq!(msg, want);
    }

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        let mut msg = MessageBuilder::new(libc::RTM_NEWLINK, 0, 1);
        msg.attr(3, b"eth0\0"); // IFLA_IFNAME: 9 bytes, padded to 12
        msg.attr(4, &1500u32.to_ne_bytes());
        let bytes = msg.finish();
        assert_eq!(bytes.len(), 16 + 12 + 8);
        assert_eq!(read_u16(&bytes, 16), Some(9), "nla_len excludes padding");
        assert_eq!(&bytes[25..28], &[0, 0, 0], "padding is zero");
        assert_eq!(
            read_u16(&bytes, 28),
            Some(8),
            "next attribute starts aligned"
        );
        assert_eq!(read_u32(&bytes, 0), Some(36));
    }

    /// An NLMSG_ERROR reply as the kernel sends it with NETLINK_CAP_ACK.
    fn error_reply(seq: u32, code: i32, flags: u16, tlvs: &[u8]) -> Vec<u8> {
        let len = (16 + 4 + 16 + tlvs.len()) as u32;
        let mut v = header(len, 2, flags, seq);
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&header(40, 20, 0x0505, seq)); // the request's header
        v.extend_from_slice(tlvs);
        v
    }

    #[test]
    fn zero_code_is_success() {
        let reply = error_reply(3, 0, 0x100, &[]);
        let outcome = parse_ack(&reply, 3).expect("well formed");
        assert!(matches!(outcome, Some(Ok(()))));
    }

    #[test]
    fn negative_code_becomes_the_os_error() {
        let reply = error_reply(3, -libc::EEXIST, 0x100, &[]);
        let err = parse_ack(&reply, 3)
            .expect("well formed")
            .expect("our ack")
            .expect_err("request failed");
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    }

    #[test]
    fn extended_ack_message_is_appended() {
        let text = b"Nexthop has invalid gateway\0";
        let mut tlv = Vec::new();
        tlv.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlv.extend_from_slice(text);
        tlv.resize(align(tlv.len()), 0);
        // NLM_F_CAPPED 0x100 | NLM_F_ACK_TLVS 0x200
        let reply = error_reply(4, -libc::ENETUNREACH, 0x300, &tlv);
        let err = parse_ack(&reply, 4)
            .expect("well formed")
            .expect("our ack")
            .expect_err("request failed");
        assert_eq!(err.kind(), io::ErrorKind::NetworkUnreachable);
        assert!(
            err.to_string().ends_with(": Nexthop has invalid gateway"),
            "{err}"
        );
    }

    #[test]
    fn acks_for_other_sequence_numbers_are_skipped() {
        let reply = error_reply(9, -libc::EPERM, 0x100, &[]);
        assert!(parse_ack(&reply, 10).expect("well formed").is_none());
    }

    #[test]
    fn truncated_replies_are_errors_not_panics() {
        let reply = error_reply(3, 0, 0x100, &[]);
        for cut in 1..reply.len() {
            let result = parse_ack(&reply[..cut], 3);
            assert!(result.is_err(), "cut at {cut}");
        }
        let mut lying = reply.clone();
        lying[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_ack(&lying, 3).is_err());
    }

    #[test]
    fn onlink_route_with_source_and_mtu_bytes() {
        // 10.65.0.0/16 via 169.254.1.1 dev #5 onlink src 192.168.0.1 mtu 1450
        let route = RouteSpec {
            dst: Ipv4Addr::new(10, 65, 0, 0),
            prefix_len: 16,
            gateway: Some(Ipv4Addr::new(169, 254, 1, 1)),
            oif: 5,
            scope: RouteScope::Universe,
            onlink: true,
            prefsrc: Some(Ipv4Addr::new(192, 168, 0, 1)),
            mtu_bytes: Some(1450),
        };
        let msg = encode_new_route(4, &route);
        let mut want = header(72, 24, 0x0505, 4);
        want.extend_from_slice(&[2, 16, 0, 0, 254, 3, 0, 1]);
        want.extend_from_slice(&4u32.to_ne_bytes()); // RTNH_F_ONLINK
        for (kind, bytes) in [
            (1u16, vec![10, 65, 0, 0]),       // RTA_DST
            (5, vec![169, 254, 1, 1]),        // RTA_GATEWAY
            (4, 5u32.to_ne_bytes().to_vec()), // RTA_OIF
            (7, vec![192, 168, 0, 1]),        // RTA_PREFSRC
        ] {
            want.extend_from_slice(&8u16.to_ne_bytes());
            want.extend_from_slice(&kind.to_ne_bytes());
            want.extend_from_slice(&bytes);
        }
        want.extend_from_slice(&12u16.to_ne_bytes()); // RTA_METRICS { RTAX_MTU 1450 }
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&2u16.to_ne_bytes());
        want.extend_from_slice(&1450u32.to_ne_bytes());
        assert_eq!(msg, want);
    }

    #[test]
    fn del_route_bytes() {
        let msg = encode_del_route(9, Ipv4Addr::new(10, 65, 0, 0), 16, 5);
        let mut want = header(44, 25, 0x0005, 9);
        want.extend_from_slice(&[2, 16, 0, 0, 254, 0, 255, 0]);
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes()); // RTA_DST
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[10, 65, 0, 0]);
        want.extend_from_slice(&8u16.to_ne_bytes()); // RTA_OIF
        want.extend_from_slice(&4u16.to_ne_bytes());
        want.extend_from_slice(&5u32.to_ne_bytes());
        assert_eq!(msg, want);
    }

    #[test]
    fn routes_with_host_bits_or_long_prefixes_are_refused() {
        let mut route = RouteSpec {
            dst: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 24,
            gateway: None,
            oif: 1,
            scope: RouteScope::Link,
            onlink: false,
            prefsrc: None,
            mtu_bytes: None,
        };
        let err = check_route(&route).expect_err("host bits set");
        assert!(err.to_string().contains("10.0.0.1/24"), "{err}");
        route.prefix_len = 33;
        assert!(check_route(&route).is_err());
        route.prefix_len = 32;
        assert!(check_route(&route).is_ok());
        route.dst = Ipv4Addr::UNSPECIFIED;
        route.prefix_len = 0;
        assert!(check_route(&route).is_ok());
    }
}
