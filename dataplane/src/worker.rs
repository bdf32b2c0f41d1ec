//! A worker: one thread, run to completion. It owns one queue of every pod TAP and its own
//! underlay sockets, takes one snapshot of the tables per wake-up, and turns each frame
//! into an action ([`Outbound`], [`Inbound`]) with `forward`, then performs it. No allocation, lock or channel
//! hop per packet. Each batch is timed (two clock reads) into the worker's busy time, and
//! checks once whether a packet trace is armed; only while one is does a packet cost more
//! (a summary before `forward`, a record into the trace's bounded channel: see
//! [`crate::trace`]).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapwire_sys::tap::TapQueue;

use crate::counters::{EndpointCounters, WorkerCounters};
use crate::forward::{
    self, DropReason, Inbound, Outbound, PacketBuf, Tso, VxlanUnderlay, MAX_FRAME, SCRATCH_LEN,
    VXLAN_UNDERLAY_PREFIX,
};
use crate::io::{
    IpipSink, PacketSocket, Poller, RawIpSender, Token, UdpReceiver, VxlanSender, MAX_RECV_BATCH,
};
use crate::log_limit::LogLimit;
use crate::offload::{
    self, Coalescer, Outer, SegmentChecksum, Segments, VnetHdr, MAX_UDP_GSO_SEGMENTS, VNET_HDR_LEN,
};
use crate::packet::{Mac, ETH_HEADER_LEN, VXLAN_HEADER_LEN};
use crate::rcu::RcuReader;
use crate::tables::{Encap, Tables};
use crate::trace::{Ingress, PacketSummary, Trace};

/// Frames read from one descriptor before moving on, so one busy pod cannot starve others.
const BATCH: usize = 64;
/// How long a worker sleeps in epoll before re-checking for shutdown.
const WAIT_MS: i32 = 200;

/// A pod's queues (one per worker) and counters, as attached by the state thread.
#[derive(Debug)]
pub struct PodQueues {
    pub generation: u32,
    pub queues: Vec<TapQueue>,
    pub counters: EndpointCounters,
}

/// A pod queue a worker stopped polling because reading it failed with something other
/// than `WouldBlock`: its device was deleted (`EBADFD`: the pod's `eth0` removed or its
/// namespace destroyed) or it broke. The state thread detaches that attachment and attaches
/// the pod afresh once its TAP exists again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadQueue {
    pub slot: u32,
    pub generation: u32,
    pub worker: usize,
    /// The read's error number, for the state thread's log line.
    pub errno: Option<i32>,
}

/// How a worker tells the state thread about a [`DeadQueue`] (once per queue: the worker
/// stops polling it). Called on the error path only.
pub type ReportDead = Box<dyn Fn(DeadQueue) + Send>;

/// What workers read: the tables plus the pod queues they name.
#[derive(Debug)]
pub struct Snapshot {
    pub tables: Tables,
    /// Indexed by endpoint slot, like `tables.endpoints`.
    pub pods: Vec<Option<Arc<PodQueues>>>,
}

impl Snapshot {
    fn pod(&self, slot: u32) -> Option<&PodQueues> {
        self.pods.get(slot as usize).and_then(|p| p.as_deref())
    }
}

/// The parts of a worker the state thread also touches.
#[derive(Debug)]
pub struct WorkerHandle {
    pub poller: Poller,
    pub counters: WorkerCounters,
}

/// A worker's own sockets.
#[derive(Debug)]
pub struct WorkerSockets {
    /// Sends IPIP (outer header built by `forward`) to a peer whose MAC is not resolved
    /// yet; the kernel routes it.
    pub raw: RawIpSender,
    pub vxlan: UdpReceiver,
    pub vxlan_tx: VxlanSender,
    /// Unencapsulated traffic, both ways, and IPIP out.
    pub underlay: PacketSocket,
    /// IPIP in: this worker's share of it, by inner flow.
    pub ipip: PacketSocket,
    /// Held by one worker: while it exists the kernel does not refuse IPIP.
    pub ipip_sink: Option<IpipSink>,
    /// This worker's queue of the host path TAP, when the dataplane has one.
    pub host: Option<TapQueue>,
    /// This worker's queue of the TAP VXLAN leaves through, when the kernel offers
    /// UDP-tunnel GSO; otherwise VXLAN goes out on `vxlan_tx`.
    pub vxlan_tap: Option<UnderlayTap>,
    /// Whether IPIP may leave the packet socket with its TCP checksums partial: on a
    /// virtual underlay (veth), where the peer keeps the mark; on a physical device they
    /// are finished here.
    pub ipip_partial_checksums: bool,
}

