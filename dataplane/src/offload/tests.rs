use super::*;
use crate::packet::{emit_ethernet, Ipv4Packet, Ipv4Repr, GATEWAY_MAC, IPPROTO_IPIP};

const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// An Ethernet + IPv4 + TCP (with a 12-byte timestamp option) frame carrying `payload`,
/// with a correct TCP checksum unless `partial`, in which case the field holds the
/// pseudo-header sum as a pod's kernel leaves it under checksum offload.
fn tcp_frame(seq: u32, flags: u8, payload: &[u8], partial: bool) -> Vec<u8> {
    let thl = 32;
    let mut f = vec![0u8; ETH_HEADER_LEN + 20 + thl + payload.len()];
    emit_ethernet(&mut f, GATEWAY_MAC, POD_MAC, ETHERTYPE_IPV4);
    Ipv4Repr {
        src: "10.65.0.2".parse().unwrap(),
        dst: "10.65.1.3".parse().unwrap(),
        protocol: IPPROTO_TCP,
        ttl: 64,
        dont_fragment: true,
        payload_len: thl + payload.len(),
    }
    .emit(&mut f[ETH_HEADER_LEN..]);
    let tcp = ETH_HEADER_LEN + 20;
    f[tcp..tcp + 4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // 40000 -> 5201
    f[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    f[tcp + 8..tcp + 12].copy_from_slice(&77u32.to_be_bytes());
    f[tcp + 12] = (thl as u8 / 4) << 4;
    f[tcp + 13] = flags;
    f[tcp + 14..tcp + 16].copy_from_slice(&512u16.to_be_bytes());
    f[tcp + 20..tcp + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
    f[tcp + thl..].copy_from_slice(payload);
    let tcp_len = (thl + payload.len()) as u32;
    let pseudo = sum_words(&f[ETH_HEADER_LEN + 12..ETH_HEADER_LEN + 20], 6 + tcp_len);
    if partial {
        put_be16(&mut f, tcp + 16, fold(pseudo));
    } else {
        let sum = !fold(sum_words(&f[tcp..], pseudo));
        put_be16(&mut f, tcp + 16, sum);
    }
    f
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn assemble(frame: &[u8], segs: &Segments) -> Vec<Vec<u8>> {
    (0..segs.len())
        .map(|i| {
            let (h, p) = segs.segment(i);
            [h, &frame[p]].concat()
        })
        .collect()
}

#[test]
fn vnet_header_round_trips_little_endian() {
    let bytes = [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
    let hdr = VnetHdr::parse(&bytes);
    assert_eq!(hdr.gso_size, 1448);
    assert_eq!(hdr.gso_kind(), VnetHdr::GSO_TCPV4);
    assert!(hdr.is_gso() && hdr.needs_csum());
    assert_eq!(hdr.to_bytes(), bytes);
    assert!(!VnetHdr::NONE.is_gso());
}

#[test]
fn completing_a_partial_checksum_gives_the_full_one() {
    let data = payload(999);
    let full = tcp_frame(1, 0x18, &data, false);
    let mut partial = tcp_frame(1, 0x18, &data, true);
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::NONE
    };
    complete_checksum(&mut partial, hdr).unwrap();
    assert_eq!(partial, full);
    let bad = VnetHdr {
        csum_start: 2000,
        ..hdr
    };
    assert_eq!(
        complete_checksum(&mut partial, bad),
        Err(OffloadError::BadChecksumOffsets)
    );
}

#[test]
fn segmentation_makes_valid_mss_sized_packets_that_coalesce_back() {
    let data = payload(10_000);
    let seq0 = 0xffff_f000; // wraps inside the run
    let frame = tcp_frame(seq0, 0x18 | 0x80, &data, true); // PSH|ACK|CWR
    let mut plain = frame.clone();
    plain[ETH_HEADER_LEN + 20 + 13] = TCP_PSH | TCP_ACK;
    let mut segs = Segments::new();
    segment_tcpv4(
        &frame,
        Outer::Opaque,
        ETH_HEADER_LEN,
        1448,
        SegmentChecksum::Full,
        &mut segs,
    )
    .unwrap();
    assert_eq!(segs.len(), 7);
    let packets = assemble(&frame, &segs);
    let mut carried = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let ip = Ipv4Packet::new_checked(&p[ETH_HEADER_LEN..]).unwrap();
        assert!(ip.checksum_ok(), "segment {i} IPv4 checksum");
        assert_eq!(ip.total_len(), p.len() - ETH_HEADER_LEN);
        assert!(tcp_checksum_ok(p), "segment {i} TCP checksum");
        let tcp = &p[34..];
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        assert_eq!(seq, seq0.wrapping_add(1448 * i as u32));
        let last = i == packets.len() - 1;
        assert_eq!(tcp[13] & TCP_PSH != 0, last, "PSH only on the last");
        assert_eq!(tcp[13] & TCP_CWR != 0, i == 0, "CWR only on the first");
        carried.extend_from_slice(&p[66..]);
    }
    assert_eq!(carried, data);

    // CWR on the first segment ends the run there, as in Linux's GRO.
    let mut gro = Coalescer::new();
    assert_eq!(gro.push(3, &packets[0], false), Push::Held);
    assert_eq!(gro.push(3, &packets[1], false), Push::FlushFirst);
    gro.clear();

    segment_tcpv4(
        &plain,
        Outer::Opaque,
        ETH_HEADER_LEN,
        1448,
        SegmentChecksum::Full,
        &mut segs,
    )
    .unwrap();
    for p in &assemble(&plain, &segs) {
        assert_eq!(gro.push(3, p, false), Push::Held);
    }
    assert_eq!(gro.pending_segments(), 7);
    let (endpoint, hdr, merged) = gro.pending().unwrap();
    assert_eq!(endpoint, 3);
    assert_eq!(hdr.gso_kind(), VnetHdr::GSO_TCPV4);
    assert_eq!(hdr.gso_size, 1448);
    assert_eq!((hdr.csum_start, hdr.csum_offset, hdr.hdr_len), (34, 16, 66));
    let mut merged = merged.to_vec();
    assert_eq!(&merged[66..], &data[..]);
    complete_checksum(&mut merged, hdr).unwrap();
    assert!(
        tcp_checksum_ok(&merged),
        "merged frame's completed checksum"
    );
    assert!(Ipv4Packet::new_checked(&merged[14..])
        .unwrap()
        .checksum_ok());
}

#[test]
fn ipip_segments_carry_their_own_outer_header() {
    let data = payload(3000);
    let inner = tcp_frame(5, 0x10, &data, true);
    // Outer IPv4 in place of the Ethernet header, as forward lays IPIP out.
    let mut frame = vec![0u8; 20];
    frame.extend_from_slice(&inner[ETH_HEADER_LEN..]);
    Ipv4Repr {
        src: "192.168.0.1".parse().unwrap(),
        dst: "192.168.0.2".parse().unwrap(),
        protocol: IPPROTO_IPIP,
        ttl: 64,
        dont_fragment: true,
        payload_len: frame.len() - 20,
    }
    .emit(&mut frame);
    let mut segs = Segments::new();
    segment_tcpv4(
        &frame,
        Outer::Ipv4 { at: 0 },
        20,
        1400,
        SegmentChecksum::Full,
        &mut segs,
    )
    .unwrap();
    assert_eq!(segs.len(), 3);
    for p in assemble(&frame, &segs) {
        let outer = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(outer.checksum_ok());
        assert_eq!(outer.total_len(), p.len());
        let inner = Ipv4Packet::new_checked(&p[20..]).unwrap();
        assert!(inner.checksum_ok());
        assert_eq!(inner.total_len(), p.len() - 20);
    }
}

#[test]
fn segmentation_refuses_what_it_cannot_split() {
    let frame = tcp_frame(1, 0x10, &payload(100), true);
    let mut segs = Segments::new();
    assert_eq!(
        segment_tcpv4(
            &frame,
            Outer::Opaque,
            14,
            0,
            SegmentChecksum::Full,
            &mut segs
        ),
        Err(OffloadError::MalformedGso)
    );
    assert_eq!(
        segment_tcpv4(
            &frame[..40],
            Outer::Opaque,
            14,
            1448,
            SegmentChecksum::Full,
            &mut segs
        ),
        Err(OffloadError::MalformedGso)
    );
    let big = tcp_frame(1, 0x10, &payload(60_000), true);
    assert_eq!(
        segment_tcpv4(
            &big,
            Outer::Opaque,
            14,
            100,
            SegmentChecksum::Full,
            &mut segs
        ),
        Err(OffloadError::TooManySegments)
    );
}

#[test]
fn coalescing_stops_at_gaps_other_flows_and_bad_checksums() {
    let a = tcp_frame(1000, 0x10, &payload(100), false);
    let gap = tcp_frame(1200, 0x10, &payload(100), false);
    let mut gro = Coalescer::new();
    assert_eq!(gro.push(1, &a, false), Push::Held);
    assert_eq!(gro.push(1, &gap, false), Push::FlushFirst, "sequence gap");
    let next = tcp_frame(1100, 0x10, &payload(100), false);
    assert_eq!(gro.push(2, &next, false), Push::FlushFirst, "another pod");
    let mut corrupt = next.clone();
    corrupt[100] ^= 0xff;
    assert_eq!(
        gro.push(1, &corrupt, false),
        Push::FlushFirst,
        "bad checksum"
    );
    assert_eq!(gro.push(1, &next, false), Push::Held);
    // A lone segment goes out untouched, with no offload metadata.
    gro.clear();
    assert_eq!(gro.push(1, &a, false), Push::Held);
    let (_, hdr, frame) = gro.pending().unwrap();
    assert_eq!(hdr, VnetHdr::NONE);
    assert_eq!(frame, &a[..]);
    gro.clear();
    assert!(gro.is_empty());
    assert_eq!(gro.push(1, &a[..30], false), Push::Bypass, "not TCP/IPv4");
}

#[test]
fn copying_and_summing_agree_with_summing() {
    for len in [0, 1, 7, 8, 9, 1447, 1448] {
        let src = payload(len);
        let mut dst = vec![0u8; len];
        assert_eq!(
            fold(copy_and_sum(&mut dst, &src, 12345)),
            fold(sum_words(&src, 12345)),
            "length {len}"
        );
        assert_eq!(dst, src);
    }
}

#[test]
fn tunnel_header_lays_out_the_vxlan_offsets_the_kernel_reads() {
    // Outer Ethernet + IPv4 (34), UDP (8), VXLAN (8), inner Ethernet (14): the inner IPv4
    // header at 64 and TCP at 84, as in the frame checked on Linux 6.18 (gso_type 0x21).
    let hdr = TunnelVnetHdr::vxlan(34, 64, 20, 32, Some((1398, false))).unwrap();
    let bytes = hdr.to_bytes();
    assert_eq!(bytes.len(), 24);
    assert_eq!(bytes[0], VnetHdr::F_NEEDS_CSUM);
    assert_eq!(bytes[1], 0x21);
    assert_eq!(u16::from_le_bytes([bytes[2], bytes[3]]), 84 + 32); // hdr_len
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 1398); // gso_size
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 84); // csum_start
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 16); // csum_offset
    assert_eq!(bytes[10..20], [0; 10]); // num_buffers and hash fields
    assert_eq!(u16::from_le_bytes([bytes[20], bytes[21]]), 34); // outer_th_offset
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 64); // inner_nh_offset

    let ecn = TunnelVnetHdr::vxlan(34, 64, 20, 32, Some((1398, true))).unwrap();
    assert_eq!(ecn.hdr.gso_type, 0xa1);
    // A plain frame: nothing to do for the kernel.
    let plain = TunnelVnetHdr::vxlan(34, 64, 20, 20, None).unwrap();
    assert_eq!(plain.to_bytes(), [0; 24]);
}

