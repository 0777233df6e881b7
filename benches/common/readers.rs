//! Long readers: the bench thread runs read-only transactions that sum 1,000 TVars while one
//! writer thread commits transfers between two random accounts as fast as it can.
//!
//! The time is that of one reader transaction. Every reader body counts its executions, so
//! the bench prints executions per committed reader transaction for each STM (1.0 means it
//! never re-ran), and the writer's commits per reader transaction. Baselines: a lock per
//! account, the reader holding all of them (taken in order), and one `RwLock` around all.

use super::{wanted, AsyncStm, FastStm, Mvstm, Rng, RustStm, Stm};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use parking_lot::{Mutex, RwLock};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const ACCOUNTS: usize = 1_000;
const INITIAL: i64 = 1_000;
const TOTAL: i64 = ACCOUNTS as i64 * INITIAL;

pub trait Accounts: Sync {
    /// Move `amount` from one account to another (the writer).
    fn transfer(&self, from: usize, to: usize, amount: i64);
    /// The consistent sum of all accounts (the reader); `executions` counts body runs.
    fn sum(&self, executions: &AtomicU64) -> i64;
}

pub struct StmAccounts<S: Stm>(Vec<S::Var<i64>>);

impl<S: Stm> Accounts for StmAccounts<S> {
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        let (from, to) = (&self.0[from], &self.0[to]);
        S::atomically(|tx| {
            let a = S::read(tx, from)?;
            S::write(tx, from, a - amount)?;
            let b = S::read(tx, to)?;
            S::write(tx, to, b + amount)
        })
    }

    fn sum(&self, executions: &AtomicU64) -> i64 {
        S::atomically(|tx| {
            // Relaxed: a counter read after the measurement.
            executions.fetch_add(1, Ordering::Relaxed);
            let mut sum = 0;
            for account in &self.0 {
                sum += S::read(tx, account)?;
            }
            Ok(sum)
        })
    }
}

pub struct MutexPerAccount(Vec<Mutex<i64>>);

impl Accounts for MutexPerAccount {
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        let mut first = self.0[from.min(to)].lock();
        let mut second = self.0[from.max(to)].lock();
        let (a, b) = if from < to {
            (&mut *first, &mut *second)
        } else {
            (&mut *second, &mut *first)
        };
        *a -= amount;
        *b += amount;
    }

    fn sum(&self, executions: &AtomicU64) -> i64 {
        executions.fetch_add(1, Ordering::Relaxed);
        let guards: Vec<_> = self.0.iter().map(|m| m.lock()).collect();
        guards.iter().map(|g| **g).sum()
    }
}

pub struct RwLockCoarse(RwLock<Vec<i64>>);

impl Accounts for RwLockCoarse {
    fn transfer(&self, from: usize, to: usize, amount: i64) {
        let mut accounts = self.0.write();
        accounts[from] -= amount;
        accounts[to] += amount;
    }

    fn sum(&self, executions: &AtomicU64) -> i64 {
        executions.fetch_add(1, Ordering::Relaxed);
        self.0.read().iter().sum()
    }
}

/// Counters summed over every sample of one function.
#[derive(Default)]
struct Stats {
    reads: AtomicU64,
    executions: AtomicU64,
    writes: AtomicU64,
    wrong: AtomicU64,
}

/// Run `iters` reader transactions on this thread while a writer thread commits; the time of
/// the readers alone.
fn sample(accounts: &impl Accounts, iters: u64, stats: &Stats) -> Duration {
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = rng.next();
                let from = r as usize % ACCOUNTS;
                let to = (from + 1 + (r >> 20) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                accounts.transfer(from, to, 1 + (r >> 40) as i64 % 100);
                n += 1;
                // Relaxed: a counter; the reader waits for the first commit below.
                writes.store(n, Ordering::Relaxed);
            }
        });
        // Measure only once the writer commits.
        while writes.load(Ordering::Relaxed) == 0 {
            std::hint::spin_loop();
        }
        let before = writes.load(Ordering::Relaxed);
        let began = Instant::now();
        let mut wrong = 0;
        for _ in 0..iters {
            if black_box(accounts.sum(&stats.executions)) != TOTAL {
                wrong += 1;
            }
        }
        let elapsed = began.elapsed();
        let during = writes.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        stats.reads.fetch_add(iters, Ordering::Relaxed);
        stats.writes.fetch_add(during, Ordering::Relaxed);
        stats.wrong.fetch_add(wrong, Ordering::Relaxed);
        elapsed
    })
}

fn bench_one(g: &mut BenchmarkGroup<'_, WallTime>, group: &str, name: &str, a: impl Accounts) {
    let stats = Stats::default();
    g.bench_function(name, |b| b.iter_custom(|iters| sample(&a, iters, &stats)));
    let reads = stats.reads.load(Ordering::Relaxed);
    if reads > 0 {
        let per_read = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / reads as f64;
        println!(
            "{group}/{name}: {reads} reader transactions, {:.3} executions per reader \
             transaction, {:.1} writer commits per reader transaction, {} wrong sums",
            per_read(&stats.executions),
            per_read(&stats.writes),
            stats.wrong.load(Ordering::Relaxed),
        );
    }
}

/// Group `{prefix}readers_1000`.
pub fn bench(c: &mut Criterion, prefix: &str, only: Option<&[&str]>) {
    let group = format!("{prefix}readers_1000");
    let mut g = c.benchmark_group(&group);
    // A peer's reader can take many milliseconds (it re-runs until no writer committed during
    // its run): flat sampling keeps the iteration count of every sample small.
    g.sampling_mode(SamplingMode::Flat);
    macro_rules! stm {
        ($s:ty) => {
            if wanted(only, <$s>::NAME) {
                let accounts =
                    StmAccounts::<$s>((0..ACCOUNTS).map(|_| <$s>::new_var(INITIAL)).collect());
                bench_one(&mut g, &group, <$s>::NAME, accounts);
            }
        };
    }
    stm!(Mvstm);
    stm!(FastStm);
    stm!(AsyncStm);
    stm!(RustStm);
    if wanted(only, "mutex_per_account") {
        let a = MutexPerAccount((0..ACCOUNTS).map(|_| Mutex::new(INITIAL)).collect());
        bench_one(&mut g, &group, "mutex_per_account", a);
    }
    if wanted(only, "rwlock_coarse") {
        let a = RwLockCoarse(RwLock::new(vec![INITIAL; ACCOUNTS]));
        bench_one(&mut g, &group, "rwlock_coarse", a);
    }
    g.finish();
}
