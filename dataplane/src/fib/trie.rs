//! The persistent multibit trie behind [`Fib`]: four 8-bit strides, path-copied on update.
//!
//! Layout. The top 16 bits are a direct table split into 256 chunks of 256 entries (the
//! root node indexed by the first octet, then one chunk per first octet), followed by one
//! 8-bit node per populated /16 and per populated /24. Every node is a plain array of 256
//! entries, so a lookup is one array index per octet and at most four dependent loads.
//!
//! Each prefix lives in exactly one node, the one whose stride holds its last bit: /0–/8
//! in the root, /9–/16 in a chunk, /17–/24 and /25–/32 in the nodes below. Inside its node
//! a prefix is expanded over the slots it covers (controlled prefix expansion), the longest
//! prefix of that node winning each slot. An entry carries that expanded value *and* an
//! optional child, and a lookup remembers the last value it passed on the way down. So a
//! short prefix is never copied into the nodes below it: changing a /8 rewrites one root
//! entry range, not every node under it, and every update touches one node per level.
//!
//! Each node also keeps its own routes (bits, length, value) in prefix order. They are the
//! source of truth for re-expansion: after an insert or remove the affected slot range is
//! repainted from them, so removing a /20 re-exposes the /18 that covers it. They also
//! answer exact `get` and `iter` without a second map, which keeps `Clone` O(1).
//!
//! Persistence. Nodes are `Arc`-shared. `Clone` copies one pointer; `insert`/`remove` use
//! `Arc::make_mut`, which copies a node only while another version still shares it — at
//! most the four nodes on the path (16 KiB with 16-byte entries), never the whole table.

use std::fmt;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::Prefix;

/// Entries per node: one per value of an 8-bit stride.
const FANOUT: usize = 256;

/// The node level that owns a prefix of `len` bits: /0–/8 → 0, /9–/16 → 1,
/// /17–/24 → 2, /25–/32 → 3.
const fn level_of(len: u8) -> u8 {
    if len == 0 {
        0
    } else {
        (len - 1) / 8
    }
}

/// How far to shift an address right to bring the stride of `level` to the low octet.
const fn shift_of(level: u8) -> u32 {
    24 - 8 * level as u32
}

/// The slot of `addr` in a node of `level`.
const fn slot_of(addr: u32, level: u8) -> usize {
    ((addr >> shift_of(level)) & 0xff) as usize
}

/// Where a prefix is stored: its node level, its 8 bits within that node's stride and its
/// length counted from the start of that stride (0..=8 at level 0, 1..=8 below).
#[derive(Debug, Clone, Copy)]
struct Key {
    level: u8,
    bits: u8,
    len: u8,
}

impl Key {
    fn of(prefix: &Prefix) -> Key {
        let level = level_of(prefix.len());
        Key {
            level,
            bits: slot_of(prefix.addr_u32(), level) as u8,
            len: prefix.len() - 8 * level,
        }
    }

    /// The slots this prefix covers in its node.
    fn slots(self) -> std::ops::Range<usize> {
        let lo = usize::from(self.bits);
        lo..lo + (1 << (8 - self.len))
    }
}

/// One slot of a node.
#[derive(Clone)]
struct Entry<V> {
    /// The value of the longest prefix *of this node* covering the slot.
    leaf: Option<V>,
    /// The node for the next stride, if any longer prefix lies under this slot.
    child: Option<Arc<Node<V>>>,
}

/// A prefix stored in a node, keyed by its bits and length within the node's stride.
#[derive(Clone)]
struct LocalRoute<V> {
    bits: u8,
    len: u8,
    value: V,
}

impl<V> LocalRoute<V> {
    fn key(&self) -> (u8, u8) {
        (self.bits, self.len)
    }

    fn slots(&self) -> std::ops::Range<usize> {
        Key {
            level: 0,
            bits: self.bits,
            len: self.len,
        }
        .slots()
    }
}

#[derive(Clone)]
struct Node<V> {
    entries: [Entry<V>; FANOUT],
    /// This node's own prefixes, sorted by (bits, len): a covering prefix comes before the
    /// prefixes inside it, so painting in this order leaves the longest match in each slot.
    routes: Vec<LocalRoute<V>>,
    /// How many entries have a child; a node with no routes and no children is dropped.
    children: u16,
}

impl<V> Node<V> {
    fn empty() -> Node<V> {
        Node {
            entries: std::array::from_fn(|_| Entry {
                leaf: None,
                child: None,
            }),
            routes: Vec::new(),
            children: 0,
        }
    }

    fn is_vacant(&self) -> bool {
        self.routes.is_empty() && self.children == 0
    }

    fn find(&self, bits: u8, len: u8) -> Result<usize, usize> {
        self.routes.binary_search_by(|r| r.key().cmp(&(bits, len)))
    }

