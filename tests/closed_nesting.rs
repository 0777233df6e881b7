//! `Txn::nested`: closed nesting (GHC's `catchSTM`, ScalaSTM's nested `atomic`). An abort of the
//! caught type rolls back the part's writes, its commit hooks and the TVars it created, settles
//! its `on_abort` hooks with `Abort`, and comes back to the enclosing body, which may commit.
//! Conflicts restart the whole transaction, `retry` waits for the whole transaction on
//! everything it read (the rolled-back part's reads too), panics roll the part back and unwind,
//! and aborts of other types pass through. Ends with random programs of `nested`, `or_else`,
//! aborts, retries and writes checked against a sequential model.

mod common;

use common::{
    finish, panic_message, spawn_reporting, still_blocked, wait_for_runs, DropCounter, LIMIT, QUIET,
};
use mvstm::{
    atomically, atomically_timeout, retry, try_atomically, AbortCause, OrAbort, StmResult, TVar,
    TimedOut, Txn,
};
use proptest::prelude::*;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

#[derive(Debug, PartialEq)]
struct Refused;

#[derive(Debug, PartialEq)]
struct Other(u32);

/// Fail (rather than spin) when a body without competition keeps re-running: the symptom of an
/// enclosing body left doomed by a part's rollback.
fn no_reruns(tx: &Txn) {
    assert!(
        tx.attempt() < 20,
        "a transaction without competition re-ran {} times",
        tx.attempt()
    );
}

/// A log of hook events, shared by the hooks of one test.
type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

/// Register an `on_commit`, an `after_commit` and an `on_abort` hook that write `tag` to `log`.
fn hooks(tx: &mut Txn, log: &Log, tag: &str) {
    let (l, t) = (log.clone(), tag.to_string());
    tx.on_commit(move || l.borrow_mut().push(format!("{t} on_commit")));
    let (l, t) = (log.clone(), tag.to_string());
    tx.after_commit(move || l.borrow_mut().push(format!("{t} after_commit")));
    let (l, t) = (log.clone(), tag.to_string());
    tx.on_abort(move |cause| l.borrow_mut().push(format!("{t} on_abort {cause:?}")));
}

#[test]
fn the_api_example() {
    let a = TVar::new(0u32);
    let outcome: Result<u32, Refused> = atomically(|tx| {
        tx.write(&a, 1)?;
        tx.nested(|tx| {
            tx.write(&a, 2)?;
            tx.abort(Refused)
        })
    });
    assert_eq!(outcome, Err(Refused));
    assert_eq!(
        a.load(),
        1,
        "the outer write committed, the nested one was rolled back"
    );
}

#[test]
fn a_part_that_succeeds_joins_the_enclosing_transaction() {
    let (a, b) = (TVar::new(0u32), TVar::new(0u32));
    let log = log();
    let r = atomically(|tx| {
        no_reruns(tx);
        log.borrow_mut().clear();
        tx.write(&a, 1)?;
        let inner = tx.nested::<_, Refused>(|tx| {
            hooks(tx, &log, "part");
            assert_eq!(tx.read(&a)?, 1, "the part sees the enclosing write");
            tx.write(&a, 2)?;
            tx.write(&b, 3)?;
            Ok("done")
        })?;
        assert_eq!(tx.read(&a)?, 2, "the enclosing body sees the part's write");
        Ok(inner)
    });
    assert_eq!(r, Ok("done"));
    assert_eq!((a.load(), b.load()), (2, 3));
    assert_eq!(
        *log.borrow(),
        vec!["part on_commit", "part after_commit"],
        "a part that succeeded has its commit hooks run, not its on_abort hooks"
    );
}

#[test]
fn an_aborted_part_is_invisible_to_the_rest_of_the_body() {
    let (outer, inner_only, big) = (TVar::new(0u32), TVar::new(10u32), TVar::new(0u64));
    let many: Vec<TVar<u32>> = (0..40).map(TVar::new).collect();
    let seen = atomically(|tx| {
        no_reruns(tx);
        tx.write(&outer, 1)?;
        for v in &many[..20] {
            tx.write(v, 100)?;
        }
        let r = tx.nested::<(), Refused>(|tx| {
            tx.write(&outer, 2)?; // shadows the enclosing write
            tx.write(&inner_only, 11)?;
            tx.write(&big, 7)?;
            // Enough writes to switch the log to its hash index, then back on rollback.
            for v in &many {
                tx.modify(v, |x| x + 1)?;
            }
            tx.abort(Refused)
        });
        assert!(matches!(r, Ok(Err(Refused))));
        let seen = (tx.read(&outer)?, tx.read(&inner_only)?, tx.read(&big)?);
        let firsts: Vec<u32> = many.iter().map(|v| tx.read(v)).collect::<StmResult<_>>()?;
        assert!(firsts[..20].iter().all(|&x| x == 100), "{firsts:?}");
        assert!(
            firsts[20..]
                .iter()
                .enumerate()
                .all(|(i, &x)| x == 20 + i as u32),
            "{firsts:?}"
        );
        // The enclosing body writes again after the rollback: to its own entry, and anew.
        tx.write(&outer, 3)?;
        tx.write(&inner_only, 12)?;
        Ok(seen)
    });
    assert_eq!(seen, (1, 10, 0));
    assert_eq!((outer.load(), inner_only.load(), big.load()), (3, 12, 0));
    assert_eq!(many[0].load(), 100);
    assert_eq!(many[30].load(), 30);
}

