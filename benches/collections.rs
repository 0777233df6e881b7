//! Collections beside their usual alternatives, in one run: `TQueue`/`TBQueue` against
//! crossbeam-channel (SPSC and MPMC, unbounded and bounded), `TMap` against `Mutex<HashMap>` and
//! `RwLock<HashMap>` (inserts and gets, 1 and 2 threads; a snapshot of 1,000 entries against a
//! clone), `TArray`, `TSet`, `TChan` and
//! `TPriorityQueue` beside their lock-based counterparts (and async-stm's `TChan`, the only peer
//! with one of these), and a transaction that pushes to a queue and updates a map together
//! against the same with two mutexes. Run with
//! `cargo bench -p mvstm-benches --bench collections`; figures go in `docs/collections.md`.

use criterion::{criterion_group, criterion_main, Criterion};
use mvstm::atomically;
use mvstm::collections::{TArray, TBQueue, TChan, TMap, TPriorityQueue, TQueue, TSet};
use parking_lot::{Mutex, RwLock};
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
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

const SLOTS: u64 = 1_024;

fn arrays(c: &mut Criterion) {
    for threads in [1u64, 2] {
        let mut g = c.benchmark_group(format!("array_update_{threads}t"));
        // Thread t updates the slots congruent to t: disjoint indices.
        let slot = move |t: u64, i: u64| ((i * 7 % (SLOTS / threads)) * threads + t) as usize;
        g.bench_function("tarray", |b| {
            let a = TArray::new(SLOTS as usize, 0u64);
            b.iter_custom(|iters| {
                let a = a.clone();
                run_threads(threads, iters, move |t, i| {
                    atomically(|tx| a.update(tx, slot(t, i), |n| n + 1).map(drop))
                })
            })
        });
        g.bench_function("mutex_vec", |b| {
            let a = Arc::new(Mutex::new(vec![0u64; SLOTS as usize]));
            b.iter_custom(|iters| {
                let a = a.clone();
                run_threads(threads, iters, move |t, i| a.lock()[slot(t, i)] += 1)
            })
        });
        g.bench_function("vec_of_mutexes", |b| {
            let a: Arc<Vec<Mutex<u64>>> = Arc::new((0..SLOTS).map(|_| Mutex::new(0)).collect());
            b.iter_custom(|iters| {
                let a = a.clone();
                run_threads(threads, iters, move |t, i| *a[slot(t, i)].lock() += 1)
            })
        });
        g.finish();
    }
}

fn sets(c: &mut Criterion) {
    let mut g = c.benchmark_group("set_insert_remove_1t");
    g.bench_function("tset", |b| {
        let s: TSet<u64> = TSet::new();
        b.iter_custom(|iters| {
            let s = s.clone();
            run_threads(1, iters, move |_, i| {
                let k = i % KEYS;
                if atomically(|tx| s.insert(tx, k)) {
                    black_box(atomically(|tx| s.contains(tx, &(k / 2))));
                } else {
                    atomically(|tx| s.remove(tx, &k));
                }
            })
        })
    });
    g.bench_function("mutex_hashset", |b| {
        let s = Arc::new(Mutex::new(HashSet::new()));
        b.iter_custom(|iters| {
            let s = s.clone();
            run_threads(1, iters, move |_, i| {
                let k = i % KEYS;
                if s.lock().insert(k) {
                    black_box(s.lock().contains(&(k / 2)));
                } else {
                    s.lock().remove(&k);
                }
            })
        })
    });
    g.finish();
}

fn map_snapshots(c: &mut Criterion) {
    // A snapshot of a map of 1,000 entries, taken (not consumed), and the same consumed.
    // `TMap::iter` keeps the trie roots; `TMap::snapshot` and `HashMap::clone` copy the entries.
    const ENTRIES: u64 = 1_000;
    let tmap: TMap<u64, u64> = TMap::new();
    let mutex = Mutex::new(HashMap::new());
    for k in 0..ENTRIES {
        atomically(|tx| tmap.insert(tx, k, k).map(drop));
        mutex.lock().insert(k, k);
    }
    let mut g = c.benchmark_group("map_snapshot_1000");
    g.bench_function("tmap_iter", |b| {
        b.iter(|| black_box(atomically(|tx| tmap.iter(tx))))
    });
    g.bench_function("tmap_snapshot_vec", |b| {
        b.iter(|| black_box(atomically(|tx| tmap.snapshot(tx))))
    });
    g.bench_function("mutex_hashmap_clone", |b| {
        b.iter(|| black_box(mutex.lock().clone()))
    });
    g.bench_function("tmap_iter_sum", |b| {
        b.iter(|| atomically(|tx| tmap.iter(tx)).map(|(_, v)| v).sum::<u64>())
    });
    g.bench_function("mutex_hashmap_sum", |b| {
        b.iter(|| mutex.lock().values().sum::<u64>())
    });
    g.finish();
}

