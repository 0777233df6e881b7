//! Fault injection under concurrency: panics in the body at random points and in every hook kind
//! (`on_abort`, `on_commit`, `after_commit`), from four threads moving money between accounts.
//!
//! What each panic must do (API.md §2, `docs/hooks.md`):
//!
//! * in the body: the attempt is rolled back, its `on_abort` hooks run, the panic resumes;
//! * in `on_abort`: the other `on_abort` hooks still run, then the panic resumes (the call ends,
//!   even after a conflict);
//! * in `on_commit`: a veto: nothing is published, `on_abort` hooks run, the panic resumes;
//! * in `after_commit`: the commit stands, every other `after_commit` hook still runs, then the
//!   first panic resumes.
//!
//! So a call committed exactly when it returned or resumed an `after_commit` panic. Every call
//! checks that the hooks of its attempts ran exactly as registered; afterwards the test checks
//! that no lock was left held, that no partial write was published (money is conserved and a
//! commit counter written by every transfer equals the calls that committed), and that the
//! runtime still works.

mod common;

use common::{finish, on_other_thread, silence_panics_of, spawn_reporting, Rng};
use mvstm::{atomically, retry, try_atomically, StmResult, TVar, Txn};
use std::cell::Cell;
use std::panic::{catch_unwind, panic_any, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 100_000;
const ACCOUNTS: usize = 16;
const START: i64 = 1_000;
/// Per mille of attempts in which each kind of fault is armed.
const FAULT_RATE: usize = 20;
/// Every this many calls is a read-only audit of all accounts.
const AUDIT_EVERY: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Body,
    OnAbort,
    OnCommit,
    AfterCommit,
}

/// The payload of every injected panic.
#[derive(Debug)]
struct Injected(Fault);

/// Hooks registered or run, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Hooks {
    on_abort: usize,
    on_commit: usize,
    after_commit: usize,
}

impl std::ops::Sub for Hooks {
    type Output = Hooks;
    fn sub(self, o: Hooks) -> Hooks {
        Hooks {
            on_abort: self.on_abort - o.on_abort,
            on_commit: self.on_commit - o.on_commit,
            after_commit: self.after_commit - o.after_commit,
        }
    }
}

thread_local! {
    /// Hooks that ran on this thread (counted before an injected panic).
    static RAN: Cell<Hooks> = const { Cell::new(Hooks { on_abort: 0, on_commit: 0, after_commit: 0 }) };
    /// What a hook saw that it should not have (hooks must not assert: a panic is a fault).
    static WRONG: Cell<usize> = const { Cell::new(0) };
}

fn ran(update: impl FnOnce(&mut Hooks)) {
    RAN.with(|r| {
        let mut h = r.get();
        update(&mut h);
        r.set(h);
    });
}

fn wrong() {
    WRONG.with(|w| w.set(w.get() + 1));
}

#[derive(Clone)]
struct Bank {
    accounts: Arc<Vec<TVar<i64>>>,
    /// Incremented by every transfer: the number of committed transfers.
    commits: TVar<u64>,
}

impl Bank {
    fn new() -> Bank {
        Bank {
            accounts: Arc::new((0..ACCOUNTS).map(|_| TVar::new(START)).collect()),
            commits: TVar::new(0),
        }
    }
}

fn per_mille(rng: &mut Rng, rate: usize) -> bool {
    rng.below(1000) < rate
}

/// One attempt's faults, drawn when the attempt starts.
struct Armed {
    body_at: Option<usize>,
    on_abort: bool,
    on_commit: bool,
    after_commit: bool,
}

/// The steps of a transfer (or an audit), with hook registrations in between; an armed body
/// fault panics before step `body_at`.
const STEPS: usize = 6;

