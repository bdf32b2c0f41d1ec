//! The `tapwire` CNI plugin run the way a container runtime runs it: the built binary,
//! `CNI_*` variables and the network configuration on stdin, against a fake
//! `tapwire-control` on a Unix socket (see `common`). Each test asserts what a runtime
//! reads: the exact JSON on stdout, the exit code, and what the agent was asked.
//! The last test chains tapwire with Debian's `tuning` plugin through a conflist in a
//! real network namespace (needs root and containernetworking-plugins; skipped with a
//! note on stderr otherwise).
// clippy.toml allows unwrap/expect in #[test] fns; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{exec_plugin, tapwire_bin, Attachment, FakeAgent, PluginRun, Runtime};
use serde_json::{json, Value};
use tapwire_control::api::{
    codes, ApiError, CniAddReply, CniRequest, CniRoute, NodeStatusReply, Reply, Request,
    ResourceKind, Response,
};

const NETNS: &str = "/var/run/netns/cni-1234";
const CONTAINER: &str = "6f1c2d3e4f5a";
const K8S_ARGS: &str =
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=6f1c2d3e4f5a;K8S_POD_UID=1b2c";

fn add_reply() -> CniAddReply {
    CniAddReply {
        interface: "eth0".into(),
        mac: "02:42:0a:41:01:02".into(),
        sandbox: NETNS.into(),
        address: "10.65.1.2/32".into(),
        gateway: "169.254.1.1".into(),
        mtu: 1450,
        routes: vec![CniRoute {
            dst: "0.0.0.0/0".into(),
            gw: Some("169.254.1.1".into()),
        }],
    }
}

/// An agent that does what the real one does on success.
fn happy_agent() -> FakeAgent {
    FakeAgent::start(|req| match req {
        Request::CniAdd(_) => Response::Ok(Reply::CniAdd(add_reply())),
        _ => Response::Ok(Reply::Done),
    })
}

fn config(version: &str, agent: &FakeAgent) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"k8s-pod-network","type":"tapwire","api_socket":"{}"}}"#,
        agent.socket_str()
    )
}

/// Runs the plugin with the usual Kubernetes attachment variables for `command`.
fn run(command: &str, stdin: &str) -> PluginRun {
    exec_plugin(
        &tapwire_bin(),
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", CONTAINER),
            ("CNI_NETNS", NETNS),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", K8S_ARGS),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        stdin.as_bytes(),
    )
}

fn run_env(env: &[(&str, &str)], stdin: &str) -> PluginRun {
    exec_plugin(&tapwire_bin(), env, stdin.as_bytes())
}

/// Asserts a failed run printed exactly one error object with `code`; returns it.
fn assert_error(run: &PluginRun, code: u32) -> Value {
    assert_eq!(run.code, Some(1), "exit code; stdout {:?}", run.stdout);
    let v = run.json();
    assert_eq!(v["code"], code, "error object: {v}");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["cniVersion", "code", "details", "msg"], "{v}");
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["details"].is_string(), "{v}");
    v
}

fn expected_request(netns: &str) -> CniRequest {
    CniRequest {
        container_id: CONTAINER.into(),
        netns: netns.into(),
        ifname: "eth0".into(),
        pod_namespace: Some("default".into()),
        pod_name: Some("web-1".into()),
        network: "k8s-pod-network".into(),
        mtu: None,
    }
}

// ------------------------------------------------------------------------------------
// VERSION

