//! `TVar<T>`: a handle to a chain of immutable committed versions.
//!
//! ```text
//!  TVar ──► Inner { header: Header { lock, waiters, refs, ops }, head }
//!                                                              │
//!                          Version { stamp: 9, value, prev } ◄─┘
//!                                                       │
//!                          Version { stamp: 4, value, prev } ──► null (trimmed)
//! ```
//!
//! A committed version never changes after it is published: a read is an atomic load of a
//! pointer to immutable memory plus a clone, never a racy read. Versions are newest first; a
//! snapshot `rv` reads the first version with `stamp <= rv`.
//!
//! The handle is reference counted by hand rather than through `Arc` because the last handle
//! must not free the variable at once: a running transaction may still hold a raw pointer to it
//! in its logs. Dropping the last handle defers the free with crossbeam-epoch, and transactions
//! stay pinned for their whole attempt, so a logged pointer is valid until the attempt ends.

use crate::clock;
use crate::lock::VarLock;
use crate::reclaim::{self, Retired};
use crate::sync::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

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
    /// Link the private `node` as the new head, its stamp field pending on a commit record.
    pub(crate) link: unsafe fn(NonNull<Header>, NonNull<()>, u64),
    /// Give the linked head `node` its final stamp, then trim old versions into the list.
    pub(crate) finalize: unsafe fn(NonNull<Header>, NonNull<()>, u64, &Guard, &mut Retired),
    /// Take the linked head `node` out again (its commit was abandoned) and retire it.
    pub(crate) unlink: unsafe fn(NonNull<Header>, NonNull<()>, &Guard, &mut Retired),
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
    refs: AtomicUsize,
    pub(crate) ops: &'static VarOps,
    /// Under loom, the variable's creation number (see [`Header::order_key`]).
    #[cfg(loom)]
    serial: usize,
}

impl Header {
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
    /// The caller is pinned, and `rv` is a snapshot taken while pinned (so the trimming horizon
    /// is `<= rv`, see `reclaim.rs`) or announced; the returned borrow must not outlive the pin.
    #[inline]
    pub(crate) unsafe fn version_at<'g>(&self, rv: u64, guard: &'g Guard) -> (&'g Version<T>, u64) {
        // Acquire (here, on `prev` and on stamps): pairs with the Release stores that linked each
        // node and finalized its stamp, so its fields are initialised before we read them.
        let mut cur = self.head.load(Ordering::Acquire, guard);
        loop {
            // SAFETY: (1) heads and `prev` links are never null down to the version a snapshot
            // `>=` the horizon needs, and (2) we are pinned, so an unlinked node is not freed.
            let version = unsafe { cur.as_ref() }
                .expect("mvstm internal error: a snapshot's version was reclaimed");
            let stamp = version.stamp_in(rv);
            if stamp <= rv {
                return (version, stamp);
            }
            cur = version.prev.load(Ordering::Acquire, guard);
        }
    }
}

impl<T> Version<T> {
    /// This version's stamp as the snapshot `rv` sees it: final, or above `rv` if its commit is
    /// undecided (`clock::effective_stamp`).
    #[inline]
    pub(crate) fn stamp_in(&self, rv: u64) -> u64 {
        // Acquire: pairs with the Release store of the final stamp.
        let field = self.stamp.load(Ordering::Acquire);
        clock::effective_stamp(field, rv, || self.stamp.load(Ordering::Acquire))
    }

    /// The stamp of a version known to be final (below a head, or a head under its lock).
    #[inline]
    pub(crate) fn final_stamp(&self) -> u64 {
        // Relaxed: the caller reached the version through an Acquire link or holds the lock
        // whose acquisition ordered the finalizing store before it.
        let stamp = self.stamp.load(Ordering::Relaxed);
        debug_assert_eq!(
            stamp & clock::PENDING,
            0,
            "a version below the head is final"
        );
        stamp
    }
}

/// A transactional variable: a cheap, cloneable handle to shared state.
///
/// Read and write it inside [`atomically`](crate::atomically) through the [`Txn`](crate::Txn);
/// outside, [`TVar::load`] returns the newest committed value. Clones are the same variable.
///
/// ```
/// use mvstm::{atomically, TVar};
/// let a = TVar::new(100i64);
/// let same = a.clone();
/// atomically(|tx| tx.modify(&a, |x| x + 1));
/// assert_eq!(same.load(), 101);
/// ```
pub struct TVar<T> {
    ptr: NonNull<Inner<T>>,
    _owns: PhantomData<Inner<T>>,
}

