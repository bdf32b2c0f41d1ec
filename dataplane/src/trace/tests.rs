//! Trace tests: real frames through `forward`, recorded the way a worker records them,
//! turned into messages by the state thread's half.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use super::*;
use crate::fixtures::*;
use crate::forward::{self, PacketBuf, SCRATCH_LEN};
use crate::packet::{
    emit_arp, Ipv4Repr, ARP_IPV4_LEN, ARP_REQUEST, BROADCAST_MAC, GATEWAY_MAC, POD_GATEWAY,
};

fn request(count: u32, endpoint: &str, timeout_ms: u32) -> proto::TraceRequest {
    proto::TraceRequest {
        trace_id: 42,
        count,
        endpoint: endpoint.into(),
        timeout_ms,
    }
}

/// Which slot each fixture endpoint has.
fn slot(key: &str) -> Option<EndpointIdx> {
    match key {
        "k8s/a/eth0" => Some(0),
        "k8s/b/eth0" => Some(1),
        _ => None,
    }
}

/// A tracer with a trace of `count` packets armed (from or to `endpoint`; "": any), 5 s.
fn armed(count: u32, endpoint: &str) -> (Tracer, Arc<Trace>) {
    let mut tracer = Tracer::new();
    let trace = tracer.trace();
    let said = tracer.start(&request(count, endpoint, 5000), slot, Instant::now());
    assert!(said.is_empty(), "{said:?}");
    (tracer, trace)
}

/// Pod a sends `frame`; the worker's part: summarise, decide, offer to the trace.
fn pod_a_sends_traced(trace: &Trace, tables: &Tables, frame: &[u8]) -> Outbound {
    let mut buf = received(frame);
    let packet = PacketSummary::ethernet(buf.frame(), buf.offload());
    let mut scratch = [0u8; SCRATCH_LEN];
    let action = forward::from_pod(tables, 0, &mut buf, &mut scratch);
    trace.outbound(1, tables, Ingress::Pod(0), packet, &action);
    action
}

