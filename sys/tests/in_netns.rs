//! tapwire-sys against the real kernel: each test makes its own network namespace, acts in it
//! through `run_in_netns`, and checks the result with `ip`, as a user would. Needs root;
//! skipped (with a note on stderr) otherwise.
// clippy.toml allows expect in #[test] fns; the helpers here are test code too.
#![allow(clippy::expect_used)]

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use tapwire_sys::netlink::{Netlink, RouteScope, RouteSpec};
use tapwire_sys::testing::{is_root, ScratchNetns};
use tapwire_sys::{link, netns, tap};

fn scratch() -> Option<ScratchNetns> {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return None;
    }
    Some(ScratchNetns::new("twsys").expect("ip netns add"))
}

fn in_ns<T: Send>(ns: &ScratchNetns, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    netns::run_in_netns(ns.path(), f)
}

#[test]
fn run_in_netns_acts_in_the_namespace_and_leaves_the_caller_alone() {
    let Some(ns) = scratch() else { return };
    let own_ns_before = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
    let inside = in_ns(&ns, || {
        let ns_link = std::fs::read_link("/proc/thread-self/ns/net")?;
        tap::create_persistent("twprobe0")?;
        Ok(ns_link)
    })
    .expect("create inside");
    let own_ns_after = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
    assert_eq!(own_ns_before, own_ns_after, "caller thread stayed put");
    assert_ne!(inside, own_ns_after, "closure ran elsewhere");

    assert!(
        ns.ip(&["link", "show", "twprobe0"]).is_ok(),
        "TAP is in the namespace"
    );
    assert!(
        link::ifindex("twprobe0").is_err(),
        "TAP is not in the caller's namespace"
    );
}

#[test]
fn persistent_multi_queue_tap_lifecycle() {
    let Some(ns) = scratch() else { return };
    in_ns(&ns, || tap::create_persistent("tw0")).expect("create");

    let details = ns
        .ip(&["-d", "-o", "link", "show", "tw0"])
        .expect("ip link");
    assert!(details.contains("tun type tap"), "{details}");
    assert!(details.contains("multi_queue"), "{details}");
    assert!(details.contains("persist on"), "{details}");
    assert!(details.contains("pi off vnet_hdr off"), "{details}");
    assert!(details.contains("numqueues 0"), "{details}");

    // A second create fails and leaves the device alone.
    let err = in_ns(&ns, || tap::create_persistent("tw0")).expect_err("exists");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    // So does creating over a non-TAP interface.
    let err = in_ns(&ns, || tap::create_persistent("lo")).expect_err("lo exists");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);

    // Two queues attach; the device survives them closing (persistent).
    let (q1, q2) = in_ns(&ns, || {
        Ok((tap::attach_queue("tw0")?, tap::attach_queue("tw0")?))
    })
    .expect("attach");
    assert_ne!(q1.as_raw_fd(), q2.as_raw_fd());
    let details = ns
        .ip(&["-d", "-o", "link", "show", "tw0"])
        .expect("ip link");
    assert!(details.contains("numqueues 2"), "{details}");
    let mut buf = [0u8; 64];
    let err = q1.read(&mut buf).expect_err("nothing queued");
    assert_eq!(
        err.kind(),
        io::ErrorKind::WouldBlock,
        "queues are non-blocking"
    );
    drop((q1, q2));
    assert!(ns.ip(&["link", "show", "tw0"]).is_ok(), "persistent");

    in_ns(&ns, || tap::delete_persistent("tw0")).expect("delete");
    assert!(
        ns.ip(&["link", "show", "tw0"]).is_err(),
        "gone after delete"
    );
    in_ns(&ns, || tap::delete_persistent("tw0")).expect("delete is idempotent");
}

#[test]
fn attaching_to_a_missing_tap_errors_and_creates_nothing() {
    let Some(ns) = scratch() else { return };
    let err = in_ns(&ns, || tap::attach_queue("tw9")).expect_err("missing");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("tw9"), "{err}");
    let links = ns.ip(&["-o", "link"]).expect("ip link");
    assert!(!links.contains("tw9"), "{links}");

    // `lo` exists but is not a TAP: the kernel refuses to attach.
    let err = in_ns(&ns, || tap::attach_queue("lo")).expect_err("not a TAP");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
}

