//! The plugin against a fake agent: environment, configuration, versions, results and
//! errors.

use std::ffi::OsString;

use super::config::check_version;
use super::env::{interface_name_problem, is_cni_name};
use super::*;
use crate::api::CniRoute;
use crate::api::{self, codes, CniAddReply};

fn env(command: &str) -> Environment {
    Environment {
        command: Some(command.into()),
        container_id: Some("c0ffee".into()),
        netns: Some("/var/run/netns/pod".into()),
        ifname: Some("eth0".into()),
        args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1".into()),
        path: Some("/opt/cni/bin".into()),
        not_unicode: Vec::new(),
    }
}

fn add_reply() -> CniAddReply {
    CniAddReply {
        interface: "eth0".into(),
        mac: "02:00:0a:41:01:02".into(),
        sandbox: "/var/run/netns/pod".into(),
        address: "10.65.1.2/32".into(),
        gateway: "169.254.1.1".into(),
        mtu: 1450,
        routes: vec![CniRoute {
            dst: "0.0.0.0/0".into(),
            gw: Some("169.254.1.1".into()),
        }],
    }
}

fn run_with(env: &Environment, stdin: &str, reply: Result<Reply, ApiError>) -> Outcome {
    let mut stdin = stdin.as_bytes();
    run(env, &mut stdin, |_, _, _| reply.clone())
}

fn json(outcome: &Outcome) -> Value {
    serde_json::from_str(&outcome.stdout).unwrap()
}

#[test]
fn commands_parse_case_sensitively() {
    assert_eq!(Command::parse("ADD"), Some(Command::Add));
    assert_eq!(Command::parse("GC"), Some(Command::Gc));
    assert_eq!(Command::parse("add"), None);
    assert_eq!(Command::parse(""), None);
}

#[test]
fn empty_variables_count_as_unset() {
    let env = Environment::from_lookup(|name| match name {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_NETNS" => Some("".into()),
        _ => None,
    });
    assert_eq!(env.command.as_deref(), Some("ADD"));
    assert_eq!(env.netns, None);
}

#[test]
fn non_utf8_variables_are_reported() {
    use std::os::unix::ffi::OsStringExt;
    let env = Environment::from_lookup(|name| match name {
        "CNI_COMMAND" => Some("DEL".into()),
        "CNI_IFNAME" => Some(OsString::from_vec(vec![0xff, 0xfe])),
        _ => None,
    });
    assert_eq!(env.not_unicode, vec!["CNI_IFNAME"]);
    let out = run_with(&env, "{}", Ok(Reply::Done));
    assert!(!out.success);
    assert_eq!(json(&out)["code"], 4);
    assert!(json(&out)["msg"].as_str().unwrap().contains("CNI_IFNAME"));
    // VERSION only needs CNI_COMMAND.
    let env = Environment {
        command: Some("VERSION".into()),
        ..env
    };
    assert!(run_with(&env, "", Ok(Reply::Done)).success);
}

#[test]
fn cni_args_kubernetes_keys() {
    let args = parse_cni_args(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;FOO=bar",
    )
    .unwrap();
    assert_eq!(args.pod_namespace.as_deref(), Some("kube-system"));
    assert_eq!(args.pod_name.as_deref(), Some("dns-0"));
    assert_eq!(args.pod_infra_container_id.as_deref(), Some("abc"));
    assert_eq!(args.pod_uid.as_deref(), Some("u-1"));
    assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
    // A trailing separator is tolerated; '=' inside a value is kept.
    let args = parse_cni_args("K8S_POD_NAME=a=b;").unwrap();
    assert_eq!(args.pod_name.as_deref(), Some("a=b"));
}

#[test]
fn cni_args_errors_name_the_problem() {
    let err = parse_cni_args("FOO=bar;K8S_POD_NAME=x").unwrap_err();
    assert_eq!(err.code(), 4);
    assert!(err.to_string().contains("unknown keys [FOO=bar]"), "{err}");
    // IgnoreUnknown counts wherever it appears.
    assert!(parse_cni_args("FOO=bar;IgnoreUnknown=true").is_ok());
    assert!(parse_cni_args("FOO=bar;IgnoreUnknown=0").is_err());
    let err = parse_cni_args("IgnoreUnknown=maybe").unwrap_err();
    assert!(err.to_string().contains("IgnoreUnknown=maybe"), "{err}");
    let err = parse_cni_args("K8S_POD_NAME").unwrap_err();
    assert!(err.to_string().contains("not KEY=VALUE"), "{err}");
    assert!(parse_cni_args("=x").is_err());
}

#[test]
fn names_follow_the_spec_pattern() {
    for good in ["k8s-pod-network", "a", "0_x.y-z"] {
        assert!(is_cni_name(good), "{good}");
    }
    for bad in ["", "-a", ".a", "a b", "a/b", "é"] {
        assert!(!is_cni_name(bad), "{bad}");
    }
    assert_eq!(interface_name_problem("eth0"), None);
    assert!(interface_name_problem("a-very-long-name").is_some());
    assert!(interface_name_problem("..").is_some());
    assert!(interface_name_problem("et h0").is_some());
    assert!(interface_name_problem("eth:0").is_some());
}

