//! The node agent's local API, spoken by the CNI plugin (`tapwire`) and the CLI
//! (`tapwirectl`) over a Unix stream socket (`api_socket` in the node config).
//!
//! One request per connection: the client writes one JSON [`Request`] followed by a
//! newline (or closes its write side), the server answers one JSON [`Response`] and
//! closes. JSON keeps the socket inspectable with `socat` and the types plain serde data.
//! Requests and replies are capped at [`MAX_MESSAGE_BYTES`].
//!
//! This module holds the types and the blocking client helper; the server lives in the
//! control daemon.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest request or response, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The default API socket path.
pub const DEFAULT_API_SOCKET: &str = "/run/tapwire/api.sock";

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// CNI ADD: assign an address, build the pod's interface, record the endpoint.
    CniAdd(CniRequest),
    /// CNI DEL: remove the endpoint, its interface and its address (idempotent).
    CniDel(CniRequest),
    /// CNI CHECK: verify the interface, address and routes are as ADD left them.
    CniCheck(CniRequest),
    /// CNI STATUS: is this node ready to add pods (a pool with free space, dataplane up)?
    CniStatus,
    /// `tapwirectl node status`.
    NodeStatus,
    /// `tapwirectl node status` on a BGP node: BIRD and its sessions.
    BgpStatus,
    /// `tapwirectl get KIND [NAME]`.
    Get {
        kind: ResourceKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `tapwirectl apply -f`: the text of one or more YAML/JSON documents.
    Apply { documents: String },
    /// `tapwirectl delete KIND NAME`.
    Delete { kind: ResourceKind, name: String },
    /// `tapwirectl routes`: this node's computed routes.
    Routes,
    /// `tapwirectl routes ADDRESS`: the route this node uses for `address` (the longest
    /// prefix holding it, as `ip route get`); answered with `Routes`, none or one.
    RouteTo { address: std::net::Ipv4Addr },
    /// `tapwirectl stats`: the dataplane's counters.
    Stats,
    /// CNI GC, after its DELs: release this node's addresses that no workload endpoint
    /// holds and that are older than any ADD in flight (Calico's IPAM leak collection).
    /// Answered with `Changed`, one line per released address.
    ReleaseOrphans,
    /// `tapwirectl version`: the agent's and its dataplane's versions.
    Version,
    /// `tapwirectl ipam show`: how full each pool and block is.
    IpamShow,
    /// `tapwirectl ipam check`: whether blocks, handles and endpoints agree.
    IpamCheck,
    /// `tapwirectl ipam release --ip`: release one leaked address. Answered with
    /// `Changed`.
    IpamRelease { address: std::net::Ipv4Addr },
    /// `tapwirectl trace`: the walk of the next `count` packets through this node's
    /// dataplane (only those from or to `pod`, when given: a pod name, `namespace/name` or
    /// an endpoint key), collected for up to `timeout_ms`. Answered with `Trace`.
    Trace {
        count: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod: Option<String>,
        timeout_ms: u64,
    },
}

/// The kinds the CLI reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    #[serde(alias = "ippool", alias = "IPPool")]
    Ippools,
    #[serde(alias = "node", alias = "Node")]
    Nodes,
    #[serde(alias = "workloadendpoint", alias = "WorkloadEndpoint", alias = "wep")]
    Workloadendpoints,
    #[serde(alias = "bgppeer", alias = "BGPPeer")]
    Bgppeers,
    #[serde(alias = "bgpconfiguration", alias = "BGPConfiguration")]
    Bgpconfigurations,
}

/// The CNI call as the plugin received it (environment + network config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// From `CNI_ARGS` (`K8S_POD_NAMESPACE`), when a Kubernetes runtime calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// From `CNI_ARGS` (`K8S_POD_NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The network name from the config (`name`).
    #[serde(default)]
    pub network: String,
    /// The config's `mtu` (ADD): the pod interface's MTU instead of the largest the
    /// pools' encapsulation allows, which it may not exceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(ApiError),
}

/// A failure, shaped like a CNI error object so the plugin can pass it on unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct ApiError {
    /// A CNI error code: 1–99 are the spec's (e.g. 7 invalid network config, 11 try again
    /// later), 100+ tapwire's (see [`codes`]).
    pub code: u32,
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// Error codes (CNI's well-known ones, plus tapwire's from 100).
pub mod codes {
    /// CNI: incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// CNI: unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// CNI: container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// CNI: invalid necessary environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// CNI: I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// CNI: failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// CNI: invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// CNI: try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// CNI STATUS: the plugin is not available.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// tapwire: no free address in any enabled pool.
    pub const POOL_EXHAUSTED: u32 = 100;
    /// tapwire: the request is malformed or names something that does not exist.
    pub const BAD_REQUEST: u32 = 101;
    /// tapwire: a document failed validation.
    pub const INVALID_DOCUMENT: u32 = 102;
    /// tapwire: the datastore failed.
    pub const DATASTORE: u32 = 103;
    /// tapwire: building or removing the pod interface failed.
    pub const INTERFACE: u32 = 104;
    /// tapwire: the agent could not be reached.
    pub const UNREACHABLE: u32 = 105;
}

