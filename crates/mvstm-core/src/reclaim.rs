//! Reclaiming versions that no snapshot can read.
//!
//! A version is garbage once a newer version of the same TVar is old enough that every running
//! and future snapshot reads it (or something newer). We call that bound the *horizon*:
//!
//! > Every attempt that runs now, or starts later, has a snapshot `rv >= HORIZON`, except long
//! > readers, whose snapshots are announced instead (below). Readers without a snapshot
//! > (`TVar::load`, the single operations of `view.rs`) read only a head and the version
//! > directly below it, which trims never cut.
//!
//! Each thread's transaction object owns a [`Slot`], a word on its own cache line. An attempt
//! *enters* it when it begins ([`Slot::enter`]): it stores a clock value `c` there (`SeqCst`),
//! then loads the clock again (`SeqCst`) for its snapshot, so `rv >= c`; it *leaves* (stores
//! `IDLE`) when it ends. The committer of every [`HORIZON_EVERY`]th stamp `wv` then reads every
//! slot (`SeqCst`) and sets `HORIZON = max(HORIZON, min(wv, slots))` ([`advance_horizon`]).
//! Why that holds the invariant: the stamp is a `SeqCst` read-modify-write before the committer's
//! slot loads, and the slot store is before the attempt's snapshot load, all in the single
//! `SeqCst` order. Either the committer's load of a slot comes after the slot store, and the
//! minimum is at most `c <= rv`; or it comes before, and then so does the stamp, and the
//! attempt's snapshot load, later in the order, returns at least `wv` (the store-buffering shape
//! of retry registration, `parking.rs`). Attempts that start later load a clock `>= wv`.
//!
//! So the horizon trails the oldest snapshot that runs, and no more. With more threads than cores
//! that is still a round of the scheduler: a thread descheduled in the middle of an attempt holds
//! the horizon at its snapshot until it runs again (at 8 threads on 2 cores, 45,000 to 49,000
//! stamps behind the clock on average, about 13 ms of commits). It used to advance through
//! crossbeam-epoch, a deferred `HORIZON = v` that ran once every thread pinned at the time of the
//! defer had unpinned, twice over (32,000 stamps at the lower commit rate of then, about 20 ms),
//! and every advance forced a flush of the committer's epoch bag. The epoch still decides when a
//! version that was cut may be *freed* (readers may stand on it).
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
//! memory stays bounded under constant overwrites. A running attempt holds the horizon back,
//! which is why a blocked `retry` ends its attempt (unpins and leaves its slot) before it parks.
//!
//! # Long readers
//!
//! A read-only transaction that reads a lot would hold the horizon (and every deferred free)
//! back for as long as it runs. Instead, once it has read [`REPIN_READS`] variables it
//! *announces* its snapshot here, leaves its slot, and from then on re-pins every
//! [`REPIN_READS`] reads, so the epoch and the horizon move on without it. Its own versions stay
//! safe because trimming keeps, besides the newest version under the horizon, the newest version
//! under every announced snapshot, and cuts below the oldest of them:
//!
//! - A trimmer that loaded a horizon above an announced snapshot `r` sees the announcement: the
//!   reader's slot held the horizon at or below `r` until it left it (a Release store, after
//!   the announcement), so the advance that passed `r` read the slot idle, synchronised with
//!   that store, and published the horizon with Release, which the trimmer's Acquire load of
//!   `HORIZON` synchronises with.
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
use crate::sync::{AtomicU64, AtomicUsize, LeakPool, Mutex, Ordering};
use crossbeam_epoch::Guard;
use crossbeam_utils::CachePadded;
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

/// A thread's snapshot slot: while an attempt of the thread runs, a lower bound of its
/// snapshot; [`IDLE`] otherwise (module docs).
pub(crate) struct Slot(CachePadded<AtomicU64>);

/// The word of a slot whose thread runs no attempt.
const IDLE: u64 = u64::MAX;

// Every slot ever made, for the horizon advance to read (slots are never freed: the advance may
// look at one whenever it likes).
crate::sync::global! {
    static SLOTS: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());
}
/// The slots of dropped transaction objects, for the next ones.
static FREE_SLOTS: LeakPool<Slot> = LeakPool::new();

impl Slot {
    /// A slot from the pool, or a new one registered for the horizon advance; idle.
    pub(crate) fn acquire() -> &'static Slot {
        FREE_SLOTS.take().unwrap_or_else(|| {
            let slot = Box::leak(Box::new(Slot(CachePadded::new(AtomicU64::new(IDLE)))));
            SLOTS.lock().push(slot);
            slot
        })
    }

    /// Give a slot back to the pool; its owner runs no attempt any more.
    pub(crate) fn release(slot: &'static Slot) {
        // Idle already, unless the owner was dropped in the middle of an attempt: a pooled slot
        // must not hold the horizon back.
        slot.leave();
        FREE_SLOTS.give(slot);
    }

    /// Take a snapshot for an attempt and hold the horizon at or below it until [`Slot::leave`].
    ///
    /// The slot gets a clock value first, and the snapshot is a second load of the clock after
    /// it (module docs): an advance that does not see the slot comes before the slot's write in
    /// the `SeqCst` order, so the second load returns at least that advance's bound.
    #[inline]
    pub(crate) fn enter(&self) -> u64 {
        let bound = clock::snapshot();
        // SeqCst: one side of the store-buffering argument with `advance_horizon`.
        self.0.store(bound, Ordering::SeqCst);
        crate::sync::seq_cst_point();
        clock::snapshot_seq_cst()
    }

    /// The attempt is over (or, a long reader, is protected by its announcement instead): stop
    /// holding the horizon.
    ///
    /// Release: a horizon advance that reads `IDLE` sees what the thread did before, in
    /// particular a long reader's announcement (module docs).
    #[inline]
    pub(crate) fn leave(&self) {
        self.0.store(IDLE, Ordering::Release);
    }
}

/// Move the horizon to the oldest snapshot a running attempt may read, or to `wv` if none is
/// older. The caller took the stamp `wv` with the clock's `SeqCst` read-modify-write just
/// before (module docs). Reads every slot: the committer of one stamp in [`HORIZON_EVERY`] calls
/// it.
pub(crate) fn advance_horizon(wv: u64) {
    // The stamp's RMW comes before the slot loads in the `SeqCst` order (what loom needs spelled
    // out, see `sync.rs`); the attempts' side is in `Slot::enter`.
    crate::sync::seq_cst_point();
    let oldest = SLOTS
        .lock()
        .iter()
        // SeqCst: the other side of `Slot::enter`; Acquire for `Slot::leave`.
        .map(|slot| slot.0.load(Ordering::SeqCst))
        .fold(wv, u64::min);
    // Release: pairs with the Acquire in `trim_bounds`, so a trimmer that sees the new horizon
    // also sees the announcements of the long readers whose slots the advance found idle.
    HORIZON.fetch_max(oldest, Ordering::Release);
}

/// Announce the snapshot `rv` of a long reader, whose slot still holds the horizon at or below
/// `rv`; the caller leaves its slot afterwards.
pub(crate) fn announce(rv: u64) {
    let mut announced = ANNOUNCED.lock();
    announced.push(rv);
    // Release (both): published before the caller leaves its slot, which the horizon advance
    // that passes `rv` synchronises with, and a trimmer's Acquire of that horizon with the
    // advance (module docs).
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
    // Acquire: pairs with the Release `fetch_max` of `advance_horizon` (see module docs).
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
