//! `CommandQueue`: nothing lost when full, retries with attempt counts, dead letters, serial
//! handlers, exactly-once effects, and the processor's lifecycle.

mod common;

use common::LIMIT;
use mvstm::lifecycle::{CommandQueue, EnqueueError, HandlerError, OutcomeKind, State};
use mvstm::{atomically, TVar};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

#[derive(Debug, PartialEq)]
struct Add(u64);

struct Flaky {
    id: u32,
    /// How many attempts fail before one succeeds.
    failures: usize,
}

#[test]
fn a_full_queue_gives_the_command_back() {
    let queue = CommandQueue::builder()
        .capacity(2)
        .handler(|_, _: &Add| Ok(()))
        .build();
    queue.enqueue(Add(1)).unwrap();
    queue.enqueue(Add(2)).unwrap();
    match queue.enqueue(Add(3)) {
        Err(EnqueueError::Full(cmd)) => assert_eq!(cmd, Add(3)),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(queue.len(), 2);
    // A type without a handler is refused with the command too.
    let refused = queue.enqueue("no handler for &str").unwrap_err();
    assert_eq!(refused.to_string(), "no handler is registered for `&str`");
    assert_eq!(refused.into_inner(), "no handler for &str");
}

#[test]
fn a_handler_failing_twice_then_succeeding_is_processed_once_with_two_retries() {
    let effects = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicUsize::new(0));
    let total = TVar::new(0u32);
    let queue = CommandQueue::builder()
        .max_attempts(3)
        .handler({
            let (effects, attempts, total) = (effects.clone(), attempts.clone(), total.clone());
            move |tx, cmd: &Flaky| {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                tx.modify(&total, |t| t + cmd.id)?;
                let effects = Arc::clone(&effects);
                tx.after_commit(move || {
                    effects.fetch_add(1, Ordering::SeqCst);
                });
                if n < cmd.failures {
                    return tx.abort(HandlerError::new(format!("try {}", n + 1)));
                }
                Ok(())
            }
        })
        .build();
    let id = queue.enqueue(Flaky { id: 7, failures: 2 }).unwrap();
    queue.processor().start().unwrap();
    assert!(queue.wait_idle(LIMIT));
    queue.processor().stop().unwrap();
    // State changed once, the side effect ran once: the failed attempts left no trace.
    assert_eq!((total.load(), effects.load(Ordering::SeqCst)), (7, 1));
    let kinds: Vec<_> = queue
        .outcomes()
        .into_iter()
        .map(|o| (o.id, o.attempt, o.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                id,
                1,
                OutcomeKind::Retried {
                    error: "try 1".into()
                }
            ),
            (
                id,
                2,
                OutcomeKind::Retried {
                    error: "try 2".into()
                }
            ),
            (id, 3, OutcomeKind::Processed),
        ]
    );
    let stats = queue.stats();
    assert_eq!(
        (stats.processed, stats.retried, stats.dead_lettered),
        (1, 2, 0)
    );
    assert!(queue.dead_letters().is_empty());
}

#[test]
fn an_always_failing_command_is_dead_lettered_after_the_maximum() {
    let queue = CommandQueue::builder()
        .max_attempts(4)
        .handler(|tx, _: &Add| tx.abort(HandlerError::new("always")))
        .handler(|_, _: &Flaky| panic!("handler bug"))
        .build();
    let add = queue.enqueue(Add(9)).unwrap();
    let flaky = queue.enqueue(Flaky { id: 1, failures: 0 }).unwrap();
    queue.processor().start().unwrap();
    assert!(queue.wait_idle(LIMIT));
    let dead = queue.dead_letters();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        (dead[0].id, dead[0].attempts, &*dead[0].error),
        (add, 4, "always")
    );
    assert_eq!(dead[1].id, flaky);
    assert_eq!(&*dead[1].error, "the handler panicked: handler bug");
    let stats = queue.stats();
    assert_eq!(
        (stats.processed, stats.retried, stats.dead_lettered),
        (0, 6, 2)
    );
    // The processor survived the panics.
    assert_eq!(queue.processor().state(), State::Running);
    queue.processor().stop().unwrap();
    // Dead letters give their commands back.
    let mut taken = queue.take_dead_letters();
    assert!(queue.dead_letters().is_empty());
    let (letter, command) = taken.remove(0);
    assert_eq!(letter.id, add);
    assert_eq!(*command.downcast::<Add>().unwrap(), Add(9));
}