#[test]
fn an_aborted_part_drops_its_commit_hooks_and_settles_its_on_abort_hooks() {
    let v = TVar::new(0u32);
    let log = log();
    atomically(|tx| {
        no_reruns(tx);
        log.borrow_mut().clear();
        hooks(tx, &log, "before");
        let r = tx.nested::<(), Refused>(|tx| {
            hooks(tx, &log, "part");
            tx.write(&v, 1)?;
            hooks(tx, &log, "part late");
            tx.abort(Refused)
        })?;
        assert_eq!(r, Err(Refused));
        assert!(
            log.borrow().is_empty(),
            "a part's on_abort hooks run when the attempt ends, not inside the body"
        );
        hooks(tx, &log, "after");
        tx.write(&v, 2)
    });
    assert_eq!(v.load(), 2);
    assert_eq!(
        *log.borrow(),
        vec![
            "before on_commit",
            "after on_commit",
            // The part's on_abort hooks, LIFO, once the commit is visible...
            "part late on_abort Abort",
            "part on_abort Abort",
            // ...then the after_commit hooks of the rest of the attempt.
            "before after_commit",
            "after after_commit",
        ]
    );
}

#[test]
fn settled_hooks_keep_their_cause_when_the_attempt_is_abandoned() {
    let flag = TVar::new(false);
    let log = log();
    let setter = flag.clone();
    let runs = AtomicUsize::new(0);
    let r: Result<(), Other> = try_atomically(|tx| {
        no_reruns(tx);
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        hooks(tx, &log, &format!("outer {run}"));
        tx.nested::<(), Refused>(|tx| {
            hooks(tx, &log, &format!("part {run}"));
            tx.abort(Refused)
        })?
        .unwrap_err();
        hooks(tx, &log, &format!("late {run}"));
        if run == 1 {
            // Abandoned by a retry: the part's hook still says Abort.
            let setter = setter.clone();
            tx.on_abort(move |_| {
                thread::spawn(move || atomically(|tx| tx.write(&setter, true)));
            });
            if !tx.read(&flag)? {
                return retry();
            }
        }
        tx.abort(Other(run as u32))
    });
    assert_eq!(r, Err(Other(2)));
    assert_eq!(
        *log.borrow(),
        vec![
            "late 1 on_abort Retry",
            "part 1 on_abort Abort",
            "outer 1 on_abort Retry",
            "late 2 on_abort Abort",
            "part 2 on_abort Abort",
            "outer 2 on_abort Abort",
        ]
    );
}

#[test]
fn on_abort_hooks_of_a_rolled_back_part_may_start_transactions() {
    // They run outside the transaction, like every on_abort hook.
    let (v, audit) = (TVar::new(0u32), TVar::new(Vec::<&str>::new()));
    let a = audit.clone();
    atomically(|tx| {
        no_reruns(tx);
        let a = a.clone();
        tx.nested::<(), Refused>(move |tx| {
            tx.on_abort(move |cause| {
                assert_eq!(cause, AbortCause::Abort);
                atomically(|tx| {
                    tx.modify(&a, |mut l| {
                        l.push("compensated");
                        l
                    })
                });
            });
            tx.abort(Refused)
        })?
        .unwrap_err();
        tx.write(&v, 1)
    });
    assert_eq!((v.load(), audit.load()), (1, vec!["compensated"]));
}

