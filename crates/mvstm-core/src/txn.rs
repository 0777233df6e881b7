//! `Txn`: what a transaction body sees — reads, writes, `or_else`, `nested`, retry variants,
//! hooks.
//!
//! Reads go to the attempt's snapshot `rv` (a value of the clock, see `clock.rs`): the newest
//! version with `stamp <= rv` (a version whose commit is still undecided is resolved on the spot,
//! without waiting), so every attempt sees one consistent state (opacity). When
//! the newest version is newer than the snapshot, the attempt first tries to *extend* its
//! snapshot: if nothing it read has changed since, it moves `rv` forward and reads the newest
//! version, which saves the abort that a stale read would cause at commit. Extension costs a
//! pass over the read set, so a transaction that has written nothing and read much keeps its
//! old snapshot instead: a read-only transaction never aborts.
//!
//! Writes are buffered in the write log as private versions (read-your-writes) and published at
//! commit (`commit.rs`).
//!
//! `or_else` and `nested` both open a *scope*: they mark the write log and the hook lists, and
//! roll the scope back by truncating both to the marks (`log.rs`, `hooks.rs`). The read log is
//! never rolled back: a later commit must still validate what a rolled-back scope read, since
//! the body's path after it depended on it, and a `retry` waits on it (GHC does the same).

use crate::clock::{self, CommitRecord, PENDING};
use crate::error::{AbortCause, AbortError, RetryKind, StmError, StmResult};
use crate::hooks::Hooks;
use crate::lock::LockWord;
use crate::log::{ReadEntry, WriteLog};
use crate::reclaim::{Retired, Slot};
use crate::sync::Ordering;
use crate::tvar::TVar;
use crate::version::{Header, Version};
use crossbeam_epoch::{self as epoch, Guard, LocalHandle};
use smallvec::SmallVec;
use std::ptr::NonNull;
use std::time::Duration;

/// A transaction without writes extends its snapshot only while it has read at most this many
/// variables; beyond that it keeps its snapshot (cheaper than revalidating a large read set).
const EXTEND_READS_MAX: usize = 64;

/// Spins a transaction that wrote waits for a pending head version to become final before it
/// reads the older version (and so dooms itself) (the priority holder waits on, yielding). Non-holders do not yield: with
/// more threads than cores, every yielding waiter takes a turn from the descheduled publisher
/// it waits for, and a stress run with 16 threads on 2 cores collapsed that way.
#[cfg(not(loom))]
const EXTEND_WAIT_SPINS: u32 = 256;
/// Under loom: one yield, so a model reaches both the wait and the give-up.
#[cfg(loom)]
const EXTEND_WAIT_SPINS: u32 = 1;

/// The handle a transaction body works through.
///
/// A `Txn` is passed to the body of [`atomically`](crate::atomically) and to helpers that
/// compose; it cannot be created, stored or sent elsewhere.
///
/// ```
/// use mvstm::{atomically, StmResult, TVar, Txn};
/// fn transfer(tx: &mut Txn, from: &TVar<i64>, to: &TVar<i64>, n: i64) -> StmResult<()> {
///     tx.modify(from, |b| b - n)?;
///     tx.modify(to, |b| b + n)
/// }
/// let (a, b) = (TVar::new(10), TVar::new(0));
/// atomically(|tx| transfer(tx, &a, &b, 4));
/// assert_eq!((a.load(), b.load()), (6, 4));
/// ```
pub struct Txn {
    // The fields up to `call` are the attempt's: its snapshot and pin, its logs, hooks and wait
    // request, and what it has learnt about itself. They are reset when the attempt ends
    // (`Txn::clear_attempt`); `call` when the call ends; `committer` lives as long as the
    // thread's cached object.
    /// The snapshot: reads see the newest versions with `stamp <= rv`.
    pub(crate) rv: u64,
    /// Pins the attempt: every pointer in the logs stays valid while it is pinned.
    pub(crate) pin: AttemptPin,
    /// A `Vec` for the reason given on `WriteLog::entries`.
    pub(crate) reads: Vec<ReadEntry>,
    pub(crate) writes: WriteLog,
    /// Variables only read that a commit with `on_commit` hooks holds shared (`commit.rs`).
    pub(crate) read_holds: Vec<NonNull<Header>>,
    pub(crate) hooks: Hooks,
    pub(crate) wait: WaitSpec,
    /// Whether `wait` may hold something (a retry variant ran this attempt).
    pub(crate) wait_used: bool,
    /// A read or write of this attempt reported a conflict, or the body aborted: it can never
    /// commit.
    pub(crate) doomed: bool,
    /// The error of the attempt's first `abort`. Kept here rather than in the signal, so a body
    /// that drops the signal still cannot commit (ScalaSTM's rollback is persistent too).
    pub(crate) aborted: Option<AbortError>,
    /// Whether the attempt was already doomed (by a conflict) when the abort in `aborted` came:
    /// a `nested` part that catches that abort leaves the attempt doomed then.
    pub(crate) doomed_at_abort: bool,
    /// The attempt read a version older than the newest one: it must not write.
    pub(crate) stale: bool,
    /// Set while a `retry_until` predicate runs: the predicate must only read.
    pub(crate) forbid_writes: bool,
    /// This thread holds the priority token (`contention.rs`): wait for held locks instead of
    /// giving up, since every other committer is held at the gate.
    pub(crate) priority: bool,
    /// This read-only attempt announced its snapshot and re-pins as it reads (`reclaim.rs`):
    /// its read log is no longer protected by its pin, so it must not write, extend or retry.
    pub(crate) announced: bool,
    /// What belongs to the whole call (`atomically` and its siblings), across its attempts.
    pub(crate) call: CallState,
    /// What belongs to the thread whose cached object this is, across calls: its identity as a
    /// committer and its share of reclamation.
    pub(crate) committer: Committer,
}

