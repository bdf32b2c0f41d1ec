//! The local API: one thread per connection, one request per connection (see
//! [`crate::api`]). CNI calls build and tear down pod interfaces and addresses; CLI calls
//! read and write documents and ask the dataplane for counters.
//!
//! Every CNI ADD undoes what it did when a later step fails, so a failed ADD leaves no
//! interface, address or endpoint behind.

use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tapwire_proto::POD_GATEWAY;

use super::Shared;
use crate::api::{
    codes, read_request, write_response, ApiError, BgpStatusReply, CniAddReply, CniRequest,
    CniRoute, NodeStatusReply, PeerRow, Reply, Request, ResourceKind, Response, RouteRow,
};
use crate::datastore::{check_document_size, Datastore, DatastoreError, DatastoreExt};
use crate::ipam::{Ipam, IpamError, ReleaseError};
use crate::metrics::ControlMetrics;
use crate::model::{
    check_batch, format_rfc3339, parse_documents, to_document_value, BgpConfiguration, BgpPeer,
    Document, IpPool, IpamBlock, Metadata, Node, Resource, WorkloadEndpoint, WorkloadEndpointSpec,
};
use crate::podnet::{self, pod_mtu, PodInterfaceSpec};
use crate::routes::{worst_encap, RouteEntry, RouteKind};

/// How long a CNI ADD waits for the dataplane to attach the new pod's queues.
const ATTACH_WAIT: Duration = Duration::from_secs(5);
/// How long `stats` waits for the dataplane's counters.
const COUNTERS_WAIT: Duration = Duration::from_secs(3);

pub(super) fn serve(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "accepting an API connection failed");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("tapwire-api-conn".into())
            .spawn(move || handle_connection(&mut stream, &shared));
        if let Err(err) = spawned {
            tracing::warn!(%err, "starting an API handler failed");
        }
    }
}

fn handle_connection(stream: &mut UnixStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let response = match read_request(stream) {
        Ok(request) => match handle(shared, request) {
            Ok(reply) => Response::Ok(reply),
            Err(err) => Response::Error(err),
        },
        Err(err) => Response::Error(err),
    };
    if let Response::Error(err) = &response {
        tracing::info!(code = err.code, msg = %err.msg, details = %err.details, "API request failed");
    }
    let _ = write_response(stream, &response);
}

/// Answers one request; CNI requests are timed into the metrics.
fn handle(shared: &Shared, request: Request) -> Result<Reply, ApiError> {
    let cni = ControlMetrics::cni_command(&request);
    let started = Instant::now();
    let result = dispatch(shared, request);
    if let Some(command) = cni {
        shared
            .metrics
            .cni_request(command, started.elapsed(), result.is_ok());
    }
    result
}

fn dispatch(shared: &Shared, request: Request) -> Result<Reply, ApiError> {
    match request {
        Request::CniAdd(req) => cni_add(shared, &req).map(Reply::CniAdd),
        Request::CniDel(req) => cni_del(shared, &req).map(|()| Reply::Done),
        Request::CniCheck(req) => cni_check(shared, &req).map(|()| Reply::Done),
        Request::CniStatus => cni_status(shared).map(|()| Reply::Done),
        Request::NodeStatus => Ok(Reply::NodeStatus(node_status(shared)?)),
        Request::BgpStatus => Ok(Reply::BgpStatus {
            bgp: shared.bgp.as_ref().map(|bgp| {
                let status = bgp.status();
                BgpStatusReply {
                    daemon: status.daemon,
                    peers: status
                        .peers
                        .into_iter()
                        .map(|peer| PeerRow {
                            address: peer.address.to_string(),
                            peer_type: peer.peer_type.describe().to_string(),
                            state: if peer.up { "up" } else { "down" }.to_string(),
                            since: peer.since,
                            info: peer.info,
                        })
                        .collect(),
                }
            }),
        }),
        Request::Get { kind, name } => get(shared, kind, name.as_deref()),
        Request::Apply { documents } => apply(shared, &documents),
        Request::Delete { kind, name } => delete(shared, kind, &name),
        Request::Routes => Ok(Reply::Routes {
            routes: routes(shared, None),
        }),
        Request::RouteTo { address } => Ok(Reply::Routes {
            routes: routes(shared, Some(address)),
        }),
        Request::ReleaseOrphans => {
            let released = super::release_orphans(
                shared.store.as_ref(),
                &shared.config.node,
                super::ORPHAN_GRACE,
            )
            .map_err(|e| {
                ApiError::new(
                    codes::DATASTORE,
                    "releasing addresses without an endpoint failed",
                    e,
                )
            })?;
            Ok(Reply::Changed {
                results: Vec::new(),
                notes: released
                    .iter()
                    .map(|(handle, addr)| format!("released {addr} ({handle})"))
                    .collect(),
            })
        }
        Request::Version => Ok(Reply::Version {
            agent: env!("CARGO_PKG_VERSION").to_string(),
            dataplane: shared
                .sync
                .status
                .read(|s| s.connected.then(|| s.dataplane_version.clone()).flatten()),
        }),
        Request::IpamShow => Ipam::new(shared.store.as_ref())
            .usage()
            .map(Reply::IpamShow)
            .map_err(ipam_error),
        Request::IpamCheck => Ipam::new(shared.store.as_ref())
            .check()
            .map(Reply::IpamCheck)
            .map_err(ipam_error),
        Request::IpamRelease { address } => {
            let handle = Ipam::new(shared.store.as_ref())
                .release_address(address)
                .map_err(|err| match err {
                    ReleaseError::Ipam(err) => ipam_error(err),
                    refused => {
                        ApiError::new(codes::BAD_REQUEST, "not released", refused.to_string())
                    }
                })?;
            tracing::info!(%address, %handle, "address released by request");
            Ok(Reply::Changed {
                results: vec![format!("{address} (handle {handle})")],
                notes: Vec::new(),
            })
        }
        Request::Trace {
            count,
            pod,
            timeout_ms,
        } => {
            super::packet_trace::trace(shared, count, pod.as_deref(), timeout_ms).map(Reply::Trace)
        }
        Request::Stats => match shared.sync.counters(COUNTERS_WAIT) {
            Some(counters) => Ok(Reply::Stats { counters }),
            None => Err(ApiError::new(
                codes::TRY_AGAIN_LATER,
                "the dataplane did not answer",
                format!(
                    "no counters from {} within {COUNTERS_WAIT:?}",
                    shared.config.dataplane_socket.display()
                ),
            )),
        },
    }
}