#[test]
fn tvars_created_in_an_aborted_part_vanish() {
    // GHC #18453, PITFALLS 10: a TVar created and written in a rolled-back part must not be
    // published by the enclosing commit, and every value made in the part is freed.
    let drops = DropCounter::new();
    let (done_tx, done_rx) = mpsc::channel();
    let worker = {
        let drops = drops.clone();
        thread::spawn(move || {
            let registry: TVar<Vec<TVar<u32>>> = TVar::new(Vec::new());
            let kept = TVar::new(0u32);
            let escaped: RefCell<Option<TVar<u32>>> = RefCell::new(None);
            let outcome = atomically(|tx| {
                no_reruns(tx);
                tx.write(&kept, 1)?;
                let r = tx.nested::<(), Refused>(|tx| {
                    let fresh = TVar::new(1u32);
                    tx.write(&fresh, 2)?;
                    tx.modify(&registry, |mut r| {
                        r.push(fresh.clone());
                        r
                    })?;
                    let temp = TVar::new(drops.value(0));
                    tx.write(&temp, drops.value(1))?;
                    *escaped.borrow_mut() = Some(fresh);
                    tx.abort(Refused)
                })?;
                assert_eq!(
                    tx.read(&registry)?.len(),
                    0,
                    "the part's registration is visible"
                );
                Ok(r)
            });
            assert_eq!(outcome, Err(Refused));
            assert_eq!(kept.load(), 1);
            assert!(
                registry.load().is_empty(),
                "a TVar made in the part was published"
            );
            let fresh = escaped.borrow_mut().take().expect("the part ran");
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
    drops.assert_all_dropped("values of the rolled-back part");
}

#[test]
fn values_written_in_an_aborted_part_are_dropped_once() {
    let drops = DropCounter::new();
    {
        let v = TVar::new(drops.value(0));
        for round in 0..50u64 {
            atomically(|tx| {
                no_reruns(tx);
                tx.write(&v, drops.value(round))?;
                tx.nested::<(), Refused>(|tx| {
                    tx.write(&v, drops.value(1_000 + round))?;
                    tx.write(&v, drops.value(2_000 + round))?;
                    tx.abort(Refused)
                })?
                .unwrap_err();
                Ok(())
            });
            assert_eq!(v.load().id, round);
        }
    }
    drops.assert_all_dropped("values of rolled-back parts");
}

#[test]
fn an_abort_is_final_for_the_part_even_when_swallowed() {
    let (a, b) = (TVar::new(0u32), TVar::new(0u32));
    let after_abort = AtomicUsize::new(0);
    let r = atomically(|tx| {
        no_reruns(tx);
        tx.write(&a, 1)?;
        let inner = tx.nested::<u32, Refused>(|tx| {
            tx.write(&a, 2)?;
            // The signal is dropped: the part still cannot succeed.
            let _ = tx.abort::<(), _>(Refused);
            // Later operations of the part fail at once.
            assert!(tx.read(&b).is_err(), "a read after the abort succeeded");
            assert!(
                tx.write(&b, 9).is_err(),
                "a write after the abort succeeded"
            );
            after_abort.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        })?;
        // The enclosing body is not doomed by the part's abort: it reads and writes again.
        assert_eq!(tx.read(&a)?, 1);
        tx.write(&b, 5)?;
        Ok(inner)
    });
    assert_eq!(r, Err(Refused));
    assert_eq!(after_abort.load(Ordering::SeqCst), 1);
    assert_eq!((a.load(), b.load()), (1, 5));
}

#[test]
fn a_second_abort_in_the_part_keeps_the_first_error() {
    let r: Result<(), Refused> = atomically(|tx| {
        no_reruns(tx);
        tx.nested(|tx| {
            let _ = tx.abort::<(), _>(Refused);
            tx.abort(Other(1))
        })
    });
    assert_eq!(
        r,
        Err(Refused),
        "the second abort, of another type, replaced the first"
    );
}

#[test]
fn or_abort_inside_a_part_is_caught() {
    let port = TVar::new(8080u16);
    let set = |input: &'static str| {
        atomically(|tx| {
            no_reruns(tx);
            tx.nested::<(), std::num::ParseIntError>(|tx| {
                let p: u16 = input.parse().or_abort(tx)?;
                tx.write(&port, p)
            })
        })
    };
    assert!(set("80a").is_err());
    assert_eq!(port.load(), 8080);
    set("9090").unwrap();
    assert_eq!(port.load(), 9090);
}

#[test]
fn an_abort_of_another_type_propagates_unchanged() {
    let v = TVar::new(0u32);
    let part_ran_on = AtomicUsize::new(0);
    let r: Result<(), Other> = try_atomically(|tx| {
        no_reruns(tx);
        tx.write(&v, 1)?;
        let inner: Result<(), Refused> = tx.nested(|tx| {
            tx.write(&v, 2)?;
            tx.abort(Other(3))
        })?;
        part_ran_on.fetch_add(1, Ordering::SeqCst);
        unreachable!("an abort of another type came back as {inner:?}")
    });
    assert_eq!(r, Err(Other(3)));
    assert_eq!(part_ran_on.load(Ordering::SeqCst), 0);
    assert_eq!(
        v.load(),
        0,
        "nothing of an aborted transaction is published"
    );
}

#[test]
fn an_abort_of_another_type_is_final_for_the_enclosing_part_even_when_swallowed() {
    let v = TVar::new(0u32);
    let log = log();
    let r = atomically(|tx| {
        no_reruns(tx);
        log.borrow_mut().clear();
        tx.write(&v, 1)?;
        let outer: Result<u32, Other> = tx.nested(|tx| {
            hooks(tx, &log, "outer part");
            tx.write(&v, 2)?;
            // The inner part drops the signal of an abort it does not catch and returns Ok.
            let inner = tx.nested::<u32, Refused>(|tx| {
                hooks(tx, &log, "inner part");
                tx.write(&v, 3)?;
                let _ = tx.abort::<(), _>(Other(4));
                Ok(1)
            });
            assert!(
                matches!(&inner, Err(e) if e.is_abort()),
                "an abort of another type came back as a value"
            );
            // Swallowed again here: the enclosing part is still rolled back with Other(4).
            Ok(2)
        })?;
        Ok(outer)
    });
    assert_eq!(r, Err(Other(4)));
    assert_eq!(v.load(), 1);
    assert_eq!(
        *log.borrow(),
        vec!["inner part on_abort Abort", "outer part on_abort Abort"]
    );
}

#[test]
fn an_uncaught_abort_in_plain_atomically_panics_naming_try_atomically() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            no_reruns(tx);
            tx.nested::<(), Refused>(|tx| tx.abort(Other(1)))?
                .unwrap_err();
            Ok(())
        })
    }));
    let msg = panic_message(&*r.expect_err("an uncaught abort in atomically must panic"));
    assert!(
        msg.contains("try_atomically") && msg.contains("Other"),
        "unclear message: {msg}"
    );
}

