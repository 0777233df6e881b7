//! `Txn::or_else`: choice between alternatives, rollback of a retried branch (writes, hooks and
//! variables created in it), nesting, waiting on the union of both branches' reads, and
//! propagation of aborts and conflicts from the first branch.

mod common;

use common::{finish, panic_message, spawn_reporting, wait_for_runs, DropCounter, LIMIT, QUIET};
use mvstm::{atomically, retry, try_atomically, AbortCause, StmResult, TVar, Txn};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

fn take(tx: &mut Txn, acc: &TVar<i64>, n: i64) -> StmResult<i64> {
    let b = tx.read(acc)?;
    if b < n {
        return retry();
    }
    tx.write(acc, b - n)?;
    Ok(b - n)
}

#[test]
fn first_branch_success_is_taken() {
    let (a, b) = (TVar::new(50i64), TVar::new(50i64));
    let second_ran = AtomicBool::new(false);
    let left = atomically(|tx| {
        tx.or_else(
            |tx| take(tx, &a, 10),
            |tx| {
                second_ran.store(true, Ordering::SeqCst);
                take(tx, &b, 10)
            },
        )
    });
    assert_eq!(left, 40);
    assert_eq!((a.load(), b.load()), (40, 50));
    assert!(
        !second_ran.load(Ordering::SeqCst),
        "second ran although first succeeded"
    );
}

#[test]
fn retry_in_first_falls_through_to_second() {
    let (a, b) = (TVar::new(5i64), TVar::new(50i64));
    let left = atomically(|tx| tx.or_else(|tx| take(tx, &a, 10), |tx| take(tx, &b, 10)));
    assert_eq!(left, 40);
    assert_eq!((a.load(), b.load()), (5, 40));
}

#[test]
fn writes_of_a_retried_branch_are_undone() {
    let (a, b, c) = (TVar::new(1u32), TVar::new(1u32), TVar::new(1u32));
    let seen = atomically(|tx| {
        tx.or_else(
            |tx| {
                tx.write(&a, 100)?;
                tx.modify(&b, |x| x + 100)?;
                assert_eq!(tx.read(&a)?, 100, "read-your-writes inside the branch");
                retry()
            },
            |tx| {
                // The retried branch's writes are invisible here.
                let seen = (tx.read(&a)?, tx.read(&b)?);
                tx.write(&c, 2)?;
                Ok(seen)
            },
        )
    });
    assert_eq!(seen, (1, 1));
    assert_eq!((a.load(), b.load(), c.load()), (1, 1, 2));
}

#[test]
fn a_value_written_before_the_branch_survives_its_rollback() {
    let v = TVar::new(String::from("committed"));
    let (in_second, after) = atomically(|tx| {
        tx.write(&v, String::from("outer"))?;
        let in_second = tx.or_else(
            |tx| {
                tx.write(&v, String::from("branch"))?;
                tx.modify(&v, |s| s + "+more")?;
                assert_eq!(tx.read(&v)?, "branch+more");
                retry()
            },
            |tx| tx.read(&v),
        )?;
        Ok((in_second, tx.read(&v)?))
    });
    assert_eq!(in_second, "outer");
    assert_eq!(after, "outer");
    assert_eq!(v.load(), "outer");
}

#[test]
fn outer_writes_survive_rollback_of_a_large_branch() {
    // Enough variables that the write log switches to its indexed lookup.
    let vars: Vec<TVar<u32>> = (0..40).map(TVar::new).collect();
    let sums = atomically(|tx| {
        for (i, v) in vars.iter().enumerate().take(20) {
            tx.write(v, 1_000 + i as u32)?;
        }
        tx.or_else(
            |tx| -> StmResult<()> {
                for v in &vars {
                    tx.modify(v, |x| x + 1_000_000)?;
                }
                retry()
            },
            |tx| {
                for v in &vars[30..] {
                    tx.modify(v, |x| x + 5)?;
                }
                Ok(())
            },
        )?;
        let mut seen = Vec::new();
        for v in &vars {
            seen.push(tx.read(v)?);
        }
        Ok(seen)
    });
    let expected: Vec<u32> = (0..40u32)
        .map(|i| match i {
            0..=19 => 1_000 + i,
            20..=29 => i,
            _ => i + 5,
        })
        .collect();
    assert_eq!(sums, expected);
    let loaded: Vec<u32> = vars.iter().map(TVar::load).collect();
    assert_eq!(loaded, expected);
}

#[test]
fn writes_of_the_successful_second_branch_and_after_it_are_kept() {
    let v = TVar::new(0u32);
    atomically(|tx| {
        tx.write(&v, 1)?;
        tx.or_else(
            |tx| -> StmResult<()> {
                tx.write(&v, 2)?;
                retry()
            },
            |tx| tx.modify(&v, |x| x * 10),
        )?;
        tx.modify(&v, |x| x + 3)
    });
    assert_eq!(v.load(), 13);
}

