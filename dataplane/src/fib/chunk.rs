//! One /10 of the address space: its routes, its values and the compressed trie encoding
//! them, rebuilt copy-on-write one /18 subtree at a time.
//!
//! # Encoding
//!
//! A chunk's `blob` is a flat `u32` array: 256 direct entries (one per /18 inside the
//! /10), then, in slot order, one *subtree* per direct entry that needs one. An entry is
//! either a leaf (`0` = no route, `n` = `values[n - 1]`) or, with [`NODE`] set, an offset:
//! absolute in a direct entry (the subtree's root), relative to the subtree root in a
//! node (so a subtree can be copied verbatim to any position of a new blob).
//!
//! A node spans a 6-bit stride (/18→/24, /24→/30, and /30→/32 with each address
//! spread over 16 slots so the code is the same at every depth). It is two words of
//! bitmap then one entry per *run*: bit *i* of the bitmap is set when slot *i* starts a
//! run — slot 0, a slot with a child, the slot after one, or a slot whose value differs
//! from the previous slot's. The entry for slot *i* is therefore entry
//! `popcount(bitmap & bits 0..=i) - 1`: a node holding one /24 and the value around it is
//! five words, whatever its fan-out. Leaves are fully expanded (each holds the longest
//! match for its slot, inherited values included), so a lookup never tracks a
//! "best so far".
//!
//! Routes are the chunk's RIB: every prefix of length 10–32 inside the /10, packed into
//! six bytes ([`Route`]) and sorted, which is prefix order. Values are
//! deduplicated per chunk (a forwarding table has few distinct next hops).

use std::mem::size_of;
use std::ops::Range;

/// Tag of an entry that points at a node rather than holding a leaf.
pub(super) const NODE: u32 = 1 << 31;
/// Prefix length of a chunk: routes shorter than this live in the table's short list.
pub(super) const CHUNK_LEN: u8 = 10;
/// Prefix length of a direct entry.
const DIRECT_LEN: u8 = 18;
/// Direct entries per chunk.
const DIRECT: usize = 1 << (DIRECT_LEN - CHUNK_LEN);
/// Bits of a packed route that hold the value index.
const VALUE_BITS: u32 = 21;
const VALUE_MASK: u64 = (1 << VALUE_BITS) - 1;
/// Distinct values a chunk can index: 2^21 - 1 (two million next hops in one /10).
pub(super) const MAX_VALUES: usize = (1 << VALUE_BITS) - 1;
/// Address bits below the chunk's prefix.
const ADDR_MASK: u32 = (1 << (32 - CHUNK_LEN)) - 1;

/// A route of a chunk in six bytes: its address below the chunk prefix (22 bits), its
/// length minus 10 (5 bits) and its value index (21 bits), most significant first, so
/// comparing [`word`]s compares prefixes in prefix order.
pub(super) type Route = [u16; 3];

/// The 48-bit word of a packed route.
pub(super) fn word(route: Route) -> u64 {
    u64::from(route[0]) | u64::from(route[1]) << 16 | u64::from(route[2]) << 32
}

/// A packed route: address, length (10..=32), index into the chunk's values.
pub(super) fn pack(addr: u32, len: u8, value: u32) -> Route {
    debug_assert!((value as usize) < MAX_VALUES);
    let w = key(addr, len) | (u64::from(value) & VALUE_MASK);
    [w as u16, (w >> 16) as u16, (w >> 32) as u16]
}

/// The sort key of a prefix: the word of a packed route with value index 0.
pub(super) fn key(addr: u32, len: u8) -> u64 {
    let k = u64::from(addr & ADDR_MASK) << 5 | u64::from(len.saturating_sub(CHUNK_LEN) & 0x1f);
    k << VALUE_BITS
}

/// (address below the chunk prefix, length, value index) of a packed route.
pub(super) fn unpack(route: Route) -> (u32, u8, u32) {
    let w = word(route);
    let k = w >> VALUE_BITS;
    (
        (k >> 5) as u32,
        (k & 0x1f) as u8 + CHUNK_LEN,
        (w & VALUE_MASK) as u32,
    )
}

/// Direct slot of `addr` inside its chunk.
fn direct_slot(addr: u32) -> usize {
    ((addr >> (32 - DIRECT_LEN)) as usize) & (DIRECT - 1)
}

/// Where a node of `depth` (18, 24 or 30) takes its slot from in `u64::from(addr) << 4`.
const fn shift_of(depth: u8) -> u32 {
    36 - depth as u32 - 6
}

fn slot_of(addr: u32, depth: u8) -> usize {
    ((u64::from(addr) << 4 >> shift_of(depth)) & 63) as usize
}

/// The leaf code of value index `index`.
pub(super) fn leaf(index: u32) -> u32 {
    index + 1
}

