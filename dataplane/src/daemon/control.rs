//! The control link: accepting control's connections, reading its frames, applying its
//! messages, and what the dataplane reports back (heartbeats, endpoint status, counters).

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::Sender;
use std::time::Instant;

use tapwire_proto::frame::{self, StreamEnd};
use tapwire_proto::{
    from_dataplane, DataplaneInSync, EndpointStatus, FromDataplane, ProcessStatusUpdate,
    ToDataplane, WorkloadEndpointStatusUpdate,
};

use crate::counters::named_totals;
use crate::log_limit::LogLimit;
use crate::state::{Applied, EndpointSpec};

use super::{Dataplane, Event};

pub(super) fn accept_loop(listener: UnixListener, events: Sender<Event>) {
    let mut next_id = 1u64;
    let mut accept_errors = LogLimit::default();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(err) => {
                if let Some(suppressed) = accept_errors.admit(Instant::now()) {
                    tracing::warn!(%err, suppressed, "accept failed");
                }
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

/// A connection's reader thread: control's messages to the state thread, then how the
/// connection ended.
fn read_loop(id: u64, stream: UnixStream, events: Sender<Event>) {
    let end = frame::read_messages(&stream, |msg: ToDataplane| {
        events.send(Event::Message(id, Box::new(msg))).is_ok()
    });
    let event = match end {
        StreamEnd::Stopped => return, // the state thread is gone
        StreamEnd::Failed(err) if err.is_malformed() => {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            Event::Malformed(id, err.to_string())
        }
        // End of stream, or the peer went away mid-frame.
        StreamEnd::Closed | StreamEnd::Failed(_) => Event::Disconnected(id),
    };
    let _ = events.send(event);
}

impl Dataplane {
    pub(super) fn is_current(&self, id: u64) -> bool {
        self.conn.as_ref().is_some_and(|(c, _)| *c == id)
    }

    /// Applies a control message; true if the live tables must be rebuilt.
    pub(super) fn apply(&mut self, msg: ToDataplane) -> bool {
        let Some(payload) = msg.payload else {
            return false; // a message type tapwire does not implement: skipped
        };
        let target = self.pending.as_mut().unwrap_or(&mut self.live);
        let applied = match target.apply(payload) {
            Ok(applied) => applied,
            Err(err) => {
                tracing::error!(seq = msg.sequence_number, %err, "rejected control message");
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
            Applied::TraceRequested(request) => {
                let attached = &self.attached;
                let slot = |key: &str| attached.get(key).map(|att| att.info.slot);
                for payload in self.tracer.start(&request, slot, Instant::now()) {
                    self.send(payload);
                }
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

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    pub(super) fn send(&mut self, payload: from_dataplane::Payload) {
        let sequence_number = self.next_sequence();
        let Some((id, stream)) = self.conn.as_mut() else {
            return;
        };
        let msg = FromDataplane {
            sequence_number,
            payload: Some(payload),
        };
        let mut wire = Vec::new();
        if let Err(err) = frame::encode(&msg, &mut wire) {
            tracing::error!(id = *id, %err, "not reporting to control");
            return;
        }
        if let Err(err) = stream.write_all(&wire) {
            tracing::info!(id = *id, %err, "writing to control failed; dropping the connection");
            let _ = stream.shutdown(std::net::Shutdown::Both);
            self.conn = None;
            self.pending = None;
        }
    }

    pub(super) fn send_heartbeat(&mut self) {
        let uptime = self.started.elapsed().as_secs_f64();
        self.send(from_dataplane::Payload::ProcessStatusUpdate(
            ProcessStatusUpdate {
                iso_timestamp: tapwire_proto::text::format_rfc3339(std::time::SystemTime::now()),
                uptime,
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        ));
    }

    pub(super) fn send_endpoint_status(&mut self, spec: &EndpointSpec, status: &str) {
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

    pub(super) fn send_counters(&mut self) {
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