/// What belongs to one call and must survive between its attempts, and, for an asynchronous
/// call, between its polls, while the thread's cached `Txn` goes back to its cache (it is never
/// held across a `Pending`: the next poll may come on another thread).
#[derive(Clone, Copy, Default)]
pub(crate) struct CallState {
    /// Attempts begun so far ([`Txn::attempt`]).
    pub(crate) attempt: u32,
    /// Total time the call has spent blocked in retries.
    pub(crate) blocked: Duration,
    /// An earlier attempt of the call wrote: extend snapshots eagerly.
    pub(crate) update_hint: bool,
    /// An attempt of the call re-pinned and then had to write or retry: later attempts keep
    /// one pin.
    pub(crate) no_repin: bool,
}

/// The thread's side of a cached `Txn`, kept from call to call: who commits, and what its
/// commits left for reclamation.
pub(crate) struct Committer {
    /// Identifies this thread in lock words and in the starvation gate.
    pub(crate) owner: u64,
    /// Where this object's current commit stands, for readers that meet its pending versions
    /// (`clock.rs`).
    pub(crate) record: &'static CommitRecord,
    /// Holds the reclamation horizon at or below the snapshot of the attempt that runs
    /// (`reclaim.rs`).
    pub(crate) slot: &'static Slot,
    /// This thread's registration with the epoch collector: pinning through it skips
    /// crossbeam's own thread-local lookup.
    pub(crate) handle: LocalHandle,
    /// Versions this thread's commits unlinked, not yet deferred (`reclaim.rs`).
    pub(crate) retired: Retired,
    /// This thread committed `FLUSH_EVERY` times since its last flush: flush the epoch bag once
    /// the call's commit is over (`reclaim.rs`).
    pub(crate) flush_due: bool,
    /// Commits since this thread last flushed its epoch bag.
    pub(crate) commits_since_flush: u32,
}

impl Committer {
    fn new(owner: u64) -> Committer {
        Committer {
            owner,
            record: CommitRecord::acquire(),
            slot: Slot::acquire(),
            handle: epoch::default_collector().register(),
            retired: Retired::default(),
            flush_due: false,
            commits_since_flush: 0,
        }
    }

    /// After a commit: hand this thread's deferred frees to the collector if a commit made it
    /// due (`Committer::after_publish`).
    #[inline]
    pub(crate) fn flush_if_due(&mut self) {
        if self.flush_due {
            self.hand_over_frees();
        }
    }

    /// Defer this thread's retired versions and hand its epoch bag to the collector. Collecting
    /// may run other threads' deferred drops, which are user code: call it outside any attempt,
    /// with no lock held.
    #[cold]
    pub(crate) fn hand_over_frees(&mut self) {
        self.flush_due = false;
        self.commits_since_flush = 0;
        let guard = self.handle.pin();
        self.retired.defer(&guard);
        guard.flush();
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Every commit of this object is over (decided or abandoned, its versions final).
        CommitRecord::release(self.record);
        // No attempt runs: the slot is idle.
        Slot::release(self.slot);
        if self.retired.len() > 0 {
            self.hand_over_frees();
        }
    }
}

/// The epoch pin of an attempt.
///
/// What is loaded through [`AttemptPin::guard`] borrows the pin, the way crossbeam-epoch's
/// `Shared<'g, T>` borrows its `Guard`: no version reference can be held across a re-pin or an
/// unpin (both take `&mut self`), so none can outlive the protection it was loaded under. A
/// `Txn` method that needs a loaded version and its own other fields at once borrows
/// `self.pin` alone, which leaves the other fields free.
pub(crate) struct AttemptPin(Option<Guard>);

impl AttemptPin {
    /// The guard of the running attempt.
    #[inline]
    pub(crate) fn guard(&self) -> &Guard {
        self.0
            .as_ref()
            .expect("a Txn is only used while an attempt runs")
    }

    /// Pin through this thread's handle (the start of an attempt).
    #[inline]
    pub(crate) fn pin(&mut self, handle: &LocalHandle) {
        self.0 = Some(handle.pin());
    }

    /// Unpin (the end of an attempt).
    #[inline]
    pub(crate) fn unpin(&mut self) {
        self.0 = None;
    }

    /// Let the epoch move on (a long reader, `reclaim.rs`): every reference loaded before is
    /// dead by then, which the borrow on `&mut self` enforces.
    fn repin(&mut self) {
        self.0
            .as_mut()
            .expect("a Txn is only used while an attempt runs")
            .repin();
    }
}

impl Txn {
    /// Pin the attempt through this thread's handle.
    #[inline]
    pub(crate) fn pin_attempt(&mut self) {
        self.pin.pin(&self.committer.handle);
    }

    /// The end of an attempt: unpin, and stop holding the reclamation horizon back.
    #[inline]
    pub(crate) fn unpin_attempt(&mut self) {
        self.pin.unpin();
        self.committer.slot.leave();
    }

    pub(crate) fn new(owner: u64) -> Txn {
        Txn {
            rv: 0,
            pin: AttemptPin(None),
            reads: Vec::new(),
            writes: WriteLog::default(),
            read_holds: Vec::new(),
            hooks: Hooks::default(),
            wait: WaitSpec::default(),
            wait_used: false,
            doomed: false,
            aborted: None,
            doomed_at_abort: false,
            stale: false,
            forbid_writes: false,
            priority: false,
            announced: false,
            call: CallState::default(),
            committer: Committer::new(owner),
        }
    }

