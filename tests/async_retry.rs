//! Asynchronous waiting (`atomically_async`, `try_atomically_async`,
//! `atomically_timeout_async`), on tokio's multi-thread runtime and on `futures`' plain
//! executors: a commit wakes a waiting task; every retry variant waits asynchronously;
//! `retry_for` and the call limit time out without blocking the executor's thread; a dropped
//! future leaves no registration and is never woken; a re-poll with another waker moves the
//! wake-up to it; threads and tasks wake each other; a thousand tasks on a queue get every item
//! exactly once; the future is `Send`; a lock held long by a committer does not spin the
//! executor.

mod common;

use common::{finish, panic_message, spawn_reporting, wait_for_runs, LIMIT};
use futures::executor::{block_on, LocalPool};
use futures::task::LocalSpawnExt;
use mvstm::collections::TQueue;
use mvstm::{
    atomically, atomically_async, atomically_timeout_async, retry, try_atomically_async,
    AbortCause, StmResult, TVar, TimedOut, Txn,
};
use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn new() -> (Arc<CountingWaker>, Waker) {
        let count = Arc::new(CountingWaker::default());
        (count.clone(), Waker::from(count))
    }

    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Commit `value` to `var` in a transaction of its own.
fn set<T: Clone + Send + Sync + 'static>(var: &TVar<T>, value: T) {
    atomically(|tx| tx.write(var, value.clone()));
}

fn poll_once<F: Future>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

