//! A small hand-written rtnetlink client: IPv4 addresses, IPv4 routes (add, replace,
//! delete, look up as `ip route get` does, list one table as `ip route show table N`
//! does), link deletion, and a watch on route changes.
//!
//! Requests go to the kernel on a `NETLINK_ROUTE` socket in the calling thread's namespace,
//! each with `NLM_F_ACK`; [`Netlink`] waits for the matching acknowledgement and turns a
//! negative error code into `io::Error::from_raw_os_error`. When the kernel attaches an
//! extended-ack message ("Nexthop has invalid gateway", …) it is appended to the error text.
//! [`RouteWatch`] is a second kind of socket: subscribed to the kernel's route, address and
//! link notifications, it only tells whether something changed (at once, or waiting).
//!
//! Message encoding is separated from the socket (the `encode_*` functions build the bytes,
//! [`parse_ack`], [`parse_route`] and [`parse_table_route`] read replies) so that both are
//! unit-tested without
//! privileges. Layouts follow `linux/netlink.h`, `linux/rtnetlink.h` and `linux/if_addr.h`:
//! headers in host byte order, addresses in network order, every attribute padded to 4
//! bytes.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Attribute and message alignment (`NLA_ALIGNTO`, `NLMSG_ALIGNTO`).
const ALIGN_TO: usize = 4;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDR_LEN: usize = 16;
/// `sizeof(struct nlattr)`.
const NLA_HDR_LEN: usize = 4;
/// `NLMSGERR_ATTR_MSG`: extended-ack attribute carrying a NUL-terminated error string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Receive buffer: an acknowledgement with extended-ack attributes fits many times over.
const RECV_BUF_LEN: usize = 16 * 1024;

const AF_INET: u8 = libc::AF_INET as u8;
/// `RTNH_F_ONLINK` (`linux/rtnetlink.h`): the gateway is on the link.
const RTNH_F_ONLINK: u32 = 4;
/// `RTAX_MTU` (`linux/rtnetlink.h`): the MTU metric inside `RTA_METRICS`.
const RTAX_MTU: u16 = 2;
/// `sizeof(struct rtmsg)`.
const RTMSG_LEN: usize = 12;
/// `RTA_VIA` (`linux/rtnetlink.h`): a next hop of another address family (an IPv6
/// gateway for an IPv4 route).
const RTA_VIA: u16 = 18;
/// `sizeof(struct rtnexthop)`: one next hop of an `RTA_MULTIPATH` route.
const RTNH_LEN: usize = 8;
/// The type bits of an attribute (without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;

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

/// The kernel's route for one destination, as `ip route get DST` shows it
/// (`192.168.2.3 via 192.168.1.254 dev eth0 src 192.168.1.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLookup {
    /// The route is unicast (`RTN_UNICAST`): the packet leaves through `oif`. Otherwise
    /// it is for this host itself (local, broadcast) or goes nowhere (blackhole,
    /// prohibit, …).
    pub unicast: bool,
    /// The next hop, when the destination is not on the link.
    pub gateway: Option<Ipv4Addr>,
    /// The outgoing interface.
    pub oif: Option<u32>,
}

