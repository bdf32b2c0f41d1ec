//! The packet trace (`tapwirectl trace`), as VPP's packet trace: the next N packets' walk
//! through a worker — where each was received, what it parsed as, the route looked up,
//! the action `forward` returned and the counters that action touches.
//!
//! Two halves. [`Trace`] is the workers': one word says whether a trace is armed, for
//! which endpoint and how many packets are left. A worker reads it once per batch with a
//! relaxed load ([`Trace::armed`]); only while armed does it summarise a packet before
//! `forward` changes it ([`PacketSummary`]), and turn the action `forward` returned into a
//! [`TraceRecord`] (plain `Copy` data: slots and addresses, no names), which it pushes
//! into a bounded, preallocated channel without ever blocking (a full channel drops the
//! record and counts it). `forward` stays as it is: the record is built from what it
//! returned plus what the worker knows.
//!
//! [`Tracer`] is the state thread's: it arms a trace when control's
//! [`proto::TraceRequest`] arrives, drains the channel, names slots and peers from the
//! current tables, and produces the [`proto::TraceRecord`]s and the final
//! [`proto::TraceDone`] (all packets traced, time up, replaced by a newer trace).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapwire_proto::{self as proto, from_dataplane::Payload};

use crate::fib::Prefix;
use crate::forward::{DropReason, Inbound, Outbound};
use crate::offload::{self, VnetHdr};
use crate::packet::{
    parse_vxlan, transport_ports, ArpPacket, EthernetFrame, Ipv4Packet, ETHERTYPE_ARP,
    ETHERTYPE_IPV4, IPPROTO_ICMP, IPPROTO_IPIP, VXLAN_HEADER_LEN,
};
use crate::tables::{Encap, EndpointIdx, RouteTarget, Tables};

/// Records buffered between the workers and the state thread: more than one trace holds,
/// so a full buffer means the state thread fell behind.
const CAPACITY: usize = 1024;
const _: () = assert!(CAPACITY >= proto::MAX_TRACE_PACKETS as usize);
/// The filter value for "every packet".
const ANY: u32 = u32::MAX;
/// How often the state thread drains records while a trace is armed.
const POLL: Duration = Duration::from_millis(10);
/// After the last packet was claimed, how long the state thread waits for its record
/// (a worker claims, then pushes) before ending the trace without it.
const LAST_RECORD_GRACE: Duration = Duration::from_millis(50);

/// The workers' half: shared by every worker and the [`Tracer`].
#[derive(Debug)]
pub struct Trace {
    /// `session << 48 | remaining << 32 | filter`: the trace being recorded, how many
    /// packets it still takes (0: not armed) and the endpoint slot a packet must come from
    /// or go to ([`ANY`]: every packet). One word, so a claim sees all three at once.
    word: AtomicU64,
    records: SyncSender<TraceRecord>,
    /// Records lost to a full channel.
    dropped: AtomicU64,
}

fn pack(session: u16, remaining: u16, filter: u32) -> u64 {
    u64::from(session) << 48 | u64::from(remaining) << 32 | u64::from(filter)
}

fn unpack(word: u64) -> (u16, u16, u32) {
    ((word >> 48) as u16, (word >> 32) as u16, word as u32)
}

impl Trace {
    fn new() -> (Trace, Receiver<TraceRecord>) {
        let (records, receiver) = mpsc::sync_channel(CAPACITY);
        let trace = Trace {
            word: AtomicU64::new(0),
            records,
            dropped: AtomicU64::new(0),
        };
        (trace, receiver)
    }

    /// Whether a trace is armed: the one check on the packet path when none is, made
    /// once per batch.
    #[inline]
    pub fn armed(&self) -> bool {
        unpack(self.word.load(Ordering::Relaxed)).1 != 0
    }

    /// Records a packet a pod or the host path sent (if the trace still wants one that
    /// matches). `packet` was summarised before `forward` ran.
    pub fn outbound(
        &self,
        worker: usize,
        tables: &Tables,
        ingress: Ingress,
        packet: PacketSummary,
        action: &Outbound,
    ) {
        self.offer(worker, tables, ingress, packet, Decision::outbound(action));
    }