#[test]
fn version_echoes_the_requested_version_and_lists_what_tapwire_speaks() {
    let out = run_env(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert!(out.success());
    assert_eq!(
        out.stdout,
        "{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
    assert_eq!(out.stderr, "");
    // No input (or input that is not a configuration): the newest version.
    for stdin in ["", "not json", "[]"] {
        let out = run_env(&[("CNI_COMMAND", "VERSION")], stdin);
        assert!(out.success(), "{stdin:?}");
        assert_eq!(
            out.json(),
            json!({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
        );
    }
}

// ------------------------------------------------------------------------------------
// ADD

#[test]
fn add_prints_a_1_0_0_result_and_asks_the_agent_with_the_pod_identity() {
    let agent = happy_agent();
    let out = run("ADD", &config("1.0.0", &agent));
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        concat!(
            r#"{"cniVersion":"1.0.0","#,
            r#""interfaces":[{"name":"eth0","mac":"02:42:0a:41:01:02","sandbox":"/var/run/netns/cni-1234"}],"#,
            r#""ips":[{"address":"10.65.1.2/32","gateway":"169.254.1.1","interface":0}],"#,
            r#""routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"#,
            r#""dns":{}}"#,
            "\n"
        )
    );
    assert_eq!(out.stderr, "");
    assert_eq!(
        agent.requests(),
        vec![Request::CniAdd(expected_request(NETNS))]
    );
}

#[test]
fn add_prints_a_1_1_0_result_with_the_interface_mtu() {
    let agent = happy_agent();
    let out = run("ADD", &config("1.1.0", &agent));
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.json(),
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "02:42:0a:41:01:02", "mtu": 1450,
                            "sandbox": NETNS}],
            "ips": [{"address": "10.65.1.2/32", "gateway": "169.254.1.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            "dns": {}
        })
    );
}

#[test]
fn add_prints_0_4_0_and_0_3_x_results_with_ip_versions() {
    let agent = happy_agent();
    for version in ["0.4.0", "0.3.1", "0.3.0"] {
        let out = run("ADD", &config(version, &agent));
        assert!(out.success(), "{version}: {out:?}");
        assert_eq!(
            out.stdout,
            format!(
                concat!(
                    r#"{{"cniVersion":"{}","#,
                    r#""interfaces":[{{"name":"eth0","mac":"02:42:0a:41:01:02","sandbox":"/var/run/netns/cni-1234"}}],"#,
                    r#""ips":[{{"version":"4","address":"10.65.1.2/32","gateway":"169.254.1.1","interface":0}}],"#,
                    r#""routes":[{{"dst":"0.0.0.0/0","gw":"169.254.1.1"}}],"#,
                    r#""dns":{{}}}}"#,
                    "\n"
                ),
                version
            ),
            "{version}"
        );
    }
}

#[test]
fn add_later_in_a_chain_keeps_the_previous_result_and_appends_its_own() {
    let agent = happy_agent();
    // What a bridge-like plugin before tapwire might have produced (1.0.0 shape), with a
    // field tapwire does not know, which must survive.
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "net1", "mac": "99:88:77:66:55:44", "sandbox": NETNS}
        ],
        "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1}],
        "routes": [{"dst": "10.1.0.0/16"}],
        "dns": {"nameservers": ["10.1.0.1"]},
        "x-vendor": {"kept": true}
    });
    let mut conf: Value = serde_json::from_str(&config("1.0.0", &agent)).unwrap();
    conf["prevResult"] = prev;
    conf["dns"] = json!({"nameservers": ["10.96.0.10"]});
    let out = run("ADD", &conf.to_string());
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.json(),
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "net1", "mac": "99:88:77:66:55:44", "sandbox": NETNS},
                {"name": "eth0", "mac": "02:42:0a:41:01:02", "sandbox": NETNS}
            ],
            "ips": [
                {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1},
                {"address": "10.65.1.2/32", "gateway": "169.254.1.1", "interface": 2}
            ],
            "routes": [{"dst": "10.1.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            "dns": {"nameservers": ["10.1.0.1"]},
            "x-vendor": {"kept": true}
        })
    );
}

#[test]
fn add_in_a_0_4_0_chain_uses_the_0_4_0_shape_for_its_own_entries() {
    let agent = happy_agent();
    let mut conf: Value = serde_json::from_str(&config("0.4.0", &agent)).unwrap();
    conf["prevResult"] = json!({
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "host0"}],
        "ips": [{"version": "4", "address": "192.168.9.2/24", "interface": 0}]
    });
    conf["dns"] = json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]});
    let out = run("ADD", &conf.to_string());
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.json(),
        json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "host0"},
                {"name": "eth0", "mac": "02:42:0a:41:01:02", "sandbox": NETNS}
            ],
            "ips": [
                {"version": "4", "address": "192.168.9.2/24", "interface": 0},
                {"version": "4", "address": "10.65.1.2/32", "gateway": "169.254.1.1",
                 "interface": 1}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            // No dns in prevResult: the configuration's dns is reported.
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    );
}

