//! The commit protocol of update transactions.
//!
//! A transaction with an empty write set commits at its snapshot: it is serialized at `rv`, takes
//! no lock and writes no shared memory. An update transaction, with its write set sorted by
//! address (the global lock order, so lockers never deadlock):
//!
//! 1. waits at the starvation gate if another thread holds priority (`contention.rs`);
//! 2. locks its write set, spinning briefly on a held lock and aborting with a conflict after
//!    that (it never waits for another transaction: only `retry` blocks);
//! 3. without `on_commit` hooks: takes a stamp `wv`, then validates that every variable it read
//!    still has the version it read (skipped when `wv == rv + 1`: nothing committed since the
//!    snapshot). Stamp-then-validate is TL2's order: a writer that locks one of our reads after
//!    our validation takes a larger stamp, so it serializes after us;
//!    with `on_commit` hooks: also *holds shared* the variables it only read (a count in the
//!    header), validates, gives the priority token back, runs the hooks (they may veto), then
//!    takes `wv`. A hold keeps writers of that variable out (they find it after their lock CAS
//!    and wait or give up), so the validation stays true through arbitrary hook code; readers
//!    and other validators do not see it at all, so two committers that only read a variable
//!    (writers of different `TMap` keys, which both read the table) never conflict through it.
//!    Taking the stamp only after the hooks keeps hooks out of the window that other writers
//!    wait on (`clock.rs`);
//! 4. publishes each new version as its variable's head, trims old versions (`reclaim.rs`);
//! 5. advances `visible` to `wv` in stamp order;
//! 6. unlocks (storing `wv` in each written lock word), releases its shared holds and wakes
//!    retry waiters (`parking.rs`).
//!
//! A validation failure after step 3 took a stamp still advances `visible` (publishing nothing),
//! so later stamps are never held up.
//!
//! No user code runs while locks are held except the `on_commit` hooks, each under
//! `catch_unwind`; hooks left over after a veto are handed back and dropped after the unlock.

use crate::clock::{Stamp, CLOCK};
use crate::contention;
use crate::hooks::Veto;
use crate::lock::LockWord;
use crate::parking;
use crate::reclaim;
use crate::sync::spin_hint;
use crate::tvar::Header;
use crate::txn::Txn;

/// Spins on a lock held by another committer before giving up with a conflict.
#[cfg(not(loom))]
const LOCK_SPINS: u32 = 128;
/// Under loom: one yield, so a model reaches both the wait and the give-up.
#[cfg(loom)]
const LOCK_SPINS: u32 = 1;

pub(crate) enum CommitError {
    Conflict,
    Veto(Veto),
}

impl Txn {
    /// Commit the current attempt. On `Err`, nothing was published and no lock is held.
    #[inline]
    pub(crate) fn commit(&mut self) -> Result<(), CommitError> {
        if self.doomed {
            return Err(CommitError::Conflict);
        }
        if self.writes.is_empty() {
            // Read-only: serialized at the snapshot, which never changes under us.
            return self.hooks.run_on_commit().map_err(CommitError::Veto);
        }
        self.commit_update()
    }

    fn commit_update(&mut self) -> Result<(), CommitError> {
        contention::wait_at_gate(self.owner);
        self.writes.prepare_commit();
        if !self.hooks.has_on_commit() {
            self.commit_plain()
        } else {
            self.commit_with_hooks()
        }
    }

    #[inline]
    fn commit_plain(&mut self) -> Result<(), CommitError> {
        debug_assert!(self.read_holds.is_empty());
        self.lock_writes()?;
        let wv = CLOCK.reserve();
        self.check_waiters();
        if wv.get() != self.rv + 1 && !self.reads_valid(false) {
            self.unlock_unchanged();
            wv.make_visible();
            return Err(CommitError::Conflict);
        }
        self.publish(wv);
        Ok(())
    }

