//! The node agent, `tapwire-control`: registers its node, watches the datastore,
//! recomputes this node's desired dataplane state when anything changes, streams it to
//! the dataplane ([`sync`]), programs the node's kernel side of the host path and
//! natOutgoing ([`hostpath`]), runs BIRD and reads what it learns when the node routes by
//! BGP ([`bird`]) and serves the local API for the CNI plugin and the CLI (the private
//! `server` module).
//!
//! Threads: the watch loop here (the only caller of route computation), woken by the
//! datastore watcher thread (an etcd watch, or the file store woken by inotify: see
//! [`datastore::Datastore::wait_for_change`]) and by API writes; the sync thread; the host
//! path thread (it runs `nft`, which must not hold up a route change); with BGP, BIRD's
//! supervisor and the learned-route reader (which wakes the watch loop too); and one
//! thread per API connection. The desired state is shared through a mutex that
//! is held only to copy it.
//!
//! The watch loop keeps the documents routes are computed from in a
//! [`datastore::ClusterCache`]: the watch lists what changed (etcd's watch; the file
//! store's inotify watch of its kind directories), so one change costs one document and a
//! recompute only when it touches what routes read; a change the store cannot describe
//! reads the cluster again.

pub mod bird;
pub mod hostpath;
mod packet_trace;
mod server;
pub mod sync;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ipnet::Ipv4Net;
use tapwire_metrics::ScrapeServer;
use tapwire_sys::link;
use tapwire_sys::unix::InstanceLock;

use crate::datastore::{self, ClusterCache, Datastore, DatastoreError, DatastoreExt, Watcher};
use crate::ipam::Ipam;
use crate::metrics::ControlMetrics;
use crate::model::{
    format_rfc3339, IpPool, NetworkingBackend, Node, NodeBgpSpec, NodeConfig, Resource,
    TapwireNodeStatus, WorkloadEndpoint,
};
use crate::routes::{desired_state, desired_state_with, DesiredDataplane, LocalNode, RemoteRoutes};
use sync::Sync;

/// How often the node's status (heartbeat) is written.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often the agent looks for this node's addresses that no endpoint holds.
const ORPHAN_SWEEP: Duration = Duration::from_secs(60);
/// How old such an address must be before a running agent releases it: far longer than
/// an ADD holds an address before writing its endpoint (every step of it is bounded by
/// seconds), as Calico's leak grace period is.
pub(crate) const ORPHAN_GRACE: Duration = Duration::from_secs(300);
/// How often the watch loop looks at its timers (heartbeat, orphan sweep, the dataplane's
/// sync state); it reads no datastore for that. Changes wake it at once.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How long one wait of the datastore watcher lasts (it starts over at once).
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// The pause after a failed wait before the watcher tries again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("underlay interface {interface}: {source}")]
    Underlay {
        interface: String,
        source: std::io::Error,
    },
    #[error("datastore: {0}")]
    Datastore(#[from] DatastoreError),
    #[error("registering node {node}: {reason}")]
    Register { node: String, reason: String },
    #[error("API socket: {source}")]
    ApiSocket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
    /// Another `tapwire-control` serves this node (its API socket or its dataplane).
    #[error("not starting: {0}")]
    AlreadyRunning(std::io::Error),
    /// BGP (`networking_backend = "bird"`) cannot be set up.
    #[error("BGP: {reason}")]
    Bgp { reason: String },
    /// `metrics_addr` cannot be listened on.
    #[error("metrics address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What this node knows about itself from its own interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub interface: String,
    pub address: Ipv4Net,
    pub mtu_bytes: u32,
}

impl Underlay {
    /// Reads the underlay interface (in the current network namespace).
    pub fn read(interface: &str) -> Result<Underlay, AgentError> {
        let err = |source| AgentError::Underlay {
            interface: interface.to_string(),
            source,
        };
        let addr = link::ipv4_addr(interface).map_err(err)?;
        let len = link::ipv4_prefix_len(interface).map_err(err)?;
        let address = Ipv4Net::new(addr, len).map_err(|e| err(std::io::Error::other(e)))?;
        Ok(Underlay {
            interface: interface.to_string(),
            address,
            mtu_bytes: link::mtu(interface).map_err(err)?,
        })
    }
}

