//! The version chain of a TVar: its header, its versions, and every operation on the chain —
//! link, finalize, unlink, read at a snapshot, trim, destroy.
//!
//! ```text
//!  Inner { header: Header { lock, waiters, holders, refs, ops }, head }
//!                                                                 │
//!                          Version { stamp: 9, value, prev } ◄────┘
//!                                                       │
//!                          Version { stamp: 4, value, prev } ──► null (trimmed)
//! ```
//!
//! A version never changes once its stamp is final: a read is an atomic load of a pointer to
//! immutable memory plus a clone, never a racy read. Versions are newest first; a snapshot `rv`
//! reads the first version whose stamp is `<= rv`. While its commit is undecided, a head's stamp
//! field is *pending* (`clock.rs`), and a reader resolves it without waiting.
//!
//! Only the holder of a TVar's lock changes its chain: it links its new version, makes it final,
//! and trims what no snapshot can read any more, below the newest version under the
//! reclamation horizon (`reclaim.rs`). What it cuts is retired into the committer's batch and
//! freed through crossbeam-epoch, so a reader walking the chain finishes safely.

use crate::clock;
use crate::lock::VarLock;
use crate::reclaim::{self, Retired};
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crossbeam_epoch::{self as epoch, Atomic, Guard, Shared};
use std::ptr::NonNull;

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

/// [`Header::below_head`] of a chain of one version.
const NONE_BELOW: u64 = u64::MAX;

/// One committed (or, while in a write log, private) value of a TVar.
pub(crate) struct Version<T> {
    /// The commit stamp, or while its commit is undecided the record of that commit with the
    /// [`clock::PENDING`] bit (see `clock.rs`). Final once it holds a stamp: it never changes
    /// again.
    pub(crate) stamp: AtomicU64,
    pub(crate) prev: Atomic<Version<T>>,
    pub(crate) value: T,
}

/// Operations on a TVar whose value type the logs have erased.
pub(crate) struct VarOps {
    /// Link the private `node` as the new head, its stamp field pending on a commit record;
    /// returns the version it covers (the old head), for `finalize` and `unlink`.
    pub(crate) link: unsafe fn(NonNull<Header>, NonNull<()>, u64) -> usize,
    /// Give the linked head `node` its final stamp, then trim the old versions below the one it
    /// covers into the list.
    pub(crate) finalize: unsafe fn(NonNull<Header>, NonNull<()>, usize, u64, &Guard, &mut Retired),
    /// Take the linked head `node` out again (its commit was abandoned), put back the version it
    /// covers, and retire the node.
    pub(crate) unlink: unsafe fn(NonNull<Header>, NonNull<()>, usize, &mut Retired),
    /// Drop a pending node that will not be published.
    pub(crate) drop_pending: unsafe fn(NonNull<()>),
    /// Free the variable and its whole chain (the last reference is gone).
    pub(crate) destroy: unsafe fn(NonNull<Header>),
    /// The stamp field of the current head version, pending or final (pins internally).
    pub(crate) head_stamp: unsafe fn(NonNull<Header>) -> u64,
    /// The stamp of the newest version with `stamp <= rv` (see [`Inner::version_at`]).
    pub(crate) stamp_at: unsafe fn(NonNull<Header>, u64, &Guard) -> u64,
}

/// The type-independent part of a TVar, first in `Inner<T>` so logs can point at it.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) lock: VarLock,
    /// Number of retry waiters registered on this TVar (see `parking.rs`).
    pub(crate) waiters: AtomicU32,
    /// Number of committers with `on_commit` hooks that hold this TVar shared: they read it,
    /// validated the read and are running hooks; no writer may commit it meanwhile (`commit.rs`).
    holders: AtomicU32,
    /// Writes since the last full trim of the chain; only the lock holder touches it.
    pub(crate) writes_since_trim: AtomicU32,
    /// The stamp of the version directly below the head, or [`NONE_BELOW`]; only the lock
    /// holder touches it. A publish reads it to decide, without touching that version's memory
    /// (most likely written by another core, long ago), whether a quick trim can cut there.
    below_head: AtomicU64,
    /// Handles (`TVar`s and `ErasedRef`s) of the variable (`tvar.rs`).
    pub(crate) refs: AtomicUsize,
    pub(crate) ops: &'static VarOps,
    /// Under loom, the variable's creation number (see [`Header::order_key`]).
    #[cfg(loom)]
    serial: usize,
}