fn chans(c: &mut Criterion) {
    // One thread: send one message, receive it (one reader). async-stm's `TChan` is a queue
    // with one read end, so this is the case it can do.
    let mut g = c.benchmark_group("chan_send_recv_1t");
    g.bench_function("tchan", |b| {
        let ch = TChan::new();
        let r = ch.subscribe();
        b.iter(|| {
            atomically(|tx| ch.send(tx, 1u64));
            black_box(atomically(|tx| r.recv(tx)))
        })
    });
    g.bench_function("async_stm_tchan", |b| {
        use async_stm::queues::TQueueLike;
        let ch = async_stm::queues::tchan::TChan::<u64>::new();
        b.iter(|| {
            ready(async_stm::atomically(|| ch.write(1)));
            black_box(ready(async_stm::atomically(|| ch.read())))
        })
    });
    g.bench_function("mutex_vecdeque", |b| {
        let q = Mutex::new(VecDeque::new());
        b.iter(|| {
            q.lock().push_back(1u64);
            black_box(q.lock().pop_front())
        })
    });
    g.finish();

    // Broadcast: one sender thread, two reader threads that each receive every message,
    // per message sent. The lock-free counterpart is a crossbeam channel per reader.
    let mut g = c.benchmark_group("chan_broadcast_1to2");
    g.bench_function("tchan", |b| {
        b.iter_custom(|iters| {
            let ch = TChan::new();
            let readers: Vec<_> = (0..2).map(|_| ch.subscribe()).collect();
            broadcast(
                iters,
                move |i| atomically(|tx| ch.send(tx, i)),
                readers
                    .into_iter()
                    .map(|r| move || atomically(|tx| r.recv(tx)))
                    .collect(),
            )
        })
    });
    g.bench_function("crossbeam_per_reader", |b| {
        b.iter_custom(|iters| {
            let (txs, rxs): (Vec<_>, Vec<_>) =
                (0..2).map(|_| crossbeam_channel::unbounded()).unzip();
            broadcast(
                iters,
                move |i| txs.iter().for_each(|t| t.send(i).unwrap()),
                rxs.into_iter().map(|r| move || r.recv().unwrap()).collect(),
            )
        })
    });
    g.finish();
}

/// One thread sends `iters` (at least `MIN_OPS`) messages through `send` while each of `recvs`
/// receives them all on its own thread; the wall time scaled to `iters`.
fn broadcast<S, R>(iters: u64, send: S, recvs: Vec<R>) -> Duration
where
    S: Fn(u64) + Send + 'static,
    R: Fn() -> u64 + Send + 'static,
{
    let n = iters.max(MIN_OPS);
    let start = Instant::now();
    let rs: Vec<_> = recvs
        .into_iter()
        .map(|r| thread::spawn(move || (0..n).map(|_| r()).sum::<u64>()))
        .collect();
    let s = thread::spawn(move || (0..n).for_each(send));
    s.join().unwrap();
    for r in rs {
        black_box(r.join().unwrap());
    }
    start.elapsed().mul_f64(iters as f64 / n as f64)
}

fn pqueues(c: &mut Criterion) {
    // A queue of 1,000 elements; each operation pushes a pseudo-random element and pops the
    // greatest (in two transactions), so the size stays put.
    for threads in [1u64, 2] {
        let mut g = c.benchmark_group(format!("pqueue_push_pop_{threads}t"));
        let value = |t: u64, i: u64| (i * 7_919 + t * 104_729) % 1_000_003;
        g.bench_function("tpriorityqueue", |b| {
            let q = TPriorityQueue::new();
            atomically(|tx| (0..1_000u64).try_for_each(|i| q.push(tx, value(9, i))));
            b.iter_custom(|iters| {
                let q = q.clone();
                run_threads(threads, iters, move |t, i| {
                    atomically(|tx| q.push(tx, value(t, i)));
                    black_box(atomically(|tx| q.pop(tx)));
                })
            })
        });
        g.bench_function("mutex_binaryheap", |b| {
            let q = Arc::new(Mutex::new(
                (0..1_000u64)
                    .map(|i| value(9, i))
                    .collect::<BinaryHeap<_>>(),
            ));
            b.iter_custom(|iters| {
                let q = q.clone();
                run_threads(threads, iters, move |t, i| {
                    q.lock().push(value(t, i));
                    black_box(q.lock().pop());
                })
            })
        });
        g.finish();
    }
}

fn queue_and_map(c: &mut Criterion) {
    // The reason to use STM collections: one atomic step that takes a job from a queue, records
    // its result in a map and queues a follow-up. Against two mutexes taken in a fixed order
    // (queue, then map) and held together, which is what the same atomicity costs with locks.
    for threads in [1u64, 2] {
        let mut g = c.benchmark_group(format!("queue_and_map_{threads}t"));
        let key = move |t: u64, i: u64| (i % KEYS) * threads + t;
        g.bench_function("tqueue_tmap", |b| {
            let (q, m) = (TQueue::new(), TMap::new());
            atomically(|tx| (0..64u64).try_for_each(|i| q.push(tx, i)));
            b.iter_custom(|iters| {
                let (q, m) = (q.clone(), m.clone());
                run_threads(threads, iters, move |t, i| {
                    atomically(|tx| {
                        let job = q.pop(tx)?;
                        m.insert(tx, key(t, i), job)?;
                        q.push(tx, job + 1)
                    })
                })
            })
        });
        g.bench_function("two_mutexes", |b| {
            let q = Arc::new(Mutex::new((0..64u64).collect::<VecDeque<_>>()));
            let m = Arc::new(Mutex::new(HashMap::new()));
            b.iter_custom(|iters| {
                let (q, m) = (q.clone(), m.clone());
                run_threads(threads, iters, move |t, i| {
                    let mut q = q.lock();
                    let mut m = m.lock();
                    let job = q.pop_front().unwrap();
                    m.insert(key(t, i), job);
                    q.push_back(job + 1);
                })
            })
        });
        g.finish();
    }
}

/// Drive an async-stm transaction that never blocks: it is ready on its first poll.
fn ready<T>(fut: impl std::future::Future<Output = T>) -> T {
    use std::task::{Context, Poll, Waker};
    match std::pin::pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an async-stm transaction blocked in a benchmark"),
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
}

criterion_group! { name = benches; config = config(); targets = queues, maps, map_snapshots, arrays, sets, chans, pqueues, queue_and_map }
criterion_main!(benches);
