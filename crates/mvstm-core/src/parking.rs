//! Blocking in `retry` without losing a wake-up.
//!
//! A retrying thread registers itself on every variable it waits on *before* it checks whether
//! they changed. A committing writer checks for waiters while it holds its locks, right after
//! taking its stamp (a `SeqCst` read-modify-write that follows every lock CAS), and wakes them
//! after it unlocks:
//!
//! ```text
//! waiter:  insert in wait table; waiters.fetch_add (SeqCst); load lock word (SeqCst); park
//! writer:  lock (SeqCst CAS); take stamp (SeqCst); load waiters (SeqCst); publish; unlock; unpark
//! ```
//!
//! In the single total order of `SeqCst` operations, either the writer's waiter load comes after
//! the registration (it wakes the waiter; an unpark that comes before the park makes the park
//! return at once), or it comes before, and then so does the writer's lock CAS: the waiter finds
//! the variable locked, or already unlocked with the new stamp. A variable found changed ends the
//! wait. A variable found locked but unchanged may belong to a writer that missed the
//! registration, so the waiter then parks with a short timeout and looks again: a lock is held
//! only while a commit runs. A locked variable whose new version is linked but still pending
//! (its commit undecided) counts as unchanged too: a re-run's snapshot could not read it yet,
//! and would retry again at once (a busy loop the loom model of retry found). A locked word is judged by the head version's stamp: the locker's
//! CAS continues the release sequence of the previous unlock, so that unlock's head is visible.
//! This is the register-then-revalidate order whose absence lost wake-ups in CCSTM (PITFALLS 4),
//! without a full fence on the writer's unlock.
//!
//! Waiters live in a global table of mutex-protected shards keyed by the variable's address, so
//! a TVar carries only a counter, and a writer of a variable nobody waits on pays one load. A
//! waiter removes every entry it made when it stops waiting, woken or not (PITFALLS 12), and
//! keeps the variables alive meanwhile with strong references.
//!
//! # Task waiters
//!
//! A waiter is a parked thread or an asynchronous task (`atomically_async`). A task registers a
//! `TaskWaker` (`timer.rs`) instead of its thread: a slot holding the task's current `Waker`, shared by all
//! of the task's table entries (and its timer entry, `timer.rs`). The order is the same as a
//! thread's, with "poll again" for "park":
//!
//! ```text
//! task:    set waker in slot; insert in wait table; waiters.fetch_add (SeqCst); load lock word;
//!          Pending (or re-run if changed)
//! poll:    set waker in slot (replaced unless `will_wake`); load lock words; Pending or re-run
//! writer:  ... unlock; under the slot's lock: wake the waker in it
//! ```
//!
//! The registration argument above covers the first look. When the task is polled again with
//! another waker, it puts the new one in the slot and then looks: a writer that took the slot's
//! lock before that woke the old waker, but it had unlocked the variable before (it wakes after
//! unlocking), so the look that follows under the slot lock's happens-before finds the change.
//! A writer that takes it after wakes the new waker.
//!
//! Dropping a task's `Wait` (the future completed or was dropped) removes its entries, then
//! empties the slot under its lock. A writer wakes *under* that lock, so once the drop returns
//! no wake-up for the task is issued any more, also by a writer that found the entry just
//! before it was removed. The rule this puts on executors: a waker's `wake_by_ref` must not
//! poll or drop the very future it wakes synchronously (no executor does: a wake schedules).

use crate::clock::NEVER;
use crate::log::ReadEntry;
use crate::sync::{Instant, Mutex, Ordering, Thread};
use crate::timer::{TaskWaker, TimerKey};
use crate::tvar::ErasedRef;
use crate::txn::{Predicate, WaitSpec};
use crate::version::Header;
use smallvec::SmallVec;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

#[cfg(not(loom))]
const SHARDS: usize = 64;
/// Under loom: one shard, so which shard a variable lands in (its address) never changes the
/// model's steps from one execution to the next.
#[cfg(loom)]
const SHARDS: usize = 1;

