//! Reclaiming versions that no snapshot can read.
//!
//! A version is garbage once a newer version of the same TVar is old enough that every running
//! and future snapshot reads it (or something newer). We call that bound the *horizon*:
//!
//! > Every transaction that is pinned now, or pins later, has a snapshot `rv >= HORIZON`.
//!
//! The horizon advances through crossbeam-epoch. The committer of every [`HORIZON_EVERY`]th stamp
//! reads `v = visible`, defers `HORIZON = max(HORIZON, v)`, and hands its bag to the global queue
//! once its commit is over. The deferred function runs only after every thread pinned at the
//! time of the defer has unpinned, and a thread that pins after that point loads `visible` after
//! its pin's `SeqCst` fence, so it sees at least `v` (the same argument that makes epoch
//! reclamation sound: what happened before the defer is visible to late pinners). A snapshot is
//! always taken while pinned, so the invariant holds.
//!
//! A committing writer then trims, while it holds the TVar's lock: it looks for the newest
//! version with `stamp <= HORIZON` below the version it just covered (which every snapshot can
//! still read) and cuts everything below it. It looks [`QUICK_WALK`] versions down on every
//! write, which is enough for a TVar written rarely, and walks the whole chain once in
//! [`FULL_TRIM_EVERY`] writes of that TVar, which bounds the walking cost of a hot TVar. Cut
//! versions are freed with a deferred destroy, so a reader that was already walking through them
//! finishes safely. A value is dropped exactly once: a cut happens under the TVar's lock with a
//! `swap`, so only one thread owns a tail.
//!
//! A chain therefore holds the versions newer than the horizon plus at most `FULL_TRIM_EVERY`:
//! memory stays bounded under constant overwrites. A thread that stays pinned holds the horizon
//! back, which is why a blocked `retry` unpins before it parks.

use crate::clock::CLOCK;
use crate::sync::{AtomicU64, Ordering};
use crate::tvar::{Header, Version, VersionPtr};
use crossbeam_epoch::{Guard, Shared};
use std::ptr::NonNull;

crate::sync::global! {
    static HORIZON: AtomicU64 = AtomicU64::new(0);
}

/// Commits of one thread after which it flushes its epoch bag even without a horizon stamp.
#[cfg(not(loom))]
pub(crate) const FLUSH_EVERY: u32 = 256;
/// Under loom every commit flushes, so a model of a few commits reclaims.
#[cfg(loom)]
pub(crate) const FLUSH_EVERY: u32 = 1;

/// Stamps between two horizon advances.
#[cfg(not(loom))]
pub(crate) const HORIZON_EVERY: u64 = 256;
/// Under loom every stamp advances the horizon, so a model of a few commits reclaims.
#[cfg(loom)]
pub(crate) const HORIZON_EVERY: u64 = 1;

/// Versions a publish looks at below the version it covers, on every write. Enough to cut a
/// chain whose TVar is written rarely (its old head is usually under the horizon already).
const QUICK_WALK: usize = 2;

/// Writes of one TVar between two walks down to the horizon. A hot TVar's chain holds the
/// versions newer than the horizon plus at most this many; the walk costs `lag / FULL_TRIM_EVERY
/// + 1` steps per write, amortized.
#[cfg(not(loom))]
const FULL_TRIM_EVERY: u32 = 64;
/// Under loom: every other write walks the whole chain, so models reach the full walk.
#[cfg(loom)]
const FULL_TRIM_EVERY: u32 = 2;

/// Schedule a horizon advance to the current `visible` stamp.
///
/// Only defers (a defer runs no deferred function); the caller flushes its bag to the global
/// queue later, outside the commit, because collecting runs other threads' deferred drops,
/// which are user code.
pub(crate) fn defer_horizon_advance(guard: &Guard) {
    let v = CLOCK.snapshot();
    let horizon = crate::sync::keep(&HORIZON);
    // Release: pairs with the Acquire in `trim`, so a trimming writer that sees the new horizon
    // also sees everything the epoch advance synchronised with.
    guard.defer(move || {
        horizon.fetch_max(v, Ordering::Release);
    });
}

/// Cut the versions below the newest one with `stamp <= HORIZON`, starting at `from`.
///
/// # Safety
///
/// The caller holds the lock of the TVar `header` (whose chain `from` is in) and is pinned by
/// `guard`.
pub(crate) unsafe fn trim<T>(header: &Header, from: VersionPtr<'_, T>, guard: &Guard) {
    // Acquire: pairs with the Release `fetch_max` of the deferred advance (see module docs).
    let horizon = HORIZON.load(Ordering::Acquire);
    // Relaxed: only the lock holder reads or writes the counter, and the lock orders holders.
    let writes = header.writes_since_trim.load(Ordering::Relaxed) + 1;
    let limit = if writes >= FULL_TRIM_EVERY {
        usize::MAX
    } else {
        QUICK_WALK
    };
    let mut cur = from;
    for _ in 0..limit {
        // SAFETY: pinned; nodes reachable from the head are live.
        let Some(version) = (unsafe { cur.as_ref() }) else {
            break;
        };
        if version.stamp <= horizon {
            // Relaxed: the tail is unreachable for every snapshot (they all stop at `version`),
            // and a walker that already loaded the old pointer is protected by its pin.
            let tail = version.prev.swap(Shared::null(), Ordering::Relaxed, guard);
            if !tail.is_null() {
                let addr = tail.as_raw() as usize;
                // SAFETY: the swap made us the only owner of the tail; the free is deferred past
                // every thread that might be walking it. `T: Send` per `TVar::new`.
                unsafe {
                    guard.defer_unchecked(move || {
                        destroy_chain(Shared::from(addr as *const Version<T>));
                    });
                }
            }
            header.writes_since_trim.store(0, Ordering::Relaxed);
            return;
        }
        // Acquire: the older node was published with Release before it was linked below.
        cur = version.prev.load(Ordering::Acquire, guard);
    }
    let writes = if limit == usize::MAX { 0 } else { writes };
    header.writes_since_trim.store(writes, Ordering::Relaxed);
}

/// Free a chain of versions, oldest links included, without recursion.
///
/// # Safety
///
/// The caller owns the chain: nothing else can reach or free it.
pub(crate) unsafe fn destroy_chain<T>(mut cur: VersionPtr<'_, T>) {
    while let Some(node) = NonNull::new(cur.as_raw() as *mut Version<T>) {
        // SAFETY: owned per the contract, so no other thread touches the node: read the link,
        // drop the value, give the memory back (blocks are global-allocator blocks of the
        // node's layout, whether `TVar::new` boxed them or `alloc` made them).
        unsafe {
            cur = node
                .as_ref()
                .prev
                .load(Ordering::Relaxed, crossbeam_epoch::unprotected());
            std::ptr::drop_in_place(node.as_ptr());
            crate::alloc::dealloc(node);
        }
    }
}