impl ApiError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> ApiError {
        ApiError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

/// A successful answer; which variant depends on the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    CniAdd(CniAddReply),
    /// DEL, CHECK and STATUS carry nothing.
    Done,
    NodeStatus(NodeStatusReply),
    /// `bgp` is `None` when the node does not run BGP (its networking backend is the
    /// datastore).
    BgpStatus {
        bgp: Option<BgpStatusReply>,
    },
    /// Documents as JSON values (IPPool, Node or WorkloadEndpoint), sorted by name, and
    /// those of the kind that are damaged in the datastore (skipped).
    Documents {
        items: Vec<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        damaged: Vec<crate::datastore::Damaged>,
    },
    /// What `apply` or `delete` did, one line per document (`ippool/default configured`).
    Changed {
        results: Vec<String>,
        /// What else happened, or deserves a warning (`tapwirectl` prints these on
        /// stderr): the addresses a `delete node` released, say.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notes: Vec<String>,
    },
    Routes {
        routes: Vec<RouteRow>,
    },
    Stats {
        counters: Vec<(String, u64)>,
    },
    Version {
        agent: String,
        /// `None` while the dataplane is not connected (or did not say).
        dataplane: Option<String>,
    },
    IpamShow(crate::ipam::IpamUsage),
    IpamCheck(crate::ipam::CheckReport),
    Trace(TraceReport),
}

impl Reply {
    /// What kind of answer this is, for messages about unexpected replies.
    pub fn describe(&self) -> &'static str {
        match self {
            Reply::CniAdd(_) => "a CNI ADD result",
            Reply::Done => "an empty reply",
            Reply::NodeStatus(_) => "a node status",
            Reply::BgpStatus { .. } => "a BGP status",
            Reply::Documents { .. } => "documents",
            Reply::Changed { .. } => "a change report",
            Reply::Routes { .. } => "routes",
            Reply::Stats { .. } => "counters",
            Reply::Version { .. } => "versions",
            Reply::IpamShow(_) => "IPAM usage",
            Reply::IpamCheck(_) => "an IPAM check report",
            Reply::Trace(_) => "a packet trace",
        }
    }
}

/// `tapwirectl trace`: the packets traced, in order, and how the trace ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceReport {
    /// The endpoint the trace was limited to (`orchestrator/workload/endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// How many packets were asked for.
    pub count: u32,
    /// The dataplane's records, as it sent them.
    pub records: Vec<tapwire_proto::TraceRecord>,
    /// `complete`, `timeout`, `replaced` (a newer trace took over the dataplane's) or
    /// `disconnected` (the dataplane went away).
    pub ended: String,
    /// Records the dataplane lost (its trace buffer was full).
    pub dropped: u64,
}

/// What the plugin turns into a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAddReply {
    /// The interface inside the pod.
    pub interface: String,
    pub mac: String,
    /// The pod's network namespace path (the CNI result's `sandbox`).
    pub sandbox: String,
    /// The pod's address with its prefix (`10.65.1.2/32`).
    pub address: String,
    /// The pod's gateway (169.254.1.1).
    pub gateway: String,
    pub mtu: u32,
    /// Routes the pod has (`0.0.0.0/0` via the gateway).
    pub routes: Vec<CniRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRoute {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// `tapwirectl node status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatusReply {
    pub node: String,
    pub underlay_address: String,
    pub dataplane_connected: bool,
    pub dataplane_in_sync: bool,
    /// Seconds since the dataplane's last heartbeat, if any.
    pub last_heartbeat_secs: Option<u64>,
    pub peers: Vec<PeerRow>,
}

/// BGP in `node status`: BIRD and its sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpStatusReply {
    /// `BIRD 2.0.12 is running (pid 4242, router id 192.168.0.1): Daemon is up and
    /// running`, or why it does not run.
    pub daemon: String,
    /// BIRD's sessions: PEER TYPE `node-to-node mesh`, `node specific` or `global`, STATE
    /// `up` (established) or `down`, INFO BIRD's (`Established`, `Active Socket:
    /// Connection refused`, …).
    pub peers: Vec<PeerRow>,
}

/// One peer in `node status`, in calicoctl's columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRow {
    pub address: String,
    /// `node-to-node mesh`, or `declared host` for nodes not running tapwire.
    pub peer_type: String,
    /// `up` or `down`.
    pub state: String,
    /// When the state last changed (RFC 3339), as far as this node knows.
    pub since: String,
    /// `Established` when the peer's routes are programmed, else why not.
    pub info: String,
}

/// One line of `tapwirectl routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub dst: String,
    /// `local`, `blackhole` or `remote`.
    pub kind: String,
    /// For remote routes: the owning node and its underlay address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `none`, `ipip` or `vxlan` for remote routes; the interface for local ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Sends one request and waits up to `timeout` for the answer. Connection and decoding