impl Header {
    /// The header of a new variable with one handle.
    pub(crate) fn new(ops: &'static VarOps) -> Header {
        Header {
            lock: VarLock::new(),
            waiters: AtomicU32::new(0),
            holders: AtomicU32::new(0),
            writes_since_trim: AtomicU32::new(0),
            below_head: AtomicU64::new(NONE_BELOW),
            refs: AtomicUsize::new(1),
            ops,
            #[cfg(loom)]
            serial: crate::sync::creation_number(),
        }
    }

    /// Hold the variable shared, before validating a read of it.
    ///
    /// `SeqCst`, with the `SeqCst` lock-word loads of the validation after it and, on the
    /// writers' side, the `SeqCst` lock CAS before [`Header::held_shared`]: in the single order
    /// of `SeqCst` accesses either the writer's load comes after our increment (it sees the hold
    /// and waits or gives up), or its CAS comes before our validation's load (we see the variable
    /// locked or changed). The Dekker shape of retry registration (`parking.rs`).
    #[inline]
    pub(crate) fn hold_shared(&self) {
        self.holders.fetch_add(1, Ordering::SeqCst);
    }

    /// Release a hold taken by [`Header::hold_shared`].
    ///
    /// Release: the holder's commit (published before this, under a smaller stamp than any a
    /// waiting writer takes later) happens-before that writer's publish.
    #[inline]
    pub(crate) fn release_shared(&self) {
        self.holders.fetch_sub(1, Ordering::Release);
    }

    /// Whether a committer holds the variable shared; asked by a writer right after its lock
    /// CAS (`SeqCst`: see [`Header::hold_shared`]).
    #[inline]
    pub(crate) fn held_shared(&self) -> bool {
        self.holders.load(Ordering::SeqCst) != 0
    }

    /// The key of the global lock order, and of the order in which a waiter registers: the
    /// header's address.
    ///
    /// Under loom it is the variable's creation number instead: addresses change from one
    /// execution of a model to the next, so ordering by them would make the model take different
    /// steps for the same schedule, which loom cannot explore.
    ///
    /// # Safety
    ///
    /// `header` is live (it is only read under loom).
    #[inline]
    pub(crate) unsafe fn order_key(header: NonNull<Header>) -> usize {
        #[cfg(not(loom))]
        return header.as_ptr() as usize;
        #[cfg(loom)]
        // SAFETY: live per the contract.
        return unsafe { header.as_ref().serial };
    }
}

#[repr(C)]
pub(crate) struct Inner<T> {
    pub(crate) header: Header,
    pub(crate) head: Atomic<Version<T>>,
}

