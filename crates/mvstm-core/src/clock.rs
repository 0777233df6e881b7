//! The version clock and the commit records that let committers publish without waiting for
//! each other.
//!
//! # Stamps
//!
//! One counter, `CLOCK`, on its own cache line. A snapshot is a load of it; an update commit
//! takes its stamp with one `fetch_add` once its write set is locked (TL2's order). There is no
//! second "visible" word and no committer ever waits for another one to publish: a committer
//! makes its new versions reachable *before* it takes its stamp, marked pending, and a reader
//! that meets a pending version decides on the spot, alone, whether it belongs to its snapshot.
//!
//! # Pending versions and commit records
//!
//! Each transaction object owns a [`CommitRecord`], a word on its own cache line that says where
//! the commit it is running stands:
//!
//! | record state  | meaning                                                              |
//! |---------------|----------------------------------------------------------------------|
//! | `Open`        | versions may be linked, no stamp decided                             |
//! | `Floor(f)`    | as `Open`, and a reader with snapshot `f` decided the commit is newer |
//! | `Stamped(w)`  | the commit is decided with stamp `w`                                 |
//!
//! A committer with its write set locked links each new version as its variable's head with the
//! stamp field *pending* (the record's address with the top bit set), takes a stamp `w` from the
//! clock, validates its reads, and then moves its record from `Open` or `Floor(f < w)` to
//! `Stamped(w)` with a compare-and-swap. Afterwards it writes `w` into each version's stamp
//! field (the version is *final*), unlocks, and resets the record to `Open` for its next commit.
//!
//! A reader with snapshot `rv` that finds a pending version reads the record:
//!
//! * `Stamped(w)`: the version has stamp `w`; it is in the snapshot iff `w <= rv`.
//! * `Floor(f)` with `f >= rv`: the commit will be stamped above `f`, so above `rv`: skip it.
//! * `Open` or `Floor(f < rv)`: the reader raises the record to `Floor(rv)` with a
//!   compare-and-swap and skips the version. The committer's own compare-and-swap then fails if
//!   its stamp is `<= rv`, and it takes a new stamp, which is above `rv` (the reader loaded `rv`
//!   before its compare-and-swap, which the committer's failed one read), and validates again.
//!
//! So a reader never waits for a committer, and a committer never waits for an unrelated one: a
//! committer that is descheduled halfway holds up only the transactions that write what it
//! locked. Why a snapshot `rv` sees every commit stamped `<= rv`: a committer links its versions
//! (Release) before its `fetch_add`, every later modification of the clock is a read-modify-write
//! and so continues that release sequence, and the snapshot is an Acquire load of the clock. So a
//! reader whose `rv` is at least `w` finds the versions of `w`'s commit at their heads (or
//! something newer above them), pending or final.
//!
//! A record is reused by the next commit of the same transaction object; a reader that loaded a
//! version's pending stamp long ago may find the record of a later commit. The committer writes
//! the final stamps of its versions before it resets the record, so a reader checks the version
//! again after each look at the record: if the version is final by then, the final stamp is what
//! counts; if not, the record state it read is the version's own commit's. A `Floor` that lands
//! on a later commit by that confusion only makes that commit take a larger stamp, which is always
//! allowed. Records are never freed (a reader may look at one whenever it likes); a dropped
//! transaction object returns its record to a pool.

use crate::sync::{AtomicU64, LeakPool, Ordering};
use crossbeam_utils::CachePadded;

crate::sync::global! {
    /// The newest stamp handed out; a snapshot is a load of it.
    static CLOCK: CachePadded<AtomicU64> = CachePadded::new(AtomicU64::new(0));
}

/// The top bit of a version's stamp field: the rest is the address of the commit record of the
/// pending commit that linked it.
pub(crate) const PENDING: u64 = 1 << 63;

/// The final stamp of a version whose commit was abandoned after it was linked: newer than every
/// snapshot, so every reader walks past it.
pub(crate) const NEVER: u64 = PENDING - 1;

/// A consistent snapshot: every commit stamped `<=` the result is reachable (pending or final)
/// from the heads of the variables it wrote, for the caller's later Acquire loads.
#[inline]
pub(crate) fn snapshot() -> u64 {
    // Acquire: pairs with the Release `fetch_add` of every committer stamped `<=` the value read
    // (module docs: later RMWs continue each one's release sequence).
    CLOCK.load(Ordering::Acquire)
}

