//! Bad input never crashes the dataplane: each malformed frame is dropped and counted
//! under its own reason, and forwarding goes on. Frames come from inside a pod through
//! an `AF_PACKET` socket on its `eth0` (the kernel refuses some shapes itself; the test
//! says which), and malformed VXLAN from the underlay. On the control socket, a
//! malformed frame closes that connection only, and reconnecting with the same snapshot
//! does not disturb running traffic, and a message with an encapsulation mode or pool
//! type the dataplane does not know is refused with a logged error. A known node cannot
//! tunnel packets whose source it does not own, nor use an encapsulation no route uses.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tapwire_integration::check::{assert_pings, REACHABLE_WITHIN};
use tapwire_integration::desired::{endpoint_key, route_to, POOL_CIDR, POOL_ID};
use tapwire_integration::traffic::ping_start;
use tapwire_integration::{
    ping, rawsock, skip_unless_root, Cluster, Counters, Dataplane, Lab, Mode, Netns, Pod,
};
use tapwire_proto::{to_dataplane::Payload, IpamPool, IpamPoolUpdate, GATEWAY_MAC};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request of `payload_len` bytes of data.
fn icmp_echo(payload_len: usize) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend((0..payload_len).map(|i| i as u8));
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

/// A well-formed IPv4 header (DF set, TTL 64) in front of `payload`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

