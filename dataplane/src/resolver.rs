//! Finds where unencapsulated frames to each peer go on the underlay: the next hop the
//! node's own routing gives for the peer's address (the peer itself when it is on the
//! link, else the gateway — what `ip route get PEER` says in the node's namespace), and
//! that next hop's MAC, found with our own ARP on the underlay interface. The frames leave
//! on a packet socket, so the kernel's neighbour table is not involved.
//!
//! A thread owns an ARP packet socket, a netlink socket for route lookups and a
//! [`RouteWatch`]. After every publish the state thread sends it the peers some route
//! reaches unencapsulated ([`wanted_peers`]; the kernel sends IPIP and VXLAN itself and
//! resolves their next hops on its own). The thread looks up the next hop of each new
//! peer, and of every peer again as soon as the kernel reports a route, address or link
//! change (once per burst of changes) and every [`RECHECK`] regardless. It asks for each next hop's MAC until
//! answered ([`RETRY`]), then refreshes it — every [`REFRESH_GATEWAY`] for a gateway,
//! which carries many peers' traffic, every [`REFRESH_ON_LINK`] for a peer on the link —
//! and learns from any ARP a next hop sends (the announcement of a new MAC, or its own
//! request). Every change of the MAC a peer's frames go to (found, changed, or gone with
//! its route) is reported as a [`Resolved`].
//!
//! [`Neighbors`] holds that bookkeeping without I/O or a clock of its own (time is passed
//! in), and [`next_hop`] reads a route; both are tested without sockets.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::Ipv4Addr;
use std::sync::mpsc::{self, Sender, TryRecvError};
use std::time::{Duration, Instant};

use tapwire_sys::netlink::{Netlink, RouteLookup, RouteWatch};

use crate::io::ArpSocket;
use crate::packet::{
    emit_arp, emit_ethernet, ArpPacket, EthernetFrame, Mac, ARP_IPV4_LEN, ARP_REQUEST,
    BROADCAST_MAC, ETHERTYPE_ARP, ETH_HEADER_LEN,
};
use crate::tables::{Encap, RouteTarget, Tables};

/// How often an unanswered next hop is asked again.
pub const RETRY: Duration = Duration::from_millis(500);
/// How often a gateway's MAC is asked again once known: a gateway that changes its MAC
/// without announcing it stops every peer behind it, so it is checked often (there are
/// few gateways).
pub const REFRESH_GATEWAY: Duration = Duration::from_secs(5);
/// How often a peer's own MAC is asked again once known (there may be thousands).
pub const REFRESH_ON_LINK: Duration = Duration::from_secs(30);
/// How often every next hop is looked up again, even without a change notification.
pub const RECHECK: Duration = Duration::from_secs(30);
/// The least time between two lookups of every next hop: a burst of route changes (a
/// routing daemon's sync) costs one lookup per peer, not one per change.
const RECHECK_AFTER_CHANGE: Duration = Duration::from_millis(100);
/// The longest the thread waits for ARP before it looks at its other inputs again.
const POLL_MS: i32 = 100;

/// A change of where unencapsulated frames to `peer` (its underlay address) go: to `mac`
/// (its own, or its gateway's), or — `None` — nowhere until resolved again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub peer: Ipv4Addr,
    pub mac: Option<Mac>,
}

/// The underlay addresses of the peers some route of `tables` reaches with a frame
/// addressed on the underlay — unencapsulated, or IPIP (sent framed on the packet socket,
/// through the raw socket only until its next hop is resolved): the resolver's wanted set.
/// VXLAN leaves through the node's kernel, which resolves its own neighbours.
pub fn wanted_peers(tables: &Tables) -> Vec<Ipv4Addr> {
    let mut wanted = vec![false; tables.peers.len()];
    for (_, target) in tables.fib.iter() {
        if let RouteTarget::RemoteNode {
            peer,
            encap: Encap::None | Encap::Ipip,
        } = target
        {
            if let Some(w) = wanted.get_mut(*peer as usize) {
                *w = true;
            }
        }
    }
    tables
        .peers
        .iter()
        .zip(wanted)
        .filter(|(_, wanted)| *wanted)
        .map(|(peer, _)| peer.underlay_ip)
        .collect()
}

