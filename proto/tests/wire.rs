//! Wire-format tests through the public API: byte fixtures pinning Felix's field
//! numbers, skipping of unknown payloads and fields, and round trips of every message
//! through the framing.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;

use proptest::prelude::*;
use tapwire_proto::frame::encode;
use tapwire_proto::{from_dataplane, to_dataplane, *};

fn s(v: &str) -> String {
    v.to_owned()
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn body<M: prost::Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

fn wep_id(pod: &str) -> WorkloadEndpointId {
    WorkloadEndpointId {
        orchestrator_id: s("k8s"),
        workload_id: format!("default/{pod}"),
        endpoint_id: s("eth0"),
    }
}

fn endpoint() -> WorkloadEndpoint {
    WorkloadEndpoint {
        state: s("active"),
        name: s("tw1a2b3c"),
        mac: s("0a:58:0a:41:00:03"),
        profile_ids: vec![s("kns.default")],
        ipv4_nets: vec![s("10.65.0.3/32")],
        ipv6_nets: vec![s("fd00:65::3/128")],
        allow_spoofed_source_prefixes: vec![s("192.0.2.0/24")],
        annotations: map(&[(NETNS_ANNOTATION, "/var/run/netns/cni-1")]),
    }
}

/// Felix's oneof number of each payload; exhaustive so a new variant needs a line here.
fn to_tag(p: &to_dataplane::Payload) -> u32 {
    use to_dataplane::Payload::*;
    match p {
        InSync(_) => 1,
        WorkloadEndpointUpdate(_) => 11,
        WorkloadEndpointRemove(_) => 12,
        ConfigUpdate(_) => 13,
        HostMetadataUpdate(_) => 14,
        IpamPoolUpdate(_) => 16,
        IpamPoolRemove(_) => 17,
        HostMetadataRemove(_) => 18,
        RouteUpdate(_) => 23,
        RouteRemove(_) => 24,
        VtepUpdate(_) => 25,
        VtepRemove(_) => 26,
        Encapsulation(_) => 30,
        CountersRequest(_) => 1000,
        TraceRequest(_) => 1001,
    }
}

fn from_tag(p: &from_dataplane::Payload) -> u32 {
    use from_dataplane::Payload::*;
    match p {
        ProcessStatusUpdate(_) => 3,
        WorkloadEndpointStatusUpdate(_) => 6,
        WorkloadEndpointStatusRemove(_) => 7,
        DataplaneInSync(_) => 10,
        CountersReply(_) => 1000,
        TraceRecord(_) => 1001,
        TraceDone(_) => 1002,
    }
}

/// One sample of every control → dataplane payload, with every field set.
fn to_samples() -> Vec<ToDataplane> {
    use to_dataplane::Payload as P;
    let payloads = vec![
        P::ConfigUpdate(ConfigUpdate {
            config: map(&[(config::HOSTNAME, "node-a"), (config::VXLAN_VNI, "4096")]),
            message: s("from node.toml"),
        }),
        P::HostMetadataUpdate(HostMetadataUpdate {
            hostname: s("node-b"),
            ipv4_addr: s("192.168.0.2"),
            ipv6_addr: s("fd00::2"),
            asnumber: s("64512"),
            labels: map(&[("zone", "a")]),
        }),
        P::HostMetadataRemove(HostMetadataRemove {
            hostname: s("node-b"),
            ipv4_addr: s("192.168.0.2"),
        }),
        P::IpamPoolUpdate(IpamPoolUpdate {
            id: s("10.65.0.0/16"),
            pool: Some(IpamPool {
                cidr: s("10.65.0.0/16"),
                masquerade: true,
                ipip_mode: s("cross-subnet"),
                vxlan_mode: s(""),
                allowed_uses: vec![s("Workload"), s("Tunnel")],
            }),
        }),
        P::IpamPoolRemove(IpamPoolRemove {
            id: s("10.65.0.0/16"),
        }),
        P::VtepUpdate(VxlanTunnelEndpointUpdate {
            node: s("node-b"),
            mac: s("66:0b:3d:9a:1c:42"),
            ipv4_addr: s("10.65.1.0"),
            parent_device_ip: s("192.168.0.2"),
            mac_v6: s("66:0b:3d:9a:1c:43"),
            ipv6_addr: s("fd00:65:1::"),
            parent_device_ipv6: s("fd00::2"),
        }),
        P::VtepRemove(VxlanTunnelEndpointRemove { node: s("node-b") }),
        P::RouteUpdate(RouteUpdate {
            types: RouteType::RemoteWorkload as i32 | RouteType::RemoteTunnel as i32,
            ip_pool_type: IpPoolType::Vxlan as i32,
            dst: s("10.65.1.0/26"),
            dst_node_name: s("node-b"),
            dst_node_ip: s("192.168.0.2"),
            same_subnet: true,
            nat_outgoing: true,
            local_workload: true,
            tunnel_type: Some(TunnelType {
                ipip: true,
                vxlan: true,
                wireguard: true,
            }),
            borrowed: true,
        }),
        P::RouteRemove(RouteRemove {
            dst: s("10.65.1.0/26"),
        }),
        P::Encapsulation(Encapsulation {
            ipip_enabled: true,
            vxlan_enabled: true,
            vxlan_enabled_v6: true,
            no_encap_enabled: true,
        }),
        P::WorkloadEndpointUpdate(WorkloadEndpointUpdate {
            id: Some(wep_id("pod-a")),
            endpoint: Some(endpoint()),
        }),
        P::WorkloadEndpointRemove(WorkloadEndpointRemove {
            id: Some(wep_id("pod-a")),
        }),
        P::InSync(InSync {}),
        P::CountersRequest(CountersRequest {}),
        P::TraceRequest(TraceRequest {
            trace_id: 7,
            count: 10,
            endpoint: s("k8s/default/pod-a/eth0"),
            timeout_ms: 30_000,
        }),
    ];
    payloads
        .into_iter()
        .zip(1..)
        .map(|(p, seq)| ToDataplane {
            sequence_number: seq,
            payload: Some(p),
        })
        .collect()
}

/// One sample of every dataplane → control payload, with every field set.
fn from_samples() -> Vec<FromDataplane> {
    use from_dataplane::Payload as P;
    let payloads = vec![
        P::ProcessStatusUpdate(ProcessStatusUpdate {
            iso_timestamp: s("2025-01-02T03:04:05Z"),
            uptime: 12.5,
            version: s("0.1.0"),
        }),
        P::WorkloadEndpointStatusUpdate(WorkloadEndpointStatusUpdate {
            id: Some(wep_id("pod-a")),
            status: Some(EndpointStatus { status: s("up") }),
            endpoint: Some(endpoint()),
        }),
        P::WorkloadEndpointStatusRemove(WorkloadEndpointStatusRemove {
            id: Some(wep_id("pod-a")),
        }),
        P::DataplaneInSync(DataplaneInSync {}),
        P::CountersReply(CountersReply {
            counters: vec![
                Counter {
                    name: s("rx_frames"),
                    value: u64::MAX,
                },
                Counter {
                    name: s("drop_no_route"),
                    value: 3,
                },
            ],
        }),
        P::TraceRecord(trace_record()),
        P::TraceDone(TraceDone {
            trace_id: 7,
            records: 10,
            dropped: 1,
            reason: s("refused"),
            error: s("endpoint k8s/default/pod-z/eth0 is not attached here"),
        }),
    ];
    payloads
        .into_iter()
        .zip(1..)
        .map(|(p, seq)| FromDataplane {
            sequence_number: seq,
            payload: Some(p),
        })
        .collect()
}

/// A trace record with every field set: an ICMP echo request from pod-a, encapsulated in
/// IPIP to node-b.
fn trace_record() -> TraceRecord {
    TraceRecord {
        trace_id: 7,
        index: 1,
        worker: 1,
        elapsed_us: 1234,
        ingress: Some(TraceIngress {
            kind: s("pod"),
            endpoint: s("k8s/default/pod-a/eth0"),
            peer_ip: s("192.168.0.2"),
            peer_node: s("node-b"),
        }),
        packet: Some(TracePacket {
            ethertype: 0x0800,
            frame_bytes: 98,
            src: s("10.65.1.2"),
            dst: s("10.65.2.3"),
            protocol: 1,
            src_port: 1,
            dst_port: 2,
            ttl: 64,
            ip_bytes: 84,
            icmp_type: 8,
            icmp_code: 0,
            icmp_id: 17,
            icmp_seq: 3,
            arp_operation: 1,
            gso_size: 1448,
            segments: 45,
            ipv4: true,
        }),
        route: Some(TraceRoute {
            prefix: s("10.65.2.0/26"),
            target: s("remote"),
            endpoint: s("k8s/default/pod-c/eth0"),
            peer_node: s("node-b"),
            peer_ip: s("192.168.0.2"),
            encap: s("ipip"),
        }),
        action: Some(TraceAction {
            kind: s("encapsulate"),
            endpoint: s("k8s/default/pod-c/eth0"),
            peer_node: s("node-b"),
            peer_ip: s("192.168.0.2"),
            encap: s("ipip"),
            drop_reason: s("no_route"),
            icmp_error: true,
        }),
        counters: vec![
            s("endpoint.k8s/default/pod-a/eth0.rx_packets"),
            s("encap.ipip.tx_packets"),
        ],
    }
}

/// The protobuf key of a length-delimited field `tag`, as a varint.
fn len_key(tag: u32) -> Vec<u8> {
    let mut v = u64::from(tag << 3 | 2);
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

#[test]
fn route_update_envelope_bytes() {
    let msg = ToDataplane {
        sequence_number: 7,
        payload: Some(to_dataplane::Payload::RouteUpdate(RouteUpdate {
            dst: s("10.0.0.0/26"),
            ..Default::default()
        })),
    };
    let mut frame = Vec::new();
    encode(&msg, &mut frame).unwrap();
    let mut want = vec![18, 0, 0, 0, 0, 0, 0, 0]; // little-endian body length
    want.extend_from_slice(&[0xBA, 0x01, 13]); // field 23 (route_update), 13 bytes
    want.extend_from_slice(&[0x1A, 11]); // RouteUpdate.dst = 3
    want.extend_from_slice(b"10.0.0.0/26");
    want.extend_from_slice(&[0x78, 7]); // field 15 (sequence_number) = 7
    assert_eq!(frame, want);
}

#[test]
fn route_update_field_numbers() {
    let mut route = RouteUpdate {
        ip_pool_type: IpPoolType::Vxlan as i32,
        dst: s("10.65.1.0/26"),
        dst_node_name: s("b"),
        dst_node_ip: s("10.0.0.2"),
        same_subnet: true,
        nat_outgoing: true,
        local_workload: false,
        tunnel_type: Some(TunnelType {
            vxlan: true,
            ..Default::default()
        }),
        borrowed: true,
        ..Default::default()
    };
    route.add_type(RouteType::RemoteWorkload);
    route.add_type(RouteType::RemoteTunnel);
    let mut want = vec![0x10, 2]; // ip_pool_type = 2: VXLAN
    want.extend_from_slice(&[0x1A, 12]);
    want.extend_from_slice(b"10.65.1.0/26"); // dst = 3
    want.extend_from_slice(&[0x22, 1, b'b']); // dst_node_name = 4
    want.extend_from_slice(&[0x2A, 8]);
    want.extend_from_slice(b"10.0.0.2"); // dst_node_ip = 5
    want.extend_from_slice(&[0x38, 1, 0x40, 1]); // same_subnet = 7, nat_outgoing = 8
    want.extend_from_slice(&[0x52, 2, 0x10, 1]); // tunnel_type = 10 { vxlan = 2 }
    want.extend_from_slice(&[0x58, 1]); // borrowed = 11
    want.extend_from_slice(&[0x60, 17]); // types = 12: REMOTE_WORKLOAD | REMOTE_TUNNEL
    assert_eq!(body(&route), want);
}

#[test]
fn workload_endpoint_field_numbers() {
    let update = WorkloadEndpointUpdate {
        id: Some(WorkloadEndpointId {
            orchestrator_id: s("k8s"),
            ..Default::default()
        }),
        endpoint: Some(WorkloadEndpoint {
            name: s("tw0"),
            annotations: map(&[(NETNS_ANNOTATION, "/x")]),
            ..Default::default()
        }),
    };
    let mut want = vec![0x0A, 5, 0x12, 3]; // id = 1 { orchestrator_id = 2 }
    want.extend_from_slice(b"k8s");
    want.extend_from_slice(&[0x2A, 29, 0x12, 3]); // endpoint = 5 { name = 2
    want.extend_from_slice(b"tw0");
    want.extend_from_slice(&[0x5A, 22, 0x0A, 16]); // annotations = 11 { key = 1
    want.extend_from_slice(b"tapwire.io/netns");
    want.extend_from_slice(&[0x12, 2]); // value = 2 } }
    want.extend_from_slice(b"/x");
    assert_eq!(body(&update), want);
}

#[test]
fn trace_request_field_numbers() {
    let msg = ToDataplane {
        sequence_number: 1,
        payload: Some(to_dataplane::Payload::TraceRequest(TraceRequest {
            trace_id: 2,
            count: 3,
            endpoint: s("e"),
            timeout_ms: 4,
        })),
    };
    // trace_request = 1001 (varint key 0xCA 0x3E), 9 bytes: trace_id = 1, count = 2,
    // endpoint = 3, timeout_ms = 4; then sequence_number = 15.
    let mut want = vec![0xCA, 0x3E, 9, 0x08, 2, 0x10, 3, 0x1A, 1, b'e', 0x20, 4];
    want.extend_from_slice(&[0x78, 1]);
    assert_eq!(body(&msg), want);
}

#[test]
fn from_dataplane_envelope_bytes() {
    let msg = FromDataplane {
        sequence_number: 3,
        payload: Some(from_dataplane::Payload::DataplaneInSync(DataplaneInSync {})),
    };
    // dataplane_in_sync = 10 (empty), then sequence_number = 8.
    assert_eq!(body(&msg), [0x52, 0, 0x40, 3]);
}

#[test]
fn every_payload_uses_its_oneof_number() {
    for msg in to_samples() {
        let tag = to_tag(msg.payload.as_ref().unwrap());
        assert!(
            body(&msg).starts_with(&len_key(tag)),
            "ToDataplane tag {tag}"
        );
    }
    for msg in from_samples() {
        let tag = from_tag(msg.payload.as_ref().unwrap());
        assert!(
            body(&msg).starts_with(&len_key(tag)),
            "FromDataplane tag {tag}"
        );
    }
    // tapwire-only numbers start at 1000: key (1000 << 3 | 2) = 0xC2 0x3E.
    assert_eq!(len_key(1000), [0xC2, 0x3E]);
}

#[test]
fn unknown_payload_decodes_as_none() {
    // Felix's order: sequence_number = 15 first, then an active_policy_update (field 5)
    // with an id submessage, which tapwire does not model.
    let mut bytes = vec![0x78, 42, 0x2A, 5, 0x0A, 3];
    bytes.extend_from_slice(b"pol");
    // Then a tapwire-range number nobody defined yet, 1234 (varint key 0x92 0x4D).
    bytes.extend_from_slice(&[0x92, 0x4D, 0]);
    let mut frame = (bytes.len() as u64).to_le_bytes().to_vec();
    frame.extend_from_slice(&bytes);

    let mut dec = FrameDecoder::new();
    dec.push(&frame);
    let msg: ToDataplane = dec.next().unwrap().unwrap();
    assert_eq!(msg.sequence_number, 42);
    assert_eq!(msg.payload, None);
}

#[test]
fn unknown_fields_inside_known_messages_are_skipped() {
    // A Felix WorkloadEndpoint carries more fields (e.g. tiers = 7, ipv4_nat = 8)
    // than tapwire models; the known ones must survive.
    let mut bytes = body(&endpoint());
    bytes.extend_from_slice(&[0x3A, 3, 0x0A, 1, b't']); // tiers = 7 { name = 1 }
    bytes.extend_from_slice(&[0x42, 0]); // ipv4_nat = 8 {}
    let decoded = <WorkloadEndpoint as prost::Message>::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded, endpoint());
    assert_eq!(decoded.netns(), Some("/var/run/netns/cni-1"));
}

#[test]
fn route_types_are_a_bitmap() {
    let mut route = RouteUpdate::default();
    assert!(route.has_type(RouteType::CidrInfo));
    route.add_type(RouteType::LocalWorkload);
    route.add_type(RouteType::LocalTunnel);
    assert_eq!(route.types, 36);
    assert!(route.has_type(RouteType::LocalWorkload));
    assert!(route.has_type(RouteType::LocalTunnel));
    assert!(!route.has_type(RouteType::CidrInfo));
    assert!(!route.has_type(RouteType::RemoteWorkload));
    assert_eq!(RouteType::try_from(16), Ok(RouteType::RemoteTunnel));
    assert!(RouteType::try_from(3).is_err());

    route.set_ip_pool_type(IpPoolType::Ipip);
    assert_eq!(route.ip_pool_type, 3);
    route.ip_pool_type = 9; // from a newer peer
    assert_eq!(route.ip_pool_type(), IpPoolType::None);
}

#[test]
fn config_keys_and_defaults() {
    assert_eq!(config::HOSTNAME, "FelixHostname");
    assert_eq!(config::VXLAN_VNI, "VXLANVNI");
    assert_eq!(config::DEFAULT_VXLAN_VNI, 4096);
    assert_eq!(VXLAN_PORT, 4789);
}

#[test]
fn every_message_round_trips_through_frames() {
    let mut to_wire = Vec::new();
    for msg in to_samples() {
        encode(&msg, &mut to_wire).unwrap();
    }
    let mut from_wire = Vec::new();
    for msg in from_samples() {
        encode(&msg, &mut from_wire).unwrap();
    }

    let mut dec = FrameDecoder::new();
    dec.push(&to_wire);
    let mut got = Vec::new();
    while let Some(m) = dec.next::<ToDataplane>().unwrap() {
        got.push(m);
    }
    assert_eq!(got, to_samples());

    let mut reader = FrameReader::new(from_wire.as_slice());
    let mut got = Vec::new();
    while let Some(m) = reader.next::<FromDataplane>().unwrap() {
        got.push(m);
    }
    assert_eq!(got, from_samples());
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9./:_-]{0,16}"
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..4)
}

