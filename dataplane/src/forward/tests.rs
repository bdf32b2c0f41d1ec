//! Decision tests: real frames in, actions out, no devices.

use proptest::prelude::*;

use super::*;
use crate::fixtures::*;
use crate::packet::{checksum, IPPROTO_ICMP};

fn from_pod_a(tables: &Tables, frame: &[u8]) -> (Outbound, PacketBuf, [u8; SCRATCH_LEN]) {
    let mut buf = PacketBuf::new();
    buf.receive_area()[..frame.len()].copy_from_slice(frame);
    buf.set_received(frame.len());
    let mut scratch = [0u8; SCRATCH_LEN];
    let action = from_pod(tables, 0, &mut buf, &mut scratch);
    (action, buf, scratch)
}

#[test]
fn arp_for_the_gateway_is_answered_with_the_gateway_mac() {
    let mut arp = [0u8; ARP_IPV4_LEN];
    emit_arp(
        &mut arp,
        ARP_REQUEST,
        (POD_A_MAC, ip("10.65.1.2")),
        ([0; 6], packet::POD_GATEWAY),
    );
    let frame = eth_frame(packet::BROADCAST_MAC, POD_A_MAC, ETHERTYPE_ARP, &arp);
    let (action, _, scratch) = from_pod_a(&tables(Encap::Vxlan), &frame);
    let Outbound::Reply { len } = action else {
        panic!("expected a reply, got {action:?}");
    };
    let eth = EthernetFrame::new_checked(&scratch[..len]).unwrap();
    assert_eq!((eth.dst(), eth.src()), (POD_A_MAC, GATEWAY_MAC));
    let reply = ArpPacket::new_checked(eth.payload()).unwrap();
    assert_eq!(reply.operation(), ARP_REPLY);
    assert_eq!(reply.sender_mac(), GATEWAY_MAC);
    assert_eq!(reply.sender_ip(), packet::POD_GATEWAY);
    assert_eq!(reply.target_ip(), ip("10.65.1.2"));
}

#[test]
fn arp_for_any_other_address_is_answered_but_not_for_the_pods_own() {
    let ask = |target: &str| {
        let mut arp = [0u8; ARP_IPV4_LEN];
        emit_arp(
            &mut arp,
            ARP_REQUEST,
            (POD_A_MAC, ip("10.65.1.2")),
            ([0; 6], ip(target)),
        );
        let frame = eth_frame(packet::BROADCAST_MAC, POD_A_MAC, ETHERTYPE_ARP, &arp);
        from_pod_a(&tables(Encap::Vxlan), &frame).0
    };
    assert!(matches!(ask("10.65.2.9"), Outbound::Reply { .. }));
    assert_eq!(ask("10.65.1.2"), Outbound::Drop(DropReason::ArpIgnored));
}

#[test]
fn local_delivery_rewrites_macs_and_decrements_ttl() {
    let frame = pod_a_sends("10.65.1.3", 64, true, 100);
    let (action, buf, _) = from_pod_a(&tables(Encap::Vxlan), &frame);
    let Outbound::ToPod {
        endpoint: 1,
        frame,
        offload: VnetHdr::NONE,
    } = action
    else {
        panic!("expected delivery to pod b, got {action:?}");
    };
    let out = buf.slice(frame);
    let eth = EthernetFrame::new_checked(out).unwrap();
    assert_eq!((eth.dst(), eth.src()), (POD_B_MAC, GATEWAY_MAC));
    let inner = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(inner.ttl(), 63);
    assert!(inner.checksum_ok());
}

#[test]
fn ipip_prepends_an_outer_header_between_the_nodes() {
    let frame = pod_a_sends("10.65.2.7", 64, true, 1000);
    // The peer's MAC is resolved: a frame for the packet socket.
    let (action, buf, _) = from_pod_a(&tables(Encap::Ipip), &frame);
    let Outbound::ToPeerIpip {
        dst,
        frame: framed,
        offload: VnetHdr::NONE,
        tso: None,
        framed: true,
    } = action
    else {
        panic!("expected framed IPIP, got {action:?}");
    };
    assert_eq!(dst, ip("192.168.0.2"));
    let eth = EthernetFrame::new_checked(buf.slice(framed.clone())).unwrap();
    assert_eq!((eth.dst(), eth.src()), (PEER_MAC, NODE_MAC));
    assert_eq!(eth.ethertype(), ETHERTYPE_IPV4);
    let outer_bytes = buf
        .slice(framed.start + ETH_HEADER_LEN..framed.end)
        .to_vec();

    // Not resolved yet: the outer packet alone, for the raw socket, the same bytes.
    let mut unresolved = tables(Encap::Ipip);
    unresolved.peers[0].next_hop_mac = None;
    let (action, buf, _) = from_pod_a(&unresolved, &frame);
    let Outbound::ToPeerIpip {
        frame: packet,
        tso: None,
        framed: false,
        ..
    } = action
    else {
        panic!("expected IPIP for the raw socket, got {action:?}");
    };
    assert_eq!(buf.slice(packet.clone()), &outer_bytes[..]);
    let outer = Ipv4Packet::new_checked(buf.slice(packet)).unwrap();
    assert!(outer.checksum_ok());
    assert_eq!(outer.protocol(), IPPROTO_IPIP);
    assert_eq!(
        (outer.src(), outer.dst()),
        (ip("192.168.0.1"), ip("192.168.0.2"))
    );
    assert_eq!(outer.total_len(), 20 + 1040);
    let inner = Ipv4Packet::new_checked(outer.payload()).unwrap();
    assert_eq!(
        outer.total_len() - inner.total_len(),
        Encap::Ipip.overhead_bytes() as usize,
        "the contract's IPIP overhead (pod MTUs) is what is prepended here"
    );
    assert_eq!(
        (inner.src(), inner.dst()),
        (ip("10.65.1.2"), ip("10.65.2.7"))
    );
    assert_eq!(inner.ttl(), 63);
}

