//! The global version clock.
//!
//! Two counters, each on its own cache line:
//!
//! * `next` hands out commit numbers (stamps). A committing writer takes one with `fetch_add`
//!   once its write set is locked (TL2's order).
//! * `visible` is the newest stamp whose writes are all published. It advances strictly in stamp
//!   order: the writer of stamp `w` publishes its versions, waits until `visible == w - 1`, then
//!   stores `w`.
//!
//! Invariant: every version with a stamp `<= visible` is reachable from its TVar's head. A
//! snapshot is just a value of `visible`, so a reader never has to wait for a writer that has
//! taken a stamp but not yet published: such a stamp is above every snapshot taken so far. The
//! price is paid by writers, who wait for the publishers just before them; that window contains
//! only pointer stores, never user code (`on_commit` hooks run before a stamp is taken).

use crate::sync::{spin_hint, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

pub(crate) struct Clock {
    next: CachePadded<AtomicU64>,
    visible: CachePadded<AtomicU64>,
}

crate::sync::global! {
    pub(crate) static CLOCK: Clock = Clock {
        next: CachePadded::new(AtomicU64::new(0)),
        visible: CachePadded::new(AtomicU64::new(0)),
    };
}

/// How many spins before a writer waiting for its turn yields the processor.
#[cfg(not(loom))]
const SPINS_BEFORE_YIELD: u32 = 64;
/// Under loom a spin is already a yield.
#[cfg(loom)]
const SPINS_BEFORE_YIELD: u32 = 1;

impl Clock {
    /// The newest fully published stamp: a consistent snapshot.
    ///
    /// `Acquire` pairs with the `Release` store in [`Clock::publish_in_order`], so every version
    /// published under a stamp `<=` the result is visible to the caller's later head loads.
    #[inline]
    pub(crate) fn snapshot(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// Take a commit stamp. The caller must hold the locks of its write set.
    ///
    /// `SeqCst`: validation that follows is a Dekker-shaped argument with other committers
    /// (we take a stamp, then load a lock word; they store the lock word, then take a stamp), so
    /// either we see their lock or their stamp is larger than ours. On x86 a locked RMW costs
    /// the same whatever the ordering.
    #[inline]
    pub(crate) fn reserve(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Make `stamp` visible once every smaller stamp is, keeping `visible` in stamp order.
    ///
    /// The caller has published all its versions (or decided to publish none). Between
    /// [`Clock::reserve`] and this call no user code runs, so the wait is short.
    pub(crate) fn publish_in_order(&self, stamp: u64) {
        let mut spins = 0u32;
        // Acquire: the writes of the stamps before ours happen-before our Release store below,
        // so a reader that sees our stamp sees theirs too.
        while self.visible.load(Ordering::Acquire) != stamp - 1 {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                spin_hint();
            } else {
                crate::sync::yield_now();
            }
        }
        self.visible.store(stamp, Ordering::Release);
    }
}