#[test]
fn add_refuses_an_interface_an_earlier_plugin_already_made() {
    let agent = happy_agent();
    let mut conf: Value = serde_json::from_str(&config("1.0.0", &agent)).unwrap();
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": NETNS}]
    });
    let v = assert_error(&run("ADD", &conf.to_string()), 7);
    assert_eq!(v["msg"], "interface eth0 already exists in the container");
    assert!(agent.requests().is_empty(), "the agent must not be asked");
}

#[test]
fn add_passes_the_agents_error_on_unchanged() {
    let agent = FakeAgent::start(|_| {
        Response::Error(ApiError::new(
            codes::POOL_EXHAUSTED,
            "no free pod address",
            "pool default-ipv4-ippool (10.65.0.0/16) is full",
        ))
    });
    let out = run("ADD", &config("1.0.0", &agent));
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stdout,
        "{\"cniVersion\":\"1.0.0\",\"code\":100,\"msg\":\"no free pod address\",\"details\":\"pool default-ipv4-ippool (10.65.0.0/16) is full\"}\n"
    );
    assert!(out.stderr.contains("ADD failed"), "{}", out.stderr);
}

#[test]
fn add_with_a_malformed_agent_answer_fails_cleanly() {
    let agent = FakeAgent::start(|_| {
        let mut reply = add_reply();
        reply.address = "not-an-address".into();
        Response::Ok(Reply::CniAdd(reply))
    });
    let v = assert_error(&run("ADD", &config("1.0.0", &agent)), 6);
    assert!(
        v["details"].as_str().unwrap().contains("not-an-address"),
        "{v}"
    );
}

// ------------------------------------------------------------------------------------
// DEL

#[test]
fn del_is_silent_on_success_and_idempotent() {
    let agent = happy_agent();
    let conf = config("1.0.0", &agent);
    for _ in 0..2 {
        let out = run("DEL", &conf);
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stdout, "");
        assert_eq!(out.stderr, "");
    }
    // DEL after the namespace is gone: no CNI_NETNS, still success.
    let out = run_env(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", CONTAINER),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", K8S_ARGS),
        ],
        &conf,
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(
        agent.requests(),
        vec![
            Request::CniDel(expected_request(NETNS)),
            Request::CniDel(expected_request(NETNS)),
            Request::CniDel(expected_request("")),
        ]
    );
}

#[test]
fn del_with_a_prev_result_in_0_3_1_is_fine() {
    let agent = happy_agent();
    let mut conf: Value = serde_json::from_str(&config("0.3.1", &agent)).unwrap();
    conf["prevResult"] = json!({"cniVersion": "0.3.1", "interfaces": [], "ips": []});
    let out = run("DEL", &conf.to_string());
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "");
}

#[test]
fn del_with_the_agent_down_asks_to_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tapwire","api_socket":"{}"}}"#,
        socket.display()
    );
    let v = assert_error(&run("DEL", &conf), 11);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["msg"], "tapwire-control is not reachable");
    assert!(
        v["details"].as_str().unwrap().contains("absent.sock"),
        "details name the socket: {v}"
    );
    // ADD and CHECK too.
    assert_error(&run("ADD", &conf), 11);
    // A socket file nobody listens on.
    drop(UnixListener::bind(&socket).unwrap());
    assert_error(&run("DEL", &conf), 11);
}

#[test]
fn an_agent_that_does_not_answer_times_out_after_timeout_ms() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("slow.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keeper = {
        let held = Arc::clone(&held);
        std::thread::spawn(move || {
            // Accept one connection and keep it open without answering.
            if let Ok((stream, _)) = listener.accept() {
                held.lock().unwrap().push(stream);
            }
        })
    };
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","api_socket":"{}","timeout_ms":300}}"#,
        socket.display()
    );
    let start = Instant::now();
    let v = assert_error(&run("ADD", &conf), 11);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(v["details"].as_str().unwrap().contains("slow.sock"), "{v}");
    keeper.join().unwrap();
}