    fn commit_with_hooks(&mut self) -> Result<(), CommitError> {
        self.lock_writes()?;
        // The variables only read, held shared: a writer of one of them waits or gives up
        // until we release it (after our stamp), so the validation below stays true through
        // arbitrary hook code; other readers and validators still see the variable unchanged.
        self.read_holds.clear();
        for r in &self.reads {
            if self.writes.find_sorted(r.header).is_none() {
                self.read_holds.push(r.header);
            }
        }
        // Deduplicated through the lock order's key (the address; under loom, a creation number
        // that does not change from one execution of a model to the next).
        self.read_holds
            // SAFETY: logged headers are live while the attempt is pinned.
            .sort_unstable_by_key(|&h| unsafe { Header::order_key(h) });
        self.read_holds.dedup();
        for &header in &self.read_holds {
            // SAFETY: logged headers are live while the attempt is pinned.
            unsafe { header.as_ref() }.hold_shared();
        }
        // The holds come before the validation's lock-word loads in the `SeqCst` order (what
        // loom needs spelled out, see `sync.rs`); the writers' side is in `lock_one`.
        crate::sync::seq_cst_point();
        if !self.reads_valid(true) {
            self.unlock_unchanged();
            return Err(CommitError::Conflict);
        }
        // Hooks are user code that may block (a database call): never run them holding the
        // priority token, which holds every other committer at the gate. Our reads are held and
        // our writes locked, so the token has nothing left to protect.
        if self.priority {
            contention::give_back(self.owner);
            self.priority = false;
        }
        if let Err(veto) = self.hooks.run_on_commit() {
            self.unlock_unchanged();
            return Err(CommitError::Veto(veto));
        }
        let wv = CLOCK.reserve();
        self.check_waiters();
        self.publish(wv);
        Ok(())
    }

    /// Note which written variables have retry waiters. Runs after `reserve` (a `SeqCst` RMW
    /// after every lock CAS): a waiter that registers later finds the variable locked or
    /// already changed (`parking.rs`).
    #[inline]
    fn check_waiters(&mut self) {
        // The lock CASes and the stamp come before the waiter-count loads in the `SeqCst` order
        // (what loom needs spelled out, see `sync.rs`).
        crate::sync::seq_cst_point();
        for e in self.writes.entries_mut() {
            // SAFETY: logged headers are live while the attempt is pinned.
            e.wake = parking::has_waiters(unsafe { e.header.as_ref() });
        }
    }

    /// Lock the write set in address order, recording each prior word.
    fn lock_writes(&mut self) -> Result<(), CommitError> {
        let (owner, patient) = (self.owner, self.priority);
        for w in 0..self.writes.len() {
            let header = self.writes.entries()[w].header();
            let Some(before) = lock_one(header, owner, patient) else {
                self.unlock_writes(w);
                return Err(CommitError::Conflict);
            };
            self.writes.entries_mut()[w].before = before;
        }
        Ok(())
    }

    /// Whether every read still names the newest version, given our own locks.
    ///
    /// With `wait_locked` (our reads are held shared), a variable locked by another committer
    /// is looked at again for a while before it counts as changed: that committer finds our
    /// hold and gives up, unless it is publishing a change.
    fn reads_valid(&self, wait_locked: bool) -> bool {
        let mine = LockWord::locked_by(self.owner);
        self.reads.iter().all(|r| {
            let expected = LockWord::unlocked(r.stamp);
            // SAFETY: logged headers are live while the attempt is pinned.
            let lock = &unsafe { r.header.as_ref() }.lock;
            let mut word = lock.load();
            let mut spins = 0;
            while wait_locked && word.is_locked() && word != mine && spins < LOCK_SPINS {
                spins += 1;
                spin_hint();
                word = lock.load();
            }
            if word == expected {
                return true;
            }
            if word != mine {
                return false;
            }
            // Locked by us: compare with the word it had when we locked it.
            match self.writes.find_sorted(r.header) {
                Some(i) => self.writes.entries()[i].before == expected,
                None => false,
            }
        })
    }