/// First and longest nap of a waiter that found a waited variable locked.
const POLL_START: Duration = Duration::from_micros(20);
const POLL_MAX: Duration = Duration::from_millis(1);
/// Looks in a row at a locked variable after which a task naps through the timer instead of
/// asking its executor to poll it again at once.
const LOCKED_YIELDS: u32 = 4;

struct Entry {
    addr: usize,
    waiter: Waiter,
    /// Identifies the registration, so a waiter removes exactly its own entries.
    ticket: u64,
}

crate::sync::global! {
    static TABLE: [Mutex<Vec<Entry>>; SHARDS] = [const { Mutex::new(Vec::new()) }; SHARDS];
    loom: std::array::from_fn(|_| Mutex::new(Vec::new()));
}

#[cfg_attr(loom, allow(clippy::modulo_one))] // one shard under loom
fn shard(addr: usize) -> &'static Mutex<Vec<Entry>> {
    // Fibonacci hashing of the address; headers are at least 8-byte aligned.
    &TABLE[(addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) % SHARDS]
}

/// Whether retry waiters are registered on `header`; a writer asks while it holds the lock,
/// after taking its stamp.
#[inline]
pub(crate) fn has_waiters(header: &Header) -> bool {
    // SeqCst: see the module docs.
    header.waiters.load(Ordering::SeqCst) != 0
}

/// Who waits behind a table entry.
#[derive(Clone)]
enum Waiter {
    /// A thread blocked in `Wait::block`.
    Thread(Thread),
    /// A task waiting in `Wait::poll` (`atomically_async`).
    Task(Arc<TaskWaker>),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(task) => task.wake(),
        }
    }
}

/// Wake the threads and tasks waiting on `header`; called by a writer after it unlocked it.
#[cold]
pub(crate) fn wake(header: &Header) {
    let addr = header as *const Header as usize;
    // Unpark after releasing the shard lock: an unpark is a syscall, and the woken thread's
    // first act is to take this lock to remove its entry (it would spin on it); a task's waker
    // runs executor code. A waiter that left meanwhile gets a spurious wake-up, which every
    // wait loop re-checks anyway (a task's emptied slot wakes nobody).
    let woken: SmallVec<[Waiter; 4]> = shard(addr)
        .lock()
        .iter()
        .filter(|e| e.addr == addr)
        .map(|e| e.waiter.clone())
        .collect();
    for waiter in woken {
        waiter.wake();
    }
}

/// How many waiters, threads and tasks, have entries on `header` in the wait table now.
pub(crate) fn waiters_on(header: &Header) -> usize {
    let addr = header as *const Header as usize;
    shard(addr).lock().iter().filter(|e| e.addr == addr).count()
}

/// How a waiter evaluates a `retry_until` predicate, given by the attempt loop (`runtime.rs`),
/// which runs it as a read-only transaction: whether it holds, and the stamp of each `watched`
/// variable in that transaction's snapshot. Passed in rather than called, so that this layer
/// stays below the loop that uses it.
pub(crate) type Evaluate = fn(&Predicate, &[NonNull<Header>]) -> (bool, SmallVec<[u64; 4]>);

/// A variable being waited on, with the stamp the attempt saw.
struct Watched {
    var: ErasedRef,
    stamp: u64,
}

/// What a look at a waited variable found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Changed, and the change is visible: a snapshot taken now reads it.
    Changed,
    Unchanged,
    /// Locked by a committer, and no change a snapshot could read yet: unchanged, or its new
    /// version linked but pending. The committer may have missed our registration.
    Locked,
}

impl Watched {
    /// The stamp of the variable's newest version, and whether it is locked.
    fn current(&self) -> (u64, bool) {
        // SeqCst load: the argument of the module docs.
        let word = self.var.header().lock.load();
        if !word.is_locked() {
            return (word.stamp(), false);
        }
        // Locked by a committer: its lock CAS read the last unlock (a release sequence), so the
        // head we load now is at least the version that unlock published.
        (self.var.head_stamp(), true)
    }