    /// Approximate heap bytes of this node and everything below it, counting the `Arc`
    /// header of each node.
    fn heap_bytes(&self) -> usize {
        let own = 2 * size_of::<usize>()
            + size_of::<Node<V>>()
            + self.routes.capacity() * size_of::<LocalRoute<V>>();
        let below: usize = self
            .entries
            .iter()
            .filter_map(|e| e.child.as_deref())
            .map(Node::heap_bytes)
            .sum();
        own + below
    }
}

impl<V: Clone> Node<V> {
    /// Re-expands the slots in `range` from this node's routes.
    fn repaint(&mut self, range: std::ops::Range<usize>) {
        for entry in &mut self.entries[range.clone()] {
            entry.leaf = None;
        }
        for route in &self.routes {
            let covered = route.slots();
            if covered.start >= range.end {
                // Sorted by bits: every later route starts further right.
                break;
            }
            let lo = covered.start.max(range.start);
            let hi = covered.end.min(range.end);
            if lo < hi {
                for entry in &mut self.entries[lo..hi] {
                    entry.leaf = Some(route.value.clone());
                }
            }
        }
    }

    fn set_route(&mut self, key: Key, value: V) -> Option<V> {
        let old = match self.find(key.bits, key.len) {
            Ok(i) => Some(std::mem::replace(&mut self.routes[i].value, value)),
            Err(i) => {
                self.routes.insert(
                    i,
                    LocalRoute {
                        bits: key.bits,
                        len: key.len,
                        value,
                    },
                );
                None
            }
        };
        self.repaint(key.slots());
        old
    }

    fn unset_route(&mut self, key: Key) -> Option<V> {
        let i = self.find(key.bits, key.len).ok()?;
        let old = self.routes.remove(i);
        if self.routes.is_empty() {
            // Release the buffer: most nodes hold a handful of routes at most.
            self.routes = Vec::new();
        }
        self.repaint(key.slots());
        Some(old.value)
    }
}

/// Removes `key` from the subtree at `node` (a node of `level`), copying shared nodes on
/// the way and dropping nodes left with neither routes nor children.
fn remove_below<V: Clone>(node: &mut Arc<Node<V>>, level: u8, addr: u32, key: Key) -> Option<V> {
    let node = Arc::make_mut(node);
    if level == key.level {
        return node.unset_route(key);
    }
    let slot = slot_of(addr, level);
    let child = node.entries[slot].child.as_mut()?;
    let old = remove_below(child, level + 1, addr, key);
    if child.is_vacant() {
        node.entries[slot].child = None;
        node.children -= 1;
    }
    old
}

/// An IPv4 longest-prefix-match table mapping [`Prefix`]es to values.
///
/// A persistent structure: [`Clone`] is O(1) and shares every node; [`Fib::insert`] and
/// [`Fib::remove`] copy only the nodes on the updated path that another clone still
/// holds. The state thread owns one `Fib`, updates it, and publishes clones through
/// [`super::PublishedFib`]; readers look up in their snapshot without locks.
pub struct Fib<V> {
    root: Arc<Node<V>>,
    len: usize,
}

impl<V> Fib<V> {
    /// An empty table.
    pub fn new() -> Fib<V> {
        Fib {
            root: Arc::new(Node::empty()),
            len: 0,
        }
    }

    /// The number of prefixes in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of the longest prefix containing `addr`.
    ///
    /// The hot path: no allocation, no lock, at most four dependent loads (one per octet).
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&V> {
        self.lookup_u32(addr.to_bits())
    }

    /// [`Fib::lookup`] for a host-order `u32` address.
    #[inline]
    pub fn lookup_u32(&self, addr: u32) -> Option<&V> {
        // Unrolled: a level-3 entry never has a child, so four steps always end the walk.
        let e0 = &self.root.entries[((addr >> 24) & 0xff) as usize];
        let best = e0.leaf.as_ref();
        let Some(n1) = e0.child.as_deref() else {
            return best;
        };
        let e1 = &n1.entries[((addr >> 16) & 0xff) as usize];
        let best = e1.leaf.as_ref().or(best);
        let Some(n2) = e1.child.as_deref() else {
            return best;
        };
        let e2 = &n2.entries[((addr >> 8) & 0xff) as usize];
        let best = e2.leaf.as_ref().or(best);
        let Some(n3) = e2.child.as_deref() else {
            return best;
        };
        n3.entries[(addr & 0xff) as usize].leaf.as_ref().or(best)
    }