/// One attempt. `registered` counts the hooks it registers; `veto` is set to the number of
/// `on_commit` hooks that run if the armed one vetoes (those before it, and itself).
fn attempt(
    tx: &mut Txn,
    bank: &Bank,
    rng: &mut Rng,
    audit: bool,
    registered: &mut Hooks,
    veto: &mut Option<usize>,
) -> StmResult<()> {
    let armed = Armed {
        body_at: per_mille(rng, FAULT_RATE).then(|| rng.below(STEPS)),
        on_abort: per_mille(rng, FAULT_RATE),
        on_commit: per_mille(rng, FAULT_RATE),
        after_commit: per_mille(rng, FAULT_RATE),
    };
    let (from, to) = (rng.below(ACCOUNTS), rng.below(ACCOUNTS));
    let amount = rng.below(100) as i64;
    // What `after_commit` hooks must at least see, known once step 5 has read the counter.
    let least_commits = Rc::new(Cell::new(u64::MAX));
    for step in 0..STEPS {
        if armed.body_at == Some(step) {
            panic_any(Injected(Fault::Body));
        }
        match step {
            0 => {
                let n = 1 + rng.below(2);
                let panics = armed.on_abort.then(|| rng.below(n));
                for k in 0..n {
                    let panics = panics == Some(k);
                    tx.on_abort(move |_| {
                        ran(|h| h.on_abort += 1);
                        if panics {
                            panic_any(Injected(Fault::OnAbort));
                        }
                    });
                }
                registered.on_abort += n;
            }
            1 if audit => {
                let mut total = 0;
                for a in bank.accounts.iter() {
                    total += tx.read(a)?;
                }
                if total != START * ACCOUNTS as i64 {
                    wrong(); // a torn view inside an attempt
                }
            }
            1 => {
                let balance = tx.read(&bank.accounts[from])?;
                tx.write(&bank.accounts[from], balance - amount)?;
            }
            2 => {
                // The armed hook is the last one registered here; step 5 adds one after it,
                // which a veto leaves unrun (FIFO).
                let n = rng.below(3).max(usize::from(armed.on_commit));
                for k in 0..n {
                    let panics = armed.on_commit && k == n - 1;
                    if panics {
                        *veto = Some(registered.on_commit + n);
                    }
                    tx.on_commit(move || {
                        ran(|h| h.on_commit += 1);
                        if panics {
                            panic_any(Injected(Fault::OnCommit));
                        }
                    });
                }
                registered.on_commit += n;
            }
            3 if audit => {}
            3 => {
                let balance = tx.read(&bank.accounts[to])?;
                tx.write(&bank.accounts[to], balance + amount)?;
            }
            4 => {
                let n = 1 + rng.below(2);
                let panics = armed.after_commit.then(|| rng.below(n));
                for k in 0..n {
                    let panics = panics == Some(k);
                    let (commits, least) = (bank.commits.clone(), least_commits.clone());
                    tx.after_commit(move || {
                        ran(|h| h.after_commit += 1);
                        if commits.load() < least.get() {
                            wrong(); // the commit is not visible yet
                        }
                        if panics {
                            panic_any(Injected(Fault::AfterCommit));
                        }
                    });
                }
                registered.after_commit += n;
            }
            5 => {
                let seen_commits = tx.read(&bank.commits)?;
                least_commits.set(seen_commits + u64::from(!audit));
                if !audit {
                    tx.write(&bank.commits, seen_commits + 1)?;
                    // Runs with the read and write sets locked: the counter is still as read.
                    let (commits, expected) = (bank.commits.clone(), seen_commits);
                    tx.on_commit(move || {
                        ran(|h| h.on_commit += 1);
                        if commits.load() != expected {
                            wrong();
                        }
                    });
                    registered.on_commit += 1;
                }
            }
            _ => unreachable!(),
        }
    }
    Ok(())
}

/// What one worker saw.
#[derive(Default, Debug)]
struct Tally {
    committed_transfers: u64,
    committed: usize,
    faults: [usize; 4],
    /// Calls whose hooks did not run as registered.
    hook_errors: usize,
}

fn worker(bank: Bank, seed: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for call in 0..CALLS_PER_THREAD {
        let audit = call % AUDIT_EVERY == 0;
        let before = RAN.with(Cell::get);
        // Hooks of the attempts abandoned before the current one, and of the current one.
        let mut abandoned = Hooks::default();
        let mut current = Hooks::default();
        let mut veto = None;
        let result = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| {
                // Running again: the previous attempt was abandoned.
                abandoned.on_abort += current.on_abort;
                (current, veto) = (Hooks::default(), None);
                attempt(tx, &bank, &mut rng, audit, &mut current, &mut veto)
            })
        }));
        let committed = match result {
            Ok(()) => true,
            Err(payload) => match payload.downcast_ref::<Injected>() {
                Some(Injected(fault)) => {
                    tally.faults[*fault as usize] += 1;
                    *fault == Fault::AfterCommit
                }
                None => resume_unwind(payload),
            },
        };
        let now = RAN.with(Cell::get) - before;
        let expected_on_abort = abandoned.on_abort + if committed { 0 } else { current.on_abort };
        let ok = now.on_abort == expected_on_abort
            && if committed {
                now.on_commit == current.on_commit && now.after_commit == current.after_commit
            } else {
                // on_commit hooks run only in an attempt that commits or vetoes: the last one.
                (now.on_commit == 0 || Some(now.on_commit) == veto) && now.after_commit == 0
            };
        if !ok {
            tally.hook_errors += 1;
        }
        if committed {
            tally.committed += 1;
            tally.committed_transfers += u64::from(!audit);
        }
    }
    tally
}

