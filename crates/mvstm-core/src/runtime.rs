//! `atomically` and `try_atomically`: the loop that runs attempts until one commits.
//!
//! Each attempt pins the epoch, takes a snapshot, runs the body under `catch_unwind`, and then
//! commits or abandons. Abandoning discards the writes, unpins, and runs `on_abort` hooks before
//! the re-run (conflict), the block (retry) or the return (abort, panic). The transaction
//! object and its logs are cached per thread and reused, so a steady state allocates nothing
//! but the new versions it publishes.

use crate::commit::CommitError;
use crate::contention::Contention;
use crate::error::{AbortCause, AbortError, ErrorKind, RetryKind, StmResult, TimedOut};
use crate::hooks::{self, Veto};
use crate::log::Panic;
use crate::parking::{Wait, WaiterKind};
use crate::reclaim::{after_attempt, in_transaction, InTxn};
use crate::sync::{thread_local, AtomicU64, Ordering};
use crate::txn::{CallState, Predicate, Txn};
use smallvec::SmallVec;
use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::time::Duration;

thread_local! {
    /// This thread's owner id (0 = not assigned yet).
    static OWNER: Cell<u64> = const { Cell::new(0) };
    /// The cached transaction object of this thread, or null. A plain pointer with no
    /// destructor keeps the access on the fast path a single thread-local load; `CACHE_FREE`
    /// frees it when the thread exits.
    static CACHE: Cell<*mut Txn> = const { Cell::new(ptr::null_mut()) };
    /// A second slot, for a transaction started by a hook while the first is in use, so that
    /// such nesting does not allocate a `Txn` (and register an epoch handle) on every call.
    static CACHE_NESTED: Cell<*mut Txn> = const { Cell::new(ptr::null_mut()) };
    /// Registered on the first allocation of a cached `Txn`; frees it at thread exit.
    static CACHE_FREE: CacheFree = const { CacheFree };
}

#[inline]
fn owner_id() -> u64 {
    crate::sync::global! {
        static NEXT: AtomicU64 = AtomicU64::new(1);
    }
    OWNER.with(|o| {
        if o.get() == 0 {
            // Relaxed: uniqueness is all we need.
            o.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        o.get()
    })
}

struct CacheFree;

/// Free this thread's cached transaction objects now, finalizing their epoch handles; for the
/// end of a thread in a loom model.
///
/// Loom drops a thread's thread-locals in `HashMap` order, which changes from one execution to
/// the next. A thread with a cached `Txn` and crossbeam's default epoch handle (taken by
/// `TVar::load` outside a transaction and by dropping a TVar's last handle) has two
/// thread-locals whose destructors finalize an epoch handle; in changing order, the model would
/// take different steps for the same schedule, which loom cannot explore. A model thread calls
/// this last, so at most one such thread-local is left. Normal builds do not have it.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_release_thread() {
    for slot in [&CACHE, &CACHE_NESTED] {
        let cached = slot.with(|c| c.replace(ptr::null_mut()));
        if !cached.is_null() {
            // SAFETY: a non-null slot holds a `Box<Txn>` leaked by `Cached::drop`, owned by the
            // cache alone; the slot is empty now, so `CacheFree` will not free it again.
            drop(unsafe { Box::from_raw(cached) });
        }
    }
}

impl Drop for CacheFree {
    fn drop(&mut self) {
        for slot in [&CACHE, &CACHE_NESTED] {
            // The slots have no destructor, so they outlive this one; under loom they may be gone
            // already (see `loom_release_thread`).
            let Ok(cached) = slot.try_with(|c| c.replace(ptr::null_mut())) else {
                continue;
            };
            if !cached.is_null() {
                // SAFETY: a non-null slot holds a `Box<Txn>` leaked by `Cached::drop`, owned by
                // the cache alone.
                drop(unsafe { Box::from_raw(cached) });
            }
        }
    }
}

/// The thread's cached `Txn`, owned for the duration of one `atomically` call and put back
/// when it ends (if `cacheable`: the thread-exit destructor is registered).
pub(crate) struct Cached {
    tx: NonNull<Txn>,
    cacheable: bool,
}

