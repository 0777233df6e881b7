//! intset: a skip list and a hash set built from TVars (256 keys of 512; 0%, 20% and 50%
//! updates; 1, 2, 4 and 8 threads) for mvstm and the peer STMs, beside locked `BTreeSet`s and
//! `HashSet`s (see `common/intset.rs`). Run with `cargo bench -p mvstm-benches --bench intset`;
//! figures and plots go in `docs/benchmarks.md`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn intset(c: &mut Criterion) {
    common::intset::bench(c, "", &common::intset::UPDATES, &common::THREADS, None);
}

criterion_group! { name = benches; config = common::config(); targets = intset }
criterion_main!(benches);