/// State shared by the watch loop and the API handlers.
#[derive(Debug)]
pub struct Shared {
    pub config: NodeConfig,
    pub underlay: Underlay,
    pub store: Box<dyn Datastore>,
    pub sync: Sync,
    /// The last computed desired state (None until the first computation succeeds),
    /// shared with the sync thread without copies.
    pub desired: Mutex<Option<Arc<DesiredDataplane>>>,
    /// Endpoints CNI ADDs wrote, with the store revision of the write, that a recompute
    /// may not have read yet (see [`Shared::publish_endpoint`]).
    pub fresh: Mutex<Vec<(u64, WorkloadEndpoint)>>,
    /// Wakes the watch loop: store changes, and nudges after API writes.
    pub recompute: Mutex<Sender<Wake>>,
    pub started: SystemTime,
    /// BGP, when the node's networking backend is BIRD.
    pub bgp: Option<Arc<bird::Bgp>>,
    /// What the metrics endpoint serves; the datastore above is already measured.
    pub metrics: Arc<ControlMetrics>,
}

impl Shared {
    /// The current desired state.
    pub fn desired(&self) -> Option<Arc<DesiredDataplane>> {
        lock(&self.desired).clone()
    }

    /// Tells the watch loop that the API wrote to the store: with a store that does not
    /// tell what changed, it reads the cluster again at once rather than at the next poll.
    pub fn nudge(&self) {
        if let Ok(tx) = self.recompute.lock() {
            let _ = tx.send(Wake::Nudge);
        }
    }

    /// Hands the dataplane an endpoint a CNI ADD just wrote (at store revision
    /// `revision`): the published desired state plus this endpoint, without re-reading the
    /// cluster, so an ADD costs the same with 2 pods or 200. Recomputes keep the endpoint
    /// until they have read the store at or past `revision` (then the store has it, or its
    /// deletion). `pools` are the valid pools.
    pub fn publish_endpoint(
        &self,
        revision: u64,
        endpoint: &WorkloadEndpoint,
        pools: &[&IpPool],
    ) -> Result<(), String> {
        lock(&self.fresh).push((revision, endpoint.clone()));
        let mut slot = lock(&self.desired);
        // Before the first recompute there is nothing to add to; that recompute has it.
        let Some(current) = slot.as_ref() else {
            return Ok(());
        };
        let mut next = (**current).clone();
        next.add_local_endpoint(endpoint, pools, self.underlay.address.addr())?;
        let next = Arc::new(next);
        self.sync.set_desired(Arc::clone(&next));
        *slot = Some(next);
        Ok(())
    }

    fn local(&self) -> LocalNode {
        LocalNode {
            name: self.config.node.clone(),
            underlay_mtu_bytes: self.underlay.mtu_bytes,
        }
    }
}

