//! Bank: 1,024 accounts, random transfers plus 20% read-all transactions, at 1, 2, 4 and 8
//! threads, for mvstm, the peer STMs and lock baselines (see `common/bank.rs`). Run with
//! `cargo bench -p mvstm-benches --bench bank`; figures and plots go in `docs/benchmarks.md`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn bank(c: &mut Criterion) {
    common::bank::bench(c, "", &common::THREADS, None);
}

criterion_group! { name = benches; config = common::config(); targets = bank }
criterion_main!(benches);
