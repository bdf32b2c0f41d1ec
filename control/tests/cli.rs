//! `tapwirectl` as a user runs it: the built binary against a fake agent (a Unix socket
//! in a scratch directory answering with canned replies through the real API framing).
//! Checks the exact output of every command and format, that `get -o yaml|json` parses
//! back into the same documents and can be re-applied, the messages and exit codes of
//! failures (agent down, agent errors, bad files, bad arguments), and how the socket is
//! chosen (`--api`, `TAPWIRE_API`).
// clippy.toml allows unwrap/expect in #[test] fns; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime};

use common::{run_bounded, FakeAgent, ProgramRun, BGP_DOCUMENTS};

use serde_json::Value;
use tapwire_control::api::{
    self, codes, ApiError, BgpStatusReply, NodeStatusReply, PeerRow, Reply, Request, ResourceKind,
    Response, RouteRow,
};
use tapwire_control::ipam::{BlockUsage, CheckReport, IpamUsage, Leaked, PoolUsage};
use tapwire_control::model::{
    check_batch, format_rfc3339, from_document_value, parse_documents, to_document_value,
    BgpConfiguration, BgpPeer, Document, EncapMode, IpPool, MacAddr, Metadata, Node, NodeStatus,
    TapwireNodeStatus, WorkloadEndpoint, WorkloadEndpointSpec,
};

/// How long one `tapwirectl` run may take before the test kills it.
const RUN_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The cluster the fake agent knows.

fn pools() -> Vec<IpPool> {
    let mut default = IpPool::new("default-ipv4-ippool", "10.65.0.0/16".parse().unwrap());
    default.spec.vxlan_mode = EncapMode::Always;
    default.spec.nat_outgoing = true;
    default.metadata.resource_version = Some("3".into());
    let mut edge = IpPool::new("edge", "10.66.0.0/24".parse().unwrap());
    edge.spec.block_size = 28;
    edge.spec.ipip_mode = EncapMode::CrossSubnet;
    edge.spec.disabled = true;
    edge.spec.node_selector = Some("all()".into());
    edge.spec.disable_bgp_export = true;
    edge.metadata.resource_version = Some("5".into());
    vec![default, edge]
}

fn nodes() -> Vec<Node> {
    let mut a = Node::new("node-a", "192.168.0.1/24".parse().unwrap());
    if let Some(bgp) = a.spec.bgp.as_mut() {
        bgp.as_number = Some(64512);
    }
    a.metadata.resource_version = Some("9".into());
    a.status = NodeStatus {
        tapwire: Some(TapwireNodeStatus {
            last_heartbeat: "2024-05-01T13:02:03Z".into(),
            underlay_interface: "eth0".into(),
            dataplane_in_sync: true,
        }),
    };
    let mut host = Node::new("kernel-host", "192.168.1.9/24".parse().unwrap());
    host.spec.vxlan_tunnel_mac_addr = Some("66:68:21:5a:8f:91".parse().unwrap());
    host.spec.pod_cidrs = vec!["10.70.0.0/26".parse().unwrap()];
    host.metadata.resource_version = Some("11".into());
    vec![a, host]
}

fn endpoints() -> Vec<WorkloadEndpoint> {
    let mut web = Metadata::named(WorkloadEndpoint::calico_name(
        "node-a", "k8s", "web-1", "eth0",
    ));
    web.namespace = Some("default".into());
    web.resource_version = Some("21".into());
    let mut db = Metadata::named(WorkloadEndpoint::calico_name("node-b", "k8s", "db", "eth0"));
    db.namespace = Some("store".into());
    let job = Metadata::named(WorkloadEndpoint::calico_name(
        "node-b", "cni", "0123abcd", "eth0",
    ));
    let spec = |node: &str, orchestrator: &str, workload: &str, ip: &str, mac: &str| {
        WorkloadEndpointSpec {
            node: node.into(),
            orchestrator: orchestrator.into(),
            workload: workload.into(),
            endpoint: "eth0".into(),
            interface_name: "eth0".into(),
            ip_networks: vec![ip.parse().unwrap()],
            mac: Some(mac.parse().unwrap()),
            netns: Some(format!("/var/run/netns/{workload}")),
            container_id: Some(format!("{workload}-container")),
            profiles: Vec::new(),
        }
    };
    let mut web_spec = spec(
        "node-a",
        "k8s",
        "web-1",
        "10.65.1.2/32",
        "0a:58:0a:41:01:02",
    );
    web_spec.profiles = vec!["kns.default".into(), "ksa.default.default".into()];
    vec![
        WorkloadEndpoint {
            metadata: web,
            spec: web_spec,
        },
        WorkloadEndpoint {
            metadata: db,
            spec: spec("node-b", "k8s", "db", "10.65.2.7/32", "0a:58:0a:41:02:07"),
        },
        WorkloadEndpoint {
            metadata: job,
            spec: spec(
                "node-b",
                "cni",
                "0123abcd",
                "10.65.2.8/32",
                "0a:58:0a:41:02:08",
            ),
        },
    ]
}

fn node_status(since_today: &str) -> NodeStatusReply {
    NodeStatusReply {
        node: "node-a".into(),
        underlay_address: "192.168.0.1".into(),
        dataplane_connected: true,
        dataplane_in_sync: true,
        last_heartbeat_secs: Some(2),
        peers: vec![
            PeerRow {
                address: "192.168.0.2".into(),
                peer_type: "node-to-node mesh".into(),
                state: "up".into(),
                since: since_today.into(),
                info: "Established".into(),
            },
            PeerRow {
                address: "192.168.1.9".into(),
                peer_type: "declared host".into(),
                state: "down".into(),
                since: "2024-05-01T13:02:03Z".into(),
                info: "Routes not programmed".into(),
            },
        ],
    }
}

fn ipam_usage() -> IpamUsage {
    let block = |cidr: &str, node: &str, in_use| BlockUsage {
        cidr: cidr.parse().unwrap(),
        node: Some(node.into()),
        total: 64,
        in_use,
    };
    IpamUsage {
        pools: vec![
            PoolUsage {
                name: "default-ipv4-ippool".into(),
                cidr: "10.65.0.0/16".parse().unwrap(),
                disabled: false,
                total: 65536,
                in_use: 3,
            },
            PoolUsage {
                name: "old".into(),
                cidr: "10.66.0.0/24".parse().unwrap(),
                disabled: true,
                total: 256,
                in_use: 0,
            },
        ],
        blocks: vec![
            block("10.65.1.0/26", "node-a", 2),
            block("10.65.2.0/26", "node-b", 1),
            block("10.70.0.0/26", "node-c", 64),
        ],
        damaged: Vec::new(),
    }
}

fn ipam_check() -> CheckReport {
    CheckReport {
        allocations: 3,
        endpoints: 2,
        leaked: vec![Leaked {
            address: "10.65.1.9".parse().unwrap(),
            handle: "net.c9.eth0".into(),
            node: Some("node-a".into()),
            since: Some("2026-12-01T10:00:00Z".into()),
        }],
        ..CheckReport::default()
    }
}