/// Runs the agent until the process is killed.
pub fn run(config: NodeConfig) -> Result<(), AgentError> {
    // Before anything else: a second control for this node must not take over the API
    // socket or fight the first over the dataplane connection.
    let _instance = [
        InstanceLock::for_socket(&config.api_socket),
        InstanceLock::acquire(&client_lock_path(&config.dataplane_socket)),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(AgentError::AlreadyRunning)?;
    let scrape = config
        .metrics_addr
        .map(|addr| ScrapeServer::bind(addr).map_err(|source| AgentError::Metrics { addr, source }))
        .transpose()?;
    let metrics = Arc::new(ControlMetrics::new());
    let underlay = Underlay::read(&config.underlay_interface)?;
    let store = metrics.instrument(datastore::open(&config.datastore)?);
    // A control that crashed mid-way through an IPAM write leaves indexes to rebuild.
    match Ipam::new(store.as_ref()).repair() {
        Ok(report) => tracing::info!(?report, "IPAM checked"),
        Err(err) => tracing::warn!(%err, "IPAM repair failed; continuing"),
    }
    // ADDs that the previous control did not finish hold addresses no endpoint names; no
    // ADD can be in flight on this node now (its API is not served yet, and the instance
    // lock keeps any other control away), so every such address goes at once.
    if let Err(err) = release_orphans(store.as_ref(), &config.node, Duration::ZERO) {
        tracing::warn!(%err, "releasing addresses without an endpoint failed; continuing");
    }
    register_node(store.as_ref(), &config, &underlay, false)?;
    tracing::info!(node = %config.node, underlay = %underlay.address, "node registered");

    let sync = Sync::start(config.dataplane_socket.clone(), Arc::clone(&metrics))
        .map_err(AgentError::Thread)?;
    if let Some(server) = scrape {
        tracing::info!(addr = %server.local_addr(), "serving metrics at /metrics");
        let metrics = Arc::clone(&metrics);
        server
            .spawn("tapwire-metrics", move |exposition| {
                metrics.render(exposition)
            })
            .map_err(AgentError::Thread)?;
    }
    let (tx, rx) = mpsc::channel();
    let listener = bind_api_socket(&config.api_socket, &_instance[0])?;
    let bgp = match config.networking_backend {
        NetworkingBackend::Datastore => None,
        NetworkingBackend::Bird => Some(bird::Bgp::start(&config, tx.clone())?),
    };
    let shared = Arc::new(Shared {
        config,
        underlay,
        store,
        sync,
        desired: Mutex::new(None),
        fresh: Mutex::new(Vec::new()),
        recompute: Mutex::new(tx),
        started: SystemTime::now(),
        bgp,
        metrics,
    });
    // The first read of the cluster has every change up to the revision it starts from;
    // the watch reports every change after that.
    let mut cluster = Cluster::default();
    cluster.refresh(&shared, &[]);
    let watched_from = cluster
        .revision()
        .or_else(|| shared.store.revision().ok())
        .unwrap_or(0);
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tapwire-api".into())
            .spawn(move || server::serve(listener, shared))
            .map_err(AgentError::Thread)?;
    }
    {
        let shared = Arc::clone(&shared);
        let changes = lock(&shared.recompute).clone();
        std::thread::Builder::new()
            .name("tapwire-watch".into())
            .spawn(move || {
                watch_store(
                    shared.store.as_ref(),
                    Watcher::from_revision(watched_from),
                    &changes,
                )
            })
            .map_err(AgentError::Thread)?;
    }
    let host_path = start_host_path(&shared)?;
    watch_loop(&shared, cluster, rx, host_path);
    Ok(())
}

/// What wakes the watch loop.
#[derive(Debug)]
pub enum Wake {
    /// The store changed.
    Store(datastore::Change),
    /// An API call wrote to the store.
    Nudge,
    /// The routes BGP learned changed ([`bird::Bgp::learned`]).
    Learned,
}