/// A queue of the underlay TAP (see `daemon::startup::open_vxlan_tap`): written only, never polled
/// (nothing is routed into it), and the TAP's MAC, which frames must be addressed to.
#[derive(Debug)]
pub struct UnderlayTap {
    pub queue: TapQueue,
    pub mac: Mac,
}

/// What one read of a TAP queue gave (see `Worker::read_tap_frame`).
enum TapRead {
    /// A frame of `len` bytes is in the buffer.
    Frame { len: usize, offload: VnetHdr },
    /// Nothing more to read now.
    Empty,
    /// Nothing usable this time (interrupted, or a malformed frame, counted): read on.
    Skipped,
    /// The queue is dead: its device is gone or broke.
    Dead(io::Error),
}

pub struct Worker {
    index: usize,
    handle: Arc<WorkerHandle>,
    sockets: WorkerSockets,
    /// How long to keep polling after the last packet before blocking.
    busy_poll: Duration,
    buf: PacketBuf,
    scratch: [u8; SCRATCH_LEN],
    segments: Segments,
    gro: Coalescer,
    report_dead: ReportDead,
    /// Receive failures logged per underlay socket ([`RxSocket`]), at most one line per
    /// interval each: a socket that keeps failing must not flood the log.
    receive_errors: [LogLimit; RxSocket::COUNT],
    trace: Arc<Trace>,
    /// Whether a trace was armed at the start of this batch (read once per batch).
    tracing: bool,
}

/// The underlay sockets a worker receives on, as its error log names them.
#[derive(Debug, Clone, Copy)]
enum RxSocket {
    Vxlan,
    Ipip,
    Underlay,
}

impl RxSocket {
    const COUNT: usize = 3;

    fn name(self) -> &'static str {
        match self {
            RxSocket::Vxlan => "vxlan",
            RxSocket::Ipip => "ipip",
            RxSocket::Underlay => "underlay",
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .finish()
    }
}

