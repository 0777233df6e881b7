//! Transaction hooks: `on_commit`/`try_on_commit`, `after_commit` and `on_abort` — their order,
//! what they see, how they behave across conflicts, vetoes and panics, and which of them may
//! start new transactions.

mod common;

use common::{on_other_thread, panic_message};
use mvstm::{atomically, retry, try_atomically, AbortCause, StmResult, TVar};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

type Log = Rc<RefCell<Vec<String>>>;

fn new_log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

#[test]
fn on_commit_and_after_commit_run_fifo_and_on_commit_first() {
    let v = TVar::new(0u32);
    let log = new_log();
    atomically(|tx| {
        log.borrow_mut().clear();
        for i in 0..3 {
            let l = log.clone();
            tx.after_commit(move || l.borrow_mut().push(format!("after {i}")));
            let l = log.clone();
            tx.on_commit(move || l.borrow_mut().push(format!("on {i}")));
        }
        tx.write(&v, 1)
    });
    assert_eq!(
        entries(&log),
        ["on 0", "on 1", "on 2", "after 0", "after 1", "after 2"]
    );
}

#[test]
fn on_abort_runs_lifo() {
    #[derive(Debug, PartialEq)]
    struct Stop;
    let v = TVar::new(0u32);
    let log = new_log();
    let r: Result<(), Stop> = try_atomically(|tx| {
        for i in 0..4 {
            let l = log.clone();
            tx.on_abort(move |c| l.borrow_mut().push(format!("{i} {c:?}")));
        }
        tx.write(&v, 1)?;
        tx.abort(Stop)
    });
    assert_eq!(r, Err(Stop));
    assert_eq!(entries(&log), ["3 Abort", "2 Abort", "1 Abort", "0 Abort"]);
    assert_eq!(v.load(), 0);
}

#[test]
fn on_abort_hooks_do_not_run_on_commit() {
    let v = TVar::new(0u32);
    let log = new_log();
    atomically(|tx| {
        let l = log.clone();
        tx.on_abort(move |c| l.borrow_mut().push(format!("abort {c:?}")));
        tx.write(&v, 1)
    });
    assert!(entries(&log).is_empty(), "{:?}", entries(&log));
}

#[test]
fn on_commit_runs_before_the_values_are_visible_after_commit_after() {
    let (a, b) = (TVar::new(1u32), TVar::new(String::from("old")));
    let log = new_log();
    atomically(|tx| {
        log.borrow_mut().clear();
        tx.write(&a, 2)?;
        tx.write(&b, String::from("new"))?;
        let (a2, b2, l) = (a.clone(), b.clone(), log.clone());
        tx.on_commit(move || {
            l.borrow_mut()
                .push(format!("on_commit {} {}", a2.load(), b2.load()))
        });
        let (a2, b2, l) = (a.clone(), b.clone(), log.clone());
        tx.after_commit(move || {
            l.borrow_mut()
                .push(format!("after_commit {} {}", a2.load(), b2.load()));
        });
        Ok(())
    });
    assert_eq!(entries(&log), ["on_commit 1 old", "after_commit 2 new"]);
}

#[test]
fn readers_on_other_threads_are_not_blocked_while_on_commit_runs() {
    // on_commit holds the write set's locks; a read-only transaction elsewhere still completes
    // (multi-version reads) and sees the old value.
    let v = TVar::new(1u32);
    let log = new_log();
    atomically(|tx| {
        log.borrow_mut().clear();
        tx.write(&v, 2)?;
        let (v2, l) = (v.clone(), log.clone());
        tx.on_commit(move || {
            let seen = on_other_thread(move || atomically(|tx| tx.read(&v2)));
            l.borrow_mut().push(format!("other thread read {seen}"));
        });
        Ok(())
    });
    assert_eq!(entries(&log), ["other thread read 1"]);
    assert_eq!(v.load(), 2);
}

#[test]
fn on_commit_of_a_read_only_transaction_runs() {
    let v = TVar::new(5u32);
    let log = new_log();
    let seen = atomically(|tx| {
        log.borrow_mut().clear();
        let x = tx.read(&v)?;
        let l = log.clone();
        tx.on_commit(move || l.borrow_mut().push(format!("on_commit saw {x}")));
        let l = log.clone();
        tx.after_commit(move || l.borrow_mut().push("after_commit".into()));
        Ok(x)
    });
    assert_eq!(seen, 5);
    assert_eq!(entries(&log), ["on_commit saw 5", "after_commit"]);

    // Also with no TVar touched at all.
    let log = new_log();
    atomically(|tx| {
        let l = log.clone();
        tx.on_commit(move || l.borrow_mut().push("empty on_commit".into()));
        Ok(())
    });
    assert_eq!(entries(&log), ["empty on_commit"]);
}