    fn look(&self) -> Seen {
        match self.current() {
            // A pending head: its commit is undecided, and a re-run could not read it yet (its
            // snapshot would resolve the version as newer and retry again at once, a busy loop
            // for as long as the committer takes). Treat it as locked and unchanged: the unlock
            // comes after the version is final. The same for a head being taken out again
            // (`NEVER`, its commit abandoned): nothing changed.
            (stamp, true) if stamp >= NEVER => Seen::Locked,
            // A final stamp came from the clock before this look, so a snapshot taken now reads
            // the version.
            (stamp, _) if stamp != self.stamp => Seen::Changed,
            (_, true) => Seen::Locked,
            (_, false) => Seen::Unchanged,
        }
    }
}

/// The registered wait of one retry: conditions plus the table entries that keep it wakeable.
pub(crate) struct Wait {
    any: Vec<Watched>,
    all: Vec<Vec<Watched>>,
    until: Vec<(Vec<Watched>, Predicate)>,
    evaluate: Evaluate,
    timeout: Option<Duration>,
    registered: SmallVec<[ErasedRef; 8]>,
    ticket: u64,
    /// A task's wait: its waker slot and where its polls stand. `None` for a thread.
    task: Option<TaskWait>,
}

/// What a task's wait keeps between polls.
struct TaskWait {
    waker: Arc<TaskWaker>,
    /// The first poll's time: the wait's length is counted from there, as a thread counts it
    /// from the start of `block`.
    started: Option<Instant>,
    /// The next nap after finding a waited variable locked (as `block`'s `poll`).
    nap: Duration,
    /// Looks in a row that found a waited variable locked and asked for a re-poll at once.
    yields: u32,
    /// The shared timer's entry that will wake the task (a deadline or a nap), if any.
    timer: Option<TimerKey>,
}

// SAFETY: a `Wait` owns strong references to TVar headers (`ErasedRef`, a `NonNull`): a header
// is atomics and function pointers, the value it keeps alive is `Send + Sync` (every `TVar<T>`
// requires it), and `TVar<T>` is `Send` for such values, so holding and releasing these
// references on another thread is what a `TVar`'s own `Send` allows. The other fields are
// `Send`: predicates are boxed with `Send`, `TaskWaker` is a mutex around a `Waker`, and a
// `TimerKey` is plain data.
unsafe impl Send for Wait {}

/// Who registers a wait: the calling thread (`atomically`) or a task polled by it.
pub(crate) enum WaiterKind<'a> {
    Thread,
    Task(&'a Waker),
}

impl Wait {
    /// Register on every variable of `spec` (plus `reads` if asked). Must run while the attempt
    /// is still pinned, since the logged headers are only guaranteed live until it unpins.
    pub(crate) fn register(
        spec: &mut WaitSpec,
        reads: &[ReadEntry],
        who: WaiterKind<'_>,
        evaluate: Evaluate,
    ) -> Wait {
        crate::sync::global! {
            static TICKETS: crate::sync::AtomicU64 = crate::sync::AtomicU64::new(1);
        }
        let mut wait = Wait {
            any: Vec::new(),
            all: Vec::new(),
            until: Vec::new(),
            evaluate,
            timeout: spec.timeout,
            registered: SmallVec::new(),
            // Relaxed: a unique number is all we need.
            ticket: TICKETS.fetch_add(1, Ordering::Relaxed),
            task: match who {
                WaiterKind::Thread => None,
                // The waker is in the slot before any entry points at it: a commit right after
                // the registration already wakes the task.
                WaiterKind::Task(waker) => Some(TaskWait {
                    waker: Arc::new(TaskWaker::new(waker.clone())),
                    started: None,
                    nap: POLL_START,
                    yields: 0,
                    timer: None,
                }),
            },
        };
        // A variable whose last handle is gone can never be observed to change: leave it out
        // (waiting on it alone would never end, and treating it as changed would spin).
        let watch = |entries: &[ReadEntry]| -> Vec<Watched> {
            entries
                .iter()
                .filter_map(|e| {
                    // SAFETY: the attempt is still pinned and logged `e.header`.
                    let var = unsafe { ErasedRef::upgrade(e.header) }?;
                    Some(Watched {
                        var,
                        stamp: e.stamp,
                    })
                })
                .collect()
        };
        if spec.on_reads {
            wait.any = watch(reads);
        }
        wait.any.extend(watch(&spec.any));
        for group in std::mem::take(&mut spec.all) {
            let watched = watch(&group);
            if !watched.is_empty() {
                wait.all.push(watched);
            }
        }
        for (group, predicate) in std::mem::take(&mut spec.until) {
            let watched = watch(&group);
            if !watched.is_empty() {
                wait.until.push((watched, predicate));
            }
        }
        spec.clear();
        wait.register_all();
        wait
    }