impl<T> Inner<T> {
    /// The newest version in the snapshot `rv`, and its stamp.
    ///
    /// A pending version (its commit undecided) is resolved on the spot, without waiting
    /// (`clock.rs`).
    ///
    /// # Safety
    ///
    /// The caller is pinned, and `rv` is at least the value its attempt entered in its snapshot
    /// slot (so the trimming horizon is `<= rv`, see `reclaim.rs`) or announced; the returned
    /// borrow must not outlive the pin.
    #[inline]
    pub(crate) unsafe fn version_at<'g>(&self, rv: u64, guard: &'g Guard) -> (&'g Version<T>, u64) {
        // Acquire (here, on `prev` and on stamps): pairs with the Release stores that linked each
        // node and finalized its stamp, so its fields are initialised before we read them.
        let mut cur = self.head.load(Ordering::Acquire, guard);
        let mut below_head = false;
        loop {
            // SAFETY: (1) heads and `prev` links are never null down to the version a snapshot
            // `>=` the horizon needs, and (2) we are pinned, so an unlinked node is not freed.
            let version = unsafe { cur.as_ref() }
                .expect("mvstm internal error: a snapshot's version was reclaimed");
            // Only a head can be pending; a version reached through a `prev` link is final.
            let stamp = if below_head {
                version.final_stamp()
            } else {
                version.stamp_in(rv)
            };
            if stamp <= rv {
                return (version, stamp);
            }
            below_head = true;
            cur = version.prev.load(Ordering::Acquire, guard);
        }
    }

    /// The newest committed version, for `TVar::load`: the head if its commit counts at a fresh
    /// snapshot, else the version it covers.
    ///
    /// The snapshot is loaded after the head, so a head whose commit finished is in it; an
    /// undecided head is resolved at it, which floors that commit above it (`clock.rs`), so no
    /// snapshot can count the commit as earlier than this read. Only the head and the version
    /// directly below it are read, and trims never cut that one (they start at it): no slot
    /// has to hold the horizon back, only the pin.
    ///
    /// # Safety
    ///
    /// The caller is pinned; the returned borrow must not outlive the pin.
    #[inline]
    pub(crate) unsafe fn newest_committed<'g>(&self, guard: &'g Guard) -> &'g Version<T> {
        // Acquire: as in `version_at`.
        // SAFETY: a head is never null, and we are pinned.
        let head = unsafe { self.head.load(Ordering::Acquire, guard).deref() };
        let rv = clock::snapshot();
        if head.stamp_in(rv) <= rv {
            return head;
        }
        // The head's commit is newer than `rv`, undecided (now floored above `rv`) or abandoned:
        // the version it covers is the newest committed one for this read, final and `<= rv`
        // (its commit took its stamp before the head was linked, which we acquired).
        // SAFETY: a linked head keeps its link to the version it covers; we are pinned, so that
        // version is not freed under us.
        unsafe { head.prev.load(Ordering::Acquire, guard).deref() }
    }
}

impl<T> Version<T> {
    /// A new version holding `value`, in memory from the thread's node cache (`alloc.rs`),
    /// linked nowhere: it is the caller's until [`link`] moves it into a chain (or
    /// [`drop_pending`] frees it).
    pub(crate) fn new_unlinked(value: T) -> NonNull<Version<T>> {
        let node = crate::alloc::alloc::<Version<T>>();
        // SAFETY: fresh memory for a `Version<T>`, private to us.
        unsafe {
            node.write(Version {
                stamp: AtomicU64::new(0),
                prev: Atomic::null(),
                value,
            })
        };
        node
    }

    /// This version's stamp as the snapshot `rv` sees it: final, or above `rv` if its commit is
    /// undecided (`clock::effective_stamp`).
    #[inline]
    pub(crate) fn stamp_in(&self, rv: u64) -> u64 {
        // Acquire: pairs with the Release store of the final stamp.
        let field = self.stamp.load(Ordering::Acquire);
        clock::effective_stamp(field, rv, || self.stamp.load(Ordering::Acquire))
    }

    /// The stamp of a version below its TVar's head, which is final and which nobody writes
    /// any more.
    #[inline]
    pub(crate) fn final_stamp(&self) -> u64 {
        // The finalizing store happened before the unlock of that version's commit, which the
        // next locker's CAS read before it linked a newer head: a lock holder, or a reader that
        // came down from a head it loaded with Acquire and through `prev` links, is ordered
        // after it.
        let stamp = crate::sync::load_unraced(&self.stamp);
        debug_assert_eq!(
            stamp & clock::PENDING,
            0,
            "a version below the head is final"
        );
        stamp
    }
}

/// # Safety
///
/// The caller holds the TVar's lock and `node` is a private `Version<T>` of this TVar's type owned
/// by a write log (see `alloc.rs`); ownership moves to the chain.
pub(crate) unsafe fn link<T>(header: NonNull<Header>, node: NonNull<()>, pending: u64) -> usize {
    // SAFETY: the header is first in `Inner<T>` (repr(C)) and live while the caller holds a lock.
    let inner = unsafe { header.cast::<Inner<T>>().as_ref() };
    let node = node.cast::<Version<T>>();
    // SAFETY: only the lock holder changes `head`, and we hold the lock.
    let guard = unsafe { epoch::unprotected() };
    // Relaxed: as above.
    let old = inner.head.load(Ordering::Relaxed, guard);
    // SAFETY: the node is still private to us: write its stamp field as plain memory (the
    // Release head store below publishes it; under loom, no step of the model either).
    unsafe { std::ptr::addr_of_mut!((*node.as_ptr()).stamp).write(AtomicU64::new(pending)) };
    // SAFETY: as above.
    let version = unsafe { node.as_ref() };
    // Relaxed: the Release head store below publishes it.
    version.prev.store(old, Ordering::Relaxed);
    // Release: the node's fields are initialised before a reader can reach it.
    inner.head.store(
        Shared::from(node.as_ptr() as *const Version<T>),
        Ordering::Release,
    );
    old.as_raw() as usize
}

