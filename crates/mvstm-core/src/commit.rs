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

use crate::clock::CLOCK;
use crate::contention;
use crate::hooks::Veto;
use crate::lock::LockWord;
use crate::parking;
use crate::reclaim;
use crate::sync::spin_hint;
use crate::txn::Txn;

/// Spins on a lock held by another committer before giving up with a conflict.
const LOCK_SPINS: u32 = 128;

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
        if self.hooks.on_commit.is_empty() {
            self.commit_plain()
        } else {
            self.commit_with_hooks()
        }
    }

    fn commit_plain(&mut self) -> Result<(), CommitError> {
        self.locked.clear();
        self.locked.extend(
            self.writes
                .entries()
                .iter()
                .map(|e| (e.header, LockWord::unlocked(0), true)),
        );
        self.lock_all()?;
        let wv = CLOCK.reserve();
        if wv != self.rv + 1 && !self.reads_valid() {
            self.unlock_unchanged();
            CLOCK.publish_in_order(wv);
            return Err(CommitError::Conflict);
        }
        self.publish(wv);
        Ok(())
    }

    fn commit_with_hooks(&mut self) -> Result<(), CommitError> {
        self.locked.clear();
        self.locked.extend(
            self.writes
                .entries()
                .iter()
                .map(|e| (e.header, LockWord::unlocked(0), true)),
        );
        for r in &self.reads {
            if self.writes.find_sorted(r.header).is_none() {
                self.locked.push((r.header, LockWord::unlocked(0), false));
            }
        }
        self.locked.sort_unstable_by_key(|l| l.0.as_ptr() as usize);
        self.locked.dedup_by_key(|l| l.0);
        self.lock_all()?;
        if !self.reads_valid() {
            self.unlock_unchanged();
            return Err(CommitError::Conflict);
        }
        if let Err(veto) = self.hooks.run_on_commit() {
            self.unlock_unchanged();
            return Err(CommitError::Veto(veto));
        }
        let wv = CLOCK.reserve();
        self.publish(wv);
        Ok(())
    }

    /// Lock every entry of `self.locked` in order, recording the word each had.
    fn lock_all(&mut self) -> Result<(), CommitError> {
        for i in 0..self.locked.len() {
            // SAFETY: logged headers are live while the attempt is pinned.
            let lock = unsafe { &self.locked[i].0.as_ref().lock };
            let mut spins = 0;
            loop {
                let word = lock.load();
                if !word.is_locked() {
                    if lock.try_lock_from_unlocked(word, self.owner) {
                        self.locked[i].1 = word;
                        break;
                    }
                    continue;
                }
                if spins == LOCK_SPINS {
                    self.locked.truncate(i);
                    self.unlock_unchanged();
                    return Err(CommitError::Conflict);
                }
                spins += 1;
                spin_hint();
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
            let key = r.header.as_ptr() as usize;
            self.locked
                .binary_search_by_key(&key, |l| l.0.as_ptr() as usize)
                .is_ok_and(|i| self.locked[i].1 == expected)
        })
    }

    /// Release every lock in `self.locked` without changing its variable.
    fn unlock_unchanged(&mut self) {
        for &(header, before, _) in &self.locked {
            // SAFETY: logged headers are live while the attempt is pinned.
            unsafe { header.as_ref() }.lock.unlock_unchanged(before);
        }
        self.locked.clear();
    }

    /// Steps 4–6: publish under stamp `wv`, make it visible, unlock and wake waiters.
    fn publish(&mut self, wv: u64) {
        let guard = self
            .guard
            .as_ref()
            .expect("an attempt is pinned while it commits");
        for e in self.writes.entries() {
            // SAFETY: we hold the lock, the node is a pending `Version` of the header's type
            // owned by the log, and we are pinned. Ownership moves to the TVar.
            unsafe { (e.header().ops.publish)(e.header, e.node, wv, guard) };
        }
        self.writes.clear_published();
        CLOCK.publish_in_order(wv);
        for &(header, before, written) in &self.locked {
            // SAFETY: logged headers are live while the attempt is pinned.
            let h = unsafe { header.as_ref() };
            if written {
                h.lock.unlock_published(wv);
                parking::wake_if_waited(h);
            } else {
                h.lock.unlock_unchanged(before);
            }
        }
        self.locked.clear();
        self.commits = self.commits.wrapping_add(1);
        if self.commits % reclaim::HORIZON_EVERY == 0 {
            reclaim::advance_horizon(guard);
        }
    }
}