fn route_rows() -> Vec<RouteRow> {
    let row = |dst: &str, kind: &str| RouteRow {
        dst: dst.into(),
        kind: kind.into(),
        node: None,
        via: None,
        encap: None,
        mtu: None,
    };
    let remote = |dst: &str, node: &str, via: &str, encap: &str, mtu: u32| RouteRow {
        node: Some(node.into()),
        via: Some(via.into()),
        encap: Some(encap.into()),
        mtu: Some(mtu),
        ..row(dst, "remote")
    };
    vec![
        row("10.65.1.0/26", "blackhole"),
        RouteRow {
            node: Some("k8s/default/web-1".into()),
            encap: Some("eth0".into()),
            mtu: Some(1450),
            ..row("10.65.1.2/32", "local")
        },
        remote("10.65.2.0/26", "node-b", "192.168.0.2", "vxlan", 1450),
        remote("10.66.0.16/28", "node-c", "192.168.0.3", "ipip", 1480),
        remote("10.70.0.0/26", "kernel-host", "192.168.1.9", "none", 1500),
    ]
}

fn counters() -> Vec<(String, u64)> {
    [
        ("drop.malformed_ethernet", 0),
        ("drop.spoofed_source", 1),
        ("drop.blackhole", 0),
        ("drop.no_route", 3),
        ("encap.none.tx_packets", 0),
        ("encap.none.tx_bytes", 0),
        ("encap.vxlan.tx_packets", 12),
        ("encap.vxlan.tx_bytes", 1176),
        ("encap.vxlan.rx_packets", 10),
        ("encap.vxlan.rx_bytes", 980),
        ("arp.replies", 2),
        ("icmp.errors_sent", 0),
        ("endpoint.k8s/store/db/eth0.rx_packets", 5),
        ("endpoint.k8s/store/db/eth0.drops", 0),
        ("endpoint.k8s/default/web-1/eth0.rx_packets", 7),
        ("endpoint.k8s/default/web-1/eth0.tx_packets", 6),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

/// The documents of [`BGP_DOCUMENTS`] that `pick` takes.
fn bgp_documents<T>(pick: fn(Document) -> Option<T>) -> Vec<T> {
    parse_documents(BGP_DOCUMENTS)
        .unwrap()
        .into_iter()
        .filter_map(pick)
        .collect()
}

fn bgp_peers() -> Vec<BgpPeer> {
    bgp_documents(|doc| match doc {
        Document::BgpPeer(peer) => Some(peer),
        _ => None,
    })
}

fn bgp_configurations() -> Vec<BgpConfiguration> {
    bgp_documents(|doc| match doc {
        Document::BgpConfiguration(config) => Some(config),
        _ => None,
    })
}

/// Today (UTC) at 00:00:00, RFC 3339.
fn today_at_midnight() -> String {
    let now = format_rfc3339(SystemTime::now());
    let (date, _) = now.split_once('T').unwrap();
    format!("{date}T00:00:00Z")
}

/// Answers like the real agent does, from the documents above.
fn standard_answer(request: &Request) -> Response {
    let reply = match request {
        Request::NodeStatus => Reply::NodeStatus(node_status(&today_at_midnight())),
        Request::Get { kind, name } => {
            let (kind_name, all): (&str, Vec<Value>) = match kind {
                ResourceKind::Ippools => {
                    ("IPPool", pools().iter().map(to_document_value).collect())
                }
                ResourceKind::Nodes => ("Node", nodes().iter().map(to_document_value).collect()),
                ResourceKind::Workloadendpoints => (
                    "WorkloadEndpoint",
                    endpoints().iter().map(to_document_value).collect(),
                ),
                ResourceKind::Bgppeers => (
                    "BGPPeer",
                    bgp_peers().iter().map(to_document_value).collect(),
                ),
                ResourceKind::Bgpconfigurations => (
                    "BGPConfiguration",
                    bgp_configurations()
                        .iter()
                        .map(to_document_value)
                        .collect(),
                ),
            };
            let items: Vec<Value> = all
                .into_iter()
                .filter(|v| name.as_ref().is_none_or(|n| v["metadata"]["name"] == **n))
                .collect();
            if let (Some(name), true) = (name, items.is_empty()) {
                return Response::Error(ApiError::new(
                    codes::BAD_REQUEST,
                    format!("{kind_name} {name:?} not found"),
                    "",
                ));
            }
            Reply::Documents {
                items,
                damaged: Vec::new(),
            }
        }
        Request::Apply { documents } => {
            let invalid = |e: tapwire_control::model::ModelError| {
                ApiError::new(codes::INVALID_DOCUMENT, "invalid document", e.to_string())
            };
            let docs = match parse_documents(documents) {
                Ok(d) => d,
                Err(e) => return Response::Error(invalid(e)),
            };
            if let Err(e) = check_batch(&docs, &pools()) {
                return Response::Error(invalid(e));
            }
            Reply::Changed {
                results: docs
                    .iter()
                    .map(|d| format!("{} {}", d.kind(), d.name()))
                    .collect(),
                notes: Vec::new(),
            }
        }
        Request::Delete { kind, name } => {
            let kind_name = tapwire_control::cli::kind_name(*kind);
            if name.starts_with("missing") {
                return Response::Error(ApiError::new(
                    codes::BAD_REQUEST,
                    format!("{kind_name} {name:?} not found"),
                    "",
                ));
            }
            Reply::Changed {
                results: vec![format!("{kind_name} {name}")],
                notes: Vec::new(),
            }
        }
        Request::Routes => Reply::Routes {
            routes: route_rows(),
        },
        Request::RouteTo { address } => Reply::Routes {
            routes: route_rows()
                .into_iter()
                .filter(|row| {
                    let dst = row
                        .dst
                        .parse()
                        .or_else(|_| format!("{}/32", row.dst).parse());
                    dst.is_ok_and(|dst: ipnet::Ipv4Net| dst.contains(address))
                })
                .collect(),
        },
        Request::Stats => Reply::Stats {
            counters: counters(),
        },
        Request::Version => Reply::Version {
            agent: "9.8.7".into(),
            dataplane: None,
        },
        Request::IpamShow => Reply::IpamShow(ipam_usage()),
        Request::IpamCheck => Reply::IpamCheck(ipam_check()),
        Request::IpamRelease { address } if address.to_string() == "10.65.1.9" => {
            Reply::Changed {
                results: vec!["10.65.1.9 (handle net.c9.eth0)".into()],
                notes: Vec::new(),
            }
        }
        Request::IpamRelease { address } => {
            return Response::Error(ApiError::new(
                codes::BAD_REQUEST,
                "not released",
                format!("{address} is in use by workload endpoint \"node--b-cni-c1-eth0\"; delete the pod (CNI DEL) to release it"),
            ))
        }
        _ => return Response::Error(ApiError::new(codes::BAD_REQUEST, "not a CLI request", "")),
    };
    Response::Ok(reply)
}

// ---------------------------------------------------------------------------------------
// The fake agent and running the binary.

impl FakeAgent {
    /// Answers like the real agent does, from the documents above.
    fn standard() -> FakeAgent {
        FakeAgent::start(standard_answer)
    }

    /// Always answers with `reply`.
    fn replying(reply: Reply) -> FakeAgent {
        FakeAgent::start(move |_| Response::Ok(reply.clone()))
    }

    /// Always answers with `error`.
    fn failing(error: ApiError) -> FakeAgent {
        FakeAgent::start(move |_| Response::Error(error.clone()))
    }
}

/// What one `tapwirectl` run printed, and its exit code.
type Run = ProgramRun;

/// Runs the binary with `TAPWIRE_API` unset unless `env` names it; kills it after
/// [`RUN_LIMIT`].
fn run_with(args: &[&str], env: Option<&Path>, stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapwirectl"));
    cmd.args(args).env_remove("TAPWIRE_API");
    if let Some(path) = env {
        cmd.env("TAPWIRE_API", path);
    }
    let input = stdin.unwrap_or("").as_bytes();
    run_bounded(&mut cmd, input, RUN_LIMIT, &format!("tapwirectl {args:?}"))
}

/// `tapwirectl --api SOCKET ARGS…`, with `stdin` on its standard input.
fn ctl_at(socket: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let socket = socket.to_str().unwrap();
    let mut all = vec!["--api", socket];
    all.extend_from_slice(args);
    run_with(&all, None, stdin)
}

/// `tapwirectl --api SOCKET ARGS…` against `agent`.
fn ctl(agent: &FakeAgent, args: &[&str]) -> Run {
    ctl_at(&agent.socket, args, None)
}

/// [`ctl`] with `stdin` on its standard input.
fn ctl_stdin(agent: &FakeAgent, args: &[&str], stdin: Option<&str>) -> Run {
    ctl_at(&agent.socket, args, stdin)
}

/// Asserts the exit code and exactly what the run printed on each stream.
#[track_caller]
fn assert_run(run: &Run, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(run.code, Some(code), "{run:?}");
    assert_eq!(run.stdout, stdout, "{run:?}");
    assert_eq!(run.stderr, stderr, "{run:?}");
}

/// Runs and expects success with nothing on stderr; returns stdout.
fn ok(agent: &FakeAgent, args: &[&str]) -> String {
    let run = ctl(agent, args);
    assert_eq!(run.code, Some(0), "{args:?}: {run:?}");
    assert_eq!(run.stderr, "", "{args:?}");
    run.stdout
}

/// Runs and expects exit 1 with nothing on stdout; returns stderr.
fn fails(agent: &FakeAgent, args: &[&str]) -> String {
    let run = ctl(agent, args);
    assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
    assert_eq!(run.stdout, "", "{args:?}");
    run.stderr
}

fn get(kind: ResourceKind, name: Option<&str>) -> Request {
    Request::Get {
        kind,
        name: name.map(str::to_string),
    }
}

fn delete(kind: ResourceKind, name: &str) -> Request {
    Request::Delete {
        kind,
        name: name.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// node status

#[test]
fn node_status_shows_process_dataplane_and_peers_in_calicoctls_box() {
    let agent = FakeAgent::standard();
    let run = ctl(&agent, &["node", "status"]);
    // The first peer changed state today, at midnight: BIRD shows such times as a time of
    // day, older ones as a date.
    let expected = String::from(
        "tapwire process is running.\n\
         \n\
         Node node-a, underlay address 192.168.0.1\n\
         Dataplane: connected, in sync, last heartbeat 2s ago\n\
         \n\
         IPv4 peer status\n\
         +--------------+-------------------+-------+------------+-----------------------+\n\
         | PEER ADDRESS |     PEER TYPE     | STATE |   SINCE    |         INFO          |\n\
         +--------------+-------------------+-------+------------+-----------------------+\n\
         | 192.168.0.2  | node-to-node mesh | up    | 00:00:00   | Established           |\n\
         | 192.168.1.9  | declared host     | down  | 2024-05-01 | Routes not programmed |\n\
         +--------------+-------------------+-------+------------+-----------------------+\n\
         \n",
    );
    assert_run(&run, 0, &expected, "");
    // The agent's BGP status is asked for too; this one has none (it answers an error).
    assert_eq!(agent.requests(), [Request::NodeStatus, Request::BgpStatus]);
}

#[test]
fn node_status_on_a_bgp_node_is_calicoctls_bgp_table() {
    let since_today = today_at_midnight();
    let agent = FakeAgent::start(move |request| {
        match request {
        Request::NodeStatus => Response::Ok(Reply::NodeStatus(NodeStatusReply {
            peers: Vec::new(),
            ..node_status("")
        })),
        Request::BgpStatus => Response::Ok(Reply::BgpStatus {
            bgp: Some(BgpStatusReply {
            daemon:
                "BIRD 2.0.12 is running (pid 4242, router id 192.168.0.1): Daemon is up and running"
                    .into(),
            peers: vec![
                PeerRow {
                    address: "192.168.0.2".into(),
                    peer_type: "node-to-node mesh".into(),
                    state: "up".into(),
                    since: since_today.clone(),
                    info: "Established".into(),
                },
                PeerRow {
                    address: "192.168.0.254".into(),
                    peer_type: "node specific".into(),
                    state: "down".into(),
                    since: "2024-05-01T13:02:03Z".into(),
                    info: "Active Socket: Connection refused".into(),
                },
            ],
            }),
        }),
        _ => Response::Error(ApiError::new(codes::BAD_REQUEST, "unexpected", "")),
    }
    });
    assert_eq!(
        ok(&agent, &["node", "status"]),
        "tapwire process is running.\n\
         \n\
         Node node-a, underlay address 192.168.0.1\n\
         Dataplane: connected, in sync, last heartbeat 2s ago\n\
         BIRD: BIRD 2.0.12 is running (pid 4242, router id 192.168.0.1): Daemon is up and running\n\
         \n\
         IPv4 BGP status\n\
         +---------------+-------------------+-------+------------+-----------------------------------+\n\
         | PEER ADDRESS  |     PEER TYPE     | STATE |   SINCE    |               INFO                |\n\
         +---------------+-------------------+-------+------------+-----------------------------------+\n\
         | 192.168.0.2   | node-to-node mesh | up    | 00:00:00   | Established                       |\n\
         | 192.168.0.254 | node specific     | down  | 2024-05-01 | Active Socket: Connection refused |\n\
         +---------------+-------------------+-------+------------+-----------------------------------+\n\
         \n\
         IPv6 BGP status\n\
         No IPv6 peers found.\n\
         \n"
    );
}

#[test]
fn node_status_without_peers_or_dataplane() {
    let agent = FakeAgent::replying(Reply::NodeStatus(NodeStatusReply {
        node: "solo".into(),
        underlay_address: "10.0.0.1".into(),
        dataplane_connected: false,
        dataplane_in_sync: false,
        last_heartbeat_secs: None,
        peers: Vec::new(),
    }));
    assert_eq!(
        ok(&agent, &["node", "status"]),
        "tapwire process is running.\n\
         \n\
         Node solo, underlay address 10.0.0.1\n\
         Dataplane: not connected, no heartbeat yet\n\
         \n\
         IPv4 peer status\n\
         No IPv4 peers found.\n\
         \n"
    );
    let agent = FakeAgent::replying(Reply::NodeStatus(NodeStatusReply {
        dataplane_connected: true,
        dataplane_in_sync: false,
        last_heartbeat_secs: Some(0),
        ..node_status("")
    }));
    let out = ok(&agent, &["node", "status"]);
    assert!(
        out.contains("Dataplane: connected, not in sync, last heartbeat 0s ago\n"),
        "{out}"
    );
    assert!(
        out.contains("| 192.168.0.2  | node-to-node mesh | up    |            |"),
        "an unknown SINCE is empty: {out}"
    );
}

#[test]
fn node_status_when_the_agent_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let run = ctl_at(&socket, &["node", "status"], None);
    assert_run(
        &run,
        1,
        "tapwire process is not running.\n",
        &format!(
            "Failed to get node status: cannot reach tapwire-control at {}: No such file or directory (os error 2)\n\
             Is tapwire-control running? Name its API socket with --api PATH or TAPWIRE_API.\n",
            socket.display()
        ),
    );

    // A socket file nobody listens on (the agent died): connection refused.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let run = ctl_at(&stale, &["node", "status"], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stdout, "tapwire process is not running.\n");
    assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);

    // Running but failing is not "not running".
    let agent = FakeAgent::failing(ApiError::new(
        codes::DATASTORE,
        "reading nodes failed",
        "/var/lib/tapwire: permission denied",
    ));
    assert_eq!(
        fails(&agent, &["node", "status"]),
        "Failed to get node status: reading nodes failed: /var/lib/tapwire: permission denied\n"
    );
}

// ---------------------------------------------------------------------------------------
// get: tables

#[test]
fn get_ippools_tables() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["get", "ippools"]),
        "NAME                  CIDR           SELECTOR\n\
         default-ipv4-ippool   10.65.0.0/16   all()\n\
         edge                  10.66.0.0/24   all()\n\
         \n"
    );
    assert_eq!(
        ok(&agent, &["get", "ippools", "-o", "wide"]),
        "NAME                  CIDR           NAT     IPIPMODE      VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR\n\
         default-ipv4-ippool   10.65.0.0/16   true    Never         Always      false      false              all()\n\
         edge                  10.66.0.0/24   false   CrossSubnet   Never       true       true               all()\n\
         \n"
    );
    assert_eq!(
        ok(&agent, &["get", "ippool", "edge"]),
        "NAME   CIDR           SELECTOR\n\
         edge   10.66.0.0/24   all()\n\
         \n"
    );
    assert_eq!(
        agent.requests(),
        [
            get(ResourceKind::Ippools, None),
            get(ResourceKind::Ippools, None),
            get(ResourceKind::Ippools, Some("edge")),
        ]
    );
}