fn records(out: &[Payload]) -> Vec<&proto::TraceRecord> {
    out.iter()
        .filter_map(|p| match p {
            Payload::TraceRecord(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn done(out: &[Payload]) -> Option<&proto::TraceDone> {
    out.iter().find_map(|p| match p {
        Payload::TraceDone(d) => Some(d),
        _ => None,
    })
}

/// An ICMP echo request from pod a to `dst`, identifier 17, sequence `seq`.
fn ping_from_a(dst: &str, seq: u16) -> Vec<u8> {
    let mut pkt = vec![0u8; 20 + 8 + 56];
    Ipv4Repr {
        src: ip("10.65.1.2"),
        dst: ip(dst),
        protocol: IPPROTO_ICMP,
        ttl: 64,
        dont_fragment: true,
        payload_len: 8 + 56,
    }
    .emit(&mut pkt);
    pkt[20] = 8; // echo request
    pkt[24..26].copy_from_slice(&17u16.to_be_bytes());
    pkt[26..28].copy_from_slice(&seq.to_be_bytes());
    eth_frame(GATEWAY_MAC, POD_A_MAC, ETHERTYPE_IPV4, &pkt)
}

#[test]
fn nothing_is_recorded_until_armed() {
    let t = tables(Encap::Ipip);
    let mut tracer = Tracer::new();
    let trace = tracer.trace();
    assert!(!trace.armed());
    pod_a_sends_traced(&trace, &t, &ping_from_a("10.65.1.3", 1));
    assert!(tracer.poll(&t, Instant::now()).is_empty());
    assert_eq!(tracer.next_poll(Instant::now()), None);
}

#[test]
fn a_ping_between_two_pods_is_received_routed_and_delivered() {
    let t = tables(Encap::Ipip);
    let mut tracer = Tracer::new();
    let trace = tracer.trace();
    let now = Instant::now();
    assert!(tracer.start(&request(1, "", 5000), slot, now).is_empty());
    assert!(trace.armed());
    let action = pod_a_sends_traced(&trace, &t, &ping_from_a("10.65.1.3", 3));
    assert!(matches!(action, Outbound::ToPod { endpoint: 1, .. }));
    // The one packet asked for is taken: the trace is no longer armed.
    assert!(!trace.armed());
    let out = tracer.poll(&t, Instant::now());
    let [record] = records(&out)[..] else {
        panic!("one record expected: {out:?}")
    };
    assert_eq!((record.trace_id, record.index, record.worker), (42, 1, 1));
    let ingress = record.ingress.as_ref().unwrap();
    assert_eq!((&*ingress.kind, &*ingress.endpoint), ("pod", "k8s/a/eth0"));
    let packet = record.packet.as_ref().unwrap();
    assert!(packet.ipv4);
    assert_eq!((&*packet.src, &*packet.dst), ("10.65.1.2", "10.65.1.3"));
    assert_eq!(
        (packet.ethertype, packet.protocol, packet.ttl),
        (0x0800, 1, 64)
    );
    assert_eq!(
        (packet.icmp_type, packet.icmp_id, packet.icmp_seq),
        (8, 17, 3)
    );
    assert_eq!((packet.ip_bytes, packet.frame_bytes), (84, 98));
    let route = record.route.as_ref().unwrap();
    assert_eq!(
        (&*route.prefix, &*route.target, &*route.endpoint),
        ("10.65.1.3/32", "local", "k8s/b/eth0")
    );
    let action = record.action.as_ref().unwrap();
    assert_eq!(
        (&*action.kind, &*action.endpoint),
        ("deliver", "k8s/b/eth0")
    );
    assert_eq!(
        record.counters,
        [
            "endpoint.k8s/a/eth0.rx_packets",
            "endpoint.k8s/a/eth0.rx_bytes",
            "endpoint.k8s/b/eth0.tx_packets",
            "endpoint.k8s/b/eth0.tx_bytes",
        ]
    );
    let done = done(&out).expect("the trace ends with its last packet");
    assert_eq!((done.trace_id, done.records, done.dropped), (42, 1, 0));
    assert_eq!(done.reason, "complete");
    assert_eq!(tracer.next_poll(Instant::now()), None);
}

#[test]
fn a_packet_to_another_node_shows_the_block_route_and_its_tunnel() {
    let t = tables(Encap::Ipip);
    let (mut tracer, trace) = armed(1, "k8s/a/eth0");
    pod_a_sends_traced(&trace, &t, &pod_a_sends("10.65.2.9", 64, true, 100));
    let out = tracer.poll(&t, Instant::now());
    let record = records(&out)[0];
    let packet = record.packet.as_ref().unwrap();
    assert_eq!(
        (packet.protocol, packet.src_port, packet.dst_port),
        (6, 40000, 80)
    );
    let route = record.route.as_ref().unwrap();
    assert_eq!(
        (
            &*route.prefix,
            &*route.target,
            &*route.peer_node,
            &*route.peer_ip,
            &*route.encap
        ),
        ("10.65.2.0/26", "remote", "node-b", "192.168.0.2", "ipip")
    );
    let action = record.action.as_ref().unwrap();
    assert_eq!(
        (
            &*action.kind,
            &*action.peer_node,
            &*action.peer_ip,
            &*action.encap
        ),
        ("encapsulate", "node-b", "192.168.0.2", "ipip")
    );
    assert_eq!(
        record.counters[2..],
        ["encap.ipip.tx_packets", "encap.ipip.tx_bytes"]
    );
}

#[test]
fn an_unencapsulated_send_names_the_routes_peer() {
    let t = tables(Encap::None);
    let (mut tracer, trace) = armed(1, "");
    let action = pod_a_sends_traced(&trace, &t, &pod_a_sends("10.65.2.9", 64, true, 10));
    assert!(matches!(action, Outbound::ToPeerEthernet { .. }));
    let out = tracer.poll(&t, Instant::now());
    let action = records(&out)[0].action.clone().unwrap();
    assert_eq!(
        (&*action.kind, &*action.peer_ip, &*action.encap),
        ("encapsulate", "192.168.0.2", "none")
    );
}

#[test]
fn a_drop_names_its_reason_and_the_icmp_error_sent_back() {
    let t = tables(Encap::Ipip);
    let (mut tracer, trace) = armed(2, "");
    // Nothing routes 10.99.0.1 in the fixture: net-unreachable goes back.
    pod_a_sends_traced(&trace, &t, &pod_a_sends("10.99.0.1", 64, true, 10));
    // An unused address of the node's own block is blackholed.
    pod_a_sends_traced(&trace, &t, &pod_a_sends("10.65.1.40", 64, true, 10));
    let out = tracer.poll(&t, Instant::now());
    let got = records(&out);
    let unreachable = got[0];
    let route = unreachable.route.as_ref().unwrap();
    assert_eq!((&*route.prefix, &*route.target), ("", "none"));
    let action = unreachable.action.as_ref().unwrap();
    assert_eq!(
        (&*action.kind, &*action.drop_reason, action.icmp_error),
        ("drop", "no_route", true)
    );
    assert_eq!(
        unreachable.counters[2..],
        [
            "drop.no_route",
            "endpoint.k8s/a/eth0.drops",
            "icmp.errors_sent"
        ]
    );
    let blackhole = got[1];
    let route = blackhole.route.as_ref().unwrap();
    assert_eq!(
        (&*route.prefix, &*route.target),
        ("10.65.1.0/26", "blackhole")
    );
    let action = blackhole.action.as_ref().unwrap();
    assert_eq!(
        (&*action.drop_reason, action.icmp_error),
        ("blackhole", false)
    );
}

#[test]
fn arp_is_traced_without_a_route() {
    let t = tables(Encap::Ipip);
    let (mut tracer, trace) = armed(1, "");
    let mut arp = [0u8; ARP_IPV4_LEN];
    emit_arp(
        &mut arp,
        ARP_REQUEST,
        (POD_A_MAC, ip("10.65.1.2")),
        ([0; 6], POD_GATEWAY),
    );
    pod_a_sends_traced(
        &trace,
        &t,
        &eth_frame(BROADCAST_MAC, POD_A_MAC, crate::packet::ETHERTYPE_ARP, &arp),
    );
    let out = tracer.poll(&t, Instant::now());
    let record = records(&out)[0];
    let packet = record.packet.as_ref().unwrap();
    assert_eq!(
        (
            packet.ethertype,
            packet.arp_operation,
            &*packet.src,
            &*packet.dst,
            packet.ipv4
        ),
        (0x0806, 1, "10.65.1.2", "169.254.1.1", false)
    );
    assert!(record.route.is_none());
    assert_eq!(record.action.as_ref().unwrap().kind, "reply");
    assert_eq!(record.counters[2..], ["arp.replies"]);
}

#[test]
fn the_filter_keeps_only_packets_from_or_to_its_endpoint() {
    let t = tables(Encap::Ipip);
    let (mut tracer, trace) = armed(1, "k8s/b/eth0");
    // From a to node-b's block: neither from nor to pod b.
    pod_a_sends_traced(&trace, &t, &pod_a_sends("10.65.2.9", 64, true, 10));
    assert!(trace.armed(), "a packet the filter refuses takes nothing");
    // From a to pod b: taken.
    pod_a_sends_traced(&trace, &t, &pod_a_sends("10.65.1.3", 64, true, 10));
    let out = tracer.poll(&t, Instant::now());
    let got = records(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].action.as_ref().unwrap().endpoint, "k8s/b/eth0");
}

#[test]
fn a_trace_takes_count_packets_then_ends() {
    let t = tables(Encap::Ipip);
    let (mut tracer, trace) = armed(2, "");
    for seq in 1..=3 {
        pod_a_sends_traced(&trace, &t, &ping_from_a("10.65.1.3", seq));
    }
    let out = tracer.poll(&t, Instant::now());
    let got = records(&out);
    assert_eq!(got.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 2]);
    let seqs: Vec<u32> = got
        .iter()
        .map(|r| r.packet.as_ref().unwrap().icmp_seq)
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(done(&out).unwrap().reason, "complete");
}

#[test]
fn a_trace_whose_time_is_up_ends_with_what_it_has() {
    let t = tables(Encap::Ipip);
    let mut tracer = Tracer::new();
    let trace = tracer.trace();
    let start = Instant::now();
    tracer.start(&request(5, "", 100), slot, start);
    assert!(tracer.next_poll(start).unwrap() <= Duration::from_millis(100));
    pod_a_sends_traced(&trace, &t, &ping_from_a("10.65.1.3", 1));
    let early = tracer.poll(&t, start + Duration::from_millis(50));
    assert_eq!(records(&early).len(), 1);
    assert!(done(&early).is_none());
    let late = tracer.poll(&t, start + Duration::from_millis(150));
    let done = done(&late).unwrap();
    assert_eq!((done.reason.as_str(), done.records), ("timeout", 1));
    assert!(!trace.armed());
    // Afterwards nothing more is recorded.
    pod_a_sends_traced(&trace, &t, &ping_from_a("10.65.1.3", 2));
    assert!(tracer.poll(&t, Instant::now()).is_empty());
}

#[test]
fn a_new_trace_replaces_the_running_one_and_an_unknown_endpoint_is_refused() {
    let t = tables(Encap::Ipip);
    let (mut tracer, trace) = armed(5, "");
    pod_a_sends_traced(&trace, &t, &ping_from_a("10.65.1.3", 1));
    let mut second = request(1, "", 5000);
    second.trace_id = 43;
    let out = tracer.start(&second, slot, Instant::now());
    let replaced = done(&out).unwrap();
    assert_eq!(
        (replaced.trace_id, replaced.reason.as_str()),
        (42, "replaced")
    );
    // The first trace's record is not the second's.
    pod_a_sends_traced(&trace, &t, &ping_from_a("10.65.1.3", 2));
    let out = tracer.poll(&t, Instant::now());
    let got = records(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].trace_id, got[0].packet.as_ref().unwrap().icmp_seq),
        (43, 2)
    );

    let out = tracer.start(&request(1, "k8s/zz/eth0", 5000), slot, Instant::now());
    let refused = done(&out).unwrap();
    assert_eq!(refused.reason, "refused");
    assert!(refused.error.contains("k8s/zz/eth0"), "{}", refused.error);
    assert!(!trace.armed());
}