/// One /10: see the module docs.
#[derive(Clone)]
pub(super) struct Chunk<V> {
    /// Direct entries then subtrees; empty when the chunk has no route of its own.
    blob: Box<[u32]>,
    /// Sorted packed routes of length ≥ 10 inside the chunk.
    pub(super) routes: Box<[Route]>,
    /// The distinct values leaves and routes index.
    pub(super) values: Box<[V]>,
    /// The chunk's first address (its /10); 0 in the shared empty chunk.
    pub(super) base: u32,
    /// The leaf for addresses no route of this chunk covers: the longest short route
    /// (length < 10) covering the chunk, or 0.
    default: u32,
}

impl<V> Chunk<V> {
    pub(super) fn empty() -> Chunk<V> {
        Chunk {
            blob: Box::new([]),
            routes: Box::new([]),
            values: Box::new([]),
            base: 0,
            default: 0,
        }
    }

    /// Longest-prefix match of `addr` (which lies inside this chunk).
    #[inline]
    pub(super) fn lookup(&self, addr: u32) -> Option<&V> {
        let blob = &*self.blob;
        let mut entry = match blob.get(direct_slot(addr)) {
            Some(&e) => e,
            None => self.default,
        };
        if entry & NODE != 0 {
            let root = (entry & !NODE) as usize;
            let key = u64::from(addr) << 4;
            let mut node = root;
            // Unrolled by the compiler: a /30 node never has children.
            for shift in [shift_of(18), shift_of(24), shift_of(30)] {
                let lo = blob.get(node).copied().unwrap_or(0);
                let hi = blob.get(node + 1).copied().unwrap_or(0);
                let bitmap = u64::from(lo) | u64::from(hi) << 32;
                let slot = (key >> shift) & 63;
                // Run starts at or before the slot; ≥ 1 because slot 0 always starts one.
                let rank = (bitmap << (63 - slot)).count_ones() as usize;
                entry = blob.get(node + 1 + rank).copied().unwrap_or(0);
                if entry & NODE == 0 {
                    break;
                }
                node = root + (entry & !NODE) as usize;
            }
        }
        // Leaf 0 (no route) wraps to an index no table has.
        self.values.get((entry as usize).wrapping_sub(1))
    }

    /// Whether the chunk has neither routes nor an inherited value.
    pub(super) fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.default == 0
    }

    /// The value index of the route stored for exactly `addr/len`, if any.
    pub(super) fn find(&self, addr: u32, len: u8) -> Result<usize, usize> {
        let k = key(addr, len);
        self.routes
            .binary_search_by(|&r| (word(r) & !VALUE_MASK).cmp(&k))
    }

    /// Heap bytes held by this chunk's arrays (not its `Arc` header).
    pub(super) fn heap_bytes(&self) -> usize {
        self.blob.len() * size_of::<u32>()
            + self.routes.len() * size_of::<Route>()
            + self.values.len() * size_of::<V>()
    }
}

impl<V: Clone + PartialEq> Chunk<V> {
    /// The chunk at `base` built from scratch: `routes` (inside it) sorted and
    /// deduplicated by prefix, each with its value; `inherited` the longest short route
    /// covering the chunk.
    pub(super) fn build(base: u32, routes: &[(u32, u8, V)], inherited: Option<&V>) -> Chunk<V> {
        let mut values: Vec<V> = Vec::new();
        let default = match inherited {
            Some(v) => leaf(intern(&mut values, v)),
            None => 0,
        };
        let packed: Vec<Route> = routes
            .iter()
            .map(|(addr, len, v)| pack(*addr, *len, intern(&mut values, v)))
            .collect();
        let mut chunk = Chunk {
            blob: Box::new([]),
            routes: packed.into_boxed_slice(),
            values: values.into_boxed_slice(),
            base: base & !ADDR_MASK,
            default,
        };
        chunk.blob = chunk.encode_all();
        chunk
    }

    /// Every (addr, len, value) of the chunk, in order.
    pub(super) fn unpacked(&self) -> Vec<(u32, u8, V)> {
        self.routes
            .iter()
            .filter_map(|&r| {
                let (addr, len, i) = unpack(r);
                Some((self.base | addr, len, self.values.get(i as usize)?.clone()))
            })
            .collect()
    }