fn refresh_checksum(packet: &mut [u8]) {
    packet[10..12].copy_from_slice(&[0, 0]);
    let header_len = usize::from(packet[0] & 0x0f).max(5) * 4;
    let sum = checksum(&packet[..header_len]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// One malformed frame, the counter it must raise, and what it is.
struct Case {
    what: &'static str,
    frame: Vec<u8>,
    counter: &'static str,
}

fn pod_cases(pod: &Pod, peer: Ipv4Addr) -> Vec<Case> {
    let eth = |ethertype, payload: &[u8]| ethernet(GATEWAY_MAC, pod.mac, ethertype, payload);
    let good = ipv4(pod.ip, peer, 1, &icmp_echo(56));

    let mut ihl_4 = good.clone();
    ihl_4[0] = 0x44;
    refresh_checksum(&mut ihl_4);
    let mut too_long = good.clone();
    let claimed = (good.len() + 100) as u16;
    too_long[2..4].copy_from_slice(&claimed.to_be_bytes());
    refresh_checksum(&mut too_long);
    let mut bad_sum = good.clone();
    bad_sum[10] ^= 0x5a;
    let mut garbage_arp = vec![0xde, 0xad, 0xbe, 0xef, 9, 9, 0, 7];
    garbage_arp.extend_from_slice(&[0x42; 20]);
    let mut ipv6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    ipv6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ipv6.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ipv6.extend_from_slice(&[0x12, 0x34, 0x12, 0x34, 0, 8, 0, 0]);
    let spoofed = ipv4(Ipv4Addr::new(10, 65, 1, 99), peer, 1, &icmp_echo(56));

    vec![
        Case {
            what: "IPv4 ethertype with a 10-byte payload (truncated IPv4)",
            frame: eth(ETHERTYPE_IPV4, &good[..10]),
            counter: "drop.malformed_ipv4",
        },
        Case {
            what: "IHL 4 (a 16-byte header)",
            frame: eth(ETHERTYPE_IPV4, &ihl_4),
            counter: "drop.malformed_ipv4",
        },
        Case {
            what: "total length 100 bytes beyond the frame",
            frame: eth(ETHERTYPE_IPV4, &too_long),
            counter: "drop.malformed_ipv4",
        },
        Case {
            what: "wrong IPv4 header checksum",
            frame: eth(ETHERTYPE_IPV4, &bad_sum),
            counter: "drop.bad_checksum",
        },
        Case {
            what: "ARP with hardware type 0xdead",
            frame: eth(ETHERTYPE_ARP, &garbage_arp),
            counter: "drop.malformed_arp",
        },
        Case {
            what: "ARP cut to 8 bytes",
            frame: eth(ETHERTYPE_ARP, &garbage_arp[..8]),
            counter: "drop.malformed_arp",
        },
        Case {
            what: "IPv6 UDP to ff02::1",
            frame: eth(ETHERTYPE_IPV6, &ipv6),
            counter: "drop.ipv6",
        },
        Case {
            what: "unknown ethertype 0x88b5",
            frame: eth(0x88b5, &[0u8; 46]),
            counter: "drop.unsupported_ethertype",
        },
        Case {
            what: "IPv4 to a MAC other than the gateway's",
            frame: ethernet([0x02, 0, 0, 0, 0, 9], pod.mac, ETHERTYPE_IPV4, &good),
            counter: "drop.not_for_gateway",
        },
        Case {
            what: "source address 10.65.1.99, not the pod's",
            frame: eth(ETHERTYPE_IPV4, &spoofed),
            counter: "drop.spoofed_source",
        },
    ]
}

/// Waits until every counter grew by at least the expected amount.
fn wait_for_drops(
    dataplane: &mut Dataplane,
    before: &Counters,
    expected: &BTreeMap<&str, u64>,
) -> Counters {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let grown = dataplane.counters().unwrap().since(before);
        let missing: Vec<String> = expected
            .iter()
            .filter(|(name, n)| grown.get(name) < **n)
            .map(|(name, n)| format!("{name}: {} of {n}", grown.get(name)))
            .collect();
        if missing.is_empty() {
            return grown;
        }
        assert!(
            Instant::now() < deadline,
            "drop counters did not rise: {missing:?}\nall that grew:\n{}",
            grown.nonzero()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send(netns: &Netns, frames: &[Vec<u8>]) -> Vec<io::Result<usize>> {
    rawsock::send_frames(netns, "eth0", frames).unwrap()
}

#[test]
fn malformed_frames_are_counted_drops_and_forwarding_goes_on() {
    if skip_unless_root("malformed_frames_are_counted_drops_and_forwarding_goes_on") {
        return;
    }
    let lab = Lab::new().unwrap();
    let mut cluster = Cluster::start(&lab, Mode::Vxlan).unwrap();
    let (a, c) = cluster
        .reachable_pair("pod-a", "pod-c", REACHABLE_WITHIN)
        .unwrap();
    let node1 = cluster.nodes[0].clone();
    let node2 = cluster.nodes[1].clone();

    const COPIES: u64 = 3;
    let cases = pod_cases(&a, c.ip);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let before = cluster.dataplane("node1").unwrap().counters().unwrap();
    for case in &cases {
        let frames = vec![case.frame.clone(); COPIES as usize];
        for (i, result) in send(a.netns(), &frames).into_iter().enumerate() {
            let sent = result.unwrap_or_else(|e| panic!("sending {} (copy {i}): {e}", case.what));
            assert_eq!(sent, case.frame.len(), "{}", case.what);
        }
        *expected.entry(case.counter).or_default() += COPIES;
    }

    // Shorter than an Ethernet header: the kernel itself refuses to send that.
    let runt = ethernet(GATEWAY_MAC, a.mac, ETHERTYPE_IPV4, &[])[..10].to_vec();
    match send(a.netns(), &[runt]).remove(0) {
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "runt frame: {e}");
            eprintln!("a 10-byte frame cannot leave a pod: the kernel refuses it ({e})");
        }
        Ok(_) => *expected.entry("drop.malformed_ethernet").or_default() += 1,
    }

    // Longer than the pod's MTU (1450): the kernel refuses at that MTU; with the pod's MTU
    // raised behind the dataplane's back, the frame leaves and the dataplane drops it.
    let big = ethernet(
        GATEWAY_MAC,
        a.mac,
        ETHERTYPE_IPV4,
        &ipv4(a.ip, c.ip, 1, &icmp_echo(1460 - 28)),
    );
    assert_eq!(big.len(), 14 + 1460);
    match send(a.netns(), std::slice::from_ref(&big)).remove(0) {
        Err(e) => eprintln!(
            "a {}-byte frame on a 1450-MTU pod: the kernel refuses it ({e})",
            big.len()
        ),
        Ok(_) => *expected.entry("drop.oversize").or_default() += 1,
    }
    a.exec(&["ip", "link", "set", "eth0", "mtu", "1500"])
        .unwrap();
    let results = send(a.netns(), std::slice::from_ref(&big));
    a.exec(&["ip", "link", "set", "eth0", "mtu", "1450"])
        .unwrap();
    results.into_iter().for_each(|r| {
        r.unwrap();
    });
    *expected.entry("drop.oversize").or_default() += 1;

    // From the underlay: VXLAN from node2 (a known VTEP) with bad contents, and from an
    // address that is no node at all.
    let vxlan = |flags: u8, vni: u32, inner: &[u8]| {
        let mut d = vec![flags, 0, 0, 0];
        d.extend_from_slice(&(vni << 8).to_be_bytes());
        d.extend_from_slice(inner);
        d
    };
    let to_node1 = SocketAddr::from((node1.underlay_ip, 4789));
    let underlay_cases: Vec<(&Netns, Vec<u8>, &str)> = vec![
        (
            node2.netns(),
            vxlan(0x08, 4096, &[0xaa; 10]),
            "drop.malformed_ethernet",
        ),
        (
            node2.netns(),
            vxlan(0x00, 4096, &[0xaa; 60]),
            "drop.malformed_vxlan",
        ),
        (
            node2.netns(),
            vxlan(0x08, 4096, &[]).split_off(2),
            "drop.malformed_vxlan",
        ),
        (
            node2.netns(),
            vxlan(0x08, 77, &[0xaa; 60]),
            "drop.wrong_vni",
        ),
        (
            lab.underlay(),
            vxlan(0x08, 4096, &[0xaa; 60]),
            "drop.unknown_tunnel_source",
        ),
    ];
    for (netns, datagram, counter) in &underlay_cases {
        netns
            .run(|| {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                socket.send_to(datagram, to_node1)
            })
            .unwrap();
        *expected.entry(counter).or_default() += 1;
    }

    let dataplane = cluster.dataplane("node1").unwrap();
    let grown = wait_for_drops(dataplane, &before, &expected);
    eprintln!("drops counted:\n{}", grown.nonzero());
    cluster.check_running().unwrap();
    let stats = ping(&a, c.ip, 5).unwrap();
    assert_eq!(
        stats.loss_percent, 0.0,
        "after bad input:\n{}",
        stats.output
    );
}

#[test]
fn a_malformed_control_frame_closes_only_that_connection() {
    if skip_unless_root("a_malformed_control_frame_closes_only_that_connection") {
        return;
    }
    let lab = Lab::new().unwrap();
    let mut cluster = Cluster::start(&lab, Mode::Ipip).unwrap();
    let (a, c) = cluster
        .reachable_pair("pod-a", "pod-c", REACHABLE_WITHIN)
        .unwrap();

    // A header declaring an absurd length, and a sane length with a body that is no
    // protobuf message.
    let mut garbage_body = 16u64.to_le_bytes().to_vec();
    garbage_body.extend_from_slice(&[0xff; 16]);
    let bad_frames = [u64::MAX.to_le_bytes().to_vec(), garbage_body];
    for bad in bad_frames {
        let dataplane = cluster.dataplane("node1").unwrap();
        dataplane.control().unwrap().send_raw(&bad).unwrap();
        let why = dataplane
            .control()
            .unwrap()
            .wait_closed(Duration::from_secs(5))
            .unwrap();
        eprintln!("connection closed after {:02x?}…: {why}", &bad[..8]);
        dataplane.check_running().unwrap();

        // Forwarding goes on with the last good state.
        assert_pings(&a, &c, 5);

        // A new connection with a snapshot is accepted.
        cluster.dataplane("node1").unwrap().reconnect().unwrap();
        cluster.sync_node(0).unwrap();
        let counters = cluster.dataplane("node1").unwrap().counters().unwrap();
        assert!(
            counters.get("encap.ipip.tx_packets") > 0,
            "{}",
            counters.nonzero()
        );
    }
    let log = cluster.dataplane("node1").unwrap().log();
    assert_eq!(
        log.matches("malformed frame from control").count(),
        2,
        "the dataplane logs why it closed each connection:\n{log}"
    );
}

#[test]
fn an_unknown_encapsulation_mode_or_pool_type_is_refused_and_logged() {
    if skip_unless_root("an_unknown_encapsulation_mode_or_pool_type_is_refused_and_logged") {
        return;
    }
    let lab = Lab::new().unwrap();
    let mut cluster = Cluster::start(&lab, Mode::Ipip).unwrap();
    let (a, c) = cluster
        .reachable_pair("pod-a", "pod-c", REACHABLE_WITHIN)
        .unwrap();
    let (node1, node2) = (cluster.nodes[0].clone(), cluster.nodes[1].clone());

    // The pool switched to a mode nobody defined, and node2's block routed with a pool
    // type nobody defined: read as "never" / "none" they would turn IPIP off.
    let bad_pool = Payload::IpamPoolUpdate(IpamPoolUpdate {
        id: POOL_ID.into(),
        pool: Some(IpamPool {
            cidr: POOL_CIDR.into(),
            ipip_mode: "sometimes".into(),
            ..Default::default()
        }),
    });
    let Payload::RouteUpdate(mut bad_route) =
        route_to(&node1, &node2, &node2.block.to_string(), Mode::Ipip)
    else {
        panic!("route_to makes a RouteUpdate");
    };
    bad_route.ip_pool_type = 9;
    let dataplane = cluster.dataplane("node1").unwrap();
    let control = dataplane.control().unwrap();
    control
        .send_all([bad_pool, Payload::RouteUpdate(bad_route)])
        .unwrap();
    // Counters answer after the messages before them were applied (or refused).
    let before = control.counters(Duration::from_secs(5)).unwrap();
    assert!(
        !control.is_closed(),
        "a refused message keeps the connection"
    );
    dataplane.check_running().unwrap();

    let log = dataplane.log();
    for (field, value) in [
        ("IPAMPool.ipip_mode", "\"sometimes\""),
        ("RouteUpdate.ip_pool_type", "9"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("rejected control message") && l.contains(field))
            .unwrap_or_else(|| panic!("no error naming {field}:\n{log}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(
            line.contains(&format!("{field}: unknown value {value}")),
            "{line}"
        );
    }

    // Nothing changed: pod-a still reaches pod-c through IPIP.
    assert_pings(&a, &c, 3);
    let after = cluster.dataplane("node1").unwrap().counters().unwrap();
    assert!(
        after.since(&before).get("encap.ipip.tx_packets") >= 3,
        "{}",
        after.since(&before).nonzero()
    );
}

#[test]
fn reconnecting_with_the_same_snapshot_does_not_interrupt_traffic() {
    if skip_unless_root("reconnecting_with_the_same_snapshot_does_not_interrupt_traffic") {
        return;
    }
    let lab = Lab::new().unwrap();
    let mut cluster = Cluster::start(&lab, Mode::Vxlan).unwrap();
    let (a, c) = cluster
        .reachable_pair("pod-a", "pod-c", REACHABLE_WITHIN)
        .unwrap();

    let running = ping_start(&a, c.ip, 100, Duration::from_millis(20)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for round in 0..3 {
        for i in 0..cluster.dataplanes.len() {
            cluster.dataplanes[i].reconnect().unwrap();
            cluster.sync_node(i).unwrap();
        }
        eprintln!("round {round}: both dataplanes reconnected and resynced");
        std::thread::sleep(Duration::from_millis(300));
    }
    let stats = running.finish().unwrap();
    assert_eq!(stats.transmitted, 100, "{}", stats.output);
    assert_eq!(
        stats.received, 100,
        "pings were lost during reconnects:\n{}",
        stats.output
    );
    cluster.check_running().unwrap();
}

/// What node2 tunnels to node1 in the spoofing test, and how.
#[derive(Clone, Copy)]
enum Tunnel {
    Vxlan,
    Ipip,
}

/// Sends `inner` (an IPv4 packet) from node2's underlay address to node1's, wrapped as
/// node2's dataplane would: VXLAN (VNI 4096, between the nodes' VTEP MACs) from a UDP
/// socket, or IPIP as a whole Ethernet frame on node2's underlay interface.
fn tunnel_from(
    node2: &tapwire_integration::Node,
    node1: &tapwire_integration::Node,
    how: Tunnel,
    inner: &[u8],
) {
    match how {
        Tunnel::Vxlan => {
            let mut datagram = vec![0x08, 0, 0, 0];
            datagram.extend_from_slice(&(4096u32 << 8).to_be_bytes());
            datagram.extend(ethernet(
                node1.vtep_mac,
                node2.vtep_mac,
                ETHERTYPE_IPV4,
                inner,
            ));
            let to = SocketAddr::from((node1.underlay_ip, 4789));
            node2
                .netns()
                .run(|| UdpSocket::bind("0.0.0.0:0")?.send_to(&datagram, to))
                .unwrap();
        }
        Tunnel::Ipip => {
            let outer = ipv4(node2.underlay_ip, node1.underlay_ip, 4, inner);
            let frame = ethernet(
                node1.underlay_mac,
                node2.underlay_mac,
                ETHERTYPE_IPV4,
                &outer,
            );
            send(node2.netns(), &[frame]).remove(0).unwrap();
        }
    }
}

#[test]
fn a_known_node_cannot_tunnel_sources_it_does_not_own_nor_unused_encapsulations() {
    if skip_unless_root(
        "a_known_node_cannot_tunnel_sources_it_does_not_own_nor_unused_encapsulations",
    ) {
        return;
    }
    let lab = Lab::new().unwrap();
    let mut cluster = Cluster::start(&lab, Mode::Vxlan).unwrap();
    let (a, c) = cluster
        .reachable_pair("pod-a", "pod-c", REACHABLE_WITHIN)
        .unwrap();
    let b = cluster.pod("pod-b").unwrap().clone();
    let node1 = cluster.nodes[0].clone();
    let node2 = cluster.nodes[1].clone();
    assert_eq!((a.node.as_str(), b.node.as_str()), ("node1", "node1"));
    assert_eq!(c.node, "node2");
    // What pod a is given: nothing spoofed may add to it.
    let to_a = format!("endpoint.{}.tx_packets", endpoint_key(&a));
    let echo_to_a = |src: Ipv4Addr| ipv4(src, a.ip, 1, &icmp_echo(32));
    let outside = Ipv4Addr::new(10, 99, 0, 1);

    for (mode, in_use, unused, unused_counter) in [
        (
            Mode::Vxlan,
            Tunnel::Vxlan,
            Tunnel::Ipip,
            "drop.ipip_not_in_use",
        ),
        (
            Mode::Ipip,
            Tunnel::Ipip,
            Tunnel::Vxlan,
            "drop.vxlan_not_in_use",
        ),
    ] {
        if cluster.mode != mode {
            cluster.switch_mode(mode).unwrap();
        }
        let before = cluster.dataplane("node1").unwrap().counters().unwrap();
        // (a) a pod of node1 itself, (b) an address of no node node2 owns; and a packet
        // with a source node2 does own, in the encapsulation no route uses.
        tunnel_from(&node2, &node1, in_use, &echo_to_a(b.ip));
        tunnel_from(&node2, &node1, in_use, &echo_to_a(outside));
        tunnel_from(&node2, &node1, unused, &echo_to_a(c.ip));
        let expected = BTreeMap::from([("drop.tunnel_spoofed_source", 2), (unused_counter, 1)]);
        let grown = wait_for_drops(cluster.dataplane("node1").unwrap(), &before, &expected);
        eprintln!("{mode}: drops counted:\n{}", grown.nonzero());
        assert_eq!(
            grown.get(&to_a),
            0,
            "{mode}: pod a was given a spoofed packet\n{}",
            grown.nonzero()
        );

        // The same path with node2's own pod as the source is delivered: the drops above
        // are the source's and the encapsulation's doing.
        tunnel_from(&node2, &node1, in_use, &echo_to_a(c.ip));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let grown = cluster
                .dataplane("node1")
                .unwrap()
                .counters()
                .unwrap()
                .since(&before);
            if grown.get(&to_a) >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: a genuine packet from node2 was not delivered\n{}",
                grown.nonzero()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster.check_running().unwrap();
    assert_pings(&c, &a, 3);
}