#[test]
fn handlers_never_run_concurrently_and_every_command_is_handled_once() {
    const PRODUCERS: u64 = 4;
    const EACH: u64 = 2_000;
    let in_handler = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let seen = TVar::new(Arc::new(Vec::<u64>::new()));
    let sum = TVar::new(0u64);
    let queue = CommandQueue::builder()
        .capacity(64)
        .handler({
            let (in_handler, overlaps, sum, seen) = (
                in_handler.clone(),
                overlaps.clone(),
                sum.clone(),
                seen.clone(),
            );
            move |tx, cmd: &Add| {
                if in_handler.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let result = tx.modify(&sum, |s| s + cmd.0).and_then(|()| {
                    let mut all = Vec::clone(&*tx.read(&seen)?);
                    all.push(cmd.0);
                    tx.write(&seen, Arc::new(all))
                });
                in_handler.fetch_sub(1, Ordering::SeqCst);
                result
            }
        })
        .build();
    // Start and stop the processor while producers push: paused commands wait, none is lost.
    queue.processor().start().unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            thread::spawn(move || {
                for i in 0..EACH {
                    let mut cmd = Add(p * EACH + i);
                    // Full: take the command back and offer it again.
                    while let Err(EnqueueError::Full(back)) = queue.enqueue(cmd) {
                        cmd = back;
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for round in 0..20 {
        thread::sleep(std::time::Duration::from_millis(2));
        let processor = queue.processor();
        if round % 2 == 0 {
            processor.stop().unwrap();
        } else {
            processor.start().unwrap();
        }
    }
    for producer in producers {
        producer.join().unwrap();
    }
    let _ = queue.processor().start();
    assert!(queue.wait_idle(LIMIT));
    queue.processor().stop().unwrap();
    let n = PRODUCERS * EACH;
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    let mut all = Vec::clone(&*seen.load());
    all.sort_unstable();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "each command handled exactly once"
    );
    assert_eq!(sum.load(), n * (n - 1) / 2);
    assert_eq!(queue.stats().processed, n);
}

#[test]
fn enqueue_in_commits_with_the_callers_transaction() {
    let queue = CommandQueue::builder().handler(|_, _: &Add| Ok(())).build();
    let go = TVar::new(false);
    // Aborted with the transaction: the command never appears.
    let r: Result<(), &str> = mvstm::try_atomically(|tx| {
        queue.enqueue_in(tx, Add(1))?.unwrap();
        tx.write(&go, true)?;
        tx.abort("changed my mind")
    });
    assert!(r.is_err());
    assert_eq!((queue.len(), go.load()), (0, false));
    atomically(|tx| {
        queue.enqueue_in(tx, Add(2))?.unwrap();
        tx.write(&go, true)
    });
    assert_eq!((queue.len(), go.load()), (1, true));
}

#[test]
fn the_processor_is_one_lifecycle() {
    let queue = CommandQueue::builder().handler(|_, _: &Add| Ok(())).build();
    queue.processor().start().unwrap();
    // A second processor cannot start: it is the same lifecycle.
    assert!(queue.processor().start().is_err());
    queue.clone().processor().stop().unwrap();
    assert_eq!(queue.processor().state(), State::Stopped);
}

#[test]
fn stopping_the_processor_wakes_a_handler_blocked_in_retry_and_keeps_the_command() {
    let gate = TVar::new(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let queue = CommandQueue::builder()
        .handler({
            let (gate, runs) = (gate.clone(), runs.clone());
            move |tx, _: &Add| {
                runs.fetch_add(1, Ordering::SeqCst);
                if !tx.read(&gate)? {
                    return mvstm::retry();
                }
                Ok(())
            }
        })
        .build();
    queue.enqueue(Add(1)).unwrap();
    queue.processor().start().unwrap();
    common::wait_for_runs(&runs, 1); // the handler ran and is waiting in `retry`
    let stopper = {
        let queue = queue.clone();
        common::spawn_reporting(move || queue.processor().stop())
    };
    common::finish(&stopper, "a stop while the handler waits").unwrap();
    assert_eq!((queue.len(), queue.stats().processed), (1, 0));
    atomically(|tx| tx.write(&gate, true));
    queue.processor().start().unwrap();
    assert!(queue.wait_idle(LIMIT));
    assert_eq!(queue.stats().processed, 1);
    queue.processor().stop().unwrap();
}

#[test]
fn a_panicking_after_commit_hook_neither_repeats_nor_loses_commands() {
    let handled = TVar::new(Vec::<u64>::new());
    let queue = CommandQueue::builder()
        .handler({
            let handled = handled.clone();
            move |tx, cmd: &Add| {
                let id = cmd.0;
                tx.modify(&handled, |mut h| {
                    h.push(id);
                    h
                })?;
                if id == 1 {
                    tx.after_commit(|| panic!("notification failed"));
                }
                Ok(())
            }
        })
        .build();
    for i in 1..=3 {
        queue.enqueue(Add(i)).unwrap();
    }
    queue.processor().start().unwrap();
    assert!(queue.wait_idle(LIMIT));
    // Stopping works: the processor is not stuck on a phantom pop.
    queue.processor().stop().unwrap();
    assert_eq!(
        handled.load(),
        [1, 2, 3],
        "each command handled once, none lost"
    );
    let stats = queue.stats();
    assert_eq!(
        (stats.processed, stats.retried, stats.dead_lettered),
        (3, 0, 0)
    );
}

#[test]
fn dropping_a_running_queue_ends_its_processor_thread() {
    let token = Arc::new(());
    let probe = Arc::downgrade(&token);
    {
        let queue = CommandQueue::builder()
            .handler(move |_, _: &Add| {
                let _keep = &token; // the handler (and so the processor) holds `token`
                Ok(())
            })
            .build();
        queue.processor().start().unwrap();
    }
    // The processor thread owned the handlers; once it ended, `token` is gone.
    let start = std::time::Instant::now();
    while probe.upgrade().is_some() {
        assert!(
            start.elapsed() < LIMIT,
            "the processor thread outlived its queue"
        );
        thread::sleep(std::time::Duration::from_millis(1));
    }
}
