//! The regression tracker: a subset of the suite with short measurements that finishes in
//! under a minute. Groups are prefixed `track_` so they never overwrite the full suite's
//! results. Run with `cargo bench -p mvstm-benches --bench track`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

const PREFIX: &str = "track_";

/// Operations per threaded sample: a quarter of the suite's floor keeps a slow peer's samples
/// (bank on fast-stm, about 17 µs per operation) and the blocking hand-overs short.
const TRACK_MIN_OPS: u64 = 5_000;

fn micro(c: &mut Criterion) {
    common::set_min_ops(TRACK_MIN_OPS);
    let only: &[&str] = &["mvstm", "mvstm-update", "mutex", "fast-stm"];
    common::micro::read_1(c, PREFIX, Some(only));
    common::micro::increment_1(c, PREFIX, Some(only));
}

fn bank(c: &mut Criterion) {
    let only: &[&str] = &["mvstm", "fast-stm", "mutex_per_account", "mutex_coarse"];
    common::bank::bench(c, PREFIX, &[2], Some(only));
}

fn intset(c: &mut Criterion) {
    let only: &[&str] = &[
        "mvstm_skiplist",
        "fast-stm_skiplist",
        "mvstm_hashset",
        "mutex_btreeset",
    ];
    common::intset::bench(c, PREFIX, &[20], &[2], Some(only));
}

fn pingpong(c: &mut Criterion) {
    common::pingpong::bench(c, PREFIX, Some(&["mvstm", "mutex_condvar"]));
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500))
        .sample_size(10)
}

criterion_group! { name = benches; config = config(); targets = micro, bank, intset, pingpong }
criterion_main!(benches);
