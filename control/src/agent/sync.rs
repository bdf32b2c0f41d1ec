//! Streams the desired state to the dataplane: a full snapshot and `InSync` on every
//! (re)connect, then only diffs. Keeps what the dataplane reports (in sync, endpoint
//! status, heartbeats) for the API, relays counter requests and packet traces, and times
//! the sync into [`ControlMetrics`].
//!
//! One thread owns the connection; a reader thread per connection decodes the
//! dataplane's messages. Everything reaches the owner through one channel, so the state
//! here has a single writer and needs no lock except the [`SyncStatus`] the API reads.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tapwire_proto::frame::{self, StreamEnd};
use tapwire_proto::{
    from_dataplane, to_dataplane::Payload, CountersRequest, FromDataplane, ToDataplane, TraceDone,
    TraceRecord, TraceRequest,
};

use crate::metrics::ControlMetrics;
use crate::routes::{diff, to_messages, DesiredDataplane};

/// How often a lost dataplane connection is retried.
const RECONNECT: Duration = Duration::from_millis(250);

/// What the dataplane has told us, shared with the API.
#[derive(Debug, Default)]
pub struct SyncStatus {
    pub connected: bool,
    /// The dataplane applied the current connection's snapshot.
    pub in_sync: bool,
    pub last_heartbeat: Option<Instant>,
    /// The dataplane's version, from its heartbeat (it sends one on connect).
    pub dataplane_version: Option<String>,
    /// `orchestrator/workload/endpoint` → "up" / "down" (removed when the dataplane
    /// reports the endpoint gone).
    pub endpoints: HashMap<String, String>,
    /// When each peer's routes were last (re)programmed, for `node status`.
    pub since: Option<std::time::SystemTime>,
}

/// The shared status and a condition variable signalled on every change.
#[derive(Debug, Default)]
pub struct StatusCell {
    status: Mutex<SyncStatus>,
    changed: Condvar,
}

impl StatusCell {
    /// Reads the status.
    pub fn read<T>(&self, f: impl FnOnce(&SyncStatus) -> T) -> T {
        match self.status.lock() {
            Ok(s) => f(&s),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut SyncStatus)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
        self.changed.notify_all();
    }

    /// Forgets what the dataplane said about endpoint `key`, so that only a later report
    /// counts.
    pub fn forget_endpoint(&self, key: &str) {
        self.update(|s| {
            s.endpoints.remove(key);
        });
    }

    /// Waits until `ready` holds or `timeout` passes; returns whether it holds.
    pub fn wait_for(&self, timeout: Duration, ready: impl Fn(&SyncStatus) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut status) = self.status.lock() else {
            return false;
        };
        loop {
            if ready(&status) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            status = match self.changed.wait_timeout(status, left) {
                Ok((s, _)) => s,
                Err(_) => return false,
            };
        }
    }
}

/// What the dataplane says about a packet trace.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceEvent {
    Record(Box<TraceRecord>),
    /// The trace ended; nothing follows.
    Done(TraceDone),
}

enum Command {
    /// A new desired state, and when it was handed over.
    Desired(Arc<DesiredDataplane>, Instant),
    Counters(Sender<Vec<(String, u64)>>),
    /// Arm a trace; its records and end go to the sender.
    Trace(TraceRequest, Sender<TraceEvent>),
    FromDataplane(u64, Box<FromDataplane>),
    Disconnected(u64),
}

/// The handle the rest of the agent uses.
#[derive(Debug, Clone)]
pub struct Sync {
    commands: Sender<Command>,
    pub status: Arc<StatusCell>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Desired(..) => "Desired",
            Command::Counters(_) => "Counters",
            Command::Trace(..) => "Trace",
            Command::FromDataplane(..) => "FromDataplane",
            Command::Disconnected(_) => "Disconnected",
        })
    }
}

impl Sync {
    /// Starts the sync thread for the dataplane socket at `socket`.
    pub fn start(socket: PathBuf, metrics: Arc<ControlMetrics>) -> std::io::Result<Sync> {
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(StatusCell::default());
        let worker = Syncer {
            socket,
            commands: tx.clone(),
            status: Arc::clone(&status),
            desired: None,
            conn: None,
            next_conn: 1,
            sequence: 0,
            counter_waiters: Vec::new(),
            traces: HashMap::new(),
            next_trace: 0,
            snapshot_started: None,
            metrics,
        };
        std::thread::Builder::new()
            .name("tapwire-sync".into())
            .spawn(move || worker.run(rx))?;
        Ok(Sync {
            commands: tx,
            status,
        })
    }

    /// Hands over a new desired state; the dataplane gets the difference.
    pub fn set_desired(&self, desired: Arc<DesiredDataplane>) {
        let _ = self
            .commands
            .send(Command::Desired(desired, Instant::now()));
    }