impl Cached {
    #[inline]
    pub(crate) fn take() -> Cached {
        let cached = CACHE.with(|c| c.replace(ptr::null_mut()));
        match NonNull::new(cached) {
            Some(tx) => Cached {
                tx,
                cacheable: true,
            },
            None => Cached::take_slow(),
        }
    }

    /// A call nested in a hook (the first slot is in use), or the first call on this thread.
    #[cold]
    fn take_slow() -> Cached {
        let nested = CACHE_NESTED.with(|c| c.replace(ptr::null_mut()));
        if let Some(tx) = NonNull::new(nested) {
            return Cached {
                tx,
                cacheable: true,
            };
        }
        // Register the destructor that frees the cache at thread exit. If the thread is already
        // tearing down its thread-locals, the `Txn` is not cached but freed by `Cached::drop`.
        let cacheable = CACHE_FREE.try_with(|_| ()).is_ok();
        let tx = NonNull::from(Box::leak(Box::new(Txn::new(owner_id()))));
        Cached { tx, cacheable }
    }
}

impl std::ops::Deref for Cached {
    type Target = Txn;
    #[inline]
    fn deref(&self) -> &Txn {
        // SAFETY: `Cached` owns the boxed `Txn` until it drops.
        unsafe { self.tx.as_ref() }
    }
}

impl std::ops::DerefMut for Cached {
    #[inline]
    fn deref_mut(&mut self) -> &mut Txn {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { self.tx.as_mut() }
    }
}

impl Drop for Cached {
    #[inline]
    fn drop(&mut self) {
        self.reset_call();
        let tx = self.tx.as_ptr();
        // Put it back in a free slot unless the thread-exit destructor could not be registered
        // (or calls nested deeper than two levels filled both slots): then free it here.
        let store = |slot: &Cell<*mut Txn>| {
            let empty = slot.get().is_null();
            if empty {
                slot.set(tx);
            }
            empty
        };
        let stored = self.cacheable
            && (CACHE.with(store) || {
                // The second slot may stay unused for long: hand the frees its epoch handle
                // deferred to the collector now, or they would wait for that handle's next use.
                // Rare (a transaction nested in a hook), so the flush's cost does not matter.
                self.committer.hand_over_frees();
                CACHE_NESTED.with(store)
            });
        if !stored {
            // SAFETY: we own the box and did not hand it to the cache.
            drop(unsafe { Box::from_raw(tx) });
        }
    }
}

/// How an attempt ended, when it did not commit.
enum Abandon {
    Conflict,
    Retry(RetryKind),
    Abort(AbortError),
    Panic(Box<dyn Any + Send>),
}

/// Run `body` as a transaction until it commits, and return its result.
///
/// The body runs again after a conflict (invisible to the caller) and after a `retry` once
/// something it read changed. Every attempt sees a consistent snapshot.
///
/// # Panics
///
/// * inside a running transaction or an `on_commit` hook (pass the `&mut Txn` instead);
/// * if the body calls [`Txn::abort`] or a `try_on_commit` hook vetoes (use
///   [`try_atomically`]); the message names the error's type (a refused lifecycle claim shows
///   up as `ClaimError`) and, for a string error, its text;
/// * if the body panics (after its attempt was rolled back and `on_abort` hooks ran), or a hook
///   panics;
/// * if the body retries having read no TVar (it could never wake up).
///
/// ```
/// use mvstm::{atomically, TVar};
/// let (a, b) = (TVar::new(1), TVar::new(2));
/// let sum = atomically(|tx| Ok(tx.read(&a)? + tx.read(&b)?));
/// assert_eq!(sum, 3);
/// ```
#[track_caller]
pub fn atomically<T>(body: impl FnMut(&mut Txn) -> StmResult<T>) -> T {
    match run(body, None) {
        Ok(value) => value,
        Err(Ended::Aborted(error)) => aborted_without_try("atomically", &error),
        Err(Ended::TimedOut) => unreachable!("a call without a limit timed out"),
    }
}

