//! The read and write logs of an attempt, reused across attempts and transactions of a thread.
//!
//! Both logs hold raw pointers to TVar headers. They stay valid for the attempt because the
//! attempt is pinned and a TVar's free is deferred with crossbeam-epoch (see `tvar.rs`).
//!
//! The write log supports `or_else`: writes made inside a branch never overwrite an entry made
//! outside it. A write to a variable whose newest entry is older than the branch pushes a
//! *shadow* entry instead; rolling the branch back truncates the log. Lookups find the newest
//! entry, and commit keeps only the newest entry of each variable.

use crate::lock::LockWord;
use crate::version::Header;
use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

/// The payload of a panic caught to be resumed later.
pub(crate) type Panic = Box<dyn Any + Send>;

/// A variable the attempt read, and the stamp of the version it read.
#[derive(Clone, Copy)]
pub(crate) struct ReadEntry {
    pub(crate) header: NonNull<Header>,
    pub(crate) stamp: u64,
}

/// A buffered write: a private `Version<T>` (memory from `alloc.rs`) waiting to be published.
pub(crate) struct WriteEntry {
    pub(crate) header: NonNull<Header>,
    pub(crate) node: NonNull<()>,
    /// The lock word the commit found before it locked the variable.
    pub(crate) before: LockWord,
    /// Whether retry waiters were registered when the commit checked (after its stamp).
    pub(crate) wake: bool,
    /// The version the node covers once the commit linked it (`VarOps::link`).
    pub(crate) covered: usize,
}

impl WriteEntry {
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the attempt is pinned, and logged headers outlive the pin (module docs).
        unsafe { self.header.as_ref() }
    }
}

/// Write-log length above which lookups go through a hash index instead of a scan.
const INDEX_ABOVE: usize = 16;

#[derive(Default)]
pub(crate) struct WriteLog {
    /// A `Vec`, not a `SmallVec`: the log lives in the thread's reused `Txn`, so its capacity
    /// is already reused, and a `SmallVec` pays an inline-or-heap branch on every access.
    entries: Vec<WriteEntry>,
    /// Header address -> index of its newest entry; only maintained above `INDEX_ABOVE`.
    index: HashMap<usize, usize>,
    /// Entries below this index belong to scopes outside the innermost `or_else` branch.
    pub(crate) branch_base: usize,
    /// Whether some variable has more than one entry (a shadow made inside a branch).
    pub(crate) shadowed: bool,
}

impl WriteLog {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn entries(&self) -> &[WriteEntry] {
        &self.entries
    }

    pub(crate) fn entries_mut(&mut self) -> &mut [WriteEntry] {
        &mut self.entries
    }

    /// The newest entry for `header`.
    #[inline]
    pub(crate) fn find(&self, header: NonNull<Header>) -> Option<usize> {
        if self.entries.len() > INDEX_ABOVE {
            return self.index.get(&(header.as_ptr() as usize)).copied();
        }
        self.entries.iter().rposition(|e| e.header == header)
    }

    /// The pending node of entry `i`.
    #[inline]
    pub(crate) fn node(&self, i: usize) -> NonNull<()> {
        self.entries[i].node
    }

    #[inline]
    pub(crate) fn push(&mut self, header: NonNull<Header>, node: NonNull<()>, shadows: bool) {
        self.shadowed |= shadows;
        self.entries.push(WriteEntry {
            header,
            node,
            before: LockWord::unlocked(0),
            wake: false,
            covered: 0,
        });
        let len = self.entries.len();
        if len > INDEX_ABOVE {
            if len == INDEX_ABOVE + 1 {
                self.rebuild_index();
            } else {
                self.index.insert(header.as_ptr() as usize, len - 1);
            }
        }
    }

    fn rebuild_index(&mut self) {
        self.index.clear();
        for (i, e) in self.entries.iter().enumerate() {
            self.index.insert(e.header.as_ptr() as usize, i);
        }
    }

