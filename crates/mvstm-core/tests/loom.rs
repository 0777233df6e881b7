//! Loom models of the whole engine, run through its public API (`atomically`, `TVar`, `retry`).
//!
//! Built only with `RUSTFLAGS="--cfg loom --cfg crossbeam_loom"`: then every atomic, lock,
//! thread-local and park of the engine (`src/sync.rs`) and of crossbeam-epoch is loom's, and
//! loom runs each model in every interleaving up to its preemption bound
//! (`LOOM_MAX_PREEMPTIONS`, 2 unless set). Run them with `scripts/loom.sh [bound]`; see
//! `docs/loom.md`.
//!
//! | model | threads | asserts |
//! |---|---|---|
//! | `commit_vs_commit_on_one_tvar` | 2 | two increments give 2 and read different values |
//! | `no_write_skew_between_two_updates` | 2 | two "claim if both free" updates never both claim |
//! | `snapshot_read_sees_all_or_nothing_of_a_commit` | 2 | a reader of two TVars written together sees (0, 0) or (1, 1) |
//! | `a_reader_floors_an_undecided_commit_and_the_writer_restamps` | 2 | a reader that meets a version whose commit is undecided counts it as newer without waiting, the writer then takes a larger stamp; the reader sees all or nothing, and sees the commit once it knows it is done |
//! | `snapshot_read_vs_two_writers` | 3 | the same with two writers (bound capped at 1) |
//! | `retry_registration_vs_committing_writer` | 2 | a `retry` waiter is always woken (loom reports a waiter parked for good as a deadlock) |
//! | `reclamation_vs_reader_holding_an_old_snapshot` | 2 | a reader's two reads return one version while a writer overwrites and frees; no value is freed under a reader or dropped twice |
//! | `retry_until_vs_writer_during_the_predicate` | 2 | a `retry_until` waiter whose predicate saw 1 while 2 was committed still wakes |
//! | `retry_all_wakes_once_both_changed` | 2 | `retry_all` re-runs the body only once both variables changed |
//! | `retry_on_wakes_on_a_variable_it_did_not_read` | 2 | `retry_on` of a variable not read waits from the snapshot and is woken |
//! | `retry_for_wakes_on_a_change` | 2 | `retry_for` waits like `retry` and a commit wakes it |
//! | `or_else_rolls_back_a_branch_and_waits_on_the_union` | 2 | a retried branch's write is invisible to the other branch; the wait covers both branches' reads |
//! | `an_on_commit_hold_keeps_writers_out` | 2 | a held read does not change while `on_commit` runs |
//! | `an_on_commit_hold_is_shared_with_other_readers` | 2 | a committer that only reads a held variable never conflicts |
//! | `the_priority_token_is_taken_and_given_back` | 3 | the starving transaction takes the token, commits, and a committer started meanwhile passes the gate |
//! | `a_swallowed_abort_never_commits` | 2 | a body that drops its abort signal does not commit |
//! | `tbqueue_of_one_hands_over_two_items_in_order` | 2 | a `TBQueue` of capacity 1 hands two items over in order, blocking both sides (bound capped at 1) |
//! | `async_retry_registration_vs_committing_writer` | 2 | an `atomically_async` task that retried either saw the commit or was woken, and completes on the next poll |
//! | `async_wait_dropped_vs_committing_writer` | 2 | dropping a waiting task's future while a writer wakes its waiters: no wake-up after the drop returned, no entry left |
//!
//! Each model prints how many executions loom explored, and how many of them reached the case
//! the model is about (a conflict, a blocked waiter, trims under a snapshot), and fails if none
//! did: a model that stopped reaching its case would check nothing.
//!
//! Model threads are started with [`spawn`], which frees the thread's cached transaction
//! objects at its end, and the test binary's allocator never hands out an address twice within
//! one execution ([`NoReuse`]): both keep the steps of an execution a function of its schedule,
//! which loom needs. Bookkeeping that is not part of the model (drop counts, execution counts)
//! uses std atomics: loom runs one execution at a time, in one OS thread, so they observe the
//! execution's real order of events without adding steps to explore.

#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::thread;
use mvstm_core::{atomically, retry, TVar};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Instant;

/// What a model reports besides passing: how many executions reached the case it is about
/// (`Stats::reached`), and how many a second case (`Stats::also`), if it has one. A model fails
/// if no execution reached its case: it would be checking nothing.
struct Cases {
    reached: &'static str,
    also: Option<&'static str>,
    /// A cap on the preemption bound, for a model too large for the bound asked.
    max_bound: Option<usize>,
}

/// Check `f` in every interleaving loom explores at the preemption bound of
/// `LOOM_MAX_PREEMPTIONS` (2 unless set, capped by `Cases::max_bound`); print how many
/// executions, how long, and the cases.
fn model<F>(name: &str, cases: Cases, f: F)
where
    F: Fn(&Arc<Stats>) + Sync + Send + 'static,
{
    let stats = Arc::new(Stats::default());
    let mut builder = loom::model::Builder::new();
    let asked = builder.preemption_bound.unwrap_or(2);
    let bound = cases.max_bound.map_or(asked, |max| asked.min(max));
    builder.preemption_bound = Some(bound);
    let start = Instant::now();
    let s = stats.clone();
    builder.check(move || {
        NoReuse::begin_execution();
        let execution = s.executions.fetch_add(1, SeqCst) + 1;
        // Names the failing execution when the model panics on this thread.
        struct Report(usize);
        impl Drop for Report {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    eprintln!("loom: failed in execution {}", self.0);
                }
            }
        }
        let _report = Report(execution);
        s.reached_now.store(false, SeqCst);
        s.also_now.store(false, SeqCst);
        f(&s);
        mvstm_core::loom_release_thread();
        if s.reached_now.load(SeqCst) {
            s.reached.fetch_add(1, SeqCst);
        }
        if s.also_now.load(SeqCst) {
            s.also.fetch_add(1, SeqCst);
        }
    });
    NoReuse::end_model();
    let executions = stats.executions.load(SeqCst);
    let reached = stats.reached.load(SeqCst);
    let also = match cases.also {
        Some(case) => format!(", {} {case}", stats.also.load(SeqCst)),
        None => String::new(),
    };
    println!(
        "loom model {name}: {executions} executions at preemption bound {bound} in {:.1?}; \
         {reached} {}{also}",
        start.elapsed(),
        cases.reached,
    );
    assert!(reached > 0, "model {name}: no execution {}", cases.reached);
    assert_eq!(
        stats.logs_complete.load(SeqCst),
        stats.logs.load(SeqCst),
        "model {name}: an execution ended with a value leaked or dropped twice"
    );
}

