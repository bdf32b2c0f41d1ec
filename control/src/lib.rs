//! The tapwire control plane: the node agent's library.
//!
//! The control plane owns cluster state (datastore, IPAM, node registration), computes the
//! desired dataplane state and streams it to `tapwire-dataplane`, and sets up pod interfaces
//! for the CNI plugin. It never forwards packets and never holds TAP queues; that is the
//! dataplane's job.
//!
//! This first slice holds [`podnet`]: building, reading back and deleting a pod's `eth0`
//! (a persistent multi-queue TAP) inside the pod's network namespace, the way Calico's CNI
//! plugin builds a veth. Datastore, IPAM, route computation and the CNI plugin follow.
//!
//! No `unsafe` here: every syscall goes through `tapwire_sys`.

#![deny(unsafe_code)]

pub mod podnet;