#[test]
fn an_abort_before_the_part_is_not_caught_by_it() {
    // The attempt's own abort is final for the attempt: a later part of the same error type
    // does not undo it.
    let v = TVar::new(0u32);
    let r: Result<u32, Refused> = try_atomically(|tx| {
        no_reruns(tx);
        tx.write(&v, 1)?;
        let _ = tx.abort::<(), _>(Refused);
        let inner = tx.nested::<u32, Refused>(|_tx| Ok(5));
        assert!(matches!(inner, Ok(Ok(5))));
        Ok(1)
    });
    assert_eq!(r, Err(Refused));
    assert_eq!(v.load(), 0);
}

#[test]
fn parts_nest_with_the_same_and_with_different_error_types() {
    let v = TVar::new(Vec::<&str>::new());
    let push = |tx: &mut Txn, s: &'static str| {
        tx.modify(&v, |mut l| {
            l.push(s);
            l
        })
    };
    let r = atomically(|tx| {
        no_reruns(tx);
        push(tx, "top")?;
        // Same type, inner aborts: only the inner part is rolled back.
        let a = tx.nested::<(), Refused>(|tx| {
            push(tx, "a")?;
            let inner = tx.nested::<(), Refused>(|tx| {
                push(tx, "a.inner")?;
                tx.abort(Refused)
            })?;
            assert_eq!(inner, Err(Refused));
            push(tx, "a.after")
        })?;
        // Different types: the inner abort passes the inner part and is caught by the outer.
        let b = tx.nested::<(), Other>(|tx| {
            push(tx, "b")?;
            let inner: Result<(), Refused> = tx.nested(|tx| {
                push(tx, "b.inner")?;
                tx.abort(Other(2))
            })?;
            unreachable!("caught by the wrong part: {inner:?}")
        })?;
        // The outer part aborts after an inner part succeeded: both are rolled back.
        let c = tx.nested::<(), Refused>(|tx| {
            push(tx, "c")?;
            tx.nested::<(), Other>(|tx| push(tx, "c.inner"))?.unwrap();
            tx.abort(Refused)
        })?;
        Ok((a, b, c))
    });
    assert_eq!(r, (Ok(()), Err(Other(2)), Err(Refused)));
    assert_eq!(v.load(), vec!["top", "a", "a.after"]);
}

/// Level `level` of a chain of `depth` parts: it writes its level to `trail` and runs the next
/// level as a part of type `Refused` if that level is `catch_at`, else of type `Other`; the
/// innermost level aborts with `Refused`, which passes every `Other` part on its way out.
fn nest(
    tx: &mut Txn,
    trail: &TVar<Vec<usize>>,
    depth: usize,
    level: usize,
    catch_at: usize,
) -> StmResult<()> {
    tx.modify(trail, |mut t| {
        t.push(level);
        t
    })?;
    if level + 1 == depth {
        return tx.abort(Refused);
    }
    let next = |tx: &mut Txn| nest(tx, trail, depth, level + 1, catch_at);
    if level + 1 == catch_at {
        assert_eq!(tx.nested::<(), Refused>(next)?, Err(Refused));
    } else {
        let passed = tx.nested::<(), Other>(next)?;
        assert_eq!(passed, Ok(()), "an `Other` part caught a `Refused` abort");
    }
    Ok(())
}

#[test]
fn deep_nesting_rolls_back_exactly_to_the_catching_part() {
    const DEPTH: usize = 12;
    for catch_at in 1..DEPTH {
        let trail = TVar::new(Vec::new());
        atomically(|tx| {
            no_reruns(tx);
            nest(tx, &trail, DEPTH, 0, catch_at)
        });
        // Levels below the catching part keep their writes; it and all inside it are gone.
        let expected: Vec<usize> = (0..catch_at).collect();
        assert_eq!(trail.load(), expected, "caught at level {catch_at}");
    }
}

#[test]
fn deep_nesting_of_one_type_catches_at_the_innermost_part() {
    fn down(tx: &mut Txn, v: &TVar<u32>, level: u32) -> StmResult<u32> {
        tx.write(v, level)?;
        if level == 64 {
            return tx.abort(Refused);
        }
        match tx.nested::<u32, Refused>(|tx| down(tx, v, level + 1))? {
            Ok(deepest) => Ok(deepest),
            // Only the innermost part aborted: this level's write stands.
            Err(Refused) => Ok(level),
        }
    }
    let v = TVar::new(0u32);
    let deepest = atomically(|tx| {
        no_reruns(tx);
        down(tx, &v, 0)
    });
    assert_eq!(deepest, 63);
    assert_eq!(v.load(), 63);
}

#[test]
fn retry_inside_a_part_waits_for_the_whole_transaction() {
    let (gate, out) = (TVar::new(false), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (gate, out, runs) = (gate.clone(), out.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.write(&out, 1)?;
                let r = tx.nested::<u32, Refused>(|tx| {
                    tx.write(&out, 2)?;
                    if !tx.read(&gate)? {
                        return retry(); // not caught by `nested`: the whole transaction waits
                    }
                    Ok(3)
                })?;
                Ok(r)
            })
        })
    };
    wait_for_runs(&runs, 1);
    thread::sleep(QUIET);
    still_blocked(&rx, "a transaction whose part retried");
    assert_eq!(out.load(), 0, "a waiting transaction published its writes");
    atomically(|tx| tx.write(&gate, true));
    assert_eq!(finish(&rx, "retry inside nested"), Ok(3));
    assert_eq!(out.load(), 2);
}

