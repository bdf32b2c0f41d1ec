//! The documents of tapwire's cluster state: plain serde data shaped like calicoctl's
//! (`apiVersion: projectcalico.org/v3`), and the node agent's TOML configuration.
//!
//! What users apply ([`IpPool`], [`Node`]; the BGP documents [`BgpPeer`] and
//! [`BgpConfiguration`] live in [`crate::bgp`]) and what the control plane writes
//! ([`WorkloadEndpoint`], the IPAM documents [`IpamBlock`], [`BlockAffinity`],
//! [`IpamHandle`]) live here, with their validation. Specs reject unknown keys, naming the
//! key, so a typo is an error rather than a silently ignored setting.
//!
//! This module owns parsing and checking only: it does no I/O except
//! [`NodeConfig::load`] reading its one file. Storage is [`crate::datastore`]'s job,
//! address assignment [`crate::ipam`]'s and route computation [`crate::routes`]'s.
//!
//! One file per concern: `error` ([`ModelError`]), `meta` ([`Metadata`], the
//! [`Resource`] trait, object names), `mac`, `net` (CIDRs), `pool`, `node`, `endpoint`,
//! `ipam`, `document` (parsing and batch checks) and `config` (node.toml).

pub use tapwire_proto::text::{format_rfc3339, parse_rfc3339};

pub use crate::bgp::model::{BgpConfiguration, BgpPeer, BirdConfig, NetworkingBackend};

/// Implements [`Resource`] for a document type with a `metadata` field.
macro_rules! resource {
    ($ty:ty, $kind:literal) => {
        impl $crate::model::Resource for $ty {
            const KIND: &'static str = $kind;
            fn metadata(&self) -> &$crate::model::Metadata {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut $crate::model::Metadata {
                &mut self.metadata
            }
        }
    };
}

mod config;
mod document;
mod endpoint;
mod error;
mod ipam;
mod mac;
mod meta;
mod net;
mod node;
mod pool;

pub use config::{
    read_pem, ConfigError, DatastoreConfig, EtcdConfig, NodeConfig, DEFAULT_API_SOCKET,
    DEFAULT_DATAPLANE_SOCKET, DEFAULT_DATASTORE_PATH, DEFAULT_HOST_INTERFACE,
};
pub use document::{
    check_batch, from_document_value, parse_documents, to_document_value, Document, API_VERSION,
};
pub use endpoint::{WorkloadEndpoint, WorkloadEndpointSpec};
pub use error::ModelError;
pub use ipam::{
    AffinityState, BlockAffinity, BlockAffinitySpec, IpamBlock, IpamBlockSpec, IpamHandle,
    IpamHandleSpec,
};
pub use mac::{MacAddr, MacParseError};
pub use meta::{check_object_name, validate_name, Metadata, Resource, MAX_NAME_BYTES};
pub use net::{nets_overlap, parse_cidr, parse_interface_address};
pub use node::{Node, NodeBgpSpec, NodeSpec, NodeStatus, TapwireNodeStatus};
pub use pool::{
    AllowedUse, EncapMode, IpPool, IpPoolSpec, PoolEncap, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
};
