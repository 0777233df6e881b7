//! `TVar<T>`: a handle to a chain of immutable committed versions (`version.rs`).
//!
//! The handle is reference counted by hand rather than through `Arc` because the last handle
//! must not free the variable at once: a running transaction may still hold a raw pointer to it
//! in its logs. Dropping the last handle defers the free with crossbeam-epoch, and transactions
//! stay pinned for their whole attempt, so a logged pointer is valid until the attempt ends.

use crate::reclaim;
use crate::sync::{fence, AtomicU64, Ordering};
use crate::version::{
    destroy, drop_pending, finalize, head_stamp, link, stamp_at, unlink, Header, Inner, VarOps,
    Version,
};
use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

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
            header: Header::new(&Self::OPS),
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
        if reclaim::in_transaction() {
            // Inside a body or `on_commit` hook the thread is pinned by the running attempt;
            // pinning again through crossbeam's default handle could collect garbage and run
            // other values' destructors inside the transaction.
            // SAFETY: the attempt's pin protects this thread's loads until the attempt ends,
            // which is after this call returns.
            return unsafe {
                self.inner()
                    .newest_committed(epoch::unprotected())
                    .value
                    .clone()
            };
        }
        let guard = epoch::pin();
        // SAFETY: we are pinned by `guard` until the clone is made.
        unsafe { self.inner().newest_committed(&guard).value.clone() }
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
    let addr = header.as_ptr() as usize;
    if reclaim::in_transaction() {
        // Pinning here could collect and run user destructors inside the transaction: let the
        // runtime defer the free once the attempt is over.
        reclaim::queue_free(reclaim::QueuedFree {
            addr,
            destroy: destroy_at,
        });
        return;
    }
    let guard = epoch::pin();
    // SAFETY: no handle is left; logs of running attempts may still point at the variable, and
    // they are pinned, so deferring the free past every current pin keeps those pointers valid.
    // `T: Send` (required by `TVar::new`) lets another thread drop the values.
    unsafe { guard.defer_unchecked(move || destroy_at(addr)) };
    // This thread's default epoch handle may never pin again (transactions pin through their
    // own handle), and a bag that is never flushed keeps the variable until the thread exits:
    // the thread's next transaction flushes it.
    reclaim::note_default_bag_dirty();
}

/// Free the variable whose header is at `addr` and its whole chain.
///
/// # Safety
///
/// As for the variable's `VarOps::destroy`: no reference to it is left and no pinned thread can
/// reach it.
unsafe fn destroy_at(addr: usize) {
    // SAFETY: `addr` is a live header per the contract.
    unsafe {
        let header = NonNull::new_unchecked(addr as *mut Header);
        (header.as_ref().ops.destroy)(header)
    }
}