    /// Records a packet from the underlay (tunnel or packet socket), as
    /// [`Trace::outbound`] does. Frames left to the kernel (`Inbound::Ignore`) are not
    /// tapwire's and are not traced.
    pub fn inbound(
        &self,
        worker: usize,
        tables: &Tables,
        ingress: Ingress,
        packet: PacketSummary,
        action: &Inbound,
    ) {
        if let Some(decision) = Decision::inbound(action) {
            self.offer(worker, tables, ingress, packet, decision);
        }
    }

    fn offer(
        &self,
        worker: usize,
        tables: &Tables,
        ingress: Ingress,
        packet: PacketSummary,
        mut decision: Decision,
    ) {
        let route = RouteSummary::lookup(tables, &packet);
        // Unencapsulated sends name no address: the route's peer is where it goes.
        if let (Decision::Peer { ip: None, encap }, Some(route)) = (decision, &route) {
            if let RouteTo::Remote { peer_ip, .. } = route.target {
                decision = Decision::Peer {
                    ip: Some(peer_ip),
                    encap,
                };
            }
        }
        let endpoints = [
            match ingress {
                Ingress::Pod(slot) => Some(slot),
                _ => None,
            },
            match decision {
                Decision::Deliver(slot) => Some(slot),
                _ => None,
            },
            route.and_then(|r| match r.target {
                RouteTo::Local(slot) => Some(slot),
                _ => None,
            }),
        ];
        let Some(session) = self.claim(&endpoints) else {
            return;
        };
        let record = TraceRecord {
            session,
            worker: u16::try_from(worker).unwrap_or(u16::MAX),
            at: Instant::now(),
            ingress,
            packet,
            route,
            decision,
        };
        if self.records.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes one of the packets the armed trace still wants, if one of `endpoints` passes
    /// its filter; returns the trace's session.
    fn claim(&self, endpoints: &[Option<EndpointIdx>]) -> Option<u16> {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let (session, remaining, filter) = unpack(word);
            if remaining == 0 || (filter != ANY && !endpoints.contains(&Some(filter))) {
                return None;
            }
            let claimed = pack(session, remaining - 1, filter);
            match self.word.compare_exchange_weak(
                word,
                claimed,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(session),
                Err(now) => word = now,
            }
        }
    }

    fn arm(&self, session: u16, count: u16, filter: Option<EndpointIdx>) {
        self.word.store(
            pack(session, count, filter.unwrap_or(ANY)),
            Ordering::Relaxed,
        );
    }

    fn disarm(&self, session: u16) {
        self.word.store(pack(session, 0, ANY), Ordering::Relaxed);
    }

    /// Records lost because the channel was full, since the dataplane started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where a traced packet entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// A pod's TAP queue (its endpoint slot).
    Pod(EndpointIdx),
    /// The host path TAP.
    Host,
    /// A VXLAN datagram from this underlay address.
    Vxlan { from: Ipv4Addr },
    /// An IPIP packet from this underlay address.
    Ipip { from: Ipv4Addr },
    /// The underlay's packet socket (unencapsulated traffic from a peer).
    Underlay,
}

/// What a packet parsed as when it arrived (for tunnels, the inner packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketSummary {
    /// 0 when there was no Ethernet header to read (IPIP's inner packet has none).
    pub ethertype: u16,
    pub bytes: u32,
    pub l3: L3,
    /// For a TCP super-frame: its segment size and the wire packets it stands for.
    pub gso_size: u16,
    pub segments: u32,
}

/// The network layer of a [`PacketSummary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L3 {
    /// Not IPv4 or ARP, or malformed.
    #[default]
    Unparsed,
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        ttl: u8,
        total_len: u16,
        l4: L4,
    },
    Arp {
        operation: u16,
        sender: Ipv4Addr,
        target: Ipv4Addr,
    },
}