    /// Read a variable: its value in this transaction's snapshot, or its buffered write.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let v = TVar::new(1);
    /// let seen = atomically(|tx| {
    ///     tx.write(&v, 2)?;
    ///     tx.read(&v) // read-your-writes
    /// });
    /// assert_eq!(seen, 2);
    /// ```
    #[inline]
    pub fn read<T: Clone + Send + Sync + 'static>(&mut self, var: &TVar<T>) -> StmResult<T> {
        self.read_with(var, T::clone)
    }

    /// Read a variable without cloning it: `f` gets a reference to its value in this
    /// transaction's snapshot (or to its buffered write) and returns what the body needs.
    ///
    /// The read counts like [`Txn::read`]: it is validated at commit and a `retry` waits on it.
    /// The reference lives only for the call of `f`.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let log = TVar::new(vec![1u64; 1_000]);
    /// // Sums in place: the vector is not cloned.
    /// let sum: u64 = atomically(|tx| tx.read_with(&log, |v| v.iter().sum()));
    /// assert_eq!(sum, 1_000);
    /// ```
    #[inline]
    pub fn read_with<T: Clone + Send + Sync + 'static, R>(
        &mut self,
        var: &TVar<T>,
        f: impl FnOnce(&T) -> R,
    ) -> StmResult<R> {
        // Fast path: nothing buffered, and the newest version is in the snapshot.
        if self.writes.is_empty() && !self.doomed {
            // Acquire: pairs with the Release head store of `publish` (node fields initialised).
            // SAFETY: pinned for the attempt; a head is never null.
            let head = unsafe {
                var.inner()
                    .head
                    .load(Ordering::Acquire, self.pin.guard())
                    .deref()
            };
            // Acquire: pairs with the Release store of a final stamp. A pending stamp has the
            // top bit set, so it fails the test and goes the general way.
            let stamp = head.stamp.load(Ordering::Acquire);
            if stamp <= self.rv {
                // `f` runs before logging: logging may re-pin (a long reader). The version
                // would survive the re-pin (it is the newest under the snapshot the reader
                // announces first, `reclaim.rs`), but nothing here should rely on that.
                let value = f(&head.value);
                self.log_read(ReadEntry {
                    header: var.header(),
                    stamp,
                });
                return Ok(value);
            }
        }
        self.read_general(var, f)
    }

    /// Log a read; every `REPIN_READS` reads, let a long read-only attempt re-pin.
    #[inline]
    fn log_read(&mut self, entry: ReadEntry) {
        self.reads.push(entry);
        if self.reads.len() % crate::reclaim::REPIN_READS == 0 {
            self.repin_long_reader();
        }
    }

    /// A read-only attempt that has read `REPIN_READS` more variables: announce its snapshot
    /// (once) and re-pin, so it does not hold back the reclamation of every other thread's
    /// garbage for as long as it runs (`reclaim.rs`, "Long readers").
    #[cold]
    fn repin_long_reader(&mut self) {
        if !self.writes.is_empty() || self.call.update_hint || self.call.no_repin || self.priority {
            return;
        }
        if !self.announced {
            // Our slot holds the horizon at or below `rv` until we leave it, after announcing.
            crate::reclaim::announce(self.rv);
            self.announced = true;
            // The announcement protects the snapshot from here on; the slot would hold the
            // horizon back for as long as the reader runs.
            self.committer.slot.leave();
        }
        self.pin.repin();
    }

    /// The attempt re-pinned, so its read log may name freed variables: it cannot write,
    /// extend or wait. Give it up; the re-run keeps its pin.
    #[cold]
    pub(crate) fn give_up_repinned(&mut self) -> StmError {
        self.call.no_repin = true;
        self.call.update_hint = true;
        self.doomed = true;
        StmError::conflict()
    }

    /// Every case of `read_with`: buffered writes, doomed attempts, versions newer than the
    /// snapshot.
    fn read_general<T: Clone + Send + Sync + 'static, R>(
        &mut self,
        var: &TVar<T>,
        f: impl FnOnce(&T) -> R,
    ) -> StmResult<R> {
        if self.doomed {
            return Err(StmError::conflict());
        }
        let header = var.header();
        if !self.writes.is_empty() {
            if let Some(i) = self.writes.find(header) {
                // SAFETY: entries for this header hold a `Version<T>` made by `write::<T>`.
                let node = unsafe { self.writes.node(i).cast::<Version<T>>().as_ref() };
                return Ok(f(&node.value));
            }
        }
        let guard = self.pin.guard();
        // SAFETY: pinned for the attempt; a head is never null.
        // Acquire: pairs with the Release head store of `publish` (node fields initialised).
        let head = unsafe { var.inner().head.load(Ordering::Acquire, guard).deref() };
        // Acquire: as in `read_with`.
        let stamp = head.stamp.load(Ordering::Acquire);
        let (version, stamp) = if stamp <= self.rv {
            (head, stamp)
        } else {
            self.read_slow(var, stamp)?;
            // Borrow the pin alone: `stale` is set while the version is held.
            let guard = self.pin.guard();
            // SAFETY: pinned for the attempt; `rv` is at least the attempt's slot (or announced).
            let (version, stamp) = unsafe { var.version_at(self.rv, guard) };
            // Acquire: as in `read_with`.
            // SAFETY: as above; the head is never null.
            let head = unsafe { var.inner().head.load(Ordering::Acquire, guard).deref() };
            if !std::ptr::eq(version, head) {
                self.stale = true;
            }
            (version, stamp)
        };
        // `f` runs before logging, as in `read_with`.
        let value = f(&version.value);
        self.log_read(ReadEntry { header, stamp });
        Ok(value)
    }

    /// The head is newer than the snapshot, or pending: extend the snapshot if the attempt may,
    /// or fail the attempt if it wrote already; the caller then reads the newest version under
    /// the snapshot.
    #[cold]
    fn read_slow<T: Clone + Send + Sync + 'static>(
        &mut self,
        var: &TVar<T>,
        head_stamp: u64,
    ) -> StmResult<()> {
        // An announced attempt has read more than `EXTEND_READS_MAX` and written nothing.
        let may_extend = !self.writes.is_empty()
            || self.call.update_hint
            || self.reads.len() <= EXTEND_READS_MAX;
        debug_assert!(
            !(may_extend && self.announced),
            "a re-pinned attempt extends"
        );
        if head_stamp & PENDING != 0 {
            self.await_final_head(var);
        }
        let extended = may_extend && self.extend();
        if !extended && !self.writes.is_empty() {
            // Something we read changed and we already wrote: this attempt cannot commit.
            self.doomed = true;
            return Err(StmError::conflict());
        }
        Ok(())
    }

    /// The head of `var` is pending: its committer is between linking it and deciding its
    /// stamp, a window without user code. A transaction that wrote (or whose call already
    /// wrote, `update_hint`) waits a little for it to become final, because reading the older
    /// version instead would doom it; the priority holder waits as long as it takes (it holds no
    /// stamp and no lock, so nobody waits for it). Others never wait: `version_at` resolves the
    /// pending version at once (`clock.rs`), so read-only transactions never block.
    ///
    /// An attempt that has not written yet but whose call already did will write too: reading
    /// the older version would only doom it at its first write, and its re-runs would fail the
    /// same way for as long as the committer of that version is descheduled (tens of thousands
    /// of re-runs were measured), so it waits like a writer.
    fn await_final_head<T>(&self, var: &TVar<T>) {
        if self.writes.is_empty() && !self.call.update_hint {
            return;
        }
        let mut waited = 0u32;
        loop {
            // SAFETY: pinned for the attempt; a head is never null.
            let head = unsafe {
                var.inner()
                    .head
                    .load(Ordering::Acquire, self.pin.guard())
                    .deref()
            };
            if head.stamp.load(Ordering::Acquire) & PENDING == 0 {
                return;
            }
            if waited < EXTEND_WAIT_SPINS {
                crate::sync::spin_hint();
            } else if self.priority {
                crate::sync::yield_now();
            } else {
                return;
            }
            waited = waited.saturating_add(1);
        }
    }

    /// Move the snapshot forward to the clock's current value if nothing read so far has
    /// changed.
    ///
    /// The priority holder waits for committers still holding locks on what it read: they
    /// passed the gate before it took the token and may be descheduled. Waiting here is safe
    /// because the waiter holds no stamp and no lock, so no committer waits for it. A read-only
    /// transaction never holds the token (it never conflicts), so read-only transactions never
    /// block.
    fn extend(&mut self) -> bool {
        let patient = self.priority;
        let now = clock::snapshot();
        if now <= self.rv {
            return false;
        }
        // `now` was loaded before these checks: a commit stamped `<= now` locked its write set
        // before taking its stamp, so it shows here as locked or as a newer stamp.
        let unchanged = self.reads.iter().all(|r| {
            // SAFETY: logged headers are live while the attempt is pinned.
            let lock = unsafe { &r.header.as_ref().lock };
            let mut word = lock.load();
            while patient && word.is_locked() {
                crate::sync::yield_now();
                word = lock.load();
            }
            word == LockWord::unlocked(r.stamp)
        });
        if unchanged {
            self.rv = now;
        }
        unchanged
    }

    /// Buffer a write; it becomes visible when the transaction commits.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let v = TVar::new("a".to_string());
    /// atomically(|tx| tx.write(&v, "b".to_string()));
    /// assert_eq!(v.load(), "b");
    /// ```
    #[inline]
    #[track_caller]
    pub fn write<T: Clone + Send + Sync + 'static>(
        &mut self,
        var: &TVar<T>,
        value: T,
    ) -> StmResult<()> {
        if self.announced {
            return Err(self.give_up_repinned());
        }
        if self.doomed || self.stale {
            // A stale read was fine for a read-only attempt; one that writes cannot commit.
            // The next attempt is an update: let it extend its snapshot instead of going stale.
            self.doomed = true;
            self.call.update_hint = true;
            return Err(StmError::conflict());
        }
        assert!(
            !self.forbid_writes,
            "a retry_until predicate must only read TVars, not write them"
        );
        let header = var.header();
        let mut shadows = false;
        if let Some(i) = self.writes.find(header) {
            if i >= self.writes.branch_base {
                // SAFETY: entries for this header hold a `Version<T>`, private to the log.
                let node = unsafe { self.writes.node(i).cast::<Version<T>>().as_mut() };
                node.value = value;
                return Ok(());
            }
            // The entry belongs to a scope outside this `or_else` branch or `nested` part:
            // shadow it.
            shadows = true;
        }
        // The write log owns the node from here.
        let node = Version::new_unlinked(value);
        self.writes.push(header, node.cast(), shadows);
        Ok(())
    }

    /// Apply `f` to the variable's value.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let v = TVar::new(1);
    /// atomically(|tx| tx.modify(&v, |x| x * 10));
    /// assert_eq!(v.load(), 10);
    /// ```
    pub fn modify<T: Clone + Send + Sync + 'static>(
        &mut self,
        var: &TVar<T>,
        f: impl FnOnce(T) -> T,
    ) -> StmResult<()> {
        let value = self.read(var)?;
        self.write(var, f(value))
    }

    /// Write `value` and return the value it replaces.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let v = TVar::new(1);
    /// assert_eq!(atomically(|tx| tx.replace(&v, 7)), 1);
    /// assert_eq!(v.load(), 7);
    /// ```
    pub fn replace<T: Clone + Send + Sync + 'static>(
        &mut self,
        var: &TVar<T>,
        value: T,
    ) -> StmResult<T> {
        let old = self.read(var)?;
        self.write(var, value)?;
        Ok(old)
    }

    /// Run `first`; if it retries, undo its writes and hooks and run `second` instead.
    ///
    /// If both retry, the transaction waits on everything either branch read. A conflict or an
    /// abort in `first` propagates (it does not fall through to `second`).
    ///
    /// ```
    /// use mvstm::{atomically, retry, StmResult, TVar, Txn};
    /// fn take(tx: &mut Txn, acc: &TVar<i64>, n: i64) -> StmResult<()> {
    ///     let b = tx.read(acc)?;
    ///     if b < n { return retry(); }
    ///     tx.write(acc, b - n)
    /// }
    /// let (a, b) = (TVar::new(5), TVar::new(50));
    /// atomically(|tx| tx.or_else(|tx| take(tx, &a, 10), |tx| take(tx, &b, 10)));
    /// assert_eq!((a.load(), b.load()), (5, 40));
    /// ```
    pub fn or_else<T>(
        &mut self,
        first: impl FnOnce(&mut Txn) -> StmResult<T>,
        second: impl FnOnce(&mut Txn) -> StmResult<T>,
    ) -> StmResult<T> {
        let outer_base = self.writes.branch_base;
        let write_mark = self.writes.len();
        let hook_mark = self.hooks.mark();
        self.writes.branch_base = write_mark;
        let result = first(self);
        self.writes.branch_base = outer_base;
        match result {
            Err(StmError {
                kind: crate::error::ErrorKind::Retry(kind),
            }) => {
                // Reads stay: the choice of `second` depends on them, and a final wait must
                // cover them (the union of every branch's reads).
                if kind == RetryKind::Reads {
                    self.wait.on_reads = true;
                    self.wait_used = true;
                }
                self.hooks.rollback(hook_mark);
                if let Some(panic) = self.writes.truncate(write_mark) {
                    // Every node of the branch is freed; the attempt is abandoned as a panic.
                    std::panic::resume_unwind(panic);
                }
                second(self)
            }
            other => other,
        }
    }

    /// Run `body` as a part of this transaction that can fail on its own: closed nesting, GHC's
    /// `catchSTM`, ScalaSTM's nested `atomic`.
    ///
    /// If `body` aborts with an error of type `E` ([`Txn::abort`]), the part is rolled back:
    /// its writes are discarded (TVars it created and wrote vanish with them), its `on_commit`
    /// and `after_commit` hooks are dropped, and its `on_abort` hooks will run with
    /// [`AbortCause::Abort`]. The enclosing body then receives `Ok(Err(e))` and goes on; it may
    /// commit. Otherwise the part's writes and hooks join the enclosing body's and `body`'s
    /// value comes back as `Ok(Ok(value))`.
    ///
    /// - The abort is final for the part: once `body` called `tx.abort(e)`, the part is rolled
    ///   back even if `body` drops the signal and returns `Ok`.
    /// - An abort of another type passes through unchanged, to an enclosing `nested` of that
    ///   type or to [`try_atomically`](crate::try_atomically).
    /// - A conflict restarts the whole transaction, and [`retry`](crate::retry) inside the part
    ///   waits for the whole transaction (or falls through to the alternative of an enclosing
    ///   [`Txn::or_else`]). What the part read stays in the transaction's read set even when the
    ///   part is rolled back: a commit validates it and a `retry` waits on it, since the
    ///   enclosing body's path depended on it.
    /// - A panic in `body` rolls the part back (its `on_abort` hooks will run with
    ///   [`AbortCause::Panic`]) and keeps unwinding.
    /// - Only aborts raised while the part runs are caught: a `try_on_commit` hook the part
    ///   registered vetoes the whole transaction at commit.
    ///
    /// The `on_abort` hooks of a rolled-back part run when the attempt ends, not inside the
    /// body: after the commit (before the `after_commit` hooks), or with the attempt's own
    /// `on_abort` hooks if it is abandoned. Like every `on_abort` hook, they run outside the
    /// transaction and may start transactions.
    ///
    /// `nested` composes with itself (parts inside parts, with the same or different error
    /// types) and with `or_else` at any depth.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// #[derive(Debug, PartialEq)]
    /// struct Refused;
    /// let a = TVar::new(0u32);
    /// let outcome: Result<u32, Refused> = atomically(|tx| {
    ///     tx.write(&a, 1)?;
    ///     tx.nested(|tx| {
    ///         tx.write(&a, 2)?;
    ///         tx.abort(Refused)
    ///     })
    /// });
    /// assert_eq!(outcome, Err(Refused));
    /// assert_eq!(a.load(), 1); // the outer write committed, the nested one was rolled back
    ///
    /// // The enclosing body decides what a failed part means.
    /// let reserved = atomically(|tx| {
    ///     match tx.nested::<_, Refused>(|tx| {
    ///         let n = tx.read(&a)?;
    ///         tx.write(&a, n + 10)?;
    ///         if n + 10 > 5 { tx.abort(Refused) } else { Ok(n + 10) }
    ///     })? {
    ///         Ok(n) => Ok(n),
    ///         Err(Refused) => Ok(0),
    ///     }
    /// });
    /// assert_eq!((reserved, a.load()), (0, 1));
    /// ```
    pub fn nested<T, E: 'static>(
        &mut self,
        body: impl FnOnce(&mut Txn) -> StmResult<T>,
    ) -> StmResult<Result<T, E>> {
        let outer_base = self.writes.branch_base;
        let write_mark = self.writes.len();
        let hook_mark = self.hooks.mark();
        // An abort the attempt made before the part is not the part's to catch.
        let aborted_before = self.aborted.is_some();
        self.writes.branch_base = write_mark;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(self)));
        self.writes.branch_base = outer_base;
        let result = match result {
            Ok(result) => result,
            Err(panic) => {
                // The part is rolled back before the panic goes on, so a body that catches it
                // goes on without the part. Its own abort, if any, goes with it. Unwinding
                // already, a panic of a discarded value's destructor is dropped.
                if !aborted_before && self.aborted.take().is_some() {
                    self.doomed = self.doomed_at_abort;
                }
                drop(self.roll_back_part(write_mark, hook_mark, AbortCause::Panic));
                std::panic::resume_unwind(panic);
            }
        };
        if aborted_before || self.aborted.is_none() {
            return result.map(Ok);
        }
        let error = self.aborted.take().expect("checked");
        match error.downcast::<E>() {
            Ok(error) => {
                self.doomed = self.doomed_at_abort;
                if let Some(panic) = self.roll_back_part(write_mark, hook_mark, AbortCause::Abort) {
                    // Every node of the part is freed; the attempt is abandoned as a panic.
                    std::panic::resume_unwind(panic);
                }
                if self.doomed {
                    // A conflict came first: the whole transaction re-runs.
                    return Err(StmError::conflict());
                }
                Ok(Err(error))
            }
            Err(other) => {
                // Not ours: final for whatever encloses this part, whatever `body` returned.
                self.aborted = Some(other);
                Err(StmError::abort())
            }
        }
    }

    /// Discard the writes a `nested` part made since `write_mark`, drop its commit hooks and
    /// settle its `on_abort` hooks with `cause`; hands back the first panic of a discarded
    /// value's destructor, as [`WriteLog::truncate`].
    #[cold]
    #[must_use = "a panic from a value's destructor must be resumed"]
    fn roll_back_part(
        &mut self,
        write_mark: usize,
        hook_mark: crate::hooks::HookMark,
        cause: AbortCause,
    ) -> Option<crate::log::Panic> {
        self.hooks.settle(hook_mark, cause);
        self.writes.truncate(write_mark)
    }

    /// Abort the transaction with `error`: writes are discarded, `on_abort` hooks run with
    /// [`AbortCause::Abort`], and [`try_atomically`](crate::try_atomically) returns `Err(error)`.
    ///
    /// The abort is final: once called, the attempt cannot commit, even if the body drops the
    /// returned signal and returns `Ok` (the call still ends with `Err(error)`), and later reads
    /// and writes of the attempt fail at once. A second abort in the same attempt keeps the
    /// first error.
    ///
    /// Inside [`Txn::nested`] whose error type is the type of `error`, the abort is final for
    /// the nested part only: the part is rolled back and the enclosing body receives
    /// `Err(error)` and goes on. An abort of another type passes through `nested` unchanged.
    ///
    /// Inside plain [`atomically`](crate::atomically) an abort that no `nested` catches panics,
    /// since there is no way to return the error.
    ///
    /// ```
    /// use mvstm::{try_atomically, TVar};
    /// let v = TVar::new(3);
    /// let r: Result<(), &str> = try_atomically(|tx| {
    ///     tx.write(&v, 0)?;
    ///     tx.abort("no")
    /// });
    /// assert_eq!((r, v.load()), (Err("no"), 3));
    /// ```
    #[must_use = "an abort is final for the attempt: return it (`return tx.abort(e)`)"]
    pub fn abort<T, E: 'static>(&mut self, error: E) -> StmResult<T> {
        if self.aborted.is_none() {
            self.aborted = Some(AbortError::new(error));
            self.doomed_at_abort = self.doomed;
        }
        self.doomed = true;
        Err(StmError::abort())
    }

    /// Run `hook` if this attempt is abandoned (conflict, retry, abort or panic), before the
    /// re-run, the block or the return. Hooks run LIFO, outside the transaction.
    ///
    /// ```
    /// use mvstm::{atomically, AbortCause, TVar};
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// let (v, retried) = (TVar::new(false), Arc::new(AtomicBool::new(false)));
    /// let setter = v.clone();
    /// let flag = retried.clone();
    /// atomically(|tx| {
    ///     let flag = flag.clone();
    ///     let setter = setter.clone();
    ///     tx.on_abort(move |cause| {
    ///         assert_eq!(cause, AbortCause::Retry);
    ///         flag.store(true, Ordering::SeqCst);
    ///         std::thread::spawn(move || mvstm::atomically(|tx| tx.write(&setter, true)));
    ///     });
    ///     if !tx.read(&v)? { return mvstm::retry(); }
    ///     Ok(())
    /// });
    /// assert!(retried.load(Ordering::SeqCst));
    /// ```
    pub fn on_abort(&mut self, hook: impl FnOnce(AbortCause) + 'static) {
        self.hooks.push_on_abort(Box::new(hook));
    }

    /// Run `hook` once the commit is certain: write set locked, read set validated and held
    /// shared, new values not yet visible. Hooks run FIFO; a panic vetoes the commit and resumes.
    ///
    /// The hook must be short and must not wait for another transaction: writers of what this
    /// transaction read or wrote wait for it (readers, and committers that only read the same
    /// variables, do not).
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let v = TVar::new(0);
    /// atomically(|tx| {
    ///     tx.write(&v, 1)?;
    ///     tx.on_commit(|| println!("committing"));
    ///     Ok(())
    /// });
    /// ```
    pub fn on_commit(&mut self, hook: impl FnOnce() + 'static) {
        self.hooks.push_on_commit(Box::new(move || {
            hook();
            Ok(())
        }));
    }

    /// Like [`Txn::on_commit`], but the hook may veto: `Err(e)` aborts the whole transaction
    /// and [`try_atomically`](crate::try_atomically) returns `Err(e)`.
    ///
    /// ```
    /// use mvstm::{try_atomically, TVar};
    /// let v = TVar::new(1);
    /// let r: Result<(), String> = try_atomically(|tx| {
    ///     tx.write(&v, 0)?;
    ///     tx.try_on_commit(|| Err::<(), String>("refused".into()));
    ///     Ok(())
    /// });
    /// assert_eq!((r, v.load()), (Err("refused".to_string()), 1));
    /// ```
    pub fn try_on_commit<E: 'static>(&mut self, hook: impl FnOnce() -> Result<(), E> + 'static) {
        self.hooks
            .push_on_commit(Box::new(move || hook().map_err(AbortError::new)));
    }

    /// Run `hook` after the commit: values visible, locks released, waiters woken. Hooks run
    /// FIFO, all of them even if one panics; they may start new transactions.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let v = TVar::new(0);
    /// let seen = v.clone();
    /// atomically(|tx| {
    ///     tx.write(&v, 5)?;
    ///     let seen = seen.clone();
    ///     tx.after_commit(move || assert_eq!(seen.load(), 5));
    ///     Ok(())
    /// });
    /// ```
    pub fn after_commit(&mut self, hook: impl FnOnce() + 'static) {
        self.hooks.push_after_commit(Box::new(hook));
    }

    /// Block until any of `vars` changes from what this attempt sees, then re-run.
    ///
    /// `vars` lists TVars of any types; an entry may also be a group of TVars of one type (a
    /// `Vec`, an array or a slice of TVars or of references to them), which stands for each of
    /// its members: `tx.retry_on(&[&flag, &workers])`. See [`AnyTVar`].
    ///
    /// # Panics
    ///
    /// If `vars` names no TVar (an empty list, or only empty groups).
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let (flag, other) = (TVar::new(true), TVar::new(0u8));
    /// atomically(|tx| {
    ///     if !tx.read(&flag)? {
    ///         return tx.retry_on(&[&flag, &other]);
    ///     }
    ///     Ok(())
    /// });
    /// // TVars of one type in a Vec (or an array, or a slice): one entry for all of them.
    /// let slots: Vec<TVar<Option<u32>>> = (1..=4).map(|i| TVar::new(Some(i))).collect();
    /// let first = atomically(|tx| {
    ///     for slot in &slots {
    ///         if let Some(job) = tx.read(slot)? {
    ///             return Ok(job);
    ///         }
    ///     }
    ///     tx.retry_on(&[&slots])
    /// });
    /// assert_eq!(first, 1);
    /// ```
    #[track_caller]
    pub fn retry_on<T>(&mut self, vars: &[&dyn AnyTVar]) -> StmResult<T> {
        let entries = self.seen(vars);
        assert!(
            !entries.is_empty(),
            "retry_on needs at least one TVar to wait on"
        );
        self.wait.any.extend(entries);
        self.wait_used = true;
        Err(StmError::retry(RetryKind::Explicit))
    }

    /// Block until every one of `vars` has changed from what this attempt sees, then re-run.
    ///
    /// A group entry (a `Vec`, array or slice of TVars of one type) stands for each of its
    /// members, as in [`retry_on`](Txn::retry_on): every member must change.
    ///
    /// # Panics
    ///
    /// If `vars` names no TVar.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let (a, b) = (TVar::new(1), TVar::new(1));
    /// atomically(|tx| {
    ///     if tx.read(&a)? + tx.read(&b)? < 2 {
    ///         return tx.retry_all(&[&a, &b]);
    ///     }
    ///     Ok(())
    /// });
    /// // Wait for every worker of a pool to report (here they all did already).
    /// let reports: [TVar<bool>; 3] = std::array::from_fn(|_| TVar::new(true));
    /// atomically(|tx| {
    ///     for r in &reports {
    ///         if !tx.read(r)? {
    ///             return tx.retry_all(&[&reports]);
    ///         }
    ///     }
    ///     Ok(())
    /// });
    /// ```
    #[track_caller]
    pub fn retry_all<T>(&mut self, vars: &[&dyn AnyTVar]) -> StmResult<T> {
        let entries = self.seen(vars);
        assert!(
            !entries.is_empty(),
            "retry_all needs at least one TVar to wait on"
        );
        self.wait.all.push(entries);
        self.wait_used = true;
        Err(StmError::retry(RetryKind::Explicit))
    }

    /// Block until any of `vars` changed and `predicate` holds (evaluated in a fresh read-only
    /// transaction), then re-run. The predicate is `Send`: an `atomically_async` waiter carries
    /// it between polls.
    ///
    /// `vars` may hold groups of TVars of one type, as in [`retry_on`](Txn::retry_on).
    ///
    /// # Panics
    ///
    /// If `vars` names no TVar; the predicate panics if it writes.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// let level = TVar::new(10);
    /// let watched = level.clone();
    /// atomically(|tx| {
    ///     if tx.read(&level)? < 5 {
    ///         let w = watched.clone();
    ///         return tx.retry_until(&[&level], move |tx| Ok(tx.read(&w)? >= 5));
    ///     }
    ///     Ok(())
    /// });
    /// ```
    #[track_caller]
    pub fn retry_until<T>(
        &mut self,
        vars: &[&dyn AnyTVar],
        predicate: impl Fn(&mut Txn) -> StmResult<bool> + Send + 'static,
    ) -> StmResult<T> {
        let entries = self.seen(vars);
        assert!(
            !entries.is_empty(),
            "retry_until needs at least one TVar to wait on"
        );
        self.wait.until.push((entries, Box::new(predicate)));
        self.wait_used = true;
        Err(StmError::retry(RetryKind::Explicit))
    }

    /// Like `retry`, but once this `atomically` call has spent `timeout` blocked in total,
    /// return `Ok(())` and let the body go on.
    ///
    /// ScalaSTM's `retryFor`, except that the duration is a total over the whole call (every
    /// block of every attempt counts), not a budget per `retry_for` call site.
    ///
    /// ```
    /// use mvstm::{atomically, TVar};
    /// use std::time::Duration;
    /// let ready = TVar::new(false);
    /// let timed_out = atomically(|tx| {
    ///     if tx.read(&ready)? {
    ///         return Ok(false);
    ///     }
    ///     tx.retry_for(Duration::from_millis(10))?;
    ///     Ok(true) // waited 10 ms in total and `ready` never changed
    /// });
    /// assert!(timed_out);
    /// ```
    pub fn retry_for(&mut self, timeout: Duration) -> StmResult<()> {
        if self.call.blocked >= timeout {
            return Ok(());
        }
        let left = timeout - self.call.blocked;
        self.wait.timeout = Some(self.wait.timeout.map_or(left, |t| t.min(left)));
        self.wait_used = true;
        Err(StmError::retry(RetryKind::Reads))
    }

    /// Which attempt of this `atomically` call is running: 1 for the first, 2 after one re-run.
    ///
    /// ```
    /// assert_eq!(mvstm::atomically(|tx| Ok(tx.attempt())), 1);
    /// ```
    pub fn attempt(&self) -> u32 {
        self.call.attempt
    }

    /// The stamps of `vars` in this attempt's view (its reads, else its snapshot).
    fn seen(&self, vars: &[&dyn AnyTVar]) -> SmallVec<[ReadEntry; 4]> {
        let mut entries = SmallVec::new();
        for var in vars {
            var.each_header(&mut |header| {
                let header = header.cast::<Header>();
                // SAFETY: the borrowed handle (or group) keeps the variable live.
                let stamp = unsafe { self.stamp_seen(header) };
                entries.push(ReadEntry { header, stamp });
            });
        }
        entries
    }

    /// The stamp of the version of `header` that this attempt sees: the one it read, else the
    /// one in its snapshot.
    ///
    /// # Safety
    ///
    /// `header` is live for the call.
    pub(crate) unsafe fn stamp_seen(&self, header: NonNull<Header>) -> u64 {
        match self.reads.iter().rev().find(|r| r.header == header) {
            Some(r) => r.stamp,
            // SAFETY: live per the contract; pinned for the attempt, and `rv` is at least the
            // attempt's slot (or announced).
            None => unsafe { (header.as_ref().ops.stamp_at)(header, self.rv, self.pin.guard()) },
        }
    }
}