#[test]
fn vxlan_wraps_the_frame_between_vteps_with_a_per_flow_hash() {
    let t = tables(Encap::Vxlan);
    let frame = pod_a_sends("10.65.2.7", 64, true, 1000);
    let (action, buf, _) = from_pod_a(&t, &frame);
    let Outbound::ToPeerVxlan {
        dst,
        flow,
        payload,
        tso: None,
    } = action
    else {
        panic!("expected VXLAN, got {action:?}");
    };
    assert_eq!(dst, ip("192.168.0.2"));
    let datagram = buf.slice(payload);
    assert_eq!(packet::parse_vxlan(datagram), Some(4096));
    let inner = EthernetFrame::new_checked(&datagram[8..]).unwrap();
    assert_eq!((inner.dst(), inner.src()), (PEER_VTEP, OUR_VTEP));
    assert_eq!(datagram.len(), 8 + 14 + 1040);

    // Same flow, same hash (and so the same source port).
    let (again, _, _) = from_pod_a(&t, &frame);
    let Outbound::ToPeerVxlan { flow: flow2, .. } = again else {
        panic!("{again:?}");
    };
    assert_eq!(flow, flow2);
}

/// A TCP super-frame as a pod hands it over with TSO on: `segments` MSS-sized pieces of
/// payload behind one header, and the virtio-net header saying so.
fn pod_a_super_frame(dst: &str, mss: u16, segments: usize) -> (Vec<u8>, VnetHdr) {
    let mut pkt = ipv4_packet("10.65.1.2", dst, 64, true, usize::from(mss) * segments);
    pkt[20 + 12] = 5 << 4; // TCP data offset
    pkt[20 + 13] = 0x18; // PSH|ACK
    let frame = eth_frame(GATEWAY_MAC, POD_A_MAC, ETHERTYPE_IPV4, &pkt);
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
    };
    (frame, hdr)
}

fn from_pod_a_offloaded(tables: &Tables, frame: &[u8], hdr: VnetHdr) -> (Outbound, PacketBuf) {
    let mut buf = PacketBuf::new();
    buf.receive_area()[..frame.len()].copy_from_slice(frame);
    buf.set_received(frame.len());
    buf.set_offload(hdr);
    let mut scratch = [0u8; SCRATCH_LEN];
    let action = from_pod(tables, 0, &mut buf, &mut scratch);
    (action, buf)
}

#[test]
fn super_frames_are_judged_by_their_segments_and_keep_their_metadata() {
    // 20 segments of 1360 bytes: 27 KB in all, each segment 1400 bytes on the wire.
    let (frame, hdr) = pod_a_super_frame("10.65.1.3", 1360, 20);
    let (action, _) = from_pod_a_offloaded(&tables(Encap::Vxlan), &frame, hdr);
    assert!(
        matches!(action, Outbound::ToPod { endpoint: 1, offload, .. } if offload == hdr),
        "{action:?}"
    );

    let (remote, _) = pod_a_super_frame("10.65.2.7", 1360, 20);
    let (action, _) = from_pod_a_offloaded(&tables(Encap::None), &remote, hdr);
    let Outbound::ToPeerEthernet { offload, .. } = action else {
        panic!("{action:?}");
    };
    assert_eq!(offload, hdr);

    let (action, _) = from_pod_a_offloaded(
        &tables(Encap::Vxlan),
        &pod_a_super_frame("10.65.2.7", 1360, 20).0,
        hdr,
    );
    let Outbound::ToPeerVxlan { tso: Some(tso), .. } = action else {
        panic!("{action:?}");
    };
    assert_eq!(
        tso,
        Tso {
            inner_ip: 22,
            ip_header_len: 20,
            tcp_header_len: 20,
            mss: 1360,
            ecn: false,
        }
    );

    // Segments larger than the pod's MTU are oversize, however small the frame's share.
    let (big, big_hdr) = pod_a_super_frame("10.65.2.7", 1440, 10);
    let (action, _) = from_pod_a_offloaded(&tables(Encap::Vxlan), &big, big_hdr);
    assert_eq!(action, Outbound::Drop(DropReason::Oversize));

    // GSO metadata that is not TCP over IPv4 is refused, not guessed at.
    let udp = VnetHdr { gso_type: 5, ..hdr };
    let (action, _) = from_pod_a_offloaded(&tables(Encap::Vxlan), &frame, udp);
    assert_eq!(action, Outbound::Drop(DropReason::BadOffload));
}

#[test]
fn partial_checksums_are_finished_before_a_tunnel() {
    let (mut frame, _) = pod_a_super_frame("10.65.2.7", 100, 1);
    // What the pod's kernel leaves in the field: the pseudo-header sum.
    let pseudo = packet::sum_words(&frame[26..34], 6 + 120);
    frame[50..52].copy_from_slice(&packet::fold(pseudo).to_be_bytes());
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::NONE
    };
    // Framed for the packet socket, IPIP keeps the checksum partial, its offsets moved
    // by the headers in front (Ethernet 14 + outer IPv4 20 - the pod's Ethernet 14).
    let (action, _) = from_pod_a_offloaded(&tables(Encap::Ipip), &frame, hdr);
    let Outbound::ToPeerIpip {
        offload,
        framed: true,
        ..
    } = action
    else {
        panic!("{action:?}");
    };
    assert_eq!(
        offload,
        VnetHdr {
            csum_start: 54,
            hdr_len: 20,
            ..hdr
        }
    );
    // Through the raw socket, it is finished here.
    let mut raw = tables(Encap::Ipip);
    raw.peers[0].next_hop_mac = None;
    let (action, buf) = from_pod_a_offloaded(&raw, &frame, hdr);
    let Outbound::ToPeerIpip {
        frame: packet,
        tso: None,
        framed: false,
        ..
    } = action
    else {
        panic!("{action:?}");
    };
    let inner = &buf.slice(packet)[20..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&inner[12..20]);
    pseudo.extend_from_slice(&[0, 6, 0, 120]);
    pseudo.extend_from_slice(&inner[20..]);
    assert_eq!(checksum(&pseudo), 0, "TCP checksum completed");

    let bad = VnetHdr {
        csum_start: 1000,
        ..hdr
    };
    let (action, _) = from_pod_a_offloaded(&raw, &frame, bad);
    assert_eq!(action, Outbound::Drop(DropReason::BadOffload));
}