/// The test binary's allocator: the system's, except that a block a model frees is kept until
/// the next execution of the model begins, so no address is handed out twice in one execution.
///
/// Loom replays the start of an execution from the choices it recorded for the previous one, so
/// a model must take the same steps for the same choices. crossbeam-epoch compares pointers
/// (the CAS that pushes onto its list of participants, its queue of garbage bags): when a load
/// returns an old pointer, whether it equals the current one depends on whether the allocator
/// reused that address for a newer object, which changes from one execution to the next, and
/// loom stops with "Reached unexpected exploration state. Is the model fully deterministic?".
/// (The case seen, the CAS that pushes a new participant onto crossbeam's list, is benign in a
/// real run: a pointer equal to the head there is the head. The engine itself orders variables
/// by creation number under loom, never by address.)
struct NoReuse;

/// A block held back; written over the block's first bytes (blocks are padded to hold it).
#[repr(C)]
struct Held {
    next: *mut Held,
    size: usize,
    align: usize,
}

std::thread_local! {
    /// Blocks freed on this thread during the current execution (loom runs a model's threads as
    /// coroutines on the test's thread), and whether a model is running on it.
    static HELD: Cell<*mut Held> = const { Cell::new(ptr::null_mut()) };
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

impl NoReuse {
    fn padded(layout: Layout) -> Layout {
        let size = layout.size().max(std::mem::size_of::<Held>());
        let align = layout.align().max(std::mem::align_of::<Held>());
        Layout::from_size_align(size, align).expect("padded layout")
    }

    /// Free what the previous execution held back and hold back from now on.
    fn begin_execution() {
        Self::release();
        HOLDING.with(|h| h.set(true));
    }

    /// Free what the last execution held back and stop holding back.
    fn end_model() {
        HOLDING.with(|h| h.set(false));
        Self::release();
    }

    fn release() {
        let mut cur = HELD.with(|h| h.replace(ptr::null_mut()));
        while !cur.is_null() {
            // SAFETY: every held block starts with the `Held` that `dealloc` wrote, and was
            // allocated by `System` with that size and alignment.
            unsafe {
                let Held { next, size, align } = cur.read();
                System.dealloc(cur.cast(), Layout::from_size_align_unchecked(size, align));
                cur = next;
            }
        }
    }
}

// SAFETY: every block comes from `System` with the padded layout, and goes back to it with the
// same padded layout, at once or when the next execution begins.
unsafe impl GlobalAlloc for NoReuse {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the padded layout has a non-zero size.
        unsafe { System.alloc(Self::padded(layout)) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let layout = Self::padded(layout);
        if HOLDING.with(Cell::get) {
            let held = block.cast::<Held>();
            // SAFETY: the block is ours now and padded to hold a `Held`, suitably aligned.
            unsafe {
                held.write(Held {
                    next: HELD.with(Cell::get),
                    size: layout.size(),
                    align: layout.align(),
                })
            };
            HELD.with(|h| h.set(held));
        } else {
            // SAFETY: allocated by `System` with this layout.
            unsafe { System.dealloc(block, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: NoReuse = NoReuse;

/// `loom::thread::spawn` for model threads: the thread frees its cached transaction objects
/// last (see `mvstm_core::loom_release_thread`), so the model stays deterministic.
fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        let result = f();
        mvstm_core::loom_release_thread();
        result
    })
}

#[derive(Default)]
struct Stats {
    executions: AtomicUsize,
    reached: AtomicUsize,
    also: AtomicUsize,
    /// Set by an execution that reached the case modelled, or the second case.
    reached_now: AtomicBool,
    also_now: AtomicBool,
    /// `Log`s made, and those that saw every value dropped exactly once when they went.
    logs: AtomicUsize,
    logs_complete: AtomicUsize,
}

impl Stats {
    fn reached(&self) {
        self.reached_now.store(true, SeqCst);
    }

    fn also(&self) {
        self.also_now.store(true, SeqCst);
    }
}

/// Two transactions increment one TVar: the result is 2 in every interleaving, and the two
/// read different values (no lost update; serializable).
#[test]
fn commit_vs_commit_on_one_tvar() {
    let cases = Cases {
        reached: "had a conflict (an attempt ran again)",
        also: None,
        max_bound: None,
    };
    model("commit_vs_commit_on_one_tvar", cases, |stats| {
        let v = TVar::new(0u64);
        let increment = |v: &TVar<u64>| {
            atomically(|tx| {
                let seen = tx.read(v)?;
                tx.write(v, seen + 1)?;
                Ok((seen, tx.attempt()))
            })
        };
        let other = v.clone();
        let t = spawn(move || increment(&other));
        let (mine, my_attempts) = increment(&v);
        let (theirs, their_attempts) = t.join().unwrap();
        assert_eq!(v.load(), 2);
        assert_ne!(mine, theirs, "both increments read the same value");
        if my_attempts > 1 || their_attempts > 1 {
            stats.reached(); // a conflict made one of them run again
        }
    });
}

/// Write skew: each transaction reads both TVars and, if both are 0, sets its own to 1. Run
/// one after the other, the second sees the first's write and does nothing; snapshot isolation
/// alone would let both commit. Update transactions validate their reads after taking their
/// stamp (TL2's order), so never both write.
#[test]
fn no_write_skew_between_two_updates() {
    let cases = Cases {
        reached: "had a conflict (an attempt ran again)",
        also: None,
        max_bound: None,
    };
    model("no_write_skew_between_two_updates", cases, |stats| {
        let x = TVar::new(0u64);
        let y = TVar::new(0u64);
        let claim = |mine: &TVar<u64>, other: &TVar<u64>| {
            atomically(|tx| {
                if tx.read(mine)? + tx.read(other)? == 0 {
                    tx.write(mine, 1)?;
                }
                Ok(tx.attempt())
            })
        };
        let (x2, y2) = (x.clone(), y.clone());
        let t = spawn(move || claim(&y2, &x2));
        let mine = claim(&x, &y);
        let theirs = t.join().unwrap();
        assert_eq!(
            x.load() + y.load(),
            1,
            "write skew: both claimed, or neither"
        );
        if mine > 1 || theirs > 1 {
            stats.reached();
        }
    });
}

/// A writer sets two TVars in one transaction while a read-only transaction reads both: the
/// reader sees all of the commit or nothing of it. The values are `Tracked`, so loom also checks
/// that a version a reader clones was published to it (happens-before) and not freed under it.
#[test]
fn snapshot_read_sees_all_or_nothing_of_a_commit() {
    let cases = Cases {
        reached: "saw the commit (the others saw none of it)",
        also: None,
        max_bound: None,
    };
    model(
        "snapshot_read_sees_all_or_nothing_of_a_commit",
        cases,
        |stats| {
            let log = Log::new(stats);
            let a = TVar::new(log.value(0));
            let b = TVar::new(log.value(0));
            let (wa, wb, wlog) = (a.clone(), b.clone(), log.clone());
            let writer = spawn(move || {
                atomically(|tx| {
                    tx.write(&wa, wlog.value(1))?;
                    tx.write(&wb, wlog.value(1))
                })
            });
            let (x, y) = atomically(|tx| Ok((tx.read(&a)?.get(), tx.read(&b)?.get())));
            writer.join().unwrap();
            assert_eq!(x, y, "a snapshot saw half of a commit");
            if x == 1 {
                stats.reached();
            }
            assert_eq!((a.load().get(), b.load().get()), (1, 1));
        },
    );
}

/// The commit protocol has no publication order (`clock.rs`): a writer links its versions
/// pending, then takes its stamp and decides its commit record. A reader that meets a pending
/// version whose commit is undecided raises the record's floor to its snapshot and reads the
/// older version, without waiting; the writer, finding a floor at or above its stamp, takes a
/// new one. Checks: the reader sees all of the commit or none of it; a reader that knows the
/// commit is done (it saw the writer's flag, set after `atomically` returned) sees it; the writer
/// always commits; loom's `Tracked` values check that nothing read was freed or unpublished.
#[test]
fn a_reader_floors_an_undecided_commit_and_the_writer_restamps() {
    let cases = Cases {
        reached: "a reader floored an undecided commit",
        also: Some("the writer took a new stamp above the floor"),
        max_bound: None,
    };
    model(
        "a_reader_floors_an_undecided_commit_and_the_writer_restamps",
        cases,
        |stats| {
            let log = Log::new(stats);
            let a = TVar::new(log.value(0));
            let b = TVar::new(log.value(0));
            let done = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let (before_floors, before_restamps) = mvstm_core::loom_floor_counts();
            // The reader is the spawned thread and the writer the main one, which joins the
            // reader at the end: so a reader that floors the commit between the writer's stamp
            // and its decision, and reads on after the decision, is two preemptions away.
            let (ra, rb, rdone) = (a.clone(), b.clone(), done.clone());
            let reader = spawn(move || {
                let knew_done = rdone.load(loom::sync::atomic::Ordering::Acquire);
                let seen = atomically(|tx| Ok((tx.read(&ra)?.get(), tx.read(&rb)?.get())));
                (knew_done, seen)
            });
            atomically(|tx| {
                tx.write(&a, log.value(1))?;
                tx.write(&b, log.value(1))
            });
            done.store(true, loom::sync::atomic::Ordering::Release);
            let (knew_done, (x, y)) = reader.join().unwrap();
            assert_eq!(x, y, "a snapshot saw half of a commit");
            if knew_done {
                assert_eq!(
                    x, 1,
                    "a transaction begun after a commit returned did not see it"
                );
            }
            let (floors, restamps) = mvstm_core::loom_floor_counts();
            if floors > before_floors {
                stats.reached();
            }
            if restamps > before_restamps {
                stats.also();
            }
            assert_eq!((a.load().get(), b.load().get()), (1, 1));
        },
    );
}

/// Three threads: two writers each set two TVars in one transaction (to 1 and 1, to 2 and 2)
/// while a read-only transaction reads both. The reader sees all of a commit or nothing of it,
/// and the writers, which lock the pair in one order and validate, leave it equal. Capped at
/// preemption bound 1: at bound 2 it did not finish in 20 minutes on the CI machine kind.
#[test]
fn snapshot_read_vs_two_writers() {
    let cases = Cases {
        reached: "saw a commit (the others saw none)",
        also: None,
        max_bound: Some(1),
    };
    model("snapshot_read_vs_two_writers", cases, |stats| {
        let log = Log::new(stats);
        let a = TVar::new(log.value(0));
        let b = TVar::new(log.value(0));
        let writers: Vec<_> = (1..=2)
            .map(|value| {
                let (a, b, log) = (a.clone(), b.clone(), log.clone());
                spawn(move || {
                    atomically(|tx| {
                        tx.write(&a, log.value(value))?;
                        tx.write(&b, log.value(value))
                    })
                })
            })
            .collect();
        let (x, y) = atomically(|tx| Ok((tx.read(&a)?.get(), tx.read(&b)?.get())));
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(x, y, "a snapshot saw half of a commit");
        if x != 0 {
            stats.reached();
        }
        let (x, y) = (a.load().get(), b.load().get());
        assert!(x == y && x != 0, "the writers left ({x}, {y})");
    });
}

/// A waiter on another thread `retry`s until a flag is set; `set` sets it on this thread. Returns
/// the waiter's attempts once it is done: if it parked for good, loom reports the deadlock (this
/// thread joins it).
fn attempts_of_a_waiter_woken_by(set: impl FnOnce(&TVar<bool>)) -> u32 {
    let flag = TVar::new(false);
    let waited = flag.clone();
    let waiter = spawn(move || {
        atomically(|tx| {
            if !tx.read(&waited)? {
                return retry();
            }
            Ok(tx.attempt())
        })
    });
    set(&flag);
    waiter.join().unwrap()
}

/// A waiter `retry`s until a flag is set; a writer sets it. The waiter always wakes up: if it
/// parked for good, loom would report the deadlock (the main thread joins it).
#[test]
fn retry_registration_vs_committing_writer() {
    let cases = Cases {
        reached: "blocked the waiter in retry before it was woken",
        also: None,
        max_bound: None,
    };
    model("retry_registration_vs_committing_writer", cases, |stats| {
        // More than one attempt: the waiter retried, blocked, and was woken.
        if attempts_of_a_waiter_woken_by(|flag| atomically(|tx| tx.write(flag, true))) > 1 {
            stats.reached();
        }
    });
}

/// `TVar::store` is a transaction of its own on the single-operation path
/// (`Txn::commit_single`): it must wake a waiter in `retry` on the variable as a transaction's
/// write does. A waiter parked for good is a loom deadlock (the main thread joins it).
#[test]
fn a_store_wakes_a_retry_waiter() {
    let cases = Cases {
        reached: "blocked the waiter in retry before the store woke it",
        also: None,
        max_bound: None,
    };
    model("a_store_wakes_a_retry_waiter", cases, |stats| {
        if attempts_of_a_waiter_woken_by(|flag| flag.store(true)) > 1 {
            stats.reached();
        }
    });
}

/// The single operations against a transaction on the same variable: `update(+1)` on one
/// thread; `compare_and_set(&0, 10)` and then a transaction adding 100 on the other. No update
/// is lost, and the `compare_and_set` either came first (and the end is 111) or found the
/// update's 1 (and the end is 101).
#[test]
fn update_and_compare_and_set_vs_a_transaction() {
    let cases = Cases {
        reached: "the compare_and_set came first",
        also: Some("the update came first"),
        max_bound: None,
    };
    model(
        "update_and_compare_and_set_vs_a_transaction",
        cases,
        |stats| {
            let a = TVar::new(0u64);
            let theirs = a.clone();
            let updater = spawn(move || theirs.update(|x| x + 1));
            let cas = a.compare_and_set(&0, 10);
            atomically(|tx| tx.modify(&a, |x| x + 100));
            let updated = updater.join().unwrap();
            match cas {
                Ok(0) => {
                    stats.reached();
                    // The update came after the compare_and_set, and before or after the
                    // transaction.
                    assert!(
                        updated == 11 || updated == 111,
                        "the update did not see the compare_and_set: it made {updated}"
                    );
                    assert_eq!(a.load(), 111, "an update was lost");
                }
                Err(1) => {
                    stats.also();
                    assert_eq!(updated, 1);
                    assert_eq!(a.load(), 101, "an update was lost");
                }
                other => panic!("compare_and_set returned {other:?}"),
            }
        },
    );
}

/// PITFALLS 13: a waiter in `retry_until(v >= 2)` whose predicate sees 1 while a writer commits
/// 2 (between the predicate's snapshot and its return) still wakes: it waits for a change from
/// what the predicate saw, not from what is current after it. A waiter parked for good is a
/// loom deadlock.
#[test]
fn retry_until_vs_writer_during_the_predicate() {
    let cases = Cases {
        reached: "evaluated the predicate and found it false before the waiter woke",
        also: None,
        max_bound: None,
    };
    model(
        "retry_until_vs_writer_during_the_predicate",
        cases,
        |stats| {
            let v = TVar::new(0u64);
            let falses = Arc::new(AtomicUsize::new(0));
            let (waited, seen_false) = (v.clone(), falses.clone());
            let waiter = spawn(move || {
                atomically(|tx| {
                    let now = tx.read(&waited)?;
                    if now < 2 {
                        let (w, seen_false) = (waited.clone(), seen_false.clone());
                        return tx.retry_until(&[&waited], move |tx| {
                            let holds = tx.read(&w)? >= 2;
                            if !holds {
                                seen_false.fetch_add(1, SeqCst);
                            }
                            Ok(holds)
                        });
                    }
                    Ok(now)
                })
            });
            atomically(|tx| tx.write(&v, 1));
            atomically(|tx| tx.write(&v, 2));
            assert_eq!(waiter.join().unwrap(), 2);
            if falses.load(SeqCst) > 0 {
                stats.reached();
            }
        },
    );
}

/// `retry_all(&[a, b])` re-runs the body only once both changed from what the attempt saw: a
/// waiter that saw both at 0 runs again only when it can see both at 1 (a wake by the first
/// commit finds the group not yet satisfied and parks again).
#[test]
fn retry_all_wakes_once_both_changed() {
    let cases = Cases {
        reached: "blocked the waiter in retry_all before both commits",
        also: None,
        max_bound: None,
    };
    model("retry_all_wakes_once_both_changed", cases, |stats| {
        let (a, b) = (TVar::new(0u64), TVar::new(0u64));
        let (wa, wb) = (a.clone(), b.clone());
        let waiter = spawn(move || {
            atomically(|tx| {
                let (x, y) = (tx.read(&wa)?, tx.read(&wb)?);
                if x == 0 && y == 0 {
                    return tx.retry_all(&[&wa, &wb]);
                }
                // Woken from retry_all: both changed. A first attempt may see one or both.
                assert!(
                    tx.attempt() == 1 || (x, y) == (1, 1),
                    "retry_all woke on one change"
                );
                Ok(tx.attempt())
            })
        });
        atomically(|tx| tx.write(&a, 1));
        atomically(|tx| tx.write(&b, 1));
        if waiter.join().unwrap() == 2 {
            stats.reached();
        }
    });
}

/// `retry_on` a variable the attempt did not read waits from the attempt's snapshot of it, and a
/// writer's commit wakes it.
#[test]
fn retry_on_wakes_on_a_variable_it_did_not_read() {
    let cases = Cases {
        reached: "blocked the waiter in retry_on before it was woken",
        also: None,
        max_bound: None,
    };
    model(
        "retry_on_wakes_on_a_variable_it_did_not_read",
        cases,
        |stats| {
            let (flag, seen) = (TVar::new(false), Arc::new(AtomicBool::new(false)));
            let (waited, done) = (flag.clone(), seen.clone());
            let waiter = spawn(move || {
                atomically(|tx| {
                    // Set only once the body has seen `flag` true through `load` (outside the
                    // snapshot): the first attempts wait on it without reading it.
                    if !waited.load() {
                        return tx.retry_on(&[&waited]);
                    }
                    done.store(true, SeqCst);
                    Ok(tx.attempt())
                })
            });
            atomically(|tx| tx.write(&flag, true));
            if waiter.join().unwrap() > 1 {
                stats.reached();
            }
            assert!(seen.load(SeqCst));
        },
    );
}

/// `retry_for` waits like `retry` until its deadline (loom has no time, so the deadline never
/// passes here): a writer's commit wakes it.
#[test]
fn retry_for_wakes_on_a_change() {
    let cases = Cases {
        reached: "blocked the waiter in retry_for before it was woken",
        also: None,
        max_bound: None,
    };
    model("retry_for_wakes_on_a_change", cases, |stats| {
        let flag = TVar::new(false);
        let waited = flag.clone();
        let waiter = spawn(move || {
            atomically(|tx| {
                if !tx.read(&waited)? {
                    tx.retry_for(std::time::Duration::from_secs(3_600))?;
                    return Ok(0);
                }
                Ok(tx.attempt())
            })
        });
        atomically(|tx| tx.write(&flag, true));
        let attempts = waiter.join().unwrap();
        assert_ne!(
            attempts, 0,
            "retry_for timed out under loom, where time never passes"
        );
        if attempts > 1 {
            stats.reached();
        }
    });
}

/// `or_else`: the first branch writes a marker and retries; its write is rolled back (the second
/// branch, which retries too, must not see it), and the transaction waits on the union of both
/// branches' reads: the writer changes only what the *first* branch read, and the waiter must
/// wake for it.
#[test]
fn or_else_rolls_back_a_branch_and_waits_on_the_union() {
    let cases = Cases {
        reached: "blocked the waiter on both branches before it was woken",
        also: None,
        max_bound: None,
    };
    model(
        "or_else_rolls_back_a_branch_and_waits_on_the_union",
        cases,
        |stats| {
            let (first, second, marker) = (TVar::new(0u64), TVar::new(0u64), TVar::new(0u64));
            let (f, s2, m) = (first.clone(), second.clone(), marker.clone());
            let waiter = spawn(move || {
                atomically(|tx| {
                    let taken = tx.or_else(
                        |tx| {
                            tx.write(&m, 7)?; // rolled back if this branch retries
                            if tx.read(&f)? == 0 {
                                return retry();
                            }
                            Ok(1)
                        },
                        |tx| {
                            assert_eq!(tx.read(&m)?, 0, "a retried branch's write is visible");
                            if tx.read(&s2)? == 0 {
                                return retry();
                            }
                            Ok(2)
                        },
                    )?;
                    Ok((taken, tx.attempt()))
                })
            });
            atomically(|tx| tx.write(&first, 1));
            let (taken, attempts) = waiter.join().unwrap();
            assert_eq!((taken, marker.load()), (1, 7));
            if attempts > 1 {
                stats.reached();
            }
        },
    );
}

/// A committer sitting in its `on_commit` hook holds what it only read: a writer of that
/// variable cannot commit until the holder has (the hook sees the value it validated).
#[test]
fn an_on_commit_hold_keeps_writers_out() {
    let cases = Cases {
        reached: "made the writer or the holder run again",
        also: None,
        max_bound: None,
    };
    model("an_on_commit_hold_keeps_writers_out", cases, |stats| {
        let (s, a) = (TVar::new(0u64), TVar::new(0u64));
        let (s2, a2) = (s.clone(), a.clone());
        let holder = spawn(move || {
            atomically(|tx| {
                let seen = tx.read(&s2)?;
                tx.write(&a2, seen + 1)?;
                let watched = s2.clone();
                tx.on_commit(move || {
                    assert_eq!(watched.load(), seen, "a held read changed under on_commit");
                });
                Ok(tx.attempt())
            })
        });
        let writer = atomically(|tx| {
            tx.write(&s, 10)?;
            Ok(tx.attempt())
        });
        let held = holder.join().unwrap();
        assert!(a.load() == 1 || a.load() == 11);
        if held > 1 || writer > 1 {
            stats.reached();
        }
    });
}

/// The hold is shared: a committer that only reads the variable the hook holder read (and writes
/// something else) never conflicts with it, in any interleaving (PITFALLS 14).
#[test]
fn an_on_commit_hold_is_shared_with_other_readers() {
    let cases = Cases {
        reached: "committed both",
        also: None,
        max_bound: None,
    };
    model(
        "an_on_commit_hold_is_shared_with_other_readers",
        cases,
        |stats| {
            let (s, a, b) = (TVar::new(5u64), TVar::new(0u64), TVar::new(0u64));
            let (s2, a2) = (s.clone(), a.clone());
            let holder = spawn(move || {
                atomically(|tx| {
                    let seen = tx.read(&s2)?;
                    tx.write(&a2, seen)?;
                    tx.on_commit(|| {});
                    Ok(tx.attempt())
                })
            });
            let reader = atomically(|tx| {
                let seen = tx.read(&s)?;
                tx.write(&b, seen)?;
                Ok(tx.attempt())
            });
            let held = holder.join().unwrap();
            assert_eq!(
                (held, reader),
                (1, 1),
                "a shared hold made a committer run again"
            );
            assert_eq!((a.load(), b.load()), (5, 5));
            stats.reached();
        },
    );
}

/// The priority token (taken after 2 conflicts under loom): a transaction made to conflict
/// twice (a thread it starts commits to what it read) takes it, and while it holds it starts
/// another committer, which waits at the gate. The holder commits and gives the token back, so
/// the other committer passes the gate (one spinning there without end fails the model), and no
/// update is lost.
#[test]
fn the_priority_token_is_taken_and_given_back() {
    let cases = Cases {
        reached: "ran the starving transaction 3 times (it took the token)",
        also: None,
        max_bound: None,
    };
    model(
        "the_priority_token_is_taken_and_given_back",
        cases,
        |stats| {
            let (v, w) = (TVar::new(0u64), TVar::new(0u64));
            let mut other = None;
            let attempts = atomically(|tx| {
                let seen = tx.read(&v)?;
                if tx.attempt() <= 2 {
                    let v3 = v.clone();
                    spawn(move || atomically(|tx| tx.modify(&v3, |n| n + 1)))
                        .join()
                        .unwrap();
                } else if other.is_none() {
                    // Holding the token: this committer meets the gate closed.
                    let w2 = w.clone();
                    other = Some(spawn(move || atomically(|tx| tx.modify(&w2, |n| n + 1))));
                }
                tx.write(&v, seen + 100)?;
                Ok(tx.attempt())
            });
            other.take().expect("the third attempt ran").join().unwrap();
            assert_eq!((v.load(), w.load()), (102, 1));
            if attempts == 3 {
                stats.reached();
            }
        },
    );
}

/// An abort is final: a body that drops the abort signal and returns `Ok` does not commit, while
/// another thread commits to the same variable.
#[test]
fn a_swallowed_abort_never_commits() {
    let cases = Cases {
        reached: "returned the abort error",
        also: None,
        max_bound: None,
    };
    model("a_swallowed_abort_never_commits", cases, |stats| {
        let v = TVar::new(0u64);
        let v2 = v.clone();
        let other = spawn(move || atomically(|tx| tx.modify(&v2, |n| n + 1)));
        let r: Result<(), &str> = mvstm_core::try_atomically(|tx| {
            tx.modify(&v, |n| n + 100)?;
            let _ = tx.abort::<(), _>("no");
            Ok(())
        });
        other.join().unwrap();
        assert_eq!(r, Err("no"));
        assert_eq!(v.load(), 1, "the aborted attempt's write was published");
        stats.reached();
    });
}

/// A collection kernel: a `TBQueue` of capacity 1 between a producer of two items and a
/// consumer. The second push blocks until the first pop; the consumer gets both, in order.
#[test]
fn tbqueue_of_one_hands_over_two_items_in_order() {
    let cases = Cases {
        reached: "blocked the producer or the consumer in retry",
        also: None,
        max_bound: Some(1),
    };
    model(
        "tbqueue_of_one_hands_over_two_items_in_order",
        cases,
        |stats| {
            let q = Arc::new(mvstm::collections::TBQueue::new(1));
            let producer_q = q.clone();
            let producer = spawn(move || {
                let first = atomically(|tx| producer_q.push(tx, 1u64).map(|()| tx.attempt()));
                let second = atomically(|tx| producer_q.push(tx, 2u64).map(|()| tx.attempt()));
                first.max(second)
            });
            let mut got = Vec::new();
            let mut consumer_attempts = 1;
            for _ in 0..2 {
                let (item, attempts) = atomically(|tx| Ok((q.pop(tx)?, tx.attempt())));
                got.push(item);
                consumer_attempts = consumer_attempts.max(attempts);
            }
            let producer_attempts = producer.join().unwrap();
            assert_eq!(got, vec![1, 2]);
            // Not dropped: the queue's slot TVars live in a TVar, so freeing it (deferred, and
            // run by loom only as it tears the execution's statics down) would drop TVars from
            // inside crossbeam's collector teardown, where loom refuses the default collector's
            // lazy_static. Real programs never tear that static down.
            std::mem::forget(q);
            if producer_attempts > 1 || consumer_attempts > 1 {
                stats.reached();
            }
        },
    );
}

/// Commits of the reclamation model before the reader starts (the writer alone: one
/// interleaving) and while it runs. Under loom every commit advances the horizon and flushes
/// (`reclaim.rs`), so old versions are cut and freed within a few commits.
const WRITES_BEFORE: u64 = 1;
const WRITES_DURING: u64 = 2;

/// A waker for the async models: counts its wake-ups and fails if woken once its future was
/// dropped (`dead`, set by the model right after the drop returned).
///
/// Both are loom atomics, unlike the models' bookkeeping: the property is the order of the
/// drop and the wake-up, and loom only explores orders of accesses it sees conflict. With std
/// atomics, nothing it sees would link the waker's check to the drop, and a wake-up issued
/// after the slot's lock was released (so arriving after the drop) would never be scheduled
/// late.
struct ModelWaker {
    wakes: loom::sync::atomic::AtomicUsize,
    dead: loom::sync::atomic::AtomicBool,
}

impl std::task::Wake for ModelWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, SeqCst);
        assert!(
            !self.dead.load(SeqCst),
            "a wake-up reached a task whose future was dropped"
        );
    }
}