#[test]
fn a_whole_tcp_super_frame_is_recognised_and_nothing_else() {
    // 10 segments' worth of payload behind one header, checksum partial: a super-frame.
    let big = tcp_frame(1000, TCP_ACK, &payload(10 * 1398), true);
    let hdr = whole_tcpv4(&big, 1450).unwrap();
    assert_eq!(hdr.gso_kind(), VnetHdr::GSO_TCPV4);
    assert!(hdr.needs_csum());
    assert_eq!(hdr.gso_size, 1450 - 20 - 32);
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16));
    assert_eq!(hdr.hdr_len, 34 + 32);
    assert_eq!(segment_count(&big, hdr), 10);
    // CWR on the first segment is the ECN bit.
    let cwr = tcp_frame(1000, TCP_ACK | TCP_CWR, &payload(3000), true);
    assert_eq!(
        whole_tcpv4(&cwr, 1450).unwrap().gso_type,
        VnetHdr::GSO_TCPV4 | VnetHdr::GSO_ECN
    );

    // Within the MTU: an ordinary packet.
    let small = tcp_frame(1000, TCP_ACK, &payload(1398), false);
    assert_eq!(whole_tcpv4(&small, 1450), None);
    // Truncated (total length beyond the buffer), not TCP, a fragment: not ours to mark.
    assert_eq!(whole_tcpv4(&big[..big.len() - 1], 1450), None);
    let mut udp = big.clone();
    udp[ETH_HEADER_LEN + 9] = 17;
    assert_eq!(whole_tcpv4(&udp, 1450), None);
    let mut fragment = big.clone();
    fragment[ETH_HEADER_LEN + 6] = 0x20; // MF
    assert_eq!(whole_tcpv4(&fragment, 1450), None);
    // An MTU too small for the headers gives no segment size.
    assert_eq!(whole_tcpv4(&big, 50), None);
    assert_eq!(whole_tcpv4(&big[..10], 1450), None);
}

