//! Random transactions to record, the same for every STM under test, and a time-limited way to
//! run worker threads.
//!
//! A transaction is a plan: a list of [`Op`]s that a driver runs against its STM and reports to
//! its [`Recorder`](super::Recorder). Writes are always read-modify-writes, so the version order
//! can be recovered (see the module documentation of `checker`).

use super::record::{writer_of, Reporting};
use crate::common::{panic_message, Rng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// `MaybeRetry` reads one of the first `SIGNALS` variables; a companion thread keeps writing
/// them so that a blocked transaction always wakes up.
pub const SIGNALS: usize = 4;

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Read a variable.
    Read(usize),
    /// Read a variable, then write a new unique value to it.
    Rmw(usize),
    /// `or_else`: `first`, which retries at its end if `first_retries` (after writing), else
    /// `second`.
    OrElse {
        first: Vec<Op>,
        first_retries: bool,
        second: Vec<Op>,
    },
    /// Read a signal variable and `retry` if [`must_retry`] says so.
    MaybeRetry(usize),
    /// Panic with [`InjectedPanic`].
    Panic,
    /// Abort with [`InjectedAbort`].
    Abort,
    /// Register an `on_commit` and an `after_commit` hook.
    Hooks,
}

/// The payload of injected panics.
#[derive(Debug)]
pub struct InjectedPanic;

/// The error of injected user aborts.
#[derive(Debug, PartialEq)]
pub struct InjectedAbort;

/// Whether `MaybeRetry` retries on seeing `value`: for a quarter of the writers, so a retry
/// blocks until the signal variable is written again.
pub fn must_retry(value: u64) -> bool {
    writer_of(value) % 4 == 1
}

/// The shape of a run. Rates are per mille.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub threads: usize,
    pub vars: usize,
    /// Each worker thread runs until it committed this many transactions.
    pub commits_per_thread: usize,
    /// Transactions that only read.
    pub read_only: u32,
    /// A read-only transaction reads 1 to `reads` variables...
    pub reads: usize,
    /// ...or, for `scans` of them, `scan` consecutive ones.
    pub scans: u32,
    pub scan: usize,
    /// An update makes 1 to `rmws` read-modify-writes, some preceded by a read.
    pub rmws: usize,
    /// Accesses that go to the first `hot` variables (the rest are uniform).
    pub hot_share: u32,
    pub hot: usize,
    /// Updates that write one of their variables a second time (an intermediate value).
    pub rewrites: u32,
    /// Updates with an `or_else` whose first branch writes and may retry.
    pub or_else: u32,
    /// Transactions with a `MaybeRetry` (then a companion thread writes the signals).
    pub retries: u32,
    /// Transactions that panic at a random point.
    pub panics: u32,
    /// Transactions that abort with an error at a random point.
    pub aborts: u32,
    /// Transactions that register commit hooks (an `on_commit` hook takes the commit path that
    /// locks the read set).
    pub hooks: u32,
    /// How abandoned attempts are reported: by `on_abort` hooks, or seen as re-runs (the
    /// hook-free path of the engine).
    pub reporting: Reporting,
    pub seed: u64,
}

impl Workload {
    /// Updates only, no extras: spell out what differs.
    pub const BASE: Workload = Workload {
        name: "base",
        threads: 4,
        vars: 8,
        commits_per_thread: 1_000,
        read_only: 0,
        reads: 4,
        scans: 0,
        scan: 0,
        rmws: 2,
        hot_share: 0,
        hot: 0,
        rewrites: 0,
        or_else: 0,
        retries: 0,
        panics: 0,
        aborts: 0,
        hooks: 0,
        reporting: Reporting::Explicit,
        seed: 1,
    };

    /// The generator of thread `t`'s plans (distinct, well-mixed seeds).
    pub fn rng(&self, t: usize) -> Rng {
        // splitmix64 of (seed, t): xorshift's first outputs are poor for small seeds.
        let mut z = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add((t as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
}

fn per_mille(rng: &mut Rng, rate: u32) -> bool {
    rate > 0 && (rng.below(1000) as u32) < rate
}

fn pick(w: &Workload, rng: &mut Rng) -> usize {
    if w.hot > 0 && per_mille(rng, w.hot_share) {
        rng.below(w.hot.min(w.vars))
    } else {
        rng.below(w.vars)
    }
}

fn insert_anywhere(ops: &mut Vec<Op>, op: Op, rng: &mut Rng) {
    let at = rng.below(ops.len() + 1);
    ops.insert(at, op);
}

/// A random transaction.
pub fn plan(w: &Workload, rng: &mut Rng) -> Vec<Op> {
    let mut ops = Vec::new();
    if per_mille(rng, w.read_only) {
        if per_mille(rng, w.scans) {
            let start = rng.below(w.vars);
            ops.extend((0..w.scan.min(w.vars)).map(|k| Op::Read((start + k) % w.vars)));
        } else {
            for _ in 0..1 + rng.below(w.reads) {
                ops.push(Op::Read(pick(w, rng)));
            }
        }
    } else {
        let mut written = Vec::new();
        for _ in 0..1 + rng.below(w.rmws) {
            if rng.below(3) == 0 {
                ops.push(Op::Read(pick(w, rng)));
            }
            let x = pick(w, rng);
            written.push(x);
            ops.push(Op::Rmw(x));
        }
        if per_mille(rng, w.rewrites) {
            let again = written[rng.below(written.len())];
            ops.push(Op::Rmw(again));
        }
        if per_mille(rng, w.or_else) {
            // Half the time the branch writes a variable the transaction also writes outside
            // it (the branch's write shadows the outer one).
            let inside = if rng.below(2) == 0 {
                written[rng.below(written.len())]
            } else {
                pick(w, rng)
            };
            let first = vec![Op::Rmw(inside), Op::Read(pick(w, rng))];
            let second = vec![Op::Rmw(pick(w, rng))];
            let first_retries = rng.below(2) == 0;
            let op = Op::OrElse {
                first,
                first_retries,
                second,
            };
            insert_anywhere(&mut ops, op, rng);
        }
    }
    if per_mille(rng, w.retries) {
        let signal = rng.below(SIGNALS.min(w.vars));
        insert_anywhere(&mut ops, Op::MaybeRetry(signal), rng);
    }
    if per_mille(rng, w.hooks) {
        insert_anywhere(&mut ops, Op::Hooks, rng);
    }
    if per_mille(rng, w.aborts) {
        insert_anywhere(&mut ops, Op::Abort, rng);
    }
    if per_mille(rng, w.panics) {
        insert_anywhere(&mut ops, Op::Panic, rng);
    }
    ops
}

/// Run `worker(t)` for `t` in `0..threads`, each on its own thread, and wait for all of them;
/// fail if one panics or if they are not all done within `limit` (a hang).
pub fn run_workers(
    threads: usize,
    limit: Duration,
    worker: impl Fn(usize) + Send + Sync + 'static,
) {
    let worker = Arc::new(worker);
    let (done, results) = mpsc::channel();
    for t in 0..threads {
        let (worker, done) = (worker.clone(), done.clone());
        thread::spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| worker(t)));
            let _ = done.send((t, result));
        });
    }
    let deadline = Instant::now() + limit;
    for _ in 0..threads {
        match results.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((_, Ok(()))) => {}
            Ok((t, Err(p))) => panic!("worker {t} panicked: {}", panic_message(&*p)),
            Err(_) => panic!("the workers were not done after {limit:?}: a hang?"),
        }
    }
}
