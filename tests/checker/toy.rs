//! A small, deliberately simple STM with switchable bugs, to show that the checker fails.
//!
//! Each variable keeps its last [`HISTORY`] versions `(stamp, value)` behind a mutex; commits
//! are serialized by one global lock, stamp the new versions with `clock + 1` and then publish
//! that clock value. Without a bug this is a correct multi-version STM: an attempt reads the
//! newest versions at or below its snapshot `rv` (the clock when it began), so every attempt
//! sees one committed state (opacity); an update validates at commit that everything it read
//! is still the newest version (serializable at its commit); a read-only transaction commits
//! at its snapshot, which includes everything committed before it began (strict).
//!
//! The bugs, each one a shortcut that real STMs have taken:
//!
//! * [`Bug::NoReadValidation`]: reads take the newest version and nothing is validated. Lost
//!   updates, write skew.
//! * [`Bug::ValidationOnlyAtCommit`]: reads take the newest version and every transaction
//!   validates its reads at commit (optimistic concurrency control without a snapshot).
//!   Committed transactions stay strictly serializable, but a doomed attempt can see a torn
//!   state before its commit fails: only the aborted attempts show it (no opacity).
//! * [`Bug::StaleReadOnlySnapshots`]: a thread reuses its snapshot for [`STALE_FOR`]
//!   transactions to save loading the clock. Updates still validate and so refresh it; a
//!   read-only transaction commits on its old, consistent snapshot and misses commits that
//!   finished before it started: serializable, not strictly serializable.
//!
//! The toy yields every few reads and before every few commits, so that threads interleave
//! inside the windows the bugs open even on a machine with few cores.

use super::record::{Cause, Recorder, Recording, Reporting, INITIAL};
use super::workload::{plan, run_workers, Op, Workload};
use super::{check, Report};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Versions kept per variable.
pub const HISTORY: usize = 32;
/// Transactions a thread runs on one snapshot under [`Bug::StaleReadOnlySnapshots`].
pub const STALE_FOR: u32 = 64;
/// A yield every this many reads (and commits).
const YIELD_EVERY: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    None,
    NoReadValidation,
    ValidationOnlyAtCommit,
    StaleReadOnlySnapshots,
}

/// An attempt must be abandoned.
#[derive(Debug)]
pub struct Conflict;

pub struct ToyStm {
    bug: Bug,
    /// The stamp of the newest commit; written only under `commit_lock`.
    clock: AtomicU64,
    commit_lock: Mutex<()>,
    /// Each variable's versions, oldest first.
    vars: Vec<Mutex<Vec<(u64, u64)>>>,
}

thread_local! {
    /// The reused snapshot of `Bug::StaleReadOnlySnapshots`: (STM address, snapshot, uses left).
    static CACHED: Cell<(usize, u64, u32)> = const { Cell::new((0, 0, 0)) };
    static STEPS: Cell<u32> = const { Cell::new(0) };
}

/// Yield now and then, to let other threads into the window that is open.
fn pause() {
    let steps = STEPS.with(|s| {
        s.set(s.get().wrapping_add(1));
        s.get()
    });
    if steps % YIELD_EVERY == 0 {
        thread::yield_now();
    }
}

impl ToyStm {
    pub fn new(vars: usize, bug: Bug) -> ToyStm {
        ToyStm {
            bug,
            clock: AtomicU64::new(0),
            commit_lock: Mutex::new(()),
            vars: (0..vars).map(|_| Mutex::new(vec![(0, INITIAL)])).collect(),
        }
    }

    pub fn begin(&self) -> ToyTx<'_> {
        // Acquire: pairs with the Release store of a commit, after its versions were pushed.
        let fresh = || self.clock.load(Ordering::Acquire);
        let rv = if self.bug == Bug::StaleReadOnlySnapshots {
            let me = self as *const ToyStm as usize;
            CACHED.with(|c| {
                let (stm, rv, left) = c.get();
                if stm == me && left > 0 {
                    c.set((me, rv, left - 1));
                    rv
                } else {
                    let rv = fresh();
                    c.set((me, rv, STALE_FOR - 1));
                    rv
                }
            })
        } else {
            fresh()
        };
        ToyTx {
            stm: self,
            rv,
            reads: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// An attempt was abandoned: the next one takes a fresh snapshot.
    pub fn conflicted(&self) {
        CACHED.with(|c| c.set((0, 0, 0)));
    }

    /// The newest value of `var`.
    pub fn load(&self, var: usize) -> u64 {
        self.vars[var].lock().unwrap().last().expect("a version").1
    }
}

pub struct ToyTx<'s> {
    stm: &'s ToyStm,
    rv: u64,
    /// (variable, stamp read)
    reads: Vec<(usize, u64)>,
    writes: Vec<(usize, u64)>,
}

