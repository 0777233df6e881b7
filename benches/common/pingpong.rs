//! Blocking: two threads hand tokens through one slot. The producer puts a token when the slot
//! is empty and blocks while it is full; the consumer takes it when full and blocks while it is
//! empty. So the slot goes back and forth between the two threads, and each hand-over that
//! finds the other side asleep has to wake it.
//!
//! STMs: a `TVar<Option<u64>>` and `retry` (async-stm through a parking `block_on`). Baselines:
//! `Mutex<Option<u64>>` with a `Condvar` (parking_lot's and std's), and a crossbeam-channel of
//! capacity 1. One iteration is one token handed over.

use super::{min_ops, wanted, AsyncStm, FastStm, Mvstm, RustStm, Stm};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

/// A one-token slot: `put` blocks while it is full, `take` while it is empty.
pub trait Slot: Sync {
    fn put(&self, token: u64);
    fn take(&self) -> u64;
}

pub struct StmSlot<S: Stm>(S::Var<Option<u64>>);

impl<S: Stm> Slot for StmSlot<S> {
    fn put(&self, token: u64) {
        S::atomically(|tx| match S::read(tx, &self.0)? {
            Some(_) => S::retry(),
            None => S::write(tx, &self.0, Some(token)),
        })
    }

    fn take(&self) -> u64 {
        S::atomically(|tx| match S::read(tx, &self.0)? {
            Some(token) => {
                S::write(tx, &self.0, None)?;
                Ok(token)
            }
            None => S::retry(),
        })
    }
}

/// The hand-written form: one condition variable serves both sides, since at most one of them
/// waits at a time (the slot is either full or empty).
pub struct CondvarSlot {
    slot: parking_lot::Mutex<Option<u64>>,
    changed: parking_lot::Condvar,
}

impl Slot for CondvarSlot {
    fn put(&self, token: u64) {
        let mut slot = self.slot.lock();
        while slot.is_some() {
            self.changed.wait(&mut slot);
        }
        *slot = Some(token);
        self.changed.notify_one();
    }

    fn take(&self) -> u64 {
        let mut slot = self.slot.lock();
        loop {
            if let Some(token) = slot.take() {
                self.changed.notify_one();
                return token;
            }
            self.changed.wait(&mut slot);
        }
    }
}

pub struct StdCondvarSlot {
    slot: std::sync::Mutex<Option<u64>>,
    changed: std::sync::Condvar,
}

impl Slot for StdCondvarSlot {
    fn put(&self, token: u64) {
        let mut slot = self.slot.lock().unwrap();
        while slot.is_some() {
            slot = self.changed.wait(slot).unwrap();
        }
        *slot = Some(token);
        self.changed.notify_one();
    }

    fn take(&self) -> u64 {
        let mut slot = self.slot.lock().unwrap();
        loop {
            if let Some(token) = slot.take() {
                self.changed.notify_one();
                return token;
            }
            slot = self.changed.wait(slot).unwrap();
        }
    }
}

pub struct ChannelSlot(
    crossbeam_channel::Sender<u64>,
    crossbeam_channel::Receiver<u64>,
);

impl Slot for ChannelSlot {
    fn put(&self, token: u64) {
        self.0.send(token).unwrap();
    }
    fn take(&self) -> u64 {
        self.1.recv().unwrap()
    }
}

/// Hand `max(iters, min_ops())` tokens from a producer thread to a consumer thread; the time
/// scaled to `iters`.
fn sample(slot: &impl Slot, iters: u64) -> Duration {
    let n = iters.max(min_ops());
    let began = Instant::now();
    thread::scope(|s| {
        s.spawn(|| (0..n).for_each(|i| slot.put(i)));
        s.spawn(|| black_box((0..n).map(|_| slot.take()).sum::<u64>()));
    });
    began.elapsed().mul_f64(iters as f64 / n as f64)
}

fn bench_one(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, slot: impl Slot) {
    g.bench_function(name, |b| b.iter_custom(|iters| sample(&slot, iters)));
}

/// Group `{prefix}pingpong`.
pub fn bench(c: &mut Criterion, prefix: &str, only: Option<&[&str]>) {
    let mut g = c.benchmark_group(format!("{prefix}pingpong"));
    macro_rules! stm {
        ($s:ty) => {
            if wanted(only, <$s>::NAME) {
                bench_one(&mut g, <$s>::NAME, StmSlot::<$s>(<$s>::new_var(None)));
            }
        };
    }
    stm!(Mvstm);
    stm!(FastStm);
    stm!(AsyncStm);
    stm!(RustStm);
    if wanted(only, "mutex_condvar") {
        let slot = CondvarSlot {
            slot: parking_lot::Mutex::new(None),
            changed: parking_lot::Condvar::new(),
        };
        bench_one(&mut g, "mutex_condvar", slot);
    }
    if wanted(only, "std_mutex_condvar") {
        let slot = StdCondvarSlot {
            slot: std::sync::Mutex::new(None),
            changed: std::sync::Condvar::new(),
        };
        bench_one(&mut g, "std_mutex_condvar", slot);
    }
    if wanted(only, "crossbeam_bounded_1") {
        let (s, r) = crossbeam_channel::bounded(1);
        bench_one(&mut g, "crossbeam_bounded_1", ChannelSlot(s, r));
    }
    g.finish();
}
