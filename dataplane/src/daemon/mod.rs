//! The dataplane process: starts the workers, serves the control socket, applies messages
//! to the desired state, attaches pod queues and publishes new table versions.
//!
//! Threads: N workers (the packet path), one acceptor + one reader per control connection
//! (decode frames, hand messages over a channel), one resolver (ARP for peers' underlay
//! MACs), and this state thread, the only writer of tables. Control messages never touch
//! the packet path directly: the state thread builds a new [`Snapshot`] and swaps it in.
//! The packet path talks back only when a pod queue dies (its TAP was deleted): the worker
//! stops polling it and sends one [`DeadQueue`]; the state thread detaches the pod and
//! attaches it again once a TAP of that name is back.
//!
//! Files: `startup` (devices, sockets, threads), `control` (the control link: frames in,
//! reports out) and `attach` (pod queues in and out); this file holds the state thread's
//! loop and its publishing.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapwire_proto::{ToDataplane, WorkloadEndpointId};

use crate::metrics::{Sample, StateGauges};
use crate::rcu::Rcu;
use crate::resolver::{self, Resolved};
use crate::state::{AttachedEndpoint, Desired, EndpointSpec, TablesBuilder, Underlay};
use crate::tables::Tables;
use crate::trace::Tracer;
use crate::worker::{DeadQueue, PodQueues, Snapshot, WorkerHandle};

mod attach;
mod control;
mod startup;

pub use startup::{run, StartError};

/// How often the dataplane tells control it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often endpoints whose queues could not be attached are tried again (the pod's
/// TAP may not exist yet when control announces it).
const RETRY: Duration = Duration::from_secs(1);
/// How soon the state thread looks again while replaced table versions await reclamation.
const RECLAIM_RETRY: Duration = Duration::from_millis(10);
/// How long a scrape waits for the state thread's sample of the counters.
const SAMPLE_WAIT: Duration = Duration::from_secs(2);

/// Command-line options of `tapwire-dataplane`.
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub workers: usize,
    pub underlay_interface: String,
    pub vxlan_port: u16,
    /// How long a worker keeps polling after its last packet before it blocks.
    pub busy_poll: Duration,
    /// The host path TAP in the node's namespace (`tapwire0`); `None`: no host path.
    pub host_interface: Option<String>,
    /// The TAP VXLAN leaves through (`tapwire-vxlan`); `None`, or a kernel without
    /// UDP-tunnel GSO: the UDP sockets.
    pub vxlan_tap_interface: Option<String>,
    /// Where Prometheus metrics are served (`--metrics-addr`); `None`: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The default of `--host-interface`.
pub const DEFAULT_HOST_INTERFACE: &str = "tapwire0";

/// The default of `--vxlan-tap-interface`.
pub const DEFAULT_VXLAN_TAP_INTERFACE: &str = "tapwire-vxlan";

/// The default of `--busy-poll-us`.
pub const DEFAULT_BUSY_POLL_US: u32 = 50;

/// What connection threads (and workers) tell the state thread.
enum Event {
    Connected(u64, UnixStream),
    Message(u64, Box<ToDataplane>),
    /// A frame that does not decode: the connection is closed, state is kept.
    Malformed(u64, String),
    Disconnected(u64),
    Resolved(Resolved),
    /// A worker found a pod queue dead (every worker holding one reports it).
    QueueDead(DeadQueue),
    /// A scrape of the metrics endpoint wants the counters.
    Sample(SyncSender<Sample>),
}

/// A pod whose queues are attached.
struct Attachment {
    spec: EndpointSpec,
    info: AttachedEndpoint,
    pod: Arc<PodQueues>,
}

/// The state thread's world.
struct Dataplane {
    underlay: Underlay,
    workers: Vec<Arc<WorkerHandle>>,
    /// What the workers forward with; publishing never waits for them, and a replaced
    /// version (with the pod queues it names) is freed once every worker has passed a
    /// quiescent state.
    snapshot: Rcu<Snapshot>,
    /// The state that is being forwarded on.
    live: Desired,
    /// A snapshot being received on a new connection, applied at its InSync.
    pending: Option<Desired>,
    attached: BTreeMap<String, Attachment>,
    /// Wanted endpoints whose queues are not attached (yet, or again), with the id their
    /// status was reported under.
    unattached: BTreeMap<String, WorkloadEndpointId>,
    free_slots: Vec<u32>,
    next_slot: u32,
    next_generation: u32,
    neighbors: HashMap<Ipv4Addr, [u8; 6]>,
    resolver: Sender<Vec<Ipv4Addr>>,
    conn: Option<(u64, UnixStream)>,
    sequence: u64,
    started: Instant,
    /// The FIB between publishes: each publish applies only the route and endpoint
    /// changes since the last one.
    tables: TablesBuilder,
    /// The packet trace: armed on control's request, records relayed to it.
    tracer: Tracer,
}