#[test]
fn retry_waits_on_what_a_rolled_back_part_read() {
    // The part reads `gate` and aborts; the enclosing body then retries. Only the part read
    // `gate`, and the part was rolled back, but the body's path depended on it: a change to
    // `gate` alone must wake the transaction (as GHC keeps a caught part's reads).
    let (gate, unrelated) = (TVar::new(false), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (gate, unrelated, runs) = (gate.clone(), unrelated.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.read(&unrelated)?;
                let opened = tx.nested::<(), Refused>(|tx| {
                    if !tx.read(&gate)? {
                        return tx.abort(Refused);
                    }
                    Ok(())
                })?;
                match opened {
                    Ok(()) => Ok("opened"),
                    Err(Refused) => retry(),
                }
            })
        })
    };
    wait_for_runs(&runs, 1);
    thread::sleep(QUIET);
    still_blocked(&rx, "waiting for the gate");
    atomically(|tx| tx.write(&gate, true));
    assert_eq!(finish(&rx, "a wait on a rolled-back part's read"), "opened");
}

#[test]
fn retry_on_inside_a_part_waits_on_the_named_tvars() {
    let (named, other) = (TVar::new(0u32), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (named, other, runs) = (named.clone(), other.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.read(&other)?;
                tx.nested::<u32, Refused>(|tx| match tx.read(&named)? {
                    0 => tx.retry_on(&[&named]),
                    n => Ok(n),
                })
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&named, 4));
    assert_eq!(finish(&rx, "retry_on inside nested"), Ok(4));
}

#[test]
fn a_conflict_inside_a_part_restarts_the_whole_transaction() {
    let (read_first, out) = (TVar::new(0u32), TVar::new(0u32));
    let causes = Rc::new(RefCell::new(Vec::new()));
    let outer_runs = AtomicUsize::new(0);
    let result = atomically(|tx| {
        no_reruns(tx);
        outer_runs.fetch_add(1, Ordering::SeqCst);
        let c = causes.clone();
        tx.on_abort(move |cause| c.borrow_mut().push(cause));
        let seen = tx.read(&read_first)?;
        tx.write(&out, seen + 1)?;
        let attempt = tx.attempt();
        let inner = tx.nested::<u32, Refused>(|tx| {
            if attempt == 1 {
                // Another thread changes what this attempt already read.
                let rf = read_first.clone();
                thread::spawn(move || atomically(|tx| tx.write(&rf, 100)))
                    .join()
                    .unwrap();
                // Re-reading it cannot be consistent with the earlier read and write. The
                // part swallows the conflict and aborts: the conflict still wins.
                let conflict = tx.read(&read_first);
                assert!(matches!(&conflict, Err(e) if e.is_conflict()));
                return tx.abort(Refused);
            }
            Ok(attempt)
        })?;
        assert_ne!(attempt, 1, "the body went on after a conflict in its part");
        Ok(inner)
    });
    assert_eq!(
        result,
        Ok(2),
        "a doomed attempt committed, or only the part re-ran"
    );
    assert_eq!(outer_runs.load(Ordering::SeqCst), 2);
    assert_eq!(out.load(), 101);
    assert_eq!(*causes.borrow(), vec![AbortCause::Conflict]);
}

#[test]
fn a_panic_in_a_part_rolls_it_back_and_unwinds() {
    let v = TVar::new(0u32);
    let log = log();
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            no_reruns(tx);
            hooks(tx, &log, "outer");
            tx.write(&v, 1)?;
            tx.nested::<(), Refused>(|tx| {
                hooks(tx, &log, "part");
                tx.write(&v, 2)?;
                panic!("boom in the part")
            })?
            .unwrap();
            Ok(())
        })
    }));
    let p = r.expect_err("the panic must propagate");
    assert_eq!(panic_message(&*p), "boom in the part");
    assert_eq!(v.load(), 0);
    assert_eq!(
        *log.borrow(),
        vec!["part on_abort Panic", "outer on_abort Panic"]
    );
    // The thread is usable afterwards.
    atomically(|tx| tx.write(&v, 3));
    assert_eq!(v.load(), 3);
}

#[test]
fn a_panic_caught_by_the_body_leaves_the_part_rolled_back() {
    let (v, w) = (TVar::new(0u32), TVar::new(0u32));
    let log = log();
    atomically(|tx| {
        no_reruns(tx);
        log.borrow_mut().clear();
        tx.write(&v, 1)?;
        let caught = catch_unwind(AssertUnwindSafe(|| {
            tx.nested::<(), Refused>(|tx| {
                hooks(tx, &log, "part");
                tx.write(&v, 2)?;
                tx.write(&w, 2)?;
                let _ = tx.abort::<(), _>(Refused); // rolled back with the part
                panic!("caught inside the body")
            })
        }));
        assert!(caught.is_err());
        assert_eq!((tx.read(&v)?, tx.read(&w)?), (1, 0));
        tx.write(&w, 3)
    });
    assert_eq!((v.load(), w.load()), (1, 3));
    assert_eq!(*log.borrow(), vec!["part on_abort Panic"]);
}