/// Any `TVar<T>`, whatever its `T`, or a group of TVars of one type: what [`Txn::retry_on`] and
/// its relatives take, as a list `&[&dyn AnyTVar]`.
///
/// Implemented for `TVar<T>`, for references to what implements it, and for groups: `Vec<A>`,
/// `[A; N]` and `[A]` (through a reference, `&[TVar<T>]`) where `A` is a TVar or a reference to
/// one. A group in the list stands for each of its members, so TVars of one type kept in a
/// collection need no list of their own, and mix with single TVars of other types.
///
/// ```
/// use mvstm::{AnyTVar, TVar};
/// let (a, b) = (TVar::new(1u8), TVar::new("x"));
/// let vars: &[&dyn AnyTVar] = &[&a, &b];
/// assert_eq!(vars.len(), 2);
/// let pool: Vec<TVar<u64>> = (0..8).map(TVar::new).collect();
/// let slice: &[TVar<u64>] = &pool[2..];
/// let from_iter: Vec<&TVar<u64>> = pool.iter().step_by(2).collect();
/// let mixed: &[&dyn AnyTVar] = &[&a, &pool, &slice, &from_iter];
/// assert_eq!(mixed.len(), 4); // 1 + 8 + 6 + 4 TVars to wait on
/// ```
pub trait AnyTVar: sealed::Erased {}

