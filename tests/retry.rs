//! Blocking with `retry` and its variants (`retry_on`, `retry_all`, `retry_until`, `retry_for`):
//! wake-ups on the right changes only, no spinning while blocked, the empty-read-set panic, and
//! no lost wake-ups under a long ping-pong.

mod common;

use common::{finish, panic_message, spawn_reporting, still_blocked, wait_for_runs, LIMIT, QUIET};
use mvstm::{atomically, retry, StmResult, TVar, Txn};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn retry_blocks_until_another_thread_writes() {
    let flag = TVar::new(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (flag, runs) = (flag.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                if !tx.read(&flag)? {
                    return retry();
                }
                Ok(42)
            })
        })
    };
    wait_for_runs(&runs, 1);
    thread::sleep(QUIET);
    still_blocked(&rx, "retry before the write");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the blocked body re-ran without a change"
    );

    atomically(|tx| tx.write(&flag, true));
    assert_eq!(finish(&rx, "retry after the write"), 42);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_wakes_on_any_variable_read() {
    let (a, b, c) = (TVar::new(0u32), TVar::new(0u32), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (a, b, c, runs) = (a.clone(), b.clone(), c.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let sum = tx.read(&a)? + tx.read(&b)? + tx.read(&c)?;
                if sum == 0 {
                    return retry();
                }
                Ok(sum)
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&c, 5));
    assert_eq!(finish(&rx, "retry"), 5);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_reruns_and_blocks_again_while_the_condition_is_false() {
    let level = TVar::new(0u32);
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (level, runs) = (level.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let l = tx.read(&level)?;
                if l < 3 {
                    return retry();
                }
                Ok(l)
            })
        })
    };
    for i in 1..=2u32 {
        wait_for_runs(&runs, i as usize);
        atomically(|tx| tx.write(&level, i));
        wait_for_runs(&runs, i as usize + 1);
        thread::sleep(QUIET / 2);
        still_blocked(&rx, "retry with the condition still false");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    atomically(|tx| tx.write(&level, 3));
    assert_eq!(finish(&rx, "retry"), 3);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[test]
fn retry_with_an_empty_read_set_panics() {
    let r = catch_unwind(|| atomically(|_tx| -> StmResult<()> { retry() }));
    let p = r.expect_err("a retry with nothing to wait on must panic");
    let msg = panic_message(&*p);
    assert!(msg.contains("retry would block forever"), "{msg}");

    // The thread is usable afterwards.
    let v = TVar::new(1);
    assert_eq!(atomically(|tx| tx.read(&v)), 1);
}

#[test]
#[should_panic(expected = "retry would block forever")]
fn retry_with_an_empty_read_set_panics_also_after_writes() {
    let v = TVar::new(0);
    // Writes are not reads: there is still nothing to wait on.
    atomically(|tx| -> StmResult<()> {
        tx.write(&v, 1)?;
        retry()
    });
}

#[test]
fn retry_on_with_no_variables_panics() {
    let v = TVar::new(0u8);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> {
            tx.read(&v)?;
            tx.retry_on(&[])
        })
    }));
    assert!(
        r.is_err(),
        "retry_on(&[]) must panic rather than block forever"
    );
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> { tx.retry_all(&[]) })
    }));
    assert!(
        r.is_err(),
        "retry_all(&[]) must panic rather than block forever"
    );
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> { tx.retry_until(&[], |_| Ok(true)) })
    }));
    assert!(
        r.is_err(),
        "retry_until(&[], ..) must panic rather than block forever"
    );
}