#[test]
fn a_read_only_transaction_with_an_aborted_part_commits() {
    let v = TVar::new(5u32);
    let r = atomically(|tx| {
        no_reruns(tx);
        let seen = tx.read(&v)?;
        let inner = tx.nested::<(), Refused>(|tx| {
            tx.write(&v, 6)?;
            tx.abort(Refused)
        })?;
        Ok((seen, inner))
    });
    assert_eq!(r, (5, Err(Refused)));
    assert_eq!(v.load(), 5);
}

#[test]
fn nested_inside_an_or_else_branch() {
    let (v, w) = (TVar::new(0u32), TVar::new(0u32));
    let log = log();
    // The part aborts and the branch goes on; then the branch retries: the part's settled
    // hooks go with the branch, and the second branch runs.
    let r = atomically(|tx| {
        no_reruns(tx);
        log.borrow_mut().clear();
        tx.or_else(
            |tx| {
                tx.write(&v, 1)?;
                let r = tx.nested::<(), Refused>(|tx| {
                    hooks(tx, &log, "part in first");
                    tx.write(&w, 1)?;
                    tx.abort(Refused)
                })?;
                assert_eq!(r, Err(Refused));
                retry()
            },
            |tx| {
                let r = tx.nested::<&str, Refused>(|tx| {
                    hooks(tx, &log, "part in second");
                    tx.write(&w, 2)?;
                    Ok("second")
                })?;
                Ok(r.unwrap())
            },
        )
    });
    assert_eq!(r, "second");
    assert_eq!((v.load(), w.load()), (0, 2));
    assert_eq!(
        *log.borrow(),
        vec!["part in second on_commit", "part in second after_commit"]
    );
}

#[test]
fn or_else_inside_a_part() {
    let (a, b) = (TVar::new(0i64), TVar::new(0i64));
    fn take(tx: &mut Txn, acc: &TVar<i64>, n: i64) -> StmResult<i64> {
        let bal = tx.read(acc)?;
        if bal < n {
            return retry();
        }
        tx.write(acc, bal - n)?;
        Ok(bal - n)
    }
    // Both alternatives retry inside the part: the retry passes `nested` and the whole
    // transaction waits. Here the enclosing or_else catches it instead.
    let r = atomically(|tx| {
        no_reruns(tx);
        tx.or_else(
            |tx| {
                tx.nested::<i64, Refused>(|tx| {
                    tx.or_else(|tx| take(tx, &a, 1), |tx| take(tx, &b, 1))
                })
            },
            |_tx| Ok(Ok(-1)),
        )
    });
    assert_eq!(r, Ok(-1));
    // The second alternative aborts: the whole part goes, the first alternative's writes too.
    atomically(|tx| tx.write(&a, 10));
    let r = atomically(|tx| {
        no_reruns(tx);
        tx.write(&b, 5)?;
        tx.nested::<i64, Refused>(|tx| {
            tx.write(&a, 9)?;
            tx.or_else(
                |tx| {
                    tx.write(&a, 8)?;
                    retry()
                },
                |tx| {
                    tx.write(&b, 4)?;
                    tx.abort(Refused)
                },
            )
        })
    });
    assert_eq!(r, Err(Refused));
    assert_eq!((a.load(), b.load()), (10, 5));
}

