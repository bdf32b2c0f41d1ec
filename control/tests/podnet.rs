//! podnet against the real kernel: each test makes its own pod namespace, builds the pod
//! interface and checks it with `ip -n NS …` the way an operator would. Needs root; skipped
//! (with a note on stderr) otherwise.
// clippy.toml allows expect in #[test] fns; the helpers here are test code too.
#![allow(clippy::expect_used)]

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tapwire_control::podnet::{
    create_pod_interface, delete_pod_interface, pod_interface, pod_mtu, PodInterface,
    PodInterfaceSpec, PodnetError,
};
use tapwire_proto::{Encap, GATEWAY_MAC, POD_GATEWAY};
use tapwire_sys::netns::run_in_netns;
use tapwire_sys::tap::{self, TapQueue};
use tapwire_sys::testing::{is_root, ScratchNetns};

const POD_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 5);

fn scratch() -> Option<ScratchNetns> {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return None;
    }
    Some(ScratchNetns::new("twpod").expect("ip netns add"))
}

fn spec_for(ns: &ScratchNetns) -> PodInterfaceSpec {
    PodInterfaceSpec {
        netns_path: ns.path().to_owned(),
        ifname: "eth0".to_owned(),
        address: POD_ADDRESS,
        mtu_bytes: pod_mtu(1500, Encap::Vxlan),
    }
}

/// The flags of `ip -o link show DEV`, e.g. ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"].
fn link_flags(ns: &ScratchNetns, dev: &str) -> Vec<String> {
    let line = ns.ip(&["-o", "link", "show", dev]).expect("ip link");
    let flags = line
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(flags, _)| flags)
        .unwrap_or_default();
    flags.split(',').map(str::to_owned).collect()
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Asserts everything a user checks in the pod: a TAP, MTU, up, /32, the two routes, lo up.
fn assert_pod_interface(ns: &ScratchNetns, iface: &PodInterface) {
    let details = ns
        .ip(&["-d", "-o", "link", "show", "eth0"])
        .expect("ip link");
    assert!(
        details.starts_with(&format!("{}: eth0:", iface.ifindex)),
        "{details}"
    );
    assert!(details.contains("tun type tap"), "{details}");
    assert!(details.contains("multi_queue"), "{details}");
    assert!(details.contains("persist on"), "{details}");
    assert!(details.contains("mtu 1450 "), "{details}");
    assert!(
        details.contains(&format!("link/ether {}", mac_text(&iface.mac))),
        "{details}"
    );
    assert!(link_flags(ns, "eth0").iter().any(|f| f == "UP"), "eth0 up");
    assert!(link_flags(ns, "lo").iter().any(|f| f == "UP"), "lo up");

    let addrs = ns
        .ip(&["-o", "-4", "addr", "show", "eth0"])
        .expect("ip addr");
    assert!(addrs.contains("inet 10.65.0.5/32 "), "{addrs}");
    let routes = ns.ip(&["route"]).expect("ip route");
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("169.254.1.1 dev eth0 scope link"),
        "{routes}"
    );
}

#[test]
fn creates_the_calico_shaped_pod_interface() {
    let Some(ns) = scratch() else { return };
    let iface = create_pod_interface(&spec_for(&ns)).expect("create");
    assert_eq!(iface.ifname, "eth0");
    assert_eq!(iface.address, POD_ADDRESS);
    assert_eq!(iface.mtu_bytes, 1450);
    assert_ne!(iface.mac, [0; 6]);
    assert_ne!(iface.mac, GATEWAY_MAC);
    assert_pod_interface(&ns, &iface);

    // Read back, as CNI CHECK will.
    let read = pod_interface(ns.path(), "eth0").expect("read back");
    assert_eq!(read, iface);
}

