//! BGP with BIRD, as Calico's `bird` networking backend does it: the documents
//! ([`model`]: `BGPConfiguration`, `BGPPeer`, and the `node.toml` settings), the label
//! [`selector`]s peers use, BIRD's configuration rendered from cluster state ([`config`],
//! what Calico's confd does), BIRD's control socket ([`birdc`]) and what `show protocols`
//! says about the sessions ([`status`]).
//!
//! Everything here is sans-IO except [`birdc::Birdc`], one connection to BIRD's socket.
//! Running BIRD and reading the routes it learned is the agent's job
//! (`crate::agent::bird`); turning learned routes into the dataplane's routes is
//! [`crate::routes`]'s.

pub mod birdc;
pub mod config;
pub mod model;
pub mod selector;
pub mod status;