#[test]
fn malformed_headers_count_as_one_packet_and_are_neither_split_nor_merged() {
    let gso = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: 100,
        ..VnetHdr::NONE
    };
    let good = tcp_frame(1, TCP_ACK, &payload(1000), true);
    assert_eq!(segment_count(&good, gso), 10);
    let tcp = ETH_HEADER_LEN + 20;
    let mut segs = Segments::new();
    let mut gro = Coalescer::new();
    // A data offset below 5 words, one beyond the segment, a bad IHL, and a buffer cut
    // inside the TCP header.
    let mut short_offset = good.clone();
    short_offset[tcp + 12] = 4 << 4;
    let mut long_offset = tcp_frame(1, TCP_ACK, &[], true);
    long_offset[tcp + 12] = 15 << 4;
    let mut bad_ihl = good.clone();
    bad_ihl[ETH_HEADER_LEN] = 0x44;
    let mut cut = good[..tcp + 10].to_vec();
    cut[ETH_HEADER_LEN + 3] = 30; // total length 30: ten bytes of TCP header
    for (name, frame) in [
        ("short data offset", &short_offset[..]),
        ("data offset beyond the segment", &long_offset[..]),
        ("bad IHL", &bad_ihl[..]),
        ("cut TCP header", &cut[..]),
    ] {
        assert_eq!(segment_count(frame, gso), 1, "{name}");
        assert_eq!(
            segment_tcpv4(
                frame,
                Outer::Opaque,
                ETH_HEADER_LEN,
                100,
                SegmentChecksum::Full,
                &mut segs
            ),
            Err(OffloadError::MalformedGso),
            "{name}"
        );
        assert_eq!(whole_tcpv4(frame, 100), None, "{name}");
        assert_eq!(gro.push(1, frame, false), Push::Bypass, "{name}");
    }
    // An IPIP outer header that does not end where the inner packet starts.
    assert_eq!(
        segment_tcpv4(
            &good,
            Outer::Ipv4 { at: 0 },
            ETH_HEADER_LEN,
            100,
            SegmentChecksum::Full,
            &mut segs
        ),
        Err(OffloadError::MalformedGso)
    );
}