/// A thread blocked in `retry` is woken by a commit of what it read.
fn blocking_and_waking_still_work() {
    let flag = TVar::new(false);
    let waiter = {
        let flag = flag.clone();
        spawn_reporting(move || {
            atomically(|tx| -> StmResult<u8> {
                if !tx.read(&flag)? {
                    return retry();
                }
                Ok(1)
            })
        })
    };
    thread::sleep(common::QUIET);
    atomically(|tx| tx.write(&flag, true));
    assert_eq!(finish(&waiter, "a waiter after the faults"), 1);
}

#[test]
fn panics_in_bodies_and_every_hook_kind_leave_a_consistent_usable_runtime() {
    silence_panics_of::<Injected>();
    let bank = Bank::new();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let bank = bank.clone();
            spawn_reporting(move || {
                let tally = worker(bank, 31 + t as u64);
                (tally, WRONG.with(Cell::get))
            })
        })
        .collect();
    let mut total = Tally::default();
    for rx in &workers {
        let (tally, wrong) = common::finish_within(
            rx,
            "a fault-injecting worker",
            std::time::Duration::from_secs(300),
        );
        assert_eq!(wrong, 0, "a hook or an attempt saw an impossible state");
        total.committed_transfers += tally.committed_transfers;
        total.committed += tally.committed;
        total.hook_errors += tally.hook_errors;
        for (sum, n) in total.faults.iter_mut().zip(tally.faults) {
            *sum += n;
        }
    }
    println!(
        "{} calls, {} committed; calls ended by a panic in the body {}, on_abort {}, \
         on_commit {}, after_commit {} (committed)",
        THREADS * CALLS_PER_THREAD,
        total.committed,
        total.faults[Fault::Body as usize],
        total.faults[Fault::OnAbort as usize],
        total.faults[Fault::OnCommit as usize],
        total.faults[Fault::AfterCommit as usize],
    );
    assert!(
        total.faults.iter().all(|&n| n > 0),
        "every kind of fault happened: {:?}",
        total.faults
    );
    assert_eq!(
        total.hook_errors, 0,
        "hooks ran other than registered (after_commit hooks of committed calls included)"
    );

    // No lock left held: another thread updates every variable, at once and one by one, within
    // the time limit of `on_other_thread`.
    let other = bank.clone();
    on_other_thread(move || {
        atomically(|tx| {
            for a in other.accounts.iter() {
                tx.modify(a, |v| v)?;
            }
            tx.modify(&other.commits, |c| c)
        });
        for a in other.accounts.iter() {
            atomically(|tx| tx.modify(a, |v| v));
        }
    });

    // No partial write: money is conserved, and the transfer counter (written with the
    // accounts) counts exactly the calls that committed.
    let (sum, commits) = atomically(|tx| {
        let mut sum = 0;
        for a in bank.accounts.iter() {
            sum += tx.read(a)?;
        }
        Ok((sum, tx.read(&bank.commits)?))
    });
    assert_eq!(sum, START * ACCOUNTS as i64, "money was created or lost");
    assert_eq!(
        commits, total.committed_transfers,
        "commits seen by the callers"
    );

    // The runtime is usable, on a thread that met every fault too.
    for fault in [
        Fault::Body,
        Fault::OnAbort,
        Fault::OnCommit,
        Fault::AfterCommit,
    ] {
        let r = catch_unwind(AssertUnwindSafe(|| {
            try_atomically::<(), ()>(|tx| {
                tx.modify(&bank.commits, |c| c + 1)?;
                match fault {
                    Fault::Body => panic_any(Injected(fault)),
                    Fault::OnAbort => {
                        tx.on_abort(move |_| panic_any(Injected(fault)));
                        tx.abort(())
                    }
                    Fault::OnCommit => {
                        tx.on_commit(move || panic_any(Injected(fault)));
                        Ok(())
                    }
                    Fault::AfterCommit => {
                        tx.after_commit(move || panic_any(Injected(fault)));
                        Ok(())
                    }
                }
            })
        }));
        let payload = r.expect_err("the injected panic resumes");
        assert!(matches!(payload.downcast_ref::<Injected>(), Some(Injected(f)) if *f == fault));
    }
    assert_eq!(
        bank.commits.load(),
        commits + 1,
        "only the after_commit one committed"
    );
    let log = Rc::new(Cell::new(Hooks::default()));
    let l = (log.clone(), log.clone(), log.clone());
    atomically(|tx| {
        tx.modify(&bank.commits, |c| c + 1)?;
        let (a, b) = (l.0.clone(), l.1.clone());
        tx.on_commit(move || {
            a.set(Hooks {
                on_commit: 1,
                ..a.get()
            })
        });
        tx.after_commit(move || {
            b.set(Hooks {
                after_commit: 1,
                ..b.get()
            })
        });
        let c = l.2.clone();
        tx.on_abort(move |_| {
            c.set(Hooks {
                on_abort: 1,
                ..c.get()
            })
        });
        Ok(())
    });
    let expected = Hooks {
        on_abort: 0,
        on_commit: 1,
        after_commit: 1,
    };
    assert_eq!(log.get(), expected);

    blocking_and_waking_still_work();
}

