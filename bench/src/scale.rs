//! The control plane at cluster scale: one real node against thousands of simulated ones
//! on etcd.
//!
//! For each size N, a lab gets a one-member etcd ([`EtcdCluster`], mutual TLS, in a
//! namespace on the underlay, killed by PID at the end) holding one IPPool and N
//! simulated nodes — a `Node` document each (an underlay address outside the lab's
//! subnets, the VTEP MAC the model derives from the name) with one `IPAMBlock` holding
//! one pod's address, that address's `IPAMHandle` and the block's `BlockAffinity` (an
//! empty block would be released by the control's IPAM repair at start) — written through `tapwire_control::datastore` (the real store and
//! model types, so the keys and shapes are Calico's), several writers at once, untimed.
//! Then one real node: its `tapwire-dataplane` first, then its `tapwire-control` on that
//! etcd, and:
//!
//! 1. **full sync**: from spawning `tapwire-control` until its `node status` says the
//!    dataplane is in sync (the dataplane's own `InSync` answer to the snapshot) and its
//!    `routes` hold a remote route for every simulated block;
//! 2. **one change**: a new simulated node's `Node`, handle and affinity are written, the control
//!    is let settle, then its block is written and timed until the control's route for
//!    the block's first address is it (`tapwirectl routes ADDRESS`: what the control
//!    has computed and sent; polled with a pause as long as
//!    the last call, at least 2 ms, so that looking takes at most half of the API
//!    thread), and until a counters round trip
//!    through the dataplane completed after that (the dataplane answers in order, so it
//!    had taken the route by then: an upper bound, and what the target judges);
//!    repeated [`ScaleOptions::changes`] times;
//! 3. **memory**: `VmRSS` of the control and the dataplane once in sync, and the
//!    control's `VmHWM` (its peak, which the full sync sets);
//! 4. to tell where the time goes, two of the control's own steps timed from the harness
//!    on the same etcd: the cluster-wide IPAM check a control runs before it serves, and
//!    one read of the whole cluster state, what a control reads at start and after a
//!    relist (a change otherwise costs it the one document its watch reports).
//!
//! [`simulated_node`], [`summarize`] are pure; [`measure_size`] drives the lab.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv4Net;
use tapwire_control::api::{Reply, Request, RouteRow};
use tapwire_control::datastore::{read_cluster_state, Datastore, DatastoreExt};
use tapwire_control::ipam::{handle_id, Ipam, RepairReport};
use tapwire_control::model::{BlockAffinity, EncapMode, IpPool, IpamBlock, IpamHandle, Node};
use tapwire_integration::controlplane::NETWORK_NAME;
use tapwire_integration::{ControlPlane, EtcdCluster, Lab, LabError};

use crate::error::{BenchError, Result};
use crate::procfs::{process_peak_rss_bytes, process_rss_bytes, running_threads};
use crate::report::ScaleResult;
use crate::stats::percentile;

/// The real node.
const NODE: &str = "node1";
/// The pool every simulated block comes from: 16384 /26 blocks, IPIP always.
pub const POOL_NAME: &str = "scale-pool";
pub const POOL_CIDR: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 128, 0, 0), 12) {
    Ok(net) => net,
    Err(_) => panic!("a valid pool"),
};
const BLOCK_PREFIX_LEN: u8 = 26;
/// Where the simulated nodes' underlay addresses are (outside the lab's 192.168.x.0/24
/// subnets, so the real node reaches them through its gateway).
const SIM_UNDERLAY: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(172, 16, 0, 0), 12) {
    Ok(net) => net,
    Err(_) => panic!("a valid subnet"),
};
/// Concurrent writers while populating.
const WRITERS: usize = 8;
/// How long the full sync may take before the run gives up on it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one change may take to show.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause between two looks at the control's API while timing.
const POLL: Duration = Duration::from_millis(2);
/// Before a timed change the control gets at least this long, then until none of its
/// threads runs (at most [`SETTLE_MAX`]) to finish with the node written before it.
const SETTLE_MIN: Duration = Duration::from_millis(50);
const SETTLE_MAX: Duration = Duration::from_secs(10);