/// The transport header of an IPv4 packet, as far as the trace shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4 {
    #[default]
    None,
    /// TCP or UDP (source, destination).
    Ports(u16, u16),
    /// ICMP type and code; for echo request (8) and reply (0), identifier and sequence.
    Icmp {
        kind: u8,
        code: u8,
        echo: Option<(u16, u16)>,
    },
}

impl PacketSummary {
    /// A frame a pod or the host path wrote (Ethernet), with its virtio-net header.
    pub fn ethernet(frame: &[u8], offload: VnetHdr) -> PacketSummary {
        let mut summary = PacketSummary {
            bytes: len32(frame.len()),
            ..PacketSummary::default()
        };
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return summary;
        };
        summary.ethertype = eth.ethertype();
        summary.l3 = match eth.ethertype() {
            ETHERTYPE_IPV4 => ipv4(eth.payload()),
            ETHERTYPE_ARP => match ArpPacket::new_checked(eth.payload()) {
                Ok(arp) => L3::Arp {
                    operation: arp.operation(),
                    sender: arp.sender_ip(),
                    target: arp.target_ip(),
                },
                Err(_) => L3::Unparsed,
            },
            _ => L3::Unparsed,
        };
        if offload.is_gso() {
            summary.gso_size = offload.gso_size;
            summary.segments = len32(offload::segment_count(frame, offload));
        }
        summary
    }

    /// A VXLAN datagram (the VXLAN header onwards): its inner frame.
    pub fn vxlan(datagram: &[u8]) -> PacketSummary {
        match (parse_vxlan(datagram), datagram.get(VXLAN_HEADER_LEN..)) {
            (Some(_), Some(inner)) => PacketSummary::ethernet(inner, VnetHdr::NONE),
            _ => PacketSummary {
                bytes: len32(datagram.len()),
                ..PacketSummary::default()
            },
        }
    }

    /// An IPIP packet (outer IPv4 header onwards): its sender and its inner packet.
    pub fn ipip(packet: &[u8]) -> (Ingress, PacketSummary) {
        match Ipv4Packet::new_checked(packet) {
            Ok(outer) if outer.protocol() == IPPROTO_IPIP => {
                let inner = outer.payload();
                let summary = PacketSummary {
                    ethertype: 0,
                    bytes: len32(inner.len()),
                    l3: ipv4(inner),
                    ..PacketSummary::default()
                };
                (Ingress::Ipip { from: outer.src() }, summary)
            }
            _ => (
                Ingress::Ipip {
                    from: Ipv4Addr::UNSPECIFIED,
                },
                PacketSummary {
                    bytes: len32(packet.len()),
                    ..PacketSummary::default()
                },
            ),
        }
    }

    fn dst(&self) -> Option<Ipv4Addr> {
        match self.l3 {
            L3::Ipv4 { dst, .. } => Some(dst),
            _ => None,
        }
    }
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn ipv4(bytes: &[u8]) -> L3 {
    let Ok(ip) = Ipv4Packet::new_checked(bytes) else {
        return L3::Unparsed;
    };
    let l4 = if let Some((src, dst)) = transport_ports(&ip) {
        L4::Ports(src, dst)
    } else if ip.protocol() == IPPROTO_ICMP && !ip.is_later_fragment() {
        match ip.payload() {
            [kind, code, _, _, id0, id1, seq0, seq1, ..] => L4::Icmp {
                kind: *kind,
                code: *code,
                echo: matches!(kind, 0 | 8).then(|| {
                    (
                        u16::from_be_bytes([*id0, *id1]),
                        u16::from_be_bytes([*seq0, *seq1]),
                    )
                }),
            },
            [kind, code, ..] => L4::Icmp {
                kind: *kind,
                code: *code,
                echo: None,
            },
            _ => L4::None,
        }
    } else {
        L4::None
    };
    L3::Ipv4 {
        src: ip.src(),
        dst: ip.dst(),
        protocol: ip.protocol(),
        ttl: ip.ttl(),
        total_len: u16::try_from(ip.total_len()).unwrap_or(u16::MAX),
        l4,
    }
}

