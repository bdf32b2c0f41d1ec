//! The per-packet decision cost: `forward::from_pod` and the decapsulation entry points on
//! the example tables, for each delivery path. This is the CPU the forwarder spends per
//! packet outside syscalls (parse, checks, LPM lookup, header rewrite/encapsulation); and
//! the checksum's per-byte cost, which software segmentation and coalescing pay.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tapwire_dataplane::fixtures::{ip, pod_a_sends, received, tables};
use tapwire_dataplane::forward::{self, Outbound, PacketBuf, SCRATCH_LEN};
use tapwire_dataplane::tables::Encap;

/// Refills `buf` with `frame` and runs `decide` on it: the refill is part of what a
/// receive does, and keeps each iteration deciding the same untouched frame. `dropped`
/// tells whether an action is a drop (the bench frame must not be).
fn bench_path<A>(
    c: &mut Criterion,
    name: &str,
    frame: &[u8],
    mut decide: impl FnMut(&mut PacketBuf) -> A,
    dropped: impl Fn(&A) -> bool,
) {
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Elements(1));
    let mut buf = received(frame);
    assert!(
        !dropped(&decide(&mut buf)),
        "{name}: the bench frame must be forwarded"
    );
    group.bench_function(name, |b| {
        b.iter(|| {
            buf.receive_area()[..frame.len()].copy_from_slice(frame);
            buf.set_received(frame.len());
            black_box(decide(&mut buf))
        })
    });
    group.finish();
}

fn from_pod(c: &mut Criterion) {
    let mut scratch = [0u8; SCRATCH_LEN];
    for (name, encap, dst) in [
        ("pod_to_local_pod", Encap::Vxlan, "10.65.1.3"),
        ("pod_to_remote_none", Encap::None, "10.65.2.7"),
        ("pod_to_remote_ipip", Encap::Ipip, "10.65.2.7"),
        ("pod_to_remote_vxlan", Encap::Vxlan, "10.65.2.7"),
    ] {
        let t = tables(encap);
        let frame = pod_a_sends(dst, 64, true, 1400 - 40);
        bench_path(
            c,
            name,
            &frame,
            |buf| forward::from_pod(&t, 0, buf, &mut scratch),
            Outbound::is_drop,
        );
    }
}

fn decap(c: &mut Criterion) {
    // Encapsulate one frame with the forwarder itself, then feed the result to the
    // receiving side: what node B receives is exactly what node A sent.
    let t = tables(Encap::Vxlan);
    let mut scratch = [0u8; SCRATCH_LEN];
    let mut buf = received(&pod_a_sends("10.65.2.7", 64, true, 1400 - 40));
    let Outbound::ToPeerVxlan { payload, .. } = forward::from_pod(&t, 0, &mut buf, &mut scratch)
    else {
        panic!("fixture frame not encapsulated");
    };
    // The UDP payload as the socket delivers it, turned into what node-b sends this
    // node: from a pod of node-b's block (the tunnel RPF check drops any other inner
    // source) to a local pod.
    let mut vxlan = buf.slice(payload).to_vec();
    vxlan[8..14].copy_from_slice(&t.local.vtep_mac);
    let inner_ip = 8 + 14;
    vxlan[inner_ip + 12..inner_ip + 16].copy_from_slice(&[10, 65, 2, 7]);
    vxlan[inner_ip + 16..inner_ip + 20].copy_from_slice(&[10, 65, 1, 3]);
    fix_ipv4_checksum(&mut vxlan[inner_ip..inner_ip + 20]);
    let peer = ip("192.168.0.2");
    bench_path(
        c,
        "vxlan_to_local_pod",
        &vxlan,
        |buf| forward::from_vxlan(&t, peer, buf),
        forward::Inbound::is_drop,
    );
}

fn fix_ipv4_checksum(header: &mut [u8]) {
    header[10..12].copy_from_slice(&[0, 0]);
    let sum = tapwire_dataplane::packet::checksum(header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// The one's-complement sum over a segment's payload and over a whole super-frame: the
/// per-byte work of software segmentation (TX) and of verifying before coalescing (RX).
fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum");
    for len in [1448usize, 65_536] {
        let data: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("sum_words_{len}"), |b| {
            b.iter(|| black_box(tapwire_dataplane::packet::sum_words(black_box(&data), 0)))
        });
    }
    group.finish();
}

criterion_group!(benches, from_pod, decap, checksum);
criterion_main!(benches);
