//! A frame a pod (or the node, through the host path) writes to its TAP queue, with any
//! virtio-net header, against tables of each encapsulation; what the forwarder decides is
//! then carried through the offload steps the worker runs (segmentation into a tunnel,
//! checksum completion).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_dataplane::fixtures::{received, tables};
use tapwire_dataplane::forward::{from_host, from_pod, Outbound, SCRATCH_LEN};
use tapwire_dataplane::offload::{
    self, Outer, SegmentChecksum, Segments, VnetHdr, VNET_HDR_LEN,
};
use tapwire_dataplane::tables::Encap;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((header, frame)) = rest.split_first_chunk::<VNET_HDR_LEN>() else {
        return;
    };
    if frame.len() > tapwire_dataplane::forward::MAX_FRAME {
        return;
    }
    let encap = [Encap::None, Encap::Ipip, Encap::Vxlan][usize::from(selector % 3)];
    let tables = tables(encap);
    let mut buf = received(frame);
    buf.set_offload(VnetHdr::parse(header));
    let mut scratch = [0u8; SCRATCH_LEN];
    let action = if selector & 0x80 == 0 {
        from_pod(
            &tables,
            u32::from(selector >> 2 & 1),
            &mut buf,
            &mut scratch,
        )
    } else {
        from_host(&tables, &mut buf, &mut scratch)
    };
    let mut segments = Segments::new();
    match action {
        Outbound::ToPeerIpip {
            frame,
            tso: Some(tso),
            framed,
            ..
        } => {
            let (outer, checksum) = match framed {
                true => (Outer::Ipv4 { at: 14 }, SegmentChecksum::Partial),
                false => (Outer::Ipv4 { at: 0 }, SegmentChecksum::Full),
            };
            let _ = offload::segment_tcpv4(
                buf.slice(frame),
                outer,
                tso.inner_ip,
                usize::from(tso.mss),
                checksum,
                &mut segments,
            );
        }
        Outbound::ToPeerVxlan {
            payload,
            tso: Some(tso),
            ..
        } => {
            let _ = offload::segment_tcpv4(
                buf.slice(payload),
                Outer::Opaque,
                tso.inner_ip,
                usize::from(tso.mss),
                SegmentChecksum::Full,
                &mut segments,
            );
        }
        Outbound::ToPod { frame, offload, .. }
        | Outbound::ToHost { frame, offload }
        | Outbound::ToPeerEthernet { frame, offload } => {
            let mut copy = buf.slice(frame).to_vec();
            let _ = offload::segment_count(&copy, offload);
            let _ = offload::complete_checksum(&mut copy, offload);
        }
        _ => {}
    }
});
