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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapwire_proto::{
    frame, from_dataplane, DataplaneInSync, EndpointStatus, FrameError, FromDataplane,
    ProcessStatusUpdate, ToDataplane, WorkloadEndpointId, WorkloadEndpointStatusRemove,
    WorkloadEndpointStatusUpdate,
};
use tapwire_sys::unix::InstanceLock;
use tapwire_sys::{link, netns, tap};

use crate::counters::{named_totals, EndpointCounters, WorkerCounters};
use crate::io::{
    queue_attached, IpipSink, PacketSocket, Poller, RawIpSender, Token, UdpReceiver,
    UnderlayFrames, VxlanSender,
};
use crate::rcu::Rcu;
use crate::resolver::{self, Resolved};
use crate::state::{
    build_tables, Applied, AttachedEndpoint, Desired, EndpointSpec, TablesBuilder, Underlay,
};
use crate::tables::{HostPath, Tables};
use crate::worker::{
    DeadQueue, PodQueues, Snapshot, UnderlayTap, Worker, WorkerHandle, WorkerSockets,
};

/// How often the dataplane tells control it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often endpoints whose queues could not be attached are tried again (the pod's
/// TAP may not exist yet when control announces it).
const RETRY: Duration = Duration::from_secs(1);
/// How soon the state thread looks again while replaced table versions await reclamation.
const RECLAIM_RETRY: Duration = Duration::from_millis(10);
/// VXLAN sending sockets per worker: each flow keeps one, so its packets share a source
/// port while flows spread over several (ECMP entropy).
const VXLAN_TX_SOCKETS: usize = 4;

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
}

/// The default of `--host-interface`.
pub const DEFAULT_HOST_INTERFACE: &str = "tapwire0";

/// The default of `--vxlan-tap-interface`.
pub const DEFAULT_VXLAN_TAP_INTERFACE: &str = "tapwire-vxlan";

/// The default of `--busy-poll-us`.
pub const DEFAULT_BUSY_POLL_US: u32 = 50;

/// Why the dataplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("underlay interface {name}: {source}")]
    Underlay { name: String, source: io::Error },
    #[error("opening {what} for worker {worker}: {source}")]
    Socket {
        what: &'static str,
        worker: usize,
        source: io::Error,
    },
    #[error("control socket: {source}")]
    ControlSocket { path: PathBuf, source: io::Error },
    #[error("starting a thread: {0}")]
    Thread(io::Error),
    #[error("host path interface {name}: {source}")]
    HostPath { name: String, source: io::Error },
    /// Another `tapwire-dataplane` serves this socket.
    #[error("not starting: {0}")]
    AlreadyRunning(io::Error),
}

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
}

