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
//!
//! # Long readers
//!
//! A read-only transaction that reads a lot would hold the horizon (and every deferred free)
//! back for as long as it runs. Instead, once it has read [`REPIN_READS`] variables it
//! *announces* its snapshot here and from then on re-pins every [`REPIN_READS`] reads, so the
//! epoch and the horizon move on without it. Its own versions stay safe because trimming keeps,
//! besides the newest version under the horizon, the newest version under every announced
//! snapshot, and cuts below the oldest of them:
//!
//! - A trimmer that loaded a horizon above an announced snapshot `r` sees the announcement: the
//!   reader announced while pinned with `r >= HORIZON`, so the horizon only passed `r` through
//!   an epoch advance after the reader's re-pin, which the Acquire load of `HORIZON`
//!   synchronises with.
//! - A trimmer with a horizon `<= r` never touches what `r` needs (it only unlinks versions
//!   below the newest one under the horizon).
//!
//! Versions between two kept ones are unlinked one by one, without changing their own links,
//! so a walker that stands on one still reaches the older versions it needs; each is freed by
//! a deferred destroy. A chain then holds the versions newer than the horizon, one version per
//! announced snapshot, and at most `FULL_TRIM_EVERY` more. The transaction pays for it: its
//! read log is no longer protected by its pin, so if it then writes or retries, the attempt is
//! re-run without re-pinning (`txn.rs`).

use crate::clock;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::tvar::{Header, Version, VersionPtr};
use crossbeam_epoch::{Guard, Shared};
use smallvec::SmallVec;
use std::ptr::NonNull;

crate::sync::global! {
    static HORIZON: AtomicU64 = AtomicU64::new(0);
}

// Snapshots announced by long readers (a multiset), and a summary of it that trimmers read
// without the lock: how many there are and the smallest.
crate::sync::global! {
    static ANNOUNCED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
}
crate::sync::global! {
    static LONG_READERS: AtomicUsize = AtomicUsize::new(0);
}
crate::sync::global! {
    static MIN_ANNOUNCED: AtomicU64 = AtomicU64::new(u64::MAX);
}

/// Reads after which a read-only transaction announces its snapshot, and between its re-pins.
pub(crate) const REPIN_READS: usize = 1024;

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

/// Schedule a horizon advance to the current clock.
///
/// Only defers (a defer runs no deferred function); the caller flushes its bag to the global
/// queue later, outside the commit, because collecting runs other threads' deferred drops,
/// which are user code.
pub(crate) fn defer_horizon_advance(guard: &Guard) {
    let v = clock::snapshot();
    let horizon = crate::sync::keep(&HORIZON);
    // Release: pairs with the Acquire in `trim`, so a trimming writer that sees the new horizon
    // also sees everything the epoch advance synchronised with.
    guard.defer(move || {
        horizon.fetch_max(v, Ordering::Release);
    });
}

/// Announce the snapshot `rv` of a long reader. The caller is pinned and took `rv` while pinned.
pub(crate) fn announce(rv: u64) {
    let mut announced = ANNOUNCED.lock();
    announced.push(rv);
    // Release (both): published before the caller's re-pin, which a trimmer's Acquire of a
    // horizon above `rv` synchronises with (module docs).
    MIN_ANNOUNCED.fetch_min(rv, Ordering::Release);
    LONG_READERS.store(announced.len(), Ordering::Release);
}

/// Withdraw an announcement made by `announce(rv)`.
pub(crate) fn withdraw(rv: u64) {
    let mut announced = ANNOUNCED.lock();
    let at = announced
        .iter()
        .position(|&a| a == rv)
        .expect("withdrawn snapshot was announced");
    announced.swap_remove(at);
    // A trimmer that still sees the old summary keeps more than it must: harmless.
    let min = announced.iter().copied().min().unwrap_or(u64::MAX);
    MIN_ANNOUNCED.store(min, Ordering::Release);
    LONG_READERS.store(announced.len(), Ordering::Release);
}