/// The panic of `atomically`, `atomically_timeout` and their async twins when the body aborts: they have no way to
/// return the error. The message names the error's type (a refused lifecycle claim shows up as
/// `mvstm_lifecycle::error::ClaimError`) and the call that would return it.
#[cold]
#[track_caller]
pub(crate) fn aborted_without_try(call: &str, error: &AbortError) -> ! {
    // The asynchronous calls point at the asynchronous `try_` call.
    let try_call = if call.ends_with("_async") {
        "try_atomically_async"
    } else {
        "try_atomically"
    };
    panic!(
        "a transaction run by `{call}` was aborted with an error of type {} (by Txn::abort or \
         a try_on_commit veto); run it with `{try_call}::<_, {}>` to receive the error",
        error.describe(),
        error.type_name()
    )
}

/// Run `body` as [`atomically`] does, but give up once the call has spent `limit` blocked in
/// `retry` (and its variants) in total: then nothing of it is published and the result is
/// `Err(TimedOut)` (ScalaSTM's `withRetryTimeout`).
///
/// Only waiting counts: a body that never retries runs to its commit however long it takes.
/// `retry_for` inside counts against the same total.
///
/// # Panics
///
/// As [`atomically`], except that a `retry` with nothing to wait on waits out the limit instead.
///
/// ```
/// use mvstm::{atomically_timeout, retry, TimedOut, TVar};
/// use std::time::Duration;
/// let empty = TVar::new(None::<u32>);
/// let r = atomically_timeout(Duration::from_millis(20), |tx| match tx.read(&empty)? {
///     Some(x) => Ok(x),
///     None => retry(),
/// });
/// assert_eq!(r, Err(TimedOut));
/// ```
#[track_caller]
pub fn atomically_timeout<T>(
    limit: Duration,
    body: impl FnMut(&mut Txn) -> StmResult<T>,
) -> Result<T, TimedOut> {
    match run(body, Some(limit)) {
        Ok(value) => Ok(value),
        Err(Ended::TimedOut) => Err(TimedOut),
        Err(Ended::Aborted(error)) => aborted_without_try("atomically_timeout", &error),
    }
}

/// How a call ended without a value.
pub(crate) enum Ended {
    /// `Txn::abort` or a vetoing `try_on_commit` hook, with the error.
    Aborted(AbortError),
    /// The call's limit on waiting (`atomically_timeout`) passed.
    TimedOut,
}

/// Run `body` as a transaction that may abort with an error of type `E`.
///
/// [`Txn::abort`] and a vetoing [`Txn::try_on_commit`] hook end the transaction with
/// `Err(e)`: writes are discarded and `on_abort` hooks run first.
///
/// # Panics
///
/// As [`atomically`], and if the transaction aborts with an error that is not an `E`; the
/// message names both types. (The mismatch cannot be a compile error: helpers take a plain
/// `&mut Txn`, which does not carry the error type, so one helper serves every caller.)
///
/// Panics point at the line that called `try_atomically` (`#[track_caller]`), as do those of
/// [`atomically`].
///
/// ```
/// use mvstm::{try_atomically, TVar};
/// #[derive(Debug, PartialEq)]
/// struct Insufficient;
/// let a = TVar::new(5i64);
/// let r = try_atomically::<(), Insufficient>(|tx| {
///     if tx.read(&a)? < 10 {
///         return tx.abort(Insufficient);
///     }
///     tx.modify(&a, |x| x - 10)
/// });
/// assert_eq!(r, Err(Insufficient));
/// ```
#[track_caller]
pub fn try_atomically<T, E: 'static>(body: impl FnMut(&mut Txn) -> StmResult<T>) -> Result<T, E> {
    match run(body, None) {
        Ok(value) => Ok(value),
        Err(Ended::Aborted(error)) => match error.downcast::<E>() {
            Ok(e) => Err(e),
            Err(error) => panic!(
                "try_atomically::<_, {}>: the transaction aborted with an error of type {}, \
                 not the type this call returns; make the types agree (convert the error \
                 before `tx.abort`, or call `try_atomically` with the aborting type)",
                std::any::type_name::<E>(),
                error.describe()
            ),
        },
        Err(Ended::TimedOut) => unreachable!("a call without a limit timed out"),
    }
}