#[test]
fn get_nodes_tables() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["get", "nodes"]),
        "NAME\nnode-a\nkernel-host\n\n"
    );
    let derived = MacAddr::derived_vtep("node-a").to_string();
    assert_eq!(
        ok(&agent, &["get", "nodes", "-o", "wide"]),
        format!(
            "NAME          ASN     IPV4             IPV6   VTEPMAC\n\
             node-a        64512   192.168.0.1/24          {derived}\n\
             kernel-host           192.168.1.9/24          66:68:21:5a:8f:91\n\
             \n"
        )
    );
}

#[test]
fn get_workloadendpoints_tables_and_namespaces() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["get", "workloadendpoints"]),
        "WORKLOAD   NODE     NETWORKS       INTERFACE\n\
         web-1      node-a   10.65.1.2/32   eth0\n\
         db         node-b   10.65.2.7/32   eth0\n\
         0123abcd   node-b   10.65.2.8/32   eth0\n\
         \n"
    );
    assert_eq!(
        ok(&agent, &["get", "wep", "-o", "wide"]),
        "NAME                        WORKLOAD   NODE     NETWORKS       INTERFACE   PROFILES                          MAC\n\
         node--a-k8s-web--1-eth0     web-1      node-a   10.65.1.2/32   eth0        kns.default,ksa.default.default   0a:58:0a:41:01:02\n\
         node--b-k8s-db-eth0         db         node-b   10.65.2.7/32   eth0                                          0a:58:0a:41:02:07\n\
         node--b-cni-0123abcd-eth0   0123abcd   node-b   10.65.2.8/32   eth0                                          0a:58:0a:41:02:08\n\
         \n"
    );
    assert_eq!(
        ok(&agent, &["get", "weps", "-A"]),
        "NAMESPACE   WORKLOAD   NODE     NETWORKS       INTERFACE\n\
         default     web-1      node-a   10.65.1.2/32   eth0\n\
         store       db         node-b   10.65.2.7/32   eth0\n\
         \x20           0123abcd   node-b   10.65.2.8/32   eth0\n\
         \n"
    );
    assert_eq!(
        ok(&agent, &["get", "workloadendpoint", "-n", "store"]),
        "WORKLOAD   NODE     NETWORKS       INTERFACE\n\
         db         node-b   10.65.2.7/32   eth0\n\
         \n"
    );
    // Nothing in that namespace: an empty table, like calicoctl.
    assert_eq!(
        ok(&agent, &["get", "wep", "--namespace", "kube-system"]),
        "WORKLOAD   NODE   NETWORKS   INTERFACE\n\n"
    );
    // A named endpoint in another namespace is not found.
    assert_eq!(
        fails(&agent, &["get", "wep", "node--b-k8s-db-eth0", "-n", "default"]),
        "Failed to get WorkloadEndpoint \"node--b-k8s-db-eth0\": not found in namespace \"default\"\n"
    );
}

