//! The commit protocol of update transactions.
//!
//! A transaction with an empty write set commits at its snapshot: it is serialized at `rv`, takes
//! no lock and writes no shared memory. An update transaction, with its write set sorted by
//! address (the global lock order, so lockers never deadlock):
//!
//! 1. waits at the starvation gate if another thread holds priority (`contention.rs`);
//! 2. locks its write set, spinning briefly on a held lock and aborting with a conflict after
//!    that (it never waits for another transaction: only `retry` blocks);
//! 3. with `on_commit` hooks: *holds shared* the variables it only read (a count in the header),
//!    validates, gives the priority token back and runs the hooks (they may veto). A hold keeps
//!    writers of that variable out (they find it after their lock CAS and wait or give up), so
//!    the validation stays true through arbitrary hook code and through the steps below;
//!    readers and other validators do not see it at all, so two committers that only read a
//!    variable (both read a shared configuration and write different variables) never conflict
//!    through it;
//! 4. links its new versions as their variables' heads, *pending* on its commit record, and
//!    takes a stamp `wv` from the clock (`clock.rs`);
//! 5. without hooks: validates that every variable it read still has the version it read
//!    (skipped when `wv == rv + 1`: nothing committed since the snapshot). Stamp-then-validate
//!    is TL2's order: a writer that locks one of our reads after our validation takes a larger
//!    stamp, so it serializes after us. A failed validation takes the versions out again;
//! 6. decides its record with `wv`, unless a reader that met a pending version raised the
//!    record's floor to `wv` or more: then it takes a new stamp and goes back to step 5;
//! 7. makes each version final (its stamp), trims old versions (`reclaim.rs`), unlocks (storing
//!    `wv` in each written lock word), reopens its record, releases its shared holds and wakes
//!    retry waiters (`parking.rs`).
//!
//! A single operation on one variable (`TVar::store` and its siblings, `view.rs`) takes steps
//! 1, 2, 4, 6 and 7 for a write set of one without reads (`Txn::commit_single`): it locks from
//! the very lock word it read the value under, which is its whole validation.
//!
//! No step waits for another committer: readers resolve pending versions themselves, and stamps
//! are not made visible in order (there is no such order to keep). A committer descheduled
//! anywhere in steps 2 to 7 holds up only the transactions that write what it locked (or read it
//! while they wrote, see `Txn::read_slow`).
//!
//! No user code runs while locks are held except the `on_commit` hooks, each under
//! `catch_unwind`, before anything is linked; hooks left over after a veto are handed back and
//! dropped after the unlock.