fn datastore_error(what: &str, err: DatastoreError) -> ApiError {
    match err {
        // Both are worth a retry (CNI's "try again later"); an unreachable store is said
        // first, since that is what the operator must fix.
        DatastoreError::Unreachable { .. } => ApiError::new(
            codes::TRY_AGAIN_LATER,
            "the datastore is unreachable",
            format!("{what}: {err}"),
        ),
        DatastoreError::Locked { .. } => {
            ApiError::new(codes::TRY_AGAIN_LATER, what, err.to_string())
        }
        _ => ApiError::new(codes::DATASTORE, what, err.to_string()),
    }
}

fn ipam_error(err: IpamError) -> ApiError {
    match err {
        IpamError::NoPool { .. } | IpamError::ExhaustedPool { .. } => ApiError::new(
            codes::POOL_EXHAUSTED,
            "no free pod address",
            err.to_string(),
        ),
        IpamError::Contention { .. } => {
            ApiError::new(codes::TRY_AGAIN_LATER, "IPAM is busy", err.to_string())
        }
        IpamError::Datastore(err) => datastore_error("IPAM failed", err),
        other => ApiError::new(codes::DATASTORE, "IPAM failed", other.to_string()),
    }
}

/// The IPAM handle of a pod interface ([`crate::ipam::handle_id`]).
fn handle_id(req: &CniRequest) -> String {
    crate::ipam::handle_id(&req.network, &req.container_id, &req.ifname)
}

fn check_cni_request(req: &CniRequest, need_netns: bool) -> Result<(), ApiError> {
    let invalid = |msg: &str| Err(ApiError::new(codes::INVALID_ENVIRONMENT, msg, ""));
    if req.container_id.is_empty() {
        return invalid("CNI_CONTAINERID is empty");
    }
    if req.ifname.is_empty() {
        return invalid("CNI_IFNAME is empty");
    }
    if need_netns && req.netns.is_empty() {
        return invalid("CNI_NETNS is empty");
    }
    Ok(())
}

/// Orchestrator, workload and namespace of the pod: Kubernetes names when the runtime
/// passed them, else the container id.
fn workload_of(req: &CniRequest) -> (&'static str, String, Option<String>) {
    match (&req.pod_namespace, &req.pod_name) {
        (Some(ns), Some(name)) if !name.is_empty() => ("k8s", name.clone(), Some(ns.clone())),
        _ => ("cni", req.container_id.clone(), None),
    }
}