/// Waits for datastore changes (an etcd watch, or the file store's revision polled) and
/// wakes the watch loop for each; ends when the watch loop is gone.
fn watch_store(store: &dyn Datastore, mut watcher: Watcher, changes: &Sender<Wake>) {
    loop {
        match watcher.wait_for_change(store, WATCH_WAIT) {
            Ok(Some(change)) => {
                if let datastore::Change::Relist { revision } = change {
                    tracing::info!(revision, "the datastore's history since the last change seen is gone; reading everything again");
                }
                if changes.send(Wake::Store(change)).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(err) => {
                // Nothing is lost meanwhile: the next wait starts from the last revision
                // seen.
                tracing::error!(%err, "watching the datastore failed; trying again");
                std::thread::sleep(WATCH_RETRY);
            }
        }
    }
}

/// The lock a dataplane's one client (this agent) holds: `<dataplane socket>.client.lock`.
fn client_lock_path(dataplane_socket: &Path) -> PathBuf {
    let mut name = dataplane_socket.as_os_str().to_owned();
    name.push(".client.lock");
    PathBuf::from(name)
}

fn bind_api_socket(path: &Path, held: &InstanceLock) -> Result<UnixListener, AgentError> {
    tapwire_sys::unix::bind_private(path, held).map_err(|source| AgentError::ApiSocket {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates or refreshes this node's `Node` document: its underlay address and the
/// tapwire status; everything else a user set (VTEP MAC, tunnel address) is kept.
fn register_node(
    store: &dyn Datastore,
    config: &NodeConfig,
    underlay: &Underlay,
    in_sync: bool,
) -> Result<(), AgentError> {
    let failed = |reason: String| AgentError::Register {
        node: config.node.clone(),
        reason,
    };
    let status = TapwireNodeStatus {
        last_heartbeat: format_rfc3339(SystemTime::now()),
        underlay_interface: underlay.interface.clone(),
        dataplane_in_sync: in_sync,
    };
    for _ in 0..8 {
        let current = match store.get_as::<Node>(&config.node) {
            // Our own document, damaged: written anew (what a user had set in it is lost).
            Err(e) if e.is_damage() => {
                tracing::warn!(%e, "this node's Node document is damaged; writing it anew");
                match store.delete_as::<Node>(&config.node, None) {
                    Ok(()) | Err(DatastoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            other => other?,
        };
        let result = match current {
            None => {
                let mut node = Node::new(config.node.clone(), underlay.address);
                node.status.tapwire = Some(status.clone());
                node.validate().map_err(|e| failed(e.to_string()))?;
                store.create_as(&node).map(|_| ())
            }
            Some(mut node) => {
                let bgp = node.spec.bgp.get_or_insert(NodeBgpSpec {
                    ipv4_address: underlay.address,
                    ipv4_ipip_tunnel_addr: None,
                    as_number: None,
                    route_reflector_cluster_id: None,
                });
                bgp.ipv4_address = underlay.address;
                node.status.tapwire = Some(status.clone());
                store.update_as(&node).map(|_| ())
            }
        };
        match result {
            Ok(()) => return Ok(()),
            Err(DatastoreError::Conflict { .. } | DatastoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(failed(
        "too many concurrent updates of the Node document".into(),
    ))
}

/// A mutex's value, also after a panic elsewhere (the data here stays consistent: every
/// writer replaces whole values).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Releases `node`'s addresses that no workload endpoint holds and that are older than
/// `min_age`; returns them (handle, address). Refuses while a workload endpoint document
/// is damaged: the address it names would look unused.
pub(crate) fn release_orphans(
    store: &dyn Datastore,
    node: &str,
    min_age: Duration,
) -> Result<Vec<(String, std::net::Ipv4Addr)>, String> {
    let endpoints = store
        .list_as::<WorkloadEndpoint>()
        .map_err(|e| format!("reading workload endpoints: {e}"))?;
    if let Some(damaged) = endpoints.damaged.first() {
        return Err(format!(
            "not releasing anything while a workload endpoint is unreadable ({damaged})"
        ));
    }
    let released = Ipam::new(store)
        .release_orphans(node, &endpoints.items, min_age, SystemTime::now())
        .map_err(|e| e.to_string())?;
    for (handle, addr) in &released {
        tracing::info!(%handle, %addr, "released an address no workload endpoint holds");
    }
    Ok(released)
}

/// What the watch loop knows of the cluster: the documents routes are computed from,
/// kept current from the store's watch where the store tells what changed.
#[derive(Debug, Default)]
struct Cluster {
    /// `None` until a read of the cluster succeeds, and after one fails (the next wake
    /// reads everything again).
    cache: Option<ClusterCache>,
}

impl Cluster {
    fn revision(&self) -> Option<u64> {
        self.cache.as_ref().map(ClusterCache::revision)
    }

    /// Takes what woke the watch loop and, if routes may have changed, recomputes the
    /// desired state and hands it to the sync thread. Reads the whole cluster when
    /// nothing is known yet, when the store cannot tell what changed, and after a relist;
    /// else only applies the changes the watch listed.
    fn refresh(&mut self, shared: &Shared, wakes: &[Wake]) {
        let store = shared.store.as_ref();
        let described = store.tells_what_changed();
        let read_all = self.cache.is_none()
            || wakes.iter().any(|wake| match wake {
                Wake::Nudge => !described,
                Wake::Store(datastore::Change::Changed { objects, .. }) => objects.is_none(),
                Wake::Store(datastore::Change::Relist { .. }) => true,
                Wake::Learned => false,
            });
        let learned = wakes.iter().any(|wake| matches!(wake, Wake::Learned));
        let changed = match self.cache.as_mut() {
            Some(cache) if !read_all => {
                let mut relevant = false;
                for wake in wakes {
                    if let Wake::Store(datastore::Change::Changed {
                        revision,
                        objects: Some(objects),
                    }) = wake
                    {
                        relevant |= cache.apply(*revision, objects);
                    }
                }
                relevant
            }
            _ => match ClusterCache::read(store, Some(&shared.config.node)) {
                Ok(cache) => {
                    self.cache = Some(cache);
                    true
                }
                Err(err) => {
                    tracing::error!(%err, "reading the datastore failed; keeping the last state");
                    self.cache = None;
                    false
                }
            },
        };
        if changed || learned {
            if let Some(cache) = &self.cache {
                recompute(shared, cache);
            }
        }
    }
}

/// Recomputes the desired state from the cluster's documents and hands it to the sync
/// thread.
fn recompute(shared: &Shared, cache: &ClusterCache) {
    let mut state = cache.state();
    {
        // Endpoints CNI ADDs wrote that the documents do not hold yet.
        let mut fresh = lock(&shared.fresh);
        fresh.retain(|(written, _)| *written > cache.revision());
        for (_, endpoint) in fresh.iter() {
            if !state.endpoints.iter().any(|e| e.name() == endpoint.name()) {
                state.endpoints.push(endpoint.clone());
            }
        }
    }
    if let Some(bgp) = &shared.bgp {
        bgp.configure(&state, &shared.config);
    }
    let computed = match &shared.bgp {
        None => desired_state(&state, &shared.local()),
        Some(bgp) => {
            let learned = bgp.learned();
            desired_state_with(&state, &shared.local(), RemoteRoutes::Bgp(&learned))
        }
    };
    match computed {
        Ok(desired) => {
            for skipped in &desired.skipped {
                tracing::warn!(%skipped, "document left out of the dataplane state");
            }
            // Published under the lock, so the sync thread gets states in the order they
            // are published here and in `publish_endpoint`.
            let mut slot = lock(&shared.desired);
            if slot.as_deref() != Some(&desired) {
                let desired = Arc::new(desired);
                shared.sync.set_desired(Arc::clone(&desired));
                *slot = Some(desired);
            }
        }
        Err(err) => tracing::error!(%err, "computing routes failed; keeping the last state"),
    }
}

/// Recomputes on every datastore change (woken by [`watch_store`]) and API nudge, and
/// wakes the host path thread after; refreshes the node's heartbeat.
fn watch_loop(
    shared: &Shared,
    mut cluster: Cluster,
    wakes: Receiver<Wake>,
    host_path: Option<Sender<()>>,
) {
    let store = shared.store.as_ref();
    let mut last_heartbeat = Instant::now();
    let mut reported_in_sync = false;
    let mut last_sweep = Instant::now();
    let mut woken = Vec::new();
    loop {
        match wakes.recv_timeout(HOUSEKEEPING) {
            Ok(wake) => woken.push(wake),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Several changes at once are one recompute.
        woken.extend(wakes.try_iter());
        // After a failed read, every tick tries again.
        if !woken.is_empty() || cluster.cache.is_none() {
            cluster.refresh(shared, &woken);
            woken.clear();
        }
        if let Some(host_path) = &host_path {
            let _ = host_path.send(());
        }
        let in_sync = shared.sync.status.read(|s| s.in_sync);
        if last_heartbeat.elapsed() >= HEARTBEAT || in_sync != reported_in_sync {
            match register_node(store, &shared.config, &shared.underlay, in_sync) {
                Ok(()) => reported_in_sync = in_sync,
                Err(err) => tracing::warn!(%err, "refreshing the node status failed"),
            }
            last_heartbeat = Instant::now();
        }
        if last_sweep.elapsed() >= ORPHAN_SWEEP {
            if let Err(err) = release_orphans(store, &shared.config.node, ORPHAN_GRACE) {
                tracing::warn!(%err, "releasing addresses without an endpoint failed");
            }
            last_sweep = Instant::now();
        }
    }
}

/// Starts the thread that keeps the node's kernel programmed for the host path, when the
/// node has one; returns what wakes it. Its own thread: programming runs `nft`, which takes
/// a tenth of a second with thousands of peers and must not hold up the next route change.
/// It programs the latest desired state when woken and at least every [`HOUSEKEEPING`]
/// (retries, the periodic refresh); it ends with the watch loop.
fn start_host_path(shared: &Arc<Shared>) -> Result<Option<Sender<()>>, AgentError> {
    if shared.config.host_interface.is_empty() {
        return Ok(None);
    }
    let mut host_path = hostpath::HostPath::new(
        &shared.config.host_interface,
        &shared.underlay.interface,
        shared.underlay.address.addr(),
    );
    let (tx, wakes) = mpsc::channel::<()>();
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("tapwire-hostpath".into())
        .spawn(move || loop {
            match wakes.recv_timeout(HOUSEKEEPING) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Only the latest state matters.
            wakes.try_iter().for_each(drop);
            if let Some(desired) = shared.desired() {
                host_path.reconcile(&desired);
            }
        })
        .map_err(AgentError::Thread)?;
    Ok(Some(tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_watcher_wakes_the_loop_on_each_change_and_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(datastore::FileStore::open(dir.path()).unwrap());
        let (tx, rx) = mpsc::channel();
        let watching = {
            let store = Arc::clone(&store);
            let from = Watcher::new(store.as_ref()).unwrap();
            std::thread::spawn(move || watch_store(store.as_ref(), from, &tx))
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "nothing changed"
        );
        store
            .create_as(&IpPool::new("p", "10.65.0.0/16".parse().unwrap()))
            .unwrap();
        let written = Instant::now();
        rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert!(written.elapsed() < Duration::from_secs(1));
        // The loop is gone: the watcher ends at the next change.
        drop(rx);
        store
            .create_as(&IpPool::new("q", "10.66.0.0/16".parse().unwrap()))
            .unwrap();
        watching.join().unwrap();
    }

    #[test]
    fn a_damaged_own_node_document_is_written_anew() {
        let dir = tempfile::tempdir().unwrap();
        let store = datastore::FileStore::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("Node")).unwrap();
        std::fs::write(dir.path().join("Node/node-a.json"), "not json").unwrap();
        let config = NodeConfig::parse(
            "node = \"node-a\"\nunderlay_interface = \"eth0\"\n",
            Path::new("node.toml"),
        )
        .unwrap();
        let underlay = Underlay {
            interface: "eth0".into(),
            address: "192.168.0.1/24".parse().unwrap(),
            mtu_bytes: 1500,
        };
        register_node(&store, &config, &underlay, false).unwrap();
        let node = store.get_as::<Node>("node-a").unwrap().unwrap();
        assert_eq!(node.underlay(), Some(underlay.address));
    }

    /// CrossSubnet's "same subnet" is decided on the prefix the node registers: the one
    /// its underlay interface really has, not a default.
    #[test]
    fn the_underlay_is_read_with_its_real_prefix() {
        use tapwire_sys::testing::{is_root, ScratchNetns};
        if !is_root() {
            return;
        }
        let ns = ScratchNetns::new("twul").unwrap();
        ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"])
            .unwrap();
        ns.ip(&["link", "set", "u0", "mtu", "1400", "up"]).unwrap();
        ns.ip(&["addr", "add", "10.9.8.200/25", "dev", "u0"])
            .unwrap();
        let read = tapwire_sys::netns::run_in_netns(ns.path(), || {
            Ok(Underlay::read("u0").map_err(|e| e.to_string()))
        })
        .unwrap()
        .unwrap();
        assert_eq!(read.address, "10.9.8.200/25".parse::<Ipv4Net>().unwrap());
        assert_eq!(read.mtu_bytes, 1400);
    }
}