#[test]
fn get_bgp_peers_and_configurations_tables() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["get", "bgppeers"]),
        "NAME                         PEERIP                      NODE       ASN\n\
         rack1-tor                    192.168.0.254               node-a     64513\n\
         core                         10.0.0.1                    (global)   65000\n\
         peer-with-route-reflectors   route-reflector == 'true'   all()\n\
         \n"
    );
    assert_eq!(
        ok(&agent, &["get", "bgpconfig"]),
        "NAME      LOGSEVERITY   MESHENABLED   ASNUMBER\n\
         default   Debug         false         63400\n\
         \n"
    );
    let yaml = ok(&agent, &["get", "bgppeer", "rack1-tor", "-o", "yaml"]);
    assert_eq!(
        yaml,
        "apiVersion: projectcalico.org/v3\n\
         kind: BGPPeer\n\
         metadata:\n  name: rack1-tor\n\
         spec:\n  asNumber: 64513\n  node: node-a\n  peerIP: 192.168.0.254\n"
    );
    // What get prints applies back.
    assert_eq!(
        ctl_stdin(&agent, &["apply", "-f", "-"], Some(&yaml)).stdout,
        "Successfully applied 1 'BGPPeer' resource(s)\n"
    );
    assert_eq!(
        ok(&agent, &["delete", "bgpconfiguration", "default"]),
        "Successfully deleted 1 'BGPConfiguration' resource(s)\n"
    );
    assert_eq!(
        ok(&agent, &["delete", "bp", "core"]),
        "Successfully deleted 1 'BGPPeer' resource(s)\n"
    );
}