/// Why a peer has no next hop on the underlay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoNextHop {
    /// Local, broadcast, blackhole, prohibit, …
    #[error("its route is not a unicast route")]
    NotUnicast,
    /// Another interface: the packet socket sends on the underlay only.
    #[error("its route leaves through interface index {0:?}, not the underlay interface")]
    OtherInterface(Option<u32>),
}

/// The next hop of frames to `peer` by the kernel's `route` to it: the gateway the route
/// names, or the peer itself when the route has none (on the link). Only a unicast route
/// out of the underlay interface (`underlay_ifindex`) will do.
pub fn next_hop(
    peer: Ipv4Addr,
    route: &RouteLookup,
    underlay_ifindex: u32,
) -> Result<Ipv4Addr, NoNextHop> {
    if !route.unicast {
        return Err(NoNextHop::NotUnicast);
    }
    if route.oif != Some(underlay_ifindex) {
        return Err(NoNextHop::OtherInterface(route.oif));
    }
    Ok(route.gateway.unwrap_or(peer))
}

/// What the resolver knows of one next hop.
#[derive(Debug, Clone, Default)]
struct Hop {
    mac: Option<Mac>,
    /// Wanted peers whose next hop this is.
    users: usize,
    /// Of those, the peers that are not the hop itself: it is their gateway.
    behind: usize,
    asked: Option<Instant>,
    answered: Option<Instant>,
}

/// The resolver's bookkeeping: the wanted peers, each one's next hop, and each next hop's
/// MAC. Pure: the thread feeds it route lookups, ARP it received and the time.
#[derive(Debug, Default)]
pub struct Neighbors {
    /// Each wanted peer's next hop; `None` while it has none through the underlay.
    peers: HashMap<Ipv4Addr, Option<Ipv4Addr>>,
    /// Each next hop some wanted peer uses.
    hops: HashMap<Ipv4Addr, Hop>,
}

impl Neighbors {
    /// Makes `wanted` the set of wanted peers. Returns the peers new to it (whose next
    /// hop is to be looked up) and the withdrawals of those no longer wanted.
    pub fn set_wanted(&mut self, wanted: &[Ipv4Addr]) -> (Vec<Ipv4Addr>, Vec<Resolved>) {
        let wanted: HashSet<Ipv4Addr> = wanted.iter().copied().collect();
        let gone: Vec<Ipv4Addr> = self
            .peers
            .keys()
            .filter(|peer| !wanted.contains(peer))
            .copied()
            .collect();
        let withdrawn = gone
            .into_iter()
            .filter_map(|peer| {
                let was = self.mac_of(peer);
                self.unlink(peer);
                self.peers.remove(&peer);
                was.map(|_| Resolved { peer, mac: None })
            })
            .collect();
        let mut new: Vec<Ipv4Addr> = wanted
            .into_iter()
            .filter(|peer| !self.peers.contains_key(peer))
            .collect();
        new.sort_unstable();
        for peer in &new {
            self.peers.insert(*peer, None);
        }
        (new, withdrawn)
    }

    /// Every wanted peer, to look up again after a route change.
    pub fn peers(&self) -> Vec<Ipv4Addr> {
        let mut peers: Vec<Ipv4Addr> = self.peers.keys().copied().collect();
        peers.sort_unstable();
        peers
    }

    /// `peer`'s next hop, if it is wanted and has one.
    pub fn next_hop_of(&self, peer: Ipv4Addr) -> Option<Ipv4Addr> {
        self.peers.get(&peer).copied().flatten()
    }

    /// The MAC `peer`'s frames go to now, if any.
    pub fn mac_of(&self, peer: Ipv4Addr) -> Option<Mac> {
        self.hops.get(&self.next_hop_of(peer)?)?.mac
    }

    /// Records the next hop of wanted peer `peer` (`None`: it has none through the
    /// underlay). Returns the report if the MAC its frames go to changed: the new hop's,
    /// when it is already known (a second peer behind a resolved gateway), else `None`
    /// until that hop answers.
    pub fn set_next_hop(&mut self, peer: Ipv4Addr, hop: Option<Ipv4Addr>) -> Option<Resolved> {
        let current = self.peers.get(&peer)?;
        if *current == hop {
            return None;
        }
        let was = self.mac_of(peer);
        self.unlink(peer);
        self.peers.insert(peer, hop);
        if let Some(hop) = hop {
            let entry = self.hops.entry(hop).or_default();
            entry.users += 1;
            if hop != peer {
                entry.behind += 1;
            }
        }
        let now = self.mac_of(peer);
        (now != was).then_some(Resolved { peer, mac: now })
    }

