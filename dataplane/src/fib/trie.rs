//! [`Fib`]: the persistent table on top of [`super::chunk`] — 1024 chunks of a /10 in 32
//! groups, plus the few routes shorter than /10.
//!
//! A lookup is group → chunk → direct entry → at most three nodes, every step one array
//! index; the group and chunk pointer arrays (8 KiB) stay in cache. Versions share
//! structure through `Arc`s: `Clone` copies one pointer, an update copies the root
//! (32 pointers), one group (32 pointers) and the one chunk it changes — re-encoding only
//! the /18 subtrees the prefix covers and copying the chunk's other subtrees verbatim.
//! Routes shorter than /10 are kept in a sorted list at the root; each chunk folds the
//! longest one covering it into its leaves, so changing one rebuilds the chunks it covers.

use std::collections::HashSet;
use std::fmt;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::chunk::{unpack, Chunk, CHUNK_LEN};
use super::Prefix;

const GROUPS: usize = 32;
const CHUNKS_PER_GROUP: usize = 32;
/// Batches at least this large are merged chunk by chunk instead of inserted one by one.
const BULK: usize = 64;

fn chunk_index(addr: u32) -> usize {
    (addr >> (32 - CHUNK_LEN)) as usize
}

#[derive(Clone)]
struct Group<V> {
    chunks: [Arc<Chunk<V>>; CHUNKS_PER_GROUP],
}

#[derive(Clone)]
struct Top<V> {
    groups: [Arc<Group<V>>; GROUPS],
    /// Routes shorter than /10, sorted by prefix.
    short: Vec<(Prefix, V)>,
    len: usize,
    /// The chunk every slot without routes shares.
    empty: Arc<Chunk<V>>,
}

impl<V> Top<V> {
    fn chunk(&self, index: usize) -> &Chunk<V> {
        &self.groups[(index / CHUNKS_PER_GROUP) % GROUPS].chunks[index % CHUNKS_PER_GROUP]
    }
}

/// An IPv4 longest-prefix-match table mapping [`Prefix`]es to values.
///
/// A persistent structure: [`Clone`] is O(1) and shares everything; [`Fib::insert`] and
/// [`Fib::remove`] build a new version of one chunk (a /10) and share the rest. The state
/// thread owns one `Fib`, updates it, and publishes clones through [`crate::rcu::Rcu`];
/// readers look up in their version without locks.
pub struct Fib<V> {
    top: Arc<Top<V>>,
}

impl<V> Fib<V> {
    /// An empty table.
    pub fn new() -> Fib<V> {
        let empty = Arc::new(Chunk::empty());
        let group = Arc::new(Group {
            chunks: std::array::from_fn(|_| Arc::clone(&empty)),
        });
        Fib {
            top: Arc::new(Top {
                groups: std::array::from_fn(|_| Arc::clone(&group)),
                short: Vec::new(),
                len: 0,
                empty,
            }),
        }
    }

    /// The number of prefixes in the table.
    pub fn len(&self) -> usize {
        self.top.len
    }

    /// Whether the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.top.len == 0
    }

    /// The value of the longest prefix containing `addr`.
    ///
    /// The hot path: no allocation, no lock, no atomic; two pointer loads to the chunk,
    /// then at most four dependent loads into its encoding and one into its values.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&V> {
        self.lookup_u32(addr.to_bits())
    }

    /// [`Fib::lookup`] for a host-order `u32` address.
    #[inline]
    pub fn lookup_u32(&self, addr: u32) -> Option<&V> {
        let group = &self.top.groups[(addr >> 27) as usize];
        group.chunks[((addr >> 22) & 31) as usize].lookup(addr)
    }

    /// The value stored for exactly `prefix` (no longest-match).
    pub fn get(&self, prefix: &Prefix) -> Option<&V> {
        if prefix.len() < CHUNK_LEN {
            let i = self.find_short(prefix).ok()?;
            return Some(&self.top.short[i].1);
        }
        let chunk = self.top.chunk(chunk_index(prefix.addr_u32()));
        let i = chunk.find(prefix.addr_u32(), prefix.len()).ok()?;
        chunk.values.get(unpack(chunk.routes[i]).2 as usize)
    }

    /// Whether exactly `prefix` is in the table.
    pub fn contains_prefix(&self, prefix: &Prefix) -> bool {
        self.get(prefix).is_some()
    }

    /// Every (prefix, value) in prefix order: by address, a covering prefix before the
    /// prefixes inside it.
    pub fn iter(&self) -> Iter<'_, V> {
        Iter {
            top: &self.top,
            short: 0,
            chunk: 0,
            route: 0,
            remaining: self.top.len,
        }
    }

    /// Heap bytes held by this version: the root, groups and chunks (each `Arc` header
    /// included, chunks shared by several slots counted once), every chunk's encoding,
    /// routes and values, and the short-route list. Allocator bookkeeping is not included.
    /// Structure shared with other versions is counted in each. Walks the whole table:
    /// a diagnostic, not for the hot path.
    pub fn memory_bytes(&self) -> usize {
        let arc = 2 * size_of::<usize>();
        let mut total = size_of::<Self>()
            + arc
            + size_of::<Top<V>>()
            + self.top.short.capacity() * size_of::<(Prefix, V)>();
        let mut seen_groups = HashSet::new();
        let mut seen_chunks = HashSet::new();
        for group in &self.top.groups {
            if seen_groups.insert(Arc::as_ptr(group)) {
                total += arc + size_of::<Group<V>>();
            }
            for chunk in &group.chunks {
                if seen_chunks.insert(Arc::as_ptr(chunk)) {
                    total += arc + size_of::<Chunk<V>>() + chunk.heap_bytes();
                }
            }
        }
        total
    }

    fn find_short(&self, prefix: &Prefix) -> Result<usize, usize> {
        self.top.short.binary_search_by(|(p, _)| p.cmp(prefix))
    }
}