#[test]
fn kinds_take_calicoctls_aliases_in_any_case() {
    let agent = FakeAgent::standard();
    let cases = [
        ("ippool", ResourceKind::Ippools),
        ("IPPools", ResourceKind::Ippools),
        ("ipp", ResourceKind::Ippools),
        ("pool", ResourceKind::Ippools),
        ("node", ResourceKind::Nodes),
        ("no", ResourceKind::Nodes),
        ("Nodes", ResourceKind::Nodes),
        ("wep", ResourceKind::Workloadendpoints),
        ("weps", ResourceKind::Workloadendpoints),
        ("WorkloadEndpoint", ResourceKind::Workloadendpoints),
        ("bgppeers", ResourceKind::Bgppeers),
        ("BGPPeer", ResourceKind::Bgppeers),
        ("bp", ResourceKind::Bgppeers),
        ("bgpconfig", ResourceKind::Bgpconfigurations),
        ("BGPConfigurations", ResourceKind::Bgpconfigurations),
    ];
    for (alias, _) in cases {
        ok(&agent, &["get", alias, "-o", "json"]);
    }
    let kinds: Vec<Request> = cases.iter().map(|(_, k)| get(*k, None)).collect();
    assert_eq!(agent.requests(), kinds);
}

// ---------------------------------------------------------------------------------------
// get: YAML and JSON

#[test]
fn get_one_ippool_as_yaml_and_json() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(
            &agent,
            &["get", "ippool", "default-ipv4-ippool", "-o", "yaml"]
        ),
        "apiVersion: projectcalico.org/v3\n\
         kind: IPPool\n\
         metadata:\n\
         \x20 name: default-ipv4-ippool\n\
         \x20 resourceVersion: '3'\n\
         spec:\n\
         \x20 blockSize: 26\n\
         \x20 cidr: 10.65.0.0/16\n\
         \x20 disabled: false\n\
         \x20 ipipMode: Never\n\
         \x20 natOutgoing: true\n\
         \x20 vxlanMode: Always\n"
    );
    assert_eq!(
        ok(&agent, &["get", "ippool", "edge", "-o", "json"]),
        r#"{
  "apiVersion": "projectcalico.org/v3",
  "kind": "IPPool",
  "metadata": {
    "name": "edge",
    "resourceVersion": "5"
  },
  "spec": {
    "blockSize": 28,
    "cidr": "10.66.0.0/24",
    "disableBGPExport": true,
    "disabled": true,
    "ipipMode": "CrossSubnet",
    "natOutgoing": false,
    "nodeSelector": "all()",
    "vxlanMode": "Never"
  }
}
"#
    );
}

#[test]
fn get_lists_as_calicoctl_list_documents() {
    let agent = FakeAgent::standard();
    let yaml = ok(&agent, &["get", "nodes", "-o", "yaml"]);
    assert!(
        yaml.starts_with("apiVersion: projectcalico.org/v3\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: Node\n"),
        "{yaml}"
    );
    assert!(yaml.ends_with("kind: NodeList\nmetadata: {}\n"), "{yaml}");
    let value: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(value["kind"], "NodeList");
    assert_eq!(value["items"].as_array().unwrap().len(), 2);

    let json = ok(&agent, &["get", "weps", "-o", "json"]);
    let value: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["apiVersion"], "projectcalico.org/v3");
    assert_eq!(value["kind"], "WorkloadEndpointList");
    assert_eq!(value["metadata"], serde_json::json!({}));
    assert_eq!(value["items"].as_array().unwrap().len(), 3);
    assert!(
        json.starts_with("{\n  \"apiVersion\""),
        "pretty-printed: {json}"
    );

    // A listing of one is still a list; an empty listing too.
    let agent = FakeAgent::replying(Reply::Documents {
        items: Vec::new(),
        damaged: Vec::new(),
    });
    assert_eq!(
        ok(&agent, &["get", "ippools", "-o", "yaml"]),
        "apiVersion: projectcalico.org/v3\nitems: []\nkind: IPPoolList\nmetadata: {}\n"
    );
    assert_eq!(
        ok(&agent, &["get", "ippools"]),
        "NAME   CIDR   SELECTOR\n\n"
    );
}

#[test]
fn yaml_and_json_parse_back_into_the_same_documents() {
    let agent = FakeAgent::standard();
    // One pool, as YAML and as JSON.
    for format in ["yaml", "json"] {
        for pool in pools() {
            let text = ok(
                &agent,
                &["get", "ippool", &pool.metadata.name, "-o", format],
            );
            assert_eq!(
                parse_documents(&text).unwrap(),
                [Document::IpPool(pool.clone())],
                "{format}: {text}"
            );
        }
    }
    // The lists, with the nodes' status.
    for format in ["yaml", "json"] {
        let text = ok(&agent, &["get", "ippools", "-o", format]);
        let want: Vec<Document> = pools().into_iter().map(Document::IpPool).collect();
        assert_eq!(parse_documents(&text).unwrap(), want, "{format}");
        let text = ok(&agent, &["get", "nodes", "-o", format]);
        let want: Vec<Document> = nodes().into_iter().map(Document::Node).collect();
        assert_eq!(parse_documents(&text).unwrap(), want, "{format}");
    }
    // Workload endpoints are not applied, but decode into the same objects.
    for ep in endpoints() {
        let text = ok(&agent, &["get", "wep", &ep.metadata.name, "-o", "yaml"]);
        let value: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(from_document_value::<WorkloadEndpoint>(value).unwrap(), ep);
    }
}

#[test]
fn an_edited_yaml_is_reapplied() {
    let agent = FakeAgent::standard();
    let yaml = ok(
        &agent,
        &["get", "ippool", "default-ipv4-ippool", "-o", "yaml"],
    );
    let edited = yaml.replace("vxlanMode: Always", "vxlanMode: CrossSubnet");
    assert_ne!(edited, yaml);
    let file = agent.file("pool.yaml", &edited);
    assert_eq!(
        ok(&agent, &["apply", "-f", file.to_str().unwrap()]),
        "Successfully applied 1 'IPPool' resource(s)\n"
    );
    let Some(Request::Apply { documents }) = agent.requests().pop() else {
        panic!("no apply request: {:?}", agent.requests());
    };
    assert_eq!(documents, edited, "the file is sent as it is");
    let docs = parse_documents(&documents).unwrap();
    let [Document::IpPool(pool)] = docs.as_slice() else {
        panic!("not one pool: {docs:?}");
    };
    assert_eq!(pool.spec.vxlan_mode, EncapMode::CrossSubnet);
    assert_eq!(pool.metadata.resource_version.as_deref(), Some("3"));

    // A whole listing goes back as well.
    let list = ok(&agent, &["get", "nodes", "-o", "yaml"]);
    assert_eq!(
        ctl_stdin(&agent, &["apply", "-f", "-"], Some(&list)).stdout,
        "Successfully applied 2 'Node' resource(s)\n"
    );
}

