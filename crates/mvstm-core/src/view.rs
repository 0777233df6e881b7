//! Single-operation access: `TVar::store`, `swap`, `compare_and_set` and `update` (ScalaSTM's
//! `Ref.View`), each a whole transaction on one variable.
//!
//! They take a path that a general transaction cannot: no read or write log, no hooks, no
//! snapshot. The call reads the variable's lock word and, if it is unlocked, the head version
//! that word names; it computes the new value from that version outside any lock (so `update`'s
//! function and a `clone` are plain code that may run again), then locks the variable *from
//! that very word* and publishes (`Txn::commit_single`). A lock CAS that fails means another
//! commit came first: the call reads again. Holding the lock from the word it read to its
//! unlock, the call serializes at its stamp with the value it read as the one before; a
//! `compare_and_set` that does not match, which writes nothing, serializes at its read, when the
//! version it read was the newest (a writer links its version before it takes its stamp, so a
//! commit not linked yet at that read stamps after it).

use crate::reclaim;
use crate::runtime::Cached;
use crate::sync::{spin_hint, yield_now, Ordering};
use crate::tvar::TVar;
use crate::version::Version;
use std::convert::Infallible;

/// Spins on a locked variable before yielding the thread between looks.
const SPINS_BEFORE_YIELD: u32 = 64;

impl<T: Clone + Send + Sync + 'static> TVar<T> {
    /// Set the variable to `value`, as a transaction of its own.
    ///
    /// It commits atomically and wakes the transactions waiting in `retry` on the variable,
    /// like `atomically(|tx| tx.write(&var, value))`, with less work (no logs, no hooks).
    ///
    /// # Panics
    ///
    /// Inside a transaction body or an `on_commit` hook: write through the `Txn` there
    /// ([`Txn::write`](crate::Txn::write)).
    ///
    /// ```
    /// let v = mvstm::TVar::new(1u64);
    /// v.store(2);
    /// assert_eq!(v.load(), 2);
    /// ```
    #[track_caller]
    pub fn store(&self, value: T) {
        let Ok(()) = write_one(self, "store", Some(value), |_, _| Ok::<_, Infallible>(()));
    }

    /// Set the variable to `value` and return the value it replaced, as a transaction of its
    /// own.
    ///
    /// # Panics
    ///
    /// Inside a transaction body or an `on_commit` hook, as [`store`](TVar::store).
    ///
    /// ```
    /// let v = mvstm::TVar::new(String::from("old"));
    /// assert_eq!(v.swap(String::from("new")), "old");
    /// assert_eq!(v.load(), "new");
    /// ```
    #[track_caller]
    pub fn swap(&self, value: T) -> T {
        let Ok(old) = write_one(self, "swap", Some(value), |current, _| {
            Ok::<_, Infallible>(current.clone())
        });
        old
    }

    /// Set the variable to `new` if it holds a value equal to `expected`, as a transaction of
    /// its own: `Ok(previous value)` if it did, `Err(current value)` (and nothing written) if
    /// not.
    ///
    /// # Panics
    ///
    /// Inside a transaction body or an `on_commit` hook, as [`store`](TVar::store).
    ///
    /// ```
    /// let v = mvstm::TVar::new(3u64);
    /// assert_eq!(v.compare_and_set(&3, 4), Ok(3));
    /// assert_eq!(v.compare_and_set(&9, 5), Err(4));
    /// assert_eq!(v.load(), 4);
    /// ```
    #[track_caller]
    pub fn compare_and_set(&self, expected: &T, new: T) -> Result<T, T>
    where
        T: PartialEq,
    {
        write_one(self, "compare_and_set", Some(new), |current, _| {
            if current == expected {
                Ok(current.clone())
            } else {
                Err(current.clone())
            }
        })
    }

    /// Replace the variable's value by `f` of it, as a transaction of its own, and return the
    /// new value.
    ///
    /// `f` runs outside any lock and, like the function of
    /// [`AtomicU64::fetch_update`](std::sync::atomic::AtomicU64::fetch_update), again if
    /// another commit changed the variable first: it should only compute.
    ///
    /// # Panics
    ///
    /// Inside a transaction body or an `on_commit` hook, as [`store`](TVar::store); and if `f`
    /// panics (nothing is written then).
    ///
    /// ```
    /// let v = mvstm::TVar::new(4u64);
    /// assert_eq!(v.update(|x| x * 10), 40);
    /// assert_eq!(v.load(), 40);
    /// ```
    #[track_caller]
    pub fn update(&self, mut f: impl FnMut(&T) -> T) -> T {
        let Ok(new) = write_one(self, "update", None, |current, slot| {
            let new = f(current);
            *slot = Some(new.clone());
            Ok::<_, Infallible>(new)
        });
        new
    }
}