/// [`snapshot`] as a `SeqCst` load, for the store-buffering argument of a thread's snapshot
/// slot (`reclaim.rs`).
#[inline]
pub(crate) fn snapshot_seq_cst() -> u64 {
    CLOCK.load(Ordering::SeqCst)
}

/// Take a commit stamp. The caller holds the locks of its write set and has linked its pending
/// versions.
///
/// `SeqCst`: validation that follows is a Dekker-shaped argument with other committers (we take a
/// stamp, then load a lock word; they store the lock word, then take a stamp), so either we see
/// their lock or their stamp is larger than ours. Release also publishes the links made before
/// it to every snapshot that includes the stamp. On x86 a locked RMW costs the same whatever the
/// ordering.
#[inline]
pub(crate) fn take_stamp() -> u64 {
    CLOCK.fetch_add(1, Ordering::SeqCst) + 1
}

/// The record of where the current commit of one transaction object stands (module docs).
pub(crate) struct CommitRecord {
    state: CachePadded<AtomicU64>,
}

/// How often readers raised a floor and committers took a new stamp because of one, so that loom
/// models can tell that they reached those cases. Plain std atomics: bookkeeping outside the
/// model adds no steps for loom to explore.
#[cfg(loom)]
static LOOM_COUNTS: [std::sync::atomic::AtomicUsize; 2] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 2];

/// `(floors raised by readers, stamps taken again by committers)` so far in this process.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_floor_counts() -> (usize, usize) {
    use std::sync::atomic::Ordering::SeqCst;
    (LOOM_COUNTS[0].load(SeqCst), LOOM_COUNTS[1].load(SeqCst))
}

#[cfg(loom)]
fn loom_count(which: usize) {
    LOOM_COUNTS[which].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// What a look at a commit record says about a pending version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    Floor(u64),
    Stamped(u64),
}

const OPEN: u64 = 0;
const TAG_FLOOR: u64 = 1;
const TAG_STAMPED: u64 = 2;

impl State {
    fn decode(word: u64) -> State {
        match word & 3 {
            TAG_FLOOR => State::Floor(word >> 2),
            TAG_STAMPED => State::Stamped(word >> 2),
            _ => State::Open,
        }
    }
}

fn floor_word(f: u64) -> u64 {
    (f << 2) | TAG_FLOOR
}

fn stamped_word(w: u64) -> u64 {
    (w << 2) | TAG_STAMPED
}

/// Records of dropped transaction objects, for the next ones.
static RECORDS: LeakPool<CommitRecord> = LeakPool::new();