/// # Safety
///
/// The caller holds the TVar's lock, linked `node` as its head with [`link`], and is pinned by
/// `guard`.
pub(crate) unsafe fn finalize<T>(
    header: NonNull<Header>,
    node: NonNull<()>,
    covered: usize,
    stamp: u64,
    guard: &Guard,
    retired: &mut Retired,
) {
    // SAFETY: as in `link`.
    let inner = unsafe { header.cast::<Inner<T>>().as_ref() };
    // SAFETY: the linked head, live while we hold the lock.
    let version = unsafe { node.cast::<Version<T>>().as_ref() };
    // Release: a reader that finds the final stamp finds the node's fields (they were published
    // by the link already; this keeps the argument local).
    version.stamp.store(stamp, Ordering::Release);
    let old = Shared::from(covered as *const Version<T>);
    // SAFETY: lock held, pinned, `old` is the version the node covers (`link` returned it).
    let covered_stamp = unsafe { trim(&inner.header, old, guard, retired) };
    // Relaxed: only lock holders touch it, and the lock orders them. The version directly below
    // the head is now the one the node covers: trims never take it out (they start at it).
    inner
        .header
        .below_head
        .store(covered_stamp, Ordering::Relaxed);
}

/// # Safety
///
/// As for [`finalize`]; the node's commit is abandoned and will not be decided.
pub(crate) unsafe fn unlink<T>(
    header: NonNull<Header>,
    node: NonNull<()>,
    covered: usize,
    retired: &mut Retired,
) {
    // SAFETY: as in `link`.
    let inner = unsafe { header.cast::<Inner<T>>().as_ref() };
    // SAFETY: the linked head, live while we hold the lock.
    let version = unsafe { node.cast::<Version<T>>().as_ref() };
    // Release: a reader standing on the node walks past it from now on (`NEVER` is above every
    // snapshot) and never needs the record again.
    version.stamp.store(clock::NEVER, Ordering::Release);
    let old = Shared::from(covered as *const Version<T>);
    // Release: as in `link` (the old head was published long ago; this keeps it local).
    inner.head.store(old, Ordering::Release);
    // SAFETY: unlinked under the lock, so we alone own the node; readers standing on it are
    // pinned, and the free waits for them.
    unsafe { retire_one(node.cast::<Version<T>>(), retired) };
}

/// # Safety
///
/// `header` is live.
pub(crate) unsafe fn head_stamp<T>(header: NonNull<Header>) -> u64 {
    // SAFETY: live per the contract; the header is first in `Inner<T>`.
    let inner = unsafe { header.cast::<Inner<T>>().as_ref() };
    let guard = epoch::pin();
    // SAFETY: pinned; a head is never null.
    // Acquire: pairs with the Release head store of `link` and the Release finalizing store.
    unsafe {
        inner
            .head
            .load(Ordering::Acquire, &guard)
            .deref()
            .stamp
            .load(Ordering::Acquire)
    }
}

/// # Safety
///
/// `header` is live, and as for [`Inner::version_at`].
pub(crate) unsafe fn stamp_at<T>(header: NonNull<Header>, rv: u64, guard: &Guard) -> u64 {
    // SAFETY: live per the contract; the header is first in `Inner<T>`; the rest is forwarded.
    unsafe { header.cast::<Inner<T>>().as_ref().version_at(rv, guard).1 }
}

