//! tapwire's userspace forwarder.
//!
//! A pod's frame arrives on a TAP queue a worker owns ([`worker`]), is parsed with the
//! views in [`packet`], decided by [`forward`] against one immutable version of the
//! [`tables`] (routes in the lock-free [`fib`]), and written to a pod queue or an
//! underlay socket ([`io`]). [`state`] turns control's messages into new table versions;
//! [`daemon`] runs the threads and the control socket; [`resolver`] finds the next
//! hops (and their MACs) of peers reached on the underlay; [`counters`] are per worker,
//! summed on read. [`metrics`] serves them (and each worker's busy time) to Prometheus;
//! [`trace`] records the next packets' walk for `tapwirectl trace`.
//!
//! [`offload`] holds the pure halves of TSO and GRO; [`rcu`] publishes versions to
//! readers with quiescent-state reclamation. Only [`io`] and [`rcu`] hold `unsafe` code.
#![deny(unsafe_code)]

pub mod counters;
pub mod daemon;
pub mod fib;
#[cfg(any(test, feature = "fixtures"))]
#[allow(clippy::expect_used)]
pub mod fixtures;
pub mod forward;
pub mod io;
mod log_limit;
pub mod metrics;
pub mod offload;
pub mod packet;
pub mod rcu;
pub mod resolver;
pub mod state;
pub mod tables;
pub mod trace;
pub mod worker;