/// How much to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOptions {
    /// Simulated node counts, each measured in a lab of its own.
    pub sizes: Vec<usize>,
    /// Timed single changes per size.
    pub changes: usize,
}

impl ScaleOptions {
    /// The full run: 1,000 and 5,000 nodes, ten changes each.
    pub fn full() -> ScaleOptions {
        ScaleOptions {
            sizes: vec![1_000, 5_000],
            changes: 10,
        }
    }

    /// The quick run (CI): 1,000 nodes, five changes.
    pub fn quick() -> ScaleOptions {
        ScaleOptions {
            sizes: vec![1_000],
            changes: 5,
        }
    }

    fn check(&self) -> Result<()> {
        let most = self.sizes.iter().max().copied().unwrap_or(0) + self.changes;
        if self.sizes.is_empty() || self.changes == 0 {
            return Err(BenchError::Invalid(
                "the scale test needs at least one size and one change".into(),
            ));
        }
        if simulated_node(most).is_none() {
            return Err(BenchError::Invalid(format!(
                "{most} simulated nodes do not fit the pool {POOL_CIDR} or the underlay {SIM_UNDERLAY}"
            )));
        }
        Ok(())
    }
}

/// One simulated node's documents.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedNode {
    /// Its underlay address; no VTEP MAC, which the model derives from the name.
    pub node: Node,
    /// Its `/26`, holding one pod's address (ordinal 0): tapwire's IPAM keeps no empty
    /// block (every control's start releases them, as Calico's IPAM GC would).
    pub block: IpamBlock,
    /// That pod's handle.
    pub handle: IpamHandle,
    pub affinity: BlockAffinity,
}

/// Simulated node `i` (0-based), or `None` past the pool's or the underlay's room.
pub fn simulated_node(i: usize) -> Option<SimulatedNode> {
    let name = format!("sim-{i:05}");
    let host = u32::try_from(i).ok()?.checked_add(1)?;
    if host >= (1u32 << (32 - u32::from(SIM_UNDERLAY.prefix_len()))) - 1 {
        return None;
    }
    let underlay = Ipv4Net::new(
        Ipv4Addr::from(u32::from(SIM_UNDERLAY.network()) + host),
        SIM_UNDERLAY.prefix_len(),
    )
    .ok()?;
    let block_bits = u32::from(BLOCK_PREFIX_LEN - POOL_CIDR.prefix_len());
    if u32::try_from(i).ok()? >= 1 << block_bits {
        return None;
    }
    let offset = u32::try_from(i).ok()? << (32 - u32::from(BLOCK_PREFIX_LEN));
    let cidr = Ipv4Net::new(
        Ipv4Addr::from(u32::from(POOL_CIDR.network()) + offset),
        BLOCK_PREFIX_LEN,
    )
    .ok()?;
    let mut block = IpamBlock::new(cidr, &name);
    let handle_id = handle_id(NETWORK_NAME, &format!("{name}-pod"), "eth0");
    block.spec.allocations.insert(0, handle_id.clone());
    let address = block.address(0)?;
    Some(SimulatedNode {
        node: Node::new(&name, underlay),
        handle: IpamHandle::new(&handle_id, cidr, address, SystemTime::now()),
        block,
        affinity: BlockAffinity::new(&name, cidr),
    })
}

/// The pool the simulated blocks are cut from.
pub fn pool() -> IpPool {
    let mut pool = IpPool::new(POOL_NAME, POOL_CIDR);
    pool.spec.block_size = BLOCK_PREFIX_LEN;
    pool.spec.ipip_mode = EncapMode::Always;
    pool
}

/// What one size measured, before summarizing.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeSamples {
    pub nodes: usize,
    pub populate_s: f64,
    pub full_sync_s: f64,
    /// Remote routes the control had once in sync.
    pub routes: usize,
    /// Each change: until the control's routes showed it, ms.
    pub change_control_ms: Vec<f64>,
    /// Each change: until a dataplane round trip after that, ms.
    pub change_dataplane_ms: Vec<f64>,
    pub control_rss_bytes: u64,
    pub control_peak_rss_bytes: u64,
    pub dataplane_rss_bytes: u64,
    pub ipam_check_s: f64,
    pub cluster_read_ms: f64,
    /// One `routes` call while polling for a change, median, ms.
    pub routes_call_ms: f64,
}