// ---------------------------------------------------------------------------------------
// apply and delete

#[test]
fn apply_from_files_and_standard_input() {
    let agent = FakeAgent::standard();
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: extra\nspec:\n  cidr: 10.80.0.0/16\n";
    let node = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n9\nspec:\n  bgp:\n    ipv4Address: 192.168.9.9/24\n";
    let file = agent.file("both.yaml", &format!("{pool}---\n{node}"));
    assert_eq!(
        ok(&agent, &["apply", "-f", file.to_str().unwrap()]),
        "Successfully applied 2 resource(s)\n",
        "two kinds: no single kind named"
    );
    let run = ctl_stdin(&agent, &["apply", "--filename", "-"], Some(pool));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "Successfully applied 1 'IPPool' resource(s)\n");
    assert_eq!(
        agent.requests().last(),
        Some(&Request::Apply {
            documents: pool.to_string()
        })
    );
}

#[test]
fn apply_errors_name_the_file_and_the_problem() {
    let agent = FakeAgent::standard();
    let bad = agent.file(
        "bad.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: x\nspec:\n  cidr: 10.65.128.0/17\n",
    );
    assert_eq!(
        fails(&agent, &["apply", "-f", bad.to_str().unwrap()]),
        format!(
            "Failed to apply resources from {}: invalid document: document 1 (IPPool \"x\"): \
             spec.cidr: 10.65.128.0/17 overlaps IPPool \"default-ipv4-ippool\" (10.65.0.0/16)\n",
            bad.display()
        )
    );
    let typo = agent.file(
        "typo.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: y\nspec:\n  cidr: 10.90.0.0/16\n  vxlanMod: Always\n",
    );
    let msg = fails(&agent, &["apply", "-f", typo.to_str().unwrap()]);
    assert!(msg.contains("unknown field `vxlanMod`"), "{msg}");

    // An unreadable file is reported before anything is sent.
    let before = agent.requests().len();
    let missing = agent.dir().join("nope.yaml");
    assert_eq!(
        fails(&agent, &["apply", "-f", missing.to_str().unwrap()]),
        format!(
            "Failed to apply resources from {0}: reading {0}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    assert_eq!(agent.requests().len(), before);
}

#[test]
fn delete_by_name_and_by_file() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["delete", "ippool", "edge"]),
        "Successfully deleted 1 'IPPool' resource(s)\n"
    );
    assert_eq!(
        ok(&agent, &["delete", "node", "kernel-host"]),
        "Successfully deleted 1 'Node' resource(s)\n"
    );
    let file = agent.file(
        "two.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/16}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.2.0.0/16}\n",
    );
    assert_eq!(
        ok(&agent, &["delete", "-f", file.to_str().unwrap()]),
        "Successfully deleted 2 'IPPool' resource(s)\n"
    );
    assert_eq!(
        agent.requests(),
        [
            delete(ResourceKind::Ippools, "edge"),
            delete(ResourceKind::Nodes, "kernel-host"),
            delete(ResourceKind::Ippools, "a"),
            delete(ResourceKind::Ippools, "b"),
        ]
    );
}

#[test]
fn delete_failures() {
    let agent = FakeAgent::standard();
    assert_eq!(
        fails(&agent, &["delete", "ippool", "missing-pool"]),
        "Failed to delete IPPool \"missing-pool\": IPPool \"missing-pool\" not found\n"
    );
    // The second of three fails: calicoctl's partial-success line, then the error.
    let file = agent.file(
        "three.yaml",
        "- {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: a}, spec: {cidr: 10.1.0.0/16}}\n\
         - {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: missing-b}, spec: {cidr: 10.2.0.0/16}}\n\
         - {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: c}, spec: {cidr: 10.3.0.0/16}}\n",
    );
    let run = ctl(&agent, &["delete", "-f", file.to_str().unwrap()]);
    assert_run(
        &run,
        1,
        "Partial success: deleted the first 1 out of 3 'IPPool' resources:\n",
        "Failed to delete IPPool \"missing-b\": IPPool \"missing-b\" not found\n",
    );
    let deleted: Vec<_> = agent
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            Request::Delete { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        ["missing-pool", "a", "missing-b"],
        "stops at the error"
    );

    // A file that is not documents, or holds none, is refused before anything is sent.
    let before = agent.requests().len();
    let junk = agent.file("junk.yaml", "kind: IPPool\n  bad: [indent\n");
    let msg = fails(&agent, &["delete", "-f", junk.to_str().unwrap()]);
    assert!(
        msg.starts_with(&format!(
            "Failed to delete resources from {0}: {0}: invalid YAML",
            junk.display()
        )),
        "{msg}"
    );
    let empty = agent.file("empty.yaml", "# nothing\n---\n");
    assert_eq!(
        fails(&agent, &["delete", "-f", empty.to_str().unwrap()]),
        format!(
            "Failed to delete resources from {0}: {0} holds no documents\n",
            empty.display()
        )
    );
    assert_eq!(agent.requests().len(), before);

    // The agent refuses to delete workload endpoints by hand; the CLI passes that on.
    let agent = FakeAgent::failing(ApiError::new(
        codes::BAD_REQUEST,
        "workload endpoints are removed by the CNI plugin (DEL), not by hand",
        "",
    ));
    assert_eq!(
        fails(&agent, &["delete", "wep", "node--a-k8s-web--1-eth0"]),
        "Failed to delete WorkloadEndpoint \"node--a-k8s-web--1-eth0\": workload endpoints are \
         removed by the CNI plugin (DEL), not by hand\n"
    );
}

// ---------------------------------------------------------------------------------------
// routes and stats

#[test]
fn version_names_the_client_the_agent_and_the_dataplane() {
    let client = format!("Client Version:    v{}\n", env!("CARGO_PKG_VERSION"));
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["version"]),
        format!(
            "{client}Agent Version:     v9.8.7\n\
             Dataplane Version: unknown (the dataplane is not connected)\n"
        )
    );
    let agent = FakeAgent::replying(Reply::Version {
        agent: "1.2.3".into(),
        dataplane: Some("1.2.4".into()),
    });
    assert_eq!(
        ok(&agent, &["version"]),
        format!("{client}Agent Version:     v1.2.3\nDataplane Version: v1.2.4\n")
    );
    // No agent: the client's version still shows, and why the rest does not.
    let dir = tempfile::tempdir().unwrap();
    let run = ctl_at(&dir.path().join("none.sock"), &["version"], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stdout, client);
    assert!(
        run.stderr.contains("Failed to get the agent's version"),
        "{run:?}"
    );
}

