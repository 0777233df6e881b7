//! Single-operation access (`TVar::store`, `swap`, `compare_and_set`, `update`; ScalaSTM's
//! `Ref.View`): each is a whole transaction on one variable. They return what their transaction
//! saw, lose no update against each other or against transactions, wake `retry` waiters, drop
//! every value exactly once, and refuse to run inside a transaction.

mod common;

use common::{on_exiting_thread, panic_message, scala_hash, DropCounter};
use mvstm::{atomically, retry, TVar};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// Compare-and-set needs `PartialEq`: counted values are equal when their ids are.
impl PartialEq for common::Counted {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

#[test]
fn each_operation_returns_what_its_transaction_saw() {
    let v = TVar::new(1u64);
    v.store(2);
    assert_eq!(v.load(), 2);
    assert_eq!(v.swap(3), 2);
    assert_eq!(v.compare_and_set(&3, 4), Ok(3));
    assert_eq!(v.compare_and_set(&9, 5), Err(4));
    assert_eq!(v.load(), 4, "a failed compare_and_set wrote");
    assert_eq!(v.update(|x| x * 10), 40);
    assert_eq!(atomically(|tx| tx.read(&v)), 40);
}

// Ported from ScalaSTM's IsolatedRefSuite (jvm/src/test/scala/scala/concurrent/stm/), the
// single-view cases ("compareAndSet", "swap", "set + swap", "transform", "transformAndGet",
// "excepting transform", "excepting compareAndSet"), with `Ref.View` as the single operations.

#[test]
fn scalastm_isolated_ref_compare_and_set() {
    let v = TVar::new(1i32);
    for i in 1..10 {
        assert_eq!(v.load(), i);
        assert!(v.compare_and_set(&0, -1).is_err());
        assert!(v.compare_and_set(&i, i + 1).is_ok());
        assert!(v.compare_and_set(&i, i + 1).is_err());
    }
    assert_eq!(v.load(), 10);
}

#[test]
fn scalastm_isolated_ref_swap_and_set_plus_swap() {
    let v = TVar::new(1i32);
    for i in 1..10 {
        assert_eq!(v.swap(i + 1), i);
    }
    assert_eq!(v.load(), 10);
    let w = TVar::new(1i32);
    for i in 1..10 {
        w.store(-1);
        assert_eq!(w.swap(i + 1), -1);
    }
    assert_eq!(w.load(), 10);
}

#[test]
fn scalastm_isolated_ref_transform_and_get() {
    let v = TVar::new(1i32);
    for i in 1..10 {
        assert_eq!(v.load(), i);
        assert_eq!(v.update(|x| x + 1), i + 1);
    }
    assert_eq!(v.load(), 10);
}

#[test]
fn scalastm_isolated_ref_excepting_transform_writes_nothing() {
    let v = TVar::new(1i32);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        v.update(|_| panic!("user exception"));
    }))
    .expect_err("the panic reaches the caller");
    assert_eq!(panic_message(&*caught), "user exception");
    assert_eq!(v.load(), 1);
    v.update(|x| x + 1);
    assert_eq!(v.load(), 2);
}

#[test]
fn scalastm_isolated_ref_arithmetic_assignments() {
    // "+= 1", "-= -1" and "*= 2": ScalaSTM's view operators are `transform`s, here `update`.
    let v = TVar::new(1i32);
    for i in 1..10 {
        assert_eq!(v.load(), i);
        v.update(|x| x + 1);
    }
    assert_eq!(v.load(), 10);
    let w = TVar::new(1i32);
    for i in 1..10 {
        assert_eq!(w.load(), i);
        w.update(|x| x - -1);
    }
    assert_eq!(w.load(), 10);
    let m = TVar::new(1i32);
    for _ in 1..10 {
        m.update(|x| x * 2);
    }
    assert_eq!(m.load(), 512);
}

#[test]
fn scalastm_isolated_ref_await_and_try_await() {
    // "initially true await", "initially true tryAwait" and "false tryAwait with a zero
    // timeout": `await(pred)` is a transaction that retries until the predicate holds, and
    // `tryAwait(timeout)(pred)` the same under `atomically_timeout`.
    let v = &TVar::new(10i32);
    let until = |pred: fn(i32) -> bool| {
        move |tx: &mut mvstm::Txn| {
            if pred(tx.read(v)?) {
                Ok(true)
            } else {
                retry()
            }
        }
    };
    assert!(atomically(until(|x| x == 10)));
    assert_eq!(
        mvstm::atomically_timeout(Duration::from_secs(10), until(|x| x == 10)),
        Ok(true)
    );
    assert_eq!(
        mvstm::atomically_timeout(Duration::ZERO, until(|x| x == 20)),
        Err(mvstm::TimedOut)
    );
}

