//! The IPv4 route table (FIB): longest-prefix match that workers read without locks while
//! the state thread publishes new versions.
//!
//! - [`Prefix`]: a normalized IPv4 prefix, parsed from and shown as CIDR text.
//! - [`Fib`]: a persistent 8-8-8-8 multibit trie (the top 16 bits a direct table in 256
//!   chunks). `lookup` is at most four dependent loads; `Clone` is O(1); an update copies
//!   only the nodes on its path.
//! - [`PublishedFib`]: the current version behind an `ArcSwap`; a worker takes one
//!   snapshot per batch.
//!
//! This module knows nothing of what a route means: values are opaque (`V: Clone`), and
//! nothing here allocates or locks on the lookup path.

mod prefix;
mod published;
mod trie;

pub use prefix::{Prefix, PrefixError};
pub use published::PublishedFib;
pub use trie::{Fib, Iter};

#[cfg(test)]
mod tests;
