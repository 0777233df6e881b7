//! `atomically_async` and its relatives: the attempt loop of `runtime.rs` as a future.
//!
//! The body is the same synchronous closure as for `atomically`; only waiting changes. A poll
//! runs attempts exactly as `atomically` does (`runtime::attempts`) until one commits, aborts or
//! retries. A retry registers the task's waker where a thread would register itself
//! (`parking.rs`, "Task waiters"), looks once more, and returns `Pending`; the next poll puts
//! the then-current waker in place, looks, and re-runs the body if a condition holds. An attempt
//! runs within one poll, on the polling thread: the thread's cached `Txn` is taken at the start
//! of the poll and given back before it returns (it is `!Send`, so holding it across a
//! `Pending` would not compile for a `Send` future), and the few per-call fields that must
//! survive the gap (`CallState`) wait in the future. Hooks run on the polling thread.
//!
//! Cancel safety: the registered `Wait` is the only thing the future holds between polls;
//! dropping the future drops it, which removes its table entries, cancels its timer entry and
//! empties its waker slot, so nothing leaks and no wake-up is issued for the task afterwards.
//! Nothing of an attempt is ever published across a `Pending`: an attempt that retried was
//! abandoned before the future returned.

use crate::contention::Contention;
use crate::error::{StmResult, TimedOut};
use crate::parking::{Wait, WaiterKind};
use crate::runtime::{aborted_without_try, attempts, refuse_nesting, Cached, Ended, Step};
use crate::txn::{CallState, Txn};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

/// Run `body` as a transaction until it commits, as [`atomically`](crate::atomically) does,
/// but wait asynchronously: a `retry` (or [`retry_on`](Txn::retry_on),
/// [`retry_all`](Txn::retry_all), [`retry_until`](Txn::retry_until),
/// [`retry_for`](Txn::retry_for)) registers the task's waker on what the attempt waits for and
/// returns `Pending`, so no thread is blocked. Works on any executor.
///
/// The future is `Send` when the body is. Hooks run on the thread that polls it. Dropping it
/// while it waits withdraws its registration: nothing leaks, no later wake-up reaches the task,
/// and nothing of the attempt is published. A commit from a thread wakes a waiting task, and a
/// commit from a task wakes a blocked thread.
///
/// # Panics
///
/// When polled, as [`atomically`](crate::atomically) (naming [`try_atomically_async`] for an
/// abort); and, as every `async` block, if polled again after it completed.
///
/// ```
/// use mvstm::{atomically_async, retry, TVar};
/// # futures::executor::block_on(async {
/// let slot = TVar::new(None::<String>);
/// let filler = slot.clone();
/// std::thread::spawn(move || mvstm::atomically(|tx| tx.write(&filler, Some("ready".into()))));
/// let got: String = atomically_async(|tx| match tx.read(&slot)? {
///     Some(s) => Ok(s),
///     None => retry(),
/// })
/// .await;
/// assert_eq!(got, "ready");
/// # });
/// ```
pub fn atomically_async<T>(body: impl FnMut(&mut Txn) -> StmResult<T>) -> impl Future<Output = T> {
    let run = run_async(body, None);
    async move {
        match run.await {
            Ok(value) => value,
            Err(Ended::Aborted(error)) => aborted_without_try("atomically_async", &error),
            Err(Ended::TimedOut) => unreachable!("a call without a limit timed out"),
        }
    }
}

/// Run `body` as a transaction that may abort with an error of type `E`, as
/// [`try_atomically`](crate::try_atomically) does, waiting asynchronously as
/// [`atomically_async`] does.
///
/// # Panics
///
/// As [`atomically_async`], and if the transaction aborts with an error that is not an `E`.
///
/// ```
/// use mvstm::{try_atomically_async, TVar};
/// #[derive(Debug, PartialEq)]
/// struct Insufficient;
/// let a = TVar::new(5i64);
/// let withdraw = try_atomically_async::<(), Insufficient>(|tx| {
///     if tx.read(&a)? < 10 {
///         return tx.abort(Insufficient);
///     }
///     tx.modify(&a, |x| x - 10)
/// });
/// assert_eq!(futures::executor::block_on(withdraw), Err(Insufficient));
/// ```
pub fn try_atomically_async<T, E: 'static>(
    body: impl FnMut(&mut Txn) -> StmResult<T>,
) -> impl Future<Output = Result<T, E>> {
    let run = run_async(body, None);
    async move {
        run.await.map_err(|ended| match ended {
            Ended::Aborted(error) => match error.downcast::<E>() {
                Ok(e) => e,
                Err(error) => panic!(
                    "try_atomically_async::<_, {}>: the transaction aborted with an error of \
                     type {}, not the type this call returns; make the types agree",
                    std::any::type_name::<E>(),
                    error.describe()
                ),
            },
            Ended::TimedOut => unreachable!("a call without a limit timed out"),
        })
    }
}