fn model_waker() -> (Arc<ModelWaker>, std::task::Waker) {
    let state = Arc::new(ModelWaker {
        wakes: loom::sync::atomic::AtomicUsize::new(0),
        dead: loom::sync::atomic::AtomicBool::new(false),
    });
    (state.clone(), std::task::Waker::from(state))
}

/// PITFALLS 4 for a task: `atomically_async` retries, registers the task's waker and looks
/// again, while a writer commits the awaited change. Either the first poll sees the change, or
/// it returns `Pending` and the waker fires; the poll after the writer finished completes.
#[test]
fn async_retry_registration_vs_committing_writer() {
    let cases = Cases {
        reached: "left the task pending in retry before the writer woke it",
        also: None,
        max_bound: None,
    };
    model(
        "async_retry_registration_vs_committing_writer",
        cases,
        |stats| {
            let flag = TVar::new(false);
            let written = flag.clone();
            let writer = spawn(move || atomically(|tx| tx.write(&written, true)));
            let (woken, waker) = model_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            let mut task = Box::pin(mvstm_core::atomically_async(|tx| {
                if !tx.read(&flag)? {
                    return retry();
                }
                Ok(())
            }));
            if task.as_mut().poll(&mut cx).is_pending() {
                writer.join().unwrap();
                assert!(
                    woken.wakes.load(SeqCst) > 0,
                    "the task is pending and its waker never fired: a lost wake-up"
                );
                assert!(
                    task.as_mut().poll(&mut cx).is_ready(),
                    "woken after the commit, the task still waits"
                );
                stats.reached();
            } else {
                writer.join().unwrap();
            }
            drop(task);
            assert_eq!(
                mvstm_core::waiters_on(&flag),
                0,
                "a registration outlived the task"
            );
        },
    );
}