impl Dataplane {
    fn new(
        underlay: Underlay,
        workers: Vec<Arc<WorkerHandle>>,
        snapshot: Rcu<Snapshot>,
        resolver: Sender<Vec<Ipv4Addr>>,
    ) -> Dataplane {
        Dataplane {
            underlay,
            workers,
            snapshot,
            live: Desired::default(),
            pending: None,
            attached: BTreeMap::new(),
            unattached: BTreeMap::new(),
            free_slots: Vec::new(),
            next_slot: 0,
            next_generation: 1,
            neighbors: HashMap::new(),
            resolver,
            conn: None,
            sequence: 0,
            started: Instant::now(),
            tables: TablesBuilder::default(),
            tracer: Tracer::new(),
        }
    }

    fn run(&mut self, events: Receiver<Event>) {
        let mut last_heartbeat = Instant::now();
        loop {
            // Replaced versions hold detached pods' queues open: come back soon to free
            // them once the workers have moved on.
            let wait = if self.snapshot.pending() > 0 {
                RECLAIM_RETRY
            } else {
                RETRY
            };
            let wait = wait.min(self.tracer.next_poll(Instant::now()).unwrap_or(wait));
            let first = match events.recv_timeout(wait) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Apply everything that is waiting, then publish once.
            let mut dirty = false;
            let mut next = first;
            while let Some(event) = next {
                dirty |= self.handle(event);
                next = events.try_recv().ok();
            }
            dirty |= self.retry_unattached();
            self.relay_trace();
            if dirty {
                self.publish();
            } else {
                self.snapshot.reclaim();
            }
            if last_heartbeat.elapsed() >= HEARTBEAT {
                self.send_heartbeat();
                last_heartbeat = Instant::now();
            }
        }
    }

    /// Handles one event; true if the live tables must be rebuilt.
    fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Connected(id, stream) => {
                if let Some((old, old_stream)) = self.conn.take() {
                    tracing::info!(
                        old,
                        new = id,
                        "control reconnected; closing the old connection"
                    );
                    let _ = old_stream.shutdown(std::net::Shutdown::Both);
                }
                tracing::info!(id, "control connected");
                self.tracer.stop();
                self.conn = Some((id, stream));
                self.pending = Some(Desired::default());
                self.send_heartbeat();
                false
            }
            Event::Disconnected(id) => {
                if self.is_current(id) {
                    tracing::info!(id, "control disconnected; forwarding on the last state");
                    self.tracer.stop();
                    self.conn = None;
                    self.pending = None;
                }
                false
            }
            Event::Malformed(id, err) => {
                if self.is_current(id) {
                    tracing::error!(id, %err, "malformed frame from control; closing the connection");
                    self.tracer.stop();
                    self.conn = None;
                    self.pending = None;
                }
                false
            }
            Event::Message(id, msg) => self.is_current(id) && self.apply(*msg),
            Event::Resolved(Resolved { peer, mac }) => match mac {
                Some(mac) => self.neighbors.insert(peer, mac) != Some(mac),
                None => self.neighbors.remove(&peer).is_some(),
            },
            Event::QueueDead(dead) => self.queue_dead(dead),
            Event::Sample(reply) => {
                let _ = reply.send(self.sample());
                false
            }
        }
    }

    /// Sends control the records of the armed trace that the workers made, and its end.
    fn relay_trace(&mut self) {
        let tables = &self.snapshot.current().tables;
        for payload in self.tracer.poll(tables, Instant::now()) {
            self.send(payload);
        }
    }

    /// The counters and state a metrics scrape reports.
    fn sample(&self) -> Sample {
        let tables = &self.snapshot.current().tables;
        let state = StateGauges {
            attached: self.attached.len(),
            waiting: self.unattached.len(),
            routes: tables.fib.len(),
            peers: tables.peers.len(),
            control_connected: self.conn.is_some(),
        };
        let endpoints = self
            .attached
            .iter()
            .map(|(key, att)| (key, &att.pod.counters));
        Sample::gather(&self.workers, endpoints, state, self.tracer.dropped())
    }

    /// Builds and publishes a new snapshot from the live state, updating the FIB with
    /// the changes since the last publish only.
    fn publish(&mut self) {
        let infos: BTreeMap<String, AttachedEndpoint> = self
            .attached
            .iter()
            .map(|(k, a)| (k.clone(), a.info.clone()))
            .collect();
        let changes = self.live.take_route_changes();
        let tables: Tables =
            self.tables
                .build(&self.live, changes, &self.underlay, &infos, &self.neighbors);
        let mut pods = vec![None; tables.endpoints.len()];
        for att in self.attached.values() {
            if let Some(slot) = pods.get_mut(att.info.slot as usize) {
                *slot = Some(Arc::clone(&att.pod));
            }
        }
        // Peers reached unencapsulated need their next hop's MAC: ask the resolver.
        let _ = self.resolver.send(resolver::wanted_peers(&tables));
        self.snapshot.publish(Snapshot { tables, pods });
    }
}

#[cfg(test)]
mod tests;
