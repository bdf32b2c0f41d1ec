//! tapwire's benchmarks: the shared route-table generators the criterion benches use
//! ([`tables`]), and the `tapwire-bench` harness that measures tapwire's paths against the
//! kernel's on this host and writes `bench-report/`.
//!
//! Layout, from definitions to I/O:
//!
//! - [`tables`]: deterministic route tables and destinations (no measuring);
//! - [`stats`]: percentiles, medians, spreads; [`procfs`]: CPU time, RSS, memory and UDP
//!   counters from `/proc`;
//! - [`paths`]: the paths by name and which kernel path each tapwire path is compared with;
//! - [`floor`]: the copy floor of a TAP forwarder, modelled per path;
//! - [`ratesearch`]: the search for the highest rate delivered with under 1% loss;
//! - [`labs`]: the namespace labs realizing them (tapwire's control plane, kernel baselines);
//! - [`taphop`]: one TAP hop's cost, a copy-only forwarder between two pod TAPs;
//! - [`traffic`]: the UDP small-packet and request/response tests (iperf3 does TCP);
//! - [`fibbench`]: in-process LPM lookups, memory and update latency;
//! - [`memory`]: the dataplane's RSS with many pods and routes;
//! - [`cni`]: CNI ADD latency as pods accumulate on one node (tapwire's control plane);
//! - [`scale`]: one node's control plane against thousands of simulated nodes on etcd;
//! - [`profile`]: a machine-wide `perf` profile of each path, parsed into shares;
//! - [`report`]: `results.json`, targets, the terminal table, `report.md`, `chart.svg`;
//! - [`run`]: one run end to end; [`sys`]: the few syscalls (the only `unsafe`).
//!
//! The harness needs root and the tapwire binaries (see `tapwire_integration::lab::bin_dir`).

#![deny(unsafe_code)]

pub mod cni;
pub mod error;
pub mod fibbench;
pub mod floor;
pub mod labs;
pub mod memory;
pub mod paths;
pub mod procfs;
pub mod profile;
pub mod ratesearch;
pub mod report;
pub mod run;
pub mod scale;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;
pub mod tables;
pub mod taphop;
pub mod traffic;

pub use error::{BenchError, Result};
pub use tables::{block_prefixes, destinations, pod_routes, random_routes, real_world_len, Rng};
