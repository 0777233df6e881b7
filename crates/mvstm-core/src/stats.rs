//! What transactions did: counters for [`stats()`](crate::stats()) and opt-in conflict tracking.
//!
//! # Counters that cost the commit path one store
//!
//! Every thread counts into its own block of atomics, padded to its own cache lines and
//! registered in a global list on the thread's first count. Only that thread writes its block,
//! with a relaxed load and a relaxed store: no read-modify-write, no lock prefix, no cache line
//! shared with another writer, so counting a commit costs a thread-local load and one store
//! (the shape of the per-CPU counters in Linux, `percpu_counter`). A [`Snapshot`] takes the
//! registry's lock and sums relaxed loads of every block, plus the totals of threads that have
//! exited: a thread's last act folds its block into those totals under the same lock, so a
//! snapshot never counts it twice or loses it. The counts of one thread are exact; a snapshot
//! taken while other threads run is a sum of per-thread values read at slightly different
//! instants, like any statistics counter.
//!
//! # Which TVars conflict
//!
//! Off by default, and then it costs one relaxed load of a global flag on the conflict path
//! only (never on the commit path). When on ([`track_conflicts`]), each conflict walks the
//! abandoned attempt's read and write logs for the variables that changed since the attempt
//! saw them (or that another transaction holds locked) and counts each in a global table. The
//! table keeps a strong reference to every variable it counts, so an address cannot be reused by
//! a new TVar while counted; [`clear_conflicts`] or turning tracking off lets them go.
//!
//! The counters are plain statistics, not a concurrency kernel: under loom they compile to
//! nothing, and this module uses std's atomics directly instead of the `sync` facade.

use crate::error::AbortCause;
use crate::tvar::{ErasedRef, TVar};
use crate::txn::Txn;
use std::fmt;
use std::time::Duration;

/// A snapshot of the counters of every transaction this process ran, from [`stats()`].
///
/// Counts are totals since the process started; [`Snapshot::since`] gives the counts between
/// two snapshots. An *attempt* is one run of a body: a call of `atomically` makes one attempt
/// that commits, plus one for each conflict and each retry before it.
///
/// ```
/// use mvstm::{atomically, TVar};
/// let before = mvstm::stats();
/// let v = TVar::new(0);
/// atomically(|tx| tx.modify(&v, |x| x + 1)); // an update
/// atomically(|tx| tx.read(&v));             // read-only
/// let done = mvstm::stats().since(&before);
/// // Other threads of the process count too, hence `>=`.
/// assert!(done.commits >= 1 && done.read_only_commits >= 1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Update transactions committed (they wrote something).
    pub commits: u64,
    /// Read-only transactions committed (they wrote nothing; no lock, no validation).
    pub read_only_commits: u64,
    /// Attempts abandoned because of a conflict with another transaction, and re-run.
    pub conflicts: u64,
    /// Attempts abandoned by `retry` (or `retry_on`, `retry_all`, `retry_until`, `retry_for`).
    pub retries: u64,
    /// Attempts abandoned by `Txn::abort` or a vetoing `try_on_commit` hook.
    pub aborts: u64,
    /// Attempts abandoned by a panic in the body or an `on_commit` hook.
    pub panics: u64,
    /// Times a thread blocked in a retry (one per wait; most retries block once).
    pub blocks: u64,
    /// Total time threads spent blocked in retries.
    pub blocked: Duration,
}