/// PITFALLS 12 for a task: a waiting `atomically_async` future is dropped while a writer commits
/// the awaited change and wakes its waiters. Once the drop returned, no wake-up reaches the
/// task (`ModelWaker` fails if it comes later), and no table entry is left.
#[test]
fn async_wait_dropped_vs_committing_writer() {
    let cases = Cases {
        reached: "woke the task while it was still waiting (before the drop finished)",
        also: Some("dropped the task before the writer looked for waiters"),
        max_bound: None,
    };
    model("async_wait_dropped_vs_committing_writer", cases, |stats| {
        let flag = TVar::new(false);
        let (woken, waker) = model_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut task = Box::pin(mvstm_core::atomically_async(|tx| {
            if !tx.read(&flag)? {
                return retry();
            }
            Ok(())
        }));
        assert!(task.as_mut().poll(&mut cx).is_pending());
        let written = flag.clone();
        let writer = spawn(move || atomically(|tx| tx.write(&written, true)));
        drop(task);
        woken.dead.store(true, SeqCst);
        writer.join().unwrap();
        assert_eq!(
            mvstm_core::waiters_on(&flag),
            0,
            "the dropped task's entry stayed"
        );
        if woken.wakes.load(SeqCst) > 0 {
            stats.reached();
        } else {
            stats.also();
        }
    });
}

