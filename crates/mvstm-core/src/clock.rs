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
    /// `Acquire` pairs with the `Release` swap in [`Clock::publish_in_order`], so every version
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
    ///
    /// The stamp must be made visible whatever happens next, or every later committer would
    /// wait for it forever: the returned [`Stamp`] does it on drop if the commit unwinds.
    #[inline]
    pub(crate) fn reserve(&self) -> Stamp {
        Stamp(self.next.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Make `stamp` visible once every smaller stamp is, keeping `visible` in stamp order.
    ///
    /// The caller has published all its versions (or decided to publish none). Between
    /// [`Clock::reserve`] and this call no user code runs, so the wait is short.
    fn publish_in_order(&self, stamp: u64) {
        let mut spins = 0u32;
        // Acquire: the writes of the stamps before ours happen-before our swap below, so a
        // reader that sees our stamp sees theirs too.
        while self.visible.load(Ordering::Acquire) != stamp - 1 {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                spin_hint();
            } else {
                crate::sync::yield_now();
            }
        }
        // A swap, not a store: Release for the readers that load `visible` with Acquire (they
        // see our versions), and a full barrier, so the stamp is visible to every core before
        // `atomically` returns. With a plain store it may sit in this core's store buffer for a
        // while, and a transaction that another thread starts after our return (by the clock,
        // with no synchronisation between the two) could take an older snapshot: strict
        // serializability by real time, not only by happens-before (docs/architecture.md).
        self.visible.swap(stamp, Ordering::SeqCst);
    }
}

/// A reserved commit stamp that has not been made visible yet.
///
/// Made visible by [`Stamp::make_visible`] once its versions are published (or none will be);
/// if the commit unwinds before that, dropping it makes the stamp visible empty, so no later
/// committer waits for it forever.
#[must_use = "a reserved stamp must be made visible"]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// The stamp's number.
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0
    }

    /// Make the stamp visible in stamp order ([`Clock::publish_in_order`]).
    #[inline]
    pub(crate) fn make_visible(self) {
        let stamp = self.0;
        std::mem::forget(self);
        CLOCK.publish_in_order(stamp);
    }
}

impl Drop for Stamp {
    #[cold]
    fn drop(&mut self) {
        CLOCK.publish_in_order(self.0);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_dropped_by_a_panic_is_still_made_visible() {
        let unwound = std::panic::catch_unwind(|| {
            let _stamp = CLOCK.reserve();
            panic!("a commit unwound after taking its stamp");
        });
        assert!(unwound.is_err());
        // The next stamp does not wait for the abandoned one: this returns.
        let next = CLOCK.reserve();
        let n = next.get();
        next.make_visible();
        assert!(CLOCK.snapshot() >= n);
    }
}