impl Worker {
    pub fn new(
        index: usize,
        handle: Arc<WorkerHandle>,
        sockets: WorkerSockets,
        busy_poll: Duration,
        report_dead: ReportDead,
        trace: Arc<Trace>,
    ) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        handle.poller.add(sockets.vxlan.as_raw_fd(), Token::Vxlan)?;
        handle
            .poller
            .add(sockets.underlay.as_raw_fd(), Token::Underlay)?;
        handle.poller.add(sockets.ipip.as_raw_fd(), Token::Ipip)?;
        if let Some(host) = &sockets.host {
            handle.poller.add(host.as_raw_fd(), Token::Host)?;
        }
        Ok(Self {
            index,
            handle,
            sockets,
            busy_poll,
            buf: PacketBuf::new(),
            scratch: [0; SCRATCH_LEN],
            segments: Segments::new(),
            gro: Coalescer::new(),
            report_dead,
            receive_errors: Default::default(),
            trace,
            tracing: false,
        })
    }

    /// Runs until the process exits, reading the published tables through `tables`.
    ///
    /// Each wake-up is one read-side critical section: one load of the current version,
    /// every ready source drained against it, then a quiescent state. Blocked in
    /// `epoll_wait`, the worker is offline, so publishing and reclaiming never wait for
    /// an idle worker.
    ///
    /// For `busy_poll` after its last packet the worker polls without blocking, yielding
    /// the CPU between polls: a reply that arrives within that window (a request/response
    /// exchange, the next burst of a stream) finds it running instead of paying for a
    /// wake-up, and a runnable thread on the same CPU still gets it.
    pub fn run(mut self, mut tables: RcuReader<Snapshot>) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut ready = Vec::with_capacity(256);
        let mut last_packet: Option<Instant> = None;
        loop {
            let spinning = last_packet.is_some_and(|t| t.elapsed() < self.busy_poll);
            let waited = if spinning {
                self.handle.poller.wait(&mut events, &mut ready, 0)
            } else {
                let _asleep = tables.offline();
                self.handle.poller.wait(&mut events, &mut ready, WAIT_MS)
            };
            if let Err(err) = waited {
                tracing::error!(worker = self.index, %err, "epoll_wait failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if ready.is_empty() {
                if spinning {
                    tables.quiesce();
                    std::thread::yield_now();
                }
                continue;
            }
            // One clock read at each end of a batch: its time is the worker's busy time.
            let batch_start = Instant::now();
            // One version per batch: a publish takes effect at the next wake-up.
            let snapshot = tables.read();
            // The only trace check while none is armed: one relaxed load per batch.
            self.tracing = self.trace.armed();
            for &token in &ready {
                match token {
                    Token::Pod { slot, generation } => self.drain_pod(snapshot, slot, generation),
                    Token::Vxlan => self.drain_vxlan(snapshot),
                    Token::Ipip => self.drain_ipip(snapshot),
                    Token::Underlay => self.drain_underlay(snapshot),
                    Token::Host => self.drain_host(snapshot),
                }
            }
            tables.quiesce();
            let batch_end = Instant::now();
            let counters = &self.handle.counters;
            counters.busy_ns.add(
                u64::try_from(batch_end.duration_since(batch_start).as_nanos()).unwrap_or(u64::MAX),
            );
            counters.batches.inc();
            if !self.busy_poll.is_zero() {
                last_packet = Some(batch_end);
            }
        }
    }

    /// Reads one frame, virtio-net header first, from a TAP queue (a pod's or the host
    /// path's) into the buffer, with its offload set; a frame shorter than the header is
    /// counted as malformed and skipped.
    fn read_tap_frame(&mut self, queue: &TapQueue) -> TapRead {
        let mut vnet = [0u8; VNET_HDR_LEN];
        let read = queue.readv(&mut [
            IoSliceMut::new(&mut vnet),
            IoSliceMut::new(self.buf.receive_area()),
        ]);
        let n = match read {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return TapRead::Empty,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return TapRead::Skipped,
            Err(err) => return TapRead::Dead(err),
        };
        let Some(len) = n.checked_sub(VNET_HDR_LEN) else {
            self.handle.counters.drop(DropReason::MalformedEthernet);
            return TapRead::Skipped;
        };
        self.buf.set_received(len);
        let offload = VnetHdr::parse(&vnet);
        self.buf.set_offload(offload);
        TapRead::Frame { len, offload }
    }

    fn drain_pod(&mut self, snapshot: &Snapshot, slot: u32, generation: u32) {
        let Some(pod) = snapshot.pod(slot).filter(|p| p.generation == generation) else {
            return; // attached after this snapshot; the next wake-up sees it
        };
        let Some(queue) = pod.queues.get(self.index) else {
            return;
        };
        let shard = pod.counters.shard(self.index);
        for _ in 0..BATCH {
            let (len, offload) = match self.read_tap_frame(queue) {
                TapRead::Frame { len, offload } => (len, offload),
                TapRead::Empty => return,
                TapRead::Skipped => continue,
                TapRead::Dead(err) => {
                    // The device is gone (EBADFD: `eth0` deleted, or the pod's namespace)
                    // or broke. Stop polling this queue (a dead queue is always readable)
                    // and tell the state thread, which detaches the pod, logs it once and
                    // attaches it again when its TAP is back.
                    tracing::debug!(worker = self.index, slot, %err, "pod queue read failed");
                    let _ = self.handle.poller.remove(queue.as_raw_fd());
                    (self.report_dead)(DeadQueue {
                        slot,
                        generation,
                        worker: self.index,
                        errno: err.raw_os_error(),
                    });
                    return;
                }
            };
            shard
                .rx
                .record_many(offload::segment_count(self.buf.frame(), offload), len);
            let traced = self
                .tracing
                .then(|| PacketSummary::ethernet(self.buf.frame(), offload));
            let action =
                forward::from_pod(&snapshot.tables, slot, &mut self.buf, &mut self.scratch);
            if action.is_drop() {
                shard.drops.inc();
            }
            if let Some(packet) = traced {
                let ingress = Ingress::Pod(slot);
                self.trace
                    .outbound(self.index, &snapshot.tables, ingress, packet, &action);
            }
            self.perform(snapshot, action, queue);
        }
    }

    /// Frames the node's kernel wrote to the host path TAP. A read that fails for any
    /// reason but "nothing there" means the device is gone (deleted under the dataplane):
    /// the queue leaves the poller and the host path stays down until a restart.
    fn drain_host(&mut self, snapshot: &Snapshot) {
        let Some(queue) = self.sockets.host.take() else {
            return;
        };
        for _ in 0..BATCH {
            let (len, offload) = match self.read_tap_frame(&queue) {
                TapRead::Frame { len, offload } => (len, offload),
                TapRead::Empty => break,
                TapRead::Skipped => continue,
                TapRead::Dead(err) => {
                    tracing::error!(worker = self.index, %err, "host path queue failed; host path down");
                    let _ = self.handle.poller.remove(queue.as_raw_fd());
                    return; // the queue is dropped
                }
            };
            self.handle
                .counters
                .host_rx
                .record_many(offload::segment_count(self.buf.frame(), offload), len);
            let traced = self
                .tracing
                .then(|| PacketSummary::ethernet(self.buf.frame(), offload));
            let action = forward::from_host(&snapshot.tables, &mut self.buf, &mut self.scratch);
            if let Some(packet) = traced {
                let ingress = Ingress::Host;
                self.trace
                    .outbound(self.index, &snapshot.tables, ingress, packet, &action);
            }
            self.perform(snapshot, action, &queue);
        }
        self.sockets.host = Some(queue);
    }

    fn drain_vxlan(&mut self, snapshot: &Snapshot) {
        for _ in 0..BATCH {
            let (n, from, segment) =
                match self.sockets.vxlan.recv_coalesced(self.buf.receive_area()) {
                    Ok(r) => r,
                    Err(err) => {
                        self.receive_error(RxSocket::Vxlan, err);
                        break;
                    }
                };
            // One datagram, or a GRO run of equal datagrams (the last may be shorter).
            let size = segment.map_or(n, usize::from).max(1);
            let mut offset = 0;
            while offset < n {
                let len = size.min(n - offset);
                self.buf.set_window(offset, len);
                let traced = self.tracing.then(|| PacketSummary::vxlan(self.buf.frame()));
                let action = forward::from_vxlan(&snapshot.tables, *from.ip(), &mut self.buf);
                if let Some(packet) = traced {
                    let ingress = Ingress::Vxlan { from: *from.ip() };
                    self.trace
                        .inbound(self.index, &snapshot.tables, ingress, packet, &action);
                }
                self.deliver(snapshot, action, Encap::Vxlan, len);
                offset += len;
            }
        }
        self.flush_gro(snapshot);
    }

    fn drain_ipip(&mut self, snapshot: &Snapshot) {
        // Frames are received a batch at a time, each into its own slot of the buffer,
        // slots sized for the underlay's MTU.
        let mtu = snapshot.tables.local.underlay_mtu_bytes as usize;
        let slot = (mtu + ETH_HEADER_LEN + 64)
            .next_multiple_of(64)
            .clamp(2048, MAX_FRAME);
        let mut lens = [0usize; MAX_RECV_BATCH];
        let mut vnets = [[0u8; VNET_HDR_LEN]; MAX_RECV_BATCH];
        for _ in 0..BATCH {
            let received =
                self.sockets
                    .ipip
                    .recv_batch(&mut vnets, self.buf.receive_area(), slot, &mut lens);
            let count = match received {
                Ok(count) => count,
                Err(err) => {
                    self.receive_error(RxSocket::Ipip, err);
                    break;
                }
            };
            for i in 0..count {
                let n = lens[i];
                if n == 0 {
                    // Larger than the underlay's MTU allows: not from a tapwire peer.
                    self.handle.counters.drop(DropReason::MalformedIpv4);
                    continue;
                }
                self.buf.set_window(i * slot, n);
                self.buf.set_offload(VnetHdr::parse(&vnets[i]));
                let traced = self
                    .tracing
                    .then(|| PacketSummary::ipip(&self.buf.frame()[ETH_HEADER_LEN..]));
                let action = forward::from_ipip_frame(&snapshot.tables, &mut self.buf);
                if let Some((ingress, packet)) = traced {
                    self.trace
                        .inbound(self.index, &snapshot.tables, ingress, packet, &action);
                }
                self.deliver(snapshot, action, Encap::Ipip, n - ETH_HEADER_LEN);
            }
            if count < MAX_RECV_BATCH.min(MAX_FRAME / slot) {
                break;
            }
        }
        self.flush_gro(snapshot);
    }

    fn drain_underlay(&mut self, snapshot: &Snapshot) {
        for _ in 0..BATCH {
            let mut vnet = [0u8; VNET_HDR_LEN];
            let n = match self
                .sockets
                .underlay
                .recv(&mut vnet, self.buf.receive_area())
            {
                Ok(Some(n)) => n,
                Ok(None) => continue, // our own transmission, looped back to the socket
                Err(err) => {
                    self.receive_error(RxSocket::Underlay, err);
                    break;
                }
            };
            self.buf.set_received(n);
            self.buf.set_offload(VnetHdr::parse(&vnet));
            let traced = self
                .tracing
                .then(|| PacketSummary::ethernet(self.buf.frame(), self.buf.offload()));
            let action = forward::from_underlay_ethernet(&snapshot.tables, &mut self.buf);
            if let Some(packet) = traced {
                let ingress = Ingress::Underlay;
                self.trace
                    .inbound(self.index, &snapshot.tables, ingress, packet, &action);
            }
            self.deliver(snapshot, action, Encap::None, n);
        }
        self.flush_gro(snapshot);
    }

    /// A receive failure other than "nothing there": logged, unless this socket's failures
    /// were logged less than [`LogLimit::INTERVAL`] ago (then counted into the next line).
    fn receive_error(&mut self, socket: RxSocket, err: io::Error) {
        if err.kind() == io::ErrorKind::WouldBlock {
            return;
        }
        if let Some(suppressed) = self.receive_errors[socket as usize].admit(Instant::now()) {
            tracing::warn!(
                worker = self.index,
                socket = socket.name(),
                %err,
                suppressed,
                "receive failed"
            );
        }
    }

    /// Performs the action for a frame that arrived from the underlay (`encap`, `n`
    /// bytes as received): plain segments for a pod are held for coalescing.
    fn deliver(&mut self, snapshot: &Snapshot, action: Inbound, encap: Encap, n: usize) {
        let counters = &self.handle.counters;
        let (endpoint, frame, offload) = match action {
            Inbound::ToPod {
                endpoint,
                frame,
                offload,
            } => (endpoint, frame, offload),
            Inbound::ToHost { frame, offload } => {
                counters.encap_rx(encap).record(n);
                return self.write_to_host(offload, frame);
            }
            Inbound::Drop(reason) => return counters.drop(reason),
            Inbound::Ignore => return counters.underlay_ignored.inc(),
        };
        let bytes = self.buf.slice(frame);
        counters
            .encap_rx(encap)
            .record_many(offload::segment_count(bytes, offload), n);
        let index = self.index;
        self.gro
            .offer(endpoint, bytes, offload, |endpoint, hdr, frame| {
                write_to_pod(snapshot, index, counters, endpoint, hdr, frame)
            });
    }

    /// Writes out the frame the coalescer holds, if any.
    fn flush_gro(&mut self, snapshot: &Snapshot) {
        let (index, counters) = (self.index, &self.handle.counters);
        self.gro.flush(|endpoint, hdr, frame| {
            write_to_pod(snapshot, index, counters, endpoint, hdr, frame)
        });
    }

    /// Writes a frame to this worker's host path queue.
    fn write_to_host(&self, offload: VnetHdr, frame: std::ops::Range<usize>) {
        let counters = &self.handle.counters;
        let Some(queue) = &self.sockets.host else {
            return counters.drop(DropReason::TxFailed);
        };
        let bytes = self.buf.slice(frame);
        match write_frame(queue, offload, bytes) {
            Ok(_) => counters
                .host_tx
                .record_many(offload::segment_count(bytes, offload), bytes.len()),
            Err(_) => counters.drop(DropReason::TxFailed),
        }
    }

    /// Performs the action for a frame a pod (or the host path) sent on `ingress`
    /// (replies go back on it).
    fn perform(&mut self, snapshot: &Snapshot, action: Outbound, ingress: &TapQueue) {
        let counters = &self.handle.counters;
        match action {
            Outbound::Drop(reason) => counters.drop(reason),
            Outbound::DropWithIcmp { reason, reply_len } => {
                counters.drop(reason);
                if write_frame(ingress, VnetHdr::NONE, &self.scratch[..reply_len]).is_ok() {
                    counters.icmp_errors_sent.inc();
                }
            }
            Outbound::Reply { len } => {
                match write_frame(ingress, VnetHdr::NONE, &self.scratch[..len]) {
                    Ok(_) => counters.arp_replies.inc(),
                    Err(_) => counters.drop(DropReason::TxFailed),
                }
            }
            Outbound::ToPod {
                endpoint,
                frame,
                offload,
            } => write_to_pod(
                snapshot,
                self.index,
                counters,
                endpoint,
                offload,
                self.buf.slice(frame),
            ),
            Outbound::ToHost { frame, offload } => self.write_to_host(offload, frame),
            Outbound::ToPeerIpip {
                dst,
                frame,
                offload,
                tso,
                framed,
            } => self.send_ipip(dst, frame, offload, tso, framed),
            Outbound::ToPeerVxlan {
                dst,
                flow,
                payload,
                tso,
            } => self.send_vxlan(&snapshot.tables, dst, flow, payload, tso),
            Outbound::ToPeerEthernet { frame, offload } => {
                let bytes = self.buf.slice(frame);
                match self.sockets.underlay.send(&offload.to_bytes(), bytes) {
                    Ok(_) => counters
                        .encap_tx(Encap::None)
                        .record_many(offload::segment_count(bytes, offload), bytes.len()),
                    Err(_) => self.tx_failed(),
                }
            }
        }
    }

    fn tx_failed(&self) {
        self.handle.counters.tx_errors.inc();
        self.handle.counters.drop(DropReason::TxFailed);
    }

    /// Sends an IPIP packet (see [`Outbound::ToPeerIpip`]): a framed one on the packet
    /// socket, with partial checksums; otherwise through the raw socket.
    fn send_ipip(
        &mut self,
        dst: Ipv4Addr,
        frame: std::ops::Range<usize>,
        mut offload: VnetHdr,
        tso: Option<Tso>,
        framed: bool,
    ) {
        let partial_ok = self.sockets.ipip_partial_checksums;
        if framed && !partial_ok && offload.needs_csum() && tso.is_none() {
            if offload::complete_checksum(self.buf.slice_mut(frame.clone()), offload).is_err() {
                return self.handle.counters.drop(DropReason::BadOffload);
            }
            offload = VnetHdr::NONE;
        }
        let bytes = self.buf.slice(frame);
        let counters = &self.handle.counters;
        // What the counters count: IP packets, without the Ethernet header.
        let link_len = if framed { ETH_HEADER_LEN } else { 0 };
        let Some(tso) = tso else {
            let sent = match framed {
                true => self.sockets.underlay.send(&offload.to_bytes(), bytes),
                false => self.sockets.raw.send(bytes, dst),
            };
            return match sent {
                Ok(_) => counters
                    .encap_tx(Encap::Ipip)
                    .record(bytes.len() - link_len),
                Err(_) => self.tx_failed(),
            };
        };
        let mss = usize::from(tso.mss);
        let (outer, checksum) = match (framed, partial_ok) {
            (true, true) => (Outer::Ipv4 { at: ETH_HEADER_LEN }, SegmentChecksum::Partial),
            (true, false) => (Outer::Ipv4 { at: ETH_HEADER_LEN }, SegmentChecksum::Full),
            (false, _) => (Outer::Ipv4 { at: 0 }, SegmentChecksum::Full),
        };
        let segments = &mut self.segments;
        if offload::segment_tcpv4(bytes, outer, tso.inner_ip, mss, checksum, segments).is_err() {
            return counters.drop(DropReason::BadOffload);
        }
        let sent = match framed {
            true => {
                let vnet = match checksum {
                    SegmentChecksum::Partial => segments.partial_checksum(),
                    SegmentChecksum::Full => VnetHdr::NONE,
                };
                self.sockets
                    .underlay
                    .send_segments(&vnet.to_bytes(), bytes, segments)
            }
            false => self.sockets.raw.send_segments(bytes, segments, dst),
        };
        match sent {
            Ok(sent) => {
                let per_segment = segments.header_len() - link_len + mss;
                counters
                    .encap_tx(Encap::Ipip)
                    .record_many(sent, sent * per_segment);
                if sent < segments.len() {
                    self.tx_failed();
                }
            }
            Err(_) => self.tx_failed(),
        }
    }

    fn send_vxlan(
        &mut self,
        tables: &Tables,
        dst: Ipv4Addr,
        flow: u32,
        payload: std::ops::Range<usize>,
        tso: Option<Tso>,
    ) {
        let port = tables.local.vxlan_port;
        if let Some(tap) = &self.sockets.vxlan_tap {
            let via = VxlanUnderlay {
                tap_mac: tap.mac,
                src: tables.local.underlay_ip,
                port,
            };
            if let Some((frame, hdr)) =
                forward::vxlan_underlay_frame(&mut self.buf, payload.clone(), via, dst, flow, tso)
            {
                let bytes = self.buf.slice(frame);
                match tap
                    .queue
                    .writev(&[IoSlice::new(&hdr.to_bytes()), IoSlice::new(bytes)])
                {
                    Ok(_) => {
                        let inner = &bytes[VXLAN_UNDERLAY_PREFIX + VXLAN_HEADER_LEN..];
                        let packets = offload::segment_count(inner, hdr.hdr);
                        self.handle
                            .counters
                            .encap_tx(Encap::Vxlan)
                            .record_many(packets, bytes.len() - ETH_HEADER_LEN);
                        return;
                    }
                    Err(err) => {
                        // The TAP is down or refuses what it was set up for: this worker
                        // sends on the sockets below from now on (the VXLAN payload is
                        // untouched), starting with this frame.
                        tracing::warn!(worker = self.index, %err, "underlay TAP write failed; VXLAN goes out on UDP sockets");
                        self.handle.counters.tx_errors.inc();
                        self.sockets.vxlan_tap = None;
                    }
                }
            }
        }
        let bytes = self.buf.slice(payload);
        let counters = &self.handle.counters;
        let tx = &self.sockets.vxlan_tx;
        let Some(tso) = tso else {
            return match tx.send(flow, dst, port, &[IoSlice::new(bytes)], None) {
                Ok(_) => counters.encap_tx(Encap::Vxlan).record(bytes.len()),
                Err(_) => self.tx_failed(),
            };
        };
        let mss = usize::from(tso.mss);
        if offload::segment_tcpv4(
            bytes,
            Outer::Opaque,
            tso.inner_ip,
            mss,
            SegmentChecksum::Full,
            &mut self.segments,
        )
        .is_err()
        {
            return counters.drop(DropReason::BadOffload);
        }
        let segment = self.segments.header_len() + mss;
        let mut iov = [IoSlice::new(&[]); 2 * MAX_UDP_GSO_SEGMENTS];
        for send in offload::udp_gso_sends(self.segments.len(), segment) {
            let mut used = 0;
            let mut bytes_out = 0;
            for i in send.segments.clone() {
                let (header, range) = self.segments.segment(i);
                bytes_out += header.len() + range.len();
                iov[used] = IoSlice::new(header);
                iov[used + 1] = IoSlice::new(&bytes[range]);
                used += 2;
            }
            match tx.send(flow, dst, port, &iov[..used], send.gso_size) {
                Ok(_) => counters
                    .encap_tx(Encap::Vxlan)
                    .record_many(send.segments.len(), bytes_out),
                Err(_) => {
                    self.handle.counters.tx_errors.inc();
                    self.handle.counters.drop(DropReason::TxFailed);
                }
            }
        }
    }
}

/// The one place a frame is written to a TAP queue (a pod's or the host path's): its
/// virtio-net header, then the frame.
fn write_frame(queue: &TapQueue, offload: VnetHdr, frame: &[u8]) -> io::Result<usize> {
    queue.writev(&[IoSlice::new(&offload.to_bytes()), IoSlice::new(frame)])
}

/// Writes `frame` to this worker's (`worker`) queue of the pod `endpoint` and counts it on
/// the pod, or counts why not: every frame for a pod, routed or coalesced, goes here.
fn write_to_pod(
    snapshot: &Snapshot,
    worker: usize,
    counters: &WorkerCounters,
    endpoint: u32,
    offload: VnetHdr,
    frame: &[u8],
) {
    let Some((pod, queue)) = snapshot
        .pod(endpoint)
        .and_then(|pod| pod.queues.get(worker).map(|queue| (pod, queue)))
    else {
        return counters.drop(DropReason::UnknownEndpoint);
    };
    match write_frame(queue, offload, frame) {
        Ok(_) => pod
            .counters
            .shard(worker)
            .tx
            .record_many(offload::segment_count(frame, offload), frame.len()),
        Err(_) => counters.drop(DropReason::TxFailed),
    }
}