#[test]
fn retry_on_wakes_only_for_the_named_variables() {
    let (watched, ignored) = (TVar::new(0u32), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (watched, ignored, runs) = (watched.clone(), ignored.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let w = tx.read(&watched)?;
                let i = tx.read(&ignored)?;
                if w == 0 {
                    // `ignored` was read too, but only `watched` is named.
                    return tx.retry_on(&[&watched]);
                }
                Ok((w, i))
            })
        })
    };
    wait_for_runs(&runs, 1);
    for n in 1..=3 {
        atomically(|tx| tx.write(&ignored, n));
    }
    thread::sleep(QUIET);
    still_blocked(&rx, "retry_on after writes to an unnamed variable");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "woke for a variable it did not name"
    );

    atomically(|tx| tx.write(&watched, 7));
    assert_eq!(finish(&rx, "retry_on"), (7, 3));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_on_a_variable_not_read_waits_from_the_snapshot() {
    let (read_only, named) = (TVar::new(false), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (read_only, named, runs) = (read_only.clone(), named.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                if !tx.read(&read_only)? {
                    // `named` is not read: the wait starts from its value in the snapshot.
                    return tx.retry_on(&[&named]);
                }
                Ok(())
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&read_only, true));
    thread::sleep(QUIET);
    still_blocked(
        &rx,
        "retry_on after a write to a variable that was read but not named",
    );
    atomically(|tx| tx.write(&named, 1));
    finish(&rx, "retry_on");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_all_waits_until_every_named_variable_changed() {
    let (a, b) = (TVar::new(0u32), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (a, b, runs) = (a.clone(), b.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let (x, y) = (tx.read(&a)?, tx.read(&b)?);
                if x == 0 || y == 0 {
                    return tx.retry_all(&[&a, &b]);
                }
                Ok((x, y))
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&a, 1));
    atomically(|tx| tx.write(&a, 2));
    thread::sleep(QUIET);
    still_blocked(&rx, "retry_all with only one variable changed");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "retry_all woke before all changed"
    );

    atomically(|tx| tx.write(&b, 3));
    assert_eq!(finish(&rx, "retry_all"), (2, 3));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_until_wakes_when_the_predicate_holds() {
    let (level, other) = (TVar::new(0u32), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (level, other, runs, checks) =
            (level.clone(), other.clone(), runs.clone(), checks.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let l = tx.read(&level)?;
                if l < 5 {
                    let (watched, checks) = (level.clone(), checks.clone());
                    return tx.retry_until(&[&level, &other], move |tx| {
                        checks.fetch_add(1, Ordering::SeqCst);
                        Ok(tx.read(&watched)? >= 5)
                    });
                }
                Ok(l)
            })
        })
    };
    wait_for_runs(&runs, 1);
    // Changes that leave the predicate false do not re-run the body.
    for n in 1..=4 {
        atomically(|tx| tx.write(&level, n));
    }
    atomically(|tx| tx.write(&other, 1));
    thread::sleep(QUIET);
    still_blocked(&rx, "retry_until with a false predicate");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "retry_until re-ran with a false predicate"
    );

    atomically(|tx| tx.write(&level, 6));
    assert_eq!(finish(&rx, "retry_until"), 6);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(
        checks.load(Ordering::SeqCst) >= 1,
        "the predicate was never evaluated"
    );
}

/// PITFALLS 13: a commit that lands while the predicate is being evaluated (after its snapshot)
/// must still wake the waiter. The predicate sees 1; during that evaluation 2 is committed, which
/// makes it hold. A waiter that re-bases to the stamps current after the predicate returned
/// (the stamp of 2) thinks it has seen 2 and parks forever.
#[test]
fn retry_until_sees_a_commit_made_while_its_predicate_ran() {
    let v = TVar::new(0u32);
    let (set_one, set_two) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let rx = {
        let (v, set_one, set_two) = (v.clone(), set_one.clone(), set_two.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                let now = tx.read(&v)?;
                if now >= 2 {
                    return Ok(now);
                }
                // Once registered (on_abort runs after the registration, before the block),
                // commit 1: the wait's first check then evaluates the predicate.
                let (writer, set_one) = (v.clone(), set_one.clone());
                tx.on_abort(move |_| {
                    if set_one.fetch_add(1, Ordering::SeqCst) == 0 {
                        atomically(|tx| tx.write(&writer, 1));
                    }
                });
                let (watched, set_two) = (v.clone(), set_two.clone());
                tx.retry_until(&[&v], move |tx| {
                    let seen = tx.read(&watched)?;
                    if seen == 1 && set_two.fetch_add(1, Ordering::SeqCst) == 0 {
                        // 2 commits after this snapshot, before the predicate returns false.
                        let writer = watched.clone();
                        thread::spawn(move || atomically(|tx| tx.write(&writer, 2)))
                            .join()
                            .expect("the writer of 2 panicked");
                    }
                    Ok(seen >= 2)
                })
            })
        })
    };
    assert_eq!(
        finish(&rx, "retry_until with 2 committed during its predicate"),
        2
    );
    assert!(
        set_two.load(Ordering::SeqCst) >= 1,
        "the predicate never saw 1 (the interleaving was not reached)"
    );
}