#[test]
fn link_ioctls_read_back_what_they_set() {
    let Some(ns) = scratch() else { return };
    let (index, mtu, up, mac) = in_ns(&ns, || {
        tap::create_persistent("tw1")?;
        link::set_mtu("tw1", 1450)?;
        link::set_up("tw1")?;
        Ok((
            link::ifindex("tw1")?,
            link::mtu("tw1")?,
            link::is_up("tw1")?,
            link::hwaddr("tw1")?,
        ))
    })
    .expect("configure");
    assert_eq!(mtu, 1450);
    assert!(up);
    let shown = ns.ip(&["-o", "link", "show", "tw1"]).expect("ip link");
    assert!(shown.starts_with(&format!("{index}: tw1:")), "{shown}");
    assert!(shown.contains("mtu 1450"), "{shown}");
    assert!(shown.contains(",UP"), "{shown}");
    let mac_text = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(shown.contains(&format!("link/ether {mac_text}")), "{shown}");

    // An MTU the device refuses comes back as the kernel's EINVAL.
    let err = in_ns(&ns, || link::set_mtu("tw1", 20)).expect_err("too small");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    // A TAP without an address: EADDRNOTAVAIL.
    let err = in_ns(&ns, || link::ipv4_addr("tw1")).expect_err("no address");
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL));
}

#[test]
fn netlink_adds_addresses_and_routes_and_deletes_links() {
    let Some(ns) = scratch() else { return };
    let gateway = Ipv4Addr::new(169, 254, 1, 1);
    let address = Ipv4Addr::new(10, 65, 0, 7);
    let read_back = in_ns(&ns, || {
        tap::create_persistent("tw2")?;
        link::set_up("tw2")?;
        let index = link::ifindex("tw2")?;
        let mut nl = Netlink::open()?;
        nl.add_ipv4_address(index, address, 32)?;
        // Twice: NLM_F_REPLACE makes it idempotent.
        nl.add_ipv4_address(index, address, 32)?;
        nl.add_ipv4_route(&RouteSpec {
            dst: gateway,
            prefix_len: 32,
            gateway: None,
            oif: index,
            scope: RouteScope::Link,
            onlink: false,
            prefsrc: None,
            mtu_bytes: None,
        })?;
        nl.add_ipv4_route(&RouteSpec {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(gateway),
            oif: index,
            scope: RouteScope::Universe,
            onlink: false,
            prefsrc: None,
            mtu_bytes: None,
        })?;
        link::ipv4_addr("tw2")
    })
    .expect("configure");
    assert_eq!(read_back, address);

    let addrs = ns
        .ip(&["-o", "-4", "addr", "show", "tw2"])
        .expect("ip addr");
    assert!(addrs.contains("inet 10.65.0.7/32"), "{addrs}");
    let routes = ns.ip(&["route"]).expect("ip route");
    assert!(
        routes.contains("default via 169.254.1.1 dev tw2"),
        "{routes}"
    );
    assert!(
        routes.contains("169.254.1.1 dev tw2 scope link"),
        "{routes}"
    );

    // Errors are the kernel's errno: a route through an interface that does not exist.
    let err = in_ns(&ns, || {
        Netlink::open()?.add_ipv4_route(&RouteSpec {
            dst: Ipv4Addr::new(10, 1, 0, 0),
            prefix_len: 16,
            gateway: None,
            oif: 9999,
            scope: RouteScope::Link,
            onlink: false,
            prefsrc: None,
            mtu_bytes: None,
        })
    })
    .expect_err("no such oif");
    assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
    // The kernel's extended-ack text reaches the message: an unreachable gateway.
    let err = in_ns(&ns, || {
        Netlink::open()?.add_ipv4_route(&RouteSpec {
            dst: Ipv4Addr::new(10, 2, 0, 0),
            prefix_len: 16,
            gateway: Some(Ipv4Addr::new(10, 9, 9, 9)),
            oif: link::ifindex("tw2")?,
            scope: RouteScope::Universe,
            onlink: false,
            prefsrc: None,
            mtu_bytes: None,
        })
    })
    .expect_err("gateway not on link");
    assert_eq!(err.kind(), io::ErrorKind::NetworkUnreachable, "{err}");
    assert!(err.to_string().contains("gateway"), "{err}");

    // del_link removes the TAP even while a queue is attached.
    let queue = in_ns(&ns, || {
        let queue = tap::attach_queue("tw2")?;
        Netlink::open()?.del_link(link::ifindex("tw2")?)?;
        Ok(queue)
    })
    .expect("delete");
    assert!(ns.ip(&["link", "show", "tw2"]).is_err(), "gone");
    let err = queue.write(&[0u8; 60]).expect_err("device is gone");
    assert!(err.raw_os_error().is_some(), "{err}");
    let err = in_ns(&ns, || Netlink::open()?.del_link(9999)).expect_err("no such link");
    assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
}

