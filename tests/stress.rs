//! Real-thread stress tests of the engine: invariants that any interleaving must keep.
//!
//! Thread counts and iteration counts are small enough for a 2-core CI machine; every test is
//! bounded and asserts behaviour, never timing.

mod common;

use common::Rng;
use mvstm::{atomically, TVar};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

#[test]
fn money_is_conserved_and_every_attempt_sees_a_consistent_total() {
    const ACCOUNTS: usize = 16;
    const START: i64 = 1_000;
    const TRANSFERS: usize = 20_000;
    let accounts: Arc<Vec<TVar<i64>>> = Arc::new((0..ACCOUNTS).map(|_| TVar::new(START)).collect());
    let done = Arc::new(AtomicBool::new(false));

    let observer = {
        let (accounts, done) = (accounts.clone(), done.clone());
        thread::spawn(move || {
            let mut checks = 0u64;
            while !done.load(Ordering::Relaxed) {
                atomically(|tx| {
                    let mut total = 0;
                    for a in accounts.iter() {
                        total += tx.read(a)?;
                    }
                    // Inside the attempt: opacity means even a doomed attempt sees this.
                    assert_eq!(
                        total,
                        START * ACCOUNTS as i64,
                        "an attempt saw a torn state"
                    );
                    Ok(())
                });
                checks += 1;
            }
            checks
        })
    };

    let workers: Vec<_> = (0..4)
        .map(|seed| {
            let accounts = accounts.clone();
            thread::spawn(move || {
                let mut rng = Rng(seed * 7919 + 1);
                for _ in 0..TRANSFERS {
                    let (from, to) = (rng.below(ACCOUNTS), rng.below(ACCOUNTS));
                    let amount = rng.below(100) as i64;
                    atomically(|tx| {
                        let f = tx.read(&accounts[from])?;
                        let t = tx.read(&accounts[to])?;
                        // Inside the attempt as well: the pair is from one snapshot.
                        if from != to {
                            tx.write(&accounts[from], f - amount)?;
                            tx.write(&accounts[to], t + amount)?;
                        }
                        Ok(())
                    });
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let checks = observer.join().unwrap();
    let total: i64 = accounts.iter().map(TVar::load).sum();
    assert_eq!(total, START * ACCOUNTS as i64);
    println!("observer checked the total in {checks} read-only transactions");
}

#[test]
fn no_write_skew_both_values_never_odd() {
    // A flips x's parity only while y is even, B flips y's only while x is even. Under snapshot
    // isolation both can see (even, even) and flip: both odd. Serializable: never.
    const FLIPS: u64 = 5_000;
    const MAX_ROUNDS: u64 = 5_000_000;
    let x = TVar::new(0u64);
    let y = TVar::new(0u64);
    let violations = Arc::new(AtomicUsize::new(0));
    // Each side runs until it flipped FLIPS times, so the two really interleave even when the
    // scheduler runs one of them alone for a while.
    let flipper = |mine: TVar<u64>, other: TVar<u64>, violations: Arc<AtomicUsize>| {
        thread::spawn(move || {
            let mut rounds = 0;
            while mine.load() < FLIPS && rounds < MAX_ROUNDS {
                rounds += 1;
                atomically(|tx| {
                    let m = tx.read(&mine)?;
                    let o = tx.read(&other)?;
                    if m % 2 == 1 && o % 2 == 1 {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                    if o % 2 == 0 && m < FLIPS {
                        tx.write(&mine, m + 1)?;
                    }
                    Ok(())
                });
            }
        })
    };
    let a = flipper(x.clone(), y.clone(), violations.clone());
    let b = flipper(y.clone(), x.clone(), violations.clone());
    let mut observed = 0;
    while !(a.is_finished() && b.is_finished()) {
        let (vx, vy) = atomically(|tx| Ok((tx.read(&x)?, tx.read(&y)?)));
        assert!(
            !(vx % 2 == 1 && vy % 2 == 1),
            "write skew: both odd ({vx}, {vy})"
        );
        observed += 1;
    }
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "an attempt saw both values odd"
    );
    assert_eq!(
        (x.load(), y.load()),
        (FLIPS, FLIPS),
        "both sides flipped to the end"
    );
    println!("observer looked {observed} times");
}

#[test]
fn read_only_transaction_over_1000_tvars_runs_exactly_once_while_writers_commit() {
    const VARS: usize = 1_000;
    let vars: Arc<Vec<TVar<i64>>> = Arc::new((0..VARS).map(|_| TVar::new(10)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (vars, done, commits) = (vars.clone(), done.clone(), commits.clone());
        thread::spawn(move || {
            let mut rng = Rng(42);
            while !done.load(Ordering::Relaxed) {
                let (i, j) = (rng.below(VARS), rng.below(VARS));
                atomically(|tx| {
                    tx.modify(&vars[i], |v| v - 1)?;
                    tx.modify(&vars[j], |v| v + 1)
                });
                commits.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Keep reading until many readers overlapped commits (bounded, in case the writer starves).
    let mut overlapped = 0;
    for _ in 0..100_000 {
        if overlapped >= 50 {
            break;
        }
        let before = commits.load(Ordering::Relaxed);
        let mut runs = 0;
        let total = atomically(|tx| {
            runs += 1;
            let mut sum = 0;
            for v in vars.iter() {
                sum += tx.read(v)?;
                // Give the writer room to commit in the middle of the scan.
                std::hint::spin_loop();
            }
            Ok(sum)
        });
        assert_eq!(total, 10 * VARS as i64);
        assert_eq!(runs, 1, "a read-only transaction was re-run");
        if commits.load(Ordering::Relaxed) > before + 1 {
            overlapped += 1;
        }
    }
    assert!(
        overlapped >= 50,
        "only {overlapped} readers ran while the writer committed"
    );
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    println!(
        "{overlapped} readers overlapped commits; writer committed {}",
        commits.load(Ordering::Relaxed)
    );
}

#[test]
fn counter_has_no_lost_updates() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 25_000;
    let counter = TVar::new(0u64);
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let c = counter.clone();
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    atomically(|tx| tx.modify(&c, |n| n + 1));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(counter.load(), THREADS * PER_THREAD);
}

/// Long readers re-pin as they read (`reclaim.rs`, "Long readers"), and trimming then unlinks
/// versions between the announced snapshots: every such reader must still see one consistent
/// snapshot of the hot accounts, however far the writers move on.
#[test]
fn long_readers_that_repin_keep_consistent_snapshots_while_chains_are_trimmed() {
    const HOT: usize = 8;
    const COLD: usize = 3_000;
    const START: i64 = 1_000;
    let hot: Arc<Vec<TVar<i64>>> = Arc::new((0..HOT).map(|_| TVar::new(START)).collect());
    let cold: Arc<Vec<TVar<u64>>> = Arc::new((0..COLD as u64).map(TVar::new).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let (hot, stop, commits) = (hot.clone(), stop.clone(), commits.clone());
            thread::spawn(move || {
                let mut rng = Rng(t + 11);
                while !stop.load(Ordering::Relaxed) {
                    let (from, to) = (rng.below(HOT), rng.below(HOT));
                    atomically(|tx| {
                        tx.modify(&hot[from], |b| b - 1)?;
                        tx.modify(&hot[to], |b| b + 1)
                    });
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (hot, cold, commits) = (hot.clone(), cold.clone(), commits.clone());
            thread::spawn(move || {
                for _ in 0..10 {
                    let runs = AtomicUsize::new(0);
                    atomically(|tx| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        let start = commits.load(Ordering::Relaxed);
                        let first: Vec<i64> =
                            hot.iter().map(|v| tx.read(v)).collect::<Result<_, _>>()?;
                        assert_eq!(first.iter().sum::<i64>(), START * HOT as i64);
                        // Re-pin many times while the writers move far past the snapshot,
                        // re-reading the hot accounts in between.
                        let mut round = 0;
                        while round < 4 || commits.load(Ordering::Relaxed) < start + 20_000 {
                            round += 1;
                            for v in cold.iter() {
                                tx.read(v)?;
                            }
                            for (i, v) in hot.iter().enumerate() {
                                assert_eq!(
                                    tx.read(v)?,
                                    first[i],
                                    "round {round}: the snapshot moved"
                                );
                            }
                            assert!(round < 100_000, "the writers stalled");
                        }
                        Ok(())
                    });
                    assert_eq!(runs.load(Ordering::Relaxed), 1);
                }
            })
        })
        .collect();
    for r in readers {
        r.join()
            .expect("a long reader saw an inconsistent snapshot");
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let total: i64 = hot.iter().map(TVar::load).sum();
    assert_eq!(total, START * HOT as i64);
}

/// A re-pinned read-only attempt that then writes or retries is re-run with one pin: the write
/// commits and the retry blocks and wakes like any other.
#[test]
fn a_long_reader_that_then_writes_or_retries_behaves_like_any_transaction() {
    let many: Vec<TVar<u64>> = (0..5_000).map(TVar::new).collect();
    let flag = TVar::new(false);
    let runs = AtomicUsize::new(0);
    atomically(|tx| {
        runs.fetch_add(1, Ordering::Relaxed);
        for v in &many {
            tx.read(v)?;
        }
        tx.write(&flag, true)
    });
    assert!(flag.load());
    assert_eq!(
        runs.load(Ordering::Relaxed),
        2,
        "the re-pinned attempt re-runs once to write"
    );

    let ready = TVar::new(false);
    let waiter = {
        let (many, ready) = (Arc::new(many), ready.clone());
        common::spawn_reporting(move || {
            atomically(|tx| {
                let mut sum = 0;
                for v in many.iter() {
                    sum += tx.read(v)?;
                }
                if !tx.read(&ready)? {
                    return mvstm::retry();
                }
                Ok(sum)
            })
        })
    };
    thread::sleep(common::QUIET);
    common::still_blocked(&waiter, "a long reader waiting on `ready`");
    atomically(|tx| tx.write(&ready, true));
    assert_eq!(
        common::finish(&waiter, "the long reader"),
        4_999 * 5_000 / 2
    );
}