    fn register_all(&mut self) {
        // (lock order key, address, variable): registered in the lock order.
        let mut addrs: SmallVec<[(usize, usize, &ErasedRef); 8]> = SmallVec::new();
        let vars = self
            .any
            .iter()
            .chain(self.all.iter().flatten())
            .chain(self.until.iter().flat_map(|(g, _)| g.iter()));
        for w in vars {
            addrs.push((w.var.order_key(), w.var.addr(), &w.var));
        }
        addrs.sort_unstable_by_key(|a| a.0);
        addrs.dedup_by_key(|a| a.0);
        let waiter = match &self.task {
            None => Waiter::Thread(crate::sync::current()),
            Some(task) => Waiter::Task(task.waker.clone()),
        };
        let mut registered = SmallVec::new();
        for (_, addr, var) in addrs {
            shard(addr).lock().push(Entry {
                addr,
                waiter: waiter.clone(),
                ticket: self.ticket,
            });
            // SeqCst: see the module docs; after the table insert, so a writer that sees the
            // count finds the entry.
            var.header().waiters.fetch_add(1, Ordering::SeqCst);
            registered.push(var.clone());
        }
        // The registrations above come before the lock-word loads of `block` in the `SeqCst`
        // order (what loom needs spelled out, see `sync.rs`).
        crate::sync::seq_cst_point();
        self.registered = registered;
    }

    /// Stop waiting after `left` at most (the call's own limit, `atomically_timeout`), or at
    /// the `retry_for` timeout if that comes first.
    pub(crate) fn limit(&mut self, left: Duration) {
        self.timeout = Some(self.timeout.map_or(left, |t| t.min(left)));
    }

    /// Whether nothing could ever end this wait: no variable to watch and no timeout.
    pub(crate) fn is_endless(&self) -> bool {
        self.registered.is_empty() && self.timeout.is_none()
    }

    /// Park until a condition holds or the timeout passes; returns the time spent.
    pub(crate) fn block(mut self) -> Duration {
        let start = Instant::now();
        let deadline = self.timeout.map(|t| start + t);
        let mut poll = POLL_START;
        loop {
            let (satisfied, locked) = self.check();
            if satisfied {
                break;
            }
            // A locked, unchanged variable may be committed by a writer that missed our
            // registration: look again soon instead of waiting for a wake-up.
            let nap = if locked {
                let nap = poll;
                poll = (poll * 2).min(POLL_MAX);
                Some(nap)
            } else {
                poll = POLL_START;
                None
            };
            let now = Instant::now();
            let until_deadline = match deadline {
                Some(d) if now >= d => break,
                Some(d) => Some(d - now),
                None => None,
            };
            match (nap, until_deadline) {
                (Some(a), Some(b)) => crate::sync::park_timeout(a.min(b)),
                (Some(t), None) | (None, Some(t)) => crate::sync::park_timeout(t),
                (None, None) => crate::sync::park(),
            }
        }
        start.elapsed()
    }