/// One IPv4 unicast route of a table, as [`Netlink::dump_ipv4_table`] lists it: the
/// destination and its gateways (one, or several for an ECMP route), in the kernel's
/// order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableRoute {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateways: Vec<Ipv4Addr>,
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
        let fd = open_route_socket(0, 0)?;
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
        Ok(Netlink { fd, next_seq: 1 })
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

    /// The route the kernel takes for a packet this host sends to `dst` — what
    /// `ip route get DST` asks (policy rules and every table included). An error when
    /// there is none (`ENETUNREACH`, `EHOSTUNREACH`, `EINVAL` for a blackhole).
    pub fn route_get(&mut self, dst: Ipv4Addr) -> io::Result<RouteLookup> {
        let seq = self.take_seq();
        let mut found = None;
        self.exchange(seq, &encode_get_route(seq, dst), |msg_type, payload| {
            if msg_type == libc::RTM_NEWROUTE {
                found = Some(parse_route(payload)?);
            }
            Ok(())
        })?;
        found.ok_or_else(|| malformed("route lookup acknowledged without a route"))
    }

    /// The IPv4 unicast routes of table `table`, sorted — what `ip route show table N`
    /// lists (the kernel dumps every table; the others are left out here).
    pub fn dump_ipv4_table(&mut self, table: u32) -> io::Result<Vec<TableRoute>> {
        let seq = self.take_seq();
        let mut routes = Vec::new();
        self.exchange(seq, &encode_dump_routes(seq), |msg_type, payload| {
            if msg_type == libc::RTM_NEWROUTE {
                routes.extend(parse_table_route(payload, table)?);
            }
            Ok(())
        })?;
        routes.sort();
        Ok(routes)
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    /// Sends one request and waits for the kernel's acknowledgement of sequence `seq`.
    fn request(&mut self, seq: u32, message: &[u8]) -> io::Result<()> {
        self.exchange(seq, message, |_, _| Ok(()))
    }

    /// Sends one request and reads until the kernel's acknowledgement of sequence `seq` (or
    /// the end of a dump), handing every other message of that sequence (its type and
    /// payload: the answer to a query) to `reply`.
    fn exchange(
        &mut self,
        seq: u32,
        message: &[u8],
        mut reply: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
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
            let received = match recv(&self.fd, &mut buf, 0)? {
                Some(0) => return Err(malformed("empty datagram")),
                Some(n) => n,
                None => continue, // interrupted
            };
            let datagram = buf.get(..received).unwrap_or_default();
            if let Some(result) = parse_reply(datagram, seq, &mut reply)? {
                return result;
            }
            // Replies without our acknowledgement (an answer before it, or a stale
            // sequence number): keep reading.
        }
    }
}

/// A netlink socket subscribed to the kernel's IPv4 route, IPv4 address and link
/// notifications, in the namespace of the thread that opened it. It does not say what
/// changed, only that something did: the reader looks up again what it depends on.
#[derive(Debug)]
pub struct RouteWatch {
    fd: OwnedFd,
}

impl RouteWatch {
    /// Opens a non-blocking socket that joins the `RTMGRP_IPV4_ROUTE`,
    /// `RTMGRP_IPV4_IFADDR` and `RTMGRP_LINK` groups.
    pub fn open() -> io::Result<RouteWatch> {
        let groups =
            (libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_LINK) as u32;
        Ok(RouteWatch {
            fd: open_route_socket(groups, libc::SOCK_NONBLOCK)?,
        })
    }

    /// Whether the kernel announced a change since the last call. Reads every pending
    /// notification without blocking. Notifications lost because the socket overflowed
    /// (`ENOBUFS`) count as a change.
    pub fn changed(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        let mut changed = false;
        loop {
            // MSG_TRUNC: a notification longer than the buffer is still one notification.
            match recv(&self.fd, &mut buf, libc::MSG_TRUNC) {
                Ok(Some(_)) => changed = true,
                Ok(None) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(changed),
                Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(err) => return Err(err),
            }
        }
    }

    /// Waits up to `timeout` for the kernel to announce a change, then reads every
    /// pending notification ([`RouteWatch::changed`]); whether there was one.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        loop {
            // SAFETY: one valid pollfd, and the count passed is 1.
            let rc = unsafe { libc::poll(&mut pollfd, 1, ms) };
            if rc >= 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        self.changed()
    }
}

/// Opens a `NETLINK_ROUTE` socket (`flags` added to its type, e.g. `SOCK_NONBLOCK`) and
/// binds it, joining the multicast `groups` (0: none).
fn open_route_socket(groups: u32, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
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
    Ok(fd)
}