#[test]
fn hooks_of_a_retried_branch_are_dropped_on_commit() {
    let v = TVar::new(0u32);
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    atomically(|tx| {
        log.borrow_mut().clear();
        let l = log.clone();
        tx.on_commit(move || l.borrow_mut().push("outer on_commit".into()));
        let l = log.clone();
        tx.after_commit(move || l.borrow_mut().push("outer after_commit".into()));
        tx.or_else(
            |tx| -> StmResult<()> {
                let l = log.clone();
                tx.on_commit(move || l.borrow_mut().push("first on_commit".into()));
                let l = log.clone();
                tx.after_commit(move || l.borrow_mut().push("first after_commit".into()));
                let l = log.clone();
                tx.on_abort(move |c| l.borrow_mut().push(format!("first on_abort {c:?}")));
                tx.write(&v, 1)?;
                retry()
            },
            |tx| {
                let l = log.clone();
                tx.on_commit(move || l.borrow_mut().push("second on_commit".into()));
                let l = log.clone();
                tx.after_commit(move || l.borrow_mut().push("second after_commit".into()));
                tx.write(&v, 2)
            },
        )
    });
    assert_eq!(v.load(), 2);
    assert_eq!(
        *log.borrow(),
        vec![
            "outer on_commit",
            "second on_commit",
            "outer after_commit",
            "second after_commit"
        ]
    );
}

#[test]
fn on_abort_of_a_retried_branch_never_runs() {
    #[derive(Debug, PartialEq)]
    struct Stop;
    let v = TVar::new(0u32);
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let r: Result<(), Stop> = try_atomically(|tx| {
        let l = log.clone();
        tx.on_abort(move |c| l.borrow_mut().push(format!("outer {c:?}")));
        tx.or_else(
            |tx| -> StmResult<()> {
                let l = log.clone();
                tx.on_abort(move |c| l.borrow_mut().push(format!("first {c:?}")));
                tx.write(&v, 1)?;
                retry()
            },
            |_tx| Ok(()),
        )?;
        tx.abort(Stop)
    });
    assert_eq!(r, Err(Stop));
    assert_eq!(*log.borrow(), vec!["outer Abort"]);
    assert_eq!(v.load(), 0);
}

#[test]
fn nested_or_else() {
    let (a, b, c) = (TVar::new(0i64), TVar::new(0i64), TVar::new(100i64));
    // Both inner branches retry: the outer alternative runs.
    let r = atomically(|tx| {
        tx.or_else(
            |tx| tx.or_else(|tx| take(tx, &a, 1), |tx| take(tx, &b, 1)),
            |tx| take(tx, &c, 1),
        )
    });
    assert_eq!(r, 99);
    assert_eq!((a.load(), b.load(), c.load()), (0, 0, 99));

    // The inner second branch succeeds: the outer alternative does not run.
    atomically(|tx| tx.write(&b, 10));
    let r = atomically(|tx| {
        tx.or_else(
            |tx| tx.or_else(|tx| take(tx, &a, 1), |tx| take(tx, &b, 1)),
            |tx| take(tx, &c, 1),
        )
    });
    assert_eq!(r, 9);
    assert_eq!((a.load(), b.load(), c.load()), (0, 9, 99));
}

#[test]
fn nested_rollback_keeps_the_enclosing_branch_writes() {
    let v = TVar::new(0u32);
    let w = TVar::new(0u32);
    let seen = atomically(|tx| {
        tx.write(&v, 1)?;
        tx.or_else(
            |tx| {
                tx.write(&v, 2)?; // outer first branch: kept (it succeeds)
                let inner = tx.or_else(
                    |tx| -> StmResult<u32> {
                        tx.write(&v, 3)?; // inner first branch: rolled back
                        tx.write(&w, 3)?;
                        retry()
                    },
                    |tx| tx.read(&v),
                )?;
                Ok((inner, tx.read(&v)?, tx.read(&w)?))
            },
            |_tx| Ok((0, 0, 0)),
        )
    });
    assert_eq!(seen, (2, 2, 0));
    assert_eq!((v.load(), w.load()), (2, 0));

    // Both levels retry: everything written inside either branch is gone.
    let seen = atomically(|tx| {
        tx.write(&v, 10)?;
        tx.or_else(
            |tx| {
                tx.write(&v, 20)?;
                tx.or_else(
                    |tx| -> StmResult<u32> {
                        tx.write(&v, 30)?;
                        retry()
                    },
                    |tx| -> StmResult<u32> {
                        tx.write(&w, 30)?;
                        retry()
                    },
                )
            },
            |tx| Ok(tx.read(&v)? + tx.read(&w)?),
        )
    });
    assert_eq!(seen, 10);
    assert_eq!((v.load(), w.load()), (10, 0));
}