#[test]
fn a_conflict_runs_on_abort_and_commit_hooks_run_once() {
    for with_commit_hook in [false, true] {
        let (read, written) = (TVar::new(0u32), TVar::new(0u32));
        let log = new_log();
        let value = atomically(|tx| {
            let l = log.clone();
            let attempt = tx.attempt();
            tx.on_abort(move |c| l.borrow_mut().push(format!("on_abort {attempt} {c:?}")));
            if with_commit_hook {
                let l = log.clone();
                tx.on_commit(move || l.borrow_mut().push(format!("on_commit {attempt}")));
            }
            let l = log.clone();
            tx.after_commit(move || l.borrow_mut().push(format!("after_commit {attempt}")));
            let seen = tx.read(&read)?;
            if attempt == 1 {
                // Another thread commits a change to what this attempt read.
                let r = read.clone();
                on_other_thread(move || atomically(|tx| tx.write(&r, 10)));
            }
            tx.write(&written, seen + 1)?;
            Ok(seen)
        });
        assert_eq!(
            value, 10,
            "the committed attempt must see the other thread's write"
        );
        assert_eq!(written.load(), 11);
        let log = entries(&log);
        let expected_commit: Vec<String> = if with_commit_hook {
            vec!["on_commit 2".into(), "after_commit 2".into()]
        } else {
            vec!["after_commit 2".into()]
        };
        assert_eq!(log[0], "on_abort 1 Conflict", "{log:?}");
        assert_eq!(log[1..], expected_commit[..], "{log:?}");
    }
}

#[test]
fn on_abort_gets_retry_before_blocking() {
    let flag = TVar::new(false);
    let log = new_log();
    let (l, f) = (log.clone(), flag.clone());
    atomically(|tx| {
        let attempt = tx.attempt();
        let (l, f) = (l.clone(), f.clone());
        tx.on_abort(move |c| {
            l.borrow_mut().push(format!("{attempt} {c:?}"));
            // The hook runs outside the transaction: it may commit the change the retry
            // waits for, on this very thread.
            atomically(|tx| tx.write(&f, true));
        });
        if !tx.read(&flag)? {
            return retry();
        }
        Ok(())
    });
    assert_eq!(entries(&log), ["1 Retry"]);
}

#[test]
fn try_on_commit_veto_returns_the_error_and_publishes_nothing() {
    let (a, b) = (TVar::new(1u32), TVar::new(1u32));
    let log = new_log();
    let r: Result<u32, String> = try_atomically(|tx| {
        log.borrow_mut().clear();
        tx.write(&a, 2)?;
        tx.write(&b, 2)?;
        let l = log.clone();
        tx.on_abort(move |c| l.borrow_mut().push(format!("on_abort {c:?}")));
        let l = log.clone();
        tx.on_commit(move || l.borrow_mut().push("on_commit before the veto".into()));
        tx.try_on_commit(|| Err::<(), String>("refused".into()));
        let l = log.clone();
        tx.on_commit(move || l.borrow_mut().push("on_commit after the veto".into()));
        let l = log.clone();
        tx.after_commit(move || l.borrow_mut().push("after_commit".into()));
        Ok(7)
    });
    assert_eq!(r, Err("refused".to_string()));
    assert_eq!(
        (a.load(), b.load()),
        (1, 1),
        "a vetoed commit published its writes"
    );
    assert_eq!(
        entries(&log),
        ["on_commit before the veto", "on_abort Abort"]
    );

    // The variables are not left locked.
    let (a2, b2) = (a.clone(), b.clone());
    on_other_thread(move || {
        atomically(|tx| {
            tx.write(&a2, 3)?;
            tx.write(&b2, 3)
        })
    });
    assert_eq!((a.load(), b.load()), (3, 3));
}

#[test]
fn try_on_commit_ok_lets_the_commit_through() {
    let v = TVar::new(0u32);
    let r: Result<(), String> = try_atomically(|tx| {
        tx.write(&v, 1)?;
        tx.try_on_commit(|| Ok::<(), String>(()));
        Ok(())
    });
    assert_eq!(r, Ok(()));
    assert_eq!(v.load(), 1);
}

#[test]
fn try_on_commit_veto_of_a_read_only_transaction() {
    let v = TVar::new(0u32);
    let log = new_log();
    let r: Result<u32, &str> = try_atomically(|tx| {
        let l = log.clone();
        tx.on_abort(move |c| l.borrow_mut().push(format!("{c:?}")));
        let x = tx.read(&v)?;
        tx.try_on_commit(|| Err::<(), &str>("no"));
        Ok(x)
    });
    assert_eq!(r, Err("no"));
    assert_eq!(entries(&log), ["Abort"]);
}