/// The attempt loop; `limit` bounds the total time blocked in `retry` (`atomically_timeout`).
///
/// `#[track_caller]`: its misuse panics (a nested call, a retry with nothing to wait on) point
/// at the user's `atomically` line.
#[track_caller]
fn run<T>(
    mut body: impl FnMut(&mut Txn) -> StmResult<T>,
    limit: Option<Duration>,
) -> Result<T, Ended> {
    refuse_nesting();
    let mut tx = Cached::take();
    let mut contention = Contention::new(tx.committer.owner);
    loop {
        match attempts(
            &mut tx,
            &mut contention,
            &mut body,
            limit,
            WaiterKind::Thread,
        ) {
            Step::Done(result) => return result,
            Step::Wait(wait) => {
                let waited = wait.block();
                crate::stats::blocked(waited);
                tx.call.blocked += waited;
                if limit.is_some_and(|limit| tx.call.blocked >= limit) {
                    return Err(Ended::TimedOut);
                }
            }
        }
    }
}

/// Panic if called inside a transaction body or an `on_commit` hook.
#[inline]
#[track_caller]
pub(crate) fn refuse_nesting() {
    if in_transaction() {
        panic!(
            "`atomically` called inside a transaction or an on_commit hook; pass the `&mut Txn` \
             to the code that needs it instead of nesting"
        );
    }
}

/// Where [`attempts`] stopped.
// The `Wait` variant is large (inline room for its variables): a `Step` is moved once, from
// `attempts` to its caller, and boxing it would cost an allocation per retry.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Step<T> {
    /// The call is over: committed, or aborted with an error.
    Done(Result<T, Ended>),
    /// An attempt retried: it is abandoned (its `on_abort` hooks ran) and its wait registered;
    /// block on it or poll it, then call `attempts` again.
    Wait(Wait),
}