fn text_map() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(text(), text(), 0..4)
}

fn wep_id_strategy() -> impl Strategy<Value = WorkloadEndpointId> {
    (text(), text(), text()).prop_map(|(o, w, e)| WorkloadEndpointId {
        orchestrator_id: o,
        workload_id: w,
        endpoint_id: e,
    })
}

fn endpoint_strategy() -> impl Strategy<Value = WorkloadEndpoint> {
    (
        text(),
        text(),
        text(),
        texts(),
        texts(),
        texts(),
        texts(),
        text_map(),
    )
        .prop_map(|(state, name, mac, profiles, v4, v6, spoof, annotations)| {
            WorkloadEndpoint {
                state,
                name,
                mac,
                profile_ids: profiles,
                ipv4_nets: v4,
                ipv6_nets: v6,
                allow_spoofed_source_prefixes: spoof,
                annotations,
            }
        })
}

fn route_strategy() -> impl Strategy<Value = RouteUpdate> {
    (
        any::<i32>(),
        any::<i32>(),
        (text(), text(), text()),
        any::<[bool; 4]>(),
        prop::option::of(any::<[bool; 3]>()),
    )
        .prop_map(
            |(types, pool, (dst, name, ip), flags, tunnel)| RouteUpdate {
                types,
                ip_pool_type: pool,
                dst,
                dst_node_name: name,
                dst_node_ip: ip,
                same_subnet: flags[0],
                nat_outgoing: flags[1],
                local_workload: flags[2],
                borrowed: flags[3],
                tunnel_type: tunnel.map(|[ipip, vxlan, wireguard]| TunnelType {
                    ipip,
                    vxlan,
                    wireguard,
                }),
            },
        )
}