#[test]
fn unencapsulated_goes_to_the_peers_underlay_mac_once_resolved() {
    let frame = pod_a_sends("10.65.2.7", 64, true, 10);
    let (action, buf, _) = from_pod_a(&tables(Encap::None), &frame);
    let Outbound::ToPeerEthernet { frame, .. } = action else {
        panic!("expected an underlay frame, got {action:?}");
    };
    let eth = EthernetFrame::new_checked(buf.slice(frame)).unwrap();
    assert_eq!((eth.dst(), eth.src()), (PEER_MAC, NODE_MAC));

    let unresolved = pod_a_sends("10.65.3.7", 64, true, 10);
    let (action, _, _) = from_pod_a(&tables(Encap::None), &unresolved);
    assert_eq!(action, Outbound::Drop(DropReason::NeighborUnresolved));
}

#[test]
fn a_pod_may_only_send_from_its_own_address() {
    let pkt = ipv4_packet("10.65.1.3", "10.65.2.7", 64, true, 10);
    let frame = eth_frame(GATEWAY_MAC, POD_A_MAC, ETHERTYPE_IPV4, &pkt);
    let (action, _, _) = from_pod_a(&tables(Encap::Vxlan), &frame);
    assert_eq!(action, Outbound::Drop(DropReason::SpoofedSource));
}

fn icmp_reply(action: &Outbound, scratch: &[u8]) -> (DropReason, u8, u8, u32) {
    let Outbound::DropWithIcmp { reason, reply_len } = *action else {
        panic!("expected an ICMP error, got {action:?}");
    };
    let eth = EthernetFrame::new_checked(&scratch[..reply_len]).unwrap();
    assert_eq!(eth.dst(), POD_A_MAC);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.checksum_ok());
    assert_eq!(ip.protocol(), IPPROTO_ICMP);
    assert_eq!(ip.dst(), self::ip("10.65.1.2"));
    let icmp = ip.payload();
    assert_eq!(checksum(icmp), 0);
    let rest = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]);
    (reason, icmp[0], icmp[1], rest)
}

#[test]
fn ttl_expiry_answers_time_exceeded() {
    let (action, _, scratch) = from_pod_a(
        &tables(Encap::Vxlan),
        &pod_a_sends("10.65.2.7", 1, true, 10),
    );
    assert_eq!(
        icmp_reply(&action, &scratch),
        (DropReason::TtlExceeded, 11, 0, 0)
    );
}

#[test]
fn no_route_answers_net_unreachable_and_blackhole_drops_silently() {
    let t = tables(Encap::Vxlan);
    let (action, _, scratch) = from_pod_a(&t, &pod_a_sends("8.8.8.8", 64, true, 10));
    assert_eq!(
        icmp_reply(&action, &scratch),
        (DropReason::NoRoute, 3, 0, 0)
    );
    let (action, _, _) = from_pod_a(&t, &pod_a_sends("10.65.1.40", 64, true, 10));
    assert_eq!(action, Outbound::Drop(DropReason::Blackhole));
}

#[test]
fn df_packets_over_the_route_mtu_get_fragmentation_needed() {
    // A pod MTU above the route's (a misconfigured pod): 1500 bytes of IP do not fit
    // VXLAN's 1450.
    let mut t = tables(Encap::Vxlan);
    t.endpoints[0].as_mut().unwrap().mtu_bytes = 1500;
    let frame = pod_a_sends("10.65.2.7", 64, true, 1500 - 40);
    let (action, _, scratch) = from_pod_a(&t, &frame);
    assert_eq!(
        icmp_reply(&action, &scratch),
        (DropReason::FragmentationNeeded, 3, 4, 1450)
    );
    let no_df = pod_a_sends("10.65.2.7", 64, false, 1500 - 40);
    assert_eq!(
        from_pod_a(&t, &no_df).0,
        Outbound::Drop(DropReason::TooBigToForward)
    );
}