/// Run attempts of `body` until one commits, aborts with an error, or retries. A panic of the
/// body or a hook resumes after its attempt was abandoned.
///
/// The waiting itself is the caller's: a thread blocks (`run`), a task polls
/// (`atomically_async`); `who` says which registers.
#[inline]
#[track_caller]
pub(crate) fn attempts<T>(
    tx: &mut Cached,
    contention: &mut Contention,
    body: &mut impl FnMut(&mut Txn) -> StmResult<T>,
    limit: Option<Duration>,
    who: WaiterKind<'_>,
) -> Step<T> {
    loop {
        tx.begin();
        tx.priority = contention.holds_priority();
        let in_txn = InTxn::enter();
        // The body and the commit under one `catch_unwind`: a panic anywhere in the attempt
        // (the body, a clone or drop of a value, an `on_commit` hook) abandons it cleanly.
        let attempt = catch_unwind(AssertUnwindSafe(|| match body(tx) {
            Ok(value) => {
                let read_only = tx.writes.is_empty();
                tx.commit()
                    .map(|()| (value, read_only))
                    .map_err(Failed::Commit)
            }
            Err(signal) => Err(Failed::Signal(signal)),
        }));
        // Work the attempt left (queued TVar frees, a bag to flush) runs once the attempt is
        // finished or abandoned, after its hooks: it may run other values' destructors.
        let flags = in_txn.exit();
        let outcome = match attempt {
            Ok(Ok((value, read_only))) => {
                crate::stats::committed(read_only);
                contention.release();
                tx.finish_committed(flags);
                return Step::Done(Ok(value));
            }
            // An abort is final, whatever the body did with the signal afterwards.
            Ok(Err(_)) if tx.aborted.is_some() => {
                Abandon::Abort(tx.aborted.take().expect("checked"))
            }
            Ok(Err(Failed::Commit(CommitError::Conflict))) => Abandon::Conflict,
            Ok(Err(Failed::Commit(CommitError::Veto(Veto::Error(e))))) => Abandon::Abort(e),
            Ok(Err(Failed::Commit(CommitError::Veto(Veto::Panic(p))))) => Abandon::Panic(p),
            // A swallowed conflict turned into another signal: still a conflict.
            Ok(Err(Failed::Signal(_))) if tx.doomed => Abandon::Conflict,
            Ok(Err(Failed::Signal(signal))) => match signal.kind {
                ErrorKind::Retry(kind) => Abandon::Retry(kind),
                ErrorKind::Conflict => Abandon::Conflict,
                ErrorKind::Abort => panic!(
                    "a transaction body returned an abort signal that its own attempt did not \
                     raise (a `StmError` kept from an earlier attempt); return `tx.abort(e)` \
                     from the attempt that aborts"
                ),
            },
            Err(panic) => Abandon::Panic(panic),
        };
        // `on_abort` hooks run outside the transaction and may wait for other transactions:
        // never run them holding the priority token, which holds every other committer back.
        contention.release();
        match outcome {
            Abandon::Conflict => {
                crate::stats::conflicted(tx);
                tx.call.update_hint |= !tx.writes.is_empty();
                tx.abandon(AbortCause::Conflict, flags);
                contention.on_conflict();
            }
            Abandon::Retry(_) if tx.announced => {
                // The logged headers are not protected by the re-pinned guard: run the body
                // again with one pin, and let that attempt wait. The body did retry, and its
                // hooks are told so.
                tx.give_up_repinned();
                tx.abandon(AbortCause::Retry, flags);
            }
            Abandon::Retry(kind) => {
                if kind == RetryKind::Reads {
                    tx.wait.on_reads = true;
                    tx.wait_used = true;
                }
                // Register while still pinned: the logged headers are live until we unpin.
                let txn = &mut **tx;
                let mut wait = Wait::register(&mut txn.wait, &txn.reads, who, evaluate_predicate);
                if let Some(limit) = limit {
                    wait.limit(limit.saturating_sub(tx.call.blocked));
                }
                tx.abandon(AbortCause::Retry, flags);
                if wait.is_endless() {
                    panic!(
                        "retry would block forever: the attempt read no TVar and named none to \
                         wait on (read the state you are waiting for before calling retry)"
                    );
                }
                return Step::Wait(wait);
            }
            Abandon::Abort(e) => {
                tx.abandon(AbortCause::Abort, flags);
                return Step::Done(Err(Ended::Aborted(e)));
            }
            Abandon::Panic(p) => {
                tx.abandon(AbortCause::Panic, flags);
                resume_unwind(p);
            }
        }
    }
}

/// Why an attempt that ran to its end did not commit.
enum Failed {
    Signal(crate::error::StmError),
    Commit(CommitError),
}

impl Txn {
    /// Start an attempt: pin, take a snapshot.
    #[inline]
    fn begin(&mut self) {
        self.pin_attempt();
        self.rv = self.committer.slot.enter();
        self.call.attempt += 1;
    }

    /// Drop the attempt's state; unpins. Cheap when the attempt used no writes, waits or hooks.
    ///
    /// Everything is cleared even if a pending value's destructor panics; that panic is handed
    /// back, to be resumed once the attempt's hooks ran.
    #[inline(always)]
    #[must_use = "a panic from a value's destructor must be resumed"]
    fn clear_attempt(&mut self) -> Option<Panic> {
        self.reads.clear();
        self.doomed = false;
        self.stale = false;
        // The common case, a read-only attempt that neither aborted nor waited nor re-pinned,
        // has nothing more to clear than its pin.
        if !self.writes.is_empty() || self.wait_used || self.announced || self.aborted.is_some() {
            return self.clear_attempt_rest();
        }
        self.unpin_attempt();
        None
    }