/// A long reader that re-pinned (read more than 1,024 TVars) and then retries is re-run with
/// one pin before it waits; its `on_abort` hooks are told `Retry`, which is what the body did.
#[test]
fn a_repinned_reader_that_retries_reports_retry() {
    let vars: Vec<TVar<u32>> = (0..3_000).map(TVar::new).collect();
    let flag = TVar::new(false);
    let causes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rx = {
        let (vars, flag, causes) = (vars.clone(), flag.clone(), causes.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                let mut sum = 0u64;
                for v in &vars {
                    sum += u64::from(tx.read(v)?);
                }
                if !tx.read(&flag)? {
                    let (causes, flag) = (causes.clone(), flag.clone());
                    tx.on_abort(move |cause| {
                        let mut causes = causes.lock().unwrap();
                        causes.push(cause);
                        if causes.len() == 2 {
                            // The second attempt is the one that waits: let it end.
                            thread::spawn(move || atomically(|tx| tx.write(&flag, true)));
                        }
                    });
                    return retry();
                }
                Ok(sum)
            })
        })
    };
    assert_eq!(finish(&rx, "the long reader"), (0..3_000u64).sum::<u64>());
    assert_eq!(
        *causes.lock().unwrap(),
        vec![mvstm::AbortCause::Retry, mvstm::AbortCause::Retry]
    );
}

#[test]
fn retry_until_predicate_that_writes_panics() {
    let (trigger, victim) = (TVar::new(0u32), TVar::new(0u32));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (trigger, victim, runs) = (trigger.clone(), victim.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| -> StmResult<()> {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.read(&trigger)?;
                let victim = victim.clone();
                tx.retry_until(&[&trigger], move |tx| {
                    tx.write(&victim, 99)?;
                    Ok(true)
                })
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&trigger, 1));
    let outcome = rx
        .recv_timeout(LIMIT)
        .expect("the waiter evaluated the predicate");
    let p = outcome.expect_err("a predicate that writes must panic");
    let msg = panic_message(&*p);
    assert!(msg.contains("predicate"), "unclear message: {msg}");
    assert_eq!(victim.load(), 0, "the predicate's write was published");
    // The variables are fine afterwards.
    atomically(|tx| tx.write(&victim, 1));
    assert_eq!(victim.load(), 1);
}

#[test]
fn retry_for_returns_ok_after_the_timeout() {
    let ready = TVar::new(false);
    let timeout = Duration::from_millis(50);
    let rx = {
        let ready = ready.clone();
        spawn_reporting(move || {
            let start = Instant::now();
            let timed_out = atomically(|tx| {
                if tx.read(&ready)? {
                    return Ok(false);
                }
                tx.retry_for(timeout)?;
                Ok(true) // the body goes on after the timeout
            });
            (timed_out, start.elapsed())
        })
    };
    let (timed_out, elapsed) = finish(&rx, "retry_for");
    assert!(timed_out, "retry_for did not let the body continue");
    assert!(
        elapsed >= timeout,
        "retry_for returned after {elapsed:?}, before {timeout:?}"
    );
    assert!(!ready.load());
}

#[test]
fn retry_for_with_nothing_read_times_out_instead_of_panicking() {
    let rx = spawn_reporting(|| {
        atomically(|tx| {
            tx.retry_for(Duration::from_millis(20))?;
            Ok(7)
        })
    });
    assert_eq!(finish(&rx, "retry_for with no reads"), 7);
}

