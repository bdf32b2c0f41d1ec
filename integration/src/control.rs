//! A minimal control-plane client for one dataplane: it sends `ToDataplane` messages over
//! the Unix socket and keeps track of what the dataplane answered (in-sync markers,
//! endpoint statuses, counter replies), so a test can wait for exactly what it needs.
//!
//! A reader thread decodes `FromDataplane` frames and forwards them over a channel; the
//! waiting methods fold whatever has arrived into the client's state before checking it,
//! so an answer that arrives before anyone waits for it is not lost.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tapwire_proto::frame::{self, StreamEnd};
use tapwire_proto::{
    from_dataplane, to_dataplane::Payload, CountersRequest, FromDataplane, ToDataplane,
};

use crate::error::{LabError, Result};

/// Named dataplane counters (`drop.spoofed_source`, `encap.vxlan.tx_packets`,
/// `endpoint.k8s/pod-a/eth0.rx_packets`, …), summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub values: HashMap<String, u64>,
}

impl Counters {
    /// The counter's value; 0 when the dataplane does not report it.
    pub fn get(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    /// How much each counter grew since `before` (counters only grow).
    pub fn since(&self, before: &Counters) -> Counters {
        let values = self
            .values
            .iter()
            .map(|(name, value)| (name.clone(), value.saturating_sub(before.get(name))))
            .collect();
        Counters { values }
    }

    /// The non-zero counters, sorted by name, one per line (for messages).
    pub fn nonzero(&self) -> String {
        let mut lines: Vec<String> = self
            .values
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(n, v)| format!("{n} = {v}"))
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// What the reader thread hands over.
enum Incoming {
    Message(Box<FromDataplane>),
    /// The dataplane closed the connection (or it broke): the reason.
    Closed(String),
}

/// One control connection to a dataplane.
#[derive(Debug)]
pub struct Controller {
    node: String,
    socket: PathBuf,
    stream: UnixStream,
    incoming: Receiver<Incoming>,
    sequence: u64,
    in_sync: usize,
    statuses: HashMap<String, String>,
    counters: VecDeque<Counters>,
    heartbeats: usize,
    closed: Option<String>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incoming::Message(m) => write!(f, "Message(seq {})", m.sequence_number),
            Incoming::Closed(reason) => write!(f, "Closed({reason})"),
        }
    }
}

