//! A CNI invocation: any environment (non-UTF-8 values included) and any configuration on
//! standard input, against an agent that answers every request.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tapwire_control::api::{ApiError, CniAddReply, CniRoute, Reply, Request};
use tapwire_control::cni::{self, Environment};

#[derive(Debug, Arbitrary)]
struct Invocation {
    command: Option<Vec<u8>>,
    container_id: Option<Vec<u8>>,
    netns: Option<Vec<u8>>,
    ifname: Option<Vec<u8>>,
    args: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    /// How the agent answers: 0 success, else an error with this code.
    answer: u8,
    stdin: Vec<u8>,
}

fuzz_target!(|input: Invocation| {
    let env = Environment::from_lookup(|name| {
        let value = match name {
            "CNI_COMMAND" => &input.command,
            "CNI_CONTAINERID" => &input.container_id,
            "CNI_NETNS" => &input.netns,
            "CNI_IFNAME" => &input.ifname,
            "CNI_ARGS" => &input.args,
            "CNI_PATH" => &input.path,
            _ => return None,
        };
        value.clone().map(OsString::from_vec)
    });
    let answer = input.answer;
    let agent = move |_: &std::path::Path, request: &Request, _: Duration| {
        if answer != 0 {
            return Err(ApiError::new(u32::from(answer), "refused", "by the fuzzer"));
        }
        Ok(match request {
            Request::CniAdd(_) => Reply::CniAdd(CniAddReply {
                interface: "eth0".into(),
                mac: "02:00:0a:41:00:01".into(),
                sandbox: "/var/run/netns/x".into(),
                address: "10.65.0.1/32".into(),
                gateway: "169.254.1.1".into(),
                mtu: 1450,
                routes: vec![CniRoute {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("169.254.1.1".into()),
                }],
            }),
            _ => Reply::Done,
        })
    };
    let _ = cni::run(&env, &mut input.stdin.as_slice(), agent);
});