// SAFETY: a TVar hands out clones of `T` to any thread (needs `Sync`), and versions are dropped
// by whichever thread runs the deferred free (needs `Send`). The header's fields are atomics.
unsafe impl<T: Send + Sync> Send for TVar<T> {}
// SAFETY: as above; `&TVar<T>` only allows what `TVar<T>` allows.
unsafe impl<T: Send + Sync> Sync for TVar<T> {}

impl<T: Clone + Send + Sync + 'static> TVar<T> {
    const OPS: VarOps = VarOps {
        link: link::<T>,
        finalize: finalize::<T>,
        unlink: unlink::<T>,
        drop_pending: drop_pending::<T>,
        destroy: destroy::<T>,
        head_stamp: head_stamp::<T>,
        stamp_at: stamp_at::<T>,
    };

    /// A new variable holding `value`, visible to every snapshot.
    ///
    /// ```
    /// let v = mvstm::TVar::new(String::from("hi"));
    /// assert_eq!(v.load(), "hi");
    /// ```
    pub fn new(value: T) -> TVar<T> {
        let version = Owned::new(Version {
            stamp: AtomicU64::new(0),
            prev: Atomic::null(),
            value,
        });
        let inner = Box::new(Inner {
            header: Header {
                lock: VarLock::new(),
                waiters: AtomicU32::new(0),
                holders: AtomicU32::new(0),
                writes_since_trim: AtomicU32::new(0),
                refs: AtomicUsize::new(1),
                ops: &Self::OPS,
                #[cfg(loom)]
                serial: crate::sync::creation_number(),
            },
            head: Atomic::from(version),
        });
        TVar {
            ptr: NonNull::from(Box::leak(inner)),
            _owns: PhantomData,
        }
    }

    /// The newest committed value, without a transaction.
    ///
    /// Never blocks and works anywhere, in hooks and inside a body too; inside a body it does not
    /// see that transaction's own buffered writes.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let v = TVar::new(1);
    /// atomically(|tx| {
    ///     tx.write(&v, 2)?;
    ///     assert_eq!(v.load(), 1); // the write is buffered until commit
    ///     Ok(())
    /// });
    /// assert_eq!(v.load(), 2);
    /// ```
    pub fn load(&self) -> T {
        if crate::runtime::in_transaction() {
            // Inside a body or `on_commit` hook the thread is pinned by the running attempt;
            // pinning again through crossbeam's default handle could collect garbage and run
            // other values' destructors inside the transaction.
            let rv = clock::snapshot();
            // SAFETY: the attempt's pin protects this thread's loads until the attempt ends,
            // which is after this call returns; `rv` is a snapshot taken while pinned.
            return unsafe { self.version_at(rv, epoch::unprotected()).0.value.clone() };
        }
        let guard = epoch::pin();
        let rv = clock::snapshot();
        // SAFETY: we are pinned by `guard` for the whole walk.
        unsafe { self.version_at(rv, &guard).0.value.clone() }
    }
}

impl<T> TVar<T> {
    #[inline]
    pub(crate) fn inner(&self) -> &Inner<T> {
        // SAFETY: a handle keeps `refs >= 1`, so the allocation is live while `self` is.
        unsafe { self.ptr.as_ref() }
    }

    #[inline]
    pub(crate) fn header(&self) -> NonNull<Header> {
        self.ptr.cast()
    }

    /// The newest version in the snapshot `rv`, and its stamp.
    ///
    /// # Safety
    ///
    /// As for [`Inner::version_at`].
    #[inline]
    pub(crate) unsafe fn version_at<'g>(&self, rv: u64, guard: &'g Guard) -> (&'g Version<T>, u64) {
        // SAFETY: forwarded contract.
        unsafe { self.inner().version_at(rv, guard) }
    }

    /// Whether two handles name the same variable.
    ///
    /// ```
    /// let a = mvstm::TVar::new(0);
    /// assert!(a.ptr_eq(&a.clone()));
    /// assert!(!a.ptr_eq(&mvstm::TVar::new(0)));
    /// ```
    pub fn ptr_eq(&self, other: &TVar<T>) -> bool {
        self.ptr == other.ptr
    }
}