#[test]
fn a_panicking_on_commit_vetoes_and_resumes() {
    let v = TVar::new(0u32);
    let log = new_log();
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.write(&v, 1)?;
            let l = log.clone();
            tx.on_abort(move |c| l.borrow_mut().push(format!("on_abort {c:?}")));
            tx.on_commit(|| panic!("on_commit exploded"));
            let l = log.clone();
            tx.on_commit(move || l.borrow_mut().push("later on_commit".into()));
            let l = log.clone();
            tx.after_commit(move || l.borrow_mut().push("after_commit".into()));
            Ok(())
        })
    }));
    let p = r.expect_err("the on_commit panic must resume");
    assert_eq!(panic_message(&*p), "on_commit exploded");
    assert_eq!(v.load(), 0, "a vetoed commit published its write");
    assert_eq!(entries(&log), ["on_abort Panic"]);

    // No lock is left held: another thread updates the variable at once.
    let v2 = v.clone();
    on_other_thread(move || atomically(|tx| tx.write(&v2, 5)));
    assert_eq!(v.load(), 5);
}

#[test]
fn all_after_commit_hooks_run_when_one_panics_and_the_commit_stands() {
    let v = TVar::new(0u32);
    let log = new_log();
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.write(&v, 1)?;
            let l = log.clone();
            tx.on_abort(move |c| l.borrow_mut().push(format!("on_abort {c:?}")));
            let l = log.clone();
            tx.after_commit(move || l.borrow_mut().push("after 0".into()));
            tx.after_commit(|| panic!("first after_commit panic"));
            let l = log.clone();
            tx.after_commit(move || l.borrow_mut().push("after 2".into()));
            tx.after_commit(|| panic!("second after_commit panic"));
            let l = log.clone();
            tx.after_commit(move || l.borrow_mut().push("after 4".into()));
            Ok(())
        })
    }));
    let p = r.expect_err("the after_commit panic must be re-raised");
    assert_eq!(panic_message(&*p), "first after_commit panic");
    assert_eq!(v.load(), 1, "the commit must stand");
    assert_eq!(entries(&log), ["after 0", "after 2", "after 4"]);

    let v2 = v.clone();
    on_other_thread(move || atomically(|tx| tx.modify(&v2, |x| x + 1)));
    assert_eq!(v.load(), 2);
}

#[test]
fn all_on_abort_hooks_run_when_one_panics() {
    #[derive(Debug)]
    struct Stop;
    let v = TVar::new(0u32);
    let log = new_log();
    let r = catch_unwind(AssertUnwindSafe(|| {
        try_atomically::<(), Stop>(|tx| {
            tx.write(&v, 1)?;
            let l = log.clone();
            tx.on_abort(move |c| l.borrow_mut().push(format!("0 {c:?}")));
            tx.on_abort(|_| panic!("first on_abort panic"));
            let l = log.clone();
            tx.on_abort(move |c| l.borrow_mut().push(format!("2 {c:?}")));
            tx.on_abort(|_| panic!("second on_abort panic"));
            let l = log.clone();
            tx.on_abort(move |c| l.borrow_mut().push(format!("4 {c:?}")));
            tx.abort(Stop)
        })
    }));
    let p = r.expect_err("the on_abort panic must be re-raised");
    // LIFO: the hook registered last runs first, so "second" panics first.
    assert_eq!(panic_message(&*p), "second on_abort panic");
    assert_eq!(entries(&log), ["4 Abort", "2 Abort", "0 Abort"]);
    assert_eq!(v.load(), 0);
}

#[test]
fn after_commit_may_start_new_transactions() {
    let (v, audit) = (TVar::new(0u32), TVar::new(Vec::<u32>::new()));
    atomically(|tx| {
        tx.write(&v, 1)?;
        let (v2, audit2) = (v.clone(), audit.clone());
        tx.after_commit(move || {
            let now = atomically(|tx| tx.read(&v2));
            atomically(|tx| {
                tx.modify(&audit2, |mut a| {
                    a.push(now);
                    a
                })
            });
        });
        Ok(())
    });
    assert_eq!(audit.load(), vec![1]);
}