    /// The chunk with `addr/len` set to `value` (inserted or replaced), and the value
    /// it replaced. Re-encodes only the direct slots the prefix covers.
    pub(super) fn with_route(&self, addr: u32, len: u8, value: &V) -> (Chunk<V>, Option<V>) {
        let mut values = self.values.to_vec();
        let index = intern(&mut values, value);
        let mut routes = Vec::with_capacity(self.routes.len() + 1);
        let old = match self.find(addr, len) {
            Ok(i) => {
                let (_, _, was) = unpack(self.routes[i]);
                routes.extend_from_slice(&self.routes[..i]);
                routes.push(pack(addr, len, index));
                routes.extend_from_slice(&self.routes[i + 1..]);
                self.values.get(was as usize).cloned()
            }
            Err(i) => {
                routes.extend_from_slice(&self.routes[..i]);
                routes.push(pack(addr, len, index));
                routes.extend_from_slice(&self.routes[i..]);
                None
            }
        };
        (self.respliced(routes, values, addr, len), old)
    }

    /// The chunk without `addr/len` and its value, or `None` if the prefix is absent.
    pub(super) fn without_route(&self, addr: u32, len: u8) -> Option<(Chunk<V>, V)> {
        let i = self.find(addr, len).ok()?;
        let (_, _, was) = unpack(self.routes[i]);
        let old = self.values.get(was as usize)?.clone();
        let mut routes = Vec::with_capacity(self.routes.len());
        routes.extend_from_slice(&self.routes[..i]);
        routes.extend_from_slice(&self.routes[i + 1..]);
        Some((self.respliced(routes, self.values.to_vec(), addr, len), old))
    }

    /// The chunk with a new inherited value: every leaf may change, so all is rebuilt.
    pub(super) fn with_inherited(&self, base: u32, inherited: Option<&V>) -> Chunk<V> {
        Chunk::build(base, &self.unpacked(), inherited)
    }

    pub(super) fn inherited(&self) -> Option<&V> {
        self.values.get((self.default as usize).wrapping_sub(1))
    }

    /// A new chunk from new routes and values, re-encoding the direct slots `addr/len`
    /// covers and copying every other subtree verbatim.
    fn respliced(&self, routes: Vec<Route>, values: Vec<V>, addr: u32, len: u8) -> Chunk<V> {
        let base = addr & !ADDR_MASK;
        // Values replaced or removed stay behind until they outnumber the routes: then
        // the whole chunk is rebuilt with only the values still in use.
        if values.len() > 2 * routes.len() + 8 || values.len() > MAX_VALUES {
            let live: Vec<(u32, u8, V)> = routes
                .iter()
                .filter_map(|&r| {
                    let (a, l, i) = unpack(r);
                    Some((base | a, l, values.get(i as usize)?.clone()))
                })
                .collect();
            return Chunk::build(base, &live, self.inherited());
        }
        let mut next = Chunk {
            blob: Box::new([]),
            routes: routes.into_boxed_slice(),
            values: values.into_boxed_slice(),
            base,
            default: self.default,
        };
        if next.routes.is_empty() {
            return next;
        }
        if self.blob.is_empty() {
            next.blob = next.encode_all();
            return next;
        }
        let first = direct_slot(addr);
        let span = if len <= DIRECT_LEN {
            1usize << (DIRECT_LEN - len)
        } else {
            1
        };
        next.blob = next.splice(&self.blob, first..first + span);
        next
    }

    /// Encodes every direct slot.
    fn encode_all(&self) -> Box<[u32]> {
        if self.routes.is_empty() {
            return Box::new([]);
        }
        let defaults = self.direct_defaults(0..DIRECT);
        let mut blob = vec![0u32; DIRECT];
        let mut start = 0;
        for (slot, default) in defaults.into_iter().enumerate() {
            let end = start + self.slot_routes(&self.routes[start..], slot).len();
            blob[slot] = encode_slot(&self.routes[start..end], default, &mut blob);
            start = end;
        }
        blob.into_boxed_slice()
    }

    /// A new blob: slots in `changed` encoded from this chunk's routes, every other
    /// subtree copied from `old` (offsets inside a subtree are relative, so it moves).
    fn splice(&self, old: &[u32], changed: Range<usize>) -> Box<[u32]> {
        let defaults = self.direct_defaults(changed.clone());
        let mut blob = Vec::with_capacity(old.len() + 16);
        blob.extend_from_slice(&old[..DIRECT]);
        // Where each old subtree ends: the next subtree's start (subtrees are laid out
        // back to back, not necessarily in slot order), or the blob's end.
        let mut starts: Vec<(usize, usize)> = old[..DIRECT]
            .iter()
            .enumerate()
            .filter(|(_, e)| **e & NODE != 0)
            .map(|(slot, e)| (slot, (e & !NODE) as usize))
            .collect();
        starts.sort_unstable_by_key(|&(_, start)| start);
        for (n, &(slot, start)) in starts.iter().enumerate() {
            if changed.contains(&slot) {
                continue;
            }
            let end = starts.get(n + 1).map_or(old.len(), |&(_, s)| s);
            blob[slot] = NODE | blob.len() as u32;
            blob.extend_from_slice(&old[start..end]);
        }
        // Changed slots are encoded after the copies; a direct entry's offset is
        // absolute, so subtrees need not be in slot order.
        for (slot, default) in changed.zip(defaults) {
            let routes = self.slot_routes(&self.routes, slot);
            blob[slot] = encode_slot(routes, default, &mut blob);
        }
        blob.into_boxed_slice()
    }