/// What a worker wrote to pods, in order: (endpoint, vnet header, frame).
type Written = Vec<(u32, VnetHdr, Vec<u8>)>;

fn offer(gro: &mut Coalescer, written: &mut Written, endpoint: u32, frame: &[u8], hdr: VnetHdr) {
    gro.offer(endpoint, frame, hdr, |e, h, f| {
        written.push((e, h, f.to_vec()))
    });
}

fn flush(gro: &mut Coalescer, written: &mut Written) {
    gro.flush(|e, h, f| written.push((e, h, f.to_vec())));
}

#[test]
fn a_run_is_held_until_the_batch_ends_then_written_once() {
    let data = payload(3 * 1000);
    let mut gro = Coalescer::new();
    let mut written = Written::new();
    for i in 0..3 {
        let seg = tcp_frame(
            1 + 1000 * i as u32,
            TCP_ACK,
            &data[i * 1000..(i + 1) * 1000],
            false,
        );
        offer(&mut gro, &mut written, 4, &seg, VnetHdr::NONE);
    }
    assert!(written.is_empty(), "nothing written mid-run");
    flush(&mut gro, &mut written);
    assert_eq!(written.len(), 1);
    let (endpoint, hdr, frame) = &written[0];
    assert_eq!(
        (*endpoint, hdr.gso_kind(), hdr.gso_size),
        (4, VnetHdr::GSO_TCPV4, 1000)
    );
    assert_eq!(segment_count(frame, *hdr), 3);
    assert_eq!(&frame[66..], &data[..]);
    // Flushing again writes nothing.
    flush(&mut gro, &mut written);
    assert_eq!(written.len(), 1);
    assert!(gro.is_empty());
}

