//! Publication of immutable versions to reader threads, with quiescent-state-based
//! reclamation (QSBR): readers pay one plain load per batch, and the writer frees an old
//! version once every reader has passed a quiescent state since it was replaced.
//!
//! This module owns the only unsafe code outside `io`: a raw pointer to the current
//! version and the decision of when a replaced version may be freed.
//!
//! # Use
//!
//! ```
//! use tapwire_dataplane::rcu::Rcu;
//!
//! let mut tables = Rcu::new(vec![1u32]);           // the writer (state thread) owns this
//! let mut reader = tables.reader();                 // one per worker, moved to its thread
//! std::thread::scope(|s| {
//!     s.spawn(move || {
//!         for _batch in 0..3 {
//!             let version = reader.read();          // one atomic load per batch
//!             assert!(!version.is_empty());         // … look up every packet in `version`
//!             reader.quiesce();                     // batch done: no reference kept
//!             let _asleep = reader.offline();       // blocked in epoll: not holding anyone up
//!         }                                         // guard dropped: online again
//!     });
//!     tables.publish(vec![2, 3]);                   // never waits for readers
//! });
//! tables.reclaim();                                 // frees what no reader can still see
//! assert_eq!(tables.pending(), 0);
//! ```
//!
//! The borrow checker enforces the protocol: [`RcuReader::read`] lends `&T` for as long
//! as the reader is borrowed, and [`RcuReader::quiesce`] / [`RcuReader::offline`] take
//! `&mut self`, so no reference survives the announcement that would let it be freed.
//!
//! # Protocol
//!
//! A global `epoch` counts publications. Each reader has a slot holding the epoch it last
//! observed at a quiescent state, or [`OFFLINE`]. Publishing swaps the pointer, then bumps
//! the epoch to `e` and retires the old version tagged `e`. A retired version is freed
//! when every slot holds at least its tag (an offline slot holds `u64::MAX`, so it never
//! blocks). Retired versions are dropped on the writer's thread, never on a reader's.

#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The slot value of a reader that is offline (or gone): it blocks no reclamation.
const OFFLINE: u64 = u64::MAX;

/// One reader's announcement, on its own cache line so readers do not contend.
#[repr(align(64))]
#[derive(Debug)]
struct Slot {
    /// The epoch observed at this reader's last quiescent state, or [`OFFLINE`].
    seen: AtomicU64,
}

struct Retired<T> {
    /// The epoch published right after this version was swapped out.
    epoch: u64,
    version: *mut T,
}

struct Registry<T> {
    readers: Vec<Arc<Slot>>,
    retired: Vec<Retired<T>>,
}

struct Shared<T> {
    /// The current version: always a valid pointer from `Box::into_raw`.
    current: AtomicPtr<T>,
    /// Publications so far.
    epoch: AtomicU64,
    /// Locked by the writer when publishing and reclaiming, by readers only when they
    /// register or unregister — never on the read path.
    registry: Mutex<Registry<T>>,
    /// `Shared` owns the versions behind its raw pointers.
    _owns: PhantomData<Box<T>>,
}

// SAFETY: `Shared` hands out `&T` to reader threads (needs `T: Sync`) and drops versions
// on whichever thread drops the writer or the last reader (needs `T: Send`). The raw
// pointers are only dereferenced under the QSBR protocol described in the module docs.
unsafe impl<T: Send + Sync> Send for Shared<T> {}
// SAFETY: as above; every shared mutable field is an atomic or behind the mutex.
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn registry(&self) -> MutexGuard<'_, Registry<T>> {
        // A panic while holding the lock leaves the registry consistent (every operation
        // on it is a push, a retain or a swap), so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Announces `slot` online at the current epoch. The SeqCst fence pairs with the one
    /// in [`Rcu::reclaim`]: either the writer's scan sees this slot online, or this
    /// reader's next load of `current` sees every pointer swapped before that scan
    /// (the store-buffering case SeqCst fences exist for).
    fn go_online(&self, slot: &Slot) {
        slot.seen
            .store(self.epoch.load(Ordering::Acquire), Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // The writer and every reader are gone: nobody can hold a version.
        let registry = self
            .registry
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for retired in registry.retired.drain(..) {
            // SAFETY: each retired pointer came from `Box::into_raw`, was swapped out of
            // `current` exactly once and has not been freed (reclaim removes what it frees).
            drop(unsafe { Box::from_raw(retired.version) });
        }
        // SAFETY: `current` always holds a live pointer from `Box::into_raw`, owned here.
        drop(unsafe { Box::from_raw(*self.current.get_mut()) });
    }
}