/// # Safety
///
/// `node` is a pending `Version<T>` owned by a write log and linked nowhere.
pub(crate) unsafe fn drop_pending<T>(node: NonNull<()>) {
    /// Gives the node's memory back even if the value's destructor unwinds.
    struct Dealloc<T>(NonNull<Version<T>>);
    impl<T> Drop for Dealloc<T> {
        fn drop(&mut self) {
            // SAFETY: the node's memory came from `alloc` (`Txn::write`) and nothing else owns
            // it: the value in it is dropped (or being dropped) by `drop_pending`.
            unsafe { crate::alloc::dealloc(self.0) };
        }
    }
    let node = Dealloc(node.cast::<Version<T>>());
    // SAFETY: per the contract we own the node: drop its value; `node` frees the memory after.
    unsafe { std::ptr::drop_in_place(node.0.as_ptr()) };
}

/// # Safety
///
/// No reference to the TVar is left and no pinned thread can reach it.
pub(crate) unsafe fn destroy<T>(header: NonNull<Header>) {
    // SAFETY: per the contract we own the allocation made in `TVar::new`.
    let inner = unsafe { Box::from_raw(header.cast::<Inner<T>>().as_ptr()) };
    // SAFETY: nobody can reach the chain any more.
    unsafe {
        let head = inner.head.load(Ordering::Relaxed, epoch::unprotected());
        destroy_chain(head);
    }
}

/// A pointer to a version, as crossbeam-epoch's loads return it.
pub(crate) type VersionPtr<'g, T> = Shared<'g, Version<T>>;

/// Cut the versions below the newest one with `stamp <= HORIZON` (or under the oldest snapshot
/// a long reader announced), starting at `from`, the version just covered. Returns the stamp of
/// `from`.
///
/// A quick trim (most writes) looks at `from` and, only if the stamp the header keeps for it
/// says the cut is there, at the version below; a full trim (every `FULL_TRIM_EVERY` writes)
/// walks down to the horizon.
///
/// # Safety
///
/// The caller holds the lock of the TVar `header` (whose chain `from` is in, directly below the
/// head) and is pinned by `guard`.
unsafe fn trim<T>(
    header: &Header,
    from: VersionPtr<'_, T>,
    guard: &Guard,
    retired: &mut Retired,
) -> u64 {
    let (horizon, floor) = reclaim::trim_bounds();
    // Relaxed: only the lock holder reads or writes the counter, and the lock orders holders.
    let writes = header.writes_since_trim.load(Ordering::Relaxed) + 1;
    let full = writes >= FULL_TRIM_EVERY;
    // SAFETY: pinned; `from` was the head, and a head is never null.
    let covered_stamp = unsafe { from.deref() }.final_stamp();
    // Relaxed: as for the counter. The stamp of the version below `from`; stamps fall down the
    // chain, so it is under the floor whenever `from` is and has anything below it to cut.
    let below = header.below_head.load(Ordering::Relaxed);
    let limit = if full {
        usize::MAX
    } else if below <= floor {
        QUICK_WALK
    } else {
        // Nothing to cut within reach: leave the version below untouched.
        0
    };
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
            return covered_stamp;
        }
        if stamp <= floor {
            // SAFETY: forwarded contract; every snapshot stops at `version` or above.
            unsafe { cut_below(version, guard, retired) };
            header.writes_since_trim.store(0, Ordering::Relaxed);
            return covered_stamp;
        }
        // Acquire: the older node was published with Release before it was linked below.
        cur = version.prev.load(Ordering::Acquire, guard);
    }
    let writes = if full { 0 } else { writes };
    header.writes_since_trim.store(writes, Ordering::Relaxed);
    covered_stamp
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
    for r in reclaim::announced_newest_first() {
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
                    retire_one(
                        NonNull::new_unchecked(skipped.as_raw() as *mut Version<T>),
                        retired,
                    )
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
        // SAFETY: the swap made us the only owner of the tail; the free waits for walkers.
        unsafe { retired.push(tail.as_ptr() as usize, destroy_chain_at::<T>) };
    }
}

/// Retire one version, not the ones it links to.
///
/// # Safety
///
/// The caller owns the version: it unlinked it under the TVar's lock (readers standing on it
/// are pinned, and the free waits for them).
unsafe fn retire_one<T>(node: NonNull<Version<T>>, retired: &mut Retired) {
    // SAFETY: forwarded.
    unsafe { retired.push(node.as_ptr() as usize, destroy_one::<T>) };
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
unsafe fn destroy_chain<T>(mut cur: VersionPtr<'_, T>) {
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