// ------------------------------------------------------------------------------------
// CHECK

fn check_config(version: &str, agent: &FakeAgent) -> Value {
    let mut conf: Value = serde_json::from_str(&config(version, agent)).unwrap();
    conf["prevResult"] = json!({
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "mac": "02:42:0a:41:01:02", "sandbox": NETNS}],
        "ips": [{"address": "10.65.1.2/32", "gateway": "169.254.1.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "dns": {}
    });
    conf
}

#[test]
fn check_consults_prev_result_then_asks_the_agent() {
    let agent = happy_agent();
    let out = run("CHECK", &check_config("1.0.0", &agent).to_string());
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        agent.requests(),
        vec![Request::CniCheck(expected_request(NETNS))]
    );
}

#[test]
fn check_errors() {
    let agent = FakeAgent::start(|_| {
        Response::Error(ApiError::new(
            codes::INTERFACE,
            "the pod interface has the wrong address",
            "eth0 has 10.65.1.9, expected [10.65.1.2]",
        ))
    });
    // The agent's verdict is passed on.
    let v = assert_error(
        &run("CHECK", &check_config("1.0.0", &agent).to_string()),
        104,
    );
    assert_eq!(v["msg"], "the pod interface has the wrong address");
    // No prevResult: the spec requires one.
    let v = assert_error(&run("CHECK", &config("1.0.0", &agent)), 7);
    assert_eq!(v["msg"], "CHECK needs prevResult");
    // prevResult without tapwire's interface.
    let mut conf = check_config("1.0.0", &agent);
    conf["prevResult"]["interfaces"][0]["name"] = json!("net9");
    let v = assert_error(&run("CHECK", &conf.to_string()), 7);
    assert_eq!(v["msg"], "prevResult does not list interface eth0");
    // CHECK does not exist before 0.4.0.
    let v = assert_error(&run("CHECK", &check_config("0.3.1", &agent).to_string()), 1);
    assert_eq!(v["msg"], "config version does not allow CHECK");
    assert_eq!(v["cniVersion"], "0.3.1");
    // Only the first call reached the agent.
    assert_eq!(agent.requests().len(), 1);
}

// ------------------------------------------------------------------------------------
// STATUS and GC (1.1.0)

#[test]
fn status_reports_readiness() {
    let agent = happy_agent();
    let out = run_env(&[("CNI_COMMAND", "STATUS")], &config("1.1.0", &agent));
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(agent.requests(), vec![Request::CniStatus]);

    let not_ready = FakeAgent::start(|_| {
        Response::Error(ApiError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            "no enabled IP pool",
            "apply an IPPool with tapwirectl apply -f",
        ))
    });
    let out = run_env(&[("CNI_COMMAND", "STATUS")], &config("1.1.0", &not_ready));
    assert_eq!(
        out.stdout,
        "{\"cniVersion\":\"1.1.0\",\"code\":50,\"msg\":\"no enabled IP pool\",\"details\":\"apply an IPPool with tapwirectl apply -f\"}\n"
    );
    assert_eq!(out.code, Some(1));

    // The agent down: not available (50), not "try again" (11).
    let conf = r#"{"cniVersion":"1.1.0","name":"n","api_socket":"/nonexistent/tapwire.sock"}"#;
    assert_error(&run_env(&[("CNI_COMMAND", "STATUS")], conf), 50);

    // STATUS is a 1.1.0 verb.
    let v = assert_error(
        &run_env(&[("CNI_COMMAND", "STATUS")], &config("1.0.0", &agent)),
        1,
    );
    assert_eq!(v["msg"], "config version does not allow STATUS");
}

fn wep(node: &str, container: Option<&str>, endpoint: &str) -> Value {
    let mut spec = json!({
        "node": node, "orchestrator": "k8s", "workload": "w", "endpoint": endpoint,
        "interfaceName": endpoint, "ipNetworks": ["10.65.1.2/32"]
    });
    if let Some(c) = container {
        spec["containerID"] = json!(c);
    }
    json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
           "metadata": {"name": format!("{node}-{endpoint}")}, "spec": spec})
}

