//! What arrives from the underlay: a VXLAN datagram (from any outer source), an IPIP
//! packet from the raw socket or an IPIP frame from the packet socket (with any
//! virtio-net header), or an unencapsulated Ethernet frame, against tables of each
//! encapsulation.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use tapwire_dataplane::fixtures::{received, tables};
use tapwire_dataplane::forward::{
    from_ipip, from_ipip_frame, from_underlay_ethernet, from_vxlan, Inbound,
};
use tapwire_dataplane::offload::{self, VnetHdr, VNET_HDR_LEN};
use tapwire_dataplane::tables::Encap;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((source, frame)) = rest.split_first_chunk::<4>() else {
        return;
    };
    if frame.len() > tapwire_dataplane::forward::MAX_FRAME {
        return;
    }
    let tables = tables([Encap::None, Encap::Ipip, Encap::Vxlan][usize::from(selector % 3)]);
    let mut buf = received(frame);
    let action = match selector >> 2 & 3 {
        0 => from_vxlan(&tables, Ipv4Addr::from(*source), &mut buf),
        1 => from_ipip(&tables, &mut buf),
        2 => {
            let Some((vnet, frame)) = frame.split_first_chunk::<VNET_HDR_LEN>() else {
                return;
            };
            buf = received(frame);
            buf.set_offload(VnetHdr::parse(vnet));
            from_ipip_frame(&tables, &mut buf)
        }
        _ => from_underlay_ethernet(&tables, &mut buf),
    };
    if let Inbound::ToPod { frame, offload, .. } | Inbound::ToHost { frame, offload } = action {
        let mut copy = buf.slice(frame).to_vec();
        let _ = offload::segment_count(&copy, offload);
        let _ = offload::complete_checksum(&mut copy, offload);
    }
});