#[test]
fn ipam_show_check_and_release_read_like_calicoctl() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["ipam", "show"]),
        "+--------------------+--------------+-----------+------------+-------------+\n\
         |      GROUPING      |     CIDR     | IPS TOTAL | IPS IN USE |  IPS FREE   |\n\
         +--------------------+--------------+-----------+------------+-------------+\n\
         | IP Pool            | 10.65.0.0/16 | 65536     | 3 (0%)     | 65533 (99%) |\n\
         | IP Pool (disabled) | 10.66.0.0/24 | 256       | 0 (0%)     | 256 (100%)  |\n\
         +--------------------+--------------+-----------+------------+-------------+\n"
    );
    assert_eq!(
        ok(&agent, &["ipam", "show", "--show-blocks"]),
        "+--------------------+-----------------------------------+-----------+------------+-------------+\n\
         |      GROUPING      |               CIDR                | IPS TOTAL | IPS IN USE |  IPS FREE   |\n\
         +--------------------+-----------------------------------+-----------+------------+-------------+\n\
         | IP Pool            | 10.65.0.0/16                      | 65536     | 3 (0%)     | 65533 (99%) |\n\
         | Block              | 10.65.1.0/26 (node-a)             | 64        | 2 (3%)     | 62 (96%)    |\n\
         | Block              | 10.65.2.0/26 (node-b)             | 64        | 1 (1%)     | 63 (98%)    |\n\
         | IP Pool (disabled) | 10.66.0.0/24                      | 256       | 0 (0%)     | 256 (100%)  |\n\
         | Block              | 10.70.0.0/26 (node-c, in no pool) | 64        | 64 (100%)  | 0 (0%)      |\n\
         +--------------------+-----------------------------------+-----------+------------+-------------+\n"
    );
    assert_eq!(agent.requests(), [Request::IpamShow, Request::IpamShow]);

    // A problem found: the report on stdout, exit status 1.
    let check = ctl(&agent, &["ipam", "check"]);
    assert_eq!(check.code, Some(1), "{check:?}");
    assert!(
        check
            .stdout
            .starts_with("Checked 3 allocations against 2 workload endpoints.\n")
            && check
                .stdout
                .contains("  10.65.1.9 handle net.c9.eth0 on node-a, since 2026-12-01T10:00:00Z\n")
            && check.stdout.contains("Addresses claimed twice: 0\n")
            && check
                .stdout
                .contains("tapwirectl ipam release --ip ADDRESS"),
        "{check:?}"
    );
    assert_eq!(check.stderr, "IPAM check found problems (listed above)\n");

    assert_eq!(
        ok(&agent, &["ipam", "release", "--ip", "10.65.1.9"]),
        "Successfully released IP 10.65.1.9 (handle net.c9.eth0)\n"
    );
    let refused = ctl(&agent, &["ipam", "release", "--ip", "10.65.2.1"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("is in use by workload endpoint"),
        "{refused:?}"
    );
    let bad = ctl(&agent, &["ipam", "release", "--ip", "10.65.2"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let missing = ctl(&agent, &["ipam", "release"]);
    assert_eq!(missing.code, Some(2), "{missing:?}");
}

#[test]
fn routes_read_like_ip_route_with_the_encapsulation() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["routes"]),
        "blackhole 10.65.1.0/26\n\
         10.65.1.2 workload k8s/default/web-1 dev eth0 mtu 1450\n\
         10.65.2.0/26 via 192.168.0.2 encap vxlan node node-b mtu 1450\n\
         10.66.0.16/28 via 192.168.0.3 encap ipip node node-c mtu 1480\n\
         10.70.0.0/26 via 192.168.1.9 encap none node kernel-host mtu 1500\n"
    );
    assert_eq!(agent.requests(), [Request::Routes]);

    // One address: the request names it and the route is printed alone.
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["routes", "10.65.2.7"]),
        "10.65.2.0/26 via 192.168.0.2 encap vxlan node node-b mtu 1450\n"
    );
    assert_eq!(
        agent.requests(),
        [Request::RouteTo {
            address: "10.65.2.7".parse().unwrap()
        }]
    );
    assert_run(
        &ctl(&agent, &["routes", "10.99.0.1"]),
        0,
        "",
        "No route to 10.99.0.1: no IP pool's block holds it on any node.\n",
    );
    let bad = ctl(&agent, &["routes", "10.99.0.300"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");

    let agent = FakeAgent::replying(Reply::Routes { routes: Vec::new() });
    assert_run(
        &ctl(&agent, &["routes"]),
        0,
        "",
        "No routes: tapwire-control has not computed this node's routes yet, or there is no IP pool.\n",
    );
}

#[test]
fn stats_are_grouped_and_skip_zeros() {
    let agent = FakeAgent::standard();
    assert_eq!(
        ok(&agent, &["stats"]),
        "NAME                                         VALUE\n\
         drop.spoofed_source                          1\n\
         drop.no_route                                3\n\
         \n\
         encap.vxlan.tx_packets                       12\n\
         encap.vxlan.tx_bytes                         1176\n\
         encap.vxlan.rx_packets                       10\n\
         encap.vxlan.rx_bytes                         980\n\
         \n\
         endpoint.k8s/default/web-1/eth0.rx_packets   7\n\
         endpoint.k8s/default/web-1/eth0.tx_packets   6\n\
         endpoint.k8s/store/db/eth0.rx_packets        5\n\
         \n\
         arp.replies                                  2\n"
    );
    assert_eq!(
        ok(&agent, &["stats", "--all"]),
        "NAME                                         VALUE\n\
         drop.malformed_ethernet                      0\n\
         drop.spoofed_source                          1\n\
         drop.blackhole                               0\n\
         drop.no_route                                3\n\
         \n\
         encap.none.tx_packets                        0\n\
         encap.none.tx_bytes                          0\n\
         encap.vxlan.tx_packets                       12\n\
         encap.vxlan.tx_bytes                         1176\n\
         encap.vxlan.rx_packets                       10\n\
         encap.vxlan.rx_bytes                         980\n\
         \n\
         endpoint.k8s/default/web-1/eth0.rx_packets   7\n\
         endpoint.k8s/default/web-1/eth0.tx_packets   6\n\
         endpoint.k8s/store/db/eth0.rx_packets        5\n\
         endpoint.k8s/store/db/eth0.drops             0\n\
         \n\
         arp.replies                                  2\n\
         icmp.errors_sent                             0\n"
    );

    let agent = FakeAgent::replying(Reply::Stats {
        counters: vec![("drop.no_route".into(), 0), ("arp.replies".into(), 0)],
    });
    assert_run(
        &ctl(&agent, &["stats"]),
        0,
        "NAME   VALUE\n",
        "All 2 counters are zero (--all lists them).\n",
    );

    let agent = FakeAgent::failing(ApiError::new(
        codes::TRY_AGAIN_LATER,
        "the dataplane did not answer",
        "no counters from /run/tapwire/dataplane.sock within 3s",
    ));
    assert_eq!(
        fails(&agent, &["stats"]),
        "Failed to get counters: the dataplane did not answer: no counters from \
         /run/tapwire/dataplane.sock within 3s\n"
    );
}

// ---------------------------------------------------------------------------------------
// Errors, exit codes, the socket.

#[test]
fn agent_errors_are_reported_with_what_failed() {
    let agent = FakeAgent::standard();
    assert_eq!(
        fails(&agent, &["get", "ippool", "nope"]),
        "Failed to get IPPool \"nope\": IPPool \"nope\" not found\n"
    );
    let agent = FakeAgent::failing(ApiError::new(
        codes::DATASTORE,
        "reading the datastore failed",
        "IPPool/x.json: expected value at line 1 column 1",
    ));
    assert_eq!(
        fails(&agent, &["get", "ippools"]),
        "Failed to get IPPool resources: reading the datastore failed: IPPool/x.json: expected \
         value at line 1 column 1\n"
    );
    // An answer to some other question.
    let agent = FakeAgent::replying(Reply::Done);
    assert_eq!(
        fails(&agent, &["routes"]),
        "Failed to get routes: tapwire-control answered with an empty reply where routes was expected\n"
    );
    // A document of the wrong shape is an error, not a panic or a wrong table.
    let agent = FakeAgent::replying(Reply::Documents {
        items: vec![
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "odd"}, "spec": {"cidr": "not-a-cidr"}}),
        ],
        damaged: Vec::new(),
    });
    let msg = fails(&agent, &["get", "ippools"]);
    assert!(
        msg.starts_with(
            "cannot decode IPPool \"odd\" from tapwire-control: spec.cidr: invalid CIDR"
        ),
        "{msg}"
    );
}