/// A reader holds a snapshot across two reads of a TVar while a writer overwrites it and the
/// engine trims and frees old versions. Both reads return the same version, and no version is
/// freed while a snapshot can still read it: `Tracked` values count their drops (each is dropped
/// exactly once by the end of the execution), a clone of a dropped value fails, and loom reports
/// a drop that is not ordered after every clone of the value. A version cut from the chain
/// under a snapshot that needs it would make the reader's second read fail.
#[test]
fn reclamation_vs_reader_holding_an_old_snapshot() {
    let cases = Cases {
        reached: "overwrote the reader's version twice while it held its snapshot (trims ran \
                  below it)",
        also: Some("freed versions before the model's end (in the collector, not at teardown)"),
        max_bound: None,
    };
    model(
        "reclamation_vs_reader_holding_an_old_snapshot",
        cases,
        |stats| {
            let log = Log::new(stats);
            let v = TVar::new(log.value(0));
            for value in 1..=WRITES_BEFORE {
                atomically(|tx| tx.write(&v, log.value(value)));
            }
            let read = v.clone();
            let reader = spawn(move || {
                atomically(|tx| {
                    let first = tx.read(&read)?;
                    let second = tx.read(&read)?;
                    // The newest committed value, outside this snapshot.
                    let newest = read.load().value;
                    Ok((first.serial, second.serial, newest >= first.value + 2))
                })
            });
            for value in WRITES_BEFORE + 1..=WRITES_BEFORE + WRITES_DURING {
                atomically(|tx| tx.write(&v, log.value(value)));
            }
            let (first, second, overwritten_twice) = reader.join().unwrap();
            assert_eq!(first, second, "one snapshot read two versions");
            if overwritten_twice {
                stats.reached();
            }
            if log.dropped_count() > 0 {
                stats.also();
            }
        },
    );
}