    /// Asks the dataplane for its counters; `None` if it does not answer in time.
    pub fn counters(&self, timeout: Duration) -> Option<Vec<(String, u64)>> {
        let (tx, rx) = mpsc::channel();
        self.commands.send(Command::Counters(tx)).ok()?;
        rx.recv_timeout(timeout).ok()
    }

    /// Arms a packet trace in the dataplane (its `trace_id` is chosen here); its records
    /// and its end arrive on the receiver, which reports a disconnect when the dataplane
    /// is not connected or goes away.
    pub fn trace(&self, request: TraceRequest) -> Receiver<TraceEvent> {
        let (tx, rx) = mpsc::channel();
        let _ = self.commands.send(Command::Trace(request, tx));
        rx
    }
}

struct Connection {
    id: u64,
    stream: UnixStream,
    /// What the dataplane holds (as far as we have sent it).
    sent: Arc<DesiredDataplane>,
}

struct Syncer {
    socket: PathBuf,
    commands: Sender<Command>,
    status: Arc<StatusCell>,
    desired: Option<Arc<DesiredDataplane>>,
    conn: Option<Connection>,
    next_conn: u64,
    sequence: u64,
    counter_waiters: Vec<Sender<Vec<(String, u64)>>>,
    /// Running traces by id.
    traces: HashMap<u32, Sender<TraceEvent>>,
    next_trace: u32,
    /// When the current connection's snapshot began, until the dataplane is in sync.
    snapshot_started: Option<Instant>,
    metrics: Arc<ControlMetrics>,
}

impl Syncer {
    fn run(mut self, commands: Receiver<Command>) {
        loop {
            if self.conn.is_none() && self.desired.is_some() {
                self.connect();
            }
            let wait = if self.conn.is_none() {
                RECONNECT
            } else {
                Duration::from_secs(3600)
            };
            match commands.recv_timeout(wait) {
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Desired(desired, since) => {
                if let Some(conn) = &mut self.conn {
                    let changes = diff(&conn.sent, &desired);
                    if !changes.is_empty() {
                        tracing::debug!(
                            messages = changes.len(),
                            "sending changes to the dataplane"
                        );
                        let messages = changes.len();
                        let ok = send_all(&mut conn.stream, &mut self.sequence, changes);
                        conn.sent = Arc::clone(&desired);
                        if ok {
                            self.metrics.messages_sent(messages);
                            self.metrics.diff_sent(since.elapsed());
                        } else {
                            self.metrics.sync_error("write_failed");
                            self.drop_connection("write failed");
                        }
                    }
                }
                self.desired = Some(desired);
            }
            Command::Counters(reply) => {
                let Some(conn) = &mut self.conn else {
                    return; // dropping `reply` tells the caller there is no answer
                };
                let request = vec![Payload::CountersRequest(CountersRequest {})];
                if send_all(&mut conn.stream, &mut self.sequence, request) {
                    self.counter_waiters.push(reply);
                } else {
                    self.metrics.sync_error("write_failed");
                    self.drop_connection("write failed");
                }
            }
            Command::Trace(mut request, events) => {
                let Some(conn) = &mut self.conn else {
                    return; // dropping `events` tells the caller there is no dataplane
                };
                self.next_trace = self.next_trace.wrapping_add(1).max(1);
                request.trace_id = self.next_trace;
                let id = request.trace_id;
                if send_all(
                    &mut conn.stream,
                    &mut self.sequence,
                    vec![Payload::TraceRequest(request)],
                ) {
                    self.traces.insert(id, events);
                } else {
                    self.metrics.sync_error("write_failed");
                    self.drop_connection("write failed");
                }
            }
            Command::FromDataplane(id, msg) => {
                if self.conn.as_ref().is_some_and(|c| c.id == id) {
                    self.on_message(*msg);
                }
            }
            Command::Disconnected(id) => {
                if self.conn.as_ref().is_some_and(|c| c.id == id) {
                    self.drop_connection("dataplane closed the connection");
                }
            }
        }
    }

    fn on_message(&mut self, msg: FromDataplane) {
        use from_dataplane::Payload as P;
        match msg.payload {
            Some(P::ProcessStatusUpdate(status)) => {
                self.status.update(|s| {
                    s.last_heartbeat = Some(Instant::now());
                    s.dataplane_version = Some(status.version).filter(|v| !v.is_empty());
                });
            }
            Some(P::DataplaneInSync(_)) => {
                tracing::info!("dataplane in sync");
                if let Some(started) = self.snapshot_started.take() {
                    self.metrics.snapshot_in_sync(started.elapsed());
                }
                self.metrics.dataplane_state(true, true);
                self.status.update(|s| {
                    s.in_sync = true;
                    s.since = Some(std::time::SystemTime::now());
                });
            }
            Some(P::WorkloadEndpointStatusUpdate(update)) => {
                if let Some(id) = update.id {
                    let key = id.key();
                    let state = update.status.map(|s| s.status).unwrap_or_default();
                    self.status.update(|s| {
                        s.endpoints.insert(key, state);
                    });
                }
            }
            Some(P::WorkloadEndpointStatusRemove(remove)) => {
                if let Some(id) = remove.id {
                    let key = id.key();
                    self.status.update(|s| {
                        s.endpoints.remove(&key);
                    });
                }
            }
            Some(P::CountersReply(reply)) => {
                let counters: Vec<(String, u64)> = reply
                    .counters
                    .into_iter()
                    .map(|c| (c.name, c.value))
                    .collect();
                for waiter in self.counter_waiters.drain(..) {
                    let _ = waiter.send(counters.clone());
                }
            }
            Some(P::TraceRecord(record)) => {
                let id = record.trace_id;
                let delivered = self.traces.get(&id).is_some_and(|events| {
                    events.send(TraceEvent::Record(Box::new(record))).is_ok()
                });
                if !delivered {
                    // Nobody waits for it any more (or never did).
                    self.traces.remove(&id);
                }
            }
            Some(P::TraceDone(done)) => {
                if let Some(events) = self.traces.remove(&done.trace_id) {
                    let _ = events.send(TraceEvent::Done(done));
                }
            }
            None => {} // a message this agent does not know: skipped
        }
    }

    fn connect(&mut self) {
        let Some(desired) = self.desired.clone() else {
            return;
        };
        let mut stream = match UnixStream::connect(&self.socket) {
            Ok(s) => s,
            Err(_) => return, // not up yet; retried every RECONNECT
        };
        let id = self.next_conn;
        self.next_conn += 1;
        let reader = match stream.try_clone() {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(%err, "cloning the dataplane connection failed");
                return;
            }
        };
        let events = self.commands.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tapwire-dp{id}"))
            .spawn(move || read_loop(id, reader, events));
        if let Err(err) = spawned {
            tracing::warn!(%err, "starting the dataplane reader failed");
            return;
        }
        self.status.update(|s| {
            s.connected = true;
            s.in_sync = false;
            s.endpoints.clear();
        });
        tracing::info!(socket = %self.socket.display(), "connected to the dataplane; sending the full state");
        self.metrics.dataplane_state(true, false);
        let started = Instant::now();
        let snapshot = to_messages(&desired);
        let messages = snapshot.len();
        if send_all(&mut stream, &mut self.sequence, snapshot) {
            self.metrics.messages_sent(messages);
            self.snapshot_started = Some(started);
            self.conn = Some(Connection {
                id,
                stream,
                sent: desired,
            });
        } else {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            self.metrics.sync_error("write_failed");
            self.metrics.dataplane_state(false, false);
            self.status.update(|s| s.connected = false);
        }
    }