    /// Drop every entry from `len` on (an `or_else` branch that retried, or the whole log).
    ///
    /// Every pending value is dropped even if one's `Drop` panics; the first panic is handed
    /// back for the caller to resume once it has finished its own clean-up (a panic here must
    /// neither leak the other nodes nor skip the attempt's `on_abort` hooks).
    #[must_use = "a panic from a value's destructor must be resumed"]
    pub(crate) fn truncate(&mut self, len: usize) -> Option<Panic> {
        if len >= self.entries.len() {
            return None;
        }
        let mut first_panic = None;
        for e in self.entries.drain(len..) {
            // SAFETY: the node is pending and owned by the log; `drop_pending` frees its memory
            // even when the value's destructor unwinds (see `tvar.rs`).
            let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
                (e.header().ops.drop_pending)(e.node)
            }));
            if let Err(panic) = dropped {
                first_panic.get_or_insert(panic);
            }
        }
        if self.entries.len() > INDEX_ABOVE {
            self.rebuild_index();
        } else {
            self.index.clear();
        }
        first_panic
    }

    /// Keep only the newest entry of each variable, sorted by header address (the lock order).
    #[inline]
    pub(crate) fn prepare_commit(&mut self) {
        if self.shadowed {
            // Walk newest first, keep the first entry seen per variable, drop the rest.
            let mut seen = std::collections::HashSet::new();
            let mut kept = Vec::with_capacity(self.entries.len());
            while let Some(e) = self.entries.pop() {
                if seen.insert(e.header) {
                    kept.push(e);
                } else {
                    // SAFETY: pending node owned by the log, superseded by a newer entry.
                    unsafe { (e.header().ops.drop_pending)(e.node) };
                }
            }
            self.entries = kept;
            self.shadowed = false;
        }
        if self.entries.len() > 1 {
            self.entries
                // SAFETY: logged headers are live while the attempt is pinned.
                .sort_unstable_by_key(|e| unsafe { Header::order_key(e.header) });
        }
        if !self.index.is_empty() {
            self.index.clear();
        }
    }

    /// Position of `header` in a log sorted by `prepare_commit`.
    pub(crate) fn find_sorted(&self, header: NonNull<Header>) -> Option<usize> {
        // SAFETY: logged headers are live while the attempt is pinned (`header` is one too).
        let key = |h| unsafe { Header::order_key(h) };
        self.entries
            .binary_search_by_key(&key(header), |e| key(e.header))
            .ok()
    }

    /// Forget every entry after its node was published (ownership moved to the TVar).
    #[inline]
    pub(crate) fn clear_published(&mut self) {
        self.entries.clear();
        if !self.index.is_empty() {
            self.index.clear();
        }
        self.branch_base = 0;
        self.shadowed = false;
    }

    /// Drop every pending node (the attempt aborted); hands back the first panic of a value's
    /// destructor, as [`WriteLog::truncate`].
    #[must_use = "a panic from a value's destructor must be resumed"]
    pub(crate) fn clear_discarded(&mut self) -> Option<Panic> {
        self.branch_base = 0;
        self.shadowed = false;
        self.truncate(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tvar::TVar;

    fn node(log: &WriteLog, i: usize) -> usize {
        log.entries()[i].node.as_ptr() as usize
    }

    #[test]
    fn writes_in_a_branch_shadow_and_roll_back() {
        let (a, b) = (TVar::new(0u8), TVar::new(0u8));
        let mut log = WriteLog::default();
        let real = |v: u8| {
            let n = crate::alloc::alloc::<crate::version::Version<u8>>();
            // SAFETY: fresh memory for a `Version<u8>`.
            unsafe {
                n.write(crate::version::Version {
                    stamp: crate::sync::AtomicU64::new(0),
                    prev: crossbeam_epoch::Atomic::null(),
                    value: v,
                })
            };
            n.cast::<()>()
        };
        log.push(a.header(), real(1), false);
        log.branch_base = log.len();
        log.push(a.header(), real(2), true); // shadows the outer entry
        log.push(b.header(), real(3), false);
        assert_eq!(
            log.find(a.header()),
            Some(1),
            "lookups find the newest entry"
        );
        assert!(log.truncate(1).is_none()); // the branch retried
        assert_eq!(log.find(a.header()), Some(0));
        assert_eq!(log.find(b.header()), None);
        let outer = node(&log, 0);
        log.push(b.header(), real(4), false);
        log.push(a.header(), real(5), true);
        log.prepare_commit();
        assert_eq!(log.len(), 2, "one entry per variable at commit");
        assert!(log
            .entries()
            .iter()
            .all(|e| e.node.as_ptr() as usize != outer));
        assert!(log.clear_discarded().is_none());
    }

    #[test]
    fn lookups_switch_to_the_index_and_back() {
        let vars: Vec<TVar<u8>> = (0..40).map(TVar::new).collect();
        let mut log = WriteLog::default();
        for v in &vars {
            let n = crate::alloc::alloc::<crate::version::Version<u8>>();
            // SAFETY: fresh memory for a `Version<u8>`.
            unsafe {
                n.write(crate::version::Version {
                    stamp: crate::sync::AtomicU64::new(0),
                    prev: crossbeam_epoch::Atomic::null(),
                    value: 0,
                })
            };
            log.push(v.header(), n.cast(), false);
        }
        for (i, v) in vars.iter().enumerate() {
            assert_eq!(log.find(v.header()), Some(i));
        }
        assert!(log.truncate(10).is_none());
        assert_eq!(log.find(vars[5].header()), Some(5));
        assert_eq!(log.find(vars[20].header()), None);
        assert!(log.clear_discarded().is_none());
    }
}