fn gc_agent(del_error: Option<ApiError>) -> FakeAgent {
    FakeAgent::start(move |req| match req {
        Request::NodeStatus => Response::Ok(Reply::NodeStatus(NodeStatusReply {
            node: "node-a".into(),
            underlay_address: "192.168.0.1/24".into(),
            dataplane_connected: true,
            dataplane_in_sync: true,
            last_heartbeat_secs: Some(1),
            peers: vec![],
        })),
        Request::Get { .. } => Response::Ok(Reply::Documents {
            items: vec![
                wep("node-a", Some("live1"), "eth0"),
                wep("node-a", Some("leaked1"), "eth0"),
                wep("node-a", Some("leaked2"), "eth0"),
                wep("node-b", Some("elsewhere"), "eth0"),
                wep("node-a", None, "eth0"),
            ],
            damaged: vec![],
        }),
        Request::CniDel(del) if del.container_id == "leaked2" => match &del_error {
            Some(err) => Response::Error(err.clone()),
            None => Response::Ok(Reply::Done),
        },
        _ => Response::Ok(Reply::Done),
    })
}

fn gc_del(container: &str) -> Request {
    Request::CniDel(CniRequest {
        container_id: container.into(),
        netns: String::new(),
        ifname: "eth0".into(),
        pod_namespace: None,
        pod_name: None,
        network: "k8s-pod-network".into(),
        mtu: None,
    })
}

#[test]
fn gc_deletes_only_this_nodes_endpoints_missing_from_the_valid_list() {
    let agent = gc_agent(None);
    let mut conf: Value = serde_json::from_str(&config("1.1.0", &agent)).unwrap();
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "live1", "ifname": "eth0"}]);
    let out = run_env(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf.to_string(),
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        agent.requests(),
        vec![
            Request::NodeStatus,
            Request::Get {
                kind: ResourceKind::Workloadendpoints,
                name: None
            },
            gc_del("leaked1"),
            gc_del("leaked2"),
            Request::ReleaseOrphans,
        ]
    );
}

#[test]
fn gc_keeps_going_past_a_failure_and_reports_it() {
    let agent = gc_agent(Some(ApiError::new(
        codes::DATASTORE,
        "removing the workload endpoint failed",
        "disk full",
    )));
    let mut conf: Value = serde_json::from_str(&config("1.1.0", &agent)).unwrap();
    // libcni also sends the list under the older key.
    conf["cni.dev/attachments"] = json!([]);
    let v = assert_error(&run_env(&[("CNI_COMMAND", "GC")], &conf.to_string()), 103);
    assert_eq!(v["msg"], "GC could not delete every stale endpoint");
    assert!(
        v["details"].as_str().unwrap().contains("leaked2/eth0"),
        "{v}"
    );
    // live1 is not listed this time, so it went too; leaked2's failure did not stop it.
    let dels: Vec<Request> = agent
        .requests()
        .into_iter()
        .filter(|r| matches!(r, Request::CniDel(_)))
        .collect();
    assert_eq!(
        dels,
        vec![gc_del("live1"), gc_del("leaked1"), gc_del("leaked2")]
    );
}

#[test]
fn gc_without_a_valid_list_deletes_nothing() {
    let agent = gc_agent(None);
    let v = assert_error(
        &run_env(&[("CNI_COMMAND", "GC")], &config("1.1.0", &agent)),
        7,
    );
    assert_eq!(v["msg"], "GC needs cni.dev/valid-attachments");
    assert!(agent.requests().is_empty());
}

// ------------------------------------------------------------------------------------
// Bad input: error objects, never a panic