/// Run `body` as [`atomically_async`] does, but give up once the call has waited `limit` in
/// `retry` (and its variants) in total: then nothing of it is published and the result is
/// `Err(TimedOut)`, as [`atomically_timeout`](crate::atomically_timeout). The time is kept by
/// one timer thread shared by every asynchronous wait of the process, not by a blocked thread.
///
/// # Panics
///
/// As [`atomically_async`].
///
/// ```
/// use mvstm::{atomically_timeout_async, retry, TimedOut, TVar};
/// use std::time::Duration;
/// let empty = TVar::new(None::<u32>);
/// let waiting = atomically_timeout_async(Duration::from_millis(20), |tx| match tx.read(&empty)? {
///     Some(x) => Ok(x),
///     None => retry(),
/// });
/// assert_eq!(futures::executor::block_on(waiting), Err(TimedOut));
/// ```
pub fn atomically_timeout_async<T>(
    limit: Duration,
    body: impl FnMut(&mut Txn) -> StmResult<T>,
) -> impl Future<Output = Result<T, TimedOut>> {
    let run = run_async(body, Some(limit));
    async move {
        match run.await {
            Ok(value) => Ok(value),
            Err(Ended::TimedOut) => Err(TimedOut),
            Err(Ended::Aborted(error)) => aborted_without_try("atomically_timeout_async", &error),
        }
    }
}

/// The attempt loop as a future; `limit` as in `runtime::run`.
fn run_async<T>(
    mut body: impl FnMut(&mut Txn) -> StmResult<T>,
    limit: Option<Duration>,
) -> impl Future<Output = Result<T, Ended>> {
    // Between polls: the registered wait, if the last attempt retried, and the call's state.
    let mut wait: Option<Wait> = None;
    let mut call = CallState::default();
    let timed_out = move |call: &CallState| limit.is_some_and(|limit| call.blocked >= limit);
    std::future::poll_fn(move |cx| {
        if let Some(waiting) = wait.as_mut() {
            let Poll::Ready(waited) = waiting.poll(cx) else {
                return Poll::Pending;
            };
            // Dropping the wait removes its registration before the body runs again.
            wait = None;
            crate::stats::blocked(waited);
            call.blocked += waited;
            if timed_out(&call) {
                return Poll::Ready(Err(Ended::TimedOut));
            }
        }
        refuse_nesting();
        let mut tx = Cached::take();
        // The call's state goes into the thread's cached `Txn` for this poll; `Cached`'s drop
        // resets it there.
        tx.call = call;
        let mut contention = Contention::new(tx.committer.owner);
        loop {
            let who = WaiterKind::Task(cx.waker());
            match attempts(&mut tx, &mut contention, &mut body, limit, who) {
                Step::Done(result) => return Poll::Ready(result),
                // The first look right after registering (the register-then-revalidate order):
                // a commit since the attempt's snapshot ends the wait before it began.
                Step::Wait(mut registered) => match registered.poll(cx) {
                    Poll::Ready(waited) => {
                        drop(registered);
                        crate::stats::blocked(waited);
                        tx.call.blocked += waited;
                        if limit.is_some_and(|limit| tx.call.blocked >= limit) {
                            return Poll::Ready(Err(Ended::TimedOut));
                        }
                    }
                    Poll::Pending => {
                        call = tx.call;
                        wait = Some(registered);
                        // `tx` goes back to the thread's cache here, `contention` gives back
                        // the priority token if it held it (it does not: `attempts` released
                        // it before the retry).
                        return Poll::Pending;
                    }
                },
            }
        }
    })
}