#[test]
fn tunnel_traffic_names_its_sender_and_counts_its_encapsulation() {
    let t = tables(Encap::Ipip);
    let (mut tracer, trace) = armed(1, "k8s/a/eth0");
    let mut buf: PacketBuf = received(&ipip_packet("192.168.0.2", "10.65.2.7", "10.65.1.2"));
    let (ingress, packet) = PacketSummary::ipip(buf.frame());
    let action = forward::from_ipip(&t, &mut buf);
    trace.inbound(0, &t, ingress, packet, &action);
    let out = tracer.poll(&t, Instant::now());
    let record = records(&out)[0];
    let ingress = record.ingress.as_ref().unwrap();
    assert_eq!(
        (&*ingress.kind, &*ingress.peer_ip, &*ingress.peer_node),
        ("ipip", "192.168.0.2", "node-b")
    );
    let packet = record.packet.as_ref().unwrap();
    assert_eq!(
        (packet.ethertype, &*packet.src, packet.ttl),
        (0, "10.65.2.7", 63)
    );
    assert_eq!(record.action.as_ref().unwrap().endpoint, "k8s/a/eth0");
    assert_eq!(
        record.counters,
        [
            "encap.ipip.rx_packets",
            "encap.ipip.rx_bytes",
            "endpoint.k8s/a/eth0.tx_packets",
            "endpoint.k8s/a/eth0.tx_bytes",
        ]
    );
}