#[test]
fn frames_that_cannot_join_go_out_after_the_held_run_in_order() {
    let a = tcp_frame(1000, TCP_ACK, &payload(100), false);
    let b = tcp_frame(1100, TCP_ACK, &payload(100), false);
    let gap = tcp_frame(5000, TCP_ACK, &payload(100), false);
    let mut gro = Coalescer::new();
    let mut written = Written::new();
    offer(&mut gro, &mut written, 1, &a, VnetHdr::NONE);
    offer(&mut gro, &mut written, 1, &b, VnetHdr::NONE);
    // A gap: the run of two goes out, the new segment is held in its place.
    offer(&mut gro, &mut written, 1, &gap, VnetHdr::NONE);
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].1.gso_size, 100);
    assert_eq!(gro.pending_segments(), 1);
    // Not TCP: the held segment first, untouched, then the frame as it is.
    let arp_ish = &a[..30];
    offer(&mut gro, &mut written, 2, arp_ish, VnetHdr::NONE);
    assert_eq!(written.len(), 3);
    assert_eq!(written[1], (1, VnetHdr::NONE, gap.clone()));
    assert_eq!(written[2], (2, VnetHdr::NONE, arp_ish.to_vec()));
    assert!(gro.is_empty());
    // A frame with offload metadata of its own (here a super-frame) passes as it is,
    // after what was held.
    offer(&mut gro, &mut written, 1, &a, VnetHdr::NONE);
    let gso = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: 50,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::NONE
    };
    offer(&mut gro, &mut written, 3, &b, gso);
    assert_eq!(written.len(), 5);
    assert_eq!(written[3], (1, VnetHdr::NONE, a.clone()));
    assert_eq!(written[4], (3, gso, b.clone()));
    assert!(gro.is_empty());
    // With nothing held, such a frame is simply written.
    offer(&mut gro, &mut written, 3, &b, gso);
    assert_eq!(written.len(), 6);
}

/// The offload header of one segment with a partial TCP checksum, as a sender on this
/// host leaves it (IPv4 header without options).
const PARTIAL: VnetHdr = VnetHdr {
    flags: VnetHdr::F_NEEDS_CSUM,
    gso_type: VnetHdr::GSO_NONE,
    hdr_len: 66,
    gso_size: 0,
    csum_start: 34,
    csum_offset: 16,
};

#[test]
fn segments_with_a_partial_checksum_merge_unverified_and_stay_partial_alone() {
    let data = payload(3 * 1000);
    let seg = |i: usize| {
        tcp_frame(
            1 + 1000 * i as u32,
            TCP_ACK,
            &data[i * 1000..(i + 1) * 1000],
            true,
        )
    };
    let mut gro = Coalescer::new();
    let mut written = Written::new();
    // A partial segment, a full one and a partial one again make one run.
    offer(&mut gro, &mut written, 4, &seg(0), PARTIAL);
    let mut full = seg(1);
    complete_checksum(&mut full, PARTIAL).unwrap();
    offer(&mut gro, &mut written, 4, &full, VnetHdr::NONE);
    offer(&mut gro, &mut written, 4, &seg(2), PARTIAL);
    assert!(written.is_empty());
    flush(&mut gro, &mut written);
    let (endpoint, hdr, merged) = written.pop().unwrap();
    assert_eq!(
        (endpoint, hdr.gso_size, segment_count(&merged, hdr)),
        (4, 1000, 3)
    );
    assert_eq!(&merged[66..], &data[..]);

    // Alone, a partial segment keeps its mark: the pod's kernel finishes nothing else.
    offer(&mut gro, &mut written, 4, &seg(0), PARTIAL);
    flush(&mut gro, &mut written);
    assert_eq!(written, [(4, PARTIAL, seg(0))]);

    // The mark only counts where it names the TCP checksum.
    written.clear();
    let elsewhere = VnetHdr {
        csum_start: 30,
        ..PARTIAL
    };
    offer(&mut gro, &mut written, 4, &seg(0), elsewhere);
    assert_eq!(written, [(4, elsewhere, seg(0))]);
    assert!(gro.is_empty());
}

