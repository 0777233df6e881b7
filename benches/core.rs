//! Micro benchmarks of the core beside locks and the peer STM crates, in one run.
//!
//! Single-threaded costs of: a read-only transaction of 1 TVar, an increment of 1 TVar, a
//! read-only transaction of 64 TVars, and the hook machinery (one hook of each kind, and the
//! same transactions registering none). Run with
//! `cargo bench -p mvstm-benches --bench core`; figures go in the README, never in test assertions.

mod common;

use common::micro::ready;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use parking_lot::{Mutex, RwLock};
use std::time::Duration;

fn read_1(c: &mut Criterion) {
    common::micro::read_1(c, "", None);
}

fn increment_1(c: &mut Criterion) {
    common::micro::increment_1(c, "", None);
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
    // A read-only transaction registering no hook, and the same with one hook of each kind.
    g.bench_function("read_no_hook", |b| {
        b.iter(|| mvstm::atomically(|tx| tx.read(black_box(&v))))
    });
    g.bench_function("read_on_commit", |b| {
        b.iter(|| {
            mvstm::atomically(|tx| {
                tx.on_commit(|| {
                    black_box(());
                });
                tx.read(black_box(&v))
            })
        })
    });
    g.bench_function("read_after_commit", |b| {
        b.iter(|| {
            mvstm::atomically(|tx| {
                tx.after_commit(|| {
                    black_box(());
                });
                tx.read(black_box(&v))
            })
        })
    });
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
    g.bench_function("increment_try_on_commit", |b| {
        b.iter(|| {
            mvstm::atomically(|tx| {
                tx.try_on_commit(|| black_box(Ok::<(), ()>(())));
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
