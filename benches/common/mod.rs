//! What the bench files share: one [`Stm`] trait that mvstm and the three peer crates implement,
//! so that each workload is written once and runs the same code on every STM; the thread driver
//! for `iter_custom`; a per-thread xorshift; the criterion settings.
//!
//! Naming is systematic so that `scripts/plot_benchmarks.py` can parse criterion's output: a
//! group is `<workload>_threads_<n>` (or `<workload>_<n>pct_threads_<n>`), a function is the
//! implementation (`mvstm`, `fast-stm`, `mutex_per_account`, ...), and every threaded sample
//! reports the wall time of one operation of all threads together, so `1e9 / median` is the
//! throughput in operations per second.

// Each bench binary compiles this module but uses only the workloads it runs.
#![allow(dead_code)]

pub mod bank;
pub mod intset;
pub mod micro;
pub mod pingpong;
pub mod readers;

use criterion::Criterion;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Operations a threaded sample runs at least, so that starting its threads does not weigh in;
/// the time is scaled back to the number of iterations criterion asked for.
static MIN_OPS: AtomicU64 = AtomicU64::new(20_000);

/// The operations a sample runs at least (see [`set_min_ops`]).
pub fn min_ops() -> u64 {
    // Relaxed: `track` sets it before its first sample, on the thread that runs the samples.
    MIN_OPS.load(Ordering::Relaxed)
}

/// Lower the floor of operations per sample (the `track` bench: shorter samples, so that a
/// slow peer or a loaded machine cannot stretch it past a minute).
pub fn set_min_ops(ops: u64) {
    MIN_OPS.store(ops, Ordering::Relaxed);
}

/// The thread counts of the scaling workloads (the machine has 2 cores: 4 and 8 oversubscribe).
pub const THREADS: [usize; 4] = [1, 2, 4, 8];

/// Criterion settings for the full suite: short, like the existing bench files.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
}

/// An STM as the workloads see it: variables, a transaction, read, write, retry.
///
/// The methods are generic and `#[inline]`, so a workload compiles to the same calls it would
/// make to the crate directly. `atomically` takes an `Fn` body, the strictest of the four
/// crates' bounds (mvstm takes `FnMut`).
pub trait Stm: 'static {
    /// The function name the implementation gets in every group.
    const NAME: &'static str;
    type Var<T: Clone + Send + Sync + 'static>: Clone + Send + Sync + 'static;
    type Tx;
    type Error;
    fn new_var<T: Clone + Send + Sync + 'static>(value: T) -> Self::Var<T>;
    fn atomically<R>(body: impl Fn(&mut Self::Tx) -> Result<R, Self::Error>) -> R;
    fn read<T: Clone + Send + Sync + 'static>(
        tx: &mut Self::Tx,
        var: &Self::Var<T>,
    ) -> Result<T, Self::Error>;
    fn write<T: Clone + Send + Sync + 'static>(
        tx: &mut Self::Tx,
        var: &Self::Var<T>,
        value: T,
    ) -> Result<(), Self::Error>;
    /// Block until something the transaction read changes, then run it again.
    fn retry<R>() -> Result<R, Self::Error>;
}

pub struct Mvstm;

impl Stm for Mvstm {
    const NAME: &'static str = "mvstm";
    type Var<T: Clone + Send + Sync + 'static> = mvstm::TVar<T>;
    type Tx = mvstm::Txn;
    type Error = mvstm::StmError;
    #[inline]
    fn new_var<T: Clone + Send + Sync + 'static>(value: T) -> Self::Var<T> {
        mvstm::TVar::new(value)
    }
    #[inline]
    fn atomically<R>(body: impl Fn(&mut Self::Tx) -> Result<R, Self::Error>) -> R {
        mvstm::atomically(body)
    }
    #[inline]
    fn read<T: Clone + Send + Sync + 'static>(
        tx: &mut Self::Tx,
        var: &Self::Var<T>,
    ) -> Result<T, Self::Error> {
        tx.read(var)
    }
    #[inline]
    fn write<T: Clone + Send + Sync + 'static>(
        tx: &mut Self::Tx,
        var: &Self::Var<T>,
        value: T,
    ) -> Result<(), Self::Error> {
        tx.write(var, value)
    }
    #[inline]
    fn retry<R>() -> Result<R, Self::Error> {
        mvstm::retry()
    }
}

pub struct FastStm;

