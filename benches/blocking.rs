//! Blocking: `retry` hand-overs through one slot against `Mutex` + `Condvar` and a channel
//! (see `common/pingpong.rs`). The `TQueue`/crossbeam-channel comparison is in
//! `benches/collections.rs`. Run with `cargo bench -p mvstm-benches --bench blocking`; figures go
//! in `docs/benchmarks.md`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn pingpong(c: &mut Criterion) {
    common::pingpong::bench(c, "", None);
}

criterion_group! { name = benches; config = common::config(); targets = pingpong }
criterion_main!(benches);