#[test]
fn a_garbled_answer_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("junk.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = api::read_request(&mut stream);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let run = ctl_at(&socket, &["get", "nodes"], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with(
            "Failed to get Node resources: cannot decode the answer from tapwire-control: "
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn the_socket_comes_from_api_then_tapwire_api() {
    let agent = FakeAgent::standard();
    // From the environment alone.
    let run = run_with(&["get", "nodes"], Some(&agent.socket), None);
    assert_run(&run, 0, "NAME\nnode-a\nkernel-host\n\n", "");
    // --api wins over the environment (here naming a socket that does not exist), and
    // works after the subcommand too.
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.sock");
    let run = run_with(
        &["get", "nodes", "--api", absent.to_str().unwrap()],
        Some(&agent.socket),
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "Failed to get Node resources: cannot reach tapwire-control at {}:",
            absent.display()
        )),
        "{}",
        run.stderr
    );
    let run = run_with(
        &["--api", agent.socket.to_str().unwrap(), "get", "nodes"],
        Some(&absent),
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(agent.requests().len(), 2);
    // Neither: the default socket is named.
    let run = run_with(&["routes"], None, None);
    if run.code == Some(1) {
        assert!(
            run.stderr.contains(api::DEFAULT_API_SOCKET),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn bad_arguments_are_usage_errors_with_exit_code_2() {
    let agent = FakeAgent::standard();
    let cases: [&[&str]; 9] = [
        &[],
        &["get"],
        &["get", "policies"],
        &["get", "ippools", "-o", "xml"],
        &["apply"],
        &["delete", "ippool"],
        &["delete", "ippool", "a", "-f", "x.yaml"],
        &["get", "wep", "-n", "a", "-A"],
        &["stats", "--timeout", "0"],
    ];
    for args in cases {
        let run = ctl(&agent, args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        // Usage, or for a bad value the pointer to --help.
        assert!(
            run.stderr.starts_with("error: ")
                && (run.stderr.contains("Usage: tapwirectl") || run.stderr.contains("--help")),
            "{args:?}: {}",
            run.stderr
        );
    }
    let run = ctl(&agent, &["get", "policies"]);
    assert!(
        run.stderr.contains("unknown resource type \"policies\""),
        "{}",
        run.stderr
    );
    assert!(agent.requests().is_empty(), "nothing was sent");
    let help = ctl(&agent, &["--help"]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("TAPWIRE_API"), "{}", help.stdout);
}

#[test]
fn get_prints_the_readable_documents_and_warns_about_damaged_ones() {
    let agent = FakeAgent::replying(Reply::Documents {
        items: vec![to_document_value(&pools()[0])],
        damaged: vec![tapwire_control::datastore::Damaged {
            kind: "IPPool".into(),
            name: "broken".into(),
            reason: "corrupt datastore file /var/lib/tapwire/IPPool/broken.json: not JSON: expected value at line 1 column 1".into(),
        }],
    });
    let run = ctl(&agent, &["get", "ippools"]);
    assert_run(
        &run,
        0,
        "NAME                  CIDR           SELECTOR\ndefault-ipv4-ippool   10.65.0.0/16   all()\n\n",
        "warning: IPPool \"broken\" is damaged in the datastore and was skipped: corrupt datastore file /var/lib/tapwire/IPPool/broken.json: not JSON: expected value at line 1 column 1; repair it with `tapwirectl delete ippool broken`, or apply a good IPPool named \"broken\" over it\n",
    );
}

#[test]
fn input_larger_than_a_request_is_refused_without_reading_it_all() {
    let agent = FakeAgent::standard();
    // An endless file: read just past the limit, then refused (not 16 GiB of memory).
    let run = ctl(&agent, &["apply", "-f", "/dev/zero"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .starts_with("Failed to apply: reading /dev/zero: larger than the 16 MiB")
            || run
                .stderr
                .contains("reading /dev/zero: larger than the 16 MiB"),
        "{}",
        run.stderr
    );
    // The same from standard input.
    let big = "#".repeat(api::MAX_MESSAGE_BYTES + 10);
    let run = ctl_stdin(&agent, &["apply", "-f", "-"], Some(&big));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("standard input: larger than the 16 MiB"),
        "{}",
        run.stderr
    );
    // Under the limit as a file, over it once encoded as a request (every quote is
    // escaped): its own message, not a broken pipe.
    let quotes = "\"".repeat(9 << 20);
    let run = ctl_stdin(&agent, &["apply", "-f", "-"], Some(&quotes));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("request too large for the tapwire-control API")
            && !run.stderr.contains("Is tapwire-control running"),
        "{}",
        run.stderr
    );
    assert!(agent.requests().is_empty(), "{:?}", agent.requests());
}

#[test]
fn an_agent_that_closes_without_answering_is_told_apart_from_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("closing.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            // Reads the request, then goes away as a killed agent would.
            let _ = api::read_request(&mut stream);
            drop(stream);
        }
    });
    let run = ctl_at(&socket, &["get", "nodes"], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.starts_with(
            "Failed to get Node resources: tapwire-control closed the connection without answering"
        ),
        "{}",
        run.stderr
    );
}