/// Start a thread that takes 10 from `a`, or else from `b`, and wait until it has run once
/// (both branches retry while both hold 0); its answer names the branch that paid.
fn spawn_take_from_either(
    a: &TVar<i64>,
    b: &TVar<i64>,
) -> std::sync::mpsc::Receiver<std::thread::Result<&'static str>> {
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (a, b, runs) = (a.clone(), b.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.or_else(
                    |tx| take(tx, &a, 10).map(|_| "a"),
                    |tx| take(tx, &b, 10).map(|_| "b"),
                )
            })
        })
    };
    wait_for_runs(&runs, 1);
    rx
}

#[test]
fn both_branches_retry_waits_on_the_union_of_their_reads() {
    // A change to a variable that only the FIRST branch read must wake the transaction.
    let (a, b) = (TVar::new(0i64), TVar::new(0i64));
    let rx = spawn_take_from_either(&a, &b);
    thread::sleep(QUIET);
    assert!(
        rx.try_recv().is_err(),
        "returned although both branches retry"
    );
    atomically(|tx| tx.write(&a, 15));
    assert_eq!(
        finish(&rx, "or_else waiting on the first branch's read"),
        "a"
    );
    assert_eq!((a.load(), b.load()), (5, 0));
}

#[test]
fn both_branches_retry_wakes_for_the_second_branch_too() {
    let (a, b) = (TVar::new(0i64), TVar::new(0i64));
    let rx = spawn_take_from_either(&a, &b);
    atomically(|tx| tx.write(&b, 15));
    assert_eq!(
        finish(&rx, "or_else waiting on the second branch's read"),
        "b"
    );
    assert_eq!((a.load(), b.load()), (0, 5));
}

#[test]
fn first_branch_retry_on_then_second_retry_waits_on_both() {
    let (named, other) = (TVar::new(false), TVar::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (named, other, runs) = (named.clone(), other.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.or_else(
                    |tx| {
                        if !tx.read(&named)? {
                            return tx.retry_on(&[&named]);
                        }
                        Ok(1)
                    },
                    |tx| {
                        if !tx.read(&other)? {
                            return retry();
                        }
                        Ok(2)
                    },
                )
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&named, true));
    assert_eq!(finish(&rx, "or_else with retry_on in the first branch"), 1);
}

#[test]
fn first_branch_retry_then_second_retry_on_still_waits_on_the_first_reads() {
    // The second branch names only `named`, but the first branch's plain `retry` waits on what
    // it read: a change to `first_read` alone must wake the transaction.
    let (first_read, named) = (TVar::new(false), TVar::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (first_read, named, runs) = (first_read.clone(), named.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.or_else(
                    |tx| {
                        if !tx.read(&first_read)? {
                            return retry();
                        }
                        Ok(1)
                    },
                    |tx| {
                        if !tx.read(&named)? {
                            return tx.retry_on(&[&named]);
                        }
                        Ok(2)
                    },
                )
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&first_read, true));
    assert_eq!(finish(&rx, "or_else waiting on the first branch's read"), 1);
}

#[test]
fn abort_in_first_propagates_and_skips_second() {
    #[derive(Debug, PartialEq)]
    struct Refused(u8);
    let v = TVar::new(0u32);
    let second_ran = AtomicBool::new(false);
    let causes = Rc::new(RefCell::new(Vec::new()));
    let r: Result<(), Refused> = try_atomically(|tx| {
        let c = causes.clone();
        tx.on_abort(move |cause| c.borrow_mut().push(cause));
        tx.write(&v, 1)?;
        tx.or_else(
            |tx| {
                tx.write(&v, 2)?;
                tx.abort(Refused(7))
            },
            |tx| {
                second_ran.store(true, Ordering::SeqCst);
                tx.write(&v, 3)
            },
        )
    });
    assert_eq!(r, Err(Refused(7)));
    assert!(
        !second_ran.load(Ordering::SeqCst),
        "an abort fell through to the second branch"
    );
    assert_eq!(v.load(), 0);
    assert_eq!(*causes.borrow(), vec![AbortCause::Abort]);
}

