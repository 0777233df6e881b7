//! `TMVar` and `TSemaphore`: behaviour against simple models (proptest), blocking take/put and
//! acquire, an ordered handoff between threads, and a semaphore that never admits more holders
//! than it has permits.

mod common;

use common::{finish, spawn_reporting, still_blocked, wait_for_runs, QUIET};
use mvstm::collections::{TMVar, TSemaphore};
use mvstm::{atomically, TVar};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

#[derive(Debug, Clone)]
enum MVarOp {
    TryTake,
    TryPut(u8),
    IsEmpty,
}

#[derive(Debug, Clone)]
enum SemOp {
    TryAcquire(u64),
    Release(u64),
    Available,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tmvar_matches_an_option(ops in prop::collection::vec(prop_oneof![
        Just(MVarOp::TryTake),
        any::<u8>().prop_map(MVarOp::TryPut),
        Just(MVarOp::IsEmpty),
    ], 1..40)) {
        let slot = TMVar::new_empty();
        let mut model: Option<u8> = None;
        for op in &ops {
            match op {
                MVarOp::TryTake => prop_assert_eq!(atomically(|tx| slot.try_take(tx)), model.take()),
                MVarOp::TryPut(v) => {
                    let want = if model.is_none() { model = Some(*v); Ok(()) } else { Err(*v) };
                    prop_assert_eq!(atomically(|tx| slot.try_put(tx, *v)), want);
                }
                MVarOp::IsEmpty => prop_assert_eq!(atomically(|tx| slot.is_empty(tx)), model.is_none()),
            }
        }
    }

    #[test]
    fn tsemaphore_matches_a_counter(start in 0u64..5, ops in prop::collection::vec(prop_oneof![
        (0u64..4).prop_map(SemOp::TryAcquire),
        (0u64..4).prop_map(SemOp::Release),
        Just(SemOp::Available),
    ], 1..40)) {
        let sem = TSemaphore::new(start);
        let mut model = start;
        for op in &ops {
            match op {
                SemOp::TryAcquire(n) => {
                    let ok = model >= *n;
                    if ok { model -= n; }
                    prop_assert_eq!(atomically(|tx| sem.try_acquire(tx, *n)), ok);
                }
                SemOp::Release(n) => {
                    model += n;
                    atomically(|tx| sem.release(tx, *n));
                }
                SemOp::Available => prop_assert_eq!(atomically(|tx| sem.available(tx)), model),
            }
        }
    }
}

#[test]
fn take_blocks_until_put_and_put_blocks_until_take() {
    let slot = TMVar::new_empty();
    let runs = Arc::new(AtomicUsize::new(0));
    let taker = {
        let (slot, runs) = (slot.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                slot.take(tx)
            })
        })
    };
    wait_for_runs(&runs, 1);
    thread::sleep(QUIET);
    still_blocked(&taker, "take from an empty TMVar");
    atomically(|tx| slot.put(tx, 7u32));
    assert_eq!(finish(&taker, "take after put"), 7);

    atomically(|tx| slot.put(tx, 1));
    let putter = {
        let slot = slot.clone();
        spawn_reporting(move || atomically(|tx| slot.put(tx, 2)))
    };
    thread::sleep(QUIET);
    still_blocked(&putter, "put into a full TMVar");
    assert_eq!(atomically(|tx| slot.take(tx)), 1);
    finish(&putter, "put after take");
    assert_eq!(atomically(|tx| slot.read(tx)), 2);
    assert_eq!(atomically(|tx| slot.swap(tx, 3)), 2);
    assert_eq!(atomically(|tx| slot.take(tx)), 3);
}

#[test]
fn a_tmvar_hands_items_over_in_order() {
    const N: u32 = 5_000;
    let slot = TMVar::new_empty();
    let producer = {
        let slot = slot.clone();
        thread::spawn(move || (0..N).for_each(|i| atomically(|tx| slot.put(tx, i))))
    };
    let received: Vec<u32> = (0..N).map(|_| atomically(|tx| slot.take(tx))).collect();
    producer.join().unwrap();
    assert_eq!(received, (0..N).collect::<Vec<_>>());
}

#[test]
fn a_semaphore_never_admits_more_holders_than_permits() {
    const PERMITS: u64 = 3;
    let sem = TSemaphore::new(PERMITS);
    let held = TVar::new(0u64);
    let peak = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (sem, held, peak) = (sem.clone(), held.clone(), peak.clone());
            thread::spawn(move || {
                for i in 0..2_000u64 {
                    let n = 1 + (w + i) % 2;
                    // Acquire and record the holding in one step; release likewise.
                    let now = atomically(|tx| {
                        sem.acquire(tx, n)?;
                        tx.modify(&held, |h| h + n)?;
                        tx.read(&held)
                    });
                    peak.fetch_max(now as usize, Ordering::Relaxed);
                    assert!(now <= PERMITS, "{now} permits held of {PERMITS}");
                    atomically(|tx| {
                        tx.modify(&held, |h| h - n)?;
                        sem.release(tx, n)
                    });
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(atomically(|tx| sem.available(tx)), PERMITS);
    assert_eq!(held.load(), 0);
    println!(
        "peak holders: {} of {PERMITS} permits",
        peak.load(Ordering::Relaxed)
    );
}

#[test]
fn acquire_blocks_until_enough_permits_are_released() {
    let sem = TSemaphore::new(1);
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (sem, runs) = (sem.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                sem.acquire(tx, 3)
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| sem.release(tx, 1));
    thread::sleep(QUIET);
    still_blocked(&rx, "acquire of 3 with 2 available");
    atomically(|tx| sem.release(tx, 1));
    finish(&rx, "acquire of 3 with 3 available");
    assert_eq!(atomically(|tx| sem.available(tx)), 0);
}