impl<V: Clone + PartialEq> Fib<V> {
    /// Adds or replaces `prefix`; returns the value it replaced.
    pub fn insert(&mut self, prefix: Prefix, value: V) -> Option<V> {
        if prefix.len() < CHUNK_LEN {
            let top = Arc::make_mut(&mut self.top);
            let old = match top.short.binary_search_by(|(p, _)| p.cmp(&prefix)) {
                Ok(i) => Some(std::mem::replace(&mut top.short[i].1, value)),
                Err(i) => {
                    top.short.insert(i, (prefix, value));
                    top.len += 1;
                    None
                }
            };
            self.refresh_inherited(&prefix);
            return old;
        }
        let addr = prefix.addr_u32();
        let index = chunk_index(addr);
        let (chunk, old) = self.top.chunk(index).with_route(addr, prefix.len(), &value);
        let top = Arc::make_mut(&mut self.top);
        if old.is_none() {
            top.len += 1;
        }
        top.set_chunk(index, chunk);
        old
    }

    /// Removes exactly `prefix`; returns its value. Addresses it covered fall back to the
    /// longest prefix that remains.
    pub fn remove(&mut self, prefix: &Prefix) -> Option<V> {
        if prefix.len() < CHUNK_LEN {
            let i = self.find_short(prefix).ok()?;
            let top = Arc::make_mut(&mut self.top);
            let (_, old) = top.short.remove(i);
            top.len -= 1;
            self.refresh_inherited(prefix);
            return Some(old);
        }
        let addr = prefix.addr_u32();
        let index = chunk_index(addr);
        let (chunk, old) = self.top.chunk(index).without_route(addr, prefix.len())?;
        let top = Arc::make_mut(&mut self.top);
        top.len -= 1;
        top.set_chunk(index, chunk);
        Some(old)
    }

    /// Rebuilds the chunks under a changed short `prefix` whose inherited value changed.
    fn refresh_inherited(&mut self, prefix: &Prefix) {
        let first = chunk_index(prefix.addr_u32());
        let count = 1usize << (CHUNK_LEN - prefix.len());
        for index in first..first + count {
            let base = (index as u32) << (32 - CHUNK_LEN);
            let inherited = self
                .top
                .short
                .iter()
                .filter(|(p, _)| p.contains_u32(base))
                .max_by_key(|(p, _)| p.len())
                .map(|(_, v)| v);
            let chunk = self.top.chunk(index);
            if chunk.inherited() == inherited {
                continue;
            }
            let rebuilt = chunk.with_inherited(base, inherited);
            Arc::make_mut(&mut self.top).set_chunk(index, rebuilt);
        }
    }

