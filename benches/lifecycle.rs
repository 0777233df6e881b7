//! The lifecycle layer beside what a user would write by hand, in one run:
//! - start/stop round trips of a no-op service through a `Lifecycle`, with 1 and 2 admin
//!   threads sharing it, against a `parking_lot::Mutex<bool>` flag held across the service call;
//! - `CommandQueue` throughput with a no-op handler against a crossbeam-channel worker loop.
//!
//! Run with `cargo bench -p mvstm-benches --bench lifecycle`; figures go in `docs/lifecycle.md`.

use criterion::{criterion_group, criterion_main, Criterion};
use mvstm::lifecycle::{CommandQueue, EnqueueError, Lifecycle, Service};
use parking_lot::Mutex;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Round trips (or commands) a sample runs at least, so that starting its threads does not weigh
/// in; the time is scaled back to the iterations criterion asked for.
const MIN_OPS: u64 = 20_000;

struct Noop;

impl Service for Noop {
    type Running = ();
    type Error = String;
    fn start(&self) -> Result<(), String> {
        black_box(Ok(()))
    }
    fn stop(&self, (): ()) -> Result<(), String> {
        black_box(Ok(()))
    }
}

/// The flag dance users write by hand: a mutex held across the service call.
struct Guarded {
    running: Mutex<Option<()>>,
}

impl Guarded {
    fn start(&self) -> bool {
        let mut running = self.running.lock();
        if running.is_some() {
            return false;
        }
        Noop.start().unwrap();
        *running = Some(());
        true
    }

    fn stop(&self) -> bool {
        let mut running = self.running.lock();
        match running.take() {
            Some(instance) => {
                Noop.stop(instance).unwrap();
                true
            }
            None => false,
        }
    }
}

/// `threads` admin threads alternate start and stop requests on one service until `iters`
/// round trips (successful stops) completed in all; returns the time scaled to `iters`.
fn round_trips(
    threads: usize,
    iters: u64,
    start: impl Fn() -> bool + Sync,
    stop: impl Fn() -> bool + Sync,
) -> Duration {
    let target = iters.max(MIN_OPS);
    let done = AtomicU64::new(0);
    let began = Instant::now();
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while done.load(Ordering::Relaxed) < target {
                    black_box(start());
                    if stop() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    began
        .elapsed()
        .mul_f64(iters as f64 / done.load(Ordering::Relaxed) as f64)
}

fn start_stop(c: &mut Criterion) {
    let mut g = c.benchmark_group("start_stop_round_trip");
    for threads in [1, 2] {
        g.bench_function(format!("lifecycle_{threads}_threads"), |b| {
            let service = Lifecycle::new(Noop);
            b.iter_custom(|iters| {
                round_trips(
                    threads,
                    iters,
                    || service.start().is_ok(),
                    || service.stop().is_ok(),
                )
            })
        });
        g.bench_function(format!("mutex_flag_{threads}_threads"), |b| {
            let service = Guarded {
                running: Mutex::new(None),
            };
            b.iter_custom(|iters| {
                round_trips(threads, iters, || service.start(), || service.stop())
            })
        });
    }
    g.finish();
}

struct Ping(u64);

enum Message {
    Ping(u64),
    Done,
}

fn command_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("command_throughput");
    g.bench_function("command_queue", |b| {
        let queue = CommandQueue::builder()
            .capacity(1024)
            .outcome_log(0)
            .handler(move |_tx, ping: &Ping| {
                black_box(ping.0);
                Ok(())
            })
            .build();
        queue.processor().start().unwrap();
        b.iter_custom(|iters| {
            let n = iters.max(MIN_OPS);
            let began = Instant::now();
            for i in 0..n {
                let mut command = Ping(i);
                while let Err(EnqueueError::Full(back)) = queue.enqueue(command) {
                    command = back;
                    thread::yield_now();
                }
            }
            assert!(queue.wait_idle(Duration::from_secs(60)));
            began.elapsed().mul_f64(iters as f64 / n as f64)
        });
        queue.processor().stop().unwrap();
    });
    g.bench_function("crossbeam_channel_worker", |b| {
        let (send, receive) = crossbeam_channel::bounded::<Message>(1024);
        let (ack, acked) = crossbeam_channel::bounded::<()>(1);
        let worker = thread::spawn(move || {
            for message in receive {
                match message {
                    Message::Ping(x) => {
                        black_box(x);
                    }
                    Message::Done => ack.send(()).unwrap(),
                }
            }
        });
        b.iter_custom(|iters| {
            let n = iters.max(MIN_OPS);
            let began = Instant::now();
            for i in 0..n {
                send.send(Message::Ping(i)).unwrap();
            }
            send.send(Message::Done).unwrap();
            acked.recv().unwrap();
            began.elapsed().mul_f64(iters as f64 / n as f64)
        });
        drop(send);
        worker.join().unwrap();
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = start_stop, command_queue
}
criterion_main!(benches);