/// One `recv(2)` into `buf`: the datagram's length, or `None` when interrupted.
fn recv(fd: &OwnedFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call.
    let received = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    match usize::try_from(received) {
        Ok(n) => Ok(Some(n)),
        Err(_) => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

/// Reads one datagram from the kernel. Returns `Ok(None)` when it holds no acknowledgement
/// for `seq`, `Ok(Some(result))` with the request's outcome when it does, and `Err` when the
/// datagram is malformed.
pub fn parse_ack(datagram: &[u8], seq: u32) -> io::Result<Option<io::Result<()>>> {
    parse_reply(datagram, seq, |_, _| Ok(()))
}

/// [`parse_ack`], handing every other message of sequence `seq` before the
/// acknowledgement (type, payload) to `reply`; an error from `reply` is the datagram's.
/// The end of a dump (`NLMSG_DONE`) is its success.
fn parse_reply(
    datagram: &[u8],
    seq: u32,
    mut reply: impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<Option<io::Result<()>>> {
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
        if msg_seq == Some(seq) {
            if msg_type == libc::NLMSG_ERROR as u16 {
                let flags = read_u16(rest, 6).unwrap_or(0);
                return parse_error_payload(payload, flags).map(Some);
            }
            if msg_type == libc::NLMSG_DONE as u16 {
                return Ok(Some(Ok(())));
            }
            reply(msg_type, payload)?;
        }
        rest = rest.get(align(msg_len)..).unwrap_or_default();
    }
    Ok(None)
}

/// Reads an `RTM_NEWROUTE` payload (`struct rtmsg` and its attributes), the kernel's
/// answer to [`encode_get_route`].
pub fn parse_route(payload: &[u8]) -> io::Result<RouteLookup> {
    let header = payload
        .get(..RTMSG_LEN)
        .ok_or_else(|| malformed("truncated route message"))?;
    if header[0] != AF_INET {
        return Err(malformed("route message of another address family"));
    }
    let mut route = RouteLookup {
        unicast: header[7] == libc::RTN_UNICAST,
        gateway: None,
        oif: None,
    };
    for attr in attributes(&payload[RTMSG_LEN..]) {
        let (ty, body) = attr?;
        match ty {
            libc::RTA_GATEWAY => route.gateway = Some(ipv4_gateway(body)?),
            libc::RTA_OIF => {
                route.oif = Some(read_u32(body, 0).ok_or_else(|| malformed("short RTA_OIF"))?);
            }
            RTA_VIA => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the route's next hop is not an IPv4 address (RTA_VIA)",
                ))
            }
            _ => {}
        }
    }
    Ok(route)
}

/// Reads an `RTM_NEWROUTE` payload of a dump: the route when it is an IPv4 unicast route
/// of table `table` (found in `rtm_table`, or in `RTA_TABLE` above 255), else `None`.
/// Next hops come from `RTA_GATEWAY` or, for an ECMP route, from each `struct rtnexthop`
/// of `RTA_MULTIPATH`.
pub fn parse_table_route(payload: &[u8], table: u32) -> io::Result<Option<TableRoute>> {
    let header = payload
        .get(..RTMSG_LEN)
        .ok_or_else(|| malformed("truncated route message"))?;
    let mut route_table = u32::from(header[4]);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateways = Vec::new();
    for attr in attributes(&payload[RTMSG_LEN..]) {
        let (ty, body) = attr?;
        match ty {
            libc::RTA_TABLE => {
                route_table = read_u32(body, 0).ok_or_else(|| malformed("short RTA_TABLE"))?;
            }
            libc::RTA_DST => dst = ipv4_gateway(body)?,
            libc::RTA_GATEWAY => gateways.push(ipv4_gateway(body)?),
            libc::RTA_MULTIPATH => {
                let mut hops = body;
                while !hops.is_empty() {
                    let len = read_u16(hops, 0).map_or(0, usize::from);
                    let hop = hops
                        .get(RTNH_LEN..len)
                        .ok_or_else(|| malformed("next hop length out of bounds"))?;
                    for nested in attributes(hop) {
                        if let (libc::RTA_GATEWAY, body) = nested? {
                            gateways.push(ipv4_gateway(body)?);
                        }
                    }
                    hops = hops.get(align(len)..).unwrap_or_default();
                }
            }
            _ => {}
        }
    }
    let unicast = header[0] == AF_INET && header[7] == libc::RTN_UNICAST && header[1] <= 32;
    Ok((unicast && route_table == table).then_some(TableRoute {
        dst,
        prefix_len: header[1],
        gateways,
    }))
}