fn cni_add(shared: &Shared, req: &CniRequest) -> Result<CniAddReply, ApiError> {
    check_cni_request(req, true)?;
    let netns = Path::new(&req.netns);
    if !netns.exists() {
        return Err(ApiError::new(
            codes::UNKNOWN_CONTAINER,
            "the container's network namespace does not exist",
            format!("CNI_NETNS={}", req.netns),
        ));
    }
    if is_own_netns(netns) {
        return Err(ApiError::new(
            codes::INVALID_ENVIRONMENT,
            "CNI_NETNS is the node's own network namespace, not a container's",
            format!(
                "CNI_NETNS={}: refusing to put a pod interface on the node",
                req.netns
            ),
        ));
    }
    let node = &shared.config.node;
    let store = shared.store.as_ref();
    let ipam = Ipam::new(store);
    let handle = handle_id(req);
    let address = (shared.metrics)
        .ipam("assign", || ipam.assign(node, &handle))
        .map_err(ipam_error)?;
    let release = || {
        if let Err(err) = shared.metrics.ipam("release", || ipam.release(&handle)) {
            tracing::error!(%handle, %err, "releasing the address of a failed ADD failed");
        }
    };

    // The pools as stored now, not as the watch loop last saw them: a pool applied through
    // another node's agent a moment ago may not have reached this node's desired state.
    let pools = match store.list_as::<IpPool>() {
        Ok(pools) => pools.items,
        Err(err) => {
            release();
            return Err(datastore_error("reading IP pools failed", err));
        }
    };
    let pools: Vec<&IpPool> = pools.iter().filter(|p| p.validate().is_ok()).collect();
    let encap = worst_encap(pools.iter().copied());
    let largest = pod_mtu(shared.underlay.mtu_bytes, encap);
    let mtu_bytes = match req.mtu {
        None => largest,
        Some(asked) if asked <= largest => asked,
        Some(asked) => {
            release();
            return Err(ApiError::new(
                codes::INVALID_NETWORK_CONFIG,
                "invalid mtu",
                format!(
                    "the network configuration asks for mtu {asked}; a pod on node {} can \
                     send at most {largest} bytes ({} on the underlay {}, less {} for {} \
                     encapsulation): lower it, or leave it out",
                    shared.config.node,
                    shared.underlay.mtu_bytes,
                    shared.underlay.interface,
                    encap.overhead_bytes(),
                    encap.name(),
                ),
            ));
        }
    };
    let spec = PodInterfaceSpec {
        netns_path: netns.to_path_buf(),
        ifname: req.ifname.clone(),
        address,
        mtu_bytes,
    };
    let interface = match create_replacing_leftover(&spec) {
        Ok(i) => i,
        Err(err) => {
            release();
            return Err(ApiError::new(
                codes::INTERFACE,
                "building the pod interface failed",
                err.to_string(),
            ));
        }
    };

    let (orchestrator, workload, namespace) = workload_of(req);
    let mac = crate::model::MacAddr(interface.mac);
    let mut metadata = Metadata::named(endpoint_name(node, req));
    metadata.namespace = namespace;
    let endpoint = WorkloadEndpoint {
        metadata,
        spec: WorkloadEndpointSpec {
            node: node.clone(),
            orchestrator: orchestrator.to_string(),
            workload,
            endpoint: req.ifname.clone(),
            interface_name: req.ifname.clone(),
            ip_networks: vec![Ipv4Net::from(address)],
            mac: Some(mac),
            netns: Some(req.netns.clone()),
            container_id: Some(req.container_id.clone()),
            profiles: Vec::new(),
        },
    };
    let key = endpoint.dataplane_id().key();
    // Only a report about this interface counts: forget what the dataplane said about an
    // earlier one of the same endpoint (a retried ADD).
    shared.sync.status.forget_endpoint(&key);
    let written = match store.apply_as(&endpoint) {
        Ok(written) => written,
        Err(err) => {
            let _ = podnet::delete_pod_interface(netns, &req.ifname);
            release();
            return Err(datastore_error(
                "recording the workload endpoint failed",
                err,
            ));
        }
    };

    // The pod is served only once the dataplane holds its queues: until then its packets
    // go nowhere, so an ADD that cannot get there fails and undoes itself.
    let revision = written.metadata.revision().unwrap_or(0);
    if let Err(err) = shared.publish_endpoint(revision, &written, &pools) {
        tracing::warn!(%key, %err, "the new endpoint cannot go to the dataplane");
    }
    shared.nudge();
    let attached = shared.sync.status.wait_for(ATTACH_WAIT, |s| {
        s.endpoints.get(&key).is_some_and(|state| state == "up")
    });
    if !attached {
        let (connected, in_sync, state) = shared
            .sync
            .status
            .read(|s| (s.connected, s.in_sync, s.endpoints.get(&key).cloned()));
        tracing::warn!(%key, connected, in_sync, ?state, "the dataplane did not attach the pod; undoing the ADD");
        if let Err(err) = store.delete_as::<WorkloadEndpoint>(endpoint.name(), None) {
            tracing::error!(%key, %err, "removing the endpoint of a failed ADD failed");
        }
        shared.nudge();
        let _ = podnet::delete_pod_interface(netns, &req.ifname);
        release();
        let why = if !connected {
            format!(
                "tapwire-dataplane is not connected ({})",
                shared.config.dataplane_socket.display()
            )
        } else if !in_sync {
            "tapwire-dataplane has not applied the node's state yet".to_string()
        } else {
            format!(
                "endpoint {key} is {}",
                state.as_deref().unwrap_or("not reported")
            )
        };
        return Err(ApiError::new(
            codes::TRY_AGAIN_LATER,
            format!("the dataplane did not attach the pod within {ATTACH_WAIT:?}"),
            format!("{why}; nothing was left behind, retry the ADD"),
        ));
    }
    Ok(CniAddReply {
        interface: req.ifname.clone(),
        mac: mac.to_string(),
        sandbox: req.netns.clone(),
        address: format!("{address}/32"),
        gateway: POD_GATEWAY.to_string(),
        mtu: interface.mtu_bytes,
        routes: vec![CniRoute {
            dst: "0.0.0.0/0".into(),
            gw: Some(POD_GATEWAY.to_string()),
        }],
    })
}

