//! Transfers only: 1,024 accounts, random transfers at 1, 2 and 8 threads (8 oversubscribes the
//! CI machine's two cores), for mvstm, the peer STMs and lock baselines (see `common/bank.rs`).
//! The update path alone, where `bank` mixes in read-all transactions. GHC's `stm` runs the same
//! workload in `benches/ghc/Bank.hs`. Run with `cargo bench -p mvstm-benches --bench transfer`;
//! figures go in `docs/benchmarks.md`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn transfer(c: &mut Criterion) {
    common::bank::bench_transfers(c, "", &[1, 2, 8], None);
}

criterion_group! { name = benches; config = common::config(); targets = transfer }
criterion_main!(benches);