    /// The routes whose address falls in direct `slot` (including ones of length ≤ 18
    /// starting there, which `encode_slot` skips).
    fn slot_routes<'r>(&self, routes: &'r [Route], slot: usize) -> &'r [Route] {
        let lo = routes.partition_point(|&r| direct_slot(unpack(r).0) < slot);
        let hi = lo + routes[lo..].partition_point(|&r| direct_slot(unpack(r).0) == slot);
        &routes[lo..hi]
    }

    /// The leaf each direct slot in `slots` gets from routes of length 10–18 (or the
    /// inherited default).
    fn direct_defaults(&self, slots: Range<usize>) -> Vec<u32> {
        let mut out = vec![self.default; slots.len()];
        if slots.len() == 1 {
            // One slot: look up its covering prefixes, longest first.
            let addr = (slots.start as u32) << (32 - DIRECT_LEN);
            for len in (CHUNK_LEN..=DIRECT_LEN).rev() {
                let net = addr & (u32::MAX << (32 - len));
                if let Ok(i) = self.find(net, len) {
                    out[0] = leaf(unpack(self.routes[i]).2);
                    break;
                }
            }
            return out;
        }
        // Paint in prefix order: a covering route before the routes inside it.
        for &r in self.routes.iter() {
            let (addr, len, index) = unpack(r);
            if len > DIRECT_LEN {
                continue;
            }
            let lo = direct_slot(addr);
            let hi = lo + (1 << (DIRECT_LEN - len));
            let lo = lo.max(slots.start);
            let hi = hi.min(slots.end);
            for slot in lo..hi {
                out[slot - slots.start] = leaf(index);
            }
        }
        out
    }
}

/// Index of `value` in `values`, appended if absent.
fn intern<V: PartialEq + Clone>(values: &mut Vec<V>, value: &V) -> u32 {
    match values.iter().rposition(|v| v == value) {
        Some(i) => i as u32,
        None => {
            values.push(value.clone());
            (values.len() - 1) as u32
        }
    }
}

/// The direct entry for one /18: a leaf if no route is longer than 18, else the
/// subtree encoded at the end of `blob`.
fn encode_slot(routes: &[Route], default: u32, blob: &mut Vec<u32>) -> u32 {
    if routes.iter().all(|&r| unpack(r).1 <= DIRECT_LEN) {
        return default;
    }
    let root = blob.len();
    encode_node(routes, DIRECT_LEN, default, blob, root);
    NODE | root as u32
}

/// Appends the node at `depth` whose slots default to `default`, then its children;
/// returns its offset relative to `root`. `routes` are the routes under the node.
fn encode_node(routes: &[Route], depth: u8, default: u32, blob: &mut Vec<u32>, root: usize) -> u32 {
    let mut values = [default; 64];
    let mut children = 0u64;
    for &r in routes {
        let (addr, len, index) = unpack(r);
        if len <= depth {
            continue; // covers the whole node: already in `default`
        }
        let slot = slot_of(addr, depth);
        if len <= depth + 6 {
            // Prefix order: a later route inside this one overwrites its slots.
            let n = 64usize >> (len - depth);
            values[slot..slot + n].fill(leaf(index));
        } else {
            children |= 1 << slot;
        }
    }
    let node = blob.len();
    blob.extend([0, 0]);
    let mut bitmap = 0u64;
    for slot in 0..64 {
        let child = children >> slot & 1 == 1;
        let starts = slot == 0
            || child
            || children >> (slot - 1) & 1 == 1
            || values[slot] != values[slot - 1];
        if starts {
            bitmap |= 1 << slot;
            blob.push(if child { NODE } else { values[slot] });
        }
    }
    blob[node] = bitmap as u32;
    blob[node + 1] = (bitmap >> 32) as u32;
    let mut rest = routes;
    while children != 0 {
        let slot = children.trailing_zeros() as usize;
        children &= children - 1;
        let lo = rest.partition_point(|&r| slot_of(unpack(r).0, depth) < slot);
        let hi = lo + rest[lo..].partition_point(|&r| slot_of(unpack(r).0, depth) == slot);
        let rank = (bitmap << (63 - slot)).count_ones() as usize;
        let child = encode_node(&rest[lo..hi], depth + 6, values[slot], blob, root);
        blob[node + 1 + rank] = NODE | child;
        rest = &rest[hi..];
    }
    (node - root) as u32
}