/// Runs the dataplane until the process is killed.
pub fn run(opts: Options) -> Result<(), StartError> {
    // Before any socket is opened: a second dataplane on this node would steal the
    // control socket and the underlay's traffic from the first.
    let instance = InstanceLock::for_socket(&opts.socket).map_err(StartError::AlreadyRunning)?;
    let ul = &opts.underlay_interface;
    let underlay_err = |source| StartError::Underlay {
        name: ul.clone(),
        source,
    };
    let ifindex = link::ifindex(ul).map_err(underlay_err)?;
    let underlay_mtu = link::mtu(ul).map_err(underlay_err)?;
    let (host_path, mut host_queues) =
        match &opts.host_interface {
            Some(name) => {
                let (path, queues) = open_host_path(name, opts.workers.max(1), underlay_mtu)
                    .map_err(|source| StartError::HostPath {
                        name: name.clone(),
                        source,
                    })?;
                tracing::info!(interface = %name, mtu = path.mtu_bytes, "host path attached");
                (Some(path), queues)
            }
            None => (None, Vec::new()),
        };
    let mut vxlan_taps = match &opts.vxlan_tap_interface {
        Some(name) => match open_vxlan_tap(name, opts.workers.max(1), underlay_mtu) {
            Ok((mac, queues)) => {
                tracing::info!(interface = %name, "VXLAN leaves through the underlay TAP");
                queues
                    .into_iter()
                    .map(|queue| UnderlayTap { queue, mac })
                    .collect()
            }
            Err(err) => {
                tracing::info!(interface = %name, %err, "no underlay TAP; VXLAN is segmented here and sent on UDP sockets");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let underlay = Underlay {
        ip: link::ipv4_addr(ul).map_err(underlay_err)?,
        mac: link::hwaddr(ul).map_err(underlay_err)?,
        mtu_bytes: underlay_mtu,
        vxlan_port: opts.vxlan_port,
        host_path,
    };
    tracing::info!(
        interface = %ul, ip = %underlay.ip, mtu = underlay.mtu_bytes,
        workers = opts.workers, "starting"
    );

    let desired = Desired::default();
    let first = build_tables(&desired, &underlay, &BTreeMap::new(), &HashMap::new());
    let snapshot = Rcu::new(Snapshot {
        tables: first,
        pods: Vec::new(),
    });

    let (events_tx, events_rx) = mpsc::channel();
    let workers = opts.workers.max(1);
    let fanout_group = (std::process::id() & 0xffff) as u16;
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let sock_err = |what| {
            move |source| StartError::Socket {
                what,
                worker: w,
                source,
            }
        };
        let handle = Arc::new(WorkerHandle {
            poller: Poller::new().map_err(sock_err("epoll"))?,
            counters: WorkerCounters::default(),
        });
        let sockets = WorkerSockets {
            raw: RawIpSender::open().map_err(sock_err("raw IP socket"))?,
            vxlan: {
                let socket =
                    UdpReceiver::bind(opts.vxlan_port).map_err(sock_err("VXLAN UDP socket"))?;
                // Without UDP GRO each datagram is its own read; with it, a peer's GSO
                // burst arrives as one.
                if let Err(err) = socket.enable_gro() {
                    tracing::warn!(%err, "UDP GRO refused; receiving VXLAN per datagram");
                }
                socket
            },
            vxlan_tx: VxlanSender::open(VXLAN_TX_SOCKETS)
                .map_err(sock_err("VXLAN sending socket"))?,
            underlay: PacketSocket::open(ifindex, fanout_group, UnderlayFrames::NotTo(underlay.ip))
                .map_err(sock_err("underlay packet socket"))?,
            ipip: PacketSocket::open(
                ifindex,
                fanout_group ^ 0x8000,
                UnderlayFrames::IpipTo(underlay.ip),
            )
            .map_err(sock_err("IPIP packet socket"))?,
            ipip_sink: if w == 0 {
                Some(IpipSink::open().map_err(sock_err("IPIP raw socket"))?)
            } else {
                None
            },
            host: host_queues.pop(),
            vxlan_tap: vxlan_taps.pop(),
        };
        let report_dead = {
            let events = events_tx.clone();
            Box::new(move |dead| {
                let _ = events.send(Event::QueueDead(dead));
            })
        };
        let worker = Worker::new(w, Arc::clone(&handle), sockets, opts.busy_poll, report_dead)
            .map_err(sock_err("epoll registration"))?;
        let reader = snapshot.reader();
        std::thread::Builder::new()
            .name(format!("tapwire-w{w}"))
            .spawn(move || worker.run(reader))
            .map_err(StartError::Thread)?;
        handles.push(handle);
    }

    let resolver_tx = resolver::spawn(ifindex, underlay.ip, underlay.mac, {
        let events = events_tx.clone();
        move |r| events.send(Event::Resolved(r)).is_ok()
    })
    .map_err(StartError::Thread)?;
    let listener = bind_control_socket(&opts.socket, &instance)?;
    std::thread::Builder::new()
        .name("tapwire-accept".into())
        .spawn(move || accept_loop(listener, events_tx))
        .map_err(StartError::Thread)?;

    let mut dataplane = Dataplane::new(underlay, handles, snapshot, resolver_tx);
    dataplane.run(events_rx);
    Ok(())
}

/// The host path: a persistent multi-queue TAP in the node's namespace, created on first
/// start (a restarted dataplane attaches to the one it left, so the kernel's routes
/// through it survive), one queue per worker with a virtio-net header and TSO offloads so
/// that node↔pod TCP moves super-frames as pod↔pod TCP does. Its MTU is the underlay's
/// (the kernel's pool routes carry the pods' smaller MTU); IPv6 is off on it (nothing
/// IPv6 crosses tapwire) and its reverse-path filter loose: ICMP errors the dataplane
/// sends the kernel come from 169.254.1.1, which only the default route covers.
fn open_host_path(
    name: &str,
    workers: usize,
    mtu_bytes: u32,
) -> io::Result<(HostPath, Vec<tap::TapQueue>)> {
    match tap::create_persistent(name) {
        Ok(()) => tracing::info!(interface = %name, "host path TAP created"),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let queues = (0..workers)
        .map(|_| tap::attach_queue_with_offloads(name))
        .collect::<io::Result<Vec<_>>>()?;
    if let Some(queue) = queues.first() {
        let wanted = tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6;
        if let Err(err) = queue.set_offloads(wanted) {
            tracing::warn!(interface = %name, %err, "host path TAP offloads refused");
        }
    }
    for (key, value) in [
        (format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "2"),
    ] {
        if let Err(err) = std::fs::write(&key, value) {
            tracing::warn!(%key, %err, "setting a host path sysctl failed");
        }
    }
    link::set_mtu(name, mtu_bytes)?;
    link::set_up(name)?;
    let path = HostPath {
        mac: link::hwaddr(name)?,
        mtu_bytes,
    };
    Ok((path, queues))
}

/// The TAP VXLAN leaves through: a multi-queue TAP in the node's namespace, one queue per
/// worker, with the 24-byte tunnel virtio-net header and UDP-tunnel GSO, so that a pod's
/// TCP super-frame, wrapped in outer Ethernet/IPv4/UDP/VXLAN headers, crosses it whole; the
/// node's kernel forwards it out of the underlay interface, where the device (or the
/// kernel's GSO, for a device that cannot) cuts it into datagrams and fills in the inner
/// checksums. The frames come from this node's own address, so the TAP accepts a local
/// source (`accept_local`, no reverse-path filter) and forwards (`forwarding`, for this
/// input device only). Not persistent: it goes when the dataplane's queues close.
///
/// Fails on a kernel without UDP-tunnel GSO (before 6.17: the header size or the offload
/// is refused), and where a strict reverse-path filter on all interfaces would drop the
/// frames.
fn open_vxlan_tap(
    name: &str,
    workers: usize,
    mtu_bytes: u32,
) -> io::Result<(crate::packet::Mac, Vec<tap::TapQueue>)> {
    let strict_rpf = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
        .is_ok_and(|v| v.trim() == "1");
    if strict_rpf {
        return Err(io::Error::other(
            "net.ipv4.conf.all.rp_filter is 1 (strict), which drops frames from the node's own address",
        ));
    }
    match tap::create_persistent(name) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let queues = match (0..workers)
        .map(|_| tap::attach_queue_with_offloads(name))
        .collect::<io::Result<Vec<_>>>()
    {
        Ok(queues) => queues,
        Err(err) => {
            let _ = tap::delete_persistent(name);
            return Err(err);
        }
    };
    let Some(first) = queues.first() else {
        return Err(io::Error::other("no worker to attach a queue for"));
    };
    // From here on, an error drops the queues and with them the device.
    first.set_persistent(false)?;
    first.set_vnet_hdr_len(tap::TUNNEL_VNET_HDR_LEN)?;
    let offloads =
        tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6 | tap::offload::UDP_TUNNEL_GSO;
    first.set_offloads(offloads)?;
    for (key, value) in [
        (format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{name}/accept_local"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "1"),
    ] {
        std::fs::write(&key, value)
            .map_err(|err| io::Error::new(err.kind(), format!("setting {key}: {err}")))?;
    }
    link::set_mtu(name, mtu_bytes)?;
    link::set_up(name)?;
    Ok((link::hwaddr(name)?, queues))
}

fn bind_control_socket(path: &Path, held: &InstanceLock) -> Result<UnixListener, StartError> {
    tapwire_sys::unix::bind_private(path, held).map_err(|source| StartError::ControlSocket {
        path: path.to_path_buf(),
        source,
    })
}

fn accept_loop(listener: UnixListener, events: Sender<Event>) {
    let mut next_id = 1u64;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        let reader = match stream.try_clone() {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(%err, "cloning control connection failed");
                continue;
            }
        };
        if events.send(Event::Connected(id, stream)).is_err() {
            return;
        }
        let events = events.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tapwire-conn{id}"))
            .spawn(move || read_loop(id, reader, events));
        if let Err(err) = spawned {
            tracing::warn!(%err, "starting a connection reader failed");
        }
    }
}

fn read_loop(id: u64, stream: UnixStream, events: Sender<Event>) {
    let mut reader = std::io::BufReader::new(&stream);
    loop {
        match frame::read_frame::<_, ToDataplane>(&mut reader) {
            Ok(Some(msg)) => {
                if events.send(Event::Message(id, Box::new(msg))).is_err() {
                    return;
                }
            }
            // End of stream, or the peer went away mid-frame.
            Ok(None) | Err(FrameError::Io(_)) => break,
            Err(err) => {
                let _ = events.send(Event::Malformed(id, err.to_string()));
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
    let _ = events.send(Event::Disconnected(id));
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
                self.conn = Some((id, stream));
                self.pending = Some(Desired::default());
                self.send_heartbeat();
                false
            }
            Event::Disconnected(id) => {
                if self.is_current(id) {
                    tracing::info!(id, "control disconnected; forwarding on the last state");
                    self.conn = None;
                    self.pending = None;
                }
                false
            }
            Event::Malformed(id, err) => {
                if self.is_current(id) {
                    tracing::error!(id, %err, "malformed frame from control; closing the connection");
                    self.conn = None;
                    self.pending = None;
                }
                false
            }
            Event::Message(id, msg) => self.is_current(id) && self.apply(*msg),
            Event::Resolved(resolved) => {
                let changed = self.neighbors.get(&resolved.ip) != Some(&resolved.mac);
                self.neighbors.insert(resolved.ip, resolved.mac);
                changed
            }
            Event::QueueDead(dead) => self.queue_dead(dead),
        }
    }

    /// A worker found one of a pod's queues dead: its TAP is gone. Detaches that
    /// attachment (once, though every worker reports it; reports about an attachment
    /// already replaced are stale and ignored), tells control the endpoint is down, and
    /// leaves it to [`Self::retry_unattached`], which attaches it again as soon as a TAP
    /// of its name exists in the pod's namespace. True if the tables must be rebuilt.
    fn queue_dead(&mut self, dead: DeadQueue) -> bool {
        let key = self.attached.iter().find_map(|(key, att)| {
            (att.info.slot == dead.slot && att.pod.generation == dead.generation)
                .then(|| key.clone())
        });
        let Some(key) = key else {
            tracing::debug!(?dead, "stale report of a dead pod queue");
            return false;
        };
        let err = dead.errno.map(io::Error::from_raw_os_error);
        let err = err.as_ref().map(tracing::field::display);
        tracing::warn!(
            %key, slot = dead.slot, worker = dead.worker, err,
            "pod queue failed (TAP deleted?); endpoint down until its TAP is back"
        );
        self.lost(&key);
        true
    }

    /// An attachment whose TAP is gone: detaches it, reports the endpoint down and
    /// retries it every RETRY.
    fn lost(&mut self, key: &str) {
        let Some(att) = self.release(key) else {
            return;
        };
        self.unattached.insert(key.to_string(), att.spec.id.clone());
        self.send_endpoint_status(&att.spec, "down");
    }

    fn is_current(&self, id: u64) -> bool {
        self.conn.as_ref().is_some_and(|(c, _)| *c == id)
    }

    /// Applies a control message; true if the live tables must be rebuilt.
    fn apply(&mut self, msg: ToDataplane) -> bool {
        let Some(payload) = msg.payload else {
            return false; // a message type tapwire does not implement: skipped
        };
        let target = self.pending.as_mut().unwrap_or(&mut self.live);
        let applied = match target.apply(payload) {
            Ok(applied) => applied,
            Err(err) => {
                tracing::warn!(seq = msg.sequence_number, %err, "rejected control message");
                return false;
            }
        };
        match applied {
            Applied::InSync => match self.pending.take() {
                Some(snapshot) => {
                    self.live = snapshot;
                    self.reconcile_endpoints();
                    self.send(from_dataplane::Payload::DataplaneInSync(DataplaneInSync {}));
                    true
                }
                None => false,
            },
            Applied::CountersRequested => {
                self.send_counters();
                false
            }
            // While a snapshot is arriving, nothing changes what is forwarded.
            _ if self.pending.is_some() => false,
            Applied::EndpointChanged(key) => {
                self.attach(&key);
                true
            }
            Applied::EndpointRemoved(key) => {
                self.detach(&key);
                true
            }
            Applied::Changed => true,
            Applied::Nothing => false,
        }
    }

    /// Tries again to attach endpoints that failed; true if any succeeded.
    fn retry_unattached(&mut self) -> bool {
        let keys: Vec<String> = self.unattached.keys().cloned().collect();
        for key in &keys {
            self.attach(key);
        }
        self.unattached.len() < keys.len()
    }

    /// After a new snapshot: keep what is still wanted, attach what is new, detach the rest.
    fn reconcile_endpoints(&mut self) {
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|k| !self.live.endpoints.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.detach(&key);
        }
        let keys: Vec<String> = self.live.endpoints.keys().cloned().collect();
        for key in keys {
            self.attach(&key);
        }
    }

    /// Attaches (or re-attaches, if its namespace or interface changed) an endpoint's
    /// queues, then reports its status.
    fn attach(&mut self, key: &str) {
        let Some(spec) = self.live.endpoints.get(key).cloned() else {
            self.unattached.remove(key);
            return;
        };
        if let Some(existing) = self.attached.get_mut(key) {
            let same_tap = existing.spec.netns == spec.netns && existing.spec.ifname == spec.ifname;
            // Queues of a deleted TAP stay open but detached, also when a new TAP of the
            // same name took its place (a second CNI ADD): those are attached afresh.
            let alive = existing.pod.queues.iter().all(queue_attached);
            if same_tap && alive {
                existing.spec = spec.clone();
                self.send_endpoint_status(&spec, "up");
                return;
            }
            if same_tap {
                tracing::warn!(%key, "pod's TAP was deleted or replaced; attaching again");
                self.lost(key);
            } else {
                self.detach(key);
            }
        }
        match self.open_queues(&spec) {
            Ok((queues, mac, mtu_bytes)) => {
                let slot = self.free_slots.pop().unwrap_or_else(|| {
                    self.next_slot += 1;
                    self.next_slot - 1
                });
                let generation = self.next_generation;
                self.next_generation = self.next_generation.wrapping_add(1).max(1);
                let pod = Arc::new(PodQueues {
                    generation,
                    queues,
                    counters: EndpointCounters::new(self.workers.len()),
                });
                for (w, worker) in self.workers.iter().enumerate() {
                    let fd = pod.queues[w].as_raw_fd();
                    if let Err(err) = worker.poller.add(fd, Token::Pod { slot, generation }) {
                        tracing::error!(%key, worker = w, %err, "registering pod queue failed");
                    }
                }
                tracing::info!(%key, slot, netns = %spec.netns.display(), "endpoint attached");
                self.unattached.remove(key);
                self.attached.insert(
                    key.to_string(),
                    Attachment {
                        spec: spec.clone(),
                        info: AttachedEndpoint {
                            slot,
                            mac,
                            mtu_bytes,
                        },
                        pod,
                    },
                );
                self.send_endpoint_status(&spec, "up");
            }
            Err(err) => {
                // Report once, then retry quietly every RETRY.
                if !self.unattached.contains_key(key) {
                    self.unattached.insert(key.to_string(), spec.id.clone());
                    tracing::warn!(%key, netns = %spec.netns.display(), %err, "attaching endpoint failed; will retry");
                    self.send_endpoint_status(&spec, "down");
                }
            }
        }
    }

    /// Opens one queue per worker on the pod's TAP, inside the pod's namespace, and reads
    /// the interface's MAC and MTU there.
    fn open_queues(
        &self,
        spec: &EndpointSpec,
    ) -> io::Result<(Vec<tapwire_sys::tap::TapQueue>, [u8; 6], u32)> {
        let workers = self.workers.len();
        netns::run_in_netns(&spec.netns, || {
            let queues = (0..workers)
                .map(|_| tap::attach_queue_with_offloads(&spec.ifname))
                .collect::<io::Result<Vec<_>>>()?;
            if let Some(queue) = queues.first() {
                // Super-frames and partial checksums from the pod; without them (an old
                // kernel) the pod sends MTU-sized frames with full checksums, which works too.
                let wanted = tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6;
                if let Err(err) = queue.set_offloads(wanted) {
                    tracing::warn!(ifname = %spec.ifname, %err, "TAP offloads refused");
                }
            }
            Ok((
                queues,
                link::hwaddr(&spec.ifname)?,
                link::mtu(&spec.ifname)?,
            ))
        })
    }

    /// Control no longer wants the endpoint (or moved it to another TAP): detaches its
    /// queues, if attached, and withdraws its status.
    fn detach(&mut self, key: &str) {
        let unattached = self.unattached.remove(key);
        let id = match self.release(key) {
            Some(att) => {
                tracing::info!(%key, "endpoint detached");
                att.spec.id
            }
            None => match unattached {
                Some(id) => id,
                None => return,
            },
        };
        self.send(from_dataplane::Payload::WorkloadEndpointStatusRemove(
            WorkloadEndpointStatusRemove { id: Some(id) },
        ));
    }

    /// Takes an attachment out: its queues leave every worker's poller and its slot is
    /// free. The queues close when the last snapshot naming them is reclaimed.
    fn release(&mut self, key: &str) -> Option<Attachment> {
        let att = self.attached.remove(key)?;
        for (w, worker) in self.workers.iter().enumerate() {
            if let Some(queue) = att.pod.queues.get(w) {
                let _ = worker.poller.remove(queue.as_raw_fd());
            }
        }
        self.free_slots.push(att.info.slot);
        Some(att)
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
        // Peers reached unencapsulated need their underlay MAC: ask the resolver.
        let wanted: HashSet<Ipv4Addr> = tables.peers.iter().map(|p| p.underlay_ip).collect();
        let _ = self.resolver.send(wanted.into_iter().collect());
        self.snapshot.publish(Snapshot { tables, pods });
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    fn send(&mut self, payload: from_dataplane::Payload) {
        let sequence_number = self.next_sequence();
        let Some((id, stream)) = self.conn.as_mut() else {
            return;
        };
        let msg = FromDataplane {
            sequence_number,
            payload: Some(payload),
        };
        let mut wire = Vec::new();
        frame::encode(&msg, &mut wire);
        if let Err(err) = stream.write_all(&wire) {
            tracing::info!(id = *id, %err, "writing to control failed; dropping the connection");
            let _ = stream.shutdown(std::net::Shutdown::Both);
            self.conn = None;
            self.pending = None;
        }
    }

    fn send_heartbeat(&mut self) {
        let uptime = self.started.elapsed().as_secs_f64();
        self.send(from_dataplane::Payload::ProcessStatusUpdate(
            ProcessStatusUpdate {
                iso_timestamp: tapwire_proto::text::format_rfc3339(std::time::SystemTime::now()),
                uptime,
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        ));
    }

    fn send_endpoint_status(&mut self, spec: &EndpointSpec, status: &str) {
        self.send(from_dataplane::Payload::WorkloadEndpointStatusUpdate(
            WorkloadEndpointStatusUpdate {
                id: Some(spec.id.clone()),
                status: Some(EndpointStatus {
                    status: status.to_string(),
                }),
                endpoint: None,
            },
        ));
    }

    fn send_counters(&mut self) {
        let mut values = named_totals(self.workers.iter().map(|w| &w.counters));
        for (key, att) in &self.attached {
            let [rxp, rxb, txp, txb, drops] = att.pod.counters.totals();
            for (name, value) in [
                ("rx_packets", rxp),
                ("rx_bytes", rxb),
                ("tx_packets", txp),
                ("tx_bytes", txb),
                ("drops", drops),
            ] {
                values.push((format!("endpoint.{key}.{name}"), value));
            }
        }
        let counters = values
            .into_iter()
            .map(|(name, value)| tapwire_proto::Counter { name, value })
            .collect();
        self.send(from_dataplane::Payload::CountersReply(
            tapwire_proto::CountersReply { counters },
        ));
    }
}

#[cfg(test)]
mod tests;