/// The writer side: owns the current version and the retired ones not yet freed.
///
/// One writer per `Rcu` (methods that change it take `&mut self`). [`Rcu::publish`] never
/// waits for readers; it frees whatever has become safe to free, on this thread.
pub struct Rcu<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Send + Sync> Rcu<T> {
    /// Publishes `value` as the first version.
    pub fn new(value: T) -> Rcu<T> {
        Rcu {
            shared: Arc::new(Shared {
                current: AtomicPtr::new(Box::into_raw(Box::new(value))),
                epoch: AtomicU64::new(0),
                registry: Mutex::new(Registry {
                    readers: Vec::new(),
                    retired: Vec::new(),
                }),
                _owns: PhantomData,
            }),
        }
    }

    /// A new reader, online and quiescent. Create one per reader thread (it is `Send`)
    /// and keep it for the thread's life.
    pub fn reader(&self) -> RcuReader<T> {
        let slot = Arc::new(Slot {
            seen: AtomicU64::new(OFFLINE),
        });
        self.shared.registry().readers.push(Arc::clone(&slot));
        self.shared.go_online(&slot);
        RcuReader {
            shared: Arc::clone(&self.shared),
            slot,
            _not_sync: PhantomData,
        }
    }

    /// The current version, as the writer sees it.
    pub fn current(&self) -> &T {
        // SAFETY: only `publish` (which takes `&mut self`, so cannot run while this
        // borrow lives) replaces the current version, and only retired versions are freed.
        unsafe { &*self.shared.current.load(Ordering::Acquire) }
    }

    /// Makes `value` the version every later [`RcuReader::read`] returns, retires the
    /// previous one, and frees the retired versions no reader can still be using.
    /// Readers in the middle of a batch finish it on the version they loaded.
    pub fn publish(&mut self, value: T) {
        let new = Box::into_raw(Box::new(value));
        // Release: a reader that loads `new` (Acquire) sees the fully built version.
        let old = self.shared.current.swap(new, Ordering::AcqRel);
        // Release: a reader that observes this epoch at a quiescent state has thereby
        // synchronized with the swap above, so its later loads of `current` cannot
        // return `old`.
        let epoch = self.shared.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.shared.registry().retired.push(Retired {
            epoch,
            version: old,
        });
        self.reclaim();
    }

    /// Frees every retired version that all online readers have passed a quiescent
    /// state since; returns how many were freed.
    pub fn reclaim(&mut self) -> usize {
        // Pairs with the fence in `go_online` (see there).
        fence(Ordering::SeqCst);
        let free: Vec<Retired<T>> = {
            let mut registry = self.shared.registry();
            // Acquire: a reader's reads of a version happen before its Release store of
            // a later epoch (or of OFFLINE); seeing that store orders them before the free.
            let oldest_seen = registry
                .readers
                .iter()
                .map(|slot| slot.seen.load(Ordering::Acquire))
                .min()
                .unwrap_or(OFFLINE);
            let (free, keep) = std::mem::take(&mut registry.retired)
                .into_iter()
                .partition(|r| r.epoch <= oldest_seen);
            registry.retired = keep;
            free
        };
        let freed = free.len();
        for retired in free {
            // SAFETY: the pointer came from `Box::into_raw` and left `current` before
            // epoch `retired.epoch`; every online reader has since announced an epoch
            // ≥ that one, after which it cannot load this pointer again (module docs),
            // and it holds no reference from before (its borrows ended at the
            // announcement). Offline readers hold no reference at all. It was removed
            // from `retired` above, so it is freed once.
            drop(unsafe { Box::from_raw(retired.version) });
        }
        freed
    }