#[test]
fn garbage_stdin_is_a_decode_error() {
    let out = run("ADD", "this is not json");
    assert_eq!(
        out.stdout,
        "{\"cniVersion\":\"1.1.0\",\"code\":6,\"msg\":\"cannot decode the network configuration\",\"details\":\"expected ident at line 1 column 2\"}\n"
    );
    assert_eq!(out.code, Some(1));
    for stdin in [
        "",
        "[1,2]",
        "\u{0}\u{1}\u{2}",
        "{\"cniVersion\":",
        "{\"name\":5}",
    ] {
        assert_error(&run("ADD", stdin), 6);
    }
    // Deep nesting where tapwire reads the value stops at serde_json's recursion limit
    // (an error, not a stack overflow)…
    let agent = happy_agent();
    let deep = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","api_socket":"{}","prevResult":{{"x":{}{}}}}}"#,
        agent.socket_str(),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_error(&run("ADD", &deep), 6);
    // …and in a field tapwire ignores it is skipped without recursion: a valid config.
    let deep = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","api_socket":"{}","x":{}{}}}"#,
        agent.socket_str(),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(run("ADD", &deep).success());
    assert_eq!(agent.requests().len(), 1);
}

#[test]
fn huge_stdin_is_refused_without_reading_it_all() {
    let huge = format!(
        r#"{{"cniVersion":"1.0.0","name":"n","pad":"{}"}}"#,
        "x".repeat(8 << 20)
    );
    let v = assert_error(&run("ADD", &huge), 5);
    assert_eq!(v["msg"], "network configuration too large");
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[test]
fn missing_or_unknown_command_is_an_environment_error() {
    let out = run_env(&[], r#"{"cniVersion":"1.0.0","name":"n"}"#);
    assert_eq!(
        out.stdout,
        "{\"cniVersion\":\"1.0.0\",\"code\":4,\"msg\":\"required environment variables [CNI_COMMAND] missing\",\"details\":\"CNI_COMMAND is one of ADD, DEL, CHECK, STATUS, GC, VERSION\"}\n"
    );
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("tapwire CNI plugin"), "{}", out.stderr);
    let v = assert_error(&run("add", r#"{"cniVersion":"1.0.0","name":"n"}"#), 4);
    assert_eq!(v["msg"], "unknown CNI_COMMAND: add");
}

#[test]
fn missing_attachment_variables_are_named() {
    let conf = r#"{"cniVersion":"1.0.0","name":"n"}"#;
    let v = assert_error(&run_env(&[("CNI_COMMAND", "ADD")], conf), 4);
    assert_eq!(
        v["msg"],
        "required environment variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing"
    );
    let v = assert_error(
        &run_env(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", ""),
            ],
            conf,
        ),
        4,
    );
    assert_eq!(
        v["msg"],
        "required environment variables [CNI_IFNAME] missing"
    );
    let v = assert_error(
        &run_env(
            &[
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
            ],
            conf,
        ),
        4,
    );
    assert_eq!(
        v["msg"],
        "required environment variables [CNI_NETNS] missing"
    );
}

#[test]
fn invalid_attachment_variables_are_named() {
    let agent = happy_agent();
    let conf = config("1.0.0", &agent);
    let env = |id: &str, ifname: &str, args: &str| {
        run_env(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", NETNS),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", args),
            ],
            &conf,
        )
    };
    let v = assert_error(&env("-bad id", "eth0", ""), 4);
    assert_eq!(
        v["msg"],
        "invalid CNI_CONTAINERID: invalid characters in container id"
    );
    let v = assert_error(&env("abc", "a-very-long-ifname", ""), 4);
    assert!(
        v["msg"].as_str().unwrap().starts_with("invalid CNI_IFNAME"),
        "{v}"
    );
    let v = assert_error(&env("abc", "eth0", "K8S_POD_NAME=x;FOO=bar"), 4);
    assert!(
        v["msg"].as_str().unwrap().starts_with("invalid CNI_ARGS"),
        "{v}"
    );
    assert!(agent.requests().is_empty());
}