#[test]
fn unsupported_and_malformed_frames_are_named_drops() {
    let t = tables(Encap::Vxlan);
    let ipv6 = eth_frame(
        [0x33, 0x33, 0, 0, 0, 1],
        POD_A_MAC,
        ETHERTYPE_IPV6,
        &[0x60; 40],
    );
    assert_eq!(from_pod_a(&t, &ipv6).0, Outbound::Drop(DropReason::Ipv6));
    assert_eq!(
        from_pod_a(&t, &[0u8; 10]).0,
        Outbound::Drop(DropReason::MalformedEthernet)
    );
    let mut bad_ihl = pod_a_sends("10.65.2.7", 64, true, 10);
    bad_ihl[14] = 0x44;
    assert_eq!(
        from_pod_a(&t, &bad_ihl).0,
        Outbound::Drop(DropReason::MalformedIpv4)
    );
    let mut bad_len = pod_a_sends("10.65.2.7", 64, true, 10);
    bad_len[16..18].copy_from_slice(&9000u16.to_be_bytes());
    assert_eq!(
        from_pod_a(&t, &bad_len).0,
        Outbound::Drop(DropReason::MalformedIpv4)
    );
    let mut bad_sum = pod_a_sends("10.65.2.7", 64, true, 10);
    bad_sum[24] ^= 0xff;
    assert_eq!(
        from_pod_a(&t, &bad_sum).0,
        Outbound::Drop(DropReason::BadChecksum)
    );
    let garbage_arp = eth_frame(packet::BROADCAST_MAC, POD_A_MAC, ETHERTYPE_ARP, &[0xab; 28]);
    assert_eq!(
        from_pod_a(&t, &garbage_arp).0,
        Outbound::Drop(DropReason::MalformedArp)
    );
    let oversize = pod_a_sends("10.65.2.7", 64, true, 1500);
    assert_eq!(
        from_pod_a(&t, &oversize).0,
        Outbound::Drop(DropReason::Oversize)
    );
}

/// The UDP payload a peer's VXLAN sends for a packet to pod a.
fn vxlan_payload(vni: u32, inner_dst_mac: Mac) -> Vec<u8> {
    let pkt = ipv4_packet("10.65.2.7", "10.65.1.2", 63, true, 100);
    let mut out = vec![0u8; VXLAN_HEADER_LEN];
    emit_vxlan(&mut out, vni);
    out.extend(eth_frame(inner_dst_mac, PEER_VTEP, ETHERTYPE_IPV4, &pkt));
    out
}

#[test]
fn vxlan_is_accepted_only_from_known_vteps_on_our_vni() {
    let t = tables(Encap::Vxlan);
    let good = vxlan_payload(4096, OUR_VTEP);
    let mut buf = received(&good);
    let action = from_vxlan(&t, ip("192.168.0.2"), &mut buf);
    let Inbound::ToPod {
        endpoint: 0, frame, ..
    } = action
    else {
        panic!("expected delivery to pod a, got {action:?}");
    };
    let eth = EthernetFrame::new_checked(buf.slice(frame)).unwrap();
    assert_eq!((eth.dst(), eth.src()), (POD_A_MAC, GATEWAY_MAC));
    assert_eq!(Ipv4Packet::new_checked(eth.payload()).unwrap().ttl(), 62);

    let mut stranger = received(&good);
    assert_eq!(
        from_vxlan(&t, ip("192.168.0.99"), &mut stranger),
        Inbound::Drop(DropReason::UnknownTunnelSource)
    );
    // node-c is a known host but has no VTEP.
    let mut no_vtep = received(&good);
    assert_eq!(
        from_vxlan(&t, ip("192.168.0.3"), &mut no_vtep),
        Inbound::Drop(DropReason::UnknownTunnelSource)
    );
    let mut wrong_vni = received(&vxlan_payload(7, OUR_VTEP));
    assert_eq!(
        from_vxlan(&t, ip("192.168.0.2"), &mut wrong_vni),
        Inbound::Drop(DropReason::WrongVni)
    );
    let mut wrong_mac = received(&vxlan_payload(4096, PEER_VTEP));
    assert_eq!(
        from_vxlan(&t, ip("192.168.0.2"), &mut wrong_mac),
        Inbound::Drop(DropReason::NotForVtep)
    );
}

#[test]
fn a_vxlan_super_frame_leaves_through_the_underlay_tap_whole() {
    let t = tables(Encap::Vxlan);
    let (frame, hdr) = pod_a_super_frame("10.65.2.7", 1360, 20);
    let (action, mut buf) = from_pod_a_offloaded(&t, &frame, hdr);
    let Outbound::ToPeerVxlan {
        dst,
        flow,
        payload,
        tso,
    } = action
    else {
        panic!("{action:?}");
    };
    let via = VxlanUnderlay {
        tap_mac: [0x02, 0, 0, 0, 0, 0x99],
        src: t.local.underlay_ip,
        port: t.local.vxlan_port,
    };
    let (range, tunnel) =
        vxlan_underlay_frame(&mut buf, payload.clone(), via, dst, flow, tso).unwrap();
    assert_eq!(range.end, payload.end);
    assert_eq!(range.len(), VXLAN_UNDERLAY_PREFIX + payload.len());
    let out = buf.slice(range);
    let eth = EthernetFrame::new_checked(out).unwrap();
    assert_eq!((eth.dst(), eth.ethertype()), (via.tap_mac, ETHERTYPE_IPV4));
    let outer = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(outer.checksum_ok());
    assert_eq!(
        (outer.src(), outer.dst()),
        (ip("192.168.0.1"), ip("192.168.0.2"))
    );
    assert_eq!(outer.protocol(), IPPROTO_UDP);
    assert_eq!(outer.total_len(), out.len() - ETH_HEADER_LEN);
    let udp = outer.payload();
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4789);
    assert_eq!(
        usize::from(u16::from_be_bytes([udp[4], udp[5]])),
        8 + payload.len()
    );
    assert_eq!(packet::parse_vxlan(&udp[8..]), Some(4096));
    // Inner IPv4 at 64 and TCP (20 bytes) at 84; the pod's segment size kept.
    assert_eq!(tunnel.inner_nh_offset, 64);
    assert_eq!(
        usize::from(tunnel.inner_nh_offset) - ETH_HEADER_LEN,
        Encap::Vxlan.overhead_bytes() as usize,
        "the contract's VXLAN overhead (pod MTUs) is what the outer IPv4 packet adds here"
    );
    assert_eq!(tunnel.outer_th_offset, 34);
    assert_eq!(tunnel.hdr.csum_start, 84);
    assert_eq!(tunnel.hdr.hdr_len, 104);
    assert_eq!(tunnel.hdr.gso_size, 1360);
    assert_eq!(
        tunnel.hdr.gso_type,
        offload::TunnelVnetHdr::GSO_UDP_TUNNEL_IPV4 | VnetHdr::GSO_TCPV4
    );
    assert_eq!(
        out[64..84],
        buf.slice(payload.start + 22..payload.start + 42)[..]
    );

    // A plain packet goes the same way with no offload asked for.
    let (action, mut buf) =
        from_pod_a_offloaded(&t, &pod_a_sends("10.65.2.7", 64, true, 100), VnetHdr::NONE);
    let Outbound::ToPeerVxlan {
        dst,
        flow,
        payload,
        tso: None,
    } = action
    else {
        panic!("{action:?}");
    };
    let (_, tunnel) = vxlan_underlay_frame(&mut buf, payload, via, dst, flow, None).unwrap();
    assert_eq!(tunnel, offload::TunnelVnetHdr::default());
}