/// The figures of one size; `None` without changes.
pub fn summarize(s: &SizeSamples) -> Option<ScaleResult> {
    Some(ScaleResult {
        nodes: s.nodes,
        populate_s: s.populate_s,
        full_sync_s: s.full_sync_s,
        routes: s.routes,
        change_p50_ms: percentile(&s.change_dataplane_ms, 50.0)?,
        change_p99_ms: percentile(&s.change_dataplane_ms, 99.0)?,
        change_control_p50_ms: percentile(&s.change_control_ms, 50.0)?,
        change_dataplane_ms: s.change_dataplane_ms.clone(),
        change_control_ms: s.change_control_ms.clone(),
        control_rss_bytes: s.control_rss_bytes,
        control_peak_rss_bytes: s.control_peak_rss_bytes,
        dataplane_rss_bytes: s.dataplane_rss_bytes,
        ipam_check_s: s.ipam_check_s,
        cluster_read_ms: s.cluster_read_ms,
        routes_call_ms: s.routes_call_ms,
    })
}

/// Every size of `opts`, each in a lab of its own (dropped, so cleaned up, before the next).
pub fn measure(opts: &ScaleOptions, progress: &mut dyn FnMut(String)) -> Result<Vec<ScaleResult>> {
    opts.check()?;
    let mut out = Vec::with_capacity(opts.sizes.len());
    for &nodes in &opts.sizes {
        let started = Instant::now();
        let samples = {
            let lab = Lab::new()?;
            measure_size(&lab, nodes, opts.changes, &mut *progress)?
        };
        let result = summarize(&samples)
            .ok_or_else(|| BenchError::measure("scale", "no change was timed"))?;
        progress(format!(
            "scale {nodes}: full sync {:.2} s, one change p50 {:.1} ms / p99 {:.1} ms, control RSS \
             {:.1} MiB (peak {:.1}), dataplane RSS {:.1} MiB; {:.0} s with set-up and teardown",
            result.full_sync_s,
            result.change_p50_ms,
            result.change_p99_ms,
            mib(result.control_rss_bytes),
            mib(result.control_peak_rss_bytes),
            mib(result.dataplane_rss_bytes),
            started.elapsed().as_secs_f64()
        ));
        out.push(result);
    }
    Ok(out)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn store_error(what: &str) -> impl Fn(tapwire_control::datastore::DatastoreError) -> LabError + '_ {
    move |e| LabError::Invalid(format!("{what}: {e}"))
}

/// Writes the pool and simulated nodes `0..nodes`, [`WRITERS`] at a time.
fn populate(store: &dyn Datastore, nodes: usize) -> std::result::Result<(), LabError> {
    store
        .create_as(&pool())
        .map_err(store_error("writing the pool"))?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WRITERS)
            .map(|_| {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= nodes {
                        return Ok(());
                    }
                    write_node(store, i)?;
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| LabError::Invalid("a writer panicked".into()))??;
        }
        Ok(())
    })
}

/// Simulated node `i`.
fn sim(i: usize) -> std::result::Result<SimulatedNode, LabError> {
    simulated_node(i).ok_or_else(|| LabError::Invalid(format!("no room for simulated node {i}")))
}

/// Writes a simulated node's documents but its block.
fn write_all_but_block(
    store: &dyn Datastore,
    sim: &SimulatedNode,
) -> std::result::Result<(), LabError> {
    store
        .create_as(&sim.node)
        .map_err(store_error("writing a Node"))?;
    store
        .create_as(&sim.affinity)
        .map_err(store_error("writing a BlockAffinity"))?;
    store
        .create_as(&sim.handle)
        .map_err(store_error("writing an IPAMHandle"))?;
    Ok(())
}

/// Writes simulated node `i`: its Node, affinity, handle and block.
fn write_node(store: &dyn Datastore, i: usize) -> std::result::Result<(), LabError> {
    let sim = sim(i)?;
    write_all_but_block(store, &sim)?;
    store
        .create_as(&sim.block)
        .map_err(store_error("writing an IPAMBlock"))?;
    Ok(())
}