/// failures come back as an [`ApiError`] with code [`codes::UNREACHABLE`] or
/// [`codes::DECODE_FAILURE`], so callers have one error type to report.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, ApiError> {
    let unreachable = |e: io::Error| {
        ApiError::new(
            codes::UNREACHABLE,
            format!("cannot reach tapwire-control at {}", socket.display()),
            e.to_string(),
        )
    };
    let mut body = serde_json::to_vec(request)
        .map_err(|e| ApiError::new(codes::DECODE_FAILURE, "encoding the request", e.to_string()))?;
    body.push(b'\n');
    // The agent would stop reading and close the connection; say why here instead.
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            codes::BAD_REQUEST,
            "request too large for the tapwire-control API",
            format!(
                "{} bytes; the API takes at most {} MiB per request",
                body.len(),
                MAX_MESSAGE_BYTES >> 20
            ),
        ));
    }
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream.write_all(&body).map_err(unreachable)?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(unreachable)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut answer)
        .map_err(unreachable)?;
    if answer.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            codes::DECODE_FAILURE,
            "answer from tapwire-control too large",
            format!("more than {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    if answer.is_empty() {
        // The agent accepted the request and went away before answering (it crashed or
        // was stopped): what it did is unknown, and a retry is the way on.
        return Err(ApiError::new(
            codes::TRY_AGAIN_LATER,
            "tapwire-control closed the connection without answering",
            format!(
                "{}: the request may be partly done; retry it once tapwire-control is back",
                socket.display()
            ),
        ));
    }
    match serde_json::from_slice::<Response>(&answer) {
        Ok(Response::Ok(reply)) => Ok(reply),
        Ok(Response::Error(err)) => Err(err),
        Err(e) => Err(ApiError::new(
            codes::DECODE_FAILURE,
            "cannot decode the answer from tapwire-control",
            e.to_string(),
        )),
    }
}

/// Reads one request from a server-side connection: one line of JSON (or everything up to
/// the client's end of stream), at most [`MAX_MESSAGE_BYTES`].
pub fn read_request(stream: &mut UnixStream) -> Result<Request, ApiError> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream.take(MAX_MESSAGE_BYTES as u64 + 1));
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| ApiError::new(codes::IO_FAILURE, "reading the request", e.to_string()))?;
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            codes::BAD_REQUEST,
            "request too large",
            format!("more than {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(&line)
        .map_err(|e| ApiError::new(codes::DECODE_FAILURE, "invalid request", e.to_string()))
}

/// Writes the answer to a server-side connection.
pub fn write_response(stream: &mut UnixStream, response: &Response) -> io::Result<()> {
    let mut body = serde_json::to_vec(response).map_err(io::Error::other)?;
    body.push(b'\n');
    stream.write_all(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let req = Request::Get {
            kind: ResourceKind::Ippools,
            name: None,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"op":"get","kind":"ippools"}"#);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        let alias: Request = serde_json::from_str(r#"{"op":"get","kind":"ippool"}"#).unwrap();
        assert_eq!(alias, req);
        assert!(serde_json::from_str::<Request>(r#"{"op":"get","kind":"ippools","x":1}"#).is_err());
    }

    #[test]
    fn a_trace_and_its_report_cross_the_api_as_json() {
        let req = Request::Trace {
            count: 3,
            pod: Some("pod-a".into()),
            timeout_ms: 5000,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"op":"trace","count":3,"pod":"pod-a","timeout_ms":5000}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        let reply = Reply::Trace(TraceReport {
            endpoint: Some("k8s/default/pod-a/eth0".into()),
            count: 3,
            records: vec![tapwire_proto::TraceRecord {
                index: 1,
                action: Some(tapwire_proto::TraceAction {
                    kind: "deliver".into(),
                    endpoint: "k8s/default/pod-b/eth0".into(),
                    ..Default::default()
                }),
                counters: vec!["endpoint.k8s/default/pod-b/eth0.tx_packets".into()],
                ..Default::default()
            }],
            ended: "timeout".into(),
            dropped: 0,
        });
        let json = serde_json::to_string(&Response::Ok(reply.clone())).unwrap();
        assert_eq!(
            serde_json::from_str::<Response>(&json).unwrap(),
            Response::Ok(reply)
        );
    }

    #[test]
    fn a_round_trip_over_a_socket_pair() {
        let (mut client, mut server) = UnixStream::pair().unwrap();
        let req = Request::CniDel(CniRequest {
            container_id: "abc".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            pod_namespace: None,
            pod_name: None,
            network: "k8s-pod-network".into(),
            mtu: None,
        });
        let mut body = serde_json::to_vec(&req).unwrap();
        body.push(b'\n');
        client.write_all(&body).unwrap();
        assert_eq!(read_request(&mut server).unwrap(), req);
        let err = ApiError::new(
            codes::POOL_EXHAUSTED,
            "no free address",
            "pool default is full",
        );
        write_response(&mut server, &Response::Error(err.clone())).unwrap();
        drop(server);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(
            serde_json::from_str::<Response>(&answer).unwrap(),
            Response::Error(err)
        );
    }
}