#[test]
fn a_vxlan_super_frame_received_whole_goes_to_the_pod_whole() {
    let t = tables(Encap::Vxlan);
    // 10 segments of 1410 bytes behind one IPv4/TCP header: larger than the 1450 bytes a
    // VXLAN pod packet may have on a 1500-byte underlay.
    let mut pkt = ipv4_packet("10.65.2.7", "10.65.1.2", 63, true, 10 * 1410);
    pkt[20 + 12] = 5 << 4;
    let mut payload = vec![0u8; VXLAN_HEADER_LEN];
    emit_vxlan(&mut payload, 4096);
    payload.extend(eth_frame(OUR_VTEP, PEER_VTEP, ETHERTYPE_IPV4, &pkt));
    let mut buf = received(&payload);
    let action = from_vxlan(&t, ip("192.168.0.2"), &mut buf);
    let Inbound::ToPod {
        endpoint: 0,
        offload,
        frame,
    } = action
    else {
        panic!("{action:?}");
    };
    assert_eq!(frame.len(), ETH_HEADER_LEN + pkt.len());
    assert_eq!(offload.gso_kind(), VnetHdr::GSO_TCPV4);
    assert!(offload.needs_csum());
    assert_eq!(offload.gso_size, 1450 - 40);
    assert_eq!(offload::segment_count(buf.slice(frame), offload), 10);

    // Not TCP: an oversize packet stays one, too big for the pod.
    let mut udp = pkt.clone();
    udp[9] = 17;
    udp[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&udp[..20]);
    udp[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut payload = vec![0u8; VXLAN_HEADER_LEN];
    emit_vxlan(&mut payload, 4096);
    payload.extend(eth_frame(OUR_VTEP, PEER_VTEP, ETHERTYPE_IPV4, &udp));
    let mut buf = received(&payload);
    assert_eq!(
        from_vxlan(&t, ip("192.168.0.2"), &mut buf),
        Inbound::Drop(DropReason::FragmentationNeeded)
    );
}

#[test]
fn ipip_from_a_known_node_is_delivered_and_transit_is_refused() {
    let t = tables(Encap::Ipip);
    let encapsulated = |inner_dst: &str, outer_src: &str| {
        received(&ipip_packet(outer_src, "10.65.2.7", inner_dst))
    };
    let mut buf = encapsulated("10.65.1.3", "192.168.0.2");
    let action = from_ipip(&t, &mut buf);
    let Inbound::ToPod {
        endpoint: 1,
        frame,
        offload: VnetHdr::NONE,
    } = action
    else {
        panic!("expected delivery to pod b, got {action:?}");
    };
    let eth = EthernetFrame::new_checked(buf.slice(frame)).unwrap();
    assert_eq!(
        (eth.dst(), eth.src(), eth.ethertype()),
        (POD_B_MAC, GATEWAY_MAC, ETHERTYPE_IPV4)
    );
    let inner = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((inner.src(), inner.ttl()), (ip("10.65.2.7"), 62));

    let mut stranger = encapsulated("10.65.1.3", "192.168.0.77");
    assert_eq!(
        from_ipip(&t, &mut stranger),
        Inbound::Drop(DropReason::UnknownTunnelSource)
    );
    let mut transit = encapsulated("10.65.3.9", "192.168.0.2");
    assert_eq!(
        from_ipip(&t, &mut transit),
        Inbound::Drop(DropReason::NotLocal)
    );
}

#[test]
fn ipip_frames_from_the_packet_socket_keep_a_partial_checksum_and_check_the_outer_header() {
    let t = tables(Encap::Ipip);
    let pkt = ipip_packet("192.168.0.2", "10.65.2.7", "10.65.1.3");
    let frame = eth_frame(NODE_MAC, PEER_MAC, ETHERTYPE_IPV4, &pkt);
    // As a sender on this host leaves it: the inner TCP checksum partial, offsets from the
    // outer Ethernet header (14 + 20 + 20 = 54).
    let partial = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        hdr_len: 74,
        csum_start: 54,
        csum_offset: 16,
        ..VnetHdr::NONE
    };
    let mut buf = received(&frame);
    buf.set_offload(partial);
    let action = from_ipip_frame(&t, &mut buf);
    let Inbound::ToPod {
        endpoint: 1,
        frame: delivered,
        offload,
    } = action
    else {
        panic!("expected delivery to pod b, got {action:?}");
    };
    // Now counted from the pod's Ethernet header: 20 bytes fewer in front.
    assert_eq!((offload.csum_start, offload.hdr_len), (34, 54));
    let eth = EthernetFrame::new_checked(buf.slice(delivered)).unwrap();
    assert_eq!(eth.dst(), POD_B_MAC);

    // The same without offload metadata: delivered as it is.
    let mut plain = received(&frame);
    assert!(matches!(
        from_ipip_frame(&t, &mut plain),
        Inbound::ToPod {
            offload: VnetHdr::NONE,
            ..
        }
    ));
    // A corrupt outer header, metadata that points in front of the inner packet, and a
    // super-frame (no sender makes IPIP ones) are refused.
    let mut corrupt = frame.clone();
    corrupt[ETH_HEADER_LEN + 8] ^= 1; // TTL
    assert_eq!(
        from_ipip_frame(&t, &mut received(&corrupt)),
        Inbound::Drop(DropReason::BadChecksum)
    );
    // A fragment (here the first: MF set) is not taken apart as if it held a whole packet.
    let mut fragment = frame.clone();
    fragment[ETH_HEADER_LEN + 6] = 0x20; // MF, offset 0 (DF cleared)
    let mut outer = Ipv4Packet::new_unchecked(&mut fragment[ETH_HEADER_LEN..]);
    outer.fill_checksum();
    assert_eq!(
        from_ipip_frame(&t, &mut received(&fragment)),
        Inbound::Drop(DropReason::IpipFragment)
    );
    for bad in [
        VnetHdr {
            csum_start: 10,
            ..partial
        },
        VnetHdr {
            gso_type: VnetHdr::GSO_TCPV4,
            gso_size: 1000,
            ..partial
        },
    ] {
        let mut buf = received(&frame);
        buf.set_offload(bad);
        assert_eq!(
            from_ipip_frame(&t, &mut buf),
            Inbound::Drop(DropReason::BadOffload)
        );
    }
}