/// A reader's snapshot survives horizon advances that run while it starts. The reader takes its
/// snapshot while the writer overwrites `v` three times (each commit moves the horizon under loom),
/// reads `u`, lets the writer change `u`, and only then reads `v`: it cannot extend its snapshot
/// past the change of `u`, so it must find the version of `v` its snapshot names. An attempt's
/// slot is what keeps that version from being cut: a snapshot taken before the slot is set
/// lets a horizon advance that did not see the slot pass it (`scripts/loom-mutations.sh`,
/// `snapshot_taken_before_the_slot`).
#[test]
fn a_starting_snapshot_holds_the_horizon_back() {
    use loom::sync::atomic::AtomicBool as LoomBool;
    let cases = Cases {
        reached: "the reader's snapshot predated the overwrites of v, and it read v's first \
                  version after all three",
        also: None,
        max_bound: None,
    };
    model(
        "a_starting_snapshot_holds_the_horizon_back",
        cases,
        |stats| {
            let (u, v) = (TVar::new(0u64), TVar::new(0u64));
            atomically(|tx| tx.write(&v, 1));
            let read_u = Arc::new(LoomBool::new(false));
            let u_changed = Arc::new(LoomBool::new(false));
            let reader = {
                let (u, v) = (u.clone(), v.clone());
                let (read_u, u_changed) = (read_u.clone(), u_changed.clone());
                spawn(move || {
                    atomically(|tx| {
                        let a = tx.read(&u)?;
                        if tx.attempt() == 1 {
                            read_u.store(true, SeqCst);
                            while !u_changed.load(SeqCst) {
                                thread::yield_now();
                            }
                        }
                        let b = tx.read(&v)?;
                        Ok((a, b))
                    })
                })
            };
            // Three overwrites: a committer's own attempt holds the horizon at its snapshot, so
            // the horizon passes the reader's version of `v` only at the third.
            for value in 2..=4 {
                atomically(|tx| tx.write(&v, value));
            }
            while !read_u.load(SeqCst) {
                thread::yield_now();
            }
            atomically(|tx| tx.write(&u, 1));
            u_changed.store(true, SeqCst);
            let (a, b) = reader.join().unwrap();
            // The snapshot was taken before `u` changed, and `v` has values 1 to 4.
            assert_eq!(a, 0, "the reader's snapshot came after the change of u");
            assert!((1..=4).contains(&b));
            if b == 1 {
                stats.reached();
            }
        },
    );
}