impl Snapshot {
    /// The counts from `earlier` to `self`: what happened between two snapshots.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let v = TVar::new(1);
    /// let before = mvstm::stats();
    /// for _ in 0..10 {
    ///     atomically(|tx| tx.modify(&v, |x| x * 2));
    /// }
    /// assert!(mvstm::stats().since(&before).commits >= 10);
    /// ```
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            commits: self.commits.saturating_sub(earlier.commits),
            read_only_commits: self
                .read_only_commits
                .saturating_sub(earlier.read_only_commits),
            conflicts: self.conflicts.saturating_sub(earlier.conflicts),
            retries: self.retries.saturating_sub(earlier.retries),
            aborts: self.aborts.saturating_sub(earlier.aborts),
            panics: self.panics.saturating_sub(earlier.panics),
            blocks: self.blocks.saturating_sub(earlier.blocks),
            blocked: self.blocked.saturating_sub(earlier.blocked),
        }
    }

    /// Attempts that were abandoned and run again or ended: conflicts, retries, aborts and
    /// panics.
    ///
    /// ```
    /// let s = mvstm::stats::Snapshot { conflicts: 2, retries: 1, ..Default::default() };
    /// assert_eq!(s.abandoned(), 3);
    /// ```
    pub fn abandoned(&self) -> u64 {
        self.conflicts + self.retries + self.aborts + self.panics
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} commits ({} read-only), re-runs: {} conflicts, {} retries; {} aborts, {} \
             panics; blocked {} times for {:?}",
            self.commits + self.read_only_commits,
            self.read_only_commits,
            self.conflicts,
            self.retries,
            self.aborts,
            self.panics,
            self.blocks,
            self.blocked
        )
    }
}

/// The counters of every transaction this process ran so far (see [`Snapshot`]).
///
/// Cheap enough to call from a status endpoint: a lock and a few loads per thread that ran a
/// transaction. Counting costs the transactions themselves one uncontended store per commit
/// (see [the module docs](self)).
///
/// ```
/// let s = mvstm::stats();
/// println!("{s}");
/// assert!(s.commits + s.read_only_commits >= s.commits);
/// ```
pub fn stats() -> Snapshot {
    imp::snapshot()
}

/// Turn conflict tracking on or off (off at start). While on, every conflict counts the TVars
/// that caused it, for [`hot_tvars`]; while off, conflicts cost one extra relaxed load.
///
/// Turning it off keeps the counts gathered so far; [`clear_conflicts`] drops them.
///
/// ```
/// mvstm::stats::track_conflicts(true);
/// assert!(mvstm::stats::tracking_conflicts());
/// mvstm::stats::track_conflicts(false);
/// ```
pub fn track_conflicts(on: bool) {
    imp::TRACK.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`track_conflicts`] is on.
///
/// ```
/// assert!(!mvstm::stats::tracking_conflicts()); // off until turned on
/// ```
pub fn tracking_conflicts() -> bool {
    imp::TRACK.load(std::sync::atomic::Ordering::Relaxed)
}

/// The `n` TVars that caused the most conflicts since tracking was turned on (or last
/// cleared), most first.
///
/// A conflict counts each variable that had changed since the abandoned attempt saw it, or that
/// another transaction held locked: usually one, the variable two transactions fought over.
///
/// ```
/// use mvstm::{atomically, TVar};
/// use std::sync::{Arc, Barrier};
/// let (hot, cold) = (TVar::new(0u64), TVar::new(0u64));
/// mvstm::stats::track_conflicts(true);
/// // Force one conflict: the first attempt reads `hot`, another thread changes it, and the
/// // attempt's commit fails validation; the second attempt commits.
/// atomically(|tx| {
///     let h = tx.read(&hot)?;
///     if tx.attempt() == 1 {
///         let other = hot.clone();
///         std::thread::spawn(move || atomically(|tx| tx.modify(&other, |x| x + 1)))
///             .join()
///             .unwrap();
///     }
///     tx.write(&cold, h)
/// });
/// let top = mvstm::stats::hot_tvars(5);
/// assert!(top.iter().any(|t| t.is(&hot) && t.conflicts() >= 1));
/// assert!(!top.iter().any(|t| t.is(&cold)));
/// mvstm::stats::track_conflicts(false);
/// mvstm::stats::clear_conflicts();
/// ```
pub fn hot_tvars(n: usize) -> Vec<HotTVar> {
    imp::hot_tvars(n)
}