/// The route a packet's destination matched: the longest prefix holding it and where it
/// leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSummary {
    /// `None` when no route holds the destination.
    pub prefix: Option<Prefix>,
    pub target: RouteTo,
}

/// A route's target, with a peer named by its underlay address (peer indexes are not
/// stable across table versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTo {
    None,
    Local(EndpointIdx),
    Blackhole,
    Remote { peer_ip: Ipv4Addr, encap: Encap },
    Unrouted,
    Host,
}

impl RouteSummary {
    /// Looks the packet's IPv4 destination up again (only while tracing): the value, as
    /// `forward` saw it, and the prefix it is stored under. `None` for a packet that is
    /// not IPv4.
    fn lookup(tables: &Tables, packet: &PacketSummary) -> Option<RouteSummary> {
        let dst = packet.dst()?;
        let Some(target) = tables.fib.lookup(dst) else {
            return Some(RouteSummary {
                prefix: None,
                target: RouteTo::None,
            });
        };
        // The table has no "which prefix matched": the longest one holding `dst` that
        // is stored is it.
        let prefix = (0..=32u8)
            .rev()
            .filter_map(|len| Prefix::new(dst, len).ok())
            .find(|p| tables.fib.get(p).is_some());
        let target = match *target {
            RouteTarget::LocalEndpoint(slot) => RouteTo::Local(slot),
            RouteTarget::Blackhole => RouteTo::Blackhole,
            RouteTarget::RemoteNode { peer, encap } => RouteTo::Remote {
                peer_ip: tables
                    .peer(peer)
                    .map_or(Ipv4Addr::UNSPECIFIED, |p| p.underlay_ip),
                encap,
            },
            RouteTarget::PoolUnrouted => RouteTo::Unrouted,
            RouteTarget::Host => RouteTo::Host,
        };
        Some(RouteSummary { prefix, target })
    }
}

/// What was done with a traced packet: an [`Outbound`] or [`Inbound`] without its buffer
/// ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop {
        reason: DropReason,
        icmp: bool,
    },
    /// An ARP reply on the ingress queue.
    Reply,
    /// To the node's kernel through the host path.
    Host,
    /// To a local pod.
    Deliver(EndpointIdx),
    /// To a peer; `ip` is the route's for unencapsulated sends.
    Peer {
        ip: Option<Ipv4Addr>,
        encap: Encap,
    },
}

impl Decision {
    fn outbound(action: &Outbound) -> Decision {
        match *action {
            Outbound::Drop(reason) => Decision::Drop {
                reason,
                icmp: false,
            },
            Outbound::DropWithIcmp { reason, .. } => Decision::Drop { reason, icmp: true },
            Outbound::Reply { .. } => Decision::Reply,
            Outbound::ToHost { .. } => Decision::Host,
            Outbound::ToPod { endpoint, .. } => Decision::Deliver(endpoint),
            Outbound::ToPeerIpip { dst, .. } => Decision::Peer {
                ip: Some(dst),
                encap: Encap::Ipip,
            },
            Outbound::ToPeerVxlan { dst, .. } => Decision::Peer {
                ip: Some(dst),
                encap: Encap::Vxlan,
            },
            Outbound::ToPeerEthernet { .. } => Decision::Peer {
                ip: None,
                encap: Encap::None,
            },
        }
    }

    fn inbound(action: &Inbound) -> Option<Decision> {
        Some(match *action {
            Inbound::Drop(reason) => Decision::Drop {
                reason,
                icmp: false,
            },
            Inbound::ToHost { .. } => Decision::Host,
            Inbound::ToPod { endpoint, .. } => Decision::Deliver(endpoint),
            Inbound::Ignore => return None,
        })
    }
}

/// One traced packet, as a worker records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceRecord {
    pub session: u16,
    pub worker: u16,
    pub at: Instant,
    pub ingress: Ingress,
    pub packet: PacketSummary,
    /// `None` when no route was looked up (not IPv4).
    pub route: Option<RouteSummary>,
    pub decision: Decision,
}

