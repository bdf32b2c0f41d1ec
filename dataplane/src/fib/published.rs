//! Lock-free publication of [`Fib`] versions from the state thread to the workers.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::Fib;

/// The current [`Fib`] version, readable by any number of workers without locks while the
/// state thread publishes the next one.
///
/// Readers take **one snapshot per batch, never per packet**: [`PublishedFib::load`] costs
/// tens of nanoseconds (an atomic load plus `arc-swap`'s debt bookkeeping), a lookup in the
/// snapshot a few. Within a batch every packet sees the same version; the next batch picks
/// up whatever was published meanwhile. A snapshot is immutable, so a lookup never sees a
/// half-applied update.
///
/// The writer keeps its own `Fib`, applies updates to it and publishes a clone (O(1):
/// versions share every node they have in common). An old version is freed when the last
/// reader holding it drops its snapshot; until then it costs only the nodes that later
/// versions have replaced.
pub struct PublishedFib<V> {
    current: ArcSwap<Fib<V>>,
}

impl<V> PublishedFib<V> {
    /// Publishes `fib` as the first version.
    pub fn new(fib: Fib<V>) -> PublishedFib<V> {
        PublishedFib {
            current: ArcSwap::from_pointee(fib),
        }
    }

    /// A snapshot of the current version, for one batch. Hold it no longer than that: a
    /// held guard keeps its version (and the nodes only it uses) alive.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Fib<V>>> {
        self.current.load()
    }

    /// The current version as an owned `Arc`, for a reader that keeps it across calls.
    pub fn load_full(&self) -> Arc<Fib<V>> {
        self.current.load_full()
    }

    /// Makes `fib` the version that every later [`PublishedFib::load`] returns. Readers
    /// already holding a snapshot finish their batch on it.
    pub fn publish(&self, fib: Fib<V>) {
        self.current.store(Arc::new(fib));
    }
}

impl<V> Default for PublishedFib<V> {
    fn default() -> Self {
        PublishedFib::new(Fib::new())
    }
}

impl<V> fmt::Debug for PublishedFib<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishedFib")
            .field("routes", &self.current.load().len())
            .finish()
    }
}