impl<T> Clone for TVar<T> {
    fn clone(&self) -> Self {
        // Relaxed: a new handle is made from an existing one, which keeps the count above zero
        // (the argument of `Arc::clone`).
        self.inner().header.refs.fetch_add(1, Ordering::Relaxed);
        TVar {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T> Drop for TVar<T> {
    fn drop(&mut self) {
        // SAFETY: this handle holds one reference.
        unsafe { release_ref(self.header()) }
    }
}

impl<T: Clone + Send + Sync + 'static + fmt::Debug> fmt::Debug for TVar<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TVar").field(&self.load()).finish()
    }
}

impl<T: Clone + Send + Sync + 'static + Default> Default for TVar<T> {
    fn default() -> Self {
        TVar::new(T::default())
    }
}

/// A strong reference to a TVar whose value type is erased; keeps it alive while a thread waits.
pub(crate) struct ErasedRef(NonNull<Header>);

impl ErasedRef {
    /// A new strong reference, or `None` if the last handle is already gone.
    ///
    /// # Safety
    ///
    /// `header` is live: the caller is pinned and saw it in a log of the current attempt.
    pub(crate) unsafe fn upgrade(header: NonNull<Header>) -> Option<Self> {
        // SAFETY: live per the contract (a dying variable's free is deferred past our pin).
        let refs = unsafe { &header.as_ref().refs };
        let mut n = refs.load(Ordering::Relaxed);
        loop {
            // Never revive a count that reached zero: its free is already scheduled.
            if n == 0 {
                return None;
            }
            // Relaxed as in `TVar::clone`: we only add to a count that is above zero.
            match refs.compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(ErasedRef(header)),
                Err(actual) => n = actual,
            }
        }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: we hold a reference.
        unsafe { self.0.as_ref() }
    }

    pub(crate) fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The header pointer, live while `self` is.
    pub(crate) fn ptr(&self) -> NonNull<Header> {
        self.0
    }

    /// See [`Header::order_key`].
    pub(crate) fn order_key(&self) -> usize {
        // SAFETY: we hold a reference, so the header is live.
        unsafe { Header::order_key(self.0) }
    }

    /// The stamp field of the variable's newest version, pending or final.
    pub(crate) fn head_stamp(&self) -> u64 {
        // SAFETY: we hold a reference, so the header is live.
        unsafe { (self.header().ops.head_stamp)(self.0) }
    }
}

impl Clone for ErasedRef {
    fn clone(&self) -> Self {
        // Relaxed: we hold a reference, so the count is above zero (as in `TVar::clone`).
        self.header().refs.fetch_add(1, Ordering::Relaxed);
        ErasedRef(self.0)
    }
}

impl Drop for ErasedRef {
    fn drop(&mut self) {
        // SAFETY: we hold one reference.
        unsafe { release_ref(self.0) }
    }
}

/// Drop one reference; the last one defers the free past every current pin.
///
/// # Safety
///
/// The caller owns one reference to `header`.
unsafe fn release_ref(header: NonNull<Header>) {
    // SAFETY: the caller's reference keeps it live until the decrement.
    let h = unsafe { header.as_ref() };
    // Release/Acquire as in `Arc::drop`: every use through other handles happens-before the free.
    if h.refs.fetch_sub(1, Ordering::Release) != 1 {
        return;
    }
    fence(Ordering::Acquire);
    let destroy = h.ops.destroy;
    let addr = header.as_ptr() as usize;
    if crate::runtime::in_transaction() {
        // Pinning here could collect and run user destructors inside the transaction: let the
        // runtime defer the free once the attempt is over.
        crate::runtime::queue_free(crate::runtime::QueuedFree { addr, destroy });
        return;
    }
    let guard = epoch::pin();
    // SAFETY: no handle is left; logs of running attempts may still point at the variable, and
    // they are pinned, so deferring the free past every current pin keeps those pointers valid.
    // `T: Send` (required by `TVar::new`) lets another thread drop the values.
    unsafe {
        guard.defer_unchecked(move || destroy(NonNull::new_unchecked(addr as *mut Header)));
    }
    // This thread's default epoch handle may never pin again (transactions pin through their
    // own handle), and a bag that is never flushed keeps the variable until the thread exits:
    // the thread's next transaction flushes it.
    crate::runtime::note_default_bag_dirty();
}