#[test]
fn retry_for_wakes_early_on_a_change() {
    let ready = TVar::new(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (ready, runs) = (ready.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                if tx.read(&ready)? {
                    return Ok("changed");
                }
                // Far longer than the test's limit: only the change can end this wait in time.
                tx.retry_for(Duration::from_secs(3_600))?;
                Ok("timed out")
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&ready, true));
    assert_eq!(finish(&rx, "retry_for"), "changed");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_for_counts_the_total_time_blocked_across_reruns() {
    // A writer keeps changing a variable the body reads, so the body is woken and re-run again
    // and again before any single wait reaches the timeout. The timeout applies to the total
    // time blocked in this `atomically` call, so the call still ends.
    let noise = TVar::new(0u64);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timeout = Duration::from_millis(300);
    let writer = {
        let (noise, stop) = (noise.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                atomically(|tx| tx.modify(&noise, |x| x + 1));
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (noise, runs) = (noise.clone(), runs.clone());
        spawn_reporting(move || {
            let start = Instant::now();
            let seen = atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let n = tx.read(&noise)?;
                tx.retry_for(timeout)?;
                Ok(n)
            });
            (seen, start.elapsed())
        })
    };
    let outcome = rx.recv_timeout(LIMIT);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let (_, elapsed) = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => panic!("retry_for panicked: {}", panic_message(&*p)),
        Err(_) => panic!("retry_for restarted its timeout on every re-run: still blocked"),
    };
    assert!(
        elapsed >= timeout,
        "returned after {elapsed:?}, before {timeout:?}"
    );
    assert!(
        runs.load(Ordering::SeqCst) >= 2,
        "the writer never woke the body"
    );
}

#[test]
fn blocked_thread_parks_instead_of_spinning() {
    // Several waiters on one variable; while nothing changes, none of them re-runs its body.
    let gate = TVar::new(0u32);
    let runs = Arc::new(AtomicUsize::new(0));
    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let (gate, runs) = (gate.clone(), runs.clone());
            spawn_reporting(move || {
                atomically(|tx| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let g = tx.read(&gate)?;
                    if g == 0 {
                        return retry();
                    }
                    Ok(g)
                })
            })
        })
        .collect();
    wait_for_runs(&runs, 4);
    thread::sleep(QUIET);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "a blocked body re-ran with no change"
    );
    for rx in &receivers {
        still_blocked(rx, "waiter");
    }
    atomically(|tx| tx.write(&gate, 1));
    for rx in &receivers {
        assert_eq!(finish(rx, "waiter"), 1);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 8);
}

/// Wait until `turn` has parity `parity`, then advance it; `retry` blocks meanwhile.
fn take_turn(tx: &mut Txn, turn: &TVar<u64>, parity: u64) -> StmResult<u64> {
    let t = tx.read(turn)?;
    if t % 2 != parity {
        return retry();
    }
    tx.write(turn, t + 1)?;
    Ok(t)
}

#[test]
fn ping_pong_loses_no_wake_up() {
    const ROUNDS: u64 = 10_000;
    let turn = TVar::new(0u64);
    let players: Vec<_> = (0..2u64)
        .map(|parity| {
            let turn = turn.clone();
            spawn_reporting(move || {
                for i in 0..ROUNDS {
                    let t = atomically(|tx| take_turn(tx, &turn, parity));
                    assert_eq!(t, 2 * i + parity, "turns out of order");
                }
            })
        })
        .collect();
    for (i, rx) in players.iter().enumerate() {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(p)) => panic!("player {i} panicked: {}", panic_message(&*p)),
            Err(_) => panic!(
                "player {i} hung at turn {} of {}: a wake-up was lost",
                turn.load(),
                2 * ROUNDS
            ),
        }
    }
    assert_eq!(turn.load(), 2 * ROUNDS);
}