/// Room for the values one execution makes (re-run attempts make more).
const MAX_VALUES: usize = 64;

/// A value that knows whether it is alive. `TVar` versions hold originals (made by
/// [`Log::value`], each with its own serial number); reads return copies. Dropping an original
/// is a write to its cell and cloning one is a read, so loom flags a clone that is not ordered
/// after the original was made (a missed publication) and a drop that is not ordered after
/// every clone (a free under a reader); the log counts drops by serial.
struct Tracked {
    value: u64,
    serial: usize,
    cell: UnsafeCell<u64>,
    original: bool,
    log: Arc<Log>,
}

// SAFETY: the cell is only read (`with`) through `&Tracked`; the one write is in `drop`, with
// `&mut`. Loom checks that those accesses are ordered.
unsafe impl Sync for Tracked {}

impl Tracked {
    fn get(&self) -> u64 {
        self.value
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        let value = self.cell.with(|p| {
            // SAFETY: see `impl Sync`.
            unsafe { *p }
        });
        assert_eq!(value, self.value, "read a value after it was dropped");
        assert_eq!(
            self.log.drops[self.serial].load(SeqCst),
            0,
            "cloned a version after it was freed"
        );
        Tracked {
            value,
            serial: self.serial,
            cell: UnsafeCell::new(value),
            original: false,
            log: self.log.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.cell.with_mut(|p| {
            // SAFETY: `&mut self`.
            unsafe { *p = u64::MAX }
        });
        if self.original {
            let before = self.log.drops[self.serial].fetch_add(1, SeqCst);
            assert_eq!(before, 0, "value #{} dropped twice", self.serial);
        }
    }
}

/// The originals one execution made, and how often each was dropped.
struct Log {
    made: AtomicUsize,
    drops: [AtomicUsize; MAX_VALUES],
    stats: Arc<Stats>,
}

impl Log {
    fn new(stats: &Arc<Stats>) -> Arc<Log> {
        stats.logs.fetch_add(1, SeqCst);
        Arc::new(Log {
            made: AtomicUsize::new(0),
            drops: std::array::from_fn(|_| AtomicUsize::new(0)),
            stats: stats.clone(),
        })
    }

    /// How many originals were dropped so far.
    fn dropped_count(&self) -> usize {
        self.drops.iter().map(|d| d.load(SeqCst)).sum()
    }
}

trait MakeValue {
    fn value(&self, value: u64) -> Tracked;
}

impl MakeValue for Arc<Log> {
    /// A new original holding `value`.
    fn value(&self, value: u64) -> Tracked {
        let serial = self.made.fetch_add(1, SeqCst);
        assert!(serial < MAX_VALUES, "raise MAX_VALUES");
        Tracked {
            value,
            serial,
            cell: UnsafeCell::new(value),
            original: true,
            log: self.clone(),
        }
    }
}

impl Drop for Log {
    /// The execution's last value is gone (the epoch collector dropped the last versions as
    /// the execution ended). Counts the execution as complete if every original was dropped
    /// exactly once; the test checks the count after loom is done, outside any destructor.
    fn drop(&mut self) {
        let made = self.made.load(SeqCst);
        if self.drops[..made].iter().all(|d| d.load(SeqCst) == 1) {
            self.stats.logs_complete.fetch_add(1, SeqCst);
        }
    }
}