/// Whether `netns` is the namespace this agent runs in (the node's): a runtime bug or a
/// careless `CNI_NETNS=/proc/self/ns/net` must not put a pod interface on the node.
fn is_own_netns(netns: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let own = id(Path::new("/proc/thread-self/ns/net"));
    own.is_some() && id(netns) == own
}

/// Creates the pod interface; a TAP of that name already there is what an earlier ADD of
/// this container left (it crashed, or the runtime retries) and is replaced. Anything else
/// of that name is not ours and stays: the ADD fails.
fn create_replacing_leftover(
    spec: &PodInterfaceSpec,
) -> Result<podnet::PodInterface, podnet::PodnetError> {
    match podnet::create_pod_interface(spec) {
        Err(podnet::PodnetError::CreateTap { source, .. })
            if source.raw_os_error() == Some(libc::EEXIST)
                && podnet::delete_pod_interface(&spec.netns_path, &spec.ifname).is_ok() =>
        {
            tracing::info!(netns = %spec.netns_path.display(), ifname = %spec.ifname, "replaced a TAP an earlier ADD left");
            podnet::create_pod_interface(spec)
        }
        other => other,
    }
}

/// The endpoint's name: Calico's `<node>-<orchestrator>-<workload>-<endpoint>`, prefixed
/// with the Kubernetes namespace, because endpoint names are keys of one flat collection
/// and pods of the same name in two namespaces must not collide.
fn endpoint_name(node: &str, req: &CniRequest) -> String {
    let (orchestrator, workload, namespace) = workload_of(req);
    let calico_name = WorkloadEndpoint::calico_name(node, orchestrator, &workload, &req.ifname);
    match namespace {
        Some(ns) => format!("{ns}.{calico_name}"),
        None => calico_name,
    }
}

/// This node's endpoint for the CNI call, if recorded: by the name the ADD gave it (one
/// read), else — a call without the pod's Kubernetes names, such as GC's DELs — by
/// container id and interface among all endpoints.
fn find_endpoint(shared: &Shared, req: &CniRequest) -> Result<Option<WorkloadEndpoint>, ApiError> {
    let store = shared.store.as_ref();
    let ours = |ep: &WorkloadEndpoint| {
        ep.spec.node == shared.config.node
            && ep.spec.container_id.as_deref() == Some(req.container_id.as_str())
            && ep.spec.endpoint == req.ifname
    };
    let name = endpoint_name(&shared.config.node, req);
    if let Ok(Some(ep)) = store.get_as::<WorkloadEndpoint>(&name) {
        if ours(&ep) {
            return Ok(Some(ep));
        }
    }
    let endpoints = store
        .list_as::<WorkloadEndpoint>()
        .map_err(|e| datastore_error("reading workload endpoints failed", e))?
        .items;
    Ok(endpoints.into_iter().find(ours))
}

/// How long a DEL waits for the dataplane to let go of the pod's queues before it
/// removes the TAP anyway.
const DETACH_WAIT: Duration = Duration::from_secs(2);

/// DEL, in an order that is safe to repeat after any failure: the endpoint record first
/// (if the datastore refuses, nothing else was touched), then — once the dataplane has
/// let go of the pod — its TAP, then its address.
fn cni_del(shared: &Shared, req: &CniRequest) -> Result<(), ApiError> {
    check_cni_request(req, false)?;
    let store = shared.store.as_ref();
    let endpoint = find_endpoint(shared, req)?;
    if let Some(ep) = &endpoint {
        match store.delete_as::<WorkloadEndpoint>(ep.name(), None) {
            Ok(()) | Err(DatastoreError::NotFound { .. }) => {}
            Err(e) => return Err(datastore_error("removing the workload endpoint failed", e)),
        }
        shared.nudge();
        let key = ep.dataplane_id().key();
        let detached = shared.sync.status.wait_for(DETACH_WAIT, |s| {
            !s.connected || !s.endpoints.contains_key(&key)
        });
        if !detached {
            tracing::warn!(%key, "the dataplane still holds the pod; removing its TAP anyway");
        }
    }
    // The netns from the call, else the one recorded at ADD.
    let netns = if req.netns.is_empty() {
        endpoint.as_ref().and_then(|ep| ep.spec.netns.clone())
    } else {
        Some(req.netns.clone())
    };
    if let Some(netns) = netns {
        podnet::delete_pod_interface(Path::new(&netns), &req.ifname).map_err(|e| {
            ApiError::new(
                codes::INTERFACE,
                "removing the pod interface failed",
                e.to_string(),
            )
        })?;
    }
    let ipam = Ipam::new(store);
    (shared.metrics)
        .ipam("release", || ipam.release(&handle_id(req)))
        .map_err(ipam_error)?;
    shared.nudge();
    Ok(())
}

