//! Resolves peers' underlay MACs with our own ARP on the underlay interface, for
//! unencapsulated routes (the frame goes to the peer's MAC through the packet socket, so
//! the kernel's neighbour table is not involved).
//!
//! A thread owns an ARP packet socket. It is given the set of peer addresses wanted,
//! asks for the ones it has not resolved (every 500 ms until answered), refreshes resolved
//! ones every 30 s, and reports each answer through a callback.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::io::ArpSocket;
use crate::packet::{
    emit_arp, emit_ethernet, ArpPacket, EthernetFrame, Mac, ARP_IPV4_LEN, ARP_REPLY, ARP_REQUEST,
    BROADCAST_MAC, ETHERTYPE_ARP, ETH_HEADER_LEN,
};

const RETRY: Duration = Duration::from_millis(500);
const REFRESH: Duration = Duration::from_secs(30);

/// One answer: `ip` is at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// Starts the resolver thread. Send it the full set of wanted addresses whenever it
/// changes; `report` is called for every answer and stops the thread when it returns false.
pub fn spawn(
    ifindex: u32,
    own_ip: Ipv4Addr,
    own_mac: Mac,
    report: impl Fn(Resolved) -> bool + Send + 'static,
) -> io::Result<Sender<Vec<Ipv4Addr>>> {
    let socket = ArpSocket::open(ifindex)?;
    let (tx, rx) = mpsc::channel::<Vec<Ipv4Addr>>();
    std::thread::Builder::new()
        .name("tapwire-arp".into())
        .spawn(move || {
            // ip -> when it was last answered
            let mut wanted: HashMap<Ipv4Addr, Option<Instant>> = HashMap::new();
            let mut buf = [0u8; 1514];
            loop {
                match rx.recv_timeout(RETRY) {
                    Ok(set) => {
                        wanted.retain(|ip, _| set.contains(ip));
                        for ip in set {
                            wanted.entry(ip).or_insert(None);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                for (ip, answered) in &wanted {
                    if answered.is_none_or(|t| t.elapsed() >= REFRESH) {
                        let _ = socket.send(&request(own_mac, own_ip, *ip));
                    }
                }
                // Collect answers for a short while.
                let deadline = Instant::now() + Duration::from_millis(100);
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    if !socket
                        .wait_readable(left.as_millis() as i32)
                        .unwrap_or(false)
                    {
                        break;
                    }
                    let Ok(Some(n)) = socket.recv(&mut buf) else {
                        continue;
                    };
                    let Some(answer) = parse_reply(&buf[..n]) else {
                        continue;
                    };
                    if let Some(answered) = wanted.get_mut(&answer.ip) {
                        *answered = Some(Instant::now());
                        if !report(answer) {
                            return;
                        }
                    }
                }
            }
        })?;
    Ok(tx)
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

fn parse_reply(frame: &[u8]) -> Option<Resolved> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != ETHERTYPE_ARP {
        return None;
    }
    let arp = ArpPacket::new_checked(eth.payload()).ok()?;
    (arp.operation() == ARP_REPLY).then(|| Resolved {
        ip: arp.sender_ip(),
        mac: arp.sender_mac(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_to_our_request_resolves() {
        let us = ([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 168, 0, 1));
        let peer = ([2, 0, 0, 0, 0, 2], Ipv4Addr::new(192, 168, 0, 2));
        let req = request(us.0, us.1, peer.1);
        assert_eq!(parse_reply(&req), None, "a request is not an answer");
        let mut reply = [0u8; ETH_HEADER_LEN + ARP_IPV4_LEN];
        emit_ethernet(&mut reply, us.0, peer.0, ETHERTYPE_ARP);
        emit_arp(&mut reply[ETH_HEADER_LEN..], ARP_REPLY, peer, us);
        assert_eq!(
            parse_reply(&reply),
            Some(Resolved {
                ip: peer.1,
                mac: peer.0
            })
        );
    }
}