    /// The value stored for exactly `prefix` (no longest-match).
    pub fn get(&self, prefix: &Prefix) -> Option<&V> {
        let key = Key::of(prefix);
        let mut node: &Node<V> = &self.root;
        for level in 0..key.level {
            node = node.entries[slot_of(prefix.addr_u32(), level)]
                .child
                .as_deref()?;
        }
        let i = node.find(key.bits, key.len).ok()?;
        Some(&node.routes[i].value)
    }

    /// Whether exactly `prefix` is in the table.
    pub fn contains_prefix(&self, prefix: &Prefix) -> bool {
        self.get(prefix).is_some()
    }

    /// Every (prefix, value) in prefix order: by address, a covering prefix before the
    /// prefixes inside it.
    pub fn iter(&self) -> Iter<'_, V> {
        let mut stack = Vec::with_capacity(4);
        stack.push(Frame {
            node: &self.root,
            base: 0,
            level: 0,
            route: 0,
            slot: 0,
        });
        Iter {
            stack,
            remaining: self.len,
        }
    }

    /// Approximate heap bytes held by this version: every node (256 entries of
    /// `size_of::<Option<V>>() + 8` bytes, rounded to alignment — 16 for a value of up
    /// to 8 bytes with a niche), its `Arc` header and its route list. Nodes shared with
    /// other versions are counted in each. Walks the whole trie: a diagnostic, not for the
    /// hot path.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.root.heap_bytes()
    }
}

impl<V: Clone> Fib<V> {
    /// Adds or replaces `prefix`; returns the value it replaced.
    pub fn insert(&mut self, prefix: Prefix, value: V) -> Option<V> {
        let key = Key::of(&prefix);
        let addr = prefix.addr_u32();
        let mut node = Arc::make_mut(&mut self.root);
        for level in 0..key.level {
            let entry = &mut node.entries[slot_of(addr, level)];
            if entry.child.is_none() {
                node.children += 1;
            }
            let child = entry.child.get_or_insert_with(|| Arc::new(Node::empty()));
            node = Arc::make_mut(child);
        }
        let old = node.set_route(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes exactly `prefix`; returns its value. Addresses it covered fall back to the
    /// longest prefix that remains.
    pub fn remove(&mut self, prefix: &Prefix) -> Option<V> {
        // Checking first keeps a miss from copying the path of a shared version.
        self.get(prefix)?;
        let old = remove_below(&mut self.root, 0, prefix.addr_u32(), Key::of(prefix));
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}

impl<V> Clone for Fib<V> {
    /// O(1): the clone shares every node with `self`.
    fn clone(&self) -> Self {
        Fib {
            root: Arc::clone(&self.root),
            len: self.len,
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

impl<V: Clone> FromIterator<(Prefix, V)> for Fib<V> {
    fn from_iter<I: IntoIterator<Item = (Prefix, V)>>(routes: I) -> Self {
        let mut fib = Fib::new();
        fib.extend(routes);
        fib
    }
}

impl<V: Clone> Extend<(Prefix, V)> for Fib<V> {
    fn extend<I: IntoIterator<Item = (Prefix, V)>>(&mut self, routes: I) {
        for (prefix, value) in routes {
            self.insert(prefix, value);
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

/// Iterator over a [`Fib`] in prefix order; see [`Fib::iter`].
pub struct Iter<'a, V> {
    /// The path from the root to the node being walked.
    stack: Vec<Frame<'a, V>>,
    remaining: usize,
}

struct Frame<'a, V> {
    node: &'a Node<V>,
    /// The address bits above this node's stride.
    base: u32,
    level: u8,
    /// Next route of `node` to yield.
    route: usize,
    /// Next slot of `node` whose child has not been walked.
    slot: usize,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (Prefix, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let frame = self.stack.last_mut()?;
            let node = frame.node;
            while frame.slot < FANOUT && node.entries[frame.slot].child.is_none() {
                frame.slot += 1;
            }
            let shift = shift_of(frame.level);
            // A route whose bits are at or before the next child's slot sorts before every
            // prefix in that child (same or lower address, shorter length).
            if let Some(route) = node.routes.get(frame.route) {
                if frame.slot == FANOUT || usize::from(route.bits) <= frame.slot {
                    frame.route += 1;
                    self.remaining -= 1;
                    let addr = frame.base | u32::from(route.bits) << shift;
                    let prefix = Prefix::masked(addr, 8 * frame.level + route.len);
                    return Some((prefix, &route.value));
                }
            }
            match node
                .entries
                .get(frame.slot)
                .and_then(|e| e.child.as_deref())
            {
                Some(child) => {
                    let next = Frame {
                        node: child,
                        base: frame.base | (frame.slot as u32) << shift,
                        level: frame.level + 1,
                        route: 0,
                        slot: 0,
                    };
                    frame.slot += 1;
                    self.stack.push(next);
                }
                None => {
                    self.stack.pop();
                }
            }
        }
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