#[test]
fn conflict_in_first_restarts_the_whole_transaction() {
    let (read_first, out) = (TVar::new(0u32), TVar::new(0u32));
    let second_runs = AtomicUsize::new(0);
    let causes = Rc::new(RefCell::new(Vec::new()));
    let result = atomically(|tx| {
        let c = causes.clone();
        tx.on_abort(move |cause| c.borrow_mut().push(cause));
        let seen = tx.read(&read_first)?;
        tx.write(&out, seen + 1)?;
        let attempt = tx.attempt();
        tx.or_else(
            |tx| {
                if attempt == 1 {
                    // Another thread changes what this attempt already read.
                    let rf = read_first.clone();
                    thread::spawn(move || atomically(|tx| tx.write(&rf, 100)))
                        .join()
                        .unwrap();
                    // Re-reading it cannot be consistent with the earlier read and write.
                    tx.read(&read_first)?;
                }
                Ok(attempt)
            },
            |_tx| {
                second_runs.fetch_add(1, Ordering::SeqCst);
                Ok(0)
            },
        )
    });
    assert_eq!(
        second_runs.load(Ordering::SeqCst),
        0,
        "a conflict fell through to second"
    );
    assert!(result >= 2, "the conflicting first attempt committed");
    assert_eq!(out.load(), 101);
    assert!(
        causes.borrow().contains(&AbortCause::Conflict),
        "{:?}",
        causes.borrow()
    );
}

#[test]
fn tvars_created_in_a_rolled_back_branch_vanish() {
    // GHC #18453-style: a TVar created and written inside a branch that retried must not
    // survive with the branch's writes, and must not be reachable from the committed state.
    let drops = DropCounter::new();
    // The transaction runs on a thread that then exits: its exit hands the frees it deferred
    // (for the TVars whose last handle it dropped) to the global queue, so the leak check below
    // does not depend on when a living thread flushes them (tests/tvar.rs covers that).
    let (done_tx, done_rx) = mpsc::channel();
    let worker = {
        let drops = drops.clone();
        thread::spawn(move || {
            let registry: TVar<Vec<TVar<u32>>> = TVar::new(Vec::new());
            let escaped: RefCell<Option<TVar<u32>>> = RefCell::new(None);
            let chosen = atomically(|tx| {
                tx.or_else(
                    |tx| -> StmResult<&str> {
                        let fresh = TVar::new(1u32);
                        tx.write(&fresh, 2)?;
                        tx.modify(&registry, |mut r| {
                            r.push(fresh.clone());
                            r
                        })?;
                        // Values with a destructor, in a variable that dies with the branch.
                        let temp = TVar::new(drops.value(0));
                        tx.write(&temp, drops.value(1))?;
                        *escaped.borrow_mut() = Some(fresh);
                        retry()
                    },
                    |tx| {
                        let registered = tx.read(&registry)?.len();
                        assert_eq!(registered, 0, "the branch's registration is visible");
                        Ok("second")
                    },
                )
            });
            assert_eq!(chosen, "second");
            assert!(
                registry.load().is_empty(),
                "a TVar made in a rolled-back branch was published"
            );
            // The handle that escaped by non-transactional means holds its initial value.
            let fresh = escaped.borrow_mut().take().expect("the first branch ran");
            assert_eq!(
                fresh.load(),
                1,
                "the rolled-back write to the new TVar was published"
            );
            let _ = done_tx.send(());
        })
    };
    let finished = done_rx.recv_timeout(LIMIT);
    if let Err(p) = worker.join() {
        std::panic::resume_unwind(p);
    }
    finished.expect("the worker finished");

    // Every value made in the branch is eventually freed (drive deferred reclamation).
    drops.assert_all_dropped("values of the rolled-back branch");
}

#[test]
fn tvars_created_in_a_successful_branch_are_kept() {
    let registry: TVar<Vec<TVar<u32>>> = TVar::new(Vec::new());
    atomically(|tx| {
        tx.or_else(
            |tx| -> StmResult<()> {
                let fresh = TVar::new(0u32);
                tx.write(&fresh, 5)?;
                tx.modify(&registry, |mut r| {
                    r.push(fresh.clone());
                    r
                })?;
                retry()
            },
            |tx| {
                let fresh = TVar::new(0u32);
                tx.write(&fresh, 7)?;
                tx.modify(&registry, |mut r| {
                    r.push(fresh);
                    r
                })
            },
        )
    });
    let r = registry.load();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].load(), 7);
}

#[test]
fn a_panic_in_first_propagates() {
    let v = TVar::new(0u32);
    let second_ran = AtomicBool::new(false);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.or_else(
                |tx| -> StmResult<()> {
                    tx.write(&v, 1)?;
                    panic!("boom in first")
                },
                |tx| {
                    second_ran.store(true, Ordering::SeqCst);
                    tx.write(&v, 2)
                },
            )
        })
    }));
    let p = r.expect_err("the panic must propagate");
    assert_eq!(panic_message(&*p), "boom in first");
    assert!(!second_ran.load(Ordering::SeqCst));
    assert_eq!(v.load(), 0);
}