/// The shared body of the single operations on `var`.
///
/// `step` sees the current value and the value to write (`slot`, which it may set): `Ok(r)`
/// publishes the value in `slot` and returns `Ok(r)` once it committed; `Err(r)` writes nothing
/// and returns `Err(r)`. If another commit changes the variable between the read and the lock,
/// `step` runs again on the new value, with the value it left in `slot` given back.
#[track_caller]
fn write_one<T, R, E>(
    var: &TVar<T>,
    call: &str,
    mut slot: Option<T>,
    mut step: impl FnMut(&T, &mut Option<T>) -> Result<R, E>,
) -> Result<R, E>
where
    T: Clone + Send + Sync + 'static,
{
    if reclaim::in_transaction() {
        refuse_inside(call);
    }
    let mut tx = Cached::take();
    tx.pin_attempt();
    let inner = var.inner();
    let mut spins = 0;
    let result = loop {
        let seen = inner.header.lock.load();
        if seen.is_locked() {
            // A commit is publishing (or a transaction's commit gave up and will unlock):
            // look again, as a thread waiting for a mutex would.
            back_off(&mut spins);
            continue;
        }
        let guard = tx.pin.guard();
        // Acquire: pairs with the Release store that linked the head.
        let head = inner.head.load(Ordering::Acquire, guard);
        // SAFETY: a head is never null, and we are pinned, so it is not freed under us.
        let head = unsafe { head.deref() };
        // Acquire: pairs with the Release store of a final stamp. A head stamped other than
        // `seen` was linked after we loaded the word (pending, or already published): read again.
        if head.stamp.load(Ordering::Acquire) != seen.stamp() {
            continue;
        }
        let r = match step(&head.value, &mut slot) {
            Ok(r) => r,
            Err(r) => break Err(r),
        };
        let value = slot
            .take()
            .expect("mvstm internal error: a single operation has no value to write");
        let node = Version::new_unlinked(value);
        if tx.commit_single(var.header(), seen, node.cast()) {
            break Ok(r);
        }
        // Another commit came first, or a committer with `on_commit` hooks holds the variable
        // shared (for as long as its hooks run): the node was never linked. Take the value back
        // out of it and free the memory, then read again after a pause.
        // SAFETY: the node is still ours alone; its value is moved out exactly once, and the
        // memory came from `alloc`.
        unsafe {
            slot = Some(std::ptr::read(&node.as_ref().value));
            crate::alloc::dealloc(node);
        }
        back_off(&mut spins);
    };
    tx.pin.unpin();
    if result.is_ok() {
        crate::stats::committed(false);
        tx.committer.flush_if_due();
    }
    result
}

/// Wait a little before looking at the variable again: spin at first, then yield the thread.
#[inline]
fn back_off(spins: &mut u32) {
    if *spins < SPINS_BEFORE_YIELD {
        *spins += 1;
        spin_hint();
    } else {
        yield_now();
    }
}

/// The panic of a single operation called where a transaction runs.
#[cold]
#[track_caller]
fn refuse_inside(call: &str) -> ! {
    panic!(
        "`TVar::{call}` called inside a transaction or an on_commit hook: it is a transaction \
         of its own; use the body's `&mut Txn` instead (`tx.write`, `tx.modify`)"
    )
}