    /// Release the first `n` write locks without changing their variables.
    fn unlock_writes(&self, n: usize) {
        for e in &self.writes.entries()[..n] {
            e.header().lock.unlock_unchanged(e.before);
        }
    }

    /// Release the shared holds on the variables only read.
    fn release_reads(&mut self) {
        for &header in &self.read_holds {
            // SAFETY: logged headers are live while the attempt is pinned.
            unsafe { header.as_ref() }.release_shared();
        }
        self.read_holds.clear();
    }

    /// Release every lock and hold without changing any variable.
    fn unlock_unchanged(&mut self) {
        self.unlock_writes(self.writes.len());
        self.release_reads();
    }

    /// Steps 4–6: publish under stamp `wv`, make it visible, unlock and wake waiters.
    #[inline]
    #[cfg_attr(loom, allow(clippy::modulo_one))] // `HORIZON_EVERY` is 1 under loom
    fn publish(&mut self, stamp: Stamp) {
        let wv = stamp.get();
        let guard = self.pinned();
        // From the first publish to the last unlock no user code runs (no clone, no drop, no
        // hook, no epoch collection), so nothing can unwind while published nodes are still in
        // the write log or locks are held.
        for e in self.writes.entries() {
            // SAFETY: we hold the lock, the node is a pending `Version` of the header's type
            // owned by the log, and we are pinned. Ownership moves to the TVar.
            unsafe { (e.header().ops.publish)(e.header, e.node, wv, guard) };
        }
        stamp.make_visible();
        for e in self.writes.entries() {
            e.header().lock.unlock_published(wv);
            if e.wake {
                parking::wake(e.header());
            }
        }
        self.writes.clear_published();
        if !self.read_holds.is_empty() {
            self.release_reads();
        }
        // One stamp in `HORIZON_EVERY`, whoever commits it, moves the horizon: a per-thread
        // count would never fire for threads that commit rarely. Only a defer here (it runs no
        // deferred function); the flush, which may run other threads' drops, happens after the
        // commit, outside the transaction (`Txn::finish_committed`).
        if wv % reclaim::HORIZON_EVERY == 0 {
            reclaim::defer_horizon_advance(guard);
            self.flush_due = true;
        }
        // A thread whose commits rarely draw a horizon stamp still hands its deferred frees to
        // the collector regularly.
        self.commits_since_flush += 1;
        if self.commits_since_flush >= reclaim::FLUSH_EVERY {
            self.flush_due = true;
        }
    }
}

/// Lock one variable for `owner`, spinning briefly while another committer holds it or a
/// committer with `on_commit` hooks holds it shared; returns the word it had, or `None` to give
/// up with a conflict.
///
/// A `patient` caller holds the priority token and waits as long as it takes: the holder is a
/// committer that passed the gate before the token was taken, it never waits at the gate while
/// it holds locks, and the patient caller has no stamp yet that anyone could wait for. Giving up
/// instead would let one descheduled straggler cost the starving transaction a time slice of
/// attempts.
#[inline]
fn lock_one(header: &Header, owner: u64, patient: bool) -> Option<LockWord> {
    let lock = &header.lock;
    let mut spins = 0;
    let mut wait = || {
        if spins < LOCK_SPINS {
            spins += 1;
            spin_hint();
            true
        } else if patient {
            crate::sync::yield_now();
            true
        } else {
            false
        }
    };
    loop {
        let word = lock.load();
        if word.is_locked() {
            if !wait() {
                return None;
            }
            continue;
        }
        if !lock.try_lock_from_unlocked(word, owner) {
            continue;
        }
        // The lock CAS comes before the holder-count load in the `SeqCst` order (loom needs it
        // spelled out, see `sync.rs`): a committer that holds the variable shared either shows
        // here, or finds it locked when it validates (`Header::hold_shared`).
        crate::sync::seq_cst_point();
        loop {
            if !header.held_shared() {
                return Some(word);
            }
            if !wait() {
                lock.unlock_unchanged(word);
                return None;
            }
        }
    }
}