fn cni_check(shared: &Shared, req: &CniRequest) -> Result<(), ApiError> {
    check_cni_request(req, true)?;
    let Some(endpoint) = find_endpoint(shared, req)? else {
        return Err(ApiError::new(
            codes::UNKNOWN_CONTAINER,
            "no workload endpoint for this container",
            format!("container {} interface {}", req.container_id, req.ifname),
        ));
    };
    let interface = podnet::pod_interface(Path::new(&req.netns), &req.ifname).map_err(|e| {
        ApiError::new(
            codes::INTERFACE,
            "the pod interface is not as ADD left it",
            e.to_string(),
        )
    })?;
    let want: Vec<Ipv4Addr> = endpoint.spec.ip_networks.iter().map(|n| n.addr()).collect();
    if !want.contains(&interface.address) {
        return Err(ApiError::new(
            codes::INTERFACE,
            "the pod interface has the wrong address",
            format!(
                "{} has {}, expected {:?}",
                req.ifname, interface.address, want
            ),
        ));
    }
    // An interface nobody reads is a black hole: the dataplane must hold its queues.
    let key = endpoint.dataplane_id().key();
    let state = shared.sync.status.read(|s| {
        (s.connected && s.in_sync)
            .then(|| s.endpoints.get(&key).cloned())
            .flatten()
    });
    if state.as_deref() != Some("up") {
        return Err(ApiError::new(
            codes::INTERFACE,
            "the pod interface is not served by the dataplane",
            format!(
                "endpoint {key}: {}",
                match state {
                    Some(state) => format!("the dataplane reports it {state}"),
                    None => "the dataplane does not hold it".to_string(),
                }
            ),
        ));
    }
    Ok(())
}

fn cni_status(shared: &Shared) -> Result<(), ApiError> {
    let pools = shared
        .store
        .list_as::<IpPool>()
        .map_err(|e| datastore_error("reading IP pools failed", e))?
        .items;
    if !pools.iter().any(|p| !p.spec.disabled) {
        return Err(ApiError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            "no enabled IP pool",
            "apply an IPPool with tapwirectl apply -f",
        ));
    }
    if !shared.sync.status.read(|s| s.connected) {
        return Err(ApiError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            "the dataplane is not connected",
            format!("{}", shared.config.dataplane_socket.display()),
        ));
    }
    Ok(())
}

fn node_status(shared: &Shared) -> Result<NodeStatusReply, ApiError> {
    let nodes = shared
        .store
        .list_as::<Node>()
        .map_err(|e| datastore_error("reading nodes failed", e))?
        .items;
    let (connected, in_sync, heartbeat, since) = shared.sync.status.read(|s| {
        (
            s.connected,
            s.in_sync,
            s.last_heartbeat.map(|t| t.elapsed().as_secs()),
            s.since,
        )
    });
    let desired = shared.desired();
    let since = since.map(format_rfc3339).unwrap_or_default();
    let peers = nodes
        .iter()
        .filter(|n| n.name() != shared.config.node)
        .filter_map(|n| {
            let address = n.underlay()?.addr().to_string();
            let programmed = desired
                .as_ref()
                .is_some_and(|d| d.hosts.contains_key(n.name()));
            let up = programmed && in_sync;
            Some(PeerRow {
                address,
                peer_type: if n.is_managed() {
                    "node-to-node mesh".into()
                } else {
                    "declared host".into()
                },
                state: if up { "up" } else { "down" }.into(),
                since: since.clone(),
                info: if up {
                    "Established".into()
                } else if !connected {
                    "Dataplane not connected".into()
                } else {
                    "Routes not programmed".into()
                },
            })
        })
        .collect();
    Ok(NodeStatusReply {
        node: shared.config.node.clone(),
        underlay_address: shared.underlay.address.to_string(),
        dataplane_connected: connected,
        dataplane_in_sync: in_sync,
        last_heartbeat_secs: heartbeat,
        peers,
    })
}

/// The error for a document that is damaged in the store, saying how to repair it.
fn damaged_error(kind: &str, name: &str, err: &DatastoreError) -> ApiError {
    ApiError::new(
        codes::DATASTORE,
        format!("{kind} {name:?} is damaged in the datastore"),
        format!("{err}; {}", crate::cli::repair_hint(kind, name)),
    )
}

fn list_values<T: Resource>(store: &dyn Datastore, name: Option<&str>) -> Result<Reply, ApiError> {
    let (items, damaged) = match name {
        Some(name) => match store.get_as::<T>(name) {
            Ok(Some(doc)) => (vec![to_document_value(&doc)], Vec::new()),
            Ok(None) => {
                return Err(ApiError::new(
                    codes::BAD_REQUEST,
                    format!("{} {name:?} not found", T::KIND),
                    "",
                ))
            }
            Err(e) if e.is_damage() => return Err(damaged_error(T::KIND, name, &e)),
            Err(e) => return Err(datastore_error("reading the datastore failed", e)),
        },
        None => {
            let listing = store
                .list_as::<T>()
                .map_err(|e| datastore_error("reading the datastore failed", e))?;
            let items = listing.items.iter().map(to_document_value).collect();
            (items, listing.damaged)
        }
    };
    Ok(Reply::Documents { items, damaged })
}

