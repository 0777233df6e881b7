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