    /// Inserts a large batch: short routes one by one, the rest merged into each chunk
    /// they touch and that chunk encoded once.
    fn insert_bulk(&mut self, mut routes: Vec<(Prefix, V)>) {
        // Stable: for a prefix given twice, the later value wins, as with `insert`.
        routes.sort_by_key(|(p, _)| *p);
        let mut merged: Vec<(Prefix, V)> = Vec::with_capacity(routes.len());
        for (p, v) in routes {
            match merged.last_mut() {
                Some(last) if last.0 == p => last.1 = v,
                _ => merged.push((p, v)),
            }
        }
        let (short, long): (Vec<_>, Vec<_>) =
            merged.into_iter().partition(|(p, _)| p.len() < CHUNK_LEN);
        for (p, v) in short {
            self.insert(p, v);
        }
        let mut rest = &long[..];
        while let Some((first, _)) = rest.first() {
            let index = chunk_index(first.addr_u32());
            let n = rest.partition_point(|(p, _)| chunk_index(p.addr_u32()) == index);
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let chunk = self.top.chunk(index);
            let old = chunk.unpacked();
            let mut all: Vec<(u32, u8, V)> = Vec::with_capacity(old.len() + batch.len());
            let mut added = 0;
            let mut o = old.into_iter().peekable();
            for (p, v) in batch {
                let k = (p.addr_u32(), p.len());
                while let Some(r) = o.next_if(|r| (r.0, r.1) < k) {
                    all.push(r);
                }
                if o.next_if(|r| (r.0, r.1) == k).is_none() {
                    added += 1;
                }
                all.push((k.0, k.1, v.clone()));
            }
            all.extend(o);
            let base = (index as u32) << (32 - CHUNK_LEN);
            let rebuilt = Chunk::build(base, &all, chunk.inherited());
            let top = Arc::make_mut(&mut self.top);
            top.len += added;
            top.set_chunk(index, rebuilt);
        }
    }
}

impl<V: Clone> Top<V> {
    fn set_chunk(&mut self, index: usize, chunk: Chunk<V>) {
        let chunk = if chunk.is_empty() {
            Arc::clone(&self.empty)
        } else {
            Arc::new(chunk)
        };
        let group = Arc::make_mut(&mut self.groups[(index / CHUNKS_PER_GROUP) % GROUPS]);
        group.chunks[index % CHUNKS_PER_GROUP] = chunk;
    }
}

impl<V> Clone for Fib<V> {
    /// O(1): the clone shares everything with `self`.
    fn clone(&self) -> Self {
        Fib {
            top: Arc::clone(&self.top),
        }
    }
}

impl<V> Default for Fib<V> {
    fn default() -> Self {
        Fib::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for Fib<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: Clone + PartialEq> FromIterator<(Prefix, V)> for Fib<V> {
    fn from_iter<I: IntoIterator<Item = (Prefix, V)>>(routes: I) -> Self {
        let mut fib = Fib::new();
        fib.extend(routes);
        fib
    }
}

impl<V: Clone + PartialEq> Extend<(Prefix, V)> for Fib<V> {
    fn extend<I: IntoIterator<Item = (Prefix, V)>>(&mut self, routes: I) {
        let routes: Vec<(Prefix, V)> = routes.into_iter().collect();
        if routes.len() < BULK {
            for (prefix, value) in routes {
                self.insert(prefix, value);
            }
        } else {
            self.insert_bulk(routes);
        }
    }
}

impl<'a, V> IntoIterator for &'a Fib<V> {
    type Item = (Prefix, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

/// Iterator over a [`Fib`] in prefix order; see [`Fib::iter`]. Merges the short-route
/// list with the chunks' routes.
pub struct Iter<'a, V> {
    top: &'a Top<V>,
    short: usize,
    chunk: usize,
    route: usize,
    remaining: usize,
}

impl<'a, V> Iter<'a, V> {
    /// The next chunk route, moving past exhausted chunks.
    fn peek_chunk(&mut self) -> Option<(Prefix, &'a V)> {
        let top = self.top;
        loop {
            if self.chunk >= GROUPS * CHUNKS_PER_GROUP {
                return None;
            }
            let chunk = top.chunk(self.chunk);
            if let Some(&r) = chunk.routes.get(self.route) {
                let (addr, len, index) = unpack(r);
                if let Some(v) = chunk.values.get(index as usize) {
                    return Some((Prefix::masked(chunk.base | addr, len), v));
                }
                self.route += 1; // unreachable for a well-formed chunk
                continue;
            }
            self.chunk += 1;
            self.route = 0;
        }
    }
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (Prefix, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let top = self.top;
        let long = self.peek_chunk();
        let short = top.short.get(self.short).map(|(p, v)| (*p, v));
        let item = match (short, long) {
            (Some(s), Some(l)) if l.0 < s.0 => {
                self.route += 1;
                l
            }
            (Some(s), _) => {
                self.short += 1;
                s
            }
            (None, Some(l)) => {
                self.route += 1;
                l
            }
            (None, None) => return None,
        };
        self.remaining = self.remaining.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<V> ExactSizeIterator for Iter<'_, V> {}

impl<V> std::iter::FusedIterator for Iter<'_, V> {}

impl<V> fmt::Debug for Iter<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}
