//! Pod attachment: opening one queue per worker on a pod's TAP, inside its namespace,
//! detaching it when control lets go or its TAP disappears, and attaching it again.

use std::io;
use std::sync::Arc;

use tapwire_proto::{from_dataplane, WorkloadEndpointStatusRemove};
use tapwire_sys::{link, netns, tap};

use crate::counters::EndpointCounters;
use crate::io::{queue_attached, Token};
use crate::state::{AttachedEndpoint, EndpointSpec};
use crate::worker::{DeadQueue, PodQueues};

use super::{Attachment, Dataplane};

impl Dataplane {
    /// A worker found one of a pod's queues dead: its TAP is gone. Detaches that
    /// attachment (once, though every worker reports it; reports about an attachment
    /// already replaced are stale and ignored), tells control the endpoint is down, and
    /// leaves it to [`Self::retry_unattached`], which attaches it again as soon as a TAP
    /// of its name exists in the pod's namespace. True if the tables must be rebuilt.
    pub(super) fn queue_dead(&mut self, dead: DeadQueue) -> bool {
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

    /// Tries again to attach endpoints that failed; true if any succeeded.
    pub(super) fn retry_unattached(&mut self) -> bool {
        let keys: Vec<String> = self.unattached.keys().cloned().collect();
        for key in &keys {
            self.attach(key);
        }
        self.unattached.len() < keys.len()
    }

    /// After a new snapshot: keep what is still wanted, attach what is new, detach the rest.
    pub(super) fn reconcile_endpoints(&mut self) {
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
    pub(super) fn attach(&mut self, key: &str) {
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
    pub(super) fn detach(&mut self, key: &str) {
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
}
