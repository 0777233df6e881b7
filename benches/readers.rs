//! Long readers: read-only transactions over 1,000 TVars while a writer commits, with the
//! executions per reader transaction printed beside the time (see `common/readers.rs`). Run
//! with `cargo bench -p mvstm-benches --bench readers`; figures go in `docs/benchmarks.md`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn readers(c: &mut Criterion) {
    common::readers::bench(c, "", None);
}

criterion_group! { name = benches; config = common::config(); targets = readers }
criterion_main!(benches);
