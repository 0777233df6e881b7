//! `mvstm::stats()`: each kind of commit and abandoned attempt is counted exactly once, blocked
//! time adds up, the counts of threads that exited stay in the totals, and conflict tracking
//! names the TVar two transactions fought over, and only while it is on.
//!
//! The counters are process-wide, so every test here holds `one_at_a_time` and compares two
//! snapshots taken around its own work: no other transaction runs in this binary meanwhile.

mod common;

use common::{finish, one_at_a_time, spawn_reporting, wait_for_runs};
use mvstm::stats::{self, Snapshot};
use mvstm::{atomically, retry, try_atomically, TVar};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Run `f` and return what it added to the counters.
fn counted(f: impl FnOnce()) -> Snapshot {
    let before = mvstm::stats();
    f();
    mvstm::stats().since(&before)
}

/// Make the current attempt of a body conflict once: another thread changes `var` after the
/// body read it, so the commit's validation fails and the body runs again.
fn conflict_once(var: &TVar<u64>, out: &TVar<u64>) {
    atomically(|tx| {
        let seen = tx.read(var)?;
        if tx.attempt() == 1 {
            let other = var.clone();
            thread::spawn(move || atomically(|tx| tx.modify(&other, |x| x + 1)))
                .join()
                .unwrap();
        }
        tx.write(out, seen)
    });
}

#[test]
fn commits_are_counted_by_kind() {
    let _serial = one_at_a_time();
    let v = TVar::new(0u64);
    let done = counted(|| {
        for _ in 0..5 {
            atomically(|tx| tx.modify(&v, |x| x + 1));
        }
        for _ in 0..3 {
            atomically(|tx| tx.read(&v));
        }
        v.load(); // not a transaction
    });
    assert_eq!(
        done,
        Snapshot {
            commits: 5,
            read_only_commits: 3,
            ..Snapshot::default()
        }
    );
}

#[test]
fn abandoned_attempts_are_counted_by_cause() {
    let _serial = one_at_a_time();
    let (v, out) = (TVar::new(0u64), TVar::new(0u64));

    let conflict = counted(|| conflict_once(&v, &out));
    assert_eq!(conflict.conflicts, 1, "{conflict:?}");
    // The other thread's increment and the re-run both commit.
    assert_eq!(conflict.commits, 2, "{conflict:?}");

    let abort = counted(|| {
        let r = try_atomically::<(), &str>(|tx| {
            tx.write(&v, 9)?;
            tx.abort("no")
        });
        assert_eq!(r, Err("no"));
    });
    assert_eq!(
        abort,
        Snapshot {
            aborts: 1,
            ..Snapshot::default()
        }
    );

    let panic = counted(|| {
        let r = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| -> mvstm::StmResult<()> {
                tx.write(&v, 9)?;
                panic!("body panics")
            })
        }));
        assert!(r.is_err());
    });
    assert_eq!(
        panic,
        Snapshot {
            panics: 1,
            ..Snapshot::default()
        }
    );
    assert_eq!(v.load(), 1);
}

#[test]
fn a_blocking_retry_counts_a_retry_a_block_and_its_time() {
    let _serial = one_at_a_time();
    let ready = TVar::new(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let done = counted(|| {
        let rx = {
            let (ready, runs) = (ready.clone(), runs.clone());
            spawn_reporting(move || {
                atomically(|tx| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    if !tx.read(&ready)? {
                        return retry();
                    }
                    Ok(())
                })
            })
        };
        wait_for_runs(&runs, 1);
        thread::sleep(Duration::from_millis(20)); // let it park
        atomically(|tx| tx.write(&ready, true));
        finish(&rx, "the waiter");
    });
    let runs = runs.load(Ordering::SeqCst) as u64;
    // Each run but the last retried; each retry blocked (a wake-up re-runs the body).
    assert_eq!(done.retries, runs - 1, "{done:?}");
    assert_eq!(done.blocks, done.retries, "{done:?}");
    assert!(done.retries >= 1, "{done:?}");
    assert!(done.blocked > Duration::ZERO, "{done:?}");
    assert_eq!(
        done.commits, 1,
        "the writer; the waiter's last run is read-only"
    );
    assert_eq!(done.read_only_commits, 1, "{done:?}");
}

#[test]
fn counts_of_exited_threads_stay_in_the_totals() {
    let _serial = one_at_a_time();
    let v = TVar::new(0u64);
    let done = counted(|| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let v = v.clone();
                thread::spawn(move || {
                    for _ in 0..250 {
                        atomically(|tx| tx.modify(&v, |x| x + 1));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap(); // the thread's exit folds its block into the totals
        }
    });
    assert_eq!(v.load(), 1_000);
    assert_eq!(done.commits, 1_000, "{done:?}");
    assert_eq!(done.commits + done.read_only_commits, 1_000);
}

#[test]
fn conflict_tracking_names_the_contended_tvar_only_while_on() {
    let _serial = one_at_a_time();
    let (hot, out) = (TVar::new(0u64), TVar::new(0u64));
    stats::clear_conflicts();

    // Off: a conflict is counted, but no TVar is.
    conflict_once(&hot, &out);
    assert!(stats::hot_tvars(10).is_empty());

    stats::track_conflicts(true);
    for _ in 0..3 {
        conflict_once(&hot, &out);
    }
    let cold = TVar::new(0u64);
    let (other, out2) = (TVar::new(0u64), TVar::new(0u64));
    conflict_once(&other, &out2);
    atomically(|tx| tx.modify(&cold, |x| x + 1));
    stats::track_conflicts(false);

    let top = stats::hot_tvars(10);
    assert_eq!(top.len(), 2, "{top:?}");
    assert!(top[0].is(&hot) && top[0].conflicts() == 3, "{top:?}");
    assert!(top[1].is(&other) && top[1].conflicts() == 1, "{top:?}");
    assert!(!top.iter().any(|t| t.is(&out) || t.is(&cold)));
    assert_eq!(stats::hot_tvars(1).len(), 1);

    // Off again: counts stay until cleared.
    conflict_once(&hot, &out);
    assert_eq!(stats::hot_tvars(1)[0].conflicts(), 3);
    stats::clear_conflicts();
    assert!(stats::hot_tvars(10).is_empty());
}

#[test]
fn a_tracked_tvar_is_kept_alive_until_cleared() {
    let _serial = one_at_a_time();
    let counter = common::DropCounter::new();
    let hot = TVar::new(counter.value(1));
    let out = TVar::new(0u64);
    stats::clear_conflicts();
    stats::track_conflicts(true);
    atomically(|tx| {
        tx.read(&hot)?;
        if tx.attempt() == 1 {
            let (other, value) = (hot.clone(), counter.value(2));
            thread::spawn(move || atomically(|tx| tx.write(&other, value.clone())))
                .join()
                .unwrap();
        }
        tx.write(&out, 1)
    });
    stats::track_conflicts(false);
    let top = stats::hot_tvars(1);
    assert!(top[0].is(&hot));
    drop(top);
    drop(hot);
    // The table still holds the variable, so its address cannot be reused by another TVar.
    assert!(
        !common::drive_reclamation(|| counter.live() == 0),
        "a counted variable was freed while the table held it"
    );
    stats::clear_conflicts();
    counter.assert_all_dropped("the variable after clear_conflicts");
}