    /// The rest of `clear_attempt`: discarded writes, a wait request, an abort, an announced
    /// snapshot.
    #[cold]
    #[must_use = "a panic from a value's destructor must be resumed"]
    fn clear_attempt_rest(&mut self) -> Option<Panic> {
        let dropped = if self.writes.is_empty() {
            None
        } else {
            self.writes.clear_discarded()
        };
        if self.wait_used {
            self.wait.clear();
            self.wait_used = false;
        }
        self.aborted = None;
        if self.announced {
            self.announced = false;
            crate::reclaim::withdraw(self.rv);
        }
        self.unpin_attempt();
        dropped
    }

    /// After a commit: unpin, run `after_commit` hooks, then hand due deferred frees to the
    /// collector and do the work the attempt left (`after_attempt`).
    ///
    /// The hooks come first: the flush may run other values' destructors, and one that panics
    /// must not unwind past promises already made (a `Lifecycle` claim records its outcome from
    /// an `after_commit` hook). The left-over work runs even if a hook panics.
    #[inline(always)]
    fn finish_committed(&mut self, flags: u8) {
        let dropped = self.clear_attempt();
        debug_assert!(dropped.is_none(), "a commit leaves no pending value");
        if flags != 0 || !self.hooks.is_empty() || self.committer.flush_due {
            self.finish_committed_rest(flags);
        }
    }

    /// The part of `finish_committed` that a commit without hooks, due flush or left-over work
    /// skips.
    #[cold]
    fn finish_committed_rest(&mut self, flags: u8) {
        let hooks = if self.hooks.is_empty() {
            Ok(())
        } else {
            catch_unwind(AssertUnwindSafe(|| self.hooks.run_after_commit()))
        };
        self.committer.flush_if_due();
        after_attempt(flags, &self.committer.handle);
        if let Err(panic) = hooks {
            resume_unwind(panic);
        }
    }

    /// After an abandoned attempt: discard it, unpin, run `on_abort` hooks, then the work the
    /// attempt left (`after_attempt`).
    ///
    /// Each step runs whatever the one before did: a panicking destructor of a discarded value
    /// does not skip the hooks, and a panicking hook does not skip the queued frees. The first
    /// panic resumes at the end (a hook's before a destructor's).
    fn abandon(&mut self, cause: AbortCause, flags: u8) {
        crate::stats::abandoned(cause);
        let dropped = self.clear_attempt();
        let hooks = if self.hooks.is_empty() {
            Ok(())
        } else {
            // The other hooks (including `on_commit` hooks a veto left unrun) are dropped after
            // the `on_abort` hooks ran, never while the commit held locks.
            let (on_abort, unrun) = self.hooks.take_on_abort();
            catch_unwind(AssertUnwindSafe(move || {
                hooks::run_on_abort(on_abort, cause);
                drop(unrun);
            }))
        };
        after_attempt(flags, &self.committer.handle);
        if let Err(panic) = hooks {
            resume_unwind(panic);
        }
        if let Some(panic) = dropped {
            resume_unwind(panic);
        }
    }

    /// Reset what belongs to one `atomically` call. Every normal way out of `run` commits or
    /// abandons, which clears the attempt; a panic from elsewhere (a hook, a predicate) might
    /// not, so clear again then, lest a cached `Txn` stay pinned.
    #[inline]
    fn reset_call(&mut self) {
        if std::thread::panicking() {
            // Already unwinding: a second panic from a destructor is dropped, not resumed.
            drop(self.clear_attempt());
        }
        if !self.hooks.is_empty() {
            self.hooks.clear();
        }
        self.call = CallState::default();
        self.forbid_writes = false;
    }
}

/// Evaluate a `retry_until` predicate in a fresh read-only transaction; also returns, from that
/// same snapshot, the stamp of each of `watched` that the predicate saw.
fn evaluate_predicate(
    predicate: &Predicate,
    watched: &[NonNull<crate::version::Header>],
) -> (bool, SmallVec<[u64; 4]>) {
    atomically(|tx| {
        tx.forbid_writes = true;
        let holds = predicate(tx);
        tx.forbid_writes = false;
        let holds = holds?;
        // SAFETY: the waiter holds a strong reference to each watched variable.
        let seen = watched.iter().map(|&h| unsafe { tx.stamp_seen(h) });
        Ok((holds, seen.collect()))
    })
}