fn get(shared: &Shared, kind: ResourceKind, name: Option<&str>) -> Result<Reply, ApiError> {
    get_documents(shared.store.as_ref(), kind, name)
}

fn get_documents(
    store: &dyn Datastore,
    kind: ResourceKind,
    name: Option<&str>,
) -> Result<Reply, ApiError> {
    match kind {
        ResourceKind::Ippools => list_values::<IpPool>(store, name),
        ResourceKind::Nodes => list_values::<Node>(store, name),
        ResourceKind::Workloadendpoints => list_values::<WorkloadEndpoint>(store, name),
        ResourceKind::Bgppeers => list_values::<BgpPeer>(store, name),
        ResourceKind::Bgpconfigurations => list_values::<BgpConfiguration>(store, name),
    }
}

fn apply(shared: &Shared, text: &str) -> Result<Reply, ApiError> {
    let reply = apply_documents(shared.store.as_ref(), text)?;
    shared.nudge();
    Ok(reply)
}

fn apply_documents(store: &dyn Datastore, text: &str) -> Result<Reply, ApiError> {
    let invalid = |e: crate::model::ModelError| {
        ApiError::new(codes::INVALID_DOCUMENT, "invalid document", e.to_string())
    };
    let docs = parse_documents(text).map_err(invalid)?;
    if docs.is_empty() {
        return Err(ApiError::new(
            codes::INVALID_DOCUMENT,
            "no documents to apply",
            "",
        ));
    }
    // A damaged pool cannot be checked against; applying over it replaces it.
    let pools = store
        .list_as::<IpPool>()
        .map_err(|e| datastore_error("reading IP pools failed", e))?
        .items;
    // Everything is checked before anything is written.
    check_batch(&docs, &pools).map_err(invalid)?;
    for doc in &docs {
        check_document_size(doc.kind(), doc.name(), &doc.to_value()).map_err(|e| {
            ApiError::new(codes::INVALID_DOCUMENT, "document too large", e.to_string())
        })?;
    }
    let mut results = Vec::new();
    for doc in docs {
        let written = match &doc {
            Document::IpPool(pool) => write_document(store, pool),
            Document::Node(node) => apply_node(store, node),
            Document::BgpPeer(peer) => write_document(store, peer),
            Document::BgpConfiguration(config) => write_document(store, config),
        };
        written.map_err(|e| {
            datastore_error(
                &format!("writing {} {:?} failed", doc.kind(), doc.name()),
                e,
            )
        })?;
        results.push(format!("{} {}", doc.kind(), doc.name()));
    }
    Ok(Reply::Changed {
        results,
        notes: Vec::new(),
    })
}

/// Writes an applied document: create-or-replace (a damaged stored one too), or — when
/// the document carries the `metadata.resourceVersion` it was read at (an edited `get -o
/// yaml`) — a compare-and-swap that fails if someone changed the object since.
fn write_document<T: Resource>(store: &dyn Datastore, doc: &T) -> Result<(), DatastoreError> {
    if doc.metadata().revision().is_some() {
        store.update_as(doc).map(|_| ())
    } else {
        store.apply_as(doc).map(|_| ())
    }
}

/// A user's Node document replaces the spec; the status a tapwire control keeps (and
/// its underlay address) is its own and survives (unless the stored one is damaged).
fn apply_node(store: &dyn Datastore, node: &Node) -> Result<(), DatastoreError> {
    let mut node = node.clone();
    let existing = match store.get_as::<Node>(node.name()) {
        Err(e) if e.is_damage() => None,
        other => other?,
    };
    if let Some(existing) = existing {
        if existing.is_managed() {
            node.status = existing.status;
            if node.spec.bgp.is_none() {
                node.spec.bgp = existing.spec.bgp;
            }
        }
    }
    write_document(store, &node)
}

fn delete(shared: &Shared, kind: ResourceKind, name: &str) -> Result<Reply, ApiError> {
    let reply = delete_document(shared.store.as_ref(), kind, name)?;
    shared.nudge();
    Ok(reply)
}

fn delete_document(
    store: &dyn Datastore,
    kind: ResourceKind,
    name: &str,
) -> Result<Reply, ApiError> {
    let missing = |kind: &str| {
        Err(ApiError::new(
            codes::BAD_REQUEST,
            format!("{kind} {name:?} not found"),
            "",
        ))
    };
    let result = match kind {
        ResourceKind::Ippools => {
            match store.get_as::<IpPool>(name) {
                Ok(None) => return missing(IpPool::KIND),
                Ok(Some(pool)) => check_pool_unused(store, &pool)?,
                // A damaged pool has no CIDR to check: deleting it is how it is repaired,
                // and the blocks it leaves are still claimed (IPAM never reuses them).
                Err(e) if e.is_damage() => {}
                Err(e) => return Err(datastore_error("reading IP pools failed", e)),
            }
            store.delete_as::<IpPool>(name, None)
        }
        ResourceKind::Nodes => return delete_node(store, name),
        ResourceKind::Bgppeers => store.delete_as::<BgpPeer>(name, None),
        ResourceKind::Bgpconfigurations => store.delete_as::<BgpConfiguration>(name, None),
        // Only a damaged one, which no CNI DEL can find any more.
        ResourceKind::Workloadendpoints => match store.get_as::<WorkloadEndpoint>(name) {
            Err(e) if e.is_damage() => store.delete_as::<WorkloadEndpoint>(name, None),
            _ => {
                return Err(ApiError::new(
                    codes::BAD_REQUEST,
                    "workload endpoints are removed by the CNI plugin (DEL), not by hand",
                    "only a damaged one can be deleted with tapwirectl",
                ))
            }
        },
    };
    match result {
        Ok(()) => {}
        Err(DatastoreError::NotFound { kind, .. }) => return missing(&kind),
        Err(e) => return Err(datastore_error("deleting failed", e)),
    }
    let kind_name = crate::cli::kind_name(kind);
    Ok(Reply::Changed {
        results: vec![format!("{kind_name} {name}")],
        notes: Vec::new(),
    })
}