    /// Retired versions not yet freed.
    pub fn pending(&self) -> usize {
        self.shared.registry().retired.len()
    }

    /// Registered readers.
    pub fn readers(&self) -> usize {
        self.shared.registry().readers.len()
    }

    /// Reclaims until nothing is pending or `timeout` passes (yielding in between);
    /// true if everything was freed. For shutdown and tests: a reader that never
    /// quiesces keeps this waiting until the timeout.
    pub fn synchronize(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reclaim();
            if self.pending() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::yield_now();
        }
    }
}

impl<T> fmt::Debug for Rcu<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.shared.registry();
        f.debug_struct("Rcu")
            .field("epoch", &self.shared.epoch.load(Ordering::Relaxed))
            .field("readers", &registry.readers.len())
            .field("pending", &registry.retired.len())
            .finish()
    }
}

/// One reader thread's handle. Online from creation; see the module docs for the
/// read → quiesce cycle.
pub struct RcuReader<T> {
    shared: Arc<Shared<T>>,
    slot: Arc<Slot>,
    /// `Send` (it moves to its thread) but not `Sync`: its slot describes one thread.
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<T> RcuReader<T> {
    /// The current version: one atomic load (a plain load on x86). Take it once per
    /// batch; every lookup in the batch uses it. The version stays valid until this
    /// reader quiesces, goes offline or is dropped — which the borrow enforces.
    #[inline]
    pub fn read(&self) -> &T {
        // Acquire: pairs with the writer's swap, so the version's contents are visible.
        let version = self.shared.current.load(Ordering::Acquire);
        // SAFETY: the reader is online (offline requires `&mut self` held by the guard)
        // and has not announced a quiescent state since this load (that requires
        // `&mut self` too, which this `&self` borrow excludes), so the writer cannot
        // have freed `version`: it frees a version only after every online reader has
        // announced an epoch published after the version was replaced.
        unsafe { &*version }
    }

    /// Announces a quiescent state: this thread holds no reference to any version.
    /// Call it between batches; it is one load and one store, no fence.
    #[inline]
    pub fn quiesce(&mut self) {
        // Acquire: if this observes epoch `e`, the swap before `e` happened-before our
        // next `read`. Release: our reads of earlier versions happen-before the writer's
        // Acquire load of this announcement, hence before it frees them.
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        self.slot.seen.store(epoch, Ordering::Release);
    }

    /// Goes offline until the guard drops (e.g. around a blocking `epoll_wait`), so
    /// the writer can free versions without waiting for this thread. Reading needs the
    /// guard gone: it borrows the reader mutably.
    pub fn offline(&mut self) -> Offline<'_, T> {
        // Release: reads of versions before this point happen-before any free that
        // follows the writer's observation of OFFLINE.
        self.slot.seen.store(OFFLINE, Ordering::Release);
        Offline { reader: self }
    }
}

impl<T> Drop for RcuReader<T> {
    fn drop(&mut self) {
        self.slot.seen.store(OFFLINE, Ordering::Release);
        let slot = &self.slot;
        self.shared
            .registry()
            .readers
            .retain(|s| !Arc::ptr_eq(s, slot));
    }
}

impl<T> fmt::Debug for RcuReader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seen = self.slot.seen.load(Ordering::Relaxed);
        f.debug_struct("RcuReader")
            .field("online", &(seen != OFFLINE))
            .field("seen_epoch", &seen)
            .finish()
    }
}

/// An [`RcuReader`] that is offline; dropping it brings the reader back online.
pub struct Offline<'r, T> {
    reader: &'r mut RcuReader<T>,
}

impl<T> Drop for Offline<'_, T> {
    fn drop(&mut self) {
        self.reader.shared.go_online(&self.reader.slot);
    }
}

impl<T> fmt::Debug for Offline<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offline").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