/// Forget the conflict counts gathered so far (and the references to their TVars).
///
/// ```
/// mvstm::stats::clear_conflicts();
/// assert!(mvstm::stats::hot_tvars(10).is_empty());
/// ```
pub fn clear_conflicts() {
    imp::clear_conflicts()
}

/// One entry of [`hot_tvars`]: a TVar and how many conflicts it caused.
///
/// It holds a reference to the variable (whatever its type), so [`HotTVar::is`] can tell which
/// of the caller's TVars it is.
pub struct HotTVar {
    var: Held,
    conflicts: u64,
}

impl HotTVar {
    /// How many conflicts this TVar caused.
    ///
    /// ```
    /// for hot in mvstm::stats::hot_tvars(3) {
    ///     println!("{} conflicts", hot.conflicts());
    /// }
    /// ```
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Whether this is `var` (or a clone of it).
    ///
    /// ```
    /// use mvstm::TVar;
    /// let accounts: Vec<TVar<i64>> = (0..4).map(TVar::new).collect();
    /// for hot in mvstm::stats::hot_tvars(3) {
    ///     if let Some(i) = accounts.iter().position(|a| hot.is(a)) {
    ///         println!("account {i}: {} conflicts", hot.conflicts());
    ///     }
    /// }
    /// ```
    pub fn is<T: Clone + Send + Sync + 'static>(&self, var: &TVar<T>) -> bool {
        self.var.0.ptr() == var.header()
    }
}

impl fmt::Debug for HotTVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotTVar")
            .field("var", &(self.var.0.addr() as *const ()))
            .field("conflicts", &self.conflicts)
            .finish()
    }
}

/// A strong reference to a counted TVar, kept in the global table.
struct Held(ErasedRef);

// SAFETY: an `ErasedRef` is a counted pointer to a TVar's header; every TVar's value type is
// `Send + Sync` (required by `TVar::new`), so the variable may be used and freed from any thread,
// and the header's fields that `Held` touches (the count, the address) are atomics or constant.
unsafe impl Send for Held {}
// SAFETY: as above; `&Held` only reads the address.
unsafe impl Sync for Held {}

/// What the attempt loop counts.
#[derive(Clone, Copy)]
#[repr(usize)]
enum Counter {
    Commits,
    ReadOnlyCommits,
    Conflicts,
    Retries,
    Aborts,
    Panics,
    Blocks,
    BlockedNanos,
}

/// How many [`Counter`]s there are.
#[cfg(not(loom))]
const COUNTERS: usize = 8;

/// A transaction committed (`read_only`: it wrote nothing).
#[inline]
pub(crate) fn committed(read_only: bool) {
    imp::add(
        if read_only {
            Counter::ReadOnlyCommits
        } else {
            Counter::Commits
        },
        1,
    );
}

/// An attempt was abandoned for `cause`.
#[inline]
pub(crate) fn abandoned(cause: AbortCause) {
    let counter = match cause {
        AbortCause::Conflict => Counter::Conflicts,
        AbortCause::Retry => Counter::Retries,
        AbortCause::Abort => Counter::Aborts,
        AbortCause::Panic => Counter::Panics,
    };
    imp::add(counter, 1);
}

/// A thread blocked in a retry for `waited`.
#[inline]
pub(crate) fn blocked(waited: Duration) {
    imp::add(Counter::Blocks, 1);
    imp::add(
        Counter::BlockedNanos,
        u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
    );
}

/// An attempt conflicted: if tracking is on, count the variables that caused it. Called before
/// the attempt is cleared, while it is still pinned (its logged headers are live).
#[inline]
pub(crate) fn conflicted(tx: &Txn) {
    if tracking_conflicts() {
        imp::count_conflict(tx);
    }
}

