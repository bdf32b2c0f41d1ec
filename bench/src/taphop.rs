//! What one TAP hop costs on this machine: the price of taking a pod's traffic out of the
//! kernel into a userspace forwarder and back, which every tapwire path pays once per node
//! (see [`crate::floor`] for how it sets the floor of each path).
//!
//! The *TAP wire*: two pods of a node, each with a tapwire pod TAP as `eth0` (built by the
//! lab as for tapwire's pods, one queue attached here with a virtio-net header and the
//! CSUM/TSO offloads tapwire asks for), joined by a forwarder that does nothing but copy:
//! one thread per direction reads a frame from one TAP and writes it, header and all, to
//! the other. TCP super-frames cross whole, as in tapwire. Each pod has a permanent
//! neighbour entry for its gateway (169.254.1.1) at the other pod's MAC, so no ARP is
//! needed and every frame is addressed to its receiver.
//!
//! A 1-stream TCP run through it costs, per Gbit, what the kernel's same-node veth path
//! (`kernel-local`: pod → veth → node → veth → pod) costs plus one TAP hop: the pod's TAP
//! read and the other TAP's write, two copies and two system calls per super-frame. The
//! run measures both in each round, one after the other, and the difference is the hop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tapwire_integration::lab::format_mac;
use tapwire_integration::{Lab, Node, Pod};
use tapwire_sys::tap::{self, TapQueue, VNET_HDR_LEN};

use crate::error::{BenchError, Result};
use crate::labs::{Pair, POD_MTU};
use crate::stats::Spread;
use crate::sys;

/// The largest frame a TAP with TSO hands over (a 64 KB super-frame and its Ethernet
/// header), after the virtio-net header.
const FRAME_BYTES: usize = 65_550;
/// How often an idle forwarder thread looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// One round of the TAP-hop measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapHopRound {
    pub round: usize,
    /// The TAP wire's 1-stream TCP rate, Gbit/s.
    pub tap_wire_gbps: f64,
    /// All busy CPU of the machine per Gbit through the TAP wire.
    pub tap_wire_machine_cpu_s_per_gbit: f64,
    /// The same for `kernel-local` in the same round.
    pub veth_machine_cpu_s_per_gbit: f64,
    /// The difference: one TAP hop, machine CPU s/Gbit.
    pub hop_s_per_gbit: f64,
}

/// The TAP hop's cost over the rounds (`results.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapHop {
    /// The median over rounds of [`TapHopRound::hop_s_per_gbit`].
    pub hop_s_per_gbit: f64,
    pub rounds: Vec<TapHopRound>,
}

impl TapHop {
    /// The median of `rounds`; `None` without rounds.
    pub fn from_rounds(rounds: Vec<TapHopRound>) -> Option<TapHop> {
        let hops: Vec<f64> = rounds.iter().map(|r| r.hop_s_per_gbit).collect();
        Some(TapHop {
            hop_s_per_gbit: Spread::of(&hops)?.median,
            rounds,
        })
    }

    /// The hop's rounds as a spread.
    pub fn spread(&self) -> Option<Spread> {
        Spread::of(
            &self
                .rounds
                .iter()
                .map(|r| r.hop_s_per_gbit)
                .collect::<Vec<_>>(),
        )
    }
}

/// Two TAP pods and their queues; see the module documentation.
#[derive(Debug)]
pub struct TapWire {
    /// `hw-a` → `hw-b`.
    pub pair: Pair,
    queues: [TapQueue; 2],
}

impl TapWire {
    /// Adds pods `hw-a` and `hw-b` on `node` (addresses from its block) and attaches a
    /// queue to each pod's TAP.
    pub fn new(lab: &Lab, node: &Node) -> Result<TapWire> {
        let a = lab.add_pod(node, "hw-a", node.pod_ip(10), POD_MTU)?;
        let b = lab.add_pod(node, "hw-b", node.pod_ip(11), POD_MTU)?;
        let queues = [attach(&a)?, attach(&b)?];
        for (pod, peer) in [(&a, &b), (&b, &a)] {
            pod.netns().ip(&[
                "neigh",
                "replace",
                "169.254.1.1",
                "lladdr",
                &format_mac(peer.mac),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
        Ok(TapWire {
            pair: Pair {
                client: a,
                server: b,
            },
            queues,
        })
    }

    /// Runs `work` while the forwarder copies frames between the two TAPs.
    pub fn forward_during<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        let stop = AtomicBool::new(false);
        let [a, b] = &self.queues;
        std::thread::scope(|scope| {
            let there = scope.spawn(|| copy_frames(a, b, &stop));
            let back = scope.spawn(|| copy_frames(b, a, &stop));
            let outcome = work();
            stop.store(true, Ordering::Release);
            for (direction, thread) in [("a → b", there), ("b → a", back)] {
                let copied = thread
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panicked")));
                if let Err(source) = copied {
                    return Err(BenchError::Io {
                        what: format!("the TAP wire's forwarder, {direction}"),
                        source,
                    });
                }
            }
            outcome
        })
    }

    /// Waits until each pod answers the other's pings (the forwarder must be running).
    pub fn wait_reachable(&self) -> Result<()> {
        self.forward_during(|| self.pair.wait_reachable())
    }
}

/// Attaches a queue with a virtio-net header and tapwire's offloads to `pod`'s `eth0`.
fn attach(pod: &Pod) -> Result<TapQueue> {
    Ok(pod.netns().run(|| {
        let queue = tap::attach_queue_with_offloads("eth0")?;
        queue.set_offloads(tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6)?;
        Ok(queue)
    })?)
}

/// Copies every frame `from` gives to `to` until `stop` is set. A frame the receiving TAP
/// refuses is dropped, as a forwarder would.
fn copy_frames(from: &TapQueue, to: &TapQueue, stop: &AtomicBool) -> std::io::Result<()> {
    let mut frame = vec![0u8; VNET_HDR_LEN + FRAME_BYTES];
    while !stop.load(Ordering::Acquire) {
        match from.read(&mut frame) {
            Ok(len) => {
                let _ = to.write(&frame[..len]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                sys::wait_readable(std::os::fd::AsFd::as_fd(from), STOP_POLL)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