/// Cut the versions below the newest one with `stamp <= HORIZON`, starting at `from`.
///
/// # Safety
///
/// The caller holds the lock of the TVar `header` (whose chain `from` is in) and is pinned by
/// `guard`.
pub(crate) unsafe fn trim<T>(
    header: &Header,
    from: VersionPtr<'_, T>,
    guard: &Guard,
    retired: &mut Retired,
) {
    // Acquire: pairs with the Release `fetch_max` of the deferred advance (see module docs).
    let horizon = HORIZON.load(Ordering::Acquire);
    // Acquire: after the horizon, so an announcement below it is seen (module docs).
    let long_readers = LONG_READERS.load(Ordering::Acquire) > 0;
    let floor = if long_readers {
        horizon.min(MIN_ANNOUNCED.load(Ordering::Acquire))
    } else {
        horizon
    };
    // Relaxed: only the lock holder reads or writes the counter, and the lock orders holders.
    let writes = header.writes_since_trim.load(Ordering::Relaxed) + 1;
    let full = writes >= FULL_TRIM_EVERY;
    let limit = if full { usize::MAX } else { QUICK_WALK };
    let mut cur = from;
    for _ in 0..limit {
        // SAFETY: pinned; nodes reachable from the head are live.
        let Some(version) = (unsafe { cur.as_ref() }) else {
            break;
        };
        let stamp = version.final_stamp();
        if stamp <= horizon && full && floor < horizon {
            // SAFETY: forwarded contract; `version` is the newest under the horizon.
            unsafe { trim_between_announced(version, guard, retired) };
            header.writes_since_trim.store(0, Ordering::Relaxed);
            return;
        }
        if stamp <= floor {
            // SAFETY: forwarded contract; every snapshot stops at `version` or above.
            unsafe { cut_below(version, guard, retired) };
            header.writes_since_trim.store(0, Ordering::Relaxed);
            return;
        }
        // Acquire: the older node was published with Release before it was linked below.
        cur = version.prev.load(Ordering::Acquire, guard);
    }
    let writes = if full { 0 } else { writes };
    header.writes_since_trim.store(writes, Ordering::Relaxed);
}

/// Below `kept`, the newest version under the horizon, keep only the newest version under each
/// announced snapshot: unlink the others one by one and cut below the oldest kept.
///
/// # Safety
///
/// As for [`trim`]; `kept` is in the chain.
unsafe fn trim_between_announced<'g, T>(
    mut kept: &'g Version<T>,
    guard: &'g Guard,
    retired: &mut Retired,
) {
    let mut snapshots: SmallVec<[u64; 8]> = ANNOUNCED.lock().iter().copied().collect();
    snapshots.sort_unstable_by(|a, b| b.cmp(a));
    for r in snapshots {
        if r >= kept.final_stamp() {
            continue; // served by `kept` or a newer version
        }
        // Acquire: as in `trim`'s walk.
        let first = kept.prev.load(Ordering::Acquire, guard);
        let mut cur = first;
        // SAFETY: pinned; nodes reachable from a kept version are live.
        while let Some(version) = unsafe { cur.as_ref() } {
            if version.final_stamp() <= r {
                break;
            }
            cur = version.prev.load(Ordering::Acquire, guard);
        }
        // SAFETY: as above.
        let Some(target) = (unsafe { cur.as_ref() }) else {
            break; // the chain ends above `r`: nothing older to keep or to cut
        };
        if cur != first {
            // Release: a walker that loads the new link sees `target` initialised (it was
            // published long ago; this keeps the argument local). The skipped versions keep
            // their own links, so a walker standing on one still reaches `target`.
            kept.prev.store(cur, Ordering::Release);
            let mut skipped = first;
            while skipped != cur {
                // SAFETY: `skipped` is between `kept` and `target`, so live and now unlinked.
                let next = unsafe { skipped.deref() }
                    .prev
                    .load(Ordering::Acquire, guard);
                // SAFETY: unlinked under the TVar's lock, so we alone own it.
                unsafe {
                    retired.version(NonNull::new_unchecked(skipped.as_raw() as *mut Version<T>))
                };
                skipped = next;
            }
        }
        kept = target;
    }
    // SAFETY: `kept` is the newest version under the oldest announced snapshot (or under the
    // horizon): every snapshot stops at it or above.
    unsafe { cut_below(kept, guard, retired) };
}

/// Cut the versions below `version` and retire them.
///
/// # Safety
///
/// As for [`trim`]; no snapshot reads below `version`.
unsafe fn cut_below<T>(version: &Version<T>, guard: &Guard, retired: &mut Retired) {
    // Relaxed: the tail is unreachable for every snapshot (they all stop at `version`), and a
    // walker that already loaded the old pointer is protected by its pin.
    let tail = version.prev.swap(Shared::null(), Ordering::Relaxed, guard);
    if let Some(tail) = NonNull::new(tail.as_raw() as *mut Version<T>) {
        // SAFETY: the swap made us the only owner of the tail.
        unsafe { retired.chain(tail) };
    }
}