#[test]
fn versions_and_verbs() {
    assert!(check_version("1.0.0", Command::Add).is_ok());
    assert!(check_version("0.3.0", Command::Del).is_ok());
    assert_eq!(check_version("0.2.0", Command::Add).unwrap_err().code(), 1);
    assert_eq!(check_version("", Command::Add).unwrap_err().code(), 1);
    assert_eq!(
        check_version("0.3.1", Command::Check).unwrap_err().code(),
        1
    );
    assert!(check_version("0.4.0", Command::Check).is_ok());
    assert_eq!(
        check_version("1.0.0", Command::Status).unwrap_err().code(),
        1
    );
    assert!(check_version("1.1.0", Command::Gc).is_ok());
}

#[test]
fn config_checks() {
    let parse = |text: &str| NetworkConfig::parse(text.as_bytes(), Command::Add);
    let config = parse(r#"{"cniVersion":"1.0.0","name":"net","type":"tapwire"}"#).unwrap();
    assert_eq!(config.api_socket, Path::new(api::DEFAULT_API_SOCKET));
    assert_eq!(config.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
    let code = |text: &str| parse(text).unwrap_err().code();
    assert_eq!(code(r#"{"cniVersion":"1.0.0"}"#), 7);
    assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"a b"}"#), 7);
    assert_eq!(code(r#"{"cniVersion":1,"name":"n"}"#), 6);
    assert_eq!(code(r#"[1,2]"#), 6);
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","name":"n","api_socket":"rel.sock"}"#),
        7
    );
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","name":"n","timeout_ms":0}"#),
        7
    );
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","name":"n","timeout_ms":-5}"#),
        6
    );
    let err =
        parse(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#).unwrap_err();
    assert_eq!(err.code(), 2);
    let object = err.to_object("1.0.0");
    assert!(object.msg.contains("ipam") && object.msg.contains("host-local"));
    assert_eq!(
        code(r#"{"cniVersion":"1.0.0","name":"n","ipMasq":true}"#),
        2
    );
    // mtu: taken, in range; out of range or not a number is an error, never ignored.
    let config = parse(r#"{"cniVersion":"1.0.0","name":"n","mtu":1400}"#).unwrap();
    assert_eq!(config.mtu, Some(1400));
    let err = parse(r#"{"cniVersion":"1.0.0","name":"n","mtu":100}"#).unwrap_err();
    assert_eq!(err.code(), 7);
    assert!(
        err.to_string().contains("100 is not between 576 and 65535"),
        "{err}"
    );
    assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","mtu":70000}"#), 7);
    assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","mtu":"1400"}"#), 6);
    // Decode errors say where.
    let err = parse(r#"{"cniVersion":"1.0.0","name":"n","dns":{"nameservers":"x"}}"#).unwrap_err();
    assert!(err.to_string().contains("dns.nameservers"), "{err}");
}

#[test]
fn add_result_per_version() {
    let config = |v: &str| format!(r#"{{"cniVersion":"{v}","name":"net","type":"tapwire"}}"#);
    let reply = Ok(Reply::CniAdd(add_reply()));
    let out = run_with(&env("ADD"), &config("1.1.0"), reply.clone());
    assert!(out.success, "{}", out.stdout);
    assert_eq!(
        json(&out)["interfaces"][0],
        serde_json::json!({"name":"eth0","mac":"02:00:0a:41:01:02","mtu":1450,
                               "sandbox":"/var/run/netns/pod"})
    );
    let out = run_with(&env("ADD"), &config("1.0.0"), reply.clone());
    assert_eq!(json(&out)["interfaces"][0].get("mtu"), None);
    assert_eq!(json(&out)["ips"][0].get("version"), None);
    let out = run_with(&env("ADD"), &config("0.3.1"), reply);
    assert_eq!(json(&out)["ips"][0]["version"], "4");
    assert_eq!(json(&out)["cniVersion"], "0.3.1");
}

#[test]
fn chained_add_appends_with_the_right_index() {
    let config = r#"{"cniVersion":"1.0.0","name":"net","type":"tapwire","prevResult":{
            "cniVersion":"1.0.0",
            "interfaces":[{"name":"br0","mac":"00:11:22:33:44:55"}],
            "ips":[{"address":"192.168.0.2/24","interface":0}],
            "dns":{"nameservers":["10.0.0.10"]},
            "custom":{"kept":true}}}"#;
    let out = run_with(&env("ADD"), config, Ok(Reply::CniAdd(add_reply())));
    assert!(out.success, "{}", out.stdout);
    let v = json(&out);
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 2);
    assert_eq!(v["ips"][1]["interface"], 1);
    assert_eq!(v["ips"][0]["address"], "192.168.0.2/24");
    assert_eq!(v["dns"]["nameservers"][0], "10.0.0.10");
    assert_eq!(v["custom"]["kept"], true);
}

#[test]
fn chained_add_refuses_an_existing_interface() {
    let config = r#"{"cniVersion":"1.0.0","name":"net","prevResult":{
            "interfaces":[{"name":"eth0","sandbox":"/var/run/netns/pod"}]}}"#;
    let mut called = false;
    let mut stdin = config.as_bytes();
    let out = run(&env("ADD"), &mut stdin, |_, _, _| {
        called = true;
        Ok(Reply::CniAdd(add_reply()))
    });
    assert!(!out.success);
    assert!(!called, "the agent must not be asked");
    assert_eq!(json(&out)["code"], 7);
}

#[test]
fn bad_prev_results_are_decode_errors() {
    for prev in [
        r#"{"interfaces":{}}"#,
        r#"{"ips":[1]}"#,
        r#"{"interfaces":[],"ips":[{"address":"1.2.3.4/32","interface":3}]}"#,
        r#"{"dns":[]}"#,
    ] {
        let config = format!(r#"{{"cniVersion":"1.0.0","name":"n","prevResult":{prev}}}"#);
        let out = run_with(&env("ADD"), &config, Ok(Reply::CniAdd(add_reply())));
        assert_eq!(json(&out)["code"], 6, "{prev}: {}", out.stdout);
    }
}

#[test]
fn a_malformed_agent_answer_is_an_error() {
    let mut reply = add_reply();
    reply.address = "10.65.1.2".into();
    let out = run_with(
        &env("ADD"),
        r#"{"cniVersion":"1.0.0","name":"n"}"#,
        Ok(Reply::CniAdd(reply)),
    );
    assert!(!out.success);
    assert_eq!(json(&out)["code"], 6);
    let out = run_with(
        &env("DEL"),
        r#"{"cniVersion":"1.0.0","name":"n"}"#,
        Ok(Reply::Routes { routes: vec![] }),
    );
    assert_eq!(json(&out)["code"], 6);
}

#[test]
fn stale_attachments_are_this_nodes_cni_endpoints_not_listed() {
    let wep = |node: &str, cid: Option<&str>, ep: &str| {
        let mut spec = serde_json::json!({"node": node, "endpoint": ep});
        if let Some(cid) = cid {
            spec["containerID"] = cid.into();
        }
        serde_json::json!({"kind": "WorkloadEndpoint", "spec": spec})
    };
    let items = vec![
        wep("node-a", Some("keep"), "eth0"),
        wep("node-a", Some("gone"), "eth0"),
        wep("node-a", Some("keep"), "net1"),
        wep("node-b", Some("other-node"), "eth0"),
        wep("node-a", None, "eth0"),
        serde_json::json!("garbage"),
    ];
    let valid = vec![Attachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];
    let stale = stale_attachments(&items, "node-a", &valid);
    let pairs: Vec<(&str, &str)> = stale
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    assert_eq!(pairs, vec![("gone", "eth0"), ("keep", "net1")]);
}

#[test]
fn unreachable_maps_per_verb() {
    let unreachable = Err(ApiError::new(codes::UNREACHABLE, "cannot reach", "ENOENT"));
    let out = run_with(
        &env("DEL"),
        r#"{"cniVersion":"1.0.0","name":"n"}"#,
        unreachable.clone(),
    );
    assert_eq!(json(&out)["code"], 11);
    let out = run_with(
        &env("STATUS"),
        r#"{"cniVersion":"1.1.0","name":"n"}"#,
        unreachable,
    );
    assert_eq!(json(&out)["code"], 50);
}

#[test]
fn gc_stops_when_the_agent_goes_away() {
    let wep = |cid: &str| serde_json::json!({"spec": {"node": "n1", "containerID": cid, "endpoint": "eth0"}});
    let mut dels = 0;
    let mut stdin =
        r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[]}"#.as_bytes();
    let env = Environment {
        command: Some("GC".into()),
        ..Environment::default()
    };
    let out = run(&env, &mut stdin, |_, req, _| match req {
        Request::NodeStatus => Ok(Reply::NodeStatus(crate::api::NodeStatusReply {
            node: "n1".into(),
            underlay_address: String::new(),
            dataplane_connected: true,
            dataplane_in_sync: true,
            last_heartbeat_secs: None,
            peers: vec![],
        })),
        Request::Get { .. } => Ok(Reply::Documents {
            items: vec![wep("a"), wep("b"), wep("c")],
            damaged: Vec::new(),
        }),
        _ => {
            dels += 1;
            Err(ApiError::new(
                codes::UNREACHABLE,
                "cannot reach",
                "ECONNREFUSED",
            ))
        }
    });
    assert!(!out.success);
    assert_eq!(dels, 1);
    let v = json(&out);
    assert_eq!(v["code"], 11);
    assert!(
        v["details"]
            .as_str()
            .unwrap()
            .ends_with("2 more not attempted"),
        "{v}"
    );
}

#[test]
fn oversized_stdin_is_refused() {
    let big = vec![b' '; MAX_CONFIG_BYTES + 10];
    let out = run(&env("ADD"), &mut big.as_slice(), |_, _, _| Ok(Reply::Done));
    assert!(!out.success);
    assert_eq!(json(&out)["code"], 5);
}