#[test]
fn unsupported_versions_are_incompatible() {
    let agent = happy_agent();
    for version in ["2.0.0", "0.2.0", "banana"] {
        let v = assert_error(&run("ADD", &config(version, &agent)), 1);
        assert_eq!(v["msg"], "incompatible CNI versions");
        // The error carries the version the configuration gave.
        assert_eq!(v["cniVersion"], version);
        assert!(
            v["details"]
                .as_str()
                .unwrap()
                .contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            "{v}"
        );
    }
    // No cniVersion at all reads as 0.1.0, which tapwire does not speak.
    let v = assert_error(&run("ADD", r#"{"name":"n"}"#), 1);
    assert_eq!(v["cniVersion"], "1.1.0");
    assert!(agent.requests().is_empty());
}

#[test]
fn invalid_configurations_are_code_7_and_unsupported_fields_code_2() {
    let v = assert_error(&run("ADD", r#"{"cniVersion":"1.0.0"}"#), 7);
    assert_eq!(v["msg"], "missing network name");
    let v = assert_error(
        &run(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"n","api_socket":"tapwire.sock"}"#,
        ),
        7,
    );
    assert_eq!(v["msg"], "invalid api_socket");
    let v = assert_error(
        &run(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"n","type":"tapwire","ipam":{"type":"host-local"}}"#,
        ),
        2,
    );
    assert_eq!(
        v["msg"],
        r#"unsupported field in network configuration: ipam: {"type":"host-local"}"#
    );
}

/// Random variables and bytes, many times: every run ends with exit 0 or 1, and stdout is
/// empty (a silent success) or exactly one JSON object.
#[test]
fn arbitrary_input_never_crashes_the_plugin() {
    let agent = FakeAgent::start(|req| match req {
        Request::CniAdd(_) => Response::Ok(Reply::CniAdd(add_reply())),
        Request::Get { .. } => Response::Ok(Reply::Documents {
            items: vec![],
            damaged: vec![],
        }),
        _ => Response::Ok(Reply::Done),
    });
    let socket = agent.socket_str().to_string();
    // A small deterministic generator (xorshift), so failures reproduce.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let commands = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "FOO", ""];
    let fragments = [
        r#"{"cniVersion":"1.0.0","name":"n","api_socket":"SOCK"}"#.to_string(),
        r#"{"cniVersion":"1.1.0","name":"n","api_socket":"SOCK","cni.dev/valid-attachments":[]}"#
            .to_string(),
        r#"{"cniVersion":"0.4.0","name":"n","api_socket":"SOCK","prevResult":{"interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"address":"1.2.3.4/32","interface":0}]}}"#
            .to_string(),
        r#"{"cniVersion":"1.0.0","name":"n","api_socket":"SOCK","prevResult":{"ips":[{"interface":-1}]}}"#
            .to_string(),
        r#"{"cniVersion":"1.0.0","name":"n","api_socket":"SOCK","timeout_ms":1e99}"#.to_string(),
        "null".to_string(),
        "{".to_string(),
    ];
    for i in 0..120 {
        let r = next();
        let command = commands[(r % commands.len() as u64) as usize];
        let mut stdin = fragments[((r >> 8) % fragments.len() as u64) as usize]
            .replace("SOCK", &socket)
            .into_bytes();
        // Corrupt some inputs: flip or cut bytes.
        match (r >> 16) % 4 {
            0 => {
                let at = ((r >> 24) as usize) % stdin.len().max(1);
                if let Some(b) = stdin.get_mut(at) {
                    *b ^= (r >> 32) as u8 | 1;
                }
            }
            1 => stdin.truncate(((r >> 24) as usize) % (stdin.len() + 1)),
            _ => {}
        }
        let ifname =
            ["eth0", "", "x".repeat(20).as_str(), "a b"][((r >> 40) % 4) as usize].to_string();
        let mut env = vec![("CNI_COMMAND", command), ("CNI_IFNAME", ifname.as_str())];
        if (r >> 44) % 2 == 0 {
            env.extend([("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/ns")]);
        }
        if (r >> 45) % 3 == 0 {
            env.push(("CNI_ARGS", "IgnoreUnknown=x;;=;K8S_POD_NAME"));
        }
        let out = exec_plugin(&tapwire_bin(), &env, &stdin);
        assert!(
            matches!(out.code, Some(0) | Some(1)),
            "run {i}: exit {:?}",
            out.code
        );
        if !(out.success() && out.stdout.is_empty()) {
            let v = out.json();
            assert!(v.is_object(), "run {i}: {v}");
            if !out.success() {
                assert!(v["code"].as_u64().is_some(), "run {i}: {v}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// A conflist: tapwire, then Debian's tuning plugin, in a real network namespace

#[test]
fn conflist_tapwire_then_tuning_add_check_del() {
    use tapwire_sys::testing::{is_root, ScratchNetns};

    let tuning_dir = Path::new("/usr/lib/cni");
    if !is_root() || !tuning_dir.join("tuning").is_file() {
        eprintln!("skipped: needs root and containernetworking-plugins (/usr/lib/cni/tuning)");
        return;
    }
    let ns = ScratchNetns::new("twcni").expect("ip netns add");
    // The interface tapwire's agent would have built: a persistent TAP, as podnet makes.
    ns.ip(&["tuntap", "add", "dev", "eth0", "mode", "tap"])
        .unwrap();
    let original_mac = "02:42:0a:41:01:02";
    ns.ip(&["link", "set", "eth0", "address", original_mac])
        .unwrap();
    let netns = ns.path().to_str().unwrap().to_string();

    // On DEL the fake agent notes eth0's MAC: tuning (later in the list) must already have
    // restored it, which proves DEL ran in reverse order.
    let mac_at_del = Arc::new(Mutex::new(None::<String>));
    let agent = {
        let netns = netns.clone();
        let ns_name = ns.name().to_string();
        let mac_at_del = Arc::clone(&mac_at_del);
        FakeAgent::start(move |req| match req {
            Request::CniAdd(_) => {
                let mut reply = add_reply();
                reply.sandbox = netns.clone();
                Response::Ok(Reply::CniAdd(reply))
            }
            Request::CniDel(_) => {
                let out = std::process::Command::new("ip")
                    .args(["-n", &ns_name, "-o", "link", "show", "eth0"])
                    .output()
                    .unwrap();
                *mac_at_del.lock().unwrap() = Some(String::from_utf8_lossy(&out.stdout).into());
                Response::Ok(Reply::Done)
            }
            _ => Response::Ok(Reply::Done),
        })
    };
    let tuned_mac = "02:aa:bb:cc:dd:ee";
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [
            {"type": "tapwire", "api_socket": agent.socket_str()},
            {"type": "tuning", "mac": tuned_mac, "sysctl": {"net.ipv4.conf.eth0.rp_filter": "2"}}
        ]
    });
    let plugin_dir = tapwire_bin().parent().unwrap().to_path_buf();
    let runtime = Runtime::new(vec![plugin_dir, tuning_dir.to_path_buf()]);
    let att = Attachment {
        container_id: CONTAINER.into(),
        netns: netns.clone(),
        ifname: "eth0".into(),
        args: K8S_ARGS.into(),
    };

    let result = runtime
        .add(&list, &att)
        .unwrap_or_else(|e| panic!("{} ADD failed: {:?}", e.plugin, e.run));
    // tuning changed the MAC in the kernel and in tapwire's result; the rest is tapwire's.
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": tuned_mac, "sandbox": netns}],
            "ips": [{"address": "10.65.1.2/32", "gateway": "169.254.1.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            "dns": {}
        })
    );
    let link = ns.ip(&["-o", "link", "show", "eth0"]).unwrap();
    assert!(link.contains(tuned_mac), "{link}");
    let rp_filter = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "sysctl",
            "-n",
            "net.ipv4.conf.eth0.rp_filter",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rp_filter.stdout).trim(), "2");

    runtime
        .check(&list, &att, &result)
        .unwrap_or_else(|e| panic!("{} CHECK failed: {:?}", e.plugin, e.run));

    runtime
        .del(&list, &att, Some(&result))
        .unwrap_or_else(|e| panic!("{} DEL failed: {:?}", e.plugin, e.run));
    let seen = mac_at_del
        .lock()
        .unwrap()
        .clone()
        .expect("tapwire DEL reached the agent");
    assert!(
        seen.contains(original_mac),
        "tuning's DEL (restoring the MAC) must run before tapwire's: {seen}"
    );
    let kinds: Vec<&str> = agent
        .requests()
        .iter()
        .map(|r| match r {
            Request::CniAdd(_) => "add",
            Request::CniCheck(_) => "check",
            Request::CniDel(_) => "del",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["add", "check", "del"]);
}