#[test]
fn a_full_buffer_drops_and_counts_instead_of_blocking() {
    let (trace, _receiver) = Trace::new();
    let t = tables(Encap::Ipip);
    trace.arm(1, u16::MAX, None);
    let frame = ping_from_a("10.65.1.3", 1);
    for _ in 0..CAPACITY + 5 {
        pod_a_sends_traced(&trace, &t, &frame);
    }
    assert_eq!(trace.dropped(), 5);
}

#[test]
fn summaries_of_malformed_frames_say_only_what_they_can() {
    assert_eq!(
        PacketSummary::ethernet(&[1, 2, 3], VnetHdr::NONE),
        PacketSummary {
            bytes: 3,
            ..PacketSummary::default()
        }
    );
    let truncated_ip = eth_frame(GATEWAY_MAC, POD_A_MAC, ETHERTYPE_IPV4, &[0x45, 0, 0]);
    let summary = PacketSummary::ethernet(&truncated_ip, VnetHdr::NONE);
    assert_eq!((summary.ethertype, summary.l3), (0x0800, L3::Unparsed));
    assert_eq!(PacketSummary::vxlan(&[0; 4]).l3, L3::Unparsed);
    let (ingress, summary) = PacketSummary::ipip(&[0x45]);
    assert_eq!(
        ingress,
        Ingress::Ipip {
            from: Ipv4Addr::UNSPECIFIED
        }
    );
    assert_eq!(summary.l3, L3::Unparsed);
}
