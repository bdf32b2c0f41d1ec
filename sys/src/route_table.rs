//! One kernel routing table read from outside: a dump of its IPv4 unicast routes
//! ([`dump_ipv4_table`]) and a watch that wakes when routes of a table change
//! ([`RouteWatch`], the `RTNLGRP_IPV4_ROUTE` multicast group). This is how
//! tapwire-control follows what BIRD writes into its kernel table of learned routes.
//!
//! The watch only says *that* a table changed; the caller dumps it again. A dump is the
//! whole truth at one moment, so notifications and dumps can never be applied out of
//! order, and a lost notification (the socket's buffer overran) costs one dump.
//!
//! Parsing is separate from the sockets ([`parse_routes`], [`tables_touched`]) and
//! unit-tested with kernel byte layouts (`linux/rtnetlink.h`): `struct rtmsg`, then
//! attributes; a route of a table above 255 carries it in `RTA_TABLE`; an ECMP route
//! carries its next hops in `RTA_MULTIPATH` (`struct rtnexthop` each, with nested
//! attributes).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::netlink::{
    align, malformed, open_route_socket, parse_error_payload, read_u16, read_u32, AF_INET,
    NLA_HDR_LEN, NLMSG_HDR_LEN, RECV_BUF_LEN,
};

/// `sizeof(struct rtmsg)`.
const RTMSG_LEN: usize = 12;
/// `sizeof(struct rtnexthop)`.
const RTNH_LEN: usize = 8;
/// `RTMGRP_IPV4_ROUTE`: the bit of group `RTNLGRP_IPV4_ROUTE` (7) for `nl_groups`.
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
/// How long a dump may take before it is abandoned.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// One IPv4 unicast route of a table: destination and next hops (one, or several for an
/// ECMP route), in the kernel's order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateways: Vec<Ipv4Addr>,
}

/// The IPv4 unicast routes of table `table` in the calling thread's network namespace.
pub fn dump_ipv4_table(table: u32) -> io::Result<Vec<KernelRoute>> {
    let fd = open_route_socket(0)?;
    let seq = 1;
    send(&fd, &encode_dump_request(seq))?;
    let deadline = Instant::now() + DUMP_TIMEOUT;
    let mut routes = Vec::new();
    let mut buf = vec![0u8; RECV_BUF_LEN * 2];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !wait_readable(&fd, left)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("dumping kernel routing table {table}: no answer"),
            ));
        }
        let datagram = recv(&fd, &mut buf)?;
        if parse_routes(datagram, table, seq, &mut routes)? {
            routes.sort();
            return Ok(routes);
        }
    }
}

/// Wakes when IPv4 routes change (any table's; [`RouteWatch::wait`] says which).
#[derive(Debug)]
pub struct RouteWatch {
    fd: OwnedFd,
    buf: Vec<u8>,
}

/// What a [`RouteWatch`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Nothing within the time given.
    Nothing,
    /// Routes of these tables changed.
    Tables(Vec<u32>),
    /// Notifications were lost (the socket's buffer overran): any table may have changed.
    Lost,
}

impl Changes {
    /// Whether table `table` may have changed.
    pub fn touches(&self, table: u32) -> bool {
        match self {
            Changes::Nothing => false,
            Changes::Tables(tables) => tables.contains(&table),
            Changes::Lost => true,
        }
    }
}

impl RouteWatch {
    /// Subscribes to IPv4 route changes in the calling thread's network namespace. Open it
    /// before the first dump, so that no change between the two is missed.
    pub fn open() -> io::Result<RouteWatch> {
        Ok(RouteWatch {
            fd: open_route_socket(RTMGRP_IPV4_ROUTE)?,
            buf: vec![0u8; RECV_BUF_LEN * 2],
        })
    }