#[test]
fn producer_consumer_through_one_slot_loses_no_wake_up() {
    const ITEMS: u32 = 10_000;
    let slot: TVar<Option<u32>> = TVar::new(None);
    let producer = {
        let slot = slot.clone();
        spawn_reporting(move || {
            for i in 0..ITEMS {
                atomically(|tx| {
                    if tx.read(&slot)?.is_some() {
                        return retry();
                    }
                    tx.write(&slot, Some(i))
                });
            }
        })
    };
    let consumer = {
        let slot = slot.clone();
        spawn_reporting(move || {
            let mut sum = 0u64;
            for i in 0..ITEMS {
                let got = atomically(|tx| match tx.read(&slot)? {
                    None => retry(),
                    Some(x) => {
                        tx.write(&slot, None)?;
                        Ok(x)
                    }
                });
                assert_eq!(got, i, "items out of order");
                sum += u64::from(got);
            }
            sum
        })
    };
    let limit = Duration::from_secs(120);
    match producer.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(p)) => panic!("producer panicked: {}", panic_message(&*p)),
        Err(_) => panic!("producer hung: a wake-up was lost"),
    }
    let sum = match consumer.recv_timeout(limit) {
        Ok(Ok(s)) => s,
        Ok(Err(p)) => panic!("consumer panicked: {}", panic_message(&*p)),
        Err(_) => panic!("consumer hung: a wake-up was lost"),
    };
    assert_eq!(sum, u64::from(ITEMS) * u64::from(ITEMS - 1) / 2);
    assert_eq!(slot.load(), None);
}

#[test]
fn retry_ignores_a_tvar_whose_last_handle_is_gone() {
    // The body reads a TVar it created (dropped when the body returns) and one that matters.
    // The wait must park on the one that matters, not spin on the one that can never change.
    let shared = TVar::new(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (shared, runs) = (shared.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let scratch = TVar::new(0u8);
                tx.read(&scratch)?;
                if !tx.read(&shared)? {
                    return retry();
                }
                Ok(())
            })
        })
    };
    wait_for_runs(&runs, 1);
    thread::sleep(QUIET);
    still_blocked(&rx, "retry waiting on `shared`");
    assert!(
        runs.load(Ordering::SeqCst) <= 2,
        "the waiter spun: {} runs",
        runs.load(Ordering::SeqCst)
    );
    atomically(|tx| tx.write(&shared, true));
    finish(&rx, "retry woken by `shared`");
}

#[test]
fn retry_on_only_dropped_tvars_panics_instead_of_hanging() {
    let r = catch_unwind(|| {
        atomically(|tx| {
            let scratch = TVar::new(0u8);
            tx.read(&scratch)?;
            retry::<()>()
        })
    });
    let msg = panic_message(&*r.expect_err("a retry with nothing to wait on returned"));
    assert!(msg.contains("retry would block forever"), "{msg}");
}

