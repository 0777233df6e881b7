//! `CommandQueue` from async code: async handlers with the same retries, dead letters and log;
//! the async processor on tokio and on a thread-per-task executor; blocking and async handlers
//! in one queue, one at a time, in order; producers and idle-waiters on threads and tasks at
//! once; the two kinds of processor never overlapping; and what stops, drops and executor
//! shutdowns leave behind.

mod common;

use common::{finish, spawn_reporting, DropCounter, LIMIT, QUIET};
use futures::executor::block_on;
use mvstm::lifecycle::{
    CommandQueue, CommandQueueBuilder, EnqueueError, HandlerError, LifecycleError, OutcomeKind,
    ProcessorError, State,
};
use mvstm::{atomically, atomically_async, retry, TVar};
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Spawn the processor's task on the current tokio runtime.
fn on_tokio(builder: CommandQueueBuilder) -> CommandQueueBuilder {
    let handle = tokio::runtime::Handle::current();
    builder.spawner(move |task| {
        handle.spawn(task);
    })
}

/// Run each task to completion on a thread of its own (`futures`' `block_on`): no runtime.
fn on_threads(builder: CommandQueueBuilder) -> CommandQueueBuilder {
    builder.spawner(|task| {
        std::thread::spawn(move || block_on(task));
    })
}

/// Wait, asynchronously and bounded, until `var` holds `true`.
async fn until(var: &TVar<bool>) {
    let reached =
        mvstm::atomically_timeout_async(LIMIT, |tx| if tx.read(var)? { Ok(()) } else { retry() })
            .await;
    assert!(reached.is_ok(), "waited {LIMIT:?} in vain");
}

#[derive(Clone, Debug)]
struct Job {
    id: u32,
    /// How many attempts fail before one succeeds; `u32::MAX`: always.
    failures: u32,
    /// Fail by panicking instead of returning an error.
    panics: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_are_retried_dead_lettered_and_logged() {
    let attempts: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let done = TVar::new(Vec::<u32>::new());
    let queue = on_tokio(CommandQueue::builder().max_attempts(3))
        .handler_async({
            let (attempts, done) = (attempts.clone(), done.clone());
            move |job: Job| {
                let (attempts, done) = (attempts.clone(), done.clone());
                async move {
                    let n = {
                        let mut attempts = attempts.lock().unwrap();
                        let n = attempts.entry(job.id).or_default();
                        *n += 1;
                        *n
                    };
                    tokio::task::yield_now().await;
                    if n <= job.failures {
                        if job.panics {
                            panic!("job {} exploded", job.id);
                        }
                        return Err(HandlerError::new(format!("job {} try {n}", job.id)));
                    }
                    atomically(|tx| {
                        tx.modify(&done, |mut d| {
                            d.push(job.id);
                            d
                        })
                    });
                    Ok(())
                }
            }
        })
        .build();
    let jobs = [
        Job {
            id: 1,
            failures: 0,
            panics: false,
        },
        Job {
            id: 2,
            failures: 2,
            panics: false,
        },
        Job {
            id: 3,
            failures: u32::MAX,
            panics: false,
        },
        Job {
            id: 4,
            failures: 1,
            panics: true,
        },
    ];
    for job in jobs {
        queue.enqueue_async(job).await.unwrap();
    }
    queue.async_processor().start().await.unwrap();
    assert!(queue.wait_idle_async(LIMIT).await);
    queue.async_processor().stop().await.unwrap();

    // Processed once each, after their failures; 3 dead-lettered after 3 attempts.
    let mut processed = done.load();
    processed.sort();
    assert_eq!(processed, [1, 2, 4]);
    let stats = queue.stats();
    assert_eq!(
        (stats.processed, stats.retried, stats.dead_lettered),
        (3, 5, 1)
    );
    let dead = queue.dead_letters();
    assert_eq!((dead.len(), dead[0].attempts), (1, 3));
    assert_eq!(&*dead[0].error, "job 3 try 3");
    let panicked = queue
        .outcomes()
        .into_iter()
        .find_map(|o| match o.kind {
            OutcomeKind::Retried { error } if error.contains("exploded") => Some(error),
            _ => None,
        })
        .expect("the panic was logged as a failed attempt");
    assert_eq!(&*panicked, "the handler panicked: job 4 exploded");
    assert_eq!(attempts.lock().unwrap()[&3], 3);
}

/// Checks that no two handlers run at once, and records the order they ran in.
#[derive(Clone, Default)]
struct Serial {
    inside: Arc<AtomicUsize>,
    overlapped: Arc<AtomicBool>,
    order: Arc<Mutex<Vec<u32>>>,
}

impl Serial {
    fn enter(&self) {
        if self.inside.fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlapped.store(true, Ordering::SeqCst);
        }
    }