    fn drop_connection(&mut self, why: &str) {
        if let Some(conn) = self.conn.take() {
            tracing::warn!(
                why,
                "lost the dataplane connection; it keeps forwarding, reconnecting"
            );
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            self.metrics.sync_error("connection_lost");
        }
        self.counter_waiters.clear();
        self.traces.clear();
        self.snapshot_started = None;
        self.metrics.dataplane_state(false, false);
        self.status.update(|s| {
            s.connected = false;
            s.in_sync = false;
        });
    }
}

/// Writes `payloads` as framed messages; false if the connection failed. A message too
/// large for a frame (the dataplane would close the connection on it) is left out, with
/// an error.
fn send_all(stream: &mut UnixStream, sequence: &mut u64, payloads: Vec<Payload>) -> bool {
    let mut wire = Vec::new();
    for payload in payloads {
        *sequence += 1;
        let msg = ToDataplane {
            sequence_number: *sequence,
            payload: Some(payload),
        };
        if let Err(err) = frame::encode(&msg, &mut wire) {
            tracing::error!(seq = msg.sequence_number, %err, "not sending a message to the dataplane");
        }
    }
    stream.write_all(&wire).is_ok()
}

/// A connection's reader thread: the dataplane's messages to the sync thread, then the
/// end of the connection.
fn read_loop(id: u64, stream: UnixStream, events: Sender<Command>) {
    let end = frame::read_messages(&stream, |msg: FromDataplane| {
        events
            .send(Command::FromDataplane(id, Box::new(msg)))
            .is_ok()
    });
    match end {
        StreamEnd::Stopped => return, // the sync thread is gone
        StreamEnd::Failed(err) if err.is_malformed() => {
            tracing::error!(%err, "malformed frame from the dataplane");
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        StreamEnd::Closed | StreamEnd::Failed(_) => {}
    }
    let _ = events.send(Command::Disconnected(id));
}