mod sealed {
    use std::ptr::NonNull;

    pub trait Erased {
        /// Call `f` with the header of each variable, type-erased (a `Header` is
        /// crate-private).
        fn each_header(&self, f: &mut dyn FnMut(NonNull<()>));
    }
}

impl<T: Clone + Send + Sync + 'static> sealed::Erased for TVar<T> {
    fn each_header(&self, f: &mut dyn FnMut(NonNull<()>)) {
        f(self.header().cast())
    }
}

impl<T: Clone + Send + Sync + 'static> AnyTVar for TVar<T> {}

impl<A: AnyTVar + ?Sized> sealed::Erased for &A {
    fn each_header(&self, f: &mut dyn FnMut(NonNull<()>)) {
        (**self).each_header(f)
    }
}

impl<A: AnyTVar + ?Sized> AnyTVar for &A {}

impl<A: AnyTVar> sealed::Erased for [A] {
    fn each_header(&self, f: &mut dyn FnMut(NonNull<()>)) {
        for var in self {
            var.each_header(f);
        }
    }
}

impl<A: AnyTVar> AnyTVar for [A] {}

impl<A: AnyTVar, const N: usize> sealed::Erased for [A; N] {
    fn each_header(&self, f: &mut dyn FnMut(NonNull<()>)) {
        self.as_slice().each_header(f)
    }
}