#[test]
fn frames_flow_between_the_kernel_and_tap_queues() {
    let Some(ns) = scratch() else { return };
    let (q1, q2) = in_ns(&ns, || {
        tap::create_persistent("tw3")?;
        link::set_up("tw3")?;
        let index = link::ifindex("tw3")?;
        let mut nl = Netlink::open()?;
        nl.add_ipv4_address(index, Ipv4Addr::new(10, 65, 0, 9), 32)?;
        nl.add_ipv4_route(&RouteSpec {
            dst: Ipv4Addr::new(169, 254, 1, 1),
            prefix_len: 32,
            gateway: None,
            oif: index,
            scope: RouteScope::Link,
            onlink: false,
            prefsrc: None,
            mtu_bytes: None,
        })?;
        Ok((tap::attach_queue("tw3")?, tap::attach_queue("tw3")?))
    })
    .expect("set up");

    // A UDP datagram to the gateway makes the kernel ARP for it on tw3.
    let sent = in_ns(&ns, || {
        let socket = std::net::UdpSocket::bind("10.65.0.9:0")?;
        socket.send_to(b"hello", "169.254.1.1:9")
    });
    assert_eq!(sent.expect("sendto"), 5);

    let frame = read_frame_from_either(&q1, &q2, Duration::from_secs(3))
        .expect("the kernel wrote a frame to a queue");
    assert_eq!(&frame[..6], &[0xff; 6], "broadcast ARP request");
    assert_eq!(&frame[12..14], &[0x08, 0x06], "ethertype ARP");
    assert_eq!(&frame[38..42], &[169, 254, 1, 1], "asks for the gateway");

    // Writing a frame is counted by the kernel as received on tw3.
    let mut reply = [0u8; 60];
    reply[..6].copy_from_slice(&frame[6..12]);
    reply[6..12].copy_from_slice(&[0xee; 6]);
    reply[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    assert_eq!(q2.write(&reply).expect("write"), 60);
    let stats = ns.ip(&["-s", "link", "show", "tw3"]).expect("ip -s");
    assert_eq!(rx_packets(&stats), Some(1), "{stats}");
}

/// The RX packet count from `ip -s link show` (the line after the `RX:` heading).
fn rx_packets(stats: &str) -> Option<u64> {
    let mut lines = stats.lines();
    lines.find(|line| line.trim_start().starts_with("RX:"))?;
    lines.next()?.split_whitespace().nth(1)?.parse().ok()
}

/// Polls two non-blocking queues until one yields a frame that is not IPv6 noise.
fn read_frame_from_either(
    q1: &tap::TapQueue,
    q2: &tap::TapQueue,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        for queue in [q1, q2] {
            if let Ok(n) = queue.read(&mut buf) {
                if n >= 42 && buf[12..14] == [0x08, 0x06] {
                    return Some(buf[..n].to_vec());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn missing_namespace_error_names_the_path() {
    let err = netns::run_in_netns(Path::new("/var/run/netns/twsys-absent"), || Ok(()))
        .expect_err("absent");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(
        err.to_string().contains("/var/run/netns/twsys-absent"),
        "{err}"
    );
}
