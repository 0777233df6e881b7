//! Bank: 1,024 accounts; each operation is a transfer of a random amount between two random
//! accounts (80%) or a read of all accounts that checks the total (20%). The `transfer` groups
//! run transfers only (the update path alone, no long readers).
//!
//! Every implementation runs the same operation stream (per-thread xorshift). A read-all that
//! returns a wrong total is counted; it must never happen. The STMs also count the attempts
//! whose body *saw* a wrong total before commit rejected it (a torn snapshot, PITFALLS 1): they
//! are harmless here because the body only adds, but a body that indexed or unwrapped on such a
//! state would panic or loop.

use super::{min_ops, run_threads, wanted, AsyncStm, FastStm, Mvstm, Rng, RustStm, Stm};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use parking_lot::{Mutex, RwLock};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const ACCOUNTS: usize = 1_024;
const INITIAL: i64 = 1_000;
const TOTAL: i64 = ACCOUNTS as i64 * INITIAL;
/// Percentage of operations that read all accounts, in the `bank` groups.
const READ_ALL_PCT: u64 = 20;

/// One implementation of the bank.
pub trait Bank {
    fn transfer(&self, from: usize, to: usize, amount: i64);
    /// The sum of all balances, read consistently.
    fn total(&self) -> i64;
    /// Attempts whose body saw a wrong total (only STMs can have them).
    fn torn(&self) -> u64 {
        0
    }
}

pub struct StmBank<S: Stm> {
    accounts: Vec<S::Var<i64>>,
    torn: AtomicU64,
}

impl<S: Stm> StmBank<S> {
    pub fn new() -> Self {
        StmBank {
            accounts: (0..ACCOUNTS).map(|_| S::new_var(INITIAL)).collect(),
            torn: AtomicU64::new(0),
        }
    }
}

impl<S: Stm> Bank for StmBank<S> {
    #[inline]
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        let (from, to) = (&self.accounts[from], &self.accounts[to]);
        S::atomically(|tx| {
            let a = S::read(tx, from)?;
            S::write(tx, from, a - amount)?;
            let b = S::read(tx, to)?;
            S::write(tx, to, b + amount)
        })
    }

    fn total(&self) -> i64 {
        S::atomically(|tx| {
            let mut sum = 0;
            for account in &self.accounts {
                sum += S::read(tx, account)?;
            }
            if sum != TOTAL {
                // Relaxed: a statistic.
                self.torn.fetch_add(1, Ordering::Relaxed);
            }
            Ok(sum)
        })
    }

    fn torn(&self) -> u64 {
        self.torn.load(Ordering::Relaxed)
    }
}

/// One lock around all accounts.
pub struct MutexCoarse(Mutex<Vec<i64>>);

impl Bank for MutexCoarse {
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        let mut accounts = self.0.lock();
        accounts[from] -= amount;
        accounts[to] += amount;
    }
    fn total(&self) -> i64 {
        self.0.lock().iter().sum()
    }
}

/// One reader-writer lock around all accounts: read-alls share it.
pub struct RwLockCoarse(RwLock<Vec<i64>>);

impl Bank for RwLockCoarse {
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        let mut accounts = self.0.write();
        accounts[from] -= amount;
        accounts[to] += amount;
    }
    fn total(&self) -> i64 {
        self.0.read().iter().sum()
    }
}

/// A lock per account, taken in index order (so transfers cannot deadlock); a consistent
/// read-all holds every lock at once.
pub struct MutexPerAccount(Vec<Mutex<i64>>);

impl Bank for MutexPerAccount {
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        let (first, second) = (from.min(to), from.max(to));
        let mut first = self.0[first].lock();
        let mut second = self.0[second].lock();
        let (a, b) = if from < to {
            (&mut *first, &mut *second)
        } else {
            (&mut *second, &mut *first)
        };
        *a -= amount;
        *b += amount;
    }
    fn total(&self) -> i64 {
        let guards: Vec<_> = self.0.iter().map(|m| m.lock()).collect();
        guards.iter().map(|g| **g).sum()
    }
}

/// No synchronization at all: the single-thread floor.
pub struct Sequential(Vec<Cell<i64>>);

impl Bank for Sequential {
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        let (a, b) = (&self.0[from], &self.0[to]);
        a.set(a.get() - amount);
        b.set(b.get() + amount);
    }
    fn total(&self) -> i64 {
        self.0.iter().map(Cell::get).sum()
    }
}

/// Read-alls and wrong totals seen, summed over every sample of one function.
#[derive(Default)]
struct Stats {
    read_alls: AtomicU64,
    wrong: AtomicU64,
}