    /// A task's turn of [`block`](Wait::block): `Ready(time spent)` once a condition holds or
    /// the timeout passed, else `Pending`, with the task's current waker in the slot its table
    /// entries share and, if a time can end the wait (a timeout, or the nap after finding a
    /// variable locked), an entry in the shared timer (`timer.rs`).
    ///
    /// # Panics
    ///
    /// If the wait was registered by a thread (`WaiterKind::Thread`).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Duration> {
        let task = self.task.as_mut().expect("Wait::poll on a thread's wait");
        // The waker in the slot before the look, as in the module docs: a commit after the look
        // wakes this waker, one before it is seen by the look.
        task.waker.set(cx.waker());
        let started = *task.started.get_or_insert_with(Instant::now);
        let (satisfied, locked) = self.check();
        if satisfied {
            return Poll::Ready(started.elapsed());
        }
        let deadline = self.timeout.map(|t| started + t);
        let task = self.task.as_mut().expect("checked above");
        if deadline.is_none() && !locked {
            // Only a commit can end this wait: no clock read, no timer.
            task.nap = POLL_START;
            task.yields = 0;
            if let Some(old) = task.timer.take() {
                crate::timer::cancel(old);
            }
            return Poll::Pending;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Poll::Ready(now - started);
        }
        // A locked, unchanged variable may be committed by a writer that missed our
        // registration: look again soon. The first few times on the executor's next turn (a
        // commit holds its locks for a moment, and a trip through the timer thread costs more
        // than that); then with `block`'s naps, through the timer, so that a lock held long (an
        // `on_commit` hook that blocks) does not keep the executor spinning.
        let nap = if locked && task.yields < LOCKED_YIELDS {
            task.yields += 1;
            cx.waker().wake_by_ref();
            None
        } else if locked {
            let nap = task.nap;
            task.nap = (nap * 2).min(POLL_MAX);
            Some(now + nap)
        } else {
            task.nap = POLL_START;
            task.yields = 0;
            None
        };
        let wake_at = match (nap, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if task.timer.as_ref().map(TimerKey::at) != wake_at {
            if let Some(old) = task.timer.take() {
                crate::timer::cancel(old);
            }
            task.timer = wake_at.map(|at| crate::timer::schedule(at, &task.waker));
        }
        Poll::Pending
    }

    /// Whether a condition holds, and whether some unchanged variable was locked.
    fn check(&mut self) -> (bool, bool) {
        let mut locked = false;
        let mut look = |w: &Watched| {
            let seen = w.look();
            locked |= seen == Seen::Locked;
            seen == Seen::Changed
        };
        if self.any.iter().any(&mut look) {
            return (true, false);
        }
        // `all`: every variable of a group changed. Look at each, for the lock flag.
        for group in &self.all {
            let changed = group.iter().filter(|w| look(w)).count();
            if changed == group.len() {
                return (true, false);
            }
        }
        for (group, predicate) in &mut self.until {
            let mut changed = false;
            for w in group.iter() {
                changed |= look(w);
            }
            if changed {
                let headers: SmallVec<[NonNull<Header>; 4]> =
                    group.iter().map(|w| w.var.ptr()).collect();
                let (holds, seen) = (self.evaluate)(predicate, &headers);
                if holds {
                    return (true, false);
                }
                // Not yet: wait for a change from what the predicate saw, the stamps of its own
                // snapshot. Not from the stamps current now: a commit between the predicate's
                // snapshot and now (one that may make it hold) would count as seen, and the
                // waiter would park past it (PITFALLS 13).
                for (w, stamp) in group.iter_mut().zip(seen) {
                    w.stamp = stamp;
                }
            }
        }
        (false, locked)
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        for var in &self.registered {
            let addr = var.addr();
            shard(addr)
                .lock()
                .retain(|e| !(e.addr == addr && e.ticket == self.ticket));
            // Relaxed: the count only gates whether writers look in the table; a stale non-zero
            // costs a writer one shard lookup.
            var.header().waiters.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(task) = &mut self.task {
            if let Some(timer) = task.timer.take() {
                crate::timer::cancel(timer);
            }
            // Last: a writer that found an entry before it went may still hold the slot; once
            // this returns, nothing wakes the task on this wait's behalf (module docs).
            task.waker.clear();
        }
    }
}