impl CommitRecord {
    /// A record from the pool, or a new one. Never freed (module docs).
    pub(crate) fn acquire() -> &'static CommitRecord {
        RECORDS.take().unwrap_or_else(|| {
            Box::leak(Box::new(CommitRecord {
                state: CachePadded::new(AtomicU64::new(OPEN)),
            }))
        })
    }

    /// Give a record back to the pool; its owner has finished every commit with it.
    pub(crate) fn release(record: &'static CommitRecord) {
        RECORDS.give(record);
    }

    /// The stamp field of a version this record's commit links, pending.
    #[inline]
    pub(crate) fn pending_stamp(&'static self) -> u64 {
        let addr = self as *const CommitRecord as u64;
        debug_assert_eq!(addr & PENDING, 0, "a record address uses the top bit");
        addr | PENDING
    }

    /// Decide the commit with stamp `wv` unless a reader raised a floor `>= wv` meanwhile;
    /// on `false` the committer takes a new stamp and validates again.
    ///
    /// Release: the linked versions and the validation come before the decision a reader
    /// acquires. Acquire on failure: the floor's reader loaded its snapshot before it wrote the
    /// floor, so the next `fetch_add` returns more than that snapshot.
    #[inline]
    pub(crate) fn try_decide(&self, wv: u64) -> bool {
        // Expect the common case, an open record: the first compare-and-swap then costs no load.
        // On failure it returns what is there (Acquire: a floor we find must order its reader's
        // snapshot load before our next stamp).
        let mut word = OPEN;
        loop {
            match State::decode(word) {
                State::Floor(f) if f >= wv => {
                    #[cfg(loom)]
                    loom_count(1);
                    return false;
                }
                State::Stamped(_) => unreachable!("mvstm internal error: a commit decided twice"),
                State::Open | State::Floor(_) => {}
            }
            match self.state.compare_exchange(
                word,
                stamped_word(wv),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Make the record ready for the next commit; the versions of the last one are final (or
    /// abandoned with [`NEVER`]) already.
    ///
    /// Release: a reader that finds this state finds those final stamps too (module docs).
    #[inline]
    pub(crate) fn reopen(&self) {
        self.state.store(OPEN, Ordering::Release);
    }
}

/// The stamp of a version whose stamp field holds `field`, as a snapshot `rv` sees it: the final
/// stamp, or, for a version of a commit not yet decided, a value above `rv` (the reader makes
/// sure the commit will be stamped above it). `reload` loads the field again.
///
/// Never waits.
#[inline]
pub(crate) fn effective_stamp(field: u64, rv: u64, reload: impl Fn() -> u64) -> u64 {
    if field & PENDING == 0 {
        return field;
    }
    resolve_pending(field, rv, &reload)
}

#[cold]
fn resolve_pending(mut field: u64, rv: u64, reload: &dyn Fn() -> u64) -> u64 {
    loop {
        // SAFETY: a pending stamp holds the address of a record, and records are never freed.
        let record = unsafe { &*((field & !PENDING) as *const CommitRecord) };
        // Acquire: pairs with the Release of `try_decide` and `reopen`.
        let word = record.state.load(Ordering::Acquire);
        // Acquire: a record reopened for a later commit comes after this version's final stamp.
        let again = reload();
        if again != field {
            // Final now (a commit never links one version twice): that stamp counts.
            debug_assert_eq!(again & PENDING, 0);
            return again;
        }
        let floor = match State::decode(word) {
            // The record state is the version's own commit's (module docs).
            State::Stamped(w) => return w,
            State::Floor(f) if f >= rv => return NEVER,
            State::Floor(_) | State::Open => floor_word(rv),
        };
        // AcqRel: Acquire as for the load above; Release is not needed by anyone, but a failed
        // committer's Acquire pairs with it to order our snapshot load before its next stamp.
        if record
            .state
            .compare_exchange(word, floor, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            #[cfg(loom)]
            loom_count(0);
            // The floor may have landed on a later commit of the same record: the version is
            // final then, and its stamp counts. Else the commit will be stamped above `rv`.
            let after = reload();
            return if after == field { NEVER } else { after };
        }
        field = reload();
        if field & PENDING == 0 {
            return field;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn field(record: &'static CommitRecord) -> AtomicU64 {
        AtomicU64::new(record.pending_stamp())
    }

    #[test]
    fn a_reader_floors_an_open_commit_and_the_commit_restamps() {
        let record = CommitRecord::acquire();
        let f = field(record);
        let seen = effective_stamp(f.load(Ordering::Relaxed), 10, || f.load(Ordering::Relaxed));
        assert!(seen > 10, "an undecided commit is newer than the snapshot");
        assert!(!record.try_decide(10), "a stamp under the floor is refused");
        assert!(record.try_decide(11));
        let seen = effective_stamp(f.load(Ordering::Relaxed), 20, || f.load(Ordering::Relaxed));
        assert_eq!(seen, 11, "a decided commit has its stamp");
        f.store(11, Ordering::Relaxed);
        record.reopen();
        let seen = effective_stamp(f.load(Ordering::Relaxed), 5, || f.load(Ordering::Relaxed));
        assert_eq!(seen, 11, "a final stamp is read as it is");
        CommitRecord::release(record);
    }

    #[test]
    fn a_floor_on_a_reused_record_reads_the_final_stamp() {
        let record = CommitRecord::acquire();
        let old = record.pending_stamp();
        // The version's commit ended with stamp 7 and the record was reopened for the next one;
        // a reader that loaded the pending field before that resolves to 7, not to "newer".
        let f = AtomicU64::new(7);
        let seen = effective_stamp(old, 9, || f.load(Ordering::Relaxed));
        assert_eq!(seen, 7);
        CommitRecord::release(record);
    }
}
