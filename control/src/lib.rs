//! The tapwire control plane: the node agent's library.
//!
//! The control plane owns cluster state (datastore, IPAM, node registration), computes the
//! desired dataplane state and streams it to `tapwire-dataplane`, and sets up pod interfaces
//! for the CNI plugin. It never forwards packets and never holds TAP queues; that is the
//! dataplane's job.
//!
//! Modules, from data to decisions:
//!
//! - [`model`]: the documents (calicoctl-shaped `IPPool`, `Node`, `WorkloadEndpoint`, the
//!   IPAM documents) and the node's TOML configuration; parsing and validation only.
//! - [`bgp`]: BGP with BIRD (Calico's `bird` backend): the BGPConfiguration and BGPPeer
//!   documents, BIRD's configuration rendered from cluster state, its control socket.
//! - [`datastore`]: where documents live — the [`datastore::Datastore`] trait with
//!   compare-and-swap updates and a global revision, the embedded [`datastore::FileStore`]
//!   (several processes share one directory), [`datastore::EtcdStore`] (etcd v3 in Calico's
//!   key layout, for several hosts), an in-memory store, and waiting for changes (etcd
//!   watches, the file store's inotify; the memory store polls the revision).
//! - [`ipam`]: one address per pod from the pools' blocks, safe under concurrent
//!   assignments on several nodes.
//! - [`routes`]: a pure function from cluster state to one node's desired dataplane state,
//!   and its Felix-shaped messages (full snapshot or diff).
//! - [`podnet`]: building, reading back and deleting a pod's `eth0` (a persistent
//!   multi-queue TAP) inside the pod's network namespace, the way Calico's CNI plugin builds
//!   a veth.
//! - [`cli`]: what `tapwirectl` prints (calicoctl-shaped tables, YAML/JSON, node status,
//!   routes, counters); the binary does the talking.
//! - [`metrics`]: the agent's Prometheus metrics (datastore, IPAM, sync and CNI latencies,
//!   errors), served with `metrics_addr`.
//! - [`cni`]: the `tapwire` CNI plugin's side of the CNI protocol (environment, network
//!   configuration, results in the spec version the runtime asks for, error objects); the
//!   agent does the work behind [`api`].
//!
//! No `unsafe` here: every syscall goes through `tapwire_sys` (or `rustix`'s safe API for
//! the file store's `flock`).

#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod bgp;
pub mod cli;
pub mod cni;
pub mod datastore;
pub mod ipam;
pub mod metrics;
pub mod model;
pub mod podnet;
pub mod routes;
