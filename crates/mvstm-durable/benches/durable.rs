//! Command throughput, enqueue + process, of the durable queue on SQLite and PostgreSQL beside
//! the in-memory `mvstm::lifecycle::CommandQueue`.
//!
//! Each measured operation is one command: enqueued (one committed transaction, or a share of
//! one for the batched variant), claimed, handled by a no-op handler, and recorded as done
//! (two more transactions). SQLite runs with `synchronous = FULL` (a commit is on disk), so
//! its figures are bound by the disk's flush latency. PostgreSQL runs when `MVSTM_PG_URL` is
//! set (e.g. the throwaway cluster `.ci/run` starts); otherwise it is skipped.
//!
//! `cargo bench -p mvstm-durable --bench durable`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use mvstm::durable::{Queue, Store};
use mvstm::lifecycle::{CommandQueue, EnqueueError};
use std::time::{Duration, Instant};

/// Commands per measured batch.
const BATCH: u64 = 50;

struct Ping(u64);

fn in_memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_queue");
    g.throughput(Throughput::Elements(1));
    g.bench_function("in_memory_command_queue", |b| {
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
            let n = iters.max(BATCH);
            let began = Instant::now();
            for i in 0..n {
                let mut command = Ping(i);
                while let Err(EnqueueError::Full(back)) = queue.enqueue(command) {
                    command = back;
                    std::thread::yield_now();
                }
            }
            assert!(queue.wait_idle(Duration::from_secs(60)));
            began.elapsed().mul_f64(iters as f64 / n as f64)
        });
        queue.processor().stop().unwrap();
    });
    g.finish();
}

/// Handle commands of `q` until `n` were handled.
fn process_all(q: &Queue<u64>, n: u64) {
    let mut done = 0;
    while done < n as usize {
        done += q
            .process_due(|x: u64| -> Result<(), String> {
                black_box(x);
                Ok(())
            })
            .unwrap();
    }
}

fn on_database(c: &mut Criterion, label: &str, url: &str) {
    let store = Store::open(url).unwrap();
    let mut g = c.benchmark_group("durable_queue");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.warm_up_time(Duration::from_secs(1));
    let queue_name = format!("bench-{}-{label}", std::process::id());
    g.bench_function(format!("{label}_enqueue_then_process"), |b| {
        let q = store.queue::<u64>(&queue_name, 3).unwrap();
        b.iter_custom(|iters| {
            let began = Instant::now();
            for i in 0..iters {
                q.enqueue(&i).unwrap();
            }
            process_all(&q, iters);
            began.elapsed()
        });
    });
    g.bench_function(format!("{label}_enqueue_batched_then_process"), |b| {
        let q = store
            .queue::<u64>(&format!("{queue_name}-batched"), 3)
            .unwrap();
        b.iter_custom(|iters| {
            let began = Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                store
                    .transaction(|db| {
                        for i in 0..n {
                            q.enqueue_in(db, &i)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                left -= n;
            }
            process_all(&q, iters);
            began.elapsed()
        });
    });
    g.finish();
}

fn sqlite(c: &mut Criterion) {
    let path = format!(
        "{}/../../target/durable-bench.db",
        env!("CARGO_MANIFEST_DIR")
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    on_database(c, "sqlite", &format!("sqlite://{path}"));
}

fn postgres(c: &mut Criterion) {
    match std::env::var("MVSTM_PG_URL") {
        Ok(url) if !url.is_empty() => on_database(c, "postgres", &url),
        _ => println!("durable_queue on postgres: skipped: MVSTM_PG_URL not set"),
    }
}

criterion_group!(benches, in_memory, sqlite, postgres);
criterion_main!(benches);