/// Removes a node that is gone for good, as `calicoctl delete node` does: its workload
/// endpoints, every address and block it holds (so every dataplane drops its routes), then
/// its Node document — in that order, so a failure leaves the node to delete again. A node
/// that still sends heartbeats is removed too, with a warning: its control would register
/// it again and claim new blocks.
fn delete_node(store: &dyn Datastore, name: &str) -> Result<Reply, ApiError> {
    let node = match store.get_as::<Node>(name) {
        Ok(Some(node)) => Some(node),
        Ok(None) => {
            return Err(ApiError::new(
                codes::BAD_REQUEST,
                format!("Node {name:?} not found"),
                "",
            ))
        }
        // A damaged document still names the node whose state is to go.
        Err(e) if e.is_damage() => None,
        Err(e) => return Err(datastore_error("reading the node failed", e)),
    };
    let endpoints = store
        .list_as::<WorkloadEndpoint>()
        .map_err(|e| datastore_error("reading workload endpoints failed", e))?;
    let mut notes = Vec::new();
    for ep in endpoints.items.iter().filter(|ep| ep.spec.node == name) {
        match store.delete_as::<WorkloadEndpoint>(ep.name(), None) {
            Ok(()) | Err(DatastoreError::NotFound { .. }) => {}
            Err(e) => {
                return Err(datastore_error(
                    "removing the node's workload endpoints failed",
                    e,
                ))
            }
        }
        notes.push(format!("removed workload endpoint {}", ep.name()));
    }
    let released = Ipam::new(store).release_node(name).map_err(ipam_error)?;
    notes.extend(
        released
            .iter()
            .map(|(handle, addr)| format!("released {addr} ({handle})")),
    );
    match store.delete_as::<Node>(name, None) {
        Ok(()) | Err(DatastoreError::NotFound { .. }) => {}
        Err(e) => return Err(datastore_error("deleting failed", e)),
    }
    let heartbeat = node
        .as_ref()
        .and_then(|n| n.status.tapwire.as_ref())
        .and_then(|t| crate::model::parse_rfc3339(&t.last_heartbeat))
        .and_then(|at| std::time::SystemTime::now().duration_since(at).ok());
    if let Some(age) = heartbeat.filter(|age| *age < NODE_ALIVE_WITHIN) {
        notes.push(format!(
            "warning: node {name} sent a heartbeat {}s ago; if its tapwire-control still runs \
             it registers the node again",
            age.as_secs()
        ));
    }
    Ok(Reply::Changed {
        results: vec![format!("{} {name}", Node::KIND)],
        notes,
    })
}

/// A node whose last heartbeat is younger than this may still be running.
const NODE_ALIVE_WITHIN: Duration = Duration::from_secs(30);

/// Refuses to delete a pool that addresses are still allocated from (or whose blocks
/// cannot be read to tell).
fn check_pool_unused(store: &dyn Datastore, pool: &IpPool) -> Result<(), ApiError> {
    let name = pool.name();
    let blocks = store
        .list_as::<IpamBlock>()
        .map_err(|e| datastore_error("reading IPAM blocks failed", e))?;
    let in_use: usize = blocks
        .items
        .iter()
        .filter(|b| pool.spec.cidr.contains(&b.spec.cidr))
        .map(|b| b.spec.allocations.len())
        .sum();
    if in_use > 0 {
        return Err(ApiError::new(
            codes::INVALID_DOCUMENT,
            format!("IPPool {name:?} is in use"),
            format!("{in_use} pod address(es) are allocated from it; remove those pods first"),
        ));
    }
    if let Some(damaged) = blocks.damaged.iter().find(|d| {
        IpamBlock::cidr_from_name(&d.name).is_none_or(|cidr| pool.spec.cidr.contains(&cidr))
    }) {
        return Err(ApiError::new(
            codes::INVALID_DOCUMENT,
            format!("IPPool {name:?} may be in use"),
            format!("{damaged}; whether addresses are allocated from the pool cannot be told"),
        ));
    }
    Ok(())
}