impl Controller {
    /// Connects to the dataplane of `node` listening on `socket`.
    pub fn connect(node: &str, socket: &Path) -> Result<Controller> {
        let stream = UnixStream::connect(socket).map_err(|source| {
            LabError::io(format!("connecting to {}", socket.display()), source)
        })?;
        let reader = stream
            .try_clone()
            .map_err(|source| LabError::io("cloning the control socket", source))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("tapwire-lab-ctl-{node}"))
            .spawn(move || read_loop(reader, tx))
            .map_err(|source| LabError::io("starting the control reader thread", source))?;
        Ok(Controller {
            node: node.to_string(),
            socket: socket.to_path_buf(),
            stream,
            incoming: rx,
            sequence: 0,
            in_sync: 0,
            statuses: HashMap::new(),
            counters: VecDeque::new(),
            heartbeats: 0,
            closed: None,
        })
    }

    /// The node whose dataplane this talks to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The socket path this connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn error(&self, reason: impl Into<String>) -> LabError {
        LabError::Control {
            node: self.node.clone(),
            reason: reason.into(),
        }
    }

    /// Sends one message (with the next sequence number).
    pub fn send(&mut self, payload: Payload) -> Result<()> {
        self.sequence += 1;
        let msg = ToDataplane {
            sequence_number: self.sequence,
            payload: Some(payload),
        };
        let mut wire = Vec::new();
        frame::encode(&msg, &mut wire).map_err(|err| self.error(err.to_string()))?;
        self.send_raw(&wire)
    }

    /// Sends messages in order.
    pub fn send_all(&mut self, payloads: impl IntoIterator<Item = Payload>) -> Result<()> {
        payloads.into_iter().try_for_each(|p| self.send(p))
    }

    /// Writes bytes as they are (for malformed-frame tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .map_err(|err| self.error(format!("sending failed: {err}")))
    }

    /// Folds everything that arrived into the state; waits up to `timeout` for the first.
    fn pump(&mut self, timeout: Duration) {
        let mut next = match self.incoming.recv_timeout(timeout) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed.get_or_insert_with(|| "reader ended".into());
                None
            }
        };
        while let Some(item) = next {
            match item {
                Incoming::Message(msg) => self.absorb(*msg),
                Incoming::Closed(reason) => {
                    self.closed.get_or_insert(reason);
                }
            }
            next = self.incoming.try_recv().ok();
        }
    }

    fn absorb(&mut self, msg: FromDataplane) {
        use from_dataplane::Payload as P;
        match msg.payload {
            Some(P::DataplaneInSync(_)) => self.in_sync += 1,
            Some(P::WorkloadEndpointStatusUpdate(update)) => {
                if let Some(id) = update.id {
                    let status = update.status.map(|s| s.status).unwrap_or_default();
                    self.statuses.insert(id.key(), status);
                }
            }
            Some(P::WorkloadEndpointStatusRemove(remove)) => {
                if let Some(id) = remove.id {
                    self.statuses.remove(&id.key());
                }
            }
            Some(P::CountersReply(reply)) => self.counters.push_back(Counters {
                values: reply
                    .counters
                    .into_iter()
                    .map(|c| (c.name, c.value))
                    .collect(),
            }),
            Some(P::ProcessStatusUpdate(_)) => self.heartbeats += 1,
            // The lab arms no packet traces.
            Some(P::TraceRecord(_) | P::TraceDone(_)) => {}
            None => {}
        }
    }

    /// Waits until `done(self)` holds, pumping incoming messages; `what` names the wait.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&mut Controller) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            if let Some(reason) = &self.closed {
                return Err(self.error(format!("closed ({reason}) while waiting for {what}")));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(LabError::Timeout {
                    what: format!("waiting for {what} from the dataplane on {}", self.node),
                    after: timeout,
                });
            };
            self.pump(left.min(Duration::from_millis(100)));
        }
    }

    /// Waits for a `DataplaneInSync` not yet consumed by an earlier wait.
    pub fn wait_in_sync(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for("DataplaneInSync", timeout, |c| {
            if c.in_sync > 0 {
                c.in_sync -= 1;
                true
            } else {
                false
            }
        })
    }

    /// Waits until the dataplane reported endpoint `key` (`k8s/pod-a/eth0`) as `status`.
    pub fn wait_endpoint_status(
        &mut self,
        key: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<()> {
        let what = format!("endpoint {key} to be {status:?}");
        self.wait_for(&what, timeout, |c| {
            c.statuses.get(key).is_some_and(|s| s == status)
        })
    }

    /// The last status the dataplane reported for endpoint `key`.
    pub fn endpoint_status(&mut self, key: &str) -> Option<String> {
        self.pump(Duration::ZERO);
        self.statuses.get(key).cloned()
    }

    /// Heartbeats (`ProcessStatusUpdate`) received so far.
    pub fn heartbeats(&mut self) -> usize {
        self.pump(Duration::ZERO);
        self.heartbeats
    }

    /// Asks for the counters and waits for the reply.
    pub fn counters(&mut self, timeout: Duration) -> Result<Counters> {
        self.counters.clear();
        self.send(Payload::CountersRequest(CountersRequest {}))?;
        let mut reply = None;
        self.wait_for("a CountersReply", timeout, |c| {
            reply = c.counters.pop_front();
            reply.is_some()
        })?;
        reply.ok_or_else(|| self.error("counters reply vanished"))
    }

    /// Waits until the dataplane closes this connection; returns why it ended.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump(Duration::from_millis(50));
            if let Some(reason) = &self.closed {
                return Ok(reason.clone());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!(
                        "waiting for the dataplane on {} to close a connection",
                        self.node
                    ),
                    after: timeout,
                });
            }
        }
    }

    /// Whether the connection has been seen to close.
    pub fn is_closed(&mut self) -> bool {
        self.pump(Duration::ZERO);
        self.closed.is_some()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Ends the reader thread; the dataplane keeps forwarding on its last state.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The reader thread: the dataplane's messages to the controller, then why the
/// connection ended.
fn read_loop(stream: UnixStream, tx: mpsc::Sender<Incoming>) {
    let end = frame::read_messages(&stream, |msg: FromDataplane| {
        tx.send(Incoming::Message(Box::new(msg))).is_ok()
    });
    let reason = match end {
        StreamEnd::Stopped => return,
        StreamEnd::Closed => "the dataplane closed the connection".to_string(),
        StreamEnd::Failed(err) => err.to_string(),
    };
    let _ = tx.send(Incoming::Closed(reason));
}
