//! Reclamation: old versions are freed while threads overwrite a TVar (concurrently, from many
//! short-lived threads, and with transactions nested in hooks), and each value is dropped
//! exactly once. In its own test binary (process), and its tests run one at a time, so that no
//! other test's threads hold the global epoch back while one measures.

mod common;

use common::{drive_reclamation, DropCounter};
use mvstm::{atomically, TVar};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::thread;

#[test]
fn old_versions_are_reclaimed_and_values_dropped_exactly_once() {
    let _serial = common::one_at_a_time();
    const WRITES: u64 = 200_000;
    let drops = DropCounter::new();
    let var = TVar::new(drops.value(0));
    let max_live = Arc::new(AtomicIsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (var, drops, max_live) = (var.clone(), drops.clone(), max_live.clone());
            thread::spawn(move || {
                for i in 0..WRITES {
                    atomically(|tx| tx.write(&var, drops.value(t * WRITES + i)));
                    max_live.fetch_max(drops.live(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let max = max_live.load(Ordering::Relaxed);
    println!(
        "at most {max} values alive during {} overwrites",
        2 * WRITES
    );
    // Bounded by what the epochs hold back, not by the number of writes. A writer preempted
    // while pinned holds the epoch back for a scheduler time slice (some tens of thousands of
    // writes here), so the bound is a quarter of all writes; a broken reclamation keeps nearly
    // every value.
    assert!(
        max < WRITES as isize / 2,
        "{max} values alive: old versions are not reclaimed"
    );
    // Once the writers stop, more commits cut the chain down to what the design keeps: the
    // versions newer than the horizon (which trails by a few hundred commits of this thread)
    // plus at most one trim period (64 writes).
    let mut id = 2 * WRITES;
    let trimmed = drive_reclamation(|| {
        id += 1;
        atomically(|tx| tx.write(&var, drops.value(id)));
        drops.live() <= 512
    });
    assert!(trimmed, "{} values alive on a quiet chain", drops.live());
    drop(var);
    drops.assert_all_dropped("after the last handle was dropped");
}

/// Keep writing `var` (a chain is trimmed when its TVar is written) until its values are few:
/// the versions newer than the reclamation horizon plus one trim period.
fn settles(var: &TVar<common::Counted>, drops: &DropCounter) -> bool {
    let mut id = 1 << 40;
    drive_reclamation(|| {
        id += 1;
        atomically(|tx| tx.write(var, drops.value(id)));
        drops.live() <= 1_024
    })
}

#[test]
fn versions_are_reclaimed_when_every_thread_commits_only_a_little() {
    let _serial = common::one_at_a_time();
    // Threads that live for 200 commits each: the horizon must still advance (it moves with the
    // global stamp, not with a per-thread count).
    let drops = DropCounter::new();
    let var = TVar::new(drops.value(0));
    for t in 0..500u64 {
        let (var, drops) = (var.clone(), drops.clone());
        thread::spawn(move || {
            for i in 0..200 {
                atomically(|tx| tx.write(&var, drops.value(t * 1_000 + i)));
            }
        })
        .join()
        .unwrap();
    }
    assert!(
        settles(&var, &drops),
        "{} of 100,000 versions alive after short-lived writers",
        drops.live()
    );
    drop(var);
    drops.assert_all_dropped("after the last handle was dropped");
}

#[test]
fn versions_are_reclaimed_when_hooks_start_transactions() {
    let _serial = common::one_at_a_time();
    // A transaction started by an `after_commit` hook must not reset the reclamation machinery
    // of the thread (it used to swap the thread's cached transaction object on every call).
    let drops = DropCounter::new();
    let var = TVar::new(drops.value(0));
    let log = TVar::new(0u64);
    for i in 1..=100_000u64 {
        atomically(|tx| {
            tx.write(&var, drops.value(i))?;
            let log = log.clone();
            tx.after_commit(move || atomically(|tx| tx.modify(&log, |n| n + 1)));
            Ok(())
        });
    }
    assert_eq!(log.load(), 100_000);
    assert!(
        settles(&var, &drops),
        "{} of 100,000 versions alive with nested hook transactions",
        drops.live()
    );
    drop(var);
    drops.assert_all_dropped("after the last handle was dropped");
}

#[test]
fn chains_stay_bounded_while_a_long_reader_holds_an_old_snapshot() {
    let _serial = common::one_at_a_time();
    const WRITES: u64 = 200_000;
    const COLD: usize = 2_000;
    let drops = DropCounter::new();
    let hot = TVar::new(drops.value(0));
    let cold: Vec<TVar<u64>> = (0..COLD as u64).map(TVar::new).collect();
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (hot, drops, written) = (hot.clone(), drops.clone(), written.clone());
        thread::spawn(move || {
            for i in 1..=WRITES {
                atomically(|tx| tx.write(&hot, drops.value(i)));
                written.store(i, Ordering::SeqCst);
            }
        })
    };
    // One read-only transaction that keeps reading (as a long report does) while the writer
    // overwrites `hot` a hundred thousand times.
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let (mut max_live, mut passes) = (0, 0);
    let (first, last) = atomically(|tx| {
        runs.fetch_add(1, Ordering::SeqCst);
        let first = tx.read(&hot)?.id;
        while written.load(Ordering::SeqCst) < WRITES {
            let mut sum = 0;
            for v in &cold {
                sum += tx.read(v)?;
            }
            assert_eq!(sum, (COLD * (COLD - 1) / 2) as u64);
            max_live = max_live.max(drops.live());
            passes += 1;
        }
        Ok((first, tx.read(&hot)?.id))
    });
    writer.join().unwrap();
    println!(
        "a reader of {passes} x {COLD} reads held its snapshot through {WRITES} overwrites: at \
         most {max_live} values alive"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a read-only transaction never re-runs"
    );
    assert_eq!(first, last, "the reader's snapshot of `hot` held");
    // Without re-pinning, the reader's pin holds back every overwritten value (all WRITES).
    // With it, what stays alive is what the epochs hold back: on a loaded machine a thread
    // preempted while pinned stalls them for a time slice (tens of thousands of writes here),
    // so the bound is half the writes, as in the test above.
    assert!(
        max_live < WRITES as isize / 2,
        "{max_live} values alive while the reader ran: its pin holds reclamation back"
    );
    let shrunk = drive_reclamation(|| {
        atomically(|tx| tx.modify(&hot, |c| drops.value(c.id + 1)));
        drops.live() <= 512
    });
    assert!(
        shrunk,
        "{} values alive after the reader ended",
        drops.live()
    );
    drop(hot);
    drops.assert_all_dropped("after the last handle was dropped");
}