    fn leave(&self, id: u32) {
        self.order.lock().unwrap().push(id);
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Slow(u32);
struct Quick(u32);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_and_async_handlers_run_one_at_a_time_in_queue_order() {
    let serial = Serial::default();
    let queue = on_tokio(CommandQueue::builder())
        .handler_async({
            let serial = serial.clone();
            move |Slow(id)| {
                let serial = serial.clone();
                async move {
                    serial.enter();
                    // Give any other handler every chance to run meanwhile.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    serial.leave(id);
                    Ok(())
                }
            }
        })
        .handler({
            let serial = serial.clone();
            move |tx, &Quick(id): &Quick| {
                serial.enter();
                // Leave on the attempt that commits only (a conflict re-runs the body).
                let serial = serial.clone();
                tx.on_abort({
                    let serial = serial.clone();
                    move |_| {
                        serial.inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
                tx.on_commit(move || serial.leave(id));
                Ok(())
            }
        })
        .build();
    queue.async_processor().start().await.unwrap();
    for id in 0..60 {
        if id % 2 == 0 {
            queue.enqueue_async(Slow(id)).await.unwrap();
        } else {
            queue.enqueue(Quick(id)).unwrap();
        }
    }
    assert!(queue.wait_idle_async(LIMIT).await);
    queue.async_processor().stop().await.unwrap();
    assert!(
        !serial.overlapped.load(Ordering::SeqCst),
        "two handlers ran at once"
    );
    assert_eq!(*serial.order.lock().unwrap(), (0..60).collect::<Vec<_>>());
    assert_eq!(queue.stats().processed, 60);
}

#[test]
fn the_thread_processor_refuses_async_handlers() {
    let queue = on_threads(CommandQueue::builder())
        .handler_async(|_: Slow| async { Ok(()) })
        .build();
    match queue.processor().start() {
        Err(LifecycleError::Failed(ProcessorError::AsyncHandlers)) => {}
        other => panic!("expected AsyncHandlers, got {other:?}"),
    }
    assert!(matches!(queue.processor().state(), State::Failed(ref f)
        if f.message.contains("start its async_processor instead")));
    // Nothing ran: the async processor handles the queue.
    queue.enqueue(Slow(1)).unwrap();
    block_on(queue.async_processor().start()).unwrap();
    assert!(queue.wait_idle(LIMIT));
    block_on(queue.async_processor().stop()).unwrap();
    assert_eq!(queue.stats().processed, 1);
}

#[test]
#[should_panic(expected = "an async handler needs a spawner")]
fn an_async_handler_without_a_spawner_is_refused_at_build() {
    let _ = CommandQueue::builder()
        .handler_async(|_: Slow| async { Ok(()) })
        .build();
}

#[test]
fn the_async_processor_without_a_spawner_says_so() {
    let queue = CommandQueue::builder()
        .handler(|_, _: &Quick| Ok(()))
        .build();
    let refused = block_on(queue.async_processor().start()).unwrap_err();
    assert!(
        matches!(refused, LifecycleError::Failed(ProcessorError::NoSpawner)),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("CommandQueueBuilder::spawner"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_async_waits_for_room_and_a_dropped_one_enqueues_nothing() {
    let drops = DropCounter::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let queue = on_tokio(CommandQueue::builder().capacity(1))
        .handler({
            let handled = handled.clone();
            move |tx, _: &common::Counted| {
                let handled = handled.clone();
                tx.after_commit(move || {
                    handled.fetch_add(1, Ordering::SeqCst);
                });
                Ok(())
            }
        })
        .build();
    queue.enqueue(drops.value(1)).unwrap();
    // Full: the async enqueue waits, and dropping it while it waits enqueues nothing.
    {
        let mut waiting = pin!(queue.enqueue_async(drops.value(2)));
        assert!(poll_once(waiting.as_mut()).is_pending());
        assert!(poll_once(waiting.as_mut()).is_pending());
    }
    assert_eq!(queue.len(), 1);
    assert_eq!(
        drops.live(),
        1,
        "the dropped enqueue's command was dropped with it"
    );
    // A waiting enqueue completes once the processor frees the slot.
    let waiter = {
        let queue = queue.clone();
        let value = drops.value(3);
        tokio::spawn(async move { queue.enqueue_async(value).await.map_err(|_| ()) })
    };
    tokio::time::sleep(QUIET).await;
    assert!(
        !waiter.is_finished(),
        "enqueue_async did not wait while full"
    );
    queue.async_processor().start().await.unwrap();
    let id = waiter.await.unwrap().unwrap();
    assert_eq!(id, 3); // id 2 went with the dropped future
    assert!(queue.wait_idle_async(LIMIT).await);
    queue.async_processor().stop().await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 2);
    assert_eq!(queue.stats().processed, 2);
    drops.assert_all_dropped("commands of the queue");
    // A command with no handler is refused at once, given back.
    match queue.enqueue_async("unhandled").await {
        Err(EnqueueError::NoHandler(command)) => assert_eq!(command, "unhandled"),
        other => panic!("expected NoHandler, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_idle_waiters_on_threads_and_tasks_share_one_queue() {
    const PER_PRODUCER: u64 = 200;
    let total = TVar::new(0u64);
    let queue = on_tokio(CommandQueue::builder().capacity(16))
        .handler({
            let total = total.clone();
            move |tx, n: &u64| tx.modify(&total, |t| t + n)
        })
        .handler_async({
            let total = total.clone();
            move |n: u32| {
                let total = total.clone();
                async move {
                    atomically_async(|tx| tx.modify(&total, |t| t + u64::from(n))).await;
                    Ok(())
                }
            }
        })
        .build();
    queue.async_processor().start().await.unwrap();
    // Two threads enqueue blocking-handled commands (retrying when full), two tasks enqueue
    // async-handled ones (waiting for room).
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let queue = queue.clone();
            spawn_reporting(move || {
                for n in 1..=PER_PRODUCER {
                    let mut command = n;
                    while let Err(EnqueueError::Full(back)) = queue.enqueue(command) {
                        command = back;
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for n in 1..=PER_PRODUCER as u32 {
                    queue.enqueue_async(n).await.unwrap();
                }
            })
        })
        .collect();
    for thread in &threads {
        finish(thread, "a producer thread");
    }
    for task in tasks {
        task.await.unwrap();
    }
    // An idle-waiter of each kind: both see the queue drain.
    let blocking_waiter = {
        let queue = queue.clone();
        spawn_reporting(move || queue.wait_idle(LIMIT))
    };
    assert!(queue.wait_idle_async(LIMIT).await);
    assert!(finish(&blocking_waiter, "wait_idle on a thread"));
    queue.async_processor().stop().await.unwrap();
    let per_producer: u64 = (1..=PER_PRODUCER).sum();
    assert_eq!(total.load(), 4 * per_producer);
    assert_eq!(queue.stats().processed, 4 * PER_PRODUCER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_wakes_a_retrying_handler_and_leaves_its_command_queued() {
    let ready = TVar::new(false);
    let entered = TVar::new(false);
    let queue = on_tokio(CommandQueue::builder())
        .handler({
            let (ready, entered) = (ready.clone(), entered.clone());
            move |tx, _: &Quick| {
                if !tx.read(&ready)? {
                    // Seen by the test once this attempt waits: a write here would be undone.
                    let entered = entered.clone();
                    tx.on_abort(move |_| atomically(|tx| tx.write(&entered, true)));
                    return retry();
                }
                Ok(())
            }
        })
        .build();
    queue.enqueue(Quick(1)).unwrap();
    queue.async_processor().start().await.unwrap();
    until(&entered).await;
    // The handler waits in `retry` without a thread; the stop wakes it, and it gives up.
    queue.async_processor().stop().await.unwrap();
    assert_eq!(queue.len(), 1, "the command stays queued");
    assert!(
        queue.outcomes().is_empty(),
        "a deferred attempt is not an outcome"
    );
    atomically(|tx| tx.write(&ready, true));
    queue.async_processor().start().await.unwrap();
    assert!(queue.wait_idle_async(LIMIT).await);
    queue.async_processor().stop().await.unwrap();
    assert_eq!(queue.stats().processed, 1);
    assert_eq!(queue.outcomes()[0].attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_an_async_handler_in_progress_finish() {
    let (gate, entered) = (TVar::new(false), TVar::new(false));
    let queue = on_tokio(CommandQueue::builder())
        .handler_async({
            let (gate, entered) = (gate.clone(), entered.clone());
            move |_: Slow| {
                let (gate, entered) = (gate.clone(), entered.clone());
                async move {
                    atomically(|tx| tx.write(&entered, true));
                    until(&gate).await;
                    Ok(())
                }
            }
        })
        .build();
    queue.enqueue(Slow(1)).unwrap();
    queue.async_processor().start().await.unwrap();
    until(&entered).await;
    let stopping = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.async_processor().stop().await })
    };
    tokio::time::sleep(QUIET).await;
    assert!(
        !stopping.is_finished(),
        "stop returned before the handler finished"
    );
    assert_eq!(queue.async_processor().state(), State::Stopping);
    atomically(|tx| tx.write(&gate, true));
    stopping.await.unwrap().unwrap();
    // Its outcome was recorded before the processor ended.
    assert_eq!(queue.stats().processed, 1);
    assert!(queue.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_and_the_task_processor_never_handle_at_once() {
    let serial = Serial::default();
    let queue = on_tokio(CommandQueue::builder().capacity(4096))
        .handler({
            let serial = serial.clone();
            move |tx, &Quick(id): &Quick| {
                serial.enter();
                // Long enough for the other processor, if it were handling too, to be inside.
                std::thread::sleep(Duration::from_micros(100));
                let serial = serial.clone();
                tx.on_abort({
                    let serial = serial.clone();
                    move |_| {
                        serial.inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
                tx.on_commit(move || serial.leave(id));
                Ok(())
            }
        })
        .build();
    // Both kinds started on one queue: one takes the seat, the other waits for it.
    queue.processor().start().unwrap();
    queue.async_processor().start().await.unwrap();
    for id in 0..500 {
        queue.enqueue(Quick(id)).unwrap();
    }
    assert!(queue.wait_idle_async(LIMIT).await);
    // Stopping the one that holds the seat hands it to the other.
    let thread_stopped = {
        let queue = queue.clone();
        tokio::task::spawn_blocking(move || queue.processor().stop())
    };
    thread_stopped.await.unwrap().unwrap();
    for id in 500..1000 {
        queue.enqueue(Quick(id)).unwrap();
    }
    assert!(queue.wait_idle_async(LIMIT).await);
    queue.async_processor().stop().await.unwrap();
    assert!(
        !serial.overlapped.load(Ordering::SeqCst),
        "the processors overlapped"
    );
    assert_eq!(*serial.order.lock().unwrap(), (0..1000).collect::<Vec<_>>());
    // Both stopped: a restart of either finds the seat free.
    queue.enqueue(Quick(1000)).unwrap();
    let thread_run = {
        let queue = queue.clone();
        tokio::task::spawn_blocking(move || {
            queue.processor().start().unwrap();
            let idle = queue.wait_idle(LIMIT);
            queue.processor().stop().unwrap();
            idle
        })
    };
    assert!(thread_run.await.unwrap());
    assert_eq!(queue.stats().processed, 1001);
}

#[test]
fn a_processor_task_dropped_by_its_executor_frees_the_seat_and_loses_no_command() {
    // The spawner spawns on whichever runtime is current in `runtime`.
    let runtime = Arc::new(Mutex::new(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    )));
    let (gate, entered) = (TVar::new(false), TVar::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let queue = CommandQueue::builder()
        .handler_async({
            let (gate, entered, calls) = (gate.clone(), entered.clone(), calls.clone());
            move |_: Slow| {
                let (gate, entered, calls) = (gate.clone(), entered.clone(), calls.clone());
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    atomically(|tx| tx.write(&entered, true));
                    until(&gate).await;
                    Ok(())
                }
            }
        })
        .spawner({
            let runtime = runtime.clone();
            move |task| {
                let runtime = runtime.lock().unwrap();
                runtime.as_ref().expect("a runtime to spawn on").spawn(task);
            }
        })
        .build();
    queue.enqueue(Slow(1)).unwrap();
    block_on(queue.async_processor().start()).unwrap();
    block_on(until(&entered));
    // The executor goes away while the handler awaits: the task is dropped with it.
    let old = runtime.lock().unwrap().take().unwrap();
    drop(old);
    // The stop sees the task ended (no hang), and nothing of the attempt was recorded.
    block_on(queue.async_processor().stop()).unwrap();
    assert_eq!(queue.len(), 1, "the command stays at the head of the queue");
    assert_eq!(queue.stats().processed + queue.stats().retried, 0);
    // A new processor on a new executor takes the seat and handles the command (again: an
    // async handler's effects are at least once, its outcome exactly once).
    *runtime.lock().unwrap() = Some(tokio::runtime::Runtime::new().unwrap());
    atomically(|tx| tx.write(&gate, true));
    block_on(queue.async_processor().start()).unwrap();
    assert!(queue.wait_idle(LIMIT));
    block_on(queue.async_processor().stop()).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(queue.stats().processed, 1);
    assert_eq!(queue.outcomes()[0].attempt, 1);
    let last = runtime.lock().unwrap().take();
    drop(last);
}

#[test]
fn dropping_the_last_handle_of_a_queue_ends_its_processor_task() {
    let (ended, task_ended) = std::sync::mpsc::channel();
    let queue = CommandQueue::builder()
        .handler(|_, _: &Quick| Ok(()))
        .spawner(move |task| {
            let ended = ended.clone();
            std::thread::spawn(move || {
                block_on(task);
                let _ = ended.send(());
            });
        })
        .build();
    block_on(queue.async_processor().start()).unwrap();
    drop(queue);
    task_ended
        .recv_timeout(LIMIT)
        .expect("the processor task ended with the queue");
}

#[test]
fn on_a_plain_executor_the_futures_are_send_and_the_queue_works() {
    fn assert_send<T: Send>(_: &T) {}
    let queue = on_threads(CommandQueue::builder())
        .handler_async(|_: Slow| async { Ok(()) })
        .build();
    assert_send(&queue.enqueue_async(Slow(0)));
    assert_send(&queue.wait_idle_async(Duration::ZERO));
    assert_send(&queue.async_processor().start());
    assert_send(&queue.async_processor().stop());
    block_on(async {
        queue.async_processor().start().await.unwrap();
        for id in 0..10 {
            queue.enqueue_async(Slow(id)).await.unwrap();
        }
        assert!(queue.wait_idle_async(LIMIT).await);
        queue.async_processor().stop().await.unwrap();
    });
    assert_eq!(queue.stats().processed, 10);
    assert_eq!(queue.async_processor().state(), State::Stopped);
}
