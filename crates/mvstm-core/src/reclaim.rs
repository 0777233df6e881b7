//! Reclaiming versions that no snapshot can read.
//!
//! A version is garbage once a newer version of the same TVar is old enough that every running
//! and future snapshot reads it (or something newer). We call that bound the *horizon*:
//!
//! > Every transaction that is pinned now, or pins later, has a snapshot `rv >= HORIZON`.
//!
//! The horizon advances through crossbeam-epoch. The committer of every [`HORIZON_EVERY`]th stamp
//! reads the clock, `v`, defers `HORIZON = max(HORIZON, v)`, and hands its bag to the global queue
//! once its commit is over. The deferred function runs only after every thread pinned at the
//! time of the defer has unpinned, and a thread that pins after that point loads the clock after
//! its pin's `SeqCst` fence, so it sees at least `v` (the same argument that makes epoch
//! reclamation sound: what happened before the defer is visible to late pinners). A snapshot is
//! always taken while pinned, so the invariant holds.
//!
//! A committing writer then trims, while it holds the TVar's lock (`version.rs`): it looks for the
//! newest version with `stamp <= HORIZON` below the version it just covered (which every
//! snapshot can still read) and cuts everything below it, looking a couple of versions down on
//! every write and walking the whole chain once every few dozen writes of that TVar. Cut versions
//! are *retired* ([`Retired`]): freed by a deferred function, so a reader that was already
//! walking through them finishes safely. A value is dropped exactly once: a cut happens under the
//! TVar's lock with a `swap`, so only one thread owns a tail.
//!
//! A chain therefore holds the versions newer than the horizon plus a bounded number more:
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
//!
//! # The deferred-free context
//!
//! A thread running a transaction body must not pin again or collect: collecting runs other
//! values' destructors, user code, inside the transaction. So this module also keeps, per
//! thread, whether a body runs ([`in_transaction`], set by [`InTxn`]) and what the body left to
//! free: TVars whose last handle was dropped inside it ([`queue_free`]) and a dirty default epoch
//! bag; the runtime runs them once the attempt is over ([`after_attempt`]).

use crate::clock;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crossbeam_epoch::Guard;
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};

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

/// What a trimmer may cut below: `(horizon, floor)`, where the floor is the horizon or, below
/// it, the oldest snapshot a long reader announced. Versions under the horizon but above the
/// floor are kept one per announced snapshot ([`announced_newest_first`]).
pub(crate) fn trim_bounds() -> (u64, u64) {
    // Acquire: pairs with the Release `fetch_max` of the deferred advance (see module docs).
    let horizon = HORIZON.load(Ordering::Acquire);
    // Acquire: after the horizon, so an announcement below it is seen (module docs).
    let long_readers = LONG_READERS.load(Ordering::Acquire) > 0;
    let floor = if long_readers {
        horizon.min(MIN_ANNOUNCED.load(Ordering::Acquire))
    } else {
        horizon
    };
    (horizon, floor)
}