/// The attributes of a message (type without its flag bits, body), each padded to
/// `NLA_ALIGNTO`; an error for one that does not fit.
fn attributes(bytes: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let attr = (read_u16(rest, 0), read_u16(rest, 2));
        let (Some(len), Some(ty)) = attr else {
            rest = &[];
            return Some(Err(malformed("truncated route attribute")));
        };
        let len = usize::from(len);
        let Some(body) = rest.get(NLA_HDR_LEN..len) else {
            rest = &[];
            return Some(Err(malformed("route attribute length out of bounds")));
        };
        rest = rest.get(align(len).max(NLA_HDR_LEN)..).unwrap_or_default();
        Some(Ok((ty & NLA_TYPE_MASK, body)))
    })
}

/// An IPv4 address attribute (`RTA_GATEWAY`, `RTA_DST`).
fn ipv4_gateway(body: &[u8]) -> io::Result<Ipv4Addr> {
    let octets: [u8; 4] = body
        .try_into()
        .map_err(|_| malformed("an address attribute is not an IPv4 address"))?;
    Ok(Ipv4Addr::from(octets))
}

/// Interprets the payload of an `NLMSG_ERROR` message (`struct nlmsgerr` + ext-ack TLVs).
fn parse_error_payload(payload: &[u8], flags: u16) -> io::Result<io::Result<()>> {
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

/// `RTM_GETROUTE` for the route to `dst` (what `ip route get DST` sends): no table, no
/// flags, the kernel answers with one `RTM_NEWROUTE`.
pub fn encode_get_route(seq: u32, dst: Ipv4Addr) -> Vec<u8> {
    let mut msg = MessageBuilder::new(libc::RTM_GETROUTE, 0, seq);
    msg.put(&[AF_INET, 32, 0, 0, 0, 0, 0, 0]);
    msg.put(&0u32.to_ne_bytes());
    msg.attr(libc::RTA_DST, &dst.octets());
    msg.finish()
}

/// `RTM_GETROUTE` with `NLM_F_DUMP` for every IPv4 route (the kernel filters no table;
/// [`parse_table_route`] does). No `NLM_F_ACK`: the dump ends with `NLMSG_DONE`.
pub fn encode_dump_routes(seq: u32) -> Vec<u8> {
    let mut msg = MessageBuilder::dump(libc::RTM_GETROUTE, seq);
    msg.put(&[AF_INET, 0, 0, 0, 0, 0, 0, 0]);
    msg.put(&0u32.to_ne_bytes());
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
        MessageBuilder::with_flags(msg_type, libc::NLM_F_ACK | flags, seq)
    }

    /// Starts a dump request of `msg_type`: `NLM_F_REQUEST | NLM_F_DUMP`, without
    /// `NLM_F_ACK` (a dump ends with `NLMSG_DONE`).
    fn dump(msg_type: u16, seq: u32) -> Self {
        MessageBuilder::with_flags(msg_type, libc::NLM_F_DUMP, seq)
    }

    /// Starts a request of `msg_type` with `NLM_F_REQUEST` and `flags`.
    fn with_flags(msg_type: u16, flags: libc::c_int, seq: u32) -> Self {
        let flags = (libc::NLM_F_REQUEST | flags) as u16;
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

fn align(len: usize) -> usize {
    (len + ALIGN_TO - 1) & !(ALIGN_TO - 1)
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let raw = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([raw[0], raw[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    read_u32(bytes, at).map(|v| v as i32)
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink reply from the kernel: {what}"),
    )
}

fn socklen_of<T>() -> libc::socklen_t {
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

    /// Bytes as hex text (whitespace ignored), for fixtures captured from the kernel.
    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ascii");
                u8::from_str_radix(pair, 16).expect("hex digit")
            })
            .collect()
    }

    // What a 6.18 kernel answered `RTM_GETROUTE` (sequence 7) in a namespace whose veth
    // `d0` (ifindex 3) holds 192.168.1.1/24 with `default via 192.168.1.254`: the route,
    // then (in a second datagram) the acknowledgement.
    /// `192.168.1.7 dev d0 src 192.168.1.1`: on the link.
    const ON_LINK: &str =
        "680000001800000007000000c54e000002200000fe0000010002000008000f00fe000000\
        08000100c0a80107080004000300000008000700c0a80101080019000000000024000c00020000000000\
        0000000000000000000000000000000000000000000000000000";
    /// `192.168.2.3 via 192.168.1.254 dev d0 src 192.168.1.1`.
    const VIA_GATEWAY: &str =
        "700000001800000007000000c54e000002200000fe0000010002000008000f00fe000000\
        08000100c0a80203080004000300000008000700c0a8010108000500c0a801fe08001900000000002400\
        0c000200000000000000000000000000000000000000000000000000000000000000";
    /// `local 192.168.1.1 dev lo`: the namespace's own address.
    const LOCAL: &str = "680000001800000007000000c54e000002200000fe0000020002008008000f00fe000000\
        08000100c0a80101080004000100000008000700c0a80101080019000000000024000c00010000000000\
        0000000000000000000000000000000000000000000000000000";
    const ACK: &str = "240000000200000107000000c54e000000000000240000001a0005000700000000000000";
    /// With the default route deleted, `192.168.2.3` has no route: ENETUNREACH.
    const UNREACHABLE: &str =
        "3800000002000000070000006e4e00009bffffff240000001a0005000700000000000000\
        02200000000000000000000008000100c0a80203";

    #[test]
    fn get_route_bytes() {
        let msg = encode_get_route(7, Ipv4Addr::new(192, 168, 2, 3));
        // NLM_F_REQUEST | NLM_F_ACK; what the fixtures above answered.
        let mut want = header(36, 26, 0x0005, 7);
        want.extend_from_slice(&[2, 32, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes()); // RTA_DST
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[192, 168, 2, 3]);
        assert_eq!(msg, want);
    }

    /// The route of a captured answer, read as [`Netlink::route_get`] reads it: the
    /// answer's datagram, then the acknowledgement's.
    fn answered(route: &str) -> io::Result<Option<RouteLookup>> {
        let mut found = None;
        let mut collect = |ty: u16, payload: &[u8]| {
            if ty == libc::RTM_NEWROUTE {
                found = Some(parse_route(payload)?);
            }
            Ok(())
        };
        assert!(parse_reply(&hex(route), 7, &mut collect)?.is_none());
        parse_reply(&hex(ACK), 7, &mut collect)?.expect("the acknowledgement")?;
        Ok(found)
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn kernel_route_answers_name_the_gateway_only_off_the_link() {
        let on_link = answered(ON_LINK).expect("well formed");
        assert_eq!(
            on_link,
            Some(RouteLookup {
                unicast: true,
                gateway: None,
                oif: Some(3)
            })
        );
        let via = answered(VIA_GATEWAY).expect("well formed");
        assert_eq!(
            via,
            Some(RouteLookup {
                unicast: true,
                gateway: Some(Ipv4Addr::new(192, 168, 1, 254)),
                oif: Some(3)
            })
        );
        let local = answered(LOCAL).expect("well formed").expect("a route");
        assert!(!local.unicast, "{local:?}");
        assert_eq!(local.oif, Some(1), "lo");
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn no_route_is_the_kernels_error() {
        let err = parse_ack(&hex(UNREACHABLE), 7)
            .expect("well formed")
            .expect("our ack")
            .expect_err("no route");
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn truncated_or_lying_route_answers_are_errors_not_panics() {
        let datagram = hex(VIA_GATEWAY);
        let payload = &datagram[NLMSG_HDR_LEN..];
        for cut in 0..payload.len() {
            // Cutting between attributes leaves a shorter valid answer; anything else
            // must be refused.
            if let Ok(route) = parse_route(&payload[..cut]) {
                assert!(cut >= RTMSG_LEN, "cut at {cut}: {route:?}");
            }
        }
        let mut lying = payload.to_vec();
        // The first attribute (RTA_TABLE) claims 200 bytes.
        lying[RTMSG_LEN..RTMSG_LEN + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_route(&lying).is_err());
        lying[RTMSG_LEN..RTMSG_LEN + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert!(parse_route(&lying).is_err(), "shorter than its own header");
        let mut ipv6 = payload.to_vec();
        ipv6[0] = libc::AF_INET6 as u8;
        assert!(parse_route(&ipv6).is_err());
        // An IPv6 gateway for the IPv4 route (`via inet6 fe80::1`): no IPv4 next hop.
        let mut via = payload.to_vec();
        via.extend_from_slice(&22u16.to_ne_bytes());
        via.extend_from_slice(&RTA_VIA.to_ne_bytes());
        via.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        via.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        via.extend_from_slice(&[0, 0]); // padding
        let err = parse_route(&via).expect_err("RTA_VIA");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
    }

    /// A route message of a dump: rtmsg, then attributes (`RTA_TABLE` added above 255).
    fn table_route(
        prefix_len: u8,
        table: u32,
        route_type: u8,
        attrs: &[(u16, Vec<u8>)],
    ) -> Vec<u8> {
        let compat = u8::try_from(table).unwrap_or(252);
        let mut payload = vec![AF_INET, prefix_len, 0, 0, compat, 12, 0, route_type];
        payload.extend_from_slice(&0u32.to_ne_bytes());
        let mut all = attrs.to_vec();
        if table > 255 {
            all.push((libc::RTA_TABLE, table.to_ne_bytes().to_vec()));
        }
        for (kind, body) in all {
            payload.extend_from_slice(&((NLA_HDR_LEN + body.len()) as u16).to_ne_bytes());
            payload.extend_from_slice(&kind.to_ne_bytes());
            payload.extend_from_slice(&body);
            payload.resize(align(payload.len()), 0);
        }
        payload
    }

    /// A `struct rtnexthop` with one `RTA_GATEWAY`.
    fn nexthop(gateway: [u8; 4]) -> Vec<u8> {
        let mut hop = Vec::new();
        hop.extend_from_slice(&16u16.to_ne_bytes());
        hop.extend_from_slice(&[4, 0]); // RTNH_F_ONLINK, hops
        hop.extend_from_slice(&2i32.to_ne_bytes());
        hop.extend_from_slice(&8u16.to_ne_bytes());
        hop.extend_from_slice(&libc::RTA_GATEWAY.to_ne_bytes());
        hop.extend_from_slice(&gateway);
        hop
    }

    #[test]
    fn a_table_dump_keeps_the_unicast_routes_of_that_table() {
        const TABLE: u32 = 30583;
        // What BIRD writes: 10.65.1.0/26 via 192.168.1.2 onlink, in table 30583.
        let bird = table_route(
            26,
            TABLE,
            libc::RTN_UNICAST,
            &[
                (libc::RTA_DST, vec![10, 65, 1, 0]),
                (libc::RTA_GATEWAY, vec![192, 168, 1, 2]),
                (libc::RTA_OIF, 2u32.to_ne_bytes().to_vec()),
            ],
        );
        assert_eq!(
            parse_table_route(&bird, TABLE).unwrap(),
            Some(TableRoute {
                dst: Ipv4Addr::new(10, 65, 1, 0),
                prefix_len: 26,
                gateways: vec![Ipv4Addr::new(192, 168, 1, 2)],
            })
        );
        // Another table, a blackhole: not the table's unicast routes.
        assert_eq!(parse_table_route(&bird, 254).unwrap(), None);
        let main = table_route(
            0,
            254,
            libc::RTN_UNICAST,
            &[(libc::RTA_GATEWAY, vec![192, 168, 0, 254])],
        );
        assert_eq!(parse_table_route(&main, TABLE).unwrap(), None);
        let blackhole = table_route(
            26,
            TABLE,
            libc::RTN_BLACKHOLE,
            &[(libc::RTA_DST, vec![10, 65, 0, 0])],
        );
        assert_eq!(parse_table_route(&blackhole, TABLE).unwrap(), None);
        // An ECMP route: every next hop, in order (RTA_MULTIPATH may carry NLA_F_NESTED).
        let mut hops = nexthop([192, 168, 0, 2]);
        hops.extend(nexthop([192, 168, 0, 3]));
        let ecmp = table_route(
            24,
            TABLE,
            libc::RTN_UNICAST,
            &[
                (libc::RTA_DST, vec![10, 66, 0, 0]),
                (libc::RTA_MULTIPATH | 0x8000, hops),
            ],
        );
        assert_eq!(
            parse_table_route(&ecmp, TABLE).unwrap().unwrap().gateways,
            [Ipv4Addr::new(192, 168, 0, 2), Ipv4Addr::new(192, 168, 0, 3)]
        );
        // A cut route or a lying length is an error, never a panic.
        for cut in 0..ecmp.len() {
            if let Ok(Some(route)) = parse_table_route(&ecmp[..cut], TABLE) {
                assert!(cut >= RTMSG_LEN, "cut at {cut}: {route:?}");
            }
        }
        let mut lying = ecmp.clone();
        lying[RTMSG_LEN..RTMSG_LEN + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_table_route(&lying, TABLE).is_err());
    }

    #[test]
    fn a_dump_request_asks_for_every_ipv4_route_and_ends_with_done() {
        let msg = encode_dump_routes(9);
        let mut want = header(28, libc::RTM_GETROUTE, 0x301, 9); // NLM_F_REQUEST | NLM_F_DUMP
        want.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&0u32.to_ne_bytes());
        assert_eq!(msg, want);
        // NLMSG_DONE of the dump's sequence ends it; another sequence's does not.
        let mut done = header(20, libc::NLMSG_DONE as u16, 2, 9);
        done.extend_from_slice(&0i32.to_ne_bytes());
        assert!(matches!(parse_ack(&done, 9), Ok(Some(Ok(())))));
        assert!(matches!(parse_ack(&done, 8), Ok(None)));
    }
}

#[cfg(all(test, feature = "testing"))]
mod namespace_tests {
    use super::*;
    use crate::netns::run_in_netns;
    use crate::testing::{is_root, ScratchNetns};

    /// A namespace whose veth `u0` holds 192.168.1.1/24, with `default via 192.168.1.254`.
    fn node() -> io::Result<ScratchNetns> {
        let ns = ScratchNetns::new("twrt")?;
        for args in [
            &["link", "add", "u0", "type", "veth", "peer", "name", "u1"][..],
            &["link", "set", "u0", "up"],
            &["link", "set", "u1", "up"],
            &["addr", "add", "192.168.1.1/24", "dev", "u0"],
            &["route", "add", "default", "via", "192.168.1.254"],
        ] {
            ns.ip(args)?;
        }
        Ok(ns)
    }

    #[test]
    fn route_get_answers_as_ip_route_get() {
        if !is_root() {
            return;
        }
        let ns = node().expect("a scratch namespace");
        let (u0, on_link, via, none) = run_in_netns(ns.path(), || {
            let mut nl = Netlink::open()?;
            let u0 = crate::link::ifindex("u0")?;
            let on_link = nl.route_get(Ipv4Addr::new(192, 168, 1, 7))?;
            let via = nl.route_get(Ipv4Addr::new(192, 168, 2, 3))?;
            nl.del_ipv4_route(Ipv4Addr::UNSPECIFIED, 0, u0)?;
            let none = nl.route_get(Ipv4Addr::new(192, 168, 2, 3));
            Ok((u0, on_link, via, none))
        })
        .expect("in the namespace");
        assert_eq!(on_link.gateway, None);
        assert_eq!(on_link.oif, Some(u0));
        assert!(on_link.unicast);
        assert_eq!(via.gateway, Some(Ipv4Addr::new(192, 168, 1, 254)));
        assert_eq!(via.oif, Some(u0));
        let err = none.expect_err("no default route");
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    }

    #[test]
    fn a_table_is_dumped_and_its_changes_wake_a_waiting_watch() {
        if !is_root() {
            return;
        }
        let ns = node().expect("a scratch namespace");
        // What BIRD writes: the BGP next hop as an onlink gateway, also off the subnet.
        ns.ip(&[
            "route",
            "add",
            "10.65.1.0/26",
            "via",
            "192.168.2.2",
            "dev",
            "u0",
            "onlink",
            "table",
            "30583",
            "proto",
            "bird",
        ])
        .expect("ip route add table 30583");
        let mut watch = run_in_netns(ns.path(), RouteWatch::open).expect("watch");
        let routes =
            run_in_netns(ns.path(), || Netlink::open()?.dump_ipv4_table(30583)).expect("dump");
        assert_eq!(
            routes,
            [TableRoute {
                dst: Ipv4Addr::new(10, 65, 1, 0),
                prefix_len: 26,
                gateways: vec![Ipv4Addr::new(192, 168, 2, 2)],
            }]
        );
        // The main table's routes are another table's: the subnet and the default route.
        let main =
            run_in_netns(ns.path(), || Netlink::open()?.dump_ipv4_table(254)).expect("dump main");
        assert_eq!(
            main,
            [
                TableRoute {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix_len: 0,
                    gateways: vec![Ipv4Addr::new(192, 168, 1, 254)],
                },
                TableRoute {
                    dst: Ipv4Addr::new(192, 168, 1, 0),
                    prefix_len: 24,
                    gateways: Vec::new(),
                },
            ]
        );
        assert!(
            !watch.wait(Duration::from_millis(50)).expect("wait"),
            "nothing yet"
        );
        ns.ip(&["route", "del", "10.65.1.0/26", "table", "30583"])
            .expect("ip route del");
        assert!(
            watch.wait(Duration::from_secs(2)).expect("wait"),
            "the deletion"
        );
        let after =
            run_in_netns(ns.path(), || Netlink::open()?.dump_ipv4_table(30583)).expect("dump");
        assert!(after.is_empty(), "{after:?}");
    }

    #[test]
    fn the_watch_sees_route_changes() {
        if !is_root() {
            return;
        }
        let ns = node().expect("a scratch namespace");
        let mut watch = run_in_netns(ns.path(), RouteWatch::open).expect("watch");
        // Setting up the namespace happened before: nothing pending.
        assert!(!watch.changed().expect("read"));
        ns.ip(&["route", "add", "192.168.2.0/24", "via", "192.168.1.253"])
            .expect("ip route add");
        assert!(watch.changed().expect("read"), "a route was added");
        assert!(!watch.changed().expect("read"), "and read");
        ns.ip(&["link", "set", "u0", "address", "02:00:00:00:00:99"])
            .expect("ip link set");
        assert!(watch.changed().expect("read"), "a link changed");
    }
}