fn to_strategy() -> impl Strategy<Value = ToDataplane> {
    use to_dataplane::Payload as P;
    let payload = prop_oneof![
        (text_map(), text())
            .prop_map(|(config, message)| P::ConfigUpdate(ConfigUpdate { config, message })),
        route_strategy().prop_map(P::RouteUpdate),
        text().prop_map(|dst| P::RouteRemove(RouteRemove { dst })),
        (
            prop::option::of(wep_id_strategy()),
            prop::option::of(endpoint_strategy())
        )
            .prop_map(
                |(id, endpoint)| P::WorkloadEndpointUpdate(WorkloadEndpointUpdate { id, endpoint })
            ),
        (text(), text(), text(), text(), text_map()).prop_map(|(h, v4, v6, asn, labels)| {
            P::HostMetadataUpdate(HostMetadataUpdate {
                hostname: h,
                ipv4_addr: v4,
                ipv6_addr: v6,
                asnumber: asn,
                labels,
            })
        }),
        (text(), text(), any::<bool>(), texts()).prop_map(|(id, cidr, masquerade, uses)| {
            P::IpamPoolUpdate(IpamPoolUpdate {
                id,
                pool: Some(IpamPool {
                    cidr,
                    masquerade,
                    ipip_mode: s("always"),
                    vxlan_mode: String::new(),
                    allowed_uses: uses,
                }),
            })
        }),
        (text(), text(), text(), text()).prop_map(|(node, mac, ip, parent)| P::VtepUpdate(
            VxlanTunnelEndpointUpdate {
                node,
                mac,
                ipv4_addr: ip,
                parent_device_ip: parent,
                ..Default::default()
            }
        )),
        any::<[bool; 4]>().prop_map(|b| P::Encapsulation(Encapsulation {
            ipip_enabled: b[0],
            vxlan_enabled: b[1],
            vxlan_enabled_v6: b[2],
            no_encap_enabled: b[3],
        })),
        Just(P::InSync(InSync {})),
        (any::<u32>(), any::<u32>(), text(), any::<u32>()).prop_map(
            |(trace_id, count, endpoint, timeout_ms)| P::TraceRequest(TraceRequest {
                trace_id,
                count,
                endpoint,
                timeout_ms,
            })
        ),
    ];
    (any::<u64>(), prop::option::of(payload)).prop_map(|(sequence_number, payload)| ToDataplane {
        sequence_number,
        payload,
    })
}

