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
//!    with `on_commit` hooks: also locks the variables it only read, validates, runs the hooks
//!    (they may veto), then takes `wv`. Holding the read locks is what makes the validation
//!    still true after arbitrary hook code, and taking the stamp only after the hooks keeps
//!    hooks out of the window that other writers wait on (`clock.rs`);
//! 4. publishes each new version as its variable's head, trims old versions (`reclaim.rs`);
//! 5. advances `visible` to `wv` in stamp order;
//! 6. unlocks (storing `wv` in each written lock word) and wakes retry waiters (`parking.rs`).
//!
//! A validation failure after step 3 took a stamp still advances `visible` (publishing nothing),
//! so later stamps are never held up.
//!
//! No user code runs while locks are held except the `on_commit` hooks, each under
//! `catch_unwind`; hooks left over after a veto are handed back and dropped after the unlock.

use crate::clock::CLOCK;
use crate::contention;
use crate::hooks::Veto;
use crate::lock::{LockWord, VarLock};
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
        debug_assert!(self.read_locks.is_empty());
        self.lock_merged()?;
        let wv = CLOCK.reserve();
        self.check_waiters();
        if wv != self.rv + 1 && !self.reads_valid() {
            self.unlock_unchanged();
            CLOCK.publish_in_order(wv);
            return Err(CommitError::Conflict);
        }
        self.publish(wv);
        Ok(())
    }

    fn commit_with_hooks(&mut self) -> Result<(), CommitError> {
        // The variables only read, in address order, locked in one merged order with the
        // writes so that two committers never wait on each other in a cycle.
        self.read_locks.clear();
        for r in &self.reads {
            if self.writes.find_sorted(r.header).is_none() {
                self.read_locks.push((r.header, LockWord::unlocked(0)));
            }
        }
        self.read_locks
            // SAFETY: logged headers are live while the attempt is pinned.
            .sort_unstable_by_key(|l| unsafe { Header::order_key(l.0) });
        self.read_locks.dedup_by_key(|l| l.0);
        self.lock_merged()?;
        if !self.reads_valid() {
            self.unlock_unchanged();
            return Err(CommitError::Conflict);
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

    /// Lock the write set and `read_locks` (empty without `on_commit` hooks) together, in one
    /// address order, recording each prior word.
    fn lock_merged(&mut self) -> Result<(), CommitError> {
        let (owner, patient) = (self.owner, self.priority);
        let (mut w, mut r) = (0, 0);
        while w < self.writes.len() || r < self.read_locks.len() {
            let take_write = r == self.read_locks.len()
                || (w < self.writes.len()
                    // SAFETY: logged headers are live while the attempt is pinned.
                    && unsafe {
                        Header::order_key(self.writes.entries()[w].header)
                            < Header::order_key(self.read_locks[r].0)
                    });
            let header = if take_write {
                self.writes.entries()[w].header
            } else {
                self.read_locks[r].0
            };
            // SAFETY: logged headers are live while the attempt is pinned.
            let Some(before) = lock_one(unsafe { &header.as_ref().lock }, owner, patient) else {
                self.unlock_writes(w);
                self.unlock_reads(r);
                return Err(CommitError::Conflict);
            };
            if take_write {
                self.writes.entries_mut()[w].before = before;
                w += 1;
            } else {
                self.read_locks[r].1 = before;
                r += 1;
            }
        }
        Ok(())
    }

    /// Whether every read still names the newest version, given our own locks.
    fn reads_valid(&self) -> bool {
        let mine = LockWord::locked_by(self.owner);
        self.reads.iter().all(|r| {
            let expected = LockWord::unlocked(r.stamp);
            // SAFETY: logged headers are live while the attempt is pinned.
            let word = unsafe { r.header.as_ref() }.lock.load();
            if word == expected {
                return true;
            }
            if word != mine {
                return false;
            }
            // Locked by us: compare with the word it had when we locked it.
            let before = match self.writes.find_sorted(r.header) {
                Some(i) => self.writes.entries()[i].before,
                None => {
                    // SAFETY: logged headers are live while the attempt is pinned.
                    let key = |h| unsafe { Header::order_key(h) };
                    match self
                        .read_locks
                        .binary_search_by_key(&key(r.header), |l| key(l.0))
                    {
                        Ok(i) => self.read_locks[i].1,
                        Err(_) => return false,
                    }
                }
            };
            before == expected
        })
    }

    /// Release the first `n` write locks without changing their variables.
    fn unlock_writes(&self, n: usize) {
        for e in &self.writes.entries()[..n] {
            e.header().lock.unlock_unchanged(e.before);
        }
    }

    /// Release the first `n` read locks.
    fn unlock_reads(&mut self, n: usize) {
        for &(header, before) in &self.read_locks[..n] {
            // SAFETY: logged headers are live while the attempt is pinned.
            unsafe { header.as_ref() }.lock.unlock_unchanged(before);
        }
        self.read_locks.clear();
    }

    /// Release every lock without changing any variable.
    fn unlock_unchanged(&mut self) {
        self.unlock_writes(self.writes.len());
        self.unlock_reads(self.read_locks.len());
    }

    /// Steps 4–6: publish under stamp `wv`, make it visible, unlock and wake waiters.
    #[inline]
    #[cfg_attr(loom, allow(clippy::modulo_one))] // `HORIZON_EVERY` is 1 under loom
    fn publish(&mut self, wv: u64) {
        let guard = self.pinned();
        // From the first publish to the last unlock no user code runs (no clone, no drop, no
        // hook, no epoch collection), so nothing can unwind while published nodes are still in
        // the write log or locks are held.
        for e in self.writes.entries() {
            // SAFETY: we hold the lock, the node is a pending `Version` of the header's type
            // owned by the log, and we are pinned. Ownership moves to the TVar.
            unsafe { (e.header().ops.publish)(e.header, e.node, wv, guard) };
        }
        CLOCK.publish_in_order(wv);
        for e in self.writes.entries() {
            e.header().lock.unlock_published(wv);
            if e.wake {
                parking::wake(e.header());
            }
        }
        self.writes.clear_published();
        if !self.read_locks.is_empty() {
            self.unlock_reads(self.read_locks.len());
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

/// Lock one variable for `owner`, spinning briefly while another committer holds it; returns the
/// word it had, or `None` to give up with a conflict.
///
/// A `patient` caller holds the priority token and waits as long as it takes: the holder is a
/// committer that passed the gate before the token was taken, it never waits at the gate while
/// it holds locks, and the patient caller has no stamp yet that anyone could wait for. Giving up
/// instead would let one descheduled straggler cost the starving transaction a time slice of
/// attempts.
#[inline]
fn lock_one(lock: &VarLock, owner: u64, patient: bool) -> Option<LockWord> {
    let mut spins = 0;
    loop {
        let word = lock.load();
        if !word.is_locked() {
            if lock.try_lock_from_unlocked(word, owner) {
                return Some(word);
            }
            continue;
        }
        if spins < LOCK_SPINS {
            spins += 1;
            spin_hint();
        } else if patient {
            crate::sync::yield_now();
        } else {
            return None;
        }
    }
}
