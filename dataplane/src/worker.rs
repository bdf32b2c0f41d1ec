//! A worker: one thread, run to completion. It owns one queue of every pod TAP and its own
//! underlay sockets, takes one snapshot of the tables per wake-up, and turns each frame
//! into an [`Action`] with `forward`, then performs it. No allocation, lock or channel
//! hop per packet.

use std::io;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tapwire_sys::tap::TapQueue;

use crate::counters::{EndpointCounters, WorkerCounters};
use crate::forward::{self, Action, DropReason, PacketBuf, SCRATCH_LEN};
use crate::io::{IpipReceiver, PacketSocket, Poller, RawIpSender, Token, UdpReceiver};
use crate::tables::{Encap, Tables};

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
    pub raw: RawIpSender,
    pub vxlan: UdpReceiver,
    pub underlay: PacketSocket,
    /// Only one worker receives IPIP: every raw socket would get its own copy.
    pub ipip: Option<IpipReceiver>,
}

pub struct Worker {
    index: usize,
    handle: Arc<WorkerHandle>,
    sockets: WorkerSockets,
    snapshot: Arc<ArcSwap<Snapshot>>,
    buf: PacketBuf,
    scratch: [u8; SCRATCH_LEN],
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
        snapshot: Arc<ArcSwap<Snapshot>>,
    ) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        handle.poller.add(sockets.vxlan.as_raw_fd(), Token::Vxlan)?;
        handle
            .poller
            .add(sockets.underlay.as_raw_fd(), Token::Underlay)?;
        if let Some(ipip) = &sockets.ipip {
            handle.poller.add(ipip.as_raw_fd(), Token::Ipip)?;
        }
        Ok(Self {
            index,
            handle,
            sockets,
            snapshot,
            buf: PacketBuf::new(),
            scratch: [0; SCRATCH_LEN],
        })
    }

    /// Runs until the process exits.
    pub fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut ready = Vec::with_capacity(256);
        loop {
            if let Err(err) = self.handle.poller.wait(&mut events, &mut ready, WAIT_MS) {
                tracing::error!(worker = self.index, %err, "epoll_wait failed");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
            if ready.is_empty() {
                continue;
            }
            // One snapshot per batch: a publish takes effect at the next wake-up.
            let snapshot = self.snapshot.load_full();
            for &token in &ready {
                match token {
                    Token::Pod { slot, generation } => self.drain_pod(&snapshot, slot, generation),
                    Token::Vxlan => self.drain_vxlan(&snapshot),
                    Token::Ipip => self.drain_ipip(&snapshot),
                    Token::Underlay => self.drain_underlay(&snapshot),
                    Token::Wake => {}
                }
            }
        }
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
            let n = match queue.read(self.buf.receive_area()) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    // The pod namespace is gone (EBADFD) or the device broke: stop polling
                    // it; the state thread detaches it when control removes the endpoint.
                    tracing::warn!(worker = self.index, slot, %err, "pod queue read failed");
                    let _ = self.handle.poller.remove(queue.as_raw_fd());
                    return;
                }
            };
            self.buf.set_received(n);
            shard.rx.record(n);
            let action =
                forward::from_pod(&snapshot.tables, slot, &mut self.buf, &mut self.scratch);
            if matches!(action, Action::Drop(_) | Action::DropWithIcmp { .. }) {
                shard.drops.inc();
            }
            self.perform(snapshot, action, Some(queue), None);
        }
    }

    fn drain_vxlan(&mut self, snapshot: &Snapshot) {
        for _ in 0..BATCH {
            let (n, from) = match self.sockets.vxlan.recv(self.buf.receive_area()) {
                Ok(r) => r,
                Err(err) => return self.receive_error("vxlan", err),
            };
            self.buf.set_received(n);
            let action = forward::from_vxlan(&snapshot.tables, *from.ip(), &mut self.buf);
            self.perform(snapshot, action, None, Some((Encap::Vxlan, n)));
        }
    }

    fn drain_ipip(&mut self, snapshot: &Snapshot) {
        let Some(ipip) = &self.sockets.ipip else {
            return;
        };
        for _ in 0..BATCH {
            let n = match ipip.recv(self.buf.receive_area()) {
                Ok(n) => n,
                Err(err) => return self.receive_error("ipip", err),
            };
            self.buf.set_received(n);
            let action = forward::from_ipip(&snapshot.tables, &mut self.buf);
            self.perform(snapshot, action, None, Some((Encap::Ipip, n)));
        }
    }

    fn drain_underlay(&mut self, snapshot: &Snapshot) {
        for _ in 0..BATCH {
            let n = match self.sockets.underlay.recv(self.buf.receive_area()) {
                Ok(Some(n)) => n,
                Ok(None) => continue, // our own transmission, looped back to the socket
                Err(err) => return self.receive_error("underlay", err),
            };
            self.buf.set_received(n);
            let action = forward::from_underlay_ethernet(&snapshot.tables, &mut self.buf);
            self.perform(snapshot, action, None, Some((Encap::None, n)));
        }
    }

    fn receive_error(&self, socket: &'static str, err: io::Error) {
        if err.kind() != io::ErrorKind::WouldBlock {
            tracing::warn!(worker = self.index, socket, %err, "receive failed");
        }
    }

    /// Performs an action. `ingress` is the pod queue the frame came from (replies go back
    /// on it); `decap` says which tunnel it arrived through, for the rx counters.
    fn perform(
        &self,
        snapshot: &Snapshot,
        action: Action,
        ingress: Option<&TapQueue>,
        decap: Option<(Encap, usize)>,
    ) {
        let counters = &self.handle.counters;
        match action {
            Action::Drop(reason) => counters.drop(reason),
            Action::DropWithIcmp { reason, reply_len } => {
                counters.drop(reason);
                if let Some(queue) = ingress {
                    if queue.write(&self.scratch[..reply_len]).is_ok() {
                        counters.icmp_errors_sent.inc();
                    }
                }
            }
            Action::Reply { len } => {
                if let Some(queue) = ingress {
                    match queue.write(&self.scratch[..len]) {
                        Ok(_) => counters.arp_replies.inc(),
                        Err(_) => counters.drop(DropReason::TxFailed),
                    }
                }
            }
            Action::ToPod { endpoint, frame } => {
                let Some(pod) = snapshot.pod(endpoint) else {
                    return counters.drop(DropReason::UnknownEndpoint);
                };
                let Some(queue) = pod.queues.get(self.index) else {
                    return counters.drop(DropReason::UnknownEndpoint);
                };
                let bytes = self.buf.slice(frame);
                match queue.write(bytes) {
                    Ok(_) => {
                        pod.counters.shard(self.index).tx.record(bytes.len());
                        if let Some((encap, n)) = decap {
                            counters.encap_rx(encap).record(n);
                        }
                    }
                    Err(_) => counters.drop(DropReason::TxFailed),
                }
            }
            Action::ToPeerIp { dst, encap, packet } => {
                let bytes = self.buf.slice(packet);
                match self.sockets.raw.send(bytes, dst) {
                    Ok(_) => counters.encap_tx(encap).record(bytes.len()),
                    Err(_) => {
                        counters.tx_errors.inc();
                        counters.drop(DropReason::TxFailed);
                    }
                }
            }
            Action::ToPeerEthernet { frame } => {
                let bytes = self.buf.slice(frame);
                match self.sockets.underlay.send(bytes) {
                    Ok(_) => counters.encap_tx(Encap::None).record(bytes.len()),
                    Err(_) => {
                        counters.tx_errors.inc();
                        counters.drop(DropReason::TxFailed);
                    }
                }
            }
            Action::Ignore => counters.underlay_ignored.inc(),
        }
    }
}