/// The UDP payload of a VXLAN frame from node-b's VTEP carrying `inner_src` → `inner_dst`.
fn vxlan_packet(inner_src: &str, inner_dst: &str) -> Vec<u8> {
    let pkt = ipv4_packet(inner_src, inner_dst, 63, true, 100);
    let mut out = vec![0u8; VXLAN_HEADER_LEN];
    emit_vxlan(&mut out, 4096);
    out.extend(eth_frame(OUR_VTEP, PEER_VTEP, ETHERTYPE_IPV4, &pkt));
    out
}

#[test]
fn tunnel_traffic_must_come_from_the_node_owning_its_inner_source() {
    let delivered = |action: Inbound| matches!(action, Inbound::ToPod { endpoint: 0, .. });
    let spoofed = Inbound::Drop(DropReason::TunnelSpoofedSource);
    // node-b (192.168.0.2) owns 10.65.2.0/26 only; node-c (192.168.0.3) 10.65.3.0/26.
    let t = tables(Encap::Ipip);
    let ipip = |outer: &str, inner_src: &str| {
        from_ipip(
            &t,
            &mut received(&ipip_packet(outer, inner_src, "10.65.1.2")),
        )
    };
    assert!(delivered(ipip("192.168.0.2", "10.65.2.7")));
    assert!(delivered(ipip("192.168.0.3", "10.65.3.7")));
    for (outer, inner_src, what) in [
        ("192.168.0.2", "10.65.1.3", "a pod of this node"),
        (
            "192.168.0.2",
            "10.65.1.40",
            "an unused address of this node's block",
        ),
        ("192.168.0.2", "10.65.3.7", "a pod of another node"),
        ("192.168.0.3", "10.65.2.7", "a pod of another node"),
        ("192.168.0.2", "8.8.8.8", "no pod at all"),
        (
            "192.168.0.2",
            "192.168.0.2",
            "the sender's underlay address",
        ),
    ] {
        assert_eq!(ipip(outer, inner_src), spoofed, "IPIP from {outer}: {what}");
    }

    let t = tables(Encap::Vxlan);
    let vxlan = |inner_src: &str| {
        from_vxlan(
            &t,
            ip("192.168.0.2"),
            &mut received(&vxlan_packet(inner_src, "10.65.1.2")),
        )
    };
    assert!(delivered(vxlan("10.65.2.7")));
    for inner_src in ["10.65.1.3", "10.65.1.40", "10.65.3.7", "8.8.8.8"] {
        assert_eq!(vxlan(inner_src), spoofed, "VXLAN from {inner_src}");
    }
}

#[test]
fn tunnels_are_accepted_only_while_a_route_uses_them() {
    let ipip = |t: &Tables, outer: &str| {
        from_ipip(
            t,
            &mut received(&ipip_packet(outer, "10.65.2.7", "10.65.1.2")),
        )
    };
    let vxlan = |t: &Tables, outer: &str| {
        from_vxlan(
            t,
            ip(outer),
            &mut received(&vxlan_packet("10.65.2.7", "10.65.1.2")),
        )
    };
    let vxlan_only = tables(Encap::Vxlan);
    assert_eq!(
        ipip(&vxlan_only, "192.168.0.2"),
        Inbound::Drop(DropReason::IpipNotInUse)
    );
    assert!(matches!(
        vxlan(&vxlan_only, "192.168.0.2"),
        Inbound::ToPod { .. }
    ));
    let ipip_only = tables(Encap::Ipip);
    assert_eq!(
        vxlan(&ipip_only, "192.168.0.2"),
        Inbound::Drop(DropReason::VxlanNotInUse)
    );
    assert!(matches!(
        ipip(&ipip_only, "192.168.0.2"),
        Inbound::ToPod { .. }
    ));
    let unencapsulated = tables(Encap::None);
    assert_eq!(
        ipip(&unencapsulated, "192.168.0.2"),
        Inbound::Drop(DropReason::IpipNotInUse)
    );
    assert_eq!(
        vxlan(&unencapsulated, "192.168.0.2"),
        Inbound::Drop(DropReason::VxlanNotInUse)
    );
    // Strangers are strangers whatever is in use.
    assert_eq!(
        ipip(&vxlan_only, "192.168.0.77"),
        Inbound::Drop(DropReason::UnknownTunnelSource)
    );
    assert_eq!(
        vxlan(&ipip_only, "192.168.0.77"),
        Inbound::Drop(DropReason::UnknownTunnelSource)
    );
}