/// Wait (bounded) until `waker` was woken `n` times.
fn wait_for_wakes(waker: &CountingWaker, n: usize) {
    let start = Instant::now();
    while waker.wakes() < n {
        assert!(start.elapsed() < LIMIT, "the task was never woken");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A future that is pending once and wakes itself: lets other tasks of the executor run.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// Wait (bounded) until a task registered a wait on `var`.
fn wait_for_waiters(var: &TVar<u64>, n: usize) {
    let start = Instant::now();
    while mvstm_core::waiters_on(var) < n {
        assert!(
            start.elapsed() < LIMIT,
            "no task registered on the variable"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn take_some(slot: &TVar<Option<u64>>) -> impl Future<Output = u64> + Send + '_ {
    atomically_async(move |tx| match tx.read(slot)? {
        Some(v) => Ok(v),
        None => retry(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_another_task_wakes_a_waiting_task_on_tokio() {
    let slot = Arc::new(TVar::new(None::<u64>));
    let runs = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (slot, runs) = (slot.clone(), runs.clone());
        tokio::spawn(async move {
            atomically_async(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                match tx.read(&slot)? {
                    Some(v) => Ok((v, tx.attempt())),
                    None => retry(),
                }
            })
            .await
        })
    };
    while mvstm_core::waiters_on(&slot) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "re-ran without a change");
    let writer = slot.clone();
    tokio::spawn(async move { atomically_async(|tx| tx.write(&writer, Some(7))).await })
        .await
        .unwrap();
    let (value, attempt) = tokio::time::timeout(LIMIT, waiter).await.unwrap().unwrap();
    assert_eq!(value, 7);
    // The call's attempt count survives the gap between polls.
    assert_eq!(attempt, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        mvstm_core::waiters_on(&slot),
        0,
        "a registration outlived the wait"
    );
}

#[test]
fn a_commit_from_a_thread_wakes_a_task_on_block_on() {
    let slot = TVar::new(None::<u64>);
    let writer = slot.clone();
    let filler = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        atomically(|tx| tx.write(&writer, Some(3)));
    });
    assert_eq!(block_on(take_some(&slot)), 3);
    filler.join().unwrap();
}

#[test]
fn a_task_blocked_by_nothing_completes_in_its_first_poll() {
    let v = TVar::new(4u64);
    let (_, waker) = CountingWaker::new();
    let mut fut = std::pin::pin!(atomically_async(|tx| {
        tx.modify(&v, |x| x + 1)?;
        tx.read(&v)
    }));
    assert_eq!(poll_once(fut.as_mut(), &waker), Poll::Ready(5));
    assert_eq!(v.load(), 5);
}

#[test]
fn retry_on_waits_for_a_named_variable_it_did_not_read() {
    let (flag, other) = (TVar::new(false), TVar::new(0u64));
    let (count, waker) = CountingWaker::new();
    let mut fut = std::pin::pin!(atomically_async(|tx| {
        if !flag.load() {
            return tx.retry_on(&[&other]);
        }
        Ok(())
    }));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    set(&flag, true); // not waited on: no wake-up
    assert_eq!(count.wakes(), 0);
    set(&other, 1);
    assert_eq!(
        count.wakes(),
        1,
        "a commit of the named variable did not wake the task"
    );
    assert_eq!(poll_once(fut.as_mut(), &waker), Poll::Ready(()));
}

#[test]
fn retry_all_wakes_the_task_only_once_every_variable_changed() {
    let (a, b) = (TVar::new(0u64), TVar::new(0u64));
    let runs = Cell::new(0);
    let (_, waker) = CountingWaker::new();
    let mut fut = std::pin::pin!(atomically_async(|tx| {
        runs.set(runs.get() + 1);
        if tx.read(&a)? == 0 || tx.read(&b)? == 0 {
            return tx.retry_all(&[&a, &b]);
        }
        Ok(())
    }));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    set(&a, 1);
    // Woken by a commit of one of them, the task looks and stays pending without a re-run.
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    assert_eq!(runs.get(), 1, "re-ran after one of two variables changed");
    set(&b, 1);
    assert_eq!(poll_once(fut.as_mut(), &waker), Poll::Ready(()));
    assert_eq!(runs.get(), 2);
}

#[test]
fn retry_until_wakes_the_task_once_the_predicate_holds() {
    let level = TVar::new(0u64);
    let runs = Cell::new(0);
    let (_, waker) = CountingWaker::new();
    let mut fut = std::pin::pin!(atomically_async(|tx| {
        runs.set(runs.get() + 1);
        let l = tx.read(&level)?;
        if l < 3 {
            let watched = level.clone();
            return tx.retry_until(&[&level], move |tx| Ok(tx.read(&watched)? >= 3));
        }
        Ok(l)
    }));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    for l in 1..3 {
        set(&level, l);
        assert!(poll_once(fut.as_mut(), &waker).is_pending());
    }
    assert_eq!(runs.get(), 1, "re-ran with a false predicate");
    set(&level, 3);
    assert_eq!(poll_once(fut.as_mut(), &waker), Poll::Ready(3));
    assert_eq!(runs.get(), 2);
}

#[test]
fn retry_for_wakes_on_a_change_before_its_timeout() {
    let ready = TVar::new(false);
    let writer = ready.clone();
    let flipper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        set(&writer, true);
    });
    let timed_out = block_on(atomically_async(|tx| {
        if tx.read(&ready)? {
            return Ok(false);
        }
        tx.retry_for(LIMIT)?;
        Ok(true)
    }));
    flipper.join().unwrap();
    assert!(
        !timed_out,
        "retry_for ran out instead of waking on the change"
    );
}

/// A task in `retry_for` (or with a call limit) leaves the executor's only thread free: another
/// task on it runs while the first waits, and the first still times out.
fn timeout_leaves_the_thread_free(
    waiting: impl Future<Output = bool> + 'static,
    started: Rc<Cell<bool>>,
) {
    let mut pool = LocalPool::new();
    let done = Rc::new(Cell::new(false));
    let ran_meanwhile = Rc::new(Cell::new(0u32));
    let start = Instant::now();
    {
        let done = done.clone();
        pool.spawner()
            .spawn_local(async move {
                assert!(waiting.await, "the wait did not time out");
                done.set(true);
            })
            .unwrap();
    }
    {
        let (done, ran) = (done.clone(), ran_meanwhile.clone());
        pool.spawner()
            .spawn_local(async move {
                while !done.get() {
                    if started.get() {
                        ran.set(ran.get() + 1);
                    }
                    yield_now().await;
                }
            })
            .unwrap();
    }
    pool.run();
    assert!(done.get());
    assert!(
        ran_meanwhile.get() > 0,
        "no other task ran on the executor's thread while the first waited"
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn retry_for_times_out_without_blocking_the_executor_thread() {
    let never = TVar::new(0u64);
    let started = Rc::new(Cell::new(false));
    let (v, s) = (never.clone(), started.clone());
    let waiting = async move {
        atomically_async(|tx| {
            s.set(true);
            if tx.read(&v)? != 0 {
                return Ok(false);
            }
            tx.retry_for(Duration::from_millis(30))?;
            Ok(true)
        })
        .await
    };
    timeout_leaves_the_thread_free(waiting, started);
    assert_eq!(mvstm_core::waiters_on(&never), 0);
}

#[test]
fn the_call_limit_times_out_without_blocking_the_executor_thread() {
    let never = TVar::new(None::<u64>);
    let started = Rc::new(Cell::new(false));
    let (v, s) = (never.clone(), started.clone());
    let waiting = async move {
        let r = atomically_timeout_async(Duration::from_millis(30), |tx| {
            s.set(true);
            match tx.read(&v)? {
                Some(x) => Ok(x),
                None => retry(),
            }
        })
        .await;
        r == Err(TimedOut)
    };
    timeout_leaves_the_thread_free(waiting, started);
}

#[tokio::test(flavor = "current_thread")]
async fn retry_for_times_out_on_a_current_thread_tokio_runtime() {
    let never = TVar::new(0u64);
    // The runtime's only thread also runs this other task while the first waits.
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let timed_out = atomically_async(|tx| {
        if tx.read(&never)? != 0 {
            return Ok(false);
        }
        tx.retry_for(Duration::from_millis(30))?;
        Ok(true)
    })
    .await;
    assert!(timed_out);
    assert!(ticks.load(Ordering::SeqCst) > 0, "the other task never ran");
    ticker.abort();
}

#[test]
fn a_dropped_waiting_future_leaves_no_registration_and_is_never_woken() {
    let v = TVar::new(0u64);
    let aborted = Rc::new(Cell::new(0));
    let (count, waker) = CountingWaker::new();
    let mut fut = Box::pin(atomically_async(|tx| {
        let seen = tx.read(&v)?;
        tx.write(&v, 99)?; // written, then the attempt retries: never published
        let aborted = aborted.clone();
        tx.on_abort(move |cause| {
            assert_eq!(cause, AbortCause::Retry);
            aborted.set(aborted.get() + 1);
        });
        if seen == 0 {
            return retry();
        }
        Ok(())
    }));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    assert_eq!(
        aborted.get(),
        1,
        "on_abort(Retry) did not run on the polling thread"
    );
    assert_eq!(mvstm_core::waiters_on(&v), 1);
    assert_eq!(v.load(), 0);
    drop(fut);
    assert_eq!(
        mvstm_core::waiters_on(&v),
        0,
        "the dropped future's entry stayed"
    );
    set(&v, 1);
    assert_eq!(count.wakes(), 0, "a commit woke a dropped future");
    assert_eq!(v.load(), 1);
}

#[test]
fn a_dropped_future_in_retry_for_is_not_woken_by_its_timer() {
    let v = TVar::new(0u64);
    let (count, waker) = CountingWaker::new();
    let mut fut = Box::pin(atomically_async(|tx| {
        if tx.read(&v)? == 0 {
            tx.retry_for(Duration::from_millis(10))?;
        }
        Ok(())
    }));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    drop(fut);
    // Past the deadline: the timer's entry was withdrawn with the future.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(count.wakes(), 0, "the timer woke a dropped future");
    assert_eq!(mvstm_core::waiters_on(&v), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_tokio_task_withdraws_its_registration() {
    let v = Arc::new(TVar::new(0u64));
    let task = {
        let v = v.clone();
        tokio::spawn(async move {
            atomically_async(|tx| {
                if tx.read(&v)? == 0 {
                    return retry();
                }
                Ok(())
            })
            .await
        })
    };
    while mvstm_core::waiters_on(&v) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(mvstm_core::waiters_on(&v), 0);
    set(&v, 1); // a commit after the cancel: nobody to wake, nothing panics
}

#[test]
fn a_poll_with_another_waker_moves_the_wake_up_to_it() {
    let v = TVar::new(0u64);
    let (first, first_waker) = CountingWaker::new();
    let (second, second_waker) = CountingWaker::new();
    let mut fut = std::pin::pin!(atomically_async(|tx| {
        if tx.read(&v)? < 2 {
            return retry();
        }
        Ok(())
    }));
    assert!(poll_once(fut.as_mut(), &first_waker).is_pending());
    // The same waker again: kept (`will_wake`), still woken.
    assert!(poll_once(fut.as_mut(), &first_waker.clone()).is_pending());
    set(&v, 1);
    assert_eq!(first.wakes(), 1);
    assert!(poll_once(fut.as_mut(), &second_waker).is_pending());
    set(&v, 2);
    assert_eq!(second.wakes(), 1, "the new waker was not woken");
    assert_eq!(first.wakes(), 1, "the replaced waker was woken");
    assert_eq!(poll_once(fut.as_mut(), &second_waker), Poll::Ready(()));
}

#[test]
fn a_commit_between_two_polls_is_seen_by_the_second() {
    // The change comes while the future holds no waker it would reach (it was replaced by a
    // waker that is never woken here): the next poll's look must see it anyway.
    let v = TVar::new(0u64);
    let (_, waker) = CountingWaker::new();
    let mut fut = std::pin::pin!(atomically_async(|tx| {
        if tx.read(&v)? == 0 {
            return retry();
        }
        tx.read(&v)
    }));
    assert!(poll_once(fut.as_mut(), Waker::noop()).is_pending());
    set(&v, 5);
    assert_eq!(poll_once(fut.as_mut(), &waker), Poll::Ready(5));
}

#[test]
fn a_thread_commit_wakes_a_task_and_a_task_commit_wakes_a_thread() {
    // Task waiter, thread committer.
    let slot = TVar::new(None::<u64>);
    let writer = slot.clone();
    let filler = thread::spawn(move || {
        wait_for_waiters_opt(&writer);
        atomically(|tx| tx.write(&writer, Some(1)));
    });
    assert_eq!(block_on(take_some(&slot)), 1);
    filler.join().unwrap();

    // Thread waiter, task committer.
    let flag = TVar::new(0u64);
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (flag, runs) = (flag.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                if tx.read(&flag)? == 0 {
                    return retry();
                }
                Ok(())
            })
        })
    };
    wait_for_runs(&runs, 1);
    wait_for_waiters(&flag, 1);
    block_on(atomically_async(|tx| tx.write(&flag, 1)));
    finish(&rx, "a thread waiting for a task's commit");
}

fn wait_for_waiters_opt(var: &TVar<Option<u64>>) {
    let start = Instant::now();
    while mvstm_core::waiters_on(var) == 0 {
        assert!(
            start.elapsed() < LIMIT,
            "no task registered on the variable"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn hooks_run_on_the_polling_thread() {
    let v = TVar::new(0u64);
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let (r1, r2) = (ran_on.clone(), ran_on.clone());
    block_on(atomically_async(|tx| {
        tx.write(&v, 1)?;
        let (r1, r2) = (r1.clone(), r2.clone());
        tx.on_commit(move || r1.lock().unwrap().push(thread::current().id()));
        tx.after_commit(move || r2.lock().unwrap().push(thread::current().id()));
        Ok(())
    }));
    let me = thread::current().id();
    assert_eq!(*ran_on.lock().unwrap(), vec![me, me]);
}

#[test]
fn try_atomically_async_returns_the_abort_and_publishes_nothing() {
    #[derive(Debug, PartialEq)]
    struct Refused(u64);
    let v = TVar::new(1u64);
    let r = block_on(try_atomically_async::<(), Refused>(|tx| {
        tx.write(&v, 50)?;
        let seen = tx.read(&v)?;
        tx.abort(Refused(seen))
    }));
    assert_eq!(r, Err(Refused(50)));
    assert_eq!(v.load(), 1);
}

#[test]
fn misuse_panics_with_a_clear_message() {
    let v = TVar::new(0u64);
    let abort = catch_unwind(AssertUnwindSafe(|| {
        block_on(atomically_async(|tx| -> StmResult<()> { tx.abort("no") }))
    }))
    .unwrap_err();
    assert!(panic_message(&*abort).contains("try_atomically_async"));

    let wrong_type = catch_unwind(AssertUnwindSafe(|| {
        block_on(try_atomically_async::<(), u32>(|tx| -> StmResult<()> {
            tx.abort("no")
        }))
    }))
    .unwrap_err();
    assert!(panic_message(&*wrong_type).contains("u32"));

    let endless = catch_unwind(AssertUnwindSafe(|| {
        block_on(atomically_async(|_tx: &mut Txn| -> StmResult<()> {
            retry()
        }))
    }))
    .unwrap_err();
    assert!(panic_message(&*endless).contains("block forever"));

    // A panicking body unwinds out of the poll, after its attempt was rolled back.
    let body = catch_unwind(AssertUnwindSafe(|| {
        block_on(atomically_async(|tx| -> StmResult<()> {
            tx.write(&v, 1)?;
            panic!("body failed")
        }))
    }))
    .unwrap_err();
    assert_eq!(panic_message(&*body), "body failed");
    assert_eq!(v.load(), 0);
    assert_eq!(mvstm_core::waiters_on(&v), 0);
}

#[test]
fn polling_after_completion_panics() {
    let mut fut = std::pin::pin!(atomically_async(|_tx| Ok(1)));
    assert_eq!(poll_once(fut.as_mut(), Waker::noop()), Poll::Ready(1));
    let again = catch_unwind(AssertUnwindSafe(|| poll_once(fut.as_mut(), Waker::noop())));
    assert!(panic_message(&*again.unwrap_err()).contains("after completion"));
}

/// Consumers pop until they took their share; every item arrives exactly once.
fn check_delivery(mut got: Vec<u64>, items: u64) {
    got.sort_unstable();
    let expected: Vec<u64> = (0..items).collect();
    assert_eq!(got.len(), expected.len(), "items lost or duplicated");
    assert_eq!(got, expected, "items lost or duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_on_a_queue_get_every_item_exactly_once_on_tokio() {
    const CONSUMERS: u64 = 1000;
    const PER_CONSUMER: u64 = 4;
    const PRODUCERS: u64 = 4;
    const ITEMS: u64 = CONSUMERS * PER_CONSUMER;
    let queue = Arc::new(TQueue::<u64>::new());
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let queue = queue.clone();
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..PER_CONSUMER {
                got.push(atomically_async(|tx| queue.pop(tx)).await);
            }
            got
        }));
    }
    // Half the producers are tasks, half are threads: both kinds of commit wake tasks.
    let mut producer_threads = Vec::new();
    let mut producer_tasks = Vec::new();
    for p in 0..PRODUCERS {
        let queue = queue.clone();
        let items = (p..ITEMS).step_by(PRODUCERS as usize);
        if p % 2 == 0 {
            producer_tasks.push(tokio::spawn(async move {
                for item in items {
                    atomically_async(|tx| queue.push(tx, item)).await;
                    if item % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        } else {
            producer_threads.push(thread::spawn(move || {
                for item in items {
                    atomically(|tx| queue.push(tx, item));
                }
            }));
        }
    }
    let mut got = Vec::new();
    for consumer in consumers {
        got.extend(
            tokio::time::timeout(LIMIT * 3, consumer)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for task in producer_tasks {
        task.await.unwrap();
    }
    for t in producer_threads {
        t.join().unwrap();
    }
    check_delivery(got, ITEMS);
    assert!(atomically(|tx| queue.try_pop(tx)).is_none());
}

#[test]
fn many_tasks_on_a_local_pool_get_every_item_exactly_once() {
    const CONSUMERS: u64 = 300;
    const ITEMS: u64 = CONSUMERS * 3;
    let queue = Arc::new(TQueue::<u64>::new());
    let got = Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut pool = LocalPool::new();
    for _ in 0..CONSUMERS {
        let (queue, got) = (queue.clone(), got.clone());
        pool.spawner()
            .spawn_local(async move {
                for _ in 0..3 {
                    let item = atomically_async(|tx| queue.pop(tx)).await;
                    got.borrow_mut().push(item);
                }
            })
            .unwrap();
    }
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let queue = queue.clone();
            thread::spawn(move || {
                for item in (p..ITEMS).step_by(2) {
                    atomically(|tx| queue.push(tx, item));
                }
            })
        })
        .collect();
    pool.run();
    for p in producers {
        p.join().unwrap();
    }
    check_delivery(got.take(), ITEMS);
}

#[test]
fn a_ping_pong_between_a_task_and_a_thread_loses_no_wake_up() {
    const ROUNDS: u64 = 2_000;
    let ball = TVar::new(0u64);
    let other = ball.clone();
    let thread_side = thread::spawn(move || {
        for round in 0..ROUNDS {
            atomically(|tx| {
                let b = tx.read(&other)?;
                if b != 2 * round + 1 {
                    return retry();
                }
                tx.write(&other, b + 1)
            });
        }
    });
    block_on(async {
        for round in 0..ROUNDS {
            atomically_async(|tx| {
                let b = tx.read(&ball)?;
                if b != 2 * round {
                    return retry();
                }
                tx.write(&ball, b + 1)
            })
            .await;
        }
        atomically_async(|tx| {
            if tx.read(&ball)? != 2 * ROUNDS {
                return retry();
            }
            Ok(())
        })
        .await;
    });
    thread_side.join().unwrap();
    assert_eq!(ball.load(), 2 * ROUNDS);
}

#[test]
fn the_future_is_send_when_the_body_is() {
    fn assert_send<T: Send>(_: &T) {}
    let v = TVar::new(0u64);
    let waiting = atomically_async(|tx| {
        let x = tx.read(&v)?;
        if x == 0 {
            let w = v.clone();
            return tx.retry_until(&[&v], move |tx| Ok(tx.read(&w)? > 0));
        }
        Ok(x)
    });
    assert_send(&waiting);
    assert_send(&try_atomically_async::<u64, String>(|tx| tx.read(&v)));
    assert_send(&atomically_timeout_async(Duration::from_millis(1), |tx| {
        tx.read(&v)
    }));
    drop(waiting);
    // And it runs on tokio's multi-thread runtime, which requires it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    set(&v, 3);
    assert_eq!(rt.block_on(rt.spawn(waiting_owned(v))).unwrap(), 3);
}

async fn waiting_owned(v: TVar<u64>) -> u64 {
    atomically_async(|tx| tx.read(&v)).await
}

#[test]
fn a_task_moved_between_threads_keeps_waiting_and_wakes() {
    // Polled first on this thread, then on another: the registration goes with the future.
    let v = TVar::new(0u64);
    let writer = v.clone();
    let (count, waker) = CountingWaker::new();
    let mut fut = Box::pin(atomically_async(move |tx| {
        if tx.read(&v)? == 0 {
            return retry();
        }
        Ok(tx.attempt())
    }));
    assert!(poll_once(fut.as_mut(), &waker).is_pending());
    let (polled_tx, polled) = std::sync::mpsc::channel();
    let rx = spawn_reporting(move || {
        let (moved, waker) = CountingWaker::new();
        assert!(poll_once(fut.as_mut(), &waker).is_pending());
        polled_tx.send(()).unwrap();
        wait_for_wakes(&moved, 1);
        poll_once(fut.as_mut(), &waker)
    });
    polled.recv_timeout(LIMIT).unwrap();
    set(&writer, 1);
    assert_eq!(finish(&rx, "the moved task"), Poll::Ready(2));
    assert_eq!(
        count.wakes(),
        0,
        "the first thread's waker was woken after the move"
    );
}

/// Counts the polls of the future it wraps.
struct CountPolls<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

#[test]
fn a_lock_held_long_by_a_committer_does_not_spin_the_executor() {
    // A writer sits in an `on_commit` hook for 100 ms, holding the lock of the variable a task
    // waits on. The task finds it locked and unchanged: it looks again a few times at once, then
    // naps through the timer (20 µs doubling to 1 ms), and completes after the commit. A task
    // that kept asking to be polled at once would be polled hundreds of thousands of times.
    let v = TVar::new(0u64);
    let (in_hook_tx, in_hook) = std::sync::mpsc::channel();
    let writer = {
        let v = v.clone();
        thread::spawn(move || {
            atomically(|tx| {
                tx.write(&v, 1)?;
                let in_hook_tx = in_hook_tx.clone();
                tx.on_commit(move || {
                    in_hook_tx.send(()).unwrap();
                    thread::sleep(Duration::from_millis(100));
                });
                Ok(())
            })
        })
    };
    in_hook.recv_timeout(LIMIT).unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    let waiting = CountPolls {
        inner: Box::pin(atomically_async(|tx| {
            if tx.read(&v)? == 0 {
                return retry();
            }
            Ok(())
        })),
        polls: polls.clone(),
    };
    block_on(waiting);
    writer.join().unwrap();
    let polls = polls.load(Ordering::SeqCst);
    println!("{polls} polls while the variable was locked for 100 ms");
    assert!(
        polls > 5,
        "the locked variable was not looked at again ({polls} polls)"
    );
    assert!(
        polls < 10_000,
        "the executor spun: {polls} polls during a 100 ms hold"
    );
}
