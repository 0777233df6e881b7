//! Micro benchmarks of the core beside locks and the peer STM crates, in one run.
//!
//! Single-threaded costs of: a read-only transaction of 1 TVar, an increment of 1 TVar, a
//! read-only transaction of 64 TVars, and the hook machinery. Run with
//! `cargo bench --bench core`; figures go in the README, never in test assertions.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use parking_lot::{Mutex, RwLock};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Drive an async-stm transaction that never blocks: it is ready on its first poll.
fn ready<T>(fut: impl Future<Output = T>) -> T {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an async-stm transaction blocked in a benchmark"),
    }
}

fn read_1(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_1");
    let v = mvstm::TVar::new(1u64);
    g.bench_function("mvstm", |b| {
        b.iter(|| mvstm::atomically(|tx| tx.read(black_box(&v))))
    });
    g.bench_function("mvstm_load", |b| b.iter(|| black_box(&v).load()));
    let m = Mutex::new(1u64);
    g.bench_function("mutex", |b| b.iter(|| *black_box(&m).lock()));
    let rw = RwLock::new(1u64);
    g.bench_function("rwlock", |b| b.iter(|| *black_box(&rw).read()));
    let f = fast_stm::TVar::new(1u64);
    g.bench_function("fast-stm", |b| {
        b.iter(|| fast_stm::atomically(|tx| black_box(&f).read(tx)))
    });
    let a = async_stm::TVar::new(1u64);
    g.bench_function("async-stm", |b| {
        b.iter(|| ready(async_stm::atomically(|| black_box(&a).read_clone())))
    });
    let s = stm::TVar::new(1u64);
    g.bench_function("stm", |b| {
        b.iter(|| stm::atomically(|tx| black_box(&s).read(tx)))
    });
    g.finish();
}

fn increment_1(c: &mut Criterion) {
    let mut g = c.benchmark_group("increment_1");
    let v = mvstm::TVar::new(0u64);
    g.bench_function("mvstm", |b| {
        b.iter(|| mvstm::atomically(|tx| tx.modify(black_box(&v), |x| x + 1)))
    });
    let m = Mutex::new(0u64);
    g.bench_function("mutex", |b| b.iter(|| *black_box(&m).lock() += 1));
    let f = fast_stm::TVar::new(0u64);
    g.bench_function("fast-stm", |b| {
        b.iter(|| fast_stm::atomically(|tx| black_box(&f).modify(tx, |x| x + 1)))
    });
    let a = async_stm::TVar::new(0u64);
    g.bench_function("async-stm", |b| {
        b.iter(|| ready(async_stm::atomically(|| black_box(&a).update(|x| x + 1))))
    });
    let s = stm::TVar::new(0u64);
    g.bench_function("stm", |b| {
        b.iter(|| stm::atomically(|tx| black_box(&s).modify(tx, |x| x + 1)))
    });
    g.finish();
}

fn read_64(c: &mut Criterion) {
    const N: u64 = 64;
    let mut g = c.benchmark_group("read_64");
    let vs: Vec<_> = (0..N).map(mvstm::TVar::new).collect();
    g.bench_function("mvstm", |b| {
        b.iter(|| {
            mvstm::atomically(|tx| {
                let mut sum = 0;
                for v in black_box(&vs) {
                    sum += tx.read(v)?;
                }
                Ok(sum)
            })
        })
    });
    let ms: Vec<_> = (0..N).map(Mutex::new).collect();
    g.bench_function("mutex_each", |b| {
        b.iter(|| {
            // Lock all in order, then read: what a consistent read needs with per-item locks.
            let guards: Vec<_> = black_box(&ms).iter().map(|m| m.lock()).collect();
            guards.iter().map(|g| **g).sum::<u64>()
        })
    });
    let rw = RwLock::new((0..N).collect::<Vec<u64>>());
    g.bench_function("rwlock_coarse", |b| {
        b.iter(|| black_box(&rw).read().iter().sum::<u64>())
    });
    let fs: Vec<_> = (0..N).map(fast_stm::TVar::new).collect();
    g.bench_function("fast-stm", |b| {
        b.iter(|| {
            fast_stm::atomically(|tx| {
                let mut sum = 0;
                for v in black_box(&fs) {
                    sum += v.read(tx)?;
                }
                Ok(sum)
            })
        })
    });
    let as_: Vec<_> = (0..N).map(async_stm::TVar::new).collect();
    g.bench_function("async-stm", |b| {
        b.iter(|| {
            ready(async_stm::atomically(|| {
                let mut sum = 0;
                for v in black_box(&as_) {
                    sum += *v.read()?;
                }
                Ok(sum)
            }))
        })
    });
    let ss: Vec<_> = (0..N).map(stm::TVar::new).collect();
    g.bench_function("stm", |b| {
        b.iter(|| {
            stm::atomically(|tx| {
                let mut sum = 0;
                for v in black_box(&ss) {
                    sum += v.read(tx)?;
                }
                Ok(sum)
            })
        })
    });
    g.finish();
}

fn hooks(c: &mut Criterion) {
    let mut g = c.benchmark_group("hooks");
    let v = mvstm::TVar::new(0u64);
    g.bench_function("increment_no_hook", |b| {
        b.iter(|| mvstm::atomically(|tx| tx.modify(&v, |x| x + 1)))
    });
    g.bench_function("increment_on_abort", |b| {
        b.iter(|| {
            mvstm::atomically(|tx| {
                tx.on_abort(|c| {
                    black_box(c);
                });
                tx.modify(&v, |x| x + 1)
            })
        })
    });
    g.bench_function("increment_on_commit", |b| {
        b.iter(|| {
            mvstm::atomically(|tx| {
                tx.on_commit(|| {
                    black_box(());
                });
                tx.modify(&v, |x| x + 1)
            })
        })
    });
    g.bench_function("increment_after_commit", |b| {
        b.iter(|| {
            mvstm::atomically(|tx| {
                tx.after_commit(|| {
                    black_box(());
                });
                tx.modify(&v, |x| x + 1)
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! { name = benches; config = config(); targets = read_1, increment_1, read_64, hooks }
criterion_main!(benches);