    /// Waits up to `timeout` for a change, then takes every notification already queued.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Changes> {
        if !wait_readable(&self.fd, timeout)? {
            return Ok(Changes::Nothing);
        }
        let mut tables = Vec::new();
        loop {
            match recv_nonblocking(&self.fd, &mut self.buf) {
                Ok(Some(datagram)) => {
                    for table in tables_touched(datagram)? {
                        if !tables.contains(&table) {
                            tables.push(table);
                        }
                    }
                }
                Ok(None) => return Ok(Changes::Tables(tables)),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Changes::Lost),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `RTM_GETROUTE` with `NLM_F_DUMP` for every IPv4 route (the kernel filters no table for
/// us; [`parse_routes`] does).
pub fn encode_dump_request(seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR_LEN + RTMSG_LEN;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_GETROUTE.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[AF_INET, 0, 0, 0, 0, 0, 0, 0]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg
}

/// Reads one datagram of a dump answering `seq`: appends the IPv4 unicast routes of
/// `table` to `routes`. `Ok(true)` at the end of the dump; an error for a malformed
/// datagram or a dump the kernel refused.
pub fn parse_routes(
    datagram: &[u8],
    table: u32,
    seq: u32,
    routes: &mut Vec<KernelRoute>,
) -> io::Result<bool> {
    for message in messages(datagram) {
        let (msg_type, msg_seq, flags, payload) = message?;
        if msg_seq != seq {
            continue;
        }
        match msg_type {
            t if t == libc::NLMSG_DONE as u16 => return Ok(true),
            t if t == libc::NLMSG_ERROR as u16 => {
                parse_error_payload(payload, flags)??;
                return Ok(true);
            }
            t if t == libc::RTM_NEWROUTE => {
                if let Some(route) = parse_route(payload, table)? {
                    routes.push(route);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// The tables whose routes a datagram of notifications adds or deletes.
pub fn tables_touched(datagram: &[u8]) -> io::Result<Vec<u32>> {
    let mut tables = Vec::new();
    for message in messages(datagram) {
        let (msg_type, _, _, payload) = message?;
        if msg_type != libc::RTM_NEWROUTE && msg_type != libc::RTM_DELROUTE {
            continue;
        }
        let header = Header::read(payload)?;
        if header.family == AF_INET && !tables.contains(&header.table) {
            tables.push(header.table);
        }
    }
    Ok(tables)
}

/// The messages of a datagram: (type, sequence, flags, payload) each.
fn messages(datagram: &[u8]) -> impl Iterator<Item = io::Result<(u16, u32, u16, &[u8])>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let header = (
            read_u32(rest, 0),
            read_u16(rest, 4),
            read_u16(rest, 6),
            read_u32(rest, 8),
        );
        let (Some(len), Some(msg_type), Some(flags), Some(seq)) = header else {
            rest = &[];
            return Some(Err(malformed("truncated message header")));
        };
        let len = len as usize;
        if len < NLMSG_HDR_LEN || len > rest.len() {
            rest = &[];
            return Some(Err(malformed("message length out of bounds")));
        }
        let payload = &rest[NLMSG_HDR_LEN..len];
        rest = rest.get(align(len)..).unwrap_or_default();
        Some(Ok((msg_type, seq, flags, payload)))
    })
}

/// What a route message says before its attributes, with `RTA_TABLE` folded in.
struct Header<'p> {
    family: u8,
    prefix_len: u8,
    table: u32,
    route_type: u8,
    attrs: &'p [u8],
}

impl<'p> Header<'p> {
    fn read(payload: &'p [u8]) -> io::Result<Header<'p>> {
        let fixed = payload
            .get(..RTMSG_LEN)
            .ok_or_else(|| malformed("truncated rtmsg"))?;
        let attrs = &payload[RTMSG_LEN..];
        let mut header = Header {
            family: fixed[0],
            prefix_len: fixed[1],
            table: u32::from(fixed[4]),
            route_type: fixed[7],
            attrs,
        };
        for attr in attributes(attrs) {
            let (kind, body) = attr?;
            if kind == libc::RTA_TABLE {
                header.table = read_u32(body, 0).ok_or_else(|| malformed("short RTA_TABLE"))?;
            }
        }
        Ok(header)
    }
}

/// One route message of table `table`: `None` when it is of another table or family, or
/// not a unicast route (blackholes, locals…).
fn parse_route(payload: &[u8], table: u32) -> io::Result<Option<KernelRoute>> {
    let header = Header::read(payload)?;
    if header.family != AF_INET
        || header.table != table
        || header.route_type != libc::RTN_UNICAST
        || header.prefix_len > 32
    {
        return Ok(None);
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateways = Vec::new();
    for attr in attributes(header.attrs) {
        let (kind, body) = attr?;
        match kind {
            libc::RTA_DST => dst = ipv4(body)?,
            libc::RTA_GATEWAY => gateways.push(ipv4(body)?),
            libc::RTA_MULTIPATH => {
                let mut rest = body;
                while rest.len() >= RTNH_LEN {
                    let len = usize::from(read_u16(rest, 0).unwrap_or(0));
                    if len < RTNH_LEN || len > rest.len() {
                        return Err(malformed("rtnexthop length out of bounds"));
                    }
                    for nested in attributes(&rest[RTNH_LEN..len]) {
                        let (kind, body) = nested?;
                        if kind == libc::RTA_GATEWAY {
                            gateways.push(ipv4(body)?);
                        }
                    }
                    rest = rest.get(align(len)..).unwrap_or_default();
                }
            }
            _ => {}
        }
    }
    Ok(Some(KernelRoute {
        dst,
        prefix_len: header.prefix_len,
        gateways,
    }))
}

/// The attributes of a message: (type without the nested/byte-order flags, body) each.
fn attributes(bytes: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.len() < NLA_HDR_LEN {
            return None;
        }
        let (Some(len), Some(kind)) = (read_u16(rest, 0), read_u16(rest, 2)) else {
            return None;
        };
        let len = usize::from(len);
        if len < NLA_HDR_LEN || len > rest.len() {
            rest = &[];
            return Some(Err(malformed("attribute length out of bounds")));
        }
        let body = &rest[NLA_HDR_LEN..len];
        rest = rest.get(align(len)..).unwrap_or_default();
        Some(Ok((kind & 0x3fff, body)))
    })
}

fn ipv4(body: &[u8]) -> io::Result<Ipv4Addr> {
    let octets: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("short IPv4 address"))?;
    Ok(Ipv4Addr::from(octets))
}

fn send(fd: &OwnedFd, message: &[u8]) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_nl; port id 0 addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `message` is valid for reads of its length and `kernel` is a valid
    // sockaddr_nl of the size passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            crate::netlink::socklen_of::<libc::sockaddr_nl>(),
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` has something to read within `timeout`.
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd, and the count passed is 1.
        let rc = unsafe { libc::poll(&mut pollfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn recv<'b>(fd: &OwnedFd, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    loop {
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        let received = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        match usize::try_from(received) {
            Ok(0) => return Err(malformed("empty datagram")),
            Ok(n) => return Ok(buf.get(..n).unwrap_or_default()),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// One datagram if one is queued, else `None`.
fn recv_nonblocking<'b>(fd: &OwnedFd, buf: &'b mut [u8]) -> io::Result<Option<&'b [u8]>> {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call.
    let received = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    match usize::try_from(received) {
        Ok(0) => Err(malformed("empty datagram")),
        Ok(n) => Ok(Some(buf.get(..n).unwrap_or_default())),
        Err(_) => {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                Some(libc::EINTR) => Ok(Some(&[])),
                _ => Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route message as the kernel sends it: header, rtmsg, attributes.
    fn route_message(
        msg_type: u16,
        seq: u32,
        prefix_len: u8,
        table: u32,
        route_type: u8,
        attrs: &[(u16, Vec<u8>)],
    ) -> Vec<u8> {
        let mut body = vec![
            AF_INET,
            prefix_len,
            0,
            0,
            if table > 255 { 252 } else { table as u8 },
            12, // proto bird
            0,
            route_type,
        ];
        body.extend_from_slice(&0u32.to_ne_bytes());
        let mut all = attrs.to_vec();
        if table > 255 {
            all.push((libc::RTA_TABLE, table.to_ne_bytes().to_vec()));
        }
        for (kind, payload) in all {
            body.extend_from_slice(&((NLA_HDR_LEN + payload.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(&payload);
            body.resize(align(body.len()), 0);
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDR_LEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&msg_type.to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        msg
    }

    fn done(seq: u32) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&20u32.to_ne_bytes());
        msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&0i32.to_ne_bytes());
        msg
    }

    /// `rtnexthop` with one `RTA_GATEWAY`.
    fn nexthop(gw: [u8; 4], ifindex: i32) -> Vec<u8> {
        let mut hop = Vec::new();
        hop.extend_from_slice(&16u16.to_ne_bytes());
        hop.extend_from_slice(&[4, 0]); // RTNH_F_ONLINK, hops
        hop.extend_from_slice(&ifindex.to_ne_bytes());
        hop.extend_from_slice(&8u16.to_ne_bytes());
        hop.extend_from_slice(&libc::RTA_GATEWAY.to_ne_bytes());
        hop.extend_from_slice(&gw);
        hop
    }

    #[test]
    fn a_dump_keeps_the_unicast_routes_of_one_table() {
        const TABLE: u32 = 30583;
        let mut datagram = Vec::new();
        // 10.65.1.0/26 via 192.168.1.2 dev #2 onlink, in table 30583 (RTA_TABLE).
        datagram.extend(route_message(
            libc::RTM_NEWROUTE,
            7,
            26,
            TABLE,
            libc::RTN_UNICAST,
            &[
                (libc::RTA_DST, vec![10, 65, 1, 0]),
                (libc::RTA_GATEWAY, vec![192, 168, 1, 2]),
                (libc::RTA_OIF, 2u32.to_ne_bytes().to_vec()),
            ],
        ));
        // The main table's default route: another table.
        datagram.extend(route_message(
            libc::RTM_NEWROUTE,
            7,
            0,
            254,
            libc::RTN_UNICAST,
            &[(libc::RTA_GATEWAY, vec![192, 168, 0, 254])],
        ));
        // A blackhole in the table: not unicast.
        datagram.extend(route_message(
            libc::RTM_NEWROUTE,
            7,
            26,
            TABLE,
            libc::RTN_BLACKHOLE,
            &[(libc::RTA_DST, vec![10, 65, 0, 0])],
        ));
        // An ECMP route: both next hops.
        let mut hops = nexthop([192, 168, 0, 2], 2);
        hops.extend(nexthop([192, 168, 0, 3], 2));
        datagram.extend(route_message(
            libc::RTM_NEWROUTE,
            7,
            24,
            TABLE,
            libc::RTN_UNICAST,
            &[
                (libc::RTA_DST, vec![10, 66, 0, 0]),
                (libc::RTA_MULTIPATH | 0x8000, hops),
            ],
        ));
        let mut routes = Vec::new();
        assert!(!parse_routes(&datagram, TABLE, 7, &mut routes).unwrap());
        assert!(parse_routes(&done(7), TABLE, 7, &mut routes).unwrap());
        assert_eq!(
            routes,
            [
                KernelRoute {
                    dst: Ipv4Addr::new(10, 65, 1, 0),
                    prefix_len: 26,
                    gateways: vec![Ipv4Addr::new(192, 168, 1, 2)],
                },
                KernelRoute {
                    dst: Ipv4Addr::new(10, 66, 0, 0),
                    prefix_len: 24,
                    gateways: vec![Ipv4Addr::new(192, 168, 0, 2), Ipv4Addr::new(192, 168, 0, 3)],
                },
            ]
        );
        // Another request's messages are not ours.
        let mut other = Vec::new();
        assert!(!parse_routes(&done(8), TABLE, 7, &mut other).unwrap());
        // Notifications name the tables they touch.
        assert_eq!(tables_touched(&datagram).unwrap(), [TABLE, 254]);
    }

    #[test]
    fn a_refused_dump_is_the_kernels_error() {
        let mut msg = Vec::new();
        msg.extend_from_slice(&36u32.to_ne_bytes());
        msg.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        msg.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
        msg.extend_from_slice(&3u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        msg.extend_from_slice(&[0; 16]);
        let err = parse_routes(&msg, 1, 3, &mut Vec::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        let good = route_message(
            libc::RTM_NEWROUTE,
            1,
            26,
            30583,
            libc::RTN_UNICAST,
            &[
                (libc::RTA_DST, vec![10, 65, 1, 0]),
                (libc::RTA_GATEWAY, vec![1, 2, 3, 4]),
            ],
        );
        for cut in 1..good.len() {
            let mut routes = Vec::new();
            assert!(
                parse_routes(&good[..cut], 30583, 1, &mut routes).is_err(),
                "cut at {cut}"
            );
            assert!(tables_touched(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = good.clone();
        lying[NLMSG_HDR_LEN + RTMSG_LEN..NLMSG_HDR_LEN + RTMSG_LEN + 2]
            .copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_routes(&lying, 30583, 1, &mut Vec::new()).is_err());
    }

    #[test]
    fn the_dump_request_asks_for_every_ipv4_route() {
        let msg = encode_dump_request(9);
        assert_eq!(msg.len(), 28);
        assert_eq!(read_u32(&msg, 0), Some(28));
        assert_eq!(read_u16(&msg, 4), Some(libc::RTM_GETROUTE));
        assert_eq!(read_u16(&msg, 6), Some(0x301)); // NLM_F_REQUEST | NLM_F_DUMP
        assert_eq!(read_u32(&msg, 8), Some(9));
        assert_eq!(msg[16], AF_INET);
    }
}