/// This node's routes; with `to`, only the one it uses for that address (the longest
/// prefix holding it).
fn routes(shared: &Shared, to: Option<Ipv4Addr>) -> Vec<RouteRow> {
    let Some(desired) = shared.desired() else {
        return Vec::new();
    };
    let row = |(dst, route): (&Ipv4Net, &RouteEntry)| match route.kind {
        RouteKind::LocalBlock => RouteRow {
            dst: dst.to_string(),
            kind: "blackhole".into(),
            node: None,
            via: None,
            encap: None,
            mtu: None,
        },
        RouteKind::LocalWorkload => {
            let endpoint = desired
                .endpoints
                .values()
                .find(|ep| ep.ipv4_nets.contains(dst));
            RouteRow {
                dst: dst.to_string(),
                kind: "local".into(),
                node: endpoint.map(|ep| format!("{}/{}", ep.orchestrator, ep.workload_id)),
                via: None,
                encap: endpoint.map(|ep| ep.interface_name.clone()),
                mtu: Some(desired.pod_mtu_bytes),
            }
        }
        RouteKind::RemoteBlock => RouteRow {
            dst: dst.to_string(),
            kind: "remote".into(),
            node: Some(route.node.clone()),
            via: Some(route.node_ip.to_string()),
            encap: Some(route.encap.name().into()),
            mtu: Some(podnet::pod_mtu(shared.underlay.mtu_bytes, route.encap)),
        },
    };
    match to {
        None => desired.routes.iter().map(row).collect(),
        Some(address) => desired
            .routes
            .iter()
            .filter(|(dst, _)| dst.contains(&address))
            .max_by_key(|(dst, _)| dst.prefix_len())
            .map(row)
            .into_iter()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::FileStore;

    const POOL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: broken\nspec:\n  cidr: 10.66.0.0/16\n";

    /// A file store with a good pool and node, and a corrupt pool and node file.
    fn damaged_store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store
            .create_as(&IpPool::new("good", "10.65.0.0/16".parse().unwrap()))
            .unwrap();
        store
            .create_as(&Node::new("a", "192.168.0.1/24".parse().unwrap()))
            .unwrap();
        std::fs::write(dir.path().join("IPPool/broken.json"), "not json").unwrap();
        std::fs::write(dir.path().join("Node/b.json"), "{").unwrap();
        (dir, store)
    }

    #[test]
    fn get_lists_the_readable_documents_and_the_damaged_ones() {
        let (dir, store) = damaged_store();
        let Reply::Documents { items, damaged } =
            get_documents(&store, ResourceKind::Ippools, None).unwrap()
        else {
            panic!("not documents")
        };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "good");
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].name, "broken");
        let file = dir.path().join("IPPool/broken.json");
        assert!(
            damaged[0].reason.contains(&file.display().to_string()),
            "{damaged:?}"
        );
        // By name: an error naming the file and saying how to repair it.
        let err = get_documents(&store, ResourceKind::Ippools, Some("broken")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("tapwirectl delete ippool broken"), "{msg}");
        assert!(get_documents(&store, ResourceKind::Nodes, Some("a")).is_ok());
    }

    #[test]
    fn apply_and_delete_repair_damaged_documents() {
        let (_dir, store) = damaged_store();
        // Applying a pool works although another pool and a node are damaged, and a good
        // document applied over a damaged one replaces it.
        apply_documents(&store, POOL).unwrap();
        let pool = store.get_as::<IpPool>("broken").unwrap().unwrap();
        assert_eq!(pool.spec.cidr.to_string(), "10.66.0.0/16");
        apply_documents(
            &store,
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: b\nspec:\n  bgp:\n    ipv4Address: 192.168.0.2/24\n",
        )
        .unwrap();
        assert!(store.get_as::<Node>("b").unwrap().is_some());
        // Deleting a damaged document removes it (a pool is not read first).
        std::fs::write(_dir.path().join("IPPool/broken.json"), "[").unwrap();
        delete_document(&store, ResourceKind::Ippools, "broken").unwrap();
        assert!(store.get("IPPool", "broken").unwrap().is_none());
        delete_document(&store, ResourceKind::Ippools, "good").unwrap();
        // A damaged endpoint can be deleted by hand; a readable one cannot.
        store
            .create("WorkloadEndpoint", "w", serde_json::json!({"spec": 1}))
            .unwrap();
        delete_document(&store, ResourceKind::Workloadendpoints, "w").unwrap();
        assert!(store.get("WorkloadEndpoint", "w").unwrap().is_none());
    }

    #[test]
    fn a_huge_document_is_refused_and_nothing_of_its_batch_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        // The probe's 15 MB document, as an annotation; with a small pool before it.
        let huge = format!(
            "{POOL}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: huge\n  annotations:\n    note: \"{}\"\nspec:\n  cidr: 10.67.0.0/16\n",
            "x".repeat(15 << 20)
        );
        let err = apply_documents(&store, &huge).unwrap_err();
        assert!(
            err.to_string()
                .contains("a stored document may be at most 512 KiB"),
            "{err}"
        );
        assert!(store.get("IPPool", "huge").unwrap().is_none());
        assert!(store.get("IPPool", "broken").unwrap().is_none());
    }
}