/// The control's remote routes: every one, or (`to`) the one it uses for an address.
fn remote_routes(
    cp: &ControlPlane<'_>,
    to: Option<Ipv4Addr>,
) -> std::result::Result<Vec<RouteRow>, LabError> {
    let request = match to {
        Some(address) => Request::RouteTo { address },
        None => Request::Routes,
    };
    match cp.api(NODE, &request)? {
        Reply::Routes { routes } => Ok(routes.into_iter().filter(|r| r.kind == "remote").collect()),
        other => Err(LabError::Invalid(format!(
            "unexpected answer to routes: {other:?}"
        ))),
    }
}

/// One size: populate, start the real node, time its full sync and `changes` changes.
pub fn measure_size(
    lab: &Lab,
    nodes: usize,
    changes: usize,
    progress: &mut dyn FnMut(String),
) -> Result<SizeSamples> {
    let etcd = EtcdCluster::start(lab, 1)?;
    let cp = ControlPlane::on_etcd(lab, &etcd)?;
    progress(format!(
        "scale {nodes}: etcd up; writing the pool and {nodes} nodes with a block each"
    ));
    let started = Instant::now();
    cp.with_store(|store| populate(store, nodes))?;
    let populate_s = started.elapsed().as_secs_f64();
    progress(format!(
        "scale {nodes}: {} documents written in {populate_s:.1} s; starting {NODE}",
        4 * nodes + 1
    ));

    cp.add_node_without_control(NODE, 0)?;
    let started = Instant::now();
    cp.spawn_control(NODE)?;
    let deadline = started + SYNC_TIMEOUT;
    let (full_sync_s, routes) = loop {
        cp.check_control(NODE)?;
        let status = cp.node_status(NODE);
        let in_sync = status
            .as_ref()
            .is_ok_and(|s| s.dataplane_connected && s.dataplane_in_sync);
        let mut routes = None;
        if in_sync {
            let count = remote_routes(&cp, None)?.len();
            if count >= nodes {
                break (started.elapsed().as_secs_f64(), count);
            }
            routes = Some(count);
        }
        if Instant::now() >= deadline {
            let status = match status {
                Ok(s) => format!(
                    "connected {}, in sync {}",
                    s.dataplane_connected, s.dataplane_in_sync
                ),
                Err(e) => e.to_string(),
            };
            return Err(BenchError::measure(
                format!("full sync at {nodes} nodes"),
                format!(
                    "not in sync with every route after {SYNC_TIMEOUT:?} ({status}; remote \
                     routes: {routes:?}); the control's log ends with:\n{}",
                    tapwire_integration::lab::tail(&cp.control_log(NODE)?, 30)
                ),
            ));
        }
        std::thread::sleep(POLL);
    };
    let pid = |what: &str, p: Option<u32>| {
        p.ok_or_else(|| BenchError::Invalid(format!("no {what} runs on {NODE}")))
    };
    let control = pid("tapwire-control", cp.control_pid(NODE)?)?;
    let dataplane = pid("tapwire-dataplane", cp.dataplane_pid(NODE)?)?;
    progress(format!(
        "scale {nodes}: full sync {full_sync_s:.2} s ({routes} remote routes); timing {changes} changes"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let control_rss_bytes = process_rss_bytes(control)?;
    let control_peak_rss_bytes = process_peak_rss_bytes(control)?;
    let dataplane_rss_bytes = process_rss_bytes(dataplane)?;

    let (change_control_ms, change_dataplane_ms, routes_call_ms) =
        cp.with_store(|store| time_changes(&cp, store, control, nodes, changes))?;
    let (ipam_check_s, cluster_read_ms) = cp.with_store(time_control_steps)?;
    progress(format!(
        "scale {nodes}: from the harness: the start-up IPAM check {ipam_check_s:.2} s, one \
         read of the cluster {cluster_read_ms:.1} ms"
    ));
    cp.check_running()?;
    Ok(SizeSamples {
        nodes,
        populate_s,
        full_sync_s,
        routes,
        change_control_ms,
        change_dataplane_ms,
        control_rss_bytes,
        control_peak_rss_bytes,
        dataplane_rss_bytes,
        ipam_check_s,
        cluster_read_ms,
        routes_call_ms,
    })
}

/// Reads of the cluster a control reads in full to recompute.
const CLUSTER_READS: usize = 5;

/// Two steps of the control, timed from the harness on the same etcd (its own client,
/// from the etcd member's namespace): the cluster-wide IPAM check every control runs
/// before it serves (`Ipam::repair`, which finds nothing to repair here), in s, and the
/// median of [`CLUSTER_READS`] reads of the whole cluster state a recompute starts with
/// (`read_cluster_state`), in ms.
fn time_control_steps(store: &dyn Datastore) -> std::result::Result<(f64, f64), LabError> {
    let started = Instant::now();
    let report = Ipam::new(store)
        .repair()
        .map_err(|e| LabError::Invalid(format!("the IPAM check: {e}")))?;
    let ipam_check_s = started.elapsed().as_secs_f64();
    if report != RepairReport::default() {
        return Err(LabError::Invalid(format!(
            "the IPAM check repaired the simulated cluster: {report:?}"
        )));
    }
    let mut reads = Vec::with_capacity(CLUSTER_READS);
    for _ in 0..CLUSTER_READS {
        let started = Instant::now();
        read_cluster_state(store).map_err(store_error("reading the cluster"))?;
        reads.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let cluster_read_ms = percentile(&reads, 50.0)
        .ok_or_else(|| LabError::Invalid("no read of the cluster".into()))?;
    Ok((ipam_check_s, cluster_read_ms))
}

/// Adds simulated nodes `nodes..nodes + changes` one at a time (see the module docs);
/// returns each change's time to the control and to the dataplane, and the median time of
/// one `routes` call while polling (what looking costs), ms.
fn time_changes(
    cp: &ControlPlane<'_>,
    store: &dyn Datastore,
    control: u32,
    nodes: usize,
    changes: usize,
) -> std::result::Result<(Vec<f64>, Vec<f64>, f64), LabError> {
    let mut to_control = Vec::with_capacity(changes);
    let mut to_dataplane = Vec::with_capacity(changes);
    let mut calls = Vec::new();
    for i in nodes..nodes + changes {
        let sim = sim(i)?;
        write_all_but_block(store, &sim)?;
        settle(control)?;
        let dst = sim.block.spec.cidr.to_string();
        let started = Instant::now();
        store
            .create_as(&sim.block)
            .map_err(store_error("writing an IPAMBlock"))?;
        loop {
            let call = Instant::now();
            let found = remote_routes(cp, Some(sim.block.spec.cidr.addr()))?
                .iter()
                .any(|r| r.dst == dst);
            let took = call.elapsed();
            calls.push(took.as_secs_f64() * 1e3);
            if found {
                break;
            }
            if started.elapsed() >= CHANGE_TIMEOUT {
                return Err(LabError::Timeout {
                    what: format!("waiting for the route to {dst} on {NODE}"),
                    after: CHANGE_TIMEOUT,
                });
            }
            // Looking costs the control a longest-prefix search of its routes: it is kept
            // busy answering at most half of the time.
            std::thread::sleep(poll_pause(took));
        }
        to_control.push(started.elapsed().as_secs_f64() * 1e3);
        match cp.api(NODE, &Request::Stats)? {
            Reply::Stats { .. } => {}
            other => {
                return Err(LabError::Invalid(format!(
                    "unexpected answer to stats: {other:?}"
                )))
            }
        }
        to_dataplane.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let routes_call_ms = percentile(&calls, 50.0)
        .ok_or_else(|| LabError::Invalid("no routes call was made".into()))?;
    Ok((to_control, to_dataplane, routes_call_ms))
}

/// The pause after a `routes` call that took `call`: [`POLL`], or as long as the call.
pub fn poll_pause(call: Duration) -> Duration {
    call.max(POLL)
}

/// Waits [`SETTLE_MIN`], then until no thread of `pid` has run in two looks in a row (at
/// most [`SETTLE_MAX`]).
fn settle(pid: u32) -> std::result::Result<(), LabError> {
    let deadline = Instant::now() + SETTLE_MAX;
    std::thread::sleep(SETTLE_MIN);
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < deadline {
        let running = running_threads(pid).map_err(|e| LabError::Invalid(e.to_string()))?;
        quiet = if running == 0 { quiet + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_nodes_have_distinct_blocks_and_addresses_in_their_ranges() {
        let Some(SimulatedNode {
            node,
            block,
            handle,
            affinity,
        }) = simulated_node(0)
        else {
            panic!("node 0")
        };
        assert_eq!(node.metadata.name, "sim-00000");
        assert_eq!(
            node.underlay().map(|u| u.to_string()),
            Some("172.16.0.1/12".into())
        );
        assert_eq!(block.spec.cidr.to_string(), "10.128.0.0/26");
        assert_eq!(block.node(), Some("sim-00000"));
        assert_eq!(affinity.spec.cidr, block.spec.cidr);
        // One pod's address, as a CNI ADD leaves it: never an empty block.
        assert_eq!(block.lowest_free(), Some(1));
        assert_eq!(handle.spec.address, Ipv4Addr::new(10, 128, 0, 0));
        assert_eq!(block.ordinal_of_handle(&handle.spec.handle_id), Some(0));
        assert_eq!(handle.spec.handle_id, "k8s-pod-network.sim-00000-pod.eth0");
        assert!(node.validate().is_ok());
        let Some(SimulatedNode { node, block, .. }) = simulated_node(5_009) else {
            panic!("node 5009")
        };
        assert_eq!(
            node.underlay().map(|u| u.addr()),
            Some(Ipv4Addr::new(172, 16, 19, 146))
        );
        // 5009 × 64 = 320576 = 4.228.64 past 10.128.0.0.
        assert_eq!(block.spec.cidr.to_string(), "10.132.228.64/26");
        assert!(POOL_CIDR.contains(&block.spec.cidr));
        // The VTEP MAC is the model's derivation from the name.
        assert_eq!(
            node.vtep_mac(),
            tapwire_control::model::MacAddr::derived_vtep("sim-05009")
        );
        // The pool holds 2^14 blocks.
        assert!(simulated_node((1 << 14) - 1).is_some());
        assert!(simulated_node(1 << 14).is_none());
    }

    #[test]
    fn the_pool_is_valid_and_cut_in_26s() {
        let pool = pool();
        assert!(pool.validate().is_ok());
        assert_eq!(pool.spec.block_size, 26);
    }

    #[test]
    fn a_size_is_summarized_on_the_dataplane_round_trip() {
        let samples = SizeSamples {
            nodes: 1000,
            populate_s: 3.0,
            full_sync_s: 0.5,
            routes: 1000,
            change_control_ms: (1..=10).map(f64::from).collect(),
            change_dataplane_ms: (1..=10).map(|i| f64::from(i) + 0.5).collect(),
            control_rss_bytes: 10 << 20,
            control_peak_rss_bytes: 20 << 20,
            dataplane_rss_bytes: 30 << 20,
            ipam_check_s: 0.4,
            cluster_read_ms: 12.0,
            routes_call_ms: 3.0,
        };
        let Some(r) = summarize(&samples) else {
            panic!("ten changes")
        };
        assert_eq!((r.change_p50_ms, r.change_p99_ms), (5.5, 10.5));
        assert_eq!(r.change_control_p50_ms, 5.0);
        let none = SizeSamples {
            change_dataplane_ms: Vec::new(),
            ..samples
        };
        assert_eq!(summarize(&none), None);
    }

    #[test]
    fn polling_leaves_the_control_half_of_the_time() {
        assert_eq!(poll_pause(Duration::from_micros(300)), POLL);
        assert_eq!(
            poll_pause(Duration::from_millis(25)),
            Duration::from_millis(25)
        );
    }

    #[test]
    fn options_fit_the_pool() {
        assert!(ScaleOptions::full().check().is_ok());
        assert!(ScaleOptions::quick().check().is_ok());
        let too_many = ScaleOptions {
            sizes: vec![20_000],
            changes: 10,
        };
        assert!(too_many.check().is_err());
    }
}