/// Run `ops` operations of the mix on `bank` from this thread, `read_all_pct` percent of them
/// read-alls.
fn run_ops(bank: &impl Bank, ops: u64, read_all_pct: u64, stats: &Stats) {
    let mut rng = Rng::new();
    let (mut read_alls, mut wrong) = (0, 0);
    for _ in 0..ops {
        let r = rng.next();
        if r % 100 < read_all_pct {
            read_alls += 1;
            if black_box(bank.total()) != TOTAL {
                wrong += 1;
            }
        } else {
            let from = (r >> 8) as usize % ACCOUNTS;
            let to = (from + 1 + (r >> 24) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
            let amount = 1 + (r >> 40) as i64 % 100;
            bank.transfer(from, to, amount);
        }
    }
    // Relaxed: statistics, read after the threads were joined.
    stats.read_alls.fetch_add(read_alls, Ordering::Relaxed);
    stats.wrong.fetch_add(wrong, Ordering::Relaxed);
}

fn bench_one<B: Bank + Sync>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    (group, read_all_pct): (&str, u64),
    name: &str,
    threads: usize,
    bank: B,
) {
    let stats = Stats::default();
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            run_threads(threads, iters, |ops| {
                run_ops(&bank, ops, read_all_pct, &stats)
            })
        })
    });
    if read_all_pct == 0 {
        let total = bank.total();
        assert_eq!(total, TOTAL, "{group}/{name}: money was created or lost");
    }
    report(group, name, &stats, bank.torn());
}

/// Print the consistency figures of one function (nothing when a filter skipped it).
fn report(group: &str, name: &str, stats: &Stats, torn: u64) {
    let read_alls = stats.read_alls.load(Ordering::Relaxed);
    if read_alls > 0 {
        println!(
            "{group}/{name}: {read_alls} read-alls, {} wrong totals, \
             {torn} attempts saw a torn total",
            stats.wrong.load(Ordering::Relaxed)
        );
    }
}

/// Groups `{prefix}bank_threads_{n}` for each thread count, with the functions in `only`
/// (`None`: all of them).
pub fn bench(c: &mut Criterion, prefix: &str, threads: &[usize], only: Option<&[&str]>) {
    bench_mix(c, (prefix, "bank"), READ_ALL_PCT, threads, only);
}

/// Groups `{prefix}transfer_threads_{n}`: transfers only, the update path alone.
pub fn bench_transfers(c: &mut Criterion, prefix: &str, threads: &[usize], only: Option<&[&str]>) {
    bench_mix(c, (prefix, "transfer"), 0, threads, only);
}

fn bench_mix(
    c: &mut Criterion,
    (prefix, name): (&str, &str),
    read_all_pct: u64,
    threads: &[usize],
    only: Option<&[&str]>,
) {
    for &n in threads {
        let group = format!("{prefix}{name}_threads_{n}");
        let mix = (group.as_str(), read_all_pct);
        let mut g = c.benchmark_group(&group);
        macro_rules! stm {
            ($s:ty) => {
                if wanted(only, <$s>::NAME) {
                    bench_one(&mut g, mix, <$s>::NAME, n, StmBank::<$s>::new());
                }
            };
        }
        stm!(Mvstm);
        stm!(FastStm);
        stm!(AsyncStm);
        stm!(RustStm);
        if wanted(only, "mutex_per_account") {
            let bank = MutexPerAccount((0..ACCOUNTS).map(|_| Mutex::new(INITIAL)).collect());
            bench_one(&mut g, mix, "mutex_per_account", n, bank);
        }
        if wanted(only, "mutex_coarse") {
            let bank = MutexCoarse(Mutex::new(vec![INITIAL; ACCOUNTS]));
            bench_one(&mut g, mix, "mutex_coarse", n, bank);
        }
        if wanted(only, "rwlock_coarse") {
            let bank = RwLockCoarse(RwLock::new(vec![INITIAL; ACCOUNTS]));
            bench_one(&mut g, mix, "rwlock_coarse", n, bank);
        }
        if n == 1 && wanted(only, "sequential") {
            let bank = Sequential((0..ACCOUNTS).map(|_| Cell::new(INITIAL)).collect());
            let stats = Stats::default();
            g.bench_function("sequential", |b| {
                b.iter_custom(|iters| {
                    let ops = iters.max(min_ops());
                    let began = Instant::now();
                    run_ops(&bank, ops, read_all_pct, &stats);
                    scale(began.elapsed(), iters, ops)
                })
            });
            report(&group, "sequential", &stats, 0);
        }
        g.finish();
    }
}

fn scale(elapsed: Duration, iters: u64, ops: u64) -> Duration {
    elapsed.mul_f64(iters as f64 / ops as f64)
}