    /// Takes `peer` off its next hop, forgetting the hop once nobody uses it.
    fn unlink(&mut self, peer: Ipv4Addr) {
        let Some(hop) = self.next_hop_of(peer) else {
            return;
        };
        if let Some(entry) = self.hops.get_mut(&hop) {
            entry.users = entry.users.saturating_sub(1);
            if hop != peer {
                entry.behind = entry.behind.saturating_sub(1);
            }
            if entry.users == 0 {
                self.hops.remove(&hop);
            }
        }
    }

    /// The next hops to ask for at `now`, recorded as asked: unresolved ones every
    /// [`RETRY`], resolved ones once their refresh interval has passed.
    pub fn due(&mut self, now: Instant) -> Vec<Ipv4Addr> {
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let mut due = Vec::new();
        for (ip, hop) in &mut self.hops {
            let retry = since(hop.asked).is_none_or(|d| d >= RETRY);
            let stale = match hop.mac {
                None => true,
                Some(_) => {
                    let refresh = if hop.behind > 0 {
                        REFRESH_GATEWAY
                    } else {
                        REFRESH_ON_LINK
                    };
                    since(hop.answered).is_none_or(|d| d >= refresh)
                }
            };
            if retry && stale {
                hop.asked = Some(now);
                due.push(*ip);
            }
        }
        due.sort_unstable();
        due
    }

    /// `ip` said it is at `mac` (an answer, an announcement or its own request). Returns
    /// a report for every peer whose frames now go to another MAC.
    pub fn learned(&mut self, ip: Ipv4Addr, mac: Mac, now: Instant) -> Vec<Resolved> {
        let Some(hop) = self.hops.get_mut(&ip) else {
            return Vec::new();
        };
        hop.answered = Some(now);
        if hop.mac == Some(mac) {
            return Vec::new();
        }
        hop.mac = Some(mac);
        let mut reports: Vec<Resolved> = self
            .peers
            .iter()
            .filter(|(_, hop)| **hop == Some(ip))
            .map(|(peer, _)| Resolved {
                peer: *peer,
                mac: Some(mac),
            })
            .collect();
        reports.sort_unstable_by_key(|r| r.peer);
        reports
    }
}