impl Stm for FastStm {
    const NAME: &'static str = "fast-stm";
    type Var<T: Clone + Send + Sync + 'static> = fast_stm::TVar<T>;
    type Tx = fast_stm::Transaction;
    type Error = fast_stm::StmError;
    #[inline]
    fn new_var<T: Clone + Send + Sync + 'static>(value: T) -> Self::Var<T> {
        fast_stm::TVar::new(value)
    }
    #[inline]
    fn atomically<R>(body: impl Fn(&mut Self::Tx) -> Result<R, Self::Error>) -> R {
        fast_stm::atomically(body)
    }
    #[inline]
    fn read<T: Clone + Send + Sync + 'static>(
        tx: &mut Self::Tx,
        var: &Self::Var<T>,
    ) -> Result<T, Self::Error> {
        var.read(tx)
    }
    #[inline]
    fn write<T: Clone + Send + Sync + 'static>(
        tx: &mut Self::Tx,
        var: &Self::Var<T>,
        value: T,
    ) -> Result<(), Self::Error> {
        var.write(tx, value)
    }
    #[inline]
    fn retry<R>() -> Result<R, Self::Error> {
        fast_stm::retry()
    }
}

/// async-stm keeps its transaction in a thread local, so `Tx` is `()`; a transaction is a
/// future, driven by [`block_on`] (one poll with a no-op waker when it does not block, which
/// is what `ready()` in `core.rs` does).
pub struct AsyncStm;

impl Stm for AsyncStm {
    const NAME: &'static str = "async-stm";
    type Var<T: Clone + Send + Sync + 'static> = async_stm::TVar<T>;
    type Tx = ();
    type Error = async_stm::StmControl;
    #[inline]
    fn new_var<T: Clone + Send + Sync + 'static>(value: T) -> Self::Var<T> {
        async_stm::TVar::new(value)
    }
    #[inline]
    fn atomically<R>(body: impl Fn(&mut Self::Tx) -> Result<R, Self::Error>) -> R {
        block_on(async_stm::atomically(|| body(&mut ())))
    }
    #[inline]
    fn read<T: Clone + Send + Sync + 'static>(
        (): &mut Self::Tx,
        var: &Self::Var<T>,
    ) -> Result<T, Self::Error> {
        var.read_clone()
    }
    #[inline]
    fn write<T: Clone + Send + Sync + 'static>(
        (): &mut Self::Tx,
        var: &Self::Var<T>,
        value: T,
    ) -> Result<(), Self::Error> {
        var.write(value)
    }
    #[inline]
    fn retry<R>() -> Result<R, Self::Error> {
        async_stm::retry()
    }
}

/// The `stm` crate (a re-export of `stm-core`).
pub struct RustStm;

impl Stm for RustStm {
    const NAME: &'static str = "stm";
    type Var<T: Clone + Send + Sync + 'static> = stm::TVar<T>;
    type Tx = stm::Transaction;
    type Error = stm::StmError;
    #[inline]
    fn new_var<T: Clone + Send + Sync + 'static>(value: T) -> Self::Var<T> {
        stm::TVar::new(value)
    }
    #[inline]
    fn atomically<R>(body: impl Fn(&mut Self::Tx) -> Result<R, Self::Error>) -> R {
        stm::atomically(body)
    }
    #[inline]
    fn read<T: Clone + Send + Sync + 'static>(
        tx: &mut Self::Tx,
        var: &Self::Var<T>,
    ) -> Result<T, Self::Error> {
        var.read(tx)
    }
    #[inline]
    fn write<T: Clone + Send + Sync + 'static>(
        tx: &mut Self::Tx,
        var: &Self::Var<T>,
        value: T,
    ) -> Result<(), Self::Error> {
        var.write(tx, value)
    }
    #[inline]
    fn retry<R>() -> Result<R, Self::Error> {
        stm::retry()
    }
}

/// Run a future on this thread. The first poll uses a no-op waker, so a future that is ready
/// at once (an async-stm transaction that does not `retry`) costs what `ready()` in `core.rs`
/// costs; one that is pending is polled again with a waker that unparks this thread. Tokio's
/// channel, on which async-stm waits, registers the waker of each poll, so the second poll
/// replaces the no-op waker before the thread parks.
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    let mut fut = pin!(fut);
    if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return v;
    }
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// A xorshift64* generator, one per thread: a few instructions per number and no shared state.
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence differs for every call (samples do not replay one sequence).
    pub fn new() -> Rng {
        static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
        // Relaxed: a counter that only has to differ from call to call.
        let seed = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Rng::with_seed(seed)
    }

    pub fn with_seed(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    #[inline]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `threads` threads each run `work(ops)` for an equal share of `max(iters, min_ops())`
/// operations, started together; returns the wall time scaled to `iters` operations.
pub fn run_threads(threads: usize, iters: u64, work: impl Fn(u64) + Sync) -> Duration {
    let per_thread = iters.max(min_ops()).div_ceil(threads as u64);
    let start = Barrier::new(threads + 1);
    let elapsed = thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    work(per_thread);
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for h in hs {
            h.join().unwrap();
        }
        began.elapsed()
    });
    elapsed.mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
}

/// Whether the function `name` is in the subset `only` (`None`: every function).
pub fn wanted(only: Option<&[&str]>, name: &str) -> bool {
    only.is_none_or(|names| names.contains(&name))
}