#[test]
fn an_abort_in_an_or_else_branch_inside_a_part_is_caught_by_the_part() {
    let v = TVar::new(0u32);
    let second_ran = AtomicUsize::new(0);
    let r = atomically(|tx| {
        no_reruns(tx);
        tx.write(&v, 1)?;
        let inner = tx.nested::<(), Refused>(|tx| {
            tx.or_else(
                |tx| {
                    tx.write(&v, 2)?;
                    tx.abort(Refused) // does not fall through to the second branch
                },
                |_tx| {
                    second_ran.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            )
        })?;
        tx.modify(&v, |x| x + 10)?;
        Ok(inner)
    });
    assert_eq!(r, Err(Refused));
    assert_eq!(second_ran.load(Ordering::SeqCst), 0);
    assert_eq!(v.load(), 11);
}

#[test]
fn a_timeout_ends_a_call_whose_part_retries() {
    // ScalaSTM's "nested global withRetryTimeout": three parts deep, the innermost retries.
    let empty = TVar::new(0u32);
    let r = atomically_timeout(Duration::from_millis(30), |tx| {
        tx.nested::<u32, Refused>(|tx| {
            let inner = tx.nested::<u32, Other>(|tx| {
                let innermost = tx.nested::<u32, Refused>(|tx| match tx.read(&empty)? {
                    0 => retry(),
                    n => Ok(n),
                })?;
                Ok(innermost.expect("nothing aborts"))
            })?;
            Ok(inner.expect("nothing aborts"))
        })
    });
    assert_eq!(r, Err(TimedOut));
}

// ---- Random programs against a sequential model ----

/// An abort error of kind `K`: two distinct types, so the model can check which part catches.
#[derive(Debug, PartialEq)]
struct Fail<const K: u8>;

const VARS: usize = 4;
/// Pushed to the read log when a part of kind `k` catches an abort: `CAUGHT + k`.
const CAUGHT: i64 = 1_000_000;
/// Pushed to the read log when a retry escapes every part and the outer `or_else` catches it.
const RETRIED: i64 = 2_000_000;

#[derive(Debug, Clone)]
enum Op {
    Read(usize),
    Write(usize, i64),
    Add(usize, i64),
    /// Registers an `on_commit`, an `after_commit` and an `on_abort` hook tagged `id`.
    Hooks(u32),
    /// `return tx.abort(Fail::<k>)`.
    Abort(u8),
    /// `let _ = tx.abort::<(), _>(Fail::<k>);` and go on.
    Swallow(u8),
    /// `return retry()`.
    Retry,
    OrElse {
        first: Vec<Op>,
        first_retries: bool,
        second: Vec<Op>,
    },
    Nested {
        catches: u8,
        body: Vec<Op>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let leaf = prop_oneof![
        3 => (0..VARS).prop_map(Op::Read),
        3 => (0..VARS, -50i64..50).prop_map(|(v, x)| Op::Write(v, x)),
        3 => (0..VARS, -5i64..5).prop_map(|(v, x)| Op::Add(v, x)),
        2 => (0u32..1000).prop_map(Op::Hooks),
        1 => (0u8..2).prop_map(Op::Abort),
        1 => (0u8..2).prop_map(Op::Swallow),
        1 => Just(Op::Retry),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            (
                prop::collection::vec(inner.clone(), 0..5),
                any::<bool>(),
                prop::collection::vec(inner.clone(), 0..5),
            )
                .prop_map(|(first, first_retries, second)| Op::OrElse {
                    first,
                    first_retries,
                    second,
                }),
            (0u8..2, prop::collection::vec(inner, 0..6))
                .prop_map(|(catches, body)| Op::Nested { catches, body }),
        ]
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    OnCommit(u32),
    AfterCommit(u32),
    OnAbort(u32, AbortCause),
}

type EventLog = Rc<RefCell<Vec<Event>>>;

fn abort_with<T>(tx: &mut Txn, kind: u8) -> StmResult<T> {
    if kind == 0 {
        tx.abort(Fail::<0>)
    } else {
        tx.abort(Fail::<1>)
    }
}

fn run_stm(
    tx: &mut Txn,
    vars: &[TVar<i64>],
    ops: &[Op],
    reads: &mut Vec<i64>,
    log: &EventLog,
) -> StmResult<()> {
    for op in ops {
        match op {
            Op::Read(v) => reads.push(tx.read(&vars[*v])?),
            Op::Write(v, x) => tx.write(&vars[*v], *x)?,
            Op::Add(v, x) => tx.modify(&vars[*v], |old| old + x)?,
            Op::Hooks(id) => {
                let id = *id;
                let (a, b, c) = (log.clone(), log.clone(), log.clone());
                tx.on_commit(move || a.borrow_mut().push(Event::OnCommit(id)));
                tx.after_commit(move || b.borrow_mut().push(Event::AfterCommit(id)));
                tx.on_abort(move |cause| c.borrow_mut().push(Event::OnAbort(id, cause)));
            }
            Op::Abort(k) => return abort_with(tx, *k),
            Op::Swallow(k) => {
                let _ = abort_with::<()>(tx, *k);
            }
            Op::Retry => return retry(),
            Op::OrElse {
                first,
                first_retries,
                second,
            } => {
                let shared = RefCell::new(std::mem::take(reads));
                let r = tx.or_else(
                    |tx| {
                        run_stm(tx, vars, first, &mut shared.borrow_mut(), log)?;
                        if *first_retries {
                            return retry();
                        }
                        Ok(())
                    },
                    |tx| run_stm(tx, vars, second, &mut shared.borrow_mut(), log),
                );
                *reads = shared.into_inner();
                r?;
            }
            Op::Nested { catches, body } => {
                let caught = if *catches == 0 {
                    tx.nested::<_, Fail<0>>(|tx| run_stm(tx, vars, body, reads, log))?
                        .is_err()
                } else {
                    tx.nested::<_, Fail<1>>(|tx| run_stm(tx, vars, body, reads, log))?
                        .is_err()
                };
                if caught {
                    reads.push(CAUGHT + i64::from(*catches));
                }
            }
        }
    }
    Ok(())
}

/// How a model scope ended early.
#[derive(Debug, PartialEq)]
enum Signal {
    Retry,
    /// `tx.abort`: the kind is in `Model::aborted`.
    Abort,
    /// A read or write after a swallowed abort.
    Failed,
}

#[derive(Default)]
struct ModelHooks {
    on_commit: Vec<u32>,
    after_commit: Vec<u32>,
    /// With the cause a rolled-back part settled it with.
    on_abort: Vec<(u32, Option<AbortCause>)>,
}

#[derive(Default)]
struct Model {
    state: Vec<i64>,
    reads: Vec<i64>,
    hooks: ModelHooks,
    aborted: Option<u8>,
}

impl Model {
    fn marks(&self) -> (Vec<i64>, usize, usize, usize) {
        (
            self.state.clone(),
            self.hooks.on_commit.len(),
            self.hooks.after_commit.len(),
            self.hooks.on_abort.len(),
        )
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), Signal> {
        for op in ops {
            match op {
                Op::Read(v) => {
                    if self.aborted.is_some() {
                        return Err(Signal::Failed);
                    }
                    self.reads.push(self.state[*v]);
                }
                Op::Write(v, x) => {
                    if self.aborted.is_some() {
                        return Err(Signal::Failed);
                    }
                    self.state[*v] = *x;
                }
                Op::Add(v, x) => {
                    if self.aborted.is_some() {
                        return Err(Signal::Failed);
                    }
                    self.state[*v] += x;
                }
                Op::Hooks(id) => {
                    self.hooks.on_commit.push(*id);
                    self.hooks.after_commit.push(*id);
                    self.hooks.on_abort.push((*id, None));
                }
                Op::Abort(k) => {
                    self.aborted.get_or_insert(*k);
                    return Err(Signal::Abort);
                }
                Op::Swallow(k) => {
                    self.aborted.get_or_insert(*k);
                }
                Op::Retry => return Err(Signal::Retry),
                Op::OrElse {
                    first,
                    first_retries,
                    second,
                } => {
                    let (saved, c, a, o) = self.marks();
                    let mut r = self.run(first);
                    if r.is_ok() && *first_retries {
                        r = Err(Signal::Retry);
                    }
                    match r {
                        Err(Signal::Retry) => {
                            self.state = saved;
                            self.hooks.on_commit.truncate(c);
                            self.hooks.after_commit.truncate(a);
                            self.hooks.on_abort.truncate(o);
                            self.run(second)?;
                        }
                        other => other?,
                    }
                }
                Op::Nested { catches, body } => {
                    let (saved, c, a, o) = self.marks();
                    let aborted_before = self.aborted.is_some();
                    let r = self.run(body);
                    if aborted_before || self.aborted.is_none() {
                        r?;
                    } else if self.aborted == Some(*catches) {
                        self.aborted = None;
                        self.state = saved;
                        self.hooks.on_commit.truncate(c);
                        self.hooks.after_commit.truncate(a);
                        for (_, cause) in &mut self.hooks.on_abort[o..] {
                            cause.get_or_insert(AbortCause::Abort);
                        }
                        self.reads.push(CAUGHT + i64::from(*catches));
                    } else {
                        return Err(Signal::Abort);
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
struct Top;

/// The whole program of one transaction: inside parts of both kinds (so no abort escapes), inside
/// an `or_else` whose second branch notes that a retry escaped (so nothing blocks).
fn whole(ops: &[Op]) -> Vec<Op> {
    vec![Op::Nested {
        catches: 1,
        body: vec![Op::Nested {
            catches: 0,
            body: ops.to_vec(),
        }],
    }]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn programs_with_nested_parts_match_the_model(
        txns in prop::collection::vec(
            (prop::collection::vec(op(), 0..10), prop::bool::weighted(0.8)),
            1..6,
        )
    ) {
        let vars: Vec<TVar<i64>> = (0..VARS).map(|i| TVar::new(i as i64)).collect();
        let mut committed: Vec<i64> = (0..VARS as i64).collect();
        for (ops, commits) in &txns {
            let program = whole(ops);
            // mvstm
            let log: EventLog = Rc::new(RefCell::new(Vec::new()));
            let reads = RefCell::new(Vec::new());
            let result: Result<(), Top> = try_atomically(|tx| {
                no_reruns(tx);
                reads.borrow_mut().clear();
                let retried = tx.or_else(
                    |tx| {
                        run_stm(tx, &vars, &program, &mut reads.borrow_mut(), &log)?;
                        Ok(false)
                    },
                    |_tx| Ok(true),
                )?;
                if retried {
                    reads.borrow_mut().push(RETRIED);
                }
                if *commits { Ok(()) } else { tx.abort(Top) }
            });
            // model
            let mut m = Model { state: committed.clone(), ..Model::default() };
            let (saved, c, a, o) = m.marks();
            match m.run(&program) {
                Ok(()) => {}
                Err(Signal::Retry) => {
                    m.state = saved;
                    m.hooks.on_commit.truncate(c);
                    m.hooks.after_commit.truncate(a);
                    m.hooks.on_abort.truncate(o);
                    m.reads.push(RETRIED);
                }
                Err(other) => panic!("the model let {other:?} escape every part"),
            }
            let expected: Vec<Event> = if *commits {
                committed = m.state.clone();
                let settled = m.hooks.on_abort.iter().rev()
                    .filter_map(|&(id, cause)| Some(Event::OnAbort(id, cause?)));
                m.hooks.on_commit.iter().map(|&id| Event::OnCommit(id))
                    .chain(settled)
                    .chain(m.hooks.after_commit.iter().map(|&id| Event::AfterCommit(id)))
                    .collect()
            } else {
                m.hooks.on_abort.iter().rev()
                    .map(|&(id, cause)| Event::OnAbort(id, cause.unwrap_or(AbortCause::Abort)))
                    .collect()
            };
            prop_assert_eq!(result.is_ok(), *commits);
            prop_assert_eq!(&*reads.borrow(), &m.reads);
            prop_assert_eq!(&*log.borrow(), &expected);
            let state: Vec<i64> = vars.iter().map(TVar::load).collect();
            prop_assert_eq!(&state, &committed);
        }
    }
}
