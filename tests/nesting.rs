//! Composition: `atomically` inside a body panics clearly, helpers compose by taking `&mut Txn`,
//! and `Txn::attempt` counts the re-runs of one `atomically` call.

mod common;

use common::panic_message;
use mvstm::{atomically, retry, try_atomically, StmResult, TVar, Txn};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

#[test]
fn atomically_inside_a_body_panics_clearly() {
    let (outer, inner) = (TVar::new(0u32), TVar::new(0u32));
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.write(&outer, 1)?;
            atomically(|tx| tx.write(&inner, 1));
            Ok(())
        })
    }));
    let p = r.expect_err("nested atomically must panic");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("inside a transaction"),
        "unclear message: {msg}"
    );
    assert_eq!(
        (outer.load(), inner.load()),
        (0, 0),
        "nothing may be published"
    );

    // The thread is not left marked as inside a transaction.
    atomically(|tx| tx.write(&outer, 2));
    assert_eq!(outer.load(), 2);
}

#[test]
fn try_atomically_inside_a_body_panics_clearly() {
    let v = TVar::new(0u32);
    let r = catch_unwind(AssertUnwindSafe(|| {
        try_atomically::<(), String>(|tx| {
            tx.write(&v, 1)?;
            let _ = try_atomically::<(), String>(|tx| tx.write(&v, 2));
            Ok(())
        })
    }));
    let p = r.expect_err("nested try_atomically must panic");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("inside a transaction"),
        "unclear message: {msg}"
    );
    assert_eq!(v.load(), 0);
    assert_eq!(try_atomically::<u32, String>(|tx| tx.read(&v)), Ok(0));
}

#[test]
fn atomically_inside_a_body_panics_even_if_the_panic_is_caught_inside() {
    // A body that catches the nested panic itself must still not have run a nested transaction.
    let (outer, inner) = (TVar::new(0u32), TVar::new(0u32));
    let caught = atomically(|tx| {
        tx.write(&outer, 1)?;
        let inner = inner.clone();
        let r = catch_unwind(AssertUnwindSafe(move || {
            atomically(|tx| tx.write(&inner, 1))
        }));
        Ok(r.map_err(|p| panic_message(&*p)))
    });
    let msg = caught.expect_err("the nested call must panic");
    assert!(msg.contains("inside a transaction"), "{msg}");
    assert_eq!((outer.load(), inner.load()), (1, 0));
}

fn transfer(tx: &mut Txn, from: &TVar<i64>, to: &TVar<i64>, n: i64) -> StmResult<()> {
    let f = tx.read(from)?;
    if f < n {
        return retry();
    }
    tx.write(from, f - n)?;
    tx.modify(to, |t| t + n)
}

fn total(tx: &mut Txn, accounts: &[TVar<i64>]) -> StmResult<i64> {
    let mut sum = 0;
    for a in accounts {
        sum += tx.read(a)?;
    }
    Ok(sum)
}

#[test]
fn helpers_compose_by_taking_the_transaction() {
    let accounts: Vec<TVar<i64>> = (0..3).map(|_| TVar::new(100)).collect();
    let sum = atomically(|tx| {
        transfer(tx, &accounts[0], &accounts[1], 30)?;
        transfer(tx, &accounts[1], &accounts[2], 120)?;
        total(tx, &accounts)
    });
    assert_eq!(sum, 300);
    let values: Vec<i64> = accounts.iter().map(TVar::load).collect();
    assert_eq!(values, [70, 10, 220]);

    // A composed transaction is all-or-nothing: the second step's retry falls through to the
    // alternative, undoing the first step too.
    let moved = atomically(|tx| {
        tx.or_else(
            |tx| {
                transfer(tx, &accounts[0], &accounts[1], 50)?;
                transfer(tx, &accounts[1], &accounts[2], 1_000)?;
                Ok(true)
            },
            |_tx| Ok(false),
        )
    });
    assert!(!moved);
    let values: Vec<i64> = accounts.iter().map(TVar::load).collect();
    assert_eq!(values, [70, 10, 220]);
}

