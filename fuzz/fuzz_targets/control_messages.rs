//! Bytes from a controller, as the dataplane's control socket receives them: frames are
//! decoded, every message is applied to the desired state, and tables are built from it.
//! Also the other direction's decoding (what control reads from a dataplane).
#![no_main]

use std::collections::{BTreeMap, HashMap};

use libfuzzer_sys::fuzz_target;
use tapwire_dataplane::state::{build_tables, Desired, Underlay};
use tapwire_proto::frame::{read_messages, FrameDecoder};
use tapwire_proto::{FromDataplane, ToDataplane};

fuzz_target!(|data: &[u8]| {
    // Read as the daemon's reader thread reads its socket.
    let mut desired = Desired::default();
    let _ = read_messages(data, |message: ToDataplane| {
        if let Some(payload) = message.payload {
            // An error leaves the state as it was; either way it must stay usable.
            let _ = desired.apply(payload);
        }
        true
    });
    let underlay = Underlay {
        ip: [192, 168, 0, 1].into(),
        mac: [2, 0, 0, 0, 0, 1],
        mtu_bytes: 1500,
        vxlan_port: tapwire_proto::VXLAN_PORT,
        host_path: None,
    };
    let _ = build_tables(&desired, &underlay, &BTreeMap::new(), &HashMap::new());

    let mut decoder = FrameDecoder::new();
    decoder.push(data);
    while let Ok(Some(_)) = decoder.next::<FromDataplane>() {}
});
