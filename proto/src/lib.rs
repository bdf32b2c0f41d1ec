//! The control ↔ dataplane protocol of tapwire: protobuf messages shaped like Felix's
//! external dataplane driver messages (package `felix`), and the length framing that
//! carries them. Sans-IO: bytes in, messages out; no sockets, no threads, no clock (the
//! blocking [`FrameReader`] reads whatever [`std::io::Read`] its caller hands it).
//!
//! The network facts both sides build on are defined here once ([`network`]): the pod
//! gateway and its MAC, the VXLAN port, [`Encap`] and its overhead, [`EncapMode`] as
//! messages spell it, the VTEP MAC derivation; and the endpoint key
//! ([`WorkloadEndpointId::key`]).
//!
//! # Framing
//!
//! Both directions carry a stream of frames. A frame is an 8-byte **little-endian**
//! unsigned length followed by exactly that many bytes of one protobuf message
//! ([`frame`]). A declared length above [`frame::MAX_FRAME_BYTES`] is rejected as soon
//! as the header is seen, before anything is buffered for it, and [`frame::encode`]
//! refuses to write a message the peer would reject.
//!
//! # Who sends what
//!
//! * control → dataplane: [`ToDataplane`]. On every (re)connect control sends a
//!   [`ConfigUpdate`] first (keys in [`config`]), then the full desired state (host
//!   metadata, IPAM pools, VTEPs, routes, workload endpoints, encapsulation), then
//!   [`InSync`]; incremental updates follow. [`CountersRequest`] asks for statistics,
//!   [`TraceRequest`] arms a packet trace ([`trace`]).
//! * dataplane → control: [`FromDataplane`]. A [`ProcessStatusUpdate`] heartbeat, a
//!   [`WorkloadEndpointStatusUpdate`] once an endpoint's queues are attached,
//!   [`DataplaneInSync`] once a snapshot is applied, [`CountersReply`] answering a
//!   [`CountersRequest`], and a trace's [`TraceRecord`]s and [`TraceDone`].
//!
//! Every envelope carries a `sequence_number`; its `payload` is a oneof. A payload this
//! crate does not know (Felix's policy, IP-set, service, WireGuard messages) decodes as
//! `payload: None` and must be skipped, not treated as an error.
//!
//! # Field numbers
//!
//! Where Felix has a message, its field and oneof numbers are Felix's (so a Felix could
//! drive tapwire through a pipe-to-socket relay); Felix fields tapwire does not use are
//! simply omitted, which protobuf decoding tolerates. tapwire-only messages and fields
//! use numbers ≥ 1000, or ride in a workload endpoint's `annotations` map (for example
//! [`NETNS_ANNOTATION`]).
//!
//! # Example
//!
//! ```
//! use tapwire_proto::{frame, to_dataplane::Payload, FrameDecoder, InSync, ToDataplane};
//!
//! let mut wire = Vec::new();
//! let sent = ToDataplane { sequence_number: 1, payload: Some(Payload::InSync(InSync {})) };
//! frame::encode(&sent, &mut wire)?;
//!
//! let mut decoder = FrameDecoder::new();
//! decoder.push(&wire[..3]); // bytes arrive in pieces
//! assert_eq!(decoder.next::<ToDataplane>()?, None);
//! decoder.push(&wire[3..]);
//! assert_eq!(decoder.next::<ToDataplane>()?, Some(sent));
//! # Ok::<(), tapwire_proto::FrameError>(())
//! ```

#![deny(unsafe_code)]

pub mod config;
pub mod frame;
mod messages;
pub mod network;
pub mod text;
pub mod trace;

pub use frame::{FrameDecoder, FrameError, FrameReader, MAX_FRAME_BYTES};
pub use messages::*;
pub use network::{derive_vtep_mac, Encap, EncapMode, GATEWAY_MAC, POD_GATEWAY, VXLAN_PORT};
pub use trace::{
    TraceAction, TraceDone, TraceIngress, TracePacket, TraceRecord, TraceRequest, TraceRoute,
    MAX_TRACE_PACKETS,
};

/// The [`WorkloadEndpoint::annotations`] key whose value is the path of the pod's
/// network namespace (e.g. `/var/run/netns/cni-1234`), where the pod's TAP lives.
pub const NETNS_ANNOTATION: &str = "tapwire.io/netns";