// ---------------------------------------------------------------------------------------------
// Panics in clones and destructors of TVar values, beside body and hook faults and a lifecycle
// ---------------------------------------------------------------------------------------------

/// The payload of a panic from a clone or a destructor of [`Cash`].
#[derive(Debug)]
struct ValueFault;

thread_local! {
    /// While set, a `Cash` cloned or dropped on this thread may panic (per mille).
    static VALUE_FAULTS: Cell<usize> = const { Cell::new(0) };
    /// This thread's generator for value faults (clones and drops run on any thread).
    static VALUE_RNG: Cell<u64> = const { Cell::new(0x2545_F491_4F6C_DD1D) };
}

fn value_fault() -> bool {
    let rate = VALUE_FAULTS.with(Cell::get);
    if rate == 0 || thread::panicking() {
        // Never a second panic while unwinding: that would abort the process.
        return false;
    }
    VALUE_RNG.with(|r| {
        let mut rng = Rng(r.get());
        let hit = rng.below(1000) < rate;
        r.set(rng.0);
        hit
    })
}

/// An account balance whose clone and destructor panic now and then on an armed thread.
struct Cash(i64);

impl Clone for Cash {
    fn clone(&self) -> Self {
        if value_fault() {
            panic_any(ValueFault);
        }
        Cash(self.0)
    }
}

impl Drop for Cash {
    fn drop(&mut self) {
        if value_fault() {
            panic_any(ValueFault);
        }
    }
}

/// A service whose start and stop fail or panic now and then.
struct Flaky {
    rng: std::sync::Mutex<Rng>,
    running: std::sync::atomic::AtomicUsize,
}

impl mvstm::lifecycle::Service for Flaky {
    type Running = ();
    type Error = String;

    fn start(&self) -> Result<(), String> {
        let roll = self.rng.lock().unwrap().below(10);
        match roll {
            0 => Err("start refused".into()),
            1 => panic_any(Injected(Fault::Body)),
            _ => {
                let before = self
                    .running
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(before, 0, "started twice");
                Ok(())
            }
        }
    }

    fn stop(&self, (): ()) -> Result<(), String> {
        self.running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let roll = self.rng.lock().unwrap().below(10);
        match roll {
            0 => Err("stop refused".into()),
            1 => panic_any(Injected(Fault::Body)),
            _ => Ok(()),
        }
    }
}