/// API.md §6: `atomically_timeout` gives up once the call has waited longer than its limit in
/// total, across re-runs, and publishes nothing of the attempt that waited.
#[test]
fn atomically_timeout_gives_up_after_its_total_limit_and_publishes_nothing() {
    use mvstm::{atomically_timeout, TimedOut};
    let (empty, written) = (TVar::new(None::<u32>), TVar::new(0u32));
    let (noise, stop) = (
        TVar::new(0u32),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    // Changes to `noise` wake the waiter again and again: each re-run waits anew, and the
    // limit still counts the total.
    let nudger = {
        let (noise, stop) = (noise.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                atomically(|tx| tx.modify(&noise, |n| n + 1));
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let runs = AtomicUsize::new(0);
    let started = Instant::now();
    let r: Result<u32, TimedOut> = atomically_timeout(Duration::from_millis(100), |tx| {
        runs.fetch_add(1, Ordering::SeqCst);
        tx.write(&written, 1)?;
        tx.read(&noise)?;
        match tx.read(&empty)? {
            Some(x) => Ok(x),
            None => retry(),
        }
    });
    stop.store(true, Ordering::SeqCst);
    nudger.join().unwrap();
    assert_eq!(r, Err(TimedOut));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(
        runs.load(Ordering::SeqCst) > 1,
        "the waiter was never woken and re-run"
    );
    assert_eq!(
        written.load(),
        0,
        "the timed-out attempt published its write"
    );
}

/// Within its limit, `atomically_timeout` is `atomically`: a commit that makes the body succeed
/// wakes it, and a body that never retries commits.
#[test]
fn atomically_timeout_returns_the_value_within_its_limit() {
    use mvstm::atomically_timeout;
    assert_eq!(
        atomically_timeout(Duration::from_millis(1), |_| Ok(5)),
        Ok(5)
    );
    let slot = TVar::new(None::<u32>);
    let filler = slot.clone();
    let rx = spawn_reporting(move || {
        atomically_timeout(LIMIT, |tx| match tx.read(&filler)? {
            Some(x) => Ok(x),
            None => retry(),
        })
    });
    thread::sleep(QUIET);
    atomically(|tx| tx.write(&slot, Some(9)));
    assert_eq!(finish(&rx, "atomically_timeout woken by a commit"), Ok(9));
}

#[test]
fn retry_on_a_group_wakes_for_any_member_of_a_vec() {
    let slots: Vec<TVar<u32>> = (0..4).map(|_| TVar::new(0)).collect();
    let unrelated = TVar::new(0u32);
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (slots, runs) = (slots.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                for (i, slot) in slots.iter().enumerate() {
                    let v = tx.read(slot)?;
                    if v != 0 {
                        return Ok((i, v));
                    }
                }
                // The whole Vec as one entry of the list.
                tx.retry_on(&[&slots])
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&unrelated, 1));
    thread::sleep(QUIET);
    still_blocked(
        &rx,
        "retry_on(&[&vec]) after a write to a variable not in it",
    );
    // The third member: a wait on the group covers every member, not only the first.
    atomically(|tx| tx.write(&slots[2], 9));
    assert_eq!(finish(&rx, "retry_on(&[&vec])"), (2, 9));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_on_takes_slices_arrays_and_collected_iterators_mixed_with_single_tvars() {
    let pool: Vec<TVar<u64>> = (0..6).map(|_| TVar::new(0)).collect();
    let flag = TVar::new(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (pool, flag, runs) = (pool.clone(), flag.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let tail: &[TVar<u64>] = &pool[3..];
                let evens: Vec<&TVar<u64>> = pool.iter().step_by(2).collect();
                let mut seen = 0;
                for v in tail.iter().chain(evens.iter().copied()) {
                    seen += tx.read(v)?;
                }
                if seen == 0 && !tx.read(&flag)? {
                    // A slice, a Vec collected from an iterator and a TVar of another type.
                    return tx.retry_on(&[&tail, &evens, &flag]);
                }
                Ok(seen)
            })
        })
    };
    wait_for_runs(&runs, 1);
    // pool[1] is in neither the slice (3..) nor the evens: no wake-up.
    atomically(|tx| tx.write(&pool[1], 5));
    thread::sleep(QUIET);
    still_blocked(
        &rx,
        "retry_on after a write to a variable outside every group",
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    atomically(|tx| tx.write(&pool[4], 7)); // in the slice and in the evens: counted twice
    assert_eq!(finish(&rx, "retry_on with groups"), 14);
}

#[test]
fn retry_all_on_an_array_waits_for_every_member() {
    let reports: [TVar<bool>; 3] = std::array::from_fn(|_| TVar::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (reports, runs) = (reports.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let mut done = 0;
                for r in &reports {
                    done += usize::from(tx.read(r)?);
                }
                if done < reports.len() {
                    return tx.retry_all(&[&reports]);
                }
                Ok(done)
            })
        })
    };
    wait_for_runs(&runs, 1);
    atomically(|tx| tx.write(&reports[0], true));
    atomically(|tx| tx.write(&reports[1], true));
    thread::sleep(QUIET);
    still_blocked(&rx, "retry_all(&[&array]) with one member unchanged");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "retry_all woke early");
    atomically(|tx| tx.write(&reports[2], true));
    assert_eq!(finish(&rx, "retry_all(&[&array])"), 3);
}

#[test]
fn retry_on_only_empty_groups_panics_instead_of_hanging() {
    let v = TVar::new(0u8);
    let none: Vec<TVar<u8>> = Vec::new();
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> {
            tx.read(&v)?;
            tx.retry_on(&[&none])
        })
    }));
    let msg = panic_message(&*r.expect_err("an empty group names nothing to wait on"));
    assert!(msg.contains("at least one TVar"), "{msg}");
    let empty: &[TVar<u8>] = &[];
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> { tx.retry_all(&[&none, &empty]) })
    }));
    assert!(r.is_err(), "retry_all with only empty groups must panic");
}