#[test]
fn ipip_segments_behind_an_ethernet_header_carry_partial_checksums_that_complete_right() {
    let data = payload(4000);
    let inner = tcp_frame(7, TCP_ACK | TCP_PSH, &data, true);
    // Ethernet, outer IPv4, then the inner IPv4 packet.
    let mut frame = vec![0u8; ETH_HEADER_LEN + 20];
    emit_ethernet(
        &mut frame,
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 1],
        ETHERTYPE_IPV4,
    );
    frame.extend_from_slice(&inner[ETH_HEADER_LEN..]);
    Ipv4Repr {
        src: "192.168.0.1".parse().unwrap(),
        dst: "192.168.0.2".parse().unwrap(),
        protocol: IPPROTO_IPIP,
        ttl: 64,
        dont_fragment: true,
        payload_len: frame.len() - ETH_HEADER_LEN - 20,
    }
    .emit(&mut frame[ETH_HEADER_LEN..]);
    let mut segs = Segments::new();
    let outer = Outer::Ipv4 { at: ETH_HEADER_LEN };
    segment_tcpv4(&frame, outer, 34, 1400, SegmentChecksum::Partial, &mut segs).unwrap();
    assert_eq!(segs.len(), 3);
    let hdr = segs.partial_checksum();
    assert_eq!((hdr.csum_start, hdr.csum_offset, hdr.hdr_len), (54, 16, 86));
    let mut carried = Vec::new();
    for mut p in assemble(&frame, &segs) {
        assert_eq!(&p[..ETH_HEADER_LEN], &frame[..ETH_HEADER_LEN]);
        let outer = Ipv4Packet::new_checked(&p[ETH_HEADER_LEN..]).unwrap();
        assert!(outer.checksum_ok());
        assert_eq!(outer.total_len(), p.len() - ETH_HEADER_LEN);
        // What the device (or the receiver, for a virtual link) does with the mark.
        complete_checksum(&mut p, hdr).unwrap();
        assert!(
            tcp_checksum_ok(&p[20..]),
            "inner TCP checksum once completed"
        );
        carried.extend_from_slice(&p[86..]);
    }
    assert_eq!(carried, data);
    // The outer header must end where the inner one starts.
    assert_eq!(
        segment_tcpv4(&frame, outer, 30, 1400, SegmentChecksum::Partial, &mut segs),
        Err(OffloadError::MalformedGso)
    );
}

#[test]
fn udp_gso_sends_respect_the_kernels_limits() {
    let sends = |count, len| udp_gso_sends(count, len).collect::<Vec<_>>();
    assert!(sends(0, 1500).is_empty());
    // A lone datagram goes without a segment size.
    assert_eq!(
        sends(1, 1500),
        [UdpGsoSend {
            segments: 0..1,
            gso_size: None
        }]
    );
    // 1448 + 86 bytes of headers: 42 datagrams fit in 65,507 bytes.
    let segment = 1448 + 86;
    let cut = sends(100, segment);
    assert_eq!(
        cut.iter().map(|s| s.segments.clone()).collect::<Vec<_>>(),
        [0..42, 42..84, 84..100]
    );
    assert!(cut.iter().all(|s| s.gso_size == Some(segment as u16)));
    assert!(cut
        .iter()
        .all(|s| s.segments.len() * segment <= MAX_UDP_GSO_BYTES));
    // Small datagrams: the segment count is the limit. A last send of one goes plain.
    let small = sends(2 * MAX_UDP_GSO_SEGMENTS + 1, 100);
    assert_eq!(small.len(), 3);
    assert_eq!(small[0].segments, 0..MAX_UDP_GSO_SEGMENTS);
    assert_eq!(small[2].gso_size, None);
    // Datagrams larger than one send allows still go, one per send.
    let huge = sends(3, MAX_UDP_GSO_BYTES + 1);
    assert_eq!(huge.len(), 3);
    assert!(huge
        .iter()
        .all(|s| s.segments.len() == 1 && s.gso_size.is_none()));
}