/// ScalaSTM's `AngryEquals`: values whose `==` panics between equal polarities.
#[derive(Clone, Debug)]
struct AngryEquals {
    polarity: bool,
    id: u32,
}

impl PartialEq for AngryEquals {
    fn eq(&self, rhs: &Self) -> bool {
        if self.id == rhs.id {
            return true;
        }
        assert!(self.polarity != rhs.polarity, "equal polarities repel");
        false
    }
}

#[test]
fn scalastm_isolated_ref_excepting_compare_and_set() {
    let prev = AngryEquals {
        polarity: true,
        id: 0,
    };
    let v = TVar::new(prev.clone());
    let angry = |polarity, id| AngryEquals { polarity, id };
    // `==` panics (comparing the held value with an equal-polarity one): nothing is written.
    assert!(catch_unwind(AssertUnwindSafe(
        || v.compare_and_set(&angry(true, 1), angry(true, 2))
    ))
    .is_err());
    assert_eq!(v.load().id, 0);
    assert!(v.compare_and_set(&angry(false, 3), angry(true, 4)).is_err());
    let repl = angry(false, 5);
    assert!(v.compare_and_set(&prev, repl.clone()).is_ok());
    assert_eq!(v.load().id, repl.id);
}

#[test]
fn operations_refuse_to_run_inside_a_transaction() {
    let v = TVar::new(0u32);
    type Op = Box<dyn Fn(&TVar<u32>)>;
    let cases: [(&str, Op); 4] = [
        ("store", Box::new(|v| v.store(1))),
        (
            "swap",
            Box::new(|v| {
                let _ = v.swap(1);
            }),
        ),
        (
            "compare_and_set",
            Box::new(|v| {
                let _ = v.compare_and_set(&0, 1);
            }),
        ),
        (
            "update",
            Box::new(|v| {
                let _ = v.update(|x| x + 1);
            }),
        ),
    ];
    for (name, op) in &cases {
        let caught = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| {
                tx.read(&v)?;
                op(&v);
                Ok(())
            })
        }))
        .expect_err("a single operation inside a body panics");
        let message = panic_message(&*caught);
        assert!(
            message.contains(&format!("`TVar::{name}` called inside a transaction")),
            "{name}: {message}"
        );
    }
    assert_eq!(v.load(), 0, "a refused operation wrote");
}

thread_local! {
    static LOCATIONS: std::cell::RefCell<Vec<(String, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[test]
fn a_refused_operation_points_at_the_caller() {
    // A hook that records each panic's location on the panicking thread (other tests' panics
    // land in their own threads' lists), then prints as usual.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location() {
                let _ =
                    LOCATIONS.try_with(|l| l.borrow_mut().push((at.file().to_string(), at.line())));
            }
            default(info);
        }));
    });
    let v = TVar::new(0u32);
    let line = line!() + 3;
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|_| {
            v.store(7);
            Ok(())
        })
    }));
    assert!(r.is_err());
    let first = LOCATIONS.with(|l| l.borrow().first().cloned());
    assert_eq!(
        first,
        Some((file!().to_string(), line)),
        "the panic points inside mvstm"
    );
}

#[test]
fn operations_inside_hooks_after_commit_are_allowed() {
    // `after_commit` hooks run outside the transaction: a single operation there is a
    // transaction of its own, as `atomically` would be.
    let (a, b) = (TVar::new(0u32), TVar::new(0u32));
    let b2 = b.clone();
    atomically(|tx| {
        tx.write(&a, 1)?;
        let b2 = b2.clone();
        tx.after_commit(move || b2.store(2));
        Ok(())
    });
    assert_eq!((a.load(), b.load()), (1, 2));
}

#[test]
fn a_store_wakes_a_thread_waiting_in_retry() {
    let v = TVar::new(0u32);
    let (tx_done, rx_done) = mpsc::channel();
    let waited = v.clone();
    let waiter = thread::spawn(move || {
        let got = atomically(|tx| match tx.read(&waited)? {
            0 => retry(),
            x => Ok(x),
        });
        tx_done.send(got).unwrap();
    });
    // Give the waiter time to park (the test passes either way; parked is the case of interest).
    thread::sleep(Duration::from_millis(20));
    assert!(rx_done.try_recv().is_err(), "the waiter did not wait");
    v.store(5);
    let got = rx_done
        .recv_timeout(Duration::from_secs(20))
        .expect("a store woke the waiter");
    assert_eq!(got, 5);
    waiter.join().unwrap();
}

