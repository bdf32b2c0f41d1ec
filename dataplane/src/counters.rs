//! Counters: per worker, written by one thread without atomics' read-modify-write cost,
//! summed on read by the control thread.
//!
//! Each [`Counter`] has a single writer (its worker), so an increment is a relaxed load
//! and store; readers see a value that is at most a few increments old.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::forward::DropReason;
use crate::tables::Encap;

/// A single-writer monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: load+store is enough and avoids a locked instruction.
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Packets and bytes in one direction.
#[derive(Debug, Default)]
pub struct Flow {
    pub packets: Counter,
    pub bytes: Counter,
}

impl Flow {
    #[inline]
    pub fn record(&self, bytes: usize) {
        self.packets.inc();
        self.bytes.add(bytes as u64);
    }

    /// Records a super-frame as the `packets` wire packets it stands for.
    #[inline]
    pub fn record_many(&self, packets: usize, bytes: usize) {
        self.packets.add(packets as u64);
        self.bytes.add(bytes as u64);
    }
}

/// A worker's counters that are not tied to one endpoint.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub drops: [Counter; DropReason::ALL.len()],
    pub encap_tx: [Flow; 3],
    pub encap_rx: [Flow; 3],
    pub arp_replies: Counter,
    pub icmp_errors_sent: Counter,
    pub tx_errors: Counter,
    /// Frames seen on the underlay packet socket that were not for a local pod.
    pub underlay_ignored: Counter,
    /// Read from the host path TAP (what the node's kernel sent).
    pub host_rx: Flow,
    /// Written to the host path TAP (what the node's kernel was given).
    pub host_tx: Flow,
    /// Nanoseconds spent handling batches: from a wake-up that found work to the
    /// quiescent state after it (polling and waiting are not counted).
    pub busy_ns: Counter,
    /// Wake-ups that found work.
    pub batches: Counter,
}

impl WorkerCounters {
    #[inline]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }

    #[inline]
    pub fn encap_tx(&self, encap: Encap) -> &Flow {
        &self.encap_tx[encap as usize]
    }

    #[inline]
    pub fn encap_rx(&self, encap: Encap) -> &Flow {
        &self.encap_rx[encap as usize]
    }
}

/// One endpoint's traffic, sharded by worker so each shard has a single writer.
#[derive(Debug)]
pub struct EndpointCounters {
    shards: Box<[EndpointShard]>,
}

/// One worker's view of an endpoint: `rx` is what the pod sent, `tx` what it was given.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct EndpointShard {
    pub rx: Flow,
    pub tx: Flow,
    pub drops: Counter,
}

impl EndpointCounters {
    pub fn new(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1))
                .map(|_| EndpointShard::default())
                .collect(),
        }
    }

    /// The shard worker `w` writes; out-of-range workers share the last shard's slot
    /// rather than panicking (never happens when built with the worker count).
    #[inline]
    pub fn shard(&self, worker: usize) -> &EndpointShard {
        &self.shards[worker.min(self.shards.len() - 1)]
    }

    /// (rx packets, rx bytes, tx packets, tx bytes, drops) summed over workers.
    pub fn totals(&self) -> [u64; 5] {
        let mut t = [0; 5];
        for s in self.shards.iter() {
            t[0] += s.rx.packets.get();
            t[1] += s.rx.bytes.get();
            t[2] += s.tx.packets.get();
            t[3] += s.tx.bytes.get();
            t[4] += s.drops.get();
        }
        t
    }
}

/// Sums worker counters into named values, the form `CountersReply` carries.
pub fn named_totals<'a>(workers: impl Iterator<Item = &'a WorkerCounters>) -> Vec<(String, u64)> {
    let mut drops = [0u64; DropReason::ALL.len()];
    let mut enc = [[0u64; 4]; 3];
    let (mut arp, mut icmp, mut txerr, mut ignored) = (0, 0, 0, 0);
    let mut host = [0u64; 4];
    for w in workers {
        for (sum, c) in drops.iter_mut().zip(w.drops.iter()) {
            *sum += c.get();
        }
        for e in Encap::ALL {
            let i = e as usize;
            enc[i][0] += w.encap_tx[i].packets.get();
            enc[i][1] += w.encap_tx[i].bytes.get();
            enc[i][2] += w.encap_rx[i].packets.get();
            enc[i][3] += w.encap_rx[i].bytes.get();
        }
        arp += w.arp_replies.get();
        icmp += w.icmp_errors_sent.get();
        txerr += w.tx_errors.get();
        ignored += w.underlay_ignored.get();
        host[0] += w.host_rx.packets.get();
        host[1] += w.host_rx.bytes.get();
        host[2] += w.host_tx.packets.get();
        host[3] += w.host_tx.bytes.get();
    }
    let mut out = Vec::new();
    for reason in DropReason::ALL {
        out.push((format!("drop.{}", reason.name()), drops[reason as usize]));
    }
    for e in Encap::ALL {
        let [txp, txb, rxp, rxb] = enc[e as usize];
        let n = e.name();
        out.push((format!("encap.{n}.tx_packets"), txp));
        out.push((format!("encap.{n}.tx_bytes"), txb));
        out.push((format!("encap.{n}.rx_packets"), rxp));
        out.push((format!("encap.{n}.rx_bytes"), rxb));
    }
    out.push(("arp.replies".into(), arp));
    out.push(("icmp.errors_sent".into(), icmp));
    out.push(("tx.errors".into(), txerr));
    out.push(("underlay.ignored".into(), ignored));
    for (name, value) in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"]
        .into_iter()
        .zip(host)
    {
        out.push((format!("host.{name}"), value));
    }
    out
}