/// Four threads move money whose values panic when cloned (in reads) or dropped (in discarded
/// writes, and in the collector wherever it runs them: pins, the flush after a commit), while
/// bodies, `on_commit` and `after_commit` hooks panic too and a flaky service is started and
/// stopped. Afterwards: every call
/// that ran its `on_commit` hooks ran its `after_commit` hook exactly once, the money is whole,
/// the commit counter matches, no lock is held, the lifecycle settled (never stuck starting or
/// stopping), and the runtime still blocks and wakes.
#[test]
fn panics_in_clones_and_destructors_leave_every_commit_whole() {
    use mvstm::lifecycle::{Lifecycle, State};
    const CALLS: usize = 20_000;
    silence_panics_of::<Injected>();
    silence_panics_of::<ValueFault>();
    let accounts: Arc<Vec<TVar<Cash>>> =
        Arc::new((0..ACCOUNTS).map(|_| TVar::new(Cash(START))).collect());
    let commits = TVar::new(0u64);
    let service = Arc::new(Lifecycle::new(Flaky {
        rng: std::sync::Mutex::new(Rng(7)),
        running: std::sync::atomic::AtomicUsize::new(0),
    }));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (accounts, commits, service) = (accounts.clone(), commits.clone(), service.clone());
            spawn_reporting(move || {
                let mut rng = Rng(91 + t as u64);
                let (mut on_commit, mut after_commit, mut panicked) = (0usize, 0usize, 0usize);
                for call in 0..CALLS {
                    let oc = Rc::new(Cell::new(0usize));
                    let ac = Rc::new(Cell::new(0usize));
                    VALUE_FAULTS.with(|f| f.set(5));
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        if call % 50 == 0 {
                            // Start or stop; refusals and failures are fine, panics resume.
                            let _ = if rng.below(2) == 0 {
                                service.start()
                            } else {
                                service.stop()
                            };
                            return;
                        }
                        atomically(|tx| {
                            let (from, to) = (rng.below(ACCOUNTS), rng.below(ACCOUNTS));
                            let amount = rng.below(100) as i64;
                            let a = tx.read(&accounts[from])?.0;
                            tx.write(&accounts[from], Cash(a - amount))?;
                            let b = tx.read(&accounts[to])?.0;
                            tx.write(&accounts[to], Cash(b + amount))?;
                            tx.modify(&commits, |c| c + 1)?;
                            if rng.below(1000) < 5 {
                                panic_any(Injected(Fault::Body));
                            }
                            // Hook faults: an `on_commit` hook that panics vetoes, and the
                            // marker after it never runs; an `after_commit` hook that panics
                            // does not stop the marker after it. So a call ran its `on_commit`
                            // marker exactly when it committed, and then its `after_commit` one.
                            let veto = rng.below(1000) < 5;
                            tx.on_commit(move || {
                                if veto {
                                    panic_any(Injected(Fault::OnCommit));
                                }
                            });
                            let (oc, ac) = (oc.clone(), ac.clone());
                            tx.on_commit(move || oc.set(oc.get() + 1));
                            let late = rng.below(1000) < 5;
                            tx.after_commit(move || {
                                if late {
                                    panic_any(Injected(Fault::AfterCommit));
                                }
                            });
                            tx.after_commit(move || ac.set(ac.get() + 1));
                            Ok(())
                        })
                    }));
                    VALUE_FAULTS.with(|f| f.set(0));
                    if let Err(payload) = result {
                        if !(payload.is::<Injected>() || payload.is::<ValueFault>()) {
                            resume_unwind(payload);
                        }
                        panicked += 1;
                    }
                    // At most one attempt commits, and it runs both of its hooks once.
                    assert!(
                        oc.get() <= 1 && oc.get() == ac.get(),
                        "call {call}: on_commit ran {} times, after_commit {}",
                        oc.get(),
                        ac.get()
                    );
                    on_commit += oc.get();
                    after_commit += ac.get();
                }
                (on_commit, after_commit, panicked)
            })
        })
        .collect();
    let (mut committed, mut panicked) = (0, 0);
    for rx in &workers {
        let (on_commit, after_commit, p) =
            common::finish_within(rx, "a worker", std::time::Duration::from_secs(300));
        assert_eq!(on_commit, after_commit);
        committed += on_commit;
        panicked += p;
    }
    println!(
        "{} calls, {committed} committed transfers, {panicked} ended by a panic",
        THREADS * CALLS
    );
    assert!(panicked > 0, "no fault fired");
    // No lock left held: another thread updates every variable, one by one and at once.
    let (others, c) = (accounts.clone(), commits.clone());
    on_other_thread(move || {
        for a in others.iter() {
            atomically(|tx| tx.modify(a, |v| Cash(v.0)));
        }
        atomically(|tx| {
            for a in others.iter() {
                tx.modify(a, |v| Cash(v.0))?;
            }
            tx.modify(&c, |n| n)
        });
    });
    // Whole commits only: money conserved, and the counter written with every transfer equals
    // the transfers whose hooks said they committed.
    let (sum, counted) = atomically(|tx| {
        let mut sum = 0;
        for a in accounts.iter() {
            sum += tx.read(a)?.0;
        }
        Ok((sum, tx.read(&commits)?))
    });
    assert_eq!(sum, START * ACCOUNTS as i64, "money was created or lost");
    assert_eq!(
        counted as usize, committed,
        "commits and after_commit hooks disagree"
    );
    // The lifecycle settled, and it still works.
    let settled = || {
        let state = service.state();
        assert!(
            !matches!(state, State::Starting | State::Stopping),
            "the lifecycle was left {state:?}"
        );
    };
    settled();
    for _ in 0..4 {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _ = service.stop();
            let _ = service.start();
        }));
        settled();
    }
    blocking_and_waking_still_work();
}