#[test]
fn every_operation_wakes_waiters() {
    for op in 0..3 {
        let v = TVar::new(0u32);
        let waited = v.clone();
        let (tx_done, rx_done) = mpsc::channel();
        let waiter = thread::spawn(move || {
            tx_done
                .send(atomically(|tx| match tx.read(&waited)? {
                    0 => retry(),
                    x => Ok(x),
                }))
                .unwrap();
        });
        thread::sleep(Duration::from_millis(10));
        match op {
            0 => {
                let _ = v.swap(1);
            }
            1 => assert_eq!(v.compare_and_set(&0, 1), Ok(0)),
            _ => {
                let _ = v.update(|x| x + 1);
            }
        }
        assert_eq!(
            rx_done.recv_timeout(Duration::from_secs(20)),
            Ok(1),
            "op {op}"
        );
        waiter.join().unwrap();
    }
}

#[test]
fn a_store_waits_for_an_on_commit_hook_that_read_the_variable() {
    // A committer with an `on_commit` hook holds what it read shared while the hook runs: its
    // read of `v` must stay true through the hook, so a store of `v` waits until the commit is
    // over, then goes through.
    let (v, w) = (TVar::new(0u32), TVar::new(0u32));
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let committer = {
        let (v, w) = (v.clone(), w.clone());
        common::spawn_reporting(move || {
            let (entered_tx, release_rx) = (
                std::sync::Mutex::new(Some(entered_tx)),
                std::sync::Mutex::new(Some(release_rx)),
            );
            atomically(|tx| {
                let seen = tx.read(&v)?;
                tx.write(&w, seen + 1)?;
                let entered_tx = entered_tx.lock().unwrap().take();
                let release_rx = release_rx.lock().unwrap().take();
                tx.on_commit(move || {
                    if let (Some(entered), Some(release)) = (entered_tx, release_rx) {
                        entered.send(()).unwrap();
                        release.recv_timeout(Duration::from_secs(20)).unwrap();
                    }
                });
                Ok(())
            })
        })
    };
    entered
        .recv_timeout(Duration::from_secs(20))
        .expect("the hook ran");
    let storer = {
        let v = v.clone();
        common::spawn_reporting(move || v.store(5))
    };
    thread::sleep(Duration::from_millis(30));
    common::still_blocked(&storer, "a store of a variable an on_commit hook holds");
    release.send(()).unwrap();
    common::finish(&committer, "the committer");
    common::finish(&storer, "the store");
    assert_eq!((v.load(), w.load()), (5, 1));
}

#[test]
fn concurrent_updates_and_transactions_lose_nothing() {
    const PER_THREAD: u64 = 20_000;
    let v = TVar::new(0u64);
    let cas_wins = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (v, cas_wins) = (v.clone(), cas_wins.clone());
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    match t {
                        0 => {
                            let _ = v.update(|x| x + 1);
                        }
                        1 => atomically(|tx| tx.modify(&v, |x| x + 1)),
                        // A compare-and-set loop: retries on the value it was shown.
                        2 => {
                            let mut seen = v.load();
                            loop {
                                match v.compare_and_set(&seen, seen + 1) {
                                    Ok(_) => break,
                                    Err(now) => seen = now,
                                }
                            }
                            cas_wins.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => unreachable!(),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(cas_wins.load(Ordering::Relaxed) as u64, PER_THREAD);
    assert_eq!(v.load(), 3 * PER_THREAD, "an increment was lost");
}

#[test]
fn concurrent_swaps_conserve_the_tokens() {
    // Each thread holds a token and swaps it with the variable's, over and over: as every swap
    // hands back exactly what it replaced, the tokens held at the end plus the variable's are
    // the ones there were at the start.
    let v = TVar::new(100u32);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let v = v.clone();
            thread::spawn(move || {
                let mut mine = t;
                for _ in 0..20_000 {
                    mine = v.swap(mine);
                }
                mine
            })
        })
        .collect();
    let mut tokens: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    tokens.push(v.load());
    tokens.sort_unstable();
    assert_eq!(tokens, [0, 1, 2, 3, 100], "a swap lost or copied a token");
}