#[test]
fn on_abort_may_start_new_transactions() {
    #[derive(Debug, PartialEq)]
    struct Stop;
    let (v, aborts) = (TVar::new(0u32), TVar::new(0u32));
    let r: Result<(), Stop> = try_atomically(|tx| {
        tx.write(&v, 1)?;
        let aborts = aborts.clone();
        tx.on_abort(move |_| atomically(|tx| tx.modify(&aborts, |x| x + 1)));
        tx.abort(Stop)
    });
    assert_eq!(r, Err(Stop));
    assert_eq!((v.load(), aborts.load()), (0, 1));
}

#[test]
fn atomically_inside_on_commit_panics_clearly() {
    let (v, other) = (TVar::new(0u32), TVar::new(0u32));
    let log = new_log();
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.write(&v, 1)?;
            let l = log.clone();
            tx.on_abort(move |c| l.borrow_mut().push(format!("on_abort {c:?}")));
            let other = other.clone();
            tx.on_commit(move || atomically(|tx| tx.write(&other, 1)));
            Ok(())
        })
    }));
    let p = r.expect_err("atomically inside on_commit must panic");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("on_commit") || msg.contains("inside a transaction"),
        "{msg}"
    );
    assert_eq!((v.load(), other.load()), (0, 0), "nothing may be published");
    assert_eq!(entries(&log), ["on_abort Panic"]);

    // Same inside try_on_commit, and in a read-only transaction.
    let r = catch_unwind(AssertUnwindSafe(|| {
        try_atomically::<(), String>(|tx| {
            tx.read(&v)?;
            let other = other.clone();
            tx.try_on_commit(move || {
                atomically(|tx| tx.write(&other, 2));
                Ok::<(), String>(())
            });
            Ok(())
        })
    }));
    assert!(r.is_err(), "atomically inside try_on_commit must panic");
    assert_eq!(other.load(), 0);

    // The thread is fine afterwards.
    atomically(|tx| tx.write(&v, 9));
    assert_eq!(v.load(), 9);
}

#[test]
fn hooks_run_on_the_calling_thread_before_atomically_returns() {
    let v = TVar::new(0u32);
    let me = thread::current().id();
    let log = new_log();
    atomically(|tx| {
        tx.write(&v, 1)?;
        let l = log.clone();
        tx.on_commit(move || {
            assert_eq!(thread::current().id(), me);
            l.borrow_mut().push("on_commit".into());
        });
        let l = log.clone();
        tx.after_commit(move || {
            assert_eq!(thread::current().id(), me);
            l.borrow_mut().push("after_commit".into());
        });
        Ok(())
    });
    assert_eq!(entries(&log), ["on_commit", "after_commit"]);
}

#[test]
fn hooks_of_an_abandoned_attempt_are_registered_again_by_the_rerun() {
    let flag = TVar::new(false);
    let log = new_log();
    let (waker_tx, waker_rx) = mpsc::channel::<()>();
    let f = flag.clone();
    let waker = thread::spawn(move || {
        if waker_rx.recv_timeout(Duration::from_secs(10)).is_ok() {
            atomically(|tx| tx.write(&f, true));
        }
    });
    atomically(|tx| -> StmResult<()> {
        let attempt = tx.attempt();
        let l = log.clone();
        tx.on_commit(move || l.borrow_mut().push(format!("on_commit {attempt}")));
        let l = log.clone();
        tx.after_commit(move || l.borrow_mut().push(format!("after_commit {attempt}")));
        let l = log.clone();
        let w = waker_tx.clone();
        tx.on_abort(move |c| {
            l.borrow_mut().push(format!("on_abort {attempt} {c:?}"));
            let _ = w.send(());
        });
        if !tx.read(&flag)? {
            return retry();
        }
        Ok(())
    });
    waker.join().unwrap();
    assert_eq!(
        entries(&log),
        ["on_abort 1 Retry", "on_commit 2", "after_commit 2"]
    );
}

#[test]
fn a_panic_in_a_body_runs_on_abort_with_panic() {
    let v = TVar::new(0u32);
    let log = new_log();
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> {
            tx.write(&v, 1)?;
            let l = log.clone();
            tx.on_abort(move |c| l.borrow_mut().push(format!("{c:?}")));
            let l = log.clone();
            tx.on_commit(move || l.borrow_mut().push("on_commit".into()));
            panic!("body panic")
        })
    }));
    assert!(r.is_err());
    assert_eq!(entries(&log), ["Panic"]);
    assert_eq!(v.load(), 0);
}

#[test]
fn abort_cause_is_comparable_and_printable() {
    let all = [
        AbortCause::Conflict,
        AbortCause::Retry,
        AbortCause::Abort,
        AbortCause::Panic,
    ];
    for (i, a) in all.iter().enumerate() {
        for (j, b) in all.iter().enumerate() {
            assert_eq!(i == j, a == b);
        }
    }
    assert_eq!(format!("{:?}", AbortCause::Conflict), "Conflict");
    let copy = all[1];
    assert_eq!(copy, AbortCause::Retry);
}

