//! One-thread micro benchmarks shared by `core` (every implementation) and `track` (a subset):
//! a read-only transaction of one TVar and an increment of one TVar, written against each crate
//! directly (as in the crates' own documentation) rather than through [`super::Stm`].

use super::wanted;
use criterion::{black_box, Criterion};
use parking_lot::{Mutex, RwLock};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Drive an async-stm transaction that never blocks: it is ready on its first poll.
pub fn ready<T>(fut: impl Future<Output = T>) -> T {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an async-stm transaction blocked in a benchmark"),
    }
}

/// Group `{prefix}read_1`.
pub fn read_1(c: &mut Criterion, prefix: &str, only: Option<&[&str]>) {
    let mut g = c.benchmark_group(format!("{prefix}read_1"));
    if wanted(only, "mvstm") {
        let v = mvstm::TVar::new(1u64);
        g.bench_function("mvstm", |b| {
            b.iter(|| mvstm::atomically(|tx| tx.read(black_box(&v))))
        });
    }
    if wanted(only, "mvstm_load") {
        let v = mvstm::TVar::new(1u64);
        g.bench_function("mvstm_load", |b| b.iter(|| black_box(&v).load()));
    }
    if wanted(only, "mutex") {
        let m = Mutex::new(1u64);
        g.bench_function("mutex", |b| b.iter(|| *black_box(&m).lock()));
    }
    if wanted(only, "rwlock") {
        let rw = RwLock::new(1u64);
        g.bench_function("rwlock", |b| b.iter(|| *black_box(&rw).read()));
    }
    if wanted(only, "fast-stm") {
        let f = fast_stm::TVar::new(1u64);
        g.bench_function("fast-stm", |b| {
            b.iter(|| fast_stm::atomically(|tx| black_box(&f).read(tx)))
        });
    }
    if wanted(only, "async-stm") {
        let a = async_stm::TVar::new(1u64);
        g.bench_function("async-stm", |b| {
            b.iter(|| ready(async_stm::atomically(|| black_box(&a).read_clone())))
        });
    }
    if wanted(only, "stm") {
        let s = stm::TVar::new(1u64);
        g.bench_function("stm", |b| {
            b.iter(|| stm::atomically(|tx| black_box(&s).read(tx)))
        });
    }
    g.finish();
}

/// Group `{prefix}increment_1`.
pub fn increment_1(c: &mut Criterion, prefix: &str, only: Option<&[&str]>) {
    let mut g = c.benchmark_group(format!("{prefix}increment_1"));
    if wanted(only, "mvstm") {
        let v = mvstm::TVar::new(0u64);
        g.bench_function("mvstm", |b| {
            b.iter(|| mvstm::atomically(|tx| tx.modify(black_box(&v), |x| x + 1)))
        });
    }
    if wanted(only, "mvstm-update") {
        // The single-operation path (`TVar::update`): a whole transaction without logs.
        let v = mvstm::TVar::new(0u64);
        g.bench_function("mvstm-update", |b| {
            b.iter(|| black_box(&v).update(|x| x + 1))
        });
    }
    if wanted(only, "mutex") {
        let m = Mutex::new(0u64);
        g.bench_function("mutex", |b| b.iter(|| *black_box(&m).lock() += 1));
    }
    if wanted(only, "fast-stm") {
        let f = fast_stm::TVar::new(0u64);
        g.bench_function("fast-stm", |b| {
            b.iter(|| fast_stm::atomically(|tx| black_box(&f).modify(tx, |x| x + 1)))
        });
    }
    if wanted(only, "async-stm") {
        let a = async_stm::TVar::new(0u64);
        g.bench_function("async-stm", |b| {
            b.iter(|| ready(async_stm::atomically(|| black_box(&a).update(|x| x + 1))))
        });
    }
    if wanted(only, "stm") {
        let s = stm::TVar::new(0u64);
        g.bench_function("stm", |b| {
            b.iter(|| stm::atomically(|tx| black_box(&s).modify(tx, |x| x + 1)))
        });
    }
    g.finish();
}