impl<A: AnyTVar, const N: usize> AnyTVar for [A; N] {}

impl<A: AnyTVar> sealed::Erased for Vec<A> {
    fn each_header(&self, f: &mut dyn FnMut(NonNull<()>)) {
        self.as_slice().each_header(f)
    }
}

impl<A: AnyTVar> AnyTVar for Vec<A> {}

/// A `retry_until` predicate. `Send`, since an asynchronous waiter carries it from one poll to
/// the next, perhaps to another thread.
pub(crate) type Predicate = Box<dyn Fn(&mut Txn) -> StmResult<bool> + Send>;

/// What an attempt that retried waits for; filled in by the retry variants.
#[derive(Default)]
pub(crate) struct WaitSpec {
    /// Wait on everything the attempt read (`retry`, `retry_for`).
    pub(crate) on_reads: bool,
    /// `retry_on`: wake when any of these changed.
    pub(crate) any: SmallVec<[ReadEntry; 4]>,
    /// `retry_all`: wake when all of a group changed.
    pub(crate) all: Vec<SmallVec<[ReadEntry; 4]>>,
    /// `retry_until`: wake when any of a group changed and the predicate holds.
    pub(crate) until: Vec<(SmallVec<[ReadEntry; 4]>, Predicate)>,
    /// `retry_for`: stop waiting after this long.
    pub(crate) timeout: Option<Duration>,
}

impl WaitSpec {
    pub(crate) fn clear(&mut self) {
        self.on_reads = false;
        self.any.clear();
        self.all.clear();
        self.until.clear();
        self.timeout = None;
    }
}