use crate::clock;
use crate::contention;
use crate::hooks::Veto;
use crate::lock::LockWord;
use crate::parking;
use crate::reclaim;
use crate::sync::spin_hint;
use crate::txn::{Committer, Txn};
use crate::version::Header;
use crossbeam_epoch::Guard;
use std::ptr::NonNull;

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
        contention::wait_at_gate(self.committer.owner);
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
        self.link_writes();
        let mut wv = clock::take_stamp();
        self.check_waiters();
        loop {
            if wv != self.rv + 1 && !self.reads_valid(false) {
                self.abandon_linked();
                return Err(CommitError::Conflict);
            }
            if self.committer.record.try_decide(wv) {
                break;
            }
            // A reader with a snapshot `>= wv` met one of our versions undecided and counts
            // us as newer: take a stamp above its snapshot and validate again.
            wv = clock::take_stamp();
        }
        self.publish(wv);
        Ok(())
    }

    fn commit_with_hooks(&mut self) -> Result<(), CommitError> {
        self.lock_writes()?;
        // The variables only read, held shared: a writer of one of them waits or gives up
        // until we release it (after our publish), so the validation below stays true through
        // arbitrary hook code and any number of stamps; other readers and validators still see
        // the variable unchanged.
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
            contention::give_back(self.committer.owner);
            self.priority = false;
        }
        if let Err(veto) = self.hooks.run_on_commit() {
            self.unlock_unchanged();
            return Err(CommitError::Veto(veto));
        }
        self.link_writes();
        let mut wv = clock::take_stamp();
        self.check_waiters();
        // Our reads are held and our writes locked: a new stamp needs no new validation.
        while !self.committer.record.try_decide(wv) {
            wv = clock::take_stamp();
        }
        self.publish(wv);
        Ok(())
    }

    /// Step 4: link every new version as its variable's head, pending on our record.
    #[inline]
    fn link_writes(&mut self) {
        let pending = self.committer.record.pending_stamp();
        for e in self.writes.entries_mut() {
            // SAFETY: we hold the lock, and the node is a private `Version` of the header's type
            // owned by the log. Ownership moves to the TVar.
            e.covered = unsafe { (e.header().ops.link)(e.header, e.node, pending) };
        }
    }

    /// Take the linked versions out again (a failed validation) and unlock, changing nothing.
    fn abandon_linked(&mut self) {
        for e in self.writes.entries() {
            // SAFETY: we hold the lock and linked the node as the head; it is retired, not
            // dropped, since readers may stand on it.
            unsafe {
                (e.header().ops.unlink)(e.header, e.node, e.covered, &mut self.committer.retired)
            };
        }
        self.unlock_writes(self.writes.len());
        self.committer.record.reopen();
        // The nodes belong to the collector now.
        self.writes.clear_published();
    }

    /// Note which written variables have retry waiters. Runs after the first stamp (a `SeqCst`
    /// RMW after every lock CAS): a waiter that registers later finds the variable locked or
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
        let (owner, patient) = (self.committer.owner, self.priority);
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
        let mine = LockWord::locked_by(self.committer.owner);
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

    /// Step 7: make the linked versions final with stamp `wv`, unlock and wake waiters.
    #[inline]
    fn publish(&mut self, wv: u64) {
        let guard = self.pin.guard();
        // From the first link to the last unlock no user code runs (no clone, no drop, no
        // hook, no epoch collection), so nothing can unwind while linked nodes are still in
        // the write log or locks are held.
        for e in self.writes.entries() {
            // SAFETY: we hold the lock and linked the node as the head; we are pinned.
            unsafe {
                (e.header().ops.finalize)(
                    e.header,
                    e.node,
                    e.covered,
                    wv,
                    guard,
                    &mut self.committer.retired,
                )
            };
            e.header().lock.unlock_published(wv);
        }
        // Every version is final: readers that meet the record from now on belong to our next
        // commit (`clock.rs`).
        self.committer.record.reopen();
        for e in self.writes.entries() {
            if e.wake {
                parking::wake(e.header());
            }
        }
        self.writes.clear_published();
        if !self.read_holds.is_empty() {
            self.release_reads();
        }
        self.committer.after_publish(wv, self.pin.guard());
    }

    /// Publish `node` as the new value of the one variable `header`, as a transaction of its
    /// own that read nothing else (`TVar::store` and its siblings, `view.rs`), provided its lock
    /// word is still `seen`. Returns `false`, with nothing changed and the node still the
    /// caller's, when it is not.
    ///
    /// These are the steps of `commit_plain` for a write set of one without a read set: the
    /// caller computed the value from the version whose stamp `seen` holds, and locking from
    /// `seen` is the whole validation (the variable cannot change until we unlock). The caller
    /// is pinned (`self.pin`) and holds a handle to the variable.
    pub(crate) fn commit_single(
        &mut self,
        header: NonNull<Header>,
        seen: LockWord,
        node: NonNull<()>,
    ) -> bool {
        contention::wait_at_gate(self.committer.owner);
        // SAFETY: the caller holds a handle to the variable.
        let var = unsafe { header.as_ref() };
        if !var.lock.try_lock_from_unlocked(seen, self.committer.owner) {
            return false;
        }
        let mut spins = 0;
        if !wait_out_holders(var, || {
            spins += 1;
            spin_hint();
            spins <= LOCK_SPINS
        }) {
            var.lock.unlock_unchanged(seen);
            return false;
        }
        // SAFETY: we hold the lock; the node is a private `Version` of the variable's type,
        // whose ownership moves to the TVar.
        let covered =
            unsafe { (var.ops.link)(header, node, self.committer.record.pending_stamp()) };
        let mut wv = clock::take_stamp();
        // As in `check_waiters`.
        crate::sync::seq_cst_point();
        let wake = parking::has_waiters(var);
        // Nothing to validate again with a new stamp: the one variable is ours.
        while !self.committer.record.try_decide(wv) {
            wv = clock::take_stamp();
        }
        let guard = self.pin.guard();
        // SAFETY: we hold the lock, linked the node as the head, and are pinned.
        unsafe {
            (var.ops.finalize)(
                header,
                node,
                covered,
                wv,
                guard,
                &mut self.committer.retired,
            )
        };
        var.lock.unlock_published(wv);
        self.committer.record.reopen();
        if wake {
            parking::wake(var);
        }
        self.committer.after_publish(wv, guard);
        true
    }
}

impl Committer {
    /// What every published commit leaves to do once it unlocked: move the reclamation horizon
    /// now and then, hand full batches of retired versions to the collector, and mark a flush
    /// due.
    #[inline]
    #[cfg_attr(loom, allow(clippy::modulo_one))] // `HORIZON_EVERY` is 1 under loom
    fn after_publish(&mut self, wv: u64, guard: &Guard) {
        // One stamp in `HORIZON_EVERY`, whoever commits it, moves the horizon: a per-thread
        // count would never fire for threads that commit rarely.
        if wv % reclaim::HORIZON_EVERY == 0 {
            reclaim::advance_horizon(wv);
        }
        if self.retired.len() >= reclaim::RETIRE_BATCH {
            self.retired.defer(guard);
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
        if !wait_out_holders(header, &mut wait) {
            lock.unlock_unchanged(word);
            return None;
        }
        return Some(word);
    }
}

/// After locking `header`: wait, as long as `wait` allows, until no committer with `on_commit`
/// hooks holds it shared; `false` if one still does.
#[inline]
fn wait_out_holders(header: &Header, mut wait: impl FnMut() -> bool) -> bool {
    // The lock CAS comes before the holder-count load in the `SeqCst` order (loom needs it
    // spelled out, see `sync.rs`): a committer that holds the variable shared either shows
    // here, or finds it locked when it validates (`Header::hold_shared`).
    crate::sync::seq_cst_point();
    while header.held_shared() {
        if !wait() {
            return false;
        }
    }
    true
}