/// # Safety
///
/// The caller holds the TVar's lock and `node` is a private `Version<T>` of this TVar's type owned
/// by a write log (see `alloc.rs`); ownership moves to the chain.
unsafe fn link<T>(header: NonNull<Header>, node: NonNull<()>, pending: u64) {
    // SAFETY: the header is first in `Inner<T>` (repr(C)) and live while the caller holds a lock.
    let inner = unsafe { header.cast::<Inner<T>>().as_ref() };
    let node = node.cast::<Version<T>>();
    // SAFETY: only the lock holder changes `head`, and we hold the lock.
    let guard = unsafe { epoch::unprotected() };
    // Relaxed: as above.
    let old = inner.head.load(Ordering::Relaxed, guard);
    // SAFETY: the node is still private to us.
    let version = unsafe { node.as_ref() };
    // Relaxed: the Release head store below publishes both.
    version.stamp.store(pending, Ordering::Relaxed);
    version.prev.store(old, Ordering::Relaxed);
    // Release: the node's fields are initialised before a reader can reach it.
    inner.head.store(
        Shared::from(node.as_ptr() as *const Version<T>),
        Ordering::Release,
    );
}

/// # Safety
///
/// The caller holds the TVar's lock, linked `node` as its head with [`link`], and is pinned by
/// `guard`.
unsafe fn finalize<T>(
    header: NonNull<Header>,
    node: NonNull<()>,
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
    // Relaxed: we linked it.
    let old = version.prev.load(Ordering::Relaxed, guard);
    // SAFETY: lock held, pinned, `old` is the version the node covers.
    unsafe { reclaim::trim(&inner.header, old, guard, retired) };
}

/// # Safety
///
/// As for [`finalize`]; the node's commit is abandoned and will not be decided.
unsafe fn unlink<T>(
    header: NonNull<Header>,
    node: NonNull<()>,
    guard: &Guard,
    retired: &mut Retired,
) {
    // SAFETY: as in `link`.
    let inner = unsafe { header.cast::<Inner<T>>().as_ref() };
    // SAFETY: the linked head, live while we hold the lock.
    let version = unsafe { node.cast::<Version<T>>().as_ref() };
    // Release: a reader standing on the node walks past it from now on (`NEVER` is above every
    // snapshot) and never needs the record again.
    version.stamp.store(clock::NEVER, Ordering::Release);
    // Relaxed: we linked it.
    let old = version.prev.load(Ordering::Relaxed, guard);
    // Release: as in `link` (the old head was published long ago; this keeps it local).
    inner.head.store(old, Ordering::Release);
    // SAFETY: unlinked under the lock, so we alone own the node; readers standing on it are
    // pinned, and the free waits for them.
    unsafe { retired.version(node.cast::<Version<T>>()) };
}

/// # Safety
///
/// `header` is live.
unsafe fn head_stamp<T>(header: NonNull<Header>) -> u64 {
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
unsafe fn stamp_at<T>(header: NonNull<Header>, rv: u64, guard: &Guard) -> u64 {
    // SAFETY: live per the contract; the header is first in `Inner<T>`; the rest is forwarded.
    unsafe { header.cast::<Inner<T>>().as_ref().version_at(rv, guard).1 }
}

/// # Safety
///
/// `node` is a pending `Version<T>` owned by a write log and linked nowhere.
unsafe fn drop_pending<T>(node: NonNull<()>) {
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
unsafe fn destroy<T>(header: NonNull<Header>) {
    // SAFETY: per the contract we own the allocation made in `TVar::new`.
    let inner = unsafe { Box::from_raw(header.cast::<Inner<T>>().as_ptr()) };
    // SAFETY: nobody can reach the chain any more.
    unsafe {
        let head = inner.head.load(Ordering::Relaxed, epoch::unprotected());
        reclaim::destroy_chain(head);
    }
}

/// Pin the `Shared` type into this module's vocabulary for `reclaim`.
pub(crate) type VersionPtr<'g, T> = Shared<'g, Version<T>>;