#[test]
fn unencapsulated_underlay_traffic_for_a_local_pod_is_delivered_else_ignored() {
    let t = tables(Encap::None);
    let to_pod = ipv4_packet("10.65.2.7", "10.65.1.2", 63, true, 10);
    let mut buf = received(&eth_frame(NODE_MAC, PEER_MAC, ETHERTYPE_IPV4, &to_pod));
    assert!(matches!(
        from_underlay_ethernet(&t, &mut buf),
        Inbound::ToPod { endpoint: 0, .. }
    ));
    let elsewhere = ipv4_packet("10.65.2.7", "192.168.0.1", 63, true, 10);
    let mut buf = received(&eth_frame(NODE_MAC, PEER_MAC, ETHERTYPE_IPV4, &elsewhere));
    assert_eq!(from_underlay_ethernet(&t, &mut buf), Inbound::Ignore);
}

proptest! {
    /// No frame, however mangled, panics any entry point.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), src in any::<u32>()) {
        let t = tables(Encap::Vxlan);
        let mut scratch = [0u8; SCRATCH_LEN];
        let _ = from_pod(&t, 0, &mut received(&bytes), &mut scratch);
        let _ = from_vxlan(&t, Ipv4Addr::from(src), &mut received(&bytes));
        let _ = from_vxlan(&t, ip("192.168.0.2"), &mut received(&bytes));
        let _ = from_ipip(&t, &mut received(&bytes));
        let _ = from_underlay_ethernet(&t, &mut received(&bytes));
    }

    /// Mangling any one byte of a valid pod frame never panics either.
    #[test]
    fn mutated_valid_frames_never_panic(at in 0usize..114, value in any::<u8>(), encap in 0usize..3) {
        let t = tables(Encap::ALL[encap]);
        let mut frame = pod_a_sends("10.65.2.7", 64, true, 60);
        frame[at] = value;
        let mut scratch = [0u8; SCRATCH_LEN];
        let _ = from_pod(&t, 0, &mut received(&frame), &mut scratch);
    }
}

/// The kernel side of the host path TAP in [`host_tables`].
const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];

/// The fixture node with a host path: the routes `state::build::host_path_routes` adds for pool
/// 10.65.0.0/16 and peers node-b (192.168.0.2) and node-c.
fn host_tables(encap: Encap) -> Tables {
    let mut t = tables(encap);
    t.local.host_path = Some(crate::tables::HostPath {
        mac: HOST_MAC,
        mtu_bytes: 1500,
    });
    t.fib.insert(crate::fib::Prefix::DEFAULT, RouteTarget::Host);
    t.fib
        .insert(prefix("10.65.0.0/16"), RouteTarget::PoolUnrouted);
    t.fib.insert(
        prefix("192.168.0.2/32"),
        RouteTarget::RemoteNode { peer: 0, encap },
    );
    t
}

/// What the node's kernel writes to the host path TAP.
fn host_sends(src: &str, dst: &str) -> Vec<u8> {
    let pkt = ipv4_packet(src, dst, 64, true, 100);
    eth_frame(GATEWAY_MAC, HOST_MAC, ETHERTYPE_IPV4, &pkt)
}

fn from_host_frame(tables: &Tables, frame: &[u8]) -> (Outbound, PacketBuf, [u8; SCRATCH_LEN]) {
    let mut buf = received(frame);
    let mut scratch = [0u8; SCRATCH_LEN];
    let action = from_host(tables, &mut buf, &mut scratch);
    (action, buf, scratch)
}

#[test]
fn pods_reach_the_node_and_the_world_through_the_host_path() {
    let t = host_tables(Encap::Vxlan);
    for dst in ["8.8.8.8", "192.168.0.1", "172.16.0.9"] {
        let (action, buf, _) = from_pod_a(&t, &pod_a_sends(dst, 64, true, 100));
        let Outbound::ToHost { frame, .. } = action else {
            panic!("{dst}: expected the host path, got {action:?}");
        };
        let eth = EthernetFrame::new_checked(buf.slice(frame)).unwrap();
        assert_eq!((eth.dst(), eth.src()), (HOST_MAC, GATEWAY_MAC));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!((ip.src(), ip.ttl()), (self::ip("10.65.1.2"), 63));
        assert!(ip.checksum_ok());
    }
}

#[test]
fn inside_a_pool_without_an_owner_is_still_unreachable_and_blocks_still_blackhole() {
    let t = host_tables(Encap::Vxlan);
    let (action, _, scratch) = from_pod_a(&t, &pod_a_sends("10.65.9.1", 64, true, 10));
    assert_eq!(
        icmp_reply(&action, &scratch),
        (DropReason::NoRoute, 3, 0, 0)
    );
    let (action, _, _) = from_pod_a(&t, &pod_a_sends("10.65.1.40", 64, true, 10));
    assert_eq!(action, Outbound::Drop(DropReason::Blackhole));
}

#[test]
fn another_nodes_own_address_is_reached_through_its_tunnel() {
    let t = host_tables(Encap::Ipip);
    let (action, _, _) = from_pod_a(&t, &pod_a_sends("192.168.0.2", 64, true, 100));
    assert!(
        matches!(action, Outbound::ToPeerIpip { dst, .. } if dst == ip("192.168.0.2")),
        "{action:?}"
    );
}