#[test]
fn a_second_create_fails_clearly_and_leaves_the_first_intact() {
    let Some(ns) = scratch() else { return };
    let iface = create_pod_interface(&spec_for(&ns)).expect("create");

    let mut again = spec_for(&ns);
    again.address = Ipv4Addr::new(10, 65, 0, 99);
    again.mtu_bytes = 1480;
    let err = create_pod_interface(&again).expect_err("eth0 exists");
    assert!(matches!(err, PodnetError::CreateTap { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "creating TAP eth0 in {}: File exists (os error 17)",
            ns.path().display()
        )
    );
    assert_pod_interface(&ns, &iface);
    let addrs = ns
        .ip(&["-o", "-4", "addr", "show", "eth0"])
        .expect("ip addr");
    assert!(!addrs.contains("10.65.0.99"), "{addrs}");
}

#[test]
fn delete_removes_the_interface_and_is_idempotent() {
    let Some(ns) = scratch() else { return };
    create_pod_interface(&spec_for(&ns)).expect("create");
    delete_pod_interface(ns.path(), "eth0").expect("delete");
    assert!(ns.ip(&["link", "show", "eth0"]).is_err(), "eth0 gone");
    let routes = ns.ip(&["route"]).expect("ip route");
    assert!(routes.trim().is_empty(), "routes went with eth0: {routes}");

    delete_pod_interface(ns.path(), "eth0").expect("second delete is fine");
    delete_pod_interface(Path::new("/var/run/netns/twpod-absent"), "eth0")
        .expect("a missing namespace is fine");

    // The name is free again.
    let iface = create_pod_interface(&spec_for(&ns)).expect("re-create");
    assert_pod_interface(&ns, &iface);
}

#[test]
fn delete_removes_the_interface_while_queues_are_held() {
    let Some(ns) = scratch() else { return };
    create_pod_interface(&spec_for(&ns)).expect("create");
    let queue = run_in_netns(ns.path(), || tap::attach_queue("eth0")).expect("attach");
    delete_pod_interface(ns.path(), "eth0").expect("delete");
    assert!(
        ns.ip(&["link", "show", "eth0"]).is_err(),
        "eth0 gone at once"
    );
    assert!(queue.write(&[0u8; 60]).is_err(), "the held queue is dead");
}

#[test]
fn delete_refuses_an_interface_that_is_not_a_tap() {
    let Some(ns) = scratch() else { return };
    // Another plugin's veth, say.
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .expect("ip link add veth");
    let err = delete_pod_interface(ns.path(), "eth0").expect_err("not ours");
    assert!(matches!(err, PodnetError::NotATap { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not a multi-queue TAP"),
        "{err}"
    );
    assert!(ns.ip(&["link", "show", "eth0"]).is_ok(), "left alone");
}

#[test]
fn a_missing_namespace_is_an_error_naming_its_path() {
    let spec = PodInterfaceSpec {
        netns_path: PathBuf::from("/var/run/netns/twpod-absent"),
        ifname: "eth0".to_owned(),
        address: POD_ADDRESS,
        mtu_bytes: 1450,
    };
    let err = create_pod_interface(&spec).expect_err("no namespace");
    assert!(matches!(err, PodnetError::EnterNetns { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/var/run/netns/twpod-absent"),
        "{err}"
    );
    let err = pod_interface(&spec.netns_path, "eth0").expect_err("no namespace");
    assert!(
        err.to_string().contains("/var/run/netns/twpod-absent"),
        "{err}"
    );
}

#[test]
fn a_failing_step_leaves_no_half_made_interface() {
    let Some(ns) = scratch() else { return };
    let mut spec = spec_for(&ns);
    spec.mtu_bytes = 70_000; // above the TAP's maximum of 65521
    let err = create_pod_interface(&spec).expect_err("MTU refused");
    assert!(matches!(err, PodnetError::SetMtu { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "setting MTU 70000 on eth0 in {}: Invalid argument (os error 22)",
            ns.path().display()
        )
    );
    assert!(ns.ip(&["link", "show", "eth0"]).is_err(), "no eth0 left");
}

#[test]
fn reading_a_missing_interface_says_which() {
    let Some(ns) = scratch() else { return };
    let err = pod_interface(ns.path(), "eth0").expect_err("no eth0");
    assert!(
        matches!(err, PodnetError::ReadInterface { what: "index", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("eth0"), "{err}");
}

/// Polls the queues until one yields a frame of `ethertype`; skips IPv6 noise (RS, MLD, DAD).
fn read_frame(queues: &[TapQueue], ethertype: [u8; 2], timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        for queue in queues {
            if let Ok(n) = queue.read(&mut buf) {
                if n >= 14 && buf[12..14] == ethertype {
                    return Some(buf[..n].to_vec());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// The ARP reply the dataplane sends: 169.254.1.1 is at ee:ee:ee:ee:ee:ee.
fn gateway_arp_reply(request: &[u8]) -> [u8; 42] {
    let mut reply = [0u8; 42];
    reply[0..6].copy_from_slice(&request[6..12]); // to the pod
    reply[6..12].copy_from_slice(&GATEWAY_MAC);
    reply[12..14].copy_from_slice(&[0x08, 0x06]);
    reply[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]); // Ethernet/IPv4, reply
    reply[22..28].copy_from_slice(&GATEWAY_MAC); // sender MAC
    reply[28..32].copy_from_slice(&POD_GATEWAY.octets()); // sender IP
    reply[32..38].copy_from_slice(&request[22..28]); // target MAC: the requester
    reply[38..42].copy_from_slice(&request[28..32]); // target IP: the requester
    reply
}

#[test]
fn pod_traffic_reaches_the_queues_of_the_multi_queue_tap() {
    let Some(ns) = scratch() else { return };
    let iface = create_pod_interface(&spec_for(&ns)).expect("create");
    let queues = run_in_netns(ns.path(), || {
        Ok(vec![tap::attach_queue("eth0")?, tap::attach_queue("eth0")?])
    })
    .expect("attach two queues");
    let details = ns
        .ip(&["-d", "-o", "link", "show", "eth0"])
        .expect("ip link");
    assert!(details.contains("numqueues 2"), "{details}");

    // The pod sends a UDP datagram to a remote address: the kernel ARPs for the gateway.
    let socket = run_in_netns(ns.path(), || {
        let socket = UdpSocket::bind("10.65.0.5:0")?;
        socket.send_to(b"hello through tapwire", "10.66.0.9:7777")?;
        Ok(socket)
    })
    .expect("send from the pod");
    let request = read_frame(&queues, [0x08, 0x06], Duration::from_secs(3))
        .expect("an ARP request on a queue");
    assert_eq!(&request[0..6], &[0xff; 6], "broadcast");
    assert_eq!(&request[6..12], &iface.mac, "from eth0");
    assert_eq!(&request[20..22], &[0, 1], "ARP request");
    assert_eq!(&request[28..32], &POD_ADDRESS.octets(), "sender is the pod");
    assert_eq!(
        &request[38..42],
        &POD_GATEWAY.octets(),
        "asks for the gateway"
    );

    // Answer as the dataplane does; the held datagram then leaves towards ee:ee:ee:ee:ee:ee.
    assert_eq!(
        queues[1]
            .write(&gateway_arp_reply(&request))
            .expect("write"),
        42
    );
    let frame = read_frame(&queues, [0x08, 0x00], Duration::from_secs(3))
        .expect("the IPv4 datagram on a queue");
    assert_eq!(&frame[0..6], &GATEWAY_MAC, "to the gateway MAC");
    assert_eq!(&frame[6..12], &iface.mac, "from eth0");
    assert_eq!(frame[23], 17, "UDP");
    assert_eq!(&frame[26..30], &POD_ADDRESS.octets(), "source");
    assert_eq!(&frame[30..34], &[10, 66, 0, 9], "destination");
    assert_eq!(&frame[36..38], &7777u16.to_be_bytes(), "destination port");
    assert!(frame.ends_with(b"hello through tapwire"));

    let neigh = ns.ip(&["neigh", "show", "dev", "eth0"]).expect("ip neigh");
    assert!(
        neigh.contains("169.254.1.1 lladdr ee:ee:ee:ee:ee:ee"),
        "{neigh}"
    );
    drop(socket);
}