/// The underlay interface the resolver works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnderlayLink {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// Starts the resolver thread in the calling thread's network namespace (the node's).
/// Send it [`wanted_peers`] whenever it may have changed; `report` is called for every
/// [`Resolved`] and stops the thread when it returns false.
pub fn spawn(
    underlay: UnderlayLink,
    report: impl Fn(Resolved) -> bool + Send + 'static,
) -> io::Result<Sender<Vec<Ipv4Addr>>> {
    let socket = ArpSocket::open(underlay.ifindex)?;
    let routes = Netlink::open()?;
    let watch = RouteWatch::open()?;
    let (tx, rx) = mpsc::channel::<Vec<Ipv4Addr>>();
    std::thread::Builder::new()
        .name("tapwire-arp".into())
        .spawn(move || {
            let mut thread = Resolver {
                underlay,
                socket,
                routes,
                watch,
                neighbors: Neighbors::default(),
                last_recheck: Instant::now(),
                routes_changed: false,
            };
            loop {
                let mut newest = None;
                loop {
                    match rx.try_recv() {
                        Ok(set) => newest = Some(set),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
                if !thread.round(newest.as_deref()).into_iter().all(&report) {
                    return;
                }
                if !thread.receive().into_iter().all(&report) {
                    return;
                }
            }
        })?;
    Ok(tx)
}

/// The resolver thread's sockets and state.
struct Resolver {
    underlay: UnderlayLink,
    socket: ArpSocket,
    routes: Netlink,
    watch: RouteWatch,
    neighbors: Neighbors,
    last_recheck: Instant,
    /// The kernel reported a change not yet looked at.
    routes_changed: bool,
}

impl Resolver {
    /// Takes a new wanted set (if any), looks up the next hops that need it and sends
    /// the requests that are due; returns what changed.
    fn round(&mut self, wanted: Option<&[Ipv4Addr]>) -> Vec<Resolved> {
        let mut reports = Vec::new();
        let mut new = Vec::new();
        if let Some(wanted) = wanted {
            let (added, withdrawn) = self.neighbors.set_wanted(wanted);
            new = added;
            reports.extend(withdrawn);
        }
        self.routes_changed |= self.watch.changed().unwrap_or_else(|err| {
            tracing::warn!(%err, "reading route change notifications failed; looking up every next hop again");
            true
        });
        let since = self.last_recheck.elapsed();
        let lookup = if (self.routes_changed && since >= RECHECK_AFTER_CHANGE) || since >= RECHECK {
            self.routes_changed = false;
            self.last_recheck = Instant::now();
            self.neighbors.peers()
        } else {
            new.clone()
        };
        for peer in lookup {
            // `new` is sorted.
            let first = new.binary_search(&peer).is_ok();
            let hop = self.look_up(peer, first);
            reports.extend(self.neighbors.set_next_hop(peer, hop));
        }
        for hop in self.neighbors.due(Instant::now()) {
            let _ = self
                .socket
                .send(&request(self.underlay.mac, self.underlay.ip, hop));
        }
        reports
    }

    /// The next hop of `peer` by the kernel's route. Logged when it changes (the first
    /// lookup of a peer only in debug, or when there is none).
    fn look_up(&mut self, peer: Ipv4Addr, first: bool) -> Option<Ipv4Addr> {
        let found = match self.routes.route_get(peer) {
            Ok(route) => next_hop(peer, &route, self.underlay.ifindex).map_err(|e| e.to_string()),
            Err(err) => Err(format!("no route: {err}")),
        };
        let hop = found.as_ref().ok().copied();
        if first || hop != self.neighbors.next_hop_of(peer) {
            match &found {
                Ok(via) if first => tracing::debug!(%peer, %via, "next hop"),
                Ok(via) if *via == peer => tracing::info!(%peer, "peer now on the underlay link"),
                Ok(via) => tracing::info!(%peer, %via, "peer now reached through a gateway"),
                Err(why) => {
                    tracing::warn!(%peer, %why, "no next hop on the underlay; unencapsulated traffic to the peer is dropped")
                }
            }
        }
        hop
    }

    /// Waits up to [`POLL_MS`] for ARP and learns from all of it.
    fn receive(&mut self) -> Vec<Resolved> {
        let mut reports = Vec::new();
        if !self.socket.wait_readable(POLL_MS).unwrap_or(false) {
            return reports;
        }
        let mut buf = [0u8; 1514];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(Some(n)) => {
                    if let Some((ip, mac)) = buf.get(..n).and_then(sender) {
                        reports.extend(self.neighbors.learned(ip, mac, Instant::now()));
                    }
                }
                Ok(None) => {}            // our own request, seen going out
                Err(_) => return reports, // drained (the socket does not block)
            }
        }
    }
}

fn request(
    own_mac: Mac,
    own_ip: Ipv4Addr,
    target: Ipv4Addr,
) -> [u8; ETH_HEADER_LEN + ARP_IPV4_LEN] {
    let mut frame = [0u8; ETH_HEADER_LEN + ARP_IPV4_LEN];
    emit_ethernet(&mut frame, BROADCAST_MAC, own_mac, ETHERTYPE_ARP);
    emit_arp(
        &mut frame[ETH_HEADER_LEN..],
        ARP_REQUEST,
        (own_mac, own_ip),
        ([0; 6], target),
    );
    frame
}

/// The sender of an ARP frame, request or reply: whoever sends ARP says where it is (as
/// the kernel's neighbour table also learns from requests and announcements).
fn sender(frame: &[u8]) -> Option<(Ipv4Addr, Mac)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != ETHERTYPE_ARP {
        return None;
    }
    let arp = ArpPacket::new_checked(eth.payload()).ok()?;
    Some((arp.sender_ip(), arp.sender_mac()))
}

#[cfg(test)]
mod tests;