/// The state thread's half: arms traces, turns records into messages, ends traces.
#[derive(Debug)]
pub struct Tracer {
    trace: Arc<Trace>,
    records: Receiver<TraceRecord>,
    active: Option<Session>,
    next_session: u16,
}

/// The trace being recorded.
#[derive(Debug)]
struct Session {
    id: u16,
    trace_id: u32,
    count: u32,
    sent: u32,
    started: Instant,
    deadline: Instant,
    dropped_before: u64,
    /// When the last packet was found claimed.
    exhausted: Option<Instant>,
}

impl Default for Tracer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracer {
    pub fn new() -> Tracer {
        let (trace, records) = Trace::new();
        Tracer {
            trace: Arc::new(trace),
            records,
            active: None,
            next_session: 1,
        }
    }

    /// The workers' half.
    pub fn trace(&self) -> Arc<Trace> {
        Arc::clone(&self.trace)
    }

    /// Arms the trace control asked for, replacing one still running. `slot` finds the
    /// slot of an attached endpoint. Returns what to tell control now: the end of the
    /// replaced trace, or the refusal of this one (an endpoint that is not attached).
    pub fn start(
        &mut self,
        request: &proto::TraceRequest,
        slot: impl Fn(&str) -> Option<EndpointIdx>,
        now: Instant,
    ) -> Vec<Payload> {
        let mut out = Vec::new();
        if let Some(old) = self.active.take() {
            self.trace.disarm(old.id);
            out.push(self.done(&old, "replaced", String::new()));
        }
        let filter = if request.endpoint.is_empty() {
            None
        } else {
            match slot(&request.endpoint) {
                Some(slot) => Some(slot),
                None => {
                    out.push(Payload::TraceDone(proto::TraceDone {
                        trace_id: request.trace_id,
                        reason: "refused".into(),
                        error: format!(
                            "endpoint {} is not attached to this dataplane",
                            request.endpoint
                        ),
                        ..Default::default()
                    }));
                    return out;
                }
            }
        };
        let count = request.count.clamp(1, proto::MAX_TRACE_PACKETS);
        let id = self.next_session;
        self.next_session = self.next_session.wrapping_add(1).max(1);
        // Left over from an earlier trace: not this one's.
        while self.records.try_recv().is_ok() {}
        let session = Session {
            id,
            trace_id: request.trace_id,
            count,
            sent: 0,
            started: now,
            deadline: now + Duration::from_millis(u64::from(request.timeout_ms.max(1))),
            dropped_before: self.trace.dropped(),
            exhausted: None,
        };
        tracing::info!(
            trace = request.trace_id, count, endpoint = %request.endpoint,
            timeout_ms = request.timeout_ms, "packet trace armed"
        );
        self.trace
            .arm(id, u16::try_from(count).unwrap_or(u16::MAX), filter);
        self.active = Some(session);
        out
    }

    /// The records the workers made since the last call, as messages (names from
    /// `tables`), and the trace's end once every packet is recorded or its time is up.
    pub fn poll(&mut self, tables: &Tables, now: Instant) -> Vec<Payload> {
        let Some(session) = self.active.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Ok(record) = self.records.try_recv() {
            if record.session != session.id || session.sent >= session.count {
                continue;
            }
            session.sent += 1;
            out.push(Payload::TraceRecord(to_message(
                &record,
                session.trace_id,
                session.sent,
                session.started,
                tables,
            )));
        }
        let claimed_all = !self.trace.armed();
        if claimed_all && session.exhausted.is_none() {
            session.exhausted = Some(now);
        }
        let reason = if session.sent >= session.count {
            Some("complete")
        } else if session
            .exhausted
            .is_some_and(|at| now.duration_since(at) >= LAST_RECORD_GRACE)
        {
            // Every packet was claimed but some records were lost (counted).
            Some("complete")
        } else if now >= session.deadline {
            Some("timeout")
        } else {
            None
        };
        if let Some(reason) = reason {
            if let Some(session) = self.active.take() {
                self.trace.disarm(session.id);
                tracing::info!(
                    trace = session.trace_id,
                    records = session.sent,
                    reason,
                    "packet trace ended"
                );
                out.push(self.done(&session, reason, String::new()));
            }
        }
        out
    }