impl ToyTx<'_> {
    pub fn read(&mut self, var: usize) -> Result<u64, Conflict> {
        if let Some(&(_, value)) = self.writes.iter().rev().find(|w| w.0 == var) {
            return Ok(value);
        }
        pause();
        let versions = self.stm.vars[var].lock().unwrap();
        let (stamp, value) = match self.stm.bug {
            Bug::NoReadValidation | Bug::ValidationOnlyAtCommit => {
                *versions.last().expect("a version")
            }
            Bug::None | Bug::StaleReadOnlySnapshots => *versions
                .iter()
                .rev()
                .find(|v| v.0 <= self.rv)
                .ok_or(Conflict)?,
        };
        self.reads.push((var, stamp));
        Ok(value)
    }

    pub fn write(&mut self, var: usize, value: u64) {
        self.writes.push((var, value));
    }

    pub fn commit(self) -> Result<(), Conflict> {
        pause();
        let _serial = self.stm.commit_lock.lock().unwrap();
        let validate = match self.stm.bug {
            Bug::NoReadValidation => false,
            Bug::ValidationOnlyAtCommit => true,
            Bug::None | Bug::StaleReadOnlySnapshots => !self.writes.is_empty(),
        };
        let newest = |var: usize| self.stm.vars[var].lock().unwrap().last().expect("").0;
        if validate && self.reads.iter().any(|&(var, stamp)| newest(var) != stamp) {
            return Err(Conflict);
        }
        if self.writes.is_empty() {
            return Ok(());
        }
        // Only committers write the clock, all under `commit_lock`.
        let wv = self.stm.clock.load(Ordering::Relaxed) + 1;
        for (i, &(var, value)) in self.writes.iter().enumerate() {
            if self.writes[i + 1..].iter().any(|w| w.0 == var) {
                continue; // only the last write of a variable is installed
            }
            let mut versions = self.stm.vars[var].lock().unwrap();
            versions.push((wv, value));
            if versions.len() > HISTORY {
                versions.remove(0);
            }
        }
        // Release: a snapshot that sees `wv` sees the versions pushed above.
        self.stm.clock.store(wv, Ordering::Release);
        Ok(())
    }
}

fn run_ops(tx: &mut ToyTx<'_>, rec: &mut Recorder, ops: &[Op]) -> Result<(), Conflict> {
    for op in ops {
        match *op {
            Op::Read(x) => {
                let v = tx.read(x)?;
                rec.read(x, v);
            }
            Op::Rmw(x) => {
                let v = tx.read(x)?;
                rec.read(x, v);
                tx.write(x, rec.write(x));
            }
            ref other => unreachable!("the toy STM does not run {other:?}"),
        }
    }
    Ok(())
}

/// Run `workload` (reads and read-modify-writes only) on a toy STM with `bug`, record it, and
/// check the history.
pub fn run_toy(workload: &Workload, bug: Bug) -> Report {
    let w = *workload;
    let stm = Arc::new(ToyStm::new(w.vars, bug));
    let recording = Recording::new(w.vars);
    {
        let (stm, recording) = (stm.clone(), recording.clone());
        run_workers(w.threads, Duration::from_secs(120), move |t| {
            let mut rec = recording.recorder(Reporting::Explicit);
            let mut rng = w.rng(t);
            for _ in 0..w.commits_per_thread {
                let ops = plan(&w, &mut rng);
                rec.call_begin();
                loop {
                    rec.attempt_begin();
                    let mut tx = stm.begin();
                    match run_ops(&mut tx, &mut rec, &ops).and_then(|()| tx.commit()) {
                        Ok(()) => break rec.committed(),
                        Err(Conflict) => {
                            rec.aborted(Cause::Conflict);
                            stm.conflicted();
                        }
                    }
                }
            }
        });
    }
    let final_state: Vec<u64> = (0..w.vars).map(|v| stm.load(v)).collect();
    check(&recording.history(), Some(&final_state))
}