/// Versions one thread unlinked, freed together by one deferred function once every thread
/// that might stand on them has unpinned.
///
/// One deferred function per unlinked tail cost more than the frees themselves: each is a slot
/// in the thread's epoch bag, and every 64 of them a sealed bag allocated for the global queue
/// (a large allocation that makes glibc consolidate its small free lists; with two committing
/// threads this was the largest cost of a transfer). Deferring a batch late is safe: a thread
/// that could reach a version was pinned before it was unlinked, so before the defer.
#[derive(Default)]
pub(crate) struct Retired(Batch);

/// Retired entries after which a committer defers the batch.
#[cfg(not(loom))]
pub(crate) const RETIRE_BATCH: usize = 32;
/// Under loom every retirement is deferred at once, so a model of a few commits reclaims.
#[cfg(loom)]
pub(crate) const RETIRE_BATCH: usize = 1;

impl Retired {
    /// Retire one version, not the ones it links to.
    ///
    /// # Safety
    ///
    /// The caller owns the version: it unlinked it under the TVar's lock (readers standing on
    /// it are pinned).
    pub(crate) unsafe fn version<T>(&mut self, node: NonNull<Version<T>>) {
        self.0.push((node.as_ptr() as usize, destroy_one::<T>));
    }

    /// Retire a tail of versions.
    ///
    /// # Safety
    ///
    /// As for [`Retired::version`], for the whole tail.
    unsafe fn chain<T>(&mut self, tail: NonNull<Version<T>>) {
        self.0.push((tail.as_ptr() as usize, destroy_chain_at::<T>));
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Defer the frees of everything retired past every current pin. Only a defer: no deferred
    /// function runs here.
    pub(crate) fn defer(&mut self, guard: &Guard) {
        if self.0.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.0, spare_batch());
        // SAFETY: every entry is owned by the batch (`version`, `chain`) and unreachable for
        // threads that pin from now on; the free waits for the others. Values are `Send` per
        // `TVar::new`.
        unsafe { guard.defer_unchecked(move || free_batch(batch)) };
    }
}

type Batch = Vec<(usize, unsafe fn(usize))>;

/// Emptied batch buffers, so that retiring allocates nothing in a steady state (a buffer is
/// emptied on another thread than the one that filled it). Not under loom: a deferred function
/// may run after the model's execution, when its locks are gone.
#[cfg(not(loom))]
static BATCHES: Mutex<Vec<Batch>> = Mutex::new(Vec::new());

/// Buffers [`BATCHES`] keeps.
#[cfg(not(loom))]
const SPARE_BATCHES: usize = 64;

fn spare_batch() -> Batch {
    #[cfg(not(loom))]
    if let Some(batch) = BATCHES.lock().pop() {
        return batch;
    }
    Vec::with_capacity(2 * RETIRE_BATCH)
}

fn keep_batch(batch: Batch) {
    #[cfg(not(loom))]
    {
        let mut spare = BATCHES.lock();
        if spare.len() < SPARE_BATCHES {
            spare.push(batch);
        }
    }
    #[cfg(loom)]
    drop(batch);
}

/// Free a batch; a panicking destructor does not leak the rest of it, and the first panic is
/// resumed at the end.
fn free_batch(mut batch: Batch) {
    let mut first_panic = None;
    for (addr, free) in batch.drain(..) {
        // SAFETY: each entry owns its versions (`Retired::defer`).
        let freed = std::panic::catch_unwind(|| unsafe { free(addr) });
        if let Err(panic) = freed {
            first_panic.get_or_insert(panic);
        }
    }
    keep_batch(batch);
    if let Some(panic) = first_panic {
        std::panic::resume_unwind(panic);
    }
}

/// [`destroy_chain`] from an erased address.
///
/// # Safety
///
/// As for [`destroy_chain`]; `addr` is a `*mut Version<T>`.
unsafe fn destroy_chain_at<T>(addr: usize) {
    // SAFETY: forwarded.
    unsafe { destroy_chain(Shared::from(addr as *const Version<T>)) }
}

/// Free one version, not the ones it links to.
///
/// # Safety
///
/// The caller owns the version: nothing else can reach or free it.
unsafe fn destroy_one<T>(addr: usize) {
    let node = addr as *mut Version<T>;
    // SAFETY: owned per the contract; blocks are global-allocator blocks of the node's layout.
    unsafe {
        std::ptr::drop_in_place(node);
        crate::alloc::dealloc(NonNull::new_unchecked(node));
    }
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