#[test]
fn the_node_reaches_its_pods_and_remote_pods_from_the_host_path() {
    let t = host_tables(Encap::Vxlan);
    let (action, buf, _) = from_host_frame(&t, &host_sends("192.168.0.1", "10.65.1.2"));
    let Outbound::ToPod {
        endpoint: 0, frame, ..
    } = action
    else {
        panic!("expected delivery to pod a, got {action:?}");
    };
    let eth = EthernetFrame::new_checked(buf.slice(frame)).unwrap();
    assert_eq!((eth.dst(), eth.src()), (POD_A_MAC, GATEWAY_MAC));
    let (action, _, _) = from_host_frame(&t, &host_sends("192.168.0.1", "10.65.2.7"));
    assert!(matches!(action, Outbound::ToPeerVxlan { .. }), "{action:?}");
    // Routed by the kernel: replies to masqueraded traffic come from anywhere outside.
    let (action, _, _) = from_host_frame(&t, &host_sends("8.8.8.8", "10.65.1.3"));
    assert!(
        matches!(action, Outbound::ToPod { endpoint: 1, .. }),
        "{action:?}"
    );
}

#[test]
fn the_host_path_may_not_send_as_a_pod() {
    let t = host_tables(Encap::Vxlan);
    // A local pod, a local block's unused address, a remote block, a pool without owner.
    for src in ["10.65.1.3", "10.65.1.40", "10.65.2.7", "10.65.9.9"] {
        let (action, _, _) = from_host_frame(&t, &host_sends(src, "10.65.1.2"));
        assert_eq!(
            action,
            Outbound::Drop(DropReason::HostSpoofedSource),
            "source {src}"
        );
    }
    // Another node's own address is not a pod's.
    let (action, _, _) = from_host_frame(&t, &host_sends("192.168.0.2", "10.65.1.2"));
    assert!(matches!(action, Outbound::ToPod { .. }), "{action:?}");
}

#[test]
fn the_host_path_answers_arp_refuses_hairpins_and_gets_errors_from_the_gateway() {
    let t = host_tables(Encap::Vxlan);
    let mut arp = [0u8; ARP_IPV4_LEN];
    emit_arp(
        &mut arp,
        ARP_REQUEST,
        (HOST_MAC, ip("192.168.0.1")),
        ([0; 6], packet::POD_GATEWAY),
    );
    let frame = eth_frame(packet::BROADCAST_MAC, HOST_MAC, ETHERTYPE_ARP, &arp);
    let (action, _, scratch) = from_host_frame(&t, &frame);
    let Outbound::Reply { len } = action else {
        panic!("expected an ARP reply, got {action:?}");
    };
    let eth = EthernetFrame::new_checked(&scratch[..len]).unwrap();
    assert_eq!((eth.dst(), eth.src()), (HOST_MAC, GATEWAY_MAC));

    let (action, _, _) = from_host_frame(&t, &host_sends("192.168.0.1", "8.8.8.8"));
    assert_eq!(action, Outbound::Drop(DropReason::HostHairpin));

    let (action, _, scratch) = from_host_frame(&t, &host_sends("192.168.0.1", "10.65.9.1"));
    let Outbound::DropWithIcmp {
        reason: DropReason::NoRoute,
        reply_len,
    } = action
    else {
        panic!("expected net-unreachable, got {action:?}");
    };
    let eth = EthernetFrame::new_checked(&scratch[..reply_len]).unwrap();
    assert_eq!(eth.dst(), HOST_MAC);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(
        (ip.src(), ip.dst()),
        (packet::POD_GATEWAY, self::ip("192.168.0.1"))
    );
}

#[test]
fn tunnels_carry_a_peer_kernels_traffic_to_pods_and_to_this_node_only() {
    let t = host_tables(Encap::Ipip);
    let mut to_pod = received(&ipip_packet("192.168.0.2", "192.168.0.2", "10.65.1.2"));
    assert!(
        matches!(
            from_ipip(&t, &mut to_pod),
            Inbound::ToPod { endpoint: 0, .. }
        ),
        "a peer's kernel reaches a local pod"
    );
    let mut to_node = received(&ipip_packet("192.168.0.2", "10.65.2.7", "192.168.0.1"));
    assert!(
        matches!(from_ipip(&t, &mut to_node), Inbound::ToHost { .. }),
        "a peer's pod reaches this node"
    );
    let mut beyond = received(&ipip_packet("192.168.0.2", "10.65.2.7", "8.8.8.8"));
    assert_eq!(
        from_ipip(&t, &mut beyond),
        Inbound::Drop(DropReason::NotLocal)
    );
    let mut spoofed = received(&ipip_packet("192.168.0.2", "192.168.0.1", "10.65.1.2"));
    assert_eq!(
        from_ipip(&t, &mut spoofed),
        Inbound::Drop(DropReason::TunnelSpoofedSource)
    );
}

#[test]
fn with_a_host_path_the_underlay_gives_pods_only_the_other_nodes_traffic() {
    let t = host_tables(Encap::None);
    let from = |src: &str| {
        let pkt = ipv4_packet(src, "10.65.1.2", 63, true, 10);
        let mut buf = received(&eth_frame(NODE_MAC, PEER_MAC, ETHERTYPE_IPV4, &pkt));
        from_underlay_ethernet(&t, &mut buf)
    };
    assert!(matches!(
        from("10.65.2.7"),
        Inbound::ToPod { endpoint: 0, .. }
    ));
    assert!(matches!(
        from("192.168.0.2"),
        Inbound::ToPod { endpoint: 0, .. }
    ));
    // The world's traffic to pods goes through the kernel (and the host path).
    assert_eq!(from("172.16.0.9"), Inbound::Ignore);
    assert_eq!(from("10.65.1.3"), Inbound::Ignore);
}