fn from_strategy() -> impl Strategy<Value = FromDataplane> {
    use from_dataplane::Payload as P;
    let payload = prop_oneof![
        (text(), -1e12f64..1e12, text()).prop_map(|(iso_timestamp, uptime, version)| {
            P::ProcessStatusUpdate(ProcessStatusUpdate {
                iso_timestamp,
                uptime,
                version,
            })
        }),
        (
            prop::option::of(wep_id_strategy()),
            prop::option::of(text()),
            prop::option::of(endpoint_strategy())
        )
            .prop_map(|(id, status, endpoint)| P::WorkloadEndpointStatusUpdate(
                WorkloadEndpointStatusUpdate {
                    id,
                    status: status.map(|status| EndpointStatus { status }),
                    endpoint,
                }
            )),
        prop::collection::vec((text(), any::<u64>()), 0..6).prop_map(|cs| P::CountersReply(
            CountersReply {
                counters: cs
                    .into_iter()
                    .map(|(name, value)| Counter { name, value })
                    .collect(),
            }
        )),
        (any::<u32>(), any::<u32>(), text(), texts()).prop_map(
            |(index, worker, endpoint, counters)| P::TraceRecord(TraceRecord {
                index,
                worker,
                ingress: Some(TraceIngress {
                    kind: s("pod"),
                    endpoint,
                    ..Default::default()
                }),
                counters,
                ..trace_record()
            })
        ),
        (any::<u32>(), any::<u64>(), text()).prop_map(|(records, dropped, reason)| {
            P::TraceDone(TraceDone {
                trace_id: 1,
                records,
                dropped,
                reason,
                error: String::new(),
            })
        }),
    ];
    (any::<u64>(), prop::option::of(payload)).prop_map(|(sequence_number, payload)| FromDataplane {
        sequence_number,
        payload,
    })
}

proptest! {
    #[test]
    fn to_dataplane_round_trips(msgs in prop::collection::vec(to_strategy(), 1..6), cut in any::<prop::sample::Index>()) {
        let mut wire = Vec::new();
        for m in &msgs {
            encode(m, &mut wire).unwrap();
        }
        // Delivered in two pieces split anywhere.
        let cut = cut.index(wire.len() + 1);
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for piece in [&wire[..cut], &wire[cut..]] {
            dec.push(piece);
            while let Some(m) = dec.next::<ToDataplane>().unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(dec.buffered_len(), 0);
    }

    #[test]
    fn from_dataplane_round_trips(msg in from_strategy()) {
        let mut wire = Vec::new();
        encode(&msg, &mut wire).unwrap();
        let mut reader = FrameReader::new(wire.as_slice());
        prop_assert_eq!(reader.next::<FromDataplane>().unwrap(), Some(msg));
        prop_assert!(reader.next::<FromDataplane>().unwrap().is_none());
    }
}