/// Runs a transaction on another thread that does `body` and then sits in its `on_commit` hook
/// until the returned sender is dropped; returns once it sits there.
fn sit_in_on_commit(
    body: impl Fn(&mut mvstm::Txn) -> StmResult<()> + Send + 'static,
) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (sitting_tx, sitting_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
        atomically(|tx| {
            body(tx)?;
            let (release_rx, sitting_tx) = (release_rx.clone(), sitting_tx.clone());
            tx.on_commit(move || {
                let _ = sitting_tx.send(());
                // Blocks until the test drops the sender (recv then fails).
                let _ = release_rx.lock().unwrap().recv();
            });
            Ok(())
        });
    });
    sitting_rx
        .recv_timeout(common::LIMIT)
        .expect("the holder never reached its on_commit hook");
    (release_tx, holder)
}

/// [`sit_in_on_commit`] with a body that reads `shared` and writes `own` (what it read, plus 1).
fn read_and_sit_in_on_commit(
    shared: &TVar<u64>,
    own: &TVar<u64>,
) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (shared, own) = (shared.clone(), own.clone());
    sit_in_on_commit(move |tx| {
        let seen = tx.read(&shared)?;
        tx.write(&own, seen + 1)
    })
}

/// PITFALLS 14: a committer sitting in its `on_commit` hook holds what it only read *shared*.
/// Another committer that only reads the same variable (writers of different `TMap` keys both
/// read the table) commits meanwhile, with or without hooks of its own.
#[test]
fn an_on_commit_hook_does_not_block_committers_that_only_read_the_same_variable() {
    let (shared, a, b) = (TVar::new(7u64), TVar::new(0u64), TVar::new(0u64));
    let (release, holder) = read_and_sit_in_on_commit(&shared, &a);
    let (s, b2) = (shared.clone(), b.clone());
    let other = common::spawn_reporting(move || {
        // Without hooks, then with an on_commit hook of its own.
        atomically(|tx| tx.modify(&b2, |n| n + s.load()));
        atomically(|tx| {
            let seen = tx.read(&s)?;
            tx.write(&b2, seen * 2)?;
            tx.on_commit(|| {});
            Ok(())
        });
        // Plain reads and read-only transactions, of course.
        atomically(|tx| tx.read(&s))
    });
    assert_eq!(
        common::finish(&other, "a committer reading what a hook holder read"),
        7
    );
    assert_eq!(b.load(), 14);
    drop(release);
    holder.join().unwrap();
    assert_eq!(a.load(), 8);
}

/// The same through a `TMap`: two writers of different keys, one sitting in an `on_commit` hook.
#[test]
fn writers_of_different_map_keys_do_not_conflict_through_an_on_commit_hook() {
    use mvstm::collections::TMap;
    let map: TMap<String, u64> = TMap::new();
    let m = map.clone();
    let (release_tx, holder) =
        sit_in_on_commit(move |tx| m.insert(tx, "a".to_string(), 1).map(|_| ()));
    let m = map.clone();
    let other = common::spawn_reporting(move || {
        atomically(|tx| {
            m.insert(tx, "b".to_string(), 2)?;
            tx.on_commit(|| {});
            Ok(())
        })
    });
    common::finish(
        &other,
        "a writer of key b while a writer of key a sits in on_commit",
    );
    drop(release_tx);
    holder.join().unwrap();
    assert_eq!(atomically(|tx| map.get(tx, &"a".to_string())), Some(1));
    assert_eq!(atomically(|tx| map.get(tx, &"b".to_string())), Some(2));
}

/// A writer of a variable that a hook holder read waits until the holder has committed, and then
/// serializes after it (it sees the holder's write).
#[test]
fn a_writer_of_a_held_variable_commits_after_the_holder() {
    let (shared, a) = (TVar::new(1u64), TVar::new(0u64));
    let (release, holder) = read_and_sit_in_on_commit(&shared, &a);
    let (s, a2) = (shared.clone(), a.clone());
    let writer = common::spawn_reporting(move || {
        atomically(|tx| {
            tx.write(&s, 100)?;
            // Serialized after the holder: its write of `a` (seen + 1 = 2) is visible.
            tx.read(&a2)
        })
    });
    common::still_blocked(&writer, "a writer of a variable held by an on_commit hook");
    drop(release);
    holder.join().unwrap();
    assert_eq!(common::finish(&writer, "the writer after the holder"), 2);
    assert_eq!((shared.load(), a.load()), (100, 2));
}
