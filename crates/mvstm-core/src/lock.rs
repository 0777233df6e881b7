//! The versioned lock word of a TVar.
//!
//! | bits  | unlocked                          | locked                          |
//! |-------|-----------------------------------|---------------------------------|
//! | 63..1 | stamp of the newest version       | id of the owning transaction    |
//! | 0     | `0`                               | `1`                             |
//!
//! Only a committing transaction locks a TVar, from its lock phase to its unlock; readers never
//! look at the lock to read (they follow the version chain), only validation does. Unlocking
//! after a publish stores the new stamp, so "the word still equals `unlocked(s)`" means "no
//! commit touched this TVar since the version stamped `s`".

use crate::sync::{AtomicU64, Ordering};

const LOCKED: u64 = 1;

/// A snapshot of a lock word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct LockWord(u64);

impl LockWord {
    #[inline]
    pub(crate) fn unlocked(stamp: u64) -> Self {
        LockWord(stamp << 1)
    }

    #[inline]
    pub(crate) fn locked_by(owner: u64) -> Self {
        LockWord((owner << 1) | LOCKED)
    }

    #[inline]
    pub(crate) fn is_locked(self) -> bool {
        self.0 & LOCKED != 0
    }

    /// The stamp of an unlocked word.
    #[inline]
    pub(crate) fn stamp(self) -> u64 {
        debug_assert!(!self.is_locked());
        self.0 >> 1
    }
}

/// The lock word itself, with one method per transition.
pub(crate) struct VarLock(AtomicU64);

impl VarLock {
    /// Not `const`: loom's atomics are built at run time.
    pub(crate) fn new() -> Self {
        VarLock(AtomicU64::new(0))
    }

    /// The current word, for validation and for waiters.
    ///
    /// `SeqCst`: validation loads take part in the Dekker-shaped arguments of
    /// [`crate::clock::take_stamp`] and of retry registration (see `parking.rs`). On x86 a
    /// `SeqCst` load is a plain load.
    #[inline]
    pub(crate) fn load(&self) -> LockWord {
        LockWord(self.0.load(Ordering::SeqCst))
    }

    /// Lock a word seen unlocked as `seen` for `owner`; fails if it changed meanwhile.
    #[inline]
    pub(crate) fn try_lock_from_unlocked(&self, seen: LockWord, owner: u64) -> bool {
        debug_assert!(!seen.is_locked());
        // SeqCst: see `load`; Acquire alone would already order the head load after the lock.
        self.0
            .compare_exchange(
                seen.0,
                LockWord::locked_by(owner).0,
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Unlock a word we locked after publishing a version stamped `stamp`.
    ///
    /// Release: publishes the new head to validators and to the next locker (whose CAS
    /// continues this store's release sequence, which `parking.rs` relies on). No `SeqCst`
    /// is needed here: the writer checked for retry waiters right after taking its stamp,
    /// while it held this lock (see `parking.rs`).
    #[inline]
    pub(crate) fn unlock_published(&self, stamp: u64) {
        self.0.store(LockWord::unlocked(stamp).0, Ordering::Release);
    }

    /// Unlock a word we locked without changing the TVar: restore what it was.
    #[inline]
    pub(crate) fn unlock_unchanged(&self, before: LockWord) {
        self.0.store(before.0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_stamps_and_owners_apart() {
        let word = LockWord::unlocked(41);
        assert!(!word.is_locked());
        assert_eq!(word.stamp(), 41);
        let locked = LockWord::locked_by(41);
        assert!(locked.is_locked());
        assert_ne!(locked, word, "a lock by owner 41 is not stamp 41");
    }

    #[test]
    fn transitions() {
        let lock = VarLock::new();
        let seen = lock.load();
        assert_eq!(seen, LockWord::unlocked(0));
        assert!(lock.try_lock_from_unlocked(seen, 7));
        assert_eq!(lock.load(), LockWord::locked_by(7));
        assert!(
            !lock.try_lock_from_unlocked(seen, 8),
            "a locked word cannot be locked again"
        );
        lock.unlock_unchanged(seen);
        assert_eq!(lock.load(), seen);
        assert!(lock.try_lock_from_unlocked(seen, 7));
        lock.unlock_published(5);
        assert_eq!(lock.load(), LockWord::unlocked(5));
        assert!(
            !lock.try_lock_from_unlocked(seen, 7),
            "a stale word no longer locks"
        );
    }
}