#[test]
fn composed_transfers_preserve_the_total_under_concurrency() {
    let accounts: Arc<Vec<TVar<i64>>> = Arc::new((0..4).map(|_| TVar::new(1_000)).collect());
    let (done_tx, done_rx) = mpsc::channel();
    for t in 0..2usize {
        let (accounts, done_tx) = (accounts.clone(), done_tx.clone());
        thread::spawn(move || {
            for i in 0..1_000usize {
                let (from, to) = ((i + t) % 4, (i + t + 1) % 4);
                atomically(|tx| {
                    tx.or_else(
                        |tx| transfer(tx, &accounts[from], &accounts[to], 7),
                        |_tx| Ok(()),
                    )
                });
                let sum = atomically(|tx| total(tx, &accounts));
                assert_eq!(sum, 4_000, "a snapshot saw a half-done transfer");
            }
            let _ = done_tx.send(());
        });
    }
    drop(done_tx);
    for _ in 0..2 {
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a worker failed or hung");
    }
    assert_eq!(accounts.iter().map(TVar::load).sum::<i64>(), 4_000);
}

#[test]
fn attempt_starts_at_one_for_every_call() {
    let v = TVar::new(0u32);
    for _ in 0..3 {
        assert_eq!(atomically(|tx| Ok(tx.attempt())), 1);
        assert_eq!(
            atomically(|tx| {
                tx.modify(&v, |x| x + 1)?;
                Ok(tx.attempt())
            }),
            1
        );
        assert_eq!(try_atomically::<u32, ()>(|tx| Ok(tx.attempt())), Ok(1));
    }
}

#[test]
fn attempt_counts_reruns_after_retry() {
    let level = TVar::new(0u32);
    let seen_attempt = Arc::new(AtomicU32::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    {
        let (level, seen_attempt) = (level.clone(), seen_attempt.clone());
        thread::spawn(move || {
            let (final_attempt, attempts) = {
                let mut attempts = Vec::new();
                let a = atomically(|tx| {
                    attempts.push(tx.attempt());
                    seen_attempt.store(tx.attempt(), Ordering::SeqCst);
                    if tx.read(&level)? < 3 {
                        return retry();
                    }
                    Ok(tx.attempt())
                });
                (a, attempts)
            };
            let _ = done_tx.send((final_attempt, attempts));
        });
    }
    for n in 1..=3u32 {
        // Wait (bounded) for attempt `n` to block, then wake it.
        let mut spins = 0;
        while seen_attempt.load(Ordering::SeqCst) < n {
            spins += 1;
            assert!(spins < 10_000, "attempt {n} never ran");
            thread::sleep(Duration::from_millis(1));
        }
        atomically(|tx| tx.write(&level, n));
    }
    let (final_attempt, attempts) = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the waiter finished");
    assert_eq!(final_attempt, 4);
    assert_eq!(attempts, [1, 2, 3, 4]);
}

#[test]
fn attempt_counts_reruns_after_a_conflict() {
    let (read, written) = (TVar::new(0u32), TVar::new(0u32));
    let mut attempts = Vec::new();
    let last = atomically(|tx| {
        attempts.push(tx.attempt());
        let x = tx.read(&read)?;
        if tx.attempt() == 1 {
            let r = read.clone();
            thread::spawn(move || atomically(|tx| tx.write(&r, 5)))
                .join()
                .unwrap();
        }
        tx.write(&written, x)?;
        Ok(tx.attempt())
    });
    assert!(last >= 2, "the conflicting attempt committed");
    assert_eq!(attempts, (1..=last).collect::<Vec<u32>>());
    assert_eq!(written.load(), 5);
}

#[test]
fn attempt_is_unchanged_by_or_else() {
    let v = TVar::new(0u32);
    let (a1, a2, a3) = atomically(|tx| {
        let before = tx.attempt();
        let in_second = tx.or_else(
            |tx| -> StmResult<u32> {
                tx.read(&v)?;
                retry()
            },
            |tx| Ok(tx.attempt()),
        )?;
        Ok((before, in_second, tx.attempt()))
    });
    assert_eq!((a1, a2, a3), (1, 1, 1));
}
