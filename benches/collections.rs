//! Collections beside their usual alternatives, in one run: `TQueue`/`TBQueue` against
//! crossbeam-channel (SPSC and MPMC, unbounded and bounded), `TMap` against `Mutex<HashMap>` and
//! `RwLock<HashMap>` (inserts and gets, 1 and 2 threads). Run with
//! `cargo bench -p mvstm-benches --bench collections`; figures go in `docs/collections.md`.

use criterion::{criterion_group, criterion_main, Criterion};
use mvstm::atomically;
use mvstm::collections::{TBQueue, TMap, TQueue};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const BOUND: usize = 64;

/// Operations a sample runs at least, so that starting its threads does not weigh in; the time
/// is scaled back to the number of iterations criterion asked for.
const MIN_OPS: u64 = 20_000;

/// Time `producers` threads sending items to `consumers` threads, with the queue operations
/// given as closures; returns the wall time for `iters` items.
fn run_queue<S, R>(producers: usize, consumers: usize, iters: u64, send: S, recv: R) -> Duration
where
    S: Fn(u64) + Send + Sync + 'static,
    R: Fn() -> u64 + Send + Sync + 'static,
{
    let (send, recv) = (Arc::new(send), Arc::new(recv));
    let items = iters.max(MIN_OPS);
    let per_producer = items / producers as u64;
    let per_consumer = per_producer * producers as u64 / consumers as u64;
    let start = Instant::now();
    let ps: Vec<_> = (0..producers)
        .map(|_| {
            let send = send.clone();
            thread::spawn(move || (0..per_producer).for_each(|i| send(i)))
        })
        .collect();
    let cs: Vec<_> = (0..consumers)
        .map(|_| {
            let recv = recv.clone();
            thread::spawn(move || (0..per_consumer).map(|_| recv()).sum::<u64>())
        })
        .collect();
    for p in ps {
        p.join().unwrap();
    }
    for c in cs {
        black_box(c.join().unwrap());
    }
    let moved = per_consumer * consumers as u64;
    start.elapsed().mul_f64(iters as f64 / moved as f64)
}

fn queues(c: &mut Criterion) {
    for (name, producers, consumers) in [("spsc", 1, 1), ("mpmc", 2, 2)] {
        let mut g = c.benchmark_group(format!("queue_{name}"));
        g.bench_function("tqueue", |b| {
            b.iter_custom(|iters| {
                let q = TQueue::new();
                let q2 = q.clone();
                run_queue(
                    producers,
                    consumers,
                    iters,
                    move |i| atomically(|tx| q.push(tx, i)),
                    move || atomically(|tx| q2.pop(tx)),
                )
            })
        });
        g.bench_function("tbqueue_64", |b| {
            b.iter_custom(|iters| {
                let q = TBQueue::new(BOUND);
                let q2 = q.clone();
                run_queue(
                    producers,
                    consumers,
                    iters,
                    move |i| atomically(|tx| q.push(tx, i)),
                    move || atomically(|tx| q2.pop(tx)),
                )
            })
        });
        g.bench_function("crossbeam_unbounded", |b| {
            b.iter_custom(|iters| {
                let (s, r) = crossbeam_channel::unbounded();
                run_queue(
                    producers,
                    consumers,
                    iters,
                    move |i| s.send(i).unwrap(),
                    move || r.recv().unwrap(),
                )
            })
        });
        g.bench_function("crossbeam_bounded_64", |b| {
            b.iter_custom(|iters| {
                let (s, r) = crossbeam_channel::bounded(BOUND);
                run_queue(
                    producers,
                    consumers,
                    iters,
                    move |i| s.send(i).unwrap(),
                    move || r.recv().unwrap(),
                )
            })
        });
        g.finish();
    }
}

/// `threads` threads share `iters` operations `op(thread, i)`; the wall time for `iters`.
fn run_threads(
    threads: u64,
    iters: u64,
    op: impl Fn(u64, u64) + Send + Sync + 'static,
) -> Duration {
    let op = Arc::new(op);
    let ops = iters.max(MIN_OPS) / threads;
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let op = op.clone();
            thread::spawn(move || (0..ops).for_each(|i| op(t, i)))
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (ops * threads) as f64)
}

const KEYS: u64 = 4_096;

fn maps(c: &mut Criterion) {
    for threads in [1u64, 2] {
        let mut g = c.benchmark_group(format!("map_insert_{threads}t"));
        // Each thread writes its own keys (thread t: keys congruent to t), per operation.
        let key = move |t: u64, i: u64| (i % KEYS) * threads + t;
        g.bench_function("tmap", |b| {
            let m: TMap<u64, u64> = TMap::new();
            b.iter_custom(|iters| {
                let m = m.clone();
                run_threads(threads, iters, move |t, i| {
                    atomically(|tx| m.insert(tx, key(t, i), i).map(drop))
                })
            })
        });
        g.bench_function("mutex_hashmap", |b| {
            let m = Arc::new(Mutex::new(HashMap::new()));
            b.iter_custom(|iters| {
                let m = m.clone();
                run_threads(threads, iters, move |t, i| {
                    m.lock().insert(key(t, i), i);
                })
            })
        });
        g.bench_function("rwlock_hashmap", |b| {
            let m = Arc::new(RwLock::new(HashMap::new()));
            b.iter_custom(|iters| {
                let m = m.clone();
                run_threads(threads, iters, move |t, i| {
                    m.write().insert(key(t, i), i);
                })
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("map_get_{threads}t"));
        let tmap: TMap<u64, u64> = TMap::new();
        let mutex = Arc::new(Mutex::new(HashMap::new()));
        let rwlock = Arc::new(RwLock::new(HashMap::new()));
        for k in 0..KEYS * 2 {
            atomically(|tx| tmap.insert(tx, k, k).map(drop));
            mutex.lock().insert(k, k);
            rwlock.write().insert(k, k);
        }
        g.bench_function("tmap", |b| {
            b.iter_custom(|iters| {
                let m = tmap.clone();
                run_threads(threads, iters, move |t, i| {
                    black_box(atomically(|tx| m.get(tx, &key(t, i))));
                })
            })
        });
        g.bench_function("mutex_hashmap", |b| {
            b.iter_custom(|iters| {
                let m = mutex.clone();
                run_threads(threads, iters, move |t, i| {
                    black_box(m.lock().get(&key(t, i)).copied());
                })
            })
        });
        g.bench_function("rwlock_hashmap", |b| {
            b.iter_custom(|iters| {
                let m = rwlock.clone();
                run_threads(threads, iters, move |t, i| {
                    black_box(m.read().get(&key(t, i)).copied());
                })
            })
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
}

criterion_group! { name = benches; config = config(); targets = queues, maps }
criterion_main!(benches);