    /// How soon [`Tracer::poll`] should run again; `None` while no trace is armed.
    pub fn next_poll(&self, now: Instant) -> Option<Duration> {
        self.active
            .as_ref()
            .map(|s| POLL.min(s.deadline.saturating_duration_since(now)))
    }

    /// Control went away: the trace ends unannounced (nobody is there to tell).
    pub fn stop(&mut self) {
        if let Some(session) = self.active.take() {
            self.trace.disarm(session.id);
        }
    }

    /// Records lost to a full buffer since the dataplane started.
    pub fn dropped(&self) -> u64 {
        self.trace.dropped()
    }

    fn done(&self, session: &Session, reason: &str, error: String) -> Payload {
        Payload::TraceDone(proto::TraceDone {
            trace_id: session.trace_id,
            records: session.sent,
            dropped: self.trace.dropped().saturating_sub(session.dropped_before),
            reason: reason.into(),
            error,
        })
    }
}

/// The endpoint in slot `slot` of `tables`, by key.
fn endpoint_name(tables: &Tables, slot: EndpointIdx) -> String {
    tables
        .endpoint(slot)
        .map_or_else(|| format!("(slot {slot})"), |e| e.key.clone())
}

/// The node whose underlay address is `ip`, if known.
fn peer_name(tables: &Tables, ip: Ipv4Addr) -> String {
    tables
        .peer_by_underlay
        .get(&ip)
        .and_then(|&p| tables.peer(p))
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// The message for record `index` (1-based) of trace `trace_id`, with endpoints and peers
/// named from `tables` (slots are stable for as long as their pod is attached).
pub fn to_message(
    record: &TraceRecord,
    trace_id: u32,
    index: u32,
    started: Instant,
    tables: &Tables,
) -> proto::TraceRecord {
    let ingress = match record.ingress {
        Ingress::Pod(slot) => proto::TraceIngress {
            kind: "pod".into(),
            endpoint: endpoint_name(tables, slot),
            ..Default::default()
        },
        Ingress::Host => proto::TraceIngress {
            kind: "host".into(),
            ..Default::default()
        },
        Ingress::Vxlan { from } | Ingress::Ipip { from } => proto::TraceIngress {
            kind: if matches!(record.ingress, Ingress::Vxlan { .. }) {
                "vxlan"
            } else {
                "ipip"
            }
            .into(),
            peer_ip: from.to_string(),
            peer_node: peer_name(tables, from),
            ..Default::default()
        },
        Ingress::Underlay => proto::TraceIngress {
            kind: "underlay".into(),
            ..Default::default()
        },
    };
    let route = record.route.map(|route| {
        let mut out = proto::TraceRoute {
            prefix: route.prefix.map(|p| p.to_string()).unwrap_or_default(),
            ..Default::default()
        };
        out.target = match route.target {
            RouteTo::None => "none",
            RouteTo::Local(slot) => {
                out.endpoint = endpoint_name(tables, slot);
                "local"
            }
            RouteTo::Blackhole => "blackhole",
            RouteTo::Remote { peer_ip, encap } => {
                out.peer_node = peer_name(tables, peer_ip);
                out.peer_ip = peer_ip.to_string();
                out.encap = encap.name().into();
                "remote"
            }
            RouteTo::Unrouted => "unrouted",
            RouteTo::Host => "host",
        }
        .into();
        out
    });
    let mut action = proto::TraceAction::default();
    action.kind = match record.decision {
        Decision::Drop { reason, icmp } => {
            action.drop_reason = reason.name().into();
            action.icmp_error = icmp;
            "drop"
        }
        Decision::Reply => "reply",
        Decision::Host => "host",
        Decision::Deliver(slot) => {
            action.endpoint = endpoint_name(tables, slot);
            "deliver"
        }
        Decision::Peer { ip, encap } => {
            if let Some(ip) = ip {
                action.peer_node = peer_name(tables, ip);
                action.peer_ip = ip.to_string();
            }
            action.encap = encap.name().into();
            "encapsulate"
        }
    }
    .into();
    let counters = counters_touched(record, &ingress.endpoint, &action.endpoint);
    proto::TraceRecord {
        trace_id,
        index,
        worker: u32::from(record.worker),
        elapsed_us: u64::try_from(record.at.saturating_duration_since(started).as_micros())
            .unwrap_or(u64::MAX),
        ingress: Some(ingress),
        packet: Some(packet_message(&record.packet)),
        route,
        action: Some(action),
        counters,
    }
}

fn packet_message(packet: &PacketSummary) -> proto::TracePacket {
    let mut out = proto::TracePacket {
        ethertype: u32::from(packet.ethertype),
        frame_bytes: packet.bytes,
        gso_size: u32::from(packet.gso_size),
        segments: packet.segments,
        ..Default::default()
    };
    match packet.l3 {
        L3::Unparsed => {}
        L3::Ipv4 {
            src,
            dst,
            protocol,
            ttl,
            total_len,
            l4,
        } => {
            out.ipv4 = true;
            out.src = src.to_string();
            out.dst = dst.to_string();
            out.protocol = u32::from(protocol);
            out.ttl = u32::from(ttl);
            out.ip_bytes = u32::from(total_len);
            match l4 {
                L4::None => {}
                L4::Ports(src, dst) => {
                    out.src_port = u32::from(src);
                    out.dst_port = u32::from(dst);
                }
                L4::Icmp { kind, code, echo } => {
                    out.icmp_type = u32::from(kind);
                    out.icmp_code = u32::from(code);
                    if let Some((id, seq)) = echo {
                        out.icmp_id = u32::from(id);
                        out.icmp_seq = u32::from(seq);
                    }
                }
            }
        }
        L3::Arp {
            operation,
            sender,
            target,
        } => {
            out.arp_operation = u32::from(operation);
            out.src = sender.to_string();
            out.dst = target.to_string();
        }
    }
    out
}

/// The counters a worker touches for this record, by `tapwirectl stats`' names: those of
/// where it entered and of what was done with it (`from`/`to`: the ingress and delivery
/// endpoints' names).
fn counters_touched(record: &TraceRecord, from: &str, to: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut flow = |prefix: &str| {
        out.push(format!("{prefix}_packets"));
        out.push(format!("{prefix}_bytes"));
    };
    let dropped = matches!(record.decision, Decision::Drop { .. });
    match record.ingress {
        Ingress::Pod(_) => flow(&format!("endpoint.{from}.rx")),
        Ingress::Host => flow("host.rx"),
        // Underlay traffic is counted on its encapsulation once it is delivered.
        Ingress::Vxlan { .. } if !dropped => flow("encap.vxlan.rx"),
        Ingress::Ipip { .. } if !dropped => flow("encap.ipip.rx"),
        Ingress::Underlay if !dropped => flow("encap.none.rx"),
        Ingress::Vxlan { .. } | Ingress::Ipip { .. } | Ingress::Underlay => {}
    }
    match record.decision {
        Decision::Drop { .. } => {}
        Decision::Reply => {}
        Decision::Host => flow("host.tx"),
        Decision::Deliver(_) => flow(&format!("endpoint.{to}.tx")),
        Decision::Peer { encap, .. } => flow(&format!("encap.{}.tx", encap.name())),
    }
    match record.decision {
        Decision::Drop { reason, icmp } => {
            out.push(format!("drop.{}", reason.name()));
            if matches!(record.ingress, Ingress::Pod(_)) {
                out.push(format!("endpoint.{from}.drops"));
            }
            if icmp {
                out.push("icmp.errors_sent".into());
            }
        }
        Decision::Reply => out.push("arp.replies".into()),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests;
