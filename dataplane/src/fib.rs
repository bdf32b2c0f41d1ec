//! The IPv4 route table (FIB): longest-prefix match that workers read without locks while
//! the state thread publishes new versions.
//!
//! - [`Prefix`]: a normalized IPv4 prefix, parsed from and shown as CIDR text.
//! - [`Fib`]: a persistent, popcount-compressed multibit trie. Publish versions of it
//!   (or of the tables holding it) with [`crate::rcu::Rcu`]; a worker reads one version
//!   per batch.
//!
//! # Layout (Poptrie-like, chosen for memory and update cost)
//!
//! - The address space is cut into 1024 *chunks* of a /10, reached through 32 groups of
//!   32 `Arc` pointers. A chunk starts with 256 direct entries, one per /18 (an 18-bit
//!   direct table, as Poptrie uses, split so an update copies 1 KiB of it, not 1 MiB).
//! - Below a direct entry, 6-bit-stride nodes (/18→/24→/30→/32). A node is a 64-bit
//!   bitmap of *run starts* and one `u32` entry per run (a leaf value index or a child
//!   offset): slot *i* is entry `popcount(bitmap & bits 0..=i) - 1`. This merges
//!   Poptrie's two vectors (children, leaf runs) into one, so a /18 holding a single /24
//!   costs five words. Leaves are fully expanded (each holds its slot's longest match),
//!   so a lookup is at most one direct entry plus three nodes, with no backtracking.
//! - Each chunk keeps its own routes (packed into `u64`s, sorted: the RIB an update
//!   needs) and its distinct values; leaves index those values.
//!
//! Why not the alternatives: a plain 16-8-8 layout with 256-bit bitmaps spends about 80
//! bytes on every /16 node, and random tables have one /16 node per route; a flat 2^18
//! direct table (1 MiB) would have to be copied or mutated in place on every update.
//!
//! Updates are copy-on-write per chunk: an insert or remove builds a new chunk in which
//! only the /18 subtrees the prefix covers are re-encoded (the others are copied word for
//! word — offsets inside a subtree are relative), then copies the root and one group (32
//! pointers each). Every other chunk is shared with the previous version, so publishing
//! is cheap and old versions cost only what they do not share.
//!
//! This module knows nothing of what a route means: values are opaque (`V: Clone +
//! PartialEq`), and nothing here allocates, locks or touches an atomic on the lookup path.

mod chunk;
mod prefix;
mod trie;

pub use prefix::{Prefix, PrefixError};
pub use trie::{Fib, Iter};

#[cfg(test)]
mod tests;