#[test]
fn snapshots_never_see_a_single_operation_half_done_among_transactions() {
    // Transfers keep a + b constant; single operations on a third variable interleave with
    // them; a reader checks the invariant and that the third variable only grows.
    let (a, b, c) = (TVar::new(1_000i64), TVar::new(0i64), TVar::new(0u64));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let (a, b, stop) = (a.clone(), b.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                atomically(|tx| {
                    tx.modify(&a, |x| x - 1)?;
                    tx.modify(&b, |x| x + 1)
                });
            }
        }));
    }
    {
        let (c, stop) = (c.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                c.update(|x| x + 1);
            }
        }));
    }
    let mut last = 0;
    for _ in 0..20_000 {
        let (x, y, z) = atomically(|tx| Ok((tx.read(&a)?, tx.read(&b)?, tx.read(&c)?)));
        assert_eq!(x + y, 1_000, "a snapshot saw half a transfer");
        assert!(z >= last, "a snapshot went back in time: {z} after {last}");
        last = z;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_store_that_returned_is_seen_by_every_later_transaction() {
    let v = TVar::new(0u64);
    let reader = {
        let v = v.clone();
        thread::spawn(move || {
            let mut last = 0;
            for _ in 0..50_000 {
                let now = atomically(|tx| tx.read(&v));
                assert!(now >= last, "went back from {last} to {now}");
                last = now;
            }
        })
    };
    for i in 1..=50_000 {
        v.store(i);
        assert_eq!(
            atomically(|tx| tx.read(&v)),
            i,
            "a transaction after store missed it"
        );
    }
    reader.join().unwrap();
}

#[test]
fn values_are_dropped_exactly_once() {
    let drops = DropCounter::new();
    let v = TVar::new(drops.value(0));
    let d = drops.clone();
    let v2 = v.clone();
    on_exiting_thread(move || {
        for i in 1..2_000 {
            match i % 4 {
                0 => v2.store(d.value(i)),
                1 => drop(v2.swap(d.value(i))),
                2 => {
                    // One that matches and one that does not (its `new` is dropped unwritten).
                    let current = v2.load();
                    assert!(v2.compare_and_set(&current, d.value(i)).is_ok());
                    assert!(v2.compare_and_set(&d.value(u64::MAX), d.value(i)).is_err());
                }
                _ => drop(v2.update(|old| d.value(old.id + 1))),
            }
        }
    });
    drop(v);
    drops.assert_all_dropped("single operations");
}

#[test]
fn contended_compare_and_set_gives_back_its_value_intact() {
    // Two threads hammer one variable with update; the value written travels back out of a
    // node whose lock failed and into the next try, and must arrive whole.
    let drops = DropCounter::new();
    let v = TVar::new(drops.value(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (v, drops) = (v.clone(), drops.clone());
            thread::spawn(move || {
                for _ in 0..20_000 {
                    v.update(|old| drops.value(old.id + 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(v.load().id, 40_000);
    assert!(!drops.dropped_twice());
    drop(v);
    drops.assert_all_dropped("contended updates");
}

// Ported from ScalaSTM's HistogramSuite (jvm/src/test/scala/scala/concurrent/stm/), the
// `Array[Ref[Int]]` cases with single operations: "single-op-txn" (every sample through
// `Ref.View`) and "mix" (half of them), 10K samples. The transactional half over a `TArray` is in
// `tests/peer_collections.rs`.

/// `HistogramSuite.histogram` over a `Vec` of TVars: a sample is a single operation with
/// probability `single_pct` (`update` on even `i`, a `compare_and_set` loop on odd, as the
/// original's `transform` and `compareAndSet`), otherwise part of a transaction of
/// `samples_per_txn` increments. The buckets then hold every sample.
fn histogram(buckets: usize, workers: i32, samples_per_worker: i32, single_pct: i32, per_txn: i32) {
    let hist: Arc<Vec<TVar<i64>>> = Arc::new((0..buckets).map(|_| TVar::new(0)).collect());
    let bucket = move |a: i32, b: i32| (scala_hash(a, b) % buckets as i32).unsigned_abs() as usize;
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let hist = hist.clone();
            thread::spawn(move || {
                let mut i = 0;
                while i < samples_per_worker {
                    if (scala_hash(i, worker) % 100).abs() < single_pct {
                        let var = &hist[bucket(worker, i)];
                        if i % 2 == 0 {
                            var.update(|n| n + 1);
                        } else {
                            let mut x = var.load();
                            while let Err(now) = var.compare_and_set(&x, x + 1) {
                                x = now;
                            }
                        }
                        i += 1;
                    } else {
                        atomically(|tx| {
                            let mut j = 0;
                            while j < per_txn && i + j < samples_per_worker {
                                tx.modify(&hist[bucket(worker, i + j)], |n| n + 1)?;
                                j += 1;
                            }
                            Ok(())
                        });
                        i += per_txn;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let sum: i64 = atomically(|tx| hist.iter().map(|v| tx.read(v)).sum::<Result<i64, _>>());
    assert_eq!(sum, i64::from(samples_per_worker * workers));
}

/// ScalaSTM `HistogramSuite`, "single-op-txn, ... Array[Ref[Int]], 10K" and "mix, ...,
/// Array[Ref[Int]], 3 incr per txn, 10K", for 1, 30 and 10,000 buckets and 1, 2 and 4 threads
/// (the original goes up to twice the processors).
#[test]
fn scalastm_histogram_with_single_operations() {
    for buckets in [1, 30, 10_000] {
        for threads in [1, 2, 4] {
            histogram(buckets, threads, 10_000 / threads, 100, 1);
            histogram(buckets, threads, 10_000 / threads, 50, 3);
        }
    }
}
