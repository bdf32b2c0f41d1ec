//! The desired state, as control described it, and how it becomes forwarding [`Tables`].
//!
//! `Desired` holds plain data parsed from proto messages (addresses validated here, once,
//! so the hot path never sees a string). [`build_tables`] is a function of the desired
//! state, the attached endpoints and the resolved neighbours: it performs no I/O, which
//! keeps route computation testable without devices.
//!
//! The state thread does not rebuild the FIB on every publish: a [`TablesBuilder`] keeps
//! its [`Fib`] between publishes and applies only the prefixes that changed — the routes
//! `Desired` journals as messages arrive ([`Desired::take_route_changes`]) and the nets of
//! endpoints attached or detached since. Only a change every target depends on (this
//! node's name, the peer list, the IP pools) or a new snapshot from control rebuilds it.
//! Either way the result equals [`build_tables`] on the same inputs.
//!
//! Two halves: `desired` (messages → [`Desired`]) and `build` (desired → [`Tables`]).
//!
//! [`Tables`]: crate::tables::Tables
//! [`Fib`]: crate::fib::Fib

mod build;
mod desired;

pub use build::{build_tables, AttachedEndpoint, FibUpdate, TablesBuilder, Underlay};
pub use desired::{
    parse_mac, Applied, Desired, EndpointSpec, PoolSpec, RouteChanges, RouteSpec, StateError,
    VtepSpec,
};

#[cfg(test)]
mod tests;
