//! Async blocking: two tasks hand a token back and forth through one slot, on tokio. The
//! producer puts a token when the slot is empty and waits while it is full; the consumer takes
//! it when full and waits while it is empty; every hand-over that finds the other task waiting
//! has to wake it. One iteration is one token handed over.
//!
//! STMs: a `TVar<Option<u64>>` with `retry`, through `mvstm::atomically_async` and
//! `async_stm::atomically`. Baselines: a tokio `mpsc` channel of capacity 1, and a
//! `Mutex<Option<u64>>` with two tokio `Notify`s (one per direction). Each runs on a tokio
//! current-thread runtime (both tasks on one thread: the hand-over is a task switch) and on a
//! multi-thread runtime with 2 workers (the tasks may sit on different threads, and a wake-up
//! crosses them). Run with `cargo bench -p mvstm-benches --bench async_pingpong`; figures go in
//! `docs/async.md`.

mod common;

use common::min_ops;
use criterion::{criterion_group, criterion_main, Criterion};
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// A one-token slot with async `put` (waits while full) and `take` (waits while empty).
trait Slot: Send + Sync + 'static {
    fn put(&self, token: u64) -> impl Future<Output = ()> + Send;
    fn take(&self) -> impl Future<Output = u64> + Send;
}

struct Mvstm(mvstm::TVar<Option<u64>>);

impl Slot for Mvstm {
    async fn put(&self, token: u64) {
        mvstm::atomically_async(|tx| match tx.read(&self.0)? {
            Some(_) => mvstm::retry(),
            None => tx.write(&self.0, Some(token)),
        })
        .await
    }

    async fn take(&self) -> u64 {
        mvstm::atomically_async(|tx| match tx.read(&self.0)? {
            Some(token) => {
                tx.write(&self.0, None)?;
                Ok(token)
            }
            None => mvstm::retry(),
        })
        .await
    }
}

struct AsyncStm(async_stm::TVar<Option<u64>>);

impl Slot for AsyncStm {
    async fn put(&self, token: u64) {
        async_stm::atomically(|| match self.0.read_clone()? {
            Some(_) => async_stm::retry(),
            None => self.0.write(Some(token)),
        })
        .await
    }

    async fn take(&self) -> u64 {
        async_stm::atomically(|| match self.0.read_clone()? {
            Some(token) => {
                self.0.write(None)?;
                Ok(token)
            }
            None => async_stm::retry(),
        })
        .await
    }
}

struct Channel {
    send: tokio::sync::mpsc::Sender<u64>,
    receive: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<u64>>,
}

impl Slot for Channel {
    async fn put(&self, token: u64) {
        self.send.send(token).await.unwrap();
    }

    async fn take(&self) -> u64 {
        // One consumer: the lock is never contended.
        self.receive.lock().await.recv().await.unwrap()
    }
}

/// The hand-written form: the slot under a mutex, a `Notify` for "filled" and one for "emptied"
/// (`notify_one` stores a permit when nobody waits, so no wake-up is lost).
#[derive(Default)]
struct Notified {
    slot: std::sync::Mutex<Option<u64>>,
    filled: Notify,
    emptied: Notify,
}

impl Slot for Notified {
    async fn put(&self, token: u64) {
        loop {
            {
                let mut slot = self.slot.lock().unwrap();
                if slot.is_none() {
                    *slot = Some(token);
                    break;
                }
            }
            self.emptied.notified().await;
        }
        self.filled.notify_one();
    }

    async fn take(&self) -> u64 {
        loop {
            if let Some(token) = self.slot.lock().unwrap().take() {
                self.emptied.notify_one();
                return token;
            }
            self.filled.notified().await;
        }
    }
}

/// Hand `max(iters, min_ops())` tokens from a producer task to a consumer task; the time scaled
/// to `iters`.
fn sample<S: Slot>(runtime: &Runtime, slot: &Arc<S>, iters: u64) -> Duration {
    let n = iters.max(min_ops());
    let began = Instant::now();
    runtime.block_on(async {
        let producer = {
            let slot = Arc::clone(slot);
            tokio::spawn(async move {
                for i in 0..n {
                    slot.put(i).await;
                }
            })
        };
        let consumer = {
            let slot = Arc::clone(slot);
            tokio::spawn(async move {
                let mut sum = 0u64;
                for _ in 0..n {
                    sum += slot.take().await;
                }
                black_box(sum)
            })
        };
        producer.await.unwrap();
        assert_eq!(consumer.await.unwrap(), n * (n - 1) / 2, "a token was lost");
    });
    began.elapsed().mul_f64(iters as f64 / n as f64)
}

fn bench_runtime(c: &mut Criterion, name: &str, runtime: Runtime) {
    let mut g = c.benchmark_group(format!("async_pingpong_{name}"));
    fn one<S: Slot>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        rt: &Runtime,
        name: &str,
        slot: S,
    ) {
        let slot = Arc::new(slot);
        g.bench_function(name, |b| b.iter_custom(|iters| sample(rt, &slot, iters)));
    }
    one(&mut g, &runtime, "mvstm", Mvstm(mvstm::TVar::new(None)));
    one(
        &mut g,
        &runtime,
        "async-stm",
        AsyncStm(async_stm::TVar::new(None)),
    );
    let (send, receive) = tokio::sync::mpsc::channel(1);
    one(
        &mut g,
        &runtime,
        "tokio_mpsc_1",
        Channel {
            send,
            receive: tokio::sync::Mutex::new(receive),
        },
    );
    one(&mut g, &runtime, "mutex_notify", Notified::default());
    g.finish();
}

fn pingpong(c: &mut Criterion) {
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    bench_runtime(c, "current_thread", current);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    bench_runtime(c, "multi_thread_2", multi);
}

criterion_group! { name = benches; config = common::config(); targets = pingpong }
criterion_main!(benches);