/// The snapshots long readers announced, newest first.
pub(crate) fn announced_newest_first() -> SmallVec<[u64; 8]> {
    let mut snapshots: SmallVec<[u64; 8]> = ANNOUNCED.lock().iter().copied().collect();
    snapshots.sort_unstable_by(|a, b| b.cmp(a));
    snapshots
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
    /// Retire what `addr` owns, to be freed by `free(addr)` once no thread can stand on it.
    ///
    /// # Safety
    ///
    /// The caller owns what `addr` names (it unlinked it under a TVar's lock, so threads that
    /// pin from now on cannot reach it), `free(addr)` frees exactly that, and it is `Send`.
    pub(crate) unsafe fn push(&mut self, addr: usize, free: unsafe fn(usize)) {
        self.0.push((addr, free));
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

// The deferred-free context of a thread: whether a transaction body runs on it, and what the
// body left to free once its attempt is over.
crate::sync::thread_local! {
    /// `IN_BODY` while a body or an `on_commit` hook runs on this thread, plus
    /// `FREES_QUEUED` once `queue_free` queued something during it.
    static IN_TXN: Cell<u8> = const { Cell::new(0) };
    /// TVars whose last handle was dropped inside a transaction, freed after the attempt.
    static QUEUED_FREES: RefCell<Vec<QueuedFree>> = const { RefCell::new(Vec::new()) };
}

const IN_BODY: u8 = 1;
const FREES_QUEUED: u8 = 2;
/// A TVar free went into crossbeam's default bag of this thread: flush it after the next
/// attempt (flushing on every drop would cost a global push and a collection each time, and
/// recurse when the drop itself runs inside a collection).
const DEFAULT_BAG_DIRTY: u8 = 4;

/// Note that this thread's default epoch bag holds a TVar free; the next attempt flushes it.
///
/// A TVar may be dropped while this thread's thread-locals are being torn down (a value held in
/// another thread-local, or freed by the collector then): nothing is noted then, and the epoch
/// handle flushes its bag as it goes.
#[inline]
pub(crate) fn note_default_bag_dirty() {
    let _ = IN_TXN.try_with(|f| f.set(f.get() | DEFAULT_BAG_DIRTY));
}

/// Whether a transaction body or `on_commit` hook is running on this thread. If so, the thread
/// is pinned by that attempt, and the attempt will run the frees queued by `queue_free`.
///
/// False while the thread's thread-locals are being torn down: no transaction runs then.
#[inline]
pub(crate) fn in_transaction() -> bool {
    IN_TXN.try_with(|f| f.get() & IN_BODY != 0).unwrap_or(false)
}

/// A TVar free to be deferred once the attempt is over.
pub(crate) struct QueuedFree {
    pub(crate) addr: usize,
    /// Frees the variable at `addr`.
    pub(crate) destroy: unsafe fn(usize),
}

/// Queue the free of a TVar whose last handle was dropped inside a transaction: deferring it
/// now would pin and perhaps collect, running other values' destructors (user code) inside
/// the transaction. The caller checked `in_transaction()`.
pub(crate) fn queue_free(free: QueuedFree) {
    QUEUED_FREES.with(|q| q.borrow_mut().push(free));
    IN_TXN.with(|f| f.set(f.get() | FREES_QUEUED));
}

/// Work an attempt left for after it: queued TVar frees, a dirty default bag.
#[inline]
pub(crate) fn after_attempt(flags: u8, handle: &crossbeam_epoch::LocalHandle) {
    if flags != 0 {
        after_attempt_slow(flags, handle);
    }
}

#[cold]
fn after_attempt_slow(flags: u8, handle: &crossbeam_epoch::LocalHandle) {
    // Clear what is handled first: if a destructor panics below, the rest stays flagged and a
    // later attempt finishes it.
    IN_TXN.with(|f| f.set(f.get() & !flags));
    if flags & FREES_QUEUED != 0 {
        run_queued_frees(handle);
    }
    if flags & DEFAULT_BAG_DIRTY != 0 {
        crossbeam_epoch::pin().flush();
    }
}

/// Defer the queued frees past every current pin and hand them to the collector.
fn run_queued_frees(handle: &crossbeam_epoch::LocalHandle) {
    let frees = QUEUED_FREES.with(|q| std::mem::take(&mut *q.borrow_mut()));
    let guard = handle.pin();
    for QueuedFree { addr, destroy } in frees {
        // SAFETY: the last handle is gone (`queue_free`'s caller); deferring past every
        // current pin keeps the pointers in running attempts' logs valid, as in `release_ref`.
        unsafe {
            guard.defer_unchecked(move || destroy(addr));
        }
    }
    guard.flush();
}

/// Marks this thread as inside a transaction until dropped, also when unwinding.
pub(crate) struct InTxn;

impl InTxn {
    #[inline]
    pub(crate) fn enter() -> InTxn {
        IN_TXN.with(|f| f.set(f.get() | IN_BODY));
        InTxn
    }

    /// Leave the transaction; the other flags that are set (they stay set until handled).
    #[inline]
    pub(crate) fn exit(self) -> u8 {
        std::mem::forget(self);
        IN_TXN.with(|f| {
            let flags = f.get() & !IN_BODY;
            f.set(flags);
            flags
        })
    }
}

impl Drop for InTxn {
    #[inline]
    fn drop(&mut self) {
        // Only reached when unwinding; queued frees stay queued for the next attempt's exit.
        IN_TXN.with(|f| f.set(f.get() & !IN_BODY));
    }
}