#[cfg(not(loom))]
mod imp {
    use super::{Counter, Held, HotTVar, Snapshot, COUNTERS};
    use crate::lock::LockWord;
    use crate::tvar::ErasedRef;
    use crate::txn::Txn;
    use crate::version::Header;
    use crossbeam_utils::CachePadded;
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::ptr::{self, NonNull};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    pub(super) static TRACK: AtomicBool = AtomicBool::new(false);

    /// One thread's counters; only that thread writes them.
    type Block = CachePadded<[AtomicU64; COUNTERS]>;

    struct Registry {
        /// Blocks of running threads (leaked boxes, freed by their thread's `BlockOwner`).
        live: Vec<BlockPtr>,
        /// Totals of threads that exited, and counts made while a thread was being torn down.
        retired: [u64; COUNTERS],
    }

    #[derive(Clone, Copy, PartialEq)]
    struct BlockPtr(*const Block);
    // SAFETY: a block is only atomics; the pointer is dereferenced under the registry's lock
    // (readers) or by its owning thread, and freed only after it left the registry.
    unsafe impl Send for BlockPtr {}

    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        live: Vec::new(),
        retired: [0; COUNTERS],
    });

    /// Conflict counts by header address; each entry holds its TVar.
    static CONFLICTS: Mutex<Option<HashMap<usize, (Held, u64)>>> = Mutex::new(None);

    thread_local! {
        /// This thread's block, or null before its first count and after its exit began.
        static BLOCK: Cell<*const Block> = const { Cell::new(ptr::null()) };
        /// Registered with the block; retires it when the thread exits.
        static OWNER: BlockOwner = const { BlockOwner };
    }

    fn registry() -> std::sync::MutexGuard<'static, Registry> {
        // A panic while the lock is held cannot leave the counts inconsistent beyond one count.
        REGISTRY
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[inline]
    pub(super) fn add(counter: Counter, n: u64) {
        let block = BLOCK.with(Cell::get);
        if block.is_null() {
            return add_slow(counter, n);
        }
        // SAFETY: a non-null `BLOCK` points to this thread's registered block, which is freed
        // only by `BlockOwner::drop`, after it reset `BLOCK` to null.
        let cell = unsafe { &(&*block)[counter as usize] };
        // Only this thread writes the cell: a load and a store, no read-modify-write.
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The thread's first count: register a block. While the thread is being torn down, count
    /// into the retired totals instead.
    #[cold]
    fn add_slow(counter: Counter, n: u64) {
        // Touching `OWNER` registers its destructor; it fails once the thread's exit began.
        if OWNER.try_with(|_| ()).is_err() {
            let mut registry = registry();
            let total = &mut registry.retired[counter as usize];
            *total = total.wrapping_add(n);
            return;
        }
        let block: *const Block = Box::into_raw(Box::new(CachePadded::new(Default::default())));
        registry().live.push(BlockPtr(block));
        BLOCK.with(|b| b.set(block));
        add(counter, n);
    }

    struct BlockOwner;

    impl Drop for BlockOwner {
        fn drop(&mut self) {
            let Ok(block) = BLOCK.try_with(|b| b.replace(ptr::null())) else {
                return;
            };
            if block.is_null() {
                return;
            }
            let mut registry = registry();
            // SAFETY: our registered block; no one frees it but us, and we do so below.
            let counts = unsafe { &*block };
            for (total, cell) in registry.retired.iter_mut().zip(counts.iter()) {
                *total = total.wrapping_add(cell.load(Ordering::Relaxed));
            }
            registry.live.retain(|&p| p != BlockPtr(block));
            drop(registry);
            // SAFETY: made by `Box::into_raw` in `add_slow`; out of the registry and out of
            // `BLOCK`, so no reader and no writer is left.
            drop(unsafe { Box::from_raw(block as *mut Block) });
        }
    }

    pub(super) fn snapshot() -> Snapshot {
        let registry = registry();
        let mut sum = registry.retired;
        for &BlockPtr(block) in &registry.live {
            // SAFETY: blocks in the registry are live: their owner removes them under this lock
            // before freeing them.
            let counts = unsafe { &*block };
            for (total, cell) in sum.iter_mut().zip(counts.iter()) {
                *total = total.wrapping_add(cell.load(Ordering::Relaxed));
            }
        }
        drop(registry);
        let get = |c: Counter| sum[c as usize];
        Snapshot {
            commits: get(Counter::Commits),
            read_only_commits: get(Counter::ReadOnlyCommits),
            conflicts: get(Counter::Conflicts),
            retries: get(Counter::Retries),
            aborts: get(Counter::Aborts),
            panics: get(Counter::Panics),
            blocks: get(Counter::Blocks),
            blocked: Duration::from_nanos(get(Counter::BlockedNanos)),
        }
    }

    fn conflicts() -> std::sync::MutexGuard<'static, Option<HashMap<usize, (Held, u64)>>> {
        CONFLICTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cold]
    pub(super) fn count_conflict(tx: &Txn) {
        let mut culprits: Vec<NonNull<Header>> = Vec::new();
        for r in &tx.reads {
            // SAFETY: logged headers are live while the attempt is pinned (the caller's
            // contract).
            let word = unsafe { r.header.as_ref() }.lock.load();
            if word != LockWord::unlocked(r.stamp) {
                culprits.push(r.header);
            }
        }
        for w in tx.writes.entries() {
            // SAFETY: as above.
            let word = unsafe { w.header.as_ref() }.lock.load();
            if word.is_locked() || word.stamp() > tx.rv {
                culprits.push(w.header);
            }
        }
        culprits.sort_unstable();
        culprits.dedup();
        if culprits.is_empty() {
            return;
        }
        // Strong references are taken before the table's lock. One dropped under it (a variable
        // already counted) is never the last, since the table holds one: dropping a last
        // reference may run the epoch collector, that is, other values' destructors, which may
        // run transactions and come back here.
        let mut held: Vec<ErasedRef> = culprits
            .iter()
            // SAFETY: live, as above.
            .filter_map(|&h| unsafe { ErasedRef::upgrade(h) })
            .collect();
        let mut table = conflicts();
        let table = table.get_or_insert_with(HashMap::new);
        for var in held.drain(..) {
            match table.get_mut(&var.addr()) {
                Some((_, count)) => *count += 1,
                None => {
                    table.insert(var.addr(), (Held(var), 1));
                }
            }
        }
    }

    pub(super) fn hot_tvars(n: usize) -> Vec<HotTVar> {
        let table = conflicts();
        let mut hot: Vec<HotTVar> = table
            .iter()
            .flat_map(|t| t.values())
            .map(|(var, count)| HotTVar {
                var: Held(var.0.clone()),
                conflicts: *count,
            })
            .collect();
        drop(table);
        hot.sort_by_key(|h| std::cmp::Reverse(h.conflicts));
        hot.truncate(n);
        hot
    }

    pub(super) fn clear_conflicts() {
        let old = conflicts().take();
        drop(old); // the references go outside the lock (see `count_conflict`)
    }
}

/// Under loom the counters are not modelled: nothing is counted.
#[cfg(loom)]
mod imp {
    use super::{Counter, HotTVar, Snapshot};
    use crate::txn::Txn;
    use std::sync::atomic::AtomicBool;

    pub(super) static TRACK: AtomicBool = AtomicBool::new(false);

    #[inline]
    pub(super) fn add(_: Counter, _: u64) {}

    pub(super) fn snapshot() -> Snapshot {
        Snapshot::default()
    }

    pub(super) fn count_conflict(_: &Txn) {}

    pub(super) fn hot_tvars(_: usize) -> Vec<HotTVar> {
        Vec::new()
    }

    pub(super) fn clear_conflicts() {}
}
